"""otp.sys: system messages served by every gen_server (docs/semantics.md A4, A5)."""

from __future__ import annotations

import logging
import sys as _pysys
import types

import pytest

from otp import gen_server
from otp import sys as otp_sys
from otp.errors import BadArg, CallError, CallTimeout
from otp.gen_server import GenServer, NoReply, Ok, Reply
from otp.process import ANY, Down, monitor, receive, send, spawn
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
