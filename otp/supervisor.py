"""Supervisors: processes that start, watch, restart and stop other processes.

A supervisor keeps its children running. It starts them in order, restarts them when
they die (how, and which ones, is its *strategy*), gives up when they die too often
(its *restart intensity*), and stops them in reverse order when it stops itself.
Supervisors nest, which makes a supervision tree::

    import otp
    from otp import gen_server, supervisor
    from otp.gen_server import GenServer, Ok, Reply
    from otp.supervisor import ChildSpec, SupFlags, Supervisor

    class Counter(GenServer):
        def init(self, start):
            return Ok(start)
        def handle_call(self, request, from_, n):
            return Reply(n, n + 1)

    class App(Supervisor):
        def init(self, arg):
            return SupFlags(strategy="one_for_one", intensity=3, period=5.0), [
                ChildSpec(id="counter", start=(gen_server.start_link, (Counter, 0))),
                {"id": "other", "start": (gen_server.start_link, (Counter, 100))},
                (Counter, 7),                        # Counter.child_spec(7), id Counter
            ]

    def main():
        sup = supervisor.start_link(App, None, name="app")
        kids = {c.id: c.pid for c in supervisor.which_children(sup)}
        assert gen_server.call(kids["counter"], "next") == 0
        gen_server.stop(kids["counter"], "crash")   # an abnormal exit: restarted
        new = {c.id: c.pid for c in supervisor.which_children(sup)}["counter"]
        assert new != kids["counter"] and gen_server.call(new, "next") == 0
        counts = supervisor.count_children(sup)     # ChildCounts(specs=3, active=3, ...)
        supervisor.stop(sup)                        # children stop in reverse order
        return counts

    otp.run(main)

Client API (each a call to the supervisor, which answers between restarts):

===============================  ==========================================================
``start_link(cls, arg, name=)``  start a supervisor; ``cls.init(arg)`` gives flags and specs
``start_child(sup, spec)``       add and start a child (``simple_one_for_one``: extra args)
``terminate_child(sup, id)``     stop a child, keep its spec (a pid for dynamic children)
``restart_child(sup, id)``       start a stopped child again from its kept spec
``delete_child(sup, id)``        forget the spec of a stopped child
``which_children(sup)``          ``[ChildInfo(id, pid | "restarting" | None, type, modules)]``
``count_children(sup)``          ``ChildCounts(specs, active, supervisors, workers)``
``get_childspec(sup, id)``       the ``ChildSpec`` of a child
===============================  ==========================================================

Strategies: ``one_for_one`` restarts only the child that died; ``one_for_all``
stops all the others (reverse start order) and starts them all again; ``rest_for_one``
does that for the child and those started after it; ``simple_one_for_one`` has one
spec and many children added by ``start_child(sup, extra_args)``. ``DynamicSupervisor``
(Elixir's) takes full specs in ``start_child`` and caps them with ``max_children``.

Failure semantics (OTP's, see SEMANTICS.md S1-S10):

- ``start_link`` returns once every child has started; if one fails, those started are
  stopped in reverse order and ``StartError(("failed_to_start_child", id, reason))``
  is raised. A bad spec fails the start with ``StartError(("start_spec", error))``;
  ``start_child`` raises the ``ChildSpecError`` itself, before anything is sent.
- Restart types: ``permanent`` always, ``transient`` only after an abnormal exit (not
  ``normal``, ``shutdown`` or ``("shutdown", x)``), ``temporary`` never.
- More than ``intensity`` restarts within ``period`` seconds (a sliding window on the
  node clock; a group restart counts once) make the supervisor stop all children and
  exit with ``shutdown``, so the failure climbs to its own supervisor.
- A restart whose start fails is retried through a message to itself, so requests are
  served in between; each retry counts against the intensity.
- Stopping a child: ``brutal_kill`` kills it; ``T`` seconds sends ``shutdown``, waits
  ``T`` seconds for it to end, then kills; None waits forever (the default for child
  supervisors). The supervisor waits on a monitor, so a child that unlinked cannot
  hang it. Dynamic children are stopped all at once, in no defined order.
- ``auto_shutdown``: with ``any_significant`` the supervisor stops when a significant
  child exits by itself; with ``all_significant`` when the last one has.
- The supervisor traps exits. An exit signal from its parent stops it, after it has
  stopped its children in reverse order.

Debugging and upgrades: a supervisor is a ``gen_server``, so ``otp.sys`` works on it.
``sys.get_status`` shows an immutable summary (flags, restarts in the window,
``which_children``); ``sys.get_state`` returns the private, mutable bookkeeping (so
strict mode refuses to send it). ``sys.change_code(sup, otp.supervisor, old_vsn,
extra=NewSupervisorClass)`` (while suspended) calls ``init`` again, of the new class
if given: flags and specs are replaced, running children keep running, new ids are
added stopped (``restart_child`` starts them), as OTP's ``code_change`` does.

Beyond OTP: ``ChildSpec(backoff=(initial, max))`` delays that child's restarts
exponentially with jitter, on the node clock (off by default: OTP restarts at once).

When not to use: a supervisor is for processes that should be *kept running*. A
one-off job whose failure the caller must learn about is better a linked or
monitored process (or a ``gen_server.call``); a pool of interchangeable workers that
can be re-created on demand is a ``DynamicSupervisor`` plus your own registry.
Keep start functions quick: the supervisor runs them itself and answers nothing
meanwhile (a child's init that calls its own supervisor deadlocks).
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from otp import gen_server
from otp._supervisor_spec import (
    Backoff,
    ChildCounts,
    ChildInfo,
    ChildSpec,
    DynamicSupFlags,
    RestartWindow,
    SupFlags,
    check_child_specs,
    check_significant,
    is_clean_exit,
    to_child_spec,
)
from otp.errors import BadArg, ChildSpecError, StartError, SupervisorError
from otp.gen_server import GenServer, Ignore, NoReply, Ok, Reply, Stop
from otp.node import current_node
from otp.process import (
    Down,
    Exit,
    Pid,
    cancel_timer,
    exit,
    is_alive,
    make_ref,
    monitor,
    process_info,
    receive,
    send_after,
    trap_exit,
    unlink,
)
from otp.process import self as _self

__all__ = [
    "Backoff",
    "ChildCounts",
    "ChildInfo",
    "ChildSpec",
    "DynamicSupFlags",
    "DynamicSupervisor",
    "SupFlags",
    "Supervisor",
    "check_child_specs",
    "count_children",
    "delete_child",
    "dynamic_supervisor_start_link",
    "get_childspec",
    "restart_child",
    "start_child",
    "start_link",
    "stop",
    "terminate_child",
    "which_children",
]

_log = logging.getLogger("otp.report")

_TRY_AGAIN = "$sup_try_again"
_BACKOFF = "$sup_backoff"


# --- the behaviour ---------------------------------------------------------------------


class Supervisor:
    """Base class of a supervisor's callback: override ``init``.

    ``init(arg)`` runs in the new supervisor process and returns
    ``(SupFlags(...), [child specs])`` or ``Ignore()`` (then ``start_link`` returns
    None). A child spec is a ``ChildSpec``, a dict with the same keys, a class with
    ``child_spec`` (``GenServer``/``Supervisor`` subclasses), or ``(cls, arg)``.
    ``init`` should have no side effects: a code change calls it again.
    """

    def init(self, arg: Any) -> Any:
        raise NotImplementedError(
            f"{type(self).__qualname__}.init(arg) must return (SupFlags(...), [child specs])"
        )

    @classmethod
    def child_spec(cls, arg: Any = None) -> ChildSpec:
        """The spec to run this supervisor under another one: id = the class,
        ``type="supervisor"``, shutdown infinity."""
        return ChildSpec(id=cls, start=(start_link, (cls, arg)), type="supervisor",
                         modules=(cls,))


class DynamicSupervisor(Supervisor):
    """Elixir's DynamicSupervisor: no children at start, each added by
    ``start_child(sup, spec)`` with its own full spec, all under ``one_for_one``.

    ``init(arg)`` returns ``DynamicSupFlags(...)`` (or ``Ignore()``). The default
    accepts ``arg`` as None, a ``DynamicSupFlags`` or a dict of its fields, so
    ``start_link(DynamicSupervisor, {"max_children": 10})`` needs no subclass.
    Children are stopped by pid (``terminate_child(sup, pid)``), all at once, in no
    defined order; ``start_child`` beyond ``max_children`` raises
    ``SupervisorError("max_children")``; ``extra_arguments`` go before each child's
    own start arguments.
    """

    def init(self, arg: Any) -> Any:
        if arg is None:
            return DynamicSupFlags()
        if isinstance(arg, DynamicSupFlags):
            return arg
        if isinstance(arg, Mapping):
            return DynamicSupFlags(**arg)
        raise BadArg(
            "DynamicSupervisor.init: expected None, DynamicSupFlags(...) or a dict of its "
            f"fields, got: {arg!r}"
        )


# --- client API ------------------------------------------------------------------------


def start_link(
    cls: type[Supervisor],
    arg: Any = None,
    *,
    name: Any = None,
    timeout: float | None = None,
) -> Pid | None:
    """Start a supervisor linked to the caller and return its pid once every child
    has started (None if ``init`` returned ``Ignore()``).

    Raises ``StartError(("failed_to_start_child", id, reason))`` when a child fails to
    start, ``StartError(("start_spec", error))`` for a bad child spec,
    ``StartError(("supervisor_data", error))`` for bad flags.
    """
    if not (isinstance(cls, type) and issubclass(cls, Supervisor)):
        raise BadArg(f"supervisor.start_link expects a Supervisor subclass, got: {cls!r}")
    try:
        pid: Pid | None = gen_server.start_link(
            _SupServer, (cls, arg, _self()), name=name, timeout=timeout
        )
    except StartError as e:
        r = e.reason
        # The supervisor stops with ("shutdown", ...) so that its own failure to start
        # is not logged as a crash; the caller gets the failure itself.
        if isinstance(r, tuple) and len(r) == 2 and r[0] == "shutdown":
            raise StartError(r[1]) from None
        raise
    return pid


def dynamic_supervisor_start_link(
    *,
    max_children: int | None = None,
    extra_arguments: tuple[Any, ...] = (),
    intensity: int = 3,
    period: float = 5.0,
    name: Any = None,
) -> Pid | None:
    """Start a ``DynamicSupervisor`` with these flags, linked to the caller."""
    flags = DynamicSupFlags(intensity=intensity, period=period, max_children=max_children,
                            extra_arguments=extra_arguments)
    return start_link(DynamicSupervisor, flags, name=name)


def _call(sup: Any, request: Any) -> Any:
    status, value = gen_server.call(sup, request, timeout=None)
    if status == "error":
        raise value
    return value


def start_child(sup: Any, spec: Any) -> Pid | None:
    """Add a child and start it; returns its pid (None if its start returned None).

    ``spec`` is a child spec (``ChildSpec``, dict, class or ``(cls, arg)``), checked
    here first (``ChildSpecError``). For a ``simple_one_for_one`` supervisor it is a
    tuple of extra arguments appended to the spec's own. Raises
    ``SupervisorError("already_started", pid=...)`` if the id runs,
    ``SupervisorError("already_present")`` if its spec is kept but not running,
    ``SupervisorError("max_children")`` (``DynamicSupervisor``), ``StartError(reason)``
    if the child fails to start.
    """
    if spec.__class__ is not tuple or (
        len(spec) == 2 and isinstance(spec[0], type) and hasattr(spec[0], "child_spec")
    ):
        spec = to_child_spec(spec)  # a plain tuple is simple_one_for_one's extra args
    return _call(sup, ("start_child", spec))


def terminate_child(sup: Any, child: Any) -> None:
    """Stop a child (by id; by pid for dynamic children). Its spec is kept unless it
    is temporary or dynamic. ``SupervisorError("not_found")`` if there is no such child."""
    _call(sup, ("terminate_child", child))


def restart_child(sup: Any, child_id: Any) -> Pid | None:
    """Start a stopped child again from its kept spec. ``SupervisorError`` with
    ``"running"``, ``"restarting"`` or ``"not_found"``; ``StartError`` if it fails."""
    return _call(sup, ("restart_child", child_id))


def delete_child(sup: Any, child_id: Any) -> None:
    """Forget the spec of a stopped child. ``SupervisorError`` with ``"running"``,
    ``"restarting"`` or ``"not_found"``."""
    _call(sup, ("delete_child", child_id))


def which_children(sup: Any) -> list[ChildInfo]:
    """One ``ChildInfo(id, pid, type, modules)`` per child, in start order; ``pid``
    is ``"restarting"`` or None when the child is not running."""
    return list(_call(sup, ("which_children",)))


def count_children(sup: Any) -> ChildCounts:
    """``ChildCounts(specs, active, supervisors, workers)``."""
    return _call(sup, ("count_children",))


def get_childspec(sup: Any, child: Any) -> ChildSpec:
    """The ``ChildSpec`` of a child (by id, or pid for dynamic children)."""
    return _call(sup, ("get_childspec", child))


def stop(sup: Any, reason: Any = "normal", timeout: float | None = None) -> None:
    """Stop a supervisor (its children first, in reverse start order) and wait for it."""
    gen_server.stop(sup, reason, timeout)


# --- the server ------------------------------------------------------------------------


class _Child:
    """One child's record, owned by the supervisor process (never sent anywhere)."""

    __slots__ = ("args", "attempt", "pid", "restarting", "serial", "spec", "started_at",
                 "timer")  # fmt: skip

    def __init__(self, spec: ChildSpec, serial: int, args: tuple[Any, ...] | None = None):
        self.spec = spec
        self.serial = serial
        self.args: tuple[Any, ...] = spec.start[1] if args is None else args
        self.pid: Pid | None = None
        self.restarting = False
        self.timer: tuple[Any, Any] | None = None  # (timer ref, token) of a back-off
        self.attempt = 0
        self.started_at = 0.0

    def __repr__(self) -> str:
        state = "restarting" if self.restarting else self.pid
        return f"<child {self.spec.id!r} {state}>"


class _State:
    """The supervisor's state: its children, flags and restart window.

    ``mode`` is ``"static"`` (a list of children with ids, in start order),
    ``"simple"`` (``simple_one_for_one``: one template spec) or ``"dynamic"``
    (``DynamicSupervisor``). Dynamic children live in ``dyn``, keyed by a serial number
    in start order (the same key while restarting, when they have no pid).
    """

    def __init__(self, module: type[Supervisor], arg: Any, parent: Pid | None) -> None:
        self.module = module
        self.arg = arg
        self.parent = parent
        self.name: Any = None
        self.mode = "static"
        self.strategy = "one_for_one"
        self.window = RestartWindow(3, 5.0)
        self.auto_shutdown = "never"
        self.children: list[_Child] = []
        self.by_id: dict[Any, _Child] = {}
        self.by_pid: dict[Pid, _Child] = {}
        self.dyn: dict[int, _Child] = {}
        self.template: ChildSpec | None = None
        self.max_children: int | None = None
        self.extra_arguments: tuple[Any, ...] = ()
        self._serial = 0

    def __repr__(self) -> str:
        return (f"<supervisor {self.name!r} {self.mode} {self.strategy} "
                f"children={len(self.children) + len(self.dyn)}>")

    def next_serial(self) -> int:
        self._serial += 1
        return self._serial

    # --- reports ---------------------------------------------------------------------

    def report(self, context: str, reason: Any, child: _Child, pid: Pid | None = None) -> None:
        if not _log.isEnabledFor(logging.ERROR):
            return
        spec = child.spec
        offender = {"pid": pid if pid is not None else child.pid, "id": spec.id,
                    "start": spec.start[0], "args": child.args, "restart": spec.restart,
                    "significant": spec.significant, "shutdown": spec.shutdown,
                    "type": spec.type}  # fmt: skip
        _log.error(
            "supervisor %r: %s of child %r: %r", self.name, context, spec.id, reason,
            extra={"report": {"label": "supervisor_report", "supervisor": self.name,
                              "errorContext": context, "reason": reason,
                              "offender": offender}},
        )  # fmt: skip

    def progress(self, child: _Child) -> None:
        if _log.isEnabledFor(logging.INFO):
            _log.info(
                "supervisor %r started child %r: %r", self.name, child.spec.id, child.pid,
                extra={"report": {"label": "supervisor:progress", "supervisor": self.name,
                                  "started": {"pid": child.pid, "id": child.spec.id,
                                              "type": child.spec.type}}},
            )  # fmt: skip

    # --- starting --------------------------------------------------------------------

    def start(self, child: _Child) -> tuple[bool, Any]:
        """Run the child's start function here; (True, pid | None) or (False, reason)."""
        fn = child.spec.start[0]
        try:
            pid = fn(*child.args)
        except StartError as e:
            return False, e.reason
        except Exception as e:  # a start function with a bug: its exception is the reason
            return False, e
        if pid is None:
            return True, None
        if pid.__class__ is not Pid:
            return False, ("bad_return_value", repr(pid))
        child.pid = pid
        child.restarting = False
        child.started_at = current_node().clock.now()
        self.by_pid[pid] = child
        self.progress(child)
        return True, pid

    def init_children(self, specs: list[ChildSpec]) -> Any:
        """Start the static children in order (S1); the failure reason or None."""
        for spec in specs:
            child = _Child(spec, self.next_serial())
            ok, res = self.start(child)
            if not ok:
                self.report("start_error", res, child)
                self.terminate_static(self.children)
                return ("failed_to_start_child", spec.id, res)
            if res is None and spec.restart == "temporary":
                continue
            self.children.append(child)
            self.by_id[spec.id] = child
        return None

    # --- a child ended ---------------------------------------------------------------

    def child_exited(self, pid: Pid, reason: Any) -> bool:
        """Handle the EXIT of a child (S5); False when the supervisor must shut down."""
        child = self.by_pid.pop(pid, None)
        if child is None:
            return True  # not (or no longer) ours: a child we stopped and flushed already
        child.pid = None
        spec = child.spec
        clean = is_clean_exit(reason)
        if spec.restart == "permanent" or (spec.restart == "transient" and not clean):
            self.report("child_terminated", reason, child, pid)
            if spec.backoff is not None and (
                current_node().clock.now() - child.started_at >= spec.backoff.max
            ):
                child.attempt = 0
            return self.restart(child)
        if not clean:
            self.report("child_terminated", reason, child, pid)
        self.forget(child)
        return self.auto_shutdown_ok(child)

    def forget(self, child: _Child) -> None:
        """A child that will not be restarted: drop temporary and dynamic ones, keep the
        spec of the others (OTP's ``del_child``)."""
        child.pid = None
        child.restarting = False
        self.clear_timer(child)
        if self.mode != "static":
            self.dyn.pop(child.serial, None)
        elif child.spec.restart == "temporary":
            self.remove(child)

    def remove(self, child: _Child) -> None:
        self.children.remove(child)
        del self.by_id[child.spec.id]

    def auto_shutdown_ok(self, child: _Child) -> bool:
        if self.auto_shutdown == "never" or not child.spec.significant:
            return True
        if self.auto_shutdown == "any_significant":
            return False
        if self.mode == "simple":
            return bool(self.dyn)  # all dynamic children share the significant spec
        return any(c.spec.significant and (c.pid is not None or c.restarting)
                   for c in self.children)  # fmt: skip

    def clear_timer(self, child: _Child) -> None:
        if child.timer is not None:
            cancel_timer(child.timer[0])
            child.timer = None

    # --- restarting ------------------------------------------------------------------

    def restart(self, child: _Child) -> bool:
        """Count a restart (S2), then restart by strategy; False: intensity exceeded."""
        if not self.window.add(current_node().clock.now()):
            self.report("shutdown", "reached_max_restart_intensity", child)
            self.forget(child)
            return False
        backoff = child.spec.backoff
        if backoff is None:
            self.stop_group(child)
            self.start_group(child)
            return True
        self.stop_group(child)
        child.restarting = True
        delay = backoff.delay(child.attempt)
        child.attempt += 1
        token = make_ref()
        ref = send_after(delay, _self(), (_BACKOFF, child.serial, token))
        child.timer = (ref, token)
        return True

    def stop_group(self, child: _Child) -> None:
        """Stop the siblings a group restart takes down (S4), in reverse start order;
        temporary ones stopped this way are dropped."""
        if self.mode != "static" or self.strategy == "one_for_one":
            return
        if self.strategy == "one_for_all":
            group = [c for c in self.children if c is not child]
        else:  # rest_for_one
            group = self.children[self.children.index(child) + 1:]
        self.terminate_static(group)
        for c in group:
            c.restarting = False
            self.clear_timer(c)
            if c.spec.restart == "temporary":
                self.remove(c)

    def start_group(self, child: _Child) -> None:
        """Start the child (and, for group strategies, the others in start order);
        a failed start marks that child restarting and retries it later (S3)."""
        if self.mode == "static" and self.strategy != "one_for_one":
            start = 0 if self.strategy == "one_for_all" else self.children.index(child)
            group = self.children[start:]
        else:
            group = [child]
        for c in list(group):
            if c.pid is not None:
                continue
            self.clear_timer(c)
            ok, res = self.start(c)
            if not ok:
                self.report("start_error", res, c)
                c.restarting = True
                # Back to the server loop before retrying, so that requests (a stop,
                # a terminate_child) are served in between.
                _self_send((_TRY_AGAIN, c.serial))
                return
            c.restarting = False
            if res is None:
                if self.mode != "static":
                    self.dyn.pop(c.serial, None)
                elif c.spec.restart == "temporary":
                    self.remove(c)

    def find_serial(self, serial: int) -> _Child | None:
        if self.mode != "static":
            return self.dyn.get(serial)
        for c in self.children:
            if c.serial == serial:
                return c
        return None

    def try_again(self, serial: int) -> bool:
        child = self.find_serial(serial)
        if child is None or not child.restarting or child.pid is not None:
            return True
        return self.restart(child)

    def backoff_fired(self, serial: int, token: Any) -> None:
        child = self.find_serial(serial)
        if child is None or child.timer is None or child.timer[1] != token:
            return
        child.timer = None
        if child.pid is None:
            self.start_group(child)

    # --- stopping --------------------------------------------------------------------

    def shutdown(self, child: _Child) -> None:
        """Stop one child as its spec says (S6) and report an unexpected exit reason."""
        pid = child.pid
        if pid is None:
            return
        self.by_pid.pop(pid, None)
        child.pid = None
        spec = child.spec
        ref = monitor(pid)

        def is_down(m: Any) -> bool:
            return m.__class__ is Down and m.ref == ref

        if spec.shutdown == "brutal_kill":
            exit(pid, "kill")
            down = receive(is_down)
        else:
            exit(pid, "shutdown")
            down = receive(is_down, spec.shutdown, default=None)
            if down is None:
                exit(pid, "kill")
                down = receive(is_down)
        reason = _unlink_flush(pid, down.reason)
        if not _expected_shutdown(spec, reason):
            self.report("shutdown_error", reason, child, pid)

    def terminate_static(self, children: list[_Child]) -> None:
        for c in reversed(children):
            self.clear_timer(c)
            if c.pid is not None:
                self.shutdown(c)

    def terminate_dynamic(self) -> None:
        """Stop every dynamic child at once (S7): signal all, then wait, killing each
        one whose shutdown time has passed. Linear in the number of children: the
        deadlines wait in a heap, and each child's EXIT is queued just before its Down."""
        now = current_node().clock.now()
        pending: dict[Any, tuple[_Child, Pid]] = {}
        deadlines: list[tuple[float, int, Any]] = []
        for c in list(self.dyn.values()):
            self.clear_timer(c)
            pid = c.pid
            if pid is None:
                continue
            self.by_pid.pop(pid, None)
            c.pid = None
            ref = monitor(pid)
            pending[ref] = (c, pid)
            sd = c.spec.shutdown
            if sd == "brutal_kill":
                exit(pid, "kill")
            else:
                exit(pid, "shutdown")
                if sd is not None:
                    heapq.heappush(deadlines, (now + sd, c.serial, ref))

        def is_down(m: Any) -> bool:
            return m.__class__ is Down and m.ref in pending

        while pending:
            while deadlines and deadlines[0][2] not in pending:
                heapq.heappop(deadlines)
            timeout = None
            if deadlines:
                timeout = max(0.0, deadlines[0][0] - current_node().clock.now())
            down = receive(is_down, timeout, default=None)
            if down is None:
                now = current_node().clock.now()
                while deadlines and deadlines[0][0] <= now:
                    _, _, ref = heapq.heappop(deadlines)
                    if ref in pending:
                        exit(pending[ref][1], "kill")
                continue
            c, pid = pending.pop(down.ref)
            reason = _unlink_flush(pid, down.reason)
            if not _expected_shutdown(c.spec, reason):
                self.report("shutdown_error", reason, c, pid)
        self.dyn.clear()

    def terminate_all(self) -> None:
        if self.mode == "static":
            self.terminate_static(self.children)
        else:
            self.terminate_dynamic()

    # --- requests --------------------------------------------------------------------

    def handle_request(self, request: Any) -> Any:
        """Serve one client request; returns the value or raises the error to send."""
        match request:
            case ("start_child", spec):
                return self.start_child(spec)
            case ("terminate_child", key):
                return self.terminate_child(key)
            case ("restart_child", key):
                return self.restart_child(key)
            case ("delete_child", key):
                return self.delete_child(key)
            case ("which_children",):
                return self.which_children()
            case ("count_children",):
                return self.count_children()
            case ("get_childspec", key):
                return self.get_childspec(key)
        raise BadArg(f"supervisor: unknown request {request!r}")

    def start_child(self, x: Any) -> Pid | None:
        if self.mode == "simple":
            if not isinstance(x, tuple):
                raise BadArg("start_child on a simple_one_for_one supervisor expects a tuple "
                             f"of extra start arguments, got: {x!r}")
            assert self.template is not None
            child = _Child(self.template, self.next_serial(), self.template.start[1] + x)
            return self.start_dynamic(child)
        spec = to_child_spec(x)
        if self.mode == "dynamic":
            check_significant(spec, "never")
            if self.max_children is not None and len(self.dyn) >= self.max_children:
                raise SupervisorError(
                    "max_children",
                    f"start_child: the supervisor already has max_children="
                    f"{self.max_children} children",
                )
            child = _Child(spec, self.next_serial(), self.extra_arguments + spec.start[1])
            return self.start_dynamic(child)
        check_significant(spec, self.auto_shutdown)
        old = self.by_id.get(spec.id)
        if old is not None:
            if old.pid is not None:
                raise SupervisorError(
                    "already_started", f"start_child: child {spec.id!r} is already running "
                    f"as {old.pid!r}", pid=old.pid)  # fmt: skip
            raise SupervisorError(
                "already_present", f"start_child: a child with id {spec.id!r} is already "
                "present (not running); use restart_child or delete_child")  # fmt: skip
        child = _Child(spec, self.next_serial())
        ok, res = self.start(child)
        if not ok:
            raise StartError(res)
        if res is None and spec.restart == "temporary":
            return None
        self.children.append(child)
        self.by_id[spec.id] = child
        return res

    def start_dynamic(self, child: _Child) -> Pid | None:
        ok, res = self.start(child)
        if not ok:
            raise StartError(res)
        if res is not None:
            self.dyn[child.serial] = child
        return res

    def find(self, key: Any) -> _Child:
        if self.mode == "static":
            child = self.by_id.get(key)
            if child is None:
                raise SupervisorError("not_found", f"supervisor has no child with id {key!r}")
            return child
        if key.__class__ is not Pid:
            self.not_static(key)
        child = self.by_pid.get(key)
        if child is None:
            raise SupervisorError("not_found", f"{key!r} is not a child of this supervisor")
        return child

    def not_static(self, key: Any) -> None:
        what = "simple_one_for_one" if self.mode == "simple" else "dynamic"
        raise SupervisorError(
            what if self.mode == "simple" else "not_found",
            f"a {what} supervisor identifies its children by pid, got: {key!r}",
        )

    def terminate_child(self, key: Any) -> None:
        if self.mode == "simple" and key.__class__ is Pid and key not in self.by_pid:
            if not is_alive(key):
                return None  # OTP: a dead pid counts as terminated
        child = self.find(key)
        self.shutdown(child)
        self.forget(child)
        return None

    def restart_child(self, key: Any) -> Pid | None:
        if self.mode != "static":
            self.not_restartable(key)
        child = self.find(key)
        if child.restarting:
            raise SupervisorError("restarting", f"child {key!r} is being restarted")
        if child.pid is not None:
            raise SupervisorError("running", f"child {key!r} is running as {child.pid!r}",
                                  pid=child.pid)
        ok, res = self.start(child)
        if not ok:
            raise StartError(res)
        return res

    def not_restartable(self, key: Any) -> None:
        what = "simple_one_for_one" if self.mode == "simple" else "dynamic"
        raise SupervisorError(
            what, f"a {what} supervisor keeps no spec per child to restart or delete ({key!r})"
        )

    def delete_child(self, key: Any) -> None:
        if self.mode != "static":
            self.not_restartable(key)
        child = self.find(key)
        if child.restarting:
            raise SupervisorError("restarting", f"child {key!r} is being restarted")
        if child.pid is not None:
            raise SupervisorError("running", f"child {key!r} is running as {child.pid!r}",
                                  pid=child.pid)
        self.remove(child)

    def which_children(self) -> tuple[ChildInfo, ...]:
        def row(c: _Child, id_: Any) -> ChildInfo:
            pid: Any = "restarting" if c.restarting else c.pid
            return ChildInfo(id_, pid, c.spec.type, c.spec.modules)

        if self.mode == "static":
            return tuple(row(c, c.spec.id) for c in self.children)
        return tuple(row(c, None) for c in self.dyn.values())

    def count_children(self) -> ChildCounts:
        if self.mode == "simple":
            assert self.template is not None
            n = len(self.dyn)
            active = sum(1 for c in self.dyn.values() if c.pid is not None)
            sup = self.template.type == "supervisor"
            return ChildCounts(1, active, n if sup else 0, 0 if sup else n)
        kids: Iterable[_Child] = self.children if self.mode == "static" else self.dyn.values()
        specs = active = sups = 0
        for c in kids:
            specs += 1
            if c.pid is not None and is_alive(c.pid):
                active += 1
            if c.spec.type == "supervisor":
                sups += 1
        return ChildCounts(specs, active, sups, specs - sups)

    def get_childspec(self, key: Any) -> ChildSpec:
        if self.mode == "simple" and key.__class__ is not Pid:
            self.not_static(key)
        return self.find(key).spec

    def summary(self) -> tuple[Any, ...]:
        """An immutable view for ``sys.get_status`` and crash reports."""
        return (("supervisor", self.name), ("module", self.module), ("mode", self.mode),
                ("strategy", self.strategy), ("restarts", len(self.window)),
                ("children", self.which_children()))  # fmt: skip

    # --- code change -----------------------------------------------------------------

    def code_change(self, module: type[Supervisor]) -> None:
        """Call ``init`` again (of ``module``, the new callback) and take its flags and
        specs: kept ids get the new spec (their process keeps running), new ids are
        added stopped. Raises on a bad return; the old state then stays."""
        result = module().init(self.arg)
        if isinstance(result, Ignore):
            return
        if self.mode == "dynamic":
            dflags = result if isinstance(result, DynamicSupFlags) else DynamicSupFlags()
            self.window.intensity, self.window.period = dflags.intensity, dflags.period
            self.max_children = dflags.max_children
            self.extra_arguments = dflags.extra_arguments
            self.module = module
            return
        flags, specs = _split_init(result)
        if (flags.strategy == "simple_one_for_one") != (self.mode == "simple"):
            raise BadArg("code_change cannot switch to or from simple_one_for_one")
        checked = check_child_specs(specs, flags.auto_shutdown)
        self.strategy = flags.strategy
        self.window.intensity, self.window.period = flags.intensity, flags.period
        self.auto_shutdown = flags.auto_shutdown
        self.module = module
        if self.mode == "simple":
            self.template = checked[0]
            return
        for spec in checked:
            old = self.by_id.get(spec.id)
            if old is not None:
                old.spec = spec
            else:
                child = _Child(spec, self.next_serial())
                self.children.append(child)
                self.by_id[spec.id] = child


def _self_send(msg: Any) -> None:
    from otp.process import send

    send(_self(), msg)


def _unlink_flush(pid: Pid, default: Any) -> Any:
    """Unlink and take the child's EXIT if it is queued (it is, if the child was still
    linked: the kernel delivers the EXIT of a link before the Down of a monitor)."""
    unlink(pid)
    msg = receive(lambda m: m.__class__ is Exit and m.pid == pid, 0, default=None)
    return default if msg is None else msg.reason


def _expected_shutdown(spec: ChildSpec, reason: Any) -> bool:
    if reason == "killed" and spec.shutdown == "brutal_kill":
        return True
    if reason == "shutdown" and spec.shutdown != "brutal_kill":
        return True
    return spec.restart != "permanent" and is_clean_exit(reason)


def _split_init(result: Any) -> tuple[SupFlags, list[Any]]:
    if not (isinstance(result, tuple) and len(result) == 2):
        raise BadArg(f"Supervisor.init: expected (SupFlags(...), [child specs]) or Ignore(), "
                     f"got: {result!r}")
    flags, specs = result
    if isinstance(flags, Mapping):
        flags = SupFlags(**flags)
    if not isinstance(flags, SupFlags):
        raise BadArg(f"Supervisor.init: expected SupFlags(...) as flags, got: {flags!r}")
    return flags, specs


class _SupServer(GenServer):
    """The gen_server callback of every supervisor; the user's ``Supervisor`` subclass
    is called from here (as OTP's ``supervisor`` module calls the user module)."""

    def init(self, arg: Any) -> Any:
        module, user_arg, parent = arg
        trap_exit(True)
        state = _State(module, user_arg, parent)
        info = process_info(_self())
        state.name = (info.registered_name if info is not None and info.registered_name
                      else _self())  # fmt: skip
        try:
            result = module().init(user_arg)
        except ChildSpecError as e:  # a ChildSpec(...) built in init with a bad field
            return Stop(("start_spec", e))
        except BadArg as e:  # SupFlags(...) / DynamicSupFlags(...) with a bad field
            return Stop(("supervisor_data", e))
        if isinstance(result, Ignore):
            return result
        if issubclass(module, DynamicSupervisor):
            if not isinstance(result, DynamicSupFlags):
                return Stop(("bad_return", (module, "init", repr(result))))
            state.mode = "dynamic"
            state.window = RestartWindow(result.intensity, result.period)
            state.max_children = result.max_children
            state.extra_arguments = result.extra_arguments
            return Ok(state)
        try:
            flags, specs = _split_init(result)
        except BadArg as e:
            return Stop(("supervisor_data", e))
        state.strategy = flags.strategy
        state.window = RestartWindow(flags.intensity, flags.period)
        state.auto_shutdown = flags.auto_shutdown
        try:
            checked = check_child_specs(specs, flags.auto_shutdown)
        except ChildSpecError as e:
            return Stop(("start_spec", e))
        if flags.strategy == "simple_one_for_one":
            if len(checked) != 1:
                return Stop(("bad_start_spec", repr(specs)))
            state.mode = "simple"
            state.template = checked[0]
            return Ok(state)
        failure = state.init_children(checked)
        if failure is not None:
            return Stop(("shutdown", failure))
        return Ok(state)

    def handle_call(self, request: Any, from_: Any, state: Any) -> Any:
        try:
            value = state.handle_request(request)
        except (SupervisorError, StartError, BadArg) as e:
            e.__traceback__ = None
            return Reply(("error", e), state)
        return Reply(("ok", value), state)

    def handle_info(self, msg: Any, state: Any) -> Any:
        if msg.__class__ is Exit:
            if msg.pid is not None and msg.pid == state.parent and msg.pid not in state.by_pid:
                return Stop(msg.reason, state)
            if not state.child_exited(msg.pid, msg.reason):
                return Stop("shutdown", state)
            return NoReply(state)
        match msg:
            case (str() as tag, int() as serial) if tag == _TRY_AGAIN:
                if not state.try_again(serial):
                    return Stop("shutdown", state)
                return NoReply(state)
            case (str() as tag, int() as serial, token) if tag == _BACKOFF:
                state.backoff_fired(serial, token)
                return NoReply(state)
        return super().handle_info(msg, state)

    def terminate(self, reason: Any, state: Any) -> None:
        if isinstance(state, _State):
            state.terminate_all()

    def format_status(self, status: dict[str, Any]) -> dict[str, Any]:
        # The state is the supervisor's private, mutable bookkeeping: show (and send,
        # for sys.get_status) an immutable summary instead.
        state = status.get("state")
        if isinstance(state, _State):
            status = {**status, "state": state.summary()}
        return status

    def code_change(self, old_vsn: Any, state: Any, extra: Any) -> Any:
        module = extra if isinstance(extra, type) and issubclass(extra, Supervisor) else None
        state.code_change(module or state.module)
        return state

