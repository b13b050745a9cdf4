"""The chat wire protocol: length-prefixed msgpack frames, requests, replies, errors.

``docs/protocol.md`` is the specification; this module is its codec, shared by the
server (``chat.connection``) and the client library (``chat.client``)::

    from chat.protocol import FrameReader, encode, validate_request

    data = encode({"t": "ping", "id": 1})        # 4-byte big-endian length + msgpack map
    reader = FrameReader(max_frame=65536)
    reader.feed(data)
    body = reader.next_body()                     # the bytes of one frame (or None)
    req = validate_request(decode_body(body))     # Request(type="ping", id=1, fields={})

Failure semantics:

- ``FrameReader`` (a client's reader of the server's stream) checks the announced
  length *before* buffering the body: a length of 0 (the server never sends one) or
  above ``max_frame`` raises ``FrameTooLarge`` at once (the stream cannot be
  trusted after that; close it). The reader never holds more than one frame plus one
  header of unread bytes beyond what was fed in one call.
- ``decode_body`` raises ``ProtocolError("bad_frame")`` for bytes that are not exactly
  one msgpack map with a string ``t`` (ext types refused; with a key twice, the last
  wins), and ``ProtocolError("bad_request")`` *with the request's id* for a map that
  holds an array or map of more than ``max_items`` items (at any depth): every request
  with an id is answered.
- ``validate_request`` raises ``ProtocolError`` with code ``bad_request`` naming the
  field, what was expected and what was given, or ``unknown_type``; the error carries
  the request id when the id itself was valid, so the server can answer it.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping
from typing import Any, NamedTuple

import msgpack

__all__ = [
    "CLOSING_CODES",
    "DEFAULT_MAX_FRAME",
    "HEADER",
    "PROTOCOL_VERSION",
    "PROTOCOL_VERSIONS",
    "REQUESTS",
    "UNANSWERED",
    "FrameReader",
    "FrameTooLarge",
    "ProtocolError",
    "Request",
    "decode_body",
    "encode",
    "error_frame",
    "is_phone",
    "validate_request",
]

PROTOCOL_VERSION = 2
#: versions the server speaks (a client says its version in ``hello``). Version 2 adds
#: acks without an ``id``, which are not answered (docs/protocol.md).
PROTOCOL_VERSIONS = (1, 2)
DEFAULT_MAX_FRAME = 64 * 1024
HEADER = struct.Struct(">I")
MAX_ID = 2**63

#: Error codes after which the server closes the connection.
CLOSING_CODES = frozenset({
    "frame_too_large", "too_many_bad_frames", "hello_required", "unsupported_version",
    "idle_timeout", "slow_reader", "replaced", "shutdown",
})

_PHONE = re.compile(r"\+[1-9][0-9]{6,14}")


def is_phone(value: Any) -> bool:
    """True for an E.164 number: ``+``, then 7 to 15 digits, the first not 0."""
    return isinstance(value, str) and _PHONE.fullmatch(value) is not None


class ProtocolError(Exception):
    """A request or frame the server refuses: ``code`` (see docs/protocol.md),
    a readable ``message``, the request ``id`` when known, and extra fields for the
    error frame (``retry_after``, ``attempts_left``)."""

    def __init__(self, code: str, message: str, id: int | None = None, **extra: Any) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.id = id
        self.extra = extra

    def frame(self) -> dict[str, Any]:
        return error_frame(self.code, self.message, self.id, **self.extra)


class FrameTooLarge(ProtocolError):
    def __init__(self, size: int, max_frame: int) -> None:
        super().__init__(
            "frame_too_large",
            f"expected a frame length between 1 and {max_frame} bytes, got {size}",
        )
        self.size = size


def error_frame(code: str, message: str, id: int | None = None, **extra: Any) -> dict[str, Any]:
    frame: dict[str, Any] = {"t": "error", "id": id, "code": code, "message": message}
    frame.update(extra)
    return frame


_packer_default = msgpack.Packer(use_bin_type=True)


def encode(msg: Mapping[str, Any]) -> bytes:
    """One frame: the 4-byte big-endian length, then ``msg`` as a msgpack map."""
    body = msgpack.packb(msg, use_bin_type=True)
    return HEADER.pack(len(body)) + body


def decode_body(body: bytes, max_items: int = 4096) -> dict[str, Any]:
    """Decode one frame body; ``ProtocolError("bad_frame")`` unless it is one map with a
    string ``t``. Container sizes are capped so a small frame cannot expand hugely."""
    try:
        msg = msgpack.unpackb(
            body, raw=False, strict_map_key=True, use_list=True,
            max_array_len=max_items, max_map_len=max_items, max_ext_len=0,
        )
    except Exception as e:  # msgpack raises several unrelated types for bad input
        if isinstance(e, ValueError) and "exceeds max_" in str(e):
            rid = _salvage_id(body)
            if rid is not None:
                raise ProtocolError("bad_request", f"expected arrays and maps of at most "
                                                   f"{max_items} items, got {e}", rid
                                    ) from None
        raise ProtocolError("bad_frame", f"expected one msgpack map, got undecodable "
                                         f"bytes ({type(e).__name__}: {e})") from None
    if not isinstance(msg, dict):
        raise ProtocolError("bad_frame", f"expected a msgpack map, got {type(msg).__name__}")
    t = msg.get("t")
    if not isinstance(t, str):
        raise ProtocolError("bad_frame", f"expected a string 't' (the frame type), got {t!r}")
    return msg


def _salvage_id(body: bytes) -> int | None:
    """The valid ``id`` of a map too large to decode (its values are skipped, never
    built), or None."""
    u = msgpack.Unpacker(raw=False, strict_map_key=True, max_array_len=64,
                         max_map_len=64, max_ext_len=0, max_buffer_size=len(body) or 1)
    try:
        u.feed(body)
        rid = None
        for _ in range(u.read_map_header()):
            k = u.unpack()
            if k == "id":
                rid = u.unpack()
            else:
                u.skip()
    except Exception:  # anything undecodable: no id to answer
        return None
    return rid if rid.__class__ is int and 0 <= rid < MAX_ID else None


class FrameReader:
    """Incremental frame splitter: ``feed(bytes)``, then ``next_body()`` until None.

    The length is checked as soon as the 4 header bytes are in: ``FrameTooLarge`` is
    raised before a byte of the body is kept.
    """

    __slots__ = ("_buf", "_need", "max_frame")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()
        self._need = -1  # body length of the frame being read, -1 while in the header

    def feed(self, data: bytes) -> None:
        self._buf += data

    def pending(self) -> int:
        """Bytes buffered and not yet returned."""
        return len(self._buf)

    def next_body(self) -> bytes | None:
        buf = self._buf
        if self._need < 0:
            if len(buf) < 4:
                return None
            (n,) = HEADER.unpack_from(buf)
            if n == 0 or n > self.max_frame:
                raise FrameTooLarge(n, self.max_frame)
            self._need = n
        n = self._need
        if len(buf) < 4 + n:
            return None
        body = bytes(buf[4 : 4 + n])
        del buf[: 4 + n]
        self._need = -1
        return body


# ---------------------------------------------------------------------------- requests


class Request(NamedTuple):
    """One validated request (a ``NamedTuple``: one is made per frame, and a frozen
    dataclass costs twice as much to build)."""

    type: str
    id: int | None  # None only for an unanswered request (an ``ack`` without an id)
    fields: dict[str, Any]


#: request types that may come without an ``id`` (protocol version 2): not answered
UNANSWERED = frozenset({"ack"})


_STR, _INT, _BIN, _BOOL = str, int, bytes, bool


class _ListOf:
    def __init__(self, item: type, max_len: int) -> None:
        self.item = item
        self.max_len = max_len


class _Optional:
    def __init__(self, kind: Any) -> None:
        self.kind = kind


#: request type -> {field: kind}. A kind is a type, a tuple of types, ``_ListOf`` or
#: ``_Optional``. Bounds beyond types (lengths, phone syntax) are checked by handlers.
REQUESTS: dict[str, dict[str, Any]] = {
    "hello": {"version": _INT, "client": _Optional(_STR)},
    "ping": {},
    "register": {"phone": _STR},
    "verify": {"phone": _STR, "pin": _STR},
    "login": {"phone": _STR, "key": _BIN},
    # (a media send's body is a map: kind "media"; chat.media checks the record)
    "send": {"to": _STR, "cmid": _STR, "body": (_STR, _BIN, dict), "kind": _Optional(_STR)},
    "ack": {"ids": _ListOf(int, 4096)},
    "read": {"from": _STR, "mids": _ListOf(str, 4096)},
    "presence": {"phones": _ListOf(str, 100)},
    "contacts": {"phones": _ListOf(str, 1000)},
    "privacy": {"hide_presence": _BOOL},
    "bye": {},
    "admin_provision": {"token": _STR, "phones": _ListOf(str, 1000)},
    "media_upload": {"size": _INT},
    "media_download": {"media": _STR},
    "media_ack": {"media": _ListOf(str, 256)},
}


def _kind_name(kind: Any) -> str:
    names = {str: "str", int: "int", bytes: "bin", bool: "bool", float: "float",
             dict: "map"}
    if isinstance(kind, tuple):
        return " or ".join(_kind_name(k) for k in kind)
    if isinstance(kind, _ListOf):
        return f"[{_kind_name(kind.item)}] (at most {kind.max_len})"
    if isinstance(kind, _Optional):
        return f"{_kind_name(kind.kind)} or nil"
    return names.get(kind, getattr(kind, "__name__", repr(kind)))


def _type_name(value: Any) -> str:
    names = {str: "str", int: "int", bytes: "bin", bool: "bool", float: "float",
             list: "array", dict: "map", type(None): "nil"}
    return names.get(type(value), type(value).__name__)


def _is(value: Any, kind: Any) -> bool:
    if isinstance(kind, tuple):
        return any(_is(value, k) for k in kind)
    if kind is int:
        return type(value) is int
    if kind is bool:
        return type(value) is bool
    return isinstance(value, kind)


def validate_request(msg: dict[str, Any]) -> Request:
    """Check a decoded frame against the request table; see the module docstring."""
    t = msg["t"]
    # The two requests of the message path, checked inline (the generic checks below
    # cost a few function calls per field and per list item); anything unusual falls
    # through to them, so errors read the same.
    if t == "ack":
        rid = msg.get("id")
        ids = msg.get("ids")
        if ((rid is None or (rid.__class__ is int and 0 <= rid < MAX_ID))
                and ids.__class__ is list and len(ids) <= 4096):
            for v in ids:  # (a loop: all() over a generator costs a resume per id)
                if v.__class__ is not int:
                    break
            else:
                return Request(t, rid, {"ids": tuple(ids)})
    elif t == "send":
        rid = msg.get("id")
        to, cmid, body = msg.get("to"), msg.get("cmid"), msg.get("body")
        if (rid.__class__ is int and 0 <= rid < MAX_ID and to.__class__ is str
                and cmid.__class__ is str
                and (body.__class__ is str or body.__class__ is bytes)
                and msg.get("kind") is None):
            return Request(t, rid, {"to": to, "cmid": cmid, "body": body, "kind": None})
    rid = msg.get("id")
    if rid is None and t in UNANSWERED:
        pass
    elif type(rid) is not int or not 0 <= rid < MAX_ID:
        raise ProtocolError("bad_request", f"field 'id': expected an int in [0, 2**63), "
                                           f"got {_type_name(rid)} {rid!r:.40}")
    spec = REQUESTS.get(t)
    if spec is None:
        raise ProtocolError("unknown_type", f"expected a request type among "
                                            f"{sorted(REQUESTS)}, got {t!r:.40}", rid)
    fields: dict[str, Any] = {}
    for name, kind in spec.items():
        if name not in msg or msg[name] is None:
            if isinstance(kind, _Optional):
                fields[name] = None
                continue
            raise ProtocolError("bad_request", f"{t}: field {name!r} is missing "
                                               f"(expected {_kind_name(kind)})", rid)
        value = msg[name]
        if isinstance(kind, _Optional):
            kind = kind.kind
        if isinstance(kind, _ListOf):
            ok = (type(value) is list and len(value) <= kind.max_len
                  and all(_is(v, kind.item) for v in value))
            if ok:
                value = tuple(value)
        else:
            ok = _is(value, kind)
        if not ok:
            raise ProtocolError(
                "bad_request",
                f"{t}: field {name!r}: expected {_kind_name(kind)}, "
                f"got {_type_name(value)} {value!r:.40}",
                rid,
            )
        fields[name] = value
    return Request(t, rid, fields)
