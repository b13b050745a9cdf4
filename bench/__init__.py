"""Benchmarks: this project's processes side by side with the floors, in one run.

Run ``python -m bench`` (or ``make bench``); see ``bench/README.md``. The pieces:

- ``bench.registry``: the workloads of docs/benchmarks.md (unit, size, what "better" means) and the
  systems (``otp`` and the floors), each a module with a ``WORKLOADS`` dict.
- ``bench.worker``: runs ONE measurement in a fresh interpreter and prints one JSON line.
- ``bench.harness``: plans the rounds, runs the workers, prints tables, appends
  ``bench/results.jsonl``.
- ``bench.floor_greenlet``, ``bench.floor_gevent``, ``bench.floor_pykka``: the floors.
- ``bench.otp_workloads``: the same workloads against ``otp``'s public API.

Only the harness and the workers live here; no test imports this package, and ``make
test`` never runs it.
"""
