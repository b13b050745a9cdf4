"""Dead means dead: docs/semantics.md P17 (and the ordering it keeps, P10).

A process the runtime has declared dead has no further effects: whatever its greenlet
still runs (a ``finally`` block unwinding the exit) sends, links, monitors or spawns
nothing; everything it sent before its death arrives before its EXIT/``Down``.
"""

from __future__ import annotations

from otp import gen_server
from otp.errors import ProcessExit
from otp.gen_server import GenServer, NoReply, Ok, Reply
from otp.process import (
    Down,
    Exit,
    cancel_timer,
    exit,
    flush,
    link,
    monitor,
    receive,
    register,
    registered,
    send,
    send_after,
    spawn,
    spawn_link,
    trap_exit,
    whereis,
)
from otp.process import self as self_pid
from otp.testing import assert_receive, refute_receive, wait_all_blocked


class Echo(GenServer):
    def init(self, owner):
        return Ok(owner)

    def handle_call(self, request, from_, owner):
        send(owner, ("echo got", request))
        return Reply(request, owner)

    def handle_cast(self, request, owner):
        send(owner, ("echo cast", request))
        return NoReply(owner)


def test_p17_a_killed_process_finally_send_arrives_nowhere_and_all_before_death_precedes_down(
    node,
):
    me = self_pid()

    def victim():
        try:
            send(me, "before 1")
            send(me, "before 2")
            receive("never")
        finally:
            send(me, "from finally")

    pid = spawn(victim)
    ref = monitor(pid)
    wait_all_blocked()
    exit(pid, "kill")
    assert receive() == "before 1"
    assert receive() == "before 2"
    assert receive() == Down(ref, pid, "killed")
    wait_all_blocked()  # the victim's finally has run by now
    refute_receive()


def test_p17_a_killed_process_finally_has_no_effects(node):
    me = self_pid()
    trap_exit(True)
    echo = gen_server.start_link(Echo, me)
    other = spawn(receive, "never")
    done = []  # what the finally saw, kept outside the process (it cannot send)

    def attempt(what, fn, *args):
        try:
            result = fn(*args)
        except ProcessExit:
            done.append((what, "ProcessExit"))
        else:
            done.append((what, "returned", result is None))

    def victim():
        try:
            receive("never")
        finally:
            attempt("send", send, me, "sent")
            attempt("cast", gen_server.cast, echo, "cast")
            attempt("send_after", send_after, 0.0, me, "timer")
            attempt("cancel_timer", cancel_timer, send_after(10.0, me, "t"))
            attempt("spawn", spawn, send, me, "spawned")
            attempt("spawn_link", spawn_link, send, me, "spawned")
            attempt("link", link, other)
            attempt("monitor", monitor, other)
            attempt("register", register, "zombie", self_pid())
            attempt("call", gen_server.call, echo, "call")
            done.append("end")

    pid = spawn(victim)
    wait_all_blocked()
    exit(pid, "kill")
    wait_all_blocked()
    assert done == [
        ("send", "returned", False),
        ("cast", "returned", True),
        ("send_after", "returned", False),
        ("cancel_timer", "returned", True),
        ("spawn", "ProcessExit"),
        ("spawn_link", "ProcessExit"),
        ("link", "ProcessExit"),
        ("monitor", "ProcessExit"),
        ("register", "ProcessExit"),
        ("call", "ProcessExit"),
        "end",
    ]
    wait_all_blocked()
    refute_receive()  # no message, no timer, no spawned process's message, no echo
    assert whereis("zombie") is None and "zombie" not in registered()
    exit(other, "kill")
    gen_server.stop(echo)
    assert receive(Exit).pid == echo
    assert flush() == []


def test_p17_a_process_killed_by_its_own_exit_signal_sends_nothing_afterwards(node):
    # The cascade kills the caller inside exit(): it is dead before exit() returns.
    me = self_pid()

    def linked_pair():
        partner = spawn_link(receive, "never")
        try:
            send(me, "before")
            exit(partner, "boom")  # partner dies, the link kills this process at once
        finally:
            send(me, "from finally")

    pid = spawn(linked_pair)
    ref = monitor(pid)
    assert receive() == "before"
    assert receive() == Down(ref, pid, "boom")
    wait_all_blocked()
    refute_receive()


def test_p17_a_killed_server_replying_from_its_finally_reaches_no_mailbox(node):
    from otp.errors import CallError

    me = self_pid()

    def server():
        _, from_, _ = receive(("$gen_call", object, object))
        send(me, "holding a request")
        try:
            receive("never")
        finally:
            gen_server.reply(from_, "from a dead server")

    srv = spawn(server)

    def client():
        req = gen_server.send_request(srv, "question")
        try:
            gen_server.receive_response(req, None)
        except CallError as e:
            send(me, ("failed", e.reason, tuple(flush())))

    spawn(client)
    assert_receive("holding a request")
    exit(srv, "kill")
    assert_receive(("failed", "killed", ()))
