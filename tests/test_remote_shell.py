"""The remote shell: ``bin/chat remote`` driven through a pseudo-terminal against a
daemon, and the control socket's server side on a test node."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from otp import remote_shell
from otp.process import spawn_monitor
from otp.testing import assert_receive
from tests.release_helpers import Pty, bin_chat, build_and_unpack, daemon, env


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    r = build_and_unpack(tmp_path_factory.mktemp("shell"))
    with daemon(r):
        yield r


@pytest.fixture
def shell(root: Path) -> Iterator[Pty]:
    pty = Pty([str(root / "bin" / "chat"), "remote"], env(root.parent), str(root.parent))
    try:
        pty.expect(b"Ctrl-D detaches")
        pty.expect(b">>> ")
        yield pty
    finally:
        pty.close()


def _eval(pty: Pty, line: str) -> str:
    pty.send(line.encode() + b"\n")
    out = pty.expect(b">>> ").decode()
    # the echo of the line, then what the node printed, then the prompt
    return out.split("\r\n", 1)[1].rsplit(">>> ", 1)[0].replace("\r\n", "\n")


def test_an_expression_is_evaluated_inside_the_node(root: Path, shell: Pty) -> None:
    node_pid = (root / "run" / "chat.pid").read_text().strip()
    assert _eval(shell, "import os") == ""
    assert _eval(shell, "os.getpid()") == f"{node_pid}\n"
    assert _eval(shell, "whereis('chat.listener') == whereis('chat.listener')") == "True\n"
    assert _eval(shell, "i('chat.listener').registered_name") == "'chat.listener'\n"
    assert _eval(shell, "'chat' in [a.name for a in which_applications()]") == "True\n"


def test_bindings_persist_and_print_goes_to_the_shell(shell: Pty) -> None:
    assert _eval(shell, "x = 20; print('x is', x)") == "x is 20\n"
    assert _eval(shell, "x + 1") == "21\n"
    assert _eval(shell, "_ * 2") == "42\n"


def test_a_block_needs_an_empty_line_like_the_python_console(shell: Pty) -> None:
    shell.send(b"for k in range(2):\n")
    shell.expect(b"... ")
    shell.send(b"    print(k)\n")
    shell.expect(b"... ")
    assert _eval(shell, "") == "0\n1\n"


def test_an_error_prints_a_traceback_and_the_shell_goes_on(shell: Pty) -> None:
    out = _eval(shell, "1/0")
    assert "ZeroDivisionError: division by zero" in out
    assert _eval(shell, "def f(:").strip().endswith("SyntaxError: invalid syntax")
    assert _eval(shell, "2 + 2") == "4\n"


def test_ctrl_c_interrupts_a_waiting_expression_not_the_node(root: Path, shell: Pty) -> None:
    shell.send(b"from otp.process import sleep; print('wait' + 'ing'); sleep(600)\n")
    shell.expect(b"waiting")
    shell.send(b"\x03")
    assert b"KeyboardInterrupt" in shell.expect(b">>> ")
    assert _eval(shell, "'still here'") == "'still here'\n"
    assert bin_chat(root, "ping").stdout == "pong\n"


def test_ctrl_c_interrupts_a_busy_loop_that_never_yields(root: Path, shell: Pty) -> None:
    # The node's hub is stuck in the loop: the client follows up with SIGUSR1.
    shell.send(b"from otp.process import sleep\n")
    shell.expect(b">>> ")
    shell.send(b"exec(\"print('spin' + 'ning'); sleep(0.05)\\nwhile True: pass\")\n")
    shell.expect(b"spinning")
    shell.send(b"\x03")
    assert b"KeyboardInterrupt" in shell.expect(b">>> ")
    assert _eval(shell, "1 + 1") == "2\n"
    assert bin_chat(root, "ping").stdout == "pong\n"


def test_ctrl_c_at_the_prompt_drops_the_pending_input(shell: Pty) -> None:
    shell.send(b"if True:\n")
    shell.expect(b"... ")
    shell.send(b"\x03")
    shell.expect(b"KeyboardInterrupt")
    shell.expect(b">>> ")
    assert _eval(shell, "3") == "3\n"


def test_ctrl_d_detaches_and_the_node_keeps_running(root: Path, shell: Pty) -> None:
    _eval(shell, "'remembered line'")
    shell.send(b"\x04")
    shell.expect(b"detached; the node keeps running")
    assert shell.wait() == 0
    assert bin_chat(root, "ping").stdout == "pong\n"
    # readline history is kept on the client side
    history = (root.parent / ".chat_remote_history").read_text()
    assert "'remembered line'" in history


def test_two_shells_at_once_have_their_own_namespaces(root: Path, shell: Pty) -> None:
    other = Pty([str(root / "bin" / "chat"), "remote"], env(root.parent), str(root.parent))
    try:
        other.expect(b">>> ")
        assert _eval(shell, "y = 'first'") == ""
        assert _eval(other, "y = 'second'") == ""
        assert _eval(shell, "y") == "'first'\n"
        assert _eval(other, "y") == "'second'\n"
    finally:
        other.close()


def test_the_socket_is_private_and_every_command_is_logged(root: Path, shell: Pty) -> None:
    sock = root / "run" / "chat.sock"
    assert stat.S_ISSOCK(sock.stat().st_mode)
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    assert stat.S_IMODE((root / "run").stat().st_mode) == 0o700
    _eval(shell, "'an audited line'")
    audit = (root / "run" / "remote.log").read_text()
    assert "shell: 'an audited line'" in audit
    assert f"uid={os.getuid()}" in audit


@pytest.mark.skipif(os.getuid() != 0 or not os.path.exists("/usr/bin/python3"),
                    reason="needs root (to connect as another uid) and /usr/bin/python3")
def test_a_peer_of_another_uid_is_refused(root: Path) -> None:
    # Mode 0600 already keeps other users out; the uid check is the second lock. Widen
    # the modes for the test, and hand the other user the run directory as an open fd
    # (the temporary directories above it are private to root).
    sock = root / "run" / "chat.sock"
    os.chmod(root / "run", 0o711)
    os.chmod(sock, 0o666)
    dirfd = os.open(root / "run", os.O_RDONLY)
    try:
        code = ("import socket, sys\n"
                "s = socket.socket(socket.AF_UNIX)\n"
                "s.connect(sys.argv[1])\n"
                "try:\n"
                "    s.sendall(b'{\"op\": \"ping\"}\\n'); print(repr(s.recv(100)))\n"
                "except OSError:  # reset, broken pipe: refused either way\n"
                "    print(repr(b''))\n")
        res = subprocess.run(
            ["/usr/bin/python3", "-c", code, f"/proc/self/fd/{dirfd}/chat.sock"],
            capture_output=True, text=True, timeout=30, user=65534, group=65534,
            pass_fds=(dirfd,))
        assert res.stdout.strip() == "b''", res.stdout + res.stderr
    finally:
        os.close(dirfd)
        os.chmod(root / "run", 0o700)
        os.chmod(sock, 0o600)
    assert "refused a peer of uid 65534" in (root / "run" / "chat.log").read_text()
    assert bin_chat(root, "ping").stdout == "pong\n"


# ------------------------------------------------------------- server on a test node


@pytest.mark.otp(clock="real")
def test_requests_and_unknown_ops_on_a_test_node(node: object, tmp_path: Path) -> None:
    path = tmp_path / "ctl.sock"
    remote_shell.start_server(path, handlers={"ping": lambda req: "pong",
                                              "echo": lambda req: req["x"]})
    try:
        assert remote_shell.request(path, "ping") == "pong"
        assert remote_shell.request(path, "echo", x=[1, "a"]) == [1, "a"]
        with pytest.raises(remote_shell.RemoteError, match="unknown request 'nope'"):
            remote_shell.request(path, "nope")
    finally:
        remote_shell.stop_server()
    assert not path.exists()
    with pytest.raises(remote_shell.NodeNotRunning):
        remote_shell.request(path, "ping")


@pytest.mark.otp(clock="real")
def test_a_socket_path_longer_than_sun_path_works(node: object, tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    path = deep / "ctl.sock"
    remote_shell.start_server(path, handlers={"ping": lambda req: "pong"})
    try:
        assert remote_shell.request(path, "ping") == "pong"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        remote_shell.stop_server()


@pytest.mark.otp(clock="real")
def test_evaluate_returns_the_value_or_the_traceback(node: object) -> None:
    out: list[str] = []
    assert remote_shell.evaluate("print('hi') or 6 * 7", on_output=out.append) == (True, "42")
    ok, text = remote_shell.evaluate("{}['k']")
    assert not ok and text is not None and "KeyError: 'k'" in text
    ok, text = remote_shell.evaluate("def (")
    assert not ok and text is not None and "SyntaxError" in text
    # the evaluating process is gone
    spawn_monitor(lambda: None)
    assert_receive()


def test_request_to_a_missing_socket_says_not_running(tmp_path: Path) -> None:
    with pytest.raises(remote_shell.NodeNotRunning, match="no node answers on"):
        remote_shell.request(tmp_path / "none.sock", "ping")
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(tmp_path / "dead.sock"))  # a socket file nobody listens on
    s.close()
    with pytest.raises(remote_shell.NodeNotRunning):
        remote_shell.request(tmp_path / "dead.sock", "ping")
