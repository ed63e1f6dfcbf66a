"""The output dataset: layout, atomic batch files, overwrite by swap, and the dataset lock."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import pyarrow as pa
import pytest

from mbp import dataset
from mbp.dataset import BatchWriter, DatasetLock, batch_path
from mbp.errors import LockedError, RuntimeFailure, UsageError

REPO = Path(__file__).resolve().parents[1]
SCHEMA = pa.schema([("userid", pa.string()), ("score", pa.float64()), ("time", pa.int64())])
UTC_TZ = ZoneInfo("UTC")


def table(ids: list[str], score: float, when: int = 1_796_292_300) -> pa.Table:
    return pa.table(
        {"userid": ids, "score": [score + i for i in range(len(ids))], "time": [when] * len(ids)},
        schema=SCHEMA,
    )


def expected(t: pa.Table, dt: str) -> list[tuple]:
    return sorted((r["userid"], r["score"], r["time"], dt) for r in t.to_pylist())


def read_back(root: Path) -> list[tuple]:
    """Every row of the dataset as DuckDB reads it, with the hive partition `dt` as text."""
    con = duckdb.connect()
    sql = (
        "SELECT userid, score, time, CAST(dt AS VARCHAR) FROM "
        "read_parquet($glob, hive_partitioning = true) ORDER BY ALL"
    )
    return [tuple(r) for r in con.execute(sql, {"glob": str(root / "**" / "*.parquet")}).fetchall()]


def snapshot(top: Path) -> dict[str, bytes | None]:
    """Every directory and file under `top`, hidden ones included, with file contents."""
    found: dict[str, bytes | None] = {}
    for d, dirs, files in os.walk(top):
        for name in dirs:
            found[os.path.relpath(os.path.join(d, name), top)] = None
        for name in files:
            found[os.path.relpath(os.path.join(d, name), top)] = Path(d, name).read_bytes()
    return found


def write_batch(root: Path, stamp: str, t: pa.Table, mode: str = "append") -> int:
    when = datetime.fromisoformat(stamp).replace(tzinfo=UTC)
    with DatasetLock(root), BatchWriter(root, batch_path(root, when, UTC_TZ), SCHEMA, mode) as w:
        w.write(t)
        return w.commit()


def child(code: str, *args: str) -> subprocess.Popen:
    """A Python subprocess running `code` with mbp importable; stdin/stdout are pipes."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


HOLD = """
    import sys
    from pathlib import Path
    from mbp.dataset import DatasetLock
    with DatasetLock(Path(sys.argv[1])):
        print("locked", flush=True)
        sys.stdin.readline()
"""


@pytest.mark.parametrize(
    ("instant", "zone", "path"),
    [
        # 23:30 UTC in December is 00:30 the next day in Berlin (UTC+1).
        (
            "2026-12-03T23:30:00+00:00",
            "Europe/Berlin",
            "dt=2026-12-04/part-20261204T003000.parquet",
        ),
        # Summer time: 22:05 UTC is 00:05 in Berlin (UTC+2).
        (
            "2026-06-30T22:05:00+00:00",
            "Europe/Berlin",
            "dt=2026-07-01/part-20260701T000500.parquet",
        ),
        ("2026-12-03T23:30:00+00:00", "UTC", "dt=2026-12-03/part-20261203T233000.parquet"),
        (
            "2026-12-04T03:00:00+00:00",
            "America/New_York",
            "dt=2026-12-03/part-20261203T220000.parquet",
        ),
        # Clocks go back at 03:00 CEST on 25 October 2026: 02:30 happens twice, so both
        # passes carry their offset; the hour after is plain again.
        (
            "2026-10-25T00:30:00+00:00",
            "Europe/Berlin",
            "dt=2026-10-25/part-20261025T023000+0200.parquet",
        ),
        (
            "2026-10-25T01:30:00+00:00",
            "Europe/Berlin",
            "dt=2026-10-25/part-20261025T023000+0100.parquet",
        ),
        (
            "2026-10-25T02:30:00+00:00",
            "Europe/Berlin",
            "dt=2026-10-25/part-20261025T033000.parquet",
        ),
        # Spring forward (29 March 2026, 02:00 CET -> 03:00 CEST): no wall time repeats.
        (
            "2026-03-29T01:00:00+00:00",
            "Europe/Berlin",
            "dt=2026-03-29/part-20260329T030000.parquet",
        ),
    ],
)
def test_batch_path_uses_the_local_date_and_time(instant: str, zone: str, path: str) -> None:
    root = Path("/data/scores")
    assert batch_path(root, datetime.fromisoformat(instant), ZoneInfo(zone)) == root / path


def test_both_passes_of_a_repeated_hour_keep_their_batches(tmp_path: Path) -> None:
    root, berlin = tmp_path / "scores", ZoneInfo("Europe/Berlin")
    first, second = table(["a"], 0.1, when=1), table(["b"], 0.2, when=2)
    for instant, rows in (
        ("2026-10-25T00:30:00+00:00", first),
        ("2026-10-25T01:30:00+00:00", second),
    ):
        target = batch_path(root, datetime.fromisoformat(instant), berlin)
        with DatasetLock(root), BatchWriter(root, target, SCHEMA) as writer:
            writer.write(rows)
            writer.commit()
    assert read_back(root) == sorted(expected(first, "2026-10-25") + expected(second, "2026-10-25"))


def test_written_batch_reads_back_with_duckdb(tmp_path: Path) -> None:
    root = tmp_path / "scores"
    first, second = table(["00012", "00345"], 0.5), table(["o'hara", "00999", "01000"], 0.1)
    target = batch_path(root, datetime(2026, 12, 3, 10, 5, tzinfo=UTC), UTC_TZ)
    with DatasetLock(root), BatchWriter(root, target, SCHEMA) as writer:
        writer.write(first.to_batches()[0])
        writer.write(second)
        assert writer.commit() == 5
    assert read_back(root) == sorted(expected(first, "2026-12-03") + expected(second, "2026-12-03"))
    # Only the batch file remains: no temp file, no lock file.
    assert sorted(snapshot(tmp_path)) == [
        "scores",
        "scores/dt=2026-12-03",
        os.path.relpath(target, tmp_path),
    ]


def test_append_rerun_of_a_batch_replaces_it(tmp_path: Path) -> None:
    root = tmp_path / "scores"
    write_batch(root, "2026-12-03T10:05:00", table(["a", "b", "c"], 0.1))
    retry = table(["a", "b", "c"], 0.6)
    assert write_batch(root, "2026-12-03T10:05:00", retry) == 3
    assert read_back(root) == expected(retry, "2026-12-03")


def test_append_of_another_batch_adds_a_file(tmp_path: Path) -> None:
    root = tmp_path / "scores"
    one, two, three = table(["a", "b"], 0.1), table(["b", "c"], 0.2), table(["d"], 0.3)
    write_batch(root, "2026-12-03T10:05:00", one)
    write_batch(root, "2026-12-03T10:10:00", two)
    write_batch(root, "2026-12-04T00:00:00", three)
    assert read_back(root) == sorted(
        expected(one, "2026-12-03") + expected(two, "2026-12-03") + expected(three, "2026-12-04")
    )
    assert len(list(root.rglob("*.parquet"))) == 3


@pytest.fixture(params=["exchange", "rename"])
def swap_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run overwrite tests with renameat2 and with the two-rename fallback (as without it)."""
    if request.param == "rename":

        def unavailable(a: Path, b: Path) -> None:
            raise OSError(errno.ENOSYS, "no renameat2")

        monkeypatch.setattr(dataset, "_exchange", unavailable)
    return request.param


def test_overwrite_leaves_only_the_new_batch(tmp_path: Path, swap_kind: str) -> None:
    root = tmp_path / "scores"
    write_batch(root, "2026-12-02T23:55:00", table(["a", "b"], 0.1))
    write_batch(root, "2026-12-03T10:00:00", table(["c"], 0.2))
    os.chmod(root, 0o750)
    new = table(["x", "y"], 0.9)
    assert write_batch(root, "2026-12-03T10:05:00", new, mode="overwrite") == 2
    assert read_back(root) == expected(new, "2026-12-03")
    assert sorted(snapshot(tmp_path)) == [
        "scores",
        "scores/dt=2026-12-03",
        "scores/dt=2026-12-03/part-20261203T100500.parquet",
    ]
    assert os.stat(root).st_mode & 0o777 == 0o750  # the swapped-in root keeps the old one's mode


def test_overwrite_creates_a_missing_root(tmp_path: Path, swap_kind: str) -> None:
    root = tmp_path / "new" / "scores"
    new = table(["x"], 0.9)
    write_batch(root, "2026-12-03T10:05:00", new, mode="overwrite")
    assert read_back(root) == expected(new, "2026-12-03")
    assert sorted(os.listdir(tmp_path / "new")) == ["scores"]


def test_overwrite_keeps_the_lock_until_released(tmp_path: Path, swap_kind: str) -> None:
    root = tmp_path / "scores"
    write_batch(root, "2026-12-03T10:00:00", table(["a"], 0.1))
    target = batch_path(root, datetime(2026, 12, 3, 10, 5, tzinfo=UTC), UTC_TZ)
    with DatasetLock(root):
        with BatchWriter(root, target, SCHEMA, "overwrite") as writer:
            writer.write(table(["x"], 0.9))
            writer.commit()
        # The root is a new directory now, but its lock is still ours.
        with pytest.raises(LockedError, match=f"pid {os.getpid()} "):
            DatasetLock(root).__enter__()
    with DatasetLock(root):
        pass


@pytest.mark.parametrize("mode", ["append", "overwrite"])
@pytest.mark.parametrize("rows_written", [False, True])
def test_failure_before_commit_leaves_dataset_as_before(
    tmp_path: Path, mode: str, rows_written: bool
) -> None:
    root = tmp_path / "scores"
    write_batch(root, "2026-12-03T10:00:00", table(["a", "b"], 0.1))
    before = snapshot(tmp_path)
    target = batch_path(root, datetime(2026, 12, 4, 10, 5, tzinfo=UTC), UTC_TZ)  # a new dt= dir
    with pytest.raises(KeyError), DatasetLock(root), BatchWriter(root, target, SCHEMA, mode) as w:
        if rows_written:
            w.write(table(["x"], 0.9))
        raise KeyError("model failed")
    assert snapshot(tmp_path) == before


def test_failure_on_a_new_root_leaves_nothing(tmp_path: Path) -> None:
    root = tmp_path / "a" / "b" / "scores"
    target = batch_path(root, datetime(2026, 12, 3, 10, 5, tzinfo=UTC), UTC_TZ)
    with (
        pytest.raises(KeyboardInterrupt),
        DatasetLock(root),
        BatchWriter(root, target, SCHEMA) as w,
    ):
        w.write(table(["x"], 0.9))
        raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []


def test_io_error_while_committing_is_a_runtime_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "scores"
    write_batch(root, "2026-12-03T10:00:00", table(["a"], 0.1))
    before = snapshot(tmp_path)

    def broken_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    target = batch_path(root, datetime(2026, 12, 3, 10, 5, tzinfo=UTC), UTC_TZ)
    with DatasetLock(root), BatchWriter(root, target, SCHEMA) as w:
        w.write(table(["x"], 0.9))
        monkeypatch.setattr(dataset.os, "fsync", broken_fsync)
        with pytest.raises(
            RuntimeFailure, match=r"^cannot write to .*scores.*: Input/output error$"
        ):
            w.commit()
    monkeypatch.undo()
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("mode", ["append", "overwrite"])
def test_batch_is_invisible_to_readers_until_commit(tmp_path: Path, mode: str) -> None:
    root = tmp_path / "scores"
    old = table(["a", "b"], 0.1)
    write_batch(root, "2026-12-03T10:00:00", old)
    target = batch_path(root, datetime(2026, 12, 3, 10, 5, tzinfo=UTC), UTC_TZ)
    new = table([f"x{i}" for i in range(dataset.ROW_GROUP_ROWS)], 0.9)  # one whole row group
    with DatasetLock(root), BatchWriter(root, target, SCHEMA, mode) as w:
        w.write(new)
        hidden = [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
        assert len(hidden) == 1 and hidden[0].name.startswith(".") and hidden[0].stat().st_size > 0
        assert read_back(root) == expected(old, "2026-12-03")
        w.commit()
    if mode == "append":
        assert read_back(root) == sorted(expected(old, "2026-12-03") + expected(new, "2026-12-03"))
    else:
        assert read_back(root) == expected(new, "2026-12-03")


def test_second_lock_fails_at_once_naming_the_holder_then_waits(tmp_path: Path) -> None:
    root = tmp_path / "scores"
    holder = child(HOLD, str(root))
    assert holder.stdout is not None and holder.stdin is not None
    assert holder.stdout.readline() == "locked\n"
    with pytest.raises(LockedError) as info:
        DatasetLock(root, timeout=0).__enter__()
    message = str(info.value)
    assert f"locked by pid {holder.pid} (running since " in message
    assert "retry later or raise --lock-timeout" in message and "\n" not in message

    threading.Timer(0.5, holder.stdin.close).start()
    started = time.monotonic()
    with DatasetLock(root, timeout=2):
        waited = time.monotonic() - started
        assert holder.wait(timeout=5) == 0
    assert 0.4 < waited < 2


PROBE = """
    import sys
    from pathlib import Path
    from mbp.dataset import DatasetLock
    from mbp.errors import LockedError
    try:
        with DatasetLock(Path(sys.argv[1])):
            print("got it")
    except LockedError:
        print("busy")
"""


def test_lock_file_unlinked_while_locking_is_not_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "scores"
    root.mkdir()
    real_flock, calls = dataset.fcntl.flock, []

    def flock(fd: int, operation: int) -> None:
        if not calls:  # the previous holder releases and removes its file just before our flock
            os.unlink(root / ".mbp.lock")
        calls.append(operation)
        real_flock(fd, operation)

    monkeypatch.setattr(dataset.fcntl, "flock", flock)
    with DatasetLock(root):
        monkeypatch.undo()
        assert len(calls) == 2  # the lock on the orphaned file was dropped and taken again
        probe = child(PROBE, str(root))
        assert probe.communicate(timeout=20)[0] == "busy\n"
    probe = child(PROBE, str(root))
    assert probe.communicate(timeout=20)[0] == "got it\n"


def test_lock_of_a_killed_holder_is_free(tmp_path: Path) -> None:
    root = tmp_path / "scores"
    holder = child(HOLD, str(root))
    assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
    holder.send_signal(signal.SIGKILL)
    assert holder.wait(timeout=5) == -signal.SIGKILL
    assert (root / ".mbp.lock").read_text().startswith(f"pid {holder.pid} since ")
    with DatasetLock(root, timeout=0):
        pass
    # The killed run's lock file is gone; the (empty) root it made is not ours to remove.
    assert os.listdir(root) == []


def test_stale_leftovers_are_removed_at_the_next_lock(tmp_path: Path) -> None:
    root = tmp_path / "scores"
    kept = table(["a"], 0.1)
    write_batch(root, "2026-12-03T10:00:00", kept)
    stale = [
        root / "dt=2026-12-03" / ".part-20261203T100500.parquet.99999.tmp",
        root / "dt=2026-12-05" / ".part-20261205T000000.parquet.99999.tmp",  # in a dir it made
        tmp_path / ".scores.mbp-staging-99999" / "dt=2026-12-03" / "part-20261203T100500.parquet",
        tmp_path / ".scores.mbp-old-99999" / "dt=2026-12-01" / "part-20261201T100500.parquet",
    ]
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half written")
    (tmp_path / "other").write_text("not ours")
    with DatasetLock(root):
        pass
    assert sorted(snapshot(tmp_path)) == [
        "other",
        "scores",
        "scores/dt=2026-12-03",
        "scores/dt=2026-12-03/part-20261203T100000.parquet",
    ]
    assert read_back(root) == expected(kept, "2026-12-03")


@pytest.mark.parametrize("hidden", [".git/config", ".ssh/id_rsa", ".bashrc", "dt=x/.notes"])
def test_overwrite_refuses_a_folder_with_hidden_files_that_are_not_its_own(
    tmp_path: Path, hidden: str
) -> None:
    root = tmp_path / "home"
    (root / hidden).parent.mkdir(parents=True, exist_ok=True)
    (root / hidden).write_text("precious")
    before = snapshot(tmp_path)
    with pytest.raises(UsageError, match=r"not part of an mbp dataset"):
        write_batch(root, "2026-12-03T10:05:00", table(["x"], 0.9), mode="overwrite")
    assert snapshot(tmp_path) == before


def test_overwrite_accepts_its_own_lock_and_leftovers(tmp_path: Path) -> None:
    root = tmp_path / "scores"
    write_batch(root, "2026-12-03T10:00:00", table(["a"], 0.1))
    (root / "dt=2026-12-03" / ".part-20261203T100500.parquet.4242.tmp").write_bytes(b"junk")
    new = table(["x"], 0.9)
    write_batch(root, "2026-12-03T10:05:00", new, mode="overwrite")
    assert read_back(root) == expected(new, "2026-12-03")


def test_overwrite_refuses_the_working_folder(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "scores"
    write_batch(root, "2026-12-03T10:00:00", table(["a"], 0.1))
    (root / "dt=2026-12-03" / "inner").mkdir()
    for cwd in (root, root / "dt=2026-12-03" / "inner"):
        monkeypatch.chdir(cwd)
        with pytest.raises(UsageError, match="working folder"):
            write_batch(root, "2026-12-03T10:05:00", table(["x"], 0.9), mode="overwrite")
    assert read_back(root) == expected(table(["a"], 0.1), "2026-12-03")


def test_a_lock_file_that_is_a_symlink_is_refused_and_its_target_kept(tmp_path: Path) -> None:
    root, victim = tmp_path / "scores", tmp_path / "victim.txt"
    root.mkdir()
    victim.write_text("keep me")
    (root / dataset.LOCK_NAME).symlink_to(victim)
    with pytest.raises(UsageError, match="is a symbolic link"):
        write_batch(root, "2026-12-03T10:05:00", table(["x"], 0.9))
    assert victim.read_text() == "keep me"
    assert not list(root.rglob("*.parquet"))


def test_output_path_that_is_a_file(tmp_path: Path) -> None:
    root = tmp_path / "scores.parquet"
    root.write_bytes(b"PAR1")
    with pytest.raises(
        UsageError, match=r"^output path .*scores\.parquet is a file; --output must be a directory$"
    ):
        DatasetLock(root).__enter__()
    target = batch_path(root, datetime(2026, 12, 3, 10, 5, tzinfo=UTC), UTC_TZ)
    with pytest.raises(UsageError, match="is a file"), BatchWriter(root, target, SCHEMA) as w:
        w.write(table(["x"], 0.9))
    assert root.read_bytes() == b"PAR1" and os.listdir(tmp_path) == ["scores.parquet"]


def test_unwritable_output_is_a_usage_error(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        # root writes through chmod 0o555; a parent that is a regular file stops it instead.
        (tmp_path / "plain").write_text("x")
        root, bad = tmp_path / "plain" / "scores", "plain"
    else:
        (tmp_path / "ro").mkdir(mode=0o555)
        root, bad = tmp_path / "ro" / "scores", "ro"
    with pytest.raises(UsageError, match=f"{bad}") as info:
        DatasetLock(root).__enter__()
    assert "--output" in str(info.value) and "\n" not in str(info.value)
    assert sorted(os.listdir(tmp_path)) == [bad]


def test_failed_swap_keeps_the_old_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "scores"
    old = table(["a", "b"], 0.1)
    write_batch(root, "2026-12-03T10:00:00", old)
    before = snapshot(tmp_path)
    staged: list[str] = []

    def crash(staging: Path, real: Path) -> Path:
        staged.extend(sorted(snapshot(staging)))  # the new tree is complete at this point
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(dataset, "_swap", crash)
    with pytest.raises(RuntimeFailure):
        write_batch(root, "2026-12-03T10:05:00", table(["x"], 0.9), mode="overwrite")
    assert staged == [".mbp.lock", "dt=2026-12-03", "dt=2026-12-03/part-20261203T100500.parquet"]
    assert snapshot(tmp_path) == before
    assert read_back(root) == expected(old, "2026-12-03")


KILLED_OVERWRITE = """
    import errno, os, signal, sys
    from datetime import UTC, datetime
    from pathlib import Path
    from zoneinfo import ZoneInfo
    import pyarrow as pa
    from mbp import dataset

    root, moment = Path(sys.argv[1]), sys.argv[2]
    real_swap, real_rename = dataset._swap, os.rename

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    def swap(staging, real):
        if moment == "before-swap":
            die()
        old = real_swap(staging, real)
        die()

    def no_exchange(a, b):
        raise OSError(errno.ENOSYS, "no renameat2")

    renames = []

    def rename(a, b):
        renames.append(a)
        if len(renames) == 2:
            die()
        real_rename(a, b)

    if moment == "between-renames":
        dataset._exchange, os.rename = no_exchange, rename
    else:
        dataset._swap = swap
    t = pa.table({"userid": ["x"], "score": [0.9], "time": [1]})
    target = dataset.batch_path(root, datetime(2026, 12, 3, 10, 5, tzinfo=UTC), ZoneInfo("UTC"))
    with dataset.DatasetLock(root), dataset.BatchWriter(root, target, t.schema, "overwrite") as w:
        w.write(t)
        w.commit()
"""


@pytest.mark.parametrize("moment", ["before-swap", "between-renames", "after-swap"])
def test_overwrite_killed_at_any_moment_leaves_old_or_new(tmp_path: Path, moment: str) -> None:
    root = tmp_path / "scores"
    old = table(["a", "b"], 0.1)
    write_batch(root, "2026-12-03T10:00:00", old)
    killed = child(KILLED_OVERWRITE, str(root), moment)
    assert killed.wait(timeout=20) == -signal.SIGKILL
    leftovers = [p for p in os.listdir(tmp_path) if p != "scores"]
    assert len(leftovers) >= 1 and all(p.startswith(".scores.mbp-") for p in leftovers)
    new = [("x", 0.9, 1, "2026-12-03")]
    if moment == "between-renames":
        assert not root.exists()  # the fallback's one window: the next lock puts the old tree back
    else:  # readers already see one whole state before any cleanup
        assert read_back(root) == (new if moment == "after-swap" else expected(old, "2026-12-03"))
    with DatasetLock(root):
        pass
    assert read_back(root) == (new if moment == "after-swap" else expected(old, "2026-12-03"))
    assert os.listdir(tmp_path) == ["scores"]
