"""otp.tables against a plain-dict model: a Hypothesis state machine per table type.

Random dirty writes, deletes, delete_objects, transactions (some aborting, some with a
nested transaction that aborts) are applied both to a table and to a model (key ->
list of records). After every step the table must equal the model: per-key reads, the
key set (in order for ``ordered_set``), ``select``, and the secondary index.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from otp import tables

KEYS = st.integers(min_value=0, max_value=6)
VALS = st.integers(min_value=0, max_value=3)
TAGS = st.sampled_from(["red", "green", "blue"])
RECORDS = st.tuples(KEYS, VALS, TAGS)
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("write"), RECORDS),
        st.tuples(st.just("delete"), KEYS),
        st.tuples(st.just("delete_object"), RECORDS),
    ),
    min_size=1,
    max_size=6,
)

_names = itertools.count()


def model_apply(model: dict, kind: str, arg, bag: bool) -> None:
    if kind == "write":
        k = arg[0]
        if bag:
            recs = model.setdefault(k, [])
            if arg not in recs:
                recs.append(arg)
        else:
            model[k] = [arg]
    elif kind == "delete":
        model.pop(arg, None)
    else:
        k = arg[0]
        recs = [r for r in model.get(k, []) if r != arg]
        if recs:
            model[k] = recs
        else:
            model.pop(k, None)


def table_apply(name: str, kind: str, arg, dirty: bool) -> None:
    fn = {
        ("write", True): tables.dirty_write,
        ("write", False): tables.write,
        ("delete", True): tables.dirty_delete,
        ("delete", False): tables.delete,
        ("delete_object", True): tables.dirty_delete_object,
        ("delete_object", False): tables.delete_object,
    }[(kind, dirty)]
    fn(name, arg)


class TableMachine(RuleBasedStateMachine):
    table_type = "set"
    copies = "ram"

    def __init__(self) -> None:
        super().__init__()
        self.name = f"m{next(_names)}"
        self.bag = self.table_type == "bag"
        self.start()
        tables.create_table(self.name, attributes=("k", "v", "tag"), type=self.table_type,
                            index=["tag"], copies=self.copies)
        self.model: dict = {}

    def start(self) -> None:
        pass

    def teardown(self) -> None:
        tables.delete_table(self.name)

    @rule(rec=RECORDS)
    def dirty_write(self, rec):
        table_apply(self.name, "write", rec, True)
        model_apply(self.model, "write", rec, self.bag)

    @rule(key=KEYS)
    def dirty_delete(self, key):
        table_apply(self.name, "delete", key, True)
        model_apply(self.model, "delete", key, self.bag)

    @rule(rec=RECORDS)
    def dirty_delete_object(self, rec):
        table_apply(self.name, "delete_object", rec, True)
        model_apply(self.model, "delete_object", rec, self.bag)

    @rule(ops=OPS, abort=st.booleans())
    def transaction(self, ops, abort):
        local = {k: list(v) for k, v in self.model.items()}

        def body():
            for kind, arg in ops:
                table_apply(self.name, kind, arg, False)
                model_apply(local, kind, arg, self.bag)
                key = arg if kind == "delete" else arg[0]
                # read-your-writes inside the transaction
                assert [tuple(r) for r in tables.read(self.name, key)] == local.get(key, [])
            if abort:
                tables.abort("model says no")
            return "ok"

        if abort:
            with pytest.raises(tables.TransactionAborted):
                tables.transaction(body)
        else:
            assert tables.transaction(body) == "ok"
            self.model = local

    @rule(outer=OPS, inner=OPS)
    def nested_transaction_whose_inner_aborts(self, outer, inner):
        local = {k: list(v) for k, v in self.model.items()}

        def inner_body():
            for kind, arg in inner:
                table_apply(self.name, kind, arg, False)
            tables.abort("inner")

        def body():
            for kind, arg in outer:
                table_apply(self.name, kind, arg, False)
                model_apply(local, kind, arg, self.bag)
            with pytest.raises(tables.TransactionAborted):
                tables.transaction(inner_body)
            got = {tuple(r) for r in tables.select(self.name, lambda r: True)}
            assert got == {r for recs in local.values() for r in recs}

        tables.transaction(body)
        self.model = local

    @invariant()
    def table_equals_model(self):
        name = self.name
        for k in range(7):
            assert [tuple(r) for r in tables.dirty_read(name, k)] == self.model.get(k, []), k
        keys = tables.dirty_all_keys(name)
        if self.table_type == "ordered_set":
            assert keys == sorted(self.model)
            assert tables.dirty_first(name) == (min(self.model) if self.model else None)
        else:
            assert sorted(keys) == sorted(self.model)
        everything = sorted(r for recs in self.model.values() for r in recs)
        assert sorted(tuple(r) for r in tables.dirty_select(name, lambda r: True)) == everything
        for tag in ("red", "green", "blue"):
            got = sorted(tuple(r) for r in tables.dirty_index_read(name, tag, "tag"))
            assert got == [r for r in everything if r[2] == tag], tag
        assert tables.table_info(name).size == len(everything)


class DiscTableMachine(TableMachine):
    """The same on a disc table, with restarts: what loads from disc is the model."""

    copies = "disc"

    def start(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="otp-tables-model-")
        tables.start(self.directory)

    def teardown(self) -> None:
        tables.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    @rule()
    def restart_the_disc_tables(self):
        tables.stop()
        tables.start(self.directory)
        assert tables.table_info(self.name).storage == "disc"


@pytest.mark.otp(clock="real")
@pytest.mark.parametrize("table_type", ["set", "bag", "ordered_set"])
def test_disc_table_matches_a_dict_model_across_restarts(node, table_type):
    machine = type(f"disc{table_type}Machine", (DiscTableMachine,), {"table_type": table_type})
    run_state_machine_as_test(
        machine,
        settings=settings(max_examples=15, stateful_step_count=15, deadline=None,
                          database=None),
    )


@pytest.mark.parametrize("table_type", ["set", "bag", "ordered_set"])
def test_table_matches_a_dict_model_under_random_operations(node, table_type):
    machine = type(f"{table_type}Machine", (TableMachine,), {"table_type": table_type})
    run_state_machine_as_test(
        machine,
        settings=settings(max_examples=40, stateful_step_count=25, deadline=None,
                          database=None),
    )
