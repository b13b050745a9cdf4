"""P13 as a property: for any mailbox and any sequence of patterns, ``receive(pattern,
timeout=0)`` takes exactly the first matching message and leaves the rest in order.

The model is a plain list: the first index whose message matches, removed; or nothing.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otp.process import ANY, flush, receive, self, send, sleep, spawn

_NOTHING = object()

atoms = st.one_of(st.integers(0, 3), st.sampled_from(["a", "b", "c"]))
messages = st.one_of(
    atoms,
    st.tuples(st.sampled_from(["tag", "other"]), atoms),
    st.tuples(st.sampled_from(["tag", "other"]), atoms, atoms),
)

# (description, pattern as given to receive, the model's own predicate)
patterns = st.one_of(
    atoms.map(lambda v: (f"literal {v!r}", v, lambda m, v=v: m == v)),
    st.sampled_from([int, str, tuple]).map(
        lambda c: (f"class {c.__name__}", c, lambda m, c=c: isinstance(m, c))
    ),
    atoms.map(
        lambda v: (
            f"('tag', {v!r})",
            ("tag", v),
            lambda m, v=v: isinstance(m, tuple) and len(m) == 2 and m[0] == "tag" and m[1] == v,
        )
    ),
    st.just(
        (
            "(ANY, ANY, int)",
            (ANY, ANY, int),
            lambda m: isinstance(m, tuple) and len(m) == 3 and isinstance(m[2], int),
        )
    ),
    st.integers(0, 3).map(
        lambda n: (
            f"predicate == {n} or tuple ending in {n}",
            lambda m, n=n: m == n or (isinstance(m, tuple) and m[-1] == n),
            lambda m, n=n: m == n or (isinstance(m, tuple) and m[-1] == n),
        )
    ),
    st.just(("None (anything)", None, lambda m: True)),
)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(mailbox=st.lists(messages, max_size=12), pats=st.lists(patterns, min_size=1, max_size=6))
def test_p13_receive_takes_the_first_match_and_keeps_the_rest_in_order(node, mailbox, pats):
    flush()
    for m in mailbox:
        send(self(), m)
    model = list(mailbox)
    for _desc, pattern, pred in pats:
        got = receive(pattern, timeout=0, default=_NOTHING)
        index = next((i for i, m in enumerate(model) if pred(m)), None)
        if index is None:
            assert got is _NOTHING
        else:
            assert got is model[index]
            del model[index]
    assert flush() == model


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    queued=st.lists(messages, max_size=6),
    arriving=st.lists(messages, max_size=6),
    pat=patterns,
)
def test_p13_blocked_receive_resumes_its_scan_and_takes_the_first_match(
    node, queued, arriving, pat
):
    """Messages that arrive one by one while the receiver is blocked: the scan resumes
    where it stopped, and the result is still the first match of the whole mailbox."""
    flush()
    _desc, pattern, pred = pat
    me = self()
    for m in queued:
        send(me, m)

    def trickle():
        for m in arriving:
            sleep(0.001)  # one arrival per wake-up of the receiver
            send(me, m)

    spawn(trickle)
    model = queued + arriving
    got = receive(pattern, timeout=1, default=_NOTHING)
    index = next((i for i, m in enumerate(model) if pred(m)), None)
    if index is None:
        assert got is _NOTHING
    else:
        assert got is model[index]
        del model[index]
    sleep(1)  # mock time: the trickle has long finished (its sends are all in)
    assert flush() == model
