"""Supervisor semantics S1-S9 (docs/semantics.md), grouped by concept as in OTP's
supervisor_SUITE, with the scripted children of ``otp.testing_faults``."""

import logging

import pytest

from otp import gen_server, supervisor
from otp import logger as otp_logger
from otp import sys as otp_sys
from otp.errors import ChildSpecError, StartError, SupervisorError
from otp.gen_server import GenServer, Ok, Reply
from otp.process import (
    ANY,
    Down,
    Exit,
    Pid,
    exit,
    is_alive,
    monitor,
    now,
    receive,
    self,
    send,
    sleep,
    spawn,
    trap_exit,
)
from otp.supervisor import ChildCounts, ChildSpec, SupFlags
from otp.testing import assert_receive, refute_receive, wait_all_blocked
from otp.testing_faults import (
    FaultPlan,
    ScriptedSupervisor,
    crash,
    kill,
    ping,
    start_worker,
    whereis_child,
    worker_spec,
)


def start_sup(flags=None, specs=(), name=None):
    return supervisor.start_link(ScriptedSupervisor, (flags or SupFlags(), list(specs)),
                                 name=name)


def stop_sup(sup):
    supervisor.stop(sup)


def wait_down(pid):
    ref = monitor(pid)
    return assert_receive(lambda m: isinstance(m, Down) and m.ref == ref).reason


def crash_and_wait(sup, child_id, reason="crashed"):
    """Crash a child and return once the supervisor has handled its EXIT."""
    pid = whereis_child(sup, child_id)
    assert pid is not None, f"{child_id} is not running"
    crash(pid, reason)
    wait_down(pid)
    supervisor.count_children(sup)  # a call: queued behind the EXIT, so handled after it
    return pid


def request_after_exit(sup, child, fn, *args):
    """Crash ``child`` and have another process call ``fn(sup, *args)`` so that the
    request is queued right behind the child's EXIT (the supervisor is suspended
    meanwhile); returns what ``fn`` returned or raised."""
    me = self()

    def caller():
        try:
            send(me, ("result", tuple(fn(sup, *args) or ())))
        except Exception as e:
            send(me, ("result", e))

    otp_sys.suspend(sup)
    crash(child)
    wait_down(child)
    spawn(caller)
    wait_all_blocked()
    otp_sys.resume(sup)
    result = assert_receive(("result", ANY))[1]
    if isinstance(result, Exception):
        raise result
    return result


def exit_of(pid):
    return lambda m: isinstance(m, Exit) and m.pid == pid


def pids(sup):
    return {c.id: c.pid for c in supervisor.which_children(sup)}


# --- S1: start order, stop order, failed start ---------------------------------------


def test_s1_children_start_in_list_order_and_stop_in_reverse_order(node):
    me = self()
    sup = start_sup(specs=[worker_spec(t, notify=me, trap=True) for t in "abc"])
    started = [assert_receive(("started", ANY, ANY))[1] for _ in range(3)]
    assert started == ["a", "b", "c"]
    assert [c.id for c in supervisor.which_children(sup)] == ["a", "b", "c"]
    stop_sup(sup)
    stopping = [assert_receive(("stopping", ANY, ANY, ANY))[1] for _ in range(3)]
    assert stopping == ["c", "b", "a"]


def test_s1_failed_child_start_stops_the_started_ones_and_start_link_fails(node):
    me = self()
    specs = [
        worker_spec("a", notify=me, trap=True),
        worker_spec("b", init_fail="bad_init"),
        worker_spec("c", notify=me),
    ]
    with pytest.raises(StartError) as ei:
        start_sup(specs=specs)
    assert ei.value.reason == ("failed_to_start_child", "b", "bad_init")
    assert_receive(("started", "a", ANY))
    assert_receive(("stopping", "a", ANY, "shutdown"))
    refute_receive(("started", "c", ANY))


def test_s1_ignored_children_are_kept_stopped_unless_temporary(node):
    sup = start_sup(specs=[
        worker_spec("p", ignore=True),
        worker_spec("t", ignore=True, restart="temporary"),
    ])  # fmt: skip
    assert [(c.id, c.pid) for c in supervisor.which_children(sup)] == [("p", None)]
    stop_sup(sup)


def test_s1_init_returning_ignore_makes_start_link_return_none(node):
    from otp.gen_server import Ignore

    class Nope(supervisor.Supervisor):
        def init(self, arg):
            return Ignore()

    assert supervisor.start_link(Nope) is None


# --- S2: restart intensity -----------------------------------------------------------


def test_s2_exceeding_intensity_stops_all_children_and_exits_with_shutdown(node):
    trap_exit(True)
    sup = start_sup(SupFlags(intensity=2, period=5.0), [worker_spec("a"), worker_spec("b")])
    b = whereis_child(sup, "b")
    crash_and_wait(sup, "a")
    crash_and_wait(sup, "a")
    a = whereis_child(sup, "a")
    crash(a, "third")
    assert assert_receive(exit_of(sup)).reason == "shutdown"
    assert not is_alive(b)


def test_s2_intensity_zero_dies_on_the_first_restart(node):
    trap_exit(True)
    sup = start_sup(SupFlags(intensity=0), [worker_spec("a")])
    crash(whereis_child(sup, "a"))
    assert assert_receive(exit_of(sup)).reason == "shutdown"


def test_s2_default_intensity_is_3_restarts_in_5_seconds(node):
    assert (SupFlags().intensity, SupFlags().period) == (3, 5.0)
    trap_exit(True)
    sup = start_sup(specs=[worker_spec("a")])
    for _ in range(3):
        crash_and_wait(sup, "a")
    assert is_alive(sup)
    crash(whereis_child(sup, "a"))
    assert assert_receive(exit_of(sup)).reason == "shutdown"


def test_s2_restarts_older_than_period_are_dropped_from_the_window(node):
    trap_exit(True)
    sup = start_sup(SupFlags(intensity=1, period=5.0), [worker_spec("a")])
    crash_and_wait(sup, "a")
    sleep(5.5)  # node clock: the first restart leaves the window
    crash_and_wait(sup, "a")
    assert is_alive(sup)
    sleep(4.0)  # the second restart is still in the window
    crash(whereis_child(sup, "a"))
    assert assert_receive(exit_of(sup)).reason == "shutdown"


def test_s2_window_is_on_the_node_clock(node, clock):
    trap_exit(True)
    sup = start_sup(SupFlags(intensity=1, period=10.0), [worker_spec("a")])
    t0 = now()
    crash_and_wait(sup, "a")
    clock.advance(10.5)
    assert now() - t0 >= 10.5
    crash_and_wait(sup, "a")
    assert is_alive(sup)
    stop_sup(sup)


# --- S3: failing restarts are retried ------------------------------------------------


def test_s3_failed_restart_is_retried_and_requests_are_served_in_between(node):
    plan = FaultPlan()
    sup = start_sup(SupFlags(intensity=10), [worker_spec("a", start=plan.starter("a"))])
    plan.fail_next("a", 2)
    old = whereis_child(sup, "a")
    me = self()
    # Queue, behind the child's EXIT, a request from another process: it is served
    # after the failed restart and before the retry (which goes to the back).
    rows = request_after_exit(sup, old, supervisor.which_children)
    assert rows[0].pid == "restarting"
    assert me == self()
    wait_all_blocked()
    new = whereis_child(sup, "a")
    assert new is not None and new != old
    assert plan.started["a"] == 2  # the first start and the successful retry
    stop_sup(sup)


def test_s3_each_retry_counts_against_intensity(node):
    trap_exit(True)
    plan = FaultPlan()
    sup = start_sup(SupFlags(intensity=2), [worker_spec("a", start=plan.starter("a"))])
    plan.fail_next("a", 5)
    crash(whereis_child(sup, "a"))
    # restart 1 fails, retry 2 fails, retry 3 exceeds intensity 2
    assert assert_receive(exit_of(sup)).reason == "shutdown"
    assert plan.failures["a"] == 3


def test_s3_terminate_child_while_restarting_stops_the_retries(node):
    plan = FaultPlan()
    sup = start_sup(SupFlags(intensity=100), [worker_spec("a", start=plan.starter("a"))])
    plan.fail_next("a", 1000)
    crash(whereis_child(sup, "a"))
    supervisor.terminate_child(sup, "a")
    assert supervisor.which_children(sup)[0].pid is None
    wait_all_blocked()
    assert supervisor.which_children(sup)[0].pid is None
    plan.failures["a"] = 0
    assert supervisor.restart_child(sup, "a") is not None
    stop_sup(sup)


# --- S4: group restarts --------------------------------------------------------------


def test_s4_one_for_all_restarts_every_child_stopping_in_reverse_order(node):
    me = self()
    sup = start_sup(SupFlags("one_for_all"),
                    [worker_spec(t, notify=me, trap=True) for t in "abc"])
    for _ in range(3):
        assert_receive(("started", ANY, ANY))
    before = pids(sup)
    crash_and_wait(sup, "b")
    stops = [assert_receive(("stopping", ANY, ANY, ANY))[1] for _ in range(2)]
    assert stops == ["c", "a"]
    starts = [assert_receive(("started", ANY, ANY))[1] for _ in range(3)]
    assert starts == ["a", "b", "c"]
    after = pids(sup)
    assert all(after[k] != before[k] for k in "abc")
    stop_sup(sup)


def test_s4_rest_for_one_restarts_the_child_and_those_started_after_it(node):
    sup = start_sup(SupFlags("rest_for_one"), [worker_spec(t) for t in "abcd"])
    before = pids(sup)
    crash_and_wait(sup, "b")
    after = pids(sup)
    assert after["a"] == before["a"]
    assert all(after[k] != before[k] for k in "bcd")
    assert [c.id for c in supervisor.which_children(sup)] == list("abcd")
    stop_sup(sup)


def test_s4_group_restart_counts_as_one_restart(node):
    trap_exit(True)
    sup = start_sup(SupFlags("one_for_all", intensity=1), [worker_spec(t) for t in "abc"])
    crash_and_wait(sup, "a")  # 3 children restarted: one restart
    assert is_alive(sup)
    crash(whereis_child(sup, "c"))
    assert assert_receive(exit_of(sup)).reason == "shutdown"


def test_s4_temporary_siblings_stopped_by_a_group_restart_are_dropped(node):
    sup = start_sup(SupFlags("one_for_all"),
                    [worker_spec("a"), worker_spec("t", restart="temporary"), worker_spec("c")])
    crash_and_wait(sup, "c")
    assert [c.id for c in supervisor.which_children(sup)] == ["a", "c"]
    stop_sup(sup)


def test_s4_siblings_stop_with_their_own_shutdown_spec(node):
    sup = start_sup(SupFlags("one_for_all"), [
        worker_spec("stubborn", ignore_shutdown=True, shutdown=3.0),
        worker_spec("a"),
    ])  # fmt: skip
    stubborn = whereis_child(sup, "stubborn")
    mon = monitor(stubborn)
    t0 = now()
    crash_and_wait(sup, "a")
    assert assert_receive(lambda m: isinstance(m, Down) and m.ref == mon).reason == "killed"
    assert now() - t0 == 3.0
    stop_sup(sup)


# --- S5: restart types ----------------------------------------------------------------


@pytest.mark.parametrize("reason", ["normal", "shutdown", ("shutdown", "x"), "boom"])
def test_s5_permanent_child_is_always_restarted(node, reason):
    sup = start_sup(specs=[worker_spec("a")])
    old = crash_and_wait(sup, "a", reason)
    assert whereis_child(sup, "a") not in (None, old)
    stop_sup(sup)


@pytest.mark.parametrize("reason", ["normal", "shutdown", ("shutdown", "x")])
def test_s5_transient_child_is_not_restarted_after_normal_exit(node, reason):
    sup = start_sup(specs=[worker_spec("a", restart="transient")])
    crash_and_wait(sup, "a", reason)
    assert [(c.id, c.pid) for c in supervisor.which_children(sup)] == [("a", None)]
    stop_sup(sup)


def test_s5_transient_child_is_restarted_after_abnormal_exit(node):
    sup = start_sup(specs=[worker_spec("a", restart="transient")])
    old = crash_and_wait(sup, "a", ValueError("bad"))
    assert whereis_child(sup, "a") not in (None, old)
    stop_sup(sup)


@pytest.mark.parametrize("reason", ["normal", "shutdown", "boom"])
def test_s5_temporary_child_is_never_restarted_and_is_forgotten(node, reason):
    sup = start_sup(specs=[worker_spec("t", restart="temporary"), worker_spec("p")])
    crash_and_wait(sup, "t", reason)
    assert [c.id for c in supervisor.which_children(sup)] == ["p"]
    stop_sup(sup)


def test_s5_restarted_child_can_register_the_same_name_at_once(node):
    sup = start_sup(specs=[worker_spec("a", name="the_a")])
    old = crash_and_wait(sup, "a")
    assert ping("the_a") == ("pong", "a")
    assert whereis_child(sup, "a") != old
    stop_sup(sup)


def test_s5_child_terminated_report_is_logged_with_its_fields(node, caplog):
    caplog.set_level(logging.ERROR, logger="otp.report")
    sup = start_sup(specs=[worker_spec("a")])
    old = crash_and_wait(sup, "a", "boom")
    stop_sup(sup)
    (rec,) = [r for r in caplog.records
              if getattr(r, "report", {}).get("errorContext") == "child_terminated"]
    assert rec.levelno == logging.ERROR and rec.name == "otp.report"
    assert rec.getMessage() == f"supervisor {sup!r}: child_terminated of child 'a': 'boom'"
    assert rec.report["supervisor"] == sup and rec.report["reason"] == "boom"
    assert rec.report["offender"]["pid"] == old and rec.report["offender"]["id"] == "a"


def test_s5_child_terminated_report_goes_to_stderr_without_logging_configured(node, capsys):
    log = logging.getLogger("otp.report")
    log.propagate = False  # no handler on the way: what the stdlib's last resort gets
    try:
        sup = start_sup(specs=[worker_spec("a")])
        crash_and_wait(sup, "a", "boom")
        stop_sup(sup)
        assert otp_logger._fallback().drain(timeout=10)
    finally:
        log.propagate = True
    err = capsys.readouterr().err
    assert f"supervisor {sup!r}: child_terminated of child 'a': 'boom'\n" in err


# --- S6: shutdown ---------------------------------------------------------------------


def test_s6_brutal_kill_kills_the_child(node):
    sup = start_sup(specs=[worker_spec("a", trap=True, shutdown="brutal_kill")])
    a = whereis_child(sup, "a")
    mon = monitor(a)
    supervisor.terminate_child(sup, "a")
    assert assert_receive(Down).ref == mon
    assert not is_alive(a)
    stop_sup(sup)


def test_s6_brutal_kill_child_dies_with_killed(node):
    sup = start_sup(specs=[worker_spec("a", trap=True, shutdown="brutal_kill")])
    a = whereis_child(sup, "a")
    ref = monitor(a)
    supervisor.terminate_child(sup, "a")
    assert assert_receive(lambda m: isinstance(m, Down) and m.ref == ref).reason == "killed"
    stop_sup(sup)


def test_s6_timeout_shutdown_sends_shutdown_and_waits_for_the_child(node):
    me = self()
    sup = start_sup(specs=[worker_spec("a", trap=True, notify=me, shutdown=2.0)])
    a = whereis_child(sup, "a")
    ref = monitor(a)
    supervisor.terminate_child(sup, "a")
    assert_receive(("stopping", "a", a, "shutdown"))
    assert assert_receive(lambda m: isinstance(m, Down) and m.ref == ref).reason == "shutdown"
    stop_sup(sup)


def test_s6_child_ignoring_shutdown_is_killed_after_its_timeout_on_the_node_clock(node):
    sup = start_sup(specs=[worker_spec("a", ignore_shutdown=True, shutdown=2.0)])
    a = whereis_child(sup, "a")
    ref = monitor(a)
    t0 = now()
    supervisor.terminate_child(sup, "a")
    assert now() - t0 == 2.0
    assert assert_receive(lambda m: isinstance(m, Down) and m.ref == ref).reason == "killed"
    stop_sup(sup)


def test_s6_infinity_shutdown_waits_for_the_child(node):
    sup = start_sup(specs=[worker_spec("a", ignore_shutdown=True, shutdown=None)])
    a = whereis_child(sup, "a")
    caller = spawn(supervisor.terminate_child, sup, "a")
    wait_all_blocked()
    assert is_alive(a) and is_alive(caller)
    kill(a)
    wait_down(caller)
    assert supervisor.which_children(sup)[0].pid is None
    stop_sup(sup)


def test_s6_child_supervisors_default_to_infinity_shutdown(node):
    spec = supervisor.child_spec(ScriptedSupervisor, (SupFlags(), []))
    assert spec.type == "supervisor" and spec.shutdown is None
    assert ChildSpec("s", (print, ()), type="supervisor").shutdown is None


def test_s6_child_that_unlinked_cannot_hang_the_supervisor(node):
    sup = start_sup(specs=[worker_spec("a", unlink=True)])
    a = whereis_child(sup, "a")
    supervisor.terminate_child(sup, "a")
    assert not is_alive(a)
    stop_sup(sup)


def test_s6_unlinked_child_ignoring_shutdown_is_killed(node):
    sup = start_sup(specs=[worker_spec("a", unlink=True, ignore_shutdown=True, shutdown=1.0)])
    a = whereis_child(sup, "a")
    stop_sup(sup)
    assert not is_alive(a)


def test_s6_nested_supervisor_stops_its_children_before_it_ends(node):
    me = self()
    inner = supervisor.child_spec(
        ScriptedSupervisor, (SupFlags(), [worker_spec(t, notify=me, trap=True) for t in "xy"])
    )
    sup = start_sup(specs=[worker_spec("a", notify=me, trap=True), inner])
    stop_sup(sup)
    order = [assert_receive(("stopping", ANY, ANY, ANY))[1] for _ in range(3)]
    assert order == ["y", "x", "a"]


# --- S7: simple_one_for_one ----------------------------------------------------------


def test_s7_simple_one_for_one_children_share_one_spec_and_get_extra_args(node):
    sup = start_sup(SupFlags("simple_one_for_one"), [worker_spec("tmpl")])
    p1 = supervisor.start_child(sup, (1,))
    p2 = supervisor.start_child(sup, (2,))
    assert ping(p1) == ("pong", ("tmpl", 1))
    assert ping(p2) == ("pong", ("tmpl", 2))
    rows = supervisor.which_children(sup)
    assert [(r.id, r.pid) for r in rows] == [(None, p1), (None, p2)]
    assert supervisor.count_children(sup) == ChildCounts(1, 2, 0, 2)
    stop_sup(sup)


def test_s7_simple_one_for_one_children_are_stopped_by_pid(node):
    sup = start_sup(SupFlags("simple_one_for_one"), [worker_spec("tmpl")])
    p1 = supervisor.start_child(sup, (1,))
    with pytest.raises(SupervisorError) as ei:
        supervisor.terminate_child(sup, "tmpl")
    assert ei.value.reason == "simple_one_for_one"
    supervisor.terminate_child(sup, p1)
    assert not is_alive(p1)
    assert supervisor.which_children(sup) == []
    with pytest.raises(SupervisorError) as ei:
        supervisor.restart_child(sup, "tmpl")
    assert ei.value.reason == "simple_one_for_one"
    stop_sup(sup)


def test_s7_simple_one_for_one_restarts_a_crashed_child_with_its_args(node):
    sup = start_sup(SupFlags("simple_one_for_one"), [worker_spec("tmpl")])
    p1 = supervisor.start_child(sup, (1,))
    crash(p1)
    wait_down(p1)
    [row] = supervisor.which_children(sup)
    assert row.pid != p1 and ping(row.pid) == ("pong", ("tmpl", 1))
    stop_sup(sup)


def test_s7_dynamic_children_are_shut_down_together_not_one_after_another(node):
    sup = start_sup(SupFlags("simple_one_for_one"),
                    [worker_spec("tmpl", ignore_shutdown=True, shutdown=2.0)])
    kids = [supervisor.start_child(sup, (i,)) for i in range(3)]
    t0 = now()
    stop_sup(sup)
    assert now() - t0 == 2.0  # one shared wait, not 3 x 2 s
    assert not any(is_alive(k) for k in kids)


# --- S8: the child API ---------------------------------------------------------------


def test_s8_start_child_on_a_running_id_fails_with_already_started_and_the_pid(node):
    sup = start_sup(specs=[worker_spec("a")])
    with pytest.raises(SupervisorError) as ei:
        supervisor.start_child(sup, worker_spec("a"))
    assert ei.value.reason == "already_started"
    assert ei.value.pid == whereis_child(sup, "a")
    stop_sup(sup)


def test_s8_start_child_on_a_stored_stopped_spec_fails_with_already_present(node):
    sup = start_sup(specs=[worker_spec("a")])
    supervisor.terminate_child(sup, "a")
    with pytest.raises(SupervisorError) as ei:
        supervisor.start_child(sup, worker_spec("a"))
    assert ei.value.reason == "already_present"
    stop_sup(sup)


def test_s8_start_child_adds_at_the_end_and_returns_the_pid(node):
    sup = start_sup(specs=[worker_spec("a")])
    pid = supervisor.start_child(sup, worker_spec("b"))
    assert ping(pid) == ("pong", "b")
    assert [c.id for c in supervisor.which_children(sup)] == ["a", "b"]
    stop_sup(sup)


def test_s8_start_child_failure_raises_start_error_and_stores_nothing(node):
    sup = start_sup()
    with pytest.raises(StartError) as ei:
        supervisor.start_child(sup, worker_spec("b", init_fail="nope"))
    assert ei.value.reason == "nope"
    assert supervisor.which_children(sup) == []
    stop_sup(sup)


def test_s8_start_child_that_ignores_returns_none(node):
    sup = start_sup()
    assert supervisor.start_child(sup, worker_spec("i", ignore=True)) is None
    assert [(c.id, c.pid) for c in supervisor.which_children(sup)] == [("i", None)]
    assert supervisor.start_child(sup, worker_spec("t", ignore=True, restart="temporary")) is None
    assert len(supervisor.which_children(sup)) == 1
    stop_sup(sup)


def test_s8_terminate_restart_and_delete_child(node):
    sup = start_sup(specs=[worker_spec("a"), worker_spec("b")])
    old = whereis_child(sup, "a")
    supervisor.terminate_child(sup, "a")
    assert not is_alive(old)
    assert pids(sup)["a"] is None
    with pytest.raises(SupervisorError) as ei:
        supervisor.delete_child(sup, "b")
    assert ei.value.reason == "running"
    with pytest.raises(SupervisorError) as ei:
        supervisor.restart_child(sup, "b")
    assert ei.value.reason == "running"
    new = supervisor.restart_child(sup, "a")
    assert new is not None and new != old and pids(sup)["a"] == new
    supervisor.terminate_child(sup, "a")
    supervisor.delete_child(sup, "a")
    assert [c.id for c in supervisor.which_children(sup)] == ["b"]
    for fn in (supervisor.terminate_child, supervisor.restart_child, supervisor.delete_child):
        with pytest.raises(SupervisorError) as ei:
            fn(sup, "a")
        assert ei.value.reason == "not_found"
    stop_sup(sup)


def test_s8_terminate_temporary_child_forgets_it(node):
    sup = start_sup(specs=[worker_spec("t", restart="temporary")])
    supervisor.terminate_child(sup, "t")
    assert supervisor.which_children(sup) == []
    stop_sup(sup)


def test_s8_restart_and_delete_of_a_restarting_child_fail_with_restarting(node):
    plan = FaultPlan()
    sup = start_sup(SupFlags(intensity=100), [worker_spec("a", start=plan.starter("a"))])
    for fn in (supervisor.restart_child, supervisor.delete_child):
        plan.fail_next("a", 1)
        with pytest.raises(SupervisorError) as ei:
            request_after_exit(sup, whereis_child(sup, "a"), fn, "a")
        assert ei.value.reason == "restarting"
        wait_all_blocked()
    wait_all_blocked()
    stop_sup(sup)


def test_s8_which_children_and_count_children(node):
    sub = supervisor.child_spec(ScriptedSupervisor, (SupFlags(), [worker_spec("x")]))
    sup = start_sup(specs=[worker_spec("a"), worker_spec("b"), sub])
    supervisor.terminate_child(sup, "b")
    rows = supervisor.which_children(sup)
    assert [(r.id, r.type) for r in rows] == [
        ("a", "worker"), ("b", "worker"), (ScriptedSupervisor, "supervisor")
    ]  # fmt: skip
    assert rows[1].pid is None and rows[0].pid == whereis_child(sup, "a")
    assert rows[2].modules == (ScriptedSupervisor,)
    assert supervisor.count_children(sup) == ChildCounts(specs=3, active=2, supervisors=1,
                                                         workers=2)
    assert supervisor.get_childspec(sup, "a").id == "a"
    stop_sup(sup)


# --- S9: significant children and auto_shutdown --------------------------------------


def test_s9_significant_permanent_child_is_rejected(node):
    with pytest.raises(ChildSpecError, match="significant"):
        worker_spec("a", significant=True)


def test_s9_significant_child_is_rejected_when_auto_shutdown_is_never(node):
    spec = worker_spec("a", significant=True, restart="transient")
    with pytest.raises(StartError) as ei:
        start_sup(SupFlags(auto_shutdown="never"), [spec])
    assert ei.value.reason[0] == "start_spec"
    sup = start_sup()
    with pytest.raises(ChildSpecError, match="auto_shutdown='never'"):
        supervisor.start_child(sup, spec)
    stop_sup(sup)


@pytest.mark.parametrize("restart", ["transient", "temporary"])
def test_s9_any_significant_stops_the_supervisor_when_one_exits_by_itself(node, restart):
    trap_exit(True)
    sup = start_sup(SupFlags(auto_shutdown="any_significant"), [
        worker_spec("s1", significant=True, restart=restart),
        worker_spec("s2", significant=True, restart=restart),
        worker_spec("other"),
    ])  # fmt: skip
    other = whereis_child(sup, "other")
    crash(whereis_child(sup, "s1"), "normal")
    assert assert_receive(exit_of(sup)).reason == "shutdown"
    assert not is_alive(other)


def test_s9_all_significant_stops_the_supervisor_when_the_last_one_exits(node):
    trap_exit(True)
    sup = start_sup(SupFlags(auto_shutdown="all_significant"), [
        worker_spec("s1", significant=True, restart="transient"),
        worker_spec("s2", significant=True, restart="temporary"),
    ])  # fmt: skip
    crash_and_wait(sup, "s1", "normal")
    assert is_alive(sup)
    crash(whereis_child(sup, "s2"), "shutdown")
    assert assert_receive(exit_of(sup)).reason == "shutdown"


def test_s9_significant_child_stopped_by_terminate_child_does_not_shut_down(node):
    sup = start_sup(SupFlags(auto_shutdown="any_significant"),
                    [worker_spec("s", significant=True, restart="transient")])
    supervisor.terminate_child(sup, "s")
    assert is_alive(sup)
    stop_sup(sup)


def test_s9_significant_transient_child_crashing_is_restarted_not_a_shutdown(node):
    sup = start_sup(SupFlags(auto_shutdown="any_significant"),
                    [worker_spec("s", significant=True, restart="transient")])
    old = crash_and_wait(sup, "s", "boom")
    assert whereis_child(sup, "s") not in (None, old)
    stop_sup(sup)


# --- the supervisor process itself ----------------------------------------------------


def test_exit_from_parent_stops_children_in_reverse_order(node):
    me = self()
    specs = [worker_spec(t, notify=me, trap=True) for t in "abc"]

    def parent():
        start_sup(specs=specs)
        receive()

    p = spawn(parent)
    for _ in range(3):
        assert_receive(("started", ANY, ANY))
    exit(p, "boom")
    order = [assert_receive(("stopping", ANY, ANY, ANY)) for _ in range(3)]
    assert [o[1] for o in order] == ["c", "b", "a"]
    assert all(o[3] == "shutdown" for o in order)
    wait_all_blocked()


def test_supervisor_traps_exits(node):
    sup = start_sup()
    other = spawn(exit, sup, "not_from_parent")
    wait_down(other)
    assert is_alive(sup)  # an EXIT from a non-child, non-parent is ignored
    stop_sup(sup)


def test_supervisor_serves_the_sys_interface(node):
    sup = start_sup(specs=[worker_spec("a")])
    otp_sys.suspend(sup)
    otp_sys.resume(sup)
    assert otp_sys.get_status(sup) is not None
    assert [c.id for c in supervisor.which_children(sup)] == ["a"]
    stop_sup(sup)


def test_supervisor_registered_name_is_usable_in_the_api(node):
    start_sup(specs=[worker_spec("a")], name="top")
    assert [c.id for c in supervisor.which_children("top")] == ["a"]
    stop_sup("top")


def test_start_link_rejects_a_class_that_is_not_a_supervisor(node):
    from otp.errors import BadArg

    with pytest.raises(BadArg, match="Supervisor subclass"):
        supervisor.start_link(int)


# --- back-off (beyond OTP) ------------------------------------------------------------


def test_backoff_delays_restarts_exponentially_on_the_node_clock(node):
    sup = start_sup(SupFlags(intensity=10),
                    [worker_spec("a", backoff=supervisor.Backoff(1.0, 4.0, jitter=0))])
    crash_and_wait(sup, "a")
    restarted_between(sup, "a", 1.0, 1.0)
    crash_and_wait(sup, "a")
    restarted_between(sup, "a", 2.0, 2.0)
    crash_and_wait(sup, "a")
    restarted_between(sup, "a", 4.0, 4.0)
    crash_and_wait(sup, "a")
    restarted_between(sup, "a", 4.0, 4.0)  # capped at max
    stop_sup(sup)


def test_backoff_jitter_only_shortens_the_delay(node):
    sup = start_sup(SupFlags(intensity=10),
                    [worker_spec("a", backoff=supervisor.Backoff(2.0, 4.0, jitter=0.5))])
    crash_and_wait(sup, "a")
    restarted_between(sup, "a", 1.0, 2.0)
    stop_sup(sup)


def test_backoff_is_off_by_default_so_restarts_are_immediate(node):
    sup = start_sup(specs=[worker_spec("a")])
    t0 = now()
    crash_and_wait(sup, "a")
    assert isinstance(pids(sup)["a"], Pid) and now() == t0
    stop_sup(sup)


def test_terminate_child_cancels_a_pending_backoff(node):
    sup = start_sup(SupFlags(intensity=10), [worker_spec("a", backoff=(5.0, 10.0))])
    crash_and_wait(sup, "a")
    supervisor.terminate_child(sup, "a")
    assert pids(sup)["a"] is None
    stop_sup(sup)


def test_start_worker_helper_starts_synchronously(node):
    pid = start_worker("solo")
    assert ping(pid) == ("pong", "solo")
    trap_exit(True)
    kill(pid)
    assert assert_receive(exit_of(pid)).reason == "killed"


def test_s9_simple_one_for_one_all_significant_stops_with_the_last_child(node):
    trap_exit(True)
    sup = start_sup(SupFlags("simple_one_for_one", auto_shutdown="all_significant"),
                    [worker_spec("t", significant=True, restart="transient")])
    p1 = supervisor.start_child(sup, (1,))
    p2 = supervisor.start_child(sup, (2,))
    crash(p1, "normal")
    wait_down(p1)
    assert is_alive(sup)
    crash(p2, "normal")
    assert assert_receive(exit_of(sup)).reason == "shutdown"


# --- real gen_server children ---------------------------------------------------------


class Counter(GenServer):
    def init(self, arg):
        trap_exit(True)  # so that the supervisor's shutdown runs terminate
        return Ok(arg)

    def handle_call(self, request, from_, n):
        return Reply(n, n + 1)

    def terminate(self, reason, n):
        send("observer", ("terminated", n, reason))


def test_genserver_children_given_as_class_or_class_and_arg(node):
    from otp.process import register

    register("observer", self())
    sup = start_sup(specs=[(Counter, 10)])
    [row] = supervisor.which_children(sup)
    assert row.id is Counter and row.modules == (Counter,)
    assert gen_server.call(row.pid, "next") == 10
    stop_sup(sup)
    assert_receive(("terminated", 11, "shutdown"))


def test_genserver_child_crash_is_restarted_with_its_initial_arg(node):
    sup = start_sup(specs=[Counter])  # supervisor.child_spec(Counter): arg None
    pid = pids(sup)[Counter]
    with pytest.raises(Exception):
        gen_server.call(pid, "unknown-and-not-a-number")  # None + 1: the server crashes
    wait_all_blocked()
    new = pids(sup)[Counter]
    assert new != pid and is_alive(new)
    stop_sup(sup)


# --- code change ------------------------------------------------------------------------


class V1(supervisor.Supervisor):
    def init(self, arg):
        return SupFlags(intensity=1), [worker_spec("a")]


class V2(supervisor.Supervisor):
    def init(self, arg):
        return SupFlags(intensity=5), [worker_spec("a", restart="transient"), worker_spec("b")]


def test_code_change_takes_new_specs_and_flags_from_init_again(node):
    sup = supervisor.start_link(V1)
    a = whereis_child(sup, "a")
    otp_sys.suspend(sup)
    otp_sys.change_code(sup, supervisor, "1", extra=V2)
    otp_sys.resume(sup)
    assert pids(sup) == {"a": a, "b": None}  # kept running; the new id is added stopped
    assert supervisor.get_childspec(sup, "a").restart == "transient"
    assert supervisor.restart_child(sup, "b") is not None
    stop_sup(sup)


def test_s3_failed_start_in_a_group_restart_is_retried_as_a_group(node):
    plan = FaultPlan()
    sup = start_sup(SupFlags("one_for_all", intensity=5),
                    [worker_spec(t, start=plan.starter(t)) for t in "abc"])
    plan.fail_next("b", 1)
    before = pids(sup)
    crash_and_wait(sup, "c")
    wait_all_blocked()
    after = pids(sup)
    assert all(isinstance(after[t], Pid) and after[t] != before[t] for t in "abc")
    # a, b, c at first; a (b fails) on the restart; a, b, c on the retry
    assert plan.started == {"a": 3, "b": 2, "c": 2}
    stop_sup(sup)


def test_flaky_starter_fails_n_times_then_succeeds(node):
    from otp.testing_faults import flaky

    spec = ChildSpec("a", (flaky(1, "not_yet", "a"), ()))
    with pytest.raises(StartError) as ei:
        start_sup(specs=[spec])
    assert ei.value.reason == ("failed_to_start_child", "a", "not_yet")
    sup = start_sup(specs=[spec])  # the same starter: its one failure is spent
    assert ping(whereis_child(sup, "a")) == ("pong", "a")
    stop_sup(sup)


# --- odd start functions and messages -------------------------------------------------


def _raises_value_error():
    raise ValueError("bug in start")


def _returns_junk():
    return "not a pid"


def test_s1_start_function_that_raises_or_returns_junk_fails_the_start(node):
    with pytest.raises(StartError) as ei:
        start_sup(specs=[ChildSpec("a", (_raises_value_error, ()))])
    tag, cid, reason = ei.value.reason
    assert (tag, cid) == ("failed_to_start_child", "a") and isinstance(reason, ValueError)
    with pytest.raises(StartError) as ei:
        start_sup(specs=[ChildSpec("a", (_returns_junk, ()))])
    assert ei.value.reason[2] == ("bad_return_value", "'not a pid'")


def test_s7_simple_one_for_one_edge_cases(node):
    sup = start_sup(SupFlags("simple_one_for_one"),
                    [worker_spec("tmpl", shutdown="brutal_kill", trap=True)])
    with pytest.raises(Exception, match="expects a tuple"):
        supervisor.start_child(sup, worker_spec("x"))
    p = supervisor.start_child(sup, (1,))
    dead = spawn(lambda: None)
    wait_down(dead)
    supervisor.terminate_child(sup, dead)  # OTP: a dead pid counts as terminated
    with pytest.raises(SupervisorError) as ei:
        supervisor.terminate_child(sup, sup)  # alive, but not a child
    assert ei.value.reason == "not_found"
    ref = monitor(p)
    stop_sup(sup)
    assert assert_receive(lambda m: isinstance(m, Down) and m.ref == ref).reason == "killed"


def test_supervisor_logs_and_ignores_unexpected_messages(node):
    sup = start_sup(specs=[worker_spec("a")])
    send(sup, "junk")
    assert [c.id for c in supervisor.which_children(sup)] == ["a"]
    stop_sup(sup)


def restarted_between(sup, child_id, earliest, latest):
    """Let the node clock run: the child is still restarting just before ``earliest``
    seconds from now and running just after ``latest`` (time travel, not waiting)."""
    sleep(earliest - 0.05)
    wait_all_blocked()
    assert pids(sup)[child_id] == "restarting"
    sleep(latest - earliest + 0.1)
    wait_all_blocked()
    assert isinstance(pids(sup)[child_id], Pid)


def test_backoff_in_one_for_all_stops_siblings_at_once_and_restarts_all_later(node):
    sup = start_sup(SupFlags("one_for_all", intensity=10),
                    [worker_spec("a"), worker_spec("b", backoff=(2.0, 8.0, 0.0))])
    crash_and_wait(sup, "b")
    assert pids(sup) == {"a": None, "b": "restarting"}
    restarted_between(sup, "b", 2.0, 2.0)
    assert isinstance(pids(sup)["a"], Pid)
    stop_sup(sup)


def test_backoff_failed_restart_is_retried_after_the_next_delay(node):
    plan = FaultPlan()
    sup = start_sup(SupFlags(intensity=10),
                    [worker_spec("a", start=plan.starter("a"), backoff=(1.0, 8.0, 0.0))])
    plan.fail_next("a", 1)
    crash_and_wait(sup, "a")
    restarted_between(sup, "a", 3.0, 3.0)  # the failed start at 1 s, the retry 2 s later
    assert plan.started["a"] == 2
    stop_sup(sup)


# --- strict mode never breaks the supervisor's own API (S8) -----------------------------


def _start_with_list(tag, items):
    """A start function whose arguments hold a list (legal: a spec is never sent)."""
    assert isinstance(items, list)
    return start_worker(tag)


def test_s8_get_childspec_returns_a_private_copy_of_a_spec_holding_a_list(node):
    items = [1, 2]
    sup = start_sup(specs=[ChildSpec("a", (_start_with_list, ("a", items)))])
    spec = supervisor.get_childspec(sup, "a")
    assert spec.id == "a" and spec.start == (_start_with_list, ("a", [1, 2]))
    spec.start[1][1].append(3)  # the caller's copy: the supervisor's spec is untouched
    assert supervisor.get_childspec(sup, "a").start[1][1] == [1, 2]
    assert items == [1, 2]
    crash_and_wait(sup, "a")  # and the supervisor still restarts from its own spec
    assert whereis_child(sup, "a") is not None
    stop_sup(sup)


def test_s8_which_children_answers_when_modules_are_module_objects(node):
    sup = start_sup(specs=[worker_spec("a", modules=(logging,))])
    [row] = supervisor.which_children(sup)
    assert row.id == "a" and row.modules == (logging,)
    assert supervisor.get_childspec(sup, "a").modules == (logging,)
    stop_sup(sup)


def test_s8_sys_get_status_shows_module_objects_by_name(node):
    sup = start_sup(specs=[worker_spec("a", modules=(logging,))])
    [row] = dict(otp_sys.get_status(sup).state)["children"]
    assert row.modules == ("logging",)
    stop_sup(sup)
