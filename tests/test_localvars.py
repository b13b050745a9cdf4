"""Node-local and process-local variables (``otp.lowlevel.NodeVar`` / ``ProcessVar``):
every node starts empty, a process dictionary is the process's own and goes with it."""

from __future__ import annotations

import pytest

import otp
from otp.errors import BadArg, NodeError, NotInProcess
from otp.lowlevel import Node, NodeVar, ProcessVar
from otp.process import receive, self, send, spawn, spawn_monitor
from otp.testing import assert_down, assert_receive, stop_process

UNSET: NodeVar[int] = NodeVar("unset")
COUNT: NodeVar[int] = NodeVar("count", default=0)
BAG: NodeVar[list[int]] = NodeVar("bag", factory=list)

ROLE: ProcessVar[str] = ProcessVar("role")
LEVEL: ProcessVar[int] = ProcessVar("level", default=0)


def forever() -> None:
    receive(lambda m: False)


# --- NodeVar ----------------------------------------------------------------------------


def test_nodevar_without_value_default_or_factory_raises_lookup_error(node):
    with pytest.raises(LookupError, match="unset"):
        UNSET.get()


def test_nodevar_default_is_returned_but_not_stored(node):
    assert COUNT.get() == 0
    COUNT.set(5)
    assert COUNT.get() == 5
    COUNT.delete()
    assert COUNT.get() == 0


def test_nodevar_factory_value_is_made_once_and_stored(node):
    BAG.get().append(1)
    BAG.get().append(2)
    assert BAG.get() == [1, 2]


def test_nodevar_value_is_seen_by_every_process_of_the_node(node):
    COUNT.set(7)
    spawn(lambda parent: send(parent, COUNT.get()), self())
    assert assert_receive(int) == 7


def test_nodevar_delete_of_an_unset_variable_is_a_no_op(node):
    UNSET.delete()
    with pytest.raises(LookupError):
        UNSET.get()


def test_every_node_starts_with_no_nodevar_values():
    def fill() -> list[int]:
        COUNT.set(COUNT.get() + 1)
        BAG.get().append(COUNT.get())
        return BAG.get()

    assert otp.run(fill) == [1]
    assert otp.run(fill) == [1]  # a fresh node: nothing leaked from the first


def test_nodevar_outside_a_running_node_raises_node_error():
    with pytest.raises(NodeError):
        COUNT.get()


def test_nodevar_takes_a_default_or_a_factory_not_both():
    with pytest.raises(BadArg, match="both"):
        NodeVar("x", default=1, factory=lambda: 2)


def test_nodevars_with_the_same_name_are_distinct(node):
    a: NodeVar[int] = NodeVar("same")
    b: NodeVar[int] = NodeVar("same")
    a.set(1)
    with pytest.raises(LookupError):
        b.get()


# --- ProcessVar -------------------------------------------------------------------------


def test_processvar_is_private_to_the_process_that_set_it(node):
    ROLE.set("main")

    def child(parent):
        try:
            send(parent, ("child sees", ROLE.get()))
        except LookupError:
            send(parent, ("child sees", None))

    spawn(child, self())
    assert assert_receive(("child sees", object)) == ("child sees", None)
    assert ROLE.get() == "main"


def test_processvar_without_value_or_default_raises_lookup_error(node):
    with pytest.raises(LookupError, match="role"):
        ROLE.get()
    assert LEVEL.get() == 0


def test_processvar_delete_forgets_the_value(node):
    LEVEL.set(3)
    assert LEVEL.get() == 3
    LEVEL.delete()
    LEVEL.delete()  # twice: no error
    assert LEVEL.get() == 0


def test_processvar_of_another_live_local_process_can_be_read(node):
    def worker(parent):
        ROLE.set("worker")
        send(parent, "ready")
        forever()

    pid = spawn(worker, self())
    assert_receive("ready")
    assert ROLE.get(pid) == "worker"
    stop_process(pid)


def test_processvar_is_gone_when_the_process_ends(node):
    def worker():
        LEVEL.set(9)

    pid, ref = spawn_monitor(worker)
    assert_down(ref)
    assert LEVEL.get(pid) == 0  # the default: the dictionary went with the process
    with pytest.raises(LookupError):
        ROLE.get(pid)


def test_processvar_outside_a_process_raises_not_in_process():
    with Node():  # a running node, and this code is not one of its processes
        for use in (LEVEL.get, LEVEL.delete, lambda: LEVEL.set(1)):
            with pytest.raises(NotInProcess):
                use()


def test_processvar_get_expects_a_pid(node):
    with pytest.raises(BadArg, match="Pid"):
        LEVEL.get("main")  # type: ignore[arg-type]


def test_localvars_docstring_examples_run():
    import doctest

    from otp._core import localvars

    result = doctest.testmod(localvars)
    assert result.attempted > 0 and result.failed == 0


def test_processvars_of_one_process_are_independent(node):
    # one variable is kept as a pair, several in a dict: each step of that is checked
    other: ProcessVar[str] = ProcessVar("other")
    LEVEL.set(1)
    LEVEL.set(2)
    with pytest.raises(LookupError):
        other.get()
    other.set("x")
    ROLE.set("r")
    assert (LEVEL.get(), other.get(), ROLE.get()) == (2, "x", "r")
    LEVEL.delete()
    assert (LEVEL.get(), other.get(), ROLE.get()) == (0, "x", "r")


def test_processvar_delete_of_another_variable_keeps_the_value(node):
    LEVEL.set(4)
    ROLE.delete()
    assert LEVEL.get() == 4
