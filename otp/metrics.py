"""Metrics for Prometheus: the node's figures and an application's own counters.

An opt-in HTTP endpoint (``/metrics``, the text format of ``prometheus_client``),
loopback by default, served by ``otp.httpd`` from the ``otp_metrics`` process (the
``otp_ops`` application's ``metrics: {enabled: true, host: 127.0.0.1, port: 9568}``).
A scrape reads, at that moment:

- the kernel and ``otp.stats``: ``otp_processes``, ``otp_messages_queued``,
  ``otp_processes_backlogged``, ``otp_messages_enqueued_total`` /
  ``_dequeued_total``, ``otp_message_rate{direction, window}``, the largest queues
  ``otp_process_queue{pid, name}`` (top 10) and their ``otp_process_drain_seconds``;
- ``otp.alarm_handler``: ``otp_alarms`` and ``otp_alarm{id}`` (1 per raised alarm);
- ``otp.sar``'s last sample: ``otp_hub_utilization``, ``otp_hub_lag_seconds``,
  ``otp_gc_pause_seconds``, ``otp_open_fds``, ``otp_rss_bytes``, ``otp_run_queue``;

and every counter and histogram made with ``counter``/``histogram`` (process-wide,
in ``REGISTRY``; a counter's ``inc`` is one integer addition, a histogram's
``observe`` a bisection). An application counts its own events with them::

    import otp
    from otp import metrics

    LOGINS = metrics.counter("chat_logins_total", "logins accepted")

    def main():
        LOGINS.inc()
        text = metrics.exposition().decode()
        assert "chat_logins_total 1.0" in text and "otp_processes" in text

    otp.run(main)

Failure semantics: a figure that is not available (no sampler, no reporter) is left
out of the scrape; a port already taken fails the ``otp_metrics`` start (the
supervisor reports it). Counters live as long as the OS process (a restarted node
keeps counting, as Prometheus expects of a process's counters).

When not to use it: for per-process detail (``otp.stats``, ``bin/<name> top``).
"""

from __future__ import annotations

import math
import socket
from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from otp import gen_server, httpd
from otp.gen_server import GenServer, Ok, Reply
from otp.process import Pid

__all__ = ["NAME", "REGISTRY", "Counter", "Histogram", "counter", "exposition", "histogram",
           "start_link"]

NAME = "otp_metrics"

#: Where the application counters and the node collector are registered.
REGISTRY = CollectorRegistry(auto_describe=False)
_made: dict[str, Counter | Histogram] = {}


class Counter:
    """A monotonic count (``inc``). A plain integer: the node runs on one thread, so no
    lock (``prometheus_client``'s own counters take one, which costs microseconds under
    gevent's patching)."""

    __slots__ = ("doc", "name", "value")

    def __init__(self, name: str, doc: str) -> None:
        self.name = name[:-6] if name.endswith("_total") else name
        self.doc = doc
        self.value: float = 0

    def inc(self, n: int | float = 1) -> None:
        self.value += n


class Histogram:
    """Observations counted in buckets (``observe``), with their sum."""

    __slots__ = ("buckets", "count", "counts", "doc", "name", "sum")

    def __init__(self, name: str, doc: str, buckets: tuple[float, ...]) -> None:
        self.name = name
        self.doc = doc
        self.buckets = tuple(sorted(buckets))
        self.counts = [0] * (len(self.buckets) + 1)  # the last: above every bucket
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1


#: ``histogram``'s buckets when none are given (seconds: 1 ms to 10 s).
DEFAULT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def counter(name: str, doc: str) -> Counter:
    """A counter in ``REGISTRY`` (the same object on every call with ``name``)."""
    got = _made.get(name)
    if got is None:
        got = _made[name] = Counter(name, doc)
    if not isinstance(got, Counter):
        raise ValueError(f"metric {name!r} is a {type(got).__name__}, not a Counter")
    return got


def histogram(name: str, doc: str, buckets: tuple[float, ...] | None = None) -> Histogram:
    """A histogram in ``REGISTRY`` (the same object on every call with ``name``)."""
    got = _made.get(name)
    if got is None:
        got = _made[name] = Histogram(name, doc, buckets or DEFAULT_BUCKETS)
    if not isinstance(got, Histogram):
        raise ValueError(f"metric {name!r} is a {type(got).__name__}, not a Histogram")
    return got


class _AppCollector:
    """The counters and histograms made with ``counter``/``histogram``."""

    def collect(self) -> Iterator[Any]:
        for m in list(_made.values()):
            if isinstance(m, Counter):
                c = CounterMetricFamily(m.name, m.doc)
                c.add_metric([], m.value)
                yield c
            else:
                acc = 0
                points = []
                for le, n in zip(m.buckets, m.counts, strict=False):
                    acc += n
                    points.append((repr(float(le)), acc))
                points.append(("+Inf", m.count))
                yield HistogramMetricFamily(m.name, m.doc, buckets=points, sum_value=m.sum)


class _NodeCollector:
    """The node's figures, read at scrape time (inside the node)."""

    def collect(self) -> Iterator[Any]:
        from otp import alarm_handler, sar, stats
        from otp.lowlevel import RUNNING

        if RUNNING.node is None:
            return
        st = stats.node()

        def gauge(name: str, doc: str, value: float | None) -> Any:
            g = GaugeMetricFamily(name, doc)
            if value is not None:
                g.add_metric([], value)
            return g

        yield gauge("otp_processes", "processes alive", len(RUNNING.node.procs))
        yield gauge("otp_messages_queued", "messages in all mailboxes (last sample)",
                    st.queued)
        yield gauge("otp_processes_backlogged", "processes with queued messages",
                    st.backlogged)
        yield gauge("otp_messages_enqueued_total", "messages put in mailboxes",
                    st.enqueued)
        yield gauge("otp_messages_dequeued_total", "messages taken out of mailboxes",
                    st.dequeued)
        rate = GaugeMetricFamily("otp_message_rate", "messages/s, decayed",
                                 labels=["direction", "window"])
        for i, w in enumerate(stats.WINDOWS):
            rate.add_metric(["in", f"{w:g}s"], st.in_rate[i])
            rate.add_metric(["out", f"{w:g}s"], st.out_rate[i])
        yield rate
        q = GaugeMetricFamily("otp_process_queue", "the largest message queues",
                              labels=["pid", "name"])
        d = GaugeMetricFamily("otp_process_drain_seconds",
                              "projected drain time of the largest queues (+Inf: never)",
                              labels=["pid", "name"])
        for row in stats.processes("queue", 10, backlogged_only=True):
            labels = [repr(row.pid), row.name or ""]
            q.add_metric(labels, row.queue)
            d.add_metric(labels, row.drain_time if not math.isnan(row.drain_time) else 0)
        yield q
        yield d
        alarms = alarm_handler.get_alarms(timeout=1.0)
        yield gauge("otp_alarms", "alarms raised now", len(alarms))
        a = GaugeMetricFamily("otp_alarm", "1 per raised alarm", labels=["id"])
        for al in alarms:
            a.add_metric([str(al.id[0] if isinstance(al.id, tuple) else al.id)
                          + ("" if not isinstance(al.id, tuple) else f" {al.id[1]!r}")], 1)
        yield a
        rows = sar.samples()
        if rows:
            s = rows[-1]
            yield gauge("otp_hub_utilization", "fraction of wall time the hub was busy",
                        s.hub_util)
            yield gauge("otp_hub_lag_seconds", "lateness of the reporter's tick", s.hub_lag)
            yield gauge("otp_gc_pause_seconds", "GC pause in the last interval",
                        s.gc_ms / 1000)
            yield gauge("otp_open_fds", "open descriptors", s.fds)
            yield gauge("otp_rss_bytes", "resident memory", s.rss)
            yield gauge("otp_run_queue", "runnable processes", s.runq)


REGISTRY.register(_NodeCollector())
REGISTRY.register(_AppCollector())


def exposition() -> bytes:
    """The scrape's body (Prometheus text format)."""
    return generate_latest(REGISTRY)


def _app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    if environ.get("PATH_INFO") not in ("/metrics", "/"):
        body = b"not found: try /metrics\n"
        start_response("404 Not Found", [("Content-Type", "text/plain"),
                                         ("Content-Length", str(len(body)))])
        return [body]
    body = exposition()
    start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST),
                              ("Content-Length", str(len(body)))])
    return [body]


class _Server(GenServer):
    """Owns the listening socket and the ``otp.httpd`` server."""

    def init(self, arg: tuple[str, int]) -> Any:
        host, port = arg
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(64)
        server = httpd.serve(sock, _app, timeout=30.0)
        return Ok((sock, server))

    def handle_call(self, request: Any, from_: Any, state: Any) -> Any:
        sock, _server = state
        return Reply(tuple(sock.getsockname()[:2]), state)

    def terminate(self, reason: Any, state: Any) -> None:
        sock, server = state
        server.stop()
        sock.close()


def start_link(host: str = "127.0.0.1", port: int = 9568) -> Pid:
    """Serve ``/metrics`` on ``host:port`` (port 0: any free one; see ``address``)."""
    pid = gen_server.start_link(_Server, (host, port), name=NAME)
    assert pid is not None
    return pid


def address() -> tuple[str, int]:
    """Where the endpoint listens."""
    host, port = gen_server.call(NAME, "address")
    return host, port
