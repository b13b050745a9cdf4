"""The chat workloads in the harness's shape (``WORKLOADS: name -> fn(n) -> Result``).

For ``bench/registry.py`` (owned by the harness): add ``System("chat",
"bench.chat_workloads", label="chat server")`` and these specs::

    Spec("chat_memory", "rss_per_connection", "bytes/connection", 10_000,
         "n idle logged-in connections; server RSS growth per connection"),
    Spec("chat_throughput", "delivered_rate", "msgs/s", 1_000,
         "n online users send 1:1 at stepped rates, full durable path; best p99 <= 50 ms"),
    Spec("chat_latency", "p99_latency", "ms", 1_000,
         "p99 send->receive latency at the best throughput step"),
    Spec("chat_offline_drain", "drain_rate", "msgs/s", 1_000,
         "n users x 100 queued messages log in at once; msgs/s until drained"),

(``ms`` is lower-is-better: the harness's rule only knows ``us``/``bytes`` prefixes.)
Each call starts its own server and load generators (see ``bench/chat_bench.py``).
"""

from __future__ import annotations

import tempfile

from bench.chat_bench import bench_drain, bench_memory, bench_traffic

Result = tuple[float, str, int]

STEPS = [500, 1000, 2000, 3000, 4000, 5000, 6000, 8000]


def _traffic(n: int) -> list[dict[str, object]]:
    with tempfile.TemporaryDirectory(prefix="chat-bench-") as d:
        return bench_traffic(n, STEPS, 4.0, d)


def chat_memory(n: int) -> Result:
    with tempfile.TemporaryDirectory(prefix="chat-bench-") as d:
        r = bench_memory(n, d)[0]
    return float(r["value"]), "bytes/connection", int(r["n"])  # type: ignore[arg-type]


def chat_throughput(n: int) -> Result:
    r = _traffic(n)[0]
    return float(r["value"]), "msgs/s", int(r["n"])  # type: ignore[arg-type]


def chat_latency(n: int) -> Result:
    r = _traffic(n)[1]
    return float(r["value"]), "ms", int(r["n"])  # type: ignore[arg-type]


def chat_offline_drain(n: int) -> Result:
    with tempfile.TemporaryDirectory(prefix="chat-bench-") as d:
        r = bench_drain(n, 100, d)[0]
    return float(r["value"]), "msgs/s", int(r["n"])  # type: ignore[arg-type]


WORKLOADS = {
    "chat_memory": chat_memory,
    "chat_throughput": chat_throughput,
    "chat_latency": chat_latency,
    "chat_offline_drain": chat_offline_drain,
}
