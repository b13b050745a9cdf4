"""Serve a node in the foreground until it is told to stop: the one entry point behind
``python -m chat`` (``make run``) and a release's ``bin/<name> start`` / ``daemon``.

::

    import sys
    import otp
    otp.patch()                                   # first, before socket/ssl are imported
    from otp import application, serve

    def start(config):                            # the node's first process, config applied
        application.start("chat", type="permanent")
        print("up")

    sys.exit(serve.run(start, config_paths=["config/dev.yaml"], label="chat"))

What ``run`` does, in order:

1. logging: ``otp.logger``'s sink on the root logger at ``log_level`` (progress
   reports only at ``DEBUG``);
2. SIGTERM and SIGINT ask for a graceful stop (a second SIGINT exits at once, 130);
3. on a fresh node, in its first process (registered as ``otp.serve``): loads the
   config files (``otp.config.load``), hands them to ``otp.application.configure``,
   calls ``start(config)``, then applies the node's GC settings (below);
   (distribution, when ``node.dist.name`` is set, starts just before ``start``);
4. waits for the stop: a signal, or ``serve.stop()`` from any process of the node (a
   release's ``stop`` command). Any other message the serving process gets goes to
   ``on_message(msg)``, which returns True to stop;
5. ``on_stop()``, then every application stops, most recent first; returns 0.

The node's own settings are the ``node:`` section of the config files (like the
``kernel`` application's env in an OTP ``sys.config``)::

    node:
      gc:
        thresholds: [10000, 4, 1000]   # gc.set_threshold after the start
        freeze: true                   # gc.freeze(): what the start made is never scanned

A long-running server that makes few reference cycles pauses far less with fewer,
cheaper collector passes; ``gc=`` gives the settings used when the config has none.

Distribution (``otp.dist``) starts before ``start(config)`` when ``node.dist.name`` is
set; the node then joins its seeds (``otp.dist.join``: connects to them, retrying with
back-off while one is down, and to every node they know)::

    node:
      dist:
        name: chat1@10.0.0.5            # name@host; the node's name from now on
        cookie_file: /etc/chat/cookie   # mode 0400 (else ~/.erlang.cookie)
        listen: 10.0.0.5                # the address to listen on (a free port)
        epmd_port: 4369                 # optional (else ERL_EPMD_PORT, else 4369)
        seeds: [chat2@10.0.0.6, chat3@10.0.0.7]
        tls:                            # required to listen on a non-loopback address
          certfile: /etc/chat/tls/node.pem
          keyfile: /etc/chat/tls/node.key
          cafile: /etc/chat/tls/ca.pem  # peers must present a certificate it signed

``insecure: true`` listens off loopback without TLS (a trusted network only);
``net_ticktime`` (seconds) and ``hidden`` are ``otp.dist.start``'s, and so is
``busy_wait_us`` (default 200; 0 on a host shared with other busy programs).

Failure semantics: a start that fails (a config error, an application that does not
start, an address in use, a missing file) prints one line ``<label>: cannot start:
<why>`` on stderr, without a traceback, and returns 1; so does a node halted by a
permanent application that stopped (``<label>: node halted: ...``).

When not to use: in tests (``otp.run`` and the ``node`` fixture), or for a node that
should stop when its first function returns (``python -m otp run``).
"""

from __future__ import annotations

import contextlib
import gc as _gc
import logging
import os
import signal
import socket
import ssl
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = [
    "NAME",
    "DistSettings",
    "GcSettings",
    "TlsFiles",
    "apply_gc",
    "dist_settings",
    "node_settings",
    "run",
    "start_dist",
    "stop",
    "why",
]

#: the serving process's registered name
NAME = "otp.serve"
_STOP = "otp.serve.stop"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GcSettings(_Model):
    """The cyclic garbage collector of a serving node (``node.gc`` in the config)."""

    #: ``gc.set_threshold``: allocations between young passes; young passes per middle
    #: pass; middle passes per full pass (None: Python's defaults)
    thresholds: tuple[int, int, int] | None = None
    #: ``gc.freeze()`` once started: what exists then is never scanned again
    freeze: bool = False


class TlsFiles(_Model):
    """TLS for the distribution (``node.dist.tls``): this node's certificate chain and
    key, and the CA that signs its peers' certificates (both directions verified)."""

    certfile: str
    keyfile: str
    cafile: str | None = None  # None: the system's CAs


class DistSettings(_Model):
    """The node's distribution (``node.dist`` in the config; see the module doc)."""

    name: str | None = None  # None: not distributed
    cookie_file: str | None = None
    listen: str = "127.0.0.1"
    epmd_port: int | None = None
    seeds: tuple[str, ...] = ()
    tls: TlsFiles | None = None
    insecure: bool = False
    hidden: bool = False
    net_ticktime: float = 60.0
    busy_wait_us: float = Field(default=200.0, ge=0.0, le=100_000.0)


class _NodeSettings(_Model):
    gc: GcSettings | None = None
    dist: DistSettings | None = None


def node_settings(config: Any) -> GcSettings | None:
    """The GC settings of the ``node:`` section of ``config`` (an ``otp.config.Config``),
    None if it has none. ``ConfigError`` naming the file for a bad value."""
    return _node(config).gc


def dist_settings(config: Any) -> DistSettings | None:
    """The distribution settings of the ``node:`` section of ``config``, None if it has
    none. ``ConfigError`` naming the file for a bad value."""
    return _node(config).dist


def _node(config: Any) -> _NodeSettings:
    from otp.errors import ConfigError

    settings = config.settings("node") if config is not None else {}
    data = {k: s.value for k, s in settings.items()}
    try:
        return _NodeSettings.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = tuple(err["loc"])
        where = settings[str(loc[0])].source_of(loc[1:]) if loc and str(loc[0]) in settings \
            else "config"  # fmt: skip
        raise ConfigError(f"{where}: node.{'.'.join(str(x) for x in loc)}: {err['msg']} "
                          f"(got {err.get('input')!r:.60})") from None


def _tls_contexts(files: TlsFiles) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(files.certfile, files.keyfile)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_cert_chain(files.certfile, files.keyfile)
    client.check_hostname = False  # peers are named by node name, not host name
    if files.cafile is not None:
        server.load_verify_locations(files.cafile)
        client.load_verify_locations(files.cafile)
    else:
        server.load_default_certs(ssl.Purpose.CLIENT_AUTH)
        client.load_default_certs(ssl.Purpose.SERVER_AUTH)
    server.verify_mode = ssl.CERT_REQUIRED
    client.verify_mode = ssl.CERT_REQUIRED
    return server, client


def start_dist(settings: DistSettings | None) -> str | None:
    """Inside a process: make this node distributed as ``settings`` say and join its
    seeds; returns the node's full name (None, doing nothing, when no ``name`` is set).
    Raises what ``otp.dist.start`` raises; ``OSError`` for an unreadable TLS file."""
    if settings is None or settings.name is None:
        return None
    from otp import dist

    full = dist.start(
        settings.name,
        cookie_file=settings.cookie_file,
        tls=_tls_contexts(settings.tls) if settings.tls is not None else None,
        listen=settings.listen,
        epmd_port=settings.epmd_port,
        insecure=settings.insecure,
        hidden=settings.hidden,
        net_ticktime=settings.net_ticktime,
        busy_wait=settings.busy_wait_us / 1e6,
    )
    dist.join(settings.seeds)
    return full


def apply_gc(settings: GcSettings | None) -> None:
    """Apply ``settings`` to this OS process's collector (nothing for None)."""
    if settings is None:
        return
    if settings.freeze:
        _gc.freeze()
    if settings.thresholds is not None:
        _gc.set_threshold(*settings.thresholds)


def stop() -> None:
    """Ask the serving node to stop gracefully (from any of its processes)."""
    from otp.process import send

    send(NAME, _STOP)


def why(e: BaseException) -> str:
    """The reason a start failed, said once: the innermost exception of a start error
    (an application that failed because its supervisor's child failed because...)."""
    from otp.errors import ApplicationError, StartError

    seen = 0
    inner: Any = e
    while seen < 10:
        seen += 1
        nxt = None
        if isinstance(inner, (ApplicationError, StartError)):
            nxt = inner.reason
        elif isinstance(inner, tuple):
            nxt = next((x for x in reversed(inner) if isinstance(x, (BaseException, tuple))),
                       None)
        if nxt is None or nxt is inner:
            break
        inner = nxt
    if isinstance(inner, BaseException) and inner is not e:
        if isinstance(inner, OSError) and inner.filename is not None:
            return f"{inner.strerror}: {inner.filename}"
        return str(inner) or repr(inner)
    return str(e)


@dataclass
class _Wake:
    r: socket.socket
    w: socket.socket
    count: int = 0


def run(start: Callable[[Any], object], *, config_paths: Sequence[str | os.PathLike[str]] = (),
        label: str = "node", name: str = "nonode@nohost", log_level: str = "INFO",
        gc: GcSettings | None = None, on_message: Callable[[Any], bool] | None = None,
        on_stop: Callable[[], None] | None = None) -> int:
    """Serve until stopped (see the module doc); returns the exit status (0 after a
    graceful stop, 1 if the node could not start or halted)."""
    import otp
    from otp import logger
    from otp.errors import ApplicationError, ConfigError, NodeHalted, ReleaseError, StartError

    sink = logger.setup(log_level.upper())
    if logging.getLogger().level > logging.DEBUG:
        # progress reports (a line per process started) only when debugging
        logging.getLogger("otp.report").setLevel(logging.WARNING)
    wake = _Wake(*socket.socketpair())

    def on_signal(signum: int, _frame: Any) -> None:
        # Runs in whatever greenlet holds the CPU: only wake the serving process.
        wake.count += 1
        if wake.count > 1 and signum == signal.SIGINT:
            os._exit(130)
        with contextlib.suppress(OSError):
            os.write(wake.w.fileno(), b"s")

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        otp.run(_serve, start, list(config_paths), gc, on_message, on_stop, wake.r, name=name)
        sink.drain(5.0)  # the shutdown's log lines before the caller's last line
        return 0
    except NodeHalted as e:
        sink.drain(5.0)  # the reports first: the operator reads the last line
        print(f"{label}: node halted: {e.reason!r}", file=sys.stderr, flush=True)
        return 1
    except (ConfigError, ApplicationError, StartError, ReleaseError, OSError) as e:
        sink.drain(5.0)
        print(f"{label}: cannot start: {why(e)}", file=sys.stderr, flush=True)
        return 1
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        wake.r.close()
        wake.w.close()


def _serve(start: Callable[[Any], object], config_paths: list[str], gc: GcSettings | None,
           on_message: Callable[[Any], bool] | None, on_stop: Callable[[], None] | None,
           wake: socket.socket) -> None:
    import otp.config
    from otp import application
    from otp.errors import ConfigError, OTPError
    from otp.process import receive, register, self, spawn_link

    me = self()
    register(NAME, me)
    config = otp.config.load(*config_paths) if config_paths else None
    settings = node_settings(config)
    distribution = dist_settings(config)
    application.configure(config)
    try:
        start_dist(distribution)
    except OTPError as e:  # a name taken, a bad option: said as a start failure
        raise ConfigError(f"node.dist: {e}") from e
    start(config)
    apply_gc(settings if settings is not None else gc)
    spawn_link(_wake_reader, wake, me)
    while True:
        msg = receive()
        if msg == _STOP or (on_message is not None and on_message(msg)):
            break
    if on_stop is not None:
        on_stop()
    application.stop_all()


def _wake_reader(sock: socket.socket, server: Any) -> None:
    from otp.process import send

    while sock.recv(64):
        send(server, _STOP)
