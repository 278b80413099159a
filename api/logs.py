"""Logging for the process: text or JSON lines, each record carrying the request it belongs to.

While a request is handled its id sits in a context variable, and a filter puts
it on every record logged meanwhile, by any module, so a JSON log can be
searched by request id. The access log is one line per request: method, route
template (never the raw path, which would be unbounded), status, duration, id.
"""

from __future__ import annotations

import contextvars
import logging
import sys

from pythonjsonlogger.json import JsonFormatter

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "orderlog_request_id", default=None
)
ACCESS = logging.getLogger("orderlog.access")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


def configure(level: str, style: str = "text") -> None:
    """One handler on stderr, text or JSON, with the request id on every record."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RequestIdFilter())
    if style == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
                rename_fields={"levelname": "level", "name": "logger", "asctime": "time"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


def access(method: str, route: str, status: int, seconds: float, request_id: str) -> None:
    """The access line; JSON logs get each part as its own field."""
    if ACCESS.isEnabledFor(logging.INFO):
        ACCESS.info(
            "%s %s %d %.1fms %s",
            method,
            route,
            status,
            seconds * 1000,
            request_id,
            extra={
                "method": method,
                "route": route,
                "status": status,
                "duration_ms": round(seconds * 1000, 3),
            },
        )
