"""otp.sys: system messages served by every gen_server and by hand-written special
processes through handle_system_msg (docs/semantics.md A4, A5)."""

from __future__ import annotations

import logging
import sys as _pysys
import types

import pytest

from otp import gen_server, proc_lib
from otp import sys as otp_sys
from otp.errors import BadArg, CallError, CallTimeout
from otp.gen_server import GenServer, NoReply, Ok, Reply
from otp.process import ANY, Down, flush, monitor, receive, send, spawn, trap_exit
from otp.process import exit as exit_process
from otp.process import exit as exit_signal
from otp.process import self as self_pid
from otp.testing import assert_receive, refute_receive, wait_all_blocked


class Store(GenServer):
    """State: a tuple of items. Reports casts to the owner given as the first item."""

    def init(self, arg):
        return Ok(arg)

    def handle_call(self, request, from_, state):
        match request:
            case "get":
                return Reply(state, state)
            case "version":
                return Reply(1, state)
            case ("sleep", seconds):
                receive(lambda m: False, seconds, default=None)
                return Reply("slept", state)
        return super().handle_call(request, from_, state)

    def handle_cast(self, request, state):
        match request:
            case ("push", item):
                state = (*state, item)
                send(state[0], ("pushed", item))
                return NoReply(state)
        return super().handle_cast(request, state)

    def format_status(self, status):
        return {**status, "state": ("formatted", len(status["state"]))}


class StoreV2(Store):
    """The new code: ``version`` answers 2; the state migrates from a tuple to a
    tagged tuple."""

    def handle_call(self, request, from_, state):
        match request:
            case "version":
                return Reply(2, state)
        return super().handle_call(request, from_, state)

    def code_change(self, old_vsn, state, extra):
        send(state[0], ("code_change", old_vsn, extra))
        return (*state, ("migrated", old_vsn))


class BrokenV2(Store):
    def code_change(self, old_vsn, state, extra):
        raise ValueError("cannot migrate")


def start_store():
    return gen_server.start_link(Store, (self_pid(),))


# --- A5: get_state / replace_state ----------------------------------------------------------


def test_a5_get_state_and_replace_state_between_callbacks(node):
    pid = start_store()
    gen_server.cast(pid, ("push", "a"))
    assert otp_sys.get_state(pid) == (self_pid(), "a")
    assert otp_sys.replace_state(pid, lambda s: (*s, "b")) == (self_pid(), "a", "b")
    assert gen_server.call(pid, "get") == (self_pid(), "a", "b")
    gen_server.stop(pid)


def test_a5_replace_state_with_a_failing_function_keeps_the_state(node):
    pid = start_store()
    with pytest.raises(CallError) as ei:
        otp_sys.replace_state(pid, lambda s: 1 / 0)
    assert ei.value.reason[0] == "callback_failed"
    assert isinstance(ei.value.__cause__, ZeroDivisionError)
    assert otp_sys.get_state(pid) == (self_pid(),)
    gen_server.stop(pid)


def test_a5_get_state_default_timeout_is_5_seconds(node, clock):
    pid = start_store()
    helper = spawn(lambda: gen_server.call(pid, ("sleep", 60), timeout=None))
    wait_all_blocked()
    t0 = clock.now()
    with pytest.raises(CallTimeout) as ei:
        otp_sys.get_state(pid)
    assert ei.value.timeout == 5.0
    assert clock.now() - t0 == pytest.approx(5.0)
    with pytest.raises(CallTimeout):
        otp_sys.replace_state(pid, lambda s: s, timeout=1.0)
    ref = monitor(helper)
    assert_receive(Down, timeout=120)
    del ref
    # The abandoned system requests were served later; their replies were dropped.
    assert otp_sys.get_state(pid) == (self_pid(),)
    refute_receive(None, timeout=0)
    gen_server.stop(pid)


def test_sys_calls_to_a_missing_process_fail_with_noproc(node):
    with pytest.raises(CallError) as ei:
        otp_sys.get_state("nobody")
    assert ei.value.reason == "noproc"


def test_sys_arguments_are_checked(node):
    with pytest.raises(BadArg):
        otp_sys.replace_state("x", "not callable")
    with pytest.raises(BadArg):
        otp_sys.statistics("x", "yes")
    with pytest.raises(BadArg):
        otp_sys.trace("x", 1)
    with pytest.raises(BadArg):
        otp_sys.change_code("x", "not a class", "1")


# --- A4: suspend / resume / change_code ----------------------------------------------------


def test_a4_suspended_process_answers_only_system_messages_and_queues_the_rest(node):
    pid = start_store()
    otp_sys.suspend(pid)
    gen_server.cast(pid, ("push", 1))
    gen_server.cast(pid, ("push", 2))
    caller = spawn(lambda me: send(me, ("got", gen_server.call(pid, "get"))), self_pid())
    wait_all_blocked()
    refute_receive(None, timeout=0)  # nothing handled
    assert otp_sys.get_state(pid) == (self_pid(),)  # system messages still served
    assert otp_sys.get_status(pid).status == "suspended"
    otp_sys.resume(pid)
    assert receive() == ("pushed", 1)
    assert receive() == ("pushed", 2)
    assert receive() == ("got", (self_pid(), 1, 2))
    assert otp_sys.get_status(pid).status == "running"
    gen_server.stop(pid)
    del caller


def test_a4_change_code_is_refused_unless_suspended(node):
    pid = start_store()
    with pytest.raises(CallError) as ei:
        otp_sys.change_code(pid, StoreV2, "1")
    assert ei.value.reason == "not_suspended"
    assert gen_server.call(pid, "version") == 1
    gen_server.stop(pid)


def test_a4_change_code_migrates_state_and_next_message_runs_new_code(node):
    pid = start_store()
    otp_sys.suspend(pid)
    gen_server.cast(pid, ("push", "queued"))
    otp_sys.change_code(pid, StoreV2, "1", extra="x")
    assert receive() == ("code_change", "1", "x")
    otp_sys.resume(pid)
    assert receive() == ("pushed", "queued")
    assert gen_server.call(pid, "version") == 2
    assert gen_server.call(pid, "get") == (self_pid(), ("migrated", "1"), "queued")
    assert otp_sys.get_status(pid).module.endswith("StoreV2")
    gen_server.stop(pid)


def test_a4_change_code_accepts_a_module_holding_the_class(node):
    mod = types.ModuleType("otp_test_store_v2")
    mod.Store = type("Store", (StoreV2,), {})
    _pysys.modules[mod.__name__] = mod
    try:
        pid = start_store()
        otp_sys.suspend(pid)
        otp_sys.change_code(pid, mod, "1")
        receive(("code_change", "1", None))
        otp_sys.resume(pid)
        assert gen_server.call(pid, "version") == 2
        gen_server.stop(pid)
    finally:
        del _pysys.modules[mod.__name__]


def test_a4_failing_code_change_keeps_old_state_and_code_and_raises(node):
    pid = start_store()
    otp_sys.suspend(pid)
    with pytest.raises(CallError) as ei:
        otp_sys.change_code(pid, BrokenV2, "1")
    assert isinstance(ei.value.reason, ValueError)
    assert isinstance(ei.value.__cause__, ValueError)
    otp_sys.resume(pid)
    assert gen_server.call(pid, "version") == 1
    assert gen_server.call(pid, "get") == (self_pid(),)
    assert otp_sys.get_status(pid).module.endswith(".Store")
    gen_server.stop(pid)


class MutatingV2(Store):
    """Changes the state in place, then fails: migrate must give the old state back."""

    def code_change(self, old_vsn, state, extra):
        state[1].append("half-migrated")
        raise ValueError("cannot migrate")


def test_a4_migrate_moves_a_running_process_in_one_message(node):
    pid = start_store()
    gen_server.cast(pid, ("push", "before"))
    otp_sys.migrate(pid, StoreV2, "1", extra="x")  # no suspend needed
    assert receive() == ("pushed", "before")  # handled before, on the old code
    assert receive() == ("code_change", "1", "x")
    assert gen_server.call(pid, "version") == 2
    assert otp_sys.get_status(pid).status == "running"
    assert gen_server.call(pid, "get") == (self_pid(), "before", ("migrated", "1"))
    gen_server.stop(pid)


def test_a4_migrate_failing_keeps_the_class_and_a_copy_of_the_state(node):
    pid = start_store()
    otp_sys.replace_state(pid, lambda s: (*s, ["kept"]))  # a mutable part, made inside
    with pytest.raises(CallError) as ei:
        otp_sys.migrate(pid, MutatingV2, "1")
    assert isinstance(ei.value.__cause__, ValueError)
    assert otp_sys.get_state(pid) == (self_pid(), ["kept"])  # not half-migrated
    assert gen_server.call(pid, "version") == 1
    assert otp_sys.get_status(pid).module.endswith(".Store")
    gen_server.stop(pid)


def test_a4_migrate_then_switches_to_another_class(node):
    pid = start_store()
    otp_sys.migrate(pid, StoreV2, ("down", "1"), then=Store)  # V2 migrates, V1 runs
    assert receive() == ("code_change", ("down", "1"), None)
    assert gen_server.call(pid, "version") == 1
    assert gen_server.call(pid, "get") == (self_pid(), ("migrated", ("down", "1")))
    gen_server.stop(pid)


def test_a4_change_code_to_something_that_is_not_a_genserver_is_refused(node):
    pid = start_store()
    otp_sys.suspend(pid)
    with pytest.raises(CallError) as ei:
        otp_sys.change_code(pid, int, "1")
    assert isinstance(ei.value.reason, BadArg)
    otp_sys.resume(pid)
    gen_server.stop(pid)


def test_stop_works_on_a_suspended_server(node):
    pid = gen_server.start(Store, (self_pid(),))
    otp_sys.suspend(pid)
    gen_server.stop(pid)


# --- get_status, statistics, trace -----------------------------------------------------------


def test_get_status_reports_state_after_format_status(node):
    pid = gen_server.start_link(Store, (self_pid(), 1, 2), name="store")
    st = otp_sys.get_status("store")
    assert st.pid == pid and st.name == "store" and st.parent == self_pid()
    assert st.module.endswith("test_sys.Store")
    assert st.status == "running"
    assert st.state == ("formatted", 3)
    assert st.statistics is None and st.trace is False
    gen_server.stop(pid)


def test_statistics_count_messages_in_and_out(node, clock):
    pid = start_store()
    assert otp_sys.statistics(pid) is None
    otp_sys.statistics(pid, True)
    gen_server.call(pid, "get")
    gen_server.call(pid, "get")
    gen_server.cast(pid, ("push", 1))
    receive(("pushed", 1))
    stats = otp_sys.statistics(pid)
    assert stats.messages_in == 3
    assert stats.messages_out == 2
    assert stats.current_time >= stats.start_time
    otp_sys.statistics(pid, False)
    assert otp_sys.statistics(pid) is None
    gen_server.stop(pid)


def test_trace_logs_every_message_in_and_out(node, caplog):
    caplog.set_level(logging.INFO, logger="otp.sys")
    pid = start_store()
    otp_sys.trace(pid, True)
    gen_server.call(pid, "version")
    gen_server.cast(pid, ("push", "x"))
    receive(("pushed", ANY))
    send(pid, "stray")
    wait_all_blocked()
    otp_sys.trace(pid, False)
    gen_server.call(pid, "version")
    lines = [r.getMessage() for r in caplog.records if r.name == "otp.sys"]
    assert lines[0] == f"*DBG* {pid!r} got call 'version' from {self_pid()!r}"
    assert lines[1].startswith(f"*DBG* {pid!r} sent 1 to {self_pid()!r}, new state")
    assert lines[2] == f"*DBG* {pid!r} got cast ('push', 'x')"
    assert lines[3].startswith(f"*DBG* {pid!r} new state")
    assert lines[4] == f"*DBG* {pid!r} got 'stray'"
    assert len(lines) == 6  # nothing after trace was turned off
    gen_server.stop(pid)


def test_a5_replace_state_with_a_mutable_state_answers_a_private_snapshot(node):
    class Mutable(GenServer):
        def handle_call(self, request, from_, state):
            return Reply(state["a"], state)

    pid = gen_server.start_link(Mutable, None)
    new = otp_sys.replace_state(pid, lambda s: {"a": 1})
    assert new == {"a": 1}
    new["a"] = 2  # the caller's copy: the server does not see it
    assert gen_server.call(pid, "get") == 1
    gen_server.stop(pid)


def test_a5_get_state_of_a_mutable_state_is_a_private_snapshot(node):
    """Strict mode forbids sharing mutable state; get_state hands over a deep copy."""

    class Box(gen_server.GenServer):
        def init(self, arg):
            return gen_server.Ok({"items": [1, 2]})

        def handle_call(self, request, from_, state):
            return gen_server.Reply(len(state["items"]), state)

    pid = gen_server.start_link(Box)
    snapshot = otp_sys.get_state(pid)
    assert snapshot == {"items": [1, 2]}
    snapshot["items"].append(3)  # the caller's copy only
    assert gen_server.call(pid, "len") == 2
    gen_server.stop(pid)


# --- the process side: a hand-written special process (handle_system_msg) ------------------


class Ticker:
    """SystemCallbacks of a process whose misc is a count; reports code changes and its
    end to the owner."""

    def __init__(self, owner):
        self.owner = owner

    def system_continue(self, parent, debug, misc):
        return debug, misc

    def system_terminate(self, reason, parent, debug, misc):
        send(self.owner, ("terminating", reason, misc))
        exit_process(reason)

    def system_get_state(self, misc):
        return misc

    def system_replace_state(self, fn, misc):
        new = fn(misc)
        return new, new

    def system_code_change(self, misc, module, old_vsn, extra):
        send(self.owner, ("code_change", module, old_vsn, extra))
        return misc * 10


def ticker(parent, owner):
    proc_lib.init_ack(self_pid())
    callbacks, debug, count = Ticker(owner), None, 0
    while True:
        match receive():
            case (otp_sys.SYSTEM, from_, request):
                debug, count = otp_sys.handle_system_msg(
                    request, from_, parent, callbacks, debug, count
                )
            case ("tick", to):
                count += 1
                send(to, ("count", count))
                if debug is not None:
                    debug = otp_sys.handle_debug(debug, otp_sys.Out(count, to, count), "ticker")


def test_a4_special_process_serves_system_messages_through_handle_system_msg(node):
    me = self_pid()
    pid = proc_lib.start(ticker, me, me)
    otp_sys.suspend(pid)
    send(pid, ("tick", me))
    wait_all_blocked()
    refute_receive(None, timeout=0)  # the tick waits while suspended
    assert otp_sys.get_state(pid) == 0  # system messages are still served
    assert otp_sys.get_status(pid).status == "suspended"
    assert otp_sys.get_status(pid).module.endswith("test_sys.Ticker")
    otp_sys.change_code(pid, Ticker, "1", extra="x")
    assert receive() == ("code_change", Ticker, "1", "x")
    otp_sys.resume(pid)
    assert receive() == ("count", 1)
    assert otp_sys.replace_state(pid, lambda n: n + 5) == 6
    otp_sys.terminate(pid, "shutdown")
    assert receive() == ("terminating", "shutdown", 6)


def test_a4_parent_exit_while_suspended_ends_the_process_through_system_terminate(node):
    me = self_pid()

    def parent():
        send(me, ("child", proc_lib.start_link(ticker, self_pid(), me)))
        receive()  # never: ends when killed below

    p = spawn(parent)
    _, child = receive(("child", ANY))
    otp_sys.suspend(child)
    # The parent's EXIT reaches a suspended process only as a message, so the child
    # traps exits (turned on inside it by replace_state's function).
    otp_sys.replace_state(child, lambda n: (trap_exit(True), n)[1])
    ref = monitor(child)
    exit_signal(p, "boom")
    assert receive(("terminating", ANY, ANY)) == ("terminating", "boom", 0)
    assert receive(Down).reason == "boom"
    del ref


def test_a4_change_code_on_a_special_process_is_refused_unless_suspended(node):
    me = self_pid()
    pid = proc_lib.start(ticker, me, me)
    with pytest.raises(CallError) as ei:
        otp_sys.change_code(pid, Ticker, "1")
    assert ei.value.reason == "not_suspended"
    otp_sys.terminate(pid, "normal")
    receive(("terminating", "normal", 0))


def test_sys_switch_code_needs_a_callback_that_supports_it(node):
    me = self_pid()
    pid = proc_lib.start(ticker, me, me)
    otp_sys.suspend(pid)
    with pytest.raises(CallError) as ei:
        otp_sys.switch_code(pid, Ticker)
    assert ei.value.reason[0] == "unknown_system_msg"
    otp_sys.terminate(pid, "normal")
    receive(("terminating", "normal", 0))


def test_sys_switch_code_swaps_a_suspended_servers_class_keeping_its_state(node):
    pid = start_store()
    with pytest.raises(CallError) as ei:
        otp_sys.switch_code(pid, StoreV2)
    assert ei.value.reason == "not_suspended"
    otp_sys.suspend(pid)
    otp_sys.switch_code(pid, StoreV2)
    otp_sys.resume(pid)
    refute_receive(("code_change", ANY, ANY), timeout=0)  # no code_change ran
    assert gen_server.call(pid, "version") == 2
    assert gen_server.call(pid, "get") == (self_pid(),)
    gen_server.stop(pid)


# --- terminate, log, install, no_debug ----------------------------------------------------


def test_sys_terminate_runs_terminate_and_returns_once_the_server_ended(node):
    class Reporting(Store):
        def terminate(self, reason, state):
            send(state[0], ("terminate", reason))

    pid = gen_server.start(Reporting, (self_pid(),))
    ref = monitor(pid)
    otp_sys.terminate(pid, "shutdown")
    assert receive() == ("terminate", "shutdown")
    assert receive(Down).reason == "shutdown"
    del ref


def test_sys_terminate_of_a_missing_process_fails_with_noproc(node):
    with pytest.raises(CallError) as ei:
        otp_sys.terminate("nobody", "normal")
    assert ei.value.reason == "noproc"


def test_sys_log_keeps_the_last_n_events(node):
    pid = start_store()
    assert otp_sys.log(pid, "get") == []
    otp_sys.log(pid, 3)
    for n in range(3):
        gen_server.cast(pid, ("push", n))
        receive(("pushed", n))
    gen_server.call(pid, "version")
    events = otp_sys.log(pid, "get")
    assert len(events) == 3  # the oldest went
    assert events[0] == otp_sys.NewState((self_pid(), 0, 1, 2))
    assert isinstance(events[1], otp_sys.In) and events[1].msg[2] == "version"
    assert events[2] == otp_sys.Out(1, self_pid(), (self_pid(), 0, 1, 2))
    otp_sys.log(pid, False)
    assert otp_sys.log(pid, "get") == []
    assert otp_sys.get_status(pid).trace is False
    gen_server.stop(pid)


def test_sys_log_print_writes_the_events_as_dbg_lines(node, caplog):
    caplog.set_level(logging.INFO, logger="otp.sys")
    pid = start_store()
    otp_sys.log(pid, True)
    gen_server.call(pid, "version")
    otp_sys.log(pid, "print")
    lines = [r.getMessage() for r in caplog.records if r.name == "otp.sys"]
    assert lines == [
        f"*DBG* {pid!r} got call 'version' from {self_pid()!r}",
        f"*DBG* {pid!r} sent 1 to {self_pid()!r}, new state ({self_pid()!r},)",
    ]
    gen_server.stop(pid)


def test_sys_installed_function_sees_every_event_until_it_returns_done(node):
    me = self_pid()

    def watch(count, event, name):
        send(me, ("event", type(event).__name__, count))
        return otp_sys.DONE if count == 2 else count + 1

    pid = start_store()
    otp_sys.install(pid, watch, 0)
    gen_server.call(pid, "version")  # In, Out
    gen_server.call(pid, "version")  # In: count 2, DONE
    assert [receive(("event", ANY, ANY)) for _ in range(3)] == [
        ("event", "In", 0),
        ("event", "Out", 1),
        ("event", "In", 2),
    ]
    gen_server.call(pid, "version")
    refute_receive(("event", ANY, ANY), timeout=0)  # removed
    gen_server.stop(pid)


def test_sys_remove_and_a_failing_installed_function_stop_the_calls(node, caplog):
    me = self_pid()

    def watch(state, event, name):
        send(me, ("event", state))
        return state

    def broken(state, event, name):
        raise ValueError("broken")

    pid = start_store()
    otp_sys.install(pid, watch, "w")
    otp_sys.install(pid, broken)
    gen_server.cast(pid, ("push", 1))
    receive(("pushed", 1))
    assert receive(("event", ANY)) == ("event", "w")
    assert any("broken" in (r.exc_text or "") or r.exc_info for r in caplog.records)
    otp_sys.remove(pid, watch)
    flush()
    gen_server.cast(pid, ("push", 2))
    receive(("pushed", 2))
    wait_all_blocked()
    refute_receive(("event", ANY), timeout=0)
    assert otp_sys.get_status(pid).statistics is None
    gen_server.stop(pid)


def test_sys_no_debug_turns_statistics_trace_log_and_functions_off(node):
    me = self_pid()
    pid = start_store()
    otp_sys.statistics(pid, True)
    otp_sys.trace(pid, True)
    otp_sys.log(pid, True)
    otp_sys.install(pid, lambda s, e, n: send(me, ("event", e)) or s)
    otp_sys.no_debug(pid)
    gen_server.call(pid, "version")
    refute_receive(("event", ANY), timeout=0)
    st = otp_sys.get_status(pid)
    assert st.statistics is None and st.trace is False
    assert otp_sys.log(pid, "get") == []
    gen_server.stop(pid)


def test_sys_log_arguments_are_checked(node):
    with pytest.raises(BadArg):
        otp_sys.log("x", 0)
    with pytest.raises(BadArg):
        otp_sys.log("x", "all")
    with pytest.raises(BadArg):
        otp_sys.install("x", "not callable")


def test_sys_a_system_terminate_that_returns_still_ends_the_process(node):
    class Forgetful(Ticker):
        def system_terminate(self, reason, parent, debug, misc):
            return None  # breaks the contract: should have exited

    def loop(owner):
        proc_lib.init_ack(self_pid())
        while True:
            match receive():
                case (otp_sys.SYSTEM, from_, request):
                    otp_sys.handle_system_msg(request, from_, None, Forgetful(owner), None, 0)

    pid = proc_lib.start(loop, self_pid())
    ref = monitor(pid)
    with pytest.raises(CallError) as ei:
        otp_sys.terminate(pid, "normal")
    assert isinstance(ei.value.reason, BadArg)
    assert "system_terminate returned" in str(ei.value.reason)
    assert receive(Down).ref == ref
