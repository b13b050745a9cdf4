"""What can be measured: the workloads of docs/benchmarks.md and the systems that implement them.

A *system* is a module with a ``WORKLOADS: dict[str, Workload]`` (workload name ->
``fn(n) -> (value, unit, n)``) and optionally ``UNAVAILABLE: str | None`` (set when its
dependency does not import; every workload of it is then reported as n/a). A workload a
system does not list is simply not run for it; a ``NotYet`` entry is listed as n/a.

``build()`` turns that into the registry the harness uses: workload -> {system -> fn}.
To add a workload to a system, write one function and add one dict entry in its module.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from bench._measure import NotYet, Workload


@dataclass(frozen=True)
class Spec:
    name: str
    metric: str
    unit: str
    n: int  # default size (--quick divides it by 10)
    what: str

    @property
    def lower_is_better(self) -> bool:
        # docs/benchmarks.md: units starting with "us" or "bytes" are lower-is-better; others are
        # rates. Latencies in "ms" (chat_latency) are lower-is-better too.
        return self.unit.startswith(("us", "bytes")) or self.unit.split("/")[0] == "ms"


SPECS: dict[str, Spec] = {
    s.name: s
    for s in [
        Spec("spawn", "spawn_rate", "procs/s", 100_000,
             "spawn n processes that exit at once, a monitor each; wait for all Downs"),
        Spec("ping_pong", "round_trip_time", "us/round_trip", 200_000,
             "two processes exchange n request/response messages"),
        Spec("ring", "hop_rate", "hops/s", 1_000_000,
             "1000 processes in a ring pass a token n hops (1000 laps)"),
        Spec("memory", "rss_per_process", "bytes/process", 100_000,
             "n processes blocked in receive; RSS growth per process"),
        Spec("call", "call_time", "us/call", 200_000,
             "one client, n sequential calls to a counter server"),
        Spec("cast", "cast_rate", "casts/s", 200_000,
             "n casts to a counter server, then one call to sync"),
        Spec("many_clients", "call_rate", "calls/s", 100_000,
             "1000 client processes × n/1000 calls each to one server"),
        Spec("restart", "restart_time", "us/restart", 1_000,
             "one_for_one supervisor, one worker: kill it n times, each time until the "
             "restarted worker answers a call"),
        Spec("table_dirty_write", "dirty_write_rate", "writes/s", 100_000,
             "n dirty writes of one record each to a ram set table"),
        Spec("table_tx_write", "tx_write_rate", "writes/s", 100_000,
             "n transactions of one write each on a ram table"),
        Spec("table_disc_tx", "disc_commit_rate", "commits/s", 100_000,
             "100 writers, n transactions in all on a disc table, each acknowledged "
             "after fsync (group commit)"),
        Spec("table_repl_tx", "repl_commit_rate", "commits/s", 20_000,
             "100 writers over 3 otpy nodes, n transactions of one write on a "
             "disc_copies table replicated on all three, ordered by a 3-member etcd "
             "(p50/p99 on stderr)"),
        Spec("chat_memory", "rss_per_connection", "bytes/connection", 19_000,
             "n idle logged-in connections; server RSS growth per connection"),
        Spec("chat_throughput", "delivered_rate", "msgs/s", 1_000,
             "n online users send 1:1 at stepped rates, full durable path; best step "
             "with p99 <= 50 ms"),
        Spec("chat_latency", "p99_latency", "ms", 1_000,
             "p99 send->receive latency at the best throughput step"),
        Spec("chat_offline_drain", "drain_rate", "msgs/s", 1_000,
             "n users x 100 queued messages log in at once; msgs/s until drained"),
        Spec("dist_codec", "codec_time", "us/message", 200_000,
             "encode then decode a chat-sized message in the External Term Format "
             "(a tuple of strs, ints, a 200-byte body, a Pid); floor: msgpack"),
        Spec("chat_media", "upload_rate", "MB/s", 20,
             "send_media of an n MB file: encrypt (AES-256-GCM), upload, message stored"),
        Spec("chat_media_download", "download_rate", "MB/s", 20,
             "download of an n MB media file: fetch, verify, decrypt, atomic write"),
        Spec("chat_media_p99", "p99_latency_uploading", "ms", 20,
             "chat p99 at 2 000 msgs/s (200 users) while 10 devices upload n MB files"),
        Spec("dist_ping_pong", "round_trip_time", "us/round_trip", 20_000,
             "a process on one node and one on another (two OS processes) exchange "
             "n request/response messages; bar: >= 0.5x erl <-> erl"),
        Spec("dist_call", "call_time", "us/call", 20_000,
             "n sequential gen_server calls to a counter server on another node; "
             "bar: >= 0.5x erl <-> erl"),
        Spec("dist_throughput", "send_rate", "msgs/s", 200_000,
             "n pipelined one-way messages to a process on another node, then one "
             "sync round trip; bar: >= 0.5x erl <-> erl"),
    ]
}

#: ``make bench ONLY=chat`` / ``ONLY=table``: a group name stands for its workloads.
GROUPS: dict[str, list[str]] = {
    "chat": [n for n in SPECS if n.startswith("chat_")],
    "chat_media": ["chat_media", "chat_media_download", "chat_media_p99"],
    "table": [n for n in SPECS if n.startswith("table_")],
    "tables": [n for n in SPECS if n.startswith("table_")],
    "dist": [n for n in SPECS if n.startswith("dist_")],
}


@dataclass(frozen=True)
class System:
    name: str
    module: str
    monkey_patch: bool = False  # worker runs gevent.monkey.patch_all() before importing
    label: str = ""
    attr: str = "WORKLOADS"  # the module's dict of workloads
    unavailable: str = "UNAVAILABLE"  # the module's reason for n/a (None: available)


# Order = column order in the tables; "gevent" and "greenlet" are the ratio references.
SYSTEMS: dict[str, System] = {
    s.name: s
    for s in [
        System("otp", "bench.otp_workloads", label="this project"),
        System("gevent", "bench.floor_gevent", label="raw gevent actor"),
        System("greenlet", "bench.floor_greenlet", label="raw greenlet switch"),
        System("dict", "bench.floor_tables", attr="DICT_WORKLOADS",
               label="plain dict writes"),
        System("sqlite", "bench.floor_tables", attr="SQLITE_WORKLOADS",
               label="raw sqlite, 100 commits per fsync"),
        System("msgpack", "bench.dist_workloads", attr="MSGPACK_WORKLOADS",
               label="msgpack encode+decode"),
        System("erl", "bench.dist_workloads", attr="ERL_WORKLOADS",
               unavailable="ERL_UNAVAILABLE",
               label="two erl nodes (compiled loops), when erl is installed"),
        System("pykka", "bench.floor_pykka", label="Pykka, threads"),
        System("pykka_gevent", "bench.floor_pykka", monkey_patch=True,
               label="Pykka, gevent monkey-patched"),
    ]
}


@dataclass(frozen=True)
class Registry:
    """workload -> {system -> fn}, plus why some systems are missing entirely."""

    table: dict[str, dict[str, Workload]]
    unavailable: dict[str, str]  # system -> reason (dependency missing: n/a)
    broken: dict[str, str]  # system -> reason (module failed to import: failed)


def load_system(system: System) -> dict[str, Workload]:
    """Import a system's module and return its workloads (raises on a broken module)."""
    module = importlib.import_module(system.module)
    return dict(getattr(module, system.attr))


def build(systems: list[str] | None = None) -> Registry:
    """Import the system modules (in this process; measurements never run here)."""
    table: dict[str, dict[str, Workload]] = {name: {} for name in SPECS}
    unavailable: dict[str, str] = {}
    broken: dict[str, str] = {}
    for name, system in SYSTEMS.items():
        if systems is not None and name not in systems:
            continue
        try:
            module = importlib.import_module(system.module)
        except Exception as exc:  # a half-written system must not stop the floors
            broken[name] = f"import {system.module}: {type(exc).__name__}: {exc}"
            continue
        reason = getattr(module, system.unavailable, None)
        if reason:
            unavailable[name] = reason
        for workload, fn in getattr(module, system.attr).items():
            if workload not in SPECS:
                raise ValueError(f"{system.module}: unknown workload {workload!r}")
            table[workload][name] = fn
    return Registry(table, unavailable, broken)


def na_reason(registry: Registry, workload: str, system: str) -> str | None:
    """Why (workload, system) is n/a without running it, or None if it should run."""
    if system in registry.unavailable:
        return registry.unavailable[system]
    fn = registry.table[workload].get(system)
    if isinstance(fn, NotYet):
        return f"not yet implemented: {fn.reason}"
    return None
