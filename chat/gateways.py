"""Plug-in points to the outside world: the SMS gateway (PINs) and the push gateway.

Each is a ``typing.Protocol`` with two adapters: one for development that only logs
(``ConsoleSms``, ``LogPush``) and one that POSTs JSON to a configurable URL
(``HttpSms``, ``HttpPush``)::

    from chat.gateways import make_sms
    sms = make_sms(GatewayConfig(adapter="http", url="https://sms.example/send"))
    sms.send_pin("+14155550100", "123456")   # POST {"to": ..., "pin": ..., "text": ...}

Failure semantics: ``send_pin``/``notify`` raise ``GatewayError`` when the provider
cannot be reached or answers with a non-2xx status. Callers run them in a separate
process (a slow provider must not stall a server); a failed push is logged and dropped
(the messages stay queued and are streamed at the next login anyway). After
``otp.patch()`` the stdlib HTTP client is cooperative, so a process waiting on the
provider does not block the node.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from typing import Protocol

from chat.config import GatewayConfig
from otp.errors import ConfigError

__all__ = [
    "ConsoleSms",
    "GatewayError",
    "HttpPush",
    "HttpSms",
    "LogPush",
    "PushGateway",
    "SmsGateway",
    "make_push",
    "make_sms",
]

log = logging.getLogger("chat.gateways")


class GatewayError(Exception):
    pass


class SmsGateway(Protocol):
    def send_pin(self, phone: str, pin: str) -> None: ...


class PushGateway(Protocol):
    def notify(self, phone: str, pending: int) -> None: ...


class ConsoleSms:
    """Development SMS gateway: writes the PIN to the log (logger ``chat.sms``)."""

    def __init__(self) -> None:
        self.log = logging.getLogger("chat.sms")

    def send_pin(self, phone: str, pin: str) -> None:
        self.log.warning("PIN for %s: %s", phone, pin)


class LogPush:
    """Development push gateway: logs each notification (logger ``chat.push``)."""

    def __init__(self) -> None:
        self.log = logging.getLogger("chat.push")

    def notify(self, phone: str, pending: int) -> None:
        self.log.info("push to %s: %d new item(s)", phone, pending)


def _post_json(url: str, payload: dict[str, object], timeout: float,
               headers: dict[str, str]) -> None:
    data = json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, method="POST",
                                 headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status = resp.status
            resp.read()
    except urllib.error.HTTPError as e:
        raise GatewayError(f"POST {url}: expected a 2xx answer, got {e.code}") from None
    except (OSError, urllib.error.URLError) as e:
        raise GatewayError(f"POST {url}: {e}") from None
    if not 200 <= status < 300:
        raise GatewayError(f"POST {url}: expected a 2xx answer, got {status}")


class HttpSms:
    """POSTs ``{"to": phone, "pin": pin, "text": "Your code: 123456"}`` as JSON."""

    def __init__(self, url: str, timeout: float = 5.0,
                 headers: dict[str, str] | None = None) -> None:
        self.url = url
        self.timeout = timeout
        self.headers = dict(headers or {})

    def send_pin(self, phone: str, pin: str) -> None:
        _post_json(self.url, {"to": phone, "pin": pin, "text": f"Your code: {pin}"},
                   self.timeout, self.headers)


class HttpPush:
    """POSTs ``{"to": phone, "pending": n}`` as JSON."""

    def __init__(self, url: str, timeout: float = 5.0,
                 headers: dict[str, str] | None = None) -> None:
        self.url = url
        self.timeout = timeout
        self.headers = dict(headers or {})

    def notify(self, phone: str, pending: int) -> None:
        _post_json(self.url, {"to": phone, "pending": pending}, self.timeout, self.headers)


def make_sms(cfg: GatewayConfig) -> SmsGateway:
    if cfg.adapter == "console":
        return ConsoleSms()
    if cfg.adapter == "http":
        if not cfg.url:
            raise ConfigError("sms.url: expected the provider's URL for the http adapter, "
                              "got nothing")
        return HttpSms(cfg.url, cfg.timeout, cfg.headers)
    raise ConfigError(f"sms.adapter: expected 'console' or 'http', got {cfg.adapter!r}")


def make_push(cfg: GatewayConfig) -> PushGateway:
    if cfg.adapter == "log":
        return LogPush()
    if cfg.adapter == "http":
        if not cfg.url:
            raise ConfigError("push.url: expected the provider's URL for the http adapter, "
                              "got nothing")
        return HttpPush(cfg.url, cfg.timeout, cfg.headers)
    raise ConfigError(f"push.adapter: expected 'log' or 'http', got {cfg.adapter!r}")
