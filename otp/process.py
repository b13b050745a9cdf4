"""Processes: spawn, send, receive, link, monitor, exit signals, names and timers.

This is Erlang's process model on gevent greenlets. A process is a function running
with its own mailbox; processes share nothing and talk only by messages::

    import otp
    from otp.process import spawn_link, send, receive, self, trap_exit, Exit

    def echo():
        while True:
            match receive():
                case ("ping", sender):
                    send(sender, "pong")
                case "stop":
                    return

    def main():
        pid = spawn_link(echo)
        send(pid, ("ping", self()))
        assert receive() == "pong"
        trap_exit(True)                   # exit signals become messages
        send(pid, "stop")
        return receive(Exit)              # Exit(pid=<0.2.0>, reason='normal')

    print(otp.run(main))

Failure semantics (Erlang's, see docs/semantics.md P1-P16):

- A process ends with a *reason*: ``"normal"`` when its function returns, the exception
  when it raises, the given reason after ``exit(reason)``.
- Links are bidirectional: when a linked process ends abnormally, the other ends too
  with the same reason, unless it traps exits (then it gets an ``Exit`` message).
  ``"normal"`` exits do not propagate. ``exit(pid, "kill")`` cannot be trapped and ends
  the target with ``"killed"``.
- Monitors are one-way: the watcher gets one ``Down(ref, pid, reason)`` message.
- Between one sender and one receiver, messages and signals arrive in the order sent.
- Messages are values: send immutable things (tuples, str, bytes, numbers, Pid, Ref,
  frozen dataclasses). Locally they are passed by reference; strict mode (on in the
  test suite) refuses mutable ones.
- The exit delivered into a process is ``ProcessExit``, a ``BaseException``:
  ``except Exception`` does not catch it. Do not swallow it; the process is dead anyway.

Aliases (OTP 24): ``alias()`` gives the caller a ``Ref`` that others can ``send`` to
while it is active; ``unalias(ref)``, the first message (``alias(reply=True)``) or the
owner's end deactivates it, and a message to an inactive alias is dropped (P18)::

    def main():
        a = alias(reply=True)
        send(a, "first")                  # arrives, like any message
        send(a, "second")                 # dropped: the first one deactivated it
        return flush()                    # ['first']

Dead means dead (P17): once the runtime has declared a process dead, whatever its
greenlet still runs (a ``finally`` block unwinding the exit) has no effect. ``send``
(and so ``gen_server.cast``/``reply``), ``send_after`` (returns a timer ref that never
fires), ``cancel_timer`` (returns None) and ``unalias`` quietly do nothing, so a
cleanup that sends is harmless; the calls that would create something, change links,
monitors or names, or wait (``spawn*``, ``link``/``unlink``, ``monitor``/``demonitor``,
``register``/``unregister``, ``exit(pid, reason)``, ``receive``, ``alias``,
``gen_server.call``...) raise its ``ProcessExit`` again. Everything it sent before
it died arrives before its ``Exit``/``Down``; nothing it "sends" afterwards arrives.

Timeouts are seconds as ``float``; ``None`` means forever; ``0`` polls. When not to use
processes: for CPU-bound work (greenlets are cooperative: one busy process stalls the
node; use a thread or OS process pool) or to share a large mutable structure (own it in
one process and send it requests instead).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, overload

from otp.errors import BadArg, NotInProcess, ProcessExit
from otp.lowlevel import (
    ANY,
    Down,
    Exit,
    NodeDown,
    Pid,
    Process,
    ProcessInfo,
    ProcessVar,
    Ref,
    TimerTimeout,
    current_node,
    getcurrent,
    receive,
    send,
)
from otp.lowlevel import RUNNING as _RUNNING
from otp.lowlevel import remote as _remote

__all__ = [
    "ANY",
    "Down",
    "Exit",
    "NodeDown",
    "Pid",
    "ProcessInfo",
    "ProcessVar",
    "Ref",
    "TimerTimeout",
    "alias",
    "cancel_timer",
    "demonitor",
    "exit",
    "flush",
    "is_alive",
    "link",
    "make_ref",
    "monitor",
    "monitor_node",
    "node",
    "nodes",
    "now",
    "process_info",
    "processes",
    "read_timer",
    "receive",
    "register",
    "registered",
    "self",
    "send",
    "send_after",
    "sleep",
    "spawn",
    "spawn_link",
    "spawn_monitor",
    "spawn_opt",
    "start_timer",
    "trap_exit",
    "unalias",
    "unlink",
    "unregister",
    "whereis",
    "yield_now",
]


def _me(what: str) -> Process:
    p = getcurrent()
    if p.__class__ is not Process:
        raise NotInProcess(
            f"{what} must be called inside a process (spawn one, or use otp.run(main))"
        )
    if p.dead:
        p.node.zombie(p)
    return p


def _dead_caller() -> bool:
    """True if the caller is a process the runtime has declared dead (P17)."""
    cur = getcurrent()
    return cur.__class__ is Process and cur.dead


def _refuse_if_dead() -> None:
    """Re-raise the caller's exit if it is a dead process (P17): for the calls that
    would create something (a process, a name)."""
    cur = getcurrent()
    if cur.__class__ is Process and cur.dead:
        cur.node.zombie(cur)


def _check_dead(p: Process) -> None:
    # A call may have killed its own caller (a link cascade): end it now.
    if p.dead:
        raise ProcessExit(p.reason)


def spawn(fn: Callable[..., Any], *args: Any) -> Pid:
    """Start ``fn(*args)`` as a new process and return its pid at once.

    The new process runs when the caller next blocks (or yields); it is not linked or
    monitored. Raises ``BadArg`` if ``fn`` is not callable.

    >>> import otp
    >>> otp.run(lambda: isinstance(spawn(lambda: None), Pid))
    True
    """
    node = current_node()
    if node.unwinding:
        _refuse_if_dead()
    return node.spawn(fn, args).pid


def spawn_link(fn: Callable[..., Any], *args: Any) -> Pid:
    """Like ``spawn``, and link the new process to the caller, atomically: even a child
    that crashes on its first line produces the EXIT signal."""
    me = _me("spawn_link")
    return me.node.spawn(fn, args, link=me).pid


def spawn_monitor(fn: Callable[..., Any], *args: Any) -> tuple[Pid, Ref]:
    """Like ``spawn``, and monitor the new process, atomically. Returns ``(pid, ref)``."""
    me = _me("spawn_monitor")
    node = me.node
    p = node.spawn(fn, args)
    return p.pid, node.monitor(me, p.pid)


@overload
def spawn_opt(
    fn: Callable[..., Any], *args: Any, link: bool = ..., monitor: Literal[False] = ...
) -> Pid: ...
@overload
def spawn_opt(
    fn: Callable[..., Any], *args: Any, link: bool = ..., monitor: Literal[True]
) -> tuple[Pid, Ref]: ...
def spawn_opt(
    fn: Callable[..., Any], *args: Any, link: bool = False, monitor: bool = False
) -> Pid | tuple[Pid, Ref]:
    """``spawn`` with options (Erlang's ``spawn_opt``): ``link=True`` links the new
    process to the caller, ``monitor=True`` monitors it, both atomically with the spawn
    (P9). Returns the pid, or ``(pid, ref)`` with ``monitor=True``.

    >>> import otp
    >>> def main():
    ...     pid, ref = spawn_opt(lambda: None, monitor=True)
    ...     return receive(Down).reason
    >>> otp.run(main)
    'normal'
    """
    if link.__class__ is not bool or monitor.__class__ is not bool:
        raise BadArg(f"spawn_opt expects link and monitor True or False, got {link!r}, "
                     f"{monitor!r}")
    if not (link or monitor):
        return current_node().spawn(fn, args).pid
    me = _me("spawn_opt")
    node = me.node
    p = node.spawn(fn, args, link=me if link else None)
    if monitor:
        return p.pid, node.monitor(me, p.pid)
    return p.pid


def yield_now() -> None:
    """Let every other runnable process run, then go on (Erlang's ``erlang:yield``).

    A process that computes for a long time without receiving holds the node (processes
    are cooperative); calling this now and then gives the others their turn. Returns at
    once when no other process is runnable. Messages stay queued.
    """
    me = _me("yield_now")
    me.node.yield_now(me)


def sleep(seconds: float) -> None:
    """Suspend the calling process for ``seconds`` on the node clock (messages stay queued)."""
    me = _me("sleep")
    if (
        seconds.__class__ is not float and seconds.__class__ is not int
    ) or not seconds >= 0:  # negative, or NaN
        raise BadArg(
            f"sleep expects seconds >= 0 (a float or int), got {seconds!r}"
            + (" (use receive() to wait forever)" if seconds is None else "")
        )
    me.node.receive(me, _never, seconds, None)


def _never(_msg: Any) -> bool:
    return False


def flush() -> list[Any]:
    """Remove and return every message in the caller's mailbox."""
    me = _me("flush")
    return me.node.flush(me)


def self() -> Pid:
    """The pid of the calling process."""
    p = getcurrent()
    if p.__class__ is not Process:
        _me("self()")
    return p.pid


@overload
def exit(reason: Any, /) -> None: ...
@overload
def exit(pid: Pid, reason: Any, /) -> None: ...
def exit(*args: Any) -> None:
    """``exit(reason)`` ends the calling process with ``reason``.

    ``exit(pid, reason)`` sends an exit signal: a target that traps exits gets an
    ``Exit(sender, reason)`` message; otherwise it ends with ``reason``, except that
    ``"normal"`` is ignored (unless the target is the caller) and ``"kill"`` is
    untrappable and ends the target with ``"killed"``. The reason must be a value that
    can be sent (immutable) or an exception.
    """
    node = current_node()
    if len(args) == 1:
        _me("exit(reason)")
        node.check_reason(args[0])
        raise ProcessExit(args[0])
    if len(args) != 2:
        raise BadArg(f"exit takes (reason) or (pid, reason), got {len(args)} arguments")
    cur = getcurrent()
    sender = cur if cur.__class__ is Process else None
    if sender is not None and sender.dead:
        node.zombie(sender)
    node.exit_signal(sender, args[0], args[1])
    if sender is not None:
        _check_dead(sender)


def link(pid: Pid) -> None:
    """Link the caller and ``pid`` (both ways; linking twice or to oneself does nothing).

    If ``pid`` is not alive, a caller that traps exits gets ``Exit(pid, "noproc")``;
    otherwise ``NoProc`` is raised.
    """
    me = _me("link")
    me.node.link(me, pid)
    _check_dead(me)  # a link to an unreachable node: noconnection (P14)


def unlink(pid: Pid) -> None:
    """Remove the link between the caller and ``pid``. An EXIT already queued stays."""
    me = _me("unlink")
    me.node.unlink(me, pid)


def monitor(target: Pid | str | tuple[str, str]) -> Ref:
    """Monitor a pid or registered name; one ``Down(ref, pid, reason)`` follows its end.

    A name is resolved once, now: the monitor follows the process that holds it (and its
    ``Down`` carries that process's pid; unlike Erlang's ``{Name, Node}``). Each call
    makes a separate monitor. A target that is not alive gives ``Down(ref, target,
    "noproc")`` at once (``target`` as given: the pid, or the name).

    ``(name, node)`` monitors a name on a node; its ``Down`` names ``(name, node)``, as
    Erlang's does. A monitor of a process on another node fires with reason
    ``"noconnection"`` when the connection to it is lost (or cannot be made).
    """
    me = _me("monitor")
    return me.node.monitor(me, target)


def demonitor(ref: Ref, *, flush: bool = False) -> bool:
    """Turn a monitor off. With ``flush=True`` also remove its ``Down`` if already queued.

    Returns True if the monitor was active. ``BadArg`` if ``ref`` is not a monitor
    reference created by the caller.
    """
    me = _me("demonitor")
    return me.node.demonitor(me, ref, flush)


def trap_exit(flag: bool) -> bool:
    """Set whether exit signals become ``Exit`` messages for the caller; returns the old value."""
    me = _me("trap_exit")
    if not isinstance(flag, bool):
        raise BadArg(f"trap_exit expects True or False, got {flag!r}")
    old = me.trap_exit
    me.trap_exit = flag
    return old


def is_alive(pid: Pid | None = None) -> bool:
    """True if ``pid`` is a live process of this node.

    With no argument: whether this node is distributed (Erlang's ``is_alive/0``;
    see ``otp.dist.start``). A pid of another node is a ``BadArg`` (as
    ``is_process_alive`` in Erlang): monitor it instead.
    """
    if pid is None:
        return current_node().dist is not None
    if pid.__class__ is not Pid:
        raise BadArg(f"is_alive expects a Pid, got {pid!r}")
    node = current_node()
    if pid.node != node.name:
        raise BadArg(f"is_alive expects a pid of this node ({node.name}), got {pid!r}")
    return node.lookup(pid) is not None


def node() -> str:
    """This node's name (``"nonode@nohost"`` when it is not distributed)."""
    return current_node().name


def nodes() -> list[str]:
    """The nodes this node is connected to now (visible ones)."""
    hook = current_node().dist
    return [] if hook is None else list(hook.nodes())


def monitor_node(node: str, flag: bool = True) -> None:
    """Monitor the connection to ``node``: ``NodeDown(node)`` arrives when it is lost,
    or at once if it cannot be made or this node is not distributed. Each call with
    ``flag=True`` gives one more ``NodeDown``; ``flag=False`` turns them all off."""
    me = _me("monitor_node")
    if not isinstance(flag, bool):
        raise BadArg(f"monitor_node expects flag True or False, got {flag!r}")
    _remote(me.node).monitor_node(me, node, flag)


def register(name: str, pid: Pid) -> None:
    """Give ``pid`` a node-wide name. ``NameTaken`` if the name is in use,
    ``AlreadyRegistered`` if the process has a name; the name goes when the process ends."""
    node = current_node()
    if node.unwinding:
        _refuse_if_dead()
    node.register(name, pid)


def unregister(name: str) -> None:
    """Remove a registered name; ``NoProc`` if nobody holds it."""
    node = current_node()
    if node.unwinding:
        _refuse_if_dead()
    node.unregister(name)


def whereis(name: str) -> Pid | None:
    """The pid registered under ``name``, or None."""
    if name.__class__ is not str and not isinstance(name, str):
        raise BadArg(f"whereis expects a registered name (str), got {name!r}")
    node = _RUNNING.node
    if node is None:
        node = current_node()
    p = node.resolve(name)
    return p.pid if p is not None else None


def registered() -> list[str]:
    """All registered names."""
    return sorted(current_node().names)


def processes() -> list[Pid]:
    """The pids of all live processes, oldest first."""
    return [p.pid for p in current_node().procs.values()]


def process_info(pid: Pid) -> ProcessInfo | None:
    """A snapshot of a live process (status, mailbox length, links, monitors, name,
    stack), or None if it is not alive."""
    if pid.__class__ is not Pid:
        raise BadArg(f"process_info expects a Pid, got {pid!r}")
    node = current_node()
    p = node.lookup(pid)
    return None if p is None else node.info(p)


def make_ref() -> Ref:
    """A new unique reference."""
    node = current_node()
    return Ref(node.name, node._next_ref())


def send_after(seconds: float, dest: Pid | str, msg: Any) -> Ref:
    """Deliver ``msg`` to ``dest`` after ``seconds`` on the node clock; returns a timer ref.

    A timer aimed at a pid is cancelled when that process ends; one aimed at a name
    delivers to whoever holds the name when it fires (nothing if nobody does).
    """
    node = _RUNNING.node  # (current_node() without the call: a hot path)
    if node is None:
        node = current_node()
    if node.unwinding and _dead_caller():
        return make_ref()  # a dead process sets no timer (P17): a ref that never fires
    return node.send_after(seconds, dest, msg)


def start_timer(seconds: float, dest: Pid | str, msg: Any) -> Ref:
    """Like ``send_after``, but what arrives is ``TimerTimeout(ref, msg)``, ``ref`` being
    the returned timer ref (Erlang's ``start_timer``): the receiver tells its timers
    apart, and a timer it cancelled too late from the one it started since.

    >>> import otp
    >>> def main():
    ...     ref = start_timer(1.5, self(), "tick")
    ...     return receive(TimerTimeout) == TimerTimeout(ref, "tick")
    >>> otp.run(main)
    True
    """
    node = _RUNNING.node
    if node is None:
        node = current_node()
    return node.start_timer(seconds, dest, msg)


def cancel_timer(ref: Ref) -> float | None:
    """Cancel a ``send_after`` timer; returns the seconds that were left, or None if it
    already fired or was cancelled."""
    node = _RUNNING.node
    if node is None:
        node = current_node()
    if node.unwinding and _dead_caller():
        return None  # a dead process has no effects (P17)
    return node.cancel_timer(ref)


def now() -> float:
    """The node clock's time in seconds (monotonic: only differences mean anything).

    Every timeout and timer of the node runs on this clock, so code that measures
    intervals against them (a rate limit, a restart window) reads it too; under the
    test kit's mock clock it moves only when every process waits.

    >>> import otp
    >>> otp.run(lambda: now() >= 0.0)
    True
    """
    node = _RUNNING.node
    if node is None:
        node = current_node()
    return node.clock.now()


def read_timer(ref: Ref) -> float | None:
    """Seconds left on a ``send_after`` timer, or None if it is gone."""
    return current_node().read_timer(ref)


# --- aliases (OTP 24) ----------------------------------------------------------------------


def alias(*, reply: bool = False) -> Ref:
    """A new alias of the calling process: a ``Ref`` that ``send(ref, msg)`` delivers to
    the caller's mailbox, as an ordinary message, while the alias is active (P18).

    ``unalias(ref)`` deactivates it, and so does the caller's end. With ``reply=True``
    (OTP's ``alias([reply])``) the first message sent through it deactivates it too,
    which is what a request wants: one answer, later ones dropped. The default is OTP's
    ``explicit_unalias``. A message to an inactive alias is dropped silently.

    >>> import otp
    >>> def main():
    ...     a = alias()
    ...     send(a, "hello")
    ...     unalias(a)
    ...     send(a, "dropped")
    ...     return flush()
    >>> otp.run(main)
    ['hello']
    """
    if reply.__class__ is not bool:
        raise BadArg(f"alias expects reply=True or False, got {reply!r}")
    me = _me("alias")
    return me.node.alias(me, reply)


def unalias(ref: Ref) -> bool:
    """Deactivate an alias the caller made; returns True if it was active (False for a
    Ref that is not an active alias of the caller). Messages already delivered through
    it stay in the mailbox."""
    cur = getcurrent()
    if cur.__class__ is Process and cur.dead:
        return False  # a dead process's aliases are gone already (P17, P18)
    me = _me("unalias")
    return me.node.unalias(me, ref)
