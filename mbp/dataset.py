"""How a batch is written to the output dataset: layout, the dataset lock, atomic files.

A batch lives at `root/dt=YYYY-MM-DD/part-YYYYMMDDTHHMMSS.parquet`. Files are written under a
hidden temporary name that Parquet readers skip, fsynced, then renamed into place. `overwrite`
builds the new dataset in a hidden sibling of `root` and swaps the two directories.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import re
import shutil
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, tzinfo
from glob import escape
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from mbp import interrupts
from mbp.errors import LockedError, MbpError, RuntimeFailure, UsageError
from mbp.timewindow import batch_name

LOCK_NAME = ".mbp.lock"
ROW_GROUP_ROWS = 65_536  # the fewest rows of a row group but the last (see BatchWriter.write)
_PIECES = 1_024  # pending writes merged into one table beyond this many
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_NO_EXCHANGE = {errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP}
# Locks held by this process, by real root path, so an overwrite can hand its new lock over.
_held: dict[str, DatasetLock] = {}


def batch_path(root: Path, scheduled: datetime, tz: tzinfo) -> Path:
    """The file of the batch scheduled at `scheduled`, dated on the wall clock of `tz`."""
    day, stamp = batch_name(scheduled, tz)
    return Path(root) / f"dt={day}" / f"part-{stamp}.parquet"


def _failure(exc: OSError, path: Path) -> MbpError:
    where = exc.filename or path
    reason = exc.strerror or str(exc).splitlines()[0]
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return UsageError(
            f"cannot write to {where}: {reason}; check its permissions or choose another --output"
        )
    if exc.errno == errno.ENOTDIR:
        return UsageError(
            f"cannot create the output in {where}: not a directory; choose another --output"
        )
    return RuntimeFailure(f"cannot write to {where}: {reason}")


@contextmanager
def _io(path: Path) -> Iterator[None]:
    """Turn an OSError into the one-line error the CLI reports."""
    try:
        yield
    except OSError as exc:
        raise _failure(exc, path) from exc


def _require_dir(root: Path) -> None:
    if os.path.lexists(root) and not root.is_dir():
        what = "a broken symbolic link" if not root.exists() else "a file"
        raise UsageError(f"output path {root} is {what}; --output must be a directory")


def _makedirs(path: Path, made: list[Path]) -> None:
    """mkdir -p that records the directories it made in `made`, so they can be removed again."""
    for p in [*reversed(path.parents), path]:
        if p.is_dir():
            continue
        try:
            os.mkdir(p)
            made.append(p)
        except FileExistsError:
            if not p.is_dir():
                raise NotADirectoryError(
                    errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(p)
                ) from None


def _removedirs(made: list[Path]) -> None:
    for p in sorted(set(made), key=lambda d: len(d.parts), reverse=True):
        try:
            os.rmdir(p)
        except OSError:
            pass  # not empty (or already gone): it holds something that is not ours to remove


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno != errno.EINVAL:  # some filesystems cannot fsync a directory
            raise
    finally:
        os.close(fd)


def _same_file(path: Path, fd: int) -> bool:
    try:
        st, own = os.stat(path), os.fstat(fd)
    except FileNotFoundError:
        return False
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _claim(fd: int, since: str) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} since {since}\n".encode(), 0)


def _siblings(real: Path, kind: str) -> list[Path]:
    return sorted(real.parent.glob(f".{escape(real.name)}.mbp-{kind}-*"))


def _restore(real: Path) -> bool:
    """Put back the old dataset a killed fallback swap left while `real` is missing.

    False while a live run is between its two renames (it still holds the old tree's lock).
    """
    for old in _siblings(real, "old"):
        try:
            fd: int | None = os.open(old / LOCK_NAME, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            fd = None
        try:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(old, real)
        except BlockingIOError:
            return False
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENOTEMPTY, errno.EEXIST):
                raise  # root reappeared or old vanished: both mean someone else got there
        finally:
            if fd is not None:
                os.close(fd)
        return True
    return True


def _clean_stale(real: Path) -> None:
    """Remove temp files and staging/old trees of killed runs (under the lock, all are stale)."""
    try:
        for tmp in [*real.glob(".*.parquet.*.tmp"), *real.glob("*/.*.parquet.*.tmp")]:
            tmp.unlink(missing_ok=True)
            if tmp.parent != real:
                _removedirs([tmp.parent])
        for tree in _siblings(real, "staging") + _siblings(real, "old"):
            shutil.rmtree(tree, ignore_errors=True)
    except OSError:
        pass  # best effort: a leftover is hidden from readers and retried at the next lock


class DatasetLock:
    """Exclusive lock on the dataset `root` (file `root/.mbp.lock`), waiting up to `timeout` s."""

    def __init__(self, root: Path, timeout: float = 0.0) -> None:
        self.root = Path(root)
        self.timeout = timeout
        self.since = ""
        self._real = Path(os.path.realpath(self.root))
        self._fd: int | None = None
        self._made: list[Path] = []

    def __enter__(self) -> DatasetLock:
        deadline = time.monotonic() + self.timeout
        try:
            with _io(self.root):
                while (got := self._attempt()) is not True:
                    remaining = deadline - time.monotonic()
                    if got is False and remaining <= 0:
                        raise LockedError(self._busy())
                    if got is False:
                        time.sleep(min(0.1, remaining))
        except BaseException:
            _removedirs(self._made)
            raise
        _held[str(self._real)] = self
        _clean_stale(self._real)
        return self

    def _attempt(self) -> bool | None:
        """True: locked. False: another live run holds it. None: the file moved, retry at once."""
        _require_dir(self.root)
        if not os.path.lexists(self._real) and not _restore(self._real):
            return False
        _makedirs(self._real, self._made)
        path = self._real / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o666)
        except FileNotFoundError:
            return None  # a releasing holder removed the root it had created
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            # Following it would truncate whatever it points at, as root from cron.
            raise UsageError(
                f"the lock file {path} is a symbolic link; remove it (mbp makes its own)"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        if not _same_file(path, fd):  # released and unlinked, or swapped by an overwrite
            os.close(fd)
            return None
        self._fd = fd
        self.since = datetime.now().astimezone().isoformat(timespec="seconds")
        _claim(fd, self.since)
        return True

    def _busy(self) -> str:
        try:
            text = (self._real / LOCK_NAME).read_text()
        except OSError:
            text = ""
        m = re.fullmatch(r"pid (\d+) since (\S+)\s*", text)
        who = f"pid {m[1]} (running since {m[2]})" if m else "another process"
        return f"dataset {self.root} is locked by {who}; retry later or raise --lock-timeout"

    def _adopt(self, fd: int) -> None:
        """Hold the lock file an overwrite swapped into root instead of the old tree's one."""
        if self._fd is not None:
            os.close(self._fd)
        self._fd = fd

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        _held.pop(str(self._real), None)
        fd, self._fd = self._fd, None
        if fd is None:
            return
        # The lock file exists only while held, so a run leaves the dataset as it found it;
        # a waiter blocked on the unlinked file notices the changed inode and retries.
        path = self._real / LOCK_NAME
        try:
            if _same_file(path, fd):
                os.unlink(path)
        except OSError:
            pass
        os.close(fd)
        _removedirs(self._made)


_OWN_TEMP = re.compile(r"\..+\.parquet\.\d+\.tmp")


def _foreign(root: Path) -> Path | None:
    """The first thing in `root` that is not part of a dataset: anything but `dt=...`
    folders of Parquet files, mbp's lock and its temporary files. Hidden names count too:
    a folder of only `.git` or `.ssh` is not a dataset."""
    try:
        top = sorted(os.scandir(root), key=lambda e: e.name)
    except FileNotFoundError:
        return None
    for entry in top:
        if entry.name == LOCK_NAME and entry.is_file(follow_symlinks=False):
            continue
        if not (entry.name.startswith("dt=") and entry.is_dir(follow_symlinks=False)):
            return Path(entry.path)
        for inner in sorted(os.scandir(entry.path), key=lambda e: e.name):
            if not inner.is_file(follow_symlinks=False):
                return Path(inner.path)
            if not (inner.name.endswith(".parquet") or _OWN_TEMP.fullmatch(inner.name)):
                return Path(inner.path)
    return None


def _exchange(a: Path, b: Path) -> None:
    """Swap two paths in one step with Linux renameat2(RENAME_EXCHANGE)."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except AttributeError:
        raise OSError(errno.ENOSYS, "renameat2 is not available") from None
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(a), None, str(b))


def _swap(staging: Path, root: Path) -> Path:
    """Make the tree at `staging` the dataset `root`; return where the old tree now is.

    Crash windows: before the swap, root is the old dataset and staging a leftover that the next
    lock removes. renameat2 exchanges both names at once; afterwards root is the new dataset and
    the old tree sits at the staging path, removed by us or by the next lock. The fallback has
    one more window, between its two renames, where root is missing: the next lock renames the
    old tree back (it checks first that its lock is not held by a live run).
    """
    if not os.path.lexists(root):
        os.rename(staging, root)
        return staging
    try:
        _exchange(staging, root)
        return staging
    except OSError as exc:
        if exc.errno not in _NO_EXCHANGE:
            raise
    old = root.parent / f".{root.name}.mbp-old-{os.getpid()}"
    os.rename(root, old)
    try:
        os.rename(staging, root)
    except BaseException:
        os.rename(old, root)
        raise
    return old


class BatchWriter:
    """Writes one batch to `target` under dataset `root`: it appears whole at commit, or not at all.

    mode "append" replaces only this batch's file; "overwrite" replaces the whole dataset.
    Use it inside DatasetLock: the lock's clean-up takes any unlocked temp file for a dead run's.
    """

    def __init__(self, root: Path, target: Path, schema: pa.Schema, mode: str = "append") -> None:
        if mode not in ("append", "overwrite"):
            raise ValueError(f"mode must be 'append' or 'overwrite', not {mode!r}")
        self.root = Path(root)
        self.target = Path(target)
        self.schema = schema
        self.mode = mode
        self.rows = 0
        self._real = Path(os.path.realpath(self.root))
        inside = self.target.relative_to(self.root)
        self._staging: Path | None = None
        if mode == "overwrite":
            self._staging = self._real.parent / f".{self._real.name}.mbp-staging-{os.getpid()}"
        self._final = (self._staging or self.root) / inside
        # Hidden and not ending in .parquet: readers globbing **/*.parquet never see it.
        self._tmp = self._final.parent / f".{self._final.name}.{os.getpid()}.tmp"
        self._made: list[Path] = []
        self._file: BinaryIO | None = None
        self._writer: pq.ParquetWriter | None = None
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._lock_fd: int | None = None
        self._committed = False

    def __enter__(self) -> BatchWriter:
        return self

    def _open(self) -> pq.ParquetWriter:
        _require_dir(self.root)
        if self._staging is None and os.path.isdir(self._final) and not os.path.islink(self._final):
            raise UsageError(
                f"the batch file {self._final} is a folder, which mbp would not replace; "
                "move it away or choose another --output"
            )
        with _io(self._tmp):
            if self._staging is not None:
                # The swap deletes everything in root: refuse when that is more than batches,
                # as with `--output .` in a project folder.
                cwd = Path(os.path.realpath(os.getcwd()))
                if cwd == self._real or self._real in cwd.parents:
                    raise UsageError(
                        f"--output {self.root} is the working folder or holds it; "
                        "--output-mode overwrite would replace it under this process: "
                        "point --output at a dataset folder below it"
                    )
                foreign = _foreign(self._real)
                if foreign is not None:
                    name = foreign.relative_to(self._real).as_posix()
                    raise UsageError(
                        f"--output {self.root} holds {name!r}, which is not part of an mbp "
                        "dataset; --output-mode overwrite would delete it: point --output at "
                        "a folder of batches only"
                    )
            if self._staging is not None and os.path.lexists(self._staging):
                shutil.rmtree(self._staging)
            _makedirs(self._tmp.parent, self._made)
            self._file = open(self._tmp, "wb")  # noqa: SIM115 - closed in commit or abort
            self._writer = pq.ParquetWriter(self._file, self.schema, compression="zstd")
        return self._writer

    def write(self, data: pa.RecordBatch | pa.Table) -> None:
        """Append rows. Small calls are gathered into row groups of ROW_GROUP_ROWS: the
        writer keeps each row group's metadata until it closes (about 5 KB a group, 0.5 GB
        for 100,000 one-row groups), so memory stays bounded by the larger of the two."""
        interrupts.check()
        if self._writer is None:
            self._open()  # refusals (a folder in the file's place, ...) before any scoring
        self._pending.append(data if isinstance(data, pa.Table) else pa.Table.from_batches([data]))
        self._pending_rows += data.num_rows
        self.rows += data.num_rows
        if self._pending_rows >= ROW_GROUP_ROWS:
            self._flush()
        elif len(self._pending) >= _PIECES:
            # Thousands of tiny tables cost more in objects than in rows: make them one.
            self._pending = [pa.concat_tables(self._pending).combine_chunks()]

    def _flush(self) -> None:
        if not self._pending:
            return
        writer = self._writer or self._open()
        rows = pa.concat_tables(self._pending)
        self._pending, self._pending_rows = [], 0
        with _io(self._tmp):
            writer.write_table(rows)
            if self._file is not None:
                self._file.flush()  # the row group goes to the OS now, not at the next write

    def commit(self) -> int:
        """Make the batch visible in one step; return the rows written (0 still writes the file)."""
        # A signal whose exception a library swallowed must still stop the batch going public.
        interrupts.check()
        self._flush()
        writer = self._writer or self._open()
        assert self._file is not None
        with _io(self._final):
            writer.close()
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self._tmp, self._final)
            for d in {self._final.parent, *(p.parent for p in self._made)}:
                _fsync_dir(d)
            if self._staging is None:
                self._committed = True
            else:
                self._swap_in(self._staging)
        return self.rows

    def _swap_in(self, staging: Path) -> None:
        holder = _held.get(str(self._real))
        # The new tree carries its own lock file, held by us before anyone can see it, so
        # nobody takes the dataset between the swap and the removal of the old tree.
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        self._lock_fd = os.open(staging / LOCK_NAME, flags, 0o666)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        _claim(self._lock_fd, holder.since if holder else datetime.now().astimezone().isoformat())
        if self._real.is_dir():
            os.chmod(staging, stat.S_IMODE(os.stat(self._real).st_mode))
        _fsync_dir(staging)
        old = _swap(staging, self._real)
        self._committed = True
        fd, self._lock_fd = self._lock_fd, None
        try:
            shutil.rmtree(old, ignore_errors=True)
            _fsync_dir(self._real.parent)
        finally:
            if holder is not None:
                holder._adopt(fd)
            else:
                os.close(fd)

    def _abort(self) -> None:
        for close in (self._writer, self._file):
            try:
                if close is not None:
                    close.close()
            except Exception:
                pass  # the file is being thrown away
        if self._lock_fd is not None:
            os.close(self._lock_fd)
        try:
            self._tmp.unlink(missing_ok=True)
        except OSError:
            pass
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
        _removedirs(self._made)

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self._committed:
            self._abort()
