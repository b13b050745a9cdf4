"""The multi-node test kit itself (otp.testing_dist): nodes start, run code, report
errors, and leave no OS process behind."""

from __future__ import annotations

import os
import shutil

import pytest

from otp.errors import RemoteError
from otp.process import Pid
from otp.testing_dist import Cluster

needs_erl = pytest.mark.skipif(
    shutil.which("erl") is None, reason="erl is not installed (apt-get install erlang-base)"
)


def _gone(os_pid: int) -> bool:
    try:
        os.kill(os_pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_otpy_node_evaluates_code_and_keeps_its_names(tmp_path):
    with Cluster(tmp_path) as c:
        a = c.otpy("a")
        assert a.name == "a@127.0.0.1"
        assert a.eval("node()") == "a@127.0.0.1"
        a.exec("x = N * 2", N=21)
        assert a.eval("x") == 42
        pid = a.eval("self()")
        assert isinstance(pid, Pid) and pid.node == a.name
        assert (tmp_path / "a.log").exists()


def test_an_error_on_the_node_is_a_remote_error_with_its_traceback(tmp_path):
    with Cluster(tmp_path) as c:
        a = c.otpy("a")
        with pytest.raises(RemoteError, match="ZeroDivisionError"):
            a.eval("1 / 0")
        assert a.eval("1 + 1") == 2  # the node goes on


def test_an_evaluation_that_does_not_end_in_time_is_reported(tmp_path):
    with Cluster(tmp_path) as c:
        a = c.otpy("a")
        with pytest.raises(RemoteError, match="no result within"):
            a.eval("receive(lambda m: False)", timeout=0.5)
        assert a.eval("'still here'") == "still here"


def test_cluster_kills_every_child_by_pid(tmp_path):
    with Cluster(tmp_path) as c:
        a, b = c.otpy("a"), c.otpy("b")
        pids = [a.child.os_pid, b.child.os_pid]
        if c.epmd is not None:
            pids.append(c.epmd.os_pid)
        assert a.eval("dist.ping(B)", B=b.name) == "pong"
    assert all(_gone(p) for p in pids)


def test_kill_is_sigkill_and_idempotent(tmp_path):
    with Cluster(tmp_path) as c:
        a = c.otpy("a")
        a.kill()
        a.kill()
        assert a.child.proc.returncode == -9
        with pytest.raises(RemoteError, match="ended"):
            a.eval("1")


@needs_erl
def test_erl_node_evaluates_erlang_expressions_and_keeps_bindings(tmp_path):
    with Cluster(tmp_path) as c:
        e = c.erl("e")
        assert e.eval("erlang:node().") == "e@127.0.0.1"
        e.eval("X = 20 + 1.")
        assert e.eval("X * 2.") == 42
        with pytest.raises(RemoteError, match="badarith"):
            e.eval("1 / 0.")
        os_pid = e.child.os_pid
    assert _gone(os_pid)
