"""Event types: frozen dataclasses, past-tense facts, and the one name -> class registry.

An event's class name is its stored ``type``, so moving this module never breaks
the log. ``RecordedEvent`` is an event as the log holds it: with its stream,
version, global position, metadata and the time it was recorded.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import orjson

from orderlog.domain.upcasting import current_version, upcast


@dataclass(frozen=True)
class OrderPlaced:
    order_id: str
    user_id: str | int
    item_ids: tuple[str | int, ...]
    total_amount: str  # exact decimal as text: money never passes through float
    # ISO 4217, three letters A-Z (v2; an OrderPlaced stored at v1 reads as USD, the
    # currency every order was in before orders named one: orderlog.domain.upcasting).
    currency: str = "USD"


@dataclass(frozen=True)
class OrderProcessingStarted:
    order_id: str
    attempt: int
    worker_id: str


@dataclass(frozen=True)
class OrderCompleted:
    order_id: str
    attempt: int


Event = OrderPlaced | OrderProcessingStarted | OrderCompleted

EVENT_TYPES: dict[str, type[Any]] = {
    cls.__name__: cls for cls in (OrderPlaced, OrderProcessingStarted, OrderCompleted)
}


def event_type(event: Event) -> str:
    return type(event).__name__


_FIELDS: dict[type[Any], tuple[str, ...]] = {
    cls: tuple(f.name for f in dataclasses.fields(cls)) for cls in EVENT_TYPES.values()
}


def event_data(event: Event) -> dict[str, Any]:
    """The event's fields as JSON-ready data (dataclasses.asdict is 10x slower)."""
    data = {name: getattr(event, name) for name in _FIELDS[type(event)]}
    if isinstance(event, OrderPlaced):
        data["item_ids"] = list(event.item_ids)
    return data


def decode_event(type_name: str, data: dict[str, Any]) -> Event | None:
    """The typed event for a stored row, or None for a type this version does not know."""
    cls = EVENT_TYPES.get(type_name)
    if cls is None:
        return None
    if cls is OrderPlaced:
        data = {**data, "item_ids": tuple(data["item_ids"])}
    return cls(**data)


class RecordedEvent(NamedTuple):
    """One row of the log.

    The event's fields and metadata stay the JSON text the log holds, decoded on
    each read of ``data`` or ``metadata``: replaying a million rows for a read model
    that needs neither (metrics) then decodes nothing, and readers of the raw feed
    see exactly what was stored, even for types this code does not know. A named
    tuple, not a dataclass: a replay builds one per row, and a tuple is built
    several times faster.
    """

    position: int
    stream_id: str
    version: int
    type: str
    recorded_at: datetime
    data_json: str
    metadata_json: str
    recorded_at_text: str = ""  # as the log holds it (UTC, microseconds, "Z")
    # The version of its type the event was written at (absent in the log means 1);
    # ``data`` and ``event`` always give the current version (orderlog.domain.upcasting).
    event_version: int = 1

    @property
    def data(self) -> dict[str, Any]:
        """The event's fields as the current version of its type has them."""
        return upcast(self.type, self.event_version, _loads(self.data_json))

    @property
    def metadata(self) -> dict[str, Any]:
        return _loads(self.metadata_json)  # type: ignore[no-any-return]

    @property
    def event(self) -> Event | None:
        return decode_event(self.type, self.data)

    @classmethod
    def of(
        cls,
        position: int,
        stream_id: str,
        version: int,
        type: str,
        data: dict[str, Any],
        metadata: dict[str, Any],
        recorded_at: datetime,
        event_version: int | None = None,
    ) -> RecordedEvent:
        """From decoded fields: for tests, and readers that rebuild events from a feed
        (``data`` at ``event_version``; by default the current version of its type)."""
        return cls(
            position,
            stream_id,
            version,
            type,
            recorded_at,
            orjson.dumps(data).decode(),
            orjson.dumps(metadata).decode(),
            recorded_at.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z",
            current_version(type) if event_version is None else event_version,
        )


_loads = orjson.loads
