"""Quick bench of the table workloads of docs/benchmarks.md, next to their floors, in one run.

    .venv/bin/python -m bench.tables_quick                 # 3 interleaved rounds
    .venv/bin/python -m bench.tables_quick --rounds 1 --n 20000
    .venv/bin/python -m bench.tables_quick --json          # one JSON line per result

Workloads (each a ``fn(n) -> (value, unit, n)`` like ``bench/otp_workloads.py``):

- ``table_dirty_write`` (otp): n ``dirty_write`` of one record each to a ram set table.
  Floors: ``dict`` (n ``d[key] = record``) and ``gevent_owner`` (one call per write to
  a greenlet owning the dict: ``Queue`` in, ``AsyncResult`` back).
- ``table_tx_write`` (otp): n transactions of one ``write`` each, ram table.
- ``table_disc_tx`` (otp): 100 writer processes, n transactions in all, one record each,
  on a disc table; each acknowledged only after its fsync (group commit).

Bars (docs/benchmarks.md): dirty ≥ 0.08× dict; ram tx ≥ 35 k/s; disc tx ≥ 30 k commits/s.
Every process run imports fresh (each measurement in a subprocess), like bench.worker.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

Result = tuple[float, str, int]
WRITERS = 100


def _records(n: int) -> list[tuple[int, str, int]]:
    return [(i, "value", i) for i in range(n)]


def dict_write(n: int) -> Result:
    recs = _records(n)
    d: dict[Any, Any] = {}
    perf = time.perf_counter
    t0 = perf()
    for r in recs:
        d[r[0]] = r
    dt = perf() - t0
    assert len(d) == n
    return n / dt, "writes/s", n


def gevent_owner_write(n: int) -> Result:
    import gevent
    from gevent.event import AsyncResult
    from gevent.queue import Queue

    recs = _records(n)
    inbox: Queue = Queue()

    def owner() -> None:
        d: dict[Any, Any] = {}
        while True:
            msg = inbox.get()
            if msg is None:
                return
            rec, reply = msg
            d[rec[0]] = rec
            reply.set(True)

    g = gevent.spawn(owner)
    perf = time.perf_counter
    t0 = perf()
    for r in recs:
        ar = AsyncResult()
        inbox.put((r, ar))
        ar.get()
    dt = perf() - t0
    inbox.put(None)
    g.join()
    return n / dt, "writes/s", n


def table_dirty_write(n: int) -> Result:
    import otp
    from otp import tables

    def main() -> float:
        R = tables.create_table("bench", attributes=("id", "name", "n"))
        recs = [R._make(r) for r in _records(n)]  # type: ignore[attr-defined]
        dw = tables.dirty_write
        perf = time.perf_counter
        t0 = perf()
        for r in recs:
            dw("bench", r)
        dt = perf() - t0
        assert tables.table_info("bench").size == n
        return dt

    return n / otp.run(main), "writes/s", n


def table_tx_write(n: int) -> Result:
    import otp
    from otp import tables

    def main() -> float:
        R = tables.create_table("bench", attributes=("id", "name", "n"))
        recs = [R._make(r) for r in _records(n)]  # type: ignore[attr-defined]
        tx = tables.transaction
        w = tables.write
        perf = time.perf_counter
        t0 = perf()
        for r in recs:
            tx(w, "bench", r)
        dt = perf() - t0
        assert tables.table_info("bench").size == n
        return dt

    return n / otp.run(main), "writes/s", n


def table_disc_tx(n: int) -> Result:
    import otp
    from otp import tables
    from otp.process import Down, receive, spawn_monitor

    d = tempfile.mkdtemp(prefix="otp-tables-bench-")
    per = n // WRITERS

    def writer(base: int) -> None:
        tx = tables.transaction
        w = tables.write
        for i in range(base, base + per):
            tx(w, "bench", (i, "value", i))

    def main() -> tuple[float, dict[str, Any]]:
        tables.start(d)
        tables.create_table("bench", attributes=("id", "name", "n"), copies="disc")
        perf = time.perf_counter
        t0 = perf()
        for k in range(WRITERS):
            spawn_monitor(writer, k * per)
        for _ in range(WRITERS):
            down = receive(Down)
            assert down.reason == "normal", down.reason
        dt = perf() - t0
        info = tables.system_info()
        assert tables.table_info("bench").size == per * WRITERS
        tables.stop()
        return dt, info

    try:
        dt, info = otp.run(main)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    total = per * WRITERS
    print(f"# disc: {info['commits']} commits in {info['group_commits']} group commits "
          f"(avg batch {info['commits'] / max(1, info['group_commits']):.1f})",
          file=sys.stderr)
    return total / dt, "commits/s", total


def sqlite_group(n: int) -> Result:
    """The disc floor: raw sqlite3 (WAL, synchronous=FULL) committing batches of
    ``WRITERS`` pickled rows, one fsync per batch, from one thread: what group commit
    of 100 writers costs on this disk with no framework at all."""
    import os
    import pickle
    import sqlite3

    d = tempfile.mkdtemp(prefix="otp-tables-floor-")
    try:
        conn = sqlite3.connect(os.path.join(d, "f.sqlite"), isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE t(rid INTEGER PRIMARY KEY, val BLOB)")
        recs = _records(n)
        perf = time.perf_counter
        t0 = perf()
        for b in range(0, n, WRITERS):
            rows = [(r[0], pickle.dumps(r)) for r in recs[b:b + WRITERS]]
            conn.execute("BEGIN")
            conn.executemany("INSERT OR REPLACE INTO t VALUES (?, ?)", rows)
            conn.execute("COMMIT")
        dt = perf() - t0
        conn.close()
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return n / dt, "commits/s", n


WORKLOADS = {
    ("table_dirty_write", "dict"): dict_write,
    ("table_dirty_write", "gevent_owner"): gevent_owner_write,
    ("table_dirty_write", "otp"): table_dirty_write,
    ("table_tx_write", "otp"): table_tx_write,
    ("table_disc_tx", "sqlite_group"): sqlite_group,
    ("table_disc_tx", "otp"): table_disc_tx,
}

SIZES = {"table_dirty_write": 100_000, "table_tx_write": 100_000, "table_disc_tx": 100_000}


def _one(workload: str, system: str, n: int) -> Result:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.tables_quick", "--worker", workload, system, str(n)],
        capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{workload}/{system} failed: {proc.stderr.strip()[-500:]}")
    sys.stderr.write("".join(ln + "\n" for ln in proc.stderr.splitlines() if ln.startswith("#")))
    v, unit, got = json.loads(proc.stdout.strip().splitlines()[-1])
    return float(v), str(unit), int(got)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--n", type=int, default=None, help="size for every workload")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--worker", nargs=3, metavar=("WORKLOAD", "SYSTEM", "N"))
    args = ap.parse_args(argv)
    if args.worker:
        import otp

        otp.patch()
        w, s, n = args.worker
        print(json.dumps(WORKLOADS[(w, s)](int(n))))
        return 0
    results: dict[tuple[str, str], list[float]] = {k: [] for k in WORKLOADS}
    units: dict[tuple[str, str], str] = {}
    keys = list(WORKLOADS)
    for rnd in range(args.rounds):
        order = keys[rnd % len(keys):] + keys[:rnd % len(keys)]
        for w, s in order:
            v, unit, _ = _one(w, s, args.n or SIZES[w])
            results[(w, s)].append(v)
            units[(w, s)] = unit
    med = {k: statistics.median(v) for k, v in results.items()}
    dict_rate = med[("table_dirty_write", "dict")]
    owner_rate = med[("table_dirty_write", "gevent_owner")]
    print(f"{'workload':<20} {'system':<14} {'median':>12} {'unit':<10} {'×dict':>7} "
          f"{'×owner':>7}  rounds")
    for (w, s), vals in results.items():
        m = med[(w, s)]
        print(f"{w:<20} {s:<14} {m:>12,.0f} {units[(w, s)]:<10} {m / dict_rate:>7.3f} "
              f"{m / owner_rate:>7.2f}  " + " ".join(f"{v:,.0f}" for v in vals))
        if args.json:
            print(json.dumps({"workload": w, "system": s, "value": m, "unit": units[(w, s)],
                              "rounds": vals}))
    dirty = med[("table_dirty_write", "otp")]
    tx = med[("table_tx_write", "otp")]
    disc = med[("table_disc_tx", "otp")]
    print()
    print(f"bar table_dirty_write >= 0.08x dict: {dirty / dict_rate:.3f}x "
          f"({'ok' if dirty / dict_rate >= 0.08 else 'MISSED'}); goal 0.5x Mnesia (535 k/s): "
          f"{dirty / 1_070_000:.2f}x Mnesia")
    print(f"bar table_tx_write >= 35 k/s: {tx / 1000:.1f} k/s "
          f"({'ok' if tx >= 35_000 else 'MISSED'}); {tx / owner_rate:.2f}x gevent owner; "
          f"goal Mnesia 114 k/s: {tx / 114_000:.2f}x")
    floor = med[("table_disc_tx", "sqlite_group")]
    print(f"bar table_disc_tx >= 30 k/s (fsync'd): {disc / 1000:.1f} k/s "
          f"({'ok' if disc >= 30_000 else 'MISSED'}); goal Mnesia 65 k/s: {disc / 65_000:.2f}x; "
          f"{disc / floor:.2f}x the raw sqlite group-commit floor ({floor / 1000:.1f} k/s "
          "on this disk now)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
