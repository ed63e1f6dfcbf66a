"""A command's `-o FILE`: written whole or not at all, and never in place of what was there.

A regular file (new or existing) is written under a hidden temporary name beside it, fsynced
and renamed over it, so a reader never sees half of it. A symbolic link is followed: the file
it points at is the one replaced, the link stays. A device or a named pipe (`/dev/null`, a
FIFO) is written straight into, as a shell redirection would; renaming over it would replace
the device for everyone.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from mbp.errors import RuntimeFailure, UsageError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_file(path: str, write: Callable[[BinaryIO], object]) -> None:
    """Call `write` with a binary file that becomes `path` only once it is complete."""
    target = Path(os.path.realpath(path))
    try:
        st: os.stat_result | None = os.stat(target)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise UsageError(f"cannot write {path!r}: {exc.strerror}; check the path") from exc
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise UsageError(f"-o {path!r} is a folder; give the name of a file")
    if st is not None and not stat.S_ISREG(st.st_mode):
        try:
            with open(target, "wb") as f:
                write(f)
        except OSError as exc:
            raise RuntimeFailure(f"cannot write {path!r}: {exc.strerror}") from exc
        return
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise UsageError(f"cannot write {path!r}: {exc.strerror}; check the folder") from exc
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes the file private; give it the mode a plain `> FILE` would.
        os.chmod(tmp, stat.S_IMODE(st.st_mode) if st is not None else 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise RuntimeFailure(f"cannot write {path!r}: {exc.strerror}") from exc
        raise
