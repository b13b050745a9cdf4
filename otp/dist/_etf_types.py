"""The values of the External Term Format that have no Python counterpart, the codec's
errors, and the registry of classes that may cross between nodes.

- ``Atom``: an Erlang atom. A ``str`` subclass, so ``Atom("ok") == "ok"`` and a
  ``match`` on ``"ok"`` accepts it; the codec keeps the two apart (an atom crosses as an
  atom, a ``str`` as a binary).
- ``ImproperList(items, tail)``: a list whose last tail is not ``[]`` (``[alias|Ref]``).
- ``BitBinary(data, bits)``: a bitstring whose last byte holds ``bits`` bits (1..8).
- ``Port``, ``Fun``: opaque values received from BEAM nodes; they re-encode to the
  exact bytes they were decoded from, and nothing else can be done with them here.
- ``ForeignException``: an exception whose class this node does not know.
- ``register_type(cls)``: let a frozen dataclass, a NamedTuple or an exception class
  cross by name.

>>> Atom("ok") == "ok", repr(Atom("ok"))
(True, "Atom('ok')")
>>> ImproperList([1, 2], 3)
ImproperList(items=(1, 2), tail=3)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from otp.errors import BadArg, OTPError

__all__ = [
    "Atom",
    "BadTerm",
    "BitBinary",
    "ForeignException",
    "Fun",
    "ImproperList",
    "NotSendable",
    "Port",
    "UnknownType",
    "register_type",
    "registered_name",
]

_T = TypeVar("_T", bound=type)


class Atom(str):
    """An Erlang atom (``ok``, ``'EXIT'``, ``'Elixir.Foo'``): a ``str`` subclass.

    At most 255 characters (Erlang's limit). ``Atom("true")``, ``Atom("false")`` and
    ``Atom("nil")`` are the atoms of ``True``, ``False`` and ``None``: they arrive as
    those.

    >>> Atom("ok") == "ok"
    True
    >>> Atom("é").encode()
    b'\\xc3\\xa9'
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Atom({str.__repr__(self)})"


class BadTerm(OTPError, ValueError):
    """Bytes that are not a well-formed External Term Format term (truncated, an
    unknown tag, a length beyond the data, nested too deep...). The message says
    what was expected, what was found and at which byte offset."""


class UnknownType(BadTerm):
    """A record of a class registered on the sending node under a name no class here is
    registered under (``register_type`` runs on one node only, or versions differ)."""


class NotSendable(BadArg):
    """A value that cannot cross to another node (a function, a socket, an instance of
    an unregistered class, a mutable object...). The message names the value and where
    it sits in the term (``message[2].body``)."""

    def __init__(self, reason: str, value: Any = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.value = value
        self.steps: list[Any] = []  # innermost first, added while unwinding

    @property
    def path(self) -> str:
        out = "message"
        for step in reversed(self.steps):
            out += f"[{step!r}]" if not isinstance(step, str) else step
        return out

    def __str__(self) -> str:
        return f"cannot send {self.path}: {self.reason}"


@dataclasses.dataclass(frozen=True)
class ImproperList:
    """An Erlang list whose tail is not ``[]``: ``[1, 2 | 3]`` is
    ``ImproperList((1, 2), 3)``. ``items`` is never empty; ``tail`` is never a list
    (a list tail is folded into ``items``, which would make the list proper: then the
    constructor refuses).

    >>> ImproperList(["alias"], "ref").tail
    'ref'
    """

    items: tuple[Any, ...]
    tail: Any

    def __init__(self, items: Iterable[Any], tail: Any) -> None:
        items = tuple(items)
        while isinstance(tail, ImproperList | list):
            if isinstance(tail, list):
                raise BadArg(
                    f"ImproperList tail must not be a list, got {tail!r}: "
                    "a list tail makes a proper list (use a list)"
                )
            items += tail.items
            tail = tail.tail
        if not items:
            raise BadArg("ImproperList needs at least one item, got none")
        object.__setattr__(self, "items", items)
        object.__setattr__(self, "tail", tail)


@dataclasses.dataclass(frozen=True)
class BitBinary:
    """A bitstring that is not a whole number of bytes: ``data`` holds the bits, the
    last byte only its ``bits`` high bits (1..8).

    >>> BitBinary(b"\\x80", 1)
    BitBinary(data=b'\\x80', bits=1)
    """

    data: bytes
    bits: int

    def __post_init__(self) -> None:
        if not isinstance(self.data, bytes) or not self.data:
            raise BadArg(f"BitBinary data must be non-empty bytes, got {self.data!r}")
        if self.bits.__class__ is not int or not 1 <= self.bits <= 8:
            raise BadArg(f"BitBinary bits must be an int in 1..8, got {self.bits!r}")
        if self.bits < 8 and self.data[-1] & (0xFF >> self.bits):
            # The bits past the last one are not part of the value: zero them, as BEAM does.
            last = self.data[-1] & (0xFF << (8 - self.bits)) & 0xFF
            object.__setattr__(self, "data", self.data[:-1] + bytes((last,)))


@dataclasses.dataclass(frozen=True)
class Port:
    """An Erlang port from a BEAM node: opaque. It re-encodes to the bytes it came as."""

    node: str
    id: int
    creation: int
    raw: bytes = dataclasses.field(repr=False)


@dataclasses.dataclass(frozen=True)
class Fun:
    """An Erlang fun (``fun m:f/1`` or a closure) from a BEAM node: opaque. It
    re-encodes to the bytes it came as (it can be sent back, never called here)."""

    raw: bytes = dataclasses.field(repr=False)

    def __repr__(self) -> str:
        return f"Fun(<{len(self.raw)} bytes>)"


class ForeignException(Exception):
    """An exception (an exit reason, typically) whose class the receiving node does not
    know: ``type_name`` is the sender's ``module.QualName``, ``args`` and ``attrs`` its
    arguments and attributes."""

    def __init__(self, type_name: str, args: tuple[Any, ...], attrs: dict[str, Any]) -> None:
        super().__init__(*args)
        self.type_name = type_name
        self.attrs = attrs

    def __repr__(self) -> str:
        return f"ForeignException({self.type_name!r}, {self.args!r})"


# --- the registry ---------------------------------------------------------------------

# name -> class, class -> name. Process-wide, like pickle's class lookup: a class is the
# same code whichever node of this OS process sends it.
_BY_NAME: dict[str, type] = {}
_BY_CLASS: dict[type, str] = {}
# Hooks the codec installs to drop its per-class caches when the registry changes.
_on_change: list[Callable[[], None]] = []


def register_type(cls: _T | None = None, *, name: str | None = None) -> Any:
    """Let instances of ``cls`` cross between nodes, named ``name`` on the wire
    (default ``module.QualName``). Usable as a decorator, with or without arguments.

    ``cls`` is a frozen dataclass, a ``typing.NamedTuple`` or an exception class.
    Both nodes register the same class under the same name (the same code does it).

    >>> import dataclasses
    >>> @register_type(name="example.Point")
    ... @dataclasses.dataclass(frozen=True)
    ... class Point:
    ...     x: int
    ...     y: int
    >>> registered_name(Point)
    'example.Point'
    """
    if cls is None:
        return lambda c: register_type(c, name=name)
    if not isinstance(cls, type):
        raise BadArg(f"register_type expects a class, got {cls!r}")
    if dataclasses.is_dataclass(cls):
        if not cls.__dataclass_params__.frozen:  # type: ignore[attr-defined]
            raise BadArg(
                f"register_type: {cls.__qualname__} is a non-frozen dataclass; "
                "declare it @dataclass(frozen=True) (messages are immutable)"
            )
    elif not (_is_namedtuple(cls) or issubclass(cls, BaseException)):
        raise BadArg(
            f"register_type expects a frozen dataclass, a NamedTuple or an exception "
            f"class, got {cls.__qualname__}"
        )
    wire = name if name is not None else f"{cls.__module__}.{cls.__qualname__}"
    if not isinstance(wire, str) or not 0 < len(wire) <= 255:
        raise BadArg(f"register_type: the name must be a str of 1..255 characters, got {wire!r}")
    if wire.startswith("$otpy"):
        raise BadArg(f"register_type: names starting with '$otpy' are reserved, got {wire!r}")
    other = _BY_NAME.get(wire)
    if other is not None and other is not cls:
        raise BadArg(
            f"register_type: the name {wire!r} is taken by {other.__module__}."
            f"{other.__qualname__}; pass name=... to register {cls.__qualname__}"
        )
    old = _BY_CLASS.get(cls)
    if old is not None and old != wire:
        del _BY_NAME[old]
    _BY_NAME[wire] = cls
    _BY_CLASS[cls] = wire
    for hook in _on_change:
        hook()
    return cls


def registered_name(cls: type) -> str | None:
    """The wire name of a registered class, or None."""
    return _BY_CLASS.get(cls)


def _is_namedtuple(cls: type) -> bool:
    return issubclass(cls, tuple) and hasattr(cls, "_fields")
