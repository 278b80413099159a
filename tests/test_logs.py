"""The log's writer and the access line: order, prompt warnings, nothing lost on close,
and the same shape whichever way a line is made."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator

import orjson
import pytest

from api import logs
from tests.support import wait_for

NEVER = 3600.0  # the writer thread does not wake on its own within a test


def record(level: int, message: str) -> logging.LogRecord:
    return logging.LogRecord("t", level, __file__, 1, message, None, None)


@pytest.fixture
def stream() -> Iterator[tuple[logs.BatchedStream, io.StringIO]]:
    out = io.StringIO()
    handler = logs.BatchedStream(out, every=NEVER)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    yield handler, out
    handler.close()


def test_info_lines_wait_for_the_writer_and_a_warning_writes_everything_before_it(
    stream: tuple[logs.BatchedStream, io.StringIO],
) -> None:
    handler, out = stream
    handler.handle(record(logging.INFO, "one"))
    handler.write_line("two, made by hand")
    assert out.getvalue() == ""  # queued, not yet written
    handler.handle(record(logging.WARNING, "three"))
    assert out.getvalue().splitlines() == ["INFO one", "two, made by hand", "WARNING three"]


def test_closing_writes_what_is_queued(stream: tuple[logs.BatchedStream, io.StringIO]) -> None:
    handler, out = stream
    for n in range(5):
        handler.handle(record(logging.INFO, f"line {n}"))
    handler.close()
    assert out.getvalue().splitlines() == [f"INFO line {n}" for n in range(5)]


def test_the_writer_thread_writes_on_its_own() -> None:
    out = io.StringIO()
    handler = logs.BatchedStream(out, every=0.01)
    try:
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        handler.handle(record(logging.INFO, "soon"))
        # The writer's own round, not a flush by this thread: wait on its output.
        wait_for(out.getvalue, what="the writer thread's batch")
        assert out.getvalue() == "INFO soon\n"
    finally:
        handler.close()


@pytest.fixture
def captured(capsys: pytest.CaptureFixture[str]) -> Iterator[pytest.CaptureFixture[str]]:
    yield capsys
    logs.configure("WARNING", "text")


def test_the_access_line_has_the_text_format_of_every_other_line(
    captured: pytest.CaptureFixture[str],
) -> None:
    logs.configure("INFO", "text")
    logs.access("POST", "/orders", 201, 0.0123, "rid-1")
    logging.getLogger("orderlog.test").info("other")
    logs.configure("WARNING", "text")  # closes the handler: everything is written
    lines = captured.readouterr().err.splitlines()
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"
    assert re.fullmatch(rf"{stamp} INFO orderlog\.access: POST /orders 201 12\.3ms rid-1", lines[0])
    assert re.fullmatch(rf"{stamp} INFO orderlog\.test: other", lines[1])


def test_the_json_access_line_has_the_fields_of_a_json_record(
    captured: pytest.CaptureFixture[str],
) -> None:
    logs.configure("INFO", "json")
    logs.access("GET", "/orders/{order_id}", 404, 0.0005, "rid-2")
    logging.getLogger("orderlog.test").info("other")
    logs.configure("WARNING", "text")
    fast, other = (orjson.loads(line) for line in captured.readouterr().err.splitlines())
    assert fast == {
        "time": fast["time"],
        "level": "INFO",
        "logger": "orderlog.access",
        "message": "GET /orders/{order_id} 404 0.5ms rid-2",
        "request_id": "rid-2",
        "method": "GET",
        "route": "/orders/{order_id}",
        "status": 404,
        "duration_ms": 0.5,
    }
    assert set(other) == {"time", "level", "logger", "message", "request_id"}
    assert len(fast["time"]) == len(other["time"])


def test_no_access_line_below_its_level(captured: pytest.CaptureFixture[str]) -> None:
    logs.configure("WARNING", "text")
    logs.access("POST", "/orders", 201, 0.001, "rid-3")
    logs.configure("WARNING", "text")
    assert captured.readouterr().err == ""
