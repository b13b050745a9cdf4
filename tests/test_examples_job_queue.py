"""examples.job_queue: workers under a DynamicSupervisor, retries with back-off, deferred
result replies, configured as an application -- all on the mock clock."""

from __future__ import annotations

import logging

import pytest

from examples import job_queue
from examples.job_queue import APP, JobResult, Stats, attempt, result, stats, submit
from otp import application, supervisor
from otp.errors import ConfigError
from otp.process import Down, exit, monitor, now, self, send, sleep, spawn, whereis
from otp.testing import assert_receive, wait_all_blocked


@pytest.fixture(autouse=True)
def _quiet(caplog):
    # crashed jobs are expected here: keep their reports out of the output
    caplog.set_level(logging.CRITICAL, logger="otp")


def start(environ=None):
    application.configure(environ=environ or {})
    application.start(APP)


def nap_and_return(seconds, value):
    sleep(seconds)
    return (value, now())


def fail_until(good_attempt, value):
    if attempt() < good_attempt:
        raise RuntimeError(f"attempt {attempt()} fails")
    return (value, attempt(), now())


def always_fails():
    raise ValueError("never works")


def test_jobs_run_and_results_come_back_in_submission_order(node):
    start()
    try:
        ids = [submit(job_queue.square, n) for n in range(5)]
        assert ids == [1, 2, 3, 4, 5]
        assert [result(i).value for i in ids] == [0, 1, 4, 9, 16]
        assert result(1) == JobResult(1, "done", 0, 1)
        assert stats() == Stats(pending=0, running=0, done=5, failed=0)
    finally:
        application.stop("job_queue")


def test_a_crashed_job_is_retried_with_exponential_backoff(node):
    start({"OTP_JOB_QUEUE__BACKOFF": "1.0"})
    try:
        t0 = now()
        job = submit(fail_until, 3, "ok")
        res = result(job)
        assert res.status == "done" and res.attempts == 3
        value, n, at = res.value
        assert (value, n) == ("ok", 3)
        assert at - t0 == pytest.approx(1.0 + 2.0)  # back-off 1 s, then 2 s
    finally:
        application.stop("job_queue")


def test_a_job_that_keeps_crashing_fails_after_max_attempts_with_its_reason(node):
    start({"OTP_JOB_QUEUE__MAX_ATTEMPTS": "2", "OTP_JOB_QUEUE__BACKOFF": "0.5"})
    try:
        t0 = now()
        res = result(submit(always_fails))
        assert res.status == "failed" and res.attempts == 2
        assert isinstance(res.value, ValueError) and str(res.value) == "never works"
        assert now() - t0 == pytest.approx(0.5)
        assert stats() == Stats(pending=0, running=0, done=0, failed=1)
    finally:
        application.stop("job_queue")


def test_a_killed_worker_counts_as_a_crash_and_is_retried(node):
    start()
    try:
        job = submit(nap_and_return, 10.0, "slow")
        wait_all_blocked()
        (child,) = supervisor.which_children("job_workers")
        exit(child.pid, "kill")
        res = result(job, timeout=None)
        assert res.status == "done" and res.attempts == 2
    finally:
        application.stop("job_queue")


def test_at_most_max_workers_jobs_run_at_once(node):
    start({"OTP_JOB_QUEUE__MAX_WORKERS": "2"})
    try:
        t0 = now()
        ids = [submit(nap_and_return, 1.0, n) for n in range(5)]
        wait_all_blocked()
        assert stats() == Stats(pending=3, running=2, done=0, failed=0)
        finished = [result(i).value[1] - t0 for i in ids]
        assert finished == [pytest.approx(t) for t in (1.0, 1.0, 2.0, 2.0, 3.0)]
    finally:
        application.stop("job_queue")


def test_waiting_for_a_result_does_not_block_the_queue(node):
    start()
    try:
        slow = submit(nap_and_return, 5.0, "slow")
        me = self()
        spawn(lambda: send(me, ("slow", result(slow, timeout=None))))
        wait_all_blocked()
        assert result(submit(job_queue.square, 3)).value == 9  # served meanwhile
        _tag, res = assert_receive(("slow", JobResult), timeout=10)
        assert res.value[0] == "slow"
    finally:
        application.stop("job_queue")


def test_unknown_job_id_is_a_key_error(node):
    start()
    try:
        with pytest.raises(KeyError, match="no job 99"):
            result(99)
    finally:
        application.stop("job_queue")


def test_bad_configuration_fails_the_start_naming_the_key(node):
    with pytest.raises(ConfigError, match="OTP_JOB_QUEUE__MAX_WORKERS: app 'job_queue', key "
                       "'max_workers': expected int"):
        start({"OTP_JOB_QUEUE__MAX_WORKERS": "0"})
    assert application.which_applications() == []


def test_stopping_the_application_stops_the_running_jobs(node):
    start()
    submit(nap_and_return, 100.0, "never")
    wait_all_blocked()
    (child,) = supervisor.which_children("job_workers")
    ref = monitor(child.pid)
    application.stop("job_queue")
    assert_receive(Down(ref, child.pid, "killed"))  # brutal_kill
    assert whereis("job_queue") is None


def test_main_reports_done_retried_and_failed_jobs(node):
    results = job_queue.main()
    assert [(r.status, r.attempts) for r in results] == [("done", 1)] * 4 + [
        ("done", 2),
        ("failed", 3),
    ]
    assert application.which_applications() == []
