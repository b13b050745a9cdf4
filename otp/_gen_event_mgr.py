"""The event manager process behind ``otp.gen_event``. Private: the public API and the
rules live in ``otp.gen_event``.

The manager keeps its handlers in a list, most recently added first; every handler
callback runs here, guarded: a handler that raises or returns something illegal is
removed (its ``terminate`` runs with ``("error", ...)``), reported, and its supervising
process told; the manager itself never crashes because of a handler. It traps exits:
the parent's EXIT stops it, a supervising process's EXIT removes that process's
handlers (and, as in OTP, is then passed to every handler's ``handle_info``).
"""

from __future__ import annotations

import logging
import traceback
from typing import Any, NoReturn

from otp import _gen, proc_lib
from otp import sys as otp_sys
from otp._gen import CALL, CAST, SYSTEM, Via
from otp.errors import BadArg, ProcessExit
from otp.gen_event import (
    AddHandler,
    DeleteHandler,
    Error,
    EventHandler,
    GenEventExit,
    HandlerCall,
    Ok,
    RemoveHandler,
    Reply,
    SwapHandler,
    SwapHandlers,
    Swapped,
    SyncNotify,
    WhichHandlers,
    check_handler,
)
from otp.proc_lib import ReportedExit, is_clean_exit
from otp.process import Exit, Pid, is_alive, link, receive, send, trap_exit, unlink
from otp.process import exit as _exit
from otp.process import self as _self

report_log = logging.getLogger("otp.report")


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


class _Handler:
    """One installed handler."""

    __slots__ = ("cb", "id", "state", "supervisor")

    def __init__(self, hid: Any, cb: EventHandler, state: Any, supervisor: Pid | None) -> None:
        self.id = hid
        self.cb = cb
        self.state = state
        self.supervisor = supervisor


class _Failed(Exception):
    """A handler callback failed: ``reason`` is what its supervisor is told."""

    def __init__(self, reason: Any, exc: BaseException | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.exc = exc


class _Manager:
    """The manager's state, and its ``otp.sys`` callbacks (the misc is the manager)."""

    __slots__ = ("debug", "handlers", "last", "name", "parent", "pid")

    def __init__(self, name: Any, parent: Pid | None, pid: Pid) -> None:
        self.name = name
        self.parent = parent
        self.pid = pid
        self.handlers: list[_Handler] = []
        self.debug: otp_sys.Debug | None = None
        self.last: Any = None

    def label(self) -> str:
        if self.name is None:
            return repr(self.pid)
        if isinstance(self.name, Via):
            return repr(self.name.name)
        return str(self.name)

    def find(self, hid: Any) -> _Handler | None:
        for h in self.handlers:
            if h.id == hid:
                return h
        return None

    # --- otp.sys callbacks ---

    def system_continue(self, parent: Any, debug: Any, misc: Any) -> Any:
        return debug

    def system_terminate(self, reason: Any, parent: Any, debug: Any, misc: Any) -> NoReturn:
        _stop(self, reason)

    def system_get_state(self, misc: Any) -> Any:
        return [(h.id, h.state) for h in self.handlers]

    def system_replace_state(self, fn: Any, misc: Any) -> tuple[Any, Any]:
        new = []
        for h in self.handlers:
            got = fn((h.id, h.state))
            if not (isinstance(got, tuple) and len(got) == 2 and got[0] == h.id):
                raise BadArg(
                    f"replace_state on a gen_event expects fn((handler, state)) to return "
                    f"({h.id!r}, new_state), got {got!r}"
                )
            new.append(got[1])
        for h, state in zip(self.handlers, new, strict=True):
            h.state = state
        return [(h.id, h.state) for h in self.handlers], self

    def system_code_change(self, misc: Any, module: Any, old_vsn: Any, extra: Any) -> Any:
        changes = []
        for h in self.handlers:
            cls = type(h.cb)
            new: Any
            if isinstance(module, type):
                if module.__qualname__ != cls.__qualname__:
                    continue
                new = module
            elif getattr(module, "__name__", None) == cls.__module__:
                new = getattr(module, cls.__qualname__, None)
            else:
                continue
            if not (isinstance(new, type) and issubclass(new, EventHandler)):
                raise BadArg(f"change_code: {new!r} is not an EventHandler subclass")
            cb = new()
            changes.append((h, cb, cb.code_change(old_vsn, h.state, extra)))
        for h, cb, state in changes:  # all or nothing: only once every one returned
            h.cb, h.state = cb, state
        return self

    def system_get_status(self, misc: Any) -> otp_sys.ProcessStatus:
        return otp_sys.ProcessStatus(
            name=self.name,
            module="otp.gen_event",
            state=tuple((h.id, _formatted(h, None, None)["state"]) for h in self.handlers),
        )


# --- start and loop -----------------------------------------------------------------------


def init_it(name: Any, parent: Pid | None) -> None:

    me = _self()
    holder = _gen.register_name(name, me)
    if holder is not None:
        proc_lib.init_fail(("already_started", holder), "normal")
    trap_exit(True)
    m = _Manager(name, parent, me)
    proc_lib.init_ack(me)
    _loop(m)


def _loop(m: _Manager) -> None:
    parent = m.parent
    while True:
        msg = receive()
        c = msg.__class__
        if c is tuple and len(msg) == 3 and msg[0] == SYSTEM:
            m.debug = otp_sys.handle_system_msg(msg[2], msg[1], parent, m, m.debug, m)
            continue
        m.last = msg
        if m.debug is not None:
            m.debug = otp_sys.handle_debug(m.debug, otp_sys.In(msg), m.label())
        if c is tuple and len(msg) == 3 and msg[0] == CALL:
            _serve(m, msg[1], msg[2])
        elif c is tuple and len(msg) == 2 and msg[0] == CAST:
            _notify(m, msg[1], "handle_event")
        elif c is Exit:
            if parent is not None and msg.pid == parent:
                _stop(m, msg.reason)
            for h in [h for h in m.handlers if h.supervisor == msg.pid]:
                _remove(m, h, ("stop", msg.reason), None)
            _notify(m, msg, "handle_info")
        else:
            _notify(m, msg, "handle_info")


def _answer(m: _Manager, from_: Any, value: Any) -> None:
    _gen.reply(from_, value)
    if m.debug is not None:
        m.debug = otp_sys.handle_debug(
            m.debug, otp_sys.Out(value, from_[0], m.system_get_state(m)), m.label()
        )


def _serve(m: _Manager, from_: Any, req: Any) -> None:
    rc = req.__class__
    if rc is SyncNotify:
        _notify(m, req.event, "handle_event")
        _answer(m, from_, ("ok", None))
    elif rc is HandlerCall:
        h = m.find(req.handler)
        if h is None:
            _answer(m, from_, ("error", "module_not_found"))
            return
        _answer(m, from_, _handler_call(m, h, req.request))
    elif rc is AddHandler:
        _answer(m, from_, _add(m, req.handler, req.args, req.supervisor))
    elif rc is DeleteHandler:
        h = m.find(req.handler)
        if h is None:
            _answer(m, from_, ("error", "module_not_found"))
            return
        _answer(m, from_, ("ok", _remove(m, h, req.args, "normal")))
    elif rc is SwapHandlers:
        _answer(m, from_, _swap(m, req.old, req.args1, req.new, req.args2, req.supervisor))
    elif rc is WhichHandlers:
        _answer(m, from_, ("ok", tuple(h.id for h in m.handlers)))
    else:  # a gen_server.call or the like: not ours
        _answer(m, from_, ("error", ("bad_request", req)))


# --- handlers in and out -----------------------------------------------------------------


def _add(m: _Manager, hid: Any, args: Any, supervisor: Pid | None) -> Any:
    """Install a handler at the front; the reply for the caller."""
    try:
        cls = check_handler(hid)
    except BadArg as e:
        return ("error", ("badarg", e))
    if m.find(hid) is not None:
        return ("error", "already_present")
    try:
        cb = cls()
        r = cb.init(args)
    except Exception as e:
        return ("error", ("EXIT", e))
    except ProcessExit as e:
        if not is_alive(m.pid) or isinstance(e, ReportedExit):
            raise
        return ("error", ("EXIT", e.reason))
    if r.__class__ is Error:
        return ("error", r.reason)
    if r.__class__ is not Ok:
        return ("error", ("bad_return_value", r))
    if supervisor is not None:
        link(supervisor)
    m.handlers.insert(0, _Handler(hid, cb, r.state, supervisor))
    return ("ok", None)


def _remove(m: _Manager, h: _Handler, arg: Any, how: Any,
            exc: BaseException | None = None) -> Any:
    """Take ``h`` out, run its ``terminate(arg, state)`` and tell its supervisor
    ``how`` it went (None: it is gone, tell nobody); returns what terminate returned."""
    if h in m.handlers:
        m.handlers.remove(h)
    res = None
    try:
        res = h.cb.terminate(arg, h.state)
    except Exception:  # as OTP: a failing terminate is caught and ignored
        report_log.warning("event handler %r: terminate(%r) raised", h.id, arg, exc_info=True)
    except ProcessExit:
        if not is_alive(m.pid):
            raise
    if how is not None and not _quiet(how):
        _error_report(m, h, how, exc)
    sup = h.supervisor
    if sup is not None:
        if how is not None:
            send(sup, GenEventExit(h.id, how))
        # The last handler it supervises is gone: unlink, unless it is the parent.
        if sup != m.parent and all(other.supervisor != sup for other in m.handlers):
            unlink(sup)
    return res


def _quiet(how: Any) -> bool:
    return how.__class__ is Swapped or is_clean_exit(how)


def _swap(m: _Manager, old: Any, args1: Any, new: Any, args2: Any, supervisor: Any) -> Any:
    h = m.find(old)
    res: Any = ("error", "module_not_found")
    if h is not None:
        res = _remove(m, h, args1, Swapped(new, supervisor))
    return _add(m, new, (args2, res), supervisor)


# --- dispatch ------------------------------------------------------------------------------


def _notify(m: _Manager, event: Any, callback: str) -> None:
    m.last = event
    for h in list(m.handlers):
        if h not in m.handlers:  # removed by an earlier one's swap
            continue
        try:
            r = _guarded(m, h, getattr(h.cb, callback), event)
            rc = r.__class__
            if rc is Ok:
                h.state = r.state
            elif rc is RemoveHandler:
                _remove(m, h, "remove_handler", "normal")
            elif rc is SwapHandler:
                h.state = r.state
                _swap(m, h.id, r.args1, r.handler2, r.args2, h.supervisor)
            else:
                raise _Failed(("bad_return_value", r), None)
        except _Failed as f:
            _crashed(m, h, f)


def _handler_call(m: _Manager, h: _Handler, request: Any) -> Any:
    m.last = request
    try:
        r = _guarded(m, h, h.cb.handle_call, request)
        rc = r.__class__
        if rc is Reply:
            h.state = r.state
            return ("ok", r.value)
        if rc is RemoveHandler:
            _remove(m, h, "remove_handler", "normal")
            return ("ok", r.reply)
        if rc is SwapHandler:
            h.state = r.state
            _swap(m, h.id, r.args1, r.handler2, r.args2, h.supervisor)
            return ("ok", r.reply)
        raise _Failed(("bad_return_value", r), None)
    except _Failed as f:
        _crashed(m, h, f)
        return ("error", f.reason)


def _guarded(m: _Manager, h: _Handler, fn: Any, arg: Any) -> Any:
    try:
        return fn(arg, h.state)
    except Exception as e:
        raise _Failed(("EXIT", e), e) from None
    except ProcessExit as e:
        if not is_alive(m.pid) or isinstance(e, ReportedExit):
            raise
        raise _Failed(("EXIT", e.reason), e) from None


def _crashed(m: _Manager, h: _Handler, f: _Failed) -> None:
    _remove(m, h, ("error", f.reason), f.reason, f.exc)


def _stop(m: _Manager, reason: Any) -> NoReturn:
    for h in list(m.handlers):
        _remove(m, h, "stop", "shutdown")
    if is_clean_exit(reason):
        raise ReportedExit(reason)
    _exit(reason)  # an abnormal reason: proc_lib's crash report
    raise AssertionError("unreachable")


# --- reports -------------------------------------------------------------------------------


def _formatted(h: _Handler, msg: Any, reason: Any) -> dict[str, Any]:
    status = {"state": h.state, "message": msg, "reason": reason}
    try:
        out = h.cb.format_status(dict(status))
    except Exception as e:
        return {**status, "state": f"<format_status failed: {e!r}>"}
    if not isinstance(out, dict):
        return {**status, "state": f"<format_status returned {out!r}>"}
    return {**status, **out}


def _error_report(m: _Manager, h: _Handler, reason: Any, exc: BaseException | None) -> None:
    st = _formatted(h, m.last, reason)
    stack = ""
    if exc is not None and exc.__traceback__ is not None:
        stack = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    report = {
        "label": "gen_event_handler_crashed",
        "handler": h.id,
        "manager": m.name if m.name is not None else m.pid,
        "pid": m.pid,
        "last_event": st["message"],
        "state": st["state"],
        "reason": st["reason"],
        "stack": stack,
    }
    report_log.error(
        "** gen_event handler %r crashed.\n"
        "** Was installed in %s\n"
        "** Last event was: %r\n"
        "** When handler state == %r\n"
        "** Reason == %r%s",
        h.id,
        m.label(),
        st["message"],
        st["state"],
        st["reason"],
        ("\n" + stack.rstrip()) if stack else "",
        extra={"report": report},
    )
