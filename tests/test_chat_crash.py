"""Crash safety (C1, D3): the whole server killed with SIGKILL at random moments while a
client sends; after each restart, every message the server acknowledged is delivered
exactly once, in order, and none is duplicated under another id."""

from __future__ import annotations

import os
import random
import signal
from typing import Any

import pytest

from chat.client import ChatError, Client
from chat.protocol import encode
from otp.process import exit, receive, self, send, sleep, spawn_link, unlink
from tests.chat_helpers import ServerProcess, running_chat

pytestmark = pytest.mark.otp(clock="real", timeout=120)

A, B = "+14155550100", "+14155550111"
ROUNDS = 3


def test_c1_sigkill_at_random_moments_loses_and_duplicates_nothing_acknowledged(
        node, tmp_path):
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    srv = ServerProcess(tmp_path)
    acked: list[tuple[str, str]] = []  # (cmid, mid) in send order
    unsure: list[str] = []  # cmids whose reply never came: at most once
    n = 0
    try:
        port = srv.start()
        admin = Client("127.0.0.1", port)
        admin.connect()
        key_a, key_b = admin.provision("t", [A, B])
        admin.close()
        for _ in range(ROUNDS):
            a = Client("127.0.0.1", srv.port, auto_reconnect=False)
            a.connect()
            a.login(A, key_a)
            for cmid in list(unsure):  # the device retries what it is unsure about
                acked.append((cmid, a.send(B, cmid, cmid=cmid).mid))
                unsure.remove(cmid)
            for _ in range(rng.randrange(5, 40)):
                n += 1
                cmid = f"c{n}"
                acked.append((cmid, a.send(B, cmid, cmid=cmid).mid))
            # a few requests in flight when the node dies
            for _ in range(rng.randrange(0, 4)):
                n += 1
                cmid = f"c{n}"
                a.sock.sendall(encode({"t": "send", "id": 10_000 + n, "to": B,
                                       "cmid": cmid, "body": cmid}))
                unsure.append(cmid)
            srv.kill()
            a.close()
            srv.start()
        b = Client("127.0.0.1", srv.port, auto_reconnect=False)
        b.connect()
        b.login(B, key_b)
        got: list[dict] = []
        need = {mid for _, mid in acked}
        while not need <= {m["mid"] for m in got}:
            evs = b.poll(10.0)
            assert evs, f"seed {seed}: missing {sorted(need - {m['mid'] for m in got})}"
            got.extend(e for e in evs if e["t"] == "msg")
        got.extend(e for e in b.poll(0.5) if e["t"] == "msg")
        b.close()
    except ChatError as e:
        raise AssertionError(f"seed {seed}: {e}") from None
    finally:
        srv.kill()
    bodies = [m["body"] for m in got]
    assert len(bodies) == len(set(bodies)), f"seed {seed}: a message stored twice"
    acked_cmids = [c for c, _ in acked]
    in_order = [b for b in bodies if b in set(acked_cmids)]
    by_number = sorted(acked_cmids, key=lambda c: int(c[1:]))
    assert in_order == by_number, f"seed {seed}: per-sender order broken"


def test_c1_sigkill_while_the_recipient_is_online_loses_and_duplicates_nothing(
        node, tmp_path):
    """The fast path under SIGKILL: the recipient's device is connected and acknowledging
    (messages are pushed to it *unstored*, the sender's outbox row their only durable
    record) while the sender sends; the node is killed at random moments, the device
    reconnects to each new node. Every acknowledged message reaches the device, in send
    order, and none twice under another id (its ``mid`` is the only dedup key)."""
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    srv = ServerProcess(tmp_path)
    acked: list[tuple[str, str]] = []
    unsure: list[str] = []
    got: list[dict] = []  # what B's device took (once per mid), in the order it came
    n = 0
    port = srv.start()
    admin = Client("127.0.0.1", port)
    admin.connect()
    key_a, key_b = admin.provision("t", [A, B])
    admin.close()
    b = Client("127.0.0.1", port, auto_reconnect=False)
    ack_wait = rng.random() < 0.5  # answered acks, or version 2's unanswered ones

    def online(test: Any) -> None:  # B's device: polls and acks; reconnects to new nodes
        while True:
            try:
                b.connect()
                b.login(B, key_b)
                while True:
                    evs = [e for e in b.poll(0.05, ack_wait=ack_wait) if e["t"] == "msg"]
                    if evs:
                        got.extend(evs)
                        send(test, "taken")
            except (ChatError, OSError, TimeoutError):
                b.close()
                # the node is gone: wait for the next one's port (the latest one sent)
                b.port = receive(("port", int))[1]
                while (p := receive(("port", int), timeout=0, default=None)) is not None:
                    b.port = p[1]

    device = spawn_link(online, self())
    try:
        for _ in range(ROUNDS):
            a = Client("127.0.0.1", srv.port, auto_reconnect=False)
            a.connect()
            a.login(A, key_a)
            for cmid in list(unsure):
                acked.append((cmid, a.send(B, cmid, cmid=cmid).mid))
                unsure.remove(cmid)
            for _ in range(rng.randrange(5, 60)):
                n += 1
                cmid = f"c{n}"
                acked.append((cmid, a.send(B, cmid, cmid=cmid).mid))
            for _ in range(rng.randrange(0, 6)):
                n += 1
                cmid = f"c{n}"
                a.sock.sendall(encode({"t": "send", "id": 10_000 + n, "to": B,
                                       "cmid": cmid, "body": cmid}))
                unsure.append(cmid)
            srv.kill()
            a.close()
            send(device, ("port", srv.start()))
        a = Client("127.0.0.1", srv.port, auto_reconnect=False)  # the last unsure ones
        a.connect()
        a.login(A, key_a)
        for cmid in unsure:
            acked.append((cmid, a.send(B, cmid, cmid=cmid).mid))
        a.close()
        need = {mid for _, mid in acked}
        while not need <= {m["mid"] for m in got}:  # each new batch the device takes
            if receive("taken", timeout=20.0, default=None) is None:
                missing = sorted(need - {m["mid"] for m in got})
                raise AssertionError(f"seed {seed}: missing {missing}")
    except ChatError as e:
        raise AssertionError(f"seed {seed}: {e}") from None
    finally:
        unlink(device)
        exit(device, "kill")
        b.close()
        srv.kill()
    bodies = [m["body"] for m in got]
    assert len(bodies) == len(set(bodies)), f"seed {seed}: a message stored twice"
    order = sorted((c for c, _ in acked), key=lambda c: int(c[1:]))
    assert [x for x in bodies if x in set(order)] == order, f"seed {seed}: order broken"


def _send_retrying(client, to, body, cmid, attempts=50):
    """Send as a device does: an error reply means "try again" (same cmid)."""
    for i in range(attempts):
        try:
            return client.send(to, body, cmid=cmid)
        except ChatError as e:
            if e.code not in ("unavailable", "internal") or i == attempts - 1:
                raise
            sleep(0.05)


def _store_process():
    """The pid of this node's store process (a child running chat.store_child)."""
    me = os.getpid()
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read()
        except (OSError, ValueError):
            continue
        if ppid == me and b"chat.store_child" in cmd:
            return int(d)
    raise AssertionError("no store process")


def test_a_killed_store_process_is_replaced_and_nothing_acknowledged_is_lost(node,
                                                                             tmp_path):
    """The store's OS process (store_process: true) killed with SIGKILL: the batch in
    hand fails (its callers crash and reload), a new store process takes over, and
    every message acknowledged before or after arrives once."""
    with running_chat(tmp_path, durability="full") as srv:
        a, b = srv.user(A), srv.user(B)
        before = a.send(B, "before", cmid="c1")
        old = _store_process()
        os.kill(old, signal.SIGKILL)
        after = _send_retrying(a, B, "after", "c2")
        assert _store_process() != old
        want = {before.mid, after.mid}
        got = b.wait_for(lambda evs: want <= {e["mid"] for e in evs if e["t"] == "msg"})
        mids = [e["mid"] for e in got if e["t"] == "msg"]
        assert sorted(mids) == sorted(want)  # once each


def test_the_store_in_the_node_serves_the_message_path_too(node, tmp_path):
    """``store_process: false``: the same sqlite store, run by the node itself."""
    with running_chat(tmp_path, durability="full", store_process=False) as srv:
        with pytest.raises(AssertionError, match="no store process"):
            _store_process()
        a, b = srv.user(A), srv.user(B)
        r = a.send(B, "x")
        got = b.wait_for(lambda evs: any(e["t"] == "msg" for e in evs))
        assert [e["mid"] for e in got if e["t"] == "msg"] == [r.mid]
        a.wait_for(lambda evs: any(e["t"] == "receipt" and e["type"] == "delivered"
                                   for e in evs))


def test_a_relative_data_dir_is_the_nodes_one_for_the_store_process(node, tmp_path,
                                                                    monkeypatch):
    monkeypatch.chdir(tmp_path)
    with running_chat(tmp_path, data_dir="rel/data") as srv:
        a = srv.user(A)
        srv.user(B)
        a.send(B, "x")
    assert (tmp_path / "rel" / "data" / "chat.db").exists()
