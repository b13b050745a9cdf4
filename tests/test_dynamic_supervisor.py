"""DynamicSupervisor (Elixir's): children added one by one with full specs (S7, S8)."""

import pytest

from otp import supervisor
from otp.errors import ChildSpecError, StartError, SupervisorError
from otp.process import ANY, Down, Exit, is_alive, monitor, now, self, trap_exit
from otp.supervisor import ChildCounts, DynamicSupervisor, DynamicSupFlags
from otp.testing import assert_receive
from otp.testing_faults import crash, ping, worker_spec


def wait_down(pid):
    ref = monitor(pid)
    return assert_receive(lambda m: isinstance(m, Down) and m.ref == ref).reason


def rows(sup):
    return [(c.id, c.pid) for c in supervisor.which_children(sup)]


def test_s7_dynamic_supervisor_starts_with_no_children_and_adds_full_specs(node):
    sup = supervisor.start_link(DynamicSupervisor)
    assert supervisor.which_children(sup) == []
    a = supervisor.start_child(sup, worker_spec("a"))
    b = supervisor.start_child(sup, worker_spec("b", restart="temporary"))
    assert ping(a) == ("pong", "a") and ping(b) == ("pong", "b")
    assert rows(sup) == [(None, a), (None, b)]
    assert supervisor.count_children(sup) == ChildCounts(2, 2, 0, 2)
    supervisor.stop(sup)
    assert not is_alive(a) and not is_alive(b)


def test_s7_dynamic_children_may_share_an_id(node):
    sup = supervisor.start_link(DynamicSupervisor)
    a1 = supervisor.start_child(sup, worker_spec("a"))
    a2 = supervisor.start_child(sup, worker_spec("a"))
    assert a1 != a2 and len(rows(sup)) == 2
    supervisor.stop(sup)


def test_s7_dynamic_children_are_terminated_by_pid(node):
    sup = supervisor.start_link(DynamicSupervisor)
    a = supervisor.start_child(sup, worker_spec("a"))
    supervisor.terminate_child(sup, a)
    assert not is_alive(a) and rows(sup) == []
    with pytest.raises(SupervisorError) as ei:
        supervisor.terminate_child(sup, a)
    assert ei.value.reason == "not_found"
    with pytest.raises(SupervisorError):
        supervisor.terminate_child(sup, "a")
    supervisor.stop(sup)


def test_s5_dynamic_permanent_child_is_restarted_and_temporary_is_not(node):
    sup = supervisor.start_link(DynamicSupervisor)
    p = supervisor.start_child(sup, worker_spec("p"))
    t = supervisor.start_child(sup, worker_spec("t", restart="temporary"))
    crash(p)
    crash(t)
    wait_down(p)
    wait_down(t)
    [(_, new)] = rows(sup)
    assert new not in (p, t) and ping(new) == ("pong", "p")
    supervisor.stop(sup)


def test_dynamic_supervisor_max_children_refuses_more_children(node):
    sup = supervisor.dynamic_supervisor_start_link(max_children=2)
    supervisor.start_child(sup, worker_spec("a"))
    supervisor.start_child(sup, worker_spec("b"))
    with pytest.raises(SupervisorError) as ei:
        supervisor.start_child(sup, worker_spec("c"))
    assert ei.value.reason == "max_children"
    supervisor.stop(sup)


def test_dynamic_supervisor_extra_arguments_come_before_the_specs_own(node):
    sup = supervisor.start_link(DynamicSupervisor, DynamicSupFlags(extra_arguments=("x",)))
    from otp.supervisor import ChildSpec
    from otp.testing_faults import start_worker

    pid = supervisor.start_child(sup, ChildSpec("w", (start_worker, ("y",))))
    assert ping(pid) == ("pong", ("x", "y"))  # start_worker("x", "y")
    supervisor.stop(sup)


def test_dynamic_supervisor_accepts_a_dict_of_flags(node):
    sup = supervisor.start_link(DynamicSupervisor, {"max_children": 0})
    with pytest.raises(SupervisorError, match="max_children"):
        supervisor.start_child(sup, worker_spec("a"))
    supervisor.stop(sup)


def test_s2_dynamic_supervisor_restart_intensity(node):
    trap_exit(True)
    sup = supervisor.dynamic_supervisor_start_link(intensity=1, period=5.0)
    a = supervisor.start_child(sup, worker_spec("a"))
    crash(a)
    wait_down(a)
    [(_, a2)] = rows(sup)
    crash(a2)
    assert assert_receive(lambda m: isinstance(m, Exit) and m.pid == sup).reason == "shutdown"


def test_s8_dynamic_start_child_failure_and_ignore(node):
    sup = supervisor.start_link(DynamicSupervisor)
    with pytest.raises(StartError) as ei:
        supervisor.start_child(sup, worker_spec("a", init_fail="nope"))
    assert ei.value.reason == "nope"
    assert supervisor.start_child(sup, worker_spec("i", ignore=True)) is None
    assert rows(sup) == []
    supervisor.stop(sup)


def test_s8_dynamic_supervisor_has_no_restart_or_delete_child(node):
    sup = supervisor.start_link(DynamicSupervisor)
    a = supervisor.start_child(sup, worker_spec("a"))
    for fn in (supervisor.restart_child, supervisor.delete_child):
        with pytest.raises(SupervisorError) as ei:
            fn(sup, a)
        assert ei.value.reason == "dynamic"
    supervisor.stop(sup)


def test_s9_dynamic_supervisor_rejects_significant_children(node):
    sup = supervisor.start_link(DynamicSupervisor)
    with pytest.raises(ChildSpecError, match="significant"):
        supervisor.start_child(sup, worker_spec("s", significant=True, restart="transient"))
    supervisor.stop(sup)


def test_s7_dynamic_children_are_stopped_together_each_with_its_own_shutdown(node):
    sup = supervisor.start_link(DynamicSupervisor)
    me = self()
    quick = supervisor.start_child(sup, worker_spec("q", trap=True, notify=me))
    slow = [supervisor.start_child(sup, worker_spec(i, ignore_shutdown=True, shutdown=s))
            for i, s in (("s1", 1.0), ("s2", 3.0))]  # fmt: skip
    t0 = now()
    refs = {monitor(p): p for p in [quick, *slow]}
    supervisor.stop(sup)
    assert now() - t0 == 3.0  # the longest, not the sum
    reasons = {}
    for _ in range(3):
        d = assert_receive(lambda m: isinstance(m, Down) and m.ref in refs)
        reasons[refs[d.ref]] = d.reason
    assert reasons == {quick: "shutdown", slow[0]: "killed", slow[1]: "killed"}
    assert_receive(("stopping", "q", quick, "shutdown"))
    assert_receive(("started", "q", ANY))


class Pool(DynamicSupervisor):
    def init(self, arg):
        return DynamicSupFlags(max_children=arg)


def test_dynamic_supervisor_subclass_and_nesting_under_a_supervisor(node):
    from otp.supervisor import SupFlags
    from otp.testing_faults import ScriptedSupervisor, whereis_child

    top = supervisor.start_link(ScriptedSupervisor, (SupFlags(), [(Pool, 1)]))
    pool = whereis_child(top, Pool)
    assert supervisor.count_children(top).supervisors == 1
    supervisor.start_child(pool, worker_spec("a"))
    with pytest.raises(SupervisorError):
        supervisor.start_child(pool, worker_spec("b"))
    supervisor.stop(top)
    assert not is_alive(pool)
