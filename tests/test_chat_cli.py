"""The chat-client command line against a running server, and `python -m chat`."""

from __future__ import annotations

import os
import stat
from contextlib import contextmanager

import pytest
from click.testing import CliRunner

from chat.cli import load_key, main, store_path
from chat.client import DeviceStore, key_path
from otp.process import monitor, spawn_link
from otp.testing import assert_down
from tests.chat_helpers import running_chat

pytestmark = pytest.mark.otp(clock="real")

A, B = "+14155550100", "+14155550111"
run = CliRunner().invoke


def register_both(srv, server):
    """A and B register and verify through the CLI; each key is stored 0600."""
    for phone in (A, B):
        r = run(main, [*server, "register", phone])
        assert r.exit_code == 0, r.output
        r = run(main, [*server, "verify", phone, srv.pin(phone)])
        assert r.exit_code == 0, r.output
        mode = stat.S_IMODE(os.stat(key_path(phone, server[1])).st_mode)
        assert mode == 0o600


@contextmanager
def cli_chat(tmp_path, monkeypatch):
    """A running server, the CLI's ``--server`` option for it, A and B registered
    through the CLI (their keys in a config directory of the test's own)."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    with running_chat(tmp_path) as srv:
        server = ["--server", f"{srv.host}:{srv.port}"]
        register_both(srv, server)
        yield srv, server


def test_cli_register_verify_send_listen_with_key_stored_0600(node, tmp_path, monkeypatch):
    with cli_chat(tmp_path, monkeypatch) as (_srv, server):
        r = run(main, [*server, "--as", A, "send", B, "hello from the cli"])
        assert r.exit_code == 0 and "sent ✓" in r.output, r.output
        r = run(main, [*server, "--as", B, "listen", "--count", "1"])
        assert r.exit_code == 0, r.output
        assert f"[{A}] hello from the cli" in r.output
        r = run(main, [*server, "send", B, "x"])  # two identities stored: which one?
        assert r.exit_code != 0 and "--as" in r.output
        assert "delivered" not in run(main, [*server, "--as", A, "send", B, "away"]).output


def test_cli_send_shows_delivered_when_the_recipient_is_online(node, tmp_path, monkeypatch):
    with cli_chat(tmp_path, monkeypatch) as (srv, server):
        bob = srv.client()
        bob.login(B, load_key(B, server[1]))
        done = []

        def online():  # Bob's device: connected, acknowledging what it is pushed
            while not done:
                bob.poll(0.05)

        pid = spawn_link(online)
        r = run(main, [*server, "--as", A, "send", B, "are you there?"])
        assert r.exit_code == 0, r.output
        assert "sent ✓" in r.output and "delivered ✓✓" in r.output, r.output
        done.append(True)
        assert_down(monitor(pid))


def test_python_m_chat_stops_gracefully_on_sigterm(tmp_path):
    """`make run`'s server: SIGTERM closes the listener and stops the applications."""
    import os
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "chat", "--config", "config/dev.yaml", "--port", "0",
         "--data-dir", str(tmp_path / "data")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # ends if the server dies: the assert below says so
            if "listening on" in line:
                break
        else:
            raise AssertionError("the server never said where it listens")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
        assert "stopping" in out and out.rstrip().endswith("stopped"), out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_c1_a_message_taken_while_send_waits_is_shown_once_by_the_next_listen(
        node, tmp_path, monkeypatch):
    """C1 for the command-line device: what the server pushes while ``send`` waits for
    its receipt is acknowledged (so deleted on the server); the device's store keeps it,
    and the next ``listen`` shows it, once."""
    with cli_chat(tmp_path, monkeypatch) as (srv, server):
        r = run(main, [*server, "--as", B, "send", A, "while you were away"])
        assert r.exit_code == 0 and "sent ✓" in r.output, r.output
        r = run(main, [*server, "--as", A, "send", B, "hi"])  # B's message comes at login
        assert r.exit_code == 0 and "sent ✓" in r.output, r.output
        assert "while you were away" not in r.output
        assert srv.client().login(A, load_key(A, server[1])) == 0  # nothing left for A on the server
        with DeviceStore(store_path(A, server[1])) as store:
            assert [ev["body"] for ev in store.unshown()] == ["while you were away"]
        r = run(main, [*server, "--as", A, "listen", "--count", "1"])
        assert r.exit_code == 0, r.output
        assert r.output.count("while you were away") == 1, r.output
        with DeviceStore(store_path(A, server[1])) as store:
            assert store.unshown() == []
        assert stat.S_IMODE(os.stat(store_path(A, server[1])).st_mode) == 0o600
