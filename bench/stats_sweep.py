"""What one ``otp.stats`` sample costs: N processes (one in ten with a message queued),
sampled a few times; prints the wall time of a whole sweep and of its longest slice
(the longest the sampler holds the hub), per chunk size.

    .venv/bin/python -m bench.stats_sweep 100000 [--freeze]

``--freeze``: ``gc.freeze()`` once the processes exist, as a release does (``node.gc``):
otherwise a full collection of 100 000 greenlets may land in a slice.
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
    if freeze:  # what a release does once started (node.gc.freeze in its config)
        gc.freeze()
    for chunk in (1000, 2000, 5000, n):
        s = stats.Sampler(chunk=chunk)
        sweeps, slices = [], []
        for i in range(6):
            for pid in pids[i::50]:
                send(pid, i)  # some traffic between samples
            st = s.sweep(pause=lambda: None)
            sweeps.append(st.sweep_time)
            slices.append(st.max_slice)
        print(f"{n} processes{' (gc frozen)' if freeze else ''}, chunk {chunk:>6}: sweep {statistics.median(sweeps) * 1e3:6.1f} ms, "
              f"longest slice {statistics.median(slices) * 1e3:5.2f} ms (median of 6)")
    for pid in pids:
        exit_proc(pid, "kill")


if __name__ == "__main__":
    otp.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 100_000, "--freeze" in sys.argv)
