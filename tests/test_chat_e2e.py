"""End-to-end tests of the chat server over real loopback sockets, plain and TLS."""

from __future__ import annotations

import pytest

from tests.chat_helpers import running_chat

pytestmark = pytest.mark.otp(clock="real")

A, B = "+14155550100", "+14155550111"


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_c4_message_flows_with_sent_delivered_read_receipts(node, tmp_path, tls):
    with running_chat(tmp_path, tls=tls) as srv:
        a = srv.user(A)
        b = srv.user(B)
        r = a.send(B, "hello")
        got = b.wait_for(lambda evs: any(e["t"] == "msg" for e in evs))
        msg = next(e for e in got if e["t"] == "msg")
        assert (msg["mid"], msg["from"], msg["body"]) == (r.mid, A, "hello")
        b.read(A, [r.mid])
        evs = a.wait_for(lambda evs: {e["type"] for e in evs} >= {"sent", "delivered", "read"})
        assert [e["type"] for e in evs if e["mid"] == r.mid] == ["sent", "delivered", "read"]
