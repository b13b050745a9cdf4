"""The fairness report: name the process that holds the hub too long.

Greenlets are cooperative: a process that computes for a second without blocking stalls
every other process of the node for that second. With ``Node(max_blocking_time=0.1)`` a
watcher reports such a process as a warning on the ``otp.process`` logger, with its pid
and the stack it was running when it was caught.

How (and why not gevent's monitor thread): gevent's monitor installs a greenlet switch
tracer, a Python-level call on *every* switch, which would tax the hot path (``send`` →
``receive`` is one switch). Here the hot path pays nothing. A real OS thread pings the hub
every ``max_blocking_time`` seconds with ``run_callback_threadsafe``; if the ping is not
answered within ``max_blocking_time``, the hub has had no turn for about that long, and
the thread captures the stack the hub's thread is executing right now (the culprit's).
The warning itself is logged by the hub when it next gets a turn (the thread never calls
into logging handlers or process state), with how long the hub was held.

Accuracy: a hold longer than twice ``max_blocking_time`` is always reported; one shorter
than ``max_blocking_time`` never is. Under a flood of short, well-behaved processes the
hub can also be late by a few milliseconds: keep the threshold well above that.
"""

from __future__ import annotations

import logging
import sys
import time
import traceback
from types import FrameType
from typing import Any

from otp._core.os_thread import OSEvent, get_os_ident, start_os_thread

_log = logging.getLogger("otp.process")

__all__ = ["BlockingMonitor"]


class BlockingMonitor:
    """Watch one hub from an OS thread; report holds longer than ``max_blocking_time``."""

    def __init__(self, loop: Any, max_blocking_time: float, run_code: Any) -> None:
        if not isinstance(max_blocking_time, int | float) or max_blocking_time <= 0:
            raise ValueError(f"max_blocking_time must be seconds > 0, got {max_blocking_time!r}")
        self.max_blocking_time = float(max_blocking_time)
        self._loop = loop
        self._run_code = run_code  # Process.run's code object: marks a process's frames
        self._hub_ident = get_os_ident()
        self._stop = OSEvent()
        self._answered = OSEvent()
        self._report: tuple[float, str, list[str]] | None = None
        # The holds reported so far, and the last one's (seconds, who): otp.sar's
        # hub_blocked alarm reads them.
        self.holds = 0
        self.last: tuple[float, str] = (0.0, "")
        self._thread = start_os_thread(self._watch, name="otp-blocking-monitor")

    def stop(self) -> None:
        """Stop the thread (it exits at its next wake-up, within ``max_blocking_time``)."""
        self._stop.set()
        self._answered.set()

    # --- in the OS thread ----------------------------------------------------------------

    def _watch(self) -> None:
        limit = self.max_blocking_time
        while not self._stop.is_set():
            self._answered.clear()
            sent = time.perf_counter()
            try:
                self._loop.run_callback_threadsafe(self._pong)
            except Exception:  # the loop was destroyed: nothing left to watch
                return
            if self._answered.wait(limit) or self._stop.is_set():
                if self._stop.wait(limit):
                    return
                continue
            # No answer within the limit: the hub is held. Catch the culprit in the act.
            self._report = (sent, *self._culprit())
            while not self._answered.wait(limit):  # one report per hold
                if self._stop.is_set():
                    return

    def _culprit(self) -> tuple[str, list[str]]:
        frame: FrameType | None = sys._current_frames().get(self._hub_ident)
        if frame is None:
            return "the hub's thread", []
        stack = traceback.format_stack(frame)
        who = "a greenlet that is not a process"
        f: FrameType | None = frame
        while f is not None:
            if f.f_code is self._run_code:
                try:
                    who = f"process {f.f_locals['self'].pid!r}"
                except Exception:
                    who = "a process"
                break
            f = f.f_back
        return who, stack

    # --- in the hub ----------------------------------------------------------------------

    def _pong(self) -> None:
        self._answered.set()
        report = self._report
        if report is not None:
            self._report = None
            sent, who, stack = report
            held = time.perf_counter() - sent
            self.holds += 1
            self.last = (held, who)
            _log.warning(
                "%s held the hub for about %.3f s without yielding (max_blocking_time=%s); "
                "every other process waited. Move CPU-heavy or blocking work to a thread "
                "(otp.threads.run_in_thread). Its stack when caught:\n%s",
                who,
                held,
                self.max_blocking_time,
                "".join(stack).rstrip(),
            )
