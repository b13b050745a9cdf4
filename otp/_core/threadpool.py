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

_T = TypeVar("_T")


def _catching(fn: Callable[..., Any], args: tuple[Any, ...]) -> tuple[bool, Any]:
    # The exception travels back as a value: the pool itself would print the traceback
    # of every exception, even one the caller handles.
    try:
        return True, fn(*args)
    except BaseException as e:  # re-raised in the caller
        return False, e


def run_in_thread(fn: Callable[..., _T], *args: Any) -> _T:
    """Run ``fn(*args)`` in the hub's thread pool and return its result (or raise its
    exception) in the caller, without blocking other processes."""
    ok, value = gevent.get_hub().threadpool.apply(_catching, (fn, args))
    if ok:
        result: _T = value
        return result
    raise value
