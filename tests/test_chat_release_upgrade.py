"""A real upgrade of the chat, end to end (docs/semantics.md A4, A7, C1): release 0.1.0 (the
repository's chat) runs as a daemon from an unpacked bundle; devices keep sending to
each other through real sockets while ``bin/chat unpack`` + ``bin/chat upgrade 0.2.0``
move the node to 0.2.0 (``tests/chat_v2_fixture.py``: a new field in the user
process's state, migrated by ``code_change``; a new request type ``version``), then
``bin/chat downgrade 0.1.0`` moves it back. No connection drops, every acknowledged
message arrives exactly once and in per-sender order, the state of the same user
processes is migrated both ways (read with ``bin/chat rpc``), and the feature comes and
goes on every connection, those opened under 0.1.0 included (connections handle each
frame through the current version of ``chat.connection``). Then an upgrade whose
``code_change`` fails for one user process midway rolls back every process already
moved, and a third upgrade goes through; ``SESSIONS`` idle user processes are moved
each time too (``CHAT_UPGRADE_SESSIONS``, 10 000 under ``make soak``)."""

from __future__ import annotations

import ast
import os
import queue
import re
import shutil
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from chat.client import ChatError, Client
from tests.chat_v2_fixture import build_bundles, config
from tests.release_helpers import bin_chat, daemon

TOKEN = "t"
DEVICES = ["+14155550101", "+14155550102", "+14155550103", "+14155550104"]
OTHER = "+14155550199"  # logs in on a connection opened under 0.2.0
LATE = "+14155550198"  # its process is first started after the downgrade
MAX_SENDS = 20_000  # per device: the load stops earlier, this bounds it
MAX_SECONDS = 600.0
# idle user processes besides the devices' (make soak: 10 000); the poisoned one is in
# the middle of them
SESSIONS = int(os.environ.get("CHAT_UPGRADE_SESSIONS", "200"))
POISON = "+14155550666"


class Device:
    """A logged-in device that sends to ``to`` in a loop (in its own thread: the client
    is not thread-safe, so asks from the test go through ``ask``) and collects what it
    receives, deduplicated by the client as a device does."""

    def __init__(self, host: str, port: int, phone: str, key: bytes, to: str,
                 progress: threading.Condition) -> None:
        self.phone, self.to = phone, to
        self.client = Client(host, port, timeout=30.0)
        self.client.connect()
        self.client.login(phone, key)
        self.acked: list[str] = []  # mids of the sends the server acknowledged, in order
        self.got: dict[str, list[str]] = {}  # sender -> mids received, in order
        self.asks: queue.Queue[tuple[str, queue.Queue[Any]]] = queue.Queue()
        self.progress = progress
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=f"device {phone}")

    def start(self) -> None:
        self.thread.start()

    def _take(self, events: list[dict[str, Any]]) -> None:
        for ev in events:
            if ev["t"] == "msg":
                self.got.setdefault(ev["from"], []).append(ev["mid"])

    def _run(self) -> None:
        try:
            end = time.monotonic() + MAX_SECONDS
            for i in range(MAX_SENDS):
                if self.stop.is_set() or time.monotonic() > end:
                    break
                r = self.client.send(self.to, f"{self.phone}#{i}")
                self.acked.append(r.mid)
                self._take(self.client.poll(0))
                while not self.asks.empty():
                    t, reply = self.asks.get()
                    try:
                        reply.put(("ok", self.client.request(t)))
                    except ChatError as e:
                        reply.put(("error", e.code))
                with self.progress:
                    self.progress.notify_all()
        except BaseException as e:  # reported by the test
            self.error = e
            with self.progress:
                self.progress.notify_all()

    def ask(self, t: str) -> tuple[str, Any]:
        """Send request ``t`` on this device's own connection, between two sends."""
        reply: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.asks.put((t, reply))
        return reply.get(timeout=60)

    def drain(self, expect: dict[str, int], timeout: float = 60.0) -> None:
        """Poll (after the sending stopped) until ``expect[sender]`` messages arrived."""
        deadline = time.monotonic() + timeout
        while any(len(self.got.get(s, [])) < n for s, n in expect.items()):
            left = deadline - time.monotonic()
            assert left > 0, (f"{self.phone}: still missing messages: got "
                              f"{ {s: len(v) for s, v in self.got.items()} }, want {expect}")
            self._take(self.client.poll(min(left, 1.0)))


def _wait_sends(devices: list[Device], progress: threading.Condition, more: int) -> None:
    """Wait until every device has had ``more`` more sends acknowledged."""
    want = {d.phone: len(d.acked) + more for d in devices}

    def done() -> bool:
        for d in devices:
            assert d.error is None, f"{d.phone}: {d.error!r}"
            assert d.thread.is_alive(), f"{d.phone} stopped sending"
        return all(len(d.acked) >= want[d.phone] for d in devices)

    with progress:
        assert progress.wait_for(done, timeout=120), {d.phone: len(d.acked) for d in devices}


def _rpc(root: Path, expr: str) -> Any:
    res = bin_chat(root, "rpc", expr)
    assert res.returncode == 0, res.stderr
    return ast.literal_eval(res.stdout.strip())


def _versions(root: Path) -> list[list[str]]:
    res = bin_chat(root, "versions")
    assert res.returncode == 0, res.stderr
    return [line.split() for line in res.stdout.splitlines()]


def _user_state(root: Path, phone: str) -> tuple[Any, ...]:
    """The user process's state, read with otp.sys.get_state through bin/chat rpc."""
    return tuple(_rpc(root, (
        "(lambda s: (type(s).__name__, [f for f in type(s).__dataclass_fields__], "
        "getattr(s, 'upgraded_from', '<no field>'), s.phone, s.key_hash is not None, "
        "s.out_next, s.device is not None, s.ctx.idle_stop))"
        f"(otp.sys.get_state(whereis('chat.user.{phone}')))")))


def _on_020(root: Path) -> tuple[int, int, int]:
    """User processes: on 0.2.0's state, on any state, on chat.users' old version."""
    return tuple(_rpc(root, (
        "(lambda ps: (sum(1 for p in ps if hasattr(otp.sys.get_state(p), "
        "'upgraded_from')), len(ps), len(otp.code.processes_running('chat.users', "
        "old=True))))(otp.code.processes_running('chat.users'))")))


def _start_sessions(root: Path, phones: list[str]) -> None:
    res = bin_chat(root, "rpc", (
        f"phones = {phones!r}\n"
        "for i in range(0, len(phones), 1000):\n"
        "    chat.registration.provision(tuple(phones[i:i + 1000]))\n"
        "for p in phones:\n"
        "    chat.users.ensure(p)\n"), timeout=600)
    assert res.returncode == 0, res.stderr


def _pids(root: Path) -> dict[str, str]:
    return _rpc(root, f"{{p: repr(whereis('chat.user.' + p)) for p in {DEVICES!r}}}")


@pytest.mark.timeout(900)
def test_chat_upgrades_and_downgrades_live_while_devices_keep_sending(tmp_path: Path) -> None:
    v1, v2 = build_bundles(tmp_path / "src", config(node_gc=True))
    root = tmp_path / "rel"
    root.mkdir()
    with tarfile.open(v1) as tar:
        tar.extractall(root)
    shutil.copy(v2, root / "releases" / "chat-0.2.0.tar.gz")

    devices: list[Device] = []
    extra: Client | None = None
    progress = threading.Condition()
    with daemon(root):
        try:
            host, port = _rpc(root, "chat.connection.address()")
            admin = Client(host, port)
            admin.connect()
            phones = [*DEVICES, OTHER, LATE]
            keys = dict(zip(phones, admin.provision(TOKEN, phones), strict=True))
            admin.close()
            for i, phone in enumerate(DEVICES):
                devices.append(Device(host, port, phone, keys[phone],
                                      DEVICES[(i + 1) % len(DEVICES)], progress))
            # 0.1.0 does not know the request
            devices[0].client.ping()
            try:
                devices[0].client.request("version")
                raise AssertionError("0.1.0 answered 'version'")
            except ChatError as e:
                assert e.code == "unknown_type"
            idle = [f"+1555{i:07d}" for i in range(SESSIONS)]
            _start_sessions(root, idle[: SESSIONS // 2])
            _start_sessions(root, [POISON])
            _start_sessions(root, idle[SESSIONS // 2:])
            for d in devices:
                d.start()
            _wait_sends(devices, progress, 20)
            users = len(DEVICES) + 1 + SESSIONS
            assert _on_020(root) == (0, users, 0)
            pids = _pids(root)
            before = {p: _user_state(root, p) for p in DEVICES}
            for st in before.values():
                assert st[0] == "_State" and "upgraded_from" not in st[1]
                assert st[2] == "<no field>" and st[4] and st[6] and st[7] == 600.0

            # ------------------------------------------------------------ upgrade
            res = bin_chat(root, "unpack", "0.2.0")
            assert (res.returncode, res.stdout) == (0, "unpacked 0.2.0\n"), res.stderr
            _wait_sends(devices, progress, 10)
            res = bin_chat(root, "upgrade", "0.2.0", timeout=600)
            assert res.returncode == 0, res.stderr
            assert res.stdout.startswith("upgraded to 0.2.0 (permanent) in "), res.stdout
            _wait_sends(devices, progress, 20)
            assert _versions(root) == [["0.1.0", "old"], ["0.2.0", "permanent"]]
            assert _on_020(root) == (users, users, 0)
            assert _rpc(root, "'version' in chat.protocol.REQUESTS")
            # the same processes, migrated, not restarted: old fields kept, new one filled
            assert _pids(root) == pids
            assert _rpc(root, "otp.code.processes_running('chat.users', old=True)") == []
            for p in DEVICES:
                st = _user_state(root, p)
                assert st[0] == "_State" and "upgraded_from" in st[1]
                assert st[2] == "0.1.0"
                assert st[3] == p and st[4] and st[6] and st[7] == 600.0
                assert st[5] > before[p][5]  # it went on sending through the upgrade
            # The devices' connections, opened under 0.1.0, handle every frame through
            # the current version of chat.connection (a fully qualified call): they
            # have the new request now, answered by their migrated 0.2.0 user process.
            kind, r = devices[0].ask("version")
            assert kind == "ok", r
            assert (r["server"], r["user"], r["migrated_from"]) == \
                ("chat/0.2.0", "0.2.0", "0.1.0")
            extra = Client(host, port, timeout=30.0)
            hello = extra.connect()
            assert hello["server"] == "chat/0.2.0"
            extra.login(OTHER, keys[OTHER])
            r = extra.request("version")
            assert (r["server"], r["user"], r["migrated_from"]) == \
                ("chat/0.2.0", "0.2.0", None)
            extra.send(DEVICES[0], "from a 0.2.0 connection")
            other_state = _user_state(root, OTHER)
            assert other_state[2] is None and other_state[7] == 600.0  # started on 0.2.0

            # ------------------------------------------------------------ downgrade
            res = bin_chat(root, "downgrade", "0.1.0", timeout=600)
            assert (res.returncode, res.stdout) == (0, "downgraded to 0.1.0\n"), res.stderr
            _wait_sends(devices, progress, 20)
            users += 1  # OTHER's, started on 0.2.0
            assert _on_020(root) == (0, users, 0)
            assert _versions(root)[0] == ["0.1.0", "permanent"]
            assert not _rpc(root, "'version' in chat.protocol.REQUESTS")
            assert _pids(root) == pids
            assert _rpc(root, "otp.code.processes_running('chat.users', old=True)") == []
            for p in DEVICES:
                st = _user_state(root, p)
                assert st[0] == "_State" and st[1] == before[p][1]  # the 0.1.0 shape
                assert st[2] == "<no field>"
                assert st[3] == p and st[4] and st[6] and st[7] == 600.0
            # every connection moved back to 0.1.0's code with the node
            assert devices[0].ask("version") == ("error", "unknown_type")
            try:
                extra.request("version")
                raise AssertionError("'version' answered after the downgrade")
            except ChatError as e:
                assert e.code == "unknown_type"
            extra.send(DEVICES[0], "still here after the downgrade")
            fresh = Client(host, port)
            assert fresh.connect()["server"] == "chat/0.1.0"
            fresh.close()
            # A user process started after the downgrade (here by a message forwarded
            # to it) runs 0.1.0 with the application's settings.
            assert _rpc(root, f"whereis('chat.user.{LATE}') is None")
            extra.send(LATE, "wake up")
            late = _user_state(root, LATE)
            assert late[2] == "<no field>" and late[7] == 600.0
            extra.bye()  # ends on 0.1.0's code, in a loop of 0.2.0: no crash (see the log)
            users += 1  # LATE's

            # ------------------------------------------- an upgrade failing midway
            (root / "poison-code-change").write_text("")
            res = bin_chat(root, "upgrade", "0.2.0", timeout=600)
            assert res.returncode == 1
            assert "failed at instruction 1 ['update', 'chat.users']" in res.stderr
            assert f"cannot migrate {POISON}" in res.stderr
            assert "rolled back, 0.1.0 is still running" in res.stderr
            assert "rollback problems" not in res.stderr
            _wait_sends(devices, progress, 20)
            # every user process is back on 0.1.0's code and state, none restarted
            assert _on_020(root) == (0, users, 0)
            assert _pids(root) == pids
            for p in DEVICES:
                assert _user_state(root, p)[1] == before[p][1]
            assert _versions(root)[0] == ["0.1.0", "permanent"]
            assert devices[0].ask("version") == ("error", "unknown_type")
            status = bin_chat(root, "status").stdout
            assert "chat 0.1.0 running" in status and "applications  chat 0.1.0" in status
            assert "last upgrade   0.1.0 -> 0.2.0: rolled back" in status
            assert "rolled back: update chat.users" in status
            (root / "poison-code-change").unlink()

            # ------------------------------------------------------------ upgrade again
            res = bin_chat(root, "upgrade", "0.2.0", timeout=600)
            assert res.returncode == 0, res.stderr
            _wait_sends(devices, progress, 20)
            assert _on_020(root) == (users, users, 0)
            assert _pids(root) == pids
            assert devices[0].ask("version")[0] == "ok"

            # ------------------------------------------------------------ the load
            for d in devices:
                d.stop.set()
            for d in devices:
                d.thread.join(60)
                assert not d.thread.is_alive() and d.error is None, d.error
            for i, d in enumerate(devices):
                sender = devices[i - 1]
                expect = {sender.phone: len(sender.acked)}
                if d.phone == DEVICES[0]:
                    expect[OTHER] = 2
                d.drain(expect)
                # C1: every acknowledged message exactly once, in per-sender order
                assert d.got[sender.phone] == sender.acked
                # no connection dropped: the client never had to reconnect
                assert d.client.reconnects == 0
            assert extra.reconnects == 0
            assert sum(len(d.acked) for d in devices) >= 4 * 90
            # nothing crashed on the way (no process was restarted, nothing purged): the
            # only reports above INFO are the release handler's about the failed upgrade
            log = (root / "run" / "chat.log").read_text()
            reports = re.findall(r"=(\w+) REPORT=+[^\n]*\n([^\n]*)", log)
            assert reports, log[-2000:]
            bad = [r for r in reports
                   if r[0] != "INFO" and not r[1].startswith("otp.release_handler")]
            assert bad == [], log[-5000:]
        finally:
            for d in devices:
                d.stop.set()
            for d in devices:
                if d.thread.is_alive():
                    d.thread.join(30)
                d.client.close()
            if extra is not None:
                extra.close()
    # stopped (SIGTERM) while running 0.2.0, booted as 0.1.0: the log names 0.2.0
    log = (root / "run" / "chat.log").read_text()
    assert "chat 0.2.0: stopping" in log and "chat 0.2.0 stopped" in log, log[-2000:]
    assert "chat 0.1.0 stopped" not in log
