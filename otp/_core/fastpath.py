"""The two hottest process primitives, ``send`` and ``receive``, inlined against the
kernel's own structures (a mailbox, the run queue, the drain callback).

They live in the kernel so that nothing outside it touches a mailbox or the run queue:
``otp.process`` presents them, with the rest of the process API, through
``otp.lowlevel``. Each is what ``Node.deliver``/``Node.receive`` do, with the common
case inlined: a send to a local pid whose owner is not waiting is one ``append``; a
receive of the oldest message with one waiting is one ``popleft``. Everything else
goes to the Node's methods.
"""

from __future__ import annotations

from typing import Any

from otp._core.dist import check_name_node, remote
from otp._core.node import _MISSING, RUNNING, Node, Process, current_node, getcurrent
from otp._core.values import Pid, Ref, check_immutable
from otp.errors import BadArg, NoProc, NotInProcess

__all__ = ["receive", "send"]


def _not_in_process(what: str) -> None:
    p = getcurrent()
    if p.__class__ is not Process:
        raise NotInProcess(
            f"{what} must be called inside a process (spawn one, or use otp.run(main))"
        )


def _dead_caller() -> bool:
    """True if the caller is a process the runtime has declared dead (P17)."""
    cur = getcurrent()
    return cur.__class__ is Process and cur.dead


def send(dest: Pid | str | Ref | tuple[str, str], msg: Any) -> Any:
    """Send ``msg`` to a pid, a registered name, an alias or ``(name, node)``; returns
    ``msg``.

    Sending to a dead pid succeeds silently (nothing is delivered), and so does sending
    to an alias that is not active (see ``alias``). Sending to a name nobody holds
    raises ``NoProc``. Never blocks. From a process the runtime has declared dead (its
    ``finally`` blocks running) it does nothing (P17). A pid or alias of another node,
    or ``(name, node)``, goes through distribution (see ``otp.dist``): it is dropped
    silently if that node cannot be reached (or this node is not distributed), and so
    is a message to a name nobody holds there.
    """
    # RUNNING.send_node is the running node, or None while a dead process's greenlet
    # runs (or no node does): the slow path checks whether the sender is that one.
    node = RUNNING.send_node
    if node is None:
        node = current_node()
        if _dead_caller():
            return msg  # a dead process has no effects (P17)
    if dest.__class__ is Pid:
        p = node.procs.get(dest.id)
        if p is None or (p.pid is not dest and p.pid != dest):
            if dest.node != node.name:
                remote(node).send(_sender(), dest, msg)
            return msg
    elif isinstance(dest, str):
        p = node.names.get(dest)
        if p is None:
            raise NoProc(f"send to {dest!r}: no process is registered under that name", dest)
    elif dest.__class__ is Ref:
        if dest.owner is not None and dest.node == node.name:
            node.send_alias(dest.owner, dest.id, msg)
        else:
            _send_alias_other(node, dest, msg)
        return msg
    else:
        return _send_other(node, dest, msg)
    if node.strict:
        check_immutable(msg)
    # node.deliver, inlined: this is the hot path.
    mbox = p.mbox
    if mbox is None:
        node.deliver(p, msg)
        return msg
    mbox.append(msg)
    p.nin += 1
    if p.waiting and not p.queued:
        # node.wake, inlined
        p.queued = True
        node.runq.append(p)
        if not node._drain_scheduled:
            node._drain_scheduled = True
            node.hub.loop.run_callback(node._drain)
    return msg


def _sender() -> Pid | None:
    cur = getcurrent()
    return cur.pid if cur.__class__ is Process else None


def _send_other(node: Node, dest: Any, msg: Any) -> Any:
    # send's slow path: (name, node).
    if dest.__class__ is tuple:
        name, where = check_name_node(dest, "send")
        if where == node.name:
            p = node.names.get(name)
            if p is None:
                raise NoProc(
                    f"send to {dest!r}: no process is registered under that name", name
                )
            if node.strict:
                check_immutable(msg)
            node.deliver(p, msg)
        else:
            remote(node).reg_send(_sender(), name, where, msg)
        return msg
    raise BadArg(
        f"send expects a Pid, a registered name (str), an alias (Ref) or (name, node), "
        f"got {dest!r}"
    )


def _send_alias_other(node: Node, dest: Ref, msg: Any) -> None:
    # send's slow path: an alias of another node, or one of this node's that came back
    # from the wire (a decoded Ref knows no owner).
    if dest.node != node.name:
        remote(node).alias_send(_sender(), dest, msg)
    elif node.remote is not None:
        if node.strict:
            check_immutable(msg)
        node.remote.incoming_alias_send(dest, msg)


def receive(match: Any = None, timeout: float | None = None, *, default: Any = _MISSING) -> Any:
    """Take the oldest message that matches ``match`` from the mailbox, waiting if needed.

    ``match`` is ``None`` (any message), a class (``receive(Down)``), a tuple pattern
    whose elements are values, classes, nested tuples or ``ANY``
    (``receive(("reply", ref, ANY))``), or a predicate ``fn(msg) -> bool``. Messages
    that do not match stay in the mailbox, in order.

    ``timeout`` is in seconds (``None`` waits forever, ``0`` only looks at what is
    already there). It starts on entry and is not reset by arrivals that do not match.
    On timeout, returns ``default`` if one was given, else raises ``ReceiveTimeout``.
    """
    p = getcurrent()
    if p.__class__ is not Process:
        _not_in_process("receive")
    if match is None:
        mbox = p.mbox
        if not p.dead:
            if mbox:  # the oldest message is there: no wait, no deadline
                if timeout is None:
                    return mbox.popleft()
                c = timeout.__class__
                if (c is float or c is int) and timeout >= 0:  # (NaN is not >= 0)
                    return mbox.popleft()
            elif timeout == 0 and default is not _MISSING and (
                    timeout.__class__ is int or timeout.__class__ is float):
                return default  # a poll of an empty mailbox (a loop's "anything else?")
    return p.node.receive(p, match, timeout, default)
