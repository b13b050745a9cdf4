"""The hub gets its turns while processes keep each other busy: between two drain
turns (HUB_TURN of real time each) the event loop polls I/O and runs its timers, so a
socket's data and a timer's message are not held off by a flat-out exchange of
messages. (A drain that came back as a gevent callback ran 50 turns in a row before the
loop polled again: 100+ ms with no I/O and no timers.)"""

from __future__ import annotations

import pytest

from otp.lowlevel import current_node
from otp.process import receive, send, spawn
from otp.process import self as _self

pytestmark = pytest.mark.otp(clock="real")


def test_the_event_loop_polls_between_drain_turns_of_a_busy_node(node):
    node_ = current_node()
    loop = node_.hub.loop
    polls = [0]
    turns = [0]  # drain turns that ended because their time was up
    more_budget = node_._more_budget

    def counting() -> bool:
        more = more_budget()
        if not more:
            turns[0] += 1
        return more

    node_._more_budget = counting  # type: ignore[method-assign]
    watcher = loop.prepare()  # runs once per event-loop iteration, before it polls
    watcher.start(lambda: polls.__setitem__(0, polls[0] + 1))
    try:

        def ponger() -> None:
            while True:
                m = receive()
                if m == "stop":
                    return
                send(m, "pong")

        peer = spawn(ponger)
        me = _self()
        start = polls[0]
        for _ in range(500_000):
            send(peer, me)
            receive()
            if turns[0] >= 20:
                break
        send(peer, "stop")
        assert turns[0] >= 20, "the exchange never used up a drain turn"
        # A turn's end is seen twice (by the process that blocks, then by the drain):
        # at least one poll per two turns, counted that way.
        assert polls[0] - start >= turns[0] // 4, (
            f"the event loop polled {polls[0] - start} times in {turns[0]} drain turns"
        )
    finally:
        del node_._more_budget
        watcher.stop()
        watcher.close()


def test_busy_wait_keeps_the_loop_polling_after_the_run_queue_empties_then_sleeps(node):
    node_ = current_node()
    loop = node_.hub.loop
    polls = [0]
    watcher = loop.prepare()
    watcher.start(lambda: polls.__setitem__(0, polls[0] + 1))
    try:
        node_.busy_wait = 0.02
        spawn(lambda: None)  # some work; then this process waits, the queue is empty
        start = polls[0]
        receive(timeout=0.1, default=None)  # 20 ms of polling, then the hub sleeps
        # woken by the timer: the spin had ended by itself (it restarts only when the
        # run queue is empty again)
        assert node_._spin is not None and not node_._spin.active
        assert polls[0] - start > 20  # it polled many times (not one sleep to the timer)
        node_.busy_wait = 0.0
        start = polls[0]
        receive(timeout=0.05, default=None)
        assert polls[0] - start < 20  # without busy wait the hub sleeps to the timer
    finally:
        node_.busy_wait = 0.0
        watcher.stop()
        watcher.close()


def test_no_busy_wait_by_default(node):
    spawn(lambda: None)
    receive(timeout=0.001, default=None)
    assert current_node().busy_wait == 0.0 and current_node()._spin is None
