"""examples.rate_limiter: a token bucket on the node's (mock) clock."""

from __future__ import annotations

import pytest

from examples import rate_limiter
from examples.rate_limiter import Allowed, Denied, Limits, acquire, check
from otp import gen_server, supervisor
from otp.errors import CallTimeout
from otp.process import Down, exit, monitor, now, receive, self, send, spawn, whereis
from otp.testing import assert_receive, wait_all_blocked


def test_burst_is_allowed_then_denied_with_the_time_until_the_next_token(node):
    pid = rate_limiter.start_link(Limits(rate=2.0, burst=3))
    try:
        assert [check(pid, "k") for _ in range(3)] == [Allowed(2.0), Allowed(1.0), Allowed(0.0)]
        assert check(pid, "k") == Denied(0.5)
        assert check(pid, "k", 2) == Denied(1.0)
        assert check(pid, "other") == Allowed(2.0)  # one bucket per key
    finally:
        gen_server.stop(pid)


def test_tokens_refill_at_the_rate_up_to_the_burst(node):
    pid = rate_limiter.start_link(Limits(rate=2.0, burst=3))
    try:
        for _ in range(3):
            check(pid, "k")
        t0 = now()
        assert acquire(pid, "k") == Allowed(0.0)
        assert now() - t0 == pytest.approx(0.5)  # one token at 2 tokens/s
        receive(timeout=100, default=None)  # idle for a long time on the mock clock
        assert check(pid, "k") == Allowed(2.0)  # capped at burst
    finally:
        gen_server.stop(pid)


def test_waiters_are_served_first_come_first_served_and_checks_do_not_jump_the_queue(node):
    pid = rate_limiter.start_link(Limits(rate=1.0, burst=1))
    me = self()
    try:
        assert check(pid, "k") == Allowed(0.0)

        def waiter(name):
            acquire(pid, "k", timeout=None)
            send(me, ("got", name, now()))

        t0 = now()
        for name in ("first", "second", "third"):
            spawn(waiter, name)
            wait_all_blocked()  # let it queue, in this order
        assert check(pid, "k") == Denied(4.0)  # three tokens are spoken for, then ours
        got = [receive(("got", str, float)) for _ in range(3)]
        assert [(name, at - t0) for _tag, name, at in got] == [
            ("first", pytest.approx(1.0)),
            ("second", pytest.approx(2.0)),
            ("third", pytest.approx(3.0)),
        ]
    finally:
        gen_server.stop(pid)


def test_a_waiter_that_died_is_skipped(node):
    pid = rate_limiter.start_link(Limits(rate=1.0, burst=1))
    me = self()
    try:
        check(pid, "k")
        doomed = spawn(lambda: acquire(pid, "k", timeout=None))
        wait_all_blocked()
        ref = monitor(doomed)
        exit(doomed, "kill")
        assert_receive(Down(ref, doomed, "killed"))
        spawn(lambda: send(me, ("got", acquire(pid, "k", timeout=None), now())))
        t0 = now()
        _tag, _allowed, at = receive(("got", Allowed, float))
        assert at - t0 == pytest.approx(1.0)  # the dead one's turn went to us
    finally:
        gen_server.stop(pid)


def test_acquire_times_out_on_the_node_clock(node):
    pid = rate_limiter.start_link(Limits(rate=0.1, burst=1))
    try:
        check(pid, "k")
        with pytest.raises(CallTimeout):
            acquire(pid, "k", timeout=1.0)
    finally:
        gen_server.stop(pid)


def test_more_than_the_burst_can_never_be_granted(node):
    pid = rate_limiter.start_link(Limits(rate=1.0, burst=2))
    try:
        assert check(pid, "k", 3) == Denied(float("inf"))
        with pytest.raises(ValueError, match="3 tokens can never be available"):
            acquire(pid, "k", 3)
    finally:
        gen_server.stop(pid)


def test_limits_are_validated():
    with pytest.raises(ValueError, match="rate expects tokens per second > 0, got 0"):
        Limits(rate=0, burst=1)
    with pytest.raises(ValueError, match="burst expects an int >= 1, got 0"):
        Limits(rate=1, burst=0)


def test_the_supervisor_restarts_a_crashed_limiter_with_full_buckets(node):
    sup = supervisor.start_link(rate_limiter.LimiterSup, Limits(rate=1.0, burst=1))
    try:
        check("rate_limiter", "k")
        old = whereis("rate_limiter")
        ref = monitor(old)
        exit(old, "boom")
        assert_receive(Down(ref, old, "boom"))
        wait_all_blocked()  # the supervisor has restarted it
        assert whereis("rate_limiter") not in (None, old)
        assert check("rate_limiter", "k") == Allowed(0.0)
    finally:
        supervisor.stop(sup)


def test_main_lets_three_clients_through_at_the_rate(node):
    log = rate_limiter.main()
    # burst of 2, then one request every 0.25 s, served in arrival order
    assert [at for _n, _i, at in log] == [0.0, 0.0] + [0.25 * k for k in range(1, 14)]
    assert sorted((n, i) for n, i, _at in log) == [(n, i) for n in "abc" for i in range(5)]
