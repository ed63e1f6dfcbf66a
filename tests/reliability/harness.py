"""What the reliability tests share: real `mbp` subprocesses, and checks of a dataset's state
made with pyarrow and hand-written DuckDB SQL, never with mbp's own code."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

_SCRIPT = Path(sys.executable).parent / "mbp"
# The installed console script, as cron runs it; `python -m mbp` where there is none.
MBP = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "mbp"]
BASE = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
# Large enough that one `mbp predict` over it runs for a second or two: kills and signals
# then land in every stage (start-up, model load, scan, score, write, commit).
BIG_ROWS = 800_000


def at(minutes: int) -> datetime:
    """The scheduled time `minutes` after 2026-12-03 10:00 UTC."""
    return BASE + timedelta(minutes=minutes)


def iso(when: datetime) -> str:
    return when.isoformat()


def epoch(when: datetime) -> int:
    return int(when.timestamp())


def predict_args(
    model: Path, input: Path | str, output: Path, when: datetime, *extra: str
) -> list[str]:
    """`mbp predict` arguments for the batch scheduled at `when`, quiet."""
    return [
        "predict",
        "--model", str(model),
        "--input", str(input),
        "--output", str(output),
        "--scheduled-time", iso(when),
        "--timezone", "UTC",
        "--quiet",
        *extra,
    ]  # fmt: skip


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MBP_")}


def spawn(args: Sequence[str], stdin: str | None = None) -> subprocess.Popen[str]:
    """The real `mbp` in its own process (stdin closed unless given)."""
    proc = subprocess.Popen(
        [*MBP, *args],
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    if stdin is not None:
        assert proc.stdin is not None
        proc.stdin.write(stdin)
        proc.stdin.close()
    return proc


def run(args: Sequence[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MBP, *args], capture_output=True, text=True, env=clean_env(), timeout=timeout
    )


def wait_ready(proc: subprocess.Popen[str], timeout: float = 30) -> None:
    """Wait until mbp has installed its SIGTERM handler (Linux: SigCgt in /proc/PID/status).

    Before that, Python itself is still starting and importing mbp; signals get Python's
    default handling there, which the interrupt tests do not measure."""
    bit = 1 << (signal.SIGTERM - 1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
        except FileNotFoundError:
            return  # already gone
        caught = next(line for line in status.splitlines() if line.startswith("SigCgt:"))
        if int(caught.split()[1], 16) & bit:
            return
        if proc.poll() is not None:
            return
        time.sleep(0.002)
    raise AssertionError(f"mbp (pid {proc.pid}) did not start within {timeout} s")


def wait_for(path: Path, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    """Wait until `path` exists (while `proc` runs)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"mbp ended before {path} appeared: {proc.communicate()}"
        assert time.monotonic() < deadline, f"{path} did not appear within {timeout} s"
        time.sleep(0.002)


# --- the state of a dataset ------------------------------------------------------------


def _hidden(rel: Path) -> bool:
    return any(part.startswith((".", "_")) for part in rel.parts)


def visible_files(root: Path) -> list[Path]:
    """The `.parquet` files a reader of the dataset sees (hidden names skipped)."""
    if not root.is_dir():
        return []
    return sorted(
        p for p in root.rglob("*.parquet") if p.is_file() and not _hidden(p.relative_to(root))
    )


def leftovers(root: Path) -> list[str]:
    """Hidden files and directories a run leaves behind: temp files, staging or old trees,
    the lock file (it exists only while a run holds the lock)."""
    found: list[str] = []
    if root.is_dir():
        for p in root.rglob("*"):
            if _hidden(p.relative_to(root)):
                found.append(str(p.relative_to(root)))
    found += sorted(p.name for p in root.parent.glob(f".{root.name}.mbp-*"))
    return sorted(found)


def inodes(root: Path) -> dict[str, int]:
    """Visible file -> inode: a file that was not rewritten keeps its inode."""
    return {str(p.relative_to(root)): p.stat().st_ino for p in visible_files(root)}


@dataclass(frozen=True)
class Batch:
    rows: int
    ids: int  # distinct rowids
    files: int


def read_dataset(root: Path) -> dict[int, Batch]:
    """Check every visible file is whole and that DuckDB reads exactly those files;
    return the rows per batch (`time`)."""
    files = visible_files(root)
    for f in files:
        meta = pq.ParquetFile(f).metadata
        whole = pq.read_table(f)  # decodes every page: a torn file fails here
        assert whole.num_rows == meta.num_rows, f
    if not files:
        return {}
    con = duckdb.connect()
    pattern = str(root / "**" / "*.parquet")
    seen = con.execute(
        "SELECT DISTINCT filename FROM read_parquet($p, filename = true, hive_partitioning = true)",
        {"p": pattern},
    ).fetchall()
    assert sorted(Path(f) for (f,) in seen) == files  # no temp file is picked up
    rows = con.execute(
        "SELECT time, count(*), count(DISTINCT userid), count(DISTINCT filename) "
        "FROM read_parquet($p, filename = true, hive_partitioning = true) GROUP BY time",
        {"p": pattern},
    ).fetchall()
    return {t: Batch(n, d, nf) for t, n, d, nf in rows}


def missing_ids(root: Path, when: datetime, input: Path) -> int:
    """Input rowids with no row in the batch at `when` (an independent anti join)."""
    ((n,),) = (
        duckdb.connect()
        .execute(
            "SELECT count(*) FROM read_parquet($input) i WHERE i.userid IS NOT NULL AND NOT EXISTS "
            "(SELECT 1 FROM read_parquet($p) o WHERE o.time = $t AND o.userid = i.userid)",
            {"input": str(input), "p": str(Path(root) / "**" / "*.parquet"), "t": epoch(when)},
        )
        .fetchall()
    )
    return int(n)


def one_line_error(stderr: str) -> bool:
    """Exactly one line, `mbp: error: ...`: no traceback, and not the CLI's last line of
    defence (`unexpected KeyError: ... (run with MBP_DEBUG=1 for details)`), which means
    an exception no code path expected."""
    return (
        stderr.startswith("mbp: error: ")
        and stderr.count("\n") == 1
        and stderr.endswith("\n")
        and "Traceback" not in stderr
        and "MBP_DEBUG=1" not in stderr
    )


# Batches the tests make once: an old one, an older one (small input) and the new one they
# interrupt (big input), each scheduled at its own time.
OLD, OLDER, NEW = at(0), at(-5), at(5)


@dataclass(frozen=True)
class Made:
    """Batches made once by full runs: the file of each, and how long the big run took."""

    files: dict[str, Path]  # name -> the batch file inside its own dataset
    roots: dict[str, Path]
    seconds: float  # start to exit
    committed: float  # start to the batch file's appearance

    def dataset(self, root: Path, *names: str) -> Path:
        """A new dataset holding hard links to the named batches."""
        root.mkdir(parents=True)
        for name in names:
            rel = self.files[name].relative_to(self.roots[name])
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            os.link(self.files[name], root / rel)
        return root

    def rel(self, name: str) -> str:
        return str(self.files[name].relative_to(self.roots[name]))
