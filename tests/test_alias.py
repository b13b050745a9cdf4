"""Process aliases (OTP 24): docs/semantics.md P18.

An alias receives messages only while active; it is deactivated by ``unalias``, by its
first message when created so (``alias(reply=True)``), or when its owner ends; a
message to an inactive alias is dropped.
"""

from __future__ import annotations

import pytest

from otp.errors import BadArg, NotInProcess
from otp.process import (
    Down,
    Ref,
    alias,
    flush,
    make_ref,
    monitor,
    receive,
    send,
    spawn,
    unalias,
)
from otp.process import self as self_pid
from otp.testing import assert_receive, refute_receive, wait_all_blocked


def test_p18_a_message_to_an_active_alias_arrives_as_an_ordinary_message(node):
    a = alias()
    send(a, ("hello", 1))
    send(self_pid(), "plain")
    assert receive(("hello", int)) == ("hello", 1)  # a receive pattern matches it
    assert flush() == ["plain"]
    unalias(a)


def test_p18_an_alias_receives_until_unalias_then_drops(node):
    a = alias()
    send(a, "one")
    send(a, "two")  # explicit_unalias: any number of messages while active
    assert unalias(a) is True
    send(a, "three")
    assert flush() == ["one", "two"]  # delivered ones stay; the later one is dropped
    assert unalias(a) is False  # already inactive


def test_p18_a_reply_alias_is_deactivated_by_its_first_message(node):
    a = alias(reply=True)
    send(a, "first")
    send(a, "second")
    assert flush() == ["first"]
    assert unalias(a) is False


def test_p18_others_send_to_an_alias_and_the_owner_gets_it(node):
    a = alias()
    spawn(lambda: send(a, "from a peer"))
    assert_receive("from a peer")
    unalias(a)
    spawn(lambda: send(a, "too late"))
    wait_all_blocked()
    refute_receive()


def test_p18_an_alias_dies_with_its_owner(node):
    me = self_pid()

    def owner():
        send(me, ("alias", alias()))
        receive("stop")
        send(me, "owner got a second message")

    pid = spawn(owner)
    _, a = assert_receive(("alias", Ref))
    ref = monitor(pid)
    send(a, "stop")  # reaches the owner through its alias
    assert_receive("owner got a second message")
    assert receive(Down).ref == ref
    send(a, "after the owner's end")  # dropped silently, no error
    wait_all_blocked()
    refute_receive()


def test_p18_only_the_owner_can_unalias(node):
    a = alias()
    me = self_pid()
    spawn(lambda: send(me, ("unalias by another", unalias(a))))
    assert_receive(("unalias by another", False))
    send(a, "still active")
    assert_receive("still active")
    assert unalias(a) is True


def test_p18_a_ref_that_is_not_an_alias_receives_nothing(node):
    send(make_ref(), "to a plain ref")
    m = monitor(spawn(lambda: None))
    assert receive(Down).ref == m
    send(m, "to a monitor ref")
    refute_receive()


def test_p18_alias_and_unalias_check_their_arguments(node):
    with pytest.raises(BadArg, match="reply=True or False"):
        alias(reply="yes")  # type: ignore[arg-type]
    with pytest.raises(BadArg, match="expects an alias Ref"):
        unalias("not a ref")  # type: ignore[arg-type]


def test_p18_alias_needs_a_process():
    with pytest.raises(NotInProcess):
        alias()
