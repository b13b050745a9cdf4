"""Plan rounds, run one fresh worker per measurement, print tables, append results.

Rounds are interleaved: round 1 runs every selected workload on every system, then
round 2 does it all again, and so on (the system order rotates each round), so a noisy
minute on a shared machine smears across all systems instead of landing on one. The
reported figure is the median over rounds.

Each measurement is ``python -m bench.worker WORKLOAD SYSTEM N`` in a fresh process with
a time limit; a worker that crashes or overruns is reported as failed (and, if it timed
out, not retried in later rounds), never hangs the run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from bench.registry import GROUPS, SPECS, SYSTEMS, Registry, Spec, build, na_reason

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results.jsonl"
REFERENCES = ("gevent", "greenlet", "dict", "sqlite", "erl")  # ratio columns


@dataclass
class Outcome:
    ok: bool
    value: float = 0.0
    unit: str = ""
    n: int = 0
    seconds: float = 0.0
    error: str = ""
    timed_out: bool = False


@dataclass
class Cell:
    """All rounds of one (workload, system)."""

    outcomes: list[Outcome] = field(default_factory=list)
    na: str | None = None  # not applicable, with the reason

    @property
    def values(self) -> list[float]:
        return [o.value for o in self.outcomes if o.ok]

    @property
    def median(self) -> float | None:
        values = self.values
        return statistics.median(values) if values else None

    @property
    def errors(self) -> list[str]:
        return [o.error for o in self.outcomes if not o.ok]


def run_worker(workload: str, system: str, n: int, timeout: float) -> Outcome:
    cmd = [sys.executable, "-m", "bench.worker", workload, system, str(n)]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return Outcome(ok=False, error=f"timed out after {timeout:g} s", timed_out=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    result = None
    if lines:
        try:
            result = json.loads(lines[-1])
        except json.JSONDecodeError:
            result = None
    if proc.returncode == 0 and result and "value" in result:
        return Outcome(ok=True, value=float(result["value"]), unit=result["unit"],
                       n=int(result["n"]), seconds=float(result.get("seconds", 0)))
    if result and result.get("status") == "n/a":
        return Outcome(ok=False, error=f"n/a: {result.get('reason')}")
    tail = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()][-1:] or ["no output"]
    return Outcome(ok=False, error=f"exit {proc.returncode}: {tail[0].strip()[:200]}")


# ---------------------------------------------------------------- formatting


def fmt(value: float | None) -> str:
    if value is None:
        return "—"
    a = abs(value)
    if a >= 1e6:
        return f"{value / 1e6:.2f}M"
    if a >= 1e4:
        return f"{value / 1e3:.1f}k"
    if a >= 100:
        return f"{value:.0f}"
    if a >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def better_ratio(spec: Spec, value: float | None, reference: float | None) -> float | None:
    """How many times better than the reference (>1 = better: faster or smaller)."""
    if value is None or reference is None or value <= 0 or reference <= 0:
        return None
    return reference / value if spec.lower_is_better else value / reference


def render(spec: Spec, cells: dict[str, Cell], systems: list[str]) -> str:
    direction = "lower is better" if spec.lower_is_better else "higher is better"
    out = [f"\n{spec.name} — {spec.what}",
           f"  [{spec.unit}, {direction}; ×ref = times better than ref, >1 = better]"]
    header = (f"  {'system':<13}{'median':>10}  {'unit':<14}{'n':>9}"
              f"{'×gevent':>9}{'×greenlet':>11}{'×dict':>8}{'×sqlite':>9}{'×erl':>7}   rounds")
    out.append(header)
    out.append("  " + "-" * (len(header) - 2))
    refs = {r: cells[r].median if r in cells else None for r in REFERENCES}
    for system in systems:
        cell = cells.get(system)
        if cell is None:
            continue
        if cell.na is not None:
            out.append(f"  {system:<13}{'n/a':>10}  ({cell.na})")
            continue
        med = cell.median
        if med is None:
            out.append(f"  {system:<13}{'FAILED':>10}  ({'; '.join(sorted(set(cell.errors)))})")
            continue
        ratios = [better_ratio(spec, med, refs[r]) for r in REFERENCES]
        ok_outcomes = [o for o in cell.outcomes if o.ok]
        rounds = " ".join(fmt(v) for v in cell.values)
        failed = len(cell.outcomes) - len(ok_outcomes)
        if failed:
            rounds += f"  ({failed} failed: {cell.errors[0]})"
        ratio_text = "".join(
            f"{(f'{r:.2f}' if r is not None else '—'):>{width}}"
            for r, width in zip(ratios, (9, 11, 8, 9, 7), strict=True)
        )
        out.append(f"  {system:<13}{fmt(med):>10}  {spec.unit:<14}{ok_outcomes[-1].n:>9}"
                   f"{ratio_text}   {rounds}")
    return "\n".join(out)


# ---------------------------------------------------------------- main


def parse_names(text: str | None, known: dict[str, object], what: str) -> list[str]:
    if not text:
        return list(known)
    names = []
    for w in text.replace(",", " ").split():
        names.extend(GROUPS.get(w, [w]) if what == "workload" else [w])
    unknown = [w for w in names if w not in known]
    if unknown:
        raise SystemExit(f"unknown {what}: {', '.join(unknown)} "
                         f"(expected some of: {', '.join(known)})")
    return [w for w in known if w in names]  # registry order


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="docs/benchmarks.md workloads: otp vs raw gevent / raw greenlet / peers, "
                    "interleaved rounds, fresh process per measurement.")
    parser.add_argument("--only", metavar="NAMES",
                        help='workloads to run, space or comma separated ("ping_pong ring")')
    parser.add_argument("--systems", metavar="NAMES",
                        help=f"systems to run (default all: {' '.join(SYSTEMS)})")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per measurement (3)")
    parser.add_argument("--quick", action="store_true", help="n / 10 (smoke test, noisier)")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds per measurement before it counts as failed (120)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help="JSON-lines file to append to (bench/results.jsonl)")
    parser.add_argument("--no-save", action="store_true", help="do not append results")
    parser.add_argument("--list", action="store_true", help="show the registry and exit")
    args = parser.parse_args(argv)

    workloads = parse_names(args.only, SPECS, "workload")  # type: ignore[arg-type]
    systems = parse_names(args.systems, SYSTEMS, "system")  # type: ignore[arg-type]
    registry = build(systems)

    if args.list:
        print_registry(registry, workloads, systems)
        return 0

    sizes = {w: max(1, SPECS[w].n // 10) if args.quick else SPECS[w].n for w in workloads}
    cells: dict[str, dict[str, Cell]] = {w: {} for w in workloads}
    for w in workloads:
        for s in systems:
            if s in registry.broken:
                cells[w][s] = Cell(outcomes=[Outcome(ok=False, error=registry.broken[s])])
            elif s in registry.table[w]:
                cells[w][s] = Cell(na=na_reason(registry, w, s))

    runnable = [(w, s) for w in workloads for s in systems
                if s in cells[w] and cells[w][s].na is None and s not in registry.broken]
    started = time.monotonic()
    ts = datetime.now(timezone.utc).isoformat(timespec="seconds")
    log(f"bench: {len(runnable)} measurements × {args.rounds} rounds, fresh process each"
        f"{' (quick: n/10)' if args.quick else ''}; python {sys.version.split()[0]}")
    for r in range(args.rounds):
        for w in workloads:
            order = [s for s in systems if (w, s) in runnable]
            if order:
                shift = r % len(order)
                order = order[shift:] + order[:shift]
            for s in order:
                cell = cells[w][s]
                if any(o.timed_out for o in cell.outcomes):
                    continue  # do not burn another timeout on it
                t0 = time.monotonic()
                outcome = run_worker(w, s, sizes[w], args.timeout)
                cell.outcomes.append(outcome)
                took = time.monotonic() - t0
                what = (f"{fmt(outcome.value)} {outcome.unit} (n={outcome.n})" if outcome.ok
                        else f"FAILED {outcome.error}")
                log(f"  round {r + 1}/{args.rounds}  {w:<13} {s:<13} {what}  [{took:.1f} s]")

    for w in workloads:
        print(render(SPECS[w], cells[w], systems))
    elapsed = time.monotonic() - started
    print(f"\n{len(runnable)} measurements × {args.rounds} rounds in {elapsed:.0f} s")

    if not args.no_save:
        saved = save(args.output, ts, cells, args.quick)
        print(f"appended {saved} results to {display_path(args.output)}")
    failed = any(c.errors and c.median is None for per in cells.values() for c in per.values()
                 if c.na is None)
    return 1 if failed else 0


def save(path: Path, ts: str, cells: dict[str, dict[str, Cell]], quick: bool) -> int:
    records = []
    for w, per_system in cells.items():
        spec = SPECS[w]
        for s, cell in per_system.items():
            med = cell.median
            if med is None:
                continue
            ok = [o for o in cell.outcomes if o.ok]
            record: dict[str, object] = {
                "workload": w, "system": s, "metric": spec.metric, "value": med,
                "unit": spec.unit, "n": ok[-1].n, "rounds": cell.values, "ts": ts,
            }
            if quick:
                record["quick"] = True
            if cell.errors:
                record["failures"] = cell.errors
            records.append(record)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    return len(records)


def print_registry(registry: Registry, workloads: list[str], systems: list[str]) -> None:
    for w in workloads:
        spec = SPECS[w]
        print(f"{w:<13} n={spec.n:<9} {spec.unit:<14} {spec.what}")
        for s in systems:
            if s in registry.broken:
                print(f"    {s:<13} BROKEN: {registry.broken[s]}")
            elif s in registry.table[w]:
                why = na_reason(registry, w, s)
                print(f"    {s:<13} {'n/a: ' + why if why else 'runs'}")


def display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def log(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()
