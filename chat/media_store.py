"""Media blobs on disk and their bookkeeping: who uploaded each, who may read it, who
has still to download it, and when it goes.

One process (``chat.media.store``, a gen_server) owns the blob directory and a small
sqlite database beside it, ``<data_dir>/media/media.db`` (WAL, ``synchronous=FULL``:
every change is on disk before it is answered). It serialises everything that
creates or deletes a blob, so an upload that deduplicates onto a blob can never race
the sweep that deletes it::

    <data_dir>/media/
        media.db          blobs (id, size, created, referenced), access (id, phone,
                          role "up" | "rcpt", pending)
        blobs/ab/abcd…    a blob, named by the hex SHA-256 of its bytes
        tmp/              uploads being received (removed at start)
        token.key         the key tokens are signed with (0600)

Requests (named records, answered by ``call``)::

    Put(tmp, id, size, uploader)        -> "new" | "dup"   (tmp renamed into place)
    Reference(id, size, sender, to)     -> None | (code, message)
    Access(id, phone)                   -> size (int) | "unknown" | "forbidden"
    Ack(phone, ids)                     -> ids deleted (tuple)
    Sweep()                             -> ids deleted (tuple)

Deletion rules (docs/protocol.md, "Media"): a blob is deleted once it was named by a
message and no recipient is pending any more (each recipient's ``media_ack``), or
``retention`` seconds after its upload, or ``unreferenced_grace`` seconds after its
upload if no message named it. The sweep runs every ``sweep_interval`` seconds of the
node clock (so tests run it on the mock clock).

Times are stored as wall-clock seconds, so the schedule holds across restarts; the
store reads them as ``wall0 + (now() - now0)``: the node clock's progress from the
wall-clock time it started at (``MediaClock``).

Failure semantics: a blob is written *before* its row (temp file, fsync, rename, fsync
of the directory, then the row) and deleted *after* its row, so a crash at any point
leaves at worst a file without a row, or a temp file: both are removed when the store
starts, before it answers anything. A row whose file is missing is dropped then too.

Example (in a process of a running node)::

    from chat import media_store
    media_store.start_link("/tmp/chat/media", retention=86400.0)
    media_store.call(media_store.Access("ab" * 32, "+14155550100"))   # 'unknown'
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from otp import gen_server
from otp.gen_server import GenServer, NoReply, Ok, Reply
from otp.node import NodeVar
from otp.process import cancel_timer, send_after
from otp.process import now as _now
from otp.process import self as _self
from otp.threads import run_in_thread

__all__ = [
    "NAME",
    "Access",
    "Ack",
    "MediaClock",
    "Put",
    "Reference",
    "Sweep",
    "blob_path",
    "call",
    "fsync_dir",
    "is_media_id",
    "start_link",
    "unlink_quiet",
    "wall",
]

NAME = "chat.media.store"
log = logging.getLogger("chat.media")
_ID = re.compile(r"[0-9a-f]{64}")


def is_media_id(value: Any) -> bool:
    """True for a media id: 64 lowercase hex digits (a SHA-256). Nothing else is ever
    joined to a path."""
    return value.__class__ is str and _ID.fullmatch(value) is not None


def blob_path(root: str, media_id: str) -> str:
    if not is_media_id(media_id):
        raise ValueError(f"expected a media id (64 lowercase hex digits), got "
                         f"{media_id!r:.80}")
    return os.path.join(root, "blobs", media_id[:2], media_id)


class MediaClock:
    """Wall-clock seconds that move with the node clock: ``wall0 + (now() - now0)``,
    so the mock clock of the tests moves them too."""

    def __init__(self) -> None:
        self.wall0 = time.time()
        self.now0 = _now()

    def __call__(self) -> float:
        return self.wall0 + (_now() - self.now0)


_CLOCK: NodeVar[MediaClock] = NodeVar("chat.media.clock", factory=MediaClock)


def wall() -> float:
    """The node's ``MediaClock`` time (wall-clock seconds moved by the node clock): the
    times of blob records and the expiry of tokens."""
    return _CLOCK.get()()


# ---------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class Put:
    """A complete upload in ``tmp`` (fsync'd), of SHA-256 ``id``: move it into place."""

    tmp: str
    id: str
    size: int
    uploader: str


@dataclass(frozen=True)
class Reference:
    """A message from ``sender`` to ``to`` names blob ``id`` (of ``size`` bytes)."""

    id: str
    size: int
    sender: str
    to: str


@dataclass(frozen=True)
class Access:
    id: str
    phone: str


@dataclass(frozen=True)
class Ack:
    phone: str
    ids: tuple[str, ...]


@dataclass(frozen=True)
class Sweep:
    pass


@dataclass(frozen=True)
class _Tick:
    pass


def call(request: Any, timeout: float | None = 30.0) -> Any:
    return gen_server.call(NAME, request, timeout)


# ---------------------------------------------------------------------------- files


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def unlink_quiet(path: str) -> None:
    """Remove ``path`` if it is there."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


_SCHEMA = """
CREATE TABLE IF NOT EXISTS blobs (id TEXT PRIMARY KEY, size INTEGER NOT NULL,
    created REAL NOT NULL, referenced INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS access (id TEXT, phone TEXT, role TEXT, pending INTEGER
    NOT NULL DEFAULT 0, PRIMARY KEY (id, phone, role)) WITHOUT ROWID;
"""


class _Db:
    """The bookkeeping. Every method runs in the thread pool (the disk waits there, the
    node keeps serving), one at a time (the store process waits for each)."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.db = sqlite3.connect(os.path.join(root, "media.db"), isolation_level=None,
                                  check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    def recover(self) -> tuple[int, int]:
        """Remove temp files, blob files without a row, rows without a file."""
        tmp = os.path.join(self.root, "tmp")
        for name in os.listdir(tmp):
            unlink_quiet(os.path.join(tmp, name))
        known = {r[0] for r in self.db.execute("SELECT id FROM blobs")}
        on_disk: set[str] = set()
        files = 0
        blobs = os.path.join(self.root, "blobs")
        for sub in os.listdir(blobs):
            d = os.path.join(blobs, sub)
            if not os.path.isdir(d):
                continue
            for name in os.listdir(d):
                if name in known and name[:2] == sub:
                    on_disk.add(name)
                else:
                    unlink_quiet(os.path.join(d, name))
                    files += 1
        rows = 0
        for mid in known - on_disk:
            self._drop_rows(mid)
            rows += 1
        return files, rows

    def _drop_rows(self, mid: str) -> None:
        with self.db:
            self.db.execute("DELETE FROM access WHERE id = ?", (mid,))
            self.db.execute("DELETE FROM blobs WHERE id = ?", (mid,))

    def delete(self, mid: str) -> None:
        self._drop_rows(mid)  # the row first: a crash leaves a file, removed at start
        unlink_quiet(blob_path(self.root, mid))

    def put(self, req: Put, now: float) -> str:
        db = self.db
        if db.execute("SELECT 1 FROM blobs WHERE id = ?", (req.id,)).fetchone():
            unlink_quiet(req.tmp)
            with db:
                db.execute("INSERT OR IGNORE INTO access VALUES (?, ?, 'up', 0)",
                           (req.id, req.uploader))
            return "dup"
        path = blob_path(self.root, req.id)
        d = os.path.dirname(path)
        if not os.path.isdir(d):
            os.mkdir(d)
            fsync_dir(os.path.dirname(d))
        os.replace(req.tmp, path)
        fsync_dir(d)
        with db:
            db.execute("INSERT INTO blobs VALUES (?, ?, ?, 0)", (req.id, req.size, now))
            db.execute("INSERT OR IGNORE INTO access VALUES (?, ?, 'up', 0)",
                       (req.id, req.uploader))
        return "new"

    def _may_read(self, mid: str, phone: str) -> bool:
        return self.db.execute("SELECT 1 FROM access WHERE id = ? AND phone = ?",
                               (mid, phone)).fetchone() is not None

    def reference(self, req: Reference) -> tuple[str, str] | None:
        db = self.db
        row = db.execute("SELECT size FROM blobs WHERE id = ?", (req.id,)).fetchone()
        if row is None or not self._may_read(req.id, req.sender):
            return ("unknown_media", f"media {req.id}: no such media, or not yours to "
                                     f"send (upload it first)")
        if row[0] != req.size:
            return ("bad_media", f"media record: key 'size': expected {row[0]} (the "
                                 f"uploaded blob's size), got {req.size}")
        with db:
            db.execute("INSERT OR IGNORE INTO access VALUES (?, ?, 'rcpt', 1)",
                       (req.id, req.to))
            db.execute("UPDATE blobs SET referenced = 1 WHERE id = ?", (req.id,))
        return None

    def access(self, req: Access) -> int | str:
        row = self.db.execute("SELECT size FROM blobs WHERE id = ?", (req.id,)).fetchone()
        if row is None:
            return "unknown"
        return int(row[0]) if self._may_read(req.id, req.phone) else "forbidden"

    def ack(self, req: Ack) -> tuple[str, ...]:
        db = self.db
        done = []
        with db:
            for mid in req.ids:
                cur = db.execute("UPDATE access SET pending = 0 WHERE id = ? AND phone = ? "
                                 "AND role = 'rcpt' AND pending = 1", (mid, req.phone))
                if cur.rowcount:
                    done.append(mid)
        gone = []
        for mid in done:
            if db.execute("SELECT 1 FROM access WHERE id = ? AND pending = 1",
                          (mid,)).fetchone() is None:
                self.delete(mid)
                gone.append(mid)
        return tuple(gone)

    def sweep(self, now: float, retention: float, grace: float) -> tuple[str, ...]:
        ids = [r[0] for r in self.db.execute(
            "SELECT id FROM blobs WHERE created <= ? OR (referenced = 0 AND created <= ?)",
            (now - retention, now - grace))]
        for mid in ids:
            self.delete(mid)
        return tuple(ids)


# ---------------------------------------------------------------------------- process


class _State:
    __slots__ = ("db", "grace", "interval", "retention", "run", "timer")


class MediaStore(GenServer):
    """The owner of the blobs and their rows; see the module docstring."""

    def init(self, arg: tuple[str, float, float, float, bool]) -> Any:
        root, retention, grace, interval, threaded = arg
        for sub in ("", "blobs", "tmp"):
            os.makedirs(os.path.join(root, sub), exist_ok=True)
        s = _State()
        s.run = run_in_thread if threaded else _direct
        s.db = s.run(_Db, root)
        s.retention, s.grace, s.interval = retention, grace, interval
        files, rows = s.run(s.db.recover)
        if files or rows:
            log.warning("media store: removed %d blob files without a record and %d "
                        "records without a file (an interrupted write or delete)",
                        files, rows)
        s.timer = send_after(interval, _self(), _Tick())
        return Ok(s)

    def handle_call(self, request: Any, from_: Any, s: _State) -> Any:
        db, run = s.db, s.run
        match request:
            case Put():
                return Reply(run(db.put, request, wall()), s)
            case Reference():
                return Reply(run(db.reference, request), s)
            case Access():
                return Reply(run(db.access, request), s)
            case Ack():
                gone = run(db.ack, request)
                if gone:
                    log.info("media: deleted %d blob(s) every recipient has", len(gone))
                return Reply(gone, s)
            case Sweep():
                return Reply(self._sweep(s), s)
        return super().handle_call(request, from_, s)

    def _sweep(self, s: _State) -> tuple[str, ...]:
        gone = s.run(s.db.sweep, wall(), s.retention, s.grace)
        if gone:
            log.info("media: deleted %d expired or unreferenced blob(s)", len(gone))
        return gone  # type: ignore[no-any-return]

    def handle_info(self, msg: Any, s: _State) -> Any:
        if isinstance(msg, _Tick):
            self._sweep(s)
            s.timer = send_after(s.interval, _self(), _Tick())
            return NoReply(s)
        return super().handle_info(msg, s)

    def terminate(self, reason: Any, s: _State) -> None:
        cancel_timer(s.timer)
        s.db.close()


def _direct(fn: Any, *args: Any) -> Any:
    return fn(*args)


def start_link(root: str, retention: float = 30 * 86400.0, grace: float = 3600.0,
               interval: float = 60.0, threaded: bool = True) -> Any:
    """Start the media store on ``root`` (made if missing), registered as
    ``chat.media.store``. ``threaded``: its sqlite work and fsyncs run in the node's
    thread pool (the node serves meanwhile); False runs them on the node's thread
    (tests on the mock clock, which cannot see a thread's progress)."""
    return gen_server.start_link(
        MediaStore, (root, retention, grace, interval, threaded), name=NAME)
