"""Property test: random scripts of postponed, inserted and state-changing events
against a reference model of gen_statem's event queue (OTP's rules as plain Python).

Each event carries its reaction for each state (postpone it or not, the next state,
events to insert), so a postponed event retried in another state may react
differently. The model:

- inserted events (``NextEvent``) are handled before any other queued event or
  message, in the order given;
- a postponed event waits until the state *changes* (``NextState`` to the same state
  is not a change), then is retried, postponed events in the order they came, after
  the inserted events of that transition and before every other queued event;
- messages are handled in the order sent.

Each Hypothesis example runs on a fresh node (mock clock, strict messages) and checks
the exact sequence of (state, event) the machine handled and its final state.
"""

from __future__ import annotations

import os
from collections import deque
from typing import Any, NamedTuple

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from otp import gen_statem
from otp import sys as otp_sys
from otp.gen_statem import CallbackMode, GenStatem, NextEvent, NextState, Ok, Postpone
from otp.lowlevel import Node
from otp.process import receive, send
from otp.process import self as self_pid
from otp.testing import MockClock

STATES = ("a", "b", "c")


class Step(NamedTuple):
    """How an event reacts in one state."""

    postpone: bool
    next: str | None  # None: keep the state
    inserts: tuple[Any, ...]  # Instr records to insert


class Instr(NamedTuple):
    id: int
    by_state: tuple[Step, Step, Step]  # the reaction in a, b, c


class Handled(NamedTuple):
    state: str
    id: int


class Scripted(GenStatem):
    callback_mode = CallbackMode.HANDLE_EVENT_FUNCTION

    def init(self, tester):
        return Ok("a", tester)

    def handle_event(self, event_type, content, state, data):
        send(data, Handled(state, content.id))
        step = content.by_state[STATES.index(state)]
        actions: list[Any] = [NextEvent("internal", i) for i in step.inserts]
        if step.postpone:
            actions.insert(0, Postpone())
        return NextState(step.next or state, data, actions)


def model(externals: list[Instr], limit: int = 300) -> tuple[list[Handled], str] | None:
    state = "a"
    events: deque[Instr] = deque()
    mailbox = deque(externals)
    postponed: list[Instr] = []
    handled: list[Handled] = []
    while events or mailbox:
        if len(handled) > limit:
            return None  # an event that postpones itself from state to state forever
        ev = events.popleft() if events else mailbox.popleft()
        handled.append(Handled(state, ev.id))
        step = ev.by_state[STATES.index(state)]
        if step.postpone:
            postponed.append(ev)
        new = step.next or state
        front = list(step.inserts)
        if new != state:
            front += postponed
            postponed = []
        events = deque(front + list(events))
        state = new
    return handled, state


# --- strategies ----------------------------------------------------------------------------

_state = st.sampled_from(STATES)
_next = st.one_of(st.none(), _state)


def _steps(inserts: Any) -> Any:
    step = st.builds(Step, postpone=st.booleans(), next=_next, inserts=inserts)
    return st.tuples(step, step, step)


_leaf = _steps(st.just(()))
_instr = _steps(st.lists(_leaf, max_size=2).map(tuple))


def _number(raw: list[Any]) -> list[Instr]:
    counter = iter(range(10_000))

    def instr(by_state: Any) -> Instr:
        me = next(counter)
        return Instr(
            me,
            tuple(  # type: ignore[arg-type]
                Step(s.postpone, s.next, tuple(instr(i) for i in s.inserts)) for s in by_state
            ),
        )

    return [instr(r) for r in raw]


EXAMPLES = int(os.environ.get("STATEM_EXAMPLES", "150"))


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(_instr, min_size=1, max_size=8))
def test_postponed_and_inserted_events_follow_the_reference_model(raw):
    externals = _number(raw)
    expected = model(externals)
    assume(expected is not None)
    assert expected is not None

    def go() -> tuple[list[Handled], Any]:
        pid = gen_statem.start_link(Scripted, self_pid())
        for ev in externals:
            gen_statem.cast(pid, ev)
        state, _data = otp_sys.get_state(pid)  # served once every event before it is
        got = []
        while (m := receive(Handled, 0, default=None)) is not None:
            got.append(m)
        gen_statem.stop(pid)
        return got, state

    node = Node("statem@localhost", clock=MockClock(), strict=True)
    node.start()
    try:
        got, state = node.run(go, timeout=30)
    finally:
        node.stop()
    assert (got, state) == expected
