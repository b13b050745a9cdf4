"""gen_statem: otp.sys support, crash reports and code change (G5-G8 for state machines)."""

from __future__ import annotations

import logging

import pytest

from otp import code, gen_statem
from otp import sys as otp_sys
from otp.errors import CallError
from otp.gen_statem import Call, GenStatem, KeepState, KeepStateAndData, NextState, Ok, Reply
from otp.process import Down, Exit, monitor, send, trap_exit
from otp.process import self as self_pid
from otp.testing import assert_receive


class Switch(GenStatem):
    """off <-> on on a "flip" cast; counts the flips in its data; answers "get"."""

    def init(self, count):
        return Ok("off", count)

    def off(self, event_type, content, data):
        return self._common(event_type, content, data, "on")

    def on(self, event_type, content, data):
        return self._common(event_type, content, data, "off")

    def _common(self, event_type, content, data, other):
        match event_type, content:
            case "cast", "flip":
                return NextState(other, data + 1)
            case "cast", ("crash", why):
                raise RuntimeError(why)
            case Call(from_), "get":
                return KeepStateAndData(Reply(from_, data))
            case "info", ("tell", who):
                send(who, ("flips", data))
        return KeepStateAndData()


class SwitchV2(Switch):
    """The next version: data becomes (flips, version)."""

    def code_change(self, old_vsn, state, data, extra):
        return state, (data, extra)

    def _common(self, event_type, content, data, other):
        match event_type, content:
            case Call(from_), "get":
                return KeepStateAndData(Reply(from_, data))
            case "cast", "flip":
                return NextState(other, (data[0] + 1, data[1]))
        return KeepStateAndData()


class BrokenV2(Switch):
    def code_change(self, old_vsn, state, data, extra):
        raise ValueError("cannot migrate")


class Secret(Switch):
    def format_status(self, status):
        return {**status, "data": "<redacted>"}


def test_get_state_returns_state_and_data(node):
    pid = gen_statem.start_link(Switch, 0)
    gen_statem.cast(pid, "flip")
    assert otp_sys.get_state(pid) == ("on", 1)
    gen_statem.stop(pid)


def test_replace_state_takes_and_returns_the_pair(node):
    pid = gen_statem.start_link(Switch, 0)
    assert otp_sys.replace_state(pid, lambda sd: ("on", sd[1] + 10)) == ("on", 10)
    gen_statem.cast(pid, "flip")
    assert otp_sys.get_state(pid) == ("off", 11)
    with pytest.raises(CallError) as ei:
        otp_sys.replace_state(pid, lambda sd: "not a pair")
    assert ei.value.reason[0] == "callback_failed"
    assert otp_sys.get_state(pid) == ("off", 11)
    gen_statem.stop(pid)


def test_suspended_machine_queues_events_and_handles_them_in_order_on_resume(node):
    pid = gen_statem.start_link(Switch, 0)
    otp_sys.suspend(pid)
    gen_statem.cast(pid, "flip")
    gen_statem.cast(pid, "flip")
    gen_statem.cast(pid, "flip")
    assert otp_sys.get_state(pid) == ("off", 0)
    assert otp_sys.get_status(pid).status == "suspended"
    otp_sys.resume(pid)
    assert gen_statem.call(pid, "get") == 3
    assert otp_sys.get_state(pid) == ("on", 3)
    gen_statem.stop(pid)


def test_change_code_migrates_state_and_data_and_switches_callbacks(node):
    pid = gen_statem.start_link(Switch, 2)
    with pytest.raises(CallError) as ei:
        otp_sys.change_code(pid, SwitchV2, old_vsn="1")
    assert ei.value.reason == "not_suspended"
    otp_sys.suspend(pid)
    otp_sys.change_code(pid, SwitchV2, old_vsn="1", extra="2")
    otp_sys.resume(pid)
    gen_statem.cast(pid, "flip")
    assert gen_statem.call(pid, "get") == (3, "2")
    assert code.process_class(pid) is SwitchV2
    assert otp_sys.get_status(pid).module.endswith("SwitchV2")
    gen_statem.stop(pid)
    assert code.process_class(pid) is None


def test_code_change_that_raises_keeps_the_old_code_and_data(node):
    pid = gen_statem.start_link(Switch, 2)
    otp_sys.suspend(pid)
    with pytest.raises(CallError) as ei:
        otp_sys.change_code(pid, BrokenV2, old_vsn="1")
    assert isinstance(ei.value.reason, ValueError)
    otp_sys.resume(pid)
    assert otp_sys.get_state(pid) == ("off", 2)
    assert code.process_class(pid) is Switch
    gen_statem.stop(pid)


def test_get_status_shows_state_and_data_after_format_status(node):
    pid = gen_statem.start_link(Secret, 5, name="secret")
    st = otp_sys.get_status(pid)
    assert st.name == "secret" and st.status == "running" and st.parent == self_pid()
    assert st.state == ("off", "<redacted>")
    assert st.module.endswith("Secret")
    gen_statem.stop(pid)


def test_statistics_count_events_in_and_replies_out(node):
    pid = gen_statem.start_link(Switch, 0)
    otp_sys.statistics(pid, True)
    gen_statem.cast(pid, "flip")
    assert gen_statem.call(pid, "get") == 1
    stats = otp_sys.statistics(pid)
    assert stats.messages_in == 2 and stats.messages_out == 1
    gen_statem.stop(pid)


def test_trace_logs_events_as_dbg_lines(node, caplog):
    pid = gen_statem.start_link(Switch, 0, name="sw")
    with caplog.at_level(logging.INFO, logger="otp.sys"):
        otp_sys.trace(pid, True)
        gen_statem.cast(pid, "flip")
        gen_statem.call(pid, "get")
        otp_sys.trace(pid, False)
    lines = [r.getMessage() for r in caplog.records if r.name == "otp.sys"]
    assert any("*DBG* sw got cast 'flip'" in ln for ln in lines)
    assert any("*DBG* sw sent 1" in ln for ln in lines)
    gen_statem.stop(pid)


def error_reports(caplog):
    return [r for r in caplog.records if r.levelno >= logging.ERROR and r.name == "otp.report"]


def test_crash_logs_one_gen_statem_terminate_report_with_formatted_data(node, caplog):
    pid = gen_statem.start(Secret, 1)
    ref = monitor(pid)
    gen_statem.cast(pid, ("crash", "boom"))
    reason = assert_receive(Down).reason
    assert isinstance(reason, RuntimeError)
    del ref
    reports = error_reports(caplog)
    assert len(reports) == 1
    report = reports[0].report  # type: ignore[attr-defined]
    assert report["label"] == "gen_statem_terminate"
    assert report["state"] == "off" and report["data"] == "<redacted>"
    assert report["last_event"] == ("cast", ("crash", "boom"))
    assert report["callback_mode"] == "state_functions"
    assert "RuntimeError: boom" in report["stack"]


@pytest.mark.parametrize("reason", ["normal", "shutdown", ("shutdown", "x")])
def test_clean_exit_reasons_log_no_report(node, caplog, reason):
    pid = gen_statem.start(Switch, 0)
    gen_statem.stop(pid, reason)
    assert error_reports(caplog) == []


def test_stop_with_another_reason_logs_a_report_and_the_caller_returns(node, caplog):
    pid = gen_statem.start(Switch, 0)
    gen_statem.stop(pid, "because")
    assert [r.report["reason"] for r in error_reports(caplog)] == ["because"]  # type: ignore[attr-defined]


def test_exit_from_parent_ends_a_machine_that_does_not_trap(node):
    trap_exit(True)
    pid = gen_statem.start_link(Switch, 0)
    from otp.process import exit as exit_signal

    exit_signal(pid, "shutdown")
    assert assert_receive(Exit) == Exit(pid, "shutdown")


def test_machine_runs_under_a_supervisor_with_child_spec_and_is_restarted(node):
    from otp import supervisor

    class Sup(supervisor.Supervisor):
        def init(self, arg):
            return supervisor.SupFlags(), [supervisor.child_spec(Switch, 7)]

    sup = supervisor.start_link(Sup)
    [child] = supervisor.which_children(sup)
    assert child.id is Switch
    assert gen_statem.call(child.pid, "get") == 7
    ref = monitor(child.pid)
    gen_statem.cast(child.pid, ("crash", "x"))
    assert_receive(Down)
    del ref
    [again] = supervisor.which_children(sup)
    assert again.pid != child.pid and gen_statem.call(again.pid, "get") == 7
    supervisor.stop(sup)


def test_keep_state_data_is_seen_by_the_next_event(node):
    class Acc(GenStatem):
        def init(self, _):
            return Ok("s", ())

        def s(self, event_type, content, data):
            if isinstance(event_type, Call):
                return KeepStateAndData(Reply(event_type.from_, data))
            return KeepState((*data, content))

    pid = gen_statem.start_link(Acc)
    gen_statem.cast(pid, 1)
    send(pid, 2)
    assert gen_statem.call(pid, "get") == (1, 2)
    gen_statem.stop(pid)
