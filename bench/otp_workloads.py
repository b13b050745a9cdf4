"""The BENCH.md workloads against this project's public API (``otp``, ``otp.process``).

Each function starts a fresh node with ``otp.run`` and times the workload inside the
main process; it leaves no process behind (every process it spawned has ended or been
told to stop before ``main`` returns), so it works whether or not ``otp.run`` waits for
the node to drain.

Not yet implemented (the gen_server/supervisor layer comes later) — each is one
function, written like the gevent floor's of the same name, then swap the ``NotYet``
entry in ``WORKLOADS`` for it:

- ``call(n)``: start a counter gen_server; n sequential ``gen_server.call(srv, "incr")``;
  check the count; stop it. Unit ``us/call``.
- ``cast(n)``: n ``gen_server.cast(srv, "incr")``, then one call to sync (inside the
  timed region); check the count. Unit ``casts/s``.
- ``many_clients(n)``: ``CLIENTS`` (1000) processes each doing ``n // CLIENTS`` calls to
  one server; timed from the first spawn until all clients reported back (monitor +
  ``Down``, or a "done" message). Unit ``calls/s``; return the total actually made.
- ``restart(n)``: one_for_one supervisor with one worker (a gen_server answering
  ``"ping"``); n times: kill it (untrappable ``kill``), then fetch the new child from the
  supervisor (``which_children``) — retrying while it still returns the old pid — and
  call it until it answers. Unit ``us/restart``.
"""

from __future__ import annotations

import time
from typing import Any

from bench._measure import (
    RING_SIZE,
    NotYet,
    Result,
    Workload,
    micros_each,
    per_second,
    rss_bytes,
)

UNAVAILABLE: str | None = None
try:
    import otp
    from otp.process import Down, receive, send, spawn_monitor
    from otp.process import self as self_pid
    from otp.process import spawn as spawn_process
except ImportError as exc:
    UNAVAILABLE = f"otp not importable yet ({exc})"


def _exit_at_once() -> None:
    return None


def spawn(n: int) -> Result:
    def main() -> float:
        perf = time.perf_counter
        t0 = perf()
        for _ in range(n):
            spawn_monitor(_exit_at_once)
        for _ in range(n):
            receive(Down)
        return perf() - t0

    return per_second(n, otp.run(main)), "procs/s", n


def _ponger() -> None:
    while True:
        msg = receive()
        if msg == "stop":
            return
        send(msg[1], "pong")


def ping_pong(n: int) -> Result:
    def main() -> float:
        ponger = spawn_process(_ponger)
        ping = ("ping", self_pid())
        perf = time.perf_counter
        t0 = perf()
        for _ in range(n):
            send(ponger, ping)
            receive()
        elapsed = perf() - t0
        send(ponger, "stop")
        return elapsed

    return micros_each(n, otp.run(main)), "us/round_trip", n


def _ring_node(parent: Any) -> None:
    nxt = receive()  # first message: the next pid in the ring
    while True:
        token = receive()
        if token > 0:
            send(nxt, token - 1)
        elif token == 0:
            send(parent, "done")
        else:
            return


def ring(n: int) -> Result:
    def main() -> float:
        me = self_pid()
        nodes = [spawn_process(_ring_node, me) for _ in range(RING_SIZE)]
        for i, pid in enumerate(nodes):
            send(pid, nodes[(i + 1) % RING_SIZE])
        perf = time.perf_counter
        t0 = perf()
        send(nodes[0], n)
        receive()
        elapsed = perf() - t0
        for pid in nodes:
            send(pid, -1)
        return elapsed

    return per_second(n, otp.run(main)), "hops/s", n


def memory(n: int) -> Result:
    started = [0]

    def blocked(parent: Any) -> None:
        started[0] += 1
        if started[0] == n:
            send(parent, "all blocked")  # the last one to start tells the parent
        receive()

    def main() -> float:
        me = self_pid()
        before = rss_bytes()
        pids = [spawn_process(blocked, me) for _ in range(n)]
        receive()
        after = rss_bytes()
        for pid in pids:
            send(pid, "stop")
        return (after - before) / n

    return otp.run(main), "bytes/process", n


_GEN_SERVER = "needs otp.gen_server / otp.supervisor (see this module's docstring)"

WORKLOADS: dict[str, Workload] = {
    "spawn": spawn,
    "ping_pong": ping_pong,
    "ring": ring,
    "memory": memory,
    "call": NotYet(_GEN_SERVER),
    "cast": NotYet(_GEN_SERVER),
    "many_clients": NotYet(_GEN_SERVER),
    "restart": NotYet(_GEN_SERVER),
}
