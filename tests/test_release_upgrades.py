"""otp.release_handler, what an operator relies on (docs/upgrades.md): an ``update``
moves processes one at a time and rolls back by the reverse ``code_change``; a
``load_module`` upgrade can be downgraded; the applications' versions, the log and
``last_upgrade`` follow; ``remove``; empty instructions refused; ``dry_run``; the
health gate. The ``rh_kv`` application of tests/test_release_handler.py is reused."""

from __future__ import annotations

import importlib
import logging
import sys

import pytest

from otp import application, code, gen_server
from otp import release_handler as rh
from otp import sys as otp_sys
from otp.process import is_alive, receive, register, send, spawn, whereis
from otp.release import ReleaseError
from tests.test_release_handler import SERVER_V2, UPDATE_2, make_bundle, running_v1

N = 40


@pytest.fixture
def world(tmp_path):
    """Restores the code path, sys.modules and the code table after the test."""
    path = list(sys.path)
    try:
        yield tmp_path
    finally:
        sys.path[:] = path
        rh._running.clear()
        rh._history.clear()
        for name in list(sys.modules):
            if name.startswith("rh_kv"):
                del sys.modules[name]
        for name in list(code._table):
            if name.startswith("rh_kv"):
                del code._table[name]
        importlib.invalidate_caches()

# SERVER_V2 whose code_change also asks the probe to count the suspended stores.
SERVER_V2_PROBED = SERVER_V2.replace(
    "        if state == 7:",
    "        from otp.process import send, whereis\n"
    "        if whereis('rh_probe') is not None:\n"
    "            send('rh_probe', 'moving')\n"
    "        if state == 7:",
)


def probe(stores, me):
    """Counts, each time a store migrates, how many stores are suspended."""
    most = 0
    while True:
        m = receive()
        if m == "moving":
            n = sum(otp_sys.get_status(p).status == "suspended" for p in stores)
            most = max(most, n)
        elif m == "report":
            send(me, ("most", most))
            return


def test_update_suspends_one_process_at_a_time(node, world):
    with running_v1(world) as root:
        import rh_kv.server as v1

        stores = [gen_server.start(v1.Store, i + 100) for i in range(N)]
        me = whereis("rh_store") and __import__("otp.process").process.self()
        pr = spawn(probe, stores, me)
        register("rh_probe", pr)
        rh.unpack(root, make_bundle(world, "2.0.0", SERVER_V2_PROBED, "v2", UPDATE_2))
        rh.install(root, "2.0.0")
        send(pr, "report")
        _, most = receive(lambda m: isinstance(m, tuple) and m[0] == "most", 10)
        # Each store is suspended only for its own code_change (all N were, at once,
        # when the update suspended every process first).
        assert most <= 1
        assert [otp_sys.get_state(p)[1] for p in stores] == [i + 100 for i in range(N)]
        for p in stores:
            gen_server.stop(p)


def test_a_failing_code_change_midway_moves_every_process_back(node, world):
    with running_v1(world) as root:
        import rh_kv.server as v1

        stores = [gen_server.start(v1.Store, 7 if i == N // 2 else i + 100)
                  for i in range(N)]  # fmt: skip
        rh.unpack(root, make_bundle(world, "2.0.0", SERVER_V2, "v2", UPDATE_2))
        with pytest.raises(rh.UpgradeError, match="cannot migrate a count of 7") as e:
            rh.install(root, "2.0.0")
        assert e.value.rollback_problems == []
        # Every store back on 1.0.0's class with its state (those moved were migrated
        # back by 2.0.0's code_change(("down", ...))), none suspended, none killed.
        for i, p in enumerate(stores):
            want = 7 if i == N // 2 else i + 100
            assert otp_sys.get_state(p) == want
            assert code.process_class(p) is v1.Store
            assert otp_sys.get_status(p).status == "running"
            assert gen_server.call(p, "get") == ("v1", want)
        assert rh.current(root) == "1.0.0"
        rec = rh.last_upgrade(root)
        assert rec is not None and rec.outcome == "rolled back"
        assert any("rolled back: update rh_kv.server" in s for s in rec.steps)
        for p in stores:
            gen_server.stop(p)


def test_a_load_module_upgrade_can_be_downgraded_and_upgraded_again(node, world):
    with running_v1(world) as root:
        pid = whereis("rh_store")
        gen_server.cast(pid, ("add", 3))
        upgrades = [{"from": "1.0.0", "instructions": [["load_module", "rh_kv.server"]]}]
        rh.unpack(root, make_bundle(world, "2.0.0", SERVER_V2, "v2", upgrades))
        rh.install(root, "2.0.0")
        assert code.check_process_code(pid, "rh_kv.server")  # still on 1.0.0's class
        # Going back reinstates the version rh_store never left: nobody is killed.
        rh.downgrade(root, "1.0.0")
        assert whereis("rh_store") == pid
        assert code.processes_running("rh_kv.server") == [pid]
        assert gen_server.call(pid, "get") == ("v1", 3)
        rh.install(root, "2.0.0")
        rh.downgrade(root, "1.0.0")
        assert whereis("rh_store") == pid and gen_server.call(pid, "get") == ("v1", 3)


def test_which_applications_and_the_log_follow_the_release(node, world, caplog):
    with running_v1(world) as root:
        rh.unpack(root, make_bundle(world, "2.0.0", SERVER_V2, "v2", UPDATE_2))
        with caplog.at_level(logging.INFO, logger="otp.release_handler"):
            rh.install(root, "2.0.0")
        vsns = {a.name: a.vsn for a in application.which_applications()}
        assert vsns["rh_kv"] == "2.0.0"
        text = caplog.text
        assert "upgrade of rhk from 1.0.0 to 2.0.0: plan [['load_module', 'rh_kv.util']" in text
        assert "update rh_kv.server: 1 process(es) moved" in text
        assert "done in" in text
        rec = rh.last_upgrade(root)
        assert rec is not None and (rec.word, rec.from_vsn, rec.to_vsn, rec.outcome) == (
            "upgrade", "1.0.0", "2.0.0", "ok")
        rh.downgrade(root, "1.0.0")
        assert {a.name: a.vsn for a in application.which_applications()}["rh_kv"] == "1.0.0"


def test_remove_deletes_an_unpacked_release_and_unpack_says_how_to_replace(node, world):
    with running_v1(world) as root:
        rh.unpack(root, make_bundle(world, "2.0.0", SERVER_V2, "v2", UPDATE_2))
        with pytest.raises(ReleaseError, match=r"bin/rhk remove 2\.0\.0"):
            rh.unpack(root, make_bundle(world / "again", "2.0.0", SERVER_V2, "v2", UPDATE_2))
        with pytest.raises(ReleaseError, match="running"):
            rh.remove(root, "1.0.0")
        assert rh.remove(root, "2.0.0") == ["lib/rh_kv-2.0.0", "releases/2.0.0"]
        assert rh.which_releases(root) == [("1.0.0", "permanent")]
        assert not (root / "lib" / "rh_kv-2.0.0").exists()
        assert (root / "lib" / "rh_kv-1.0.0").is_dir()
        # replaced by another bundle of the same version
        assert rh.unpack(root, make_bundle(world / "third", "2.0.0", SERVER_V2, "v2b",
                                           UPDATE_2)) == "2.0.0"  # fmt: skip
        rh.install(root, "2.0.0")
        assert gen_server.call("rh_store", "get") == ("v2b", 0)


def test_a_bundle_with_empty_upgrade_instructions_is_refused_at_unpack(node, world):
    with running_v1(world) as root:
        empty = [{"from": "1.0.0", "instructions": []}]
        with pytest.raises(ReleaseError, match=r"upgrades\[0\] \(from 1\.0\.0\) has no "
                                               r"instructions"):  # fmt: skip
            rh.unpack(root, make_bundle(world, "2.0.0", SERVER_V2, "v2", empty))
        assert rh.which_releases(root) == [("1.0.0", "permanent")]


def test_dry_run_reports_a_failing_code_change_and_touches_nothing(node, world):
    with running_v1(world) as root:
        import rh_kv.server as v1

        gen_server.cast("rh_store", ("add", 2))
        seven = gen_server.start(v1.Store, 7)
        rh.unpack(root, make_bundle(world, "2.0.0", SERVER_V2, "v2", UPDATE_2))
        report = rh.dry_run(root, "2.0.0")
        assert report.processes == 2
        assert len(report.failures) == 1
        assert "cannot migrate a count of 7" in report.failures[0]
        assert repr(seven) in report.failures[0]
        # untouched: same module, same classes, same states, the release unchanged
        assert sys_module("rh_kv.server") is v1
        assert code.versions("rh_kv.server")[0].module is v1
        assert otp_sys.get_state(seven) == 7 and otp_sys.get_state("rh_store") == 2
        assert code.process_class(seven) is v1.Store
        assert rh.current(root) == "1.0.0" and rh.last_upgrade(root) is None
        gen_server.stop(seven)
        assert rh.dry_run(root, "2.0.0").failures == ()


def sys_module(name):
    return sys.modules[name]


def test_health_gate_keeps_a_healthy_upgrade(node, world):
    with running_v1(world) as root:
        rh.unpack(root, make_bundle(world, "2.0.0", SERVER_V2, "v2", UPDATE_2))
        calls = []

        def healthy():
            calls.append(1)
            return len(calls) >= 3  # healthy at the third look

        rh.install(root, "2.0.0", health=healthy, within=30.0, interval=1.0)
        assert rh.current(root) == "2.0.0" and len(calls) == 3
        assert gen_server.call("rh_store", "get") == ("v2", 0)


def test_health_gate_rolls_back_an_unhealthy_upgrade(node, world):
    with running_v1(world) as root:
        gen_server.cast("rh_store", ("add", 5))
        rh.unpack(root, make_bundle(world, "2.0.0", SERVER_V2, "v2", UPDATE_2))
        with pytest.raises(rh.UpgradeError, match=r"health check failed .* within 5 s.*"
                                                  r"rolled back, 1\.0\.0 is running"):
            rh.install(root, "2.0.0", health=lambda: 1 / 0, within=5.0, interval=1.0)
        assert rh.current(root) == "1.0.0"
        assert gen_server.call("rh_store", "get") == ("v1", 5)
        rec = rh.last_upgrade(root)
        assert rec is not None and rec.outcome == "rolled back" and rec.to_vsn == "2.0.0"


SERVER_V2_BAD_DOWN = SERVER_V2.replace(
    '            case ("down", _):\n                return state[1]',
    '            case ("down", _):\n'
    '                if state[1] == 2:\n'
    '                    raise ValueError("cannot go back from 2")\n'
    '                return state[1]',
)


def test_a_process_whose_reverse_code_change_fails_is_killed_and_reported(node, world):
    with running_v1(world) as root:
        import rh_kv.server as v1

        one, two, seven = (gen_server.start(v1.Store, n) for n in (1, 2, 7))
        assert SERVER_V2_BAD_DOWN != SERVER_V2
        rh.unpack(root, make_bundle(world, "2.0.0", SERVER_V2_BAD_DOWN, "v2", UPDATE_2))
        with pytest.raises(rh.UpgradeError, match="cannot migrate a count of 7") as e:
            rh.install(root, "2.0.0")
        assert len(e.value.rollback_problems) == 1
        assert "cannot go back from 2" in e.value.rollback_problems[0]
        assert repr(two) in e.value.rollback_problems[0]
        # two could be trusted with neither state: killed (a supervisor would restart
        # it on the old code); the others are back on 1.0.0 with their state
        assert not is_alive(two)
        assert otp_sys.get_state(one) == 1 and code.process_class(one) is v1.Store
        assert otp_sys.get_state(seven) == 7 and code.process_class(seven) is v1.Store
        assert rh.current(root) == "1.0.0"
        gen_server.stop(one)
        gen_server.stop(seven)
