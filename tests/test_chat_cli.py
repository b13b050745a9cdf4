"""The chat-client command line against a running server, and `python -m chat`."""

from __future__ import annotations

import io
import os
import re
import stat
from contextlib import contextmanager

import pytest
from click.testing import CliRunner

from chat.cli import load_key, main, store_path
from chat.client import DeviceStore, key_path
from otp.process import ANY, monitor, sleep, spawn_link
from otp.process import self as self_pid
from otp.process import send as send_msg
from otp.testing import assert_down, assert_receive
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
        # nothing left for A on the server
        assert srv.client().login(A, load_key(A, server[1])) == 0
        with DeviceStore(store_path(A, server[1])) as store:
            assert [ev["body"] for ev in store.unshown()] == ["while you were away"]
        r = run(main, [*server, "--as", A, "listen", "--count", "1"])
        assert r.exit_code == 0, r.output
        assert r.output.count("while you were away") == 1, r.output
        with DeviceStore(store_path(A, server[1])) as store:
            assert store.unshown() == []
        assert stat.S_IMODE(os.stat(store_path(A, server[1])).st_mode) == 0o600


# ------------------------------------------------------------ what a new user hits


class ScriptedInput(io.RawIOBase):
    """stdin for the shell: one line per read; a callable in the script runs (in the
    shell's process, between two prompts) before the line after it is handed out."""

    def __init__(self, *script):
        self.script = list(script)

    def readable(self):
        return True

    def readinto(self, b):
        while self.script and callable(self.script[0]):
            self.script.pop(0)()
        if not self.script:
            return 0
        data = self.script.pop(0).encode()
        b[: len(data)] = data
        return len(data)


def invoke_shell(server, as_, *script):
    return CliRunner().invoke(main, [*server, "--as", as_, "shell"],
                              input=io.BufferedReader(ScriptedInput(*script)))


def test_cli_numbers_are_normalised_and_checked_before_anything_is_sent(
        node, tmp_path, monkeypatch):
    with cli_chat(tmp_path, monkeypatch) as (_srv, server):
        r = run(main, [*server, "--as", A.lstrip("+"), "send", "1 415 555 0111", "no plus"])
        assert r.exit_code == 0 and "sent ✓" in r.output, r.output
        r = run(main, [*server, "--as", A, "send", "12345", "hi"])
        assert r.exit_code == 2 and "E.164" in r.output and "'12345'" in r.output, r.output
        r = run(main, [*server, "register", "0044"])
        assert r.exit_code == 2 and "E.164" in r.output, r.output


def test_cli_an_empty_message_is_refused_locally(node, tmp_path, monkeypatch):
    with cli_chat(tmp_path, monkeypatch) as (_srv, server):
        for text in ("", "   "):
            r = run(main, [*server, "--as", A, "send", B, text])
            assert r.exit_code == 2 and "empty" in r.output, r.output


def test_cli_an_unknown_identity_leaves_no_file_behind(node, tmp_path, monkeypatch):
    with cli_chat(tmp_path, monkeypatch) as (_srv, server):
        nobody = "+19995550100"
        r = run(main, [*server, "--as", nobody, "send", B, "hi"])
        assert r.exit_code == 1 and f"no device key for {nobody}" in r.output, r.output
        assert not os.path.exists(store_path(nobody, server[1]))


def test_cli_sending_to_an_unregistered_number_says_so_in_one_line(node, tmp_path, monkeypatch):
    with cli_chat(tmp_path, monkeypatch) as (_srv, server):
        r = run(main, [*server, "--as", A, "send", "+19995550100", "hi"])
        assert r.exit_code == 1, r.output
        assert "unknown_recipient" in r.output and "Traceback" not in r.output
        assert len(r.output.strip().splitlines()) == 1, r.output


def test_cli_keys_are_per_server_and_an_old_key_moves_to_its_server(node, tmp_path, monkeypatch):
    with cli_chat(tmp_path, monkeypatch) as (_srv, server):
        here = server[1]
        assert os.path.dirname(key_path(A, here)).endswith(here)
        # an earlier version's layout: the key (and its store) straight in chat-client/
        os.replace(key_path(A, here), key_path(A))
        r = run(main, [*server, "--as", A, "send", B, "from the old key"])
        assert r.exit_code == 0 and "sent ✓" in r.output, r.output
        assert os.path.exists(key_path(A, here)) and not os.path.exists(key_path(A))
        # another server on this machine does not see this server's key
        r = run(main, ["--server", "127.0.0.1:1", "--as", A, "send", B, "x"])
        assert r.exit_code == 1 and "no device key" in r.output, r.output


def test_c6_cli_a_rate_limited_pin_request_says_when_to_try_again(node, tmp_path, monkeypatch):
    with cli_chat(tmp_path, monkeypatch) as (srv, server):
        for _ in range(2):  # register_both asked once: 3 requests per 10 minutes
            assert run(main, [*server, "register", A]).exit_code == 0
            srv.pin(A)
        r = run(main, [*server, "register", A])
        assert r.exit_code == 1, r.output
        assert "rate_limited" in r.output, r.output
        assert re.search(r"try again in \d+ min \d+ s \(at \d\d:\d\d\)", r.output), r.output


def test_c6_cli_too_many_wrong_pins_says_how_to_get_a_new_one(node, tmp_path, monkeypatch):
    with cli_chat(tmp_path, monkeypatch) as (srv, server):
        assert run(main, [*server, "register", A]).exit_code == 0
        pin = srv.pin(A)
        wrong = f"{(int(pin) + 1) % 10**6:06d}"
        outs = [run(main, [*server, "verify", A, wrong]) for _ in range(4)]
        assert "3 attempt(s) left" in outs[0].output, outs[0].output
        assert "too_many_attempts" in outs[-1].output
        assert f"chat-client register {A}" in outs[-1].output


def test_cli_listen_help_says_it_sends_read_receipts():
    r = run(main, ["listen", "--help"])
    assert "read receipt" in r.output and "--no-read" in r.output
    assert "report them read" in run(main, ["--help"]).output


def test_cli_shell_has_help_and_shows_presence_readably(node, tmp_path, monkeypatch):
    with cli_chat(tmp_path, monkeypatch) as (_srv, server):
        r = invoke_shell(server, A, "help\n", f"presence {B} +19995550100\n",
                         "send 12345 hi\n", f"send {B}   \n", "frobnicate\n", "quit\n")
        assert r.exit_code == 0, r.output
        assert "presence +PHONE..." in r.output and "quit" in r.output
        assert f"{B}: last seen" in r.output or f"{B}: offline, never seen" in r.output
        assert "+19995550100: not registered" in r.output
        assert "{" not in r.output, r.output  # no raw dict
        assert "error: expected a phone number in E.164 form" in r.output
        assert "the message is empty" in r.output
        assert "unknown command 'frobnicate'; type help" in r.output


def test_c5_cli_shell_ended_by_another_session_exits_3_in_one_line(node, tmp_path, monkeypatch):
    """The shell's connection is closed (``replaced``) between two prompts: one line, exit
    status 3, no traceback (the rest of the typed input is not read)."""
    with cli_chat(tmp_path, monkeypatch) as (srv, server):
        def another_session():
            srv.client().login(A, load_key(A, server[1]))

        r = invoke_shell(server, A, "help\n", another_session, "poll\n", "send never\n")
        assert r.exit_code == 3, r.output
        assert "replaced" in r.output and "another chat-client is logged in" in r.output
        assert r.exc_info is None or r.exc_info[0] is SystemExit, r.exc_info


def _listen_in_background(server, as_, *args):
    """``listen`` in a process of its own; its exit status and output come as
    ``("listened", exit_code, output)``."""
    me = self_pid()

    def listen():
        r = CliRunner().invoke(main, [*server, "--as", as_, "listen", *args])
        send_msg(me, ("listened", r.exit_code, r.output))

    return spawn_link(listen)


def _wait_online(client, phone):
    while not client.presence([phone]).get(phone, {}).get("online"):
        sleep(0.02)


def test_c5_cli_listen_ended_by_registration_on_another_device_exits_3(
        node, tmp_path, monkeypatch):
    with cli_chat(tmp_path, monkeypatch) as (srv, server):
        _listen_in_background(server, B)
        _wait_online(srv.user("+14155550122"), B)
        c = srv.client()
        c.register(B)
        c.verify(B, srv.pin(B))  # B registered on another device
        _, code, out = assert_receive(("listened", ANY, ANY), timeout=30)
        assert code == 3, out
        assert "registered on another device" in out and "Traceback" not in out


def test_cli_listen_rides_out_a_server_restart(node, tmp_path, monkeypatch):
    """The server goes away under ``listen``: it says so, retries with back-off, and
    shows what comes once the server is back."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    with running_chat(tmp_path) as srv:
        port = srv.port
        server = ["--server", f"{srv.host}:{port}"]
        register_both(srv, server)
        _listen_in_background(server, B, "--count", "1")
        _wait_online(srv.user("+14155550122"), B)
    with running_chat(tmp_path, listen={"port": port}) as srv:  # same data, same port
        # (not through the CLI: one CliRunner at a time swaps the standard streams)
        alice = srv.client()
        alice.login(A, load_key(A, server[1]))
        alice.send(B, "after the restart")
        _, code, out = assert_receive(("listened", ANY, ANY), timeout=60)
    assert code == 0, out
    assert "reconnecting" in out and f"reconnected to {srv.host}:{port}" in out
    assert f"[{A}] after the restart" in out


def test_python_m_chat_on_a_busy_port_says_so_in_one_line(tmp_path):
    """`make run` with the port taken: one line naming host:port and the config key,
    no traceback, exit status 1."""
    import socket
    import subprocess
    import sys

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        res = subprocess.run(
            [sys.executable, "-m", "chat", "--config", "config/dev.yaml", "--port", str(port),
             "--data-dir", str(tmp_path / "data")],
            capture_output=True, text=True, timeout=60,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    finally:
        taken.close()
    assert res.returncode == 1
    assert res.stdout == ""
    assert res.stderr.splitlines() == [
        f"chat server: cannot start: chat listen.host/listen.port: cannot listen on "
        f"127.0.0.1:{port}: Address already in use (another server there? choose another "
        f"listen.port in the config, or set OTP_CHAT__LISTEN__PORT)"], res.stderr


# ---------------------------------------------------------------- photos and files


@contextmanager
def media_cli_chat(tmp_path, monkeypatch):
    """``cli_chat`` with the server's media endpoint on."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.delenv("CHAT_MEDIA_DIR", raising=False)
    with running_chat(tmp_path, media={"host": "127.0.0.1", "port": 0}) as srv:
        server = ["--server", f"{srv.host}:{srv.port}"]
        register_both(srv, server)
        yield srv, server


def _photo(path):
    from PIL import Image

    Image.effect_noise((640, 480), 40).convert("RGB").save(path, "JPEG")
    return path.read_bytes()


def test_cli_send_file_then_listen_saves_the_decrypted_photo(node, tmp_path, monkeypatch):
    with media_cli_chat(tmp_path, monkeypatch) as (_srv, server):
        data = _photo(tmp_path / "beach.jpg")
        r = run(main, [*server, "--as", A, "send-file", B, str(tmp_path / "beach.jpg"),
                       "--caption", "the beach", "--no-progress"])
        assert r.exit_code == 0, r.output
        assert "encrypting and uploading beach.jpg" in r.output
        assert "stored by the server as" in r.output and "sent ✓" in r.output
        pics = tmp_path / "pics"
        r = run(main, [*server, "--as", B, "listen", "--count", "1", "--media-dir", str(pics)])
        assert r.exit_code == 0, r.output
        assert f"[{A}] sent beach.jpg (image/jpeg, " in r.output
        assert ": the beach" in r.output
        assert f"  saved to {pics / 'beach.jpg'}" in r.output
        assert (pics / "beach.jpg").read_bytes() == data


def test_cli_listen_saves_media_beside_the_device_store_by_default(node, tmp_path,
                                                                   monkeypatch):
    from chat.cli import default_media_dir

    with media_cli_chat(tmp_path, monkeypatch) as (_srv, server):
        (tmp_path / "report.pdf").write_bytes(b"%PDF-1.4 not really\n" * 100)
        r = run(main, [*server, "--as", A, "send-file", B, str(tmp_path / "report.pdf")])
        assert r.exit_code == 0, r.output
        r = run(main, [*server, "--as", B, "listen", "--count", "1"])
        assert r.exit_code == 0, r.output
        where = default_media_dir(B, server[1])
        assert os.path.dirname(where) == os.path.dirname(store_path(B, server[1]))
        assert f"  saved to {os.path.join(where, 'report.pdf')}" in r.output
        assert stat.S_IMODE(os.stat(where).st_mode) == 0o700


def test_cli_send_file_shows_a_progress_bar_when_asked(node, tmp_path, monkeypatch):
    with media_cli_chat(tmp_path, monkeypatch) as (_srv, server):
        (tmp_path / "big.bin").write_bytes(os.urandom(2_000_000))
        r = run(main, [*server, "--as", A, "send-file", B, str(tmp_path / "big.bin"),
                       "--progress", "--no-wait"])
        assert r.exit_code == 0, r.output
        assert "big.bin" in r.stderr and "100%" in r.stderr, r.stderr


def test_cli_send_file_refuses_a_decompression_bomb_in_one_line(node, tmp_path, monkeypatch):
    from tests.test_chat_media_client_crypto import png_claiming

    with media_cli_chat(tmp_path, monkeypatch) as (_srv, server):
        (tmp_path / "bomb.png").write_bytes(png_claiming(100_000, 100_000))
        r = run(main, [*server, "--as", A, "send-file", B, str(tmp_path / "bomb.png"),
                       "--no-progress"])
        assert r.exit_code == 1, r.output
        assert "bomb.png was not sent (image_too_large)" in r.output
        assert "Traceback" not in r.output
        assert "stored by the server" not in r.output


def test_cli_listen_does_not_keep_a_tampered_file(node, tmp_path, monkeypatch):
    with media_cli_chat(tmp_path, monkeypatch) as (_srv, server):
        (tmp_path / "a.bin").write_bytes(os.urandom(50_000))
        r = run(main, [*server, "--as", A, "send-file", B, str(tmp_path / "a.bin")])
        assert r.exit_code == 0, r.output
        for blob in (tmp_path / "data" / "media" / "blobs").rglob("*"):
            if blob.is_file():
                raw = bytearray(blob.read_bytes())
                raw[10] ^= 1
                blob.write_bytes(bytes(raw))
        pics = tmp_path / "pics"
        r = run(main, [*server, "--as", B, "listen", "--count", "1", "--media-dir", str(pics)])
        assert r.exit_code == 0, r.output
        assert f"[{A}] sent a.bin" in r.output
        assert "✗ not saved (bad_hash)" in r.output
        assert not pics.exists() or list(pics.iterdir()) == []


def test_cli_send_file_to_a_server_without_media_says_so_in_one_line(node, tmp_path,
                                                                      monkeypatch):
    with cli_chat(tmp_path, monkeypatch) as (_srv, server):  # no media section
        (tmp_path / "a.txt").write_text("hello")
        r = run(main, [*server, "--as", A, "send-file", B, str(tmp_path / "a.txt")])
        assert r.exit_code == 1, r.output
        assert "does not take photos or files (unavailable)" in r.output
        assert "Traceback" not in r.output


def test_cli_send_file_too_large_for_the_server_says_its_limit(node, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    with running_chat(tmp_path, media={"host": "127.0.0.1", "port": 0,
                                       "max_size": 2000}) as srv:
        server = ["--server", f"{srv.host}:{srv.port}"]
        register_both(srv, server)
        (tmp_path / "big.bin").write_bytes(os.urandom(5000))
        r = run(main, [*server, "--as", A, "send-file", B, str(tmp_path / "big.bin")])
        assert r.exit_code == 1, r.output
        assert "too large for the server (media_too_large): it takes at most 2.0 kB" in r.output


def test_cli_shell_saves_received_media_like_listen(node, tmp_path, monkeypatch):
    with media_cli_chat(tmp_path, monkeypatch) as (_srv, server):
        (tmp_path / "a.txt").write_text("the agenda")
        r = run(main, [*server, "--as", A, "send-file", B, str(tmp_path / "a.txt")])
        assert r.exit_code == 0, r.output
        inbox = tmp_path / "inbox"
        monkeypatch.setenv("CHAT_MEDIA_DIR", str(inbox))
        r = invoke_shell(server, B, "poll\n", "quit\n")
        assert r.exit_code == 0, r.output
        assert f"[{A}] sent a.txt (text/plain, 10 bytes)" in r.output
        assert f"  saved to {inbox / 'a.txt'}" in r.output
        assert (inbox / "a.txt").read_text() == "the agenda"
