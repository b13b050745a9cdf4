"""Replicated tables' disc copies: the sqlite file of one node's replicated copies
(``<directory>/replicated/tables.sqlite``), written by a writer process with the log
position each write reflects, and loaded back on a start.

Beside the rows, the file keeps the keys written by the last ``window`` log records
(``recent``), so that a node restarting from its disc copies rebuilds the last-write
positions that validation reads exactly as they were (``_repl_state``).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
from typing import TYPE_CHECKING, Any, NamedTuple

from otp.process import Pid, receive, send, spawn_link
from otp.process import self as self_pid
from otp.tables._disc import DiscFile
from otp.tables._disc_owner import _bulk_load, decoder
from otp.tables._repl_state import SchemaInfo
from otp.tables._table import Table, TableDef

if TYPE_CHECKING:
    from otp.tables._repl import Repl

log = logging.getLogger("otp.tables")

_dumps = pickle.dumps
_PROTO = pickle.HIGHEST_PROTOCOL
SCHEMA_KEY = "$schema_change"  # in the recent writes: a table-level change


class DiscWritten(NamedTuple):
    position: int
    error: Any



def _make_table(repl: Repl, name: str, info: SchemaInfo, kind: str) -> Table:
    d = info.defn
    defn = TableDef(name, tuple(d["attributes"]), d["key"], d["type"], tuple(d["index"]),
                    f"{kind}_copies")
    tab = Table(defn)
    tab.repl = True
    tab.loaded = True
    return tab


# --- disc copies ------------------------------------------------------------------------------


def _disc_put(repl: Repl, tab: Table, key: Any, pv: Any) -> None:
    """Queue the disc row of ``key`` (``pv``: its new value as a plain tuple)."""
    if repl.file is None:
        return
    ident = tab.ident
    if pv is None:
        rid = tab.rids.pop(key, None)
        if rid is not None:
            repl.disc_ops.append(("del", ident, rid))
        return
    rid = tab.rids.get(key)
    if rid is None:
        rid = tab.rids[key] = tab.next_rid
        tab.next_rid += 1
    repl.disc_ops.append(("put", ident, rid, _dumps(pv, _PROTO)))


def _disc_schema(repl: Repl) -> None:
    if repl.file is None:
        return
    sch = {n: [s.defn, s.placement] for n, s in repl.state.schema.items()}
    repl.disc_ops.append(("def", 0, json.dumps({"schema": sch, "idents": repl.idents})))


def _flush_disc(repl: Repl, sync: bool = False) -> None:
    if repl.file is None or repl.disc_busy:
        return
    if not repl.disc_ops and repl.durable >= repl.disc_pos:
        return
    ops = tuple(repl.disc_ops)
    repl.disc_ops = []
    pos = repl.disc_pos
    if sync:
        from otp.threads import run_in_thread

        try:
            run_in_thread(repl.file.write_batch, ops, pos)
            repl.durable = pos
        except Exception:
            log.exception("otp.tables: writing replicated disc copies failed")
        return
    if repl.writer is None:
        repl.writer = spawn_link(_disc_writer, repl.file, self_pid())
    repl.disc_busy = True
    send(repl.writer, (ops, pos))


def _disc_writer(file: DiscFile, owner: Pid) -> None:
    from otp.threads import run_in_thread

    while True:
        msg = receive()
        if msg == "stop":
            return
        ops, pos = msg
        err = None
        try:
            run_in_thread(file.write_batch, ops, pos)
        except Exception as e:
            err = repr(e)
        send(owner, DiscWritten(pos, err))


def _open_disc(repl: Repl) -> None:
    if repl.directory is None:
        return
    from otp.threads import run_in_thread

    d = os.path.join(repl.directory, "replicated")
    # No fsync per write: the log (on a majority of etcd's disks) is the durable copy;
    # after a power loss the file is whole at some earlier position, replayed from.
    f = DiscFile(d, synchronous="NORMAL")
    run_in_thread(f.open)
    repl.file = f


def _load_disc(repl: Repl) -> tuple[int, bool]:
    """Load the disc copies: (their position, whether this node held ram copies)."""
    from otp.threads import run_in_thread

    f = repl.file
    if f is None:
        return 0, True
    pos = run_in_thread(f.last_batch)
    rows = run_in_thread(f.read_schema)
    meta = next((json.loads(d) for i, n, d in rows if i == 0), None)
    if meta is None or pos == 0:
        return 0, True
    st = repl.state
    for name, (defn, placement) in meta["schema"].items():
        st.schema[name] = SchemaInfo(defn, placement)
    repl.idents = {n: int(i) for n, i in meta["idents"].items()}
    repl.next_ident = max(repl.idents.values(), default=0) + 1
    had_ram = False
    for name, info in st.schema.items():
        kind = info.placement.get(repl.me)
        if kind == "ram":
            had_ram = True
        elif kind == "disc" and name in repl.idents:
            tab = _make_table(repl, name, info, "disc")
            tab.ident = repl.idents[name]
            got, _bad = run_in_thread(f.load, tab.ident, decoder(tab))
            _bulk_load(tab, got)
            st.tables[name] = tab
    st.position = pos
    repl.durable = pos
    return pos, had_ram


def _load_recent(repl: Repl, pos: int) -> None:
    from otp.threads import run_in_thread

    assert repl.file is not None
    st = repl.state
    floor = pos - st.window
    for p, blob in run_in_thread(repl.file.read_recent):
        if p <= floor or p > pos:
            continue
        for t, k in pickle.loads(blob):
            if k != SCHEMA_KEY:
                st.lastw[(t, k)] = p
            st.tlastw[t] = p
    repl.recent_pruned = pos
