"""HTTP/1.1 for ``otp.httpd``: gevent's pywsgi parser and handler, driven by processes.

pywsgi's ``WSGIServer`` is used only as a connection handler: ``handle(conn, addr)``
reads requests off one connected socket, runs the WSGI application and writes the
responses, in the calling greenlet (a process of the node). Its own accept loop and
greenlet spawning are never started: ``otp.httpd`` accepts and spawns processes.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import time
from collections.abc import Callable
from typing import Any

import gevent.pywsgi as _pywsgi
import gevent.socket as _gsocket
import gevent.ssl as _gssl
from gevent import monkey

from otp._core.threadpool import run_in_thread

__all__ = ["SOCKET_KEY", "DirectBody", "FileBody", "wsgi_direct_body", "wsgi_finish_early",
           "wsgi_handler"]

#: the interpreter's own ``select.poll`` (a pool thread must not use the hub's)
_os_poll: Callable[[], Any] = monkey.get_original("select", "poll")

#: the environ key under which the application finds its connection's socket
SOCKET_KEY = "otp.httpd.socket"


class _Handler(_pywsgi.WSGIHandler):
    """pywsgi's handler, giving the application its connection's socket, and sending a
    ``FileBody`` with sendfile(2) in the pool when it can."""

    def get_environ(self) -> Any:
        env = super().get_environ()
        env[SOCKET_KEY] = self.socket
        return env

    def process_result(self) -> None:
        body = self.result
        if not isinstance(body, FileBody) or isinstance(self.socket, _gssl.SSLSocket):
            super().process_result()
            return
        self.write(b"")  # the status line and headers, now
        if self.response_use_chunked or self.code in (204, 304):
            for data in body:
                if data:
                    self.write(data)
            if self.response_use_chunked:
                self._sendall(b"0\r\n\r\n")
            return
        sent = body.send_to(self.socket)
        self.response_length += sent
        if sent < body.count:  # the file was shorter than promised: end the connection
            self.close_connection = True


class FileBody:
    """A response body: ``count`` bytes of the open binary file ``file`` from
    ``offset``, returned by a WSGI application. On a plain connection, with a
    ``Content-Length``, it goes out with sendfile(2) in a pool thread, a ``piece`` at
    a time (no byte of it on the node's thread); otherwise (TLS, chunked) it is read in
    a pool thread a ``piece`` at a time and written by the connection's process. The
    file is closed at the end. ``around(job)``, if given, runs each pool job
    (``job()``), e.g. within the application's own limit on jobs at once."""

    __slots__ = ("_around", "count", "file", "offset", "piece")

    def __init__(self, file: Any, offset: int, count: int, *, piece: int = 1 << 20,
                 around: Callable[[Callable[[], int]], int] | None = None) -> None:
        if offset < 0 or count < 0 or piece < 1:
            raise ValueError(f"expected offset >= 0, count >= 0, piece >= 1, got "
                             f"{offset}, {count}, {piece}")
        self.file, self.offset, self.count, self.piece = file, offset, count, piece
        self._around = around

    def _job(self, fn: Callable[..., Any], *args: Any) -> Any:
        def job() -> Any:
            return run_in_thread(fn, *args)

        return job() if self._around is None else self._around(job)

    def __iter__(self) -> Any:
        fd, off, left = self.file.fileno(), self.offset, self.count
        while left > 0:
            data = self._job(os.pread, fd, min(self.piece, left), off)
            if not data:
                return
            off += len(data)
            left -= len(data)
            yield data

    def send_to(self, sock: Any, *, gap: float = 0.005, budget: float = 0.25) -> int:
        """(The handler.) Send it all on the plain socket ``sock``; the bytes sent
        (fewer than ``count``: the file ended early)."""
        fd, sent = self.file.fileno(), 0
        timeout = sock.gettimeout()
        while sent < self.count:
            _gsocket.wait_write(sock.fileno(), timeout=timeout,
                                timeout_exc=TimeoutError(f"the client took nothing for "
                                                         f"{timeout} s"))
            out = os.dup(sock.fileno())  # closed by the thread
            n, end = self._job(_send_file, out, fd, self.offset + sent,
                               min(self.piece, self.count - sent), gap, budget)
            sent += n
            if end:
                break
        return sent

    def close(self) -> None:
        self.file.close()


def wsgi_handler(listener: Any, app: Callable[..., Any], *,
                 access_log: logging.Logger | None, error_log: logging.Logger | None,
                 environ: dict[str, Any] | None) -> Callable[[Any, Any], None]:
    """``handle(conn, addr)``: serve the HTTP requests of one connected socket with
    ``app``, in the caller, until the connection ends."""
    server = _pywsgi.WSGIServer(listener, app, handler_class=_Handler, log=access_log,
                                error_log=error_log, environ=environ)
    handle: Callable[[Any, Any], None] = server.handle
    return handle


def wsgi_finish_early(environ: dict[str, Any]) -> None:
    """The response is sent without reading (the rest of) the request body: the
    connection is closed after it, instead of the handler reading and discarding what
    is left."""
    inp = environ.get("wsgi.input")
    if inp is not None:
        try:
            inp.content_length = inp.position
            inp.chunked_input = False
        except AttributeError:
            pass


class DirectBody:
    """The rest of one request's body (it has a ``Content-Length``), read straight off
    the connection's socket in a thread of the pool: no byte of it is copied, hashed or
    written on the hub's thread (from ``wsgi_direct_body``).

    ``wait(timeout)`` (in the process, cooperative) returns once the socket has data or
    its end; ``read(size, consume)`` then runs in a pool thread: it reads up to ``size``
    bytes into a buffer kept for the body, calls ``consume(view)`` with them (in that
    thread), and returns how many it read; ``0`` at the end of the body or of the
    connection (``remaining`` says which). A read waits for more bytes at most ``gap``
    seconds once it has some, and stops after ``budget`` seconds in all: a slow client
    never holds a pool thread for long.
    """

    __slots__ = ("_buf", "_fresh", "_inp", "_sock", "_timeout", "remaining")

    def __init__(self, inp: Any, sock: Any) -> None:
        self._inp = inp
        self._sock = sock
        self._timeout = sock.gettimeout()
        self._buf = bytearray()
        self._fresh = True
        self.remaining: int = int(inp.content_length) - int(inp.position)

    def wait(self, timeout: float | None = None) -> None:
        """Until the socket has data (or its end, or an error): cooperative, no thread
        held. ``TimeoutError`` after ``timeout`` seconds (None: the socket's own)."""
        if self.remaining <= 0:
            return
        t = self._sock.gettimeout() if timeout is None else timeout
        if self._fresh:
            # The first bytes may be in pywsgi's reader already (read with the headers):
            # wait there. A pending "100 Continue" goes first, as pywsgi's read sends it.
            self._inp.read(0)
            self._sock.settimeout(t)
            try:
                self._inp.rfile.peek(1)
            finally:
                self._sock.settimeout(self._timeout)
            return
        _gsocket.wait_read(self._sock.fileno(), timeout=t,
                           timeout_exc=TimeoutError(f"no body data within {t} s"))

    def read(self, size: int, consume: Callable[[memoryview], Any], *,
             gap: float = 0.005, budget: float = 0.25) -> int:
        """Read up to ``size`` bytes in a pool thread and pass them to ``consume``
        there; the count read (0: the end)."""
        if size < 1:
            raise ValueError(f"size: expected 1 byte or more, got {size}")
        want = min(size, self.remaining)
        if want <= 0:
            return 0
        if len(self._buf) < want:
            self._buf = bytearray(max(want, size))
        view = memoryview(self._buf)
        start = 0
        if self._fresh:  # what pywsgi's reader holds already
            self._fresh = False
            self._inp.read(0)
            rfile = self._inp.rfile
            held = rfile.peek(1)[:want]  # (waits here unless ``wait`` did)
            start = rfile.readinto(view[:len(held)]) if held else 0
        while True:
            fd = os.dup(self._sock.fileno())  # closed by the thread: never a reused number
            got, eof = run_in_thread(_read_into, fd, view, start, want, consume, gap,
                                     budget)
            if got or eof:
                break
            self.wait()  # (nothing came within the budget after all)
        self.remaining -= got
        self._inp.position += got
        return got


def _read_into(fd: int, view: memoryview, start: int, want: int,
               consume: Callable[[memoryview], Any], gap: float,
               budget: float) -> tuple[int, bool]:
    """(In a pool thread.) Fill ``view[start:want]`` from the non-blocking socket
    ``fd`` (a duplicate, closed here), then ``consume`` the bytes; ``(count, eof)``."""
    got, eof = start, False
    try:
        deadline = time.monotonic() + budget
        poller = None
        while got < want:
            try:
                n = os.readv(fd, [view[got:want]])
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                if poller is None:
                    poller = _os_poll()
                    poller.register(fd, select.POLLIN)
                wait = min(left, gap) if got else left
                if not poller.poll(wait * 1000) and got:
                    break  # the client paused: give what came
                continue
            except InterruptedError:
                continue
            except OSError as e:
                if e.errno in (errno.ECONNRESET, errno.ENOTCONN):
                    eof = True
                    break
                raise
            if n == 0:
                eof = True  # the client closed (or the read side was shut down)
                break
            got += n
        if got:
            consume(view[:got])
        return got, eof
    finally:
        os.close(fd)


def wsgi_direct_body(environ: dict[str, Any]) -> DirectBody | None:
    """The request's body as a ``DirectBody``, or None when it must be read through
    ``wsgi.input``: a chunked body, no ``Content-Length``, or TLS (the session is not
    shared with a thread)."""
    inp = environ.get("wsgi.input")
    sock = environ.get(SOCKET_KEY)
    if (not isinstance(inp, _pywsgi.Input) or inp.chunked_input
            or inp.content_length is None
            or not isinstance(sock, _gsocket.socket) or isinstance(sock, _gssl.SSLSocket)):
        return None
    return DirectBody(inp, sock)


def _send_file(out: int, fd: int, offset: int, count: int, gap: float,
               budget: float) -> tuple[int, bool]:
    """(In a pool thread.) sendfile(2) up to ``count`` bytes of ``fd`` from ``offset``
    to the non-blocking socket ``out`` (a duplicate, closed here); ``(sent, the file
    ended)``."""
    sent = 0
    try:
        deadline = time.monotonic() + budget
        poller = None
        while sent < count:
            try:
                n = os.sendfile(out, fd, offset + sent, count - sent)
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                if poller is None:
                    poller = _os_poll()
                    poller.register(out, select.POLLOUT)
                if not poller.poll(min(left, gap) * 1000 if sent else left * 1000) and sent:
                    break
                continue
            except InterruptedError:
                continue
            if n == 0:
                return sent, True
            sent += n
        return sent, False
    finally:
        os.close(out)
