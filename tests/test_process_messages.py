"""Messages: ordering, names, selective receive and strict mode (docs/semantics.md P10-P13, P16).

Time-dependent rules run on the mock clock: a timeout is checked by reading the clock,
never by measuring how long a test took.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import NamedTuple

import pytest

from otp.errors import AlreadyRegistered, BadArg, NameTaken, NoProc, ReceiveTimeout
from otp.process import (
    ANY,
    Down,
    Exit,
    exit,
    flush,
    is_alive,
    make_ref,
    monitor,
    receive,
    register,
    registered,
    self,
    send,
    send_after,
    spawn,
    spawn_link,
    spawn_monitor,
    trap_exit,
    unregister,
    whereis,
)
from otp.testing import assert_down as wait_down
from otp.testing import assert_receive, wait_all_blocked
from otp.testing import stop_process as stop


def forever() -> None:
    receive(lambda m: False)




# --- P10 --------------------------------------------------------------------------------


def test_p10_messages_from_one_sender_arrive_in_send_order(node):
    parent = self()
    spawn(lambda: [send(parent, i) for i in range(200)])
    assert [receive() for _ in range(200)] == list(range(200))


def test_p10_message_sent_before_death_arrives_before_down(node):
    parent = self()
    pid, ref = spawn_monitor(lambda: send(parent, "last words"))
    assert receive() == "last words"
    assert receive() == Down(ref, pid, "normal")


def test_p10_message_sent_before_a_crash_arrives_before_exit(node):
    trap_exit(True)
    parent = self()

    def child():
        send(parent, "last words")
        exit("boom")

    pid = spawn_link(child)
    assert receive() == "last words"
    assert receive() == Exit(pid, "boom")


def test_p10_messages_and_exit_signals_from_one_sender_keep_send_order(node):
    parent = self()

    def receiver():
        trap_exit(True)
        send(parent, "ready")
        for _ in range(3):
            send(parent, ("got", receive()))

    rcv, ref = spawn_monitor(receiver)
    assert_receive("ready")

    def sender():
        send(rcv, "m1")
        exit(rcv, "signal")
        send(rcv, "m2")

    snd, sref = spawn_monitor(sender)
    wait_down(sref)
    got = [assert_receive(("got", ANY))[1] for _ in range(3)]
    assert got == ["m1", Exit(snd, "signal"), "m2"]
    wait_down(ref)


def test_p10_messages_sent_before_being_killed_arrive_before_down(node):
    parent = self()

    def child():
        for i in range(3):
            send(parent, i)
        forever()

    pid, ref = spawn_monitor(child)
    wait_all_blocked()
    exit(pid, "kill")
    assert [receive() for _ in range(4)] == [0, 1, 2, Down(ref, pid, "killed")]


# --- P11 --------------------------------------------------------------------------------


def test_p11_send_to_a_dead_pid_succeeds_silently(node):
    pid, ref = spawn_monitor(lambda: None)
    wait_down(ref)
    assert send(pid, "hello") == "hello"
    assert not is_alive(pid)


def test_p11_send_to_an_unregistered_name_raises_noproc(node):
    with pytest.raises(NoProc) as info:
        send("nobody", "hello")
    assert info.value.target == "nobody"
    assert "'nobody'" in str(info.value)


def test_p11_send_to_a_registered_name_delivers(node):
    register("me", self())
    send("me", "hello")
    assert receive(timeout=0) == "hello"
    unregister("me")


def test_p11_name_is_free_when_the_down_arrives_so_it_can_be_registered_at_once(node):
    pid = spawn(forever)
    register("svc", pid)
    ref = monitor(pid)
    exit(pid, "boom")
    assert wait_down(ref).reason == "boom"
    assert whereis("svc") is None
    new = spawn(forever)
    register("svc", new)  # no NameTaken: the dying process released it first
    assert whereis("svc") == new
    stop(new)


def test_p11_restarter_reacting_to_exit_reregisters_the_name_at_once(node):
    """A supervisor-like process: on the EXIT of its named child it starts a new one
    under the same name, in the same breath."""
    parent = self()

    def named_child():
        register("worker", self())
        send(parent, ("up", self()))
        forever()

    def restarter():
        trap_exit(True)
        spawn_link(named_child)
        receive(Exit)
        try:
            register("worker", spawn_link(forever))
            send(parent, "re-registered")
        except NameTaken as e:
            send(parent, ("name still taken", str(e)))
        forever()

    sup, _ref = spawn_monitor(restarter)
    first = assert_receive(("up", ANY))[1]
    exit(first, "crash")
    assert assert_receive(str) == "re-registered"
    assert whereis("worker") not in (None, first)
    stop(sup)  # kills the new worker through the link
    wait_all_blocked()
    assert whereis("worker") is None


def test_p11_name_is_free_for_a_trapping_link_on_a_crash(node):
    trap_exit(True)

    def child():
        register("crasher", self())
        exit("boom")

    pid = spawn_link(child)
    assert assert_receive(Exit) == Exit(pid, "boom")
    assert whereis("crasher") is None
    register("crasher", self())
    unregister("crasher")


# --- P12 --------------------------------------------------------------------------------


def test_p12_register_fails_if_the_name_is_taken(node):
    holder = spawn(forever)
    register("taken", holder)
    other = spawn(forever)
    with pytest.raises(NameTaken) as info:
        register("taken", other)
    msg = str(info.value)
    assert "'taken'" in msg and repr(holder) in msg
    assert whereis("taken") == holder
    stop(holder)
    stop(other)


def test_p12_register_fails_if_the_process_already_has_a_name(node):
    pid = spawn(forever)
    register("first", pid)
    with pytest.raises(AlreadyRegistered) as info:
        register("second", pid)
    assert "'first'" in str(info.value) and repr(pid) in str(info.value)
    assert whereis("second") is None
    assert registered() == ["first"]
    stop(pid)


def test_p12_names_disappear_when_the_process_ends(node):
    pid, ref = spawn_monitor(lambda: (register("short", self()), receive()))
    wait_all_blocked()
    assert whereis("short") == pid
    send(pid, "go")
    wait_down(ref)
    assert whereis("short") is None
    assert "short" not in registered()


def test_p12_unregister_frees_the_name_and_the_process_can_take_another(node):
    pid = spawn(forever)
    register("a", pid)
    unregister("a")
    assert whereis("a") is None
    register("b", pid)
    assert whereis("b") == pid
    with pytest.raises(NoProc):
        unregister("a")
    stop(pid)


# --- P13 --------------------------------------------------------------------------------


def test_p13_receive_returns_the_oldest_matching_message(node):
    for m in [("a", 1), ("b", 1), ("a", 2), ("b", 2)]:
        send(self(), m)
    assert receive(("b", ANY)) == ("b", 1)
    assert receive(("b", ANY)) == ("b", 2)


def test_p13_non_matching_messages_stay_in_order(node):
    for m in [1, "x", 2, "y", 3]:
        send(self(), m)
    assert receive(str) == "x"
    assert flush() == [1, 2, "y", 3]


def test_p13_a_later_scan_sees_messages_skipped_by_an_earlier_one(node):
    for m in [1, 2, 3]:
        send(self(), m)
    assert receive(3) == 3
    assert receive(1) == 1
    assert receive() == 2


def test_p13_blocked_receive_skips_non_matching_arrivals_and_takes_the_match(node):
    parent = self()
    spawn(lambda: [send(parent, m) for m in ("n1", "n2", "want", "n3")])
    assert receive("want") == "want"
    assert flush() == ["n1", "n2", "n3"]


def test_p13_timeout_starts_on_entry_and_is_not_reset_by_non_matching_arrivals(node, clock):
    start = clock.now()
    refs = [send_after(t, self(), ("noise", t)) for t in (3, 6, 9)]
    assert receive("wanted", timeout=10, default="timed out") == "timed out"
    assert clock.now() - start == 10
    assert flush() == [("noise", 3), ("noise", 6), ("noise", 9)]
    assert len(set(refs)) == 3


def test_p13_matching_arrival_before_the_timeout_is_returned_at_its_time(node, clock):
    start = clock.now()
    send_after(4, self(), "wanted")
    assert receive("wanted", timeout=10) == "wanted"
    assert clock.now() - start == 4


def test_p13_timeout_without_default_raises_receive_timeout(node, clock):
    send(self(), "other")
    with pytest.raises(ReceiveTimeout) as info:
        receive("wanted", timeout=2.5)
    assert "'wanted'" in str(info.value) and "2.5" in str(info.value)
    assert clock.now() == 2.5
    assert flush() == ["other"]


def test_p13_timeout_zero_polls_without_blocking(node, clock):
    parent = self()
    spawn(send, parent, "from child")  # runs only when we block
    assert receive(timeout=0, default="empty") == "empty"
    assert clock.now() == 0
    assert receive("from child") == "from child"


def test_p13_timeout_zero_returns_a_matching_message_already_queued(node):
    send(self(), "x")
    send(self(), "y")
    assert receive("y", timeout=0) == "y"
    assert receive(timeout=0) == "x"
    with pytest.raises(ReceiveTimeout):
        receive(timeout=0)


# --- P16 --------------------------------------------------------------------------------


@dataclasses.dataclass
class Mutable:
    x: int


@dataclasses.dataclass(frozen=True)
class Frozen:
    x: object


class Point(NamedTuple):
    x: object
    y: object


class Color(enum.Enum):
    RED = 1


class Plain:
    pass


REFUSED = {
    "list": ([1, 2], "list"),
    "dict": ({"a": 1}, "dict"),
    "set": ({1}, "set"),
    "bytearray": (bytearray(b"x"), "bytearray"),
    "dataclass": (Mutable(1), "Mutable"),
    "plain object": (Plain(), "Plain"),
    "list in tuple": (("ok", [1]), "list"),
    "dict in frozen dataclass": (Frozen({"k": 1}), "dict"),
    "set in namedtuple": (Point(1, {2}), "set"),
    "list deep inside": (("a", ("b", (Frozen(("c", [3])),))), "list"),
    "dataclass in frozenset": (frozenset({("k", Frozen(Plain()))}), "Plain"),
}


@pytest.mark.parametrize("value, type_name", REFUSED.values(), ids=list(REFUSED))
def test_p16_strict_mode_refuses_mutable_messages_with_a_clear_error(node, value, type_name):
    with pytest.raises(BadArg) as info:
        send(self(), value)
    msg = str(info.value)
    assert "immutable" in msg and type_name in msg
    assert flush() == []  # nothing was delivered


def test_p16_error_names_where_the_mutable_part_is(node):
    with pytest.raises(BadArg) as info:
        send(self(), ("a", ("b", [1])))
    assert "message[1][1]" in str(info.value)
    with pytest.raises(BadArg) as info:
        send(self(), Frozen({"k": 1}))
    assert "message.x" in str(info.value)


ACCEPTED = {
    "str": "text",
    "bytes": b"raw",
    "numbers": (1, 2.5, 3j, True, None),
    "tuple": ("a", ("nested", 1)),
    "frozenset": frozenset({1, ("a", 2)}),
    "frozen dataclass": Frozen(("x", Frozen(1))),
    "namedtuple": Point(1, ("y",)),
    "enum": Color.RED,
    "exception": ValueError("boom"),
    "down": Down(None, None, "normal"),
    "function": forever,
}


@pytest.mark.parametrize("value", ACCEPTED.values(), ids=list(ACCEPTED))
def test_p16_strict_mode_accepts_immutable_values(node, value):
    send(self(), value)
    assert receive(timeout=0) is value


def test_p16_strict_mode_passes_sockets_as_handles(node):
    import _socket
    import os
    import socket

    a, b = socket.socketpair()  # gevent's (the suite runs patched)
    raw = _socket.socket(fileno=os.dup(a.fileno()))  # and the standard library's own
    try:
        send(self(), ("tcp", a, b"data", raw))
        assert receive(timeout=0) == ("tcp", a, b"data", raw)
    finally:
        for s in (a, b, raw):
            s.close()


def test_p16_strict_mode_accepts_pids_and_refs(node):
    msg = ("ids", self(), make_ref(), monitor(self()))
    send(self(), msg)
    assert receive(tuple, timeout=0) is msg


def test_p16_strict_mode_checks_send_after_messages(node):
    with pytest.raises(BadArg):
        send_after(1, self(), [1])


def test_p16_strict_mode_refuses_a_mutable_exit_reason(node):
    pid = spawn(forever)
    with pytest.raises(BadArg) as info:
        exit(pid, {"why": "mutable"})
    assert "exit reason" in str(info.value) and "dict" in str(info.value)
    assert is_alive(pid)
    stop(pid)


@pytest.mark.otp(strict=False)
def test_p16_without_strict_mode_messages_pass_by_reference_unchecked(node):
    box = [1]
    send(self(), box)
    assert receive() is box


def test_p13_an_infinite_timeout_waits_forever_even_on_the_mock_clock(node, clock):
    parent = self()
    pid, ref = spawn_monitor(lambda: send(parent, receive(timeout=float("inf"), default="gave up")))
    wait_all_blocked()
    assert node.next_deadline() is None  # no timer: the clock has nothing to jump to
    send(pid, "late but welcome")
    assert receive(str) == "late but welcome"
    wait_down(ref)
    assert clock.now() == 0


def test_p16_strict_mode_has_no_depth_limit_for_nested_tuples(node):
    cons = None
    for i in range(5000):
        cons = (i, cons)
    send(self(), cons)
    assert receive(timeout=0) is cons
    with pytest.raises(BadArg) as info:
        send(self(), ("head", (1, (2, ([3],)))))
    assert "message[1][1][1][0] must be immutable" in str(info.value)
