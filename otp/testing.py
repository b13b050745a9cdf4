"""The test kit: a pytest plugin that runs each test as a process on a fresh node.

The plugin is opt-in (installing otpy adds nothing to other projects' pytest runs):
``pytest -p otp.testing``, or in the project's ``conftest.py``::

    pytest_plugins = ["otp.testing"]

A test that takes the ``node`` fixture runs *inside a process* of a fresh node, with a
mock clock and strict message mode, so it can ``receive`` directly::

    from otp.process import spawn_monitor, receive, Down
    from otp.testing import assert_receive

    def test_process_that_returns_ends_with_normal(node):
        pid, ref = spawn_monitor(lambda: None)
        assert assert_receive(Down).reason == "normal"

What the plugin gives each such test:

- **A fresh node** (``node`` fixture), stopped after the test; nothing leaks between tests.
- **A mock clock** (``clock`` fixture) that jumps to the next deadline whenever every
  process is blocked, so "3 restarts in 5 s" takes microseconds. Opt out with
  ``@pytest.mark.otp(clock="real")`` for tests that wait on real I/O.
- **Strict mode**: sending a mutable message raises ``BadArg``.
- **Leak check**: a test that leaves live processes or pending ``send_after`` timers
  fails at teardown, listing them (unless the test already failed).
- **A watchdog**: a test still running after ``timeout`` real seconds (default 60,
  ``@pytest.mark.otp(timeout=...)``) fails with every process's stack and mailbox length.
- **Fairness**: ``@pytest.mark.otp(max_blocking_time=0.1)`` logs a warning for any process
  that holds the hub longer than that (off by default).

Options of ``@pytest.mark.otp(...)``: ``clock="mock"|"real"``, ``strict=True``,
``timeout=60.0`` (watchdog, real seconds), ``leaks=True``, ``max_blocking_time=None``.

Helpers: ``wait_all_blocked()``, ``assert_receive(match)``, ``refute_receive(match)``,
``dump_processes()``.

``MockClock(start=0.0, autojump=True)`` is the clock itself, for a node a test starts on
its own (``otp.run(main, clock=MockClock())``): ``advance(seconds)`` moves it by hand;
with ``autojump`` it jumps to the next deadline whenever every process waits.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterator
from typing import Any

import pytest

from otp.lowlevel import MockClock, Node, Pid, RealClock, current_node, other_greenlet_stacks
from otp.process import Down, Ref, monitor, process_info, receive
from otp.process import exit as exit_signal

__all__ = [
    "MockClock",
    "assert_down",
    "assert_receive",
    "dump_processes",
    "refute_receive",
    "stop_process",
    "wait_all_blocked",
]

_NO_MESSAGE = object()


def wait_all_blocked() -> None:
    """Return once every other process is blocked and the hub has nothing to do.

    Under the mock clock this happens *before* time jumps: it is the way to observe a
    system at rest without sleeping.
    """
    current_node().wait_all_blocked()


def assert_receive(match: Any = None, timeout: float = 5.0) -> Any:
    """Receive a message matching ``match`` within ``timeout`` (node clock), or fail the
    test with the mailbox's contents."""
    msg = receive(match, timeout, default=_NO_MESSAGE)
    if msg is _NO_MESSAGE:
        from otp.process import flush, self

        pending = flush()
        raise AssertionError(
            f"{self()!r} expected a message matching {match!r} within {timeout} s; "
            f"mailbox: {pending!r}"
        )
    return msg


def assert_down(ref: Ref, timeout: float = 5.0) -> Down:
    """The ``Down`` of monitor ``ref`` (other messages stay queued), or fail the test."""
    msg: Down = assert_receive(lambda m: m.__class__ is Down and m.ref == ref, timeout)
    return msg


def stop_process(pid: Pid, reason: Any = "kill", timeout: float = 5.0) -> Any:
    """Send ``pid`` an exit signal (``kill`` by default) and wait until it has ended;
    returns its exit reason (``"noproc"`` if it was already gone)."""
    ref = monitor(pid)
    exit_signal(pid, reason)
    return assert_down(ref, timeout).reason


def refute_receive(match: Any = None, timeout: float = 0.1) -> None:
    """Fail if a message matching ``match`` arrives within ``timeout`` (node clock)."""
    msg = receive(match, timeout, default=_NO_MESSAGE)
    if msg is not _NO_MESSAGE:
        raise AssertionError(f"expected no message matching {match!r}, got {msg!r}")


def dump_processes(node: Node | None = None, *, greenlets: bool = False) -> str:
    """Every live process with its status, mailbox length and current stack; with
    ``greenlets=True`` also every other suspended greenlet (I/O servers, pools)."""
    node = node or current_node()
    lines = []
    for p in list(node.procs.values()):
        info = node.info(p)
        name = f" ({info.registered_name})" if info.registered_name else ""
        lines.append(
            f"--- {info.pid!r}{name} {info.initial_call} status={info.status} "
            f"mailbox={info.message_queue_len} links={list(info.links)}"
        )
        lines.extend("    " + ln.rstrip() for ln in "".join(info.current_stacktrace).splitlines())
    if greenlets:
        for name, stack in other_greenlet_stacks():
            lines.append(f"--- greenlet {name} (not a process)")
            lines.extend("    " + ln.rstrip() for ln in "".join(stack).splitlines())
    return "\n".join(lines) or "(no processes)"


def _options(item: pytest.Item) -> dict[str, Any]:
    opts: dict[str, Any] = {
        "clock": "mock",
        "strict": True,
        "timeout": 60.0,
        "leaks": True,
        "max_blocking_time": None,
    }
    for mark in reversed(list(item.iter_markers("otp"))):
        opts.update(mark.kwargs)
    return opts


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "otp(clock='mock'|'real', strict=True, timeout=60.0, leaks=True, "
        "max_blocking_time=None): "
        "options of the fresh node a test runs in",
    )


@pytest.fixture
def node(request: pytest.FixtureRequest) -> Iterator[Node]:
    """A fresh, running node; the test body runs inside one of its processes."""
    opts = _options(request.node)
    clock = MockClock() if opts["clock"] == "mock" else RealClock()
    n = Node(
        "test@localhost",
        clock=clock,
        strict=opts["strict"],
        max_blocking_time=opts["max_blocking_time"],
    )
    n.start()
    n.test_failed = False  # type: ignore[attr-defined]
    try:
        yield n
        if opts["leaks"] and not n.test_failed:  # type: ignore[attr-defined]
            _check_leaks(n, opts["timeout"])
    finally:
        n.stop()


@pytest.fixture
def clock(node: Node) -> Any:
    """The node's clock (a ``MockClock`` unless the test asked for the real one)."""
    return node.clock


def _check_leaks(n: Node, timeout: float) -> None:
    try:
        n.wait_all_blocked(timeout)
    except TimeoutError:
        pytest.fail(
            f"test leaked processes that never block (still running after {timeout} s, "
            f"watchdog):\n{dump_processes(n)}",
            pytrace=False,
        )
    problems = []
    if n.procs:
        problems.append(f"{len(n.procs)} process(es) still alive:\n{dump_processes(n)}")
    timers = n.live_timers()
    if timers:
        problems.append(f"{len(timers)} send_after timer(s) still pending: {timers!r}")
    if problems:
        pytest.fail("test leaked:\n" + "\n".join(problems), pytrace=False)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    n = pyfuncitem.funcargs.get("node")
    if not isinstance(n, Node):
        return None
    fn = pyfuncitem.obj
    if inspect.iscoroutinefunction(fn):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    kwargs = {name: pyfuncitem.funcargs[name] for name in names}
    timeout = _options(pyfuncitem)["timeout"]
    result, proc = n.start_main(functools.partial(fn, **kwargs))
    try:
        n.join(result, timeout)
        return True
    except TimeoutError:
        n.test_failed = True  # type: ignore[attr-defined]
        dump = dump_processes(n, greenlets=True)
        n.exit_process(proc, "killed")
    except BaseException:
        n.test_failed = True  # type: ignore[attr-defined]
        raise
    # Outside the except block, so the report is not chained to the join's timeout.
    pytest.fail(
        f"test still running after {timeout} s (watchdog); processes:\n{dump}",
        pytrace=False,
    )


def pid_info(pid: Pid) -> Any:
    """``process_info`` that fails the test if the process is gone."""
    info = process_info(pid)
    assert info is not None, f"{pid!r} is not alive"
    return info
