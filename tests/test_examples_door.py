"""examples.door: the keypad lock (gen_statem) and its event handlers (gen_event), on
the mock clock."""

from __future__ import annotations

import logging

import pytest

from examples import door
from examples.door import DoorConfig, DoorEvent, DoorSup
from otp import gen_event, gen_statem, supervisor
from otp.node import current_node
from otp.process import Down, monitor, sleep, whereis
from otp.testing import assert_receive, wait_all_blocked

CONFIG = DoorConfig(code="42", max_attempts=3, open_time=5.0, block_time=30.0,
                    typing_timeout=10.0)


def now() -> float:
    return current_node().clock.now()


def start():
    return supervisor.start_link(DoorSup, CONFIG)


def test_right_code_opens_and_the_door_locks_itself_after_open_time(node):
    sup = start()
    assert door.press("4") == "locked"
    assert door.press("2") == "open"
    sleep(4.9)
    assert door.status() == "open"
    sleep(0.2)
    assert door.status() == "locked"
    supervisor.stop(sup)


def test_locking_by_hand_cancels_the_auto_lock(node):
    sup = start()
    door.press("42")
    assert door.lock() == "locked"
    door.press("42")
    sleep(3.0)  # the second opening gets its own 5 s
    assert door.status() == "open"
    supervisor.stop(sup)


def test_wrong_codes_block_the_door_for_block_time_and_the_alarm_logs_it(node, caplog):
    sup = start()
    with caplog.at_level(logging.WARNING, logger="examples.door"):
        assert [door.press(c) for c in ("11", "12", "13")] == ["locked", "locked", "blocked"]
    assert "door blocked after 3 wrong codes" in caplog.text
    assert door.press("42") == "blocked"  # the right code is refused too
    t0 = now()
    sleep(30.0)
    assert door.status() == "locked" and now() - t0 == pytest.approx(30.0)
    assert door.press("42") == "open"
    supervisor.stop(sup)


def test_half_typed_code_is_forgotten_after_the_typing_timeout(node):
    sup = start()
    door.press("4")
    sleep(10.0)
    assert door.press("42") == "open"  # not "44": the lone "4" was forgotten
    supervisor.stop(sup)


def test_guard_override_is_postponed_until_the_block_ends(node):
    sup = start()
    for c in ("11", "12", "13"):
        door.press(c)
    t0 = now()
    assert door.open_now() == "open"
    assert now() - t0 == pytest.approx(CONFIG.block_time)
    supervisor.stop(sup)


def test_audit_log_records_every_state_change_in_order(node):
    sup = start()
    door.press("42")
    door.lock()
    door.press("99")
    wait_all_blocked()
    assert door.recent() == (
        DoorEvent("locked"),
        DoorEvent("open"),
        DoorEvent("locked"),
        DoorEvent("wrong_code", 1),
    )
    supervisor.stop(sup)


def test_a_crashing_handler_is_removed_and_the_door_keeps_working(node, caplog):
    class Broken(gen_event.EventHandler):
        def handle_event(self, event, state):
            raise RuntimeError("broken handler")

    sup = start()
    gen_event.add_handler(door.EVENTS, Broken)
    assert door.press("42") == "open"
    wait_all_blocked()
    assert Broken not in gen_event.which_handlers(door.EVENTS)
    assert door.recent()[-1] == DoorEvent("open")
    supervisor.stop(sup)


def test_door_restarts_locked_with_no_attempts_and_the_audit_log_survives(node, caplog):
    sup = start()
    door.press("11")
    old = whereis("door")
    ref = monitor(old)
    gen_statem.stop("door", "crash")  # an abnormal end: the supervisor restarts it
    assert assert_receive(Down).reason == "crash"
    del ref
    wait_all_blocked()
    assert whereis("door") not in (None, old)
    assert door.status() == "locked"
    assert door.press("12") == "locked"  # attempts start again from 0
    assert door.recent()[:2] == (DoorEvent("locked"), DoorEvent("wrong_code", 1))
    supervisor.stop(sup)


def test_main_runs_a_day_of_the_door(node):
    events = door.main()
    assert events[0] == DoorEvent("locked") and DoorEvent("blocked", 3) in events
    assert events[-1] == DoorEvent("locked")
