"""The media store's deletion rules on the mock clock (docs/protocol.md, "Media"):
retention, the grace of unreferenced uploads, acks, and recovery at start."""

from __future__ import annotations

import hashlib
import os
from typing import Any

from chat import media_store
from chat.media_store import Access, Ack, Put, Reference, Sweep, blob_path
from otp import gen_server
from otp.process import sleep, unlink

ALICE, BOB, CAROL = "+14155550100", "+14155550111", "+14155550122"
DAY = 86400.0


def start(root: str, retention: float = 30 * DAY, grace: float = 3600.0,
          interval: float = 60.0) -> Any:
    pid = media_store.start_link(root, retention, grace, interval, False)
    unlink(pid)
    return pid


def stop() -> None:
    gen_server.stop(media_store.NAME)


def put(root: str, data: bytes, uploader: str = ALICE) -> str:
    mid = hashlib.sha256(data).hexdigest()
    tmp = os.path.join(root, "tmp", f"up-{mid[:8]}")
    with open(tmp, "wb") as f:
        f.write(data)
    assert media_store.call(Put(tmp, mid, len(data), uploader)) in ("new", "dup")
    return mid


def test_media_blob_is_deleted_after_retention_though_never_acknowledged(node, tmp_path):
    root = str(tmp_path / "media")
    start(root, retention=30 * DAY, grace=3600.0)
    mid = put(root, b"photo")
    assert media_store.call(Reference(mid, 5, ALICE, BOB)) is None
    sleep(29 * DAY)  # node clock: the sweep runs every 60 s meanwhile
    assert os.path.exists(blob_path(root, mid))  # referenced: the grace does not apply
    assert media_store.call(Access(mid, BOB)) == 5
    sleep(DAY + 120)
    assert not os.path.exists(blob_path(root, mid))
    assert media_store.call(Access(mid, BOB)) == "unknown"
    stop()


def test_media_upload_nobody_references_is_deleted_after_the_grace(node, tmp_path):
    root = str(tmp_path / "media")
    start(root, grace=3600.0, interval=10.0)
    mid = put(root, b"never sent")
    sleep(3500)
    assert os.path.exists(blob_path(root, mid))
    sleep(200)
    assert not os.path.exists(blob_path(root, mid))
    assert media_store.call(Access(mid, ALICE)) == "unknown"
    stop()


def test_media_blob_is_deleted_when_the_last_recipient_acknowledges(node, tmp_path):
    root = str(tmp_path / "media")
    start(root)
    mid = put(root, b"for two")
    for to in (BOB, CAROL):
        assert media_store.call(Reference(mid, 7, ALICE, to)) is None
    assert media_store.call(Access(mid, CAROL)) == 7
    assert media_store.call(Access(mid, "+14155550199")) == "forbidden"
    assert media_store.call(Ack(ALICE, (mid,))) == ()  # the uploader is no recipient
    assert media_store.call(Ack(BOB, (mid,))) == ()
    assert media_store.call(Ack(BOB, (mid,))) == ()  # twice: once
    assert os.path.exists(blob_path(root, mid))
    assert media_store.call(Ack(CAROL, (mid,))) == (mid,)
    assert not os.path.exists(blob_path(root, mid))
    stop()


def test_media_records_and_schedule_survive_a_restart(node, tmp_path):
    root = str(tmp_path / "media")
    start(root, grace=3600.0)
    kept = put(root, b"referenced")
    assert media_store.call(Reference(kept, 10, ALICE, BOB)) is None
    loose = put(root, b"unreferenced")
    stop()
    start(root, grace=3600.0)
    assert media_store.call(Access(kept, BOB)) == 10
    sleep(3700)
    assert media_store.call(Sweep()) == ()  # (the periodic sweep had it already)
    assert not os.path.exists(blob_path(root, loose))
    assert os.path.exists(blob_path(root, kept))
    stop()


def test_media_start_removes_temp_files_and_blobs_without_records(node, tmp_path):
    """What a crash can leave: a temp file (mid-upload), a blob renamed into place
    whose record was not written yet, a record whose blob was being deleted."""
    root = str(tmp_path / "media")
    start(root)
    ok = put(root, b"whole")
    gone = put(root, b"being deleted")
    stop()
    os.unlink(blob_path(root, gone))  # (the delete's file step ran, not the row's)
    with open(os.path.join(root, "tmp", "up-partial"), "wb") as f:
        f.write(b"half an upl")
    orphan = hashlib.sha256(b"renamed, no record").hexdigest()
    os.makedirs(os.path.dirname(blob_path(root, orphan)), exist_ok=True)
    with open(blob_path(root, orphan), "wb") as f:
        f.write(b"renamed, no record")
    start(root)
    assert os.listdir(os.path.join(root, "tmp")) == []
    assert not os.path.exists(blob_path(root, orphan))
    assert media_store.call(Access(orphan, ALICE)) == "unknown"
    assert media_store.call(Access(gone, ALICE)) == "unknown"
    assert media_store.call(Access(ok, ALICE)) == 5
    stop()
