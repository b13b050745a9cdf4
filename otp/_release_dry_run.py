"""Private: ``dry_run`` of ``otp.release_handler`` (see its docstring): every
``code_change`` of an upgrade run on copies of the live states, the node untouched."""

from __future__ import annotations

import inspect
import os
import sys
import types
from pathlib import Path
from typing import Any, NamedTuple

import otp.release_handler as rh
from otp import code
from otp import sys as otp_sys
from otp._release_instructions import Instruction
from otp.errors import CallError
from otp.process import is_alive
from otp.release import ReleaseError


class DryRun(NamedTuple):
    """What ``dry_run`` found: the instructions, how many process states were
    migrated on copies, and the failures (empty: the upgrade would go through)."""

    word: str
    from_vsn: str
    to_vsn: str
    steps: tuple[Instruction, ...]
    processes: int
    failures: tuple[str, ...]


def _isolated(plan: Any, module: str) -> Any:
    """The new version of ``module`` run in a module object of its own, without
    touching the code table: ``sys.modules`` has it only while its code runs."""
    path = rh._module_file(plan.root, plan.new, module)
    if path is None:
        raise ReleaseError(f"module {module} is not in release {plan.new.version}")
    mod = types.ModuleType(module)
    mod.__file__ = str(path)
    if path.name == "__init__.py":
        mod.__path__ = [str(path.parent)]
    mod.__package__ = module if path.name == "__init__.py" else module.rpartition(".")[0]
    prev = sys.modules.get(module)
    sys.modules[module] = mod
    try:
        exec(compile(path.read_bytes(), str(path), "exec", dont_inherit=True), mod.__dict__)
    finally:
        if prev is not None:
            sys.modules[module] = prev
        else:
            sys.modules.pop(module, None)
    return mod


def _code_change_copy(cb: Any, vsn: Any, state: Any, extra: Any) -> Any:
    params = inspect.signature(cb.code_change).parameters
    if len(params) == 4 and isinstance(state, tuple) and len(state) == 2:  # gen_statem
        return cb.code_change(vsn, state[0], state[1], extra)
    return cb.code_change(vsn, state, extra)


def dry_run(root: str | os.PathLike[str], vsn: str, direction: str = "up") -> DryRun:
    """Check an upgrade (``direction="down"``: a downgrade) to ``vsn`` without
    changing the node: ``check_install``'s checks, then every ``update`` runs its
    ``code_change`` on a copy of each live state (``get_state``; the processes keep
    running, nothing is suspended or loaded). The new version of an updated module
    is run apart from the code table to get its classes (its module-level code runs
    once). Returns a ``DryRun`` listing each failing process and why."""
    if direction not in ("up", "down"):
        raise ReleaseError(f"direction expects 'up' or 'down', got {direction!r}")
    plan = rh._plan(Path(root), vsn, direction)
    failures: list[str] = []
    n = 0
    for i, step in enumerate(plan.steps):
        if step[0] != "update":
            continue
        target, extra = step[1], step[2]["extra"]
        pid = rh._named_server(plan, target)
        named_cls = code.process_class(pid) if pid is not None else None
        module = named_cls.__module__ if named_cls is not None else target
        pids = [pid] if pid is not None else code.processes_running(module)
        if direction == "up":
            app = rh._app_of(plan.old, module)
            vsn_arg: Any = rh._app_versions(plan.old)[app] if app else plan.old.version
            try:
                newer: Any = _isolated(plan, module)
            except Exception as e:
                failures.append(f"instruction {i} [update, {target}]: the new {module} "
                                f"does not load: {e!r}")  # fmt: skip
                continue
        else:
            app = rh._app_of(plan.new, module)
            vsn_arg = ("down", rh._app_versions(plan.new)[app] if app else plan.new.version)
            newer = None
        for p in pids:
            cls = code.process_class(p)
            if cls is None:
                continue
            try:
                state = otp_sys.get_state(p)
            except CallError as e:
                if is_alive(p):
                    failures.append(f"instruction {i} [update, {target}]: {p!r}: cannot "
                                    f"read its state: {e}")  # fmt: skip
                continue
            n += 1
            try:
                target_cls = cls if newer is None else code._lookup(newer, cls.__qualname__)
                if not isinstance(target_cls, type):
                    raise ReleaseError(f"the new {module} has no class {cls.__qualname__}")
                _code_change_copy(target_cls(), vsn_arg, state, extra)
            except Exception as e:
                failures.append(f"instruction {i} [update, {target}]: {p!r} "
                                f"({cls.__qualname__}): code_change raised {e!r}")  # fmt: skip
    rh.log.info("dry run of the %s from %s to %s: %d state(s) migrated on copies, %d "
             "failure(s)", plan.word, plan.old.version, vsn, n, len(failures))
    return DryRun(plan.word, plan.old.version, vsn, tuple(plan.steps), n, tuple(failures))
