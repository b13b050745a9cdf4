"""The media benchmarks: ``chat_media`` (upload MB/s), ``chat_media_download`` (MB/s) and
``chat_media_p99`` (chat p99 while uploads stream) — docs/media.md, "Bench".

::

    .venv/bin/python -m bench --only chat_media --rounds 1   # the three, through the harness
    .venv/bin/python -m bench.media_bench                   # the three in one run, printed
    .venv/bin/python -m bench.media_bench --mb 5 --step-seconds 2   # smaller

How it runs: the server is ``python -m chat`` in its own OS process (as for the other
chat benches: ``bench/chat_bench.py``'s ``Server``, ``durability: full``) with its media
endpoint on a free port. Users come from ``admin_provision``.

- Transfer: one device sends a file of random bytes (20 MB by default) with
  ``Client.send_media`` — encryption (AES-256-GCM), the HTTP upload, the server's
  hashing and fsync — timed from the call to its return (the message stored); the
  recipient's device then ``download``s it: HTTP, the ciphertext hash, the tag,
  decryption, the plaintext hash, the atomic write. MB/s = 10**6 bytes of plaintext per
  second.
- Latency under uploads: 200 online users send 1:1 at 2 000 msgs/s
  (``bench/chat_load.py``'s traffic mode, in its own process) for one step without
  uploads (the baseline, printed) and one step while 10 devices upload 20 MB files
  back to back (threads of this process: greenlets under the harness, which patches
  it as for every chat workload); the p99 send→receive latency of the second step is
  reported, with how many MB/s the uploads took in all during that step (the pacing
  slows them while chat needs the CPU: they must go on, not stop).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from typing import Any

from bench.chat_bench import Gen, Server, phones, provision
from chat.client import Client

MB = 1_000_000
MEDIA_CFG = {"host": "127.0.0.1", "port": 0, "max_size": 1 << 30, "max_uploads": 64,
             "upload_timeout": 600}

Result = tuple[float, str, int]


def _file(path: str, size: int) -> str:
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 1 << 20)
            f.write(os.urandom(n))
            left -= n
    return path


def _login(port: int, phone: str, key_hex: str) -> Client:
    c = Client("127.0.0.1", port, timeout=120.0)
    c.connect()
    c.login(phone, bytes.fromhex(key_hex))
    return c


def _media_server(workdir: str) -> Server:
    return Server(workdir, media=MEDIA_CFG)


def bench_transfer(size: int, workdir: str) -> dict[str, float]:
    """Upload and download MB/s of one ``size``-byte file."""
    srv = _media_server(workdir)
    try:
        (a, ka), (b, kb) = provision(srv.port, phones(2))
        alice, bob = _login(srv.port, a, ka), _login(srv.port, b, kb)
        src = _file(os.path.join(workdir, "file.bin"), size)
        t0 = time.perf_counter()
        alice.send_media(b, src)
        up = time.perf_counter() - t0
        ev = bob.wait_for(lambda evs: any(e.get("kind") == "media" for e in evs), 60.0)
        item = next(Client.media_item(e) for e in ev if e.get("kind") == "media")
        assert item is not None
        t0 = time.perf_counter()
        bob.download(item, os.path.join(workdir, "got.bin"))
        down = time.perf_counter() - t0
        alice.close()
        bob.close()
    finally:
        srv.stop()
    res = {"upload_mb_s": size / MB / up, "download_mb_s": size / MB / down}
    print(f"chat_media: {size / MB:.0f} MB file, encrypted: upload {res['upload_mb_s']:.1f} "
          f"MB/s ({up:.2f} s), download+verify+decrypt {res['download_mb_s']:.1f} MB/s "
          f"({down:.2f} s)", file=sys.stderr)
    return res


def bench_p99(size: int, uploads: int, rate: int, users: int, step_s: float,
              workdir: str) -> dict[str, float]:
    """Chat p99 at ``rate`` msgs/s without uploads, then while ``uploads`` devices
    upload ``size``-byte files back to back."""
    srv = _media_server(workdir)
    stop = threading.Event()
    done = [0]
    sent = [0]  # bytes the uploaders have sent (their progress)
    errors: list[str] = []
    threads: list[threading.Thread] = []
    try:
        chat_users = provision(srv.port, phones(users))
        uploaders = provision(srv.port, phones(uploads, 1_000_000))
        sink = uploaders[0][0]
        src = _file(os.path.join(workdir, "file.bin"), size)
        gen = Gen("traffic", {"port": srv.port, "users": chat_users,
                              "steps": [min(rate, 1000), rate, rate], "step_s": step_s,
                              "src": ["127.0.0.2", "127.0.0.3"]})
        gen.event()  # ready
        gen.cmd("go")  # warm-up, not reported
        gen.event()
        gen.cmd("go")
        base = gen.event()

        def upload(phone: str, key: str) -> None:
            last = [0]

            def progress(n: int, total: int) -> None:
                sent[0] += n - last[0]
                last[0] = n if n < total else 0

            try:
                c = _login(srv.port, phone, key)
                while not stop.is_set():
                    c.send_media(sink, src, progress=progress)
                    done[0] += 1
                c.close()
            except Exception as e:  # reported below: the bench must end
                errors.append(f"{type(e).__name__}: {e}")

        threads = [threading.Thread(target=upload, args=u, daemon=True) for u in uploaders]
        for t in threads:
            t.start()
        time.sleep(0.5)  # bench only: let the uploads get going before the step
        t0, b0 = time.perf_counter(), sent[0]
        gen.cmd("go")
        loaded = gen.event()
        up_mb_s = (sent[0] - b0) / MB / (time.perf_counter() - t0)
        stop.set()
        gen.cmd("stop")
        gen.close()
        for t in threads:
            t.join(120)
    finally:
        stop.set()
        srv.stop()
    if errors:
        print(f"chat_media_p99: {len(errors)} upload error(s), first: {errors[0]}",
              file=sys.stderr)
    print(f"chat_media_p99: {users} users at {rate} msgs/s: p99 {base['p99_ms']:.1f} ms "
          f"without uploads, {loaded['p99_ms']:.1f} ms with {uploads} uploads of "
          f"{size / MB:.0f} MB streaming (p50 {loaded['p50_ms']:.1f}, p90 "
          f"{loaded['p90_ms']:.1f} ms; the uploads took {up_mb_s:.1f} MB/s in all "
          f"during the step, {done[0]} finished; delivered "
          f"{loaded['received']}/{loaded['offered']})", file=sys.stderr)
    return {"p99_ms": loaded["p99_ms"], "base_p99_ms": base["p99_ms"],
            "p50_ms": loaded["p50_ms"], "p90_ms": loaded["p90_ms"],
            "base_p50_ms": base["p50_ms"], "base_p90_ms": base["p90_ms"],
            "received": loaded["received"], "uploads_done": done[0],
            "upload_mb_s": up_mb_s}


# ---------------------------------------------------------------- harness workloads


def chat_media(n: int) -> Result:
    with tempfile.TemporaryDirectory(prefix="chat-media-bench-") as d:
        r = bench_transfer(n * MB, d)
    return r["upload_mb_s"], "MB/s", n


def chat_media_download(n: int) -> Result:
    with tempfile.TemporaryDirectory(prefix="chat-media-bench-") as d:
        r = bench_transfer(n * MB, d)
    return r["download_mb_s"], "MB/s", n


def chat_media_p99(n: int) -> Result:
    with tempfile.TemporaryDirectory(prefix="chat-media-bench-") as d:
        r = bench_p99(n * MB, 10, 2000, 200, 4.0, d)
    return r["p99_ms"], "ms", int(r["received"])


WORKLOADS = {
    "chat_media": chat_media,
    "chat_media_download": chat_media_download,
    "chat_media_p99": chat_media_p99,
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.media_bench")
    p.add_argument("--mb", type=int, default=20, help="file size, MB (10**6 bytes)")
    p.add_argument("--uploads", type=int, default=10, help="uploads at once (p99)")
    p.add_argument("--rate", type=int, default=2000, help="chat msgs/s (p99)")
    p.add_argument("--users", type=int, default=200, help="chat users (p99)")
    p.add_argument("--step-seconds", type=float, default=4.0)
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="chat-media-bench-") as d:
        os.makedirs(os.path.join(d, "t"))
        os.makedirs(os.path.join(d, "p"))
        t = bench_transfer(a.mb * MB, os.path.join(d, "t"))
        q = bench_p99(a.mb * MB, a.uploads, a.rate, a.users, a.step_seconds,
                      os.path.join(d, "p"))
    rows: list[tuple[str, Any, str]] = [
        ("chat_media", round(t["upload_mb_s"], 1), "MB/s (upload)"),
        ("chat_media_download", round(t["download_mb_s"], 1), "MB/s"),
        ("chat_media_p99", round(q["p99_ms"], 1),
         f"ms (without uploads: {q['base_p99_ms']:.1f} ms; uploads at "
         f"{q['upload_mb_s']:.1f} MB/s)")]
    for name, v, unit in rows:
        print(f"  {name:<20} {v:>10} {unit}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
