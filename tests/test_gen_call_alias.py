"""The call and request protocol on aliases: docs/semantics.md G10.

A call's reply is accepted only through the call's own alias: no ordinary message,
whatever its shape, can answer a pending call, and a second or late reply never
reaches the caller's mailbox. ``send_request``/``receive_response`` follow the same rule.
"""

from __future__ import annotations

import pytest

from otp import gen_server
from otp import sys as otp_sys
from otp.errors import CallError, CallTimeout
from otp.gen_server import (
    NO_RESPONSE,
    Answer,
    GenServer,
    NoReply,
    Ok,
    Reply,
    Response,
    check_response,
    receive_response,
    reqids_add,
    reqids_new,
    reqids_size,
    reqids_to_list,
    send_request,
    wait_response,
)
from otp.process import ANY, Down, Ref, exit, flush, make_ref, monitor, receive, send, spawn
from otp.process import self as self_pid
from otp.testing import assert_receive, refute_receive, wait_all_blocked


class Slow(GenServer):
    """Never answers on its own; ``("answer", ...)`` casts answer the held callers."""

    def init(self, owner):
        return Ok((owner, ()))

    def handle_call(self, request, from_, state):
        owner, held = state
        match request:
            case "twice":
                gen_server.reply(from_, "first")
                return Reply("second", state)
            case ("echo", value):
                return Reply(value, state)
            case ("die", reason):
                return gen_server.Stop(reason, state)
            case ("reply then die", reason):
                gen_server.reply(from_, "last words")
                return gen_server.Stop(reason, state)
        if owner is not None:
            send(owner, ("held", request))
        return NoReply((owner, (*held, from_)))

    def handle_cast(self, request, state):
        owner, held = state
        match request:
            case ("answer all", value):
                for from_ in held:
                    gen_server.reply(from_, value)
                return NoReply((owner, ()))
        return super().handle_cast(request, state)


def _flood(me, n=20):
    # Messages shaped like every reply the old protocol accepted: (small int, value),
    # and a Down for every small monitor id.
    for i in range(1, n):
        send(me, (i, "payload from peer"))


def test_g10_no_ordinary_message_answers_a_pending_call(node):
    me = self_pid()
    srv = gen_server.start(Slow, None)
    spawn(_flood, me)
    with pytest.raises(CallTimeout):
        gen_server.call(srv, "question", timeout=1.0)
    assert len(flush()) == 19  # the peer's messages are all still there
    gen_server.stop(srv)


def test_g10_messages_of_any_shape_arriving_during_a_call_stay_in_the_mailbox(node):
    me = self_pid()
    srv = gen_server.start(Slow, me)

    def requester():
        value = gen_server.call(srv, "question")
        send(me, ("called", value, len(flush())))

    caller = spawn(requester)
    assert_receive(("held", "question"))  # the caller waits in its call now
    _flood(caller)
    send(caller, Response(make_ref(), "a response to some other request"))
    send(caller, Down(make_ref(), srv, "a Down of some other monitor"))
    gen_server.cast(srv, ("answer all", "the real answer"))
    assert_receive(("called", "the real answer", 21))
    gen_server.stop(srv)


def test_g10_the_call_takes_the_first_reply_and_a_second_is_dropped(node):
    srv = gen_server.start(Slow, None)
    assert gen_server.call(srv, "twice") == "first"
    wait_all_blocked()
    refute_receive()  # the second reply reached no mailbox
    gen_server.stop(srv)


def test_g10_a_late_reply_after_the_timeout_is_dropped(node):
    me = self_pid()
    srv = gen_server.start(Slow, me)
    with pytest.raises(CallTimeout):
        gen_server.call(srv, "question", timeout=1.0)
    assert_receive(("held", "question"))
    gen_server.cast(srv, ("answer all", "too late"))
    assert gen_server.call(srv, ("echo", "next")) == "next"
    refute_receive()
    gen_server.stop(srv)


def test_g10_a_server_that_replies_then_dies_leaves_no_down_behind(node):
    srv = gen_server.start(Slow, None)
    ref = monitor(srv)
    assert gen_server.call(srv, ("reply then die", "normal")) == "last words"
    assert receive(Down) == Down(ref, srv, "normal")  # only the test's own monitor
    refute_receive()


def test_g10_a_server_dying_during_the_call_fails_it_with_its_reason(node):
    srv = gen_server.start(Slow, None)
    with pytest.raises(CallError) as ei:
        gen_server.call(srv, ("die", "boom"))
    assert ei.value.reason == "boom"
    refute_receive()


def test_g10_sys_calls_ignore_ordinary_messages_too(node):
    me = self_pid()
    srv = gen_server.start(Slow, None)
    _flood(me)
    assert otp_sys.get_state(srv) == (None, ())
    assert len(flush()) == 19
    gen_server.stop(srv)


# --- send_request and its family ------------------------------------------------------


def test_g10_send_request_then_receive_response_gets_the_reply(node):
    srv = gen_server.start(Slow, None)
    req = send_request(srv, ("echo", 42))
    assert receive_response(req) == 42
    refute_receive()  # no Down, no second anything
    gen_server.stop(srv)


def test_g10_receive_response_ignores_ordinary_messages_of_any_shape(node):
    me = self_pid()
    srv = gen_server.start(Slow, me)
    req = send_request(srv, "question")
    assert_receive(("held", "question"))
    _flood(me)
    # Equal refs, made by someone who does not hold the request's own (as a peer that
    # guessed the ids would): not the request's answer.
    send(me, Response(Ref(req.alias.node, req.alias.id), "forged response"))
    send(me, Down(Ref(req.monitor.node, req.monitor.id), srv, "forged down"))
    with pytest.raises(CallTimeout):
        receive_response(req, 1.0)
    left = flush()  # (abandoning flushes the monitor's Down, the forged one included)
    assert len([m for m in left if m[1] == "payload from peer"]) == 19
    assert Response(req.alias, "forged response") in left
    gen_server.stop(srv)


def test_g10_receive_response_abandons_at_timeout_so_a_late_reply_is_dropped(node):
    me = self_pid()
    srv = gen_server.start(Slow, me)
    req = send_request(srv, "question")
    with pytest.raises(CallTimeout):
        receive_response(req, 1.0)
    gen_server.cast(srv, ("answer all", "late"))
    assert gen_server.call(srv, ("echo", "sync")) == "sync"
    assert flush() == [("held", "question")]
    gen_server.stop(srv)


def test_g10_wait_response_keeps_the_request_at_timeout(node):
    me = self_pid()
    srv = gen_server.start(Slow, me)
    req = send_request(srv, "question")
    with pytest.raises(CallTimeout):
        wait_response(req, 1.0)
    gen_server.cast(srv, ("answer all", "in the end"))
    assert wait_response(req, 1.0) == "in the end"
    assert flush() == [("held", "question")]
    gen_server.stop(srv)


def test_g10_a_second_response_to_a_request_is_dropped(node):
    srv = gen_server.start(Slow, None)
    assert receive_response(send_request(srv, "twice")) == "first"
    wait_all_blocked()
    refute_receive()
    gen_server.stop(srv)


def test_g10_a_request_to_a_dying_or_missing_server_fails_with_its_reason(node):
    srv = gen_server.start(Slow, None)
    with pytest.raises(CallError) as ei:
        receive_response(send_request(srv, ("die", "boom")))
    assert ei.value.reason == "boom"
    with pytest.raises(CallError) as ei:
        receive_response(send_request(srv, "anyone?"))
    assert ei.value.reason == "noproc"
    with pytest.raises(CallError) as ei:
        receive_response(send_request("nobody", "anyone?"))
    assert ei.value.reason == "noproc"
    refute_receive()


def test_g10_check_response_recognises_the_answer_among_received_messages(node):
    srv = gen_server.start(Slow, None)
    req = send_request(srv, ("echo", "hi"))
    send(self_pid(), ("unrelated", 1))
    first = receive()
    assert check_response(first, req) is NO_RESPONSE
    second = receive()
    assert second.__class__ is Response
    assert check_response(second, req) == "hi"
    gen_server.stop(srv)


def test_g10_a_request_collection_answers_each_request_once_with_its_label(node):
    a = gen_server.start(Slow, None)
    b = gen_server.start(Slow, None)
    reqs = reqids_new()
    reqs = reqids_add(send_request(a, ("echo", "from a")), "a", reqs)
    reqs = reqids_add(send_request(b, ("die", "boom")), "b", reqs)
    assert reqids_size(reqs) == 2
    assert sorted(label for _, label in reqids_to_list(reqs)) == ["a", "b"]
    got = {}
    while reqids_size(reqs):
        answer = receive_response(reqs, 5.0)
        assert isinstance(answer, Answer)
        got[answer.label] = (answer.ok, answer.value)
        reqs = answer.reqids
    assert got == {"a": (True, "from a"), "b": (False, "boom")}
    assert receive_response(reqs) is None  # an empty collection
    refute_receive()
    gen_server.stop(a)


def test_g10_check_response_with_a_collection(node):
    srv = gen_server.start(Slow, None)
    r1 = send_request(srv, ("echo", 1))
    r2 = send_request(srv, ("echo", 2))
    reqs = reqids_add(r2, "two", reqids_add(r1, "one", reqids_new()))
    wait_all_blocked()
    answer = check_response(receive(), reqs, delete=False)
    assert (answer.ok, answer.value, answer.label) == (True, 1, "one")
    assert reqids_size(answer.reqids) == 2  # delete=False keeps it
    answer = check_response(receive(), answer.reqids)
    assert (answer.value, answer.label, reqids_size(answer.reqids)) == (2, "two", 1)
    assert check_response(("other", ANY), reqs) is NO_RESPONSE
    assert check_response("x", reqids_new()) is None
    gen_server.stop(srv)


def test_g10_a_server_answers_a_request_from_another_servers_handle_info(node):
    # A server may make requests itself and recognise the answers in handle_info.
    echo = gen_server.start(Slow, None)

    class Asker(GenServer):
        def init(self, _):
            return Ok(None)

        def handle_call(self, request, from_, state):
            return NoReply((from_, send_request(echo, ("echo", request))))

        def handle_info(self, msg, state):
            from_, req = state
            value = check_response(msg, req)
            if value is NO_RESPONSE:
                return super().handle_info(msg, state)
            gen_server.reply(from_, ("relayed", value))
            return NoReply(None)

    asker = gen_server.start(Asker, None)
    assert gen_server.call(asker, "ping") == ("relayed", "ping")
    gen_server.stop(asker)
    gen_server.stop(echo)


def test_g10_a_caller_killed_during_a_request_drops_the_answer(node):
    me = self_pid()
    srv = gen_server.start(Slow, me)
    caller = spawn(lambda: receive_response(send_request(srv, "question"), None))
    assert_receive(("held", "question"))
    exit(caller, "kill")
    gen_server.cast(srv, ("answer all", "to nobody"))
    assert gen_server.call(srv, ("echo", "sync")) == "sync"
    refute_receive()
    gen_server.stop(srv)


def test_g10_from_is_the_callers_pid_and_an_alias(node):
    me = self_pid()
    srv = gen_server.start(Slow, me)

    class Peek(GenServer):
        def init(self, _):
            return Ok(None)

        def handle_call(self, request, from_, state):
            return Reply(from_, state)

    peek = gen_server.start(Peek, None)
    from_ = gen_server.call(peek, "from?")
    assert from_[0] == me
    req = send_request(peek, "from?")
    from_req = receive_response(req)
    assert from_req[0] == me and from_req[1].__class__ is Ref
    gen_server.stop(peek)
    gen_server.stop(srv)


def test_g10_a_call_with_timeout_zero_leaves_no_monitor_and_drops_the_reply(node):
    from otp.process import process_info

    me = self_pid()
    srv = gen_server.start(Slow, me)
    with pytest.raises(CallTimeout):
        gen_server.call(srv, "question", timeout=0)
    assert process_info(srv).monitored_by == ()
    assert_receive(("held", "question"))
    gen_server.cast(srv, ("answer all", "too late"))
    assert gen_server.call(srv, ("echo", "sync")) == "sync"
    refute_receive()
    gen_server.stop(srv)
