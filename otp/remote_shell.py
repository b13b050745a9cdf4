"""The control socket of a running node: CLI requests and interactive remote shells.

A release node listens on a Unix socket in its ``run/`` directory (mode 0600, never
TCP); every connection's peer uid is checked (``SO_PEERCRED``) against the node's own.
Over it, ``bin/<name>`` sends one-shot requests (``ping``, ``status``, ``rpc``,
``stop``, ...) and ``bin/<name> remote`` attaches an interactive Python console that
runs *inside* the node::

    $ bin/chat remote
    chat 0.1.0 on chat@host (pid 4242). Ctrl-C interrupts, Ctrl-D detaches.
    >>> whereis("chat.listener")
    <0.31.0>
    >>> get_state("chat.listener")
    _Listen(sock=..., acceptor=<0.32.0>)

Server side, in a process of the node::

    from otp import remote_shell
    remote_shell.start_server("run/chat.sock", handlers={"ping": lambda req: "pong"})
    ...
    remote_shell.stop_server()

Client side, from any OS process of the same user::

    remote_shell.request("run/chat.sock", "ping")          # 'pong'
    remote_shell.interactive("run/chat.sock")                 # the console

Console semantics are ``code.InteractiveConsole``'s: each complete input (multi-line
blocks end with an empty line) is compiled in ``"single"`` mode and run in a *new
process* of the node, whose ``print`` output and expression values come back to that
shell only; names assigned persist in the shell's namespace; several shells run at once,
each with its own namespace. Readline editing and history live on the client side.
Ctrl-C interrupts the running input: the evaluating process is killed (a CPU-bound loop
that never yields is interrupted by SIGUSR1, which the client sends after one second;
it raises ``KeyboardInterrupt`` only inside a shell's evaluating process). Ctrl-D
detaches; the node keeps running. Every input line and request is logged (logger
``otp.remote_shell``, and the audit file given to ``start_server``).

Helpers in the shell's namespace: ``processes()``, ``i(pid)`` (``process_info``; a pid
or its text ``"<0.42.0>"``), ``whereis(name)``, ``registered()``, ``get_state(name)``,
``load(module)`` (``otp.code.load``), ``which_applications()``, ``versions()``,
``upgrade(vsn)`` (``otp.release_handler.install``: *not* made permanent),
``make_permanent(vsn)``, ``top(n)``, ``observer()`` (``otp.ops.observer``: the
node's summary, alarms and top processes with their queue statistics). A dotted name
that is an importable module (``chat.connection.address()``) is imported on first use.

Wire protocol: JSON lines both ways. A request is ``{"op": ..., ...}``; its answer
``{"ok": true, "result": ..., "out": "..."}`` or ``{"ok": false, "error": "..."}``.
``{"op": "shell"}`` turns the connection into a console: the server sends
``{"t": "hello" | "out" | "prompt" | "bye", ...}`` frames, the client ``{"op": "line" |
"interrupt" | "reset" | "eof"}``.

Failure semantics: a request to a node that is not running raises ``NodeNotRunning``
(no socket, or nobody accepting); an error inside the node comes back as
``RemoteError`` with its traceback text. A peer of another uid is refused and logged.

When not to use: this is an operator's door, not an API for programs; services talk to
each other over their own protocols (or ``otp.dist``).
"""

from __future__ import annotations

import ast
import codeop
import contextlib
import importlib
import importlib.util
import json
import logging
import os
import select
import signal
import socket
import struct
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from otp.errors import NodeNotRunning, NotInProcess, OTPError, ProcessExit, RemoteError
from otp.lowlevel import NodeVar, ProcessVar
from otp.process import (
    Down,
    Pid,
    exit,
    process_info,
    receive,
    register,
    self,
    send,
    spawn,
    spawn_link,
    spawn_monitor,
    unregister,
    whereis,
)

__all__ = [
    "NodeNotRunning",
    "RemoteError",
    "evaluate",
    "format_top",
    "interactive",
    "request",
    "shell_namespace",
    "start_server",
    "stop_server",
    "top_rows",
]

log = logging.getLogger("otp.remote_shell")

SERVER = "otp.control"
#: Unix socket paths are limited to ~107 bytes; longer ones go through /proc/self/fd.
_MAX_PATH = 100
_INTERRUPT_GRACE = 1.0

Handler = Callable[[dict[str, Any]], Any]



# ------------------------------------------------------------------------ socket paths


@contextlib.contextmanager
def _short_path(path: str | os.PathLike[str]) -> Iterator[str]:
    """A path to ``path`` short enough for ``AF_UNIX`` (via /proc/self/fd if needed)."""
    p = os.fspath(path)
    if len(p.encode()) <= _MAX_PATH:
        yield p
        return
    fd = os.open(os.path.dirname(p) or ".", os.O_RDONLY)
    try:
        yield f"/proc/self/fd/{fd}/{os.path.basename(p)}"
    finally:
        os.close(fd)


# ---------------------------------------------------------------- output routing

# An evaluating process's (session pid, namespace), in its process dictionary: its
# stdout/stderr writes and expression values go to its session, not to the node's
# stdout. _EVALUATING counts them, so that other writes pay one test.
_EVAL: ProcessVar[tuple[Pid, dict[str, Any]] | None] = ProcessVar(
    "otp.remote_shell.eval", default=None
)
_EVALUATING = 0


def _current_eval() -> tuple[Pid, dict[str, Any]] | None:
    if not _EVALUATING:
        return None
    try:
        return _EVAL.get()
    except (NotInProcess, OTPError):
        return None


class _Router:
    """Stands in for ``sys.stdout``/``sys.stderr``: a shell's evaluating process writes
    to its shell, everything else to the original stream."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        ev = _current_eval()
        if ev is None:
            return int(self._stream.write(text))
        if text:
            send(ev[0], ("out", str(text)))
        return len(text)

    def flush(self) -> None:
        if _current_eval() is None:
            self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _displayhook(value: Any) -> None:
    ev = _current_eval()
    if ev is None:
        _ORIGINAL["displayhook"](value)
        return
    if value is None:
        return
    ev[1]["_"] = value
    send(ev[0], ("out", repr(value) + "\n"))


def _on_sigusr1(_signum: int, _frame: Any) -> None:
    # Runs in whatever greenlet holds the CPU: if it is a shell's evaluation that never
    # yields (a busy loop), interrupt it; otherwise do nothing.
    if _current_eval() is not None:
        raise KeyboardInterrupt


_ORIGINAL: dict[str, Any] = {}


def _install_routing(interrupt_signal: bool) -> None:
    if _ORIGINAL:
        return
    _ORIGINAL.update(stdout=sys.stdout, stderr=sys.stderr, displayhook=sys.displayhook)
    sys.stdout = _Router(sys.stdout)
    sys.stderr = _Router(sys.stderr)
    sys.displayhook = _displayhook
    if interrupt_signal:
        _ORIGINAL["sigusr1"] = signal.signal(signal.SIGUSR1, _on_sigusr1)


def _uninstall_routing() -> None:
    if not _ORIGINAL:
        return
    sys.stdout = _ORIGINAL["stdout"]
    sys.stderr = _ORIGINAL["stderr"]
    sys.displayhook = _ORIGINAL["displayhook"]
    if "sigusr1" in _ORIGINAL:
        signal.signal(signal.SIGUSR1, _ORIGINAL["sigusr1"])
    _ORIGINAL.clear()


# ------------------------------------------------------------------------ evaluation


def _import_dotted_names(tree: ast.AST, ns: dict[str, Any]) -> None:
    """Import modules that the code names but the namespace lacks (``chat.connection``)."""
    import builtins

    for node in ast.walk(tree):
        parts: list[str] = []
        cur: Any = node
        while isinstance(cur, ast.Attribute):
            parts.append(cur.attr)
            cur = cur.value
        if not isinstance(cur, ast.Name) or cur.id in ns or hasattr(builtins, cur.id):
            continue
        parts.append(cur.id)
        parts.reverse()
        for n in range(len(parts), 0, -1):
            name = ".".join(parts[:n])
            try:
                if importlib.util.find_spec(name) is None:
                    continue
                importlib.import_module(name)
            except (ImportError, ValueError):
                continue
            ns[parts[0]] = sys.modules[parts[0]]
            break


def _evaluator(code: Any, mode: str, ns: dict[str, Any], session: Pid) -> None:
    global _EVALUATING
    _EVAL.set((session, ns))
    _EVALUATING += 1
    try:
        if mode == "eval":
            value = eval(code, ns)
            send(session, ("value", repr(value)))
        else:
            exec(code, ns)
            send(session, ("value", None))
    except ProcessExit:
        raise
    except KeyboardInterrupt:
        send(session, ("error", "KeyboardInterrupt\n"))
    except BaseException as e:
        tb = e.__traceback__.tb_next if e.__traceback__ is not None else None
        send(session, ("error", "".join(traceback.format_exception(type(e), e, tb))))
    finally:
        _EVALUATING -= 1
        _EVAL.delete()


def _compile(source: str, mode: str) -> tuple[Any, str]:
    """``(code, mode)``: an expression in ``eval`` mode, else statements in ``exec``."""
    if mode == "rpc":
        try:
            return compile(source, "<rpc>", "eval"), "eval"
        except SyntaxError:
            return compile(source, "<rpc>", "exec"), "exec"
    return compile(source, "<remote>", "single"), "exec"


def evaluate(
    source: str,
    ns: dict[str, Any] | None = None,
    *,
    on_output: Callable[[str], None] | None = None,
    on_frame: Callable[[dict[str, Any]], bool] | None = None,
) -> tuple[bool, str | None]:
    """Evaluate ``source`` (an expression, else statements) in a new process, from a
    process. Returns ``(ok, text)``: the value's ``repr`` (None for statements) or the
    error's traceback. Output printed meanwhile goes to ``on_output``."""
    ns = shell_namespace() if ns is None else ns
    try:
        tree = ast.parse(source)
        _import_dotted_names(tree, ns)
        code, mode = _compile(source, "rpc")
    except SyntaxError as e:
        return False, "".join(traceback.format_exception_only(type(e), e))
    return _run_code(code, mode, ns, on_output=on_output, on_frame=on_frame)


def _run_code(
    code: Any,
    mode: str,
    ns: dict[str, Any],
    *,
    on_output: Callable[[str], None] | None = None,
    on_frame: Callable[[dict[str, Any]], bool] | None = None,
) -> tuple[bool, str | None]:
    pid, ref = spawn_monitor(_evaluator, code, mode, ns, self())
    outcome: tuple[bool, str | None] | None = None
    interrupted = False
    while True:
        msg = receive()
        match msg:
            case ("out", text):
                if on_output is not None:
                    on_output(text)
            case ("value", text):
                outcome = (True, text)
            case ("error", text):
                outcome = (False, text)
            case Down(ref=r, reason=reason) if r == ref:
                if outcome is None:
                    outcome = (False, "KeyboardInterrupt\n" if interrupted
                               else f"evaluation process exited: {reason!r}\n")
                return outcome
            case ("frame", raw) if on_frame is not None:
                # A frame from the client while evaluating: interrupt or hang-up.
                if not on_frame(_decode(raw)):
                    interrupted = True
                    exit(pid, "kill")
            case ("closed",):
                exit(pid, "kill")
                receive(lambda m: isinstance(m, Down) and m.ref == ref)
                raise _Closed
            case _:
                pass


class _Closed(Exception):
    pass


# ------------------------------------------------------------------- the namespace


def _find_pid(pid: Any) -> Pid:
    if isinstance(pid, Pid):
        return pid
    if isinstance(pid, str):
        p = whereis(pid)
        if p is not None:
            return p
        from otp.process import processes

        for q in processes():
            if repr(q) == pid.strip():
                return q
    raise ValueError(f"expected a pid, a registered name or '<0.N.0>', got {pid!r}")


def _top(n: int = 20, sort: str = "queue") -> None:
    print(format_top(top_rows(sort=sort, limit=n)))


def format_top(rows: list[dict[str, Any]]) -> str:
    """``top_rows`` as a table (what ``bin/<name> top`` prints): ``otp.observer``'s."""
    from otp import observer

    return observer.format_top(rows)


def shell_namespace(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A fresh namespace with the shell's helpers (see the module docs)."""
    import otp
    from otp import application
    from otp import process as _process
    from otp import sys as _sys

    def i(pid: Any) -> Any:
        return process_info(_find_pid(pid))

    def get_state(name: Any, timeout: float = 5.0) -> Any:
        return _sys.get_state(_find_pid(name) if not isinstance(name, str) else name,
                              timeout=timeout)

    def load(module: str) -> Any:
        code = _optional("otp.code", "the code server")
        return code.load(module)

    def _rh(fn: str, *args: Any) -> Any:
        rh = _optional("otp.release_handler", "the release handler")
        root = os.environ.get("OTP_RELEASE_ROOT", ".")
        return getattr(rh, fn)(root, *args)

    ns: dict[str, Any] = {
        "__name__": "__console__",
        "__doc__": None,
        "otp": otp,
        "processes": _process.processes,
        "registered": _process.registered,
        "i": i,
        "whereis": whereis,
        "get_state": get_state,
        "load": load,
        "which_applications": application.which_applications,
        "versions": lambda: _rh("which_releases"),
        "upgrade": lambda vsn: _rh("install", vsn),
        "make_permanent": lambda vsn: _rh("make_permanent", vsn),
        "top": _top,
        "observer": lambda sort="queue", limit=15: _optional("otp.ops", "otp.ops").observer(
            sort, limit),
    }
    ns.update(extra or {})
    return ns


def _optional(module: str, what: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as e:
        if e.name != module:
            raise
        raise RemoteError(f"{what} is not available in this node ({module} not found)") \
            from None


def top_rows(sort: str = "queue", limit: int = 20) -> list[dict[str, Any]]:
    """``otp.observer.top`` as JSON-ready rows (pid, name, queue, memory, messages,
    status, current_function, behaviour, initial_call, call): the control socket's
    ``top``."""
    from otp import observer

    if sort not in ("queue", "memory", "messages"):
        raise ValueError(f"top sorts by 'queue', 'memory' or 'messages', got {sort!r}")
    return [row.to_json() for row in observer.top(sort, limit)]  # type: ignore[arg-type]


# ------------------------------------------------------------------------ the server


def start_server(
    path: str | os.PathLike[str],
    *,
    handlers: dict[str, Handler] | None = None,
    banner: str = "",
    audit: str | os.PathLike[str] | None = None,
    interrupt_signal: bool = False,
) -> Pid:
    """Listen on the Unix socket ``path`` (mode 0600) in a process registered as
    ``otp.control``; returns its pid. ``handlers`` map request ops to functions run in
    the connection's process (``fn(request) -> result``, JSON-serialisable). ``audit``
    is a file every request and shell line is appended to. ``interrupt_signal``
    installs the SIGUSR1 handler that interrupts a busy shell evaluation."""
    p = os.fspath(path)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(p)
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        with _short_path(p) as short:
            lsock.bind(short)
    finally:
        os.umask(old)
    os.chmod(p, 0o600)
    lsock.listen(64)
    _install_routing(interrupt_signal)
    auditor = _Audit(audit)
    pid = spawn(_acceptor, lsock, p, dict(handlers or {}), banner, auditor)
    register(SERVER, pid)
    _LISTENING.set((pid, lsock, p))
    return pid


# The node's listening socket and its path, with the acceptor's pid.
_LISTENING: NodeVar[tuple[Pid, socket.socket, str] | None] = NodeVar(
    "otp.remote_shell.listening", default=None
)


def stop_server() -> None:
    """Stop accepting (sessions already open keep running) and remove the socket."""
    pid = whereis(SERVER)
    if pid is not None:
        unregister(SERVER)
        exit(pid, "kill")
    listening = _LISTENING.get()
    if listening is not None and listening[0] == pid:
        _LISTENING.set(None)
        # The acceptor's own cleanup runs only when it is next scheduled: do it now.
        _, lsock, path = listening
        lsock.close()
        with contextlib.suppress(OSError):
            os.unlink(path)
    _uninstall_routing()


class _Audit:
    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = os.fspath(path) if path is not None else None

    def __call__(self, who: str, what: str) -> None:
        log.info("%s: %s", who, what)
        if self.path is None:
            return
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime())
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, f"{stamp} {who}: {what}\n".encode())
            finally:
                os.close(fd)
        except OSError as e:
            log.warning("cannot write the audit log %s: %s", self.path, e)


def _acceptor(lsock: Any, path: str, handlers: dict[str, Handler], banner: str,
              audit: _Audit) -> None:
    try:
        while True:
            conn, _ = lsock.accept()
            try:
                cred = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                       struct.calcsize("3i"))
                peer_pid, uid, _gid = struct.unpack("3i", cred)
            except OSError:
                conn.close()
                continue
            if uid != os.getuid():
                log.warning("control socket: refused a peer of uid %d (pid %d): only uid "
                            "%d may connect", uid, peer_pid, os.getuid())
                conn.close()
                continue
            spawn(_session, conn, f"uid={uid} pid={peer_pid}", handlers, banner, audit)
    finally:
        lsock.close()


def _reader(conn: Any, session: Pid) -> None:
    buf = b""
    while True:
        data = conn.recv(65536)
        if not data:
            send(session, ("closed",))
            return
        buf += data
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            send(session, ("frame", line))


def _decode(raw: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(raw)
    except ValueError:
        return {"op": "?", "raw": raw[:100].decode(errors="replace")}
    return obj if isinstance(obj, dict) else {"op": "?"}


def _write(conn: Any, obj: dict[str, Any]) -> None:
    conn.sendall(json.dumps(obj, default=repr).encode() + b"\n")


def _session(conn: Any, who: str, handlers: dict[str, Handler], banner: str,
             audit: _Audit) -> None:
    reader = spawn_link(_reader, conn, self())
    try:
        while True:
            msg = receive(lambda m: isinstance(m, tuple) and m[0] in ("frame", "closed"))
            if msg[0] == "closed":
                return
            req = _decode(msg[1])
            op = req.get("op")
            if op == "shell":
                audit(who, "remote shell attached")
                try:
                    _shell(conn, who, banner, audit)
                except _Closed:
                    pass
                audit(who, "remote shell detached")
                return
            audit(who, f"request {json.dumps(req)[:500]}")
            handler = handlers.get(str(op))
            if handler is None:
                _write(conn, {"ok": False, "error": f"unknown request {op!r}; "
                              f"expected one of {[*sorted(handlers), 'shell']}"})
                continue
            try:
                result = handler(req)
            except Exception as e:
                _write(conn, {"ok": False, "error": _error_text(e)})
                continue
            _write(conn, {"ok": True, "result": result})
    except (OSError, _Closed):
        return
    finally:
        exit(reader, "kill")
        conn.close()


def _error_text(e: BaseException) -> str:
    if isinstance(e, (RemoteError, OTPError, ValueError, FileNotFoundError)):
        return str(e) or type(e).__name__
    return "".join(traceback.format_exception(type(e), e, e.__traceback__))


def _shell(conn: Any, who: str, banner: str, audit: _Audit) -> None:
    ns = shell_namespace()
    compiler = codeop.CommandCompiler()
    buffer: list[str] = []
    _write(conn, {"t": "hello", "pid": os.getpid(), "banner": banner})

    def out(text: str) -> None:
        _write(conn, {"t": "out", "data": text})

    def on_frame(req: dict[str, Any]) -> bool:
        return req.get("op") not in ("interrupt", "eof")

    prompt = True
    while True:
        if prompt:
            _write(conn, {"t": "prompt", "ps": "... " if buffer else ">>> "})
        prompt = True
        msg = receive(lambda m: isinstance(m, tuple) and m[0] in ("frame", "closed"))
        if msg[0] == "closed":
            return
        req = _decode(msg[1])
        match req.get("op"):
            case "eof":
                _write(conn, {"t": "bye"})
                return
            case "reset":  # Ctrl-C at the prompt: drop the pending input
                buffer.clear()
                out("KeyboardInterrupt\n")
                continue
            case "line":
                line = str(req.get("data", ""))
            case _:
                # A stale interrupt (read after the evaluation it meant had ended, when
                # a busy loop was stopped by SIGUSR1): the client already has a prompt.
                prompt = False
                continue
        audit(who, f"shell: {line}")
        buffer.append(line)
        source = "\n".join(buffer)
        try:
            code = compiler(source, "<remote>", "single")
        except (SyntaxError, OverflowError, ValueError) as e:
            buffer.clear()
            out("".join(traceback.format_exception_only(type(e), e)))
            continue
        if code is None:
            continue
        buffer.clear()
        try:
            _import_dotted_names(ast.parse(source), ns)
        except SyntaxError:
            pass
        ok, text = _run_code(code, "exec", ns, on_output=out, on_frame=on_frame)
        if not ok and text:
            out(text)


# ------------------------------------------------------------------------ the client


def _connect(path: str | os.PathLike[str], timeout: float | None) -> socket.socket:
    p = os.fspath(path)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        with _short_path(p) as short:
            s.connect(short)
    except (FileNotFoundError, ConnectionRefusedError) as e:
        s.close()
        raise NodeNotRunning(f"no node answers on {p} ({e.strerror})") from None
    except OSError:
        s.close()
        raise
    return s


class _Lines:
    """Reads JSON-line frames from a socket; interruptible (Ctrl-C) without losing data."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def next(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next frame; None when the peer closed. ``TimeoutError`` after ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self.buf:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("no answer from the node")
                r, _, _ = select.select([self.sock], [], [], left)
                if not r:
                    continue
            data = self.sock.recv(65536)
            if not data:
                return None
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        obj = json.loads(line)
        return obj if isinstance(obj, dict) else {}


def request(path: str | os.PathLike[str], op: str, /, *, timeout: float | None = 30.0,
            **args: Any) -> Any:
    """Send one request to the node listening on ``path``; returns its result.

    Raises ``NodeNotRunning`` if no node answers, ``RemoteError`` if the request
    failed inside the node, ``TimeoutError`` after ``timeout`` seconds."""
    s = _connect(path, timeout)
    try:
        s.sendall(json.dumps({"op": op, **args}).encode() + b"\n")
        answer = _Lines(s).next(timeout)
    finally:
        s.close()
    if answer is None:
        raise NodeNotRunning(f"the node on {os.fspath(path)} closed the connection")
    if not answer.get("ok"):
        raise RemoteError(str(answer.get("error")))
    return answer.get("result")


def interactive(path: str | os.PathLike[str], *, history: str | None = None,
                stdout: Any = None) -> int:
    """Attach an interactive console to the node on ``path``; returns the exit status
    (0 after Ctrl-D, 1 if the connection was lost)."""
    out = stdout or sys.stdout
    s = _connect(path, None)
    lines = _Lines(s)
    try:
        import readline
    except ImportError:  # pragma: no cover - readline is missing on some platforms
        readline = None  # type: ignore[assignment]
    if readline is not None and history:
        with contextlib.suppress(OSError):
            readline.read_history_file(history)

    def send_op(op: str, **kw: Any) -> None:
        s.sendall(json.dumps({"op": op, **kw}).encode() + b"\n")

    node_pid = None
    # "input": a prompt was shown and no line sent yet; "running": waiting for the node.
    phase = "running"
    interrupt_at: float | None = None
    try:
        send_op("shell")
        while True:
            try:
                timeout = None
                if interrupt_at is not None:
                    timeout = max(0.0, interrupt_at + _INTERRUPT_GRACE - time.monotonic())
                try:
                    frame = lines.next(timeout)
                except TimeoutError:
                    # The evaluation does not yield: interrupt it with a signal.
                    if node_pid is not None:
                        with contextlib.suppress(OSError):
                            os.kill(node_pid, signal.SIGUSR1)
                    interrupt_at = None
                    continue
                if frame is None:
                    out.write("\nconnection to the node lost\n")
                    return 1
                match frame.get("t"):
                    case "hello":
                        node_pid = frame.get("pid")
                        if frame.get("banner"):
                            out.write(str(frame["banner"]) + "\n")
                        out.write("Ctrl-C interrupts, Ctrl-D detaches "
                                  "(the node keeps running).\n")
                    case "out":
                        out.write(str(frame.get("data", "")))
                    case "bye":
                        return 0
                    case "prompt":
                        interrupt_at = None
                        phase = "input"
                        out.flush()
                        try:
                            line = input(str(frame.get("ps", ">>> ")))
                        except EOFError:
                            out.write("\n(detached; the node keeps running)\n")
                            out.flush()
                            send_op("eof")
                            return 0
                        send_op("line", data=line)
                        phase = "running"
            except KeyboardInterrupt:
                if phase == "input":  # at the prompt: drop the pending input
                    out.write("\n")
                    send_op("reset")
                    phase = "running"
                elif interrupt_at is None:
                    send_op("interrupt")
                    interrupt_at = time.monotonic()
    except (BrokenPipeError, ConnectionResetError):
        out.write("\nconnection to the node lost\n")
        return 1
    finally:
        s.close()
        if readline is not None and history:
            with contextlib.suppress(OSError):
                Path(history).parent.mkdir(parents=True, exist_ok=True)
                readline.write_history_file(history)
