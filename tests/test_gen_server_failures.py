"""gen_server failure semantics: terminate, exit signals, crash reports, bad returns
(docs/semantics.md G6-G9)."""

from __future__ import annotations

import logging

import pytest

from otp import gen_server
from otp.errors import CallError, CallTimeout, StartError
from otp.gen_server import GenServer, NoReply, Ok, Reply, Stop
from otp.process import (
    ANY,
    Down,
    Exit,
    exit,
    is_alive,
    link,
    monitor,
    receive,
    send,
    spawn,
    spawn_link,
    trap_exit,
)
from otp.process import self as self_pid
from otp.testing import assert_receive, refute_receive, wait_all_blocked


class Probe(GenServer):
    """Reports its callbacks to ``owner``; scripted by the requests it gets."""

    def init(self, arg):
        owner, trap = arg
        if trap:
            trap_exit(True)
        return Ok((owner, "s3cret"))

    def handle_call(self, request, from_, state):
        match request:
            case ("stop", reason):
                return Stop(reason, state)
            case ("stop_reply", reason, value):
                return Stop(reason, state, reply=value)
            case ("raise", text):
                raise RuntimeError(text)
            case ("exit", reason):
                exit(reason)
            case ("return", value):
                return value
            case "ping":
                return Reply("pong", state)
            case ("link", pid):
                link(pid)
                return Reply("ok", state)
        return super().handle_call(request, from_, state)

    def handle_cast(self, request, state):
        match request:
            case ("return", value):
                return value
        return super().handle_cast(request, state)

    def handle_info(self, msg, state):
        owner, _ = state
        match msg:
            case Exit():
                send(owner, ("info", msg))
                return NoReply(state)
        return super().handle_info(msg, state)

    def terminate(self, reason, state):
        owner, _ = state
        send(owner, ("terminate", reason))

    def format_status(self, status):
        owner, _ = status["state"]
        return {**status, "state": (owner, "<redacted>")}


def start_probe(trap=False, **kw):
    return gen_server.start_link(Probe, (self_pid(), trap), **kw)


def wait_dead(pid):
    ref = monitor(pid)
    return assert_receive(lambda m: isinstance(m, Down) and m.ref == ref).reason


def error_reports(caplog):
    return [r for r in caplog.records if r.levelno >= logging.ERROR]


# --- G6: terminate and exit signals ---------------------------------------------------


def test_g6_terminate_runs_on_stop_return(node):
    pid = start_probe()
    trap_exit(True)
    with pytest.raises(CallError):
        gen_server.call(pid, ("stop", "done"))
    assert receive() == ("terminate", "done")
    assert assert_receive(Exit) == Exit(pid, "done")


def test_g6_stop_return_with_reply_answers_the_caller_after_terminate(node):
    pid = start_probe()
    assert gen_server.call(pid, ("stop_reply", "normal", "bye")) == "bye"
    assert receive() == ("terminate", "normal")
    assert wait_dead(pid) in ("normal", "noproc")


def test_g6_terminate_runs_on_callback_exception(node, caplog):
    pid = start_probe()
    trap_exit(True)
    with pytest.raises(CallError) as ei:
        gen_server.call(pid, ("raise", "kaboom"))
    assert isinstance(ei.value.reason, RuntimeError)
    _tag, reason = receive(("terminate", ANY))
    assert isinstance(reason, RuntimeError) and str(reason) == "kaboom"
    assert assert_receive(Exit).reason is reason


def test_g6_callback_calling_exit_runs_terminate_with_that_reason(node, caplog):
    pid = start_probe()
    trap_exit(True)
    with pytest.raises(CallError) as ei:
        gen_server.call(pid, ("exit", "quit"))
    assert ei.value.reason == "quit"
    assert receive() == ("terminate", "quit")
    assert assert_receive(Exit) == Exit(pid, "quit")


def test_g6_parent_shutdown_skips_terminate_when_not_trapping(node):
    pid = start_probe(trap=False)
    trap_exit(True)
    exit(pid, "shutdown")
    assert assert_receive(Exit) == Exit(pid, "shutdown")
    refute_receive(("terminate", ANY), timeout=0)


def test_g6_parent_shutdown_runs_terminate_when_trapping(node):
    pid = start_probe(trap=True)
    trap_exit(True)
    exit(pid, "shutdown")
    assert receive() == ("terminate", "shutdown")
    assert assert_receive(Exit) == Exit(pid, "shutdown")


def test_g6_exit_from_parent_always_ends_a_trapping_server(node):
    me = self_pid()

    def parent():
        pid = gen_server.start_link(Probe, (me, True))
        send(me, ("server", pid))
        # ends "normal": a trapping server still stops when its parent goes

    spawn(parent)
    _, pid = receive(("server", ANY))
    assert receive() == ("terminate", "normal")
    assert wait_dead(pid) in ("normal", "noproc")


def test_g6_exits_from_other_links_go_to_handle_info(node):
    pid = start_probe(trap=True)
    other = spawn(receive)
    gen_server.call(pid, ("link", other))
    exit(other, "bye")
    assert receive() == ("info", Exit(other, "bye"))
    assert gen_server.call(pid, "ping") == "pong"
    gen_server.stop(pid)
    assert receive() == ("terminate", "normal")


def test_g6_terminate_raising_replaces_the_reason(node, caplog):
    class BadTerminate(GenServer):
        def terminate(self, reason, state):
            raise ValueError("terminate failed")

    pid = gen_server.start(BadTerminate, None)
    with pytest.raises(CallError) as ei:
        gen_server.stop(pid)
    assert isinstance(ei.value.reason, ValueError)


# --- G7: crash reports -------------------------------------------------------------------


@pytest.mark.parametrize("reason", ["normal", "shutdown", ("shutdown", "maintenance")])
def test_g7_clean_exit_reasons_log_no_crash_report(node, caplog, reason):
    pid = start_probe()
    trap_exit(True)
    with pytest.raises(CallError):
        gen_server.call(pid, ("stop", reason))
    assert_receive(Exit)
    wait_all_blocked()
    assert error_reports(caplog) == []
    assert receive() == ("terminate", reason)


def test_g7_abnormal_exit_logs_one_crash_report_with_message_state_and_reason(
    node, caplog
):
    pid = start_probe(name="probe")
    trap_exit(True)
    with pytest.raises(CallError):
        gen_server.call(pid, ("stop", "disk_full"))
    assert_receive(Exit)
    wait_all_blocked()
    records = error_reports(caplog)
    assert len(records) == 1, [r.getMessage() for r in records]
    rec = records[0]
    assert rec.name == "otp.report"
    report = rec.report
    assert report["label"] == "gen_server_terminate"
    assert report["name"] == "probe" and report["pid"] == pid
    assert report["last_message"][2] == ("stop", "disk_full")
    assert report["state"] == (self_pid(), "<redacted>")  # after format_status
    assert report["reason"] == "disk_full"
    text = rec.getMessage()
    assert text.startswith("** Generic server probe terminating")
    assert "disk_full" in text and "<redacted>" in text and "s3cret" not in text
    receive(("terminate", ANY))


def test_g7_exception_crash_report_has_the_stack(node, caplog):
    pid = start_probe()
    trap_exit(True)
    with pytest.raises(CallError):
        gen_server.call(pid, ("raise", "kaboom"))
    assert_receive(Exit)
    wait_all_blocked()
    records = error_reports(caplog)
    assert len(records) == 1
    report = records[0].report
    assert "RuntimeError: kaboom" in report["stack"]
    assert "handle_call" in report["stack"]
    assert "Traceback" in records[0].getMessage()
    receive(("terminate", ANY))


def test_g7_killed_by_a_signal_logs_no_report(node, caplog):
    pid = start_probe()
    trap_exit(True)
    exit(pid, "kill")
    assert assert_receive(Exit) == Exit(pid, "killed")
    wait_all_blocked()
    assert error_reports(caplog) == []


# --- G8: bad return values -----------------------------------------------------------------


def test_g8_handle_call_returning_garbage_stops_with_bad_return_value(node, caplog):
    pid = start_probe()
    trap_exit(True)
    with pytest.raises(CallError) as ei:
        gen_server.call(pid, ("return", ("not", "a", "reply")))
    assert ei.value.reason == ("bad_return_value", ("not", "a", "reply"))
    assert "('not', 'a', 'reply')" in str(ei.value)
    assert receive() == ("terminate", ("bad_return_value", ("not", "a", "reply")))
    assert_receive(Exit)
    wait_all_blocked()
    assert len(error_reports(caplog)) == 1


def test_g8_handle_cast_returning_garbage_stops_with_bad_return_value(node, caplog):
    pid = start_probe()
    trap_exit(True)
    gen_server.cast(pid, ("return", Reply(1, 2)))
    assert receive() == ("terminate", ("bad_return_value", Reply(1, 2)))
    assert assert_receive(Exit) == Exit(pid, ("bad_return_value", Reply(1, 2)))


def test_g8_init_returning_garbage_fails_the_start(node, caplog):
    class BadInit(GenServer):
        def init(self, arg):
            return arg

    with pytest.raises(StartError) as ei:
        gen_server.start_link(BadInit, "oops")
    assert ei.value.reason == ("bad_return_value", "oops")


def test_g8_bad_action_stops_with_bad_return_value(node, caplog):
    pid = start_probe()
    trap_exit(True)
    # The reply goes out first; the action is checked after it.
    assert gen_server.call(pid, ("return", Reply("x", (self_pid(), "s"), "not an action"))) == "x"
    assert receive() == ("terminate", ("bad_return_value", "not an action"))
    assert assert_receive(Exit) == Exit(pid, ("bad_return_value", "not an action"))


# --- G9: unmatched call, unexpected info ---------------------------------------------------


def test_g9_unmatched_call_stops_server_with_bad_call_seen_by_caller(node, caplog):
    pid = start_probe()
    trap_exit(True)
    with pytest.raises(CallError) as ei:
        gen_server.call(pid, "what is this")
    assert ei.value.reason == ("bad_call", "what is this")
    assert assert_receive(Exit) == Exit(pid, ("bad_call", "what is this"))
    receive(("terminate", ANY))


def test_g9_unmatched_cast_stops_server_with_bad_cast(node, caplog):
    pid = start_probe()
    trap_exit(True)
    gen_server.cast(pid, "what is this")
    assert assert_receive(Exit) == Exit(pid, ("bad_cast", "what is this"))
    receive(("terminate", ANY))


def test_g9_unexpected_info_is_logged_and_the_server_carries_on(node, caplog):
    pid = start_probe()
    send(pid, ("stray", 42))
    assert gen_server.call(pid, "ping") == "pong"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].report["label"] == "unexpected_info"
    assert warnings[0].report["message"] == ("stray", 42)
    assert "('stray', 42)" in warnings[0].getMessage()
    gen_server.stop(pid)
    receive(("terminate", ANY))


# --- stop --------------------------------------------------------------------------------


def test_stop_runs_terminate_and_returns_once_the_server_is_gone(node):
    pid = gen_server.start(Probe, (self_pid(), False), name="p")
    gen_server.stop("p", "shutdown")
    assert receive(timeout=0) == ("terminate", "shutdown")
    assert not is_alive(pid)


def test_stop_of_a_missing_server_fails_with_noproc(node):
    with pytest.raises(CallError) as ei:
        gen_server.stop("nobody")
    assert ei.value.reason == "noproc"


def test_stop_times_out_when_terminate_hangs(node):
    class Hangs(GenServer):
        def terminate(self, reason, state):
            receive(lambda m: False)

    pid = gen_server.start(Hangs, None)
    with pytest.raises(CallTimeout):
        gen_server.stop(pid, timeout=1.0)
    exit(pid, "kill")
    assert wait_dead(pid) in ("killed", "noproc")


def test_call_to_a_server_that_died_before_is_noproc(node):
    pid = gen_server.start(Probe, (self_pid(), False))
    gen_server.stop(pid)
    receive(("terminate", ANY))
    with pytest.raises(CallError) as ei:
        gen_server.call(pid, "ping")
    assert ei.value.reason == "noproc"


def test_linked_non_trapping_caller_of_a_crashing_server_dies_with_it(node):
    me = self_pid()

    def client():
        pid = gen_server.start_link(Probe, (me, False))
        gen_server.call(pid, ("stop", "boom"))

    c = spawn_link(lambda: client())
    trap_exit(True)
    assert assert_receive(Exit) == Exit(c, "boom")
    receive(("terminate", ANY))
