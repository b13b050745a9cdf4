"""The media endpoint: HTTP(S) uploads and downloads of blobs beside the chat
connection, the tokens that authorise them, and the checks of the ``media`` message.

docs/protocol.md ("Media") is the specification. The pieces::

    chat.media.store   (chat.media_store) blobs on disk + their records, the sweep
    chat.media.http    a gen_server owning the listening socket, serving this module's
                       WSGI app with ``otp.httpd`` ── acceptor (linked, blocks in accept)
                           └── one process per HTTP connection (linked to chat.media.http),
                               running the HTTP handler and the WSGI app

Every HTTP connection is a process of the node, like a chat connection: the WSGI app
runs in it and talks to ``chat.media.store`` with ``gen_server.call``; its socket is
the node's cooperative socket (a stalled client blocks only its own process). Stopping
``chat.media.http`` closes the listener and ends every connection (they are linked);
an upload cut short that way leaves only a temp file, removed then or at next start.

Tokens are ``<payload>.<mac>`` (URL-safe base64), the payload
``purpose|phone|media id|expiry`` signed with HMAC-SHA256 under a key kept in
``<data_dir>/media/token.key``: an upload token ("up") names its user, a download
token ("down") its user and one media id. A download is allowed when the token is
valid *and*, checked at each request, the user uploaded the blob or received a
message that named it.

Example (the session side, in a connection process; the HTTP side is in the tests)::

    slot = media.upload_slot("+14155550100", 1234)    # {"url", "token", ...}
    body = media.check_record(record, "+14155550100", "+14155550111", max_body)
    # ... body goes down the text path (users.send); at push time:
    record, download = media.push_fields("+14155550111", body)

Failure semantics: every refused HTTP request gets a status and a JSON body
``{"error", "message"}`` (docs/protocol.md lists them); nothing of a refused or
interrupted upload is kept. Chat-side refusals raise ``ProtocolError`` (``bad_media``,
``thumbnail_too_large``, ``unknown_media``, ``media_too_large``, ``unavailable``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import secrets
import socket
import ssl
import tempfile
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import msgpack

from chat import media_store
from chat.config import MediaConfig
from chat.media_store import Access, Ack, Reference, blob_path, is_media_id, wall
from chat.protocol import ProtocolError
from otp import gen_server, httpd
from otp.gen_server import GenServer, NoReply, Ok, Reply, Stop
from otp.node import NodeVar
from otp.process import (
    Down,
    Exit,
    monitor,
    receive,
    send,
    send_after,
    spawn,
    trap_exit,
    yield_now,
)
from otp.process import now as _now
from otp.process import self as _self
from otp.threads import run_in_thread

__all__ = [
    "HTTP",
    "MEDIA_TAG",
    "MediaCtx",
    "ack",
    "address",
    "check_record",
    "download_slot",
    "is_media_body",
    "push_fields",
    "start_http",
    "upload_slot",
    "uploads_running",
]

HTTP = "chat.media.http"
#: the first item of the internal body of a media message: ``(MEDIA_TAG, packed
#: record)`` (a tuple, immutable, and never a text body: those are ``str`` or ``bytes``)
MEDIA_TAG = "media"
#: an upload's body goes to disk BATCH bytes at a time, each batch one thread-pool job:
#: with a Content-Length over plain HTTP (``otp.httpd.direct_body``) the job reads the
#: batch off the socket, hashes and writes it, so no byte of it is copied on the node's
#: thread; otherwise (TLS, a chunked body) the process reads it off its socket in
#: pieces of READ bytes (yielding between pieces) and the job hashes and writes them. A
#: download goes out BATCH bytes per job too (``otp.httpd.FileBody``: sendfile(2))
READ = 256 * 1024
BATCH = 1024 * 1024
#: thread-pool jobs of the media endpoint at once (the pool has ~10 threads; the rest
#: stay free for the message store's commits)
DISK_JOBS = 3
#: Pacing: the bytes per second the uploads of the endpoint may take in, all together,
#: adapt to the node's load. Every TICK seconds while uploads run, the endpoint looks at
#: how late its own timer fired: later than LAG, and the node is short of CPU (chat is
#: queueing), so the rate halves (down to MIN_RATE); on time while uploads wait for
#: their share, and it grows by RATE_STEP (up to MAX_RATE). An upload waits for its
#: share before each BATCH goes to disk, so its socket fills and its client slows
#: down: uploads take what chat leaves.
TICK = 0.01
LAG = 0.003
MIN_RATE = 2e6
MAX_RATE = 1e9
START_RATE = 256e6
RATE_STEP = 2e6
#: the platform can start an upload's writeback early (see ``_write_out``)
_FADVISE = hasattr(os, "posix_fadvise")
MAX_CAPTION = 4096
MAX_MIME = 255
log = logging.getLogger("chat.media")


@dataclass(frozen=True)
class MediaCtx:
    """What the session side needs of the endpoint (node-local, set while it runs)."""

    cfg: MediaConfig
    root: str
    key: bytes
    base_url: str


_CTX: NodeVar[MediaCtx | None] = NodeVar("chat.media.ctx", default=None)


def _ctx() -> MediaCtx:
    ctx = _CTX.get()
    if ctx is None:
        raise ProtocolError("unavailable", "this server has no media endpoint (no media "
                                           "section in its config), or it is restarting")
    return ctx


# ---------------------------------------------------------------------------- tokens


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_token(key: bytes, purpose: str, phone: str, media: str, expires: float) -> str:
    """A signed token: ``purpose`` "up" (any upload of ``phone``) or "down" (``media``
    for ``phone``), valid until ``expires`` (``media_store.wall`` seconds)."""
    payload = f"{purpose}|{phone}|{media}|{int(expires)}".encode()
    mac = hmac.new(key, payload, hashlib.sha256).digest()[:18]
    return f"{_b64(payload)}.{_b64(mac)}"


class _HttpError(Exception):
    def __init__(self, status: int, code: str, message: str,
                 headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.headers = status, code, message, headers


def check_token(key: bytes, token: str | None, purpose: str, media: str) -> str:
    """The phone a valid token names; ``_HttpError`` 401 (``bad_token``,
    ``token_expired``) otherwise."""
    if not token:
        raise _HttpError(401, "bad_token", "expected 'Authorization: Bearer <token>' (a "
                                           "token from media_upload or media_download), "
                                           "got none")
    try:
        p, m = token.split(".", 1)
        payload, mac = _unb64(p), _unb64(m)
        good = hmac.compare_digest(hmac.new(key, payload, hashlib.sha256).digest()[:18], mac)
        purpose_, phone, media_, exp = payload.decode().split("|")
        expires = int(exp)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        good = False
    if not good:
        raise _HttpError(401, "bad_token", "the token is malformed or forged")
    if purpose_ != purpose or media_ != media:
        what = "an upload" if purpose == "up" else f"downloading {media}"
        raise _HttpError(401, "bad_token", f"expected a token for {what}, got one for "
                                           f"something else")
    if expires < wall():
        raise _HttpError(401, "token_expired", "the token has expired: ask for a new one "
                                               "(media_upload / media_download)")
    return phone


# ---------------------------------------------------------------------------- session side


def upload_slot(phone: str, size: int) -> dict[str, Any]:
    """The reply of ``media_upload``: where to POST, and a token bound to ``phone``."""
    ctx = _ctx()
    cfg = ctx.cfg
    if size < 1:
        raise ProtocolError("bad_request", f"media_upload: field 'size': expected 1 or "
                                           f"more bytes, got {size}")
    if size > cfg.max_size:
        raise ProtocolError("media_too_large", f"expected at most {cfg.max_size} bytes, "
                                               f"got {size}", max_size=cfg.max_size)
    exp = wall() + cfg.token_ttl
    return {"url": ctx.base_url + "/media", "token": make_token(ctx.key, "up", phone, "", exp),
            "expires_in": cfg.token_ttl, "max_size": cfg.max_size}


def _download(ctx: MediaCtx, phone: str, media: str) -> dict[str, Any]:
    exp = wall() + ctx.cfg.token_ttl
    return {"url": f"{ctx.base_url}/media/{media}",
            "token": make_token(ctx.key, "down", phone, media, exp), "expires": exp}


def download_slot(phone: str, media: str) -> dict[str, Any]:
    """The reply of ``media_download``: a fresh download token, if ``phone`` may read
    ``media``; ``unknown_media`` otherwise (whether or not it exists)."""
    ctx = _ctx()
    if not is_media_id(media) or not isinstance(
            media_store.call(Access(media, phone)), int):
        raise ProtocolError("unknown_media", f"media {media!r:.80}: no such media, or not "
                                             f"yours to read")
    d = _download(ctx, phone, media)
    return {"url": d["url"], "token": d["token"], "expires_in": ctx.cfg.token_ttl}


def ack(phone: str, ids: tuple[str, ...]) -> None:
    """``media_ack``: ``phone``'s device has these blobs (malformed ids are ignored)."""
    _ctx()
    ids = tuple(i for i in ids if is_media_id(i))
    if ids:
        media_store.call(Ack(phone, ids))


def is_media_body(body: Any) -> bool:
    return body.__class__ is tuple


def _bad(message: str) -> ProtocolError:
    return ProtocolError("bad_media", f"media record: {message}")


def _type(v: Any) -> str:
    names = {str: "str", int: "int", bytes: "bin", bool: "bool", float: "float",
             list: "array", dict: "map", type(None): "nil"}
    return names.get(type(v), type(v).__name__)


def validate_record(rec: Any, thumbnail_max: int) -> None:
    """Check a media record (docs/protocol.md, "The media message"); ``ProtocolError``
    ``bad_media`` or ``thumbnail_too_large``. Opaque keys are not looked at."""
    if rec.__class__ is not dict:
        raise ProtocolError("bad_request", f"send: field 'body': expected a map (the media "
                                           f"record) for kind 'media', got {_type(rec)}")
    m = rec.get("media")
    if not is_media_id(m):
        raise _bad(f"key 'media': expected a media id (64 lowercase hex digits), got "
                   f"{_type(m)} {m!r:.80}")
    if rec.get("sha256") != m:
        raise _bad(f"key 'sha256': expected the media id {m}, got {rec.get('sha256')!r:.80}")
    size = rec.get("size")
    if size.__class__ is not int or size < 1:
        raise _bad(f"key 'size': expected an int >= 1, got {_type(size)} {size!r:.40}")
    mime = rec.get("mime")
    if mime.__class__ is not str or not 1 <= len(mime) <= MAX_MIME:
        raise _bad(f"key 'mime': expected a str of 1 to {MAX_MIME} characters, got "
                   f"{_type(mime)} {mime!r:.40}")
    for k in ("width", "height"):
        v = rec.get(k)
        if v is not None and (v.__class__ is not int or v < 0):
            raise _bad(f"key {k!r}: expected an int >= 0, got {_type(v)} {v!r:.40}")
    d = rec.get("duration")
    if d is not None and (d.__class__ not in (int, float) or not 0 <= d < float("inf")):
        raise _bad(f"key 'duration': expected a number >= 0, got {_type(d)} {d!r:.40}")
    cap = rec.get("caption")
    if cap is not None and (cap.__class__ is not str or len(cap.encode()) > MAX_CAPTION):
        raise _bad(f"key 'caption': expected a str of at most {MAX_CAPTION} bytes, got "
                   f"{_type(cap)} of {len(cap) if isinstance(cap, str | bytes) else '?'}")
    th = rec.get("thumbnail")
    if th is not None:
        if th.__class__ is not str:
            raise _bad(f"key 'thumbnail': expected a base64 str, got {_type(th)}")
        if len(th) > 4 * ((thumbnail_max + 2) // 3):  # cannot decode to <= the cap
            raise ProtocolError("thumbnail_too_large", f"expected a thumbnail of at most "
                                                       f"{thumbnail_max} bytes, got "
                                                       f"{len(th)} base64 characters",
                                max=thumbnail_max)
        try:
            raw = base64.b64decode(th.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            raise _bad("key 'thumbnail': expected standard base64 (RFC 4648, padded), "
                       "got something else") from None
        if len(raw) > thumbnail_max:
            raise ProtocolError("thumbnail_too_large", f"expected a thumbnail of at most "
                                                       f"{thumbnail_max} bytes, got "
                                                       f"{len(raw)}", max=thumbnail_max)


def check_record(rec: Any, sender: str, to: str, max_body: int) -> tuple[str, bytes]:
    """Check the record of a media ``send`` from ``sender`` to ``to``, record that the
    message names the blob (``to`` may then download it), and return the message body
    to store: ``(MEDIA_TAG, packed record)``. Called *before* the message is stored: a
    crash in between leaves a blob kept for a recipient who never gets the message
    (until the retention), never a message whose media cannot be downloaded."""
    ctx = _ctx()
    validate_record(rec, ctx.cfg.thumbnail_max)
    try:
        packed = msgpack.packb(rec, use_bin_type=True)
    except (TypeError, ValueError) as e:
        raise _bad(f"cannot be packed: {e}") from None
    if len(packed) > max_body:
        raise ProtocolError("body_too_large", f"expected a body of at most {max_body} "
                                              f"bytes, got a media record of {len(packed)}")
    err = media_store.call(Reference(rec["media"], rec["size"], sender, to))
    if err is not None:
        raise ProtocolError(err[0], err[1])
    return (MEDIA_TAG, packed)


def push_fields(phone: str, body: tuple[str, bytes]) -> tuple[Any, Any]:
    """The record of a stored media message and the ``download`` map of its push to
    ``phone`` (None while the endpoint is down)."""
    rec = msgpack.unpackb(body[1], raw=False)
    ctx = _CTX.get()
    m = rec.get("media") if isinstance(rec, dict) else None
    if ctx is None or not is_media_id(m):
        return rec, None
    return rec, _download(ctx, phone, m)


# ---------------------------------------------------------------------------- HTTP server


@dataclass(frozen=True)
class _Acquire:
    pid: Any


@dataclass(frozen=True)
class _Release:
    pid: Any


@dataclass(frozen=True)
class _Cancel:
    pass


@dataclass(frozen=True)
class _Disk:
    """Ask for one of the ``DISK_JOBS`` thread-pool turns, for ``size`` bytes of upload
    (answered when a turn is free and the pacing allows ``size`` more bytes)."""

    pid: Any
    size: int


@dataclass(frozen=True)
class _Tick:
    pass


@dataclass(frozen=True)
class _DiskDone:
    pid: Any


class _Http:
    __slots__ = ("acceptor", "active", "disk", "disk_wait", "due", "filled", "host", "max",
                 "port", "rate", "server", "sock", "tokens")


class MediaHttp(GenServer):
    """Owns the listening socket, the ``otp.httpd`` server and the upload slots; traps
    exits (its connections are linked to it: their ends free their slots, and its
    stop ends them)."""

    def init(self, arg: tuple[MediaConfig, str, ssl.SSLContext | None]) -> Any:
        cfg, data_dir, tls = arg
        trap_exit(True)
        root = os.path.join(data_dir, "media")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((cfg.host, cfg.port))
        sock.listen(128)
        st = _Http()
        st.sock = sock
        st.host, st.port = sock.getsockname()[:2]
        st.active = set()
        st.max = cfg.max_uploads
        st.disk = {}  # pid -> disk turns it holds
        st.disk_wait = deque()  # (pid, size, from_) waiting for a turn
        st.rate = START_RATE  # bytes/s (see TICK)
        st.tokens = 0.0  # bytes the uploads may still take in now (negative: owed)
        st.filled = _now()
        st.due = None  # when the pacing timer is due; None: not running
        scheme = "https" if tls is not None else "http"
        base = (cfg.public_url or f"{scheme}://{st.host}:{st.port}").rstrip("/")
        ctx = MediaCtx(cfg, root, _load_key(root), base)
        # Every socket wait is bounded (a keep-alive connection that says nothing, a TLS
        # handshake that never ends); the whole of an upload's body by the watchdog.
        st.server = httpd.serve(
            sock, _App(ctx), tls=tls, timeout=min(cfg.upload_timeout, 60.0),
            access_log=logging.getLogger("chat.media.access"), error_log=log,
            environ={"SERVER_NAME": st.host, "SERVER_PORT": str(st.port),
                     "wsgi.url_scheme": scheme})
        st.acceptor = st.server.acceptor
        _CTX.set(ctx)
        return Ok(st)

    def handle_call(self, request: Any, from_: Any, st: _Http) -> Any:
        match request:
            case _Acquire(pid):
                if len(st.active) >= st.max:
                    return Reply(False, st)
                st.active.add(pid)
                _tick(st)
                return Reply(True, st)
            case _Disk(pid, size):
                st.disk_wait.append((pid, size, from_))
                _grant(st)
                return NoReply(st)
            case "address":
                return Reply((st.host, st.port), st)
            case "uploads":
                return Reply(len(st.active), st)
        return super().handle_call(request, from_, st)

    def handle_cast(self, request: Any, st: _Http) -> Any:
        if isinstance(request, _Release):
            st.active.discard(request.pid)
            return NoReply(st)
        if isinstance(request, _DiskDone):
            _disk_release(st, request.pid)
            return NoReply(st)
        return super().handle_cast(request, st)

    def handle_info(self, msg: Any, st: _Http) -> Any:
        if isinstance(msg, _Tick):
            _pace(st)
            return NoReply(st)
        if isinstance(msg, Exit):
            if msg.pid == st.acceptor:
                return Stop(("acceptor_down", msg.reason), st)
            st.active.discard(msg.pid)  # a connection ended (mid-upload or not)
            st.disk_wait = deque(w for w in st.disk_wait if w[0] != msg.pid)
            while st.disk.get(msg.pid):
                _disk_release(st, msg.pid)
            return NoReply(st)
        return super().handle_info(msg, st)

    def terminate(self, reason: Any, st: _Http) -> None:
        _CTX.set(None)
        st.server.stop()
        st.sock.close()


def _disk_release(st: _Http, pid: Any) -> None:
    n = st.disk.get(pid, 0)
    if n <= 1:
        st.disk.pop(pid, None)
    else:
        st.disk[pid] = n - 1
    _grant(st)


def _refill(st: _Http) -> None:
    t = _now()
    st.tokens = min(st.tokens + st.rate * (t - st.filled), st.rate * TICK + BATCH)
    st.filled = t


def _grant(st: _Http) -> None:
    """Give thread-pool turns to the waiting uploads, in order, while there are turns
    and the pacing allows, and to downloads whenever there are turns; start the pacing
    timer while some wait."""
    _refill(st)
    while st.disk_wait and sum(st.disk.values()) < DISK_JOBS:
        # in order while the pacing allows; a download (size 0) is never held by it
        i = 0 if st.tokens >= 0 else next(
            (k for k, w in enumerate(st.disk_wait) if w[1] == 0), None)
        if i is None:
            break
        pid, size, from_ = st.disk_wait[i]
        del st.disk_wait[i]
        st.tokens -= size
        st.disk[pid] = st.disk.get(pid, 0) + 1
        gen_server.reply(from_, True)
    _tick(st)


def _tick(st: _Http) -> None:
    """Keep the pacing timer running while uploads run."""
    if st.due is None and (st.active or st.disk or st.disk_wait):
        st.due = _now() + TICK
        send_after(TICK, _self(), _Tick())


def _pace(st: _Http) -> None:
    """The pacing timer: adapt the rate to how late it fired, then grant. The rate
    grows only while it holds uploads back (else it would climb unchecked while they
    were slow for another reason)."""
    late = _now() - (st.due if st.due is not None else _now())
    st.due = None
    if late > LAG:
        st.rate = max(MIN_RATE, st.rate / 2)
    elif st.disk_wait:
        st.rate = min(MAX_RATE, st.rate + RATE_STEP)
    _grant(st)


def _on_disk(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in the node's thread pool, at most ``DISK_JOBS`` of the endpoint's
    at once (the caller waits for a turn: its upload's socket then fills, and the client
    slows down)."""
    me = _self()
    size = sum(len(p) for p in args[2]) if fn is _hash_write else 0
    gen_server.call(HTTP, _Disk(me, size), None)
    try:
        return run_in_thread(fn, *args)
    finally:
        gen_server.cast(HTTP, _DiskDone(me))


def _disk_turn(job: Callable[[], int]) -> int:
    """``job()`` (a download's thread-pool job) within one of the ``DISK_JOBS`` turns
    (no pacing: a download writes nothing)."""
    me = _self()
    gen_server.call(HTTP, _Disk(me, 0), None)
    try:
        return job()
    finally:
        gen_server.cast(HTTP, _DiskDone(me))


def _hash_write(h: Any, f: Any, pieces: list[bytes]) -> None:
    """(In a pool thread.) SHA-256 and the write both release the GIL: the node runs."""
    for data in pieces:
        h.update(data)
        f.write(data)
    _write_out(f)


def _write_out(f: Any) -> None:
    """(In a pool thread, after each batch.) Start writing the upload's new pages to
    disk now: ``posix_fadvise(DONTNEED)`` begins the kernel's writeback of the file's
    dirty pages without waiting for it (and drops the pages already written from the
    page cache). The blob then reaches the disk as it comes rather than in one 20 MB
    burst at its fsync, behind which the message store's commits, on the same disk,
    would queue: chat's latency would jump with every upload that ends."""
    if _FADVISE:
        try:
            f.flush()
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass


def _load_key(root: str) -> bytes:
    """The token key, made (0600, fsync'd) on the first start."""
    os.makedirs(root, exist_ok=True)
    path = os.path.join(root, "token.key")
    try:
        with open(path, "rb") as f:
            key = f.read()
        if len(key) == 32:
            return key
    except FileNotFoundError:
        pass
    key = secrets.token_bytes(32)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    media_store.fsync_dir(root)
    return key


def start_http(cfg: MediaConfig, data_dir: str, tls: ssl.SSLContext | None) -> Any:
    return gen_server.start_link(MediaHttp, (cfg, data_dir, tls), name=HTTP)


def address() -> tuple[str, int]:
    """Where the media endpoint listens: ``(host, port)``."""
    return tuple(gen_server.call(HTTP, "address"))  # type: ignore[return-value]


def uploads_running() -> int:
    """Uploads holding a slot now (introspection, tests)."""
    return int(gen_server.call(HTTP, "uploads"))


def _watchdog(conn_pid: Any, sock: Any, timeout: float) -> None:
    """Cut the read side of an upload that outlives ``timeout``: the blocked read
    returns, and the upload is answered 408 (a client trickling bytes would otherwise
    hold its process and slot for ever). Ends with its upload."""
    monitor(conn_pid)
    msg = receive(lambda m: isinstance(m, _Cancel | Down), timeout, default=None)
    if msg is None:
        # Shut the read side of the OS socket through a duplicate of its descriptor:
        # a TLS socket's own shutdown() drops its TLS state, and the 408 would then go
        # out unencrypted.
        try:
            dup = socket.socket(fileno=os.dup(sock.fileno()))
        except OSError:
            return
        try:
            dup.shutdown(socket.SHUT_RD)
        except OSError:
            pass
        finally:
            dup.close()


# ---------------------------------------------------------------------------- the app

_STATUS = {200: "200 OK", 201: "201 Created", 206: "206 Partial Content",
           400: "400 Bad Request", 401: "401 Unauthorized", 403: "403 Forbidden",
           404: "404 Not Found", 405: "405 Method Not Allowed", 408: "408 Request Timeout",
           411: "411 Length Required", 413: "413 Content Too Large",
           416: "416 Range Not Satisfiable", 500: "500 Internal Server Error",
           503: "503 Service Unavailable"}

StartResponse = Callable[..., Any]


class _App:
    """The WSGI application (runs in the HTTP connection's process)."""

    def __init__(self, ctx: MediaCtx) -> None:
        self.ctx = ctx

    def __call__(self, environ: dict[str, Any], start_response: StartResponse
                 ) -> Iterable[bytes]:
        try:
            path = environ.get("PATH_INFO", "")
            method = environ.get("REQUEST_METHOD", "")
            if path.rstrip("/") == "/media":
                if method not in ("POST", "PUT"):
                    raise _HttpError(405, "method_not_allowed", f"expected POST (an "
                                                                f"upload), got {method}",
                                     (("Allow", "POST, PUT"),))
                return self._upload(environ, start_response)
            if path.startswith("/media/"):
                if method != "GET":
                    raise _HttpError(405, "method_not_allowed", f"expected GET, got "
                                                                f"{method}",
                                     (("Allow", "GET"),))
                return self._download(environ, start_response, path[len("/media/"):])
            raise _HttpError(404, "not_found", f"expected /media or /media/<id>, got "
                                               f"{path[:80]!r}")
        except _HttpError as e:
            _skip_body(environ)
            return _error(start_response, e)
        except Exception as e:
            _skip_body(environ)
            log.exception("media: request failed")
            return _error(start_response, _HttpError(500, "internal", f"{type(e).__name__}"
                                                                     f": the server failed"))

    # ------------------------------------------------------------ upload

    def _upload(self, environ: dict[str, Any], start_response: StartResponse
                ) -> Iterable[bytes]:
        ctx = self.ctx
        cfg = ctx.cfg
        phone = check_token(ctx.key, _token(environ), "up", "")
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        cl = environ.get("CONTENT_LENGTH") or None
        length: int | None = None
        if cl is not None and not chunked:
            try:
                length = int(cl)
            except ValueError:
                raise _HttpError(400, "bad_request", f"Content-Length: expected a number, "
                                                     f"got {cl[:40]!r}") from None
            if length > cfg.max_size:
                raise _HttpError(413, "too_large", f"expected at most {cfg.max_size} bytes, "
                                                   f"got Content-Length {length}")
            if length < 1:
                raise _HttpError(400, "bad_request", "expected a body of 1 byte or more, "
                                                     "got Content-Length 0")
        elif not chunked:
            raise _HttpError(411, "length_required", "expected a Content-Length (or a "
                                                     "chunked body), got neither")
        me = _self()
        if not gen_server.call(HTTP, _Acquire(me)):
            raise _HttpError(503, "busy", f"{cfg.max_uploads} uploads are running: try "
                                          f"again later",
                             (("Retry-After", str(max(1, round(cfg.retry_after)))),))
        wd = spawn(_watchdog, me, environ.get(httpd.SOCKET_KEY), cfg.upload_timeout)
        start = _now()
        fd, tmp = tempfile.mkstemp(prefix="up-", dir=os.path.join(ctx.root, "tmp"))
        try:
            with os.fdopen(fd, "wb") as f:
                mid, size = self._receive(environ, f, length, start)
                _on_disk(_flush_sync, f)
            send(wd, _Cancel())
            status = media_store.call(media_store.Put(tmp, mid, size, phone))
            body = {"media": mid, "sha256": mid, "size": size,
                    "url": f"{ctx.base_url}/media/{mid}"}
            log.info("media: %s uploaded %s (%d bytes, %s)", phone, mid, size, status)
            return _json(start_response, 201 if status == "new" else 200, body)
        finally:
            send(wd, _Cancel())
            media_store.unlink_quiet(tmp)  # (gone already once in place)
            gen_server.cast(HTTP, _Release(me))

    def _receive(self, environ: dict[str, Any], f: Any, length: int | None,
                 start: float) -> tuple[str, int]:
        body = httpd.direct_body(environ) if length is not None else None
        if body is not None:
            return self._receive_direct(environ, body, f, length or 0, start)
        cfg = self.ctx.cfg
        inp = environ["wsgi.input"]
        h = hashlib.sha256()
        got = 0
        pieces: list[bytes] = []
        held = 0  # bytes in pieces
        while length is None or got < length:
            if held >= BATCH:
                _on_disk(_hash_write, h, f, pieces)
                pieces, held = [], 0
            else:
                # The socket nearly always has data for a fast client: its reads never
                # block, so this process would hold the node for the whole body.
                yield_now()
            want = READ if length is None else min(READ, length - got)
            try:
                data = inp.read(want)
            except (OSError, ValueError) as e:
                _skip_body(environ)
                if _now() - start >= cfg.upload_timeout or isinstance(e, TimeoutError):
                    raise _HttpError(408, "upload_timeout", f"expected the body within "
                                                            f"{cfg.upload_timeout:g} s; "
                                                            f"nothing was kept") from None
                raise _HttpError(400, "truncated", f"the body ended after {got} bytes"
                                                   f"{'' if length is None else f' of {length}'}"
                                                   f"; nothing was kept") from None
            if not data:
                if length is None:
                    break
                _skip_body(environ)
                raise _HttpError(400, "truncated", f"the body ended after {got} of "
                                                   f"{length} bytes; nothing was kept")
            got += len(data)
            if got > cfg.max_size:
                _skip_body(environ)
                raise _HttpError(413, "too_large", f"expected at most {cfg.max_size} "
                                                   f"bytes, got more; nothing was kept")
            pieces.append(data)
            held += len(data)
        if pieces:
            _on_disk(_hash_write, h, f, pieces)
        if got == 0:
            raise _HttpError(400, "bad_request", "expected a body of 1 byte or more, got "
                                                 "an empty one")
        return h.hexdigest(), got

    def _receive_direct(self, environ: dict[str, Any], body: httpd.DirectBody, f: Any,
                        length: int, start: float) -> tuple[str, int]:
        """The body of ``length`` bytes read, hashed and written a BATCH at a time in
        the thread pool (``otp.httpd.direct_body``): this process only waits for data
        and for its turn."""
        cfg = self.ctx.cfg
        h = hashlib.sha256()

        def consume(view: memoryview) -> None:  # (in a pool thread)
            h.update(view)
            f.write(view)
            _write_out(f)

        got = 0
        me = _self()
        while got < length:
            try:
                body.wait()
                gen_server.call(HTTP, _Disk(me, min(BATCH, length - got)), None)
                try:
                    n = body.read(BATCH, consume)
                finally:
                    gen_server.cast(HTTP, _DiskDone(me))
            except OSError as e:
                _skip_body(environ)
                if _now() - start >= cfg.upload_timeout or isinstance(e, TimeoutError):
                    raise _HttpError(408, "upload_timeout", f"expected the body within "
                                                            f"{cfg.upload_timeout:g} s; "
                                                            f"nothing was kept") from None
                raise _HttpError(400, "truncated", f"the body ended after {got} of "
                                                   f"{length} bytes; nothing was kept") from None
            if not n:
                _skip_body(environ)
                if _now() - start >= cfg.upload_timeout:
                    raise _HttpError(408, "upload_timeout", f"expected the body within "
                                                            f"{cfg.upload_timeout:g} s; "
                                                            f"nothing was kept")
                raise _HttpError(400, "truncated", f"the body ended after {got} of "
                                                   f"{length} bytes; nothing was kept")
            got += n
        return h.hexdigest(), got

    # ------------------------------------------------------------ download

    def _download(self, environ: dict[str, Any], start_response: StartResponse,
                  mid: str) -> Iterable[bytes]:
        ctx = self.ctx
        if not is_media_id(mid):
            raise _HttpError(400, "bad_request", f"expected a media id (64 lowercase hex "
                                                 f"digits) in the path, got {mid[:80]!r}")
        phone = check_token(ctx.key, _token(environ), "down", mid)
        r = media_store.call(Access(mid, phone))
        if r == "unknown":
            raise _HttpError(404, "unknown_media", f"media {mid}: no such media (never "
                                                   f"uploaded, or deleted)")
        if r == "forbidden":
            raise _HttpError(403, "forbidden", f"media {mid}: {phone} neither uploaded it "
                                               f"nor received it")
        size = int(r)
        try:
            f = open(blob_path(ctx.root, mid), "rb")
        except FileNotFoundError:  # deleted between the check and here
            raise _HttpError(404, "unknown_media", f"media {mid}: deleted") from None
        first, last, status = 0, size - 1, 200
        rng = environ.get("HTTP_RANGE")
        headers = [("Content-Type", "application/octet-stream"), ("Accept-Ranges", "bytes"),
                   ("ETag", f'"{mid}"')]
        if rng:
            try:
                sel = _parse_range(rng, size)
            except _HttpError:
                f.close()
                raise
            if sel is not None:
                first, last = sel
                status = 206
                headers.append(("Content-Range", f"bytes {first}-{last}/{size}"))
        n = last - first + 1
        headers.append(("Content-Length", str(n)))
        start_response(_STATUS[status], headers)
        return httpd.FileBody(f, first, n, piece=BATCH, around=_disk_turn)


def _flush_sync(f: Any) -> None:
    f.flush()
    os.fsync(f.fileno())


def _parse_range(value: str, size: int) -> tuple[int, int] | None:
    """``(first, last)`` of a single ``bytes=`` range, None to send everything (several
    ranges, another unit); ``_HttpError`` 416 when it cannot be satisfied."""
    unit, _, spec = value.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    a, sep, b = spec.strip().partition("-")
    unsat = _HttpError(416, "range_not_satisfiable", f"expected a range within the "
                                                     f"{size} bytes, got {value[:80]!r}",
                       (("Content-Range", f"bytes */{size}"),))
    try:
        if not sep:
            raise ValueError
        if a == "":  # the last b bytes
            n = int(b)
            if n <= 0:
                raise unsat
            return max(0, size - n), size - 1
        first = int(a)
        last = int(b) if b != "" else size - 1
    except ValueError:
        raise _HttpError(400, "bad_request", f"Range: expected bytes=<first>-<last>, got "
                                             f"{value[:80]!r}") from None
    if first < 0 or (b != "" and last < first):
        raise _HttpError(400, "bad_request", f"Range: expected first <= last, got "
                                             f"{value[:80]!r}")
    if first >= size:
        raise unsat
    return first, min(last, size - 1)


def _token(environ: dict[str, Any]) -> str | None:
    auth = environ.get("HTTP_AUTHORIZATION", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    from urllib.parse import parse_qs

    q = parse_qs(environ.get("QUERY_STRING", ""))
    vals = q.get("token")
    return vals[0] if vals else None


def _skip_body(environ: dict[str, Any]) -> None:
    """Answer without reading (the rest of) the body (a refused 100 MB upload must not
    be read): the error response closes the connection."""
    httpd.finish_early(environ)


def _json(start_response: StartResponse, status: int, body: dict[str, Any],
          headers: tuple[tuple[str, str], ...] = (), close: bool = False) -> list[bytes]:
    data = json.dumps(body).encode()
    hs = [("Content-Type", "application/json"), ("Content-Length", str(len(data))),
          *headers]
    if close:
        hs.append(("Connection", "close"))
    start_response(_STATUS[status], hs)
    return [data]


def _error(start_response: StartResponse, e: _HttpError) -> list[bytes]:
    return _json(start_response, e.status, {"error": e.code, "message": e.message},
                 e.headers, close=True)
