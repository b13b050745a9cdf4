"""Fault injection for tests: scripted children, flaky starters, kill on demand.

Supervisor tests need children that do exactly what the test says: start (or fail to),
register a name, answer a call, crash with a given reason, ignore the ``shutdown``
signal, unlink from their supervisor. This module provides them as plain processes
(no gen_server underneath, so they test the supervisor alone)::

    from otp import supervisor
    from otp.supervisor import ChildSpec, SupFlags
    from otp.testing_faults import crash, start_worker, whereis_child

    class Sup(supervisor.Supervisor):
        def init(self, arg):
            return SupFlags("one_for_one"), [
                ChildSpec("w", (start_worker, ("w",)), restart="transient"),
            ]

    def test_crashed_transient_child_is_restarted(node):
        sup = supervisor.start_link(Sup)
        old = whereis_child(sup, "w")
        crash(old, "boom")                       # exits with reason "boom"
        ...

Every scripted child is started synchronously by its start function (like
``proc_lib.start_link``): the function returns the pid, linked to the caller, only
after the child is up; a child that dies first makes it raise ``StartError`` with the
child's reason. Options of ``start_worker``:

- ``name``: register the child under this name once started.
- ``notify``: a pid told ``("started", tag, pid)`` after the start and
  ``("stopping", tag, pid, reason)`` when an exit signal from its parent arrives
  (only with ``trap=True``), so tests can observe start and stop order.
- ``trap``: trap exits; on the parent's ``shutdown`` signal, notify and exit with it.
- ``ignore_shutdown``: trap exits and ignore every exit signal (only ``kill`` ends it).
- ``unlink``: unlink from the parent right after starting (the supervisor must still
  be able to stop it: it waits on a monitor).
- ``init_fail``: die during start with this reason (the start raises ``StartError``).
- ``ignore``: the start returns None (OTP's ``ignore``) and no process is left.

Commands: ``crash(pid, reason)`` (the child calls ``exit(reason)``; ``"normal"``
ends it normally), ``kill(pid)`` (untrappable), ``ping(pid)`` (a call that returns
``("pong", tag)``). Starters: ``flaky(n, ...)`` fails its first ``n`` starts, then
succeeds; ``FaultPlan`` lets a test (or a Hypothesis state machine) decide per start.

Not for production code: these children exist to break things on purpose.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from otp.errors import StartError
from otp.process import (
    Down,
    Exit,
    Pid,
    demonitor,
    exit,
    make_ref,
    monitor,
    receive,
    register,
    send,
    spawn_link,
    trap_exit,
    unlink,
)
from otp.process import self as _self
from otp.supervisor import ChildSpec, Supervisor, which_children

__all__ = [
    "FaultPlan",
    "ScriptedSupervisor",
    "call_child",
    "crash",
    "flaky",
    "kill",
    "ping",
    "start_sync",
    "start_worker",
    "whereis_child",
    "worker_spec",
]


def start_sync(fn: Callable[..., Any], *args: Any) -> Pid:
    """Spawn ``fn(parent, *args)`` linked to the caller and wait until it calls
    ``send(parent, ("$ack", self()))``; returns its pid. If it dies first, its EXIT
    is flushed and ``StartError(reason)`` is raised."""
    parent = _self()
    pid = spawn_link(fn, parent, *args)
    ref = monitor(pid)
    msg = receive(lambda m: m == ("$ack", pid) or (m.__class__ is Down and m.ref == ref))
    if msg.__class__ is Down:
        # The EXIT of a linked process is delivered before its Down: flush it so a
        # trapping caller (a supervisor) does not see a stray EXIT later.
        receive(lambda m: m.__class__ is Exit and m.pid == pid, 0, default=None)
        raise StartError(msg.reason)
    demonitor(ref, flush=True)
    return pid


def start_worker(
    tag: Any,
    *extra: Any,
    name: str | None = None,
    notify: Pid | None = None,
    trap: bool = False,
    ignore_shutdown: bool = False,
    unlink: bool = False,
    init_fail: Any = None,
    ignore: bool = False,
) -> Pid | None:
    """Start a scripted worker (see the module doc); ``extra`` start arguments (from a
    ``simple_one_for_one`` ``start_child``) are kept as the worker's ``tag`` suffix."""
    if ignore:
        return None
    if extra:
        tag = (tag, *extra)
    opts = (name, notify, trap, ignore_shutdown, unlink, init_fail)
    return start_sync(_worker, tag, opts)


def _worker(parent: Pid, tag: Any, opts: tuple[Any, ...]) -> None:
    name, notify, trap, ignore_shutdown, do_unlink, init_fail = opts
    if init_fail is not None:
        exit(init_fail)
    if trap or ignore_shutdown:
        trap_exit(True)
    if name is not None:
        register(name, _self())
    if do_unlink:
        unlink(parent)
    send(parent, ("$ack", _self()))
    if notify is not None:
        send(notify, ("started", tag, _self()))
    while True:
        msg = receive()
        if msg.__class__ is Exit:
            if ignore_shutdown:
                continue
            if notify is not None:
                send(notify, ("stopping", tag, _self(), msg.reason))
            exit(msg.reason)
        match msg:
            case ("$crash", reason):
                exit(reason)
            case ("$call", caller, ref, "ping"):
                send(caller, (ref, ("pong", tag)))
            case ("$call", caller, ref, request):
                send(caller, (ref, ("unknown", request)))
            case _:
                pass


_SPEC_FIELDS = ("restart", "shutdown", "type", "significant", "modules", "backoff")


def worker_spec(child_id: Any, *, start: Callable[..., Any] | None = None,
                **opts: Any) -> Any:
    """A ``ChildSpec`` for a scripted worker tagged ``child_id``: child spec fields
    (``restart``, ``shutdown``, ``significant``, ``backoff``...) go to the spec, the
    rest are ``start_worker`` options (``notify=self()``, ``trap=True``...). ``start``
    replaces ``start_worker`` (e.g. ``plan.starter(...)``); the spec stays immutable,
    so it can be sent in ``start_child``."""
    fields = {k: opts.pop(k) for k in _SPEC_FIELDS if k in opts}
    if start is not None:
        return ChildSpec(child_id, (start, ()), **fields)
    return ChildSpec(child_id, (_start_with, (child_id, tuple(sorted(opts.items())))), **fields)


def _start_with(tag: Any, opts: tuple[tuple[str, Any], ...], *extra: Any) -> Pid | None:
    return start_worker(tag, *extra, **dict(opts))


def crash(pid: Pid, reason: Any = "crashed") -> None:
    """Make a scripted child exit with ``reason`` (by itself, as if its code failed)."""
    send(pid, ("$crash", reason))


def kill(pid: Pid) -> None:
    """Kill a process (untrappable; it dies with ``killed``)."""
    exit(pid, "kill")


def call_child(pid: Pid | str, request: Any, timeout: float = 5.0) -> Any:
    """A minimal call to a scripted child; raises ``StartError`` never, ``RuntimeError``
    if the child is gone or silent."""
    ref = make_ref()
    mon = monitor(pid)
    send(pid, ("$call", _self(), ref, request))
    msg = receive(lambda m: (isinstance(m, tuple) and len(m) == 2 and m[0] == ref)
                  or (m.__class__ is Down and m.ref == mon), timeout, default=None)
    demonitor(mon, flush=True)
    if msg is None or msg.__class__ is Down:
        raise RuntimeError(f"scripted child {pid!r} did not answer {request!r}: {msg!r}")
    return msg[1]


def ping(pid: Pid | str) -> Any:
    """``call_child(pid, "ping")``: returns ``("pong", tag)``."""
    return call_child(pid, "ping")


def whereis_child(sup: Any, child_id: Any) -> Pid | None:
    """The pid of the child ``child_id`` of a supervisor (None if not running)."""
    for row in which_children(sup):
        if row.id == child_id:
            return row.pid if isinstance(row.pid, Pid) else None
    return None


def flaky(failures: int, reason: Any = "start_failed", *args: Any, **kwargs: Any) -> Any:
    """A start function that fails its first ``failures`` calls with
    ``StartError(reason)`` and then calls ``start_worker(*args, **kwargs)``.

    The counter lives in the closure (functions pass strict mode's immutability check),
    so the same starter may be put in a child spec and restarted many times.
    """
    remaining = failures

    def start(*extra: Any) -> Pid | None:
        nonlocal remaining
        if remaining > 0:
            remaining -= 1
            raise StartError(reason)
        return start_worker(*args, *extra, **kwargs)

    return start


class FaultPlan:
    """Decides, per child tag, whether the next starts fail: for state-machine tests.

    ``plan.fail_next(tag, n)`` makes the next ``n`` starts of ``tag`` fail;
    ``plan.starter(tag, **opts)`` is the start function to put in the child spec (a
    closure over the plan); ``plan.started`` counts successful starts per tag.
    """

    def __init__(self) -> None:
        self.failures: dict[Any, int] = {}
        self.started: dict[Any, int] = {}

    def fail_next(self, tag: Any, n: int = 1) -> None:
        self.failures[tag] = self.failures.get(tag, 0) + n

    def starter(self, tag: Any, start: Callable[..., Any] = start_worker, **opts: Any) -> Any:
        plan = self

        def start_fn(*extra: Any) -> Any:
            if plan.failures.get(tag, 0) > 0:
                plan.failures[tag] -= 1
                raise StartError(("planned_failure", tag))
            pid = start(tag, *extra, **opts)
            plan.started[tag] = plan.started.get(tag, 0) + 1
            return pid

        return start_fn




class ScriptedSupervisor(Supervisor):
    """A supervisor whose ``init`` returns its argument: ``(flags, specs)``, so a test
    writes ``supervisor.start_link(ScriptedSupervisor, (SupFlags(...), [specs]))``."""

    def init(self, arg: Any) -> Any:
        return arg
