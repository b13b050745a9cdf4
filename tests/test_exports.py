"""The layout rules that keep the kernel behind one door (in the manner of trio's
``test_exports``):

- every public name the kernel (``otp._core``) defines is presented by exactly one of
  the namespaces ``otp`` (values and errors of applications), ``otp.lowlevel`` (library
  code) and ``otp.testing`` (the test kit);
- no module outside ``otp._core`` and ``otp.lowlevel`` imports ``otp._core``, gevent or
  greenlet;
- applications (``chat/``, ``examples/``) import only public ``otp`` modules, and not
  ``otp.lowlevel``.

The sources are read with ``ast``, so an import inside a function counts too.
"""

from __future__ import annotations

import ast
import importlib
import pathlib
from collections.abc import Iterator
from types import ModuleType

import pytest

import otp
import otp.lowlevel
import otp.testing

ROOT = pathlib.Path(__file__).resolve().parent.parent
OTP = ROOT / "otp"
CORE = OTP / "_core"
NAMESPACES: tuple[ModuleType, ...] = (otp, otp.lowlevel, otp.testing)

# Public-named kernel internals that no namespace presents. They stay public-named
# because the kernel's own modules (and its tests) use them across modules; none of them
# is for code outside otp._core.
KERNEL_ONLY = {
    ("node", "log"),  # the kernel's logger ("otp.process")
    ("node", "CURRENT"),  # the running node; outside the kernel: RUNNING.node
    ("node", "LAZY_HORIZON"),  # receive-deadline tunables (tests/test_process_node.py)
    ("node", "LAZY_SCAN"),
    ("node", "SWITCH_BUDGET"),  # direct hand-off tunables (tests/test_process_node.py)
    ("node", "HUB_TURN"),
    ("fairness", "BlockingMonitor"),  # made by Node(max_blocking_time=...)
    ("values", "local_node_name"),  # set by Node.start, read by Pid.__repr__
}


def _defined_names(path: pathlib.Path) -> Iterator[str]:
    """The names a module defines at its top level (def, class, assignment)."""
    for stmt in ast.parse(path.read_text(), str(path)).body:
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            yield stmt.name
        elif isinstance(stmt, ast.Assign):
            for target in stmt.targets:
                if isinstance(target, ast.Name):
                    yield target.id
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            yield stmt.target.id


def _core_names() -> list[tuple[str, str]]:
    return [
        (path.stem, name)
        for path in sorted(CORE.glob("*.py"))
        if path.stem != "__init__"
        for name in _defined_names(path)
        if not name.startswith("_")
    ]


@pytest.mark.parametrize("module, name", _core_names(), ids=lambda v: str(v))
def test_core_name_is_presented_by_exactly_one_namespace(module, name):
    if (module, name) in KERNEL_ONLY:
        return
    value = getattr(importlib.import_module(f"otp._core.{module}"), name)
    presenting = [
        ns.__name__
        for ns in NAMESPACES
        if name in ns.__all__ and getattr(ns, name) is value
    ]
    assert len(presenting) == 1, (
        f"otp._core.{module}.{name} should be in __all__ of exactly one of otp, "
        f"otp.lowlevel, otp.testing; it is in {presenting or 'none'} "
        "(or make it underscore-private if only the kernel uses it)"
    )


def test_kernel_only_list_names_what_exists():
    core = set(_core_names())
    assert KERNEL_ONLY <= core, f"stale entries: {sorted(KERNEL_ONLY - core)}"


@pytest.mark.parametrize("ns", NAMESPACES, ids=lambda m: m.__name__)
def test_namespace_all_lists_only_names_it_has(ns):
    missing = [name for name in ns.__all__ if not hasattr(ns, name)]
    assert missing == [], f"{ns.__name__}.__all__ lists names it lacks: {missing}"


# --- imports ----------------------------------------------------------------------------


def _imports(path: pathlib.Path, root: pathlib.Path = ROOT) -> Iterator[str]:
    """Every module ``path`` (under ``root``) imports, as absolute names; ``from otp
    import x`` also yields ``otp.x``, which may be a module."""
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            yield module
            for alias in node.names:
                yield f"{module}.{alias.name}"


def _top(name: str) -> str:
    return name.split(".")[0]


def _is_kernel(name: str) -> bool:
    return name == "otp._core" or name.startswith("otp._core.") or _top(name) in (
        "gevent",
        "greenlet",
    )


def _outside_the_kernel() -> list[pathlib.Path]:
    return [
        p
        for p in sorted(OTP.rglob("*.py"))
        if CORE not in p.parents and p != OTP / "lowlevel.py"
    ]


@pytest.mark.parametrize("path", _outside_the_kernel(), ids=lambda p: str(p.relative_to(ROOT)))
def test_only_the_kernel_and_lowlevel_import_the_kernel_gevent_or_greenlet(path):
    bad = sorted({m for m in _imports(path) if _is_kernel(m)})
    assert bad == [], (
        f"{path.relative_to(ROOT)} imports {bad}: reach the kernel through otp.lowlevel "
        "(add what is missing there)"
    )


def _applications() -> list[pathlib.Path]:
    return sorted((ROOT / "chat").glob("*.py")) + sorted((ROOT / "examples").glob("*.py"))


@pytest.mark.parametrize("path", _applications(), ids=lambda p: str(p.relative_to(ROOT)))
def test_applications_import_only_public_otp_modules(path):
    bad = sorted(
        {
            m
            for m in _imports(path)
            if _is_kernel(m)
            or (
                _top(m) == "otp"
                and (any(part.startswith("_") for part in m.split(".")) or m == "otp.lowlevel")
            )
        }
    )
    assert bad == [], f"{path.relative_to(ROOT)} imports non-public modules: {bad}"


def test_the_import_scan_sees_relative_and_nested_imports(tmp_path):
    # The scanner itself: a relative import of the kernel, inside a function, is found.
    pkg = tmp_path / "otp" / "tables"
    pkg.mkdir(parents=True)
    src = pkg / "probe.py"
    src.write_text("def f():\n    from .._core import node\n    import greenlet\n")
    names = set(_imports(src, tmp_path))
    assert {"otp._core", "otp._core.node", "greenlet"} <= names
    assert all(_is_kernel(n) for n in ("otp._core.node", "greenlet"))
