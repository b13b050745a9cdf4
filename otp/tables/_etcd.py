"""The etcd engine: the replicated tables' log kept by an etcd (v3.4+) cluster.

etcd orders and stores the log with Raft: a record counts once a majority of members
wrote it to disc. This module speaks etcd's v3 JSON gateway (``/v3/kv/put``,
``/v3/kv/range``, ``/v3/kv/txn``, ``/v3/watch``, ``/v3/lease/*``) over ``http.client``
with keep-alive connections: under ``otp.patch()`` its sockets are cooperative, so a
call blocks only the calling process (the grpc client would block the whole node).

Layout under the key prefix ``P`` (default ``otpy``)::

    P/log/<member>/<seq>   one log record (msgpack list of entries); its position is
                           etcd's mod_revision of the put: the log's total order
    P/horizon              the compacted position (decimal)
    P/snap/head            msgpack [position, parts, sha256] of the current snapshot
    P/snap/<pos>/<i>       the snapshot's parts (<= 1 MB each)
    P/meta/<name>          small values (each replica's applied position)
    P/lock/<name>          lease-backed locks

Endpoints are tried in turn: a connection error moves to the next one; an etcd error
that means "no leader / timed out" raises ``EngineUnavailable`` with etcd's words.
TLS (``https://`` endpoints, with ``ca_file``, ``cert_file``, ``key_file``) and
username/password authentication are supported.

Example::

    eng = EtcdEngine(["http://127.0.0.1:2379"], prefix="demo", timeout=5.0)
    pos = eng.append([b"x"])
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import socket
import ssl
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from typing import Any

import msgpack

from otp.tables._engine import (
    Compacted,
    Engine,
    EngineRejected,
    EngineUnavailable,
    Lease,
    LogRecord,
    ReadResult,
)

PART = 1 << 20
# gRPC codes etcd gives for a request it refuses as such: InvalidArgument,
# FailedPrecondition, OutOfRange, ResourceExhausted (quota), PermissionDenied.
_REJECTED = {3, 9, 11, 8, 7}
TXN_OPS = 100


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def _unb64(s: str | None) -> bytes:
    return base64.b64decode(s) if s else b""


def _range_end(prefix: bytes) -> bytes:
    p = bytearray(prefix)
    p[-1] += 1
    return bytes(p)


def pack(entries: Sequence[bytes]) -> bytes:
    return msgpack.packb(list(entries), use_bin_type=True)


def unpack(blob: bytes) -> tuple[bytes, ...]:
    return tuple(msgpack.unpackb(blob, raw=False))


class _Endpoint:
    def __init__(self, url: str) -> None:
        u = urllib.parse.urlsplit(url if "://" in url else "http://" + url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"an etcd endpoint must be http(s)://host:port, got {url!r}")
        self.url = url
        self.tls = u.scheme == "https"
        self.host = u.hostname
        self.port = u.port or 2379


class EtcdEngine(Engine):
    """The log on an etcd cluster (see the module docstring)."""

    name = "etcd"

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        prefix: str = "otpy",
        member: str = "node",
        timeout: float = 5.0,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        user: str | None = None,
        password: str | None = None,
    ) -> None:
        if isinstance(endpoints, str) or not endpoints:
            raise ValueError(f"etcd endpoints must be a non-empty list, got {endpoints!r}")
        self.endpoints = [_Endpoint(e) for e in endpoints]
        self.prefix = prefix.rstrip("/").encode()
        self.member = member
        self.timeout = timeout
        # The endpoint in use: nodes start on different members (by name), which
        # spreads the gateway's work; a failure moves on to the next one.
        self.cur = sum(member.encode()) % len(self.endpoints)
        self.idle: list[tuple[int, http.client.HTTPConnection]] = []
        self.ssl: ssl.SSLContext | None = None
        if any(e.tls for e in self.endpoints):
            self.ssl = ssl.create_default_context(cafile=ca_file)
            if cert_file:
                self.ssl.load_cert_chain(cert_file, key_file)
        self.user = user
        self.password = password
        self.token: str | None = None
        self.seq = 0
        self.closed = False
        self.watches: list[http.client.HTTPConnection] = []

    def describe(self) -> str:
        return "etcd " + ",".join(e.url for e in self.endpoints)

    # --- HTTP ---------------------------------------------------------------------------

    def _connect(self, i: int, timeout: float | None) -> http.client.HTTPConnection:
        ep = self.endpoints[i]
        if ep.tls:
            return http.client.HTTPSConnection(ep.host, ep.port, timeout=timeout,
                                               context=self.ssl)
        return http.client.HTTPConnection(ep.host, ep.port, timeout=timeout)

    def _headers(self) -> dict[str, str]:
        h = {"Content-Type": "application/json"}
        if self.token:
            h["Authorization"] = self.token
        return h

    def _authenticate(self) -> None:
        if self.user is None or self.token is not None:
            return
        out = self._call_raw("/v3/auth/authenticate",
                             {"name": self.user, "password": self.password or ""})
        self.token = out.get("token")

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` to ``path`` on an endpoint that answers; etcd's JSON answer."""
        if self.user is not None and self.token is None:
            self._authenticate()
        try:
            return self._call_raw(path, body)
        except EngineUnavailable as e:
            if self.user is not None and "token" in str(e):
                self.token = None
                self._authenticate()
                return self._call_raw(path, body)
            raise

    def _call_raw(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.closed:
            raise EngineUnavailable("the etcd engine is closed", "closed")
        data = json.dumps(body)
        errors: list[str] = []
        n = len(self.endpoints)
        # One deadline for the call, whatever the number of endpoints tried.
        deadline = time.monotonic() + self.timeout
        for attempt in range(n):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            i = (self.cur + attempt) % n
            conn = None
            while self.idle:
                j, c = self.idle.pop()
                if j == i:
                    conn = c
                    break
                c.close()
            fresh = conn is None
            try:
                if conn is None:
                    conn = self._connect(i, left)
                else:
                    conn.timeout = left
                    if conn.sock is not None:
                        conn.sock.settimeout(left)
                resp, raw = self._post(conn, path, data)
            except (OSError, http.client.HTTPException) as e:
                if conn is not None:
                    conn.close()
                left = deadline - time.monotonic()
                if not fresh and attempt == 0 and left > 0:
                    # A kept-alive connection the server closed meanwhile: once more.
                    conn = self._connect(i, left)
                    try:
                        resp, raw = self._post(conn, path, data)
                    except (OSError, http.client.HTTPException) as e2:
                        conn.close()
                        errors.append(f"{self.endpoints[i].url}: {e2!r}")
                        continue
                else:
                    errors.append(f"{self.endpoints[i].url}: {e!r}")
                    continue
            self.cur = i
            try:
                out = json.loads(raw) if raw else {}
            except ValueError:
                conn.close()
                raise EngineUnavailable(
                    f"etcd {self.endpoints[i].url}{path} answered HTTP {resp.status} with "
                    f"non-JSON {raw[:200]!r}") from None
            self.idle.append((i, conn))
            if resp.status != 200 or "error" in out:
                msg = out.get("error") or out.get("message") or raw[:200].decode(errors="replace")
                if out.get("code") in _REJECTED:
                    # The request itself is refused (too large, bad argument...): trying
                    # again elsewhere would not help, and it was not written.
                    raise EngineRejected(
                        f"etcd refused {path}: {msg}", ("rejected", out.get("code"), msg))
                raise EngineUnavailable(
                    f"etcd {self.endpoints[i].url}{path} failed (HTTP {resp.status}): {msg}",
                    ("etcd", out.get("code"), msg))
            return out
        if not errors:
            errors.append("the deadline passed")
        raise EngineUnavailable(
            f"no etcd endpoint answered within {self.timeout} s: " + "; ".join(errors),
            ("unreachable", tuple(errors)))

    def _post(self, conn: http.client.HTTPConnection, path: str, data: str
              ) -> tuple[http.client.HTTPResponse, bytes]:
        conn.request("POST", path, data, self._headers())
        resp = conn.getresponse()
        return resp, resp.read()

    def _key(self, *parts: str) -> bytes:
        return b"/".join([self.prefix, *(p.encode() for p in parts)])

    # --- the log ------------------------------------------------------------------------

    def append(self, entries: Sequence[bytes]) -> int:
        self.seq += 1
        key = self._key("log", self.member, f"{os.getpid()}-{self.seq:012d}")
        out = self.call("/v3/kv/put", {"key": _b64(key), "value": _b64(pack(entries))})
        return int(out["header"]["revision"])

    def _log_prefix(self) -> bytes:
        return self._key("log") + b"/"

    def read_from(self, after: int, limit: int = 1000) -> ReadResult:
        hz = self.horizon()
        if after < hz:
            raise Compacted(after, hz)
        p = self._log_prefix()
        out = self.call("/v3/kv/range", {
            "key": _b64(p), "range_end": _b64(_range_end(p)),
            "sort_target": "MOD", "sort_order": "ASCEND",
            "min_mod_revision": str(after + 1), "limit": str(limit),
        })
        recs = [LogRecord(int(kv["mod_revision"]), unpack(_unb64(kv.get("value"))))
                for kv in out.get("kvs", ())]
        upto = int(out["header"]["revision"])
        if out.get("more"):
            upto = recs[-1].position
        return ReadResult(recs, upto)

    def watch(self, after: int) -> Iterator[LogRecord]:
        p = self._log_prefix()
        body = json.dumps({"create_request": {
            "key": _b64(p), "range_end": _b64(_range_end(p)),
            "start_revision": str(after + 1), "filters": ["NODELETE"],
        }})
        errors = []
        n = len(self.endpoints)
        resp = None
        conn = None
        for attempt in range(n):
            i = (self.cur + attempt) % n
            conn = self._connect(i, self.timeout)
            try:
                conn.request("POST", "/v3/watch", body, self._headers())
                resp = conn.getresponse()
                if resp.status != 200:
                    raise EngineUnavailable(f"etcd watch: HTTP {resp.status} "
                                            f"{resp.read()[:200]!r}")
                first = json.loads(resp.readline() or b"{}")
                if not first.get("result", {}).get("created"):
                    raise EngineUnavailable(f"etcd watch not created: {first!r}")
                if conn.sock is not None:
                    conn.sock.settimeout(None)  # quiet logs are normal
                break
            except (OSError, http.client.HTTPException, ValueError, EngineUnavailable) as e:
                conn.close()
                errors.append(f"{self.endpoints[i].url}: {e!r}")
                resp = None
        if resp is None or conn is None:
            raise EngineUnavailable("no etcd endpoint accepted a watch: " + "; ".join(errors))
        self.watches.append(conn)
        try:
            while True:
                try:
                    line = resp.readline()
                except (OSError, http.client.HTTPException, ValueError) as e:
                    raise EngineUnavailable(f"etcd watch broke: {e!r}") from None
                if not line:
                    raise EngineUnavailable("etcd closed the watch")
                msg = json.loads(line)
                if "error" in msg:
                    raise EngineUnavailable(f"etcd watch error: {msg['error']}")
                res = msg.get("result", {})
                cr = int(res.get("compact_revision", 0) or 0)
                if cr:
                    raise Compacted(after, cr - 1)
                if res.get("canceled"):
                    raise EngineUnavailable(f"etcd cancelled the watch: {res!r}")
                for ev in res.get("events", ()):
                    kv = ev["kv"]
                    pos = int(kv["mod_revision"])
                    if pos > after:
                        after = pos
                        yield LogRecord(pos, unpack(_unb64(kv.get("value"))))
        finally:
            conn.close()
            if conn in self.watches:
                self.watches.remove(conn)

    def position(self) -> int:
        """The position of the last record of the log (its etcd mod_revision; the
        horizon when it is empty): a linearizable read."""
        p = self._log_prefix()
        out = self.call("/v3/kv/range", {
            "key": _b64(p), "range_end": _b64(_range_end(p)), "keys_only": True,
            "sort_target": "MOD", "sort_order": "DESCEND", "limit": "1",
        })
        kvs = out.get("kvs")
        if kvs:
            return int(kvs[0]["mod_revision"])
        return self.horizon()

    def horizon(self) -> int:
        out = self.call("/v3/kv/range", {"key": _b64(self._key("horizon"))})
        kvs = out.get("kvs")
        return int(_unb64(kvs[0].get("value"))) if kvs else 0

    def compact(self, upto: int) -> None:
        """Delete the log records at positions <= ``upto``, record the horizon, and
        compact etcd's history up to there (so its database stays bounded)."""
        p = self._log_prefix()
        while True:
            out = self.call("/v3/kv/range", {
                "key": _b64(p), "range_end": _b64(_range_end(p)), "keys_only": True,
                "max_mod_revision": str(upto), "limit": str(TXN_OPS),
            })
            kvs = out.get("kvs", ())
            if not kvs:
                break
            self.call("/v3/kv/txn", {"success": [
                {"request_delete_range": {"key": kv["key"]}} for kv in kvs]})
            if not out.get("more"):
                break
        hk = _b64(self._key("horizon"))
        old = self.horizon()
        if upto > old:
            self.call("/v3/kv/put", {"key": hk, "value": _b64(str(upto).encode())})
        try:
            self.call("/v3/kv/compaction", {"revision": str(upto)})
        except EngineUnavailable as e:
            if "compacted" not in str(e):  # already compacted past it: fine
                raise

    # --- snapshots and meta ---------------------------------------------------------------

    def put_snapshot(self, position: int, blob: bytes) -> None:
        parts = [blob[i:i + PART] for i in range(0, len(blob), PART)] or [b""]
        for i, part in enumerate(parts):
            self.call("/v3/kv/put", {"key": _b64(self._key("snap", str(position), str(i))),
                                     "value": _b64(part)})
        old = self._snap_head()
        head = msgpack.packb([position, len(parts), hashlib.sha256(blob).hexdigest()])
        self.call("/v3/kv/put", {"key": _b64(self._key("snap", "head")), "value": _b64(head)})
        if old is not None and old[0] != position:
            sp = self._key("snap", str(old[0])) + b"/"
            self.call("/v3/kv/deleterange", {"key": _b64(sp), "range_end": _b64(_range_end(sp))})

    def _snap_head(self) -> tuple[int, int, str] | None:
        out = self.call("/v3/kv/range", {"key": _b64(self._key("snap", "head"))})
        kvs = out.get("kvs")
        if not kvs:
            return None
        pos, n, sha = msgpack.unpackb(_unb64(kvs[0].get("value")))
        return int(pos), int(n), str(sha)

    def get_snapshot(self) -> tuple[int, bytes] | None:
        head = self._snap_head()
        if head is None:
            return None
        pos, n, sha = head
        blob = b"".join(
            _unb64((self.call("/v3/kv/range", {
                "key": _b64(self._key("snap", str(pos), str(i)))}).get("kvs") or [{}])[0]
                .get("value"))
            for i in range(n))
        if hashlib.sha256(blob).hexdigest() != sha:
            raise EngineUnavailable(f"the snapshot at position {pos} in etcd is corrupt "
                                    "(checksum mismatch)", ("corrupt_snapshot", pos))
        return pos, blob

    def set_meta(self, name: str, value: bytes) -> None:
        self.call("/v3/kv/put", {"key": _b64(self._key("meta", name)), "value": _b64(value)})

    def get_meta(self, prefix: str) -> dict[str, bytes]:
        p = self._key("meta", prefix)
        out = self.call("/v3/kv/range", {"key": _b64(p), "range_end": _b64(_range_end(p))})
        base = len(self._key("meta", ""))
        return {_unb64(kv["key"])[base:].decode(): _unb64(kv.get("value"))
                for kv in out.get("kvs", ())}

    def status(self) -> dict[str, Any]:
        """etcd's maintenance status of the endpoint in use (dbSize, leader...)."""
        return self.call("/v3/maintenance/status", {})

    # --- locks ------------------------------------------------------------------------------

    def lock(self, name: str, ttl: float) -> Lease | None:
        out = self.call("/v3/lease/grant", {"TTL": str(max(1, int(ttl)))})
        lid = out["ID"]
        key = _b64(self._key("lock", name))
        res = self.call("/v3/kv/txn", {
            "compare": [{"key": key, "target": "CREATE", "result": "EQUAL",
                         "create_revision": "0"}],
            "success": [{"request_put": {"key": key, "value": _b64(self.member.encode()),
                                         "lease": lid}}],
        })
        if not res.get("succeeded"):
            self.call("/v3/lease/revoke", {"ID": lid})
            return None
        return _EtcdLease(self, lid)

    def close(self) -> None:
        self.closed = True
        for _i, c in self.idle:
            c.close()
        self.idle = []
        for c in list(self.watches):
            # The reader may be blocked in it: shut the socket (it reads EOF and ends);
            # closing the file under it would be a reentrant call.
            sock = c.sock
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class _EtcdLease(Lease):
    def __init__(self, eng: EtcdEngine, lid: str) -> None:
        self.eng = eng
        self.lid = lid

    def refresh(self) -> bool:
        out = self.eng.call("/v3/lease/keepalive", {"ID": self.lid})
        return int(out.get("result", {}).get("TTL", 0) or 0) > 0

    def release(self) -> None:
        try:
            self.eng.call("/v3/lease/revoke", {"ID": self.lid})
        except EngineUnavailable:
            pass  # it expires by itself
