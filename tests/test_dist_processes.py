"""Processes across nodes, without sockets: the kernel's distribution hooks and
``otp.dist._control.dispatch`` driven directly with decoded control tuples.

A ``RecordingHook`` stands in for the distribution layer (``node.dist``): it records
what the kernel asks it to send. Incoming control messages are fed to ``dispatch`` as a
connection's reader would. Rules: docs/semantics.md P1-P5 and P14 across nodes, P10
(ordering), D1 (a lost connection fires ``noconnection`` on every link and monitor
across, ``NodeDown`` to node monitors), P18 (aliases).
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

import otp.process
from otp import gen_server
from otp.dist import _control
from otp.dist._control import connection_lost, dispatch
from otp.dist._etf_types import Atom, ImproperList
from otp.errors import BadArg, CallError, ProcessExit
from otp.process import (
    Down,
    Exit,
    NodeDown,
    Pid,
    Ref,
    demonitor,
    exit,
    is_alive,
    link,
    monitor,
    monitor_node,
    receive,
    register,
    self,
    send,
    spawn,
    spawn_monitor,
    trap_exit,
    unlink,
)
from otp.testing import assert_down, assert_receive, refute_receive, wait_all_blocked

PEER = "peer@127.0.0.1"
R = Pid(PEER, 7, 1)  # a process of the peer node
R2 = Pid(PEER, 8, 1)


class RecordingHook:
    """A ``DistHook`` that records every call as ``(method, args...)``."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.connected: list[str] = [PEER]

    def __getattr__(self, name: str) -> Any:
        if name == "nodes":
            return lambda: list(self.connected)
        return lambda *args: self.calls.append((name, *args))

    def of(self, name: str) -> list[tuple[Any, ...]]:
        return [c[1:] for c in self.calls if c[0] == name]


@pytest.fixture
def hook(node):
    h = RecordingHook()
    node.dist = h
    yield h
    node.dist = None


@pytest.fixture(autouse=True)
def _quiet(caplog):
    caplog.set_level(logging.CRITICAL, logger="otp.process")


def forever() -> None:
    receive(lambda m: False)


# --- send -----------------------------------------------------------------------------


def test_send_to_a_pid_of_another_node_goes_to_the_hook(hook):
    send(R, ("hello", 1))
    assert hook.of("send") == [(self(), R, ("hello", 1))]


def test_send_to_name_on_another_node_goes_to_the_hook_as_reg_send(hook):
    send(("echo", PEER), "hi")
    [(sender, name, where, msg)] = hook.of("reg_send")
    assert (sender, name, where, msg) == (self(), "echo", PEER, "hi")
    assert name.__class__ is Atom


def test_send_to_name_on_this_node_by_pair_is_a_local_send(node):
    register("me", self())
    send(("me", node.name), "local")
    assert_receive("local")


def test_send_to_another_node_without_distribution_is_dropped(node):
    send(R, "lost")
    send(("echo", PEER), "lost too")
    refute_receive(lambda m: True)


def test_send_to_a_malformed_pair_is_a_badarg(node):
    with pytest.raises(BadArg, match="name, node"):
        send(("echo", "no-at-sign"), "x")


def test_incoming_send_reaches_a_local_pid_and_reg_send_a_name(node, hook):
    register("inbox", self())
    dispatch(node, None, (_control.SEND, None, self()), "by pid")
    dispatch(node, None, (_control.SEND_SENDER, R, self()), "by pid, with sender")
    dispatch(node, None, (_control.REG_SEND, R, None, Atom("inbox")), "by name")
    dispatch(node, None, (_control.REG_SEND, R, None, Atom("nobody")), "dropped")
    assert [receive(), receive(), receive()] == ["by pid", "by pid, with sender", "by name"]
    refute_receive(lambda m: True)


def test_p10_messages_then_exit_from_one_remote_sender_arrive_in_order(node, hook):
    trap_exit(True)
    dispatch(node, None, (_control.LINK, R, self()))
    for i in range(5):
        dispatch(node, None, (_control.SEND_SENDER, R, self()), i)
    dispatch(node, None, (_control.EXIT, R, self(), Atom("boom")))
    assert [receive() for _ in range(6)] == [0, 1, 2, 3, 4, Exit(R, "boom")]


# --- links ----------------------------------------------------------------------------


def test_p14_link_to_another_node_without_distribution_gives_noconnection(node):
    trap_exit(True)
    link(R)
    assert_receive(Exit(R, "noconnection"))

    def linker() -> None:
        link(R)
        forever()

    pid, ref = spawn_monitor(linker)
    assert assert_down(ref).reason == "noconnection"
    assert not is_alive(pid)


def test_p1_remote_link_exit_ends_a_non_trapping_local_process(node, hook):
    pid, ref = spawn_monitor(lambda: (link(R), forever()))
    wait_all_blocked()
    assert hook.of("link") == [(pid, R)]
    dispatch(node, None, (_control.EXIT, R, pid, Atom("boom")))
    assert assert_down(ref).reason == "boom"


def test_p2_normal_exit_across_a_link_does_not_end_the_local_process(node, hook):
    pid, ref = spawn_monitor(lambda: (link(R), forever()))
    wait_all_blocked()
    dispatch(node, None, (_control.PAYLOAD_EXIT, R, pid), Atom("normal"))
    wait_all_blocked()
    assert is_alive(pid)
    exit(pid, "kill")
    assert_down(ref)


def test_p3_trapping_process_gets_remote_exit_as_message_with_str_reason(node, hook):
    trap_exit(True)
    link(R)
    dispatch(node, None, (_control.EXIT_TT, R, self(), None, Atom("shutdown")))
    msg = assert_receive(Exit)
    assert msg == Exit(R, "shutdown") and msg.reason.__class__ is str


def test_p4_local_death_signals_every_remote_link_with_an_atom_reason(node, hook):
    def child() -> None:
        link(R)
        receive("die")
        raise ProcessExit("bye")

    pid, ref = spawn_monitor(child)
    wait_all_blocked()
    dispatch(node, None, (_control.LINK, R2, pid))
    send(pid, "die")
    assert_down(ref)
    exits = sorted(hook.of("exit"), key=lambda c: c[1].id)
    assert exits == [(pid, R, "bye"), (pid, R2, "bye")]
    assert exits[0][2].__class__ is Atom


def test_p5_incoming_link_to_a_dead_pid_answers_exit_noproc(node, hook):
    pid, ref = spawn_monitor(lambda: None)
    assert_down(ref)
    dispatch(node, None, (_control.LINK, R, pid))
    assert hook.of("exit") == [(pid, R, "noproc")]


def test_unlink_tells_the_peer_and_a_later_exit_is_ignored(node, hook):
    link(R)
    unlink(R)
    [(me, to, uid)] = hook.of("unlink")
    assert (me, to) == (self(), R) and isinstance(uid, int)
    dispatch(node, None, (_control.EXIT, R, self(), Atom("late")))  # not linked any more
    assert is_alive(self())


def test_incoming_unlink_id_removes_the_link_and_is_acknowledged(node, hook):
    pid, ref = spawn_monitor(forever)
    dispatch(node, None, (_control.LINK, R, pid))
    dispatch(node, None, (_control.UNLINK_ID, 42, R, pid))
    assert hook.of("unlink_ack") == [(pid, R, 42)]
    exit(pid, "kill")
    assert_down(ref)
    assert hook.of("exit") == []


def test_exit2_from_a_remote_process(node, hook):
    pid, ref = spawn_monitor(forever)
    dispatch(node, None, (_control.EXIT2, R, pid, Atom("kill")))
    assert assert_down(ref).reason == "killed"
    trap_exit(True)
    dispatch(node, None, (_control.PAYLOAD_EXIT2, R, self()), ("custom", 1))
    assert_receive(Exit(R, ("custom", 1)))


def test_exit_to_a_remote_pid_goes_to_the_hook_as_exit2(hook):
    exit(R, "shutdown")
    assert hook.of("exit2") == [(self(), R, "shutdown")]


# --- monitors -------------------------------------------------------------------------


def test_monitor_of_a_remote_pid_fires_on_monitor_p_exit(node, hook):
    ref = monitor(R)
    assert hook.of("monitor") == [(self(), R, PEER, ref)]
    wire = Ref(ref.node, ref.id)  # as decoded: equal, not the same object
    dispatch(node, None, (_control.MONITOR_P_EXIT, R, self(), wire, Atom("done")))
    down = assert_receive(Down)
    assert down == Down(ref, R, "done") and down.reason.__class__ is str
    assert down.ref is ref  # a receiver may match its monitor's Down by identity


def test_monitor_by_name_on_another_node_names_the_pair_in_down(node, hook):
    ref = monitor(("db", PEER))
    [(me, target, where, r)] = hook.of("monitor")
    assert (me, target, where, r) == (self(), "db", PEER, ref)
    dispatch(node, None, (_control.PAYLOAD_MONITOR_P_EXIT, Atom("db"), self(), ref), "x")
    assert_receive(Down(ref, ("db", PEER), "x"))


def test_demonitor_of_a_remote_monitor_tells_the_peer_and_drops_a_late_exit(node, hook):
    ref = monitor(R)
    assert demonitor(ref) is True
    assert hook.of("demonitor") == [(self(), R, PEER, ref)]
    dispatch(node, None, (_control.MONITOR_P_EXIT, R, self(), ref, Atom("late")))
    refute_receive(Down)


def test_monitor_of_another_node_without_distribution_is_down_noconnection(node):
    ref = monitor(R)
    assert_receive(Down(ref, R, "noconnection"))


def test_remote_monitor_of_a_local_name_reports_its_exit_by_name(node, hook):
    pid, ref = spawn_monitor(forever)
    register("svc", pid)
    mref = Ref(PEER, 99)
    dispatch(node, None, (_control.MONITOR_P, R, Atom("svc"), mref))
    exit(pid, "stop")
    assert_down(ref)
    assert hook.of("monitor_exit") == [("svc", R, mref, "stop")]


def test_remote_monitor_of_a_missing_process_answers_noproc(node, hook):
    mref = Ref(PEER, 98)
    dispatch(node, None, (_control.MONITOR_P, R, Atom("nobody"), mref))
    assert hook.of("monitor_exit") == [("nobody", R, mref, "noproc")]


def test_remote_demonitor_means_no_monitor_exit(node, hook):
    pid, ref = spawn_monitor(forever)
    mref = Ref(PEER, 97)
    dispatch(node, None, (_control.MONITOR_P, R, pid, mref))
    dispatch(node, None, (_control.DEMONITOR_P, R, pid, mref))
    exit(pid, "kill")
    assert_down(ref)
    assert hook.of("monitor_exit") == []


# --- connection loss (D1) ---------------------------------------------------------------


def test_d1_lost_connection_fires_noconnection_on_links_monitors_and_node_monitors(node, hook):
    me = self()
    trap_exit(True)
    link(R)
    mref = monitor(R2)
    nref = monitor(("db", PEER))
    monitor_node(PEER)
    monitor_node(PEER)
    _victim, vref = spawn_monitor(lambda: (link(R), forever()))
    wait_all_blocked()
    connection_lost(node, PEER)
    assert assert_down(vref).reason == "noconnection"
    assert_receive(Exit(R, "noconnection"))
    assert_receive(Down(mref, R2, "noconnection"))
    assert_receive(Down(nref, ("db", PEER), "noconnection"))
    assert_receive(NodeDown(PEER))
    assert_receive(NodeDown(PEER))
    # everything across is gone: a second loss fires nothing
    connection_lost(node, PEER)
    refute_receive(lambda m: True)
    assert me == self()


def test_monitor_node_off_means_no_node_down(node, hook):
    monitor_node(PEER)
    monitor_node(PEER, False)
    connection_lost(node, PEER)
    refute_receive(NodeDown)


def test_monitor_node_without_distribution_is_node_down_at_once(node):
    monitor_node(PEER)
    assert_receive(NodeDown(PEER))


def test_lost_connection_forgets_the_peers_monitors_of_local_processes(node, hook):
    pid, ref = spawn_monitor(forever)
    dispatch(node, None, (_control.MONITOR_P, R, pid, Ref(PEER, 5)))
    connection_lost(node, PEER)
    exit(pid, "kill")
    assert_down(ref)
    assert hook.of("monitor_exit") == []


# --- aliases (P18) ----------------------------------------------------------------------


def test_alias_send_from_another_node_reaches_an_active_alias_only(node, hook):
    a = otp.process.alias(reply=True)
    wire = Ref(a.node, a.id)  # as decoded: no owner
    dispatch(node, None, (_control.ALIAS_SEND, R, wire), "first")
    dispatch(node, None, (_control.ALIAS_SEND_TT, R, wire, None), "second")
    assert_receive("first")
    refute_receive("second")


def test_send_to_an_alias_of_another_node_goes_to_the_hook(hook):
    a = Ref(PEER, 12)
    send(a, "to alias")
    assert hook.of("alias_send") == [(self(), a, "to alias")]


# --- node(), nodes(), is_alive(), spawn requests ---------------------------------------------


def test_node_nodes_and_is_alive(node):
    from otp import process

    assert process.node() == node.name
    assert process.nodes() == []
    assert process.is_alive() is False
    node.dist = RecordingHook()
    try:
        assert process.nodes() == [PEER]
        assert process.is_alive() is True
    finally:
        node.dist = None
    with pytest.raises(BadArg, match="pid of this node"):
        process.is_alive(R)


def test_spawn_request_is_refused_with_a_spawn_reply(node, hook):
    sent: list[tuple[Any, ...]] = []

    class Conn:
        def send_control(self, ctrl: tuple[Any, ...], payload: Any = None) -> None:
            sent.append(ctrl)

    req = Ref(PEER, 3)
    ctrl = (_control.SPAWN_REQUEST, req, R, R, (Atom("m"), Atom("f"), 0), [])
    dispatch(node, Conn(), ctrl, [])
    assert sent == [(_control.SPAWN_REPLY, req, R, 0, "notsup")]


def test_unknown_and_malformed_control_messages_are_ignored(node, hook):
    dispatch(node, None, (99, 1, 2))
    dispatch(node, None, (_control.LINK,))
    assert is_alive(self())


# --- gen_server across nodes (G10 on aliases) --------------------------------------------


class Adder(gen_server.GenServer):
    def init(self, arg: Any) -> Any:
        return gen_server.Ok(arg)

    def handle_call(self, request: Any, from_: Any, state: Any) -> Any:
        return gen_server.Reply(state + request, state)

    def handle_cast(self, request: Any, state: Any) -> Any:
        return gen_server.NoReply(state + request)


def _beam_from(ref: Ref) -> tuple[Pid, ImproperList]:
    return (R, ImproperList((Atom("alias"),), ref))


def test_call_by_name_and_this_node_is_a_local_call(node):
    gen_server.start_link(Adder, 1, name="adder")
    assert gen_server.call(("adder", node.name), 41) == 42
    gen_server.cast(("adder", node.name), 10)
    assert gen_server.call("adder", 0) == 11
    gen_server.stop("adder")


def test_a_server_answers_a_beam_caller_through_its_alias(node, hook):
    pid = gen_server.start_link(Adder, 1)
    tag_ref = Ref(PEER, 77)
    dispatch(node, None, (_control.SEND, None, pid), (Atom("$gen_call"), _beam_from(tag_ref), 2))
    wait_all_blocked()
    [(sender, alias_ref, msg)] = hook.of("alias_send")
    assert (sender, alias_ref) == (pid, tag_ref)
    assert msg == (ImproperList((Atom("alias"),), tag_ref), 3)
    gen_server.stop(pid)


def test_a_server_answers_an_old_style_caller_with_tag_and_reply(node, hook):
    pid = gen_server.start_link(Adder, 1)
    tag = Ref(PEER, 78)
    dispatch(node, None, (_control.SEND, None, pid), (Atom("$gen_call"), (R, tag), 5))
    wait_all_blocked()
    assert hook.of("send") == [(pid, R, (tag, 6))]
    gen_server.stop(pid)


def test_a_cast_from_another_node_reaches_handle_cast(node, hook):
    pid = gen_server.start_link(Adder, 1, name="adder")
    dispatch(node, None, (_control.REG_SEND, R, None, Atom("adder")), (Atom("$gen_cast"), 4))
    assert gen_server.call(pid, 0) == 5
    gen_server.stop(pid)


def _remote_caller(parent: Pid, server: Any) -> None:
    try:
        send(parent, ("ok", gen_server.call(server, "req", timeout=None)))
    except CallError as e:
        send(parent, ("error", e.reason))


def test_call_to_a_pid_of_another_node_monitors_sends_and_takes_the_alias_reply(node, hook):
    caller = spawn(_remote_caller, self(), R)
    wait_all_blocked()
    [(_, target, where, mref)] = hook.of("monitor")
    assert (target, where) == (R, PEER)
    [(sender, dest, (label, (from_pid, tag), request))] = hook.of("send")
    assert (sender, dest, label, from_pid, request) == (caller, R, "$gen_call", caller, "req")
    assert label.__class__ is Atom and tag.items == ("alias",)
    wire_alias = Ref(tag.tail.node, tag.tail.id)  # as decoded: no owner
    dispatch(node, None, (_control.ALIAS_SEND, R, wire_alias), (tag, "answer"))
    assert_receive(("ok", "answer"))
    assert hook.of("demonitor") == [(caller, R, PEER, mref)]
    # a second reply goes to an inactive alias: dropped
    dispatch(node, None, (_control.ALIAS_SEND, R, wire_alias), (tag, "again"))
    refute_receive(lambda m: True)


def test_call_to_name_on_another_node_fails_with_noconnection_when_it_drops(node, hook):
    spawn(_remote_caller, self(), ("svc", PEER))
    wait_all_blocked()
    [(_, name, where, _)] = hook.of("monitor")
    assert (name, where) == ("svc", PEER)
    [(_, reg_name, _, _)] = hook.of("reg_send")
    assert reg_name == "svc"
    connection_lost(node, PEER)
    assert_receive(("error", "noconnection"))


def test_call_to_another_node_without_distribution_is_noconnection(node):
    with pytest.raises(CallError) as e:
        gen_server.call(R, "x")
    assert e.value.reason == "noconnection"


def test_multi_call_collects_replies_and_bad_nodes(node):
    gen_server.start_link(Adder, 100, name="adder")
    replies, bad = gen_server.multi_call([node.name, PEER], "adder", 1, timeout=5.0)
    assert replies == [(node.name, 101)]
    assert bad == [PEER]
    replies, bad = gen_server.multi_call([node.name], "nobody", 1)
    assert (replies, bad) == ([], [node.name])
    gen_server.stop("adder")


def test_abcast_casts_to_every_node_and_drops_what_it_cannot_reach(node, hook):
    pid = gen_server.start_link(Adder, 0, name="adder")
    gen_server.abcast([node.name, PEER], "adder", 7)
    assert gen_server.call(pid, 0) == 7
    [(_, name, where, msg)] = hook.of("reg_send")
    assert (name, where, msg) == ("adder", PEER, ("$gen_cast", 7))
    gen_server.stop(pid)


def test_a_cast_to_another_node_carries_the_atom_label_beam_expects(node, hook):
    gen_server.cast(R, "by pid")
    gen_server.cast(("svc", PEER), "by name")
    [(_, _, by_pid)] = hook.of("send")
    [(_, _, _, by_name)] = hook.of("reg_send")
    assert by_pid == ("$gen_cast", "by pid") and by_pid[0].__class__ is Atom
    assert by_name == ("$gen_cast", "by name") and by_name[0].__class__ is Atom


def test_send_request_to_another_node_takes_its_answer_through_the_alias(node, hook):
    req = gen_server.send_request(R, "req")
    [(_, _, (label, (_, tag), request))] = hook.of("send")
    assert (label, request) == ("$gen_call", "req")
    wire_alias = Ref(tag.tail.node, tag.tail.id)
    dispatch(node, None, (_control.ALIAS_SEND, R, wire_alias), (tag, "answer"))
    assert gen_server.receive_response(req, 5.0) == "answer"
    req2 = gen_server.send_request(("svc", PEER), "req")
    connection_lost(node, PEER)
    with pytest.raises(CallError) as e:
        gen_server.receive_response(req2, 5.0)
    assert e.value.reason == "noconnection"
