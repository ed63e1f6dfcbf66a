"""The signal handler: an interrupt is raised where Python code can unwind, and waits
while a module loads (an exception inside a native module's initialisation aborts)."""

from __future__ import annotations

import os
import signal
import sys

import pytest

from mbp import interrupts
from mbp.errors import Interrupted


@pytest.fixture
def handlers(monkeypatch):
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    monkeypatch.setattr(interrupts, "_received", None)
    interrupts.install()
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def test_a_signal_while_a_module_loads_waits_for_the_next_check(handlers, tmp_path, monkeypatch):
    (tmp_path / "slow_module.py").write_text(
        "import os, signal\nos.kill(os.getpid(), signal.SIGTERM)\nLOADED = sum(range(10**5))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import slow_module  # the signal arrives in the middle of its import

    assert slow_module.LOADED == sum(range(10**5))  # the import finished
    with pytest.raises(Interrupted) as stop:
        interrupts.check()
    assert (str(stop.value), stop.value.exit_code) == ("terminated", 143)
    sys.modules.pop("slow_module", None)


def test_a_signal_elsewhere_is_raised_at_once(handlers):
    with pytest.raises(Interrupted) as stop:
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(10**6):  # the handler runs at the next bytecode
            pass
    assert stop.value.exit_code == 130
    assert interrupts.received() is not None


def test_after_restore_a_signal_takes_its_default_action(handlers):
    interrupts.restore()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    assert signal.getsignal(signal.SIGINT) == signal.SIG_DFL
