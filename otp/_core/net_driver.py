"""The socket driver behind ``otp.net``: a socket's incoming data read by the hub and
delivered to its owner process as messages (Erlang's ``gen_tcp`` active mode).

Kernel side of ``otp.net`` (see its docstring for the messages, flow control and
ownership). Plain TCP sockets are read by the hub itself when readable (an I/O watcher,
no greenlet wakes); others (TLS) by a small internal greenlet. The owner's end closes
the socket through a kernel exit hook.
"""

from __future__ import annotations

import _socket
import errno
import socket
import struct
from collections.abc import Callable
from typing import Any

import gevent
from gevent.event import Event
from gevent.monkey import get_original
from gevent.socket import socket as _GeventSocket
from gevent.ssl import SSLSocket as _GeventSSLSocket

from otp._core.node import Node, Process, current_node, getcurrent
from otp._core.values import Pid
from otp.errors import BadArg, NotInProcess

__all__ = [
    "SocketWriter",
    "active_socket",
    "close_socket",
    "is_active_socket",
    "set_packet_handler",
    "set_socket_owner",
    "socket_writer",
]

_HEADER = struct.Struct(">I")
_READ = 65536
_DONTWAIT = socket.MSG_DONTWAIT
_StdSSLSocket: type = get_original("ssl", "SSLSocket")

# socket -> its state, for every socket ``active`` was called on and not closed since
_socks: dict[Any, _Active] = {}


def _reason(e: BaseException) -> str:
    """An OSError as an Erlang-style reason: "econnreset", "timeout", ... ."""
    if isinstance(e, TimeoutError) and e.errno is None:  # a socket timeout
        return "timeout"
    code = getattr(e, "errno", None)
    if isinstance(code, int) and code in errno.errorcode:
        return errno.errorcode[code].lower()
    return type(e).__name__.lower()


class _Active:
    """One active socket: its owner, count, packet buffer and how it is read."""

    __slots__ = (
        "buf",
        "count",
        "ended",
        "event",
        "handler",
        "node",
        "on_exit",
        "owner",
        "packet",
        "raw",
        "reader",
        "size",
        "sock",
        "watcher",
    )

    def __init__(self, node: Node, sock: Any, owner: Process, packet: int, size: int) -> None:
        self.node = node
        self.sock = sock
        self.owner = owner
        self.packet = packet
        self.size = size
        self.count: int | bool = 0  # messages still allowed; True: no limit
        self.ended = False  # tcp_closed was delivered: nothing more to read
        self.buf = bytearray()
        self.watcher: Any = None
        self.reader: Any = None  # the greenlet reading a socket the hub cannot
        self.event: Event | None = None  # wakes that greenlet when re-armed
        self.raw = _raw(sock)
        self.on_exit = self._owner_ended
        self.handler: Any = None  # packets go to handler(body) instead of the owner

    def armed(self) -> bool:
        """Messages may still be delivered (the active count is not spent)."""
        return self.count is True or self.count > 0

    # --- reading -----------------------------------------------------------------------

    def start(self) -> None:
        if self.raw is not None:
            if self.watcher is None:
                self.watcher = self.node.hub.loop.io(self.raw.fileno(), 1)
            if not self.watcher.active:
                self.watcher.start(self._readable)
        else:
            if self.reader is None:
                self.event = Event()
                self.reader = gevent.spawn(self._read_loop)
            assert self.event is not None
            self.event.set()

    def stop_reading(self) -> None:
        if self.watcher is not None and self.watcher.active:
            self.watcher.stop()
        if self.event is not None:
            self.event.clear()

    def _readable(self) -> None:
        """The hub's callback: the socket is readable (or closed, or failed)."""
        try:
            data = self.raw.recv(_READ, _DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except Exception as e:  # OSError, or anything else: the hub must never see one
            self._failed(_reason(e))
            return
        self._got(data)

    def _read_loop(self) -> None:
        """The internal reader for a socket the hub cannot read directly (TLS)."""
        event = self.event
        assert event is not None
        sock = self.sock
        while _socks.get(sock) is self:
            if not self.armed():
                event.clear()
                event.wait()
                continue
            try:
                data = sock.recv(_READ)
            except Exception as e:
                self._failed(_reason(e))
                return
            if _socks.get(sock) is not self:
                return
            self._got(data)

    def _got(self, data: bytes) -> None:
        """What one read returned: deliver what the count allows, keep the rest."""
        if not data:
            self._ended(None)
            return
        buf = self.buf
        if buf:  # the start of a packet was kept back
            buf += data
            taken = self._take(buf)
            if taken > 0:
                del buf[:taken]
        else:  # the usual case: the packets are taken straight from what was read
            taken = self._take(data)
            if 0 <= taken < len(data):
                buf += memoryview(data)[taken:]

    def _take(self, data: bytes | bytearray) -> int:
        """Deliver the packets at the start of ``data`` (with packet=0: all of it) while
        the count allows; ``tcp_passive`` when it runs out. Returns the bytes taken, or
        -1 when the stream ended here (a packet too long, or the owner gone)."""
        owner = self.owner
        if owner.dead:
            self.count = 0
            self.close()
            return -1
        deliver = self.node.deliver
        sock = self.sock
        count = self.count
        end = len(data)
        pos = 0
        if self.packet == 0:
            deliver(owner, ("tcp", sock, bytes(data)))
            pos = end
            if count is not True:
                count -= 1
        else:
            size = self.size
            unpack = _HEADER.unpack_from
            copy = data.__class__ is not bytes  # a slice of bytes is bytes already
            handler = self.handler
            while count is True or count > 0:
                if end - pos < 4:
                    break
                (n,) = unpack(data, pos)
                if size and n > size:
                    self.count = count
                    self._ended("emsgsize")
                    return -1
                nxt = pos + 4 + n
                if nxt > end:
                    break
                body = data[pos + 4 : nxt]
                if handler is not None:
                    pos = nxt
                    handler(bytes(body) if copy else body)
                    if self.ended or _socks.get(sock) is not self:
                        return -1  # the handler closed the socket
                else:
                    deliver(owner, ("tcp", sock, bytes(body) if copy else body))
                    pos = nxt
                if count is not True:
                    count -= 1
        self.count = count
        if count is not True and count <= 0:
            self.stop_reading()
            deliver(owner, ("tcp_passive", sock))
        return pos

    def _failed(self, reason: str) -> None:
        if _socks.get(self.sock) is self:
            self._ended(reason)

    def _ended(self, reason: str | None) -> None:
        """The stream is over: tell the owner (an error first, if any); the socket stays
        open until ``close`` (or the owner's end), as a closed Erlang port's does."""
        self.stop_reading()
        self.count = 0
        self.ended = True
        owner = self.owner
        if not owner.dead:
            if reason is not None:
                self.node.deliver(owner, ("tcp_error", self.sock, reason))
            self.node.deliver(owner, ("tcp_closed", self.sock))
        self._drop_watcher()

    # --- ending ------------------------------------------------------------------------

    def close(self) -> None:
        if _socks.get(self.sock) is self:
            del _socks[self.sock]
        self.node.cancel_on_exit(self.owner, self.on_exit)
        self._drop_watcher()
        reader = self.reader
        self.reader = None
        if reader is not None and reader is not gevent.getcurrent():
            reader.kill(block=False)
        try:
            self.sock.close()
        except OSError:
            pass

    def _drop_watcher(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher.close()
            self.watcher = None

    def _owner_ended(self) -> None:
        # Runs in the owner's death procedure: no switching there; close right after.
        self.count = 0
        self.stop_reading()
        self.node.hub.loop.run_callback(self.close)


def _raw(sock: Any) -> Any:
    """The OS-level socket under ``sock`` that the hub may read directly (with
    ``MSG_DONTWAIT``), or None: then an internal greenlet reads ``sock`` itself."""
    if isinstance(sock, _StdSSLSocket):  # the standard library's TLS: it would block
        raise BadArg(
            "net.active: a standard-library TLS socket blocks the node; use gevent's "
            "(otp.patch() before importing ssl, or gevent.ssl)"
        )
    if isinstance(sock, _socket.socket):  # the standard library's socket
        return sock
    if isinstance(sock, _GeventSocket) and not isinstance(sock, _GeventSSLSocket):
        inner = getattr(sock, "_sock", None)
        if isinstance(inner, _socket.socket):
            return inner
    return None


def _caller(what: str) -> Process:
    p = getcurrent()
    if p.__class__ is not Process:
        raise NotInProcess(f"{what} must be called from inside a process")
    return p


def active_socket(
    sock: Any, n: int | bool = True, *, packet: int | None = None, packet_size: int | None = None
) -> None:
    """Deliver ``sock``'s incoming data to the calling process as messages.

    ``n``: a positive int adds that many messages to the active count (Erlang's
    ``{active, N}``); ``True`` reads without limit; ``False`` stops reading (the socket
    stays open and keeps its owner). ``packet`` (0 or 4) and ``packet_size`` (a
    packet's maximum length, 0 for no limit) are set by the first call and may be
    changed by later ones. The first call makes the caller the socket's owner; later
    calls may come from any process on the node, and the messages still go to the owner.
    """
    p = _caller("net.active")
    if n is not True and n is not False and (n.__class__ is not int or n <= 0):
        raise BadArg(f"net.active expects a positive int, True or False, got {n!r}")
    if packet is not None and packet not in (0, 4):
        raise BadArg(f"net.active expects packet 0 or 4, got {packet!r}")
    if packet_size is not None and (packet_size.__class__ is not int or packet_size < 0):
        raise BadArg(f"net.active expects packet_size >= 0 (an int), got {packet_size!r}")
    st = _socks.get(sock)
    if st is None:
        _raw(sock)  # refuses what would block the node, first
        try:
            fd = sock.fileno()
        except Exception as e:
            raise BadArg(f"net.active expects a socket, got {sock!r}") from e
        if fd < 0:
            raise BadArg(f"net.active: the socket is closed: {sock!r}")
        node = current_node()
        st = _Active(node, sock, p, packet or 0, packet_size or 0)
        _socks[sock] = st
        node.on_exit(p, st.on_exit)
    else:
        if packet is not None:
            st.packet = packet
        if packet_size is not None:
            st.size = packet_size
    if st.ended:  # tcp_closed is on its way (or was received): nothing to arm
        return
    if n is False:
        st.count = 0
        st.stop_reading()
        return
    if n is True:
        st.count = True
    elif st.count is not True:
        st.count += n
    if st.buf and st.packet:  # whole packets kept back while passive go first
        taken = st._take(st.buf)
        if taken > 0:
            del st.buf[:taken]
        if not st.armed():
            return
    if _socks.get(sock) is st:
        st.start()


def is_active_socket(sock: Any) -> bool:
    """Whether the node is reading ``sock`` for its owner now (count left)."""
    st = _socks.get(sock)
    return st is not None and st.armed()


def set_packet_handler(sock: Any, handler: Callable[[bytes], None] | None) -> None:
    """Hand each packet of the active socket ``sock`` (``packet=4``) to
    ``handler(body)`` as it is read, instead of sending ``("tcp", sock, body)`` to the
    owner; ``tcp_closed``/``tcp_error``/``tcp_passive`` still go to the owner. The
    handler runs in the hub (or the socket's internal reader, for TLS): it must not
    block, switch or raise. This is how a protocol driver (the distribution's
    connections) takes packets without a process switch each. ``None`` goes back to
    messages."""
    st = _socks.get(sock)
    if st is None:
        raise BadArg(f"set_packet_handler: {sock!r} is not an active socket")
    st.handler = handler


class SocketWriter:
    """Writes to a plain TCP socket from any greenlet or hub callback without ever
    blocking: ``write(data)`` queues, and the queue goes out in one ``send`` at the
    end of the hub's current turn (so that many small writes in one turn make one
    system call), at once when it passes ``flush_at`` bytes, and under an I/O watcher
    while the socket's buffers are full. A failed send calls ``on_error(reason)`` once
    (from the hub) and drops what was queued.

    ``pending()``: bytes queued and not yet written (a sender may use it to apply
    back-pressure)."""

    __slots__ = (
        "_err",
        "_failed",
        "_loop",
        "_out",
        "_queued",
        "_raw",
        "_rest",
        "_sched",
        "_watcher",
        "flush_at",
    )

    def __init__(
        self, node: Node, raw: Any, on_error: Callable[[str], None], flush_at: int = 65536
    ) -> None:
        self._loop = node.hub.loop
        self._raw = raw
        self._err = on_error
        self._out: list[bytes] = []
        self._queued = 0
        self._rest: memoryview | None = None  # what a partial send left, written first
        self._sched = False
        self._watcher: Any = None
        self._failed = False
        self.flush_at = flush_at

    def pending(self) -> int:
        rest = self._rest
        return self._queued + (len(rest) if rest is not None else 0)

    def write(self, data: bytes) -> None:
        if self._failed:
            return
        self._out.append(data)
        self._queued += len(data)
        if self._queued >= self.flush_at and self._rest is None:
            self._flush()
        elif not self._sched:
            self._sched = True
            self._loop.run_callback(self._flush)

    def _flush(self) -> None:
        self._sched = False
        if self._failed or self._rest is not None:
            return  # the watcher writes the rest, then the queue
        out = self._out
        if not out:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        self._queued = 0
        self._send(memoryview(data))

    def _send(self, view: memoryview) -> None:
        try:
            n = self._raw.send(view, _DONTWAIT)
        except (BlockingIOError, InterruptedError):
            n = 0
        except Exception as e:  # OSError: the connection is gone
            self._fail(_reason(e))
            return
        if n < len(view):
            self._rest = view[n:]
            if self._watcher is None:
                self._watcher = self._loop.io(self._raw.fileno(), 2)
            if not self._watcher.active:
                self._watcher.start(self._writable)
        else:
            self._rest = None

    def _writable(self) -> None:
        rest = self._rest
        if rest is None or self._failed:
            self._stop_watcher()
            return
        self._rest = None
        self._send(rest)
        if self._rest is None:
            self._stop_watcher()
            if self._out:
                self._flush()

    def _stop_watcher(self) -> None:
        w = self._watcher
        if w is not None and w.active:
            w.stop()

    def _fail(self, reason: str) -> None:
        if self._failed:
            return
        self._failed = True
        self._out.clear()
        self._queued = 0
        self._rest = None
        self.close()
        try:
            self._err(reason)
        except Exception:  # the hub must never see one
            pass

    def close(self) -> None:
        """Stop writing (what is queued is dropped)."""
        self._failed = True
        w, self._watcher = self._watcher, None
        if w is not None:
            w.stop()
            w.close()


def socket_writer(sock: Any, on_error: Callable[[str], None]) -> SocketWriter | None:
    """A ``SocketWriter`` for ``sock`` when the hub can write it directly (a plain TCP
    socket), else None (TLS: write it from a process with ``sendall``)."""
    if isinstance(sock, _StdSSLSocket):
        return None
    raw = _raw(sock)
    if raw is None:
        return None
    return SocketWriter(current_node(), raw, on_error)


def set_socket_owner(sock: Any, pid: Pid) -> None:
    """Make ``pid`` the owner of the active socket ``sock``: messages go to it from now
    on, and the socket is closed when it ends. Only the owner may hand it on."""
    me = _caller("net.controlling_process")
    st = _socks.get(sock)
    if st is None:
        raise BadArg(f"net.controlling_process: {sock!r} is not an active socket")
    if st.owner is not me:
        raise BadArg("net.controlling_process: only the socket's owner may hand it on")
    target = st.node.lookup(pid) if pid.__class__ is Pid else None
    if target is None:
        raise BadArg(f"net.controlling_process: {pid!r} is not a live local process")
    st.node.cancel_on_exit(me, st.on_exit)
    st.owner = target
    st.node.on_exit(target, st.on_exit)


def close_socket(sock: Any) -> None:
    """Stop reading ``sock`` and close it. Also for a socket that was never active."""
    st = _socks.get(sock)
    if st is not None:
        st.close()
        return
    try:
        sock.close()
    except OSError:
        pass
