"""Cluster-wide names (Erlang's ``global``; the module is ``otp.global_names`` because
``global`` is a Python keyword): a name registered here is seen, and held by the same
process, on every connected otpy node (BEAM nodes' ``global`` is not joined: an otpy
node is a hidden node to them).

Every distributed node runs a name server registered as ``global_names`` (started by
``otp.dist.start``); each keeps a copy of the whole table.

>>> from otp import global_names
>>> global_names.REGISTRY.whereis_name.__doc__.split(".")[0]
'The pid registered as ``name`` in the cluster, or None'

On a distributed node (inside a process)::

    from otp import gen_server, global_names
    from otp.gen_server import Via

    global_names.register_name("db", _me())           # True: nobody held it
    global_names.whereis_name("db")                     # the same pid on every node
    global_names.send("db", "hello")
    gen_server.start_link(Cache, None, name=Via(global_names.REGISTRY, "cache"))

How the table stays consistent (no locks):

- ``register_name(name, pid)`` first records the name in this node's server (refused
  if it holds the name for another pid), then asks every connected node's server to
  record it too (each refuses a name it holds for another pid). When one refuses, the
  name is given up everywhere it was recorded and the answer is False; so two nodes
  registering one name at the same moment may both get False (try again), but never
  both True.
- The server of the node a holder runs on monitors it: when the holder ends, its name
  is dropped there and on every connected node. When a node is lost, the names held by
  its processes are dropped everywhere.
- When two otpy nodes meet (a ``NodeUp`` from ``otp.dist.monitor_nodes``), each sends the other the
  names its own processes hold. A name held by different processes on the two sides
  (registered on both while they were apart) is resolved the same way on both: the
  process on the node with the lower name keeps it; the other is killed (exit reason
  ``kill``) by its own node. This is Erlang's default resolver ``random_exit_name``
  with the random choice made deterministic, so both sides pick the same winner without
  asking each other.

Consistency: a name registered or dropped on one node reaches the others as fast as a
message does; until then a ``whereis_name`` elsewhere may still answer the old holder.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from otp import gen_server
from otp.dist import NodeDown, NodeUp, register_type
from otp.errors import BadArg
from otp.gen_server import GenServer, NoReply, Ok, Reply
from otp.pg import discover, otpy_nodes, watch_nodes
from otp.process import (
    Down,
    Pid,
    Ref,
    demonitor,
    monitor,
    node,
    whereis,
)
from otp.process import exit as exit_process
from otp.process import self as _me
from otp.process import send as send_message

__all__ = [
    "REGISTRY",
    "register_name",
    "registered_names",
    "send",
    "unregister_name",
    "whereis_name",
]

#: The name of the name server on every distributed node.
SERVER = "global_names"

#: How often a server looks for newly connected nodes, in seconds.


@register_type(name="otp.global_names.Discover")
class Discover(NamedTuple):
    server: Pid


@register_type(name="otp.global_names.Sync")
class Sync(NamedTuple):
    server: Pid
    names: tuple[tuple[Any, Pid], ...]


@register_type(name="otp.global_names.Drop")
class Drop(NamedTuple):
    name: Any
    pid: Pid


class _State:
    def __init__(self) -> None:
        self.names: dict[Any, Pid] = {}
        self.watch: dict[Pid, tuple[Ref, set[Any]]] = {}  # local holder -> (ref, names)
        self.peers: dict[str, tuple[Pid, Ref]] = {}  # node -> (its server, monitor)
        self.asked: set[str] = set()


def _record(st: _State, name: Any, pid: Pid) -> bool:
    held = st.names.get(name)
    if held is not None:
        return held == pid
    st.names[name] = pid
    if pid.node == node():
        entry = st.watch.get(pid)
        if entry is None:
            entry = (monitor(pid), set())
            st.watch[pid] = entry
        entry[1].add(name)
    return True


def _drop(st: _State, name: Any, pid: Pid) -> bool:
    if st.names.get(name) != pid:
        return False
    del st.names[name]
    entry = st.watch.get(pid)
    if entry is not None:
        entry[1].discard(name)
        if not entry[1]:
            demonitor(entry[0], flush=True)
            del st.watch[pid]
    return True


def _broadcast(st: _State, msg: Any) -> None:
    for server, _ in st.peers.values():
        send_message(server, msg)


class _Server(GenServer):
    def init(self, arg: Any) -> Ok:
        st = _State()
        watch_nodes()
        _discover(st)
        return Ok(st)

    def handle_call(self, request: Any, from_: Any, st: _State) -> Any:
        op = request[0]
        if op == "record":
            holder = request[2]
            if holder.node != node() and holder.node not in st.peers:
                # meet the holder's node now: its server will tell us when it ends
                send_message((SERVER, holder.node), Discover(_me()))
            return Reply(_record(st, request[1], holder), st)
        if op == "whereis":
            return Reply(st.names.get(request[1]), st)
        if op == "names":
            return Reply(list(st.names), st)
        if op == "unregister":
            pid = st.names.get(request[1])
            if pid is not None and _drop(st, request[1], pid):
                _broadcast(st, Drop(request[1], pid))
            return Reply(True, st)
        raise BadArg(f"global_names: unknown request {request!r}")

    def handle_cast(self, request: Any, st: _State) -> Any:
        if request.__class__ is Drop:
            _drop(st, request.name, request.pid)
        return NoReply(st)

    def handle_info(self, msg: Any, st: _State) -> Any:
        cls = msg.__class__
        if cls is Down:
            _down(st, msg)
        elif cls is Discover:
            if _learn(st, msg.server):
                send_message(msg.server, Sync(_me(), _own(st)))
        elif cls is Sync:
            if _learn(st, msg.server):
                _sync(st, msg.server.node, msg.names)
        elif cls is Drop:
            _drop(st, msg.name, msg.pid)
        elif cls is NodeUp:
            _discover(st)
        elif cls is NodeDown:
            st.asked.discard(msg.node)
        return NoReply(st)


def _own(st: _State) -> tuple[tuple[Any, Pid], ...]:
    me = node()
    return tuple((n, p) for n, p in st.names.items() if p.node == me)


def _sync(st: _State, peer_node: str, names: Any) -> None:
    # the peer is the authority on its own processes' names: what it no longer lists
    # (given up while the two had not met yet) is dropped here
    listed = set(names)
    for name, pid in list(st.names.items()):
        if pid.node == peer_node and (name, pid) not in listed:
            _drop(st, name, pid)
    for name, pid in names:
        _merge(st, name, pid)


def _merge(st: _State, name: Any, pid: Pid) -> None:
    held = st.names.get(name)
    if held is None or held == pid:
        _record(st, name, pid)
        return
    # a clash: the holder on the node with the lower name keeps it
    if (pid.node, pid.id) < (held.node, held.id):
        _drop(st, name, held)
        _record(st, name, pid)
        if held.node == node():
            exit_process(held, "kill")


def _discover(st: _State) -> None:
    discover(SERVER, st.asked, st.peers, Discover(_me()))


def _learn(st: _State, server: Any) -> bool:
    if not isinstance(server, Pid) or server.node == node():
        return False
    known = st.peers.get(server.node)
    if known is not None and known[0] == server:
        return True
    if known is not None:
        _forget(st, server.node)
    st.peers[server.node] = (server, monitor(server))
    st.asked.discard(server.node)
    # ask for its names and give ours (it may still believe it knows this node)
    send_message(server, Discover(_me()))
    send_message(server, Sync(_me(), _own(st)))
    return True


def _forget(st: _State, peer_node: str) -> None:
    _, ref = st.peers.pop(peer_node)
    demonitor(ref, flush=True)
    for name, pid in list(st.names.items()):
        if pid.node == peer_node:
            _drop(st, name, pid)


def _down(st: _State, d: Down) -> None:
    pid = d.pid
    entry = st.watch.get(pid) if isinstance(pid, Pid) else None
    if entry is not None and entry[0] == d.ref:
        for name in list(entry[1]):
            _drop(st, name, pid)
            _broadcast(st, Drop(name, pid))
        return
    for n, (_, ref) in list(st.peers.items()):
        if ref == d.ref:
            _forget(st, n)
            return


# --- API ----------------------------------------------------------------------------


def start_server() -> Pid:
    """Start the ``global_names`` server unless it runs (``otp.dist.start`` does);
    returns its pid."""
    pid = whereis(SERVER)
    if pid is not None:
        return pid
    started = gen_server.start(_Server, None, name=SERVER)
    assert started is not None
    return started


def register_name(name: Any, pid: Pid) -> bool:
    """Register ``pid`` as ``name`` on every connected node; False if some node has it
    for another process (then it is recorded nowhere)."""
    if not isinstance(pid, Pid):
        raise BadArg(f"register_name expects a Pid, got {pid!r}")
    if not gen_server.call(SERVER, ("record", name, pid), None):
        return False
    others = sorted(otpy_nodes())
    replies, _bad = gen_server.multi_call(others, SERVER, ("record", name, pid), 5.0)
    if all(ok for _, ok in replies):
        return True
    for n, ok in replies:
        if ok:
            gen_server.cast((SERVER, n), Drop(name, pid))
    gen_server.cast(SERVER, Drop(name, pid))
    return False


def unregister_name(name: Any) -> None:
    """Drop ``name`` on every connected node (nothing if nobody holds it)."""
    gen_server.call(SERVER, ("unregister", name), None)


def whereis_name(name: Any) -> Pid | None:
    """The pid registered as ``name`` in the cluster, or None."""
    pid: Pid | None = gen_server.call(SERVER, ("whereis", name), None)
    return pid


def registered_names() -> list[Any]:
    """Every name registered in the cluster, as this node knows them."""
    return list(gen_server.call(SERVER, ("names",), None))


def send(name: Any, msg: Any) -> Pid:
    """Send ``msg`` to the process registered as ``name``; returns its pid. Raises
    ``BadArg`` when nobody holds the name (Erlang's ``global:send`` exits ``badarg``)."""
    pid = whereis_name(name)
    if pid is None:
        raise BadArg(f"global_names.send: no process is registered as {name!r}")
    send_message(pid, msg)
    return pid


class _Registry:
    """The registry object for ``Via(global_names.REGISTRY, name)``."""

    def register_name(self, name: Any, pid: Pid) -> bool:
        """Register ``pid`` as ``name`` in the cluster (see ``register_name``)."""
        return register_name(name, pid)

    def unregister_name(self, name: Any) -> None:
        """Drop ``name`` in the cluster."""
        unregister_name(name)

    def whereis_name(self, name: Any) -> Pid | None:
        """The pid registered as ``name`` in the cluster, or None."""
        return whereis_name(name)

    def send(self, name: Any, msg: Any) -> Pid:
        """Send ``msg`` to the holder of ``name`` (``BadArg`` if none)."""
        return send(name, msg)

    def __repr__(self) -> str:
        return "global_names.REGISTRY"


#: Pass as ``Via(global_names.REGISTRY, name)`` to name a behaviour cluster-wide.
REGISTRY = _Registry()
