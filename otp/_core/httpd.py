"""HTTP/1.1 for ``otp.httpd``: gevent's pywsgi parser and handler, driven by processes.

pywsgi's ``WSGIServer`` is used only as a connection handler: ``handle(conn, addr)``
reads requests off one connected socket, runs the WSGI application and writes the
responses, in the calling greenlet (a process of the node). Its own accept loop and
greenlet spawning are never started: ``otp.httpd`` accepts and spawns processes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import gevent.pywsgi as _pywsgi

__all__ = ["SOCKET_KEY", "wsgi_finish_early", "wsgi_handler"]

#: the environ key under which the application finds its connection's socket
SOCKET_KEY = "otp.httpd.socket"


class _Handler(_pywsgi.WSGIHandler):
    """pywsgi's handler, giving the application its connection's socket."""

    def get_environ(self) -> Any:
        env = super().get_environ()
        env[SOCKET_KEY] = self.socket
        return env


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
