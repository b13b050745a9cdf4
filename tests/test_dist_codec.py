"""The External Term Format codec (otp.dist._etf), both implementations (the C
accelerator and the Python reference): every tag both ways, the otpy and the
BEAM mappings of docs/distribution.md ("Value mapping"), refusals at encode naming the
place in the term, and malformed input failing with BadTerm only."""

from __future__ import annotations

import dataclasses
import math
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import otp.errors
from otp.dist._etf import decode, decode_reason, encode, encode_reason, set_creation
from otp.dist._etf_types import (
    Atom,
    BadTerm,
    BitBinary,
    ForeignException,
    Fun,
    ImproperList,
    NotSendable,
    Port,
    UnknownType,
    register_type,
)
from otp.lowlevel import Down, Pid, Ref
from tests.etf_codecs import Msg, Pair, _terms, codec_fixture

# Every test runs under the C accelerator and the Python codec.
codec = codec_fixture(__name__)


def roundtrip(value: Any, *, otpy: bool = True) -> Any:
    data = encode(value, otpy=otpy)
    term, end = decode(data, otpy=otpy)
    assert end == len(data)
    return term


def same(a: Any, b: Any) -> bool:
    """Equal and of the same types all the way down."""
    if a.__class__ is not b.__class__:
        return False
    if isinstance(a, tuple | list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return len(a) == len(b) and all(
            any(same(k, k2) for k2 in b) and same(v, b[k]) for k, v in a.items()
        )
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, float):
        return struct.pack(">d", a) == struct.pack(">d", b)  # -0.0 stays -0.0
    if isinstance(a, ImproperList):
        return same(a.items, b.items) and same(a.tail, b.tail)
    return bool(a == b)


# --- integers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, wire",
    [
        (0, "6100"),
        (255, "61ff"),
        (256, "6200000100"),
        (-1, "62ffffffff"),
        (2**31 - 1, "627fffffff"),
        (-(2**31), "6280000000"),
        (2**31, "6e040000000080"),
        (-(2**31) - 1, "6e040101000080"),
        (2**64, "6e09000000000000000000" + "01"),
    ],
)
def test_integer_uses_the_smallest_tag_term_to_binary_uses(value, wire):
    assert encode(value).hex() == wire
    assert roundtrip(value) == value


def test_integer_of_more_than_255_bytes_is_large_big():
    value = -(2**3000) + 12345
    data = encode(value)
    assert data[0] == 111 and data[5] == 1  # LARGE_BIG_EXT, negative
    assert roundtrip(value) == value


# --- floats -----------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0.0, -0.0, 1.5, -1e300, 5e-324, math.pi])
def test_float_round_trips_bit_for_bit_as_new_float_ext(value):
    data = encode(value)
    assert data[0] == 70 and len(data) == 9
    assert same(roundtrip(value), value)


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_float_infinity_and_nan_are_refused_because_etf_has_none(value):
    with pytest.raises(NotSendable, match="no infinity or NaN"):
        encode((1, value))


def test_legacy_float_ext_decodes():
    text = b"1.50000000000000000000e+00".ljust(31, b"\x00")
    assert decode(bytes([99]) + text) == (1.5, 32)


# --- atoms ------------------------------------------------------------------------------


def test_atom_is_small_atom_utf8_and_a_str():
    assert encode(Atom("ok")).hex() == "77026f6b"
    term = roundtrip(Atom("ok"))
    assert term.__class__ is Atom and term == "ok"


def test_atom_with_non_latin1_characters_counts_characters_not_bytes():
    term = roundtrip(Atom("é" * 255))
    assert term == "é" * 255 and term.__class__ is Atom
    assert encode(Atom("é" * 255))[0] == 118  # 510 bytes: ATOM_UTF8_EXT


def test_atom_longer_than_255_characters_is_refused():
    with pytest.raises(NotSendable, match="at most 255 characters"):
        encode(Atom("a" * 256))


def test_latin1_atom_forms_decode_to_one_character_per_byte():
    assert decode(bytes([115, 1, 0xE9])) == (Atom("é"), 3)  # SMALL_ATOM_EXT
    assert decode(bytes([100, 0, 2, 0x6F, 0x6B])) == (Atom("ok"), 5)  # ATOM_EXT


def test_true_false_nil_atoms_are_python_bools_and_none():
    assert encode(True) == encode(Atom("true"))
    for value in (True, False, None):
        assert roundtrip(value) is value
        assert roundtrip(value, otpy=False) is value
    assert roundtrip(Atom("undefined"), otpy=False) == Atom("undefined")


# --- strings and binaries ----------------------------------------------------------------


def test_str_is_a_binary_and_stays_str_between_otpy_nodes():
    assert encode("hé").hex() == "6d00000003" + "68c3a9"
    assert roundtrip("hé") == "hé" and roundtrip("").__class__ is str


def test_bytes_stay_bytes_between_otpy_nodes_as_a_tagged_binary():
    assert same(roundtrip(b"\xff\x00"), b"\xff\x00")
    assert same(roundtrip(b"valid utf-8"), b"valid utf-8")


def test_beam_mapping_sends_str_and_bytes_as_binaries_and_receives_bytes():
    assert encode("hi", otpy=False) == encode(b"hi", otpy=False) == bytes.fromhex("6d000000026869")
    assert same(roundtrip("hi", otpy=False), b"hi")


def test_invalid_utf8_binary_from_beam_decodes_to_bytes_in_otpy_mode():
    assert decode(bytes.fromhex("6d00000001ff")) == (b"\xff", 6)


def test_bit_binary_round_trips():
    value = BitBinary(b"\xab\xc0", 3)
    data = encode(value)
    assert data.hex() == "4d0000000203abc0"
    assert roundtrip(value) == value


def test_string_ext_decodes_to_a_list_of_ints_and_byte_lists_encode_as_it():
    assert decode(bytes.fromhex("6b0003010203")) == ([1, 2, 3], 6)
    assert encode([1, 2, 255]).hex() == "6b000301 02ff".replace(" ", "")
    assert encode([1, True])[0] == 108  # a bool is an atom: a LIST_EXT
    assert same(roundtrip([1, 2, 3]), [1, 2, 3])


# --- tuples, lists, maps ---------------------------------------------------------------


def test_tuple_up_to_255_is_small_tuple_above_is_large_tuple():
    assert encode(()).hex() == "6800"
    assert encode(tuple(range(255)))[:2] == bytes([104, 255])
    big = tuple(range(256))
    assert encode(big)[:5] == bytes([105, 0, 0, 1, 0])
    assert roundtrip(big) == big


def test_list_is_list_ext_and_empty_list_is_nil():
    assert encode([]).hex() == "6a"
    assert encode(["a"]).hex() == "6c00000001" + "6d0000000161" + "6a"
    long = list(range(1000))
    assert roundtrip(long) == long
    assert same(roundtrip([[], [Atom("a")]]), [[], [Atom("a")]])


def test_improper_list_round_trips_like_an_alias_call_tag():
    tag = ImproperList([Atom("alias")], Ref("a@h", 7))
    data = encode(tag)
    assert data[:5] == bytes([108, 0, 0, 0, 1]) and data[-1] != 106
    assert roundtrip(tag) == tag


def test_improper_list_refuses_a_list_tail_and_no_items():
    with pytest.raises(otp.errors.BadArg):
        ImproperList([1], [2])
    with pytest.raises(otp.errors.BadArg):
        ImproperList([], 1)


def test_non_canonical_list_tail_decodes_to_a_proper_list():
    # [1 | [2]] written as two LIST_EXTs
    data = bytes.fromhex("6c0000000161016c0000000161026a")
    assert decode(data) == ([1, 2], len(data))


def test_map_round_trips_with_any_hashable_keys():
    value = {"a": 1, 2: [3], (Atom("k"), 1): {"x": None}}
    assert same(roundtrip(value), value)


def test_beam_map_keys_are_written_in_term_order():
    value = {Atom("b"): 1, 5: 2, Atom("a"): 3, b"z": 4}
    data = encode(value, otpy=False)
    keys = list(decode(data, otpy=False)[0])
    assert keys == [5, Atom("a"), Atom("b"), b"z"]


def test_map_with_a_list_key_from_beam_is_a_bad_term():
    data = bytes.fromhex("74000000016b0001016101")
    with pytest.raises(BadTerm, match="unhashable list"):
        decode(data)


# --- pids, refs, ports, funs -----------------------------------------------------------


def test_pid_is_new_pid_ext_with_its_node_id_and_creation():
    pid = Pid("a@h", 42, 7)
    data = encode(pid)
    assert data.hex() == "58" + "7703614068" + "0000002a" + "00000000" + "00000007"
    assert same(roundtrip(pid), pid) and roundtrip(pid, otpy=False) == pid


def test_pid_serial_carries_the_high_bits_of_an_id():
    pid = Pid("a@h", (5 << 32) | 9, 1)
    assert roundtrip(pid) == pid


def test_legacy_pid_ext_decodes():
    data = bytes.fromhex("6777036140680000002a0000000003")
    assert decode(data) == (Pid("a@h", 42, 3), len(data))


def test_local_ref_round_trips_to_the_same_ref_with_the_nodes_creation():
    set_creation("me@h", 77)
    ref = Ref("me@h", 123456)
    data = encode(ref)
    assert data[:3] == bytes([90, 0, 3])  # NEWER_REFERENCE_EXT, 3 words
    assert data[9:13] == (77).to_bytes(4, "big")
    assert roundtrip(ref) == ref


def test_foreign_ref_reencodes_to_the_same_bytes():
    words = (0x3FFFF, 0xDEADBEEF, 0x12345678, 0x1, 0x2)
    data = bytes([90, 0, 5]) + encode(Atom("x@h")) + (9).to_bytes(4, "big")
    data += b"".join(w.to_bytes(4, "big") for w in words)
    ref, _ = decode(data)
    assert ref.node == "x@h" and encode(ref) == data
    old = bytes([114, 0, 1]) + encode(Atom("x@h")) + bytes([2]) + (5).to_bytes(4, "big")
    for legacy in (old, bytes([101]) + old[3:]):  # NEW_REFERENCE_EXT, REFERENCE_EXT
        ref, end = decode(legacy)
        assert ref.__class__ is Ref and ref.node == "x@h" and end == len(legacy)


def test_ports_decode_to_opaque_values_that_reencode_identically():
    for data in (
        bytes([89]) + encode(Atom("x@h")) + (5).to_bytes(4, "big") + (3).to_bytes(4, "big"),
        bytes([120]) + encode(Atom("x@h")) + (5 << 40).to_bytes(8, "big") + bytes(4),
        bytes([102]) + encode(Atom("x@h")) + (5).to_bytes(4, "big") + bytes([1]),
    ):
        port, end = decode(data)
        assert isinstance(port, Port) and port.node == "x@h" and end == len(data)
        assert encode(port) == data


def test_funs_decode_to_opaque_values_that_reencode_identically():
    export = bytes([113]) + encode(Atom("lists")) + encode(Atom("map")) + bytes([97, 2])
    fun, _ = decode(export)
    assert isinstance(fun, Fun) and encode((fun,)) == bytes([104, 1]) + export
    closure = bytes([112]) + (9).to_bytes(4, "big") + b"\x01\x02\x03\x04\x05"
    assert encode(decode(closure)[0]) == closure


# --- registered records -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Unregistered:
    x: int


def test_registered_dataclass_is_a_tagged_record_tuple_between_otpy_nodes():
    value = Msg("ann", b"\x00", 3)
    data = encode(value)
    assert data[:2] == bytes([104, 5])
    head, pos = decode(data, 2)
    assert head == Atom("$otpy_rec") and decode(data, pos)[0] == Atom("test.Msg")
    assert roundtrip(value) == value and roundtrip(Pair(1, value)) == Pair(1, value)
    assert roundtrip(Pair(1, 2)).__class__ is Pair


def test_record_of_an_unregistered_name_is_an_unknown_type_error():
    data = encode((Atom("$otpy_rec"), Atom("nowhere.Thing"), 1), otpy=False)
    with pytest.raises(UnknownType, match=r"nowhere\.Thing.*register_type"):
        decode(data)


def test_record_with_the_wrong_field_count_is_a_bad_term():
    data = encode((Atom("$otpy_rec"), Atom("test.Msg"), "a"), otpy=False)
    with pytest.raises(BadTerm, match="has 3 fields, got 1"):
        decode(data)


@pytest.mark.parametrize("tag", ["$otpy_bytes", "$otpy_rec", "$otpy_exc"])
def test_tuple_headed_by_a_reserved_atom_is_refused_between_otpy_nodes(tag):
    with pytest.raises(NotSendable, match="reserved"):
        encode([(Atom(tag), "x")])


def test_tuple_headed_by_a_registered_name_stays_a_tuple():
    value = (Atom("test.Msg"), "a", b"b", 1)
    assert same(roundtrip(value), value)


def test_registered_dataclass_is_an_elixir_struct_map_with_beam():
    term = decode(encode(Msg("a", b"b"), otpy=False), otpy=True)[0]
    assert term == {"__struct__": Atom("test.Msg"), "sender": "a", "body": "b", "n": 0}
    assert roundtrip(Msg("a", b"b"), otpy=False) == Msg("a", b"b")


def test_kernel_records_cross():
    down = Down(Ref("a@h", 1), Pid("a@h", 2, 0), "normal")
    assert roundtrip(down) == down and roundtrip(down).__class__ is Down


def test_register_type_refuses_mutable_dataclasses_and_plain_classes():
    @dataclasses.dataclass
    class Mutable:
        x: int

    with pytest.raises(otp.errors.BadArg, match="frozen"):
        register_type(Mutable)
    with pytest.raises(otp.errors.BadArg, match="frozen dataclass, a NamedTuple"):
        register_type(object)


# --- refusals -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, path, words",
    [
        ((1, [2, lambda: 3]), r"message\[1\]\[1\]", "function"),
        ({"k": (Unregistered(1),)}, r"message\['k'\]\[0\]", "register_type"),
        (Msg("a", {1, 2}), r"message.body", "a tuple or list"),  # type: ignore[arg-type]
        ((bytearray(b"x"),), r"message\[0\]", "send bytes"),
        (ImproperList([1], object()), r"message.tail", "no wire form"),
        ({object(): 1}, r"message key", "no wire form"),
    ],
)
def test_unsendable_value_is_refused_naming_its_place_in_the_term(value, path, words):
    with pytest.raises(NotSendable, match=path) as info:
        encode(value)
    assert words in str(info.value)


def test_socket_is_refused():
    import socket

    with socket.socket() as s, pytest.raises(NotSendable, match="no wire form"):
        encode(("sock", s))


# --- exceptions and exit reasons ----------------------------------------------------------


def test_otp_error_as_reason_is_rebuilt_with_its_class_args_and_attributes():
    exc = otp.errors.CallError("timeout", server=Pid("a@h", 1, 0), request=("get", 1))
    back = roundtrip(("EXIT", exc))[1]
    assert back.__class__ is otp.errors.CallError
    assert back.args == exc.args and back.reason == "timeout" and back.request == ("get", 1)


def test_builtin_exception_is_rebuilt_and_unsendable_args_become_reprs():
    back = roundtrip(ValueError("bad", object))
    assert back.__class__ is ValueError and back.args == ("bad", repr(object))


def test_unknown_exception_class_arrives_as_foreign_exception_and_relays_unchanged():
    class Local(Exception):
        pass

    data = encode(Local("x"))
    back = decode(data)[0]
    assert isinstance(back, ForeignException) and back.type_name.endswith("Local")
    assert back.args == ("x",) and encode(back) == data


def test_exception_to_beam_is_an_elixir_exception_struct():
    term = decode(encode(KeyError("k"), otpy=False), otpy=False)[0]
    assert isinstance(term, ForeignException) and term.type_name == "builtins.KeyError"


def test_exit_reason_words_are_atoms_for_beam_and_strs_back():
    assert encode_reason("normal", otpy=False).__class__ is Atom
    assert encode_reason(("shutdown", 1), otpy=False)[0].__class__ is Atom
    assert encode_reason("normal") == "normal"
    for word in ("normal", "kill", "killed", "noproc", "noconnection", "shutdown"):
        back = decode_reason(decode(encode(encode_reason(word, otpy=False)))[0])
        assert back.__class__ is str and back == word
    assert decode_reason(Atom("other")).__class__ is Atom


# --- malformed input ----------------------------------------------------------------------


SAMPLE = encode((Atom("ok"), "body", [1, 2000], {"k": 2**80}, Pid("a@h", 1, 2), 1.5))


@pytest.mark.parametrize("cut", range(len(SAMPLE)))
def test_truncated_term_is_a_bad_term(cut):
    with pytest.raises(BadTerm):
        decode(SAMPLE[:cut])


@pytest.mark.parametrize(
    "data, words",
    [
        (bytes([200]), "unknown or unsupported ETF tag 200"),
        (bytes([82, 1]), "unknown or unsupported ETF tag 82"),  # atom cache ref: header only
        (bytes.fromhex("6dffffffff00"), "truncated"),
        (bytes.fromhex("6cffffffff6a"), "longer than"),
        (bytes.fromhex("69ffffffff"), "longer than"),
        (bytes.fromhex("74ffffffff"), "longer than"),
        (bytes.fromhex("6fffffffff00"), "truncated"),
        (bytes.fromhex("6e0102ff"), "sign byte"),
        (bytes.fromhex("7702ffff"), "not valid UTF-8"),
        (bytes.fromhex("5a000077016100000000"), "1..5 words"),
        (bytes.fromhex("586101000000000000000000000000"), "node name"),
        (bytes.fromhex("4d000000010900"), "1..8 bits"),
    ],
)
def test_malformed_term_is_a_bad_term_saying_what_is_wrong(data, words):
    with pytest.raises(BadTerm, match=words):
        decode(data)


def test_deep_nesting_is_a_bad_term_not_a_crash():
    data = bytes([104, 1]) * 100_000 + bytes([106])
    with pytest.raises(BadTerm, match="nested too deep"):
        decode(data)


def test_decode_accepts_memoryview_and_offset():
    data = b"\x00\x00" + encode("x")
    assert decode(memoryview(data), 2) == ("x", len(data))


# --- property: otpy <-> otpy is lossless -------------------------------------------------

# The term strategies are in tests/etf_codecs.py (shared with test_dist_codec_accel).


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_terms)
def test_otpy_to_otpy_is_lossless(term):
    assert same(roundtrip(term), term)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_decode_or_fail_with_bad_term_only(data):
    try:
        decode(data)
    except BadTerm:
        pass
