"""The front end: a TCP/TLS listener, and a connection process per device connection.

One process per connection: the *connection process* owns the socket and the session
(phase, phone, the user process it is attached to). Its socket is active
(``otp.net``): the node reads it when it is readable, splits frames (checking each
length before keeping a byte of the body) and hands the connection process one frame
per message, at most ``_WINDOW`` ahead of what it has handled, so a client that floods
requests cannot grow a mailbox without bound. In a version-2 session, id-less acks
(most of a device's frames) are cast to the user process: they are not answered, and
concern only pushed items::

    listener (gen_server "chat.listener") ── acceptor (linked, blocks in accept)
        └── spawns per accepted socket:  connection

Connection processes link to ``chat.conns`` (a process that traps exits and does
nothing else), so stopping the application ends them all, while one connection's crash
touches nothing else. The user process is separate (``chat.users``): at login it
registers the connection under ``chat.device.<phone>``; it may stop when idle while the
device stays connected, and whichever user process starts next (for the device's next
request, or for a message arriving) finds the connection by that name and streams to it.

Failure semantics (docs/protocol.md): a frame announcing more than ``max_frame`` bytes
gets ``frame_too_large`` and a close; an undecodable frame, a non-map, an unknown type or
a field of the wrong type gets an error frame naming the problem, and the
``max_bad_frames``-th such frame closes the connection; no input reaches the listener.
Silence for ``idle_timeout`` seconds closes with ``idle_timeout``. A client that does
not read makes a write wait for room: after ``idle_timeout`` seconds of that it is
disconnected (``slow_reader``, logged: the frame could not reach it); what the server
holds for it meanwhile is bounded by the kernel's send buffer (``limits.send_buffer``)
plus the user process's push window. A closing error caused by a request answers it
(carries its id). A graceful stop of the application sends ``shutdown`` to every
connection (``Conns.terminate``).
"""

from __future__ import annotations

import hmac
import logging
import socket
import ssl
import sys
import time
from dataclasses import dataclass
from typing import Any

import msgpack

from chat import faults, media, registration, store, users
from chat.protocol import (
    DEFAULT_MAX_FRAME,
    HEADER,
    PROTOCOL_VERSIONS,
    ProtocolError,
    Request,
    decode_body,
    error_frame,
    is_phone,
    validate_request,
)
from otp import gen_server, metrics, net
from otp.errors import CallError
from otp.gen_server import GenServer, NoReply, Ok, Reply
from otp.process import (
    Exit,
    is_alive,
    link,
    process_info,
    receive,
    register,
    send,
    send_after,
    sleep,
    spawn,
    spawn_link,
    trap_exit,
    unregister,
    whereis,
)
from otp.process import now as _now
from otp.process import self as _self

__all__ = ["CONNS", "LISTENER", "ConnCtx", "address", "start_conns", "start_listener"]

LISTENER = "chat.listener"
CONNS = "chat.conns"
SERVER = "chat/0.1.0"
_WINDOW = 64  # frames the node may hand over ahead of the connection process
_RCPTS_MAX = 4096  # pushed receipt ids remembered per connection (see _Conn.rcpts)
# Connection processes all run on the node's one thread, and pack() never yields: one
# packer serves them all (msgpack.packb would make one per frame).
_packer = msgpack.Packer(use_bin_type=True)
log = logging.getLogger("chat.connection")
# Operations counters (otp.metrics: the Prometheus endpoint)
_CONNECTIONS = metrics.counter("chat_connections_total", "device connections accepted")
_LOGINS = metrics.counter("chat_logins_total", "logins accepted")
_MESSAGES_IN = metrics.counter("chat_messages_in_total", "send requests from devices")
_FRAMES_OUT = metrics.counter("chat_frames_out_total", "frames written to devices")
_ACKED = metrics.counter("chat_acked_total", "deliveries acknowledged by devices")
_READ = metrics.counter("chat_read_receipts_total", "read receipts from devices")


@dataclass(frozen=True)
class ConnCtx:
    max_frame: int = DEFAULT_MAX_FRAME
    max_body: int = 16 * 1024
    idle_timeout: float = 60.0
    max_bad_frames: int = 10
    send_buffer: int | None = None
    admin_token: str | None = None


# ---------------------------------------------------------------------------- conns


#: on a graceful stop, how long connections get to write ``shutdown`` (seconds)
SHUTDOWN_GRACE = 2.0


class Conns(GenServer):
    """Traps exits and ignores them: connections end on their own without touching it.
    When its supervisor stops it (a graceful stop of the application: SIGTERM, SIGINT),
    ``terminate`` tells every linked connection to close with the closing error
    ``shutdown`` and waits for them (at most ``SHUTDOWN_GRACE`` seconds); its exit
    reason then ends any still linked."""

    def init(self, arg: Any) -> Any:
        trap_exit(True)
        info = process_info(_self())
        # (the state: the links it starts with, its supervisor's: not connections)
        return Ok(frozenset(info.links) if info is not None else frozenset())

    def handle_info(self, msg: Any, state: Any) -> Any:
        if isinstance(msg, Exit):
            return NoReply(state)
        return super().handle_info(msg, state)

    def terminate(self, reason: Any, state: Any) -> None:
        info = process_info(_self())
        if info is None:
            return
        skip = state or frozenset()
        conns = {p for p in info.links if p not in skip}
        for p in conns:
            send(p, ("chat.close", "shutdown", "the server is stopping"))
        deadline = _now() + SHUTDOWN_GRACE
        while conns:
            left = deadline - _now()
            if left <= 0:
                break
            msg = receive(Exit, left, default=None)
            if msg is None:
                break
            conns.discard(msg.pid)


def start_conns() -> Any:
    """The process every connection links to (so that stopping it ends them all)."""
    return gen_server.start_link(Conns, None, name=CONNS)


# ---------------------------------------------------------------------------- listener


class _Listen:
    __slots__ = ("acceptor", "host", "port", "sock")


class Listener(GenServer):
    def init(self, arg: tuple[str, int, int, ssl.SSLContext | None, ConnCtx]) -> Any:
        host, port, backlog, tls, ctx = arg
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        st = _Listen()
        st.sock = sock
        st.host, st.port = sock.getsockname()[:2]
        st.acceptor = spawn_link(_acceptor, sock, tls, ctx)
        return Ok(st)

    def handle_call(self, request: Any, from_: Any, st: _Listen) -> Any:
        if request == "address":
            return Reply((st.host, st.port), st)
        return super().handle_call(request, from_, st)

    def terminate(self, reason: Any, st: _Listen) -> None:
        st.sock.close()


def _acceptor(sock: socket.socket, tls: ssl.SSLContext | None, ctx: ConnCtx) -> None:
    while True:
        try:
            conn, addr = sock.accept()
        except OSError as e:
            log.warning("accept failed: %s", e)
            sleep(0.05)
            continue
        spawn(_this()._conn_main, conn, addr, tls, ctx)  # the current version


def start_listener(host: str, port: int, backlog: int, tls: ssl.SSLContext | None,
                   ctx: ConnCtx) -> Any:
    return gen_server.start_link(Listener, (host, port, backlog, tls, ctx), name=LISTENER)


def address() -> tuple[str, int]:
    """Where the listener listens: ``(host, port)``."""
    return tuple(gen_server.call(LISTENER, "address"))  # type: ignore[return-value]


# ---------------------------------------------------------------------------- connection


class _Closing(Exception):
    """End the connection: write ``last`` (replies), then the error frame if ``code``
    (with ``id``: the request that caused it, which it answers)."""

    def __init__(self, code: str | None, message: str = "",
                 last: list[dict[str, Any]] | None = None, id: int | None = None) -> None:
        self.code = code
        self.message = message
        self.last = last or []
        self.id = id


#: code requests (``register``) one connection may make: a device registers one number
CODES_PER_CONN = 3


class _Conn:
    __slots__ = ("addr", "bad", "codes", "ctx", "held", "holding", "key_hash", "last",
                 "phase", "phone", "rcpts", "sock", "tls", "version")

    def __init__(self, sock: Any, ctx: ConnCtx, addr: str = "") -> None:
        self.sock = sock
        self.ctx = ctx
        self.addr = addr  # the peer's address (code requests are limited per address)
        self.codes = 0  # code requests made on this connection
        self.tls = False
        self.phase = "hello"
        self.phone: str | None = None
        self.key_hash: bytes | None = None
        self.bad = 0
        self.version = 1
        self.last = time.monotonic()  # when the device last sent something
        # Receipt acks are held back (see _ack): the ids of receipts pushed in this
        # version-2 session and not yet acknowledged (at most _RCPTS_MAX: an
        # optimisation, forgetting some only hands their acks over at once), the
        # acknowledged ones not yet handed over, and whether the timer that hands them
        # over is running. Made on first use (an idle connection has neither).
        self.rcpts: set[int] | None = None
        self.held: list[int] | None = None
        self.holding = False

    def write(self, frames: list[dict[str, Any]]) -> None:
        pack = _packer.pack
        hdr = HEADER.pack
        parts = []
        for f in frames:  # chat.protocol.encode, with one packer for the node's thread
            body = pack(f)
            parts.append(hdr(len(body)))
            parts.append(body)
        data = b"".join(parts)
        _FRAMES_OUT.inc(len(frames))
        sock = self.sock
        tls = self.tls
        try:
            # One plain send first: it almost always takes everything (the kernel's
            # buffer has room), and costs less than sendall's set-up (a timer per call);
            # sendall only for what is left. Both wait at most idle_timeout for room:
            # a plain socket has that timeout from the start (costing nothing while
            # there is room: the timer is made only to wait), a TLS one gets it here
            # (its reader must not have one).
            if tls:
                sock.settimeout(self.ctx.idle_timeout)
            try:
                n = sock.send(data)
                if n < len(data):
                    sock.sendall(memoryview(data)[n:])
            finally:
                if tls:
                    sock.settimeout(None)
        except TimeoutError:
            log.warning("closing the connection of %s from %s: slow_reader (nothing read "
                        "for %g s)", self.phone or "-", self.addr, self.ctx.idle_timeout)
            raise _Closing(None, "slow_reader") from None
        except (OSError, ValueError):
            raise _Closing(None, "write failed") from None


def _conn_main(sock: Any, addr: Any, tls: ssl.SSLContext | None, ctx: ConnCtx) -> None:
    conns = whereis(CONNS)
    if conns is not None:
        link(conns)
    c = _Conn(sock, ctx, addr[0] if isinstance(addr, tuple) and addr else str(addr))
    _CONNECTIONS.inc()
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if ctx.send_buffer:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, ctx.send_buffer)
        sock.settimeout(ctx.idle_timeout)  # for the TLS handshake
        if tls is not None:
            try:
                sock = c.sock = tls.wrap_socket(sock, server_side=True)
            except (OSError, ValueError) as e:
                log.info("TLS handshake with %s failed: %s", addr, e)
                return
            # No socket timeout from here on: its reader (a greenlet reading the TLS
            # socket) would time out on a quiet device. Silence is noticed by a check
            # every idle_timeout instead (and a write waits at most that long, see
            # _Conn.write).
            sock.settimeout(None)
            c.tls = True
        # (a plain socket keeps its timeout: the node reads it without blocking, so
        # it bounds only a write that waits for room, see _Conn.write)
        c.last = time.monotonic()
        send_after(ctx.idle_timeout, _self(), ("chat.idle_check",))
        # The node reads the socket and hands this process one frame per message, at
        # most _WINDOW ahead of what it has handled (re-armed at each tcp_passive).
        net.active(sock, _WINDOW, packet=4, packet_size=ctx.max_frame)
        _loop(c)
    except _Closing as e:
        last = list(e.last)
        if e.code is not None:
            last.append(error_frame(e.code, e.message, e.id))
        if last:
            try:
                c.write(last)
            except _Closing:
                pass
    finally:
        # Close first: if this process was killed, kernel calls below are not allowed.
        net.close(c.sock)
        if is_alive(_self()):
            if c.phase == "session":  # last seen (presence), even with no user process
                _hand_over(c)  # the receipt acks held back, if any
                try:
                    store.write((("seen", c.phone, time.time()),))
                except store.StoreError:
                    pass


def _loop(c: _Conn) -> None:
    # Output is coalesced: while more messages are already queued, their replies and
    # pushes are collected and written with one sendall (a loopback send costs far
    # more than encoding a frame).
    out: list[dict[str, Any]] = []
    sock = c.sock
    while True:
        if out:
            msg = receive(None, 0, default=None)
            if msg is None or len(out) >= 512:
                c.write(out)
                out = []
                if msg is None:
                    continue
        else:
            msg = receive()
        cls = msg.__class__
        if cls is tuple:
            tag = msg[0]
            if tag == "tcp":
                body = msg[2]
                c.last = time.monotonic()
                try:
                    out.extend(_frame(c, body))
                except _Closing:
                    if out:
                        c.write(out)
                    raise
            elif tag == "tcp_passive":
                net.active(sock, _WINDOW)
            elif tag == "chat.push":
                rcpts = c.rcpts
                for seq, peer, kind, p in msg[1]:
                    if kind == "msg":
                        if p[2].__class__ is tuple:  # a media message (chat.media)
                            out.append(_media_push(c, seq, peer, p))
                        else:
                            out.append({"t": "msg", "id": seq, "mid": p[0], "from": peer,
                                        "cmid": p[1], "body": p[2], "ts": p[3]})
                    else:
                        out.append({"t": "receipt", "id": seq, "type": p[0], "mid": p[1],
                                    "peer": p[2], "ts": p[3]})
                        if c.version >= 2:
                            if rcpts is None:
                                rcpts = c.rcpts = set()
                            if len(rcpts) >= _RCPTS_MAX:
                                rcpts.clear()
                            rcpts.add(seq)
                if faults.hooks:
                    faults.point("pushed", c.phone or "")
            elif tag == "tcp_closed" or tag == "tcp_error":
                if out:
                    c.write(out)
                if tag == "tcp_error" and msg[2] == "emsgsize":
                    raise _Closing("frame_too_large", f"expected a frame length between 1 "
                                                      f"and {c.ctx.max_frame} bytes, got a "
                                                      f"longer one")
                return
            elif tag == "chat.close":
                if out:
                    c.write(out)
                raise _Closing(msg[1], msg[2])
            elif tag == "chat.acks":
                c.holding = False
                _hand_over(c)
            elif tag == "chat.idle_check":
                left = c.last + c.ctx.idle_timeout - time.monotonic()
                if left <= 0:
                    if out:
                        c.write(out)
                    raise _Closing("idle_timeout", f"nothing received for "
                                                   f"{c.ctx.idle_timeout:g} s")
                send_after(left, _self(), ("chat.idle_check",))


def _media_push(c: _Conn, seq: int, peer: str, p: Any) -> dict[str, Any]:
    """The push of a media message: its record, and a download token for this
    session's user (docs/protocol.md, "The media message")."""
    assert c.phone is not None
    rec, download = media.push_fields(c.phone, p[2])
    return {"t": "msg", "id": seq, "mid": p[0], "from": peer, "cmid": p[1],
            "kind": "media", "body": rec, "ts": p[3], "download": download}


def _this() -> Any:
    """The current version of this module. A connection process handles every frame,
    and the acceptor starts every connection, through it (Erlang's fully qualified
    call): after a live upgrade loads a new ``chat.connection``, connections already
    open run the new request handling, without being restarted."""
    return sys.modules[__name__]


def _frame(c: _Conn, body: bytes) -> list[dict[str, Any]]:
    """One frame, handled by the current version; the ``_Closing`` raised by another
    version is turned into this version's, which this module's loop catches."""
    try:
        return list(_this()._handle_frame(c, body))
    except Exception as e:
        if type(e).__name__ == "_Closing" and not isinstance(e, _Closing):
            raise _Closing(e.code, e.message, e.last,  # type: ignore[attr-defined]
                           getattr(e, "id", None)) from None
        raise


#: errors that count as bad frames (docs/protocol.md): the client is broken or probing
BAD = frozenset({"bad_frame", "bad_request", "unknown_type", "forbidden"})


def _handle_frame(c: _Conn, body: bytes) -> list[dict[str, Any]]:
    rid = None
    try:
        if not body:
            raise ProtocolError("bad_frame", "expected one msgpack map, got an empty frame "
                                             "(length 0)")
        req = validate_request(decode_body(body))
        rid = req.id
        r = _dispatch(c, req)
        return [r] if r is not None else []
    except ProtocolError as e:
        if e.id is None:
            e.id = rid
        if e.code in BAD:
            c.bad += 1
            if c.bad >= c.ctx.max_bad_frames:
                # (the closing error answers the request that caused it)
                raise _Closing("too_many_bad_frames",
                               f"{c.bad} bad frames; the last: {e.code}: {e.message}",
                               id=e.id) from None
        if c.phase == "hello":
            raise _Closing("hello_required" if e.code != "unsupported_version" else e.code,
                           f"{e.code}: {e.message}" if e.code != "unsupported_version"
                           else e.message, id=e.id) from None
        return [e.frame()]
    except _Closing:
        raise
    except Exception as e:
        log.exception("request failed on the connection of %s", c.phone)
        return [error_frame("internal", f"{type(e).__name__}: the server failed to "
                                        f"handle the request", rid)]


def _ok(rid: int, **fields: Any) -> dict[str, Any]:
    fields["t"] = "ok"
    fields["id"] = rid
    return fields


def _dispatch(c: _Conn, req: Request) -> dict[str, Any] | None:
    t, rid, f = req.type, req.id, req.fields
    if c.phase == "hello":
        if t != "hello":
            raise _Closing("hello_required", f"expected 'hello' first, got {t!r}", id=rid)
        if f["version"] not in PROTOCOL_VERSIONS:
            raise _Closing("unsupported_version", f"expected a protocol version among "
                                                  f"{list(PROTOCOL_VERSIONS)}, got "
                                                  f"{f['version']}", id=rid)
        c.phase = "anon"
        c.version = f["version"]
        ctx = c.ctx
        return _ok(rid, version=c.version, server=SERVER, max_frame=ctx.max_frame,
                   idle_timeout=ctx.idle_timeout, max_body=ctx.max_body,
                   max_bad_frames=ctx.max_bad_frames)
    if rid is None:  # an unanswered request (version 2): only an ack in a session
        if c.version < 2:
            raise ProtocolError("bad_request", "field 'id': expected an int in [0, 2**63), "
                                               "got nil (acks without an id need protocol "
                                               "version 2)")
        if c.phase != "session":
            raise ProtocolError("not_authenticated", f"log in before {t!r}")
        _ack(c, f["ids"])
        return None
    if t == "ping":
        return {"t": "pong", "id": rid}
    if t == "hello":
        raise ProtocolError("bad_request", "hello: expected one hello per connection, got a "
                                           "second one", rid)
    if c.phase == "anon":
        if t == "register":
            if c.codes >= CODES_PER_CONN:
                raise ProtocolError("rate_limited", f"at most {CODES_PER_CONN} code "
                                                    f"requests per connection", rid,
                                    retry_after=0.0)
            c.codes += 1
            return _ok(rid, expires_in=registration.request_code(f["phone"], c.addr))
        if t == "verify":
            return _ok(rid, key=registration.verify(f["phone"], f["pin"]))
        if t == "login":
            return _login(c, rid, f["phone"], f["key"])
        if t == "admin_provision":
            return _provision(c, rid, f["token"], f["phones"])
        raise ProtocolError("not_authenticated", f"log in before {t!r}", rid)
    # a session
    if t == "send":
        _MESSAGES_IN.inc()
        to, cmid, body = f["to"], f["cmid"], f["body"]
        if not 1 <= len(cmid) <= 64:
            raise ProtocolError("bad_request", f"send: field 'cmid': expected 1 to 64 "
                                               f"characters, got {len(cmid)}", rid)
        if (f["kind"] is not None and f["kind"] != "text") or body.__class__ is dict:
            return _send_media(c, rid, to, cmid, body, f["kind"])
        n = len(body)
        mb = c.ctx.max_body
        # The limit is in bytes, a str's UTF-8 ones (encoded only when it may matter:
        # a character is 1 to 4 bytes)
        if n > mb or (n * 4 > mb and body.__class__ is str and len(body.encode()) > mb):
            if body.__class__ is str:
                n = len(body.encode())
            raise ProtocolError("body_too_large", f"expected a body of at most {mb} bytes, "
                                                  f"got {n} bytes", rid)
        if not n:
            raise ProtocolError("empty_body", "expected a body of 1 byte or more, got an "
                                              "empty one", rid)
        if not is_phone(to):
            raise ProtocolError("invalid_phone", f"send: field 'to': expected an E.164 "
                                                 f"number like +14155550100, got "
                                                 f"{to!r:.40}", rid)
        r = _user_call(c, ("send", to, cmid, body))
        if r[0] == "error":
            raise ProtocolError(r[1], r[2], rid, **dict(r[3] if len(r) > 3 else ()))
        return _ok(rid, mid=r[1], ts=r[2])
    if t == "ack":
        _ACKED.inc(len(f["ids"]))
        if c.rcpts:
            c.rcpts.difference_update(f["ids"])
        _user_call(c, ("ack", f["ids"]))
        return _ok(rid)
    if t == "read":
        _READ.inc(len(f["mids"]))
        r = _user_call(c, ("read", f["from"], f["mids"]))
        if r[0] == "error":
            raise ProtocolError(r[1], r[2], rid, **dict(r[3] if len(r) > 3 else ()))
        return _ok(rid)
    if t == "privacy":
        _user_call(c, ("privacy", f["hide_presence"]))
        return _ok(rid)
    if t == "presence":
        return _ok(rid, presence=_presence(c, rid, f["phones"]))
    if t == "contacts":
        phones = tuple(p for p in f["phones"] if is_phone(p))
        _limit(c, rid, "contacts", len(phones))
        return _ok(rid, registered=list(store.read(("registered", phones))))
    if t == "media_upload":
        return _ok(rid, **_media_call(rid, media.upload_slot, c.phone, f["size"]))
    if t == "media_download":
        return _ok(rid, **_media_call(rid, media.download_slot, c.phone, f["media"]))
    if t == "media_ack":
        _media_call(rid, media.ack, c.phone, f["media"])
        return _ok(rid)
    if t == "bye":
        raise _Closing(None, "bye", [_ok(rid)])
    if t in ("register", "verify", "login", "admin_provision"):
        raise ProtocolError("already_authenticated", f"{t!r} is not allowed in a session",
                            rid)
    raise ProtocolError("unknown_type", f"unexpected request {t!r}", rid)


def _send_media(c: _Conn, rid: int, to: str, cmid: str, body: Any,
                kind: str | None) -> dict[str, Any]:
    """A ``send`` of kind ``media`` (docs/protocol.md, "The media message"): the record
    is checked, the blob's recipient recorded, and the message goes down the text path
    with the packed record as its body (receipts, queueing, order, resends as text)."""
    if kind not in (None, "text", "media"):
        raise ProtocolError("bad_request", f"send: field 'kind': expected 'text' or "
                                           f"'media', got {kind!r:.40}", rid)
    if kind != "media":
        raise ProtocolError("bad_request", "send: field 'body': expected str or bin for "
                                           "kind 'text', got map", rid)
    if not is_phone(to):
        raise ProtocolError("invalid_phone", f"send: field 'to': expected an E.164 "
                                             f"number like +14155550100, got {to!r:.40}",
                            rid)
    assert c.phone is not None
    packed = _media_call(rid, media.check_record, body, c.phone, to, c.ctx.max_body)
    r = _user_call(c, ("send", to, cmid, packed))
    if r[0] == "error":
        raise ProtocolError(r[1], r[2], rid, **dict(r[3] if len(r) > 3 else ()))
    return _ok(rid, mid=r[1], ts=r[2])


def _media_call(rid: int, fn: Any, *args: Any) -> Any:
    """A media operation; its ``ProtocolError`` answers request ``rid``, and the media
    store being down (restarting) is ``unavailable``."""
    try:
        return fn(*args)
    except ProtocolError as e:
        e.id = rid
        raise
    except CallError:
        raise ProtocolError("unavailable", "the media store is restarting; try again",
                            rid) from None


def _key_ok(phone: str, key_hash: bytes) -> bool:
    row = store.read(("user", phone))
    return row is not None and row[0] is not None and hmac.compare_digest(row[0], key_hash)


def _login(c: _Conn, rid: int, phone: str, key: bytes) -> dict[str, Any]:
    """Check the key against the store, take the device name, and wake the user
    process only if it runs or has something for the device (an idle user with no
    pending items costs no process)."""
    key_hash = registration.hash_key(key)
    ok = is_phone(phone) and len(key) == 32 and _key_ok(phone, key_hash)
    if ok:
        dn = users.device_name(phone)
        old = whereis(dn)
        if old is not None and old != _self():
            send(old, ("chat.close", "replaced", "another session of this device logged in"))
            unregister(dn)
        if old != _self():
            register(dn, _self())
        # A new device registered between the check and the name: rekey() found no
        # name to close, so check again now that the name is ours.
        ok = _key_ok(phone, key_hash)
        if not ok:
            unregister(dn)
    if not ok:
        delay = registration.login_delay(phone, False)
        if delay > 0:
            sleep(delay)
        raise ProtocolError("auth_failed", "unknown number or wrong key", rid)
    registration.login_delay(phone, True)
    _LOGINS.inc()
    c.phase = "session"
    c.phone, c.key_hash = phone, key_hash
    queued = 0
    if whereis(users.name(phone)) is not None or store.read(("pending", phone)):
        queued = users.call(phone, ("attach", _self()))
    return _ok(rid, phone=phone, queued=queued)


#: receipt acks held back at most this long (seconds), or this many. A busy device
#: hands them over sooner, with its next request or ack of a message; the timer is
#: for a quiet one (it fires at most once per ACK_HOLD per connection: a wake-up each)
ACK_HOLD = 5.0
ACK_HOLD_MAX = 64


def _ack(c: _Conn, ids: tuple[int, ...]) -> None:
    """An unanswered ack from the device. Acks of messages go to the user process at
    once (each makes a "delivered" receipt for its sender). Acks of receipts only let
    the user process forget what it keeps for them: they are held back, and handed over
    with the next ack of a message or request to the user process (it then handles both
    in one turn), after ``ACK_HOLD`` seconds, or once ``ACK_HOLD_MAX`` are held. Until
    then the user process has them as pushed and unacknowledged; if this connection
    ends first, the held ones are handed over on the way out (and if it is killed,
    they are lost, and the receipts pushed again to the next session, which
    deduplicates them)."""
    rcpts = c.rcpts
    held = c.held
    now: list[int] | None = None
    for i in ids:
        if rcpts and i in rcpts:
            rcpts.discard(i)
            if held is None:
                held = c.held = []
            held.append(i)
        elif now is None:
            now = [i]
        else:
            now.append(i)
    if now is not None:
        if held:
            now.extend(held)
            held.clear()
        _user_cast(c, ("ack", tuple(now)))
    elif held is not None and len(held) >= ACK_HOLD_MAX:
        _hand_over(c)
    elif held and not c.holding:
        c.holding = True
        send_after(ACK_HOLD, _self(), ("chat.acks",))


def _hand_over(c: _Conn) -> None:
    """Hand the held receipt acks to the user process."""
    if c.held:
        ids = tuple(c.held)
        c.held.clear()
        _user_cast(c, ("ack", ids))


def _user_call(c: _Conn, request: tuple[Any, ...]) -> Any:
    """Call the session's user process, starting it if it stopped (idle) or crashed; a
    process that starts while this connection holds the device name attaches to it.
    Held receipt acks go first (one turn of the user process for both)."""
    assert c.phone is not None
    if c.held:
        _hand_over(c)
    try:
        return users.call(c.phone, request)
    except CallError as e:
        if isinstance(e, TimeoutError):
            raise ProtocolError("unavailable", "the server is busy; try again") from None
        raise ProtocolError("unavailable", "the user's process keeps failing; try again"
                            ) from None


def _user_cast(c: _Conn, request: tuple[Any, ...]) -> None:
    """Hand ``request`` to the session's user process without waiting (starting the
    process if needed). If that process dies before handling it, it is lost: what an
    ack acknowledges is then pushed again (the device deduplicates)."""
    assert c.phone is not None
    try:
        gen_server.cast(users.ensure(c.phone), request)
    except Exception as e:  # the users' supervisor is busy or stopping
        log.warning("cannot hand %s to %s's process: %s", request[0], c.phone, e)


def _limit(c: _Conn, rid: int, kind: str, n: int) -> None:
    r = _user_call(c, ("limit", kind, n))
    if r[0] == "error":
        raise ProtocolError(r[1], r[2], rid, retry_after=r[3])


def _presence(c: _Conn, rid: int, phones: tuple[str, ...]) -> dict[str, Any]:
    phones = tuple(p for p in phones if is_phone(p))
    _limit(c, rid, "presence", len(phones))
    out: dict[str, Any] = {}
    for p, hide, last_seen in store.read(("presence", phones)):
        online = whereis(users.device_name(p)) is not None
        out[p] = {"hidden": True} if hide else {"online": online, "last_seen": last_seen}
    return out


def _provision(c: _Conn, rid: int, token: str, phones: tuple[str, ...]) -> dict[str, Any]:
    want = c.ctx.admin_token
    if not want or not hmac.compare_digest(want.encode(), token.encode()):
        raise ProtocolError("forbidden", "admin requests are disabled or the token is wrong",
                            rid)
    return _ok(rid, keys=list(registration.provision(phones)))
