"""Floor: the minimal hand-rolled actor every gevent user could write.

An actor is ``gevent.spawn(fn, inbox)`` with a ``gevent.queue.Queue`` as its mailbox;
its "pid" is the inbox (``send`` = ``inbox.put``). A call puts ``("call", AsyncResult,
request)`` and waits on the ``AsyncResult``; a death notice is ``Greenlet.link``. The
restart workload adds a tiny supervisor greenlet that respawns its worker when the link
fires. Nothing here is slowed down on purpose: this is the bar ``otp`` must beat, so it
uses the plain API the way its docs suggest (bound methods hoisted out of hot loops, no
pattern matching, no copying).
"""

from __future__ import annotations

import time
from typing import Any

import gevent
from gevent.event import AsyncResult
from gevent.queue import Queue

from bench._measure import CLIENTS, RING_SIZE, Result, micros_each, per_second, rss_bytes

STOP = ("stop",)


def _exit_at_once() -> None:
    return None


def spawn(n: int) -> Result:
    """n greenlets that exit at once, each linked to the parent's mailbox; the parent
    waits for all n death notices. No mailbox is made for the children: they never
    receive, and a gevent user would not build one (with a Queue each it is ~35% slower;
    the stronger floor is the honest bar)."""
    inbox: Queue = Queue()
    notify = inbox.put  # the notice is the dead Greenlet itself (has .value/.exception)
    get = inbox.get
    spawn_ = gevent.spawn
    perf = time.perf_counter
    t0 = perf()
    for _ in range(n):
        spawn_(_exit_at_once).link(notify)
    for _ in range(n):
        get()
    t1 = perf()
    return per_second(n, t1 - t0), "procs/s", n


def _ponger(inbox: Queue) -> None:
    get = inbox.get
    while True:
        msg = get()
        if msg is STOP:
            return
        msg[1].put("pong")


def ping_pong(n: int) -> Result:
    pong_inbox: Queue = Queue()
    gevent.spawn(_ponger, pong_inbox)
    me: Queue = Queue()
    ping = ("ping", me)
    put, get = pong_inbox.put, me.get
    perf = time.perf_counter
    t0 = perf()
    for _ in range(n):
        put(ping)
        get()
    t1 = perf()
    put(STOP)
    return micros_each(n, t1 - t0), "us/round_trip", n


def _ring_node(inbox: Queue, nxt: Queue, done: Queue) -> None:
    get, put = inbox.get, nxt.put
    while True:
        token = get()
        if token > 0:
            put(token - 1)
        elif token == 0:
            done.put("done")
        else:
            return


def ring(n: int) -> Result:
    inboxes: list[Queue] = [Queue() for _ in range(RING_SIZE)]
    done: Queue = Queue()
    for i in range(RING_SIZE):
        gevent.spawn(_ring_node, inboxes[i], inboxes[(i + 1) % RING_SIZE], done)
    perf = time.perf_counter
    t0 = perf()
    inboxes[0].put(n)
    done.get()
    t1 = perf()
    for inbox in inboxes:
        inbox.put(-1)
    return per_second(n, t1 - t0), "hops/s", n


def memory(n: int) -> Result:
    ready: Queue = Queue()
    started = [0]

    def blocked(inbox: Queue) -> None:
        started[0] += 1
        if started[0] == n:
            ready.put("all blocked")  # the last one to start tells the parent
        inbox.get()

    gevent.sleep(0)  # hub running before the first reading
    before = rss_bytes()
    actors = []  # a real program keeps its pids; so does the process table of otp
    for _ in range(n):
        inbox: Queue = Queue()
        actors.append((gevent.spawn(blocked, inbox), inbox))
    ready.get()
    gevent.sleep(0)  # let the last one reach inbox.get()
    after = rss_bytes()
    return (after - before) / n, "bytes/process", n


# ---------------------------------------------------------------- server workloads


def _counter(inbox: Queue) -> None:
    """A counter server: ("call", AsyncResult, "incr" | "get"), ("cast", "incr")."""
    count = 0
    get = inbox.get
    while True:
        msg = get()
        tag = msg[0]
        if tag == "call":
            if msg[2] == "incr":
                count += 1
            msg[1].set(count)
        elif tag == "cast":
            count += 1
        else:
            return


def _call(put: Any, request: str) -> Any:
    reply = AsyncResult()
    put(("call", reply, request))
    return reply.get()


def call(n: int) -> Result:
    server: Queue = Queue()
    gevent.spawn(_counter, server)
    put = server.put
    perf = time.perf_counter
    t0 = perf()
    for _ in range(n):
        reply = AsyncResult()
        put(("call", reply, "incr"))
        reply.get()
    t1 = perf()
    assert _call(put, "get") == n
    put(STOP)
    return micros_each(n, t1 - t0), "us/call", n


def cast(n: int) -> Result:
    server: Queue = Queue()
    gevent.spawn(_counter, server)
    put = server.put
    incr = ("cast", "incr")
    perf = time.perf_counter
    t0 = perf()
    for _ in range(n):
        put(incr)
    count = _call(put, "get")
    t1 = perf()
    assert count == n, count
    put(STOP)
    return per_second(n, t1 - t0), "casts/s", n


def _client(put: Any, calls: int, done: Queue) -> None:
    for _ in range(calls):
        reply = AsyncResult()
        put(("call", reply, "incr"))
        reply.get()
    done.put("done")


def many_clients(n: int) -> Result:
    per_client = max(1, n // CLIENTS)
    total = per_client * CLIENTS
    server: Queue = Queue()
    gevent.spawn(_counter, server)
    done: Queue = Queue()
    perf = time.perf_counter
    t0 = perf()
    for _ in range(CLIENTS):
        gevent.spawn(_client, server.put, per_client, done)
    for _ in range(CLIENTS):
        done.get()
    t1 = perf()
    assert _call(server.put, "get") == total
    server.put(STOP)
    return per_second(total, t1 - t0), "calls/s", total


# ---------------------------------------------------------------- restart


def _worker(inbox: Queue) -> None:
    get = inbox.get
    while True:
        msg = get()
        msg[1].set("pong")


def _supervisor(inbox: Queue) -> None:
    """one_for_one with one permanent child: respawn it whenever its link fires."""

    def on_exit(dead: gevent.Greenlet) -> None:
        inbox.put(("EXIT", dead))

    def start_child() -> tuple[gevent.Greenlet, Queue]:
        child_inbox: Queue = Queue()
        g = gevent.spawn(_worker, child_inbox)
        g.link(on_exit)
        return g, child_inbox

    child = start_child()
    get = inbox.get
    while True:
        msg = get()
        tag = msg[0]
        if tag == "EXIT":
            if msg[1] is child[0]:
                child = start_child()
        elif tag == "which_child":
            msg[1].set(child)
        else:
            child[0].unlink(on_exit)
            child[0].kill()
            return


def restart(n: int) -> Result:
    sup: Queue = Queue()
    gevent.spawn(_supervisor, sup)
    put = sup.put

    def which_child() -> tuple[gevent.Greenlet, Queue]:
        reply = AsyncResult()
        put(("which_child", reply))
        return reply.get()

    g, inbox = which_child()
    assert _call(inbox.put, "ping") == "pong"
    perf = time.perf_counter
    t0 = perf()
    for _ in range(n):
        g.kill()  # returns once it is dead; its link notifications are still pending
        # One hub turn runs them, so the supervisor's inbox holds EXIT before
        # which_child (without it, every restart costs an extra which_child round trip).
        gevent.sleep(0)
        new_g, new_inbox = which_child()
        while new_g is g:  # supervisor had not handled the EXIT yet: ask again
            new_g, new_inbox = which_child()
        reply = AsyncResult()
        new_inbox.put(("call", reply, "ping"))
        reply.get()
        g = new_g
    t1 = perf()
    put(STOP)
    return micros_each(n, t1 - t0), "us/restart", n


def _table_owner_write(n: int) -> Result:
    from bench.tables_quick import gevent_owner_write

    return gevent_owner_write(n)


WORKLOADS = {
    # ram tables: one call per write to a greenlet that owns the dict
    "table_dirty_write": _table_owner_write,
    "table_tx_write": _table_owner_write,
    "spawn": spawn,
    "ping_pong": ping_pong,
    "ring": ring,
    "memory": memory,
    "call": call,
    "cast": cast,
    "many_clients": many_clients,
    "restart": restart,
}
