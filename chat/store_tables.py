"""The chat store on ``otp.tables`` disc tables (``storage: tables`` in the config).

The same operations and queries as ``chat.store`` (see its docstring), on five disc
tables: ``chat_users``, ``chat_outbox``, ``chat_inbox``, ``chat_peers``, ``chat_cmids``
(keys ``phone``, ``(owner, seq)``, ``(owner, seq)``, ``(owner, peer)``,
``(owner, cmid)``; the per-owner ones indexed on ``owner``)::

    from otp import tables
    tables.start("var/chat")                     # the otp_tables application, first
    backend = TablesBackend.open()               # creates the tables if they are new
    sup = chat.app.start(cfg)                    # cfg.storage == "tables"

Unlike the sqlite backend this one runs *in the calling process*: ``store.write``
becomes one ``tables.transaction`` (acknowledged after its fsync; otp.tables does the
group commit across processes) and ``store.read`` a dirty read from memory, with no
message to the store process.

Failure semantics: a transaction that fails raises ``StoreError`` (nothing of it is
applied); a missing ``otp_tables`` application fails ``open`` with a message saying to
start it first.
"""

from __future__ import annotations

from typing import Any

from otp import tables

__all__ = ["TABLES", "TablesBackend"]

TABLES: dict[str, tuple[str, ...]] = {
    "chat_users": ("phone", "key_hash", "gen", "hide", "last_seen"),
    "chat_outbox": ("key", "owner", "seq", "peer", "pseq", "kind", "payload"),
    "chat_inbox": ("key", "owner", "seq", "peer", "kind", "payload"),
    "chat_peers": ("key", "owner", "peer", "out_seq", "in_seq"),
    "chat_cmids": ("key", "owner", "cmid", "mid", "seq"),
}


def _apply(ops: tuple[tuple[Any, ...], ...]) -> None:
    """The transaction body: table operations only (it may run more than once)."""
    for op in ops:
        k = op[0]
        if k == "out+":
            _, owner, seq, peer, pseq, kind, payload = op
            tables.write("chat_outbox", ((owner, seq), owner, seq, peer, pseq, kind, payload))
        elif k == "out-":
            tables.delete("chat_outbox", (op[1], op[2]))
        elif k == "in+":
            _, owner, seq, peer, kind, payload = op
            tables.write("chat_inbox", ((owner, seq), owner, seq, peer, kind, payload))
        elif k == "in-":
            tables.delete("chat_inbox", (op[1], op[2]))
        elif k in ("pout", "pin"):
            _, owner, peer, n = op
            cur = tables.read("chat_peers", (owner, peer), lock="write")
            out_seq, in_seq = (cur[0].out_seq, cur[0].in_seq) if cur else (0, 0)
            if k == "pout":
                out_seq = n
            else:
                in_seq = n
            tables.write("chat_peers", ((owner, peer), owner, peer, out_seq, in_seq))
        elif k == "cmid+":
            _, owner, cmid, mid, seq = op
            tables.write("chat_cmids", ((owner, cmid), owner, cmid, mid, seq))
        elif k == "cmid<":
            _, owner, below = op
            for r in tables.index_read("chat_cmids", owner, "owner"):
                if r.seq < below:
                    tables.delete("chat_cmids", r.key)
        elif k == "user":
            _, phone, key_hash, gen = op
            cur = tables.read("chat_users", phone, lock="write")
            hide, seen = (cur[0].hide, cur[0].last_seen) if cur else (False, None)
            tables.write("chat_users", (phone, key_hash, gen, hide, seen))
        elif k in ("privacy", "seen"):
            _, phone, value = op
            cur = tables.read("chat_users", phone, lock="write")
            if cur:
                field = "hide" if k == "privacy" else "last_seen"
                tables.write("chat_users", cur[0]._replace(**{field: value}))
        else:
            raise ValueError(f"unknown store operation {op!r:.80}")


class TablesBackend:
    blocking = False
    direct = True  # store.write/read run here, in the caller

    @classmethod
    def open(cls) -> TablesBackend:
        if not tables.system_info()["disc_running"]:
            raise RuntimeError("storage 'tables' needs the otp_tables application: "
                               "call otp.tables.start(directory) before starting chat")
        have = set(tables.table_names())
        for name, attrs in TABLES.items():
            if name not in have:
                index = ("owner",) if "owner" in attrs else ()
                tables.create_table(name, attributes=attrs, index=index, copies="disc")
        return cls()

    def run(self, batch: list[tuple[str, Any]]) -> list[Any]:
        from chat.store import StoreError

        out: list[Any] = []
        for kind, arg in batch:
            if kind == "w":
                try:
                    tables.transaction(_apply, arg)
                except Exception as e:
                    raise StoreError(f"{type(e).__name__}: {e}") from None
                out.append(None)
            else:
                out.append(self.query(arg))
        return out

    @staticmethod
    def query(q: tuple[Any, ...]) -> Any:
        from chat.store import Loaded, StoreError

        match q:
            case ("user", phone):
                r = tables.dirty_read("chat_users", phone)
                return (r[0].key_hash, r[0].gen, r[0].hide, r[0].last_seen) if r else None
            case ("registered", phones):
                return tuple(p for p in phones if tables.dirty_read("chat_users", p))
            case ("presence", phones):
                rows = []
                for p in phones:
                    r = tables.dirty_read("chat_users", p)
                    if r:
                        rows.append((p, r[0].hide, r[0].last_seen))
                return tuple(rows)
            case ("senders",):
                return tuple(sorted({k[0] for k in tables.dirty_all_keys("chat_outbox")}))
            case ("pending", owner):
                return bool(tables.dirty_index_read("chat_inbox", owner, "owner")
                            or tables.dirty_index_read("chat_outbox", owner, "owner"))
            case ("load", owner):
                u = tables.dirty_read("chat_users", owner)
                outbox = sorted(tables.dirty_index_read("chat_outbox", owner, "owner"),
                                key=lambda r: r.seq)
                inbox = sorted(tables.dirty_index_read("chat_inbox", owner, "owner"),
                               key=lambda r: r.seq)
                cmids = sorted(tables.dirty_index_read("chat_cmids", owner, "owner"),
                               key=lambda r: r.seq)
                return Loaded(
                    (u[0].key_hash, u[0].gen, u[0].hide, u[0].last_seen) if u else None,
                    tuple((r.seq, r.peer, r.pseq, r.kind, r.payload) for r in outbox),
                    tuple((r.seq, r.peer, r.kind, r.payload) for r in inbox),
                    tuple((r.peer, r.out_seq, r.in_seq) for r in
                          tables.dirty_index_read("chat_peers", owner, "owner")),
                    tuple((r.cmid, r.mid, r.seq) for r in cmids),
                )
        raise StoreError(f"unknown store query {q!r:.80}")

    def close(self) -> None:
        pass
