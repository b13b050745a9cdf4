"""Private machinery shared by the behaviours: the call protocol and name resolution.

This is OTP's ``gen`` module. Nothing here is public API; ``otp.gen_server`` (which
re-exports the request functions) and ``otp.sys`` build on it.

The call protocol (``gen:do_call`` as of OTP 24: on a process *alias*):

1. Resolve the server (a Pid, a registered name, or ``Via(registry, name)``) to a pid;
   a name nobody holds fails at once with ``noproc``. A call to oneself fails with
   ``calling_self`` instead of deadlocking.
2. Make a reply alias (deactivated by its first message) and monitor the server under
   it; send ``(label, From, request)`` with ``From = (caller_pid, alias)``.
3. Wait for the first message through the alias, or the monitor's ``Down``, until the
   deadline. Nothing else ends the wait: no ordinary message, whatever its shape,
   answers a call (docs/semantics.md G10).
4. A reply: return it (the monitor is taken off). The ``Down``: raise ``CallError`` with
   the server's reason (``noproc`` if it was already gone). The deadline: deactivate
   the alias and raise ``CallTimeout``.

A second reply, or one after the deadline, goes to an inactive alias and the kernel
drops it: it never reaches the caller's mailbox. The kernel runs steps 2-4 as one
primitive (``Node.request_reply``) whose alias lives in the caller's reply slot: a
reply to a waiting caller is handed over directly, with no mailbox scan. It is the
hottest path of every behaviour. A call's alias is the kernel's int id, not a ``Ref``
(making a ``Ref`` would cost the call several per cent); ``From`` is opaque either way.

``reply(from_, value)`` sends ``value`` to ``from_``'s alias, from any process.

Requests (OTP's ``send_request`` family) are the same protocol cut in two:
``send_request`` makes a public reply alias (``otp.process.alias(reply=True)``) and a
monitor, sends, and returns a ``ReqId``; the answer arrives in the caller's mailbox as
``Response(alias, value)``, told apart by the very alias object (an equal ``Ref`` made
elsewhere does not pass), where ``receive_response``/``wait_response`` take it, or
where a loop that received it itself hands it to ``check_response``. ``ReqIds`` is an
immutable collection of requests, each with a label, answered in any order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from otp import _gen_dist
from otp.dist._etf_types import ImproperList
from otp.errors import BadArg, CallError, CallTimeout, NameTaken, NoProc, NotInProcess
from otp.lowlevel import (
    REQUEST_TIMEOUT,
    RUNNING,
    Process,
    check_name_node,
    current_node,
    getcurrent,
)
from otp.process import (
    Down,
    Pid,
    Ref,
    alias,
    demonitor,
    is_alive,
    make_ref,
    monitor,
    receive,
    register,
    send,
    unalias,
    unregister,
    whereis,
)
from otp.process import self as _self

# Plain strings here; they cross to other nodes as Erlang's atoms '$gen_call' and
# '$gen_cast' (see otp.dist._control.message_to_wire).
CALL = "$gen_call"
CAST = "$gen_cast"
SYSTEM = "$system"

_TIMEOUT: Any = object()


#: Who is waiting for a reply: ``(caller_pid, alias)``. ``handle_call`` receives it as
#: ``from_``; treat it as opaque (only ``from_[0]``, the caller's pid, is meant to be
#: read) and pass it to ``reply(from_, value)`` to answer later, from any process. (A
#: plain tuple rather than a record: one is built per call.)
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
        f"expected a server: a Pid, a registered name (str) or Via(registry, name), got {server!r}"
    )


def register_name(name: Any, pid: Pid) -> Pid | None:
    """Register a behaviour's ``name`` (None, a str, or a ``Via``) for ``pid``: None on
    success, else the pid holding it (what ``already_started`` reports)."""
    if name is None:
        return None
    if isinstance(name, Via):
        if name.registry.register_name(name.name, pid):
            return None
        return resolve(name) or pid
    try:
        register(name, pid)
    except NameTaken:
        return whereis(name) or pid
    return None


def unregister_name(name: Any) -> None:
    """Give up the calling process's ``name`` (after a failed start), if it holds it."""
    if name is None:
        return
    if isinstance(name, Via):
        name.registry.unregister_name(name.name)
        return
    if whereis(name) == _self():
        unregister(name)


def init_callback(cls: type, arg: Any, name: Any) -> tuple[Pid, type, Any, Any]:
    """The start shared by the behaviours' processes (``gen:init_it``): register
    ``name`` (a taken one ends the start with ``already_started``), take the newest
    loaded version of ``cls`` (a process started after its module was reloaded runs
    the new code, A7), make the callback object and run its ``init(arg)``. Returns
    ``(pid, cls, callback, init's return)``; an exception from ``init`` frees the name
    and propagates (proc_lib reports the failed start)."""
    from otp import code, proc_lib

    me = _self()
    cls = code.current(cls)
    holder = register_name(name, me)
    if holder is not None:
        proc_lib.init_fail(("already_started", holder), "normal")
    try:
        cb = cls()
        return me, cls, cb, cb.init(arg)
    except BaseException:
        if is_alive(me):
            unregister_name(name)
        raise


def init_not_ok(name: Any, r: Any, ignore: type[Any], stop: type[Any], bad_label: str) -> None:
    """End a start whose ``init`` did not return ok: ``ignore`` -> the starter gets
    None; ``stop`` -> it fails with the record's reason; anything else -> it fails with
    ``(bad_label, r)``. The name is freed first in each case."""
    from otp import proc_lib

    unregister_name(name)
    if r.__class__ is ignore:
        proc_lib.init_ack(None)
    elif r.__class__ is stop:
        proc_lib.init_fail(r.reason, r.reason)
    else:
        reason = (bad_label, r)
        proc_lib.init_fail(reason, reason)


def check_name(name: Any) -> None:
    if name is None or isinstance(name, Via):
        return
    if not isinstance(name, str) or not name:
        raise BadArg(
            f"name must be a non-empty str (local name) or Via(registry, name), got {name!r}"
        )


# --- replies ------------------------------------------------------------------------


class Response(NamedTuple):
    """The answer to a ``send_request``, as it arrives in the caller's mailbox; give it
    to ``check_response`` (its ``alias`` is the request's own, by identity)."""

    alias: Ref
    value: Any


def reply(from_: From, value: Any, check: bool = True) -> None:
    """Send ``value`` to the caller waiting on ``from_``: through its alias, so it is
    dropped if the caller gave up or was answered already. ``check=False`` skips strict
    mode's immutability check (for a value that is a private copy)."""
    node = RUNNING.send_node
    if node is None:  # no node, or some dead process's greenlet runs: is it this one?
        node = current_node()
        cur = getcurrent()
        if cur.__class__ is Process and cur.dead:
            return  # a dead process sends nothing (P17)
    a = from_[1]
    if a.__class__ is int:  # a call's alias (the kernel's slot id)
        node.send_alias(from_[0], a, value, check)
    elif a.__class__ is Ref and a.node == node.name:  # a send_request's alias
        node.send_alias(from_[0], a.id, Response(a, value), check)
    else:
        # A caller of another node ([alias | Ref], or an old-style Ref tag): slow path.

        if not _gen_dist.reply(from_, value):
            raise BadArg(f"reply expects the from_ handed to handle_call, got {from_!r}")


# --- the call -------------------------------------------------------------------------


class CallFn(Protocol):
    """The signature of ``gen_server.call`` (and of the system call behind ``otp.sys``)."""

    def __call__(
        self, server: Pid | str | Via, request: Any, timeout: float | None = 5.0
    ) -> Any: ...


def make_call(label: str) -> CallFn:
    """Build the ``call`` function for messages labelled ``label`` (``gen:do_call``;
    see the module docstring). Steps 2-4 run in the kernel (``Node.request_reply``)."""

    def call(server: Pid | str | Via, request: Any, timeout: float | None = 5.0) -> Any:
        pid: Any = server
        if server.__class__ is not Pid:
            if server.__class__ is tuple:  # (name, node)
                return _call_pair(label, server, request, timeout)
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
        ok, value = me.node.request_reply(me, pid, label, request, timeout)
        if ok:
            return value
        if value is REQUEST_TIMEOUT:
            raise CallTimeout(server, request, timeout)
        if pid.node != me.node.name:  # not a local process: a call to another node

            return _gen_dist.call(label, pid, request, timeout)
        raise CallError(value, server, request)

    return call


def _call_pair(label: str, server: Any, request: Any, timeout: float | None) -> Any:
    """A call to ``(name, node)``: local if ``node`` is this one, else across."""
    name, node = check_name_node(server, "call")
    if node == current_node().name:
        return make_call(label)(name, request, timeout)
    return _gen_dist.call(label, server, request, timeout)


def _check_timeout(timeout: Any) -> None:
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout < 0:
        raise BadArg(f"call timeout must be seconds >= 0 or None, got {timeout!r}")


call = make_call(CALL)
system_call = make_call(SYSTEM)


def _down_of(tag: Ref) -> Callable[[Any], bool]:
    return lambda m: m.__class__ is Down and m[0] is tag


def send_to(server: Any, msg: Any) -> None:
    """Send to a Pid, a name, ``(name, node)`` or a Via, silently dropping it if nobody
    holds the name."""
    if server.__class__ is Pid:
        send(server, msg)
        return
    if server.__class__ is tuple:
        try:
            send(server, msg)
        except NoProc:
            pass
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


# --- requests (send_request and its family) --------------------------------------------


@dataclass(frozen=True, eq=False)
class ReqId:
    """A request made with ``send_request``: pass it to ``receive_response``,
    ``wait_response`` or ``check_response``. Opaque; compares by identity."""

    alias: Ref
    monitor: Ref
    server: Any
    request: Any

    def __repr__(self) -> str:
        return f"ReqId({self.server!r}, {self.request!r})"


class NoResponse:
    """The type of ``NO_RESPONSE``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NO_RESPONSE"


#: What ``check_response`` returns for a message that answers none of its requests.
NO_RESPONSE = NoResponse()


class ReqIds:
    """An immutable collection of requests, each with a label (OTP 25's request id
    collection): ``add`` returns a new collection. ``len()``, ``in`` and iteration
    (over the ``ReqId`` objects) work; ``to_list()`` gives ``(ReqId, label)`` pairs."""

    __slots__ = ("_labels",)

    def __init__(self, pairs: Any = ()) -> None:
        labels: dict[ReqId, Any] = {}
        for req, label in pairs:
            if not isinstance(req, ReqId):
                raise BadArg(f"ReqIds expects (ReqId, label) pairs, got {req!r}")
            labels[req] = label
        self._labels = labels

    def add(self, req: ReqId, label: Any) -> ReqIds:
        if not isinstance(req, ReqId):
            raise BadArg(f"reqids_add expects a ReqId from send_request, got {req!r}")
        if req in self._labels:
            raise BadArg(f"reqids_add: {req!r} is already in the collection")
        new = ReqIds()
        new._labels = {**self._labels, req: label}
        return new

    def remove(self, req: ReqId) -> ReqIds:
        new = ReqIds()
        new._labels = {r: v for r, v in self._labels.items() if r is not req}
        return new

    def label(self, req: ReqId) -> Any:
        return self._labels[req]

    def to_list(self) -> list[tuple[ReqId, Any]]:
        return list(self._labels.items())

    def __len__(self) -> int:
        return len(self._labels)

    def __contains__(self, req: object) -> bool:
        return req in self._labels

    def __iter__(self) -> Iterator[ReqId]:
        return iter(self._labels)

    def __repr__(self) -> str:
        return f"ReqIds({self.to_list()!r})"


class Answer(NamedTuple):
    """The answer to one request of a ``ReqIds`` collection: ``ok`` and the reply in
    ``value``, or not ``ok`` and the server's exit reason in ``value``; the request's
    ``label``; ``reqids``, the collection without it (or unchanged: ``delete=False``)."""

    ok: bool
    value: Any
    label: Any
    reqids: ReqIds


def reqids_new() -> ReqIds:
    """An empty request collection."""
    return ReqIds()


def reqids_add(req: ReqId, label: Any, reqids: ReqIds) -> ReqIds:
    """``reqids`` with ``req`` added under ``label`` (a new collection)."""
    return reqids.add(req, label)


def reqids_size(reqids: ReqIds) -> int:
    return len(reqids)


def reqids_to_list(reqids: ReqIds) -> list[tuple[ReqId, Any]]:
    return reqids.to_list()


def send_request(server: Pid | str | Via, request: Any, label: str = CALL) -> ReqId:
    """Send ``request`` as a call would, without waiting; returns its ``ReqId``.

    Never fails for a missing server: its answer is then the ``noproc`` error.
    """
    me = _self()
    if server.__class__ is tuple or (
        server.__class__ is Pid and server.node != current_node().name
    ):  # a server of another node: its answer is ([alias | A], reply)

        mref, a = _gen_dist.start_request(label, server, request)
        return ReqId(a, mref, server, request)
    pid = server if server.__class__ is Pid else resolve(server)
    if pid is None:
        # The Down a monitor of a missing process gives (made here: a Via has no pid),
        # delivered by the kernel: the name may hold a registry (not a message value).
        mref = make_ref()
        p = getcurrent()
        p.node.deliver(p, Down(mref, server, "noproc"))
    else:
        mref = monitor(pid)
    a = alias(reply=True)
    if pid is not None:
        send(pid, (label, (me, a), request))
    return ReqId(a, mref, server, request)


def _settle(req: ReqId, msg: Any) -> Any:
    """``msg`` answers ``req``: its reply, or CallError with the server's exit reason."""
    if msg.__class__ is Response:
        if req.monitor.owner is not None:
            demonitor(req.monitor, flush=True)
        return msg.value
    if msg.__class__ is tuple:  # ([alias | A], reply) from a server of another node
        demonitor(req.monitor, flush=True)
        return msg[1]
    unalias(req.alias)
    raise CallError(msg.reason, req.server, req.request)


def _abandon(req: ReqId) -> None:
    unalias(req.alias)
    if req.monitor.owner is not None:
        demonitor(req.monitor, flush=True)


def _answers(req: ReqId) -> Callable[[Any], bool]:
    a, m = req.alias, req.monitor
    return lambda x: (
        (x.__class__ is Response and x.alias is a)
        or (x.__class__ is Down and x.ref is m)
        or (x.__class__ is tuple and _remote_answer(x, a))
    )


def _remote_answer(x: tuple[Any, ...], a: Ref) -> bool:
    # The answer of a server of another node: ([alias | A], reply), A equal to ours.
    if len(x) != 2:
        return False
    t = x[0]
    return t.__class__ is ImproperList and t.tail == a and t.items == ("alias",)


def _find(reqids: ReqIds, msg: Any) -> ReqId | None:
    c = msg.__class__
    if c is Response:
        for req in reqids:
            if req.alias is msg.alias:
                return req
    elif c is Down:
        for req in reqids:
            if req.monitor is msg.ref:
                return req
    elif c is tuple:
        for req in reqids:
            if _remote_answer(msg, req.alias):
                return req
    return None


def _wait(req: ReqId | ReqIds, timeout: float | None, abandon: bool, delete: bool) -> Any:
    if timeout is not None:
        _check_timeout(timeout)
    if isinstance(req, ReqId):
        msg = receive(_answers(req), timeout, default=_TIMEOUT)
        if msg is _TIMEOUT:
            if abandon:
                _abandon(req)
            raise CallTimeout(req.server, req.request, timeout)
        return _settle(req, msg)
    if not isinstance(req, ReqIds):
        raise BadArg(f"expected a ReqId or a ReqIds collection, got {req!r}")
    if not req:
        return None
    msg = receive(lambda x: _find(req, x) is not None, timeout, default=_TIMEOUT)
    if msg is _TIMEOUT:
        if abandon:
            for r in req:
                _abandon(r)
        raise CallTimeout(tuple(r.server for r in req), tuple(r.request for r in req), timeout)
    return _answer(req, _find(req, msg), msg, delete)  # type: ignore[arg-type]


def _answer(reqids: ReqIds, req: ReqId, msg: Any, delete: bool) -> Answer:
    rest = reqids.remove(req) if delete else reqids
    try:
        return Answer(True, _settle(req, msg), reqids.label(req), rest)
    except CallError as e:
        return Answer(False, e.reason, reqids.label(req), rest)


def receive_response(
    req: ReqId | ReqIds, timeout: float | None = 5.0, *, delete: bool = True
) -> Any:
    """Wait for the answer to ``req`` (see ``send_request``) and return it; raise
    ``CallError`` with the server's exit reason if it died first (``noproc`` if it did
    not exist), or ``CallTimeout`` after ``timeout`` seconds, having *abandoned* the
    request: a later answer is dropped.

    With a ``ReqIds`` collection: wait for whichever request is answered first and
    return an ``Answer`` (an error is an ``Answer`` too, ``ok=False``), or None if the
    collection is empty; on timeout every request in it is abandoned. ``delete``: leave
    the answered request out of ``Answer.reqids``.
    """
    return _wait(req, timeout, True, delete)


def wait_response(req: ReqId | ReqIds, timeout: float | None = 5.0, *, delete: bool = True) -> Any:
    """Like ``receive_response``, except that a timeout does not abandon: the
    ``CallTimeout`` leaves the request(s) pending, so waiting again can still get the
    answer."""
    return _wait(req, timeout, False, delete)


def check_response(msg: Any, req: ReqId | ReqIds, *, delete: bool = True) -> Any:
    """Whether ``msg``, a message the caller received itself (a server's
    ``handle_info``), answers ``req``: ``NO_RESPONSE`` if not; else as
    ``receive_response`` (the reply, or ``CallError``; with a collection, an ``Answer``,
    or None if it is empty)."""
    if isinstance(req, ReqId):
        if _answers(req)(msg):
            return _settle(req, msg)
        return NO_RESPONSE
    if not isinstance(req, ReqIds):
        raise BadArg(f"expected a ReqId or a ReqIds collection, got {req!r}")
    if not req:
        return None
    found = _find(req, msg)
    if found is None:
        return NO_RESPONSE
    return _answer(req, found, msg, delete)
