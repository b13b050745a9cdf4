"""The table operations: transactional (``read``, ``write``...) and dirty (``dirty_*``).

Reads are served from memory in the caller's greenlet. Transactional operations lock
(see ``_tx``) and work on the transaction's write set; dirty ones act on the committed
state at once (ram) or through the disc owner (disc: acknowledged after fsync).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from otp.errors import BadArg
from otp.process import ANY
from otp.process import self as self_pid
from otp.tables._registry import Registry, apply_commit, registry
from otp.tables._table import Table
from otp.tables._tx import MISSING, Tx, acquire, lookup, overlay, wait_durable
from otp.tables.errors import NotInTransaction, TableError

# --- helpers ---------------------------------------------------------------------------


def _tx(reg: Registry, what: str) -> Tx:
    tx = reg.tx(self_pid())
    if tx is None:
        raise NotInTransaction(what)
    return tx


def _lock_kind(lock: Any) -> bool:
    if lock == "read":
        return False
    if lock == "write":
        return True
    raise BadArg(f"lock kind must be 'read' or 'write', got {lock!r}")


def _as_list(tab: Table, value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if tab.bag else [value]


def _added(tab: Table, cur: Any, rec: Any) -> Any:
    if not tab.bag:
        return rec
    if cur is None:
        return (rec,)
    return cur if rec in cur else (*cur, rec)


def _removed(tab: Table, cur: Any, rec: Any) -> Any:
    if cur is None:
        return None
    if tab.bag:
        rest = tuple(r for r in cur if r != rec)
        return rest or None
    return None if cur == rec else cur


def _merged(tx: Tx, tab: Table) -> list[tuple[Any, Any]]:
    """(key, value) of every present key as the transaction sees it, in table order."""
    ov = overlay(tx, tab)
    data = tab.data
    if not ov:
        keys: Iterable[Any] = tab.keys if tab.ordered else data
        return [(k, data[k]) for k in list(keys)]
    if tab.ordered:
        allkeys = set(tab.keys)
        allkeys.update(ov)
        try:
            order: list[Any] = sorted(allkeys)
        except TypeError:
            order = list(allkeys)
    else:
        order = list(data) + [k for k in ov if k not in data]
    out = []
    for k in order:
        v = ov.get(k, MISSING)
        if v is MISSING:
            v = data.get(k)
        if v is not None:
            out.append((k, v))
    return out


def _committed(tab: Table) -> list[tuple[Any, Any]]:
    data = tab.data
    keys: Iterable[Any] = tab.keys if tab.ordered else data
    return [(k, data[k]) for k in list(keys)]


def _records(tab: Table, pairs: list[tuple[Any, Any]]) -> list[Any]:
    if not tab.bag:
        return [v for _k, v in pairs]
    return [r for _k, v in pairs for r in v]


def _pattern(tab: Table, pattern: Any) -> list[tuple[int, Any]]:
    """A match pattern to [(field position, value)] constraints."""
    attrs = tab.attributes
    if isinstance(pattern, Mapping):
        out = []
        for a, v in pattern.items():
            if a not in attrs:
                raise BadArg(f"match on {tab.name!r}: no attribute {a!r} (has {attrs!r})")
            if v is not ANY:
                out.append((attrs.index(a), v))
        return out
    if isinstance(pattern, tuple):
        if len(pattern) != tab.arity:
            raise BadArg(
                f"match on {tab.name!r}: a tuple pattern needs {tab.arity} fields "
                f"{attrs!r} (ANY for wildcards), got {pattern!r}"
            )
        return [(i, v) for i, v in enumerate(pattern) if v is not ANY]
    raise BadArg(
        f"match on {tab.name!r} expects a dict {{attribute: value}} or a tuple with ANY "
        f"wildcards, got {pattern!r}"
    )


def _fits(rec: Any, cons: list[tuple[int, Any]]) -> bool:
    for pos, v in cons:
        if rec[pos] != v:
            return False
    return True


# --- dirty operations ------------------------------------------------------------------


def dirty_write(table: str, record: Any) -> None:
    """Write ``record`` without locks; visible at once (ram) or after fsync (disc)."""
    reg = registry()
    tab = reg.tables.get(table) or reg.table(table)
    if tab.fast and record.__class__ is tab.rclass and not reg.strict:
        try:
            tab.data[record[tab.kpos]] = record  # type: ignore[index]  # = apply_commit here
            return
        except TypeError:
            pass  # an unhashable key: coerce says so
    rec = tab.coerce(record, reg.strict)
    key = rec[tab.kpos]
    if tab.repl:
        _repl_dirty(reg, [("write", tab.name, key, tuple(rec))])
        return
    if tab.storage == "ram":
        if tab.bag:
            rec = _added(tab, tab.data.get(key), rec)
        if reg.hooks or tab.subscribers:
            apply_commit(reg, [(tab, key, rec)], True)
        else:  # same effect as apply_commit when nobody listens
            tab.apply(key, rec)
        return
    _dirty_disc(reg, [("write", tab, key, rec)])


def _repl_dirty(reg: Registry, ops: list[tuple[str, str, Any, Any]]) -> Any:
    from otp.tables._repl_api import dirty

    return dirty(reg, ops)


def _dirty_disc(reg: Registry, ops: list[tuple[Any, ...]]) -> None:
    from otp.tables._disc_owner import submit

    wait_durable(submit(reg, ops, None))


def dirty_delete(table: str, key: Any) -> None:
    """Delete every record under ``key``, without locks."""
    reg = registry()
    tab = reg.table(table)
    if tab.repl:
        _repl_dirty(reg, [("delete", tab.name, key, None)])
    elif tab.storage == "ram":
        apply_commit(reg, [(tab, key, None)], True)
    else:
        _dirty_disc(reg, [("delete", tab, key)])


def dirty_delete_object(table: str, record: Any) -> None:
    """Delete exactly ``record`` (for a bag, that one record), without locks."""
    reg = registry()
    tab = reg.table(table)
    rec = tab.coerce(record, False)
    key = rec[tab.kpos]
    if tab.repl:
        _repl_dirty(reg, [("delete_object", tab.name, key, tuple(rec))])
    elif tab.storage == "ram":
        apply_commit(reg, [(tab, key, _removed(tab, tab.data.get(key), rec))], True)
    else:
        _dirty_disc(reg, [("delete_object", tab, key, rec)])


def dirty_update_counter(table: str, key: Any, incr: int = 1, *,
                         attribute: str | None = None) -> int:
    """Add ``incr`` to the int field ``attribute`` of the record under ``key`` (default:
    the one non-key field of a 2-field table) atomically, without locks; returns the
    new value. A missing record is created (2-field tables only), as in Mnesia."""
    reg = registry()
    tab = reg.table(table)
    if tab.bag:
        raise BadArg(f"update_counter needs a set or ordered_set, {table!r} is a bag")
    if not isinstance(incr, int) or isinstance(incr, bool):
        raise BadArg(f"update_counter expects an int increment, got {incr!r}")
    if attribute is None:
        if tab.arity != 2:
            raise BadArg(f"update_counter on {table!r} ({tab.attributes!r}): say which "
                         "attribute to count with attribute=")
        pos = 1 - tab.kpos
    elif attribute in tab.attributes and attribute != tab.attributes[tab.kpos]:
        pos = tab.attributes.index(attribute)
    else:
        raise BadArg(f"update_counter on {table!r}: attribute must be a non-key field of "
                     f"{tab.attributes!r}, got {attribute!r}")
    if tab.repl:
        try:
            return int(_repl_dirty(reg, [("counter", tab.name, key, (pos, incr))]))
        except TableError as e:
            if isinstance(e.reason, tuple) and e.reason[:1] == ("badarg",):
                raise BadArg(str(e)) from None
            raise
    if tab.storage == "ram":
        from otp.tables._disc_owner import counter_value

        try:
            new = counter_value(tab, key, tab.data.get(key), pos, incr)
        except ValueError as e:
            raise BadArg(str(e)) from None
        apply_commit(reg, [(tab, key, new)], True)
        return int(new[pos])
    from otp.tables._disc_owner import submit

    return int(wait_durable(submit(reg, [("counter", tab, key, (pos, incr))], None)))


def clear_table(table: str) -> None:
    """Delete every record of ``table`` (one commit: subscribers get a ``delete``
    event per key, disc copies are cleared durably)."""
    reg = registry()
    tab = reg.table(table)
    keys = tab.key_list()
    if not keys:
        return
    if tab.repl:
        _repl_dirty(reg, [("delete", tab.name, k, None) for k in keys])
    elif tab.storage == "ram":
        apply_commit(reg, [(tab, k, None) for k in keys], True)
    else:
        _dirty_disc(reg, [("delete", tab, k) for k in keys])


def dirty_read(table: str, key: Any) -> list[Any]:
    """The records under ``key`` (a list: empty, one, or several for a bag)."""
    reg = registry()
    tab = reg.tables.get(table) or reg.table(table)
    val = tab.data.get(key)
    if val is None:
        return []
    return list(val) if tab.bag else [val]


def dirty_index_read(table: str, value: Any, attribute: str) -> list[Any]:
    """The records whose indexed ``attribute`` equals ``value``."""
    tab = registry().table(table)
    pos = _index_pos(tab, attribute)
    keys = tab.indexes[pos].get(value, ())
    return [r for k in list(keys) for r in tab.records(k) if r[pos] == value]


def _index_pos(tab: Table, attribute: str) -> int:
    if attribute not in tab.attributes:
        raise BadArg(f"table {tab.name!r} has no attribute {attribute!r} ({tab.attributes!r})")
    pos = tab.attributes.index(attribute)
    if pos not in tab.indexes:
        have = [tab.attributes[p] for p in tab.indexes]
        raise BadArg(f"table {tab.name!r} has no index on {attribute!r} (indexes: {have!r}); "
                     "add one with add_index")
    return pos


def dirty_select(table: str, pred: Callable[[Any], bool]) -> list[Any]:
    """Every record for which ``pred(record)`` is true (table order)."""
    tab = registry().table(table)
    return [r for r in tab.iter_records() if pred(r)]


def dirty_match(table: str, pattern: Any) -> list[Any]:
    """Every record matching ``pattern``: a dict ``{attribute: value}`` or a tuple of
    the table's arity with ``ANY`` wildcards. Uses the key or an index when bound."""
    tab = registry().table(table)
    cons = _pattern(tab, pattern)
    for pos, v in cons:
        if pos == tab.kpos:
            return [r for r in tab.records(v) if _fits(r, cons)]
    for pos, v in cons:
        if pos in tab.indexes:
            keys = list(tab.indexes[pos].get(v, ()))
            if tab.ordered:
                keys.sort()
            return [r for k in keys for r in tab.records(k) if _fits(r, cons)]
    return [r for r in tab.iter_records() if _fits(r, cons)]


def dirty_all_keys(table: str) -> list[Any]:
    """Every key (sorted for an ordered_set, insertion order otherwise)."""
    return registry().table(table).key_list()


def dirty_first(table: str) -> Any:
    """The first key (smallest for an ordered_set), or None if the table is empty."""
    return registry().table(table).first()


def dirty_last(table: str) -> Any:
    """The last key (largest for an ordered_set), or None if the table is empty."""
    return registry().table(table).last()


def dirty_next(table: str, key: Any) -> Any:
    """The key after ``key``, or None at the end."""
    return registry().table(table).next_key(key)


def dirty_prev(table: str, key: Any) -> Any:
    """The key before ``key``, or None at the start."""
    return registry().table(table).prev_key(key)


def dirty_foldl(table: str, fn: Callable[[Any, Any], Any], acc: Any) -> Any:
    """``fn(record, acc)`` over every record in table order; returns the last acc."""
    for r in registry().table(table).iter_records():
        acc = fn(r, acc)
    return acc


# --- transactional operations ---------------------------------------------------------


def read(table: str, key: Any, lock: str = "read") -> list[Any]:
    """In a transaction: the records under ``key`` (read lock, or ``lock="write"`` to
    take the write lock at once when you mean to update)."""
    reg = registry()
    tx = _tx(reg, "read")
    tab = reg.table(table)
    acquire(reg, tx, tab, key, _lock_kind(lock))
    return _as_list(tab, lookup(tx, tab, key))


def write(table: str, record: Any) -> None:
    """In a transaction: write ``record`` (write lock on its key)."""
    reg = registry()
    tx = reg.tx(self_pid())
    if tx is None:
        raise NotInTransaction("write")
    tab = reg.tables.get(table) or reg.table(table)
    rec = tab.coerce(record, reg.strict)
    key = rec[tab.kpos]
    acquire(reg, tx, tab, key, True)
    if tab.bag:
        rec = _added(tab, lookup(tx, tab, key), rec)
    tx.writes[(tab, key)] = rec


def delete(table: str, key: Any) -> None:
    """In a transaction: delete every record under ``key``."""
    reg = registry()
    tx = _tx(reg, "delete")
    tab = reg.table(table)
    acquire(reg, tx, tab, key, True)
    tx.writes[(tab, key)] = None


def delete_object(table: str, record: Any) -> None:
    """In a transaction: delete exactly ``record``."""
    reg = registry()
    tx = _tx(reg, "delete_object")
    tab = reg.table(table)
    rec = tab.coerce(record, False)
    key = rec[tab.kpos]
    acquire(reg, tx, tab, key, True)
    tx.writes[(tab, key)] = _removed(tab, lookup(tx, tab, key), rec)


def lock_table(table: str, lock: str) -> None:
    """In a transaction: lock the whole table (``"read"`` or ``"write"``)."""
    reg = registry()
    tx = _tx(reg, "lock_table")
    acquire(reg, tx, reg.table(table), MISSING, _lock_kind(lock))


def _scan(what: str, table: str) -> tuple[Tx, Table]:
    reg = registry()
    tx = _tx(reg, what)
    tab = reg.table(table)
    acquire(reg, tx, tab, MISSING, False)
    return tx, tab


def index_read(table: str, value: Any, attribute: str) -> list[Any]:
    """In a transaction: the records whose indexed ``attribute`` equals ``value``."""
    tx, tab = _scan("index_read", table)
    pos = _index_pos(tab, attribute)
    keys = list(tab.indexes[pos].get(value, ()))
    seen = set(keys)
    keys.extend(k for k in overlay(tx, tab) if k not in seen)
    out = []
    for k in keys:
        for r in _as_list(tab, lookup(tx, tab, k)):
            if r[pos] == value:
                out.append(r)
    return out


def select(table: str, pred: Callable[[Any], bool]) -> list[Any]:
    """In a transaction: every record for which ``pred(record)`` is true."""
    tx, tab = _scan("select", table)
    return [r for r in _records(tab, _merged(tx, tab)) if pred(r)]


def match(table: str, pattern: Any) -> list[Any]:
    """In a transaction: every record matching ``pattern`` (see ``dirty_match``)."""
    tx, tab = _scan("match", table)
    cons = _pattern(tab, pattern)
    return [r for r in _records(tab, _merged(tx, tab)) if _fits(r, cons)]


def all_keys(table: str) -> list[Any]:
    """In a transaction: every key (sorted for an ordered_set)."""
    tx, tab = _scan("all_keys", table)
    return [k for k, _v in _merged(tx, tab)]


def first(table: str) -> Any:
    """In a transaction: the first key, or None."""
    tx, tab = _scan("first", table)
    pairs = _merged(tx, tab)
    return pairs[0][0] if pairs else None


def last(table: str) -> Any:
    """In a transaction: the last key, or None."""
    tx, tab = _scan("last", table)
    pairs = _merged(tx, tab)
    return pairs[-1][0] if pairs else None


def next(table: str, key: Any) -> Any:
    """In a transaction: the key after ``key``, or None."""
    tx, tab = _scan("next", table)
    keys = [k for k, _v in _merged(tx, tab)]
    if tab.ordered:
        from bisect import bisect_right

        i = bisect_right(keys, key)
        return keys[i] if i < len(keys) else None
    try:
        i = keys.index(key)
    except ValueError:
        return None
    return keys[i + 1] if i + 1 < len(keys) else None


def prev(table: str, key: Any) -> Any:
    """In a transaction: the key before ``key``, or None."""
    tx, tab = _scan("prev", table)
    keys = [k for k, _v in _merged(tx, tab)]
    if tab.ordered:
        from bisect import bisect_left

        i = bisect_left(keys, key)
        return keys[i - 1] if i > 0 else None
    try:
        i = keys.index(key)
    except ValueError:
        return None
    return keys[i - 1] if i > 0 else None


def foldl(table: str, fn: Callable[[Any, Any], Any], acc: Any) -> Any:
    """In a transaction: ``fn(record, acc)`` over every record in table order."""
    tx, tab = _scan("foldl", table)
    for r in _records(tab, _merged(tx, tab)):
        acc = fn(r, acc)
    return acc


__all__ = [
    "all_keys",
    "clear_table",
    "delete",
    "delete_object",
    "dirty_all_keys",
    "dirty_delete",
    "dirty_delete_object",
    "dirty_first",
    "dirty_foldl",
    "dirty_index_read",
    "dirty_last",
    "dirty_match",
    "dirty_next",
    "dirty_prev",
    "dirty_read",
    "dirty_select",
    "dirty_update_counter",
    "dirty_write",
    "first",
    "foldl",
    "index_read",
    "last",
    "lock_table",
    "match",
    "next",
    "prev",
    "read",
    "select",
    "write",
]
