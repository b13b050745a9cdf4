"""Generic servers: a process that holds state and answers requests, OTP's ``gen_server``.

A server is a subclass of ``GenServer`` whose callbacks take the state and return the
next one; the process, its mailbox loop, calls with timeouts and crash reports come
from here. System messages (``otp.sys``: state, suspend, code change, debugging) are
served between two callbacks by ``otp.sys.handle_system_msg``, with the server's
``SystemCallbacks``; the code server records which class each server runs.

Example::

    import otp
    from otp import gen_server
    from otp.gen_server import GenServer, Ok, Reply, NoReply

    class Counter(GenServer):
        def init(self, start):
            return Ok(start)

        def handle_call(self, request, from_, state):
            match request:
                case "get":
                    return Reply(state, state)
            return super().handle_call(request, from_, state)   # stops with bad_call

        def handle_cast(self, request, state):
            match request:
                case ("add", n):
                    return NoReply(state + n)
            return super().handle_cast(request, state)

    def main():
        pid = gen_server.start_link(Counter, 0, name="counter")
        gen_server.cast("counter", ("add", 2))
        assert gen_server.call("counter", "get") == 2
        gen_server.stop(pid)

    otp.run(main)

Client API -> callback (as in OTP's gen_server.erl):

=======================================  ==================================================
``start`` / ``start_link``               ``init(arg)`` (in the new process; they return
                                         after it)
``call(server, request, timeout)``       ``handle_call(request, from_, state)``
``send_request(server, request)``        ``handle_call(request, from_, state)`` (the
                                         answer is awaited later: ``receive_response``)
``cast(server, request)``                ``handle_cast(request, state)``
any other message, ``"timeout"``         ``handle_info(msg, state)``
a ``Continue(arg)`` action               ``handle_continue(arg, state)``
``stop`` / a ``Stop`` return / a crash   ``terminate(reason, state)``
``otp.sys.change_code``                  ``code_change(old_vsn, state, extra)`` (new class)
crash report, ``otp.sys.get_status``     ``format_status(status)``
=======================================  ==================================================

Callback returns (anything else stops the server with ``("bad_return_value", value)``):

- ``init``: ``Ok(state, action=None)``, ``Ignore()`` (start returns None, the process
  ends ``normal``), ``Stop(reason)`` (the start fails with ``reason``).
- ``handle_call``: ``Reply(value, state, action=None)``, ``NoReply(state, action=None)``
  (answer later with ``reply(from_, value)``, from any process),
  ``Stop(reason, state, reply=value)`` (reply optional; sent after ``terminate``).
- ``handle_cast`` / ``handle_info`` / ``handle_continue``: ``NoReply(state,
  action=None)``, ``Stop(reason, state)``.
- ``code_change``: the new state. ``format_status``: the status dict, redacted.

Actions: ``Continue(arg)`` runs ``handle_continue`` before the next message;
``Timeout(seconds)`` delivers the info message ``"timeout"`` if no message at all
arrives within ``seconds`` (a system message restarts it); ``Hibernate()`` is a hint:
the server drops its reference to the last message and keeps going (there is no
separate heap to shrink).

The records are ``NamedTuple``s rather than frozen dataclasses: they are made once per
message, and a frozen dataclass costs twice as much to build. They are immutable,
typed and usable in ``match`` (``case Reply(value, state):``).

State is passed in and returned, never kept on ``self``: the callback object is
stateless (made with ``cls()``, so do not give ``__init__`` parameters), which is what
lets ``otp.sys.change_code`` swap the class under a live server.

Names: ``name="counter"`` registers a local name; ``name=Via(registry, key)`` uses any
registry object (``register_name``, ``unregister_name``, ``whereis_name``, ``send``).
A name already taken fails the start with ``StartError(("already_started", pid))``.
``call``/``cast``/``stop`` accept a pid, a local name or a ``Via``.

Timeouts and failures (docs/semantics.md G1-G9):

- ``call`` waits 5 s by default (``timeout=None``: forever). On timeout it raises
  ``CallTimeout`` naming the server, the request and the timeout; the server still
  handles the request and its late reply is dropped, never reaching the caller.
- A reply travels through the call's own alias (``from_`` is ``(caller_pid,
  alias)``): no other message, whatever its shape, can answer a call, and a second
  reply to the same ``from_`` is dropped (G10). ``send_request`` returns a ``ReqId``
  at once; ``receive_response(req_id, timeout)`` returns the reply (``CallError`` /
  ``CallTimeout`` as for ``call``; a timeout abandons the request),
  ``wait_response`` is the same but a timeout keeps the request, ``check_response``
  tells whether a message a loop received is the answer (``NO_RESPONSE`` if not).
  ``reqids_new``/``reqids_add`` make a collection of requests, each with a label,
  which those three answer one ``Answer(ok, value, label, reqids)`` at a time.
- ``call`` to a name nobody holds raises ``CallError("noproc")`` at once; if the server
  dies during the call, ``CallError`` carries its exit reason at once; a server
  calling itself gets ``CallError("calling_self")``.
- ``terminate(reason, state)`` runs after a ``Stop`` return, a callback exception or
  ``stop``; on an exit signal from the parent (e.g. a supervisor's ``shutdown``) only
  if the server traps exits (``otp.process.trap_exit(True)`` in ``init``). An EXIT from
  the parent always ends a trapping server; EXITs from other links go to
  ``handle_info``.
- Ending with ``normal``, ``shutdown`` or ``("shutdown", term)`` logs nothing; any
  other reason logs one ERROR report to logger ``otp.report``, label
  ``gen_server_terminate``, with the last message, the state after
  ``format_status``, the reason and the stack.
- An unmatched call stops the server with ``("bad_call", request)`` (the caller's
  ``CallError`` has it); an unmatched cast with ``("bad_cast", request)``; an
  unexpected info message is logged (WARNING, label ``unexpected_info``) and ignored.

Under a supervisor: put the class (``init`` gets None) or ``(cls, arg)`` in the
supervisor's child list; ``otp.supervisor.child_spec(cls, arg, ...)`` builds the spec
(id the class, permanent, 5 s to shut down) with any field overridden.

When not to use it: for work with no state or no need for serialised access (a plain
function, or a task process), or for long computations inside a callback (the server
answers nobody meanwhile, and callers time out; hand the work to another process and
``reply`` later).
"""

from __future__ import annotations

import logging
import traceback
import types
from collections.abc import Callable
from typing import Any, NamedTuple, NoReturn

from otp import _gen, code, proc_lib
from otp import sys as otp_sys
from otp._gen import (
    CALL,
    CAST,
    NO_RESPONSE,
    SYSTEM,
    Answer,
    From,
    ReqId,
    ReqIds,
    Response,
    Via,
    check_name,
    check_response,
    receive_response,
    reqids_add,
    reqids_new,
    reqids_size,
    reqids_to_list,
    wait_response,
)
from otp.errors import BadArg, ProcessExit
from otp.lowlevel import current_node, getcurrent
from otp.proc_lib import ReportedExit, is_clean_exit
from otp.process import Exit, Pid, is_alive, receive, send
from otp.process import self as _self
from otp.sys import (
    Debug,
    In,
    NewState,
    Out,
    ProcessStatus,
    handle_debug,
    handle_system_msg,
)

__all__ = [
    "NO_RESPONSE",
    "Answer",
    "Continue",
    "From",
    "GenServer",
    "Hibernate",
    "Ignore",
    "NoReply",
    "Ok",
    "Reply",
    "ReqId",
    "ReqIds",
    "Response",
    "Stop",
    "Timeout",
    "Via",
    "abcast",
    "call",
    "cast",
    "check_response",
    "multi_call",
    "receive_response",
    "reply",
    "reqids_add",
    "reqids_new",
    "reqids_size",
    "reqids_to_list",
    "send_request",
    "start",
    "start_link",
    "stop",
    "wait_response",
]

report_log = logging.getLogger("otp.report")


class _NoReplyValue:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NO_REPLY"


NO_REPLY: Any = _NoReplyValue()

# --- callback returns and actions ----------------------------------------------------


class Continue(NamedTuple):
    """Action: run ``handle_continue(arg, state)`` before the next message."""

    arg: Any


class Timeout(NamedTuple):
    """Action: deliver the info message ``"timeout"`` if no message arrives within
    ``seconds`` (node clock)."""

    seconds: float


class Hibernate(NamedTuple):
    """Action: a hint that the server will be idle a while (it drops its reference to
    the last message; nothing else)."""


Action = Continue | Timeout | Hibernate | None


class Ok(NamedTuple):
    """``init`` succeeded: the first state, and an optional action."""

    state: Any
    action: Any = None


class Ignore(NamedTuple):
    """``init``: do not start; ``start``/``start_link`` return None."""


class Reply(NamedTuple):
    """``handle_call``: answer ``value`` now and go on with ``state``."""

    value: Any
    state: Any
    action: Any = None


class NoReply(NamedTuple):
    """Go on with ``state`` without replying (``handle_call`` replies later with
    ``reply(from_, value)``)."""

    state: Any
    action: Any = None


class Stop(NamedTuple):
    """Stop with ``reason`` after ``terminate(reason, state)``; from ``handle_call``,
    ``reply`` (if given) is sent to the caller after ``terminate``; from ``init``, the
    start fails with ``reason``."""

    reason: Any
    state: Any = None
    reply: Any = NO_REPLY


# --- the behaviour --------------------------------------------------------------------


class GenServer:
    """Base class of generic servers: override the callbacks you need.

    Defaults: ``init`` returns ``Ok(arg)``; ``handle_call`` stops with
    ``("bad_call", request)``; ``handle_cast`` with ``("bad_cast", request)``;
    ``handle_info`` logs the message and carries on; ``terminate`` does nothing;
    ``code_change`` keeps the state; ``format_status`` shows everything.
    """

    def init(self, arg: Any) -> Ok | Ignore | Stop:
        return Ok(arg)

    def handle_call(self, request: Any, from_: From, state: Any) -> Reply | NoReply | Stop:
        return Stop(("bad_call", request), state)

    def handle_cast(self, request: Any, state: Any) -> NoReply | Stop:
        return Stop(("bad_cast", request), state)

    def handle_info(self, msg: Any, state: Any) -> NoReply | Stop:
        me = _self()
        report_log.warning(
            "%s %r received an unexpected message in handle_info: %r",
            _qualname(type(self)),
            me,
            msg,
            extra={
                "report": {
                    "label": "unexpected_info",
                    "pid": me,
                    "module": _qualname(type(self)),
                    "message": msg,
                }
            },
        )
        return NoReply(state)

    def handle_continue(self, arg: Any, state: Any) -> NoReply | Stop:
        raise NotImplementedError(
            f"{_qualname(type(self))} returned Continue({arg!r}) but does not define "
            "handle_continue(arg, state)"
        )

    def terminate(self, reason: Any, state: Any) -> None:
        return None

    def code_change(self, old_vsn: Any, state: Any, extra: Any) -> Any:
        return state

    def format_status(self, status: dict[str, Any]) -> dict[str, Any]:
        return status


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


# --- client API -------------------------------------------------------------------------


def _check_cls(what: str, cls: Any) -> None:
    if not (isinstance(cls, type) and issubclass(cls, GenServer)):
        raise BadArg(
            f"{what} expects a GenServer subclass, got {cls!r}"
            + ("" if isinstance(cls, type) else f" of type {type(cls).__name__}")
        )


def start(
    cls: type[GenServer],
    arg: Any = None,
    *,
    name: str | Via | None = None,
    timeout: float | None = None,
) -> Pid | None:
    """Start a server (not linked) and return its pid once ``init`` has returned.

    ``Ignore`` -> None; ``Stop(reason)``, an exception in ``init`` or ``timeout``
    seconds passing -> ``StartError(reason)`` (the name is free again by then).
    """
    _check_cls("start", cls)
    check_name(name)
    return proc_lib.start_as(
        _init_it,
        (cls, arg, name, None),
        link=False,
        timeout=timeout,
        initial=_qualname(cls) + ".init",
    )


def start_link(
    cls: type[GenServer],
    arg: Any = None,
    *,
    name: str | Via | None = None,
    timeout: float | None = None,
) -> Pid | None:
    """Like ``start``, linked to the caller, which becomes the server's parent."""
    _check_cls("start_link", cls)
    check_name(name)
    return proc_lib.start_as(
        _init_it,
        (cls, arg, name, _self()),
        link=True,
        timeout=timeout,
        initial=_qualname(cls) + ".init",
    )


call: _gen.CallFn = _gen.make_call(CALL)
call.__module__ = __name__
call.__qualname__ = call.__name__ = "call"  # type: ignore[attr-defined]
call.__doc__ = """call(server, request, timeout=5.0) -> reply

Send ``request`` to the server's ``handle_call`` and wait for the reply.

``server`` is a Pid, a registered name, ``(name, node)`` or a ``Via``. Raises
``CallError`` (``.reason``: ``"noproc"``, ``"calling_self"``, the server's exit reason
if it dies meanwhile, ``"noconnection"`` if its node cannot be reached or the
connection is lost meanwhile) and ``CallTimeout`` after ``timeout`` seconds (``None``:
wait forever). A server of another node may be an Erlang ``gen_server``.
"""


def cast(server: Pid | str | Via | tuple[str, str], request: Any) -> None:
    """Send ``request`` to the server's ``handle_cast``; never fails, never waits
    (a cast to a name nobody holds is dropped, and so is one to a node that cannot be
    reached). ``server`` may be ``(name, node)``."""
    if server.__class__ is Pid:
        send(server, (CAST, request))
    else:
        _gen.send_to(server, (CAST, request))


def multi_call(
    nodes: list[str], name: str, request: Any, timeout: float | None = None
) -> tuple[list[tuple[str, Any]], list[str]]:
    """Call the server registered as ``name`` on each of ``nodes`` at once (this node
    may be one of them); returns ``(replies, bad_nodes)``: ``replies`` the
    ``(node, reply)`` pairs, ``bad_nodes`` the nodes that had no such server, could not
    be reached or did not answer within ``timeout`` seconds (``None``: wait for all).

    Example::

        replies, bad = gen_server.multi_call(["a@h", "b@h"], "cache", ("get", key), 2.0)
    """
    from otp import _gen_dist

    return _gen_dist.multi_call(nodes, name, request, timeout)


def abcast(nodes: list[str], name: str, request: Any) -> None:
    """Cast ``request`` to the server registered as ``name`` on each of ``nodes``
    (dropped where there is none or the node cannot be reached); never waits."""
    from otp import _gen_dist

    _gen_dist.abcast(nodes, name, request)


def reply(from_: From, value: Any) -> None:
    """Answer a call that ``handle_call`` left with ``NoReply``, from any process.

    A reply after the caller gave up (timed out) is dropped.
    """
    _gen.reply(from_, value)


def send_request(server: Pid | str | Via, request: Any) -> ReqId:
    """Send ``request`` to the server's ``handle_call`` without waiting; returns a
    ``ReqId`` for ``receive_response`` / ``wait_response`` / ``check_response`` (also
    re-exported here). Like ``call``, only the request's own answer counts: it arrives
    through a reply alias, and a second or late one is dropped (G10).

    Example::

        req = gen_server.send_request(srv, "get")
        ...                                   # do something else meanwhile
        value = gen_server.receive_response(req, timeout=1.0)

    Several at once: ``reqs = reqids_add(send_request(a, q), "a", reqids_new())`` ...,
    then ``receive_response(reqs)`` returns an ``Answer(ok, value, label, reqids)`` per
    answer, whichever comes first. Never fails: a missing server answers with
    ``CallError("noproc")`` (an ``Answer`` with ``ok=False`` in a collection).
    """
    return _gen.send_request(server, request, CALL)


def stop(server: Pid | str | Via, reason: Any = "normal", timeout: float | None = None) -> None:
    """Stop the server with ``reason``: it runs ``terminate`` and ends; returns once it
    has. ``CallError("noproc")`` if there is no such server, ``CallTimeout`` after
    ``timeout`` seconds, ``CallError(r)`` if it ended with another reason ``r``."""
    otp_sys.terminate(server, reason, timeout)


# --- the server process -------------------------------------------------------------------


class _Server:
    """The slow-changing part of a running server (the loop keeps the rest in locals),
    and its ``otp.sys.SystemCallbacks``: the misc is the server's state."""

    __slots__ = ("cb", "dbg", "name", "parent", "pid", "sys_msg")

    def __init__(self, cb: GenServer, name: Any, parent: Pid | None, pid: Pid) -> None:
        self.cb = cb
        self.name = name
        self.parent = parent
        self.pid = pid
        self.dbg: Debug | None = None
        self.sys_msg: Any = None  # the system message being served (for a crash report)

    def label(self) -> str:
        if self.name is None:
            return repr(self.pid)
        if isinstance(self.name, Via):
            return repr(self.name.name)
        return str(self.name)

    # --- otp.sys.SystemCallbacks (run in the server, between two callbacks) ---

    def system_continue(self, parent: Pid | None, debug: Debug | None, misc: Any) -> Any:
        self.dbg = debug
        return misc

    def system_terminate(
        self, reason: Any, parent: Pid | None, debug: Debug | None, misc: Any
    ) -> NoReturn:
        _terminate(self, self.cb, reason, misc, self.sys_msg)

    def system_get_state(self, misc: Any) -> Any:
        return misc

    def system_replace_state(self, fn: Callable[[Any], Any], misc: Any) -> tuple[Any, Any]:
        new = fn(misc)
        return new, new

    def system_code_change(self, misc: Any, module: Any, old_vsn: Any, extra: Any) -> Any:
        new = module
        if isinstance(module, types.ModuleType):
            name = type(self.cb).__name__
            new = getattr(module, name, None)
            if new is None:
                raise BadArg(
                    f"change_code: module {module.__name__} has no class {name} "
                    "(the new code must keep the callback class's name)"
                )
        _check_cls("change_code", new)
        new_cb = new()
        state = new_cb.code_change(old_vsn, misc, extra)
        # Only once code_change has returned: if it raises, the old code stays (A4).
        self.cb = new_cb
        code.register_process(self.pid, new)
        return state

    def system_switch_code(self, misc: Any, new: Any) -> Any:
        _check_cls("switch_code", new)
        self.cb = new()
        code.register_process(self.pid, new)
        return misc

    def system_get_status(self, misc: Any) -> ProcessStatus:
        cb = self.cb
        st = _formatted(cb, misc, None, None)
        return ProcessStatus(name=self.name, module=_qualname(type(cb)), state=st["state"])


def _init_it(cls: type[GenServer], arg: Any, name: Any, parent: Pid | None) -> None:
    # Running servers keep their class until otp.sys.change_code (A7).
    me, cls, cb, r = _gen.init_callback(cls, arg, name)
    if r.__class__ is not Ok:
        _gen.init_not_ok(name, r, Ignore, Stop, "bad_return_value")
        return
    proc_lib.init_ack(me)
    srv = _Server(cb, name, parent, me)
    code.register_process(me, cls)
    try:
        _loop(srv, r.state, r.action)
    finally:
        code.unregister_process(me)


_TIMEOUT: Any = object()


def _loop(srv: _Server, state: Any, action: Any) -> None:
    """The main loop. Hot path: a call returning ``Reply`` with no action."""
    cb = srv.cb
    parent = srv.parent
    # Replies go straight to the kernel: this loop runs only while the server lives
    # (a dead process's replies, from terminate or a finally, go through _gen.reply,
    # which drops them: P17).
    send_alias = current_node().send_alias
    reply = _gen.reply
    dbg: Debug | None = None
    msg: Any = None
    r: Any = None
    pending: float | None = None  # a Timeout action's seconds, for the next receive
    if action is not None:
        state, pending = _action(srv, cb, state, action, msg)
    me = getcurrent()  # this server's kernel process: its mailbox, read directly below
    next_message = me.node.next_message
    while True:
        if pending is None:
            mbox = me.mbox
            msg = mbox.popleft() if mbox else next_message(me)  # receive(), specialised
        else:
            msg = receive(None, pending, default=_TIMEOUT)
            if msg is _TIMEOUT:
                msg = "timeout"
        # Classify without touching the callbacks: 1 call, 2 cast, 3 parent EXIT, 0 info.
        c = msg.__class__
        kind = 0
        if c is tuple:
            n = len(msg)
            if n == 3:
                k = msg[0]
                if k == CALL:
                    kind = 1
                elif k == SYSTEM:
                    # Served between callbacks; a pending Timeout starts again afterwards.
                    srv.sys_msg = msg
                    state = handle_system_msg(msg[2], msg[1], parent, srv, dbg, state)
                    srv.sys_msg = None
                    cb = srv.cb
                    dbg = srv.dbg
                    continue
            elif n == 2 and msg[0] == CAST:
                kind = 2
        elif c is Exit and parent is not None and msg.pid == parent:
            kind = 3
        pending = None
        if dbg is not None:
            dbg = handle_debug(dbg, In(msg), srv.label())
        try:
            if kind == 1:
                from_ = msg[1]
                r = cb.handle_call(msg[2], from_, state)
                rc = r.__class__
                if rc is Reply:
                    a = from_[1]
                    if a.__class__ is int:  # a call's alias: _gen.reply, inlined
                        send_alias(from_[0], a, r[0])
                    else:
                        reply(from_, r[0])
                    state = r[1]
                    if dbg is not None:
                        dbg = handle_debug(dbg, Out(r[0], from_[0], state), srv.label())
                    if r[2] is not None:
                        state, pending = _action(srv, cb, state, r[2], msg)
                    continue
                if rc is NoReply:
                    state = r[0]
                elif rc is Stop:
                    _terminate(srv, cb, r.reason, r.state, msg, None, from_, r.reply)
                else:
                    _bad_return(srv, cb, r, state, msg)
            elif kind == 2:
                r = cb.handle_cast(msg[1], state)
                rc = r.__class__
                if rc is NoReply:
                    state = r[0]
                elif rc is Stop:
                    _terminate(srv, cb, r.reason, r.state, msg)
                else:
                    _bad_return(srv, cb, r, state, msg)
            elif kind == 3:
                # The parent's EXIT always ends a trapping server (with terminate).
                _terminate(srv, cb, msg.reason, state, msg)
            else:
                r = cb.handle_info(msg, state)
                rc = r.__class__
                if rc is NoReply:
                    state = r[0]
                elif rc is Stop:
                    _terminate(srv, cb, r.reason, r.state, msg)
                else:
                    _bad_return(srv, cb, r, state, msg)
        except Exception as e:
            _crash(srv, cb, e, state, msg)
        except ProcessExit as e:
            if not is_alive(srv.pid) or isinstance(e, ReportedExit):
                raise
            _terminate(srv, cb, e.reason, state, msg, e)  # the callback called exit()
        if dbg is not None:
            dbg = handle_debug(dbg, NewState(state), srv.label())
        action = r[1]  # NoReply(state, action)
        if action is not None:
            state, pending = _action(srv, cb, state, action, msg)


def _action(srv: _Server, cb: GenServer, state: Any, action: Any, msg: Any) -> tuple[Any, Any]:
    """Apply a callback's action; returns (state, timeout for the next receive)."""
    r: Any
    while True:
        ac = action.__class__
        if ac is Continue:
            try:
                r = cb.handle_continue(action.arg, state)
            except Exception as e:
                _crash(srv, cb, e, state, msg)
            except ProcessExit as e:
                if not is_alive(srv.pid) or isinstance(e, ReportedExit):
                    raise
                _terminate(srv, cb, e.reason, state, msg, e)
            rc = r.__class__
            if rc is NoReply:
                state = r.state
                action = r.action
                if action is None:
                    return state, None
                continue
            if rc is Stop:
                _terminate(srv, cb, r.reason, r.state, msg)
            _bad_return(srv, cb, r, state, msg)
        if ac is Timeout:
            s = action.seconds
            if isinstance(s, bool) or not isinstance(s, int | float) or s < 0:
                _bad_return(srv, cb, action, state, msg)
            return state, s
        if ac is Hibernate:
            return state, None
        _bad_return(srv, cb, action, state, msg)


def _crash(srv: _Server, cb: GenServer, exc: BaseException, state: Any, msg: Any) -> Any:
    _terminate(srv, cb, exc, state, msg, exc)


def _bad_return(srv: _Server, cb: GenServer, value: Any, state: Any, msg: Any) -> Any:
    _terminate(srv, cb, ("bad_return_value", value), state, msg)


def _terminate(
    srv: _Server,
    cb: GenServer,
    reason: Any,
    state: Any,
    msg: Any,
    exc: BaseException | None = None,
    from_: Any = None,
    reply_value: Any = NO_REPLY,
) -> NoReturn:
    """Run ``terminate``, reply if asked, report an abnormal end, and exit. Never returns."""
    try:
        cb.terminate(reason, state)
    except Exception as e:
        reason, exc = e, e
    except ProcessExit as e:
        if not is_alive(srv.pid) or isinstance(e, ReportedExit):
            raise
        reason = e.reason
    if reply_value is not NO_REPLY and from_ is not None:
        _gen.reply(from_, reply_value)
    if not is_clean_exit(reason):
        _error_report(srv, cb, reason, state, msg, exc)
    raise ReportedExit(reason)


def _formatted(cb: GenServer, state: Any, msg: Any, reason: Any) -> dict[str, Any]:
    status = {"state": state, "message": msg, "reason": reason}
    try:
        out = cb.format_status(dict(status))
    except Exception as e:
        return {"state": f"<format_status failed: {e!r}>", "message": msg, "reason": reason}
    if not isinstance(out, dict):
        return {"state": f"<format_status returned {out!r}>", "message": msg, "reason": reason}
    return {**status, **out}


def _error_report(
    srv: _Server, cb: GenServer, reason: Any, state: Any, msg: Any, exc: BaseException | None
) -> None:
    st = _formatted(cb, state, msg, reason)
    err = exc if exc is not None else (reason if isinstance(reason, BaseException) else None)
    stack = ""
    if err is not None and err.__traceback__ is not None:
        stack = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    report = {
        "label": "gen_server_terminate",
        "pid": srv.pid,
        "name": srv.name if srv.name is not None else srv.pid,
        "module": _qualname(type(cb)),
        "last_message": st["message"],
        "state": st["state"],
        "reason": st["reason"],
        "stack": stack,
        "parent": srv.parent,
    }
    report_log.error(
        "** Generic server %s terminating\n"
        "** Last message in was %r\n"
        "** When Server state == %r\n"
        "** Reason for termination ==\n"
        "** %r%s",
        srv.label(),
        st["message"],
        st["state"],
        st["reason"],
        ("\n" + stack.rstrip()) if stack else "",
        extra={"report": report},
    )
