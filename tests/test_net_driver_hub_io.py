"""The socket driver's protocol-driver side (otp.lowlevel): packets handed to a
function as they are read (``set_packet_handler``), and ``socket_writer`` queueing
writes that the hub sends once per turn, never blocking, over real socket pairs."""

from __future__ import annotations

import socket

import pytest

from otp import net
from otp.lowlevel import set_packet_handler, socket_writer
from otp.process import receive, send, spawn
from otp.process import self as _self
from otp.testing import assert_receive, refute_receive

pytestmark = pytest.mark.otp(clock="real")


def packet(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    yield a, b
    net.close(a)
    b.close()


def test_a_packet_handler_takes_each_packet_in_order_instead_of_the_owner(node, pair):
    a, b = pair
    got: list[bytes] = []
    me = _self()
    net.active(a, True, packet=4)

    def handler(body: bytes) -> None:
        got.append(body)
        if body == b"last":
            send(me, "done")

    set_packet_handler(a, handler)
    b.sendall(packet(b"one") + packet(b"") + packet(b"two")[:5])
    b.sendall(packet(b"two")[5:] + packet(b"last"))
    assert_receive("done")
    assert got == [b"one", b"", b"two", b"last"]
    refute_receive(("tcp", a, bytes), timeout=0.05)  # nothing went to the owner


def test_the_owner_still_hears_that_the_peer_closed(node, pair):
    a, b = pair
    net.active(a, True, packet=4)
    set_packet_handler(a, lambda body: None)
    b.close()
    assert_receive(("tcp_closed", a))


def test_a_handler_that_closes_the_socket_stops_the_reading(node, pair):
    a, b = pair
    got: list[bytes] = []
    net.active(a, True, packet=4)

    def handler(body: bytes) -> None:
        got.append(body)
        net.close(a)

    set_packet_handler(a, handler)
    b.sendall(packet(b"first") + packet(b"second"))
    for _ in range(200):
        if got:
            break
        refute_receive(timeout=0.005)
    refute_receive(timeout=0.05)
    assert got == [b"first"]


def test_set_packet_handler_refuses_a_socket_that_is_not_active(node, pair):
    a, _ = pair
    from otp.errors import BadArg

    with pytest.raises(BadArg, match="not an active socket"):
        set_packet_handler(a, lambda body: None)


def read_exactly(sock: socket.socket, n: int) -> bytes:
    sock.setblocking(True)
    parts, left = [], n
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        assert chunk, f"the stream ended {left} bytes short"
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def test_writes_of_one_turn_go_out_together_in_order(node, pair):
    a, b = pair
    w = socket_writer(a, lambda reason: None)
    assert w is not None
    for i in range(100):
        w.write(b"%03d" % i)
    assert w.pending() == 300  # nothing sent before the hub's turn
    receive(timeout=0.01, default=None)
    assert w.pending() == 0
    assert read_exactly(b, 300) == b"".join(b"%03d" % i for i in range(100))


def test_a_write_larger_than_the_socket_buffers_goes_out_whole_without_blocking(node, pair):
    a, b = pair
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    w = socket_writer(a, lambda reason: None)
    assert w is not None
    big = bytes(range(256)) * 8192  # 2 MiB: far more than the buffers hold
    w.write(big)
    w.write(b"tail")
    assert w.pending() > 0  # the caller was not blocked: the rest waits for the hub
    me = _self()
    spawn(lambda: send(me, ("read", read_exactly(b, len(big) + 4))))
    _, data = assert_receive(("read", bytes), timeout=10)
    assert data == big + b"tail"


def test_a_failed_send_reports_once_and_drops_what_is_queued(node, pair):
    a, b = pair
    reasons: list[str] = []
    w = socket_writer(a, reasons.append)
    assert w is not None
    b.close()
    for _ in range(50):
        w.write(b"x" * 65536)  # the first sends fill the peer's buffer, then EPIPE
        receive(timeout=0.001, default=None)
        if reasons:
            break
    assert reasons and reasons[0] in ("epipe", "econnreset")
    w.write(b"more")
    receive(timeout=0.01, default=None)
    assert len(reasons) == 1
    assert w.pending() == 0


def test_a_tls_socket_has_no_hub_writer(node):
    import ssl

    ctx = ssl.create_default_context()
    raw = socket.socket()
    try:
        tls = ctx.wrap_socket(raw, server_hostname="localhost", do_handshake_on_connect=False)
        assert socket_writer(tls, lambda reason: None) is None
    finally:
        raw.close()
