"""Helpers shared by every system module: the result type, RSS, fixed workload shapes.

Every workload callable has the signature ``fn(n) -> Result`` where ``Result`` is
``(value, unit, n)``: the measured figure, its unit (must equal the unit the registry
declares for the workload) and the size actually run (a system may run a smaller ``n``
than asked when the full size would take too long; it reports that honestly).

The callable times only the workload itself with ``time.perf_counter`` — never
interpreter start-up, imports, or tearing down what it built.
"""

from __future__ import annotations

import gc
import os
import resource
import sys
from collections.abc import Callable

Result = tuple[float, str, int]
Workload = Callable[[int], Result]

# Fixed shapes of the workloads (docs/benchmarks.md); ``n`` is the size that scales.
RING_SIZE = 1000  # ring: processes in the ring; n = total hops
CLIENTS = 1000  # many_clients: client processes; n = total calls (n // CLIENTS each)

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """Resident set size of this process now, after a full collection.

    Linux: /proc/self/statm (current RSS). Elsewhere: ru_maxrss (peak RSS), which is
    good enough for a "before/after growing" difference.
    """
    gc.collect()
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def per_second(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def micros_each(count: int, seconds: float) -> float:
    return seconds * 1e6 / count if count else float("nan")


class NotYet:
    """Placeholder for a workload a system will implement later; reported as n/a.

    The harness recognises it without starting a worker, so a registry entry like
    ``"call": NotYet("gen_server not written yet")`` costs nothing per run.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __call__(self, n: int) -> Result:
        raise NotImplementedError(self.reason)

    def __repr__(self) -> str:
        return f"NotYet({self.reason!r})"
