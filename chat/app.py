"""The chat application: its supervision tree, and the entry point ``make run`` uses.

::

    chat.sup (rest_for_one)
    ├── chat.store          the durable store (group commit over sqlite)
    ├── (keys)              reads the key message ids are made with (no process)
    ├── chat.registration   PINs, device keys, login slow-down
    ├── chat.users          DynamicSupervisor: one transient process per active user
    ├── (resume)            starts every user with something to forward (C8; no process)
    ├── chat.conns          what every connection process links to; on a graceful stop
    │                       it sends each connection the closing error ``shutdown``
    ├── chat.media.store    media blobs and their records, the sweep (``media:`` only)
    ├── chat.media.http     the HTTP(S) media endpoint, one process per connection
    └── chat.listener       accepts connections (plain TCP or TLS)

``rest_for_one``: if the store restarts, everything after it restarts too (they hold
nothing that is not in the store); a listener restart leaves users alone.

Run it::

    python -m chat --config config/dev.yaml          # foreground; Ctrl-C stops it

or from code, in a process of a running node::

    from chat.app import start, stop
    from chat.config import parse_config
    sup = start(parse_config({"listen": {"port": 0}, "data_dir": "/tmp/chat"}))
    host, port = chat.connection.address()
    stop(sup)

Failure semantics: ``start`` raises ``StartError`` if a part cannot start (the port is
taken, the data directory cannot be written, the TLS files are missing) and
``ConfigError`` for a production config with the console SMS gateway.
"""

from __future__ import annotations

import os
import socket
import ssl
from typing import Any

from chat import connection, media, media_store, registration, store, users
from chat.config import ChatConfig, check_production
from chat.gateways import PushGateway, SmsGateway, make_push, make_sms
from otp import supervisor
from otp.errors import ConfigError
from otp.supervisor import ChildSpec, DynamicSupervisor, Supervisor, SupFlags

__all__ = ["ChatSup", "start", "stop", "tls_context"]

SUP = "chat.sup"


def tls_context(certfile: str, keyfile: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(certfile, keyfile)
    return ctx


def _start_users() -> Any:
    return supervisor.start_link(
        DynamicSupervisor, {"intensity": 1000, "period": 10.0}, name=users.SUP
    )


class ChatSup(Supervisor):
    def init(self, arg: tuple[ChatConfig, Any, Any]) -> Any:
        cfg, sms, push = arg
        lim = cfg.limits
        push = push or make_push(cfg.push)
        sms = sms or make_sms(cfg.sms)
        users.set_context(users.UserCtx(
            idle_stop=cfg.users.idle_stop, retry_initial=cfg.users.retry_initial,
            retry_max=cfg.users.retry_max, window=lim.window,
            presence_per_hour=lim.presence_per_hour, contacts_per_hour=lim.contacts_per_hour,
            reads_per_hour=lim.reads_per_hour,
            notify=push.notify,
        ))
        if cfg.storage == "tables":
            from chat.store_tables import TablesBackend

            backend: Any = TablesBackend.open()
        elif cfg.durability == "off" and cfg.data_dir == ":memory:":
            backend = store.MemoryBackend()
        else:
            kind = store.SqliteProcessBackend if cfg.store_process else store.SqliteBackend
            backend = kind(os.path.join(cfg.data_dir, "chat.db"), cfg.durability)
        tls = None
        if cfg.listen.tls is not None:
            tls = tls_context(cfg.listen.tls.certfile, cfg.listen.tls.keyfile)
        ctx = connection.ConnCtx(
            max_frame=lim.max_frame, max_body=lim.max_body, idle_timeout=lim.idle_timeout,
            max_bad_frames=lim.max_bad_frames, send_buffer=lim.send_buffer,
            admin_token=cfg.admin_token,
        )
        children = [
            ChildSpec(id="store", start=(store.start_link, (backend,))),
            ChildSpec(id="keys", start=(users.load_key, ())),
            ChildSpec(id="registration",
                      start=(registration.start_link, (cfg.registration, sms))),
            ChildSpec(id="users", start=(_start_users, ()), type="supervisor"),
            ChildSpec(id="resume", start=(users.resume, ())),
            ChildSpec(id="conns", start=(connection.start_conns, ())),
        ]
        if cfg.media is not None:
            m = cfg.media
            children += [
                ChildSpec(id="media_store", start=(media_store.start_link, (
                    os.path.join(cfg.data_dir, "media"), m.retention, m.unreferenced_grace,
                    m.sweep_interval))),
                ChildSpec(id="media_http", start=(media.start_http, (m, cfg.data_dir, tls))),
            ]
        children.append(ChildSpec(id="listener", start=(connection.start_listener,
                                                         (cfg.listen.host, cfg.listen.port,
                                                          cfg.listen.backlog, tls, ctx))))
        return SupFlags(strategy="rest_for_one", intensity=3, period=5.0), children


def start(cfg: ChatConfig, *, sms: SmsGateway | None = None,
          push: PushGateway | None = None) -> Any:
    """Start the chat supervision tree, linked to the caller; returns its pid.

    ``sms`` / ``push`` replace the gateways the config names (tests pass recorders)."""
    check_production(cfg)
    check_startable(cfg)
    return supervisor.start_link(ChatSup, (cfg, sms, push), name=SUP)


def check_startable(cfg: ChatConfig) -> None:
    """What would otherwise fail deep in the supervision tree (a crash report, then an
    error without the file or the address), said in one ``ConfigError`` that names the
    config key: TLS files that are missing or unreadable, a listen address in use."""
    tls = cfg.listen.tls
    if tls is not None:
        for key, path in (("certfile", tls.certfile), ("keyfile", tls.keyfile)):
            try:
                with open(path, "rb"):
                    pass
            except OSError as e:
                raise ConfigError(
                    f"chat listen.tls.{key}: cannot read the TLS {key} {path}: {e.strerror} "
                    f"(point listen.tls.{key} at it in the config, or set "
                    f"OTP_CHAT__LISTEN__TLS__{key.upper()})") from None
    _probe("listen", cfg.listen.host, cfg.listen.port)
    if cfg.media is not None:
        _probe("media", cfg.media.host, cfg.media.port)


def _probe(section: str, host: str, port: int) -> None:
    if port == 0:
        return  # any free port
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the listener
        probe.bind((host, port))
    except OSError as e:
        raise ConfigError(
            f"chat {section}.host/{section}.port: cannot listen on {host}:{port}: "
            f"{e.strerror} (another server there? choose another {section}.port in the "
            f"config, or set OTP_CHAT__{section.upper()}__PORT)") from None
    finally:
        probe.close()


def stop(sup: Any = SUP) -> None:
    supervisor.stop(sup)
