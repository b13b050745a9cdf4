"""The kernel's side of distribution: signals to and from processes of other nodes.

A node that is not distributed has ``node.dist is None`` and pays nothing for this
module: every send, link, monitor and exit signal takes its local path, and only when
that path finds no local process (a pid whose ``node`` is another node's name, a
``(name, node)`` pair, an alias of another node) does it come here.

Two halves:

- **Out**: ``send``/``link``/``unlink``/``exit``/``monitor``/``demonitor`` aimed at
  another node go to the node's ``DistHook`` (``node.dist``), which the distribution
  layer (``otp.dist``) sets; the kernel keeps the bookkeeping (which local process is
  linked to which remote pid, which monitors cross) in ``Remote`` (``node.remote``).
- **In**: ``otp.dist._control`` turns incoming control messages into calls of
  ``Remote``'s ``incoming_*`` methods, which deliver into local mailboxes synchronously
  (the connection's one reader calls them in order: between two processes, messages
  and signals arrive in the order sent, P10).

Failure semantics (Erlang's): a send to a node that cannot be reached is dropped; a
link or monitor across a connection that drops (or cannot be made) fires with reason
``"noconnection"``; node monitors get ``NodeDown(node)``. With no distribution at all,
``link`` to a remote pid gives the caller the ``noconnection`` exit signal at once,
``monitor`` a ``Down(..., "noconnection")`` at once, ``monitor_node`` a ``NodeDown``
at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from otp._core.values import Down, Exit, Pid, Ref
from otp.errors import BadArg

if TYPE_CHECKING:
    from otp._core.node import Node, Process

NOCONNECTION = "noconnection"


# How an exit reason or a registered name crosses (the distribution layer makes a str an
# atom: see set_reason_to_wire); the identity until it is loaded.
def _identity(x: Any) -> Any:
    return x


_to_wire: Callable[[Any], Any] = _identity


_msg_to_wire: Callable[[Any], Any] = _identity


def set_reason_to_wire(
    fn: Callable[[Any], Any], message: Callable[[Any], Any] | None = None
) -> None:
    """Install how exit reasons and names are put on the wire, and (``message``) what
    a message sent to another node becomes first (``otp.dist`` does)."""
    global _to_wire, _msg_to_wire
    _to_wire = fn
    if message is not None:
        _msg_to_wire = message


class NodeDown(NamedTuple):
    """What ``monitor_node(node)`` delivers when the connection to ``node`` is lost
    (or cannot be made): Erlang's ``{nodedown, Node}``."""

    node: str


class DistHook(Protocol):
    """What the kernel asks of the distribution layer (``node.dist``).

    Every method is called from a process (or from the death procedure of one) and
    **never blocks**: it queues the control message behind the connection to the
    target's node, setting that connection up in the background on first use, so that
    everything one process sends to one node goes out in the order it was sent. A
    message for a node that cannot be reached is dropped; when a connection is lost, or
    an attempt to make one fails while something was queued for it, the layer calls
    ``otp.dist._control.connection_lost(node, peer)``, which fires ``noconnection`` on
    every link and monitor across and ``NodeDown`` to node monitors. ``from_pid`` is
    None when the sender is not a process.
    """

    def send(self, from_pid: Pid | None, dest: Pid, msg: Any) -> None: ...

    def reg_send(self, from_pid: Pid | None, name: str, node: str, msg: Any) -> None: ...

    def alias_send(self, from_pid: Pid | None, alias: Ref, msg: Any) -> None: ...

    def link(self, from_pid: Pid, to_pid: Pid) -> None: ...

    def unlink(self, from_pid: Pid, to_pid: Pid, unlink_id: int) -> None: ...

    def unlink_ack(self, from_pid: Pid, to_pid: Pid, unlink_id: int) -> None: ...

    def exit(self, from_pid: Pid, to_pid: Pid, reason: Any) -> None:
        """A link broke: ``from_pid`` ended with ``reason`` (control message EXIT)."""

    def exit2(self, from_pid: Pid | None, to_pid: Pid, reason: Any) -> None:
        """``exit(to_pid, reason)`` sent by ``from_pid`` (control message EXIT2)."""

    def monitor(self, from_pid: Pid, target: Pid | str, node: str, ref: Ref) -> None:
        """``target``: a pid, or a name registered on ``node``."""

    def demonitor(self, from_pid: Pid, target: Pid | str, node: str, ref: Ref) -> None: ...

    def monitor_exit(self, from_proc: Pid | str, to_pid: Pid, ref: Ref, reason: Any) -> None:
        """A monitored local process (a pid, or the name it was monitored by) ended."""

    def monitor_node(self, node: str) -> None:
        """Make sure a connection to ``node`` exists or is being made (the kernel keeps
        who monitors what; a failed attempt must end in ``connection_lost``)."""

    def nodes(self) -> list[str]:
        """The names of the nodes connected now (visible ones)."""


class _Link(NamedTuple):
    local: Process
    remote: Pid


class Remote:
    """The kernel's bookkeeping of signals that cross nodes (``node.remote``).

    - ``links``: local process -> the remote pids it is linked to;
    - ``out``: monitors local processes hold on remote ones: ref -> (watcher, target,
      target's node, ref), ``target`` as the Down will name it (a pid, or
      ``(name, node)``);
    - ``incoming``: monitors remote processes hold on local ones: ref -> (remote
      watcher, local process, what it was monitored by: pid or name);
    - ``node_monitors``: node name -> {local process: how many monitor_node calls};
    - ``aliases``: alias id -> owner pid, for the aliases a reply from another node
      may come through (see ``export_alias``).

    Each local process with any of these gets one exit hook (``Node.on_exit``) that
    signals its links and incoming monitors and drops the rest when it ends.
    """

    def __init__(self, node: Node) -> None:
        self.node = node
        self.links: dict[Process, set[Pid]] = {}
        self.out: dict[Ref, tuple[Process, Any, str, Ref]] = {}
        self.incoming: dict[Ref, tuple[Pid, Process, Any]] = {}
        self.node_monitors: dict[str, dict[Process, int]] = {}
        self.aliases: dict[int, Pid] = {}
        self._hooked: set[Process] = set()
        self._unlink_id = 0

    # --- exit hook -----------------------------------------------------------------

    def _hook(self, p: Process) -> None:
        if p not in self._hooked:
            self._hooked.add(p)
            self.node.on_exit(p, lambda: self._ended(p))

    def _ended(self, p: Process) -> None:
        """``p`` ended (run by the death procedure, before its local links fire)."""
        self._hooked.discard(p)
        dist = self.node.dist
        reason = p.reason
        pid = p.pid
        for r in self.links.pop(p, ()):
            if dist is not None:
                dist.exit(pid, r, _to_wire(reason))
        if self.incoming:
            for ref, (watcher, q, by) in list(self.incoming.items()):
                if q is p:
                    del self.incoming[ref]
                    if dist is not None:
                        dist.monitor_exit(_to_wire(by), watcher, ref, _to_wire(reason))
        if self.out:
            for ref, (q, target, tnode, _) in list(self.out.items()):
                if q is p:
                    del self.out[ref]
                    if dist is not None:
                        dist.demonitor(pid, _wire_target(target), tnode, ref)
        for watchers in self.node_monitors.values():
            watchers.pop(p, None)
        if self.aliases:
            for aid in [a for a, o in self.aliases.items() if o == pid]:
                del self.aliases[aid]

    # --- out: called by the kernel's slow paths --------------------------------------

    def send(self, sender: Pid | None, dest: Pid, msg: Any) -> None:
        dist = self.node.dist
        if dist is not None:
            dist.send(sender, dest, _msg_to_wire(msg))

    def reg_send(self, sender: Pid | None, name: str, node: str, msg: Any) -> None:
        dist = self.node.dist
        if dist is not None:
            dist.reg_send(sender, _to_wire(name), node, _msg_to_wire(msg))

    def alias_send(self, sender: Pid | None, alias: Ref, msg: Any) -> None:
        dist = self.node.dist
        if dist is not None:
            dist.alias_send(sender, alias, msg)

    def link(self, p: Process, dest: Pid) -> None:
        dist = self.node.dist
        if dist is None:
            self._noconnection(p, dest)
            return
        linked = self.links.get(p)
        if linked is None:
            self.links[p] = {dest}
        elif dest in linked:
            return
        else:
            linked.add(dest)
        self._hook(p)
        dist.link(p.pid, dest)

    def unlink(self, p: Process, dest: Pid) -> None:
        linked = self.links.get(p)
        if linked is None or dest not in linked:
            return
        linked.discard(dest)
        if not linked:
            del self.links[p]
        dist = self.node.dist
        if dist is not None:
            self._unlink_id += 1
            dist.unlink(p.pid, dest, self._unlink_id)

    def exit2(self, sender: Process | None, dest: Pid, reason: Any) -> None:
        dist = self.node.dist
        if dist is not None:
            dist.exit2(sender.pid if sender is not None else None, dest, _to_wire(reason))

    def monitor(self, p: Process, target: Any, ref: Ref) -> None:
        """``target``: a remote Pid, or ``(name, node)`` with another node's name."""
        if target.__class__ is Pid:
            tnode, wire = target.node, target
        else:
            tnode, wire = target[1], _to_wire(target[0])
        dist = self.node.dist
        if dist is None:
            self.node.deliver(p, Down(ref, target, NOCONNECTION))
            return
        self.out[ref] = (p, target, tnode, ref)
        self._hook(p)
        dist.monitor(p.pid, wire, tnode, ref)

    def demonitor(self, p: Process, ref: Ref) -> bool:
        entry = self.out.get(ref)
        if entry is None or entry[0] is not p:
            return False
        del self.out[ref]
        dist = self.node.dist
        if dist is not None:
            dist.demonitor(p.pid, _wire_target(entry[1]), entry[2], ref)
        return True

    def monitor_node(self, p: Process, node: str, flag: bool) -> None:
        if not isinstance(node, str) or "@" not in node:
            raise BadArg(f"monitor_node expects a node name 'name@host', got {node!r}")
        if not flag:
            watchers = self.node_monitors.get(node)
            if watchers is not None:
                watchers.pop(p, None)
                if not watchers:
                    del self.node_monitors[node]
            return
        dist = self.node.dist
        if node == self.node.name:
            if dist is None:  # Erlang: a node that is not alive sees itself go down
                self.node.deliver(p, NodeDown(node))
            return
        if dist is None:
            self.node.deliver(p, NodeDown(node))
            return
        watchers = self.node_monitors.setdefault(node, {})
        watchers[p] = watchers.get(p, 0) + 1
        self._hook(p)
        dist.monitor_node(node)

    def export_alias(self, owner: Process, alias: Ref) -> None:
        """Let an alias of local process ``owner`` be reached from other nodes
        (ALIAS_SEND names only the alias: the kernel needs its owner). Forgotten when
        a message through it ends it, or when ``owner`` ends."""
        self.aliases[alias.id] = owner.pid
        self._hook(owner)

    # --- helpers -----------------------------------------------------------------------

    def _noconnection(self, p: Process, dest: Pid) -> None:
        # The exit signal a link to an unreachable node gives (P14).
        if p.trap_exit:
            self.node.deliver(p, Exit(dest, NOCONNECTION))
        else:
            self.node.exit_process(p, NOCONNECTION)

    def _local(self, pid: Any) -> Process | None:
        if pid.__class__ is not Pid:
            return None
        return self.node.lookup(pid)

    # --- in: called by otp.dist._control, in the connection's reader --------------------

    def incoming_send(self, dest: Any, msg: Any) -> None:
        """SEND/SEND_SENDER/REG_SEND: deliver, or drop (a dead pid, a free name)."""
        node = self.node
        p = node.names.get(dest) if isinstance(dest, str) else self._local(dest)
        if p is not None and not p.dead:
            node.deliver(p, msg)

    def incoming_alias_send(self, alias: Any, msg: Any) -> None:
        """ALIAS_SEND: through the alias if it is active, else dropped (P18)."""
        if alias.__class__ is not Ref or alias.node != self.node.name:
            return
        owner = alias.owner
        if owner is None:
            owner = self.aliases.get(alias.id)
        if owner is None:
            # An alias that was sent out inside a message (not through export_alias):
            # find its owner.
            for p in self.node.procs.values():
                if p.aliases and alias.id in p.aliases:
                    owner = p.pid
                    break
            else:
                return
        q = self.node.lookup(owner)
        if q is not None and q.aliases is not None:
            mode = q.aliases.get(alias.id)
            if mode is not None and mode & 1:  # a reply alias: its message ends it
                self.aliases.pop(alias.id, None)
        self.node.send_alias(owner, alias.id, msg, check=False)

    def incoming_link(self, sender: Pid, dest: Any) -> None:
        """LINK: link ``dest`` (local) to ``sender``; a missing ``dest`` answers with
        an EXIT ``noproc``."""
        p = self._local(dest)
        dist = self.node.dist
        if p is None or p.dead:
            if dist is not None and dest.__class__ is Pid:
                dist.exit(dest, sender, _to_wire("noproc"))
            return
        self.links.setdefault(p, set()).add(sender)
        self._hook(p)

    def incoming_unlink(self, uid: int, sender: Pid, dest: Any) -> None:
        """UNLINK_ID: drop the link and acknowledge (OTP 23's unlink protocol)."""
        p = self._local(dest)
        if p is not None:
            linked = self.links.get(p)
            if linked is not None:
                linked.discard(sender)
                if not linked:
                    del self.links[p]
        dist = self.node.dist
        if dist is not None and dest.__class__ is Pid:
            dist.unlink_ack(dest, sender, uid)

    def incoming_exit(self, sender: Pid, dest: Any, reason: Any) -> None:
        """EXIT: the remote end of a link ended with ``reason``."""
        p = self._local(dest)
        if p is None:
            return
        linked = self.links.get(p)
        if linked is None or sender not in linked:
            return  # not linked (any more): Erlang drops it too
        linked.discard(sender)
        if not linked:
            del self.links[p]
        self._signal(p, sender, reason, link=True)

    def incoming_exit2(self, sender: Any, dest: Any, reason: Any) -> None:
        """EXIT2: ``exit(dest, reason)`` from a remote process."""
        p = self._local(dest)
        if p is None:
            return
        self._signal(p, sender, reason, link=False)

    def _signal(self, p: Process, sender: Any, reason: Any, *, link: bool) -> None:
        node = self.node
        if not link and reason.__class__ is str and reason == "kill":
            node.exit_process(p, "killed")
        elif p.trap_exit:
            node.deliver(p, Exit(sender, reason))
        elif not (reason.__class__ is str and reason == "normal"):
            node.exit_process(p, reason)

    def incoming_monitor(self, watcher: Pid, target: Any, ref: Ref) -> None:
        """MONITOR_P: a remote process monitors a local pid or registered name."""
        node = self.node
        if isinstance(target, str):
            p = node.names.get(target)
        else:
            p = self._local(target)
        if p is None or p.dead:
            dist = node.dist
            if dist is not None:
                dist.monitor_exit(_to_wire(target), watcher, ref, _to_wire("noproc"))
            return
        self.incoming[ref] = (watcher, p, target)
        self._hook(p)

    def incoming_demonitor(self, ref: Ref) -> None:
        self.incoming.pop(ref, None)

    def incoming_monitor_exit(self, ref: Ref, reason: Any) -> None:
        """MONITOR_P_EXIT: a remote process this node monitors ended."""
        entry = self.out.pop(ref, None)
        if entry is None:
            return  # demonitored meanwhile
        p, target, _, mine = entry
        # The Down carries the very Ref monitor() returned (receivers may match it by
        # identity), not the equal one decoded from the wire.
        self.node.deliver(p, Down(mine, target, reason))

    def connection_lost(self, peer: str) -> None:
        """Every link and monitor across to ``peer`` fires ``noconnection``; its node
        monitors get ``NodeDown(peer)``; monitors ``peer``'s processes held here go."""
        for p, linked in list(self.links.items()):
            gone = [r for r in linked if r.node == peer]
            if not gone:
                continue
            linked.difference_update(gone)
            if not linked:
                del self.links[p]
            for r in gone:
                if not p.dead:
                    self._signal(p, r, NOCONNECTION, link=True)
        for ref, (p, target, tnode, _) in list(self.out.items()):
            if tnode == peer:
                del self.out[ref]
                self.node.deliver(p, Down(ref, target, NOCONNECTION))
        for ref, (watcher, _q, _by) in list(self.incoming.items()):
            if watcher.node == peer:
                del self.incoming[ref]
        for p, n in self.node_monitors.pop(peer, {}).items():
            for _ in range(n):
                self.node.deliver(p, NodeDown(peer))


def _wire_target(target: Any) -> Any:
    return target if target.__class__ is Pid else _to_wire(target[0])


def remote(node: Node) -> Remote:
    """The node's ``Remote`` bookkeeping, made on first use."""
    r = node.remote
    if r is None:
        r = node.remote = Remote(node)
    return r


def check_name_node(dest: Any, what: str) -> tuple[str, str]:
    """Check a ``(name, node)`` pair (Erlang's ``{Name, Node}``)."""
    if (
        len(dest) != 2
        or not isinstance(dest[0], str)
        or not dest[0]
        or not isinstance(dest[1], str)
        or "@" not in dest[1]
    ):
        raise BadArg(
            f"{what} expects a Pid, a name, or (name, node) with node 'name@host', got {dest!r}"
        )
    return dest
