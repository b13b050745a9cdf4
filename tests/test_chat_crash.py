"""Crash safety (C1, D3): the whole server killed with SIGKILL at random moments while a
client sends; after each restart, every message the server acknowledged is delivered
exactly once, in order, and none is duplicated under another id."""

from __future__ import annotations

import random

import pytest

from chat.client import ChatError, Client
from chat.protocol import encode
from tests.chat_helpers import ServerProcess

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
