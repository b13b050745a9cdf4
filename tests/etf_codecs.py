"""Both implementations of the External Term Format codec, for the codec tests that run
under each: the C accelerator (otp/dist/_etf_accel.c, when it is built) and the Python
reference of otp/dist/_etf.py.

A test module runs all its tests under both with::

    codec = codec_fixture(__name__)   # swaps the module's encode/decode per run

and the term strategies (``_terms``: what otpy nodes send each other) with the records
they use (``Msg``, ``Pair``), defined once here: a test module imported twice would
register them twice.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import pytest
from hypothesis import strategies as st

from otp.dist import _etf
from otp.dist._etf_types import Atom, BitBinary, ImproperList, register_type
from otp.lowlevel import Pid, Ref

try:
    from otp.dist import _etf_accel
except ImportError:  # built without a C compiler
    _etf_accel = None  # type: ignore[assignment]
else:
    _etf_accel.setup(vars(_etf))  # also when OTPY_PURE_ETF=1 kept it out of _etf

NOT_BUILT = "the C accelerator otp.dist._etf_accel is not built (no C compiler at install?)"

Codec = tuple[Callable[..., bytes], Callable[..., tuple[Any, int]]]


def codecs() -> dict[str, Codec | None]:
    """name -> (encode, decode); None for the C one when it is not built."""
    c = (_etf_accel.encode, _etf_accel.decode) if _etf_accel is not None else None
    return {"c": c, "python": (_etf._py_encode, _etf._py_decode)}


def codec_fixture(module_name: str) -> Any:
    """A module-scoped autouse fixture running every test of the module once per
    implementation, with the module's ``encode``/``decode`` bound to it."""

    @pytest.fixture(scope="module", autouse=True, params=["c", "python"])
    def codec(request: pytest.FixtureRequest) -> Iterator[str]:
        pair = codecs()[request.param]
        if pair is None:
            pytest.skip(NOT_BUILT)
        module = sys.modules[module_name]
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(module, "encode", pair[0])
            mp.setattr(module, "decode", pair[1])
            yield request.param

    return codec


# --- registered records and the term strategies ---------------------------------------------


@register_type(name="test.Msg")
@dataclasses.dataclass(frozen=True)
class Msg:
    sender: str
    body: bytes
    n: int = 0


@register_type
class Pair(NamedTuple):
    left: Any
    right: Any


@register_type(name="test.One")
@dataclasses.dataclass(frozen=True)
class One:
    x: Any


@register_type(name="test.Empty")
@dataclasses.dataclass(frozen=True)
class Empty:
    pass


# Atoms that arrive as something else, or head otpy's tagged forms.
RESERVED = ("true", "false", "nil", "$otpy_bytes", "$otpy_rec", "$otpy_exc")
_nodes = st.sampled_from(["a@h", "b@host.example", "nonode@nohost"])
_leaves = st.one_of(
    st.integers(),
    st.integers(min_value=-(2**2100), max_value=2**2100),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.binary(max_size=20),
    st.booleans(),
    st.none(),
    st.text(max_size=10).map(Atom).filter(lambda a: a not in RESERVED),
    st.builds(Pid, _nodes, st.integers(0, 2**40), st.integers(0, 2**32 - 1)),
    st.builds(Ref, _nodes, st.integers(0, 2**96 - 1)),
    st.builds(BitBinary, st.binary(min_size=1, max_size=5), st.integers(1, 7)),
)
_hashable = st.recursive(_leaves, lambda c: st.lists(c, max_size=4).map(tuple), max_leaves=8)


def _improper(terms: list[Any], split: int) -> ImproperList:
    *items, tail = terms
    if tail.__class__ is list:  # a list tail is refused: a tuple instead
        tail = tuple(tail)
    split %= len(items) + 1
    if not split:
        return ImproperList(items, tail)
    # the tail an ImproperList itself (folded into the outer one), with or without items
    # before it
    return ImproperList(items[: split - 1], ImproperList(items[split - 1 :], tail))


def improper_lists(c: st.SearchStrategy[Any]) -> st.SearchStrategy[ImproperList]:
    """``[a, b | T]`` of the terms of ``c``, with every kind of tail: any term (an
    ImproperList among them), a tuple where ``c`` gave a list, an ImproperList again.
    (``c`` is drawn from in one place: a recursive strategy's description grows with
    every mention.)"""
    return st.builds(_improper, st.lists(c, min_size=2, max_size=4), st.integers(0, 3))


_terms = st.recursive(
    _leaves,
    lambda c: st.one_of(
        st.lists(c, max_size=5),
        st.lists(c, max_size=5).map(tuple),
        st.dictionaries(_hashable, c, max_size=4),
        improper_lists(c),
        st.builds(Pair, c, c),
        st.builds(Msg, st.text(max_size=5), st.binary(max_size=5), st.integers()),
    ),
    max_leaves=30,
)
