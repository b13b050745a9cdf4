"""Processes that behave like OTP's: synchronous start, ancestry, and crash reports.

``otp.process.spawn`` starts a bare process. ``proc_lib`` starts one that also

- records its *initial call* and its *ancestors* (the process that started it, that
  one's starter, and so on), readable with ``initial_call(pid)`` and ``ancestors()``;
- can be started *synchronously*: ``start_link`` returns only once the new process has
  called ``init_ack(value)``, and returns that value;
- logs one crash report when it ends abnormally.

Every behaviour (``gen_server``, ``supervisor``) starts its processes through here.

Example::

    import otp
    from otp import proc_lib
    from otp.process import receive

    def worker(greeting):
        proc_lib.init_ack(("ready", greeting))   # start_link returns this
        receive()                                # ... then serve until told to stop

    def main():
        value = proc_lib.start_link(worker, "hi")
        assert value == ("ready", "hi")
        ...

Failure semantics:

- **Start.** If the new process ends before ``init_ack``, ``start``/``start_link``
  raise ``StartError(reason)`` with its exit reason (``init_fail(reason)`` chooses the
  reason explicitly). If ``timeout`` seconds (node clock) pass first, the starter
  unlinks and kills it, drops its EXIT, and raises ``StartError("timeout")``.
  Python adaptation: a process that fails before acknowledging unlinks from its
  starter first, so a starter that does not trap exits gets the ``StartError`` instead
  of being killed by the link (in Erlang it would die with the child's reason). A
  linked starter that traps exits (a supervisor) keeps the link and waits on its
  ``EXIT`` rather than a monitor; either way no stray ``Exit`` or ``Down`` is left.
- **Crash reports.** A process that ends with a reason other than ``"normal"``,
  ``"shutdown"`` or ``("shutdown", term)`` -- an exception, or ``exit(reason)`` --
  logs one ERROR record to the ``otp.report`` logger, with
  ``extra={"report": {"label": "crash_report", "pid", "name", "initial_call",
  "ancestors", "reason", "stack"}}`` and a readable message. A process killed by an
  exit signal logs nothing (it did not crash: something ended it).

Ancestors are pids (Erlang shows a registered name where there is one).

When not to use it: for a fire-and-forget helper whose crash is expected and handled
by a monitor, a bare ``otp.process.spawn`` is enough.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from typing import Any

from otp.errors import BadArg, ProcessExit, StartError
from otp.lowlevel import Process, ProcessVar, getcurrent
from otp.process import (
    Down,
    Exit,
    Pid,
    demonitor,
    is_alive,
    process_info,
    receive,
    send,
    unlink,
)
from otp.process import exit as _exit
from otp.process import self as _self
from otp.process import spawn as _spawn
from otp.process import spawn_link as _spawn_link

__all__ = [
    "ancestors",
    "init_ack",
    "init_fail",
    "initial_call",
    "is_clean_exit",
    "spawn",
    "spawn_link",
    "start",
    "start_link",
]

report_log = logging.getLogger("otp.report")

_TIMEOUT: Any = object()


class _Meta:
    """What proc_lib knows about one of its processes (Erlang keeps it in the process
    dictionary)."""

    __slots__ = ("acked", "ancestors", "initial_call", "pid", "starter", "starter_traps")

    def __init__(self, initial_call: str, ancestors: tuple[Pid, ...], starter: Pid | None,
                 starter_traps: bool = False):
        self.initial_call = initial_call
        self.ancestors = ancestors
        self.starter = starter  # waiting in start/start_link for init_ack, or None
        # A linked starter that traps exits learns of an early end from the link's EXIT.
        self.starter_traps = starter_traps
        self.acked = False
        self.pid: Pid | None = None  # set by the process itself when it starts


# What proc_lib knows about each of its processes, kept in the process's own dictionary
# (as Erlang keeps '$ancestors' and '$initial_call'): gone when the process ends.
_META: ProcessVar[_Meta | None] = ProcessVar("proc_lib.meta", default=None)


def _meta_of(pid: Pid) -> _Meta | None:
    try:
        return _META.get(pid)
    except BadArg:  # not a local pid
        return None


class ReportedExit(ProcessExit):
    """Ends a proc_lib process whose end was already reported (by a behaviour's own
    report): proc_lib logs no second crash report for it."""


def is_clean_exit(reason: Any) -> bool:
    """True for the reasons that are not errors: ``normal``, ``shutdown``,
    ``("shutdown", term)``."""
    if reason.__class__ is str:
        return reason == "normal" or reason == "shutdown"
    return (
        reason.__class__ is tuple and len(reason) == 2 and reason[0] == "shutdown"
    )


def describe(fn: Any) -> str:
    mod = getattr(fn, "__module__", None) or "?"
    name = getattr(fn, "__qualname__", None) or repr(fn)
    return f"{mod}.{name}"


def _run(fn: Callable[..., Any], args: tuple[Any, ...], meta: _Meta) -> None:
    p = getcurrent()  # this process's kernel record (the kernel runs _run in it)
    me = meta.pid = p.pid
    _META.set(meta)
    try:
        fn(*args)
    except ReportedExit:
        _failed_start(me, meta)
        raise
    except ProcessExit as e:
        if not p.dead:  # it called exit(reason); otherwise a signal ended it
            _failed_start(me, meta)
            if not is_clean_exit(e.reason):
                crash_report(me, meta, e.reason, e)
        raise
    except BaseException as e:
        _failed_start(me, meta)
        crash_report(me, meta, e, e)
        # Exit with the exception as reason; ProcessExit keeps the kernel from logging
        # a second report of its own.
        raise ReportedExit(e) from None
    if meta.starter is not None and not meta.acked:
        _failed_start(me, meta)


def _failed_start(me: Pid, meta: _Meta) -> None:
    # Ending before init_ack: unlink from the starter so that it gets a StartError from
    # its monitor instead of being killed by the link (see the module docstring). A
    # starter that traps exits keeps the link: its EXIT is what it waits for.
    if meta.starter is not None and not meta.acked:
        meta.acked = True
        if not meta.starter_traps and is_alive(me):
            unlink(meta.starter)


def crash_report(pid: Pid, meta: _Meta | None, reason: Any, exc: BaseException | None) -> None:
    """Log the crash report of ``pid`` ending with ``reason``."""
    stack = ""
    if isinstance(exc, BaseException) and exc.__traceback__ is not None:
        stack = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    elif isinstance(reason, BaseException) and reason.__traceback__ is not None:
        stack = "".join(traceback.format_exception(type(reason), reason, reason.__traceback__))
    info = process_info(pid) if is_alive(pid) else None
    name = info.registered_name if info is not None else None
    initial = meta.initial_call if meta is not None else "?"
    ancestry = meta.ancestors if meta is not None else ()
    report = {
        "label": "crash_report",
        "pid": pid,
        "name": name,
        "initial_call": initial,
        "ancestors": ancestry,
        "reason": reason,
        "stack": stack,
    }
    who = f"{pid!r}" + (f" ({name})" if name else "")
    report_log.error(
        "crash report: process %s (initial call %s, ancestors %r) exited with reason: %r%s",
        who,
        initial,
        list(ancestry),
        reason,
        ("\n" + stack.rstrip()) if stack else "",
        extra={"report": report},
    )


def _new_meta(fn: Any, initial: str | None, starter: Pid | None) -> _Meta:
    if not callable(fn):
        raise BadArg(f"proc_lib expects a callable, got {fn!r} of type {type(fn).__name__}")
    me = _self()
    mine = _meta_of(me)
    lineage = (me, *mine.ancestors) if mine is not None else (me,)
    return _Meta(initial or describe(fn), lineage, starter)


def spawn(fn: Callable[..., Any], *args: Any) -> Pid:
    """Start ``fn(*args)`` as a proc_lib process (ancestors, initial call, crash report)."""
    return _spawn(_run, fn, args, _new_meta(fn, None, None))


def spawn_link(fn: Callable[..., Any], *args: Any) -> Pid:
    """Like ``spawn``, linked to the caller (atomically)."""
    return spawn_link_as(fn, args, None)


def spawn_link_as(fn: Callable[..., Any], args: tuple[Any, ...], initial: str | None) -> Pid:
    return _spawn_link(_run, fn, args, _new_meta(fn, initial, None))


def start(fn: Callable[..., Any], *args: Any, timeout: float | None = None) -> Any:
    """Start ``fn(*args)`` and wait until it calls ``init_ack(value)``; return value.

    Raises ``StartError(reason)`` if it ends first, ``StartError("timeout")`` (after
    killing it) if ``timeout`` seconds pass first.
    """
    return start_as(fn, args, link=False, timeout=timeout)


def start_link(fn: Callable[..., Any], *args: Any, timeout: float | None = None) -> Any:
    """Like ``start``, with the new process linked to the caller."""
    return start_as(fn, args, link=True, timeout=timeout)


def start_as(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    *,
    link: bool,
    timeout: float | None,
    initial: str | None = None,
) -> Any:
    """``start``/``start_link`` with an explicit initial call to record (behaviours
    record their callback class, not their private loop function)."""
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout < 0
    ):
        raise BadArg(f"start timeout must be seconds >= 0 or None, got {timeout!r}")
    # The kernel's calls straight from the caller's process record: a behaviour's child
    # starts (a supervisor's restarts) come through here.
    p = getcurrent()
    if p.__class__ is not Process:
        _self()  # NotInProcess
    if p.dead:
        p.node.zombie(p)  # killed, and went on running: ends it, as any call would
    if not callable(fn):
        raise BadArg(f"proc_lib expects a callable, got {fn!r} of type {type(fn).__name__}")
    me: Pid = p.pid
    mine = _META.get()
    lineage = (me, *mine.ancestors) if mine is not None and mine.pid is me else (me,)
    node = p.node
    # A linked starter that traps exits (a supervisor) learns from the link's EXIT that
    # the child ended before init_ack, with the reason a monitor's Down would carry: no
    # monitor to set and take off around each start (OTP's proc_lib once waited so).
    traps = link and p.trap_exit
    meta = _Meta(initial or describe(fn), lineage, me, traps)
    pid = node.spawn(_run, (fn, args, meta), link=p if link else None).pid
    ref = None if traps else node.monitor(p, pid)  # with the spawn: no Down is missed
    ended = Exit if traps else Down

    def match(m: Any) -> bool:
        c = m.__class__
        if c is tuple:
            return len(m) == 4 and m[0] == "$ack" and (m[1] is pid or m[1] == pid)
        if c is ended:
            return m.pid is pid or m.pid == pid if traps else m.ref is ref or m.ref == ref
        return False

    msg = node.receive(p, match, timeout, _TIMEOUT)
    if msg is _TIMEOUT:
        if link:
            unlink(pid)
        _exit(pid, "kill")
        if ref is not None:
            demonitor(ref, flush=True)
        _drop_exit(pid)  # it may have ended before the unlink
        raise StartError("timeout", f"{describe(fn)} did not call init_ack within {timeout} s")
    if msg.__class__ is ended:
        if ref is not None:
            _drop_exit(pid)  # killed while linked: its EXIT came before the Down
        raise StartError(msg.reason, f"{describe(fn)} ended before init_ack: {msg.reason!r}")
    if ref is not None:
        node.demonitor(p, ref, True)
    if msg[2]:
        return msg[3]
    _drop_exit(pid)
    raise StartError(msg[3], f"{describe(fn)} failed to start: {msg[3]!r}")


def _drop_exit(pid: Pid) -> None:
    receive(lambda m: m.__class__ is Exit and m.pid == pid, 0, default=None)


def _my_meta(what: str) -> tuple[Pid, _Meta]:
    p = getcurrent()
    if p.__class__ is Process:
        me = p.pid
        meta = _META.get()
        if meta is not None and meta.starter is not None and meta.pid is me:
            return me, meta
    me = _self()
    meta = _meta_of(me)
    if meta is None or meta.starter is None:
        raise BadArg(
            f"{what} must be called by a process started with proc_lib.start or "
            f"start_link; {me!r} was not"
        )
    return me, meta


def init_ack(value: Any) -> None:
    """Tell the starter that this process is ready: its ``start``/``start_link``
    returns ``value``."""
    p = getcurrent()
    me = p.pid if p.__class__ is Process else None
    meta = _META.get() if me is not None else None
    if meta is None or meta.starter is None or meta.pid is not me:
        me, meta = _my_meta("init_ack")  # the errors, and a pid that is equal, not same
    if meta.acked:
        return
    meta.acked = True
    assert meta.starter is not None
    send(meta.starter, ("$ack", me, True, value))


def init_fail(reason: Any, exit_reason: Any = "normal") -> None:
    """Fail the start: the starter's ``start``/``start_link`` raises
    ``StartError(reason)``; this process then exits with ``exit_reason`` (an abnormal
    one is crash-reported)."""
    me, meta = _my_meta("init_fail")
    if not meta.acked:
        meta.acked = True
        assert meta.starter is not None
        unlink(meta.starter)
        send(meta.starter, ("$ack", me, False, reason))
    _exit(exit_reason)


def initial_call(pid: Pid) -> str | None:
    """The initial call recorded for a live proc_lib process (``"module.function"``, or
    ``"module.Class.init"`` for a behaviour), or None."""
    meta = _meta_of(pid)
    return meta.initial_call if meta is not None else None


def ancestors() -> tuple[Pid, ...]:
    """The caller's ancestors, nearest first (empty if not a proc_lib process)."""
    meta = _meta_of(_self())
    return meta.ancestors if meta is not None else ()


def meta_of(pid: Pid) -> _Meta | None:
    return _meta_of(pid)
