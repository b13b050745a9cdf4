"""The deterministic core of replicated tables: log entries, and how a replica applies
them (validation, dirty operations, schema changes), with no I/O.

Every replica applies the same records in the same order, starting from the same
state (empty, a snapshot, or its own disc copy at a known position), through this
module only, so every replica passes through the same states and takes the same abort
decisions. Nothing here may depend on the clock, on the node's name beyond placement,
or on which tables this node holds, when it decides whether an entry commits.

A log record (one ``engine.append``) holds many entries (group commit); an entry is
the pickle of one of:

- ``TxEntry(origin, tid, reads, treads, ops, dirty)``: one transaction or dirty
  operation. ``reads``: ``(table, key, position)`` for each key the transaction read
  from the committed state, and the replica's applied position when it read it;
  ``treads``: ``(table, position)`` for whole-table reads (scans, table locks).
  ``ops``: ``(kind, table, key, value)``: ``"put"`` (the key's full new content: a
  plain tuple, a tuple of tuples for a bag, or None), or a dirty operation resolved at
  apply time against the replica's state (``"write"``, ``"delete"``,
  ``"delete_object"``, ``"counter"`` with ``(field position, increment)``).
- ``SchemaEntry(origin, tid, op, args)``: ``create``, ``delete``, ``add_copy``,
  ``del_copy``, ``add_index``, ``del_index``.

**Validation** (transactions only; dirty operations are never aborted): the entry at
position ``P`` commits iff, for every read ``(t, k, p)``, no committed entry in
``(p, P)`` wrote ``k`` of ``t``, and for every table read ``(t, p)``, none wrote any
key of ``t``; a read older than ``P - WINDOW`` aborts (a transaction that slow is run
again). To decide this, every replica keeps the position of the last write of every
key written in the last ``WINDOW`` positions, for *every* replicated table (keys only,
not records): tables this node holds and tables it does not. The decision is
therefore the same on every replica. An aborted entry changes nothing; its origin runs
the transaction again (D2).

A dirty operation that fails on the data (``counter`` on a non-int field) skips the
entry's changes on every replica holding the table (they hold the same data, so they
all skip it); the last-write positions are updated either way, so the decision of
later entries does not depend on the data.
"""

from __future__ import annotations

import logging
import pickle
from typing import Any, NamedTuple

from otp.tables._table import Table, TableDef

log = logging.getLogger("otp.tables")

WINDOW = 20_000


class TxEntry(NamedTuple):
    origin: str
    tid: int
    reads: tuple[tuple[str, Any, int], ...]
    treads: tuple[tuple[str, int], ...]
    ops: tuple[tuple[str, str, Any, Any], ...]
    dirty: bool


class SchemaEntry(NamedTuple):
    origin: str
    tid: int
    op: str
    args: tuple[Any, ...]


class Outcome(NamedTuple):
    """What applying an entry did (for the origin's waiter)."""

    origin: str
    tid: int
    error: Any  # None: committed; "conflict": aborted by validation; else a reason
    result: Any


def encode(entry: TxEntry | SchemaEntry) -> bytes:
    return pickle.dumps(tuple(entry), pickle.HIGHEST_PROTOCOL)


def decode(blob: bytes) -> TxEntry | SchemaEntry:
    t = pickle.loads(blob)
    if len(t) == 6:
        return TxEntry(*t)
    return SchemaEntry(*t)


def plain(tab: Table, value: Any) -> Any:
    if value is None:
        return None
    if tab.bag:
        return tuple(tuple(r) for r in value)
    return tuple(value)


def defn_dict(d: TableDef) -> dict[str, Any]:
    return {"name": d.name, "attributes": list(d.attributes), "key": d.key,
            "type": d.type, "index": list(d.index)}


class SchemaInfo:
    """A replicated table as every node knows it: definition and placement."""

    __slots__ = ("defn", "placement")

    def __init__(self, defn: dict[str, Any], placement: dict[str, str]) -> None:
        self.defn = defn
        self.placement = placement  # node name -> "ram" | "disc"

    def to_plain(self) -> tuple[dict[str, Any], dict[str, str]]:
        return dict(self.defn), dict(self.placement)


class ReplicaState:
    """One replica's view of the replicated tables (see the module docstring).

    ``tables``: the copies this node holds (name -> ``Table``, shared with the node's
    registry); ``me``: this node's name (placement); ``hooks``: callables told about
    the changes (see ``Replicator``)."""

    def __init__(self, me: str, window: int = WINDOW) -> None:
        self.me = me
        self.window = window
        self.position = 0
        self.schema: dict[str, SchemaInfo] = {}
        self.tables: dict[str, Table] = {}
        self.lastw: dict[tuple[str, Any], int] = {}
        self.tlastw: dict[str, int] = {}
        self.pruned = 0

    # --- validation -------------------------------------------------------------------

    def valid(self, e: TxEntry, pos: int) -> bool:
        floor = pos - self.window
        schema = self.schema
        for _kind, t, _k, _v in e.ops:
            if t not in schema:
                return False
        if e.dirty:
            return True
        lastw = self.lastw
        for t, k, p in e.reads:
            if p < floor or t not in schema:
                return False
            if lastw.get((t, k), 0) > p:
                return False
        tlastw = self.tlastw
        for t, p in e.treads:
            if p < floor or t not in schema:
                return False
            if tlastw.get(t, 0) > p:
                return False
        return True

    def note_writes(self, e: TxEntry, pos: int) -> None:
        lastw = self.lastw
        tlastw = self.tlastw
        for _kind, t, k, _v in e.ops:
            lastw[(t, k)] = pos
            tlastw[t] = pos

    def prune(self, pos: int) -> None:
        """Forget last writes older than the window (memory only: decisions unchanged)."""
        floor = pos - self.window
        if floor - self.pruned < self.window // 4:
            return
        self.pruned = floor
        self.lastw = {k: p for k, p in self.lastw.items() if p > floor}

    # --- applying -----------------------------------------------------------------------

    def resolve(self, e: TxEntry) -> tuple[list[tuple[Table, Any, Any]], list[Any], Any,
                                           Any]:
        """The entry's changes to the tables held here, as (table, key, new value), and
        each new value as a plain tuple (what the disc copy stores); plus the origin's
        result (update_counter) and an error reason (then nothing is to be applied)."""
        from otp.tables._disc_owner import _delta, counter_value

        out: list[tuple[Table, Any, Any]] = []
        plains: list[Any] = []
        local: dict[tuple[str, Any], Any] = {}
        result = None
        tables = self.tables
        for kind, t, key, val in e.ops:
            tab = tables.get(t)
            if tab is None:
                continue
            try:
                if kind == "put":
                    # Validated by the origin's coerce: only the record class to make.
                    make = tab.rclass._make  # type: ignore[attr-defined]
                    if val is None:
                        new = None
                    elif tab.bag:
                        new = tuple(make(r) for r in val)
                    else:
                        new = make(val)
                    out.append((tab, key, new))
                    plains.append(val)
                    if len(e.ops) > 1:
                        local[(t, key)] = new
                    continue
                else:
                    cur = local.get((t, key), tab.data.get(key))
                    if kind == "counter":
                        new = counter_value(tab, key, cur, val[0], val[1])
                        result = new[val[0]]
                    else:
                        rec = None if val is None else tab.coerce(val, False)
                        new = _delta(tab, cur, kind, rec)
            except Exception as err:
                return [], [], None, repr(err)
            local[(t, key)] = new
            out.append((tab, key, new))
            plains.append(plain(tab, new))
        return out, plains, result, None

    # --- snapshots --------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """The whole replicated state at ``position`` (every table held here)."""
        floor = self.position - self.window
        data = {name: [(k, plain(tab, v)) for k, v in tab.data.items()]
                for name, tab in self.tables.items()}
        return pickle.dumps({
            "position": self.position,
            "schema": {n: s.to_plain() for n, s in self.schema.items()},
            "lastw": [(t, k, p) for (t, k), p in self.lastw.items() if p > floor],
            "tlastw": dict(self.tlastw),
            "data": data,
        }, pickle.HIGHEST_PROTOCOL)


def load_snapshot(blob: bytes) -> dict[str, Any]:
    """A snapshot's content; ``ValueError`` saying what is wrong if it is damaged."""
    try:
        snap = pickle.loads(blob)
    except Exception as e:
        raise ValueError(f"unreadable snapshot: {e!r}") from None
    if not isinstance(snap, dict) or not {"position", "schema", "lastw", "tlastw",
                                           "data"} <= set(snap):
        raise ValueError(f"a snapshot must be a dict with position, schema, lastw, "
                         f"tlastw and data; got {type(snap).__name__}")
    return snap
