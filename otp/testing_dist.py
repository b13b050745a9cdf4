"""The multi-node test kit: otpy nodes (and real ``erl`` nodes) as OS processes that a
test starts, runs code on, partitions and kills (in the manner of OTP's ``peer``).

Each node is a child process with its own log file, driven over its stdin/stdout (a
pipe, so that the control channel never depends on the distribution under test):

- ``start_epmd(port)``: a private ``epmd -port N`` (a child, killed by pid), or None
  when no ``epmd`` is installed (otpy nodes then serve the names themselves);
- ``OtpyNode.start(name, cookie=..., epmd_port=..., log_dir=...)``: runs
  ``python -m otp.testing_dist --name NAME --cookie C --epmd-port P``: an otpy node,
  distributed, evaluating what the test sends it. ``node.exec(code)`` runs Python
  statements in a new process on that node (names it defines persist: one namespace
  per node, preloaded with ``otp.process``'s functions, ``gen_server``, ``dist``,
  ``Atom``, ``ImproperList`` and the probe below);
  ``node.eval(expr)`` returns the value of an expression (it crosses back pickled:
  pids, refs, records, exceptions keep their types). A failure raises ``RemoteError``
  with the node's traceback.
- ``ErlNode.start(name, ...)``: a real ``erl -noshell`` node evaluating Erlang
  expressions: ``erl.eval("erlang:node().")`` returns the value decoded from the
  External Term Format (atoms as ``Atom``, binaries as ``bytes``...). Bindings persist.
- ``node.kill()``: SIGKILL; ``node.stop()``: a clean stop; both idempotent.
- ``cut(a, b)`` / ``heal(a, b)``: drop the connection between two otpy nodes (their
  links and monitors across fire ``noconnection``), and make it again.
- ``Cluster``: a context manager that starts EPMD and nodes and kills every child it
  started, by pid, however the test ends.

Example (a pytest test; ``tmp_path`` keeps the logs)::

    from otp.testing_dist import Cluster

    def test_send_across(tmp_path):
        with Cluster(tmp_path) as c:
            a, b = c.otpy("a"), c.otpy("b")
            b.exec("register('echo', spawn(lambda: send(*receive())))")
            a.exec("send(('echo', B), (self(), 'hi')); result = receive(timeout=5)",
                   B=b.name)
            assert a.eval("result") == "hi"

When not to use it: for anything a single node can show. Starting an OS process costs
about a second; the kernel's distribution hooks are tested without sockets in
``tests/test_dist_processes.py``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import itertools
import json
import logging
import os
import pathlib
import pickle
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import traceback
from types import TracebackType
from typing import Any

from otp.errors import RemoteError

__all__ = [
    "Cluster",
    "ErlNode",
    "OtpyNode",
    "cut",
    "free_port",
    "heal",
    "start_epmd",
]

_ROOT = pathlib.Path(__file__).resolve().parent.parent
_names = itertools.count(1)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Child:
    """A child OS process spoken to by lines on its stdin/stdout."""

    def __init__(self, argv: list[str], log_path: pathlib.Path, env: dict[str, str]) -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=env,
            cwd=str(_ROOT),
        )
        self._buf = b""

    @property
    def os_pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def write_line(self, line: str) -> None:
        if not self.alive():
            raise RemoteError(
                f"{self!r} ended (exit status {self.proc.returncode}); "
                f"see its log {self.log_path}:\n{_tail(self.log_path)}"
            )
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def read_line(self, timeout: float, prefix: bytes = b"") -> bytes:
        """The next stdout line starting with ``prefix`` (others are skipped)."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self._buf:
                line, self._buf = self._buf.split(b"\n", 1)
                if line.startswith(prefix):
                    return line[len(prefix) :]
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    f"no answer from {self!r} within {timeout} s (see {self.log_path})"
                )
            ready, _, _ = select.select([fd], [], [], min(left, 0.5))
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise RemoteError(
                        f"{self!r} ended (exit status {self.proc.wait()}); "
                        f"see its log {self.log_path}:\n{_tail(self.log_path)}"
                    )
                self._buf += chunk

    def kill(self) -> None:
        """SIGKILL, then reap (idempotent)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
        self._reap()

    def _reap(self) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()
        self._log.close()


def _tail(path: pathlib.Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start_epmd(port: int, log_dir: pathlib.Path) -> _Child | None:
    """A private EPMD on ``port`` (a child process, not a daemon), or None if no
    ``epmd`` is installed. Waits until it accepts connections."""
    exe = shutil.which("epmd")
    if exe is None:
        return None
    child = _Child(
        [exe, "-port", str(port), "-address", "127.0.0.1"],
        pathlib.Path(log_dir) / f"epmd-{port}.log",
        dict(os.environ),
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return child
        if not child.alive():
            break
        time.sleep(0.05)
    child.kill()
    raise RemoteError(f"epmd did not start on port {port}: {_tail(child.log_path)}")


class OtpyNode:
    """An otpy node in a child OS process (see the module docstring)."""

    def __init__(self, child: _Child, name: str) -> None:
        self.child = child
        self.name = name

    def __repr__(self) -> str:
        return f"OtpyNode({self.name!r}, os_pid={self.child.os_pid})"

    @classmethod
    def start(
        cls,
        name: str,
        *,
        cookie: str,
        epmd_port: int,
        log_dir: pathlib.Path,
        timeout: float = 30.0,
        busy_wait: float = 0.0,
    ) -> OtpyNode:
        env = dict(os.environ, ERL_EPMD_PORT=str(epmd_port), PYTHONUNBUFFERED="1")
        short = name.split("@")[0]
        child = _Child(
            [sys.executable, "-m", "otp.testing_dist", "--name", name, "--cookie", cookie,
             "--epmd-port", str(epmd_port), "--busy-wait", repr(busy_wait)],
            pathlib.Path(log_dir) / f"{short}.log",
            env,
        )  # fmt: skip
        node = cls(child, name)
        try:
            ready = json.loads(child.read_line(timeout, b"@@"))
        except BaseException:
            child.kill()
            raise
        node.name = ready["node"]
        return node

    def _request(self, op: str, code: str, timeout: float, bindings: dict[str, Any]) -> Any:
        payload = base64.b64encode(pickle.dumps(bindings)).decode()
        self.child.write_line(
            json.dumps({"op": op, "code": code, "timeout": timeout, "bindings": payload})
        )
        answer = json.loads(self.child.read_line(timeout + 10, b"@@"))
        if not answer["ok"]:
            raise RemoteError(f"on {self.name}: {answer['error']}")
        if answer.get("value") is None:
            return None if answer.get("repr") in (None, "None") else answer["repr"]
        return pickle.loads(base64.b64decode(answer["value"]))

    def exec(self, code: str, *, timeout: float = 10.0, **bindings: Any) -> None:
        """Run Python statements in a new process on this node (``bindings`` are set
        as names first); the names they define stay for later calls."""
        self._request("exec", code, timeout, bindings)

    def eval(self, expr: str, *, timeout: float = 10.0, **bindings: Any) -> Any:
        """The value of a Python expression evaluated in a new process on this node
        (its ``repr`` if it cannot be pickled)."""
        return self._request("eval", expr, timeout, bindings)

    def kill(self) -> None:
        """SIGKILL the node's OS process (idempotent)."""
        self.child.kill()

    def stop(self) -> None:
        """Stop the node cleanly (closing its stdin ends it), SIGKILL if it lingers."""
        if self.child.alive():
            with contextlib.suppress(OSError):
                assert self.child.proc.stdin is not None
                self.child.proc.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.child.proc.wait(timeout=5)
        self.child.kill()


_ERL_LOOP = (
    "L = fun Loop(B) -> case io:get_line('') of eof -> halt(); {error, _} -> halt(); "
    "Line -> {R, B3} = try {ok, T, _} = erl_scan:string(Line), "
    "{ok, Es} = erl_parse:parse_exprs(T), {value, V, B2} = erl_eval:exprs(Es, B), "
    "{{ok, V}, B2} catch C:E -> "
    '{{error, unicode:characters_to_binary(io_lib:format("~p:~p", [C, E]))}, B} '
    'end, io:format("@@~s~n", [base64:encode(term_to_binary(R))]), Loop(B3) end end, '
    'io:format("@@ready~n"), L(erl_eval:new_bindings()).'
)


class ErlNode:
    """A real Erlang node (``erl -noshell``) evaluating Erlang expressions from the
    test. Needs ``erl`` installed: check ``shutil.which("erl")`` and skip otherwise."""

    def __init__(self, child: _Child, name: str) -> None:
        self.child = child
        self.name = name

    def __repr__(self) -> str:
        return f"ErlNode({self.name!r}, os_pid={self.child.os_pid})"

    @classmethod
    def start(
        cls,
        name: str,
        *,
        cookie: str,
        epmd_port: int,
        log_dir: pathlib.Path,
        extra_args: tuple[str, ...] = (),
        timeout: float = 30.0,
    ) -> ErlNode:
        exe = shutil.which("erl")
        if exe is None:
            raise RemoteError("erl is not installed (apt-get install erlang-base)")
        env = dict(os.environ, ERL_EPMD_PORT=str(epmd_port))
        short = name.split("@")[0]
        child = _Child(
            [exe, "-noshell", "-name", name, "-setcookie", cookie, *extra_args,
             "-eval", _ERL_LOOP],
            pathlib.Path(log_dir) / f"{short}.erl.log",
            env,
        )  # fmt: skip
        try:
            child.read_line(timeout, b"@@ready")
        except BaseException:
            child.kill()
            raise
        return cls(child, name)

    def eval(self, expr: str, *, timeout: float = 10.0) -> Any:
        """The value of Erlang expressions (ending with ``.``), decoded; a failure
        raises ``RemoteError`` with the Erlang error."""
        from otp.dist._etf import decode

        line = " ".join(expr.split())
        self.child.write_line(line)
        data = base64.b64decode(self.child.read_line(timeout, b"@@"))
        (status, value), _ = decode(data, 1, otpy=False)
        if status != "ok":
            text = value.decode(errors="replace") if isinstance(value, bytes) else value
            raise RemoteError(f"on {self.name}: {text}")
        return value

    def kill(self) -> None:
        self.child.kill()

    def stop(self) -> None:
        if self.child.alive():
            with contextlib.suppress(RemoteError, TimeoutError, OSError):
                self.child.write_line("halt().")
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.child.proc.wait(timeout=5)
        self.child.kill()


def cut(a: OtpyNode, b: OtpyNode | ErlNode) -> None:
    """Drop the connection between ``a`` and ``b`` (from ``a``'s side): both see it
    lost. The next message between them makes it again (or ``heal``)."""
    a.exec("dist.disconnect(PEER)", PEER=b.name)


def heal(a: OtpyNode, b: OtpyNode | ErlNode) -> None:
    """Connect ``a`` to ``b`` again; ``RemoteError`` if it cannot."""
    if a.eval("dist.connect(PEER)", PEER=b.name) is not True:
        raise RemoteError(f"{a.name} could not connect to {b.name}")


class Cluster:
    """Start EPMD and nodes for one test; every child is killed (by pid) on exit.

    ``Cluster(log_dir, cookie="c")``; ``c.otpy("a")`` starts ``a@127.0.0.1`` (with
    ``busy_wait=0`` unless told: several nodes share the test machine's cores);
    ``c.erl("e")`` a real Erlang node (skip the test when ``shutil.which("erl")`` is
    None). ``c.epmd_port`` is the private EPMD's port.
    """

    def __init__(self, log_dir: pathlib.Path | str, *, cookie: str = "otpy-test") -> None:
        self.log_dir = pathlib.Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.cookie = cookie
        self.epmd_port = free_port()
        self.epmd: _Child | None = None
        self.nodes: list[OtpyNode | ErlNode] = []

    def __enter__(self) -> Cluster:
        self.epmd = start_epmd(self.epmd_port, self.log_dir)
        return self

    def __exit__(
        self,
        t: type[BaseException] | None,
        e: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def otpy(self, short: str, *, busy_wait: float = 0.0) -> OtpyNode:
        n = OtpyNode.start(
            f"{short}@127.0.0.1", cookie=self.cookie, epmd_port=self.epmd_port,
            log_dir=self.log_dir, busy_wait=busy_wait,
        )  # fmt: skip
        self.nodes.append(n)
        return n

    def erl(self, short: str, *extra_args: str) -> ErlNode:
        n = ErlNode.start(
            f"{short}@127.0.0.1", cookie=self.cookie, epmd_port=self.epmd_port,
            log_dir=self.log_dir, extra_args=extra_args,
        )  # fmt: skip
        self.nodes.append(n)
        return n

    def close(self) -> None:
        for n in reversed(self.nodes):
            n.kill()
        self.nodes.clear()
        if self.epmd is not None:
            self.epmd.kill()
            self.epmd = None


# --- the child's side: python -m otp.testing_dist ----------------------------------------
#
# Code run on a node sees, besides otp.process's functions, ``gen_server`` and ``dist``:
# ``start_probe()``, a process that traps exits and keeps every message it gets (link
# to it, monitor from it, send to it), and ``probe_wait(pred, timeout)``, the first
# message it kept (or keeps later) for which ``pred`` holds.


def start_probe(name: str = "probe") -> Any:
    """On a node: start and register a process that traps exits and keeps every
    message; returns its pid."""
    from otp.process import receive, register, send, spawn, trap_exit

    def loop() -> None:
        trap_exit(True)
        kept: list[Any] = []
        waiters: list[tuple[Any, Any]] = []
        while True:
            m = receive()
            if m.__class__ is tuple and len(m) == 3 and m[0] == "$probe_wait":
                hit = next((k for k in kept if m[1](k)), _NONE)
                if hit is _NONE:
                    waiters.append((m[1], m[2]))
                else:
                    send(m[2], ("$probe_hit", hit))
                continue
            if m.__class__ is tuple and len(m) == 2 and m[0] == "$probe_all":
                send(m[1], ("$probe_all", tuple(kept)))
                continue
            kept.append(m)
            for w in [w for w in waiters if w[0](m)]:
                waiters.remove(w)
                send(w[1], ("$probe_hit", m))

    pid = spawn(loop)
    register(name, pid)
    return pid


_NONE: Any = object()


def probe_wait(pred: Any, timeout: float = 10.0, name: str = "probe") -> Any:
    """On a node: the first message the probe kept (or keeps within ``timeout``) for
    which ``pred`` holds; ``TimeoutError`` if none comes."""
    from otp.process import receive, self, send

    send(name, ("$probe_wait", pred, self()))
    got = receive(
        lambda m: m.__class__ is tuple and m[:1] == ("$probe_hit",), timeout, default=None
    )
    if got is None:
        raise TimeoutError(f"the probe got no matching message within {timeout} s")
    return got[1]


def probe_messages(name: str = "probe") -> tuple[Any, ...]:
    """On a node: every message the probe kept, oldest first."""
    from otp.process import receive, self, send

    send(name, ("$probe_all", self()))
    got = receive(lambda m: m.__class__ is tuple and m[:1] == ("$probe_all",), 10.0)
    return tuple(got[1])


def _namespace() -> dict[str, Any]:
    import otp
    import otp.process
    from otp import dist, gen_server
    from otp.dist import Atom, ImproperList

    ns: dict[str, Any] = {
        "Atom": Atom,
        "ImproperList": ImproperList,
        "otp": otp,
        "dist": dist,
        "gen_server": gen_server,
        "start_probe": start_probe,
        "probe_wait": probe_wait,
        "probe_messages": probe_messages,
    }
    for name in otp.process.__all__:
        ns[name] = getattr(otp.process, name)
    return ns


def _answer(ok: bool, value: Any = None, error: str | None = None) -> None:
    out: dict[str, Any] = {"ok": ok}
    if error is not None:
        out["error"] = error
    else:
        out["repr"] = repr(value)
        try:
            out["value"] = base64.b64encode(pickle.dumps(value)).decode()
        except Exception:
            out["value"] = None
    sys.stdout.write("@@" + json.dumps(out) + "\n")
    sys.stdout.flush()


def _done_or_down(rid: int, ref: Any) -> Any:
    # The result of request ``rid`` or the Down of its evaluating process (a result of
    # an earlier request that timed out may still come: it is not looked at).
    from otp.process import Down

    return lambda m: (
        (m.__class__ is tuple and len(m) == 4 and m[:2] == ("$done", rid))
        or (m.__class__ is Down and m.ref is ref)
    )


def _serve(name: str, cookie: str, epmd_port: int, busy_wait: float = 0.0) -> None:
    from otp import dist
    from otp.lowlevel import run_in_thread
    from otp.process import Down, exit, monitor, receive, self, send, spawn

    full = dist.start(name, cookie=cookie, epmd_port=epmd_port, busy_wait=busy_wait)
    ns = _namespace()
    sys.stdout.write("@@" + json.dumps({"node": full}) + "\n")
    sys.stdout.flush()
    me = self()
    rids = itertools.count(1)
    while True:
        line = run_in_thread(sys.stdin.readline)
        if not line:
            return
        req = json.loads(line)
        ns.update(pickle.loads(base64.b64decode(req["bindings"])))

        rid = next(rids)

        def run(req: dict[str, Any] = req, rid: int = rid) -> None:
            try:
                if req["op"] == "eval":
                    value = eval(req["code"], ns)
                else:
                    exec(req["code"], ns)
                    value = None
                send(me, ("$done", rid, True, value))
            except BaseException as e:
                text = "".join(traceback.format_exception(type(e), e, e.__traceback__))
                send(me, ("$done", rid, False, text))
                if not isinstance(e, Exception):
                    raise

        pid = spawn(run)
        ref = monitor(pid)
        got = receive(_done_or_down(rid, ref), req["timeout"], default=None)
        if got is None:
            exit(pid, "kill")
            receive(_done_or_down(-1, ref))
            _answer(False, error=f"no result within {req['timeout']} s")
        elif got.__class__ is Down:
            _answer(False, error=f"the evaluating process ended: {got.reason!r}")
        else:
            _answer(True, got[3]) if got[2] else _answer(False, error=got[3])
            receive(_done_or_down(-1, ref))  # its Down: the process is gone


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m otp.testing_dist",
        description="An otpy node for multi-node tests, driven over stdin/stdout.",
    )
    parser.add_argument("--name", required=True, help="node name, e.g. a@127.0.0.1")
    parser.add_argument("--cookie", required=True)
    parser.add_argument("--epmd-port", type=int, required=True)
    parser.add_argument("--busy-wait", type=float, default=0.0, help="otp.dist.start's")
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    import otp

    otp.patch()
    otp.run(_serve, args.name, args.cookie, args.epmd_port, args.busy_wait)


if __name__ == "__main__":
    main()
