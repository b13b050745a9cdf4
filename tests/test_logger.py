"""otp.logger: OTP-style rendering of structured reports, and the bounded sink."""

from __future__ import annotations

import _queue
import io
import logging
import threading

import pytest

from otp import gen_server, proc_lib, supervisor
from otp import logger as otp_logger
from otp.gen_server import GenServer, NoReply, Ok
from otp.logger import LogSink, ReportFormatter, format_report, log_report, setup
from otp.process import ANY, Down, monitor, self, send, whereis
from otp.supervisor import ChildSpec, Supervisor, SupFlags
from otp.testing import assert_receive, wait_all_blocked


def _record(report: dict, level: int = logging.ERROR, msg: str = "report") -> logging.LogRecord:
    rec = logging.LogRecord("otp.report", level, __file__, 1, msg, None, None)
    rec.report = report  # type: ignore[attr-defined]
    return rec


def _crash() -> ZeroDivisionError:
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError as e:
        return e
    raise AssertionError("unreachable")


# ------------------------------------------------------------------------- formatting


def test_gen_server_terminate_report_reads_like_otp():
    err = _crash()
    text = ReportFormatter().format(
        _record(
            {
                "label": ("gen_server", "terminate"),
                "name": "counter",
                "last_message": ("add", "x"),
                "state": 41,
                "reason": err,
            }
        )
    )
    lines = text.splitlines()
    assert lines[0].startswith("=ERROR REPORT==== ") and lines[0].endswith(" ===")
    assert lines[1] == "** Generic server counter terminating"
    assert lines[2] == "** Last message in was ('add', 'x')"
    assert lines[3] == "** When Server state == 41"
    assert lines[4] == "** Reason for termination =="
    assert lines[5] == "** ZeroDivisionError('division by zero')"
    assert lines[6] == "Traceback (most recent call last):"
    assert "1 / 0" in text
    assert lines[-1] == "ZeroDivisionError: division by zero"


def test_gen_server_terminate_report_accepts_a_string_label_and_a_given_stack():
    text = format_report(
        {
            "label": "gen_server:terminate",
            "name": "<0.7.0>",
            "last_message": "boom",
            "state": {"n": 1},
            "reason": "bad_thing",
            "stack": ["  File 'x.py', line 3, in f\n", "    raise X\n"],
            "client": "<0.6.0>",
        }
    )
    assert "** Generic server <0.7.0> terminating" in text
    assert "** When Server state == {'n': 1}" in text
    assert "** Reason for termination ==\n** bad_thing" in text
    assert "** Client <0.6.0> stacktrace" in text
    assert "  File 'x.py', line 3, in f\n    raise X" in text


def test_crash_report_has_crasher_and_neighbours_sections():
    err = _crash()
    text = format_report(
        {
            "label": ("proc_lib", "crash"),
            "crasher": {
                "initial_call": "tests.worker.run",
                "pid": "<0.42.0>",
                "registered_name": None,
                "reason": err,
                "ancestors": ["<0.40.0>", "my_sup"],
                "message_queue_len": 0,
                "links": [],
                "trap_exit": False,
            },
            "neighbours": [],
        }
    )
    lines = text.splitlines()
    assert lines[0].startswith("=CRASH REPORT==== ")
    assert lines[1] == "  crasher:"
    assert "    initial call: tests.worker.run" in lines
    assert "    pid: <0.42.0>" in lines
    assert "    exception error: ZeroDivisionError('division by zero')" in lines
    assert "    ancestors: ['<0.40.0>', 'my_sup']" in lines
    assert "    trap_exit: False" in lines
    assert lines[-1] == "  neighbours:"
    # the stack is indented under the exception, before the remaining fields
    assert lines.index("    exception error: ZeroDivisionError('division by zero')") < next(
        i for i, ln in enumerate(lines) if "Traceback" in ln
    ) < lines.index("    ancestors: ['<0.40.0>', 'my_sup']")


def test_crash_report_with_flat_fields_and_exit_reason():
    text = format_report({"label": "crash_report", "pid": "<0.9.0>", "reason": ("bad", 1)})
    assert text.splitlines()[0].startswith("=CRASH REPORT==== ")
    assert "    exception exit: ('bad', 1)" in text


def test_supervisor_report_names_supervisor_context_reason_and_offender():
    text = format_report(
        {
            "label": ("supervisor", "child_terminated"),
            "supervisor": "my_sup",
            "reason": "killed",
            "offender": {
                "pid": "<0.43.0>",
                "id": "worker",
                "restart_type": "permanent",
                "shutdown": 5.0,
                "child_type": "worker",
            },
        }
    )
    lines = text.splitlines()
    assert lines[0].startswith("=SUPERVISOR REPORT==== ")
    assert lines[1:4] == [
        "    supervisor: my_sup",
        "    errorContext: child_terminated",
        "    reason: killed",
    ]
    assert lines[4] == (
        "    offender: [pid=<0.43.0>, id=worker, restart_type=permanent, shutdown=5.0,"
        " child_type=worker]"
    )


def test_supervisor_report_with_explicit_error_context_field():
    text = format_report(
        {"label": "supervisor_report", "supervisor": "s", "errorContext": "shutdown",
         "reason": "reached_max_restart_intensity", "offender": "w"}
    )
    assert "    errorContext: shutdown" in text
    assert "    reason: reached_max_restart_intensity" in text


def test_progress_reports_for_supervisor_and_application():
    text = format_report(
        {"label": "progress", "supervisor": "my_sup",
         "started": {"pid": "<0.44.0>", "id": "worker"}},
        levelname="INFO",
    )
    assert text.splitlines()[0].startswith("=PROGRESS REPORT==== ")
    assert "    supervisor: my_sup" in text
    assert "    started: [pid=<0.44.0>, id=worker]" in text
    app = format_report(
        {"label": ("application_controller", "progress"), "application": "chat",
         "started_at": "nonode@nohost"},
        levelname="INFO",
    )
    assert app.splitlines()[1:] == ["    application: chat", "    started_at: nonode@nohost"]


def test_application_exit_is_an_info_report():
    text = format_report(
        {"label": ("application_controller", "exit"), "application": "chat",
         "exited": "stopped", "type": "temporary"},
        levelname="INFO",
    )
    assert text.splitlines()[0].startswith("=INFO REPORT==== ")
    assert text.splitlines()[1:] == [
        "    application: chat",
        "    exited: stopped",
        "    type: temporary",
    ]


def test_unknown_label_and_plain_records_are_never_lost():
    text = ReportFormatter().format(
        _record({"label": "my_app:odd", "detail": "x y"}, logging.WARNING)
    )
    assert text.splitlines()[0].startswith("=WARNING REPORT==== ")
    assert "    detail: 'x y'" in text
    plain = logging.LogRecord("otp.process", logging.ERROR, __file__, 1, "hello %s", ("w",), None)
    out = ReportFormatter().format(plain)
    assert out.splitlines()[1] == "otp.process: hello w"


# ------------------------------------------------------------------------- the sink


class BlockingStream(io.StringIO):
    """A stream whose writes wait until the test opens the gate (OS-level queues, so
    the writer thread really blocks)."""

    def __init__(self) -> None:
        super().__init__()
        self.entered: _queue.SimpleQueue = _queue.SimpleQueue()
        self.gate: _queue.SimpleQueue = _queue.SimpleQueue()
        self.blocked = True

    def write(self, s: str) -> int:
        if self.blocked:
            self.entered.put(s)
            self.gate.get()
            self.blocked = False
        return super().write(s)


def _emit(sink: LogSink, msg: str) -> None:
    sink.handle(logging.LogRecord("t", logging.INFO, __file__, 1, msg, None, None))


def test_sink_drops_and_counts_instead_of_blocking_when_the_writer_is_stalled():
    stream = BlockingStream()
    sink = LogSink(stream, max_queue=4)
    sink.setFormatter(logging.Formatter("%(message)s"))
    try:
        _emit(sink, "r0")
        assert stream.entered.get(timeout=10) == "r0\n"  # the writer is now stuck in write
        for i in range(1, 11):  # 4 fit in the queue, 6 are dropped; none of this blocks
            _emit(sink, f"r{i}")
        assert sink.pending == 4
        assert sink.dropped == 6
        stream.gate.put(None)  # the reader wakes up
        assert sink.drain(timeout=10)
        out = stream.getvalue().splitlines()
        assert out[:5] == ["r0", "r1", "r2", "r3", "r4"]
        assert out[5].startswith("=WARNING REPORT==== ")
        assert out[6] == "    otp.logger: 6 records dropped (the log sink was full)"
        assert len(out) == 7
        # later records flow normally, and the count is not reported twice
        _emit(sink, "after")
        assert sink.drain(timeout=10)
        assert stream.getvalue().splitlines()[7:] == ["after"]
    finally:
        sink.close()


def test_sink_reports_drops_before_the_first_record_accepted_after_them():
    stream = BlockingStream()
    sink = LogSink(stream, max_queue=1)
    sink.setFormatter(logging.Formatter("%(message)s"))
    try:
        _emit(sink, "a")
        stream.entered.get(timeout=10)
        _emit(sink, "b")  # queued
        _emit(sink, "c")  # dropped
        stream.gate.put(None)
        assert sink.drain(timeout=10)
        _emit(sink, "d")
        assert sink.drain(timeout=10)
        out = stream.getvalue().splitlines()
        assert out[0:2] == ["a", "b"]
        assert out[3] == "    otp.logger: 1 record dropped (the log sink was full)"
        assert out[4] == "d"
    finally:
        sink.close()


def test_sink_writes_on_a_real_os_thread(node):
    # Inside a node (gevent monkey-patched), a write that blocks must not stall the
    # hub: this process keeps running while the writer is stuck.
    stream = BlockingStream()
    sink = LogSink(stream, max_queue=2)
    sink.setFormatter(logging.Formatter("%(message)s"))
    try:
        _emit(sink, "x")
        stream.entered.get(timeout=10)
        send(self(), "still running")
        assert assert_receive("still running") == "still running"
        stream.gate.put(None)
        assert sink.drain(timeout=10)
        assert stream.getvalue() == "x\n"
    finally:
        sink.close()


def test_setup_installs_one_sink_with_the_report_formatter():
    stream = io.StringIO()
    log = logging.getLogger("otp.test_setup")
    try:
        first = setup(logging.INFO, stream=stream, logger="otp.test_setup")
        second = setup(logging.INFO, stream=stream, logger="otp.test_setup", max_queue=10)
        assert [h for h in log.handlers if isinstance(h, LogSink)] == [second]
        assert first._closed
        log.info("x", extra={"report": {"label": "progress", "application": "chat"}})
        log.debug("hidden")
        assert second.drain(timeout=10)
        text = stream.getvalue()
        assert text.startswith("=PROGRESS REPORT==== ")
        assert "    application: chat" in text
        assert "hidden" not in text
    finally:
        for h in list(log.handlers):
            log.removeHandler(h)
            h.close()
        log.setLevel(logging.NOTSET)


def test_sink_rejects_a_bad_max_queue():
    with pytest.raises(ValueError, match="max_queue expects an int >= 1, got 0"):
        LogSink(io.StringIO(), max_queue=0)


# ------------------------------------------------------------------------- log_report


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def lone_logger():
    """A logger of its own, not propagating, with no handler: its records reach only
    the handlers a test adds (or, with none, the last resort)."""
    log = logging.getLogger("otp.test_log_report")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    yield _without_handlers(log)
    _without_handlers(log)
    log.propagate = True
    log.setLevel(logging.NOTSET)


def _without_handlers(log: logging.Logger) -> logging.Logger:
    # pytest attaches its capture handlers to non-propagating loggers at each phase.
    for h in list(log.handlers):
        log.removeHandler(h)
    return log


_TIME_FIELDS = {"created", "msecs", "relativeCreated", "lineno"}


def test_log_report_makes_the_record_logger_log_would_make(lone_logger):
    _without_handlers(lone_logger)
    cap = _Records()
    lone_logger.addHandler(cap)
    args = ("<0.7.0>", "child_terminated", "w", "killed")
    for _ in range(2):  # the second call copies the call site's template
        log_report(lone_logger, logging.ERROR, "sup %r: %s of %r: %r", args, {"label": "x"})
        lone_logger.log(logging.ERROR, "sup %r: %s of %r: %r", *args,
                        extra={"report": {"label": "x"}})
    fast, std = cap.records[2], cap.records[3]
    assert fast.__class__ is std.__class__
    assert set(fast.__dict__) == set(std.__dict__)
    assert {k: v for k, v in fast.__dict__.items() if k not in _TIME_FIELDS} == {
        k: v for k, v in std.__dict__.items() if k not in _TIME_FIELDS
    }
    assert fast.lineno == std.lineno - 1
    assert fast.created <= std.created
    assert fast.getMessage() == "sup '<0.7.0>': child_terminated of 'w': 'killed'"


def test_log_report_builds_the_report_only_for_a_handler(lone_logger):
    built = []

    def fields(a, b):
        built.append((a, b))
        return {"label": "x", "a": a, "b": b}

    _without_handlers(lone_logger)
    lone_logger.setLevel(logging.CRITICAL)
    log_report(lone_logger, logging.ERROR, "m", (), fields, 1, 2)  # below the level
    lone_logger.setLevel(logging.DEBUG)
    sink = otp_logger._fallback()
    log_report(lone_logger, logging.ERROR, "m", (), fields, 1, 2)  # no handler
    assert sink.drain(timeout=10)
    assert built == []
    cap = _Records()
    lone_logger.addHandler(cap)
    log_report(lone_logger, logging.ERROR, "m", (), fields, 1, 2)
    assert built == [(1, 2)]
    assert cap.records[0].report == {"label": "x", "a": 1, "b": 2}


def test_log_report_without_a_handler_writes_what_the_last_resort_would(lone_logger, capsys):
    _without_handlers(lone_logger)
    sink = otp_logger._fallback()
    log_report(lone_logger, logging.ERROR, "sup %r: %s", ("s", "gone"), {"label": "x"})
    log_report(lone_logger, logging.INFO, "below the last resort's level", (), {"label": "x"})
    assert sink.drain(timeout=10)
    assert capsys.readouterr().err == "sup 's': gone\n"


def test_log_report_takes_one_mapping_argument_as_the_format_mapping(lone_logger, capsys):
    _without_handlers(lone_logger)
    sink = otp_logger._fallback()
    log_report(lone_logger, logging.ERROR, "%(who)s left", ({"who": "w"},), {"label": "x"})
    assert sink.drain(timeout=10)
    assert capsys.readouterr().err == "w left\n"
    cap = _Records()
    lone_logger.addHandler(cap)
    log_report(lone_logger, logging.ERROR, "%(who)s left", ({"who": "w"},), {"label": "x"})
    assert cap.records[0].getMessage() == "w left"


def test_log_report_leaves_a_replaced_last_resort_in_charge(lone_logger, monkeypatch):
    _without_handlers(lone_logger)
    cap = _Records()
    monkeypatch.setattr(logging, "lastResort", cap)
    log_report(lone_logger, logging.ERROR, "m %s", ("x",), {"label": "x"})
    assert [(r.getMessage(), r.report) for r in cap.records] == [("m x", {"label": "x"})]
    monkeypatch.setattr(logging, "lastResort", None)
    log_report(lone_logger, logging.ERROR, "m %s", ("y",), {"label": "x"})  # dropped, as stdlib
    assert len(cap.records) == 1


def test_log_report_applies_the_loggers_filters(lone_logger):
    _without_handlers(lone_logger)
    cap = _Records()
    lone_logger.addHandler(cap)
    lone_logger.addFilter(lambda r: r.getMessage() != "hidden")
    try:
        log_report(lone_logger, logging.ERROR, "hidden", (), {"label": "x"})
        log_report(lone_logger, logging.ERROR, "shown", (), {"label": "x"})
    finally:
        lone_logger.filters.clear()
    assert [r.getMessage() for r in cap.records] == ["shown"]


class _ThreadFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"{record.getMessage()} {threading.get_ident() == MAIN_IDENT}"


MAIN_IDENT = threading.get_ident()


def test_sink_formats_reports_on_its_writer_and_other_records_at_once():
    stream = io.StringIO()
    sink = LogSink(stream)
    sink.setFormatter(_ThreadFormatter())
    try:
        sink.handle(_record({"label": "x"}, msg="report"))
        sink.handle(logging.LogRecord("t", logging.INFO, __file__, 1, "plain", None, None))
        assert sink.drain(timeout=10)
        assert stream.getvalue() == "report False\nplain True\n"
    finally:
        sink.close()


# ------------------------------------------------------------------------- real producers


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)  # supervisor progress reports are DEBUG
        self.setFormatter(ReportFormatter())
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(self.format(record))


@pytest.fixture
def reports():
    cap = _Capture()
    log = logging.getLogger("otp.report")
    old_level = log.level
    log.addHandler(cap)
    log.setLevel(logging.DEBUG)
    try:
        yield cap.texts
    finally:
        log.removeHandler(cap)
        log.setLevel(old_level)


def test_reports_of_a_crashing_gen_server_under_a_supervisor_read_like_otp(node, reports):
    class Counter(GenServer):
        def init(self, arg):
            return Ok(1)

        def handle_cast(self, request, state):
            return NoReply(state + request)

    class Sup(Supervisor):
        def init(self, arg):
            return SupFlags(strategy="one_for_one"), [
                ChildSpec(id="counter", start=(_start_counter, (Counter,)))
            ]

    sup = supervisor.start_link(Sup, None, name="top_sup")
    try:
        pid = whereis("counter")
        ref = monitor(pid)
        gen_server.cast("counter", "x")
        assert_receive(Down(ref, pid, ANY))
        wait_all_blocked()
    finally:
        supervisor.stop(sup)
    kinds = [t.splitlines()[0].split("====")[0] for t in reports]
    assert kinds == ["=PROGRESS REPORT", "=ERROR REPORT", "=SUPERVISOR REPORT",
                     "=PROGRESS REPORT"]
    assert "    supervisor: top_sup" in reports[0].splitlines()
    crash = reports[1].splitlines()
    assert crash[1:6] == [
        "** Generic server counter terminating",
        "** Last message in was ('$gen_cast', 'x')",
        "** When Server state == 1",
        "** Reason for termination ==",
        "** TypeError(\"unsupported operand type(s) for +: 'int' and 'str'\")",
    ]
    assert crash[-1] == "TypeError: unsupported operand type(s) for +: 'int' and 'str'"
    sup_report = reports[2].splitlines()
    assert sup_report[1:3] == ["    supervisor: top_sup", "    errorContext: child_terminated"]
    assert any(ln.startswith("    offender: [pid=<") and "id=counter" in ln for ln in sup_report)


def test_crash_report_of_a_proc_lib_process(node, reports):
    pid = proc_lib.spawn(_fail, "bad input")
    ref = monitor(pid)
    assert_receive(Down(ref, pid, ANY))
    (text,) = reports
    lines = text.splitlines()
    assert lines[0].startswith("=CRASH REPORT==== ")
    assert lines[1] == "  crasher:"
    assert f"    initial call: {_fail.__module__}._fail" in lines
    assert f"    pid: {pid!r}" in lines
    assert "    exception error: ValueError('bad input')" in lines
    assert lines[-1] == "  neighbours:"


def _fail(what):
    raise ValueError(what)


def _start_counter(cls):
    return gen_server.start_link(cls, None, name="counter")


def test_a_huge_field_is_cut_and_says_how_much_was_cut():
    text = format_report({"label": "gen_server_terminate", "name": "big", "state": "x " * 10000,
                          "reason": "r"})
    (line,) = [ln for ln in text.splitlines() if ln.startswith("** When Server state == ")]
    assert line.endswith("... (11810 more characters)")
