"""Ctrl-C (SIGINT) and SIGTERM during `mbp predict`: exit 130 / 143 with one line on stderr,
nothing partial left, the lock released."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from cases import case
from harness import (
    BIG_ROWS,
    NEW,
    OLD,
    OLDER,
    Batch,
    Made,
    clean_env,
    epoch,
    inodes,
    leftovers,
    predict_args,
    read_dataset,
    spawn,
    wait_ready,
)
from models import table, write

from mbp.dataset import DatasetLock

ROUNDS = 6
MESSAGE = {
    signal.SIGINT: "mbp: error: interrupted\n",
    signal.SIGTERM: "mbp: error: terminated\n",
    signal.SIGHUP: "mbp: error: hung up\n",
}
WHOLE_NEW = Batch(BIG_ROWS, BIG_ROWS, 1)
WHOLE_OLD = Batch(5_000, 5_000, 1)


def assert_stopped_cleanly(
    proc: subprocess.Popen[str], signum: int, root: Path, allowed: list[dict], note: str
) -> None:
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, f"{note}: exit {proc.returncode}: {stderr}"
    assert (stdout, stderr) == ("", MESSAGE[signum]), note
    assert leftovers(root) == [], note  # no temp file, staging tree or lock file
    assert read_dataset(root) in allowed, note
    with DatasetLock(root, timeout=0):
        pass


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["append", "overwrite"])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@case("sigint-sigterm")
def test_signal_at_random_moments(
    made: Made, big: Path, model: Path, tmp_path: Path, signum: int, mode: str
) -> None:
    old = {epoch(OLD): WHOLE_OLD, epoch(OLDER): WHOLE_OLD}
    new = {**old, epoch(NEW): WHOLE_NEW} if mode == "append" else {epoch(NEW): WHOLE_NEW}
    rng = random.Random(f"{signum}-{mode}")
    signalled = 0
    for i in range(ROUNDS):
        root = made.dataset(tmp_path / f"run{i}" / "scores", "old", "older")
        before = inodes(root)
        proc = spawn(predict_args(model, big, root, NEW, "--output-mode", mode))
        started = time.monotonic()
        wait_ready(proc)  # the moments are measured from the handlers' installation
        # Spread up to the commit: after it, a signal meets a process on its way out.
        delay = (i + rng.random()) * (made.committed - (time.monotonic() - started)) / ROUNDS
        time.sleep(delay)
        if proc.poll() is not None:
            proc.communicate()
            continue  # finished first: nothing to interrupt
        committed = (root / made.files["new"].relative_to(made.roots["new"])).exists()
        proc.send_signal(signum)
        note = f"{signal.Signals(signum).name} at {delay:.2f} s ({mode})"
        proc.wait(timeout=60)
        if proc.returncode == 0:
            # It exited between poll() and the signal: only possible once it had committed
            # (after the commit it needs milliseconds to exit); before, a lost signal.
            assert committed, f"{note}: exit 0, the signal was lost"
            assert read_dataset(root) == new and leftovers(root) == [], note
            continue
        if proc.returncode == -signum:
            # Past the commit and exiting: Python had restored the signal's default action.
            assert proc.communicate() == ("", ""), note
            assert read_dataset(root) == new and leftovers(root) == [], note
            continue
        signalled += 1
        # Before the commit nothing changed; after it, the new batch is whole.
        assert_stopped_cleanly(proc, signum, root, [old, new], note)
        if read_dataset(root) == old:
            assert inodes(root) == before, note
    assert signalled >= ROUNDS // 2


# A run whose signal arrives while onnxruntime or DuckDB is busy in C++: Python runs the
# handler at the next bytecode, inside mbp's own `try` blocks around those calls.
IN_NATIVE = """
    import os, signal, sys, threading
    import duckdb, onnxruntime
    from mbp import cli, predict

    where, signum = sys.argv[1], int(sys.argv[2])

    def soon():
        threading.Timer(0.05, os.kill, (os.getpid(), signum)).start()

    if where == "onnxruntime":
        real_run = onnxruntime.InferenceSession.run

        def run(self, *args, **kwargs):
            soon()
            return real_run(self, *args, **kwargs)

        onnxruntime.InferenceSession.run = run
    else:
        real_batches = predict._batches

        def batches(reader, size):
            soon()
            yield from real_batches(reader, size)

        predict._batches = batches
    sys.argv = ["mbp", *sys.argv[3:]]
    cli.main()
"""


@pytest.mark.slow
@pytest.mark.parametrize("where", ["onnxruntime", "duckdb"])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@case("signal-in-native-code")
def test_signal_while_native_code_runs(
    made: Made, big: Path, models, tmp_path: Path, where: str, signum: int
) -> None:
    root = made.dataset(tmp_path / "scores", "old")
    # ZipMap output and one big batch: each onnxruntime call takes a good part of a second.
    args = predict_args(models["zipmap"], big, root, NEW, "--batch-size", "400000")
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(IN_NATIVE), where, str(int(signum)), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    assert_stopped_cleanly(proc, signum, root, [{epoch(OLD): WHOLE_OLD}], where)


HOLD = """
    import sys
    from pathlib import Path
    from mbp.dataset import DatasetLock
    with DatasetLock(Path(sys.argv[1])):
        print("locked", flush=True)
        sys.stdin.readline()
"""


@pytest.mark.parametrize(
    "signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=["SIGINT", "SIGTERM", "SIGHUP"]
)
@case("signal-while-waiting")
def test_signal_while_waiting_for_the_lock(models, tmp_path: Path, signum: int) -> None:
    root = tmp_path / "scores"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(HOLD), str(root)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=clean_env(),
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        src = write(table(40), tmp_path / "in.parquet")
        waiter = spawn(predict_args(models["tensor"], src, root, NEW, "--lock-timeout", "600"))
        wait_ready(waiter)
        time.sleep(1.0)  # well into the wait
        assert waiter.poll() is None
        started = time.monotonic()
        waiter.send_signal(signum)
        assert waiter.communicate(timeout=30) == ("", MESSAGE[signum])
        assert waiter.returncode == 128 + signum
        assert time.monotonic() - started < 2  # at once, not at the end of the timeout
        assert holder.poll() is None  # the holder is not disturbed
        assert read_dataset(root) == {}
    finally:
        holder.communicate("\n", timeout=30)
    assert leftovers(root) == []
