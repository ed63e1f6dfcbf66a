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
    _remove_stale(target)
    try:
        # The pid in the name tells a killed writer's leftover from a live one's.
        prefix = f".{target.name}.{os.getpid()}."
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=target.parent)
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


def _remove_stale(target: Path) -> None:
    """Remove the temporary files of earlier writes of `target` whose process is gone (a
    SIGKILL leaves them behind), so that killed runs do not pile them up."""
    prefix = f".{target.name}."
    try:
        names = [
            n for n in os.listdir(target.parent) if n.startswith(prefix) and n.endswith(".tmp")
        ]
    except OSError:
        return  # mkstemp says what is wrong with the folder
    for name in names:
        pid = name[len(prefix) :].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            (target.parent / name).unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


def refuse_input(output: str | None, inputs: dict[str, str | None]) -> None:
    """-o must not name an input of the same run (nor a file inside an input folder):
    replacing it would destroy the data the run reads."""
    if output is None or output == "-":
        return
    target = os.path.realpath(output)
    for what, path in inputs.items():
        if not path:
            continue
        source = os.path.realpath(path)
        if target == source or target.startswith(os.path.join(source, "")):
            raise UsageError(
                f"-o {output!r} would overwrite the {what} {path!r}, which this run reads; "
                "write the output elsewhere"
            )
