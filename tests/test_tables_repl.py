"""Replicated tables on one node with the in-process log engine: commits through the
log, validation and retries, dirty operations, schema, events, partitions (the
in-process engine made to fail). Several real nodes on etcd: test_tables_repl_cluster.py.
"""

from __future__ import annotations

import functools

import pytest

from otp import tables
from otp.errors import BadArg
from otp.lowlevel import current_node
from otp.process import receive, send
from otp.process import self as self_pid
from otp.tables import _repl_state
from otp.tables._engine import MemoryEngine
from otp.tables._registry import registry
from otp.tables._repl_state import TxEntry

OTHER = "other@nowhere"


@pytest.fixture
def eng(node):
    return MemoryEngine()


def replicated(test):
    """Run the test with replication on the in-process engine (started and stopped
    inside the test's process)."""

    @functools.wraps(test)
    def run(eng, **kw):
        tables.start_replication(eng, compact_interval=0)
        try:
            test(eng, **kw)
        finally:
            tables.stop_replication()

    return run


def _me():
    return current_node().name


def _acc(**kw):
    return tables.create_table("acc", attributes=("id", "owner", "n"),
                               ram_copies=[_me(), OTHER], **kw)


def _foreign(eng, ops, reads=(), dirty=False):
    """Append an entry as another node would."""
    e = TxEntry(f"{OTHER}/x", 1, tuple(reads), (), tuple(ops), dirty)
    return eng.append([_repl_state.encode(e)])


@replicated
def test_d5_a_replicated_commit_is_one_log_entry_applied_in_log_order(eng):
    Acc = _acc()
    assert tables.table_info("acc", "replicated") is True
    start = len(eng.records)
    tables.transaction(lambda: tables.write("acc", Acc(1, "ann", 10)))
    assert len(eng.records) == start + 1
    assert tables.dirty_read("acc", 1) == [Acc(1, "ann", 10)]  # read-your-writes
    _foreign(eng, [("put", "acc", 2, (2, "bob", 5))])
    tables.wait_for_tables(["acc"], 5)
    assert tables.dirty_read("acc", 2) == [Acc(2, "bob", 5)]
    assert tables.table_info("acc", "log_position") == eng.last


@replicated
def test_d2_a_conflicting_transaction_is_aborted_by_validation_and_run_again(eng):
    Acc = _acc()
    tables.dirty_write("acc", Acc(1, "ann", 10))
    runs = []

    def add():
        [a] = tables.read("acc", 1)
        if not runs:
            # Another node commits a change of the key after we read it.
            _foreign(eng, [("put", "acc", 1, (1, "ann", 100))])
        runs.append(a.n)
        tables.write("acc", a._replace(n=a.n + 1))

    tables.transaction(add)
    assert runs == [10, 100]  # the first run lost validation; the second saw 100
    assert tables.dirty_read("acc", 1) == [Acc(1, "ann", 101)]
    assert tables.replication_info()["aborts"] >= 1


@replicated
def test_blind_writes_do_not_conflict(eng):
    Acc = _acc()
    runs = []

    def put():
        runs.append(1)
        _foreign(eng, [("put", "acc", 1, (1, "x", 1))]) if len(runs) == 1 else None
        tables.write("acc", Acc(1, "mine", 2))

    tables.transaction(put)
    assert runs == [1]
    assert tables.dirty_read("acc", 1) == [Acc(1, "mine", 2)]


@replicated
def test_a_scan_conflicts_with_any_write_to_the_table(eng):
    _acc()
    runs = []

    def count():
        n = len(tables.select("acc", lambda r: True))
        if not runs:
            _foreign(eng, [("put", "acc", 9, (9, "z", 0))])
        runs.append(n)
        tables.write("acc", (100, "count", n))

    tables.transaction(count)
    assert runs == [0, 1]


@replicated
def test_dirty_operations_are_ordered_without_validation(eng):
    _acc()
    tables.create_table("ctr", attributes=("k", "v"), ram_copies=[_me(), OTHER])
    assert tables.dirty_update_counter("ctr", "a", 5) == 5
    _foreign(eng, [("counter", "ctr", "a", (1, 10))], dirty=True)
    assert tables.dirty_update_counter("ctr", "a", 1) == 16
    tables.dirty_write("acc", (1, "a", 1))
    tables.dirty_delete("acc", 1)
    assert tables.dirty_read("acc", 1) == []
    with pytest.raises(BadArg):
        tables.dirty_write("acc", (2, "a", "not an int"))
        tables.dirty_update_counter("acc", 2, 1, attribute="n")


@replicated
def test_bags_delete_object_and_clear_table(eng):
    tables.create_table("tags", attributes=("k", "tag"), type="bag",
                        ram_copies=[_me(), OTHER])
    tables.dirty_write("tags", ("a", 1))
    tables.dirty_write("tags", ("a", 2))
    tables.transaction(lambda: tables.write("tags", ("a", 3)))
    assert sorted(r.tag for r in tables.dirty_read("tags", "a")) == [1, 2, 3]
    tables.dirty_delete_object("tags", ("a", 2))
    assert sorted(r.tag for r in tables.dirty_read("tags", "a")) == [1, 3]
    tables.clear_table("tags")
    assert tables.dirty_read("tags", "a") == []


@replicated
def test_placement_and_table_info(eng):
    _acc()
    tables.create_table("d", attributes=("k", "v"), disc_copies=[OTHER])
    assert tables.table_info("acc", "ram_copies") == sorted([_me(), OTHER])
    assert tables.table_info("acc", "where_to_read") == _me()
    assert tables.table_info("d", "where_to_read") == OTHER
    assert tables.table_info("d", "disc_copies") == [OTHER]
    assert "d" not in tables.table_names()  # no copy here
    tables.del_table_copy("acc", OTHER)
    assert tables.table_info("acc", "ram_copies") == [_me()]
    tables.change_table_copy_type("acc", _me(), "disc")
    assert tables.table_info("acc", "disc_copies") == [_me()]
    with pytest.raises(tables.TableExists):
        _acc()
    tables.delete_table("acc")
    assert "acc" not in tables.table_names()
    # A single-node placement without other nodes is a local table (today's path)...
    tables.stop_replication()
    tables.create_table("solo", attributes=("k", "v"), ram_copies=[_me()])
    assert tables.table_info("solo", "replicated") is False
    tables.start_replication(eng, compact_interval=0)


@replicated
def test_events_and_subscribers_see_replicated_changes(eng):
    _acc()
    tables.subscribe("acc")
    _foreign(eng, [("put", "acc", 3, (3, "c", 0))])
    ev = receive(tables.TableEvent, 5)
    assert (ev.op, ev.key) == ("write", 3)


@replicated
def test_d5_partitioned_engine_fails_commits_with_the_cause_and_reads_stay_local(eng):
    Acc = _acc()
    tables.dirty_write("acc", Acc(1, "ann", 1))
    tables.subscribe("system")
    eng.fail = "cut off from the majority"
    with pytest.raises(tables.TableError, match="cut off from the majority"):
        tables.transaction(lambda: tables.write("acc", Acc(1, "ann", 2)))
    assert tables.dirty_read("acc", 1) == [Acc(1, "ann", 1)]
    ev = receive(lambda m: isinstance(m, tables.SystemEvent), 5)
    assert ev[:2] == ("partitioned", "acc")
    assert tables.table_info("acc", "synced") is False
    eng.fail = None
    tables.transaction(lambda: tables.write("acc", Acc(1, "ann", 3)))
    assert tables.dirty_read("acc", 1) == [Acc(1, "ann", 3)]


@replicated
def test_mixing_replicated_and_local_tables_in_one_transaction_is_refused(eng):
    _acc()
    tables.create_table("loc", attributes=("k", "v"))

    def both():
        tables.write("acc", (1, "a", 1))
        tables.write("loc", (1, 1))

    with pytest.raises(tables.TableError, match="both replicated and local"):
        tables.transaction(both)


@replicated
def test_a_refused_entry_fails_alone_not_its_whole_group(eng):
    from otp.process import spawn

    Acc = _acc()
    eng.max_record = 20_000
    me = self_pid()

    def small(i):
        tables.transaction(lambda: tables.write("acc", Acc(i, "s", i)))
        send(me, ("ok", i))

    def big():
        try:
            tables.transaction(lambda: tables.write("acc", Acc(99, "x" * 50_000, 0)))
            send(me, ("big", None))
        except tables.TableError as e:
            send(me, ("big", e.reason[0]))

    spawn(big)
    for i in range(5):
        spawn(small, i)
    got = sorted(receive(lambda m: m[0] in ("ok", "big"), 5) for _ in range(6))
    assert got == [("big", "rejected")] + [("ok", i) for i in range(5)]
    assert sorted(tables.dirty_all_keys("acc")) == [0, 1, 2, 3, 4]


@pytest.mark.otp(clock="real")
def test_a_corrupt_snapshot_is_a_clear_error(node):
    eng = MemoryEngine()
    eng.put_snapshot(5, b"not a snapshot")
    eng.compact(5)
    with pytest.raises(tables.TableError, match="snapshot at position 5 is corrupt"):
        tables.start_replication(eng)
    assert tables.replication_info() is None


@pytest.mark.otp(clock="real")
def test_a_node_starting_after_compaction_loads_the_snapshot_then_replays(node):
    eng = MemoryEngine()
    tables.start_replication(eng, compact_interval=0, window=2)
    try:
        Acc = _acc()
        for i in range(10):
            tables.dirty_write("acc", Acc(i, "a", i))
        snap = registry().repl.state.snapshot()
        pos = registry().repl.state.position
    finally:
        tables.stop_replication()
    eng.put_snapshot(pos, snap)
    eng.compact(pos - 2)
    _foreign(eng, [("put", "acc", 100, (100, "late", 0))])
    tables.start_replication(eng, compact_interval=0, window=2)
    try:
        assert sorted(tables.dirty_all_keys("acc")) == [*range(10), 100]
        assert tables.table_info("acc", "synced") is True
    finally:
        tables.stop_replication()


@pytest.mark.otp(clock="real")
def test_a_restart_from_the_disc_copy_decides_as_the_others_did(node, tmp_path):
    """The last-write positions are rebuilt from the disc copy, so an entry replayed
    after a restart is validated exactly as on the replicas that never stopped."""
    eng = MemoryEngine()
    tables.start_replication(eng, compact_interval=0, directory=str(tmp_path))
    try:
        tables.create_table("acc", attributes=("id", "owner", "n"),
                            disc_copies=[_me(), OTHER])
        before = registry().repl.state.position
        tables.transaction(lambda: tables.write("acc", (1, "mine", 1)))
        after = registry().repl.state.position
    finally:
        tables.stop_replication()
    # While this node is down, two entries of another node: one read key 1 before our
    # write (conflict: aborted everywhere), one after it (commits).
    _foreign(eng, [("put", "acc", 1, (1, "stale", 2))], reads=[("acc", 1, before)])
    _foreign(eng, [("put", "acc", 2, (2, "fresh", 3))], reads=[("acc", 1, after)])
    tables.start_replication(eng, compact_interval=0, directory=str(tmp_path))
    try:
        assert [tuple(r) for r in tables.dirty_read("acc", 1)] == [(1, "mine", 1)]
        assert [tuple(r) for r in tables.dirty_read("acc", 2)] == [(2, "fresh", 3)]
    finally:
        tables.stop_replication()


@replicated
def test_copies_naming_other_nodes_make_a_replicated_table(eng):
    tables.create_table("m", attributes=("k", "v"), copies={"disc": [_me()], "ram": [OTHER]})
    assert tables.table_info("m", "replicated") is True
    assert tables.table_info("m", "disc_copies") == [_me()]
    assert tables.table_info("m", "ram_copies") == [OTHER]


@replicated
def test_release_status_shows_the_replication_position_lag_and_majority(eng):
    from otp.cli import _replication_lines
    from otp.release import _replication

    _acc()
    tables.transaction(lambda: tables.write("acc", (1, "ann", 10)))
    info = _replication()
    assert info is not None
    assert info["held"] == ["acc"] and info["majority"] is True
    assert info["position"] == info["log_end"] >= 2 and info["lag"] == 0
    (line,) = _replication_lines(info)
    assert line.startswith(f"  replication   acc at log position {info['position']} of ")
    assert "(lag 0), in the majority" in line
    assert _replication_lines(None) == []
