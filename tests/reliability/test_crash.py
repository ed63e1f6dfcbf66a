"""SIGKILL the real `mbp predict` at random moments of a run: every file a reader sees is whole,
no temporary file is read, the lock is free, and a re-run leaves exactly the expected rows once.

Each kill gets a fresh dataset whose earlier batches are hard links to files made once, so a
kill can only leave them alone (same inode) or, for the batch being written, replace it whole.
"""

from __future__ import annotations

import random
import signal
import time
from collections import Counter
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
from cases import case
from harness import (
    BIG_ROWS,
    NEW,
    OLD,
    OLDER,
    Batch,
    Made,
    epoch,
    inodes,
    leftovers,
    missing_ids,
    predict_args,
    read_dataset,
    spawn,
    visible_files,
)

from mbp.dataset import DatasetLock

pytestmark = pytest.mark.slow

KILLS = 20
SEED = 20261203
SMALL_ROWS = 5_000


def delays(seconds: float, n: int, seed: int) -> list[float]:
    """`n` moments spread over the whole run: one at random in each of n equal slices."""
    rng = random.Random(seed)
    moments = [(i + rng.random()) * seconds * 1.05 / n for i in range(n)]
    rng.shuffle(moments)
    return moments


def kill_at(args: list[str], delay: float, root: Path) -> tuple[int, bool]:
    """Run mbp, SIGKILL it after `delay` s; its exit status, and whether a write was under way."""
    proc = spawn(args)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    writing = any(".tmp" in p or ".mbp-staging-" in p or ".mbp-old-" in p for p in leftovers(root))
    return proc.returncode, writing


def ranked(mbp, root: Path, out: Path) -> Counter:
    """`mbp rank` over the dataset: users per time of their latest score."""
    code, _, stderr = mbp(
        "rank", "--predictions", str(root), "--threshold", "0", "--limit", "0", "-o", str(out)
    )
    assert code == 0, stderr
    result = pq.read_table(out)
    assert result.num_rows == len(set(result["userid"].to_pylist()))
    return Counter(result["time"].to_pylist())


def latest_by_hand(root: Path) -> Counter:
    """Users per time of their latest score, counted by DuckDB over the visible files."""
    files = [str(f) for f in visible_files(root)]
    if not files:
        return Counter()
    rows = (
        duckdb.connect()
        .execute(
            "SELECT t, count(*) FROM (SELECT userid, max(time) AS t FROM read_parquet($f) "
            "GROUP BY userid) GROUP BY t",
            {"f": files},
        )
        .fetchall()
    )
    return Counter(dict(rows))


def lock_is_free(root: Path) -> None:
    with DatasetLock(root, timeout=0):
        pass


WHOLE_NEW = Batch(BIG_ROWS, BIG_ROWS, 1)
WHOLE_OLD = Batch(SMALL_ROWS, SMALL_ROWS, 1)


@case("kill-append")
def test_sigkill_during_append(mbp, made: Made, big: Path, model: Path, tmp_path: Path) -> None:
    hits, outcomes = 0, []
    for i, delay in enumerate(delays(made.seconds, KILLS, SEED)):
        # Odd rounds re-run a batch that is already there: the old file must survive a kill.
        # Every fourth round writes the first batch of a dataset that does not exist yet.
        names = [("old",), ("old", "new"), ("old",), ()][i % 4]
        root = tmp_path / f"kill{i}" / "scores"
        if names:
            made.dataset(root, *names)
        before = inodes(root)
        others = {epoch(OLD): WHOLE_OLD} if names else {}
        args = predict_args(model, big, root, NEW)
        code, writing = kill_at(args, delay, root)
        hits += writing
        outcomes.append((round(delay, 2), code, writing))
        note = f"kill {i} at {delay:.2f} s (exit {code})"

        state = read_dataset(root)
        if names:
            assert inodes(root)[made.rel("old")] == before[made.rel("old")], note  # untouched
        assert {t: b for t, b in state.items() if t != epoch(NEW)} == others, note
        assert state.get(epoch(NEW)) in ((WHOLE_NEW,) if "new" in names else (None, WHOLE_NEW))
        if code == 0:
            assert state.get(epoch(NEW)) == WHOLE_NEW, note
        if writing:  # temporary files are there for rank to trip over
            assert ranked(mbp, root, tmp_path / f"rank{i}.parquet") == latest_by_hand(root), note
        lock_is_free(root)

        code, _, stderr = mbp(*args)
        assert code == 0, f"{note}: re-run failed: {stderr}"
        assert read_dataset(root) == {**others, epoch(NEW): WHOLE_NEW}, note
        if i % 5 == 0:  # the rows are the input's (counts alone say "some 800,000 ids")
            assert missing_ids(root, NEW, big) == 0, note
        assert leftovers(root) == [], note
    # The kills must really have hit runs in the middle of writing, not only start-up.
    assert hits >= 3, outcomes


@case("kill-overwrite")
def test_sigkill_during_overwrite(mbp, made: Made, big: Path, model: Path, tmp_path: Path) -> None:
    old = {epoch(OLD): WHOLE_OLD, epoch(OLDER): WHOLE_OLD}
    new = {epoch(NEW): WHOLE_NEW}
    hits, outcomes = 0, []
    for i, delay in enumerate(delays(made.seconds, KILLS, SEED + 1)):
        root = made.dataset(tmp_path / f"kill{i}" / "scores", "old", "older")
        before = inodes(root)
        args = predict_args(model, big, root, NEW, "--output-mode", "overwrite")
        code, writing = kill_at(args, delay, root)
        hits += writing
        outcomes.append((round(delay, 2), code, writing))
        note = f"kill {i} at {delay:.2f} s (exit {code})"

        state = read_dataset(root)
        assert state in (old, new), f"{note}: a mix of old and new: {state}"
        if state == old:
            assert inodes(root) == before, note  # the very same old files
        if code == 0:
            assert state == new, note
        if writing:
            assert ranked(mbp, root, tmp_path / f"rank{i}.parquet") == latest_by_hand(root), note
        lock_is_free(root)

        code, _, stderr = mbp(*args)
        assert code == 0, f"{note}: re-run failed: {stderr}"
        assert read_dataset(root) == new, note
        if i % 5 == 0:
            assert missing_ids(root, NEW, big) == 0, note
        assert leftovers(root) == [], note
    assert hits >= 3, outcomes
