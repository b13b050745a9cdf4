"""The replicator: one process per node that commits replicated tables through the log
engine and applies the log, in order, to this node's copies.

Commit path. A transaction (or dirty operation) on a replicated table becomes one
``TxEntry`` (``_repl_state``), queued here by ``submit``; the caller keeps its locks
and waits. The replicator takes *everything queued* as one batch and hands it to an
appender process (``engine.append``: one etcd write for the whole batch: group
commit); up to ``max_inflight`` batches are written at once. It does not acknowledge
then: it acknowledges when the watcher delivers the record and the entry has been
applied here (committed in the log *and* applied locally: read-your-writes), or says
``"conflict"`` if validation aborted it (the transaction runs again), or an error.

Apply path. The watcher process reads the log from this node's position and sends the
records here; each is applied through ``ReplicaState``: validation, ``apply_commit``
(memory, events, hooks), the last-write positions, and for ``disc`` copies the rows
handed to a writer process that writes them, with the position they reflect, to
``<directory>/replicated/tables.sqlite`` (no fsync wait on the commit path: the log is
the durable copy; a restart replays it from the position on disc).

Health. Every ``tick`` seconds a checker asks the engine for the end of the log (a
linearizable read: it fails without a majority) and reports this node's applied
position (``applied/<node>`` in the engine's meta). A failure marks the node
partitioned (``synced`` false, a ``("partitioned", table, cause)`` event per table to
``subscribe("system")``); once it answers again and the node applied up to the end of
the log it read, ``("caught_up", table, position)``.

Compaction. The node holding the ``compactor`` lease (and a copy of every replicated
table) puts a snapshot of its state in the engine, then compacts the log up to
``min(applied positions reported in the last minute) - WINDOW``: etcd's database stays
bounded under a steady write load. A replica whose position fell behind the horizon
loads the snapshot, then replays.
"""

from __future__ import annotations

import itertools
import json
import logging
import secrets
import time
from collections import deque
from typing import Any, NamedTuple

import msgpack

from otp.process import (
    Down,
    Exit,
    Pid,
    exit,
    is_alive,
    link,
    monitor,
    now,
    receive,
    send,
    send_after,
    spawn,
    spawn_link,
    trap_exit,
    unlink,
)
from otp.process import self as self_pid
from otp.tables._disc import DiscFile
from otp.tables._disc_owner import notify_loaded
from otp.tables._engine import (
    Compacted,
    Engine,
    EngineRejected,
    EngineUnavailable,
    LogRecord,
)
from otp.tables._registry import Registry, apply_commit, refresh_fast
from otp.tables._repl_disc import (
    _PROTO,
    SCHEMA_KEY,
    DiscWritten,
    _disc_put,
    _disc_schema,
    _dumps,
    _flush_disc,
    _load_disc,
    _load_recent,
    _make_table,
    _open_disc,
)
from otp.tables._repl_state import (
    WINDOW,
    ReplicaState,
    SchemaEntry,
    SchemaInfo,
    TxEntry,
    decode,
    load_snapshot,
)
from otp.tables._repl_state import encode as encode_entry
from otp.tables._repl_state import plain as _plain
from otp.tables._table import TableDef
from otp.tables._tx import COMMITTED, DONE, Conflict, Tx, release_all
from otp.tables.errors import TableError

log = logging.getLogger("otp.tables")

NAME = "otp_tables_repl"
STARTED = "$otp_tables_repl_started"
SCHEMA_ROW = "$replicated_schema"
_DEFER: Any = object()  # an answer that waits for a later entry (add_copy)


class Records(NamedTuple):
    records: tuple[LogRecord, ...]


class Appended(NamedTuple):
    batch: int
    position: int
    error: Any
    took: float = 0.0  # seconds the append took


class Health(NamedTuple):
    ok: bool
    end: int
    error: Any
    reports: Any = None


class SystemEvent(NamedTuple):
    """Sent to ``subscribe("system")``: ``("partitioned", table, cause)``,
    ``("caught_up", table, position)``."""

    kind: str
    table: str
    detail: Any


class Pending:
    __slots__ = ("blob", "pid", "t0", "tid", "tx")

    def __init__(self, tid: int, blob: bytes, tx: Tx | None, pid: Pid | None,
                 t0: float) -> None:
        self.tid = tid
        self.blob = blob
        self.tx = tx
        self.pid = pid
        self.t0 = t0


class Repl:
    """A node's replication state (``registry().repl``)."""

    def __init__(self, reg: Registry, engine: Engine, me: str, directory: str | None,
                 commit_timeout: float, tick: float, max_batch: int, max_inflight: int,
                 compact_interval: float, window: int = WINDOW) -> None:
        self.reg = reg
        self.engine = engine
        self.me = me
        self.origin = f"{me}/{secrets.token_hex(6)}"
        self.state = ReplicaState(me, window)
        self.directory = directory
        self.commit_timeout = commit_timeout
        self.tick = tick
        self.max_batch = max_batch
        self.max_inflight = max_inflight
        self.compact_interval = compact_interval
        self.queue: deque[Pending] = deque()
        self.inflight: dict[int, list[Pending]] = {}
        self.waiting: dict[int, Pending] = {}
        self.batches = itertools.count(1)
        self.pid: Pid | None = None
        self.watcher: Pid | None = None
        self.checker: Pid | None = None
        self.compactor: Pid | None = None
        self.idle = True
        self.synced = False
        self.majority = True
        self.loaded = False
        self.last_error: Any = None
        self.log_end = 0
        self.reports: dict[str, tuple[int, float]] = {}  # node -> (applied, when)
        self.catchup: list[tuple[int, Pid, Any]] = []  # (position, pid, ref)
        self.commits = 0
        self.records = 0
        self.aborts = 0
        self.last_compact = 0.0
        self.lease: Any = None
        # disc copies
        self.file: DiscFile | None = None
        self.writer: Pid | None = None
        self.disc_ops: list[tuple[Any, ...]] = []
        self.disc_pos = 0
        self.disc_busy = False
        self.durable = 0
        self.idents: dict[str, int] = {}
        self.next_ident = 1
        self.stopping = False
        self.starter: Pid | None = None
        self.split = 0  # entries of a refused group, sent again one by one
        self.ticks = 0
        self.rec_writes: list[tuple[str, Any]] = []
        # add_table_copy to this node: name -> (position, kind, entries to apply on top)
        self.loading: dict[str, tuple[int, str, list[tuple[TxEntry, int]]]] = {}
        self.recent_pruned = 0
        # The last 1000 appends' durations, and for this node's records the time from
        # the append's answer to the record applied here (the watch's delay).
        self.put_times: deque[float] = deque(maxlen=1000)
        self.put_done: dict[int, float] = {}
        self.watch_lags: deque[float] = deque(maxlen=1000)


# --- the caller's side -------------------------------------------------------------------


def running(reg: Registry, what: str) -> Repl:
    repl = reg.repl
    if repl is None or repl.stopping:
        raise TableError(f"{what} needs replication: call otp.tables.start_replication "
                         "(etcd endpoints) first", "no_replication")
    return repl


def submit(repl: Repl, entry: TxEntry | SchemaEntry, tx: Tx | None) -> int:
    """Queue an entry for the log; returns its tid, to wait for with ``wait``."""
    p = Pending(entry.tid, encode_entry(entry), tx, self_pid(), now())
    repl.queue.append(p)
    if repl.idle and repl.pid is not None:
        repl.idle = False
        send(repl.pid, "kick")
    return entry.tid


def wait(repl: Repl, tid: int) -> Any:
    """Wait for the outcome of entry ``tid``: its result, or ``Conflict`` (aborted by
    validation), or ``TableError`` naming the cause."""

    def ack(m: Any) -> bool:
        return m.__class__ is tuple and len(m) == 4 and m[0] is COMMITTED and m[1] == tid

    msg = receive(ack, repl.commit_timeout * 2 + 5, default=None)
    if msg is None:
        raise TableError(f"replicated commit {tid}: no answer from the replicator within "
                         f"{repl.commit_timeout * 2 + 5} s", ("timeout", tid))
    err = msg[2]
    if err is None:
        return msg[3]
    if err == "conflict":
        raise Conflict()
    if isinstance(err, tuple) and err and err[0] == "error":
        raise TableError(str(err[1]), err[2])
    raise TableError(f"replicated commit {tid} failed: {err}", err)


# --- the replicator ------------------------------------------------------------------------


def start(repl: Repl) -> Pid:
    pid = spawn(_main, repl)
    repl.pid = pid
    return pid


def _main(repl: Repl) -> None:
    trap_exit(True)
    try:
        _open_disc(repl)
        _initial_catch_up(repl)
    except Exception as e:
        log.exception("otp.tables: replication could not start")
        repl.last_error = repr(e)
        repl.stopping = True
        _fail_all(repl, ("error", f"replication could not start: {e}", ("start", repr(e))))
        if repl.starter is not None:
            send(repl.starter, STARTED)
        return
    repl.loaded = True
    notify_loaded(repl.reg)
    if repl.starter is not None:
        send(repl.starter, STARTED)
    try:
        _loop(repl)
    except Exception as e:
        # A bug: say so, and fail every waiting commit now rather than let them time
        # out; the copies stay readable (synced False) until replication restarts.
        log.exception("otp.tables: the replicator failed; replication stopped")
        repl.last_error = f"the replicator failed: {e!r}"
        _set_synced(repl, False, repl.last_error)
    _shutdown(repl)


def _loop(repl: Repl) -> None:
    _start_watcher(repl)
    send(self_pid(), "tick")
    _pump(repl)
    while True:
        msg = receive()
        cls = msg.__class__
        if cls is Records:
            for rec in msg.records:
                _apply_record(repl, rec)
            _pump(repl)
        elif cls is Appended:
            _appended(repl, msg)
            _pump(repl)
        elif msg == "kick":
            _pump(repl)
        elif msg == "tick":
            _tick(repl)
            send_after(repl.tick, self_pid(), "tick")
        elif cls is Health:
            _health(repl, msg)
        elif cls is DiscWritten:
            repl.disc_busy = False
            if msg.error is None:
                repl.durable = msg.position
            else:
                log.error("otp.tables: writing replicated disc copies failed: %s", msg.error)
            _flush_disc(repl)
        elif isinstance(msg, Exit):
            if msg.pid == repl.watcher:
                repl.watcher = None
                _lost(repl, f"log watch ended: {msg.reason!r}")
            elif msg.pid == repl.writer:
                repl.writer = None
                repl.disc_busy = False
            elif msg.reason == "stop_replication":
                return
        elif msg == "stop":
            return
        elif cls is tuple and len(msg) == 3 and msg[0] == "compacted_behind":
            _reload(repl)


def _shutdown(repl: Repl) -> None:
    repl.stopping = True
    for p in (repl.watcher, repl.checker, repl.compactor):
        if p is not None:
            unlink(p)
            exit(p, "kill")
    _fail_all(repl, ("error", "replication stopped", "stopped"))
    if repl.lease is not None:
        try:
            repl.lease.release()
        except Exception:
            pass
    if repl.disc_busy:  # the write in flight: its answer, before the last one
        msg = receive(lambda m: m.__class__ is DiscWritten, 60, default=None)
        repl.disc_busy = False
        if msg is not None and msg.error is None:
            repl.durable = msg.position
    _flush_disc(repl, sync=True)
    if repl.writer is not None:
        w = repl.writer
        repl.writer = None
        mon = monitor(w)
        unlink(w)
        send(w, "stop")
        receive(lambda m: isinstance(m, Down) and m.ref == mon, 60, default=None)
    if repl.file is not None:
        from otp.threads import run_in_thread

        run_in_thread(repl.file.close)
    repl.engine.close()


def _fail_all(repl: Repl, err: Any) -> None:
    items = list(repl.queue) + [p for b in repl.inflight.values() for p in b]
    items += list(repl.waiting.values())
    repl.queue.clear()
    repl.inflight.clear()
    repl.waiting.clear()
    for p in items:
        _finish(p, err, None)


def _finish(p: Pending, err: Any, result: Any) -> None:
    tx = p.tx
    if tx is not None and tx.state != DONE:
        tx.state = DONE
        release_all(tx)
    if p.pid is not None:
        send(p.pid, (COMMITTED, p.tid, err, result))


# --- group commit ---------------------------------------------------------------------------


def _pump(repl: Repl) -> None:
    queue = repl.queue
    while queue and len(repl.inflight) < repl.max_inflight:
        batch: list[Pending] = []
        limit = 1 if repl.split else repl.max_batch
        while queue and len(batch) < limit:
            batch.append(queue.popleft())
        bid = next(repl.batches)
        repl.inflight[bid] = batch
        for p in batch:
            repl.waiting[p.tid] = p
        spawn(_appender, repl.engine, [p.blob for p in batch], bid, self_pid())
    repl.idle = not queue


def _appender(engine: Engine, blobs: list[bytes], bid: int, owner: Pid) -> None:
    t0 = time.perf_counter()
    try:
        pos = engine.append(blobs)
    except EngineUnavailable as e:
        send(owner, Appended(bid, 0, ("unavailable", str(e))))
        return
    except EngineRejected as e:
        send(owner, Appended(bid, 0, ("rejected", str(e))))
        return
    except Exception as e:
        send(owner, Appended(bid, 0, ("failed", repr(e))))
        return
    send(owner, Appended(bid, pos, None, time.perf_counter() - t0))


def _appended(repl: Repl, msg: Appended) -> None:
    batch = repl.inflight.pop(msg.batch, [])
    if repl.split and len(batch) == 1:
        repl.split -= 1
    if msg.error is None:
        repl.log_end = max(repl.log_end, msg.position)
        repl.put_times.append(msg.took)
        if msg.position > repl.state.position:
            repl.put_done[msg.position] = time.perf_counter()
        return  # acknowledged when the record is applied here
    kind, e = msg.error
    if kind == "rejected" and len(batch) > 1:
        # One entry too large (or otherwise refused) must not fail its whole group:
        # send them again one by one, ahead of what is queued.
        for p in batch:
            repl.waiting.pop(p.tid, None)
        for p in reversed(batch):
            repl.queue.appendleft(p)
        repl.split += len(batch)
        return
    repl.last_error = e
    if kind == "unavailable":
        _lost(repl, e)
    reason = ("no_majority" if kind == "unavailable" else kind, e)
    # The write may still have reached the log (a timeout after etcd took it): the
    # caller is told it failed; if the record shows up later, it is applied (with its
    # validation) like any other.
    for p in batch:
        if repl.waiting.pop(p.tid, None) is not None:
            _finish(p, ("error", f"replicated commit failed: the log engine did not take "
                                 f"it ({e})", reason), None)


# --- applying the log ------------------------------------------------------------------------


def _apply_record(repl: Repl, rec: LogRecord) -> None:
    st = repl.state
    if rec.position <= st.position:
        return
    repl.records += 1
    repl.rec_writes = []
    for blob in rec.entries:
        try:
            e = decode(blob)
        except Exception as err:
            log.error("otp.tables: undecodable log entry at %d: %r", rec.position, err)
            continue
        if isinstance(e, TxEntry):
            _apply_tx(repl, e, rec.position)
        else:
            _apply_schema(repl, e, rec.position)
    st.position = rec.position
    st.prune(rec.position)
    if repl.file is not None:
        # What this record wrote (keys; tables for schema changes): on a restart from
        # the disc copies, the last-write positions are rebuilt exactly from these.
        if repl.rec_writes:
            repl.disc_ops.append(("recent", rec.position,
                                  _dumps(repl.rec_writes, _PROTO)))
        if rec.position - repl.recent_pruned >= st.window:
            repl.disc_ops.append(("recent_prune", rec.position - st.window))
            repl.recent_pruned = rec.position
    if repl.put_done:
        t = repl.put_done.pop(rec.position, None)
        if t is not None:
            repl.watch_lags.append(time.perf_counter() - t)
    if repl.disc_ops or repl.file is not None:
        repl.disc_pos = rec.position
        _flush_disc(repl)
    if repl.catchup:
        _wake_catchup(repl)


def _ack(repl: Repl, origin: str, tid: int, err: Any, result: Any) -> None:
    if origin != repl.origin:
        return
    p = repl.waiting.pop(tid, None)
    if p is not None:
        _finish(p, err, result)


def _apply_tx(repl: Repl, e: TxEntry, pos: int) -> None:
    st = repl.state
    if not st.valid(e, pos):
        repl.aborts += 1
        missing = [t for _k, t, _x, _v in e.ops if t not in st.schema]
        err: Any = "conflict"
        if missing:
            err = ("error", f"no replicated table {missing[0]!r}", ("no_exists", missing[0]))
        _ack(repl, e.origin, e.tid, err, None)
        return
    st.note_writes(e, pos)
    if repl.file is not None:
        repl.rec_writes.extend((t, k) for _kind, t, k, _v in e.ops)
    if repl.loading:
        for _kind, t, _k, _v in e.ops:
            if t in repl.loading:
                repl.loading[t][2].append((e, pos))
                break
    changes, plains, result, err = st.resolve(e)
    if err is not None:
        _ack(repl, e.origin, e.tid, ("error", f"update failed: {err}", ("badarg", err)),
             None)
        return
    repl.commits += 1
    if changes:
        apply_commit(repl.reg, changes, e.dirty)
        if repl.file is not None:
            for (tab, key, _new), pv in zip(changes, plains, strict=True):
                if tab.storage == "disc_copies":
                    _disc_put(repl, tab, key, pv)
    if e.origin == repl.origin:
        _ack(repl, e.origin, e.tid, None, result)


def _placement_kind(info: SchemaInfo, me: str) -> str | None:
    return info.placement.get(me)


def _apply_schema(repl: Repl, e: SchemaEntry, pos: int) -> None:
    st = repl.state
    reg = repl.reg
    op, args = e.op, e.args
    name = args[0]
    info = st.schema.get(name)
    err: Any = None
    result: Any = None
    if op == "create":
        defn, placement = args[1], args[2]
        if info is not None:
            err = ("error", f"table {name!r} already exists", ("already_exists", name))
        else:
            info = st.schema[name] = SchemaInfo(defn, dict(placement))
            st.tlastw[name] = pos
            kind = placement.get(repl.me)
            if kind is not None:
                _hold(repl, name, info, kind, ())
    elif info is None:
        err = ("error", f"no replicated table {name!r}", ("no_exists", name))
    elif op == "delete":
        del st.schema[name]
        st.tlastw[name] = pos
        _drop(repl, name)
    elif op == "add_copy":
        # Phase 1: the placement changes here, at ``pos``. The node that asked ships
        # the table's content *as of pos* in a ``copy_data`` entry; meanwhile the new
        # holder keeps the entries that touch the table, and applies them on top.
        node, kind = args[1], args[2]
        if node in info.placement:
            err = ("error", f"{node} already holds a copy of {name!r}",
                   ("already_exists", name, node))
        else:
            info.placement[node] = kind
            st.tlastw[name] = pos
            if node == repl.me:
                repl.loading[name] = (pos, kind, [])
            if e.origin == repl.origin:
                tab = st.tables.get(name)
                if tab is None:
                    err = ("error", f"add_table_copy({name!r}) ran on a node without a copy",
                           ("not_local", name))
                else:
                    rows = tuple((k, _plain(tab, v)) for k, v in tab.data.items())
                    data = SchemaEntry(repl.origin, e.tid, "copy_data", (name, node, pos, rows))
                    waiter = repl.waiting.pop(e.tid, None)
                    pid = waiter.pid if waiter is not None else None
                    repl.queue.appendleft(Pending(e.tid, encode_entry(data), None, pid, now()))
                    result = _DEFER  # answered when the copy_data entry is applied
    elif op == "copy_data":
        node, at, rows = args[1], args[2], args[3]
        loading = repl.loading.get(name)
        if node == repl.me and loading is not None and loading[0] == at:
            del repl.loading[name]
            _at, kind, buffered = loading
            _hold(repl, name, info, kind, rows)
            tab = st.tables.get(name)
            if tab is not None:
                for be, _bpos in buffered:
                    be = be._replace(ops=tuple(o for o in be.ops if o[1] == name))
                    changes, plains, _r, berr = st.resolve(be)
                    if berr is not None:
                        continue
                    for (t2, key, new), pv in zip(changes, plains, strict=True):
                        if t2 is tab:
                            tab.apply(key, new)
                            if tab.storage == "disc_copies":
                                _disc_put(repl, tab, key, pv)
    elif op == "del_copy":
        node = args[1]
        if node not in info.placement:
            err = ("error", f"{node} holds no copy of {name!r}", ("no_exists", name, node))
        else:
            del info.placement[node]
            st.tlastw[name] = pos
            if node == repl.me:
                _drop(repl, name)
            if not info.placement:
                del st.schema[name]
    elif op == "retype":
        node, kind = args[1], args[2]
        if node not in info.placement:
            err = ("error", f"{node} holds no copy of {name!r}", ("no_exists", name, node))
        elif info.placement[node] != kind:
            info.placement[node] = kind
            if node == repl.me:
                tab = st.tables.get(name)
                if tab is not None:
                    kept = tuple((k, _plain(tab, v)) for k, v in tab.data.items())
                    _drop(repl, name)
                    _hold(repl, name, info, kind, kept)
    elif op in ("add_index", "del_index"):
        attr = args[1]
        idx = list(info.defn["index"])
        if op == "add_index" and attr not in idx:
            idx.append(attr)
        elif op == "del_index" and attr in idx:
            idx.remove(attr)
        info.defn["index"] = idx
        tab = st.tables.get(name)
        if tab is not None:
            pos_ = tab.attributes.index(attr)
            if op == "add_index":
                tab.build_index(pos_)
            else:
                tab.indexes.pop(pos_, None)
            d = tab.defn
            tab.defn = TableDef(d.name, d.attributes, d.key, d.type, tuple(idx), d.storage)
            refresh_fast(reg)
    if err is None:
        _disc_schema(repl)
        if st.tlastw.get(name) == pos and repl.file is not None:
            repl.rec_writes.append((name, SCHEMA_KEY))
    if result is not _DEFER:
        _ack(repl, e.origin, e.tid, err, result)


def _hold(repl: Repl, name: str, info: SchemaInfo, kind: str, rows: Any) -> None:
    reg = repl.reg
    if name in reg.tables and not reg.tables[name].repl:
        log.error("otp.tables: replicated table %r not held here: a local table has "
                  "that name", name)
        return
    tab = _make_table(repl, name, info, kind)
    for key, val in rows:
        if val is not None:
            tab.apply(key, tuple(tab.coerce(r, False) for r in val) if tab.bag
                      else tab.coerce(val, False))
    repl.state.tables[name] = tab
    reg.tables[name] = tab
    refresh_fast(reg)
    if kind == "disc" and repl.file is not None:
        ident = repl.idents[name] = repl.next_ident
        repl.next_ident += 1
        tab.ident = ident
        repl.disc_ops.append(("create", ident, name, json.dumps(info.defn)))
        for key, val in tab.data.items():
            _disc_put(repl, tab, key, _plain(tab, val))
    notify_loaded(reg)


def _drop(repl: Repl, name: str) -> None:
    reg = repl.reg
    tab = repl.state.tables.pop(name, None)
    if tab is None:
        return
    if reg.tables.get(name) is tab:
        del reg.tables[name]
    tab.deleted = True
    reg.locks.pop(name, None)
    ident = repl.idents.pop(name, None)
    if ident is not None:
        repl.disc_ops.append(("drop", ident))
    tab.clear()


def _reset(repl: Repl) -> None:
    """Forget everything replicated held here (before loading a snapshot or replaying
    from the start)."""
    st = repl.state
    for name in list(st.tables):
        _drop(repl, name)
    st.schema.clear()
    st.lastw.clear()
    st.tlastw.clear()
    st.position = 0
    if repl.file is not None:
        for ident in list(repl.idents.values()):
            repl.disc_ops.append(("drop", ident))
        repl.idents.clear()


def _install(repl: Repl) -> None:
    reg = repl.reg
    for name, tab in repl.state.tables.items():
        cur = reg.tables.get(name)
        if cur is None or cur.repl:
            reg.tables[name] = tab
    refresh_fast(reg)
    notify_loaded(reg)


def _load_snapshot(repl: Repl) -> bool:
    snap = repl.engine.get_snapshot()
    if snap is None:
        return False
    pos, blob = snap
    try:
        s = load_snapshot(blob)
    except ValueError as e:
        raise TableError(f"the snapshot at position {pos} is corrupt: {e}",
                         ("corrupt_snapshot", pos)) from None
    _reset(repl)
    st = repl.state
    for name, (defn, placement) in s["schema"].items():
        st.schema[name] = SchemaInfo(defn, placement)
    st.lastw = {(t, k): p for t, k, p in s["lastw"]}
    st.tlastw = dict(s["tlastw"])
    for name, info in st.schema.items():
        kind = info.placement.get(repl.me)
        if kind is not None:
            rows = s["data"].get(name)
            if rows is None:
                raise TableError(f"the snapshot at {pos} lacks table {name!r}",
                                 ("corrupt_snapshot", pos))
            _hold(repl, name, info, kind, rows)
    st.position = int(s["position"])
    _disc_schema(repl)
    repl.disc_pos = st.position
    if repl.file is not None:
        # The snapshot's last-write positions become the disc copy's recent writes.
        by_pos: dict[int, list[tuple[str, Any]]] = {}
        for (t, k), p in st.lastw.items():
            by_pos.setdefault(p, []).append((t, k))
        for t, p in st.tlastw.items():
            by_pos.setdefault(p, []).append((t, SCHEMA_KEY))
        repl.disc_ops.append(("recent_prune", st.position))
        for p, ws in sorted(by_pos.items()):
            repl.disc_ops.append(("recent", p, _dumps(ws, _PROTO)))
        repl.recent_pruned = st.position
    return True


def _replay(repl: Repl, after: int, upto: int | None) -> None:
    """Apply the log after ``after`` (up to ``upto`` at least, when given)."""
    while True:
        res = repl.engine.read_from(after)
        for rec in res.records:
            _apply_record(repl, rec)
            after = rec.position
        if not res.records or (upto is not None and after >= upto):
            repl.log_end = max(repl.log_end, after)
            return


def _initial_catch_up(repl: Repl) -> None:
    eng = repl.engine
    horizon = eng.horizon()
    end = eng.position()
    pos, had_ram = _load_disc(repl)
    st = repl.state
    if pos and not had_ram and pos >= horizon:
        # The disc copies at ``pos``, with the last-write positions of the window
        # before it (written with them), then the log after it.
        _load_recent(repl, pos)
        st.position = pos
        _install(repl)
    elif horizon == 0:
        _reset(repl)
    elif not _load_snapshot(repl):
        raise TableError(f"the log is compacted to {horizon} and the engine holds no "
                         "snapshot: cannot catch up", ("no_snapshot", horizon))
    _install(repl)
    for _attempt in range(3):
        try:
            _replay(repl, st.position, end)
            break
        except Compacted:
            # Compacted past us meanwhile (we reported nothing while down): the
            # snapshot the compactor put first is at or after the new horizon.
            if not _load_snapshot(repl):
                raise
            _install(repl)
    repl.synced = st.position >= end
    repl.log_end = max(repl.log_end, end)


def _reload(repl: Repl) -> None:
    try:
        if not _load_snapshot(repl):
            return
        _install(repl)
        _replay(repl, repl.state.position, None)
    except (EngineUnavailable, Compacted) as e:
        _lost(repl, str(e))
        return
    _start_watcher(repl)


# --- watching ----------------------------------------------------------------------------


def _start_watcher(repl: Repl) -> None:
    if repl.watcher is None and not repl.stopping:
        repl.watcher = spawn_link(_watch, repl.engine, repl.state.position, self_pid())


def _watch(engine: Engine, after: int, owner: Pid) -> None:
    try:
        while True:
            res = engine.read_from(after)
            if res.records:
                send(owner, Records(tuple(res.records)))
                after = res.records[-1].position
            if len(res.records) < 1000:
                break
        for rec in engine.watch(after):
            send(owner, Records((rec,)))
    except Compacted:
        send(owner, ("compacted_behind", after, 0))
        raise


# --- health, positions, compaction ---------------------------------------------------------


def _tick(repl: Repl) -> None:
    t = now()
    for tid, p in list(repl.waiting.items()):
        if t - p.t0 > repl.commit_timeout:
            del repl.waiting[tid]
            for b in repl.inflight.values():
                if p in b:
                    b.remove(p)
            cause = repl.last_error or "the entry did not come back from the log"
            _finish(p, ("error", f"replicated commit not confirmed within "
                                 f"{repl.commit_timeout} s: {cause}", ("timeout", cause)), None)
    while repl.queue and t - repl.queue[0].t0 > repl.commit_timeout:
        p = repl.queue.popleft()
        _finish(p, ("error", f"replicated commit not sent within {repl.commit_timeout} s: "
                             f"{repl.last_error}", ("timeout", repl.last_error)), None)
    if repl.checker is None:
        repl.ticks += 1
        report = repl.ticks % 4 == 1  # the applied position: a write, so not every tick
        repl.checker = spawn(_check, repl.engine, repl.me, _durable_position(repl),
                             self_pid(), report)
    if repl.watcher is None and repl.majority:
        _start_watcher(repl)
    if (repl.compactor is None and repl.compact_interval > 0
            and t - repl.last_compact >= repl.compact_interval
            and set(repl.state.schema) <= set(repl.state.tables)):
        repl.last_compact = t
        repl.compactor = spawn(_compact, repl, self_pid())


def _durable_position(self: Repl) -> int:
    # A node holding ram copies restarts from a snapshot anyway: its applied position
    # is what it needs kept; one with disc copies needs the log from its disc position.
    if self.file is not None and any(t.storage == "disc_copies"
                                     for t in self.state.tables.values()):
        return min(self.durable, self.state.position)
    return self.state.position


def _check(engine: Engine, me: str, applied: int, owner: Pid, report: bool) -> None:
    try:
        end = engine.position()
        reports = None
        if report:
            engine.set_meta(f"applied/{me}", msgpack.packb([applied, time.time()]))
            reports = tuple(engine.get_meta("applied/").items())
    except Exception as e:
        send(owner, Health(False, 0, str(e)))
        return
    send(owner, Health(True, end, None, reports))


def _health(repl: Repl, msg: Health) -> None:
    repl.checker = None
    if msg.reports is not None:
        from otp.tables._repl_api import record_report

        record_report(repl, dict(msg.reports))
    if not msg.ok:
        repl.last_error = msg.error
        _lost(repl, msg.error)
        return
    if not repl.majority:
        repl.majority = True
        log.info("otp.tables: the log engine answers again; catching up")
        if repl.watcher is not None:  # it may be stuck on a member that was cut off
            unlink(repl.watcher)
            exit(repl.watcher, "kill")
            repl.watcher = None
        _start_watcher(repl)
    repl.log_end = max(repl.log_end, msg.end)
    if repl.state.position >= msg.end:
        _set_synced(repl, True)
    else:
        # behind: caught up once the records up to ``end`` are applied
        repl.catchup.append((msg.end, self_pid(), "synced"))


def _lost(repl: Repl, cause: Any) -> None:
    repl.majority = False
    _set_synced(repl, False, cause)


def _set_synced(repl: Repl, synced: bool, cause: Any = None) -> None:
    if repl.synced == synced:
        return
    repl.synced = synced
    names = sorted(repl.state.tables)
    if synced:
        log.info("otp.tables: replicated tables caught up at %d", repl.state.position)
        evs = [SystemEvent("caught_up", n, repl.state.position) for n in names]
    else:
        log.warning("otp.tables: replicated tables cut off from the log: %s", cause)
        evs = [SystemEvent("partitioned", n, cause) for n in names]
    subs = repl.reg.system_subs
    subs[:] = [p for p in subs if is_alive(p)]
    for pid in subs:
        for ev in evs:
            send(pid, ev)


def _wake_catchup(repl: Repl) -> None:
    pos = repl.state.position
    keep = []
    for want, pid, ref in repl.catchup:
        if pos >= want:
            if ref == "synced":
                if repl.majority:
                    _set_synced(repl, True)
            else:
                send(pid, ("$otp_tables_caught_up", ref))
        else:
            keep.append((want, pid, ref))
    repl.catchup = keep


def _compact(repl: Repl, owner: Pid) -> None:
    link(owner)
    eng = repl.engine
    try:
        if repl.lease is None or not repl.lease.refresh():
            repl.lease = eng.lock("compactor", max(10.0, repl.compact_interval * 3))
            if repl.lease is None:
                return
        reports = eng.get_meta("applied/")
        fresh = []
        t = time.time()
        for _k, v in reports.items():
            p, at = msgpack.unpackb(v)
            if t - at < 60:
                fresh.append(int(p))
        mine = repl.state.position
        if not fresh:
            return
        upto = min(min(fresh), mine) - repl.state.window
        if upto <= eng.horizon():
            return
        blob = repl.state.snapshot()  # at ``mine``: never yields while pickling
        eng.put_snapshot(mine, blob)
        eng.compact(upto)
        log.info("otp.tables: log compacted to %d (snapshot at %d)", upto, mine)
    except Exception as e:
        log.warning("otp.tables: compaction skipped: %r", e)
    finally:
        repl.compactor = None
