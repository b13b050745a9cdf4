"""otp.tables: schema, record shapes, operations, ordered iteration, indexes, events."""

from __future__ import annotations

from typing import NamedTuple

import pytest

from otp import tables
from otp.errors import BadArg
from otp.process import ANY, spawn_monitor
from otp.testing import assert_receive, refute_receive

# --- schema and records -----------------------------------------------------------------


def test_create_table_returns_a_named_tuple_record_class(node):
    User = tables.create_table("user", attributes=("id", "name", "age"))
    assert User._fields == ("id", "name", "age")
    assert tables.record_class("user") is User
    assert "user" in tables.table_names()
    info = tables.table_info("user")
    assert (info.key, info.type, info.storage, info.size) == ("id", "set", "ram", 0)


def test_create_table_accepts_a_named_tuple_class_as_the_record(node):
    class Msg(NamedTuple):
        id: int
        body: str

    assert tables.create_table("msg", record=Msg) is Msg
    tables.dirty_write("msg", Msg(1, "hi"))
    assert tables.dirty_read("msg", 1) == [Msg(1, "hi")]
    assert type(tables.dirty_read("msg", 1)[0]) is Msg


def test_create_table_twice_is_table_exists(node):
    tables.create_table("t", attributes=("k", "v"))
    with pytest.raises(tables.TableExists):
        tables.create_table("t", attributes=("k", "v"))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"attributes": ("k",)}, "at least one more"),
        ({"attributes": "kv"}, "tuple of names"),
        ({"attributes": ("k", "k")}, "repeat"),
        ({"attributes": ("k", "_v")}, "identifiers"),
        ({"attributes": ("k", "v"), "key": "z"}, "key must be one of"),
        ({"attributes": ("k", "v"), "type": "heap"}, "type must be one of"),
        ({"attributes": ("k", "v"), "index": ["z"]}, "is not one of"),
        ({"attributes": ("k", "v"), "index": ["k"]}, "cannot have an index"),
        ({"attributes": ("k", "v"), "copies": "tape"}, "copies must be"),
        ({"attributes": ("k", "v"), "copies": {"ram": ["nobody@nowhere"]}}, "other nodes"),
    ],
)
def test_create_table_refuses_bad_options_saying_what_was_expected(node, kwargs, message):
    with pytest.raises((BadArg, tables.TableError)) as info:
        tables.create_table("t", **kwargs)
    assert message in str(info.value)


def test_write_of_the_wrong_shape_is_refused_with_a_clear_error(node):
    tables.create_table("t", attributes=("k", "a", "b"))
    with pytest.raises(tables.BadRecord, match="expects records of 3 fields"):
        tables.dirty_write("t", ("k", 1))
    with pytest.raises(tables.BadRecord, match="exactly the fields"):
        tables.dirty_write("t", {"k": 1, "a": 2})
    with pytest.raises(tables.BadRecord, match="expects a T record"):
        tables.dirty_write("t", "k,1,2")
    with pytest.raises(tables.BadRecord, match="must be immutable"):
        tables.dirty_write("t", ("k", [1], 2))
    with pytest.raises(tables.BadRecord, match="immutable"):
        tables.dirty_write("t", ((1, [2]), 1, 2))
    with pytest.raises(tables.BadRecord):
        tables.transaction(tables.write, "t", ("k",))
    assert tables.table_info("t").size == 0
    tables.dirty_write("t", {"k": 1, "a": 2, "b": 3})  # a dict of exactly the fields works
    assert tables.dirty_read("t", 1) == [(1, 2, 3)]


@pytest.mark.otp(strict=False)
def test_fast_dirty_write_path_still_refuses_unhashable_keys(node):
    R = tables.create_table("t", attributes=("k", "v"))
    tables.dirty_write("t", R("a", [1]))  # not strict: mutable fields are the caller's risk
    with pytest.raises(tables.BadRecord, match="hashable"):
        tables.dirty_write("t", R([1], 1))
    assert tables.dirty_all_keys("t") == ["a"]


def test_unknown_table_is_no_such_table(node):
    with pytest.raises(tables.NoSuchTable) as info:
        tables.dirty_read("nope", 1)
    assert info.value.reason == ("no_exists", "nope")


def test_delete_table_removes_it_and_its_records(node):
    tables.create_table("t", attributes=("k", "v"))
    tables.dirty_write("t", (1, 1))
    tables.delete_table("t")
    with pytest.raises(tables.NoSuchTable):
        tables.dirty_read("t", 1)
    tables.create_table("t", attributes=("k", "v"))
    assert tables.dirty_read("t", 1) == []


def test_table_info_reports_size_memory_storage_and_indexes(node):
    tables.create_table("t", attributes=("k", "v", "w"), type="bag", index=["v"])
    for i in range(10):
        tables.dirty_write("t", (i % 3, i, "x"))
    info = tables.table_info("t")
    assert info.size == 10 and info.type == "bag" and info.index == ("v",)
    assert info.memory > 0 and info.storage == "ram"


# --- reads and writes by type ---------------------------------------------------------


def test_set_keeps_one_record_per_key(node):
    tables.create_table("s", attributes=("k", "v"))
    tables.dirty_write("s", (1, "a"))
    tables.dirty_write("s", (1, "b"))
    assert tables.dirty_read("s", 1) == [(1, "b")]
    tables.dirty_delete_object("s", (1, "a"))  # not the stored record: nothing happens
    assert tables.dirty_read("s", 1) == [(1, "b")]
    tables.dirty_delete_object("s", (1, "b"))
    assert tables.dirty_read("s", 1) == []


def test_bag_keeps_distinct_records_per_key(node):
    tables.create_table("b", attributes=("k", "v"), type="bag")
    for v in ("a", "b", "a"):
        tables.dirty_write("b", (1, v))
    assert tables.dirty_read("b", 1) == [(1, "a"), (1, "b")]
    tables.dirty_delete_object("b", (1, "a"))
    assert tables.dirty_read("b", 1) == [(1, "b")]
    tables.transaction(tables.write, "b", (1, "c"))
    assert tables.transaction(tables.read, "b", 1) == [(1, "b"), (1, "c")]
    tables.dirty_delete("b", 1)
    assert tables.dirty_read("b", 1) == []


def test_ordered_set_iterates_in_key_order(node):
    tables.create_table("o", attributes=("k", "v"), type="ordered_set")
    for k in (5, 1, 9, 3, 7):
        tables.dirty_write("o", (k, str(k)))
    tables.dirty_delete("o", 9)
    assert tables.dirty_all_keys("o") == [1, 3, 5, 7]
    assert (tables.dirty_first("o"), tables.dirty_last("o")) == (1, 7)
    assert (tables.dirty_next("o", 3), tables.dirty_prev("o", 3)) == (5, 1)
    assert (tables.dirty_next("o", 4), tables.dirty_prev("o", 4)) == (5, 3)  # absent keys
    assert (tables.dirty_next("o", 7), tables.dirty_prev("o", 1)) == (None, None)
    assert [r.k for r in tables.dirty_select("o", lambda r: True)] == [1, 3, 5, 7]
    assert tables.dirty_foldl("o", lambda r, acc: [*acc, r.k], []) == [1, 3, 5, 7]


def test_ordered_set_iteration_inside_a_transaction_sees_its_own_writes(node):
    tables.create_table("o", attributes=("k", "v"), type="ordered_set")
    for k in (2, 4, 6):
        tables.dirty_write("o", (k, k))

    def body():
        tables.write("o", (5, 5))
        tables.delete("o", 2)
        tables.write("o", (0, 0))
        return (tables.all_keys("o"), tables.first("o"), tables.last("o"),
                tables.next("o", 4), tables.prev("o", 4),
                tables.foldl("o", lambda r, acc: acc + r.v, 0))

    assert tables.transaction(body) == ([0, 4, 5, 6], 0, 6, 5, 0, 15)
    assert tables.dirty_all_keys("o") == [0, 4, 5, 6]


def test_ordered_set_refuses_incomparable_keys(node):
    tables.create_table("o", attributes=("k", "v"), type="ordered_set")
    tables.dirty_write("o", (1, 1))
    with pytest.raises(tables.BadRecord, match="mutually comparable"):
        tables.dirty_write("o", ("a", 1))


def test_set_iteration_follows_insertion_order(node):
    tables.create_table("s", attributes=("k", "v"))
    for k in ("c", "a", "b"):
        tables.dirty_write("s", (k, 0))
    assert tables.dirty_all_keys("s") == ["c", "a", "b"]
    assert tables.dirty_first("s") == "c" and tables.dirty_last("s") == "b"
    assert tables.dirty_next("s", "a") == "b" and tables.dirty_prev("s", "a") == "c"
    assert tables.transaction(tables.next, "s", "c") == "a"
    assert tables.transaction(tables.prev, "s", "c") is None


def test_select_with_a_predicate_and_match_with_a_pattern(node):
    tables.create_table("p", attributes=("id", "city", "age"), index=["city"])
    rows = [(1, "oslo", 30), (2, "rome", 40), (3, "oslo", 50)]
    for r in rows:
        tables.dirty_write("p", r)
    assert [r.id for r in tables.dirty_select("p", lambda r: r.age >= 40)] == [2, 3]
    assert sorted(r.id for r in tables.dirty_match("p", {"city": "oslo"})) == [1, 3]
    assert [r.id for r in tables.dirty_match("p", (ANY, "oslo", 50))] == [3]
    assert [r.id for r in tables.dirty_match("p", {"id": 2, "age": ANY})] == [2]
    assert tables.transaction(tables.match, "p", {"city": "rome"}) == [(2, "rome", 40)]
    assert tables.transaction(tables.select, "p", lambda r: r.id == 1) == [(1, "oslo", 30)]
    with pytest.raises(BadArg, match="no attribute"):
        tables.dirty_match("p", {"town": "oslo"})
    with pytest.raises(BadArg, match="needs 3 fields"):
        tables.dirty_match("p", (ANY, "oslo"))


# --- indexes ----------------------------------------------------------------------------


def _by_index(table, value, attr):
    return sorted(tuple(r) for r in tables.dirty_index_read(table, value, attr))


def test_index_stays_consistent_after_updates_and_deletes(node):
    tables.create_table("u", attributes=("id", "city", "n"), index=["city"])
    tables.dirty_write("u", (1, "oslo", 0))
    tables.dirty_write("u", (2, "oslo", 0))
    tables.dirty_write("u", (1, "rome", 0))  # moves 1 from oslo to rome
    assert _by_index("u", "oslo", "city") == [(2, "oslo", 0)]
    assert _by_index("u", "rome", "city") == [(1, "rome", 0)]
    tables.transaction(tables.delete, "u", 2)
    assert _by_index("u", "oslo", "city") == []
    tables.dirty_delete_object("u", (1, "rome", 0))
    assert _by_index("u", "rome", "city") == []
    from otp.tables._registry import registry

    assert registry().tables["u"].indexes == {1: {}}  # no empty leftovers


def test_index_on_a_bag_follows_each_record(node):
    tables.create_table("b", attributes=("k", "tag"), type="bag", index=["tag"])
    tables.dirty_write("b", (1, "red"))
    tables.dirty_write("b", (1, "blue"))
    tables.dirty_write("b", (2, "red"))
    assert _by_index("b", "red", "tag") == [(1, "red"), (2, "red")]
    tables.dirty_delete_object("b", (1, "red"))
    assert _by_index("b", "red", "tag") == [(2, "red")]
    assert _by_index("b", "blue", "tag") == [(1, "blue")]


def test_index_read_in_a_transaction_sees_its_own_writes(node):
    tables.create_table("u", attributes=("id", "city"), index=["city"])
    tables.dirty_write("u", (1, "oslo"))

    def body():
        tables.write("u", (2, "oslo"))
        tables.write("u", (1, "rome"))
        return sorted(r.id for r in tables.index_read("u", "oslo", "city"))

    assert tables.transaction(body) == [2]


def test_add_index_builds_it_from_existing_records_and_del_index_drops_it(node):
    tables.create_table("u", attributes=("id", "city"))
    tables.dirty_write("u", (1, "oslo"))
    with pytest.raises(BadArg, match="no index"):
        tables.dirty_index_read("u", "oslo", "city")
    tables.add_index("u", "city")
    assert _by_index("u", "oslo", "city") == [(1, "oslo")]
    tables.dirty_write("u", (2, "oslo"))
    assert len(_by_index("u", "oslo", "city")) == 2
    assert tables.table_info("u").index == ("city",)
    tables.del_index("u", "city")
    assert tables.table_info("u").index == ()


# --- events ------------------------------------------------------------------------------


def test_subscribe_sends_write_and_delete_events_in_commit_order(node):
    tables.create_table("t", attributes=("k", "v"))
    tables.subscribe("t")
    tables.dirty_write("t", (1, "a"))
    tables.transaction(lambda: (tables.write("t", (1, "b")), tables.write("t", (2, "c"))))
    tables.dirty_delete("t", 2)
    ev = tables.TableEvent
    assert assert_receive(ev) == ev("t", "write", 1, (1, "a"), None)
    assert assert_receive(ev) == ev("t", "write", 1, (1, "b"), (1, "a"))
    assert assert_receive(ev) == ev("t", "write", 2, (2, "c"), None)
    assert assert_receive(ev) == ev("t", "delete", 2, None, (2, "c"))
    with pytest.raises(tables.TransactionAborted):
        tables.transaction(lambda: (tables.write("t", (3, "x")), tables.abort("no")))
    refute_receive(ev, timeout=0)  # aborted: nothing happened, nothing said
    tables.unsubscribe("t")
    tables.dirty_write("t", (4, "y"))
    refute_receive(ev, timeout=0)


def test_bag_events_name_each_record_added_or_removed(node):
    tables.create_table("b", attributes=("k", "v"), type="bag")
    tables.subscribe("b")
    tables.dirty_write("b", (1, "a"))
    tables.dirty_write("b", (1, "b"))
    tables.dirty_delete_object("b", (1, "a"))
    tables.dirty_delete("b", 1)
    ops = [(e.op, e.record) for e in (assert_receive(tables.TableEvent) for _ in range(4))]
    assert ops == [("write", (1, "a")), ("write", (1, "b")), ("delete_object", (1, "a")),
                   ("delete", None)]


def test_events_to_a_dead_subscriber_are_dropped(node):
    tables.create_table("t", attributes=("k", "v"))

    def sub():
        tables.subscribe("t")

    _pid, _ref = spawn_monitor(sub)
    assert_receive(lambda m: getattr(m, "ref", None) == _ref)
    tables.dirty_write("t", (1, 1))
    assert tables.table_info("t").subscribers == 0


# --- commit hooks (the replication point) ---------------------------------------------------


def test_every_commit_reaches_the_commit_hooks_once_in_order(node):
    tables.create_table("t", attributes=("k", "v"))
    seen = []
    tables.add_commit_hook(seen.append)
    tables.dirty_write("t", (1, "a"))
    tables.transaction(lambda: (tables.write("t", (2, "b")), tables.delete("t", 1)))
    with pytest.raises(tables.TransactionAborted):
        tables.transaction(lambda: (tables.write("t", (3, "c")), tables.abort("x")))
    tables.remove_commit_hook(seen.append)
    tables.dirty_write("t", (9, "z"))
    assert [r.ops for r in seen] == [(("t", 1, (1, "a")),), (("t", 2, (2, "b")), ("t", 1, None))]
    assert [r.dirty for r in seen] == [True, False]
    assert seen[0].tid < seen[1].tid


def test_a_commit_record_replayed_elsewhere_reproduces_the_table(node):
    tables.create_table("src", attributes=("k", "v"), type="bag")
    log = []
    tables.add_commit_hook(log.append)
    tables.dirty_write("src", (1, "a"))
    tables.transaction(lambda: (tables.write("src", (1, "b")), tables.write("src", (2, "c"))))
    tables.dirty_delete_object("src", (1, "a"))
    before = sorted(tables.dirty_select("src", lambda r: True))
    tables.remove_commit_hook(log.append)
    tables.delete_table("src")
    tables.create_table("src", attributes=("k", "v"), type="bag")
    for rec in log:
        tables.apply_replicated(rec)
    assert sorted(tables.dirty_select("src", lambda r: True)) == before


def test_dirty_update_counter_adds_atomically_and_creates_a_missing_record(node):
    tables.create_table("c", attributes=("k", "n"))
    assert tables.dirty_update_counter("c", "a", 5) == 5
    assert tables.dirty_update_counter("c", "a", -2) == 3
    assert tables.dirty_read("c", "a") == [("a", 3)]
    tables.create_table("w", attributes=("k", "n", "m"))
    tables.dirty_write("w", ("x", 1, 10))
    assert tables.dirty_update_counter("w", "x", 1, attribute="m") == 11
    with pytest.raises(BadArg, match="say which attribute"):
        tables.dirty_update_counter("w", "x", 1)
    with pytest.raises(BadArg, match="no record"):
        tables.dirty_update_counter("w", "nope", 1, attribute="n")
    tables.dirty_write("w", ("s", "text", 0))
    with pytest.raises(BadArg, match="not an int"):
        tables.dirty_update_counter("w", "s", 1, attribute="n")


@pytest.mark.otp(strict=False)
def test_first_next_walk_a_set_table_correctly_after_changes(node):
    R = tables.create_table("s", attributes=("k", "v"))

    def walk():
        out, k = [], tables.dirty_first("s")
        while k is not None:
            out.append(k)
            k = tables.dirty_next("s", k)
        return out

    for k in range(5):
        tables.dirty_write("s", R(k, 0))  # the fast path
    assert walk() == [0, 1, 2, 3, 4]
    tables.dirty_delete("s", 2)
    assert walk() == [0, 1, 3, 4]
    tables.dirty_write("s", R(2, 0))
    assert walk() == [0, 1, 3, 4, 2]
    tables.dirty_delete("s", 0)
    tables.dirty_write("s", R(9, 0))
    assert walk() == [1, 3, 4, 2, 9]
    assert tables.dirty_next("s", "absent") is None


def test_the_module_docstring_example_runs():
    import contextlib
    import io
    import textwrap

    doc = tables.__doc__
    start = doc.index("    import otp\n")
    end = doc.index("    print(otp.run(main))") + len("    print(otp.run(main))")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(textwrap.dedent(doc[start:end]), {})
    assert out.getvalue().strip() == "[Account(id=2, owner='bob', balance=30)]"


def test_clear_table_deletes_every_record_in_one_commit(node):
    tables.create_table("t", attributes=("k", "v"), index=["v"])
    for i in range(5):
        tables.dirty_write("t", (i, i % 2))
    seen = []
    tables.add_commit_hook(seen.append)
    tables.clear_table("t")
    tables.remove_commit_hook(seen.append)
    assert tables.dirty_all_keys("t") == [] and tables.dirty_index_read("t", 1, "v") == []
    assert len(seen) == 1 and len(seen[0].ops) == 5
    tables.clear_table("t")  # an empty table: nothing to do


def test_deleting_an_absent_key_sends_no_event(node):
    tables.create_table("t", attributes=("k", "v"))
    tables.subscribe("t")
    tables.dirty_delete("t", "absent")
    tables.transaction(lambda: (tables.write("t", (1, 1)), tables.delete("t", 1)))
    refute_receive(tables.TableEvent, timeout=0)


def test_bad_arguments_say_what_was_expected(node):
    tables.create_table("t", attributes=("k", "v"))
    with pytest.raises(BadArg, match="callable"):
        tables.transaction("not a function")
    with pytest.raises(BadArg, match="retries"):
        tables.transaction(lambda: None, retries=-1)
    with pytest.raises(BadArg, match="'read' or 'write'"):
        tables.transaction(tables.lock_table, "t", "exclusive")
    with pytest.raises(BadArg, match="'read' or 'write'"):
        tables.transaction(tables.read, "t", 1, "sticky")
    with pytest.raises(BadArg, match="no index"):
        tables.del_index("t", "v")
    with pytest.raises(BadArg, match="no attribute"):
        tables.dirty_index_read("t", 1, "nope")
    with pytest.raises(BadArg, match="NamedTuple"):
        tables.create_table("u", record=dict)
    with pytest.raises(tables.TableTimeout):
        tables.wait_for_tables("never", 0.01)
    assert tables.is_transaction() is False
    assert tables.transaction(tables.is_transaction) is True
