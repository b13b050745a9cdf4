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
            └── NodeError      a node was used wrongly (not running, two at once, ...)

Messages name what was expected and what was given, and the fix where it is not obvious.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AlreadyRegistered",
    "BadArg",
    "NameTaken",
    "NoProc",
    "NodeError",
    "NotInProcess",
    "OTPError",
    "ProcessExit",
    "ReceiveTimeout",
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
