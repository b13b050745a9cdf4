"""The chat server's durable store: users, outboxes, inboxes, per-peer sequence numbers.

One store process (registered as ``chat.store``) owns the storage backend and applies
*group commits*: every write and read request that is in its mailbox when it gets to
run is executed in one transaction, made durable with one fsync, and only then are all
of them answered. Callers block in ``write``/``read`` like in a ``gen_server.call``::

    from chat import store
    store.write((("in+", "+14155550100", 7, "+14155550111", "msg", payload),))
    row = store.read(("user", "+14155550100"))   # (key_hash, gen, hide, last_seen) | None

Backends: ``SqliteBackend`` (stdlib ``sqlite3``, WAL, ``synchronous=FULL``: a commit is
on disk before anyone is answered, so an acknowledged write survives ``kill -9``; the
SQL runs on the node's thread, the fsync in its thread pool so the node keeps serving
meanwhile); ``SqliteProcessBackend``, the default (``store_process: true``), the same
in an OS process of its own (``chat.store_child``), so that the node's thread only
packs each batch; ``chat.store_tables.TablesBackend`` on ``otp.tables`` disc tables
(``storage: tables``), which runs in the caller; ``MemoryBackend`` for tests. Callers
never see which.

Write operations (tuples, applied in order, atomically per request):

====================================================  ==================================
``("user", phone, key_hash, gen)``                    register / replace a device key
``("privacy", phone, hide)``, ``("seen", phone, ts)`` presence settings
``("out+", owner, seq, peer, pseq, kind, payload)``   queue an item to forward
``("out-", owner, seq)``                              forwarded and acknowledged
``("in+", owner, seq, peer, kind, payload)``          an item for the owner's device
``("in-", owner, seq)``                               the device acknowledged it
``("pout", owner, peer, n)``, ``("pin", ...)``        per-pair sequence numbers
``("cmid+", owner, cmid, mid, seq)``                  a device's message id, for resends
``("cmid<", owner, seq)``                             forget cmids older than ``seq``
====================================================  ==================================

(The users row ``chat.mids.SECRET_ROW``, not a phone number, keeps the server's key for
message ids.)

Queries: ``("user", phone)``, ``("registered", phones)``, ``("presence", phones)``
(``(phone, hide, last_seen)`` of the registered ones), ``("pending", owner)`` (does
the owner have inbox or outbox rows), ``("senders",)`` (the owners of outbox rows:
users with something to forward), ``("load", owner)`` (a
``Loaded`` record with everything a user process needs to start).

Failure semantics: if a commit fails, every request of that batch gets ``StoreError``
(nothing of the batch is applied); if the store process is down, ``StoreError`` at once.
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, NoReturn, Protocol

import msgpack

from otp import gen_server, metrics
from otp.errors import CallError
from otp.gen_server import GenServer, NoReply, Ok, Timeout, reply
from otp.node import NodeVar
from otp.process import Exit, send, spawn_link, trap_exit
from otp.process import self as _self
from otp.threads import run_in_thread

__all__ = [
    "NAME",
    "Backend",
    "Loaded",
    "MemoryBackend",
    "SqliteBackend",
    "SqliteProcessBackend",
    "StoreError",
    "read",
    "start_link",
    "write",
]

NAME = "chat.store"
log = logging.getLogger("chat.store")
# Operations figures (otp.metrics): commits and their latency (the fsync's, mostly)
_COMMIT_SECONDS = metrics.histogram(
    "chat_store_commit_seconds", "store commits (write + fsync) and their latency",
    (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0))
_perf = time.perf_counter
MAX_BATCH = 2000
#: queries answered before the batch's fsync (plain lookups of registration data)
EARLY = frozenset({"user", "registered", "presence"})


class StoreError(Exception):
    pass


@dataclass(frozen=True)
class Loaded:
    """What a user process loads at start (all tuples, sorted by seq)."""

    user: tuple[Any, ...] | None  # (key_hash, gen, hide, last_seen)
    outbox: tuple[tuple[Any, ...], ...]  # (seq, peer, pseq, kind, payload)
    inbox: tuple[tuple[Any, ...], ...]  # (seq, peer, kind, payload)
    peers: tuple[tuple[str, int, int], ...]  # (peer, out_seq, in_seq)
    cmids: tuple[tuple[str, str, int], ...]  # (cmid, mid, seq)


class Backend(Protocol):
    #: True for a disk backend: it then also has ``stage(batch)`` (run on the node's
    #: thread) and ``commit()`` (the disk wait, run in the thread pool)
    blocking: bool

    def run(self, batch: list[tuple[str, Any]]) -> list[Any]:
        """Execute ("w", ops) / ("r", query) requests in order as one atomic commit;
        return one result per request (None for writes)."""
        ...

    def close(self) -> None: ...


# ---------------------------------------------------------------------------- memory


@dataclass
class MemoryBackend:
    """Everything in dicts; for tests (survives store restarts, not node restarts)."""

    blocking: bool = False
    users: dict[str, list[Any]] = field(default_factory=dict)
    outbox: dict[str, dict[int, tuple[Any, ...]]] = field(default_factory=dict)
    inbox: dict[str, dict[int, tuple[Any, ...]]] = field(default_factory=dict)
    peers: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    cmids: dict[str, dict[str, tuple[str, int]]] = field(default_factory=dict)
    commits: int = 0

    def run(self, batch: list[tuple[str, Any]]) -> list[Any]:
        out = []
        for kind, arg in batch:
            if kind == "w":
                for op in arg:
                    self._apply(op)
                out.append(None)
            else:
                out.append(self._query(arg))
        self.commits += 1
        return out

    def _apply(self, op: tuple[Any, ...]) -> None:
        match op:
            case ("user", phone, key_hash, gen):
                u = self.users.setdefault(phone, [None, 0, False, None])
                u[0], u[1] = key_hash, gen
            case ("privacy", phone, hide):
                self.users[phone][2] = hide
            case ("seen", phone, ts):
                self.users[phone][3] = ts
            case ("out+", owner, seq, peer, pseq, kind, payload):
                self.outbox.setdefault(owner, {})[seq] = (seq, peer, pseq, kind, payload)
            case ("out-", owner, seq):
                self.outbox.get(owner, {}).pop(seq, None)
            case ("in+", owner, seq, peer, kind, payload):
                self.inbox.setdefault(owner, {})[seq] = (seq, peer, kind, payload)
            case ("in-", owner, seq):
                self.inbox.get(owner, {}).pop(seq, None)
            case ("pout", owner, peer, n):
                self.peers.setdefault((owner, peer), [0, 0])[0] = n
            case ("pin", owner, peer, n):
                self.peers.setdefault((owner, peer), [0, 0])[1] = n
            case ("cmid+", owner, cmid, mid, seq):
                self.cmids.setdefault(owner, {})[cmid] = (mid, seq)
            case ("cmid<", owner, seq):
                d = self.cmids.get(owner, {})
                for k in [k for k, v in d.items() if v[1] < seq]:
                    del d[k]
            case _:
                raise StoreError(f"unknown store operation {op!r:.80}")

    def _query(self, q: tuple[Any, ...]) -> Any:
        match q:
            case ("user", phone):
                u = self.users.get(phone)
                return None if u is None else tuple(u)
            case ("registered", phones):
                return tuple(p for p in phones if p in self.users)
            case ("presence", phones):
                return tuple((p, self.users[p][2], self.users[p][3]) for p in phones
                             if p in self.users)
            case ("senders",):
                return tuple(sorted(o for o, d in self.outbox.items() if d))
            case ("pending", owner):
                return bool(self.inbox.get(owner) or self.outbox.get(owner))
            case ("load", owner):
                u = self.users.get(owner)
                return Loaded(
                    None if u is None else tuple(u),
                    tuple(v for _, v in sorted(self.outbox.get(owner, {}).items())),
                    tuple(v for _, v in sorted(self.inbox.get(owner, {}).items())),
                    tuple((p, v[0], v[1]) for (o, p), v in self.peers.items() if o == owner),
                    tuple(sorted(((c, m, s) for c, (m, s) in self.cmids.get(owner, {}).items()),
                                 key=lambda r: r[2])),
                )
        raise StoreError(f"unknown store query {q!r:.80}")

    def close(self) -> None:
        pass


# ---------------------------------------------------------------------------- sqlite

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (phone TEXT PRIMARY KEY, key_hash BLOB, gen INTEGER,
    hide INTEGER NOT NULL DEFAULT 0, last_seen REAL);
CREATE TABLE IF NOT EXISTS outbox (owner TEXT, seq INTEGER, peer TEXT, pseq INTEGER,
    kind TEXT, payload BLOB, PRIMARY KEY (owner, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS inbox (owner TEXT, seq INTEGER, peer TEXT, kind TEXT,
    payload BLOB, PRIMARY KEY (owner, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS peers (owner TEXT, peer TEXT, out_seq INTEGER NOT NULL DEFAULT 0,
    in_seq INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (owner, peer)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cmids (owner TEXT, cmid TEXT, mid TEXT, seq INTEGER,
    PRIMARY KEY (owner, cmid)) WITHOUT ROWID;
"""

_SQL = {
    "user": "INSERT INTO users (phone, key_hash, gen) VALUES (?, ?, ?) ON CONFLICT(phone) "
            "DO UPDATE SET key_hash = excluded.key_hash, gen = excluded.gen",
    "privacy": "UPDATE users SET hide = ? WHERE phone = ?",
    "seen": "UPDATE users SET last_seen = ? WHERE phone = ?",
    "out+": "INSERT OR REPLACE INTO outbox VALUES (?, ?, ?, ?, ?, ?)",
    "out-": "DELETE FROM outbox WHERE owner = ? AND seq = ?",
    "in+": "INSERT OR REPLACE INTO inbox VALUES (?, ?, ?, ?, ?)",
    "in-": "DELETE FROM inbox WHERE owner = ? AND seq = ?",
    "pout": "INSERT INTO peers (owner, peer, out_seq) VALUES (?, ?, ?) "
            "ON CONFLICT(owner, peer) DO UPDATE SET out_seq = excluded.out_seq",
    "pin": "INSERT INTO peers (owner, peer, in_seq) VALUES (?, ?, ?) "
           "ON CONFLICT(owner, peer) DO UPDATE SET in_seq = excluded.in_seq",
    "cmid+": "INSERT OR REPLACE INTO cmids VALUES (?, ?, ?, ?)",
    "cmid<": "DELETE FROM cmids WHERE owner = ? AND seq < ?",
}


_ORDER = ("user", "privacy", "seen", "out+", "in+", "pout", "pin", "cmid+", "cmid<", "out-",
          "in-")
assert set(_ORDER) == set(_SQL)


def _pack(v: Any) -> bytes:
    return msgpack.packb(v, use_bin_type=True)


def _unpack(b: bytes) -> Any:
    return msgpack.unpackb(b, raw=False, use_list=False)


class SqliteBackend:
    """sqlite3 in WAL mode; ``synchronous=FULL`` fsyncs each commit (``durability``
    ``"off"`` skips fsync: for throwaway test data only)."""

    blocking = True

    def __init__(self, path: str, durability: str = "full") -> None:
        d = os.path.dirname(path)
        if d:
            os.makedirs(d, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={'FULL' if durability == 'full' else 'OFF'}")
        # No automatic checkpoint: sqlite would run it inside whichever COMMIT crosses
        # the threshold (writing and fsyncing the database file: hundreds of ms on a
        # busy disk, while every writer waits). The store process runs them instead,
        # mostly in the background (see Store and checkpoint()).
        self.db.execute("PRAGMA wal_autocheckpoint=0")
        # a store process of an earlier run may still be finishing its last commit
        self.db.execute("PRAGMA busy_timeout=10000")
        self.db.executescript(_SCHEMA)

    def run(self, batch: list[tuple[str, Any]]) -> list[Any]:
        out = self.stage(batch)
        self.commit()
        return out

    def stage(self, batch: list[tuple[str, Any]]) -> list[Any]:
        """Execute the batch in an open transaction (no disk wait: the pages stay in
        sqlite's cache until the commit). Runs on the node's thread: holding the GIL
        for many short statements from a pool thread would cost a GIL hand-off each."""
        db = self.db
        out: list[Any] = []
        pending: dict[str, list[tuple[Any, ...]]] = {}
        db.execute("BEGIN")
        try:
            for kind, arg in batch:
                if kind == "w":
                    for op in arg:
                        self._add(pending, op)
                    out.append(None)
                else:
                    self._run(db, pending)  # a read sees every write before it
                    out.append(self._query(db, arg))
            self._run(db, pending)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return out

    @staticmethod
    def _add(pending: dict[str, list[tuple[Any, ...]]], op: tuple[Any, ...]) -> None:
        k = op[0]
        if k not in _SQL:
            raise StoreError(f"unknown store operation {op!r:.80}")
        if k in ("out+", "in+"):
            args = (*op[1:-1], _pack(op[-1]))
        elif k in ("privacy", "seen"):
            args = (op[2], op[1])
        else:
            args = op[1:]
        rows = pending.get(k)
        if rows is None:
            pending[k] = [args]
        else:
            rows.append(args)

    @staticmethod
    def _run(db: sqlite3.Connection, pending: dict[str, list[tuple[Any, ...]]]) -> None:
        """One ``executemany`` per kind, in ``_ORDER``. Reordering across requests is
        safe: no two requests of one batch touch the same row (a process has at most
        one write in flight, rows are per owner, and a row is deleted only after the
        write that made it was answered)."""
        if not pending:
            return
        for k in _ORDER:
            rows = pending.get(k)
            if rows:
                db.executemany(_SQL[k], rows)
        pending.clear()

    def commit(self) -> None:
        """Write and fsync the transaction: one C call that releases the GIL, so it
        runs in the thread pool while the node goes on."""
        try:
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise

    @staticmethod
    def _query(db: sqlite3.Connection, q: tuple[Any, ...]) -> Any:
        match q:
            case ("user", phone):
                row = db.execute("SELECT key_hash, gen, hide, last_seen FROM users "
                                 "WHERE phone = ?", (phone,)).fetchone()
                return None if row is None else (row[0], row[1], bool(row[2]), row[3])
            case ("registered", phones):
                found = set()
                for i in range(0, len(phones), 500):
                    chunk = phones[i : i + 500]
                    marks = ",".join("?" * len(chunk))
                    found.update(r[0] for r in db.execute(
                        f"SELECT phone FROM users WHERE phone IN ({marks})", chunk))
                return tuple(p for p in phones if p in found)
            case ("senders",):
                return tuple(r[0] for r in db.execute(
                    "SELECT DISTINCT owner FROM outbox ORDER BY owner"))
            case ("pending", owner):
                return (db.execute("SELECT 1 FROM inbox WHERE owner = ? LIMIT 1",
                                   (owner,)).fetchone() is not None
                        or db.execute("SELECT 1 FROM outbox WHERE owner = ? LIMIT 1",
                                      (owner,)).fetchone() is not None)
            case ("presence", phones):
                rows = []
                for p in phones:
                    r = db.execute("SELECT hide, last_seen FROM users WHERE phone = ?",
                                   (p,)).fetchone()
                    if r is not None:
                        rows.append((p, bool(r[0]), r[1]))
                return tuple(rows)
            case ("load", owner):
                row = db.execute("SELECT key_hash, gen, hide, last_seen FROM users "
                                 "WHERE phone = ?", (owner,)).fetchone()
                return Loaded(
                    None if row is None else (row[0], row[1], bool(row[2]), row[3]),
                    tuple((s, p, ps, k, _unpack(b)) for s, p, ps, k, b in db.execute(
                        "SELECT seq, peer, pseq, kind, payload FROM outbox WHERE owner = ? "
                        "ORDER BY seq", (owner,))),
                    tuple((s, p, k, _unpack(b)) for s, p, k, b in db.execute(
                        "SELECT seq, peer, kind, payload FROM inbox WHERE owner = ? "
                        "ORDER BY seq", (owner,))),
                    tuple(db.execute("SELECT peer, out_seq, in_seq FROM peers "
                                     "WHERE owner = ?", (owner,))),
                    tuple(db.execute("SELECT cmid, mid, seq FROM cmids WHERE owner = ? "
                                     "ORDER BY seq", (owner,))),
                )
        raise StoreError(f"unknown store query {q!r:.80}")

    def checkpoint(self, background: bool) -> None:
        """Copy the WAL into the database file (``PASSIVE``: never blocks the writer).

        ``background``: from a connection of its own, while commits go on (it copies
        what was committed when it started). Otherwise on the store's connection,
        between two commits: the few frames left are copied, the WAL is then wholly
        checkpointed, and the next transaction starts it over (it does not grow)."""
        if not background:
            self.db.execute("PRAGMA wal_checkpoint(PASSIVE)")
            return
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            db.close()

    def close(self) -> None:
        self.db.close()


# The wire between the node and its store process (chat.store_child): frames of a
# 4-byte big-endian length and one msgpack value; a Loaded travels as extension type 1.
HDR = struct.Struct(">I")
_LOADED = 1


def wire_pack(value: Any) -> bytes:
    body = msgpack.packb(value, use_bin_type=True, default=_wire_default)
    return HDR.pack(len(body)) + body


def _wire_default(v: Any) -> Any:
    if isinstance(v, Loaded):
        fields = (v.user, v.outbox, v.inbox, v.peers, v.cmids)
        return msgpack.ExtType(_LOADED, msgpack.packb(fields, use_bin_type=True))
    raise TypeError(f"cannot send {type(v).__name__} between the node and its store")


def _wire_ext(code: int, data: bytes) -> Any:
    if code == _LOADED:
        return Loaded(*msgpack.unpackb(data, raw=False, use_list=False))
    return msgpack.ExtType(code, data)


def wire_unpack(body: bytes) -> Any:
    return msgpack.unpackb(body, raw=False, use_list=False, ext_hook=_wire_ext)


def read_exact(sock: Any, n: int) -> bytes | None:
    """``n`` bytes from ``sock``, or None at end of input (or a reset)."""
    buf = bytearray()
    while len(buf) < n:
        try:
            chunk = sock.recv(n - len(buf))
        except ConnectionResetError:
            return None
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


class SqliteProcessBackend:
    """``SqliteBackend`` in an OS process of its own (``chat.store_child``), so that the
    SQL work and the WAL writes of every group commit run beside the node instead of on
    its thread: ``stage`` sends the batch and waits (cooperatively: the node runs on)
    for the rows' results, ``commit`` for the end of the disk wait. The store process
    starts it at ``open`` and stops it at ``close``; if it dies, the batch in hand gets
    ``StoreError`` (it may or may not have been committed: its callers crash, and
    reload from the store) and a new one is started for the next batch.
    """

    blocking = True
    threaded_commit = False  # commit() waits on a socket, not in a thread

    def __init__(self, path: str, durability: str = "full") -> None:
        self.path = path  # (its directory is made by the store process's SqliteBackend)
        self.durability = durability
        self.proc: Any = None
        self.sock: Any = None
        self.dead = False

    def open(self) -> None:
        # (stdlib socket and subprocess: cooperative after otp.patch(), as the node's
        # sockets are; waiting on them lets the node run)
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        # the same code as this node (a release sets its own sys.path)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "chat.store_child", os.path.abspath(self.path),
                 self.durability, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, env=env)
        finally:
            theirs.close()
        self.sock = mine
        self.dead = False

    def run(self, batch: list[tuple[str, Any]]) -> list[Any]:
        out = self.stage(batch)
        self.commit()
        return out

    def stage(self, batch: list[tuple[str, Any]]) -> list[Any]:
        data = wire_pack(batch)
        try:
            n = self.sock.send(data)  # (all of it, nearly always: sendall costs more)
            if n < len(data):
                self.sock.sendall(memoryview(data)[n:])
        except OSError as e:
            self._died(f"cannot reach the store process: {e}")
        return list(self._answer("staged"))

    def commit(self) -> None:
        self._answer("done")

    def _answer(self, want: str) -> Any:
        kind, value = wire_unpack(self._read(HDR.unpack(self._read(4))[0]))
        if kind == "error":
            raise StoreError(value)
        if kind != want:
            self._died(f"the store process answered {kind!r}, expected {want!r}")
        return value

    def _read(self, n: int) -> bytes:
        try:
            data = read_exact(self.sock, n)
        except OSError as e:
            self._died(f"the store process is unreachable: {e}")
        if data is None:
            self._died("the store process ended")
        return data

    def _died(self, why: str) -> NoReturn:
        self.dead = True
        raise StoreError(why)

    def close(self) -> None:
        sock, proc, self.sock, self.proc = self.sock, self.proc, None, None
        if sock is not None:
            sock.close()  # the store process ends at end of input
        if proc is not None:
            try:
                proc.wait(timeout=30)
            except Exception:
                proc.kill()
                proc.wait()


# ---------------------------------------------------------------------------- process


#: commits between two WAL checkpoints (each one: a background pass, then a short
#: final pass between two commits)
CHECKPOINT_EVERY = 200


class _State:
    __slots__ = ("backend", "checkpointing", "commits", "more", "pending", "rest")

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.pending: list[tuple[Any, tuple[str, Any]]] = []  # (from_, request)
        self.commits = 0  # since the last checkpoint
        self.checkpointing = False
        # the two answers of every request, made once (the state changes in place)
        self.more = NoReply(self, Timeout(0))  # wait for the mailbox to empty
        self.rest = NoReply(self)


def _checkpoint(store: Any, backend: Any) -> None:
    """The background pass of a checkpoint (a process linked to the store)."""
    try:
        run_in_thread(backend.checkpoint, True)
    except Exception as e:  # the final pass, or the next checkpoint, catches up
        log.warning("background checkpoint failed: %s", e)
    send(store, "$checkpointed")


#: The node's backend that runs in the calling process (``direct``: otp.tables), or None.
_DIRECT: NodeVar[Any] = NodeVar("chat.store.direct", default=None)


class Store(GenServer):
    """Group commit: requests accumulate while the mailbox has more; a ``Timeout(0)``
    (the mailbox is empty) or ``MAX_BATCH`` pending requests flush them as one commit.
    A ``direct`` backend (otp.tables, which does its own group commit) is only
    registered here: ``write``/``read`` then run in the caller."""

    def init(self, backend: Backend) -> Ok:
        trap_exit(True)  # so that a shutdown runs terminate: the backend is closed
        opener = getattr(backend, "open", None)
        if opener is not None:
            opener()
        if getattr(backend, "direct", False):
            _DIRECT.set(backend)
        return Ok(_State(backend))

    def handle_call(self, request: Any, from_: Any, state: _State) -> Any:
        # ("w", ops) | ("r", query): answered by _flush, once the batch is durable
        state.pending.append((from_, request))
        if len(state.pending) >= MAX_BATCH:
            self._flush(state)
            return state.rest
        return state.more

    def handle_info(self, msg: Any, state: _State) -> Any:
        if msg == "timeout":
            self._flush(state)
            return state.rest
        if msg.__class__ is Exit:  # a checkpoint process ended (it logs its failures)
            return state.rest
        if msg == "$checkpointed":
            # The final pass, between two commits: only what was committed during the
            # background pass is left to copy.
            try:
                run_in_thread(state.backend.checkpoint, False)  # type: ignore[attr-defined]
            except Exception as e:
                log.warning("checkpoint failed: %s", e)
            state.checkpointing = False
            state.commits = 0
            return state.more if state.pending else state.rest
        return super().handle_info(msg, state)

    def terminate(self, reason: Any, state: _State) -> None:
        _DIRECT.delete()
        state.backend.close()

    @staticmethod
    def _flush(state: _State) -> None:
        batch, state.pending = state.pending, []
        if not batch:
            return
        reqs = [r for _, r in batch]
        backend = state.backend
        try:
            if backend.blocking:
                results = backend.stage(reqs)  # type: ignore[attr-defined]
                # Lookups that act on nothing not yet durable are answered before the
                # disk wait (a "load" waits: its caller must not act on a lost write).
                early = [i for i, (_, r) in enumerate(batch)
                         if r[0] == "r" and r[1][0] in EARLY]
                for i in early:
                    reply(batch[i][0], ("ok", results[i]))
                if early:
                    done = set(early)
                    batch = [b for i, b in enumerate(batch) if i not in done]
                    results = [r for i, r in enumerate(results) if i not in done]
                t0 = _perf()
                if getattr(backend, "threaded_commit", True):
                    run_in_thread(backend.commit)  # type: ignore[attr-defined]
                else:
                    backend.commit()  # type: ignore[attr-defined]
                _COMMIT_SECONDS.observe(_perf() - t0)
                state.commits += 1
                if (state.commits >= CHECKPOINT_EVERY and not state.checkpointing
                        and hasattr(backend, "checkpoint")):
                    state.checkpointing = True
                    spawn_link(_checkpoint, _self(), backend)
            else:
                results = backend.run(reqs)
        except Exception as e:
            err = ("error", f"{type(e).__name__}: {e}")
            for from_, _ in batch:
                reply(from_, err)
            if getattr(backend, "dead", False):
                # Its OS process is gone (killed, or crashed): the batch failed (its
                # callers crash and reload from the store), and a new one takes over.
                log.error("the store process ended (%s); starting a new one", e)
                backend.close()
                backend.open()  # type: ignore[attr-defined]
            return
        for (from_, _), res in zip(batch, results, strict=True):
            reply(from_, ("ok", res))


def start_link(backend: Backend) -> Any:
    """Start the store process (registered as ``chat.store``) over ``backend``."""
    return gen_server.start_link(Store, backend, name=NAME)


def _call(req: tuple[str, Any]) -> Any:
    # A call with no deadline (a timer per request would cost as much as the rest): if
    # the store dies meanwhile, its monitor answers, and StoreError is raised at once.
    try:
        status, value = gen_server.call(NAME, req, None)
    except CallError as e:
        if e.reason == "noproc":
            raise StoreError(f"the store is unavailable ({NAME} is not running)") from None
        raise StoreError(f"the store ended during the request: {e.reason!r}") from None
    if status != "ok":
        raise StoreError(value)
    return value


def write(ops: tuple[tuple[Any, ...], ...]) -> None:
    """Apply ``ops`` atomically and durably; returns once they are on disk."""
    b = _DIRECT.get()
    if b is not None:
        b.run([("w", ops)])
        return
    _call(("w", ops))


def read(query: tuple[Any, ...]) -> Any:
    """Answer ``query``, after every write that reached the store before it."""
    b = _DIRECT.get()
    if b is not None:
        return b.query(query)
    return _call(("r", query))
