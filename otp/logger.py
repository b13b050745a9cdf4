"""OTP-style log output: a report formatter and a bounded, non-blocking log sink.

Behaviours (``proc_lib``, ``gen_server``, ``supervisor``, ``application``) log
*structured reports* to the stdlib logger ``otp.report``: a record whose ``report``
attribute is a dict with a ``label`` and fields. ``ReportFormatter`` renders them the
way Erlang/OTP's logger does, so an Erlang engineer reads them at a glance::

    =ERROR REPORT==== 26-Nov-2026::07:03:38.123456 ===
    ** Generic server counter terminating
    ** Last message in was ('add', 'x')
    ** When Server state == 1
    ** Reason for termination ==
    ** TypeError("unsupported operand type(s) for +: 'int' and 'str'")
    Traceback (most recent call last): ...

Report kinds (the label, as a string ``"gen_server:terminate"`` or a tuple
``("gen_server", "terminate")``, chooses the layout; unknown labels and unknown fields
are printed as ``key: value`` lines, so nothing is ever lost):

=========================================  ========================================
label                                      rendered as
=========================================  ========================================
``gen_server:terminate``                   ``** Generic server <name> terminating``
``proc_lib:crash`` / ``crash_report``      ``=CRASH REPORT====`` with ``crasher:``
``supervisor:<errorContext>`` /            ``=SUPERVISOR REPORT====`` (supervisor,
``supervisor_report``                      errorContext, reason, offender)
``progress`` / ``supervisor:progress`` /   ``=PROGRESS REPORT====``
``application_controller:progress``
``application_controller:exit``            ``=INFO REPORT====`` (application, exited,
                                           type)
anything else                              ``=<LEVEL> REPORT====`` + fields
=========================================  ========================================

``LogSink`` is a ``logging.Handler`` that never blocks the node: ``emit`` puts the
record in a bounded in-memory queue; a writer running on a real OS thread formats it
(a behaviour's report; any other record is formatted by ``emit``, so that its message
shows its arguments as they were) and writes it to the stream, a batch of lines per
write. When the queue is full (the reader of stdout stalled, a pipe is full, a
terminal is paused) records are *dropped and counted*, and a
``=WARNING REPORT==== ... N records dropped`` line is written once the writer catches
up. ``setup()`` installs both::

    import logging, otp.logger
    otp.logger.setup(level=logging.INFO)          # stderr, 10 000 records of slack
    logging.getLogger("otp.report").error(
        "crash", extra={"report": {"label": "progress", "application": "chat",
                                    "started_at": "nonode@nohost"}})

Behaviours log through ``log_report``, which costs the reporting process little: the
record is copied from a template made once per call site, the report is built only if
a handler will see it, and when the program configured no logging at all the message
goes to stderr as the stdlib's last-resort handler would write it, but written by the
writer thread of a ``LogSink`` of its own (so it can lag the node by a batch, and is
dropped and counted if the sink is full).

Failure semantics: ``emit`` never blocks on I/O and never raises into the caller (a
formatting error goes to ``logging``'s ``handleError``, on the writer thread for a
report); a stream whose ``write`` raises loses that batch, reported through
``handleError``. At interpreter exit
``logging.shutdown`` closes the sink, which waits up to ``close_timeout`` seconds for the
writer and then gives up (a stalled reader cannot hang the exit either).

Why an OS thread: greenlets are cooperative, so a ``write`` to a pipe whose reader
stopped would block the whole node (gevent does not make ``sys.stdout`` cooperative).
Under gevent's monkey-patching ``threading.Thread`` is a greenlet, so the sink starts
its writer with ``otp.threads.start_os_thread``; the queue between the two threads is
the C ``_queue.SimpleQueue`` (left alone by monkey-patching), whose ``put`` never
blocks.

When not to use: for audit logs that must never lose a line (drop-when-full is the
point here: use a synchronous handler on a file you own), and for very high-volume
tracing (format less, sample, or use ``sys.trace`` on one process).
"""

from __future__ import annotations

import _queue
import datetime
import logging
import os
import pprint
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import IO, Any

from otp.threads import OSLock, start_os_thread

__all__ = [
    "MAX_FIELD_CHARS",
    "REPORT_LOGGER",
    "LogSink",
    "ReportFormatter",
    "format_report",
    "log_report",
    "setup",
]

#: The logger behaviours send their structured reports to.
REPORT_LOGGER = "otp.report"

#: A field longer than this (a server's whole state, say) is cut, saying how much was.
MAX_FIELD_CHARS = 8192

_INDENT = "    "
# Printed bare, like Erlang atoms and pids: names, dotted paths, "<0.42.0>".
_ATOM = re.compile(r"^(?:[A-Za-z_][A-Za-z0-9_@.:-]*|<\d+\.\d+\.\d+>)$")


# ------------------------------------------------------------------------- formatting


def _term(value: Any) -> str:
    """Render one value the way OTP's ``~p`` would: names bare, everything else repr'd."""
    if isinstance(value, str) and _ATOM.match(value):
        return value
    text = repr(value)
    if len(text) > 88 and not isinstance(value, (BaseException, str, bytes)):
        # Only a long value needs pprint's line breaking (pprint costs ~50x repr).
        text = pprint.pformat(value, width=88, compact=True, sort_dicts=False)
    if len(text) > MAX_FIELD_CHARS:  # a huge state must not flood the log (OTP's ~P depth)
        cut = len(text) - MAX_FIELD_CHARS
        text = f"{text[:MAX_FIELD_CHARS]}... ({cut} more characters)"
    return text


def _indent(text: str, prefix: str) -> str:
    return "\n".join(prefix + ln if ln else ln for ln in text.splitlines())


def _label_key(label: Any) -> str:
    if isinstance(label, tuple):
        return ":".join(str(x) for x in label)
    return str(label)


def _stack_lines(report: Mapping[str, Any], reason: Any) -> str:
    stack = report.get("stack", report.get("stacktrace"))
    if stack:
        if isinstance(stack, str):
            return stack.rstrip("\n")
        if isinstance(stack, (list, tuple)):
            return "".join(str(s) if str(s).endswith("\n") else f"{s}\n" for s in stack).rstrip(
                "\n"
            )
        return str(stack)
    if isinstance(reason, BaseException) and reason.__traceback__ is not None:
        return "".join(traceback.format_exception(type(reason), reason, reason.__traceback__))[
            :-1
        ]
    return ""


def _fields(report: Mapping[str, Any], skip: Iterable[str]) -> list[tuple[str, Any]]:
    skipped = set(skip) | {"label"}
    return [(k, v) for k, v in report.items() if k not in skipped]


def _kv_lines(items: Iterable[tuple[str, Any]], prefix: str = _INDENT) -> list[str]:
    lines = []
    for key, value in items:
        text = _term(value)
        if "\n" in text:
            lines.append(f"{prefix}{key}:")
            lines.append(_indent(text, prefix + _INDENT))
        else:
            lines.append(f"{prefix}{key}: {text}")
    return lines


def _offender(value: Any) -> str:
    if isinstance(value, Mapping):
        return "[" + ", ".join(f"{k}={_term(v)}" for k, v in value.items()) + "]"
    return _term(value)


def _gen_server_terminate(report: Mapping[str, Any]) -> tuple[str, list[str]]:
    reason = report.get("reason")
    lines = [f"** Generic server {_term(report.get('name', report.get('pid', '?')))} terminating"]
    if "last_message" in report:
        lines.append(f"** Last message in was {_term(report['last_message'])}")
    if "state" in report:
        lines.append(f"** When Server state == {_term(report['state'])}")
    lines.append("** Reason for termination ==")
    lines.append(f"** {_term(reason)}")
    if report.get("client") is not None:
        lines.append(f"** Client {_term(report['client'])} stacktrace")
        if report.get("client_stack"):
            lines.append(f"** {_term(report['client_stack'])}")
    if report.get("log"):
        lines.append("** Log ==")
        lines.append(f"** {_term(report['log'])}")
    known = {"name", "pid", "last_message", "state", "reason", "client", "client_stack", "log",
             "stack", "stacktrace"}
    lines += _kv_lines([(k, v) for k, v in _fields(report, known) if v is not None], "** ")
    stack = _stack_lines(report, reason)
    if stack:
        lines.append(stack)
    return "ERROR REPORT", lines


_CRASHER_ORDER = (
    "initial_call",
    "pid",
    "registered_name",
    "name",
    "ancestors",
    "message_queue_len",
    "messages",
    "links",
    "dictionary",
    "trap_exit",
    "status",
)


def _crash_report(report: Mapping[str, Any]) -> tuple[str, list[str]]:
    crasher = report.get("crasher")
    info: Mapping[str, Any] = crasher if isinstance(crasher, Mapping) else report
    reason = info.get("reason", info.get("error_info", info.get("exception")))
    lines = ["  crasher:"]
    pre = _INDENT
    for key in _CRASHER_ORDER[:4]:
        if key in info and not (key in ("name", "registered_name") and info[key] is None):
            lines += _kv_lines([(key.replace("_", " ") if key == "initial_call" else key,
                                 info[key])], pre)
    kind = "error" if isinstance(reason, Exception) else "exit"
    lines.append(f"{pre}exception {kind}: {_term(reason)}")
    stack = _stack_lines(info, reason)
    if stack:
        lines.append(_indent(stack, pre + "  "))
    for key in _CRASHER_ORDER[4:]:
        if key in info:
            lines += _kv_lines([(key, info[key])], pre)
    skip = {*_CRASHER_ORDER, "reason", "error_info", "exception", "stack", "stacktrace",
            "crasher", "neighbours"}
    lines += _kv_lines(_fields(info, skip), pre)
    if info is not report:
        lines += _kv_lines(_fields(report, {"crasher", "neighbours"}), "  ")
    lines.append("  neighbours:")
    for n in report.get("neighbours") or ():
        lines.append(_indent(_term(n), pre))
    return "CRASH REPORT", lines


def _supervisor_report(report: Mapping[str, Any], context: str | None) -> tuple[str, list[str]]:
    ctx = report.get("errorContext", report.get("error_context", context))
    lines = _kv_lines([("supervisor", report.get("supervisor", "?")), ("errorContext", ctx)])
    if "reason" in report:
        lines += _kv_lines([("reason", report["reason"])])
    stack = _stack_lines(report, report.get("reason"))
    if stack:
        lines.append(_indent(stack, _INDENT + _INDENT))
    if "offender" in report:
        lines.append(f"{_INDENT}offender: {_offender(report['offender'])}")
    skip = {"supervisor", "errorContext", "error_context", "reason", "offender", "stack",
            "stacktrace"}
    lines += _kv_lines(_fields(report, skip))
    return "SUPERVISOR REPORT", lines


def _progress_report(report: Mapping[str, Any]) -> tuple[str, list[str]]:
    lines = []
    for key, value in _fields(report, ()):
        if key == "started" and isinstance(value, Mapping):
            lines.append(f"{_INDENT}started: {_offender(value)}")
        else:
            lines += _kv_lines([(key, value)])
    return "PROGRESS REPORT", lines


def _generic(report: Mapping[str, Any], levelname: str, message: str) -> tuple[str, list[str]]:
    lines = _kv_lines(_fields(report, ()))
    if not lines and message:
        lines = [message]
    return f"{levelname} REPORT", lines


def _render(report: Mapping[str, Any], levelname: str, message: str) -> tuple[str, list[str]]:
    key = _label_key(report.get("label", ""))
    parts = key.split(":")
    if key in ("gen_server:terminate", "gen_server_terminate"):
        return _gen_server_terminate(report)
    if key in ("proc_lib:crash", "crash_report", "proc_lib_crash"):
        return _crash_report(report)
    if key.endswith("progress"):
        return _progress_report(report)
    if key == "supervisor_report" or (parts[0] == "supervisor" and len(parts) == 2):
        return _supervisor_report(report, parts[1] if len(parts) == 2 else None)
    if key in ("application_controller:exit", "application_exit"):
        return "INFO REPORT", _kv_lines(_fields(report, ()))
    return _generic(report, levelname, message)


def _timestamp(created: float) -> str:
    t = datetime.datetime.fromtimestamp(created)
    return t.strftime("%d-%b-%Y::%H:%M:%S.") + f"{t.microsecond:06d}"


def format_report(
    report: Mapping[str, Any], *, levelname: str = "ERROR", created: float | None = None,
    message: str = "",
) -> str:
    """Render one structured report as OTP would (header line, then the body)."""
    if created is None:
        created = datetime.datetime.now().timestamp()
    kind, lines = _render(report, levelname, message)
    return "\n".join([f"={kind}==== {_timestamp(created)} ===", *lines])


class ReportFormatter(logging.Formatter):
    """A ``logging.Formatter`` that renders records carrying ``record.report`` (a dict
    with a ``label``) as OTP reports, and every other record as
    ``=<LEVEL> REPORT==== <time> ===`` followed by ``<logger>: <message>`` (plus the
    traceback if the record has one)."""

    def format(self, record: logging.LogRecord) -> str:
        report = getattr(record, "report", None)
        message = record.getMessage()
        if isinstance(report, Mapping):
            text = format_report(
                report, levelname=record.levelname, created=record.created, message=message
            )
        else:
            text = f"={record.levelname} REPORT==== {_timestamp(record.created)} ===\n"
            text += f"{record.name}: {message}"
        if record.exc_info and not (isinstance(report, Mapping) and _has_stack(report)):
            text += "\n" + self.formatException(record.exc_info)
        elif record.exc_text:
            text += "\n" + record.exc_text
        return text


def _has_stack(report: Mapping[str, Any]) -> bool:
    if report.get("stack") or report.get("stacktrace"):
        return True
    crasher = report.get("crasher")
    return isinstance(crasher, Mapping) and bool(crasher.get("stack") or crasher.get("stacktrace"))


# ------------------------------------------------------------------------- fast records

_LogRecord = logging.LogRecord
_Logger = logging.Logger
_STD_LAST_RESORT = logging.lastResort  # the stdlib's own; a replacement is used as is
# Per call site (code, line, logger name, level): the fields of a record made there
# once, and the logging module's start time (for relativeCreated).
_templates: dict[tuple[Any, ...], tuple[dict[str, Any], float]] = {}
if hasattr(os, "register_at_fork"):  # a child process has another pid (process field)
    os.register_at_fork(after_in_child=_templates.clear)


def log_report(
    logger: logging.Logger, level: int, msg: str, args: tuple[Any, ...],
    report: Mapping[str, Any] | Callable[..., Mapping[str, Any]], *report_args: Any,
) -> None:
    """Log ``msg % args`` at ``level`` with ``record.report`` set: what
    ``logger.log(level, msg, *args, extra={"report": report})`` does from the caller's
    line (same record, same filters and handlers), for hot paths such as a
    supervisor's report on each restart. ``report`` is the report, or a function
    building it from ``report_args``, called only when a record is made.

    The record is a copy of one made once per call site: no frame walk, no path,
    process or thread look-ups per call (only the time, and the thread when another
    thread logs). Nothing is formatted here. When no handler would see the record
    (the program configured no logging), the stdlib would write the message to
    stderr with its last-resort handler, on this thread; here the fallback sink's
    writer thread writes the same line (see ``LogSink``), and no record is made.
    A logger of another class, a custom record factory, filters on the logger or a
    replaced ``logging.lastResort`` get the stdlib path.
    """
    if not logger.isEnabledFor(level):
        return
    if logger.__class__ is not _Logger or logging.getLogRecordFactory() is not _LogRecord:
        if report.__class__ is not dict:
            report = report(*report_args)  # type: ignore[operator]
        logger.log(level, msg, *args, extra={"report": report}, stacklevel=2)
        return
    fargs: Any = args
    if len(args) == 1 and isinstance(args[0], Mapping) and args[0]:
        fargs = args[0]  # as LogRecord does: one mapping is the %(key)s mapping
    if not logger.filters:
        c: Any = logger
        while c is not None:  # as Logger.callHandlers walks: is there any handler?
            if c.handlers:
                break
            c = c.parent if c.propagate else None
        else:
            last = logging.lastResort
            if (last is _STD_LAST_RESORT and last is not None and level >= last.level
                    and not last.filters and last.formatter is None):  # fmt: skip
                (_fallback_sink or _fallback()).put_message(msg, fargs)
                return
    if report.__class__ is not dict:
        report = report(*report_args)  # type: ignore[operator]
    f = sys._getframe(1)
    key = (f.f_code, f.f_lineno, logger.name, level)
    entry = _templates.get(key)
    if entry is None:
        code = f.f_code
        t = _LogRecord(logger.name, level, code.co_filename, f.f_lineno, msg, (), None,
                       code.co_name)  # fmt: skip
        entry = _templates[key] = (t.__dict__, t.created - t.relativeCreated / 1000)
    template, start = entry
    ct = time.time()
    d = template.copy()
    d["msg"] = msg
    d["args"] = fargs
    d["created"] = ct
    d["msecs"] = int((ct - int(ct)) * 1000) + 0.0
    d["relativeCreated"] = (ct - start) * 1000
    if logging.logThreads:
        ident = threading.get_ident()
        if ident != d["thread"]:
            d["thread"] = ident
            d["threadName"] = threading.current_thread().name
    d["report"] = report
    record = _LogRecord.__new__(_LogRecord)
    record.__dict__ = d
    logger.handle(record)


_fallback_sink: LogSink | None = None
_fallback_lock = OSLock()


def _fallback() -> LogSink:
    global _fallback_sink
    sink = _fallback_sink
    if sink is None:
        with _fallback_lock:
            sink = _fallback_sink
            if sink is None:
                sink = _fallback_sink = _StderrSink()
    return sink


# ------------------------------------------------------------------------- the sink


@dataclass(frozen=True)
class _Sync:
    """Queued by ``drain``: the writer releases ``lock`` once everything before it is
    written."""

    lock: Any


_STOP = object()
_BATCH = 1000  # lines per write at most


class LogSink(logging.Handler):
    """A bounded, non-blocking handler: records are queued by the caller, formatted and
    written by a writer on a real OS thread, a batch of lines per write; when
    ``max_queue`` records are waiting, new ones are dropped and counted, and the count
    is written once the writer catches up.

    Records carrying a ``report`` (the behaviours' reports, built from values the
    reporting process no longer touches) are formatted by the writer; any other record
    is formatted by the caller, so that its message shows its arguments as they were.

    ``dropped`` is the total number of records dropped so far.
    """

    # Seconds the writer waits, after the first line of a batch, for more before it
    # takes the GIL to format them (0: write at once).
    _gather = 0.0

    def __init__(
        self,
        stream: IO[str] | None = None,
        *,
        max_queue: int = 10_000,
        level: int = logging.NOTSET,
        close_timeout: float = 2.0,
    ) -> None:
        if not isinstance(max_queue, int) or max_queue < 1:
            raise ValueError(f"LogSink: max_queue expects an int >= 1, got {max_queue!r}")
        super().__init__(level)
        self.stream: IO[str] = stream if stream is not None else sys.stderr
        self.max_queue = max_queue
        self.close_timeout = close_timeout
        self._q: Any = _queue.SimpleQueue()
        # Lock-free between the producers and the writer: each counter has one writing
        # side. Producers (any thread; put_message takes no handler lock) count under
        # _counting, a plain lock held for a few operations (an RLock costs 3x more).
        self._counting = OSLock()
        self._accepted = 0  # producer
        self._taken = 0  # writer
        self.dropped = 0  # producer
        self._reported = 0  # writer
        self._closed = False
        self._done = OSLock()
        self._done.acquire()
        start_os_thread(self._run, name=f"otp-log-writer-{id(self):x}")

    def createLock(self) -> None:
        # An OS-level RLock: held only for an O(1) enqueue, never across I/O, and safe
        # whether the caller is a greenlet or a real thread. (gevent's monkey-patching
        # replaces ``threading.RLock`` but leaves the C ``_thread.RLock`` alone.)
        import _thread

        self.lock = _thread.RLock()

    # -- producer side (any thread; the handler lock serialises producers) -----------

    def emit(self, record: logging.LogRecord) -> None:
        item: Any = record
        if "report" not in record.__dict__ and (
            self._accepted - self._taken < self.max_queue  # else dropped: no formatting
        ):
            try:
                item = self.format(record)
            except Exception:
                self.handleError(record)
                return
        self._put(item)

    def _put(self, item: Any) -> None:
        counting = self._counting
        counting.acquire()
        try:
            if self._closed:
                return
            if self._accepted - self._taken >= self.max_queue:
                self.dropped += 1
                return
            self._accepted += 1
            self._q.put((item, self.dropped))
        finally:
            counting.release()

    def put_message(self, msg: Any, args: Any) -> None:
        """Queue the line ``str(msg) % args`` (what the stdlib's default formatter makes of
        a record without exception info), formatted by the writer."""
        self._put((msg, args))

    @property
    def pending(self) -> int:
        """Records accepted but not yet taken by the writer."""
        return self._accepted - self._taken

    def drain(self, timeout: float | None = None) -> bool:
        """Block the *calling OS thread* until everything queued so far is written
        (and a pending drop count reported); False if ``timeout`` passed first. For
        tests and shutdown; never call it from a process on a live node, it stalls the
        hub for as long as the stream does."""
        lock = OSLock()
        lock.acquire()
        self._q.put(_Sync(lock))
        return bool(lock.acquire(True, -1 if timeout is None else timeout))

    def flush(self) -> None:
        """Does not wait for the writer (that could block on a stalled reader)."""

    def close(self) -> None:
        """Stop accepting records, let the writer finish (up to ``close_timeout``)."""
        if not self._closed:
            self._closed = True
            self._q.put(_STOP)
            self._done.acquire(True, self.close_timeout)
        super().close()

    # -- writer side (the OS thread) --------------------------------------------------

    def _run(self) -> None:
        q = self._q
        empty = _queue.Empty
        pause = OSLock()
        pause.acquire()  # held for good: acquiring it again is a sleep without the GIL
        try:
            while True:
                batch = [q.get()]
                if self._gather:
                    pause.acquire(True, self._gather)
                try:
                    while len(batch) < _BATCH:
                        batch.append(q.get(False))
                except empty:
                    pass
                out: list[str] = []
                for item in batch:
                    if item is _STOP:
                        self._write_out(out)
                        self._write_out([self._drops_text(self.dropped)])
                        return
                    if isinstance(item, _Sync):
                        self._write_out(out)
                        out = []
                        if self.pending == 0:
                            self._write_out([self._drops_text(self.dropped)])
                        item.lock.release()
                        continue
                    payload, dropped_before = item
                    self._taken += 1
                    if dropped_before != self._reported:
                        out.append(self._drops_text(dropped_before))
                    if payload.__class__ is tuple:
                        try:  # put_message's line, the common case, without a call
                            out.append(str(payload[0]) % payload[1] + "\n" if payload[1]
                                       else str(payload[0]) + "\n")  # fmt: skip
                            continue
                        except Exception:
                            pass
                    text = self._render(payload)
                    if text is not None:
                        out.append(text + "\n")
                if self.pending == 0:
                    out.append(self._drops_text(self.dropped))
                self._write_out(out)
        finally:
            self._done.release()

    def _render(self, payload: Any) -> str | None:
        if payload.__class__ is str:
            return payload
        if payload.__class__ is tuple:  # put_message
            msg, args = payload
            try:
                return str(msg) % args if args else str(msg)
            except Exception:
                payload = _LogRecord("otp.report", logging.ERROR, "", 0, msg, args, None)
        try:
            return self.format(payload)
        except Exception:
            self.handleError(payload)
            return None

    def _drops_text(self, upto: int) -> str:
        n = upto - self._reported
        if n <= 0:
            return ""
        self._reported = upto
        when = _timestamp(datetime.datetime.now().timestamp())
        word = "record" if n == 1 else "records"
        return (f"=WARNING REPORT==== {when} ===\n"
                f"{_INDENT}otp.logger: {n} {word} dropped (the log sink was full)\n")

    def _out_stream(self) -> IO[str]:
        return self.stream

    def _write_out(self, parts: list[str]) -> None:
        text = "".join(parts)
        if not text:
            return
        stream = self._out_stream()
        try:
            stream.write(text)
        except Exception:
            # Report through logging's own mechanism, never by raising in the writer.
            self.handleError(logging.LogRecord("otp.logger", logging.ERROR, "", 0, text, None,
                                               sys.exc_info()))
        try:
            stream.flush()
        except Exception:
            pass


class _StderrSink(LogSink):
    """Where ``log_report`` sends what no handler would see: written like the stdlib's
    last-resort handler (the message, on whatever ``sys.stderr`` is when written).

    Its writer gathers lines for 10 ms: the hub releases the GIL on each turn, so a
    writer that woke for every line would take the GIL (and two thread switches) once
    per restart of a crashing child; this way it takes it once per batch."""

    _gather = 0.01

    def _out_stream(self) -> IO[str]:
        return sys.stderr


def setup(
    level: int | str = logging.INFO,
    *,
    stream: IO[str] | None = None,
    max_queue: int = 10_000,
    logger: str = "",
) -> LogSink:
    """Install a ``LogSink`` with a ``ReportFormatter`` on ``logger`` (the root logger
    by default) at ``level``, replacing a sink installed there earlier; returns it.

    ``stream`` defaults to ``sys.stderr`` (program output keeps stdout).
    """
    target = logging.getLogger(logger or None)
    for h in list(target.handlers):
        if isinstance(h, LogSink):
            target.removeHandler(h)
            h.close()
    sink = LogSink(stream, max_queue=max_queue)
    sink.setFormatter(ReportFormatter())
    target.addHandler(sink)
    target.setLevel(level)
    return sink
