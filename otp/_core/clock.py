"""Node clocks: the real monotonic clock and the mock clock of the test kit.

Every timeout, timer, restart window and deadline in ``otp`` reads the node's clock,
never ``time`` directly, so that tests can run "3 restarts in 5 s" in microseconds.

A clock tells the time, decides *when* the node's timer service may fire the next
deadline, and what the node's idling means for time (the kernel asks, never checks
which clock it has):

- ``RealClock`` arms one gevent timer for the earliest deadline; idling means nothing.
- ``MockClock`` (presented by ``otp.testing``) never sleeps. When the node is idle it
  first fires the timers already due (``settle``); then, with ``autojump`` on (the
  default) and every process blocked, it jumps straight to the next deadline (``idle``).
  ``advance(seconds)`` moves it by hand.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from otp._core.node import Node

__all__ = ["Clock", "MockClock", "RealClock"]


class Clock(Protocol):
    """What a node needs from a clock."""

    def now(self) -> float:
        """Seconds on a monotonic scale (only differences mean anything)."""
        ...

    def attach(self, node: Node) -> None:
        """Called once when the node starts."""
        ...

    def detach(self) -> None:
        """Called when the node stops; release watchers."""
        ...

    def schedule(self, deadline: float) -> None:
        """The earliest pending deadline is now ``deadline``: make sure the node's
        ``fire_timers`` runs at (or after) that time."""
        ...

    def settle(self, node: Node) -> bool:
        """The node went idle (no runnable process, the hub has nothing to do): fire
        what is due that the clock's own timer would not. True if anything was done
        (the node then looks again before calling itself at rest)."""
        ...

    def idle(self, node: Node) -> bool:
        """The node is at rest and nobody waits for that: move time if this clock does
        (a mock clock's autojump). True if time moved."""
        ...


class RealClock:
    """The OS monotonic clock; one gevent timer armed for the earliest deadline."""

    def __init__(self) -> None:
        self._node: Node | None = None
        self._watcher: Any = None
        self._armed: float | None = None
        self.now = time.monotonic

    def attach(self, node: Node) -> None:
        self._node = node

    def detach(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher.close()
            self._watcher = None
        self._armed = None
        self._node = None

    def schedule(self, deadline: float) -> None:
        if self._armed is not None and self._armed <= deadline:
            return  # already armed for an earlier (or the same) time
        node = self._node
        assert node is not None
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher.close()
        delay = max(0.0, deadline - time.monotonic())
        self._watcher = node.hub.loop.timer(delay)
        self._armed = deadline
        self._watcher.start(self._fire)

    def settle(self, node: Node) -> bool:
        return False  # the armed timer fires what is due

    def idle(self, node: Node) -> bool:
        return False  # real time moves by itself

    def _fire(self) -> None:
        self._armed = None
        node = self._node
        if node is not None:
            node.fire_timers()


class MockClock:
    """A virtual clock for tests.

    ``autojump=True``: when all processes are blocked and the hub is idle, time jumps to
    the next deadline at once. Time never moves otherwise, except by ``advance``.
    """

    def __init__(self, start: float = 0.0, *, autojump: bool = True) -> None:
        self._t = float(start)
        self.autojump = autojump
        self._node: Node | None = None

    def now(self) -> float:
        return self._t

    def attach(self, node: Node) -> None:
        self._node = node

    def detach(self) -> None:
        self._node = None

    def schedule(self, deadline: float) -> None:
        # Even without autojump: a deadline that is already due fires when the node is
        # next idle (the node's idle hook jumps only when autojump is on).
        if self._node is not None:
            self._node.want_idle()

    def settle(self, node: Node) -> bool:
        # Timers already due (send_after(0, ...)) fire before anyone is told the node is
        # at rest, as they would on the real clock: that needs no jump in time.
        nd = node._first_live_deadline()
        if nd is not None and nd <= self._t:
            node.fire_timers()
            return True
        return False

    def idle(self, node: Node) -> bool:
        if self.autojump:
            nd = node._first_live_deadline()
            if nd is not None:
                self.jump_to(nd)
                return True
        return False

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` and fire every timer that became due."""
        if seconds < 0:
            raise ValueError(f"MockClock.advance expects seconds >= 0, got {seconds!r}")
        self._t += seconds
        if self._node is not None:
            self._node.fire_timers()

    def jump_to(self, deadline: float) -> None:
        """Set the time to ``deadline`` (if later) and fire what became due."""
        if deadline > self._t:
            self._t = deadline
        if self._node is not None:
            self._node.fire_timers()

    def __repr__(self) -> str:
        return f"MockClock(t={self._t:.6f}, autojump={self.autojump})"
