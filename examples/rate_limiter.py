"""A token-bucket rate limiter: one gen_server, one bucket per key, on the node clock.

Each key (a user, an IP, an API token) has a bucket of at most ``burst`` tokens that
refills at ``rate`` tokens per second. A request takes tokens:

- ``check(limiter, key, n=1)`` answers at once: ``Allowed(remaining)`` or
  ``Denied(retry_after)`` (seconds until ``n`` tokens will be there);
- ``acquire(limiter, key, n=1, timeout=5.0)`` waits until the tokens are there. The
  server does not block: it keeps the caller's ``from_``, answers ``NoReply``, and
  ``reply``-s later from a ``send_after`` timer (OTP's deferred reply, docs/semantics.md G3).
  Waiters of a key are served first come, first served, and a ``check`` never jumps
  ahead of them.

Run it::

    python -m otp run examples.rate_limiter:main      # or: python -m examples.rate_limiter

``main`` starts the limiter under a supervisor (``LimiterSup``), lets three clients
hammer one key, and prints when each request got through (about 3 s at 4 req/s).

Failure semantics: the limiter is stateful but cheap to lose: if it crashes, its
supervisor restarts it with full buckets and every waiting caller's ``call`` fails at
once with the crash reason (they retry). A caller whose ``acquire`` times out gets
``CallTimeout``; if it died meanwhile its turn is skipped, if it lives on its turn
still takes the tokens (the late reply is dropped, G1). Asking for more than ``burst``
tokens at once raises ``ValueError`` (they can never be there). Buckets of idle keys
are forgotten once they are full again (swept when there are more than 1024 keys).

When not to use: across nodes (each node has its own limiter; use a shared store), or
as the only protection of a service (it limits well-behaved clients only).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from otp import gen_server, supervisor
from otp.gen_server import From, GenServer, NoReply, Ok, Reply
from otp.process import Pid, is_alive, receive, send, send_after, spawn_link, trap_exit
from otp.process import now as _now
from otp.process import self as _self
from otp.supervisor import ChildSpec, Supervisor, SupFlags

__all__ = [
    "Allowed",
    "Denied",
    "LimiterSup",
    "Limits",
    "RateLimiter",
    "acquire",
    "check",
    "main",
    "start_link",
]


@dataclass(frozen=True)
class Limits:
    """``rate`` tokens per second, at most ``burst`` in a bucket."""

    rate: float
    burst: int

    def __post_init__(self) -> None:
        if not (isinstance(self.rate, (int, float)) and self.rate > 0):
            raise ValueError(f"Limits: rate expects tokens per second > 0, got {self.rate!r}")
        if not (isinstance(self.burst, int) and self.burst >= 1):
            raise ValueError(f"Limits: burst expects an int >= 1, got {self.burst!r}")


@dataclass(frozen=True)
class Allowed:
    remaining: float


@dataclass(frozen=True)
class Denied:
    retry_after: float


@dataclass
class _Bucket:
    tokens: float
    updated: float
    waiters: deque[tuple[From, float]] = field(default_factory=deque)
    timer: bool = False  # a "$refill" timer is pending for this key


@dataclass
class _State:
    limits: Limits
    buckets: dict[Any, _Bucket]


_SWEEP_ABOVE = 1024


class RateLimiter(GenServer):
    """The server; its state is ``_State`` (the limits and one bucket per key)."""

    def init(self, limits: Limits) -> Ok:
        return Ok(_State(limits, {}))

    def handle_call(self, request: Any, from_: From, state: _State) -> Any:
        match request:
            case ("check" | "acquire", key, n) if n > state.limits.burst:
                return Reply(Denied(float("inf")), state)
            case ("check", key, n):
                b = self._refill(state, key)
                if not b.waiters and b.tokens >= n:
                    b.tokens -= n
                    return Reply(Allowed(b.tokens), state)
                return Reply(Denied(self._wait_time(state, b, n)), state)
            case ("acquire", key, n):
                b = self._refill(state, key)
                if not b.waiters and b.tokens >= n:
                    b.tokens -= n
                    return Reply(Allowed(b.tokens), state)
                b.waiters.append((from_, n))
                self._schedule(state, key, b)
                return NoReply(state)
        return super().handle_call(request, from_, state)

    def handle_info(self, msg: Any, state: _State) -> Any:
        match msg:
            case ("$refill", key):
                b = self._refill(state, key)
                b.timer = False
                while b.waiters:
                    from_, n = b.waiters[0]
                    if not is_alive(from_[0]):  # gave up and died: skip it
                        b.waiters.popleft()
                        continue
                    if b.tokens < n:
                        break
                    b.waiters.popleft()
                    b.tokens -= n
                    gen_server.reply(from_, Allowed(b.tokens))
                self._schedule(state, key, b)
                return NoReply(state)
        return super().handle_info(msg, state)

    # -- the bucket arithmetic ------------------------------------------------------------

    def _refill(self, state: _State, key: Any) -> _Bucket:
        now = _now()
        lim = state.limits
        b = state.buckets.get(key)
        if b is None:
            b = state.buckets[key] = _Bucket(float(lim.burst), now)
        else:
            b.tokens = min(float(lim.burst), b.tokens + (now - b.updated) * lim.rate)
            b.updated = now
        if len(state.buckets) > _SWEEP_ABOVE:
            # Forget full, idle buckets: the state must not grow with every key seen.
            for k in [k for k, o in state.buckets.items() if k != key and not o.waiters
                      and o.tokens + (now - o.updated) * lim.rate >= lim.burst]:  # fmt: skip
                del state.buckets[k]
        return b

    def _wait_time(self, state: _State, b: _Bucket, n: float) -> float:
        needed = n + sum(w for _f, w in b.waiters) - b.tokens
        return max(0.0, needed / state.limits.rate)

    def _schedule(self, state: _State, key: Any, b: _Bucket) -> None:
        if b.waiters and not b.timer:
            _from, n = b.waiters[0]
            delay = max(0.0, (n - b.tokens) / state.limits.rate)
            send_after(delay, _self(), ("$refill", key))
            b.timer = True


# ------------------------------------------------------------------------- client API


def start_link(limits: Limits, *, name: str | None = "rate_limiter") -> Pid | None:
    """Start a limiter linked to the caller (registered as ``name``)."""
    return gen_server.start_link(RateLimiter, limits, name=name)


def check(limiter: Pid | str, key: Any, n: int = 1) -> Allowed | Denied:
    """Take ``n`` tokens of ``key`` if they are there now; never waits. ``Denied`` with
    ``retry_after`` infinite if ``n`` exceeds the bucket size."""
    result: Allowed | Denied = gen_server.call(limiter, ("check", key, n))
    return result


def acquire(limiter: Pid | str, key: Any, n: int = 1, timeout: float | None = 5.0) -> Allowed:
    """Take ``n`` tokens of ``key``, waiting (at most ``timeout`` seconds) for them."""
    result: Allowed | Denied = gen_server.call(limiter, ("acquire", key, n), timeout=timeout)
    if isinstance(result, Denied):
        raise ValueError(f"acquire: {n} tokens can never be available, the bucket is smaller")
    return result


class LimiterSup(Supervisor):
    """A supervisor with the limiter as its only child."""

    def init(self, limits: Limits) -> Any:
        return SupFlags(strategy="one_for_one"), [
            ChildSpec(id="rate_limiter", start=(start_link, (limits,)))
        ]


# ------------------------------------------------------------------------- demo


def _client(parent: Pid, name: str, requests: int) -> None:
    for i in range(requests):
        acquire("rate_limiter", "api", timeout=None)
        send(parent, ("done", name, i, _now()))


def main() -> list[tuple[str, int, float]]:
    """Three clients, five requests each, one key limited to 4 req/s with a burst of 2."""
    trap_exit(True)
    sup = supervisor.start_link(LimiterSup, Limits(rate=4.0, burst=2))
    t0 = _now()
    me = _self()
    for name in ("a", "b", "c"):
        spawn_link(_client, me, name, 5)
    log = []
    for _ in range(15):
        _tag, name, i, at = receive(("done", str, int, float))
        log.append((name, i, round(at - t0, 2)))
        print(f"{at - t0:5.2f}s  client {name} request {i} allowed")
    supervisor.stop(sup)
    return log


if __name__ == "__main__":
    import otp

    otp.patch()
    otp.run(main)
