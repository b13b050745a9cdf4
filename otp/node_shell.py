"""A distributed node with a shell on its terminal: ``python -m otp node``, what
``erl -name a@host -setcookie C`` is to Erlang (the README's cluster walk-through).

::

    $ .venv/bin/python -m otp node --name a@127.0.0.1 --cookie demo
    a@127.0.0.1> dist.ping('b@127.0.0.1')
    'pong'

Every line runs in the shell's own process (one process for the whole session, as the
Erlang shell's: ``self()`` stays the same and its mailbox keeps what arrives, so
``receive(timeout=5)`` on the next line takes a reply). An expression prints its
``repr``; a block (``def``, ``class``, ``while``...) ends with an empty line. The
namespace has ``otp.process``'s functions, ``gen_server``, ``dist``, ``Atom`` and
``flush()`` (print and drop every message in the mailbox). ``--seed NODE`` joins a
cluster through that node (``otp.dist.join``). End of input (Ctrl-D) stops the node.

Failure semantics: an exception in a line prints its traceback and the shell goes on;
the shell's process is the node's first process, so a ``exit('kill')`` of it ends the
node.
"""

from __future__ import annotations

import codeop
import sys
import traceback
from typing import Any

__all__ = ["run_shell", "shell"]


def _namespace() -> dict[str, Any]:
    import otp
    import otp.process
    from otp import dist, gen_server
    from otp.dist import Atom

    ns: dict[str, Any] = {"otp": otp, "dist": dist, "gen_server": gen_server, "Atom": Atom}
    for name in otp.process.__all__:
        ns[name] = getattr(otp.process, name)

    def flush() -> None:
        while True:
            m = otp.process.receive(timeout=0, default=_NONE)
            if m is _NONE:
                return
            print(f"Shell got {m!r}")

    ns["flush"] = flush
    return ns


_NONE = object()


def _read(prompt: str) -> str | None:
    from otp.lowlevel import run_in_thread

    sys.stdout.write(prompt)
    sys.stdout.flush()
    line: str = run_in_thread(sys.stdin.readline)
    return line if line else None


def shell(name: str, *, cookie: str | None = None, cookie_file: str | None = None,
          seeds: tuple[str, ...] = (), epmd_port: int | None = None) -> None:
    """The shell, inside the node's first process: start distribution as ``name``,
    join ``seeds``, then read, evaluate and print until end of input."""
    from otp import dist
    from otp.process import Down, receive, spawn_monitor

    full = dist.start(name, cookie=cookie, cookie_file=cookie_file, epmd_port=epmd_port)
    dist.join(seeds)
    print(f"node {full} is up; Ctrl-D stops it", flush=True)
    # The shell's process is spawned now, so that its pid carries the node's name.
    _, ref = spawn_monitor(_repl, full)
    receive(lambda m: m.__class__ is Down and m.ref == ref)
    dist.stop()


def _repl(full: str) -> None:
    ns = _namespace()
    prompt = f"{full}> "
    lines: list[str] = []
    while True:
        line = _read(prompt if not lines else "... ")
        if line is None:
            break
        lines.append(line.rstrip("\n"))
        try:  # as code.InteractiveConsole: the lines joined, no newline at the end
            code = codeop.compile_command("\n".join(lines), "<shell>", "single")
        except SyntaxError:
            traceback.print_exc(limit=0, file=sys.stdout)
            lines = []
            continue
        if code is None:  # a block goes on
            continue
        lines = []
        try:
            exec(code, ns)
        except Exception as e:  # the line's own frames only
            tb = e.__traceback__.tb_next if e.__traceback__ is not None else None
            traceback.print_exception(type(e), e, tb, file=sys.stdout)
        sys.stdout.flush()


def run_shell(name: str, **options: Any) -> None:
    """A fresh node running ``shell(name, **options)`` until end of input."""
    import otp

    otp.patch()
    otp.run(lambda: shell(name, **options))
