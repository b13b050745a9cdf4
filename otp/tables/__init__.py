"""Mnesia-like tables: typed records in memory, transactions, durable disc copies.

A table holds *records* (named tuples; one class per table) under a key. Reads are
served from memory in the calling process, with no message round trip. Writes happen
in a ``transaction`` (locks, atomic commit, automatic retry) or ``dirty_`` (no locks).
``disc`` tables are also written to a SQLite file, and a commit is acknowledged only
once it is fsync'd::

    import otp
    from otp import tables

    def main():
        tables.create_table("account", attributes=("id", "owner", "balance"),
                            index=["owner"])
        Account = tables.record_class("account")
        tables.dirty_write("account", Account(1, "ann", 100))
        tables.dirty_write("account", (2, "bob", 0))        # a plain tuple works too

        def transfer(src, dst, amount):
            [a] = tables.read("account", src, lock="write")
            [b] = tables.read("account", dst, lock="write")
            if a.balance < amount:
                tables.abort(("insufficient", a.balance))  # rolls everything back
            tables.write("account", a._replace(balance=a.balance - amount))
            tables.write("account", b._replace(balance=b.balance + amount))
            return a.balance - amount

        assert tables.transaction(transfer, 1, 2, 30) == 70
        assert [r.id for r in tables.dirty_index_read("account", "bob", "owner")] == [2]
        return tables.dirty_read("account", 2)

    print(otp.run(main))      # [Account(id=2, owner='bob', balance=30)]

Durable tables need the ``otp_tables`` application running: ``start(directory)``
(or ``application.start(otp.tables.APP)`` with the ``directory`` env set), then
``create_table(..., copies={"disc": [node]})`` or ``copies="disc"``. On start, every
disc table is loaded into memory before ``start`` returns; other processes use
``wait_for_tables`` before touching them.

API (Mnesia's names; records are named tuples; keys any hashable value, mutually
comparable in an ``ordered_set``):

========================================  ================================================
schema                                    ``create_table``, ``delete_table``, ``add_index``,
                                          ``del_index``, ``clear_table``, ``table_info``,
                                          ``table_names``, ``record_class``
in a transaction                          ``read`` (``lock="write"``), ``write``, ``delete``,
                                          ``delete_object``, ``index_read``, ``select``
                                          (predicate), ``match`` (pattern), ``first``,
                                          ``next``, ``last``, ``prev``, ``all_keys``,
                                          ``foldl``, ``lock_table``, ``abort``
dirty (no transaction, no locks)          ``dirty_`` + each of the above reads and writes
``transaction(fn, *args, retries=None)``  run ``fn`` under locks; returns what it returns
events                                    ``subscribe(table)`` -> ``TableEvent`` messages
counters                                  ``dirty_update_counter(table, key, incr)``
durability                                ``start(directory)``, ``stop()``,
                                          ``wait_for_tables(names, timeout)``,
                                          ``APP`` (the ``otp_tables`` application)
replication hook                          ``add_commit_hook(fn)``: one ``CommitRecord``
                                          per committed transaction, in commit order
replicated tables                         ``start_replication``, ``stop_replication``,
                                          ``ram_copies=``/``disc_copies=``,
                                          ``add_table_copy``, ``del_table_copy``,
                                          ``move_table_copy``, ``change_table_copy_type``,
                                          ``replication_info``, ``subscribe("system")``
========================================  ================================================

``read`` returns a list (empty, one record, or several for a bag), as in Mnesia.
``select(table, pred)`` takes ``pred(record) -> bool``; ``match(table, pattern)`` takes
a dict ``{"owner": "ann"}`` or a tuple with ``ANY`` wildcards, and uses the key or an
index when the pattern binds one. ``ordered_set`` iterates in key order; ``set`` and
``bag`` in insertion order (stable between changes, otherwise meaningless, like ets).

Failure semantics (docs/semantics.md D2, D3):

- A write of the wrong shape raises ``BadRecord`` (what was expected, what was given).
  In strict mode (tests) fields must be immutable: records are shared by all readers.
- **Isolation**: transactions take read/write locks on keys (table locks for scans:
  ``select``, ``match``, ``foldl``, ``first``...) held until commit; two transactions
  on the same key serialize. **Deadlocks are prevented** by wait-die: an older
  transaction waits for a younger one, a younger one is restarted. **The function may
  run several times**, so it must have no side effects besides table operations.
  ``retries=N`` bounds the restarts (then ``TransactionAborted("retries")``).
- ``abort(reason)`` raises ``TransactionAborted(reason)`` out of ``transaction`` after
  rolling back every write of the transaction. Any other exception raised by ``fn`` also
  rolls back and propagates unchanged.
- **Nested transactions** (Mnesia's): a ``transaction`` called inside one sees the
  outer writes; its own writes join the outer ones when it returns, or vanish if it
  aborts (the ``TransactionAborted`` is raised to the outer function, which may carry
  on). Locks belong to the outermost; a lock conflict restarts the outermost.
- A process that dies holding locks releases them (its own unwinding, or the next
  waiter, who monitors lock holders, releases them for it).
- Dirty operations skip locks: on ram tables they act at once, on disc tables they
  return once fsync'd (in queue order with the transactions' commits). A dirty read
  may see a value that a running transaction is about to replace.
- **Durability** (D3): a commit touching a ``disc`` table is acknowledged (the call
  returns) only after it is fsync'd; it becomes visible to readers at the same moment,
  never before. Commits arriving while an fsync runs share the next one (group commit).
  ``kill -9`` at any moment loses no acknowledged commit and shows no partial one. On
  start, a torn or corrupt log tail is cut back to the last whole commit, with a log
  line; a damaged database file is moved aside and what is readable is salvaged.
  A commit that cannot be written raises ``CommitFailed`` and changes nothing.
- The disc owner (``otp_tables_disc``, a gen_server) is supervised by
  ``otp_tables_sup``, the top of the ``otp_tables`` application; if it crashes it is
  restarted and finishes the commits in flight (the ``batch`` number on disc says
  whether the in-flight group was written), so waiters are acknowledged, never lost
  and never acknowledged twice. The tables' data lives in the node's registry, not in
  a process, so no crash loses what memory holds.

**Replicated tables** (docs/tables.md): ``start_replication(endpoints=[etcd URLs])``
(or the ``otp_tables`` env ``etcd_endpoints``), then ``create_table(...,
ram_copies=[nodes], disc_copies=[nodes])`` with other nodes listed. Their commits are
ordered by etcd (Raft: on a majority of disks) and applied in log order on every
replica: **linearizable commits, serializable transactions** (validated at their log
position, run again on conflict: D2), acknowledged once committed and applied here;
**reads local, possibly stale** (``table_info(t, "synced")``). A node cut off from the
etcd majority cannot commit (``TableError`` naming the cause, within the timeout) and
reports ``("partitioned", table, cause)`` / ``("caught_up", table, position)`` to
``subscribe("system")``; it catches up by replaying the log: nothing to merge.
Placement: ``add_table_copy``, ``del_table_copy``, ``move_table_copy``,
``change_table_copy_type``, ``table_info(t, "where_to_read" | "active_replicas" |
"ram_copies" | "disc_copies" | "log_position")``; status: ``replication_info()``.

Every committed change to local tables passes through ``_registry.apply_commit``,
which gives the commit hooks (``add_commit_hook``) one ``CommitRecord(tid, ops,
dirty)`` per transaction, each op ``(table, key, new full value)``;
``apply_replicated`` applies such a record here.

Testing: every test node gets its own tables (the registry is per node). Disc tables
work under the test kit's mock clock too (nothing on the commit path waits with a
timeout); give each test its own ``start(tmp_path)`` and ``stop()``.

When not to use: for data private to one process (keep it in its state); for large
blobs (they are pickled per commit and held in memory); for ad-hoc queries over
millions of rows (``select`` scans in Python).
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Callable, Iterable
from typing import Any

from otp import application
from otp.errors import ApplicationError, BadArg
from otp.lowlevel import current_node
from otp.process import Down, Pid, demonitor, make_ref, monitor, now, receive, whereis
from otp.process import self as self_pid
from otp.tables import _disc_owner, _repl_api
from otp.tables._app import APP, APP_NAME, TablesApp
from otp.tables._ops import (
    all_keys,
    clear_table,
    delete,
    delete_object,
    dirty_all_keys,
    dirty_delete,
    dirty_delete_object,
    dirty_first,
    dirty_foldl,
    dirty_index_read,
    dirty_last,
    dirty_match,
    dirty_next,
    dirty_prev,
    dirty_read,
    dirty_select,
    dirty_update_counter,
    dirty_write,
    first,
    foldl,
    index_read,
    last,
    lock_table,
    match,
    next,
    prev,
    read,
    select,
    write,
)
from otp.tables._registry import (
    CommitRecord,
    TableEvent,
    apply_commit,
    refresh_fast,
    registry,
)
from otp.tables._repl import SystemEvent
from otp.tables._repl_api import (
    add_table_copy,
    change_table_copy_type,
    del_table_copy,
    move_table_copy,
    replication_info,
    start_replication,
    stop_replication,
)
from otp.tables._table import TABLE_TYPES, Table, TableDef, TableInfo, check_attributes
from otp.tables._tx import abort, wait_durable
from otp.tables._tx import transaction as _transaction
from otp.tables.errors import (
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
    "APP",
    "BadRecord",
    "CommitFailed",
    "CommitRecord",
    "NoSuchTable",
    "NotInTransaction",
    "SystemEvent",
    "TableError",
    "TableEvent",
    "TableExists",
    "TableInfo",
    "TableTimeout",
    "TablesApp",
    "TransactionAborted",
    "abort",
    "add_commit_hook",
    "add_index",
    "add_table_copy",
    "all_keys",
    "apply_replicated",
    "change_table_copy_type",
    "clear_table",
    "create_table",
    "del_index",
    "del_table_copy",
    "delete",
    "delete_object",
    "delete_table",
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
    "is_transaction",
    "last",
    "lock_table",
    "match",
    "move_table_copy",
    "next",
    "prev",
    "read",
    "record_class",
    "remove_commit_hook",
    "replication_info",
    "select",
    "start",
    "start_replication",
    "stop",
    "stop_replication",
    "subscribe",
    "system_info",
    "table_info",
    "table_names",
    "transaction",
    "unsubscribe",
    "wait_for_tables",
    "write",
]


# --- transactions ----------------------------------------------------------------------


def transaction(fn: Callable[..., Any], *args: Any, retries: int | None = None) -> Any:
    """Run ``fn(*args)`` as a transaction and return its result.

    ``fn`` may run more than once (restarted on lock conflicts), so it must be free of
    side effects other than table operations. ``abort(reason)`` inside it raises
    ``TransactionAborted(reason)`` here; other exceptions propagate; in both cases
    nothing it wrote remains. Called inside a transaction, it nests (Mnesia semantics).
    Must be called in a process.
    """
    if not callable(fn):
        raise BadArg(f"transaction expects a callable, got {fn!r}")
    if retries is not None and (not isinstance(retries, int) or retries < 0):
        raise BadArg(f"transaction retries must be an int >= 0 or None, got {retries!r}")
    return _transaction(fn, args, retries)


def is_transaction() -> bool:
    """True when called inside a transaction."""
    return registry().tx(self_pid()) is not None


# --- schema -----------------------------------------------------------------------------


def _storage(name: str, copies: Any) -> str:
    if copies is None:
        return "ram"
    if copies in ("ram", "disc"):
        return str(copies)
    if not isinstance(copies, dict) or not copies:
        raise BadArg(
            f"create_table({name!r}): copies must be 'ram', 'disc' or "
            f"{{'ram' | 'disc': [nodes]}}, got {copies!r}"
        )
    me = current_node().name
    found = []
    for kind, nodes in copies.items():
        if kind not in ("ram", "disc"):
            raise BadArg(f"create_table({name!r}): copy kind must be 'ram' or 'disc', "
                         f"got {kind!r}")
        if isinstance(nodes, str) or not isinstance(nodes, list | tuple):
            raise BadArg(f"create_table({name!r}): copies[{kind!r}] must be a list of node "
                         f"names, got {nodes!r}")
        for n in nodes:
            if n == me:
                found.append(kind)
    if len(found) != 1:
        raise BadArg(f"create_table({name!r}): this node ({me}) must hold exactly one copy, "
                     f"got {copies!r}")
    return found[0]


def create_table(
    name: str,
    *,
    attributes: Iterable[str] | None = None,
    record: type | None = None,
    key: str | None = None,
    type: str = "set",
    index: Iterable[str] = (),
    copies: Any = None,
    ram_copies: Iterable[str] | None = None,
    disc_copies: Iterable[str] | None = None,
) -> type:
    """Create a table and return its record class (a named tuple).

    ``attributes``: field names (the key defaults to the first); or ``record``: a
    ``typing.NamedTuple`` class to use as the record class (its fields are the
    attributes). ``type``: ``"set"`` (one record per key), ``"ordered_set"`` (a set
    iterated in key order), ``"bag"`` (many distinct records per key). ``index``:
    attributes to keep a secondary index on. ``copies``: ``"ram"`` (default) or
    ``"disc"``, or Mnesia style ``{"disc": [node_name]}``. ``TableExists`` if the name
    is taken; ``BadArg`` for a bad option.

    ``ram_copies=[nodes]`` / ``disc_copies=[nodes]`` (Mnesia's placement): a table with
    a copy on another node is *replicated*: its commits go through the log engine
    (``start_replication`` first) and every node listed holds a copy. A placement of
    this node alone is a local table, as with ``copies``.
    """
    if record is not None:
        fields = getattr(record, "_fields", None)
        if not (isinstance(record, builtins.type) and isinstance(fields, tuple)):
            raise BadArg(f"create_table({name!r}): record must be a NamedTuple class, "
                         f"got {record!r}")
        if attributes is not None and tuple(attributes) != fields:
            raise BadArg(f"create_table({name!r}): attributes {tuple(attributes)!r} differ "
                         f"from the record's fields {fields!r}")
        attributes = fields
    attrs, k, idx = check_attributes(name, attributes, key, index)
    if type not in TABLE_TYPES:
        raise BadArg(f"create_table({name!r}): type must be one of {TABLE_TYPES}, "
                     f"got {type!r}")
    reg = registry()
    me = current_node().name
    if (isinstance(copies, dict) and ram_copies is None and disc_copies is None
            and set(copies) <= {"ram", "disc"}
            and any(n != me for ns in copies.values() if isinstance(ns, list | tuple)
                    for n in ns)):
        # Mnesia's {"ram": [...], "disc": [...]} naming other nodes: replicated.
        ram_copies, disc_copies, copies = copies.get("ram"), copies.get("disc"), None
    placement = _repl_api.placement_of(name, copies, ram_copies, disc_copies)
    if placement is not None and (set(placement) != {me} or reg.repl is not None):
        if name in reg.tables or name in reg.loading:
            raise TableExists(name)
        defn = TableDef(name, attrs, k, type, idx, "replicated")
        return _repl_api.create_replicated(reg, defn, placement)
    if placement is not None:
        copies = placement[me]
    storage = _storage(name, copies)
    if name in reg.tables or name in reg.loading:
        raise TableExists(name)
    tab = Table(TableDef(name, attrs, k, type, idx, storage), record)
    if storage == "ram":
        reg.tables[name] = tab
        refresh_fast(reg)
        _disc_owner.notify_loaded(reg)
        return tab.rclass
    ds = _running_disc(reg, f"create_table({name!r}) with disc copies")
    tab.ident = ds.next_ident
    ds.next_ident += 1
    tab.loaded = True
    reg.loading[name] = tab

    def done() -> None:
        if reg.loading.get(name) is tab:
            del reg.loading[name]
            reg.tables[name] = tab
        _disc_owner.notify_loaded(reg)

    op = ("create", tab.ident, name, _disc_owner.defn_json(tab.defn))
    try:
        wait_durable(_disc_owner.submit(reg, [("schema", op, done)], None))
    finally:
        if reg.loading.get(name) is tab:
            del reg.loading[name]
    return tab.rclass


def _running_disc(reg: Any, what: str) -> Any:
    ds = reg.disc
    if ds is None or ds.stopping:
        raise TableError(f"{what} needs the disc owner: call otp.tables.start(directory) "
                         "first", "no_disc")
    if not ds.loaded:
        _wait_loaded(reg, None)
    return ds


def delete_table(name: str) -> None:
    """Delete a table and all its records (and its disc file part)."""
    reg = registry()
    if _repl_api.replicated(reg, name):
        _repl_api.delete_replicated(reg, name)
        return
    tab = reg.table(name)
    del reg.tables[name]
    tab.deleted = True
    reg.locks.pop(name, None)
    if tab.storage == "disc" and reg.disc is not None:
        wait_durable(_disc_owner.submit(reg, [("schema", ("drop", tab.ident), None)], None))
    tab.clear()


def _redefine(reg: Any, tab: Table, index: tuple[str, ...]) -> None:
    d = tab.defn
    tab.defn = TableDef(d.name, d.attributes, d.key, d.type, index, d.storage)
    if tab.storage == "disc" and reg.disc is not None:
        op = ("def", tab.ident, _disc_owner.defn_json(tab.defn))
        wait_durable(_disc_owner.submit(reg, [("schema", op, None)], None))


def add_index(table: str, attribute: str) -> None:
    """Add a secondary index on ``attribute`` (built from the current records)."""
    reg = registry()
    if _repl_api.replicated(reg, table):
        _repl_api.index_replicated(reg, table, attribute, True)
        return
    tab = reg.table(table)
    check_attributes(table, tab.attributes, tab.defn.key, (*tab.defn.index, attribute))
    tab.build_index(tab.attributes.index(attribute))
    refresh_fast(reg)
    _redefine(reg, tab, (*tab.defn.index, attribute))


def del_index(table: str, attribute: str) -> None:
    """Remove the index on ``attribute``."""
    reg = registry()
    if _repl_api.replicated(reg, table):
        _repl_api.index_replicated(reg, table, attribute, False)
        return
    tab = reg.table(table)
    if attribute not in tab.defn.index:
        raise BadArg(f"table {table!r} has no index on {attribute!r}")
    del tab.indexes[tab.attributes.index(attribute)]
    refresh_fast(reg)
    _redefine(reg, tab, tuple(a for a in tab.defn.index if a != attribute))


def table_info(name: str, item: str | None = None) -> Any:
    """Size, memory estimate, storage, type, attributes, indexes, record class (a
    ``TableInfo``); or one ``item``: a ``TableInfo`` field, or Mnesia's
    ``"where_to_read"``, ``"active_replicas"``, ``"ram_copies"``, ``"disc_copies"``,
    plus ``"synced"`` (False while this node may be stale: cut off from the log's
    majority, or catching up), ``"log_position"`` and ``"replicated"``."""
    if item is None:
        return registry().table(name).info()
    return _repl_api.info_item(registry(), name, item)


def table_names() -> list[str]:
    """The names of the tables available on this node."""
    return sorted(registry().tables)


def record_class(name: str) -> type:
    """The record class (named tuple) of a table."""
    return registry().table(name).rclass


def system_info() -> dict[str, Any]:
    """Disc directory, running flag, and group-commit counters (commits, batches)."""
    reg = registry()
    ds = reg.disc
    return {
        "tables": sorted(reg.tables),
        "directory": ds.directory if ds else None,
        "disc_running": bool(ds and ds.owner is not None),
        "commits": ds.commits if ds else 0,
        "group_commits": ds.batches if ds else 0,
        "replication": replication_info(),
    }


# --- events and hooks -----------------------------------------------------------------


def subscribe(table: str) -> None:
    """Send every change of ``table`` to the calling process as ``TableEvent``
    messages, in commit order. Ends with ``unsubscribe`` or the process's end.
    ``subscribe("system")``: replication events (``SystemEvent``, a tuple
    ``("partitioned", table, cause)`` or ``("caught_up", table, position)``)."""
    reg = registry()
    if table == "system":
        if self_pid() not in reg.system_subs:
            reg.system_subs.append(self_pid())
        return
    tab = reg.table(table)
    me = self_pid()
    if me not in tab.subscribers:
        tab.subscribers.append(me)
        reg.subscribed += 1
        refresh_fast(reg)


def unsubscribe(table: str) -> None:
    """Stop the events of ``table`` to the calling process."""
    reg = registry()
    if table == "system":
        if self_pid() in reg.system_subs:
            reg.system_subs.remove(self_pid())
        return
    tab = reg.table(table)
    me = self_pid()
    if me in tab.subscribers:
        tab.subscribers.remove(me)
        reg.subscribed -= 1
        refresh_fast(reg)


def add_commit_hook(fn: Callable[[CommitRecord], Any]) -> None:
    """Call ``fn(record)`` for every commit, in commit order, in the committing process
    (or the disc owner). It must not block; exceptions are logged and ignored."""
    reg = registry()
    reg.hooks.append(fn)
    refresh_fast(reg)


def remove_commit_hook(fn: Callable[[CommitRecord], Any]) -> None:
    """Remove a hook added by ``add_commit_hook``."""
    reg = registry()
    if fn in reg.hooks:
        reg.hooks.remove(fn)
        refresh_fast(reg)


def apply_replicated(record: CommitRecord) -> None:
    """Apply a ``CommitRecord`` from another node to the copies here (the entry point
    the distribution layer will use): ram tables at once, disc tables through the disc
    owner (returns once durable). Tables this node does not hold are skipped."""
    reg = registry()
    ops = []
    disc = False
    for name, key, value in record.ops:
        tab = reg.tables.get(name)
        if tab is not None:
            if value is not None:  # values from the wire may be plain tuples
                if tab.bag:
                    value = tuple(tab.coerce(r, False) for r in value)
                else:
                    value = tab.coerce(value, False)
            ops.append((tab, key, value))
            disc = disc or tab.storage == "disc"
    if not ops:
        return
    if disc:
        wait_durable(_disc_owner.submit(reg, [("put", t, k, v) for t, k, v in ops], None))
    else:
        apply_commit(reg, ops, record.dirty, record.tid)


# --- the disc owner -------------------------------------------------------------------


def start(directory: str | os.PathLike[str] | None = None, *, timeout: float | None = None
          ) -> Pid:
    """Start the ``otp_tables`` application on this node (``application.start(APP)``):
    the ``otp_tables_sup`` supervisor and the disc owner, which opens
    ``directory/tables.sqlite`` (default: the app env ``directory``, else
    ``$OTP_TABLES_DIR`` or ``./otp_tables.<node name>``) and loads every disc table.
    Returns the supervisor's pid once the tables are loaded (``TableTimeout`` after
    ``timeout`` s). ``TableError("already_started")`` if it runs."""
    reg = registry()
    if reg.disc is not None:
        raise TableError("otp.tables is already started on this node", "already_started")
    application.load(APP)
    if directory is not None:
        application.set_env(APP_NAME, "directory", os.fspath(directory))
    application.start(APP)
    sup = whereis(_disc_owner.SUP_NAME)
    if sup is None:
        raise TableError("otp_tables started but its supervisor is gone", "no_supervisor")
    _wait_loaded(reg, timeout, sup)
    return sup


def _wait_loaded(reg: Any, timeout: float | None, sup: Pid | None = None) -> None:
    deadline = None if timeout is None else now() + timeout
    mon = monitor(sup) if sup is not None else None
    try:
        while reg.disc is not None and not reg.disc.loaded:
            left = None if deadline is None else max(0.0, deadline - now())
            ref = make_ref()
            entry = (self_pid(), ref)
            reg.load_waiters.append(entry)

            def loaded_or_down(m: Any, ref: Any = ref) -> bool:
                if m.__class__ is tuple:
                    return len(m) == 2 and m[0] == _disc_owner.LOADED and m[1] is ref
                return isinstance(m, Down) and m.ref == mon

            msg = receive(loaded_or_down, left, default=None)
            if msg is None or isinstance(msg, Down):
                if entry in reg.load_waiters:
                    reg.load_waiters.remove(entry)
                if msg is None:
                    raise TableTimeout(tuple(reg.loading), timeout)
                # The disc owner could not open its files and its supervisor gave up.
                reg.disc = None
                _stop_app()
                raise TableError(f"otp_tables failed to start: {msg.reason!r} (see the "
                                 "crash reports of otp_tables_disc)", ("start", msg.reason))
    finally:
        if mon is not None:
            demonitor(mon, flush=True)


def stop() -> None:
    """Stop the ``otp_tables`` application: finish the commits queued, close the file,
    unload the disc tables (ram tables stay). Does nothing if it is not running."""
    reg = registry()
    ds = reg.disc
    if ds is not None:
        ds.stopping = True
    _stop_app()
    reg.disc = None


def _stop_app() -> None:
    if any(a.name == APP_NAME for a in application.which_applications()):
        try:
            application.stop(APP_NAME)
        except ApplicationError:
            pass  # it ended by itself meanwhile


def wait_for_tables(names: Iterable[str], timeout: float | None) -> None:
    """Return once every table in ``names`` is loaded and usable on this node (a
    replicated one: caught up to at least the log position current at the call);
    ``TableTimeout`` (listing the missing ones) after ``timeout`` seconds."""
    if isinstance(names, str):
        names = [names]
    wanted = list(names)
    reg = registry()
    deadline = None if timeout is None else now() + timeout
    while True:
        missing = tuple(n for n in wanted if n not in reg.tables)
        if not missing:
            _repl_api.wait_caught_up(reg, wanted, deadline, timeout)
            return
        left = None if deadline is None else deadline - now()
        if left is not None and left <= 0:
            raise TableTimeout(missing, timeout)
        ref = make_ref()
        entry = (self_pid(), ref)
        reg.load_waiters.append(entry)
        if receive((_disc_owner.LOADED, ref), left, default=None) is None:
            if entry in reg.load_waiters:
                reg.load_waiters.remove(entry)
            missing = tuple(n for n in wanted if n not in reg.tables)
            if missing:
                raise TableTimeout(missing, timeout)
            _repl_api.wait_caught_up(reg, wanted, deadline, timeout)
            return
