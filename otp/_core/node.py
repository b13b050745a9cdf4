"""The kernel: the node runtime, the process table, mailboxes, signals and timers.

Design principles (kept small on purpose, the curio rule: features live outside):

1. **A node is one gevent hub.** A process is a raw ``greenlet`` whose parent is the hub.
   Processes blocked in ``receive`` are woken through the node's own run queue (a
   ``deque``), drained by one hub callback; gevent is used only for I/O and timers.
   A process that blocks hands the CPU directly to the next runnable process (one
   greenlet switch per message instead of two), for at most ``HUB_TURN`` (2 ms) of
   real time, after which it yields to the hub so that I/O (sockets, thread-pool
   completions, timers) is never starved.
2. **Only the hub switches into a process, or a process hands off to the next one.**
   Whoever switches into a process resumes when it switches back to the hub, so the
   drain loop, the I/O callbacks and the timers all compose.
3. **The runtime never trusts a greenlet to cooperate.** Death is decided by the
   runtime: it marks the process dead, frees its name, cancels its timers and sends
   its link and monitor signals at once; *then* it throws ``ProcessExit`` into the
   greenlet so that ``finally`` blocks run. From then on nothing the greenlet does has
   an effect (docs/semantics.md P17): a send from it is dropped, a call that would
   create or wait for something raises the exit again; so a greenlet that swallows
   its exit (a zombie) can do no harm either.
4. **Ordering.** Delivery into a local mailbox is synchronous, so between one sender
   and one receiver messages and signals arrive in the order sent, and a message sent
   before a process dies is in the mailbox before that process's ``Down``/``EXIT``.
5. **Time** comes only from the node's clock (real or mock). Timers live in one heap
   with lazy cancellation; the clock decides when the earliest deadline fires, and
   what an idle node means for time (the kernel never asks which clock it has).
6. **The hot path pays for nothing optional.** The fairness report watches the hub from
   an OS thread (``fairness.py``); ``halt`` and the zombie checks live on the cold paths
   (process end, ``link``/``monitor``/``spawn_link``, ``receive`` entry); ``send``
   looks at whether its caller is dead only while some dead process's greenlet is
   still unwinding (``Node.unwinding``, almost always 0).
7. **Aliases** (OTP 24) carry every reply: a call's reply alias lives in the caller's
   slot (``request_reply``), so no ordinary message can answer a call and a late
   reply is dropped here, at the sender (docs/semantics.md G10, P18).
"""

from __future__ import annotations

import functools
import heapq
import itertools
import logging
import sys
import time
import traceback
import types
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import gevent
import greenlet
from gevent.event import AsyncResult

from otp._core import dist as _dist
from otp._core import values as _values
from otp._core.clock import Clock, RealClock
from otp._core.dist import DistHook, Remote
from otp._core.fairness import BlockingMonitor
from otp._core.values import (
    Down,
    Exit,
    Pid,
    Ref,
    TimerTimeout,
    check_immutable,
    compile_pattern,
)
from otp.errors import (
    AlreadyRegistered,
    BadArg,
    NameTaken,
    NodeError,
    NodeHalted,
    NoProc,
    ProcessExit,
    ReceiveTimeout,
)

log = logging.getLogger("otp.process")

#: The node running in this OS process (one at a time), or None.
CURRENT: Node | None = None


class _Running:
    """Where the running node is, for code outside the kernel: ``RUNNING.node`` is the
    node running in this OS process, or None. A hot path reads it without a call (an
    attribute read, as cheap as a module global); elsewhere use ``current_node()``."""

    __slots__ = ("node", "send_node")

    def __init__(self) -> None:
        self.node: Node | None = None
        # ``node`` while no dead process's greenlet is running (``Node.unwinding == 0``),
        # else None: ``otp.process.send`` reads this one, so that its hot path pays
        # nothing for the dead-process check (P17); None sends it down its slow path.
        self.send_node: Node | None = None

    def __repr__(self) -> str:
        return f"<running node: {self.node.name if self.node else None}>"


RUNNING = _Running()

getcurrent = greenlet.getcurrent
_MISSING: Any = object()
# Receive deadlines get a timer of their own only once they are nearer than this: a
# call is almost always answered long before its deadline, and arming (then cancelling)
# a timer for each would cost more than the rest of the call. Further deadlines are
# kept in one list, which a single sweep timer looks at again when the earliest of
# them comes within the horizon (at the latest LAZY_HORIZON - LAZY_SCAN before it).
LAZY_HORIZON = 0.5
LAZY_SCAN = 0.1
_SWEEP: Any = object()  # the dest of the sweep timer (see Node._arm_lazy)
#: What ``Node.request_reply`` returns as the reason when the deadline passed.
REQUEST_TIMEOUT: Any = object()
# In ``p.call_tag`` once the monitor's Down took the slot alias (the Down's reason is in
# ``p.call_value``); see request_reply.
_SLOT_DOWN: Any = object()
#: An alias mode bit: the alias's first message deactivates it (``alias(reply=True)``).
_ALIAS_REPLY = 1
_INF = float("inf")

# Processes run back to back (direct hand-offs) for at most HUB_TURN seconds of real
# time before the hub gets a turn for I/O, timers and thread-pool completions; the time
# is looked at every SWITCH_BUDGET switches. (A count alone would let a node whose
# processes do real work between switches starve its sockets for tens of ms.)
SWITCH_BUDGET = 16
HUB_TURN = 0.002
_wallclock = time.perf_counter


def current_node() -> Node:
    node = CURRENT
    if node is None:
        raise NodeError(
            "no node is running: start one with otp.run(main) "
            "(or `with otp.lowlevel.Node() as node:`)"
        )
    return node


class _JoinTimeout(TimeoutError):
    """``Node.join`` gave up waiting (told apart from a TimeoutError the process raised)."""


class Process(greenlet.greenlet):
    """The kernel's record of a process: a greenlet plus its mailbox and signal state.

    Users never see this object, only its ``Pid``.
    """

    __slots__ = (
        "aliases",
        "args",
        "call_tag",
        "call_value",
        "dead",
        "deadline",
        "exc",
        "fn",
        "lazy",
        "links",
        "log_crash",
        "mbox",
        "monitors",
        "name",
        "nin",
        "node",
        "pdict",
        "pid",
        "qs",
        "queued",
        "reason",
        "suspended",
        "timers",
        "tmo",
        "trap_exit",
        "waiting",
        "watching",
    )

    pid: Pid
    node: Node
    mbox: deque[Any] | None
    links: set[Process] | None
    monitors: dict[Any, Process] | None  # monitors on me: ref (or call tag) -> watcher
    watching: dict[Any, Process] | None  # monitors I hold: ref (or call tag) -> target
    name: str | None
    trap_exit: bool
    waiting: bool  # blocked in receive: a delivery wakes it
    queued: bool  # in the run queue
    dead: bool  # marked dead by the runtime
    exc: BaseException | None  # to throw into the greenlet when next scheduled
    # send_after timers aimed at this process: None, the one timer (most processes
    # have at most one: a set costs 216 bytes), or a set of them
    timers: _Timer | set[_Timer] | None
    tmo: _Timer | None  # the pending receive timeout
    deadline: float | None  # the receive deadline; its timer is armed lazily
    lazy: int  # 0, or where its deadline is listed: 1 to arm lazily, 2 kept for the sweep
    # the active aliases: id -> mode (_ALIAS_REPLY or 0); None when there are none
    aliases: dict[int, int] | None
    # the slot alias: the id of the request this process waits on in request_reply
    # (None when none; _SLOT_DOWN once the request's Down took it)
    call_tag: Any
    call_value: Any  # the slot alias's one message (or the Down's reason)
    reason: Any
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    log_crash: bool
    suspended: bool
    # Messages put in the mailbox so far (the queue statistics of otp.stats): the only
    # counter the send paths pay for; dequeued = nin - len(mbox).
    nin: int
    qs: Any  # the sampler's state for this process (otp.stats), None until it looks
    # The process dictionary (otp._core.localvars.ProcessVar): left unset by spawn (no
    # cost), read with getattr(p, "pdict", None); a (var, value) pair while the process
    # has one variable, a dict from the second on.
    pdict: tuple[Any, Any] | dict[Any, Any] | None

    def run(self) -> None:
        if self.dead:
            return
        # From the moment the runtime declares this process dead until this method
        # returns, it is counted in ``node.unwinding`` (see Node.exit_process).
        try:
            self.fn(*self.args)
            reason: Any = "normal"
        except ProcessExit as e:
            reason = e.reason
        except BaseException as e:  # any exception ends the process
            reason = e
            if not self.dead and self.log_crash:
                log.error(
                    "Error in process %r with exit value: %r",
                    self.pid,
                    e,
                    exc_info=(type(e), e, e.__traceback__),
                )
        if not self.dead:
            self.node.exit_process(self, reason)
        elif reason is not self.reason:
            # Already dead (signals sent with the runtime's reason), yet the function
            # ended some other way: it swallowed its ProcessExit. Say so.
            log.warning(
                "process %r swallowed its exit signal (%r) and ended with %r instead "
                "(a bare `except:`?); it was reported dead with the signal's reason",
                self.pid,
                self.reason,
                reason,
            )
        node = self.node
        node.unwinding -= 1
        if node.unwinding == 0:
            node._set_send_node()
        node.hand_off_at_end(self)


class _Timer:
    __slots__ = ("cancelled", "deadline", "dest", "fired", "msg", "proc", "ref")

    def __init__(self, deadline: float, proc: Process | None, dest: Any, msg: Any) -> None:
        self.deadline = deadline
        self.proc = proc  # receive timeout: the waiting process
        self.dest = dest  # send_after: a Process or a registered name
        self.msg = msg
        self.cancelled = False
        self.fired = False
        self.ref: Ref | None = None


def _untrack(p: Process, t: _Timer) -> None:
    """Take timer ``t`` off ``p.timers`` (it fired or was cancelled)."""
    ts = p.timers
    if ts is t:
        p.timers = None
    elif ts is not None and ts.__class__ is not _Timer:
        ts.discard(t)  # type: ignore[union-attr]


@dataclass(frozen=True)
class ProcessInfo:
    """A snapshot of a process, from ``process_info``."""

    pid: Pid
    status: str  # "running" | "runnable" | "waiting" | "suspended"
    message_queue_len: int
    links: tuple[Pid, ...]
    monitors: tuple[tuple[Ref, Pid], ...]  # monitors this process holds
    monitored_by: tuple[Pid, ...]
    registered_name: str | None
    trap_exit: bool
    initial_call: str
    current_stacktrace: tuple[str, ...]
    # "module.qualname" of the function the process is executing, outside the runtime
    # (the kernel and otp.process): a process blocked in receive() shows the function
    # that called it, a gen_server waiting for a message "otp.gen_server._loop".
    # None before the process has started.
    current_function: str | None = None


# Modules whose frames current_function looks through: the runtime, not the process.
_RUNTIME_MODULES = ("otp._core.", "otp.process", "gevent.", "greenlet")


def _current_function(frame: types.FrameType | None) -> str | None:
    while frame is not None:
        module = frame.f_globals.get("__name__", "?")
        if not module.startswith(_RUNTIME_MODULES):
            code = frame.f_code
            # co_qualname is 3.11+; on 3.10 the bare name
            return f"{module}.{getattr(code, 'co_qualname', code.co_name)}"
        frame = frame.f_back
    return None


def other_greenlet_stacks() -> list[tuple[str, tuple[str, ...]]]:
    """``(repr, stack)`` of every suspended greenlet that is not a process (servers,
    gevent pool workers...), for the test kit's watchdog dump. Slow (walks the heap)."""
    import gc

    out = []
    for g in gc.get_objects():
        if (
            isinstance(g, greenlet.greenlet)
            and not isinstance(g, Process | gevent.hub.Hub)
            and g.gr_frame is not None
            and g is not getcurrent()
        ):
            out.append((repr(g), tuple(traceback.format_stack(g.gr_frame))))
    return out


def _describe(fn: Any) -> str:
    while isinstance(fn, functools.partial):
        fn = fn.func
    described = getattr(fn, "_otp_initial_call", None)
    if described is not None:
        return described
    mod = getattr(fn, "__module__", None) or "?"
    name = getattr(fn, "__qualname__", None) or repr(fn)
    return f"{mod}.{name}"


class Node:
    """One node: a process table, a name registry, timers and a clock on one gevent hub.

    Use ``with Node() as node: node.run(main)`` or ``otp.run(main)``. Only one node runs
    in an OS process at a time; tests create a fresh one each.
    """

    def __init__(
        self,
        name: str = "nonode@nohost",
        *,
        clock: Clock | None = None,
        strict: bool = False,
        creation: int = 0,
        max_blocking_time: float | None = None,
    ) -> None:
        if not isinstance(name, str) or "@" not in name:
            raise BadArg(f"Node name must look like 'name@host', got {name!r}")
        self.name = name
        self.creation = creation
        self.clock: Clock = clock if clock is not None else RealClock()
        self.strict = strict
        self.procs: dict[int, Process] = {}
        self.names: dict[str, Process] = {}
        self.runq: deque[Process] = deque()
        self.hub: Any = None
        self.running = False
        self._next_id = itertools.count(1).__next__
        self._next_ref = itertools.count(1).__next__
        self._drain_scheduled = False
        self._resume: Any = None  # the zero timer that brings the drain back (see _drain)
        #: Seconds the hub keeps polling after the run queue empties before it sleeps
        #: (0: sleep at once). See _start_spin; otp.dist.start sets it.
        self.busy_wait = 0.0
        self._spin: Any = None
        self._spin_until = 0.0
        self._budget = 0
        self._turn_ends = 0.0
        self._timers: list[tuple[float, int, _Timer]] = []
        self._timer_seq = itertools.count().__next__
        self._ncancelled = 0
        # Processes that entered a receive with a deadline whose timer is not armed yet.
        # A call usually gets its reply before its caller ever waits on the hub (direct
        # hand-off), so the timer is only armed when control really goes back to the
        # hub: in block(), at the end of a drain, or before timers fire.
        self._lazy: list[Process] = []
        self._lazy_scan_at = 0.0
        # Waiting processes whose deadline is further than LAZY_HORIZON (p.lazy == 2),
        # and the timer that sweeps them (due at _sweep_at).
        self._kept: dict[Process, None] = {}
        self._sweep: _Timer | None = None
        self._sweep_at = _INF
        # How many processes are declared dead while their greenlet still runs (a
        # ``finally`` unwinding, a swallowed exit): while it is 0, the effects (send...)
        # need not look at whether their caller is dead (P17).
        self.unwinding = 0
        # ref.id -> timer (an int key: no Python-level __hash__ per insert and pop;
        # cancel_timer/read_timer check the ref's node)
        self._timer_refs: dict[int, _Timer] = {}
        self._dying: deque[tuple[Process, Any]] = deque()
        self._exiting = False
        # Resources a process owns outside the kernel (an active socket, see otp.net):
        # process -> callbacks run when it ends. Empty for almost every process.
        self._on_exit: dict[Process, list[Callable[[], Any]]] = {}
        self._idle: Any = None
        self._blocked_waiters: list[Any] = []
        self._hub_switch: Callable[[], Any] = lambda: None
        if max_blocking_time is not None and (
            not isinstance(max_blocking_time, int | float) or max_blocking_time <= 0
        ):
            raise BadArg(
                f"max_blocking_time expects seconds > 0 or None, got {max_blocking_time!r}"
            )
        self.max_blocking_time = max_blocking_time
        self._fairness: BlockingMonitor | None = None
        self._mains: list[AsyncResult] = []  # results that Node.run/join wait on
        self.halted: tuple[Any] | None = None  # (reason,) once halt() was called
        # Distribution (otp._core.dist): the hook otp.dist sets (None: not distributed)
        # and the bookkeeping of links and monitors that cross nodes (made on first use).
        # Only the slow paths look at them: a signal whose target is not local.
        self.dist: DistHook | None = None
        self.remote: Remote | None = None
        # The queue counters of the processes that ended (otp.stats): messages put in
        # their mailboxes, and taken out of them, over their lives.
        self.ended_in = 0
        self.ended_out = 0
        # NodeVar values (otp._core.localvars): var -> value; every node starts empty.
        self.localvars: dict[Any, Any] = {}

    # --- lifecycle --------------------------------------------------------------------

    def start(self) -> Node:
        global CURRENT
        if self.running:
            raise NodeError(f"node {self.name} is already running")
        if CURRENT is not None:
            raise NodeError(
                f"node {CURRENT.name} is already running in this OS process; "
                "stop it before starting another"
            )
        self.hub = gevent.get_hub()
        self._hub_switch = types.MethodType(greenlet.greenlet.switch, self.hub)
        self.clock.attach(self)
        CURRENT = RUNNING.node = self
        self._set_send_node()
        if self.max_blocking_time is not None:
            self._fairness = BlockingMonitor(
                self.hub.loop, self.max_blocking_time, Process.run.__code__
            )
        _values.local_node_name = self.name
        self.running = True
        return self

    def stop(self) -> None:
        """Kill every process (reason ``killed``), cancel every timer, release the hub."""
        global CURRENT
        if not self.running:
            return
        if isinstance(getcurrent(), Process):
            raise NodeError("Node.stop() must be called from outside the node's processes")
        for p in list(self.procs.values()):
            self.exit_process(p, "killed")
        # Let the killed greenlets unwind (their finally blocks run) before we leave.
        for _ in range(100):
            if not (self.runq or self._drain_scheduled):
                break
            gevent.sleep(0)
        self.runq.clear()
        self._lazy.clear()
        self._kept.clear()
        self._sweep = None
        self._sweep_at = _INF
        self._timers.clear()
        self._timer_refs.clear()
        self._blocked_waiters.clear()
        if self._idle is not None:
            self._idle.stop()
            self._idle.close()
            self._idle = None
        if self._resume is not None:
            self._resume.stop()
            self._resume.close()
            self._resume = None
        if self._spin is not None:
            self._spin.stop()
            self._spin.close()
            self._spin = None
        self.clock.detach()
        if self._fairness is not None:
            self._fairness.stop()
            self._fairness = None
        self._mains.clear()
        self.localvars.clear()
        self._hub_switch = lambda: None
        self.running = False
        CURRENT = RUNNING.node = None
        self._set_send_node()

    def _set_send_node(self) -> None:
        RUNNING.send_node = self if CURRENT is self and self.unwinding == 0 else None

    def __enter__(self) -> Node:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def run(self, fn: Callable[..., Any], *args: Any, timeout: float | None = None) -> Any:
        """Run ``fn(*args)`` as a process and wait (outside any process) for it to end.

        Returns what ``fn`` returned; re-raises what it raised. A ``timeout`` (real
        seconds) raises ``TimeoutError`` and kills the process.
        """
        result, p = self.start_main(fn, *args)
        try:
            return self.join(result, timeout)
        except _JoinTimeout:  # (not a TimeoutError that fn raised: that one is re-raised)
            self.exit_process(p, "killed")
            raise TimeoutError(f"{_describe(fn)} did not finish within {timeout} s") from None

    def join(self, result: AsyncResult, timeout: float | None = None) -> Any:
        """Wait (outside the node) for a ``start_main`` result; ``TimeoutError`` after
        ``timeout`` real seconds."""
        try:
            return result.get(timeout=timeout)
        except gevent.Timeout:
            raise _JoinTimeout(f"no result within {timeout} s") from None
        finally:
            if result.ready() and result in self._mains:
                self._mains.remove(result)

    def halt(self, reason: Any = "normal") -> None:
        """Stop every process of the node at once (they end with ``killed``).

        Whoever waits in ``Node.run``/``Node.join`` then gets ``NodeHalted(reason)``, or
        ``None`` when ``reason`` is ``"normal"``. Called from inside a process, the caller
        ends too (this call does not return). This is what a permanent application's
        failure does to the node (OTP's ``init:stop``/``erlang:halt``).
        """
        if self.halted is None:
            self.halted = (reason,)
        for result in self._mains:
            if not result.ready():
                if reason.__class__ is str and reason == "normal":
                    result.set(None)
                else:
                    result.set_exception(NodeHalted(reason))
        self._mains.clear()
        for p in list(self.procs.values()):
            self.exit_process(p, "killed")
        cur = getcurrent()
        if cur.__class__ is Process and cur.node is self:
            raise ProcessExit("killed")

    def start_main(self, fn: Callable[..., Any], *args: Any) -> tuple[AsyncResult, Process]:
        """Spawn ``fn(*args)`` as a process whose result (or exception) lands in the
        returned ``AsyncResult``, for code outside the node to wait on."""
        if not self.running:
            self.start()
        if isinstance(getcurrent(), Process):
            raise NodeError("Node.run() waits for a process: call it from outside the node")
        if self.halted is not None:
            raise NodeHalted(self.halted[0])
        result: AsyncResult = AsyncResult()
        self._mains.append(result)

        def main() -> None:
            # exc_info keeps the traceback, so a failing test points at its own line.
            try:
                value = fn(*args)
            except ProcessExit as e:
                if not result.ready():
                    result.set_exception(e, (type(e), e, e.__traceback__))
                raise
            except BaseException as e:
                if not result.ready():
                    result.set_exception(e, (type(e), e, e.__traceback__))
                raise ProcessExit(e) from None
            if not result.ready():
                result.set(value)

        main._otp_initial_call = _describe(fn)  # type: ignore[attr-defined]

        return result, self.spawn(main, (), log_crash=False)

    # --- processes --------------------------------------------------------------------

    def spawn(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        *,
        link: Process | None = None,
        log_crash: bool = True,
    ) -> Process:
        if not callable(fn):
            raise BadArg(f"spawn expects a callable, got {fn!r} of type {type(fn).__name__}")
        pid = Pid(self.name, self._next_id(), self.creation)
        p = Process(None, self.hub)
        p.pid = pid
        p.node = self
        p.fn = fn
        p.args = args
        p.mbox = None
        p.links = None
        p.monitors = None
        p.watching = None
        p.name = None
        p.trap_exit = False
        p.waiting = False
        p.dead = False
        p.exc = None
        p.timers = None
        p.tmo = None
        p.deadline = None
        p.lazy = 0
        p.call_tag = None
        p.aliases = None
        p.reason = None
        p.log_crash = log_crash
        p.suspended = False
        p.nin = 0
        p.qs = None
        self.procs[pid.id] = p
        if link is not None:
            p.links = {link}
            if link.links is None:
                link.links = {p}
            else:
                link.links.add(p)
        p.queued = True
        self.runq.append(p)
        if not self._drain_scheduled:
            self._drain_scheduled = True
            self.hub.loop.run_callback(self._drain)
        return p

    def lookup(self, pid: Pid) -> Process | None:
        p = self.procs.get(pid.id)
        if p is None or (p.pid is not pid and p.pid != pid):
            return None
        return p

    def resolve(self, dest: Any) -> Process | None:
        """A Pid or a registered name to a live process, or None."""
        if dest.__class__ is Pid:
            return self.lookup(dest)
        if isinstance(dest, str):
            return self.names.get(dest)
        raise BadArg(f"expected a Pid or a registered name (str), got {dest!r}")

    def deliver(self, p: Process, msg: Any) -> None:
        mbox = p.mbox
        if mbox is None:
            p.mbox = mbox = deque()
        mbox.append(msg)
        p.nin += 1
        if p.waiting and not p.queued:
            p.queued = True
            self.runq.append(p)
            if not self._drain_scheduled:
                self._drain_scheduled = True
                self.hub.loop.run_callback(self._drain)

    def wake(self, p: Process) -> None:
        if not p.queued:
            p.queued = True
            self.runq.append(p)
            if not self._drain_scheduled:
                self._drain_scheduled = True
                self.hub.loop.run_callback(self._drain)

    def _drain(self) -> None:
        runq = self.runq
        popleft = runq.popleft
        self._budget = SWITCH_BUDGET
        self._turn_ends = _wallclock() + HUB_TURN
        while runq:
            if self._budget <= 0 and not self._more_budget():
                # Give the hub a turn (poll I/O, run the due timers) and come back. A
                # zero timer, not run_callback: gevent runs up to 50 callbacks in a row
                # before it polls, so a drain that came back as a callback held I/O and
                # timers off for 50 turns (100+ ms) while processes kept each other busy.
                w = self._resume
                if w is None:
                    w = self._resume = self.hub.loop.timer(0.0)
                w.start(self._drain)
                if self._lazy:
                    # The hub comes straight back: arm only deadlines that are near.
                    self._arm_near()
                return
            self._budget -= 1
            p = popleft()
            p.queued = False
            exc = p.exc
            if exc is None:
                p.switch()
            else:
                p.exc = None
                if p:  # started and not finished
                    p.throw(exc)
        self._drain_scheduled = False
        if self._lazy:
            self._arm_lazy()
        if self.busy_wait > 0.0:
            self._start_spin()

    # --- busy wait: poll a while before the hub sleeps ----------------------------------

    def _start_spin(self) -> None:
        """The run queue is empty: keep the event loop polling (an idle watcher keeps
        libev from blocking in epoll) for up to ``busy_wait`` seconds, so that the next
        message from a socket is read without the OS waking a sleeping thread (which
        costs more than the round trip itself on an idle host). Erlang's schedulers
        busy-wait the same way (``+sbwt``)."""
        self._spin_until = _wallclock() + self.busy_wait
        w = self._spin
        if w is None:
            w = self._spin = self.hub.loop.idle()
        if not w.active:
            w.start(self._spinning)

    def _spinning(self) -> None:
        if self.runq or _wallclock() >= self._spin_until:
            self._spin.stop()

    def block(self, p: Process) -> None:
        """Suspend the current process ``p`` until something wakes it.

        Hands off directly to the next runnable process when there is one (and budget
        left); otherwise returns control to the hub.
        """
        runq = self.runq
        # Hand off only to a started greenlet: new greenlets are started by the drain
        # loop, at the hub's shallow stack depth (a greenlet started from deep inside
        # another keeps that depth: recursion limit and saved-stack size).
        if runq and (self._budget > 0 or self._more_budget()) and runq[0]:
            self._budget -= 1
            nxt = runq.popleft()
            nxt.queued = False
            exc = nxt.exc
            if exc is None:
                nxt.switch()
            else:
                nxt.exc = None
                nxt.throw(exc)
            if p.dead:  # killed while suspended here (see exit_process)
                raise ProcessExit(p.reason)
            return
        if self._lazy:
            if runq:
                # Runnable processes left (budget spent, or an unstarted one): the
                # drain comes straight back, so only near deadlines need timers now.
                self._arm_near()
            else:
                self._arm_lazy()
        self._hub_switch()
        if p.dead:
            raise ProcessExit(p.reason)

    def hand_off_at_end(self, p: Process) -> None:
        """``p`` is about to end (its greenlet returns to its parent): make the next
        runnable process its parent, so the CPU goes there directly instead of through
        the hub, as ``block`` does. Only a started process with nothing to throw."""
        runq = self.runq
        if runq and (self._budget > 0 or self._more_budget()):
            nxt = runq[0]
            if nxt and nxt.exc is None:
                self._budget -= 1
                runq.popleft()
                nxt.queued = False
                p.parent = nxt

    def _more_budget(self) -> bool:
        """The switch budget is spent: renew it if the hub's turn is not due yet."""
        if _wallclock() < self._turn_ends:
            self._budget = SWITCH_BUDGET
            return True
        return False

    def _arm_near(self) -> None:
        # On a busy node the drain keeps coming back without the hub going idle; look at
        # the newly listed deadlines at most every LAZY_SCAN seconds.
        now = self.clock.now()
        if now >= self._lazy_scan_at:
            self._lazy_scan_at = now + LAZY_SCAN
            self._arm_lazy()

    def _arm_lazy(self) -> None:
        """Arm the timers of the newly listed processes whose deadline is within
        LAZY_HORIZON; keep the others for the sweep."""
        lazy = self._lazy
        self._lazy = []
        self._arm_or_keep(lazy, 1)

    def _sweep_kept(self) -> None:
        """The sweep timer fired: arm the kept deadlines that came near, keep the rest
        for the next sweep."""
        self._sweep = None
        self._sweep_at = _INF
        kept = self._kept
        self._kept = {}
        self._arm_or_keep(kept, 2)

    def _arm_or_keep(self, procs: Iterable[Process], listed: int) -> None:
        """For each process of ``procs`` still listed there (``p.lazy == listed``; a
        kept one may have been listed again since, for an earlier deadline): arm its
        timer if its deadline is within LAZY_HORIZON, keep it for the sweep if further,
        forget it if it waits no more. Each process once."""
        limit = self.clock.now() + LAZY_HORIZON
        kept = self._kept
        soonest = _INF
        for p in procs:
            if p.lazy != listed:
                continue
            p.lazy = 0
            deadline = p.deadline
            if deadline is not None and p.tmo is None and p.waiting and not p.dead:
                if deadline <= limit:
                    p.tmo = self.add_timer(deadline, p, None, None)
                else:
                    p.lazy = 2
                    kept[p] = None
                    if deadline < soonest:
                        soonest = deadline
        # The sweep comes LAZY_HORIZON - LAZY_SCAN before the earliest kept deadline.
        at = soonest - (LAZY_HORIZON - LAZY_SCAN)
        if at < self._sweep_at:
            if self._sweep is not None:
                self.cancel(self._sweep)
            self._sweep_at = at
            self._sweep = self.add_timer(at, None, _SWEEP, None)

    # --- receive ----------------------------------------------------------------------

    def receive(self, p: Process, match: Any, timeout: float | None, default: Any) -> Any:
        if p.dead:
            self.zombie(p)
        if timeout is not None:
            if timeout.__class__ is not float and timeout.__class__ is not int:
                raise BadArg(f"receive timeout must be seconds (float) or None, got {timeout!r}")
            if not timeout >= 0:  # negative, or NaN
                raise BadArg(f"receive timeout must be >= 0 seconds or None, got {timeout!r}")
            if timeout == _INF:  # forever: no timer (a mock clock must not jump to inf)
                timeout = None
        mbox = p.mbox
        pred = None if match is None else compile_pattern(match)
        scanned = 0
        if mbox:
            if pred is None:
                return mbox.popleft()
            for i, m in enumerate(mbox):
                if pred(m):
                    del mbox[i]
                    return m
            scanned = len(mbox)
        if timeout is not None and timeout <= 0:
            return self._timed_out(p, match, timeout, default)
        if timeout is not None:
            self._start_deadline(p, timeout)
        p.waiting = True
        try:
            while True:
                self.block(p)
                if p.dead:
                    self.zombie(p)
                mbox = p.mbox
                if mbox:
                    if pred is None:
                        return mbox.popleft()
                    n = len(mbox)
                    while scanned < n:
                        m = mbox[scanned]
                        if pred(m):
                            del mbox[scanned]
                            return m
                        scanned += 1
                tmo = p.tmo
                if tmo is not None and tmo.fired:
                    return self._timed_out(p, match, timeout, default)
        finally:
            p.waiting = False
            if timeout is not None:
                self._end_deadline(p)

    def _start_deadline(self, p: Process, timeout: float) -> None:
        # The timer itself is armed lazily (see _arm_lazy); a process is listed once. A
        # kept one is left to the sweep, unless its new deadline comes before it.
        p.deadline = deadline = self.clock.now() + timeout
        lz = p.lazy
        if lz == 0 or (lz == 2 and deadline <= self._sweep_at):
            p.lazy = 1
            self._lazy.append(p)

    def _end_deadline(self, p: Process) -> None:
        p.deadline = None
        tmo = p.tmo
        if tmo is not None:
            p.tmo = None
            if not tmo.fired:
                self.cancel(tmo)

    def _timed_out(self, p: Process, match: Any, timeout: Any, default: Any) -> Any:
        if default is not _MISSING:
            return default
        raise ReceiveTimeout(
            f"process {p.pid!r}: no message matching {match!r} within {timeout} s "
            f"({len(p.mbox or ())} other messages in the mailbox)"
        )

    def zombie(self, p: Process) -> None:
        if isinstance(sys.exc_info()[1], ProcessExit):
            # A `finally`/`except ProcessExit` block cleaning up on the way out: not a
            # zombie, just end it again without a warning.
            raise ProcessExit(p.reason)
        log.warning(
            "process %r caught its exit signal (%r) and went on running; "
            "do not swallow ProcessExit (a bare `except:`?). Raising it again.",
            p.pid,
            p.reason,
        )
        raise ProcessExit(p.reason)

    def wait_all_blocked(self, timeout: float | None = None) -> None:
        """Block until every process is blocked and the hub has nothing else to do.

        ``timeout`` (real seconds, only for a caller outside the node) raises
        ``TimeoutError`` if the processes never come to rest (e.g. two of them bounce a
        message forever).
        """
        cur = getcurrent()
        if isinstance(cur, Process):
            if cur.dead:
                self.zombie(cur)
            self._blocked_waiters.append(cur)
            self.want_idle()
            self.block(cur)
            if cur.dead:
                self.zombie(cur)
        else:
            ar: AsyncResult = AsyncResult()
            self._blocked_waiters.append(ar)
            self.want_idle()
            try:
                ar.get(timeout=timeout)
            except gevent.Timeout:
                if ar in self._blocked_waiters:
                    self._blocked_waiters.remove(ar)
                raise TimeoutError(
                    f"the node's processes did not all block within {timeout} s"
                ) from None

    # --- signals ----------------------------------------------------------------------

    def on_exit(self, p: Process, fn: Callable[[], Any]) -> None:
        """Run ``fn()`` when ``p`` ends (right after its timers are cancelled, before
        its links and monitors fire). For resources a process owns outside the kernel;
        ``fn`` must not block or switch. A process that is already dead runs it now."""
        if p.dead:
            self._run_exit_hooks([fn])
            return
        self._on_exit.setdefault(p, []).append(fn)

    def cancel_on_exit(self, p: Process, fn: Callable[[], Any]) -> None:
        """Forget ``fn`` registered by ``on_exit(p, fn)`` (no error if it is not)."""
        fns = self._on_exit.get(p)
        if fns is not None:
            try:
                fns.remove(fn)
            except ValueError:
                pass
            if not fns:
                del self._on_exit[p]

    @staticmethod
    def _run_exit_hooks(fns: list[Callable[[], Any]]) -> None:
        for fn in fns:
            try:
                fn()
            except Exception:  # a hook's failure must not stop the death procedure
                log.exception("an exit hook failed: %r", fn)

    def exit_process(self, p: Process, reason: Any) -> None:
        """The runtime's death procedure: mark dead, free the name, cancel timers, signal.

        Cascades (a link that kills) go through a work list, never recursion.
        """
        self._dying.append((p, reason))
        if self._exiting:
            return
        self._exiting = True
        try:
            cur = getcurrent()
            while self._dying:
                p, reason = self._dying.popleft()
                if p.dead:
                    continue
                p.dead = True
                p.reason = reason
                if p:  # started, not finished: its greenlet may still run (P17)
                    self.unwinding += 1
                    if self.unwinding == 1:
                        self._set_send_node()
                p.aliases = None  # its aliases end with it (P18)
                pid = p.pid
                del self.procs[pid.id]
                self.ended_in += p.nin
                self.ended_out += p.nin - (len(p.mbox) if p.mbox else 0)
                if p.name is not None:
                    del self.names[p.name]
                ts = p.timers
                if ts is not None:
                    if ts.__class__ is _Timer:
                        self._drop_timer_ref(ts)
                    else:
                        for t in ts:  # type: ignore[union-attr]
                            self._drop_timer_ref(t)
                    p.timers = None
                if p.tmo is not None:
                    self.cancel(p.tmo)
                    p.tmo = None
                if p.lazy == 2:
                    self._kept.pop(p, None)
                    p.lazy = 0
                if self._on_exit:
                    fns = self._on_exit.pop(p, None)
                    if fns:
                        self._run_exit_hooks(fns)
                if p is not cur and p:  # a suspended greenlet: unwind it
                    if p.waiting:
                        # Suspended in block(): resumed as usual, it raises its exit
                        # there itself (greenlet.throw unwinds through C++ exceptions).
                        p.waiting = False
                    else:
                        p.exc = ProcessExit(reason)
                    self.wake(p)
                if p.links:
                    links = p.links
                    p.links = None
                    for q in links:
                        if q.links is not None:
                            q.links.discard(p)
                        if q.trap_exit:
                            self.deliver(q, Exit(pid, reason))
                        elif not (reason.__class__ is str and reason == "normal"):
                            self._dying.append((q, reason))
                if p.monitors:
                    mons = p.monitors
                    p.monitors = None
                    for ref, watcher in mons.items():
                        if ref.__class__ is int:
                            # A request_reply monitor: its Down goes through the
                            # waiting caller's slot alias, or nowhere if that alias is
                            # no longer active (replied, timed out).
                            if watcher.call_tag == ref:
                                watcher.call_tag = _SLOT_DOWN
                                watcher.call_value = reason
                                if watcher.waiting:
                                    self.wake(watcher)
                            continue
                        if watcher.watching is not None:
                            watcher.watching.pop(ref, None)
                        self.deliver(watcher, Down(ref, pid, reason))
                if p.watching:
                    for ref, target in p.watching.items():
                        if target.monitors is not None:
                            target.monitors.pop(ref, None)
                    p.watching = None
        finally:
            self._exiting = False

    def exit_signal(self, sender: Process | None, dest: Any, reason: Any) -> None:
        """``exit(pid, reason)``: send an exit signal from ``sender`` to ``dest``."""
        if dest.__class__ is not Pid:
            raise BadArg(f"exit expects a Pid, got {dest!r}")
        self.check_reason(reason)
        t = self.lookup(dest)
        if t is None:
            if dest.node != self.name:
                _dist.remote(self).exit2(sender, dest, reason)
            return
        if reason.__class__ is str and reason == "kill":
            self.exit_process(t, "killed")
        elif t.trap_exit:
            self.deliver(t, Exit(sender.pid if sender is not None else None, reason))
        elif reason.__class__ is str and reason == "normal":
            if t is sender:
                self.exit_process(t, "normal")
        else:
            self.exit_process(t, reason)

    def check_reason(self, reason: Any) -> None:
        """In strict mode, refuse an exit reason that could not be sent as a message."""
        if not self.strict or isinstance(reason, BaseException):
            return
        try:
            check_immutable(reason, "exit reason")
        except BadArg as e:
            raise BadArg(f"{e} (an exit reason is sent to links and monitors)") from None

    def link(self, p: Process, dest: Any) -> None:
        if dest.__class__ is not Pid:
            raise BadArg(f"link expects a Pid, got {dest!r}")
        t = self.lookup(dest)
        if t is None:
            if dest.node != self.name:
                _dist.remote(self).link(p, dest)
                return
            if p.trap_exit:
                self.deliver(p, Exit(dest, "noproc"))
                return
            raise NoProc(f"link to {dest!r} failed: no such process (noproc)", dest)
        if t is p:
            return
        if p.links is None:
            p.links = {t}
        else:
            p.links.add(t)
        if t.links is None:
            t.links = {p}
        else:
            t.links.add(p)

    def unlink(self, p: Process, dest: Any) -> None:
        if dest.__class__ is not Pid:
            raise BadArg(f"unlink expects a Pid, got {dest!r}")
        t = self.lookup(dest)
        if t is None:
            if dest.node != self.name and self.remote is not None:
                self.remote.unlink(p, dest)
            return
        if p.links is not None:
            p.links.discard(t)
        if t.links is not None:
            t.links.discard(p)

    def monitor(self, p: Process, dest: Any) -> Ref:
        ref = Ref(self.name, self._next_ref(), owner=p.pid)
        if dest.__class__ is tuple:  # (name, node): a name on some node
            dest = _dist.check_name_node(dest, "monitor")
            if dest[1] == self.name:
                dest = dest[0]
            else:
                _dist.remote(self).monitor(p, dest, ref)
                return ref
        t = self.resolve(dest)
        if t is None:
            if dest.__class__ is Pid and dest.node != self.name:
                _dist.remote(self).monitor(p, dest, ref)
                return ref
            self.deliver(p, Down(ref, dest, "noproc"))
            return ref
        if t.monitors is None:
            t.monitors = {ref: p}
        else:
            t.monitors[ref] = p
        if p.watching is None:
            p.watching = {ref: t}
        else:
            p.watching[ref] = t
        return ref

    def demonitor(self, p: Process, ref: Any, flush: bool) -> bool:
        if ref.__class__ is not Ref:
            raise BadArg(f"demonitor expects a monitor Ref, got {ref!r}")
        if ref.owner is not p.pid and ref.owner != p.pid:
            whose = "made by make_ref" if ref.owner is None else f"made by {ref.owner!r}"
            raise BadArg(
                f"demonitor expects a Ref returned by monitor() in this process ({p.pid!r}), "
                f"got {ref!r}, {whose}"
            )
        t = p.watching.pop(ref, None) if p.watching else None
        if t is not None:
            if t.monitors is not None:
                t.monitors.pop(ref, None)
        elif self.remote is not None and self.remote.demonitor(p, ref):
            t = p  # (a monitor of a remote process was active)
        if flush:
            self._flush_down(p, ref)
        return t is not None

    # --- aliases (OTP 24) and the request/reply primitive -------------------------------
    #
    # An alias is an id a process can be sent to while the alias is active (docs/
    # semantics.md P18). The public form is a ``Ref`` whose ``owner`` is the process; the
    # kernel knows an alias by ``(owner pid, id)``. A process keeps its active aliases in
    # ``p.aliases`` (id -> _ALIAS_REPLY or 0; None for almost every process), plus one
    # *slot alias* in ``p.call_tag``: the alias of the request it is waiting on in
    # ``request_reply``, whose one message goes to ``p.call_value`` instead of the mailbox
    # (a hand-off: the waiting caller looks nowhere else, so no mailbox scan). An alias
    # dies with its owner: the process leaves the table, so nothing reaches it any more.

    def alias(self, p: Process, reply: bool) -> Ref:
        """A new alias of ``p``; with ``reply``, its first message deactivates it."""
        ref = Ref(self.name, self._next_ref(), owner=p.pid)
        aliases = p.aliases
        if aliases is None:
            p.aliases = {ref.id: _ALIAS_REPLY if reply else 0}
        else:
            aliases[ref.id] = _ALIAS_REPLY if reply else 0
        return ref

    def unalias(self, p: Process, ref: Any) -> bool:
        """Deactivate alias ``ref`` of ``p``; True if it was active."""
        if ref.__class__ is not Ref:
            raise BadArg(f"unalias expects an alias Ref, got {ref!r}")
        aliases = p.aliases
        if aliases is None or ref.node != self.name or not (
            ref.owner is p.pid or ref.owner == p.pid
        ):
            return False
        return aliases.pop(ref.id, None) is not None

    def send_alias(self, owner: Pid, aid: int, msg: Any, check: bool = True) -> None:
        """Deliver ``msg`` through alias ``aid`` of ``owner`` if that alias is active;
        drop it silently otherwise (an inactive alias, a dead owner: P18). ``check=False``
        skips strict mode's immutability check, for a value that is a private copy.
        The caller makes sure it is not a dead process (P17; see ``RUNNING.send_node``)."""
        p = self.procs.get(owner.id)
        if p is None or (p.pid is not owner and p.pid != owner):
            return
        if self.strict and check:
            check_immutable(msg)
        if p.call_tag == aid:
            # The slot alias of a waiting request: hand the message over directly.
            p.call_tag = None
            p.call_value = msg
        else:
            aliases = p.aliases
            if aliases is None:
                return
            mode = aliases.get(aid)
            if mode is None:
                return
            if mode & _ALIAS_REPLY:
                del aliases[aid]
            # deliver, inlined
            mbox = p.mbox
            if mbox is None:
                p.mbox = mbox = deque()
            mbox.append(msg)
            p.nin += 1
        if p.waiting and not p.queued:
            p.queued = True
            self.runq.append(p)
            if not self._drain_scheduled:
                self._drain_scheduled = True
                self.hub.loop.run_callback(self._drain)

    def request_reply(
        self, p: Process, dest: Pid, label: Any, body: Any, timeout: float | None
    ) -> tuple[bool, Any]:
        """Send a request and wait for its one reply: monitor + alias + send + receive.

        Makes a reply alias ``aid`` of ``p`` (an int id, in ``p``'s slot), monitors
        ``dest`` under the same id, sends ``(label, (p.pid, aid), body)`` to ``dest``,
        and waits for the first message through the alias (anyone may send it with
        ``send_alias(p.pid, aid, value)``), the monitor's ``Down``, or the deadline.
        Returns ``(True, value)``, or ``(False, reason)``: ``"noproc"``, ``dest``'s exit
        reason, or ``REQUEST_TIMEOUT``. When it returns, the alias is inactive and the
        monitor gone, so a second or late message through the alias is dropped and no
        ``Down`` follows. Ordinary messages are never looked at.

        It is the same protocol the public alias/monitor/send/receive would give, fused:
        it carries every behaviour's call, the hottest path there is.
        """
        if p.dead:
            self.zombie(p)
        t = self.procs.get(dest.id)
        if t is None or (t.pid is not dest and t.pid != dest) or t.dead:
            return False, "noproc"
        if self.strict:
            check_immutable(body)
        at_once = False  # a zero timeout: send, then time out at once
        if timeout is not None:
            if 0 < timeout < _INF:
                # self._start_deadline(p, timeout), inlined
                p.deadline = deadline = self.clock.now() + timeout
                lz = p.lazy
                if lz == 0 or (lz == 2 and deadline <= self._sweep_at):
                    p.lazy = 1
                    self._lazy.append(p)
            elif timeout == 0:
                at_once = True
                timeout = None  # (no deadline to end)
            elif timeout == _INF:
                timeout = None  # no deadline
            else:  # negative, or NaN: refused before anything is sent
                raise BadArg(f"call timeout must be seconds >= 0 or None, got {timeout!r}")
        aid = self._next_ref()
        # The monitor is kept on the server's side only (not in the caller's
        # ``watching``): the caller takes it off itself below, even if it is killed. Its
        # int key tells exit_process to put the Down in the caller's slot, not the mailbox.
        mons = t.monitors
        if mons is None:
            t.monitors = {aid: p}
        else:
            mons[aid] = p
        # deliver, inlined
        mbox = t.mbox
        if mbox is None:
            t.mbox = mbox = deque()
        mbox.append((label, (p.pid, aid), body))
        t.nin += 1
        if t.waiting and not t.queued:
            t.queued = True
            self.runq.append(t)
            if not self._drain_scheduled:
                self._drain_scheduled = True
                self.hub.loop.run_callback(self._drain)
        if at_once:  # (nothing can have answered: the server has not run yet)
            mons = t.monitors
            if mons is not None:
                mons.pop(aid, None)
            return False, REQUEST_TIMEOUT
        p.call_tag = aid  # the alias is active from here on
        p.waiting = True
        try:
            while p.call_tag == aid:
                self.block(p)
                if p.dead:
                    self.zombie(p)
                tmo = p.tmo
                if tmo is not None and tmo.fired and p.call_tag == aid:
                    break  # the deadline passed
        except BaseException:  # killed while waiting: deactivate, take the monitor off
            if p.call_tag == aid:
                p.call_tag = None
            mons = t.monitors
            if mons is not None:
                mons.pop(aid, None)
            raise
        finally:
            p.waiting = False
            if timeout is not None:
                self._end_deadline(p)
        tag = p.call_tag
        mons = t.monitors
        if tag is None:  # the reply came through the slot (and deactivated the alias)
            # Demonitor (the server may be dead by now: its monitors are gone then, and
            # its Down was dropped, the alias being inactive).
            if mons is not None:
                mons.pop(aid, None)
            value = p.call_value
            p.call_value = None
            return True, value
        p.call_tag = None
        if tag == aid:  # the deadline: deactivate the alias, a late reply is dropped
            if mons is not None:
                mons.pop(aid, None)
            return False, REQUEST_TIMEOUT
        value = p.call_value  # the Down came through the slot: the server's reason
        p.call_value = None
        return False, value

    def _flush_down(self, p: Process, tag: Any) -> None:
        # Remove the Down of monitor ``tag`` if queued.
        mbox = p.mbox
        if mbox:
            for i, m in enumerate(mbox):
                if m.__class__ is Down and m[0] == tag:
                    del mbox[i]
                    return

    def next_message(self, p: Process) -> Any:
        """``receive()`` with no pattern and no timeout, for behaviour loops: the oldest
        message, waiting for one if the mailbox is empty."""
        mbox = p.mbox
        if mbox:
            return mbox.popleft()
        if p.dead:
            self.zombie(p)
        p.waiting = True
        try:
            while True:
                self.block(p)
                if p.dead:
                    self.zombie(p)
                mbox = p.mbox
                if mbox:
                    return mbox.popleft()
        finally:
            p.waiting = False

    def yield_now(self, p: Process) -> None:
        """``p`` (the running process) lets every other runnable process run first."""
        if self.runq:
            self.wake(p)  # to the back of the run queue: the others go first
            self.block(p)
            if p.dead:
                self.zombie(p)

    def flush(self, p: Process) -> list[Any]:
        """Take every message out of ``p``'s mailbox."""
        mbox = p.mbox
        if not mbox:
            return []
        msgs = list(mbox)
        mbox.clear()
        return msgs

    # --- names ------------------------------------------------------------------------

    def register(self, name: Any, dest: Any) -> None:
        if not isinstance(name, str) or not name:
            raise BadArg(f"register expects a non-empty str name, got {name!r}")
        if dest.__class__ is not Pid:
            raise BadArg(f"register expects a Pid, got {dest!r}")
        t = self.lookup(dest)
        if t is None:
            raise NoProc(f"register({name!r}, {dest!r}): no such process", dest)
        holder = self.names.get(name)
        if holder is not None:
            raise NameTaken(
                f"register({name!r}, {dest!r}) expects a free name, but {name!r} is "
                f"already registered to {holder.pid!r}"
            )
        if t.name is not None:
            raise AlreadyRegistered(
                f"register({name!r}, {dest!r}) expects a process without a name, but "
                f"{dest!r} is already registered as {t.name!r}; unregister it first"
            )
        self.names[name] = t
        t.name = name

    def unregister(self, name: Any) -> None:
        t = self.names.pop(name, None) if isinstance(name, str) else None
        if t is None:
            raise NoProc(f"unregister({name!r}): no process is registered under that name", name)
        t.name = None

    # --- timers -----------------------------------------------------------------------

    def add_timer(self, deadline: float, proc: Process | None, dest: Any, msg: Any) -> _Timer:
        t = _Timer(deadline, proc, dest, msg)
        heap = self._timers
        entry = (deadline, self._timer_seq(), t)
        heapq.heappush(heap, entry)
        if heap[0] is entry:
            self.clock.schedule(deadline)
        return t

    def cancel(self, t: _Timer) -> None:
        if t.cancelled or t.fired:
            return
        t.cancelled = True
        self._ncancelled += 1
        heap = self._timers
        if self._ncancelled > 1024 and self._ncancelled * 2 > len(heap):
            self._timers = [e for e in heap if not e[2].cancelled]
            heapq.heapify(self._timers)
            self._ncancelled = 0

    def _drop_timer_ref(self, t: _Timer) -> None:
        if t.ref is not None:
            self._timer_refs.pop(t.ref.id, None)
        self.cancel(t)

    def send_after(self, seconds: float, dest: Any, msg: Any) -> Ref:
        if (
            not isinstance(seconds, int | float)
            or isinstance(seconds, bool)
            or not 0 <= seconds < _INF
        ):
            raise BadArg(f"send_after expects finite seconds >= 0, got {seconds!r}")
        if self.strict:
            check_immutable(msg)
        if dest.__class__ is Pid:
            target: Any = self.lookup(dest)
        elif isinstance(dest, str) and dest:
            target = dest
        else:
            raise BadArg(f"send_after expects a Pid or a registered name, got {dest!r}")
        ref = Ref(self.name, self._next_ref())
        if target is None:
            # Like Erlang: a timer to a dead pid is a no-op; read_timer/cancel_timer
            # report it gone.
            return ref
        t = self.add_timer(self.clock.now() + seconds, None, target, msg)
        t.ref = ref
        self._timer_refs[ref.id] = t
        if isinstance(target, Process):
            ts = target.timers
            if ts is None:
                target.timers = t
            elif ts.__class__ is _Timer:
                target.timers = {ts, t}
            else:
                ts.add(t)  # type: ignore[union-attr]
        return ref

    def start_timer(self, seconds: float, dest: Any, msg: Any) -> Ref:
        """``send_after`` whose message is ``TimerTimeout(ref, msg)`` (the timer's own
        ref, which only exists once the timer does): Erlang's ``start_timer``."""
        ref = self.send_after(seconds, dest, msg)
        t = self._timer_refs.get(ref.id)
        if t is not None:
            t.msg = TimerTimeout(ref, msg)
        return ref

    def cancel_timer(self, ref: Any) -> float | None:
        if ref.__class__ is not Ref:
            raise BadArg(f"cancel_timer expects a timer Ref, got {ref!r}")
        t = self._timer_refs.pop(ref.id, None) if ref.node == self.name else None
        if t is None:
            return None
        remaining = max(0.0, t.deadline - self.clock.now())
        if isinstance(t.dest, Process):
            _untrack(t.dest, t)
        self.cancel(t)
        return remaining

    def read_timer(self, ref: Any) -> float | None:
        if ref.__class__ is not Ref:
            raise BadArg(f"read_timer expects a timer Ref, got {ref!r}")
        t = self._timer_refs.get(ref.id) if ref.node == self.name else None
        if t is None:
            return None
        return max(0.0, t.deadline - self.clock.now())

    def fire_timers(self) -> None:
        """Fire every timer whose deadline has passed. Safe from any greenlet: it only
        delivers messages and queues processes, never switches."""
        if self._lazy:
            self._arm_lazy()
        now = self.clock.now()
        heap = self._timers
        while heap and heap[0][0] <= now:
            t = heapq.heappop(heap)[2]
            if t.cancelled:
                self._ncancelled -= 1
                continue
            if t.fired:
                continue
            t.fired = True
            p = t.proc
            if p is not None:  # a receive timeout
                if p.tmo is t and not p.dead:
                    self.wake(p)
                continue
            dest = t.dest
            if dest is _SWEEP:
                if t is self._sweep:
                    self._sweep_kept()
                continue
            if t.ref is not None:
                self._timer_refs.pop(t.ref.id, None)
            if isinstance(dest, Process):
                _untrack(dest, t)
                if not dest.dead:
                    self.deliver(dest, t.msg)
            else:
                target = self.names.get(dest)
                if target is not None:
                    self.deliver(target, t.msg)
        heap = self._timers
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
            self._ncancelled -= 1
        if heap:
            self.clock.schedule(heap[0][0])

    def next_deadline(self) -> float | None:
        live = [e[0] for e in self._timers if not (e[2].cancelled or e[2].fired)]
        return min(live) if live else None

    def live_timers(self) -> list[tuple[Ref, float]]:
        """Pending ``send_after`` timers (receive timeouts of blocked processes excluded)."""
        now = self.clock.now()
        return [(t.ref, t.deadline - now) for t in self._timer_refs.values()
                if t.ref is not None]

    # --- idle: mock-clock jumps and wait_all_blocked ------------------------------------

    def want_idle(self) -> None:
        if self.hub is None:
            return
        if self._idle is None:
            self._idle = self.hub.loop.idle()
        if not self._idle.active:
            self._idle.start(self._on_idle)

    def _on_idle(self) -> None:
        if self.runq or self._drain_scheduled:
            return  # not idle yet; the watcher fires again
        if self._lazy:
            self._arm_lazy()
        # What idling means is the clock's to say (a mock clock fires what is due, then
        # jumps in time; the real one has a timer of its own and does neither).
        clock = self.clock
        if clock.settle(self):
            return
        if self._blocked_waiters:
            waiters = self._blocked_waiters
            self._blocked_waiters = []
            for w in waiters:
                if isinstance(w, Process):
                    if not w.dead:
                        self.wake(w)
                else:
                    w.set(None)
            return
        if clock.idle(self):
            return
        self._idle.stop()

    def _first_live_deadline(self) -> float | None:
        heap = self._timers
        while heap and (heap[0][2].cancelled or heap[0][2].fired):
            e = heapq.heappop(heap)
            if e[2].cancelled:
                self._ncancelled -= 1
        return heap[0][0] if heap else None

    # --- introspection ----------------------------------------------------------------

    def info(self, p: Process) -> ProcessInfo:
        if p is getcurrent():
            status = "running"
        elif p.suspended:
            status = "suspended"
        elif p.queued:
            status = "runnable"
        else:
            status = "waiting"
        frame = p.gr_frame if p is not getcurrent() else None
        if p is getcurrent():
            stack = tuple(traceback.format_stack()[:-2])
            current = _current_function(sys._getframe(1))
        elif frame is not None:
            stack = tuple(traceback.format_stack(frame))
            current = _current_function(frame)
        else:
            stack = ()
            current = None
        return ProcessInfo(
            pid=p.pid,
            status=status,
            message_queue_len=len(p.mbox) if p.mbox else 0,
            links=tuple(sorted(q.pid for q in p.links)) if p.links else (),
            monitors=tuple((r, t.pid) for r, t in p.watching.items()) if p.watching else (),
            monitored_by=tuple(w.pid for w in p.monitors.values()) if p.monitors else (),
            registered_name=p.name,
            trap_exit=p.trap_exit,
            initial_call=_describe(p.fn),
            current_stacktrace=stack,
            current_function=current,
        )

