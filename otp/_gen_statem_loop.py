"""The running state machine behind ``otp.gen_statem``: its event queue, timers and
transitions. Private: the public API and the rules live in ``otp.gen_statem``.

One machine is one ``_Machine`` (the *misc* that ``otp.sys.handle_system_msg`` passes
back to its callbacks). Where its next event comes from, in order:

1. ``queue``: inserted events (``NextEvent``) and, after a state change, the postponed
   ones; events already received but not yet handled.
2. ``t0q``: timeouts started with 0 seconds, in the order started (OTP's "time-out zero
   queue"): after every queued event, before any message not yet received, and still
   cancellable while they wait there (a state change cancels a zero state timeout).
3. the mailbox: calls, casts, system messages, the parent's EXIT, fired timers, the
   rest (``info``).

A timer is ``send_after`` of ``_TimerFired(key, token)`` to the machine itself; the
machine keeps ``timers[key] = _Timer(tref, token, content)``. Cancelling removes the
entry (and the kernel timer); a message of a cancelled or replaced timer that was
already sent finds no entry with its token and is dropped unseen, so no stale timeout
reaches a callback and none needs flushing from the mailbox.
"""

from __future__ import annotations

import itertools
import logging
import traceback
from collections import deque
from typing import Any, NamedTuple, NoReturn

from otp import _gen, code, proc_lib
from otp import sys as otp_sys
from otp._gen import CALL, CAST, SYSTEM, Via
from otp.errors import BadArg, ProcessExit
from otp.gen_statem import (
    KEEP,
    Call,
    CallbackMode,
    EventTimeout,
    EventType,
    GenericTimeout,
    GenStatem,
    Hibernate,
    Ignore,
    KeepState,
    KeepStateAndData,
    NamedTimeout,
    NextEvent,
    NextState,
    Ok,
    Postpone,
    RepeatState,
    RepeatStateAndData,
    Reply,
    StateTimeout,
    Stop,
    StopAndReply,
)
from otp.lowlevel import getcurrent
from otp.proc_lib import ReportedExit, is_clean_exit
from otp.process import Exit, Pid, cancel_timer, is_alive, send_after

report_log = logging.getLogger("otp.report")

_TIMEOUT = EventType.TIMEOUT
_STATE_TIMEOUT = EventType.STATE_TIMEOUT
_ENTER = EventType.ENTER
_INFO = EventType.INFO
_CAST = EventType.CAST

# Names a state may not have in CallbackMode.STATE_FUNCTIONS: the other callbacks.
_NOT_STATES = frozenset(
    {"init", "handle_event", "terminate", "code_change", "format_status", "child_spec",
     "callback_mode", "state_enter"}
)


class _TimerFired(NamedTuple):
    """The message a machine's timer sends to the machine itself."""

    key: Any  # the event type: "timeout", "state_timeout" or NamedTimeout(name)
    token: int


class _Timer(NamedTuple):
    tref: Any  # the send_after ref, None for a zero timeout waiting in t0q
    token: int
    content: Any


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


class _Machine:
    """Everything a running machine holds."""

    __slots__ = (
        "cb", "data", "debug", "enter", "last", "name", "parent", "pid", "postponed",
        "queue", "state", "state_fns", "t0q", "timers", "tokens",
    )

    def __init__(self, cb: GenStatem, name: Any, parent: Pid | None, pid: Pid) -> None:
        self.cb = cb
        self.name = name
        self.parent = parent
        self.pid = pid
        self.state: Any = None
        self.data: Any = None
        self.queue: deque[tuple[Any, Any]] = deque()
        self.postponed: list[tuple[Any, Any]] = []
        self.timers: dict[Any, _Timer] = {}
        self.t0q: deque[Any] = deque()
        self.tokens = itertools.count()
        self.debug: otp_sys.Debug | None = None
        self.last: Any = None
        self.set_mode()

    def set_mode(self) -> None:
        cls = type(self.cb)
        self.state_fns = cls.callback_mode == CallbackMode.STATE_FUNCTIONS
        self.enter = bool(cls.state_enter)

    def label(self) -> str:
        if self.name is None:
            return repr(self.pid)
        if isinstance(self.name, Via):
            return repr(self.name.name)
        return str(self.name)

    # --- otp.sys callbacks (run by handle_system_msg, in this process) ---

    def system_continue(self, parent: Any, debug: Any, misc: Any) -> Any:
        return debug

    def system_terminate(self, reason: Any, parent: Any, debug: Any, misc: Any) -> NoReturn:
        self.debug = debug
        _terminate(self, reason, None)

    def system_get_state(self, misc: Any) -> Any:
        return (self.state, self.data)

    def system_replace_state(self, fn: Any, misc: Any) -> tuple[Any, Any]:
        new = fn((self.state, self.data))
        if not (isinstance(new, tuple) and len(new) == 2):
            raise BadArg(
                f"replace_state on a gen_statem expects fn((state, data)) to return a "
                f"(state, data) pair, got {new!r}"
            )
        self.state, self.data = new
        return new, self

    def system_code_change(self, misc: Any, module: Any, old_vsn: Any, extra: Any) -> Any:
        new = _new_class(self.cb, module)
        cb = new()
        got = cb.code_change(old_vsn, self.state, self.data, extra)
        if not (isinstance(got, tuple) and len(got) == 2):
            raise BadArg(
                f"{_qualname(new)}.code_change must return (state, data), got {got!r}"
            )
        self.cb = cb
        self.state, self.data = got
        self.set_mode()
        code.register_process(self.pid, new)
        return self

    def system_switch_code(self, misc: Any, new: Any) -> Any:
        if not (isinstance(new, type) and issubclass(new, GenStatem)):
            raise BadArg(f"switch_code on a gen_statem expects a GenStatem subclass, got {new!r}")
        self.cb = new()
        self.set_mode()
        code.register_process(self.pid, new)
        return self

    def system_get_status(self, misc: Any) -> otp_sys.ProcessStatus:
        st = _formatted(self, None)
        return otp_sys.ProcessStatus(
            name=self.name, module=_qualname(type(self.cb)), state=(st["state"], st["data"])
        )


def _new_class(cb: GenStatem, module: Any) -> type[GenStatem]:
    new = module
    if not isinstance(module, type):
        name = type(cb).__name__
        new = getattr(module, name, None)
        if new is None:
            raise BadArg(
                f"change_code: module {getattr(module, '__name__', module)} has no class "
                f"{name} (the new code must keep the callback class's name)"
            )
    if not (isinstance(new, type) and issubclass(new, GenStatem)):
        raise BadArg(f"change_code on a gen_statem expects a GenStatem subclass, got {new!r}")
    return new


# --- start ------------------------------------------------------------------------------


def init_it(cls: type[GenStatem], arg: Any, name: Any, parent: Pid | None) -> None:
    me, cls, cb, r = _gen.init_callback(cls, arg, name)
    if r.__class__ is not Ok:
        _gen.init_not_ok(name, r, Ignore, Stop, "bad_return_from_init")
        return
    m = _Machine(cb, name, parent, me)
    m.state, m.data = r.state, r.data
    proc_lib.init_ack(me)
    code.register_process(me, cls)
    try:
        _first(m, r.actions)
        _loop(m)
    finally:
        code.unregister_process(me)


def _first(m: _Machine, actions: Any) -> None:
    """``init``'s actions, and the initial state's enter call (old state = the state)."""
    timeouts: list[tuple[Any, Any, Any]] = []
    nexts: list[tuple[Any, Any]] = []
    _actions(m, actions, timeouts, nexts, "bad_action_from_init")  # (no Postpone)
    if m.enter:
        _enter(m, m.state, timeouts)
    if nexts:
        m.queue.extendleft(reversed(nexts))
    for key, seconds, content in timeouts:
        _set_timer(m, key, seconds, content)


# --- the loop ------------------------------------------------------------------------------


def _loop(m: _Machine) -> None:
    me = getcurrent()
    next_message = me.node.next_message
    parent = m.parent
    queue, timers, t0q = m.queue, m.timers, m.t0q
    ev: tuple[Any, Any]
    while True:
        if queue:
            ev = queue.popleft()
        elif t0q:
            key = t0q.popleft()
            ev = (key, timers.pop(key).content)
        else:
            mbox = me.mbox
            msg = mbox.popleft() if mbox else next_message(me)
            c = msg.__class__
            if c is tuple:
                n = len(msg)
                k = msg[0]
                if n == 3 and k == CALL:
                    ev = (Call(msg[1]), msg[2])
                elif n == 3 and k == SYSTEM:
                    m.debug = otp_sys.handle_system_msg(
                        msg[2], msg[1], parent, m, m.debug, m
                    )
                    continue
                elif n == 2 and k == CAST:
                    ev = (_CAST, msg[1])
                else:
                    ev = (_INFO, msg)
            elif c is _TimerFired:
                t = timers.get(msg.key)
                if t is None or t.token != msg.token:
                    continue  # a timer cancelled or restarted after it had fired
                del timers[msg.key]
                ev = (msg.key, t.content)
            elif c is Exit and parent is not None and msg.pid == parent:
                m.last = msg
                _terminate(m, msg.reason, None)  # the parent's EXIT always ends it
            else:
                ev = (_INFO, msg)
            if m.debug is not None:
                m.debug = otp_sys.handle_debug(m.debug, otp_sys.In(msg), m.label())
        # Any event cancels the event timeout (the timeout's own event popped it).
        if _TIMEOUT in timers:
            _cancel(m, _TIMEOUT)
        m.last = ev
        r = _call_state(m, ev[0], ev[1])
        _transition(m, ev, r)
        if m.debug is not None:
            m.debug = otp_sys.handle_debug(
                m.debug, otp_sys.NewState((m.state, m.data)), m.label()
            )


def _call_state(m: _Machine, event_type: Any, content: Any) -> Any:
    """Run the callback for one event (or enter call); an exception ends the machine."""
    cb = m.cb
    state = m.state
    try:
        if not m.state_fns:
            return cb.handle_event(event_type, content, state, m.data)
        fn = None
        if state.__class__ is str and not state.startswith("_") and state not in _NOT_STATES:
            fn = getattr(cb, state, None)
        if fn is None or not callable(fn):
            _terminate(m, ("undef_state_function", state), None)
        return fn(event_type, content, m.data)
    except Exception as e:
        _terminate(m, e, e)
    except ProcessExit as e:
        if not is_alive(m.pid) or isinstance(e, ReportedExit):
            raise
        _terminate(m, e.reason, e)  # the callback called exit(reason)


def _transition(m: _Machine, ev: tuple[Any, Any], r: Any) -> None:
    rc = r.__class__
    state = m.state
    repeat = False
    if rc is NextState:
        state, data, actions = r
    else:
        data, actions, repeat = _kept(m, r, rc, "bad_return_from_state_function")
    timeouts: list[tuple[Any, Any, Any]] = []
    nexts: list[tuple[Any, Any]] = []
    postpone = _actions(m, actions, timeouts, nexts, "bad_action_from_state_function")
    old = m.state
    m.data = data
    if postpone:
        m.postponed.append(ev)
    try:
        changed = bool(state != old)
    except Exception as e:
        _terminate(m, e, e)
    m.state = state
    if m.enter and (changed or repeat):
        _enter(m, old, timeouts)
    if changed:
        if _STATE_TIMEOUT in m.timers:
            _cancel(m, _STATE_TIMEOUT)
        if m.postponed:  # retried first, in the order they came
            m.queue.extendleft(reversed(m.postponed))
            m.postponed = []
    if nexts:  # before the postponed ones, in order
        m.queue.extendleft(reversed(nexts))
    for key, seconds, content in timeouts:
        _set_timer(m, key, seconds, content)


def _enter(m: _Machine, old: Any, timeouts: list[tuple[Any, Any, Any]]) -> None:
    """The state's enter call(s): it may keep or repeat the state, never change it."""
    while True:
        r = _call_state(m, _ENTER, old)
        rc = r.__class__
        repeat = False
        if rc is NextState:
            try:
                same = bool(r.state == m.state)
            except Exception as e:
                _terminate(m, e, e)
            if not same:
                _terminate(m, ("bad_state_enter_return_from_state_function", r), None)
            data, actions = r.data, r.actions
        else:
            data, actions, repeat = _kept(m, r, rc, "bad_state_enter_return_from_state_function")
        _actions(m, actions, timeouts, None, "bad_state_enter_action_from_state_function")
        m.data = data
        if not repeat:
            return


def _kept(m: _Machine, r: Any, rc: type, bad: str) -> tuple[Any, Any, bool]:
    """``(data, actions, repeat)`` of a return that keeps the state (``KeepState``,
    ``KeepStateAndData``, ``RepeatState``, ``RepeatStateAndData``); any other return
    stops the machine (``Stop``...) or is a bad return labelled ``bad``."""
    if rc is KeepState:
        return r.data, r.actions, False
    if rc is KeepStateAndData:
        return m.data, r.actions, False
    if rc is RepeatState:
        return r.data, r.actions, True
    if rc is RepeatStateAndData:
        return m.data, r.actions, True
    _stop_or_bad(m, r, bad)


def _stop_or_bad(m: _Machine, r: Any, bad: str) -> NoReturn:
    rc = r.__class__
    if rc is Stop:
        if r.data is not KEEP:
            m.data = r.data
        _terminate(m, r.reason, None)
    if rc is StopAndReply:
        if r.data is not KEEP:
            m.data = r.data
        replies = r.replies
        for a in (replies,) if replies.__class__ is Reply else _as_list(m, replies, bad):
            if a.__class__ is not Reply:
                _terminate(m, (bad, a), None)
            _reply(m, a)
        _terminate(m, r.reason, None)
    _terminate(m, (bad, r), None)


_ACTIONS = frozenset(
    {Reply, Postpone, NextEvent, EventTimeout, StateTimeout, GenericTimeout, Hibernate}
)


def _as_list(m: _Machine, actions: Any, bad: str) -> Any:
    if actions.__class__ is list or actions.__class__ is tuple:
        return actions
    _terminate(m, (bad, actions), None)


def _actions(
    m: _Machine,
    actions: Any,
    timeouts: list[tuple[Any, Any, Any]],
    nexts: list[tuple[Any, Any]] | None,
    bad: str,
) -> bool:
    """Carry out replies, collect timeouts and inserted events (``nexts``; None: not
    allowed); returns whether the event is postponed."""
    if actions is None:
        return False
    postpone = False
    a: Any
    for a in (actions,) if actions.__class__ in _ACTIONS else _as_list(m, actions, bad):
        ac = a.__class__
        if ac is Reply:
            _reply(m, a)
        elif ac is EventTimeout:
            timeouts.append((_TIMEOUT, _seconds(m, a, a.seconds, bad), a.content))
        elif ac is StateTimeout:
            timeouts.append((_STATE_TIMEOUT, _seconds(m, a, a.seconds, bad), a.content))
        elif ac is GenericTimeout:
            try:
                hash(a.name)
            except TypeError:
                _terminate(m, (bad, a), None)
            timeouts.append((NamedTimeout(a.name), _seconds(m, a, a.seconds, bad), a.content))
        elif ac is Hibernate:
            pass
        elif ac is Postpone and nexts is not None and bad != "bad_action_from_init":
            postpone = True
        elif ac is NextEvent and nexts is not None:
            nexts.append((a.event_type, a.content))
        else:
            _terminate(m, (bad, a), None)
    return postpone


def _seconds(m: _Machine, action: Any, s: Any, bad: str) -> Any:
    if s is None:
        return None
    if isinstance(s, bool) or not isinstance(s, int | float) or not 0 <= s < float("inf"):
        _terminate(m, (bad, action), None)
    return s


def _reply(m: _Machine, a: Reply) -> None:
    from_ = a.from_
    if not (from_.__class__ is tuple and len(from_) == 2 and from_[0].__class__ is Pid):
        _terminate(m, ("bad_action_from_state_function", a), None)
    _gen.reply(from_, a.value)
    if m.debug is not None:
        m.debug = otp_sys.handle_debug(
            m.debug, otp_sys.Out(a.value, from_[0], m.state), m.label()
        )


# --- timers ------------------------------------------------------------------------------


def _set_timer(m: _Machine, key: Any, seconds: Any, content: Any) -> None:
    if key in m.timers:
        _cancel(m, key)
    if seconds is None:  # infinity: no timer
        return
    token = next(m.tokens)
    if seconds == 0:
        m.timers[key] = _Timer(None, token, content)
        m.t0q.append(key)
        return
    tref = send_after(seconds, m.pid, _TimerFired(key, token))
    m.timers[key] = _Timer(tref, token, content)


def _cancel(m: _Machine, key: Any) -> None:
    t = m.timers.pop(key)
    if t.tref is None:
        m.t0q.remove(key)
    else:
        cancel_timer(t.tref)  # a message it already sent is dropped: no entry has its token


# --- the end ---------------------------------------------------------------------------------


def _terminate(m: _Machine, reason: Any, exc: BaseException | None) -> NoReturn:
    """Run ``terminate``, report an abnormal end, and exit. Never returns."""
    try:
        m.cb.terminate(reason, m.state, m.data)
    except Exception as e:
        reason, exc = e, e
    except ProcessExit as e:
        if not is_alive(m.pid) or isinstance(e, ReportedExit):
            raise
        reason = e.reason
    if not is_clean_exit(reason):
        _error_report(m, reason, exc)
    raise ReportedExit(reason)


def _formatted(m: _Machine, reason: Any) -> dict[str, Any]:
    status = {
        "state": m.state,
        "data": m.data,
        "reason": reason,
        "queue": list(m.queue),
        "postponed": list(m.postponed),
        "timeouts": [(key, t.content) for key, t in m.timers.items()],
    }
    try:
        out = m.cb.format_status(dict(status))
    except Exception as e:
        return {**status, "state": f"<format_status failed: {e!r}>", "data": None}
    if not isinstance(out, dict):
        return {**status, "state": f"<format_status returned {out!r}>", "data": None}
    return {**status, **out}


def _error_report(m: _Machine, reason: Any, exc: BaseException | None) -> None:
    st = _formatted(m, reason)
    err = exc if exc is not None else (reason if isinstance(reason, BaseException) else None)
    stack = ""
    if err is not None and err.__traceback__ is not None:
        stack = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    report = {
        "label": "gen_statem_terminate",
        "pid": m.pid,
        "name": m.name if m.name is not None else m.pid,
        "module": _qualname(type(m.cb)),
        "callback_mode": CallbackMode(type(m.cb).callback_mode).value,
        "last_event": m.last,
        "state": st["state"],
        "data": st["data"],
        "queue": st["queue"],
        "postponed": st["postponed"],
        "timeouts": st["timeouts"],
        "reason": st["reason"],
        "stack": stack,
        "parent": m.parent,
    }
    report_log.error(
        "** State machine %s terminating\n"
        "** Last event = %r\n"
        "** When server state  = %r\n"
        "** Reason for termination = %r\n"
        "** Callback mode = %s\n"
        "** Queued = %r\n"
        "** Postponed = %r%s",
        m.label(),
        m.last,
        (st["state"], st["data"]),
        st["reason"],
        report["callback_mode"],
        st["queue"],
        st["postponed"],
        ("\n" + stack.rstrip()) if stack else "",
        extra={"report": report},
    )

