"""Transactions: the lock manager (wait-die), the per-process transaction context,
retries, nested transactions and the commit.

Locks live in the node's registry and are taken in the caller's own greenlet (no lock
server: greenlets are cooperative, so check-and-grant never interleaves). A lock is
held by the *outermost* transaction of a process; it is a read or write lock on one
key of a table, or on a whole table.

Deadlock prevention is **wait-die** on transaction timestamps: a transaction that asks
for a lock held by a younger one waits; one that asks for a lock held by an older one
dies, that is, releases everything, waits until that lock is released, and runs its
function again with its *original* timestamp (so it eventually becomes the oldest and
cannot starve). Waits therefore only go from older to younger: no cycle can form.

A process that dies holding locks releases them: normally in the ``finally`` of
``transaction``; and whoever waits on a lock monitors its holders, so if a holder dies
without unwinding, the waiter releases the dead holder's locks itself.

The write set maps (table, key) to the new full content of that key; it is applied at
commit through ``apply_commit`` (ram) or handed to the disc owner (disc), which applies
it after fsync and only then releases the locks and acknowledges.
"""

from __future__ import annotations

from typing import Any

from otp.lowlevel import current_node
from otp.process import Down, demonitor, make_ref, monitor, receive
from otp.process import self as self_pid
from otp.tables._registry import Registry, apply_commit, registry
from otp.tables._table import Table
from otp.tables.errors import CommitFailed, NotInTransaction, TransactionAborted

MISSING: Any = object()

ACTIVE = 0
COMMITTING = 1  # handed to the disc owner: it releases the locks after apply
DONE = 2

WAKE = "$otp_tables_wake"
COMMITTED = "$otp_tables_committed"


class _Lock:
    __slots__ = ("readers", "waiters", "writer", "wwait")

    def __init__(self) -> None:
        self.readers: set[Tx] = set()
        self.writer: Tx | None = None
        self.waiters: list[tuple[Any, Any]] = []
        # Transactions waiting to write this lock. A younger one asking for it (even
        # just to read) dies instead of slipping in ahead: without this, a stream of
        # young readers would starve an old writer forever.
        self.wwait: list[Tx] = []


class _TLock(_Lock):
    """The lock of a table, holding the locks of its keys too."""

    __slots__ = ("keys",)

    def __init__(self) -> None:
        super().__init__()
        self.keys: dict[Any, _Lock] = {}


class Restart(BaseException):
    """Raised inside a transaction that lost wait-die (or whose holder died): unwinds to
    the outermost ``transaction``, which releases everything and runs again. A
    ``BaseException`` so that ``except Exception`` in user code does not swallow it."""

    def __init__(self, lock: _Lock, holders: list[Tx]) -> None:
        super().__init__()
        self.lock = lock
        self.holders = holders


class Conflict(BaseException):
    """A replicated transaction's log entry was aborted by validation (another commit
    changed what it read): ``transaction`` runs the function again (D2)."""


class Tx:
    """A transaction of one process (``top`` is the outermost one, owning the locks)."""

    __slots__ = ("held", "parent", "pid", "reads", "state", "top", "ts", "writes")

    def __init__(self, ts: int, pid: Any, parent: Tx | None) -> None:
        self.ts = ts
        self.pid = pid
        self.parent = parent
        self.top: Tx = parent.top if parent is not None else self
        self.writes: dict[tuple[Table, Any], Any] = {}
        self.held: list[tuple[_TLock, Any, _Lock]] = []  # (table lock, key or MISSING, lock)
        self.state = ACTIVE
        # Replicated tables: {(table, key or MISSING): applied log position when read}
        self.reads: dict[tuple[str, Any], int] | None = None

    def __repr__(self) -> str:
        return f"<tx {self.ts} of {self.pid!r}>"


# --- locks -------------------------------------------------------------------------------


def _conflicts(lock: _Lock, owner: Tx, write: bool, out: list[Tx]) -> None:
    w = lock.writer
    if w is not None and w is not owner:
        out.append(w)
    if write:
        for r in lock.readers:
            if r is not owner:
                out.append(r)


def acquire(reg: Registry, tx: Tx, tab: Table, key: Any, write: bool) -> None:
    """Lock ``key`` of ``tab`` (``key`` MISSING: the whole table) for ``tx``."""
    owner = tx.top
    name = tab.name
    if tab.repl and key is MISSING:
        note_read(reg, owner, tab, MISSING)
    if key is not MISSING:
        # Fast path: nobody holds the table lock (in a conflicting mode) and nobody
        # locks the key: grant at once.
        tl = reg.locks.get(name)
        if tl is None:
            tl = reg.locks[name] = _TLock()
        if tl.writer is None and not (write and tl.readers) and key not in tl.keys and (
            not tl.wwait
        ):
            kl = tl.keys[key] = _Lock()
            if write:
                kl.writer = owner
            else:
                kl.readers.add(owner)
            owner.held.append((tl, key, kl))
            return
    while True:
        tl = reg.locks.get(name)
        if tl is None:
            tl = reg.locks[name] = _TLock()
        if key is MISSING:
            lock: _Lock = tl
        else:
            kl2 = tl.keys.get(key)
            if kl2 is None:
                kl2 = tl.keys[key] = _Lock()
            lock = kl2
        if write:
            if lock.writer is owner:
                return
        elif lock.writer is owner or owner in lock.readers:
            return
        holders: list[Tx] = []
        _conflicts(tl, owner, write, holders)
        if lock is tl:
            for kl2 in tl.keys.values():
                _conflicts(kl2, owner, write, holders)
            target: _Lock = tl
        else:
            # A conflict at table level is released through the table lock: wait there.
            target = tl if holders else lock
            _conflicts(lock, owner, write, holders)
        if not holders:
            for w in lock.wwait:
                if w is not owner and w.ts < owner.ts:
                    raise Restart(lock, [w])  # die: an older one waits to write it
            if lock is not tl:
                for w in tl.wwait:
                    if w is not owner and w.ts < owner.ts:
                        raise Restart(tl, [w])
            if write:
                lock.writer = owner
            else:
                lock.readers.add(owner)
            owner.held.append((tl, key, lock))
            return
        if (lock is not tl and lock.writer is None and not lock.readers
                and not lock.waiters and not lock.wwait):
            del tl.keys[key]  # created just now, for nothing
        for h in holders:
            if h.ts < owner.ts:
                raise Restart(target, holders)  # die: an older one holds it
        if write:
            lock.wwait.append(owner)
            try:
                wait_for(reg, target, holders)  # wait: every holder is younger
            finally:
                lock.wwait.remove(owner)
                if (lock is not tl and lock.writer is None and not lock.readers
                        and not lock.waiters and not lock.wwait
                        and tl.keys.get(key) is lock):
                    del tl.keys[key]
        else:
            wait_for(reg, target, holders)


def wait_for(reg: Registry, lock: _Lock, holders: list[Tx]) -> None:
    """Wait until ``lock`` is released by someone, or until one of ``holders`` dies
    (we monitor them: one that died without unwinding has its locks released by us).
    The caller then checks again."""
    ref = make_ref()
    me = self_pid()
    entry = (me, ref)
    lock.waiters.append(entry)
    mons: dict[Any, Tx] = {}
    for h in holders:
        if h.state == ACTIVE and h.pid != me:
            mons[monitor(h.pid)] = h

    def match(m: Any) -> bool:
        if m.__class__ is tuple:
            return len(m) == 2 and m[0] == WAKE and m[1] is ref
        return m.__class__ is Down and m.ref in mons

    m = receive(match)
    for r in mons:
        demonitor(r, flush=True)
    if m.__class__ is tuple:
        return
    h = mons[m.ref]
    if h.state == ACTIVE:
        release_all(h)  # it died holding locks without unwinding
        h.state = DONE
    # Woken by a death, not by a release: withdraw, and drop a wake already sent.
    if entry in lock.waiters:
        lock.waiters.remove(entry)
    else:
        receive(lambda x: x.__class__ is tuple and len(x) == 2 and x[1] is ref, 0,
                default=None)


def _wake(lock: _Lock) -> None:
    # Delivered by the kernel, not sent: the release is the lock table's act, whoever
    # runs it, and a transaction killed mid-way releases in its ``finally``, where a
    # send from its (dead) process would be dropped (docs/semantics.md P17).
    waiters = lock.waiters
    lock.waiters = []
    node = current_node()
    for pid, ref in waiters:
        p = node.lookup(pid)
        if p is not None:
            node.deliver(p, (WAKE, ref))


def release_all(owner: Tx) -> None:
    """Release every lock of ``owner`` and wake whoever waits on them."""
    held = owner.held
    owner.held = []
    for tl, key, lock in held:
        if lock.writer is owner:
            lock.writer = None
        lock.readers.discard(owner)
        if lock.waiters:
            _wake(lock)
        if lock is not tl and lock.writer is None and not lock.readers and not lock.wwait:
            if tl.keys.get(key) is lock:
                del tl.keys[key]
        if tl.waiters:  # someone waits for the whole table: any key release matters
            _wake(tl)


# --- the transaction context ---------------------------------------------------------------


def current_tx(reg: Registry, what: str) -> Tx:
    tx = reg.tx(self_pid())
    if tx is None:
        raise NotInTransaction(what)
    return tx


def lookup(tx: Tx, tab: Table, key: Any) -> Any:
    """What ``key`` holds as seen from inside ``tx`` (None when absent)."""
    k = (tab, key)
    t: Tx | None = tx
    while t is not None:
        v = t.writes.get(k, MISSING)
        if v is not MISSING:
            return v
        t = t.parent
    if tab.repl:
        note_read(registry(), tx.top, tab, key)
    return tab.data.get(key)


def note_read(reg: Registry, top: Tx, tab: Table, key: Any) -> None:
    """Remember that ``top`` read ``key`` (MISSING: the whole table) of a replicated
    table, at this replica's applied log position (validated at commit)."""
    reads = top.reads
    if reads is None:
        reads = top.reads = {}
    k = (tab.name, key)
    if k not in reads:
        reads[k] = reg.repl.state.position if reg.repl is not None else 0


def put(tx: Tx, tab: Table, key: Any, value: Any) -> None:
    tx.writes[(tab, key)] = value


def overlay(tx: Tx, tab: Table) -> dict[Any, Any]:
    """Every key of ``tab`` this transaction (and its parents) changed -> its value."""
    chain = []
    t: Tx | None = tx
    while t is not None:
        chain.append(t)
        t = t.parent
    out: dict[Any, Any] = {}
    for t in reversed(chain):
        for (tb, key), v in t.writes.items():
            if tb is tab:
                out[key] = v
    return out


def transaction(fn: Any, args: tuple[Any, ...], retries: int | None) -> Any:
    reg = registry()
    me = self_pid()
    parent = reg.tx(me)
    key = id(me)
    if parent is not None:
        return _nested(reg, me, parent, fn, args)
    ts = reg.next_ts()
    attempts = 0
    while True:
        tx = Tx(ts, me, None)
        reg.txs[key] = tx
        restart: Restart | None = None
        try:
            result = fn(*args)
            commit(reg, tx)
            return result
        except Restart as r:
            restart = r
        except Conflict:
            restart = None
        finally:
            if reg.txs.get(key) is tx:
                del reg.txs[key]
            if tx.state == ACTIVE:
                tx.state = DONE
                release_all(tx)
        attempts += 1
        if retries is not None and attempts > retries:
            raise TransactionAborted("retries")
        if restart is None:
            continue  # a replicated commit lost validation: run again at once
        # Died (wait-die): wait for the lock we lost on to be released, then run again.
        lock = restart.lock
        holders = [h for h in restart.holders if h.state != DONE]
        if holders:
            wait_for(reg, lock, holders)


def _nested(reg: Registry, me: Any, parent: Tx, fn: Any, args: tuple[Any, ...]) -> Any:
    # Mnesia's nested transactions: the child sees the parent's writes; its own become
    # the parent's when it returns, or vanish if it aborts (the abort is raised to the
    # parent's code, which may go on). Locks belong to the outermost transaction; a
    # restart (lock conflict) restarts the outermost.
    tx = Tx(parent.ts, me, parent)
    reg.txs[id(me)] = tx
    try:
        result = fn(*args)
    except BaseException:
        tx.writes.clear()
        raise
    finally:
        reg.txs[id(me)] = parent
    parent.writes.update(tx.writes)
    return result


_submit: Any = None


def commit(reg: Registry, tx: Tx) -> None:
    global _submit
    writes = tx.writes
    if not writes:
        return
    for tab, _k in writes:
        if tab.repl:
            from otp.tables._repl_api import commit_tx

            commit_tx(reg, tx)
            return
        if tab.storage == "disc":
            break
    else:
        tx.state = DONE
        apply_commit(reg, [(tab, key, v) for (tab, key), v in writes.items()], False)
        release_all(tx)
        return
    if _submit is None:
        from otp.tables._disc_owner import submit

        _submit = submit
    tid = _submit(reg, [("put", tab, key, v) for (tab, key), v in writes.items()], tx)
    tx.state = COMMITTING  # from now on the disc owner releases the locks
    wait_durable(tid)


def wait_durable(tid: int) -> Any:
    """Wait for the disc owner's acknowledgement ``(COMMITTED, tid, error, result)``."""

    def ack(m: Any) -> bool:
        return m.__class__ is tuple and len(m) == 4 and m[0] is COMMITTED and m[1] == tid

    msg = receive(ack)
    if msg[2] is not None:
        raise CommitFailed(f"commit {tid} was not made durable: {msg[2]}", msg[2])
    return msg[3]


def abort(reason: Any) -> None:
    reg = registry()
    current_tx(reg, "abort")
    raise TransactionAborted(reason)
