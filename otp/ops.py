"""The ``otp_ops`` application: the node's operations tooling, supervised.

Started in every release (``bin/<name>`` boots it after the release's own
applications unless ``otp_ops.enabled`` is false); elsewhere
``application.ensure_all_started("otp_ops")``. Its supervisor ``otp_ops_sup`` runs:

- ``alarm_handler`` (``otp.alarm_handler``): the alarm event manager;
- ``otp_stats`` (``otp.stats``): the queue sampler, whose every sample goes through
  the alarm thresholds (``otp.alarm_handler.Watch``);
- ``otp_sar`` (``otp.sar``): the system activity reporter;
- ``otp_metrics`` (``otp.metrics``): the Prometheus endpoint, when enabled.

Config (the ``otp_ops`` section of a config file; every key optional)::

    otp_ops:
      enabled: true
      stats: {interval: 1.0, chunk: 2000}
      alarms: {queue_len: 10000, drain_time: 30, drain_min_queue: 1000,
               node_queued: 200000, memory_fraction: 0.8, fd_fraction: 0.8,
               hub_blocked: 0.5, gc_pause: 0.2, clear: 0.8, quiet: 10}
      sar: {enabled: true, interval: 1.0, keep: 600, file: null}
      metrics: {enabled: false, host: 127.0.0.1, port: 9568}

``snapshot()`` is the node's summary (what ``status``, ``top`` and the metrics show),
``observer()`` prints it with the top processes in the remote shell.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict

from otp import alarm_handler, application, sar, stats, supervisor
from otp.alarm_handler import Thresholds, Watch
from otp.application import Application, AppSpec
from otp.process import Pid, node
from otp.supervisor import ChildSpec, Supervisor, SupFlags

__all__ = ["APP", "OpsConfig", "control_handlers", "observer", "snapshot"]

APP_NAME = "otp_ops"
SUP_NAME = "otp_ops_sup"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StatsConfig(_Model):
    interval: float = 1.0
    chunk: int = 2000


class SarConfig(_Model):
    enabled: bool = True
    interval: float = 1.0
    keep: float = 600.0
    file: str | None = None


class MetricsConfig(_Model):
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 9568


class OpsConfig(_Model):
    """The ``otp_ops`` settings."""

    enabled: bool = True
    stats: StatsConfig = StatsConfig()
    alarms: Thresholds = Thresholds()  # validated as the dataclass (unknown keys refused)
    sar: SarConfig = SarConfig()
    metrics: MetricsConfig = MetricsConfig()


def config() -> OpsConfig:
    """The running settings (defaults where the config says nothing)."""
    env = application.get_all_env(APP_NAME)
    data = {k: (v.model_dump() if isinstance(v, BaseModel) else v) for k, v in env.items()}
    return OpsConfig.model_validate(data)


_STARTED: dict[str, float] = {}


def _start_stats(interval: float, chunk: int, thresholds: Thresholds) -> Pid:
    pid = stats.start_link(interval, chunk)
    s = stats.sampler()
    s.listeners[:] = [f for f in s.listeners if not isinstance(f, _WatchListener)]
    s.listeners.append(_WatchListener(Watch(thresholds)))
    return pid


class _WatchListener:
    """The Watch as a Sampler listener that never fails the sampler."""

    def __init__(self, watch: Watch) -> None:
        self.watch = watch

    def __call__(self, sampler: Any) -> None:
        import logging

        try:
            self.watch.check(sampler)
        except Exception:
            logging.getLogger("otp.alarm_handler").exception("alarm check failed")


class OpsSup(Supervisor):
    def init(self, cfg: OpsConfig) -> Any:
        children = [
            ChildSpec(id=alarm_handler.NAME, start=(alarm_handler.start_link, ())),
            ChildSpec(id=stats.NAME, start=(_start_stats, (
                cfg.stats.interval, cfg.stats.chunk,
                cfg.alarms))),
        ]
        if cfg.sar.enabled:
            children.append(ChildSpec(id=sar.NAME, start=(sar.start_link, (
                cfg.sar.interval, cfg.sar.keep, cfg.sar.file))))
        if cfg.metrics.enabled:
            from otp import metrics

            children.append(ChildSpec(id=metrics.NAME, start=(metrics.start_link, (
                cfg.metrics.host, cfg.metrics.port))))
        # rest_for_one: a restarted alarm_handler has forgotten the alarms, so the
        # sampler (whose thresholds raised them) restarts with it and raises them again.
        return SupFlags(strategy="rest_for_one", intensity=5, period=10), children


class OpsApp(Application):
    def start(self, start_type: str, args: Any) -> Pid:
        _STARTED[node()] = time.time()
        pid = supervisor.start_link(OpsSup, config(), name=SUP_NAME)
        assert pid is not None
        return pid


APP = AppSpec(
    APP_NAME,
    "0.1.0",
    OpsApp,
    registered=(SUP_NAME, alarm_handler.NAME, stats.NAME, sar.NAME),
    schema=OpsConfig,
    description="operations: queue statistics, alarms, activity reporter, metrics",
)


# --- views -----------------------------------------------------------------------------


def snapshot() -> dict[str, Any]:
    """The node's summary: uptime, processes, queued, rates, hub, memory, alarms."""
    st = stats.node()
    rows = sar.samples()
    last = rows[-1] if rows else None
    started = _STARTED.get(node())
    alarms = alarm_handler.get_alarms(timeout=2.0)
    return {
        "node": node(),
        "uptime": None if started is None else round(time.time() - started, 1),
        "processes": st.processes,
        "queued": st.queued,
        "backlogged": st.backlogged,
        "msgs_in": st.in_rate,
        "msgs_out": st.out_rate,
        "hub_util": None if last is None else last.hub_util,
        "hub_lag": None if last is None else last.hub_lag,
        "cpu": None if last is None or last.cpu_user is None
        else (last.cpu_user or 0) + (last.cpu_sys or 0),
        "rss": None if last is None else last.rss,
        "fds": None if last is None else last.fds,
        "sample_time": st.sweep_time,
        "alarms": [_alarm_json(a) for a in alarms],
    }


def _alarm_json(a: alarm_handler.Alarm) -> dict[str, Any]:
    d = a.description
    desc: Any = d._asdict() if hasattr(d, "_asdict") else d
    if isinstance(desc, dict):
        desc = {k: (repr(v) if k == "pid" else v) for k, v in desc.items()}
        for k, v in desc.items():
            if isinstance(v, float) and v == float("inf"):
                desc[k] = None
    aid = a.id
    if isinstance(aid, tuple):
        aid = [repr(x) if not isinstance(x, str | int | float) else x for x in aid]
    return {"id": aid, "description": desc if isinstance(desc, dict | str | int | float)
            else repr(desc)}


def snapshot_alarms() -> list[dict[str, Any]]:
    """The raised alarms as JSON-ready dicts (``status``)."""
    return [_alarm_json(a) for a in alarm_handler.get_alarms(timeout=2.0)]


def describe_alarm(a: dict[str, Any]) -> str:
    """One line for an alarm of ``snapshot()["alarms"]``."""
    aid, d = a["id"], a["description"]
    if isinstance(aid, list) and aid and aid[0] == "message_queue" and isinstance(d, dict):
        drain = d.get("drain_time")
        return (f"message_queue {d.get('name') or d.get('pid')}: {d.get('queue')} queued, "
                f"dequeues {d.get('out_rate', 0):.1f}/s, enqueues {d.get('in_rate', 0):.1f}/s,"
                f" drains in {'never' if drain is None else f'{drain:.1f} s'}")
    if isinstance(d, dict) and "value" in d:
        return f"{aid}: {d['value']:.0f} >= {d['threshold']:.0f}"
    if isinstance(d, dict) and "seconds" in d:
        return f"{aid}: {d['seconds']:.3f} s ({d.get('detail', '')})"
    return f"{aid}: {d}"


def process_rows(sort: str = "queue", limit: int = 20) -> list[dict[str, Any]]:
    """The top processes with their queue statistics and what they run (``top``'s
    rows): ``sort`` by ``queue``, ``out`` (dequeue rate), ``in``, ``drain``,
    ``memory``."""
    from otp import observer

    if sort == "memory":
        base = observer.top("memory", limit)
        picked = [r.pid for r in base]
    else:
        picked = [r.pid for r in stats.processes(sort, limit)]  # type: ignore[arg-type]
        base = observer.rows_for(picked)
    by_pid = {r.pid: r for r in base}
    out = []
    for pid in picked:
        base_row = by_pid.get(pid)
        st = stats.process(pid)
        if base_row is None or st is None:
            continue
        row = base_row.to_json()
        row.update({k: v for k, v in st.to_json().items() if k not in ("pid", "name")})
        out.append(row)
    return out


def top_view(sort: str = "queue", limit: int = 20) -> dict[str, Any]:
    """This node's summary and top rows, each row naming the node (what ``rpc`` asks
    of every node for ``top --cluster``)."""
    me = node()
    rows = process_rows(sort, limit)
    for r in rows:
        r["node"] = me
    return {"summary": snapshot(), "rows": rows}


def sar_view(last: float | None = None) -> dict[str, Any]:
    """This node's activity samples as JSON-ready dicts (``sar --cluster``)."""
    return {"node": node(), "samples": [s.to_json() for s in sar.samples(last)]}


_ROW_KEYS = {"queue": lambda r: r.get("queue") or 0,
             "out": lambda r: r.get("out_now") or 0,
             "in": lambda r: r.get("in_now") or 0,
             "drain": lambda r: (float("inf") if r.get("drain_time") is None
                                 else r["drain_time"]) if r.get("queue") else -1.0,
             "memory": lambda r: r.get("memory") or 0}


def cluster_top(sort: str = "queue", limit: int = 20,
                timeout: float = 5.0) -> dict[str, Any]:
    """``top_view`` of this node and every connected one (``otp.rpc``): their
    summaries, and the rows of all merged by ``sort``. A node that does not answer is
    named in ``bad_nodes``."""
    from otp import rpc
    from otp.process import nodes

    views = [top_view(sort, limit)]
    others = nodes()
    bad: list[str] = []
    if others:
        results, bad = rpc.multicall(others, "otp.ops:top_view", (sort, limit),
                                     timeout=timeout)
        for n, got in zip([n for n in others if n not in bad], results, strict=False):
            if isinstance(got, dict):
                views.append(got)
            else:
                bad.append(n)
    rows = [r for v in views for r in v["rows"]]
    rows.sort(key=_ROW_KEYS.get(sort, _ROW_KEYS["queue"]), reverse=True)
    return {"summary": views[0]["summary"], "nodes": [v["summary"] for v in views],
            "rows": rows[:limit], "bad_nodes": list(bad)}


def cluster_sar(last: float | None = None, timeout: float = 5.0) -> list[dict[str, Any]]:
    """``sar_view`` of this node and every connected one."""
    from otp import rpc
    from otp.process import nodes

    views = [sar_view(last)]
    others = nodes()
    if others:
        results, _bad = rpc.multicall(others, "otp.ops:sar_view", (last,), timeout=timeout)
        views += [r for r in results if isinstance(r, dict)]
    return views


def control_handlers() -> dict[str, Any]:
    """The control-socket requests of a release for operations (``bin/<name> top``,
    ``sar``, ``alarms``)."""

    def ops_top(req: dict[str, Any]) -> dict[str, Any]:
        sort, limit = str(req.get("sort", "queue")), int(req.get("limit", 20))
        if req.get("cluster"):
            return cluster_top(sort, limit)
        return {"summary": snapshot(), "rows": process_rows(sort, limit)}

    def ops_sar(req: dict[str, Any]) -> Any:
        last = req.get("last")
        since = None if last is None else float(last)
        if req.get("cluster"):
            return cluster_sar(since)
        return [s.to_json() for s in sar.samples(since)]

    def ops_alarms(_req: dict[str, Any]) -> list[dict[str, Any]]:
        return [_alarm_json(a) for a in alarm_handler.get_alarms()]

    def ops_inspect(req: dict[str, Any]) -> dict[str, Any]:
        return inspect(str(req["pid"]))

    return {"ops_top": ops_top, "ops_sar": ops_sar, "ops_alarms": ops_alarms,
            "ops_inspect": ops_inspect}


def inspect(pid_text: str) -> dict[str, Any]:
    """One process in detail: queue statistics, process info, state (``sys.get_state``
    for a behaviour process, with a short timeout), stack."""
    from otp import code
    from otp import sys as otp_sys
    from otp.process import process_info

    pid = _local_pid(pid_text)
    info = None if pid is None else process_info(pid)
    if pid is None or info is None:
        return {"pid": pid_text, "alive": False}
    st = stats.process(pid)
    state: str | None = None
    if pid in code.behaviour_processes():
        try:
            state = repr(otp_sys.get_state(pid, timeout=1.0))[:2000]
        except Exception as e:  # a busy or stuck process: say so
            state = f"(no answer: {type(e).__name__})"
    return {
        "pid": repr(pid), "alive": True, "name": info.registered_name,
        "status": info.status, "initial_call": info.initial_call,
        "current_function": info.current_function,
        "links": [repr(p) for p in info.links],
        "stats": None if st is None else st.to_json(),
        "state": state,
        "stack": list(info.current_stacktrace)[-12:],
    }


def _local_pid(text: str) -> Pid | None:
    """A registered name, or a local pid's text ``<0.42.0>``, to a live pid."""
    from otp.lowlevel import current_node
    from otp.process import whereis

    text = text.strip()
    pid = whereis(text)
    if pid is not None:
        return pid
    parts = text.strip("<>").split(".")
    if len(parts) == 3 and parts[0] == "0" and parts[1].isdigit():
        p = current_node().procs.get(int(parts[1]))
        if p is not None and repr(p.pid) == text:
            return p.pid
    return None


def observer(sort: str = "queue", limit: int = 15) -> None:
    """Print the node's summary and its top processes (the remote shell's
    ``observer()``)."""
    from otp.top import render_text

    print(render_text(snapshot(), process_rows(sort, limit), sort))
