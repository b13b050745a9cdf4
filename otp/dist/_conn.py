"""Connections between nodes: one per node pair, made on first use, one process each.

A ``Connection`` to a peer is made by ``connection(peer)`` the first time anything is
sent there (or by an accepted connect from the peer) and is at once usable:
``send_control(ctrl, payload)`` never blocks; what is sent before the handshake ends is
queued and goes out, in order, as soon as it does. The connection's process runs the
handshake (``otp.dist._handshake``), then:

- **reads**: the node's socket driver (``otp.net``, 4-byte framing, packets above
  ``max_packet`` refused) hands each packet, as it reads it, to ``_packet`` (in the
  hub, no process switch), which decodes it (``112`` pass-through, then the control
  term and the optional message term, each after the version byte 131) and calls
  ``otp.dist._control.dispatch(node, conn, ctrl, payload)``: one reader per
  connection, so control messages are dispatched in the order they were sent; every
  operation there only delivers or signals, never blocks;
- **writes**: ``send_control`` encodes the frame in the sender and queues it on the
  hub's writer (``otp.lowlevel.socket_writer``), which sends what a hub turn queued in
  one system call (a sender never blocks, even from a process's death procedure). A
  TLS socket, which the hub cannot write, is written by the connection's process;
- **ticks**: every ``net_ticktime / 4`` seconds a 0-length packet goes out if nothing
  else did; a peer heard from not at all for four such intervals (``net_ticktime``) is
  declared down (Erlang's ``net_tick_timeout``).

When the connection ends (peer closed, tick timeout, garbage, ``disconnect``) the node
hears of it through ``otp.dist._control.connection_lost(node, peer)``; an attempt that
fails ends the same way. Garbage from a peer (a malformed packet or term) closes that
connection only, never the node or its listener.

Simultaneous connects (both nodes connect to each other at once): the node whose name is
greater keeps its own attempt; the other one's attempt gets ``nok`` and its accepting
side takes over the pending connection (``ok_simultaneous``), so exactly one connection
results and whatever was queued on either attempt goes out on it.

A limitation: nothing bounds what is queued for a peer that stopped reading (its
socket buffers full): senders never block (Erlang suspends them on a busy
distribution port); the tick timeout ends such a connection within ``net_ticktime``.
"""

from __future__ import annotations

import logging
import secrets
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from otp import net
from otp.dist import _epmd
from otp.dist import _handshake as hs
from otp.dist import _etf
from otp.dist._etf import decode
from otp.lowlevel import Node, Pid, Process, getcurrent, set_packet_handler, socket_writer
from otp.process import receive, send_after, spawn

__all__ = ["NO_PAYLOAD", "Connection", "DistState", "connection"]

log = logging.getLogger("otp.dist")

NO_PAYLOAD: Any = type("NoPayload", (), {"__repr__": lambda self: "NO_PAYLOAD"})()
_NO_PAYLOAD = NO_PAYLOAD  # the name other modules may know it by

_PASS_THROUGH = 112
_VERSION = 131
_TICK = b"\0\0\0\0"


# --- messages to a connection's process, and to processes waiting for one -------------


class Wake(NamedTuple):
    """Something was queued to write."""


class Tick(NamedTuple):
    """Time to check the peer is alive and to tick it."""


class Broken(NamedTuple):
    """The socket driver read garbage from the peer: close the connection."""

    reason: str


class WriteFailed(NamedTuple):
    """The hub's write to the socket failed."""

    reason: str


class Superseded(NamedTuple):
    """An accepted connect from the peer took this attempt's place (simultaneous connect)."""


class ConnResult(NamedTuple):
    """To processes waiting in ``connect``: the connection to ``peer`` is up (``ok``) or
    the attempt failed / the connection ended."""

    peer: str
    ok: bool


@dataclass
class DistState:
    """The node's distribution: who it is, how it authenticates, its connections."""

    node: Node
    name: str
    cookie: str
    creation: int
    hidden: bool = False
    listen: str = "127.0.0.1"
    port: int = 0
    epmd_port: int = 4369
    net_ticktime: float = 60.0
    setup_time: float = 7.0
    max_packet: int = 64 * 1024 * 1024
    tls_server: ssl.SSLContext | None = None
    tls_client: ssl.SSLContext | None = None
    flags: int = hs.FLAGS
    conns: dict[str, Connection] = field(default_factory=dict)
    stopped: bool = False
    # Tests (and tools) may watch connection events: fn(event, peer)
    observers: list[Callable[[str, str], None]] = field(default_factory=list)

    def event(self, what: str, peer: str) -> None:
        for fn in list(self.observers):
            try:
                fn(what, peer)
            except Exception:  # an observer must not break a connection
                log.exception("distribution observer failed on %s %s", what, peer)


class Connection:
    """The connection to one peer node (see the module doc).

    ``peer``: the peer's node name; ``up``: the handshake ended and the connection is
    usable; ``closed``: it ended (a new ``connection(peer)`` makes a new one);
    ``otpy``: both ends are otpy nodes (the codec's lossless mapping is used);
    ``flags``/``creation``: what the peer offered in the handshake."""

    def __init__(self, state: DistState, peer: str) -> None:
        self.state = state
        self.peer = peer
        self.up = False
        self.closed = False
        self.otpy = False
        self.flags = 0
        self.creation = 0
        self.proc: Process | None = None
        self.sock: Any = None
        self.out: list[bytes] = []  # encoded frames to write (once up, TLS)
        self.writer: Any = None  # the hub's writer (once up, plain TCP)
        self.broken = False  # garbage was read: the process is closing the connection
        self.queued: list[tuple[Any, Any]] = []  # (ctrl, payload) sent before up
        self.waiters: list[Process] = []
        self.woken = False
        self.read_since_tick = True
        self.wrote_since_tick = False
        self.missed = 0

    def __repr__(self) -> str:
        what = "closed" if self.closed else "up" if self.up else "pending"
        return f"<Connection to {self.peer} {what}>"

    # --- sending ----------------------------------------------------------------------

    def send_control(self, ctrl: tuple[Any, ...], payload: Any = NO_PAYLOAD) -> None:
        """Queue a control message (and its message term, for the send-like ones); never
        blocks. Dropped when the connection is closed. Raises the codec's error when the
        term cannot be encoded (once the connection is up: the mapping depends on the
        peer)."""
        if self.closed:
            return
        if not self.up:
            self.queued.append((ctrl, payload))
            return
        w = self.writer
        if w is not None:
            w.write(self._frame(ctrl, payload))
            self.wrote_since_tick = True
            return
        self.out.append(self._frame(ctrl, payload))
        self._wake()

    def _frame(self, ctrl: Any, payload: Any) -> bytes:
        if payload is NO_PAYLOAD:
            data = _etf.encode_frame(self.otpy, ctrl)
        else:
            data = _etf.encode_frame(self.otpy, ctrl, payload)
        if len(data) - 4 > self.state.max_packet:
            raise hs.HandshakeError(
                f"a control message to {self.peer} of {len(data) - 4} bytes exceeds the "
                f"packet size cap of {self.state.max_packet} bytes"
            )
        return data

    def _wake(self) -> None:
        p = self.proc
        if not self.woken and p is not None and not p.dead:
            self.woken = True
            self.state.node.deliver(p, Wake())

    # --- ending -------------------------------------------------------------------------

    def close(self, reason: str = "disconnected") -> None:
        """End the connection (from any process; never blocks). Waiters get a failed
        ``ConnResult``; the node hears ``connection_lost``."""
        if self.closed:
            return
        was_up = self.up
        self.closed = True
        self.up = False
        st = self.state
        if st.conns.get(self.peer) is self:
            del st.conns[self.peer]
        sock, self.sock = self.sock, None
        w, self.writer = self.writer, None
        if w is not None:
            w.close()
        if sock is not None:
            net.close(sock)
        p = self.proc
        if p is not None and not p.dead and p is not getcurrent():
            st.node.deliver(p, Wake())  # it sees ``closed`` and ends
        self._notify(False)
        self.queued.clear()
        self.out.clear()
        if was_up:
            log.info("connection to %s closed: %s", self.peer, reason)
        st.event("down" if was_up else "failed", self.peer)
        _control_call("connection_lost", st.node, self.peer)

    def _notify(self, ok: bool) -> None:
        waiters, self.waiters = self.waiters, []
        for w in waiters:
            if not w.dead:
                self.state.node.deliver(w, ConnResult(self.peer, ok))

    # --- the process, once the handshake is done ---------------------------------------

    def _run(self, sock: Any, flags: int, creation: int) -> None:
        st = self.state
        self.sock = sock
        sock.settimeout(None)
        try:  # as Erlang's inet_tcp_dist does: a small packet goes at once, no Nagle
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        self.flags = flags
        self.creation = creation
        self.otpy = bool(flags & hs.DFLAG_OTPY)
        queued, self.queued = self.queued, []
        for ctrl, payload in queued:
            try:
                self.out.append(self._frame(ctrl, payload))
            except Exception as e:  # queued before the mapping was known: report, go on
                log.warning(
                    "dropped a control message to %s that cannot be encoded: %s", self.peer, e
                )
        net.active(sock, True, packet=4, packet_size=st.max_packet)
        # Packets are decoded and dispatched as the socket driver reads them; a plain
        # TCP socket is also written by the hub (queued, sent once per hub turn), so a
        # message crosses with no switch to this process. A TLS socket is written by
        # this process (``sendall``).
        writer = socket_writer(sock, self._write_failed)
        if writer is not None:
            if self.out:
                writer.write(b"".join(self.out))
                self.out.clear()
            self.writer = writer
        set_packet_handler(sock, self._packet)
        self.up = True
        interval = st.net_ticktime / 4
        me = getcurrent()
        send_after(interval, me.pid, Tick())
        log.info("connection to %s up (%s)", self.peer, "otpy" if self.otpy else "BEAM")
        st.event("up", self.peer)
        self._notify(True)
        try:
            self._loop(sock, interval)
        finally:
            if not self.closed:
                self.close("connection process ended")

    def _loop(self, sock: Any, interval: float) -> None:
        node = self.state.node
        me = getcurrent()
        while not self.closed:
            if self.out:
                self._write(sock)
                continue
            msg = receive()
            if self.closed:
                return
            match msg:
                case Broken(reason):
                    log.warning("connection to %s closed: %s", self.peer, reason)
                    self.close(reason)
                    return
                case WriteFailed(reason):
                    self.close(f"write failed: {reason}")
                    return
                case ("tcp", s, data) if s is sock:
                    self.read_since_tick = True
                    if data:
                        reason = self._received(node, data)
                        if reason is not None:
                            log.warning("connection to %s closed: %s", self.peer, reason)
                            self.close(reason)
                            return
                case ("tcp_error", s, reason) if s is sock:
                    log.info("connection to %s: socket error %s", self.peer, reason)
                case ("tcp_closed", s) if s is sock:
                    self.close("connection_closed")
                    return
                case Wake():
                    self.woken = False
                case Tick():
                    if not self.read_since_tick:
                        self.missed += 1
                        if self.missed >= 4:
                            log.warning(
                                "node %s not responding: connection removed (net_tick_timeout)",
                                self.peer,
                            )
                            self.close("net_tick_timeout")
                            return
                    else:
                        self.missed = 0
                    self.read_since_tick = False
                    if not self.wrote_since_tick:
                        if self.writer is not None:
                            self.writer.write(_TICK)
                        else:
                            self.out.append(_TICK)
                    self.wrote_since_tick = False
                    send_after(interval, me.pid, Tick())
                case _:
                    log.info("connection to %s: unexpected message %r dropped", self.peer, msg)

    def _write(self, sock: Any) -> None:
        data = b"".join(self.out)
        self.out.clear()
        self.woken = False
        try:
            sock.sendall(data)
        except OSError as e:
            self.close(f"write failed: {e}")
            return
        if data != _TICK:  # a tick alone does not count: the next one is still due
            self.wrote_since_tick = True

    # --- the hub's side (plain TCP) ------------------------------------------------------

    def _packet(self, data: bytes) -> None:
        """One packet, as the socket driver reads it (in the hub, or the TLS reader):
        decoded and dispatched at once, in order, with no switch to this process (every
        control operation only delivers or signals, never blocks). Garbage goes to the
        process, which closes the connection; nothing after it is read."""
        self.read_since_tick = True
        if not data or self.broken:
            return  # a tick
        p = self.proc
        if p is None or p.dead or self.closed:
            return
        # The common case first: a message to a local pid or registered name (SEND,
        # REG_SEND), delivered here; anything else, or anything odd, takes the general
        # path below (which also says what is wrong with a malformed packet).
        if data[0] == _PASS_THROUGH and data[1] == _VERSION:
            try:
                ctrl, pos = decode(data, 2, otpy=self.otpy)
                op = ctrl[0] if ctrl.__class__ is tuple and len(ctrl) >= 3 else None
                if (op == 6 or op == 2) and data[pos] == _VERSION:
                    msg, end = decode(data, pos + 1, otpy=self.otpy)
                    if end == len(data):
                        node = self.state.node
                        if op == 6:
                            q = node.names.get(ctrl[3]) if len(ctrl) == 4 else None
                        else:
                            dest = ctrl[2]
                            q = node.lookup(dest) if dest.__class__ is Pid else None
                        if q is not None and not q.dead:
                            node.deliver(q, msg)
                        return
            except Exception:  # the general path says why
                pass
        reason = self._received(self.state.node, data)
        if reason is not None:
            self.broken = True
            self.state.node.deliver(p, Broken(reason))

    def _write_failed(self, reason: str) -> None:
        p = self.proc
        if p is not None and not p.dead:
            self.state.node.deliver(p, WriteFailed(reason))

    def _received(self, node: Node, data: bytes) -> str | None:
        """Decode and dispatch one packet; returns why to close, or None."""
        if len(data) < 3 or data[0] != _PASS_THROUGH or data[1] != _VERSION:
            return f"garbage from the peer: a packet starting {bytes(data[:8])!r}"
        try:
            ctrl, pos = decode(data, 2, otpy=self.otpy)
            payload = NO_PAYLOAD
            if pos < len(data):
                if data[pos] != _VERSION:
                    return "garbage from the peer: no version byte before the message"
                payload, pos = decode(data, pos + 1, otpy=self.otpy)
            if pos != len(data):
                return f"garbage from the peer: {len(data) - pos} bytes after the terms"
        except Exception as e:  # the codec's error on a malformed term
            return f"garbage from the peer: {e}"
        if not isinstance(ctrl, tuple) or not ctrl or not isinstance(ctrl[0], int):
            return f"garbage from the peer: a control message {ctrl!r:.80}"
        try:
            if payload is NO_PAYLOAD:  # the dispatcher's own default says "none"
                _dispatch()(node, self, ctrl)
            else:
                _dispatch()(node, self, ctrl, payload)
        except Exception as e:  # a control message the node cannot take: a protocol error
            log.exception("connection to %s: control message %r failed", self.peer, ctrl[:1])
            return f"control message failed: {e}"
        return None


# --- the kernel side's entry points (otp.dist._control), with a minimal fallback -------


_DISPATCH: list[Callable[..., None]] = []


def _dispatch() -> Callable[..., None]:
    if _DISPATCH:
        return _DISPATCH[0]
    try:
        from otp.dist import _control
    except ImportError:
        from otp.dist._net_kernel import fallback_dispatch

        return fallback_dispatch
    _DISPATCH.append(_control.dispatch)
    return _control.dispatch


def _control_call(fn: str, *args: Any) -> None:
    try:
        from otp.dist import _control
    except ImportError:
        return
    try:
        getattr(_control, fn)(*args)
    except Exception:
        log.exception("otp.dist._control.%s failed", fn)


# --- making connections -------------------------------------------------------------------


def connection(state: DistState, peer: str) -> Connection:
    """The connection to ``peer``: the current one, or a new one whose attempt starts
    now in its own process (never blocks)."""
    conn = state.conns.get(peer)
    if conn is not None:
        return conn
    conn = Connection(state, peer)
    state.conns[peer] = conn
    if state.stopped:
        conn.close("distribution stopped")
        return conn
    pid = spawn(_initiate, conn)
    conn.proc = state.node.lookup(pid)
    return conn


def _initiate(conn: Connection) -> None:
    st = conn.state
    me = getcurrent()
    peer = conn.peer
    sock: Any = None
    try:
        alive, _, host = peer.partition("@")
        port = _epmd.port_please(alive, host, epmd_port=st.epmd_port)
        if port is None:
            raise hs.HandshakeError(f"node {peer} is not registered with EPMD on {host}")
        sock = socket.create_connection((host, port), timeout=st.setup_time)
        if st.tls_client is not None:
            sock = st.tls_client.wrap_socket(sock, server_hostname=host)
        if conn.proc is not me or conn.closed:
            return
        conn.sock = sock
        hs.send_name(sock, st.name, st.flags, st.creation)
        status = hs.recv_status(sock)
        if status == "alive":  # the peer thinks an old connection of ours is still up
            hs.send_status(sock, "true")
        elif status == "nok":  # a simultaneous connect the peer's attempt wins
            conn.sock = None
            sock.close()
            sock = None
            receive(Superseded, timeout=st.setup_time, default=None)
            if conn.proc is me and not conn.closed:
                conn.close("simultaneous connect: the peer's attempt never came")
            return
        elif status not in ("ok", "ok_simultaneous"):
            raise hs.HandshakeError(f"node {peer} refused the connection: {status}")
        ch = hs.recv_challenge(sock)
        if ch.name != peer:
            raise hs.HandshakeError(f"connected to {peer}'s port but {ch.name} answered")
        hs.check_flags(ch.flags, peer)
        mine = secrets.randbits(32)
        hs.send_challenge_reply(sock, mine, ch.challenge, st.cookie)
        hs.recv_challenge_ack(sock, mine, st.cookie, peer)
    except (hs.HandshakeError, _epmd.EpmdError, OSError) as e:
        if sock is not None:
            sock.close()
        if conn.proc is me and not conn.closed:
            log.warning("connection to %s failed: %s", peer, e)
            conn.close(str(e))
        return
    if conn.proc is not me or conn.closed:
        sock.close()
        return
    conn._run(sock, ch.flags, ch.creation)


def accepted(state: DistState, sock: Any) -> None:
    """Run the accepting side of the handshake on ``sock`` (in a fresh process), then
    serve the connection."""
    me = getcurrent()
    conn: Connection | None = None
    peer = "an unnamed peer"
    try:
        sock.settimeout(state.setup_time)
        if state.tls_server is not None:
            sock = state.tls_server.wrap_socket(sock, server_side=True)
            sock.settimeout(state.setup_time)
        pn = hs.recv_name(sock)
        peer = pn.name
        try:
            hs.check_flags(pn.flags, peer)
        except hs.HandshakeError:
            hs.send_status(sock, "not_allowed")
            raise
        if peer == state.name or state.stopped:
            hs.send_status(sock, "not_allowed")
            raise hs.HandshakeError(f"a connect from a node named like this one ({peer})")
        old = state.conns.get(peer)
        if old is None:
            conn = Connection(state, peer)
            conn.proc = me
            state.conns[peer] = conn
            hs.send_status(sock, "ok")
        elif old.up:
            # The peer restarted (or lost the connection) before we noticed: ask, then
            # replace the old connection.
            hs.send_status(sock, "alive")
            if hs.recv_status(sock) != "true":
                raise hs.HandshakeError(f"node {peer} gave up on its new connection")
            old.close("replaced by a new connection from the peer")
            conn = Connection(state, peer)
            conn.proc = me
            state.conns[peer] = conn
        elif peer > state.name:
            # Simultaneous connect, the peer's name is greater: its attempt wins and
            # takes over our pending connection (and what was queued on it).
            conn = old
            loser, conn.proc = conn.proc, me
            lsock, conn.sock = conn.sock, None
            if lsock is not None:
                lsock.close()
            if loser is not None and not loser.dead:
                state.node.deliver(loser, Superseded())
            hs.send_status(sock, "ok_simultaneous")
        else:
            hs.send_status(sock, "nok")
            sock.close()
            return
        conn.sock = sock
        challenge = hs.send_challenge(sock, state.name, state.flags, state.creation)
        try:
            theirs = hs.recv_challenge_reply(sock, challenge, state.cookie, peer)
        except hs.HandshakeError as e:
            if "wrong digest" in str(e):  # refused without a hint to the peer
                log.warning("connection attempt from node %s refused: wrong cookie", peer)
            raise
        hs.send_challenge_ack(sock, theirs, state.cookie)
    except (hs.HandshakeError, OSError, ssl.SSLError) as e:
        log.info("connection attempt from %s failed: %s", peer, e)
        try:
            sock.close()
        except OSError:
            pass
        if conn is not None and conn.proc is me and not conn.closed:
            conn.sock = None
            conn.close(str(e))
        return
    if conn.proc is not me or conn.closed:
        sock.close()
        return
    conn._run(sock, pn.flags, pn.creation)
