"""User processes: one per user, owning its durable outbox and inbox.

A user process (a ``GenServer`` registered as ``chat.user.<phone>``) is started on demand
under the ``chat.users`` dynamic supervisor — when its device logs in or when a message
arrives for it — and stops (``normal``) after ``idle_stop`` seconds (up to twice that)
with nothing to forward and nothing pushed but unacknowledged, even while its device
stays connected (the connection holds the name ``chat.device.<phone>``, and the next
start attaches to it): an idle connected user costs a connection, not a user process. It is
``transient``: a crash restarts it, and it reloads everything from the store, so
nothing acknowledged is lost::

    from chat import users
    pid = users.ensure("+14155550100")          # whereis, or start it under chat.users
    users.call("+14155550100", ("attach", conn_pid))   # ensure + gen_server.call

Requests (from the device's connection): ``("attach", conn)`` -> queued count,
``("send", to, cmid, body)`` -> ``("ok", mid, ts)`` | ``("error", code, message,
extra)`` (``extra``: pairs for the error frame, e.g. ``retry_after``),
``("ack", ids)`` (a call, or a cast for a device's unanswered ack),
``("read", sender, mids)`` -> ``("ok",)`` | an error as for send, ``("privacy",
hide)``, ``("limit", kind, n)`` (presence/contacts rate limits).

Message ids (``chat.mids``) are keyed hashes bound to sender, recipient and content:
``read`` is accepted only for mids the sender made for this user (C7), checked from
the mid alone; a ``cmid`` reused for another message is refused (``cmid_reused``); each
recipient a send looks up for the first time counts against the contacts limit. At
start the application starts the process of every user with an outbox (``resume``),
so that what was acknowledged goes on without its sender (C8). Between user processes:
``("chat.deliver", sender, pid, items, acked)`` and ``("chat.delivered", recipient,
upto, (mids, vfrom, vto, ts))`` (the 4- and 3-tuples of the version before are still
understood).

The message path (chat/README.md):

1. ``send`` from the sender's device: the sender's process stores the message in its
   outbox (with the next per-pair sequence number ``pseq`` and the device's ``cmid``)
   durably, replies to the device (``mid``), and forwards ``("chat.deliver", sender,
   pid, items, acked)`` to the recipient's process (``acked``: the last ``pseq`` the
   recipient acknowledged, as far as the sender knows — everything before its first
   pending item).
2. The recipient's process accepts items in ``pseq`` order only (duplicates are
   acknowledged again without storing — C2; an item after a gap is dropped and comes
   again; nothing up to ``acked`` is taken again). With its device connected (and no
   earlier "delivered" receipt for that sender still on the slower stored path), it
   pushes messages *without storing them*: the sender's outbox row is their durable
   record, and they are acknowledged only once the device acknowledged them, with
   ``("chat.delivered", recipient, upto, (mids, vfrom, vto, ts))`` naming them
   delivered (``vfrom..vto``: the whole run of such messages, so a sender process that
   restarted and missed earlier answers still makes their receipts; ``mids``: others,
   e.g. duplicates of messages the device had already acknowledged). A crash loses
   them from memory only: the sender forwards them again. If the sender forwards them
   again anyway (it waited a back-off period), or the device goes away, they are
   stored after all (and acknowledged as stored). Otherwise (no device) items are
   stored in the inbox durably, then acknowledged as stored.
3. The sender's process gives its device a ``sent`` receipt (C4), and a ``delivered``
   one for messages named delivered. Those receipts live in memory only: the outbox row
   of the message stays until the device acknowledged them (``_State.vrefs``), so
   after a crash the message is forwarded again, acknowledged again as a duplicate
   (named delivered if the recipient's device had it), and the receipts made again.
   Unacknowledged items are forwarded again with exponential back-off
   (``retry_initial`` doubling to ``retry_max``), in order, until acknowledged.
4. The inbox is streamed to the attached device (at most ``window`` unacknowledged
   items; a forward is pushed before its inbox write reaches the disk: the sender's
   outbox row is its durable record until then); the device's ``ack`` deletes items
   from the inbox (C3) and, for messages, queues a ``delivered`` receipt to the sender
   through the same outbox path; ``read`` does the same with ``read`` receipts. An
   unanswered ack (protocol version 2, a cast) instead sends ``("chat.receipts",
   recipient, pid, items)`` straight to the sender's process, which pushes them to its
   device if connected (and answers ``("chat.receipts_ok", sender, mids)`` once the
   device acknowledged them) or else stores them first; only then is the message's
   inbox row deleted (lazily): until then that row is the receipt's durable record, and
   the recipient's process resends unconfirmed receipts (all of them, in order) when
   its peer made no progress for a back-off period.

Disk writes per message on the fast path (recipient's device connected and
acknowledging): one, the sender's outbox row (before the ``send`` reply); its delete
rides along lazily. When the recipient's inbox stores it: that row too, and on the v1
path (answered acks) two more: the delete with the ``delivered`` receipt in the
recipient's outbox, and that receipt in the sender's inbox.

Ordering: between two user processes items travel in ``pseq`` order and are accepted
only in that order, so per-sender order holds through retries, crashes and restarts.

Failure semantics: a store failure crashes the process (its supervisor restarts it, and
it reloads from the store); the restarted process finds the device by its name and
streams the inbox again: what was pushed but not acknowledged is pushed again (devices
deduplicate by ``mid``, receipts by type and ``mid``). Deletes that a crash would replay
harmlessly are written lazily (with the next write, or within ``LAZY_FLUSH`` s).
"""

from __future__ import annotations

import logging
import secrets
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chat import faults, mids, store
from chat.protocol import ProtocolError
from otp import gen_server, supervisor
from otp.errors import CallError, StartError, SupervisorError
from otp.gen_server import Continue, GenServer, NoReply, Ok, Reply, Stop
from otp.node import NodeVar
from otp.process import (
    Down,
    cancel_timer,
    demonitor,
    monitor,
    send,
    send_after,
    spawn,
    whereis,
)
from otp.process import now as _now
from otp.process import self as _self
from otp.supervisor import ChildSpec

__all__ = ["SUP", "UserCtx", "call", "device_name", "ensure", "load_key", "name", "rekey",
           "resume"]

SUP = "chat.users"
# Lazy deletes are written with the next durable write, or after LAZY_FLUSH seconds, or
# once LAZY_MAX are pending (they are replayable: holding them long costs only a few
# duplicates after a crash, which the peers and devices drop).
LAZY_FLUSH = 15.0
LAZY_MAX = 256
CMID_KEEP = 1000  # device message ids remembered per user, for resends after reconnects
# A message pushed to a connected device without being stored is stored after all when
# its sender forwards it again (it waited a back-off period) and it has waited this long
# for the device's ack (seconds): a slow device delays the sender's "sent" only so long,
# while a loaded server is not made to write what its devices are about to acknowledge.
UNSTORED_MAX = 1.0
# A process does not stop idle while a rate-limit window of the hour is this much used
# (see User._quiet)
LIMIT_HOT = 0.05
log = logging.getLogger("chat.users")


@dataclass(frozen=True)
class UserCtx:
    """Settings every user process gets (immutable: it travels in the child spec)."""

    idle_stop: float = 30.0
    retry_initial: float = 0.2
    retry_max: float = 10.0
    window: int = 256
    presence_per_hour: int = 2000
    contacts_per_hour: int = 5000  # also counts the recipients a send looks up
    reads_per_hour: int = 20000  # message ids in read requests
    notify: Callable[[str, int], None] | None = None  # push gateway
    push_every: float = 60.0  # at most one push notification per user per this long


def name(phone: str) -> str:
    return "chat.user." + phone


def ensure(phone: str) -> Any:
    """The pid of ``phone``'s process, starting it under ``chat.users`` if needed."""
    pid = whereis(name(phone))
    if pid is not None:
        return pid
    ctx = _CTX.get()
    spec = ChildSpec(id=phone, start=(_start_link, (phone, ctx)), restart="transient",
                     shutdown=5.0)
    try:
        return supervisor.start_child(SUP, spec)
    except (StartError, SupervisorError) as e:
        r = getattr(e, "reason", None)
        if isinstance(r, tuple) and len(r) == 2 and r[0] == "already_started":
            return r[1]
        pid = whereis(name(phone))
        if pid is not None:
            return pid
        raise


#: The node's UserCtx, set by the application at start (the context holds a function,
#: so it cannot come from config inside a message; one chat app per node). A version of
#: this module loaded live (otp.code, a release upgrade) takes over the running
#: version's variable: while the new code runs, the package still holds the running one.
_CTX: NodeVar[UserCtx | None] = getattr(
    getattr(sys.modules.get("chat"), "users", None), "_CTX", None
) or NodeVar("chat.users.ctx", default=None)


def set_context(ctx: UserCtx) -> None:
    _CTX.set(ctx)


#: The server's key for message ids (chat.mids), read from the store at start; kept
#: across a live code reload as _CTX is.
_KEY: NodeVar[bytes | None] = getattr(
    getattr(sys.modules.get("chat"), "users", None), "_KEY", None
) or NodeVar("chat.users.key", default=None)


def load_key() -> None:
    """Start function of the application's ``keys`` child (after the store): read the
    key message ids are made with (``chat.mids``), making it on the first start. It
    lives in the store, so that ids made before a restart still check after it.
    Returns None (the supervisor keeps no process for it)."""
    row = store.read(("user", mids.SECRET_ROW))
    if row is None or not row[0]:
        store.write((("user", mids.SECRET_ROW, secrets.token_bytes(32), 0),))
        row = store.read(("user", mids.SECRET_ROW))
    _KEY.set(bytes(row[0]))


def _key() -> bytes:
    k = _KEY.get()
    if k is None:  # (user processes run without the application: a key of the run)
        k = secrets.token_bytes(32)
        _KEY.set(k)
    return k


def resume() -> None:
    """Start function of the application's ``resume`` child (after ``chat.users``):
    start the process of every user with something to forward (its outbox), so that
    what was acknowledged before a stop or crash goes on to its recipients without
    waiting for its sender to come back (docs/semantics.md C8). The processes are
    started from a process of its own: the application does not wait for them."""
    spawn(_resume)


def _resume() -> None:
    try:
        owners = store.read(("senders",))
    except store.StoreError as e:
        log.warning("cannot list the users with something to forward: %s", e)
        return
    for phone in owners:
        try:
            ensure(phone)
        except Exception as e:  # the application is stopping: they start on demand
            log.warning("cannot start %s's process to resume its outbox: %s", phone, e)
            return


def device_name(phone: str) -> str:
    """The name a logged-in connection holds (registered by the user process at login),
    so that a user process started later finds its device."""
    return "chat.device." + phone


def rekey(phone: str, key_hash: bytes, gen: int) -> None:
    """Tell ``phone``'s process (if it runs) about a new device key, and end the
    session of the old device (C5)."""
    pid = whereis(name(phone))
    if pid is not None:
        gen_server.cast(pid, ("rekey", key_hash, gen))
    dev = whereis(device_name(phone))
    if dev is not None:
        send(dev, ("chat.close", "replaced", "this number was registered on another device"))


def _start_link(phone: str, ctx: UserCtx | None) -> Any:
    return gen_server.start_link(User, (phone, ctx or UserCtx()), name=name(phone))


# ---------------------------------------------------------------------------- state


@dataclass(slots=True)
class _Peer:
    """Forwarding state towards one peer."""

    out_seq: int = 0  # last pseq assigned
    in_seq: int = 0  # last pseq accepted from the peer
    # (seq, pseq, kind, payload), in pseq order, not yet acknowledged by the peer; None
    # when there are none (most peers, most of the time: an empty deque costs 760
    # bytes, and one more object for every pass of the cyclic GC; see _pend)
    pending: deque[tuple[int, int, str, Any]] | None = None
    timer: Any = None
    backoff: float = 0.0
    token: int = 0
    progress: float = 0.0  # node time of the last acknowledgement from the peer
    # As the recipient: messages from the peer pushed to our connected device but not
    # stored (see _State.mvol), in pseq order: [pseq, inbox seq, mid, acked, node time
    # accepted]; None when there are none.
    vq: deque[list[Any]] | None = None
    # the current run of such messages: pseqs vfrom..vto were all acknowledged by the
    # device (vfrom 0: no run); every acknowledgement to the peer names the run, so a
    # peer that restarted (and missed earlier ones) still makes their "delivered"
    vfrom: int = 0
    vto: int = 0


@dataclass(slots=True)
class _State:
    phone: str
    ctx: UserCtx
    loaded: bool = False
    key_hash: bytes | None = None
    gen: int = 0
    hide: bool = False
    last_seen: float | None = None
    out_next: int = 1
    in_next: int = 1
    peers: dict[str, _Peer] = field(default_factory=dict)
    # cmid -> (mid, ts, seq)
    cmids: dict[str, tuple[str, float, int]] = field(default_factory=dict)
    # seq -> (peer, kind, payload)
    inbox: dict[int, tuple[str, str, Any]] = field(default_factory=dict)
    device: Any = None
    device_mon: Any = None
    queue: deque[int] | None = None  # inbox seqs not yet pushed (None: empty)
    pushed: set[int] = field(default_factory=set)
    known: set[str] = field(default_factory=set)  # peers known to be registered
    # Deletes that may be lost without harm (a crash replays them: a re-forward is
    # deduplicated, a re-pushed receipt is deduplicated by the device); they ride along
    # with the next durable write, or are flushed when the process is idle.
    lazy: list[tuple[Any, ...]] = field(default_factory=list)
    # "sent" receipts kept only in memory: inbox seq -> the outbox seq of the message.
    # The outbox row stays until the device acknowledged the receipt, so a crash
    # re-forwards the message, the recipient acknowledges it again (a duplicate), and
    # the receipt is made again.
    volatile: dict[int, int] = field(default_factory=dict)
    # outbox seq -> how many receipts in ``volatile`` it is the durable record of (a
    # "sent", and a "delivered" when the peer's device acknowledged the message before
    # the peer stored it): the row goes once the device acknowledged all of them
    vrefs: dict[int, int] = field(default_factory=dict)
    # Messages pushed to the connected device *without being stored* (inbox seq ->
    # (peer, entry of that peer's ``vq``)): the sender's outbox row is their durable
    # record, and the sender is told only once the device acknowledged them (both
    # receipts then go at once) — or once they are stored after all (the device went
    # away, or the sender forwarded them again: it is waiting).
    mvol: dict[int, tuple[str, list[Any]]] = field(default_factory=dict)
    lazy_timer: Any = None
    idle_timer: Any = None
    active: int = 0  # callbacks handled (the idle timer compares it between firings)
    active_seen: int = -1
    npending: int = 0  # items in all peers' pending queues
    limits: dict[str, list[float]] = field(default_factory=dict)  # kind -> [window start, n]
    # "delivered" receipts of messages the device acknowledged without waiting for an
    # answer (protocol version 2), not yet stored by the sender's process:
    # peer -> {mid: (inbox seq, ts, node time sent)}. The inbox row of the message is
    # their durable record: it is deleted (lazily) only once the peer stored the
    # receipt, so after a crash the message is pushed again, acknowledged again, and
    # the receipt made again.
    rcpts: dict[str, dict[str, tuple[int, float, float]]] = field(default_factory=dict)
    rcpt_timer: Any = None
    rcpt_backoff: float = 0.0
    # peer -> node time of its last confirmation
    rcpt_progress: dict[str, float] = field(default_factory=dict)
    # The other side: receipts from peers pushed to our connected device but not
    # stored (inbox seq -> (peer, mid, peer's pid)); the peer keeps them until we
    # confirm, which we do once the device acknowledged them (or once they are stored,
    # when the device goes away).
    rvolatile: dict[int, tuple[str, str, Any]] = field(default_factory=dict)
    last_push: float = -1e18
    # NoReply(self), made once: the state is changed in place, and the record is
    # immutable, so every callback returns the same one (one record less per callback;
    # _idle makes it again for a state copied by a code_change)
    noreply: Any = None

    def peer(self, p: str) -> _Peer:
        x = self.peers.get(p)
        if x is None:
            x = self.peers[p] = _Peer()
        return x

    def outbox_empty(self) -> bool:
        return self.npending == 0


def _pend(p: _Peer, item: tuple[int, int, str, Any]) -> None:
    """Append ``item`` to the peer's pending items (made on first use)."""
    q = p.pending
    if q is None:
        q = p.pending = deque()
    q.append(item)


def _enqueue(s: _State, seq: int) -> None:
    if s.queue is None:
        s.queue = deque()
    s.queue.append(seq)


def _rcpt_backoff(ctx: UserCtx) -> float:
    """First resend delay of receipts handed straight to a peer: longer than for
    forwards, since the peer confirms only once its *device* acknowledged them (on a
    loaded server that takes a while, and a resend only adds to the load)."""
    return max(1.0, 5 * ctx.retry_initial)


def _ack_to(s: _State, pid: Any, p: _Peer, upto: int, dlv: list[str] | tuple[str, ...] = ()
            ) -> None:
    """Acknowledge the peer's forwards up to ``upto``: the messages of the current run
    (see ``_Peer.vfrom``) and those in ``dlv`` were acknowledged by our device (the
    peer makes their "delivered" receipts); the others are stored here."""
    vfrom = p.vfrom
    send(pid, ("chat.delivered", s.phone, upto,
               (tuple(dlv), vfrom, p.vto if vfrom else 0, time.time())))


def _end_run(p: _Peer) -> None:
    """The peer's messages are stored from here on: the current run is over."""
    p.vfrom = p.vto = 0


def _floor(p: _Peer) -> int:
    """The last pseq from the peer that we acknowledge: everything up to it is stored,
    or was acknowledged by our device."""
    vq = p.vq
    return vq[0][0] - 1 if vq else p.in_seq


def _cap(ctx: UserCtx, kind: str) -> int:
    """Numbers (or, for reads, message ids) per hour for ``kind``."""
    if kind == "presence":
        return ctx.presence_per_hour
    if kind == "read":
        return getattr(ctx, "reads_per_hour", 20000)  # (a context of an older version)
    return ctx.contacts_per_hour


def _err(e: ProtocolError) -> tuple[str, str, str, tuple[tuple[str, Any], ...]]:
    return ("error", e.code, e.message, tuple(e.extra.items()))


class User(GenServer):
    def init(self, arg: tuple[str, UserCtx]) -> Ok:
        phone, ctx = arg
        s = _State(phone, ctx)
        s.noreply = NoReply(s)
        return Ok(s, Continue("load"))

    # ---------------------------------------------------------------- loading

    def handle_continue(self, arg: Any, s: _State) -> Any:
        data: store.Loaded = store.read(("load", s.phone))
        if data.user is not None:
            s.key_hash, s.gen, s.hide, s.last_seen = data.user
        top = 0
        for peer, out_seq, in_seq in data.peers:
            p = s.peer(peer)
            p.out_seq, p.in_seq = out_seq, in_seq
        for seq, peer, pseq, kind, payload in data.outbox:
            _pend(s.peer(peer), (seq, pseq, kind, payload))
            s.npending += 1
            top = max(top, seq)
        for cmid, mid, seq in data.cmids:
            s.cmids[cmid] = (mid, 0.0, seq)
            top = max(top, seq)
        s.out_next = top + 1
        for seq, peer, kind, payload in data.inbox:
            s.inbox[seq] = (peer, kind, payload)
        # Inbox ids are never reused, even after the inbox was emptied and the process
        # restarted: a late ack for an old id must not delete a new item unseen.
        s.in_next = max((max(s.inbox) + 1) if s.inbox else 1, int(time.time() * 1e6))
        s.loaded = True
        dev = whereis(device_name(s.phone))
        if dev is not None and s.key_hash is not None:
            self._attach(s, dev)  # started (or restarted) while the device is connected
        for peer, p in s.peers.items():
            if p.pending:
                self._forward(s, peer, tuple(p.pending))
                self._arm(s, peer, p)
        return self._idle(s)

    def _idle(self, s: _State) -> Any:
        if len(s.lazy) >= LAZY_MAX:
            self._write(s, ())
        if s.lazy and s.lazy_timer is None:
            s.lazy_timer = send_after(LAZY_FLUSH, _self(), "chat.flush")
        # One idle timer per process, re-armed when it fires, rather than a Timeout
        # action (a receive timer) on every callback of the hot path; a callback only
        # counts (no clock read): the process stops when a whole period passed without
        # one, so between one and two idle limits after the last.
        s.active += 1
        if s.idle_timer is None:
            s.idle_timer = send_after(self._idle_limit(s), _self(), "chat.idle")
        r = s.noreply
        if r is None or r[0] is not s:  # (a state copied by a code_change)
            r = s.noreply = NoReply(s)
        return r

    @staticmethod
    def _idle_limit(s: _State) -> float:
        return s.ctx.idle_stop if s.key_hash else 1.0

    @staticmethod
    def _quiet(s: _State) -> bool:
        """Nothing to forward and nothing pushed and unacknowledged: the process may stop
        (a connected device stays connected; its name lets the next start find it).
        Nor while a rate-limit window is more than ``LIMIT_HOT`` used: a restart would
        start it afresh (a user that probes keeps its process, and its count, for the
        hour; an ordinary one, a few lookups, does not)."""
        if not (s.outbox_empty() and not s.pushed and not s.queue and not s.rcpts):
            return False
        if s.limits:
            now = _now()
            for kind, w in s.limits.items():
                if now - w[0] < 3600.0 and w[1] >= LIMIT_HOT * _cap(s.ctx, kind):
                    return False
        return True

    def _write(self, s: _State, ops: list[tuple[Any, ...]] | tuple[tuple[Any, ...], ...]
               ) -> None:
        """A durable write of ``ops``, carrying the pending lazy deletes along."""
        if s.lazy:
            ops = [*s.lazy, *ops]
            s.lazy = []
        store.write(tuple(ops))

    def terminate(self, reason: Any, s: _State) -> None:
        # The state and its NoReply record refer to each other: without this, a stopped
        # user's state would wait for a full pass of the cyclic GC to be freed.
        s.noreply = None
        if s.lazy:
            try:
                self._write(s, ())
            except store.StoreError:
                pass

    def _reply(self, value: Any, s: _State) -> Any:
        self._idle(s)
        return Reply(value, s)

    # ---------------------------------------------------------------- device requests

    def handle_call(self, request: Any, from_: Any, s: _State) -> Any:
        match request:
            case ("send", to, cmid, body):
                try:
                    return self._reply(("ok", *self._send(s, to, cmid, body)), s)
                except ProtocolError as e:
                    return self._reply(_err(e), s)
            case ("ack", ids):
                self._ack(s, ids)
                return self._reply(("ok",), s)
            case ("read", peer, ids):
                try:
                    self._read(s, peer, ids)
                except ProtocolError as e:
                    return self._reply(_err(e), s)
                return self._reply(("ok",), s)
            case ("attach", conn):  # a device logged in (its connection checked the key)
                if s.device is not None and s.device != conn:
                    self._detach(s, seen=False)
                if s.device != conn:
                    self._attach(s, conn)
                # (else this process started for this login, found the connection by
                # its name and is streaming to it already: streaming it again would
                # push every queued item twice on one connection, C8)
                return self._reply(len(s.inbox), s)
            case ("forwarding",):  # introspection: items not yet acknowledged by peers
                return self._reply(s.npending + sum(len(d) for d in s.rcpts.values()), s)
            case ("presence_info",):
                return self._reply((s.device is not None, s.last_seen, s.hide), s)
            case ("privacy", hide):
                self._write(s, (("privacy", s.phone, hide),))
                s.hide = hide
                return self._reply(("ok",), s)
            case ("limit", kind, n):
                return self._reply(self._limit(s, kind, n), s)
            case ("detach", conn):
                if s.device == conn:
                    self._detach(s)
                return self._reply(("ok",), s)
        return super().handle_call(request, from_, s)

    def _attach(self, s: _State, conn: Any) -> None:
        """Stream the inbox to ``conn`` from the start (the device deduplicates)."""
        if s.device != conn:
            s.device = conn
            s.device_mon = monitor(conn)
        s.queue = deque(s.inbox) if s.inbox else None
        s.pushed = set()
        self._push_more(s)

    def _detach(self, s: _State, seen: bool = True) -> None:
        if s.device_mon is not None:
            demonitor(s.device_mon, flush=True)
        s.device = s.device_mon = None
        s.pushed = set()
        s.queue = None
        ops: list[tuple[Any, ...]] = []
        if s.rvolatile:  # no device to acknowledge them now: store them, then confirm
            for seq, (peer, _mid, _pid) in s.rvolatile.items():
                item = s.inbox.get(seq)
                if item is not None:
                    ops.append(("in+", s.phone, seq, peer, "receipt", item[2]))
        # messages pushed unstored: no device to acknowledge them now, store them
        reports: list[tuple[str, _Peer, list[str]]] = []
        if s.mvol:
            for peer in {peer for peer, _ in s.mvol.values()}:
                p = s.peers[peer]
                dlv: list[str] = []
                ops.extend(self._unvolatile(s, peer, p, dlv))
                ops.append(("pin", s.phone, peer, p.in_seq))
                reports.append((peer, p, dlv))
            s.mvol = {}
        if seen:
            s.last_seen = time.time()
            ops.append(("seen", s.phone, s.last_seen))
        if ops:
            self._write(s, ops)
        if s.rvolatile:
            self._confirm(s, s.rvolatile)
            s.rvolatile = {}
        for peer, p, dlv in reports:  # then tell their senders
            try:
                _ack_to(s, ensure(peer), p, p.in_seq, dlv)
            except Exception as e:  # the retry covers it
                log.warning("user %s: cannot reach %s's process yet: %s", s.phone, peer, e)
            _end_run(p)

    @staticmethod
    def _confirm(s: _State, done: dict[int, tuple[str, str, Any]]) -> None:
        """Tell peers their receipts are safe with us (see ``_State.rvolatile``)."""
        by: dict[Any, tuple[str, list[str]]] = {}
        for peer, mid, pid in done.values():
            x = by.get(pid)
            if x is None:
                by[pid] = (peer, [mid])
            else:
                x[1].append(mid)
        for pid, (_peer, done_mids) in by.items():
            send(pid, ("chat.receipts_ok", s.phone, tuple(done_mids)))

    def _send(self, s: _State, to: str, cmid: str, body: Any) -> tuple[str, float]:
        key = _key()
        old = s.cmids.get(cmid)
        if old is not None:
            if mids.same_content(key, old[0], to, body) is False:
                raise ProtocolError("cmid_reused", f"cmid {cmid!r} was used for another "
                                                   f"message (another recipient or body): "
                                                   f"use a new cmid for a new message")
            return old[0], old[1]
        if to not in s.known:
            if to != s.phone:
                # each new recipient looked up counts as a contacts lookup: send must
                # not be a faster way to learn who is registered (C7)
                r = self._limit(s, "contacts", 1)
                if r[0] == "error":
                    raise ProtocolError("rate_limited", r[2], retry_after=r[3])
                # a running user process means a registered user (they start only
                # for one)
                if whereis(name(to)) is None and store.read(("user", to)) is None:
                    raise ProtocolError("unknown_recipient", f"{to} is not registered")
            s.known.add(to)
        seq = s.out_next
        s.out_next += 1
        p = s.peer(to)
        pseq = p.out_seq + 1
        mid = mids.make(key, s.phone, seq, to, body)
        ts = time.time()
        payload = (mid, cmid, body, ts)
        ops: list[tuple[Any, ...]] = [
            ("out+", s.phone, seq, to, pseq, "msg", payload),
            ("pout", s.phone, to, pseq),
            ("cmid+", s.phone, cmid, mid, seq),
        ]
        if len(s.cmids) >= CMID_KEEP + 100:
            keep = list(s.cmids.items())[-CMID_KEEP:]
            s.cmids = dict(keep)
            ops.append(("cmid<", s.phone, keep[0][1][2]))
        self._write(s, ops)
        if faults.hooks:
            faults.point("send_stored", s.phone)
        p.out_seq = pseq
        s.cmids[cmid] = (mid, ts, seq)
        item = (seq, pseq, "msg", payload)
        if not p.pending:
            p.progress = _now()  # the back-off counts from the first unacknowledged item
        _pend(p, item)
        s.npending += 1
        self._forward(s, to, (item,))
        self._arm(s, to, p)
        return mid, ts

    def _ack(self, s: _State, ids: tuple[int, ...], answered: bool = True) -> None:
        """The device acknowledged ``ids``. For a message, "delivered" goes to its sender
        (C4) and the message is deleted (C3): answered acks (the reply means "deleted")
        store the receipt in the outbox in the same commit as the delete; unanswered
        ones hand the receipt to the sender's process directly and delete the message
        lazily once it stored the receipt (no disk wait here; see ``_State.rcpts``)."""
        if faults.hooks:
            faults.point("ack_received", s.phone)
        ops: list[tuple[Any, ...]] = []
        receipts: list[tuple[str, tuple[Any, ...]]] = []
        direct: dict[str, dict[str, tuple[int, float, float]]] = {}
        confirm: dict[int, tuple[str, str, Any]] = {}
        now = time.time()
        acked: set[str] | None = None
        for i in ids:
            item = s.inbox.pop(i, None)
            if item is None:
                continue
            s.pushed.discard(i)
            peer, kind, payload = item
            out_seq = s.volatile.pop(i, None)
            if out_seq is not None:  # a receipt the outbox row is the record of
                n = s.vrefs.pop(out_seq, 1) - 1
                if n > 0:
                    s.vrefs[out_seq] = n
                else:  # the device has them all: now the row can go
                    s.lazy.append(("out-", s.phone, out_seq))
            elif kind == "msg" and i in s.mvol:  # never stored: its sender hears now
                s.mvol.pop(i)[1][3] = True
                if acked is None:
                    acked = set()
                acked.add(peer)
            elif kind == "msg":  # deleted for good (C3), and "delivered" goes out (C4)
                if answered:
                    ops.append(("in-", s.phone, i))
                    receipts.append((peer, ("delivered", payload[0], now)))
                else:
                    direct.setdefault(peer, {})[payload[0]] = (i, now, 0.0)
            else:
                v = s.rvolatile.pop(i, None)
                if v is not None:  # a receipt held for its peer: the device has it
                    confirm[i] = v
                else:  # a stored receipt: the device has it
                    s.lazy.append(("in-", s.phone, i))
        if acked:
            for peer in acked:
                self._report(s, peer)
        if confirm:
            self._confirm(s, confirm)
        if ops:
            self._queue_out(s, receipts, ops)
        if direct:
            t = _now()
            for peer, d in direct.items():
                mine = s.rcpts.setdefault(peer, {})
                for mid, (i, ts, _) in d.items():
                    mine[mid] = (i, ts, t)
                self._send_receipts(s, peer, mine)
            if s.rcpt_timer is None:
                if s.rcpt_backoff <= 0:
                    s.rcpt_backoff = _rcpt_backoff(s.ctx)
                s.rcpt_timer = send_after(s.rcpt_backoff, _self(), "chat.rcpt_retry")
        self._push_more(s)

    def _report(self, s: _State, peer: str) -> None:
        """Our device acknowledged unstored messages from ``peer``: acknowledge the
        forwards up to the first one still unacknowledged, naming them delivered (the
        sender then pushes "sent" and "delivered" at once)."""
        p = s.peers[peer]
        vq = p.vq
        upto = 0
        while vq and vq[0][3]:
            upto = vq.popleft()[0]
        if not vq:
            p.vq = None
        if not upto:
            return
        p.vto = upto
        try:
            pid = ensure(peer)
        except Exception as e:  # the supervisor is busy or stopping: the retry covers it
            log.warning("user %s: cannot reach %s's process yet: %s", s.phone, peer, e)
            return
        _ack_to(s, pid, p, upto)

    def _send_receipts(self, s: _State, peer: str,
                       d: dict[str, tuple[int, float, float]]) -> None:
        """Send *every* receipt the peer has not confirmed yet, in the order they were
        made: the peer stores what it gets in that order, so even when its process
        restarted (losing what was in its mailbox), receipts never overtake each other
        (one the peer already stored may come twice: the device deduplicates)."""
        try:
            pid = ensure(peer)
        except Exception as e:  # the supervisor is busy or stopping: the retry covers it
            log.warning("user %s: cannot reach %s's process yet: %s", s.phone, peer, e)
            return
        send(pid, ("chat.receipts", s.phone, _self(),
                   tuple((mid, "delivered", ts) for mid, (_, ts, _) in d.items())))

    def _receipts(self, s: _State, peer: str, pid: Any, items: tuple[Any, ...]) -> None:
        """Receipts for our messages, straight from the peer's process. With the device
        connected they are only pushed, and confirmed to the peer once the device
        acknowledged them (until then the peer's inbox row of the message is their
        durable record: no disk write here at all); otherwise they are stored in the
        inbox, then confirmed. A receipt sent twice (a retry) may reach the device
        twice; it deduplicates by type and mid."""
        if faults.hooks:
            faults.point("deliver_received", s.phone)
        if s.device is not None:
            for mid, kind, ts in items:
                seq = s.in_next
                s.in_next += 1
                s.inbox[seq] = (peer, "receipt", (kind, mid, peer, ts))
                s.rvolatile[seq] = (peer, mid, pid)
                _enqueue(s, seq)
            self._push_more(s)
            if faults.hooks:
                faults.point("inbox_stored", s.phone)
            return
        ops: list[tuple[Any, ...]] = []
        for mid, kind, ts in items:
            seq = s.in_next
            s.in_next += 1
            payload = (kind, mid, peer, ts)
            ops.append(("in+", s.phone, seq, peer, "receipt", payload))
            s.inbox[seq] = (peer, "receipt", payload)
            if s.device is not None:
                _enqueue(s, seq)
        if s.device is not None:
            self._push_more(s)
        self._write(s, ops)
        if faults.hooks:
            faults.point("inbox_stored", s.phone)
        if s.device is None:
            self._notify(s)
        send(pid, ("chat.receipts_ok", s.phone, tuple(mid for mid, _, _ in items)))

    def _receipts_ok(self, s: _State, peer: str, mids: tuple[str, ...]) -> None:
        d = s.rcpts.get(peer)
        if not d:
            return
        for mid in mids:
            x = d.pop(mid, None)
            if x is not None:  # the peer has the receipt: the message row can go
                s.lazy.append(("in-", s.phone, x[0]))
        if not d:
            del s.rcpts[peer]
            s.rcpt_progress.pop(peer, None)
        else:
            s.rcpt_progress[peer] = _now()
        s.rcpt_backoff = _rcpt_backoff(s.ctx)

    def _retry_receipts(self, s: _State) -> None:
        s.rcpt_timer = None
        if not s.rcpts:
            return
        now = _now()
        due = now - s.rcpt_backoff
        resent = False
        for peer, d in s.rcpts.items():
            # as for forwards: only when nothing was confirmed for a back-off period (a
            # loaded peer is slow, not gone; resending would only add to its load)
            if now - s.rcpt_progress.get(peer, 0.0) >= s.rcpt_backoff and any(
                    t <= due for _, _, t in d.values()):
                for mid, (i, ts, _) in d.items():
                    d[mid] = (i, ts, now)
                self._send_receipts(s, peer, d)
                resent = True
        if resent:
            s.rcpt_backoff = min(s.rcpt_backoff * 2, s.ctx.retry_max)
        s.rcpt_timer = send_after(s.rcpt_backoff, _self(), "chat.rcpt_retry")

    def _read(self, s: _State, peer: str, read: tuple[str, ...]) -> None:
        """``read`` receipts for messages from ``peer`` to us. Only a message's
        recipient may report it read (C7): each mid must be one ``peer`` made for us
        (checked from the mid itself, see ``chat.mids``); otherwise nothing is sent.
        A mid named twice in one request makes one receipt; the ids are counted
        against ``reads_per_hour``."""
        key = _key()
        read = tuple(dict.fromkeys(read))
        for i, m in enumerate(read):
            if not mids.is_from_to(key, m, peer, s.phone):
                raise ProtocolError("unknown_message", f"read: mids[{i}] ({m!r:.40}) is "
                                                       f"not a message from {peer} to you")
        if not read:
            return
        r = self._limit(s, "read", len(read))
        if r[0] == "error":
            raise ProtocolError("rate_limited", r[2], retry_after=r[3])
        now = time.time()
        self._queue_out(s, [(peer, ("read", m, now)) for m in read], [])

    def _queue_out(self, s: _State, receipts: list[tuple[str, tuple[Any, ...]]],
                   ops: list[tuple[Any, ...]]) -> None:
        """Store ``ops`` plus receipts for peers in the outbox (one commit), then forward."""
        items: list[tuple[str, tuple[int, int, str, Any]]] = []
        touched: dict[str, int] = {}
        for peer, payload in receipts:
            p = s.peer(peer)
            seq = s.out_next
            s.out_next += 1
            pseq = touched.get(peer, p.out_seq) + 1
            touched[peer] = pseq
            ops.append(("out+", s.phone, seq, peer, pseq, "receipt", payload))
            items.append((peer, (seq, pseq, "receipt", payload)))
        for peer, n in touched.items():
            ops.append(("pout", s.phone, peer, n))
        self._write(s, ops)
        by_peer: dict[str, list[tuple[int, int, str, Any]]] = {}
        for peer, item in items:
            p = s.peers[peer]
            if not p.pending:
                p.progress = _now()
            _pend(p, item)
            s.npending += 1
            by_peer.setdefault(peer, []).append(item)
        for peer, n in touched.items():
            p = s.peers[peer]
            p.out_seq = n
            self._forward(s, peer, tuple(by_peer[peer]))
            self._arm(s, peer, p)

    def _limit(self, s: _State, kind: str, n: int) -> Any:
        cap = _cap(s.ctx, kind)
        now = _now()
        w = s.limits.get(kind)
        if w is None or now - w[0] >= 3600.0:
            w = s.limits[kind] = [now, 0.0]
        if w[1] + n > cap:
            what = ("message ids per hour in read requests" if kind == "read" else
                    "numbers looked up per hour (contacts, and recipients new to send)"
                    if kind == "contacts" else f"numbers per hour in {kind} requests")
            return ("error", "rate_limited", f"at most {cap} {what}",
                    w[0] + 3600.0 - now)
        w[1] += n
        return ("ok",)

    # ---------------------------------------------------------------- between users

    def _forward(self, s: _State, peer: str, items: tuple[tuple[int, int, str, Any], ...]) -> None:
        try:
            pid = ensure(peer)
        except Exception as e:  # the supervisor is busy or stopping: the retry covers it
            log.warning("user %s: cannot reach %s's process yet: %s", s.phone, peer, e)
            return
        if pid is not None:
            p = s.peers[peer]
            # (everything before the first pending item was acknowledged by the peer)
            acked = p.pending[0][1] - 1 if p.pending else p.out_seq
            if len(items) == 1:  # (the usual case: one new message)
                fwd: tuple[Any, ...] = (items[0][1:],)
            else:
                fwd = tuple((pseq, kind, payload) for _, pseq, kind, payload in items)
            send(pid, ("chat.deliver", s.phone, _self(), fwd, acked))

    def _arm(self, s: _State, peer: str, p: _Peer) -> None:
        if p.timer is None and p.pending:
            if p.backoff <= 0:
                p.backoff = s.ctx.retry_initial
            p.token += 1
            p.timer = send_after(p.backoff, _self(), ("chat.retry", peer, p.token))

    def handle_cast(self, request: Any, s: _State) -> Any:
        match request:
            case ("ack", ids):  # an unanswered ack (protocol version 2)
                self._ack(s, ids, answered=False)
                return self._idle(s)
            case ("rekey", key_hash, gen):
                s.key_hash, s.gen = key_hash, gen
                if s.device is not None:  # rekey() closes that connection ("replaced")
                    self._detach(s)
                return self._idle(s)
        return super().handle_cast(request, s)

    def handle_info(self, msg: Any, s: _State) -> Any:
        match msg:
            case ("chat.deliver", peer, pid, items, acked):
                self._deliver(s, peer, pid, items, acked)
            case ("chat.delivered", peer, upto, (dlv, vfrom, vto, ts)):
                self._delivered(s, peer, upto, dlv, vfrom, vto, ts)
            case ("chat.deliver", peer, pid, items):  # from a version before the above
                self._deliver(s, peer, pid, items)
            case ("chat.delivered", peer, upto):
                self._delivered(s, peer, upto)
            case ("chat.retry", peer, token):
                p = s.peers.get(peer)
                if p is not None and p.token == token:
                    p.timer = None
                    if p.pending:
                        if _now() - p.progress < p.backoff:
                            # the peer acknowledged something lately: it is alive and
                            # working through what we sent; look again later
                            self._arm(s, peer, p)
                        else:
                            p.backoff = min(p.backoff * 2, s.ctx.retry_max)
                            self._forward(s, peer, tuple(p.pending))
                            self._arm(s, peer, p)
            case ("chat.receipts", peer, pid, items):
                self._receipts(s, peer, pid, items)
            case ("chat.receipts_ok", peer, mids):
                self._receipts_ok(s, peer, mids)
            case "chat.rcpt_retry":
                self._retry_receipts(s)
            case Down(ref=ref) if ref == s.device_mon:
                s.device_mon = None
                self._detach(s)
            case "chat.flush":
                s.lazy_timer = None
                if s.lazy:
                    self._write(s, ())
            case "chat.idle":
                s.idle_timer = None
                if s.active == s.active_seen and self._quiet(s):
                    return Stop("normal", s)
                s.active_seen = s.active
                s.idle_timer = send_after(self._idle_limit(s), _self(), "chat.idle")
                return NoReply(s)
            case _:
                return super().handle_info(msg, s)
        return self._idle(s)

    def _deliver(self, s: _State, peer: str, pid: Any, items: tuple[Any, ...],
                 acked: int = 0) -> None:
        """A forward from ``peer``: ``acked`` is the sender's own knowledge of what we
        acknowledged (it forwards only what follows; after a restart of ours, our
        stored ``in_seq`` may lag behind it: what we acknowledged without storing)."""
        if faults.hooks:
            faults.point("deliver_received", s.phone)
        p = s.peer(peer)
        if acked > p.in_seq:
            p.in_seq = acked
        expect = p.in_seq + 1
        new: list[tuple[int, int, tuple[str, str, Any]]] = []
        dups: list[tuple[int, str, Any]] | None = None
        for pseq, kind, payload in items:
            if pseq < expect:  # a retried forward we already hold (C2)
                if dups is None:
                    dups = []
                dups.append((pseq, kind, payload))
                continue
            if pseq > expect:
                break  # a gap: the missing one comes again first
            seq = s.in_next
            s.in_next += 1
            if kind == "receipt":
                payload = (payload[0], payload[1], peer, payload[2])
            new.append((seq, pseq, (peer, kind, payload)))
            expect += 1
        dev = s.device
        if new and dev is not None and self._unstored_ok(s, peer, p, new):
            # The device is connected: push, and store nothing. The sender's outbox row
            # is the message's durable record; the sender hears of it (and keeps
            # retrying) until the device acknowledged it, and a crash here loses only
            # what the sender forwards again (the device drops a second copy by mid).
            vq = p.vq
            if vq is None:
                vq = p.vq = deque()
            if not p.vfrom:
                p.vfrom = new[0][1]
                p.vto = p.vfrom - 1
            now = _now()
            for seq, pseq, item in new:
                s.inbox[seq] = item
                e = [pseq, seq, item[2][0], False, now]
                vq.append(e)
                s.mvol[seq] = (peer, e)
                _enqueue(s, seq)
            p.in_seq = expect - 1
            self._push_more(s)
            if faults.hooks:
                faults.point("inbox_stored", s.phone)
            if dups is not None:
                self._dups(s, peer, pid, p, dups)
            return
        dlv: list[str] = []
        if new:
            ops: list[tuple[Any, ...]] = self._unvolatile(s, peer, p, dlv)
            for seq, _pseq, item in new:
                ops.append(("in+", s.phone, seq, peer, item[1], item[2]))
            ops.append(("pin", s.phone, peer, expect - 1))
            # Pushed to the device *before* the inbox write is on disk: the message is
            # durable in the sender's outbox already, and nothing is acknowledged to the
            # sender before this write is (if it is lost, the sender forwards again and
            # the device drops the second copy by mid). One disk wait less between a
            # send and its delivery.
            for seq, _pseq, item in new:
                s.inbox[seq] = item
                if dev is not None:
                    _enqueue(s, seq)
            if dev is not None:
                self._push_more(s)
            self._write(s, ops)
            if faults.hooks:
                faults.point("inbox_stored", s.phone)
            p.in_seq = expect - 1
            if s.device is None:
                self._notify(s)
        if dups is not None:
            self._dups(s, peer, pid, p, dups, dlv if new else None)
            return
        _ack_to(s, pid, p, _floor(p), dlv)
        if new:
            _end_run(p)

    @staticmethod
    def _unstored_ok(s: _State, peer: str, p: _Peer,
                     new: list[tuple[int, int, tuple[str, str, Any]]]) -> bool:
        """May ``new`` (from ``peer``, our device connected) be pushed without being
        stored? Only messages, only within the push window, and only while no earlier
        "delivered" receipt for the peer may still be on its way by the slower, stored
        path (a stored message of the peer not yet acknowledged, receipts not yet
        confirmed, or receipts for it in our outbox): receipts keep their order."""
        if len(s.mvol) + len(new) > s.ctx.window or peer in s.rcpts:
            return False
        for _, _, item in new:
            if item[1] != "msg":
                return False
        for it in p.pending or ():
            if it[2] != "msg":
                return False
        mvol = s.mvol
        for seq, item in s.inbox.items():
            if item[0] == peer and item[1] == "msg" and seq not in mvol:
                return False
        return True

    def _unvolatile(self, s: _State, peer: str, p: _Peer, dlv: list[str]
                    ) -> list[tuple[Any, ...]]:
        """The store operations that make ``peer``'s unstored messages ordinary inbox
        items (to be written before anything is acknowledged past them); the mids the
        device acknowledged meanwhile are added to ``dlv``."""
        ops: list[tuple[Any, ...]] = []
        vq = p.vq
        if not vq:
            return ops
        for _pseq, seq, mid, done, _t in vq:
            if done:
                dlv.append(mid)
                continue
            s.mvol.pop(seq, None)
            item = s.inbox.get(seq)
            if item is not None:
                ops.append(("in+", s.phone, seq, peer, item[1], item[2]))
        p.vq = None
        return ops

    def _dups(self, s: _State, peer: str, pid: Any, p: _Peer,
              dups: list[tuple[int, str, Any]], dlv: list[str] | None = None) -> None:
        """The peer forwarded again what we accepted already: it has waited a back-off
        period. If our device has left the oldest unstored one unacknowledged for
        ``UNSTORED_MAX``, store them all (so that the peer hears now). Then acknowledge,
        naming as delivered the messages our device acknowledged (neither unstored nor
        in the inbox any more: a duplicate "delivered" is dropped by the device)."""
        stored = dlv is not None  # (the caller stored new ones)
        dlv = [] if dlv is None else dlv
        vq = p.vq
        if vq and _now() - vq[0][4] >= UNSTORED_MAX:
            ops = self._unvolatile(s, peer, p, dlv)
            ops.append(("pin", s.phone, peer, p.in_seq))
            self._write(s, ops)
            stored = True
            vq = None
        waiting = {e[2] for e in vq if not e[3]} if vq else ()
        held: set[str] | None = None
        for _pseq, kind, payload in dups:
            if kind != "msg" or payload[0] in waiting:
                continue
            if held is None:
                held = {item[2][0] for item in s.inbox.values()
                        if item[0] == peer and item[1] == "msg"}
            if payload[0] not in held:
                dlv.append(payload[0])
        _ack_to(s, pid, p, _floor(p), tuple(dict.fromkeys(dlv)))
        if stored:
            _end_run(p)

    def _delivered(self, s: _State, peer: str, upto: int, dlv: tuple[str, ...] = (),
                   vfrom: int = 0, vto: int = 0, ts: float = 0.0) -> None:
        """The peer acknowledged our forwards up to ``upto``; its device acknowledged
        (by ``ts``) the messages ``vfrom..vto`` and those in ``dlv``, which were never
        stored there."""
        p = s.peers.get(peer)
        if p is None or not p.pending:
            return
        pending = p.pending
        if pending[0][1] > upto:
            # the peer is alive and answering (its device has not acknowledged yet):
            # the retry waits another back-off period
            p.progress = _now()
            return
        pushed = False
        while pending and pending[0][1] <= upto:
            if faults.hooks:
                faults.point("delivered_received", s.phone)  # (per item acknowledged)
            seq, pseq, kind, payload = pending.popleft()
            s.npending -= 1
            if kind == "msg":
                # "sent" (C4), and "delivered" when the peer's device has it: kept in
                # memory only, with the outbox row as their durable record (see
                # _State.volatile and vrefs)
                iseq = s.in_next
                s.in_next += 1
                mid = payload[0]
                s.inbox[iseq] = (peer, "receipt", ("sent", mid, peer, payload[3]))
                s.volatile[iseq] = seq
                dv = vfrom <= pseq <= vto or (dlv and mid in dlv)
                if dv:
                    s.inbox[iseq + 1] = (peer, "receipt", ("delivered", mid, peer, ts))
                    s.volatile[iseq + 1] = seq
                    s.vrefs[seq] = 2
                    s.in_next += 1
                if s.device is not None:
                    _enqueue(s, iseq)
                    if dv:
                        _enqueue(s, iseq + 1)
                    pushed = True
            else:
                s.lazy.append(("out-", s.phone, seq))
        p.backoff = s.ctx.retry_initial
        p.progress = _now()
        if not pending:
            p.pending = None
            if p.timer is not None:
                # (cheaper than letting it fire: peers rarely repeat, so a timer left
                # running would wake the process once per message)
                cancel_timer(p.timer)
                p.timer = None
        if pushed:
            self._push_more(s)

    # ---------------------------------------------------------------- the device

    def _push_more(self, s: _State) -> None:
        dev = s.device
        if dev is None:
            return
        if not s.queue:
            return
        room = s.ctx.window - len(s.pushed)
        batch = []
        q = s.queue
        assert q is not None
        inbox = s.inbox
        while room > 0 and q:
            seq = q.popleft()
            item = inbox.get(seq)
            if item is None:
                continue
            s.pushed.add(seq)
            batch.append((seq, *item))
            room -= 1
        if batch:
            send(dev, ("chat.push", tuple(batch)))

    def _notify(self, s: _State) -> None:
        fn = s.ctx.notify
        now = _now()
        if fn is None or now - s.last_push < s.ctx.push_every:
            return
        s.last_push = now
        spawn(_notify, fn, s.phone, len(s.inbox))

    def format_status(self, status: dict[str, Any]) -> dict[str, Any]:
        st = status.get("state")
        if isinstance(st, _State):
            status["state"] = (f"<user {st.phone} inbox={len(st.inbox)} "
                               f"device={st.device!r}>")
        return status


def _notify(fn: Callable[[str, int], None], phone: str, n: int) -> None:
    try:
        fn(phone, n)
    except Exception as e:
        log.warning("push notification to %s failed: %s", phone, e)


def call(phone: str, request: tuple[Any, ...], timeout: float = 30.0) -> Any:
    """Call ``phone``'s process, starting it if needed; retries once if it died meanwhile."""
    for attempt in range(3):
        pid = ensure(phone)
        try:
            return gen_server.call(pid, request, timeout)
        except CallError as e:
            if attempt == 2 or isinstance(e, TimeoutError):
                raise
    raise AssertionError("unreachable")
