"""Live upgrade of many user processes: how long it takes, and how long a device waits.

A chat release 0.1.0 runs as a daemon (``bin/chat daemon``, built into a temporary
directory like ``tests/test_chat_release_upgrade.py`` does, with the production GC
settings); ``--users`` registered users each get a user process (the admin path's
``registration.provision``, then ``users.ensure``, through ``bin/chat rpc``);
``--devices`` devices (this process, one thread each, the ``chat.client`` library) keep
sending to each other in a ring. Then the release handler installs 0.2.0
(``tests/chat_v2_fixture.py``: ``update chat.users`` migrates every user process's
state with ``code_change``) and downgrades back to 0.1.0, each timed inside the node.
Each device records every send's round trip (send -> the server's ack). Printed for
each operation: the time in the node, the longest round trip a device saw, the
longest any one process was held for its migration (the release handler's
``last_upgrade``), each step's time, the node's cyclic-GC passes over 20 ms, its hub
lag (how late a 5 ms sleep wakes) and its CPU share (below 1.0: the machine is
busy)::

    .venv/bin/python bench/upgrade_bench.py                 # 10 000 user processes
    .venv/bin/python bench/upgrade_bench.py --users 2000 --devices 4
    .venv/bin/python bench/upgrade_bench.py --control       # + a run that upgrades nothing
    .venv/bin/python bench/upgrade_bench.py --profile       # where the node's time goes

``--fresh N`` users log in during the run (their processes start while the release
handler works); ``--control`` first suspends, reads and resumes every user process
once, upgrading nothing, for comparison; ``--blocking`` prints the node's reports of a
process holding it over 50 ms; ``--default-gc`` keeps Python's GC thresholds.

Not part of ``make test`` or ``python -m bench``.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import itertools
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chat.client import Client  # noqa: E402
from tests.chat_v2_fixture import build_bundles, config  # noqa: E402


def _env(home: Path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("OTP_")}
    e["OTP_PYTHON"] = sys.executable
    e["HOME"] = str(home)
    e.pop("PYTHONPATH", None)
    return e


class Node:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = _env(root.parent)

    def cmd(self, *args: str, timeout: float = 600.0) -> str:
        res = subprocess.run([str(self.root / "bin" / "chat"), *args], capture_output=True,
                             text=True, timeout=timeout, env=self.env)
        if res.returncode != 0:
            raise RuntimeError(f"bin/chat {' '.join(args)[:200]}: {res.stderr}")
        return res.stdout

    def rpc(self, code: str, timeout: float = 600.0) -> Any:
        out = self.cmd("rpc", code, timeout=timeout).strip().splitlines()
        return ast.literal_eval(out[-1])


class Device:
    """Sends to ``to`` in a loop; records (start, end) of every acknowledged send."""

    def __init__(self, host: str, port: int, phone: str, key: bytes, to: str) -> None:
        self.client = Client(host, port, timeout=120.0)
        self.client.connect()
        self.client.login(phone, key)
        self.phone, self.to = phone, to
        self.sends: list[tuple[float, float]] = []
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        i = 0
        while not self.stop.is_set() and i < 10_000_000:
            t0 = time.perf_counter()
            try:
                self.client.send(self.to, f"{self.phone}#{i}")
            except Exception as e:  # reported in the figures
                self.errors.append(repr(e))
                continue
            self.sends.append((t0, time.perf_counter()))
            i += 1
            if i % 16 == 0:
                self.client.poll(0)


class Starter:
    """Logs in users whose process is not running and makes a request, so that user
    processes keep starting (during the upgrade too)."""

    def __init__(self, host: str, port: int, keys: dict[str, bytes]) -> None:
        self.host, self.port, self.keys = host, port, list(keys.items())
        self.started: list[tuple[float, float]] = []
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        for phone, key in self.keys:
            if self.stop.is_set():
                return
            t0 = time.perf_counter()
            try:
                with Client(self.host, self.port, timeout=120.0) as c:
                    c.connect()
                    c.login(phone, key)
                    c.privacy(False)  # starts the user process
            except Exception as e:
                self.errors.append(repr(e))
                continue
            self.started.append((t0, time.perf_counter()))


def _longest(devices: list[Device], start: float, end: float) -> tuple[float, int, float]:
    """The longest send round trip overlapping [start, end], the sends inside, and
    when (seconds after ``start``) that longest one began."""
    worst, n, when = 0.0, 0, 0.0
    for d in devices:
        for t0, t1 in d.sends:
            if t1 >= start and t0 <= end:
                if t1 - t0 > worst:
                    worst, when = t1 - t0, t0 - start
                n += 1
    return worst, n, when


def _gap(devices: list[Device], start: float, end: float) -> float:
    """The longest time a device went without an ack around [start, end]."""
    worst = 0.0
    for d in devices:
        ends = [t1 for _, t1 in d.sends]
        for a, b in itertools.pairwise(ends):
            if b >= start and a <= end:
                worst = max(worst, b - a)
    return worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--devices", type=int, default=8)
    ap.add_argument("--settle", type=float, default=3.0,
                    help="seconds of load before and between the operations")
    ap.add_argument("--fresh", type=int, default=3000,
                    help="users whose process is started by a login during the run")
    ap.add_argument("--default-gc", action="store_true",
                    help="the node keeps Python's GC thresholds (default: the production "
                         "config's node.gc, thresholds [10000, 4, 1000] and freeze)")
    ap.add_argument("--control", action="store_true",
                    help="first, as a control, suspend/get_state/resume every user "
                         "process once (no upgrade) and measure the same figures")
    ap.add_argument("--blocking", action="store_true",
                    help="print the node's reports of a process holding the hub > 50 ms")
    ap.add_argument("--profile", action="store_true",
                    help="print a cProfile of the node during each operation")
    args = ap.parse_args()

    base = Path(tempfile.mkdtemp(prefix="upgrade-bench-"))
    pid = None
    devices: list[Device] = []
    try:
        v1, v2 = build_bundles(base / "src", config(idle_stop=3600.0,
                                                     node_gc=not args.default_gc))
        root = base / "rel"
        root.mkdir()
        with tarfile.open(v1) as tar:
            tar.extractall(root)
        shutil.copy(v2, root / "releases" / "chat-0.2.0.tar.gz")
        node = Node(root)
        node.cmd("daemon")
        pid = int((root / "run" / "chat.pid").read_text())
        host, port = node.rpc("chat.connection.address()")

        t = time.perf_counter()
        n = node.rpc(
            "import time\n"
            "from chat import registration, users\n"
            f"phones = ['+1555%07d' % i for i in range({args.users})]\n"
            "for i in range(0, len(phones), 1000):\n"
            "    registration.provision(tuple(phones[i:i + 1000]))\n"
            "for p in phones:\n"
            "    users.ensure(p)\n"
            "print(len(otp.code.processes_running('chat.users')))")
        print(f"{n} user processes started in {time.perf_counter() - t:.1f} s")

        ring = [f"+1666{i:07d}" for i in range(args.devices)]
        admin = Client(host, port)
        admin.connect()
        keys = admin.provision("t", ring)
        admin.close()
        devices = [Device(host, port, p, k, ring[(i + 1) % len(ring)])
                   for i, (p, k) in enumerate(zip(ring, keys, strict=True))]
        fresh = [f"+1777{i:07d}" for i in range(args.fresh)]
        fresh_keys: dict[str, bytes] = {}
        admin = Client(host, port)
        admin.connect()
        for i in range(0, len(fresh), 1000):
            fresh_keys.update(zip(fresh[i:i + 1000], admin.provision("t", fresh[i:i + 1000]),
                                  strict=True))
        admin.close()
        starter = Starter(host, port, fresh_keys)
        for d in devices:
            d.thread.start()
        starter.thread.start()
        time.sleep(args.settle)  # a benchmark: let the load run (tests never do this)
        b0 = time.perf_counter()
        time.sleep(args.settle)
        b1 = time.perf_counter()
        node.cmd("unpack", "0.2.0")
        # the node's cyclic-GC passes longer than 20 ms (they pause every process)
        node.cmd("rpc", "import gc, time\n"
                        "_gcs = otp._bench_gc = []\n"
                        "_t = [0.0]\n"
                        "def _cb(phase, info):\n"
                        "    if phase == 'start':\n"
                        "        _t[0] = time.perf_counter()\n"
                        "    elif time.perf_counter() - _t[0] > 0.02:\n"
                        "        _gcs.append((info['generation'],\n"
                        "                     round(time.perf_counter() - _t[0], 3)))\n"
                        "gc.callbacks.append(_cb)\n"
                        # the hub's lag: a process asks to wake every 5 ms and records
                        # how late it wakes (GC, a process holding the hub, the OS)
                        "from otp.process import spawn, sleep\n"
                        "otp._bench_lag = [0.0]\n"
                        "def _lag():\n"
                        "    while True:\n"
                        "        t = time.perf_counter()\n"
                        "        sleep(0.005)\n"
                        "        otp._bench_lag[0] = max(otp._bench_lag[0], "
                        "time.perf_counter() - t - 0.005)\n"
                        "spawn(_lag)")
        if args.blocking:
            node.cmd("rpc", "from otp._core.fairness import BlockingMonitor\n"
                            "from otp._core.node import current_node, Process\n"
                            "n = current_node()\n"
                            "n._fairness = BlockingMonitor(n.hub.loop, 0.05, "
                            "Process.run.__code__)")
        figures: dict[str, Any] = {}
        ops = [("install", "0.2.0"), ("downgrade", "0.1.0")]
        if args.control:
            ops.insert(0, ("control", ""))
        for op, vsn in ops:
            node.rpc("otp._bench_lag.__setitem__(0, 0.0), otp._bench_gc.clear()")
            s0 = time.perf_counter()
            time.sleep(args.settle)
            lag0 = node.rpc("otp._bench_lag[0], otp._bench_lag.__setitem__(0, 0.0)")[0]
            gc0 = node.rpc("otp._bench_gc[:], otp._bench_gc.clear()")[0]
            w0, _, _ = _longest(devices, s0, time.perf_counter())
            print(f"before {op}, {args.settle} s of load: the hub's longest lag "
                  f"{lag0 * 1e3:.1f} ms, longest send round trip {w0 * 1e3:.1f} ms, "
                  f"cyclic-GC passes over 20 ms: {gc0}")
            t0 = time.perf_counter()
            run = f"otp.release_handler.{op}({str(root)!r}, {vsn!r})\n"
            if op == "control":  # the same number of system calls, no upgrade
                run = ("for p in otp.code.processes_running('chat.users'):\n"
                       "    otp.sys.suspend(p); otp.sys.get_state(p); otp.sys.resume(p)\n")
            if args.profile:
                run = ("import cProfile, pstats, io\npr = cProfile.Profile()\npr.enable()\n"
                       + run + "pr.disable()\nout = io.StringIO()\n"
                       "pstats.Stats(pr, stream=out).sort_stats('tottime').print_stats(25)\n"
                       "print(out.getvalue())\n")
            out = node.cmd("rpc", "import time\nt = time.perf_counter()\n"
                           "c = time.process_time()\n" + run
                           + "print(round((time.process_time() - c) / "
                             "(time.perf_counter() - t), 2))\n"
                           + "print(time.perf_counter() - t)")
            if args.profile:
                print(f"--- {op}\n{out}")
            inside = float(out.strip().splitlines()[-1])
            print(f"{op}: the node's CPU time / wall time meanwhile: "
                  f"{out.strip().splitlines()[-2]} (1.0: a core of its own)")
            t1 = time.perf_counter()
            migrated = node.rpc(
                "sum(1 for p in otp.code.processes_running('chat.users') "
                "if hasattr(otp.sys.get_state(p), 'upgraded_from'))")
            left_old = node.rpc("len(otp.code.processes_running('chat.users', old=True))")
            worst, sends, when = _longest(devices, t0, t1)
            rec = (f"getattr(otp.release_handler, 'last_upgrade', lambda r: None)"
                   f"({str(root)!r})")  # None on a node without it
            steps = node.rpc(f"{rec}.steps if {rec} else []")
            susp = node.rpc(f"{rec}.longest_suspension if {rec} else 0.0")
            print(f"{op}: the longest any process was suspended: {susp * 1e3:.2f} ms")
            gcs = node.rpc("otp._bench_gc[:], otp._bench_gc.clear()")[0]
            lag = node.rpc("otp._bench_lag[0], otp._bench_lag.__setitem__(0, 0.0)")[0]
            slow = sum(1 for d in devices for a, b in d.sends
                       if b >= t0 and a <= t1 and b - a > 0.1)
            print(f"{op}: the hub's longest lag (a 5 ms sleep woken late): {lag * 1e3:.1f} "
                  f"ms; sends slower than 100 ms: {slow}")
            print(f"{op}: cyclic-GC passes over 20 ms in the node: {gcs}")
            print(f"{op}: longest round trip began {when:.2f} s after the request; steps:")
            for step in steps:
                print(f"    {step}")
            figures[op] = (inside, t1 - t0, worst, _gap(devices, t0, t1), sends, migrated,
                           left_old)
        time.sleep(args.settle)
        starter.stop.set()
        for d in devices:
            d.stop.set()
        for d in devices:
            d.thread.join(120)
        starter.thread.join(120)

        base_lat = [t1 - t0 for d in devices for t0, t1 in d.sends if b0 <= t0 and t1 <= b1]
        base_lat.sort()
        print(f"\nusers: {args.users} user processes; devices sending: {args.devices}; "
              f"sends acknowledged: {sum(len(d.sends) for d in devices)}; "
              f"send errors: {sum(len(d.errors) for d in devices)}")
        if base_lat:
            print(f"steady load: send round trip p50 {statistics.median(base_lat) * 1e3:.2f} ms, "
                  f"p99 {base_lat[int(len(base_lat) * 0.99)] * 1e3:.2f} ms, "
                  f"max {base_lat[-1] * 1e3:.2f} ms over {len(base_lat)} sends; "
                  f"longest gap between acks "
                  f"{_gap(devices, b0, b1) * 1e3:.1f} ms")
        for op, (inside, wall, worst, gap, sends, migrated, left_old) in figures.items():
            print(f"{op:9}: {inside:.2f} s in the node ({wall:.2f} s with bin/chat rpc); "
                  f"longest send round trip meanwhile {worst:.2f} s, longest gap between "
                  f"acks {gap:.2f} s ({sends} sends overlapped); user processes on the "
                  f"0.2.0 state afterwards: {migrated}; left on the previous version of "
                  f"chat.users: {left_old}")
        if args.blocking:
            text = (root / "run" / "chat.log").read_text()
            i = text.find("held the hub")
            print("hub holds reported:", text.count("held the hub"))
            while i >= 0 and text.count("held the hub", 0, i) < 4:
                print(text[max(0, i - 200):i + 2500])
                i = text.find("held the hub", i + 1)
        print(f"user processes started by logins during the run: {len(starter.started)} "
              f"(errors: {len(starter.errors)})")
        for d in devices:
            if d.errors:
                print(f"{d.phone}: {len(d.errors)} errors, first: {d.errors[0]}")
            if d.client.reconnects:
                print(f"{d.phone}: reconnected {d.client.reconnects} times")
    finally:
        for d in devices:
            d.stop.set()
            with contextlib.suppress(OSError):
                d.client.close()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            end = time.monotonic() + 30
            while time.monotonic() < end and os.path.exists(f"/proc/{pid}"):
                time.sleep(0.05)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
