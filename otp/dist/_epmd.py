"""EPMD: the port mapper that tells a node where another node of the host listens.

A node registers its name and listening port with the host's EPMD (TCP, port 4369, or
``ERL_EPMD_PORT``) and keeps that connection open: the registration lasts as long as
the connection. A node that wants to connect to ``name@host`` asks EPMD on ``host`` for
``name``'s port.

The client (``register``, ``port_please``, ``names``) speaks the EPMD protocol
(``ALIVE2_REQ``/``ALIVE2_X_RESP``, ``PORT_PLEASE2_REQ``/``PORT2_RESP``, ``NAMES_REQ``)
with the system's ``epmd`` or with ours. ``NameServer`` is an EPMD-compatible name
server: ``otp.dist.start`` starts one inside the node when no EPMD answers on the port,
as ``erl`` starts ``epmd``. Real ``erl`` nodes register with it and find our nodes
through it.

Limitation: our name server lives inside the node that started it (its processes),
not as a separate daemon. When that node stops, every registration it held is gone
(nodes registered with it stay connected to their peers, but new nodes cannot find
them until they register again). Run the system's ``epmd`` when nodes come and go
independently.

All functions here block the calling process (not the node): they run in processes on
the node's cooperative sockets.

    import otp
    from otp.dist import _epmd

    def main():
        server = _epmd.NameServer.start("127.0.0.1", 0)
        reg = _epmd.register("a", 9999, epmd_port=server.port)  # held while open
        assert _epmd.port_please("a", "127.0.0.1", epmd_port=server.port) == 9999
        reg.close()
        server.stop()

    otp.run(main)
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import struct
from dataclasses import dataclass

from otp.errors import OTPError
from otp.process import spawn

__all__ = [
    "EpmdError",
    "NameServer",
    "Registration",
    "names",
    "port_please",
    "register",
    "resolve_port",
]

log = logging.getLogger("otp.dist")

ALIVE2_REQ = 120
ALIVE2_RESP = 121
ALIVE2_X_RESP = 118
PORT_PLEASE2_REQ = 122
PORT2_RESP = 119
NAMES_REQ = 110

NODE_TYPE_NORMAL = 77  # 'M': a normal (visible) Erlang node
NODE_TYPE_HIDDEN = 72  # 'H'
PROTOCOL_TCP = 0
VERSION = 6  # the distribution protocol version (OTP 23+)

_TIMEOUT = 5.0  # seconds for one request/answer


class EpmdError(OTPError):
    """EPMD could not be reached, or answered what the protocol does not allow."""


def resolve_port(port: int | None = None) -> int:
    """``port`` if given, else ``ERL_EPMD_PORT``, else 4369."""
    if port is not None:
        return port
    env = os.environ.get("ERL_EPMD_PORT")
    return int(env) if env else 4369


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EpmdError(f"EPMD closed the connection ({len(buf)} of {n} bytes read)")
        buf += chunk
    return bytes(buf)


def _connect(host: str, port: int) -> socket.socket:
    try:
        return socket.create_connection((host, port), timeout=_TIMEOUT)
    except OSError as e:
        raise EpmdError(f"no EPMD answers on {host}:{port}: {e}") from e


def _request(body: bytes) -> bytes:
    return struct.pack(">H", len(body)) + body


@dataclass
class Registration:
    """A name registered with EPMD: held while ``sock`` stays open."""

    sock: socket.socket
    creation: int

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def register(
    name: str, port: int, *, host: str = "127.0.0.1", epmd_port: int | None = None,
    hidden: bool = False,
) -> Registration:
    """Register ``name`` listening on ``port`` (ALIVE2_REQ). The registration lasts
    until the returned ``Registration`` is closed. Raises ``EpmdError`` when EPMD is
    unreachable or refuses (the name is taken)."""
    eport = resolve_port(epmd_port)
    sock = _connect(host, eport)
    try:
        raw = name.encode()
        body = struct.pack(
            ">BHBBHHH", ALIVE2_REQ, port, NODE_TYPE_HIDDEN if hidden else NODE_TYPE_NORMAL,
            PROTOCOL_TCP, VERSION, VERSION, len(raw),
        ) + raw + struct.pack(">H", 0)
        sock.sendall(_request(body))
        tag, result = _recv_exact(sock, 2)
        if tag == ALIVE2_X_RESP:
            (creation,) = struct.unpack(">I", _recv_exact(sock, 4))
        elif tag == ALIVE2_RESP:
            (creation,) = struct.unpack(">H", _recv_exact(sock, 2))
        else:
            raise EpmdError(f"EPMD answered ALIVE2_REQ with tag {tag}, expected 118 or 121")
        if result != 0:
            raise EpmdError(
                f"EPMD on port {eport} refused to register {name!r} (result {result}): "
                "is a node of that name already running?"
            )
    except BaseException:
        sock.close()
        raise
    sock.settimeout(None)
    return Registration(sock, creation)


def port_please(name: str, host: str, *, epmd_port: int | None = None) -> int | None:
    """The port ``name`` listens on at ``host`` (PORT_PLEASE2_REQ), or None when EPMD
    does not know the name. Raises ``EpmdError`` when EPMD is unreachable."""
    eport = resolve_port(epmd_port)
    sock = _connect(host, eport)
    try:
        sock.sendall(_request(bytes([PORT_PLEASE2_REQ]) + name.encode()))
        tag, result = _recv_exact(sock, 2)
        if tag != PORT2_RESP:
            raise EpmdError(f"EPMD answered PORT_PLEASE2_REQ with tag {tag}, expected 119")
        if result != 0:
            return None
        port, _type, _proto, high, low, _nlen = struct.unpack(">HBBHHH", _recv_exact(sock, 10))
        if not low <= VERSION <= high:
            raise EpmdError(
                f"node {name!r} speaks distribution versions {low}..{high}, expected 6"
            )
        return int(port)
    except OSError as e:
        raise EpmdError(f"EPMD on {host}:{eport} failed: {e}") from e
    finally:
        sock.close()


def names(host: str = "127.0.0.1", *, epmd_port: int | None = None) -> list[tuple[str, int]]:
    """The names registered with EPMD on ``host`` and their ports (NAMES_REQ)."""
    eport = resolve_port(epmd_port)
    sock = _connect(host, eport)
    try:
        sock.sendall(_request(bytes([NAMES_REQ])))
        _recv_exact(sock, 4)  # EPMD's own port
        data = bytearray()
        while chunk := sock.recv(4096):
            data += chunk
    except OSError as e:
        raise EpmdError(f"EPMD on {host}:{eport} failed: {e}") from e
    finally:
        sock.close()
    out = []
    for line in data.decode(errors="replace").splitlines():
        parts = line.split()
        # "name NAME at port PORT"
        if len(parts) == 5 and parts[0] == "name" and parts[3] == "port":
            out.append((parts[1], int(parts[4])))
    return out


# ------------------------------------------------------------------------ name server


@dataclass
class _Entry:
    port: int
    node_type: int
    high: int
    low: int
    extra: bytes
    creation: int


class NameServer:
    """An EPMD-compatible name server run by processes of the current node.

    ``NameServer.start(host, port)`` listens (port 0: any free port, see ``.port``);
    each registration is held by its client's connection and dropped when that closes.
    ``stop()`` closes the listening socket and every registration."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.port: int = sock.getsockname()[1]
        self.names: dict[str, _Entry] = {}
        self.conns: set[socket.socket] = set()
        self.stopped = False

    @classmethod
    def start(cls, host: str = "127.0.0.1", port: int = 4369) -> NameServer:
        """Listen on ``host:port`` and serve. Raises ``OSError`` when the port is taken."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(64)
        except OSError:
            sock.close()
            raise
        server = cls(sock)
        spawn(server._accept_loop)
        return server

    def stop(self) -> None:
        self.stopped = True
        try:
            self.sock.close()
        except OSError:
            pass
        for c in list(self.conns):
            try:
                c.close()
            except OSError:
                pass

    def _accept_loop(self) -> None:
        while not self.stopped:
            try:
                conn, _addr = self.sock.accept()
            except OSError:
                if self.stopped:
                    return
                continue
            spawn(self._serve, conn)

    def _serve(self, conn: socket.socket) -> None:
        self.conns.add(conn)
        registered: str | None = None
        try:
            conn.settimeout(_TIMEOUT)
            (n,) = struct.unpack(">H", _recv_exact(conn, 2))
            body = _recv_exact(conn, n) if n else b""
            if not body:
                return
            tag = body[0]
            if tag == ALIVE2_REQ:
                registered = self._alive2(conn, body)
                if registered is not None:
                    conn.settimeout(None)
                    while conn.recv(4096):  # held until the node closes it
                        pass
            elif tag == PORT_PLEASE2_REQ:
                self._port_please(conn, body[1:].decode(errors="replace"))
            elif tag == NAMES_REQ:
                lines = "".join(
                    f"name {name} at port {e.port}\n" for name, e in self.names.items()
                )
                conn.sendall(struct.pack(">I", self.port) + lines.encode())
            else:
                log.info("name server: unknown request tag %d, connection closed", tag)
        except (OSError, EpmdError, struct.error, UnicodeDecodeError) as e:
            log.debug("name server: connection ended: %s", e)
        finally:
            if registered is not None and self.names.get(registered) is not None:
                del self.names[registered]
            self.conns.discard(conn)
            try:
                conn.close()
            except OSError:
                pass

    def _alive2(self, conn: socket.socket, body: bytes) -> str | None:
        try:
            port, node_type, _proto, high, low, nlen = struct.unpack_from(">HBBHHH", body, 1)
            name = body[11 : 11 + nlen].decode()
            (elen,) = struct.unpack_from(">H", body, 11 + nlen)
            extra = body[13 + nlen : 13 + nlen + elen]
        except (struct.error, UnicodeDecodeError):
            conn.sendall(bytes([ALIVE2_X_RESP, 1]) + struct.pack(">I", 0))
            return None
        if not name or name in self.names:
            conn.sendall(bytes([ALIVE2_X_RESP, 1]) + struct.pack(">I", 0))
            return None
        creation = secrets.randbits(32) or 1
        self.names[name] = _Entry(port, node_type, high, low, extra, creation)
        conn.sendall(bytes([ALIVE2_X_RESP, 0]) + struct.pack(">I", creation))
        return name

    def _port_please(self, conn: socket.socket, name: str) -> None:
        e = self.names.get(name)
        if e is None:
            conn.sendall(bytes([PORT2_RESP, 1]))
            return
        raw = name.encode()
        conn.sendall(
            bytes([PORT2_RESP, 0])
            + struct.pack(">HBBHHH", e.port, e.node_type, PROTOCOL_TCP, e.high, e.low, len(raw))
            + raw
            + struct.pack(">H", len(e.extra))
            + e.extra
        )

