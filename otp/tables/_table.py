"""One table in memory: its schema, its records, its indexes and its ordered key list.

Records are named tuples (one class per table, made by ``create_table`` or given as
``record=``). A ``set``/``ordered_set`` table maps key -> record; a ``bag`` maps
key -> tuple of records (insertion order, no two equal). An ``ordered_set`` also keeps
its keys in a sorted list (``bisect``). A secondary index maps an attribute value to
the set of keys having a record with that value.

Every change goes through ``Table.apply(key, new)``, which never yields and never fails
once the record was validated, so a commit applied as a sequence of ``apply`` calls is
atomic with respect to every other process.
"""

from __future__ import annotations

import builtins
import collections
import keyword
import logging
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from otp.errors import BadArg
from otp.tables._sorted import SortedKeys
from otp.tables.errors import BadRecord

log = logging.getLogger("otp.tables")

TABLE_TYPES = ("set", "bag", "ordered_set")

_ATOMIC = frozenset({str, int, float, bytes, bool, type(None), complex})


@dataclass(frozen=True)
class TableDef:
    """A table's schema, as stored on disc (all plain values)."""

    name: str
    attributes: tuple[str, ...]
    key: str
    type: str
    index: tuple[str, ...]
    storage: str  # "ram" | "disc"; replicated copies: "ram_copies" | "disc_copies"


@dataclass(frozen=True)
class TableInfo:
    """What ``table_info`` reports."""

    name: str
    attributes: tuple[str, ...]
    key: str
    type: str
    index: tuple[str, ...]
    storage: str
    size: int
    memory: int  # estimated bytes held by records, keys and indexes
    record: builtins.type
    subscribers: int
    loaded: bool


def make_record_class(name: str, attributes: tuple[str, ...]) -> type:
    base = "".join(part.capitalize() for part in name.split("_"))
    typename = base if base.isidentifier() and not keyword.iskeyword(base) else "Record"
    cls = collections.namedtuple(typename, attributes)  # type: ignore[misc]
    cls.__module__ = "otp.tables.records"
    return cls


def check_attributes(name: Any, attributes: Any, key: Any, index: Any) -> tuple[
    tuple[str, ...], str, tuple[str, ...]
]:
    if not isinstance(name, str) or not name:
        raise BadArg(f"create_table expects a non-empty str table name, got {name!r}")
    if isinstance(attributes, str) or not isinstance(attributes, tuple | list):
        raise BadArg(
            f"create_table({name!r}): attributes must be a tuple of names, got {attributes!r}"
        )
    attrs = tuple(attributes)
    if len(attrs) < 2:
        raise BadArg(
            f"create_table({name!r}): attributes needs a key and at least one more field, "
            f"got {attrs!r}"
        )
    for a in attrs:
        if not isinstance(a, str) or not a.isidentifier() or a.startswith("_") or (
            keyword.iskeyword(a)
        ):
            raise BadArg(
                f"create_table({name!r}): attribute names must be identifiers not starting "
                f"with '_', got {a!r}"
            )
    if len(set(attrs)) != len(attrs):
        raise BadArg(f"create_table({name!r}): attribute names repeat: {attrs!r}")
    k = attrs[0] if key is None else key
    if k not in attrs:
        raise BadArg(f"create_table({name!r}): key must be one of {attrs!r}, got {key!r}")
    if isinstance(index, str):
        index = (index,)
    idx = tuple(index or ())
    for a in idx:
        if a not in attrs:
            raise BadArg(f"create_table({name!r}): index {a!r} is not one of {attrs!r}")
        if a == k:
            raise BadArg(f"create_table({name!r}): the key {a!r} cannot have an index")
    if len(set(idx)) != len(idx):
        raise BadArg(f"create_table({name!r}): index names repeat: {idx!r}")
    return attrs, k, idx


def check_immutable(value: Any, where: str, depth: int = 0) -> None:
    """Records are shared by every reader and sent in events: refuse mutable fields."""
    t = value.__class__
    if t in _ATOMIC:
        return
    if depth > 50:
        raise BadRecord(f"{where}: nesting deeper than 50 levels")
    if isinstance(value, tuple | frozenset):
        for item in value:
            check_immutable(item, where, depth + 1)
        return
    if isinstance(value, str | bytes | int | float):
        return
    params = getattr(t, "__dataclass_params__", None)
    if params is not None and params.frozen:
        return
    from otp.process import Pid, Ref  # values that are immutable by construction

    if isinstance(value, Pid | Ref):
        return
    raise BadRecord(
        f"{where} must be immutable (records are shared by every reader), got a "
        f"{t.__name__}: use a tuple, frozenset or frozen dataclass"
    )


class Table:
    """The in-memory copy of one table (see the module docstring)."""

    __slots__ = (
        "arity",
        "attributes",
        "bag",
        "data",
        "defn",
        "deleted",
        "fast",
        "ident",
        "indexes",
        "kcache",
        "keys",
        "kpos",
        "kver",
        "loaded",
        "name",
        "next_rid",
        "ordered",
        "rclass",
        "repl",
        "rids",
        "storage",
        "subscribers",
        "type",
    )

    def __init__(self, defn: TableDef, rclass: type | None = None) -> None:
        self.defn = defn
        self.name = defn.name
        self.attributes = defn.attributes
        self.arity = len(defn.attributes)
        self.kpos = defn.attributes.index(defn.key)
        self.type = defn.type
        self.bag = defn.type == "bag"
        self.ordered = defn.type == "ordered_set"
        self.rclass = rclass or make_record_class(defn.name, defn.attributes)
        self.storage = defn.storage
        self.data: dict[Any, Any] = {}
        self.keys = SortedKeys()  # ordered_set only
        self.indexes: dict[int, dict[Any, set[Any]]] = {
            defn.attributes.index(a): {} for a in defn.index
        }
        self.subscribers: list[Any] = []
        self.rids: dict[Any, int] = {}  # disc: key -> row id in the table's sqlite table
        self.next_rid = 1
        self.ident = 0  # disc: number of the sqlite table holding this one
        self.loaded = defn.storage == "ram"
        self.deleted = False
        self.repl = False  # a replicated copy (commits go through the log)
        self.fast = False  # dirty_write may store directly (see _registry.refresh_fast)
        # set/bag key order for first/next: a snapshot, valid while (kver, size) holds.
        # Every delete bumps kver; an insert bumps it or (fast path) changes the size.
        self.kver = 0
        self.kcache: tuple[int, int, list[Any], dict[Any, int]] | None = None

    # --- records -----------------------------------------------------------------------

    def coerce(self, rec: Any, strict: bool) -> Any:
        """Return ``rec`` as this table's record class, or raise ``BadRecord``."""
        rclass = self.rclass
        if rec.__class__ is not rclass:
            if isinstance(rec, tuple):
                if len(rec) != self.arity:
                    raise BadRecord(
                        f"table {self.name!r} expects records of {self.arity} fields "
                        f"{self.attributes!r}, got {len(rec)} fields: {rec!r}"
                    )
                rec = rclass._make(rec)  # type: ignore[attr-defined]
            elif isinstance(rec, Mapping):
                if set(rec) != set(self.attributes):
                    raise BadRecord(
                        f"table {self.name!r} expects a record with exactly the fields "
                        f"{self.attributes!r}, got {tuple(rec)!r}"
                    )
                rec = rclass(**rec)
            else:
                raise BadRecord(
                    f"table {self.name!r} expects a {rclass.__name__} record (a tuple of "
                    f"{self.attributes!r}), got {type(rec).__name__}: {rec!r}"
                )
        if strict:
            for i, v in enumerate(rec):
                if v.__class__ not in _ATOMIC:
                    check_immutable(v, f"table {self.name!r} field {self.attributes[i]!r}")
        if self.indexes:
            for pos in self.indexes:
                try:
                    hash(rec[pos])
                except TypeError:
                    raise BadRecord(
                        f"table {self.name!r}: indexed field {self.attributes[pos]!r} must be "
                        f"hashable, got {rec[pos]!r}"
                    ) from None
        key = rec[self.kpos]
        try:
            hash(key)
        except TypeError:
            raise BadRecord(
                f"table {self.name!r}: the key {self.attributes[self.kpos]!r} must be "
                f"hashable, got {key!r}"
            ) from None
        if self.ordered:
            self.check_key_order(key)
        return rec

    def check_key_order(self, key: Any) -> None:
        keys = self.keys
        if keys.n:
            first = keys.first()
            try:
                first < key  # noqa: B015 - probing comparability
            except TypeError:
                raise BadRecord(
                    f"ordered_set {self.name!r}: keys must be mutually comparable; "
                    f"table keys are like {first!r}, got {key!r}"
                ) from None

    # --- the one mutation ------------------------------------------------------------

    def apply(self, key: Any, new: Any) -> Any:
        """Replace what is stored under ``key`` by ``new`` (a record, or for a bag a
        tuple of records; None deletes). Returns the old value. Never yields."""
        data = self.data
        old = data.get(key)
        if new is None:
            if old is None:
                return None
            del data[key]
            self.kver += 1
            if self.ordered:
                self.keys.discard(key)
        else:
            data[key] = new
            if old is None:
                self.kver += 1
                if self.ordered:
                    try:
                        self.keys.add(key)
                    except TypeError:
                        # Only reachable when two transactions raced incomparable keys
                        # into an empty table: data stays consistent, order best effort.
                        log.warning("ordered_set %r: key %r is not comparable",
                                    self.name, key)
                        self.keys.add_odd(key)
        if self.indexes:
            self._reindex(key, old, new)
        return old

    def _reindex(self, key: Any, old: Any, new: Any) -> None:
        for pos, idx in self.indexes.items():
            if self.bag:
                oldv = {r[pos] for r in old} if old else set()
                newv = {r[pos] for r in new} if new else set()
            else:
                oldv = {old[pos]} if old is not None else set()
                newv = {new[pos]} if new is not None else set()
            for v in oldv - newv:
                ks = idx.get(v)
                if ks is not None:
                    ks.discard(key)
                    if not ks:
                        del idx[v]
            for v in newv - oldv:
                ks = idx.get(v)
                if ks is None:
                    idx[v] = {key}
                else:
                    ks.add(key)

    def build_index(self, pos: int) -> None:
        idx: dict[Any, set[Any]] = {}
        self.indexes[pos] = idx
        for key, val in self.data.items():
            for rec in val if self.bag else (val,):
                idx.setdefault(rec[pos], set()).add(key)

    def clear(self) -> None:
        self.kver += 1
        self.data.clear()
        self.keys.clear()
        for idx in self.indexes.values():
            idx.clear()

    # --- reading -----------------------------------------------------------------------

    def records(self, key: Any) -> list[Any]:
        val = self.data.get(key)
        if val is None:
            return []
        return list(val) if self.bag else [val]

    def iter_records(self) -> Iterator[Any]:
        if self.ordered:
            data = self.data
            for k in list(self.keys):
                v = data.get(k)
                if v is not None:
                    yield v
        elif self.bag:
            for v in list(self.data.values()):
                yield from v
        else:
            yield from list(self.data.values())

    def key_list(self) -> list[Any]:
        return list(self.keys) if self.ordered else list(self.data)

    def first(self) -> Any:
        if self.ordered:
            return self.keys.first()
        return next(iter(self.data), None)

    def last(self) -> Any:
        if self.ordered:
            return self.keys.last()
        return next(reversed(self.data), None)

    def next_key(self, key: Any) -> Any:
        if self.ordered:
            return self.keys.next_after(key)
        return self._neighbour(key, +1)

    def prev_key(self, key: Any) -> Any:
        if self.ordered:
            return self.keys.prev_before(key)
        return self._neighbour(key, -1)

    def _neighbour(self, key: Any, step: int) -> Any:
        # set/bag tables iterate in insertion order (dict order), like ets's hash order:
        # stable between changes, meaningless otherwise.
        c = self.kcache
        if c is None or c[0] != self.kver or c[1] != len(self.data):
            keys = list(self.data)
            c = self.kcache = (self.kver, len(keys), keys, {k: i for i, k in enumerate(keys)})
        i = c[3].get(key)
        if i is None:
            return None
        j = i + step
        keys = c[2]
        return keys[j] if 0 <= j < len(keys) else None

    def size(self) -> int:
        if self.bag:
            return sum(len(v) for v in self.data.values())
        return len(self.data)

    def memory(self) -> int:
        n = sys.getsizeof(self.data) + 8 * len(self.keys) + sys.getsizeof(self.rids)
        sample = 0
        count = 0
        for rec in self.iter_records():
            sample += sys.getsizeof(rec) + sum(sys.getsizeof(f) for f in rec)
            count += 1
            if count >= 100:
                break
        if count:
            n += sample * self.size() // count
        for idx in self.indexes.values():
            n += sys.getsizeof(idx) + sum(sys.getsizeof(s) for s in idx.values())
        return n

    def info(self) -> TableInfo:
        d = self.defn
        return TableInfo(
            name=d.name,
            attributes=d.attributes,
            key=d.key,
            type=d.type,
            index=tuple(self.attributes[p] for p in self.indexes),
            storage=d.storage,
            size=self.size(),
            memory=self.memory(),
            record=self.rclass,
            subscribers=len(self.subscribers),
            loaded=self.loaded,
        )
