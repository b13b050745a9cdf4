"""Run ONE measurement in this (fresh) interpreter and print one JSON line.

    python -m bench.worker WORKLOAD SYSTEM N

Prints ``{"workload", "system", "metric", "value", "unit", "n", "seconds"}`` on the last
line of stdout and exits 0; or ``{"status": "n/a", "reason": ...}`` and exits 3 when the
system cannot run the workload; a crash prints a traceback to stderr and exits 1.

One measurement per process keeps RSS, the garbage collector and the allocator's arenas
of one measurement out of the next, and keeps start-up out of the timed region (the
workload callable times itself). The process ends with ``os._exit`` so tearing down
100k suspended greenlets or a thousand actor threads costs nothing and cannot hang.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
import traceback

EXIT_NA = 3


def _emit(obj: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        sys.stderr.write("usage: python -m bench.worker WORKLOAD SYSTEM N\n")
        return 2
    workload, system_name, n_text = argv
    n = int(n_text)

    from bench.registry import SPECS, SYSTEMS

    spec = SPECS[workload]
    system = SYSTEMS[system_name]
    if system.monkey_patch:
        # Must precede every other import of threading/queue/socket users (pykka).
        from gevent import monkey

        monkey.patch_all()

    import importlib

    from bench._measure import NotYet

    module = importlib.import_module(system.module)
    reason = getattr(module, "UNAVAILABLE", None)
    fn = getattr(module, system.attr).get(workload)
    if reason or fn is None or isinstance(fn, NotYet):
        why = reason or (fn.reason if isinstance(fn, NotYet) else "no implementation")
        _emit({"status": "n/a", "reason": why})
        return EXIT_NA

    gc.collect()
    started = time.perf_counter()
    value, unit, n_done = fn(n)
    seconds = time.perf_counter() - started
    if unit != spec.unit:
        raise ValueError(f"{system.module}.{workload} returned unit {unit!r}, "
                         f"expected {spec.unit!r}")
    _emit({
        "workload": workload,
        "system": system_name,
        "metric": spec.metric,
        "value": value,
        "unit": unit,
        "n": n_done,
        "seconds": round(seconds, 3),  # wall time incl. set-up/teardown, for the log
    })
    return 0


if __name__ == "__main__":
    try:
        code = main(sys.argv[1:])
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        code = 1
    sys.stdout.flush()
    os._exit(code)
