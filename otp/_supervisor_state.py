"""The supervisor's private state and the logic of its strategies (``otp.supervisor``).

Everything here runs inside the supervisor process, called from its gen_server
callbacks; the records are never sent anywhere, so they are plain mutable objects.
Invariants the code relies on:

- the kernel delivers the EXIT of a linked process *before* its Down, so after the
  Down of a child its EXIT (if any) is already queued and ``unlink_flush`` finds it;
- a retry (``TRY_AGAIN``) goes to the back of the mailbox, behind requests already
  queued, which are therefore served between two restart attempts (S3);
- ``static`` children keep start order in ``children``; dynamic ones keep it in
  ``dyn`` (a dict, insertion ordered), under a serial that survives restarts.
"""

from __future__ import annotations

import heapq
import logging
import types
from collections.abc import Iterable, Mapping
from typing import Any

from otp._supervisor_spec import (
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
from otp.errors import BadArg, StartError, SupervisorError
from otp.gen_server import Ignore
from otp.logger import log_report
from otp.process import (
    Down,
    Exit,
    Pid,
    cancel_timer,
    exit,
    is_alive,
    make_ref,
    monitor,
    receive,
    send,
    send_after,
    unlink,
)
from otp.process import now as clock_now
from otp.process import self as _self

__all__ = ["BACKOFF", "TRY_AGAIN", "Child", "State", "split_init"]

log = logging.getLogger("otp.report")
ERROR = logging.ERROR
DEBUG = logging.DEBUG
_info = tuple.__new__

TRY_AGAIN = "$sup_try_again"
BACKOFF = "$sup_backoff"


class Child:
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


class State:
    """The supervisor's state: its children, flags and restart window.

    ``mode`` is ``"static"`` (a list of children with ids, in start order),
    ``"simple"`` (``simple_one_for_one``: one template spec) or ``"dynamic"``
    (``DynamicSupervisor``). Dynamic children live in ``dyn``, keyed by a serial number
    in start order (the same key while restarting, when they have no pid).
    """

    def __init__(self, module: Any, arg: Any, parent: Pid | None) -> None:
        self.module = module
        self.arg = arg
        self.parent = parent
        self.name: Any = None
        self.mode = "static"
        self.strategy = "one_for_one"
        self.window = RestartWindow(3, 5.0)
        self.auto_shutdown = "never"
        self.children: list[Child] = []
        self.by_id: dict[Any, Child] = {}
        self.by_pid: dict[Pid, Child] = {}
        self.dyn: dict[int, Child] = {}
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

    def report(self, context: str, reason: Any, child: Child, pid: Pid | None = None) -> None:
        # Once per restart, so log_report: the report (and the record) are built only
        # if a handler will see them, and nothing is formatted on this path.
        log_report(log, ERROR, "supervisor %r: %s of child %r: %r",
                   (self.name, context, child.spec.id, reason), self.report_fields, context,
                   reason, child, pid if pid is not None else child.pid)  # fmt: skip

    def report_fields(self, context: str, reason: Any, child: Child, pid: Pid | None
                      ) -> dict[str, Any]:
        spec = child.spec
        offender = {"pid": pid, "id": spec.id, "start": spec.start[0], "args": child.args,
                    "restart": spec.restart, "significant": spec.significant,
                    "shutdown": spec.shutdown, "type": spec.type}  # fmt: skip
        return {"label": "supervisor_report", "supervisor": self.name,
                "errorContext": context, "reason": reason, "offender": offender}

    def progress(self, child: Child) -> None:
        # Progress reports are DEBUG: an OTP node hides them by default (its logger
        # level is notice), and so does a node logging at Python's usual INFO. The
        # caller checks the level (once per start).
        log.debug(
            "supervisor %r started child %r: %r", self.name, child.spec.id, child.pid,
            extra={"report": {"label": "supervisor:progress", "supervisor": self.name,
                              "started": {"pid": child.pid, "id": child.spec.id,
                                          "type": child.spec.type}}},
        )  # fmt: skip

    # --- starting --------------------------------------------------------------------

    def start(self, child: Child) -> tuple[bool, Any]:
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
        if child.spec.backoff is not None:  # read only to reset a back-off
            child.started_at = clock_now()
        self.by_pid[pid] = child
        if log.isEnabledFor(DEBUG):
            self.progress(child)
        return True, pid

    def init_children(self, specs: list[ChildSpec]) -> Any:
        """Start the static children in order (S1); the failure reason or None."""
        for spec in specs:
            child = Child(spec, self.next_serial())
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
        restart = spec.restart
        if restart == "permanent" or (restart == "transient" and not is_clean_exit(reason)):
            self.report("child_terminated", reason, child, pid)
            if spec.backoff is not None and (
                clock_now() - child.started_at >= spec.backoff.max
            ):
                child.attempt = 0
            return self.restart(child)
        if not is_clean_exit(reason):
            self.report("child_terminated", reason, child, pid)
        self.forget(child)
        return self.auto_shutdown_ok(child)

    def forget(self, child: Child) -> None:
        """A child that will not be restarted: drop temporary and dynamic ones, keep the
        spec of the others (OTP's ``del_child``)."""
        child.pid = None
        child.restarting = False
        self.clear_timer(child)
        if self.mode != "static":
            self.dyn.pop(child.serial, None)
        elif child.spec.restart == "temporary":
            self.remove(child)

    def remove(self, child: Child) -> None:
        self.children.remove(child)
        del self.by_id[child.spec.id]

    def auto_shutdown_ok(self, child: Child) -> bool:
        if self.auto_shutdown == "never" or not child.spec.significant:
            return True
        if self.auto_shutdown == "any_significant":
            return False
        if self.mode == "simple":
            return bool(self.dyn)  # all dynamic children share the significant spec
        return any(c.spec.significant and (c.pid is not None or c.restarting)
                   for c in self.children)  # fmt: skip

    def clear_timer(self, child: Child) -> None:
        if child.timer is not None:
            cancel_timer(child.timer[0])
            child.timer = None

    # --- restarting ------------------------------------------------------------------

    def restart(self, child: Child) -> bool:
        """Count a restart (S2), then restart by strategy; False: intensity exceeded."""
        if not self.window.add(clock_now()):
            self.report("shutdown", "reached_max_restart_intensity", child)
            self.forget(child)
            return False
        group = self.mode == "static" and self.strategy != "one_for_one"
        backoff = child.spec.backoff
        if backoff is None:
            if group:
                self.stop_group(child)
            self.start_group(child)
            return True
        if group:
            self.stop_group(child)
        child.restarting = True
        delay = backoff.delay(child.attempt)
        child.attempt += 1
        token = make_ref()
        ref = send_after(delay, _self(), (BACKOFF, child.serial, token))
        child.timer = (ref, token)
        return True

    def stop_group(self, child: Child) -> None:
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

    def start_group(self, child: Child) -> None:
        """Start the child (and, for group strategies, the others in start order);
        a failed start marks that child restarting and retries it later (S3)."""
        if self.mode == "static" and self.strategy != "one_for_one":
            start = 0 if self.strategy == "one_for_all" else self.children.index(child)
            group = self.children[start:]  # a copy: a temporary child may be removed
        else:
            group = [child]
        for c in group:
            if c.pid is not None:
                continue
            if c.timer is not None:
                self.clear_timer(c)
            ok, res = self.start(c)
            if not ok:
                self.report("start_error", res, c)
                c.restarting = True
                # Back to the server loop before retrying, so that requests (a stop,
                # a terminate_child) are served in between.
                _self_send((TRY_AGAIN, c.serial))
                return
            c.restarting = False
            if res is None:
                if self.mode != "static":
                    self.dyn.pop(c.serial, None)
                elif c.spec.restart == "temporary":
                    self.remove(c)

    def find_serial(self, serial: int) -> Child | None:
        if self.mode != "static":
            return self.dyn.get(serial)
        for c in self.children:
            if c.serial == serial:
                return c
        return None

    def try_again(self, serial: int) -> bool:
        child = self.find_serial(serial)
        if child is None or not child.restarting or child.pid is not None:
            return True  # stale: stopped, deleted or restarted in between
        if child.timer is not None:
            return True  # a back-off restart is already scheduled
        return self.restart(child)

    def backoff_fired(self, serial: int, token: Any) -> None:
        child = self.find_serial(serial)
        if child is None or child.timer is None or child.timer[1] != token:
            return
        child.timer = None
        if child.pid is None:
            self.start_group(child)

    # --- stopping --------------------------------------------------------------------

    def shutdown(self, child: Child) -> None:
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

    def terminate_static(self, children: list[Child]) -> None:
        for c in reversed(children):
            self.clear_timer(c)
            if c.pid is not None:
                self.shutdown(c)

    def terminate_dynamic(self) -> None:
        """Stop every dynamic child at once (S7): signal all, then wait, killing each
        one whose shutdown time has passed. Linear in the number of children: the
        deadlines wait in a heap, and each child's EXIT is queued just before its Down."""
        t = clock_now()
        pending: dict[Any, tuple[Child, Pid]] = {}
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
                    heapq.heappush(deadlines, (t + sd, c.serial, ref))

        def is_down(m: Any) -> bool:
            return m.__class__ is Down and m.ref in pending

        while pending:
            while deadlines and deadlines[0][2] not in pending:
                heapq.heappop(deadlines)
            timeout = None
            if deadlines:
                timeout = max(0.0, deadlines[0][0] - clock_now())
            down = receive(is_down, timeout, default=None)
            if down is None:
                t = clock_now()
                while deadlines and deadlines[0][0] <= t:
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
            case ("which_children",):  # first: polled by whoever waits for a restart
                return self.which_children()
            case ("start_child", spec):
                return self.start_child(spec)
            case ("terminate_child", key):
                return self.terminate_child(key)
            case ("restart_child", key):
                return self.restart_child(key)
            case ("delete_child", key):
                return self.delete_child(key)
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
            child = Child(self.template, self.next_serial(), self.template.start[1] + x)
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
            child = Child(spec, self.next_serial(), self.extra_arguments + spec.start[1])
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
        child = Child(spec, self.next_serial())
        ok, res = self.start(child)
        if not ok:
            raise StartError(res)
        if res is None and spec.restart == "temporary":
            return None
        self.children.append(child)
        self.by_id[spec.id] = child
        return res

    def start_dynamic(self, child: Child) -> Pid | None:
        ok, res = self.start(child)
        if not ok:
            raise StartError(res)
        if res is not None:
            self.dyn[child.serial] = child
        return res

    def find(self, key: Any) -> Child:
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
        child = self.stopped_child(key)
        ok, res = self.start(child)
        if not ok:
            raise StartError(res)
        return res

    def stopped_child(self, key: Any) -> Child:
        """The child ``key``, which must be neither running nor being restarted."""
        child = self.find(key)
        if child.restarting:
            raise SupervisorError("restarting", f"child {key!r} is being restarted")
        if child.pid is not None:
            raise SupervisorError("running", f"child {key!r} is running as {child.pid!r}",
                                  pid=child.pid)
        return child

    def not_restartable(self, key: Any) -> None:
        what = "simple_one_for_one" if self.mode == "simple" else "dynamic"
        raise SupervisorError(
            what, f"a {what} supervisor keeps no spec per child to restart or delete ({key!r})"
        )

    def delete_child(self, key: Any) -> None:
        if self.mode != "static":
            self.not_restartable(key)
        self.remove(self.stopped_child(key))

    def which_children(self) -> tuple[ChildInfo, ...]:
        # Asked in a loop by whoever waits for a restart: no per-row function calls
        # (tuple.__new__ is ChildInfo's own constructor, in C).
        rows = []
        static = self.mode == "static"
        for c in self.children if static else self.dyn.values():
            spec = c.spec
            rows.append(_info(ChildInfo, (spec.id if static else None,
                                          "restarting" if c.restarting else c.pid,
                                          spec.type, spec.modules)))  # fmt: skip
        return tuple(rows)

    def count_children(self) -> ChildCounts:
        if self.mode == "simple":
            assert self.template is not None
            n = len(self.dyn)
            active = sum(1 for c in self.dyn.values() if c.pid is not None)
            sup = self.template.type == "supervisor"
            return ChildCounts(1, active, n if sup else 0, 0 if sup else n)
        kids: Iterable[Child] = self.children if self.mode == "static" else self.dyn.values()
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
        """An immutable view for ``sys.get_status`` and crash reports (a module object
        in a child's ``modules`` shows as its name, as OTP shows a module atom)."""
        return (("supervisor", self.name), ("module", self.module), ("mode", self.mode),
                ("strategy", self.strategy), ("restarts", len(self.window)),
                ("children", tuple(map(_status_row, self.which_children()))))  # fmt: skip

    # --- code change -----------------------------------------------------------------

    def code_change(self, module: Any) -> None:
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
        flags, specs = split_init(result)
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
                child = Child(spec, self.next_serial())
                self.children.append(child)
                self.by_id[spec.id] = child


def _status_row(row: ChildInfo) -> ChildInfo:
    mods = row.modules
    if mods.__class__ is tuple and any(isinstance(m, types.ModuleType) for m in mods):
        names = tuple(m.__name__ if isinstance(m, types.ModuleType) else m for m in mods)
        return row._replace(modules=names)
    return row


def _self_send(msg: Any) -> None:
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


def split_init(result: Any) -> tuple[SupFlags, list[Any]]:
    if not (isinstance(result, tuple) and len(result) == 2):
        raise BadArg(f"Supervisor.init: expected (SupFlags(...), [child specs]) or Ignore(), "
                     f"got: {result!r}")
    flags, specs = result
    if isinstance(flags, Mapping):
        flags = SupFlags(**flags)
    if not isinstance(flags, SupFlags):
        raise BadArg(f"Supervisor.init: expected SupFlags(...) as flags, got: {flags!r}")
    return flags, specs
