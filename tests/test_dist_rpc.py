"""otp.rpc across otpy nodes running as separate OS processes, and Erlang's
``rpc:call`` reaching an otpy node's ``rex``.

Functions named here are standard-library module-level functions, importable on every
node.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from otp.errors import RemoteError
from otp.testing_dist import Cluster, OtpyNode

HELPERS = "from otp import rpc"


@pytest.fixture
def cluster(tmp_path) -> Iterator[Cluster]:
    with Cluster(tmp_path / "logs") as c:
        yield c


@pytest.fixture
def ab(cluster) -> tuple[OtpyNode, OtpyNode]:
    a, b = cluster.otpy("a"), cluster.otpy("b")
    for n in (a, b):
        n.exec(HELPERS)
    return a, b


def test_call_runs_a_module_function_on_the_other_node(ab):
    a, b = ab
    assert a.eval("rpc.call(B, 'operator:add', (40, 2))", B=b.name) == 42
    # the function ran there: its os.getpid is b's
    assert a.eval("rpc.call(B, 'os:getpid')", B=b.name) == b.child.os_pid
    assert a.eval("rpc.call(B, 'math:floor', (2.5,))", B=b.name) == 2


def test_call_failures_are_badrpc_with_their_reason(ab):
    a, b = ab
    a.exec(
        "def bad(fn, args=(), node=B):\n"
        "    try:\n        rpc.call(node, fn, args, timeout=5)\n"
        "    except rpc.BadRpc as e:\n        return e.reason\n",
        B=b.name,
    )
    assert a.eval("bad('math:sqrt', (-1,))") == ("EXIT", "ValueError: math domain error")
    assert a.eval("bad('no_such_module_x:f')") == "undef"
    assert a.eval("bad('os:_exit', (1,))") == "undef"  # private names are refused
    assert a.eval("bad('math:floor', (1,), 'nobody@127.0.0.1')") == "nodedown"


def test_lambdas_are_refused_with_a_clear_error(ab):
    a, b = ab
    with pytest.raises(RemoteError, match="module-level"):
        a.eval("rpc.call(B, lambda: 1)", B=b.name)


def test_cast_and_multicall(ab):
    a, b = ab
    b.exec("start_probe()")
    a.exec("rpc.cast(B, 'otp.process:send', ('probe', 'cast arrived'))", B=b.name)
    assert b.eval("probe_wait(lambda m: m == 'cast arrived')") == "cast arrived"
    results, bad = a.eval(
        "rpc.multicall([A, B, 'nobody@127.0.0.1'], 'os:getpid', timeout=5)",
        A=a.name,
        B=b.name,
    )
    assert results == [a.child.os_pid, b.child.os_pid]
    assert bad == ["nobody@127.0.0.1"]


def _rex(node: str, m: str, f: str, args: str) -> str:
    return f"gen_server:call({{rex, '{node}'}}, {{call, {m}, {f}, {args}, group_leader()}})."


@pytest.mark.skipif(shutil.which("erl") is None, reason="erl is not installed")
def test_erlang_call_to_rex_reaches_otpy_rex(cluster):
    a = cluster.otpy("a")
    e = cluster.erl("e")
    a.exec("register('named', spawn(receive))")
    assert e.eval(_rex(a.name, "erlang", "node", "[]")) == a.name
    assert "named" in e.eval(_rex(a.name, "erlang", "registered", "[]"))
    assert e.eval(_rex(a.name, "operator", "add", "[40, 2]")) == 42
    bad = e.eval(_rex(a.name, "erlang", "halt", "[]"))
    assert bad[:2] == ("badrpc", ("EXIT", ("undef", [("erlang", "halt", [], [])])))[:2]
    bad = e.eval(_rex(a.name, "math", "sqrt", "[-1]"))
    assert bad == ("badrpc", ("EXIT", b"ValueError: math domain error"))


@pytest.mark.skipif(shutil.which("erl") is None, reason="erl is not installed")
def test_erlang_rpc_call_and_erpc_through_a_spawn_request_are_answered(cluster):
    a = cluster.otpy("a")
    e = cluster.erl("e")
    a.exec("register('named', spawn(receive))")
    # OTP 23+'s rpc:call/erpc:call spawn erpc:execute_call on the node (SPAWN_REQUEST)
    assert e.eval(f"rpc:call('{a.name}', erlang, node, []).") == a.name
    assert e.eval(f"erpc:call('{a.name}', operator, add, [40, 2]).") == 42
    assert "named" in e.eval(f"rpc:call('{a.name}', erlang, registered, []).")
    bad = e.eval(f"rpc:call('{a.name}', erlang, halt, []).")
    assert bad[0] == "badrpc" and bad[1][0] == "EXIT" and bad[1][1][0] == "undef"
    bad = e.eval(f"rpc:call('{a.name}', math, sqrt, [-1]).")
    assert bad == ("badrpc", ("EXIT", (b"ValueError: math domain error", [])))
    caught = e.eval(f"catch erpc:call('{a.name}', nomodule, nofun, []).")
    assert caught[0] == "EXIT" and caught[1][0] == ("exception", "undef", [])
    # erpc:cast runs it with no answer; a spawn of any other function is refused
    assert e.eval(f"erpc:cast('{a.name}', logging, info, [<<\"from erl\">>]).") == "ok"
    refused = e.eval(
        f"Ref = spawn_request('{a.name}', lists, seq, [1, 2], [monitor]), "
        "receive {spawn_reply, Ref, error, R} -> R after 5000 -> timeout end."
    )
    assert refused == "notsup"


def test_ref_names_module_level_functions_and_refuses_the_rest():
    import os.path

    from otp import rpc
    from otp.errors import BadArg

    assert rpc.ref(os.path.join) == "posixpath:join"
    assert rpc.ref("math:floor") == "math:floor"
    for bad in (lambda: 1, "no_colon", "m:", ":f", 42):
        with pytest.raises(BadArg):
            rpc.ref(bad)

    def nested():
        return 1

    with pytest.raises(BadArg, match="module-level"):
        rpc.ref(nested)
