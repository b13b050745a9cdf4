"""End-to-end tests of the chat server over real loopback sockets, plain and TLS.

Each test starts the whole application (port 0) inside its node and talks to it with
the client library, as a device would. Named after the rule of docs/semantics.md they check.
"""

from __future__ import annotations

import time

import pytest

from chat import connection, store, users
from chat.client import ChatClosed, ChatError
from otp import sys as otp_sys
from otp.process import sleep, whereis
from tests.chat_helpers import running_chat

pytestmark = pytest.mark.otp(clock="real")

A, B, C = "+14155550100", "+14155550111", "+14155550122"
both = pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])


def msgs(evs):
    return [e for e in evs if e["t"] == "msg"]


def receipts(evs, kind):
    return [e["mid"] for e in evs if e["t"] == "receipt" and e["type"] == kind]


def pushed_unacked(client):
    """Poll without acknowledging until a message has been pushed; its events."""
    got = client.poll(5.0, ack=False)
    while not msgs(got):
        got += client.poll(1.0, ack=False)
    return got


@both
def test_c4_message_flows_with_sent_delivered_read_receipts(node, tmp_path, tls):
    with running_chat(tmp_path, tls=tls) as srv:
        a = srv.user(A)
        b = srv.user(B)
        r = a.send(B, "hello")
        got = b.wait_for(lambda evs: msgs(evs))
        msg = msgs(got)[0]
        assert (msg["mid"], msg["from"], msg["body"]) == (r.mid, A, "hello")
        b.read(A, [r.mid])
        evs = a.wait_for(lambda evs: {e["type"] for e in evs} >= {"sent", "delivered", "read"})
        assert [e["type"] for e in evs if e["mid"] == r.mid] == ["sent", "delivered", "read"]


@both
def test_c1_messages_arrive_once_in_per_sender_order(node, tmp_path, tls):
    with running_chat(tmp_path, tls=tls) as srv:
        a, b, c = srv.user(A), srv.user(B), srv.user(C)
        sent_a = [a.send(C, f"a{i}").mid for i in range(30)]
        sent_b = [b.send(C, b"b%d" % i).mid for i in range(30)]
        got = c.wait_for(lambda evs: len(msgs(evs)) >= 60)
        assert len(msgs(got)) == 60
        assert [m["mid"] for m in msgs(got) if m["from"] == A] == sent_a
        assert [m["mid"] for m in msgs(got) if m["from"] == B] == sent_b
        assert [m["body"] for m in msgs(got) if m["from"] == B][:2] == [b"b0", b"b1"]


def test_c1_offline_recipient_gets_its_queue_in_order_at_next_login_and_a_push(
        node, tmp_path):
    with running_chat(tmp_path) as srv:
        b = srv.user(B)
        key_b = b.key
        b.bye()
        a = srv.user(A)
        mids = [a.send(B, f"m{i}").mid for i in range(20)]
        a.wait_for(lambda evs: len(receipts(evs, "sent")) == 20)
        assert srv.push.calls and srv.push.calls[0][0] == B
        b2 = srv.client()
        assert b2.login(B, key_b) == 20
        got = b2.wait_for(lambda evs: len(msgs(evs)) >= 20)
        assert [m["mid"] for m in msgs(got)] == mids


def test_c2_resent_client_message_id_is_stored_and_delivered_once(node, tmp_path):
    with running_chat(tmp_path) as srv:
        a, b = srv.user(A), srv.user(B)
        r1 = a.send(B, "once", cmid="c-1")
        r2 = a.send(B, "once", cmid="c-1")  # the device did not see the reply: resend
        assert r1.mid == r2.mid
        a.send(B, "after", cmid="c-2")
        got = b.wait_for(lambda evs: len(msgs(evs)) >= 2)
        assert [m["body"] for m in msgs(got)] == ["once", "after"]
        b.ping()
        assert msgs(b.poll(0.2)) == []


def test_c3_acknowledged_message_is_deleted_from_the_server(node, tmp_path):
    with running_chat(tmp_path) as srv:
        a, b = srv.user(A), srv.user(B)
        a.send(B, "x")
        b.wait_for(lambda evs: msgs(evs))  # poll acknowledges
        a.wait_for(lambda evs: receipts(evs, "delivered"))  # after the ack was handled
        loaded = store.read(("load", B))
        assert [i for i in loaded.inbox if i[2] == "msg"] == []
        key = b.key
        b.bye()
        again = srv.client()
        assert again.login(B, key) == 0


def test_c3_unacknowledged_message_is_pushed_again_at_next_login(node, tmp_path):
    with running_chat(tmp_path) as srv:
        a, b = srv.user(A), srv.user(B)
        r = a.send(B, "x")
        evs = []
        while not msgs(evs):
            evs = b.poll(1.0, ack=False)
        key = b.key
        b.bye()
        b2 = srv.client()
        assert b2.login(B, key) == 1
        got = b2.wait_for(lambda evs: msgs(evs))
        assert msgs(got)[0]["mid"] == r.mid


@pytest.mark.parametrize("idle_stop", [30.0, 0.05], ids=["process_kept", "process_stopped"])
def test_c4_receipts_to_an_offline_sender_are_queued(node, tmp_path, idle_stop):
    with running_chat(tmp_path, users={"idle_stop": idle_stop}) as srv:
        a, b = srv.user(A), srv.user(B)
        key_a = a.key
        r = a.send(B, "x")
        a.bye()
        got = b.wait_for(lambda evs: msgs(evs))
        b.read(A, [m["mid"] for m in msgs(got)])
        a2 = srv.client()
        a2.login(A, key_a)
        evs = a2.wait_for(lambda evs: receipts(evs, "read") and receipts(evs, "sent"))
        assert receipts(evs, "delivered") == [r.mid] and receipts(evs, "read") == [r.mid]
        assert receipts(evs, "sent") == [r.mid]


@both
def test_c5_new_device_invalidates_the_old_key_and_ends_its_session(node, tmp_path, tls):
    with running_chat(tmp_path, tls=tls) as srv:
        old = srv.user(A)
        old_key = old.key
        new = srv.client()
        new.register(A)
        new_key = new.verify(A, srv.pin(A))
        with pytest.raises(ChatClosed) as e:
            old.poll(5.0)
        assert e.value.code == "replaced"
        stale = srv.client()
        with pytest.raises(ChatError) as e2:
            stale.login(A, old_key)
        assert e2.value.code == "auth_failed"
        assert new.login(A, new_key) == 0


def test_login_wrong_key_gets_the_same_error_as_an_unknown_number(node, tmp_path):
    with running_chat(tmp_path) as srv:
        srv.user(A)
        c = srv.client()
        with pytest.raises(ChatError) as wrong:
            c.login(A, b"\0" * 32)
        with pytest.raises(ChatError) as unknown:
            c.login("+14155559999", b"\0" * 32)
        assert (wrong.value.code, wrong.value.message) == (unknown.value.code,
                                                           unknown.value.message)
        assert wrong.value.code == "auth_failed"


def test_c6_code_is_single_use_over_the_wire(node, tmp_path):
    with running_chat(tmp_path) as srv:
        c = srv.client()
        c.register(A)
        pin = srv.pin(A)
        c.verify(A, pin)
        with pytest.raises(ChatError) as e:
            c.verify(A, pin)
        assert e.value.code == "bad_code"


def test_requests_need_a_session(node, tmp_path):
    with running_chat(tmp_path) as srv:
        c = srv.client()
        with pytest.raises(ChatError) as e:
            c.request("send", to=B, cmid="x", body="x")
        assert e.value.code == "not_authenticated"


def test_send_to_an_unregistered_number_is_refused(node, tmp_path):
    with running_chat(tmp_path) as srv:
        a = srv.user(A)
        with pytest.raises(ChatError) as e:
            a.send("+19995550000", "x")
        assert e.value.code == "unknown_recipient"


def test_presence_shows_online_and_last_seen_unless_hidden(node, tmp_path):
    with running_chat(tmp_path) as srv:
        a, b = srv.user(A), srv.user(B)
        assert a.presence([B, "+19995550000"]) == {B: {"online": True, "last_seen": None}}
        b.bye()
        while a.presence([B])[B]["online"]:  # the detach is asynchronous
            a.ping()
        assert a.presence([B])[B]["last_seen"] > 0
        c = srv.user(C)
        c.privacy(True)
        assert a.presence([C]) == {C: {"hidden": True}}


def test_contacts_tells_which_numbers_are_registered_and_is_rate_limited(node, tmp_path):
    with running_chat(tmp_path, limits={"contacts_per_hour": 5}) as srv:
        a, _ = srv.user(A), srv.user(B)
        assert a.contacts([B, "+19995550000", "junk"]) == [B]
        with pytest.raises(ChatError) as e:
            a.contacts([f"+1999555{i:04d}" for i in range(5)])
        assert e.value.code == "rate_limited" and e.value.frame["retry_after"] > 0


def test_user_process_stops_when_idle_and_starts_again_for_a_message(node, tmp_path):
    with running_chat(tmp_path, users={"idle_stop": 0.2}) as srv:
        a, b = srv.user(A), srv.user(B)
        key_b = b.key
        b.bye()
        from otp.process import Down, monitor
        from otp.testing import assert_receive
        pid = whereis("chat.user." + B)
        if pid is not None:  # idle: it stops (or it never started: nothing was pending)
            ref = monitor(pid)
            assert assert_receive(Down, timeout=10.0).ref == ref
        a.send(B, "wake up")
        b2 = srv.client()
        assert b2.login(B, key_b) == 1


def test_user_process_stops_while_the_device_stays_connected_and_restarts_for_a_message(
        node, tmp_path):
    with running_chat(tmp_path, users={"idle_stop": 0.2}) as srv:
        a, b = srv.user(A), srv.user(B)
        from otp.process import Down, monitor
        from otp.testing import assert_receive
        pid = whereis("chat.user." + B)
        if pid is not None:  # B idle: its process stops (if it started at all)
            ref = monitor(pid)
            assert assert_receive(Down, timeout=10.0).ref == ref
        assert whereis("chat.user." + B) is None
        r = a.send(B, "still there?")
        assert [m["mid"] for m in msgs(b.wait_for(lambda evs: msgs(evs)))] == [r.mid]
        assert a.presence([B])[B]["online"] is True


def test_admin_provision_registers_without_sms_only_with_the_token(node, tmp_path):
    with running_chat(tmp_path, admin_token="s3cret") as srv:
        c = srv.client()
        with pytest.raises(ChatError) as e:
            c.provision("wrong", [A])
        assert e.value.code == "forbidden"
        key_a, key_b = c.provision("s3cret", [A, B])
        a = srv.client()
        a.login(A, key_a)
        a.send(B, "hi")
        b = srv.client()
        b.login(B, key_b)
        assert msgs(b.wait_for(lambda evs: msgs(evs)))[0]["body"] == "hi"


def test_pushes_stop_at_the_window_until_the_device_acknowledges(node, tmp_path):
    with running_chat(tmp_path, limits={"window": 5}) as srv:
        a, b = srv.user(A), srv.user(B)
        mids = [a.send(B, f"m{i}").mid for i in range(12)]
        a.wait_for(lambda evs: len(receipts(evs, "sent")) == 12)  # all in B's inbox
        b.ping()
        first = b.poll(0.3, ack=False)
        assert [m["mid"] for m in msgs(first)] == mids[:5]  # the window, no more
        b.ack([m["id"] for m in first])
        rest = b.wait_for(lambda evs: len(msgs(evs)) >= 7)
        assert [m["mid"] for m in msgs(rest)] == mids[5:]


def test_c3_c4_an_unanswered_ack_deletes_the_message_and_sends_delivered(node, tmp_path):
    with running_chat(tmp_path) as srv:
        a, b = srv.user(A), srv.user(B)
        assert (a.version, b.version) == (2, 2)
        r = a.send(B, "x")
        got = []
        while not msgs(got):
            got = b.poll(1.0, ack_wait=False)  # an ack without id: no reply comes
        a.wait_for(lambda evs: r.mid in receipts(evs, "delivered"))  # the ack was handled
        b.ping()  # the connection answers the next request: no reply was owed for the ack
        # The delete is lazy (it rides along with B's next write): B sends something.
        ry = b.send(A, "y")
        assert [i for i in store.read(("load", B)).inbox if i[2] == "msg"] == []
        b.wait_for(lambda evs: ry.mid in receipts(evs, "sent"))  # acknowledged too
        key = b.key
        b.bye()
        again = srv.client()
        assert again.login(B, key) == 0


def test_c1_c4_a_connected_recipient_gets_the_message_unstored_then_both_receipts(
        node, tmp_path):
    """With B's device connected, B's inbox never stores the message: A's outbox row is
    its durable record until B's device acknowledged it; then "sent" and "delivered"
    reach A."""
    with running_chat(tmp_path) as srv:
        a, b = srv.user(A), srv.user(B)
        r = a.send(B, "x")
        got = pushed_unacked(b)
        assert [m["mid"] for m in msgs(got)] == [r.mid]
        assert [i for i in store.read(("load", B)).inbox if i[2] == "msg"] == []
        assert [i[4][0] for i in store.read(("load", A)).outbox] == [r.mid]
        b.ack([m["id"] for m in msgs(got)], wait=False)
        evs = a.wait_for(lambda evs: r.mid in receipts(evs, "delivered"))
        assert receipts(evs, "sent") == [r.mid]


def test_an_unanswered_ack_packed_in_another_key_order_is_handled_too(node, tmp_path):
    """The reader takes the usual form of an id-less ack past the connection process;
    any other form goes the long way, with the same effect."""
    with running_chat(tmp_path) as srv:
        a, b = srv.user(A), srv.user(B)
        r = a.send(B, "x")
        got = pushed_unacked(b)
        b._send_frame({"ids": [m["id"] for m in msgs(got)], "t": "ack"})
        a.wait_for(lambda evs: r.mid in receipts(evs, "delivered"))
        b.ping()


def _unacked_receipts(phone):
    """The receipts ``phone``'s process pushed and still waits to see acknowledged."""
    return set(otp_sys.get_state(users.name(phone)).volatile)


def _held_receipts(a, b):
    """A sends B a message; both devices acknowledge without waiting (version 2);
    returns the ids of the receipts A's device got and acknowledged."""
    r = a.send(B, "x")
    b.wait_for(lambda evs: msgs(evs), ack_wait=False)
    evs = a.wait_for(lambda evs: r.mid in receipts(evs, "delivered"), ack_wait=False)
    a.ping()  # A's connection has read the ack
    ids = {e["id"] for e in evs if e["t"] == "receipt"}
    assert len(ids) == 2
    return ids


def _until_handed_over(phone, ids, timeout=10.0):
    deadline = time.monotonic() + timeout
    while ids & _unacked_receipts(phone):
        assert time.monotonic() < deadline, f"{ids} still unacknowledged at {phone}"
        sleep(0.01)


def test_receipt_acks_are_held_back_and_go_with_the_next_request(node, tmp_path,
                                                                 monkeypatch):
    """An unanswered ack of receipts only lets the sender's process forget them: the
    connection holds it back, and hands it over before the device's next request (the
    process then handles both in one turn)."""
    monkeypatch.setattr(connection, "ACK_HOLD", 3600.0)
    with running_chat(tmp_path) as srv:
        a, b = srv.user(A), srv.user(B)
        ids = _held_receipts(a, b)
        assert ids <= _unacked_receipts(A)  # held back
        a.send(B, "y")
        assert not ids & _unacked_receipts(A)  # handed over before the send


def test_held_receipt_acks_are_handed_over_after_ack_hold(node, tmp_path, monkeypatch):
    monkeypatch.setattr(connection, "ACK_HOLD", 0.05)
    with running_chat(tmp_path) as srv:
        a, b = srv.user(A), srv.user(B)
        _until_handed_over(A, _held_receipts(a, b))  # with no request from A


def test_held_receipt_acks_are_handed_over_when_the_device_leaves(node, tmp_path,
                                                                  monkeypatch):
    monkeypatch.setattr(connection, "ACK_HOLD", 3600.0)
    with running_chat(tmp_path) as srv:
        a, b = srv.user(A), srv.user(B)
        ids = _held_receipts(a, b)
        a.bye()
        _until_handed_over(A, ids)


def test_client_falls_back_to_version_1_with_a_server_that_speaks_only_it(
        node, tmp_path, monkeypatch):
    import chat.connection

    monkeypatch.setattr(chat.connection, "PROTOCOL_VERSIONS", (1,))
    with running_chat(tmp_path) as srv:
        a, b = srv.user(A), srv.user(B)
        assert (a.version, b.version) == (1, 1)
        a.send(B, "x")
        assert msgs(b.wait_for(lambda evs: msgs(evs), timeout=10.0))
        b.ack([1], wait=False)  # version 1: sent as an answered ack


def test_a_user_process_or_connection_that_ends_leaves_no_cyclic_garbage(node, tmp_path):
    """A stopped user's state, and a closed connection's, are freed when their process
    ends (reference counting), not left for a full pass of the cyclic GC: a long-running
    node starts and stops them all the time, and the full pass is rare and long."""
    import gc

    from otp import gen_server
    from otp.process import Down, monitor
    from otp.testing import assert_receive

    with running_chat(tmp_path) as srv:
        a = srv.user(A)
        srv.user(B)
        a.send(B, "hello")
        pid = whereis(users.name(A))
        conn = whereis(users.device_name(A))
        gc.collect()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            ref = monitor(pid)
            gen_server.stop(pid)
            assert assert_receive(Down).ref == ref
            ref = monitor(conn)
            a.bye()
            assert assert_receive(Down).ref == ref
            gc.collect()
            left = [o for o in gc.garbage if isinstance(o, users._State | connection._Conn)]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
        assert left == []
