"""otp.pg: process groups kept in step across otpy nodes running as separate OS
processes (memberships exchanged on connect, joins and leaves sent to peers, members
dropped when they end or when their node is lost), and one node's own semantics.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import otp
from otp import pg
from otp.errors import BadArg
from otp.process import receive, spawn
from otp.testing_dist import Cluster, OtpyNode

HELPERS = """
from otp import pg

def members_are(group, expected, local=False):
    # waits until the members of group (as a sorted list) are expected
    while True:
        got = sorted(map(repr, pg.get_local_members(group) if local else pg.get_members(group)))
        if got == sorted(map(repr, expected)):
            return True
        receive(timeout=0.02, default=None)
"""


@pytest.fixture
def ab(tmp_path) -> Iterator[tuple[OtpyNode, OtpyNode]]:
    with Cluster(tmp_path / "logs") as c:
        a, b = c.otpy("a"), c.otpy("b")
        for n in (a, b):
            n.exec(HELPERS)
        yield a, b


def test_members_joined_on_either_node_are_seen_on_both(ab):
    a, b = ab
    pa = a.eval("spawn(receive)")
    pb = b.eval("spawn(receive)")
    a.exec("pg.join('room', PA)", PA=pa)
    b.exec("pg.join('room', [PB])", PB=pb)
    assert b.eval("dist.connect(A)", A=a.name) is True
    for n in (a, b):
        assert n.eval("members_are('room', [PA, PB])", PA=pa, PB=pb)
        assert n.eval("pg.which_groups()") == ["room"]
    assert a.eval("pg.get_local_members('room')") == [pa]
    # a join after the nodes met, and a leave, reach the other node
    pa2 = a.eval("spawn(receive)")
    a.exec("pg.join('room', PA2)", PA2=pa2)
    assert b.eval("members_are('room', [PA, PB, PA2])", PA=pa, PB=pb, PA2=pa2)
    assert a.eval("pg.leave('room', PA)", PA=pa) is True
    assert b.eval("members_are('room', [PB, PA2])", PB=pb, PA2=pa2)


def test_a_member_that_ends_leaves_on_every_node(ab):
    a, b = ab
    pa = a.eval("spawn(receive)")
    a.exec("pg.join('room', PA); pg.join('other', PA)", PA=pa)
    assert b.eval("dist.connect(A)", A=a.name) is True
    assert b.eval("members_are('room', [PA]) and members_are('other', [PA])", PA=pa)
    a.exec("send(PA, 'bye')", PA=pa)
    assert b.eval("members_are('room', []) and members_are('other', [])")
    assert b.eval("pg.which_groups()") == []


def test_sigkill_of_a_node_drops_its_members_and_monitor_scope_reports_it(ab):
    a, b = ab
    pb = b.eval("spawn(receive)")
    b.exec("pg.join('room', PB)", PB=pb)
    a.exec("start_probe()")
    assert a.eval("dist.connect(B)", B=b.name) is True
    assert a.eval("members_are('room', [PB])", PB=pb)
    a.exec(
        "def sub():\n    ref, groups = pg.monitor_scope()\n"
        "    send('probe', ('groups', groups))\n"
        "    while True:\n        send('probe', receive())\n"
        "spawn(sub)"
    )
    assert a.eval("probe_wait(lambda m: m[0] == 'groups')") == ("groups", {"room": [pb]})
    b.kill()
    left = a.eval("probe_wait(lambda m: isinstance(m, pg.Leave))")
    assert (left.group, left.pids) == ("room", (pb,))
    assert a.eval("pg.get_members('room')") == []


def test_cut_and_heal_exchange_memberships_again(ab):
    a, b = ab
    pb = b.eval("spawn(receive)")
    b.exec("pg.join('room', PB)", PB=pb)
    assert a.eval("dist.connect(B)", B=b.name) is True
    assert a.eval("members_are('room', [PB])", PB=pb)
    a.exec("dist.disconnect(B)", B=b.name)
    assert a.eval("members_are('room', [])")
    assert a.eval("dist.connect(B)", B=b.name) is True
    assert a.eval("members_are('room', [PB])", PB=pb)


def test_local_join_twice_leave_once_and_subscriptions():
    def main():
        pg.start_scope("s")
        p = spawn(receive)
        ref, groups = pg.monitor_scope(scope="s")
        assert groups == {}
        pg.join("g", [p, p], scope="s")
        assert pg.get_members("g", scope="s") == [p, p]
        assert receive() == pg.Join(ref, "g", (p, p))
        assert pg.leave("g", p, scope="s") is True
        assert receive() == pg.Leave(ref, "g", (p,))
        assert pg.get_local_members("g", scope="s") == [p]
        assert pg.leave("nope", p, scope="s") is False
        with pytest.raises(BadArg, match="Pid"):
            pg.join("g", "not a pid", scope="s")
        return True

    assert otp.run(main) is True
