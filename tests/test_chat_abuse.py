"""What one user's requests may do to others (docs/semantics.md C7), and the request
checks a client writer relies on (docs/protocol.md): read receipts only from a
message's recipient, opaque message ids, limits on lookups and code requests, cmid
reuse, the body limit in bytes, empty bodies, malformed recipients."""

from __future__ import annotations

import os

import pytest

from chat import mids
from chat.client import ChatError
from tests.chat_helpers import running_chat

pytestmark = pytest.mark.otp(clock="real")

A, B, C = "+14155550100", "+14155550111", "+14155550122"


def receipts(evs, kind):
    return [(e["mid"], e["peer"]) for e in evs if e["t"] == "receipt" and e["type"] == kind]


def test_c7_only_the_recipient_can_report_a_message_read(node, tmp_path):
    with running_chat(tmp_path) as srv:
        a, b, c = srv.user(A), srv.user(B), srv.user(C)
        mid = a.send(B, "for B only").mid
        b.wait_for(lambda evs: any(e["t"] == "msg" for e in evs))
        for who, frm, m in ((c, A, mid),  # a third party, with the real mid
                            (c, A, mid[:-4] + "AAAA"),  # a made-up one
                            (a, A, mid),  # the sender itself
                            (a, B, mid)):  # the sender, naming the recipient
            with pytest.raises(ChatError) as e:
                who.read(frm, [m])
            assert e.value.code == "unknown_message"
        b.read(A, [mid])  # the recipient: accepted, one receipt, its peer is B
        evs = a.wait_for(lambda evs: receipts(evs, "read"))
        assert receipts(evs, "read") == [(mid, B)]


def test_c7_made_up_read_mids_queue_nothing_for_the_sender(node, tmp_path):
    """The flood of the review: read requests of made-up mids naming A as sender (and
    mids in the old ``<sender>:<counter>`` form) are refused, and A's queue stays empty."""
    with running_chat(tmp_path) as srv:
        a = srv.user(A)
        key_a = a.key
        a.bye()
        c = srv.user(C)
        fake = [f"{A}:{i}" + "x" * 200 for i in range(250)]
        for _ in range(10):
            with pytest.raises(ChatError) as e:
                c.read(A, fake)
            assert e.value.code == "unknown_message"
        with pytest.raises(ChatError):
            c.read(A, [f"{A}:1"])
        a2 = srv.client()
        assert a2.login(A, key_a) == 0


def test_c7_message_ids_are_opaque_and_unique(node, tmp_path):
    with running_chat(tmp_path) as srv:
        a = srv.user(A)
        srv.user(B)
        got = [a.send(B, "same body").mid for _ in range(20)]
        assert len(set(got)) == 20
        assert all(len(m) == mids.LENGTH and A not in m and ":" not in m for m in got)
        # nothing in two consecutive ids tells how many messages lie between
        assert len({m[:4] for m in got}) > 1


def test_c7_repeated_reads_are_rate_limited(node, tmp_path):
    with running_chat(tmp_path, limits={"reads_per_hour": 5}) as srv:
        a, b = srv.user(A), srv.user(B)
        mid = a.send(B, "hi").mid
        b.wait_for(lambda evs: any(e["t"] == "msg" for e in evs))
        for _ in range(5):
            b.read(A, [mid, mid])  # one receipt per distinct mid
        with pytest.raises(ChatError) as e:
            b.read(A, [mid])
        assert e.value.code == "rate_limited" and e.value.frame["retry_after"] > 0


def test_c7_send_is_no_faster_lookup_than_contacts(node, tmp_path):
    """Each new recipient a send looks up counts against the contacts limit: probing
    numbers with ``send`` ends in ``rate_limited`` as ``contacts`` does."""
    with running_chat(tmp_path, limits={"contacts_per_hour": 10}) as srv:
        a = srv.user(A)
        srv.user(B)
        a.send(B, "hi")  # one lookup
        codes = []
        for i in range(12):
            try:
                a.send(f"+1999555{i:04d}", "probe")
            except ChatError as e:
                codes.append(e.code)
        assert codes == ["unknown_recipient"] * 9 + ["rate_limited"] * 3
        a.send(B, "known: no lookup")  # a known recipient still works


def test_c6_one_connection_cannot_request_codes_for_many_numbers(node, tmp_path):
    with running_chat(tmp_path) as srv:
        c = srv.client()
        codes = []
        for i in range(6):
            try:
                c.register(f"+1415555{i:04d}")
                codes.append("ok")
            except ChatError as e:
                codes.append(e.code)
        assert codes == ["ok"] * 3 + ["rate_limited"] * 3


def test_c6_code_requests_from_one_address_are_limited(node, tmp_path):
    with running_chat(tmp_path, registration={"source_rate_count": 4}) as srv:
        codes = []
        for i in range(6):
            c = srv.client()
            try:
                c.register(f"+1415555{i:04d}")
                codes.append("ok")
            except ChatError as e:
                codes.append(e.code)
            c.close()
        assert codes == ["ok"] * 4 + ["rate_limited"] * 2


def test_c2_a_reused_cmid_with_another_message_is_refused_not_dropped(node, tmp_path):
    with running_chat(tmp_path) as srv:
        a, b = srv.user(A), srv.user(B)
        srv.user(C)
        first = a.send(B, "one", cmid="m1")
        assert a.send(B, "one", cmid="m1").mid == first.mid  # a resend: same mid
        for to, body in ((B, "two"), (C, "one"), (B, b"one")):
            with pytest.raises(ChatError) as e:
                a.send(to, body, cmid="m1")
            assert e.value.code == "cmid_reused"
        got = b.wait_for(lambda evs: any(e["t"] == "msg" for e in evs))
        assert [e["body"] for e in got if e["t"] == "msg"] == ["one"]


def test_the_body_limit_counts_bytes(node, tmp_path):
    with running_chat(tmp_path, limits={"max_body": 1000}) as srv:
        a = srv.user(A)
        srv.user(B)
        a.send(B, "é" * 500)  # 1000 bytes
        for body in ("é" * 501, "x" * 1001, os.urandom(1001), "€" * 334):
            with pytest.raises(ChatError) as e:
                a.send(B, body)
            assert e.value.code == "body_too_large"
        with pytest.raises(ChatError) as e:
            a.send(B, "é" * 501)
        assert e.value.message.endswith("got 1002 bytes")


def test_empty_bodies_and_malformed_recipients_are_refused(node, tmp_path):
    with running_chat(tmp_path) as srv:
        a = srv.user(A)
        srv.user(B)
        for body in ("", b""):
            with pytest.raises(ChatError) as e:
                a.send(B, body)
            assert e.value.code == "empty_body"
        for to in ("14155550111", "+0123456789", "bob"):
            with pytest.raises(ChatError) as e:
                a.send(to, "hi")
            assert e.value.code == "invalid_phone"
        a.send(A, "a note to myself")  # allowed
        got = a.wait_for(lambda evs: any(e["t"] == "msg" for e in evs))
        assert [e["body"] for e in got if e["t"] == "msg"] == ["a note to myself"]
