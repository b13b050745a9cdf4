"""otp.tables transactions: isolation, wait-die, retries, abort, nesting, dead holders (D2)."""

from __future__ import annotations

import pytest

from otp import tables
from otp.process import (
    Down,
    exit,
    monitor,
    receive,
    send,
    sleep,
    spawn,
    spawn_monitor,
)
from otp.process import self as self_pid
from otp.testing import assert_receive, refute_receive, wait_all_blocked


@pytest.fixture
def counter(node):
    tables.create_table("counter", attributes=("name", "n"))
    tables.dirty_write("counter", ("x", 0))
    tables.dirty_write("counter", ("y", 0))
    return "counter"


def _value(key="x"):
    return tables.dirty_read("counter", key)[0].n


def _wait_down(ref):
    down = assert_receive(Down)
    assert down.ref == ref, down
    return down.reason


def _incr(key="x", pause=0.0):
    [r] = tables.read("counter", key)
    if pause:
        sleep(pause)  # yield while holding the read lock, so that others interleave
    tables.write("counter", r._replace(n=r.n + 1))
    return r.n + 1


# --- isolation -------------------------------------------------------------------------


def test_d2_two_transactions_on_the_same_key_serialize(counter):
    me = self_pid()
    attempts = {"first": 0, "second": 0}

    def tx_body(name):
        attempts[name] += 1
        [r] = tables.read("counter", "x")
        if attempts[name] == 1:  # only the first run waits for the go (test scaffolding)
            send(me, ("read", name))
            receive("go")
        tables.write("counter", r._replace(n=r.n + 1))

    p1, _r1 = spawn_monitor(lambda: tables.transaction(tx_body, "first"))
    assert_receive(("read", "first"))
    p2, _r2 = spawn_monitor(lambda: tables.transaction(tx_body, "second"))
    assert_receive(("read", "second"))  # both hold the read lock on x
    send(p1, "go")
    send(p2, "go")
    reasons = {_wait_down_any(), _wait_down_any()}
    assert reasons == {"normal"}
    assert _value() == 2  # no lost update: the two increments serialized
    assert attempts["second"] == 2  # the younger one died and ran again
    assert attempts["first"] == 1


def _wait_down_any():
    return assert_receive(Down).reason


def test_d2_many_concurrent_increments_never_lose_an_update(counter):
    n = 30
    refs = [spawn_monitor(tables.transaction, _incr, "x", 0.001)[1] for _ in range(n)]
    for _ in refs:
        assert _wait_down_any() == "normal"
    assert _value() == n


def test_d2_a_reader_does_not_see_uncommitted_writes(counter):
    me = self_pid()

    def writer():
        tables.write("counter", ("x", 99))
        send(me, "written")
        receive("commit")

    pid, ref = spawn_monitor(tables.transaction, writer)
    assert_receive("written")
    assert _value() == 0  # a dirty read sees the committed value only
    send(pid, "commit")
    assert _wait_down(ref) == "normal"
    assert _value() == 99


def test_d2_transactional_read_waits_for_the_writer_to_commit(counter):
    me = self_pid()

    def writer():
        tables.write("counter", ("x", 5))
        send(me, "written")
        receive("commit")

    wpid, wref = spawn_monitor(tables.transaction, writer)
    assert_receive("written")
    # The writer is older: our (younger) read dies, waits for the release, runs again.
    _rpid, rref = spawn_monitor(lambda: send(me, ("saw", tables.transaction(_value_tx))))
    wait_all_blocked()
    refute_receive(("saw", 5), timeout=0)
    send(wpid, "commit")
    assert _wait_down(wref) == "normal"
    assert assert_receive(("saw", int))[1] == 5
    assert _wait_down(rref) == "normal"


def _value_tx():
    return tables.read("counter", "x")[0].n


# --- deadlock prevention, retries --------------------------------------------------------


def test_d2_opposite_lock_order_does_not_deadlock(counter):
    me = self_pid()
    runs = {"ab": 0, "ba": 0}

    def body(first, second, name):
        runs[name] += 1
        tables.read("counter", first, lock="write")
        if runs[name] == 1:
            send(me, ("locked", name))
            receive("go")
        tables.read("counter", second, lock="write")
        for k in (first, second):
            [r] = tables.read("counter", k)
            tables.write("counter", r._replace(n=r.n + 1))

    p1, _ = spawn_monitor(tables.transaction, body, "x", "y", "ab")
    assert_receive(("locked", "ab"))
    p2, _ = spawn_monitor(tables.transaction, body, "y", "x", "ba")
    assert_receive(("locked", "ba"))
    send(p1, "go")
    send(p2, "go")
    assert {_wait_down_any(), _wait_down_any()} == {"normal"}
    assert (_value("x"), _value("y")) == (2, 2)
    assert runs == {"ab": 1, "ba": 2}  # the younger one was restarted, the older waited


def test_d2_retries_bound_the_restarts(counter):
    me = self_pid()

    def holder():
        tables.read("counter", "x", lock="write")
        send(me, "holding")
        receive("release")

    hpid, href = spawn_monitor(tables.transaction, holder)
    assert_receive("holding")
    # The holder is older than us: wait-die makes us die; with retries=0, we give up.
    with pytest.raises(tables.TransactionAborted) as info:
        tables.transaction(_incr, retries=0)
    assert info.value.reason == "retries"
    send(hpid, "release")
    assert _wait_down(href) == "normal"
    assert _value() == 0


def test_d2_a_restarted_transaction_runs_its_function_again(counter):
    me = self_pid()
    runs = []

    def holder():
        tables.read("counter", "x", lock="write")
        send(me, "holding")
        receive("release")
        tables.write("counter", ("x", 10))

    hpid, _href = spawn_monitor(tables.transaction, holder)
    assert_receive("holding")

    def body():
        runs.append(1)
        return _incr()

    _cpid, _cref = spawn_monitor(lambda: send(me, ("done", tables.transaction(body))))
    wait_all_blocked()
    send(hpid, "release")
    assert assert_receive(("done", int))[1] == 11
    assert len(runs) == 2
    for _ in range(2):
        assert _wait_down_any() == "normal"


# --- abort and exceptions ----------------------------------------------------------------


def test_d2_abort_rolls_back_every_write_of_the_transaction(counter):
    tables.create_table("other", attributes=("k", "v"), type="bag")
    tables.dirty_write("other", ("a", 1))

    def body():
        tables.write("counter", ("x", 100))
        tables.delete("counter", "y")
        tables.write("other", ("a", 2))
        tables.delete_object("other", ("a", 1))
        tables.write("counter", ("z", 7))
        tables.abort(("changed", "my mind"))

    with pytest.raises(tables.TransactionAborted) as info:
        tables.transaction(body)
    assert info.value.reason == ("changed", "my mind")
    assert _value("x") == 0 and _value("y") == 0
    assert tables.dirty_read("counter", "z") == []
    assert [tuple(r) for r in tables.dirty_read("other", "a")] == [("a", 1)]
    assert not tables.is_transaction()


def test_d2_an_exception_in_the_function_rolls_back_and_propagates(counter):
    def body():
        tables.write("counter", ("x", 100))
        raise KeyError("boom")

    with pytest.raises(KeyError):
        tables.transaction(body)
    assert _value() == 0
    # ...and its locks are gone: another transaction takes the key at once.
    assert tables.transaction(_incr) == 1


def test_d2_abort_outside_a_transaction_is_an_error(counter):
    with pytest.raises(tables.NotInTransaction):
        tables.abort("why")
    with pytest.raises(tables.NotInTransaction):
        tables.read("counter", "x")
    with pytest.raises(tables.NotInTransaction):
        tables.write("counter", ("x", 1))


def test_d2_transaction_returns_the_function_result_and_commits(counter):
    assert tables.transaction(_incr) == 1
    assert tables.transaction(lambda a, b: a + b, 2, 3) == 5
    assert _value() == 1


# --- nested transactions -----------------------------------------------------------------


def test_d2_nested_transaction_sees_outer_writes_and_joins_them(counter):
    def inner():
        assert tables.read("counter", "x")[0].n == 1
        tables.write("counter", ("y", 5))
        return "inner"

    def outer():
        tables.write("counter", ("x", 1))
        assert tables.transaction(inner) == "inner"
        assert tables.read("counter", "y")[0].n == 5
        assert tables.is_transaction()

    tables.transaction(outer)
    assert (_value("x"), _value("y")) == (1, 5)


def test_d2_nested_abort_discards_only_the_inner_writes(counter):
    def inner():
        tables.write("counter", ("y", 5))
        tables.abort("inner failed")

    def outer():
        tables.write("counter", ("x", 1))
        with pytest.raises(tables.TransactionAborted):
            tables.transaction(inner)
        assert tables.read("counter", "y")[0].n == 0
        return "carried on"

    assert tables.transaction(outer) == "carried on"
    assert (_value("x"), _value("y")) == (1, 0)


def test_d2_outer_abort_discards_the_committed_inner_writes(counter):
    def outer():
        tables.transaction(lambda: tables.write("counter", ("y", 5)))
        tables.abort("no")

    with pytest.raises(tables.TransactionAborted):
        tables.transaction(outer)
    assert _value("y") == 0


# --- dirty operations and locks -----------------------------------------------------------


def test_d2_dirty_operations_skip_locks(counter):
    me = self_pid()

    def holder():
        tables.read("counter", "x", lock="write")
        tables.lock_table("counter", "write")
        send(me, "holding")
        receive("release")

    hpid, href = spawn_monitor(tables.transaction, holder)
    assert_receive("holding")
    tables.dirty_write("counter", ("x", 42))  # does not wait for the lock
    assert tables.dirty_read("counter", "x")[0].n == 42
    tables.dirty_delete("counter", "y")
    assert tables.dirty_read("counter", "y") == []
    send(hpid, "release")
    assert _wait_down(href) == "normal"


def test_d2_a_process_that_dies_holding_locks_releases_them(counter):
    me = self_pid()

    def holder():
        tables.write("counter", ("x", 1000))
        send(me, "holding")
        receive()  # blocks forever, holding the write lock

    hpid, href = spawn_monitor(tables.transaction, holder)
    assert_receive("holding")
    # A waiter queued behind the dead holder gets the lock too.
    _wpid, wref = spawn_monitor(lambda: send(me, ("waiter", tables.transaction(_incr))))
    wait_all_blocked()
    exit(hpid, "kill")
    assert _wait_down(href) == "killed"
    assert assert_receive(("waiter", int))[1] == 1  # the holder's write never committed
    assert _wait_down(wref) == "normal"
    assert tables.transaction(_incr) == 2  # and nothing is left locked


def test_d2_table_lock_excludes_key_writers_until_released(counter):
    me = self_pid()

    def scanner():
        keys = tables.all_keys("counter")  # a table read lock
        send(me, ("scanned", tuple(keys)))
        receive("done")

    spid, _sref = spawn_monitor(tables.transaction, scanner)
    assert_receive(("scanned", ("x", "y")))
    _wpid, _wref = spawn_monitor(lambda: tables.transaction(_incr))
    wait_all_blocked()
    assert _value() == 0  # the writer waits for the table lock
    send(spid, "done")
    assert {_wait_down_any(), _wait_down_any()} == {"normal"}
    assert _value() == 1


def test_d2_locks_of_a_finished_transaction_are_all_released(counter, node):
    from otp.tables._registry import registry

    tables.transaction(lambda: (_incr("x"), tables.all_keys("counter"), _incr("y")))
    reg = registry()
    for tl in reg.locks.values():
        assert tl.writer is None and not tl.readers and not tl.keys
    assert not reg.txs
    ref = monitor(spawn(lambda: None))
    _wait_down(ref)


def test_d2_locks_of_a_holder_that_died_without_unwinding_are_released_by_the_waiter(
    counter,
):
    # White-box: a transaction record whose process is already dead (as if its
    # greenlet never ran its finally) holds the write lock on x and is older than us.
    from otp.tables._registry import registry
    from otp.tables._tx import Tx, acquire

    pid, ref = spawn_monitor(lambda: None)
    assert _wait_down(ref) == "normal"
    reg = registry()
    ghost = Tx(0, pid, None)
    acquire(reg, ghost, reg.tables["counter"], "x", True)
    assert tables.transaction(_incr) == 1  # we waited on it, saw it dead, released it
    assert ghost.held == []


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_d2_concurrent_transfers_keep_the_total_and_never_deadlock(node, seed):
    import random

    tables.create_table("bank", attributes=("id", "balance"))
    n_accounts, workers, transfers = 6, 8, 15
    for i in range(n_accounts):
        tables.dirty_write("bank", (i, 100))
    audits = []

    def transfer(src, dst, amount):
        [a] = tables.read("bank", src)
        sleep(0.001)  # yield with the read lock held: others interleave and conflict
        [b] = tables.read("bank", dst, lock="write")
        if a.balance < amount:
            tables.abort("insufficient")
        tables.write("bank", a._replace(balance=a.balance - amount))
        tables.write("bank", b._replace(balance=b.balance + amount))

    def audit():
        # A table read lock: the sum seen inside a transaction is always the total.
        total = tables.foldl("bank", lambda r, acc: acc + r.balance, 0)
        sleep(0.001)
        return total

    def worker(w):
        rng = random.Random(seed * 100 + w)
        for i in range(transfers):
            if i % 5 == 4:
                audits.append(tables.transaction(audit))
                continue
            src, dst = rng.sample(range(n_accounts), 2)
            try:
                tables.transaction(transfer, src, dst, rng.randint(1, 80))
            except tables.TransactionAborted as e:
                assert e.reason == "insufficient"

    for w in range(workers):
        spawn_monitor(worker, w)
    for _ in range(workers):
        assert _wait_down_any() == "normal"
    balances = [r.balance for r in tables.dirty_select("bank", lambda r: True)]
    assert sum(balances) == 100 * n_accounts
    assert min(balances) >= 0
    assert audits and set(audits) == {100 * n_accounts}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_d2_contention_with_table_locks_nesting_and_kills_leaves_no_lock_behind(node, seed):
    import random

    from otp.tables._registry import registry

    tables.create_table("bank", attributes=("id", "balance"))
    n, workers, transfers = 4, 12, 20
    for i in range(n):
        tables.dirty_write("bank", (i, 100))

    def transfer(src, dst, amount, kind):
        if kind == 0:
            tables.lock_table("bank", "write")
        [a] = tables.read("bank", src)
        sleep(0.001)
        [b] = tables.read("bank", dst, lock="write")
        if a.balance < amount:
            tables.abort("insufficient")
        tables.write("bank", a._replace(balance=a.balance - amount))
        tables.write("bank", b._replace(balance=b.balance + amount))
        if kind == 1:
            tables.transaction(lambda: tables.read("bank", src, lock="write"))

    def worker(w):
        rng = random.Random(seed * 1000 + w)
        for _ in range(transfers):
            src, dst = rng.sample(range(n), 2)
            try:
                tables.transaction(transfer, src, dst, rng.randint(1, 80), rng.randint(0, 9))
            except tables.TransactionAborted:
                pass

    pids = [spawn_monitor(worker, w)[0] for w in range(workers)]
    rng = random.Random(seed)
    for victim in pids[:2]:
        sleep(rng.uniform(0, 0.01))  # fault injection: kill mid-transaction
        exit(victim, "kill")
    reasons = [assert_receive(Down).reason for _ in range(workers)]
    assert set(reasons) <= {"normal", "killed"}
    assert sum(r.balance for r in tables.dirty_select("bank", lambda r: True)) == 100 * n
    reg = registry()
    assert not reg.txs
    for tl in reg.locks.values():
        assert tl.writer is None and not tl.readers and not tl.keys and not tl.wwait
