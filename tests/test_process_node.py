"""The node: otp.run, Node as a context manager, one node at a time, halt, the fairness
report, and a clean stop (no greenlet or watcher left behind).

Most tests here start their own node, so they do not take the ``node`` fixture.
"""

from __future__ import annotations

import gc
import logging
import time

import greenlet
import pytest

import otp
from otp.errors import NodeError, NodeHalted, NotInProcess, OTPError, ProcessExit
from otp.lowlevel import Node, RealClock, current_node
from otp.node import halt
from otp.process import (
    Down,
    monitor,
    receive,
    self,
    send,
    send_after,
    spawn,
    spawn_link,
    spawn_monitor,
)
from otp.process import exit as exit_signal
from otp.testing import MockClock, wait_all_blocked


def forever() -> None:
    receive(lambda m: False)


# --- otp.run and Node -------------------------------------------------------------------


def test_run_returns_what_main_returned():
    assert otp.run(lambda a, b: a * b, 6, 7) == 42


def test_run_reraises_what_main_raised_with_its_traceback():
    def failing_main():
        raise KeyError("missing")

    with pytest.raises(KeyError, match="missing") as info:
        otp.run(failing_main)
    assert any(e.name == "failing_main" for e in info.traceback)


def test_run_of_a_main_that_exits_raises_process_exit_with_its_reason():
    def main():
        from otp.process import exit

        exit("shutdown")

    with pytest.raises(ProcessExit) as info:
        otp.run(main)
    assert info.value.reason == "shutdown"


def test_run_kills_the_processes_left_when_main_ends():
    ran = []

    def worker():
        try:
            forever()
        finally:
            ran.append("cleaned up")

    def main():
        return spawn(worker)

    otp.run(main)
    assert ran == ["cleaned up"]


def test_run_with_a_timeout_raises_timeout_error_and_kills_main():
    with pytest.raises(TimeoutError, match="forever"):
        otp.run(forever, timeout=0.05)


def test_run_re_raises_a_timeout_error_of_main_as_it_was():
    def main():
        raise TimeoutError("the socket timed out")

    with pytest.raises(TimeoutError, match="the socket timed out"):
        otp.run(main)


def test_node_is_a_context_manager_that_starts_and_stops():
    with Node("ctx@host", clock=MockClock()) as n:
        assert current_node() is n and n.running
        assert n.run(lambda: self().node) == "ctx@host"
        assert n.run(lambda: "again") == "again"  # one node can run several mains
    assert not n.running
    with pytest.raises(NodeError):
        current_node()


def test_starting_a_second_node_while_one_runs_raises_node_error():
    with Node():
        with pytest.raises(NodeError, match="already running"):
            Node().start()
        with pytest.raises(NodeError):
            otp.run(lambda: None)
    assert otp.run(lambda: "fresh") == "fresh"  # fine once the first one stopped


def test_a_node_cannot_be_started_from_inside_a_process(node):
    with pytest.raises(NodeError):
        otp.run(lambda: None)


def test_node_name_must_look_like_name_at_host():
    with pytest.raises(otp.BadArg, match="name@host"):
        Node("nohost")


def test_receive_outside_a_process_raises_not_in_process():
    with Node():
        for call in (receive, self, lambda: spawn_link(forever), lambda: monitor(self())):
            with pytest.raises(NotInProcess, match="inside a process"):
                call()
    with pytest.raises(NotInProcess):
        receive()


def test_send_from_outside_a_process_works_and_without_a_node_raises():
    def main():
        return receive()

    with Node() as n:
        result, p = n.start_main(main)
        send(p.pid, "from outside")
        assert n.join(result) == "from outside"
    with pytest.raises(NodeError, match="no node is running"):
        send("name", "x")


# --- halt -------------------------------------------------------------------------------


def test_halt_with_a_reason_kills_every_process_and_run_raises_node_halted():
    cleaned = []

    def worker(n):
        try:
            forever()
        finally:
            cleaned.append(n)

    def main():
        for n in range(3):
            spawn(worker, n)
        spawn(halt, "disk full")
        forever()

    with pytest.raises(NodeHalted) as info:
        otp.run(main)
    assert info.value.reason == "disk full"
    assert "disk full" in str(info.value)
    assert sorted(cleaned) == [0, 1, 2]


def test_halt_normal_makes_run_return_none():
    def main():
        spawn(forever)
        spawn(halt)
        forever()

    assert otp.run(main) is None


def test_halt_does_not_return_in_the_calling_process():
    after = []

    def main():
        halt("stop")
        after.append("returned")

    with pytest.raises(NodeHalted):
        otp.run(main)
    assert after == []


def test_halt_from_outside_the_node_and_run_after_halt():
    with Node(clock=MockClock()) as n:
        result, _p = n.start_main(forever)
        n.halt(("shutdown", "operator"))
        with pytest.raises(NodeHalted) as info:
            n.join(result)
        assert info.value.reason == ("shutdown", "operator")
        assert n.procs == {}
        with pytest.raises(NodeHalted):
            n.run(lambda: None)


def test_node_halted_is_an_otp_error():
    assert issubclass(NodeHalted, OTPError)
    assert NodeHalted("x").reason == "x"


# --- clean stop -------------------------------------------------------------------------


def _live_greenlets() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, greenlet.greenlet))


def test_stop_leaves_no_greenlet_and_no_watcher_behind():
    def main():
        parent = self()
        for _ in range(3):
            spawn(forever)
        spawn_link(forever)
        spawn(lambda: receive(timeout=100))
        _pid, _ref = spawn_monitor(send, parent, "hi")
        receive(Down)
        send_after(50, parent, "later")
        return receive("hi", timeout=10)

    def one_node(clock):
        with Node(clock=clock) as n:
            assert n.run(main) == "hi"

    one_node(MockClock())  # warm up: the hub and its first watchers exist from now on
    one_node(RealClock())
    loop = __import__("gevent").get_hub().loop
    before_greenlets = _live_greenlets()
    before_watchers = loop.activecnt
    for i in range(1000):
        one_node(MockClock() if i % 2 else RealClock())
    assert loop.activecnt == before_watchers
    assert _live_greenlets() <= before_greenlets


# --- fairness ---------------------------------------------------------------------------


class _SendingHandler(logging.Handler):
    """Forwards each record to a process, so a test can wait for it as a message."""

    def __init__(self, pid):
        super().__init__(logging.WARNING)
        self.pid = pid

    def emit(self, record: logging.LogRecord) -> None:
        send(self.pid, ("logged", record.getMessage()))


def busy_loop_without_yielding(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


@pytest.mark.otp(clock="real", max_blocking_time=0.05)
def test_fairness_report_names_a_process_that_holds_the_hub_and_its_stack(node):
    handler = _SendingHandler(self())
    logger = logging.getLogger("otp.process")
    logger.addHandler(handler)
    try:
        pid, ref = spawn_monitor(busy_loop_without_yielding, 0.5)
        assert receive(Down, timeout=10).ref == ref
        # (a loaded machine may add reports about others: wait for the one about pid)
        _tag, text = receive(
            lambda m: m[0] == "logged" and "held the hub" in m[1] and repr(pid) in m[1],
            timeout=10,
        )
    finally:
        logger.removeHandler(handler)
    assert f"process {pid!r}" in text
    assert "busy_loop_without_yielding" in text  # the stack shows where it was caught
    assert "max_blocking_time=0.05" in text


def test_max_blocking_time_must_be_positive_seconds():
    for bad in (0, -1, "1"):
        with pytest.raises(otp.BadArg, match="max_blocking_time"):
            Node(max_blocking_time=bad)


# --- OS threads -------------------------------------------------------------------------


def test_start_os_thread_runs_in_a_real_thread_while_the_node_keeps_running(node):
    from otp.lowlevel import OSEvent, get_os_ident
    from otp.threads import start_os_thread

    entered, release, done = OSEvent(), OSEvent(), OSEvent()
    idents = []

    def blocking_work():
        idents.append(get_os_ident())
        entered.set()
        release.wait(10)  # blocks this OS thread only
        done.set()

    start_os_thread(blocking_work, name="test-worker")
    assert entered.wait(10)
    assert idents[0] != get_os_ident()
    send(self(), "the hub still runs")  # while the thread is blocked
    assert receive(timeout=0) == "the hub still runs"
    assert not done.is_set()
    release.set()
    assert done.wait(10)


def test_os_event_set_clear_and_wait_with_timeout():
    from otp.lowlevel import OSEvent

    e = OSEvent()
    assert not e.is_set() and e.wait(0.01) is False
    e.set()
    e.set()  # idempotent
    assert e.is_set() and e.wait() is True and e.wait(0) is True
    e.clear()
    e.clear()
    assert not e.is_set() and e.wait(0) is False


@pytest.mark.otp(clock="real")
def test_p13_timeouts_fire_while_the_node_is_kept_busy(node):
    """Receive deadlines are armed lazily; on a node that never goes idle (two processes
    ping-ponging without pause) they must still fire."""
    from otp import gen_server
    from otp.errors import CallTimeout
    from otp.process import exit as exit_signal
    from otp.process import is_alive, receive, self, send, spawn

    def ponger():
        while True:
            msg = receive()
            if msg == "stop":
                return
            send(msg, "pong")

    def pinger(peer, limit):
        me = self()
        for _ in range(limit):  # bounded: stops by itself
            send(peer, me)
            receive()
            mbox = receive(("stop",), timeout=0, default=None)
            if mbox is not None:
                break
        send(peer, "stop")

    class Silent(gen_server.GenServer):
        def init(self, arg):
            return gen_server.Ok(None)

        def handle_call(self, request, from_, state):
            return gen_server.NoReply(state)  # never replies

    silent = gen_server.start_link(Silent)
    peer = spawn(ponger)
    busy = spawn(pinger, peer, 5_000_000)
    me = self()

    def caller():
        try:
            gen_server.call(silent, "hello", timeout=0.2)
        except CallTimeout:
            send(me, "call timed out")

    spawn(caller)
    spawn(lambda: send(me, receive(timeout=0.2, default="receive timed out")))
    got = {receive(), receive()}
    still_busy = is_alive(busy)  # the timeouts came while the node was still busy
    send(busy, ("stop",))
    assert got == {"call timed out", "receive timed out"}
    assert still_busy
    gen_server.stop(silent)
    exit_signal(busy, "kill")
    exit_signal(peer, "kill")


def test_p13_a_process_waiting_with_deadlines_again_and_again_is_listed_once(node):
    """Deadlines armed lazily are kept in a list the node scans; a process that waits
    with a deadline many times in a row (every call has one) must not pile up in it."""
    from otp import gen_server

    class Echo(gen_server.GenServer):
        def init(self, arg):
            return gen_server.Ok(None)

        def handle_call(self, request, from_, state):
            return gen_server.Reply(request, state)

    srv = gen_server.start_link(Echo)
    longest = 0
    for i in range(1000):
        assert gen_server.call(srv, i) == i  # each with the default 5 s deadline
        longest = max(longest, len(node._lazy))
    assert longest <= 2, longest
    gen_server.stop(srv)


def _live_timers(node):
    return [e[2] for e in node._timers if not (e[2].cancelled or e[2].fired)]


def test_p13_far_deadlines_share_one_sweep_timer_instead_of_one_timer_each(node, clock):
    """Processes waiting (on I/O, say) with far deadlines cost no timer each: one sweep
    timer looks at them when the earliest comes near. Each still times out on time."""
    parent = self()

    def waiter(timeout):
        t0 = clock.now()
        got = receive(timeout=timeout, default="timed out")
        send(parent, (got, clock.now() - t0))

    for i in range(100):
        spawn(waiter, 30.0 + i)
    wait_all_blocked()
    assert len(_live_timers(node)) == 1  # the sweep, not 100 receive timers
    results = sorted(receive() for _ in range(100))
    assert results == [("timed out", 30.0 + i) for i in range(100)]
    assert node._kept == {} and node._sweep is None


def test_p13_a_kept_process_waiting_again_with_a_nearer_deadline_gets_it_on_time(node, clock):
    parent = self()

    def waiter():
        send(parent, ("first", receive(timeout=60.0, default="timed out")))
        t0 = clock.now()  # kept for the sweep (due ~60 s), and now a 1 s deadline
        send(parent, ("second", receive(timeout=1.0, default="timed out"), clock.now() - t0))

    pid = spawn(waiter)
    wait_all_blocked()
    assert node._kept  # the 60 s deadline waits for the sweep
    send(pid, "hello")
    assert receive() == ("first", "hello")
    assert receive() == ("second", "timed out", 1.0)


def test_p13_a_kept_process_that_ends_leaves_the_sweep_list(node, clock):
    pid = spawn(lambda: receive(timeout=60.0))
    wait_all_blocked()
    assert len(node._kept) == 1
    exit_signal(pid, "kill")
    wait_all_blocked()
    assert node._kept == {}


def test_p13_processes_that_work_between_switches_still_give_the_hub_its_turns(node):
    """Direct hand-offs between processes are capped in real time, not only in count:
    when each process works longer than the hub's turn between switches, the hub (I/O,
    thread-pool completions) runs between every few of them, not after thousands."""
    import gevent

    from otp._core.node import HUB_TURN, SWITCH_BUDGET
    from otp.process import receive, send, spawn

    turns = [0]
    stop = [False]

    def count_turns():  # a plain greenlet: it runs only when the hub gets a turn
        while not stop[0]:
            turns[0] += 1
            gevent.sleep(0)

    def work():
        end = time.perf_counter() + HUB_TURN  # bounded busy work, longer than a turn
        while time.perf_counter() < end:
            pass

    def player(n):
        peer = receive()
        for _ in range(n):
            work()
            send(peer, "ball")
            receive()
        send(peer, "ball")

    me = self()
    a, b = spawn(player, 80), spawn(player, 80)
    send(a, b)
    send(b, a)
    counter = gevent.spawn(count_turns)
    mon_a, mon_b = monitor(a), monitor(b)
    receive(Down)
    receive(Down)
    stop[0] = True
    counter.join()
    assert mon_a != mon_b and me is not None
    # 160 switches of more than a turn each: the hub runs at least every SWITCH_BUDGET
    # of them (a count-only budget of thousands gave it one turn or none).
    assert SWITCH_BUDGET <= 32
    assert turns[0] >= 4, turns[0]


def test_a_process_that_ends_hands_the_cpu_straight_to_the_next_runnable_one(node):
    """Like a process that blocks, one that ends gives the CPU to the next process in the
    run queue directly: its greenlet returns into that process, not into the hub."""
    from otp.process import receive, send, spawn
    from otp.testing import wait_all_blocked

    me = self()

    def ender():
        receive()  # "end": then return

    def waker():
        receive()  # "wake"
        send(me, "woke")

    a, b = spawn(ender), spawn(waker)
    wait_all_blocked()  # both started, blocked in receive
    ga, gb = node.procs[a.id], node.procs[b.id]
    switches = []
    old = greenlet.settrace(lambda event, args: switches.append((event, args[0], args[1])))
    try:
        send(a, "end")
        send(b, "wake")
        assert receive() == "woke"
    finally:
        greenlet.settrace(old)
    assert ("switch", ga, gb) in switches


def test_a_process_killed_while_waiting_in_receive_unwinds_without_a_greenlet_throw(node):
    """A process suspended in the kernel's wait is resumed as usual and raises its exit
    itself (cheap); one suspended anywhere else (here: gevent's sleep) gets the exit
    thrown into its greenlet. Both run their ``finally`` blocks and end with the kill."""
    import gevent

    from otp.process import Down, exit, monitor, receive, spawn
    from otp.testing import wait_all_blocked

    cleaned = []  # (a dead process sends nothing, P17: its finally leaves a note here)

    def waiting_in(wait):
        try:
            wait()
        finally:
            cleaned.append(wait.__name__)

    def in_receive():
        receive()

    def in_gevent_sleep():
        gevent.sleep(3600)

    for wait, thrown in ((in_receive, False), (in_gevent_sleep, True)):
        pid = spawn(waiting_in, wait)
        ref = monitor(pid)
        wait_all_blocked()
        g = node.procs[pid.id]
        events = []
        old = greenlet.settrace(lambda event, args, seen=events: seen.append((event, args[1])))
        try:
            exit(pid, "kill")
            assert receive(Down) == Down(ref, pid, "killed")
            wait_all_blocked()
            assert cleaned.pop() == wait.__name__
        finally:
            greenlet.settrace(old)
        assert (("throw", g) in events) is thrown
