"""proc_lib: synchronous start with init_ack, ancestry, crash reports."""

from __future__ import annotations

import logging

import pytest

from otp import proc_lib
from otp.errors import BadArg, StartError
from otp.process import (
    Down,
    Exit,
    Pid,
    exit,
    is_alive,
    monitor,
    receive,
    send,
    spawn,
    trap_exit,
)
from otp.process import self as self_pid
from otp.testing import assert_receive, refute_receive, wait_all_blocked


def wait_dead(pid):
    ref = monitor(pid)
    return assert_receive(lambda m: isinstance(m, Down) and m.ref == ref).reason


def reports(caplog):
    return [r for r in caplog.records if r.name == "otp.report" and r.levelno >= logging.ERROR]


def acker(value, then="wait"):
    proc_lib.init_ack(value)
    if then == "wait":
        receive()


# --- synchronous start ------------------------------------------------------------------


def test_start_link_returns_the_init_ack_value_after_init(node):
    pid_box = []

    def child():
        pid_box.append(self_pid())
        proc_lib.init_ack(("ready", 1))
        receive()

    assert proc_lib.start_link(child) == ("ready", 1)
    (pid,) = pid_box
    assert is_alive(pid)
    send(pid, "stop")
    assert wait_dead(pid) == "normal"


def test_start_unlinked_returns_the_init_ack_value(node):
    def child(parent):
        proc_lib.init_ack("ok")
        send(parent, ("child", self_pid()))
        receive()

    assert proc_lib.start(child, self_pid()) == "ok"
    _, pid = receive()
    exit(pid, "kill")
    wait_dead(pid)


def test_child_dying_before_init_ack_fails_start_with_its_reason(node, caplog):
    def child():
        raise KeyError("missing")

    with pytest.raises(StartError) as ei:
        proc_lib.start_link(child)
    assert isinstance(ei.value.reason, KeyError)
    # The caller does not trap exits and was not killed by the link.
    assert is_alive(self_pid())
    wait_all_blocked()
    refute_receive(None, timeout=0)


def test_child_exiting_before_init_ack_fails_start_with_that_reason(node, caplog):
    with pytest.raises(StartError) as ei:
        proc_lib.start_link(lambda: exit("no_config"))
    assert ei.value.reason == "no_config"


def test_child_returning_before_init_ack_fails_start_with_normal(node):
    with pytest.raises(StartError) as ei:
        proc_lib.start_link(lambda: None)
    assert ei.value.reason == "normal"


def test_init_fail_fails_the_start_with_the_given_reason(node):
    def child():
        proc_lib.init_fail(("already_started", "x"))

    with pytest.raises(StartError) as ei:
        proc_lib.start_link(child)
    assert ei.value.reason == ("already_started", "x")


def test_init_timeout_kills_the_child_and_flushes_its_exit(node):
    trap_exit(True)
    before = set()

    def child():
        before.add(self_pid())
        receive()

    with pytest.raises(StartError) as ei:
        proc_lib.start_link(child, timeout=2.0)
    assert ei.value.reason == "timeout"
    (pid,) = before
    assert not is_alive(pid)
    wait_all_blocked()
    refute_receive(None, timeout=0)  # no EXIT, no Down, no late ack


def test_trapping_starter_gets_no_stray_exit_from_a_failed_start(node, caplog):
    trap_exit(True)
    with pytest.raises(StartError):
        proc_lib.start_link(lambda: exit("bad"))
    wait_all_blocked()
    refute_receive(Exit, timeout=0)


def _raises():
    raise KeyError("missing")


def _killed_by_another():
    me = self_pid()
    spawn(lambda: exit(me, "kill"))
    receive()


def _init_fails():
    proc_lib.init_fail("no_port", "normal")


@pytest.mark.parametrize(
    ("child", "reason"),
    [
        (_raises, KeyError("missing")),
        (lambda: exit("no_config"), "no_config"),
        (lambda: None, "normal"),
        (_init_fails, "no_port"),
        (_killed_by_another, "killed"),
    ],
)
def test_trapping_starter_gets_the_reason_of_an_early_end_and_no_stray_message(
    node, caplog, child, reason
):
    trap_exit(True)
    with pytest.raises(StartError) as ei:
        proc_lib.start_link(child)
    assert repr(ei.value.reason) == repr(reason)
    wait_all_blocked()
    refute_receive(None, timeout=0)


def test_start_rejects_a_bad_timeout_and_a_non_callable(node):
    with pytest.raises(BadArg, match="timeout"):
        proc_lib.start_link(acker, 1, timeout=-1)
    with pytest.raises(BadArg, match="callable"):
        proc_lib.start_link(42)


def test_init_ack_outside_a_proc_lib_start_is_a_clear_error(node):
    with pytest.raises(BadArg, match=r"proc_lib\.start"):
        proc_lib.init_ack("x")


# --- ancestry ------------------------------------------------------------------------------


def test_ancestors_and_initial_call_are_recorded(node):
    me = self_pid()

    def grandchild():
        send(me, ("grandchild", self_pid(), proc_lib.ancestors()))
        receive()

    def child():
        proc_lib.spawn_link(grandchild)
        send(me, ("child", self_pid(), proc_lib.ancestors()))
        receive()

    child_pid = proc_lib.spawn(child)
    _, _c, c_anc = receive(("child", child_pid, tuple))
    _, g, g_anc = assert_receive(lambda m: m[0] == "grandchild")
    assert c_anc == (me,)
    assert g_anc == (child_pid, me)
    assert proc_lib.initial_call(child_pid).endswith(
        "test_ancestors_and_initial_call_are_recorded.<locals>.child"
    )
    assert proc_lib.initial_call(me) is None
    assert proc_lib.ancestors() == ()
    trap_exit(True)
    exit(child_pid, "kill")
    wait_dead(child_pid)
    wait_dead(g)


def test_initial_call_answers_only_for_the_very_pid(node):
    # Another node's pid (or an older incarnation's) with the same number is not it.
    pid = proc_lib.spawn(receive)
    other = Pid("elsewhere@host", pid.id, pid.creation)
    wait_all_blocked()  # it has started
    assert proc_lib.initial_call(pid) is not None
    assert proc_lib.initial_call(other) is None
    exit(pid, "kill")
    wait_dead(pid)


def test_ancestors_of_a_start_link_chain(node):
    me = self_pid()

    def inner():
        proc_lib.init_ack((self_pid(), proc_lib.ancestors()))
        receive()

    def outer():
        proc_lib.init_ack(self_pid())
        send(me, ("outer", self_pid(), proc_lib.start_link(inner)))
        receive()

    trap_exit(True)
    outer_pid = proc_lib.start_link(outer)
    _, _o, (inner_pid, inner_ancestors) = receive(("outer", outer_pid, tuple))
    assert inner_ancestors == (outer_pid, me)
    exit(outer_pid, "kill")
    wait_dead(outer_pid)
    wait_dead(inner_pid)


# --- crash reports --------------------------------------------------------------------------


def test_exception_logs_one_crash_report_with_its_fields(node, caplog):
    def crasher():
        raise ZeroDivisionError("division by zero in worker")

    pid = proc_lib.spawn(crasher)
    reason = wait_dead(pid)
    assert isinstance(reason, ZeroDivisionError)
    wait_all_blocked()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    rec = errors[0]
    assert rec.name == "otp.report"
    report = rec.report
    assert report["label"] == "crash_report"
    assert report["pid"] == pid
    assert report["ancestors"] == (self_pid(),)
    assert report["initial_call"].endswith("crasher")
    assert report["reason"] is reason
    assert "ZeroDivisionError: division by zero in worker" in report["stack"]
    assert "name" in report
    text = rec.getMessage()
    assert repr(pid) in text and "division by zero in worker" in text


def test_exit_with_abnormal_reason_logs_a_crash_report(node, caplog):
    pid = proc_lib.spawn(lambda: exit("boom"))
    assert wait_dead(pid) == "boom"
    assert [r.report["reason"] for r in reports(caplog)] == ["boom"]


@pytest.mark.parametrize("reason", ["normal", "shutdown", ("shutdown", "x")])
def test_clean_exit_reasons_log_no_crash_report(node, caplog, reason):
    pid = proc_lib.spawn(lambda: exit(reason))
    assert wait_dead(pid) == reason
    wait_all_blocked()
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_returning_logs_no_crash_report(node, caplog):
    pid = proc_lib.spawn(lambda: None)
    assert wait_dead(pid) == "normal"
    assert reports(caplog) == []


def test_process_killed_by_a_signal_logs_no_crash_report(node, caplog):
    pid = proc_lib.spawn(receive)
    ref = monitor(pid)
    wait_all_blocked()
    exit(pid, "boom")
    assert assert_receive(Down) == Down(ref, pid, "boom")
    wait_all_blocked()
    assert reports(caplog) == []


def test_is_clean_exit(node):
    assert proc_lib.is_clean_exit("normal")
    assert proc_lib.is_clean_exit("shutdown")
    assert proc_lib.is_clean_exit(("shutdown", {"any": "term"}.get("any")))
    assert not proc_lib.is_clean_exit("killed")
    assert not proc_lib.is_clean_exit(("shutdown",))
    assert not proc_lib.is_clean_exit(ValueError())


def test_spawn_link_crash_propagates_to_the_linked_caller(node, caplog):
    trap_exit(True)
    pid = proc_lib.spawn_link(lambda: exit("bad"))
    assert assert_receive(Exit) == Exit(pid, "bad")
    assert len(reports(caplog)) == 1
