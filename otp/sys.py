"""The debug and upgrade interface every behaviour process serves: OTP's ``sys``.

Every ``gen_server`` (so every supervisor too) answers *system messages* between two
callbacks, whatever it is doing otherwise: read or replace its state, report its
status, suspend and resume it, move it to new code, count and trace its messages.
The release handler uses exactly this for live upgrades::

    from otp import sys as otp_sys

    otp_sys.suspend(server)                         # only system messages now
    otp_sys.change_code(server, CounterV2, old_vsn="1")
    otp_sys.resume(server)                          # queued messages run on CounterV2

    otp_sys.get_state(server)                       # the state, between callbacks
    otp_sys.replace_state(server, lambda s: s + 1)
    otp_sys.statistics(server, True)                # start counting
    otp_sys.statistics(server)                      # Statistics(start_time=..., ...)
    otp_sys.trace(server, True)                     # log every message in and out

API -> what the server does:

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
``statistics(server, flag)``          True: start (or restart) counting; False:
                                      stop; None: the ``Statistics`` (or None)
``trace(server, flag)``               log every message in and out (logger
                                      ``otp.sys``, INFO), Erlang's ``*DBG*`` lines
====================================  =============================================

``new`` for ``change_code`` is the new callback class, or a module holding a class of
the same name as the current one.

Failures: every function raises ``CallError`` (``noproc``, ``calling_self``, or the
process's exit reason if it dies meanwhile) or ``CallTimeout``, like
``gen_server.call``. System messages are ``("$system", From, request)``.

When not to use it: in application logic. It is for operators, tests and the release
handler; a server's clients should go through its own API.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from otp import _gen
from otp.errors import BadArg, CallError

__all__ = [
    "Statistics",
    "Status",
    "change_code",
    "get_state",
    "get_status",
    "replace_state",
    "resume",
    "statistics",
    "suspend",
    "trace",
]


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
    return _system(server, "get_state", timeout)


def replace_state(server: Any, fn: Callable[[Any], Any], timeout: float | None = 5.0) -> Any:
    """Replace the state with ``fn(state)`` (run inside the server); returns the new state."""
    if not callable(fn):
        raise BadArg(f"replace_state expects a function state -> state, got {fn!r}")
    return _system(server, ("replace_state", fn), timeout)


def get_status(server: Any, timeout: float | None = 5.0) -> Status:
    """A ``Status`` snapshot of the process."""
    return _system(server, "get_status", timeout)  # type: ignore[no-any-return, unused-ignore]


def suspend(server: Any, timeout: float | None = 5.0) -> None:
    """Stop handling ordinary messages (they queue) until ``resume``."""
    _system(server, "suspend", timeout)


def resume(server: Any, timeout: float | None = 5.0) -> None:
    """Handle ordinary messages again, the queued ones first, in order."""
    _system(server, "resume", timeout)


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
        target: Any = ("module", new.__name__)
    elif isinstance(new, type):
        target = new
    else:
        raise BadArg(
            f"change_code expects the new callback class or its module, got {new!r}"
        )
    _system(server, ("change_code", target, old_vsn, extra), timeout)


def statistics(server: Any, flag: bool | None = None, timeout: float | None = 5.0) -> Any:
    """``True``: start counting (from zero); ``False``: stop; ``None``: the current
    ``Statistics``, or None when not counting."""
    if flag is not None and not isinstance(flag, bool):
        raise BadArg(f"statistics expects True, False or None, got {flag!r}")
    return _system(server, ("statistics", flag), timeout)


def trace(server: Any, flag: bool, timeout: float | None = 5.0) -> None:
    """Turn on (off) logging of every message the process gets and sends."""
    if not isinstance(flag, bool):
        raise BadArg(f"trace expects True or False, got {flag!r}")
    _system(server, ("trace", flag), timeout)
