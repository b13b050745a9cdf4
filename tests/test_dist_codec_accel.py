"""The C accelerator of the External Term Format codec (otp/dist/_etf_accel.c) against
the Python reference (otp/dist/_etf.py): the same bytes for every term, the same values
back (same types all the way down), the same errors (class, message, place in the term)
for what cannot be sent and for malformed or hostile input, and no reference leaks.

The whole of tests/test_dist_codec.py also runs under both implementations."""

from __future__ import annotations

import dataclasses
import gc
import math
import os
import random
import struct
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otp.dist import _etf
from otp.dist._etf_types import (
    Atom,
    BadTerm,
    ForeignException,
    ImproperList,
    NotSendable,
    register_type,
)
from otp.lowlevel import Pid, Ref
from tests.etf_codecs import (
    NOT_BUILT,
    Empty,
    Msg,
    One,
    Pair,
    _etf_accel,
    _hashable,
    _leaves,
    _terms,
    codecs,
    improper_lists,
)

_C = codecs()["c"]
_PY = codecs()["python"]
assert _PY is not None

pytestmark = pytest.mark.skipif(_C is None, reason=NOT_BUILT)

BOTH = [True, False]  # otpy=True (between otpy nodes), otpy=False (BEAM)


def alike(a: Any, b: Any) -> bool:
    """Equal and of the same types all the way down; exceptions (decoded exit reasons)
    compare by class, args and attributes."""
    if a.__class__ is not b.__class__:
        return False
    if isinstance(a, BaseException):
        return alike(a.args, b.args) and alike(
            getattr(a, "__dict__", {}), getattr(b, "__dict__", {})
        )
    if isinstance(a, tuple | list):
        return len(a) == len(b) and all(alike(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return len(a) == len(b) and all(
            any(alike(k, k2) for k2 in b) and alike(v, b[k]) for k, v in a.items()
        )
    if isinstance(a, float):
        if math.isnan(a):
            return math.isnan(b)
        return struct.pack(">d", a) == struct.pack(">d", b)
    if isinstance(a, ImproperList):
        return alike(a.items, b.items) and alike(a.tail, b.tail)
    if dataclasses.is_dataclass(a):  # a record: field by field (an exception in one)
        return all(alike(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    return bool(a == b)


def outcome(f: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, ...]:
    try:
        return ("ok", f(*args, **kwargs))
    except Exception as exc:
        return ("error", exc.__class__, str(exc), getattr(exc, "steps", None))


def assert_same_outcome(c: tuple[Any, ...], py: tuple[Any, ...]) -> None:
    if c[0] == "ok" and py[0] == "ok":
        assert alike(c[1], py[1]), (c, py)
    else:
        assert c == py


def encode_both(term: Any, otpy: bool) -> bytes | None:
    assert _C is not None
    c = outcome(_C[0], term, otpy=otpy)
    py = outcome(_PY[0], term, otpy=otpy)
    assert_same_outcome(c, py)
    return c[1] if c[0] == "ok" else None


def decode_both(data: bytes, pos: int = 0, otpy: bool = True) -> tuple[Any, ...]:
    assert _C is not None
    c = outcome(_C[1], data, pos, otpy=otpy)
    py = outcome(_PY[1], data, pos, otpy=otpy)
    assert_same_outcome(c, py)
    return c


# --- which codec runs -----------------------------------------------------------------


def _accelerated(env: dict[str, str]) -> str:
    code = "import otp.dist._etf as e; print(e.ACCELERATED, e.encode.__module__)"
    out = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True,
        text=True, check=True, timeout=60,
    )  # fmt: skip
    return out.stdout.strip()


def test_the_accelerator_is_used_when_built_and_otpy_pure_etf_keeps_the_python_codec():
    assert _accelerated({"OTPY_PURE_ETF": ""}) == "True otp.dist._etf_accel"
    assert _accelerated({"OTPY_PURE_ETF": "1"}) == "False otp.dist._etf"


# --- differential: every term, both mappings -----------------------------------------------


class _Failed(Exception):
    """An exception of a class no node registers: a ForeignException on arrival."""


class _Text(str):
    """A str subclass: not sendable."""


class _OddRepr:
    """Its repr is not a plain str: the repr an exit reason carries instead cannot be
    sent either."""

    def __repr__(self) -> str:
        return _Text("odd")


# Values that cannot cross, placed anywhere in a term: the refusal must be the same.
_unsendable = st.sampled_from(
    [
        math.nan,
        math.inf,
        lambda: 1,
        {1, 2},
        bytearray(b"x"),
        Atom("a" * 256),
        (Atom("$otpy_rec"), 1),
        (Atom("$otpy_bytes"), b""),
        Pid("a@h", 2**64, 0),
        Pid("a@h", -1, 0),
        Pid("a@h", 1, 2**32),
        Ref("a@h", -5),
        "\ud800",  # a lone surrogate: str.encode() refuses it
        object(),
        _OddRepr(),
        _Text("x"),
    ]
)
_ints = st.one_of(
    st.integers(-(2**70), 2**70),
    st.sampled_from([2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**63 - 1, 2**63, -(2**63),
                     -(2**63) - 1, 2**64 - 1, 2**64, -(2**64), 255, 256, -1]),
)  # fmt: skip


def _exception(kind: int, args: list[Any], attrs: dict[Any, Any]) -> BaseException:
    """An exception as a value (an exit reason): of a builtin class, of otpy's, of an
    unknown one, or a ForeignException, with attributes (any keys for the last)."""
    if kind == 0:
        return ForeignException("app.Failed", tuple(args), attrs)
    exc = (ValueError, _Failed, KeyError)[kind - 1](*args)
    exc.__dict__.update((str(k), v) for k, v in attrs.items())
    return exc


def _exceptions(c: st.SearchStrategy[Any]) -> st.SearchStrategy[BaseException]:
    args = st.lists(c, max_size=3)
    return st.builds(
        _exception,
        st.integers(0, 3),
        st.one_of(args, args.map(lambda a: [Atom("$otpy_rec"), *a])),  # a reserved head
        st.dictionaries(
            st.one_of(st.text(max_size=3), _hashable, _unsendable.filter(lambda v: v.__hash__)),
            c,
            max_size=3,
        ),
    )


_any_terms = st.recursive(
    st.one_of(_leaves, _ints, _unsendable, st.builds(Ref, st.just("a@h"), st.integers(0, 2**200))),
    lambda c: st.one_of(
        st.lists(c, max_size=4),
        st.lists(st.integers(0, 256), max_size=4),
        st.lists(c, max_size=4).map(tuple),
        st.dictionaries(_hashable, c, max_size=33),
        st.dictionaries(
            st.one_of(_hashable, _unsendable.filter(lambda v: v.__hash__)), c, max_size=3
        ),
        improper_lists(c),
        _exceptions(c),
        st.builds(Pair, c, c),
        st.builds(Msg, c, c, c),
        st.builds(One, c),
        st.just(Empty()),
    ),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_terms, st.sampled_from(BOTH))
def test_every_term_encodes_to_the_same_bytes_and_decodes_to_the_same_value(term, otpy):
    data = encode_both(term, otpy)
    assert data is not None
    decode_both(data, otpy=otpy)
    decode_both(data, otpy=not otpy)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_any_terms, st.sampled_from(BOTH))
def test_any_term_gives_the_same_bytes_or_the_same_refusal(term, otpy):
    data = encode_both(term, otpy)
    if data is not None:
        decode_both(data, otpy=otpy)


_LIST = bytes((108,))


_small_terms = st.recursive(
    st.one_of(st.integers(-(2**70), 2**70), _leaves.filter(lambda t: t.__class__ is not int)),
    lambda c: st.one_of(st.lists(c, max_size=3), st.lists(c, max_size=3).map(tuple),
                        improper_lists(c), st.builds(Pair, c, c)),
    max_leaves=6,
)  # fmt: skip


@st.composite
def _written_lists(draw: st.DrawFn) -> tuple[bytes, bool]:
    """``[items | tail]`` written out by hand, canonical or not: the tail a list, an
    improper list, ``[]``, a list of bytes (STRING_EXT), any term; no items before it."""
    otpy = draw(st.sampled_from(BOTH))
    items = draw(st.lists(_small_terms, max_size=3))
    t = _small_terms
    tail = draw(st.one_of(t, st.lists(t, max_size=3), improper_lists(t),
                          st.lists(st.integers(0, 255), max_size=3), st.just([])))  # fmt: skip
    if draw(st.booleans()):  # a tail that is itself written [x | tail]
        tail_bytes = _LIST + struct.pack(">I", 1) + _PY[0](draw(_small_terms), otpy=otpy)
        tail_bytes += _PY[0](tail, otpy=otpy)
    else:
        tail_bytes = _PY[0](tail, otpy=otpy)
    body = b"".join(_PY[0](t, otpy=otpy) for t in items)
    return _LIST + struct.pack(">I", len(items)) + body + tail_bytes, otpy


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_written_lists())
def test_lists_with_any_tail_written_any_way_decode_the_same(written):
    data, otpy = written
    decode_both(data, otpy=otpy)
    decode_both(data, otpy=not otpy)


def _improper_around_its_constructor(items: Any, tail: Any) -> ImproperList:
    t = object.__new__(ImproperList)
    object.__setattr__(t, "items", items)
    object.__setattr__(t, "tail", tail)
    return t


def test_an_improper_list_built_around_its_constructor_encodes_the_same():
    alias = ImproperList([Atom("alias")], Ref("a@h", 3))
    for term in (
        _improper_around_its_constructor([1, "x"], 2),
        _improper_around_its_constructor((1,), [2, 3]),
        _improper_around_its_constructor((), 5),
        _improper_around_its_constructor((1,), alias),
        _improper_around_its_constructor(iter([1]), 2),
        _improper_around_its_constructor((1,), _improper_around_its_constructor((2,), {3})),
        _improper_around_its_constructor((lambda: 1,), 2),
    ):
        for otpy in BOTH:
            data = encode_both(term, otpy)
            if data is not None:
                decode_both(data, otpy=otpy)
    assert encode_both(object.__new__(ImproperList), True) is None  # no items, no tail


def test_the_alias_call_tag_decodes_to_an_improper_list_of_the_same_ref():
    assert _C is not None
    ref = Ref("a@h", 2**70 + 5)
    call = (Atom("$gen_call"), (Pid("a@h", 1, 2), ImproperList((Atom("alias"),), ref)), "incr")
    for otpy in BOTH:
        data = encode_both(call, otpy)
        assert data is not None
        term = decode_both(data, otpy=otpy)[1][0]
        tag = term[1][1]
        assert tag.__class__ is ImproperList and tag.items == (Atom("alias"),) and tag.tail == ref
        assert hash(tag) == hash(ImproperList([Atom("alias")], ref))


def test_exceptions_encode_the_same_and_refuse_the_same_in_the_same_order():
    def failed(attrs: dict[str, Any], *args: Any) -> _Failed:
        exc = _Failed(*args)
        exc.__dict__.update(attrs)
        return exc

    reserved = Atom("$otpy_exc")
    for term in (
        ValueError("bad", 1),
        ValueError(lambda: 1, {2}, [math.nan]),  # what cannot cross: its repr
        failed({"a": {1}, "_private": 2, "b": (3, "x")}, "y"),
        ValueError(Atom("$otpy_rec"), 1),  # the args tuple is refused
        ValueError(reserved, {1}),
        ValueError(reserved, _OddRepr()),  # the reserved head is found first
        ValueError(_OddRepr(), "\ud800"),  # the lone surrogate is found first
        ValueError(_OddRepr()),
        failed({"k": _OddRepr()}, 1),
        failed({"k": _OddRepr()}, "\ud800"),
        ForeignException("x.Y", (1,), {"a": {2}}),
        ForeignException(Atom("x"), (1,), {}),
        ForeignException("\ud800", (), {}),
        ForeignException("x", (1,), {frozenset(): 1, "b": _OddRepr()}),  # the key first
        ForeignException("x", (1,), {"b": _OddRepr(), frozenset(): 1}),
        ForeignException("x", (reserved,), {frozenset(): 1}),
        ForeignException("x", (_OddRepr(),), {"\ud800": 1, "v": lambda: 2}),
        ForeignException("x", (1,), {"a": "\ud800"}),  # found while finding what is sent
        ForeignException("x", (), [("a", 1)]),  # type: ignore[arg-type]
        KeyError(("a", [1, {2}])),
        [RuntimeError("in a list", ImproperList([1], ValueError("tail")))],
    ):
        for otpy in BOTH:
            data = encode_both(term, otpy)
            if data is not None:
                decode_both(data, otpy=otpy)


def test_refusals_name_the_same_place_in_the_term():
    for term in (
        [1, {"k": (2, [3, lambda: 4])}],
        {(1, 2): {Atom("x"): [math.nan]}},
        {frozenset(): 1},
        ImproperList([1, 2], {3}),
        ImproperList([1, lambda: 2], 3),
        [ImproperList([1], (2, [math.inf]))],
    ):
        for otpy in BOTH:
            assert encode_both(term, otpy) is None
    assert encode_both((1, (2, (Atom("$otpy_exc"), 1))), True) is None  # reserved


def test_deep_nesting_is_refused_by_both():
    deep: Any = 1
    for _ in range(100_000):
        deep = [deep]
    assert encode_both(deep, True) is None
    data = bytes([108, 0, 0, 0, 1]) * 100_000 + bytes([106])
    assert decode_both(data)[0] == "error"


def test_decode_takes_what_the_python_decode_takes():
    data = b"\x00" + _PY[0]((Atom("ok"), "x"))
    for args, kwargs in (
        ((bytearray(data), 1), {}),
        ((memoryview(data), 1), {}),
        ((data,), {"pos": 1}),
        ((data, 1), {"otpy": False}),
        ((data, -5), {}),
        ((data, 99), {}),
    ):
        assert _C is not None
        assert_same_outcome(outcome(_C[1], *args, **kwargs), outcome(_PY[1], *args, **kwargs))


# --- hostile input: never a crash, the same outcome ----------------------------------------

_SEEDS = [
    _PY[0](t, otpy=o)
    for o in BOTH
    for t in (
        (Atom("ok"), "body", [1, 2000], {"k": 2**80}, Pid("a@h", 1, 2), 1.5, b"\xff"),
        (22, Pid("a@h", 1, 2), Pid("b@h", 3, 4)),
        [Ref("a@h", 7), ImproperList([Atom("alias")], Ref("x@h", 2**100)), [[], ()]],
        {Atom("a"): {"b": [1, 2, 3]}, 2**70: -(2**3000)},
        ValueError("bad", 1),
        (Msg("a", b"\x00\xff", 3), Pair(1, One("x")), Empty(), b"raw"),
    )
]


def _mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(4)
        i = rng.randrange(len(b) + 1)
        if op == 0 and b:
            b[min(i, len(b) - 1)] = rng.randrange(256)
        elif op == 1:
            b.insert(i, rng.choice([0, 1, 3, 106, 107, 108, 109, 110, 116, 119, 255]))
        elif op == 2:
            del b[i : i + rng.randint(1, 4)]
        else:
            b[i:i] = struct.pack(">I", rng.choice([0, 1, 2**31, 2**32 - 1]))
    return bytes(b)


def _fuzz_one(data: bytes, otpy: bool) -> None:
    c = decode_both(data, otpy=otpy)
    if c[0] == "error":
        assert issubclass(c[1], BadTerm), c


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=64), st.sampled_from(BOTH))
def test_random_bytes_decode_the_same_or_fail_the_same(data, otpy):
    _fuzz_one(data, otpy)


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(_SEEDS), st.randoms(use_true_random=False), st.sampled_from(BOTH))
def test_mutated_terms_decode_the_same_or_fail_the_same(seed, rng, otpy):
    _fuzz_one(_mutate(rng, seed), otpy)


def test_every_truncation_and_byte_flip_of_the_seeds_fails_the_same():
    rng = random.Random(1234)
    for seed in _SEEDS:
        for cut in range(len(seed)):
            for otpy in BOTH:
                _fuzz_one(seed[:cut], otpy)
        for i in range(len(seed)):
            flipped = bytearray(seed)
            flipped[i] = rng.randrange(256)
            _fuzz_one(bytes(flipped), True)


def test_a_list_with_no_elements_before_a_tail_is_a_bad_term():
    data = bytes.fromhex("6c000000006101")
    c = decode_both(data)
    assert c[1] is BadTerm and "no elements before its tail" in c[2]


# --- reference counting ------------------------------------------------------------------------


class _Shared:
    def __init__(self) -> None:
        self.atom = Atom("leak_check_atom")
        self.text = "leak check text é"
        self.raw = b"leak check raw"
        self.node = "leak@check"


def _leak_workload(shared: _Shared) -> Callable[[], None]:
    assert _C is not None
    enc, dec = _C
    pid = Pid(shared.node, 7, 1)
    msg = (shared.atom, shared.text, shared.raw, pid, [1, 2, 300], {"k": (shared.text, 2**70)},
           1.5, None, True, Ref(shared.node, 5), Ref(shared.node, 2**120), -(2**40), [9] * 3,
           ImproperList([shared.atom], shared.text), ValueError(shared.text),
           ImproperList([shared.atom, shared.text], Ref(shared.node, 9)),
           [ImproperList([shared.raw], ImproperList([shared.text], shared.atom))],
           ForeignException(shared.text, (shared.atom, {shared.raw}), {"a": shared.text}),
           Msg(shared.text, shared.raw, 3), Pair(1, shared.atom), One(shared.text))  # fmt: skip
    data = enc(msg)
    bad = [data[:cut] for cut in range(0, len(data), 7)]
    bad.append(enc((Atom("test.Checked"), -1)).replace(b"h\x02", b"h\x03w\t$otpy_rec", 1))
    bad.append(enc((Atom("$otpy_rec"), Atom("test.Checked"), 1, 2), otpy=False))
    unsendable = [
        shared.text,
        {shared.atom: [shared.raw, lambda: 1]},
        Msg(shared.text, {1}, 1),
        ImproperList([shared.text], {shared.atom}),
        ForeignException(shared.text, (shared.atom,), {frozenset(): shared.text}),
        ForeignException(shared.text, (Atom("$otpy_exc"),), {frozenset(): shared.raw}),
        ForeignException(shared.text, (shared.raw,), {"k": _OddRepr()}),
    ]
    # [text | [atom | raw]] and [atom | [text]] written out: folded into one list
    tail = b"l\x00\x00\x00\x01" + enc(shared.atom) + enc(shared.raw)
    bad.append(b"l\x00\x00\x00\x01" + enc(shared.text) + tail)
    bad.append(b"l\x00\x00\x00\x01" + enc(shared.atom) + b"l\x00\x00\x00\x01"
               + enc(shared.text) + b"j")  # fmt: skip
    bad.append(b"l\x00\x00\x00\x00" + enc(shared.text))  # no items: refused

    def run() -> None:
        dec(enc(msg))
        dec(enc(msg, otpy=False), otpy=False)
        dec(bytearray(data))
        for b in bad:
            try:
                dec(b)
            except BadTerm:
                pass
        for u in (unsendable, *unsendable[-4:]):
            try:
                enc(u)
            except NotSendable:
                pass

    return run


def test_no_reference_is_leaked_on_success_or_failure():
    shared = _Shared()
    run = _leak_workload(shared)
    for _ in range(20):  # the caches fill
        run()
    cached_atom = _etf._ATOMS[shared.atom.encode()]
    watched = [shared.atom, shared.text, shared.raw, shared.node, cached_atom]
    gc.collect()
    before = [sys.getrefcount(o) for o in watched]
    for _ in range(500):
        run()
    gc.collect()
    assert [sys.getrefcount(o) for o in watched] == before


def test_no_memory_grows_over_many_calls():
    run = _leak_workload(_Shared())
    tracemalloc.start()
    try:
        for _ in range(100):
            run()
        gc.collect()
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(2000):
            run()
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024, f"{grown} bytes more after 2000 rounds"


# --- registered records: the accelerator encodes them from the registry's current state ----


def test_a_renamed_record_class_is_encoded_under_its_new_name():
    @dataclasses.dataclass(frozen=True)
    class Renamed:
        a: int
        b: str

    register_type(Renamed, name="test.renamed_before")
    before = encode_both(Renamed(1, "x"), True)
    register_type(Renamed, name="test.renamed_after")
    for otpy in BOTH:
        data = encode_both(Renamed(1, "x"), otpy)
        assert data is not None and b"test.renamed_after" in data
        assert decode_both(data, otpy=otpy)[0] == "ok"
    assert before is not None and b"test.renamed_before" in before


@register_type(name="test.Checked")
@dataclasses.dataclass(frozen=True)
class Checked:
    n: int

    def __post_init__(self) -> None:
        if self.n < 0:
            raise ValueError(f"n must be >= 0, got {self.n}")


def test_records_decode_the_same_or_fail_the_same():
    assert _C is not None
    good = _C[0](Checked(1))
    assert decode_both(good)[1][0] == Checked(1)
    bad = _C[0]((Atom("test.Checked"), -1), otpy=False).replace(b"h\x02", b"h\x03w\t$otpy_rec", 1)
    outcome = decode_both(bad)
    assert outcome[1] is BadTerm and "does not build a Checked: n must be >= 0" in outcome[2]
    for items in ((), ("x",), ("a", "b"), (1, 2, 3)):
        data = _C[0]((Atom("$otpy_rec"), Atom("test.Checked"), *items), otpy=False)
        decode_both(data)
        decode_both(_C[0]((Atom("$otpy_rec"), *items), otpy=False))
        decode_both(_C[0]((Atom("$otpy_bytes"), *items), otpy=False))


def test_odd_pids_and_refs_are_handed_to_the_python_encoder_with_the_same_result():
    for term in (
        Pid(Atom("a@h"), 1, 2),
        Pid("a" * 300, 1, 2),
        Pid(5, 1, 2),  # type: ignore[arg-type]
        Pid("a@h", True, 2),  # type: ignore[arg-type]
        Pid("a@h", 1.5, 2),  # type: ignore[arg-type]
        Ref(Atom("a@h"), 2**64),
        Ref("a@h", 2**64 - 1),
        Ref("a@h", 1.5),  # type: ignore[arg-type]
        Ref(7, 1),  # type: ignore[arg-type]
    ):
        for otpy in BOTH:
            encode_both(term, otpy)


def test_setup_says_what_the_namespace_lacks():
    assert _etf_accel is not None
    try:
        with pytest.raises(RuntimeError, match="_RECORD_SPECS is missing"):
            _etf_accel.setup({k: v for k, v in vars(_etf).items() if k != "_RECORD_SPECS"})
        with pytest.raises(RuntimeError, match="setup"):
            _etf_accel.encode(1)
    finally:
        _etf_accel.setup(vars(_etf))
    assert _etf_accel.encode(1) == b"a\x01"


def test_many_atoms_and_pids_decode_right_through_the_caches():
    # More than the accelerator's small caches hold: slots are shared and replaced.
    assert _C is not None
    atoms = [Atom(f"cache_atom_{i}") for i in range(3000)]
    pids = [Pid(f"cache{i % 50}@h", i, i % 3) for i in range(3000)]
    for _ in range(2):
        for atom, pid in zip(atoms, pids, strict=True):
            term, _end = _C[1](_C[0]((atom, pid)))
            assert term == (atom, pid) and term[0].__class__ is Atom and term[1].__class__ is Pid
    latin1 = bytes([115, 1, 0xE9])  # SMALL_ATOM_EXT 'é': the same byte is not UTF-8
    assert decode_both(latin1)[1] == (Atom("é"), 3)
    assert decode_both(bytes([119, 1, 0xE9]))[1] is BadTerm
    assert decode_both(latin1)[1] == (Atom("é"), 3)
    assert decode_both(bytes([119, 4]) + b"true")[1] == (True, 6)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_any_terms, _any_terms, st.sampled_from(BOTH), st.booleans())
def test_a_frame_is_the_same_packet_or_the_same_refusal_in_c_and_python(
    ctrl, payload, otpy, with_payload
):
    args = (otpy, ctrl, payload) if with_payload else (otpy, ctrl)

    def frame(fn: Callable[..., bytes]) -> Any:
        try:
            return fn(*args)
        except Exception as e:  # NotSendable, or what str.encode raises for a surrogate
            return ("refused", type(e), str(e), tuple(getattr(e, "steps", ())))

    c = frame(_etf_accel.encode_frame)
    accelerated = _etf.ACCELERATED
    _etf.ACCELERATED = False  # the Python frame with the Python encode
    try:
        py = frame(_etf._py_encode_frame)
    finally:
        _etf.ACCELERATED = accelerated
    assert c == py
    if c.__class__ is bytes:  # the length, then the terms as encode makes them
        assert int.from_bytes(c[:4], "big") == len(c) - 4 and c[4:6] == b"\x70\x83"
        body = _PY[0](ctrl, otpy=otpy)
        assert c[6 : 6 + len(body)] == body
