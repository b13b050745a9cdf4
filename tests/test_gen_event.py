"""gen_event: managers, handlers, supervised handlers and their failures (OTP's gen_event
rules, as in gen_event_SUITE)."""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

import pytest

from otp import gen_event, proc_lib
from otp import sys as otp_sys
from otp.errors import CallError, HandlerError, StartError
from otp.gen_event import (
    Error,
    EventHandler,
    GenEventExit,
    Ok,
    RemoveHandler,
    Reply,
    SwapHandler,
    Swapped,
)
from otp.process import (
    Down,
    Exit,
    exit,
    is_alive,
    monitor,
    process_info,
    receive,
    register,
    send,
    spawn,
    trap_exit,
    whereis,
)
from otp.process import self as self_pid
from otp.testing import assert_receive, refute_receive, wait_all_blocked


class Seen(NamedTuple):
    """What the test handlers report: which handler saw what."""

    handler: Any
    what: str
    value: Any


def the_test():
    return whereis("tester")


class Recorder(EventHandler):
    """Reports every event and info to the test (registered as "tester"); the event
    ``("return", r)`` makes handle_event return ``r``; ``("raise", why)`` raises."""

    def init(self, args):
        send(the_test(), Seen(type(self).__name__, "init", args))
        return Ok(args)

    def handle_event(self, event, state):
        send(the_test(), Seen(type(self).__name__, "event", event))
        match event:
            case ("return", r):
                return r
            case ("raise", why):
                raise RuntimeError(why)
        return Ok(state)

    def handle_info(self, msg, state):
        send(the_test(), Seen(type(self).__name__, "info", msg))
        return Ok(state)

    def handle_call(self, request, state):
        match request:
            case "state":
                return Reply(state, state)
            case ("set", new):
                return Reply("ok", new)
            case "remove":
                return RemoveHandler(reply="removed")
            case ("raise", why):
                raise RuntimeError(why)
        return ("not", "a", "legal", "return")

    def terminate(self, arg, state):
        send(the_test(), Seen(type(self).__name__, "terminate", arg))
        return ("terminated", state)


class Other(Recorder):
    pass


class Third(Recorder):
    pass


def manager():
    """A manager linked to the test, which is registered as "tester" (the manager
    stops when the test's process ends: its parent's EXIT)."""
    register("tester", self_pid())
    return gen_event.start_link()


def seen(n=1):
    return [assert_receive(Seen) for _ in range(n)]


# --- basics -----------------------------------------------------------------------------


def test_notify_reaches_every_handler_most_recently_added_first(node):
    mgr = manager()
    gen_event.add_handler(mgr, Recorder, 1)
    gen_event.add_handler(mgr, Other, 2)
    assert seen(2) == [Seen("Recorder", "init", 1), Seen("Other", "init", 2)]
    assert gen_event.which_handlers(mgr) == [Other, Recorder]
    gen_event.notify(mgr, "e1")
    assert seen(2) == [Seen("Other", "event", "e1"), Seen("Recorder", "event", "e1")]


def test_sync_notify_returns_after_every_handler_handled_the_event(node):
    mgr = manager()
    gen_event.add_handler(mgr, Recorder)
    seen()
    gen_event.sync_notify(mgr, "e")
    assert receive(Seen, 0, default=None) == Seen("Recorder", "event", "e")


def test_call_reaches_one_handler_and_returns_its_reply(node):
    mgr = manager()
    gen_event.add_handler(mgr, Recorder, "s1")
    gen_event.add_handler(mgr, Other, "s2")
    assert gen_event.call(mgr, Other, "state") == "s2"
    assert gen_event.call(mgr, Recorder, ("set", "s3")) == "ok"
    assert gen_event.call(mgr, Recorder, "state") == "s3"


def test_handler_ids_with_an_id_let_one_class_be_added_twice(node):
    mgr = manager()
    gen_event.add_handler(mgr, (Recorder, "a"), 1)
    gen_event.add_handler(mgr, (Recorder, "b"), 2)
    assert gen_event.call(mgr, (Recorder, "a"), "state") == 1
    assert gen_event.call(mgr, (Recorder, "b"), "state") == 2
    with pytest.raises(HandlerError) as ei:
        gen_event.add_handler(mgr, (Recorder, "a"), 3)
    assert ei.value.reason == "already_present" and ei.value.handler == (Recorder, "a")


def test_info_messages_go_to_every_handlers_handle_info(node):
    mgr = manager()
    gen_event.add_handler(mgr, Recorder)
    seen()
    send(mgr, "hello")
    assert seen() == [Seen("Recorder", "info", "hello")]


def test_named_manager_and_already_started(node):
    register("tester", self_pid())
    pid = gen_event.start_link(name="alarms")
    with pytest.raises(StartError) as ei:
        gen_event.start(name="alarms")
    assert ei.value.reason == ("already_started", pid)
    gen_event.add_handler("alarms", Recorder)
    gen_event.notify("alarms", "x")
    assert seen(2)[1] == Seen("Recorder", "event", "x")
    gen_event.stop("alarms")
    assert whereis("alarms") is None


def test_notify_to_a_missing_manager_is_dropped_and_calls_fail_with_noproc(node):
    gen_event.notify("nobody", "x")
    with pytest.raises(CallError) as ei:
        gen_event.sync_notify("nobody", "x")
    assert ei.value.reason == "noproc"


# --- adding and deleting ------------------------------------------------------------------


def test_init_error_fails_the_add_and_installs_nothing(node):
    mgr = manager()
    class Refuses(EventHandler):
        def init(self, args):
            return Error(("no", args))

    class Raises(EventHandler):
        def init(self, args):
            raise ValueError("bad args")

    with pytest.raises(HandlerError) as ei:
        gen_event.add_handler(mgr, Refuses, 1)
    assert ei.value.reason == ("no", 1)
    with pytest.raises(HandlerError) as ei:
        gen_event.add_handler(mgr, Raises)
    assert ei.value.reason[0] == "EXIT" and isinstance(ei.value.reason[1], ValueError)
    assert gen_event.which_handlers(mgr) == []


def test_delete_handler_runs_terminate_with_args_and_returns_its_result(node):
    mgr = manager()
    gen_event.add_handler(mgr, Recorder, "st")
    seen()
    assert gen_event.delete_handler(mgr, Recorder, "bye") == ("terminated", "st")
    assert seen() == [Seen("Recorder", "terminate", "bye")]
    assert gen_event.which_handlers(mgr) == []


def test_delete_or_call_of_a_handler_not_installed_fails_with_module_not_found(node):
    mgr = manager()
    with pytest.raises(HandlerError) as ei:
        gen_event.delete_handler(mgr, Recorder)
    assert ei.value.reason == "module_not_found"
    with pytest.raises(HandlerError) as ei:
        gen_event.call(mgr, Recorder, "state")
    assert ei.value.reason == "module_not_found"


def test_remove_handler_return_removes_it_with_terminate_remove_handler(node):
    mgr = manager()
    gen_event.add_handler(mgr, Recorder)
    gen_event.add_handler(mgr, Other)
    seen(2)
    gen_event.notify(mgr, ("return", RemoveHandler()))
    got = seen(4)
    assert Seen("Other", "terminate", "remove_handler") in got
    assert Seen("Recorder", "terminate", "remove_handler") in got
    assert gen_event.which_handlers(mgr) == []
    gen_event.add_handler(mgr, Recorder)
    assert gen_event.call(mgr, Recorder, "remove") == "removed"
    assert gen_event.which_handlers(mgr) == []


def test_bad_handler_id_is_refused_at_the_caller(node):
    mgr = manager()
    from otp.errors import BadArg

    with pytest.raises(BadArg):
        gen_event.add_handler(mgr, "not a class")
    with pytest.raises(BadArg):
        gen_event.add_handler(mgr, (int, 1))


# --- swapping -------------------------------------------------------------------------------


def test_swap_handler_passes_terminate_result_to_the_new_init(node):
    mgr = manager()
    gen_event.add_handler(mgr, Recorder, "old state")
    seen()
    gen_event.swap_handler(mgr, (Recorder, "swap"), (Other, "new args"))
    assert seen(2) == [
        Seen("Recorder", "terminate", "swap"),
        Seen("Other", "init", ("new args", ("terminated", "old state"))),
    ]
    assert gen_event.which_handlers(mgr) == [Other]


def test_swap_of_a_missing_handler_still_adds_the_new_one(node):
    mgr = manager()
    gen_event.swap_handler(mgr, (Recorder, None), (Other, 1))
    assert seen() == [Seen("Other", "init", (1, ("error", "module_not_found")))]


def test_swap_handler_return_swaps_within_the_event(node):
    mgr = manager()
    gen_event.add_sup_handler(mgr, Recorder, 0)
    seen()
    gen_event.notify(mgr, ("return", SwapHandler("a1", 5, Other, "a2")))
    assert seen(3) == [
        Seen("Recorder", "event", ("return", SwapHandler("a1", 5, Other, "a2"))),
        Seen("Recorder", "terminate", "a1"),
        Seen("Other", "init", ("a2", ("terminated", 5))),
    ]
    # The supervisor is told, and supervises the new handler.
    assert assert_receive(GenEventExit) == GenEventExit(Recorder, Swapped(Other, self_pid()))
    gen_event.delete_handler(mgr, Other)
    assert assert_receive(GenEventExit) == GenEventExit(Other, "normal")


# --- failures -------------------------------------------------------------------------------


def error_reports(caplog):
    return [r for r in caplog.records if r.levelno >= logging.ERROR and r.name == "otp.report"]


def test_raising_handler_is_removed_and_reported(node, caplog):
    mgr = manager()
    gen_event.add_handler(mgr, Recorder, "rs")
    gen_event.add_handler(mgr, Other, "os")
    seen(2)
    gen_event.sync_notify(mgr, ("raise", "boom"))
    got = seen(4)
    # Both raise: each is removed, its terminate gets ("error", ("EXIT", exc)).
    terms = [s for s in got if s.what == "terminate"]
    assert len(terms) == 2
    assert all(s.value[0] == "error" and s.value[1][0] == "EXIT" for s in terms)
    assert gen_event.which_handlers(mgr) == []
    reports = error_reports(caplog)
    assert len(reports) == 2
    report = reports[0].report  # type: ignore[attr-defined]
    assert report["label"] == "gen_event_handler_crashed"
    assert report["handler"] is Other and report["state"] == "os"
    assert report["last_event"] == ("raise", "boom")
    assert "RuntimeError: boom" in report["stack"]
    assert is_alive(mgr)


def test_raising_handler_does_not_stop_the_others(node):
    mgr = manager()
    class Fragile(Recorder):
        def handle_event(self, event, state):
            raise RuntimeError("fragile")

    gen_event.add_handler(mgr, Recorder)
    gen_event.add_handler(mgr, Fragile)
    seen(2)
    gen_event.notify(mgr, "e")
    gen_event.notify(mgr, "f")
    got = seen(3)
    assert Seen("Recorder", "event", "e") in got and Seen("Recorder", "event", "f") in got
    assert gen_event.which_handlers(mgr) == [Recorder]


def test_bad_return_value_removes_the_handler(node, caplog):
    mgr = manager()
    gen_event.add_handler(mgr, Recorder)
    seen()
    gen_event.notify(mgr, ("return", "garbage"))
    got = seen(2)
    assert got[1] == Seen(
        "Recorder", "terminate", ("error", ("bad_return_value", "garbage"))
    )
    assert gen_event.which_handlers(mgr) == []


def test_call_to_a_handler_that_raises_fails_and_removes_it(node, caplog):
    mgr = manager()
    gen_event.add_handler(mgr, Recorder)
    with pytest.raises(HandlerError) as ei:
        gen_event.call(mgr, Recorder, ("raise", "x"))
    assert ei.value.reason[0] == "EXIT" and isinstance(ei.value.reason[1], RuntimeError)
    assert gen_event.which_handlers(mgr) == []
    gen_event.add_handler(mgr, Recorder)
    with pytest.raises(HandlerError) as ei:
        gen_event.call(mgr, Recorder, "unknown")
    assert ei.value.reason == ("bad_return_value", ("not", "a", "legal", "return"))


# --- supervised handlers ---------------------------------------------------------------------


def test_sup_handler_removal_notifies_owner(node, caplog):
    mgr = manager()
    gen_event.add_sup_handler(mgr, Recorder)
    gen_event.delete_handler(mgr, Recorder)
    assert assert_receive(GenEventExit) == GenEventExit(Recorder, "normal")
    gen_event.add_sup_handler(mgr, Recorder)
    gen_event.notify(mgr, ("raise", "boom"))
    exit_msg = assert_receive(GenEventExit)
    assert exit_msg.handler is Recorder and exit_msg.reason[0] == "EXIT"
    gen_event.add_sup_handler(mgr, Recorder)
    gen_event.stop(mgr)
    assert assert_receive(GenEventExit) == GenEventExit(Recorder, "shutdown")


def test_sup_handler_is_removed_when_its_owner_ends(node):
    mgr = manager()
    me = self_pid()

    def owner():
        gen_event.add_sup_handler(mgr, Recorder, "owned")
        send(me, "added")
        receive()

    gen_event.add_handler(mgr, Other)
    pid = spawn(owner)
    assert_receive("added")
    assert gen_event.which_handlers(mgr) == [Recorder, Other]
    exit(pid, "gone")
    got = seen(4)  # two inits, then the terminate with ("stop", reason) and an info
    assert Seen("Recorder", "terminate", ("stop", "gone")) in got
    assert Seen("Other", "info", Exit(pid, "gone")) in got
    assert gen_event.which_handlers(mgr) == [Other]


def test_unsupervised_handler_owner_death_changes_nothing(node):
    mgr = manager()
    def adder():
        gen_event.add_handler(mgr, Recorder)

    ref = monitor(spawn(adder))
    assert assert_receive(Down).reason == "normal"
    del ref
    wait_all_blocked()
    assert gen_event.which_handlers(mgr) == [Recorder]


# --- stop, parent, sys ----------------------------------------------------------------------


def test_stop_terminates_every_handler_with_stop(node):
    mgr = manager()
    gen_event.add_handler(mgr, Recorder)
    gen_event.add_handler(mgr, Other)
    seen(2)
    gen_event.stop(mgr)
    assert {s for s in seen(2)} == {
        Seen("Recorder", "terminate", "stop"),
        Seen("Other", "terminate", "stop"),
    }
    assert not is_alive(mgr)


def test_parent_exit_stops_the_manager_and_its_handlers(node):
    register("tester", self_pid())
    me = self_pid()

    def parent():
        pid = gen_event.start_link()
        gen_event.add_handler(pid, Recorder)
        send(me, ("mgr", pid))
        receive()

    trap_exit(True)
    p = spawn(parent)
    _tag, mgr_pid = assert_receive(lambda m: isinstance(m, tuple) and m[0] == "mgr")
    seen()
    ref = monitor(mgr_pid)
    exit(p, "shutdown")
    assert seen() == [Seen("Recorder", "terminate", "stop")]
    assert assert_receive(Down).reason == "shutdown"
    del ref


def test_sys_get_state_and_replace_state_work_per_handler(node):
    mgr = manager()
    gen_event.add_handler(mgr, Recorder, 1)
    gen_event.add_handler(mgr, (Other, "x"), 2)
    assert otp_sys.get_state(mgr) == [((Other, "x"), 2), (Recorder, 1)]
    otp_sys.replace_state(mgr, lambda hs: (hs[0], hs[1] * 10))
    assert gen_event.call(mgr, Recorder, "state") == 10
    st = otp_sys.get_status(mgr)
    assert st.module == "otp.gen_event" and st.state == (((Other, "x"), 20), (Recorder, 10))


def test_sys_suspend_holds_events_until_resume(node):
    mgr = manager()
    gen_event.add_handler(mgr, Recorder)
    seen()
    otp_sys.suspend(mgr)
    gen_event.notify(mgr, 1)
    gen_event.notify(mgr, 2)
    refute_receive(Seen, timeout=1.0)
    otp_sys.resume(mgr)
    assert [s.value for s in seen(2)] == [1, 2]


class Versioned(EventHandler):
    def handle_call(self, request, state):
        return Reply(state, state)


class VersionedV2(EventHandler):
    def code_change(self, old_vsn, state, extra):
        return ("v2", state, extra)

    def handle_call(self, request, state):
        return Reply(state, state)


VersionedV2.__qualname__ = "Versioned"  # the same class, reloaded


def test_sys_change_code_migrates_the_handlers_of_that_class(node):
    mgr = manager()
    gen_event.add_handler(mgr, Versioned, 1)
    gen_event.add_handler(mgr, Recorder, "untouched")
    otp_sys.suspend(mgr)
    otp_sys.change_code(mgr, VersionedV2, old_vsn="1", extra="x")
    otp_sys.resume(mgr)
    assert gen_event.call(mgr, Versioned, "state") == ("v2", 1, "x")
    assert gen_event.call(mgr, Recorder, "state") == "untouched"


def test_manager_started_under_proc_lib_reports_its_initial_call(node):
    mgr = manager()
    assert proc_lib.initial_call(mgr) == "otp.gen_event.init"


def test_removing_a_handler_the_parent_supervised_keeps_the_parent_link(node):
    mgr = manager()
    gen_event.add_sup_handler(mgr, Recorder)
    gen_event.delete_handler(mgr, Recorder)
    assert_receive(GenEventExit)
    assert self_pid() in process_info(mgr).links


def test_module_doc_example_runs():
    import re
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(re.search(r"::\n\n((?:    .*\n|\n)+)", gen_event.__doc__).group(1))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr


def test_swap_sup_handler_makes_the_caller_supervise_the_new_handler(node):
    mgr = manager()
    gen_event.add_handler(mgr, Recorder, 1)
    gen_event.swap_sup_handler(mgr, (Recorder, "out"), (Other, "in"))
    gen_event.delete_handler(mgr, Other)
    assert assert_receive(GenEventExit) == GenEventExit(Other, "normal")
    refute_receive(GenEventExit, timeout=0)  # the unsupervised old one told nobody


def test_sys_statistics_count_the_managers_messages(node):
    mgr = manager()
    gen_event.add_handler(mgr, Recorder)
    otp_sys.statistics(mgr, True)
    gen_event.notify(mgr, 1)
    gen_event.sync_notify(mgr, 2)
    stats = otp_sys.statistics(mgr)
    assert stats.messages_in == 2 and stats.messages_out == 1


def test_crash_report_shows_the_handler_state_after_format_status(node, caplog):
    class Secretive(Recorder):
        def format_status(self, status):
            return {**status, "state": "<redacted>"}

    mgr = manager()
    gen_event.add_handler(mgr, Secretive, "password")
    gen_event.sync_notify(mgr, ("raise", "x"))
    [report] = [r.report for r in error_reports(caplog)]  # type: ignore[attr-defined]
    assert report["state"] == "<redacted>" and "password" not in caplog.text


def test_handler_calling_exit_is_removed_like_one_that_raises(node, caplog):
    class Exits(Recorder):
        def handle_event(self, event, state):
            exit("handler quits")

    mgr = manager()
    gen_event.add_sup_handler(mgr, Exits)
    gen_event.notify(mgr, "e")
    assert assert_receive(GenEventExit) == GenEventExit(Exits, ("EXIT", "handler quits"))
    assert is_alive(mgr) and gen_event.which_handlers(mgr) == []


def test_stop_with_an_abnormal_reason_logs_one_crash_report(node, caplog):
    register("tester", self_pid())
    mgr = gen_event.start()
    gen_event.stop(mgr, "because")
    reports = error_reports(caplog)
    assert len(reports) == 1 and reports[0].report["reason"] == "because"  # type: ignore[attr-defined]
