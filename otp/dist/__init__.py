"""Distribution: otpy nodes talking Erlang's distribution protocol to each other and
to BEAM nodes. The values that cross are described in docs/distribution.md.

>>> from otp.dist import Atom, ImproperList
>>> ImproperList([Atom("alias")], 1).tail
1

A node becomes distributed with ``start`` (inside a process), and is then reachable by
its name; connections to other nodes are made on first use::

    import otp
    from otp import dist

    def main():
        dist.start("a@127.0.0.1", cookie="secret")   # registers with EPMD
        print(dist.ping("b@127.0.0.1"))             # "pong" if b runs with that cookie
        dist.stop()

    otp.run(main)

``start`` registers the node's name with the host's EPMD (port ``epmd_port``, else
``ERL_EPMD_PORT``, else 4369); when no EPMD answers, the node serves the names itself
(an EPMD-compatible name server inside this node, gone when it stops: see
``otp.dist._epmd``). The cookie comes from ``cookie``, else from ``cookie_file``, else
from ``~/.erlang.cookie`` (created with a random value, mode 0400, when missing).

A node joins a cluster through seed nodes: ``join(["a@host", "b@host"])`` connects to
each (retrying with back-off while one is down) and then to every node the seed knows,
so that the nodes form a full mesh (``otp.dist._seeds``).

Security: the cookie authenticates, but nothing is encrypted without TLS. ``start``
refuses to listen on an address that is not loopback unless ``tls`` is given (or
``insecure=True`` says you know). A wrong cookie is refused without a hint to the peer
and logged here.

``monitor_nodes()`` subscribes the calling process to ``NodeUp(node)`` and
``NodeDown(node)`` messages as connections come and go (Erlang's
``net_kernel:monitor_nodes``).

Failure semantics: a peer that cannot be reached makes ``connect`` return False and
``ping`` return ``"pang"``; a connection that drops (peer gone, silent for
``net_ticktime`` seconds, or sending garbage) is closed alone, and links and monitors
across it fire with ``noconnection``.
"""

from typing import Any

from otp.dist._etf_types import (
    Atom,
    BadTerm,
    BitBinary,
    ForeignException,
    Fun,
    ImproperList,
    NotSendable,
    Port,
    register_type,
)
from otp.dist._net_kernel import NodeUp, connect, disconnect, monitor_nodes, nodes, ping, stop
from otp.dist._net_kernel import node as node
from otp.dist._net_kernel import start as _start_kernel
from otp.dist._seeds import join, members_of
from otp.lowlevel import NodeDown


def start(name: str, **options: Any) -> str:
    """Make the running node distributed (see ``otp.dist._net_kernel.start`` for the
    options), then start the cluster services every distributed node runs: ``rex``
    (``otp.rpc``), the default ``pg`` scope (``otp.pg``) and the ``global_names``
    server (``otp.global_names``). Returns the node's full name."""
    full = _start_kernel(name, **options)
    from otp import global_names, pg, rpc

    rpc.start_server()
    pg.start_scope()
    global_names.start_server()
    return full


__all__ = [
    "Atom",
    "BadTerm",
    "BitBinary",
    "ForeignException",
    "Fun",
    "ImproperList",
    "NodeDown",
    "NodeUp",
    "NotSendable",
    "Port",
    "connect",
    "disconnect",
    "join",
    "members_of",
    "monitor_nodes",
    "node",
    "nodes",
    "ping",
    "register_type",
    "start",
    "stop",
]
