"""The debug and upgrade interface every behaviour process serves: OTP's ``sys``.

Every ``gen_server`` (so every supervisor too) answers *system messages* between two
callbacks, whatever it is doing otherwise: read or replace its state, report its
status, suspend and resume it, move it to new code, count, trace and log its
messages. The release handler uses exactly this for live upgrades::

    from otp import sys as otp_sys

    otp_sys.suspend(server)                         # only system messages now
    otp_sys.change_code(server, CounterV2, old_vsn="1")
    otp_sys.resume(server)                          # queued messages run on CounterV2

    otp_sys.get_state(server)                       # the state, between callbacks
    otp_sys.replace_state(server, lambda s: s + 1)
    otp_sys.statistics(server, True)                # start counting
    otp_sys.statistics(server)                      # Statistics(start_time=..., ...)
    otp_sys.trace(server, True)                     # log every message in and out
    otp_sys.log(server, True)                       # keep the last 10 events
    otp_sys.log(server, "get")                      # [In(...), Out(...), ...]
    otp_sys.no_debug(server)                        # all of the above off
    otp_sys.terminate(server, "shutdown")           # stop it; returns once it ended

Client API -> what the process does:

====================================  =============================================
``get_state(server)``                 replies its state (5 s default timeout)
``replace_state(server, fn)``         state = fn(state), replies it; if ``fn``
                                      raises, the state is unchanged and the caller
                                      gets ``CallError(("callback_failed", exc))``
``get_status(server)``                replies a ``Status`` (state after
                                      ``format_status``)
``suspend(server)`` / ``resume``      stops / restarts handling ordinary messages;
                                      they queue meanwhile and are handled in order
``change_code(server, new, old_vsn)`` only while suspended: ``state =
                                      new().code_change(old_vsn, state, extra)``
                                      and the callbacks become ``new``'s; if
                                      ``code_change`` raises, state and code stay
                                      the old ones and the caller gets a
                                      ``CallError`` whose reason (and cause) is the
                                      exception
``migrate(server, new, old_vsn,       ``suspend``, ``change_code``, ``switch_code(then)``
extra, then=None)``                   and ``resume`` in one message; on failure the
                                      class and (a copy of) the state of before
``terminate(server, reason)``         ends it the way its behaviour ends (a
                                      gen_server runs ``terminate``); returns once
                                      it has ended with ``reason``
``statistics(server, flag)``          True: start (or restart) counting; False:
                                      stop; None: the ``Statistics`` (or None)
``trace(server, flag)``               log every event (logger ``otp.sys``, INFO),
                                      Erlang's ``*DBG*`` lines
``log(server, flag)``                 True / an int n: keep the last 10 / n events;
                                      False: stop and forget; ``"get"``: the kept
                                      events, oldest first; ``"print"``: log them
``install(server, fn, state)``        call ``fn(fn_state, event, name)`` on every
                                      event; it returns the next ``fn_state``, or
                                      ``DONE`` to be removed (so is one that raises)
``remove(server, fn)``                remove an installed ``fn``
``no_debug(server)``                  statistics, trace, log and installed
                                      functions all off
====================================  =============================================

``new`` for ``change_code`` is the new callback class, or a module holding a class of
the same name as the current one.

Failures: every client function raises ``CallError`` (``noproc``, ``calling_self``, or
the process's exit reason if it dies meanwhile) or ``CallTimeout``, like
``gen_server.call``. System messages are ``(SYSTEM, from_, request)`` tuples (the
envelope of every gen call, labelled ``SYSTEM``); the requests are the records of this
module (``GetState``, ``Suspend``, ...), and the reply is ``("ok", value)`` or
``("error", reason)``.

The process side: writing a special process
---------------------------------------------

A behaviour (``gen_server``, ``gen_statem``, ...) or any hand-written *special process*
serves system messages by passing each one it receives to ``handle_system_msg``,
between two of its own steps, with an object implementing ``SystemCallbacks``::

    from otp import proc_lib
    from otp import sys as otp_sys
    from otp.process import exit, receive, self, send

    class Ticker:
        # The SystemCallbacks of a process whose state (its misc) is a count.

        def system_continue(self, parent, debug, misc):
            return debug, misc                  # what handle_system_msg returns

        def system_terminate(self, reason, parent, debug, misc):
            exit(reason)                        # never returns: the process ends

        def system_get_state(self, misc):
            return misc

        def system_replace_state(self, fn, misc):
            new = fn(misc)
            return new, new                     # (the state replied, the new misc)

        def system_code_change(self, misc, module, old_vsn, extra):
            return misc                         # the misc, migrated

    def ticker(parent):
        proc_lib.init_ack(self())
        callbacks, debug, count = Ticker(), None, 0
        while True:
            match receive():
                case (otp_sys.SYSTEM, from_, request):   # a system message
                    debug, count = otp_sys.handle_system_msg(
                        request, from_, parent, callbacks, debug, count)
                case ("tick", to):
                    count += 1
                    send(to, ("count", count))
                    if debug is not None:
                        debug = otp_sys.handle_debug(debug, otp_sys.Out(count, to, count), "ticker")

    pid = proc_lib.start_link(ticker, self())
    otp_sys.suspend(pid)                    # ticks queue from now on
    otp_sys.get_state(pid)                  # 0: system messages are still served
    otp_sys.resume(pid)                     # the queued ticks are handled, in order

The callback contract (``handle_system_msg`` runs in the process itself, so every
callback does too, between two of the process's own steps):

- ``system_continue(parent, debug, misc)``: called once the request is served and the
  process is not suspended (after ``resume`` when it was): it goes back to work.
  ``handle_system_msg`` returns what it returns (Erlang's ``system_continue``
  re-enters the loop by a tail call; Python has none, so the loop that called
  ``handle_system_msg`` goes on with the result). Raising ends the process with
  that exception.
- ``system_terminate(reason, parent, debug, misc)``: a ``terminate`` request, or an
  ``Exit`` from the parent while suspended. It must end the process (run the
  behaviour's clean-up and exit with ``reason``); it never returns.
- ``system_get_state(misc)``: the state ``get_state`` replies. Raising: the caller
  gets ``CallError(("callback_failed", exc))``, the process goes on.
- ``system_replace_state(fn, misc) -> (state, misc)``: apply ``fn`` to the state;
  returns the new state (replied) and the new misc. Raising (``fn`` raising
  included): the caller gets ``CallError(("callback_failed", exc))`` and the misc is
  unchanged.
- ``system_code_change(misc, module, old_vsn, extra) -> misc``: only while suspended.
  ``module`` is the new callback class or module. Returns the misc on the new code.
  Raising: the caller gets ``CallError(exc)``, the misc (old code, old state) stays.

Two optional ones, looked up on the callbacks object:

- ``system_get_status(misc) -> ProcessStatus``: the name, callback module and
  (formatted) state ``get_status`` reports. Without it: the registered name, the
  callbacks object's class, and ``system_get_state(misc)``.
- ``system_switch_code(misc, new) -> misc``: only while suspended: the callbacks become
  ``new``'s with the state unchanged and no ``code_change`` (the release handler's
  rollback and downgrade). Without it the request is refused.

While suspended, ``handle_system_msg`` itself waits for the next system message
(ordinary messages stay queued, in order, for the loop: A4) or an ``Exit`` from the
parent, which ends the process through ``system_terminate``.

Debugging: ``debug`` is None while no debug facility is on (a process pays one
``is None`` test per message for all of this); otherwise a ``Debug``, which the
process passes each event to with ``handle_debug(debug, event, name)``. Events are
any values; ``In(msg)``, ``Out(value, to, state)`` and ``NewState(state)`` are the
common ones (``In`` counts as a message in, ``Out`` as a message out).

When not to use it: in application logic. It is for operators, tests and the release
handler; a server's clients should go through its own API.
"""

from __future__ import annotations

import copy
import importlib
import logging
import types
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, NoReturn, Protocol

from otp import _gen
from otp import code as code_mod
from otp._gen import CALL, CAST, SYSTEM
from otp.errors import BadArg, CallError, CallTimeout
from otp.lowlevel import current_node
from otp.process import Exit, Pid, monitor, process_info, receive, send
from otp.process import self as _self

__all__ = [
    "DONE",
    "SYSTEM",
    "Debug",
    "In",
    "NewState",
    "Out",
    "ProcessStatus",
    "Statistics",
    "Status",
    "SystemCallbacks",
    "change_code",
    "format_event",
    "get_state",
    "get_status",
    "handle_debug",
    "handle_system_msg",
    "install",
    "log",
    "migrate",
    "no_debug",
    "remove",
    "replace_state",
    "resume",
    "statistics",
    "suspend",
    "switch_code",
    "terminate",
    "trace",
]

trace_log = logging.getLogger("otp.sys")


@dataclass(frozen=True)
class Statistics:
    """Message counts since statistics were turned on (node clock times)."""

    start_time: float
    current_time: float
    messages_in: int
    messages_out: int


@dataclass(frozen=True)
class Status:
    """What ``get_status`` reports about a behaviour process."""

    pid: Any
    name: Any  # registered name or Via, None if none
    module: str  # "module.Class" of the callbacks now in use
    status: str  # "running" | "suspended"
    parent: Any  # the pid that started it linked, or None
    state: Any  # after the callbacks' format_status
    statistics: Statistics | None
    trace: bool


@dataclass(frozen=True)
class ProcessStatus:
    """A process's own part of its ``Status``: from ``system_get_status``."""

    name: Any
    module: str
    state: Any


# --- the requests (the third element of a system message) ---------------------------------


class GetState(NamedTuple):
    pass


class ReplaceState(NamedTuple):
    fn: Callable[[Any], Any]


class GetStatus(NamedTuple):
    pass


class Suspend(NamedTuple):
    pass


class Resume(NamedTuple):
    pass


class ChangeCode(NamedTuple):
    module: Any  # a class, or ModuleName
    old_vsn: Any
    extra: Any


class Migrate(NamedTuple):
    """Suspend, change_code (then switch_code to ``then``), resume: in one message."""

    module: Any  # a class, or ModuleName
    old_vsn: Any
    extra: Any
    then: type | None


class ModuleName(NamedTuple):
    """A module named in a request (module objects are not sent between processes)."""

    name: str


class SwitchCode(NamedTuple):
    """The release handler's rollback and downgrade: new callbacks, same state."""

    new: type


class Terminate(NamedTuple):
    reason: Any


class SetStatistics(NamedTuple):
    flag: bool | None


class SetTrace(NamedTuple):
    flag: bool


class SetLog(NamedTuple):
    flag: bool | int | str


class Install(NamedTuple):
    fn: Callable[[Any, Any, Any], Any]
    state: Any


class Remove(NamedTuple):
    fn: Callable[[Any, Any, Any], Any]


class NoDebug(NamedTuple):
    pass


# --- debug events --------------------------------------------------------------------------


class In(NamedTuple):
    """Event: the process got ``msg`` (a call, a cast, anything else)."""

    msg: Any


class Out(NamedTuple):
    """Event: the process sent (replied) ``value`` to ``to``; ``state`` is its state."""

    value: Any
    to: Any
    state: Any


class NewState(NamedTuple):
    """Event: the process handled a message without sending; its new state."""

    state: Any


def format_event(event: Any, name: Any) -> str:
    """An event as a ``*DBG*`` line (Erlang's trace format)."""
    match event:
        case In((tag, from_, request)) if tag == CALL:
            return f"*DBG* {name} got call {request!r} from {from_[0]!r}"
        case In((tag, request)) if tag == CAST:
            return f"*DBG* {name} got cast {request!r}"
        case In(msg):
            return f"*DBG* {name} got {msg!r}"
        case Out(value, to, state):
            return f"*DBG* {name} sent {value!r} to {to!r}, new state {state!r}"
        case NewState(state):
            return f"*DBG* {name} new state {state!r}"
    return f"*DBG* {name} {event!r}"


class _Done:
    __slots__ = ()

    def __repr__(self) -> str:
        return "DONE"


#: What an installed debug function returns to be removed.
DONE: Any = _Done()


class Debug:
    """The debug facilities on for one process. A process keeps ``None`` instead while
    none is on: ``handle_debug`` returns None once the last one goes."""

    __slots__ = ("funcs", "log", "msgs_in", "msgs_out", "start_time", "stats", "trace")

    def __init__(self) -> None:
        self.stats = False
        self.trace = False
        self.start_time = 0.0
        self.msgs_in = 0
        self.msgs_out = 0
        self.log: deque[tuple[Any, str]] | None = None
        self.funcs: dict[Any, Any] | None = None

    def is_empty(self) -> bool:
        return not (self.stats or self.trace or self.log is not None or self.funcs)


def handle_debug(
    debug: Debug | None,
    event: Any,
    name: Any,
    format: Callable[[Any, Any], str] = format_event,
) -> Debug | None:
    """Pass ``event`` to the process's debug facilities (count, trace, log, installed
    functions); returns the ``Debug`` to go on with (None once nothing is on).
    ``name`` labels trace lines; ``format(event, name)`` makes them."""
    if debug is None:
        return None
    if debug.stats:
        c = event.__class__
        if c is In:
            debug.msgs_in += 1
        elif c is Out:
            debug.msgs_out += 1
    if debug.trace:
        trace_log.info("%s", format(event, name))
    if debug.log is not None:
        debug.log.append((event, format(event, name)))
    if debug.funcs:
        for fn, fn_state in list(debug.funcs.items()):
            try:
                new = fn(fn_state, event, name)
            except Exception:
                trace_log.exception("*DBG* %s: debug function %r failed; removed", name, fn)
                new = DONE
            if new is DONE:
                del debug.funcs[fn]
            else:
                debug.funcs[fn] = new
        if not debug.funcs and debug.is_empty():
            return None
    return debug


def _statistics_of(debug: Debug | None) -> Statistics | None:
    if debug is None or not debug.stats:
        return None
    return Statistics(
        start_time=debug.start_time,
        current_time=current_node().clock.now(),
        messages_in=debug.msgs_in,
        messages_out=debug.msgs_out,
    )


# --- the process side ------------------------------------------------------------------------


class SystemCallbacks(Protocol):
    """What a process serving system messages implements (see the module docstring for
    who calls each and what raising does)."""

    def system_continue(self, parent: Pid | None, debug: Debug | None, misc: Any) -> Any: ...

    def system_terminate(
        self, reason: Any, parent: Pid | None, debug: Debug | None, misc: Any
    ) -> NoReturn: ...

    def system_get_state(self, misc: Any) -> Any: ...

    def system_replace_state(self, fn: Callable[[Any], Any], misc: Any) -> tuple[Any, Any]: ...

    def system_code_change(self, misc: Any, module: Any, old_vsn: Any, extra: Any) -> Any: ...


def _reply(from_: Any, value: Any) -> None:
    try:
        _gen.reply(from_, value)
    except BadArg as e:  # strict mode refused the value
        _gen.reply(from_, ("error", e))


def _state_reply(from_: Any, state: Any) -> None:
    """Answer with a snapshot of the state: a deep copy where one can be made, so the
    caller never shares the process's mutable state (as Erlang copies it). The copy
    is private, so strict mode does not refuse it."""
    try:
        snapshot = copy.deepcopy(state)
    except Exception:  # sockets, locks...: hand over the state itself
        _reply(from_, ("ok", state))
        return
    _gen.reply(from_, ("ok", snapshot), check=False)


def handle_system_msg(
    request: Any,
    from_: Any,
    parent: Pid | None,
    callbacks: SystemCallbacks,
    debug: Debug | None,
    misc: Any,
) -> Any:
    """Serve the system message ``(SYSTEM, from_, request)`` the process just received;
    returns ``callbacks.system_continue(parent, debug, misc)`` with the (possibly new)
    debug and misc. A ``suspend`` request keeps it here, answering only system
    messages, until ``resume``; a ``terminate`` request (or the parent's ``Exit``
    while suspended) ends the process through ``system_terminate``."""
    debug, misc, suspended = _serve(request, from_, parent, callbacks, debug, misc, False)
    if suspended:

        def wanted(m: Any) -> bool:
            c = m.__class__
            if c is tuple:
                return len(m) == 3 and m[0] == SYSTEM
            return c is Exit and parent is not None and m.pid == parent

        while suspended:
            m = receive(wanted)
            if m.__class__ is Exit:
                _terminate(callbacks, m.reason, parent, debug, misc)
            debug, misc, suspended = _serve(m[2], m[1], parent, callbacks, debug, misc, True)
    return callbacks.system_continue(parent, debug, misc)


def _serve(
    request: Any,
    from_: Any,
    parent: Pid | None,
    cbs: SystemCallbacks,
    debug: Debug | None,
    misc: Any,
    suspended: bool,
) -> tuple[Debug | None, Any, bool]:
    rc = request.__class__
    if rc is GetState:
        try:
            state = cbs.system_get_state(misc)
        except Exception as e:
            _reply(from_, ("error", ("callback_failed", e)))
        else:
            _state_reply(from_, state)
    elif rc is ReplaceState:
        try:
            state, new_misc = cbs.system_replace_state(request.fn, misc)
        except Exception as e:
            _reply(from_, ("error", ("callback_failed", e)))
        else:
            misc = new_misc
            _state_reply(from_, state)
    elif rc is GetStatus:
        _reply(from_, _status(cbs, parent, debug, misc, suspended))
    elif rc is Suspend:
        _reply(from_, ("ok", None))
        suspended = True
    elif rc is Resume:
        _reply(from_, ("ok", None))
        suspended = False
    elif rc is ChangeCode:
        if not suspended:
            _reply(from_, ("error", "not_suspended"))
        else:
            try:
                module = request.module
                if module.__class__ is ModuleName:
                    module = importlib.import_module(module.name)
                new_misc = cbs.system_code_change(misc, module, request.old_vsn, request.extra)
            except Exception as e:
                _reply(from_, ("error", e))  # the old code and state stay
            else:
                misc = new_misc
                _reply(from_, ("ok", None))
    elif rc is Migrate:
        misc = _migrate(request, from_, cbs, misc)
    elif rc is SwitchCode:
        switch = getattr(cbs, "system_switch_code", None)
        if not suspended:
            _reply(from_, ("error", "not_suspended"))
        elif switch is None:
            _reply(from_, ("error", ("unknown_system_msg", request)))
        else:
            try:
                misc = switch(misc, request.new)
            except Exception as e:
                _reply(from_, ("error", e))
            else:
                _reply(from_, ("ok", None))
    elif rc is Terminate:
        _terminate(cbs, request.reason, parent, debug, misc)
    elif rc is SetStatistics:
        if request.flag is None:
            _reply(from_, ("ok", _statistics_of(debug)))
        else:
            if request.flag:
                debug = debug or Debug()
                debug.stats = True
                debug.start_time = current_node().clock.now()
                debug.msgs_in = debug.msgs_out = 0
            elif debug is not None:
                debug.stats = False
            debug = _tidy(debug)
            _reply(from_, ("ok", None))
    elif rc is SetTrace:
        if request.flag:
            debug = debug or Debug()
            debug.trace = True
        elif debug is not None:
            debug.trace = False
        debug = _tidy(debug)
        _reply(from_, ("ok", None))
    elif rc is SetLog:
        debug = _set_log(from_, debug, request.flag)
    elif rc is Install:
        debug = debug or Debug()
        if debug.funcs is None:
            debug.funcs = {}
        debug.funcs[request.fn] = request.state
        _reply(from_, ("ok", None))
    elif rc is Remove:
        if debug is not None and debug.funcs:
            debug.funcs.pop(request.fn, None)
        debug = _tidy(debug)
        _reply(from_, ("ok", None))
    elif rc is NoDebug:
        debug = None
        _reply(from_, ("ok", None))
    else:
        _reply(from_, ("error", ("unknown_system_msg", request)))
    return debug, misc, suspended


def _migrate(request: Migrate, from_: Any, cbs: SystemCallbacks, misc: Any) -> Any:
    """``migrate`` in the process: what ``suspend``, ``change_code``, ``switch_code``
    and ``resume`` do, with no other message in between; on any failure the process
    keeps its class and a copy of the state taken first (a ``code_change`` that
    raised may have changed the state in place)."""
    switch = getattr(cbs, "system_switch_code", None)
    if request.then is not None and switch is None:
        _reply(from_, ("error", ("unknown_system_msg", request)))
        return misc
    before = code_mod.process_class(_self())
    snapshot: Any = _NO_COPY
    try:
        state = cbs.system_get_state(misc)
        try:
            snapshot = copy.deepcopy(state)
        except Exception:  # sockets, locks...: no copy to go back to
            snapshot = _NO_COPY
        module = request.module
        if module.__class__ is ModuleName:
            module = importlib.import_module(module.name)
        new_misc = cbs.system_code_change(misc, module, request.old_vsn, request.extra)
        if request.then is not None and switch is not None:
            try:
                new_misc = switch(new_misc, request.then)
            except Exception:
                if before is not None:
                    switch(misc, before)
                raise
    except Exception as e:
        if snapshot is not _NO_COPY:
            try:
                _state, misc = cbs.system_replace_state(lambda _s: snapshot, misc)
            except Exception:
                pass  # the callback's own failure: the state stays as it is
        _reply(from_, ("error", e))
        return misc
    _reply(from_, ("ok", None))
    return new_misc


_NO_COPY = object()


def _terminate(
    cbs: SystemCallbacks, reason: Any, parent: Pid | None, debug: Debug | None, misc: Any
) -> NoReturn:
    cbs.system_terminate(reason, parent, debug, misc)
    # A callback that returns breaks its contract: the process ends anyway.
    raise BadArg(
        f"{type(cbs).__qualname__}.system_terminate returned: it must end the process "
        f"(exit with the reason {reason!r})"
    )


def _tidy(debug: Debug | None) -> Debug | None:
    return None if debug is None or debug.is_empty() else debug


def _set_log(from_: Any, debug: Debug | None, flag: Any) -> Debug | None:
    if flag == "get" or flag == "print":
        entries = list(debug.log) if debug is not None and debug.log is not None else []
        if flag == "get":
            _state_reply(from_, [event for event, _ in entries])
        else:
            _reply(from_, ("ok", tuple(text for _, text in entries)))
        return debug
    if flag is False:
        if debug is not None:
            debug.log = None
        _reply(from_, ("ok", None))
        return _tidy(debug)
    debug = debug or Debug()
    n = 10 if flag is True else flag
    old = debug.log or ()
    debug.log = deque(old, maxlen=n)
    _reply(from_, ("ok", None))
    return debug


def _status(
    cbs: SystemCallbacks, parent: Pid | None, debug: Debug | None, misc: Any, suspended: bool
) -> Any:
    try:
        own = getattr(cbs, "system_get_status", None)
        if own is not None:
            ps = own(misc)
        else:
            info = process_info(_self())
            cls = type(cbs)
            ps = ProcessStatus(
                name=info.registered_name if info is not None else None,
                module=f"{cls.__module__}.{cls.__qualname__}",
                state=cbs.system_get_state(misc),
            )
    except Exception as e:
        return ("error", ("callback_failed", e))
    return (
        "ok",
        Status(
            pid=_self(),
            name=ps.name,
            module=ps.module,
            status="suspended" if suspended else "running",
            parent=parent,
            state=ps.state,
            statistics=_statistics_of(debug),
            trace=debug is not None and debug.trace,
        ),
    )


# --- the client side -------------------------------------------------------------------------


def _system(server: Any, request: Any, timeout: float | None) -> Any:
    result = _gen.system_call(server, request, timeout)
    match result:
        case ("ok", value):
            return value
        case ("error", reason):
            err = CallError(reason, server, request)
            if isinstance(reason, BaseException):
                raise err from reason
            if (
                isinstance(reason, tuple)
                and len(reason) == 2
                and isinstance(reason[1], BaseException)
            ):
                raise err from reason[1]
            raise err
    raise CallError(("bad_system_reply", result), server, request)


def get_state(server: Any, timeout: float | None = 5.0) -> Any:
    """The server's state, read between two callbacks."""
    return _system(server, GetState(), timeout)


def replace_state(server: Any, fn: Callable[[Any], Any], timeout: float | None = 5.0) -> Any:
    """Replace the state with ``fn(state)`` (run inside the server); returns the new state."""
    if not callable(fn):
        raise BadArg(f"replace_state expects a function state -> state, got {fn!r}")
    return _system(server, ReplaceState(fn), timeout)


def get_status(server: Any, timeout: float | None = 5.0) -> Status:
    """A ``Status`` snapshot of the process."""
    return _system(server, GetStatus(), timeout)  # type: ignore[no-any-return, unused-ignore]


def suspend(server: Any, timeout: float | None = 5.0) -> None:
    """Stop handling ordinary messages (they queue) until ``resume``."""
    _system(server, Suspend(), timeout)


def resume(server: Any, timeout: float | None = 5.0) -> None:
    """Handle ordinary messages again, the queued ones first, in order."""
    _system(server, Resume(), timeout)


def change_code(
    server: Any,
    new: type | types.ModuleType,
    old_vsn: Any,
    extra: Any = None,
    timeout: float | None = 5.0,
) -> None:
    """Move a *suspended* process to the callbacks ``new`` (a class, or a module holding
    a class with the current class's name), migrating its state with
    ``new().code_change(old_vsn, state, extra)``."""
    if isinstance(new, types.ModuleType):
        target: Any = ModuleName(new.__name__)
    elif isinstance(new, type):
        target = new
    else:
        raise BadArg(
            f"change_code expects the new callback class or its module, got {new!r}"
        )
    _system(server, ChangeCode(target, old_vsn, extra), timeout)


def migrate(
    server: Any,
    new: type | types.ModuleType,
    old_vsn: Any,
    extra: Any = None,
    then: type | None = None,
    timeout: float | None = 5.0,
) -> None:
    """Move a process to new code in one system message, between two of its messages:
    what ``suspend``, ``change_code(server, new, old_vsn, extra)``, ``switch_code(server,
    then)`` (when ``then`` is given) and ``resume`` do, in one round trip, so the
    process is held only for its own ``code_change``. If anything raises, the process
    keeps its class and the state it had (a copy taken first), and the caller gets
    the ``CallError``. The release handler's ``update``."""
    if isinstance(new, types.ModuleType):
        target: Any = ModuleName(new.__name__)
    elif isinstance(new, type):
        target = new
    else:
        raise BadArg(f"migrate expects the new callback class or its module, got {new!r}")
    if then is not None and not isinstance(then, type):
        raise BadArg(f"migrate expects then=None or a class to switch to, got {then!r}")
    _system(server, Migrate(target, old_vsn, extra, then), timeout)


def switch_code(server: Any, new: type, timeout: float | None = 5.0) -> None:
    """Make a *suspended* process's callbacks ``new``'s without migrating its state
    (no ``code_change``): the release handler's rollback and downgrade."""
    if not isinstance(new, type):
        raise BadArg(f"switch_code expects the new callback class, got {new!r}")
    _system(server, SwitchCode(new), timeout)


def terminate(server: Any, reason: Any = "normal", timeout: float | None = None) -> None:
    """End the process the way its behaviour ends (``system_terminate``: a gen_server
    runs ``terminate``); returns once it has ended with ``reason``. ``CallError``
    with its exit reason if it ended with another one."""
    request = Terminate(reason)
    pid = _gen.resolve(server)
    if pid is None:
        raise CallError("noproc", server, request)
    me = _self()
    if pid == me:
        raise CallError("calling_self", server, request)
    tag = monitor(pid)
    send(pid, (SYSTEM, (me, tag), request))
    got = _gen.wait_down(tag, timeout)
    if got is _gen.TIMEOUT:
        raise CallTimeout(server, request, timeout)
    if got == reason:
        return
    raise CallError(got, server, request)


def statistics(server: Any, flag: bool | None = None, timeout: float | None = 5.0) -> Any:
    """``True``: start counting (from zero); ``False``: stop; ``None``: the current
    ``Statistics``, or None when not counting."""
    if flag is not None and not isinstance(flag, bool):
        raise BadArg(f"statistics expects True, False or None, got {flag!r}")
    return _system(server, SetStatistics(flag), timeout)


def trace(server: Any, flag: bool, timeout: float | None = 5.0) -> None:
    """Turn on (off) logging of every event of the process (messages in and out)."""
    if not isinstance(flag, bool):
        raise BadArg(f"trace expects True or False, got {flag!r}")
    _system(server, SetTrace(flag), timeout)


def log(
    server: Any,
    flag: bool | int | Literal["get", "print"],
    timeout: float | None = 5.0,
) -> list[Any] | None:
    """Keep the process's last events: ``True`` the last 10, an int ``n`` the last
    ``n``, ``False`` none (and forget them). ``"get"``: the kept events, oldest first
    (a copy); ``"print"``: log them (logger ``otp.sys``, INFO) as ``*DBG*`` lines."""
    if flag == "get" or flag == "print":
        pass
    elif isinstance(flag, bool):
        pass
    elif not isinstance(flag, int) or flag < 1:
        raise BadArg(f"log expects True, False, a count >= 1, 'get' or 'print', got {flag!r}")
    got = _system(server, SetLog(flag), timeout)
    if flag == "get":
        return list(got)
    if flag == "print":
        for line in got:
            trace_log.info("%s", line)
    return None


def install(
    server: Any,
    fn: Callable[[Any, Any, Any], Any],
    state: Any = None,
    timeout: float | None = 5.0,
) -> None:
    """Call ``fn(fn_state, event, name)`` in the process on each of its events, starting
    from ``state``; ``fn`` returns the next ``fn_state``, or ``DONE`` to be removed. One
    that raises is logged and removed. Installing ``fn`` again replaces its state."""
    if not callable(fn):
        raise BadArg(f"install expects a function (fn_state, event, name) -> fn_state, got {fn!r}")
    _system(server, Install(fn, state), timeout)


def remove(server: Any, fn: Callable[[Any, Any, Any], Any], timeout: float | None = 5.0) -> None:
    """Remove a function ``install`` put in (nothing if it is not there)."""
    _system(server, Remove(fn), timeout)


def no_debug(server: Any, timeout: float | None = 5.0) -> None:
    """Turn every debug facility off: statistics, trace, log, installed functions."""
    _system(server, NoDebug(), timeout)
