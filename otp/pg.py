"""Process groups across nodes (OTP's ``pg``): any process may join any group, and every
node sees the members of every group, on its own node and on the connected ones.

A *scope* is a server, registered under the scope's name, that keeps the groups of
that scope; ``otp.dist.start`` starts the default scope ``"pg"`` on every distributed
node, and ``start_scope(name)`` starts another (on a node that is not distributed too:
the groups are then this node's alone). Scopes of the same name on connected nodes
keep each other up to date:

- when a scope learns of an otpy node (a ``NodeUp`` from ``otp.dist.monitor_nodes``,
  and answers a peer that finds it first; BEAM nodes are left alone: their own ``pg``
  would not understand ours), it sends a ``Discover`` there; each side monitors the
  other's scope and sends it its local memberships (``Sync``);
- a join or leave on one node is sent to every peer scope (``Join``/``Leave``), in
  order behind the ``Sync``;
- a member that ends leaves every group it was in (the scope monitors it);
- when a peer scope is lost (its node went down, the connection was cut, the scope
  ended), its members are dropped here; after a reconnect the two exchange their
  memberships again.

A process may join a group several times; it leaves it as many times (``get_members``
lists it once per join). Only local processes may join (``join`` by another node's
process is refused: let it join on its own node).

>>> import otp
>>> from otp import pg
>>> from otp.process import spawn, receive
>>> def main():
...     pg.start_scope("demo")
...     p = spawn(receive)
...     pg.join("chat", p, scope="demo")
...     return pg.get_members("chat", scope="demo") == [p], pg.which_groups(scope="demo")
>>> otp.run(main)
(True, ['chat'])

``monitor_scope()`` subscribes the caller: it returns ``(ref, groups)``, the current
groups (group -> members), and then the caller gets ``Join(ref, group, pids)`` and
``Leave(ref, group, pids)`` for every change (``demonitor_scope(ref)`` stops them).
Groups are any value that crosses between nodes and can be a dict key (str, tuple...).

Consistency: eventual. A member seen here may already have ended on its node (its
``Leave`` is on the way), and two nodes may list a group differently for as long as
a message between them takes.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from otp import gen_server
from otp.dist import NodeDown, NodeUp, register_type
from otp.errors import BadArg, NodeError
from otp.gen_server import GenServer, NoReply, Ok, Reply
from otp.process import (
    Down,
    Pid,
    Ref,
    demonitor,
    monitor,
    node,
    send,
    whereis,
)
from otp.process import self as _me

__all__ = [
    "DEFAULT_SCOPE",
    "Join",
    "Leave",
    "demonitor_scope",
    "get_local_members",
    "get_members",
    "join",
    "leave",
    "monitor_scope",
    "start_scope",
    "which_groups",
]

#: The scope ``otp.dist.start`` starts and every function uses by default.
DEFAULT_SCOPE = "pg"

#: How often a scope looks for newly connected nodes, in seconds.


class Join(NamedTuple):
    """To a ``monitor_scope`` subscriber: ``pids`` joined ``group``."""

    ref: Ref
    group: Any
    pids: tuple[Pid, ...]


class Leave(NamedTuple):
    """To a ``monitor_scope`` subscriber: ``pids`` left ``group``."""

    ref: Ref
    group: Any
    pids: tuple[Pid, ...]


# --- between scopes (registered so that they cross between otpy nodes) --------------


@register_type(name="otp.pg.Discover")
class Discover(NamedTuple):
    scope: Pid


@register_type(name="otp.pg.Sync")
class Sync(NamedTuple):
    scope: Pid
    groups: tuple[tuple[Any, tuple[Pid, ...]], ...]


@register_type(name="otp.pg.PeerJoin")
class PeerJoin(NamedTuple):
    scope: Pid
    group: Any
    pids: tuple[Pid, ...]


@register_type(name="otp.pg.PeerLeave")
class PeerLeave(NamedTuple):
    scope: Pid
    groups: tuple[Any, ...]
    pids: tuple[Pid, ...]


class _Peer:
    __slots__ = ("groups", "ref", "scope")

    def __init__(self, scope: Pid, ref: Ref) -> None:
        self.scope = scope
        self.ref = ref
        self.groups: dict[Any, list[Pid]] = {}


class _State:
    def __init__(self, name: str) -> None:
        self.name = name
        self.local: dict[Any, list[Pid]] = {}
        self.members: dict[Pid, tuple[Ref, list[Any]]] = {}  # local pid -> (ref, groups)
        self.peers: dict[str, _Peer] = {}  # node -> its scope
        self.asked: set[str] = set()  # nodes sent a Discover, not answered yet
        self.subs: dict[Ref, Pid] = {}  # monitor ref of the subscriber -> subscriber


def _pids(pids: Any) -> tuple[Pid, ...]:
    got = (pids,) if isinstance(pids, Pid) else tuple(pids)
    for p in got:
        if not isinstance(p, Pid):
            raise BadArg(f"expected a Pid or a list of Pids, got {pids!r}")
        if p.node != node():
            raise BadArg(f"only processes of this node may join or leave here, got {p!r}")
    return got


class _Scope(GenServer):
    def init(self, name: str) -> Ok:
        st = _State(name)
        watch_nodes()
        _discover(st)
        return Ok(st)

    def handle_call(self, request: Any, from_: Any, st: _State) -> Any:
        op = request[0]
        if op == "join":
            return Reply(_join(st, request[1], request[2]), st)
        if op == "leave":
            return Reply(_leave(st, request[1], request[2]), st)
        if op == "members":
            return Reply(_members(st, request[1]), st)
        if op == "local":
            return Reply(list(st.local.get(request[1], ())), st)
        if op == "groups":
            return Reply(list(_all_groups(st)), st)
        if op == "monitor":
            sub = request[1]
            ref = monitor(sub)
            st.subs[ref] = sub
            return Reply((ref, {g: _members(st, g) for g in _all_groups(st)}), st)
        if op == "demonitor":
            if st.subs.pop(request[1], None) is not None:
                demonitor(request[1], flush=True)
            return Reply(True, st)
        raise BadArg(f"pg scope: unknown request {request!r}")

    def handle_info(self, msg: Any, st: _State) -> Any:
        cls = msg.__class__
        if cls is Down:
            _down(st, msg)
        elif cls is Discover:
            peer = _learn(st, msg.scope)
            if peer is not None:
                send(msg.scope, Sync(_me(), _local_sync(st)))
        elif cls is Sync:
            peer = _learn(st, msg.scope)
            if peer is not None:
                old = peer.groups
                peer.groups = {g: list(ps) for g, ps in msg.groups}
                for g in set(old) | set(peer.groups):
                    gone = [p for p in old.get(g, ()) if p not in peer.groups.get(g, ())]
                    new = [p for p in peer.groups.get(g, ()) if p not in old.get(g, ())]
                    _notify(st, Leave, g, gone)
                    _notify(st, Join, g, new)
        elif cls is PeerJoin:
            peer = st.peers.get(msg.scope.node)
            if peer is not None and peer.scope == msg.scope:
                peer.groups.setdefault(msg.group, []).extend(msg.pids)
                _notify(st, Join, msg.group, msg.pids)
        elif cls is PeerLeave:
            peer = st.peers.get(msg.scope.node)
            if peer is not None and peer.scope == msg.scope:
                for g in msg.groups:
                    _drop(peer.groups, g, msg.pids)
                    _notify(st, Leave, g, msg.pids)
        elif cls is NodeUp:
            _discover(st)
        elif cls is NodeDown:
            st.asked.discard(msg.node)
        return NoReply(st)


def otpy_nodes() -> set[str]:
    """The connected nodes that are otpy nodes (BEAM nodes run no otpy scopes: their
    own ``pg`` would not understand ours)."""
    from otp.dist import _net_kernel

    try:
        conns = _net_kernel.state().conns
    except NodeError:
        return set()
    return {peer for peer, c in list(conns.items()) if c.up and c.otpy}


def watch_nodes() -> None:
    """Subscribe the calling server to node-up events (``otp.dist.monitor_nodes``):
    they say when another node connects, also on a node that becomes distributed
    later. (``global_names`` uses it too.)"""
    from otp.dist import monitor_nodes

    monitor_nodes(True)


def discover(server: str, asked: set[str], known: Any, hello: Any) -> None:
    """Send ``hello`` to ``server`` on every connected otpy node that is neither
    ``known`` nor ``asked`` yet (and remember it in ``asked``); nodes gone are
    forgotten from ``asked``."""
    up = otpy_nodes()
    asked.intersection_update(up)
    for n in up:
        if n not in known and n not in asked:
            asked.add(n)
            send((server, n), hello)


def _discover(st: _State) -> None:
    discover(st.name, st.asked, st.peers, Discover(_me()))


def _learn(st: _State, scope: Any) -> _Peer | None:
    if not isinstance(scope, Pid) or scope.node == node():
        return None
    peer = st.peers.get(scope.node)
    if peer is not None and peer.scope == scope:
        return peer
    if peer is not None:  # the node's scope was restarted: forget the old one
        _forget(st, scope.node)
    peer = _Peer(scope, monitor(scope))
    st.peers[scope.node] = peer
    st.asked.discard(scope.node)
    # ask for its memberships and give ours (it may still believe it knows this node)
    send(scope, Discover(_me()))
    send(scope, Sync(_me(), _local_sync(st)))
    return peer


def _forget(st: _State, peer_node: str) -> None:
    peer = st.peers.pop(peer_node)
    demonitor(peer.ref, flush=True)
    for g, ps in peer.groups.items():
        _notify(st, Leave, g, ps)


def _local_sync(st: _State) -> tuple[tuple[Any, tuple[Pid, ...]], ...]:
    return tuple((g, tuple(ps)) for g, ps in st.local.items())


def _broadcast(st: _State, msg: Any) -> None:
    for peer in st.peers.values():
        send(peer.scope, msg)


def _notify(st: _State, cls: Any, group: Any, pids: Any) -> None:
    if pids:
        for ref, sub in st.subs.items():
            send(sub, cls(ref, group, tuple(pids)))


def _drop(groups: dict[Any, list[Pid]], group: Any, pids: Any) -> None:
    ps = groups.get(group)
    if ps is None:
        return
    for p in pids:
        if p in ps:
            ps.remove(p)
    if not ps:
        del groups[group]


def _join(st: _State, group: Any, pids: tuple[Pid, ...]) -> bool:
    for p in pids:
        entry = st.members.get(p)
        if entry is None:
            entry = (monitor(p), [])
            st.members[p] = entry
        entry[1].append(group)
    st.local.setdefault(group, []).extend(pids)
    _broadcast(st, PeerJoin(_me(), group, pids))
    _notify(st, Join, group, pids)
    return True


def _leave(st: _State, group: Any, pids: tuple[Pid, ...]) -> bool:
    left = [p for p in pids if p in st.members and group in st.members[p][1]]
    if not left:
        return False
    for p in left:
        ref, groups = st.members[p]
        groups.remove(group)
        if not groups:
            demonitor(ref, flush=True)
            del st.members[p]
    _drop(st.local, group, left)
    _broadcast(st, PeerLeave(_me(), (group,), tuple(left)))
    _notify(st, Leave, group, left)
    return True


def _down(st: _State, d: Down) -> None:
    if d.ref in st.subs:
        del st.subs[d.ref]
        return
    target = d.pid
    if isinstance(target, Pid) and target in st.members and st.members[target][0] == d.ref:
        _, groups = st.members.pop(target)
        for g in dict.fromkeys(groups):
            times = groups.count(g)
            _drop(st.local, g, [target] * times)
            _notify(st, Leave, g, [target] * times)
        _broadcast(st, PeerLeave(_me(), tuple(groups), (target,)))
        return
    for n, peer in list(st.peers.items()):
        if peer.ref == d.ref:
            _forget(st, n)
            return


def _members(st: _State, group: Any) -> list[Pid]:
    out = list(st.local.get(group, ()))
    for peer in st.peers.values():
        out.extend(peer.groups.get(group, ()))
    return out


def _all_groups(st: _State) -> dict[Any, None]:
    out = dict.fromkeys(st.local)
    for peer in st.peers.values():
        out.update(dict.fromkeys(peer.groups))
    return out


# --- API ----------------------------------------------------------------------------


def start_scope(scope: str = DEFAULT_SCOPE) -> Pid:
    """Start the scope server registered as ``scope`` (not linked) unless it runs;
    returns its pid."""
    pid = whereis(scope)
    if pid is not None:
        return pid
    started = gen_server.start(_Scope, scope, name=scope)
    assert started is not None
    return started


def _call(scope: str, request: Any) -> Any:
    return gen_server.call(scope, request, None)


def join(group: Any, pids: Pid | list[Pid], *, scope: str = DEFAULT_SCOPE) -> None:
    """Make ``pids`` (local processes: one or a list) members of ``group``."""
    _call(scope, ("join", group, _pids(pids)))


def leave(group: Any, pids: Pid | list[Pid], *, scope: str = DEFAULT_SCOPE) -> bool:
    """Take ``pids`` out of ``group`` once each; False if none of them was in it."""
    return bool(_call(scope, ("leave", group, _pids(pids))))


def get_members(group: Any, *, scope: str = DEFAULT_SCOPE) -> list[Pid]:
    """Every member of ``group``, on this node and on the connected ones (a process
    that joined twice is listed twice)."""
    return list(_call(scope, ("members", group)))


def get_local_members(group: Any, *, scope: str = DEFAULT_SCOPE) -> list[Pid]:
    """The members of ``group`` that run on this node."""
    return list(_call(scope, ("local", group)))


def which_groups(*, scope: str = DEFAULT_SCOPE) -> list[Any]:
    """The groups with at least one member, here or on a connected node."""
    return list(_call(scope, ("groups",)))


def monitor_scope(*, scope: str = DEFAULT_SCOPE) -> tuple[Ref, dict[Any, list[Pid]]]:
    """Subscribe the calling process to the scope's changes: returns ``(ref, groups)``
    (group -> members now); ``Join(ref, group, pids)`` and ``Leave(ref, group, pids)``
    messages follow, in order, for every change after that."""
    ref, groups = _call(scope, ("monitor", _me()))
    return ref, groups


def demonitor_scope(ref: Ref, *, scope: str = DEFAULT_SCOPE) -> None:
    """Stop the ``Join``/``Leave`` messages of a ``monitor_scope`` subscription."""
    _call(scope, ("demonitor", ref))
