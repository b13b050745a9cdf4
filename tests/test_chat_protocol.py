"""Unit tests of the wire codec (chat.protocol): framing, size caps, request validation."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from chat.protocol import (
    FrameReader,
    FrameTooLarge,
    ProtocolError,
    decode_body,
    encode,
    is_phone,
    validate_request,
)


def test_frame_is_big_endian_length_then_one_msgpack_map():
    data = encode({"t": "ping", "id": 7})
    body = msgpack.packb({"t": "ping", "id": 7})
    assert data == len(body).to_bytes(4, "big") + body


def test_reader_splits_frames_fed_byte_by_byte():
    data = encode({"t": "ping", "id": 1}) + encode({"t": "bye", "id": 2})
    r = FrameReader()
    bodies = []
    for i in range(len(data)):
        r.feed(data[i : i + 1])
        while (b := r.next_body()) is not None:
            bodies.append(decode_body(b))
    assert bodies == [{"t": "ping", "id": 1}, {"t": "bye", "id": 2}]


def test_oversized_frame_is_refused_from_its_header_before_the_body_arrives():
    r = FrameReader(max_frame=1024)
    r.feed((1025).to_bytes(4, "big"))  # no body bytes at all
    with pytest.raises(FrameTooLarge) as e:
        r.next_body()
    assert e.value.code == "frame_too_large"
    assert "1025" in e.value.message


def test_zero_length_frame_is_refused():
    r = FrameReader()
    r.feed(b"\0\0\0\0")
    with pytest.raises(FrameTooLarge):
        r.next_body()


def test_truncated_frame_waits_for_the_rest():
    data = encode({"t": "ping", "id": 1})
    r = FrameReader()
    r.feed(data[:-1])
    assert r.next_body() is None
    r.feed(data[-1:])
    assert decode_body(r.next_body()) == {"t": "ping", "id": 1}


@pytest.mark.parametrize("body", [
    msgpack.packb([1, 2, 3]), msgpack.packb("ping"), msgpack.packb(5), b"\xc1",
    msgpack.packb({"id": 1}), msgpack.packb({"t": 3, "id": 1}),
    msgpack.packb({1: "x"}), msgpack.packb({"t": "ping"}) + b"\x00",
])
def test_bad_bodies_are_bad_frame_errors(body):
    with pytest.raises(ProtocolError) as e:
        decode_body(body)
    assert e.value.code == "bad_frame"


def test_huge_declared_containers_are_refused():
    body = b"\xdd\xff\xff\xff\xff"  # array32 of 4 billion items, in 5 bytes
    with pytest.raises(ProtocolError):
        decode_body(body)


def test_unknown_request_type_keeps_the_id():
    with pytest.raises(ProtocolError) as e:
        validate_request({"t": "launch", "id": 9})
    assert (e.value.code, e.value.id) == ("unknown_type", 9)


@pytest.mark.parametrize("msg, needle", [
    ({"t": "send", "id": 1, "to": 5, "cmid": "c", "body": "x"}, "'to': expected str, got int"),
    ({"t": "send", "id": 1, "cmid": "c", "body": "x"}, "'to' is missing"),
    ({"t": "ack", "id": 1, "ids": ["a"]}, "'ids': expected [int]"),
    ({"t": "ack", "id": 1, "ids": [True]}, "'ids'"),
    ({"t": "privacy", "id": 1, "hide_presence": 1}, "expected bool, got int"),
    ({"t": "login", "id": 1, "phone": "+1", "key": "text"}, "'key': expected bin, got str"),
])
def test_wrong_field_types_name_the_field_expected_and_got(msg, needle):
    with pytest.raises(ProtocolError) as e:
        validate_request(msg)
    assert e.value.code == "bad_request"
    assert e.value.id == 1
    assert needle in e.value.message


@pytest.mark.parametrize("rid", [None, "1", -1, 2**63, 1.5])
def test_request_id_must_be_a_non_negative_int(rid):
    with pytest.raises(ProtocolError) as e:
        validate_request({"t": "ping", "id": rid})
    assert e.value.code == "bad_request" and e.value.id is None


def test_valid_request_gives_its_fields():
    req = validate_request({"t": "send", "id": 3, "to": "+14155550100", "cmid": "c1",
                            "body": b"\x00"})
    assert (req.type, req.id, req.fields["body"]) == ("send", 3, b"\x00")


@pytest.mark.parametrize("phone, ok", [
    ("+14155550100", True), ("+4930123456", True), ("14155550100", False),
    ("+04155550100", False), ("+1", False), ("+1234567890123456", False), (123, False),
])
def test_phone_numbers_are_e164(phone, ok):
    assert is_phone(phone) is ok


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise_anything_but_protocol_errors(data):
    r = FrameReader(max_frame=64)
    r.feed(data)
    try:
        while (b := r.next_body()) is not None:
            try:
                validate_request(decode_body(b))
            except ProtocolError:
                pass
    except FrameTooLarge:
        pass
