"""otp.process: ``start_timer`` (a timer whose message carries its ref), ``yield_now``
(a cooperative yield) and ``spawn_opt`` (spawn with link/monitor options, P9).
Timers run on the mock clock."""

from __future__ import annotations

import pytest

from otp.errors import BadArg, NotInProcess
from otp.lowlevel import Node
from otp.process import (
    Down,
    Exit,
    Pid,
    Ref,
    TimerTimeout,
    cancel_timer,
    now,
    read_timer,
    receive,
    register,
    self,
    send,
    spawn,
    spawn_opt,
    start_timer,
    trap_exit,
    yield_now,
)
from otp.testing import assert_down, assert_receive, refute_receive, stop_process


def forever() -> None:
    receive(lambda m: False)


# --- start_timer ----------------------------------------------------------------------


def test_start_timer_delivers_timer_timeout_with_its_ref_at_the_deadline(node):
    ref = start_timer(5, self(), "tick")
    assert isinstance(ref, Ref)
    msg = assert_receive(TimerTimeout, timeout=60)
    assert msg == TimerTimeout(ref, "tick") and msg.ref == ref and msg.msg == "tick"
    assert now() == 5


def test_start_timer_refs_tell_two_timers_apart(node):
    first = start_timer(1, self(), "tick")
    second = start_timer(2, self(), "tick")
    assert cancel_timer(first) == 1
    assert assert_receive(TimerTimeout, timeout=60).ref == second
    refute_receive(TimerTimeout, timeout=5)


def test_start_timer_can_be_read_and_cancelled_like_send_after(node):
    ref = start_timer(10, self(), "late")
    assert read_timer(ref) == 10
    assert cancel_timer(ref) == 10
    assert read_timer(ref) is None
    refute_receive(TimerTimeout, timeout=20)


def test_start_timer_to_a_name_goes_to_whoever_holds_it_when_it_fires(node):
    def holder(parent: Pid) -> None:
        register("timer.holder", self())
        send(parent, "registered")
        send(parent, ("got", receive(TimerTimeout)))

    _pid, mon = spawn_opt(holder, self(), monitor=True)
    assert_receive("registered")
    ref = start_timer(3, "timer.holder", "ring")
    assert assert_receive(("got", TimerTimeout), timeout=60) == ("got", TimerTimeout(ref, "ring"))
    assert_down(mon)


def test_start_timer_to_a_dead_pid_delivers_nothing(node):
    pid, mon = spawn_opt(lambda: None, monitor=True)
    assert_down(mon)
    ref = start_timer(1, pid, "x")
    assert read_timer(ref) is None
    refute_receive(TimerTimeout, timeout=5)


def test_start_timer_refuses_bad_seconds(node):
    with pytest.raises(BadArg, match="seconds"):
        start_timer(-1, self(), "x")


# --- yield_now ------------------------------------------------------------------------


def test_yield_now_lets_every_runnable_process_run_first(node):
    me = self()
    for i in range(3):
        spawn(send, me, ("ran", i))
    yield_now()
    # Each of them ran to its end before this process went on: no wait needed.
    assert [receive(("ran", int), 0) for _ in range(3)] == [("ran", 0), ("ran", 1), ("ran", 2)]


def test_yield_now_returns_at_once_when_nothing_else_is_runnable(node):
    send(self(), "kept")
    yield_now()
    assert receive(timeout=0) == "kept"  # messages stay queued


def test_yield_now_shares_the_node_between_two_busy_processes(node):
    me = self()

    def busy(tag: str) -> None:
        for i in range(3):
            send(me, (tag, i))
            yield_now()

    spawn(busy, "a")
    spawn(busy, "b")
    got = [receive() for _ in range(6)]
    assert got == [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2), ("b", 2)]


def test_yield_now_outside_a_process_raises_not_in_process():
    with Node(), pytest.raises(NotInProcess):
        yield_now()


def test_a_killed_process_ends_in_yield_now(node):
    def spin(parent: Pid) -> None:
        send(parent, "spinning")
        while True:
            yield_now()

    pid, ref = spawn_opt(spin, self(), monitor=True)
    assert_receive("spinning")
    assert stop_process(pid) == "killed"
    assert_down(ref)


# --- spawn_opt ------------------------------------------------------------------------


def test_spawn_opt_without_options_is_spawn(node):
    pid = spawn_opt(forever)
    assert isinstance(pid, Pid)
    stop_process(pid)  # not linked: this process lives on


def test_spawn_opt_monitor_returns_pid_and_ref_and_a_down_follows(node):
    pid, ref = spawn_opt(lambda: None, monitor=True)
    assert assert_down(ref) == Down(ref, pid, "normal")


def test_spawn_opt_link_links_the_child_atomically(node):
    trap_exit(True)
    pid = spawn_opt(lambda: 1 / 0, link=True)  # crashes on its first line (P9)
    exit_msg = assert_receive(Exit)
    assert exit_msg.pid == pid and isinstance(exit_msg.reason, ZeroDivisionError)


def test_spawn_opt_link_and_monitor_together(node):
    trap_exit(True)
    pid, ref = spawn_opt(forever, link=True, monitor=True)
    stop_process(pid, "boom")
    assert assert_receive(Exit) == Exit(pid, "boom")
    assert assert_down(ref).reason == "boom"


def test_spawn_opt_refuses_options_that_are_not_bools(node):
    with pytest.raises(BadArg, match="link and monitor"):
        spawn_opt(forever, link=1)  # type: ignore[call-overload]


def test_the_docstring_examples_of_otp_process_and_otp_lowlevel_run():
    import doctest

    import otp.lowlevel
    import otp.process

    for module in (otp.process, otp.lowlevel):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__
