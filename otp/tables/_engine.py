"""The log engine behind replicated tables: a totally ordered, durable log of records.

Replicated tables never order commits themselves: they hand batches of commits to an
*engine* and apply what the engine's log says, in its order. The interface is small so
that another proven engine can be added without touching the tables' code:

- ``append(entries) -> position``: store the byte strings ``entries`` as *one* record
  at the end of the log, atomically; returns the record's position once it is durable
  (for etcd: on a majority of members). Positions increase strictly along the log but
  need not be consecutive.
- ``read_from(after, limit) -> ReadResult``: the records with a position > ``after``,
  in log order, and the position the log had when read (``upto``). ``Compacted`` when
  records after ``after`` were already compacted away (load a snapshot first).
- ``watch(after)``: an iterator of the records with a position > ``after``, in log
  order, blocking for new ones (``Compacted``/``EngineUnavailable`` end it).
- ``compact(upto)``: drop the records at positions <= ``upto`` (every replica applied
  them); ``horizon()``: the highest position compacted so far (0: none).
- ``put_snapshot(position, blob)`` / ``get_snapshot()``: one snapshot of the state at a
  position, for replicas that lag behind the horizon.
- ``set_meta(name, value)`` / ``get_meta(prefix)``: small named values (each replica's
  applied position, for the compaction horizon).
- ``lock(name, ttl) -> Lease | None``: a named lease-backed lock, held while refreshed
  (``Lease.refresh``, ``Lease.release``): one compactor at a time, and later the chat's
  partition ownership.

Errors: ``EngineUnavailable`` (no majority, no endpoint answers, a timeout: the cause is
in the message), ``EngineRejected`` (the request itself refused: too large...) and
``Compacted``. A failed ``append`` may still have been written (a
timeout after etcd took it): the caller learns it when the record shows up in the log.

Two implementations: ``MemoryEngine`` (in-process, for tests that need no server; one
engine object shared by the replicas that use it) and ``otp.tables._etcd.EtcdEngine``.

Example (in a process)::

    eng = MemoryEngine()
    p = eng.append([b"a", b"b"])
    assert [r.entries for r in eng.read_from(0).records] == [(b"a", b"b")]
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

from otp.errors import TableError
from otp.process import receive, send
from otp.process import self as self_pid


class EngineUnavailable(TableError):
    """The log engine cannot be reached or has no majority (the cause is in the text)."""

    def __init__(self, message: str, reason: Any = "unavailable") -> None:
        super().__init__(message, reason)


class EngineRejected(TableError):
    """The engine refused the request itself (too large, invalid): it was not written,
    and sending it again would not help."""

    def __init__(self, message: str, reason: Any = "rejected") -> None:
        super().__init__(message, reason)


class Compacted(TableError):
    """Records asked for were compacted away (``horizon`` is the compacted position)."""

    def __init__(self, after: int, horizon: int) -> None:
        super().__init__(
            f"log records after position {after} are compacted (horizon {horizon}): "
            "load a snapshot first", ("compacted", after, horizon))
        self.after = after
        self.horizon = horizon


class LogRecord(NamedTuple):
    """One record of the log: its position and the entries appended together."""

    position: int
    entries: tuple[bytes, ...]


class ReadResult(NamedTuple):
    """What ``read_from`` returns: the records, and the log's position when read."""

    records: list[LogRecord]
    upto: int


class Lease:
    """A held lock (see ``Engine.lock``)."""

    def refresh(self) -> bool:
        """Keep it; False when it was lost (expired or taken)."""
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError


class Engine:
    """The interface (see the module docstring)."""

    name = "engine"

    def append(self, entries: Sequence[bytes]) -> int:
        raise NotImplementedError

    def read_from(self, after: int, limit: int = 1000) -> ReadResult:
        raise NotImplementedError

    def watch(self, after: int) -> Iterator[LogRecord]:
        raise NotImplementedError

    def position(self) -> int:
        """The position of the last record of the log (a linearizable read: fails
        without a majority)."""
        raise NotImplementedError

    def compact(self, upto: int) -> None:
        raise NotImplementedError

    def horizon(self) -> int:
        raise NotImplementedError

    def put_snapshot(self, position: int, blob: bytes) -> None:
        raise NotImplementedError

    def get_snapshot(self) -> tuple[int, bytes] | None:
        raise NotImplementedError

    def set_meta(self, name: str, value: bytes) -> None:
        raise NotImplementedError

    def get_meta(self, prefix: str) -> dict[str, bytes]:
        raise NotImplementedError

    def lock(self, name: str, ttl: float) -> Lease | None:
        raise NotImplementedError

    def close(self) -> None:
        """Release connections (watches in progress end)."""

    def describe(self) -> str:
        return self.name


class _MemLease(Lease):
    def __init__(self, eng: MemoryEngine, name: str) -> None:
        self.eng = eng
        self.name = name

    def refresh(self) -> bool:
        return self.eng.locks.get(self.name) is self

    def release(self) -> None:
        if self.eng.locks.get(self.name) is self:
            del self.eng.locks[self.name]


class MemoryEngine(Engine):
    """An in-process log (for tests): positions 1, 2, 3...; watchers are processes of
    the node that created them, woken by a message. ``fail`` set to a string makes
    every call raise ``EngineUnavailable(fail)`` (a partition, for tests)."""

    name = "memory"

    def __init__(self) -> None:
        self.records: list[LogRecord] = []
        self.last = 0
        self._horizon = 0
        self.snapshot: tuple[int, bytes] | None = None
        self.meta: dict[str, bytes] = {}
        self.locks: dict[str, _MemLease] = {}
        self.watchers: list[Any] = []
        self.fail: str | None = None
        self.max_record: int | None = None  # bytes: larger appends are rejected

    def _check(self) -> None:
        if self.fail is not None:
            raise EngineUnavailable(f"memory engine: {self.fail}")

    def append(self, entries: Sequence[bytes]) -> int:
        self._check()
        size = sum(len(e) for e in entries)
        if self.max_record is not None and size > self.max_record:
            raise EngineRejected(f"memory engine: a record of {size} bytes is larger than "
                                 f"{self.max_record}", ("rejected", size))
        self.last += 1
        self.records.append(LogRecord(self.last, tuple(entries)))
        for pid in self.watchers:
            send(pid, ("$mem_engine_appended", self.last))
        return self.last

    def read_from(self, after: int, limit: int = 1000) -> ReadResult:
        self._check()
        if after < self._horizon:
            raise Compacted(after, self._horizon)
        out = [r for r in self.records if r.position > after][:limit]
        return ReadResult(out, self.last)

    def watch(self, after: int) -> Iterator[LogRecord]:
        me = self_pid()
        self.watchers.append(me)
        try:
            while True:
                res = self.read_from(after)
                for r in res.records:
                    after = r.position
                    yield r
                if not res.records:
                    receive(lambda m: m.__class__ is tuple and m[0] == "$mem_engine_appended")
        finally:
            if me in self.watchers:
                self.watchers.remove(me)

    def position(self) -> int:
        self._check()
        return self.last

    def compact(self, upto: int) -> None:
        self._check()
        self.records = [r for r in self.records if r.position > upto]
        self._horizon = max(self._horizon, upto)

    def horizon(self) -> int:
        self._check()
        return self._horizon

    def put_snapshot(self, position: int, blob: bytes) -> None:
        self._check()
        self.snapshot = (position, blob)

    def get_snapshot(self) -> tuple[int, bytes] | None:
        self._check()
        return self.snapshot

    def set_meta(self, name: str, value: bytes) -> None:
        self._check()
        self.meta[name] = value

    def get_meta(self, prefix: str) -> dict[str, bytes]:
        self._check()
        return {k: v for k, v in self.meta.items() if k.startswith(prefix)}

    def lock(self, name: str, ttl: float) -> Lease | None:
        self._check()
        if name in self.locks:
            return None
        lease = self.locks[name] = _MemLease(self, name)
        return lease
