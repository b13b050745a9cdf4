"""otp.net: active sockets (Erlang's gen_tcp active mode), over real socket pairs and a
real TLS connection on loopback."""

from __future__ import annotations

import os
import socket
import ssl
import textwrap

import pytest

from otp import net
from otp.errors import BadArg, NotInProcess
from otp.process import receive, send, spawn, spawn_monitor
from otp.process import self as _self
from otp.testing import assert_down, assert_receive, refute_receive, stop_process

pytestmark = pytest.mark.otp(clock="real")

DATA = os.path.join(os.path.dirname(__file__), "data")
CERT = os.path.join(DATA, "chat_test_cert.pem")
KEY = os.path.join(DATA, "chat_test_key.pem")


def packet(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    yield a, b
    net.close(a)
    b.close()


def unread(sock: socket.socket) -> bytes:
    """What the kernel holds for ``sock`` that nobody has read (without reading it)."""
    try:
        return sock.recv(65536, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return b""


def wait_unread(sock: socket.socket) -> bytes:
    for _ in range(1000):
        got = unread(sock)
        if got:
            return got
        refute_receive(timeout=0.005)
    raise AssertionError("the peer's bytes never arrived")


def test_raw_mode_delivers_what_each_read_returns(node, pair):
    a, b = pair
    net.active(a, True)
    b.sendall(b"hello")
    assert assert_receive(("tcp", a, bytes)) == ("tcp", a, b"hello")


def test_packet_4_splits_the_stream_into_packets_whatever_the_reads(node, pair):
    a, b = pair
    net.active(a, True, packet=4)
    data = packet(b"one") + packet(b"") + packet(b"three")
    b.sendall(data[:2])
    wait_unread(a)
    b.sendall(data[2:9])
    b.sendall(data[9:])
    got = [assert_receive(("tcp", a, bytes))[2] for _ in range(3)]
    assert got == [b"one", b"", b"three"]
    assert {type(body) for body in got} == {bytes}  # immutable, whatever the reads


def test_active_n_stops_after_n_messages_with_tcp_passive_and_keeps_the_rest(node, pair):
    a, b = pair
    net.active(a, 2, packet=4)
    b.sendall(b"".join(packet(bytes([i])) for i in range(5)))
    assert [assert_receive(("tcp", a, bytes))[2] for _ in range(2)] == [b"\0", b"\1"]
    assert assert_receive() == ("tcp_passive", a)
    assert not net.is_active(a)
    refute_receive(("tcp", a, bytes))
    # re-armed: the packets kept back come first, in order
    net.active(a, 3)
    assert [assert_receive(("tcp", a, bytes))[2] for _ in range(3)] == [b"\2", b"\3", b"\4"]
    assert assert_receive() == ("tcp_passive", a)


def test_n_adds_to_the_count(node, pair):
    a, b = pair
    net.active(a, 1)
    net.active(a, 1)
    b.sendall(b"x")
    assert assert_receive(("tcp", a, bytes))[2] == b"x"
    assert net.is_active(a)  # one message left
    b.sendall(b"y")
    assert assert_receive(("tcp", a, bytes))[2] == b"y"
    assert assert_receive() == ("tcp_passive", a)


def test_passive_socket_is_not_read_at_all(node, pair):
    a, b = pair
    net.active(a, True)
    net.active(a, False)
    b.sendall(b"stays in the kernel")
    assert wait_unread(a) == b"stays in the kernel"
    refute_receive(("tcp", a, bytes))
    assert unread(a) == b"stays in the kernel"  # proof nobody read it
    net.active(a, True)
    assert assert_receive(("tcp", a, bytes))[2] == b"stays in the kernel"


def test_peer_close_delivers_tcp_closed_after_the_data(node, pair):
    a, b = pair
    net.active(a, True)
    b.sendall(b"last words")
    b.close()
    assert assert_receive() == ("tcp", a, b"last words")
    assert assert_receive() == ("tcp_closed", a)
    net.active(a, 5)  # re-arming a closed stream does nothing
    refute_receive()


def test_oversized_packet_is_refused_by_its_header_with_emsgsize(node, pair):
    a, b = pair
    net.active(a, True, packet=4, packet_size=10)
    b.sendall(packet(b"fits") + (11).to_bytes(4, "big"))  # no body needed to refuse it
    assert assert_receive() == ("tcp", a, b"fits")
    assert assert_receive() == ("tcp_error", a, "emsgsize")
    assert assert_receive() == ("tcp_closed", a)


def test_reset_by_the_peer_delivers_the_error_then_tcp_closed(node):
    srv = socket.create_server(("127.0.0.1", 0))
    c = socket.create_connection(srv.getsockname())
    a, _ = srv.accept()
    srv.close()
    try:
        net.active(a, True)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        c.close()  # linger 0: an RST
        assert assert_receive() == ("tcp_error", a, "econnreset")
        assert assert_receive() == ("tcp_closed", a)
    finally:
        net.close(a)


def test_messages_go_to_the_owner_even_when_another_process_re_arms(node, pair):
    a, b = pair
    net.active(a, 1)
    b.sendall(b"1")
    assert_receive(("tcp", a, b"1"))
    assert_receive(("tcp_passive", a))
    _, ref = spawn_monitor(lambda: net.active(a, 1))
    assert_down(ref)  # (had it become the owner, its end would have closed the socket)
    b.sendall(b"2")
    assert assert_receive(("tcp", a, bytes)) == ("tcp", a, b"2")


def test_the_owner_ending_closes_the_socket(node):
    a, b = socket.socketpair()
    try:

        def owner(parent):
            net.active(a, True)
            send(parent, "armed")
            receive()

        pid, ref = spawn_monitor(owner, _self())
        assert_receive("armed")
        stop_process(pid)
        assert_down(ref)
        b.settimeout(5.0)
        assert b.recv(10) == b""  # the peer sees the close
        assert a.fileno() == -1
    finally:
        b.close()


def test_an_owner_that_returns_closes_the_socket_too(node):
    a, b = socket.socketpair()
    try:
        _, ref = spawn_monitor(lambda: net.active(a, True))
        assert_down(ref)
        b.settimeout(5.0)
        assert b.recv(10) == b""
    finally:
        b.close()


def test_controlling_process_hands_the_messages_and_the_socket_on(node, pair):
    a, b = pair

    def heir(parent):
        msg = receive()
        send(parent, ("heir got", msg))
        receive()

    me = _self()
    h = spawn(heir, me)
    net.active(a, 1)
    net.controlling_process(a, h)
    b.sendall(b"for the heir")
    assert assert_receive(("heir got", object)) == ("heir got", ("tcp", a, b"for the heir"))
    with pytest.raises(BadArg, match="only the socket's owner"):
        net.controlling_process(a, me)
    stop_process(h)
    b.settimeout(5.0)
    assert b.recv(10) == b""  # closed with its new owner


def test_close_stops_reading_and_closes(node, pair):
    a, b = pair
    net.active(a, True)
    net.close(a)
    assert a.fileno() == -1
    assert not net.is_active(a)
    b.settimeout(5.0)
    assert b.recv(10) == b""


def test_bad_arguments_name_what_was_expected(node, pair):
    a, _b = pair
    with pytest.raises(BadArg, match="positive int, True or False, got 0"):
        net.active(a, 0)
    with pytest.raises(BadArg, match="packet 0 or 4, got 2"):
        net.active(a, True, packet=2)
    with pytest.raises(BadArg, match="packet_size >= 0"):
        net.active(a, True, packet_size=-1)
    with pytest.raises(BadArg, match="expects a socket"):
        net.active("not a socket", True)
    with pytest.raises(BadArg, match="not an active socket"):
        net.controlling_process(a, _self())


def test_standard_library_tls_socket_is_refused(node):
    raw_ssl = __import__("gevent.monkey", fromlist=["get_original"]).get_original(
        "ssl", "SSLSocket"
    )
    fake = raw_ssl.__new__(raw_ssl)  # an instance is enough: it is refused by its class
    with pytest.raises(BadArg, match="standard-library TLS socket blocks the node"):
        net.active(fake, True)


def test_outside_a_process_it_refuses():
    a, b = socket.socketpair()
    with pytest.raises(NotInProcess):
        net.active(a, True)
    a.close()
    b.close()


def test_tls_socket_is_read_decrypted(node):
    sctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    sctx.load_cert_chain(CERT, KEY)
    cctx = ssl.create_default_context(cafile=CERT)
    lsock = socket.create_server(("127.0.0.1", 0))
    port = lsock.getsockname()[1]

    def client(parent):
        s = cctx.wrap_socket(socket.create_connection(("127.0.0.1", port)),
                             server_hostname="localhost")
        s.sendall(packet(b"secret one") + packet(b"secret two"))
        s.recv(1)  # until the server closes
        s.close()

    spawn(client, _self())
    raw, _ = lsock.accept()
    lsock.close()
    a = sctx.wrap_socket(raw, server_side=True)
    net.active(a, 1, packet=4)
    assert assert_receive(("tcp", a, bytes))[2] == b"secret one"
    assert assert_receive() == ("tcp_passive", a)
    net.active(a, True)
    assert assert_receive(("tcp", a, bytes))[2] == b"secret two"
    net.close(a)


def test_the_module_example_runs(capsys):
    doc = net.__doc__
    start = doc.index("    import socket\n")
    end = doc.index("\n", doc.index("print(otp.run(main))")) + 1
    code = textwrap.dedent(doc[start:end])
    exec(compile(code, "otp.net docstring", "exec"), {})
    assert capsys.readouterr().out.strip().endswith("[b'hi', b'you']")


def test_errors_are_named_as_erlang_names_them():
    from otp._core.net_driver import _reason

    assert _reason(ConnectionResetError(104, "reset")) == "econnreset"
    assert _reason(TimeoutError("timed out")) == "timeout"
    assert _reason(ssl.SSLError("bad record")) == "sslerror"
