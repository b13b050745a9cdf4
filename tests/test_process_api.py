"""The rest of the public process API: timers, introspection, names, flush, sleep and
receive patterns. Timers run on the mock clock."""

from __future__ import annotations

import dataclasses

import pytest

from otp.process import (
    ANY,
    Down,
    Exit,
    Pid,
    ProcessInfo,
    Ref,
    cancel_timer,
    exit,
    flush,
    is_alive,
    link,
    make_ref,
    monitor,
    process_info,
    processes,
    read_timer,
    receive,
    register,
    registered,
    self,
    send,
    send_after,
    sleep,
    spawn,
    spawn_link,
    spawn_monitor,
    trap_exit,
    unregister,
    whereis,
)
from otp.testing import assert_down as wait_down
from otp.testing import assert_receive, refute_receive, wait_all_blocked
from otp.testing import stop_process as stop


def forever() -> None:
    receive(lambda m: False)




# --- timers -----------------------------------------------------------------------------


def test_send_after_delivers_at_its_deadline_on_the_node_clock(node, clock):
    ref = send_after(5, self(), "tick")
    assert isinstance(ref, Ref)
    assert assert_receive("tick", timeout=60) == "tick"
    assert clock.now() == 5


def test_send_after_zero_delivers_at_once(node, clock):
    send_after(0, self(), "now")
    assert receive() == "now"
    assert clock.now() == 0


def test_timers_fire_in_deadline_order(node, clock):
    for t in (3, 1, 2):
        send_after(t, self(), t)
    assert [receive(), receive(), receive()] == [1, 2, 3]
    assert clock.now() == 3


def test_read_timer_tells_the_time_left(node, clock):
    ref = send_after(10, self(), "x")
    assert read_timer(ref) == 10
    clock.advance(4)
    assert read_timer(ref) == 6
    assert cancel_timer(ref) == 6


def test_cancel_timer_prevents_delivery_and_returns_the_time_left(node, clock):
    ref = send_after(10, self(), "never")
    assert cancel_timer(ref) == 10
    assert read_timer(ref) is None
    assert cancel_timer(ref) is None
    refute_receive("never", timeout=20)
    assert clock.now() == 20


def test_a_ref_of_another_node_with_the_same_id_is_not_a_timer_here(node, clock):
    ref = send_after(10, self(), "tick")
    other = Ref("elsewhere@host", ref.id)
    assert read_timer(other) is None
    assert cancel_timer(other) is None
    assert read_timer(ref) == 10
    assert_receive("tick", timeout=20)


def test_cancel_and_read_of_a_fired_timer_return_none(node):
    ref = send_after(1, self(), "fired")
    assert_receive("fired")
    assert read_timer(ref) is None
    assert cancel_timer(ref) is None


def test_timer_to_a_dead_pid_is_a_no_op(node, clock):
    pid, ref = spawn_monitor(lambda: None)
    wait_down(ref)
    tref = send_after(5, pid, "lost")
    assert read_timer(tref) is None
    assert cancel_timer(tref) is None
    assert node.live_timers() == []


def test_timer_to_a_pid_is_cancelled_when_that_process_ends(node):
    pid = spawn(forever)
    tref = send_after(5, pid, "too late")
    assert read_timer(tref) == 5
    stop(pid)
    assert read_timer(tref) is None
    assert node.live_timers() == []


def test_every_timer_to_a_pid_is_cancelled_when_that_process_ends(node, clock):
    """One timer, then several (a process keeps one without a set), fired or cancelled
    on the way: none outlives its process."""
    pid = spawn(forever)
    send_after(1, pid, "fired")
    clock.advance(2)
    refs = [send_after(5 + i, pid, i) for i in range(4)]
    assert cancel_timer(refs[0]) == 5
    assert read_timer(refs[3]) == 8
    stop(pid)
    assert [read_timer(r) for r in refs] == [None] * 4
    assert node.live_timers() == []


def test_timer_to_a_name_delivers_to_whoever_holds_it_when_it_fires(node, clock):
    tref = send_after(5, "late", "for the holder")
    register("late", self())  # registered after the timer was set
    assert receive() == "for the holder"
    assert clock.now() == 5
    assert read_timer(tref) is None
    unregister("late")


def test_timer_to_a_name_nobody_holds_when_it_fires_is_dropped(node, clock):
    send_after(5, "nobody", "lost")
    refute_receive(timeout=10)
    assert clock.now() == 10
    assert node.live_timers() == []


def test_timers_set_by_a_process_outlive_it(node):
    parent = self()
    _pid, ref = spawn_monitor(send_after, 3, parent, "from the dead")
    wait_down(ref)
    assert receive() == "from the dead"


# --- introspection ----------------------------------------------------------------------


def test_process_info_reports_status_mailbox_links_monitors_and_name(node):
    trap_exit(True)
    pid = spawn_link(forever)
    ref = monitor(pid)
    register("inspected", pid)
    send(pid, "queued")
    send(pid, "queued too")
    wait_all_blocked()
    info = process_info(pid)
    assert isinstance(info, ProcessInfo)
    assert info.pid == pid
    assert info.status == "waiting"
    assert info.message_queue_len == 2
    assert info.links == (self(),)
    assert info.monitored_by == (self(),)
    assert info.monitors == ()
    assert info.registered_name == "inspected"
    assert info.trap_exit is False
    assert info.initial_call.endswith("forever")
    assert any("forever" in line for line in info.current_stacktrace)

    me = process_info(self())
    assert me.status == "running"
    assert me.trap_exit is True
    assert me.monitors == ((ref, pid),)
    assert me.links == (pid,)
    stop(pid)
    assert_receive(Exit)


def test_process_info_of_a_runnable_and_a_dead_process(node):
    pid = spawn(forever)
    assert process_info(pid).status == "runnable"  # spawned, not yet run
    stop(pid)
    assert process_info(pid) is None


def test_processes_lists_live_pids_oldest_first(node):
    a = spawn(forever)
    b = spawn(forever)
    assert processes() == [self(), a, b]
    stop(a)
    assert processes() == [self(), b]
    stop(b)


def test_registered_whereis_and_is_alive(node):
    pid = spawn(forever)
    assert registered() == []
    register("b", pid)
    register("a", self())
    assert registered() == ["a", "b"]
    assert whereis("b") == pid and whereis("nobody") is None
    assert is_alive(pid) and is_alive(self())
    stop(pid)
    assert not is_alive(pid)
    assert registered() == ["a"]
    unregister("a")


def test_pids_and_refs_are_values(node):
    pid = self()
    assert isinstance(pid, Pid)
    assert pid == Pid(pid.node, pid.id, pid.creation) and hash(pid) == hash(
        Pid(pid.node, pid.id, pid.creation)
    )
    assert repr(pid) == f"<0.{pid.id}.0>"
    with pytest.raises(AttributeError):
        pid.id = 3
    r1, r2 = make_ref(), make_ref()
    assert r1 != r2 and r1 == r1 and len({r1, r2}) == 2
    assert repr(r1).startswith("#Ref<")


# --- mailbox helpers --------------------------------------------------------------------


def test_flush_returns_and_removes_every_message(node):
    for m in ("a", "b", "c"):
        send(self(), m)
    assert flush() == ["a", "b", "c"]
    assert flush() == []
    assert receive(timeout=0, default=None) is None


def test_sleep_waits_on_the_node_clock_and_leaves_messages_queued(node, clock):
    send(self(), "kept")
    sleep(7.5)
    assert clock.now() == 7.5
    assert flush() == ["kept"]


def test_sleep_zero_returns_at_once(node, clock):
    sleep(0)
    assert clock.now() == 0


def test_spawn_passes_arguments_and_the_child_has_its_own_pid(node):
    parent = self()
    pid = spawn(lambda a, b: send(parent, (self(), a + b)), 2, 3)
    assert assert_receive((ANY, 5)) == (pid, 5)
    assert pid != parent


def test_trap_exit_returns_the_old_value(node):
    assert trap_exit(True) is False
    assert trap_exit(False) is True


def test_link_to_a_live_process_works_from_either_side(node):
    trap_exit(True)
    pid = spawn(forever)
    link(pid)
    exit(pid, "boom")
    assert assert_receive(Exit) == Exit(pid, "boom")


# --- receive patterns -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Ping:
    n: int


def test_receive_pattern_class_matches_instances(node):
    send(self(), "text")
    send(self(), Ping(1))
    assert receive(Ping) == Ping(1)
    assert receive(int, timeout=0, default=None) is None
    assert flush() == ["text"]


def test_receive_pattern_tuple_with_any_matches_by_length_and_elements(node):
    for m in (("reply", 1), ("reply", 2, "x"), ("other", 2, "x"), ("reply", 3, "y")):
        send(self(), m)
    assert receive(("reply", ANY, ANY)) == ("reply", 2, "x")
    assert receive(("reply", ANY)) == ("reply", 1)
    assert receive((ANY, 3, "y")) == ("reply", 3, "y")
    assert flush() == [("other", 2, "x")]


def test_receive_pattern_tuple_elements_can_be_classes(node):
    send(self(), ("n", "one"))
    send(self(), ("n", 1))
    assert receive(("n", int)) == ("n", 1)
    assert flush() == [("n", "one")]


def test_receive_pattern_nested_tuples_recurse(node):
    ref = make_ref()
    send(self(), ("call", ("from", "other"), "req"))
    send(self(), ("call", ("from", ref), "req"))
    assert receive(("call", ("from", ref), ANY)) == ("call", ("from", ref), "req")
    assert receive(("call", ("from", str), ANY))[1] == ("from", "other")


def test_receive_pattern_predicate(node):
    for n in (1, 7, 12):
        send(self(), n)
    assert receive(lambda m: m > 5) == 7
    assert flush() == [1, 12]


def test_receive_pattern_literal_value(node):
    send(self(), "no")
    send(self(), 42)
    assert receive(42) == 42
    assert receive("no") == "no"


def test_receive_patterns_match_down_and_exit_records(node):
    pid, ref = spawn_monitor(lambda: None)
    send(self(), ("not", "a", "down"))
    assert receive(Down(ref, pid, ANY)) == Down(ref, pid, "normal")  # a record is a tuple
    assert flush() == [("not", "a", "down")]
    trap_exit(True)
    child = spawn_link(exit, "bye")
    assert receive(Exit) == Exit(child, "bye")


def test_monitor_of_a_name_follows_the_process_holding_it_and_down_carries_its_pid(node):
    pid = spawn(forever)
    register("named", pid)
    ref = monitor("named")
    assert process_info(pid).monitored_by == (self(),)
    exit(pid, "boom")
    assert wait_down(ref) == Down(ref, pid, "boom")
