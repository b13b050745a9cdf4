"""gen_statem: states, events, postponing, inserted events and timeouts (OTP's
gen_statem rules, as in gen_statem_SUITE), on the mock clock."""

from __future__ import annotations

from typing import Any, NamedTuple

import pytest

from otp import gen_statem, proc_lib
from otp import sys as otp_sys
from otp.errors import CallError, CallTimeout, StartError
from otp.gen_statem import (
    Call,
    CallbackMode,
    EventTimeout,
    GenericTimeout,
    GenStatem,
    Hibernate,
    Ignore,
    KeepState,
    KeepStateAndData,
    NamedTimeout,
    NextEvent,
    NextState,
    Ok,
    Postpone,
    RepeatState,
    RepeatStateAndData,
    Reply,
    StateTimeout,
    Stop,
    StopAndReply,
)
from otp.process import (
    Down,
    Exit,
    monitor,
    receive,
    register,
    send,
    sleep,
    spawn,
    trap_exit,
    whereis,
)
from otp.process import exit as exit_signal
from otp.process import self as self_pid
from otp.testing import assert_receive, refute_receive, wait_all_blocked


class Ev(NamedTuple):
    """What the scripted machine reports for each event it handles."""

    state: Any
    event_type: Any
    content: Any


class Script(GenStatem):
    """Reports every event to its data (the test's pid) and returns what the event
    says: ``("return", r)`` returns ``r``; ``("answer", x)`` on a call replies ``x``."""

    callback_mode = CallbackMode.HANDLE_EVENT_FUNCTION

    def init(self, arg):
        state, actions = arg
        return Ok(state, self_pid_of_starter(), actions)

    def handle_event(self, event_type, content, state, data):
        send(data, Ev(state, event_type, content))
        match event_type, content:
            case Call(from_), ("answer", x):
                return KeepStateAndData(Reply(from_, x))
            case _, ("return", r):
                return r
        return KeepStateAndData()


class EnterScript(Script):
    state_enter = True


def self_pid_of_starter():
    """The test's pid: the process registered as "tester", else the machine's starter."""
    return whereis("tester") or proc_lib.ancestors()[0]


def do(r):
    return ("return", r)


def events(n):
    return [assert_receive(Ev) for _ in range(n)]


def start(state="a", actions=None, cls=Script):
    return gen_statem.start_link(cls, (state, actions))


# --- basics: the module doc's example, calls and casts ----------------------------------


class Lock(GenStatem):
    state_enter = True

    def init(self, code):
        return Ok("locked", {"code": code, "typed": ""})

    def locked(self, event_type, content, data):
        match event_type, content:
            case "enter", _:
                return KeepState({**data, "typed": ""})
            case Call(from_), ("press", digit):
                typed = data["typed"] + digit
                if typed == data["code"]:
                    return NextState("open", data, Reply(from_, "open"))
                return KeepState({**data, "typed": typed}, Reply(from_, "locked"))
        return KeepStateAndData()

    def open(self, event_type, content, data):
        match event_type, content:
            case "enter", _:
                return KeepStateAndData(StateTimeout(10.0, "lock"))
            case "state_timeout", "lock":
                return NextState("locked", data)
            case Call(from_), ("press", _):
                return KeepStateAndData(Reply(from_, "open"))
        return KeepStateAndData()


def test_state_functions_mode_calls_the_method_named_after_the_state(node, clock):
    pid = gen_statem.start_link(Lock, "12", name="lock")
    assert gen_statem.call("lock", ("press", "1")) == "locked"
    assert gen_statem.call("lock", ("press", "2")) == "open"
    assert gen_statem.call(pid, ("press", "9")) == "open"
    sleep(10.0)  # the node clock's time passes: the open state's timeout locks it
    assert gen_statem.call(pid, ("press", "1")) == "locked"
    gen_statem.stop("lock")
    assert whereis("lock") is None


def test_cast_and_info_arrive_as_events_in_order(node):
    pid = start()
    gen_statem.cast(pid, "c1")
    send(pid, "i1")
    gen_statem.cast(pid, "c2")
    assert events(3) == [Ev("a", "cast", "c1"), Ev("a", "info", "i1"), Ev("a", "cast", "c2")]
    gen_statem.stop(pid)


def test_call_event_carries_from_and_reply_action_answers(node):
    pid = start()
    assert gen_statem.call(pid, ("answer", 42)) == 42
    ev = assert_receive(Ev)
    assert isinstance(ev.event_type, Call) and ev.event_type.from_[0] == self_pid()
    gen_statem.stop(pid)


def test_g10_send_request_answers_only_through_its_own_alias(node):
    pid = start()
    req = gen_statem.send_request(pid, ("answer", 7))
    send(self_pid(), (req, "forged"))  # an ordinary message of any shape never answers
    assert gen_statem.receive_response(req, timeout=1.0) == 7
    assert_receive(Ev)
    assert receive(timeout=0, default=None) == (req, "forged")
    reqs = gen_statem.reqids_add(gen_statem.send_request(pid, ("answer", 1)), "one",
                                 gen_statem.reqids_new())
    answer = gen_statem.wait_response(reqs, timeout=1.0)
    assert (answer.ok, answer.value, answer.label) == (True, 1, "one")
    assert gen_statem.reqids_size(answer.reqids) == 0
    gen_statem.stop(pid)


def test_reply_can_come_from_a_later_state_through_reply(node):
    class Deferred(GenStatem):
        def init(self, _):
            return Ok("idle", None)

        def idle(self, event_type, content, data):
            if isinstance(event_type, Call):
                return NextState("waiting", event_type.from_)
            return KeepStateAndData()

        def waiting(self, event_type, content, data):
            if event_type == "cast":
                gen_statem.reply(data, ("done", content))
                return NextState("idle", None)
            return KeepStateAndData(Postpone())

    pid = gen_statem.start_link(Deferred)
    spawn(gen_statem.cast, pid, "late")  # postponed in idle, handled in waiting
    assert gen_statem.call(pid, "go") == ("done", "late")
    gen_statem.stop(pid)


def test_call_errors_are_gen_servers_noproc_calling_self_and_timeout(node, clock):
    with pytest.raises(CallError) as ei:
        gen_statem.call("nobody", "x")
    assert ei.value.reason == "noproc"
    with pytest.raises(CallError) as ei:
        gen_statem.call(self_pid(), "x")
    assert ei.value.reason == "calling_self"
    pid = start()
    t0 = clock.now()
    with pytest.raises(CallTimeout) as et:
        gen_statem.call(pid, "no answer")  # the machine keeps the call unanswered
    assert et.value.timeout == 5.0 and clock.now() - t0 == pytest.approx(5.0)
    assert_receive(Ev)
    gen_statem.stop(pid)
    wait_all_blocked()
    refute_receive(None, timeout=0)


def test_cast_to_a_missing_name_is_dropped(node):
    gen_statem.cast("nobody", "x")


# --- init -------------------------------------------------------------------------------------


def test_init_ignore_returns_none_and_stop_fails_the_start(node):
    class Ignoring(GenStatem):
        def init(self, arg):
            return Ignore() if arg == "ignore" else Stop(("no", arg))

    assert gen_statem.start_link(Ignoring, "ignore") is None
    with pytest.raises(StartError) as ei:
        gen_statem.start_link(Ignoring, "x", name="ig")
    assert ei.value.reason == ("no", "x")
    assert whereis("ig") is None


def test_init_bad_return_fails_the_start_with_bad_return_from_init(node):
    class Bad(GenStatem):
        def init(self, arg):
            return ("ok", "a", None)

    with pytest.raises(StartError) as ei:
        gen_statem.start(Bad)
    assert ei.value.reason == ("bad_return_from_init", ("ok", "a", None))


def test_name_already_taken_fails_the_start_with_already_started(node):
    pid = gen_statem.start_link(Script, ("a", None), name="m")
    with pytest.raises(StartError) as ei:
        gen_statem.start_link(Script, ("a", None), name="m")
    assert ei.value.reason == ("already_started", pid)
    gen_statem.stop(pid)


def test_init_actions_insert_events_before_any_message(node):
    pid = start("a", [NextEvent("internal", 1), NextEvent("internal", 2)])
    assert events(2) == [Ev("a", "internal", 1), Ev("a", "internal", 2)]
    gen_statem.stop(pid)


# --- state enter calls ------------------------------------------------------------------------


def test_enter_call_runs_for_the_initial_state_with_itself_as_old_state(node):
    pid = start("a", cls=EnterScript)
    assert events(1) == [Ev("a", "enter", "a")]
    gen_statem.stop(pid)


def test_enter_call_runs_on_state_change_and_repeat_state_but_not_keep_state(node):
    pid = start("a", cls=EnterScript)
    events(1)
    me = self_pid()
    gen_statem.cast(pid, do(NextState("b", me)))
    assert events(2) == [Ev("a", "cast", do(NextState("b", me))), Ev("b", "enter", "a")]
    gen_statem.cast(pid, do(KeepState(me)))
    gen_statem.cast(pid, do(NextState("b", me)))  # the same state: no change
    gen_statem.cast(pid, do(RepeatStateAndData()))
    got = events(4)
    assert [e.event_type for e in got] == ["cast", "cast", "cast", "enter"]
    assert got[3] == Ev("b", "enter", "b")
    gen_statem.cast(pid, do(RepeatState(me)))
    assert [e.event_type for e in events(2)] == ["cast", "enter"]
    gen_statem.stop(pid)


def test_enter_call_cannot_change_state(node):
    class Changer(EnterScript):
        def init(self, arg):
            return Ok("a", self_pid_of_starter())

        def handle_event(self, event_type, content, state, data):
            if event_type == "enter" and state == "b":
                return NextState("c", data)
            return super().handle_event(event_type, content, state, data)

    trap_exit(True)
    pid = gen_statem.start_link(Changer)
    gen_statem.cast(pid, do(NextState("b", self_pid())))
    reason = assert_receive(Exit).reason
    assert reason == ("bad_state_enter_return_from_state_function", NextState("c", self_pid()))


@pytest.mark.parametrize("action", [Postpone(), NextEvent("internal", 1)])
def test_enter_call_cannot_postpone_or_insert_events(node, action):
    class Inserter(EnterScript):
        def handle_event(self, event_type, content, state, data):
            if event_type == "enter" and state == "b":
                return KeepStateAndData([action])
            return super().handle_event(event_type, content, state, data)

    trap_exit(True)
    pid = start("a", cls=Inserter)
    gen_statem.cast(pid, do(NextState("b", self_pid())))
    reason = assert_receive(Exit).reason
    assert reason == ("bad_state_enter_action_from_state_function", action)
    del pid


def test_enter_call_may_keep_the_state_and_set_timeouts_and_data(node, clock):
    pid = start("a", cls=EnterScript)
    events(1)
    t0 = clock.now()
    gen_statem.cast(pid, do(NextState("b", self_pid())))
    assert [e.event_type for e in events(2)] == ["cast", "enter"]
    # (EnterScript's enter call keeps state and data; the Lock shows StateTimeout.)
    assert clock.now() == t0
    gen_statem.stop(pid)


# --- postpone -----------------------------------------------------------------------------


def test_postponed_event_is_retried_after_state_change(node):
    pid = start("a")
    me = self_pid()
    gen_statem.cast(pid, do(KeepStateAndData(Postpone())))
    gen_statem.cast(pid, ("x", 1))
    gen_statem.cast(pid, do(NextState("b", me)))
    got = events(4)
    assert got[0].state == "a" and got[1] == Ev("a", "cast", ("x", 1))
    assert got[2] == Ev("a", "cast", do(NextState("b", me)))
    # In state b the postponed event comes back (and postpones itself again).
    assert got[3] == Ev("b", "cast", do(KeepStateAndData(Postpone())))
    gen_statem.stop(pid)


def test_postponed_events_are_retried_in_their_original_order(node):
    pid = start("a")
    me = self_pid()
    p1 = do(KeepStateAndData((Postpone(),)))
    gen_statem.cast(pid, p1)
    send(pid, p1)
    gen_statem.cast(pid, do(NextState("b", me, Postpone())))  # postpones itself too
    events(3)
    got = events(3)
    assert got == [
        Ev("b", "cast", p1),
        Ev("b", "info", p1),
        Ev("b", "cast", do(NextState("b", me, Postpone()))),
    ]
    gen_statem.stop(pid)


def test_postponed_event_is_not_retried_without_state_change(node):
    pid = start("a")
    me = self_pid()
    gen_statem.cast(pid, do(KeepStateAndData(Postpone())))
    gen_statem.cast(pid, do(KeepState(me)))
    gen_statem.cast(pid, do(NextState("a", me)))
    gen_statem.cast(pid, do(RepeatStateAndData()))
    events(4)
    gen_statem.cast(pid, "probe")
    assert events(1) == [Ev("a", "cast", "probe")]
    gen_statem.stop(pid)


# --- inserted events ---------------------------------------------------------------------------


def test_next_event_is_handled_before_queued_messages(node):
    pid = start("a")
    otp_sys.suspend(pid)
    gen_statem.cast(pid, do(KeepStateAndData((NextEvent("internal", 1), NextEvent("cast", 2)))))
    gen_statem.cast(pid, "queued")
    otp_sys.resume(pid)
    got = events(4)
    assert [(e.event_type, e.content) for e in got[1:]] == [
        ("internal", 1),
        ("cast", 2),
        ("cast", "queued"),
    ]
    gen_statem.stop(pid)


def test_next_events_come_before_postponed_events_on_a_state_change(node):
    pid = start("a")
    me = self_pid()
    gen_statem.cast(pid, do(KeepStateAndData(Postpone())))
    gen_statem.cast(pid, do(NextState("b", me, NextEvent("internal", "first"))))
    events(2)
    got = events(2)
    assert got[0] == Ev("b", "internal", "first")
    assert got[1] == Ev("b", "cast", do(KeepStateAndData(Postpone())))
    gen_statem.stop(pid)


# --- timeouts (mock clock) ---------------------------------------------------------------------


def test_state_timeout_fires_after_its_time_in_the_same_state(node, clock):
    pid = start("a")
    t0 = clock.now()
    gen_statem.cast(pid, do(KeepStateAndData(StateTimeout(3.0, "st"))))
    events(1)
    assert events(1) == [Ev("a", "state_timeout", "st")]
    assert clock.now() - t0 == pytest.approx(3.0)
    gen_statem.stop(pid)


def test_state_timeout_is_cancelled_by_state_change(node, clock):
    pid = start("a")
    me = self_pid()
    gen_statem.cast(pid, do(KeepStateAndData(StateTimeout(3.0, "st"))))
    gen_statem.cast(pid, do(NextState("b", me)))
    events(2)
    refute_receive(Ev, timeout=10.0)
    gen_statem.stop(pid)


def test_state_timeout_is_kept_by_events_that_keep_the_state(node, clock):
    pid = start("a")
    me = self_pid()
    gen_statem.cast(pid, do(KeepStateAndData(StateTimeout(3.0, "st"))))
    gen_statem.cast(pid, do(KeepState(me)))
    gen_statem.cast(pid, do(RepeatStateAndData()))
    events(3)
    assert events(1) == [Ev("a", "state_timeout", "st")]
    gen_statem.stop(pid)


def test_zero_state_timeout_is_cancelled_by_a_state_change_before_it_fires(node):
    # The timeout waits behind an inserted event that changes the state.
    pid = start("a")
    me = self_pid()
    gen_statem.cast(
        pid,
        do(
            KeepStateAndData(
                (StateTimeout(0, "st"), NextEvent("internal", do(NextState("b", me))))
            )
        ),
    )
    events(2)
    refute_receive(Ev, timeout=1.0)
    gen_statem.stop(pid)


def test_event_timeout_fires_when_no_event_arrives(node, clock):
    pid = start("a")
    t0 = clock.now()
    gen_statem.cast(pid, do(KeepStateAndData(EventTimeout(2.0, "idle"))))
    events(1)
    assert events(1) == [Ev("a", "timeout", "idle")]
    assert clock.now() - t0 == pytest.approx(2.0)
    gen_statem.stop(pid)


def test_event_timeout_is_cancelled_by_any_event(node, clock):
    pid = start("a")
    gen_statem.cast(pid, do(KeepStateAndData(EventTimeout(2.0, "idle"))))
    events(1)
    send(pid, "anything")
    assert events(1) == [Ev("a", "info", "anything")]
    refute_receive(Ev, timeout=10.0)
    gen_statem.stop(pid)


def test_event_timeout_is_not_cancelled_by_system_messages(node):
    pid = start("a")
    gen_statem.cast(pid, do(KeepStateAndData(EventTimeout(2.0, "idle"))))
    events(1)
    assert otp_sys.get_state(pid) == ("a", self_pid())
    assert events(1) == [Ev("a", "timeout", "idle")]
    gen_statem.stop(pid)


def test_event_timeout_is_cancelled_by_an_inserted_event(node):
    pid = start("a")
    gen_statem.cast(
        pid, do(KeepStateAndData((EventTimeout(0, "idle"), NextEvent("internal", "x"))))
    )
    assert [e.content for e in events(2)][1] == "x"
    refute_receive(Ev, timeout=5.0)
    gen_statem.stop(pid)


def test_generic_timeouts_are_independent_by_name_and_survive_state_changes(node, clock):
    pid = start("a")
    me = self_pid()
    t0 = clock.now()
    gen_statem.cast(
        pid,
        do(NextState("b", me, (GenericTimeout("t1", 2.0, "one"), GenericTimeout("t2", 1.0, 2)))),
    )
    events(1)
    send(pid, "an event")
    got = events(3)
    assert got[0].event_type == "info"
    assert got[1] == Ev("b", NamedTimeout("t2"), 2)
    assert got[2] == Ev("b", NamedTimeout("t1"), "one")
    assert clock.now() - t0 == pytest.approx(2.0)
    gen_statem.stop(pid)


def test_timeout_none_cancels_a_running_timeout(node):
    pid = start("a")
    gen_statem.cast(pid, do(KeepStateAndData((GenericTimeout("g", 1.0), StateTimeout(1.0)))))
    gen_statem.cast(pid, do(KeepStateAndData((GenericTimeout("g", None), StateTimeout(None)))))
    events(2)
    refute_receive(Ev, timeout=5.0)
    gen_statem.stop(pid)


def test_restarting_a_timeout_replaces_it_even_when_the_old_one_already_fired(node, clock):
    class Busy(Script):
        def handle_event(self, event_type, content, state, data):
            if content == "busy":
                receive(lambda m: False, 2.0, default=None)  # the 1 s timer fires meanwhile
                send(data, Ev(state, event_type, content))
                return KeepStateAndData(StateTimeout(5.0, "second"))
            return super().handle_event(event_type, content, state, data)

    pid = gen_statem.start_link(Busy, ("a", None))
    t0 = clock.now()
    gen_statem.cast(pid, do(KeepStateAndData(StateTimeout(1.0, "first"))))
    gen_statem.cast(pid, "busy")
    events(2)
    assert events(1) == [Ev("a", "state_timeout", "second")]
    assert clock.now() - t0 == pytest.approx(7.0)
    refute_receive(Ev, timeout=5.0)
    gen_statem.stop(pid)


def test_zero_timeout_fires_after_queued_events_but_before_messages(node):
    pid = start("a")
    otp_sys.suspend(pid)
    gen_statem.cast(
        pid, do(KeepStateAndData((GenericTimeout("z", 0, "zero"), NextEvent("internal", 1))))
    )
    gen_statem.cast(pid, "message")
    otp_sys.resume(pid)
    got = events(4)
    assert [(e.event_type, e.content) for e in got[1:]] == [
        ("internal", 1),
        (NamedTimeout("z"), "zero"),
        ("cast", "message"),
    ]
    gen_statem.stop(pid)


# --- stop, terminate, bad returns ------------------------------------------------------------


class Terminated(NamedTuple):
    reason: Any
    state: Any
    data: Any


class Terminating(Script):
    def terminate(self, reason, state, data):
        send(self_pid_of_starter(), Terminated(reason, state, data))


def test_stop_return_runs_terminate_with_state_and_new_data(node):
    pid = gen_statem.start(Terminating, ("a", None))
    ref = monitor(pid)
    gen_statem.cast(pid, do(Stop("normal", "last data")))
    assert assert_receive(Terminated) == Terminated("normal", "a", "last data")
    assert assert_receive(Down).reason == "normal"
    del ref


def test_stop_and_reply_replies_then_terminates(node):
    class Stopper(Terminating):
        def handle_event(self, event_type, content, state, data):
            if isinstance(event_type, Call):
                return StopAndReply("normal", [Reply(event_type.from_, "bye")])
            return super().handle_event(event_type, content, state, data)

    pid = gen_statem.start(Stopper, ("a", None))
    ref = monitor(pid)
    assert gen_statem.call(pid, "stop") == "bye"
    assert assert_receive(Terminated).reason == "normal"
    assert assert_down_reason(ref) == "normal"


def assert_down_reason(ref):
    return assert_receive(lambda m: isinstance(m, Down) and m.ref == ref).reason


def test_stop_api_runs_terminate_and_waits(node):
    pid = gen_statem.start(Terminating, ("a", None))
    gen_statem.stop(pid, "shutdown")
    assert assert_receive(Terminated) == Terminated("shutdown", "a", self_pid())
    with pytest.raises(CallError) as ei:
        gen_statem.stop(pid)
    assert ei.value.reason == "noproc"


@pytest.mark.parametrize(
    "bad, reason",
    [
        (("next_state", "b"), ("bad_return_from_state_function", ("next_state", "b"))),
        (KeepStateAndData("postpone"), ("bad_action_from_state_function", "postpone")),
        (
            KeepStateAndData(StateTimeout(-1)),
            ("bad_action_from_state_function", StateTimeout(-1)),
        ),
    ],
)
def test_bad_return_or_action_stops_the_machine_with_otps_reason(node, bad, reason):
    trap_exit(True)
    pid = start("a")
    gen_statem.cast(pid, do(bad))
    assert assert_receive(Exit).reason == reason


def test_undefined_state_function_stops_with_undef_state_function(node):
    class Two(GenStatem):
        def init(self, _):
            return Ok("one", None)

        def one(self, event_type, content, data):
            return NextState("missing", data)

    trap_exit(True)
    pid = gen_statem.start_link(Two)
    gen_statem.cast(pid, "go")
    gen_statem.cast(pid, "next")  # handled in the state "missing"
    assert assert_receive(Exit) == Exit(pid, ("undef_state_function", "missing"))


def test_parent_exit_runs_terminate_when_trapping(node):
    class Trapper(Terminating):
        def init(self, arg):
            trap_exit(True)
            return super().init(arg)

    me = self_pid()

    def parent():
        gen_statem.start_link(Trapper, ("a", None))
        send(me, "started")
        receive()

    register("tester", me)
    p = spawn(parent)
    assert_receive("started")
    exit_signal(p, "shutdown")
    assert assert_receive(Terminated)[:2] == ("shutdown", "a")


def test_hibernate_is_accepted_as_a_hint(node):
    pid = start("a")
    gen_statem.cast(pid, do(KeepStateAndData(Hibernate())))
    gen_statem.cast(pid, "after")
    assert events(2)[1].content == "after"
    gen_statem.stop(pid)


def test_module_doc_example_runs():
    import re
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(re.search(r"::\n\n((?:    .*\n|\n)+)", gen_statem.__doc__).group(1))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr


def test_init_that_raises_fails_the_start_with_the_exception(node):
    class Raises(GenStatem):
        def init(self, arg):
            raise ValueError("no")

    with pytest.raises(StartError) as ei:
        gen_statem.start(Raises, name="r")
    assert isinstance(ei.value.reason, ValueError)
    assert whereis("r") is None


def test_handle_event_function_states_may_be_any_value_with_enter_calls(node):
    pid = start(("door", 1), cls=EnterScript)
    assert events(1) == [Ev(("door", 1), "enter", ("door", 1))]
    gen_statem.cast(pid, do(NextState(("door", 2), self_pid())))
    assert events(2)[1] == Ev(("door", 2), "enter", ("door", 1))
    gen_statem.stop(pid)


def test_repeat_state_from_an_enter_call_runs_the_enter_call_again(node):
    class Twice(EnterScript):
        def handle_event(self, event_type, content, state, data):
            if event_type == "enter" and state == "b":
                send(data[0], Ev(state, event_type, data[1]))
                if data[1] == 0:
                    return RepeatState((data[0], 1))
                return KeepState(data[0])
            return super().handle_event(event_type, content, state, data)

    pid = start("a", cls=Twice)
    events(1)
    gen_statem.cast(pid, do(NextState("b", (self_pid(), 0))))
    assert [e.content for e in events(3)[1:]] == [0, 1]
    assert otp_sys.get_state(pid) == ("b", self_pid())
    gen_statem.stop(pid)


def test_stop_and_reply_may_set_the_data_terminate_sees(node):
    class Stopper(Terminating):
        def handle_event(self, event_type, content, state, data):
            if isinstance(event_type, Call):
                return StopAndReply("normal", Reply(event_type.from_, "bye"), "final")
            return super().handle_event(event_type, content, state, data)

    pid = gen_statem.start(Stopper, ("a", None))
    assert gen_statem.call(pid, "stop") == "bye"
    assert assert_receive(Terminated) == Terminated("normal", "a", "final")


def test_start_timeout_kills_a_slow_init(node):
    class Slow(GenStatem):
        def init(self, arg):
            sleep(10.0)
            return Ok("a", None)

    with pytest.raises(StartError) as ei:
        gen_statem.start(Slow, timeout=1.0)
    assert ei.value.reason == "timeout"


def test_zero_event_timeout_fires_before_messages_not_yet_received(node):
    pid = start("a")
    otp_sys.suspend(pid)
    gen_statem.cast(pid, do(KeepStateAndData(EventTimeout(0, "now"))))
    send(pid, "waiting in the mailbox")
    otp_sys.resume(pid)
    got = events(3)
    assert [(e.event_type, e.content) for e in got[1:]] == [
        ("timeout", "now"),
        ("info", "waiting in the mailbox"),
    ]
    gen_statem.stop(pid)


def test_restarting_a_generic_timeout_of_the_same_name_replaces_it(node, clock):
    pid = start("a")
    t0 = clock.now()
    gen_statem.cast(pid, do(KeepStateAndData(GenericTimeout("g", 1.0, "first"))))
    gen_statem.cast(pid, do(KeepStateAndData(GenericTimeout("g", 3.0, "second"))))
    events(2)
    assert events(1) == [Ev("a", NamedTimeout("g"), "second")]
    assert clock.now() - t0 == pytest.approx(3.0)
    refute_receive(Ev, timeout=5.0)
    gen_statem.stop(pid)


def test_stop_without_data_keeps_the_data_and_is_a_sendable_value(node):
    pid = gen_statem.start(Terminating, ("a", None))
    gen_statem.cast(pid, do(Stop("normal")))  # (a record in a message: immutable)
    assert assert_receive(Terminated) == Terminated("normal", "a", self_pid())
