"""The SMS and push gateway adapters: the http ones against a local HTTP server."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from chat.config import GatewayConfig
from chat.gateways import GatewayError, HttpPush, HttpSms, LogPush, make_push, make_sms
from otp.errors import ConfigError

pytestmark = pytest.mark.otp(clock="real")


class _Recorder(BaseHTTPRequestHandler):
    got: list = []
    status = 200

    def do_POST(self):
        n = int(self.headers["Content-Length"])
        type(self).got.append((self.path, self.headers.get("X-Token"),
                               json.loads(self.rfile.read(n))))
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args):
        pass


def _serve_one(status=200):
    handler = type("H", (_Recorder,), {"got": [], "status": status})
    srv = HTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.handle_request)
    t.start()
    return srv, t, handler


def test_http_sms_posts_the_pin_as_json(node):
    srv, t, h = _serve_one()
    try:
        url = f"http://127.0.0.1:{srv.server_port}/send"
        HttpSms(url, headers={"X-Token": "t"}).send_pin("+14155550100", "123456")
        t.join()
    finally:
        srv.server_close()
    assert h.got == [("/send", "t", {"to": "+14155550100", "pin": "123456",
                                     "text": "Your code: 123456"})]


def test_http_push_posts_the_pending_count(node):
    srv, t, h = _serve_one()
    try:
        HttpPush(f"http://127.0.0.1:{srv.server_port}/push").notify("+14155550100", 3)
        t.join()
    finally:
        srv.server_close()
    assert h.got == [("/push", None, {"to": "+14155550100", "pending": 3})]


def test_http_gateway_error_status_raises_gateway_error(node):
    srv, t, _ = _serve_one(status=503)
    try:
        with pytest.raises(GatewayError, match="503"):
            HttpSms(f"http://127.0.0.1:{srv.server_port}/").send_pin("+14155550100", "1")
        t.join()
    finally:
        srv.server_close()


def test_unreachable_gateway_raises_gateway_error(node):
    srv = HTTPServer(("127.0.0.1", 0), _Recorder)
    port = srv.server_port
    srv.server_close()
    with pytest.raises(GatewayError):
        HttpPush(f"http://127.0.0.1:{port}/", timeout=2.0).notify("+14155550100", 1)


def test_gateway_factories_check_their_config():
    assert isinstance(make_push(GatewayConfig(adapter="log")), LogPush)
    assert isinstance(make_sms(GatewayConfig(adapter="http", url="http://x/")), HttpSms)
    with pytest.raises(ConfigError, match="url"):
        make_sms(GatewayConfig(adapter="http"))
    with pytest.raises(ConfigError, match="carrier-pigeon"):
        make_push(GatewayConfig(adapter="carrier-pigeon"))
