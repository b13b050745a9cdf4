"""otpy nodes and real Erlang nodes (``erl``) in one cluster: messages both ways,
links across with ``noconnection`` when either side is SIGKILLed (P14), and
``gen_server`` calls both ways (Erlang's ``[alias | Ref]`` reply tag, G10).

Skipped, with the reason, when ``erl`` is not installed.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from otp.dist import Atom
from otp.process import Pid
from otp.testing_dist import Cluster, ErlNode, OtpyNode

pytestmark = pytest.mark.skipif(
    shutil.which("erl") is None, reason="erl is not installed (apt-get install erlang-base)"
)

HELPERS = """
def pidsrv():
    # answers ('pid', its pid) to the pid in the first element of any tuple it gets
    while True:
        m = receive()
        send(m[0], (Atom('pid'), self()))

def sync(node):
    ref = monitor(('$sync', node))
    receive(lambda m: isinstance(m, Down) and m.ref == ref)

def trapper(peer):
    trap_exit(True)
    link(peer)
    sync(peer.node)
    send('probe', ('linked',))
    send('probe', receive(Exit))

class Adder(gen_server.GenServer):
    def init(self, arg):
        return gen_server.Ok(arg)

    def handle_call(self, request, from_, state):
        return gen_server.Reply(state + request, state)
"""

# In the erl node: trap exits, get the pid of otpy's pidsrv, link to it, then a round
# trip (a monitor of a free name answers 'DOWN' noproc) so the link is in place there.
ERL_LINK = """
process_flag(trap_exit, true),
{pidsrv, A} ! {self(), hello},
P = receive {pid, X} -> X after 10000 -> timeout end,
link(P),
M = erlang:monitor(process, {'$sync', A}),
receive {'DOWN', M, _, _, _} -> ok after 10000 -> timeout end,
P.
"""


@pytest.fixture
def cluster(tmp_path) -> Iterator[Cluster]:
    with Cluster(tmp_path / "logs") as c:
        yield c


@pytest.fixture
def ae(cluster) -> tuple[OtpyNode, ErlNode]:
    a = cluster.otpy("a")
    a.exec(HELPERS)
    a.exec("register('pidsrv', spawn(pidsrv)); start_probe()")
    return a, cluster.erl("e")


def test_erl_sends_to_a_registered_otpy_process_and_gets_a_reply(ae):
    a, e = ae
    got = e.eval(
        "A = 'a@127.0.0.1', {pidsrv, A} ! {self(), hi}, "
        "receive {pid, P} -> P after 10000 -> timeout end."
    )
    assert isinstance(got, Pid) and got.node == a.name
    assert got == a.eval("whereis('pidsrv')")


def test_otpy_sends_to_a_registered_erl_process(ae):
    a, e = ae
    e.eval("register(shell_proc, self()).")
    a.exec("send(('shell_proc', E), (Atom('hello'), self(), b'bytes', 'text', 42))", E=e.name)
    got = e.eval("receive {hello, _, B, T, N} -> {B, T, N} after 10000 -> timeout end.")
    assert got == (b"bytes", b"text", 42)  # a str crosses to BEAM as a binary


def test_p14_erl_linked_to_an_otpy_process_gets_noconnection_when_otpy_is_killed(ae):
    a, e = ae
    p = e.eval("A = 'a@127.0.0.1'," + ERL_LINK)
    assert isinstance(p, Pid)
    a.kill()
    reason = e.eval("receive {'EXIT', P, R} -> R after 30000 -> timeout end.", timeout=40)
    assert reason == "noconnection" and reason.__class__ is Atom


def test_p14_otpy_linked_to_an_erl_process_gets_noconnection_when_erl_is_killed(ae):
    a, e = ae
    erl_pid = e.eval("self().")
    a.exec("spawn(trapper, EP)", EP=erl_pid)
    a.eval("probe_wait(lambda m: m == ('linked',))")
    e.kill()
    got = a.eval("probe_wait(lambda m: isinstance(m, Exit))", timeout=30)
    assert (got.pid, got.reason) == (erl_pid, "noconnection")


def test_p1_an_erl_process_exit_reaches_a_linked_trapping_otpy_process(ae):
    a, e = ae
    e.eval("Worker = spawn(fun() -> receive die -> exit(bad) end end).")
    worker = e.eval("Worker.")
    a.exec("spawn(trapper, W)", W=worker)
    a.eval("probe_wait(lambda m: m == ('linked',))")
    e.eval("Worker ! die.")
    got = a.eval("probe_wait(lambda m: isinstance(m, Exit))")
    assert (got.pid, got.reason) == (worker, "bad")


def test_erl_gen_server_call_to_an_otpy_gen_server(ae):
    a, e = ae
    a.exec("gen_server.start(Adder, 1, name='adder')")
    assert e.eval("gen_server:call({adder, 'a@127.0.0.1'}, 41).") == 42
    # a server that is not there: Erlang's call exits with noproc
    got = e.eval("catch gen_server:call({nobody, 'a@127.0.0.1'}, 1, 5000).")
    assert got[0] == "EXIT" and got[1][0] == "noproc"


def test_otpy_gen_server_call_to_an_erlang_gen_server(ae):
    a, e = ae
    # rex is the server behind rpc:call: {call, M, F, A, GroupLeader}
    got = a.eval(
        "gen_server.call(('rex', E), (Atom('call'), Atom('erlang'), Atom('node'), [],"
        " Atom('user')), 10)",
        E=e.name,
    )
    assert got == e.name and got.__class__ is Atom
    got = a.eval(
        "gen_server.call(('rex', E), (Atom('call'), Atom('lists'), Atom('sum'), [[1, 2, 3]],"
        " Atom('user')), 10)",
        E=e.name,
    )
    assert got == 6
