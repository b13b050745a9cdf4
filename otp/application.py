"""Applications: named, versioned components that are started, stopped and configured as
a unit, OTP's ``application``.

An application is a package with a descriptor, an ``AppSpec`` kept with the code
(a module-level ``APP`` in the package's ``__init__``), and usually a callback class
whose ``start`` starts the application's top supervisor::

    import otp
    from pydantic import BaseModel
    from otp import application, gen_server, supervisor
    from otp.application import AppSpec, Application
    from otp.gen_server import GenServer, Ok, Reply
    from otp.supervisor import ChildSpec, SupFlags, Supervisor

    class Env(BaseModel):                 # what the app accepts in config/*.yaml
        greeting: str = "hello"

    class Greeter(GenServer):
        def handle_call(self, name, from_, greeting):
            return Reply(f"{greeting}, {name}", greeting)

    class GreeterSup(Supervisor):
        def init(self, greeting):
            return SupFlags(strategy="one_for_one"), [
                ChildSpec(id="greeter", start=(_start_greeter, (greeting,)))]

    def _start_greeter(greeting):
        return gen_server.start_link(Greeter, greeting, name="greeter")

    class GreeterApp(Application):
        def start(self, start_type, args):
            return supervisor.start_link(GreeterSup, application.get_env("greeter", "greeting"))

    APP = AppSpec("greeter", "1.0.0", GreeterApp, schema=Env)   # in greeter/__init__.py

    def main():
        application.configure(environ={"OTP_GREETER__GREETING": "hi"})  # or config.load(...)
        application.start(APP, type="permanent")
        try:
            return gen_server.call("greeter", "Joe")
        finally:
            application.stop("greeter")

    assert otp.run(main) == "hi, Joe"

API (OTP's ``application`` module):

========================================  ============================================
``load(name_or_spec)``                    find the spec (``import name``; ``APP``), check
                                          and resolve its env; returns the name
``start(name_or_spec, type=...)``         load, start its dependencies (same type) then
                                          it; already started is fine; returns the names
                                          started by this call, in start order
``stop(name)``                            stop one application (its tree, then
                                          ``Application.stop``)
``stop_all()``                            stop every running application, most recent
                                          first (so dependencies stop last)
``which_applications()``                  ``[AppInfo(name, description, vsn)]`` running,
                                          in start order
``ensure_all_started(app, type=...)``     ``start`` under OTP's name for it: the names
                                          started (dependencies first; empty if running)
``ensure_started(app, type=...)``         start it unless it runs; returns None
``get_application(pid=None)``             the application a process belongs to, or None
``get_key(app, key, default=None)``       the app's descriptor: ``vsn``, ``description``,
                                          ``applications``, ``mod``, ``env``, ...
``get_env(app, key, default=None)``       a configured value (read directly, no message)
``set_env(app, key, value)``              change it at run time (checked by the schema)
``configure(config, environ=...)``        the node's config files and environment
========================================  ============================================

Configuration (docs/semantics.md A2, see ``otp.config``): an application's env is its
defaults (the schema's defaults, then ``AppSpec.env``), overridden by the config files
given to ``configure``, overridden by ``OTP_<APP>__<KEY>`` environment variables,
overridden by ``set_env``. It is resolved and validated when the application is loaded
(``start`` loads); a bad or unknown value fails the start with ``ConfigError`` naming
the file, the application and the key.

Start types and what a stopped application does to the node (docs/semantics.md A1):

- ``permanent``: if it stops (for any reason, even ``normal``), the other running
  applications are stopped, most recent first, and the node halts with reason
  ``("application_terminated", name, reason)`` (``otp.node.halt``: ``otp.run`` raises
  ``NodeHalted``);
- ``transient``: the same, unless the reason is ``normal``. Note that a supervisor
  that gave up (too many restarts) exits with ``shutdown``: that is abnormal here;
- ``temporary``: only reported (an INFO report ``application: x, exited: reason``).

An explicit ``stop`` triggers none of this. Every start and exit is logged to
``otp.report`` (``application_controller:progress`` / ``application_controller:exit``).

Processes: each running application has an *application master* (a process that calls
``Application.start``, monitors the top process it returns, and stops it with
``shutdown`` on ``stop``); the masters are linked to the node's
``application_controller``, a process that serialises starts and stops, applies the
start-type rules, and exists only while some application runs (so a test that stops
what it started leaves nothing behind). Loaded specs and envs live in a per-node table
that ``get_env`` reads without messaging.

When not to use: an application is the unit of release, configuration and upgrade.
Inside one, structure with supervisors; a library with no processes is an
``AppSpec(mod=None)`` (it has an env and dependencies but nothing to start).
Do not start applications from ``Application.start`` (the controller is busy starting
you: list them in ``applications`` instead).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, NamedTuple

import pydantic

from otp import config as _config
from otp import gen_server, proc_lib
from otp.errors import ApplicationError, CallError, StartError
from otp.gen_server import GenServer, NoReply, Ok, Reply, Stop
from otp.lowlevel import NodeVar, current_node
from otp.node import halt
from otp.proc_lib import meta_of as _proc_meta
from otp.process import (
    Down,
    Exit,
    Pid,
    demonitor,
    exit,
    monitor,
    receive,
    send,
    trap_exit,
    whereis,
)
from otp.process import self as _self

__all__ = [
    "AppInfo",
    "AppSpec",
    "Application",
    "StartType",
    "configure",
    "ensure_all_started",
    "ensure_started",
    "get_all_env",
    "get_all_key",
    "get_application",
    "get_env",
    "get_key",
    "load",
    "loaded_applications",
    "set_env",
    "start",
    "stop",
    "stop_all",
    "unload",
    "which_applications",
]

StartType = Literal["permanent", "transient", "temporary"]
_TYPES = ("permanent", "transient", "temporary")
CONTROLLER = "application_controller"

report_log = logging.getLogger("otp.report")


class Application:
    """Callbacks of an application (OTP's ``application`` behaviour).

    ``start`` runs in the application master when the application starts; it starts
    the top supervisor (linked to the caller, as ``supervisor.start_link`` does) and
    returns its pid, or ``(pid, state)``. Raising (or a ``StartError``) fails the start.
    ``prep_stop(state)`` runs before the tree is stopped and returns the state given to
    ``stop(state)``, which runs after. Neither runs when the node halts.
    """

    def start(self, start_type: str, args: Any) -> Pid | tuple[Pid, Any]:
        raise NotImplementedError(f"{type(self).__qualname__}.start(start_type, args)")

    def prep_stop(self, state: Any) -> Any:
        return state

    def stop(self, state: Any) -> None:
        return None


@dataclass(frozen=True)
class AppSpec:
    """An application's descriptor (OTP's ``.app`` file).

    ``mod`` is the ``Application`` subclass (None: a library application, nothing to
    start); ``applications`` the names of the applications that must run first;
    ``registered`` the names its processes register (checked free at start); ``env``
    default settings; ``schema`` a pydantic model of the settings it accepts (without
    one, the keys of ``env`` are the known keys); ``start_args`` is passed to
    ``Application.start``.
    """

    name: str
    vsn: str = "0.0.0"
    mod: type[Application] | None = None
    applications: tuple[str, ...] = ()
    registered: tuple[str, ...] = ()
    env: Mapping[str, Any] = field(default_factory=dict)
    schema: type[pydantic.BaseModel] | None = None
    start_args: Any = None
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ApplicationError(f"AppSpec: name expects a non-empty str, got {self.name!r}")
        where = f"AppSpec {self.name!r}"
        if not isinstance(self.vsn, str):
            raise ApplicationError(f"{where}: vsn expects a str, got {self.vsn!r}")
        if self.mod is not None and not (
            isinstance(self.mod, type) and issubclass(self.mod, Application)
        ):
            raise ApplicationError(
                f"{where}: mod expects an Application subclass or None, got {self.mod!r}"
            )
        for fname in ("applications", "registered"):
            value = getattr(self, fname)
            if isinstance(value, str) or not all(isinstance(x, str) for x in value):
                raise ApplicationError(
                    f"{where}: {fname} expects a tuple of names (str), got {value!r}"
                )
            object.__setattr__(self, fname, tuple(value))
        if not isinstance(self.env, Mapping):
            raise ApplicationError(f"{where}: env expects a mapping, got {self.env!r}")
        object.__setattr__(self, "env", MappingProxyType(dict(self.env)))
        if self.schema is not None and not (
            isinstance(self.schema, type) and issubclass(self.schema, pydantic.BaseModel)
        ):
            raise ApplicationError(
                f"{where}: schema expects a pydantic BaseModel subclass, got {self.schema!r}"
            )


class AppInfo(NamedTuple):
    """A running application, from ``which_applications``."""

    name: str
    description: str
    vsn: str


# ------------------------------------------------------------------------- the table


@dataclass
class _Running:
    master: Pid | None  # None for a library application
    ref: Any
    type: str
    stopping: bool = False


@dataclass
class _Table:
    """What OTP keeps in the application controller's ETS table, for one node."""

    specs: dict[str, AppSpec] = field(default_factory=dict)
    env: dict[str, dict[str, Any]] = field(default_factory=dict)
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    config: _config.Config = field(default_factory=_config.Config)
    environ: Mapping[str, str] | None = None  # None: os.environ
    running: dict[str, _Running] = field(default_factory=dict)  # in start order


# The node's application controller table, made on first use: every node starts empty.
_TABLE: NodeVar[_Table] = NodeVar("otp.application.table", factory=_Table)
_table = _TABLE.get


# ------------------------------------------------------------------------- public API


def configure(
    config: _config.Config | None = None, *, environ: Mapping[str, str] | None = None
) -> None:
    """Set this node's config files (``otp.config.load(...)``) and the environment
    variables to read overrides from (default ``os.environ``). Applies to applications
    loaded afterwards."""
    t = _table()
    t.config = config if config is not None else _config.Config()
    t.environ = dict(environ) if environ is not None else None


def load(app: str | AppSpec) -> str:
    """Load an application: find its spec, resolve and validate its env. Returns its
    name. A name is looked up among loaded specs, then imported (``import name``, its
    ``APP`` attribute). Loading an already loaded application re-resolves its env
    (unless it runs). ``ApplicationError`` if there is no spec or another spec with the
    same name is loaded; ``ConfigError`` for a bad setting."""
    t = _table()
    spec = _find_spec(t, app)
    if spec.name not in t.running:
        t.env[spec.name] = _resolve_env(t, spec)
    t.specs[spec.name] = spec
    return spec.name


def unload(name: str) -> None:
    """Forget a loaded application (its env too). ``ApplicationError`` if it runs."""
    t = _table()
    if name in t.running:
        raise ApplicationError(f"application {name!r} is running: stop it before unloading",
                               reason="running")  # fmt: skip
    if name not in t.specs:
        raise ApplicationError(f"application {name!r} is not loaded", reason="not_loaded")
    del t.specs[name]
    t.env.pop(name, None)


def start(app: str | AppSpec, type: StartType = "temporary") -> list[str]:
    """Start an application and, first, its dependencies (with the same start type).

    Returns the names this call started, in start order (empty if all were running).
    Raises ``ConfigError`` for a bad setting (nothing is started), ``ApplicationError``
    if a spec is missing, dependencies form a cycle, or an application fails to start
    (``.reason``); the applications this call had started are then stopped again.
    """
    if type not in _TYPES:
        raise ApplicationError(
            f"start type expects one of {', '.join(_TYPES)}, got {type!r}", reason="badarg"
        )
    t = _table()
    name = _find_spec(t, app).name
    order = _start_order(t, app)
    for n in order:  # validate every env before starting anything
        if n not in t.running:
            t.env[n] = _resolve_env(t, t.specs[n])
    if all(n in t.running for n in order):
        return []
    result = _call(("start", tuple(order), type))
    if result[0] == "ok":
        return list(result[1])
    _tag, failed, reason = result
    raise ApplicationError(
        f"application {failed!r} failed to start"
        + (f" (a dependency of {name!r})" if failed != name else "")
        + f": {reason!r}",
        reason=reason,
    )


def stop(name: str) -> None:
    """Stop a running application: ``Application.prep_stop``, its top process stopped
    with ``shutdown`` (a supervisor stops its children in reverse order), then
    ``Application.stop``. Dependencies keep running. No start-type consequence.
    ``ApplicationError`` (reason ``"not_started"``) if it is not running."""
    if name not in _table().running:
        raise ApplicationError(f"application {name!r} is not started", reason="not_started")
    result = _call(("stop", name))
    if result != "ok":
        raise ApplicationError(f"application {name!r} is not started", reason="not_started")


def stop_all() -> list[str]:
    """Stop every running application, most recently started first (dependencies stop
    last). Returns their names in stop order."""
    stopped = []
    t = _table()
    for name in reversed(list(t.running)):
        if name in t.running:
            stop(name)
            stopped.append(name)
    return stopped


def ensure_all_started(app: str | AppSpec, type: StartType = "temporary") -> list[str]:
    """Start ``app`` and every application it depends on that is not running yet.

    Returns the names started by this call, in start order (dependencies first); an
    empty list if everything already ran. Errors as for ``start``, which does the same
    (OTP's ``start`` would refuse missing dependencies; here it starts them)."""
    return start(app, type)


def ensure_started(app: str | AppSpec, type: StartType = "temporary") -> None:
    """Start ``app`` (and its dependencies) unless it runs already. Errors as for
    ``start``."""
    start(app, type)


def get_application(pid: Pid | None = None) -> str | None:
    """The name of the running application that ``pid`` (default: the caller) belongs
    to, or None if it belongs to none.

    A process belongs to an application when it is the application's master or was
    started, directly or through other processes, by that master: its top supervisor
    and everything in its tree. Python adaptation: Erlang finds the application
    through the process's group leader, which every spawned process inherits; here the
    chain of starters that ``proc_lib`` records is followed (every behaviour starts its
    processes through ``proc_lib``), so a process started with a bare
    ``otp.process.spawn`` belongs to no application.
    """
    t = _table()
    masters = {r.master: name for name, r in t.running.items() if r.master is not None}
    if not masters:
        return None
    if pid is None:
        pid = _self()
    name = masters.get(pid)
    if name is not None:
        return name
    meta = _proc_meta(pid)
    if meta is None:
        return None
    for ancestor in meta.ancestors:
        name = masters.get(ancestor)
        if name is not None:
            return name
    return None


#: The keys of an application's descriptor that ``get_key`` knows (OTP's ``.app`` keys
#: that an ``AppSpec`` has).
_KEYS = ("description", "vsn", "mod", "start_args", "applications", "registered", "env")


def get_key(app: str, key: str, default: Any = None) -> Any:
    """The value of ``key`` in the descriptor of the loaded application ``app``, or
    ``default`` if it is not loaded (OTP's ``get_key``).

    Keys: ``description``, ``vsn``, ``mod`` (the ``Application`` class, or None for a
    library), ``start_args``, ``applications`` and ``registered`` (tuples of names),
    ``env`` (the resolved env, a copy: what ``get_all_env`` gives). An unknown key
    raises ``ApplicationError`` (reason ``"badarg"``)::

        >>> from otp import application
        >>> from otp.application import AppSpec
        >>> def main():
        ...     application.load(AppSpec("lib", "2.1.0", applications=("otp_tables",)))
        ...     return application.get_key("lib", "vsn"), application.get_key("lib", "mod")
        >>> import otp; otp.run(main)
        ('2.1.0', None)
    """
    if key not in _KEYS:
        raise ApplicationError(
            f"get_key: expected a key among {', '.join(_KEYS)}, got: {key!r}", reason="badarg"
        )
    t = _table()
    spec = t.specs.get(app)
    if spec is None:
        return default
    if key == "env":
        return get_all_env(app)
    return getattr(spec, key)


def get_all_key(app: str) -> dict[str, Any] | None:
    """Every key of ``app``'s descriptor (see ``get_key``), or None if not loaded."""
    if app not in _table().specs:
        return None
    return {key: get_key(app, key) for key in _KEYS}


def which_applications() -> list[AppInfo]:
    """The running applications, in start order."""
    t = _table()
    return [
        AppInfo(n, t.specs[n].description, t.specs[n].vsn) for n in t.running if n in t.specs
    ]


def loaded_applications() -> list[AppInfo]:
    """The loaded applications (running or not)."""
    return [AppInfo(s.name, s.description, s.vsn) for s in _table().specs.values()]


def get_env(app: str, key: str, default: Any = None) -> Any:
    """The value of ``key`` in ``app``'s env, or ``default`` if it has none (or the
    application is not loaded)."""
    return _table().env.get(app, {}).get(key, default)


def get_all_env(app: str) -> dict[str, Any]:
    """A copy of ``app``'s whole env (empty if not loaded)."""
    return dict(_table().env.get(app, {}))


def set_env(app: str, key: str, value: Any) -> None:
    """Set ``key`` of ``app``'s env at run time; it wins over every other source, and
    survives a reload. Checked against the app's schema when loaded (``ConfigError``
    naming the key). Processes that read the value earlier keep their copy."""
    t = _table()
    spec = t.specs.get(app)
    if spec is not None:
        current = t.env.get(app, {})
        # Without a schema any key may be set, as in OTP.
        value = _config.validate_value(app, spec.schema, current, key, value)
        t.env.setdefault(app, {})[key] = value
    t.overrides.setdefault(app, {})[key] = value


# ------------------------------------------------------------------------- helpers


# Applications shipped with otp whose module is not named after them.
_BUILTIN_APPS = {"otp_tables": "otp.tables", "otp_ops": "otp.ops"}


def _find_spec(t: _Table, app: str | AppSpec) -> AppSpec:
    if isinstance(app, AppSpec):
        old = t.specs.get(app.name)
        if old is not None and old != app:
            raise ApplicationError(
                f"application {app.name!r} is already loaded with another spec "
                f"(vsn {old.vsn!r}); unload it first",
                reason=("already_loaded", app.name),
            )
        t.specs[app.name] = app
        return app
    if not isinstance(app, str):
        raise ApplicationError(
            f"expected an application name (str) or an AppSpec, got {app!r}", reason="badarg"
        )
    spec = t.specs.get(app)
    if spec is not None:
        return spec
    try:
        module = importlib.import_module(_BUILTIN_APPS.get(app, app))
    except ModuleNotFoundError as e:
        if e.name is not None and app.startswith(e.name):
            raise ApplicationError(
                f"application {app!r}: no spec loaded and no module {app!r} to find one in "
                f"(load(AppSpec({app!r}, ...)) first, or define APP = AppSpec({app!r}, ...) "
                f"in the package {app!r})",
                reason=("no_spec", app),
            ) from None
        raise
    spec = getattr(module, "APP", None)
    if not isinstance(spec, AppSpec) or spec.name != app:
        raise ApplicationError(
            f"application {app!r}: module {module.__name__} has no APP = AppSpec({app!r}, ...)"
            f" (got {spec!r})",
            reason=("no_spec", app),
        )
    t.specs[app] = spec
    return spec


def _start_order(t: _Table, app: str | AppSpec) -> list[str]:
    """Dependencies first (depth first, in declaration order), each once."""
    order: list[str] = []
    path: list[str] = []

    def visit(a: str | AppSpec) -> None:
        spec = _find_spec(t, a)
        if spec.name in order:
            return
        if spec.name in path:
            cycle = " -> ".join([*path[path.index(spec.name):], spec.name])
            raise ApplicationError(f"applications depend on each other in a cycle: {cycle}",
                                   reason=("circular_dependencies", tuple(path)))  # fmt: skip
        path.append(spec.name)
        for dep in spec.applications:
            visit(dep)
        path.pop()
        order.append(spec.name)

    visit(app)
    return order


def _resolve_env(t: _Table, spec: AppSpec) -> dict[str, Any]:
    return _config.resolve(
        spec.name,
        schema=spec.schema,
        defaults=spec.env,
        config=t.config,
        environ=t.environ,
        overrides=t.overrides.get(spec.name),
    )


def _call(request: Any) -> Any:
    # The controller exists only while applications run; it may have just decided to
    # stop when we call it: start a new one and try again.
    for _attempt in range(5):
        pid = whereis(CONTROLLER)
        if pid is None:
            try:
                pid = gen_server.start(_Controller, None, name=CONTROLLER)
            except StartError as e:
                if isinstance(e.reason, tuple) and e.reason[:1] == ("already_started",):
                    pid = e.reason[1]
                else:
                    raise
        assert pid is not None
        try:
            return gen_server.call(pid, request, timeout=None)
        except CallError as e:
            if e.reason not in ("noproc", "normal"):
                raise
    raise ApplicationError("the application controller keeps stopping", reason="controller")


# ------------------------------------------------------------------------- master


def _master(name: str, start_type: str, controller: Pid) -> None:
    """The application master: start the app's top process, watch it, stop it."""
    trap_exit(True)
    spec = _table().specs[name]
    assert spec.mod is not None
    callbacks = spec.mod()
    for reg in spec.registered:
        holder = whereis(reg)
        if holder is not None:
            proc_lib.init_fail(("registered_name_taken", reg, holder))
    try:
        result = callbacks.start(start_type, spec.start_args)
    except StartError as e:
        proc_lib.init_fail(e.reason)
        return
    except Exception as e:
        proc_lib.init_fail(e)
        return
    if isinstance(result, Pid):
        top, state = result, None
    elif isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], Pid):
        top, state = result
    else:
        proc_lib.init_fail(("bad_return", (f"{spec.mod.__qualname__}.start", result)))
        return
    ref = monitor(top)
    proc_lib.init_ack(_self())
    while True:
        msg = receive()
        match msg:
            case ("$app_stop",):
                state = callbacks.prep_stop(state)
                exit(top, "shutdown")
                receive(lambda m: m.__class__ is Down and m.ref == ref)
                callbacks.stop(state)
                return
            case Down(ref=r, reason=reason) if r == ref:
                callbacks.stop(state)
                send(controller, ("$app_exited", name, _self(), reason))
                return
            case Exit(pid=p, reason=reason) if p == controller:
                # The controller died: take the tree down with it.
                demonitor(ref, flush=True)
                exit(top, "shutdown")
                return
            case _:
                pass  # Exit from the top process (the Down follows), stray messages


# ------------------------------------------------------------------------- controller


class _Controller(GenServer):
    """Serialises starts and stops, and applies the start-type rules (A1)."""

    def init(self, arg: Any) -> Ok:
        trap_exit(True)
        return Ok(None)

    def handle_call(self, request: Any, from_: Any, state: Any) -> Reply | Stop:
        t = _table()
        match request:
            case ("start", order, start_type):
                reply = self._start(t, order, start_type)
            case ("stop", name):
                reply = self._stop(t, name)
            case _:
                return super().handle_call(request, from_, state)  # type: ignore[return-value]
        if not t.running:
            return Stop("normal", state, reply=reply)
        return Reply(reply, state)

    def handle_info(self, msg: Any, state: Any) -> NoReply | Stop:
        t = _table()
        match msg:
            case ("$app_exited", name, master, reason):
                r = t.running.get(name)
                if r is not None and r.master == master:  # not a stale one
                    self._exited(t, name, reason)
            case Down(pid=pid, reason=reason):
                for name, r in list(t.running.items()):
                    if r.master == pid:
                        self._exited(t, name, reason)
            case Exit():
                pass  # a master ended: its Down (or $app_exited) says how
            case _:
                return super().handle_info(msg, state)
        if not t.running:
            return Stop("normal", state)
        return NoReply(state)

    # -- starting and stopping ---------------------------------------------------------

    def _start(self, t: _Table, order: tuple[str, ...], start_type: str) -> Any:
        started: list[str] = []
        for name in order:
            if name in t.running:
                continue
            spec = t.specs[name]
            if spec.mod is None:
                t.running[name] = _Running(None, None, start_type)
            else:
                try:
                    master = proc_lib.start_link(_master, name, start_type, _self())
                except StartError as e:
                    for done in reversed(started):
                        self._stop(t, done)
                    return ("error", name, e.reason)
                t.running[name] = _Running(master, monitor(master), start_type)
            started.append(name)
            report_log.info(
                "application %s started at %s", name, current_node().name,
                extra={"report": {"label": "application_controller:progress",
                                  "application": name, "started_at": current_node().name}},
            )  # fmt: skip
        return ("ok", tuple(started))

    def _stop(self, t: _Table, name: str) -> Any:
        r = t.running.get(name)
        if r is None:
            return "not_started"
        r.stopping = True
        if r.master is not None:
            send(r.master, ("$app_stop",))
            ref = r.ref
            # An "$app_exited" the master sent before it saw our request stays queued;
            # handle_info drops it (its master is no longer the running one).
            receive(lambda m: m.__class__ is Down and m.ref == ref)
        del t.running[name]
        _exit_report(name, "stopped", r.type)
        return "ok"

    def _exited(self, t: _Table, name: str, reason: Any) -> None:
        r = t.running.get(name)
        if r is None or r.stopping:
            return
        del t.running[name]
        if r.ref is not None:
            demonitor(r.ref, flush=True)
        _exit_report(name, reason, r.type)
        if r.type == "permanent" or (r.type == "transient" and reason != "normal"):
            # A1: stop the others (most recent first), then take the node down.
            for other in reversed(list(t.running)):
                self._stop(t, other)
            halt(("application_terminated", name, reason))


def _exit_report(name: str, reason: Any, start_type: str) -> None:
    report_log.info(
        "application %s exited: %r, type: %s", name, reason, start_type,
        extra={"report": {"label": "application_controller:exit", "application": name,
                          "exited": reason, "type": start_type}},
    )  # fmt: skip
