"""otp.ops' views in the node: the summary, the process rows with queue statistics,
observer() as the remote shell prints it, and inspect."""

from __future__ import annotations

import pytest

from otp import application, gen_server, ops, stats
from otp.gen_server import GenServer
from otp.process import exit as exit_proc
from otp.process import receive, send, spawn
from otp.remote_shell import shell_namespace
from otp.testing import wait_all_blocked


def parked():
    receive("never")


@pytest.mark.otp(clock="real")
def test_rows_sorted_by_queue_carry_queue_statistics_and_what_runs(node, capsys):
    application.ensure_all_started("otp_ops")
    try:
        pid = spawn(parked)
        for i in range(30):
            send(pid, i)
        server = gen_server.start(GenServer, 0, name="idle_server")
        stats.sample_now()
        rows = ops.process_rows("queue", 5)
        assert rows[0]["pid"] == repr(pid) and rows[0]["queue"] == 30
        assert rows[0]["enqueued"] == 30 and rows[0]["drain_time"] is None
        assert rows[0]["current_function"].endswith("parked")
        by_mem = ops.process_rows("memory", 3)
        assert len(by_mem) == 3
        info = ops.inspect("idle_server")
        assert info["alive"] and info["name"] == "idle_server" and info["state"] == "0"
        assert ops.inspect(repr(pid))["stats"]["queue"] == 30
        assert ops.inspect("<0.999999.0>") == {"pid": "<0.999999.0>", "alive": False}
        shell_namespace()["observer"]()
        out = capsys.readouterr().out
        assert out.startswith("node ") and "processes by queue length" in out
        assert repr(pid) in out
        gen_server.stop(server)
        exit_proc(pid, "kill")
        wait_all_blocked()
    finally:
        application.stop("otp_ops")
