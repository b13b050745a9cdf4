"""The version 6 handshake: both roles, the digest check, the status a node answers
(simultaneous connects, missing capabilities), and a bounded fuzz of what a peer may
send: every malformed handshake closes that socket only."""

from __future__ import annotations

import random
import secrets
import socket
import struct

import pytest

import otp
from otp import dist
from otp.dist import _handshake as hs
from otp.dist import _net_kernel
from otp.dist._conn import Connection
from otp.dist._cookie import digest
from otp.process import spawn_link
from tests.dist_wire_helpers import free_port

ME = "m@127.0.0.1"


def _start() -> int:
    """Start this node's distribution (its own name server on a private port); returns
    the port it listens on."""
    dist.start(ME, cookie="sesame", epmd_port=free_port())
    return _net_kernel.state().port


def _dial(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    return s


def _drain_until_closed(s: socket.socket) -> None:
    s.settimeout(10)
    try:
        while s.recv(4096):
            pass
    finally:
        s.close()


def _initiate(
    port: int, name: str, cookie: str, flags: int = hs.FLAGS
) -> tuple[str, socket.socket]:
    s = _dial(port)
    hs.send_name(s, name, flags, 7)
    status = hs.recv_status(s)
    if status in ("ok", "ok_simultaneous"):
        ch = hs.recv_challenge(s)
        assert ch.name == ME and ch.flags & hs.DFLAG_OTPY
        mine = secrets.randbits(32)
        hs.send_challenge_reply(s, mine, ch.challenge, cookie)
        hs.recv_challenge_ack(s, mine, cookie, ME)
    return status, s


def test_digest_is_md5_of_the_cookie_then_the_challenge_in_decimal():
    assert digest(1234, "secret").hex() == "bdfc2db0aa599f5919e565c328216a51"


def test_both_roles_complete_the_handshake_with_a_shared_cookie():
    def acceptor(sock: socket.socket) -> None:
        pn = hs.recv_name(sock)
        assert (pn.name, pn.creation) == ("a@127.0.0.1", 42)
        hs.send_status(sock, "ok")
        ch = hs.send_challenge(sock, "b@127.0.0.1", hs.FLAGS, 43)
        theirs = hs.recv_challenge_reply(sock, ch, "c", "a@127.0.0.1")
        hs.send_challenge_ack(sock, theirs, "c")

    def main():
        a, b = socket.socketpair()
        spawn_link(acceptor, b)
        hs.send_name(a, "a@127.0.0.1", hs.FLAGS, 42)
        assert hs.recv_status(a) == "ok"
        ch = hs.recv_challenge(a)
        assert (ch.name, ch.creation, ch.flags) == ("b@127.0.0.1", 43, hs.FLAGS)
        mine = secrets.randbits(32)
        hs.send_challenge_reply(a, mine, ch.challenge, "c")
        hs.recv_challenge_ack(a, mine, "c", "b@127.0.0.1")
        a.close()

    otp.run(main, timeout=30)


def test_the_mandatory_flags_of_otp_25_and_26_are_offered_and_no_atom_cache():
    for flag in (hs.MANDATORY_25, hs.MANDATORY_26, hs.DFLAG_DIST_MONITOR,
                 hs.DFLAG_DIST_MONITOR_NAME, hs.DFLAG_ALIAS):
        assert hs.FLAGS & flag == flag
    for absent in (hs.DFLAG_DIST_HDR_ATOM_CACHE, hs.DFLAG_FRAGMENTS, hs.DFLAG_PUBLISHED):
        assert not hs.FLAGS & absent


def test_a_wrong_cookie_is_refused_without_a_hint_and_logged(caplog):
    def main():
        port = _start()
        try:
            s = _dial(port)
            hs.send_name(s, "x@127.0.0.1", hs.FLAGS, 1)
            assert hs.recv_status(s) == "ok"
            ch = hs.recv_challenge(s)
            hs.send_challenge_reply(s, 99, ch.challenge, "not-the-cookie")
            with pytest.raises(hs.HandshakeError, match="closed the connection"):
                hs.recv_challenge_ack(s, 99, "not-the-cookie", ME)
            s.close()
            status, s = _initiate(port, "y@127.0.0.1", "sesame")  # the right one works
            assert status == "ok"
            s.close()
        finally:
            dist.stop()

    otp.run(main, name=ME, timeout=30)
    assert "refused: wrong cookie" in caplog.text


def test_a_peer_without_the_required_capabilities_is_not_allowed():
    def main():
        port = _start()
        try:
            s = _dial(port)
            hs.send_name(s, "old@127.0.0.1", hs.DFLAG_EXTENDED_REFERENCES, 1)
            got = hs.recv_status(s)
            _drain_until_closed(s)
            return got
        finally:
            dist.stop()

    assert otp.run(main, name=ME, timeout=30) == "not_allowed"


@pytest.mark.parametrize("peer, status", [("z@127.0.0.1", "ok_simultaneous"),
                                          ("a@127.0.0.1", "nok")])
def test_simultaneous_connect_the_attempt_of_the_greater_name_wins(peer, status):
    def main():
        port = _start()
        try:
            st = _net_kernel.state()
            pending = Connection(st, peer)  # our own attempt to peer, in progress
            st.conns[peer] = pending
            got, s = _initiate(port, peer, "sesame")
            if status == "ok_simultaneous":  # the accepted connect took over ours
                assert st.conns.get(peer) is pending and pending.proc is not None
            s.close()
            return got
        finally:
            dist.stop()

    assert otp.run(main, name=ME, timeout=30) == status


def test_a_connect_from_a_peer_still_connected_is_asked_alive_and_true_replaces_it():
    def main():
        port = _start()
        try:
            st = _net_kernel.state()
            status, first = _initiate(port, "p@127.0.0.1", "sesame")
            assert status == "ok"
            old = st.conns["p@127.0.0.1"]
            # "false": the newcomer gives up, the old connection stays
            s = _dial(port)
            hs.send_name(s, "p@127.0.0.1", hs.FLAGS, 8)
            assert hs.recv_status(s) == "alive"
            hs.send_status(s, "false")
            _drain_until_closed(s)
            assert st.conns["p@127.0.0.1"] is old and old.up
            # "true": the old connection is replaced by the new one
            s = _dial(port)
            hs.send_name(s, "p@127.0.0.1", hs.FLAGS, 9)
            assert hs.recv_status(s) == "alive"
            hs.send_status(s, "true")
            ch = hs.recv_challenge(s)
            hs.send_challenge_reply(s, 5, ch.challenge, "sesame")
            hs.recv_challenge_ack(s, 5, "sesame", ME)
            _drain_until_closed(first)  # the node closed the old one
            assert old.closed and st.conns["p@127.0.0.1"] is not old
            s.close()
            return True
        finally:
            dist.stop()

    assert otp.run(main, name=ME, timeout=30) is True


def _fuzz_cases(rng: random.Random) -> list[bytes]:
    raw = b"f@127.0.0.1"
    body = b"N" + struct.pack(">QIH", hs.FLAGS, 1, len(raw)) + raw
    good = struct.pack(">H", len(body)) + body
    cases: list[bytes] = [b"", b"\x00", b"\x00\x00", b"\xff\xff" + b"x" * 10]
    for _ in range(60):  # random bytes
        cases.append(rng.randbytes(rng.randrange(1, 80)))
    for _ in range(50):  # truncations of a valid send_name
        cases.append(good[: rng.randrange(1, len(good))])
    for _ in range(50):  # a valid frame with a random body, or a flipped byte
        body = rng.randbytes(rng.randrange(1, 40))
        cases.append(struct.pack(">H", len(body)) + body)
        flipped = bytearray(good)
        i = rng.randrange(len(flipped))
        flipped[i] ^= 1 << rng.randrange(8)
        cases.append(bytes(flipped))
    cases.append(good + b"\x00\x15r" + rng.randbytes(20))  # a reply to a challenge unseen
    return cases


def test_fuzzed_handshakes_close_only_their_socket_and_the_node_still_accepts_a_peer():
    rng = random.Random(20261207)
    cases = _fuzz_cases(rng)
    assert len(cases) >= 200

    def main():
        port = _start()
        try:
            for case in cases:
                s = _dial(port)
                try:
                    s.sendall(case)
                    s.shutdown(socket.SHUT_WR)
                except OSError:
                    pass  # the node closed it already
                _drain_until_closed(s)
            assert dist.nodes() == []
            status, s = _initiate(port, "after@127.0.0.1", "sesame")
            s.close()
            return status
        finally:
            dist.stop()

    assert otp.run(main, name=ME, timeout=120) == "ok"
