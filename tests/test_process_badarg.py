"""Bad input to the process API: each raises a clear error that names what was expected
and what was given, and the node keeps running afterwards."""

from __future__ import annotations

import pytest

from otp.errors import AlreadyRegistered, BadArg, NameTaken, NoProc, OTPError
from otp.process import (
    Down,
    cancel_timer,
    demonitor,
    exit,
    is_alive,
    link,
    make_ref,
    monitor,
    process_info,
    read_timer,
    receive,
    register,
    self,
    send,
    send_after,
    sleep,
    spawn,
    spawn_monitor,
    trap_exit,
    whereis,
)
from otp.testing import assert_receive
from otp.testing import stop_process as stop


def forever() -> None:
    receive(lambda m: False)


def echo() -> None:
    sender, msg = receive()
    send(sender, ("echo", msg))


def assert_node_still_works() -> None:
    """After an error: spawning, messaging and monitoring still work."""
    pid, ref = spawn_monitor(echo)
    send(pid, (self(), "ping"))
    assert assert_receive(("echo", "ping")) == ("echo", "ping")
    assert assert_receive(Down) == Down(ref, pid, "normal")



def test_spawn_of_something_not_callable_raises_badarg(node):
    with pytest.raises(BadArg) as info:
        spawn(42)
    msg = str(info.value)
    assert "callable" in msg and "42" in msg and "int" in msg
    assert_node_still_works()


def test_send_to_a_name_nobody_holds_raises_noproc(node):
    with pytest.raises(NoProc) as info:
        send("ghost", "boo")
    assert "'ghost'" in str(info.value) and "registered" in str(info.value)
    assert_node_still_works()


def test_send_to_something_that_is_not_a_pid_or_name_raises_badarg(node):
    with pytest.raises(BadArg) as info:
        send(42, "x")
    assert "Pid" in str(info.value) and "42" in str(info.value)
    assert_node_still_works()


def test_register_of_a_taken_name_raises_name_taken(node):
    register("mine", self())
    other = spawn(forever)
    with pytest.raises(NameTaken) as info:
        register("mine", other)
    assert "'mine'" in str(info.value) and repr(self()) in str(info.value)
    assert isinstance(info.value, OTPError)
    assert_node_still_works()
    stop(other)


def test_register_of_a_process_that_has_a_name_raises_already_registered(node):
    register("mine", self())
    with pytest.raises(AlreadyRegistered) as info:
        register("other", self())
    assert "'mine'" in str(info.value) and repr(self()) in str(info.value)
    assert_node_still_works()


def test_register_with_a_bad_name_or_pid_raises_badarg(node):
    for name, pid in [(42, self()), ("", self()), ("ok", "not a pid")]:
        with pytest.raises(BadArg) as info:
            register(name, pid)
        assert "expects" in str(info.value)
    assert_node_still_works()


def test_register_of_a_dead_process_raises_noproc(node):
    pid, _ref = spawn_monitor(lambda: None)
    assert_receive(Down)
    with pytest.raises(NoProc):
        register("late", pid)
    assert whereis("late") is None
    assert_node_still_works()


def test_negative_timeouts_raise_badarg(node):
    for call in (
        lambda: receive(timeout=-1),
        lambda: send_after(-1, self(), "x"),
        lambda: sleep(-1),
    ):
        with pytest.raises(BadArg) as info:
            call()
        assert "-1" in str(info.value) and ">= 0" in str(info.value)
    assert_node_still_works()


def test_timeouts_that_are_not_numbers_raise_badarg(node):
    for call in (
        lambda: receive(timeout="1"),
        lambda: sleep(None),
        lambda: send_after("1", self(), "x"),
    ):
        with pytest.raises(BadArg):
            call()
    assert_node_still_works()


def test_exit_with_a_reason_that_cannot_be_sent_raises_badarg(node):
    target = spawn(forever)
    with pytest.raises(BadArg) as info:
        exit(target, [1, 2])
    assert "exit reason" in str(info.value) and "list" in str(info.value)
    with pytest.raises(BadArg):
        exit([1, 2])  # exit of self, refused before it happens
    assert is_alive(target) and is_alive(self())
    assert_node_still_works()
    stop(target)


def test_exit_of_something_that_is_not_a_pid_raises_badarg(node):
    with pytest.raises(BadArg) as info:
        exit("name", "boom")
    assert "Pid" in str(info.value) and "'name'" in str(info.value)
    with pytest.raises(BadArg):
        exit(self(), "boom", "extra")
    assert_node_still_works()


def test_demonitor_of_a_make_ref_raises_badarg(node):
    ref = make_ref()
    with pytest.raises(BadArg) as info:
        demonitor(ref)
    msg = str(info.value)
    assert "monitor" in msg and repr(ref) in msg and "make_ref" in msg
    assert_node_still_works()


def test_demonitor_of_another_process_monitor_ref_raises_badarg(node):
    parent = self()
    target = spawn(forever)

    def other():
        send(parent, monitor(target))
        forever()

    watcher = spawn(other)
    foreign = assert_receive(type(make_ref()))
    with pytest.raises(BadArg) as info:
        demonitor(foreign)
    assert repr(watcher) in str(info.value) and repr(self()) in str(info.value)
    assert process_info(target).monitored_by == (watcher,)  # untouched
    assert_node_still_works()
    stop(watcher)
    stop(target)


def test_demonitor_of_something_not_a_ref_raises_badarg(node):
    with pytest.raises(BadArg) as info:
        demonitor("ref")
    assert "Ref" in str(info.value) and "'ref'" in str(info.value)
    assert_node_still_works()


def test_link_monitor_and_friends_with_bad_targets_raise_badarg(node):
    for call in (
        lambda: link("name"),
        lambda: monitor(42),
        lambda: is_alive("name"),
        lambda: process_info("name"),
        lambda: whereis(42),
        lambda: trap_exit("yes"),
        lambda: cancel_timer("ref"),
        lambda: read_timer(42),
        lambda: send_after(1, 42, "x"),
    ):
        with pytest.raises(BadArg) as info:
            call()
        assert "expect" in str(info.value)
    assert_node_still_works()


def test_badarg_is_both_a_type_error_and_a_value_error(node):
    with pytest.raises(TypeError):
        spawn(None)
    with pytest.raises(ValueError):
        receive(timeout=-1)


def test_nan_and_infinite_timer_delays_raise_badarg(node):
    nan, inf = float("nan"), float("inf")
    for call in (
        lambda: receive(timeout=nan),
        lambda: sleep(nan),
        lambda: send_after(nan, self(), "x"),
        lambda: send_after(inf, self(), "x"),
    ):
        with pytest.raises(BadArg):
            call()
    assert node.live_timers() == []
    assert_node_still_works()


def test_a_bad_receive_timeout_is_refused_even_when_a_message_is_waiting(node):
    send(self(), "waiting")
    for bad in (float("nan"), -1, -0.5, True, "1", [1]):
        with pytest.raises(BadArg):
            receive(timeout=bad)
    assert receive(timeout=0) == "waiting"  # still there, and 0 takes it at once
    send(self(), "next")
    assert receive(timeout=5) == "next"
