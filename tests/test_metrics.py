"""otp.metrics: the Prometheus endpoint scraped over HTTP (loopback), and the otp_ops
application that runs it with the sampler, the alarms and the reporter."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from otp import alarm_handler, application, metrics, ops, stats
from otp.process import exit as exit_proc
from otp.process import receive, send, sleep, spawn
from otp.threads import run_in_thread


def parked():
    receive("never")


def fetch(url):
    def get():
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return r.status, r.headers["Content-Type"], r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, "", ""

    return run_in_thread(get)


def sample_value(text, name, **labels):
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        wanted = all(f'{k}="{v}"' in head for k, v in labels.items())
        if (head == name and not labels) or (labels and wanted):
            return float(value)
    return None


@pytest.mark.otp(clock="real")
def test_the_endpoint_serves_node_stats_alarm_and_application_counters(node):
    application.set_env("otp_ops", "metrics", {"enabled": True, "host": "127.0.0.1", "port": 0})
    application.set_env("otp_ops", "alarms", {"queue_len": 20, "drain_time": None})
    application.ensure_all_started("otp_ops")
    try:
        host, port = metrics.address()
        assert host == "127.0.0.1"
        logins = metrics.counter("test_logins_total", "logins")
        logins.inc(3)
        latency = metrics.histogram("test_commit_seconds", "commit latency")
        latency.observe(0.004)
        pid = spawn(parked)
        for i in range(25):
            send(pid, i)
        stats.sample_now()
        assert [a.id for a in alarm_handler.get_alarms()] == [("message_queue", pid)]
        status, ctype, text = fetch(f"http://{host}:{port}/metrics")
        assert status == 200 and ctype.startswith("text/plain")
        assert sample_value(text, "test_logins_total") == 3.0
        assert sample_value(text, "test_commit_seconds_count") == 1.0
        assert sample_value(text, "otp_processes") >= 5
        assert sample_value(text, "otp_messages_queued") >= 25
        assert sample_value(text, "otp_process_queue", pid=repr(pid)) == 25.0
        assert sample_value(text, "otp_process_drain_seconds", pid=repr(pid)) == float("inf")
        assert sample_value(text, "otp_alarms") == 1.0
        assert 'otp_message_rate{direction="in",window="10s"}' in text
        assert fetch(f"http://{host}:{port}/nothing")[0] == 404
        exit_proc(pid, "kill")
        stats.sample_now()
        assert alarm_handler.get_alarms() == []
    finally:
        application.stop("otp_ops")


@pytest.mark.otp(clock="real")
def test_the_ops_application_runs_sampler_alarms_and_reporter_not_metrics(node):
    application.ensure_all_started("otp_ops")
    try:
        from otp.process import whereis

        assert whereis(stats.NAME) and whereis(alarm_handler.NAME) and whereis("otp_sar")
        assert whereis(metrics.NAME) is None  # opt-in
        sleep(1.2)
        snap = ops.snapshot()
        assert snap["processes"] >= 4 and snap["alarms"] == []
        assert snap["uptime"] is not None and 0.0 <= snap["hub_util"] <= 1.0
    finally:
        application.stop("otp_ops")


def test_config_refuses_unknown_keys(node):
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        ops.OpsConfig.model_validate({"stats": {"intervall": 1}})
