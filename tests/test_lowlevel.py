"""otp.lowlevel's own helpers: the calling process's record, looking processes up,
spawning with options, and exit hooks (run in the death procedure, P17)."""

from __future__ import annotations

import logging

import pytest

from otp.errors import NotInProcess
from otp.lowlevel import (
    RUNNING,
    Node,
    Process,
    cancel_on_exit,
    current_node,
    current_process,
    lookup_process,
    on_exit,
    spawn_process,
)
from otp.process import Exit, receive, register, self, send, spawn_monitor, trap_exit
from otp.testing import (
    assert_down,
    assert_receive,
    refute_receive,
    stop_process,
    wait_all_blocked,
)


def forever() -> None:
    receive(lambda m: False)


def test_current_process_is_the_callers_record(node):
    p = current_process()
    assert isinstance(p, Process) and p.pid == self() and p.node is current_node()


def test_current_process_outside_a_process_names_the_call():
    with Node(), pytest.raises(NotInProcess, match="my_call"):
        current_process("my_call")


def test_running_node_is_the_current_node_and_none_after_it_stops():
    with Node() as n:
        assert RUNNING.node is n
    assert RUNNING.node is None


def test_lookup_process_finds_live_processes_by_pid_or_name(node):
    pid, ref = spawn_monitor(forever)
    register("lookup.me", pid)
    assert lookup_process(pid).pid == pid
    assert lookup_process("lookup.me").pid == pid
    stop_process(pid)
    assert_down(ref)
    assert lookup_process(pid) is None and lookup_process("lookup.me") is None


def test_spawn_process_with_link_links_the_child_to_the_caller(node):
    trap_exit(True)
    p = spawn_process(forever, link=True)
    stop_process(p.pid, "boom")
    assert assert_receive(Exit) == Exit(p.pid, "boom")


def test_spawn_process_without_crash_log_leaves_the_report_to_the_caller(node, caplog):
    caplog.set_level(logging.ERROR, logger="otp.process")
    p = spawn_process(lambda: 1 / 0, log_crash=False)
    wait_all_blocked()  # the child ran and ended
    assert lookup_process(p.pid) is None
    assert "ZeroDivisionError" not in caplog.text


def test_exit_hook_runs_when_the_process_ends(node):
    me = self()

    def worker() -> None:
        on_exit(current_process(), lambda: send(me, "hook ran"))
        forever()

    pid, ref = spawn_monitor(worker)
    wait_all_blocked()  # the worker set its hook and waits
    stop_process(pid)
    assert_receive("hook ran")
    assert_down(ref)


def test_cancelled_exit_hook_does_not_run(node):
    me = self()

    def hook() -> None:
        send(me, "hook ran")

    def worker() -> None:
        p = current_process()
        on_exit(p, hook)
        cancel_on_exit(p, hook)
        cancel_on_exit(p, hook)  # twice: no error

    _pid, ref = spawn_monitor(worker)
    assert_down(ref)
    refute_receive("hook ran")


def test_exit_hook_on_an_ended_process_runs_at_once(node):
    me = self()
    p = spawn_process(lambda: None)
    wait_all_blocked()  # p ran and ended
    assert p.dead
    on_exit(p, lambda: send(me, "at once"))
    assert receive(timeout=0) == "at once"
