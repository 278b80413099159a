"""Checking the log: can this release read every event, and does every stream keep the
order's rules? ``orderlog log check``.

Operators run it before deploying a release (above all one that adds an event version
and its upcaster): every event is decoded and upcast as this release reads it, and
every stream is folded with the write side's own rules (``orderlog.domain.order``).
The check is a pure fold over recorded events (``LogCheck``); ``check_store`` feeds it
the log in pages through the store's feed read, and ``open_log`` opens an existing log
without migrating it, writing to it or taking the node lock, so it runs beside serving
nodes. Memory grows with the streams only: per stream the few fields of its
``OrderState`` the rules read, never its events, and problems are handed out as found.
It imports orderlog only.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TextIO

import orjson

from orderlog.config import both_names
from orderlog.domain.errors import (
    FutureEventError,
    InvalidTransitionError,
    SchemaError,
    StartupError,
    StoreUnavailableError,
    shown,
)
from orderlog.domain.events import (
    EVENT_TYPES,
    Event,
    OrderPlaced,
    OrderProcessingStarted,
    RecordedEvent,
    decode_event,
)
from orderlog.domain.order import (
    OrderState,
    Status,
    apply_state,
    complete_order,
    start_processing,
)
from orderlog.domain.upcasting import upcast
from orderlog.storage import schema
from orderlog.storage.database import explain_failure, open_database, redact
from orderlog.storage.event_versions import SCHEMA_VERSION as EVENT_VERSIONS_SCHEMA
from orderlog.storage.row import COLUMNS, decode
from orderlog.storage.store import EventStore

KNOWN_TYPES = ", ".join(EVENT_TYPES)
PROGRESS_EVERY = 3.0  # seconds between progress lines


@dataclass(frozen=True)
class Problem:
    """One thing wrong at one position of the log, said in one line."""

    position: int
    stream_id: str
    type: str
    reason: str

    def __str__(self) -> str:
        # repr: a stored type or stream id may hold anything, a line break included.
        where = f"{shown(self.type)!r} in stream {shown(self.stream_id)!r}"
        return f"position {self.position}: {where}: {' '.join(self.reason.split())}"


def read_event(event: RecordedEvent) -> tuple[Event | None, list[str]]:
    """The event as this release reads it (None for a type it does not know, or one it
    cannot decode), and why it cannot be read, if so."""
    reasons = []
    try:
        metadata = orjson.loads(event.metadata_json)
        if not isinstance(metadata, dict):
            reasons.append("metadata is not a JSON object")
    except (orjson.JSONDecodeError, TypeError) as exc:
        reasons.append(f"metadata is not JSON: {exc}")
    if event.type not in EVENT_TYPES:
        return None, [f"unknown type: this release knows {KNOWN_TYPES}", *reasons]
    decoded, reason = _decode_data(event)
    return decoded, reasons if reason is None else [reason, *reasons]


def _decode_data(event: RecordedEvent) -> tuple[Event | None, str | None]:
    """The typed event, as ``RecordedEvent.event`` gives it, or why it cannot be had."""
    try:
        data = orjson.loads(event.data_json)
    except (orjson.JSONDecodeError, TypeError) as exc:
        return None, f"data is not JSON: {exc}"
    if not isinstance(data, dict):
        return None, "data is not a JSON object"
    try:
        data = upcast(event.type, event.event_version, data)
    except FutureEventError as exc:
        return None, str(exc)
    except KeyError:  # below version 1: no upcaster starts there
        return None, f"stored at v{event.event_version}, which no upcaster reads"
    try:
        return decode_event(event.type, data), None
    except KeyError as exc:
        return None, f"data does not fit {event.type}: no field {exc}"
    except (TypeError, ValueError) as exc:
        return None, f"data does not fit {event.type}: {exc}"


def broken_rule(state: OrderState, stream_id: str, event: Event) -> str | None:
    """What the write side's rules say against ``event`` following ``state`` in the
    stream ``stream_id``: the rule that would have written it refuses, or would have
    written another event. None when the rules would have written just this."""
    if event.order_id != stream_id:
        return f"names order {shown(str(event.order_id))!r}"
    if isinstance(event, OrderPlaced):
        # place_order writes an OrderPlaced only for an order not placed yet (a retry
        # writes nothing); every later event sets a status.
        return None if state.status is None else "the order was placed already"
    try:
        if isinstance(event, OrderProcessingStarted):
            (expected,) = start_processing(state, stream_id, event.worker_id)
        else:
            (expected,) = complete_order(state, stream_id)
    except InvalidTransitionError as exc:
        return str(exc)
    if event != expected:
        return f"attempt {event.attempt!r}, where the rules give attempt {expected.attempt}"
    return None


# Per stream: the state the rules read (the placed order and the worker left out: no
# rule reads them), or only its version once the stream holds an event this release
# cannot read (the write side cannot fold such a stream at all) or one its rules
# refuse (its state is then none the rules could have made): past that point the rules
# would only repeat the problem, so only each event's own reading and its version are
# checked.
StreamState = OrderState | int


@functools.lru_cache(maxsize=4096)
def _shared(version: int, status: Status | None, attempt: int) -> OrderState:
    """One OrderState for every stream at the same place (most end at the same one):
    a million streams then hold a few hundred states, not a million."""
    return OrderState(version, status, None, attempt)


class LogCheck:
    """The check's fold over the log in position order, page after page."""

    def __init__(self) -> None:
        self._streams: dict[str, StreamState] = {}

    @property
    def streams(self) -> int:
        return len(self._streams)

    def check(self, events: Iterable[RecordedEvent]) -> list[Problem]:
        """The problems in ``events``, the next events of the log."""
        return [
            Problem(event.position, event.stream_id, event.type, reason)
            for event in events
            for reason in self._step(event)
        ]

    def _step(self, recorded: RecordedEvent) -> list[str]:
        """Fold one event into its stream's state; why it is wrong there, if it is."""
        event, reasons = read_event(recorded)
        stream_id = recorded.stream_id
        before = self._streams.get(stream_id, OrderState())
        version = before if isinstance(before, int) else before.version
        if recorded.version != version + 1:
            reasons.append(f"version {recorded.version} follows version {version} in its stream")
        if isinstance(before, int) or (event is None and recorded.type in EVENT_TYPES):
            self._streams[stream_id] = recorded.version
            return reasons
        # From the version the log gives, so a gap is said once, not at every later event.
        state = OrderState(recorded.version - 1, before.status, None, before.attempt)
        if event is not None and (broken := broken_rule(state, stream_id, event)):
            self._streams[stream_id] = recorded.version
            return [*reasons, broken]
        # An unknown type (event None) takes its place and changes nothing else, as on
        # the write side.
        after = apply_state(state, event)
        self._streams[stream_id] = _shared(after.version, after.status, after.attempt)
        return reasons


def check_events(events: Iterable[RecordedEvent]) -> list[Problem]:
    """Every problem in a whole log, given as its events in position order."""
    return LogCheck().check(events)


@dataclass(frozen=True)
class Summary:
    """What a check read, and how many problems it found."""

    events: int
    streams: int
    first: int
    last: int
    problems: int

    def __str__(self) -> str:
        said = f"checked {_count(self.events, 'event')} in {_count(self.streams, 'stream')}"
        if self.events:
            said += f" at positions {self.first}..{self.last}"
        if not self.problems:
            return said + ": all readable"
        return said + f": {_count(self.problems, 'problem')}"


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


# (position reached, the head when the check began, events checked, seconds so far)
Progress = Callable[[int, int, int, float], None]


def check_store(
    store: EventStore,
    found: Callable[[Problem], None],
    *,
    page: int = 5000,
    progress: Progress | None = None,
    every: float = PROGRESS_EVERY,
) -> Summary:
    """Check the whole log, up to at least the head when the check begins, reading it
    in pages; ``found`` is told each problem as it is found, ``progress`` where the
    check is at most every ``every`` seconds, and once at the end."""
    log = LogCheck()
    events = problems = first = after = 0
    head = store.head()
    started = shown_at = time.monotonic()
    while True:
        rows = store.read_all_raw(after, page)
        for row in rows:
            for problem in _check_row(log, row):
                problems += 1
                found(problem)
        if rows:
            events += len(rows)
            first = first or rows[0][_POSITION]
            after = rows[-1][_POSITION]
        now = time.monotonic()
        if progress and now - shown_at >= every:
            progress(after, head, events, now - started)
            shown_at = now
        if len(rows) < page or after >= head:
            break
    if progress:
        progress(after, head, events, time.monotonic() - started)
    return Summary(events, log.streams, first, after, problems)


_POSITION, _TIME = COLUMNS.index("position"), COLUMNS.index("recorded_at")
_SOME_TIME = "1970-01-01T00:00:00.000000Z"


def _check_row(log: LogCheck, row: tuple[Any, ...]) -> list[Problem]:
    """The problems of one row of the log. A row whose time does not parse (which every
    other reader of the log fails on) is said so, and checked as if it had a time."""
    said: list[Problem] = []
    try:
        event = decode(row)
    except (TypeError, ValueError) as exc:
        event = decode((*row[:_TIME], _SOME_TIME, *row[_TIME + 1 :]))
        reason = f"recorded_at {shown(str(row[_TIME]))!r} is not a time: {exc}"
        said.append(Problem(event.position, event.stream_id, event.type, reason))
    return said + log.check([event])


def progress_printer(stream: TextIO) -> Progress:
    """Progress as a line on ``stream``: the position reached, the events per second."""

    def show(position: int, head: int, events: int, seconds: float) -> None:
        rate = events / seconds if seconds > 0 else 0.0
        stream.write(
            f"log check: at position {position} of {max(head, position)}, "
            f"{events:,} events ({rate:,.0f} events/s)\n"
        )
        stream.flush()

    return show


def open_log(database_url: str) -> EventStore:
    """The store of an existing log, to be read only: nothing is created, migrated or
    written, and no lock a node takes is taken. A database with no orderlog log, or
    with a schema newer than this release knows, is refused (StartupError)."""
    db = open_database(database_url, must_exist=True)
    try:
        found = schema.current_version(db)
        if found == 0:
            raise StartupError(
                f"no orderlog log in {redact(database_url)}",
                f"check {both_names('database_url')}: the check never creates one",
            )
        if found > schema.LATEST:
            raise SchemaError(
                f"the database's schema is version {found}, newer than this orderlog "
                f"knows ({schema.LATEST})",
                "check the log with the release that wrote it",
            )
    except StoreUnavailableError as exc:
        db.close_all()
        raise explain_failure(exc.__cause__ or exc, database_url) from exc
    except BaseException:
        db.close_all()
        raise
    store = EventStore(db, group_commit=False)  # not opened: open() migrates
    if found < EVENT_VERSIONS_SCHEMA:
        store.read_before_event_versions()
    return store
