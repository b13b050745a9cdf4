"""Running a node: ``otp.run(main)`` or ``with Node() as node: node.run(main)``.

A node is one OS process running one gevent hub: it owns the process table, the name
registry, the timers and the clock. Only one node runs in an OS process at a time.

Monkey-patching: processes that do blocking I/O (sockets, ``time.sleep``, subprocess)
must go through gevent, so programs built on ``otp`` call ``gevent.monkey.patch_all()``
*before importing anything else*. The ``otp`` command line and the test plugin do it for
you; in your own entry point, put ``otp.patch()`` (or ``from gevent import monkey;
monkey.patch_all()``) on the first lines.

>>> import otp
>>> otp.run(lambda x: x * 2, 21)
42
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from otp._core.clock import Clock, MockClock, RealClock
from otp._core.node import Node, current_node
from otp._core.os_thread import start_os_thread

__all__ = [
    "Clock",
    "MockClock",
    "Node",
    "RealClock",
    "current_node",
    "patch",
    "run",
    "start_os_thread",
]


def run(
    main: Callable[..., Any],
    *args: Any,
    name: str = "nonode@nohost",
    clock: Clock | None = None,
    strict: bool = False,
    timeout: float | None = None,
) -> Any:
    """Start a fresh node, run ``main(*args)`` as its first process, stop the node.

    Returns what ``main`` returned and re-raises what it raised. Every other process is
    killed when ``main`` ends, so ``main`` should wait for what it started.
    """
    with Node(name, clock=clock, strict=strict) as node:
        return node.run(main, *args, timeout=timeout)


def patch() -> None:
    """Apply gevent's monkey-patching (idempotent). Call it before other imports."""
    from gevent import monkey

    if not monkey.is_module_patched("socket"):
        monkey.patch_all()
