"""Replicated tables across real otpy nodes (OS processes) and a real 3-member etcd on
loopback: every replica passes through the same states, catch-up after a restart,
partitions refused and reported, SIGKILLs of nodes and etcd members under write load
lose nothing acknowledged, compaction keeps etcd bounded."""

from __future__ import annotations

import itertools
import os
import random
import time

import pytest

from otp.testing_dist import Cluster
from tests.etcd_helpers import EtcdCluster, need_etcd

pytestmark = pytest.mark.timeout(1800)

_prefixes = itertools.count(1)

HASH = """
import hashlib
def content_hash(name):
    rows = sorted(repr(tuple(r)) for r in tables.dirty_select(name, lambda r: True))
    return hashlib.sha256("\\n".join(rows).encode()).hexdigest(), len(rows)
"""


@pytest.fixture(scope="module")
def etcd(tmp_path_factory):
    need_etcd()
    with EtcdCluster(tmp_path_factory.mktemp("etcd"), 3) as c:
        yield c


def _prefix():
    return f"t{os.getpid()}-{next(_prefixes)}"


def join(node, etcd, prefix, directory=None, **kw):
    node.exec("from otp import tables\n" + HASH +
              "tables.start_replication(endpoints=EPS, prefix=PREFIX, directory=DIR, **KW)",
              EPS=etcd.endpoints, PREFIX=prefix, DIR=directory, KW=kw, timeout=60)


def wait_until(pred, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"{what} not reached within {timeout} s (last: {last!r})")


def same_everywhere(nodes, table="acc"):
    """Every replica caught up to the log's end: the same content (hash) everywhere."""
    for n in nodes:
        n.exec(f"tables.wait_for_tables([{table!r}], 30)", timeout=40)
    hashes = [n.eval(f"content_hash({table!r})") for n in nodes]
    assert len(set(hashes)) == 1, hashes
    return hashes[0]


def test_d5_three_nodes_share_a_replicated_disc_table(etcd, tmp_path):
    prefix = _prefix()
    with Cluster(tmp_path) as c:
        nodes = [c.otpy(s) for s in "abc"]
        for n in nodes:
            join(n, etcd, prefix, str(tmp_path / n.name.split("@")[0]))
        a, b, cc = nodes
        names = [n.name for n in nodes]
        a.exec("tables.create_table('acc', attributes=('id', 'owner', 'n'), "
               "disc_copies=NAMES, index=['owner'])", NAMES=names)
        for i, n in enumerate(nodes):
            n.exec("tables.wait_for_tables(['acc'], 10)\n"
                   "for k in range(20):\n"
                   "    tables.transaction(tables.write, 'acc', (K0 + k, 'o' + str(k % 3), k))",
                   K0=i * 100, timeout=60)
        _h, count = same_everywhere(nodes)
        assert count == 60
        assert b.eval("[r.id for r in tables.dirty_index_read('acc', 'o1', 'owner')][:1]")
        assert cc.eval("tables.table_info('acc', 'disc_copies')") == sorted(names)
        assert a.eval("tables.table_info('acc', 'where_to_read')") == a.name
        wait_until(lambda: a.eval("sorted(tables.table_info('acc', 'active_replicas'))")
                   == sorted(names), what="every replica reported active")
        info = b.eval("tables.replication_info()")
        assert info["majority"] and info["position"] > 0 and info["held"] == ["acc"]


def test_d2_concurrent_increments_from_three_nodes_serialize(etcd, tmp_path):
    prefix = _prefix()
    with Cluster(tmp_path) as c:
        nodes = [c.otpy(s) for s in "abc"]
        for n in nodes:
            join(n, etcd, prefix)
        nodes[0].exec("tables.create_table('acc', attributes=('id', 'owner', 'n'), "
                      "ram_copies=NAMES); tables.dirty_write('acc', (1, 'x', 0))",
                      NAMES=[n.name for n in nodes])
        code = """
tables.wait_for_tables(['acc'], 10)
def bump():
    [r] = tables.read('acc', 1, lock='write')
    tables.write('acc', r._replace(n=r.n + 1))
me = self()
def worker():
    for _ in range(15):
        tables.transaction(bump)
    send(me, 'done')
for _ in range(4):
    spawn(worker)
for _ in range(4):
    receive(lambda m: m == 'done', 120)
"""
        # All three nodes run their workers at once (exec returns when its own end).
        from threading import Thread

        errors = []

        def run(n):
            try:
                n.exec(code, timeout=150)
            except Exception as e:  # reported below
                errors.append(e)

        ts = [Thread(target=run, args=(n,)) for n in nodes]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert not errors, errors
        same_everywhere(nodes)
        assert nodes[1].eval("tables.dirty_read('acc', 1)[0].n") == 3 * 4 * 15
        assert sum(n.eval("tables.replication_info()['aborts']") for n in nodes) >= 0


def test_d4_a_restarted_node_catches_up_before_wait_for_tables_returns(etcd, tmp_path):
    prefix = _prefix()
    with Cluster(tmp_path) as c:
        a, b = c.otpy("a"), c.otpy("b")
        dirs = {n.name: str(tmp_path / n.name.split("@")[0]) for n in (a, b)}
        for n in (a, b):
            join(n, etcd, prefix, dirs[n.name])
        a.exec("tables.create_table('acc', attributes=('id', 'owner', 'n'), "
               "disc_copies=NAMES)\n"
               "for k in range(30): tables.dirty_write('acc', (k, 'a', k))",
               NAMES=[a.name, b.name])
        b.exec("tables.wait_for_tables(['acc'], 10)")
        assert b.eval("tables.table_info('acc', 'size')") == 30
        b.kill()
        a.exec("for k in range(30, 80): tables.transaction(tables.write, 'acc', (k, 'a', k))\n"
               "tables.dirty_delete('acc', 0)")
        b2 = c.otpy("b")
        join(b2, etcd, prefix, dirs[b.name])
        b2.exec("tables.wait_for_tables(['acc'], 30)")
        assert b2.eval("tables.table_info('acc', 'size')") == 79  # no wait beyond the call
        same_everywhere([a, b2])


def test_d5_a_node_cut_off_from_the_etcd_majority_refuses_writes_and_catches_up(etcd, tmp_path):
    prefix = _prefix()
    with Cluster(tmp_path) as c:
        a, b = c.otpy("a"), c.otpy("b")
        join(a, etcd, prefix, timeout=2.0, tick=0.2)
        join(b, etcd, prefix, timeout=2.0, tick=0.2)
        a.exec("tables.create_table('acc', attributes=('id', 'owner', 'n'), "
               "ram_copies=NAMES); tables.dirty_write('acc', (1, 'a', 1))\n"
               "start_probe()", NAMES=[a.name, b.name])
        a.exec("def sub():\n"
               "    tables.subscribe('system')\n"
               "    while True: send('probe', receive())\n"
               "spawn(sub)")
        etcd.pause(1)
        etcd.pause(2)
        try:
            # No hang: the exec's own timeout (30 s) would fail the test.
            a.exec("""
try:
    tables.transaction(tables.write, 'acc', (1, 'a', 2))
    failure = None
except tables.TableError as e:
    failure = (type(e).__name__, str(e), e.reason)
""", timeout=30)
            failure = a.eval("failure")
            assert failure is not None and failure[0] == "TableError", failure
            assert "replicated commit" in failure[1]
            assert a.eval("tables.dirty_read('acc', 1)[0].n") == 1  # local reads work
            wait_until(lambda: a.eval("tables.table_info('acc', 'synced')") is False,
                       what="synced false")
            a.eval("probe_wait(lambda m: m[:2] == ('partitioned', 'acc'), 10)")
        finally:
            etcd.resume(1)
            etcd.resume(2)
        etcd.wait_healthy()
        b.exec("tables.wait_for_tables(['acc'], 30)\n"
               "tables.transaction(tables.write, 'acc', (2, 'b', 2))", timeout=40)
        a.eval("probe_wait(lambda m: m[:2] == ('caught_up', 'acc'), 30)", timeout=40)
        wait_until(lambda: a.eval("tables.table_info('acc', 'synced')"), what="synced")
        a.exec("tables.transaction(tables.write, 'acc', (1, 'a', 3))", timeout=20)
        same_everywhere([a, b])


def test_d5_no_acknowledged_commit_is_lost_when_nodes_and_etcd_members_are_killed(etcd, tmp_path):
    kills = int(os.environ.get("OTP_TABLES_REPL_KILLS", "50"))
    rnd = random.Random(int(os.environ.get("OTP_TABLES_REPL_SEED", "16")))
    prefix = _prefix()
    with Cluster(tmp_path) as c:
        a, b, v = c.otpy("a"), c.otpy("b"), c.otpy("v")
        vdir = str(tmp_path / "v")
        for n, d in ((a, str(tmp_path / "a")), (b, None), (v, vdir)):
            join(n, etcd, prefix, d, timeout=3.0, tick=0.2)
        names = [a.name, b.name, v.name]
        a.exec("tables.create_table('acc', attributes=('id', 'owner', 'n'), "
               "disc_copies=[NAMES[0], NAMES[2]], ram_copies=[NAMES[1]])", NAMES=names)
        writer = """
tables.wait_for_tables(['acc'], 30)
acked = []
failed = [0]
def write_loop(base):
    k = 0
    while True:
        k += 1
        try:
            tables.transaction(tables.write, 'acc', (base + k, 'w', k))
            acked.append(base + k)
        except tables.TableError:
            failed[0] += 1
            sleep(0.05)
for i in range(8):
    spawn(write_loop, BASE + i * 1_000_000)
"""
        a.exec(writer, BASE=10**9, timeout=40)
        b.exec(writer, BASE=2 * 10**9, timeout=40)
        done = 0
        while done < kills:
            if rnd.random() < 0.75:
                i = rnd.randrange(3)
                etcd.kill(i)  # a minority: the other two keep the majority
                time.sleep(rnd.uniform(0, 0.3))
                etcd._start(i)
                etcd.wait_healthy()
            else:
                v.kill()
                time.sleep(rnd.uniform(0, 0.3))
                v = c.otpy("v")
                join(v, etcd, prefix, vdir, timeout=3.0, tick=0.2)
            done += 1
        acked_a = a.eval("list(acked)", timeout=20)
        acked_b = b.eval("list(acked)", timeout=20)
        assert len(acked_a) > 0 and len(acked_b) > 0
        # Stop the writers, then compare every replica at the end of the log.
        for n in (a, b):
            n.exec("[exit(p, 'kill') for p in processes() "
                   "if process_info(p) and 'write_loop' in repr(process_info(p))]")
        hashes = same_everywhere([a, b, v])
        for n in (a, b, v):
            present = n.eval("set(tables.dirty_all_keys('acc'))", timeout=30)
            lost = (set(acked_a) | set(acked_b)) - present
            assert not lost, f"{n.name} lost {len(lost)} acknowledged commits"
        assert hashes[1] >= len(acked_a) + len(acked_b)


def test_compaction_keeps_etcd_bounded_and_a_ram_copy_restarts_from_the_snapshot(
        etcd, tmp_path):
    prefix = _prefix()
    with Cluster(tmp_path) as c:
        a, r = c.otpy("a"), c.otpy("r")
        kw = {"compact_interval": 0.3, "window": 50, "tick": 0.1}
        join(a, etcd, prefix, **kw)
        join(r, etcd, prefix, **kw)
        a.exec("tables.create_table('acc', attributes=('id', 'owner', 'n'), "
               "ram_copies=NAMES)", NAMES=[a.name, r.name])
        a.exec("repl = tables._repl_api.registry().repl")
        churn = """
for k in range(400):
    tables.dirty_write('acc', (k % 20, 'x' * 2000, k))
    if k % 3 == 0:
        tables.dirty_delete('acc', (k + 7) % 20)
"""
        sizes = []
        for _round in range(6):
            a.exec(churn, timeout=120)
            r.exec("tables.wait_for_tables(['acc'], 30)", timeout=40)
            end = a.eval("repl.state.position")
            # Compaction runs on its own timer: wait until it passed this round's writes.
            wait_until(lambda end=end: a.eval("repl.engine.horizon()") >= end - 50 - 10,
                       timeout=60, what="the log compacted past this round")
            sizes.append(int(a.eval("repl.engine.status()")["dbSizeInUse"]))
        # Each round wrote ~1 MB into etcd; compacted, the database in use stays put.
        assert sizes[-1] - sizes[1] < 1_500_000, sizes
        same_everywhere([a, r])
        r.kill()
        a.exec(churn, timeout=120)
        r2 = c.otpy("r")
        join(r2, etcd, prefix, **kw)  # a ram copy: starts from the snapshot, then the log
        assert r2.eval("tables.replication_info()['position']") > 0
        same_everywhere([a, r2])


def test_start_replication_with_etcd_unreachable_is_a_clear_error(tmp_path):
    need_etcd()
    from otp.testing_dist import free_port

    with Cluster(tmp_path) as c:
        a = c.otpy("a")
        a.exec("from otp import tables\n"
               "try:\n"
               "    tables.start_replication(endpoints=[URL], timeout=1.0)\n"
               "    err = None\n"
               "except tables.TableError as e:\n"
               "    err = str(e)", URL=f"http://127.0.0.1:{free_port()}", timeout=30)
        err = a.eval("err")
        assert err and "no etcd endpoint answered" in err, err


@pytest.mark.otp(clock="real")
def test_the_application_env_joins_the_replicated_tables(node, etcd, tmp_path):
    from otp import application, tables
    from otp.lowlevel import current_node

    application.load(tables.APP)
    application.set_env("otp_tables", "etcd_endpoints", etcd.endpoints)
    application.set_env("otp_tables", "etcd_prefix", _prefix())
    tables.start(tmp_path)
    try:
        info = tables.replication_info()
        assert info is not None and info["majority"]
        tables.create_table("acc", attributes=("k", "v"),
                            disc_copies=[current_node().name, "elsewhere@nowhere"])
        tables.transaction(tables.write, "acc", (1, 2))
        assert tables.table_info("acc", "log_position") > 0
        assert tables.system_info()["replication"]["held"] == ["acc"]
    finally:
        tables.stop()
    assert tables.replication_info() is None


def test_add_move_and_delete_copies_while_another_node_writes(etcd, tmp_path):
    prefix = _prefix()
    with Cluster(tmp_path) as c:
        a, b, d = c.otpy("a"), c.otpy("b"), c.otpy("d")
        for n in (a, b, d):
            join(n, etcd, prefix, str(tmp_path / n.name.split("@")[0]))
        a.exec("tables.create_table('acc', attributes=('id', 'owner', 'n'), "
               "ram_copies=[A, 'nowhere@nohost'])\n"
               "for k in range(50): tables.dirty_write('acc', (k, 'a', k))\n"
               "def churn():\n"
               "    k = 1000\n"
               "    while True:\n"
               "        k += 1\n"
               "        tables.transaction(tables.write, 'acc', (k % 1100, 'c', k))\n"
               "churner = spawn(churn)", A=a.name)
        a.exec("tables.add_table_copy('acc', B, 'disc')", B=b.name, timeout=60)
        b.exec("tables.wait_for_tables(['acc'], 30)", timeout=40)
        assert b.eval("tables.table_info('acc', 'storage')") == "disc_copies"
        a.exec("exit(churner, 'kill')")
        same_everywhere([a, b])  # the copy made under churn is the same table
        a.exec("tables.move_table_copy('acc', B, D)", B=b.name, D=d.name, timeout=60)
        wait_until(lambda: b.eval("'acc' in tables.table_names()") is False,
                   what="the copy gone from b")
        assert sorted(a.eval("tables.table_info('acc', 'disc_copies')")) == [d.name]
        a.exec("tables.del_table_copy('acc', 'nowhere@nohost')")
        same_everywhere([a, d])
        assert a.eval("tables.table_info('acc', 'size')") >= 50
        d.exec("tables.delete_table('acc')")
        wait_until(lambda: a.eval("'acc' in tables.table_names()") is False,
                   what="table deleted on a")
