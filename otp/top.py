"""The live ``top`` of a node (``bin/<name> top``), drawn with ``rich``.

A summary (node, uptime, processes, queued messages, message rates, hub utilisation,
CPU, memory, alarms) above the processes sorted by queue length, dequeue rate,
enqueue rate, drain time or memory, with their registered name, what they run and
their queue statistics (``otp.stats``). Keys::

    q  quit            u  sort by queue        o  by dequeue rate (out)
    i  by enqueue rate d  by drain time        m  by memory
    j/k or arrows  move the selection          Enter  inspect the selected process
    Esc/b  back from the inspect view

The view reads through two functions (``fetch(sort, limit) -> (summary, rows)`` and
``inspect(pid) -> dict``), so the same screen shows a release over its control socket
(``bin/<name> top``) or the node it runs in. ``render_text`` is the same view as plain
text (``observer()`` in the remote shell, ``top --once --sort drain``)::

    >>> from otp.top import render_text
    >>> print(render_text({"node": "a@h", "processes": 1, "queued": 0, "alarms": []}, [],
    ...                   "queue").splitlines()[0])
    node a@h  uptime -  processes 1  queued 0  in -/s  out -/s  hub -  cpu -  rss -

When not to use it: in scripts (use ``otp.stats`` / the ``ops_top`` control request).
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import time
from collections.abc import Callable
from typing import Any

__all__ = ["SORTS", "render", "render_text", "run"]

#: sort key -> (title, key of the row)
SORTS: dict[str, str] = {
    "queue": "queue length",
    "out": "dequeue rate",
    "in": "enqueue rate",
    "drain": "drain time",
    "memory": "memory",
}
_KEYS = {"u": "queue", "o": "out", "i": "in", "d": "drain", "m": "memory"}


def _num(v: Any, fmt: str = "{:.0f}") -> str:
    return "-" if v is None else fmt.format(v)


def _mb(v: Any) -> str:
    return "-" if v is None else f"{v / 1048576:.1f}MB"


def _time(v: Any) -> str:
    if v is None:
        return "never"
    return f"{v:.1f}s" if v < 600 else f"{v / 60:.0f}m"


def summary_line(s: dict[str, Any]) -> str:
    rates_in = s.get("msgs_in") or [None]
    rates_out = s.get("msgs_out") or [None]
    hub = s.get("hub_util")
    return (f"node {s.get('node')}  uptime {_num(s.get('uptime'), '{:.0f}s')}  "
            f"processes {s.get('processes')}  queued {s.get('queued')}  "
            f"in {_num(rates_in[0])}/s  out {_num(rates_out[0])}/s  "
            f"hub {'-' if hub is None else f'{hub * 100:.0f}%'}  "
            f"cpu {_num(s.get('cpu'), '{:.0f}%')}  rss {_mb(s.get('rss'))}")


def _summaries(s: dict[str, Any]) -> list[dict[str, Any]]:
    return list(s.get("nodes") or [s])


def _alarm_lines(s: dict[str, Any]) -> list[str]:
    from otp.ops import describe_alarm

    many = len(_summaries(s)) > 1
    return [f"ALARM {str(n.get('node')) + ' ' if many else ''}{describe_alarm(a)}"
            for n in _summaries(s) for a in n.get("alarms") or []]


_COLS = ("PID", "NAME", "MSGQ", "IN/s", "OUT/s", "DRAIN", "WAIT", "MEMORY", "CURRENT")


def _cells(r: dict[str, Any]) -> list[str]:
    ins = r.get("in_now")
    outs = r.get("out_now")
    drain = r.get("drain_time") if r.get("queue") else 0.0
    pid = r["pid"] if r.get("node") is None else f"{r['node']} {r['pid']}"
    return [pid, (r.get("name") or "")[:24], str(r.get("queue", 0)), _num(ins, "{:.1f}"),
            _num(outs, "{:.1f}"), _time(drain) if r.get("queue") else "-",
            _num(r.get("oldest_wait"), "{:.0f}s"), str(r.get("memory", "-")),
            str(r.get("call") or r.get("current_function") or "")[:60]]


def render_text(summary: dict[str, Any], rows: list[dict[str, Any]], sort: str) -> str:
    """The view as plain text."""
    table = [list(_COLS)] + [_cells(r) for r in rows]
    widths = [max(len(t[i]) for t in table) for i in range(len(_COLS))]
    lines = [*(summary_line(n) for n in _summaries(summary)), *_alarm_lines(summary),
             f"processes by {SORTS.get(sort, sort)}"]
    for t in table:
        lines.append("  ".join(c.ljust(w) if i in (0, 1, 8) else c.rjust(w)
                               for i, (c, w) in enumerate(zip(t, widths, strict=True))))
    return "\n".join(lines)


def render(summary: dict[str, Any], rows: list[dict[str, Any]], sort: str,
           selected: int = 0) -> Any:
    """The view as a ``rich`` renderable."""
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    head = Text("\n".join(summary_line(n) for n in _summaries(summary)), style="bold")
    for line in _alarm_lines(summary):
        head.append("\n" + line, style="bold red")
    table = Table(title=f"processes by {SORTS.get(sort, sort)}  "
                        "[u]queue [o]out [i]in [d]drain [m]memory  "
                        "[j/k]move [enter]inspect [q]quit",
                  expand=True, show_lines=False)
    for i, c in enumerate(_COLS):
        table.add_column(c, justify="left" if i in (0, 1, 8) else "right",
                         no_wrap=True, overflow="ellipsis")
    for n, r in enumerate(rows):
        style = "reverse" if n == selected else ("red" if r.get("queue", 0) and
                                                 r.get("drain_time") is None else None)
        table.add_row(*_cells(r), style=style)
    return Group(Panel(head, title="otp top"), table)


def render_inspect(info: dict[str, Any]) -> Any:
    from rich.panel import Panel
    from rich.text import Text

    if not info.get("alive"):
        return Panel(Text(f"{info.get('pid')}: not alive"), title="inspect [b]back")
    st = info.get("stats") or {}
    text = Text()
    text.append(f"{info['pid']}  {info.get('name') or ''}  {info.get('status')}\n", "bold")
    text.append(f"initial call {info.get('initial_call')}\n"
                f"current      {info.get('current_function')}\n"
                f"links        {', '.join(info.get('links') or []) or '-'}\n"
                f"queue {st.get('queue')}  enqueued {st.get('enqueued')}  "
                f"dequeued {st.get('dequeued')}  in {_num(st.get('in_now'), '{:.1f}')}/s  "
                f"out {_num(st.get('out_now'), '{:.1f}')}/s  drain "
                f"{_time(st.get('drain_time')) if st.get('queue') else '-'}\n")
    if info.get("state") is not None:
        text.append("state\n", "bold")
        text.append(str(info["state"]) + "\n")
    text.append("stack\n", "bold")
    text.append("".join(info.get("stack") or []))
    return Panel(text, title="inspect [b]back [q]quit")


@contextlib.contextmanager
def _raw_keys() -> Any:
    """Single key presses from stdin (cbreak mode, no echo) while inside."""
    if not sys.stdin.isatty():
        yield
        return
    import termios
    import tty

    fd = sys.stdin.fileno()
    old = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, old)


def _read_key(timeout: float) -> str | None:
    r, _, _ = select.select([sys.stdin], [], [], timeout)
    if not r:
        return None
    data = os.read(sys.stdin.fileno(), 16).decode(errors="replace")
    if not data:
        return "q"
    if data.startswith("\x1b[A"):
        return "k"
    if data.startswith("\x1b[B"):
        return "j"
    return data[0]


def run(fetch: Callable[[str, int], tuple[dict[str, Any], list[dict[str, Any]]]],
        inspect: Callable[[str], dict[str, Any]], *, sort: str = "queue", limit: int = 20,
        interval: float = 2.0, max_frames: int | None = None) -> None:
    """The live view until ``q`` (or ``max_frames`` refreshes)."""
    from rich.console import Console
    from rich.live import Live

    console = Console()
    selected = 0
    inspecting: str | None = None
    frames = 0
    with _raw_keys(), Live(console=console, screen=True, auto_refresh=False) as live:
        next_at = 0.0
        rows: list[dict[str, Any]] = []
        while max_frames is None or frames < max_frames:
            if time.monotonic() >= next_at:
                if inspecting is None:
                    summary, rows = fetch(sort, limit)
                    selected = min(selected, max(0, len(rows) - 1))
                    live.update(render(summary, rows, sort, selected), refresh=True)
                else:
                    live.update(render_inspect(inspect(inspecting)), refresh=True)
                frames += 1
                next_at = time.monotonic() + interval
            key = _read_key(max(0.0, min(0.2, next_at - time.monotonic())))
            if key is None:
                continue
            if key in ("q", "\x03"):
                return
            if inspecting is not None:
                if key in ("b", "\x1b"):
                    inspecting = None
                    next_at = 0.0
                continue
            if key in _KEYS:
                sort = _KEYS[key]
                selected = 0
            elif key == "j":
                selected = min(selected + 1, max(0, len(rows) - 1))
            elif key == "k":
                selected = max(selected - 1, 0)
            elif key in ("\r", "\n") and rows and rows[selected].get("node") is None:
                inspecting = rows[selected]["pid"]
            next_at = 0.0
