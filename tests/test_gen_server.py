"""gen_server: the client API, names, and the rules G1-G5 of docs/semantics.md."""

from __future__ import annotations

import logging

import pytest

from otp import gen_server
from otp.errors import BadArg, CallError, CallTimeout, StartError
from otp.gen_server import (
    Continue,
    GenServer,
    Hibernate,
    Ignore,
    NoReply,
    Ok,
    Reply,
    Stop,
    Timeout,
    Via,
)
from otp.process import (
    ANY,
    Down,
    Exit,
    exit,
    is_alive,
    monitor,
    receive,
    send,
    spawn,
    spawn_link,
    trap_exit,
    whereis,
)
from otp.process import self as self_pid
from otp.testing import assert_receive, refute_receive, wait_all_blocked


class Counter(GenServer):
    def init(self, arg):
        return Ok(arg)

    def handle_call(self, request, from_, state):
        match request:
            case "get":
                return Reply(state, state)
            case "incr":
                return Reply(state + 1, state + 1)
            case ("sleep", seconds):
                receive(lambda m: False, seconds, default=None)
                return Reply("slept", state)
            case ("later", who):
                send(who, ("from", from_))
                return NoReply(state)
            case ("crash", why):
                raise RuntimeError(why)
            case ("stop", reason):
                return Stop(reason, state, reply="stopping")
            case "call_self":
                return Reply(gen_server.call(self_pid(), "get"), state)
        return super().handle_call(request, from_, state)

    def handle_cast(self, request, state):
        match request:
            case ("add", n):
                return NoReply(state + n)
        return super().handle_cast(request, state)

    def handle_info(self, msg, state):
        match msg:
            case ("tell", who):
                send(who, ("state", state))
                return NoReply(state)
        return super().handle_info(msg, state)


def stop_quietly(pid):
    if is_alive(pid):
        gen_server.stop(pid)


# --- basics ---------------------------------------------------------------------------


def test_call_cast_and_stop_round_trip(node):
    pid = gen_server.start_link(Counter, 10)
    gen_server.cast(pid, ("add", 5))
    assert gen_server.call(pid, "get") == 15
    assert gen_server.call(pid, "incr") == 16
    gen_server.stop(pid)
    assert not is_alive(pid)


def test_local_name_registers_and_is_callable(node):
    pid = gen_server.start_link(Counter, 1, name="counter")
    assert whereis("counter") == pid
    assert gen_server.call("counter", "get") == 1
    gen_server.cast("counter", ("add", 1))
    assert gen_server.call("counter", "get") == 2
    gen_server.stop("counter")
    assert whereis("counter") is None


def test_name_already_taken_fails_the_start_with_already_started(node):
    pid = gen_server.start_link(Counter, 0, name="taken")
    with pytest.raises(StartError) as ei:
        gen_server.start_link(Counter, 0, name="taken")
    assert ei.value.reason == ("already_started", pid)
    gen_server.stop(pid)


class DictRegistry:
    """A minimal Via registry (the registry must forget names of dead processes; this
    one is only used with servers that are stopped explicitly)."""

    def __init__(self):
        self.names = {}

    def register_name(self, name, pid):
        if name in self.names:
            return False
        self.names[name] = pid
        return True

    def unregister_name(self, name):
        self.names.pop(name, None)

    def whereis_name(self, name):
        return self.names.get(name)

    def send(self, name, msg):
        send(self.names[name], msg)


def test_via_name_registers_in_the_registry_and_routes_calls(node):
    reg = DictRegistry()
    pid = gen_server.start_link(Counter, 3, name=Via(reg, "c"))
    assert reg.names == {"c": pid}
    assert gen_server.call(Via(reg, "c"), "get") == 3
    gen_server.cast(Via(reg, "c"), ("add", 1))
    assert gen_server.call(Via(reg, "c"), "get") == 4
    with pytest.raises(StartError) as ei:
        gen_server.start(Counter, 0, name=Via(reg, "c"))
    assert ei.value.reason == ("already_started", pid)
    gen_server.stop(Via(reg, "c"))


def test_via_rejects_an_object_that_is_not_a_registry(node):
    with pytest.raises(BadArg, match="register_name"):
        Via(object(), "x")


def test_start_of_something_that_is_not_a_genserver_subclass_is_a_clear_error(node):
    with pytest.raises(BadArg, match="GenServer subclass, got <class 'int'>"):
        gen_server.start_link(int, 0)
    with pytest.raises(BadArg, match="GenServer subclass, got 'Counter'"):
        gen_server.start("Counter")
    with pytest.raises(BadArg, match="name must be"):
        gen_server.start(Counter, 0, name=42)


def test_cast_to_a_missing_name_is_dropped_silently(node):
    gen_server.cast("nobody", "hello")
    reg = DictRegistry()
    gen_server.cast(Via(reg, "nobody"), "hello")


# --- G1: call timeout -----------------------------------------------------------------


def test_call_reply_is_taken_out_of_turn_and_other_messages_keep_their_order(node):
    # The server sends the caller two plain messages before it replies: the call
    # returns the reply (a selective receive), the two messages stay queued, in order.
    class Chatty(GenServer):
        def init(self, arg):
            return Ok(None)

        def handle_call(self, request, from_, state):
            send(from_[0], "first")
            send(from_[0], "second")
            return Reply("the reply", state)

    srv = gen_server.start_link(Chatty)
    assert gen_server.call(srv, "go") == "the reply"
    assert receive(timeout=0) == "first"
    assert receive(timeout=0) == "second"
    refute_receive(ANY)
    gen_server.stop(srv)


def test_g10_a_reply_to_an_earlier_call_is_not_taken_as_the_reply_to_the_current_one(node):
    # A reply sent with the From of a call that was already answered, while the same
    # caller waits in its next call, goes to that call's alias, inactive by now: it is
    # dropped, neither the answer to the current call nor a message in the mailbox.
    me = self_pid()
    srv = gen_server.start_link(Counter, 0)

    def caller():
        first = gen_server.call(srv, ("later", me))
        second = gen_server.call(srv, ("later", me))
        send(me, ("got", first, second, receive(timeout=0, default=None)))

    spawn(caller)
    _, first_from = assert_receive(("from", ANY))
    gen_server.reply(first_from, "answer 1")
    _, second_from = assert_receive(("from", ANY))
    gen_server.reply(first_from, "stale")
    gen_server.reply(second_from, "answer 2")
    assert_receive(("got", "answer 1", "answer 2", None))
    gen_server.stop(srv)


def test_a_caller_killed_in_the_middle_of_a_call_leaves_no_monitor_on_the_server(node):
    from otp.process import process_info

    me = self_pid()
    srv = gen_server.start_link(Counter, 0)
    caller = spawn(lambda: gen_server.call(srv, ("later", me)))
    assert_receive(("from", ANY))
    assert process_info(srv).monitored_by == (caller,)
    exit(caller, "kill")
    wait_all_blocked()
    assert not is_alive(caller)
    assert process_info(srv).monitored_by == ()
    assert gen_server.call(srv, "incr") == 1
    assert process_info(srv).monitored_by == ()  # and none left by a call that returned
    gen_server.stop(srv)


def test_g1_call_timeout_names_server_request_and_timeout(node):
    pid = gen_server.start_link(Counter, 0, name="slow")
    with pytest.raises(CallTimeout) as ei:
        gen_server.call("slow", ("sleep", 10), timeout=1.0)
    err = ei.value
    assert err.reason == "timeout" and err.server == "slow"
    assert err.request == ("sleep", 10) and err.timeout == 1.0
    assert "'slow'" in str(err) and "('sleep', 10)" in str(err) and "1.0" in str(err)
    assert isinstance(err, TimeoutError)
    gen_server.stop(pid)


def test_g1_call_default_timeout_is_5_seconds(node, clock):
    pid = gen_server.start_link(Counter, 0)
    t0 = clock.now()
    with pytest.raises(CallTimeout) as ei:
        gen_server.call(pid, ("sleep", 60))
    assert ei.value.timeout == 5.0
    assert clock.now() - t0 == pytest.approx(5.0)
    gen_server.stop(pid)


def test_g1_server_still_handles_the_request_and_late_reply_never_reaches_caller(node):
    pid = gen_server.start_link(Counter, 0)
    with pytest.raises(CallTimeout):
        gen_server.call(pid, ("sleep", 10), timeout=1.0)
    # The server finishes the request (the late reply is sent then) and is still live.
    gen_server.cast(pid, ("add", 1))
    assert gen_server.call(pid, "get", timeout=None) == 1
    wait_all_blocked()
    refute_receive(None, timeout=0)
    gen_server.stop(pid)


def test_g1_reply_racing_the_deadline_is_flushed(node):
    # The server replies in the same instant the call's deadline fires.
    pid = gen_server.start_link(Counter, 0)
    with pytest.raises(CallTimeout):
        gen_server.call(pid, ("sleep", 1.0), timeout=1.0)
    wait_all_blocked()
    refute_receive(None, timeout=0)
    gen_server.stop(pid)


# --- G2: noproc, death mid-call, calling_self -----------------------------------------


def test_g2_call_to_missing_name_fails_with_noproc_at_once(node, clock):
    t0 = clock.now()
    with pytest.raises(CallError) as ei:
        gen_server.call("nobody", "get")
    assert ei.value.reason == "noproc" and ei.value.server == "nobody"
    with pytest.raises(CallError) as ei:
        gen_server.call(Via(DictRegistry(), "nobody"), "get")
    assert ei.value.reason == "noproc"
    assert clock.now() == t0


def test_g2_call_to_a_dead_pid_fails_with_noproc(node):
    pid = spawn(lambda: None)
    ref = monitor(pid)
    assert_receive(Down)
    del ref
    with pytest.raises(CallError) as ei:
        gen_server.call(pid, "get")
    assert ei.value.reason == "noproc"


def test_g2_server_dying_mid_call_fails_the_call_at_once_with_its_reason(node, clock):
    trap_exit(True)
    pid = gen_server.start_link(Counter, 0)
    t0 = clock.now()
    with pytest.raises(CallError) as ei:
        gen_server.call(pid, ("later", spawn(lambda: exit(pid, "boom"))), timeout=None)
    assert ei.value.reason == "boom"
    assert clock.now() == t0
    assert assert_receive(Exit) == Exit(pid, "boom")
    refute_receive(None, timeout=0)


def test_g2_calling_self_fails_instead_of_deadlocking(node):
    with pytest.raises(CallError) as ei:
        gen_server.call(self_pid(), "get")
    assert ei.value.reason == "calling_self"
    trap_exit(True)
    pid = gen_server.start_link(Counter, 0)
    with pytest.raises(CallError) as ei:
        gen_server.call(pid, "call_self")
    assert isinstance(ei.value.reason, CallError)
    assert ei.value.reason.reason == "calling_self"
    assert_receive(Exit)


# --- G3: deferred reply -----------------------------------------------------------------


def test_g3_noreply_then_reply_from_another_process(node):
    pid = gen_server.start_link(Counter, 0)
    me = self_pid()

    def replier():
        msg = receive(("from", ANY))
        gen_server.reply(msg[1], "deferred")

    helper = spawn(replier)
    assert gen_server.call(pid, ("later", helper)) == "deferred"
    gen_server.stop(pid)
    del me


def test_g3_reply_after_the_caller_gave_up_is_dropped(node):
    pid = gen_server.start_link(Counter, 0)
    me = self_pid()
    with pytest.raises(CallTimeout):
        gen_server.call(pid, ("later", me), timeout=1.0)
    msg = assert_receive(("from", ANY))
    gen_server.reply(msg[1], "too late")
    wait_all_blocked()
    refute_receive(None, timeout=0)
    gen_server.stop(pid)


# --- G4: continue and timeout actions ---------------------------------------------------


class Actions(GenServer):
    def init(self, arg):
        owner, first = arg
        return Ok((owner, ()), first)

    def handle_continue(self, arg, state):
        owner, _log = state
        send(owner, ("continue", arg))
        if arg == "chain":
            return NoReply(state, Continue("chained"))
        return NoReply(state)

    def handle_call(self, request, from_, state):
        match request:
            case ("timeout", s):
                return Reply("ok", state, Timeout(s))
            case ("continue", arg):
                return Reply("ok", state, Continue(arg))
        return super().handle_call(request, from_, state)

    def handle_cast(self, request, state):
        owner, _ = state
        send(owner, ("cast", request))
        return NoReply(state)

    def handle_info(self, msg, state):
        owner, _ = state
        send(owner, ("info", msg))
        return NoReply(state)


def test_g4_continue_runs_before_the_next_message(node):
    me = self_pid()
    pid = gen_server.start_link(Actions, (me, Continue("from_init")))
    gen_server.cast(pid, "hello")
    assert receive() == ("continue", "from_init")
    assert receive() == ("cast", "hello")
    assert gen_server.call(pid, ("continue", "chain")) == "ok"
    gen_server.cast(pid, "after")
    assert receive() == ("continue", "chain")
    assert receive() == ("continue", "chained")
    assert receive() == ("cast", "after")
    gen_server.stop(pid)


def test_g4_timeout_action_fires_timeout_info_when_nothing_arrives(node, clock):
    me = self_pid()
    pid = gen_server.start_link(Actions, (me, None))
    t0 = clock.now()
    gen_server.call(pid, ("timeout", 2.0))
    assert assert_receive(("info", ANY), timeout=10) == ("info", "timeout")
    assert clock.now() - t0 == pytest.approx(2.0)
    gen_server.stop(pid)


def test_g4_timeout_action_restarts_after_a_system_message(node, clock):
    # As in OTP: system messages are not the server's messages; the timeout restarts.
    from otp import sys as otp_sys

    me = self_pid()
    pid = gen_server.start_link(Actions, (me, None))
    gen_server.call(pid, ("timeout", 2.0))
    t0 = clock.now()
    assert otp_sys.get_state(pid)[0] == me
    assert assert_receive(("info", ANY), timeout=10) == ("info", "timeout")
    assert clock.now() - t0 == pytest.approx(2.0)
    gen_server.stop(pid)


def test_g4_hibernate_action_is_a_hint_and_the_server_carries_on(node):
    class Sleepy(GenServer):
        def handle_call(self, request, from_, state):
            return Reply(state, state + 1, Hibernate())

    pid = gen_server.start_link(Sleepy, 0)
    assert gen_server.call(pid, "next") == 0
    assert gen_server.call(pid, "next") == 1
    gen_server.stop(pid)


def test_g4_timeout_action_is_cancelled_by_any_message(node):
    me = self_pid()
    pid = gen_server.start_link(Actions, (me, None))
    gen_server.call(pid, ("timeout", 2.0))
    send(pid, "ping")
    assert receive() == ("info", "ping")
    refute_receive(None, timeout=5.0)
    gen_server.stop(pid)


# --- G5: synchronous start --------------------------------------------------------------


class Starter(GenServer):
    def init(self, arg):
        match arg:
            case ("ok", owner):
                send(owner, "init done")
                return Ok(None)
            case "ignore":
                return Ignore()
            case ("stop", reason):
                return Stop(reason)
            case "raise":
                raise ValueError("bad init")
            case "hang":
                receive(lambda m: False)
            case "garbage":
                return "not a return"
        return Ok(None)


def test_g5_start_link_returns_only_after_init(node):
    pid = gen_server.start_link(Starter, ("ok", self_pid()))
    assert receive(timeout=0) == "init done"
    gen_server.stop(pid)


def test_g5_ignore_returns_none_and_the_process_ends_normally(node):
    assert gen_server.start_link(Starter, "ignore", name="ign") is None
    assert whereis("ign") is None


def test_g5_stop_from_init_fails_start_with_reason_and_name_is_free(node, caplog):
    with pytest.raises(StartError) as ei:
        gen_server.start_link(Starter, ("stop", "no_db"), name="svc")
    assert ei.value.reason == "no_db"
    assert whereis("svc") is None
    wait_all_blocked()
    (rec,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert rec.report["label"] == "crash_report" and rec.report["reason"] == "no_db"
    assert rec.report["initial_call"].endswith("test_gen_server.Starter.init")
    reg = DictRegistry()
    with pytest.raises(StartError):
        gen_server.start_link(Starter, ("stop", "no_db"), name=Via(reg, "svc"))
    assert reg.names == {}
    # The caller was not killed by the link (it does not trap exits).
    assert is_alive(self_pid())


def test_g5_exception_in_init_fails_start_with_the_exception(node, caplog):
    with pytest.raises(StartError) as ei:
        gen_server.start_link(Starter, "raise", name="svc")
    assert isinstance(ei.value.reason, ValueError)
    assert whereis("svc") is None


def test_g5_init_timeout_kills_the_server_and_fails_with_timeout(node):
    trap_exit(True)
    with pytest.raises(StartError) as ei:
        gen_server.start_link(Starter, "hang", name="svc", timeout=1.0)
    assert ei.value.reason == "timeout"
    wait_all_blocked()
    assert whereis("svc") is None
    refute_receive(None, timeout=0)  # its EXIT was flushed


def test_start_unlinked_server_survives_its_starter(node):
    def starter(parent):
        send(parent, gen_server.start(Counter, 7))

    spawn_link(starter, self_pid())
    pid = receive()
    wait_all_blocked()
    assert gen_server.call(pid, "get") == 7
    gen_server.stop(pid)


# --- child_spec -------------------------------------------------------------------------


def test_child_spec_starts_the_server_under_a_supervisor(node):
    supervisor = pytest.importorskip("otp.supervisor")
    spec = supervisor.child_spec(Counter, 5)
    assert spec.id is Counter
    assert spec.start == (gen_server.start_link, (Counter, 5))

    class Sup(supervisor.Supervisor):
        def init(self, arg):
            return supervisor.SupFlags(strategy="one_for_one"), [(Counter, arg)]

    sup = supervisor.start_link(Sup, 5)
    (child,) = supervisor.which_children(sup)
    assert child.id is Counter
    assert gen_server.call(child.pid, "get") == 5
    supervisor.stop(sup)
