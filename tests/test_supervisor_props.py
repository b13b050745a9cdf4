"""Property tests: random crash / kill / exit-reason / restart schedules against
supervision trees of every strategy (nested too), checked against a reference model.

Each Hypothesis example runs on a fresh node with a mock clock and strict messages.
A step acts on the real tree (crash a worker with a reason, kill a supervisor, make
the next starts of a child fail, terminate/restart/delete a child, start a dynamic
child, let time pass), waits until every process is blocked, and then compares the
real tree with the model (OTP's rules S1-S5, S7, S8 written as plain Python):

- every supervisor is alive exactly when the model says: it died when, and only when,
  its restart window overflowed (S2, S3, S4);
- children are listed in start order, running or not as the model says, and a child
  keeps its pid unless the model restarted it (transient children are not restarted
  after normal/shutdown, temporary ones never: S5);
- no orphans: every live process belongs to the tree (or is the test's own);
- every registered name points at the live child that registered it;
- no child is left "restarting", and time moves only when a step lets it.

A second machine does the same for the restart back-off (beyond OTP) on a
``one_for_one`` supervisor: delays, their reset, retries of failed starts, intensity.
``SUP_EXAMPLES`` (environment) overrides the number of examples of each.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
)

from otp import supervisor
from otp.errors import StartError
from otp.lowlevel import Node
from otp.process import Pid, exit, processes, receive, registered, sleep, spawn, trap_exit
from otp.process import self as _self
from otp.process import whereis as _whereis
from otp.supervisor import ChildSpec, SupFlags
from otp.testing import MockClock, wait_all_blocked
from otp.testing_faults import FaultPlan, ScriptedSupervisor, crash

STRATEGIES = ["one_for_one", "one_for_all", "rest_for_one", "simple_one_for_one"]
RESTARTS = ["permanent", "transient", "temporary"]
REASONS = ["normal", "shutdown", ("shutdown", 1), "boom", "kill"]


def is_clean(reason: Any) -> bool:
    return reason in ("normal", "shutdown") or (isinstance(reason, tuple) and reason[0] ==
                                                 "shutdown")  # fmt: skip


# --- the reference model -------------------------------------------------------------


@dataclass(eq=False)
class MChild:
    id: Any
    restart: str
    tag: Any = None  # workers: the FaultPlan tag (also their name suffix)
    sub: Any = None  # supervisors: the template (a TreeSpec) ...
    trap: bool = False
    running: bool = False
    gen: int = 0
    msup: MSup | None = None  # ... and the running model supervisor

    @property
    def is_sup(self) -> bool:
        return self.sub is not None


@dataclass(eq=False)
class MSup:
    spec: TreeSpec
    children: list[MChild] = field(default_factory=list)
    restarts: list[float] = field(default_factory=list)
    next_dyn: int = 0

    @property
    def simple(self) -> bool:
        return self.spec.strategy == "simple_one_for_one"


@dataclass(frozen=True)
class ChildTemplate:
    id: Any
    restart: str
    sub: TreeSpec | None = None
    trap: bool = False  # a worker that traps exits (it still ends on ``shutdown``)


@dataclass(frozen=True)
class TreeSpec:
    strategy: str
    intensity: int
    period: float
    children: tuple[ChildTemplate, ...]


class Model:
    def __init__(self, spec: TreeSpec) -> None:
        self.failures: dict[Any, int] = {}
        self.now = 0.0
        self.top: MSup | None = self.new_sup(spec)

    def new_sup(self, spec: TreeSpec) -> MSup:
        sup = MSup(spec)
        if not sup.simple:
            sup.children = [self.new_child(t) for t in spec.children]
        return sup

    def new_child(self, t: ChildTemplate, tag: Any = None) -> MChild:
        return MChild(t.id, t.restart, tag=tag if tag is not None else t.id, sub=t.sub,
                      trap=t.trap)

    # starting and stopping
    def start(self, c: MChild) -> bool:
        if c.is_sup:
            msup = self.new_sup(c.sub)
            for i, k in enumerate(msup.children):
                if not self.start(k):
                    for done in reversed(msup.children[:i]):
                        self.stop(done)
                    return False
            # temporary children that failed... cannot happen: no ignore in the model
            c.msup = msup
        else:
            tmpl_tag = c.tag if not isinstance(c.tag, tuple) else c.tag[0]
            if self.failures.get(tmpl_tag, 0) > 0:
                self.failures[tmpl_tag] -= 1
                return False
        c.running = True
        c.gen += 1
        return True

    def stop(self, c: MChild) -> None:
        c.running = False
        c.msup = None  # its subtree stops with it

    # a child ended by itself
    def exited(self, sup: MSup, c: MChild, reason: Any) -> None:
        c.running = False
        c.msup = None
        if self.handle(sup, c, reason):
            return
        parent = self.parent_of(sup)
        if parent is None:
            self.top = None
            return
        psup, pchild = parent
        self.exited(psup, pchild, "shutdown")

    def handle(self, sup: MSup, c: MChild, reason: Any) -> bool:
        if c.restart == "permanent" or (c.restart == "transient" and not is_clean(reason)):
            return self.restart(sup, c)
        if c.restart == "temporary" or sup.simple:
            sup.children.remove(c)
        return True

    def restart(self, sup: MSup, c: MChild) -> bool:
        while True:
            now = self.now
            sup.restarts = [t for t in sup.restarts if t >= now - sup.spec.period] + [now]
            if len(sup.restarts) > sup.spec.intensity:
                for k in sup.children:
                    self.stop(k)
                return False
            failed = self.strategy_restart(sup, c)
            if failed is None:
                return True
            c = failed  # retried through a message to itself: counts again

    def strategy_restart(self, sup: MSup, c: MChild) -> MChild | None:
        strategy = sup.spec.strategy
        if strategy in ("one_for_one", "simple_one_for_one"):
            return None if self.start(c) else c
        if strategy == "one_for_all":
            start = 0
            group = [k for k in sup.children if k is not c]
        else:
            start = sup.children.index(c)
            group = sup.children[start + 1:]
        for k in reversed(group):
            self.stop(k)
            if k.restart == "temporary":
                sup.children.remove(k)
        for k in sup.children[start:] if strategy == "rest_for_one" else list(sup.children):
            if not k.running and not self.start(k):
                return k
        return None

    def parent_of(self, target: MSup) -> tuple[MSup, MChild] | None:
        for sup in self.sups():
            for c in sup.children:
                if c.msup is target:
                    return sup, c
        return None

    def sups(self) -> list[MSup]:
        out: list[MSup] = []
        if self.top is None:
            return out
        todo = [self.top]
        while todo:
            s = todo.pop()
            out.append(s)
            todo.extend(c.msup for c in s.children if c.msup is not None)
        return out

    def running_workers(self) -> list[tuple[MSup, MChild]]:
        return [(s, c) for s in self.sups() for c in s.children if c.running and not c.is_sup]

    def killable_subs(self) -> list[tuple[MSup, MChild]]:
        """Running child supervisors whose children all die with them at once.

        Killing a supervisor leaves its subtree to stop asynchronously: a child
        supervisor or a trapping worker under it gets the EXIT as a message and stops
        when it next runs, possibly after the killed supervisor was restarted and its new
        children failed to register their names (in OTP too). Only supervisors of
        non-trapping workers are killed here, so that the schedule stays deterministic.
        """
        return [(s, c) for s in self.sups() for c in s.children
                if c.running and c.is_sup and c.msup is not None
                and all(not k.is_sup and not k.trap for k in c.msup.children)]  # fmt: skip


# --- building the real tree ----------------------------------------------------------


def real_specs(spec: TreeSpec, plan: FaultPlan) -> tuple[SupFlags, list[ChildSpec]]:
    flags = SupFlags(spec.strategy, spec.intensity, spec.period)
    specs = []
    for t in spec.children:
        if t.sub is not None:
            specs.append(ChildSpec(
                t.id, (supervisor.start_link, (ScriptedSupervisor, real_specs(t.sub, plan))),
                restart=t.restart, type="supervisor"))  # fmt: skip
        else:
            name = None if spec.strategy == "simple_one_for_one" else f"n_{t.id}"
            specs.append(ChildSpec(t.id, (plan.starter(t.id, name=name, trap=t.trap), ()),
                                   restart=t.restart, shutdown=1.0))  # fmt: skip
    return flags, specs


def owner(spec: TreeSpec, plan: FaultPlan) -> None:
    trap_exit(True)
    supervisor.start_link(ScriptedSupervisor, real_specs(spec, plan), name="top")
    while True:
        receive()


def snapshot(sup: Pid) -> list[Any]:
    """which_children of ``sup``, with the snapshot of each running child supervisor."""
    rows = []
    for r in supervisor.which_children(sup):
        sub = snapshot(r.pid) if r.type == "supervisor" and isinstance(r.pid, Pid) else None
        rows.append((r.id, r.pid, sub))
    return rows


def observe() -> tuple[Any, ...]:
    wait_all_blocked()
    top = _whereis("top")
    tree = snapshot(top) if top is not None else None
    names = {n: _whereis(n) for n in registered()}
    return top, tree, set(processes()) - {_self()}, names


# --- the state machine ---------------------------------------------------------------


def tree_specs(depth: int, prefix: str) -> st.SearchStrategy[TreeSpec]:
    @st.composite
    def build(draw: Any) -> TreeSpec:
        strategy = draw(st.sampled_from(STRATEGIES))
        intensity = draw(st.integers(0, 3))
        period = draw(st.sampled_from([1.0, 5.0]))
        if strategy == "simple_one_for_one":
            children = (ChildTemplate(f"{prefix}t", draw(st.sampled_from(RESTARTS))),)
        else:
            n = draw(st.integers(1, 4 if depth == 2 else 3))
            kids = []
            for i in range(n):
                cid = f"{prefix}{i}"
                restart = draw(st.sampled_from(RESTARTS))
                if depth > 0 and draw(st.booleans()):
                    sub = draw(tree_specs(depth - 1, cid + "."))
                    kids.append(ChildTemplate(cid, restart, sub))
                else:
                    kids.append(ChildTemplate(cid, restart, trap=draw(st.booleans())))
            children = tuple(kids)
        return TreeSpec(strategy, intensity, period, children)

    return build()


class SupervisionTree(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.node = Node("prop@localhost", clock=MockClock(), strict=True)
        self.node.start()
        self.plan = FaultPlan()
        self.model: Model | None = None
        self.known: dict[MChild, tuple[int, Pid]] = {}
        self.pid_of: dict[MChild, Pid] = {}
        self.sup_pid: dict[int, Pid] = {}

    def teardown(self) -> None:
        self.node.stop()

    def run(self, fn: Any, *args: Any) -> Any:
        return self.node.run(fn, *args, timeout=30)

    @initialize(spec=tree_specs(2, "c"))
    def start_tree(self, spec: TreeSpec) -> None:
        self.model = Model(spec)
        for c in self.model.top.children if self.model.top else ():
            assert self.model.start(c)
        self.run(spawn, owner, spec, self.plan)
        self.check()

    # --- steps -----------------------------------------------------------------------

    @precondition(lambda self: self.model and self.model.running_workers())
    @rule(data=st.data(), reason=st.sampled_from(REASONS))
    def crash_worker(self, data: Any, reason: Any) -> None:
        assert self.model is not None
        sup, c = data.draw(st.sampled_from(self.model.running_workers()))
        pid = self.pid_of[c]
        if reason == "kill":
            self.run(exit, pid, "kill")
            reason = "killed"
        else:
            self.run(crash, pid, reason)
        self.model.exited(sup, c, reason)
        self.check()

    @precondition(lambda self: self.model and self.model.killable_subs())
    @rule(data=st.data())
    def kill_supervisor(self, data: Any) -> None:
        assert self.model is not None
        sup, c = data.draw(st.sampled_from(self.model.killable_subs()))
        self.run(exit, self.pid_of[c], "kill")
        self.model.exited(sup, c, "killed")
        self.check()

    @precondition(lambda self: self.model and self.model.top)
    @rule(data=st.data(), n=st.integers(1, 3))
    def fail_next_starts(self, data: Any, n: int) -> None:
        assert self.model is not None
        tags = sorted({c.id if not isinstance(c.tag, tuple) else c.tag[0]
                       for s in self.model.sups() for c in s.children if not c.is_sup}
                      | {s.spec.children[0].id for s in self.model.sups() if s.simple})
        if not tags:
            return
        tag = data.draw(st.sampled_from(tags))
        self.plan.fail_next(tag, n)
        self.model.failures[tag] = self.model.failures.get(tag, 0) + n

    @rule(dt=st.sampled_from([0.5, 1.5, 6.0]))
    def let_time_pass(self, dt: float) -> None:
        self.run(sleep, dt)
        assert self.model is not None
        self.model.now += dt
        self.check()

    @precondition(lambda self: self.model and self.model.top and self.model.top.simple)
    @rule()
    def start_dynamic_child(self) -> None:
        assert self.model is not None and self.model.top is not None
        top = self.model.top
        k = top.next_dyn
        top.next_dyn += 1
        tmpl = top.spec.children[0]
        c = self.model.new_child(tmpl, tag=(tmpl.id, k))
        ok = self.model.start(c)
        if ok:
            top.children.append(c)

        def go() -> Any:
            try:
                return supervisor.start_child("top", (k,))
            except StartError as e:
                return e

        got = self.run(go)
        assert isinstance(got, Pid) == ok, got
        self.check()

    def top_static_children(self) -> list[MChild]:
        top = self.model.top if self.model else None
        return [] if top is None or top.simple else list(top.children)

    @precondition(lambda self: self.top_static_children())
    @rule(data=st.data(), op=st.sampled_from(["terminate", "restart", "delete"]))
    def child_api(self, data: Any, op: str) -> None:
        assert self.model is not None and self.model.top is not None
        c = data.draw(st.sampled_from(self.top_static_children()))
        top = self.model.top
        if op == "terminate":
            self.model.stop(c)
            if c.restart == "temporary":
                top.children.remove(c)
            expect: Any = None
        elif op == "restart":
            expect = "running" if c.running else self.model.start(c)
        else:
            expect = "running" if c.running else None
            if not c.running:
                top.children.remove(c)

        def go() -> Any:
            try:
                fn = {"terminate": supervisor.terminate_child, "restart": supervisor.restart_child,
                      "delete": supervisor.delete_child}[op]  # fmt: skip
                return fn("top", c.id)
            except Exception as e:
                return getattr(e, "reason", e)

        got = self.run(go)
        if op == "restart" and expect is True:
            assert isinstance(got, Pid), got
        elif op == "restart" and expect is False:
            assert isinstance(got, tuple), got
            assert got[0] == ("failed_to_start_child" if c.is_sup else "planned_failure"), got
        else:
            assert got == expect, (op, got, expect)
        self.check()

    # --- the check -------------------------------------------------------------------

    def check(self) -> None:
        assert self.model is not None
        top, tree, alive, names = self.run(observe)
        assert self.node.clock.now() == self.model.now, "time moved during a step"
        if self.model.top is None:
            assert top is None, "the model's top supervisor died (intensity), the real one lives"
            assert len(alive) == 1, f"orphans after the tree died: {alive}"  # the owner
            return
        assert top is not None, "the real top supervisor died, the model's lives"
        tree_pids: set[Pid] = {top}
        self.compare(self.model.top, tree, tree_pids)
        assert len(alive - tree_pids) == 1, f"orphans: {alive - tree_pids}"  # the owner only
        for name, pid in names.items():
            assert pid in tree_pids, f"name {name} points at {pid}, not a live child"

    def compare(self, msup: MSup, rows: list[Any], tree_pids: set[Pid]) -> None:
        assert len(rows) == len(msup.children), (rows, msup.children)
        for (rid, rpid, sub), c in zip(rows, msup.children, strict=True):
            assert rpid != "restarting", f"{c.id} left restarting"
            if not msup.simple:
                assert rid == c.id, ("start order", [r[0] for r in rows],
                                     [k.id for k in msup.children])  # fmt: skip
            assert isinstance(rpid, Pid) == c.running, (c.id, rpid, c.running)
            if not c.running:
                continue
            tree_pids.add(rpid)
            old = self.known.get(c)
            if old is not None:
                if old[0] == c.gen:
                    assert rpid == old[1], f"{c.id} was restarted, the model says it was not"
                else:
                    assert rpid != old[1], f"{c.id} was not restarted, the model says it was"
            self.known[c] = (c.gen, rpid)
            self.pid_of[c] = rpid
            if c.is_sup:
                assert c.msup is not None and sub is not None
                self.compare(c.msup, sub, tree_pids)


SupervisionTree.TestCase.settings = settings(
    max_examples=int(__import__("os").environ.get("SUP_EXAMPLES", "500")),
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@pytest.mark.filterwarnings("ignore")
def test_supervision_trees_follow_the_model_under_random_faults() -> None:
    import logging

    # Thousands of expected child_terminated reports: keep them out of the capture.
    log = logging.getLogger("otp.report")
    old = log.level
    log.setLevel(logging.CRITICAL)
    try:
        SupervisionTree.TestCase("runTest").runTest()
    finally:
        log.setLevel(old)



# --- restart back-off (beyond OTP) -----------------------------------------------------
#
# One one_for_one supervisor whose workers may have a back-off (no jitter). The model:
# a restart is counted when the child dies (and on each failed retry); the child's
# n-th consecutive restart then waits min(max, initial * 2**n) seconds on the node
# clock; the count starts again once the child has stayed up for ``max`` seconds; a
# start that fails is retried at once, counted, and backed off again.


@dataclass(eq=False)
class BChild:
    id: str
    restart: str
    backoff: tuple[float, float] | None
    running: bool = True
    waiting_until: float | None = None
    attempt: int = 0
    started_at: float = 0.0
    gen: int = 1


class BackoffModel:
    def __init__(self, intensity: int, period: float, children: list[BChild]) -> None:
        self.intensity, self.period = intensity, period
        self.children = children
        self.restarts: list[float] = []
        self.failures: dict[str, int] = {}
        self.now = 0.0
        self.alive = True

    def start(self, c: BChild) -> bool:
        if self.failures.get(c.id, 0) > 0:
            self.failures[c.id] -= 1
            return False
        c.running, c.started_at, c.waiting_until = True, self.now, None
        c.gen += 1
        return True

    def count_restart(self) -> bool:
        now = self.now
        self.restarts = [t for t in self.restarts if t >= now - self.period] + [now]
        if len(self.restarts) > self.intensity:
            self.alive = False
            return False
        return True

    def restart(self, c: BChild) -> None:
        """Count, then restart now or schedule the back-off; retries failed starts."""
        while self.alive:
            if not self.count_restart():
                return
            if c.backoff is not None:
                initial, mx = c.backoff
                c.waiting_until = self.now + min(mx, initial * 2.0**c.attempt)
                c.attempt += 1
                return
            if self.start(c):
                return

    def exited(self, c: BChild, reason: Any) -> None:
        c.running = False
        if c.restart == "permanent" or (c.restart == "transient" and not is_clean(reason)):
            if c.backoff is not None and self.now - c.started_at >= c.backoff[1]:
                c.attempt = 0
            self.restart(c)
        elif c.restart == "temporary":
            self.children.remove(c)

    def advance(self, dt: float) -> None:
        end = self.now + dt
        while self.alive:
            due = [c.waiting_until for c in self.children if c.waiting_until is not None]
            if not due or min(due) > end:
                break
            self.now = min(due)
            for c in [c for c in self.children if c.waiting_until == self.now]:
                if not self.alive:
                    break
                c.waiting_until = None
                if not self.start(c):
                    self.restart(c)
        self.now = end


@st.composite
def backoff_trees(draw: Any) -> tuple[int, float, list[tuple[str, str, Any]]]:
    intensity = draw(st.integers(0, 6))
    period = draw(st.sampled_from([2.0, 10.0]))
    kids = []
    for i in range(draw(st.integers(1, 3))):
        bo = draw(st.sampled_from([None, (0.5, 2.0), (1.0, 4.0), (0.25, 0.25)]))
        kids.append((f"b{i}", draw(st.sampled_from(RESTARTS)), bo))
    return intensity, period, kids


class BackoffTree(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.node = Node("backoff@localhost", clock=MockClock(), strict=True)
        self.node.start()
        self.plan = FaultPlan()
        self.model: BackoffModel | None = None
        self.known: dict[BChild, tuple[int, Pid]] = {}

    def teardown(self) -> None:
        self.node.stop()

    def run(self, fn: Any, *args: Any) -> Any:
        return self.node.run(fn, *args, timeout=30)

    @initialize(tree=backoff_trees())
    def start_tree(self, tree: tuple[int, float, list[tuple[str, str, Any]]]) -> None:
        intensity, period, kids = tree
        specs = [ChildSpec(cid, (self.plan.starter(cid, name=f"n_{cid}"), ()), restart=r,
                           backoff=None if bo is None else (*bo, 0.0))
                 for cid, r, bo in kids]  # fmt: skip
        self.model = BackoffModel(intensity, period,
                                  [BChild(cid, r, bo) for cid, r, bo in kids])
        self.run(spawn, backoff_owner, (SupFlags("one_for_one", intensity, period), specs))
        self.check()

    @precondition(lambda self: self.model and self.model.alive
                  and any(c.running for c in self.model.children))
    @rule(data=st.data(), reason=st.sampled_from(REASONS))
    def crash_worker(self, data: Any, reason: Any) -> None:
        assert self.model is not None
        c = data.draw(st.sampled_from([c for c in self.model.children if c.running]))
        pid = self.known[c][1]
        if reason == "kill":
            self.run(exit, pid, "kill")
            reason = "killed"
        else:
            self.run(crash, pid, reason)
        self.model.exited(c, reason)
        self.check()

    @precondition(lambda self: self.model and self.model.alive)
    @rule(data=st.data(), n=st.integers(1, 2))
    def fail_next_starts(self, data: Any, n: int) -> None:
        assert self.model is not None
        c = data.draw(st.sampled_from(self.model.children)) if self.model.children else None
        if c is None:
            return
        self.plan.fail_next(c.id, n)
        self.model.failures[c.id] = self.model.failures.get(c.id, 0) + n

    @rule(dt=st.sampled_from([0.25, 0.5, 1.0, 3.0]))
    def let_time_pass(self, dt: float) -> None:
        assert self.model is not None
        self.run(sleep, dt)
        self.model.advance(dt)
        self.check()

    def check(self) -> None:
        assert self.model is not None
        top, tree, alive, _ = self.run(observe)
        assert self.node.clock.now() == self.model.now
        if not self.model.alive:
            assert top is None, "the model's supervisor died (intensity), the real one lives"
            assert len(alive) == 1, f"orphans: {alive}"  # the owner only
            return
        running = sum(c.running for c in self.model.children)
        assert len(alive) == 2 + running, f"orphans: {alive}"  # + the owner and top
        assert top is not None, "the real supervisor died, the model's lives"
        rows = [(rid, rpid) for rid, rpid, _ in tree]
        assert [r[0] for r in rows] == [c.id for c in self.model.children]
        for (_, rpid), c in zip(rows, self.model.children, strict=True):
            if c.running:
                assert isinstance(rpid, Pid), (c, rpid)
                old = self.known.get(c)
                if old is not None:
                    assert (rpid == old[1]) == (old[0] == c.gen), (c, rpid, old)
                self.known[c] = (c.gen, rpid)
            elif c.waiting_until is not None:
                assert rpid == "restarting", (c, rpid)
            else:
                assert rpid is None, (c, rpid)


def backoff_owner(init: Any) -> None:
    trap_exit(True)
    supervisor.start_link(ScriptedSupervisor, init, name="top")
    while True:
        receive()


BackoffTree.TestCase.settings = settings(
    max_examples=int(__import__("os").environ.get("SUP_EXAMPLES", "300")),
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def test_restart_backoff_follows_the_model_under_random_faults() -> None:
    import logging

    log = logging.getLogger("otp.report")
    old = log.level
    log.setLevel(logging.CRITICAL)
    try:
        BackoffTree.TestCase("runTest").runTest()
    finally:
        log.setLevel(old)
