"""The code server: loading new versions of modules into a running node, OTP's ``code``.

A Python module is loaded once and then lives in ``sys.modules``. The code server
loads a *new version* of a module next to the running one, as Erlang does: the
new version becomes *current*, the previous one stays *old* (its module object,
its classes and functions untouched), so processes still running old code keep
running it until they are moved to the new code or purged::

    import otp
    from otp import code, gen_server
    from otp import sys as otp_sys

    def main():
        counter = code.ensure_loaded("counter") # counter.py: class Counter(GenServer)
        pid = gen_server.start_link(counter.Counter, 0)
        # ... counter.py is edited on disk ...
        assert code.modified_modules() == ["counter"]
        new = code.load("counter")              # v2 current, v1 old; pid still on v1
        otp_sys.suspend(pid)
        otp_sys.change_code(pid, new, old_vsn="1")   # state = v2.code_change(...)
        otp_sys.resume(pid)                     # the next message runs v2
        code.soft_purge("counter")              # True: nobody runs v1 any more

    otp.run(main)

API (OTP's names):

===============================  ====================================================
``load(module, soft=False)``     load the module's source again from the path: the new
                                 version is current, the previous one old. A third
                                 version purges the oldest first (A3): its processes
                                 are killed, or with ``soft=True`` the load is refused
                                 (``NotPurged``) while any runs it
``ensure_loaded(module)``        import it if needed and track it; returns the module
``purge(module)``                kill the processes running the old version, drop it;
                                 True if some were killed
``soft_purge(module)``           drop the old version only if nobody runs it (bool)
``delete(module)``               the current version becomes old (no current one)
``check_process_code(pid, m)``   True if the process runs the old version of ``m``
``is_loaded(module)``            whether it is in ``sys.modules``
``which(module)``                the file it was (or would be) loaded from
``versions(module)``             ``[Version(...)]``: current first, then old
``modified_modules()``           tracked modules whose source changed on disk since
                                 they were loaded (mtime, then sha256)
``reinstate(module)``            the old version current again, the current one old
``old_is(module, file)``         whether the old version came from ``file``'s source
``current(cls)``                 the newest loaded version of a class (module +
                                 qualname); what a behaviour starts
``processes_running(m, old)``    the behaviour processes running the current (old)
                                 version of ``m``
``register_process(pid, cls)``   for behaviours: ``pid`` runs ``cls`` (after init,
``unregister_process(pid)``      after each code change) / has ended
``add_path`` / ``del_path`` /    the code path (``sys.path``); ``replace_path`` also
``replace_path(old, new)``       moves loaded packages' ``__path__`` to the new
                                 directory, so their submodules load from it
===============================  ====================================================

How a version is loaded: the module is found again on the path (``sys.path``, or its
package's ``__path__``), its source is compiled (from the file itself, never a stale
``.pyc``) and run in a *fresh* module object, which then replaces the current one in
``sys.modules`` (and on its parent package). ``importlib.reload`` instead re-runs the
code inside the same module object, so the "old version" would be overwritten.

Which processes run a version: the code server keeps a registry of the behaviour
processes (``gen_server`` and everything built on it, ``gen_statem``, ...) and the
callback class each one runs; a behaviour registers its process with
``register_process(pid, cls)`` once ``init`` has succeeded and again after each code
change, and ``unregister_process(pid)`` as it ends (``process_class(pid)`` and
``behaviour_processes()`` read it). A process runs a version of module ``m`` when its
class is the class of that version with the same qualified name. Other processes
(bare ``spawn``) are not tracked: purging never kills them, and they keep the
functions they were started with.

Failure semantics:

- A module that fails to load (not found, a syntax error, an exception while its
  code runs) leaves everything as it was: the current version still current, the old
  one still old, no process touched. ``CodeLoadError`` says which module, which file
  and why (the exception is its ``__cause__``).
- A7: loading is not an upgrade. A running ``gen_server`` keeps its class (instances
  keep their code) until ``otp.sys.change_code`` moves it, between two messages, with
  ``code_change`` migrating its state. Servers *started* after the load run the new
  version (``gen_server`` resolves its class through ``current``), so a supervisor
  restarting a child after an upgrade starts the new code, as in Erlang.
- Other modules that did ``from m import f`` keep the old ``f``: reload them too, or
  reach ``m`` through its module (``m.f``).

The code table is per OS process (like ``sys.modules``), not per node.

When not to use it: to pick up edits during development of a program that can simply
restart; and for modules that keep state at module level (a reload starts it afresh).
Live upgrades of a release go through ``otp.release_handler``, which drives this.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from otp.errors import (  # noqa: F401 - re-exported
    CodeError,
    CodeLoadError,
    NotInProcess,
    NotPurged,
    OTPError,
)
from otp.lowlevel import NodeVar, current_process, run_in_thread
from otp.process import Down, Pid, demonitor, exit, is_alive, monitor, receive

__all__ = [
    "CodeError",
    "CodeLoadError",
    "NotPurged",
    "Version",
    "add_path",
    "behaviour_processes",
    "check_process_code",
    "current",
    "del_path",
    "delete",
    "ensure_loaded",
    "is_loaded",
    "load",
    "modified_modules",
    "old_is",
    "process_class",
    "processes_running",
    "purge",
    "register_process",
    "reinstate",
    "replace_path",
    "soft_purge",
    "unregister_process",
    "versions",
    "which",
]



@dataclass(frozen=True)
class Version:
    """One loaded version of a module, from ``versions``."""

    status: str  # "current" | "old"
    module: ModuleType
    file: str | None
    sha256: str | None  # of the source it was loaded from (None: no source file)
    vsn: str | None  # the module's ``__vsn__`` if it defines one, else the hash's head


@dataclass
class _Loaded:
    module: ModuleType
    file: str | None
    sha256: str | None
    mtime: float | None


@dataclass
class _Entry:
    current: _Loaded | None
    old: _Loaded | None = None


# module name -> its versions, for modules the code server has loaded or been asked
# about. Per OS process, like sys.modules.
_table: dict[str, _Entry] = {}


# --------------------------------------------------------------------------- lookup


def _lookup(module: ModuleType, qualname: str) -> Any:
    obj: Any = module
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def current(cls: type) -> type:
    """The newest loaded version of class ``cls``: the class of the same qualified name
    in the current version of its module, if the code server loaded that module and it
    still defines such a class; otherwise ``cls`` itself."""
    name = cls.__module__
    entry = _table.get(name)
    if entry is None or entry.current is None:
        return cls
    new = _lookup(entry.current.module, cls.__qualname__)
    if isinstance(new, type) and (new is cls or issubclass(new, _behaviour_of(cls))):
        return new
    return cls


def _behaviour_of(cls: type) -> type:
    """The behaviour base class ``cls`` derives from (the first ``otp`` class in its
    MRO, e.g. ``GenServer``), or ``object``."""
    for base in cls.__mro__:
        if base.__module__.startswith("otp.") and base is not cls:
            return base
    return object


# --------------------------------------------------------------------------- who runs what

# The processes of this node that run a callback class (behaviour processes), pid ->
# the class. Behaviours register a process once its init has succeeded, again when
# otp.sys moves it to new code, and unregister it when it ends: this is how the code
# server knows which processes run which version of a module (purge,
# check_process_code) without looking inside any behaviour. Node-local: every node
# starts with none. (The module table itself is the interpreter's, shared by design.)
_PROCESSES: NodeVar[dict[Pid, type]] = NodeVar("otp.code.processes", factory=dict)


def register_process(pid: Pid, cls: type) -> None:
    """Record that ``pid`` runs the callback class ``cls`` (called by behaviours, in
    the process, after ``init`` and after each code change). Not a hot path: never
    per message."""
    _PROCESSES.get()[pid] = cls


def unregister_process(pid: Pid) -> None:
    """Forget ``pid`` (its behaviour calls this as the process ends)."""
    _PROCESSES.get().pop(pid, None)


def process_class(pid: Pid) -> type | None:
    """The callback class the behaviour process ``pid`` runs now, or None if it is not
    a (live, registered) behaviour process."""
    cls = _PROCESSES.get().get(pid)
    # A killed process leaves its entry until its stack has unwound: check it lives.
    return cls if cls is not None and is_alive(pid) else None


def behaviour_processes() -> dict[Pid, type]:
    """Every registered behaviour process of this node and the class it runs."""
    return {pid: cls for pid, cls in list(_PROCESSES.get().items()) if is_alive(pid)}


# --------------------------------------------------------------------------- loading


def _source_info(file: str | None) -> tuple[str | None, float | None]:
    if file is None or not file.endswith(".py"):
        return None, None
    try:
        with open(file, "rb") as f:
            data = f.read()
        return hashlib.sha256(data).hexdigest(), os.stat(file).st_mtime
    except OSError:
        return None, None


def _loaded(module: ModuleType) -> _Loaded:
    file = getattr(module, "__file__", None)
    sha, mtime = _source_info(file)
    return _Loaded(module, file, sha, mtime)


def _entry(name: str) -> _Entry:
    entry = _table.get(name)
    if entry is None:
        mod = sys.modules.get(name)
        entry = _Entry(_loaded(mod) if mod is not None else None)
        _table[name] = entry
    return entry


def _check_name(name: Any) -> str:
    if isinstance(name, ModuleType):
        return name.__name__
    if not isinstance(name, str) or not name or name.startswith("."):
        raise CodeError(f"expected a module name (str, e.g. 'chat.users'), got {name!r}")
    return name


def _find_spec(name: str) -> Any:
    """Find ``name`` on the path again, ignoring the copy in ``sys.modules``."""
    parent, _, _child = name.rpartition(".")
    path = None
    if parent:
        try:
            pkg = importlib.import_module(parent)
        except Exception as e:
            raise CodeLoadError(
                f"cannot load {name}: its package {parent} fails to import: {e!r}", name
            ) from e
        path = getattr(pkg, "__path__", None)
        if path is None:
            raise CodeLoadError(f"cannot load {name}: {parent} is not a package", name)
    for finder in sys.meta_path:
        find = getattr(finder, "find_spec", None)
        if find is None:
            continue
        spec = find(name, path)
        if spec is not None:
            return spec
    where = f"the __path__ of {parent} ({list(path or [])})" if parent else "sys.path"
    raise CodeLoadError(f"cannot load {name}: no such module on {where}", name)


def _compile(source: bytes, origin: str) -> Any:
    """Compile a module's source in a thread of the pool when called from a process:
    a large module takes long enough to compile that the node's other processes would
    wait (the thread leaves them their turns)."""
    try:
        current_process("compile")
    except NotInProcess:
        return compile(source, origin, "exec", dont_inherit=True)
    return run_in_thread(compile, source, origin, "exec", 0, True)


def _exec_new(name: str) -> ModuleType:
    """Run a fresh copy of ``name`` from its source; sys.modules is as before on failure."""
    spec = _find_spec(name)
    try:
        module = importlib.util.module_from_spec(spec)
    except Exception as e:
        raise CodeLoadError(f"cannot load {name}: {e!r}", name) from e
    origin = spec.origin
    code_obj = None
    if isinstance(origin, str) and origin.endswith(".py") and os.path.isfile(origin):
        # Compile the source itself: a .pyc written within the same second as an edit
        # of the same size would look fresh to the import system and be stale.
        try:
            with open(origin, "rb") as f:
                source = f.read()
            code_obj = _compile(source, origin)
        except SyntaxError as e:
            raise CodeLoadError(
                f"cannot load {name}: syntax error in {e.filename}, line {e.lineno}: {e.msg}",
                name,
            ) from e
        except (OSError, ValueError) as e:
            raise CodeLoadError(f"cannot load {name} from {origin}: {e!r}", name) from e
    previous = sys.modules.get(name)
    # The module must be in sys.modules while its code runs (dataclasses, typing and
    # pickle look classes' modules up there).
    sys.modules[name] = module
    try:
        if code_obj is not None:
            exec(code_obj, module.__dict__)
        else:
            if spec.loader is None:
                raise ImportError(f"no loader for {name}")
            spec.loader.exec_module(module)
    except BaseException as e:
        if previous is not None:
            sys.modules[name] = previous
        else:
            sys.modules.pop(name, None)
        if not isinstance(e, Exception):
            raise  # an exit signal: the process ends
        where = f" ({origin})" if origin else ""
        raise CodeLoadError(
            f"cannot load {name}{where}: its code raised {e!r}; "
            "the running version is unchanged",
            name,
        ) from e
    parent, _, child = name.rpartition(".")
    if parent and parent in sys.modules:
        setattr(sys.modules[parent], child, module)
    if hasattr(module, "__path__"):
        # A new package object: its loaded submodules stay loaded, reachable from it.
        prefix = name + "."
        for sub, submod in list(sys.modules.items()):
            rest = sub[len(prefix):] if sub.startswith(prefix) else ""
            if rest and "." not in rest and not hasattr(module, rest):
                setattr(module, rest, submod)
    return module


def load(module: str | ModuleType, *, soft: bool = False) -> ModuleType:
    """Load a new version of ``module`` from the path and make it current; the version
    running so far becomes old. Returns the new module.

    If an old version exists already (a third version, A3), it is purged first: the
    processes running it are killed; with ``soft=True`` the load is refused with
    ``NotPurged`` while any process runs it. A module not loaded yet is simply
    imported. ``CodeLoadError`` if the new version cannot be loaded (nothing changed).
    """
    name = _check_name(module)
    entry = _entry(name)
    if entry.old is not None and soft:
        pids = processes_running(name, old=True)
        if pids:
            raise NotPurged(
                f"cannot load {name}: {len(pids)} process(es) still run its old version "
                f"({', '.join(map(repr, pids))}); move them with otp.sys.change_code or "
                "load without soft=True to kill them",
                name,
                pids,
            )
    new = _exec_new(name)
    if entry.old is not None:
        purge(name)
    entry.old = entry.current
    entry.current = _loaded(new)
    return new


def ensure_loaded(module: str | ModuleType) -> ModuleType:
    """Import ``module`` if needed and track it (for ``modified_modules``)."""
    name = _check_name(module)
    mod = sys.modules.get(name)
    if mod is None:
        try:
            mod = importlib.import_module(name)
        except Exception as e:
            raise CodeLoadError(f"cannot load {name}: {e!r}", name) from e
    entry = _entry(name)
    if entry.current is None:
        entry.current = _loaded(mod)
    return mod


def delete(module: str | ModuleType) -> bool:
    """Make the current version old, leaving no current one (it leaves ``sys.modules``;
    ``purge`` then drops it). False if an old version exists already (purge first) or
    the module is not loaded."""
    name = _check_name(module)
    entry = _entry(name)
    if entry.old is not None or entry.current is None:
        return False
    entry.old, entry.current = entry.current, None
    sys.modules.pop(name, None)
    parent, _, child = name.rpartition(".")
    pkg = sys.modules.get(parent) if parent else None
    if pkg is not None and getattr(pkg, child, None) is entry.old.module:
        delattr(pkg, child)
    return True


# --------------------------------------------------------------------------- purging


def _runs(cls: type, version: _Loaded | None, name: str) -> bool:
    return (
        version is not None
        and cls.__module__ == name
        and _lookup(version.module, cls.__qualname__) is cls
    )


def processes_running(module: str | ModuleType, *, old: bool = False) -> list[Pid]:
    """The live behaviour processes (of this node) running the current version of
    ``module`` (``old=True``: the old version), from the code server's registry."""
    name = _check_name(module)
    entry = _table.get(name)
    if entry is None:
        mod = sys.modules.get(name)
        if old or mod is None:
            return []
        version: _Loaded | None = _Loaded(mod, None, None, None)
    else:
        version = entry.old if old else entry.current
    if version is None:
        return []
    out = []
    for pid, cls in list(_PROCESSES.get().items()):
        if _runs(cls, version, name) and is_alive(pid):
            out.append(pid)
    return out


def check_process_code(pid: Pid, module: str | ModuleType) -> bool:
    """True if ``pid`` runs the old version of ``module`` (Erlang's
    ``check_process_code``)."""
    return pid in processes_running(module, old=True)


def _kill_all(pids: list[Pid]) -> None:
    refs = [monitor(p) for p in pids]
    for p in pids:
        exit(p, "kill")
    for ref in refs:
        receive(lambda m, r=ref: m.__class__ is Down and m.ref == r)
        demonitor(ref, flush=True)


def purge(module: str | ModuleType) -> bool:
    """Drop the old version of ``module``, killing the processes still running it.
    Returns True if some process was killed."""
    name = _check_name(module)
    entry = _table.get(name)
    if entry is None or entry.old is None:
        return False
    pids = processes_running(name, old=True)
    if pids:
        _kill_all(pids)
    entry.old = None
    if entry.current is None:
        del _table[name]
    return bool(pids)


def soft_purge(module: str | ModuleType) -> bool:
    """Drop the old version of ``module`` only if no process runs it: True if dropped
    (or there was none), False if some process still runs it."""
    name = _check_name(module)
    entry = _table.get(name)
    if entry is None or entry.old is None:
        return True
    if processes_running(name, old=True):
        return False
    entry.old = None
    if entry.current is None:
        del _table[name]
    return True


# --------------------------------------------------------------------------- queries


def is_loaded(module: str | ModuleType) -> bool:
    """Whether the module is loaded (in ``sys.modules``)."""
    return _check_name(module) in sys.modules


def which(module: str | ModuleType) -> str | None:
    """The file the module was loaded from, or for one not loaded, the file it would
    be loaded from; None if it has none (built in) or cannot be found."""
    name = _check_name(module)
    mod = sys.modules.get(name)
    if mod is not None:
        return getattr(mod, "__file__", None)
    try:
        spec = _find_spec(name)
    except CodeLoadError:
        return None
    origin = spec.origin
    return origin if isinstance(origin, str) and os.path.exists(origin) else None


def _version(status: str, v: _Loaded) -> Version:
    vsn = getattr(v.module, "__vsn__", None)
    if vsn is None and v.sha256 is not None:
        vsn = v.sha256[:12]
    return Version(status, v.module, v.file, v.sha256, None if vsn is None else str(vsn))


def versions(module: str | ModuleType) -> list[Version]:
    """The loaded versions of ``module``: the current one first, then the old one."""
    name = _check_name(module)
    entry = _table.get(name)
    if entry is None:
        mod = sys.modules.get(name)
        return [_version("current", _loaded(mod))] if mod is not None else []
    out = []
    if entry.current is not None:
        out.append(_version("current", entry.current))
    if entry.old is not None:
        out.append(_version("old", entry.old))
    return out


def modified_modules() -> list[str]:
    """The modules loaded through the code server (``load``, ``ensure_loaded``, the
    release handler) whose source file changed since: its mtime moved *and* its
    content hash differs (touching a file is not a change)."""
    out = []
    for name, entry in sorted(_table.items()):
        v = entry.current
        if v is None or v.file is None or v.sha256 is None:
            continue
        try:
            mtime = os.stat(v.file).st_mtime
        except OSError:
            out.append(name)  # the file is gone: what runs is no longer on disk
            continue
        if mtime == v.mtime:
            continue
        sha, _ = _source_info(v.file)
        if sha != v.sha256:
            out.append(name)
    return out


# --------------------------------------------------------------------------- the path


def add_path(directory: str | os.PathLike[str]) -> None:
    """Put ``directory`` first on the code path (``sys.path``), once."""
    d = os.fspath(directory)
    if d in sys.path:
        sys.path.remove(d)
    sys.path.insert(0, d)
    importlib.invalidate_caches()


def del_path(directory: str | os.PathLike[str]) -> bool:
    """Take ``directory`` off the code path; False if it was not on it."""
    d = os.fspath(directory)
    if d not in sys.path:
        return False
    while d in sys.path:
        sys.path.remove(d)
    return True


def replace_path(old: str | os.PathLike[str], new: str | os.PathLike[str]) -> list[str]:
    """Replace directory ``old`` by ``new`` on the code path (at the same place, or
    first), and in the ``__path__`` of every loaded package that lives under ``old``,
    so that modules loaded next come from ``new``. Returns the packages moved."""
    o, n = os.path.abspath(os.fspath(old)), os.path.abspath(os.fspath(new))
    placed = False
    for i, d in enumerate(sys.path):
        if os.path.abspath(d) == o if d else False:
            sys.path[i] = n
            placed = True
    if not placed:
        sys.path.insert(0, n)
    moved = []
    prefix = o + os.sep
    for name, mod in list(sys.modules.items()):
        path = getattr(mod, "__path__", None)
        if not isinstance(path, list):
            continue
        changed = False
        for i, d in enumerate(path):
            ad = os.path.abspath(d)
            if ad == o or ad.startswith(prefix):
                path[i] = n + ad[len(o):]
                changed = True
        if changed:
            moved.append(name)
    importlib.invalidate_caches()
    return sorted(moved)


def old_is(module: str | ModuleType, file: str | os.PathLike[str]) -> bool:
    """True if the old version of ``module`` was loaded from a source identical (by
    sha256) to ``file``: loading ``file`` would bring back the version that is old
    now, which ``reinstate`` does without a third version (and without purging the
    processes that still run it)."""
    name = _check_name(module)
    entry = _table.get(name)
    if entry is None or entry.old is None or entry.old.sha256 is None:
        return False
    sha, _ = _source_info(os.fspath(file))
    return sha == entry.old.sha256


def reinstate(module: str | ModuleType) -> ModuleType:
    """Make the old version of ``module`` current again, the current one old (a
    downgrade after an upgrade that only loaded the module: the processes that kept
    running the old version run the current one again, nobody is purged). Returns the
    module now current. ``CodeError`` if there is no old version."""
    name = _check_name(module)
    entry = _table.get(name)
    if entry is None or entry.old is None or entry.current is None:
        raise CodeError(f"cannot reinstate {name}: it has no old and current version")
    entry.current, entry.old = entry.old, entry.current
    mod = entry.current.module
    sys.modules[name] = mod
    parent, _, child = name.rpartition(".")
    if parent and parent in sys.modules:
        setattr(sys.modules[parent], child, mod)
    return mod


# --------------------------------------------------------------------------- undo
# For otp.release_handler's rollback: the code table, sys.modules and the parent
# package's attribute for one module, taken before a step and put back after a failure.


@dataclass(frozen=True)
class _Snapshot:
    name: str
    entry: tuple[_Loaded | None, _Loaded | None] | None
    module: ModuleType | None


def _snapshot(module: str) -> _Snapshot:
    entry = _table.get(module)
    return _Snapshot(
        module,
        None if entry is None else (entry.current, entry.old),
        sys.modules.get(module),
    )


def _restore(snap: _Snapshot) -> None:
    name = snap.name
    if snap.entry is None:
        _table.pop(name, None)
    else:
        _table[name] = _Entry(*snap.entry)
    parent, _, child = name.rpartition(".")
    pkg = sys.modules.get(parent) if parent else None
    if snap.module is None:
        sys.modules.pop(name, None)
        if pkg is not None and hasattr(pkg, child):
            delattr(pkg, child)
    else:
        sys.modules[name] = snap.module
        if pkg is not None:
            setattr(pkg, child, snap.module)
