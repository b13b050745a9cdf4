"""EPMD: our client against the real ``epmd`` (a child on a private port), our name
server against our client and against real ``erl`` nodes."""

from __future__ import annotations

import socket

import pytest

import otp
from otp import dist
from otp.dist import _epmd, _net_kernel
from tests.dist_wire_helpers import (
    epmd_child,
    erl_child,
    erl_eval,
    free_port,
    needs_erl,
    wait_for,
)

PY = "py@127.0.0.1"


def _client_round_trip(port: int) -> None:
    reg = _epmd.register("n1", 12345, epmd_port=port)
    assert reg.creation != 0
    assert _epmd.port_please("n1", "127.0.0.1", epmd_port=port) == 12345
    assert ("n1", 12345) in _epmd.names(epmd_port=port)
    assert _epmd.port_please("nobody", "127.0.0.1", epmd_port=port) is None
    with pytest.raises(_epmd.EpmdError, match="refused to register 'n1'"):
        _epmd.register("n1", 12346, epmd_port=port)
    reg.close()
    wait_for(lambda: _epmd.port_please("n1", "127.0.0.1", epmd_port=port) is None,
             "the registration to end with its connection")


@needs_erl
def test_client_registers_with_the_real_epmd_and_the_registration_ends_with_its_connection():
    with epmd_child() as port:
        otp.run(_client_round_trip, port, timeout=60)


def test_our_name_server_speaks_the_epmd_protocol_to_our_client():
    def main():
        server = _epmd.NameServer.start("127.0.0.1", 0)
        try:
            _client_round_trip(server.port)
        finally:
            server.stop()

    otp.run(main, timeout=60)


def test_our_name_server_drops_a_garbage_request_and_keeps_serving():
    def main():
        server = _epmd.NameServer.start("127.0.0.1", 0)
        try:
            for junk in (b"\x00\x05\xff\xff", b"\x00\x03x", b"\x00", b"\x00\x02\x78\x01"):
                s = socket.create_connection(("127.0.0.1", server.port))
                s.sendall(junk)
                s.shutdown(socket.SHUT_WR)
                s.settimeout(10)
                while s.recv(100):
                    pass
                s.close()
            _client_round_trip(server.port)
        finally:
            server.stop()

    otp.run(main, timeout=60)


def test_epmd_port_is_the_argument_else_erl_epmd_port_else_4369(monkeypatch):
    monkeypatch.delenv("ERL_EPMD_PORT", raising=False)
    assert _epmd.resolve_port(None) == 4369
    monkeypatch.setenv("ERL_EPMD_PORT", "5555")
    assert _epmd.resolve_port(None) == 5555
    assert _epmd.resolve_port(7) == 7


@needs_erl
def test_without_epmd_the_first_node_serves_names_that_erl_registers_with_and_finds_us_by():
    port = free_port()  # nothing answers there: start() serves the names itself

    def main():
        dist.start(PY, cookie="c", epmd_port=port)
        try:
            started = _net_kernel.STATE.get()
            assert started is not None and started.name_server is not None
            with erl_child("e1@127.0.0.1", "c", port):
                wait_for(lambda: _epmd.port_please("e1", "127.0.0.1", epmd_port=port),
                         "erl to register with our name server")
                theirs = erl_eval("e2@127.0.0.1", "c", port, f"net_adm:ping('{PY}')")
                ours = dist.ping("e1@127.0.0.1")
            return theirs, ours
        finally:
            dist.stop()

    assert otp.run(main, name=PY, timeout=120) == ("pong", "pong")
