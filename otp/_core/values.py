"""Values the kernel hands out: ``Pid``, ``Ref``, the ``Down``/``Exit`` messages, receive
patterns, and the immutability check of strict mode.

Invariants: ``Pid`` and ``Ref`` are immutable and hashable, compare by value, and carry
the node name so they can later cross the wire unchanged.
"""

from __future__ import annotations

import _socket
import dataclasses
import datetime
import decimal
import enum
import fractions
import uuid
from collections.abc import Callable
from typing import Any, NamedTuple

from gevent.socket import socket as _gevent_socket

from otp.errors import BadArg

_SOCKETS = _socket.socket | _gevent_socket

# The name of the node running in this OS process, used only to print local pids
# as ``<0.id.creation>`` the way Erlang does. Set by the node when it starts.
local_node_name: str | None = None


class Pid:
    """A process identifier: an immutable value ``(node, id, creation)``.

    Prints like Erlang's ``<0.42.0>`` for a local process. Get pids from ``spawn`` or
    ``self()``; never construct them.
    """

    __slots__ = ("creation", "id", "node")

    node: str
    id: int
    creation: int

    def __init__(self, node: str, id: int, creation: int = 0) -> None:
        # Slot descriptors set the fields past the __setattr__ guard (cheaper than
        # object.__setattr__): a pid is made per spawn.
        _pid_node(self, node)
        _pid_id(self, id)
        _pid_creation(self, creation)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Pid is immutable")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not Pid:
            return NotImplemented
        return (
            self.id == other.id
            and self.node == other.node
            and self.creation == other.creation
        )

    def __hash__(self) -> int:
        return self.id  # equal pids have equal ids; collisions across nodes are harmless

    def __lt__(self, other: Pid) -> bool:
        return (self.node, self.id, self.creation) < (other.node, other.id, other.creation)

    def __repr__(self) -> str:
        if self.node == local_node_name:
            return f"<0.{self.id}.{self.creation}>"
        return f"<{self.node}.{self.id}.{self.creation}>"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Pid, (self.node, self.id, self.creation))


class Ref:
    """A unique reference (``make_ref``, monitors, timers). Immutable and hashable.

    ``owner`` is the pid that created a monitor reference (None otherwise); it is not
    part of the value (equality, hash, wire form).
    """

    __slots__ = ("id", "node", "owner")

    node: str
    id: int
    owner: Pid | None

    def __init__(self, node: str, id: int, owner: Pid | None = None) -> None:
        _ref_node(self, node)  # see Pid.__init__: a ref is made per call/monitor
        _ref_id(self, id)
        _ref_owner(self, owner)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Ref is immutable")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not Ref:
            return NotImplemented
        return self.id == other.id and self.node == other.node

    def __hash__(self) -> int:
        return self.id

    def __repr__(self) -> str:
        node = 0 if self.node == local_node_name else self.node
        return f"#Ref<{node}.{self.id}>"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Ref, (self.node, self.id))


# The slot descriptors' setters (``Pid.__dict__["id"].__set__``), used by __init__.
_pid_node = Pid.__dict__["node"].__set__
_pid_id = Pid.__dict__["id"].__set__
_pid_creation = Pid.__dict__["creation"].__set__
_ref_node = Ref.__dict__["node"].__set__
_ref_id = Ref.__dict__["id"].__set__
_ref_owner = Ref.__dict__["owner"].__set__


class Down(NamedTuple):
    """The message a monitor delivers once when the monitored process ends.

    ``match msg: case Down(ref=r, reason=reason): ...``
    """

    ref: Ref
    pid: Any  # the Pid, or the registered name that was monitored
    reason: Any


class Exit(NamedTuple):
    """An exit signal turned into a message, for a process that traps exits."""

    pid: Pid | None
    reason: Any


class TimerTimeout(NamedTuple):
    """The message of a ``start_timer`` timer (Erlang's ``{timeout, TimerRef, Msg}``):
    the timer's ref, so that the receiver can tell its timers apart (and a cancelled
    one's late message from a live one's), and the message given to ``start_timer``.

    ``match msg: case TimerTimeout(ref=r, msg="tick") if r == my_timer: ...``
    """

    ref: Ref
    msg: Any


class _Any:
    __slots__ = ()

    def __repr__(self) -> str:
        return "ANY"


#: Wildcard for tuple patterns in ``receive``: ``receive(("reply", ref, ANY))``.
ANY: Any = _Any()

_Matcher = Callable[[Any], bool]
_FunctionType = type(lambda: None)


def compile_pattern(pattern: Any) -> _Matcher:
    """Turn a receive pattern into a predicate.

    - a class matches instances of it (``receive(Down)``);
    - a tuple matches tuples of the same length, element by element: ``ANY`` matches
      anything, a class matches instances, a nested tuple recurses, anything else
      compares with ``==``;
    - any other callable is used as the predicate itself;
    - any other value matches messages equal to it.
    """
    if pattern.__class__ is _FunctionType:  # the common case: a predicate
        return pattern  # type: ignore[return-value]
    if isinstance(pattern, type):
        return lambda m: isinstance(m, pattern)
    if isinstance(pattern, tuple):
        parts = [_element(p) for p in pattern]
        n = len(parts)

        def match_tuple(m: Any) -> bool:
            if not isinstance(m, tuple) or len(m) != n:
                return False
            for check, item in zip(parts, m):  # noqa: B905 - lengths checked above
                if check is not None and not check(item):
                    return False
            return True

        return match_tuple
    if callable(pattern):
        return pattern
    return lambda m: m == pattern


def _element(p: Any) -> _Matcher | None:
    if p is ANY:
        return None
    if isinstance(p, type) or isinstance(p, tuple):
        return compile_pattern(p)
    return lambda m: m == p


# --- strict mode -----------------------------------------------------------------------

_ATOMIC: set[type] = {
    str, bytes, int, float, bool, complex, type(None), type(Ellipsis), range,
    Pid, Ref, _Any, decimal.Decimal, fractions.Fraction, uuid.UUID,
    datetime.datetime, datetime.date, datetime.time, datetime.timedelta, datetime.timezone,
}  # fmt: skip


def check_immutable(value: Any, what: str = "message") -> None:
    """Raise ``BadArg`` if ``value`` is, or contains, a mutable object.

    Immutable: str, bytes, numbers, None, Pid, Ref, enums, exceptions (treated as values),
    tuples (named tuples too) and frozensets of immutables, frozen dataclasses whose fields
    are immutable. Sockets pass too: like Erlang's ports they are handles (sending one
    hands over a resource, as ``otp.net``'s messages carry theirs), not shared data.
    The error names where the mutable part is (``message[1].items[0]``).

    Iterative (no depth limit: a cons-list of nested tuples of any length is fine), and
    the path to a part is only spelled out when that part is refused.
    """
    if value.__class__ in _ATOMIC:
        return
    atomic = _ATOMIC
    # Each entry: (value, where) with where = None for the root, else (parent_where, step).
    stack: list[tuple[Any, Any]] = [(value, None)]
    pop, push = stack.pop, stack.append
    while stack:
        v, where = pop()
        t = v.__class__
        if isinstance(v, tuple):
            for i, item in enumerate(v):
                if item.__class__ not in atomic:
                    push((item, (where, i)))
            continue
        if isinstance(v, frozenset):
            for item in v:
                if item.__class__ not in atomic:
                    push((item, (where, " item")))
            continue
        if isinstance(v, enum.Enum | BaseException | type | _SOCKETS) or (
            callable(v) and _is_function(v)
        ):
            continue
        if dataclasses.is_dataclass(v):
            params = getattr(t, "__dataclass_params__", None)
            if params is None or not params.frozen:
                raise BadArg(
                    f"{_path(what, where)} must be immutable, got a non-frozen dataclass "
                    f"{t.__qualname__}: declare it @dataclass(frozen=True)"
                )
            for f in dataclasses.fields(v):
                item = getattr(v, f.name)
                if item.__class__ not in atomic:
                    push((item, (where, "." + f.name)))
            continue
        if isinstance(v, str | bytes | int | float):  # subclasses of the atomic types
            continue
        hint = {list: "a tuple", dict: "a tuple of pairs or a frozen dataclass",
                set: "a frozenset", bytearray: "bytes"}.get(t, "an immutable value")  # fmt: skip
        raise BadArg(
            f"{_path(what, where)} must be immutable (processes never share mutable state), "
            f"got {t.__qualname__}: send {hint} instead"
        )


def _path(what: str, where: Any) -> str:
    steps = []
    while where is not None:
        where, step = where
        steps.append(f"[{step}]" if step.__class__ is int else step)
    return what + "".join(reversed(steps))


def _is_function(value: Any) -> bool:
    import types

    return isinstance(value, types.FunctionType | types.BuiltinFunctionType | types.MethodType)
