"""Per-user rate limits (docs/semantics.md C7) under the mock clock: a user process that
stops when idle would start its windows afresh, so it keeps them while one is well used."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from chat import store, users
from otp import gen_server, supervisor
from otp.process import Down, monitor, receive, sleep, unlink
from otp.supervisor import DynamicSupervisor

A = "+14155550100"


@contextmanager
def user_processes(**ctx) -> Iterator[None]:
    users.set_context(users.UserCtx(idle_stop=1.0, **ctx))
    backend = store.MemoryBackend()
    backend.users[A] = [b"k", 1, False, None]
    st = store.start_link(backend)
    sup = supervisor.start_link(DynamicSupervisor, {"intensity": 10, "period": 1.0},
                                name=users.SUP)
    try:
        yield
    finally:
        for pid in (sup, st):
            unlink(pid)
            gen_server.stop(pid)


def test_c7_a_user_near_its_limit_keeps_its_process_and_its_count(node):
    with user_processes(contacts_per_hour=100):
        assert users.call(A, ("limit", "contacts", 100)) == ("ok",)
        pid = users.ensure(A)
        ref = monitor(pid)
        sleep(60.0)  # many idle periods
        assert receive(Down, 0, default=None) is None
        r = users.call(A, ("limit", "contacts", 1))
        assert r[0] == "error" and r[1] == "rate_limited" and 0 < r[3] <= 3600.0
        sleep(3600.0)  # the hour is over: a new window, and the process may stop
        assert users.call(A, ("limit", "contacts", 1)) == ("ok",)
        assert receive(lambda m: isinstance(m, Down) and m.ref == ref, 60.0).reason == "normal"


def test_a_user_with_a_few_lookups_stops_when_idle(node):
    with user_processes(contacts_per_hour=100):
        assert users.call(A, ("limit", "contacts", 2)) == ("ok",)
        ref = monitor(users.ensure(A))
        assert receive(lambda m: isinstance(m, Down) and m.ref == ref, 60.0).reason == "normal"
