"""Floor: raw greenlets switching to each other. No hub, no mailbox, no scheduler.

The physical floor of anything built on greenlets: a message is the value passed to
``switch()``, a "process" is a greenlet, "blocked in receive" is a greenlet suspended in
``switch()``. Only the workloads that make sense without a mailbox exist here (spawn,
ping_pong, ring, memory); call/cast/many_clients/restart need one.
"""

from __future__ import annotations

import time

from greenlet import getcurrent, greenlet

from bench._measure import RING_SIZE, Result, micros_each, per_second, rss_bytes


def _exit_at_once() -> None:
    return None


def spawn(n: int) -> Result:
    """Create n greenlets (the run queue), then run each; it finishes and control
    returns to the parent, which counts the completion (the greenlet's "Down")."""
    perf = time.perf_counter
    t0 = perf()
    run_queue = [greenlet(_exit_at_once) for _ in range(n)]
    done = 0
    for g in run_queue:
        g.switch()
        done += 1
    t1 = perf()
    assert done == n
    return per_second(n, t1 - t0), "procs/s", n


def ping_pong(n: int) -> Result:
    def pinger(rounds: int) -> None:
        pong = ponger.switch
        for _ in range(rounds):
            pong("ping")  # returns with the ponger's "pong"

    def pong_loop(_first_ping: str) -> None:
        ping = pinger_g.switch
        while True:
            ping("pong")  # returns with the next "ping"

    ponger = greenlet(pong_loop)
    pinger_g = greenlet(pinger)
    perf = time.perf_counter
    t0 = perf()
    pinger_g.switch(n)  # returns here when the pinger finishes
    t1 = perf()
    return micros_each(n, t1 - t0), "us/round_trip", n


def ring(n: int) -> Result:
    main = getcurrent()
    nodes: list[greenlet] = []

    def node(index: int) -> None:
        nxt = nodes[(index + 1) % RING_SIZE].switch
        token = main.switch()  # started and suspended: ready for the token
        while token:
            token = nxt(token - 1)
        # token 0: finished; returning hands control to the parent (the timer)

    nodes.extend(greenlet(node) for _ in range(RING_SIZE))
    for index, g in enumerate(nodes):
        # Start each from here, not from its neighbour: a greenlet started by another
        # inherits its recursion depth, and a chain of 1000 starts overflows it.
        g.switch(index)
    perf = time.perf_counter
    t0 = perf()
    nodes[0].switch(n)
    t1 = perf()
    return per_second(n, t1 - t0), "hops/s", n


def memory(n: int) -> Result:
    main = getcurrent()

    def blocked() -> None:
        main.switch()  # suspended here: "waiting for a message"

    before = rss_bytes()
    procs = []
    for _ in range(n):
        g = greenlet(blocked)
        g.switch()
        procs.append(g)
    after = rss_bytes()
    assert all(not g.dead for g in procs)
    return (after - before) / n, "bytes/process", n


WORKLOADS = {
    "spawn": spawn,
    "ping_pong": ping_pong,
    "ring": ring,
    "memory": memory,
}
