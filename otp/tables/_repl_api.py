"""The public face of replicated tables (re-exported by ``otp.tables``): starting and
stopping replication, placement, commits of transactions and dirty operations on
replicated tables, ``table_info`` items, ``wait_for_tables`` catch-up, status.

See ``_repl`` (the replicator) and ``_repl_state`` (what an entry holds, how replicas
decide) for the mechanics, and docs/tables.md for the guarantees.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

import msgpack

from otp.errors import BadArg
from otp.lowlevel import current_node
from otp.process import Down, demonitor, make_ref, monitor, now, receive
from otp.process import self as self_pid
from otp.tables import _repl
from otp.tables._engine import Engine, EngineUnavailable
from otp.tables._registry import Registry, registry
from otp.tables._repl_state import WINDOW, SchemaEntry, TxEntry, defn_dict, plain
from otp.tables._table import TableDef, make_record_class
from otp.tables._tx import COMMITTING, MISSING, Tx
from otp.tables.errors import TableError, TableTimeout

KINDS = ("ram", "disc")


def start_replication(
    engine: Engine | None = None,
    *,
    endpoints: Sequence[str] | None = None,
    prefix: str = "otpy",
    directory: str | None = None,
    timeout: float = 5.0,
    tick: float = 0.5,
    max_batch: int = 2000,
    max_inflight: int = 4,
    compact_interval: float = 5.0,
    window: int = WINDOW,
    ca_file: str | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
    user: str | None = None,
    password: str | None = None,
) -> None:
    """Join the replicated tables kept in a log engine: ``endpoints`` (etcd client
    URLs, several for failover) or an ``engine`` object. Loads this node's disc copies
    from ``directory`` (if given), replays the log from their position (or loads the
    engine's snapshot), then returns; ``TableError`` naming the cause if the engine
    cannot be reached within ``timeout`` seconds. ``window`` (log positions a
    transaction's reads stay valid) must be the same on every node."""
    reg = registry()
    if reg.repl is not None and not reg.repl.stopping:
        raise TableError("replication already runs on this node", "already_started")
    me = current_node().name
    if engine is None:
        if not endpoints:
            raise BadArg("start_replication needs endpoints=[etcd URLs] or an engine")
        from otp.tables._etcd import EtcdEngine

        engine = EtcdEngine(list(endpoints), prefix=prefix, member=me, timeout=timeout,
                            ca_file=ca_file, cert_file=cert_file, key_file=key_file,
                            user=user, password=password)
    repl = _repl.Repl(reg, engine, me, directory, timeout, tick, max_batch, max_inflight,
                      compact_interval, window)
    reg.repl = repl
    repl.starter = self_pid()
    pid = _repl.start(repl)
    mon = monitor(pid)
    try:
        msg = receive(lambda m: m == _repl.STARTED or (isinstance(m, Down) and m.ref == mon),
                      timeout * 6 + 10, default=None)
    finally:
        demonitor(mon, flush=True)
    if msg is None or not repl.loaded:
        reg.repl = None
        cause = repl.last_error or "no answer"
        if msg is None:
            cause = f"catch-up did not finish within {timeout * 6 + 10} s"
        raise TableError(f"start_replication ({engine.describe()}): {cause}",
                         ("no_replication", cause))


def stop_replication() -> None:
    """Leave: stop the replicator (queued commits fail), unload the replicated copies
    (disc copies stay on disc for the next start)."""
    reg = registry()
    repl = reg.repl
    if repl is None:
        return
    pid = repl.pid
    if pid is not None:
        mon = monitor(pid)
        from otp.process import send

        send(pid, "stop")
        receive(lambda m: isinstance(m, Down) and m.ref == mon, 30, default=None)
    for name, tab in list(repl.state.tables.items()):
        if reg.tables.get(name) is tab:
            del reg.tables[name]
    reg.repl = None


def replicated(reg: Registry, name: str) -> bool:
    repl = reg.repl
    return repl is not None and name in repl.state.schema


# --- commits -------------------------------------------------------------------------------


def commit_tx(reg: Registry, tx: Tx) -> None:
    repl = _repl.running(reg, "a transaction on a replicated table")
    ops = []
    for (tab, key), v in tx.writes.items():
        if not tab.repl:
            raise TableError(
                f"a transaction cannot write both replicated and local tables (it wrote "
                f"{tab.name!r}, local here)", ("mixed_tables", tab.name))
        ops.append(("put", tab.name, key, plain(tab, v)))
    reads = tx.reads or {}
    keyreads = tuple((t, k, p) for (t, k), p in reads.items() if k is not MISSING)
    treads = tuple((t, p) for (t, k), p in reads.items() if k is MISSING)
    entry = TxEntry(repl.origin, reg.next_tid(), keyreads, treads, tuple(ops), False)
    tid = _repl.submit(repl, entry, tx)
    tx.state = COMMITTING  # the replicator releases the locks with its answer
    _repl.wait(repl, tid)


def dirty(reg: Registry, ops: list[tuple[str, str, Any, Any]]) -> Any:
    """Commit dirty operations ``(kind, table, key, value)`` through the log; returns
    the origin's result (update_counter's new value)."""
    repl = _repl.running(reg, "a dirty operation on a replicated table")
    entry = TxEntry(repl.origin, reg.next_tid(), (), (), tuple(ops), True)
    return _repl.wait(repl, _repl.submit(repl, entry, None))


def _schema_op(reg: Registry, op: str, args: tuple[Any, ...], what: str = "") -> Any:
    repl = _repl.running(reg, what or f"{op} of a replicated table")
    entry = SchemaEntry(repl.origin, reg.next_tid(), op, args)
    return _repl.wait(repl, _repl.submit(repl, entry, None))


# --- placement ------------------------------------------------------------------------------


def placement_of(name: str, copies: Any, ram_copies: Any, disc_copies: Any
                 ) -> dict[str, str] | None:
    """The placement asked for, or None for a local table (no ram_copies/disc_copies,
    or only this node with replication not running)."""
    if ram_copies is None and disc_copies is None:
        return None
    if copies is not None:
        raise BadArg(f"create_table({name!r}): give copies= or ram_copies=/disc_copies=, "
                     "not both")
    out: dict[str, str] = {}
    for kind, nodes in (("ram", ram_copies), ("disc", disc_copies)):
        if nodes is None:
            continue
        if isinstance(nodes, str) or not isinstance(nodes, list | tuple):
            raise BadArg(f"create_table({name!r}): {kind}_copies must be a list of node "
                         f"names, got {nodes!r}")
        for n in nodes:
            if not isinstance(n, str):
                raise BadArg(f"create_table({name!r}): node names are str, got {n!r}")
            if n in out:
                raise BadArg(f"create_table({name!r}): node {n!r} listed twice")
            out[n] = kind
    if not out:
        raise BadArg(f"create_table({name!r}): ram_copies/disc_copies name no node")
    return out


def create_replicated(reg: Registry, defn: TableDef, placement: dict[str, str]) -> type:
    d = defn_dict(defn)
    _schema_op(reg, "create", (defn.name, d, placement),
               f"create_table({defn.name!r}) with copies on other nodes")
    tab = reg.tables.get(defn.name)
    if tab is not None and tab.repl:
        return tab.rclass
    return make_record_class(defn.name, defn.attributes)


def delete_replicated(reg: Registry, name: str) -> None:
    _schema_op(reg, "delete", (name,))


def index_replicated(reg: Registry, name: str, attribute: str, add: bool) -> None:
    _schema_op(reg, "add_index" if add else "del_index", (name, attribute))


def _info(reg: Registry, name: str) -> Any:
    repl = _repl.running(reg, "a replicated table's placement")
    info = repl.state.schema.get(name)
    if info is None:
        raise TableError(f"no replicated table {name!r}", ("no_exists", name))
    return repl, info


def add_table_copy(name: str, node: str, kind: str = "ram") -> None:
    """Add a copy of replicated table ``name`` on ``node`` (``"ram"`` or ``"disc"``).
    Call it on a node holding a copy: that node ships the table's content as of the
    change's log position (one log entry: etcd's request limit bounds the table's
    size), and the new holder applies the later commits on top. Returns once the
    content is in the log; ``wait_for_tables`` on ``node`` waits for the copy."""
    if kind not in KINDS:
        raise BadArg(f"add_table_copy: kind must be 'ram' or 'disc', got {kind!r}")
    reg = registry()
    repl, info = _info(reg, name)
    if name not in repl.state.tables:
        raise TableError(f"add_table_copy({name!r}) must run on a node holding a copy "
                         f"(one of {sorted(info.placement)})", ("not_local", name))
    _schema_op(reg, "add_copy", (name, node, kind))


def del_table_copy(name: str, node: str) -> None:
    """Remove the copy of ``name`` on ``node`` (the table goes with its last copy)."""
    _info(registry(), name)
    _schema_op(registry(), "del_copy", (name, node))


def move_table_copy(name: str, src: str, dst: str) -> None:
    """Move the copy of ``name`` from ``src`` to ``dst`` (same kind)."""
    _r, info = _info(registry(), name)
    kind = info.placement.get(src)
    if kind is None:
        raise TableError(f"{src} holds no copy of {name!r}", ("no_exists", name, src))
    add_table_copy(name, dst, kind)
    del_table_copy(name, src)


def change_table_copy_type(name: str, node: str, kind: str) -> None:
    """Make the copy of ``name`` on ``node`` a ``"ram"`` or ``"disc"`` copy."""
    if kind not in KINDS:
        raise BadArg(f"change_table_copy_type: kind must be 'ram' or 'disc', got {kind!r}")
    _info(registry(), name)
    _schema_op(registry(), "retype", (name, node, kind))


# --- information ------------------------------------------------------------------------------


def info_item(reg: Registry, name: str, item: str) -> Any:
    repl = reg.repl
    sinfo = repl.state.schema.get(name) if repl is not None else None
    if sinfo is None:
        tab = reg.table(name)
        me = current_node().name
        local = {"where_to_read": me, "active_replicas": [me], "synced": True,
                 "ram_copies": [me] if tab.storage == "ram" else [],
                 "disc_copies": [me] if tab.storage == "disc" else [],
                 "log_position": None, "replicated": False}
        if item in local:
            return local[item]
        return getattr(tab.info(), item)
    assert repl is not None
    fresh = repl.active_nodes()
    nodes = sorted(sinfo.placement)
    if item == "where_to_read":
        if repl.me in sinfo.placement:
            return repl.me
        live = [n for n in nodes if n in fresh]
        return (live or nodes or [None])[0]
    if item == "active_replicas":
        return [n for n in nodes if n in fresh or n == repl.me]
    if item in ("ram_copies", "disc_copies"):
        return [n for n in nodes if sinfo.placement[n] == item[:-7]]
    if item == "synced":
        return bool(repl.synced and name in repl.state.tables)
    if item == "log_position":
        return repl.state.position
    if item == "replicated":
        return True
    tab = repl.state.tables.get(name)
    if tab is None:
        raise TableError(f"table {name!r} has no copy on {repl.me}: {item!r} is known "
                         f"only where it is held ({nodes})", ("not_local", name, item))
    return getattr(tab.info(), item)


def _active_nodes(self: _repl.Repl) -> set[str]:
    t = time.time()
    out = set()
    for k, (_p, at) in self.reports.items():
        if t - at < max(10.0, self.tick * 20):
            out.add(k)
    return out


_repl.Repl.active_nodes = _active_nodes  # type: ignore[attr-defined]


def replication_info() -> dict[str, Any] | None:
    """This node's replication status (None when it does not run): engine, applied
    log position, the end of the log last seen, lag, majority, synced, counters."""
    repl = registry().repl
    if repl is None:
        return None
    st = repl.state
    return {
        "engine": repl.engine.describe(),
        "position": st.position,
        "log_end": repl.log_end,
        "lag": max(0, repl.log_end - st.position),
        "majority": repl.majority,
        "synced": repl.synced,
        "tables": {n: sorted(s.placement.items()) for n, s in sorted(st.schema.items())},
        "held": sorted(st.tables),
        "commits": repl.commits,
        "aborts": repl.aborts,
        "records": repl.records,
        "queued": len(repl.queue),
        "in_flight": len(repl.inflight),
        "durable_position": repl.durable,
        "last_error": repl.last_error,
        "append_ms_p50": _p50(repl.put_times),
        "watch_ms_p50": _p50(repl.watch_lags),
    }


def _p50(xs: Any) -> float | None:
    if not xs:
        return None
    return round(sorted(xs)[len(xs) // 2] * 1000, 2)


def wait_caught_up(reg: Registry, names: Iterable[str], deadline: float | None,
                   timeout: float | None) -> None:
    """Wait until the replicated ``names`` here applied the log up to its end as read
    now (``TableTimeout`` naming them otherwise)."""
    repl = reg.repl
    wanted = [n for n in names if repl is not None and n in repl.state.schema]
    if not wanted or repl is None:
        return
    try:
        end = repl.engine.position()
    except EngineUnavailable as e:
        raise TableTimeout(tuple(wanted), timeout) from e
    while repl.state.position < end:
        left = None if deadline is None else deadline - now()
        if left is not None and left <= 0:
            raise TableTimeout(tuple(wanted), timeout)
        ref = make_ref()
        repl.catchup.append((end, self_pid(), ref))
        if receive(("$otp_tables_caught_up", ref), left, default=None) is None:
            continue


def record_report(repl: _repl.Repl, raw: dict[str, bytes]) -> None:
    out = {}
    for k, v in raw.items():
        try:
            p, at = msgpack.unpackb(v)
        except Exception:
            continue
        out[k.split("/", 1)[-1]] = (int(p), float(at))
    repl.reports = out
