"""The disc layer: one SQLite database per node directory, in WAL mode, synchronous=FULL
(the replicated copies: NORMAL, see ``_repl``).

Everything here runs in a pool thread (``run_in_thread``), never on the hub; a real OS
lock serialises use of the one connection (a restarted disc owner may start while a
thread of its predecessor still finishes a write).

Layout (``<directory>/tables.sqlite``)::

    schema(ident INTEGER PRIMARY KEY, name TEXT UNIQUE, def TEXT)   -- disc tables
    t<ident>(rid INTEGER PRIMARY KEY, val BLOB)   -- one row per key: the pickled
                                                  -- record (bag: tuple of records)
    meta(k TEXT PRIMARY KEY, v INTEGER)           -- 'batch': last group commit written

Row ids are chosen in memory by the disc owner (key -> rid), so keys never need a
canonical byte encoding. One group commit is one SQLite transaction: every commit in
it is on disc (WAL fsync'd) when ``write_batch`` returns, or none is.

Recovery on open: SQLite itself ignores WAL frames after the last valid commit frame
(a torn or corrupt tail). Before opening, ``scan_wal`` checks the WAL frame checksums
the same way, to *say* in the log how much was cut. A main database file that SQLite
finds malformed is moved aside (``tables.sqlite.corrupt-N``) and every readable row is
salvaged into a fresh file, with a log line per table; the node starts either way.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import struct
from collections.abc import Callable
from typing import Any

from otp.threads import OSLock

log = logging.getLogger("otp.tables")

DB_NAME = "tables.sqlite"

_WAL_MAGIC_LE = 0x377F0682
_WAL_MAGIC_BE = 0x377F0683


def _wal_checksum(data: bytes, s0: int, s1: int, big: bool) -> tuple[int, int]:
    n = len(data) // 4
    words = struct.unpack((">" if big else "<") + f"{n}I", data)
    mask = 0xFFFFFFFF
    for i in range(0, n, 2):
        s0 = (s0 + words[i] + s1) & mask
        s1 = (s1 + words[i + 1] + s0) & mask
    return s0, s1


def scan_wal(path: str) -> tuple[int, int, int]:
    """Read a WAL file as SQLite will: return (bytes up to the end of the last valid
    commit frame, file size, number of valid commit frames)."""
    try:
        size = os.path.getsize(path)
    except OSError:
        return 0, 0, 0
    if size < 32:
        return 0, size, 0
    with open(path, "rb") as f:
        hdr = f.read(32)
        magic, _version, page_size, _ckpt, salt1, salt2, c1, c2 = struct.unpack(">8I", hdr)
        if magic not in (_WAL_MAGIC_LE, _WAL_MAGIC_BE):
            return 0, size, 0
        big = magic == _WAL_MAGIC_BE
        s0, s1 = _wal_checksum(hdr[:24], 0, 0, big)
        if (s0, s1) != (c1, c2) or page_size < 512 or page_size & (page_size - 1):
            return 0, size, 0
        good = 32
        commits = 0
        pos = 32
        while True:
            fh = f.read(24)
            if len(fh) < 24:
                break
            page = f.read(page_size)
            if len(page) < page_size:
                break
            _pgno, dbsize, fs1, fs2, fc1, fc2 = struct.unpack(">6I", fh)
            if (fs1, fs2) != (salt1, salt2):
                break  # frames of an older WAL generation: not part of this log
            s0, s1 = _wal_checksum(fh[:8], s0, s1, big)
            s0, s1 = _wal_checksum(page, s0, s1, big)
            if (s0, s1) != (fc1, fc2):
                break
            pos += 24 + page_size
            if dbsize:
                good = pos
                commits += 1
    return good, size, commits


def _torn_tail(path: str) -> int:
    """Bytes at the end of the WAL that belong to a torn or corrupt commit (frames of
    the current generation, same salts as the header, cut short or failing their
    checksum): what recovery drops. Frames of an older generation are a normal leftover."""
    good, size, _ = scan_wal(path)
    if size <= good:
        return 0
    with open(path, "rb") as f:
        hdr = f.read(32)
        if len(hdr) < 32:
            return size
        f.seek(good)
        fh = f.read(24)
    if len(fh) < 24:
        return size - good
    if fh[8:16] != hdr[16:24]:
        return 0
    return size - good


def _copy_rows(old: sqlite3.Connection, conn: sqlite3.Connection, ident: int
               ) -> tuple[int, int]:
    """Copy every readable row of table ``ident``, in rid order, skipping damaged
    pages: after an error, probe further and further ahead for the next readable row.
    Returns (rows copied, damaged stretches skipped)."""
    kept = holes = 0
    lo = -(2**63)
    step = 1
    while True:
        try:
            for rid, val in old.execute(
                f"SELECT rid, val FROM t{ident} WHERE rid > ? ORDER BY rid", (lo,)
            ):
                conn.execute(f"INSERT INTO t{ident} VALUES (?, ?)", (rid, val))
                kept += 1
                lo = rid
                step = 1
            return kept, holes
        except sqlite3.DatabaseError:
            if step == 1:
                holes += 1
            if lo > 2**62 or step > 2**62:
                return kept, holes
            lo = max(lo, 0) + step if lo >= 0 or step > 1 else 0
            step *= 2


class StaleWrite(RuntimeError):
    """A group commit handed out before the owner restarted: not written."""


class DiscFile:
    """The SQLite file of one node directory. Methods run in a pool thread."""

    def __init__(self, directory: str, synchronous: str = "FULL") -> None:
        self.directory = directory
        # FULL: a commit is on disc when write_batch returns. The replicated copies use
        # NORMAL (consistent after a crash, maybe a little behind: their log replays).
        self.synchronous = synchronous
        self.path = os.path.join(directory, DB_NAME)
        self.conn: sqlite3.Connection | None = None
        self.lock = OSLock()
        # Bumped by every open: a write handed out before a restart of the owner (its
        # thread may run late) carries the old epoch and is refused, never applied.
        self.epoch = 0

    # --- open / recover ------------------------------------------------------------

    def open(self) -> int:
        """Open (creating, recovering or salvaging as needed); returns the last batch
        number written."""
        with self.lock:
            self.epoch += 1
            os.makedirs(self.directory, exist_ok=True)
            wal = self.path + "-wal"
            if os.path.exists(wal):
                good, size, commits = scan_wal(wal)
                torn = _torn_tail(wal)
                if torn:
                    log.warning(
                        "otp.tables: %s: cut back to the last whole commit "
                        "(%d bytes of a torn or corrupt commit dropped from the log; "
                        "%d whole commits kept)",
                        wal, size - good, commits,
                    )
            try:
                self.conn = self._connect(self.path)
                self._check()
            except sqlite3.DatabaseError as e:
                if self.conn is not None:
                    self.conn.close()
                    self.conn = None
                self._salvage(e)
            return self._last_batch()

    def _connect(self, path: str) -> sqlite3.Connection:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            conn.execute("PRAGMA cache_size=-16000")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema"
                "(ident INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL, def TEXT NOT NULL)"
            )
            conn.execute("CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v INTEGER)")
        except BaseException:
            conn.close()
            raise
        return conn

    def _check(self) -> None:
        assert self.conn is not None
        rows = self.conn.execute("PRAGMA quick_check").fetchall()
        if rows != [("ok",)]:
            raise sqlite3.DatabaseError(f"quick_check: {rows[:3]!r}")

    def _salvage(self, err: Exception) -> None:
        n = 0
        while os.path.exists(f"{self.path}.corrupt-{n}"):
            n += 1
        bad = f"{self.path}.corrupt-{n}"
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(self.path + suffix):
                os.replace(self.path + suffix, bad + suffix)
        log.error(
            "otp.tables: %s is damaged (%s); moved to %s, salvaging what is readable",
            self.path, err, bad,
        )
        self.conn = conn = self._connect(self.path)
        try:
            old = sqlite3.connect(bad, isolation_level=None)
        except sqlite3.Error as e:
            log.error("otp.tables: nothing salvaged from %s: %s", bad, e)
            return
        try:
            try:
                schema = old.execute("SELECT ident, name, def FROM schema").fetchall()
            except sqlite3.Error as e:
                log.error("otp.tables: schema of %s unreadable (%s): starting empty", bad, e)
                return
            conn.execute("BEGIN")
            for ident, name, defn in schema:
                conn.execute("INSERT INTO schema VALUES (?, ?, ?)", (ident, name, defn))
                conn.execute(f"CREATE TABLE t{int(ident)}(rid INTEGER PRIMARY KEY, val BLOB)")
                kept, holes = _copy_rows(old, conn, int(ident))
                if holes:
                    log.error("otp.tables: table %r: salvaged %d rows; %d damaged stretches "
                              "of rows skipped", name, kept, holes)
                else:
                    log.warning("otp.tables: table %r: salvaged %d rows", name, kept)
            conn.execute("COMMIT")
        finally:
            old.close()

    def _last_batch(self) -> int:
        assert self.conn is not None
        row = self.conn.execute("SELECT v FROM meta WHERE k = 'batch'").fetchone()
        return int(row[0]) if row else 0

    def last_batch(self) -> int:
        with self.lock:
            return self._last_batch()

    # --- reading -----------------------------------------------------------------------

    def read_schema(self) -> list[tuple[int, str, str]]:
        with self.lock:
            assert self.conn is not None
            return [
                (int(i), str(n), str(d))
                for i, n, d in self.conn.execute("SELECT ident, name, def FROM schema")
            ]

    def load(self, ident: int, decode: Callable[[bytes], Any]) -> tuple[list[Any], list[int]]:
        """All rows of table ``ident`` decoded: ([(rid, decoded), ...], unreadable rids)."""
        with self.lock:
            assert self.conn is not None
            out = []
            bad = []
            for rid, val in self.conn.execute(f"SELECT rid, val FROM t{int(ident)}"):
                try:
                    out.append((rid, decode(val)))
                except Exception as e:
                    log.error("otp.tables: row %d of t%d undecodable: %r", rid, ident, e)
                    bad.append(rid)
            return out, bad

    def read_recent(self) -> list[tuple[int, bytes]]:
        """Replicated copies: the writes of the last log records ([(position, blob)])."""
        with self.lock:
            assert self.conn is not None
            try:
                return [(int(p), bytes(w)) for p, w in
                        self.conn.execute("SELECT pos, w FROM recent ORDER BY pos")]
            except sqlite3.OperationalError:
                return []  # no such table: nothing replicated written yet

    # --- writing -----------------------------------------------------------------------

    def write_batch(self, ops: Any, batch: int, epoch: int | None = None) -> None:
        """Write ``ops`` as one durable SQLite transaction. Ops, in order:
        ``("put", ident, rid, blob)``, ``("del", ident, rid)``,
        ``("create", ident, name, def)``, ``("drop", ident)``, ``("def", ident, def)``;
        for replicated copies ``("recent", position, blob)`` and
        ``("recent_prune", position)``.
        ``StaleWrite`` if ``epoch`` is given and the file was opened again since."""
        with self.lock:
            if epoch is not None and epoch != self.epoch:
                raise StaleWrite(f"group {batch} of epoch {epoch} (file now at {self.epoch})")
            conn = self.conn
            assert conn is not None
            conn.execute("BEGIN")
            try:
                i = 0
                n = len(ops)
                while i < n:
                    op = ops[i]
                    kind = op[0]
                    if kind == "put" or kind == "del":
                        ident = op[1]
                        j = i
                        while j < n and ops[j][0] == kind and ops[j][1] == ident:
                            j += 1
                        if kind == "put":
                            conn.executemany(
                                f"INSERT OR REPLACE INTO t{int(ident)}(rid, val) VALUES (?, ?)",
                                [(o[2], o[3]) for o in ops[i:j]],
                            )
                        else:
                            conn.executemany(
                                f"DELETE FROM t{int(ident)} WHERE rid = ?",
                                [(o[2],) for o in ops[i:j]],
                            )
                        i = j
                        continue
                    if kind == "create":
                        conn.execute(
                            f"CREATE TABLE IF NOT EXISTS t{int(op[1])}"
                            "(rid INTEGER PRIMARY KEY, val BLOB)"
                        )
                        conn.execute(
                            "INSERT OR REPLACE INTO schema VALUES (?, ?, ?)", (op[1], op[2], op[3])
                        )
                    elif kind == "drop":
                        conn.execute(f"DROP TABLE IF EXISTS t{int(op[1])}")
                        conn.execute("DELETE FROM schema WHERE ident = ?", (op[1],))
                    elif kind == "def":
                        conn.execute("UPDATE schema SET def = ? WHERE ident = ?", (op[2], op[1]))
                    elif kind == "recent":  # replicated copies: a record's writes
                        conn.execute("CREATE TABLE IF NOT EXISTS recent"
                                     "(pos INTEGER PRIMARY KEY, w BLOB)")
                        conn.execute("INSERT OR REPLACE INTO recent VALUES (?, ?)",
                                     (op[1], op[2]))
                    elif kind == "recent_prune":
                        conn.execute("CREATE TABLE IF NOT EXISTS recent"
                                     "(pos INTEGER PRIMARY KEY, w BLOB)")
                        conn.execute("DELETE FROM recent WHERE pos <= ?", (op[1],))
                    else:  # pragma: no cover - internal
                        raise ValueError(f"unknown disc op {kind!r}")
                    i += 1
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('batch', ?)", (batch,))
                conn.execute("COMMIT")
            except BaseException:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                raise

    def close(self) -> None:
        with self.lock:
            if self.conn is not None:
                self.conn.close()
                self.conn = None
