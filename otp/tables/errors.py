"""The errors of ``otp.tables`` (defined in ``otp.errors``, the one exception tree;
re-exported here and from ``otp.tables``).

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

from otp.errors import (
    BadRecord,
    CommitFailed,
    NoSuchTable,
    NotInTransaction,
    TableError,
    TableExists,
    TableTimeout,
    TransactionAborted,
)

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
