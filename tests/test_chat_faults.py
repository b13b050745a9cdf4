"""Fault injection on the message path (C1): kill the sender's user process, the
recipient's user process or the connection processes at each step of the path; every
acknowledged message still arrives exactly once (the device deduplicating by ``mid``),
in order, and its receipts come back.
"""

from __future__ import annotations

import time

import pytest

from chat import faults, store, users
from otp.process import ANY, exit, process_info, self, send, whereis
from otp.testing import assert_receive
from tests.chat_helpers import running_chat

pytestmark = pytest.mark.otp(clock="real")

A, B = "+14155550100", "+14155550111"
N = 8


def _targets(who):
    if who == "sender":
        return [whereis("chat.user." + A)]
    if who == "recipient":
        return [whereis("chat.user." + B)]
    conns = whereis("chat.conns")
    if conns is None:
        return []
    return [p for p in process_info(conns).links if p != whereis("chat.sup")]


def _kill_once_at(step, who, nth=3):
    seen = [0]

    def hook(phone):
        seen[0] += 1
        if seen[0] != nth:
            return
        me = self()
        victims = [p for p in _targets(who) if p is not None]
        for p in victims:
            if p != me and p != whereis("chat.listener"):
                exit(p, "kill")
        if me in victims:
            exit(me, "kill")

    faults.inject(step, hook)
    return seen


def _wait(client, pred, ack_wait, also=None):
    """``client.wait_for(pred)``, but one event per ack, so that there are enough acks
    for the crash at ``ack_received`` (a sender's receipts often come together: the
    pushes would otherwise be acknowledged in fewer batches), and the device ``also``
    keeps reading meanwhile: a message the recipient's process held unstored, or an
    unanswered ack, lost in a crash is made good only by the device acknowledging the
    items pushed again."""
    out: list = []
    deadline = time.monotonic() + 30.0
    while not pred(out):
        assert time.monotonic() < deadline, f"condition not met; got {out!r:.300}"
        out.extend(client.poll(0.2, max_events=1, ack_wait=ack_wait))
        if also is not None:
            also.poll(0.01, ack_wait=ack_wait)
    return out


def msgs(evs):
    return [e for e in evs if e["t"] == "msg"]


@pytest.mark.parametrize("acks", ["answered", "unanswered"])
@pytest.mark.parametrize("who", ["sender", "recipient", "conns"])
@pytest.mark.parametrize("step", faults.STEPS)
def test_c1_acknowledged_messages_arrive_once_in_order_despite_a_crash(node, tmp_path,
                                                                       step, who, acks):
    # acks: the devices' acks wait for their answer (the delete is on disk), or are
    # sent without an id (protocol version 2: "delivered" goes straight to the
    # sender's process, the delete follows lazily)
    wait = acks == "answered"
    with running_chat(tmp_path) as srv:
        a, b = srv.user(A), srv.user(B)
        try:
            fired = _kill_once_at(step, who)
            mids = [a.send(B, f"m{i}").mid for i in range(N)]
            got = _wait(b, lambda evs: len(msgs(evs)) >= N, wait)
            assert [m["mid"] for m in msgs(got)] == mids
            evs = _wait(a, lambda evs: {e["mid"] for e in evs
                                        if e.get("type") == "delivered"} >= set(mids), wait,
                        also=b)
            delivered = [e["mid"] for e in evs if e.get("type") == "delivered"]
            assert delivered == mids  # once each (deduplicated), in order
            assert fired[0] >= 3, f"the crash at {step} was never injected"
        finally:
            faults.clear()
            # nothing left to forward (acknowledged rows may wait for a lazy delete; a
            # process killed at the last step forwards what it reloads once more)
            deadline = time.monotonic() + 30.0
            while users.call(A, ("forwarding",)) != 0:
                assert time.monotonic() < deadline, "still forwarding"
                a.poll(0.05, ack_wait=False)


def test_c2_retried_forward_is_stored_once(node, tmp_path):
    """A forward delivered twice (a retry after a lost ack) is stored once."""
    with running_chat(tmp_path) as srv:
        a, b = srv.user(A), srv.user(B)
        key_b = b.key
        b.bye()
        try:
            r = a.send(B, "once")
            a.wait_for(lambda evs: any(e.get("type") == "sent" for e in evs))
            item = (1, "msg", (r.mid, r.cmid, "once", r.ts))
            send(whereis("chat.user." + B), ("chat.deliver", A, self(), (item,), 0))
            # acknowledged again, as stored (nothing named delivered)...
            assert assert_receive(("chat.delivered", B, 1, ((), 0, 0, ANY)))
        finally:
            faults.clear()
        inbox = store.read(("load", B)).inbox
        assert [i[3][0] for i in inbox if i[2] == "msg"] == [r.mid]  # ... stored once
        b2 = srv.client()
        assert b2.login(B, key_b) == 1
