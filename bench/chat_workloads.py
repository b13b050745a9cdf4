"""The chat workloads in the harness's shape (``WORKLOADS: name -> fn(n) -> Result``),
registered for the ``otp`` system in ``bench/registry.py`` (``make bench ONLY=chat``).

Each call starts its own server and load generators (see ``bench/chat_bench.py``).
``chat_throughput`` and ``chat_latency`` each run the whole stepped traffic bench and
report one figure of it: every measurement runs in a fresh process, so they cannot
share a run (the harness keeps one result per measurement).
"""

from __future__ import annotations

import tempfile

from bench.chat_bench import STEPS, bench_drain, bench_memory, bench_traffic

Result = tuple[float, str, int]


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
