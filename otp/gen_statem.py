"""State machines: OTP's ``gen_statem``, a server whose reaction to an event depends on
the state it is in.

A state machine is a subclass of ``GenStatem``. It has a *state* (which state it is in:
``"locked"``, ``"open"``) and *data* (everything else it holds); each event is handled
by the callback of the current state, which returns the next state, the next data and a
list of *actions* (replies, timeouts, postponing the event, inserting events). The
process, the event queue, the timers, calls with timeouts, crash reports and the
``otp.sys`` interface come from here.

Example (a code lock: the right code opens it for 10 s; ``state_enter`` gives every
state an *enter call* when it is entered)::

    import otp
    from otp import gen_statem
    from otp.gen_statem import (
        Call, GenStatem, KeepState, KeepStateAndData, NextState, Ok, Reply, StateTimeout,
    )

    class Lock(GenStatem):
        state_enter = True

        def init(self, code):
            return Ok("locked", {"code": code, "typed": ""})

        def locked(self, event_type, content, data):
            match event_type, content:
                case "enter", _:
                    return KeepState({**data, "typed": ""})
                case Call(from_), ("press", digit):
                    typed = data["typed"] + digit
                    if typed == data["code"]:
                        return NextState("open", data, Reply(from_, "open"))
                    return KeepState({**data, "typed": typed}, Reply(from_, "locked"))
            return KeepStateAndData()

        def open(self, event_type, content, data):
            match event_type, content:
                case "enter", _:
                    return KeepStateAndData(StateTimeout(10.0, "lock"))
                case "state_timeout", "lock":
                    return NextState("locked", data)
                case Call(from_), ("press", _):
                    return KeepStateAndData(Reply(from_, "open"))
            return KeepStateAndData()

    def main():
        pid = gen_statem.start_link(Lock, "12")
        assert gen_statem.call(pid, ("press", "1")) == "locked"
        assert gen_statem.call(pid, ("press", "2")) == "open"
        gen_statem.stop(pid)

    otp.run(main)

Client API -> callback (as in OTP's gen_statem.erl):

=======================================  ==================================================
``start`` / ``start_link``               ``init(arg)`` (in the new process; they return
                                         after it)
``call(server, request, timeout)``       event ``(Call(from_), request)``
``cast(server, request)``                event ``("cast", request)``
any other message                        event ``("info", msg)``
a timeout or an inserted event           see the event table below
entering a state (``state_enter``)       event ``("enter", old_state)``
``stop`` / a ``Stop`` return / a crash   ``terminate(reason, state, data)``
``otp.sys.change_code``                  ``code_change(old_vsn, state, data, extra)`` (new
                                         class) -> ``(state, data)``
crash report, ``otp.sys.get_status``     ``format_status(status)``
=======================================  ==================================================

Callback mode (class attributes): ``callback_mode = CallbackMode.STATE_FUNCTIONS`` (the
default) calls the method named after the state, ``self.<state>(event_type, content,
data)``: states are then ``str`` names of methods. ``CallbackMode.HANDLE_EVENT_FUNCTION``
calls ``self.handle_event(event_type, content, state, data)`` for every event, and the
state may be any value (compared with ``==``). ``state_enter = True`` makes the machine
call the state's callback with ``("enter", old_state)`` each time a state is entered,
the initial one included (its ``old_state`` is the state itself), and on
``RepeatState``.

Events (``event_type``, ``content``); ``EventType`` members are ``str``s, so ``case
"cast":`` matches ``EventType.CAST``:

==========================  =================================  ========================
OTP event type              ``event_type`` here                ``content``
==========================  =================================  ========================
``{call, From}``            ``Call(from_)``                    the request
``cast``                    ``"cast"``                         the request
``info``                    ``"info"``                         the message
``timeout``                 ``"timeout"`` (event timeout)      the timeout's content
``state_timeout``           ``"state_timeout"``                the timeout's content
``{timeout, Name}``         ``NamedTimeout(name)``             the timeout's content
``internal``                ``"internal"`` (or any type given  as given
                            to ``NextEvent``)
``enter``                   ``"enter"``                        the previous state
==========================  =================================  ========================

Callback returns (``actions`` is one action, a list or tuple of them, or None):

- ``init``: ``Ok(state, data, actions=None)``, ``Ignore()`` (start returns None),
  ``Stop(reason)`` (the start fails with ``reason``).
- a state callback: ``NextState(state, data, actions)``; ``KeepState(data, actions)``;
  ``KeepStateAndData(actions)``; ``RepeatState(data, actions)`` and
  ``RepeatStateAndData(actions)`` (the state does not change, but its enter call runs
  again); ``Stop(reason, data=<unchanged>)``; ``StopAndReply(reason, replies,
  data=<unchanged>)`` (the replies are sent, then ``terminate`` runs).
- an enter call: the same, except that it may not change the state (``NextState`` to
  the same state is allowed) nor use ``Postpone`` or ``NextEvent``;
  ``RepeatState`` runs the enter call again.

Actions:

===============================================  =====================================
``Reply(from_, value)``                          answer a call now (or answer it later,
                                                 in any state, with ``reply``)
``Postpone()``                                   keep the event: it is handled again,
                                                 in its original order, after the next
                                                 state change
``NextEvent(event_type, content)``               insert an event: inserted events are
                                                 handled, in order, before any queued
                                                 one and any message
``EventTimeout(seconds, content=None)``          event ``("timeout", content)`` unless
                                                 any event comes first
``StateTimeout(seconds, content=None)``          event ``("state_timeout", content)``
                                                 unless the state changes first
``GenericTimeout(name, seconds, content=None)``  event ``(NamedTimeout(name),
                                                 content)``; only a new timeout of the
                                                 same name replaces or cancels it
``Hibernate()``                                  a hint, as in ``gen_server``
===============================================  =====================================

Timeouts: ``seconds=None`` means infinity, which cancels a running timeout of that kind;
starting one that runs restarts it. ``0`` fires at once, but only after the events
already queued (inserted and postponed ones), before any message not yet received.
Every timeout runs on the node clock.

Names and calls work as in ``gen_server``: ``name="lock"`` or ``name=Via(registry,
key)``; ``call`` waits 5 s by default and raises ``CallError``/``CallTimeout``; ``cast``
never fails; ``stop(server, reason)`` runs ``terminate``.

Failures (docs/semantics.md G1-G9, as for ``gen_server``): ``terminate`` runs after a
``Stop`` return, an exception in a callback, ``stop``, or an EXIT from the parent
(delivered as a message only when trapping exits; an EXIT from the parent always ends
the machine). ``normal``, ``shutdown`` and ``("shutdown", term)`` log nothing; any
other reason logs one ERROR report to logger ``otp.report``, label
``gen_statem_terminate``, with the last event, the state and data (after
``format_status``), the queued and postponed events, the reason and the stack. Errors
stop the machine with OTP's reasons: ``("bad_return_from_init", value)``,
``("bad_return_from_state_function", value)``, ``("bad_action_from_state_function",
action)``, ``("bad_state_enter_return_from_state_function", value)`` (an enter call
changed the state), ``("bad_state_enter_action_from_state_function", action)``,
``("undef_state_function", state)`` (no method for a state). An event a state
callback does not handle is the callback's business: return ``KeepStateAndData()`` to
drop it, ``Postpone()`` to keep it.

``otp.sys``: ``get_state`` returns ``(state, data)``; ``replace_state(fn)`` calls
``fn((state, data))`` which returns the new pair; ``change_code`` migrates with
``code_change``; ``suspend``/``resume`` hold the events (timeouts that fire meanwhile
wait in the mailbox).

When not to use it: for a server with one mode of operation (use ``gen_server``), or
for broadcasting events to plug-in handlers (use ``otp.gen_event``).
"""

from __future__ import annotations

import enum
from typing import Any, ClassVar, NamedTuple

from otp import _gen, proc_lib
from otp._gen import (
    CALL,
    CAST,
    From,
    ReqId,
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
from otp.errors import BadArg
from otp.process import Pid, send
from otp.process import self as _self

__all__ = [
    "Call",
    "CallbackMode",
    "EventTimeout",
    "EventType",
    "From",
    "GenStatem",
    "GenericTimeout",
    "Hibernate",
    "Ignore",
    "KeepState",
    "KeepStateAndData",
    "NamedTimeout",
    "NextEvent",
    "NextState",
    "Ok",
    "Postpone",
    "RepeatState",
    "RepeatStateAndData",
    "Reply",
    "StateTimeout",
    "Stop",
    "StopAndReply",
    "Via",
    "call",
    "cast",
    "check_response",
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


class CallbackMode(str, enum.Enum):
    """How events reach the callbacks (the class attribute ``callback_mode``)."""

    STATE_FUNCTIONS = "state_functions"
    HANDLE_EVENT_FUNCTION = "handle_event_function"


class EventType(str, enum.Enum):
    """The event types that carry no value (``Call(from_)`` and ``NamedTimeout(name)``
    are records)."""

    CAST = "cast"
    INFO = "info"
    INTERNAL = "internal"
    TIMEOUT = "timeout"
    STATE_TIMEOUT = "state_timeout"
    ENTER = "enter"


class _Keep(enum.Enum):
    # An enum member, so that a Stop record stays an immutable value (sendable).
    KEEP = "keep"

    def __repr__(self) -> str:
        return "KEEP"


#: ``Stop``/``StopAndReply`` without data: the data stays as it is.
KEEP: Any = _Keep.KEEP


# --- event types that are records -------------------------------------------------------


class Call(NamedTuple):
    """Event type of a ``call``: answer with a ``Reply(from_, value)`` action or with
    ``reply(from_, value)``."""

    from_: From


class NamedTimeout(NamedTuple):
    """Event type of a generic timeout started with ``GenericTimeout(name, ...)``."""

    name: Any


# --- init returns -------------------------------------------------------------------------


class Ok(NamedTuple):
    """``init`` succeeded: the first state and data, and optional actions."""

    state: Any
    data: Any
    actions: Any = None


class Ignore(NamedTuple):
    """``init``: do not start; ``start``/``start_link`` return None."""


# --- state callback returns ------------------------------------------------------------------


class NextState(NamedTuple):
    """Go to ``state`` with ``data``. A *state change* if ``state != `` the current one:
    postponed events are retried and a running state timeout is cancelled."""

    state: Any
    data: Any
    actions: Any = None


class KeepState(NamedTuple):
    """Stay in the current state, with ``data``."""

    data: Any
    actions: Any = None


class KeepStateAndData(NamedTuple):
    """Stay in the current state with the current data."""

    actions: Any = None


class RepeatState(NamedTuple):
    """Like ``KeepState``, but the state's enter call runs again (with ``state_enter``)."""

    data: Any
    actions: Any = None


class RepeatStateAndData(NamedTuple):
    """Like ``KeepStateAndData``, but the state's enter call runs again."""

    actions: Any = None


class Stop(NamedTuple):
    """Stop with ``reason`` after ``terminate(reason, state, data)`` (``data`` defaults to
    the current data); from ``init``, the start fails with ``reason``."""

    reason: Any
    data: Any = KEEP


class StopAndReply(NamedTuple):
    """Send ``replies`` (``Reply`` actions: one, or a list), then stop like ``Stop``."""

    reason: Any
    replies: Any
    data: Any = KEEP


# --- actions --------------------------------------------------------------------------------


class Reply(NamedTuple):
    """Action: answer the call ``from_`` with ``value``."""

    from_: From
    value: Any


class Postpone(NamedTuple):
    """Action: keep the current event; it is handled again after the next state change,
    in the order in which postponed events arrived."""


class NextEvent(NamedTuple):
    """Action: insert the event ``(event_type, content)``; inserted events are handled
    in order, before any queued event or message. ``event_type`` is usually
    ``"internal"``; any event type is allowed (e.g. ``"cast"`` to reuse a handler)."""

    event_type: Any
    content: Any = None


class EventTimeout(NamedTuple):
    """Action: the event ``("timeout", content)`` after ``seconds`` unless any event
    arrives first (None: cancel)."""

    seconds: float | None
    content: Any = None


class StateTimeout(NamedTuple):
    """Action: the event ``("state_timeout", content)`` after ``seconds`` unless the
    state changes first (None: cancel)."""

    seconds: float | None
    content: Any = None


class GenericTimeout(NamedTuple):
    """Action: the event ``(NamedTimeout(name), content)`` after ``seconds``; only
    another ``GenericTimeout`` of the same name restarts or cancels it (None)."""

    name: Any
    seconds: float | None
    content: Any = None


class Hibernate(NamedTuple):
    """Action: a hint that the machine will be idle a while (nothing else happens)."""


# --- the behaviour ------------------------------------------------------------------------------


class GenStatem:
    """Base class of state machines: override ``init`` and either one method per state
    (``callback_mode = CallbackMode.STATE_FUNCTIONS``, the default) or
    ``handle_event`` (``CallbackMode.HANDLE_EVENT_FUNCTION``).

    As for ``GenServer``, the callback object is stateless (made with ``cls()``): state
    and data are passed in and returned, which lets ``otp.sys.change_code`` swap the
    class under a live machine. Each callback runs in the machine's process; an
    exception in one stops the machine (``terminate`` runs, then a crash report).

    Defaults: ``init`` fails (a machine must choose its first state); ``handle_event``
    stops with ``("undef_state_function", state)``; ``terminate`` does nothing;
    ``code_change`` keeps state and data; ``format_status`` shows everything.
    """

    callback_mode: ClassVar[CallbackMode] = CallbackMode.STATE_FUNCTIONS
    state_enter: ClassVar[bool] = False

    def init(self, arg: Any) -> Ok | Ignore | Stop:
        """Run by the new process before ``start`` returns: the first state and data."""
        raise NotImplementedError(
            f"{type(self).__module__}.{type(self).__qualname__} must define init(arg) "
            "returning Ok(state, data), Ignore() or Stop(reason)"
        )

    def handle_event(self, event_type: Any, content: Any, state: Any, data: Any) -> Any:
        """Every event, in ``CallbackMode.HANDLE_EVENT_FUNCTION``."""
        return Stop(("undef_state_function", state))

    def terminate(self, reason: Any, state: Any, data: Any) -> None:
        """Run before the machine ends (see the module doc for when); raising replaces
        the exit reason with the exception."""
        return None

    def code_change(self, old_vsn: Any, state: Any, data: Any, extra: Any) -> tuple[Any, Any]:
        """Run on the *new* class by ``otp.sys.change_code``: the migrated
        ``(state, data)``; raising keeps the old code, state and data."""
        return state, data

    def format_status(self, status: dict[str, Any]) -> dict[str, Any]:
        """Redact the status (keys ``state``, ``data``, ``reason``, ``queue``,
        ``postponed``, ``timeouts``) shown in crash reports and ``get_status``."""
        return status


# --- client API ------------------------------------------------------------------------------


def _check_cls(what: str, cls: Any) -> None:
    if not (isinstance(cls, type) and issubclass(cls, GenStatem)):
        raise BadArg(
            f"{what} expects a GenStatem subclass, got {cls!r}"
            + ("" if isinstance(cls, type) else f" of type {type(cls).__name__}")
        )
    mode = cls.callback_mode
    if mode not in (CallbackMode.STATE_FUNCTIONS, CallbackMode.HANDLE_EVENT_FUNCTION):
        raise BadArg(
            f"{cls.__qualname__}.callback_mode must be CallbackMode.STATE_FUNCTIONS or "
            f"CallbackMode.HANDLE_EVENT_FUNCTION, got {mode!r}"
        )


def start(
    cls: type[GenStatem],
    arg: Any = None,
    *,
    name: str | Via | None = None,
    timeout: float | None = None,
) -> Pid | None:
    """Start a state machine (not linked) and return its pid once ``init`` has returned.

    ``Ignore`` -> None; ``Stop(reason)``, an exception in ``init`` or ``timeout``
    seconds passing -> ``StartError(reason)`` (the name is free again by then).
    """
    from otp import _gen_statem_loop

    _check_cls("start", cls)
    check_name(name)
    return proc_lib.start_as(
        _gen_statem_loop.init_it,
        (cls, arg, name, None),
        link=False,
        timeout=timeout,
        initial=f"{cls.__module__}.{cls.__qualname__}.init",
    )


def start_link(
    cls: type[GenStatem],
    arg: Any = None,
    *,
    name: str | Via | None = None,
    timeout: float | None = None,
) -> Pid | None:
    """Like ``start``, linked to the caller, which becomes the machine's parent."""
    from otp import _gen_statem_loop

    _check_cls("start_link", cls)
    check_name(name)
    return proc_lib.start_as(
        _gen_statem_loop.init_it,
        (cls, arg, name, _self()),
        link=True,
        timeout=timeout,
        initial=f"{cls.__module__}.{cls.__qualname__}.init",
    )


call: _gen.CallFn = _gen.make_call(CALL)


def send_request(server: Pid | str | Via, request: Any) -> ReqId:
    """Send ``request`` to the machine as a ``Call`` event without waiting; returns a
    ``ReqId`` for ``receive_response`` / ``wait_response`` / ``check_response`` (the
    same functions as ``otp.gen_server``'s, re-exported here): the answer comes through
    the request's own reply alias, and a second or late one is dropped (G10)."""
    return _gen.send_request(server, request, CALL)
call.__module__ = __name__
call.__qualname__ = call.__name__ = "call"  # type: ignore[attr-defined]
call.__doc__ = """call(server, request, timeout=5.0) -> reply

Send ``request`` as the event ``(Call(from_), request)`` and wait for the reply (a
``Reply`` action or ``reply(from_, value)``, in this state or a later one).

Raises ``CallError`` (``.reason``: ``"noproc"``, ``"calling_self"``, or the machine's
exit reason if it dies meanwhile) and ``CallTimeout`` after ``timeout`` seconds
(``None``: wait forever); a late reply is dropped.
"""


def cast(server: Pid | str | Via, request: Any) -> None:
    """Send ``request`` as the event ``("cast", request)``; never fails, never waits."""
    if server.__class__ is Pid:
        send(server, (CAST, request))
    else:
        _gen.send_to(server, (CAST, request))


def reply(from_: From, value: Any) -> None:
    """Answer a call from any process, in any state (the ``Reply`` action does the same
    from a callback). A reply after the caller gave up is dropped."""
    _gen.reply(from_, value)


def stop(server: Pid | str | Via, reason: Any = "normal", timeout: float | None = None) -> None:
    """Stop the machine with ``reason``: it runs ``terminate`` and ends; returns once it
    has. ``CallError("noproc")`` if there is no such machine, ``CallTimeout`` after
    ``timeout`` seconds, ``CallError(r)`` if it ended with another reason ``r``."""
    from otp import sys as otp_sys

    otp_sys.terminate(server, reason, timeout)
