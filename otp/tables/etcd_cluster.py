"""A real etcd cluster on loopback, for tests, benches and trying replicated tables
on one machine: ``EtcdCluster(directory, members=3)``.

Each member is an ``etcd`` child process (the ``etcd`` binary: Debian's
``etcd-server``) with free ports and its own data directory under ``directory``;
``endpoints`` are the client URLs to give ``otp.tables.start_replication``.
``kill(i)`` (SIGKILL), ``restart(i)``, ``pause(i)``/``resume(i)`` (SIGSTOP/SIGCONT: a
member cut off) act on one member by pid; leaving the ``with`` block kills every member
it started. ``ETCD`` is the binary found (None when missing).

Example::

    with EtcdCluster("/tmp/try-etcd", 3) as etcd:
        print(etcd.endpoints)   # ['http://127.0.0.1:40123', ...]
"""

from __future__ import annotations

import http.client
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time
from types import TracebackType

from otp.testing_dist import free_port

ETCD = shutil.which("etcd") or ("/usr/bin/etcd" if os.path.exists("/usr/bin/etcd") else None)


def _die_with_parent() -> None:
    """In the child (Linux): SIGKILL when the process that started it dies, so a
    killed test run leaves no etcd behind."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class EtcdCluster:
    """A local etcd cluster of ``members`` members (see the module docstring)."""

    def __init__(self, base: pathlib.Path, members: int = 3, *,
                 quota_bytes: int | None = None) -> None:
        if ETCD is None:
            raise FileNotFoundError("etcd is not installed: apt-get install -y etcd-server")
        self.binary = ETCD
        self.base = pathlib.Path(base)
        self.n = members
        self.names = [f"m{i}" for i in range(members)]
        self.client_ports = [free_port() for _ in range(members)]
        self.peer_ports = [free_port() for _ in range(members)]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * members
        self.quota = quota_bytes
        self.token = f"otpy-{os.getpid()}-{self.client_ports[0]}"
        self.initial = ",".join(f"{n}=http://127.0.0.1:{p}"
                                for n, p in zip(self.names, self.peer_ports, strict=True))

    @property
    def endpoints(self) -> list[str]:
        return [f"http://127.0.0.1:{p}" for p in self.client_ports]

    def _start(self, i: int) -> None:
        d = self.base / f"etcd-{self.names[i]}"
        d.mkdir(parents=True, exist_ok=True)
        cp, pp = self.client_ports[i], self.peer_ports[i]
        argv = [
            self.binary, "--name", self.names[i], "--data-dir", str(d / "data"),
            "--listen-client-urls", f"http://127.0.0.1:{cp}",
            "--advertise-client-urls", f"http://127.0.0.1:{cp}",
            "--listen-peer-urls", f"http://127.0.0.1:{pp}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{pp}",
            "--initial-cluster", self.initial, "--initial-cluster-state", "new",
            "--initial-cluster-token", self.token,
            "--heartbeat-interval", "50", "--election-timeout", "500",
            "--log-level", "warn", "--logger", "zap",
        ]
        if self.quota:
            argv += ["--quota-backend-bytes", str(self.quota)]
        log = open(d / "etcd.log", "ab")
        try:
            self.procs[i] = subprocess.Popen(argv, stdout=log, stderr=log,
                                             stdin=subprocess.DEVNULL,
                                             preexec_fn=_die_with_parent)
        finally:
            log.close()

    def start(self) -> EtcdCluster:
        for i in range(self.n):
            self._start(i)
        self.wait_healthy()
        return self

    def wait_healthy(self, timeout: float = 30.0, members: list[int] | None = None) -> None:
        deadline = time.monotonic() + timeout
        want = members if members is not None else list(range(self.n))
        last: object = None
        while time.monotonic() < deadline:
            ok = 0
            for i in want:
                try:
                    c = http.client.HTTPConnection("127.0.0.1", self.client_ports[i],
                                                   timeout=2)
                    c.request("POST", "/v3/kv/range", json.dumps({"key": "eA=="}))
                    r = c.getresponse()
                    body = r.read()
                    c.close()
                    if r.status == 200 and b"header" in body:
                        ok += 1
                    else:
                        last = body
                except OSError as e:
                    last = e
            if ok == len(want):
                return
            time.sleep(0.1)
        raise RuntimeError(f"etcd members {want} not healthy after {timeout} s: {last!r}\n"
                           + self.tail())

    def tail(self) -> str:
        out = []
        for n in self.names:
            p = self.base / f"etcd-{n}" / "etcd.log"
            if p.exists():
                out.append(f"--- {n}\n" + "\n".join(p.read_text(errors="replace")
                                                    .splitlines()[-10:]))
        return "\n".join(out)

    def pid(self, i: int) -> int | None:
        p = self.procs[i]
        return p.pid if p is not None and p.poll() is None else None

    def kill(self, i: int) -> None:
        p = self.procs[i]
        if p is not None:
            if p.poll() is None:
                try:
                    os.kill(p.pid, signal.SIGCONT)
                    os.kill(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            p.wait()
            self.procs[i] = None

    def restart(self, i: int) -> None:
        self.kill(i)
        self._start(i)

    def pause(self, i: int) -> None:
        pid = self.pid(i)
        if pid is not None:
            os.kill(pid, signal.SIGSTOP)

    def resume(self, i: int) -> None:
        pid = self.pid(i)
        if pid is not None:
            os.kill(pid, signal.SIGCONT)

    def close(self) -> None:
        for i in range(self.n):
            self.kill(i)

    def __enter__(self) -> EtcdCluster:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def main(argv: list[str] | None = None) -> None:
    """``python -m otp.tables.etcd_cluster DIR [--members 3]``: start a local etcd
    cluster, print its endpoints, run until Ctrl-C (then kill the members)."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m otp.tables.etcd_cluster",
                                 description="A local etcd cluster on loopback.")
    ap.add_argument("directory", help="where the members keep their data and logs")
    ap.add_argument("--members", type=int, default=3)
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_a: sys.exit(0))  # unwind: members killed
    with EtcdCluster(pathlib.Path(args.directory), args.members) as c:
        print(",".join(c.endpoints), flush=True)
        try:
            while all(c.pid(i) is not None for i in range(c.n)):
                time.sleep(1)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
