"""The store's OS process (``SqliteProcessBackend`` and ``chat.store_child``), driven
directly: batches, answers, a failing batch, the end of input."""

from __future__ import annotations

import pytest

from chat.store import Loaded, SqliteProcessBackend, StoreError

pytestmark = pytest.mark.otp(clock="real")

A, B = "+14155550100", "+14155550111"


def test_a_batch_is_staged_then_committed_and_reads_see_it(node, tmp_path):
    b = SqliteProcessBackend(str(tmp_path / "chat.db"))
    b.open()
    try:
        out = b.run([("w", (("user", A, b"h" * 32, 1),
                            ("out+", A, 1, B, 1, "msg", ("m1", "c1", b"x", 1.5)),
                            ("pout", A, B, 1))),
                     ("r", ("user", A)),
                     ("r", ("load", A))])
        assert out[0] is None
        assert out[1] == (b"h" * 32, 1, False, None)
        loaded = out[2]
        assert isinstance(loaded, Loaded)
        assert loaded.outbox == ((1, B, 1, "msg", ("m1", "c1", b"x", 1.5)),)
        assert loaded.peers == ((B, 1, 0),)
    finally:
        b.close()


def test_a_failing_batch_applies_nothing_and_the_next_one_goes_on(node, tmp_path):
    b = SqliteProcessBackend(str(tmp_path / "chat.db"))
    b.open()
    try:
        with pytest.raises(StoreError, match="unknown store operation"):
            b.run([("w", (("user", A, b"h" * 32, 1), ("nonsense", A)))])
        assert b.run([("r", ("user", A))]) == [None]  # rolled back
        assert not b.dead
        b.run([("w", (("user", B, b"k" * 32, 2),))])
        assert b.run([("r", ("registered", (A, B)))]) == [(B,)]
    finally:
        b.close()


def test_the_store_process_ends_when_closed_and_its_writes_stay(node, tmp_path):
    path = str(tmp_path / "chat.db")
    b = SqliteProcessBackend(path)
    b.open()
    proc = b.proc
    b.run([("w", (("user", A, b"h" * 32, 1),))])
    b.close()
    assert proc.returncode == 0
    again = SqliteProcessBackend(path)
    again.open()
    try:
        assert again.run([("r", ("user", A))]) == [(b"h" * 32, 1, False, None)]
    finally:
        again.close()
