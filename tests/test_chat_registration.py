"""Registration rules (C5, C6) and the login slow-down, under the mock clock.

The registration server, the store (in memory) and the users' supervisor run in the
test's node; time moves only when every process waits, so "10 minutes later" is instant.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from chat import registration, store, users
from chat.config import RegistrationConfig, check_production, load_config, parse_config
from chat.gateways import ConsoleSms
from chat.protocol import ProtocolError
from otp import gen_server, supervisor
from otp.errors import ConfigError
from otp.process import ANY, sleep, unlink
from otp.supervisor import DynamicSupervisor
from otp.testing import assert_receive
from tests.chat_helpers import RecordingSms

A = "+14155550100"
B = "+14155550111"


@contextmanager
def registration_only(**cfg) -> Iterator[None]:
    from otp.process import self as me

    st = store.start_link(store.MemoryBackend())
    reg = registration.start_link(RegistrationConfig(**cfg), RecordingSms(me()))
    sup = supervisor.start_link(DynamicSupervisor, None, name=users.SUP)
    try:
        yield
    finally:
        for pid in (sup, reg, st):
            unlink(pid)
            gen_server.stop(pid)


def pin_for(phone: str) -> str:
    return assert_receive(("sms", phone, ANY))[2]


def code_error(fn, *args) -> ProtocolError:
    with pytest.raises(ProtocolError) as e:
        fn(*args)
    return e.value


def wrong(pin: str) -> str:
    return f"{(int(pin) + 1) % 10**6:06d}"


def test_c6_code_is_six_digits_and_verifies_once(node):
    with registration_only():
        assert registration.request_code(A) == 600.0
        pin = pin_for(A)
        assert len(pin) == 6 and pin.isdigit()
        key = registration.verify(A, pin)
        assert len(key) == 32
        assert store.read(("user", A))[0] == registration.hash_key(key)
        assert code_error(registration.verify, A, pin).code == "bad_code"


def test_c6_code_expires_after_ten_minutes(node):
    with registration_only():
        registration.request_code(A)
        pin = pin_for(A)
        sleep(600.0)
        assert code_error(registration.verify, A, pin).code == "bad_code"


def test_c6_code_is_still_valid_just_before_it_expires(node):
    with registration_only():
        registration.request_code(A)
        pin = pin_for(A)
        sleep(599.0)
        assert len(registration.verify(A, pin)) == 32


def test_c6_four_wrong_attempts_burn_the_code(node):
    with registration_only():
        registration.request_code(A)
        pin = pin_for(A)
        lefts = [code_error(registration.verify, A, wrong(pin)).extra.get("attempts_left")
                 for _ in range(3)]
        assert lefts == [3, 2, 1]
        assert code_error(registration.verify, A, wrong(pin)).code == "too_many_attempts"
        assert code_error(registration.verify, A, pin).code == "bad_code"


def answers(phone: str, pins: list[str]) -> list[tuple[str, str, object]]:
    out = []
    for p in pins:
        e = code_error(registration.verify, phone, p)
        out.append((e.code, e.message, e.extra.get("attempts_left")))
    return out


def test_c6_verify_tells_a_third_party_nothing_of_a_pending_code(node):
    """A number nobody asked a code for answers exactly as one with a pending code and
    a wrong PIN: no ``no_code`` telling that someone is registering it right now."""
    with registration_only():
        registration.request_code(A)
        pin = pin_for(A)
        tries = [wrong(pin)] * 4
        assert answers(A, tries) == answers(B, tries)
        assert [a[0] for a in answers(B, tries)] == ["bad_code"] * 3 + ["too_many_attempts"]


def test_c6_a_malformed_pin_uses_an_attempt(node):
    with registration_only():
        registration.request_code(A)
        pin = pin_for(A)
        lefts = [code_error(registration.verify, A, p).extra.get("attempts_left")
                 for p in ("", "12", "abcdef")]
        assert lefts == [3, 2, 1]
        assert code_error(registration.verify, A, "1").code == "too_many_attempts"
        assert code_error(registration.verify, A, pin).code == "bad_code"  # burned


def test_c6_code_requests_are_rate_limited_per_source_address(node):
    with registration_only(rate_count=3, source_rate_count=5):
        phones = [f"+1415555{i:04d}" for i in range(6)]
        for p in phones[:5]:
            registration.request_code(p, "192.0.2.1")
            pin_for(p)
        e = code_error(registration.request_code, phones[5], "192.0.2.1")
        assert e.code == "rate_limited" and e.extra["retry_after"] > 0
        registration.request_code(phones[5], "192.0.2.2")  # another address
        pin_for(phones[5])


def test_c6_code_requests_are_rate_limited_per_number(node):
    with registration_only(rate_count=3, rate_period=600.0):
        for _ in range(3):
            registration.request_code(A)
            pin_for(A)
        e = code_error(registration.request_code, A)
        assert e.code == "rate_limited" and 0 < e.extra["retry_after"] <= 600.0
        registration.request_code("+14155550111")  # another number is not limited
        pin_for("+14155550111")
        sleep(600.0)
        registration.request_code(A)  # the window slid
        pin_for(A)


def test_c6_a_new_request_replaces_the_pending_code(node):
    with registration_only():
        registration.request_code(A)
        first = pin_for(A)
        registration.request_code(A)
        second = pin_for(A)
        if first != second:
            assert code_error(registration.verify, A, first).code == "bad_code"
        assert len(registration.verify(A, second)) == 32


def test_invalid_phone_numbers_are_refused(node):
    with registration_only():
        assert code_error(registration.request_code, "555-1234").code == "invalid_phone"


def test_c5_verify_bumps_the_device_generation_and_replaces_the_key(node):
    with registration_only():
        registration.request_code(A)
        k1 = registration.verify(A, pin_for(A))
        registration.request_code(A)
        k2 = registration.verify(A, pin_for(A))
        key_hash, gen, _, _ = store.read(("user", A))
        assert k1 != k2 and gen == 2 and key_hash == registration.hash_key(k2)


def test_repeated_login_failures_are_answered_more_slowly(node):
    with registration_only(login_backoff_base=0.25, login_backoff_max=2.0):
        delays = [registration.login_delay(A, False) for _ in range(6)]
        assert delays == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]
        assert registration.login_delay(A, True) == 0.0
        assert registration.login_delay(A, False) == 0.25


def test_production_config_refuses_the_console_sms_gateway():
    cfg = parse_config({"env": "prod", "sms": {"adapter": "console"}})
    with pytest.raises(ConfigError, match="console"):
        check_production(cfg)


def test_shipped_configs_are_valid_and_prod_is_safe():
    dev = load_config("config/dev.yaml")
    assert dev.listen.host == "127.0.0.1" and dev.sms.adapter == "console"
    prod = load_config("config/prod.yaml")
    check_production(prod)
    assert prod.sms.adapter == "http" and prod.admin_token is None


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"listen\.port"):
        parse_config({"listen": {"port": "eighty"}})
    with pytest.raises(ConfigError, match="nonsense"):
        parse_config({"nonsense": 1})


def test_console_sms_logs_the_pin(caplog):
    with caplog.at_level("WARNING", logger="chat.sms"):
        ConsoleSms().send_pin(A, "123456")
    assert "123456" in caplog.text and A in caplog.text


def test_production_server_refuses_to_start_with_the_console_sms_gateway(node, tmp_path):
    from chat import app

    cfg = parse_config({"env": "prod", "data_dir": str(tmp_path), "sms": {"adapter": "console"},
                        "listen": {"port": 0}})
    with pytest.raises(ConfigError, match="console"):
        app.start(cfg)
