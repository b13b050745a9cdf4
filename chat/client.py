"""The chat client library, for devices: plain blocking sockets, no otp processes.

::

    from chat.client import Client

    c = Client("127.0.0.1", 5280)                  # tls=ssl context for TLS
    c.connect()
    c.register("+14155550100")                     # a PIN arrives by SMS (or in the log)
    key = c.verify("+14155550100", "123456")       # keep it: it is the device's identity
    c.login("+14155550100", key)
    r = c.send("+14155550111", "hello")            # r.mid: the server stored it
    for ev in c.poll(timeout=5.0):                 # messages and receipts, acknowledged
        print(ev)
    c.close()

What it does for you:

- one request at a time, each with an id; replies are matched by id, and what the
  server pushes meanwhile (``msg``, ``receipt``) is buffered for ``poll``;
- ``poll`` acknowledges what it returns (one ``ack`` per batch), which deletes it from
  the server, and drops duplicates (messages by ``mid``, receipts by type and ``mid``)
  while still acknowledging them. What the device has taken is remembered by ``seen``:
  in memory by default (the last ``MemorySeen.keep`` keys), or in a ``DeviceStore`` on
  disk, which keeps the events themselves, durably *before* they are acknowledged, so
  that nothing acknowledged is lost and nothing is shown twice across restarts of the
  client (the command-line client uses one; ``unshown`` / ``mark_shown``)::

      store = DeviceStore("/home/me/.config/chat-client/127.0.0.1:5280/14155550100.db")
      c = Client("127.0.0.1", 5280, seen=store)
      ...
      for ev in store.unshown() + c.poll(5.0):    # what an earlier run did not show
          print(ev)
          store.mark_shown([ev])

- with ``auto_reconnect`` (on by default once logged in), a broken connection is
  reopened, the session logged in again, and the interrupted request sent again. ``send``
  keeps its ``cmid`` across retries, so the server stores the message once.

Failure semantics: a refused request raises ``ChatError`` with the server's ``code`` and
``message``; a connection the server closed raises ``ChatClosed`` (with its code, e.g.
``replaced``) unless auto-reconnect recovers it; ``TimeoutError`` when no reply came in
time. Not thread-safe: use one ``Client`` per thread.
"""

from __future__ import annotations

import base64
import http.client
import json
import mimetypes
import os
import re
import socket
import sqlite3
import ssl
import time
import urllib.parse
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import msgpack

from chat.media_crypto import (
    CHUNK,
    TAG_SIZE,
    Decryptor,
    EncryptingReader,
    MediaError,
    MediaSecret,
    atomic_writer,
)
from chat.protocol import (
    CLOSING_CODES,
    DEFAULT_MAX_FRAME,
    PROTOCOL_VERSION,
    FrameReader,
    decode_body,
    encode,
    is_phone,
)

__all__ = ["RECEIPT_RANK", "ChatClosed", "ChatError", "Client", "DeviceStore", "MediaItem",
           "MemorySeen", "Progress", "Seen", "SendResult", "key_dir", "key_path",
           "normalise_phone"]

#: ``progress(done, total)``: bytes of a media transfer done so far, of ``total``
Progress = Callable[[int, int], None]

#: a message's receipts in the order its states follow each other (a later one implies
#: the earlier ones)
RECEIPT_RANK = {"sent": 1, "delivered": 2, "read": 3}


class ChatError(Exception):
    """The server refused a request: ``code`` and ``message`` from its error frame."""

    def __init__(self, code: str, message: str, frame: dict[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.frame = frame or {}


class ChatClosed(ChatError):
    """The connection is gone (``code`` is the server's closing code, or ``closed``)."""


def normalise_phone(text: str) -> str:
    """An E.164 number from what a user typed: spaces, dashes, dots and parentheses go,
    a missing leading ``+`` is added; raises ``ChatError("invalid_phone")`` for anything
    that is not ``+`` then 7 to 15 digits, the first not 0 (the server's rule)::

        >>> normalise_phone("1 (415) 555-0100")
        '+14155550100'
    """
    s = "".join(ch for ch in text.strip() if ch not in " -.()")
    if s and s[0] != "+":
        s = "+" + s
    if not is_phone(s):
        raise ChatError("invalid_phone", f"expected a phone number in E.164 form: + then "
                                         f"7 to 15 digits, the first not 0 (like "
                                         f"+14155550100), got {text!r}")
    return s


@dataclass(frozen=True)
class SendResult:
    mid: str
    ts: float
    cmid: str


def event_key(ev: dict[str, Any]) -> str:
    """What identifies a pushed event for deduplication: a message by its ``mid``, a
    receipt by its type and ``mid`` (the server's push ids change between sessions)."""
    if ev["t"] == "msg":
        return "m:" + str(ev["mid"])
    return f"r:{ev['type']}:{ev['mid']}"


def _safe_name(name: str) -> str:
    """A file name from what a sender said its file was called: no directories, no
    leading dots, no control characters; ``media`` if nothing is left."""
    base = os.path.basename(name.replace("\\", "/"))
    base = re.sub(r"[\x00-\x1f\x7f/]", "_", base).lstrip(".").strip()
    return base[:120] or "media"


@dataclass(frozen=True)
class MediaItem:
    """A received media message (``Client.media_item(ev)``): the server's media id, the
    secret that decrypts it, what the sender said about the file, and where to download
    it (``url`` and ``token``, which expire: ``Client.download`` asks for fresh ones)."""

    mid: str
    sender: str
    media_id: str
    secret: MediaSecret
    name: str
    mime: str
    caption: str
    thumbnail: bytes | None
    url: str | None = None
    token: str | None = None

    @property
    def size(self) -> int:
        """Of the plaintext, in bytes."""
        return self.secret.size

    @classmethod
    def from_event(cls, ev: dict[str, Any]) -> MediaItem:
        """``MediaError("not_media")`` if ``ev`` is not a media message, ``bad_key`` if
        its record holds no usable secret."""
        rec = ev.get("body") if ev.get("t") == "msg" and ev.get("kind") == "media" else None
        if not isinstance(rec, dict) or not isinstance(rec.get("media"), str):
            raise MediaError("not_media", f"expected a media message (a msg of kind media "
                                          f"whose body names a media id), got "
                                          f"{str(ev)[:200]}")
        thumb = rec.get("thumbnail")
        try:
            thumb_bytes = base64.b64decode(thumb, validate=True) if thumb else None
        except (ValueError, TypeError):
            thumb_bytes = None
        raw = ev.get("download")
        dl: dict[str, Any] = raw if isinstance(raw, dict) else {}
        return cls(mid=str(ev["mid"]), sender=str(ev.get("from", "")),
                   media_id=rec["media"], secret=MediaSecret.from_fields(rec),
                   name=_safe_name(str(rec.get("name", ""))),
                   mime=str(rec.get("mime") or "application/octet-stream"),
                   caption=str(rec.get("caption") or ""), thumbnail=thumb_bytes,
                   url=str(dl["url"]) if dl.get("url") else None,
                   token=str(dl["token"]) if dl.get("token") else None)


class Seen(Protocol):
    """Where a device remembers the events it has taken (``Client(seen=...)``)."""

    def take(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Remember ``events`` and return those not taken before, in order. The client
        acknowledges them (the server then deletes them) only after this returns: a
        store that keeps them across restarts must have them on disk by then."""
        ...


class MemorySeen:
    """Deduplication in memory, over the last ``keep`` events (the default ``seen``).
    The server pushes again only what was not acknowledged (a lost ack, a reconnect, a
    crash of a server process replaying a lazy delete), so a window far longer than its
    push window is enough; a client that restarts forgets it."""

    def __init__(self, keep: int = 100_000) -> None:
        self.keep = keep
        self._keys: set[str] = set()
        self._order: deque[str] = deque()

    def __contains__(self, ev: dict[str, Any]) -> bool:
        return event_key(ev) in self._keys

    def take(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        new = []
        keys, order = self._keys, self._order
        for ev in events:
            k = event_key(ev)
            if k in keys:
                continue
            keys.add(k)
            order.append(k)
            new.append(ev)
        while len(order) > self.keep:
            keys.discard(order.popleft())
        return new


class DeviceStore:
    """The device's own record of what it received: an sqlite file (created 0600),
    written with ``fsync`` before the client acknowledges anything, so that a message
    the server deleted on the device's word is never lost with the device's process,
    and is never shown twice: ``take`` keeps new events as *unshown*; the application
    calls ``mark_shown`` once it showed them, and ``unshown()`` gives, after a restart,
    those it took but had not shown yet (a crash between showing and marking shows that
    one event again: the window is the application's own). Shown events are forgotten
    beyond the newest ``keep``."""

    def __init__(self, path: str, keep: int = 100_000) -> None:
        self.path = path
        self.keep = keep
        os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))  # 0600 before sqlite
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("CREATE TABLE IF NOT EXISTS events (n INTEGER PRIMARY KEY, "
                        "k TEXT UNIQUE NOT NULL, ev BLOB NOT NULL, shown INTEGER NOT NULL)")
        self._taken = 0

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> DeviceStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __contains__(self, ev: dict[str, Any]) -> bool:
        return self.db.execute("SELECT 1 FROM events WHERE k = ?",
                               (event_key(ev),)).fetchone() is not None

    def take(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not events:
            return []
        new = []
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            for ev in events:
                cur = db.execute("INSERT OR IGNORE INTO events (k, ev, shown) VALUES (?, ?, 0)",
                                 (event_key(ev), msgpack.packb(ev, use_bin_type=True)))
                if cur.rowcount:
                    new.append(ev)
            self._taken += len(new)
            if self._taken >= 1000:  # forget old shown events now and then
                self._taken = 0
                db.execute("DELETE FROM events WHERE shown = 1 AND n <= "
                           "(SELECT MAX(n) FROM events) - ?", (self.keep,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return new

    def unshown(self) -> list[dict[str, Any]]:
        """Events taken but not marked shown, oldest first."""
        return [msgpack.unpackb(b, raw=False) for (b,) in
                self.db.execute("SELECT ev FROM events WHERE shown = 0 ORDER BY n")]

    def mark_shown(self, events: list[dict[str, Any]]) -> None:
        self.db.executemany("UPDATE events SET shown = 1 WHERE k = ?",
                            [(event_key(ev),) for ev in events])

    def shown_receipt(self, mid: str) -> int:
        """The rank (``RECEIPT_RANK``) of the latest receipt shown for message ``mid``,
        0 if none: a receipt at or below it says nothing new."""
        keys = [f"r:{kind}:{mid}" for kind in RECEIPT_RANK]
        rows = self.db.execute("SELECT k FROM events WHERE shown = 1 AND k IN (?, ?, ?)",
                               keys).fetchall()
        return max((RECEIPT_RANK[k.split(":", 2)[1]] for (k,) in rows), default=0)


class Client:
    def __init__(self, host: str, port: int, *, tls: ssl.SSLContext | None = None,
                 server_hostname: str | None = None, timeout: float = 10.0,
                 auto_reconnect: bool = True, client_name: str = "chat.client",
                 max_frame: int = DEFAULT_MAX_FRAME, seen: Seen | None = None,
                 reconnect_attempts: int = 20) -> None:
        self.host, self.port = host, port
        self.reconnect_attempts = reconnect_attempts
        self.tls = tls
        self.server_hostname = server_hostname
        self.timeout = timeout
        self.auto_reconnect = auto_reconnect
        self.client_name = client_name
        self.max_frame = max_frame
        self.sock: Any = None
        self.reader = FrameReader(max_frame)
        self.events: deque[dict[str, Any]] = deque()
        self.next_id = 1
        self.phone: str | None = None
        self.key: bytes | None = None
        self.server_info: dict[str, Any] = {}
        self.seen: Seen = seen if seen is not None else MemorySeen()
        self._unreturned: list[dict[str, Any]] = []  # taken, not handed out yet (see poll)
        self.reconnects = 0

    # ---------------------------------------------------------------- connection

    def connect(self) -> dict[str, Any]:
        """Open the connection and say hello; returns the server's hello reply."""
        self._close_sock()
        self._open_sock()
        try:
            self.server_info = self._request_once("hello", {"version": PROTOCOL_VERSION,
                                                            "client": self.client_name})
        except ChatClosed as e:
            if e.code != "unsupported_version" or PROTOCOL_VERSION == 1:
                raise
            # A server that speaks only version 1: say hello again in version 1.
            return self._connect_v1()
        return self.server_info

    def _open_sock(self) -> None:
        """A fresh TCP (or TLS) connection to the server, and a fresh frame reader."""
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls is not None:
            sock = self.tls.wrap_socket(sock, server_hostname=self.server_hostname or self.host)
        self.sock = sock
        self.reader = FrameReader(self.max_frame)

    def _connect_v1(self) -> dict[str, Any]:
        self._open_sock()
        self.server_info = self._request_once("hello", {"version": 1,
                                                        "client": self.client_name})
        return self.server_info

    @property
    def version(self) -> int:
        """The protocol version of the connection (the server's hello reply)."""
        return int(self.server_info.get("version", 1))

    def close(self) -> None:
        self._close_sock()

    def _close_sock(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def reconnect(self, attempts: int | None = None, delay: float = 0.05) -> None:
        """Open a new connection and log in again (with back-off between attempts;
        ``attempts`` defaults to ``reconnect_attempts``). Raises ``ChatClosed`` with code
        ``closed`` when no attempt worked, ``replaced`` when the server ended the
        session, ``ChatError`` ``auth_failed`` when the key no longer works."""
        last: Exception | None = None
        n = self.reconnect_attempts if attempts is None else attempts
        for i in range(n):
            try:
                self.connect()
                if self.phone is not None and self.key is not None:
                    self._request_once("login", {"phone": self.phone, "key": self.key})
                self.reconnects += 1
                return
            except ChatClosed as e:
                if e.code == "replaced":
                    raise
                last = e
            except (OSError, TimeoutError) as e:
                last = e
            if i + 1 < n:
                time.sleep(min(delay * 2**i, 2.0))
        raise ChatClosed("closed", f"could not reconnect to {self.host}:{self.port} "
                                   f"({n} attempts): {last}")

    # ---------------------------------------------------------------- frames

    def _send_frame(self, frame: dict[str, Any]) -> None:
        if self.sock is None:
            raise ChatClosed("closed", "not connected")
        try:
            self.sock.sendall(encode(frame))
        except OSError as e:
            self._close_sock()
            raise ChatClosed("closed", f"write failed: {e}") from None

    def _read_frame(self, deadline: float | None) -> dict[str, Any] | None:
        """The next frame, or None at the deadline."""
        while True:
            body = self.reader.next_body()
            if body is not None:
                return decode_body(body)
            if self.sock is None:
                raise ChatClosed("closed", "not connected")
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                return None
            self.sock.settimeout(wait)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return None
            except OSError as e:
                self._close_sock()
                raise ChatClosed("closed", f"read failed: {e}") from None
            finally:
                if self.sock is not None:
                    self.sock.settimeout(self.timeout)
            if not data:
                self._close_sock()
                raise ChatClosed("closed", "the server closed the connection")
            self.reader.feed(data)

    def _take(self, frame: dict[str, Any]) -> None:
        t = frame.get("t")
        if t in ("msg", "receipt"):
            self.events.append(frame)
        elif t == "error" and frame.get("id") is None:
            code = frame.get("code", "closed")
            if code in CLOSING_CODES:
                self._close_sock()
                raise ChatClosed(code, frame.get("message", ""), frame)

    def _request_once(self, t: str, fields: dict[str, Any],
                      timeout: float | None = None) -> dict[str, Any]:
        rid = self.next_id
        self.next_id += 1
        self._send_frame({"t": t, "id": rid, **fields})
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            frame = self._read_frame(deadline)
            if frame is None:
                raise TimeoutError(f"no reply to {t!r} within {timeout or self.timeout} s")
            if frame.get("id") == rid and frame.get("t") in ("ok", "pong", "error"):
                if frame["t"] == "error":
                    code = frame.get("code", "?")
                    if code in CLOSING_CODES:  # (a closing error answering this request)
                        self._close_sock()
                        raise ChatClosed(code, frame.get("message", ""), frame)
                    raise ChatError(code, frame.get("message", ""), frame)
                return frame
            self._take(frame)

    def request(self, t: str, **fields: Any) -> dict[str, Any]:
        """Send one request and return its reply (reconnecting if allowed)."""
        timeouts = 0
        while True:
            try:
                return self._request_once(t, fields)
            except ChatClosed as e:
                if not self._may_reconnect(e):
                    raise
            except TimeoutError:
                # A silent server: the connection may be half dead. Start over (once).
                timeouts += 1
                if timeouts > 1 or not self._may_reconnect(ChatClosed("closed", "")):
                    raise
            self.reconnect()  # (outside the handler: a failure here is not "during" it)

    def _may_reconnect(self, e: ChatClosed) -> bool:
        return (self.auto_reconnect and self.key is not None
                and e.code in ("closed", "idle_timeout", "slow_reader", "shutdown"))

    # ---------------------------------------------------------------- requests

    def ping(self) -> None:
        self.request("ping")

    def register(self, phone: str) -> float:
        return float(self.request("register", phone=phone)["expires_in"])

    def verify(self, phone: str, pin: str) -> bytes:
        return bytes(self.request("verify", phone=phone, pin=pin)["key"])

    def login(self, phone: str, key: bytes) -> int:
        r = self._request_once("login", {"phone": phone, "key": key})
        self.phone, self.key = phone, key
        return int(r["queued"])

    def send(self, to: str, body: str | bytes, cmid: str | None = None) -> SendResult:
        cmid = cmid or uuid.uuid4().hex
        r = self.request("send", to=to, cmid=cmid, body=body)
        return SendResult(r["mid"], r["ts"], cmid)

    def ack(self, ids: list[int], *, wait: bool = True) -> None:
        """Acknowledge pushed items. ``wait``: until the server answers (it has deleted
        them); otherwise (protocol version 2) an ack without an id, not answered — the
        cheaper one for the server and the network; a lost one means the items come
        again (and are dropped as duplicates by ``poll``)."""
        if not ids:
            return
        if wait or self.version < 2:
            self.request("ack", ids=list(ids))
            return
        try:
            self._send_frame({"t": "ack", "ids": list(ids)})
            return
        except ChatClosed as e:
            # the items come again after the next login: nothing to resend
            if not self._may_reconnect(e):
                raise
        self.reconnect()

    def read(self, sender: str, mids: list[str]) -> None:
        self.request("read", **{"from": sender, "mids": list(mids)})

    def presence(self, phones: list[str]) -> dict[str, Any]:
        return dict(self.request("presence", phones=list(phones))["presence"])

    def contacts(self, phones: list[str]) -> list[str]:
        return list(self.request("contacts", phones=list(phones))["registered"])

    def privacy(self, hide_presence: bool) -> None:
        self.request("privacy", hide_presence=hide_presence)

    def provision(self, token: str, phones: list[str]) -> list[bytes]:
        """Admin path (when the server enables it): register phones without SMS."""
        return [bytes(k) for k in self.request("admin_provision", token=token,
                                               phones=list(phones))["keys"]]

    def bye(self) -> None:
        try:
            self._request_once("bye", {})
        except ChatClosed:
            pass
        self.close()

    # ---------------------------------------------------------------- media

    #: tries of one upload while the media endpoint answers ``busy`` (see send_media)
    upload_attempts = 3

    def send_media(self, to: str, path: str, *, caption: str = "",
                   progress: Progress | None = None, mime: str | None = None,
                   cmid: str | None = None) -> SendResult:
        """Send the file at ``path`` to ``to`` as a media message, end-to-end encrypted
        (chat.media_crypto: AES-256-GCM, a fresh key): a thumbnail if it is an image
        (``MediaError("image_too_large")`` for one beyond Pillow's pixel limit: nothing
        is sent), an upload slot from ``media_upload``, the ciphertext streamed to it
        (``progress(done, total)`` as it goes), then the message: its record names the
        media and holds the key, IV and plaintext SHA-256. The server never sees the
        plaintext (but see docs/media.md, "Media encryption": it relays the message
        that holds the key). An endpoint that is ``busy`` is tried again after its
        ``Retry-After`` (at most ``upload_attempts`` times in all). ``ChatError``
        ``media_too_large`` and the other refusals of docs/protocol.md, "Media";
        ``MediaError`` when the upload fails."""
        from chat.thumbnail import make_thumbnail  # (Pillow: only for media)

        size = os.path.getsize(path)
        mime = mime or mimetypes.guess_type(path)[0] or "application/octet-stream"
        thumb = make_thumbnail(path)
        total = size + TAG_SIZE
        slot = self.request("media_upload", size=total)
        for attempt in range(1, self.upload_attempts + 1):
            with open(path, "rb") as f:
                reader = EncryptingReader(f, size)  # (a fresh key each attempt)
                try:
                    got = _http_upload(str(slot["url"]), str(slot["token"]), reader, total,
                                       self.timeout, progress, tls=self.tls)
                    break
                except MediaError as e:
                    if e.code != "busy" or attempt == self.upload_attempts:
                        raise
                    _wait(min(e.retry_after or 1.0, 30.0))
        media_id = reader.ciphertext_sha256
        if got.get("media") != media_id:
            raise MediaError("upload_failed", f"the server stored the upload as "
                                              f"{got.get('media')!r}, expected {media_id}")
        record: dict[str, Any] = {"media": media_id, "sha256": media_id,
                                  **reader.secret.to_fields(), "mime": mime,
                                  "name": os.path.basename(path)}
        if caption:
            record["caption"] = caption
        if thumb is not None:
            record["thumbnail"] = base64.b64encode(thumb.data).decode("ascii")
            record["width"], record["height"] = thumb.width, thumb.height
        cmid = cmid or uuid.uuid4().hex
        r = self.request("send", to=to, cmid=cmid, kind="media", body=record)
        return SendResult(r["mid"], r["ts"], cmid)

    @staticmethod
    def media_item(ev: dict[str, Any]) -> MediaItem | None:
        """The media of a pushed message, ``None`` for a text message or a receipt."""
        if ev.get("t") != "msg" or ev.get("kind") != "media":
            return None
        return MediaItem.from_event(ev)

    def download(self, item: MediaItem | dict[str, Any], dest: str, *,
                 progress: Progress | None = None, ack: bool = True) -> str:
        """Download a received media item, check it (its SHA-256 against the media id,
        the GCM tag, the size, the plaintext SHA-256) and decrypt it into ``dest`` (a
        directory: the sender's file name, made safe and unique, inside it). The file
        appears atomically and only if it checks out (``MediaIntegrityError``
        otherwise: nothing is written). Then, if ``ack``, ``media_ack``: the server may
        delete its copy. A download token that expired is renewed with
        ``media_download``. Returns the path written."""
        if not isinstance(item, MediaItem):
            item = MediaItem.from_event(item)
        if os.path.isdir(dest):
            dest = _unique(os.path.join(dest, item.name))
        url, token = item.url, item.token
        for attempt in range(2):
            if url is None or token is None or attempt:
                fresh = self.request("media_download", media=item.media_id)
                url, token = str(fresh["url"]), str(fresh["token"])
            out, commit, abort = atomic_writer(dest)
            try:
                d = Decryptor(item.secret, out.write, ciphertext_sha256=item.media_id)
                _http_download(url, token, d.feed, item.secret.ciphertext_size,
                               self.timeout, progress, tls=self.tls)
                d.finish()
                commit()
                break
            except MediaError as e:
                abort()
                if attempt or e.code not in ("token_expired", "bad_token"):
                    raise
            except BaseException:
                abort()
                raise
        if ack:
            self.media_ack([item.media_id])
        return dest

    def media_ack(self, media_ids: list[str]) -> None:
        """Tell the server this device has these media (checked): it deletes a blob
        once every recipient said so."""
        self.request("media_ack", media=list(media_ids))

    # ---------------------------------------------------------------- events

    def poll(self, timeout: float = 0.0, *, ack: bool = True, max_events: int = 10_000,
             ack_wait: bool = True) -> list[dict[str, Any]]:
        """Wait up to ``timeout`` seconds for pushed events; return the new ones (duplicates
        dropped) after acknowledging all of them if ``ack`` (``ack_wait``: see ``ack``)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if not self.events:
                    frame = self._read_frame(deadline)
                    if frame is not None:
                        self._take(frame)
                # take what is already buffered, without waiting
                while len(self.events) < max_events:
                    frame = self._read_frame(time.monotonic())
                    if frame is None:
                        break
                    self._take(frame)
                break
            except ChatClosed as e:
                if not self._may_reconnect(e):
                    raise
            self.reconnect()
        evs = list(self.events)
        self.events.clear()
        got = self.seen.take(evs)  # (durably, for a store on disk) before the ack
        if self._unreturned:
            got = self._unreturned + got
            self._unreturned = []
        if ack and evs:
            try:
                self.ack([ev["id"] for ev in evs], wait=ack_wait)
            except BaseException:
                # The device has them (``seen`` too: pushed again, they would be dropped
                # as duplicates): the next poll hands them out.
                self._unreturned = got
                raise
        return got

    def wait_for(self, pred: Any, timeout: float = 10.0, *, ack_wait: bool = True
                 ) -> list[dict[str, Any]]:
        """Poll (acknowledging; ``ack_wait``: see ``ack``) until ``pred(all events so
        far)`` is true; return them."""
        deadline = time.monotonic() + timeout
        out: list[dict[str, Any]] = []
        while not pred(out):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"condition not met within {timeout} s; got {out!r:.500}")
            out.extend(self.poll(min(left, 1.0), ack_wait=ack_wait))
        return out


def key_dir(server: str | None = None) -> str:
    """Where the command-line client keeps its device keys for ``server`` (``host:port``):
    ``$XDG_CONFIG_HOME/chat-client/<host>:<port>/`` (default ``~/.config``), so that one
    number registered on two servers has two keys. ``server=None``: the directory itself,
    where earlier versions kept every key (one per number, whatever the server)."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    top = os.path.join(base, "chat-client")
    if server is None:
        return top
    return os.path.join(top, server.replace(os.sep, "_"))


def key_path(phone: str, server: str | None = None) -> str:
    """The file of ``phone``'s device key for ``server`` (see ``key_dir``)."""
    return os.path.join(key_dir(server), phone.lstrip("+") + ".key")


def _wait(seconds: float) -> None:
    """The pause before an upload is tried again (its own name: tests replace it)."""
    time.sleep(seconds)


def _unique(path: str) -> str:
    """``path``, or ``name (2).ext`` ... if it exists."""
    root, ext = os.path.splitext(path)
    n = 2
    while os.path.exists(path):
        path = f"{root} ({n}){ext}"
        n += 1
    return path


def _http_conn(url: str, timeout: float, tls: ssl.SSLContext | None
               ) -> tuple[http.client.HTTPConnection, str]:
    u = urllib.parse.urlsplit(url)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise MediaError("bad_url", f"expected an http(s) URL for the media, got {url!r}")
    target = u.path or "/"
    if u.query:
        target += "?" + u.query
    if u.scheme == "https":
        return http.client.HTTPSConnection(u.hostname, u.port, timeout=timeout,
                                           context=tls), target
    return http.client.HTTPConnection(u.hostname, u.port, timeout=timeout), target


def _http_error(what: str, url: str, resp: http.client.HTTPResponse) -> MediaError:
    """The endpoint's JSON error (``{"error", "message"}``) as a ``MediaError``."""
    raw = resp.read(4096)
    try:
        j = json.loads(raw)
        code, msg = str(j["error"]), str(j.get("message", ""))
    except (ValueError, KeyError, TypeError):
        code, msg = f"http_{resp.status}", raw.decode("utf-8", "replace").strip()
    err = MediaError(code, f"{what} {url}: {resp.status} {resp.reason}"
                           f"{': ' + msg if msg else ''}")
    try:
        err.retry_after = float(resp.getheader("Retry-After") or "") or None
    except ValueError:
        pass
    return err


def _http_upload(url: str, token: str, body: Any, total: int, timeout: float,
                 progress: Progress | None, *, tls: ssl.SSLContext | None = None
                 ) -> dict[str, Any]:
    """POST the chunks of ``body`` (``total`` bytes) to ``url``; the endpoint's JSON."""
    conn, target = _http_conn(url, timeout, tls)
    done = 0

    def chunks() -> Any:
        nonlocal done
        for block in body:
            yield block
            done += len(block)
            if progress is not None:
                progress(done, total)

    try:
        conn.request("POST", target, body=chunks(), encode_chunked=False,
                     headers={"Authorization": f"Bearer {token}",
                              "Content-Length": str(total),
                              "Content-Type": "application/octet-stream"})
        resp = conn.getresponse()
        if resp.status not in (200, 201):
            raise _http_error("upload to", url, resp)
        return dict(json.loads(resp.read()))
    except (OSError, http.client.HTTPException, ValueError) as e:
        if isinstance(e, MediaError):
            raise
        raise MediaError("upload_failed", f"upload to {url} failed: {e}") from None
    finally:
        conn.close()


def _http_download(url: str, token: str, sink: Callable[[bytes], Any], total: int,
                   timeout: float, progress: Progress | None, *,
                   tls: ssl.SSLContext | None = None) -> None:
    """GET ``url``'s body into ``sink``, in chunks."""
    conn, target = _http_conn(url, timeout, tls)
    try:
        conn.request("GET", target, headers={"Authorization": f"Bearer {token}"})
        resp = conn.getresponse()
        if resp.status != 200:
            raise _http_error("download of", url, resp)
        done = 0
        while block := resp.read(CHUNK):
            sink(block)
            done += len(block)
            if progress is not None:
                progress(done, total)
    except (OSError, http.client.HTTPException) as e:
        raise MediaError("download_failed", f"download of {url} failed: {e}") from None
    finally:
        conn.close()
