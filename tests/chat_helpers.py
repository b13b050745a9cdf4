"""Test kit for the chat server: run it inside a test's node, talk to it over loopback.

``running_chat(tmp_path, tls=...)`` starts the whole application (port 0) inside the
calling test process and stops it afterwards; PINs come to the test's mailbox as
``("sms", phone, pin)`` messages, so tests wait on them instead of sleeping.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from chat import app, connection
from chat.client import Client
from chat.config import parse_config
from otp.process import ANY, send, unlink
from otp.process import self as _self
from otp.testing import assert_receive

DATA = os.path.join(os.path.dirname(__file__), "data")
CERT = os.path.join(DATA, "chat_test_cert.pem")
KEY = os.path.join(DATA, "chat_test_key.pem")


class RecordingSms:
    def __init__(self, owner: Any) -> None:
        self.owner = owner

    def send_pin(self, phone: str, pin: str) -> None:
        send(self.owner, ("sms", phone, pin))


@dataclass
class RecordingPush:
    calls: list[tuple[str, int]] = field(default_factory=list)

    def notify(self, phone: str, pending: int) -> None:
        self.calls.append((phone, pending))


def client_tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=CERT)
    return ctx


@dataclass
class Server:
    sup: Any
    host: str
    port: int
    tls: bool
    push: RecordingPush
    clients: list[Client] = field(default_factory=list)

    def client(self, **kw: Any) -> Client:
        c = Client(self.host, self.port, tls=client_tls() if self.tls else None,
                   server_hostname="localhost", **kw)
        c.connect()
        self.clients.append(c)
        return c

    def pin(self, phone: str) -> str:
        return str(assert_receive(("sms", phone, ANY))[2])

    def user(self, phone: str, **kw: Any) -> Client:
        """A registered, logged-in client for ``phone``."""
        c = self.client(**kw)
        c.register(phone)
        key = c.verify(phone, self.pin(phone))
        c.login(phone, key)
        return c


def config(tmp_path: Any, *, tls: bool = False, **over: Any) -> Any:
    data: dict[str, Any] = {
        "env": "test",
        "data_dir": str(tmp_path / "data"),
        "durability": "off",
        "listen": {"host": "127.0.0.1", "port": 0},
        "registration": {"login_backoff_base": 0.01, "login_backoff_max": 0.05},
        "users": {"retry_initial": 0.05, "retry_max": 0.5, "idle_stop": 5.0},
    }
    if tls:
        data["listen"]["tls"] = {"certfile": CERT, "keyfile": KEY}
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(data.get(k), dict):
            data[k] = {**data[k], **v}
        else:
            data[k] = v
    return parse_config(data)


@contextmanager
def running_chat(tmp_path: Any, *, tls: bool = False, **over: Any) -> Iterator[Server]:
    cfg = config(tmp_path, tls=tls, **over)
    push = RecordingPush()
    if cfg.storage == "tables":
        from otp import tables

        tables.start(str(tmp_path / "tables"))
    try:
        sup = app.start(cfg, sms=RecordingSms(_self()), push=push)
        host, port = connection.address()
        srv = Server(sup, host, port, tls, push)
        try:
            yield srv
        finally:
            for c in srv.clients:
                c.close()
            unlink(sup)
            app.stop(sup)
    finally:
        if cfg.storage == "tables":
            tables.stop()


class ServerProcess:
    """The chat server in its own OS process (``python -m chat``), for kill -9 tests."""

    def __init__(self, tmp_path: Any, **over: Any) -> None:
        import yaml

        self.dir = tmp_path
        data = {"env": "test", "data_dir": str(tmp_path / "data"), "durability": "full",
                "listen": {"host": "127.0.0.1", "port": 0}, "admin_token": "t",
                "users": {"retry_initial": 0.05, "retry_max": 0.5}}
        data.update(over)
        self.config = tmp_path / "chat.yaml"
        self.config.write_text(yaml.safe_dump({"chat": data}))
        self.proc: Any = None
        self.port = 0

    def start(self) -> int:
        import subprocess
        import sys

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "chat", "--config", str(self.config),
             "--log-level", "WARNING"],
            stdout=subprocess.PIPE, stderr=open(self.dir / "server.log", "ab"),
            cwd=os.path.dirname(DATA) + "/..",
        )
        for line in self.proc.stdout:
            text = line.decode()
            if "listening on" in text:
                self.port = int(text.split("://", 1)[1].split()[0].rsplit(":", 1)[1])
                return self.port
        raise RuntimeError("the chat server did not start: see " + str(self.dir / "server.log"))

    def kill(self) -> None:
        import signal

        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.proc.stdout.close()
            self.proc = None

    def stop(self) -> None:
        import signal

        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait()
            self.proc.stdout.close()
            self.proc = None
