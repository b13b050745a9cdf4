"""The External Term Format (ETF), both ways: what a Python value becomes on the wire
between nodes, and back. docs/distribution.md ("Value mapping") is the table.

``encode(term)`` gives the bytes of a term WITHOUT the leading version byte 131
(``term_to_binary`` form is ``b"\\x83" + encode(term)``); ``decode(data, pos)`` gives
``(term, position after it)``.

>>> encode((Atom("ok"), 1, "hi"))
b'h\\x03w\\x02oka\\x01m\\x00\\x00\\x00\\x02hi'
>>> decode(encode((Atom("ok"), 1, "hi")))
((Atom('ok'), 1, 'hi'), 15)
>>> decode(encode(b"raw", otpy=False), otpy=False)
(b'raw', 8)

Two mappings, chosen by ``otpy``:

- ``otpy=True`` (between otpy nodes): lossless, a value arrives ``==`` and of the same
  type. ``str`` is a binary; ``bytes`` is ``{'$otpy_bytes', Binary}``; a registered
  class is ``{'$otpy_rec', Name, Field1, ...}`` (decoding an unregistered Name raises
  ``UnknownType``); an exception is
  ``{'$otpy_exc', <<"module.Class">>, Args, Attrs}``. All of it is plain ETF, so a BEAM
  node relaying it passes it through unchanged.
- ``otpy=False`` (with BEAM nodes), Elixir's conventions: ``str`` and ``bytes`` are
  binaries, binaries arrive as ``bytes``; a registered class is a map with
  ``__struct__``; an exception is an Elixir exception struct. Every value ETF defines
  is encoded exactly as ``term_to_binary(T, [{minor_version, 2}])`` does.

Failure semantics: ``decode`` raises ``BadTerm`` (and nothing else) on malformed input,
checking every length against the bytes left, so a forged length never allocates;
``encode`` raises ``NotSendable`` naming the value and its place in the term.
"""

from __future__ import annotations

import builtins
import dataclasses
import operator
import os
import struct
import typing
import warnings
from collections.abc import Callable
from typing import Any

import otp.errors
from otp.dist._etf_types import (
    _BY_CLASS,
    _BY_NAME,
    Atom,
    BadTerm,
    BitBinary,
    ForeignException,
    Fun,
    ImproperList,
    NotSendable,
    Port,
    UnknownType,
    _on_change,
)
from otp.lowlevel import Down, Exit, Pid, Ref, TimerTimeout

__all__ = ["decode", "decode_reason", "encode", "encode_reason", "set_creation"]

# --- tags (erts/doc: erl_ext_dist) ----------------------------------------------------
NEW_FLOAT = 70
BIT_BINARY = 77
NEW_PID = 88
NEW_PORT = 89
NEWER_REFERENCE = 90
SMALL_INTEGER = 97
INTEGER = 98
FLOAT = 99
ATOM = 100
REFERENCE = 101
PORT = 102
PID = 103
SMALL_TUPLE = 104
LARGE_TUPLE = 105
NIL = 106
STRING = 107
LIST = 108
BINARY = 109
SMALL_BIG = 110
LARGE_BIG = 111
NEW_FUN = 112
EXPORT = 113
NEW_REFERENCE = 114
SMALL_ATOM = 115
MAP = 116
ATOM_UTF8 = 118
SMALL_ATOM_UTF8 = 119
V4_PORT = 120

_BYTES_TAG = "$otpy_bytes"
_REC_TAG = "$otpy_rec"
_RESERVED = frozenset({"$otpy_bytes", "$otpy_rec", "$otpy_exc"})
_EXC_TAG = "$otpy_exc"
_MAX_CACHE = 65536  # atoms remembered (a peer sending endless new atoms must not grow us)

_u8u32 = struct.Struct(">BI").pack
_i32 = struct.Struct(">Bi").pack
_f64 = struct.Struct(">Bd").pack
_u8u16 = struct.Struct(">BH").pack
_u32x3 = struct.Struct(">III").pack
_unpack_u32 = struct.Struct(">I").unpack_from
_unpack_u16 = struct.Struct(">H").unpack_from
_unpack_i32 = struct.Struct(">i").unpack_from
_unpack_f64 = struct.Struct(">d").unpack_from
_unpack_u32x3 = struct.Struct(">III").unpack_from
_unpack_u32x2 = struct.Struct(">II").unpack_from
_unpack_u64 = struct.Struct(">Q").unpack_from

_SMALL_INTS = [bytes((SMALL_INTEGER, i)) for i in range(256)]
_NIL = bytes((NIL,))

# Creation of each node whose references this process makes (see set_creation).
_CREATIONS: dict[str, int] = {}


def set_creation(node: str, creation: int) -> None:
    """Tell the codec the creation (incarnation number) of the node ``node`` running
    in this OS process: its references are encoded with it, and references coming back
    with it decode to the very ``Ref`` that was sent. Called when distribution starts."""
    _CREATIONS[node] = creation


# === encoding =========================================================================

_ATOM_BYTES: dict[str, bytes] = {}


def _atom_bytes(name: str) -> bytes:
    b = _ATOM_BYTES.get(name)
    if b is not None:
        return b
    if len(name) > 255:
        raise NotSendable(
            f"an atom has at most 255 characters, got {len(name)}: {name[:40]!r}...", name
        )
    raw = name.encode("utf-8")
    n = len(raw)
    b = bytes((SMALL_ATOM_UTF8, n)) + raw if n < 256 else _u8u16(ATOM_UTF8, n) + raw
    if len(_ATOM_BYTES) < _MAX_CACHE:
        _ATOM_BYTES[str(name)] = b
    return b


_TUPLE_HEADS = [bytes((SMALL_TUPLE, n)) for n in range(256)]
_PID_HEADS: dict[str, bytes] = {}


def _pid_head(node: str) -> bytes:
    head = bytes((NEW_PID,)) + _atom_bytes(node)
    if len(_PID_HEADS) < _MAX_CACHE:
        _PID_HEADS[node] = head
    return head


_TRUE = _atom_bytes("true")
_FALSE = _atom_bytes("false")
_NILATOM = _atom_bytes("nil")


def encode(term: Any, *, otpy: bool = True) -> bytes:
    """The ETF bytes of ``term`` (without the version byte 131).

    ``otpy=True``: the lossless mapping between otpy nodes; ``otpy=False``: the BEAM
    mapping. Raises ``NotSendable`` for what cannot cross (functions, sockets, sets,
    instances of unregistered classes, inf/nan...).

    >>> encode(256).hex()
    '6200000100'
    """
    out = bytearray()
    try:
        _enc(term, out, otpy)
    except RecursionError:
        raise NotSendable("the term is nested too deep to encode", term) from None
    return bytes(out)


def _enc(
    t: Any,
    out: bytearray,
    otpy: bool,
    str: type = str,
    int: type = int,
    tuple: type = tuple,
    _pack: Any = _u8u32,
    _small: list[bytes] = _SMALL_INTS,
) -> None:
    # The hot path: globals bound as defaults (local loads; positional defaults cost
    # nothing per call, keyword-only ones a dict lookup each), the common types
    # tested first by identity of the class (never isinstance: no subclass is allowed).
    cls = t.__class__
    if cls is str:
        b = t.encode()
        out += _pack(BINARY, len(b))
        out += b
    elif cls is int:
        if 0 <= t < 256:
            out += _small[t]
        else:
            _enc_int(t, out)
    elif cls is tuple:
        n = len(t)
        if n and t[0].__class__ is Atom and t[0] in _RESERVED and otpy:
            raise NotSendable(f"tuples headed by the atom {t[0]!r} are reserved for otpy's own "
                              "forms between nodes", t)  # fmt: skip
        out += _TUPLE_HEADS[n] if n < 256 else _pack(LARGE_TUPLE, n)
        _enc_items(t, out, otpy)
    elif cls is Atom:
        out += _ATOM_BYTES.get(t) or _atom_bytes(t)
    elif cls is Pid:
        out += _PID_HEADS.get(t.node) or _pid_head(t.node)
        pid_id = t.id
        if pid_id >> 64 or t.creation >> 32 or pid_id < 0:
            raise NotSendable(f"a pid's id and creation must fit the wire, got {t!r}", t)
        out += _u32x3(pid_id & 0xFFFFFFFF, pid_id >> 32, t.creation)
    elif cls is list:
        _enc_list(t, out, otpy)
    elif cls is dict:
        _enc_map(t, out, otpy)
    elif cls is bool:
        out += _TRUE if t else _FALSE
    elif t is None:
        out += _NILATOM
    elif cls is float:
        if t - t != 0.0:  # inf - inf and nan - nan are nan
            raise NotSendable(f"ETF has no infinity or NaN, got {t!r}", t)
        out += _f64(NEW_FLOAT, t)
    elif cls is bytes:
        if otpy:
            out += _BYTES_HEAD
        out += _u8u32(BINARY, len(t))
        out += t
    elif cls is Ref:
        _enc_ref(t, out)
    else:
        enc = _CLASS_ENC.get(cls)
        if enc is None:
            enc = _class_encoder(t)
        enc(t, out, otpy)


_BYTES_HEAD = bytes((SMALL_TUPLE, 2)) + _atom_bytes(_BYTES_TAG)


def _enc_int(t: int, out: bytearray) -> None:
    if -0x80000000 <= t <= 0x7FFFFFFF:
        out += _i32(INTEGER, t)
        return
    sign = 0
    if t < 0:
        sign, t = 1, -t
    n = (t.bit_length() + 7) >> 3
    if n < 256:
        out += bytes((SMALL_BIG, n, sign))
    else:
        out += _u8u32(LARGE_BIG, n)
        out.append(sign)
    out += t.to_bytes(n, "little")


def _enc_list(t: list[Any], out: bytearray, otpy: bool) -> None:
    n = len(t)
    if not n:
        out += _NIL
        return
    if n < 65536 and t[0].__class__ is int:
        # BEAM writes a list of bytes as STRING_EXT: so do we (same bytes both ways).
        try:
            raw = bytes(t)
        except (TypeError, ValueError):
            pass
        else:
            if all(e.__class__ is int for e in t):  # no bools, no int subclasses
                out += _u8u16(STRING, n)
                out += raw
                return
    out += _u8u32(LIST, n)
    _enc_items(t, out, otpy)
    out += _NIL


def _enc_items(
    items: Any,
    out: bytearray,
    otpy: bool,
    str: type = str,
    int: type = int,
    _pack: Any = _u8u32,
    _small: list[bytes] = _SMALL_INTS,
    _enc: Any = _enc,
) -> None:
    i = 0
    try:
        for i, e in enumerate(items):  # noqa: B007 - i names the element on failure
            c = e.__class__
            if c is str:
                b = e.encode()
                out += _pack(BINARY, len(b))
                out += b
            elif c is int and 0 <= e < 256:
                out += _small[e]
            else:
                _enc(e, out, otpy)
    except NotSendable as exc:
        exc.steps.append(i)
        raise


def _enc_improper(t: ImproperList, out: bytearray, otpy: bool) -> None:
    out += _u8u32(LIST, len(t.items))
    _enc_items(t.items, out, otpy)
    try:
        _enc(t.tail, out, otpy)
    except NotSendable as exc:
        exc.steps.append(".tail")
        raise


def _enc_map(t: dict[Any, Any], out: bytearray, otpy: bool) -> None:
    out += _u8u32(MAP, len(t))
    items: Any = t.items()
    if not otpy and 1 < len(t) <= 32:
        # term_to_binary writes a small map (<= 32 keys) in key order.
        items = _sorted_items(t)
    for k, v in items:
        try:
            _enc(k, out, otpy)
        except NotSendable as exc:
            exc.steps.append(f" key {k!r}")
            raise
        try:
            _enc(v, out, otpy)
        except NotSendable as exc:
            exc.steps.append(f"[{k!r}]")
            raise


def _enc_ref(t: Ref, out: bytearray) -> None:
    rid = t.id
    meta = rid >> 160
    if meta:  # a reference decoded from elsewhere: its word count and creation kept
        nwords, creation = meta & 7, meta >> 3
    else:
        nwords = 3 if rid < (1 << 96) else (rid.bit_length() + 31) >> 5
        creation = _CREATIONS.get(t.node, 0)
    if rid < 0 or creation >> 32 or not 0 < nwords <= 5:
        raise NotSendable(f"a reference's id must fit the wire, got {t!r}", t)
    out += _u8u16(NEWER_REFERENCE, nwords)
    out += _atom_bytes(t.node)
    out += creation.to_bytes(4, "big")
    for _ in range(nwords):
        out += (rid & 0xFFFFFFFF).to_bytes(4, "big")
        rid >>= 32


def _enc_bitbinary(t: BitBinary, out: bytearray, otpy: bool) -> None:
    out += _u8u32(BIT_BINARY, len(t.data))
    out.append(t.bits)
    out += t.data


def _enc_raw(t: Any, out: bytearray, otpy: bool) -> None:
    out += t.raw


def _exc_parts(exc: BaseException) -> tuple[Any, tuple[Any, ...], Any]:
    """An exception's name, args and attributes on the wire, before what cannot cross in
    them is replaced by its repr (the accelerator encodes exceptions from these)."""
    if isinstance(exc, ForeignException):
        return exc.type_name, exc.args, exc.attrs
    cls = exc.__class__
    name = _BY_CLASS.get(cls) or f"{cls.__module__}.{cls.__qualname__}"
    attrs = {k: v for k, v in getattr(exc, "__dict__", {}).items() if not k.startswith("_")}
    return name, exc.args, attrs


def _enc_exception(exc: BaseException, out: bytearray, otpy: bool) -> None:
    """An exception (an exit reason): its class name, args and attributes. What cannot
    cross in them is replaced by its repr (an exit reason must always be sendable)."""
    name, raw_args, attrs = _exc_parts(exc)
    args = tuple(_sendable_or_repr(a, otpy) for a in raw_args)
    attrs = {k: _sendable_or_repr(v, otpy) for k, v in attrs.items()}
    if otpy:
        out += bytes((SMALL_TUPLE, 4))
        out += _atom_bytes(_EXC_TAG)
        _enc_items((name, args, attrs), out, otpy)
        return
    # BEAM: an Elixir exception struct.
    message = str(exc) if not isinstance(exc, ForeignException) else str(exc.args)
    _enc_map(
        {Atom("__struct__"): Atom(name), Atom("__exception__"): True, Atom("message"): message},
        out,
        otpy,
    )


def _enc_tuple_head(n: int) -> bytes:
    return _TUPLE_HEADS[n] if n < 256 else _u8u32(LARGE_TUPLE, n)


def _enc_one(t: Any, otpy: bool) -> bytearray:
    """The bytes of one value by the Python encoder (the accelerator hands it what it
    does not encode itself)."""
    out = bytearray()
    _enc(t, out, otpy)
    return out


def _sorted_items(t: dict[Any, Any]) -> list[tuple[Any, Any]]:
    """A small map's pairs in the key order term_to_binary writes them."""
    return sorted(t.items(), key=_order_of_pair)


def _sendable_or_repr(v: Any, otpy: bool) -> Any:
    try:
        _enc(v, bytearray(), otpy)
    except NotSendable:
        return repr(v)
    return v


# Per-class encoders for everything that is not a builtin: registered records, the
# ETF-only values, exceptions. Built on first use; emptied when the registry changes.
_Enc = Callable[[Any, bytearray, bool], None]
_CLASS_ENC: dict[type, _Enc] = {}
# What a registered record's encoder works from, for the accelerator to encode records
# itself: class -> (head, get, map_head, keyed, name_bytes, names) of _record_encoder.
_RECORD_SPECS: dict[type, tuple[Any, ...]] = {}
_FIXED_ENC: dict[type, _Enc] = {
    ImproperList: _enc_improper,
    BitBinary: _enc_bitbinary,
    Port: _enc_raw,
    Fun: _enc_raw,
}


def _reset_class_encoders() -> None:
    _CLASS_ENC.clear()
    _CLASS_ENC.update(_FIXED_ENC)
    _RECORD_SPECS.clear()
    _RECORD_DEC.clear()
    _RECORD_DEC[_BYTES_TAG] = _dec_bytes_record
    _RECORD_DEC[_EXC_TAG] = _dec_exc_record
    _RECORD_DEC[_REC_TAG] = _dec_record
    _RECORD_BUILD.clear()
    _RECORD_CLASSES.clear()
    for name, cls in _BY_NAME.items():
        if not issubclass(cls, BaseException):
            _RECORD_BUILD[name] = _record_decoder(name, cls)
            _RECORD_CLASSES[name] = (cls, len(_field_names(cls)) + 2)


def _class_encoder(t: Any) -> _Enc:
    cls = t.__class__
    name = _BY_CLASS.get(cls)
    if isinstance(t, BaseException):
        enc: _Enc = _enc_exception
    elif name is not None:
        enc = _record_encoder(name, cls)
    else:
        raise NotSendable(_refusal(t), t)
    _CLASS_ENC[cls] = enc
    return enc


def _field_names(cls: type) -> tuple[str, ...]:
    if dataclasses.is_dataclass(cls):
        return tuple(f.name for f in dataclasses.fields(cls))
    return tuple(cls._fields)  # type: ignore[attr-defined]


def _record_encoder(name: str, cls: type) -> _Enc:
    names = _field_names(cls)
    n = len(names)
    if issubclass(cls, tuple):
        get: Callable[[Any], tuple[Any, ...]] = tuple
    elif n == 1:
        one = operator.attrgetter(names[0])
        get = lambda v: (one(v),)  # noqa: E731
    elif n == 0:
        get = lambda v: ()  # noqa: E731
    else:
        get = operator.attrgetter(*names)
    head = _enc_tuple_head(n + 2) + _atom_bytes(_REC_TAG) + _atom_bytes(name)
    # BEAM form: a map, its keys in term order (atoms sort by their text).
    keys = sorted([("__struct__", -1)] + [(f, i) for i, f in enumerate(names)],
                  key=lambda p: p[0].encode())  # fmt: skip
    map_head = _u8u32(MAP, n + 1)
    name_bytes = _atom_bytes(name)
    keyed = [(_atom_bytes(k), i) for k, i in keys]
    _RECORD_SPECS[cls] = (head, get, map_head, keyed, name_bytes, names)

    def encode_record(v: Any, out: bytearray, otpy: bool) -> None:
        values = get(v)
        try:
            if otpy:
                out += head
                _enc_items(values, out, otpy)
                return
            out += map_head
            for kb, i in keyed:
                out += kb
                if i < 0:
                    out += name_bytes
                else:
                    _enc_items((values[i],), out, otpy)
        except NotSendable as exc:
            exc.steps[-1] = "." + names[exc.steps[-1] if otpy else i]
            raise

    return encode_record


def _refusal(t: Any) -> str:
    cls = t.__class__
    what = f"{cls.__module__}.{cls.__qualname__}"
    if callable(t) and not isinstance(t, type):
        return f"a function or callable ({what}) cannot cross to another node"
    if dataclasses.is_dataclass(t) or (isinstance(t, tuple) and hasattr(t, "_fields")):
        return (
            f"{what} is not registered: decorate the class with otp.dist.register_type "
            "(the same on both nodes)"
        )
    hint = {set: "a tuple or list", frozenset: "a tuple or list", bytearray: "bytes",
            memoryview: "bytes"}.get(cls)  # fmt: skip
    if hint:
        return f"{what} has no wire form: send {hint} instead"
    if isinstance(t, str | int | float | bytes | tuple):
        return f"{what} (a subclass of a builtin) is not registered: send a plain value"
    return (
        f"{what} has no wire form (sockets, functions and mutable objects never cross); "
        "send plain data, or a frozen dataclass registered with otp.dist.register_type"
    )


# --- Erlang term order, for the keys of small maps in BEAM form -------------------------


def _order_of_pair(pair: tuple[Any, Any]) -> Any:
    return _order(pair[0])


def _order(t: Any) -> Any:
    cls = t.__class__
    if cls is int or cls is float:  # as map keys, every integer sorts before any float
        return (0, cls is float, t)
    if cls is Atom:
        return (1, t.encode())
    if cls is bool:
        return (1, b"true" if t else b"false")
    if t is None:
        return (1, b"nil")
    if cls is Ref:
        return (2, t.node, t.id)
    if cls is Fun:
        return (3, t.raw)
    if cls is Port:
        return (4, t.node, t.id)
    if cls is Pid:
        return (5, t.node, t.id)
    if cls is tuple:
        return (6, len(t), tuple(_order(e) for e in t))
    if cls is dict:
        return (7, len(t), tuple(sorted(_order(k) for k in t)))
    if cls is list:
        return (8, tuple(_order(e) for e in t))
    if cls is str:
        return (9, t.encode())
    if cls is bytes:
        return (9, t)
    if cls is BitBinary:
        return (9, t.data)
    return (10, repr(t))


# === decoding =========================================================================


def decode(data: bytes | bytearray | memoryview, pos: int = 0, *, otpy: bool = True
           ) -> tuple[Any, int]:  # fmt: skip
    """Decode the term at ``data[pos:]`` (no version byte): ``(term, position after it)``.

    Raises ``BadTerm`` on malformed input (and only that).

    >>> decode(bytes([97, 7]))
    (7, 2)
    """
    if data.__class__ is not bytes:
        data = bytes(data)
    try:
        return _dec(data, pos, otpy)
    except BadTerm:
        raise
    except (IndexError, struct.error):
        raise BadTerm(f"the term is truncated: {len(data) - pos} bytes from offset {pos}") from None
    except RecursionError:
        raise BadTerm("the term is nested too deep to decode") from None


def _short(d: bytes, end: int, pos: int) -> BadTerm:
    return BadTerm(f"the term is truncated at offset {pos}: needs {end - pos} more bytes "
                   f"up to {end}, only {len(d)} in all")  # fmt: skip


_ATOMS: dict[bytes, Any] = {b"true": True, b"false": False, b"nil": None}
_LATIN1_ATOMS: dict[bytes, Any] = {b"true": True, b"false": False, b"nil": None}


def _atom(raw: bytes, latin1: bool) -> Any:
    cache = _LATIN1_ATOMS if latin1 else _ATOMS
    a = cache.get(raw)
    if a is not None or raw in cache:
        return a
    try:
        a = Atom(raw.decode("latin-1" if latin1 else "utf-8"))
    except UnicodeDecodeError:
        raise BadTerm(f"an atom is not valid UTF-8: {raw[:40]!r}") from None
    if len(a) > 255:
        raise BadTerm(f"an atom has at most 255 characters, got {len(a)}")
    if len(cache) < _MAX_CACHE:
        cache[raw] = a
    return a


def _dec_node(d: bytes, pos: int) -> tuple[str, int]:
    node, pos = _dec(d, pos, False)
    if node.__class__ is not Atom:
        raise BadTerm(f"expected an atom for a node name at offset {pos}, got {node!r}")
    return node, pos


def _dec(
    d: bytes, pos: int, otpy: bool, _u32: Any = _unpack_u32, tuple: type = tuple
) -> tuple[Any, int]:
    tag = d[pos]
    if tag == BINARY:
        start = pos + 5
        end = start + _u32(d, pos + 1)[0]
        if end > len(d):
            raise _short(d, end, pos)
        b = d[start:end]
        if otpy:
            try:
                return b.decode(), end
            except UnicodeDecodeError:
                return b, end
        return b, end
    if tag == SMALL_INTEGER:
        return d[pos + 1], pos + 2
    if tag == SMALL_TUPLE or tag == LARGE_TUPLE:
        if tag == SMALL_TUPLE:
            n = d[pos + 1]
            pos += 2
        else:
            n = _unpack_u32(d, pos + 1)[0]
            pos += 5
            if n > len(d) - pos:
                raise BadTerm(f"a tuple of {n} elements at offset {pos - 5} is longer "
                              f"than the {len(d) - pos} bytes left")  # fmt: skip
        items: list[Any] = []
        append = items.append
        size = len(d)
        for _ in range(n):
            tag = d[pos]
            if tag == BINARY and otpy:
                start = pos + 5
                end = start + _u32(d, pos + 1)[0]
                if end > size:
                    raise _short(d, end, pos)
                try:
                    append(d[start:end].decode())
                except UnicodeDecodeError:
                    append(d[start:end])
                pos = end
            elif tag == SMALL_INTEGER:
                append(d[pos + 1])
                pos += 2
            elif tag == NEW_PID:
                v, pos = _dec_pid(d, pos)
                append(v)
            else:
                v, pos = _dec(d, pos, otpy)
                append(v)
        if otpy and n and items[0].__class__ is Atom:
            build = _RECORD_DEC.get(items[0])
            if build is not None:
                return build(items), pos
        return tuple(items), pos
    if tag == SMALL_ATOM_UTF8 or tag == SMALL_ATOM:
        end = pos + 2 + d[pos + 1]
        if end > len(d):
            raise _short(d, end, pos)
        return _atom(d[pos + 2 : end], tag == SMALL_ATOM), end
    if tag == INTEGER:
        return _unpack_i32(d, pos + 1)[0], pos + 5
    if tag == SMALL_BIG or tag == LARGE_BIG:
        if tag == SMALL_BIG:
            n, start = d[pos + 1], pos + 3
        else:
            n, start = _unpack_u32(d, pos + 1)[0], pos + 6
        end = start + n
        if end > len(d):
            raise _short(d, end, pos)
        sign = d[start - 1]
        if sign > 1:
            raise BadTerm(f"a big integer's sign byte is 0 or 1, got {sign} at offset {pos}")
        big = int.from_bytes(d[start:end], "little")
        return (-big if sign else big), end
    if tag == NIL:
        return [], pos + 1
    if tag == LIST:
        return _dec_list(d, pos, otpy)
    if tag == NEW_PID:
        return _dec_pid(d, pos)
    if tag == MAP:
        return _dec_map(d, pos, otpy)
    if tag == NEWER_REFERENCE or tag == NEW_REFERENCE:
        nwords = _unpack_u16(d, pos + 1)[0]
        node, p = _dec_node(d, pos + 3)
        if tag == NEWER_REFERENCE:
            creation = _unpack_u32(d, p)[0]
            p += 4
        else:
            creation = d[p]
            p += 1
        if not 0 < nwords <= 5:
            raise BadTerm(f"a reference has 1..5 words, got {nwords} at offset {pos}")
        end = p + 4 * nwords
        if end > len(d):
            raise _short(d, end, pos)
        rid = 0
        for i in range(nwords):
            rid |= _unpack_u32(d, p + 4 * i)[0] << (32 * i)
        if nwords != 3 or creation != _CREATIONS.get(node, 0) or tag != NEWER_REFERENCE:
            rid |= (nwords | creation << 3) << 160
        return Ref(node, rid), end
    if tag == NEW_FLOAT:
        return _unpack_f64(d, pos + 1)[0], pos + 9
    if tag == STRING:
        start = pos + 3
        end = start + _unpack_u16(d, pos + 1)[0]
        if end > len(d):
            raise _short(d, end, pos)
        return list(d[start:end]), end
    if tag == ATOM_UTF8 or tag == ATOM:
        end = pos + 3 + _unpack_u16(d, pos + 1)[0]
        if end > len(d):
            raise _short(d, end, pos)
        return _atom(d[pos + 3 : end], tag == ATOM), end
    if tag == BIT_BINARY:
        start = pos + 6
        end = start + _unpack_u32(d, pos + 1)[0]
        if end > len(d):
            raise _short(d, end, pos)
        bits = d[pos + 5]
        if start == end:
            if bits:
                raise BadTerm(f"an empty bitstring with {bits} bits at offset {pos}")
            return (b"" if not otpy else ""), end
        if not 1 <= bits <= 8:
            raise BadTerm(f"a bitstring's last byte holds 1..8 bits, got {bits} at offset {pos}")
        return BitBinary(d[start:end], bits), end
    if tag == PID:
        node, p = _dec_node(d, pos + 1)
        pid_id, serial = _unpack_u32x2(d, p)
        return Pid(node, pid_id | serial << 32, d[p + 8]), p + 9
    if tag == NEW_PORT or tag == PORT or tag == V4_PORT:
        node, p = _dec_node(d, pos + 1)
        if tag == V4_PORT:
            port_id, creation, end = _unpack_u64(d, p)[0], _unpack_u32(d, p + 8)[0], p + 12
        elif tag == NEW_PORT:
            port_id, creation, end = _unpack_u32(d, p)[0], _unpack_u32(d, p + 4)[0], p + 8
        else:
            port_id, creation, end = _unpack_u32(d, p)[0], d[p + 4], p + 5
        if end > len(d):
            raise _short(d, end, pos)
        return Port(node, port_id, creation, d[pos:end]), end
    if tag == REFERENCE:
        node, p = _dec_node(d, pos + 1)
        rid = _unpack_u32(d, p)[0] | (1 | d[p + 4] << 3) << 160
        return Ref(node, rid), p + 5
    if tag == NEW_FUN:
        end = pos + 1 + _unpack_u32(d, pos + 1)[0]
        if end > len(d) or end < pos + 5:
            raise _short(d, end, pos)
        return Fun(d[pos:end]), end
    if tag == EXPORT:
        p = pos + 1
        for _ in range(3):
            _, p = _dec(d, p, False)
        return Fun(d[pos:p]), p
    if tag == FLOAT:
        end = pos + 32
        if end > len(d):
            raise _short(d, end, pos)
        try:
            return float(d[pos + 1 : end].rstrip(b"\x00")), end
        except ValueError:
            raise BadTerm(f"FLOAT_EXT at offset {pos} is not a float") from None
    raise BadTerm(f"unknown or unsupported ETF tag {tag} at offset {pos}")


_PIDS: dict[bytes, Pid] = {}


def _dec_pid(d: bytes, pos: int) -> tuple[Pid, int]:
    # A pid arrives again and again (the same senders, the same recipients): its bytes
    # map to one shared immutable Pid, built once.
    if d[pos + 1] == SMALL_ATOM_UTF8:
        end = pos + 15 + d[pos + 2]
        raw = d[pos:end]
        pid = _PIDS.get(raw)
        if pid is not None:
            return pid, end
    node, p = _dec_node(d, pos + 1)
    pid_id, serial, creation = _unpack_u32x3(d, p)
    end = p + 12
    pid = Pid(node, pid_id | serial << 32, creation)
    if d[pos + 1] == SMALL_ATOM_UTF8:
        if len(_PIDS) >= _MAX_CACHE:
            _PIDS.clear()
        _PIDS[d[pos:end]] = pid
    return pid, end


def _dec_list(d: bytes, pos: int, otpy: bool) -> tuple[Any, int]:
    start = pos
    n = _unpack_u32(d, pos + 1)[0]
    pos += 5
    if n > len(d) - pos:
        raise BadTerm(f"a list of {n} elements at offset {pos - 5} is longer than the "
                      f"{len(d) - pos} bytes left")  # fmt: skip
    items: list[Any] = []
    append = items.append
    for _ in range(n):
        v, pos = _dec(d, pos, otpy)
        append(v)
    if d[pos] == NIL:
        return items, pos + 1
    tail, pos = _dec(d, pos, otpy)
    if tail.__class__ is list:  # a non-canonical [a | [b]]: still a proper list
        return items + tail, pos
    return _improper(items, tail, start), pos


def _improper(items: list[Any], tail: Any, start: int) -> ImproperList:
    if not items and tail.__class__ is not ImproperList:
        raise BadTerm(f"a list at offset {start} has no elements before its tail {tail!r}")
    return ImproperList(items, tail)


def _dec_map(d: bytes, pos: int, otpy: bool) -> tuple[Any, int]:
    n = _unpack_u32(d, pos + 1)[0]
    start = pos
    pos += 5
    if 2 * n > len(d) - pos:
        raise BadTerm(f"a map of {n} pairs at offset {start} is longer than the "
                      f"{len(d) - pos} bytes left")  # fmt: skip
    out: dict[Any, Any] = {}
    for _ in range(n):
        k, pos = _dec(d, pos, otpy)
        v, pos = _dec(d, pos, otpy)
        try:
            out[k] = v
        except TypeError:
            raise BadTerm(
                f"a map key at offset {start} has no Python form as a dict key "
                f"(unhashable {k.__class__.__name__}): {k!r}"
            ) from None
    if not otpy:
        struct_name = out.get("__struct__")
        if struct_name.__class__ is Atom:
            return _map_struct(out, struct_name), pos
    return out, pos


def _map_struct(out: dict[Any, Any], struct_name: Atom) -> Any:
    """A BEAM map with ``__struct__``: the registered class it names, an Elixir
    exception, or the map itself."""
    cls = _BY_NAME.get(struct_name)
    if cls is not None and not issubclass(cls, BaseException):
        return _build_struct(cls, struct_name, out)
    if out.get("__exception__") is True:
        return ForeignException(struct_name, (out.get("message"),), {})
    return out


_STR_FIELDS: dict[type, frozenset[str]] = {}


def _str_fields(cls: type) -> frozenset[str]:
    """The fields of ``cls`` annotated ``str``: a binary from BEAM (bytes) becomes a str
    there, the way an Elixir struct's string field is meant."""
    names = _STR_FIELDS.get(cls)
    if names is None:
        try:
            hints = typing.get_type_hints(cls)
        except Exception:  # unresolvable annotations: no conversion
            hints = {}
        names = frozenset(k for k, v in hints.items() if v is str)
        _STR_FIELDS[cls] = names
    return names


def _build_struct(cls: type, name: str, fields: dict[Any, Any]) -> Any:
    kwargs = {str(k): v for k, v in fields.items() if k != "__struct__"}
    for k in _str_fields(cls):
        v = kwargs.get(k)
        if v.__class__ is bytes:
            try:
                kwargs[k] = v.decode()
            except UnicodeDecodeError:
                raise BadTerm(
                    f"the {name} struct's field {k} is not UTF-8 text: {v[:40]!r}"
                ) from None
    try:
        return cls(**kwargs)
    except Exception as exc:  # the class's own checks: report as a bad term
        raise BadTerm(f"a {name} struct does not build a {cls.__qualname__}: {exc}") from None


# --- records (otpy form) ----------------------------------------------------------------

_Dec = Callable[[list[Any]], Any]
_RECORD_DEC: dict[str, _Dec] = {}  # the reserved tags heading a tuple
_RECORD_BUILD: dict[str, _Dec] = {}  # registered name -> builder from the record's items
# registered name -> (class, items in its record), for the accelerator to build records
_RECORD_CLASSES: dict[str, tuple[type, int]] = {}


def _dec_record(items: list[Any]) -> Any:
    name = items[1] if len(items) > 1 else None
    if name.__class__ is not Atom:
        return tuple(items)
    build = _RECORD_BUILD.get(name)
    if build is None:
        raise UnknownType(
            f"a {name} record arrived but no class is registered under that name here: "
            "register it with otp.dist.register_type on this node too"
        )
    return build(items)


def _record_decoder(name: str, cls: type) -> _Dec:
    n = len(_field_names(cls)) + 2

    def build(items: list[Any]) -> Any:
        if len(items) != n:
            raise BadTerm(f"a {name} record has {n - 2} fields, got {len(items) - 2}")
        try:
            return cls(*items[2:])
        except Exception as exc:  # the class's own checks
            raise BadTerm(f"a {name} record does not build a {cls.__qualname__}: {exc}") from None

    return build


def _dec_bytes_record(items: list[Any]) -> Any:
    if len(items) != 2:
        return tuple(items)
    b = items[1]
    return b.encode() if b.__class__ is str else b


def _dec_exc_record(items: list[Any]) -> Any:
    if len(items) != 4 or items[1].__class__ is not str or items[2].__class__ is not tuple:
        return tuple(items)
    name, args, attrs = items[1], items[2], items[3]
    if attrs.__class__ is not dict:
        attrs = {}
    cls = _exception_class(name)
    if cls is None:
        return ForeignException(name, args, attrs)
    exc = cls.__new__(cls, *args)
    exc.args = args
    try:
        exc.__dict__.update(attrs)
    except AttributeError:  # a builtin exception without a __dict__
        pass
    return exc


def _exception_class(name: str) -> type[BaseException] | None:
    cls = _BY_NAME.get(name)
    if cls is None:
        module, _, attr = name.rpartition(".")
        source = {"otp.errors": otp.errors, "builtins": builtins}.get(module)
        cls = getattr(source, attr, None) if source is not None else None
    if isinstance(cls, type) and issubclass(cls, BaseException):
        return cls
    return None


# --- exit reasons ------------------------------------------------------------------------

_REASON_ATOMS = frozenset(
    {"normal", "kill", "killed", "noproc", "noconnection", "shutdown", "timeout",
     "badarg", "calling_self", "nodedown"}
)  # fmt: skip


def encode_reason(reason: Any, *, otpy: bool = True) -> Any:
    """The term to put on the wire for an exit reason: for a BEAM peer, otpy's reason
    words (``"normal"``, ``"kill"``, ``"killed"``, ``"noproc"``, ``"noconnection"``,
    ``"shutdown"``...) become atoms, alone or heading a tuple (``("shutdown", x)``)."""
    if otpy:
        return reason
    if reason.__class__ is str and reason in _REASON_ATOMS:
        return Atom(reason)
    if reason.__class__ is tuple and reason and reason[0].__class__ is str \
            and reason[0] in _REASON_ATOMS:  # fmt: skip
        return (Atom(reason[0]), *reason[1:])
    return reason


def decode_reason(term: Any) -> Any:
    """The otpy exit reason for a received term: those atoms become plain strs."""
    if term.__class__ is Atom:
        return str(term) if term in _REASON_ATOMS else term
    if term.__class__ is tuple and term and term[0].__class__ is Atom and term[0] in _REASON_ATOMS:
        return (str(term[0]), *term[1:])
    return term


_on_change.append(_reset_class_encoders)
_reset_class_encoders()

# The kernel's own records cross too.
from otp.dist._etf_types import register_type as _register  # noqa: E402

for _cls, _name in ((Down, "otp.Down"), (Exit, "otp.Exit"), (TimerTimeout, "otp.TimerTimeout")):
    if _cls not in _BY_CLASS:
        _register(_cls, name=_name)


# --- the C accelerator -------------------------------------------------------------------
# otp/dist/_etf_accel.c: the same codec in C for the common values, handing the rest to
# the functions above (which stay the reference). Built when the package is installed
# with a C compiler; without it, or with OTPY_PURE_ETF=1 in the environment, the Python
# functions are the codec. ACCELERATED says which one ``encode``/``decode`` are.

def _py_encode_frame(otpy: bool, ctrl: Any, *payload: Any) -> bytes:
    """A distribution packet with its 4-byte length: 112 (pass-through), 131, the
    control term and, when given, 131 and the payload (the same bytes as the C one)."""
    enc = encode if ACCELERATED else _py_encode  # (the C one, when it lacks frames)
    parts = [b"", b"\x70\x83", enc(ctrl, otpy=otpy)]
    if payload:
        parts.append(b"\x83")
        parts.append(enc(payload[0], otpy=otpy))
    n = sum(len(p) for p in parts)
    parts[0] = n.to_bytes(4, "big")
    return b"".join(parts)


_py_encode = encode
_py_decode = decode
encode_frame: Callable[..., bytes] = _py_encode_frame
ACCELERATED = False
if os.environ.get("OTPY_PURE_ETF", "") in ("", "0"):
    try:
        from otp.dist import _etf_accel
    except ImportError:  # built without a compiler: the Python codec
        pass
    else:
        try:
            _etf_accel.setup(globals())
        except (RuntimeError, TypeError) as exc:  # a build older than this file
            warnings.warn(
                f"otp.dist._etf_accel does not fit otp.dist._etf ({exc}): using the Python "
                "codec; rebuild it (make venv, or pip install -e .)",
                RuntimeWarning,
                stacklevel=1,
            )
        else:
            encode = _etf_accel.encode
            decode = _etf_accel.decode
            encode_frame = getattr(_etf_accel, "encode_frame", _py_encode_frame)
            ACCELERATED = True
