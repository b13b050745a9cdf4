"""A Hypothesis model of replicated tables' decisions: several replicas at different
points of one log (lagging, restarted from a snapshot, some holding the table and some
not), random transactions that read at a replica's position and write, dirty writes
and counters. Checked against a sequential model at every applied position:

- every replica that applied position P agrees with every other one (the same content,
  the same decisions);
- a committed transaction's reads equal the sequential state just before its entry
  (serializability at the log position), and an aborted one's did not (no spurious
  abort while its reads are within the window);
- counters equal the sum of the committed increments.
"""

from __future__ import annotations

import hypothesis.strategies as st
from hypothesis import HealthCheck, given, settings

from otp.tables._engine import LogRecord
from otp.tables._repl_state import (
    ReplicaState,
    SchemaInfo,
    TxEntry,
    decode,
    encode,
    load_snapshot,
)
from otp.tables._table import Table, TableDef

WINDOW = 6
DEFN = {"name": "t", "attributes": ["k", "v"], "key": "k", "type": "set", "index": []}


def _table() -> Table:
    tab = Table(TableDef("t", ("k", "v"), "k", "set", (), "ram_copies"))
    tab.repl = True
    return tab


def new_replica(holds: bool) -> ReplicaState:
    r = ReplicaState("me" if holds else "other", WINDOW)
    r.schema["t"] = SchemaInfo(DEFN, {"me": "ram"})
    if holds:
        r.tables["t"] = _table()
    return r


def apply(r: ReplicaState, rec: LogRecord) -> list[bool]:
    """What ``_repl._apply_tx`` does, without the node: the decisions taken."""
    out = []
    for blob in rec.entries:
        e = decode(blob)
        assert isinstance(e, TxEntry)
        ok = r.valid(e, rec.position)
        if ok:
            r.note_writes(e, rec.position)
            changes, _plains, _res, err = r.resolve(e)
            if err is None:
                for tab, key, new in changes:
                    tab.apply(key, new)
        out.append(ok)
    r.position = rec.position
    r.prune(rec.position)
    return out


def content(r: ReplicaState) -> dict:
    return {k: tuple(v) for k, v in r.tables["t"].data.items()}


def restore(snap: bytes) -> ReplicaState:
    s = load_snapshot(snap)
    r = ReplicaState("me", WINDOW)
    for n, (d, p) in s["schema"].items():
        r.schema[n] = SchemaInfo(d, p)
    r.lastw = {(t, k): p for t, k, p in s["lastw"]}
    r.tlastw = dict(s["tlastw"])
    tab = _table()
    for k, v in s["data"]["t"]:
        tab.apply(k, tab.rclass._make(v))
    r.tables["t"] = tab
    r.position = s["position"]
    return r


KEYS = st.integers(0, 4)
STEP = st.one_of(
    st.tuples(st.just("tx"), st.integers(0, 2), st.lists(KEYS, max_size=3),
              st.lists(KEYS, min_size=1, max_size=2), st.booleans()),
    st.tuples(st.just("scan"), st.integers(0, 2), KEYS),
    st.tuples(st.just("dirty"), st.integers(0, 2), KEYS, st.integers(-3, 3)),
    st.tuples(st.just("advance"), st.integers(0, 2), st.integers(1, 4)),
    st.tuples(st.just("restart"), st.integers(0, 2)),
    st.tuples(st.just("flush"), st.integers(1, 5)),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(STEP, max_size=60))
def test_replicas_agree_with_a_sequential_model(steps):
    log: list[LogRecord] = []
    pending: list[bytes] = []
    meta: dict[int, tuple] = {}  # tid -> (reads as values seen, kind)
    replicas = [new_replica(True), new_replica(True), new_replica(True)]
    observer = new_replica(False)  # holds no copy: decides from last writes alone
    applied = [0, 0, 0]  # index into log per replica
    tids = iter(range(1, 10**6))
    pos = [0]

    def flush(n):
        nonlocal pending
        if not pending:
            return
        take, pending = pending[:n], pending[n:]
        pos[0] += 1 + (pos[0] % 3)  # positions increase, with gaps (etcd revisions)
        log.append(LogRecord(pos[0], tuple(take)))

    for step in steps:
        kind = step[0]
        if kind == "tx":
            _k, i, reads, writes, bump = step
            r = replicas[i]
            data = r.tables["t"].data
            seen = {k: (data[k].v if k in data else None) for k in reads}
            ops = []
            for k in writes:
                base = seen.get(k) or 0
                ops.append(("put", "t", k, (k, base + 1 if bump else 100 + k)))
            tid = next(tids)
            e = TxEntry("n", tid, tuple(("t", k, r.position) for k in reads), (),
                        tuple(ops), False)
            meta[tid] = ("tx", seen)
            pending.append(encode(e))
        elif kind == "scan":
            # A whole-table read (select, table lock): writes the number of records.
            _k, i, key = step
            r = replicas[i]
            data = r.tables["t"].data
            seen_all = {k: v.v for k, v in data.items()}
            tid = next(tids)
            e = TxEntry("n", tid, (), (("t", r.position),),
                        (("put", "t", key, (key, len(seen_all))),), False)
            meta[tid] = ("scan", seen_all)
            pending.append(encode(e))
        elif kind == "dirty":
            _k, i, key, incr = step
            tid = next(tids)
            e = TxEntry("n", tid, (), (), (("counter", "t", key, (1, incr)),), True)
            meta[tid] = ("dirty", None)
            pending.append(encode(e))
        elif kind == "flush":
            flush(step[1])
        elif kind == "advance":
            _k, i, n = step
            flush(3)
            for rec in log[applied[i]:applied[i] + n]:
                apply(replicas[i], rec)
                applied[i] += 1
        elif kind == "restart":
            i = step[1]
            # Restart from the snapshot of the most advanced replica (a ram copy).
            j = max(range(3), key=lambda x: applied[x])
            replicas[i] = restore(replicas[j].snapshot())
            applied[i] = applied[j]
    flush(len(pending))
    # The sequential model, and every replica brought to the end of the log.
    model: dict = {}
    history: list[tuple[int, dict]] = [(0, {})]
    decisions: dict[int, bool] = {}
    obs_decisions: list[bool] = []
    for rec in log:
        for blob in rec.entries:
            e = decode(blob)
            kind_, seen = meta[e.tid]
            if e.dirty:
                ok = True
            elif kind_ == "scan":
                ((_t, p),) = e.treads
                ok = p >= rec.position - WINDOW and not any(
                    p < hpos <= rec.position and changed for hpos, changed in history)
                if ok:
                    assert {k: v[1] for k, v in model.items()} == seen, (e, model, seen)
            else:
                ok = all(p >= rec.position - WINDOW for _t, _k, p in e.reads)
                # reads valid iff no committed write to the key after the read position
                for _t, k, p in e.reads:
                    for hpos, changed in history:
                        if p < hpos <= rec.position and k in changed:
                            ok = False
                if ok:
                    cur = {k: (model[k][1] if k in model else None) for k in seen}
                    assert cur == seen, (e, cur, seen)  # serializable at the position
            decisions[e.tid] = ok
            changed = {}
            if ok:
                for op, _t, k, v in e.ops:
                    if op == "put":
                        model[k] = v
                    else:
                        old = model.get(k)
                        if old is None:
                            model[k] = (k, v[1])
                        else:
                            model[k] = (k, old[1] + v[1])
                    changed[k] = True
            history.append((rec.position, changed))
        obs_decisions.extend(apply(observer, rec))
    for i in range(3):
        for rec in log[applied[i]:]:
            apply(replicas[i], rec)
        assert content(replicas[i]) == model
    fresh = new_replica(True)
    got = []
    for rec in log:
        got.extend(apply(fresh, rec))
    assert got == [decisions[decode(b).tid] for rec in log for b in rec.entries]
    assert obs_decisions == got  # a node without a copy decides the same
