"""The exception tree of ``otp``, in one place.

::

    BaseException
    ├── ProcessExit            an exit signal delivered into a process (not an Exception:
    │                          ``except Exception`` in user code cannot swallow it)
    └── Exception
        └── OTPError           base of every error this library raises
            ├── BadArg         a bad argument (also a TypeError and a ValueError)
            ├── NotInProcess   a call that needs a process was made outside one
            ├── NoProc         the named process does not exist (OTP's ``noproc``)
            ├── NameTaken      ``register`` of a name that is in use
            ├── AlreadyRegistered  ``register`` of a process that already has a name
            ├── ReceiveTimeout ``receive`` gave up waiting and no default was given
            ├── NodeError      a node was used wrongly (not running, two at once, ...)
            ├── NodeHalted     the node was halted (``.reason``): what ``Node.run`` raises
            ├── CallError      a ``gen_server.call`` failed (``.reason``: "noproc",
            │   │              "calling_self", or the server's exit reason)
            │   └── CallTimeout    no reply within the timeout (also a TimeoutError)
            ├── StartError     a process failed to start (``.reason``)
            ├── SupervisorError a supervisor request failed (``.reason``: "already_started",
            │                  "already_present", "not_found", "running", ...)
            ├── ChildSpecError a child spec is malformed (also a BadArg)
            ├── ApplicationError an application failed to load, start or stop
            └── ConfigError    a configuration file or value is invalid (also a ValueError)

Messages name what was expected and what was given, and the fix where it is not obvious.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AlreadyRegistered",
    "ApplicationError",
    "BadArg",
    "CallError",
    "CallTimeout",
    "ChildSpecError",
    "ConfigError",
    "NameTaken",
    "NoProc",
    "NodeError",
    "NodeHalted",
    "NotInProcess",
    "OTPError",
    "ProcessExit",
    "ReceiveTimeout",
    "StartError",
    "SupervisorError",
]


class ProcessExit(BaseException):
    """Ends the process it is raised in, with ``reason``.

    The runtime raises it inside a process that receives an exit signal (or that calls
    ``process.exit(reason)``). It derives from ``BaseException`` so that ``except
    Exception`` does not swallow it. Catching it anyway does not save the process: the
    runtime has already marked it dead, freed its name and sent its signals.
    """

    def __init__(self, reason: Any) -> None:
        super().__init__(reason)
        self.reason = reason


class OTPError(Exception):
    """Base class of every error raised by ``otp``."""


class BadArg(OTPError, TypeError, ValueError):
    """An argument was of the wrong type or out of range (Erlang's ``badarg``)."""


class NotInProcess(OTPError):
    """A function that must run inside a process (``receive``, ``self``...) ran outside."""


class NoProc(OTPError):
    """The process or registered name does not exist (OTP's ``noproc``)."""

    def __init__(self, message: str, target: Any = None) -> None:
        super().__init__(message)
        self.target = target


class NameTaken(OTPError):
    """``register`` was given a name that another process holds."""


class AlreadyRegistered(OTPError):
    """``register`` was given a process that already has a registered name."""


class ReceiveTimeout(OTPError):
    """``receive`` timed out and no ``default`` was given."""


class NodeError(OTPError):
    """A node was used wrongly: none is running, or a second one was started."""


class NodeHalted(OTPError):
    """The node was halted with an abnormal ``reason`` (``otp.node.halt(reason)``, e.g.
    by a permanent application that stopped): raised by ``Node.run``/``otp.run`` in the
    code that started the node. Every process was killed."""

    def __init__(self, reason: Any) -> None:
        super().__init__(f"the node was halted: {reason!r}")
        self.reason = reason


class CallError(OTPError):
    """A ``gen_server.call`` failed. ``reason`` is ``"noproc"`` (no such server),
    ``"calling_self"``, ``"timeout"``, or the exit reason of a server that died
    during the call; ``server`` and ``request`` say which call."""

    def __init__(self, reason: Any, server: Any = None, request: Any = None) -> None:
        super().__init__(f"call to {server!r} failed: {reason!r} (request: {request!r})")
        self.reason = reason
        self.server = server
        self.request = request


class CallTimeout(CallError, TimeoutError):
    """No reply arrived within the call's timeout (the server may still handle it)."""

    def __init__(self, server: Any = None, request: Any = None, timeout: Any = None) -> None:
        CallError.__init__(self, "timeout", server, request)
        self.args = (
            f"call to {server!r} timed out after {timeout} s (request: {request!r})",
        )
        self.timeout = timeout


class StartError(OTPError):
    """A process failed to start; ``reason`` says why (its init's stop reason, the
    exception it raised, or ``"timeout"``)."""

    def __init__(self, reason: Any, message: str | None = None) -> None:
        super().__init__(message or f"failed to start: {reason!r}")
        self.reason = reason


class SupervisorError(OTPError):
    """A supervisor request failed; ``reason`` is OTP's word for it
    (``"already_started"``, ``"already_present"``, ``"not_found"``, ``"running"``,
    ``"restarting"``, ``"max_children"``...), ``pid`` the child's pid where relevant."""

    def __init__(self, reason: Any, message: str | None = None, pid: Any = None) -> None:
        super().__init__(message or f"supervisor error: {reason!r}")
        self.reason = reason
        self.pid = pid


class ChildSpecError(BadArg):
    """A child spec field is invalid; the message names the field, what was expected
    and what was given."""


class ApplicationError(OTPError):
    """An application failed to load, start or stop."""

    def __init__(self, message: str, reason: Any = None) -> None:
        super().__init__(message)
        self.reason = reason


class ConfigError(OTPError, ValueError):
    """A configuration file or value is invalid; the message names the file and key."""
