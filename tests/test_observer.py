"""otp.observer: top of processes, built on process_info (and its current_function)."""

from __future__ import annotations

import pytest

from otp import gen_server, observer
from otp import sys as otp_sys
from otp.gen_server import GenServer, Reply
from otp.process import Down, monitor, process_info, receive, register, send, spawn
from otp.process import self as self_pid
from otp.testing import refute_receive, wait_all_blocked


def waiting_for_go():
    receive("go")


class Echo(GenServer):
    def handle_call(self, request, from_, state):
        match request:
            case "block":
                receive("unblock")
        return Reply(request, state)


# --- process_info(pid).current_function ---------------------------------------------------


def test_current_function_of_a_process_blocked_in_receive_is_the_function_that_called_it(node):
    pid = spawn(waiting_for_go)
    wait_all_blocked()
    assert process_info(pid).current_function == f"{__name__}.waiting_for_go"
    send(pid, "go")


def test_current_function_of_the_calling_process_is_the_caller(node):
    fn = process_info(self_pid()).current_function
    assert fn == f"{__name__}.test_current_function_of_the_calling_process_is_the_caller"


def test_current_function_of_an_idle_gen_server_is_its_loop_and_of_a_busy_one_the_callback(
    node,
):
    pid = gen_server.start_link(Echo)
    assert process_info(pid).current_function == "otp.gen_server._loop"
    caller = spawn(lambda: gen_server.call(pid, "block"))
    wait_all_blocked()
    assert process_info(pid).current_function == f"{__name__}.Echo.handle_call"
    ref = monitor(caller)
    send(pid, "unblock")
    receive(Down)
    del ref
    gen_server.stop(pid)


# --- top ---------------------------------------------------------------------------------------


def test_top_puts_the_longest_message_queue_first_with_its_name_and_function(node):
    pid = spawn(waiting_for_go)
    register("slow", pid)
    for n in range(3):
        send(pid, ("job", n))
    wait_all_blocked()
    first = observer.top(limit=2)[0]
    assert first.pid == pid and first.queue == 3 and first.name == "slow"
    assert first.current_function == f"{__name__}.waiting_for_go"
    assert first.behaviour is None and first.messages is None
    assert first.memory > 0
    send(pid, "go")


def test_top_shows_a_behaviour_processes_class_and_turns_counting_on_when_sorting_by_messages(
    node,
):
    busy = gen_server.start_link(Echo, name="busy")
    idle = gen_server.start_link(Echo)
    observer.top(sort="messages")  # counting starts
    for n in range(5):
        gen_server.call(busy, n)
    rows = observer.top(sort="messages", limit=2)
    assert [r.pid for r in rows] == [busy, idle]
    assert [r.messages for r in rows] == [5, 0]
    assert rows[0].behaviour == f"{__name__}.Echo"
    assert rows[0].describe() == f"{__name__}.Echo"  # waiting in the gen_server loop
    assert otp_sys.statistics(busy).messages_in == 5
    # Other sorts show the counts of the rows they list.
    by_queue = {r.pid: r.messages for r in observer.top(limit=10)}
    assert by_queue[busy] == 5
    refute_receive(None, timeout=0)  # nothing stray left in the caller's mailbox
    gen_server.stop(busy)
    gen_server.stop(idle)


def test_top_does_not_wait_longer_than_its_timeout_for_a_stuck_behaviour_process(node, clock):
    stuck = gen_server.start_link(Echo)
    caller = spawn(lambda: gen_server.call(stuck, "block", timeout=None))
    wait_all_blocked()
    t0 = clock.now()
    rows = observer.top(sort="messages", timeout=1.0)
    assert clock.now() - t0 <= 1.0
    row = next(r for r in rows if r.pid == stuck)
    assert row.messages is None
    assert row.describe() == f"{__name__}.Echo.handle_call"
    refute_receive(None, timeout=0)
    ref = monitor(caller)
    send(stuck, "unblock")
    receive(Down)
    del ref
    gen_server.stop(stuck)
    wait_all_blocked()


def test_format_top_prints_the_columns_bin_top_shows(node):
    pid = gen_server.start_link(Echo, name="echo")
    table = observer.format_top(observer.top(limit=50))
    header, *lines = table.splitlines()
    assert header.split() == ["PID", "NAME", "MSGQ", "MEMORY", "MSGS", "STATUS", "CURRENT"]
    line = next(ln for ln in lines if ln.split()[1] == "echo")
    assert line.split()[0] == repr(pid)
    assert line.rstrip().endswith(f"{__name__}.Echo")
    # The JSON rows the control socket sends format the same.
    json_rows = [r.to_json() for r in observer.top(limit=50)]
    assert observer.format_top(json_rows).splitlines()[0] == header
    gen_server.stop(pid)


def test_top_arguments_are_checked(node):
    with pytest.raises(ValueError, match="sorts by"):
        observer.top(sort="cpu")
    with pytest.raises(ValueError, match="limit"):
        observer.top(limit=-1)


def test_top_leaves_out_nothing_but_ended_processes(node):
    pids = [spawn(waiting_for_go) for _ in range(3)]
    wait_all_blocked()
    listed = {r.pid for r in observer.top(limit=100)}
    assert set(pids) <= listed and self_pid() in listed
    for p in pids:
        send(p, "go")
