"""The replicated-tables workload of docs/benchmarks.md: ``table_repl_tx``.

100 writer processes spread over 3 otpy nodes (OS processes on this machine), n
transactions in all, one write each, on a ``disc_copies`` table replicated on all three;
the log is a real 3-member etcd on loopback (every commit on a majority of etcd's
disks before it counts). Figure: commits/s over the whole run (first start to last
acknowledgement, the nodes' clocks are this machine's); p50/p99 of the commit latency
(a transaction call's duration) go to stderr as ``#`` lines.

    .venv/bin/python -m bench.worker table_repl_tx otp 20000

Needs the ``etcd`` binary (Debian ``etcd-server``); without it the workload fails
saying so.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import threading
from typing import Any

Result = tuple[float, str, int]
NODES = 3
WRITERS = 100

_WRITE = """
from otp import tables
import time as _time
tables.wait_for_tables(['bench'], 30)
_lat = []
_span = []
me = self()
def _writer(base, count):
    tx = tables.transaction
    w = tables.write
    perf = _time.perf_counter
    for i in range(base, base + count):
        t = perf()
        tx(w, 'bench', (i, 'value', i))
        _lat.append(perf() - t)
    send(me, 'done')
_t0 = _time.time()
for k in range(WRITERS):
    spawn(_writer, BASE + k * PER, PER)
for _ in range(WRITERS):
    receive(lambda m: m == 'done', 600)
_span = [_t0, _time.time()]
"""


def table_repl_tx(n: int) -> Result:
    import shutil

    from otp.tables.etcd_cluster import EtcdCluster
    from otp.testing_dist import Cluster

    base = tempfile.mkdtemp(prefix="otp-repl-bench-")
    per_node = [WRITERS // NODES + (1 if i < WRITERS % NODES else 0) for i in range(NODES)]
    per = max(1, n // WRITERS)
    try:
        with EtcdCluster(f"{base}/etcd", 3) as etcd, Cluster(f"{base}/logs") as c:
            nodes = [c.otpy(f"w{i}") for i in range(NODES)]
            names = [x.name for x in nodes]
            for i, x in enumerate(nodes):
                x.exec("from otp import tables\n"
                       "tables.start_replication(endpoints=EPS, prefix='bench', "
                       "directory=DIR)", EPS=etcd.endpoints, DIR=f"{base}/n{i}", timeout=60)
            nodes[0].exec("tables.create_table('bench', attributes=('id', 'name', 'n'), "
                          "disc_copies=NAMES)", NAMES=names)
            errors: list[BaseException] = []

            def run(i: int, x: Any) -> None:
                try:
                    x.exec(_WRITE, WRITERS=per_node[i], PER=per,
                           BASE=sum(per_node[:i]) * per, timeout=900)
                except BaseException as e:
                    errors.append(e)

            pids = [x.child.os_pid for x in nodes] + [
                p for p in (etcd.pid(i) for i in range(3)) if p is not None]
            cpu0 = [_cpu(p) for p in pids]
            ts = [threading.Thread(target=run, args=(i, x)) for i, x in enumerate(nodes)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            cpu = [_cpu(p) - c for p, c in zip(pids, cpu0, strict=True)]
            if errors:
                raise errors[0]
            spans = [x.eval("_span") for x in nodes]
            lat: list[float] = []
            for x in nodes:
                lat.extend(x.eval("_lat", timeout=60))
            info = nodes[0].eval("tables.replication_info()")
            total = per * WRITERS
            size = nodes[1].eval("tables.wait_for_tables(['bench'], 60) or "
                                 "tables.table_info('bench', 'size')", timeout=90)
            assert size == total, (size, total)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    dt = max(s[1] for s in spans) - min(s[0] for s in spans)
    lat.sort()
    p50 = statistics.median(lat) * 1000
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
    print(f"# repl: {total} commits, {total / dt:.0f} commits/s, p50 {p50:.1f} ms, "
          f"p99 {p99:.1f} ms; node 0 applied {info['records']} log records "
          f"(avg {info['commits'] / max(1, info['records']):.1f} commits per etcd write); "
          f"append p50 {info['append_ms_p50']} ms, append->applied p50 "
          f"{info['watch_ms_p50']} ms",
          file=sys.stderr)
    print(f"# cpu seconds: otpy nodes {[round(c, 1) for c in cpu[:NODES]]}, etcd members "
          f"{[round(c, 1) for c in cpu[NODES:]]}, over {dt:.1f} s", file=sys.stderr)
    return total / dt, "commits/s", total


def _cpu(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    import os

    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


if __name__ == "__main__":
    import otp

    otp.patch()
    print(table_repl_tx(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000))
