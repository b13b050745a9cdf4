"""Operations on a running chat release: a stalled process named by the queue alarm,
``bin/chat top`` driven in a pseudo-terminal, ``bin/chat sar`` parsed back, ``alarms``
and ``status``."""

from __future__ import annotations

import json
import socket
import tarfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from otp import release, sar
from tests.release_helpers import CONFIG, Pty, bin_chat, daemon, env, write_project

# The queue alarm at 200 messages (cleared below 160), drain-time alarm off.
OPS = """\
otp_ops:
  alarms: {queue_len: 200, drain_time: null}
  sar: {interval: 1.0, keep: 120, file: var/sar.jsonl}
  metrics: {enabled: true, port: 0}
"""

STALL = (
    "import otp.process as P\n"
    "def _stalled():\n"
    "    P.receive('resume')\n"
    "    while True:\n"
    "        P.receive()\n"
    "        P.sleep(0.004)\n"
    "pid = P.spawn(_stalled)\n"
    "P.register('stalled', pid)\n"
    "for i in range(1000):\n"
    "    P.send(pid, i)\n"
)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("ops-release")
    tarball = release.build(write_project(base / "src", config=CONFIG + OPS), base / "_build")
    out = base / "rel"
    out.mkdir()
    with tarfile.open(tarball) as tar:
        tar.extractall(out)
    return out


@pytest.fixture(scope="module")
def node(root: Path) -> Iterator[int]:
    with daemon(root) as pid:
        yield pid


def _alarms(root: Path) -> list[dict]:
    res = bin_chat(root, "alarms", "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def _wait(cond, what: str, timeout: float = 30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = cond()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {timeout} s")


def test_a_stalled_process_raises_the_queue_alarm_and_clears_it_when_it_resumes(
        root: Path, node: int) -> None:
    res = bin_chat(root, "rpc", f"exec({STALL!r}) or repr(whereis('stalled'))")
    assert res.returncode == 0, res.stderr
    pid = res.stdout.strip().strip("'")

    def queue_alarm():
        return [a for a in _alarms(root) if a["id"][0] == "message_queue"]

    raised = _wait(queue_alarm, "the queue alarm")
    assert len(raised) == 1
    d = raised[0]["description"]
    assert d["pid"] == pid and d["name"] == "stalled" and d["queue"] == 1000
    assert d["out_rate"] == 0 and d["drain_time"] is None  # stalled: it never drains
    assert d["node"].startswith("chat@")
    status = bin_chat(root, "status").stdout
    assert "ALARM         message_queue stalled: 1000 queued" in status, status
    assert "drains in never" in status
    # It resumes: ~250 messages a second. The projection follows the queue and the rate.
    res = bin_chat(root, "rpc", "__import__('otp.process').process.send('stalled', 'resume')")
    assert res.returncode == 0, res.stderr

    row = _wait(lambda: _projected(root), "a finite drain projection")
    assert row["drain_time"] == pytest.approx(
        row["queue"] / (row["out_now"] - row["in_now"]), rel=1e-6)
    _wait(lambda: not queue_alarm(), "the alarm's clearing")
    assert "ALARM" not in bin_chat(root, "status").stdout


def _projected(root: Path) -> dict | None:
    expr = ("(lambda r: None if r is None else {'queue': r.queue, 'out_now': r.out_now, "
            "'in_now': r.in_now, 'drain_time': r.drain_time})"
            "(__import__('otp.stats').stats.process('stalled'))")
    res = bin_chat(root, "rpc", expr)
    if res.returncode != 0 or res.stdout.strip() == "None":
        return None
    row = eval(res.stdout.strip(), {"inf": float("inf")})
    if row["queue"] and row["out_now"] > row["in_now"] and row["drain_time"] != float("inf"):
        return row
    return None


def test_sar_prints_columns_parsed_back_and_plots(root: Path, node: int, tmp_path: Path) -> None:
    def enough():
        res = bin_chat(root, "sar", "--last", "1m")
        return res.stdout if res.stdout.count("\n") >= 3 else None

    text = _wait(enough, "three samples")
    rows = sar.parse_table(text)
    assert rows and rows[-1]["procs"] > 10 and rows[-1]["%hub"] is not None
    assert text.splitlines()[0].split()[:3] == ["time", "%usr", "%sys"]
    res = bin_chat(root, "sar", "--json", "--last", "10s")
    samples = [json.loads(line) for line in res.stdout.splitlines()]
    assert 1 <= len(samples) <= 11 and samples[-1]["processes"] > 10
    on_file = sar.read_file(str(root / "var" / "sar.jsonl"))
    assert len(on_file) >= 3
    res = bin_chat(root, "sar", "--file", str(root / "var" / "sar.jsonl"), "--last", "1h")
    assert res.returncode == 0 and len(sar.parse_table(res.stdout)) == len(
        sar.read_file(str(root / "var" / "sar.jsonl")))
    pytest.importorskip("matplotlib", reason="matplotlib not installed: pip install 'otpy[plot]'")
    png = tmp_path / "sar.png"
    res = bin_chat(root, "sar", "--plot", str(png))
    assert res.returncode == 0, res.stderr
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_top_in_a_pseudo_terminal_renders_sorts_inspects_and_quits(
        root: Path, node: int) -> None:
    term = Pty([str(root / "bin" / "chat"), "top", "--interval", "0.5"],
               env={**env(root.parent), "COLUMNS": "160", "LINES": "50", "TERM": "xterm"},
               cwd=str(root.parent))
    try:
        term.expect(b"otp top")
        term.expect(b"processes by queue length")
        term.send(b"d")
        term.expect(b"processes by drain time")
        term.send(b"o")
        term.expect(b"processes by dequeue rate")
        term.send(b"\r")
        term.expect(b"inspect")
        term.expect(b"initial call")
        term.send(b"b")
        term.expect(b"processes by dequeue rate")
        term.send(b"q")
        assert term.wait() == 0
    finally:
        term.close()


def test_top_once_by_drain_time_prints_the_summary(root: Path, node: int) -> None:
    res = bin_chat(root, "top", "--once", "--sort", "drain", "-n", "5")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].startswith("node chat@") and "processes" in lines[0]
    assert any(line.startswith("processes by drain time") for line in lines)
    assert any("MSGQ" in line and "DRAIN" in line for line in lines)


def test_the_metrics_endpoint_has_the_node_and_the_chat_figures(root: Path, node: int) -> None:
    res = bin_chat(root, "rpc", "__import__('otp.metrics').metrics.address()")
    host, port = eval(res.stdout.strip())  # a tuple's repr
    assert host == "127.0.0.1"
    res = bin_chat(root, "rpc", "chat.connection.address()")
    chat_host, chat_port = eval(res.stdout.strip())
    socket.create_connection((chat_host, chat_port), timeout=10).close()

    def scrape() -> str:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as r:
            return r.read().decode()

    def counted() -> str | None:
        text = scrape()
        return text if "chat_connections_total 0.0" not in text else None

    text = _wait(counted, "the connection's count")
    for name in ("otp_processes ", "otp_messages_queued ", "otp_hub_utilization ",
                 "otp_alarms ", "chat_logins_total ", "chat_messages_in_total ",
                 "chat_store_commit_seconds_bucket", 'otp_message_rate{direction="out"'):
        assert name in text, name
