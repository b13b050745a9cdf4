"""An otpy node and real ``erl`` nodes ping each other (``net_adm:ping``): the
handshake, the cookie check and the ``net_kernel`` call, end to end.

Each test runs its own ``epmd`` on a private port and its ``erl`` nodes as children;
they are skipped, with the reason, when Erlang is not installed."""

from __future__ import annotations

import otp
from otp import dist
from otp.dist import _epmd
from tests.dist_wire_helpers import epmd_child, erl_child, erl_eval, needs_erl, wait_for

pytestmark = needs_erl

PY = "py@127.0.0.1"


def _registered(name: str, port: int) -> bool:
    return _epmd.port_please(name, "127.0.0.1", epmd_port=port) is not None


def test_erl_pings_our_node_pong():
    with epmd_child() as port:

        def main():
            dist.start(PY, cookie="c1", epmd_port=port)
            try:
                return erl_eval("e1@127.0.0.1", "c1", port, f"net_adm:ping('{PY}')")
            finally:
                dist.stop()

        assert otp.run(main, name=PY, timeout=90) == "pong"


def test_we_ping_erl_pong_and_it_is_listed_in_nodes():
    with epmd_child() as port, erl_child("e2@127.0.0.1", "c2", port):

        def main():
            dist.start(PY, cookie="c2", epmd_port=port)
            try:
                wait_for(lambda: _registered("e2", port), "erl to register")
                return dist.ping("e2@127.0.0.1"), dist.nodes()
            finally:
                dist.stop()

        assert otp.run(main, name=PY, timeout=90) == ("pong", ["e2@127.0.0.1"])


def test_wrong_cookie_is_pang_both_ways_and_the_node_keeps_serving():
    with epmd_child() as port, erl_child("e3@127.0.0.1", "other", port):

        def main():
            dist.start(PY, cookie="c3", epmd_port=port)
            try:
                wait_for(lambda: _registered("e3", port), "erl to register")
                ours = dist.ping("e3@127.0.0.1")
                theirs = erl_eval("e4@127.0.0.1", "wrong", port, f"net_adm:ping('{PY}')")
                after = erl_eval("e5@127.0.0.1", "c3", port, f"net_adm:ping('{PY}')")
                return ours, theirs, after
            finally:
                dist.stop()

        assert otp.run(main, name=PY, timeout=120) == ("pang", "pang", "pong")
