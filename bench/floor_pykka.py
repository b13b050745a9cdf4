"""Peer: Pykka ``ThreadingActor`` — as system ``pykka`` (OS threads) and as
``pykka_gevent`` (the same code; the worker runs ``gevent.monkey.patch_all()`` first, so
threads, queues and events are greenlets).

Calls are ``ActorRef.ask`` (blocking on the reply future), casts ``ActorRef.tell``;
ping_pong is two actors telling each other. Under real threads each message costs a
thread hand-off (~50 µs on the reference machine), so that variant runs a smaller ``n``
where the full size would only burn time, and reports the ``n`` it ran.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

from bench._measure import CLIENTS, Result, micros_each, per_second

UNAVAILABLE: str | None = None
try:
    import pykka
except ImportError as exc:  # optional peer
    UNAVAILABLE = f"pykka not installed ({exc})"


def _patched() -> bool:
    if "gevent.monkey" not in sys.modules:
        return False
    from gevent import monkey

    return bool(monkey.is_module_patched("threading"))


# Largest n per workload under OS threads (a few seconds each on the reference machine).
THREAD_CAPS = {"ping_pong": 50_000, "call": 50_000, "many_clients": 20_000}


def _size(workload: str, n: int) -> int:
    return n if _patched() else min(n, THREAD_CAPS.get(workload, n))


if UNAVAILABLE is None:

    class Counter(pykka.ThreadingActor):
        def __init__(self) -> None:
            super().__init__()
            self.count = 0

        def on_receive(self, message: Any) -> Any:
            if message == "incr":
                self.count += 1
                return self.count
            if message == "get":
                return self.count
            raise ValueError(f"Counter: unexpected message {message!r}")

    class Ponger(pykka.ThreadingActor):
        def on_receive(self, message: Any) -> Any:
            message[1].tell("pong")

    class Pinger(pykka.ThreadingActor):
        def __init__(self, ponger: Any, rounds: int, done: threading.Event) -> None:
            super().__init__()
            self.ponger = ponger
            self.left = rounds
            self.done = done
            self.ping: tuple[str, Any] = ("ping", None)

        def on_start(self) -> None:
            self.ping = ("ping", self.actor_ref)

        def on_receive(self, message: Any) -> Any:  # "start" or "pong"
            if self.left == 0:
                self.done.set()
                return
            self.left -= 1
            self.ponger.tell(self.ping)

    class Client(pykka.ThreadingActor):
        def __init__(self, server: Any, calls: int) -> None:
            super().__init__()
            self.server = server
            self.calls = calls

        def on_receive(self, message: Any) -> Any:  # "go"
            ask = self.server.ask
            for _ in range(self.calls):
                ask("incr")
            return "done"


def ping_pong(n: int) -> Result:
    n = _size("ping_pong", n)
    done = threading.Event()
    try:
        ponger = Ponger.start()
        pinger = Pinger.start(ponger, n, done)
        perf = time.perf_counter
        t0 = perf()
        pinger.tell("start")
        done.wait()
        t1 = perf()
    finally:
        pykka.ActorRegistry.stop_all()
    return micros_each(n, t1 - t0), "us/round_trip", n


def call(n: int) -> Result:
    n = _size("call", n)
    try:
        server = Counter.start()
        ask = server.ask
        perf = time.perf_counter
        t0 = perf()
        for _ in range(n):
            ask("incr")
        t1 = perf()
        assert server.ask("get") == n
    finally:
        pykka.ActorRegistry.stop_all()
    return micros_each(n, t1 - t0), "us/call", n


def cast(n: int) -> Result:
    n = _size("cast", n)
    try:
        server = Counter.start()
        tell = server.tell
        perf = time.perf_counter
        t0 = perf()
        for _ in range(n):
            tell("incr")
        count = server.ask("get")
        t1 = perf()
        assert count == n, count
    finally:
        pykka.ActorRegistry.stop_all()
    return per_second(n, t1 - t0), "casts/s", n


def many_clients(n: int) -> Result:
    n = _size("many_clients", n)
    per_client = max(1, n // CLIENTS)
    total = per_client * CLIENTS
    try:
        server = Counter.start()
        perf = time.perf_counter
        t0 = perf()
        clients = [Client.start(server, per_client) for _ in range(CLIENTS)]
        pykka.get_all([c.ask("go", block=False) for c in clients])
        t1 = perf()
        assert server.ask("get") == total
    finally:
        pykka.ActorRegistry.stop_all()
    return per_second(total, t1 - t0), "calls/s", total


WORKLOADS = {
    "ping_pong": ping_pong,
    "call": call,
    "cast": cast,
    "many_clients": many_clients,
}
