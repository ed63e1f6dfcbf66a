"""Ctrl-C, SIGTERM and SIGHUP: stop the run, and remember that it was asked to stop.

The handler raises Interrupted, which unwinds through the dataset lock and the batch writer.
Libraries can swallow that exception (DuckDB polls for signals while it scans and drops the
error; an import inside `try: import pandas except ImportError` turns it into a missing
module) or wrap it in their own error, so the signal is also recorded: the batch writer and
the CLI consult the record, not the exception.
"""

from __future__ import annotations

import signal
from types import FrameType

from mbp.errors import Interrupted

_MESSAGES = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated", signal.SIGHUP: "hung up"}
_received: int | None = None


def install() -> None:
    """Handle SIGINT, SIGTERM and SIGHUP in this process (the CLI does; a library user need not)."""
    for signum in _MESSAGES:
        signal.signal(signum, _handle)


def restore() -> None:
    """Give SIGINT, SIGTERM and SIGHUP back their default action: they end the process at once."""
    for signum in _MESSAGES:
        signal.signal(signum, signal.SIG_DFL)


def _importing(frame: FrameType | None) -> bool:
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def _handle(signum: int, frame: FrameType | None) -> None:
    global _received
    _received = signum
    # An exception raised inside a native module's initialisation (DuckDB's nanobind
    # enums) aborts the process; nothing is written while modules load, so the signal
    # waits for the next check(): before a batch is written, committed or printed.
    if _importing(frame):
        return
    raise Interrupted(_MESSAGES[signal.Signals(signum)], exit_code=128 + signum)


def received() -> Interrupted | None:
    """The interrupt a signal asked for, if one arrived."""
    if _received is None:
        return None
    return Interrupted(_MESSAGES[signal.Signals(_received)], exit_code=128 + _received)


def check() -> None:
    """Raise Interrupted if a signal arrived, even one whose exception a library swallowed."""
    stop = received()
    if stop is not None:
        raise stop
