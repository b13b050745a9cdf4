"""Helpers for the distribution wire tests: a private ``epmd``, real ``erl`` nodes and
otpy nodes as child OS processes (each killed by its pid), and waiting on conditions
with a bound.

Every child runs on 127.0.0.1 with a private EPMD port, so the tests never touch the
host's EPMD or ``~/.erlang.cookie``."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ERL = shutil.which("erl")
EPMD = shutil.which("epmd")
needs_erl = pytest.mark.skipif(
    ERL is None or EPMD is None,
    reason="needs Erlang's erl and epmd on PATH (apt-get install erlang-base)",
)
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return int(port)


def wait_for(cond: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    """Poll ``cond`` until it returns something true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _kill(p: subprocess.Popen[Any]) -> None:
    if p.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p.pid, signal.SIGCONT)
            os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=10)


@contextlib.contextmanager
def epmd_child() -> Iterator[int]:
    """A real ``epmd`` on a private port, as a child (not detached); yields the port."""
    port = free_port()
    p = subprocess.Popen([EPMD or "epmd", "-port", str(port)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _answers(port), f"epmd on port {port}")
        yield port
    finally:
        _kill(p)


def erl_env(epmd_port: int) -> dict[str, str]:
    return dict(os.environ, ERL_EPMD_PORT=str(epmd_port))


@contextlib.contextmanager
def erl_child(
    name: str, cookie: str, epmd_port: int, *args: str
) -> Iterator[subprocess.Popen[Any]]:
    """A real ``erl`` node ``name`` (a long name) that stays up; killed at the end."""
    p = subprocess.Popen(
        [ERL or "erl", "-noshell", "-name", name, "-setcookie", cookie, *args],
        env=erl_env(epmd_port), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield p
    finally:
        _kill(p)


def erl_eval(name: str, cookie: str, epmd_port: int, expr: str, timeout: float = 60) -> str:
    """Run a short-lived ``erl`` node that evaluates ``expr``, prints its value (``~p``)
    and halts; returns what it printed."""
    out = subprocess.run(
        [ERL or "erl", "-noshell", "-name", name, "-setcookie", cookie, "-eval",
         f"io:format(\"~p~n\", [{expr}]), halt()."],
        env=erl_env(epmd_port), capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    return out.stdout.strip()


@contextlib.contextmanager
def otpy_child(code: str, *args: str) -> Iterator[subprocess.Popen[str]]:
    """An otpy node in its own OS process, running ``code`` (``python -c``) with
    ``args``; stdin/stdout are pipes (text) for scripting it; killed at the end. What
    it wrote on stderr is printed when the test fails (pytest shows captured output)."""
    with tempfile.TemporaryFile("w+") as err:
        p = subprocess.Popen(
            [sys.executable, "-c", code, *args], cwd=str(ROOT), stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=err, text=True,
        )
        try:
            yield p
        finally:
            _kill(p)
            err.seek(0)
            print(f"--- stderr of the node {args[:1]}:\n{err.read()}")
