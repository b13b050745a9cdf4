"""The distribution handshake, version 6 (OTP 23+), both roles, over a blocking socket.

Messages are framed by a 2-byte big-endian length. A is the node that connects
(initiator), B the one that accepts::

    A -> B  send_name       'N' Flags:64 Creation:32 NameLen:16 Name
    B -> A  status          's' "ok" | "ok_simultaneous" | "nok" | "not_allowed" | "alive"
   (A -> B  status reply    's' "true" | "false"          only after "alive")
    B -> A  send_challenge  'N' Flags:64 Challenge:32 Creation:32 NameLen:16 Name
    A -> B  challenge_reply 'r' Challenge:32 Digest:16       Digest = md5(cookie ++ B's challenge)
    B -> A  challenge_ack   'a' Digest:16                     Digest = md5(cookie ++ A's challenge)

Then both sides switch to 4-byte framing (``otp.dist._conn``). The functions here are
the steps; ``otp.dist._conn`` runs them in order and decides the status (simultaneous
connects, a peer already connected). Every malformed, truncated or unexpected message
raises ``HandshakeError``: the caller closes that socket and nothing else.

Flags: we offer what OTP 25 and 26 require (``MANDATORY``) plus monitors by name,
aliases and ``UNLINK_ID``; no atom cache (``DIST_HDR_ATOM_CACHE``) and no fragments
(packets are capped instead). We never set ``PUBLISHED``: to BEAM nodes an otpy node is
a hidden node (it takes no part in ``global``'s fully connected mesh).

How two otpy nodes know each other: flag bit 56 (``DFLAG_OTPY``), in the high half that
OTP 25/26 do not use and ignore; a BEAM node never sets it, so the codec's BEAM mapping is
used unless both sides offer it.

    >>> hex(MANDATORY)
    '0x1070f94'
"""

from __future__ import annotations

import hmac
import secrets
import socket
import struct
from dataclasses import dataclass

from otp.dist._cookie import digest
from otp.errors import OTPError

__all__ = [
    "DFLAG_OTPY",
    "FLAGS",
    "MANDATORY",
    "HandshakeError",
    "PeerName",
    "recv_challenge",
    "recv_challenge_ack",
    "recv_challenge_reply",
    "recv_name",
    "recv_status",
    "send_challenge",
    "send_challenge_ack",
    "send_challenge_reply",
    "send_name",
    "send_status",
]

DFLAG_PUBLISHED = 0x1
DFLAG_ATOM_CACHE = 0x2
DFLAG_EXTENDED_REFERENCES = 0x4
DFLAG_DIST_MONITOR = 0x8
DFLAG_FUN_TAGS = 0x10
DFLAG_DIST_MONITOR_NAME = 0x20
DFLAG_HIDDEN_ATOM_CACHE = 0x40
DFLAG_NEW_FUN_TAGS = 0x80
DFLAG_EXTENDED_PIDS_PORTS = 0x100
DFLAG_EXPORT_PTR_TAG = 0x200
DFLAG_BIT_BINARIES = 0x400
DFLAG_NEW_FLOATS = 0x800
DFLAG_UNICODE_IO = 0x1000
DFLAG_DIST_HDR_ATOM_CACHE = 0x2000
DFLAG_SMALL_ATOM_TAGS = 0x4000
DFLAG_UTF8_ATOMS = 0x10000
DFLAG_MAP_TAG = 0x20000
DFLAG_BIG_CREATION = 0x40000
DFLAG_SEND_SENDER = 0x80000
DFLAG_BIG_SEQTRACE_LABELS = 0x100000
DFLAG_EXIT_PAYLOAD = 0x400000
DFLAG_FRAGMENTS = 0x800000
DFLAG_HANDSHAKE_23 = 0x1000000
DFLAG_UNLINK_ID = 0x2000000
DFLAG_SPAWN = 1 << 32
DFLAG_NAME_ME = 1 << 33
DFLAG_V4_NC = 1 << 34
DFLAG_ALIAS = 1 << 35
DFLAG_OTPY = 1 << 56  # ours: both ends are otpy nodes (see the module doc)

# What OTP 25 requires of a peer (erts dist.h DFLAG_DIST_MANDATORY_25) ...
MANDATORY_25 = (
    DFLAG_EXTENDED_REFERENCES | DFLAG_FUN_TAGS | DFLAG_EXTENDED_PIDS_PORTS
    | DFLAG_UTF8_ATOMS | DFLAG_NEW_FUN_TAGS | DFLAG_BIG_CREATION | DFLAG_NEW_FLOATS
    | DFLAG_MAP_TAG | DFLAG_EXPORT_PTR_TAG | DFLAG_BIT_BINARIES | DFLAG_HANDSHAKE_23
)
# ... and OTP 26 adds these.
MANDATORY_26 = DFLAG_V4_NC | DFLAG_UNLINK_ID
MANDATORY = MANDATORY_25
# What we need of a peer ourselves (the encodings we read and write).
REQUIRED = (
    DFLAG_EXTENDED_REFERENCES | DFLAG_EXTENDED_PIDS_PORTS | DFLAG_UTF8_ATOMS
    | DFLAG_NEW_FLOATS | DFLAG_MAP_TAG | DFLAG_BIG_CREATION | DFLAG_HANDSHAKE_23
)
FLAGS = (
    MANDATORY_25 | MANDATORY_26 | DFLAG_DIST_MONITOR | DFLAG_DIST_MONITOR_NAME
    | DFLAG_ALIAS | DFLAG_SPAWN | DFLAG_OTPY
)

STATUSES = ("ok", "ok_simultaneous", "nok", "not_allowed", "alive")
MAX_NAME = 1023  # bytes of a node name we accept


class HandshakeError(OTPError):
    """The handshake failed: the peer sent something malformed, refused, or the cookie
    did not match. The connection is closed; nothing else is affected."""


@dataclass(frozen=True)
class PeerName:
    """What the peer said of itself in its name or challenge message."""

    name: str
    flags: int
    creation: int
    challenge: int = 0


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        try:
            chunk = sock.recv(n - len(buf))
        except OSError as e:
            raise HandshakeError(f"handshake: socket failed: {e}") from e
        if not chunk:
            raise HandshakeError(
                f"handshake: peer closed the connection ({len(buf)} of {n} bytes read)"
            )
        buf += chunk
    return bytes(buf)


def recv_packet(sock: socket.socket) -> bytes:
    (n,) = struct.unpack(">H", _recv_exact(sock, 2))
    if n == 0:
        raise HandshakeError("handshake: empty message")
    return _recv_exact(sock, n)


def send_packet(sock: socket.socket, body: bytes) -> None:
    try:
        sock.sendall(struct.pack(">H", len(body)) + body)
    except OSError as e:
        raise HandshakeError(f"handshake: socket failed: {e}") from e


def _name(raw: bytes, what: str) -> str:
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise HandshakeError(f"handshake: {what}: node name is not UTF-8: {raw[:40]!r}") from e
    local, sep, host = name.partition("@")
    if not sep or not local or not host or len(raw) > MAX_NAME:
        raise HandshakeError(f"handshake: {what}: expected a node name 'name@host', got {name!r}")
    return name


def check_flags(flags: int, peer: str) -> None:
    missing = REQUIRED & ~flags
    if missing:
        raise HandshakeError(
            f"handshake: node {peer} lacks required capability flags {missing:#x} "
            f"(offered {flags:#x})"
        )


# --- initiator (A) ----------------------------------------------------------------------


def send_name(sock: socket.socket, name: str, flags: int, creation: int) -> None:
    raw = name.encode()
    send_packet(sock, b"N" + struct.pack(">QIH", flags, creation, len(raw)) + raw)


def recv_status(sock: socket.socket) -> str:
    """B's status (or, for B, A's "true"/"false" reply to "alive")."""
    body = recv_packet(sock)
    if body[:1] != b"s":
        raise HandshakeError(f"handshake: expected a status message 's', got {body[:16]!r}")
    return body[1:].decode("ascii", errors="replace")


def recv_challenge(sock: socket.socket) -> PeerName:
    body = recv_packet(sock)
    if body[:1] != b"N" or len(body) < 19:
        raise HandshakeError(
            f"handshake: expected a version 6 challenge 'N' (19+ bytes), got {body[:16]!r}"
        )
    flags, challenge, creation, nlen = struct.unpack_from(">QIIH", body, 1)
    if 19 + nlen > len(body):
        raise HandshakeError("handshake: challenge: name longer than the message")
    name = _name(body[19 : 19 + nlen], "challenge")
    return PeerName(name, flags, creation, challenge)


def send_challenge_reply(sock: socket.socket, challenge: int, their_challenge: int,
                         cookie: str) -> None:
    send_packet(sock, b"r" + struct.pack(">I", challenge) + digest(their_challenge, cookie))


def recv_challenge_ack(sock: socket.socket, my_challenge: int, cookie: str, peer: str) -> None:
    body = recv_packet(sock)
    if body[:1] != b"a" or len(body) != 17:
        raise HandshakeError(
            f"handshake: expected a challenge ack 'a' (17 bytes), got {body[:8]!r}"
        )
    if not hmac.compare_digest(body[1:], digest(my_challenge, cookie)):
        raise HandshakeError(
            f"handshake: node {peer} answered with a wrong digest (cookies differ)"
        )


# --- acceptor (B) -----------------------------------------------------------------------


def recv_name(sock: socket.socket) -> PeerName:
    body = recv_packet(sock)
    if body[:1] != b"N" or len(body) < 15:
        raise HandshakeError(
            f"handshake: expected a version 6 send_name 'N' (15+ bytes), got {body[:16]!r}"
        )
    flags, creation, nlen = struct.unpack_from(">QIH", body, 1)
    if 15 + nlen > len(body):
        raise HandshakeError("handshake: send_name: name longer than the message")
    return PeerName(_name(body[15 : 15 + nlen], "send_name"), flags, creation)


def send_status(sock: socket.socket, status: str) -> None:
    send_packet(sock, b"s" + status.encode("ascii"))


def send_challenge(sock: socket.socket, name: str, flags: int, creation: int) -> int:
    """Send our challenge; returns it."""
    challenge = secrets.randbits(32)
    raw = name.encode()
    send_packet(sock, b"N" + struct.pack(">QIIH", flags, challenge, creation, len(raw)) + raw)
    return challenge


def recv_challenge_reply(sock: socket.socket, my_challenge: int, cookie: str,
                         peer: str) -> int:
    """A's reply; checks its digest; returns A's challenge."""
    body = recv_packet(sock)
    if body[:1] != b"r" or len(body) != 21:
        raise HandshakeError(
            f"handshake: expected a challenge reply 'r' (21 bytes), got {body[:8]!r}"
        )
    (their_challenge,) = struct.unpack_from(">I", body, 1)
    if not hmac.compare_digest(body[5:], digest(my_challenge, cookie)):
        raise HandshakeError(
            f"handshake: node {peer} answered with a wrong digest (cookies differ)"
        )
    return int(their_challenge)


def send_challenge_ack(sock: socket.socket, their_challenge: int, cookie: str) -> None:
    send_packet(sock, b"a" + digest(their_challenge, cookie))
