"""Restarts (docs/semantics.md C8, C1): what the server acknowledged goes on to its
recipient after a restart without waiting for its sender; a device is pushed each
queued item once per connection; a graceful stop tells every connection ``shutdown``."""

from __future__ import annotations

from collections import Counter

import pytest

from chat import app, connection
from chat.client import ChatClosed, Client
from otp.process import self as _self
from otp.process import unlink
from tests.chat_helpers import RecordingSms, ServerProcess, config, running_chat

pytestmark = pytest.mark.otp(clock="real", timeout=120)

A, B = "+14155550100", "+14155550111"


def msgs(evs):
    return [e for e in evs if e["t"] == "msg"]


def recording(c: Client) -> list[dict]:
    """Every frame ``c`` takes as pushed, duplicates included."""
    raw: list[dict] = []
    take = c._take

    def _take(frame: dict) -> None:
        raw.append(frame)
        take(frame)

    c._take = _take  # type: ignore[method-assign]
    return raw


def test_c8_a_queued_item_is_pushed_once_per_connection_after_a_restart(node, tmp_path):
    """The first login after a restart starts the user's process, which finds the
    device's connection by its name and streams to it; the login's own attach must not
    stream everything a second time on the same connection."""
    with running_chat(tmp_path) as srv:
        b = srv.user(B)
        key_b = b.key
        b.bye()
        a = srv.user(A)
        for i in range(30):
            a.send(B, f"m{i}")
        a.wait_for(lambda evs: sum(e["type"] == "sent" for e in evs) == 30)
    with running_chat(tmp_path) as srv:
        b = srv.client()
        raw = recording(b)
        assert b.login(B, key_b) == 30
        b.ping()  # (the pushes of the login's turn come before this reply)
        got = b.wait_for(lambda evs: len(msgs(evs)) >= 30)
        assert len(msgs(got)) == 30
        b.ping()
        counts = Counter(f["id"] for f in raw if f["t"] == "msg")
        assert len(counts) == 30 and set(counts.values()) == {1}


def test_a_graceful_stop_sends_shutdown_to_every_connection(node, tmp_path):
    cfg = config(tmp_path)
    sup = app.start(cfg, sms=RecordingSms(_self()))
    host, port = connection.address()
    try:
        cs = []
        for _ in range(3):
            c = Client(host, port, auto_reconnect=False)
            c.connect()
            cs.append(c)
    finally:
        unlink(sup)
        app.stop(sup)
    for c in cs:
        with pytest.raises(ChatClosed) as e:
            c.poll(10.0)
        assert e.value.code == "shutdown"
        c.close()


@pytest.mark.parametrize("how", ["kill", "stop"], ids=["sigkill", "sigterm"])
def test_c8_c1_an_acknowledged_message_reaches_its_recipient_without_its_sender(
        node, tmp_path, how):
    """A's messages are pushed to B's connected device, which has not acknowledged
    them (so they are kept only in A's outbox), when the server is killed (or stopped).
    After the restart B logs in and gets them, once each, though A never comes back:
    the server resumes every outbox at start."""
    srv = ServerProcess(tmp_path)
    port = srv.start()
    admin = Client("127.0.0.1", port)
    admin.connect()
    key_a, key_b = admin.provision("t", [A, B])
    admin.close()
    b = Client("127.0.0.1", port, auto_reconnect=False)
    a = Client("127.0.0.1", port, auto_reconnect=False)
    try:
        b.connect()
        b.login(B, key_b)
        a.connect()
        a.login(A, key_a)
        sent = [a.send(B, f"m{i}").mid for i in range(3)]
        got: list[dict] = []
        while len(msgs(got)) < 3:  # pushed, not acknowledged
            got += b.poll(5.0, ack=False)
        if how == "kill":
            srv.kill()
        else:
            srv.stop()
            with pytest.raises(ChatClosed) as e:  # a graceful stop says so first
                b.poll(10.0, ack=False)
            assert e.value.code == "shutdown"
        a.close()
        b.close()
        port = srv.start()
        b2 = Client("127.0.0.1", port, auto_reconnect=False)
        raw = recording(b2)
        b2.connect()
        b2.login(B, key_b)
        got = b2.wait_for(lambda evs: {m["mid"] for m in msgs(evs)} >= set(sent),
                          timeout=30.0)
        assert [m["mid"] for m in msgs(got)] == sent
        b2.ping()
        pushes = Counter(f["mid"] for f in raw if f["t"] == "msg")
        assert all(pushes[m] == 1 for m in sent), pushes
        b2.close()
    finally:
        a.close()
        b.close()
        srv.kill()
