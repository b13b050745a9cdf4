"""Exit signals, links and monitors: docs/semantics.md P1-P9 and P15.

Every test runs inside a process of a fresh node (mock clock, strict mode). Children are
tiny scripted functions; tests wait on ``Down``/``Exit`` messages, never on time.
"""

from __future__ import annotations

import logging

import pytest

from otp.errors import NoProc, ProcessExit
from otp.process import (
    Down,
    Exit,
    demonitor,
    exit,
    is_alive,
    link,
    monitor,
    process_info,
    processes,
    receive,
    register,
    self,
    send,
    spawn,
    spawn_link,
    spawn_monitor,
    trap_exit,
    unlink,
    whereis,
)
from otp.testing import assert_down as wait_down
from otp.testing import assert_receive, refute_receive, wait_all_blocked
from otp.testing import stop_process as stop


def forever() -> None:
    receive(lambda m: False)


def trapper(parent, forward: bool = True) -> None:
    """Trap exits, say "ready", then forward every message to ``parent``."""
    trap_exit(True)
    send(parent, "ready")
    while forward:
        send(parent, ("got", receive()))


def crash(reason: str = "boom") -> None:
    raise RuntimeError(reason)




@pytest.fixture(autouse=True)
def _quiet_crash_logs(caplog):
    caplog.set_level(logging.CRITICAL, logger="otp.process")


# --- P1 ---------------------------------------------------------------------------------


def test_p1_exit_signal_ends_non_trapping_target_with_exactly_that_reason(node):
    pid, ref = spawn_monitor(forever)
    exit(pid, "boom")
    assert wait_down(ref) == Down(ref, pid, "boom")
    assert not is_alive(pid)


def test_p1_exit_signal_with_a_tuple_or_exception_reason_is_kept_as_is(node):
    err = ValueError("bad")
    for reason in (("shutdown", "tuple"), err):
        pid, ref = spawn_monitor(forever)
        exit(pid, reason)
        assert wait_down(ref).reason is reason


def test_p1_trapping_target_receives_exit_message_instead_of_dying(node):
    pid, _ref = spawn_monitor(trapper, self())
    assert_receive("ready")
    exit(pid, "boom")
    assert assert_receive(("got", Exit)) == ("got", Exit(self(), "boom"))
    assert is_alive(pid)
    stop(pid)


# --- P2 ---------------------------------------------------------------------------------


def test_p2_normal_exit_signal_is_ignored_by_non_trapping_target(node):
    def echo():
        while True:
            sender = receive()
            send(sender, "alive")

    pid = spawn(echo)
    exit(pid, "normal")
    send(pid, self())
    assert_receive("alive")
    assert is_alive(pid)
    stop(pid)


def test_p2_normal_exit_signal_reaches_a_trapping_target_as_a_message(node):
    pid = spawn(trapper, self())
    assert_receive("ready")
    exit(pid, "normal")
    assert assert_receive(("got", Exit)) == ("got", Exit(self(), "normal"))
    stop(pid)


def test_p2_exit_self_normal_ends_the_caller_with_normal(node):
    parent = self()

    def child():
        exit(self(), "normal")
        send(parent, "still running")

    _pid, ref = spawn_monitor(child)
    assert wait_down(ref).reason == "normal"
    refute_receive("still running", timeout=0)


# --- P3 ---------------------------------------------------------------------------------


def test_p3_kill_cannot_be_trapped_and_the_target_dies_with_killed(node):
    pid, ref = spawn_monitor(trapper, self())
    assert_receive("ready")
    exit(pid, "kill")
    assert wait_down(ref).reason == "killed"
    refute_receive(("got", Exit), timeout=0)


def test_p3_kill_links_see_killed_not_kill(node):
    trap_exit(True)
    pid = spawn_link(forever)
    exit(pid, "kill")
    assert assert_receive(Exit) == Exit(pid, "killed")


def test_p3_kill_sent_to_self_ends_a_trapping_caller_with_killed(node):
    def child():
        trap_exit(True)
        exit(self(), "kill")

    _pid, ref = spawn_monitor(child)
    assert wait_down(ref).reason == "killed"


def test_p3_non_trapping_link_of_a_killed_process_dies_with_killed(node):
    def middle():
        spawn_link(forever)
        forever()

    pid, ref = spawn_monitor(middle)
    wait_all_blocked()
    (inner,) = process_info(pid).links
    inner_ref = monitor(inner)
    exit(pid, "kill")
    assert wait_down(ref).reason == "killed"
    assert wait_down(inner_ref).reason == "killed"


# --- P4 ---------------------------------------------------------------------------------


def test_p4_link_signal_with_reason_kill_is_trapped_as_a_message(node):
    trap_exit(True)
    pid = spawn_link(exit, "kill")  # the child itself exits with reason kill
    assert assert_receive(Exit) == Exit(pid, "kill")
    assert is_alive(self())


def test_p4_link_signal_with_reason_kill_ends_non_trapping_link_with_kill(node):
    def middle():
        spawn_link(exit, "kill")
        forever()

    _pid, ref = spawn_monitor(middle)
    assert wait_down(ref).reason == "kill"


# --- P5 ---------------------------------------------------------------------------------


def test_p5_abnormal_reason_cascades_along_a_chain_of_links(node):
    trap_exit(True)

    def hop(n):
        if n == 0:
            send(top, "chain built")
            forever()
        spawn_link(hop, n - 1)
        forever()

    top = self()
    first = spawn_link(hop, 3)
    assert_receive("chain built")
    pids = [first]
    while True:
        links = [q for q in process_info(pids[-1]).links if q not in pids and q != top]
        if not links:
            break
        pids.append(links[0])
    assert len(pids) == 4
    refs = [monitor(p) for p in pids]
    exit(pids[-1], "boom")  # the far end dies; the reason travels back to us
    for ref in refs:
        assert wait_down(ref).reason == "boom"
    assert assert_receive(Exit) == Exit(first, "boom")


def test_p5_normal_exit_stops_at_the_first_hop(node):
    parent = self()

    def middle():
        spawn_link(send, parent, "leaf done")  # returns at once: reason normal
        forever()

    mid, _ref = spawn_monitor(middle)
    assert_receive("leaf done")
    wait_all_blocked()
    assert is_alive(mid)
    assert process_info(mid).links == ()
    refute_receive(Down, timeout=0)
    stop(mid)


def test_p5_trapping_process_stops_the_cascade_and_gets_the_reason(node):
    def middle():
        trap_exit(True)
        spawn_link(crash)
        send(parent, receive(Exit).reason.args)
        forever()

    parent = self()
    mid = spawn(middle)
    assert assert_receive(tuple) == ("boom",)
    assert is_alive(mid)
    stop(mid)


# --- P6 ---------------------------------------------------------------------------------


def test_p6_links_are_bidirectional(node):
    for dying in ("linker", "linked"):
        a, ra = spawn_monitor(forever)
        b, rb = spawn_monitor(lambda a=a: (link(a), forever()))
        wait_all_blocked()
        assert process_info(a).links == (b,)
        exit(a if dying == "linker" else b, "boom")
        assert wait_down(ra).reason == "boom"
        assert wait_down(rb).reason == "boom"


def test_p6_linking_twice_makes_one_link(node):
    trap_exit(True)
    pid = spawn(forever)
    link(pid)
    link(pid)
    assert process_info(pid).links == (self(),)
    unlink(pid)  # one unlink removes the one link
    assert process_info(pid).links == ()
    assert process_info(self()).links == ()
    stop(pid)
    refute_receive(Exit, timeout=0)


def test_p6_linking_to_self_does_nothing(node):
    link(self())
    assert process_info(self()).links == ()


def test_p6_every_monitor_call_creates_a_separate_monitor_and_down(node):
    pid = spawn(forever)
    r1, r2 = monitor(pid), monitor(pid)
    assert r1 != r2
    assert len(process_info(pid).monitored_by) == 2
    exit(pid, "boom")
    downs = {wait_down(r1), wait_down(r2)}
    assert downs == {Down(r1, pid, "boom"), Down(r2, pid, "boom")}


def test_p6_monitors_are_one_way(node):
    pid = spawn(forever)
    ref = monitor(pid)
    assert process_info(self()).links == ()
    _child, cref = spawn_monitor(exit, "boom")
    assert wait_down(cref).reason == "boom"  # the watcher is not affected
    assert is_alive(pid)
    stop(pid)
    wait_down(ref)


# --- P7 ---------------------------------------------------------------------------------


def dead_pid():
    pid, ref = spawn_monitor(lambda: None)
    wait_down(ref)
    return pid


def test_p7_link_to_dead_pid_raises_noproc_in_non_trapping_caller(node):
    pid = dead_pid()
    with pytest.raises(NoProc) as info:
        link(pid)
    assert info.value.target == pid
    assert "noproc" in str(info.value)
    assert is_alive(self())


def test_p7_link_to_dead_pid_queues_exit_noproc_for_trapping_caller(node):
    trap_exit(True)
    pid = dead_pid()
    link(pid)
    assert receive(timeout=0) == Exit(pid, "noproc")


def test_p7_monitor_of_dead_pid_queues_down_noproc_at_once(node):
    pid = dead_pid()
    ref = monitor(pid)
    assert receive(timeout=0) == Down(ref, pid, "noproc")


def test_p7_monitor_of_unregistered_name_queues_down_noproc_at_once(node):
    ref = monitor("nobody")
    assert receive(timeout=0) == Down(ref, "nobody", "noproc")


# --- P8 ---------------------------------------------------------------------------------


def test_p8_unlink_stops_future_exit_signals(node):
    pid = spawn_link(forever)
    unlink(pid)
    assert process_info(pid).links == ()
    exit(pid, "boom")  # would kill us if still linked
    wait_all_blocked()
    assert not is_alive(pid)
    assert is_alive(self())


def test_p8_unlink_leaves_an_already_queued_exit(node):
    trap_exit(True)
    pid, ref = spawn_link(crash), None
    ref = monitor(pid)
    wait_down(ref)
    unlink(pid)
    assert assert_receive(Exit).pid == pid


def test_p8_demonitor_stops_future_down(node):
    pid = spawn(forever)
    ref = monitor(pid)
    assert demonitor(ref) is True
    stop(pid)
    refute_receive(lambda m: isinstance(m, Down) and m.ref == ref, timeout=0)


def test_p8_demonitor_leaves_an_already_queued_down(node):
    pid, ref = spawn_monitor(lambda: None)
    wait_all_blocked()
    assert demonitor(ref) is False
    assert receive(timeout=0) == Down(ref, pid, "normal")


def test_p8_demonitor_with_flush_removes_the_queued_down_only(node):
    pid, ref = spawn_monitor(lambda: None)
    wait_all_blocked()
    other = monitor(pid)  # a noproc Down for another monitor, queued after
    send(self(), "after")
    assert demonitor(ref, flush=True) is False
    assert receive(timeout=0) == Down(other, pid, "noproc")
    assert receive(timeout=0) == "after"
    assert receive(timeout=0, default=None) is None


# --- P9 ---------------------------------------------------------------------------------


def test_p9_spawn_link_child_crashing_at_its_first_line_still_sends_exit(node):
    trap_exit(True)
    pid = spawn_link(crash)
    msg = assert_receive(Exit)
    assert msg.pid == pid and isinstance(msg.reason, RuntimeError)


def test_p9_spawn_link_non_trapping_parent_dies_with_a_child_crashing_at_once(node):
    def parent():
        spawn_link(crash)
        forever()

    _pid, ref = spawn_monitor(parent)
    assert isinstance(wait_down(ref).reason, RuntimeError)


def test_p9_spawn_monitor_child_crashing_at_its_first_line_still_sends_down(node):
    pid, ref = spawn_monitor(crash)
    down = wait_down(ref)
    assert down.pid == pid and isinstance(down.reason, RuntimeError)


def test_p9_spawn_monitor_child_exiting_at_once_with_a_reason(node):
    pid, ref = spawn_monitor(exit, "early")
    assert wait_down(ref) == Down(ref, pid, "early")


# --- P15 --------------------------------------------------------------------------------


def test_p15_process_exit_is_a_base_exception(node):
    assert issubclass(ProcessExit, BaseException)
    assert not issubclass(ProcessExit, Exception)


def test_p15_except_exception_cannot_swallow_an_exit(node):
    parent = self()

    def child():
        try:
            forever()
        except Exception:
            send(parent, "swallowed")

    pid, ref = spawn_monitor(child)
    wait_all_blocked()
    exit(pid, "boom")
    assert wait_down(ref).reason == "boom"
    wait_all_blocked()
    refute_receive("swallowed", timeout=0)


def test_p15_finally_blocks_run_when_a_process_is_killed(node):
    ran = []

    def child():
        try:
            forever()
        finally:
            ran.append("finally")

    pid, ref = spawn_monitor(child)
    wait_all_blocked()
    exit(pid, "kill")
    wait_down(ref)
    wait_all_blocked()
    assert ran == ["finally"]


def test_p15_bare_except_swallowing_the_exit_is_still_reported_dead(node, caplog):
    caplog.set_level(logging.WARNING, logger="otp.process")
    seen = []
    trap_exit(True)

    def zombie():
        register("zombie", self())
        try:
            forever()
        except:  # noqa: E722 - the misbehaviour under test
            seen.append("swallowed")
        try:
            receive(timeout=1)
        except BaseException as e:
            seen.append(e)
            raise

    pid = spawn_link(zombie)
    ref = monitor(pid)
    wait_all_blocked()
    assert whereis("zombie") == pid
    exit(pid, "boom")
    # Dead as far as everyone is concerned, before the greenlet even ran again.
    assert wait_down(ref) == Down(ref, pid, "boom")
    assert assert_receive(Exit) == Exit(pid, "boom")
    assert not is_alive(pid)
    assert whereis("zombie") is None
    register("zombie", self())  # the name is free at once
    wait_all_blocked()
    # The next kernel call from the zombie raised the exit again.
    assert seen[0] == "swallowed"
    assert isinstance(seen[1], ProcessExit) and seen[1].reason == "boom"
    assert "caught its exit signal" in caplog.text
    refute_receive(timeout=0)


def test_p15_zombie_that_returns_normally_keeps_its_exit_reason(node, caplog):
    caplog.set_level(logging.WARNING, logger="otp.process")

    def zombie():
        try:
            forever()
        except:  # noqa: E722 - the misbehaviour under test
            return

    pid, ref = spawn_monitor(zombie)
    wait_all_blocked()
    exit(pid, "boom")
    assert wait_down(ref).reason == "boom"
    wait_all_blocked()
    refute_receive(Down, timeout=0)  # one Down, not a second "normal" one
    assert "swallowed" in caplog.text and repr(pid) in caplog.text


def test_p15_every_later_kernel_call_from_a_zombie_reraises_its_exit(node, caplog):
    caplog.set_level(logging.CRITICAL, logger="otp.process")
    outcomes = []
    parent = self()

    def zombie():
        try:
            forever()
        except:  # noqa: E722 - the misbehaviour under test
            pass
        for call in (
            lambda: spawn_link(forever),
            lambda: monitor(parent),
            lambda: link(parent),
            lambda: exit(parent, "revenge"),
            lambda: trap_exit(True),
        ):
            try:
                call()
                outcomes.append("went through")
            except ProcessExit as e:
                outcomes.append(e.reason)

    pid, ref = spawn_monitor(zombie)
    wait_all_blocked()
    exit(pid, "boom")
    wait_down(ref)
    wait_all_blocked()
    assert outcomes == ["boom"] * 5
    assert process_info(self()).links == () and process_info(self()).monitored_by == ()
    assert processes() == [self()]  # the zombie spawned nothing


def test_p15_kernel_calls_in_a_finally_block_of_a_killed_process_end_it_quietly(node, caplog):
    caplog.set_level(logging.WARNING, logger="otp.process")
    steps = []

    def child():
        try:
            forever()
        finally:
            steps.append("cleanup")
            receive(timeout=0, default=None)  # a kernel call while the exit unwinds
            steps.append("not reached")

    pid, ref = spawn_monitor(child)
    wait_all_blocked()
    exit(pid, "boom")
    assert wait_down(ref).reason == "boom"
    wait_all_blocked()
    assert steps == ["cleanup"]
    assert "caught its exit signal" not in caplog.text
    assert "swallowed" not in caplog.text
