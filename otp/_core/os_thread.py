"""Real OS threads and thread-safe hand-off, even under gevent's monkey-patching.

After ``monkey.patch_all()``, ``threading.Thread`` makes greenlets, and even the original
``threading.Thread``/``threading.Event`` classes build on the (patched) module globals
``_start_new_thread``/``Lock``. Work that must not depend on the hub (a log writer that
may block on a stalled pipe, a watchdog) needs a real thread; this module starts one from
the interpreter's original ``_thread`` primitives, without the caller importing gevent.

>>> from otp._core.os_thread import OSEvent, start_os_thread
>>> done = OSEvent()
>>> _ = start_os_thread(done.set)
>>> done.wait(5)
True

Do not touch process state (send, receive) from an OS thread: only the hub's thread may.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gevent import monkey

__all__ = ["OSEvent", "OSLock", "start_os_thread"]

_start_new_thread: Callable[..., int] = monkey.get_original("_thread", "start_new_thread")
_allocate_lock: Callable[[], Any] = monkey.get_original("_thread", "allocate_lock")
get_os_ident: Callable[[], int] = monkey.get_original("_thread", "get_ident")


def start_os_thread(fn: Callable[..., Any], *args: Any, name: str = "otp-os-thread") -> int:
    """Start ``fn(*args)`` in a real, daemonic OS thread; returns its thread ident.

    ``name`` is for the reader of the code (raw threads carry no name). An exception
    escaping ``fn`` is printed by the interpreter's thread excepthook, as usual.
    """
    return _start_new_thread(fn, args)


def OSLock() -> Any:
    """A real OS lock (not a gevent one)."""
    return _allocate_lock()


class OSEvent:
    """A real OS event (not a gevent one): ``set``, ``clear``, ``is_set``, ``wait``.

    Built on one raw lock that is held while the event is clear, so ``wait`` blocks the
    OS thread (never the hub's other greenlets' view of it: do not wait on it in the hub).
    """

    __slots__ = ("_flag", "_gate", "_mutex")

    def __init__(self) -> None:
        self._mutex = _allocate_lock()
        self._gate = _allocate_lock()
        self._gate.acquire()
        self._flag = False

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        with self._mutex:
            if not self._flag:
                self._flag = True
                self._gate.release()

    def clear(self) -> None:
        with self._mutex:
            if self._flag:
                self._flag = False
                self._gate.acquire()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until set (or ``timeout`` seconds); returns whether it is set."""
        if self._flag:
            return True
        if self._gate.acquire(True, -1 if timeout is None else max(0.0, timeout)):
            self._gate.release()
        return self._flag
