"""Bad input over real sockets: each gets an error frame or a close; nothing crashes the
listener, and a client that never reads is disconnected instead of buffered forever."""

from __future__ import annotations

import socket
import ssl

import msgpack
import pytest

from chat.protocol import FrameReader, decode_body, encode
from otp.process import whereis
from tests.chat_helpers import client_tls, running_chat

pytestmark = pytest.mark.otp(clock="real")

A = "+14155550100"


class Raw:
    """A raw protocol connection: write any bytes, read frames until a close."""

    def __init__(self, srv, hello=True):
        s = socket.create_connection((srv.host, srv.port), timeout=10.0)
        if srv.tls:
            s = client_tls().wrap_socket(s, server_hostname="localhost")
        self.s = s
        self.r = FrameReader(1 << 24)
        if hello:
            self.send({"t": "hello", "id": 0, "version": 1})
            assert self.frame()["t"] == "ok"

    def send(self, msg):
        self.s.sendall(encode(msg))

    def raw(self, data):
        self.s.sendall(data)

    def frame(self):
        """The next frame, or None once the server closed the connection."""
        while (b := self.r.next_body()) is None:
            try:
                data = self.s.recv(65536)
            except (ConnectionResetError, ssl.SSLError):
                return None
            if not data:
                return None
            self.r.feed(data)
        return decode_body(b)

    def close(self):
        self.s.close()


def body(obj):
    b = msgpack.packb(obj)
    return len(b).to_bytes(4, "big") + b


def assert_listener_alive(srv):
    pid = whereis("chat.listener")
    assert pid is not None
    c = srv.client()
    c.ping()


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_oversized_frame_gets_frame_too_large_and_a_close(node, tmp_path, tls):
    with running_chat(tmp_path, tls=tls, limits={"max_frame": 1024}) as srv:
        listener = whereis("chat.listener")
        r = Raw(srv)
        r.raw((10**9).to_bytes(4, "big"))  # a 1 GB frame announced; no body follows
        f = r.frame()
        assert (f["t"], f["code"], f["id"]) == ("error", "frame_too_large", None)
        assert r.frame() is None
        r.close()
        assert whereis("chat.listener") == listener
        assert_listener_alive(srv)


def test_zero_length_frame_is_a_bad_frame_and_the_connection_goes_on(node, tmp_path):
    with running_chat(tmp_path) as srv:
        r = Raw(srv)
        r.raw(b"\0\0\0\0")  # docs/protocol.md: 1 <= N <= max_frame
        f = r.frame()
        assert (f["t"], f["code"], f["id"]) == ("error", "bad_frame", None)
        assert "empty frame" in f["message"]
        r.send({"t": "ping", "id": 2})
        assert r.frame() == {"t": "pong", "id": 2}
        r.close()
        assert_listener_alive(srv)


@pytest.mark.parametrize("req", [
    {"t": "ack", "id": 7, "ids": list(range(5000))},
    {"t": "read", "id": 7, "from": A, "mids": ["x"] * 5000},
    {"t": "ping", "id": 7, "extra": {str(i): i for i in range(5000)}},
], ids=["ack", "read", "map"])
def test_every_request_with_an_id_is_answered_even_with_a_too_large_array(node, tmp_path,
                                                                          req):
    with running_chat(tmp_path) as srv:
        r = Raw(srv)
        r.send(req)
        f = r.frame()
        assert (f["t"], f["code"], f["id"]) == ("error", "bad_request", 7)
        assert "4096" in f["message"]
        r.send({"t": "ping", "id": 8})
        assert r.frame() == {"t": "pong", "id": 8}
        r.close()


def test_a_closing_error_answers_the_request_that_caused_it(node, tmp_path):
    with running_chat(tmp_path, limits={"max_bad_frames": 3}) as srv:
        r = Raw(srv, hello=False)
        r.send({"t": "hello", "id": 4, "version": 99})
        f = r.frame()
        assert (f["code"], f["id"]) == ("unsupported_version", 4)
        assert r.frame() is None
        r = Raw(srv, hello=False)
        r.send({"t": "hello", "id": 5, "version": "2"})  # a malformed first hello
        f = r.frame()
        assert (f["code"], f["id"]) == ("hello_required", 5)
        assert "bad_request" in f["message"]
        assert r.frame() is None
        r = Raw(srv)
        for i in range(3):
            r.send({"t": "nope", "id": 10 + i})
        assert [(f["code"], f["id"]) for f in (r.frame(), r.frame(), r.frame())] == [
            ("unknown_type", 10), ("unknown_type", 11), ("too_many_bad_frames", 12)]
        assert r.frame() is None


def test_wrong_admin_tokens_count_as_bad_frames(node, tmp_path):
    with running_chat(tmp_path, admin_token="right",
                      limits={"max_bad_frames": 3}) as srv:
        r = Raw(srv)
        codes = []
        for i in range(10):
            r.send({"t": "admin_provision", "id": i, "token": f"guess{i}", "phones": [A]})
            f = r.frame()
            if f is None:
                break
            codes.append(f["code"])
        assert codes == ["forbidden", "forbidden", "too_many_bad_frames"]
        assert r.frame() is None


def test_the_hello_reply_tells_the_limits(node, tmp_path):
    with running_chat(tmp_path, limits={"max_body": 1000, "max_bad_frames": 7}) as srv:
        r = Raw(srv, hello=False)
        r.send({"t": "hello", "id": 0, "version": 2})
        f = r.frame()
        assert (f["max_body"], f["max_bad_frames"], f["max_frame"]) == (1000, 7, 65536)


def test_truncated_frame_then_close_does_not_disturb_the_server(node, tmp_path):
    with running_chat(tmp_path) as srv:
        r = Raw(srv)
        r.raw(encode({"t": "ping", "id": 1})[:-2])
        r.s.shutdown(socket.SHUT_WR)
        assert r.frame() is None  # the server saw EOF mid-frame and closed
        r.close()
        assert_listener_alive(srv)


@pytest.mark.parametrize("frame, code", [
    (body([1, 2]), "bad_frame"),
    (body("ping"), "bad_frame"),
    (b"\0\0\0\1\xc1", "bad_frame"),
    (body({"t": "launch", "id": 4}), "unknown_type"),
    (body({"t": "send", "id": 5, "to": 1, "cmid": "c", "body": "x"}), "bad_request"),
    (body({"t": "ping", "id": "one"}), "bad_request"),
])
def test_bad_frames_get_an_error_frame_and_the_connection_goes_on(node, tmp_path, frame,
                                                                   code):
    with running_chat(tmp_path) as srv:
        r = Raw(srv)
        r.raw(frame)
        f = r.frame()
        assert (f["t"], f["code"]) == ("error", code)
        assert f["message"]
        r.send({"t": "ping", "id": 9})
        assert r.frame() == {"t": "pong", "id": 9}
        r.close()


def test_wrong_field_type_error_names_the_field_and_keeps_the_id(node, tmp_path):
    with running_chat(tmp_path) as srv:
        r = Raw(srv)
        r.send({"t": "register", "id": 12, "phone": 14155550100})
        f = r.frame()
        assert (f["code"], f["id"]) == ("bad_request", 12)
        assert "'phone': expected str, got int" in f["message"]
        r.close()


def test_first_frame_must_be_hello(node, tmp_path):
    with running_chat(tmp_path) as srv:
        r = Raw(srv, hello=False)
        r.send({"t": "ping", "id": 1})
        assert r.frame()["code"] == "hello_required"
        assert r.frame() is None
        r = Raw(srv, hello=False)
        r.send({"t": "hello", "id": 1, "version": 99})
        assert r.frame()["code"] == "unsupported_version"
        assert r.frame() is None


def test_a_flood_of_bad_frames_closes_the_connection(node, tmp_path):
    with running_chat(tmp_path, limits={"max_bad_frames": 5}) as srv:
        r = Raw(srv)
        r.raw(body([0]) * 1000)
        codes = []
        while (f := r.frame()) is not None:
            codes.append(f["code"])
        assert codes == ["bad_frame"] * 4 + ["too_many_bad_frames"]
        r.close()
        assert_listener_alive(srv)


def test_idle_connection_is_closed_with_idle_timeout(node, tmp_path):
    with running_chat(tmp_path, limits={"idle_timeout": 0.3}) as srv:
        r = Raw(srv)
        f = r.frame()  # blocks until the server gives up on us
        assert (f["code"], f["id"]) == ("idle_timeout", None)
        assert r.frame() is None


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_client_that_never_reads_is_disconnected_not_buffered(node, tmp_path, tls, caplog):
    """The server gives up on a client that reads nothing after ``idle_timeout`` (0.5 s
    here) of waiting to write: it says so in its log (``slow_reader``), and the client
    sees its connection reset, long before its own 30 s timeout (which would mean the
    server never hung up: a pinned connection process)."""
    caplog.set_level("WARNING", logger="chat.connection")
    with running_chat(tmp_path, tls=tls, limits={"idle_timeout": 0.5, "send_buffer": 4096,
                                                 "max_frame": 1 << 20}) as srv:
        s = socket.create_connection((srv.host, srv.port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        if tls:
            s = client_tls().wrap_socket(s, server_hostname="localhost")
        s.sendall(encode({"t": "hello", "id": 0, "version": 1}))
        # Requests whose replies we never read: the server must stop and hang up. (A
        # frame of pings at a time: the server answers them while we keep sending.)
        big = encode({"t": "ping", "id": 1}) * 2000
        s.settimeout(30.0)
        outcome = "still open"
        for _ in range(5000):
            try:
                s.sendall(big)
            except TimeoutError:  # our own timeout: the server is stuck, not closed
                outcome = "client timeout"
                break
            except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
                outcome = "reset"  # the server hung up on us
                break
        s.close()
        assert outcome == "reset"
        assert any("slow_reader" in r.getMessage() for r in caplog.records)
        assert_listener_alive(srv)


def test_garbage_on_the_tls_port_is_only_a_failed_handshake(node, tmp_path):
    with running_chat(tmp_path, tls=True) as srv:
        s = socket.create_connection((srv.host, srv.port), timeout=10.0)
        s.sendall(b"GET / HTTP/1.0\r\n\r\n" * 10)
        try:
            while s.recv(4096):
                pass
        except ConnectionResetError:
            pass
        s.close()
        assert_listener_alive(srv)


def test_an_ack_without_id_needs_protocol_version_2(node, tmp_path):
    with running_chat(tmp_path) as srv:
        r = Raw(srv)  # version 1
        r.send({"t": "ack", "ids": [1]})
        f = r.frame()
        assert (f["t"], f["code"], f["id"]) == ("error", "bad_request", None)
        r.close()
        r = Raw(srv, hello=False)
        r.send({"t": "hello", "id": 0, "version": 2})
        assert r.frame()["version"] == 2
        r.send({"t": "ack", "ids": [1]})  # not in a session yet
        assert r.frame()["code"] == "not_authenticated"
        r.send({"t": "ping", "id": 5})  # still answered in order, and still open
        assert r.frame() == {"t": "pong", "id": 5}
        r.close()
