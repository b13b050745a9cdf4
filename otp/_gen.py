"""Private machinery shared by the behaviours: the call protocol and name resolution.

This is OTP's ``gen`` module. Nothing here is public API; ``otp.gen_server`` and
``otp.sys`` build on it.

The call protocol (``gen:do_call``), run by the kernel in one step
(``Node.gen_call``; it is the hottest path of every behaviour):

1. Resolve the server (a Pid, a registered name, or ``Via(registry, name)``) to a pid;
   a name nobody holds fails at once with ``noproc``. A call to oneself fails with
   ``calling_self`` instead of deadlocking.
2. Monitor the server. The monitor's key is the call's *tag* (an int unique on the
   node); the ``Down`` it produces carries the server's exit reason.
3. Send ``(label, (caller, tag), request)`` and wait for either the reply
   ``(tag, value)`` or ``Down(tag, ...)``, until the deadline.
4. Reply: demonitor (dropping a ``Down`` that may have raced in) and return the value.
   ``Down``: raise ``CallError`` with the server's reason (``noproc`` if it was already
   gone). Deadline: record the tag as *abandoned* and raise ``CallTimeout``.

Late replies. Erlang drops a late reply by sending it to a process *alias* that the
caller deactivates when it gives up. Here the node keeps the abandoned tags, and a
reply (``Node.gen_reply``) to one is dropped at the sender. Both happen on the node's
single hub, so there is no window in which a late reply can land in the caller's
mailbox. (Across nodes this needs the alias; see the dist layer.)

Invariant relied on: a ``Down`` for a monitor is delivered only while the monitor is
active, and ``demonitor`` returns True exactly when no ``Down`` has been queued; so
a ``Down`` has to be flushed only when ``demonitor`` returns False.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from otp.errors import BadArg, CallError, CallTimeout, NotInProcess
from otp.lowlevel import CALL_TIMEOUT, Process, current_node, getcurrent
from otp.process import Down, Pid, Ref, demonitor, receive, send, whereis

CALL = "$gen_call"
CAST = "$gen_cast"
SYSTEM = "$system"

_TIMEOUT: Any = object()


#: Who is waiting for a reply: ``(caller_pid, tag)``, where the tag is unique to the
#: call. ``handle_call`` receives it as ``from_``; treat it as opaque and pass it to
#: ``reply(from_, value)`` to answer later, from any process. (A plain tuple rather
#: than a record: one is built per call.)
From = tuple[Pid, Any]


@dataclass(frozen=True)
class Via:
    """A name held in a registry of your own: ``Via(registry, name)``.

    ``registry`` is any object with ``register_name(name, pid) -> bool``,
    ``unregister_name(name)``, ``whereis_name(name) -> Pid | None`` and
    ``send(name, msg)``. The registry is responsible for forgetting a name when its
    process ends (monitor it); a server unregisters its name itself only when its
    start fails.
    """

    registry: Any
    name: Any

    def __post_init__(self) -> None:
        for method in ("register_name", "unregister_name", "whereis_name", "send"):
            if not callable(getattr(self.registry, method, None)):
                raise BadArg(
                    f"Via expects a registry with register_name, unregister_name, "
                    f"whereis_name and send; {self.registry!r} has no {method}()"
                )


Server = Pid | str | Via


def resolve(server: Any) -> Pid | None:
    """A Pid, a registered name or a ``Via`` to a pid (None if nobody holds the name)."""
    if server.__class__ is Pid:
        return server
    if isinstance(server, str):
        return whereis(server)
    if isinstance(server, Via):
        pid = server.registry.whereis_name(server.name)
        if pid is not None and pid.__class__ is not Pid:
            raise BadArg(
                f"{server!r}: registry.whereis_name must return a Pid or None, got {pid!r}"
            )
        return pid
    raise BadArg(
        f"expected a server: a Pid, a registered name (str) or Via(registry, name), "
        f"got {server!r}"
    )


def check_name(name: Any) -> None:
    if name is None or isinstance(name, Via):
        return
    if not isinstance(name, str) or not name:
        raise BadArg(
            f"name must be a non-empty str (local name) or Via(registry, name), got {name!r}"
        )


# --- replies ------------------------------------------------------------------------


def reply(from_: From, value: Any) -> None:
    """Send ``value`` to the caller waiting on ``from_`` (dropped if it gave up)."""
    current_node().gen_reply(from_[0], from_[1], value)


# --- the call -------------------------------------------------------------------------


class CallFn(Protocol):
    """The signature of ``gen_server.call`` (and of the system call behind ``otp.sys``)."""

    def __call__(
        self, server: Pid | str | Via, request: Any, timeout: float | None = 5.0
    ) -> Any: ...


def make_call(label: str) -> CallFn:
    """Build the ``call`` function for messages labelled ``label`` (``gen:do_call``;
    see the module docstring). The protocol itself runs in the kernel
    (``Node.gen_call``): this is the hottest path of every behaviour."""

    def call(server: Pid | str | Via, request: Any, timeout: float | None = 5.0) -> Any:
        pid: Any = server
        if server.__class__ is not Pid:
            pid = resolve(server)
            if pid is None:
                raise CallError("noproc", server, request)
        me = getcurrent()
        if me.__class__ is not Process:
            raise NotInProcess("call must be made from inside a process")
        if pid.id == me.pid.id and pid == me.pid:
            raise CallError("calling_self", server, request)
        if timeout.__class__ is not float and timeout is not None:
            _check_timeout(timeout)
        ok, value = me.node.gen_call(me, pid, label, request, timeout)
        if ok:
            return value
        if value is CALL_TIMEOUT:
            raise CallTimeout(server, request, timeout)
        raise CallError(value, server, request)

    return call


def _check_timeout(timeout: Any) -> None:
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout < 0:
        raise BadArg(f"call timeout must be seconds >= 0 or None, got {timeout!r}")


call = make_call(CALL)
system_call = make_call(SYSTEM)


def _down_of(tag: Ref) -> Callable[[Any], bool]:
    return lambda m: m.__class__ is Down and m[0] is tag


def send_to(server: Any, msg: Any) -> None:
    """Send to a Pid, a name or a Via, silently dropping it if nobody holds the name."""
    if server.__class__ is Pid:
        send(server, msg)
        return
    pid = resolve(server)
    if pid is not None:
        send(pid, msg)


def wait_down(tag: Ref, timeout: float | None) -> Any:
    """Wait for the ``Down`` of monitor ``tag``; returns its reason or ``_TIMEOUT``."""
    msg = receive(_down_of(tag), timeout, default=_TIMEOUT)
    if msg is _TIMEOUT:
        demonitor(tag, flush=True)
        return _TIMEOUT
    return msg.reason


TIMEOUT = _TIMEOUT
