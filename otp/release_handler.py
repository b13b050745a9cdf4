"""The release handler: unpack, install (live upgrade), make permanent, downgrade.
OTP's ``release_handler``, working on a *release root* (see ``otp.release``)::

    <root>/releases/RELEASES            [{version, status}]: permanent | current |
                                        unpacked | old
    <root>/releases/<vsn>/release.yaml  the release: applications and versions, config,
                                        ``lib`` (app -> lib dir), ``upgrades``
    <root>/lib/<app>-<vsn>/<app>/       an application's code; ``lib/<app>-<vsn>`` is
                                        on ``sys.path`` while that release runs

A live upgrade, from a process of the running node (the CLI's ``bin/chat upgrade
1.1.0`` does this through the remote shell)::

    from otp import release_handler as rh

    vsn = rh.unpack(root, "_build/chat-1.1.0.tar.gz")   # checks the MANIFEST
    rh.check_install(root, vsn)     # validates the instructions, touches nothing
    rh.install(root, vsn)           # applies them; rolls back on any failure
    rh.make_permanent(root, vsn)    # the next boot boots it (A6)

docs/upgrades.md walks an operator through one, from making the new version to going
back.

API:

==============================  ======================================================
``unpack(root, bundle)``        copy a bundle (a directory or a tarball holding
                                ``releases/<vsn>/release.yaml`` and ``lib/...``) into
                                the root; its ``MANIFEST`` (``<sha256>  <path>``
                                lines) must match; returns ``vsn`` (status unpacked)
``which_releases(root)``        ``[(vsn, status)]``
``check_install(root, vsn)``    the instructions from the current release to ``vsn``,
                                validated against the unpacked code and the running
                                node; raises ``ReleaseError`` saying what is wrong
``install(root, vsn)``          upgrade to ``vsn`` (status current); returns the
                                version upgraded from
``make_permanent(root, vsn)``   ``vsn`` becomes the one booted; the previous permanent
                                one becomes old
``downgrade(root, vsn)``        back to an earlier release: the inverse instructions,
                                ``code_change(("down", vsn), state, extra)``
``current(root)``               the running release (current, else permanent)
``permanent(root)``             the permanent release (None if none yet)
``boot_version(root)``          what a node started on ``root`` boots: the permanent
                                release (A6)
``boot(root)``                  at node start: put the boot release's lib dirs on the
                                path, forget a current release that was not made
                                permanent (A6); returns its spec
``install(root, vsn,            keep ``vsn`` only if ``health()`` is true within
health=f, within=30)``          ``within`` seconds (node clock); else downgrade back
``dry_run(root, vsn)``          every ``code_change`` on copies of the live states;
                                a ``DryRun`` listing the failures; nothing touched
``remove(root, vsn)``           delete an unpacked or old release (and the lib dirs
                                no other release uses)
``last_upgrade(root)``          ``UpgradeRecord``: the last install/downgrade, its
                                plan, steps (timed), outcome, longest suspension
==============================  ======================================================

Upgrade instructions live in the *new* release's ``release.yaml``, one entry per
release it can be upgraded from (OTP's appup/relup, per application)::

    upgrades:
      - from: 1.0.0
        instructions:                       # applied in order
          - [load_module, chat.protocol]    # load the new version of a module
          - [update, chat.users, {extra: {rename: true}}]
          - [restart_application, chat]
          - [add_module, chat.media]        # a module new in this release
          - [delete_module, chat.old_stuff]
        down: [...]                         # optional; default: the inverse

(A mapping form works too: ``{update: chat.users, extra: ...}``; so does ``apps:
{chat: [...], ...}`` instead of ``instructions``, applied app by app.)

What each instruction does:

- ``load_module m``: ``otp.code.load(m)`` from the new lib dirs (m's old version is
  kept as old; running servers keep their class; nobody is suspended). When the
  version to load is the one kept as old -- going back after a ``load_module``
  upgrade, or up again after that -- it is made current again (``otp.code.reinstate``)
  instead of being loaded a third time, which would purge (kill) the processes that
  never left it.
- ``update t``: ``t`` is a registered name (the server registered under it) or a
  module (every ``gen_server`` running a class of it). A name that is both means
  the server only if it runs code of ``t`` (its class's module is ``t`` or inside
  package ``t``), else the module: ``chat.users`` is the module of the user
  processes *and* the registered name of their supervisor, which runs
  ``otp.supervisor`` (updating it would load a second ``otp.supervisor`` under
  every other supervisor). The module is loaded (once per install) -- processes
  that start from then on run the new code -- then the processes still running the
  old version are moved **one at a time**, each by one system message
  (``otp.sys.migrate(pid, module, old_vsn, extra)``): between two of its messages the
  process copies its state, runs the new class's ``code_change`` and takes the new
  class -- what suspend, ``change_code`` and resume do, in one round trip. Each
  process is held only for its own migration; the others keep serving. A listed process that exited
  meanwhile (a server stopping when idle) is skipped. ``old_vsn`` is the version the
  module's application had in the release upgraded from (the release's version for
  a module of no listed application).
- ``restart_application app``: stop it, load the new version of its package and of
  its loaded modules, start it again with the new ``APP`` spec (its release
  ``start_type``; ``load``: not started).
- ``add_module m`` / ``delete_module m``: load a new module / unload one (processes
  running it are killed).

Downgrade (``downgrade(root, vsn)``) applies the ``down`` instructions of the current
release's entry ``from: vsn``, or else its instructions with ``add_module`` and
``delete_module`` swapped, in the *same* order (a module that did ``from pkg import
util`` holds the util module present when it loaded: dependencies load first, both
ways). ``update`` loads the older module first (processes that start from then on run
it; during the downgrade ``sys.modules[m]`` is the older version), then moves the
processes on the newer code back one at a time: the *newer* class's
``code_change(("down", app_vsn), state, extra)`` -- the newer code knows both state
shapes, as in Erlang -- then the older class.

Before the instructions, the lib dirs of applications whose version changes are
swapped on the code path (``otp.code.replace_path``), so modules load from the new
release, and the applications the new release drops are stopped; after them, the
applications it adds are started (OTP's ``add_application`` / ``remove_application``).
An application that keeps running without a ``restart_application`` keeps the
``AppSpec`` it started with, its ``vsn`` set to the new release's.

Failure semantics:

- ``unpack`` refuses (``ReleaseError``, nothing written) a bundle whose ``MANIFEST``
  does not match (a checksum, a missing file, a file it does not list), a version
  already in the root, or a lib dir that exists with other contents.
- ``install`` refuses a version that is not unpacked, the running version, and
  everything ``check_install`` finds, before touching anything.
- A step that fails (a module that does not load, a ``code_change`` that raises, an
  application that does not start) rolls back every step done so far, in reverse.
  The processes an ``update`` moved are migrated back one at a time by the class they
  run now (``code_change(("down", old_vsn), ...)`` after an upgrade step,
  ``code_change(old_vsn, ...)`` after a downgrade step) and take their old class
  again -- so what they did on the new code since is kept, and no copy of every state
  is made up front; the process whose ``code_change`` failed gets its copied state
  back. A process whose reverse migration fails too is killed once the rollback is
  over (its supervisor restarts it on the old code) and named in
  ``rollback_problems``. Then modules get their old version, the code path its old
  directories, applications their old code. (``check_install`` refuses a module
  whose *old* version some process still runs, as OTP's soft purge check does: the
  load would kill it, and a kill cannot be undone.) The release stays the old one and
  ``UpgradeError`` says which step failed and why (``__cause__``) and whether the
  rollback itself met problems (``rollback_problems``).
- ``unpack`` refuses a bundle whose ``upgrades`` entry has no instructions (it would
  be made permanent while changing no running code), and a version already in the
  root (``remove`` it first to replace it).
- Every install and downgrade logs its plan, each step, its outcome and its rollback
  on the ``otp.release_handler`` logger (``run/<name>.log`` of a release node), and
  ``last_upgrade`` keeps them for ``bin/<name> status``. After one, the running
  applications' descriptors carry the new versions (``which_applications``).
- Only one install or downgrade runs at a time per root.

The root's files are read and written synchronously (the hub waits while a bundle is
copied: these are rare operator commands).

When not to use it: for a program that can simply restart; and a change that
reshapes the supervision tree is a ``restart_application``, not a series of updates.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import yaml

from otp import _release_dry_run as _dry
from otp import _release_instructions as _instr
from otp import _release_unpack as _unpack
from otp import application, code
from otp import sys as otp_sys
from otp._release_dry_run import DryRun
from otp._release_instructions import Instruction
from otp.errors import CallError, UpgradeError
from otp.process import Pid, is_alive, now, sleep, whereis
from otp.process import exit as exit_process
from otp.release import (
    AppEntry,
    ReleaseError,
    ReleaseSpec,
    load_spec,
    permanent_or_last,
    read_releases,
)

__all__ = [
    "DryRun",
    "ReleaseError",
    "UpgradeError",
    "UpgradeRecord",
    "boot",
    "boot_version",
    "check_install",
    "current",
    "downgrade",
    "dry_run",
    "install",
    "last_upgrade",
    "make_permanent",
    "permanent",
    "remove",
    "unpack",
    "which_releases",
]

Status = Literal["permanent", "current", "unpacked", "old"]

log = logging.getLogger("otp.release_handler")



# ------------------------------------------------------------------------ RELEASES


def _releases_file(root: Path) -> Path:
    return root / "releases" / "RELEASES"


def _read(root: Path) -> list[dict[str, str]]:
    if not _releases_file(root).exists():
        return []
    return read_releases(root)


def _write(root: Path, entries: list[dict[str, str]]) -> None:
    path = _releases_file(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(".RELEASES.tmp")
    tmp.write_text(
        "# releases of this root and their status (otp.release_handler)\n"
        + yaml.safe_dump(entries, sort_keys=False)
    )
    os.replace(tmp, path)


def _set_status(root: Path, changes: dict[str, str]) -> None:
    entries = _read(root)
    for e in entries:
        if e["version"] in changes:
            e["status"] = changes[e["version"]]
    _write(root, entries)


def which_releases(root: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """Every release of the root with its status: ``permanent`` (booted by default),
    ``current`` (installed in the running node, not yet permanent), ``unpacked``,
    ``old`` (was permanent)."""
    return [(e["version"], e["status"]) for e in _read(Path(root))]


def _with_status(root: Path, status: str) -> str | None:
    for e in _read(root):
        if e["status"] == status:
            return e["version"]
    return None


def permanent(root: str | os.PathLike[str]) -> str | None:
    """The permanent release (the one a node boots), None if there is none yet."""
    return _with_status(Path(root), "permanent")


# resolved root -> the release this OS process booted or installed there: what runs.
_running: dict[str, str] = {}


def _key(root: Path) -> str:
    return str(root.resolve())


def _booted_here(root: Path) -> str | None:
    """The version ``bin/<name>`` booted this OS process with, if it booted ``root``."""
    broot = os.environ.get("OTP_RELEASE_ROOT")
    if broot and os.path.realpath(broot) == _key(root):
        return os.environ.get("OTP_RELEASE_VSN") or None
    return None


def current(root: str | os.PathLike[str]) -> str:
    """The release running now: the one this node installed (or booted), else the one
    installed but not made permanent, else the permanent one. A release left
    ``current`` by a node that ran before this one is not running (A6)."""
    r = Path(root)
    mine = _running.get(_key(r))
    if mine is not None:
        return mine
    cur = _with_status(r, "current")
    booted = _booted_here(r)
    if cur is not None and booted is not None and booted != cur:
        return booted
    vsn = cur or _with_status(r, "permanent")
    if vsn is None:
        raise ReleaseError(f"{root}: no current or permanent release in releases/RELEASES")
    return vsn


def boot_version(root: str | os.PathLike[str]) -> str:
    """The version a node started on ``root`` boots: the permanent release (A6: a
    release installed but not made permanent is abandoned at the next restart); with
    none permanent yet, the last one listed."""
    return permanent_or_last(root, _read(Path(root)))


def _spec(root: Path, vsn: str) -> ReleaseSpec:
    path = root / "releases" / vsn / "release.yaml"
    if not path.is_file():
        raise ReleaseError(
            f"release {vsn} is not unpacked in {root} (no {path}): unpack its bundle first"
        )
    return load_spec(path)


def _lib_dir(root: Path, spec: ReleaseSpec, app: AppEntry) -> Path:
    return root / spec.lib.get(app.name, f"lib/{app.name}-{app.version}")


def boot(root: str | os.PathLike[str]) -> ReleaseSpec:
    """Prepare a node starting on ``root``: the boot release's lib dirs go first on the
    code path, and a release left ``current`` (installed, never made permanent) by
    the previous run becomes ``unpacked`` again (A6). Returns the boot release's spec;
    starting its applications is the caller's business."""
    r = Path(root)
    vsn = boot_version(r)
    spec = _spec(r, vsn)
    stale = {e["version"]: "unpacked" for e in _read(r)
             if e["status"] == "current" and e["version"] != vsn}  # fmt: skip
    if stale:
        _set_status(r, stale)
    for app in reversed(spec.applications):
        d = _lib_dir(r, spec, app)
        if d.is_dir():
            code.add_path(d)
    _running[_key(r)] = vsn
    return spec


def make_permanent(root: str | os.PathLike[str], vsn: str) -> None:
    """Make ``vsn`` the release the node boots. It must be the current one (installed),
    or any unpacked one when the root has no permanent release yet (the first). The
    previous permanent release becomes ``old``."""
    r = Path(root)
    entries = _read(r)
    status = {e["version"]: e["status"] for e in entries}
    if vsn not in status:
        raise ReleaseError(f"release {vsn} is not in {root} (releases: {which_releases(r)})")
    if status[vsn] == "permanent":
        return
    before = [v for v, s in status.items() if s == "permanent"]
    if status[vsn] != "current" and before:
        raise ReleaseError(
            f"release {vsn} is {status[vsn]}, not installed: install it before making it "
            f"permanent (the running release is {current(r)})"
        )
    changes = {v: "old" for v in before}
    changes[vsn] = "permanent"
    _set_status(r, changes)


# ------------------------------------------------------------------------ unpack


def unpack(root: str | os.PathLike[str], bundle: str | os.PathLike[str]) -> str:
    """Unpack a release bundle (a directory, or a tarball made by ``otp release
    build``) into ``root``; returns its version, now ``unpacked``.

    Copies ``releases/<vsn>/`` and the ``lib/<app>-<vsn>/`` dirs it lacks (a lib dir
    already there must have the same contents); keeps the bundle's ``MANIFEST`` as
    ``releases/<vsn>/MANIFEST``. Into an empty root, ``bin/`` and ``MANIFEST`` are
    copied too. ``ReleaseError`` (nothing written) for a bad bundle, one whose
    upgrade instructions are empty, or a version the root has already."""
    return _unpack.unpack(root, bundle)


def remove(root: str | os.PathLike[str], vsn: str) -> list[str]:
    """Delete release ``vsn`` from ``root`` (OTP's ``remove_release``): its
    ``releases/<vsn>/`` and the lib dirs no other release of the root uses, and its
    ``RELEASES`` entry. Refused for the running release and the permanent one.
    Returns the directories deleted (relative to the root)."""
    return _unpack.remove(root, vsn)


# ------------------------------------------------------------------------ instructions


def _app_versions(spec: ReleaseSpec) -> dict[str, str]:
    return {a.name: a.version for a in spec.applications}


@dataclass
class _Plan:
    root: Path
    old: ReleaseSpec
    new: ReleaseSpec
    direction: str  # "up" | "down"
    steps: list[Instruction]

    @property
    def word(self) -> str:
        return "upgrade" if self.direction == "up" else "downgrade"


def _plan(root: Path, vsn: str, direction: str) -> _Plan:
    if not isinstance(vsn, str) or not vsn:
        raise ReleaseError(f"expected a release version (str), got {vsn!r}")
    status = dict(which_releases(root))
    running = current(root)
    if vsn not in status:
        raise ReleaseError(
            f"release {vsn} is not unpacked in {root}: unpack its bundle first "
            f"(releases: {sorted(status.items())})"
        )
    if vsn == running:
        raise ReleaseError(f"release {vsn} is already the running release of {root}")
    old, new = _spec(root, running), _spec(root, vsn)
    if old.name != new.name:
        raise ReleaseError(f"release {vsn} is of {new.name!r}, the running one of {old.name!r}")
    if direction == "up":
        where = f"releases/{vsn}/release.yaml upgrades"
        entry = _instr.entry_from(new, running, where)
        raw = entry.get("instructions", entry.get("apps")) if entry else None
        steps = _instr.instructions(raw, f"{where} (from {running})")
    else:
        where = f"releases/{running}/release.yaml upgrades"
        entry = _instr.entry_from(old, vsn, where)
        if entry is not None and "down" in entry:
            steps = _instr.instructions(entry["down"], f"{where} (down to {vsn})")
        else:
            raw = entry.get("instructions", entry.get("apps")) if entry else None
            steps = _instr.inverse(_instr.instructions(raw, f"{where} (from {vsn})"))
    if entry is None and _app_versions(old) != _app_versions(new):
        if direction == "up" and _instr.entry_from(old, vsn, "") is not None:
            hint = f" (release {running} can be downgraded to {vsn}: use downgrade)"
        else:
            hint = ""
        raise ReleaseError(
            f"no upgrade path between {running} and {vsn}: the release.yaml of "
            f"{vsn if direction == 'up' else running} has no upgrades entry "
            f"from {running if direction == 'up' else vsn}{hint}"
        )
    plan = _Plan(root, old, new, direction, steps)
    _validate(plan)
    return plan


def _module_file(root: Path, spec: ReleaseSpec, module: str) -> Path | None:
    rel = module.replace(".", "/")
    for app in spec.applications:
        base = _lib_dir(root, spec, app)
        for cand in (base / f"{rel}.py", base / rel / "__init__.py"):
            if cand.is_file():
                return cand
    return None


def _check_module(plan: _Plan, module: str, where: str) -> None:
    path = _module_file(plan.root, plan.new, module)
    if path is None:
        raise ReleaseError(
            f"{where}: module {module} is not in release {plan.new.version}'s lib dirs "
            f"({', '.join(str(_lib_dir(plan.root, plan.new, a)) for a in plan.new.applications)})"
        )
    try:
        code._compile(path.read_bytes(), str(path))
    except SyntaxError as e:
        raise ReleaseError(
            f"{where}: module {module} does not compile: {e.filename}, line {e.lineno}: {e.msg}"
        ) from e
    old = code.processes_running(module, old=True)
    if old and not code.old_is(module, path):
        # Loading it again purges that old version (A3): those processes would be killed.
        raise ReleaseError(
            f"{where}: {len(old)} process(es) still run the old version of {module} "
            f"({', '.join(map(repr, old))}) and would be killed by the load: move them "
            f"to the current code (otp.sys.change_code) or purge it (otp.code.purge) first"
        )


def _validate(plan: _Plan) -> None:
    r, new = plan.root, plan.new
    for app in new.applications:
        d = _lib_dir(r, new, app)
        if not d.is_dir():
            raise ReleaseError(f"release {new.version}: application {app.name} has no {d}")
    apps = {a.name for a in new.applications}
    for i, step in enumerate(plan.steps):
        where = f"release {new.version}, instruction {i} {list(step[:2])}"
        op, target = step[0], step[1]
        if op in ("load_module", "add_module"):
            _check_module(plan, target, where)
        elif op == "update":
            pid = _named_server(plan, target)
            if pid is not None:
                cls = code.process_class(pid)
                if cls is None:
                    raise ReleaseError(
                        f"{where}: the process registered as {target!r} ({pid!r}) is not "
                        "a behaviour process: it cannot be suspended and updated"
                    )
                _check_module(plan, cls.__module__, where)
            elif "." in target or code.is_loaded(target) or _module_file(r, new, target):
                _check_module(plan, target, where)
            else:
                raise ReleaseError(
                    f"{where}: no process is registered as {target!r} and no module of "
                    "that name exists"
                )
        elif op == "restart_application":
            if target not in apps:
                raise ReleaseError(
                    f"{where}: application {target} is not in release {new.version} "
                    f"(it has {sorted(apps)})"
                )
        elif op == "delete_module" and not code.is_loaded(target):
            raise ReleaseError(f"{where}: module {target} is not loaded")


def check_install(root: str | os.PathLike[str], vsn: str) -> list[Instruction]:
    """Validate an upgrade from the running release to ``vsn`` without changing
    anything: ``vsn`` is unpacked and is not the running one, an upgrade path exists,
    every application has its lib dir, every module named exists there and compiles,
    every registered name named is a running ``gen_server``, every application
    restarted is in the release. Returns the instructions that ``install`` would
    apply; ``ReleaseError`` says what is wrong."""
    return list(_plan(Path(root), vsn, "up").steps)


# ------------------------------------------------------------------------ applying


@dataclass
class _Run:
    plan: _Plan
    undo: list[tuple[str, Callable[..., Any]]] = field(default_factory=list)
    loaded: set[str] = field(default_factory=set)
    doomed: list[Pid] = field(default_factory=list)  # killed once the rollback is over
    log: list[str] = field(default_factory=list)  # what was done, for last_upgrade
    t0: float = field(default_factory=time.monotonic)
    longest: float = 0.0  # the longest time one process was suspended

    def do(self, what: str, undo: Callable[..., Any]) -> None:
        self.undo.append((what, undo))


_busy: set[Path] = set()


@contextmanager
def _exclusive(root: Path) -> Iterator[None]:
    key = root.resolve()
    if key in _busy:
        raise ReleaseError(f"an install or downgrade is already running on {root}")
    _busy.add(key)
    try:
        yield
    finally:
        _busy.discard(key)


def _switch_paths(run: _Run) -> None:
    r, old, new = run.plan.root, run.plan.old, run.plan.new
    olds = {a.name: a for a in old.applications}
    for app in new.applications:
        nd = _lib_dir(r, new, app)
        od = _lib_dir(r, old, olds[app.name]) if app.name in olds else None
        if od is None:
            code.add_path(nd)
            run.do(f"add {nd} to the code path", lambda nd=nd: code.del_path(nd))
        elif od != nd:
            code.replace_path(od, nd)
            run.do(f"replace {od} by {nd} on the code path",
                   lambda od=od, nd=nd: code.replace_path(nd, od))  # fmt: skip


def _load(run: _Run, module: str) -> None:
    if module in run.loaded:
        return
    _log_step(run, f"loading {module}")
    snap = code._snapshot(module)
    file = _module_file(run.plan.root, run.plan.new, module)
    if file is not None and code.old_is(module, file):
        # The version to load is the one kept as old (going back after an upgrade, or
        # up again after a downgrade): it becomes current again, so the processes
        # that never left it (a load_module upgrade) keep running, none is purged.
        code.reinstate(module)
        how = "reinstate the kept version of"
    else:
        code.load(module)
        how = "load"
    run.loaded.add(module)
    run.do(f"{how} {module}", lambda: code._restore(snap))
    _log_step(run, f"{how} {module}")


def _app_of(spec: ReleaseSpec, module: str) -> str | None:
    top = module.split(".")[0]
    return top if top in _app_versions(spec) else None


def _named_server(plan: _Plan, target: str) -> Pid | None:
    """The process ``update target`` names by its registered name, or None when
    ``target`` names a module (see the module docstring)."""
    pid = whereis(target)
    if pid is None or _module_file(plan.root, plan.new, target) is None:
        return pid
    cls = code.process_class(pid)
    mod = cls.__module__ if cls is not None else ""
    return pid if mod == target or mod.startswith(target + ".") else None


def _update(run: _Run, target: str, extra: Any) -> None:
    plan = run.plan
    pid = _named_server(plan, target)
    if pid is not None:
        cls = code.process_class(pid)
        if cls is None:
            raise ReleaseError(f"{target!r} ({pid!r}) is not a behaviour process")
        module, named = cls.__module__, [pid]
    else:
        module, named = target, None
    if plan.direction == "up":
        app = _app_of(plan.old, module)
        old_vsn: Any = _app_versions(plan.old)[app] if app else plan.old.version
        # Load first: a process that starts from now on runs the new code, so the ones
        # to move are exactly those left on the old version (listing them first and
        # loading after would leave a process started in between on the old code,
        # killed by the next load).
        _load(run, module)
        pids = named if named is not None else code.processes_running(module, old=True)
        _move_up(run, pids, sys.modules[module], old_vsn, extra)
    else:
        app = _app_of(plan.new, module)
        down: Any = ("down", _app_versions(plan.new)[app] if app else plan.new.version)
        # The older module loads first (processes that start from now on run it), then
        # the processes still on the newer code move back one at a time; the newer
        # code's classes stay reachable through each process's class.
        newer = _classes(named if named is not None else code.processes_running(module))
        _load(run, module)
        if named is None:
            newer.update(_classes(code.processes_running(module, old=True)))
        _move_down(run, list(newer), module, down, extra, newer)


def _classes(pids: list[Pid]) -> dict[Pid, type]:
    classes = {}
    for pid in pids:
        cls = code.process_class(pid)
        if cls is not None:
            classes[pid] = cls
    return classes


@dataclass
class _Moved:
    """The processes one ``update`` moved so far, each with the class it ran before
    and what undoes its migration (the reverse ``code_change``)."""

    module: str
    back: Any  # the old_vsn that migrates a moved process back (see _undo_moves)
    extra: Any
    done: list[tuple[Pid, type, type]] = field(default_factory=list)  # pid, from, to


def _one(run: _Run, pid: Pid, new: Any, vsn: Any, extra: Any,
         then: type | None = None) -> tuple[type, type] | None:
    """Move one process with ``otp.sys.migrate``: in one system message, between two
    of its messages, it runs ``new``'s ``code_change(vsn, state, extra)`` and takes
    class ``then`` if given; on failure it keeps its class and (a copy of) its state.
    Returns (class before, class after), or None when the process exited first."""
    before = code.process_class(pid)
    if before is None:  # exited meanwhile
        return None
    t = time.perf_counter()
    try:
        otp_sys.migrate(pid, new, vsn, extra, then)
    except CallError:
        if is_alive(pid):
            raise
        return None
    finally:
        run.longest = max(run.longest, time.perf_counter() - t)
    return before, code.process_class(pid) or before


def _move_up(run: _Run, pids: list[Pid], new_module: Any, old_vsn: Any, extra: Any) -> None:
    """Move ``pids`` to ``new_module`` one process at a time: each is suspended only
    for its own ``code_change`` (no device waits for the others). The undo migrates
    the processes moved so far back with the new code's ``code_change(("down",
    old_vsn), ...)`` and their old class, one at a time too."""
    moved = _Moved(new_module.__name__, ("down", old_vsn), extra)
    run.do(f"update {moved.module} ({old_vsn} -> new)", lambda: _undo_moves(run, moved))

    _log_step(run, f"update {moved.module}: moving {len(pids)} process(es)")
    for pid in pids:
        r = _one(run, pid, new_module, old_vsn, extra)
        if r is not None:
            moved.done.append((pid, *r))
    _log_step(run, f"update {moved.module}: {len(moved.done)} process(es) moved to the new "
                   f"code one at a time")


def _move_down(run: _Run, pids: list[Pid], module: str, down: Any, extra: Any,
               newer: dict[Pid, type]) -> None:
    """Move ``pids`` (running the newer code, ``newer[pid]``) back to the older
    version of ``module`` (loaded already, current): per process, the newer class's
    ``code_change(down, ...)`` then the older class. The undo runs the newer class's
    ``code_change(down[1], ...)`` (up again)."""
    older = sys.modules[module]
    moved = _Moved(module, down[1], extra)
    run.do(f"update {module} (back to {down[1]})", lambda: _undo_moves(run, moved))
    _log_step(run, f"update {module}: moving {len(pids)} process(es) back")

    for pid in pids:
        cls_newer = newer.get(pid) or code.process_class(pid)
        if cls_newer is None:
            continue
        cls_older = code._lookup(older, cls_newer.__qualname__)
        if not isinstance(cls_older, type):
            raise ReleaseError(
                f"module {module} of release {run.plan.new.version} has no class "
                f"{cls_newer.__qualname__} for {pid!r}"
            )
        # The newer code knows both state shapes: it migrates down, then the process
        # takes the older class without another migration.
        r = _one(run, pid, cls_newer, down, extra, then=cls_older)
        if r is not None:
            moved.done.append((pid, *r))
    _log_step(run, f"update {module}: {len(moved.done)} process(es) moved back one at a time")


def _undo_moves(run: _Run, moved: _Moved) -> None:
    """Roll back the processes an ``update`` moved, newest first, one at a time: the
    class they run now migrates the state back (``code_change(moved.back, ...)``),
    then they take their class of before. A process whose reverse migration fails
    cannot be trusted with either state: it is killed once the rollback is over (its
    supervisor restarts it on the old code) and the problem reported."""
    problems = []
    for pid, before, after in reversed(moved.done):
        if not is_alive(pid):
            continue
        try:
            _one(run, pid, after, moved.back, moved.extra, then=before)
        except Exception as e:
            run.doomed.append(pid)
            problems.append(f"{pid!r}: {e!r}")
    moved.done.clear()
    if problems:
        raise ReleaseError(
            f"the reverse code_change of {moved.module} failed for {len(problems)} "
            f"process(es), killed so that their supervisors restart them on the old "
            f"code: {'; '.join(problems[:5])}"
        )


def _restart_application(run: _Run, app: str) -> None:
    plan = run.plan
    running = {a.name for a in application.which_applications()}
    olds = {a.name: a for a in plan.old.applications}
    news = {a.name: a for a in plan.new.applications}
    old_type = olds[app].start_type if app in olds else "temporary"
    new_type = news[app].start_type
    if app in running:
        application.stop(app)

        def start_old() -> None:
            if app not in {a.name for a in application.which_applications()}:
                application.start(app, type="temporary" if old_type == "load" else old_type)

        run.do(f"stop application {app}", start_old)
    if app in {a.name for a in application.loaded_applications()}:
        application.unload(app)
    # The package and its loaded modules, dependencies first: sys.modules is in the
    # order imports *completed* (the import system re-inserts a module after running
    # it), so a package's __init__ comes after the modules it imports.
    names = [n for n in sys.modules if n == app or n.startswith(app + ".")]
    for name in names:
        _load(run, name)
    def stop_new() -> None:
        if app in {a.name for a in application.which_applications()}:
            application.stop(app)
        if app in {a.name for a in application.loaded_applications()}:
            application.unload(app)  # the old code's APP is found again at start

    # Recorded first: a start that fails leaves the new spec loaded.
    run.do(f"start application {app}", stop_new)
    if new_type != "load":
        application.start(app, type=new_type)


def _running_apps() -> set[str]:
    return {a.name for a in application.which_applications()}


def _stop_removed(run: _Run) -> None:
    """Applications of the old release that the new one no longer has are stopped
    (their modules stay loaded), before the instructions run."""
    news = {a.name for a in run.plan.new.applications}
    for app in reversed(run.plan.old.applications):
        if app.name in news or app.name not in _running_apps():
            continue
        application.stop(app.name)
        start_type = "temporary" if app.start_type == "load" else app.start_type
        run.do(f"stop application {app.name}",
               lambda n=app.name, t=start_type: application.start(n, type=t))  # fmt: skip


def _start_added(run: _Run) -> None:
    """Applications new in this release are started after the instructions (in the
    release's order; ``start_type: load`` ones are not)."""
    olds = {a.name for a in run.plan.old.applications}
    for app in run.plan.new.applications:
        if app.name in olds or app.start_type == "load" or app.name in _running_apps():
            continue

        def undo(n: str = app.name) -> None:
            if n in _running_apps():
                application.stop(n)
            if n in {a.name for a in application.loaded_applications()}:
                application.unload(n)

        run.do(f"start application {app.name}", undo)
        application.start(app.name, type=app.start_type)


def _delete_module(run: _Run, module: str) -> None:
    snap = code._snapshot(module)
    code.delete(module)
    code.purge(module)
    run.do(f"delete {module}", lambda: code._restore(snap))


def _apply(run: _Run, step: Instruction) -> None:
    op = step[0]
    if op == "load_module" or op == "add_module":
        _load(run, step[1])
    elif op == "update":
        _update(run, step[1], step[2]["extra"])
    elif op == "restart_application":
        _restart_application(run, step[1])
    elif op == "delete_module":
        _delete_module(run, step[1])


def _rollback(run: _Run) -> list[str]:
    problems = []
    for what, fn in reversed(run.undo):
        try:
            fn()
            _log_step(run, f"rolled back: {what}")
        except Exception as e:
            problems.append(f"undo of {what!r} failed: {e!r}")
            _log_step(run, f"rollback of {what!r} failed: {e!r}", logging.ERROR)
    for pid in run.doomed:
        exit_process(pid, "kill")
    return problems


class UpgradeRecord(NamedTuple):
    """The last install or downgrade on a root, from ``last_upgrade``: what an
    operator reads in ``bin/<name> status``."""

    word: str  # "upgrade" | "downgrade"
    from_vsn: str
    to_vsn: str
    outcome: str  # "ok" | "rolled back" | "running"
    at: float  # time.time() when it started
    seconds: float
    steps: tuple[str, ...]  # the plan, then what was done (and undone)
    error: str | None = None
    longest_suspension: float = 0.0  # seconds, the longest any one process was suspended


# resolved root -> the last install/downgrade there (this OS process)
_history: dict[str, UpgradeRecord] = {}


def last_upgrade(root: str | os.PathLike[str]) -> UpgradeRecord | None:
    """The last install or downgrade this node ran on ``root``, None if none."""
    return _history.get(_key(Path(root)))


def _log_step(run: _Run, text: str, level: int = logging.INFO) -> None:
    run.log.append(f"+{time.monotonic() - run.t0:.3f} s {text}")
    log.log(level, "%s %s -> %s: %s", run.plan.word, run.plan.old.version,
            run.plan.new.version, text)


def _set_app_versions(spec: ReleaseSpec) -> None:
    """The running applications' descriptors say the versions of ``spec`` (what
    ``which_applications`` and ``status`` show): an application upgraded by
    instructions keeps running the ``AppSpec`` it started with otherwise."""
    table = application._table()
    for app in spec.applications:
        old = table.specs.get(app.name)
        if old is not None and old.vsn != app.version:
            table.specs[app.name] = dataclasses.replace(old, vsn=app.version)


def _execute(root: Path, vsn: str, direction: str) -> str:
    with _exclusive(root):
        plan = _plan(root, vsn, direction)
        from_vsn = plan.old.version
        run = _Run(plan)
        t0, wall = time.monotonic(), time.time()
        word = plan.word
        log.info("%s of %s from %s to %s: plan %s", word, plan.old.name, from_vsn, vsn,
                 [list(step[:2]) for step in plan.steps] or "(no instructions)")
        run.log.append(f"plan: {[list(step[:2]) for step in plan.steps]}")
        saved_path = list(sys.path)
        at: Any = "switching the code path"
        try:
            _switch_paths(run)
            at = "stopping the applications the new release drops"
            _stop_removed(run)
            for i, step in enumerate(plan.steps):
                at = (i, step)
                _apply(run, step)
            at = "starting the applications the new release adds"
            _start_added(run)
        except Exception as e:
            where = f"instruction {at[0]} {list(at[1][:2])}" if isinstance(at, tuple) else at
            _log_step(run, f"failed at {where}: {e!r}; rolling back", logging.ERROR)
            problems = _rollback(run)
            sys.path[:] = saved_path
            msg = (f"{word} of {plan.old.name} from {from_vsn} to {vsn} failed at {where}: "
                   f"{e}; rolled back, {from_vsn} is still running"
                   + (f" (rollback problems: {'; '.join(problems)})" if problems else ""))
            log.error("%s", msg)
            _history[_key(root)] = UpgradeRecord(
                word, from_vsn, vsn, "rolled back", wall, time.monotonic() - t0,
                tuple(run.log), msg, run.longest)
            raise UpgradeError(
                msg, from_vsn=from_vsn, to_vsn=vsn, step=at, rollback_problems=problems,
            ) from e  # fmt: skip
        _set_app_versions(plan.new)
        status = dict(which_releases(root))
        changes = {}
        if status.get(from_vsn) != "permanent":
            changes[from_vsn] = "unpacked"
        if status.get(vsn) != "permanent":
            changes[vsn] = "current"
        for v, s in status.items():  # at most one current
            if s == "current" and v not in changes:
                changes[v] = "unpacked"
        _set_status(root, changes)
        _running[_key(root)] = vsn
        took = time.monotonic() - t0
        log.info("%s of %s from %s to %s done in %.2f s (no process suspended longer "
                 "than %.1f ms)", word, plan.old.name, from_vsn, vsn, took, run.longest * 1e3)
        _history[_key(root)] = UpgradeRecord(word, from_vsn, vsn, "ok", wall, took,
                                             tuple(run.log), None, run.longest)
        return from_vsn


def install(root: str | os.PathLike[str], vsn: str, *,
            health: Callable[[], bool] | None = None, within: float = 30.0,
            interval: float = 1.0) -> str:
    """Upgrade the running node from the current release to ``vsn`` (which becomes
    ``current``; ``make_permanent`` to keep it across restarts). Returns the version
    upgraded from. ``ReleaseError`` before anything changed (see ``check_install``);
    ``UpgradeError`` when a step failed and everything was rolled back. Runs in a
    process of the node.

    ``health``: once installed, the upgrade stands only if ``health()`` returns true
    (it is called every ``interval`` seconds, at most ``within`` seconds of the node's
    clock); if it never does (false, or an exception), the node is downgraded back to
    the version it left and ``UpgradeError`` says so."""
    r = Path(root)
    from_vsn = _execute(r, vsn, "up")
    if health is not None:
        _health_gate(r, vsn, from_vsn, health, within, interval)
    return from_vsn


def _health_gate(root: Path, vsn: str, from_vsn: str, health: Callable[[], bool],
                 within: float, interval: float) -> None:
    deadline = now() + within
    tries, last = 0, "not run"
    while True:
        tries += 1
        try:
            ok = bool(health())
            last = "it returned false"
        except Exception as e:
            ok, last = False, f"it raised {e!r}"
        if ok:
            log.info("upgrade to %s: healthy after %d check(s)", vsn, tries)
            rec = _history.get(_key(root))
            if rec is not None:
                _history[_key(root)] = rec._replace(
                    steps=(*rec.steps, f"health check passed after {tries} tries"))
            return
        left = deadline - now()
        if left <= 0:
            break
        sleep(min(interval, left))
    why = f"health check failed {tries} time(s) within {within:g} s ({last})"
    log.error("upgrade to %s: %s; rolling back to %s", vsn, why, from_vsn)
    try:
        _execute(root, from_vsn, "down")
    except Exception as e:
        raise UpgradeError(
            f"upgrade to {vsn}: {why}; the rollback to {from_vsn} failed too: {e}",
            from_vsn=from_vsn, to_vsn=vsn, step="health check",
            rollback_problems=[str(e)]) from e  # fmt: skip
    _history[_key(root)] = _history[_key(root)]._replace(
        word="upgrade", from_vsn=from_vsn, to_vsn=vsn, outcome="rolled back",
        error=why)  # fmt: skip
    raise UpgradeError(f"upgrade to {vsn}: {why}; rolled back, {from_vsn} is running",
                       from_vsn=from_vsn, to_vsn=vsn, step="health check")


def dry_run(root: str | os.PathLike[str], vsn: str, direction: str = "up") -> DryRun:
    """Check an upgrade (``direction="down"``: a downgrade) to ``vsn`` without
    changing the node: ``check_install``'s checks, then every ``update`` runs its
    ``code_change`` on a copy of each live state (``get_state``; the processes keep
    running, nothing is suspended or loaded). The new version of an updated module
    is run apart from the code table to get its classes (its module-level code runs
    once). Returns a ``DryRun`` listing each failing process and why."""
    return _dry.dry_run(root, vsn, direction)


def downgrade(root: str | os.PathLike[str], vsn: str) -> str:
    """Go back from the current release to the earlier release ``vsn``, applying the
    inverse of the current release's instructions from ``vsn`` (or its ``down`` ones);
    ``update`` runs ``code_change(("down", app_vsn), state, extra)`` of the current
    code. ``vsn`` becomes current (still permanent if it was). Returns the version left.
    Rolled back like ``install`` on failure."""
    return _execute(Path(root), vsn, "down")
