"""A live upgrade of the chat user process (docs/semantics.md A4, A7, C1): a version 2 of
``chat.users`` whose state has one more field is loaded through the code server and the
running user processes are moved to it with suspend -> change_code -> resume, while a
device keeps sending through a real socket. Nothing is lost or duplicated, and the state
the processes had is migrated, not rebuilt."""

from __future__ import annotations

import inspect

import pytest

import chat
import chat.users as users_v1
from otp import code
from otp import sys as otp_sys
from otp.process import Exit, receive, send, spawn_link, trap_exit, whereis
from otp.process import self as _self
from tests.chat_helpers import running_chat

pytestmark = pytest.mark.otp(clock="real")

A, B = "+14155550100", "+14155550111"
N = 60


def users_v2_source() -> str:
    """chat/users.py with a new state field and a code_change that fills it."""
    src = inspect.getsource(users_v1)
    old_field = "    last_push: float = -1e18\n"
    assert src.count(old_field) == 1, "chat.users._State changed: update this test"
    src = src.replace(old_field, old_field + "    upgraded_from: Any = None\n")
    return src + '''

VERSION = 2


def _code_change(self, old_vsn, s, extra):
    if isinstance(old_vsn, tuple) and old_vsn[:1] == ("down",):
        raise ValueError("no downgrade in this test")
    fields = {f.name: getattr(s, f.name) for f in dataclasses.fields(s)}
    return _State(**fields, upgraded_from=old_vsn)


User.code_change = _code_change
import dataclasses  # noqa: E402
'''


def msgs(evs):
    return [e for e in evs if e["t"] == "msg"]


def sender(client, me):
    mids = []
    for i in range(N):
        mids.append(client.send(B, f"m{i}").mid)
        if i == 10:
            send(me, "halfway")
            receive("go")  # the rest is sent while the user processes are suspended
    send(me, ("sent", tuple(mids)))


def test_chat_user_processes_upgrade_live_while_a_device_keeps_sending(node, tmp_path):
    v2_dir = tmp_path / "v2" / "chat"
    v2_dir.mkdir(parents=True)
    (v2_dir / "users.py").write_text(users_v2_source())
    snapshot = code._snapshot("chat.users")
    try:
        with running_chat(tmp_path, users={"idle_stop": 120.0}) as srv:
            a, b = srv.user(A), srv.user(B)
            a.send(B, "before")
            assert [m["body"] for m in msgs(b.wait_for(msgs))] == ["before"]
            pids = [whereis(users_v1.name(A)), whereis(users_v1.name(B))]
            assert sorted(code.processes_running("chat.users")) == sorted(pids)
            before = {p: otp_sys.get_state(p) for p in pids}

            trap_exit(True)
            writer = spawn_link(sender, a, _self())
            receive("halfway", 10)  # the device has sent 11 messages, and goes on

            chat.__path__.insert(0, str(v2_dir))
            for p in pids:
                otp_sys.suspend(p)
            send(writer, "go")
            v2 = code.load("chat.users")
            assert v2.VERSION == 2
            # A7: loaded, but the processes still run version 1 until change_code.
            assert sorted(code.processes_running("chat.users", old=True)) == sorted(pids)
            for p in pids:
                otp_sys.change_code(p, v2, "0.1.0")
            for p in pids:
                otp_sys.resume(p)

            _, mids = receive(lambda m: isinstance(m, tuple) and m[0] == "sent", 30)
            assert receive(Exit, 10).reason == "normal" and writer
            got = msgs(b.wait_for(lambda evs: len(msgs(evs)) >= N, timeout=30))
            # Everything sent arrives once (the device sees each mid once), in order.
            assert [m["mid"] for m in got] == list(mids)
            assert [m["body"] for m in got] == [f"m{i}" for i in range(N)]
            # The processes run v2 on their migrated state (same phone, same counters
            # carried over; the new field filled by code_change).
            assert code.processes_running("chat.users", old=True) == []
            for p in pids:
                st = otp_sys.get_state(p)
                assert type(st).__name__ == "_State" and st.upgraded_from == "0.1.0"
                assert st.phone == before[p].phone and st.key_hash == before[p].key_hash
                assert st.out_next >= before[p].out_next
                assert otp_sys.get_status(p).module == "chat.users.User"
            a_state = otp_sys.get_state(pids[0])
            assert a_state.out_next == before[pids[0]].out_next + N
            assert not hasattr(before[pids[0]], "upgraded_from")
    finally:
        if str(v2_dir) in chat.__path__:
            chat.__path__.remove(str(v2_dir))
        code._restore(snapshot)
