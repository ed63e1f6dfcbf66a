"""`mbp rank`: users by latest score, checked against a hand-written DuckDB query."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mbp import cli, sources

T0 = int(datetime(2026, 12, 3, 10, 0, tzinfo=UTC).timestamp())
COLUMNS = ["userid", "score", "time", "model", "model_version"]


class History:
    """A predictions dataset written by hand, batch by batch, as mbp predict lays it out."""

    def __init__(self, root: Path, id_type: pa.DataType | None = None) -> None:
        self.root = root
        self.id_type = id_type or pa.string()
        self.files: list[Path] = []

    def batch(
        self,
        time: int,
        rows: list[tuple[object, float]],
        *,
        name_time: int | None = None,
        model: str = "ltv",
        version: str = "2026-11",
    ) -> Path:
        """One batch file; `name_time` names the file differently from its `time` values."""
        stamp = datetime.fromtimestamp(name_time if name_time is not None else time, UTC)
        folder = self.root / f"dt={stamp:%Y-%m-%d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"part-{stamp:%Y%m%dT%H%M%S}.parquet"
        table = pa.table(
            {
                "userid": pa.array([r[0] for r in rows], self.id_type),
                "score": pa.array([r[1] for r in rows], pa.float64()),
                "time": pa.array([time] * len(rows), pa.int64()),
                "model": pa.array([model] * len(rows), pa.string()),
                "model_version": pa.array([version] * len(rows), pa.string()),
            }
        )
        pq.write_table(table, path)
        if path not in self.files:
            self.files.append(path)
        return path


def expected(
    history: History,
    *,
    threshold: float = 0.7,
    limit: int = 100,
    info: pa.Table | None = None,
    columns: list[str] | None = None,
    since: int | None = None,
) -> list[dict]:
    """The ranking by hand: every batch numbered in path order, the latest score per user
    by arg_max_null over (time, batch, score) (a missing latest score is kept, and ranks
    nobody), then threshold, join, order, limit."""
    parts = []
    for seq, path in enumerate(sorted(history.files, key=str)):
        t = pq.read_table(path)
        parts.append(t.append_column("seq", pa.array([seq] * t.num_rows, pa.int64())))
    hist = pa.concat_tables(parts)
    con = duckdb.connect()
    con.register("hist", hist)
    newest = con.sql("SELECT max(time) FROM hist").fetchall()[0][0]
    lower = newest - since if since is not None else -(2**62)
    rows = con.execute(
        """
        SELECT userid,
               arg_max_null(score, (time, seq, score)) AS score,
               max(time) AS time,
               arg_max_null(model, (time, seq, score)) AS model,
               arg_max_null(model_version, (time, seq, score)) AS model_version
        FROM hist WHERE time >= ? GROUP BY userid
        """,
        [lower],
    ).fetchall()
    kept = [r for r in rows if r[1] is not None and r[1] >= threshold]
    latest = [dict(zip(COLUMNS, r, strict=True)) for r in kept]
    latest.sort(key=lambda r: (-r["score"], r["userid"]))
    if limit:
        latest = latest[:limit]
    if info is not None:
        by_id = {str(r["userid"]): r for r in info.to_pylist()}
        shown = columns or [c for c in info.column_names if c != "userid"]
        for r in latest:
            extra = by_id.get(str(r["userid"]), {})
            r.update({c: extra.get(c) for c in shown})
    return latest


def parse_csv(text: str) -> tuple[list[str], list[dict[str, str]]]:
    reader = csv.DictReader(io.StringIO(text))
    rows = list(reader)
    return list(reader.fieldnames or []), rows


def as_csv(value: object) -> object:
    """What a value reads back as from CSV, for comparison."""
    if value is None:
        return ""
    if isinstance(value, date):
        return value.isoformat()
    return value


def assert_csv(text: str, want: list[dict]) -> None:
    header, rows = parse_csv(text)
    assert header == (list(want[0]) if want else header)
    assert len(rows) == len(want)
    for got, exp in zip(rows, want, strict=True):
        for key, value in exp.items():
            if isinstance(value, float):
                assert float(got[key]) == value
            elif isinstance(value, int):
                assert int(got[key]) == value
            else:
                assert got[key] == as_csv(value)


def run_csv(mbp, *args: str) -> list[dict[str, str]]:
    code, out, err = mbp("rank", *args)
    assert (code, err) == (0, "")
    return parse_csv(out)[1]


@pytest.fixture
def history(tmp_path: Path) -> History:
    return History(tmp_path / "predictions")


@pytest.fixture
def info_file(tmp_path: Path) -> tuple[str, pa.Table]:
    table = pa.table(
        {
            "userid": ["a", "b", "c", "d", "e"],
            "name": ["Ann", "Bob", "Cid", "Dee", "Eve"],
            "tel": ["555-1", "555-2", None, "555-4", "555-5"],
            "first_purchase": [date(1997, 1, d) for d in range(1, 6)],
        }
    )
    path = tmp_path / "user_info.parquet"
    pq.write_table(table, path)
    return str(path), table


def standard(history: History) -> History:
    """Three batches: a falls below the threshold, b rises above it, c stays high."""
    history.batch(T0, [("a", 0.9), ("b", 0.3), ("c", 0.8), ("d", 0.75)])
    history.batch(T0 + 300, [("a", 0.5), ("b", 0.85), ("e", 0.72)])
    history.batch(T0 + 600, [("c", 0.81), ("f", 0.6)])
    return history


# --- the ranking ------------------------------------------------------------------------


def test_latest_score_then_threshold(mbp, history):
    standard(history)
    code, out, err = mbp("rank", "--predictions", str(history.root))
    assert (code, err) == (0, "")
    want = expected(history)
    assert_csv(out, want)
    ids = [r["userid"] for r in parse_csv(out)[1]]
    assert "a" not in ids  # its latest 0.5 wins over the older 0.9
    assert ids == ["b", "c", "d", "e"]


def test_equal_times_go_to_the_later_batch_file(mbp, history):
    history.batch(T0, [("a", 0.95), ("b", 0.9)], name_time=T0)
    history.batch(T0, [("a", 0.71), ("b", 0.2)], name_time=T0 + 300)
    rows = run_csv(mbp, "--predictions", str(history.root))
    assert [(r["userid"], float(r["score"])) for r in rows] == [("a", 0.71)]
    assert_csv(mbp("rank", "--predictions", str(history.root))[1], expected(history))


@pytest.mark.parametrize("scores", [(0.95, 0.8), (0.8, 0.95)])
def test_a_user_twice_in_one_file_gets_the_higher_score(mbp, history, scores):
    history.batch(T0 - 300, [("a", 0.99)])
    history.batch(T0, [("a", scores[0]), ("b", 0.75), ("a", scores[1])])
    rows = run_csv(mbp, "--predictions", str(history.root))
    assert [(r["userid"], float(r["score"])) for r in rows] == [("a", 0.95), ("b", 0.75)]
    assert_csv(mbp("rank", "--predictions", str(history.root))[1], expected(history))


def test_equal_scores_order_by_rowid(mbp, history):
    history.batch(T0, [("c", 0.8), ("a", 0.8), ("b", 0.8), ("z", 0.9)])
    rows = run_csv(mbp, "--predictions", str(history.root))
    assert [r["userid"] for r in rows] == ["z", "a", "b", "c"]
    assert_csv(mbp("rank", "--predictions", str(history.root))[1], expected(history))


@pytest.mark.parametrize(("threshold", "score"), [(None, 0.7), ("0.25", 0.25), ("0.9", 0.9)])
def test_threshold_equal_to_the_score_is_kept(mbp, history, threshold, score):
    history.batch(T0, [("a", score), ("b", score - 0.01)])
    args = ["--predictions", str(history.root)]
    if threshold is not None:
        args += ["--threshold", threshold]
    rows = run_csv(mbp, *args)
    assert [(r["userid"], float(r["score"])) for r in rows] == [("a", score)]


@pytest.mark.parametrize(("limit", "count"), [(None, 100), ("0", 150), ("7", 7), ("1", 1)])
def test_limit(mbp, history, limit, count):
    users = [(f"u{i:03d}", 0.7 + (i % 37) / 200) for i in range(150)]
    history.batch(T0, users)
    args = ["--predictions", str(history.root)]
    if limit is not None:
        args += ["--limit", limit]
    code, out, err = mbp("rank", *args)
    assert (code, err) == (0, "")
    want = expected(history, limit=count)
    assert len(want) == count
    assert_csv(out, want)


def test_integer_rowids(mbp, tmp_path):
    history = History(tmp_path / "p", pa.int64())
    history.batch(T0, [(3, 0.9), (1, 0.9), (20, 0.95), (7, 0.1)])
    history.batch(T0 + 300, [(7, 0.8), (3, 0.2)])
    code, out, err = mbp("rank", "--predictions", str(history.root), "--format", "json")
    assert (code, err) == (0, "")
    got = json.loads(out)
    assert got == expected(history)
    assert [r["userid"] for r in got] == [20, 1, 7]


def test_since_is_relative_to_the_newest_time_not_now(mbp, tmp_path):
    old = int(datetime(1997, 3, 1, 12, 0, tzinfo=UTC).timestamp())
    history = History(tmp_path / "p")
    history.batch(old - 3600, [("a", 0.99), ("b", 0.9)])
    history.batch(old - 600, [("c", 0.8), ("d", 0.3)])
    history.batch(old - 300, [("b", 0.75)])
    history.batch(old, [("e", 0.71), ("d", 0.95)])
    for since, seconds in (("10m", 600), ("5m", 300), ("0s", 0), ("2h", 7200)):
        code, out, err = mbp(
            "rank", "--predictions", str(history.root), "--since", since, "--format", "json"
        )
        assert (code, err) == (0, "")
        assert json.loads(out) == expected(history, since=seconds), since
    code, out, _ = mbp("rank", "--predictions", str(history.root), "--since", "10m")
    assert [r["userid"] for r in parse_csv(out)[1]] == ["d", "c", "b", "e"]


def test_since_that_is_not_a_duration_is_a_usage_error(mbp, history):
    standard(history)
    code, out, err = mbp("rank", "--predictions", str(history.root), "--since", "yesterday")
    assert (code, out) == (2, "")
    assert err.startswith("mbp: error: --since 'yesterday' is not a duration")
    assert err.count("\n") == 1


def test_hidden_and_temporary_files_are_ignored(mbp, history):
    standard(history)
    folder = history.root / "dt=2026-12-03"
    bogus = pa.table(
        {
            "userid": ["a", "zz"],
            "score": [0.99, 0.99],
            "time": [T0 + 900] * 2,
            "model": ["x"] * 2,
            "model_version": ["x"] * 2,
        }
    )
    pq.write_table(bogus, folder / ".part-20261203T101500.parquet.tmp")
    pq.write_table(bogus, folder / ".part-20261203T102000.parquet")
    pq.write_table(bogus, folder / "_part-20261203T102500.parquet")
    (folder / ".part-20261203T103000.tmp-half").write_bytes(b"PAR1 not finished")
    code, out, err = mbp("rank", "--predictions", str(history.root))
    assert (code, err) == (0, "")
    assert_csv(out, expected(history))
    assert "zz" not in out


def test_a_file_vanishing_between_listing_and_reading_is_retried(mbp, history, monkeypatch):
    standard(history)
    real = sources.parquet_files
    calls = []

    def listing_then_swap(path: str, what: str = "input") -> list[str]:
        files = real(path, what)
        if what == "predictions" and not calls:
            # An overwrite swaps the dataset right after our listing.
            Path(files[0]).unlink()
            history.files.remove(Path(files[0]))
        calls.append(what)
        return files

    monkeypatch.setattr(sources, "parquet_files", listing_then_swap)
    code, out, err = mbp("rank", "--predictions", str(history.root))
    assert (code, err) == (0, "")
    assert calls.count("predictions") == 2
    assert_csv(out, expected(history))


# --- user info ----------------------------------------------------------------------------


def test_user_info_is_joined_and_missing_users_are_counted(mbp, history, info_file):
    path, table = info_file
    standard(history)
    history.batch(T0 + 900, [("x", 0.99), ("y", 0.98), ("z", 0.97)])
    code, out, err = mbp(
        "rank", "--predictions", str(history.root), "--user-info", path, "--format", "json"
    )
    assert code == 0
    assert err == "mbp: warning: 3 users have no row in user info\n"
    got = json.loads(out)
    want = expected(history, info=table)
    for r in want:
        if r["first_purchase"] is not None:
            r["first_purchase"] = r["first_purchase"].isoformat()
    assert got == want
    assert [r["userid"] for r in got[:3]] == ["x", "y", "z"]
    assert got[0]["name"] is None
    assert list(got[0]) == [*COLUMNS, "name", "tel", "first_purchase"]


def test_columns_picks_user_info_columns(mbp, history, info_file):
    path, table = info_file
    standard(history)
    code, out, err = mbp(
        "rank", "--predictions", str(history.root), "--user-info", path, "--columns", "tel,name"
    )
    assert (code, err) == (0, "")
    header, _ = parse_csv(out)
    assert header == [*COLUMNS, "tel", "name"]
    assert_csv(out, expected(history, info=table, columns=["tel", "name"]))


def test_rowid_types_may_differ_int_predictions(mbp, tmp_path):
    history = History(tmp_path / "p", pa.int64())
    history.batch(T0, [(1, 0.9), (2, 0.8), (3, 0.75)])
    info = tmp_path / "info.parquet"
    pq.write_table(pa.table({"userid": ["1", "2", "03"], "name": ["one", "two", "three"]}), info)
    code, out, err = mbp(
        "rank", "--predictions", str(history.root), "--user-info", str(info), "--format", "jsonl"
    )
    assert (code, err) == (0, "")
    got = [json.loads(line) for line in out.splitlines()]
    # The info's text key is cast to the predictions' integer type: "03" is user 3.
    assert [(r["userid"], r["name"]) for r in got] == [(1, "one"), (2, "two"), (3, "three")]


def test_rowid_types_may_differ_text_predictions(mbp, tmp_path):
    history = History(tmp_path / "p")
    history.batch(T0, [("01", 0.9), ("2", 0.8), ("3", 0.75)])
    info = tmp_path / "info.parquet"
    pq.write_table(pa.table({"userid": [1, 2, 3], "name": ["one", "two", "three"]}), info)
    code, out, err = mbp(
        "rank", "--predictions", str(history.root), "--user-info", str(info), "--format", "jsonl"
    )
    assert code == 0
    got = [json.loads(line) for line in out.splitlines()]
    # Text ids keep their zeros: 1 becomes "1", which is not user "01".
    assert [(r["userid"], r["name"]) for r in got] == [("01", None), ("2", "two"), ("3", "three")]
    assert err == "mbp: warning: 1 user has no row in user info\n"


def test_duplicate_user_info_rows_show_the_first(mbp, history, tmp_path):
    history.batch(T0, [("a", 0.9), ("b", 0.8)])
    info = tmp_path / "info.parquet"
    pq.write_table(pa.table({"userid": ["a", "a", "b"], "name": ["first", "second", "b"]}), info)
    code, out, err = mbp("rank", "--predictions", str(history.root), "--user-info", str(info))
    assert code == 0
    assert err == "mbp: warning: 1 user has more than one row in user info; the first is shown\n"
    assert [(r["userid"], r["name"]) for r in parse_csv(out)[1]] == [("a", "first"), ("b", "b")]


# --- formats and outputs ------------------------------------------------------------------


def test_pipe_defaults_to_csv(mbp, history):
    standard(history)
    code, out, err = mbp("rank", "--predictions", str(history.root))
    assert (code, err) == (0, "")
    assert out.splitlines()[0].replace('"', "") == ",".join(COLUMNS)
    assert_csv(out, expected(history))


def test_terminal_defaults_to_a_table(mbp, history, monkeypatch):
    standard(history)
    monkeypatch.setattr(cli, "_stdout_is_terminal", lambda: True)
    code, out, err = mbp("rank", "--predictions", str(history.root))
    assert (code, err) == (0, "")
    assert "┃" in out and "│" in out
    assert "userid" in out and "score" in out
    body = [line for line in out.splitlines() if line.startswith("│")]
    assert [line.split("│")[1].strip() for line in body] == ["b", "c", "d", "e"]
    assert "0.85" in out
    assert not out.startswith('"userid"')


def test_the_table_shows_values_as_they_are_and_escapes_control_characters(
    mbp, history, monkeypatch
):
    """Data is neither rich markup nor terminal commands: '[bold]x[/bold]' stays itself,
    and an escape sequence in a name does not clear the screen."""
    history.batch(T0, [("[bold]x[/bold]", 0.9), ("evil\x1b[2J\x1b]0;t\x07", 0.8)])
    monkeypatch.setattr(cli, "_stdout_is_terminal", lambda: True)
    code, out, err = mbp("rank", "--predictions", str(history.root), "--format", "table")
    assert (code, err) == (0, "")
    body = [line.split("│")[1].strip() for line in out.splitlines() if line.startswith("│")]
    assert body == ["[bold]x[/bold]", "evil\\x1b[2J\\x1b]0;t\\x07"]
    assert "\x1b" not in out and "\x07" not in out


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl"])
def test_text_formats(mbp, history, info_file, fmt):
    path, table = info_file
    standard(history)
    code, out, err = mbp(
        "rank", "--predictions", str(history.root), "--user-info", path, "--format", fmt
    )
    assert (code, err) == (0, "")
    want = expected(history, info=table)
    if fmt == "csv":
        assert_csv(out, want)
        return
    for r in want:
        r["first_purchase"] = r["first_purchase"].isoformat()
    if fmt == "json":
        assert out.endswith("\n")
        assert json.loads(out) == want
    else:
        assert [json.loads(line) for line in out.splitlines()] == want


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("out.csv", None),
        ("out.json", None),
        ("out.jsonl", None),
        ("out.parquet", None),
        ("out.txt", "csv"),
        ("ranked.data", "parquet"),
    ],
)
def test_output_file(mbp, history, info_file, tmp_path, name, fmt):
    path, table = info_file
    standard(history)
    target = tmp_path / "out" / name
    target.parent.mkdir()
    args = ["--predictions", str(history.root), "--user-info", path, "-o", str(target)]
    if fmt:
        args += ["--format", fmt]
    code, out, err = mbp("rank", *args)
    assert (code, out, err) == (0, "", "")
    assert [p.name for p in target.parent.iterdir()] == [name]
    want = expected(history, info=table)
    kind = fmt or name.rsplit(".", 1)[1]
    if kind == "parquet":
        got = pq.read_table(target)
        assert got.column_names == [*COLUMNS, "name", "tel", "first_purchase"]
        assert got.schema.field("time").type == pa.int64()
        assert got.schema.field("score").type == pa.float64()
        assert got.to_pylist() == want
    elif kind == "csv":
        assert_csv(target.read_text(), want)
    else:
        for r in want:
            r["first_purchase"] = r["first_purchase"].isoformat()
        text = target.read_text()
        if kind == "json":
            assert json.loads(text) == want
        else:
            assert [json.loads(line) for line in text.splitlines()] == want


def test_output_dash_is_stdout(mbp, history):
    standard(history)
    code, out, err = mbp("rank", "--predictions", str(history.root), "-o", "-", "--format", "json")
    assert (code, err) == (0, "")
    assert json.loads(out) == expected(history)


def test_settings_from_environment_and_config(mbp, history, tmp_path):
    standard(history)
    env = {
        "MBP_PREDICTIONS": str(history.root),
        "MBP_RANK_FORMAT": "json",
        "MBP_THRESHOLD": "0.8",
        "MBP_LIMIT": "2",
    }
    code, out, err = mbp("rank", env=env)
    assert (code, err) == (0, "")
    assert json.loads(out) == expected(history, threshold=0.8, limit=2)
    config = tmp_path / "mbp.toml"
    config.write_text(
        f'predictions = "{history.root}"\n[rank]\nformat = "jsonl"\nthreshold = 0.75\n'
    )
    code, out, err = mbp("rank", "--config", str(config))
    assert (code, err) == (0, "")
    assert [json.loads(line) for line in out.splitlines()] == expected(history, threshold=0.75)


@pytest.mark.parametrize(("fmt", "text"), [("csv", None), ("json", "[]\n"), ("jsonl", "")])
def test_empty_dataset_gives_empty_output(mbp, tmp_path, fmt, text):
    root = tmp_path / "predictions"
    (root / "dt=2026-12-03").mkdir(parents=True)
    (root / "dt=2026-12-03" / ".part-20261203T100000.parquet.tmp").write_bytes(b"half")
    code, out, err = mbp("rank", "--predictions", str(root), "--format", fmt)
    assert (code, err) == (0, "")
    if fmt == "csv":
        assert parse_csv(out) == (COLUMNS, [])
    else:
        assert out == text


def test_empty_dataset_with_user_info_has_its_columns(mbp, tmp_path, info_file):
    path, _ = info_file
    root = tmp_path / "predictions"
    root.mkdir()
    code, out, err = mbp("rank", "--predictions", str(root), "--user-info", path)
    assert (code, err) == (0, "")
    assert parse_csv(out) == ([*COLUMNS, "name", "tel", "first_purchase"], [])


# --- errors -------------------------------------------------------------------------------


def one_error(result: tuple[int, str, str], code: int, *needles: str) -> None:
    got_code, out, err = result
    assert got_code == code
    assert out == ""
    assert err.startswith("mbp: error: ")
    assert err.count("\n") == 1
    for needle in needles:
        assert needle in err


def test_missing_predictions_directory(mbp, tmp_path):
    one_error(
        mbp("rank", "--predictions", str(tmp_path / "nowhere")),
        2,
        "nowhere",
        "run mbp predict first or check --predictions",
    )


def test_predictions_option_is_required(mbp):
    one_error(mbp("rank"), 2, "--predictions is required", "MBP_PREDICTIONS")


def test_user_info_without_the_rowid_column(mbp, history, tmp_path):
    standard(history)
    info = tmp_path / "info.parquet"
    pq.write_table(pa.table({"id": ["a"], "name": ["Ann"]}), info)
    one_error(
        mbp("rank", "--predictions", str(history.root), "--user-info", str(info)),
        2,
        "'userid'",
        "it has: id, name",
    )


def test_columns_naming_a_missing_column(mbp, history, info_file):
    path, _ = info_file
    standard(history)
    one_error(
        mbp(
            "rank",
            "--predictions",
            str(history.root),
            "--user-info",
            path,
            "--columns",
            "name,email",
        ),
        2,
        "'email'",
        "it has: userid, name, tel, first_purchase",
    )


def test_columns_without_user_info(mbp, history):
    standard(history)
    one_error(
        mbp("rank", "--predictions", str(history.root), "--columns", "name"), 2, "--user-info"
    )


def test_missing_user_info_path(mbp, history, tmp_path):
    standard(history)
    one_error(
        mbp("rank", "--predictions", str(history.root), "--user-info", str(tmp_path / "no.pq")),
        2,
        "no.pq",
    )


@pytest.mark.parametrize("drop", ["score", "time", "userid"])
def test_predictions_without_a_needed_column(mbp, tmp_path, drop):
    root = tmp_path / "p" / "dt=2026-12-03"
    root.mkdir(parents=True)
    table = pa.table({"userid": ["a"], "score": [0.9], "time": [T0]}).drop_columns([drop])
    pq.write_table(table, root / "part-20261203T100000.parquet")
    one_error(mbp("rank", "--predictions", str(tmp_path / "p")), 2, f"'{drop}'", "it has:")


def test_parquet_to_stdout_is_a_usage_error(mbp, history):
    standard(history)
    one_error(
        mbp("rank", "--predictions", str(history.root), "--format", "parquet"), 2, "Parquet", "-o"
    )
    one_error(
        mbp("rank", "--predictions", str(history.root), "--format", "parquet", "-o", "-"),
        2,
        "Parquet",
    )


def test_unknown_format_and_extension(mbp, history, tmp_path):
    standard(history)
    one_error(mbp("rank", "--predictions", str(history.root), "--format", "xml"), 2, "'xml'")
    one_error(
        mbp("rank", "--predictions", str(history.root), "-o", str(tmp_path / "x.txt")),
        2,
        "x.txt",
        "--format",
    )
    assert not (tmp_path / "x.txt").exists()


def test_negative_limit(mbp, history):
    standard(history)
    one_error(mbp("rank", "--predictions", str(history.root), "--limit", "-1"), 2, "--limit")


def test_corrupt_batch_file_is_a_runtime_failure_and_writes_nothing(mbp, history, tmp_path):
    standard(history)
    (history.root / "dt=2026-12-03" / "part-20261203T103000.parquet").write_bytes(b"garbage")
    target = tmp_path / "out.csv"
    one_error(
        mbp("rank", "--predictions", str(history.root), "-o", str(target)),
        1,
        "cannot read the predictions",
    )
    assert not target.exists()
    assert list(tmp_path.glob(".out.csv*")) == []


def test_help_shows_an_example(mbp):
    code, out, err = mbp("rank", "--help")
    assert (code, err) == (0, "")
    assert "Example:" in out
    assert "mbp rank --predictions" in out
    assert "NEWEST" in out  # --since is relative to the data, not the clock


def test_real_pipe_gets_csv_and_head_ends_quietly(history):
    users = [(f"u{i:05d}", 0.7 + (i % 97) / 400) for i in range(20000)]
    history.batch(T0, users)
    base = [sys.executable, "-m", "mbp", "rank", "--predictions", str(history.root)]
    done = subprocess.run(base, capture_output=True, text=True, check=False)
    assert (done.returncode, done.stderr) == (0, "")
    assert_csv(done.stdout, expected(history))
    # `mbp rank --limit 0 | head -2`: the closed pipe ends the run without a traceback.
    proc = subprocess.Popen([*base, "--limit", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    first = [proc.stdout.readline(), proc.stdout.readline()]
    proc.stdout.close()
    err = proc.stderr.read() if proc.stderr else b""
    proc.wait(timeout=60)
    assert first[0].decode().replace('"', "").strip() == ",".join(COLUMNS)
    assert b"Traceback" not in err and b"error" not in err


def test_a_dataset_folder_with_glob_characters_in_its_name(mbp, tmp_path):
    history = standard(History(tmp_path / "o[3]"))
    code, out, err = mbp("rank", "--predictions", str(history.root))
    assert (code, err) == (0, "")
    assert_csv(out, expected(history))
    assert len(parse_csv(out)[1]) == 4


@pytest.mark.parametrize("limit", ["2", "1000", "1001", "0"])  # read late, and carried
def test_each_user_shows_the_model_of_its_latest_batch(mbp, history, limit):
    history.batch(T0, [("a", 0.9), ("b", 0.95), ("c", 0.8)], model="ltv", version="2026-10")
    history.batch(T0 + 300, [("a", 0.91), ("c", 0.75)], model="ltv2", version="2026-11")
    history.batch(T0 + 300, [("b", 0.97)], name_time=T0 + 600, model="x", version="9")
    history.batch(T0 + 900, [("d", 0.99), ("d", 0.7)], model="ltv3", version="2026-12")
    code, out, err = mbp("rank", "--predictions", str(history.root), "--limit", limit)
    assert (code, err) == (0, "")
    want = expected(history, limit=int(limit))
    assert_csv(out, want)
    got = {r["userid"]: (r["model"], r["model_version"]) for r in parse_csv(out)[1]}
    assert {r["userid"]: (r["model"], r["model_version"]) for r in want} == got
    assert got.get("a", ("ltv2", "2026-11")) == ("ltv2", "2026-11")


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_nobody_at_the_threshold_is_an_empty_ranking(mbp, history, info_file, fmt):
    standard(history)
    args = ["--predictions", str(history.root), "--threshold", "0.99", "--format", fmt]
    code, out, err = mbp("rank", *args)
    assert (code, err) == (0, "")
    assert out == ('"userid","score","time","model","model_version"\n' if fmt == "csv" else "[]\n")
    code, out, err = mbp("rank", *args, "--user-info", info_file[0], "--columns", "name")
    assert (code, err) == (0, "")
    assert out.startswith('"userid","score","time","model","model_version","name"') or out == "[]\n"


def test_a_batch_rewritten_between_ranking_and_reading_its_models(mbp, history, monkeypatch):
    """A retry of a batch replaces its file while rank runs: the models are then read in
    one pass over the files as they are now, never left empty."""
    from mbp import rank as core

    history.batch(T0, [("a", 0.9), ("b", 0.8)], version="2026-10")
    latest = history.batch(T0 + 300, [("a", 0.95), ("c", 0.85)], version="2026-11")
    real = core._with_models

    def rerun_first(*args, **kwargs):
        history.batch(T0 + 300, [("a", 0.96), ("c", 0.84)], version="2026-12")  # same file
        monkeypatch.setattr(core, "_with_models", real)
        return real(*args, **kwargs)

    monkeypatch.setattr(core, "_with_models", rerun_first)
    code, out, err = mbp("rank", "--predictions", str(history.root), "--limit", "5")
    assert (code, err) == (0, "")
    assert latest.exists()
    assert_csv(out, expected(history, limit=5))
    assert {r["model_version"] for r in parse_csv(out)[1] if r["userid"] in "ac"} == {"2026-12"}


def test_a_real_file_index_column(mbp, tmp_path):
    """A column named file_index hides DuckDB's own: the models are then carried."""
    history = History(tmp_path / "p")
    for i, (t, version) in enumerate(((T0, "v1"), (T0 + 300, "v2"))):
        path = history.batch(t, [("a", 0.9 + i / 100), ("b", 0.8)], version=version)
        table = pq.read_table(path)
        pq.write_table(table.append_column("file_index", pa.array([7, 7], pa.int64())), path)
    code, out, err = mbp("rank", "--predictions", str(history.root), "--limit", "1")
    assert (code, err) == (0, "")
    assert [(r["userid"], r["model_version"]) for r in parse_csv(out)[1]] == [("a", "v2")]


def test_uuid_rowids_written_by_another_tool(mbp, tmp_path):
    import uuid

    folder = tmp_path / "p" / "dt=2026-12-03"
    folder.mkdir(parents=True)
    keys = [uuid.UUID(int=i) for i in (1, 2)]
    for i, score in enumerate((0.8, 0.9)):
        pq.write_table(
            pa.table({
                "userid": pa.array([k.bytes for k in keys], pa.uuid()),
                "score": [score, 0.1], "time": [T0 + i, T0 + i],
                "model": ["m", "m"], "model_version": [f"v{i}", f"v{i}"],
            }),
            folder / f"part-{i}.parquet",
        )  # fmt: skip
    code, out, err = mbp("rank", "--predictions", str(tmp_path / "p"))
    assert (code, err) == (0, "")
    assert [(r["userid"], r["score"], r["model_version"]) for r in parse_csv(out)[1]] == [
        (str(keys[0]), "0.9", "v1")
    ]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--rowid-column", "score"], "--rowid-column 'score' is one of the score columns"),
        (["--limit", str(10**20)], "--limit must be 0 (all) or a number of users"),
    ],
)
def test_more_bad_rank_options(mbp, history, args, needle):
    standard(history)
    one_error(mbp("rank", "--predictions", str(history.root), *args), 2, needle)


@pytest.mark.parametrize("name", ["file_row_number", "file_index"])
def test_user_info_with_a_reserved_column_name(mbp, history, tmp_path, name):
    standard(history)
    info = tmp_path / "info.parquet"
    pq.write_table(pa.table({"userid": ["a"], name: [1]}), info)
    one_error(
        mbp("rank", "--predictions", str(history.root), "--user-info", str(info)),
        2,
        f"the user info has a column {name!r}, a name DuckDB reserves",
    )


def test_a_listing_during_a_swap_sees_one_tree(tmp_path):
    """The dataset is swapped (as --output-mode overwrite does) in the middle of a listing:
    the listing is of the old tree or the new one, never a mix or a vanished folder."""
    root, other = tmp_path / "p", tmp_path / "q"
    for base, days in ((root, ("2026-12-01", "2026-12-02")), (other, ("2026-12-03",))):
        for day in days:
            (base / f"dt={day}").mkdir(parents=True)
            for n in (1, 2):
                (base / f"dt={day}" / f"part-{n}.parquet").write_bytes(b"")
    old = sorted(str(p) for p in root.rglob("*.parquet"))
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        walk = sources._walk(fd, f"{root}/")
        first = next(walk)
        os.rename(root, tmp_path / "old")
        os.rename(other, root)  # root now names the new tree
        listed = sorted([first, *walk])
    finally:
        os.close(fd)
    assert listed == old


@pytest.mark.parametrize("limit", ["1", "0"])
@pytest.mark.parametrize("files", [1, 2])
def test_a_nan_score_ranks_nobody(mbp, history, limit, files):
    """pyarrow writes min/max statistics without the NaN: DuckDB must not take them for
    proof that there is none (NaN sorts above every number)."""
    if files == 2:
        history.batch(T0, [("old", 0.99), ("b", 0.8)])
    else:
        history.batch(T0 + 300, [("b", 0.8)], name_time=T0)
    history.batch(T0 + 300, [("nan", float("nan")), ("old", float("nan")), ("a", 0.9)])
    code, out, err = mbp("rank", "--predictions", str(history.root), "--limit", limit)
    assert (code, err) == (0, "")
    ids = [r["userid"] for r in parse_csv(out)[1]]
    assert ids == ["a", "b"][: int(limit) or None]  # "old"'s latest score is NaN


def test_a_nan_score_in_a_single_file(mbp, tmp_path):
    history = History(tmp_path / "p")
    history.batch(T0, [("n", float("nan")), ("a", 0.9), ("b", 0.8)])
    for limit in ("1", "0"):
        rows = run_csv(mbp, "--predictions", str(history.root), "--limit", limit)
        assert [r["userid"] for r in rows] == ["a", "b"][: int(limit) or None]


def test_user_info_columns_named_like_rank_working_columns_are_refused(mbp, history, tmp_path):
    history.batch(T0, [("a", 0.9)])
    info = tmp_path / "info.parquet"
    pq.write_table(pa.table({"userid": ["a"], "__matched": [False]}), info)
    args = ["rank", "--predictions", str(history.root), "--user-info", str(info)]
    code, out, err = mbp(*args)
    assert (code, out) == (2, "")
    assert err.startswith("mbp: error: the user info column '__matched' starts with '__'")
    assert err.count("\n") == 1
    code, out, err = mbp(*args, "--columns", "userid")  # left out, it is no trouble
    assert (code, err) == (0, "")
    assert_csv(out, expected(history))


def test_a_missing_latest_score_ranks_nobody(mbp, history):
    history.batch(T0, [("a", 0.9), ("b", 0.8)])
    history.batch(T0 + 300, [("a", None), ("c", 0.75)])  # a's latest score is missing
    code, out, err = mbp("rank", "--predictions", str(history.root), "--format", "csv")
    assert (code, err) == (0, "")
    assert [r["userid"] for r in parse_csv(out)[1]] == ["b", "c"]
    assert_csv(out, expected(history))
