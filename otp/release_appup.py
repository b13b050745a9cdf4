"""Upgrade instructions generated from the difference between two versions of a release
(what OTP leaves to the ``.appup`` files an operator writes by hand).

``otp release appup OLD NEW`` compares the applications' modules of release OLD (a
bundle: ``_build/chat-0.1.0.tar.gz``, an unpacked bundle directory, or a release root)
with those of NEW (a release spec: ``releases/chat.yaml``, read from the source tree,
or a bundle) and prints the ``upgrades`` entry for NEW's spec; ``--write`` puts it
into the spec, where the operator reads and edits it::

    otp release appup _build/chat-0.1.0.tar.gz releases/chat.yaml           # print
    otp release appup _build/chat-0.1.0.tar.gz releases/chat.yaml --write   # into the spec
    otp release build releases/chat.yaml --upgrade-from _build/chat-0.1.0.tar.gz

From code::

    from otp import release_appup
    entry = release_appup.generate("_build/chat-0.1.0.tar.gz", "releases/chat.yaml")
    entry["instructions"]      # [["load_module", "chat.protocol"], ["update", ...]]

What each difference becomes (``otp.release_handler`` applies them in this order):

- a changed module without a process-holding behaviour class (no class deriving from
  ``GenServer`` or ``GenStatem``): ``[load_module, m]`` -- processes calling it
  through the module (``m.f()``) run the new code at their next call;
- a changed module defining such a class: ``[update, m]`` -- every process running a
  class of it is suspended in turn, migrated by the new class's ``code_change`` and
  resumed (write ``code_change`` in the new version when the state's shape changes);
- a module new in NEW: ``[add_module, m]``; one NEW no longer has:
  ``[delete_module, m]`` (last: processes still running it are killed);
- an application NEW adds or drops: nothing to write, the release handler starts or
  stops it around the instructions (noted in a comment).

Modules are ordered so that a module comes after the changed modules it imports
(``from pkg import util`` binds the util present when it loads), library modules
before behaviour modules. A package's ``__init__`` whose only change is the version
string is left out. The downgrade is the default inverse (``downgrade``); write a
``down:`` list in the entry to change it.

``check(entry, diff)`` is what ``build --upgrade-from`` runs: the spec's entry must
exist, have instructions, and name every changed, added and deleted module (or
restart its application); ``ReleaseError`` lists what is missing.

Failure semantics: ``ReleaseError`` for an OLD or NEW that is not a release, a module
that does not parse (named with its file and line).

When not to use it: the generated entry is a start, not a proof -- a module whose
state-holding class lives elsewhere than its behaviour base names, or processes that
are not behaviours (bare ``spawn``), need a human look.
"""

from __future__ import annotations

import ast
import hashlib
import os
import re
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from otp import release as _release
from otp.release import RUNTIME, ReleaseError

__all__ = ["Diff", "check", "diff", "format_entry", "generate", "generate_from", "instructions",
           "write_entry"]

#: base classes whose subclasses hold a process's state (``update`` migrates them)
BEHAVIOURS = frozenset({"GenServer", "GenStatem"})


@dataclass
class _Side:
    version: str
    apps: dict[str, tuple[str, Path]]  # app -> (app vsn, package dir)


@dataclass
class Diff:
    """What differs between two releases' applications (module names, dotted)."""

    from_vsn: str
    to_vsn: str
    changed: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    behaviours: set[str] = field(default_factory=set)  # changed/added ones with a class
    imports: dict[str, set[str]] = field(default_factory=dict)  # module -> changed deps
    apps_added: list[str] = field(default_factory=list)
    apps_removed: list[str] = field(default_factory=list)
    version_only: list[str] = field(default_factory=list)  # __init__s left out
    sources: dict[str, Path] = field(default_factory=dict)  # changed/added -> new file


def _modules(pkg_dir: Path, app: str) -> dict[str, Path]:
    out = {}
    for p in sorted(pkg_dir.rglob("*.py")):
        rel = p.relative_to(pkg_dir)
        if "__pycache__" in rel.parts:
            continue
        parts = [app, *rel.with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = p
    return out


def _from_spec(path: Path) -> _Side:
    spec = _release.load_spec(path)
    proj = _release._project_root(path)
    apps = {}
    for i, a in enumerate(spec.applications):
        if a.name == RUNTIME:
            continue
        apps[a.name] = (a.version, _release._package_dir(
            a.name, a.path, proj, f"{path}: applications[{i}] ({a.name})"))
    return _Side(spec.version, apps)


def _from_tree(base: Path, vsn: str | None) -> _Side:
    specs = sorted(base.glob("releases/*/release.yaml"))
    if vsn is not None:
        specs = [p for p in specs if p.parent.name == vsn]
    elif len(specs) > 1:
        vsn = _release.boot_version(base)
        specs = [p for p in specs if p.parent.name == vsn]
    if len(specs) != 1:
        raise ReleaseError(f"{base}: expected one releases/<vsn>/release.yaml "
                           f"{'for ' + vsn if vsn else ''}, found {len(specs)}")
    spec = _release.load_spec(specs[0])
    apps = {}
    for a in spec.applications:
        if a.name == RUNTIME:
            continue
        lib = base / spec.lib.get(a.name, f"lib/{a.name}-{a.version}") / a.name
        if not lib.is_dir():
            raise ReleaseError(f"{base}: application {a.name} has no {lib}")
        apps[a.name] = (a.version, lib)
    return _Side(spec.version, apps)


def _side(where: str | os.PathLike[str], tmp: Path) -> _Side:
    """A release to compare: ``PATH[@VSN]`` -- a spec (.yaml), a bundle tarball, or a
    bundle or release-root directory (``@VSN`` picks one release of a root)."""
    text = os.fspath(where)
    vsn = None
    if "@" in text and not Path(text).exists():
        text, vsn = text.rsplit("@", 1)
    p = Path(text)
    if p.is_file() and p.suffix in (".yaml", ".yml"):
        return _from_spec(p)
    if p.is_file():
        out = tmp / f"x{len(list(tmp.iterdir()))}"
        out.mkdir()
        try:
            with tarfile.open(p) as tar:
                tar.extractall(out, filter="data")
        except (tarfile.TarError, OSError) as e:
            raise ReleaseError(f"{p}: not a release bundle: {e}") from None
        return _from_tree(out, vsn)
    if p.is_dir():
        return _from_tree(p, vsn)
    raise ReleaseError(f"expected a release spec (.yaml), a bundle (.tar.gz) or a release "
                       f"directory, got {text!r} (no such file)")


def _parse(path: Path) -> ast.Module:
    try:
        return ast.parse(path.read_bytes(), str(path))
    except SyntaxError as e:
        raise ReleaseError(f"{path}, line {e.lineno}: does not parse: {e.msg}") from None


def _has_behaviour(tree: ast.Module) -> bool:
    """A class deriving (in this module) from GenServer/GenStatem."""
    known = set(BEHAVIOURS)
    found = False
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        for b in node.bases:
            name = b.attr if isinstance(b, ast.Attribute) else getattr(b, "id", None)
            if name in known:
                known.add(node.name)
                found = True
                break
    return found


def _imports(tree: ast.Module, module: str, is_pkg: bool) -> set[str]:
    out: set[str] = set()
    pkg = module if is_pkg else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return out


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _compare(old: _Side, new: _Side) -> Diff:
    d = Diff(old.version, new.version)
    d.apps_added = [a for a in new.apps if a not in old.apps]
    d.apps_removed = [a for a in old.apps if a not in new.apps]
    trees: dict[str, tuple[ast.Module, bool]] = {}
    for app, (vsn, pkg) in new.apps.items():
        if app not in old.apps:
            continue
        old_vsn, old_pkg = old.apps[app]
        om, nm = _modules(old_pkg, app), _modules(pkg, app)
        for m, p in nm.items():
            if m not in om:
                d.added.append(m)
            elif _sha(p) != _sha(om[m]):
                if p.name == "__init__.py" and old_vsn != vsn and \
                        om[m].read_text().replace(old_vsn, vsn) == p.read_text():  # fmt: skip
                    d.version_only.append(m)
                    continue
                d.changed.append(m)
            else:
                continue
            trees[m] = (_parse(p), p.name == "__init__.py")
            d.sources[m] = p
        d.deleted.extend(m for m in om if m not in nm)
    moved = set(d.changed) | set(d.added)
    for m, (tree, is_pkg) in trees.items():
        if _has_behaviour(tree):
            d.behaviours.add(m)
        d.imports[m] = {i for i in _imports(tree, m, is_pkg) if i in moved and i != m}
    return d


def diff(old: str | os.PathLike[str], new: str | os.PathLike[str]) -> Diff:
    """Compare release OLD with release NEW (see ``_side`` for what each may be)."""
    with tempfile.TemporaryDirectory(prefix="otp-appup-") as tmp:
        return _compare(_side(old, Path(tmp)), _side(new, Path(tmp)))


def _ordered(mods: list[str], deps: dict[str, set[str]]) -> list[str]:
    """``mods`` with each after those of them it imports (stable, cycles broken)."""
    out: list[str] = []
    seen: set[str] = set()

    def visit(m: str, path: set[str]) -> None:
        if m in seen or m in path:
            return
        path.add(m)
        for dep in sorted(deps.get(m, ())):
            if dep in mods:
                visit(dep, path)
        path.discard(m)
        seen.add(m)
        out.append(m)

    for m in mods:
        visit(m, set())
    return out


def instructions(d: Diff) -> list[list[str]]:
    libs = [m for m in d.added + d.changed if m not in d.behaviours]
    behs = [m for m in d.added + d.changed if m in d.behaviours]
    out: list[list[str]] = []
    for m in _ordered(libs, d.imports):
        out.append(["add_module" if m in d.added else "load_module", m])
    for m in _ordered(behs, d.imports):
        out.append(["add_module" if m in d.added else "update", m])
    out.extend(["delete_module", m] for m in sorted(d.deleted, reverse=True))
    return out


def generate(old: str | os.PathLike[str], new: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``upgrades`` entry taking release OLD to NEW: ``{"from": OLD's version,
    "instructions": [...]}``. ``ReleaseError`` if nothing differs."""
    return generate_from(diff(old, new), old, new)


def generate_from(d: Diff, old: Any = "OLD", new: Any = "NEW") -> dict[str, Any]:
    """``generate`` for a ``Diff`` already made."""
    steps = instructions(d)
    if not steps:
        raise ReleaseError(
            f"no module differs between {d.from_vsn} ({old}) and {d.to_vsn} ({new}): "
            f"nothing to upgrade live"
        )
    return {"from": d.from_vsn, "instructions": steps}


def format_entry(entry: dict[str, Any], d: Diff | None = None) -> str:
    """The entry as YAML list item text (two-space indent), with comments."""
    lines = [f"  # generated by `otp release appup` from {entry['from']}: read it, edit it",
             f"  - from: {entry['from']}", "    instructions:"]
    for step in entry["instructions"]:
        why = ""
        if d is not None and step[0] == "update":
            why = "  # a behaviour: processes migrated by code_change"
        lines.append(f"      - [{', '.join(step)}]{why}")
    if d is not None:
        for a in d.apps_added:
            lines.append(f"    # application {a} is new: started after the instructions")
        for a in d.apps_removed:
            lines.append(f"    # application {a} is dropped: stopped before them")
        for m in d.version_only:
            lines.append(f"    # {m}: only its version changed (not reloaded)")
    return "\n".join(lines) + "\n"


def write_entry(spec_path: str | os.PathLike[str], text: str, from_vsn: str) -> None:
    """Put an entry (``format_entry``'s text) into the spec's ``upgrades``, keeping the
    rest of the file as it is. ``ReleaseError`` if the spec has an entry from
    ``from_vsn`` already (edit or delete it first) or no top-level ``upgrades:``."""
    p = Path(spec_path)
    spec = _release.load_spec(p)
    if any(str(e.get("from")) == from_vsn for e in spec.upgrades if isinstance(e, dict)):
        raise ReleaseError(f"{p} has an upgrades entry from {from_vsn} already: edit it, "
                           f"or delete it to generate it again")
    src = p.read_text()
    m = re.search(r"^upgrades:[ \t]*(\[\])?[ \t]*(#.*)?$", src, re.M)
    if m is None:
        src = src.rstrip("\n") + "\nupgrades:\n" + text
    elif m.group(1):
        src = src[: m.start()] + "upgrades:\n" + text.rstrip("\n") + src[m.end():]
    else:
        src = src[: m.end()] + "\n" + text.rstrip("\n") + src[m.end():]
    p.write_text(src)
    _release.load_spec(p)  # still a valid spec


def check(spec: _release.ReleaseSpec, d: Diff) -> None:
    """The spec's upgrade from ``d.from_vsn`` exists, has instructions, and names every
    module the diff found changed, added or deleted (or restarts its application)."""
    from otp import _release_instructions as _instr

    entry = _instr.entry_from(spec, d.from_vsn, "upgrades")
    how = (f"`otp release appup OLD {spec.name}.yaml --write` generates it from the "
           f"two versions")
    if entry is None:
        raise ReleaseError(f"release {spec.version} has no upgrade from {d.from_vsn} "
                           f"(no upgrades entry from: {d.from_vsn}): {how}")
    steps = _instr.instructions(entry.get("instructions", entry.get("apps")),
                                f"upgrades (from {d.from_vsn})")
    if not steps:
        raise ReleaseError(f"release {spec.version}: the upgrade from {d.from_vsn} has no "
                           f"instructions: {how}")
    named = {s[1] for s in steps}
    # A name that is no module is a registered name (``update chat.listener``): it
    # covers the module whose source registers it.
    for n in [n for n in named if n not in d.sources and n not in d.deleted]:
        for m, path in d.sources.items():
            text = path.read_text()
            if f'"{n}"' in text or f"'{n}'" in text:
                named.add(m)
    restarted = {s[1] for s in steps if s[0] == "restart_application"}
    missing = [m for m in d.changed + d.added + d.deleted
               if m not in named and m.split(".")[0] not in restarted]
    if missing:
        raise ReleaseError(
            f"release {spec.version}: the upgrade from {d.from_vsn} is incomplete: "
            f"{', '.join(missing)} changed but no instruction names "
            f"{'it' if len(missing) == 1 else 'them'} (the running node would keep the "
            f"old code): add [load_module, m] / [update, m] / [add_module, m] / "
            f"[delete_module, m], or {how}")
