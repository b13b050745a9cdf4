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


class _Device:
    """A device in a process of its own for the SIGKILL tests: it sends up to ``limit``
    messages to ``peer`` (one request at a time, as a device does), polls and
    acknowledges between them, and, when the node dies, waits for the next node's port
    and logs in again, resending what it sent but never heard about (same ``cmid``).
    With ``read``, it reports every message it takes as read (again after a failure)."""

    def __init__(self, phone: str, key: bytes, peer: str, port: int, limit: int,
                 ack_wait: bool, read: bool = False) -> None:
        self.phone, self.key, self.peer, self.limit = phone, key, peer, limit
        self.ack_wait, self.read = ack_wait, read
        self.unread: list[str] = []  # mids taken, not yet reported read
        self.c = Client("127.0.0.1", port, auto_reconnect=False)
        self.acked: list[tuple[str, str]] = []  # (cmid, mid), in send order
        self.unsure: list[str] = []
        self.msgs: list[dict] = []  # taken (once per mid), in the order they came
        self.receipts: set[tuple[str, str]] = set()  # (type, mid)
        self.n = 0

    def run(self, test: Any) -> None:
        c = self.c
        while True:
            try:
                c.connect()
                c.login(self.phone, self.key)
                while self.unsure:  # a device retries what it is unsure about
                    self._send(self.unsure[0])
                    self.unsure.pop(0)
                while True:
                    moved = self.n < self.limit
                    if moved:
                        self.n += 1
                        cmid = f"{self.phone}/{self.n}"
                        self.unsure.append(cmid)
                        self._send(cmid)
                        self.unsure.pop()
                    for e in c.poll(0.0 if moved else 0.05, ack_wait=self.ack_wait):
                        moved = True
                        if e["t"] == "msg":
                            self.msgs.append(e)
                            if self.read:
                                self.unread.append(e["mid"])
                        else:
                            self.receipts.add((e["type"], e["mid"]))
                    if self.unread:
                        c.read(self.peer, self.unread)
                        self.unread = []
                    if moved:  # (the test waits on these: real progress only)
                        send(test, ("progress", self.phone))
            except (ChatError, OSError, TimeoutError):
                c.close()
                # the node is gone: wait for the next one's port (the latest one sent)
                c.port = receive(("port", int))[1]
                while (p := receive(("port", int), timeout=0, default=None)) is not None:
                    c.port = p[1]

    def _send(self, cmid: str) -> None:
        self.acked.append((cmid, self.c.send(self.peer, cmid, cmid=cmid).mid))


def _receipts(d: _Device, kind: str) -> set[str]:
    return {mid for k, mid in d.receipts if k == kind}


@pytest.mark.parametrize("recipient", ["offline", "online"])
def test_c1_sigkill_at_random_moments_loses_and_duplicates_nothing_acknowledged(
        node, tmp_path, recipient):
    """A sends, the node is killed at random moments (with requests in flight), A's
    device resends what it never heard about. ``offline``: B logs in after the last
    restart (the stored path). ``online``: B's device is connected and acknowledging
    throughout, reconnecting to each new node (messages are pushed to it *unstored*,
    A's outbox row their only durable record). Every acknowledged message reaches B,
    in send order, and none twice under another id (``mid`` is the only dedup key)."""
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    srv = ServerProcess(tmp_path)
    acked: list[tuple[str, str]] = []  # (cmid, mid) in send order
    unsure: list[str] = []  # cmids whose reply never came (resent, same cmid)
    n = 0
    port = srv.start()
    admin = Client("127.0.0.1", port)
    admin.connect()
    key_a, key_b = admin.provision("t", [A, B])
    admin.close()
    # B's device only receives (answered acks, or version 2's unanswered ones)
    b = _Device(B, key_b, A, port, 0, ack_wait=rng.random() < 0.5)
    device = spawn_link(b.run, self()) if recipient == "online" else None
    try:
        for round_ in range(ROUNDS + 1):
            a = Client("127.0.0.1", srv.port, auto_reconnect=False)
            a.connect()
            a.login(A, key_a)
            while unsure:
                acked.append((unsure[0], a.send(B, unsure[0], cmid=unsure[0]).mid))
                unsure.pop(0)
            if round_ == ROUNDS:
                break  # the last node: A only resends what it was unsure about
            for _ in range(rng.randrange(5, 60)):
                n += 1
                cmid = f"c{n}"
                acked.append((cmid, a.send(B, cmid, cmid=cmid).mid))
            for _ in range(rng.randrange(0, 6)):  # in flight when the node dies
                n += 1
                cmid = f"c{n}"
                a.sock.sendall(encode({"t": "send", "id": 10_000 + n, "to": B,
                                       "cmid": cmid, "body": cmid}))
                unsure.append(cmid)
            srv.kill()
            a.close()
            port = srv.start()
            if device is not None:
                send(device, ("port", port))
        a.close()
        if device is None:
            b.c.port = port
            device = spawn_link(b.run, self())
        need = {mid for _, mid in acked}
        while not need <= {m["mid"] for m in b.msgs}:  # each new batch the device takes
            if receive(("progress", B), timeout=20.0, default=None) is None:
                missing = sorted(need - {m["mid"] for m in b.msgs})
                raise AssertionError(f"seed {seed}: missing {missing}")
        # a copy stored under another mid would come after: give it the time to
        receive(("progress", B), timeout=0.5, default=None)
    except ChatError as e:
        raise AssertionError(f"seed {seed}: {e}") from None
    finally:
        if device is not None:
            unlink(device)
            exit(device, "kill")
        b.c.close()
        srv.kill()
    bodies = [m["body"] for m in b.msgs]
    assert len(bodies) == len(set(bodies)), f"seed {seed}: a message stored twice"
    order = sorted((cmid for cmid, _ in acked), key=lambda c: int(c[1:]))
    assert [x for x in bodies if x in set(order)] == order, f"seed {seed}: order broken"


def test_c1_c4_sigkill_while_both_devices_send_and_acknowledge(node, tmp_path):
    """Both users online, sending to each other, acknowledging messages and receipts and
    reporting what they got as read, the node killed with SIGKILL at random moments
    (after a random number of device turns). In the end each device has every message
    the server acknowledged to the other, once, in send order (C1), and a ``delivered``
    and a ``read`` receipt for each of its own (C4: receipts survive the kills too)."""
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    srv = ServerProcess(tmp_path)
    port = srv.start()
    admin = Client("127.0.0.1", port)
    admin.connect()
    key_a, key_b = admin.provision("t", [A, B])
    admin.close()
    ack_wait = rng.random() < 0.5
    devs = [_Device(A, key_a, B, port, 120, ack_wait, read=True),
            _Device(B, key_b, A, port, 120, ack_wait, read=True)]
    pids = [spawn_link(d.run, self()) for d in devs]
    try:
        for _ in range(ROUNDS):
            for _ in range(rng.randrange(5, 80)):  # device turns before the kill
                receive(("progress", str))
            srv.kill()
            new = srv.start()
            for pid in pids:
                send(pid, ("port", new))

        def done() -> bool:
            for d, other in ((devs[0], devs[1]), (devs[1], devs[0])):
                if d.n < d.limit or d.unsure:
                    return False
                if not {mid for _, mid in other.acked} <= {m["mid"] for m in d.msgs}:
                    return False
                mine = {mid for _, mid in d.acked}
                if not mine <= _receipts(d, "delivered") & _receipts(d, "read"):
                    return False
            return True

        while not done():
            if receive(("progress", str), timeout=20.0, default=None) is None:
                raise AssertionError(f"seed {seed}: not done: " + "; ".join(
                    f"{d.phone} sent {d.n}, unsure {d.unsure}, missing "
                    f"{sorted({mid for _, mid in o.acked} - {m['mid'] for m in d.msgs})}, "
                    f"no delivered for "
                    f"{sorted({mid for _, mid in d.acked} - _receipts(d, 'delivered'))}, "
                    f"no read for {sorted({mid for _, mid in d.acked} - _receipts(d, 'read'))}"
                    for d, o in ((devs[0], devs[1]), (devs[1], devs[0]))))
    except ChatError as e:
        raise AssertionError(f"seed {seed}: {e}") from None
    finally:
        for pid in pids:
            unlink(pid)
            exit(pid, "kill")
        for d in devs:
            d.c.close()
        srv.kill()
    for d, other in ((devs[0], devs[1]), (devs[1], devs[0])):
        bodies = [m["body"] for m in d.msgs]
        assert len(bodies) == len(set(bodies)), f"seed {seed}: a message stored twice"
        order = [cmid for cmid, _ in other.acked]
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
