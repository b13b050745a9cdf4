"""Node-local and process-local variables: state scoped to a node, or to a process.

A library that keeps state "per node" (a table registry, an application controller's
bookkeeping) must not keep it in a module global keyed by the node: a fresh node must
start empty, and a stopped node must take its state with it. ``NodeVar`` (trio's
``RunVar``) stores its value on the running node::

    from otp.lowlevel import NodeVar

    REGISTRY: NodeVar[dict[str, int]] = NodeVar("registry", factory=dict)

    def remember(name, n):
        REGISTRY.get()[name] = n          # the first get() on a node makes the dict

``ProcessVar`` is Erlang's process dictionary (``put``/``get``/``erase``): a value the
calling process keeps for itself, which other local processes may read (like
``process_info(Pid, dictionary)``) and which is gone when the process ends::

    from otp.lowlevel import ProcessVar

    LABEL: ProcessVar[str] = ProcessVar("label", default="?")

    def worker():
        LABEL.set("worker")
        ...

    LABEL.get(pid)                        # "worker" while it runs, "?" once it ended

Both are keyed by the variable object itself (the ``name`` is only for messages and
``repr``): two variables with the same name are still two variables. Define them once,
at module level.

Failure semantics: ``get()`` of a variable that has no value and no default (nor
factory) raises ``LookupError``; outside a running node ``NodeError``; a ``ProcessVar``
used outside a process raises ``NotInProcess``. Nothing here is checked for
immutability: the values never cross a process boundary by message.

When not to use: for state that a process can hold in its own loop (a behaviour's
``state``), pass it along instead; a process dictionary makes functions impure. Never
share a mutable ``NodeVar`` value as a way for processes to talk: send messages.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from otp._core import node as _nodemod
from otp._core.node import Process, current_node, getcurrent
from otp._core.values import Pid
from otp.errors import BadArg, NotInProcess

__all__ = ["NodeVar", "ProcessVar"]

_T = TypeVar("_T")
_NO_DEFAULT: Any = object()


class NodeVar(Generic[_T]):
    """A variable whose value belongs to the running node; every node starts without one.

    ``default`` is returned by ``get()`` while the variable is unset (it is not stored);
    ``factory()`` is called by the first ``get()`` on a node and its result *is* stored,
    so a mutable container made by it is the node's own.

    >>> import otp
    >>> COUNTER: NodeVar[int] = NodeVar("counter", default=0)
    >>> def bump():
    ...     COUNTER.set(COUNTER.get() + 1)
    ...     return COUNTER.get()
    >>> otp.run(bump), otp.run(bump)      # a fresh node each time
    (1, 1)
    """

    __slots__ = ("_default", "_factory", "name")

    def __init__(
        self,
        name: str,
        *,
        default: _T = _NO_DEFAULT,
        factory: Callable[[], _T] | None = None,
    ) -> None:
        if default is not _NO_DEFAULT and factory is not None:
            raise BadArg(f"NodeVar({name!r}) takes a default or a factory, got both")
        if factory is not None and not callable(factory):
            raise BadArg(f"NodeVar({name!r}) expects a callable factory, got {factory!r}")
        self.name = name
        self._default = default
        self._factory = factory

    def get(self) -> _T:
        """The running node's value; the default (or a new factory value) when unset.

        ``LookupError`` when unset with neither; ``NodeError`` when no node runs."""
        node = _nodemod.CURRENT
        if node is None:
            node = current_node()
        store: dict[Any, Any] = node.localvars
        try:
            return store[self]  # (no cast(): it is a call)
        except KeyError:
            pass
        if self._factory is not None:
            value = store[self] = self._factory()
            return value
        if self._default is not _NO_DEFAULT:
            return self._default
        raise LookupError(f"{self!r} has no value on node {node.name}") from None

    def set(self, value: _T) -> None:
        """Give the variable ``value`` on the running node."""
        current_node().localvars[self] = value

    def delete(self) -> None:
        """Forget the running node's value (``get`` then sees the default or factory
        again). No error if there is none, like Erlang's ``erase``."""
        current_node().localvars.pop(self, None)

    def __repr__(self) -> str:
        return f"<NodeVar {self.name!r}>"


class ProcessVar(Generic[_T]):
    """A variable whose value belongs to the calling process: Erlang's process dictionary.

    ``set``/``delete`` act on the calling process. ``get(pid)`` reads the value of
    another live process of this node; a process that ended has no value any more (its
    dictionary went with it), so ``get`` gives the default, or raises ``LookupError``.

    >>> import otp
    >>> from otp.process import receive, self, send, spawn
    >>> ROLE: ProcessVar[str] = ProcessVar("role", default="none")
    >>> def main():
    ...     ROLE.set("main")
    ...     pid = spawn(lambda parent: send(parent, ROLE.get(parent)), self())
    ...     return ROLE.get(), receive(), ROLE.get(pid)  # (pid has ended by then)
    >>> otp.run(main)
    ('main', 'main', 'none')
    """

    __slots__ = ("_default", "name")

    def __init__(self, name: str, *, default: _T = _NO_DEFAULT) -> None:
        self.name = name
        self._default = default

    def get(self, pid: Pid | None = None) -> _T:
        """The calling process's value (or ``pid``'s, a live process of this node);
        the default when unset, else ``LookupError``."""
        if pid is None:
            p = getcurrent()
            if p.__class__ is not Process:
                raise NotInProcess(f"{self!r}.get() must be called inside a process")
        else:
            if pid.__class__ is not Pid:
                raise BadArg(f"{self!r}.get expects a Pid or None, got {pid!r}")
            node = current_node()
            if pid.node != node.name:
                raise BadArg(
                    f"{self!r}.get({pid!r}): expected a process of this node "
                    f"({node.name}), got one of {pid.node}"
                )
            p = node.lookup(pid)
        store = None if p is None else getattr(p, "pdict", None)
        if store is not None:
            if store.__class__ is tuple:
                if store[0] is self:
                    return store[1]
            elif self in store:
                return store[self]
        if self._default is not _NO_DEFAULT:
            return self._default
        whose = "the calling process" if pid is None else f"process {pid!r}"
        raise LookupError(f"{self!r} has no value in {whose}") from None

    def set(self, value: _T) -> None:
        """Give the variable ``value`` in the calling process."""
        p = getcurrent()
        if p.__class__ is not Process:
            raise NotInProcess(f"{self!r}.set() must be called inside a process")
        # Most processes keep at most one variable: a (var, value) pair then (56 bytes,
        # a dict costs 224); a dict from the second variable on.
        store = getattr(p, "pdict", None)
        if store is None or (store.__class__ is tuple and store[0] is self):
            p.pdict = (self, value)
        elif store.__class__ is tuple:
            p.pdict = {store[0]: store[1], self: value}
        else:
            store[self] = value

    def delete(self) -> None:
        """Forget the calling process's value (no error if there is none)."""
        p = getcurrent()
        if p.__class__ is not Process:
            raise NotInProcess(f"{self!r}.delete() must be called inside a process")
        store = getattr(p, "pdict", None)
        if store is not None:
            if store.__class__ is tuple:
                if store[0] is self:
                    p.pdict = None
            else:
                store.pop(self, None)

    def __repr__(self) -> str:
        return f"<ProcessVar {self.name!r}>"
