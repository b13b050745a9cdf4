"""Crash safety of disc tables (D3): SIGKILL a writing node at random moments.

A child OS process (``tables_crash_child.py``) commits transactions and prints
``ack <id>`` after each acknowledged one. The test kills it with SIGKILL at a random
moment (sometimes while it is still opening and recovering its files), then loads the
tables in this node and checks that every acknowledged commit is there and that no
transaction is partly visible. ``OTP_TABLES_CRASH_KILLS`` sets the number of kills
(20 by default; a soak run uses hundreds).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys

import pytest

from otp import tables
from otp.process import sleep

CHILD = os.path.join(os.path.dirname(__file__), "tables_crash_child.py")
KILLS = int(os.environ.get("OTP_TABLES_CRASH_KILLS", "20"))
WRITERS = 16


def _run_and_kill(directory: str, first: int, rng: random.Random) -> tuple[set[int], bool]:
    """Run the child, kill it at a random moment; returns (acked ids, was it ready)."""
    proc = subprocess.Popen(
        [sys.executable, CHILD, directory, str(first), str(WRITERS)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    ready = False
    try:
        if rng.random() < 0.2:
            sleep(rng.uniform(0.0, 0.4))  # fault injection: maybe during start-up/recovery
        else:
            line = proc.stdout.readline()
            assert line == "ready\n", f"child said {line!r}"
            ready = True
            sleep(rng.uniform(0.0, 0.25))  # fault injection: while commits are flowing
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        rest = proc.stdout.read()
        proc.wait()
        proc.stdout.close()
    acked = set()
    for line in rest.splitlines(keepends=True):
        if line.startswith("ack ") and line.endswith("\n"):
            acked.add(int(line[4:]))
        elif line == "ready\n":
            ready = True
    return acked, ready


def _check(directory: str, acked: set[int]) -> int:
    """Load the tables as a restarted node would; check D3; return the largest id."""
    tables.start(directory)
    try:
        if "a" not in tables.table_names():
            assert not acked, "acknowledged commits but no table on disc"
            return -1
        ids = set(tables.dirty_all_keys("a"))
        missing = acked - ids
        assert not missing, f"acknowledged commits lost after kill -9: {sorted(missing)[:10]}"
        bag_keys = set(tables.dirty_all_keys("b"))
        assert bag_keys == ids, "a transaction is partly visible (table a vs bag b)"
        for i in ids:
            assert sorted(r.tag for r in tables.dirty_read("b", i)) == ["x", "y"], i
        return max(ids, default=-1)
    finally:
        tables.stop()


@pytest.mark.timeout(max(120, KILLS * 6))
@pytest.mark.otp(clock="real", timeout=max(300.0, KILLS * 6.0))
def test_d3_acknowledged_commits_survive_kill_9_at_random_moments(node, tmp_path):
    rng = random.Random(os.environ.get("OTP_TABLES_CRASH_SEED") or None)
    directory = str(tmp_path)
    acked_all: set[int] = set()
    first = 0
    rounds_with_acks = 0
    for _ in range(KILLS):
        acked, _ready = _run_and_kill(directory, first, rng)
        acked_all |= acked
        rounds_with_acks += bool(acked)
        top = _check(directory, acked_all)
        first = max(first, top + 1) + WRITERS
    print(f"{KILLS} kills, {rounds_with_acks} rounds with acks, {len(acked_all)} acked commits")
    assert rounds_with_acks >= KILLS // 3, "the child hardly ever got to commit"
    assert acked_all
