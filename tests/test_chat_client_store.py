"""What a device remembers of what it received: ``chat.client.MemorySeen`` (the
default) and ``chat.client.DeviceStore`` (on disk, the command-line client's)."""

from __future__ import annotations

import os
import stat

import pytest

from chat.client import DeviceStore, MemorySeen


def msg(mid: str, body: str = "x", id: int = 1) -> dict:
    return {"t": "msg", "id": id, "mid": mid, "from": "+1", "cmid": "c", "body": body,
            "ts": 1.0}


def receipt(kind: str, mid: str) -> dict:
    return {"t": "receipt", "id": 7, "type": kind, "mid": mid, "peer": "+1", "ts": 1.0}


def test_memory_seen_drops_duplicates_by_mid_and_receipts_by_type_and_mid():
    seen = MemorySeen()
    evs = [msg("a:1"), receipt("sent", "a:1"), receipt("delivered", "a:1")]
    assert seen.take(evs) == evs
    # pushed again in another session (other push ids): all duplicates
    assert seen.take([msg("a:1", id=9), receipt("sent", "a:1"), msg("a:2")]) == [msg("a:2")]
    assert seen.take([msg("a:3"), msg("a:3")]) == [msg("a:3")]  # twice in one batch


def test_memory_seen_forgets_beyond_its_window():
    """Bounded: a client that runs for months does not grow without bound."""
    seen = MemorySeen(keep=3)
    seen.take([msg(f"a:{i}") for i in range(5)])
    assert msg("a:4") in seen and msg("a:2") in seen
    assert msg("a:1") not in seen and msg("a:0") not in seen


def test_device_store_remembers_across_restarts_and_keeps_unshown_events(tmp_path):
    path = str(tmp_path / "dev" / "1555.db")
    with DeviceStore(path) as store:
        assert store.take([msg("a:1", "one"), msg("a:2", "two")]) == [msg("a:1", "one"),
                                                                     msg("a:2", "two")]
        store.mark_shown([msg("a:1")])
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with DeviceStore(path) as store:  # a new run of the client
        assert store.take([msg("a:1", "one", id=5), msg("a:3", "three")]) == [
            msg("a:3", "three")]
        assert [ev["body"] for ev in store.unshown()] == ["two", "three"]
        store.mark_shown(store.unshown())
        assert store.unshown() == []


def test_device_store_forgets_old_shown_events_but_never_unshown_ones(tmp_path):
    with DeviceStore(str(tmp_path / "d.db"), keep=10) as store:
        store.take([msg("old:unshown")])
        for i in range(1100):  # a clean-up runs every 1000 events taken
            ev = msg(f"a:{i}")
            store.take([ev])
            store.mark_shown([ev])
        assert msg("a:0") not in store  # shown, and far older than the newest 10
        assert msg("a:1099") in store
        assert [ev["mid"] for ev in store.unshown()] == ["old:unshown"]


def test_device_store_keeps_bytes_bodies(tmp_path):
    with DeviceStore(str(tmp_path / "d.db")) as store:
        store.take([msg("a:1", b"\x00\xff")])  # type: ignore[arg-type]
        assert store.unshown()[0]["body"] == b"\x00\xff"


def test_poll_hands_out_what_it_took_even_when_its_ack_fails():
    """Taken events are the device's (pushed again, ``seen`` drops them): an ack that
    fails (the connection broke, no auto-reconnect) must not lose them; the next poll
    hands them out."""
    import socket

    from chat.client import ChatClosed, Client
    from chat.protocol import FrameReader, encode

    c = Client("127.0.0.1", 1, auto_reconnect=False)
    c.sock, server = socket.socketpair()
    c.server_info = {"version": 2}
    server.sendall(encode(msg("a:1", "hello", id=3)))
    server.close()  # gone before the device acknowledges
    with pytest.raises(ChatClosed):
        c.poll(1.0, ack_wait=False)  # takes the message, then its ack fails
    c.sock, server = socket.socketpair()  # a new connection (as after a reconnect)
    c.reader = FrameReader(c.max_frame)
    assert [ev["body"] for ev in c.poll(0.0)] == ["hello"]
    assert c.poll(0.0) == []
    c.close()
    server.close()


def receipts_shown(store, evs):
    from chat.cli import present

    return [line.strip() for _, line in present(store, evs)]


def test_device_store_receipts_show_each_message_once_at_its_latest_state(tmp_path):
    """Receipts come late and out of order (``read`` before ``sent`` at a login): one
    line per message, its latest state, and nothing older than what was shown."""
    with DeviceStore(str(tmp_path / "d.db")) as store:
        evs = [receipt("read", "a:1"), receipt("delivered", "a:1"), receipt("sent", "a:2"),
               msg("b:1", "hi"), receipt("read", "a:3")]
        taken = store.take(evs)
        assert receipts_shown(store, taken) == [
            "✓✓ read by +1 (message a:1)", "✓ sent to +1 (message a:2)", "[+1] hi",
            "✓✓ read by +1 (message a:3)"]
        later = store.take([receipt("sent", "a:1"), receipt("delivered", "a:2"),
                            receipt("sent", "a:3")])
        assert len(later) == 3  # new to the store, but only one says something new
        assert receipts_shown(store, later) == ["✓✓ delivered to +1 (message a:2)"]
        assert store.unshown() == []


def test_normalise_phone_accepts_what_people_type_and_refuses_the_rest():
    from chat.client import ChatError, normalise_phone

    assert normalise_phone("14155550100") == "+14155550100"
    assert normalise_phone(" +1 (415) 555-0100 ") == "+14155550100"
    for bad in ("12345", "+0415555010", "phone", ""):
        with pytest.raises(ChatError, match=r"E\.164") as e:
            normalise_phone(bad)
        assert e.value.code == "invalid_phone"


def test_a_failed_reconnect_raises_one_error_not_a_chain():
    """``poll`` on a broken connection whose reconnect fails: one ``ChatClosed`` saying
    where it could not reconnect, not raised while handling the first (no "During
    handling of the above exception" traceback)."""
    import socket

    from chat.client import ChatClosed, Client

    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()  # nothing listens there now
    c = Client("127.0.0.1", port, reconnect_attempts=1)
    c.sock, server = socket.socketpair()
    c.phone, c.key = "+14155550100", b"k" * 32
    server.close()
    with pytest.raises(ChatClosed, match=f"could not reconnect to 127.0.0.1:{port}") as e:
        c.poll(1.0)
    assert e.value.__context__ is None
    c.close()
