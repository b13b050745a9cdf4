"""Property test of the message path (C1, C2): random schedules of sends, crashes of the
sender's and the recipient's user processes, device acks (answered ones, and protocol
version 2's unanswered ones) and reconnects, under the mock clock. Whatever the
schedule, every acknowledged message reaches the device once (deduplicated by mid), in
send order, and no client message id is stored twice.

The test process plays the recipient's device: it holds ``chat.device.<B>`` and gets
the pushes; the sender's device is the test process calling ``users.call``.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chat import store, users
from otp import gen_server, supervisor
from otp.errors import CallError
from otp.process import (
    ANY,
    Down,
    exit,
    flush,
    monitor,
    receive,
    register,
    unlink,
    unregister,
    whereis,
)
from otp.process import self as me
from otp.supervisor import DynamicSupervisor
from otp.testing import wait_all_blocked

A, B = "+14155550100", "+14155550111"
ACTIONS = st.lists(st.sampled_from(["send", "send", "send", "kill_sender", "kill_recipient",
                                    "ack", "ack_unanswered", "reconnect"]),
                   min_size=1, max_size=25)


def _kill(phone):
    pid = whereis(users.name(phone))
    if pid is not None:
        ref = monitor(pid)
        exit(pid, "kill")
        receive(lambda m: isinstance(m, Down) and m.ref == ref)


def _send(cmid):
    for _ in range(10):  # a device resends with the same cmid until it gets the reply
        try:
            r = users.call(A, ("send", B, cmid, cmid))
            return r[1]
        except CallError:
            continue
    raise AssertionError("send never acknowledged")


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(schedule=ACTIONS)
def test_c1_random_crash_schedules_deliver_every_acknowledged_message_once_in_order(
        node, schedule):
    users.set_context(users.UserCtx(retry_initial=0.05, retry_max=1.0, idle_stop=5.0))
    backend = store.MemoryBackend()
    st_pid = store.start_link(backend)
    sup = supervisor.start_link(DynamicSupervisor, {"intensity": 1000, "period": 1.0},
                                name=users.SUP)
    for phone in (A, B):
        backend.users[phone] = [b"k", 1, False, None]
    register(users.device_name(B), me())
    acked: list[str] = []
    seen: list[str] = []
    unacked_ids: list[int] = []

    def take_pushes(timeout=0):
        while True:
            m = receive(("chat.push", ANY), timeout, default=None)
            if m is None:
                return
            for seq, _peer, kind, payload in m[1]:
                unacked_ids.append(seq)
                if kind == "msg" and payload[0] not in seen:
                    seen.append(payload[0])

    try:
        users.call(B, ("attach", me()))
        n = 0
        for action in schedule:
            if action == "send":
                n += 1
                acked.append(_send(f"c{n}"))
            elif action == "kill_sender":
                _kill(A)
            elif action == "kill_recipient":
                _kill(B)
            elif action == "ack":
                take_pushes()
                if unacked_ids:
                    try:
                        users.call(B, ("ack", tuple(unacked_ids)))
                    except CallError:
                        pass
                    unacked_ids.clear()
            elif action == "ack_unanswered":  # protocol version 2's ack: a cast
                take_pushes()
                if unacked_ids:
                    gen_server.cast(users.ensure(B), ("ack", tuple(unacked_ids)))
                    unacked_ids.clear()
            elif action == "reconnect":  # the old connection ends, a new one logs in
                unacked_ids.clear()
                users.call(B, ("detach", me()))
                users.call(B, ("attach", me()))
        users.call(B, ("attach", me()))  # make sure B runs and streams to us
        for _ in range(200):
            wait_all_blocked()
            take_pushes(0.5)
            if set(acked) <= set(seen):
                break
        assert seen == acked  # each once, in send order, and nothing else (C1, C2)
        cmids = [p[3][1] for p in backend.inbox.get(B, {}).values() if p[2] == "msg"]
        assert len(cmids) == len(set(cmids)), "a message stored twice in the inbox"
    finally:
        unregister(users.device_name(B))
        for pid in (sup, st_pid):
            unlink(pid)
            gen_server.stop(pid)
        flush()
