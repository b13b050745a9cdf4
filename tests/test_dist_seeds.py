"""Seeds and membership (otp.dist.join): a node given seed nodes connects to them,
learns the rest from them (a full mesh), and keeps retrying with back-off while a seed
is down. Nodes are OS processes of the multi-node kit (otp.testing_dist); the tests
wait on conditions (a node's own loop until its ``nodes()`` holds), never on sleeps.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from otp.errors import RemoteError
from otp.testing_dist import Cluster

# Defined on every node: wait (on this node's clock) until ``pred(dist.nodes())``.
WAIT = """
def wait_nodes(pred, timeout=20.0):
    import time
    deadline = time.monotonic() + timeout
    while not pred(dist.nodes()):
        if time.monotonic() > deadline:
            raise TimeoutError(f'nodes() is {dist.nodes()}')
        receive(lambda m: False, timeout=0.05, default=None)
    return dist.nodes()
"""


def test_seed_full_mesh(tmp_path):
    with Cluster(tmp_path) as c:
        a, b, d = c.otpy("a"), c.otpy("b"), c.otpy("d")
        for n in (a, b, d):
            n.exec(WAIT)
        a.exec("dist.join([])")  # the seed: membership only
        b.exec("dist.join([A])", A=a.name)
        assert b.eval("wait_nodes(lambda ns: A in ns)", A=a.name) == [a.name]
        a.eval("wait_nodes(lambda ns: B in ns)", B=b.name)
        d.exec("dist.join([A])", A=a.name)
        # d learnt b from a: every pair is connected
        assert d.eval("wait_nodes(lambda ns: len(ns) == 2)") == sorted([a.name, b.name])
        assert b.eval("wait_nodes(lambda ns: len(ns) == 2)") == sorted([a.name, d.name])
        assert a.eval("dist.members_of(D)", D=d.name) == sorted([a.name, b.name])


def test_seed_down_is_retried_with_backoff(tmp_path):
    with Cluster(tmp_path) as c:
        b = c.otpy("b")
        b.exec(WAIT)
        late = "late@127.0.0.1"
        b.exec("dist.join([LATE], backoff=(0.05, 0.2))", LATE=late)
        assert b.eval("dist.nodes()") == []
        c.otpy("late")
        assert b.eval("wait_nodes(lambda ns: LATE in ns)", LATE=late) == [late]


def test_join_checks_its_arguments(tmp_path):
    with Cluster(tmp_path) as c:
        b = c.otpy("b")
        with pytest.raises(RemoteError, match="name@host"):
            b.exec("dist.join(['nohost'])")
        with pytest.raises(RemoteError, match="backoff"):
            b.exec("dist.join(['x@127.0.0.1'], backoff=(1, 0.5))")


@pytest.mark.skipif(shutil.which("erl") is None, reason="erl is not installed")
def test_beam_seed_is_asked_through_rex(tmp_path):
    with Cluster(tmp_path) as c:
        a, b = c.otpy("a"), c.otpy("b")
        e = c.erl("e")
        b.exec(WAIT)
        assert a.eval("dist.ping(E)", E=e.name) == "pong"
        b.exec("dist.join([E])", E=e.name)
        # e knew a: b connects to it too
        assert b.eval("wait_nodes(lambda ns: len(ns) == 2)") == sorted([a.name, e.name])


def test_node_shell_joins_through_its_seed(tmp_path):
    # python -m otp node --seed: the shell's node joins at start (the README's cluster)
    with Cluster(tmp_path) as c:
        a = c.otpy("a")
        a.exec("dist.join([])")
        lines = (
            "while A not in dist.nodes(): receive(timeout=0.05, default=None)\n\n"
            "dist.nodes()\n"
        ).replace("A", repr(a.name))
        out = subprocess.run(
            [sys.executable, "-m", "otp", "node", "--name", "s@127.0.0.1", "--cookie",
             c.cookie, "--seed", a.name, "--epmd-port", str(c.epmd_port)],
            input=lines, capture_output=True, text=True, timeout=60, cwd=tmp_path,
        )  # fmt: skip
        assert out.returncode == 0, out.stdout + out.stderr
        assert f"[{a.name!r}]" in out.stdout, out.stdout + out.stderr
