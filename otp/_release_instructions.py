"""Private: upgrade instructions of a release spec for ``otp.release_handler``: parsing
the YAML forms into tuples, finding the entry for a version, the default inverse."""

from __future__ import annotations

from typing import Any

from otp.release import ReleaseError, ReleaseSpec

Instruction = tuple[Any, ...]
OPS = ("load_module", "update", "restart_application", "add_module", "delete_module")


def freeze(value: Any) -> Any:
    """YAML values as immutable ones (they travel in a system message): lists become
    tuples, mappings tuples of (key, value) pairs (``dict(extra)`` gives it back)."""
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple((k, freeze(v)) for k, v in value.items())
    if isinstance(value, set):
        return frozenset(freeze(v) for v in value)
    return value


def parse(raw: Any, where: str) -> Instruction:
    op: Any
    if isinstance(raw, list | tuple) and raw:
        op, args = raw[0], list(raw[1:])
    elif isinstance(raw, dict):
        ops = [k for k in raw if k in OPS]
        if len(ops) != 1:
            raise ReleaseError(f"{where}: expected one of {', '.join(OPS)} as a key, got {raw!r}")
        op = ops[0]
        rest = {k: v for k, v in raw.items() if k != op}
        args = [raw[op]] + ([rest] if rest else [])
    else:
        raise ReleaseError(f"{where}: expected an instruction like [load_module, m], got {raw!r}")
    if op not in OPS:
        raise ReleaseError(
            f"{where}: unknown instruction {op!r} (expected one of {', '.join(OPS)})"
        )
    if not args or not isinstance(args[0], str) or not args[0]:
        raise ReleaseError(f"{where}: {op} expects a name (str), got {args[:1]!r}")
    if op == "update":
        opts = args[1] if len(args) > 1 else {}
        if opts is None:
            opts = {}
        if not isinstance(opts, dict) or set(opts) - {"extra"} or len(args) > 2:
            raise ReleaseError(f"{where}: update takes [update, name, {{extra: ...}}], got {raw!r}")
        return ("update", args[0], {"extra": freeze(opts.get("extra"))})
    if len(args) != 1:
        raise ReleaseError(f"{where}: {op} takes one name, got {raw!r}")
    return (op, args[0])


def instructions(raw: Any, where: str) -> list[Instruction]:
    if raw is None:
        return []
    if isinstance(raw, dict):  # per application: {app: [instructions]}
        out = []
        for app, items in raw.items():
            out.extend(instructions(items, f"{where}.{app}"))
        return out
    if not isinstance(raw, list):
        raise ReleaseError(f"{where}: expected a list of instructions, got {raw!r}")
    return [parse(item, f"{where}[{i}]") for i, item in enumerate(raw)]


def entry_from(spec: ReleaseSpec, from_vsn: str, where: str) -> dict[str, Any] | None:
    for i, e in enumerate(spec.upgrades):
        if not isinstance(e, dict) or "from" not in e:
            raise ReleaseError(f"{where}: upgrades[{i}] expects {{from: VSN, instructions: "
                               f"[...]}}, got {e!r}")  # fmt: skip
        if str(e["from"]) == from_vsn:
            return e
    return None


def inverse(plan: list[Instruction]) -> list[Instruction]:
    # The same order as going up: a module that does ``from pkg import util`` binds
    # the util module present when it loads, so dependencies must load first both ways.
    swap = {"add_module": "delete_module", "delete_module": "add_module"}
    return [(swap.get(i[0], i[0]), *i[1:]) for i in plan]


def check_entries(spec: ReleaseSpec, where: str) -> None:
    """Every ``upgrades`` entry of ``spec`` parses and has instructions: an entry with
    none would be accepted, installed and made permanent while changing nothing
    live (the processes keep the old code until a restart)."""
    for i, e in enumerate(spec.upgrades):
        if not isinstance(e, dict) or "from" not in e:
            raise ReleaseError(f"{where}: upgrades[{i}] expects {{from: VSN, instructions: "
                               f"[...]}}, got {e!r}")  # fmt: skip
        at = f"{where}: upgrades[{i}] (from {e['from']})"
        steps = instructions(e.get("instructions", e.get("apps")), at)
        if "down" in e:
            instructions(e["down"], f"{at} down")
        if not steps:
            raise ReleaseError(
                f"{at} has no instructions: an upgrade from {e['from']} would change no "
                f"running code. List what changed ([load_module, m], [update, m], ...): "
                f"`otp release appup` writes them from the two versions' code; or remove "
                f"the entry if {spec.version} needs no live upgrade from {e['from']}"
            )
