"""What a node's processes are doing, for operators: a ``top`` of processes.

Erlang's ``observer`` and ``etop`` show each process's message-queue length, memory,
reductions and current function. ``top`` does the same for this node::

    import otp
    from otp import gen_server, observer
    from otp.gen_server import GenServer

    def main():
        pid = gen_server.start_link(GenServer, 0, name="idle")
        rows = observer.top(sort="queue", limit=5)
        row = next(r for r in rows if r.pid == pid)
        assert row.name == "idle" and row.behaviour == "otp.gen_server.GenServer"
        assert row.current_function == "otp.gen_server._loop"   # waiting for a message
        print(observer.format_top(rows))
        gen_server.stop(pid)

    otp.run(main)

Each ``TopRow`` has the process's pid, registered name, message-queue length, memory
(an estimate: its mailbox and the locals of its stack), messages handled (behaviour
processes, once counting is on: see below), scheduling status, the function it is
executing (``process_info(pid).current_function``), the callback class it runs (for a
behaviour process, from the code server's registry) and its initial call.

Sorting: ``"queue"`` (the default: a process falling behind shows first), ``"memory"``
or ``"messages"``. Messages are counted by ``otp.sys.statistics``: sorting by
``"messages"`` turns counting on in every behaviour process that does not count yet
(counting stays on: the next ``top`` shows the messages handled in between). Other
sorts read the counts of the rows shown, where counting is on.

Failure semantics: a snapshot, not a transaction: processes that end meanwhile are
left out. A behaviour process that does not answer its statistics request within
``timeout`` (a busy or stuck one) shows no count; the requests run in parallel, so
``top`` takes at most about ``timeout`` seconds however many are stuck.

When not to use it: for monitoring over time (export metrics instead); in application
logic.
"""

from __future__ import annotations

import heapq
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from otp import code
from otp import sys as otp_sys
from otp.errors import OTPError
from otp.lowlevel import Process, current_node
from otp.process import Down, Pid, Ref, demonitor, make_ref, monitor, receive, send, spawn
from otp.process import self as _self

__all__ = ["TopRow", "format_top", "rows_for", "top"]

Sort = Literal["queue", "memory", "messages"]


@dataclass(frozen=True)
class TopRow:
    """One process in ``top``."""

    pid: Pid
    name: str | None  # registered name
    queue: int  # message-queue length
    memory: int  # bytes, an estimate (mailbox and stack locals)
    messages: int | None  # messages handled since counting began; None: not counted
    status: str  # "running" | "runnable" | "waiting" | "suspended"
    current_function: str | None  # "module.qualname"
    behaviour: str | None  # "module.Class" of a behaviour process's callbacks
    initial_call: str

    def describe(self) -> str:
        """What the process is doing, in a few words: its behaviour class, and the
        function it is in when that is not the behaviour's own loop."""
        fn, cls = self.current_function, self.behaviour
        if cls is None:
            return fn or self.initial_call
        if fn is None or fn.startswith("otp."):
            return cls
        if fn.startswith(cls + "."):
            return fn
        return f"{cls} in {fn}"

    def to_json(self) -> dict[str, Any]:
        """The row as JSON-ready values (the control socket's ``top`` answer)."""
        return {
            "pid": repr(self.pid),
            "name": self.name or "",
            "queue": self.queue,
            "memory": self.memory,
            "messages": self.messages,
            "status": self.status,
            "current_function": self.current_function,
            "behaviour": self.behaviour,
            "initial_call": self.initial_call,
            "call": self.describe(),
        }


def top(sort: Sort = "queue", limit: int = 20, *, timeout: float = 1.0) -> list[TopRow]:
    """The ``limit`` processes of this node first by ``sort``: ``"queue"``
    (message-queue length), ``"memory"`` or ``"messages"`` (handled; turns counting on
    in every behaviour process)."""
    keys: dict[str, Callable[[Process], int]] = {
        "queue": _queue_len,
        "memory": _memory_estimate,
    }
    if sort not in ("queue", "memory", "messages"):
        raise ValueError(f"top sorts by 'queue', 'memory' or 'messages', got {sort!r}")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError(f"top expects a limit >= 0, got {limit!r}")
    node = current_node()
    me = _self()
    behaviours = code.behaviour_processes()
    counts: dict[Pid, int] = {}
    if sort == "messages":
        counts = _message_counts([p for p in behaviours if p != me], timeout, start=True)
        keys["messages"] = lambda p: counts.get(p.pid, -1)
    chosen = heapq.nlargest(limit, list(node.procs.values()), key=keys[sort])
    if sort != "messages":
        counts = _message_counts(
            [p.pid for p in chosen if p.pid in behaviours and p.pid != me], timeout, start=False
        )
    rows = []
    for p in chosen:
        if p.dead:
            continue
        info = node.info(p)
        cls = behaviours.get(p.pid)
        rows.append(
            TopRow(
                pid=p.pid,
                name=info.registered_name,
                queue=info.message_queue_len,
                memory=_memory_estimate(p),
                messages=counts.get(p.pid),
                status=info.status,
                current_function=info.current_function,
                behaviour=None if cls is None else f"{cls.__module__}.{cls.__qualname__}",
                initial_call=info.initial_call,
            )
        )
    # The rows show values read after the choice (the processes ran meanwhile: the
    # message counts are calls): order them by what they show.
    shown = {"queue": lambda r: r.queue, "memory": lambda r: r.memory,
             "messages": lambda r: -1 if r.messages is None else r.messages}[sort]
    rows.sort(key=shown, reverse=True)
    return rows


def rows_for(pids: Iterable[Pid]) -> list[TopRow]:
    """``TopRow``s of the given processes, in that order (the ones alive), with
    ``messages`` the messages taken out of their mailboxes (the kernel's counters, see
    ``otp.stats``), not ``otp.sys.statistics``' count."""
    node = current_node()
    behaviours = code.behaviour_processes()
    rows = []
    for pid in pids:
        p = node.lookup(pid)
        if p is None or p.dead:
            continue
        info = node.info(p)
        cls = behaviours.get(p.pid)
        rows.append(TopRow(
            pid=p.pid,
            name=info.registered_name,
            queue=info.message_queue_len,
            memory=_memory_estimate(p),
            messages=p.nin - info.message_queue_len,
            status=info.status,
            current_function=info.current_function,
            behaviour=None if cls is None else f"{cls.__module__}.{cls.__qualname__}",
            initial_call=info.initial_call,
        ))
    return rows


def format_top(rows: Iterable[TopRow | Mapping[str, Any]]) -> str:
    """Rows (``TopRow``s, or their ``to_json()``) as the table ``bin/<name> top``
    prints: PID, NAME, MSGQ, MEMORY, MSGS, STATUS, CURRENT."""
    lines = [
        f"{'PID':>12} {'NAME':<24} {'MSGQ':>7} {'MEMORY':>9} {'MSGS':>8} {'STATUS':<9} CURRENT"
    ]
    for row in rows:
        r = row.to_json() if isinstance(row, TopRow) else row
        msgs = "-" if r.get("messages") is None else str(r["messages"])
        lines.append(
            f"{r['pid']:>12} {(r['name'] or '')[:24]:<24} {r['queue']:>7} "
            f"{r['memory']:>9} {msgs:>8} {r['status']:<9} {str(r['call'])[:70]}"
        )
    return "\n".join(lines)


# --- helpers ---------------------------------------------------------------------------------


def _queue_len(p: Process) -> int:
    return len(p.mbox) if p.mbox else 0


def _memory_estimate(p: Process) -> int:
    size = 0
    mbox = p.mbox
    if mbox:
        size += sys.getsizeof(mbox)
        for n, m in enumerate(mbox):
            if n >= 1000:  # extrapolate from the first thousand messages
                size += size // (n or 1) * (len(mbox) - n)
                break
            size += sys.getsizeof(m)
    frame = p.gr_frame
    depth = 0
    while frame is not None and depth < 50:
        size += sum(sys.getsizeof(v) for v in frame.f_locals.values())
        frame = frame.f_back
        depth += 1
    return size


def _message_counts(pids: list[Pid], timeout: float, *, start: bool) -> dict[Pid, int]:
    """The messages each behaviour process has handled (``start``: turn counting on
    where it is off). One helper process per pid, so stuck ones cost one ``timeout``
    in all; a count that does not come in time is left out. A collector process
    gathers them, so a count arriving late goes to it (gone by then), never to the
    caller's mailbox."""
    if not pids:
        return {}
    me = _self()
    ref = make_ref()
    collector = spawn(_collect, me, ref, tuple(pids), timeout, start)
    mon = monitor(collector)
    got = receive(
        lambda m: (m.__class__ is tuple and len(m) == 2 and m[0] == ref)
        or (m.__class__ is Down and m.ref == mon)
    )
    demonitor(mon, flush=True)
    if got.__class__ is Down:
        return {}
    return dict(got[1])


def _collect(to: Pid, ref: Ref, pids: tuple[Pid, ...], timeout: float, start: bool) -> None:
    me = _self()
    for pid in pids:
        spawn(_count_one, me, pid, timeout, start)
    counts = []
    deadline = current_node().clock.now() + timeout
    for _ in pids:
        got = receive(
            lambda m: m.__class__ is _Count,
            max(deadline - current_node().clock.now(), 0.0),
            default=None,
        )
        if got is None:
            break
        if got.messages is not None:
            counts.append((got.pid, got.messages))
    send(to, (ref, tuple(counts)))


@dataclass(frozen=True)
class _Count:
    """A helper's answer to its collector: ``pid`` has handled ``messages``."""

    pid: Pid
    messages: int | None


def _count_one(to: Pid, pid: Pid, timeout: float, start: bool) -> None:
    n: int | None = None
    try:
        stats = otp_sys.statistics(pid, timeout=timeout)
        if stats is None and start:
            otp_sys.statistics(pid, True, timeout=timeout)
            stats = otp_sys.statistics(pid, timeout=timeout)
        if stats is not None:
            n = stats.messages_in
    except OTPError:  # gone, or too busy to answer: no count
        pass
    send(to, _Count(pid, n))
