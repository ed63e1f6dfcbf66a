"""Runs that overlap: two `predict` runs on one dataset (one waits or exits 75, nothing lost or
duplicated), several racing for a new dataset, and `rank` reading while `predict` writes."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from cases import case
from harness import (
    BIG_ROWS,
    NEW,
    Batch,
    at,
    epoch,
    leftovers,
    missing_ids,
    one_line_error,
    predict_args,
    read_dataset,
    run,
    spawn,
)

pytestmark = pytest.mark.slow

OTHER = at(10)
SMALL = Batch(5_000, 5_000, 1)
MEDIUM = 200_000


def claimed(root: Path, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    """Wait until `proc` holds the dataset lock (it writes its pid into the lock file)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if (root / ".mbp.lock").read_text().startswith(f"pid {proc.pid} since "):
                return
        except FileNotFoundError:
            pass
        assert proc.poll() is None, f"mbp ended before taking the lock: {proc.communicate()}"
        assert time.monotonic() < deadline, "mbp did not take the lock"
        time.sleep(0.002)


@pytest.mark.parametrize("batch", ["same", "other"])
@case("overlap-exit-75")
def test_second_run_exits_75_while_the_first_holds_the_lock(
    big: Path, small: Path, model: Path, tmp_path: Path, batch: str
) -> None:
    root = tmp_path / "scores"
    first = spawn(predict_args(model, big, root, NEW))
    claimed(root, first)
    first.send_signal(signal.SIGSTOP)  # a slow first run: it holds the lock for as long as we like
    try:
        second_args = (
            predict_args(model, big, root, NEW)
            if batch == "same"
            else predict_args(model, small, root, OTHER)
        )
        second = run(second_args)
        assert second.returncode == 75, second.stderr
        assert one_line_error(second.stderr), second.stderr
        assert f"is locked by pid {first.pid} " in second.stderr
        assert "retry later" in second.stderr
    finally:
        first.send_signal(signal.SIGCONT)
    assert first.wait(timeout=60) == 0, first.communicate()
    assert read_dataset(root) == {epoch(NEW): Batch(BIG_ROWS, BIG_ROWS, 1)}  # nothing from #2
    retried = run(second_args)  # "retry later" works
    assert retried.returncode == 0, retried.stderr
    expected = {epoch(NEW): Batch(BIG_ROWS, BIG_ROWS, 1)}
    if batch == "other":
        expected[epoch(OTHER)] = SMALL
    assert read_dataset(root) == expected
    assert missing_ids(root, NEW, big) == 0
    assert leftovers(root) == []


@pytest.mark.parametrize("batch", ["same", "other"])
@case("overlap-wait")
def test_second_run_waits_for_the_lock(
    big: Path, small: Path, model: Path, tmp_path: Path, batch: str
) -> None:
    root = tmp_path / "scores"
    first = spawn(predict_args(model, big, root, NEW))
    claimed(root, first)
    first.send_signal(signal.SIGSTOP)
    try:
        source, when = (big, NEW) if batch == "same" else (small, OTHER)
        second = spawn(predict_args(model, source, root, when, "--lock-timeout", "120"))
        time.sleep(1.5)
        assert second.poll() is None  # waiting, not failed
    finally:
        first.send_signal(signal.SIGCONT)
    assert first.wait(timeout=60) == 0, first.communicate()
    assert second.wait(timeout=120) == 0, second.communicate()
    expected = {epoch(NEW): Batch(BIG_ROWS, BIG_ROWS, 1)}
    if batch == "other":
        expected[epoch(OTHER)] = SMALL
    assert read_dataset(root) == expected  # the same batch twice: replaced, not duplicated
    assert missing_ids(root, NEW, big) == 0
    assert leftovers(root) == []


@pytest.mark.parametrize("mix", ["append", "overwrite"])
@case("overlap-race")
def test_runs_racing_for_a_new_dataset_serialize(
    small: Path, model: Path, tmp_path: Path, mix: str
) -> None:
    # Four runs started at once on a dataset that does not exist yet; each waits its turn.
    a, b, x, y = at(20), at(25), at(30), at(35)
    runs = [(a, "append"), (b, "append"), (a, "append")]
    runs += [(x, "overwrite")] if mix == "append" else [(y, "overwrite"), (x, "overwrite")]
    for round in range(3):
        root = tmp_path / f"round{round}" / "scores"
        procs = [spawn(predict_args(model, small, root, w, "--output-mode", m, "--lock-timeout",
                                    "120")) for w, m in runs]  # fmt: skip
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=180)
            assert (proc.returncode, stdout, stderr) == (0, "", ""), stderr
        state = read_dataset(root)
        assert set(state.values()) == {SMALL}, state  # every batch whole, none twice
        overwrites = {epoch(w) for w, m in runs if m == "overwrite"}
        # Whatever the order: exactly one overwrite's batch survives, with the appends that
        # came after it.
        assert len(overwrites & set(state)) == 1, state
        assert set(state) <= overwrites | {epoch(a), epoch(b)}, state
        assert leftovers(root) == []


def _predict_loop(
    model: Path, medium: Path, small: Path, root: Path, mode: str, done: list
) -> None:
    try:
        for k in range(1, 5):
            finished = run(predict_args(model, medium, root, at(5 * k), "--output-mode", mode))
            assert finished.returncode == 0, finished.stderr
            if mode == "overwrite":
                # A batch of other users, a minute later than the one just written: a read
                # that mixes trees shows them next to the NEXT overwrite's batch.
                finished = run(predict_args(model, small, root, at(5 * k + 1)))
                assert finished.returncode == 0, finished.stderr
        done.append("ok")
    except BaseException as exc:  # noqa: BLE001 - reported by the main thread
        done.append(exc)


@pytest.mark.parametrize("mode", ["append", "overwrite"])
@case("rank-while-writing")
def test_rank_while_predict_writes(
    mbp, medium: Path, small: Path, model: Path, tmp_path: Path, mode: str
) -> None:
    root = tmp_path / "scores"
    code, _, stderr = mbp(*predict_args(model, medium, root, at(0)))
    assert code == 0, stderr
    done: list = []
    writer = threading.Thread(
        target=_predict_loop, args=(model, medium, small, root, mode, done), daemon=True
    )
    writer.start()
    reads, times = 0, Counter()
    while writer.is_alive() or reads < 3:
        out = tmp_path / f"rank{reads}.parquet"
        code, _, stderr = mbp(
            "rank", "--predictions", str(root), "--threshold", "0", "--limit", "0", "-o", str(out)
        )
        assert code == 0, f"read {reads}: {stderr}"
        result = pq.read_table(out)
        is_small = pc.starts_with(result["userid"], "u05")
        ours = Counter(result.filter(pc.invert(is_small))["time"].to_pylist())
        theirs = Counter(result.filter(is_small)["time"].to_pylist())
        # Every medium user, all with the same (latest) batch: never a partial batch.
        assert len(ours) == 1 and sum(ours.values()) == MEDIUM, f"read {reads}: {ours}"
        (t,) = ours
        if theirs:
            assert theirs == Counter({t + 60: 5_000}), f"read {reads}: a mixed read: {theirs}, {t}"
        times[t] += 1
        reads += 1
    writer.join()
    assert done == ["ok"], done
    assert reads >= 5 and len(times) >= 2, (reads, times)  # reads really overlapped writes
