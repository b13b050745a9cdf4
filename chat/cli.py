"""``chat-client``: the command-line chat client (register | verify | send | listen | shell).

::

    chat-client register +14155550100              # the PIN arrives by SMS / in the server log
    chat-client verify +14155550100 123456          # stores the device key (mode 0600)
    chat-client --as +14155550100 send +14155550111 "hello"
    chat-client --as +14155550111 listen            # prints messages and receipts as they come

The device key lives in ``$XDG_CONFIG_HOME/chat-client/<digits>.key`` (default
``~/.config``), created with permissions 0600; beside it, ``<digits>.db`` is the device's
record of what it received (``chat.client.DeviceStore``, 0600): what the server pushes is
written there before it is acknowledged, so a message that arrives while ``send`` waits
for its receipt, or just before the client is stopped, is shown by the next ``listen``
or ``shell``, and a message is never shown twice. ``--as`` picks the identity; it can be
left out when only one key is stored. ``--server host:port`` (default
``127.0.0.1:5280``, or ``$CHAT_SERVER``) and ``--tls-ca FILE`` for a TLS server.
"""

from __future__ import annotations

import os
import ssl
import sys
from typing import Any

import click

from chat.client import ChatError, Client, DeviceStore, key_path

__all__ = ["main"]


def _key_dir() -> str:
    return os.path.dirname(key_path("+0"))


def save_key(phone: str, key: bytes) -> str:
    path = key_path(phone)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, key.hex().encode() + b"\n")
    finally:
        os.close(fd)
    os.chmod(path, 0o600)
    return path


def load_key(phone: str) -> bytes:
    try:
        with open(key_path(phone)) as f:
            return bytes.fromhex(f.read().strip())
    except FileNotFoundError:
        raise click.ClickException(f"no device key for {phone}: run "
                                   f"`chat-client register {phone}` and `verify` first") from None


def _identity(as_: str | None) -> str:
    if as_:
        return as_
    try:
        keys = [f for f in os.listdir(_key_dir()) if f.endswith(".key")]
    except FileNotFoundError:
        keys = []
    if len(keys) == 1:
        return "+" + keys[0][: -len(".key")]
    raise click.ClickException("say which identity to use with --as +PHONE "
                               f"({len(keys)} device keys stored)")


class _Ctx:
    def __init__(self, server: str, tls_ca: str | None, as_: str | None) -> None:
        host, _, port = server.rpartition(":")
        self.host, self.port = host or "127.0.0.1", int(port)
        self.tls = ssl.create_default_context(cafile=tls_ca) if tls_ca else None
        self.as_ = as_

    def client(self, seen: DeviceStore | None = None) -> Client:
        c = Client(self.host, self.port, tls=self.tls, client_name="chat-client", seen=seen)
        try:
            c.connect()
        except OSError as e:
            raise click.ClickException(f"cannot connect to {self.host}:{self.port}: {e}"
                                       ) from None
        return c

    def session(self) -> tuple[Client, DeviceStore]:
        """A logged-in client whose events go through the device's store (closed with
        the command)."""
        phone = _identity(self.as_)
        store = DeviceStore(store_path(phone))
        click.get_current_context().call_on_close(store.close)
        c = self.client(store)
        try:
            c.login(phone, load_key(phone))
        except ChatError as e:
            raise click.ClickException(f"login as {phone} failed: {e}") from None
        return c, store


def store_path(phone: str) -> str:
    """The device's record of what it received, beside its key."""
    return key_path(phone)[: -len(".key")] + ".db"


def _show(ev: dict[str, Any]) -> str:
    if ev["t"] == "msg":
        body = ev["body"]
        text = body if isinstance(body, str) else f"<{len(body)} bytes>"
        return f"[{ev['from']}] {text}"
    return f"  ({ev['type']}: {ev['mid']})"


def _show_all(store: DeviceStore, evs: list[dict[str, Any]]) -> None:
    for ev in evs:
        click.echo(_show(ev))
        store.mark_shown([ev])


@click.group()
@click.option("--server", default=lambda: os.environ.get("CHAT_SERVER", "127.0.0.1:5280"),
              show_default="127.0.0.1:5280 or $CHAT_SERVER", help="host:port of the server")
@click.option("--tls-ca", type=click.Path(exists=True, dir_okay=False),
              help="CA certificate: connect with TLS")
@click.option("--as", "as_", metavar="+PHONE", help="which stored identity to use")
@click.pass_context
def main(ctx: click.Context, server: str, tls_ca: str | None, as_: str | None) -> None:
    """The chat client."""
    ctx.obj = _Ctx(server, tls_ca, as_)


def _run(fn: Any) -> Any:
    try:
        return fn()
    except ChatError as e:
        raise click.ClickException(str(e)) from None


@main.command()
@click.argument("phone")
@click.pass_obj
def register(obj: _Ctx, phone: str) -> None:
    """Ask for a one-time PIN for PHONE (an E.164 number like +14155550100)."""
    with obj.client() as c:
        ttl = _run(lambda: c.register(phone))
    click.echo(f"a PIN was sent to {phone}; it is valid for {ttl / 60:g} minutes")


@main.command()
@click.argument("phone")
@click.argument("pin")
@click.pass_obj
def verify(obj: _Ctx, phone: str, pin: str) -> None:
    """Prove the PIN; stores this device's key."""
    with obj.client() as c:
        key = _run(lambda: c.verify(phone, pin))
    click.echo(f"registered {phone}; device key stored in {save_key(phone, key)}")


@main.command()
@click.argument("to")
@click.argument("text")
@click.option("--wait/--no-wait", default=True, help="wait for the 'sent' receipt")
@click.pass_obj
def send(obj: _Ctx, to: str, text: str, wait: bool) -> None:
    """Send TEXT to the number TO."""
    c, store = obj.session()
    with c:
        r = _run(lambda: c.send(to, text))
        click.echo(f"stored by the server as {r.mid}")
        if wait:
            # (what else arrives meanwhile stays unshown in the device's store, for the
            # next listen or shell)
            def mine(kind: str, evs: list[dict[str, Any]]) -> list[dict[str, Any]]:
                return [e for e in evs if e.get("type") == kind and e["mid"] == r.mid]

            try:
                evs = c.wait_for(lambda evs: bool(mine("sent", evs)), timeout=10.0)
                click.echo("sent ✓")
            except TimeoutError:
                click.echo("(no 'sent' receipt yet; it will come at your next login)")
                return
            store.mark_shown(mine("sent", evs))
            # A connected recipient's device acknowledges at once: "delivered" comes
            # with "sent" (or just after it); an offline one's comes at a later login.
            dlv = mine("delivered", evs) or mine("delivered", c.poll(0.5))
            if dlv:
                click.echo("delivered ✓✓")
                store.mark_shown(dlv)


@main.command()
@click.option("--read/--no-read", default=True, help="send read receipts for what is shown")
@click.option("--count", type=int, default=0, help="stop after this many messages")
@click.pass_obj
def listen(obj: _Ctx, read: bool, count: int) -> None:
    """Print messages and receipts as they arrive (Ctrl-C to stop)."""
    n = 0
    c, store = obj.session()
    with c:
        click.echo(f"listening as {c.phone}; Ctrl-C to stop")
        try:
            evs = store.unshown()  # taken by an earlier run, not shown yet
            while not count or n < count:
                for ev in evs or c.poll(timeout=30.0):
                    click.echo(_show(ev))
                    store.mark_shown([ev])
                    if ev["t"] == "msg":
                        n += 1
                        if read:
                            c.read(ev["from"], [ev["mid"]])
                evs = []
                if not c.events:
                    c.ping()
        except KeyboardInterrupt:
            pass


@main.command()
@click.pass_obj
def shell(obj: _Ctx) -> None:
    """Interactive: 'send +PHONE text', 'poll', 'presence +PHONE...', 'quit'."""
    c, store = obj.session()
    with c:
        click.echo(f"logged in as {c.phone}. commands: send TO TEXT | poll | "
                   "presence PHONE... | contacts PHONE... | quit")
        _show_all(store, store.unshown())
        while True:
            _show_all(store, c.poll(0.0))
            try:
                line = input("chat> ").strip()
            except EOFError:
                break
            cmd, _, rest = line.partition(" ")
            try:
                if cmd == "send":
                    to, _, text = rest.partition(" ")
                    click.echo(f"stored as {c.send(to, text).mid}")
                elif cmd == "poll":
                    _show_all(store, c.poll(1.0))
                elif cmd == "presence":
                    click.echo(repr(c.presence(rest.split())))
                elif cmd == "contacts":
                    click.echo(repr(c.contacts(rest.split())))
                elif cmd in ("quit", "exit"):
                    break
                elif cmd:
                    click.echo(f"unknown command {cmd!r}")
            except ChatError as e:
                click.echo(f"error: {e}")


if __name__ == "__main__":
    sys.exit(main())
