"""Load generator for the chat benchmarks: its own OS process, gevent, the raw protocol.

Run by ``bench/chat_bench.py`` (never imported by the server); the mode is the first
argument, the JSON arguments come on the first line of stdin::

    python -m bench.chat_load idle      # {"port", "users": [[phone, key_hex]...], "src"}
    python -m bench.chat_load traffic   # {..., "steps": [1000, 2000], "step_s": 4}
    python -m bench.chat_load fill      # {"port", "pairs": [[sender, key, rcpt]...], "per"}
    python -m bench.chat_load drain     # {"port", "users": [...], "expect": 100000}

It writes one JSON object per line on stdout (``{"event": "ready"}`` when its
connections are up, then results) and reads commands on stdin (``go``, ``stop``), so the
orchestrator can sample the server between phases. Everything is bounded: connection
counts come from the arguments, every phase has a deadline, and it connects to
127.0.0.x only.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import _socket  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import socket  # noqa: E402
import struct  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402
import gevent.event  # noqa: E402
import gevent.pool  # noqa: E402
import msgpack  # noqa: E402

_HDR = struct.Struct(">I")
_TS = struct.Struct(">d")


def out(**kw: Any) -> None:
    sys.stdout.write(json.dumps(kw) + "\n")
    sys.stdout.flush()


def frame(msg: dict[str, Any]) -> bytes:
    body = msgpack.packb(msg, use_bin_type=True)
    return _HDR.pack(len(body)) + body


class Stats:
    def __init__(self) -> None:
        self.received = 0
        self.lat: list[float] = []
        self.sent_rcpt = 0
        self.delivered_rcpt = 0
        self.errors = 0
        self.replies = 0


class Dev:
    """One device connection. Its socket is read by a callback of the hub's event loop
    (a libev watcher, as the server's sockets are): no greenlet per device, no switch
    and no watcher set-up per read, so the generator takes as little of the machine's
    CPU from the server as it can. The callback acknowledges pushes and records
    latency; ``d.close()`` (or the server closing) ends it."""

    def __init__(self, host: str, port: int, src: str, phone: str, key: bytes,
                 stats: Stats, answered_acks: bool = False) -> None:
        self.phone = phone
        self.key = key
        self.stats = stats
        self.sock = socket.create_connection((host, port), timeout=60,
                                             source_address=(src, 0))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # The same connection through the stdlib's C socket (not gevent's): reads and
        # writes that never wait (the descriptor is non-blocking: EAGAIN raises).
        self.raw = _socket.socket(fileno=os.dup(self.sock.fileno()))
        self.next_id = 1
        self.logged_in = gevent.event.Event()
        self.buf = bytearray()
        self.watcher: Any = None
        self.out = bytearray()  # written but not yet taken by the kernel
        self.acks_out: set[int] = set()  # ack requests not answered yet
        # Acks with an id are answered once applied (the drain waits for that); without
        # one (protocol version 2) they are not answered, as a device's usually are.
        self.answered_acks = answered_acks

    def send(self, msg: dict[str, Any]) -> None:
        msg["id"] = self.next_id
        self.next_id += 1
        self.write(frame(msg))

    def write(self, data: bytes) -> None:
        """Write without waiting (also from the hub's callback); what the kernel does not
        take now goes, in order, through a greenlet that waits for room (rare)."""
        if self.out:
            self.out += data
            return
        try:
            n = self.raw.send(data)
        except BlockingIOError:
            n = 0
        if n < len(data):
            self.out += data[n:]
            gevent.spawn(self._flush)

    def _flush(self) -> None:
        try:
            while self.out:
                data = bytes(self.out)
                self.sock.sendall(data)  # (writes meanwhile are appended to self.out)
                del self.out[: len(data)]
        except OSError:
            self.out.clear()

    def start(self) -> None:
        self.send({"t": "hello", "version": 2})
        self.send({"t": "login", "phone": self.phone, "key": self.key})
        self.watcher = gevent.get_hub().loop.io(self.raw.fileno(), 1)
        self.watcher.start(self._readable)

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher = None
        self.raw.close()
        self.sock.close()

    def _readable(self) -> None:
        try:
            data = self.raw.recv(262144)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.watcher.stop()
            return
        st = self.stats
        buf = self.buf
        buf += data
        acks = []
        now = time.monotonic()
        unpack = msgpack.unpackb
        while len(buf) >= 4:
            (n,) = _HDR.unpack_from(buf)
            if len(buf) < 4 + n:
                break
            m = unpack(bytes(buf[4 : 4 + n]), raw=False)
            del buf[: 4 + n]
            t = m["t"]
            if t == "msg":
                acks.append(m["id"])
                st.received += 1
                body = m["body"]
                if isinstance(body, bytes) and len(body) >= 8:
                    st.lat.append(now - _TS.unpack_from(body)[0])
            elif t == "receipt":
                acks.append(m["id"])
                if m["type"] == "sent":
                    st.sent_rcpt += 1
                elif m["type"] == "delivered":
                    st.delivered_rcpt += 1
            elif t == "ok":
                st.replies += 1
                self.acks_out.discard(m["id"])
                if m["id"] == 2:
                    self.logged_in.set()
            elif t == "error":
                st.errors += 1
                if st.errors < 5:
                    sys.stderr.write(f"{self.phone}: {m}\n")
        if acks:
            try:
                if self.answered_acks:
                    self.acks_out.add(self.next_id)
                    self.send({"t": "ack", "ids": acks})
                else:
                    self.write(frame({"t": "ack", "ids": acks}))
            except OSError:
                self.watcher.stop()


def connect_all(a: dict[str, Any], stats: Stats) -> list[Dev]:
    host = a.get("host", "127.0.0.1")
    srcs = a.get("src") or ["127.0.0.1"]
    if isinstance(srcs, str):
        srcs = [srcs]
    devs = []
    pool = gevent.pool.Pool(200)

    def one(i: int, phone: str, key_hex: str) -> None:
        d = Dev(host, a["port"], srcs[i % len(srcs)], phone, bytes.fromhex(key_hex), stats,
                a.get("answered_acks", False))
        d.start()
        devs.append(d)

    for i, (phone, key_hex) in enumerate(a["users"]):
        pool.spawn(one, i, phone, key_hex)
    pool.join()
    deadline = time.monotonic() + 120
    for d in devs:
        if not d.logged_in.wait(max(0.1, deadline - time.monotonic())):
            raise SystemExit(f"login of {d.phone} timed out")
    return devs


def wait_cmd() -> str:
    line = sys.stdin.readline()
    return line.strip()


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


def idle(a: dict[str, Any]) -> None:
    stats = Stats()
    devs = connect_all(a, stats)
    out(event="ready", connections=len(devs))
    wait_cmd()
    for d in devs:
        d.close()
    out(event="done")


def traffic(a: dict[str, Any]) -> None:
    stats = Stats()
    devs = connect_all(a, stats)
    phones = [d.phone for d in devs]
    out(event="ready", connections=len(devs))
    rng = random.Random(a.get("seed", 1))
    tick = 0.01
    cmid = 0
    for rate in a["steps"]:
        if wait_cmd() != "go":
            break
        stats.lat = []
        r0, s0 = stats.received, stats.sent_rcpt
        d0 = stats.delivered_rcpt
        t0 = time.monotonic()
        end = t0 + a["step_s"]
        offered = 0
        carry = 0.0
        next_t = t0
        while True:
            now = time.monotonic()
            if now >= end:
                break
            carry += rate * tick
            k = int(carry)
            carry -= k
            ts = _TS.pack(time.monotonic())
            for _ in range(k):
                d = devs[rng.randrange(len(devs))]
                to = phones[rng.randrange(len(phones))]
                cmid += 1
                try:
                    d.send({"t": "send", "to": to, "cmid": f"b{cmid}", "body": ts})
                except OSError:
                    stats.errors += 1
                offered += 1
            next_t += tick
            gevent.sleep(max(0.0, next_t - time.monotonic()))
        # let in-flight messages land (bounded)
        settle = time.monotonic() + a.get("settle_s", 3.0)
        while stats.received - r0 < offered and time.monotonic() < settle:
            gevent.sleep(0.01)
        dt = time.monotonic() - t0
        out(event="step", rate=rate, offered=offered, received=stats.received - r0,
            sent_receipts=stats.sent_rcpt - s0, delivered_receipts=stats.delivered_rcpt - d0,
            seconds=dt, send_seconds=a["step_s"], p50_ms=pct(stats.lat, 50) * 1e3,
            p90_ms=pct(stats.lat, 90) * 1e3, p99_ms=pct(stats.lat, 99) * 1e3,
            max_ms=max(stats.lat, default=float("nan")) * 1e3, errors=stats.errors)
    for d in devs:
        d.close()
    out(event="done")


def fill(a: dict[str, Any]) -> None:
    """Senders (online) queue ``per`` messages each to their (offline) recipients."""
    stats = Stats()
    users = [[s, k] for s, k, _ in a["pairs"]]
    devs = connect_all({**a, "users": users}, stats)
    to = {s: r for s, _, r in a["pairs"]}
    per = a["per"]
    ts = _TS.pack(0.0)

    def run(d: Dev) -> None:
        for i in range(per):
            d.send({"t": "send", "to": to[d.phone], "cmid": f"f{i}", "body": ts})
            if i % 20 == 19:
                gevent.sleep(0)

    gevent.joinall([gevent.spawn(run, d) for d in devs])
    deadline = time.monotonic() + a.get("timeout", 300)
    want = per * len(devs)
    while stats.sent_rcpt < want and time.monotonic() < deadline:
        gevent.sleep(0.05)
    out(event="filled", sent_receipts=stats.sent_rcpt, errors=stats.errors)
    for d in devs:
        d.close()


def drain(a: dict[str, Any]) -> None:
    """Recipients log in at once; time until ``expect`` messages arrived (acked)."""
    stats = Stats()
    out(event="ready")
    wait_cmd()
    t0 = time.monotonic()
    devs = connect_all({**a, "answered_acks": True}, stats)
    deadline = t0 + a.get("timeout", 300)
    while stats.received < a["expect"] and time.monotonic() < deadline:
        gevent.sleep(0.005)
    t_recv = time.monotonic() - t0
    # drained = every message pushed *and* every ack answered (deleted on the server)
    while any(d.acks_out for d in devs) and time.monotonic() < deadline:
        gevent.sleep(0.005)
    dt = time.monotonic() - t0
    out(event="drained", received=stats.received, seconds=dt, received_seconds=t_recv,
        errors=stats.errors)
    for d in devs:
        d.close()


def main() -> None:
    mode = sys.argv[1]
    args = json.loads(sys.argv[2] if len(sys.argv) > 2 else sys.stdin.readline())
    {"idle": idle, "traffic": traffic, "fill": fill, "drain": drain}[mode](args)


if __name__ == "__main__":
    main()
