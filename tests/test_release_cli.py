"""The release CLI against a real node: a bundle built into a temporary directory,
unpacked into an empty one, run with ``bin/chat`` as subprocesses (and ``otp release``
through click's CliRunner)."""

from __future__ import annotations

import ast
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from otp import release
from otp.__main__ import cli
from tests.release_helpers import (
    alive,
    bin_chat,
    build_and_unpack,
    daemon,
    env,
    kill_by_pid,
    write_project,
)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_and_unpack(tmp_path_factory.mktemp("release"))


@pytest.fixture(scope="module")
def node(root: Path) -> Iterator[int]:
    """The release running as a daemon for the whole module (the tests below only read)."""
    with daemon(root) as pid:
        yield pid


def test_daemon_writes_its_pid_file_and_answers_ping(root: Path, node: int) -> None:
    assert (root / "run" / "chat.pid").read_text().strip() == str(node)
    res = bin_chat(root, "ping")
    assert (res.returncode, res.stdout) == (0, "pong\n")
    assert bin_chat(root, "pid").stdout.strip() == str(node)


def test_status_names_the_version_and_the_running_applications(root: Path, node: int) -> None:
    res = bin_chat(root, "status")
    assert res.returncode == 0, res.stderr
    assert "chat 0.1.0 running on chat@" in res.stdout
    assert f"(pid {node})" in res.stdout
    assert "applications  chat 0.1.0" in res.stdout


def test_the_node_runs_the_code_of_the_bundle_not_of_the_checkout(root: Path, node: int) -> None:
    res = bin_chat(root, "rpc", "(otp.__file__, chat.__file__)")
    otp_file, chat_file = ast.literal_eval(res.stdout)
    assert otp_file.startswith(str(root / "lib" / "otp-"))
    assert chat_file.startswith(str(root / "lib" / "chat-0.1.0"))


def test_the_chat_server_accepts_connections(root: Path, node: int) -> None:
    res = bin_chat(root, "rpc", "chat.connection.address()")
    host, port = ast.literal_eval(res.stdout)
    with socket.create_connection((host, port), timeout=10):
        pass


def test_rpc_prints_output_then_the_value(root: Path, node: int) -> None:
    res = bin_chat(root, "rpc", "print('from the node') or len(processes()) > 5")
    assert (res.returncode, res.stdout) == (0, "from the node\nTrue\n")


def test_rpc_runs_statements_too(root: Path, node: int) -> None:
    res = bin_chat(root, "rpc", "import os; print(os.getpid())")
    assert (res.returncode, res.stdout.strip()) == (0, str(node))


def test_rpc_failure_exits_1_with_the_traceback(root: Path, node: int) -> None:
    res = bin_chat(root, "rpc", "1/0")
    assert res.returncode == 1
    assert "ZeroDivisionError: division by zero" in res.stderr
    assert bin_chat(root, "ping").returncode == 0


def _top(root: Path, *args: str) -> list[str]:
    res = bin_chat(root, "top", "--once", *args)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split()[:6] == ["PID", "NAME", "MSGQ", "MEMORY", "MSGS", "STATUS"]
    return lines[1:]


def test_top_once_lists_processes_by_message_queue(root: Path, node: int) -> None:
    rows = _top(root, "-n", "5")
    assert len(rows) == 5
    queues = [int(line[38:45]) for line in rows]
    assert queues == sorted(queues, reverse=True)


def test_top_by_memory(root: Path, node: int) -> None:
    rows = _top(root, "--sort", "memory", "-n", "3")
    memory = [int(line[46:55]) for line in rows]
    assert len(rows) == 3 and memory == sorted(memory, reverse=True)


def test_top_by_messages_handled_counts_gen_server_messages(root: Path, node: int) -> None:
    _top(root, "--sort", "messages")  # turns counting on
    bin_chat(root, "rpc", "[chat.connection.address() for _ in range(30)] and None")
    rows = _top(root, "--sort", "messages", "-n", "3")
    first = rows[0]
    assert "chat.listener" in first, rows
    assert int(first[56:64]) >= 30
    assert "Listener" in first


def test_versions_lists_the_permanent_release(root: Path, node: int) -> None:
    res = bin_chat(root, "versions")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split()[:2] == ["0.1.0", "permanent"]


def test_upgrade_to_an_unknown_version_fails_cleanly(root: Path, node: int) -> None:
    res = bin_chat(root, "upgrade", "9.9.9")
    assert res.returncode == 1
    assert res.stderr.strip()
    assert bin_chat(root, "ping").returncode == 0


def test_a_second_daemon_is_refused(root: Path, node: int) -> None:
    res = bin_chat(root, "daemon")
    assert res.returncode == 1
    assert f"chat is already running (pid {node})" in res.stderr


def test_eval_runs_in_a_fresh_node_with_the_release_config(root: Path, node: int) -> None:
    res = bin_chat(root, "eval", f"__import__('os').getpid() != {node}")
    assert (res.returncode, res.stdout) == (0, "True\n")
    res = bin_chat(root, "eval", "otp.application.load('chat') and "
                   "otp.application.get_env('chat', 'data_dir')")
    assert (res.returncode, res.stdout) == (0, "'var/chat'\n")
    res = bin_chat(root, "eval", "whereis('chat.sup') is None")
    assert (res.returncode, res.stdout) == (0, "True\n")


def test_cli_runner_talks_to_the_running_node(root: Path, node: int) -> None:
    runner = CliRunner()
    res = runner.invoke(cli, ["release", "--root", str(root), "ping"])
    assert (res.exit_code, res.output) == (0, "pong\n")
    res = runner.invoke(cli, ["release", "--root", str(root), "status", "--json"])
    assert res.exit_code == 0, res.output
    assert f'"pid": {node}' in res.output


# ------------------------------------------------------------ stopping, not running


@pytest.fixture
def fresh_root(tmp_path: Path) -> Path:
    return build_and_unpack(tmp_path)


def test_stop_is_graceful_and_then_commands_say_not_running(fresh_root: Path) -> None:
    with daemon(fresh_root) as pid:
        res = bin_chat(fresh_root, "stop")
        assert (res.returncode, res.stdout) == (0, "chat stopped\n"), res.stderr
        assert not alive(pid)
        assert not (fresh_root / "run" / "chat.pid").exists()
        assert not (fresh_root / "run" / "chat.sock").exists()
        log = (fresh_root / "run" / "chat.log").read_text()
        assert "chat 0.1.0: stopping" in log
        assert "chat 0.1.0 stopped" in log
    for cmd in (["ping"], ["pid"], ["status"], ["stop"], ["rpc", "1"], ["top", "--once"]):
        res = bin_chat(fresh_root, *cmd)
        assert res.returncode == 1, cmd
        assert res.stderr.startswith("chat is not running (no node answers on "), cmd


def test_a_node_that_cannot_start_makes_daemon_exit_1_with_the_log(fresh_root: Path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = taken.getsockname()[1]
        res = bin_chat(fresh_root, "daemon",
                       extra_env={"OTP_CHAT__LISTEN__PORT": str(port)})
    finally:
        taken.close()
    assert res.returncode == 1
    first = res.stderr.splitlines()[0]
    assert first.startswith("chat did not start (exit status 1): chat: cannot start: "), first
    # one line naming the address and the config key; no traceback in the log either
    assert f"cannot listen on 127.0.0.1:{port}" in first and "listen.port" in first, first
    assert "OTP_CHAT__LISTEN__PORT" in first
    assert "Traceback" not in (fresh_root / "run" / "chat.log").read_text()
    assert not (fresh_root / "run" / "chat.pid").exists()
    assert not (fresh_root / "run" / "chat.sock").exists()


def test_cli_runner_against_a_stopped_node_exits_1(fresh_root: Path) -> None:
    res = CliRunner().invoke(cli, ["release", "--root", str(fresh_root), "ping"])
    assert res.exit_code == 1
    assert "chat is not running" in res.output


def test_versions_work_without_a_running_node(fresh_root: Path) -> None:
    res = bin_chat(fresh_root, "versions")
    assert (res.returncode, res.stdout.split()) == (0, ["0.1.0", "permanent"])


def test_start_in_the_foreground_stops_gracefully_on_sigterm(fresh_root: Path) -> None:
    proc = subprocess.Popen([str(fresh_root / "bin" / "chat"), "start"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env(fresh_root.parent))
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "chat 0.1.0 on chat@" in line and "started in" in line, line
        assert bin_chat(fresh_root, "ping").stdout == "pong\n"
        proc.send_signal(signal.SIGTERM)
        rest = proc.stdout.read()
        assert proc.wait(30) == 0
        assert "chat 0.1.0: stopping" in rest
        assert rest.rstrip().endswith("chat 0.1.0 stopped")
        assert not (fresh_root / "run" / "chat.pid").exists()
    finally:
        if proc.poll() is None:
            kill_by_pid(proc.pid)
            proc.wait(10)


def test_restart_restarts_the_applications_in_the_same_process(fresh_root: Path) -> None:
    with daemon(fresh_root) as pid:
        before = bin_chat(fresh_root, "rpc", "whereis('chat.sup')").stdout
        res = bin_chat(fresh_root, "restart")
        assert (res.returncode, res.stdout) == (0, "chat restarted: chat\n"), res.stderr
        after = bin_chat(fresh_root, "rpc", "whereis('chat.sup')").stdout
        assert before != after
        assert bin_chat(fresh_root, "pid").stdout.strip() == str(pid)


# ------------------------------------------------------------------ live upgrades


SPEC_020 = """\
name: chat
version: 0.2.0
applications:
  - name: chat
    version: 0.2.0
    start_type: permanent
    path: chat_020/chat
config:
  - config/test.yaml
upgrades:
  - from: 0.1.0
    instructions:
      - [restart_application, chat]
"""


def _build_020(base: Path) -> Path:
    """Release 0.2.0: the chat package with APP.vsn 0.2.0 and a marker attribute."""
    import chat

    src = base / "src020"
    write_project(src, SPEC_020)
    pkg = src / "chat_020" / "chat"
    shutil.copytree(Path(chat.__file__).parent, pkg,
                    ignore=shutil.ignore_patterns("__pycache__"))
    init = pkg / "__init__.py"
    text = init.read_text()
    assert '"chat", "0.1.0"' in text
    init.write_text(text.replace('"chat", "0.1.0"', '"chat", "0.2.0"')
                    + '\nUPGRADED = "yes"\n')
    return release.build(src / "releases" / "chat.yaml", base / "_build020")


def _versions(root: Path) -> list[list[str]]:
    res = bin_chat(root, "versions")
    assert res.returncode == 0, res.stderr
    return [line.split() for line in res.stdout.splitlines()]


def test_unpack_upgrade_restart_downgrade(tmp_path: Path) -> None:
    root = build_and_unpack(tmp_path)
    shutil.copy(_build_020(tmp_path), root / "releases" / "chat-0.2.0.tar.gz")
    with daemon(root) as pid:
        res = bin_chat(root, "unpack", "0.2.0")
        assert (res.returncode, res.stdout) == (0, "unpacked 0.2.0\n"), res.stderr
        assert _versions(root) == [["0.1.0", "permanent"], ["0.2.0", "unpacked"]]
        res = bin_chat(root, "upgrade", "0.2.0", "--no-permanent")
        assert res.returncode == 0, res.stderr
        assert bin_chat(root, "rpc", "chat.UPGRADED").stdout == "'yes'\n"
        assert "chat 0.2.0 running" in bin_chat(root, "status").stdout
        assert _versions(root) == [["0.1.0", "permanent"], ["0.2.0", "current"]]
        # restart starts the running release's applications (0.2.0), not the booted one's
        assert bin_chat(root, "restart").stdout == "chat restarted: chat\n"
        assert bin_chat(root, "rpc", "which_applications()[0].vsn").stdout == "'0.2.0'\n"
        assert bin_chat(root, "stop").returncode == 0
        assert not alive(pid)
    # A6: the upgrade was not made permanent, so the node boots 0.1.0 again.
    with daemon(root):
        assert bin_chat(root, "rpc", "chat.APP.vsn").stdout == "'0.1.0'\n"
        assert _versions(root) == [["0.1.0", "permanent"], ["0.2.0", "unpacked"]]
        res = bin_chat(root, "upgrade", "0.2.0")
        assert res.returncode == 0, res.stderr
        assert res.stdout.startswith("upgraded to 0.2.0 (permanent) in "), res.stdout
        assert _versions(root) == [["0.1.0", "old"], ["0.2.0", "permanent"]]
        res = bin_chat(root, "downgrade", "0.1.0")
        assert (res.returncode, res.stdout) == (0, "downgraded to 0.1.0\n"), res.stderr
        assert bin_chat(root, "rpc", "chat.APP.vsn").stdout == "'0.1.0'\n"
        assert _versions(root)[0] == ["0.1.0", "permanent"]
        assert bin_chat(root, "ping").stdout == "pong\n"


def test_upgrade_to_a_version_that_is_not_unpacked_says_so(root: Path, node: int) -> None:
    res = bin_chat(root, "upgrade", "7.7.7")
    assert res.returncode == 1
    assert "7.7.7 is not unpacked" in res.stderr
