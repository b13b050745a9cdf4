"""Alarms: OTP's ``alarm_handler``, and the node's own alarms raised from thresholds.

An alarm is ``(id, description)``, set once and cleared once. ``set_alarm`` and
``clear_alarm`` go to an event manager (``otp.gen_event``) registered as
``alarm_handler``; its default handler (``AlarmHandler``) keeps the list that
``get_alarms`` returns and logs each change as a report on ``otp.report``. Anyone
subscribes with ``gen_event.add_handler("alarm_handler", Handler, args)``: the handler
gets ``SetAlarm(alarm)`` and ``ClearAlarm(id)`` events::

    import otp
    from otp import alarm_handler, gen_event
    from otp.gen_event import EventHandler, Ok

    class Pager(EventHandler):
        def init(self, args):
            return Ok(())
        def handle_event(self, event, state):
            return Ok((*state, event))
        def handle_call(self, request, state):
            return gen_event.Reply(state, state)

    def main():
        alarm_handler.start_link()
        gen_event.add_handler(alarm_handler.NAME, Pager, None)
        alarm_handler.set_alarm(("disk_almost_full", "/var"))
        assert [a.id for a in alarm_handler.get_alarms()] == ["disk_almost_full"]
        alarm_handler.clear_alarm("disk_almost_full")
        assert alarm_handler.get_alarms() == []
        events = gen_event.call(alarm_handler.NAME, Pager, "events")
        assert [type(e).__name__ for e in events] == ["SetAlarm", "ClearAlarm"]
        alarm_handler.stop()

    otp.run(main)

The node's own alarms (``Watch``, run by the stats sampler after each sample with the
thresholds of ``Thresholds``, from the ``otp_ops`` application's ``alarms`` config):

=====================================  ===============================================
alarm id                               raised when (cleared below ``clear`` × it)
=====================================  ===============================================
``("message_queue", pid)``             a process's queue >= ``queue_len``, or its
                                       projected drain time >= ``drain_time`` with a
                                       queue >= ``drain_min_queue``
``"node_queued"``                      all the node's mailboxes >= ``node_queued``
``"memory"``                           resident memory >= ``memory_fraction`` of RAM
                                       (or ``memory_bytes``)
``"descriptors"``                      open descriptors >= ``fd_fraction`` of the cap
``"hub_blocked"``                      the hub was held >= ``hub_blocked`` s (the
                                       activity reporter's lag, the fairness report);
                                       cleared after ``quiet`` s without another
``"gc_pause"``                         a garbage collection took >= ``gc_pause`` s;
                                       cleared after ``quiet`` s without another
=====================================  ===============================================

Each is raised once when its figure crosses the threshold and cleared once when the
figure falls below ``clear`` (0.8) times it (hysteresis: a figure hovering at the
threshold does not flap). Descriptions are named records (``QueueAlarm``,
``LevelAlarm``, ``EventAlarm``) that name the node.

Failure semantics: ``set_alarm``/``clear_alarm`` wait until every handler has seen the
event (``sync_notify``, as OTP's); a handler that raises is removed by the manager (the
others go on). Without a running ``alarm_handler`` they raise ``CallError("noproc")``;
``get_alarms`` returns ``[]``.

When not to use it: for events that are not states (a crash, a login): log them.
"""

from __future__ import annotations

import logging
import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from otp import gen_event
from otp.errors import CallError
from otp.gen_event import EventHandler, Ok, Reply
from otp.logger import log_report
from otp.process import Pid, node, whereis

__all__ = [
    "NAME",
    "Alarm",
    "AlarmHandler",
    "ClearAlarm",
    "EventAlarm",
    "LevelAlarm",
    "QueueAlarm",
    "SetAlarm",
    "Thresholds",
    "Watch",
    "clear_alarm",
    "get_alarms",
    "set_alarm",
    "start_link",
    "stop",
]

NAME = "alarm_handler"
_log = logging.getLogger("otp.report")


class Alarm(NamedTuple):
    """A raised alarm."""

    id: Any
    description: Any


class SetAlarm(NamedTuple):
    """The event a handler gets when an alarm is set."""

    alarm: Alarm


class ClearAlarm(NamedTuple):
    """The event a handler gets when alarm ``id`` is cleared."""

    id: Any


class QueueAlarm(NamedTuple):
    """A process's backlog: ``queue`` messages, dequeued at ``out_rate``/s, enqueued at
    ``in_rate``/s (``otp.stats``' ``out_now``/``in_now``), ``drain_time`` s to empty
    (``queue / (out_rate - in_rate)``; inf: not keeping up)."""

    node: str
    pid: Pid
    name: str | None
    queue: int
    in_rate: float
    out_rate: float
    drain_time: float
    oldest_wait: float | None


class LevelAlarm(NamedTuple):
    """A level over its threshold (``node_queued``, ``memory``, ``descriptors``)."""

    node: str
    what: str
    value: float
    threshold: float


class EventAlarm(NamedTuple):
    """Something that took too long (``hub_blocked``, ``gc_pause``): ``seconds``,
    ``detail`` (who held the hub, which generation)."""

    node: str
    what: str
    seconds: float
    threshold: float
    detail: str


# --- the event manager and its default handler ---------------------------------------


class AlarmHandler(EventHandler):
    """The default handler: keeps the raised alarms (``get_alarms``) and logs changes."""

    def init(self, args: Any) -> Ok:
        return Ok({})

    def handle_event(self, event: Any, state: dict[Any, Alarm]) -> Ok:
        if isinstance(event, SetAlarm):
            alarm = event.alarm
            state[alarm.id] = alarm
            log_report(_log, logging.WARNING, "alarm set: %r %r", (alarm.id, alarm.description),
                       {"label": "alarm_handler:set", "alarm": alarm.id,
                        "description": alarm.description})
        elif isinstance(event, ClearAlarm):
            if state.pop(event.id, None) is not None:
                log_report(_log, logging.INFO, "alarm cleared: %r", (event.id,),
                           {"label": "alarm_handler:clear", "alarm": event.id})
        return Ok(state)

    def handle_call(self, request: Any, state: dict[Any, Alarm]) -> Reply:
        return Reply(tuple(state.values()), state)


def start_link() -> Pid:
    """Start the ``alarm_handler`` event manager with its default handler."""
    pid = gen_event.start_link(name=NAME)
    gen_event.add_handler(pid, AlarmHandler, None)
    return pid


def child_spec() -> Any:
    """A supervisor child spec for the manager."""
    from otp.supervisor import ChildSpec

    return ChildSpec(id=NAME, start=(start_link, ()))


def stop() -> None:
    """Stop the manager (its alarms are forgotten)."""
    if whereis(NAME) is not None:
        gen_event.stop(NAME)


def _alarm(alarm: Any) -> Alarm:
    if isinstance(alarm, Alarm):
        return alarm
    if isinstance(alarm, tuple) and len(alarm) == 2:
        return Alarm(alarm[0], alarm[1])
    raise ValueError(f"set_alarm expects (id, description), got {alarm!r}")


def set_alarm(alarm: tuple[Any, Any] | Alarm) -> None:
    """Set ``(id, description)``; every handler has seen it when this returns."""
    gen_event.sync_notify(NAME, SetAlarm(_alarm(alarm)))


def clear_alarm(alarm_id: Any) -> None:
    """Clear alarm ``alarm_id`` (nothing happens in the default handler if it is not set)."""
    gen_event.sync_notify(NAME, ClearAlarm(alarm_id))


def get_alarms(timeout: float = 5.0) -> list[Alarm]:
    """The alarms set now (the default handler's list); ``[]`` without a manager."""
    if whereis(NAME) is None:
        return []
    try:
        alarms: tuple[Alarm, ...] = gen_event.call(NAME, AlarmHandler, "get_alarms", timeout)
    except CallError:
        return []
    return list(alarms)


# --- thresholds -------------------------------------------------------------------------


@dataclass
class Thresholds:
    """When the node raises its own alarms (the ``otp_ops`` application's ``alarms``).
    None turns one off."""

    queue_len: int | None = 10_000
    drain_time: float | None = 30.0
    drain_min_queue: int = 1_000
    node_queued: int | None = 200_000
    memory_fraction: float | None = 0.8
    memory_bytes: int | None = None
    fd_fraction: float | None = 0.8
    hub_blocked: float | None = 0.5
    gc_pause: float | None = 0.2
    clear: float = 0.8
    quiet: float = 10.0


class System(NamedTuple):
    """The system figures a ``Watch`` looks at (from ``otp.sar``, or read here)."""

    rss: int | None = None
    memory_total: int | None = None
    fds: int | None = None
    fd_limit: int | None = None
    hub_held: float = 0.0  # longest hold of the hub seen since the last look (s)
    hub_holder: str = ""
    gc_pause: float = 0.0  # longest collection since the last look (s)
    gc_detail: str = ""


def read_system() -> System:
    """RSS, RAM, descriptors and their cap from /proc (None where unreadable)."""
    rss = total = fds = None
    try:
        with open("/proc/self/statm") as f:
            rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        pass
    try:
        fds = len(os.listdir("/proc/self/fd"))
    except OSError:
        pass
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return System(rss, total, fds, None if soft == resource.RLIM_INFINITY else soft)


class Watch:
    """Raise and clear the node's alarms from the stats sampler's figures.

    ``check(sampler)`` is a ``Sampler`` listener; ``system`` gives the system figures
    (default: ``otp.sar``'s, else ``read_system``); ``raise_``/``clear`` default to
    ``set_alarm``/``clear_alarm``. ``raised`` is what this watch has raised.
    """

    def __init__(self, thresholds: Thresholds | None = None, *,
                 system: Callable[[], System] | None = None,
                 raise_: Callable[[Alarm], Any] | None = None,
                 clear: Callable[[Any], Any] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.t = thresholds or Thresholds()
        self.system = system or _default_system
        self._raise = raise_ or set_alarm
        self._clear = clear or clear_alarm
        self.clock = clock
        self.raised: dict[Any, Alarm] = {}
        self._event_at: dict[str, float] = {}

    def _set(self, alarm_id: Any, desc: Any) -> None:
        if alarm_id not in self.raised:
            alarm = Alarm(alarm_id, desc)
            self._raise(alarm)  # (if it fails, the next check tries again)
            self.raised[alarm_id] = alarm

    def _unset(self, alarm_id: Any) -> None:
        if alarm_id in self.raised:
            self._clear(alarm_id)
            del self.raised[alarm_id]

    def check(self, sampler: Any) -> None:
        """Look at the last sample (and the system figures); raise and clear."""
        t = self.t
        me = node()
        seen: set[Any] = set()
        if t.queue_len is not None or t.drain_time is not None:
            for p in sampler.backlogged:
                if p.dead:
                    continue
                row = sampler.row(p)
                aid = ("message_queue", row.pid)
                seen.add(aid)
                over = (t.queue_len is not None and row.queue >= t.queue_len) or (
                    t.drain_time is not None and row.queue >= t.drain_min_queue
                    and row.drain_time >= t.drain_time)
                if aid not in self.raised:
                    if over:
                        self._set(aid, QueueAlarm(
                            me, row.pid, row.name, row.queue, row.in_now,
                            row.out_now, row.drain_time, row.oldest_wait))
                else:
                    still = (t.queue_len is not None and row.queue >= t.queue_len * t.clear) or (
                        t.drain_time is not None and row.queue >= t.drain_min_queue * t.clear
                        and row.drain_time >= t.drain_time * t.clear)
                    if not still:
                        self._unset(aid)
        for aid in [a for a in self.raised if isinstance(a, tuple) and a[0] == "message_queue"
                    and a not in seen]:
            self._unset(aid)  # its queue is empty, or it ended
        self._level("node_queued", sampler.last.queued, t.node_queued)
        sysf = self.system()
        mem_limit: float | None = t.memory_bytes
        if mem_limit is None and t.memory_fraction is not None and sysf.memory_total:
            mem_limit = t.memory_fraction * sysf.memory_total
        self._level("memory", sysf.rss, mem_limit)
        fd_limit = None
        if t.fd_fraction is not None and sysf.fd_limit:
            fd_limit = t.fd_fraction * sysf.fd_limit
        self._level("descriptors", sysf.fds, fd_limit)
        self._event("hub_blocked", sysf.hub_held, t.hub_blocked, sysf.hub_holder)
        self._event("gc_pause", sysf.gc_pause, t.gc_pause, sysf.gc_detail)

    def _level(self, what: str, value: float | None, limit: float | None) -> None:
        if value is None or limit is None:
            return
        if what not in self.raised:
            if value >= limit:
                self._set(what, LevelAlarm(node(), what, value, limit))
        elif value < limit * self.t.clear:
            self._unset(what)

    def _event(self, what: str, seconds: float, limit: float | None, detail: str) -> None:
        if limit is None:
            return
        now = self.clock()
        if seconds >= limit:
            self._event_at[what] = now
            self._set(what, EventAlarm(node(), what, seconds, limit, detail))
        elif what in self.raised and now - self._event_at.get(what, now) >= self.t.quiet:
            self._unset(what)


def _default_system() -> System:
    try:
        from otp import sar
    except ImportError:  # pragma: no cover
        return read_system()
    return sar.system_figures()
