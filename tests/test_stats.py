"""otp.stats: the kernel's queue counters and the sampler's decayed rates (mock clock)."""

from __future__ import annotations

import math

import pytest

from otp import stats
from otp.lowlevel import current_node, lookup_process
from otp.process import exit as exit_proc
from otp.process import processes as processes_now
from otp.process import receive, send, sleep, spawn
from otp.process import self as self_pid
from otp.testing import wait_all_blocked


def reap():
    """Kill what the test spawned (the node must end with the test's process alone)."""
    stats.stop()
    for pid in processes_now():
        if pid != self_pid():
            exit_proc(pid, "kill")
    wait_all_blocked()


def sink():
    while True:
        receive()


def parked():
    receive("never")


def test_kernel_counts_every_message_put_in_a_mailbox(node):
    pid = spawn(parked)
    for i in range(5):
        send(pid, i)
    wait_all_blocked()
    p = lookup_process(pid)
    assert p.nin == 5 and len(p.mbox) == 5
    row = stats.process(pid)
    assert (row.queue, row.enqueued, row.dequeued) == (5, 5, 0)
    reap()


def test_dequeued_is_enqueued_minus_the_queue(node):
    pid = spawn(sink)
    for i in range(7):
        send(pid, i)
    wait_all_blocked()
    row = stats.process(pid)
    assert (row.queue, row.enqueued, row.dequeued) == (0, 7, 7)
    reap()


def test_ended_processes_keep_counting_in_the_node_totals(node):
    pid = spawn(parked)
    for i in range(3):
        send(pid, i)
    wait_all_blocked()
    before = current_node().ended_in
    exit_proc(pid, "kill")
    wait_all_blocked()
    assert current_node().ended_in == before + 3
    assert current_node().ended_out >= 0
    reap()


def expected(rate, t, window):
    return rate * (1 - math.exp(-t / window))


def test_rates_decay_exactly_at_1_10_and_100_seconds(node, clock):
    s = stats.Sampler()
    pid = spawn(sink)
    s.sweep()  # the baseline at t=0
    for step in range(1, 6):
        for i in range(100):
            send(pid, i)
        wait_all_blocked()
        clock.advance(1.0)
        s.sweep()
        row = s.row(lookup_process(pid))
        for k, w in enumerate(stats.WINDOWS):
            assert row.in_rate[k] == pytest.approx(expected(100, step, w), rel=1e-9)
            assert row.out_rate[k] == pytest.approx(expected(100, step, w), rel=1e-9)
    # node-wide: at least this process's load (other processes may add a little)
    assert s.last.in_rate[0] >= expected(100, 5, 1.0) - 1e-6
    # then idle: rates decay as exp(-t/window), read lazily
    top = s.row(lookup_process(pid))
    clock.advance(3.0)
    s.sweep()
    row = s.row(lookup_process(pid))
    for k, w in enumerate(stats.WINDOWS):
        assert row.in_rate[k] == pytest.approx(top.in_rate[k] * math.exp(-3.0 / w), rel=1e-9)
    reap()


def test_a_burst_after_idleness_is_rated_over_the_last_interval(node, clock):
    s = stats.Sampler()
    pid = spawn(sink)
    send(pid, "first")
    wait_all_blocked()
    s.sweep()
    for _ in range(10):  # 10 idle seconds, sampled every second
        clock.advance(1.0)
        s.sweep()
    for i in range(50):
        send(pid, i)
    wait_all_blocked()
    clock.advance(1.0)
    s.sweep()
    row = s.row(lookup_process(pid))
    assert row.in_rate[0] == pytest.approx(50 * (1 - math.exp(-1.0)), rel=1e-9)
    reap()


def slow_consumer(per_second):
    while True:
        receive()
        sleep(1.0 / per_second)


def test_drain_time_projection_of_a_backlogged_process(node, clock):
    s = stats.Sampler()
    pid = spawn(slow_consumer, 4)  # 4 messages a second (0.25 s each)
    s.sweep()
    for i in range(100):
        send(pid, i)
    for _ in range(4):
        sleep(1.0)
        s.sweep()
    row = s.row(lookup_process(pid))
    assert row.queue + row.dequeued == 100 and 16 <= row.dequeued <= 17
    # the 1-s rates, corrected for their start at 0 (4 s watched), give the projection
    corr = 1 - math.exp(-4.0)
    out1, in1 = row.out_rate[0] / corr, row.in_rate[0] / corr
    assert (row.out_now, row.in_now) == (out1, in1)
    assert 3.5 < out1 < 4.5
    assert row.delay == pytest.approx(row.queue / out1, rel=1e-9)
    assert row.drain_time == pytest.approx(row.queue / (out1 - in1), rel=1e-9)
    # the oldest queued message came in the first second: it has waited >= 3 s
    assert row.oldest_wait is not None and row.oldest_wait >= 3.0
    reap()


def test_a_process_that_does_not_dequeue_never_drains(node, clock):
    s = stats.Sampler()
    pid = spawn(parked)
    s.sweep()
    for i in range(20):
        send(pid, i)
    clock.advance(1.0)
    s.sweep()
    row = s.row(lookup_process(pid))
    assert row.queue == 20 and row.drain_time == math.inf and row.delay == math.inf
    reap()


def test_sampler_process_samples_every_interval(node, clock):
    stats.start_link(1.0)
    pid = spawn(sink)
    first = stats.node().samples
    for i in range(10):
        send(pid, i)
    sleep(3.5)
    assert stats.node().samples >= first + 3
    assert stats.process(pid).in_rate[0] > 0
    rows = stats.processes(sort="in", limit=5)
    assert rows and rows[0].in_rate[1] >= stats.process(pid).in_rate[1]
    reap()


def test_a_sweep_at_100k_processes_completes_in_slices(node):
    n = 100_000
    pids = [spawn(parked) for _ in range(n)]
    wait_all_blocked()
    for pid in pids[::10]:
        send(pid, "x")
    s = stats.Sampler(chunk=5000)
    slices = []
    s.sweep(pause=lambda: slices.append(1))
    s.sweep(pause=lambda: slices.append(1))
    assert s.last.processes >= n and s.last.backlogged >= n // 10
    assert len(slices) >= 2 * (n // 5000 - 1)
    reap()
