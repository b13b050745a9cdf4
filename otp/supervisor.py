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
                (Counter, 7),                        # supervisor.child_spec(Counter, 7)
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
``check_childspecs(specs)``      None if the specs are valid, else the ``ChildSpecError``
===============================  ==========================================================

Strategies: ``one_for_one`` restarts only the child that died; ``one_for_all``
stops all the others (reverse start order) and starts them all again; ``rest_for_one``
does that for the child and those started after it; ``simple_one_for_one`` has one
spec and many children added by ``start_child(sup, extra_args)``. ``DynamicSupervisor``
(Elixir's) takes full specs in ``start_child`` and caps them with ``max_children``.

Failure semantics (OTP's, see docs/semantics.md S1-S10):

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

import builtins
import copy
import types
from collections.abc import Mapping
from typing import Any, Literal

from otp import _gen, gen_server
from otp._supervisor_spec import (
    Backoff,
    ChildCounts,
    ChildInfo,
    ChildSpec,
    ChildType,
    DynamicSupFlags,
    Restart,
    RestartWindow,
    SupFlags,
    behaviour_start_link,
    check_child_specs,
    is_behaviour_class,
    to_child_spec,
)
from otp._supervisor_state import BACKOFF, TRY_AGAIN, State, split_init
from otp.errors import BadArg, ChildSpecError, StartError, SupervisorError
from otp.gen_server import GenServer, Ignore, NoReply, Ok, Reply, Stop
from otp.lowlevel import check_immutable, current_node
from otp.process import Exit, Pid, process_info, trap_exit
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
    "check_childspecs",
    "child_spec",
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


# --- the behaviour ---------------------------------------------------------------------


class Supervisor:
    """Base class of a supervisor's callback: override ``init``.

    ``init(arg)`` runs in the new supervisor process and returns
    ``(SupFlags(...), [child specs])`` or ``Ignore()`` (then ``start_link`` returns
    None). A child spec is a ``ChildSpec``, a dict with the same keys, a behaviour
    class (``GenServer``/``Supervisor`` subclass: ``child_spec(cls)``), or
    ``(cls, arg)`` (``child_spec(cls, arg)``).
    ``init`` should have no side effects: a code change calls it again.
    """

    def init(self, arg: Any) -> Any:
        raise NotImplementedError(
            f"{type(self).__qualname__}.init(arg) must return (SupFlags(...), [child specs])"
        )


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


# --- child specs of behaviour classes ----------------------------------------------------

_UNSET: Any = object()


def child_spec(
    cls: type,
    arg: Any = None,
    *,
    id: Any = _UNSET,
    restart: Restart = "permanent",
    shutdown: float | Literal["brutal_kill"] | None = _UNSET,
    type: ChildType | None = None,
    significant: bool = False,
    modules: Any = None,
    backoff: Backoff | tuple[float, float] | None = None,
) -> ChildSpec:
    """The ``ChildSpec`` that runs the behaviour class ``cls`` under a supervisor, started
    with its behaviour's ``start_link(cls, arg)`` (``gen_server.start_link`` for a
    ``GenServer``, ``supervisor.start_link`` for a ``Supervisor``, ...): Elixir's
    ``Supervisor.child_spec``, OTP's defaults. Keywords override a field.

    Defaults: ``id`` the class; ``restart="permanent"``; a ``Supervisor`` subclass is
    ``type="supervisor"`` with ``shutdown=None`` (wait for its whole tree), anything
    else a worker with 5 s to shut down; ``modules=(cls,)``.

    A supervisor uses this for a class in its child list given bare or as
    ``(cls, arg)``, unless the class defines its own ``child_spec(arg)`` classmethod
    (which may call this one with other defaults)::

        class Cache(GenServer):
            @classmethod
            def child_spec(cls, arg=None):
                return supervisor.child_spec(cls, arg, restart="transient")

    >>> from otp.gen_server import GenServer
    >>> spec = child_spec(GenServer, 0, id="zero")
    >>> (spec.id, spec.start[1], spec.restart, spec.type, spec.shutdown)
    ('zero', (<class 'otp.gen_server.GenServer'>, 0), 'permanent', 'worker', 5.0)
    """
    if not isinstance(cls, builtins.type):
        raise ChildSpecError(f"child_spec expects a behaviour class, got {cls!r}")
    start = behaviour_start_link(cls)
    if start is None:
        raise ChildSpecError(
            f"child_spec expects a behaviour class (a GenServer, Supervisor, ... "
            f"subclass), got {cls.__qualname__}, which derives from none; give a "
            "ChildSpec with its own start instead"
        )
    is_sup = issubclass(cls, Supervisor)
    fields: dict[str, Any] = {
        "id": cls if id is _UNSET else id,
        "start": (start, (cls, arg)),
        "restart": restart,
        "type": type if type is not None else ("supervisor" if is_sup else "worker"),
        "significant": significant,
        "modules": (cls,) if modules is None else modules,
        "backoff": backoff,
    }
    if shutdown is not _UNSET:
        fields["shutdown"] = shutdown
    return ChildSpec(**fields)


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
    if spec.__class__ is not tuple or (len(spec) == 2 and is_behaviour_class(spec[0])):
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
    status, value = gen_server.call(sup, _WHICH_CHILDREN, timeout=None)
    if status == "error":
        raise value
    return list(value)


_WHICH_CHILDREN = ("which_children",)


def count_children(sup: Any) -> ChildCounts:
    """``ChildCounts(specs, active, supervisors, workers)``."""
    return _call(sup, ("count_children",))


def get_childspec(sup: Any, child: Any) -> ChildSpec:
    """The ``ChildSpec`` of a child (by id, or pid for dynamic children). On a strict
    node, a spec holding mutable parts (a list among its start arguments) comes back
    as a private copy."""
    return _call(sup, ("get_childspec", child))


def check_childspecs(specs: Any, auto_shutdown: str = "never") -> ChildSpecError | None:
    """Check child specs without starting anything (OTP's ``check_childspecs``): None
    if every spec is valid for a supervisor with this ``auto_shutdown``, else the
    ``ChildSpecError`` describing the first bad one, returned, not raised::

        >>> from otp.supervisor import check_childspecs
        >>> check_childspecs([{"id": "a", "start": (print, ())}]) is None
        True
        >>> print(check_childspecs([{"id": "a", "start": (print, ()), "restart": "often"}]))
        invalid restart of child 'a': expected 'permanent', 'transient' or 'temporary', got: 'often'

    ``check_child_specs`` does the same check but raises, and returns the normalized
    ``ChildSpec`` list.
    """
    if auto_shutdown not in ("never", "any_significant", "all_significant"):
        raise BadArg("check_childspecs: expected auto_shutdown 'never', 'any_significant' or "
                     f"'all_significant', got: {auto_shutdown!r}")  # fmt: skip
    try:
        check_child_specs(specs, auto_shutdown)
    except ChildSpecError as e:
        e.__traceback__ = None
        return e
    return None


def stop(sup: Any, reason: Any = "normal", timeout: float | None = None) -> None:
    """Stop a supervisor (its children first, in reverse start order) and wait for it."""
    gen_server.stop(sup, reason, timeout)


# --- the server ------------------------------------------------------------------------

class _SupServer(GenServer):
    """The gen_server callback of every supervisor; the user's ``Supervisor`` subclass
    is called from here (as OTP's ``supervisor`` module calls the user module)."""

    _last_noreply: NoReply | None = None
    _strict = False  # the node checks that messages are immutable (strict mode)

    def init(self, arg: Any) -> Any:
        module, user_arg, parent = arg
        trap_exit(True)
        self._strict = current_node().strict
        state = State(module, user_arg, parent)
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
            flags, specs = split_init(result)
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
        if request is _WHICH_CHILDREN:  # which_children's own tuple (messages are shared)
            rows = state.which_children()
            if self._strict:
                return self._strict_reply(from_, rows, state)
            return Reply(("ok", rows), state)
        try:
            value = state.handle_request(request)
        except (SupervisorError, StartError, BadArg) as e:
            e.__traceback__ = None
            return Reply(("error", e), state)
        if self._strict:
            return self._strict_reply(from_, value, state)
        return Reply(("ok", value), state)

    def _strict_reply(self, from_: Any, value: Any, state: Any) -> Any:
        """Answer ``("ok", value)`` on a strict node, where a reply must be immutable.

        A child spec may legally hold mutable parts, since it is never sent: start
        arguments that are lists or dicts, module objects in ``modules``. The
        supervisor's own API must answer anyway (P16 is about what users send), so such
        a value goes out as a private deep copy, which the caller may change freely
        without touching the supervisor's spec. Module objects are shared (code, not
        data); a value that cannot be copied at all (a lock, a socket) is shared as it
        would be on a node that is not strict."""
        try:
            check_immutable(value, "reply")
        except BadArg:
            _gen.reply(from_, ("ok", _private_copy(value)), check=False)
            return NoReply(state)
        return Reply(("ok", value), state)

    def handle_info(self, msg: Any, state: Any) -> Any:
        if msg.__class__ is Exit:
            pid = msg.pid
            parent = state.parent
            # Ids first: a child's EXIT (the common case) then costs no Pid.__eq__ call.
            if (pid is not None and parent is not None and pid.id == parent.id
                    and pid == parent and pid not in state.by_pid):  # fmt: skip
                return Stop(msg.reason, state)
            if not state.child_exited(pid, msg.reason):
                return Stop("shutdown", state)
            # The state is one mutable object: the same NoReply serves every EXIT.
            r = self._last_noreply
            if r is None or r[0] is not state:
                r = self._last_noreply = NoReply(state)
            return r
        match msg:
            case (str() as tag, int() as serial) if tag == TRY_AGAIN:
                if not state.try_again(serial):
                    return Stop("shutdown", state)
                return NoReply(state)
            case (str() as tag, int() as serial, token) if tag == BACKOFF:
                state.backoff_fired(serial, token)
                return NoReply(state)
        return super().handle_info(msg, state)

    def terminate(self, reason: Any, state: Any) -> None:
        if isinstance(state, State):
            state.terminate_all()

    def format_status(self, status: dict[str, Any]) -> dict[str, Any]:
        # The state is the supervisor's private, mutable bookkeeping: show (and send,
        # for sys.get_status) an immutable summary instead.
        state = status.get("state")
        if isinstance(state, State):
            status = {**status, "state": state.summary()}
        return status

    def code_change(self, old_vsn: Any, state: Any, extra: Any) -> Any:
        module = extra if isinstance(extra, type) and issubclass(extra, Supervisor) else None
        state.code_change(module or state.module)
        return state



def _private_copy(value: Any) -> Any:
    """A deep copy of a reply that shares only module objects (code, not data), or the
    value itself when some part of it cannot be copied."""
    memo: dict[int, Any] = {}
    stack = [value]
    while stack:  # find the module objects: deepcopy cannot copy them
        v = stack.pop()
        if isinstance(v, types.ModuleType):
            memo[id(v)] = v
        elif isinstance(v, tuple):
            stack.extend(v)
        elif isinstance(v, ChildSpec):
            stack.append(v.modules)
    try:
        return copy.deepcopy(value, memo)
    except Exception:  # a lock, a socket...: a handle, shared as on a non-strict node
        return value
