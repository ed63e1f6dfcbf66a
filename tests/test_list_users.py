"""`mbp list-users` through the CLI, checked against filters written by hand."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from mbp import rowids

END = datetime(2026, 12, 3, 10, 5, tzinfo=UTC)
START = END - timedelta(minutes=5)
IDS = ["00012", "O'Brien", "a,b", "Zoë", "用户", "plain", "00345", "late", "early"]


def events() -> tuple[list[str], list[int]]:
    """Events around the window [10:00, 10:05) UTC, including both bounds."""
    s, e = int(START.timestamp()), int(END.timestamp())
    times = [s, s + 1, e - 1, s + 100, s + 200, e - 60, s + 30, e, s - 1]
    return IDS, times


def expected(ids: list, times: list[int], start: int, end: int) -> list:
    table = pa.table({"id": ids, "t": times})
    mask = pc.and_(pc.greater_equal(table["t"], start), pc.less(table["t"], end))
    return sorted(set(table.filter(mask)["id"].to_pylist()))


def quoted(ids: list) -> str:
    return ",".join("'" + str(i).replace("'", "''") + "'" for i in ids)


def as_time_column(times: list[int], kind: str, tz: str) -> pa.Array:
    if kind == "s":
        return pa.array(times, pa.int64())
    if kind == "ms":
        return pa.array([t * 1000 for t in times], pa.int64())
    if kind == "us":
        return pa.array([t * 1_000_000 for t in times], pa.int64())
    if kind == "tstz":
        return pa.array([datetime.fromtimestamp(t, UTC) for t in times], pa.timestamp("us", "UTC"))
    if kind == "naive":
        zone = ZoneInfo(tz)
        walls = [datetime.fromtimestamp(t, zone).replace(tzinfo=None) for t in times]
        return pa.array(walls, pa.timestamp("us"))
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind,extra",
    [
        ("s", []),
        ("ms", ["--time-unit", "ms"]),
        ("us", ["--time-unit", "us"]),
        ("tstz", []),
        ("naive", []),
    ],
)
@pytest.mark.parametrize("tz", ["UTC", "Asia/Kolkata"])
def test_time_column_kinds(mbp, tmp_path: Path, kind: str, extra: list[str], tz: str) -> None:
    ids, times = events()
    path = tmp_path / "s.parquet"
    pq.write_table(pa.table({"userid": ids, "time": as_time_column(times, kind, tz)}), path)
    code, out, err = mbp(
        "list-users",
        "--sessions",
        str(path),
        "--scheduled-time",
        END.isoformat(),
        "--timezone",
        tz,
        *extra,
    )
    assert (code, err) == (0, "")
    want = expected(ids, times, int(START.timestamp()), int(END.timestamp()))
    assert "early" not in want and "late" not in want and "00012" in want
    assert out == quoted(want) + "\n"
    assert rowids.parse(out) == want


def test_bounds_start_in_end_out(mbp, tmp_path: Path) -> None:
    s, e = int(START.timestamp()), int(END.timestamp())
    path = tmp_path / "s.parquet"
    pq.write_table(
        pa.table({"userid": ["at_start", "at_end", "before"], "time": [s, e, s - 1]}), path
    )
    code, out, _ = mbp("list-users", "--sessions", str(path), "--scheduled-time", str(e))
    assert (code, out) == (0, "'at_start'\n")


def test_lookback_widens_backwards(mbp, tmp_path: Path) -> None:
    s, e = int(START.timestamp()), int(END.timestamp())
    path = tmp_path / "s.parquet"
    pq.write_table(pa.table({"userid": ["a", "b", "c"], "time": [s - 60, s - 121, s]}), path)
    code, out, _ = mbp(
        "list-users", "--sessions", str(path), "--scheduled-time", str(e), "--lookback", "2m"
    )
    assert (code, out) == (0, "'a','c'\n")


def test_integer_ids_sorted_numerically_and_formats(mbp, tmp_path: Path) -> None:
    s = int(START.timestamp())
    path = tmp_path / "s.parquet"
    ids = [10, 9, 100, 9, 42]
    pq.write_table(pa.table({"userid": pa.array(ids, pa.int64()), "time": [s] * 5}), path)
    args = ["list-users", "--sessions", str(path), "--scheduled-time", END.isoformat()]
    assert mbp(*args)[1] == "'9','10','42','100'\n"
    assert mbp(*args, "--format", "lines")[1] == "9\n10\n42\n100\n"
    assert json.loads(mbp(*args, "--format", "json")[1]) == [9, 10, 42, 100]


def test_json_and_lines_for_text_ids(mbp, tmp_path: Path) -> None:
    ids, times = events()
    path = tmp_path / "s.parquet"
    pq.write_table(pa.table({"userid": ids, "time": times}), path)
    args = ["list-users", "--sessions", str(path), "--scheduled-time", END.isoformat()]
    want = expected(ids, times, int(START.timestamp()), int(END.timestamp()))
    assert json.loads(mbp(*args, "--format", "json")[1]) == want
    # One id per line only carries ids that read back as themselves without quotes.
    code, out, err = mbp(*args, "--format", "lines")
    assert (code, out) == (2, "")
    assert "has a character that one id per line cannot carry" in err
    plain = tmp_path / "plain.parquet"
    bare = ["00012", "josé", "a.b@example.com", "550e8400-e29b-41d4"]
    pq.write_table(pa.table({"userid": bare, "time": [int(START.timestamp())] * 4}), plain)
    args[2] = str(plain)
    code, out, err = mbp(*args, "--format", "lines")
    assert (code, err) == (0, "")
    assert out.splitlines() == sorted(bare)


def test_no_active_users_is_an_empty_line(mbp, tmp_path: Path) -> None:
    path = tmp_path / "s.parquet"
    pq.write_table(pa.table({"userid": ["a"], "time": [0]}), path)
    code, out, err = mbp("list-users", "--sessions", str(path), "--scheduled-time", END.isoformat())
    assert (code, out, err) == (0, "\n", "")


def test_output_file(mbp, tmp_path: Path) -> None:
    path = tmp_path / "s.parquet"
    pq.write_table(pa.table({"userid": ["b", "a"], "time": [int(START.timestamp())] * 2}), path)
    target = tmp_path / "ids.txt"
    code, out, _ = mbp(
        "list-users",
        "--sessions",
        str(path),
        "--scheduled-time",
        END.isoformat(),
        "-o",
        str(target),
    )
    assert (code, out) == (0, "")
    assert target.read_text() == "'a','b'\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_hive_directory_and_glob(mbp, tmp_path: Path) -> None:
    s = int(START.timestamp())
    root = tmp_path / "sessions"
    rows = {"2026-12-02": (["old"], [s - 86400]), "2026-12-03": (["x", "y"], [s, s + 5])}
    for day, (ids, times) in rows.items():
        folder = root / f"dt={day}" / "hour=10"
        folder.mkdir(parents=True)
        pq.write_table(pa.table({"userid": ids, "time": times}), folder / "part-0.parquet")
    # An in-progress file of some writer must never be read, nor a hidden or staging folder.
    (root / "dt=2026-12-03" / "hour=10" / ".part-1.parquet").write_bytes(b"not parquet")
    for hidden in (".staging", "_tmp"):
        (root / hidden).mkdir()
        (root / hidden / "part-0.parquet").write_bytes(b"not parquet")
    args = ["--scheduled-time", END.isoformat()]
    assert mbp("list-users", "--sessions", str(root), *args)[:2] == (0, "'x','y'\n")
    pattern = str(root / "dt=2026-12-03" / "*" / "*.parquet")
    assert mbp("list-users", "--sessions", pattern, *args)[:2] == (0, "'x','y'\n")
    glob_all = str(root / "**" / "*.parquet")
    assert mbp("list-users", "--sessions", glob_all, *args)[:2] == (0, "'x','y'\n")
    # A hidden folder the pattern names itself is read: the user asked for it.
    (root / ".staging" / "part-0.parquet").rename(root / "stale.bin")
    pq.write_table(pa.table({"userid": ["z"], "time": [s]}), root / ".staging" / "p.parquet")
    staged = str(root / ".staging" / "*.parquet")
    assert mbp("list-users", "--sessions", staged, *args)[:2] == (0, "'z'\n")


def test_an_unreadable_folder_is_an_error_not_a_gap(mbp, tmp_path: Path, monkeypatch) -> None:
    """Skipping a folder it cannot open would answer from part of the data."""
    s = int(START.timestamp())
    root = tmp_path / "sessions"
    for day in ("dt=2026-12-02", "dt=2026-12-03"):
        (root / day).mkdir(parents=True)
        pq.write_table(pa.table({"userid": ["x"], "time": [s]}), root / day / "p.parquet")
    real_open = os.open

    def denied(path, flags, *args, **kwargs):  # type: ignore[no-untyped-def]
        if str(path) == "dt=2026-12-03":  # as a non-root user meets a chmod 000 folder
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", denied)
    code, out, err = mbp("list-users", "--sessions", str(root), "--scheduled-time", END.isoformat())
    assert (code, out) == (2, "")
    assert err == (
        f"mbp: error: cannot read the folder {root}/dt=2026-12-03: permission denied; "
        "fix its permissions or point the path below it\n"
    )


@pytest.mark.parametrize("name", ["sessions [v1]", "log*", "o[3]", "what?"])
def test_paths_with_glob_characters_that_exist_are_paths(mbp, tmp_path: Path, name: str) -> None:
    s = int(START.timestamp())
    folder = tmp_path / name
    folder.mkdir()
    pq.write_table(pa.table({"userid": ["x"], "time": [s]}), folder / f"{name}.parquet")
    args = ["--scheduled-time", END.isoformat()]
    assert mbp("list-users", "--sessions", str(folder), *args)[:2] == (0, "'x'\n")
    one = str(folder / f"{name}.parquet")
    assert mbp("list-users", "--sessions", one, *args)[:2] == (0, "'x'\n")


@pytest.mark.parametrize(("scale", "unit", "said"), [(1000, "s", "ms"), (1, "ms", "s")])
def test_a_time_unit_that_fits_no_window_is_hinted(mbp, tmp_path: Path, scale, unit, said):
    """Epoch milliseconds read as seconds lie past the year 20,000: nobody is ever active,
    which cron would never notice. The warning names the unit that fits."""
    path = tmp_path / "s.parquet"
    when = int(datetime(2026, 12, 3, 10, 2, tzinfo=UTC).timestamp())
    pq.write_table(pa.table({"userid": ["a"], "time": [when * scale]}), path)
    args = ["list-users", "--sessions", str(path), "--scheduled-time", "2026-12-03T10:05:00Z"]
    code, out, err = mbp(*args, "--time-unit", unit)
    assert (code, out) == (0, "\n")
    assert err.startswith("mbp: warning: no events in the window, and the newest value of 'time'")
    assert err.endswith(f"set --time-unit {said}\n") and err.count("\n") == 1
    code, out, err = mbp(*args, "--time-unit", said)
    assert (code, out, err) == (0, "'a'\n", "")
    # Right unit, nobody in this window: no warning.
    code, out, err = mbp(*args[:-1], "2026-12-04T10:05:00Z", "--time-unit", said)
    assert (code, out, err) == (0, "\n", "")


def test_dst_fall_back_day_is_25_hours(mbp, tmp_path: Path) -> None:
    """1d windows follow the wall clock: the day of the fall-back lasts 25 hours."""
    ny = ZoneInfo("America/New_York")
    events = {
        "just_after_midnight": datetime(2026, 11, 1, 0, 30, tzinfo=ny),  # EDT
        "repeated_hour_2nd": datetime(2026, 11, 1, 1, 30, fold=1, tzinfo=ny),  # EST
        "last_minute": datetime(2026, 11, 1, 23, 59, tzinfo=ny),
        "day_before": datetime(2026, 10, 31, 23, 59, tzinfo=ny),
        "next_day": datetime(2026, 11, 2, 0, 0, tzinfo=ny),
    }
    path = tmp_path / "s.parquet"
    pq.write_table(
        pa.table({"userid": list(events), "time": [int(d.timestamp()) for d in events.values()]}),
        path,
    )
    code, out, _ = mbp(
        "list-users",
        "--sessions",
        str(path),
        "--window",
        "1d",
        "--timezone",
        "America/New_York",
        "--scheduled-time",
        "2026-11-02T00:00:00",
    )
    # Independently: the window is local midnight to local midnight.
    start = datetime(2026, 11, 1, tzinfo=ny).timestamp()
    end = datetime(2026, 11, 2, tzinfo=ny).timestamp()
    assert end - start == 25 * 3600
    want = sorted(k for k, d in events.items() if start <= d.timestamp() < end)
    assert (code, out) == (0, quoted(want) + "\n")
    assert "just_after_midnight" in want  # a fixed 24 h window would miss it


def test_a_day_that_starts_at_one_is_read_from_its_first_instant(mbp, tmp_path: Path) -> None:
    """Santiago skips midnight on 2026-09-06: that day starts at 01:00, and the batch
    cron floors to then must still cover the whole of 5 September, from its midnight."""
    cl = ZoneInfo("America/Santiago")
    events = {
        "sep5_early": datetime(2026, 9, 5, 0, 30, tzinfo=cl),
        "sep5_noon": datetime(2026, 9, 5, 12, 0, tzinfo=cl),
        "sep4_late": datetime(2026, 9, 4, 23, 59, tzinfo=cl),
        "sep6": datetime(2026, 9, 6, 1, 0, tzinfo=cl),
    }
    path = tmp_path / "s.parquet"
    times = [int(d.timestamp()) for d in events.values()]
    pq.write_table(pa.table({"userid": list(events), "time": times}), path)
    args = ["list-users", "--sessions", str(path), "--window", "1d"]
    # 01:00 is what cron's default floors to that morning (the grid's midnight is skipped).
    code, out, err = mbp(*args, "--timezone", "America/Santiago",
                         "--scheduled-time", "2026-09-06T01:00:00")  # fmt: skip
    start = datetime(2026, 9, 5, tzinfo=cl).timestamp()
    end = datetime(2026, 9, 6, 1, 0, tzinfo=cl).timestamp()  # midnight does not exist
    want = sorted(k for k, d in events.items() if start <= d.timestamp() < end)
    assert (code, out, err) == (0, quoted(want) + "\n", "")
    assert "sep5_early" in want


def test_dst_spring_forward_with_naive_timestamps(mbp, tmp_path: Path) -> None:
    """Naive times are wall-clock readings in --timezone; 5m window right after 03:00 EDT."""
    walls = [
        datetime(2026, 3, 8, 3, 0),
        datetime(2026, 3, 8, 3, 4, 59),
        datetime(2026, 3, 8, 1, 59),
    ]
    path = tmp_path / "s.parquet"
    pq.write_table(
        pa.table({"userid": ["a", "b", "c"], "time": pa.array(walls, pa.timestamp("s"))}), path
    )
    code, out, _ = mbp(
        "list-users",
        "--sessions",
        str(path),
        "--timezone",
        "America/New_York",
        "--scheduled-time",
        "2026-03-08T03:05:00",
    )
    assert (code, out) == (0, "'a','b'\n")


def test_scan_prunes_row_groups_outside_the_window(mbp, tmp_path: Path) -> None:
    """DuckDB's own profile shows the window filter skipping row groups."""
    n, per_group = 200_000, 10_000
    base = int(START.timestamp()) - n  # one event per second, time-ordered, ending at START
    table = pa.table(
        {
            "userid": pa.array([f"u{i % 5000}" for i in range(n)]),
            "time": pa.array(range(base, base + n), pa.int64()),
        }
    )
    path = tmp_path / "s.parquet"
    pq.write_table(table, path, row_group_size=per_group)
    assert pq.ParquetFile(path).num_row_groups == n // per_group

    from mbp import sessions, timewindow

    profile = tmp_path / "profile.json"
    con = duckdb.connect()
    con.execute("PRAGMA enable_profiling = 'json'")
    con.execute(f"PRAGMA profiling_output = '{profile}'")
    span = timewindow.Window(START - timedelta(minutes=5), START)
    ids = sessions.active_users(str(path), span, con=con)
    con.execute("PRAGMA disable_profiling")

    scans = []

    def walk(node: dict) -> None:
        if "row_groups_scanned" in node:
            scans.append(node)
        for child in node.get("children", []):
            walk(child)

    for op in json.loads(profile.read_text())["operator"]:
        walk(op)
    assert len(scans) == 1
    assert scans[0]["total_row_groups_to_scan"] == n // per_group
    assert scans[0]["row_groups_scanned"] <= 2
    want = sorted({f"u{i % 5000}" for i in range(n) if base + i >= START.timestamp() - 300})
    assert ids == want


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--sessions", "{tmp}/missing.parquet"], "does not exist"),
        (["--sessions", "{tmp}/empty"], "no Parquet files"),
        (["--sessions", "{tmp}/nomatch*.parquet"], "no files match"),
        (["--sessions", "{tmp}/s.parquet", "--userid-column", "user"], "has no column 'user'"),
        (
            ["--sessions", "{tmp}/s.parquet", "--time-column", "when"],
            "(it has: userid, time, label)",
        ),
        (
            ["--sessions", "{tmp}/s.parquet", "--time-column", "label"],
            "time column has type VARCHAR",
        ),
        (["--sessions", "{tmp}/s.parquet", "--window", "5 minutes"], "is not a duration"),
        (["--sessions", "{tmp}/s.parquet", "--window", "0m"], "longer than zero"),
        (["--sessions", "{tmp}/s.parquet", "--lookback", "x"], "--lookback 'x' is not a duration"),
        (["--sessions", "{tmp}/s.parquet", "--timezone", "Mars/Olympus"], "unknown time zone"),
        (["--sessions", "{tmp}/s.parquet", "--scheduled-time", "yesterday"], "is not a time"),
        (["--sessions", "{tmp}/s.parquet", "--window", "99999999d"], "longer than a century"),
        (["--sessions", "{tmp}/s.parquet", "--scheduled-time", ""], "is given but empty"),
        (["--sessions", "{tmp}/s.parquet", "--lookback", "40000d"], "longer than a century"),
        (["--sessions", "{tmp}/s.parquet", "--scheduled-time", "1e30"], "is not a time"),
        (
            ["--sessions", "{tmp}/s.parquet", "--scheduled-time", "0001-01-01T00:00:00"],
            "is not between the years 1970 and 9000",
        ),
        (["--sessions", "{tmp}/s.parquet", "--time-unit", "ns"], "--time-unit 'ns'"),
        (["--sessions", "{tmp}/s.parquet", "--format", "xml"], "--format 'xml'"),
        ([], "--sessions is required"),
    ],
)
def test_bad_input_exits_2_with_one_line(mbp, tmp_path: Path, args: list[str], needle: str) -> None:
    (tmp_path / "empty").mkdir()
    pq.write_table(pa.table({"userid": ["a"], "time": [1], "label": ["x"]}), tmp_path / "s.parquet")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    code, out, err = mbp("list-users", "--scheduled-time", "2026-12-03T10:05:00", *args)
    assert code == 2
    assert out == ""
    assert err.startswith("mbp: error: ") and err.count("\n") == 1
    assert needle in err
    assert "Traceback" not in err


def test_corrupt_parquet_is_a_runtime_failure(mbp, tmp_path: Path) -> None:
    path = tmp_path / "s.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    code, out, err = mbp("list-users", "--sessions", str(path), "--scheduled-time", "0")
    assert (code, out) == (1, "")
    assert err.startswith("mbp: error: cannot read the sessions") and err.count("\n") == 1


def test_session_files_must_agree_on_their_columns(mbp, tmp_path: Path) -> None:
    """Read together by name, a file without the time column would add no one, silently."""
    s = int(START.timestamp())
    root = tmp_path / "sessions"
    (root / "day=2").mkdir(parents=True)
    (root / "day=1").mkdir()
    pq.write_table(pa.table({"userid": ["x"], "time": [s]}), root / "day=1" / "a.parquet")
    args = ["list-users", "--sessions", str(root), "--scheduled-time", END.isoformat()]
    cases = [
        (pa.table({"userid": ["y"], "when": [s]}),
         f"the sessions file {root}/day=2/b.parquet has no column 'time', which the other "
         "sessions files have; fix that file or move it out of the sessions path"),
        (pa.table({"userid": ["y"], "time": pa.array([START], pa.timestamp("us", "UTC"))}),
         f"the sessions files disagree on the type of column 'time': {root}/day=1/a.parquet has "
         f"BIGINT, {root}/day=2/b.parquet has TIMESTAMP WITH TIME ZONE; rewrite one of them "
         "with the other's type"),
    ]  # fmt: skip
    for other, message in cases:
        pq.write_table(other, root / "day=2" / "b.parquet")
        code, out, err = mbp(*args)
        assert (code, out, err) == (2, "", f"mbp: error: {message}\n")
    # Narrower types of one family are one table.
    pq.write_table(pa.table({"userid": pa.array([5]), "time": pa.array([s], pa.int32())}),
                   root / "day=2" / "b.parquet")  # fmt: skip
    assert mbp(*args)[:2] == (0, "'5','x'\n")
    # A file beside the key=value folders is not part of their dataset.
    pq.write_table(pa.table({"userid": ["z"], "time": [s]}), root / "stray.parquet")
    code, out, err = mbp(*args)
    assert (code, out) == (2, "")
    assert err.startswith("mbp: error: the sessions files are not one dataset: their key=value")


def test_a_broken_symlink_is_named_as_one(mbp, tmp_path: Path) -> None:
    link = tmp_path / "sessions"
    link.symlink_to(tmp_path / "gone")
    code, out, err = mbp("list-users", "--sessions", str(link), "--scheduled-time", "0")
    assert (code, out) == (2, "")
    assert err == (
        f"mbp: error: the sessions path {str(link)!r} is a symbolic link to "
        f"{str(tmp_path / 'gone')!r}, which does not exist; fix the link\n"
    )
