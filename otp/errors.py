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
            ├── HandlerError   an event manager request about a handler failed (``.reason``:
            │                  "already_present", "module_not_found", the handler's error)
            ├── ChildSpecError a child spec is malformed (also a BadArg)
            ├── ApplicationError an application failed to load, start or stop
            ├── ConfigError    a configuration file or value is invalid (also a ValueError)
            ├── CodeError      a code server request failed (``.module``)
            │   ├── CodeLoadError  a module could not be loaded; the running one is kept
            │   └── NotPurged      a soft load refused: processes run the old version
            ├── ReleaseError   a release spec, bundle or root is invalid, a command failed
            │   └── UpgradeError   an install/downgrade failed and was rolled back
            ├── NodeNotRunning no node answers on the release's control socket
            ├── RemoteError    a request failed inside the node (remote shell, rpc)
            └── TableError     an ``otp.tables`` error (``.reason``: Mnesia's word)
                ├── NoSuchTable, TableExists, TransactionAborted, NotInTransaction
                ├── BadRecord      a record of the wrong shape (also a BadArg)
                ├── TableTimeout   ``wait_for_tables`` gave up (also a TimeoutError)
                └── CommitFailed   the disc layer could not make a commit durable

Messages name what was expected and what was given, and the fix where it is not obvious.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = [
    "AlreadyRegistered",
    "ApplicationError",
    "BadArg",
    "BadRecord",
    "CallError",
    "CallTimeout",
    "ChildSpecError",
    "CodeError",
    "CodeLoadError",
    "CommitFailed",
    "ConfigError",
    "HandlerError",
    "NameTaken",
    "NoProc",
    "NoSuchTable",
    "NodeError",
    "NodeHalted",
    "NodeNotRunning",
    "NotInProcess",
    "NotInTransaction",
    "NotPurged",
    "OTPError",
    "ProcessExit",
    "ReceiveTimeout",
    "ReleaseError",
    "RemoteError",
    "StartError",
    "SupervisorError",
    "TableError",
    "TableExists",
    "TableTimeout",
    "TransactionAborted",
    "UpgradeError",
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


class HandlerError(OTPError):
    """A ``gen_event`` request about one handler failed; ``reason`` is OTP's word for it
    (``"already_present"``, ``"module_not_found"``, ``("EXIT", exc)`` when the handler
    raised, or what its ``init`` returned in ``Error(reason)``); ``handler`` is the
    handler id."""

    def __init__(self, reason: Any, handler: Any = None, message: str | None = None) -> None:
        super().__init__(message or f"event handler {handler!r}: {reason!r}")
        self.reason = reason
        self.handler = handler


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


class TableError(OTPError):
    """Base class of the table errors; ``reason`` is the Mnesia-style reason term."""

    def __init__(self, message: str, reason: Any = None) -> None:
        super().__init__(message)
        self.reason = reason


class NoSuchTable(TableError):
    """The named table does not exist on this node (Mnesia's ``no_exists``)."""

    def __init__(self, table: Any) -> None:
        super().__init__(
            f"no table named {table!r} on this node (create it with create_table)",
            ("no_exists", table),
        )
        self.table = table


class TableExists(TableError):
    """``create_table`` was given a name that is already a table (``already_exists``)."""

    def __init__(self, table: Any) -> None:
        super().__init__(f"table {table!r} already exists", ("already_exists", table))
        self.table = table


class BadRecord(TableError, BadArg):
    """A record does not have the table's shape; the message says what was expected."""

    def __init__(self, message: str) -> None:
        TableError.__init__(self, message, "bad_type")


class TransactionAborted(TableError):
    """The transaction was aborted: ``abort(reason)`` was called inside it, or it was
    restarted more times than ``retries`` allowed (reason ``"retries"``). Everything it
    wrote is rolled back."""

    def __init__(self, reason: Any) -> None:
        super().__init__(f"transaction aborted: {reason!r}", reason)


class NotInTransaction(TableError):
    """A transactional operation (``read``, ``write``, ``abort``...) ran outside a
    transaction. Wrap it in ``transaction(fn)``, or use its ``dirty_`` variant."""

    def __init__(self, what: str) -> None:
        super().__init__(
            f"{what} must run inside transaction(fn, ...); outside one use dirty_{what}",
            "no_transaction",
        )


class TableTimeout(TableError, TimeoutError):
    """``wait_for_tables`` timed out; ``missing`` lists the tables not loaded yet."""

    def __init__(self, missing: tuple[str, ...], timeout: float | None) -> None:
        super().__init__(
            f"tables {list(missing)!r} not loaded within {timeout} s", ("timeout", missing)
        )
        self.missing = missing


class CommitFailed(TableError):
    """The disc layer failed to write a commit (disk full, I/O error, tables stopped).
    The commit is not acknowledged and none of its changes became visible."""


class CodeError(OTPError):
    """A request to the code server failed (``.module`` names the module)."""

    def __init__(self, message: str, module: str | None = None) -> None:
        super().__init__(message)
        self.module = module


class CodeLoadError(CodeError):
    """A module could not be loaded: not found, a syntax error, or an exception while
    its code ran (the ``__cause__``). The running version is untouched."""


class NotPurged(CodeError):
    """A soft load was refused: processes still run the old version (``.pids``)."""

    def __init__(self, message: str, module: str, pids: list[Any]) -> None:
        super().__init__(message, module)
        self.pids = pids


class ReleaseError(OTPError):
    """A release spec, bundle or root is invalid, or a release command failed."""


class UpgradeError(ReleaseError):
    """An install or downgrade failed at ``step`` and was rolled back; the release is
    still ``from_vsn``. ``rollback_problems`` lists what the rollback could not undo."""

    def __init__(
        self, message: str, *, from_vsn: str, to_vsn: str, step: Any,
        rollback_problems: Sequence[str] = (),
    ) -> None:  # fmt: skip
        super().__init__(message)
        self.from_vsn = from_vsn
        self.to_vsn = to_vsn
        self.step = step
        self.rollback_problems = list(rollback_problems)


class NodeNotRunning(OTPError):
    """No node answers on the control socket."""


class RemoteError(OTPError):
    """A request failed inside the node (the message is its error text)."""
