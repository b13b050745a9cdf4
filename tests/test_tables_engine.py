"""The log engines behind replicated tables: the in-process one and etcd (a real
3-member cluster on loopback)."""

from __future__ import annotations

import pytest

from otp.process import exit, receive, send, spawn_link, unlink
from otp.process import self as self_pid
from otp.tables._engine import Compacted, EngineRejected, EngineUnavailable, MemoryEngine
from otp.tables._etcd import EtcdEngine
from tests.etcd_helpers import EtcdCluster, need_etcd


def _engine_contract(eng):
    """What every engine does (runs in a process of a real-clock node)."""
    p1 = eng.append([b"a", b"b"])
    p2 = eng.append([b"c"])
    assert p2 > p1 > 0
    res = eng.read_from(0)
    assert [(r.position, r.entries) for r in res.records] == [(p1, (b"a", b"b")), (p2, (b"c",))]
    assert res.upto >= p2
    assert [r.entries for r in eng.read_from(p1).records] == [(b"c",)]

    me = self_pid()

    def watcher():
        for rec in eng.watch(p1):
            send(me, ("rec", rec.position, rec.entries))

    w = spawn_link(watcher)
    assert receive(lambda m: m[0] == "rec", 10) == ("rec", p2, (b"c",))
    p3 = eng.append([b"d"])
    assert receive(lambda m: m[0] == "rec", 10) == ("rec", p3, (b"d",))

    eng.compact(p2)
    assert eng.horizon() == p2
    with pytest.raises(Compacted):
        eng.read_from(p1)
    assert [r.entries for r in eng.read_from(p2).records] == [(b"d",)]

    assert eng.get_snapshot() is None
    eng.put_snapshot(p2, b"state" * 300_000)  # more than one etcd part
    assert eng.get_snapshot() == (p2, b"state" * 300_000)
    eng.put_snapshot(p3, b"newer")
    assert eng.get_snapshot() == (p3, b"newer")

    eng.set_meta("applied/a", b"1")
    eng.set_meta("applied/b", b"2")
    eng.set_meta("other", b"3")
    assert eng.get_meta("applied/") == {"applied/a": b"1", "applied/b": b"2"}

    lease = eng.lock("compactor", 5)
    assert lease is not None and lease.refresh()
    assert eng.lock("compactor", 5) is None
    lease.release()
    again = eng.lock("compactor", 5)
    assert again is not None
    again.release()
    assert eng.position() >= p3
    unlink(w)
    exit(w, "kill")


@pytest.mark.otp(clock="real")
def test_memory_engine_contract(node):
    _engine_contract(MemoryEngine())


@pytest.mark.otp(clock="real")
def test_memory_engine_unavailable_says_why(node):
    eng = MemoryEngine()
    eng.fail = "partitioned"
    with pytest.raises(EngineUnavailable, match="partitioned"):
        eng.append([b"x"])


@pytest.fixture(scope="module")
def etcd3(tmp_path_factory):
    need_etcd()
    with EtcdCluster(tmp_path_factory.mktemp("etcd"), 3) as c:
        yield c


@pytest.mark.otp(clock="real")
def test_etcd_engine_contract(node, etcd3):
    eng = EtcdEngine(etcd3.endpoints, prefix="contract", member="a", timeout=5)
    try:
        _engine_contract(eng)
    finally:
        eng.close()


@pytest.mark.otp(clock="real")
def test_etcd_engine_fails_over_to_a_live_member(node, etcd3):
    # A leader election may follow the kill: give the call room for it.
    eng = EtcdEngine(etcd3.endpoints, prefix="failover", member="a", timeout=20)
    try:
        p1 = eng.append([b"1"])
        etcd3.kill(eng.cur)
        # Another member, the same log; while a new leader is elected etcd may answer
        # "request timed out" (the caller is told; here it tries again).
        p2 = None
        for _ in range(20):
            try:
                p2 = eng.append([b"2"])
                break
            except EngineUnavailable as e:
                assert "timed out" in str(e) or "leader" in str(e), e
        assert p2 is not None and p2 > p1
        entries = [r.entries for r in eng.read_from(0).records]
        assert entries[0] == (b"1",) and entries[-1] == (b"2",)  # a timed-out try may be in
    finally:
        eng.close()
        for i in range(3):
            if etcd3.pid(i) is None:
                etcd3._start(i)
        etcd3.wait_healthy()


@pytest.mark.otp(clock="real")
def test_etcd_unreachable_is_a_clear_error_within_the_timeout(node):
    from otp.testing_dist import free_port

    eng = EtcdEngine([f"http://127.0.0.1:{free_port()}"], timeout=1)
    with pytest.raises(EngineUnavailable, match="no etcd endpoint answered"):
        eng.append([b"x"])


@pytest.mark.otp(clock="real")
def test_etcd_without_majority_fails_within_the_timeout(node, tmp_path):
    need_etcd()
    with EtcdCluster(tmp_path, 3) as c:
        eng = EtcdEngine(c.endpoints[:1], prefix="nomaj", timeout=2)
        eng.append([b"ok"])
        c.pause(1)
        c.pause(2)
        try:
            with pytest.raises(EngineUnavailable):
                eng.append([b"lost?"])
            with pytest.raises(EngineUnavailable):
                eng.position()
        finally:
            c.resume(1)
            c.resume(2)
        c.wait_healthy()


def test_endpoint_syntax_is_checked():
    with pytest.raises(ValueError, match="http"):
        EtcdEngine(["ftp://x"])
    with pytest.raises(ValueError, match="non-empty list"):
        EtcdEngine("http://127.0.0.1:2379")


@pytest.mark.otp(clock="real")
def test_etcd_refuses_a_record_too_large_as_such(node, etcd3):
    eng = EtcdEngine(etcd3.endpoints, prefix="large", member="a", timeout=5)
    try:
        with pytest.raises(EngineRejected, match="too large"):
            eng.append([b"x" * 2_000_000])
        assert eng.append([b"small"]) > 0  # the engine is still fine
    finally:
        eng.close()
