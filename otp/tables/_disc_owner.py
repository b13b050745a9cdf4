"""The disc owner: the supervised server that loads disc tables and group-commits.

``submit`` queues a commit (a transaction's write set, a dirty operation or a schema
change) and returns its commit id; the caller then waits for
``(COMMITTED, id, err, result)``. The owner takes *everything queued* as one group: it
resolves each item's new values, pickles them, gives each key a row id, and hands the
group to its writer process, which writes it in a pool thread as one SQLite
transaction (one fsync: group commit). Only when that is done does the owner apply the
group to memory through ``apply_commit`` (in queue order), release the transactions'
locks and acknowledge every waiter. So a change is visible only once it is durable,
and memory applies changes in exactly the order the disc got them.

While a group is being written, new commits queue up; they form the next group, handed
to the writer as soon as the previous one is done (one group in flight at a time). With
100 writers, groups hold ~100 commits and one fsync serves them all.

If the owner crashes, its supervisor restarts it; the queue and the in-flight group
live in the registry, and the new owner learns from the ``batch`` counter on disc
(written in the same SQLite transaction as the group) whether the in-flight group made
it, then applies and acknowledges it, or writes it again. Nothing acknowledged is lost,
nothing is acknowledged twice.
"""

from __future__ import annotations

import json
import logging
import pickle
from collections import deque
from typing import Any

from otp import gen_server, supervisor
from otp.gen_server import Continue, GenServer, NoReply, Ok, Stop
from otp.process import Exit, Pid, receive, send, spawn_link, trap_exit
from otp.process import self as self_pid
from otp.supervisor import ChildSpec, Supervisor, SupFlags
from otp.tables._disc import DiscFile
from otp.tables._registry import Registry, apply_commit
from otp.tables._table import Table, TableDef
from otp.tables._tx import COMMITTED, DONE, MISSING, Tx, release_all
from otp.tables.errors import CommitFailed
from otp.threads import run_in_thread

log = logging.getLogger("otp.tables")

SUP_NAME = "otp_tables_sup"
OWNER_NAME = "otp_tables_disc"
LOADED = "$otp_tables_loaded"
MAX_BATCH = 5000


class Pending:
    """One queued commit."""

    __slots__ = ("applied", "done", "ops", "pid", "resolved", "result", "tid", "tx")

    def __init__(self, tid: int, ops: list[tuple[Any, ...]], tx: Tx | None, pid: Pid) -> None:
        self.tid = tid
        self.ops = ops
        self.tx = tx
        self.pid = pid
        self.resolved: list[tuple[Table, Any, Any]] = []
        self.done: Any = None  # schema items: run after durable
        self.applied = False
        self.result: Any = None  # sent back with the acknowledgement (update_counter)


class DiscState:
    """The disc side of a node's registry (survives restarts of the owner)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.file = DiscFile(directory)
        self.queue: deque[Pending] = deque()
        self.inflight: list[Pending] | None = None  # the group commit being written
        self.inflight_batch = 0
        self.inflight_undo: list[tuple[Table, Any, Any]] = []
        self.writer: Pid | None = None
        self.batch = 0
        self.idle = False
        self.owner: Pid | None = None
        self.sup: Pid | None = None
        self.stopping = False
        self.loaded = False
        self.next_ident = 1
        self.batches = 0
        self.commits = 0


def submit(reg: Registry, ops: list[tuple[Any, ...]], tx: Tx | None) -> int:
    """Queue a commit for the disc owner; returns the commit id to wait for."""
    ds = reg.disc
    if ds is None or ds.stopping:
        raise CommitFailed("disc tables are not running (otp.tables.start was not called, "
                           "or stop was)", "not_running")
    tid = reg.next_tid()
    ds.queue.append(Pending(tid, ops, tx, self_pid()))
    if ds.idle and ds.owner is not None:
        ds.idle = False
        send(ds.owner, "kick")
    return tid


def _plain(tab: Table, value: Any) -> Any:
    if tab.bag:
        return tuple(tuple(r) for r in value)
    return tuple(value)


def encode(tab: Table, value: Any) -> bytes:
    return pickle.dumps(_plain(tab, value), pickle.HIGHEST_PROTOCOL)


def decoder(tab: Table) -> Any:
    make = tab.rclass._make  # type: ignore[attr-defined]
    loads = pickle.loads
    if tab.bag:
        return lambda b: tuple(make(t) for t in loads(b))
    return lambda b: make(loads(b))


def defn_json(d: TableDef) -> str:
    return json.dumps({"name": d.name, "attributes": list(d.attributes), "key": d.key,
                       "type": d.type, "index": list(d.index), "storage": d.storage})


def defn_from_json(s: str) -> TableDef:
    o = json.loads(s)
    return TableDef(o["name"], tuple(o["attributes"]), o["key"], o["type"],
                    tuple(o["index"]), o["storage"])


class DiscOwner(GenServer):
    """The server owning a node's disc file (state: the registry)."""

    def init(self, reg: Registry) -> Any:
        trap_exit(True)
        ds = reg.disc
        assert ds is not None
        ds.owner = self_pid()
        return Ok(reg, Continue("open"))

    def handle_continue(self, arg: Any, reg: Registry) -> Any:
        ds = reg.disc
        assert ds is not None
        if arg == "open":
            ds.file.close()
            ds.batch = run_in_thread(ds.file.open)
            if ds.inflight is not None:
                self._resume(reg, ds)
            if not ds.loaded:
                self._load(reg, ds)
            ds.writer = spawn_link(_writer_loop, ds.file, self_pid())
            self._pump(reg, ds)
        return NoReply(reg)

    def handle_info(self, msg: Any, reg: Registry) -> Any:
        ds = reg.disc
        assert ds is not None
        if msg == "kick":
            self._pump(reg, ds)
            return NoReply(reg)
        if msg.__class__ is tuple and len(msg) == 3 and msg[0] == "written":
            if ds.inflight is not None and msg[1] == ds.inflight_batch:
                self._written(reg, ds, msg[2])
            self._pump(reg, ds)
            return NoReply(reg)
        if isinstance(msg, Exit) and msg.pid == ds.writer:
            ds.writer = None
            return Stop(("disc_writer_died", msg.reason), reg)
        return super().handle_info(msg, reg)

    def terminate(self, reason: Any, reg: Registry) -> None:
        ds = reg.disc
        if ds is None:
            return
        if ds.stopping or reason in ("shutdown", "normal"):
            ds.stopping = True
            try:
                self._finish_inflight(reg, ds)
                self._drain_sync(reg, ds)
            finally:
                _fail_all(ds, "tables stopped")
                if ds.writer is not None:
                    send(ds.writer, "stop")
                    ds.writer = None
                run_in_thread(ds.file.close)
                for name, tab in list(reg.tables.items()):
                    if tab.storage == "disc":
                        del reg.tables[name]
                reg.loading.clear()
                reg.disc = None
        ds.owner = None

    # --- loading -----------------------------------------------------------------------

    def _load(self, reg: Registry, ds: DiscState) -> None:
        schema = run_in_thread(ds.file.read_schema)
        tabs = []
        for ident, name, dj in schema:
            ds.next_ident = max(ds.next_ident, ident + 1)
            try:
                tab = Table(defn_from_json(dj))
            except Exception as e:
                log.error("otp.tables: table %r: unreadable definition %r: %r", name, dj, e)
                continue
            tab.ident = ident
            reg.loading[name] = tab
            tabs.append(tab)
        for tab in tabs:
            rows, bad = run_in_thread(ds.file.load, tab.ident, decoder(tab))
            dups = _bulk_load(tab, rows)
            stale = [("del", tab.ident, rid) for rid in bad + dups]
            if stale:
                ds.batch += 1
                run_in_thread(ds.file.write_batch, stale, ds.batch)
            tab.loaded = True
            if reg.loading.get(tab.name) is tab:
                del reg.loading[tab.name]
                reg.tables[tab.name] = tab
            log.info("otp.tables: loaded %r from disc (%d records)", tab.name, tab.size())
            notify_loaded(reg)
        ds.loaded = True
        notify_loaded(reg)

    # --- group commit ------------------------------------------------------------------

    def _pump(self, reg: Registry, ds: DiscState) -> None:
        """Hand the next group commit to the writer, unless one is being written: the
        commits that arrive meanwhile form the next group (pipelined: the hub applies
        and acknowledges one group, and runs the next transactions, while the thread
        writes the following one)."""
        queue = ds.queue
        while ds.inflight is None and queue:
            ops, items = self._next_group(reg, ds)
            if not items:
                continue
            if ops and ds.writer is not None:
                send(ds.writer, ("write", ds.inflight_batch, tuple(ops), ds.file.epoch))
                return
            self._written(reg, ds, None)  # nothing to write (only ram tables touched)
        ds.idle = ds.inflight is None

    def _next_group(self, reg: Registry, ds: DiscState) -> tuple[list[Any], list[Pending]]:
        queue = ds.queue
        batch: list[Pending] = []
        while queue and len(batch) < MAX_BATCH:
            batch.append(queue.popleft())
        try:
            ops, undo, items = _prepare(reg, batch)
        except Exception as e:  # a bug: fail the group rather than lose its waiters
            log.exception("otp.tables: preparing a group commit failed")
            for item in batch:
                _finish(item, repr(e))
            return [], []
        if items:
            ds.batch += 1
            ds.inflight = items
            ds.inflight_batch = ds.batch
            ds.inflight_undo = undo
        return ops, items

    def _written(self, reg: Registry, ds: DiscState, err: Any) -> None:
        items = ds.inflight or []
        if err is not None:
            ds.inflight = None
            ds.batch -= 1
            log.error("otp.tables: group commit of %d commits failed: %s", len(items), err)
            _undo_rids(ds)
            for item in items:
                _finish(item, err)
            return
        ds.batches += 1
        ds.commits += len(items)
        _apply_all(reg, items)
        # Only now: a crash in the middle of applying leaves the group in flight, and
        # the restarted owner applies and acknowledges the rest.
        ds.inflight = None
        ds.inflight_undo = []

    def _finish_inflight(self, reg: Registry, ds: DiscState) -> None:
        writer = ds.writer
        while ds.inflight is not None:

            def done(m: Any) -> bool:
                if m.__class__ is tuple:
                    return len(m) == 3 and m[0] == "written" and m[1] == ds.inflight_batch
                return isinstance(m, Exit) and m.pid == writer

            msg = receive(done, 60.0, default=None)
            if msg is None or isinstance(msg, Exit):
                # The writer is gone: the file says whether the group was written.
                last = run_in_thread(ds.file.last_batch)
                self._written(reg, ds, None if last >= ds.inflight_batch else "writer gone")
            else:
                self._written(reg, ds, msg[2])

    def _drain_sync(self, reg: Registry, ds: DiscState) -> None:
        while ds.queue:
            ops, items = self._next_group(reg, ds)
            if not items:
                continue
            err = None
            try:
                if ops:
                    run_in_thread(ds.file.write_batch, tuple(ops), ds.inflight_batch)
            except Exception as e:
                err = repr(e)
            self._written(reg, ds, err)

    def _resume(self, reg: Registry, ds: DiscState) -> None:
        items = ds.inflight or []
        if ds.batch >= ds.inflight_batch:
            _apply_all(reg, items)  # it was written before the crash
            ds.inflight = None
            ds.inflight_undo = []
        else:
            ds.inflight = None
            _undo_rids(ds)  # the group will be prepared (and given row ids) again
            for item in reversed(items):
                if not item.applied:
                    item.resolved = []
                    ds.queue.appendleft(item)


def _undo_rids(ds: DiscState) -> None:
    for tab, key, old in reversed(ds.inflight_undo):
        if old is None:
            tab.rids.pop(key, None)
        else:
            tab.rids[key] = old
    ds.inflight_undo = []


def _writer_loop(file: DiscFile, owner: Pid) -> None:
    """The disc owner's writer: runs one group commit at a time in a pool thread."""
    while True:
        msg = receive()
        if msg == "stop":
            return
        _tag, batch, ops, epoch = msg
        err = None
        try:
            run_in_thread(file.write_batch, ops, batch, epoch)
        except Exception as e:
            err = repr(e)
        send(owner, ("written", batch, err))


def _prepare(
    reg: Registry, batch: list[Pending]
) -> tuple[list[tuple[Any, ...]], list[tuple[Table, Any, Any]], list[Pending]]:
    """Resolve every item's new values (in queue order), encode them, assign row ids."""
    overlay: dict[tuple[Table, Any], Any] = {}
    ops: list[tuple[Any, ...]] = []
    undo: list[tuple[Table, Any, Any]] = []
    items: list[Pending] = []
    for item in batch:
        local: dict[tuple[Table, Any], Any] = {}
        resolved: list[tuple[Table, Any, Any]] = []
        encoded: list[tuple[Table, Any, bytes | None]] = []
        schema: list[tuple[Any, ...]] = []
        tab: Table
        try:
            for op in item.ops:
                kind = op[0]
                if kind == "put" and not op[1].deleted:  # a transaction's write: as is
                    tab, key, new = op[1], op[2], op[3]
                    local[(tab, key)] = new
                    resolved.append((tab, key, new))
                    if tab.storage == "disc":
                        encoded.append((tab, key, None if new is None else encode(tab, new)))
                    continue
                if kind == "schema":
                    schema.append(op[1])
                    item.done = op[2]
                    continue
                tab = op[1]
                key = op[2]
                if tab.deleted:
                    continue
                if kind == "put":
                    new = op[3]
                else:
                    cur = local.get((tab, key), MISSING)
                    if cur is MISSING:
                        cur = overlay.get((tab, key), MISSING)
                        if cur is MISSING:
                            cur = tab.data.get(key)
                    if kind == "counter":
                        new = counter_value(tab, key, cur, op[3][0], op[3][1])
                        item.result = new[op[3][0]]
                    else:
                        new = _delta(tab, cur, kind, op[3] if len(op) > 3 else None)
                local[(tab, key)] = new
                resolved.append((tab, key, new))
                if tab.storage == "disc":
                    encoded.append((tab, key, None if new is None else encode(tab, new)))
        except Exception as e:
            _finish(item, repr(e))
            continue
        overlay.update(local)
        ops.extend(schema)
        for tab, key, blob in encoded:
            if blob is None:
                rid = tab.rids.pop(key, None)
                if rid is not None:
                    undo.append((tab, key, rid))
                    ops.append(("del", tab.ident, rid))
            else:
                rid = tab.rids.get(key)
                if rid is None:
                    rid = tab.rids[key] = tab.next_rid
                    tab.next_rid += 1
                    undo.append((tab, key, None))
                ops.append(("put", tab.ident, rid, blob))
        item.resolved = resolved
        items.append(item)
    return ops, undo, items


def counter_value(tab: Table, key: Any, cur: Any, pos: int, incr: int) -> Any:
    """The record after adding ``incr`` to field ``pos`` (update_counter)."""
    if cur is None:
        if tab.arity != 2:
            raise ValueError(f"update_counter on {tab.name!r}: no record under {key!r} "
                             "(only a 2-field table creates one)")
        fields: list[Any] = [None, None]
        fields[tab.kpos] = key
        fields[pos] = incr
        return tab.rclass._make(fields)  # type: ignore[attr-defined]
    old = cur[pos]
    if not isinstance(old, int) or isinstance(old, bool):
        raise ValueError(f"update_counter on {tab.name!r}: field {tab.attributes[pos]!r} "
                         f"of {key!r} is not an int: {old!r}")
    return cur._replace(**{tab.attributes[pos]: old + incr})


def _delta(tab: Table, cur: Any, kind: str, rec: Any) -> Any:
    if kind == "write":
        if tab.bag:
            if cur is None:
                return (rec,)
            return cur if rec in cur else (*cur, rec)
        return rec
    if kind == "delete":
        return None
    # delete_object
    if cur is None:
        return None
    if tab.bag:
        rest = tuple(r for r in cur if r != rec)
        return rest or None
    return None if cur == rec else cur


def _apply_all(reg: Registry, items: list[Pending]) -> None:
    for item in items:
        if item.applied:
            continue
        item.applied = True
        if item.resolved:
            apply_commit(reg, item.resolved, item.tx is None, item.tid)
        if item.done is not None:
            try:
                item.done()
            except Exception:
                log.exception("otp.tables: schema change of commit %d failed", item.tid)
        _finish(item, None)


def _finish(item: Pending, err: Any) -> None:
    tx = item.tx
    if tx is not None and tx.state != DONE:
        tx.state = DONE
        release_all(tx)
    send(item.pid, (COMMITTED, item.tid, err, item.result))


def _fail_all(ds: DiscState, why: str) -> None:
    while ds.queue:
        _finish(ds.queue.popleft(), why)


def _bulk_load(tab: Table, rows: list[tuple[int, Any]]) -> list[int]:
    """Fill an empty table from disc rows; returns the row ids of duplicate keys
    (an older row for a key that a newer row also holds) to delete."""
    data = tab.data
    rids = tab.rids
    dups: list[int] = []
    kpos = tab.kpos
    for rid, val in rows:
        key = val[0][kpos] if tab.bag else val[kpos]
        old = rids.get(key)
        if old is not None:
            log.warning("otp.tables: table %r: key %r stored twice; keeping the newer row",
                        tab.name, key)
            if old > rid:
                dups.append(rid)
                continue
            dups.append(old)
        rids[key] = rid
        data[key] = val
        if rid >= tab.next_rid:
            tab.next_rid = rid + 1
    tab.kver += 1
    if tab.ordered:
        try:
            tab.keys.reset(sorted(data))
        except TypeError:
            tab.keys.reset([])
            for k in data:
                try:
                    tab.keys.add(k)
                except TypeError:
                    tab.keys.add_odd(k)
    for pos in list(tab.indexes):
        tab.build_index(pos)
    return dups


def notify_loaded(reg: Registry) -> None:
    waiters = reg.load_waiters
    reg.load_waiters = []
    for pid, ref in waiters:
        send(pid, (LOADED, ref))


class TablesSup(Supervisor):
    """The ``otp_tables`` supervisor: one_for_one over the disc owner."""

    def init(self, reg: Registry) -> Any:
        return SupFlags(strategy="one_for_one", intensity=5, period=10.0), [
            ChildSpec(
                id="disc_owner",
                start=(_start_owner, (reg,)),
                shutdown=30.0,
            )
        ]


def _start_owner(reg: Registry) -> Pid | None:
    return gen_server.start_link(DiscOwner, reg, name=OWNER_NAME)


def start_sup(reg: Registry) -> Pid | None:
    return supervisor.start_link(TablesSup, reg, name=SUP_NAME)
