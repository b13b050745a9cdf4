"""A node's distribution: start/stop, the listener, the ``net_kernel`` process, and the
kernel's hook (``node.dist``) that turns signals to other nodes into control messages.

``otp.dist`` presents the public functions; see its docstring.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import socket
import ssl
from typing import Any

from otp.dist import _conn, _epmd
from otp.dist._conn import Connection, ConnResult, DistState, connection
from otp.dist._cookie import resolve_cookie
from otp.dist._etf_types import Atom
from otp.errors import BadArg, NodeError, NotInProcess
from typing import NamedTuple

from otp.lowlevel import Node, NodeDown, NodeVar, Process, current_node, getcurrent
from otp.lowlevel import on_exit as _on_exit
from otp.process import Pid, Ref, make_ref, receive, register, spawn
from otp.process import exit as exit_process

__all__ = [
    "DistHookImpl",
    "NodeUp",
    "fallback_dispatch",
    "monitor_nodes",
    "start",
    "state",
    "stop",
]

log = logging.getLogger("otp.dist")

STATE: NodeVar[_Started | None] = NodeVar("otp.dist", default=None)

_EMPTY = Atom("")
SEND, REG_SEND, LINK, EXIT, UNLINK, EXIT2 = 2, 6, 1, 3, 4, 8
MONITOR_P, DEMONITOR_P, MONITOR_P_EXIT = 19, 20, 21
ALIAS_SEND, UNLINK_ID, UNLINK_ID_ACK = 33, 35, 36
_DFLAG_ALIAS = 1 << 35
_DFLAG_UNLINK_ID = 0x2000000


class NodeUp(NamedTuple):
    """What ``monitor_nodes`` delivers when a connection to ``node`` comes up: Erlang's
    ``{nodeup, Node}`` (``NodeDown(node)`` when it goes)."""

    node: str


# The processes that called monitor_nodes(True): process -> how many times (each
# subscription gets its own copy of every event, as in Erlang).
_NODE_WATCHERS: NodeVar[dict[Process, int]] = NodeVar("otp.dist.node_watchers", factory=dict)


def monitor_nodes(flag: bool = True) -> None:
    """Subscribe the calling process to node status changes (Erlang's
    ``net_kernel:monitor_nodes``): ``NodeUp(node)`` when a connection to another node
    is set up, ``NodeDown(node)`` when one that was up is lost. Calling it ``n`` times
    gives ``n`` messages per event; ``flag=False`` ends every subscription of the
    caller. Works before ``start`` too: events flow once the node is distributed.
    A subscription ends with its process."""
    me = _me("otp.dist.monitor_nodes")
    watchers = _NODE_WATCHERS.get()
    if not flag:
        watchers.pop(me, None)
        return
    if me not in watchers:
        watchers[me] = 0

        def gone(p: Process = me, w: dict[Process, int] = watchers) -> None:
            w.pop(p, None)

        _on_exit(me, gone)
    watchers[me] += 1


def _node_event(node: Node, what: str, peer: str) -> None:
    if what == "up":
        msg: Any = NodeUp(peer)
    elif what == "down":
        msg = NodeDown(peer)
    else:
        return  # an attempt that failed: the node was never up
    try:
        watchers = _NODE_WATCHERS.get()
    except Exception:  # not inside the node any more (it is stopping)
        return
    for p, n in list(watchers.items()):
        if not p.dead:
            for _ in range(n):
                node.deliver(p, msg)


class _Started:
    """Everything ``start`` made, for ``stop`` to undo."""

    def __init__(self, st: DistState) -> None:
        self.st = st
        self.listener: socket.socket | None = None
        self.registration: _epmd.Registration | None = None
        self.name_server: _epmd.NameServer | None = None
        self.procs: list[Pid] = []
        self.net_kernel: Pid | None = None
        self.old_name: str = st.node.name
        self.busy_wait_before = 0.0


def state() -> DistState:
    """The running node's distribution state; ``NodeError`` when it is not distributed."""
    s = STATE.get()
    if s is None:
        raise NodeError("this node is not distributed: call otp.dist.start(name) first")
    return s.st


def _me(what: str) -> Process:
    p = getcurrent()
    if p.__class__ is not Process:
        raise NotInProcess(f"{what} must be called inside a process")
    return p


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _full_name(name: str) -> str:
    if not isinstance(name, str) or not name:
        raise BadArg(f"otp.dist.start expects a node name 'name' or 'name@host', got {name!r}")
    if "@" in name:
        alive, _, host = name.partition("@")
        if not alive or not host or "@" in host:
            raise BadArg(f"otp.dist.start expects a node name 'name@host', got {name!r}")
        return name
    return f"{name}@{socket.gethostname().split('.')[0]}"


def start(
    name: str,
    *,
    cookie: str | None = None,
    cookie_file: str | None = None,
    tls: tuple[ssl.SSLContext, ssl.SSLContext] | None = None,
    hidden: bool = False,
    listen: str = "127.0.0.1",
    epmd_port: int | None = None,
    net_ticktime: float = 60.0,
    insecure: bool = False,
    max_packet: int = 64 * 1024 * 1024,
    busy_wait: float = 0.0002,
) -> str:
    """Make the running node distributed as ``name`` (``"name@host"``, or ``"name"``:
    then the host is this machine's short hostname); returns the full name.

    Listens on ``listen`` (a free port), registers with EPMD (``epmd_port``, else
    ``ERL_EPMD_PORT``, else 4369; when none answers, this node serves the names
    itself), and starts the ``net_kernel`` process. ``cookie`` (else ``cookie_file``,
    else ``~/.erlang.cookie``) authenticates peers. ``net_ticktime``: a peer silent
    that long is declared down. ``max_packet``: the largest packet sent or accepted
    (bytes). ``tls``: (server context, client context) for TLS distribution between
    otpy nodes. A non-loopback ``listen`` needs ``tls`` or ``insecure=True``.
    ``busy_wait``: seconds the node keeps polling its sockets after its last runnable
    process blocked, before it sleeps (Erlang's schedulers busy-wait too, ``+sbwt``):
    a message from another node is then read without the OS waking a sleeping thread,
    which on an idle host costs more than the whole round trip. It burns at most that
    much CPU after each burst of work; 0 turns it off (do so on a host whose cores are
    shared with other busy programs, where the spinning takes their CPU).

    The node takes the name: processes spawned from now on carry it in their pids.
    Raises ``NodeError`` when already distributed, ``BadArg`` on a bad argument,
    ``EpmdError`` when the name is taken.
    """
    me = _me("otp.dist.start")
    node = current_node()
    if STATE.get() is not None:
        raise NodeError(f"this node is already distributed as {state().name}")
    full = _full_name(name)
    if tls is None and not _is_loopback(listen) and not insecure:
        raise BadArg(
            f"otp.dist.start: listening on {listen} (not loopback) without TLS would let "
            "anyone on the network who learns the cookie run the node's protocol; pass "
            "tls=(server_context, client_context), or insecure=True to do it anyway"
        )
    if not isinstance(net_ticktime, int | float) or net_ticktime <= 0:
        raise BadArg(f"otp.dist.start expects net_ticktime > 0 (seconds), got {net_ticktime!r}")
    if (isinstance(busy_wait, bool) or not isinstance(busy_wait, int | float)
            or not 0 <= busy_wait <= 0.1):
        raise BadArg(f"otp.dist.start expects busy_wait in [0, 0.1] seconds, got {busy_wait!r}")
    the_cookie = resolve_cookie(cookie, cookie_file)
    st = DistState(
        node=node,
        name=full,
        cookie=the_cookie,
        creation=0,
        hidden=hidden,
        listen=listen,
        epmd_port=_epmd.resolve_port(epmd_port),
        net_ticktime=float(net_ticktime),
        max_packet=max_packet,
    )
    if tls is not None:
        st.tls_server, st.tls_client = tls
    st.observers.append(lambda what, peer: _node_event(node, what, peer))
    started = _Started(st)
    try:
        lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        started.listener = lsock
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsock.bind((listen, 0))
        lsock.listen(128)
        st.port = lsock.getsockname()[1]
        alive = full.partition("@")[0]
        started.registration = _register(started, alive)
        st.creation = started.registration.creation or (secrets.randbits(32) or 1)
    except BaseException:
        _undo(started)
        raise
    if node.name != full:
        # Pids made before keep the name they were made with (only the processes
        # started from now on carry the distributed name).
        node.name = full
    STATE.set(started)
    started.procs.append(spawn(_accept_loop, started))
    nk = spawn(_net_kernel_loop)
    register("net_kernel", nk)
    started.net_kernel = nk
    started.procs.append(nk)
    node.dist = DistHookImpl(st)
    started.busy_wait_before = node.busy_wait
    node.busy_wait = float(busy_wait)
    log.info(
        "distribution started: %s listening on %s:%d (EPMD port %d)",
        full,
        listen,
        st.port,
        st.epmd_port,
    )
    del me
    return full


def _register(started: _Started, alive: str) -> _epmd.Registration:
    st = started.st
    try:
        return _epmd.register(alive, st.port, epmd_port=st.epmd_port, hidden=st.hidden)
    except _epmd.EpmdError as first:
        if "no EPMD answers" not in str(first):
            raise
    # No EPMD on this host: serve the names ourselves, as erl starts epmd.
    try:
        started.name_server = _epmd.NameServer.start("127.0.0.1", st.epmd_port)
        log.info("no EPMD on port %d: this node serves the names itself", st.epmd_port)
    except OSError:
        pass  # someone else started one meanwhile: use it
    return _epmd.register(alive, st.port, epmd_port=st.epmd_port, hidden=st.hidden)


def _undo(started: _Started) -> None:
    st = started.st
    st.stopped = True
    for conn in list(st.conns.values()):
        conn.close("distribution stopped")
    if started.listener is not None:
        try:
            started.listener.close()
        except OSError:
            pass
    if started.registration is not None:
        started.registration.close()
    if started.name_server is not None:
        started.name_server.stop()
    me = getcurrent()
    for pid in started.procs:
        if getattr(me, "pid", None) != pid:
            exit_process(pid, "kill")


def stop() -> None:
    """Stop the distribution: close every connection (their links and monitors fire
    ``noconnection``), unregister from EPMD, stop the listener and ``net_kernel``.
    Does nothing when the node is not distributed."""
    _me("otp.dist.stop")
    started = STATE.get()
    if started is None:
        return
    STATE.set(None)
    node = started.st.node
    node.dist = None
    _undo(started)
    node.name = started.old_name
    node.busy_wait = started.busy_wait_before


def _accept_loop(started: _Started) -> None:
    st = started.st
    lsock = started.listener
    assert lsock is not None
    while not st.stopped:
        try:
            sock, _addr = lsock.accept()
        except OSError as e:
            if st.stopped:
                return
            log.warning("distribution listener: accept failed: %s", e)
            continue
        spawn(_conn.accepted, st, sock)


# --- connect / ping ---------------------------------------------------------------------


def _wait_up(conn: Connection) -> bool:
    if conn.up:
        return True
    if conn.closed:
        return False
    me = _me("otp.dist.connect")
    conn.waiters.append(me)
    peer = conn.peer
    got = receive(
        lambda m: m.__class__ is ConnResult and m.peer == peer,
        timeout=conn.state.setup_time * 2 + 1,
        default=None,
    )
    if me in conn.waiters:
        conn.waiters.remove(me)
    return bool(got is not None and got.ok)


def connect(node: str) -> bool:
    """Make sure a connection to ``node`` is up (Erlang's ``net_kernel:connect_node``):
    True when it is, False when it cannot be made (no such node, wrong cookie, ...)."""
    st = state()
    if node == st.name:
        return True
    _check_node_name(node)
    return _wait_up(connection(st, node))


def _check_node_name(node: Any) -> None:
    if not isinstance(node, str) or "@" not in node:
        raise BadArg(f"expected a node name 'name@host', got {node!r}")


def ping(node: str) -> str:
    """``"pong"`` when ``node`` answers (as ``net_adm:ping``: a call to its
    ``net_kernel``, ``{is_auth, ThisNode}``), else ``"pang"``."""
    st = state()
    if node == st.name:
        return "pong"
    _check_node_name(node)
    conn = connection(st, node)
    if not _wait_up(conn):
        return "pang"
    me = _me("otp.dist.ping")
    ref = make_ref()
    conn.waiters.append(me)  # a failed ConnResult if the connection drops meanwhile
    conn.send_control(
        (REG_SEND, me.pid, _EMPTY, Atom("net_kernel")),
        (Atom("$gen_call"), (me.pid, ref), (Atom("is_auth"), Atom(st.name))),
    )
    got = receive(
        lambda m: (
            (m.__class__ is tuple and len(m) == 2 and m[0] == ref)
            or (m.__class__ is ConnResult and m.peer == node)
        ),
        timeout=st.net_ticktime,
        default=None,
    )
    if me in conn.waiters:
        conn.waiters.remove(me)
    return "pong" if got.__class__ is tuple and got[1] == "yes" else "pang"


def nodes() -> list[str]:
    """The nodes connected now (sorted names)."""
    started = STATE.get()
    if started is None:
        return []
    return sorted(peer for peer, c in started.st.conns.items() if c.up)


def disconnect(node: str) -> bool:
    """Close the connection to ``node``; False when there was none."""
    st = state()
    conn = st.conns.get(node)
    if conn is None or not conn.up:
        return False
    conn.close("disconnected")
    return True


# --- net_kernel: the process other nodes' net_adm:ping calls ---------------------------


def _net_kernel_loop() -> None:
    """Answers ``gen_server:call(net_kernel, {is_auth, Node})`` with ``yes`` (what
    ``net_adm:ping`` asks); anything else is logged and dropped."""
    while True:
        msg = receive()
        match msg:
            case ("$gen_call", (from_pid, tag), ("is_auth", _node)) if from_pid.__class__ is Pid:
                _reply(from_pid, tag, Atom("yes"))
            case ("$gen_call", (from_pid, tag), _req) if from_pid.__class__ is Pid:
                _reply(from_pid, tag, Atom("not_implemented"))
            case _:
                log.info("net_kernel: dropped %r", msg)


def _reply(to: Pid, tag: Any, value: Any) -> None:
    started = STATE.get()
    if started is None:
        return
    st = started.st
    if to.node == st.name:
        p = st.node.lookup(to)
        if p is not None:
            st.node.deliver(p, (tag, value))
        return
    connection(st, to.node).send_control((SEND, _EMPTY, to), (tag, value))


def fallback_dispatch(
    node: Node, conn: Any, ctrl: tuple[Any, ...], payload: Any = _conn.NO_PAYLOAD
) -> None:
    """Delivers SEND and REG_SEND payloads to local processes; drops the rest. Used
    only when the kernel's control module is absent."""
    op = ctrl[0]
    if op == SEND and len(ctrl) == 3 and ctrl[2].__class__ is Pid:
        p = node.lookup(ctrl[2])
    elif op == REG_SEND and len(ctrl) == 4 and isinstance(ctrl[3], str):
        p = node.names.get(str.__str__(ctrl[3]))
    else:
        return
    if p is not None and payload is not _conn.NO_PAYLOAD:
        node.deliver(p, payload)


# --- the kernel's hook: signals to other nodes as control messages ---------------------


def _wire(reason: Any) -> Any:
    if reason.__class__ is str and len(reason) <= 255:
        return Atom(reason)
    return reason


class DistHookImpl:
    """``node.dist``: what the kernel calls to signal processes of other nodes (never
    blocks: the message is queued on the connection, made on first use)."""

    def __init__(self, st: DistState) -> None:
        self.st = st

    def _conn(self, node: str) -> Connection:
        return connection(self.st, node)

    def _from(self, from_pid: Pid | None) -> Pid:
        if from_pid is not None:
            return from_pid
        started = STATE.get()
        nk = started.net_kernel if started is not None else None
        return nk if nk is not None else Pid(self.st.name, 0, 0)

    def send(self, from_pid: Pid | None, dest: Pid, msg: Any) -> None:
        conn = self.st.conns.get(dest.node) or connection(self.st, dest.node)
        conn.send_control((SEND, _EMPTY, dest), msg)

    def reg_send(self, from_pid: Pid | None, name: str, node: str, msg: Any) -> None:
        to = name if name.__class__ is Atom else Atom(name)
        conn = self.st.conns.get(node) or connection(self.st, node)
        sender = from_pid if from_pid is not None else self._from(None)
        conn.send_control((REG_SEND, sender, _EMPTY, to), msg)

    def alias_send(self, from_pid: Pid | None, alias: Ref, msg: Any) -> None:
        conn = self._conn(alias.node)
        if conn.up and not conn.flags & _DFLAG_ALIAS:
            return  # the peer has no aliases: Erlang drops such a message too
        conn.send_control((ALIAS_SEND, self._from(from_pid), alias), msg)

    def link(self, from_pid: Pid, to_pid: Pid) -> None:
        self._conn(to_pid.node).send_control((LINK, from_pid, to_pid))

    def unlink(self, from_pid: Pid, to_pid: Pid, unlink_id: int) -> None:
        conn = self._conn(to_pid.node)
        if conn.up and not conn.flags & _DFLAG_UNLINK_ID:
            conn.send_control((UNLINK, from_pid, to_pid))
        else:
            conn.send_control((UNLINK_ID, unlink_id, from_pid, to_pid))

    def unlink_ack(self, from_pid: Pid, to_pid: Pid, unlink_id: int) -> None:
        self._conn(to_pid.node).send_control((UNLINK_ID_ACK, unlink_id, from_pid, to_pid))

    def exit(self, from_pid: Pid, to_pid: Pid, reason: Any) -> None:
        self._conn(to_pid.node).send_control((EXIT, from_pid, to_pid, _wire(reason)))

    def exit2(self, from_pid: Pid | None, to_pid: Pid, reason: Any) -> None:
        self._conn(to_pid.node).send_control((EXIT2, self._from(from_pid), to_pid, _wire(reason)))

    def monitor(self, from_pid: Pid, target: Pid | str, node: str, ref: Ref) -> None:
        t = Atom(target) if isinstance(target, str) else target
        self._conn(node).send_control((MONITOR_P, from_pid, t, ref))

    def demonitor(self, from_pid: Pid, target: Pid | str, node: str, ref: Ref) -> None:
        conn = self.st.conns.get(node)
        if conn is not None and not conn.closed:
            t = Atom(target) if isinstance(target, str) else target
            conn.send_control((DEMONITOR_P, from_pid, t, ref))

    def monitor_exit(self, from_proc: Pid | str, to_pid: Pid, ref: Ref, reason: Any) -> None:
        f = Atom(from_proc) if isinstance(from_proc, str) else from_proc
        self._conn(to_pid.node).send_control((MONITOR_P_EXIT, f, to_pid, ref, _wire(reason)))

    def monitor_node(self, node: str) -> None:
        self._conn(node)

    def nodes(self) -> list[str]:
        return sorted(peer for peer, c in self.st.conns.items() if c.up)


def node() -> str:
    """This node's name (``"nonode@nohost"``-like when it is not distributed)."""
    started = STATE.get()
    return started.st.name if started is not None else current_node().name
