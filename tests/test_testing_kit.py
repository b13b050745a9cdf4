"""The test kit itself: mock clock, wait_all_blocked, strict mode by default, the leak
check and the watchdog (the last two through an inner pytest run, with ``pytester``)."""

from __future__ import annotations

import pytest

import otp
from otp.errors import BadArg
from otp.lowlevel import current_node
from otp.process import (
    Down,
    exit,
    monitor,
    receive,
    self,
    send,
    send_after,
    sleep,
    spawn,
)
from otp.testing import MockClock, assert_receive, dump_processes, refute_receive, wait_all_blocked

pytest_plugins = ["pytester"]


def forever() -> None:
    receive(lambda m: False)


# --- the mock clock ---------------------------------------------------------------------


def test_mock_clock_is_the_default_and_autojumps_a_one_hour_timeout(node, clock):
    assert isinstance(clock, MockClock) and clock is node.clock
    start = clock.now()
    assert receive(timeout=3600, default="timed out") == "timed out"
    assert clock.now() - start == 3600


def test_mock_clock_jumps_only_as_far_as_the_next_deadline(node, clock):
    send_after(2, self(), "first")
    send_after(30, self(), "second")
    assert receive() == "first"
    assert clock.now() == 2
    assert receive() == "second"
    assert clock.now() == 30


def test_mock_clock_advance_fires_the_timers_that_became_due(node, clock):
    send_after(10, self(), "a")
    send_after(20, self(), "b")
    clock.advance(10)
    assert receive(timeout=0) == "a"
    assert receive(timeout=0, default=None) is None
    clock.advance(10)
    assert receive(timeout=0) == "b"
    assert clock.now() == 20
    with pytest.raises(ValueError):
        clock.advance(-1)


def test_mock_clock_without_autojump_moves_only_by_advance():
    def main():
        clock = current_node().clock
        spawn(clock.advance, 5)  # runs once main blocks
        assert receive(timeout=5, default="timeout") == "timeout"
        return clock.now()

    assert otp.run(main, clock=MockClock(100, autojump=False)) == 105


@pytest.mark.otp(clock="real")
def test_real_clock_marker_gives_a_real_clock(node, clock):
    assert not isinstance(clock, MockClock)
    assert receive(timeout=0.01, default="t") == "t"


# --- wait_all_blocked -------------------------------------------------------------------


def test_wait_all_blocked_returns_only_after_the_other_processes_blocked(node):
    rallies = []

    def player(n):
        while True:
            msg = receive()
            if msg[0] == "stop":
                return
            rallies.append(n)
            if msg[1] < 200:
                send(msg[2], ("ball", msg[1] + 1, self()))

    a, b = spawn(player, "a"), spawn(player, "b")
    send(a, ("ball", 1, b))
    wait_all_blocked()
    assert len(rallies) == 200  # the whole rally ran before we got control back
    for p in (a, b):
        send(p, ("stop",))
    wait_all_blocked()


def test_wait_all_blocked_returns_before_the_mock_clock_jumps(node, clock):
    done = []
    spawn(lambda: (sleep(10), done.append("woke")))
    wait_all_blocked()
    assert clock.now() == 0 and done == []
    sleep(10)
    wait_all_blocked()
    assert done == ["woke"]


def test_wait_all_blocked_with_nothing_else_running_returns_at_once(node, clock):
    wait_all_blocked()
    assert clock.now() == 0


# --- strict mode, assert_receive, refute_receive, dump ----------------------------------


def test_strict_mode_is_on_by_default(node):
    assert node.strict
    with pytest.raises(BadArg):
        send(self(), [1, 2])


def test_assert_receive_fails_with_the_mailbox_contents(node, clock):
    send(self(), "unrelated")
    with pytest.raises(AssertionError, match="'unrelated'") as info:
        assert_receive("wanted", timeout=1)
    assert "'wanted'" in str(info.value) and clock.now() == 1


def test_refute_receive_fails_when_a_matching_message_arrives(node):
    send_after(0.05, self(), "unexpected")
    with pytest.raises(AssertionError, match="unexpected"):
        refute_receive("unexpected", timeout=1)
    refute_receive("unexpected", timeout=1)  # consumed above: nothing more arrives


def test_dump_processes_lists_each_process_with_its_stack(node):
    def parked_here():
        forever()

    pid = spawn(parked_here)
    wait_all_blocked()
    text = dump_processes()
    assert repr(pid) in text and "parked_here" in text and "status=waiting" in text
    ref = monitor(pid)
    exit(pid, "kill")
    assert_receive(Down(ref, pid, "killed"))


# --- the leak check and the watchdog (inner pytest runs) --------------------------------

INNER_HEADER = """
import pytest
from otp.process import receive, send_after, self, spawn, spawn_monitor, Down
from otp.testing import assert_receive
"""


def run_inner(pytester, body: str):
    pytester.makepyfile(test_inner=INNER_HEADER + body)
    # the plugin is opt-in: the inner run turns it on as a user would, with -p
    return pytester.runpytest("-p", "otp.testing", "-p", "no:cacheprovider",
                              "-p", "no:hypothesispytest", "-q")


def test_leak_check_fails_a_test_that_leaks_a_process(pytester):
    result = run_inner(
        pytester,
        """
def leaked_here():
    receive()

def test_leaks_a_process(node):
    spawn(leaked_here)
""",
    )
    result.assert_outcomes(passed=1, errors=1)
    out = result.stdout.str()
    assert "test leaked" in out and "1 process(es) still alive" in out
    assert "leaked_here" in out


def test_leak_check_fails_a_test_that_leaks_a_timer(pytester):
    result = run_inner(
        pytester,
        """
def test_leaks_a_timer(node):
    # A timer aimed at a pid dies with that process; one aimed at a name outlives it.
    send_after(100, "somebody", "late")
""",
    )
    result.assert_outcomes(passed=1, errors=1)
    assert "1 send_after timer(s) still pending" in result.stdout.str()


def test_leak_check_passes_a_test_that_cleans_up(pytester):
    result = run_inner(
        pytester,
        """
def test_clean(node):
    pid, ref = spawn_monitor(receive, "stop")
    from otp.process import send
    send(pid, "stop")
    assert_receive(Down)
    send_after(1, self(), "fired")
    assert_receive("fired")

@pytest.mark.otp(leaks=False)
def test_opted_out(node):
    spawn(receive)
""",
    )
    result.assert_outcomes(passed=2)


def test_watchdog_fails_a_hung_test_with_the_stuck_process_stack(pytester):
    result = run_inner(
        pytester,
        """
import gevent

def stuck_in_here():
    receive()

def stuck_server():
    gevent.sleep(100)

@pytest.mark.otp(timeout=0.5, clock="real")
def test_hangs(node):
    spawn(stuck_in_here)
    server = gevent.spawn(stuck_server)  # a plain greenlet: dumped too
    try:
        receive()
    finally:
        server.kill()
""",
    )
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "watchdog" in out and "0.5 s" in out
    assert "stuck_in_here" in out
    assert "test_hangs" in out
    assert "stuck_server" in out and "(not a process)" in out


def test_a_failing_test_is_reported_at_its_own_line(pytester):
    result = run_inner(
        pytester,
        """
def test_fails(node):
    value = 41
    assert value == 42
""",
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([">*assert value == 42", "test_inner.py:7: AssertionError"])


def test_wait_all_blocked_lets_timers_that_are_already_due_fire_first(node, clock):
    send_after(0, self(), "due now")
    wait_all_blocked()
    assert receive(timeout=0, default="not fired") == "due now"
    assert clock.now() == 0


def test_mock_clock_without_autojump_still_fires_a_zero_delay_timer():
    def main():
        send_after(0, self(), "due now")
        return receive()  # no jump needed: the timer is due at the current time

    assert otp.run(main, clock=MockClock(autojump=False), timeout=10) == "due now"


def test_leak_check_fails_a_test_that_leaks_processes_that_never_block(pytester):
    result = run_inner(
        pytester,
        """
from otp.process import send

def bouncing_forever(peer_box):
    while True:
        msg = receive()
        send(msg, self())

@pytest.mark.otp(timeout=0.5)
def test_leaks_a_busy_pair(node):
    a = spawn(bouncing_forever, None)
    b = spawn(bouncing_forever, None)
    send(a, b)
""",
    )
    result.assert_outcomes(passed=1, errors=1)
    out = result.stdout.str()
    assert "never block" in out and "bouncing_forever" in out


def test_the_plugin_is_opt_in(pytester):
    """Installing otpy adds no fixtures to other projects' test runs: without
    ``-p otp.testing`` (or ``pytest_plugins = ["otp.testing"]``) there is no ``node``."""
    pytester.makepyfile(test_inner="def test_uses_node(node):\n    pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-q")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'node' not found*"])
