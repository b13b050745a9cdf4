"""``chat-client``: the command-line chat client (register | verify | send | send-file |
listen | shell).

::

    chat-client register +14155550100              # the PIN arrives by SMS / in the server log
    chat-client verify +14155550100 123456          # stores the device key (mode 0600)
    chat-client --as +14155550100 send +14155550111 "hello"
    chat-client --as +14155550100 send-file +14155550111 photo.jpg --caption "the view"
    chat-client --as +14155550111 listen            # prints messages and receipts as they come

``send-file`` encrypts the file on the device (AES-256-GCM, a fresh key; only ciphertext
is uploaded) with a progress bar on stderr; ``listen`` downloads, checks and decrypts
received files into ``--media-dir`` (``$CHAT_MEDIA_DIR``; default ``<digits>-media/``
beside the device's key) and prints where each one was saved.

Device keys live in ``$XDG_CONFIG_HOME/chat-client/<host>:<port>/<digits>.key`` (default
``~/.config``; one directory per server, so one number registered on two servers has two
keys), created with permissions 0600; beside each key, ``<digits>.db`` is the device's
record of what it received (``chat.client.DeviceStore``, 0600): what the server pushes is
written there before it is acknowledged, so a message that arrives while ``send`` waits
for its receipt, or just before the client is stopped, is shown by the next ``listen``
or ``shell``, and a message is never shown twice. A key that an earlier version kept
directly in ``chat-client/`` is still read, and moves into the server's directory at its
first successful login there. ``--as`` picks the identity; it can be left out when only
one key is stored for the server. ``--server host:port`` (default ``127.0.0.1:5280``, or
``$CHAT_SERVER``) and ``--tls-ca FILE`` for a TLS server. Phone numbers may be typed
without the ``+`` or with spaces and dashes; they are checked before anything is sent.

Receipts are shown once per message and state: only the latest state of a message
(``sent`` < ``delivered`` < ``read``) that is newer than what was shown before.

Exit status: 0 done; 1 a request was refused or failed (one line on stderr says why);
2 a usage error; 3 the session was ended by the server because this number logged in
elsewhere or was registered on another device (``listen`` and ``shell`` stop then rather
than fight the other device). ``listen`` rides out a server that is down: it says so and
retries with back-off until the server is back or it is stopped.
"""

from __future__ import annotations

import contextlib
import os
import signal
import ssl
import sys
import time
from typing import Any

import click

from chat.client import (
    RECEIPT_RANK,
    ChatClosed,
    ChatError,
    Client,
    DeviceStore,
    MediaItem,
    key_dir,
    key_path,
    normalise_phone,
)
from chat.media_crypto import MediaError

__all__ = ["main"]

#: exit status when the server ended the session for another device (see the docstring)
EXIT_REPLACED = 3
#: ``listen``'s waits between attempts to reach a server that is down (seconds)
RETRY_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)


class SessionEnded(click.ClickException):
    """The server ended the session (``replaced``): exit status 3."""

    exit_code = EXIT_REPLACED


def _phone(text: str) -> str:
    try:
        return normalise_phone(text)
    except ChatError as e:
        raise click.BadParameter(e.message) from None


def save_key(phone: str, key: bytes, server: str) -> str:
    path = key_path(phone, server)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, key.hex().encode() + b"\n")
    finally:
        os.close(fd)
    os.chmod(path, 0o600)
    return path


def load_key(phone: str, server: str) -> bytes:
    """``phone``'s device key for ``server`` (or the one an earlier version kept for any
    server: see ``_migrate``)."""
    for path in (key_path(phone, server), key_path(phone)):
        try:
            with open(path) as f:
                return bytes.fromhex(f.read().strip())
        except FileNotFoundError:
            continue
    raise click.ClickException(f"no device key for {phone} on {server}: run "
                               f"`chat-client --server {server} register {phone}` and "
                               f"`verify` first")


def _migrate(phone: str, server: str) -> None:
    """Move a key (and its device store) kept by an earlier version, for whatever server,
    into ``server``'s directory once it has logged in there: it is that server's key."""
    old = key_path(phone)
    new = key_path(phone, server)
    if os.path.exists(new) or not os.path.exists(old):
        return
    os.makedirs(os.path.dirname(new), mode=0o700, exist_ok=True)
    for suffix in (".db", ".db-wal", ".db-shm"):
        src = old[: -len(".key")] + suffix
        if os.path.exists(src):
            os.replace(src, new[: -len(".key")] + suffix)
    os.replace(old, new)


def store_path(phone: str, server: str) -> str:
    """The device's record of what it received, beside its key."""
    return key_path(phone, server)[: -len(".key")] + ".db"


def default_media_dir(phone: str, server: str) -> str:
    """Where ``listen`` saves received media by default: ``<digits>-media/`` beside the
    device's key and store."""
    return key_path(phone, server)[: -len(".key")] + "-media"


def _size(n: int) -> str:
    """``2_100_000`` -> ``'2.1 MB'``."""
    for unit, k in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= k:
            return f"{n / k:.1f} {unit}"
    return f"{n} bytes"


def _keys_in(d: str) -> set[str]:
    try:
        return {"+" + f[: -len(".key")] for f in os.listdir(d) if f.endswith(".key")}
    except FileNotFoundError:
        return set()


def _identity(as_: str | None, server: str) -> str:
    if as_:
        return _phone(as_)
    keys = _keys_in(key_dir(server)) | _keys_in(key_dir())
    if len(keys) == 1:
        return next(iter(keys))
    raise click.UsageError("say which identity to use with --as +PHONE "
                           f"({len(keys)} device keys stored for {server})")


def _ago(ts: float) -> str:
    s = max(0.0, time.time() - ts)
    if s < 60:
        return "just now"
    for unit, n in (("day", 86400), ("h", 3600), ("min", 60)):
        if s >= n:
            v = int(s // n)
            return f"{v} {unit}{'s' if unit == 'day' and v > 1 else ''} ago"
    return "just now"  # pragma: no cover


def _when(seconds: float) -> str:
    """``599`` -> ``'in 9 min 59 s (at 21:15)'``."""
    s = max(0, round(seconds))
    m, sec = divmod(s, 60)
    span = f"{m} min {sec} s" if m else f"{sec} s"
    return f"in {span} (at {time.strftime('%H:%M', time.localtime(time.time() + s))})"


def describe(e: ChatError, *, phone: str | None = None, server: str = "") -> str:
    """One readable line for a refused request or a closed connection."""
    code, msg, f = e.code, e.message, e.frame
    who = phone or "this number"
    match code:
        case "rate_limited" if f.get("retry_after") is not None:
            what = "PIN requests" if "code request" in msg else "requests"
            return (f"too many {what} for {who} (rate_limited): try again "
                    f"{_when(float(f['retry_after']))}")
        case "too_many_attempts":
            return (f"too many wrong PINs (too_many_attempts): that PIN no longer works; ask "
                    f"for a new one with `chat-client register {who}` (PIN requests are "
                    f"rate-limited: if it is refused, it says when to try again)")
        case "bad_code":
            left = f.get("attempts_left")
            return f"wrong PIN (bad_code){f'; {left} attempt(s) left' if left is not None else ''}"
        case "code_expired" | "no_code":
            return f"{msg} ({code}): `chat-client register {who}` sends a new PIN"
        case "auth_failed":
            return (f"login as {who} refused (auth_failed): this device's key does not work on "
                    f"{server} — the number was registered again (on another device, or "
                    f"by another `verify`) or on another server; run `chat-client register "
                    f"{who}` and `verify` to use it here")
        case "unknown_recipient":
            return f"{msg or 'no such user'} (unknown_recipient: not registered on {server})"
        case "replaced" if "registered" in msg:
            return (f"the server ended this session (replaced): {msg}; this device's key no "
                    f"longer works (`chat-client register {who}` and `verify` take the "
                    f"number back to this device)")
        case "replaced":
            return (f"the server ended this session (replaced): {msg or 'another session'}"
                    f" — another chat-client is logged in as {who}; stopping here")
        case "body_too_large":
            return f"message too long (body_too_large): {msg}"
        case "cmid_reused":
            return (f"the server already holds a different message with this client id "
                    f"(cmid_reused): {msg}; send it again")
        case "media_too_large":
            cap = f.get("max_size")
            return (f"the file is too large for the server (media_too_large)"
                    f"{f': it takes at most {_size(int(cap))}' if cap is not None else ''}")
        case "unavailable" if "no media endpoint" in msg:
            return f"{server} does not take photos or files (unavailable): {msg}"
        case "unknown_media":
            return f"the server no longer has that file (unknown_media): {msg or 'deleted'}"
        case "closed":
            return f"lost the connection to {server}: {msg}"
    return f"{msg} ({code})" if msg else code


def _fail(e: ChatError, *, phone: str | None, server: str) -> click.ClickException:
    text = describe(e, phone=phone, server=server)
    return SessionEnded(text) if e.code == "replaced" else click.ClickException(text)


class _Ctx:
    def __init__(self, server: str, tls_ca: str | None, as_: str | None) -> None:
        host, _, port = server.rpartition(":")
        try:
            self.host, self.port = host or "127.0.0.1", int(port)
        except ValueError:
            raise click.BadParameter(f"expected host:port, got {server!r}",
                                     param_hint="--server") from None
        self.server = f"{self.host}:{self.port}"
        self.tls = ssl.create_default_context(cafile=tls_ca) if tls_ca else None
        self.as_ = as_

    def client(self, **kw: Any) -> Client:
        c = Client(self.host, self.port, tls=self.tls, client_name="chat-client", **kw)
        try:
            c.connect()
        except (OSError, TimeoutError) as e:
            raise click.ClickException(f"cannot connect to the chat server at {self.server}: "
                                       f"{e} (is it running? --server or $CHAT_SERVER say "
                                       "where)") from None
        except ChatError as e:
            raise _fail(e, phone=None, server=self.server) from None
        return c

    def session(self, **kw: Any) -> tuple[Client, DeviceStore]:
        """A logged-in client whose events go through the device's store (closed with
        the command). Nothing is written for a number that has no key or fails to log in."""
        phone = _identity(self.as_, self.server)
        key = load_key(phone, self.server)
        c = self.client(**kw)
        try:
            c.login(phone, key)
        except ChatError as e:
            c.close()
            raise _fail(e, phone=phone, server=self.server) from None
        _migrate(phone, self.server)
        store = DeviceStore(store_path(phone, self.server))
        click.get_current_context().call_on_close(store.close)
        c.seen = store
        return c, store

    def call(self, fn: Any, phone: str | None = None) -> Any:
        try:
            return fn()
        except ChatError as e:
            raise _fail(e, phone=phone, server=self.server) from None
        except TimeoutError as e:
            raise click.ClickException(f"no answer from the chat server at {self.server}: "
                                       f"{e}") from None
        except OSError as e:
            raise click.ClickException(f"lost the connection to {self.server}: {e}") from None


def _receipt_line(ev: dict[str, Any]) -> str:
    kind, peer, mid = ev.get("type"), ev.get("peer", "?"), ev["mid"]
    match kind:
        case "sent":
            return f"  ✓ sent to {peer} (message {mid})"
        case "delivered":
            return f"  ✓✓ delivered to {peer} (message {mid})"
        case "read":
            return f"  ✓✓ read by {peer} (message {mid})"
    return f"  ({kind}: {mid})"


def _msg_line(ev: dict[str, Any]) -> str:
    body = ev["body"]
    if ev.get("kind") == "media":
        try:
            m = Client.media_item(ev)
        except MediaError as e:
            return f"[{ev['from']}] (a media message this client cannot read: {e.message})"
        assert m is not None
        caption = f": {m.caption}" if m.caption else ""
        return f"[{ev['from']}] sent {m.name} ({m.mime}, {_size(m.size)}){caption}"
    text = body if isinstance(body, str) else f"<{len(body)} bytes>"
    return f"[{ev['from']}] {text}"


def present(store: DeviceStore, evs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str]]:
    """What to show of ``evs``, as (event, line) pairs, and marks every one of ``evs``
    shown: each message; of the receipts, one per message — its latest state — and only
    if it is newer than the latest shown before (receipts may arrive late and out of
    order: ``read`` before ``sent`` after a reconnect)."""
    out: list[tuple[dict[str, Any], str]] = []
    best: dict[str, dict[str, Any]] = {}
    for ev in evs:
        if ev.get("t") == "msg":
            out.append((ev, ""))
        elif ev.get("t") == "receipt" and ev.get("type") in RECEIPT_RANK:
            mid = ev["mid"]
            if mid not in best:
                out.append(({"mid": mid}, ""))  # its place: the first receipt's
                best[mid] = ev
            elif RECEIPT_RANK[ev["type"]] > RECEIPT_RANK[best[mid]["type"]]:
                best[mid] = ev
    shown: list[tuple[dict[str, Any], str]] = []
    for ev, _ in out:
        if "t" in ev:
            shown.append((ev, _msg_line(ev)))
            continue
        r = best[ev["mid"]]
        if RECEIPT_RANK[r["type"]] > store.shown_receipt(r["mid"]):
            shown.append((r, _receipt_line(r)))
    store.mark_shown(evs)
    return shown


def _show_all(store: DeviceStore, evs: list[dict[str, Any]], *, c: Client | None = None,
              save_to: str | None = None) -> list[dict[str, Any]]:
    """Print what ``present`` keeps; returns the messages shown. With ``c`` and
    ``save_to``, media messages are downloaded, checked and decrypted into ``save_to``."""
    msgs = []
    for ev, line in present(store, evs):
        click.echo(line)
        if ev.get("t") == "msg":
            msgs.append(ev)
            if c is not None and save_to is not None and ev.get("kind") == "media":
                _save_media(c, ev, save_to)
    return msgs


def _save_media(c: Client, ev: dict[str, Any], save_to: str) -> str | None:
    """Download a media message into ``save_to``; says where, or why not (a file that
    fails its checks is not kept, and is not acknowledged to the server)."""
    try:
        item = MediaItem.from_event(ev)
        os.makedirs(save_to, mode=0o700, exist_ok=True)
        path = c.download(item, save_to)
    except MediaError as e:
        click.echo(f"  ✗ not saved ({e.code}): {e.message}", err=True)
        return None
    except ChatError as e:
        if isinstance(e, ChatClosed):
            raise
        click.echo(f"  ✗ not saved: {describe(e)}", err=True)
        return None
    click.echo(f"  saved to {path}")
    return path


@click.group()
@click.option("--server", default=lambda: os.environ.get("CHAT_SERVER", "127.0.0.1:5280"),
              show_default="127.0.0.1:5280 or $CHAT_SERVER", help="host:port of the server")
@click.option("--tls-ca", type=click.Path(exists=True, dir_okay=False),
              help="CA certificate: connect with TLS")
@click.option("--as", "as_", metavar="+PHONE", help="which stored identity to use")
@click.pass_context
def main(ctx: click.Context, server: str, tls_ca: str | None, as_: str | None) -> None:
    """The chat client: register a number, then send and listen.

    \b
    Exit status: 0 done, 1 refused or failed (the reason on one line), 2 usage
    error, 3 the server ended the session (the number logged in elsewhere or was
    registered on another device)."""
    ctx.obj = _Ctx(server, tls_ca, as_)


@main.command()
@click.argument("phone")
@click.pass_obj
def register(obj: _Ctx, phone: str) -> None:
    """Ask for a one-time PIN for PHONE (an E.164 number like +14155550100)."""
    phone = _phone(phone)
    with obj.client() as c:
        ttl = obj.call(lambda: c.register(phone), phone)
    click.echo(f"a PIN was sent to {phone}; it is valid for {ttl / 60:g} minutes")


@main.command()
@click.argument("phone")
@click.argument("pin")
@click.pass_obj
def verify(obj: _Ctx, phone: str, pin: str) -> None:
    """Prove the PIN; stores this device's key (for this server)."""
    phone = _phone(phone)
    with obj.client() as c:
        key = obj.call(lambda: c.verify(phone, pin.strip()), phone)
    click.echo(f"registered {phone}; device key stored in {save_key(phone, key, obj.server)}")


def _check_body(c: Client, text: str) -> None:
    if not text.strip():
        raise click.BadParameter("the message is empty: nothing to send")
    limit = c.server_info.get("max_body")
    if isinstance(limit, int) and len(text.encode()) > limit:
        raise click.BadParameter(f"the message is {len(text.encode())} bytes; the server "
                                 f"takes at most {limit}")


@main.command()
@click.argument("to")
@click.argument("text")
@click.option("--wait/--no-wait", default=True, help="wait for the 'sent' receipt")
@click.pass_obj
def send(obj: _Ctx, to: str, text: str, wait: bool) -> None:
    """Send TEXT to the number TO."""
    to = _phone(to)
    if not text.strip():
        raise click.BadParameter("the message is empty: nothing to send", param_hint="TEXT")
    c, store = obj.session()
    with c:
        _check_body(c, text)
        r = obj.call(lambda: c.send(to, text), c.phone)
        click.echo(f"stored by the server as {r.mid}")
        if wait:
            _await_receipts(obj, c, store, r.mid)


def _await_receipts(obj: _Ctx, c: Client, store: DeviceStore, mid: str) -> None:
    """Wait for message ``mid``'s ``sent`` receipt (and ``delivered``, if it comes at
    once) and say so. What else arrives meanwhile stays unshown in the device's store,
    for the next listen or shell."""

    def mine(kind: str, evs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [e for e in evs if e.get("type") == kind and e["mid"] == mid]

    try:
        evs = c.wait_for(lambda evs: bool(mine("sent", evs)), timeout=10.0)
    except ChatError as e:
        raise _fail(e, phone=c.phone, server=obj.server) from None
    except TimeoutError:
        click.echo("(no 'sent' receipt yet; it will come at your next login)")
        return
    click.echo("sent ✓")
    store.mark_shown(mine("sent", evs))
    # A connected recipient's device acknowledges at once: "delivered" comes
    # with "sent" (or just after it); an offline one's comes at a later login.
    dlv = mine("delivered", evs) or mine("delivered", obj.call(lambda: c.poll(0.5)))
    if dlv:
        click.echo("delivered ✓✓")
        store.mark_shown(dlv)


class _Bar:
    """A progress bar on stderr (tqdm; none when stderr is not a terminal, unless
    ``force``)."""

    def __init__(self, name: str, total: int, force: bool | None) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1000,
                        desc=name, file=sys.stderr, leave=True,
                        disable=None if force is None else not force)
        self.done = 0

    def __call__(self, done: int, total: int) -> None:
        if self.bar.total != total:  # (the upload: the file plus the 16-byte tag)
            self.bar.total = total
        self.bar.update(done - self.done)
        self.done = done

    def close(self) -> None:
        self.bar.close()


@main.command("send-file")
@click.argument("to")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, readable=True))
@click.option("--caption", default="", help="text shown with the photo or file")
@click.option("--progress/--no-progress", default=None,
              help="show a progress bar (default: when stderr is a terminal)")
@click.option("--wait/--no-wait", default=True, help="wait for the 'sent' receipt")
@click.pass_obj
def send_file(obj: _Ctx, to: str, path: str, caption: str, progress: bool | None,
              wait: bool) -> None:
    """Send the photo or file at PATH to the number TO, end-to-end encrypted.

    The file is encrypted on this device with a fresh key (AES-256-GCM) and only the
    ciphertext is uploaded; the key travels in the message to TO, whose `listen`
    downloads, checks and decrypts it. An image gets a thumbnail; an image too large
    to decode safely (a decompression bomb) is refused."""
    to = _phone(to)
    c, store = obj.session()
    with c:
        size = os.path.getsize(path)
        name = os.path.basename(path)
        click.echo(f"encrypting and uploading {name} ({_size(size)})")
        bar = _Bar(name, size, progress)
        try:
            r = obj.call(lambda: c.send_media(to, path, caption=caption, progress=bar),
                         c.phone)
        except MediaError as e:
            raise click.ClickException(f"{name} was not sent ({e.code}): {e.message}"
                                       ) from None
        finally:
            bar.close()
        click.echo(f"stored by the server as {r.mid}")
        if wait:
            _await_receipts(obj, c, store, r.mid)


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def _reconnect(obj: _Ctx, c: Client, why: ChatError) -> None:
    """Reconnect ``listen``'s client, saying so, with back-off, until it works; raises
    what ends the session for good (``replaced``, ``auth_failed``)."""
    click.echo(f"{describe(why, phone=c.phone, server=obj.server)}; reconnecting "
               "(Ctrl-C to stop)", err=True)
    i = 0
    while True:
        try:
            c.reconnect(attempts=1)
        except ChatClosed as e:
            if e.code == "replaced":
                raise
            delay = RETRY_DELAYS[min(i, len(RETRY_DELAYS) - 1)]
            click.echo(f"the chat server at {obj.server} does not answer; next try in "
                       f"{delay:g} s", err=True)
            time.sleep(delay)
            i += 1
            continue
        click.echo(f"reconnected to {obj.server} as {c.phone}", err=True)
        return


@main.command(short_help="Print messages as they arrive, and report them read.")
@click.option("--read/--no-read", default=True, show_default=True,
              help="send a read receipt for each message shown (the sender sees it read)")
@click.option("--count", type=int, default=0, help="stop after this many messages")
@click.option("--media-dir", type=click.Path(file_okay=False), envvar="CHAT_MEDIA_DIR",
              help="where to save received photos and files (default: beside the "
                   "device's store, <digits>-media/; or $CHAT_MEDIA_DIR)")
@click.pass_obj
def listen(obj: _Ctx, read: bool, count: int, media_dir: str | None) -> None:
    """Print messages and receipts as they arrive (Ctrl-C to stop).

    Each message shown is reported read to its sender (a read receipt) unless
    --no-read is given. Receipts for your own messages show each message's latest
    state once. Ctrl-C or SIGTERM stops it (exit status 0). If the server goes
    away, listen says so and keeps trying to reconnect, with back-off; if another
    session of this number logs in, or the number is registered on another device,
    it stops with exit status 3. Received photos and files are downloaded, checked
    and decrypted into --media-dir, and the line after the message says where."""
    c, store = obj.session(auto_reconnect=False)
    save_to = media_dir or default_media_dir(c.phone or "", obj.server)
    old = signal.signal(signal.SIGTERM, _interrupt)  # stopped like Ctrl-C: exit 0
    click.get_current_context().call_on_close(lambda: signal.signal(signal.SIGTERM, old))
    n = 0
    unread: list[dict[str, Any]] = []  # shown, their read receipts not sent yet
    with c:
        click.echo(f"listening as {c.phone} on {obj.server}; Ctrl-C to stop")
        evs = store.unshown()  # taken by an earlier run, not shown yet
        try:
            while True:
                try:
                    while unread:  # (again after a reconnect, if one was lost)
                        c.read(unread[0]["from"], [unread[0]["mid"]])
                        unread.pop(0)
                    if count and n >= count:
                        break
                    shown = _show_all(store, evs or c.poll(timeout=30.0), c=c,
                                      save_to=save_to)
                    evs = []
                    n += len(shown)
                    if read:
                        unread += shown
                    if not shown and not c.events:
                        c.ping()  # keeps the connection from idling out
                except ChatClosed as e:
                    if e.code == "replaced":
                        raise
                    _reconnect(obj, c, e)
        except ChatError as e:
            raise _fail(e, phone=c.phone, server=obj.server) from None
        except KeyboardInterrupt:
            pass


SHELL_HELP = """\
commands:
  send +PHONE TEXT        send TEXT to +PHONE (the rest of the line)
  poll                    wait a second for messages and receipts, and show them
  presence +PHONE...      online now, or when last seen
  contacts +PHONE...      which of these numbers are registered
  help                    this list
  quit                    leave (or Ctrl-D)
messages and receipts that arrived are shown before each prompt; photos and files
are saved into the media directory (--media-dir), with a line saying where"""


def _presence_lines(p: dict[str, Any], asked: list[str]) -> list[str]:
    lines = []
    for phone in asked:
        st = p.get(phone)
        if st is None:
            lines.append(f"{phone}: not registered")
        elif st.get("hidden"):
            lines.append(f"{phone}: hidden (they keep their presence private)")
        elif st.get("online"):
            lines.append(f"{phone}: online")
        elif st.get("last_seen"):
            ts = float(st["last_seen"])
            lines.append(f"{phone}: last seen {_ago(ts)} "
                         f"({time.strftime('%Y-%m-%d %H:%M', time.localtime(ts))})")
        else:
            lines.append(f"{phone}: offline, never seen")
    return lines


def _shell_line(obj: _Ctx, c: Client, store: DeviceStore, line: str,
                save_to: str | None = None) -> bool:
    """Run one shell line; False to leave."""
    cmd, _, rest = line.partition(" ")
    match cmd:
        case "":
            pass
        case "quit" | "exit":
            return False
        case "help" | "?":
            click.echo(SHELL_HELP)
        case "send":
            to, _, text = rest.strip().partition(" ")
            if not to:
                click.echo("usage: send +PHONE TEXT")
                return True
            to = normalise_phone(to)
            if not text.strip():
                click.echo("the message is empty: nothing to send (send +PHONE TEXT)")
                return True
            limit = c.server_info.get("max_body")
            if isinstance(limit, int) and len(text.encode()) > limit:
                click.echo(f"the message is {len(text.encode())} bytes; the server takes "
                           f"at most {limit}")
                return True
            click.echo(f"stored as {c.send(to, text).mid}")
        case "poll":
            _show_all(store, c.poll(1.0), c=c, save_to=save_to)
        case "presence":
            asked = [normalise_phone(p) for p in rest.split()]
            if not asked:
                click.echo("usage: presence +PHONE...")
            for out in _presence_lines(c.presence(asked), asked):
                click.echo(out)
        case "contacts":
            asked = [normalise_phone(p) for p in rest.split()]
            if not asked:
                click.echo("usage: contacts +PHONE...")
                return True
            registered = set(c.contacts(asked))
            for p in asked:
                click.echo(f"{p}: {'registered' if p in registered else 'not registered'}")
        case _:
            click.echo(f"unknown command {cmd!r}; type help for the list")
    return True


@main.command()
@click.option("--media-dir", type=click.Path(file_okay=False), envvar="CHAT_MEDIA_DIR",
              help="where to save received photos and files (as for listen)")
@click.pass_obj
def shell(obj: _Ctx, media_dir: str | None) -> None:
    """Interactive: send, poll, presence, contacts, help, quit. Received photos and
    files are saved as by listen."""
    c, store = obj.session(reconnect_attempts=3)
    save_to = media_dir or default_media_dir(c.phone or "", obj.server)
    with c:
        click.echo(f"logged in as {c.phone} on {obj.server}; type help for the commands")
        pending = store.unshown()
        while True:
            try:
                if c.sock is not None:  # (after a lost connection: at the next command)
                    _show_all(store, pending + c.poll(0.0), c=c, save_to=save_to)
                    pending = []
                line = input("chat> ").strip()
                if not _shell_line(obj, c, store, line, save_to):
                    break
            except (EOFError, KeyboardInterrupt):
                click.echo()
                break
            except ChatClosed as e:
                if e.code == "replaced":
                    raise _fail(e, phone=c.phone, server=obj.server) from None
                click.echo(f"error: {describe(e, phone=c.phone, server=obj.server)}; "
                           "the next command tries again")
                with contextlib.suppress(OSError):
                    c.close()
            except ChatError as e:
                if e.code == "auth_failed":
                    raise _fail(e, phone=c.phone, server=obj.server) from None
                click.echo(f"error: {describe(e, phone=c.phone, server=obj.server)}")
            except (OSError, TimeoutError) as e:
                click.echo(f"error: {e}; the next command tries again")


if __name__ == "__main__":
    sys.exit(main())
