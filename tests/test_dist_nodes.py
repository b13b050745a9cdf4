"""Processes across otpy nodes running as separate OS processes (otp.testing_dist):
send, links both ways (P1-P5), monitors by pid and by name, ordering (P10), and what a
SIGKILLed node or a cut connection does to links, monitors and node monitors (P14, D1).

Each test's nodes are children started by a ``Cluster`` and killed by pid when it
ends; their logs are in the test's ``tmp_path``. A node's probe (``start_probe``)
traps exits and keeps what it gets; ``probe_wait`` waits for a message (no sleeps).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from otp.testing_dist import Cluster, OtpyNode, cut, heal

# Helpers defined on every node: a server that echoes, a process that dies on demand.
HELPERS = """
def echo():
    while True:
        m = receive()
        send(m[0], ('echo', m[1]))

def waiter(reason='normal'):
    m = receive()
    if m == 'die':
        exit(reason)

def sync(node):
    # A round trip to node: what this node sent there before has been acted on there
    # (one connection, read in order). A monitor of a free name answers Down(noproc).
    ref = monitor(('$sync', node))
    receive(lambda m: isinstance(m, Down) and m.ref == ref)

def linked_waiter(peer, reason='normal'):
    link(peer)
    sync(peer.node)
    send('probe', ('linked', self()))
    waiter(reason)

def watcher(targets):
    # monitors each target, then reports ('watching',) and every Down as ('down', t, reason)
    refs = {monitor(t): t for t in targets}
    for n in {t[1] if isinstance(t, tuple) else t.node for t in targets}:
        sync(n)
    send('probe', ('watching',))
    while refs:
        d = receive(Down)
        send('probe', ('down', refs.pop(d.ref), d.reason))
"""


@pytest.fixture
def cluster(tmp_path) -> Iterator[Cluster]:
    with Cluster(tmp_path / "logs") as c:
        yield c


@pytest.fixture
def ab(cluster) -> tuple[OtpyNode, OtpyNode]:
    a, b = cluster.otpy("a"), cluster.otpy("b")
    for n in (a, b):
        n.exec(HELPERS)
        n.exec("P = start_probe()")
    return a, b


def test_send_by_pid_and_by_name_across_nodes(ab):
    a, b = ab
    b.exec("register('echo', spawn(echo))")
    p = a.eval("P")
    b.exec("send(('probe', A), 'by name'); send(P_A, 'by pid')", A=a.name, P_A=p)
    assert a.eval("probe_wait(lambda m: m == 'by name')") == "by name"
    assert a.eval("probe_wait(lambda m: m == 'by pid')") == "by pid"
    a.exec("send(('echo', B), (P, 'hi'))", B=b.name)
    assert a.eval("probe_wait(lambda m: m[:1] == ('echo',))") == ("echo", "hi")


def test_p3_remote_exit_reaches_a_trapping_process_as_an_exit_message(ab):
    a, b = ab
    w = b.eval("spawn(linked_waiter, P_A, 'boom')", P_A=a.eval("P"))
    b.exec("send(W, 'die')", W=w)
    got = a.eval("probe_wait(lambda m: isinstance(m, Exit))")
    assert (got.pid, got.reason) == (w, "boom")


def test_p1_remote_crash_ends_a_linked_non_trapping_process_and_p2_normal_does_not(ab):
    a, b = ab
    w1 = b.eval("spawn(waiter, 'crash')")
    w2 = b.eval("spawn(waiter, 'normal')")
    v1 = a.eval("spawn(linked_waiter, W1)", W1=w1)
    v2 = a.eval("spawn(linked_waiter, W2)", W2=w2)
    a.exec("spawn(watcher, (V1, V2))", V1=v1, V2=v2)
    for v in (v1, v2):
        a.eval("probe_wait(lambda m: m == ('linked', V))", V=v)
    a.eval("probe_wait(lambda m: m == ('watching',))")
    b.exec("send(W1, 'die'); send(W2, 'die')", W1=w1, W2=w2)
    assert a.eval("probe_wait(lambda m: m[:2] == ('down', V1))", V1=v1)[2] == "crash"
    # w2 ended normally: v2 lives on (P2)
    b.exec("ref = monitor(W2); receive(lambda m: isinstance(m, Down) and m.ref == ref)", W2=w2)
    b.exec("sync(A)", A=a.name)
    assert a.eval("is_alive(V2)", V2=v2) is True
    a.exec("exit(V2, 'kill')", V2=v2)
    assert a.eval("probe_wait(lambda m: m[:2] == ('down', V2))", V2=v2)[2] == "killed"


def test_p5_link_to_a_dead_remote_pid_gives_noproc(ab):
    a, b = ab
    dead = b.eval("spawn(lambda: None)")
    b.exec("ref = monitor(D); receive(lambda m: isinstance(m, Down) and m.ref == ref)", D=dead)
    a.exec(
        "def linker(d):\n    trap_exit(True)\n    link(d)\n    send('probe', receive(Exit))\n"
        "spawn(linker, D)",
        D=dead,
    )
    got = a.eval("probe_wait(lambda m: isinstance(m, Exit))")
    assert (got.pid, got.reason) == (dead, "noproc")


def test_p4_local_exit_reaches_a_remote_trapping_process(ab):
    a, b = ab
    v = a.eval("spawn(linked_waiter, P_B, 'bye')", P_B=b.eval("P"))
    a.eval("probe_wait(lambda m: m == ('linked', V))", V=v)
    a.exec("send(V, 'die')", V=v)
    got = b.eval("probe_wait(lambda m: isinstance(m, Exit))")
    assert (got.pid, got.reason) == (v, "bye")


def test_monitor_by_pid_and_by_name_across_nodes(ab):
    a, b = ab
    w = b.eval("spawn(waiter, 'done')")
    b.exec("register('named', spawn(waiter, 'named'))")
    a.exec("spawn(watcher, (W, ('named', B)))", W=w, B=b.name)
    a.eval("probe_wait(lambda m: m == ('watching',))")
    b.exec("send(W, 'die'); send('named', 'die')", W=w)
    assert a.eval("probe_wait(lambda m: m[:2] == ('down', W))", W=w)[2] == "done"
    d2 = a.eval("probe_wait(lambda m: m[:2] == ('down', ('named', B)))", B=b.name)
    assert d2[2] == "named"


def test_monitor_of_a_missing_remote_name_is_down_noproc(ab):
    a, b = ab
    got = a.eval("monitor(('nobody', B)) and receive(Down, 10)", B=b.name)
    assert (got.pid, got.reason) == (("nobody", b.name), "noproc")


def test_p10_messages_then_the_exit_arrive_in_order_across_nodes(ab):
    a, b = ab
    b.exec(
        "def burst(p):\n    link(p)\n    for i in range(200):\n        send(p, i)\n"
        "    exit('end')\n"
        "spawn(burst, P_A)",
        P_A=a.eval("P"),
    )
    a.eval("probe_wait(lambda m: isinstance(m, Exit))")
    kept = a.eval("probe_messages()")
    assert list(kept[:200]) == list(range(200))
    assert kept[200].reason == "end"


def test_p14_d1_sigkill_of_a_node_fires_noconnection_everywhere(ab):
    a, b = ab
    w = b.eval("spawn(waiter)")
    a.exec(
        "def trapper(w):\n    trap_exit(True)\n    link(w)\n    sync(w.node)\n"
        "    send('probe', ('linked', self()))\n    send('probe', ('trapped', receive(Exit)))\n"
        "def node_watcher(n):\n    monitor_node(n)\n    send('probe', ('node watched',))\n"
        "    send('probe', receive(NodeDown))\n"
        "t = spawn(trapper, W)\nv = spawn(linked_waiter, W)\n"
        "spawn(watcher, (W, v)); spawn(node_watcher, B)",
        W=w,
        B=b.name,
    )
    for ready in ("('linked', t)", "('linked', v)", "('watching',)", "('node watched',)"):
        a.eval(f"probe_wait(lambda m: m == {ready})")
    b.kill()
    trapped = a.eval("probe_wait(lambda m: m[:1] == ('trapped',))", timeout=30)[1]
    assert (trapped.pid, trapped.reason) == (w, "noconnection")
    assert (
        a.eval("probe_wait(lambda m: m[:2] == ('down', W))", W=w, timeout=30)[2] == "noconnection"
    )
    assert a.eval("probe_wait(lambda m: m[:2] == ('down', v))", timeout=30)[2] == "noconnection"
    assert a.eval("probe_wait(lambda m: isinstance(m, NodeDown))", timeout=30).node == b.name


def test_a_cut_connection_fires_noconnection_and_heals(ab):
    a, b = ab
    w = b.eval("spawn(waiter)")
    a.exec("spawn(watcher, (W,))", W=w)
    a.eval("probe_wait(lambda m: m == ('watching',))")
    cut(a, b)
    assert a.eval("probe_wait(lambda m: m[:2] == ('down', W))", W=w)[2] == "noconnection"
    heal(a, b)
    b.exec("send(('probe', A), 'after heal')", A=a.name)
    assert a.eval("probe_wait(lambda m: m == 'after heal')") == "after heal"


ADDER = """
class Adder(gen_server.GenServer):
    def init(self, arg):
        return gen_server.Ok(arg)

    def handle_call(self, request, from_, state):
        if request == 'crash':
            raise RuntimeError('asked to')
        return gen_server.Reply(state + request, state)

    def handle_cast(self, request, state):
        return gen_server.NoReply(state + request)
"""


def test_gen_server_call_cast_and_multi_call_across_nodes(ab):
    a, b = ab
    for n in (a, b):
        n.exec(ADDER)
    b.exec("gen_server.start(Adder, 1, name='adder')")
    a.exec("gen_server.start(Adder, 100, name='adder')")
    assert a.eval("gen_server.call(('adder', B), 41)", B=b.name) == 42
    pid = b.eval("whereis('adder')")
    assert a.eval("gen_server.call(P, 1)", P=pid) == 2
    a.exec("gen_server.cast(('adder', B), 10)", B=b.name)
    assert a.eval("gen_server.call(('adder', B), 0)", B=b.name) == 11
    got = a.eval(
        "gen_server.receive_response(gen_server.send_request(('adder', B), 1), 10)", B=b.name
    )
    assert got == 12
    a.exec("gen_server.abcast([A, B], 'adder', 1)", A=a.name, B=b.name)
    replies, bad = a.eval(
        "gen_server.multi_call([A, B, 'nobody@127.0.0.1'], 'adder', 0, 10.0)", A=a.name, B=b.name
    )
    assert replies == [(a.name, 101), (b.name, 12)]
    assert bad == ["nobody@127.0.0.1"]


def test_a_remote_call_fails_with_the_servers_exit_reason_or_noconnection(ab):
    a, b = ab
    b.exec(ADDER)
    b.exec("gen_server.start(Adder, 1, name='adder')")
    a.exec(
        "def try_call(server, req):\n"
        "    try:\n        return ('ok', gen_server.call(server, req, 10))\n"
        "    except otp.errors.CallError as e:\n        return ('error', repr(e.reason))\n"
    )
    got = a.eval("try_call(('adder', B), 'crash')", B=b.name)
    assert got[0] == "error" and "asked to" in got[1]
    assert a.eval("try_call(('adder', B), 1)", B=b.name) == ("error", "'noproc'")
    b.exec("gen_server.start(Adder, 1, name='adder')")
    a.exec("caller = spawn(lambda: send('probe', ('called', try_call(('adder', B), None))))",
           B=b.name)  # fmt: skip
    b.kill()
    got = a.eval("probe_wait(lambda m: m[:1] == ('called',))", timeout=30)
    assert got[1][0] == "error"


def test_monitor_nodes_reports_node_up_and_down_once_per_subscription(cluster):
    a = cluster.otpy("a")
    a.exec(HELPERS)
    a.exec("P = start_probe()")
    a.exec(
        "from otp.dist import monitor_nodes\n"
        "def node_events(times):\n"
        "    for _ in range(times):\n"
        "        monitor_nodes(True)\n"
        "    send('probe', ('subscribed', times))\n"
        "    got = [receive() for _ in range(2 * times)]\n"
        "    send('probe', ('events', times, [(type(m).__name__, m.node) for m in got]))\n"
        "    send('probe', ('then', times, receive(timeout=0.2, default=None)))\n"
        "spawn(node_events, 1); spawn(node_events, 2)\n"
        "def quitter():\n"
        "    monitor_nodes(True); monitor_nodes(False)\n"
        "    send('probe', ('subscribed', 0))\n"
        "    receive(lambda m: m == 'report')\n"
        "    send('probe', ('then', 0, receive(timeout=0, default=None)))\n"
        "Q = spawn(quitter)"
    )
    for times in (0, 1, 2):
        a.eval(f"probe_wait(lambda m: m == ('subscribed', {times}))")
    b = cluster.otpy("b")
    assert b.eval("dist.ping(A)", A=a.name) == "pong"
    b.kill()
    for times in (1, 2):
        got = a.eval(f"probe_wait(lambda m: m[:2] == ('events', {times}))", timeout=30)[2]
        assert got == [("NodeUp", b.name)] * times + [("NodeDown", b.name)] * times
        assert a.eval(f"probe_wait(lambda m: m[:2] == ('then', {times}))")[2] is None
    a.exec("send(Q, 'report')")
    assert a.eval("probe_wait(lambda m: m[:2] == ('then', 0))")[2] is None
