"""The message path on otp.tables disc tables (``storage: tables``): the same rules as
on the default sqlite store, end to end, with crashes, and with SIGKILL of the node."""

from __future__ import annotations

import time

import pytest

from chat import faults
from tests import test_chat_crash, test_chat_faults
from tests.chat_helpers import ServerProcess, running_chat

pytestmark = pytest.mark.otp(clock="real")

A, B, C = "+14155550100", "+14155550111", "+14155550122"


def msgs(evs):
    return [e for e in evs if e["t"] == "msg"]


def test_c1_c4_on_tables_messages_in_order_with_receipts(node, tmp_path):
    with running_chat(tmp_path, storage="tables") as srv:
        a, b, c = srv.user(A), srv.user(B), srv.user(C)
        sent_a = [a.send(C, f"a{i}").mid for i in range(20)]
        sent_b = [b.send(C, f"b{i}").mid for i in range(20)]
        got = c.wait_for(lambda evs: len(msgs(evs)) >= 40)
        assert [m["mid"] for m in msgs(got) if m["from"] == A] == sent_a
        assert [m["mid"] for m in msgs(got) if m["from"] == B] == sent_b
        evs = a.wait_for(lambda evs: len([e for e in evs if e.get("type") == "delivered"])
                         >= 20)
        assert [e["mid"] for e in evs if e.get("type") == "delivered"] == sent_a


def test_c3_on_tables_offline_queue_then_deleted_after_ack(node, tmp_path):
    with running_chat(tmp_path, storage="tables") as srv:
        b = srv.user(B)
        key_b = b.key
        b.bye()
        a = srv.user(A)
        mids = [a.send(B, f"m{i}").mid for i in range(10)]
        b2 = srv.client()
        assert b2.login(B, key_b) == 10
        assert [m["mid"] for m in msgs(b2.wait_for(lambda e: len(msgs(e)) >= 10))] == mids
        b2.bye()
        b3 = srv.client()
        assert b3.login(B, key_b) == 0


@pytest.mark.parametrize("who", ["sender", "recipient", "conns"])
@pytest.mark.parametrize("step", ["send_stored", "inbox_stored", "ack_received"])
def test_c1_on_tables_crash_at_a_step_loses_and_duplicates_nothing(node, tmp_path, step,
                                                                    who):
    with running_chat(tmp_path, storage="tables") as srv:
        a, b = srv.user(A), srv.user(B)
        try:
            fired = test_chat_faults._kill_once_at(step, who, nth=2)
            mids = [a.send(B, f"m{i}").mid for i in range(8)]
            # one ack per message (all 8 may be waiting in one read), so that the
            # second ack exists for the crash at ack_received
            got: list = []
            deadline = time.monotonic() + 30.0
            while len(msgs(got)) < 8 and time.monotonic() < deadline:
                got += b.poll(1.0, max_events=1)
            assert [m["mid"] for m in msgs(got)] == mids
            assert fired[0] >= 2
        finally:
            faults.clear()


@pytest.mark.parametrize("recipient", ["offline", "online"])
def test_c1_on_tables_sigkill_at_random_moments_loses_and_duplicates_nothing(
        node, tmp_path, monkeypatch, recipient):
    real = ServerProcess.__init__

    def with_tables(self, tmp, **over):
        real(self, tmp, storage="tables", **over)

    monkeypatch.setattr(ServerProcess, "__init__", with_tables)
    crash_test = test_chat_crash.test_c1_sigkill_at_random_moments_loses_and_duplicates_nothing_acknowledged  # noqa: E501
    crash_test(node, tmp_path, recipient)
    assert any((tmp_path / "data" / "tables").iterdir()), "the tables were not used"
    assert not (tmp_path / "data" / "chat.db").exists()
