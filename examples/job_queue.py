"""A job queue: jobs run in worker processes under a DynamicSupervisor, crashed jobs are
retried with exponential back-off, callers wait for results without blocking the queue.

It is a complete OTP application::

    JobQueueApp (otp.application, env checked by the Env schema)
    └── JobSup            one_for_all
        ├── job_workers   DynamicSupervisor, max_children = max_workers
        │   └── worker*   one process per running job (temporary: the queue retries)
        └── job_queue     JobQueue gen_server: pending jobs, running jobs, results

- ``submit(fn, *args)`` queues ``fn(*args)`` and returns its id at once; at most
  ``max_workers`` jobs run at a time, in submission order.
- A job whose worker crashes (an exception, a kill) is retried after ``backoff``
  seconds, then ``2 * backoff``, ``4 * backoff``... on the node clock, up to
  ``max_attempts`` runs in all; then its result is ``failed`` with the last reason.
  ``attempt()`` tells a running job which run it is.
- ``result(job_id, timeout)`` returns the ``JobResult`` at once if the job is finished;
  otherwise the queue keeps the caller's ``from_`` and replies when it is (a deferred
  reply: the queue keeps serving meanwhile).

Configuration (``config/*.yaml`` under ``job_queue:``, or ``OTP_JOB_QUEUE__MAX_WORKERS=8``
and friends): ``max_workers`` (4), ``max_attempts`` (3), ``backoff`` (0.5 s).

Run it::

    python -m otp run examples.job_queue:main         # or: python -m examples.job_queue

Failure semantics: a job is a function plus immutable arguments, and its result must be
an immutable value (it travels in a message). Jobs live in memory: if the queue itself
crashes, ``one_for_all`` restarts it together with the workers, and the jobs it held
are lost (their waiting callers get the crash as a ``CallError``). A job that never
returns holds its worker slot until the application stops.

When not to use: for jobs that must survive a restart of the node (persist them, e.g.
with ``otp.tables`` ``disc_copies``), or for CPU-heavy jobs (workers are greenlets:
have the job call ``otp.threads.run_in_thread``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field

from otp import application, gen_server, proc_lib, supervisor
from otp.application import Application, AppSpec
from otp.gen_server import From, GenServer, NoReply, Ok, Reply
from otp.process import (
    Down,
    Pid,
    ProcessVar,
    Ref,
    demonitor,
    monitor,
    receive,
    send,
    send_after,
)
from otp.process import self as _self
from otp.supervisor import ChildSpec, Supervisor, SupFlags

__all__ = [
    "APP",
    "Env",
    "Job",
    "JobQueue",
    "JobQueueApp",
    "JobResult",
    "JobSup",
    "Stats",
    "attempt",
    "main",
    "result",
    "stats",
    "submit",
]

QUEUE = "job_queue"
WORKERS = "job_workers"


class Env(BaseModel):
    """The application's settings (``job_queue:`` in the config files)."""

    max_workers: int = Field(4, ge=1)
    max_attempts: int = Field(3, ge=1)
    backoff: float = Field(0.5, gt=0)


@dataclass(frozen=True)
class Job:
    id: int
    fn: Callable[..., Any]
    args: tuple[Any, ...]


@dataclass(frozen=True)
class JobResult:
    """``status`` is ``"done"`` (``value`` is what the job returned) or ``"failed"``
    (``value`` is the reason of its last run); ``attempts`` counts its runs."""

    id: int
    status: Literal["done", "failed"]
    value: Any
    attempts: int


@dataclass(frozen=True)
class Stats:
    pending: int
    running: int
    done: int
    failed: int


# ------------------------------------------------------------------------- workers

_ATTEMPT: ProcessVar[int] = ProcessVar("job_queue.attempt", default=1)  # each worker's


def attempt() -> int:
    """Which run of its job the calling worker is (1 for the first)."""
    return _ATTEMPT.get()


def _worker(queue: Pid, job: Job, n: int) -> None:
    receive(("$go",))  # the queue monitors us before we run: no crash goes unseen
    _ATTEMPT.set(n)
    value = job.fn(*job.args)
    send(queue, ("$job_done", _self(), value))


def _start_worker(queue: Pid, job: Job, n: int) -> Pid:
    return proc_lib.spawn_link(_worker, queue, job, n)  # linked to the supervisor


# ------------------------------------------------------------------------- the queue


@dataclass
class _State:
    env: Env
    next_id: int = 1
    pending: deque[tuple[Job, int]] = field(default_factory=deque)
    running: dict[Pid, tuple[Job, int, Ref]] = field(default_factory=dict)
    results: dict[int, JobResult] = field(default_factory=dict)
    waiters: dict[int, list[From]] = field(default_factory=dict)
    retrying: int = 0  # jobs waiting for their back-off timer


class JobQueue(GenServer):
    """Keeps the pending and running jobs and the results; starts workers."""

    def init(self, env: Env) -> Ok:
        return Ok(_State(env))

    def handle_call(self, request: Any, from_: From, state: _State) -> Any:
        match request:
            case ("submit", fn, args):
                job = Job(state.next_id, fn, args)
                state.next_id += 1
                state.pending.append((job, 1))
                self._dispatch(state)
                return Reply(job.id, state)
            case ("result", job_id):
                if job_id in state.results:
                    return Reply(state.results[job_id], state)
                if not 0 < job_id < state.next_id:
                    return Reply(("error", "unknown_job"), state)
                state.waiters.setdefault(job_id, []).append(from_)
                return NoReply(state)
            case ("stats",):
                done = sum(r.status == "done" for r in state.results.values())
                return Reply(
                    Stats(
                        len(state.pending) + state.retrying,
                        len(state.running),
                        done,
                        len(state.results) - done,
                    ),
                    state,
                )
        return super().handle_call(request, from_, state)

    def handle_info(self, msg: Any, state: _State) -> Any:
        match msg:
            case ("$job_done", pid, value):
                entry = state.running.pop(pid, None)
                if entry is not None:
                    job, n, ref = entry
                    demonitor(ref, flush=True)
                    self._finish(state, JobResult(job.id, "done", value, n))
            case Down(pid=pid, reason=reason) if pid in state.running:
                job, n, _ref = state.running.pop(pid)
                if n < state.env.max_attempts:
                    delay = state.env.backoff * 2 ** (n - 1)
                    send_after(delay, _self(), ("$retry", job, n + 1))
                    state.retrying += 1
                else:
                    self._finish(state, JobResult(job.id, "failed", reason, n))
            case ("$retry", job, n):
                state.retrying -= 1
                state.pending.appendleft((job, n))  # retries go first
            case _:
                return super().handle_info(msg, state)
        self._dispatch(state)
        return NoReply(state)

    def _dispatch(self, state: _State) -> None:
        while state.pending and len(state.running) < state.env.max_workers:
            job, n = state.pending.popleft()
            spec = ChildSpec(
                id=("job", job.id, n),
                start=(_start_worker, (_self(), job, n)),
                restart="temporary",
                shutdown="brutal_kill",
            )
            pid = supervisor.start_child(WORKERS, spec)
            assert pid is not None
            state.running[pid] = (job, n, monitor(pid))
            send(pid, ("$go",))

    def _finish(self, state: _State, res: JobResult) -> None:
        state.results[res.id] = res
        for from_ in state.waiters.pop(res.id, ()):
            gen_server.reply(from_, res)


# ------------------------------------------------------------------------- supervision


def _start_workers(max_workers: int) -> Pid | None:
    return supervisor.dynamic_supervisor_start_link(max_children=max_workers, name=WORKERS)


class JobSup(Supervisor):
    """The workers' DynamicSupervisor first, then the queue that uses it."""

    def init(self, env: Env) -> Any:
        return SupFlags(strategy="one_for_all", intensity=3, period=5.0), [
            ChildSpec(id=WORKERS, start=(_start_workers, (env.max_workers,)), type="supervisor"),
            ChildSpec(id=QUEUE, start=(_start_queue, (env,))),
        ]


def _start_queue(env: Env) -> Pid | None:
    return gen_server.start_link(JobQueue, env, name=QUEUE)


class JobQueueApp(Application):
    def start(self, start_type: str, args: Any) -> Pid:
        env = Env(**application.get_all_env("job_queue"))
        pid = supervisor.start_link(JobSup, env)
        assert pid is not None
        return pid


APP = AppSpec(
    "job_queue",
    "1.0.0",
    JobQueueApp,
    schema=Env,
    description="a job queue with retries, on a DynamicSupervisor",
)


# ------------------------------------------------------------------------- client API


def submit(fn: Callable[..., Any], *args: Any, queue: Pid | str = QUEUE) -> int:
    """Queue ``fn(*args)``; returns the job id at once."""
    job_id: int = gen_server.call(queue, ("submit", fn, args))
    return job_id


def result(job_id: int, timeout: float | None = 5.0, *, queue: Pid | str = QUEUE) -> JobResult:
    """Wait (at most ``timeout`` seconds) for the job to finish; its ``JobResult``.
    ``KeyError`` for an id the queue never gave out."""
    res = gen_server.call(queue, ("result", job_id), timeout=timeout)
    if res == ("error", "unknown_job"):
        raise KeyError(f"job_queue: no job {job_id!r} was ever submitted")
    assert isinstance(res, JobResult)
    return res


def stats(*, queue: Pid | str = QUEUE) -> Stats:
    """Counts of pending (including waiting to retry), running, done and failed jobs."""
    s: Stats = gen_server.call(queue, ("stats",))
    return s


# ------------------------------------------------------------------------- demo


def square(n: int) -> int:
    return n * n


def flaky(n: int) -> int:
    """Fails on its first run, then works."""
    if attempt() == 1:
        raise RuntimeError(f"flaky job {n}: first run fails")
    return n


def broken() -> None:
    raise ValueError("this job always fails")


def main() -> list[JobResult]:
    """Start the application, run a few jobs (one flaky, one broken), print results."""
    application.start(APP)
    ids = [submit(square, n) for n in range(1, 5)]
    ids += [submit(flaky, 42), submit(broken)]
    results = [result(i, timeout=None) for i in ids]
    for r in results:
        print(f"job {r.id}: {r.status} after {r.attempts} run(s): {r.value!r}")
    application.stop("job_queue")
    return results


if __name__ == "__main__":
    import logging

    import otp
    import otp.logger

    otp.patch()
    otp.logger.setup(logging.INFO)  # OTP-style reports on stderr, never blocking the node
    otp.run(main)
