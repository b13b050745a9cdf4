"""The docs' "two users chatting" walkthroughs run as written: the README's and
chat/README.md's shell blocks, against a real server (``python -m chat`` with the dev
config, as ``make run``; any free port), each ``chat-client`` line a subprocess, with
the PINs read from the server's log (the dev SMS gateway writes them there), a
``listen`` in the background until what the block promises shows, then Ctrl-C.
Loopback only; bounded in time; only the processes started here are stopped."""

from __future__ import annotations

import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEADLINE = 60.0


class Server:
    """``python -m chat --config config/dev.yaml`` (what ``make run`` runs) on port 0."""

    def __init__(self, tmp: Path) -> None:
        self.log_path = tmp / "server.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "chat", "--config", "config/dev.yaml", "--port", "0",
             "--data-dir", str(tmp / "data")],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=REPO)
        m = self.wait_for(r"listening on tcp://127\.0\.0\.1:(\d+)")
        self.port = int(m.group(1))

    def wait_for(self, pattern: str) -> re.Match[str]:
        """The last match of ``pattern`` in the log, once there is one."""
        end = time.monotonic() + DEADLINE
        while time.monotonic() < end:
            text = self.log_path.read_text()
            found = list(re.finditer(pattern, text))
            if found:
                return found[-1]
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited: {text}")
            time.sleep(0.05)
        raise AssertionError(f"no {pattern!r} in the server's log within {DEADLINE} s")

    def pin(self, phone: str) -> str:
        return self.wait_for(rf"PIN for {re.escape(phone)}: (\d{{6}})").group(1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path)
    try:
        yield srv
    finally:
        srv.stop()


def client_env(tmp: Path, port: int) -> dict[str, str]:
    """What `. .venv/bin/activate` gives (chat-client on the PATH), a config directory
    of the test's own, and the server's address."""
    e = {k: v for k, v in os.environ.items() if not k.startswith(("OTP_", "CHAT_"))}
    e["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{e.get('PATH', '/usr/bin:/bin')}"
    e["XDG_CONFIG_HOME"] = str(tmp / "cfg")
    e["CHAT_SERVER"] = f"127.0.0.1:{port}"
    return e


def block_with(doc: Path, needle: str) -> list[str]:
    """The lines of the sh blocks of ``doc`` from the first one holding ``needle``."""
    blocks = re.findall(r"```sh\n(.*?)```", doc.read_text(encoding="utf-8"), re.S)
    i = next(i for i, b in enumerate(blocks) if needle in b)
    return [ln for b in blocks[i:i + 3] for ln in b.splitlines()]


def run_walkthrough(lines: list[str], srv: Server, tmp: Path, stop: int = signal.SIGINT,
                    *, until: str = r"^\[\+\d+\] ", home: Path | None = None
                    ) -> tuple[dict[str, str], str]:
    """Run the ``chat-client`` lines; returns each listening number's output (after
    ``stop``: Ctrl-C's SIGINT, or SIGTERM, once it shows ``until``) and the other
    commands' output, joined. ``home``: ``$HOME``, and what ``~/`` stands for."""
    e = client_env(tmp, srv.port)
    if home is not None:
        e["HOME"] = str(home)
    listeners: dict[str, tuple[subprocess.Popen[str], Path]] = {}
    out = []
    try:
        for raw in lines:
            cmd, _, comment = raw.partition("#")
            cmd = cmd.strip().rstrip("&").strip()
            if not cmd.startswith("chat-client"):
                continue  # make run (the fixture's server), . .venv/bin/activate
            argv = shlex.split(cmd)
            if home is not None:
                argv = [str(home / a[2:]) if a.startswith("~/") else a for a in argv]
            if argv[1] == "verify":
                argv[3] = srv.pin(argv[2])  # "use the PIN you saw"
            if "listen" in argv:
                who = argv[argv.index("--as") + 1]
                path = tmp / f"listen-{who}.out"
                proc = subprocess.Popen(argv, stdout=open(path, "w"),
                                        stderr=subprocess.STDOUT, text=True, env=e)
                listeners[who] = (proc, path)
                continue
            typed = comment.split("then type:", 1)[1].strip() + "\n" \
                if "then type:" in comment else None  # fmt: skip
            res = subprocess.run(argv, input=typed, capture_output=True, text=True, env=e,
                                 timeout=DEADLINE)
            assert res.returncode == 0, f"{cmd}: {res.stdout}{res.stderr}"
            out.append(res.stdout)
        return {who: _stop_listener(proc, path, stop, until) for who, (proc, path) in
                listeners.items()}, \
            "".join(out)  # fmt: skip
    finally:
        for proc, _ in listeners.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _stop_listener(proc: subprocess.Popen[str], path: Path, stop: int, until: str) -> str:
    """Once the listener showed ``until`` (or at the deadline), stop it: exit status 0."""
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end and not re.search(until, path.read_text(), re.M):
        time.sleep(0.05)
    proc.send_signal(stop)
    assert proc.wait(DEADLINE) == 0, path.read_text()
    return path.read_text()


def test_readme_two_users_chatting_runs_as_written(server: Server, tmp_path: Path) -> None:
    lines = block_with(REPO / "README.md", "chat-client register +14155550100")
    lines = lines[: next(i for i, ln in enumerate(lines) if "send +14155550111" in ln) + 1]
    listened, out = run_walkthrough(lines, server, tmp_path)
    assert "[+14155550100] hi Bob" in listened["+14155550111"]
    assert "sent ✓" in out


def test_chat_readme_walkthrough_runs_as_written(server: Server, tmp_path: Path) -> None:
    lines = block_with(REPO / "chat" / "README.md", "make run")
    listened, out = run_walkthrough(lines, server, tmp_path, stop=signal.SIGTERM)
    assert "[+14155550100] hi Bob" in listened["+14155550111"]
    assert re.search(r"stored as [A-Za-z0-9_-]{16,}", out), out  # an opaque message id
    assert "Traceback" not in out


def test_readme_two_users_exchange_a_photo_runs_as_written(server: Server,
                                                           tmp_path: Path) -> None:
    from PIL import Image

    home = tmp_path / "home"
    (home / "Pictures").mkdir(parents=True)
    photo = home / "Pictures" / "beach.jpg"
    Image.effect_noise((800, 600), 40).convert("RGB").save(photo, quality=90)
    first = block_with(REPO / "README.md", "chat-client register +14155550100")
    setup = [ln for ln in first if " register " in ln or " verify " in ln]
    lines = block_with(REPO / "README.md", "send-file")
    lines = lines[: next(i for i, ln in enumerate(lines) if "send-file" in ln) + 1]
    listened, out = run_walkthrough(setup + lines, server, tmp_path,
                                    until=r"^  saved to ", home=home)
    bob = listened["+14155550111"]
    assert "[+14155550100] sent beach.jpg (image/jpeg" in bob and ": the beach" in bob, bob
    saved = Path(re.search(r"^  saved to (.+)$", bob, re.M).group(1))  # type: ignore[union-attr]
    assert saved == home / "Pictures" / "chat" / "beach.jpg"
    assert saved.read_bytes() == photo.read_bytes()
    assert "sent ✓" in out


# --- "A cluster: two nodes and an Erlang one" (README) ---------------------------------

CLUSTER = "## A cluster: two nodes and an Erlang one"
_PROMPT = re.compile(r"^(?:([\w.]+@[\d.]+)> |\((\w+@[\d.]+)\)\d+> )(.*)$")


def _cluster_blocks() -> list[list[str]]:
    """The section's ```text blocks, as lists of lines."""
    text = (REPO / "README.md").read_text()
    section = text.split(CLUSTER, 1)[1].split("\n## ", 1)[0]
    return [b.split("```", 1)[0].strip("\n").splitlines()
            for b in section.split("```text\n")[1:]]


class Terminal:
    """A command of the walkthrough with its stdin piped, its output read as it comes."""

    def __init__(self, command: str, env: dict[str, str], tmp: Path) -> None:
        argv = shlex.split(command)
        if argv[0] == ".venv/bin/python":
            argv[0] = sys.executable
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, cwd=REPO, env=env)
        self.out = b""
        self.seen = 0  # what earlier expectations consumed

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def expect(self, text: str) -> None:
        assert self.proc.stdout is not None
        end = time.monotonic() + DEADLINE
        while (at := self.out.find(text.encode(), self.seen)) < 0:
            if time.monotonic() > end:
                raise AssertionError(f"no {text!r} in {self.out.decode(errors='replace')}")
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.1)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    raise AssertionError(f"ended before {text!r}: {self.out.decode()}")
                self.out += chunk
        self.seen = at + len(text)

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()  # Ctrl-D
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def test_readme_cluster_walkthrough_runs_as_written(tmp_path: Path) -> None:
    from otp.testing_dist import free_port, start_epmd

    blocks = _cluster_blocks()
    assert len(blocks) == 5, blocks
    have_erl = shutil.which("erl") is not None
    port = free_port()
    epmd = start_epmd(port, tmp_path)
    env = dict(os.environ, ERL_EPMD_PORT=str(port), HOME=str(tmp_path))
    terminals: dict[str, Terminal] = {}
    try:
        for i, block in enumerate(blocks):
            if i == 2:  # "Stop the first node (Ctrl-D in its terminal)"
                terminals["a@127.0.0.1"].close()
            if block[0].startswith("$ erl") and not have_erl:
                break  # the Erlang part, and the otpy side of it
            term: Terminal | None = None
            if block[0].startswith("$ "):
                term = Terminal(block[0][2:], env, tmp_path)
                block = block[1:]
            for line in block:
                m = _PROMPT.match(line)
                if m:
                    name = m.group(1) or m.group(2)
                    if term is not None:
                        terminals[name] = term
                    term = terminals[name]
                    term.send(m.group(3))
                elif line.startswith("..."):
                    assert term is not None
                    term.send(line[4:])
                else:
                    assert term is not None
                    term.expect(line)
    finally:
        for t in terminals.values():
            t.close()
        if epmd is not None:
            epmd.kill()
    if not have_erl:
        pytest.skip("erl is not installed: the Erlang node's part was not run")
