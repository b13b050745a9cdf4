"""S10: child specs and supervisor flags are validated up front, one error per field."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from otp import gen_server, supervisor
from otp._supervisor_spec import RestartWindow
from otp.errors import BadArg, ChildSpecError, StartError
from otp.supervisor import (
    Backoff,
    ChildSpec,
    DynamicSupFlags,
    Supervisor,
    SupFlags,
    check_child_specs,
)
from otp.testing_faults import ScriptedSupervisor, start_worker


def start():
    return (start_worker, ("w",))


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("start", print, "expected (callable, tuple_of_args)"),
        ("start", (print, [1]), "expected (callable, tuple_of_args)"),
        ("start", ("nope", ()), "expected (callable, tuple_of_args)"),
        ("restart", "sometimes", "expected 'permanent', 'transient' or 'temporary'"),
        ("shutdown", -1, "expected 'brutal_kill', seconds >= 0 or None"),
        ("shutdown", "soon", "expected 'brutal_kill', seconds >= 0 or None"),
        ("shutdown", True, "expected 'brutal_kill', seconds >= 0 or None"),
        ("type", "boss", "expected 'worker' or 'supervisor'"),
        ("significant", "yes", "expected True or False"),
        ("modules", 42, "expected a tuple of modules/classes or 'dynamic'"),
        ("backoff", "fast", "expected None, Backoff(...) or (initial, max)"),
    ],
)
def test_s10_each_bad_child_spec_field_gets_its_own_error(field, value, expected):
    kwargs = {"id": "w", "start": start(), field: value}
    with pytest.raises(ChildSpecError, match=rf"invalid {field}") as ei:
        ChildSpec(**kwargs)
    msg = str(ei.value)
    assert expected in msg
    assert repr(value) in msg  # what was given


def test_s10_unhashable_id_is_rejected():
    with pytest.raises(ChildSpecError, match=r"invalid id: expected a hashable"):
        ChildSpec(id=["w"], start=start())


def test_s10_significant_with_permanent_restart_is_rejected():
    with pytest.raises(ChildSpecError, match=r"invalid significant.*restart='permanent'"):
        ChildSpec("w", start(), significant=True)


def test_s10_bad_backoff_fields_are_rejected():
    with pytest.raises(ChildSpecError, match=r"initial seconds > 0"):
        Backoff(0, 1)
    with pytest.raises(ChildSpecError, match=r"max seconds >= initial"):
        Backoff(2, 1)
    with pytest.raises(ChildSpecError, match=r"jitter between 0 and 1"):
        Backoff(1, 2, jitter=2)


def test_s10_defaults_follow_otp():
    w = ChildSpec("w", start())
    assert (w.restart, w.shutdown, w.type, w.significant) == ("permanent", 5.0, "worker", False)
    s = ChildSpec("s", start(), type="supervisor")
    assert s.shutdown is None  # S6: supervisors default to infinity
    assert ChildSpec("i", start(), shutdown="infinity").shutdown is None
    assert w.modules == (start_worker,)
    assert ChildSpec("g", (gen_server.start_link, (gen_server.GenServer, 1))).modules == (
        gen_server.GenServer,
    )


def test_s10_dict_specs_are_accepted_with_the_same_keys():
    spec = check_child_specs([{"id": "w", "start": start(), "restart": "transient"}])[0]
    assert spec == ChildSpec("w", start(), restart="transient")


def test_s10_dict_spec_with_unknown_or_missing_keys_is_rejected():
    with pytest.raises(ChildSpecError, match=r"unknown key\(s\): \['strat'\]"):
        check_child_specs([{"id": "w", "strat": start()}])
    with pytest.raises(ChildSpecError, match=r"missing required key 'start'"):
        check_child_specs([{"id": "w"}])


def test_s10_genserver_class_bare_or_with_arg_uses_child_spec():
    class Worker(gen_server.GenServer):
        pass

    bare, with_arg = check_child_specs([Worker, {"id": "x", "start": (print, ())}])
    with_arg = check_child_specs([(Worker, 7)])[0]
    assert bare.id is Worker and bare.start == (gen_server.start_link, (Worker, None))
    assert with_arg.start == (gen_server.start_link, (Worker, 7))


def test_s10_supervisor_class_child_spec_is_a_supervisor_with_infinite_shutdown():
    class Sub(Supervisor):
        pass

    spec = check_child_specs([(Sub, "x")])[0]
    assert (spec.id, spec.type, spec.shutdown) == (Sub, "supervisor", None)
    assert spec.start == (supervisor.start_link, (Sub, "x"))


def test_s10_something_else_is_not_a_child_spec():
    with pytest.raises(ChildSpecError, match=r"expected a ChildSpec.*got: 42"):
        check_child_specs([42])


def test_s10_duplicate_ids_are_rejected():
    with pytest.raises(ChildSpecError, match=r"duplicate id: 'w'"):
        check_child_specs([ChildSpec("w", start()), ChildSpec("w", start())])


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"strategy": "one_for_some"}, "invalid strategy"),
        ({"intensity": -1}, "invalid intensity"),
        ({"intensity": 1.5}, "invalid intensity"),
        ({"period": 0}, "invalid period"),
        ({"auto_shutdown": "sometimes"}, "invalid auto_shutdown"),
    ],
)
def test_s10_each_bad_flag_gets_its_own_error(kwargs, expected):
    with pytest.raises(BadArg, match=expected):
        SupFlags(**kwargs)


def test_s10_bad_dynamic_flags_are_rejected():
    with pytest.raises(BadArg, match="invalid max_children"):
        DynamicSupFlags(max_children=-1)
    with pytest.raises(BadArg, match="invalid extra_arguments"):
        DynamicSupFlags(extra_arguments="x")


def test_s10_bad_spec_returned_by_init_fails_the_start_with_start_spec(node):
    bad = {"id": "w", "start": start(), "restart": "sometimes"}
    with pytest.raises(StartError) as ei:
        supervisor.start_link(ScriptedSupervisor, (SupFlags(), [bad]))
    tag, err = ei.value.reason
    assert tag == "start_spec"
    assert isinstance(err, ChildSpecError) and "invalid restart" in str(err)


def test_s10_bad_flags_returned_by_init_fail_the_start_with_supervisor_data(node):
    with pytest.raises(StartError) as ei:
        supervisor.start_link(ScriptedSupervisor, ("one_for_one", []))
    assert ei.value.reason[0] == "supervisor_data"


def test_s10_start_child_checks_the_spec_before_sending(node):
    sup = supervisor.start_link(ScriptedSupervisor, (SupFlags(), []))
    with pytest.raises(ChildSpecError, match="invalid type"):
        supervisor.start_child(sup, {"id": "w", "start": start(), "type": "boss"})
    assert supervisor.which_children(sup) == []
    supervisor.stop(sup)


def test_s10_bad_spec_or_flags_built_inside_init_fail_the_start_cleanly(node):
    class BadSpec(Supervisor):
        def init(self, arg):
            return SupFlags(), [ChildSpec("w", start(), restart="bogus")]

    class BadFlags(Supervisor):
        def init(self, arg):
            return SupFlags(strategy="bogus"), []

    with pytest.raises(StartError) as ei:
        supervisor.start_link(BadSpec)
    assert ei.value.reason[0] == "start_spec"
    with pytest.raises(StartError) as ei:
        supervisor.start_link(BadFlags)
    assert ei.value.reason[0] == "supervisor_data"
    with pytest.raises(StartError) as ei:
        supervisor.start_link(supervisor.DynamicSupervisor, {"max_children": -1})
    assert ei.value.reason[0] == "supervisor_data"


# --- the restart window and the back-off, as pure functions ---------------------------

@given(
    intensity=st.integers(0, 5),
    period=st.sampled_from([0.5, 1.0, 5.0]),
    gaps=st.lists(st.sampled_from([0.0, 0.25, 0.5, 1.0, 5.0, 6.0]), max_size=30),
)
def test_s2_restart_window_matches_a_naive_sliding_window(intensity, period, gaps):
    window = RestartWindow(intensity, period)
    now, stamps = 0.0, []
    for gap in gaps:
        now += gap
        stamps.append(now)
        # OTP: restarts within the last `period` seconds (inclusive) count
        recent = [t for t in stamps if t >= now - period]
        assert window.add(now) == (len(recent) <= intensity)


@given(
    initial=st.floats(0.01, 10), factor=st.floats(1, 100), jitter=st.floats(0, 1),
    attempt=st.integers(0, 200),
)
def test_backoff_delay_grows_exponentially_within_max_and_jitter(initial, factor, jitter,
                                                                 attempt):
    b = Backoff(initial, initial * factor, jitter)
    base = min(b.max, initial * 2.0**attempt)
    d = b.delay(attempt)
    assert base * (1 - jitter) - 1e-9 <= d <= base + 1e-9


# --- check_childspecs: the check as a value (OTP's supervisor:check_childspecs/2) ---------


def test_s10_check_childspecs_returns_none_for_valid_specs():
    specs = [ChildSpec("a", start()), {"id": "b", "start": start(), "restart": "transient"}]
    assert supervisor.check_childspecs(specs) is None
    assert supervisor.check_childspecs([]) is None


@pytest.mark.parametrize(
    ("specs", "auto_shutdown", "expected"),
    [
        ([{"id": "a", "start": start(), "restart": "often"}], "never",
         "expected 'permanent', 'transient' or 'temporary', got: 'often'"),
        ([{"id": "a", "start": start()}, {"id": "a", "start": start()}], "never",
         "expected unique ids, got a duplicate id: 'a'"),
        ([{"id": "a", "start": start(), "restart": "transient", "significant": True}],
         "never", "expected significant=False under a supervisor with auto_shutdown='never'"),
        ({"id": "a", "start": start()}, "never", "expected a list of child specs"),
        ([{"id": "a"}], "never", "missing required key 'start'"),
    ],
)
def test_s10_check_childspecs_returns_the_error_instead_of_raising(specs, auto_shutdown,
                                                                    expected):
    error = supervisor.check_childspecs(specs, auto_shutdown)
    assert isinstance(error, ChildSpecError)
    assert expected in str(error)


def test_s9_check_childspecs_accepts_significant_children_with_auto_shutdown():
    spec = {"id": "a", "start": start(), "restart": "transient", "significant": True}
    assert supervisor.check_childspecs([spec], "any_significant") is None
    with pytest.raises(BadArg, match="expected auto_shutdown"):
        supervisor.check_childspecs([spec], "sometimes")
