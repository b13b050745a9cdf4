"""Seeds and membership: a node given seed nodes connects to them and learns the rest.

``join(seeds)`` (inside a process of a distributed node) starts two things:

- the *membership* process, registered as ``MEMBERSHIP`` (``"otp_dist_members"``),
  which answers ``("members", pid, ref)`` with ``("members", ref, nodes())``: what any
  otpy node asks a seed. Every node of a cluster runs it (a node without seeds too), so
  that it can be a seed for others;
- one *joiner* process per seed: it connects to the seed, retrying with exponential
  back-off (``backoff``: first and largest delay, seconds) while the seed is down; once
  connected, it asks the seed for its ``nodes()`` and connects to each (a full mesh).
  A BEAM seed (no membership process) is asked through its ``rex`` server
  (``rpc:call(Seed, erlang, nodes, [connected])``'s request: otpy nodes are hidden
  nodes to BEAM, so its plain ``nodes()`` leaves them out). A joiner ends once done.

Failure semantics: a seed that never comes up keeps its joiner retrying (at most every
``backoff[1]`` seconds) until the node stops; a seed that answers neither membership
request still counts as joined (connected, nothing learnt). Messages are tuples: they
cross to other nodes as plain ETF terms.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

__all__ = ["MEMBERSHIP", "join", "members_of"]

log = logging.getLogger("otp.dist.seeds")

#: the registered name of the membership process on every joined node
MEMBERSHIP = "otp_dist_members"
_ASK_TIMEOUT = 5.0


def _membership_loop() -> None:
    from otp.dist._net_kernel import nodes
    from otp.process import receive, send

    while True:
        msg = receive()
        if msg.__class__ is tuple and len(msg) == 3 and msg[0] == "members":
            send(msg[1], ("members", msg[2], nodes()))


def members_of(node: str, timeout: float = _ASK_TIMEOUT) -> list[str] | None:
    """The nodes ``node`` is connected to (asked over the distribution: its membership
    process, else a BEAM node's ``rex``); None when it does not say within ``timeout``."""
    from otp.dist._etf_types import Atom
    from otp.process import make_ref, receive, send
    from otp.process import self as self_pid

    ref = make_ref()
    send((MEMBERSHIP, node), ("members", self_pid(), ref))
    got = receive(
        lambda m: m.__class__ is tuple and len(m) == 3 and m[0] == "members" and m[1] == ref,
        timeout=timeout,
        default=None,
    )
    if got is not None:
        return [str(n) for n in got[2]]
    from otp import gen_server

    try:
        rex: Any = ("rex", node)  # a registered name on another node
        answer = gen_server.call(
            rex,
            (Atom("call"), Atom("erlang"), Atom("nodes"), [Atom("connected")], self_pid()),
            timeout,
        )
    except Exception:  # no rex either: nothing learnt
        return None
    return [str(n) for n in answer] if isinstance(answer, list) else None


def _joiner(seed: str, backoff: tuple[float, float]) -> None:
    from otp.dist._net_kernel import connect, node
    from otp.process import receive

    delay = backoff[0]
    while not connect(seed):
        log.info("seed %s is down; next try in %.1f s", seed, delay)
        receive(lambda m: False, timeout=delay, default=None)
        delay = min(delay * 2, backoff[1])
    members = members_of(seed) or []
    me = node()
    for other in members:
        if other != me and not connect(other):
            log.warning("%s (a member of seed %s) cannot be reached", other, seed)
    log.info("joined through %s: %d other node(s)", seed, len(members))


def join(seeds: Iterable[str] = (), *, backoff: tuple[float, float] = (0.5, 30.0)) -> list[Any]:
    """Start the membership process (once per node) and a joiner per seed (see the
    module doc); returns the joiners' pids. Call it inside a process, after
    ``otp.dist.start``.

    ``backoff=(first, largest)``: the delay after the first failed connect, doubled
    after each further one up to ``largest``. ``BadArg`` for a seed that is not
    ``"name@host"`` or a bad back-off.
    """
    from otp.dist._net_kernel import node, state
    from otp.errors import BadArg
    from otp.process import register, spawn, whereis

    state()  # raises when this node is not distributed
    seeds = list(seeds)
    for s in seeds:
        if not isinstance(s, str) or "@" not in s:
            raise BadArg(f"otp.dist.join expects seed node names 'name@host', got {s!r}")
    first, largest = backoff
    if not 0 < first <= largest:
        raise BadArg(
            f"otp.dist.join expects backoff=(first, largest), 0 < first <= largest, got {backoff!r}"
        )
    if whereis(MEMBERSHIP) is None:
        register(MEMBERSHIP, spawn(_membership_loop))
    me = node()
    return [spawn(_joiner, s, (float(first), float(largest))) for s in seeds if s != me]
