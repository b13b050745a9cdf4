"""A door with a keypad: a ``gen_statem`` for the lock, a ``gen_event`` manager for its
alarms and audit trail, both under one supervisor.

The lock (``Door``) is a state machine with three states:

- ``"locked"``: digits typed are collected; the right code opens the door, a wrong
  one counts as a failed attempt. After ``max_attempts`` failures in a row the door
  goes to ``"blocked"``. Typing is forgotten after ``typing_timeout`` seconds without a
  key (an *event timeout*: any key restarts it).
- ``"open"``: locks itself again after ``open_time`` seconds (a *state timeout*,
  cancelled if the door is locked by hand first). ``lock`` locks it at once.
- ``"blocked"``: refuses every key for ``block_time`` seconds (a state timeout), then
  is ``"locked"`` again. A ``lock``/``status`` request that comes in meanwhile is
  answered; a ``press`` is answered ``"blocked"``. ``open_now`` from the guard's desk is
  *postponed* until the door is locked again, then opens it.

Each state has an *enter call* (``state_enter = True``), which publishes the state
change to the event manager ``door_events``. Handlers there: ``AuditLog`` keeps the
last events (``recent(events)``) and ``Alarm`` logs a WARNING when the door blocks.
A handler that crashes is removed and reported, and the door keeps working.

Run it::

    python -m otp run examples.door:main      # or: python -m examples.door

Failure semantics: the supervisor is ``rest_for_one`` with the event manager first: if
the manager dies, the door restarts too (it needs somewhere to publish); if the door
dies, it restarts ``"locked"`` with no attempts counted, and the audit log keeps its
history. ``press`` and ``lock`` are calls (5 s timeout), so a caller learns whether the
door opened.

When not to use: a real lock needs persistence of its failed attempts across restarts
(keep them in ``otp.tables``), and a keypad that does not trust the network it is
called over.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

from otp import gen_event, gen_statem, supervisor
from otp.gen_event import EventHandler, Reply
from otp.gen_statem import (
    Call,
    EventTimeout,
    GenStatem,
    KeepState,
    KeepStateAndData,
    NextState,
    Ok,
    Postpone,
    StateTimeout,
)
from otp.gen_statem import Reply as ReplyTo
from otp.process import Pid, sleep
from otp.supervisor import ChildSpec, Supervisor, SupFlags

__all__ = [
    "Alarm",
    "AuditLog",
    "Door",
    "DoorConfig",
    "DoorEvent",
    "DoorSup",
    "lock",
    "main",
    "open_now",
    "press",
    "recent",
    "status",
]

log = logging.getLogger("examples.door")

EVENTS = "door_events"  # the event manager's registered name
DOOR = "door"


@dataclass(frozen=True)
class DoorConfig:
    code: str = "1234"
    max_attempts: int = 3
    open_time: float = 5.0
    block_time: float = 30.0
    typing_timeout: float = 10.0


@dataclass(frozen=True)
class DoorEvent:
    """What the door publishes: ``what`` is ``"locked"``, ``"open"``, ``"blocked"`` or
    ``"wrong_code"``; ``attempts`` the failed attempts in a row."""

    what: str
    attempts: int = 0


@dataclass(frozen=True)
class _Data:
    config: DoorConfig
    typed: str = ""
    attempts: int = 0


# --- the lock ----------------------------------------------------------------------------


class Door(GenStatem):
    state_enter = True

    def init(self, config: DoorConfig) -> Ok:
        return Ok("locked", _Data(config))

    def locked(self, event_type: Any, content: Any, data: _Data) -> Any:
        match event_type, content:
            case "enter", _:
                gen_event.notify(EVENTS, DoorEvent("locked", data.attempts))
                return KeepState(replace(data, typed=""))
            case Call(from_), ("press", digit):
                typed = data.typed + digit
                code = data.config.code
                if typed == code:
                    return NextState("open", replace(data, attempts=0), ReplyTo(from_, "open"))
                if len(typed) < len(code):
                    return KeepState(
                        replace(data, typed=typed),
                        (ReplyTo(from_, "locked"), EventTimeout(data.config.typing_timeout)),
                    )
                attempts = data.attempts + 1
                gen_event.notify(EVENTS, DoorEvent("wrong_code", attempts))
                if attempts >= data.config.max_attempts:
                    return NextState(
                        "blocked", replace(data, attempts=attempts), ReplyTo(from_, "blocked")
                    )
                return KeepState(
                    replace(data, typed="", attempts=attempts), ReplyTo(from_, "locked")
                )
            case "timeout", _:  # no key for typing_timeout seconds
                return KeepState(replace(data, typed=""))
            case Call(from_), "open_now":
                return NextState("open", data, ReplyTo(from_, "open"))
        return _common(event_type, content, "locked")

    def open(self, event_type: Any, content: Any, data: _Data) -> Any:
        match event_type, content:
            case "enter", _:
                gen_event.notify(EVENTS, DoorEvent("open"))
                return KeepStateAndData(StateTimeout(data.config.open_time, "auto_lock"))
            case "state_timeout", "auto_lock":
                return NextState("locked", data)
            case Call(from_), "lock":
                return NextState("locked", data, ReplyTo(from_, "locked"))
            case Call(from_), ("press", _):
                return KeepStateAndData(ReplyTo(from_, "open"))
        return _common(event_type, content, "open")

    def blocked(self, event_type: Any, content: Any, data: _Data) -> Any:
        match event_type, content:
            case "enter", _:
                gen_event.notify(EVENTS, DoorEvent("blocked", data.attempts))
                return KeepStateAndData(StateTimeout(data.config.block_time, "unblock"))
            case "state_timeout", "unblock":
                return NextState("locked", replace(data, attempts=0))
            case Call(from_), ("press", _):
                return KeepStateAndData(ReplyTo(from_, "blocked"))
            case Call(_), "open_now":
                return KeepStateAndData(Postpone())  # opens once the door is locked again
        return _common(event_type, content, "blocked")


def _common(event_type: Any, content: Any, state: str) -> Any:
    match event_type, content:
        case Call(from_), "status":
            return KeepStateAndData(ReplyTo(from_, state))
        case Call(from_), "lock":
            return KeepStateAndData(ReplyTo(from_, state))
    return KeepStateAndData()  # anything else: ignored


# --- the door's client API ---------------------------------------------------------------


def press(digits: str, door: Any = DOOR) -> str:
    """Type ``digits`` one by one; returns the door's state after the last one."""
    answer = ""
    for d in digits:
        answer = gen_statem.call(door, ("press", d))
    return answer


def lock(door: Any = DOOR) -> str:
    return gen_statem.call(door, "lock")


def status(door: Any = DOOR) -> str:
    return gen_statem.call(door, "status")


def open_now(door: Any = DOOR, timeout: float | None = 60.0) -> str:
    """The guard's override: opens the door, waiting out a block if there is one."""
    return gen_statem.call(door, "open_now", timeout)


# --- the event handlers ------------------------------------------------------------------


class AuditLog(EventHandler):
    """Keeps the last ``size`` door events; ``recent()`` returns them, oldest first."""

    def init(self, size: int) -> gen_event.Ok:
        return gen_event.Ok((size, ()))

    def handle_event(self, event: Any, state: Any) -> gen_event.Ok:
        size, events = state
        return gen_event.Ok((size, (*events, event)[-size:]))

    def handle_call(self, request: Any, state: Any) -> Reply:
        return Reply(state[1], state)


class Alarm(EventHandler):
    """Logs a WARNING when the door blocks."""

    def handle_event(self, event: Any, state: Any) -> gen_event.Ok:
        if isinstance(event, DoorEvent) and event.what == "blocked":
            log.warning("door blocked after %d wrong codes", event.attempts)
        return gen_event.Ok(state)


def recent(events: Any = EVENTS) -> tuple[DoorEvent, ...]:
    """The audit log's kept events, oldest first."""
    return gen_event.call(events, AuditLog, "recent")


# --- supervision ----------------------------------------------------------------------------


def start_events(history: int = 50) -> Pid:
    """The event manager, with the audit log and the alarm installed."""
    pid = gen_event.start_link(name=EVENTS)
    gen_event.add_handler(pid, AuditLog, history)
    gen_event.add_handler(pid, Alarm)
    return pid


def start_door(config: DoorConfig) -> Pid | None:
    return gen_statem.start_link(Door, config, name=DOOR)


class DoorSup(Supervisor):
    def init(self, config: DoorConfig) -> Any:
        return SupFlags(strategy="rest_for_one"), [
            ChildSpec(id="events", start=(start_events, ())),
            ChildSpec(id="door", start=(start_door, (config,))),
        ]


def main() -> tuple[DoorEvent, ...]:
    """A short day in the door's life; prints and returns the audit log."""
    sup = supervisor.start_link(DoorSup, DoorConfig(code="42", open_time=5.0, block_time=5.0))
    print("press 42 ->", press("42"))
    sleep(6.0)  # the door locks itself after 5 s
    print("status ->", status())
    for wrong in ("11", "12", "13"):
        print(f"press {wrong} ->", press(wrong))
    print("guard opens (waits out the block) ->", open_now())
    print("lock ->", lock())
    events = recent()
    for e in events:
        print("  audit:", e)
    supervisor.stop(sup)
    return events


if __name__ == "__main__":
    import otp

    otp.patch()
    otp.run(main)
