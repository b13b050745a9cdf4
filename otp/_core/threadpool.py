"""Blocking work off the hub: run a function in gevent's thread pool.

A process that calls ``run_in_thread(fn, *args)`` is suspended (like a process waiting
for I/O) while ``fn`` runs in a real OS thread; every other process keeps running. Use it
for disk I/O (fsync), CPU-heavy work and blocking C libraries (sqlite3).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import gevent

__all__ = ["run_in_thread"]

T = TypeVar("T")


def run_in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(*args)`` in the hub's thread pool and return its result (or raise its
    exception) in the caller, without blocking other processes."""
    return gevent.get_hub().threadpool.apply(fn, args)
