"""Private: the gen call protocol across nodes (``gen:do_call`` to another node,
``multi_call``, ``abcast``) and the answer to a caller of another node.

A call to a process of another node (a pid whose node is not this one, or
``(name, node)``) takes this slow path; a local call never comes here. It is OTP 24's
protocol, the one BEAM nodes speak, so an otpy caller can call an Erlang
``gen_server`` and an Erlang caller an otpy ``GenServer``:

1. monitor the server (``Down(..., "noconnection")`` if its node cannot be reached);
2. make a reply alias ``A`` (deactivated by its first message) and send
   ``('$gen_call', (caller_pid, [alias | A]), request)``;
3. wait for ``([alias | A], reply)`` through the alias, the monitor's ``Down`` or the
   deadline. A reply after the deadline goes to an inactive alias and is dropped.

Answering (``reply``): a ``From`` whose tag is ``[alias | A]`` (``ImproperList``) is
answered by sending ``(tag, reply)`` to the alias ``A`` (Erlang's ``gen:reply``); a
plain ``Ref`` tag of another node (a pre-OTP 24 caller) by sending ``(tag, reply)`` to
the caller's pid.
"""

from __future__ import annotations

from typing import Any

from otp.dist._etf_types import Atom, ImproperList
from otp.errors import BadArg, CallError, CallTimeout, NoProc, NotInProcess
from otp.lowlevel import Process, current_node, getcurrent
from otp.lowlevel import remote as _remote
from otp.process import (
    Down,
    Pid,
    Ref,
    alias,
    demonitor,
    monitor,
    now,
    receive,
    send,
    unalias,
)

ALIAS = Atom("alias")
_TIMEOUT: Any = object()
_LABELS = {label: Atom(label) for label in ("$gen_call", "$system")}


def is_remote(server: Any, node_name: str) -> bool:
    """Whether ``server`` (a Pid or ``(name, node)``) lives on another node."""
    if server.__class__ is Pid:
        return bool(server.node != node_name)
    return server.__class__ is tuple and len(server) == 2 and server[1] != node_name


def _tagged(a: Ref) -> Any:
    return ImproperList((ALIAS,), a)


def _answers(a: Ref, mref: Ref) -> Any:
    def match(m: Any) -> bool:
        c = m.__class__
        if c is tuple:
            if len(m) == 2:
                t = m[0]
                return t.__class__ is ImproperList and t.tail == a
            return False
        return c is Down and m.ref is mref

    return match


def _send_quietly(dest: Any, msg: Any) -> None:
    try:
        send(dest, msg)
    except NoProc:
        pass  # (name, this node) that nobody holds: the monitor says noproc


def start_request(label: str, server: Any, request: Any) -> tuple[Ref, Ref]:
    """``send_request`` to a server of another node: ``(monitor ref, alias)``; the
    answer is ``([alias | alias], reply)`` through the alias, or the monitor's Down."""
    a, mref = _start(label, server, request)
    return mref, a


def _start(label: str, server: Any, request: Any) -> tuple[Ref, Ref]:
    """Steps 1-2: monitor, alias, send; returns ``(alias, monitor ref)``."""
    me = getcurrent()
    if me.__class__ is not Process:
        raise NotInProcess("call must be made from inside a process")
    mref = monitor(server)
    a = alias(reply=True)
    _remote(me.node).export_alias(me, a)
    tag = _LABELS.get(label)
    if tag is None:
        tag = Atom(label)
    _send_quietly(server, (tag, (me.pid, _tagged(a)), request))
    return a, mref


def _forget(a: Ref) -> None:
    unalias(a)
    r = current_node().remote
    if r is not None:
        r.aliases.pop(a.id, None)


def call(label: str, server: Any, request: Any, timeout: float | None) -> Any:
    """A call to a server of another node (see the module docstring)."""
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout < 0
    ):
        raise BadArg(f"call timeout must be seconds >= 0 or None, got {timeout!r}")
    a, mref = _start(label, server, request)
    msg = receive(_answers(a, mref), timeout, default=_TIMEOUT)
    if msg is _TIMEOUT:
        _forget(a)
        demonitor(mref, flush=True)
        raise CallTimeout(server, request, timeout)
    if msg.__class__ is Down:
        _forget(a)
        raise CallError(msg.reason, server, request)
    demonitor(mref, flush=True)
    return msg[1]


def multi_call(
    nodes: list[str], name: str, request: Any, timeout: float | None
) -> tuple[list[tuple[str, Any]], list[str]]:
    """Call ``name`` on every node of ``nodes`` at once; ``(replies, bad_nodes)``:
    ``replies`` the ``(node, reply)`` pairs in the order of ``nodes``, ``bad_nodes``
    those with no server, no connection or no reply within ``timeout``."""
    if not isinstance(name, str) or not name:
        raise BadArg(f"multi_call expects a registered name (str), got {name!r}")
    pending: dict[int, tuple[str, Ref, Ref]] = {}
    order = list(nodes)
    for n in order:
        if not isinstance(n, str) or "@" not in n:
            raise BadArg(f"multi_call expects node names 'name@host', got {n!r}")
    for n in order:
        a, mref = _start("$gen_call", (name, n), request)
        pending[a.id] = (n, a, mref)
    got: dict[str, Any] = {}
    bad: set[str] = set()
    deadline = None if timeout is None else now() + timeout

    def match(m: Any) -> bool:
        c = m.__class__
        if c is tuple and len(m) == 2:
            t = m[0]
            return (
                t.__class__ is ImproperList
                and t.tail.__class__ is Ref
                and t.tail.id in pending
                and pending[t.tail.id][1] == t.tail
            )
        return c is Down and any(m.ref is e[2] for e in pending.values())

    while pending:
        left = None if deadline is None else max(0.0, deadline - now())
        msg = receive(match, left, default=_TIMEOUT)
        if msg is _TIMEOUT:
            break
        if msg.__class__ is Down:
            aid = next(k for k, e in pending.items() if e[2] is msg.ref)
            n, a, _ = pending.pop(aid)
            _forget(a)
            bad.add(n)
        else:
            n, a, mref = pending.pop(msg[0].tail.id)
            demonitor(mref, flush=True)
            _forget(a)
            got[n] = msg[1]
    for n, a, mref in pending.values():
        _forget(a)
        demonitor(mref, flush=True)
        bad.add(n)
    replies = [(n, got[n]) for n in dict.fromkeys(order) if n in got]
    return replies, [n for n in dict.fromkeys(order) if n in bad]


def abcast(nodes: list[str], name: str, request: Any) -> None:
    """Cast ``request`` to ``name`` on every node of ``nodes`` (dropped where there is
    no such server)."""
    if not isinstance(name, str) or not name:
        raise BadArg(f"abcast expects a registered name (str), got {name!r}")
    msg = (Atom("$gen_cast"), request)
    for n in nodes:
        _send_quietly((name, n), msg)


def reply(from_: Any, value: Any) -> bool:
    """Answer a caller of another node (see the module docstring); False if ``from_``
    is not such a caller's."""
    tag = from_[1]
    if tag.__class__ is ImproperList:
        target = tag.tail
        if target.__class__ is not Ref:
            return False
        send(target, (tag, value))
        return True
    if tag.__class__ is Ref and from_[0].__class__ is Pid:
        send(from_[0], (tag, value))
        return True
    return False
