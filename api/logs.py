"""Logging for the process: text or JSON lines, each record carrying the request it belongs to.

While a request is handled its id sits in a context variable, and a filter puts
it on every record logged meanwhile, by any module, so a JSON log can be
searched by request id. The access log is one line per request: method, route
template (never the raw path, which would be unbounded), status, duration, id.
Lines go to stderr through one writer thread, in batches (``BatchedStream``).
"""

from __future__ import annotations

import collections
import contextvars
import logging
import sys
import threading
import time
from typing import TextIO

import orjson
from pythonjsonlogger.orjson import OrjsonFormatter

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "orderlog_request_id", default=None
)
ACCESS = logging.getLogger("orderlog.access")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


class BatchedStream(logging.Handler):
    """Records are queued by the thread that logs them and written out by one thread,
    many lines to a write.

    Writing each access line to stderr from the HTTP thread that handled the request
    made every request give up the GIL for a system call and wait to take it back
    behind the other threads: on a busy server that cost more than the rest of the
    request's logging together (about 100 µs of CPU per order). Lines now reach
    stderr within ``every`` seconds; a WARNING or worse is written at once, after
    what was queued before it, and closing (at exit, or when logging is configured
    again) writes whatever is left.
    """

    def __init__(self, stream: TextIO, every: float = 0.05) -> None:
        super().__init__()
        self.stream = stream
        self._every = every
        self._queued: collections.deque[logging.LogRecord | str] = collections.deque()
        self._writing = threading.Lock()  # one batch at a time, lines never interleave
        self._closing = threading.Event()
        self._writer = threading.Thread(target=self._run, name="orderlog-log", daemon=True)
        self._writer.start()

    def emit(self, record: logging.LogRecord) -> None:
        self._queued.append(record)  # no lock, no system call: a deque append is atomic
        if record.levelno >= logging.WARNING:
            self.flush()

    def write_line(self, line: str) -> None:
        """A line already formatted (the access log's), queued like a record."""
        self._queued.append(line)

    def flush(self) -> None:
        with self._writing:
            lines = []
            while self._queued:
                record = self._queued.popleft()
                if isinstance(record, str):
                    lines.append(record)
                    continue
                try:
                    lines.append(self.format(record))
                except Exception:  # as logging.StreamHandler does: report, carry on
                    self.handleError(record)
            if lines:
                try:
                    self.stream.write("\n".join(lines) + "\n")
                    self.stream.flush()
                except (OSError, ValueError):  # stderr closed or gone: nowhere to report
                    pass

    def close(self) -> None:
        self._closing.set()
        if self._writer.is_alive() and self._writer is not threading.current_thread():
            self._writer.join(5)
        self.flush()
        super().close()

    def _run(self) -> None:
        while not self._closing.wait(self._every):
            self.flush()


def configure(level: str, style: str = "text", *, batched: bool = True) -> None:
    """One handler on stderr, text or JSON, with the request id on every record.

    ``batched`` False writes each record at once, from the thread that logs it, and
    starts no thread: for a process that forks (``api.supervisor``), which must have
    no thread when it does, and logs little.
    """
    handler: logging.Handler = BatchedStream(sys.stderr) if batched else logging.StreamHandler()
    handler.addFilter(_RequestIdFilter())
    if style == "json":
        handler.setFormatter(
            OrjsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
                rename_fields={"levelname": "level", "name": "logger", "asctime": "time"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        if isinstance(old, BatchedStream):
            old.close()  # writes what it still holds, and ends its thread
    root.addHandler(handler)
    root.setLevel(level.upper())
    global _SINK, _JSON
    _SINK, _JSON = handler if isinstance(handler, BatchedStream) else None, style == "json"


_SINK: BatchedStream | None = None  # where configure() sends the log, once it has run
_JSON = False
_second: tuple[int, str] = (-1, "")


def access(method: str, route: str, status: int, seconds: float, request_id: str) -> None:
    """The access line; JSON logs get each part as its own field.

    Once ``configure`` has run, the line is formatted here and queued for the log's
    writer as it is, in the same format as every other record: a LogRecord, its
    filter and its formatter cost more than the rest of a request's bookkeeping.
    """
    if not ACCESS.isEnabledFor(logging.INFO):
        return
    millis = seconds * 1000
    sink = _SINK
    if sink is None:  # logging set up by someone else: go through it
        ACCESS.info(
            "%s %s %d %.1fms %s",
            method,
            route,
            status,
            millis,
            request_id,
            extra={"method": method, "route": route, "status": status,
                   "duration_ms": round(millis, 3)},
        )  # fmt: skip
        return
    now = time.time()
    stamp = f"{_clock(int(now))},{int(now * 1000) % 1000:03d}"
    message = f"{method} {route} {status} {millis:.1f}ms {request_id}"
    if _JSON:
        sink.write_line(
            orjson.dumps(
                {
                    "time": stamp,
                    "level": "INFO",
                    "logger": ACCESS.name,
                    "message": message,
                    "request_id": request_id,
                    "method": method,
                    "route": route,
                    "status": status,
                    "duration_ms": round(millis, 3),
                }
            ).decode()
        )
    else:
        sink.write_line(f"{stamp} INFO {ACCESS.name}: {message}")


def _clock(second: int) -> str:
    """The local time of a second as logging's default asctime writes it, once a second."""
    global _second
    cached, text = _second
    if cached != second:
        text = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        _second = (second, text)
    return text
