"""The docs/benchmarks.md workloads against this project's public API (``otp``, ``otp.process``).

Each function starts a fresh node with ``otp.run`` and times the workload inside the
main process; it leaves no process behind (every process it spawned has ended or been
told to stop before ``main`` returns), so it works whether or not ``otp.run`` waits for
the node to drain.

The server workloads (``call``, ``cast``, ``many_clients``, ``restart``) use
``otp.gen_server`` and ``otp.supervisor`` and follow the gevent floor's definitions: the
final sync call of ``cast`` is timed; ``many_clients`` is 1000 clients sharing ``n``
calls; ``restart`` kills the worker with ``kill`` and waits until the supervisor reports
a new pid that answers a call.
"""

from __future__ import annotations

import time
from typing import Any

from bench._measure import (
    CLIENTS,
    RING_SIZE,
    Result,
    Workload,
    micros_each,
    per_second,
    rss_bytes,
)

UNAVAILABLE: str | None = None
try:
    import otp
    from otp.process import Down, Pid, receive, send, spawn_monitor
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


# ---------------------------------------------------------------- server workloads


def _server_module() -> Any:
    from otp import gen_server

    class Counter(gen_server.GenServer):
        """("incr" | "get") calls, "incr" casts: the floor's counter, as a gen_server."""

        def init(self, arg: Any) -> Any:
            return gen_server.Ok(0)

        def handle_call(self, request: Any, from_: Any, state: int) -> Any:
            if request == "incr":
                state += 1
            return gen_server.Reply(state, state)

        def handle_cast(self, request: Any, state: int) -> Any:
            return gen_server.NoReply(state + 1)

    return gen_server, Counter


def call(n: int) -> Result:
    gen_server, counter = _server_module()

    def main() -> float:
        srv = gen_server.start_link(counter)
        do_call = gen_server.call
        perf = time.perf_counter
        t0 = perf()
        for _ in range(n):
            do_call(srv, "incr")
        elapsed = perf() - t0
        assert do_call(srv, "get") == n
        gen_server.stop(srv)
        return elapsed

    return micros_each(n, otp.run(main)), "us/call", n


def cast(n: int) -> Result:
    gen_server, counter = _server_module()

    def main() -> float:
        srv = gen_server.start_link(counter)
        do_cast = gen_server.cast
        perf = time.perf_counter
        t0 = perf()
        for _ in range(n):
            do_cast(srv, "incr")
        count = gen_server.call(srv, "get")
        elapsed = perf() - t0
        assert count == n, count
        gen_server.stop(srv)
        return elapsed

    return per_second(n, otp.run(main)), "casts/s", n


def many_clients(n: int) -> Result:
    gen_server, counter = _server_module()
    per_client = max(1, n // CLIENTS)
    total = per_client * CLIENTS

    def client(srv: Any, parent: Any) -> None:
        do_call = gen_server.call
        for _ in range(per_client):
            do_call(srv, "incr")
        send(parent, "done")

    def main() -> float:
        srv = gen_server.start_link(counter)
        me = self_pid()
        perf = time.perf_counter
        t0 = perf()
        for _ in range(CLIENTS):
            spawn_process(client, srv, me)
        for _ in range(CLIENTS):
            receive()
        elapsed = perf() - t0
        assert gen_server.call(srv, "get") == total
        gen_server.stop(srv)
        return elapsed

    return per_second(total, otp.run(main)), "calls/s", total


def restart(n: int) -> Result:
    from otp import gen_server, supervisor
    from otp.process import exit as exit_signal

    class Worker(gen_server.GenServer):
        def init(self, arg: Any) -> Any:
            return gen_server.Ok(None)

        def handle_call(self, request: Any, from_: Any, state: Any) -> Any:
            return gen_server.Reply("pong", state)

    class Sup(supervisor.Supervisor):
        def init(self, arg: Any) -> Any:
            flags = supervisor.SupFlags(strategy="one_for_one", intensity=n + 10, period=3600.0)
            spec = supervisor.ChildSpec(id="worker", start=(gen_server.start_link, (Worker,)))
            return flags, [spec]

    def child(sup: Any) -> Any:
        return supervisor.which_children(sup)[0].pid

    def main() -> float:
        sup = supervisor.start_link(Sup)
        pid = child(sup)
        assert gen_server.call(pid, "ping") == "pong"
        perf = time.perf_counter
        t0 = perf()
        for _ in range(n):
            exit_signal(pid, "kill")
            new = child(sup)
            while new == pid or not isinstance(new, Pid):  # not restarted yet
                new = child(sup)
            gen_server.call(new, "ping")
            pid = new
        elapsed = perf() - t0
        supervisor.stop(sup)
        return elapsed

    return micros_each(n, otp.run(main)), "us/restart", n


def _patched(name: str, module: str) -> Workload:
    """A workload that does real I/O (disc tables, chat sockets): gevent's
    monkey-patching first, as every otp entry point does."""

    def run(n: int) -> Result:
        import importlib

        otp.patch()
        return importlib.import_module(module).__dict__[name](n)  # type: ignore[no-any-return]

    run.__name__ = name
    return run


def _dist_codec(n: int) -> Result:
    from bench.dist_workloads import dist_codec

    return dist_codec(n)


def _dist_pair(name: str) -> Workload:
    def run(n: int) -> Result:
        from bench.dist_workloads import OTPY_PAIR_WORKLOADS

        return OTPY_PAIR_WORKLOADS[name](n)

    run.__name__ = name
    return run


WORKLOADS: dict[str, Workload] = {
    "table_dirty_write": _patched("table_dirty_write", "bench.tables_quick"),
    "table_tx_write": _patched("table_tx_write", "bench.tables_quick"),
    "table_disc_tx": _patched("table_disc_tx", "bench.tables_quick"),
    "table_repl_tx": _patched("table_repl_tx", "bench.tables_repl"),
    "chat_memory": _patched("chat_memory", "bench.chat_workloads"),
    "chat_throughput": _patched("chat_throughput", "bench.chat_workloads"),
    "chat_latency": _patched("chat_latency", "bench.chat_workloads"),
    "chat_offline_drain": _patched("chat_offline_drain", "bench.chat_workloads"),
    "chat_media": _patched("chat_media", "bench.media_bench"),
    "chat_media_download": _patched("chat_media_download", "bench.media_bench"),
    "chat_media_p99": _patched("chat_media_p99", "bench.media_bench"),
    "spawn": spawn,
    "ping_pong": ping_pong,
    "ring": ring,
    "memory": memory,
    "call": call,
    "cast": cast,
    "many_clients": many_clients,
    "restart": restart,
    "dist_codec": _dist_codec,
    "dist_ping_pong": _dist_pair("dist_ping_pong"),
    "dist_call": _dist_pair("dist_call"),
    "dist_throughput": _dist_pair("dist_throughput"),
}
