"""Connections: one per node pair, made on first use; garbage and oversized packets
close that connection only; a silent peer is declared down after ``net_ticktime``;
simultaneous connects between two otpy nodes (separate OS processes) end in one
connection; cookies from a file."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import stat
import subprocess
import time

import pytest

import otp
from otp import dist
from otp.dist import _epmd, _net_kernel
from otp.dist import _handshake as hs
from otp.dist._cookie import resolve_cookie
from otp.errors import BadArg
from otp.process import is_alive, receive, self, send
from tests.dist_wire_helpers import erl_child, free_port, needs_erl, otpy_child, wait_for

ME = "m@127.0.0.1"


def _raw_peer(port: int, name: str, cookie: str = "sesame") -> socket.socket:
    """A peer that completes the handshake by hand and then does what the test says."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    hs.send_name(s, name, hs.FLAGS & ~hs.DFLAG_OTPY, 5)
    assert hs.recv_status(s) == "ok"
    ch = hs.recv_challenge(s)
    hs.send_challenge_reply(s, 77, ch.challenge, cookie)
    hs.recv_challenge_ack(s, 77, cookie, ch.name)
    return s


def _closed_by_peer(s: socket.socket) -> bool:
    s.settimeout(10)
    try:
        while True:
            data = s.recv(4096)
            if not data:
                return True
            # ticks (empty packets) may come first
    except OSError:
        return True


def _watch() -> None:
    """Send the calling process every connection event as ``(event, peer)``."""
    me = self()
    _net_kernel.state().observers.append(lambda what, peer: send(me, (what, peer)))


@pytest.mark.parametrize(
    "junk",
    [
        b"\x00\x00\x00\x03abc",  # not a pass-through packet
        b"\x00\x00\x00\x04p\x83\xff\xff",  # a malformed term
        b"\x00\x00\x00\x04p\x83a\x01",  # a control message that is not a tuple
        b"\x7f\xff\xff\xff",  # longer than the packet cap
    ],
)
def test_garbage_from_a_peer_closes_that_connection_only(junk):
    def main():
        dist.start(ME, cookie="sesame", epmd_port=free_port(), max_packet=4096)
        try:
            _watch()
            port = _net_kernel.state().port
            good = _raw_peer(port, "good@127.0.0.1")
            bad = _raw_peer(port, "bad@127.0.0.1")
            wait_for(lambda: dist.nodes() == ["bad@127.0.0.1", "good@127.0.0.1"], "both up")
            bad.sendall(junk)
            assert _closed_by_peer(bad)
            assert receive(("down", "bad@127.0.0.1"), timeout=10) == ("down", "bad@127.0.0.1")
            assert dist.nodes() == ["good@127.0.0.1"]
            good.close()
            return receive(("down", "good@127.0.0.1"), timeout=10)
        finally:
            dist.stop()

    assert otp.run(main, name=ME, timeout=60) == ("down", "good@127.0.0.1")


def _fuzz_packets(rng: random.Random) -> list[bytes]:
    from otp.dist import Atom
    from otp.dist._etf import encode

    me = self()
    pieces = [Atom("x"), me, 1, -5, 2**70, "s", b"b", (), [], {1: 2}, None, 3.5, (me, me)]
    out = []
    for _ in range(40):  # random bytes after the pass-through tag and version
        out.append(b"p\x83" + rng.randbytes(rng.randrange(0, 30)))
    for _ in range(60):  # well-formed control tuples with random operations and fields
        ctrl = (rng.randrange(0, 40), *rng.choices(pieces, k=rng.randrange(0, 6)))
        body = b"p\x83" + encode(ctrl, otpy=False)
        if rng.random() < 0.5:
            body += b"\x83" + encode(rng.choice(pieces), otpy=False)
        if rng.random() < 0.2:
            body = body[: rng.randrange(2, len(body))]
        out.append(body)
    return out


def test_fuzzed_packets_after_the_handshake_never_stop_the_node():
    def main():
        dist.start(ME, cookie="sesame", epmd_port=free_port())
        try:
            port = _net_kernel.state().port
            for i, packet in enumerate(_fuzz_packets(random.Random(7))):
                peer = _raw_peer(port, f"f{i}@127.0.0.1")
                peer.sendall(len(packet).to_bytes(4, "big") + packet)
                peer.close()
            started = _net_kernel.STATE.get()
            assert started is not None and all(is_alive(p) for p in started.procs)
            _raw_peer(port, "last@127.0.0.1").close()
            return True
        finally:
            dist.stop()

    assert otp.run(main, name=ME, timeout=120) is True


def test_one_connection_per_peer_and_an_unreachable_peer_is_pang():
    def main():
        dist.start(ME, cookie="sesame", epmd_port=free_port())
        try:
            st = _net_kernel.state()
            assert dist.connect("nobody@127.0.0.1") is False
            assert dist.ping("nobody@127.0.0.1") == "pang"
            conn = _net_kernel.connection(st, "nobody2@127.0.0.1")
            assert _net_kernel.connection(st, "nobody2@127.0.0.1") is conn
            return dist.nodes()
        finally:
            dist.stop()

    assert otp.run(main, name=ME, timeout=60) == []


def test_an_idle_connection_is_ticked_and_a_peer_that_never_answers_is_closed(caplog):
    def main():
        dist.start(ME, cookie="sesame", epmd_port=free_port(), net_ticktime=1)
        try:
            _watch()
            silent = _raw_peer(_net_kernel.state().port, "silent@127.0.0.1")
            silent.settimeout(10)
            got = b""
            while True:  # ticks (0-length packets) until the node gives up on us
                data = silent.recv(4096)
                if not data:
                    break
                got += data
            silent.close()
            return got[:4], receive(("down", "silent@127.0.0.1"), timeout=10)
        finally:
            dist.stop()

    assert otp.run(main, name=ME, timeout=60) == (b"\0\0\0\0", ("down", "silent@127.0.0.1"))
    assert "net_tick_timeout" in caplog.text


@needs_erl
def test_a_peer_silent_for_net_ticktime_is_declared_down(caplog):
    epmd_port = free_port()

    def main():
        dist.start(ME, cookie="sesame", epmd_port=epmd_port, net_ticktime=2)
        try:
            _watch()
            with erl_child(
                "e1@127.0.0.1", "sesame", epmd_port, "-kernel", "net_ticktime", "2"
            ) as erl:
                wait_for(
                    lambda: _epmd.port_please("e1", "127.0.0.1", epmd_port=epmd_port),
                    "erl to register",
                )
                assert dist.ping("e1@127.0.0.1") == "pong"
                os.kill(erl.pid, signal.SIGSTOP)
                return receive(("down", "e1@127.0.0.1"), timeout=30)
        finally:
            dist.stop()

    assert otp.run(main, name=ME, timeout=90) == ("down", "e1@127.0.0.1")
    assert "net_tick_timeout" in caplog.text


def _accept_by_hand(lsock: socket.socket, cookie: str) -> socket.socket:
    s, _ = lsock.accept()
    s.settimeout(10)
    pn = hs.recv_name(s)
    assert pn.name == ME
    hs.send_status(s, "ok")
    ch = hs.send_challenge(s, "r@127.0.0.1", hs.FLAGS, 9)
    theirs = hs.recv_challenge_reply(s, ch, cookie, ME)
    hs.send_challenge_ack(s, theirs, cookie)
    return s


def _packets(s: socket.socket, n: int, *, only_op: int | None = None) -> list[bytes]:
    """The next ``n`` packets read from ``s`` (ticks skipped; with ``only_op``, only
    control messages with that operation: the node's own services talk too)."""
    from otp.dist._etf import decode

    buf, out = b"", []
    while len(out) < n:
        while len(buf) >= 4 and len(buf) >= 4 + int.from_bytes(buf[:4], "big"):
            size = int.from_bytes(buf[:4], "big")
            body = buf[4 : 4 + size]
            if size and (only_op is None or decode(body, 2, otpy=False)[0][0] == only_op):
                out.append(body)
            buf = buf[4 + size :]
        if len(out) < n:
            chunk = s.recv(4096)
            assert chunk, "closed early"
            buf += chunk
    return out


def test_control_messages_sent_before_the_connection_is_up_go_out_in_order_framed():
    from otp.dist import Atom
    from otp.dist._etf import decode

    def main():
        dist.start(ME, cookie="sesame", epmd_port=free_port())
        try:
            st = _net_kernel.state()
            lsock = socket.socket()
            lsock.bind(("127.0.0.1", 0))
            lsock.listen(1)
            reg = _epmd.register("r", lsock.getsockname()[1], epmd_port=st.epmd_port)
            conn = _net_kernel.connection(st, "r@127.0.0.1")
            me = self()
            for i in range(10):
                conn.send_control((2, Atom(""), me), i)
            s = _accept_by_hand(lsock, "sesame")
            got = []
            for packet in _packets(s, 10, only_op=2):
                assert packet[:2] == b"p\x83"
                ctrl, pos = decode(packet, 2, otpy=False)
                assert ctrl == (2, "", me) and packet[pos] == 131
                got.append(decode(packet, pos + 1, otpy=False)[0])
            s.close()
            lsock.close()
            reg.close()
            return got
        finally:
            dist.stop()

    assert otp.run(main, name=ME, timeout=60) == list(range(10))


NODE = """
import sys, time
import otp
otp.patch()
from otp import dist
from otp.process import sleep

name, other, epmd_port, go_at = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])

def main():
    dist.start(name, cookie="k", epmd_port=epmd_port)
    print("ready", flush=True)
    sleep(max(0.0, go_at - time.time()))
    ok = dist.connect(other)
    while dist.nodes() != [other]:
        sleep(0.05)
    print("connected", ok, dist.ping(other), dist.nodes(), flush=True)
    sleep(60)

otp.run(main, name=name)
"""


def test_simultaneous_connect_between_two_otpy_nodes_ends_in_one_connection_each_way():
    epmd_port = free_port()  # the first node serves the names
    a, b = "a@127.0.0.1", "b@127.0.0.1"
    go_at = time.time() + 4
    with otpy_child(NODE, a, b, str(epmd_port), str(go_at)) as pa:
        assert pa.stdout is not None and pa.stdout.readline().strip() == "ready"
        with otpy_child(NODE, b, a, str(epmd_port), str(go_at)) as pb:
            assert pb.stdout is not None
            assert pb.stdout.readline().strip() == "ready"
            assert pa.stdout.readline().strip() == f"connected True pong ['{b}']"
            assert pb.stdout.readline().strip() == f"connected True pong ['{a}']"


def test_the_cookie_file_is_created_owner_only_with_a_random_cookie_and_reused(tmp_path):
    path = tmp_path / "cookie"
    first = resolve_cookie(None, str(path))
    assert len(first) == 20 and first.isalpha()
    assert stat.S_IMODE(path.stat().st_mode) == 0o400
    assert resolve_cookie(None, str(path)) == first
    assert resolve_cookie("given", str(path)) == "given"


def test_a_cookie_file_others_may_read_is_refused(tmp_path):
    path = tmp_path / "cookie"
    path.write_text("abc")
    path.chmod(0o644)
    with pytest.raises(BadArg, match="accessible by its owner only"):
        resolve_cookie(None, str(path))


def test_listening_beyond_loopback_needs_tls_or_insecure():
    def main():
        with pytest.raises(BadArg, match="without TLS"):
            dist.start(ME, cookie="c", listen="0.0.0.0", epmd_port=free_port())
        return dist.nodes()

    assert otp.run(main, name=ME, timeout=30) == []


TLS_NODE = """
import ssl, sys
import otp
otp.patch()
from otp import dist
from otp.process import sleep

name, other, epmd_port, cert, key = sys.argv[1:6]
server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
server.load_cert_chain(cert, key)
client = ssl.create_default_context(cafile=cert)

def main():
    dist.start(name, cookie="k", epmd_port=int(epmd_port), tls=(server, client))
    print("ready", flush=True)
    if other != "-":
        print(dist.ping(other), dist.nodes(), flush=True)
    sleep(60)

otp.run(main, name=name)
"""


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_tls_distribution_between_two_otpy_nodes(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    epmd_port = str(free_port())
    a, b = "ta@127.0.0.1", "tb@127.0.0.1"
    with otpy_child(TLS_NODE, a, "-", epmd_port, str(cert), str(key)) as pa:
        assert pa.stdout is not None and pa.stdout.readline().strip() == "ready"
        with otpy_child(TLS_NODE, b, a, epmd_port, str(cert), str(key)) as pb:
            assert pb.stdout is not None and pb.stdout.readline().strip() == "ready"
            assert pb.stdout.readline().strip() == f"pong ['{a}']"


def test_start_busy_waits_by_default_stop_gives_the_old_setting_back_bad_values_refused():
    from otp.lowlevel import current_node

    def main():
        node = current_node()
        with pytest.raises(BadArg, match="busy_wait"):
            dist.start(ME, cookie="sesame", epmd_port=free_port(), busy_wait=-1)
        assert node.busy_wait == 0.0
        dist.start(ME, cookie="sesame", epmd_port=free_port())
        try:
            assert node.busy_wait == 0.0002
        finally:
            dist.stop()
        assert node.busy_wait == 0.0
        dist.start(ME, cookie="sesame", epmd_port=free_port(), busy_wait=0)
        try:
            return node.busy_wait
        finally:
            dist.stop()

    assert otp.run(main, name=ME, timeout=60) == 0.0
