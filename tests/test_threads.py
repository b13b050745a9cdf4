"""otp.threads: blocking work off the hub."""

from __future__ import annotations

import pytest

from otp.process import receive, self, send, spawn
from otp.threads import OSEvent, run_in_thread


def _fail() -> None:
    raise ValueError("in the thread")


@pytest.mark.otp(clock="real")
def test_run_in_thread_returns_the_result_and_other_processes_run_meanwhile(node):
    gate = OSEvent()
    me = self()
    spawn(lambda: send(me, ("result", run_in_thread(lambda: gate.wait(10) and 42))))
    spawn(lambda: send(me, "other ran"))
    assert receive() == "other ran"  # while the thread still waits on the gate
    gate.set()
    assert receive() == ("result", 42)


@pytest.mark.otp(clock="real")
def test_run_in_thread_raises_the_exception_in_the_caller_without_printing_it(node, capsys):
    with pytest.raises(ValueError, match="in the thread"):
        run_in_thread(_fail)
    assert "Traceback" not in capsys.readouterr().err
