"""otp.sar: samples from /proc, the hub and gc; the table parsed back; the file; the plot."""

from __future__ import annotations

import gc
import json

import pytest

from otp import sar, stats
from otp.process import exit as exit_proc
from otp.process import processes, receive, send, sleep, spawn
from otp.process import self as self_pid
from otp.testing import wait_all_blocked


def reap():
    sar.stop()
    stats.stop()
    for pid in processes():
        if pid != self_pid():
            exit_proc(pid, "kill")
    wait_all_blocked()


def sink():
    while True:
        receive()


def test_samples_every_interval_and_keeps_the_last_n(node, tmp_path):
    path = tmp_path / "sar.jsonl"
    stats.start_link(1.0)
    sar.start_link(1.0, keep=3.0, file=str(path))
    pid = spawn(sink)
    for i in range(10):
        send(pid, i)
        gc.collect(0)
    sleep(5.5)
    rows = sar.samples()
    assert len(rows) == 3  # keep=3 s at 1 s
    last = rows[-1]
    assert last.processes >= 3 and last.queued == 0
    assert last.rss is None or last.rss > 0
    assert last.fds is None or last.fds > 0
    assert 0.0 <= last.hub_util <= 1.0
    on_file = sar.read_file(str(path))
    assert len(on_file) == 5 and on_file[-1] == last
    assert json.loads(path.read_text().splitlines()[0])["processes"] >= 1
    reap()


def test_gc_collections_and_pauses_are_counted(node):
    sar.start_link(1.0)
    for _ in range(3):
        gc.collect(2)
    sleep(1.0)
    rows = sar.samples()
    assert rows[-1].gc2 >= 3 and rows[-1].gc_ms >= 0 and rows[-1].gc_max_ms >= 0
    fig = sar.system_figures()
    assert fig.gc_pause > 0 and fig.gc_detail == "generation 2"
    assert sar.system_figures().gc_pause == 0  # taken: reset for the next look
    reap()


def test_table_is_parsed_back(node):
    sar.start_link(1.0)
    sleep(3.0)
    rows = sar.samples(last=2.0)
    assert len(rows) == 2
    text = sar.format_table(rows)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["time", "%usr", "%sys"]
    parsed = sar.parse_table(text)
    assert len(parsed) == 2
    for p, s in zip(parsed, rows, strict=False):
        assert p["procs"] == s.processes and p["queued"] == s.queued
        assert p["gc0"] == s.gc0
        if s.fds is not None:
            assert p["fds"] == s.fds
        assert p["%hub"] == pytest.approx(s.hub_util * 100, abs=0.051)
    reap()


def test_missing_figures_print_as_a_dash():
    row = sar.Sample(*([0.0] + [None] * 11 + [1, 0, 0, 0.0, 0.0, 0, None, 0.0,
                                            0, 0, 0, 0.0, 0.0, 0]))
    parsed = sar.parse_table(sar.format_table([row]))
    assert parsed[0]["%usr"] is None and parsed[0]["procs"] == 1


def test_plot_draws_a_png(node, tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib not installed: pip install 'otpy[plot]'")
    sar.start_link(1.0)
    sleep(3.0)
    out = sar.plot(sar.samples(), str(tmp_path / "sar.png"))
    data = open(out, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    reap()
