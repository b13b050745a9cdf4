"""otp.alarm_handler: set/clear/get, subscribers, and the node's thresholds with
hysteresis (driven by otp.stats on the mock clock)."""

from __future__ import annotations

import math

from otp import alarm_handler, gen_event, stats
from otp.alarm_handler import Alarm, ClearAlarm, QueueAlarm, SetAlarm, System, Thresholds, Watch
from otp.gen_event import EventHandler, Ok, Reply
from otp.process import exit as exit_proc
from otp.process import processes, receive, send, sleep, spawn
from otp.process import self as self_pid
from otp.testing import wait_all_blocked


def reap():
    stats.stop()
    alarm_handler.stop()
    for pid in processes():
        if pid != self_pid():
            exit_proc(pid, "kill")
    wait_all_blocked()


class Recorder(EventHandler):
    def init(self, args):
        return Ok(())

    def handle_event(self, event, state):
        return Ok((*state, event))

    def handle_call(self, request, state):
        return Reply(state, state)


def test_set_get_and_clear_reach_subscribers(node):
    alarm_handler.start_link()
    gen_event.add_handler(alarm_handler.NAME, Recorder, None)
    alarm_handler.set_alarm(("disk", "/var"))
    alarm_handler.set_alarm(Alarm("cpu", 0.97))
    assert sorted(a.id for a in alarm_handler.get_alarms()) == ["cpu", "disk"]
    alarm_handler.clear_alarm("disk")
    assert alarm_handler.get_alarms() == [Alarm("cpu", 0.97)]
    events = gen_event.call(alarm_handler.NAME, Recorder, "events")
    assert events == (SetAlarm(Alarm("disk", "/var")), SetAlarm(Alarm("cpu", 0.97)),
                      ClearAlarm("disk"))
    reap()


def test_get_alarms_without_a_manager_is_empty(node):
    assert alarm_handler.get_alarms() == []


def test_set_and_clear_are_logged_as_reports(node, caplog):
    alarm_handler.start_link()
    with caplog.at_level("INFO", logger="otp.report"):
        alarm_handler.set_alarm(("x", 1))
        alarm_handler.clear_alarm("x")
    labels = [r.report["label"] for r in caplog.records if hasattr(r, "report")]
    assert labels == ["alarm_handler:set", "alarm_handler:clear"]
    reap()


def parked():
    receive("never")


def worker(gate):
    """Handles 5 messages a second once it has the go."""
    receive("go")
    while True:
        receive()
        sleep(0.2)


def quiet_system():
    return System()


def test_queue_alarm_raised_once_and_cleared_with_hysteresis(node, clock):
    raised, cleared = [], []
    w = Watch(Thresholds(queue_len=50, drain_time=None, node_queued=None), system=quiet_system,
              raise_=raised.append, clear=cleared.append)
    s = stats.Sampler()
    s.listeners.append(w.check)
    pid = spawn(worker, None)
    wait_all_blocked()
    s.sweep()
    for i in range(60):  # over the threshold: raised once
        send(pid, i)
    clock.advance(1.0)
    s.sweep()
    clock.advance(1.0)
    s.sweep()
    assert [a.id for a in raised] == [("message_queue", pid)]
    alarm = raised[0].description
    assert isinstance(alarm, QueueAlarm) and alarm.queue == 60 and alarm.pid == pid
    assert alarm.out_rate == 0 and alarm.drain_time == math.inf  # stalled: never drains
    send(pid, "go")
    # it drains at 5/s: 60 -> below 50 is not enough (hysteresis: below 0.8 * 50 = 40)
    sleep(2.5)  # handled ~13 (the first at once)
    s.sweep()
    row = s.row(lookup(pid))
    assert 40 <= row.queue < 50 and cleared == []
    sleep(2.0)
    s.sweep()
    assert s.row(lookup(pid)).queue < 40
    assert cleared == [("message_queue", pid)] and len(raised) == 1
    reap()


def lookup(pid):
    from otp.lowlevel import lookup_process

    return lookup_process(pid)


def test_drain_time_alarm_names_the_projection(node, clock):
    raised = []
    w = Watch(Thresholds(queue_len=None, drain_time=5.0, drain_min_queue=10, node_queued=None),
              system=quiet_system, raise_=raised.append, clear=lambda _id: None)
    s = stats.Sampler()
    s.listeners.append(w.check)
    pid = spawn(worker, None)
    send(pid, "go")
    wait_all_blocked()
    s.sweep()
    for i in range(100):
        send(pid, i)
    sleep(1.0)
    s.sweep()
    assert [a.id for a in raised] == [("message_queue", pid)]
    d = raised[0].description
    row = s.row(lookup(pid))
    assert d.queue == row.queue and d.drain_time == row.drain_time
    assert d.in_rate > d.out_rate and d.drain_time == math.inf  # the burst outruns it
    for _ in range(3):
        sleep(1.0)
        s.sweep()
    row = s.row(lookup(pid))
    # the burst is over: the projection is finite, queue / (dequeue - enqueue rate)
    assert row.out_now > row.in_now
    assert row.drain_time == row.queue / (row.out_now - row.in_now) > 5.0
    reap()


def test_node_queued_memory_and_descriptor_levels(node, clock):
    raised, cleared = [], []
    figures = {"rss": 900, "fds": 10}

    def system():
        return System(rss=figures["rss"], memory_total=1000, fds=figures["fds"], fd_limit=100)

    w = Watch(Thresholds(queue_len=None, drain_time=None, node_queued=30,
                         memory_fraction=0.8, fd_fraction=0.5),
              system=system, raise_=raised.append, clear=cleared.append)
    s = stats.Sampler()
    s.listeners.append(w.check)
    pids = [spawn(parked) for _ in range(4)]
    wait_all_blocked()
    s.sweep()
    for pid in pids:
        for i in range(10):
            send(pid, i)
    clock.advance(1.0)
    s.sweep()
    assert sorted(str(a.id) for a in raised) == ["memory", "node_queued"]
    figures["fds"] = 60
    figures["rss"] = 700  # below 800 but above 0.8 * 800: stays raised
    clock.advance(1.0)
    s.sweep()
    assert "descriptors" in [a.id for a in raised] and cleared == []
    figures["rss"] = 600
    clock.advance(1.0)
    s.sweep()
    assert cleared == ["memory"]
    reap()


def test_hub_blocked_and_gc_pause_clear_after_a_quiet_period(node):
    raised, cleared = [], []
    now = [0.0]
    fig = {"held": 0.9}

    def system():
        return System(hub_held=fig["held"], hub_holder="process <0.9.0>", gc_pause=0.3,
                      gc_detail="generation 2")

    w = Watch(Thresholds(queue_len=None, drain_time=None, node_queued=None, hub_blocked=0.5,
                         gc_pause=0.2, quiet=10.0),
              system=system, raise_=raised.append, clear=cleared.append, clock=lambda: now[0])
    s = stats.Sampler()
    s.listeners.append(w.check)
    s.sweep()
    assert sorted(a.id for a in raised) == ["gc_pause", "hub_blocked"]
    assert raised[-1].description.detail in ("process <0.9.0>", "generation 2")
    fig["held"] = 0.0
    now[0] = 5.0
    s.sweep()
    assert "hub_blocked" not in cleared
    now[0] = 11.0
    s.sweep()
    assert cleared == ["hub_blocked"]


def test_a_restarted_alarm_handler_gets_the_alarms_raised_again(node):
    from otp import application
    from otp.process import whereis

    application.set_env("otp_ops", "alarms", {"queue_len": 5, "drain_time": None})
    application.set_env("otp_ops", "sar", {"enabled": False})
    application.ensure_all_started("otp_ops")
    pid = spawn(parked)
    for i in range(10):
        send(pid, i)
    stats.sample_now()
    assert [a.id for a in alarm_handler.get_alarms()] == [("message_queue", pid)]
    old = whereis(alarm_handler.NAME)
    exit_proc(old, "kill")
    while whereis(stats.NAME) is None or whereis(alarm_handler.NAME) in (None, old):
        sleep(0.1)
    stats.sample_now()
    assert [a.id for a in alarm_handler.get_alarms()] == [("message_queue", pid)]
    application.stop("otp_ops")
    reap()


def test_the_alarms_config_takes_the_thresholds_fields_and_refuses_others():
    import pydantic
    import pytest

    from otp.alarm_handler import Thresholds
    from otp.ops import OpsConfig

    got = OpsConfig.model_validate({"alarms": {"queue_len": 200, "drain_time": None}}).alarms
    assert got == Thresholds(queue_len=200, drain_time=None)
    assert OpsConfig().alarms == Thresholds()
    with pytest.raises(pydantic.ValidationError, match="bogus"):
        OpsConfig.model_validate({"alarms": {"bogus": 1}})
