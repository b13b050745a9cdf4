"""The errors of ``otp.tables``, all under ``otp.errors.OTPError``.

::

    OTPError
    └── TableError              base of every table error (``.reason``: Mnesia's word)
        ├── NoSuchTable         the table does not exist (``no_exists``)
        ├── TableExists         ``create_table`` of a name in use (``already_exists``)
        ├── BadRecord           a record of the wrong shape or type (also a BadArg)
        ├── TransactionAborted  ``abort(reason)`` was called (``.reason`` is that reason),
        │                       or the retry budget ran out (``.reason`` = "retries")
        ├── NotInTransaction    a transactional operation ran outside ``transaction``
        ├── TableTimeout        ``wait_for_tables`` gave up (``.missing``; a TimeoutError)
        └── CommitFailed        the disc layer could not make a commit durable; nothing
                                of it is visible (``.reason`` is the I/O error)
"""

from __future__ import annotations

from typing import Any

from otp.errors import BadArg, OTPError

__all__ = [
    "BadRecord",
    "CommitFailed",
    "NoSuchTable",
    "NotInTransaction",
    "TableError",
    "TableExists",
    "TableTimeout",
    "TransactionAborted",
]


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
