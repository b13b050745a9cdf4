"""otp.tables disc copies: durability, group commit, loading, recovery, supervision (D3, D4)."""

from __future__ import annotations

import logging
import os
import random
import shutil

import pytest

from otp import tables
from otp.process import Down, exit, monitor, receive, send, spawn_monitor, whereis
from otp.process import self as self_pid
from otp.tables import _disc
from otp.testing import assert_receive, wait_all_blocked
from otp.threads import OSEvent

pytestmark = pytest.mark.otp(clock="real")

DB = _disc.DB_NAME


def _records(name):
    return sorted(tuple(r) for r in tables.dirty_select(name, lambda r: True))


def _make(directory, n=0, name="acc", **kw):
    tables.start(directory)
    tables.create_table(name, attributes=("id", "owner", "n"), copies="disc", **kw)
    for i in range(n):
        tables.transaction(tables.write, name, (i, f"o{i % 3}", i))


def _fill(directory, n):
    """One disc table of ``n`` records written in one transaction."""
    _make(directory)
    tables.transaction(
        lambda: [tables.write("acc", (i, f"o{i % 3}", i)) for i in range(n)] and None
    )


def _wait_normal(count):
    for _ in range(count):
        down = receive(Down)
        assert down.reason == "normal", down


def test_d3_disc_tables_load_back_after_a_restart(node, tmp_path):
    _make(tmp_path, 5, index=["owner"])
    tables.create_table("log", attributes=("seq", "text"), type="ordered_set", copies="disc")
    tables.create_table("tags", attributes=("k", "tag"), type="bag",
                        copies={"disc": [node.name]})
    for s in (3, 1, 2):
        tables.dirty_write("log", (s, f"line {s}"))
    tables.dirty_write("tags", (1, "a"))
    tables.dirty_write("tags", (1, "b"))
    tables.dirty_delete_object("tags", (1, "a"))
    tables.dirty_delete("acc", 4)
    tables.transaction(lambda: tables.write("acc", (0, "zed", 100)))
    before = {t: _records(t) for t in ("acc", "log", "tags")}
    tables.stop()
    with pytest.raises(tables.NoSuchTable):
        tables.dirty_read("acc", 0)
    tables.start(tmp_path)
    tables.wait_for_tables(["acc", "log", "tags"], 5.0)
    assert {t: _records(t) for t in ("acc", "log", "tags")} == before
    assert tables.dirty_all_keys("log") == [1, 2, 3]
    assert [r.id for r in tables.dirty_index_read("acc", "zed", "owner")] == [0]
    assert tables.table_info("acc").storage == "disc"
    tables.dirty_write("acc", (9, "new", 9))  # row ids continue without clashes
    tables.stop()
    tables.start(tmp_path)
    assert len(_records("acc")) == 5
    tables.stop()


def test_d3_schema_changes_persist(node, tmp_path):
    _make(tmp_path, 3)
    tables.add_index("acc", "owner")
    tables.create_table("gone", attributes=("k", "v"), copies="disc")
    tables.delete_table("gone")
    tables.stop()
    tables.start(tmp_path)
    assert tables.table_info("acc").index == ("owner",)
    assert "gone" not in tables.table_names()
    tables.stop()


def test_d4_wait_for_tables_waits_for_loading_and_names_the_missing(node, tmp_path):
    _make(tmp_path, 2)
    tables.stop()
    tables.start(tmp_path)
    tables.wait_for_tables(["acc"], 5.0)
    with pytest.raises(tables.TableTimeout) as info:
        tables.wait_for_tables(["acc", "never"], 0.05)
    assert info.value.missing == ("never",)
    # A table created meanwhile ends the wait.
    me = self_pid()
    _pid, ref = spawn_monitor(lambda: send(me, ("waited", tables.wait_for_tables("late", 5.0))))
    wait_all_blocked()
    tables.create_table("late", attributes=("k", "v"))
    assert_receive(("waited", None))
    assert assert_receive(Down).ref == ref
    tables.stop()


def test_disc_copies_need_the_disc_owner(node):
    with pytest.raises(tables.TableError, match="start"):
        tables.create_table("d", attributes=("k", "v"), copies="disc")


def test_d3_concurrent_commits_share_one_fsync(node, tmp_path):
    _make(tmp_path)
    base = tables.system_info()
    writers, each = 40, 5

    def writer(w):
        for i in range(each):
            tables.transaction(tables.write, "acc", (w * 100 + i, "w", i))

    for w in range(writers):
        spawn_monitor(writer, w)
    _wait_normal(writers)
    info = tables.system_info()
    commits = info["commits"] - base["commits"]
    batches = info["group_commits"] - base["group_commits"]
    assert commits == writers * each
    assert batches < commits / 4  # group commit: many commits per fsync
    assert len(_records("acc")) == writers * each
    tables.stop()


def _blocking_writes(monkeypatch):
    """Make the disc thread wait for a go before each write; returns (entered, go)."""
    entered, go = OSEvent(), OSEvent()
    real = _disc.DiscFile.write_batch

    def write_batch(self, ops, batch, epoch=None):
        entered.set()
        go.wait(10)
        return real(self, ops, batch, epoch)

    monkeypatch.setattr(_disc.DiscFile, "write_batch", write_batch)
    return entered, go


def test_d3_a_commit_is_acknowledged_and_visible_only_after_it_is_on_disc(
    node, tmp_path, monkeypatch
):
    _make(tmp_path)
    entered, go = _blocking_writes(monkeypatch)
    tables.subscribe("acc")
    me = self_pid()
    _pid, ref = spawn_monitor(
        lambda: send(me, ("acked", tables.transaction(tables.write, "acc", (1, "a", 1))))
    )
    while not entered.is_set():
        receive(timeout=0.001, default=None)
    assert tables.dirty_read("acc", 1) == []  # written to the log, not yet fsync'd
    assert receive(timeout=0.01, default=None) is None  # no ack, no event
    go.set()
    assert assert_receive(tables.TableEvent).record == (1, "a", 1)
    assert_receive(("acked", None))
    assert tables.dirty_read("acc", 1) == [(1, "a", 1)]
    assert assert_receive(Down).ref == ref
    tables.stop()


def test_d3_a_commit_that_cannot_be_written_fails_and_changes_nothing(
    node, tmp_path, monkeypatch
):
    _make(tmp_path, 2)
    real = _disc.DiscFile.write_batch
    calls = []

    def failing(self, ops, batch, epoch=None):
        calls.append(1)
        if len(calls) == 1:
            raise OSError(28, "No space left on device")
        return real(self, ops, batch, epoch)

    monkeypatch.setattr(_disc.DiscFile, "write_batch", failing)
    with pytest.raises(tables.CommitFailed, match="No space"):
        tables.transaction(lambda: (tables.write("acc", (5, "x", 5)),
                                    tables.delete("acc", 0)))
    assert [r[0] for r in _records("acc")] == [0, 1]
    tables.transaction(tables.write, "acc", (5, "y", 5))  # locks were released
    tables.dirty_delete("acc", 0)
    tables.stop()
    tables.start(tmp_path)
    assert _records("acc") == [(1, "o1", 1), (5, "y", 5)]
    tables.stop()


def test_disc_owner_crash_is_recovered_by_its_supervisor(node, tmp_path):
    _make(tmp_path, 3)
    owner = whereis("otp_tables_disc")
    ref = monitor(owner)
    exit(owner, "kill")
    assert receive(Down).ref == ref
    tables.transaction(tables.write, "acc", (10, "after", 10))  # waits for the restart
    assert whereis("otp_tables_disc") not in (None, owner)
    assert len(_records("acc")) == 4
    tables.stop()
    tables.start(tmp_path)
    assert len(_records("acc")) == 4
    tables.stop()


def test_d3_owner_killed_during_a_group_commit_still_acknowledges_it(
    node, tmp_path, monkeypatch
):
    _make(tmp_path, 1)
    entered, go = _blocking_writes(monkeypatch)
    me = self_pid()
    _pid, wref = spawn_monitor(
        lambda: send(me, ("acked", tables.transaction(tables.write, "acc", (7, "k", 7))))
    )
    while not entered.is_set():
        receive(timeout=0.001, default=None)
    owner = whereis("otp_tables_disc")
    ref = monitor(owner)
    exit(owner, "kill")  # the thread goes on writing; the new owner must find out
    assert receive(Down).ref == ref
    go.set()
    assert_receive(("acked", None))
    assert assert_receive(Down).ref == wref
    assert (7, "k", 7) in _records("acc")
    tables.stop()
    tables.start(tmp_path)
    assert (7, "k", 7) in _records("acc")
    tables.stop()


def test_d3_owner_killed_before_its_group_was_written_writes_it_once(
    node, tmp_path, monkeypatch
):
    import sqlite3

    _make(tmp_path, 1)
    entered, go = _blocking_writes(monkeypatch)  # the thread waits before writing
    me = self_pid()
    _pid, wref = spawn_monitor(
        lambda: send(me, ("acked", tables.transaction(tables.write, "acc", (7, "k", 7))))
    )
    while not entered.is_set():
        receive(timeout=0.001, default=None)
    owner = whereis("otp_tables_disc")
    ref = monitor(owner)
    exit(owner, "kill")
    assert receive(Down).ref == ref
    go.set()  # the old thread now finds the file reopened and writes nothing
    assert_receive(("acked", None))
    assert assert_receive(Down).ref == wref
    assert receive(timeout=0.05, default=None) is None  # acknowledged once
    tables.stop()
    conn = sqlite3.connect(tmp_path / DB)
    rows = conn.execute("SELECT count(*) FROM t1").fetchone()[0]
    conn.close()
    assert rows == 2  # keys 0 and 7, each stored once
    tables.start(tmp_path)
    assert _records("acc") == [(0, "o0", 0), (7, "k", 7)]
    tables.stop()


# --- damaged files on start --------------------------------------------------------------


def _crash_image(src, dst):
    """Copy the database and its log as a kill -9 would leave them."""
    os.makedirs(dst)
    for suffix in ("", "-wal"):
        if os.path.exists(os.path.join(src, DB + suffix)):
            shutil.copyfile(os.path.join(src, DB + suffix), os.path.join(dst, DB + suffix))


def _image_with_commits(tmp_path, n):
    live = tmp_path / "live"
    _make(live, 0)
    for i in range(n):
        tables.transaction(tables.write, "acc", (i, "o", i))
    image = tmp_path / "image"
    _crash_image(live, image)
    tables.stop()
    wal = os.path.join(image, DB + "-wal")
    good, size, commits = _disc.scan_wal(wal)
    assert good == size and commits >= n
    return image, wal


def _tear_tail(f, size):
    f.truncate(size - 100)  # the last commit's frame is torn


def _corrupt_tail(f, size):
    f.seek(size - 300)
    f.write(b"\xde\xad\xbe\xef" * 16)  # garbage inside the last frame


@pytest.mark.parametrize("damage", [_tear_tail, _corrupt_tail], ids=["torn", "corrupt"])
def test_d3_a_damaged_log_tail_is_cut_back_to_the_last_whole_commit(
    node, tmp_path, caplog, damage
):
    image, wal = _image_with_commits(tmp_path, 8)
    size = os.path.getsize(wal)
    with open(wal, "r+b") as f:
        damage(f, size)
    caplog.set_level(logging.WARNING, logger="otp.tables")
    tables.start(image)
    assert [r[0] for r in _records("acc")] == list(range(7))
    assert "cut back to the last whole commit" in caplog.text
    tables.stop()


def test_d3_a_log_with_a_garbage_header_is_ignored_and_the_node_starts(node, tmp_path, caplog):
    image, wal = _image_with_commits(tmp_path, 3)
    with open(wal, "r+b") as f:
        f.write(b"\x00garbage" * 4)  # the WAL header: nothing in the log is trusted
    caplog.set_level(logging.WARNING, logger="otp.tables")
    tables.start(image)
    assert "cut back" in caplog.text
    # Only what the database file itself holds is left (maybe nothing): no garbage.
    if "acc" in tables.table_names():
        assert all(r == (r[0], "o", r[0]) for r in _records("acc"))
    tables.stop()


def test_d3_a_file_that_is_not_a_database_is_moved_aside_and_the_node_starts(
    node, tmp_path, caplog
):
    tmp_path.joinpath(DB).write_bytes(b"this is not a database, just garbage" * 200)
    caplog.set_level(logging.WARNING, logger="otp.tables")
    tables.start(tmp_path)
    assert tables.table_names() == []
    assert "damaged" in caplog.text
    assert tmp_path.joinpath(DB + ".corrupt-0").exists()
    _make_after = tables.create_table("acc", attributes=("id", "v"), copies="disc")
    tables.dirty_write("acc", _make_after(1, 1))
    tables.stop()


def test_d3_a_truncated_database_file_salvages_what_is_readable(node, tmp_path, caplog):
    _fill(tmp_path, 300)
    tables.stop()  # checkpoints the log into the database file
    path = tmp_path / DB
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    caplog.set_level(logging.WARNING, logger="otp.tables")
    tables.start(tmp_path)  # never a crash
    assert "damaged" in caplog.text or "salvaged" in caplog.text
    if "acc" in tables.table_names():
        got = _records("acc")
        assert len(got) <= 300
        assert all(r == (r[0], f"o{r[0] % 3}", r[0]) for r in got)  # no garbage records
    tables.stop()


def test_d3_garbage_in_the_middle_of_the_database_loses_only_the_damaged_rows(
    node, tmp_path, caplog
):
    _fill(tmp_path, 3000)
    tables.stop()
    path = tmp_path / DB
    pages = path.stat().st_size // 4096
    with open(path, "r+b") as f:
        f.seek((pages // 2) * 4096 + 100)  # inside one leaf page of the table
        f.write(random.Random(7).randbytes(3000))
    caplog.set_level(logging.WARNING, logger="otp.tables")
    tables.start(tmp_path)
    assert "damaged" in caplog.text and "salvaged" in caplog.text
    got = _records("acc")
    assert 2000 < len(got) < 3000, len(got)  # one page of rows lost, the rest salvaged
    assert all(r == (r[0], f"o{r[0] % 3}", r[0]) for r in got)
    tables.dirty_write("acc", (5000, "new", 0))  # and the table is usable
    tables.stop()


def test_otp_tables_runs_as_an_application_with_its_directory_from_the_env(node, tmp_path):
    from otp import application

    application.load(tables.APP)
    application.set_env("otp_tables", "directory", str(tmp_path))
    assert application.start(tables.APP) == ["otp_tables"]
    assert "otp_tables" in [a.name for a in application.which_applications()]
    tables.wait_for_tables([], 1.0)
    tables.create_table("t", attributes=("k", "v"), copies="disc")
    tables.dirty_write("t", (1, 1))
    assert (tmp_path / DB).exists()
    with pytest.raises(tables.TableError, match="already started"):
        tables.start(tmp_path)
    application.stop("otp_tables")
    assert "t" not in tables.table_names()
    tables.start()  # the env still names the directory
    assert tables.dirty_read("t", 1) == [(1, 1)]
    tables.stop()
    tables.stop()  # stopping twice is fine


def test_dirty_update_counter_on_disc_is_atomic_and_durable(node, tmp_path):
    tables.start(tmp_path)
    tables.create_table("hits", attributes=("page", "n"), copies="disc")
    seen = []

    def bump():
        for _ in range(10):
            seen.append(tables.dirty_update_counter("hits", "home", 1))

    for _ in range(20):
        spawn_monitor(bump)
    _wait_normal(20)
    assert sorted(seen) == list(range(1, 201))  # each increment saw its own result
    assert tables.dirty_read("hits", "home") == [("home", 200)]
    with pytest.raises(tables.CommitFailed, match="not an int"):
        tables.dirty_write("hits", ("text", "x"))
        tables.dirty_update_counter("hits", "text", 1)
    tables.stop()
    tables.start(tmp_path)
    assert tables.dirty_read("hits", "home") == [("home", 200)]
    tables.stop()


def test_clear_table_on_disc_is_durable(node, tmp_path):
    _make(tmp_path, 4)
    tables.clear_table("acc")
    assert _records("acc") == []
    tables.stop()
    tables.start(tmp_path)
    assert _records("acc") == []
    tables.stop()


@pytest.mark.otp(clock="mock")
def test_disc_tables_work_under_the_mock_clock(node, tmp_path):
    # Nothing on the commit path waits with a timeout, so the mock clock's jumps (the
    # hub is idle while the thread writes) cannot fail a commit or the start.
    tables.start(tmp_path)
    tables.create_table("t", attributes=("k", "v"), copies="disc")
    for i in range(20):
        spawn_monitor(lambda i=i: tables.transaction(tables.write, "t", (i, i)))
    _wait_normal(20)
    tables.stop()
    tables.start(tmp_path)
    assert len(tables.dirty_all_keys("t")) == 20
    tables.stop()


def test_a_replicated_commit_record_reaches_the_disc_copy(node, tmp_path):
    _make(tmp_path)
    rec = tables.CommitRecord(1, (("acc", 1, (1, "r", 1)), ("nope", 1, None)), False)
    tables.apply_replicated(rec)
    assert type(tables.dirty_read("acc", 1)[0]) is tables.record_class("acc")
    tables.stop()
    tables.start(tmp_path)
    assert _records("acc") == [(1, "r", 1)]
    tables.stop()


def test_start_fails_with_a_clear_error_when_the_directory_is_unusable(node, tmp_path, caplog):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the directory should be")
    caplog.set_level(logging.CRITICAL)  # the owner's crash reports are expected here
    with pytest.raises(tables.TableError, match="failed to start"):
        tables.start(blocker)
    from otp import application

    assert "otp_tables" not in [a.name for a in application.which_applications()]
    tables.start(tmp_path / "ok")  # a good directory works afterwards
    tables.stop()


def test_d3_stop_finishes_or_fails_every_queued_commit_and_loses_no_acknowledged_one(
    node, tmp_path
):
    _make(tmp_path)
    me = self_pid()

    def writer(w):
        acked = []
        i = w * 10_000
        while True:
            try:
                tables.transaction(tables.write, "acc", (i, "w", w))
            except (tables.CommitFailed, tables.NoSuchTable):
                break
            acked.append(i)
            i += 1
        send(me, ("acked", tuple(acked)))

    for w in range(20):
        spawn_monitor(writer, w)
    receive(timeout=0.02, default=None)  # let commits flow (fault injection timing)
    tables.stop()  # with groups in flight and commits queued
    acked = set()
    for _ in range(20):
        acked.update(assert_receive(("acked", tuple))[1])
    _wait_normal(20)
    tables.start(tmp_path)
    stored = {r[0] for r in _records("acc")}
    assert acked <= stored  # every acknowledged commit made it
    tables.stop()


def test_otp_tables_application_is_found_by_its_name(node, tmp_path):
    """``application.start("otp_tables")`` finds the spec shipped in otp.tables."""
    from otp import application

    application.load("otp_tables")
    application.set_env("otp_tables", "directory", str(tmp_path))
    assert application.start("otp_tables") == ["otp_tables"]
    application.stop("otp_tables")
