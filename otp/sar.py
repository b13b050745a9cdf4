"""The system activity reporter: one sample a second of the OS process, the hub and the
node, kept for the last minutes in memory and optionally appended to a file.

Like ``sar`` (and WhatsApp's wsar), it answers "what was the node doing at 03:12?"::

    import otp
    from otp import sar
    from otp.process import sleep

    def main():
        sar.start_link(interval=1.0, keep=60.0)
        sleep(3.5)
        rows = sar.samples()
        assert len(rows) >= 3 and rows[-1].processes >= 1
        text = sar.format_table(rows)
        assert sar.parse_table(text)[-1]["procs"] == rows[-1].processes
        sar.stop()

    otp.run(main)

Each ``Sample`` (rates are per second over the interval that ends at ``t``):

- ``cpu_user``/``cpu_sys``: % of one CPU, this OS process and its reaped children
  (``/proc/self/stat``); ``cswch``/``nvcswch``: voluntary and involuntary context
  switches; ``rss`` bytes; ``fds`` open descriptors, ``socks`` of them sockets;
- ``rx_kB``/``tx_kB``, ``rx_pkt``/``tx_pkt``: network traffic of the host's (or the
  container's) interfaces, loopback included (``/proc/self/net/dev``);
- ``processes``, ``runq`` (runnable processes), ``queued`` (messages in all mailboxes,
  from ``otp.stats``), ``msgs_in``/``msgs_out`` (messages/s, ``otp.stats``' 1-s
  rates), ``timers`` (pending);
- ``hub_util``: the fraction of wall time the hub was not waiting for I/O or timers
  (running processes and callbacks: the scheduler utilization); ``hub_lag``: how late
  the reporter's own tick was (the hub was held at least that long);
- ``gc0``/``gc1``/``gc2``: collections per generation, ``gc_ms`` their total pause and
  ``gc_max_ms`` the longest (``gc.callbacks``); ``pool``: tasks waiting for the
  hub's thread pool.

The reporter is the ``otp_sar`` process of the ``otp_ops`` application (``sar:`` in its
config: ``interval``, ``keep`` seconds, ``file`` to append JSON lines to). Read it
with ``samples(last=600)``, from the release with ``bin/<name> sar [--last 10m]``,
drawn with ``plot(samples, "activity.png")`` (``bin/<name> sar --plot FILE.png``;
needs matplotlib, the ``plot`` extra).

Failure semantics: a figure that cannot be read (no ``/proc``) is None (``-`` in the
table); a file that cannot be written is reported once on the ``otp.sar`` logger and
the samples stay in memory. The hub watchers cost two callbacks per hub loop
iteration while the reporter runs; nothing when it does not.

When not to use it: for per-process figures (``otp.stats``) or application counters
(``otp.metrics``).
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import resource
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from otp import proc_lib
from otp.lowlevel import NodeVar, current_node, current_process
from otp.process import Pid, now, receive, register, whereis

__all__ = [
    "COLUMNS",
    "NAME",
    "Sample",
    "format_table",
    "parse_table",
    "plot",
    "samples",
    "start_link",
    "stop",
    "system_figures",
]

NAME = "otp_sar"
_log = logging.getLogger("otp.sar")


class Sample(NamedTuple):
    """One second (``interval``) of activity; None where a figure is not available."""

    t: float  # wall clock (epoch seconds) at the end of the interval
    cpu_user: float | None
    cpu_sys: float | None
    cswch: float | None
    nvcswch: float | None
    rss: int | None
    fds: int | None
    socks: int | None
    rx_kB: float | None
    tx_kB: float | None
    rx_pkt: float | None
    tx_pkt: float | None
    processes: int
    runq: int
    queued: int
    msgs_in: float
    msgs_out: float
    timers: int
    hub_util: float | None
    hub_lag: float
    gc0: int
    gc1: int
    gc2: int
    gc_ms: float
    gc_max_ms: float
    pool: int

    def to_json(self) -> dict[str, Any]:
        return self._asdict()


#: The columns of ``format_table`` (a Sample field, its heading, its format).
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("cpu_user", "%usr", "{:.1f}"),
    ("cpu_sys", "%sys", "{:.1f}"),
    ("cswch", "cswch/s", "{:.0f}"),
    ("nvcswch", "nvcsw/s", "{:.0f}"),
    ("rss", "rss_MB", "MB"),
    ("fds", "fds", "{}"),
    ("socks", "socks", "{}"),
    ("rx_kB", "rxkB/s", "{:.1f}"),
    ("tx_kB", "txkB/s", "{:.1f}"),
    ("rx_pkt", "rxpck/s", "{:.0f}"),
    ("tx_pkt", "txpck/s", "{:.0f}"),
    ("processes", "procs", "{}"),
    ("runq", "runq", "{}"),
    ("queued", "queued", "{}"),
    ("msgs_in", "msgin/s", "{:.0f}"),
    ("msgs_out", "msgout/s", "{:.0f}"),
    ("timers", "timers", "{}"),
    ("hub_util", "%hub", "PCT"),
    ("hub_lag", "lag_ms", "MS"),
    ("gc0", "gc0", "{}"),
    ("gc1", "gc1", "{}"),
    ("gc2", "gc2", "{}"),
    ("gc_ms", "gc_ms", "{:.1f}"),
    ("gc_max_ms", "gcmax_ms", "{:.1f}"),
    ("pool", "pool", "{}"),
)


# --- the collectors (process-wide: one OS process, one hub) ---------------------------


class _GcWatch:
    """Collections and their pauses, per generation, through ``gc.callbacks``."""

    def __init__(self) -> None:
        self.counts = [0, 0, 0]
        self.pause = 0.0
        self.max_pause = 0.0
        self.max_gen = 0
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            d = time.perf_counter() - self._start
            g = min(int(info.get("generation", 0)), 2)
            self.counts[g] += 1
            self.pause += d
            if d > self.max_pause:
                self.max_pause = d
                self.max_gen = g

    def take(self) -> tuple[list[int], float, float, int]:
        out = (self.counts, self.pause, self.max_pause, self.max_gen)
        self.counts = [0, 0, 0]
        self.pause = self.max_pause = 0.0
        return out


class _HubWatch:
    """The hub's busy fraction: the time between a prepare watcher (about to poll) and a
    check watcher (back from the poll) is idle time."""

    def __init__(self, loop: Any) -> None:
        self.idle = 0.0
        self._t = 0.0
        self._prepare = loop.prepare(ref=False)
        self._check = loop.check(ref=False)
        # The lowest priority: our prepare runs after the loop's own (which runs the
        # callbacks: the node's drain), just before the poll; our check first after it.
        with contextlib.suppress(AttributeError, ValueError):
            self._prepare.priority = -2
            self._check.priority = 2
        self._prepare.start(self._before_poll)
        self._check.start(self._after_poll)

    def _before_poll(self) -> None:
        self._t = time.perf_counter()

    def _after_poll(self) -> None:
        if self._t:
            self.idle += time.perf_counter() - self._t
            self._t = 0.0

    def take(self) -> float:
        idle = self.idle
        self.idle = 0.0
        return idle

    def close(self) -> None:
        self._prepare.stop()
        self._check.stop()
        self._prepare.close()
        self._check.close()


def _proc_stat() -> tuple[float, float] | None:
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        # fields[11:15] = utime stime cutime cstime (after the name and state)
        u, s, cu, cs = (int(x) for x in fields[11:15])
        return (u + cu) / tick, (s + cs) / tick
    except (OSError, ValueError, IndexError):
        return None


def _ctx_switches() -> tuple[int, int] | None:
    try:
        vol = inv = None
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("voluntary_ctxt_switches:"):
                    vol = int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches:"):
                    inv = int(line.split()[1])
        return None if vol is None or inv is None else (vol, inv)
    except (OSError, ValueError):
        return None


def _net() -> tuple[int, int, int, int] | None:
    try:
        rb = rp = tb = tp = 0
        with open("/proc/self/net/dev") as f:
            for line in f.readlines()[2:]:
                _, data = line.split(":", 1)
                v = data.split()
                rb += int(v[0])
                rp += int(v[1])
                tb += int(v[8])
                tp += int(v[9])
        return rb, rp, tb, tp
    except (OSError, ValueError, IndexError):
        return None


_SOCKS_UP_TO = 4096  # descriptors looked at one by one for the socket count


def _fds() -> tuple[int | None, int | None]:
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return None, None
    if len(names) > _SOCKS_UP_TO:
        return len(names), None
    socks = 0
    for n in names:
        try:
            if os.readlink(f"/proc/self/fd/{n}").startswith("socket:"):
                socks += 1
        except OSError:
            pass
    return len(names), socks


def _rss() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class Reporter:
    """The reporter's state on one node: the collectors, the last readings, the ring
    of samples. ``take()`` makes one sample (the process calls it every interval)."""

    def __init__(self, interval: float = 1.0, keep: float = 600.0,
                 file: str | None = None) -> None:
        self.interval = interval
        self.ring: deque[Sample] = deque(maxlen=max(1, int(keep / interval)))
        self.file = file
        self._file_failed = False
        self.gc = _GcWatch()
        gc.callbacks.append(self.gc)
        node = current_node()
        self.hub = _HubWatch(node.hub.loop)
        self._last_wall = time.perf_counter()
        self._cpu = _proc_stat()
        self._ctx = _ctx_switches()
        self._net = _net()
        self.lag_max = 0.0  # since the last system_figures()
        self.gc_max = (0.0, 0)  # longest pause since the last system_figures(), its gen
        self._fair_seen = 0

    def close(self) -> None:
        if self.gc in gc.callbacks:
            gc.callbacks.remove(self.gc)
        self.hub.close()

    def take(self, lag: float = 0.0) -> Sample:
        node = current_node()
        wall = time.perf_counter()
        dt = max(wall - self._last_wall, 1e-9)
        self._last_wall = wall
        cpu = _proc_stat()
        ctx = _ctx_switches()
        net = _net()

        def rate(new: Any, old: Any, i: int, scale: float = 1.0) -> float | None:
            if new is None or old is None:
                return None
            return (new[i] - old[i]) / dt * scale

        cpu_user = rate(cpu, self._cpu, 0, 100.0)
        cpu_sys = rate(cpu, self._cpu, 1, 100.0)
        cswch = rate(ctx, self._ctx, 0)
        nvcswch = rate(ctx, self._ctx, 1)
        rx_kB = rate(net, self._net, 0, 1 / 1024)
        rx_pkt = rate(net, self._net, 1)
        tx_kB = rate(net, self._net, 2, 1 / 1024)
        tx_pkt = rate(net, self._net, 3)
        self._cpu, self._ctx, self._net = cpu, ctx, net
        fds, socks = _fds()
        idle = self.hub.take()
        util = max(0.0, min(1.0, 1.0 - idle / dt))
        counts, pause, max_pause, max_gen = self.gc.take()
        if max_pause > self.gc_max[0]:
            self.gc_max = (max_pause, max_gen)
        self.lag_max = max(self.lag_max, lag)
        from otp import stats

        st = stats.node()
        pool = 0
        tp = getattr(node.hub, "_threadpool", None)
        if tp is not None:
            try:
                pool = int(tp.task_queue.qsize())
            except Exception:
                pool = 0
        timers = len(getattr(node, "_timers", ())) - int(getattr(node, "_ncancelled", 0))
        s = Sample(
            t=time.time(), cpu_user=cpu_user, cpu_sys=cpu_sys, cswch=cswch,
            nvcswch=nvcswch, rss=_rss(), fds=fds, socks=socks, rx_kB=rx_kB, tx_kB=tx_kB,
            rx_pkt=rx_pkt, tx_pkt=tx_pkt, processes=len(node.procs), runq=len(node.runq),
            queued=st.queued, msgs_in=st.in_rate[0], msgs_out=st.out_rate[0],
            timers=max(0, timers), hub_util=util, hub_lag=lag, gc0=counts[0],
            gc1=counts[1], gc2=counts[2], gc_ms=pause * 1000, gc_max_ms=max_pause * 1000,
            pool=pool,
        )
        self.ring.append(s)
        if self.file:
            self._append(s)
        return s

    def _append(self, s: Sample) -> None:
        try:
            with open(self.file, "a") as f:  # type: ignore[arg-type]
                f.write(json.dumps(s.to_json()) + "\n")
        except OSError as e:
            if not self._file_failed:
                self._file_failed = True
                _log.warning("sar: cannot append to %s (%s); samples stay in memory only",
                             self.file, e)

    def figures(self) -> Any:
        """The ``alarm_handler.System`` figures since the last call (and resets them)."""
        from otp.alarm_handler import System

        node = current_node()
        held, holder = self.lag_max, "the hub (late timers)"
        fair = getattr(node, "_fairness", None)
        if fair is not None and getattr(fair, "holds", 0) != self._fair_seen:
            self._fair_seen = fair.holds
            fheld, who = fair.last
            if fheld > held:
                held, holder = fheld, who
        pause, gen = self.gc_max
        self.lag_max = 0.0
        self.gc_max = (0.0, 0)
        fds, _ = _fds()
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        try:
            total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError):
            total = None
        return System(rss=_rss(), memory_total=total, fds=fds,
                      fd_limit=None if soft == resource.RLIM_INFINITY else soft,
                      hub_held=held, hub_holder=holder, gc_pause=pause,
                      gc_detail=f"generation {gen}")


_REPORTER: NodeVar[Reporter | None] = NodeVar("otp.sar.reporter", default=None)


def system_figures() -> Any:
    """What the alarms look at: the reporter's figures when it runs, else /proc's."""
    r = _REPORTER.get()
    if r is None:
        from otp.alarm_handler import read_system

        return read_system()
    return r.figures()


# --- the process ------------------------------------------------------------------------


class _Stop(NamedTuple):
    ref: Any


def start_link(interval: float = 1.0, keep: float = 600.0, file: str | None = None) -> Pid:
    """Start the reporter (registered ``otp_sar``): a sample every ``interval`` s of
    the node clock, the last ``keep`` seconds kept, each appended to ``file`` (JSON
    lines) if given."""
    if isinstance(interval, bool) or not isinstance(interval, int | float) or interval <= 0:
        raise ValueError(f"interval expects seconds > 0, got {interval!r}")
    if isinstance(keep, bool) or not isinstance(keep, int | float) or keep < interval:
        raise ValueError(f"keep expects seconds >= interval, got {keep!r}")
    return proc_lib.start_link(_run, float(interval), float(keep), file)


def child_spec(interval: float = 1.0, keep: float = 600.0, file: str | None = None) -> Any:
    from otp.supervisor import ChildSpec

    return ChildSpec(id=NAME, start=(start_link, (interval, keep, file)))


def _run(interval: float, keep: float, file: str | None) -> None:
    me = current_process()
    register(NAME, me.pid)
    old = _REPORTER.get()
    r = Reporter(interval, keep, file)
    if old is not None:  # restarted: keep the history
        old.close()
        r.ring.extend(old.ring)
    _REPORTER.set(r)
    proc_lib.init_ack(me.pid)
    try:
        due = now() + interval
        wall_due = time.perf_counter() + interval
        while True:
            msg = receive(timeout=max(0.0, due - now()), default=None)
            if msg is None:
                w = time.perf_counter()
                real = current_node().clock.__class__.__name__ == "RealClock"
                lag = max(0.0, w - wall_due) if real else 0.0
                r.take(lag)
                due += interval
                wall_due = w + interval
                if due <= now():
                    due = now() + interval
            elif isinstance(msg, _Stop):
                return
    finally:
        r.close()


def stop() -> None:
    """Stop the reporter (the samples stay readable until the node stops)."""
    from otp.process import Down, demonitor, make_ref, monitor, send

    pid = whereis(NAME)
    if pid is None:
        return
    ref = monitor(pid)
    send(pid, _Stop(make_ref()))
    receive(lambda m: isinstance(m, Down) and m.ref == ref)
    demonitor(ref, flush=True)


def samples(last: float | None = None) -> list[Sample]:
    """The kept samples, oldest first; ``last`` seconds only if given."""
    r = _REPORTER.get()
    if r is None:
        return []
    rows = list(r.ring)
    if last is not None and rows:
        since = rows[-1].t - last
        rows = [s for s in rows if s.t > since]
    return rows


def read_file(path: str, last: float | None = None) -> list[Sample]:
    """Samples appended to ``path`` (JSON lines), oldest first; ``last`` seconds only."""
    rows: list[Sample] = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                rows.append(Sample(**json.loads(line)))
    if last is not None and rows:
        since = rows[-1].t - last
        rows = [s for s in rows if s.t > since]
    return rows


# --- output -----------------------------------------------------------------------------


def _cell(value: Any, fmt: str) -> str:
    if value is None:
        return "-"
    if fmt == "MB":
        return f"{value / 1048576:.1f}"
    if fmt == "PCT":
        return f"{value * 100:.1f}"
    if fmt == "MS":
        return f"{value * 1000:.1f}"
    return fmt.format(value)


def format_table(rows: Iterable[Sample | dict[str, Any]],
                 columns: Sequence[str] | None = None) -> str:
    """The samples as ``sar`` prints them: a time column, then one column per figure."""
    cols = [c for c in COLUMNS if columns is None or c[0] in columns]
    table = [["time"] + [h for _, h, _ in cols]]
    for s in rows:
        d = s if isinstance(s, dict) else s._asdict()
        stamp = time.strftime("%H:%M:%S", time.localtime(d["t"]))
        table.append([stamp] + [_cell(d.get(f), fmt) for f, _, fmt in cols])
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    return "\n".join(
        "  ".join(c.rjust(w) if i else c.ljust(w)
                  for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in table)


def parse_table(text: str) -> list[dict[str, Any]]:
    """``format_table``'s output back into dicts by heading (numbers as numbers, ``-``
    as None)."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        return []
    heads = lines[0].split()
    out = []
    for ln in lines[1:]:
        row: dict[str, Any] = {}
        for h, cell in zip(heads, ln.split(), strict=False):
            if h == "time" or cell == "-":
                row[h] = None if cell == "-" else cell
                continue
            num = float(cell)
            row[h] = int(num) if num.is_integer() and "." not in cell else num
        out.append(row)
    return out


def plot(rows: Sequence[Sample | dict[str, Any]], path: str) -> str:
    """Draw the samples (CPU, hub, messages, queued, memory, GC, network) into a PNG at
    ``path``; returns ``path``. Needs matplotlib (the ``plot`` extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise RuntimeError("sar --plot needs matplotlib: pip install 'otpy[plot]'") from e
    import datetime

    ds = [s if isinstance(s, dict) else s._asdict() for s in rows]
    ts = [datetime.datetime.fromtimestamp(d["t"]) for d in ds]

    def series(name: str, scale: float = 1.0) -> list[float]:
        return [float("nan") if d.get(name) is None else d[name] * scale for d in ds]

    panels = [
        ("CPU %", [("user", series("cpu_user")), ("system", series("cpu_sys")),
                   ("hub busy", series("hub_util", 100.0))]),
        ("messages / s", [("in", series("msgs_in")), ("out", series("msgs_out"))]),
        ("queued messages", [("queued", series("queued")), ("runnable", series("runq"))]),
        ("memory MB", [("rss", series("rss", 1 / 1048576))]),
        ("GC ms / s", [("pause", series("gc_ms")), ("longest", series("gc_max_ms")),
                       ("hub lag", series("hub_lag", 1000.0))]),
        ("network kB / s", [("rx", series("rx_kB")), ("tx", series("tx_kB"))]),
    ]
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 2.2 * len(panels)), sharex=True)
    for ax, (title, lines) in zip(axes, panels, strict=False):
        for label, ys in lines:
            ax.plot(ts, ys, label=label, linewidth=1.2)
        ax.set_ylabel(title)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper left", fontsize="small")
    axes[-1].set_xlabel("time")
    fig.suptitle("system activity")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
