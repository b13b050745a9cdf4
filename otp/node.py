"""Running a node: ``otp.run(main)``; node-local variables (``NodeVar``).

A node is one OS process running one gevent hub: it owns the process table, the name
registry, the timers and the clock. Only one node runs in an OS process at a time.

Monkey-patching: processes that do blocking I/O (sockets, ``time.sleep``, subprocess)
must go through gevent, so programs built on ``otp`` apply gevent's monkey-patching
*before importing anything else*. The ``otp`` command line and the test plugin do it for
you; in your own entry point, put ``import otp; otp.patch()`` on the first lines.

>>> import otp
>>> otp.run(lambda x: x * 2, 21)
42

Failure semantics: ``otp.run`` returns what ``main`` returned and re-raises what it
raised; every process still alive when ``main`` ends is killed. ``halt(reason)`` from
any process kills every process and makes ``otp.run`` raise ``NodeHalted(reason)`` (or
return None for ``"normal"``). Starting a second node while one runs raises
``NodeError``.

Node-local state: a ``NodeVar`` holds one value per node (every node starts without
one), for state an application keeps "per node" without a module global keyed by node::

    from otp.node import NodeVar

    CONTEXT: NodeVar[dict[str, str]] = NodeVar("myapp.context", factory=dict)

Fairness: processes are cooperative greenlets. ``otp.run(..., max_blocking_time=0.1)``
logs a warning naming any process that holds the hub longer than that, with its stack;
it costs nothing on the message path.

When not to use: one node per OS process, so do not start nodes inside a node's process
(use ``spawn``), and do not run CPU-bound work in a process (use ``otp.threads``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from otp.lowlevel import Clock, Node, NodeVar, current_node, patch

__all__ = ["NodeVar", "halt", "patch", "run"]


def run(
    main: Callable[..., Any],
    *args: Any,
    name: str = "nonode@nohost",
    clock: Clock | None = None,
    strict: bool = False,
    timeout: float | None = None,
    max_blocking_time: float | None = None,
) -> Any:
    """Start a fresh node, run ``main(*args)`` as its first process, stop the node.

    Returns what ``main`` returned and re-raises what it raised. Every other process is
    killed when ``main`` ends, so ``main`` should wait for what it started. If a process
    calls ``halt(reason)``, returns None for ``"normal"`` and raises ``NodeHalted``
    otherwise. ``max_blocking_time`` (seconds) turns on the fairness report: a process
    that holds the hub longer is logged with its pid and stack.
    """
    with Node(name, clock=clock, strict=strict, max_blocking_time=max_blocking_time) as node:
        return node.run(main, *args, timeout=timeout)


def halt(reason: Any = "normal") -> None:
    """Halt the running node: every process is killed, and the code waiting in
    ``otp.run``/``Node.run`` gets ``NodeHalted(reason)`` (or None for ``"normal"``).

    Called from a process, it does not return (the caller is killed too).

    >>> import otp
    >>> from otp.errors import NodeHalted
    >>> try:
    ...     otp.run(halt, "disk full")
    ... except NodeHalted as e:
    ...     print(e.reason)
    disk full
    """
    current_node().halt(reason)


