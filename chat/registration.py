"""Registration and login bookkeeping: one-time PINs, device keys, rate limits.

One server process, registered as ``chat.registration``. Connection processes call it::

    from chat import registration
    registration.request_code("+14155550100", "203.0.113.7")   # a PIN goes out by SMS
    key = registration.verify("+14155550100", "123456")   # 32 random bytes, the device key
    registration.login_delay("+14155550100", ok=False)    # seconds to wait before answering

Rules (docs/semantics.md C5, C6):

- A PIN is 6 random digits, valid ``code_ttl`` seconds (10 minutes), for one successful
  ``verify``, with at most ``max_attempts`` (4) wrong tries, then it is burned. A new
  request replaces a pending code. Requests per number are limited to ``rate_count``
  within ``rate_period`` seconds (a sliding window on the node clock), and requests
  from one source address to ``source_rate_count`` within that period (against SMS
  pumping: one client asking codes for many numbers; connections limit their own too).
- ``verify`` gives a third party no sign that someone is registering a number: a
  number with no pending code (never requested, expired, used or burned) answers as one
  with a code and a wrong PIN would (``bad_code`` with ``attempts_left`` counting down,
  then ``too_many_attempts``); a malformed PIN is a wrong PIN (it uses an attempt).
- ``verify`` stores only the SHA-256 of the new key, with a bumped device generation,
  then tells the user's process (if it runs), which ends the previous device's session
  with the ``replaced`` error. The old key stops working at the moment of the store.
- Login failures per number make the answer slower: ``base * 2**(n-1)`` seconds,
  capped; a success resets the count.

Failure semantics: every refusal is a ``ProtocolError`` with the protocol's code
(``invalid_phone``, ``rate_limited`` with ``retry_after``, ``bad_code`` with
``attempts_left``, ``too_many_attempts``). The SMS is
sent from a separate process, so a slow or failing gateway never stalls this server; its
failure is logged. Codes live in memory: a restart of this server drops pending codes
(the user asks for a new one), never keys.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from chat import store, users
from chat.config import RegistrationConfig
from chat.gateways import SmsGateway
from chat.protocol import ProtocolError, is_phone
from otp import gen_server
from otp.gen_server import GenServer, Ok, Reply
from otp.process import now as _now
from otp.process import spawn

__all__ = ["NAME", "hash_key", "login_delay", "provision", "request_code", "start_link",
           "verify"]

NAME = "chat.registration"
log = logging.getLogger("chat.registration")


def hash_key(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


@dataclass
class _Code:
    pin_hash: bytes
    expires: float
    attempts_left: int


@dataclass
class _State:
    cfg: RegistrationConfig
    sms: SmsGateway
    codes: dict[str, _Code] = field(default_factory=dict)
    requests: dict[str, deque[float]] = field(default_factory=dict)
    sources: dict[str, deque[float]] = field(default_factory=dict)  # per address
    # attempts left for numbers with no pending code (verify answers as for a code)
    phantoms: dict[str, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)


def _check_phone(phone: str) -> None:
    if not is_phone(phone):
        raise ProtocolError("invalid_phone", f"expected an E.164 number like +14155550100, "
                                             f"got {phone!r:.40}")


def _send_pin(sms: SmsGateway, phone: str, pin: str) -> None:
    try:
        sms.send_pin(phone, pin)
    except Exception as e:
        log.error("SMS gateway failed to send the PIN to %s: %s", phone, e)


def _register_device(phone: str) -> bytes:
    """Make a new device key for ``phone``: store its hash, end the old session."""
    key = secrets.token_bytes(32)
    row = store.read(("user", phone))
    gen = (row[1] if row else 0) + 1
    h = hash_key(key)
    store.write((("user", phone, h, gen),))
    users.rekey(phone, h, gen)
    return key


class Registration(GenServer):
    def init(self, arg: tuple[RegistrationConfig, SmsGateway]) -> Ok:
        cfg, sms = arg
        return Ok(_State(cfg, sms))

    def handle_call(self, request: Any, from_: Any, state: _State) -> Any:
        try:
            match request:
                case ("request_code", phone):
                    return Reply(("ok", self._request_code(phone, state)), state)
                case ("request_code", phone, source):
                    return Reply(("ok", self._request_code(phone, state, source)), state)
                case ("verify", phone, pin):
                    return Reply(("ok", self._verify(phone, pin, state)), state)
                case ("login", phone, ok):
                    return Reply(("ok", self._login(phone, ok, state)), state)
                case ("provision", phones):
                    return Reply(("ok", tuple(_register_device(p) for p in phones)), state)
        except ProtocolError as e:
            return Reply(("error", (e.code, e.message, tuple(e.extra.items()))), state)
        return super().handle_call(request, from_, state)

    @staticmethod
    def _window(table: dict[str, deque[float]], k: str, count: int, period: float,
                what: str) -> deque[float]:
        """The sliding window of ``k``'s requests; ``rate_limited`` when it is full."""
        now = _now()
        q = table.setdefault(k, deque())
        while q and q[0] <= now - period:
            q.popleft()
        if len(q) >= count:
            retry = q[0] + period - now
            raise ProtocolError("rate_limited", f"at most {count} code requests per "
                                                f"{period:g} s for {what}; try again "
                                                f"in {retry:.0f} s", retry_after=retry)
        return q

    def _request_code(self, phone: str, state: _State, source: str | None = None) -> float:
        _check_phone(phone)
        cfg = state.cfg
        now = _now()
        q = self._window(state.requests, phone, cfg.rate_count, cfg.rate_period,
                         "a number")
        if source is not None:
            src = self._window(state.sources, source,
                               getattr(cfg, "source_rate_count", 20), cfg.rate_period,
                               "an address")
            src.append(now)
            if len(state.sources) > 100_000:
                old = now - cfg.rate_period
                for a in [a for a, d in state.sources.items() if not d or d[-1] <= old]:
                    del state.sources[a]
        q.append(now)
        state.phantoms.pop(phone, None)
        pin = f"{secrets.randbelow(10**6):06d}"
        state.codes[phone] = _Code(hash_key(pin.encode()), now + cfg.code_ttl, cfg.max_attempts)
        spawn(_send_pin, state.sms, phone, pin)
        # Keep the rate-limit table from growing without bound with stale numbers.
        if len(state.requests) > 100_000:
            old = now - cfg.rate_period
            for p in [p for p, d in state.requests.items() if not d or d[-1] <= old]:
                del state.requests[p]
        return cfg.code_ttl

    @staticmethod
    def _verify(phone: str, pin: str, state: _State) -> bytes:
        """Check ``pin``. With no pending code (none requested, expired, used, burned)
        the answer is that of a pending code and a wrong PIN: a third party learns
        nothing of someone registering the number now (and each number's wrong tries
        are counted either way)."""
        _check_phone(phone)
        code = state.codes.get(phone)
        if code is not None and _now() >= code.expires:
            del state.codes[phone]
            code = None
        h = hash_key(pin.encode())  # (a malformed PIN is a wrong one: it uses an attempt)
        if code is not None and hmac.compare_digest(h, code.pin_hash):
            del state.codes[phone]
            return _register_device(phone)
        if code is not None:
            code.attempts_left -= 1
            left = code.attempts_left
            if left <= 0:
                del state.codes[phone]
        else:
            left = state.phantoms.get(phone, state.cfg.max_attempts) - 1
            if left <= 0:
                state.phantoms.pop(phone, None)
            else:
                if len(state.phantoms) > 100_000:
                    state.phantoms.clear()
                state.phantoms[phone] = left
        if left <= 0:
            raise ProtocolError("too_many_attempts",
                                "too many wrong codes: request a new one")
        raise ProtocolError("bad_code", f"wrong or expired code (or none was requested); "
                                        f"{left} attempt(s) left", attempts_left=left)

    @staticmethod
    def _login(phone: str, ok: bool, state: _State) -> float:
        if ok:
            state.failures.pop(phone, None)
            return 0.0
        n = state.failures.get(phone, 0) + 1
        if len(state.failures) > 100_000:
            state.failures.clear()
        state.failures[phone] = n
        cfg = state.cfg
        return min(cfg.login_backoff_base * 2 ** (n - 1), cfg.login_backoff_max)


def start_link(cfg: RegistrationConfig, sms: SmsGateway) -> Any:
    return gen_server.start_link(Registration, (cfg, sms), name=NAME)


def _call(req: tuple[Any, ...]) -> Any:
    status, value = gen_server.call(NAME, req, timeout=30.0)
    if status == "error":
        code, message, extra = value
        raise ProtocolError(code, message, **dict(extra))
    return value


def request_code(phone: str, source: str | None = None) -> float:
    """Send a PIN to ``phone``; returns its lifetime in seconds. ``source``: the
    requester's address (requests per address are limited too)."""
    if source is None:
        return float(_call(("request_code", phone)))
    return float(_call(("request_code", phone, source)))


def verify(phone: str, pin: str) -> bytes:
    """Check the PIN; on success return a new device key (the old one stops working)."""
    return bytes(_call(("verify", phone, pin)))


def login_delay(phone: str, ok: bool) -> float:
    """Record a login result for ``phone``; returns how long to wait before answering."""
    return float(_call(("login", phone, ok)))


def provision(phones: tuple[str, ...]) -> tuple[bytes, ...]:
    """Admin path: register ``phones`` without SMS; returns their new device keys."""
    for p in phones:
        _check_phone(p)
    return tuple(_call(("provision", phones)))
