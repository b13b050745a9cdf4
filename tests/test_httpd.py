"""otp.httpd: a WSGI application served on a socket the caller owns, every connection a
process linked to the owner, fetched over 127.0.0.1 with urllib."""

from __future__ import annotations

import socket
import textwrap
import urllib.error
import urllib.request
from typing import Any

import pytest

from otp import httpd
from otp.process import Down, Exit, is_alive, monitor, receive, self, spawn, trap_exit
from otp.process import exit as exit_

pytestmark = pytest.mark.otp(clock="real")


def listener() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    return s


def get(server: httpd.HttpServer, path: str, data: bytes | None = None) -> tuple[int, bytes]:
    host, port = server.address
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", data, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_httpd_serves_a_wsgi_app_in_a_process_per_connection(node):
    seen: list[Any] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append((self(), environ["PATH_INFO"], environ[httpd.SOCKET_KEY] is not None,
                     environ["X_EXTRA"]))
        body = environ["wsgi.input"].read() or environ["PATH_INFO"].encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]

    sock = listener()
    server = httpd.serve(sock, app, environ={"X_EXTRA": "yes"})
    assert get(server, "/a") == (200, b"/a")
    assert get(server, "/b", b"posted") == (200, b"posted")
    assert [s[1:] for s in seen] == [("/a", True, "yes"), ("/b", True, "yes")]
    assert seen[0][0] != self() and seen[0][0] != seen[1][0]  # a process each
    server.stop()
    sock.close()


def test_httpd_app_exception_is_answered_500_and_the_server_goes_on(node):
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ["PATH_INFO"] == "/boom":
            raise RuntimeError("boom")
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    sock = listener()
    server = httpd.serve(sock, app)
    assert get(server, "/boom")[0] == 500
    assert get(server, "/fine") == (200, b"ok")
    server.stop()
    sock.close()


def test_httpd_stop_ends_the_acceptor_without_an_exit_to_the_owner(node):
    trap_exit(True)
    sock = listener()
    server = httpd.serve(sock, lambda e, sr: [])
    acceptor = server.acceptor
    ref = monitor(acceptor)
    server.stop()
    assert receive(lambda m: isinstance(m, Down) and m.ref == ref, 5.0).reason == "killed"
    assert receive(lambda m: isinstance(m, Exit) and m.pid == acceptor, 0,
                   default=None) is None  # unlinked first: no exit signal
    sock.close()


def test_httpd_owner_exit_ends_the_acceptor(node):
    got: list[Any] = []

    def owner() -> None:
        sock = listener()
        got.append(httpd.serve(sock, lambda e, sr: []).acceptor)
        receive()  # until killed

    pid = spawn(owner)
    while not got:
        receive(None, 0.01, default=None)
    ref = monitor(got[0])
    exit_(pid, "kill")
    msg = receive(lambda m: isinstance(m, Down) and m.ref == ref, 5.0)
    assert msg.reason == "killed" and not is_alive(got[0])


def test_httpd_timeout_must_be_positive(node):
    sock = listener()
    with pytest.raises(ValueError, match="timeout: expected seconds > 0, got 0"):
        httpd.serve(sock, lambda e, sr: [], timeout=0)
    sock.close()


def test_the_module_example_runs(capsys):
    doc = httpd.__doc__
    assert doc is not None
    start = doc.index("    import otp\n")
    end = doc.index("\n", doc.index("print(otp.run(main))")) + 1
    exec(compile(textwrap.dedent(doc[start:end]), "otp.httpd docstring", "exec"), {})
    assert capsys.readouterr().out.strip().endswith("hello /world")


def _direct_app(log: list[Any]) -> Any:
    """Reads its body with ``httpd.direct_body`` a MB at a time; answers with the SHA-256
    and size of what came, and whether ``consume`` ran off the node's thread."""
    import hashlib

    from otp.lowlevel import get_os_ident

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        body = httpd.direct_body(environ)
        h, seen, hub = hashlib.sha256(), [0], get_os_ident()
        threads: set[int] = set()

        def consume(view: memoryview) -> None:
            threads.add(get_os_ident())
            h.update(view)
            seen[0] += len(view)

        if body is None:
            h.update(environ["wsgi.input"].read())
            log.append("wsgi.input")
        else:
            while body.remaining:
                body.wait()
                if not body.read(1 << 20, consume):
                    break
            log.append(("direct", seen[0], body.remaining, hub not in threads))
        out = h.hexdigest().encode()
        start_response("200 OK", [("Content-Length", str(len(out)))])
        return [out]

    return app


def test_httpd_direct_body_is_read_off_the_nodes_thread_and_keep_alive_goes_on(node):
    import hashlib
    import http.client
    import os

    log: list[Any] = []
    sock = listener()
    server = httpd.serve(sock, _direct_app(log))
    c = http.client.HTTPConnection(*server.address, timeout=10)
    try:
        for data in (os.urandom(3 * (1 << 20) + 7), b"small"):  # one connection, two bodies
            c.request("POST", "/up", body=data)
            r = c.getresponse()
            assert (r.status, r.read()) == (200, hashlib.sha256(data).hexdigest().encode())
        c.request("POST", "/up", body=iter([b"chunked ", b"body"]), encode_chunked=True)
        r = c.getresponse()
        assert (r.status, r.read()) == (200, hashlib.sha256(b"chunked body").hexdigest()
                                        .encode())
    finally:
        c.close()
    assert log == [("direct", 3 * (1 << 20) + 7, 0, True), ("direct", 5, 0, True),
                   "wsgi.input"]
    server.stop()
    sock.close()


def test_httpd_direct_body_cut_short_by_the_client_reads_what_came(node):
    log: list[Any] = []
    sock = listener()
    server = httpd.serve(sock, _direct_app(log))
    s = socket.create_connection(server.address, timeout=10)
    s.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" + b"a" * 10)
    s.shutdown(socket.SHUT_WR)  # 10 bytes of the million, then the end
    assert s.recv(100).startswith(b"HTTP/1.1 200")
    s.close()
    assert log == [("direct", 10, 1_000_000 - 10, True)]
    server.stop()
    sock.close()


def test_httpd_direct_body_answers_expect_100_continue_first(node):
    log: list[Any] = []
    sock = listener()
    server = httpd.serve(sock, _direct_app(log))
    s = socket.create_connection(server.address, timeout=10)
    s.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
              b"Expect: 100-continue\r\n\r\n")
    assert s.recv(100).startswith(b"HTTP/1.1 100 Continue")  # sent before the body is
    s.sendall(b"hello")
    assert s.recv(1000).startswith(b"HTTP/1.1 200")
    s.close()
    assert log == [("direct", 5, 0, True)]
    server.stop()
    sock.close()


def test_httpd_file_body_is_sent_whole_or_in_part_and_the_file_closed(node, tmp_path):
    import http.client
    import os

    data = os.urandom(3 * (1 << 20) + 11)
    path = tmp_path / "blob"
    path.write_bytes(data)
    opened: list[Any] = []

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        first, n = (0, len(data)) if environ["PATH_INFO"] == "/all" else (1000, 70_000)
        f = open(path, "rb")
        opened.append(f)
        headers = [] if environ["QUERY_STRING"] == "chunked" else [("Content-Length",
                                                                    str(n))]
        start_response("200 OK", headers)
        return httpd.FileBody(f, first, n, piece=1 << 20)

    sock = listener()
    server = httpd.serve(sock, app)
    c = http.client.HTTPConnection(*server.address, timeout=10)
    try:
        for target, want in (("/all", data), ("/part", data[1000:71_000]),
                             ("/part?chunked", data[1000:71_000])):  # one connection
            c.request("GET", target)
            r = c.getresponse()
            assert (r.status, r.read()) == (200, want)
    finally:
        c.close()
    assert len(opened) == 3 and all(f.closed for f in opened)
    server.stop()
    sock.close()


def test_httpd_file_body_shorter_than_promised_ends_the_connection(node, tmp_path):
    import http.client

    path = tmp_path / "short"
    path.write_bytes(b"only this")

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [("Content-Length", "1000")])
        return httpd.FileBody(open(path, "rb"), 0, 1000)

    sock = listener()
    server = httpd.serve(sock, app)
    c = http.client.HTTPConnection(*server.address, timeout=10)
    c.request("GET", "/")
    r = c.getresponse()
    with pytest.raises(http.client.IncompleteRead) as e:
        r.read()
    assert e.value.partial == b"only this"
    c.close()
    server.stop()
    sock.close()
