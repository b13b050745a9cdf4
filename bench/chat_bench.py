"""The chat benchmarks: ``chat_memory``, ``chat_throughput``/``chat_latency``,
``chat_offline_drain`` (docs/benchmarks.md).

::

    .venv/bin/python -m bench.chat_bench                      # all three, full size
    .venv/bin/python -m bench.chat_bench --only chat_memory --idle 19000
    .venv/bin/python -m bench.chat_bench --quick              # small sizes (smoke test)

How it runs: the server is ``python -m chat`` in its own OS process (a fresh data
directory, ``durability: full`` — every group commit fsync'd), started once per
workload. Users are provisioned through the documented admin path (``admin_provision``
with the bench's ``admin_token``, docs/protocol.md). The load comes from
``bench/chat_load.py`` processes (gevent, raw protocol, 127.0.0.x source addresses, at
most 5 000 connections each, since a process may hold 20 000 fds). The server's RSS and
CPU time come from ``/proc``: the server's process *and its children* (the store
process, ``store_process: true``), summed.

- ``chat_memory``: ``--idle`` (19 000: a process may hold 20 000 file descriptors here,
  and the server needs a few for itself) logged-in idle connections; server RSS growth per
  connection (``bytes/connection``), sampled once the idle users' processes stopped
  (``idle_stop`` 2 s here; the connections stay, as a phone's would).
- ``chat_throughput`` / ``chat_latency``: 1 000 online users send 1:1 to random online
  users at stepped offered rates (after an unreported warm-up step that starts the
  user processes), the full durable path with ``sent`` and ``delivered`` receipts and
  device acks; per step: delivered msgs/s, p50/p99 send→receive latency,
  server CPU µs per message; stops after the knee (delivered < 90 % of offered, or
  p99 > 250 ms). The reported throughput is the best step whose p99 ≤ 50 ms.
- ``chat_offline_drain``: 1 000 users × 100 queued messages log in at once; msgs/s
  until all are delivered and every device ack is answered (so deleted on the server,
  with the ``delivered`` receipts queued for the senders). The clock starts before the
  logins.

Results: printed as a table and appended to ``bench/results.jsonl`` as
``{"workload", "system": "otp", "metric", "value", "unit", "n"}`` lines.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

import yaml

from chat.client import Client

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKEN = "bench-admin"
PER_GEN = 5000
#: offered rates (msgs/s) of chat_throughput's steps; the run stops after the knee
STEPS = [500, 1000, 2000, 3000, 4000, 5000, 6000, 8000, 10000, 12000, 14000]


STORAGE = {"storage": "sqlite"}


class Server:
    def __init__(self, workdir: str, **over: Any) -> None:
        cfg = {"env": "test", "data_dir": os.path.join(workdir, "data"), "durability": "full",
               "listen": {"host": "127.0.0.1", "port": 0, "backlog": 4096},
               "admin_token": TOKEN,
               "limits": {"idle_timeout": 3600.0, "window": 256},
               "users": {"idle_stop": 600.0}}
        cfg.update(STORAGE)
        cfg.update(over)
        self.config = os.path.join(workdir, "chat.yaml")
        with open(self.config, "w") as f:
            yaml.safe_dump({"chat": cfg}, f)
        self.log = open(os.path.join(workdir, "server.log"), "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "chat", "--config", self.config, "--log-level", "WARNING"],
            stdout=subprocess.PIPE, stderr=self.log, cwd=ROOT)
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            text = line.decode()
            if "listening on" in text:
                self.port = int(text.split("://", 1)[1].split()[0].rsplit(":", 1)[1])
                break
        else:
            raise RuntimeError(f"the server did not start; see {workdir}/server.log")

    def pids(self) -> list[int]:
        """The server and its child processes (the store process of ``store_process``)."""
        out = [self.proc.pid]
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open(f"/proc/{d}/stat") as f:
                        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                except (OSError, ValueError, IndexError):
                    continue
                if ppid == self.proc.pid:
                    out.append(int(d))
        return out

    def rss(self) -> int:
        """RSS of the server and its children, in bytes."""
        total = 0
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1]) * 1024
            except OSError:
                pass
        return total

    def cpu(self) -> float:
        """CPU seconds of the server and its children."""
        total = 0.0
        for pid in self.pids():
            try:
                total += cpu_of(pid)
            except OSError:
                pass
        return total

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def cpu_of(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def provision(port: int, phones: list[str]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    c = Client("127.0.0.1", port, timeout=120.0)
    c.connect()
    for i in range(0, len(phones), 1000):
        chunk = phones[i : i + 1000]
        keys = c.provision(TOKEN, chunk)
        out.extend((p, k.hex()) for p, k in zip(chunk, keys, strict=True))
    c.close()
    return out


def phones(n: int, base: int = 0) -> list[str]:
    return [f"+1555{base + i:07d}" for i in range(n)]


class Gen:
    def __init__(self, mode: str, args: dict[str, Any]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.chat_load", mode], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, cwd=ROOT, text=True)
        self.cmd(json.dumps(args))

    def cmd(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def event(self, timeout: float = 600.0) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"load generator ended (exit {self.proc.wait()})")
        return json.loads(line)

    def close(self) -> None:
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _gens(mode: str, users: list[tuple[str, str]], port: int, **extra: Any) -> list[Gen]:
    gens = []
    for g, i in enumerate(range(0, len(users), PER_GEN)):
        src = [f"127.0.{g}.{j}" for j in range(2, 6)]
        gens.append(Gen(mode, {"port": port, "users": users[i : i + PER_GEN], "src": src,
                               **extra}))
    return gens


def bench_memory(n: int, workdir: str) -> list[dict[str, Any]]:
    # Steady state of idle connections: user processes stop after idle_stop seconds
    # (the connections stay), so sample after that.
    srv = Server(workdir, users={"idle_stop": 2.0})
    try:
        users = provision(srv.port, phones(n))
        base = srv.rss()
        gens = _gens("idle", users, srv.port)
        conns = sum(g.event()["connections"] for g in gens)
        time.sleep(4.0)  # bench only: past idle_stop, then sample RSS
        grown = srv.rss() - base
        for g in gens:
            g.cmd("stop")
            g.event()
            g.close()
    finally:
        srv.stop()
    per = grown / conns
    print(f"chat_memory: {conns} idle logged-in connections, server RSS +{grown / 1e6:.1f} MB"
          f" = {per:,.0f} bytes/connection (bar ≤ 25 000)")
    return [{"workload": "chat_memory", "system": "otp", "metric": "rss_per_connection",
             "value": round(per), "unit": "bytes/connection", "n": conns}]


def bench_traffic(n: int, steps: list[int], step_s: float, workdir: str
                  ) -> list[dict[str, Any]]:
    srv = Server(workdir)
    rows = []
    try:
        users = provision(srv.port, phones(n))
        warm = min(steps[0], 1000)
        gen = Gen("traffic", {"port": srv.port, "users": users, "steps": [warm, *steps],
                              "step_s": step_s, "src": ["127.0.0.2", "127.0.0.3"]})
        gen.event()  # ready
        # Warm-up step, not reported: starts the users' processes (each loads its state
        # from the store on first use), as in a server that has been running.
        gen.cmd("go")
        gen.event()
        print(f"chat_throughput: {n} online users, full durable path "
              f"(bar: ≥ 4 000 msgs/s with p99 ≤ 50 ms)")
        print(f"  {'offered/s':>9} {'delivered/s':>11} {'p50 ms':>7} {'p90 ms':>7} "
              f"{'p99 ms':>7} {'max ms':>7} {'cpu µs/msg':>10} {'receipts s/d':>13} "
              f"{'server/gen cpu %':>16}")
        for rate in steps:
            c0 = srv.cpu()
            g0 = cpu_of(gen.proc.pid)
            gen.cmd("go")
            ev = gen.event()
            cpu = srv.cpu() - c0
            gcpu = cpu_of(gen.proc.pid) - g0
            delivered = ev["received"] / ev["seconds"]
            us = cpu * 1e6 / max(1, ev["received"])
            rows.append({**ev, "delivered_per_s": delivered, "cpu_us_per_msg": us})
            print(f"  {rate:>9} {delivered:>11.0f} {ev['p50_ms']:>7.1f} "
                  f"{ev.get('p90_ms', float('nan')):>7.1f} {ev['p99_ms']:>7.1f} "
                  f"{ev.get('max_ms', float('nan')):>7.1f} "
                  f"{us:>10.0f} {ev['sent_receipts']:>6}/{ev['delivered_receipts']:<6} "
                  f"{cpu / ev['seconds'] * 100:>7.0f}/{gcpu / ev['seconds'] * 100:<7.0f}")
            if ev["received"] < 0.9 * ev["offered"] or ev["p99_ms"] > 250:
                break
        gen.cmd("stop")
        gen.close()
    finally:
        srv.stop()
    # The best step within the latency bar; if none is, the best step before the knee
    # (its p99 is reported next to it, so the miss is visible).
    kept = [r for r in rows if r["received"] >= 0.9 * r["offered"]] or rows
    good = [r for r in kept if r["p99_ms"] <= 50] or kept
    best = max(good, key=lambda r: r["delivered_per_s"])
    res = [
        {"workload": "chat_throughput", "system": "otp", "metric": "delivered_rate",
         "value": round(best["delivered_per_s"]), "unit": "msgs/s", "n": best["received"]},
        {"workload": "chat_latency", "system": "otp", "metric": "p99_latency",
         "value": round(best["p99_ms"], 2), "unit": "ms", "n": best["received"]},
        {"workload": "chat_latency", "system": "otp", "metric": "p50_latency",
         "value": round(best["p50_ms"], 2), "unit": "ms", "n": best["received"]},
        {"workload": "chat_throughput", "system": "otp", "metric": "server_cpu_per_msg",
         "value": round(best["cpu_us_per_msg"], 1), "unit": "us/msg", "n": best["received"]},
    ]
    return res


def bench_drain(n: int, per: int, workdir: str) -> list[dict[str, Any]]:
    srv = Server(workdir)
    try:
        senders = provision(srv.port, phones(n, 0))
        rcpts = provision(srv.port, phones(n, 5_000_000))
        filler = Gen("fill", {"port": srv.port, "per": per, "src": ["127.0.0.2"],
                              "pairs": [(s, k, r) for (s, k), (r, _)
                                        in zip(senders, rcpts, strict=True)]})
        ev = filler.event()
        filler.close()
        queued = ev["sent_receipts"]
        drainer = Gen("drain", {"port": srv.port, "users": rcpts, "expect": queued,
                                "src": ["127.0.0.3", "127.0.0.4"]})
        drainer.event()  # ready
        drainer.cmd("go")
        ev = drainer.event()
        drainer.close()
    finally:
        srv.stop()
    rate = ev["received"] / ev["seconds"]
    print(f"chat_offline_drain: {n} users × {per} queued = {queued} messages; "
          f"{ev['received']} delivered and acknowledged (deleted) in {ev['seconds']:.2f} s "
          f"= {rate:,.0f} msgs/s (bar ≥ 10 000); all pushed after "
          f"{ev['received_seconds']:.2f} s")
    return [{"workload": "chat_offline_drain", "system": "otp", "metric": "drain_rate",
             "value": round(rate), "unit": "msgs/s", "n": ev["received"]}]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.chat_bench")
    p.add_argument("--only", default="chat_memory chat_throughput chat_offline_drain")
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    p.add_argument("--idle", type=int, default=19_000, help="idle connections (memory)")
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--steps", default=",".join(map(str, STEPS)))
    p.add_argument("--step-seconds", type=float, default=4.0)
    p.add_argument("--per", type=int, default=100, help="queued messages per user (drain)")
    p.add_argument("--output", default=os.path.join(ROOT, "bench", "results.jsonl"))
    p.add_argument("--no-save", action="store_true")
    p.add_argument("--storage", choices=("sqlite", "tables"), default="sqlite",
                   help="the server's message store")
    a = p.parse_args(argv)
    only = a.only.replace(",", " ").split()
    STORAGE["storage"] = a.storage
    if a.quick:
        a.idle, a.users, a.per, a.step_seconds = 500, 100, 10, 2.0
        a.steps = "200,500,1000"
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="chat-bench-") as tmp:
        for name in only:
            d = os.path.join(tmp, name)
            os.makedirs(d)
            if name == "chat_memory":
                results += bench_memory(a.idle, d)
            elif name in ("chat_throughput", "chat_latency"):
                if any(r["workload"] == "chat_throughput" for r in results):
                    continue
                steps = [int(x) for x in a.steps.split(",")]
                results += bench_traffic(a.users, steps, a.step_seconds, d)
            elif name == "chat_offline_drain":
                results += bench_drain(a.users, a.per, d)
            else:
                p.error(f"unknown workload {name!r}")
    if not a.no_save:
        with open(a.output, "a") as f:
            for r in results:
                f.write(json.dumps(r) + "\n")
    for r in results:
        print(f"  {r['workload']:<20} {r['metric']:<22} {r['value']:>10} {r['unit']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
