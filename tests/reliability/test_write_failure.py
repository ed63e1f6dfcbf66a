"""The disk fills up in the middle of a batch: exit 1 with one line, the dataset as it was."""

from __future__ import annotations

import resource
import subprocess
from pathlib import Path

import pytest
from cases import case
from harness import (
    MBP,
    NEW,
    Made,
    clean_env,
    inodes,
    leftovers,
    one_line_error,
    predict_args,
    read_dataset,
)

from mbp.dataset import DatasetLock

pytestmark = pytest.mark.slow  # for the shared big input and batches it needs

LIMIT = 256 * 1024  # bytes: far less than the batch needs


def _small_files_only() -> None:
    # RLIMIT_FSIZE makes a write past the limit fail with EFBIG (Python ignores SIGXFSZ),
    # as a full disk makes it fail with ENOSPC: the same path through mbp.
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))


@pytest.mark.parametrize("mode", ["append", "overwrite"])
@case("write-fails")
def test_write_failure_mid_batch(made: Made, big: Path, model: Path, tmp_path: Path, mode: str):
    root = made.dataset(tmp_path / "scores", "old", "older")
    before, state = inodes(root), read_dataset(root)
    done = subprocess.run(
        [*MBP, *predict_args(model, big, root, NEW, "--output-mode", mode)],
        capture_output=True,
        text=True,
        env=clean_env(),
        preexec_fn=_small_files_only,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    assert one_line_error(done.stderr), done.stderr
    assert "cannot write to " in done.stderr and "File too large" in done.stderr
    assert inodes(root) == before and read_dataset(root) == state
    assert leftovers(root) == []
    with DatasetLock(root, timeout=0):
        pass
