"""The codec against a real Erlang: what we encode with the BEAM mapping is byte for
byte what ``term_to_binary`` writes, and what BEAM writes decodes and re-encodes to the
same bytes.

One ``erl`` per module, used like a port program: it reads 4-byte-length-prefixed
requests on stdin and answers each the same way. A request is ``0`` + a term
(answer: ``0`` + ``term_to_binary(binary_to_term(Term), [{minor_version, 2}])``, or
``1`` + the error) or ``1`` + an Erlang expression (answer: ``0`` + its value as a term).
"""

from __future__ import annotations

import dataclasses
import shutil
import struct
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otp.dist import Atom, BitBinary, Fun, ImproperList, Port, register_type
from otp.dist._etf import decode, encode
from otp.lowlevel import Pid, Ref
from tests.etf_codecs import codec_fixture

# Every test runs under the C accelerator and the Python codec.
codec = codec_fixture(__name__)

pytestmark = pytest.mark.skipif(
    shutil.which("erl") is None, reason="no erl on PATH: install erlang-base to run these"
)

ECHO = r"""
P = open_port({fd, 0, 1}, [{packet, 4}, binary]),
Reply = fun(Bin) -> P ! {self(), {command, Bin}} end,
Eval = fun(Text) ->
    {ok, Tokens, _} = erl_scan:string(unicode:characters_to_list(Text)),
    {ok, Exprs} = erl_parse:parse_exprs(Tokens),
    {value, V, _} = erl_eval:exprs(Exprs, erl_eval:new_bindings()),
    V
end,
Loop = fun Loop() ->
    receive
        {P, {data, <<Kind, Data/binary>>}} ->
            R = try
                T = case Kind of 0 -> binary_to_term(Data); 1 -> Eval(Data) end,
                <<0, (term_to_binary(T, [{minor_version, 2}]))/binary>>
            catch C:E -> <<1, (term_to_binary({C, E}))/binary>>
            end,
            Reply(R),
            Loop();
        {'EXIT', P, _} -> halt();
        {P, closed} -> halt()
    end
end,
process_flag(trap_exit, true),
Loop().
"""


class Erl:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            ["erl", "-noshell", "-noinput", "-eval", ECHO],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )

    def _ask(self, request: bytes) -> tuple[bool, bytes]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(struct.pack(">I", len(request)) + request)
        self.proc.stdin.flush()
        header = self.proc.stdout.read(4)
        assert len(header) == 4, "erl closed its output"
        reply = self.proc.stdout.read(struct.unpack(">I", header)[0])
        return reply[0] == 0, reply[1:]

    def echo(self, ext: bytes) -> bytes:
        """term_to_binary(binary_to_term(ext)) (with the 131 version byte)."""
        ok, reply = self._ask(b"\x00" + ext)
        assert ok, f"erl refused {ext.hex()}: {decode(reply, 1, otpy=False)[0]!r}"
        return reply

    def eval(self, expr: str) -> bytes:
        ok, reply = self._ask(b"\x01" + expr.encode())
        assert ok, f"erl could not evaluate {expr!r}: {decode(reply, 1, otpy=False)[0]!r}"
        return reply

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def erl() -> Iterator[Erl]:
    e = Erl()
    try:
        yield e
    finally:
        e.close()


def ext(term: Any) -> bytes:
    return b"\x83" + encode(term, otpy=False)


# --- BEAM-mappable terms ------------------------------------------------------------------

# Not erl's own name (nonode@nohost): it checks its own pids and refs are ones it made.
_nodes = st.sampled_from(["a@h", "b@host.example", "é@h"])
_atoms = st.text(max_size=12).filter(lambda s: s not in ("true", "false", "nil")).map(Atom)
_key_leaves = st.one_of(st.integers(), _atoms, st.binary(max_size=8), st.booleans(), st.none())
_keys = st.one_of(_key_leaves, st.lists(_key_leaves, max_size=3).map(tuple))
_leaves = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=-(2**2100), max_value=2**2100),
    st.floats(allow_nan=False, allow_infinity=False),
    _atoms,
    st.binary(max_size=20),
    st.booleans(),
    st.none(),
    st.builds(BitBinary, st.binary(min_size=1, max_size=5), st.integers(1, 7)),
    st.builds(Pid, _nodes, st.integers(0, 2**28 - 1), st.integers(1, 2**32 - 1)),
    st.builds(Ref, _nodes, st.integers(0, 2**82 - 1)),
)
_terms = st.recursive(
    _leaves,
    lambda c: st.one_of(
        st.lists(c, max_size=5),
        st.lists(st.integers(0, 255), max_size=5),  # STRING_EXT
        st.lists(c, max_size=5).map(tuple),
        st.dictionaries(_keys, c, max_size=6),
        st.builds(ImproperList, st.lists(c, min_size=1, max_size=3), _key_leaves),
    ),
    max_leaves=25,
)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(_terms)
def test_beam_encoding_is_byte_identical_to_term_to_binary(erl, term):
    ours = ext(term)
    assert erl.echo(ours) == ours
    assert decode(ours, 1, otpy=False)[0] == term


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.dictionaries(_keys, st.integers(), min_size=2, max_size=32))
def test_beam_small_map_keys_are_in_term_order(erl, term):
    assert erl.echo(ext(term)) == ext(term)


@register_type(name="test_erl.Note")
@dataclasses.dataclass(frozen=True)
class Note:
    text: str
    raw: bytes


def test_otpy_encoding_passes_through_an_erlang_relay_unchanged(erl):
    term = ("text", b"\x00raw", Note("a", b"b"), (1, ValueError("x")), {"k": [1.5]})
    data = b"\x83" + encode(term)
    assert erl.echo(data) == data
    assert repr(decode(data, 1)[0]) == repr(term)


@pytest.mark.parametrize(
    "expr, check",
    [
        ("self().", lambda t: t.__class__ is Pid and t.node == "nonode@nohost"),
        ("make_ref().", lambda t: t.__class__ is Ref),
        ("hd(erlang:ports()).", lambda t: t.__class__ is Port),
        ("fun lists:map/2.", lambda t: t.__class__ is Fun),
        ("fun(X) -> X + 1 end.", lambda t: t.__class__ is Fun),
        ("<<1:3>>.", lambda t: t == BitBinary(b"\x20", 3)),
        ("'é'.", lambda t: t == Atom("é") and len(t) == 1),
        ('"abc".', lambda t: t == [97, 98, 99]),
        ("[1, 2 | 3].", lambda t: t == ImproperList([1, 2], 3)),
        ('#{a => 1, <<"b">> => [x]}.', lambda t: t == {Atom("a"): 1, b"b": [Atom("x")]}),
        ("{true, false, nil, undefined}.", lambda t: t == (True, False, None, "undefined")),
        ("-(1 bsl 3000).", lambda t: t == -(2**3000)),
        ("maps:from_list([{N, N} || N <- lists:seq(1, 40)]).", lambda t: len(t) == 40),
        ("list_to_tuple(lists:seq(1, 300)).", lambda t: t == tuple(range(1, 301))),
    ],
)
def test_terms_written_by_beam_decode_and_reencode_to_the_same_bytes(erl, expr, check):
    data = erl.eval(expr)
    term, end = decode(data, 1, otpy=False)
    assert end == len(data) and check(term)
    if not isinstance(term, dict) or len(term) <= 32:  # big maps: BEAM's hash order
        assert ext(term) == data
