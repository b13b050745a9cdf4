"""Fault-injection points on the message path, for tests (no cost when unused).

The server calls ``point(step, phone)`` (behind ``if hooks:``) at each step of the
message path; a test installs a hook for a step with ``inject(step, fn)`` and the hook
runs *inside the process at that step* — typically ``lambda phone: exit(self(), "kill")``
to crash it exactly there. Steps, in the order of the path:

======================  ==========================================  =======================
step                    where                                       process
======================  ==========================================  =======================
``send_stored``         the message is in the sender's outbox       sender's user process
``deliver_received``    a forward arrived, nothing stored yet       recipient's user process
``inbox_stored``        in the inbox (stored, or pushed unstored),  recipient's user process
                        not yet acknowledged
``delivered_received``  the ack arrived, the outbox not yet cleaned sender's user process
                        (once per item it acknowledges)
``pushed``              a push reached the connection (maybe not    a connection process
                        written to the device yet)
``ack_received``        the device's ack arrived, nothing deleted   recipient's user process
======================  ==========================================  =======================
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["STEPS", "clear", "hooks", "inject", "point"]

STEPS = ("send_stored", "deliver_received", "inbox_stored", "delivered_received", "pushed",
         "ack_received")

#: step -> hook; empty unless a test installed one. The hot path tests it before calling
#: ``point`` (``if faults.hooks: faults.point(...)``): one dict test, no call, when unused.
hooks: dict[str, Callable[[str], None]] = {}


def point(step: str, phone: str) -> None:
    if hooks:
        fn = hooks.get(step)
        if fn is not None:
            fn(phone)


def inject(step: str, fn: Callable[[str], None]) -> None:
    if step not in STEPS:
        raise ValueError(f"expected a step among {STEPS}, got {step!r}")
    hooks[step] = fn


def clear() -> None:
    hooks.clear()
