"""otp.tables' ordered_set key structure (blocked sorted list) against a sorted list."""

from __future__ import annotations

from bisect import bisect_left, bisect_right

from hypothesis import given, settings
from hypothesis import strategies as st

from otp.tables import _sorted
from otp.tables._sorted import SortedKeys


def _next_after(ref, k):
    i = bisect_right(ref, k)
    return ref[i] if i < len(ref) else None


def _prev_before(ref, k):
    i = bisect_left(ref, k)
    return ref[i - 1] if i > 0 else None


@settings(max_examples=150, deadline=None)
@given(ops=st.lists(st.tuples(st.booleans(), st.integers(-60, 60)), max_size=400),
       probes=st.lists(st.integers(-70, 70), max_size=20))
def test_sorted_keys_behave_like_a_sorted_list(ops, probes):
    old_load = _sorted.LOAD
    _sorted.LOAD = 4  # tiny blocks, so that splits and empty blocks happen
    try:
        _check(ops, probes)
    finally:
        _sorted.LOAD = old_load


def _check(ops, probes):
    keys = SortedKeys()
    ref: list[int] = []
    for add, k in ops:
        if add and k not in ref:
            keys.add(k)
            ref.insert(bisect_left(ref, k), k)
        elif not add:
            keys.discard(k)
            if k in ref:
                ref.remove(k)
        assert all(len(b) <= 2 * _sorted.LOAD for b in keys.blocks)
    assert list(keys) == ref and len(keys) == len(ref)
    assert keys.first() == (ref[0] if ref else None)
    assert keys.last() == (ref[-1] if ref else None)
    for p in probes + ref[:5]:
        assert keys.next_after(p) == _next_after(ref, p)
        assert keys.prev_before(p) == _prev_before(ref, p)


def test_keys_that_do_not_compare_are_kept_aside():
    keys = SortedKeys([1, 2])
    try:
        keys.add("a")
    except TypeError:
        keys.add_odd("a")
    assert list(keys) == [1, 2, "a"]
    keys.discard("a")
    keys.discard("zzz")  # absent, incomparable: nothing happens
    assert list(keys) == [1, 2]
