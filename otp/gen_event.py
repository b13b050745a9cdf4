"""Event managers: OTP's ``gen_event``, one process that passes every event it gets to
any number of plug-in *handlers*.

An event manager is a process; a handler is a subclass of ``EventHandler`` added to a
manager at run time, with its own state. Every event sent to the manager (``notify``)
goes to every handler in turn, in the manager's process. Loggers, alarm handlers and
metrics sinks are the classic uses: the code that raises events does not know who
listens.

Example::

    import otp
    from otp import gen_event
    from otp.gen_event import EventHandler, Ok, Reply

    class Counter(EventHandler):
        def init(self, arg):
            return Ok(0)

        def handle_event(self, event, state):
            return Ok(state + 1)

        def handle_call(self, request, state):
            return Reply(state, state)          # answer "how many events so far"

    def main():
        mgr = gen_event.start_link(name="events")
        gen_event.add_handler("events", Counter, None)
        gen_event.notify("events", ("disk_full", "/var"))
        gen_event.sync_notify("events", ("disk_ok", "/var"))  # returns once handled
        assert gen_event.call("events", Counter, "count") == 2
        gen_event.stop(mgr)

    otp.run(main)

Client API -> handler callback (as in OTP's gen_event.erl):

==============================================  ==========================================
``start`` / ``start_link``                      (a manager with no handlers)
``add_handler(mgr, handler, args)``             ``init(args)``
``add_sup_handler(mgr, handler, args)``         ``init(args)``; the handler is tied to the
                                                caller (below)
``notify(mgr, event)`` / ``sync_notify``        ``handle_event(event, state)`` of every
                                                handler
``call(mgr, handler, request, timeout)``        ``handle_call(request, state)`` of one
any other message to the manager               ``handle_info(msg, state)`` of every
                                                handler
``delete_handler(mgr, handler, args)``          ``terminate(args, state)``, whose result
                                                ``delete_handler`` returns
``swap_handler(mgr, (h1, a1), (h2, a2))``       ``h1.terminate(a1, state)`` -> ``r``, then
                                                ``h2.init((a2, r))``
``which_handlers(mgr)``                         (the handler ids)
``stop(mgr)``                                   ``terminate("stop", state)`` of every
                                                handler
``otp.sys.change_code``                         ``code_change(old_vsn, state, extra)``
crash report, ``otp.sys.get_status``            ``format_status(status)``
==============================================  ==========================================

A handler id is its class, or ``(cls, id)`` to add the same class more than once.
Handlers are kept most recently added first (as in OTP); each event visits them in
that order.

Handler callback returns (anything else removes the handler, see below):

- ``init``: ``Ok(state)``, or ``Error(reason)`` (the add fails with
  ``HandlerError(reason)``).
- ``handle_event`` / ``handle_info``: ``Ok(state)``; ``RemoveHandler()`` (the handler is
  removed: ``terminate("remove_handler", state)``); ``SwapHandler(args1, state,
  handler2, args2)`` (replaced by ``handler2`` as by ``swap_handler``, supervised by the
  same process).
- ``handle_call``: ``Reply(value, state)``; ``RemoveHandler(reply=value)``;
  ``SwapHandler(args1, state, handler2, args2, reply=value)``.
- ``terminate(arg, state)``: anything (``delete_handler`` returns it; ``swap_handler``
  gives it to the next handler's ``init``). ``arg`` is what ``delete_handler`` was
  given, ``"remove_handler"``, ``"stop"`` (the manager stops), ``("stop", reason)``
  (the supervising process ended), ``("error", ("EXIT", exc))`` (the handler raised) or
  ``("error", ("bad_return_value", value))``.
- ``code_change``: the new state. ``format_status``: the status dict, redacted.

Supervised handlers: ``add_sup_handler`` links the manager to the caller. If the caller
ends, the handler is removed (``terminate(("stop", reason), state)``). Whenever the
handler is removed, the caller gets a ``GenEventExit(handler, reason)`` message (OTP's
``gen_event_EXIT``): ``reason`` is ``"normal"`` (``delete_handler`` or
``RemoveHandler``), ``"shutdown"`` (the manager stopped), ``Swapped(new_handler,
supervisor)`` (swapped out), or the error (``("EXIT", exc)``, ``("bad_return_value",
value)``).

Failures: a handler that raises or returns something illegal is removed and
``terminate`` runs with ``("error", ...)``; one ERROR report goes to logger
``otp.report`` (label ``gen_event_handler_crashed``, with the handler, the manager,
the last message, the handler's state after ``format_status``, the reason and the
stack); the manager and the other handlers go on, and a ``call`` to the crashed
handler raises ``HandlerError(("EXIT", exc))``. ``call`` and ``delete_handler`` of a
handler that is not installed raise ``HandlerError("module_not_found")``; adding an id
that is installed, ``HandlerError("already_present")``. Calls to the manager fail like
``gen_server.call`` (``CallError``, ``CallTimeout``: 5 s by default); ``notify`` never
fails. The manager traps exits: its parent's EXIT stops it (every handler's
``terminate("stop", ...)`` runs), other EXITs go to the handlers' ``handle_info``.

``otp.sys``: ``get_state`` returns ``[(handler, state), ...]``; ``replace_state(fn)``
replaces each handler's pair with ``fn((handler, state))`` (the id must stay);
``change_code(mgr, cls, old_vsn)`` moves every handler of that class (a class of the
same name, or every class of a module) to the new code with ``code_change``;
``suspend``/``resume`` hold the events.

When not to use it: handlers run one after another in one process, so a slow handler
delays all the others and the event's sender if it used ``sync_notify``; give slow work
its own process (a ``gen_server`` the handler casts to). For one consumer with state,
use a ``gen_server``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from otp import _gen, proc_lib
from otp._gen import CALL, CAST, Via, check_name
from otp.errors import BadArg, HandlerError
from otp.process import Pid, send
from otp.process import self as _self

__all__ = [
    "Error",
    "EventHandler",
    "GenEventExit",
    "HandlerId",
    "Ok",
    "RemoveHandler",
    "Reply",
    "SwapHandler",
    "Swapped",
    "Via",
    "add_handler",
    "add_sup_handler",
    "call",
    "delete_handler",
    "notify",
    "start",
    "start_link",
    "stop",
    "swap_handler",
    "swap_sup_handler",
    "sync_notify",
    "which_handlers",
]


#: A handler's id: its class, or ``(cls, id)``.
HandlerId = type | tuple[type, Any]


# --- handler callback returns ---------------------------------------------------------


class Ok(NamedTuple):
    """``init``, ``handle_event``, ``handle_info``: go on with ``state``."""

    state: Any


class Error(NamedTuple):
    """``init``: refuse to be added; the add raises ``HandlerError(reason)``."""

    reason: Any


class Reply(NamedTuple):
    """``handle_call``: answer ``value``, go on with ``state``."""

    value: Any
    state: Any


class RemoveHandler(NamedTuple):
    """Remove this handler (``terminate("remove_handler", state)``); from
    ``handle_call``, ``reply`` is the caller's answer."""

    reply: Any = None


class SwapHandler(NamedTuple):
    """Replace this handler: ``terminate(args1, state)`` -> ``r``, then
    ``handler2.init((args2, r))``; from ``handle_call``, ``reply`` is the answer."""

    args1: Any
    state: Any
    handler2: Any
    args2: Any
    reply: Any = None


# --- messages to a supervising process --------------------------------------------------


class Swapped(NamedTuple):
    """The ``GenEventExit`` reason of a handler swapped out for ``new_handler``."""

    new_handler: Any
    supervisor: Pid | None


class GenEventExit(NamedTuple):
    """Sent to the process that added ``handler`` with ``add_sup_handler`` (or
    ``swap_sup_handler``) when the handler is removed, for any ``reason``."""

    handler: Any
    reason: Any


# --- the handler behaviour ---------------------------------------------------------------


class EventHandler:
    """Base class of event handlers: override the callbacks you need. Every callback
    runs in the manager's process; raising removes the handler (and is reported).

    Like a ``GenServer`` the handler object is stateless: the state is passed in and
    returned. Defaults: ``init`` returns ``Ok(args)``; ``handle_event`` and
    ``handle_info`` keep the state; ``handle_call`` raises (the caller gets
    ``HandlerError``, the handler is removed); ``terminate`` returns None;
    ``code_change`` keeps the state; ``format_status`` shows everything.
    """

    def init(self, args: Any) -> Ok | Error:
        return Ok(args)

    def handle_event(self, event: Any, state: Any) -> Ok | RemoveHandler | SwapHandler:
        return Ok(state)

    def handle_call(self, request: Any, state: Any) -> Reply | RemoveHandler | SwapHandler:
        raise NotImplementedError(
            f"{type(self).__module__}.{type(self).__qualname__} got call {request!r} "
            "but does not define handle_call(request, state)"
        )

    def handle_info(self, msg: Any, state: Any) -> Ok | RemoveHandler | SwapHandler:
        return Ok(state)

    def terminate(self, arg: Any, state: Any) -> Any:
        return None

    def code_change(self, old_vsn: Any, state: Any, extra: Any) -> Any:
        return state

    def format_status(self, status: dict[str, Any]) -> dict[str, Any]:
        return status


def check_handler(handler: Any) -> type[EventHandler]:
    """The class of a handler id; ``BadArg`` if it is not one."""
    cls = handler[0] if handler.__class__ is tuple and len(handler) == 2 else handler
    if not (isinstance(cls, type) and issubclass(cls, EventHandler)):
        raise BadArg(
            f"expected a handler id: an EventHandler subclass or (subclass, id), "
            f"got {handler!r}"
        )
    try:
        hash(handler)
    except TypeError:
        raise BadArg(f"a handler id must be hashable, got {handler!r}") from None
    return cls


# --- requests to the manager (the gen call protocol carries them) --------------------------


class AddHandler(NamedTuple):
    handler: Any
    args: Any
    supervisor: Pid | None


class DeleteHandler(NamedTuple):
    handler: Any
    args: Any


class SwapHandlers(NamedTuple):
    old: Any
    args1: Any
    new: Any
    args2: Any
    supervisor: Pid | None


class HandlerCall(NamedTuple):
    handler: Any
    request: Any


class SyncNotify(NamedTuple):
    event: Any


class WhichHandlers(NamedTuple):
    pass


# --- client API ------------------------------------------------------------------------------


def start(*, name: str | Via | None = None, timeout: float | None = None) -> Pid:
    """Start an event manager with no handlers (not linked); returns its pid.
    ``StartError(("already_started", pid))`` if ``name`` is taken."""
    from otp import _gen_event_mgr

    check_name(name)
    pid: Pid = proc_lib.start_as(
        _gen_event_mgr.init_it, (name, None), link=False, timeout=timeout,
        initial="otp.gen_event.init",
    )
    return pid


def start_link(*, name: str | Via | None = None, timeout: float | None = None) -> Pid:
    """Like ``start``, linked to the caller, which becomes the manager's parent."""
    from otp import _gen_event_mgr

    check_name(name)
    pid: Pid = proc_lib.start_as(
        _gen_event_mgr.init_it, (name, _self()), link=True, timeout=timeout,
        initial="otp.gen_event.init",
    )
    return pid


_call = _gen.make_call(CALL)


def _request(mgr: Any, request: Any, handler: Any, timeout: float | None) -> Any:
    got = _call(mgr, request, timeout)
    if got.__class__ is tuple and len(got) == 2:
        if got[0] == "ok":
            return got[1]
        if got[0] == "error":
            raise HandlerError(got[1], handler)
    raise HandlerError(("bad_reply", got), handler)


def add_handler(mgr: Pid | str | Via, handler: Any, args: Any = None,
                timeout: float | None = 5.0) -> None:
    """Add ``handler`` (a class, or ``(cls, id)``) with ``init(args)``. Raises
    ``HandlerError`` with ``Error``'s reason, ``("EXIT", exc)`` if ``init`` raised, or
    ``"already_present"``."""
    check_handler(handler)
    _request(mgr, AddHandler(handler, args, None), handler, timeout)


def add_sup_handler(mgr: Pid | str | Via, handler: Any, args: Any = None,
                    timeout: float | None = 5.0) -> None:
    """Like ``add_handler``, tied to the caller: the manager links to it; if the caller
    ends the handler is removed, and when the handler is removed the caller gets
    ``GenEventExit(handler, reason)``."""
    check_handler(handler)
    _request(mgr, AddHandler(handler, args, _self()), handler, timeout)


def notify(mgr: Pid | str | Via, event: Any) -> None:
    """Send ``event`` to every handler's ``handle_event``; never fails, never waits."""
    if mgr.__class__ is Pid:
        send(mgr, (CAST, event))
    else:
        _gen.send_to(mgr, (CAST, event))


def sync_notify(mgr: Pid | str | Via, event: Any, timeout: float | None = 5.0) -> None:
    """Like ``notify``, returning once every handler has handled ``event``."""
    _request(mgr, SyncNotify(event), None, timeout)


def call(mgr: Pid | str | Via, handler: Any, request: Any, timeout: float | None = 5.0) -> Any:
    """``handle_call(request, state)`` of one handler; returns its reply.

    ``HandlerError("module_not_found")`` if it is not installed, ``HandlerError(("EXIT",
    exc))`` if it raised (it is removed); ``CallError``/``CallTimeout`` as for any call.
    """
    check_handler(handler)
    return _request(mgr, HandlerCall(handler, request), handler, timeout)


def delete_handler(mgr: Pid | str | Via, handler: Any, args: Any = None,
                   timeout: float | None = 5.0) -> Any:
    """Remove ``handler``: returns what its ``terminate(args, state)`` returned.
    ``HandlerError("module_not_found")`` if it is not installed."""
    check_handler(handler)
    return _request(mgr, DeleteHandler(handler, args), handler, timeout)


def swap_handler(mgr: Pid | str | Via, old: tuple[Any, Any], new: tuple[Any, Any],
                 timeout: float | None = 5.0) -> None:
    """Replace handler ``old[0]`` by ``new[0]``: ``old.terminate(old[1], state)`` -> r,
    then ``new.init((new[1], r))``. The old one is removed even if the new one fails
    to start (``HandlerError`` with its reason). The new handler is not supervised."""
    _swap(mgr, old, new, None, timeout)


def swap_sup_handler(mgr: Pid | str | Via, old: tuple[Any, Any], new: tuple[Any, Any],
                     timeout: float | None = 5.0) -> None:
    """Like ``swap_handler``, the new handler supervised by the caller."""
    _swap(mgr, old, new, _self(), timeout)


def _swap(mgr: Any, old: Any, new: Any, sup: Pid | None, timeout: float | None) -> None:
    for what, pair in (("old", old), ("new", new)):
        if not (pair.__class__ is tuple and len(pair) == 2):
            raise BadArg(f"swap_handler expects {what} as (handler, args), got {pair!r}")
        check_handler(pair[0])
    _request(mgr, SwapHandlers(old[0], old[1], new[0], new[1], sup), new[0], timeout)


def which_handlers(mgr: Pid | str | Via, timeout: float | None = 5.0) -> list[Any]:
    """The installed handler ids, most recently added first."""
    return list(_request(mgr, WhichHandlers(), None, timeout))


def stop(mgr: Pid | str | Via, reason: Any = "normal", timeout: float | None = None) -> None:
    """Stop the manager: every handler's ``terminate("stop", state)`` runs, then it
    ends with ``reason``; returns once it has. ``CallError("noproc")`` if there is no
    such manager."""
    from otp import sys as otp_sys

    otp_sys.terminate(mgr, reason, timeout)
