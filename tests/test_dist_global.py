"""otp.global_names: cluster-wide names across otpy nodes running as separate OS
processes: seen on every node, refused when taken, dropped when the holder ends or its
node is lost, a clash after a reconnect resolved for the lower node's holder, and a
gen_server named through ``Via(global_names.REGISTRY, name)``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from otp.errors import RemoteError
from otp.testing_dist import Cluster, OtpyNode

HELPERS = """
from otp import global_names
from otp.gen_server import GenServer, Ok, Reply, Via

def name_is(name, expected):
    # waits until this node resolves name to expected (a Pid or None)
    while global_names.whereis_name(name) != expected:
        receive(timeout=0.02, default=None)
    return True

def connected(peer):
    # connected and both name servers have met (each one's names are known here)
    dist.connect(peer)
    ref = monitor(('global_names', peer))
    demonitor(ref)
    return True

class Adder(GenServer):
    def handle_call(self, n, from_, total):
        return Reply(total + n, total + n)
"""


@pytest.fixture
def ab(tmp_path) -> Iterator[tuple[OtpyNode, OtpyNode]]:
    with Cluster(tmp_path / "logs") as c:
        a, b = c.otpy("a"), c.otpy("b")
        for n in (a, b):
            n.exec(HELPERS)
            n.exec("start_probe()")
        assert a.eval("dist.connect(B)", B=b.name) is True
        yield a, b


def _wait_met(a: OtpyNode, b: OtpyNode) -> None:
    # a name registered on b before the servers met reaches a once they have
    marker = b.eval("spawn(receive)")
    assert b.eval("global_names.register_name(('met', N), M)", N=a.name, M=marker)
    assert a.eval("name_is(('met', N), M)", N=a.name, M=marker)


def test_a_name_registered_on_one_node_is_seen_and_refused_on_the_other(ab):
    a, b = ab
    _wait_met(a, b)
    pa = a.eval("spawn(receive)")
    pb = b.eval("spawn(receive)")
    assert a.eval("global_names.register_name('db', PA)", PA=pa) is True
    assert b.eval("global_names.whereis_name('db')") == pa
    assert b.eval("global_names.register_name('db', PB)", PB=pb) is False
    assert a.eval("global_names.whereis_name('db')") == pa
    b.exec("global_names.send('db', 'hello')")
    a.exec("send(PA, 'x')", PA=pa)  # pa ends: the name is dropped everywhere
    assert b.eval("name_is('db', None)")
    assert b.eval("global_names.register_name('db', PB)", PB=pb) is True
    assert a.eval("name_is('db', PB)", PB=pb)
    a.exec("global_names.unregister_name('db')")
    assert b.eval("name_is('db', None)")


def test_sigkill_of_the_holders_node_drops_its_names(tmp_path):
    with Cluster(tmp_path / "logs") as c:
        a, b = c.otpy("a"), c.otpy("b")
        for n in (a, b):
            n.exec(HELPERS)
        assert a.eval("dist.connect(B)", B=b.name) is True
        _wait_met(a, b)
        pb = b.eval("spawn(receive)")
        assert b.eval("global_names.register_name('svc', PB)", PB=pb) is True
        assert a.eval("global_names.whereis_name('svc')") == pb
        b.kill()
        assert a.eval("name_is('svc', None)")


def test_clash_on_reconnect_keeps_the_holder_on_the_lower_node(ab):
    a, b = ab
    _wait_met(a, b)
    a.exec("dist.disconnect(B)", B=b.name)
    b.exec("while A in nodes(): receive(timeout=0.02, default=None)", A=a.name)
    pa = a.eval("spawn(receive)")
    pb = b.eval("spawn(receive)")
    b.exec(
        "def watch(p):\n    monitor(p)\n    send('probe', 'watching')\n"
        "    send('probe', receive(Down))\n"
        "spawn(watch, PB)",
        PB=pb,
    )
    assert b.eval("probe_wait(lambda m: m == 'watching')") == "watching"
    assert a.eval("global_names.register_name('x', PA)", PA=pa) is True
    assert b.eval("global_names.register_name('x', PB)", PB=pb) is True
    assert a.eval("dist.connect(B)", B=b.name) is True
    # a@ < b@: a's holder keeps the name, b's is killed by its own node
    assert b.eval("name_is('x', PA)", PA=pa)
    assert a.eval("name_is('x', PA)", PA=pa)
    down = b.eval("probe_wait(lambda m: isinstance(m, Down))")
    assert down.reason == "killed"
    assert a.eval("is_alive(PA)", PA=pa) is True


def test_a_gen_server_named_through_via_is_called_from_the_other_node(ab):
    a, b = ab
    _wait_met(a, b)
    pid = a.eval("gen_server.start(Adder, 0, name=Via(global_names.REGISTRY, 'adder'))")
    assert b.eval("name_is('adder', P)", P=pid)
    assert b.eval("gen_server.call(Via(global_names.REGISTRY, 'adder'), 5)") == 5
    assert b.eval("gen_server.call(Via(global_names.REGISTRY, 'adder'), 2)") == 7
    # a second server under the same name, on the other node, fails to start
    with pytest.raises(RemoteError, match="already_started"):
        b.eval("gen_server.start(Adder, 0, name=Via(global_names.REGISTRY, 'adder'))")
