"""Incoming distribution control messages, turned into local deliveries and signals.

A connection's one reader greenlet decodes each control message (a tuple whose first
element is the operation code, ``erl_dist_protocol``'s table) and its payload, and
calls ``dispatch(node, conn, ctrl, payload)`` in order, without blocking; when the
connection is lost (or could not be made) it calls ``connection_lost(node, peer)``.

What each operation does here (the kernel's ``Remote`` keeps the bookkeeping):

=====================================  ================================================
SEND, SEND_SENDER (and ``_TT``)         deliver the payload to a local pid (dropped if
                                        it is dead)
REG_SEND (and ``_TT``)                  deliver to a registered name (dropped if free)
ALIAS_SEND (and ``_TT``)                deliver through an alias if it is active (P18)
LINK                                    link; a dead target answers EXIT ``noproc``
UNLINK_ID / UNLINK                      unlink, answer UNLINK_ID_ACK
UNLINK_ID_ACK                           nothing (this node unlinks at once)
EXIT, PAYLOAD_EXIT (and ``_TT``)        a link broke: the linked local process gets
                                        the exit signal (if still linked)
EXIT2, PAYLOAD_EXIT2 (and ``_TT``)      ``exit(pid, reason)`` from a remote process
MONITOR_P / DEMONITOR_P                 a remote process (de)monitors a local one;
                                        a dead target answers MONITOR_P_EXIT ``noproc``
MONITOR_P_EXIT, PAYLOAD_MONITOR_P_EXIT  the watcher here gets ``Down(ref, target,
                                        reason)``
SPAWN_REQUEST (and ``_TT``)             ``erpc:execute_call``/``execute_cast`` run
                                        (``otp.rpc``'s rules); anything else refused:
                                        SPAWN_REPLY with ``notsup``
anything else                           logged and ignored
=====================================  ================================================

Ordering: every delivery is synchronous (into the mailbox, or the signal acted on)
before the next control message is read, so messages and signals between two
processes arrive in the order they were sent (docs/semantics.md P10).

Atoms: exit reasons and names arrive as ``Atom`` (a ``str`` subclass); a reason that
is an atom becomes a plain ``str`` here, so that ``"normal"``, ``"noproc"``,
``"killed"`` mean what they mean locally; going out, a ``str`` reason becomes an atom
(``reason_to_wire``), so that a BEAM node sees ``normal``, not ``<<"normal">>``.
"""

from __future__ import annotations

import logging
from typing import Any

from otp.dist._etf_types import Atom
from otp.lowlevel import Node, set_reason_to_wire
from otp.lowlevel import remote as _remote

log = logging.getLogger("otp.dist")

LINK = 1
SEND = 2
EXIT = 3
UNLINK = 4
REG_SEND = 6
GROUP_LEADER = 7
EXIT2 = 8
SEND_TT = 12
EXIT_TT = 13
REG_SEND_TT = 16
EXIT2_TT = 18
MONITOR_P = 19
DEMONITOR_P = 20
MONITOR_P_EXIT = 21
SEND_SENDER = 22
SEND_SENDER_TT = 23
PAYLOAD_EXIT = 24
PAYLOAD_EXIT_TT = 25
PAYLOAD_EXIT2 = 26
PAYLOAD_EXIT2_TT = 27
PAYLOAD_MONITOR_P_EXIT = 28
SPAWN_REQUEST = 29
SPAWN_REQUEST_TT = 30
SPAWN_REPLY = 31
ALIAS_SEND = 33
ALIAS_SEND_TT = 34
UNLINK_ID = 35
UNLINK_ID_ACK = 36

#: The value of ``payload`` when a control message has none.
NO_PAYLOAD: Any = object()


def reason_from_wire(reason: Any) -> Any:
    """An exit reason as the kernel sees it: an atom becomes a plain ``str``."""
    return str.__str__(reason) if reason.__class__ is Atom else reason


_WIRE_ATOMS: dict[str, Atom] = {}


def reason_to_wire(reason: Any) -> Any:
    """An exit reason as it crosses: a ``str`` becomes an atom (Erlang's reasons
    ``normal``, ``noproc``, ``killed``... are atoms)."""
    if reason.__class__ is str and len(reason) <= 255:
        a = _WIRE_ATOMS.get(reason)
        if a is None:
            a = Atom(reason)
            if len(_WIRE_ATOMS) < 4096:  # names and reasons: a small, stable set
                _WIRE_ATOMS[reason] = a
        return a
    return reason


def _name(x: Any) -> Any:
    return str.__str__(x) if isinstance(x, str) else x


def dispatch(node: Node, conn: Any, ctrl: tuple[Any, ...], payload: Any = NO_PAYLOAD) -> None:
    """Act on one control message from ``conn`` (in the connection's reader)."""
    r = _remote(node)
    try:
        op = ctrl[0]
        if op == SEND or op == SEND_TT or op == SEND_SENDER or op == SEND_SENDER_TT:
            r.incoming_send(ctrl[2], payload)
        elif op == REG_SEND or op == REG_SEND_TT:
            r.incoming_send(_name(ctrl[3]), payload)
        elif op == ALIAS_SEND or op == ALIAS_SEND_TT:
            r.incoming_alias_send(ctrl[2], payload)
        elif op == LINK:
            r.incoming_link(ctrl[1], ctrl[2])
        elif op == UNLINK_ID:
            r.incoming_unlink(ctrl[1], ctrl[2], ctrl[3])
        elif op == UNLINK:
            r.incoming_unlink(0, ctrl[1], ctrl[2])
        elif op == UNLINK_ID_ACK:
            pass  # this node removes its side of a link at once
        elif op == EXIT:
            r.incoming_exit(ctrl[1], ctrl[2], reason_from_wire(ctrl[3]))
        elif op == EXIT_TT:
            r.incoming_exit(ctrl[1], ctrl[2], reason_from_wire(ctrl[4]))
        elif op == PAYLOAD_EXIT or op == PAYLOAD_EXIT_TT:
            r.incoming_exit(ctrl[1], ctrl[2], reason_from_wire(payload))
        elif op == EXIT2:
            r.incoming_exit2(ctrl[1], ctrl[2], reason_from_wire(ctrl[3]))
        elif op == EXIT2_TT:
            r.incoming_exit2(ctrl[1], ctrl[2], reason_from_wire(ctrl[4]))
        elif op == PAYLOAD_EXIT2 or op == PAYLOAD_EXIT2_TT:
            r.incoming_exit2(ctrl[1], ctrl[2], reason_from_wire(payload))
        elif op == MONITOR_P:
            r.incoming_monitor(ctrl[1], _name(ctrl[2]), ctrl[3])
        elif op == DEMONITOR_P:
            r.incoming_demonitor(ctrl[3])
        elif op == MONITOR_P_EXIT:
            r.incoming_monitor_exit(ctrl[3], reason_from_wire(ctrl[4]))
        elif op == PAYLOAD_MONITOR_P_EXIT:
            r.incoming_monitor_exit(ctrl[3], reason_from_wire(payload))
        elif op == SPAWN_REQUEST or op == SPAWN_REQUEST_TT:
            _spawn_request(node, conn, ctrl, payload)
        elif op == GROUP_LEADER:
            pass  # otpy has no group leaders
        else:
            log.warning("ignored a distribution control message with operation %r: %r", op, ctrl)
    except (IndexError, TypeError, AttributeError) as e:
        # A malformed control tuple must not stop the reader (the rest still count).
        log.warning("ignored a malformed distribution control message %r: %s", ctrl, e)


_ERPC = Atom("erpc")
_EXECUTE_CALL = Atom("execute_call")
_EXECUTE_CAST = Atom("execute_cast")
_LINK, _MONITOR = Atom("link"), Atom("monitor")


def _spawn_request(node: Node, conn: Any, ctrl: tuple[Any, ...], payload: Any) -> None:
    """SPAWN_REQUEST: what Erlang's ``erpc`` (and so ``rpc:call``/``rpc:cast`` since
    OTP 23) sends is served: ``erpc:execute_call(Ref, M, F, A)`` runs ``M:F(A)`` under
    the rules of ``otp.rpc`` (its allow-list for ``erlang``, any module-level Python
    function) in a new process whose exit reason carries the answer, as ``erpc``'s own
    process does; ``execute_cast`` the same without an answer. Any other entry point is
    refused with ``notsup`` (otpy runs no Erlang code)."""
    req_id, from_pid, mfa = ctrl[1], ctrl[2], ctrl[4]
    opts = ctrl[5] if isinstance(ctrl[5], list) else []
    args = payload if isinstance(payload, list) else None
    entry = mfa[:2] if isinstance(mfa, tuple) and len(mfa) == 3 else None
    fn: Any = None
    if entry == (_ERPC, _EXECUTE_CALL) and args is not None and len(args) == 4:
        fn = _erpc_call
    elif entry == (_ERPC, _EXECUTE_CAST) and args is not None and len(args) == 3:
        fn = _erpc_cast
    if fn is None or args is None:
        _refuse_spawn(node, conn, ctrl)
        return
    p = node.spawn(fn, tuple(args), log_crash=False)
    r = _remote(node)
    flags = 0
    for opt in opts:
        if opt == _LINK:
            r.incoming_link(from_pid, p.pid)
            flags |= 1
        elif opt == _MONITOR or (isinstance(opt, tuple) and opt[:1] == (_MONITOR,)):
            r.incoming_monitor(from_pid, p.pid, req_id)
            flags |= 2
    conn.send_control((SPAWN_REPLY, req_id, from_pid, flags, p.pid))


def _erpc_answer(m: Any, f: Any, a: Any) -> tuple[Any, ...]:
    from otp.rpc import _apply_beam

    value = _apply_beam(m, f, a)
    if value.__class__ is tuple and len(value) == 2 and value[0] == Atom("badrpc"):
        why = value[1]
        if why.__class__ is tuple and len(why) == 2 and why[0] == Atom("EXIT"):
            why = why[1]
        if why.__class__ is tuple and why[:1] == (Atom("undef"),):
            return (Atom("error"), Atom("undef"), [])
        return (Atom("error"), why, [])
    return (Atom("return"), value)


def _erpc_call(ref: Any, m: Any, f: Any, a: Any) -> None:
    from otp.process import exit as _exit

    _exit((ref, *_erpc_answer(m, f, a)))


def _erpc_cast(m: Any, f: Any, a: Any) -> None:
    _erpc_answer(m, f, a)


def _refuse_spawn(node: Node, conn: Any, ctrl: tuple[Any, ...]) -> None:
    # SPAWN_REQUEST {29, ReqId, From, GroupLeader, {M, F, A}, Opts}: otpy runs no
    # Erlang code; answer SPAWN_REPLY {31, ReqId, From, Flags=0, notsup}.
    req_id, from_pid = ctrl[1], ctrl[2]
    log.warning(
        "refused a spawn request from %r: otpy nodes do not spawn Erlang functions (%r)",
        from_pid,
        ctrl[4] if len(ctrl) > 4 else None,
    )
    send_control = getattr(conn, "send_control", None)
    if send_control is not None:
        send_control((SPAWN_REPLY, req_id, from_pid, 0, Atom("notsup")))


def connection_lost(node: Node, peer: str) -> None:
    """The connection to ``peer`` is gone (or could not be made): every link across
    fires ``noconnection`` (an ``Exit`` message for a process that traps exits), every
    monitor across a ``Down(..., "noconnection")``, every node monitor of ``peer`` a
    ``NodeDown(peer)``."""
    r = node.remote
    if r is not None:
        r.connection_lost(_name(peer))


_GEN_LABELS = {"$gen_call": Atom("$gen_call"), "$gen_cast": Atom("$gen_cast")}


def message_to_wire(msg: Any) -> Any:
    """A message as it leaves for another node: the gen protocol's labels
    (``"$gen_call"``, ``"$gen_cast"``, plain strings here) become Erlang's atoms, so
    that a BEAM ``gen_server`` understands a call or cast by pid or ``(name, node)``."""
    if msg.__class__ is tuple and msg and msg[0].__class__ is str:
        label = _GEN_LABELS.get(msg[0])
        if label is not None:
            return (label, *msg[1:])
    return msg


set_reason_to_wire(reason_to_wire, message_to_wire)
