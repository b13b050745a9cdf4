"""Real OS threads and thread-safe hand-off, even under gevent's monkey-patching.

After ``monkey.patch_all()``, ``threading.Thread`` makes greenlets. Work that must not
depend on the hub (a log writer that may block on a stalled pipe, a watchdog) needs a
real thread; this module gives one without the caller importing gevent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gevent import monkey

__all__ = ["OSLock", "OSEvent", "start_os_thread"]


def start_os_thread(fn: Callable[..., Any], *args: Any, name: str = "otp-os-thread") -> Any:
    """Start ``fn(*args)`` in a real, daemonic OS thread; returns the thread object."""
    thread_cls = monkey.get_original("threading", "Thread")
    t = thread_cls(target=fn, args=args, name=name, daemon=True)
    t.start()
    return t


def OSLock() -> Any:  # noqa: N802 - a factory named like the class it returns
    """A real OS lock (not a gevent one)."""
    return monkey.get_original("threading", "Lock")()


def OSEvent() -> Any:  # noqa: N802
    """A real OS event (not a gevent one)."""
    return monkey.get_original("threading", "Event")()
