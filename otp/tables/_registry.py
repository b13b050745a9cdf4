"""The per-node table registry and the one place every committed change goes through.

Each node has one ``Registry`` (found from the running node, so reads need no message
round trip): its tables, the transactions in progress, the lock table, the subscribers
and the commit hooks.

``apply_commit`` is the single point where committed changes reach memory: dirty writes,
ram transactions, and (after their fsync) disc transactions all end there, in commit
order. It builds one ``CommitRecord`` per transaction for the commit hooks (the
distribution layer will ship these to replicas), and sends ``TableEvent``s to
subscribers.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from otp.lowlevel import Node, NodeVar, current_node
from otp.process import Pid, is_alive, send
from otp.tables._table import Table
from otp.tables.errors import NoSuchTable, TableError

if TYPE_CHECKING:
    from otp.tables._disc_owner import DiscState
    from otp.tables._tx import Tx, _TLock

log = logging.getLogger("otp.tables")


@dataclass(frozen=True)
class TableEvent:
    """A change to a table, sent to processes that ``subscribe``d to it.

    ``op`` is ``"write"`` (``record`` is the new record; for a set, ``old`` is the record
    it replaced or None), ``"delete"`` (the key is gone; ``old`` is the record, or for a
    bag the tuple of records, that was there) or ``"delete_object"`` (bag only: one
    record, ``record``, was removed and others remain under the key).
    """

    table: str
    op: str
    key: Any
    record: Any
    old: Any = None


@dataclass(frozen=True)
class CommitRecord:
    """One committed transaction (or dirty operation): what the commit hooks receive.

    ``ops`` is a tuple of ``(table, key, value)`` in commit order, where ``value`` is
    the full new content of that key: the record (set, ordered_set), the tuple of
    records (bag), or None (deleted). Applying the ops in order to a copy of the tables
    reproduces this node's state: that is what a replica does.
    """

    tid: int
    ops: tuple[tuple[str, Any, Any], ...]
    dirty: bool


class Registry:
    """The tables of one node (see the module docstring)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.strict = bool(getattr(node, "strict", False))
        self.tables: dict[str, Table] = {}
        self.loading: dict[str, Table] = {}  # disc tables being loaded from disc
        # Innermost transaction of each process, keyed by id(pid) (a process's Pid object
        # lives as long as it does; Pid's Python-level __hash__ is the slow part of a
        # dict lookup here). Always check ``tx.pid is pid``: see ``Registry.tx``.
        self.txs: dict[int, Tx] = {}
        self.locks: dict[str, _TLock] = {}
        self.next_ts = itertools.count(1).__next__  # transaction timestamps (wait-die)
        self.next_tid = itertools.count(1).__next__  # commit ids
        self.hooks: list[Callable[[CommitRecord], Any]] = []
        self.disc: DiscState | None = None
        self.load_waiters: list[tuple[Pid, Any]] = []
        self.subscribed = 0  # number of tables with subscribers (fast path when 0)
        self.repl: Any = None  # otp.tables._repl.Repl when replication runs
        self.system_subs: list[Pid] = []  # subscribe("system"): replication events

    def tx(self, pid: Pid) -> Tx | None:
        """The innermost transaction of the process ``pid``, or None."""
        tx = self.txs.get(id(pid))
        if tx is not None and tx.pid is pid:
            return tx
        return None

    def table(self, name: Any) -> Table:
        t = self.tables.get(name)
        if t is None:
            if name in self.loading:
                raise TableError(
                    f"table {name!r} is still loading from disc (use wait_for_tables)",
                    ("not_loaded", name),
                )
            raise NoSuchTable(name)
        return t


# Each node has its own registry, made on first use; a fresh node starts with none.
_REGISTRY: NodeVar[Registry] = NodeVar(
    "otp.tables.registry", factory=lambda: Registry(current_node())
)
#: ``registry()``: the registry of the running node (created on first use).
registry = _REGISTRY.get


def refresh_fast(reg: Registry) -> None:
    """Mark the tables where a dirty write is just a dict store: ram sets with no
    index, no subscriber and no commit hook (``apply_commit`` would do only that)."""
    for tab in reg.tables.values():
        tab.fast = (tab.storage == "ram" and not tab.repl and tab.type == "set" and not tab.indexes
                    and not tab.subscribers and not reg.hooks)


def apply_commit(
    reg: Registry, ops: list[tuple[Table, Any, Any]], dirty: bool, tid: int = 0
) -> None:
    """Apply committed ``ops`` ``(table, key, new value)`` to memory, in order, then tell
    subscribers and commit hooks. The single place committed changes pass through.
    Never yields (so the commit is atomic for every other process)."""
    events: list[tuple[Table, Any, Any, Any]] | None = [] if reg.subscribed else None
    for tab, key, new in ops:
        if tab.deleted:
            continue
        old = tab.apply(key, new)
        if events is not None and tab.subscribers and (old is not None or new is not None):
            events.append((tab, key, old, new))
    if reg.hooks:
        record = CommitRecord(
            tid or reg.next_tid(),
            tuple((t.name, k, v) for t, k, v in ops if not t.deleted),
            dirty,
        )
        for hook in list(reg.hooks):
            try:
                hook(record)
            except Exception:
                log.exception("commit hook %r failed on commit %d", hook, record.tid)
    if events:
        for tab, key, old, new in events:
            _notify(tab, key, old, new)


def _notify(tab: Table, key: Any, old: Any, new: Any) -> None:
    if tab.bag:
        olds = old or ()
        news = new or ()
        evs = [TableEvent(tab.name, "write", key, r) for r in news if r not in olds]
        if not news:
            evs.append(TableEvent(tab.name, "delete", key, None, tuple(olds)))
        else:
            evs.extend(TableEvent(tab.name, "delete_object", key, r) for r in olds
                       if r not in news)
    elif new is None:
        evs = [TableEvent(tab.name, "delete", key, None, old)]
    else:
        evs = [TableEvent(tab.name, "write", key, new, old)]
    subs = tab.subscribers
    dead = False
    for pid in subs:
        if is_alive(pid):
            for ev in evs:
                send(pid, ev)
        else:
            dead = True
    if dead:
        subs[:] = [p for p in subs if is_alive(p)]
        if not subs:
            tab.fast = False  # refreshed on the next schema change
