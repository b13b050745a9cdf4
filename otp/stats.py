"""Message-queue statistics: per-process and node-wide rates at 1, 10 and 100 seconds.

The primary gauge of a node's health is its message queues: a process that falls
behind (its queue grows, its dequeue rate cannot keep up) is the next bottleneck. The
kernel counts, for every process, the messages put in its mailbox (one integer
increment on the send path); what it took out is that count minus the mailbox's
length. The **sampler** (``start_link``, the ``otp_stats`` process of the ``otp_ops``
application, on by default in releases) reads those counters every ``interval``
seconds and keeps exponentially decayed rates over three windows (1, 10 and 100 s) for
every process that ever received a message, and for the node::

    import otp
    from otp import stats
    from otp.process import receive, send, sleep, spawn

    def main():
        stats.start_link(interval=1.0)
        def consumer():
            while True:
                receive()
                sleep(0.1)                     # handles 10 messages a second
        pid = spawn(consumer)
        for _ in range(30):
            send(pid, "work")                 # 30 at once: a backlog
        sleep(2.5)
        row = stats.process(pid)
        assert row.queue > 0 and row.dequeued >= 20
        assert row.drain_time > 0             # queue / (dequeue rate - enqueue rate)
        assert stats.node().processes > 0
        stats.stop()

    otp.run(main)

Rates: at each sample, for each window ``tau`` the rate becomes
``r + (1 - exp(-dt/tau)) * (delta/dt - r)`` (starting at 0), ``delta`` being the
messages counted since the previous sample ``dt`` seconds earlier: a load of ``c``
messages a second gives ``c * (1 - exp(-t/tau))`` after ``t`` seconds. A process idle
since its last update is not touched; its rates are decayed when read.

Projections (``ProcStats``) use the 1-second rates (a stall shows within a sample or
two), corrected for their start at 0 (divided by ``1 - exp(-age/1)``, ``age`` the time
the sampler has watched the process), so that a steady load reads as itself from the
first sample on:
``delay = queue / dequeue rate`` is how long a message arriving now will wait;
``drain_time = queue / (dequeue rate - enqueue rate)`` is when the backlog will be gone
(``inf`` while the process does not keep up). ``oldest_wait`` is a lower bound of how
long the oldest queued message has waited, from the counts the sampler saw (to the
sample's resolution).

Cost: the kernel pays one increment per message. The sampler walks the process table
in slices of ``chunk`` processes, yielding to the node between slices, so at 100 000
processes no slice holds the hub long (``NodeStats.max_slice`` says how long the
longest did, ``sweep_time`` the whole sweep's CPU). Processes that never received a
message are skipped at the cost of one attribute read.

Failure semantics: the readers (``node``, ``processes``, ``process``) read the sampler's
state directly (no message to the sampler), so they answer even when the sampler is
behind; before the first sample they return zeros. The sampler's state of a process
goes with the process. A reply through a call's reply slot (``gen_server.call``'s
answer) is not counted as a message (it never enters the mailbox).

When not to use it: to count a protocol's own events (count them yourself, or use
``otp.metrics``); rates below one message per 100 s are noise.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Literal, NamedTuple

from otp import proc_lib
from otp.lowlevel import NodeVar, Process, current_node, current_process
from otp.process import Pid, now, receive, whereis

__all__ = [
    "NAME",
    "WINDOWS",
    "NodeStats",
    "ProcStats",
    "Sampler",
    "node",
    "process",
    "processes",
    "sample_now",
    "sampler",
    "start_link",
    "stop",
]

#: The registered name of the sampler.
NAME = "otp_stats"
#: The decay windows, in seconds.
WINDOWS = (1.0, 10.0, 100.0)
_INF = float("inf")
_PROJECTION = 0  # WINDOWS index of the projections' rates: 1 s
_HISTORY = 256  # samples kept for a backlogged process's oldest_wait


class NodeStats(NamedTuple):
    """The node-wide figures of the last sample."""

    at: float  # node clock of the sample
    processes: int
    queued: int  # messages in all mailboxes
    backlogged: int  # processes with a non-empty mailbox
    enqueued: int  # messages put in mailboxes since the node started
    dequeued: int  # ... and taken out
    in_rate: tuple[float, float, float]  # enqueued / s at 1, 10, 100 s
    out_rate: tuple[float, float, float]  # dequeued / s
    sweep_time: float  # wall seconds the sampler spent on the last sweep (all slices)
    max_slice: float  # wall seconds of the sweep's longest slice (holding the hub)
    samples: int  # sweeps done

    def to_json(self) -> dict[str, Any]:
        """JSON-ready values (the control socket's ``stats`` answer)."""
        return self._asdict() | {"in_rate": list(self.in_rate), "out_rate": list(self.out_rate)}


class ProcStats(NamedTuple):
    """One process's queue figures at the last sample (queue read now)."""

    pid: Pid
    name: str | None
    queue: int
    enqueued: int
    dequeued: int
    in_rate: tuple[float, float, float]  # decayed to the last sample
    out_rate: tuple[float, float, float]
    # the 1-s rates corrected for their start at 0: what the projections divide by
    in_now: float
    out_now: float
    delay: float  # queue / out_now: a new message's wait (s); 0 with no queue
    drain_time: float  # queue / (out_now - in_now) (s); inf: not keeping up
    oldest_wait: float | None  # lower bound (s) of the oldest queued message's wait

    def to_json(self) -> dict[str, Any]:
        """JSON-ready values (infinite times as None)."""
        return {
            "pid": repr(self.pid),
            "name": self.name or "",
            "queue": self.queue,
            "enqueued": self.enqueued,
            "dequeued": self.dequeued,
            "in_rate": list(self.in_rate),
            "out_rate": list(self.out_rate),
            "in_now": self.in_now,
            "out_now": self.out_now,
            "delay": _finite(self.delay),
            "drain_time": _finite(self.drain_time),
            "oldest_wait": self.oldest_wait,
        }


def _finite(x: float) -> float | None:
    return None if math.isinf(x) else x


_ZERO3 = (0.0, 0.0, 0.0)

# The per-process state (p.qs): a list, indexed by these.
_T, _IN, _OUT, _I1, _I10, _I100, _O1, _O10, _O100, _SEEN, _HIST = range(11)


class Sampler:
    """The sampler's state for one node (kept in a ``NodeVar``); ``sweep`` does one sample.

    Usable without the process (tests and tools call ``sweep`` directly); the process
    (``start_link``) calls it every ``interval`` and yields between slices.
    """

    def __init__(self, chunk: int = 2000) -> None:
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise ValueError(f"chunk expects an int >= 1, got {chunk!r}")
        self.chunk = chunk
        self.prev: float | None = None  # node clock of the previous sweep
        self.last = NodeStats(0.0, 0, 0, 0, 0, 0, _ZERO3, _ZERO3, 0.0, 0.0, 0)
        self._node_rates = [0.0] * 6
        self._node_in = 0
        self._node_out = 0
        #: processes whose queue was non-empty at the last sweep
        self.backlogged: list[Process] = []
        #: called after each sweep with the sampler (alarms, metrics)
        self.listeners: list[Callable[[Sampler], Any]] = []

    # --- the sweep ------------------------------------------------------------------

    def sweep(self, pause: Callable[[], Any] | None = None) -> NodeStats:
        """Sample every process of the running node; ``pause()`` is called between slices
        of ``chunk`` processes (the sampler process yields there)."""
        node = current_node()
        t = node.clock.now()
        prev = self.prev
        dt = 0.0 if prev is None else t - prev
        alphas = [1.0 - math.exp(-dt / w) for w in WINDOWS] if dt > 0 else [0.0, 0.0, 0.0]
        a1, a10, a100 = alphas
        w0 = time.perf_counter()
        procs = list(node.procs.values())  # (timed with the first slice)
        total_in = total_out = queued = 0
        backlogged: list[Process] = []
        sweep_time = 0.0
        max_slice = 0.0
        exp = math.exp
        for start in range(0, len(procs), self.chunk):
            if start:
                if pause is not None:
                    pause()
                w0 = time.perf_counter()
            for p in procs[start:start + self.chunk]:
                nin = p.nin
                if nin == 0:
                    continue
                mb = p.mbox
                q = len(mb) if mb else 0
                nout = nin - q
                total_in += nin
                total_out += nout
                s = p.qs
                if s is None:
                    if prev is None or p.dead:  # first sweep: a baseline, no rate yet
                        p.qs = [t, nin, nout, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, t, None]
                        if q:
                            queued += q
                            backlogged.append(p)
                            p.qs[_HIST] = deque([(t, nin)], _HISTORY)
                        continue
                    # It had no message at the previous sweep (or did not exist yet).
                    p.qs = s = [prev, 0, 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, prev, None]
                din = nin - s[_IN]
                dout = nout - s[_OUT]
                if din or dout:
                    ts = s[_T]
                    if prev is not None and ts < prev:
                        # Idle since ts: decay to the previous sweep first.
                        gap = prev - ts
                        k1, k10, k100 = exp(-gap), exp(-gap / 10.0), exp(-gap / 100.0)
                        s[_I1] *= k1
                        s[_I10] *= k10
                        s[_I100] *= k100
                        s[_O1] *= k1
                        s[_O10] *= k10
                        s[_O100] *= k100
                    if dt > 0:
                        ri = din / dt
                        ro = dout / dt
                        s[_I1] += a1 * (ri - s[_I1])
                        s[_I10] += a10 * (ri - s[_I10])
                        s[_I100] += a100 * (ri - s[_I100])
                        s[_O1] += a1 * (ro - s[_O1])
                        s[_O10] += a10 * (ro - s[_O10])
                        s[_O100] += a100 * (ro - s[_O100])
                    s[_T] = t
                    s[_IN] = nin
                    s[_OUT] = nout
                if q:
                    queued += q
                    backlogged.append(p)
                    h = s[_HIST]
                    if h is None:
                        s[_HIST] = h = deque(maxlen=_HISTORY)
                    if not h or h[-1][1] != nin:
                        h.append((t, nin))
                elif s[_HIST] is not None:
                    s[_HIST] = None
            elapsed = time.perf_counter() - w0
            sweep_time += elapsed
            if elapsed > max_slice:
                max_slice = elapsed
        total_in += node.ended_in
        total_out += node.ended_out
        r = self._node_rates
        if dt > 0:
            ri = (total_in - self._node_in) / dt
            ro = (total_out - self._node_out) / dt
            for i, a in enumerate(alphas):
                r[i] += a * (ri - r[i])
                r[3 + i] += a * (ro - r[3 + i])
        self._node_in = total_in
        self._node_out = total_out
        self.prev = t
        self.backlogged = backlogged
        self.last = NodeStats(
            at=t,
            processes=len(procs),
            queued=queued,
            backlogged=len(backlogged),
            enqueued=total_in,
            dequeued=total_out,
            in_rate=(r[0], r[1], r[2]),
            out_rate=(r[3], r[4], r[5]),
            sweep_time=sweep_time,
            max_slice=max_slice,
            samples=self.last.samples + 1,
        )
        for fn in list(self.listeners):
            fn(self)
        return self.last

    # --- reading --------------------------------------------------------------------

    def row(self, p: Process) -> ProcStats:
        """The figures of process ``p`` as of the last sweep (its queue read now)."""
        mb = p.mbox
        q = len(mb) if mb else 0
        nin = p.nin
        s = p.qs
        if s is None:
            return ProcStats(p.pid, p.name, q, nin, nin - q, _ZERO3, _ZERO3, 0.0, 0.0,
                             0.0 if q == 0 else _INF, 0.0 if q == 0 else _INF, None)
        t = self.last.at
        gap = t - s[_T] if self.prev is not None else 0.0
        if gap > 0:
            k = tuple(math.exp(-gap / w) for w in WINDOWS)
        else:
            k = (1.0, 1.0, 1.0)
        ins = (s[_I1] * k[0], s[_I10] * k[1], s[_I100] * k[2])
        outs = (s[_O1] * k[0], s[_O10] * k[1], s[_O100] * k[2])
        age = t - s[_SEEN]
        w = WINDOWS[_PROJECTION]
        corr = 1.0 - math.exp(-age / w) if age > 0 else 0.0
        ri = ins[_PROJECTION] / corr if corr > 0 else 0.0
        ro = outs[_PROJECTION] / corr if corr > 0 else 0.0
        if q == 0:
            delay = drain = 0.0
        else:
            delay = q / ro if ro > 1e-9 else _INF
            drain = q / (ro - ri) if ro - ri > 1e-9 else _INF
        oldest = None
        h = s[_HIST]
        if q and h:
            first = nin - q + 1  # the count at which the oldest queued message came
            seen = h[0][0]
            for when, count in h:
                if count >= first:
                    seen = when
                    break
            oldest = max(0.0, t - seen)
        return ProcStats(p.pid, p.name, q, nin, nin - q, ins, outs, ri, ro, delay, drain,
                         oldest)


_SAMPLER: NodeVar[Sampler | None] = NodeVar("otp.stats.sampler", default=None)


def sampler() -> Sampler:
    """This node's sampler state (made on first use): ``sampler().sweep()`` samples now
    in the caller, without the sampler process."""
    s = _SAMPLER.get()
    if s is None:
        s = Sampler()
        _SAMPLER.set(s)
    return s


# --- the process -----------------------------------------------------------------------


class Stop(NamedTuple):
    """Ask the sampler to end (``stop``)."""

    ref: Any


class SampleNow(NamedTuple):
    """Ask the sampler for a sweep now; it answers ``Sampled(ref)`` to ``sender``."""

    sender: Pid
    ref: Any


class Sampled(NamedTuple):
    ref: Any


def start_link(interval: float = 1.0, chunk: int = 2000) -> Pid:
    """Start the sampler, registered as ``otp_stats``, linked to the caller: one sweep
    now (a baseline), then one every ``interval`` seconds of the node clock."""
    if isinstance(interval, bool) or not isinstance(interval, int | float) or not interval > 0:
        raise ValueError(f"interval expects seconds > 0, got {interval!r}")
    state = sampler()
    state.chunk = chunk
    return proc_lib.start_link(_run, float(interval), state)


def child_spec(interval: float = 1.0, chunk: int = 2000) -> Any:
    """A supervisor child spec for the sampler."""
    from otp.supervisor import ChildSpec

    return ChildSpec(id=NAME, start=(start_link, (interval, chunk)))


def _run(interval: float, sampler: Sampler) -> None:
    from otp.process import register

    register(NAME, current_process().pid)
    proc_lib.init_ack(current_process().pid)
    me = current_process()
    node = me.node

    def pause() -> None:
        # A turn for the hub (I/O, timers) and every runnable process between slices:
        # the hub's next callback round puts this process back in the run queue.
        node.hub.loop.run_callback(node.wake, me)
        node.block(me)

    sampler.sweep(pause)
    due = now() + interval
    while True:
        msg = receive(timeout=max(0.0, due - now()), default=None)
        if msg is None:
            sampler.sweep(pause)
            due += interval
            if due <= now():  # fell behind (a long hold): skip, never catch up in a burst
                due = now() + interval
        elif isinstance(msg, SampleNow):
            sampler.sweep(pause)
            from otp.process import send

            send(msg.sender, Sampled(msg.ref))
        elif isinstance(msg, Stop):
            return


def _nothing(_msg: Any) -> bool:
    return False


def stop() -> None:
    """Stop the sampler (its state stays: ``start_link`` again goes on from it)."""
    from otp.process import Down, demonitor, make_ref, monitor, send

    pid = whereis(NAME)
    if pid is None:
        return
    ref = monitor(pid)
    send(pid, Stop(make_ref()))
    receive(lambda m: isinstance(m, Down) and m.ref == ref)
    demonitor(ref, flush=True)


def sample_now(timeout: float = 5.0) -> NodeStats:
    """Have the sampler sweep now and return the result (tests, ``top``); without a
    running sampler, sweep in the caller."""
    from otp.process import make_ref, send

    pid = whereis(NAME)
    if pid is None:
        return sampler().sweep()
    ref = make_ref()
    send(pid, SampleNow(current_process().pid, ref))
    receive(lambda m: isinstance(m, Sampled) and m.ref == ref, timeout)
    return sampler().last


# --- readers ---------------------------------------------------------------------------


def node() -> NodeStats:
    """The node-wide figures of the last sample."""
    return sampler().last


def process(pid: Pid | str) -> ProcStats | None:
    """The figures of one process (a pid or a registered name), None if it is not alive."""
    from otp.lowlevel import lookup_process

    p = lookup_process(pid)
    return None if p is None else sampler().row(p)


SortKey = Literal["queue", "in", "out", "drain", "delay"]
_KEYS: dict[str, Callable[[ProcStats], float]] = {
    "queue": lambda r: r.queue,
    "in": lambda r: r.in_rate[1],
    "out": lambda r: r.out_rate[1],
    "drain": lambda r: r.drain_time if r.queue else -1.0,
    "delay": lambda r: r.delay if r.queue else -1.0,
}


def processes(sort: SortKey = "queue", limit: int | None = 20,
              backlogged_only: bool = False) -> list[ProcStats]:
    """The processes with queue statistics, first by ``sort``: ``queue`` (length),
    ``in``/``out`` (10-s enqueue/dequeue rate), ``drain`` or ``delay`` (projections)."""
    key = _KEYS.get(sort)
    if key is None:
        raise ValueError(f"processes sorts by one of {sorted(_KEYS)}, got {sort!r}")
    s = sampler()
    source: Iterable[Process]
    if backlogged_only:
        source = [p for p in s.backlogged if not p.dead]
    else:
        source = [p for p in current_node().procs.values() if p.qs is not None or p.mbox]
    rows = [s.row(p) for p in source]
    rows.sort(key=key, reverse=True)
    return rows if limit is None else rows[:limit]
