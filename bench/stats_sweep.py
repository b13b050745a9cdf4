"""What one ``otp.stats`` sample costs: N processes (one in ten with a message queued),
sampled a few times; prints the wall time of a whole sweep and of its longest slice
(the longest the sampler holds the hub), per chunk size.

    .venv/bin/python -m bench.stats_sweep 100000 [--freeze] [--cpu]

``--freeze``: ``gc.freeze()`` and the thresholds (10000, 4, 1000) once the processes
exist, as the chat release does (``node.gc``): otherwise the collections that the
sampler's allocations trigger (10-20 ms each at this size) land in its slices. ``--cpu``: the
sampler's clock is the thread's CPU time, not the wall clock (on a machine shared with
other jobs, a slice's wall time includes the time the OS ran someone else).
"""

from __future__ import annotations

import gc
import statistics
import sys

import otp

otp.patch()

from otp import stats  # noqa: E402
from otp.process import exit as exit_proc  # noqa: E402
from otp.process import receive, send, spawn  # noqa: E402


def _parked() -> None:
    receive("never")


def main(n: int, freeze: bool) -> None:
    pids = [spawn(_parked) for _ in range(n)]
    for pid in pids[::10]:
        send(pid, "x")
    if freeze:  # what a release does once started (node.gc in config/prod.yaml)
        gc.freeze()
        gc.set_threshold(10000, 4, 1000)
    for chunk in (1000, 2000, 5000, n):
        s = stats.Sampler(chunk=chunk)
        sweeps, slices = [], []
        for i in range(6):
            for pid in pids[i::50]:
                send(pid, i)  # some traffic between samples
            st = s.sweep(pause=lambda: None)
            sweeps.append(st.sweep_time)
            slices.append(st.max_slice)
        how = (" (gc frozen)" if freeze else "") + (" cpu" if "--cpu" in sys.argv else "")
        print(f"{n} processes{how}, chunk {chunk:>6}: "
              f"sweep {statistics.median(sweeps) * 1e3:6.1f} ms, "
              f"longest slice {statistics.median(slices) * 1e3:5.2f} ms (median of 6)")
    for pid in pids:
        exit_proc(pid, "kill")


if __name__ == "__main__":
    if "--cpu" in sys.argv:
        import time

        stats.time = type("_CpuClock", (), {"perf_counter": staticmethod(time.thread_time)})
    otp.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 100_000, "--freeze" in sys.argv)
