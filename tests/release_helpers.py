"""Helpers for the release tests: a test spec, a built bundle unpacked into an empty
directory, ``bin/chat`` run as a real subprocess, and a pseudo-terminal driver."""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import subprocess
import sys
import tarfile
import termios
import time
from collections.abc import Iterator
from pathlib import Path

from otp import release

SPEC = """\
name: chat
version: 0.1.0
applications:
  - name: chat
    version: 0.1.0
    start_type: permanent
config:
  - config/test.yaml
entry: chat.__main__:main
upgrades: []
"""

# Dev settings, any free port, data inside the release root (relative: the node runs
# in its root directory).
CONFIG = """\
chat:
  env: dev
  data_dir: var/chat
  listen: {host: 127.0.0.1, port: 0}
  sms: {adapter: console}
  push: {adapter: log}
  durability: "off"
"""


def write_project(base: Path, spec: str = SPEC, config: str = CONFIG) -> Path:
    """A project tree with ``releases/chat.yaml`` and ``config/test.yaml``; returns the
    spec's path."""
    (base / "releases").mkdir(parents=True, exist_ok=True)
    (base / "config").mkdir(parents=True, exist_ok=True)
    (base / "config" / "test.yaml").write_text(config)
    spec_path = base / "releases" / "chat.yaml"
    spec_path.write_text(spec)
    return spec_path


def build_and_unpack(base: Path) -> Path:
    """Build the test release under ``base`` and unpack it into an empty directory;
    returns the release root."""
    tarball = release.build(write_project(base / "src"), base / "_build")
    root = base / "rel"
    root.mkdir()
    with tarfile.open(tarball) as tar:
        tar.extractall(root)
    return root


def env(home: Path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("OTP_")}
    e["OTP_PYTHON"] = sys.executable
    e["HOME"] = str(home)
    e.pop("PYTHONPATH", None)
    return e


def bin_chat(root: Path, *args: str, timeout: float = 60.0,
             extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(root / "bin" / "chat"), *args], capture_output=True, text=True,
        timeout=timeout, env={**env(root.parent), **(extra_env or {})}, cwd=str(root.parent),
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def kill_by_pid(pid: int, deadline: float = 20.0) -> None:
    """SIGTERM (graceful), then SIGKILL if it is still there at the deadline."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    end = time.monotonic() + deadline
    while alive(pid) and time.monotonic() < end:
        time.sleep(0.02)
    if alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def daemon(root: Path) -> Iterator[int]:
    """``bin/chat daemon``; yields the node's pid; stops it (by pid) on the way out."""
    res = bin_chat(root, "daemon")
    assert res.returncode == 0, res.stdout + res.stderr
    pid = int((root / "run" / "chat.pid").read_text())
    try:
        yield pid
    finally:
        kill_by_pid(pid)


class Pty:
    """A command on a pseudo-terminal that is its controlling terminal (so Ctrl-C in
    the input is a SIGINT to it), read with deadlines."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: str) -> None:
        self.master, slave = os.openpty()

        def controlling_tty() -> None:
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd,
            preexec_fn=controlling_tty,
        )
        os.close(slave)
        self.buf = b""

    def expect(self, pattern: bytes, timeout: float = 20.0) -> bytes:
        """Read until ``pattern``; returns what came before and including it."""
        end = time.monotonic() + timeout
        while pattern not in self.buf:
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(f"expected {pattern!r} within {timeout} s; got "
                                     f"{self.buf!r}")
            r, _, _ = select.select([self.master], [], [], left)
            if r:
                try:
                    data = os.read(self.master, 4096)
                except OSError:  # EIO: the other side closed
                    data = b""
                if not data:
                    raise AssertionError(f"EOF before {pattern!r}; got {self.buf!r}")
                self.buf += data
        i = self.buf.index(pattern) + len(pattern)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def wait(self, timeout: float = 20.0) -> int:
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        os.close(self.master)
