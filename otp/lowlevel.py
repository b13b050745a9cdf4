"""The one door into the kernel, for library code: behaviours, networking, tables, tools.

Applications use the public modules (``otp.process``, ``otp.gen_server``...). Code that
*implements* such modules needs more: the node object and its process records (to reach
a mailbox directly on a hot path), node- and process-local state, hooks run when a
process ends, the node's I/O and thread facilities. Everything of the kernel that a
module outside ``otp._core`` may use is here, and only here (``tests/test_exports.py``
keeps it so); nothing else outside the kernel imports ``otp._core``, gevent or greenlet.

Node- and process-local state (never a module global keyed by node or pid)::

    from otp.lowlevel import NodeVar, ProcessVar

    TABLES: NodeVar[dict[str, object]] = NodeVar("tables", factory=dict)
    ROLE: ProcessVar[str] = ProcessVar("role", default="worker")

A resource a process owns outside the kernel, released when the process ends::

    from otp.lowlevel import current_process, on_exit

    def own(resource):
        on_exit(current_process("own"), resource.close)

The kernel objects:

- ``Node``: one node (process table, names, timers, clock). ``current_node()`` is the
  running one (``NodeError`` when none runs). Its methods (``spawn``, ``deliver``,
  ``receive``, ``monitor``, ``lookup``, ``request_reply``...) are the kernel's own steps: they
  trust their arguments (a ``Process`` of this node), and the public functions of
  ``otp.process`` are the checked way to the same.
- ``Process``: the kernel's record of a process (a greenlet). ``getcurrent()`` is the
  running greenlet; ``getcurrent().__class__ is Process`` tells "inside a process".
- ``RUNNING.node``: the running node or None, for hot paths (an attribute read, no
  call). ``NO_DEFAULT``: ``Node.receive``'s "no default: raise ``ReceiveTimeout``".
  ``REQUEST_TIMEOUT``: what ``Node.request_reply`` gives back when the deadline passed.

I/O and threads (what the public ``otp.net`` and ``otp.threads`` present):
``active_socket``/``is_active_socket``/``set_socket_owner``/``close_socket`` (the
socket driver: a socket's data read by the hub and sent to its owner as messages),
``set_packet_handler`` (a protocol driver takes each packet in the hub instead) and
``socket_writer``/``SocketWriter`` (writes queued and sent from the hub, never blocking),
``run_in_thread`` (the hub's thread pool), ``start_os_thread``/``OSEvent``/``OSLock``/
``get_os_ident`` (real OS threads, whatever the monkey-patching), the clocks
``Clock`` (the protocol a node's clock follows) and ``RealClock``, and what the public
``otp.httpd`` presents: ``wsgi_handler`` (an HTTP/1.1 parser and WSGI handler for one
connected socket, run in the calling process), ``wsgi_finish_early`` and
``SOCKET_KEY``.

Failure semantics: these functions raise ``NodeError`` outside a running node and
``NotInProcess`` where a process is required, as the public API does. A hook given to
``on_exit`` runs inside the death procedure: it must not block or switch, and an
exception it raises is logged, never propagated.

When not to use: in applications (``chat/``, ``examples/``): a test keeps them on the
public modules.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# The kernel names of __all__, plus (not in __all__) the ones that other public
# namespaces present, since they import the kernel only through this module:
# MockClock (otp.testing), ProcessInfo and the values (otp, otp.process), patch (otp).
from otp._core.clock import Clock, RealClock
from otp._core.clock import MockClock as MockClock
from otp._core.dist import (
    NOCONNECTION,
    DistHook,
    Remote,
    check_name_node,
    remote,
    set_reason_to_wire,
)
from otp._core.dist import NodeDown as NodeDown
from otp._core.fastpath import receive, send
from otp._core.httpd import (
    SOCKET_KEY,
    DirectBody,
    FileBody,
    wsgi_direct_body,
    wsgi_finish_early,
    wsgi_handler,
)
from otp._core.localvars import NodeVar, ProcessVar
from otp._core.monkey import patch as patch
from otp._core.net_driver import (
    SocketWriter,
    active_socket,
    close_socket,
    is_active_socket,
    set_packet_handler,
    set_socket_owner,
    socket_writer,
)
from otp._core.node import _MISSING as NO_DEFAULT
from otp._core.node import (
    REQUEST_TIMEOUT,
    RUNNING,
    Node,
    Process,
    current_node,
    getcurrent,
    other_greenlet_stacks,
)
from otp._core.node import ProcessInfo as ProcessInfo
from otp._core.os_thread import OSEvent, OSLock, get_os_ident, start_os_thread
from otp._core.threadpool import run_in_thread
from otp._core.values import ANY as ANY
from otp._core.values import Down as Down
from otp._core.values import Exit as Exit
from otp._core.values import Pid as Pid
from otp._core.values import Ref as Ref
from otp._core.values import TimerTimeout as TimerTimeout
from otp._core.values import check_immutable, compile_pattern
from otp.errors import NotInProcess

__all__ = [
    "NOCONNECTION",
    "NO_DEFAULT",
    "REQUEST_TIMEOUT",
    "RUNNING",
    "SOCKET_KEY",
    "Clock",
    "DirectBody",
    "DistHook",
    "FileBody",
    "Node",
    "NodeVar",
    "OSEvent",
    "OSLock",
    "Process",
    "ProcessVar",
    "RealClock",
    "Remote",
    "SocketWriter",
    "active_socket",
    "cancel_on_exit",
    "check_immutable",
    "check_name_node",
    "close_socket",
    "compile_pattern",
    "current_node",
    "current_process",
    "get_os_ident",
    "getcurrent",
    "is_active_socket",
    "lookup_process",
    "on_exit",
    "other_greenlet_stacks",
    "receive",
    "remote",
    "run_in_thread",
    "send",
    "set_packet_handler",
    "set_reason_to_wire",
    "set_socket_owner",
    "socket_writer",
    "spawn_process",
    "start_os_thread",
    "wsgi_direct_body",
    "wsgi_finish_early",
    "wsgi_handler",
]


def current_process(what: str = "this call") -> Process:
    """The calling process's kernel record; ``NotInProcess`` (naming ``what``) outside
    a process. A process the runtime already declared dead gets its exit raised again.

    >>> import otp
    >>> from otp.process import self
    >>> otp.run(lambda: current_process().pid == self())
    True
    """
    p = getcurrent()
    if p.__class__ is not Process:
        raise NotInProcess(
            f"{what} must be called inside a process (spawn one, or use otp.run(main))"
        )
    if p.dead:
        p.node.zombie(p)
    return p


def lookup_process(pid: Any) -> Process | None:
    """The kernel record of ``pid`` (a ``Pid``) or of a registered name, if it is a live
    process of the running node; else None."""
    return current_node().resolve(pid)


def spawn_process(
    fn: Callable[..., Any], *args: Any, link: bool = False, log_crash: bool = True
) -> Process:
    """Spawn ``fn(*args)`` and return its kernel record. ``link=True`` links it to the
    caller atomically (as ``spawn_link``); ``log_crash=False`` leaves the crash
    report to the caller (``proc_lib`` reports its own)."""
    if link:
        me = current_process("spawn_process(link=True)")
        return me.node.spawn(fn, args, link=me, log_crash=log_crash)
    return current_node().spawn(fn, args, log_crash=log_crash)


def on_exit(p: Process, fn: Callable[[], Any]) -> None:
    """Run ``fn()`` when process ``p`` ends (in its death procedure, after its timers are
    cancelled and before its links and monitors fire); at once if it already ended.
    ``fn`` must not block or switch; an exception from it is logged."""
    p.node.on_exit(p, fn)


def cancel_on_exit(p: Process, fn: Callable[[], Any]) -> None:
    """Forget a hook given to ``on_exit(p, fn)`` (no error if there is none)."""
    p.node.cancel_on_exit(p, fn)
