"""Child specs, supervisor flags, restart back-off and the restart-intensity window.

Private: the public names are re-exported by ``otp.supervisor``. Everything here is
plain data and validation, no processes, so it is checked *up front*: a bad field
raises at once, with one error per field saying what was expected and what was given
(docs/semantics.md S10).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal, NamedTuple

from otp.errors import BadArg, ChildSpecError
from otp.process import Pid

__all__ = [
    "Backoff",
    "ChildCounts",
    "ChildInfo",
    "ChildSpec",
    "DynamicSupFlags",
    "RestartWindow",
    "SupFlags",
    "check_child_specs",
    "is_clean_exit",
    "to_child_spec",
]

Restart = Literal["permanent", "transient", "temporary"]
ChildType = Literal["worker", "supervisor"]
Strategy = Literal["one_for_one", "one_for_all", "rest_for_one", "simple_one_for_one"]
AutoShutdown = Literal["never", "any_significant", "all_significant"]

_RESTARTS = ("permanent", "transient", "temporary")
_TYPES = ("worker", "supervisor")
_STRATEGIES = ("one_for_one", "one_for_all", "rest_for_one", "simple_one_for_one")
_AUTO_SHUTDOWN = ("never", "any_significant", "all_significant")


class _Default:
    """Marker for "shutdown not given": 5.0 for workers, infinity for supervisors."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<default>"


_DEFAULT: Any = _Default()


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def is_clean_exit(reason: Any) -> bool:
    """``normal``, ``shutdown`` and ``("shutdown", term)``: exits that are not errors."""
    if reason.__class__ is str:
        return reason in ("normal", "shutdown")
    return isinstance(reason, tuple) and len(reason) == 2 and reason[0] == "shutdown"


@dataclass(frozen=True)
class Backoff:
    """Restart back-off for one child (beyond OTP; off unless a child spec asks).

    The n-th consecutive restart of the child waits ``min(max, initial * 2**n)``
    seconds on the node clock, shortened by up to ``jitter`` (a fraction) at random so
    that many children do not restart in lockstep. The count starts again once the
    child has stayed up for ``max`` seconds. Restarts still count against the
    supervisor's intensity when the child dies, exactly as without back-off.
    """

    initial: float
    max: float
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if not _is_number(self.initial) or self.initial <= 0:
            raise ChildSpecError(
                f"invalid backoff: expected initial seconds > 0, got: {self.initial!r}"
            )
        if not _is_number(self.max) or self.max < self.initial:
            raise ChildSpecError(
                f"invalid backoff: expected max seconds >= initial ({self.initial!r}), "
                f"got: {self.max!r}"
            )
        if not _is_number(self.jitter) or not 0 <= self.jitter <= 1:
            raise ChildSpecError(
                f"invalid backoff: expected jitter between 0 and 1, got: {self.jitter!r}"
            )

    def delay(self, attempt: int) -> float:
        """Seconds to wait before restart number ``attempt`` (0-based)."""
        base = min(float(self.max), self.initial * (2.0 ** min(attempt, 60)))
        if self.jitter:
            base *= 1.0 - self.jitter * random.random()
        return base


@dataclass(frozen=True)
class ChildSpec:
    """How a supervisor starts, restarts and stops one child.

    - ``id``: any hashable value naming the child within its supervisor (not a pid).
    - ``start``: ``(fn, args)``; ``fn(*args)`` runs in the supervisor and returns the
      child's pid, linked to the caller (``gen_server.start_link`` does), or None to
      ignore the start; it raises ``StartError`` (or any exception) on failure.
    - ``restart``: ``"permanent"`` (always restarted), ``"transient"`` (restarted
      after an abnormal exit only), ``"temporary"`` (never restarted).
    - ``shutdown``: ``"brutal_kill"``, seconds to wait after the ``shutdown`` exit
      signal before killing, or None (wait forever). Default 5.0 for workers, None
      for supervisors.
    - ``type``: ``"worker"`` or ``"supervisor"``.
    - ``significant``: the child's own exit may stop the supervisor (``auto_shutdown``);
      never with ``restart="permanent"``.
    - ``modules``: what the child runs, for upgrades; default ``(args[0],)`` when the
      first start argument is a class, else ``(fn,)``; or ``"dynamic"``.
    - ``backoff``: None (OTP behaviour, restart at once), ``Backoff(...)`` or
      ``(initial, max)``.
    """

    id: Any
    start: tuple[Callable[..., Any], tuple[Any, ...]]
    restart: Restart = "permanent"
    shutdown: float | Literal["brutal_kill"] | None = _DEFAULT
    type: ChildType = "worker"
    significant: bool = False
    modules: Any = None
    backoff: Backoff | None = field(default=None)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if isinstance(self.id, Pid):
            raise ChildSpecError(f"invalid id: expected a hashable value that is not a pid, "
                                 f"got: {self.id!r}")
        try:
            hash(self.id)
        except TypeError:
            raise ChildSpecError(
                f"invalid id: expected a hashable (immutable) value, got: {self.id!r}"
            ) from None
        start = self.start
        if (
            not isinstance(start, tuple)
            or len(start) != 2
            or not callable(start[0])
            or not isinstance(start[1], tuple)
        ):
            raise ChildSpecError(
                f"invalid start of child {self.id!r}: expected (callable, tuple_of_args), "
                f"got: {start!r}"
            )
        if self.restart not in _RESTARTS:
            raise ChildSpecError(
                f"invalid restart of child {self.id!r}: expected 'permanent', 'transient' or "
                f"'temporary', got: {self.restart!r}"
            )
        if self.type not in _TYPES:
            raise ChildSpecError(
                f"invalid type of child {self.id!r}: expected 'worker' or 'supervisor', "
                f"got: {self.type!r}"
            )
        shutdown = self.shutdown
        if shutdown is _DEFAULT:
            shutdown = None if self.type == "supervisor" else 5.0
        elif shutdown == "infinity":
            shutdown = None
        elif not (
            shutdown is None
            or shutdown == "brutal_kill"
            or (_is_number(shutdown) and shutdown >= 0)
        ):
            raise ChildSpecError(
                f"invalid shutdown of child {self.id!r}: expected 'brutal_kill', seconds >= 0 "
                f"or None (infinity), got: {shutdown!r}"
            )
        set_(self, "shutdown", shutdown)
        if not isinstance(self.significant, bool):
            raise ChildSpecError(
                f"invalid significant of child {self.id!r}: expected True or False, "
                f"got: {self.significant!r}"
            )
        if self.significant and self.restart == "permanent":
            raise ChildSpecError(
                f"invalid significant of child {self.id!r}: expected a transient or temporary "
                "child (a permanent child never exits by itself), got: significant=True with "
                "restart='permanent'"
            )
        mods = self.modules
        if mods is None:
            fn, args = start
            mods = (args[0],) if args and isinstance(args[0], type) else (fn,)
        elif isinstance(mods, list):
            mods = tuple(mods)
        if not (mods == "dynamic" or isinstance(mods, tuple)):
            raise ChildSpecError(
                f"invalid modules of child {self.id!r}: expected a tuple of modules/classes "
                f"or 'dynamic', got: {self.modules!r}"
            )
        set_(self, "modules", mods)
        bo = self.backoff
        if bo is not None and not isinstance(bo, Backoff):
            if isinstance(bo, tuple) and len(bo) in (2, 3):
                bo = Backoff(*bo)
            else:
                raise ChildSpecError(
                    f"invalid backoff of child {self.id!r}: expected None, Backoff(...) or "
                    f"(initial, max), got: {bo!r}"
                )
            set_(self, "backoff", bo)


_SPEC_KEYS = frozenset(f.name for f in fields(ChildSpec))


def to_child_spec(x: Any) -> ChildSpec:
    """Normalize what a user may give as a child spec into a validated ``ChildSpec``.

    Accepted: a ``ChildSpec``; a dict with the same keys (``id`` and ``start``
    required); a class with a ``child_spec`` classmethod (a ``GenServer`` or
    ``Supervisor`` subclass), given bare (``child_spec(None)``) or as ``(cls, arg)``.
    """
    if isinstance(x, ChildSpec):
        return x
    if isinstance(x, Mapping):
        unknown = set(x) - _SPEC_KEYS
        if unknown:
            raise ChildSpecError(
                f"invalid child spec: expected keys among {sorted(_SPEC_KEYS)}, "
                f"got unknown key(s): {sorted(map(str, unknown))}"
            )
        for key in ("id", "start"):
            if key not in x:
                raise ChildSpecError(f"invalid child spec: missing required key {key!r} in {x!r}")
        return ChildSpec(**x)
    if isinstance(x, type) and hasattr(x, "child_spec"):
        return _from_class(x, None)
    if (
        isinstance(x, tuple)
        and len(x) == 2
        and isinstance(x[0], type)
        and hasattr(x[0], "child_spec")
    ):
        return _from_class(x[0], x[1])
    raise ChildSpecError(
        "invalid child spec: expected a ChildSpec, a dict with its keys, a GenServer or "
        f"Supervisor class, or (class, arg), got: {x!r}"
    )


def _from_class(cls: type, arg: Any) -> ChildSpec:
    spec = cls.child_spec(arg)  # type: ignore[attr-defined]
    if isinstance(spec, ChildSpec):
        return spec
    if isinstance(spec, Mapping):
        return to_child_spec(spec)
    raise ChildSpecError(
        f"invalid child spec: expected {cls.__qualname__}.child_spec({arg!r}) to return a "
        f"ChildSpec, got: {spec!r}"
    )


def check_child_specs(specs: Iterable[Any], auto_shutdown: str = "never") -> list[ChildSpec]:
    """Normalize and validate a list of child specs for a supervisor with the given
    ``auto_shutdown``: ids unique, significant children only if auto_shutdown is on."""
    if isinstance(specs, (str, bytes, Mapping)) or not isinstance(specs, Iterable):
        raise ChildSpecError(f"invalid child specs: expected a list of child specs, got: {specs!r}")
    out: list[ChildSpec] = []
    seen: set[Any] = set()
    for raw in specs:
        spec = to_child_spec(raw)
        if spec.id in seen:
            raise ChildSpecError(
                f"invalid child specs: expected unique ids, got a duplicate id: {spec.id!r}"
            )
        seen.add(spec.id)
        check_significant(spec, auto_shutdown)
        out.append(spec)
    return out


def check_significant(spec: ChildSpec, auto_shutdown: str) -> None:
    if spec.significant and auto_shutdown == "never":
        raise ChildSpecError(
            f"invalid significant of child {spec.id!r}: expected significant=False under a "
            "supervisor with auto_shutdown='never', got: significant=True (set auto_shutdown "
            "to 'any_significant' or 'all_significant')"
        )


@dataclass(frozen=True)
class SupFlags:
    """A supervisor's flags.

    ``strategy``: ``"one_for_one"`` (restart the child that died),
    ``"one_for_all"`` (restart all), ``"rest_for_one"`` (restart it and those started
    after it) or ``"simple_one_for_one"`` (many dynamic children of one spec).
    ``intensity``/``period``: more than ``intensity`` restarts within ``period``
    seconds (node clock) stop the supervisor. ``auto_shutdown``: ``"never"``,
    ``"any_significant"`` or ``"all_significant"``.
    """

    strategy: Strategy = "one_for_one"
    intensity: int = 3
    period: float = 5.0
    auto_shutdown: AutoShutdown = "never"

    def __post_init__(self) -> None:
        if self.strategy not in _STRATEGIES:
            raise BadArg(
                f"invalid strategy: expected one of {', '.join(_STRATEGIES)}, "
                f"got: {self.strategy!r}"
            )
        _check_intensity(self.intensity, self.period)
        if self.auto_shutdown not in _AUTO_SHUTDOWN:
            raise BadArg(
                f"invalid auto_shutdown: expected one of {', '.join(_AUTO_SHUTDOWN)}, "
                f"got: {self.auto_shutdown!r}"
            )


@dataclass(frozen=True)
class DynamicSupFlags:
    """A ``DynamicSupervisor``'s flags (Elixir's): restart intensity as for
    ``SupFlags``; ``max_children`` (None = unbounded) caps the running children;
    ``extra_arguments`` are put *before* each child's own start arguments."""

    intensity: int = 3
    period: float = 5.0
    max_children: int | None = None
    extra_arguments: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        _check_intensity(self.intensity, self.period)
        mc = self.max_children
        if mc is not None and not (isinstance(mc, int) and not isinstance(mc, bool) and mc >= 0):
            raise BadArg(f"invalid max_children: expected an int >= 0 or None, got: {mc!r}")
        if isinstance(self.extra_arguments, list):
            object.__setattr__(self, "extra_arguments", tuple(self.extra_arguments))
        if not isinstance(self.extra_arguments, tuple):
            raise BadArg(
                f"invalid extra_arguments: expected a tuple, got: {self.extra_arguments!r}"
            )


def _check_intensity(intensity: Any, period: Any) -> None:
    if not (isinstance(intensity, int) and not isinstance(intensity, bool) and intensity >= 0):
        raise BadArg(f"invalid intensity: expected an int >= 0, got: {intensity!r}")
    if not (_is_number(period) and period > 0):
        raise BadArg(f"invalid period: expected seconds > 0, got: {period!r}")


class RestartWindow:
    """OTP's restart intensity as a sliding window of restart timestamps.

    ``add(now)`` records a restart and drops those older than ``period`` (a restart
    exactly ``period`` seconds old still counts, as in OTP); it returns False when the
    window now holds more than ``intensity`` restarts: the supervisor must give up.
    """

    __slots__ = ("intensity", "period", "stamps")

    def __init__(self, intensity: int, period: float) -> None:
        self.intensity = intensity
        self.period = period
        self.stamps: deque[float] = deque()

    def add(self, now: float) -> bool:
        stamps = self.stamps
        threshold = now - self.period
        while stamps and stamps[0] < threshold:
            stamps.popleft()
        stamps.append(now)
        return len(stamps) <= self.intensity

    def __len__(self) -> int:
        return len(self.stamps)


class ChildInfo(NamedTuple):
    """One row of ``which_children``: ``pid`` is the pid, ``"restarting"``, or None
    (not running); ``id`` is None for ``simple_one_for_one``/dynamic children."""

    id: Any
    pid: Pid | Literal["restarting"] | None
    type: ChildType
    modules: Any


class ChildCounts(NamedTuple):
    """``count_children``: specs, running children, and children by type."""

    specs: int
    active: int
    supervisors: int
    workers: int
