"""The log's rows: their columns, events encoded for the writer, rows decoded for readers.

Also what a row holds besides the event: its event id (in the metadata) and the moment
it was recorded, as text the log keeps. It imports the domain and orjson.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson

from orderlog.domain.events import Event, RecordedEvent, event_data, event_type
from orderlog.domain.ids import new_uuid
from orderlog.domain.upcasting import current_version

# The log's columns, in the order every row is written and read. ``event_version`` is
# the version of its type the event was written at (schema version 8; NULL in the rows
# written before it, which are version 1).
COLUMNS = (
    "position",
    "stream_id",
    "version",
    "type",
    "data",
    "metadata",
    "recorded_at",
    "event_version",
)
COLUMN_LIST = ", ".join(COLUMNS)
_dumps = orjson.dumps


class EncodedEvent(NamedTuple):
    """An event ready for the log: its type, fields and metadata, both as JSON text, and
    the version of its type it is written at (always the current one).

    Callers encode, so the single writer thread does as little Python work per
    event as possible; ``data`` and ``metadata`` are kept to build the recorded event.
    """

    type: str
    data: dict[str, Any]
    metadata: dict[str, Any]
    data_json: str
    metadata_json: str
    event_version: int


def encode(
    events: Sequence[Event], metadata: Mapping[str, Any] | None = None
) -> list[EncodedEvent]:
    """Events as the log stores them, each with its own event id in its metadata."""
    shared = dict(metadata or {})
    encoded = []
    for event in events:
        data = event_data(event)
        meta = {"event_id": new_event_id(), **shared}
        name = event_type(event)
        encoded.append(
            EncodedEvent(
                name,
                data,
                meta,
                _dumps(data).decode(),
                _dumps(meta).decode(),
                current_version(name),
            )
        )
    return encoded


# Every event's id: a random UUID (version 4), made without a system call.
new_event_id = new_uuid


def utc_now() -> datetime:
    return datetime.now(UTC)


def format_time(moment: datetime) -> str:
    return moment.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


# An alias, not a wrapper: replay parses a timestamp per event.
parse_time = datetime.fromisoformat


def decode(row: tuple[Any, ...]) -> RecordedEvent:
    """A row read in ``COLUMNS`` order, as the recorded event it holds."""
    position, stream_id, version, type_name, data, metadata, recorded_at, event_version = row
    return RecordedEvent(
        position,
        stream_id,
        version,
        type_name,
        parse_time(recorded_at),
        data,
        metadata,
        recorded_at,
        event_version or 1,  # NULL: written before versions were stored, at version 1
    )
