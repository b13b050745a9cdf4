"""An HTTP/1.1 server for WSGI applications, every connection a process (OTP's ``inets``
``httpd``, in small).

The caller owns the listening socket; ``serve`` starts an acceptor process on it and,
for each connection, a process that parses its requests and runs the WSGI application
(PEP 3333). The socket is the node's cooperative socket: a slow client blocks only its
own process, and the application may ``call`` other processes, ``receive``, or wait in
``otp.threads.run_in_thread`` as any process does::

    import otp
    otp.patch()                   # first: the stdlib's sockets become cooperative
    import socket
    import urllib.request
    from otp import httpd

    def hello(environ, start_response):
        body = f"hello {environ['PATH_INFO']}".encode()
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])
        return [body]

    def main():
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        server = httpd.serve(sock, hello)
        host, port = server.address
        with urllib.request.urlopen(f"http://{host}:{port}/world") as r:
            text = r.read().decode()
        server.stop()
        sock.close()
        return text

    print(otp.run(main))          # hello /world

Links: the acceptor and every connection process are linked to the process that
called ``serve`` (its *owner*, typically a gen_server that traps exits): when the owner
ends, they end; when one of them crashes, the owner gets its exit (the acceptor's
crash means nothing more is accepted). A connection that ends normally sends nothing.

TLS: ``serve(..., tls=ssl_context)`` wraps each accepted connection (server side) in
its own process; a failed handshake is logged (INFO, ``otp.httpd``) and closes only
that connection. ``timeout`` bounds every wait on a connection's socket (a client
that says nothing, a handshake that never ends): ``TimeoutError`` in the application's
read, or the connection closed between requests.

The application finds its connection's socket at ``environ[httpd.SOCKET_KEY]``
(e.g. to ``shutdown`` its read side from a watchdog process), and may answer without
reading the whole request body with ``finish_early(environ)`` (a refused 1 GB upload
is not read; the connection is closed after the response).

Large bodies: ``direct_body(environ)`` hands the application the rest of a request
body with a ``Content-Length`` to be read straight off the socket in a thread of the
node's pool, each piece given to a function of the application *in that thread* (to
hash it and write it to disk, say): the node's own thread copies none of it::

    body = httpd.direct_body(environ)          # None: read environ["wsgi.input"]
    while body.remaining:
        body.wait()                            # cooperative: data has come
        if not body.read(1 << 20, lambda view: out.write(view)):
            break                              # the client closed early

and a large response body from a file, ``FileBody(file, offset, count)`` (returned by
the application): sent with sendfile(2) from a pool thread on a plain connection.

Failure semantics: an exception from the application is logged on ``error_log`` and
answered ``500`` by the handler; an accept that fails (too many open files) is logged
and retried after 50 ms; ``stop()`` ends the acceptor and every connection at once
(responses in progress are cut); the listening socket stays the caller's to close.
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Callable, Iterable
from typing import Any

from otp.lowlevel import (
    SOCKET_KEY,
    DirectBody,
    FileBody,
    wsgi_direct_body,
    wsgi_finish_early,
    wsgi_handler,
)
from otp.process import Pid, link, sleep, spawn, spawn_link, unlink
from otp.process import exit as _exit
from otp.process import self as _self

__all__ = ["SOCKET_KEY", "DirectBody", "FileBody", "HttpServer", "WSGIApp", "direct_body",
           "finish_early", "serve"]

#: a WSGI application: ``app(environ, start_response) -> iterable of bytes``
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

log = logging.getLogger("otp.httpd")


class HttpServer:
    """A running server (from ``serve``): its address, its acceptor, ``stop``."""

    def __init__(self, sock: socket.socket, handle: Callable[[Any, Any], None],
                 owner: Pid, tls: ssl.SSLContext | None, timeout: float) -> None:
        host, port = sock.getsockname()[:2]
        self.address: tuple[str, int] = (host, port)
        self._sock = sock
        self._handle = handle
        self._owner = owner
        self._tls = tls
        self._timeout = timeout
        self._conns: set[Pid] = set()
        self._stopped = False
        self.acceptor: Pid = spawn_link(self._accept_loop)

    def connections(self) -> int:
        """Connections being served now."""
        return len(self._conns)

    def stop(self) -> None:
        """End the acceptor and every connection (without an exit signal to the owner,
        when the owner calls it). The listening socket is left open: close it."""
        self._stopped = True
        for pid in (self.acceptor, *self._conns):
            unlink(pid)
            _exit(pid, "kill")
        self._conns.clear()

    # -------------------------------------------------------------- in the acceptor

    def _accept_loop(self) -> None:
        while not self._stopped:
            try:
                conn, addr = self._sock.accept()
            except OSError as e:
                if self._stopped:
                    return
                log.warning("httpd: accept failed: %s", e)
                sleep(0.05)
                continue
            spawn(self._conn_main, conn, addr)

    # -------------------------------------------------------------- in a connection

    def _conn_main(self, conn: socket.socket, addr: Any) -> None:
        me = _self()
        try:
            link(self._owner)
        except Exception:  # the owner is gone (stopping)
            conn.close()
            return
        self._conns.add(me)
        conn.settimeout(self._timeout)
        try:
            if self._tls is not None:
                try:
                    conn = self._tls.wrap_socket(conn, server_side=True)
                except (OSError, ValueError) as e:
                    log.info("httpd: TLS handshake with %s failed: %s", addr, e)
                    return
            self._handle(conn, addr)
        finally:
            self._conns.discard(me)
            try:
                conn.close()
            except OSError:
                pass


def serve(sock: socket.socket, app: WSGIApp, *, tls: ssl.SSLContext | None = None,
          timeout: float = 60.0, environ: dict[str, Any] | None = None,
          access_log: logging.Logger | None = None,
          error_log: logging.Logger | None = None) -> HttpServer:
    """Serve ``app`` on ``sock`` (bound and listening, owned by the caller) from now
    on; the caller becomes the owner (see the module docstring). ``environ``: extra
    keys of every request's environ (``SERVER_NAME``, ``wsgi.url_scheme``...).
    ``access_log``: a logger for one line per request (None: no access log);
    ``error_log``: where the application's exceptions are logged (None: the
    ``otp.httpd`` logger)."""
    if not isinstance(timeout, int | float) or timeout <= 0:
        raise ValueError(f"timeout: expected seconds > 0, got {timeout!r}")
    env = dict(environ or {})
    if tls is not None:
        env.setdefault("wsgi.url_scheme", "https")
    handle = wsgi_handler(sock, app, access_log=access_log,
                          error_log=error_log if error_log is not None else log,
                          environ=env)
    return HttpServer(sock, handle, _self(), tls, float(timeout))


def finish_early(environ: dict[str, Any]) -> None:
    """Answer this request without reading (the rest of) its body: the connection is
    closed after the response (send ``Connection: close`` too)."""
    wsgi_finish_early(environ)


def direct_body(environ: dict[str, Any]) -> DirectBody | None:
    """The rest of this request's body, to be read in a thread of the node's pool
    (``DirectBody``: ``wait``, ``read(size, consume)``, ``remaining``), or None when it
    must be read through ``environ["wsgi.input"]``: a chunked body, no
    ``Content-Length``, or a TLS connection. Read the body one way only."""
    return wsgi_direct_body(environ)
