"""The order status view: one order's current state, folded from its own stream.

Events are read as their typed classes, so a field renamed in ``orderlog.domain.events``
fails here at once instead of reading as missing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from orderlog.domain.events import (
    OrderCompleted,
    OrderPlaced,
    OrderProcessingStarted,
    RecordedEvent,
)
from orderlog.domain.order import Status
from orderlog.storage.store import format_time


@dataclass(frozen=True)
class OrderView:
    order_id: str | None = None
    user_id: str | int | None = None
    item_ids: tuple[str | int, ...] = ()
    total_amount: str | None = None
    status: Status | None = None
    version: int = 0
    attempts: int = 0
    placed_at: datetime | None = None
    processing_started_at: datetime | None = None
    completed_at: datetime | None = None

    @property
    def processing_time_seconds(self) -> float | None:
        if self.completed_at and self.processing_started_at:
            return (self.completed_at - self.processing_started_at).total_seconds()
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "order_id": self.order_id,
            "user_id": self.user_id,
            "item_ids": list(self.item_ids),
            "total_amount": self.total_amount,
            "status": self.status.value if self.status else None,
            "version": self.version,
            "attempts": self.attempts,
            "placed_at": _time(self.placed_at),
            "processing_started_at": _time(self.processing_started_at),
            "completed_at": _time(self.completed_at),
            "processing_time_seconds": self.processing_time_seconds,
        }


def _time(moment: datetime | None) -> str | None:
    return format_time(moment) if moment else None


def _placed(view: OrderView, event: RecordedEvent) -> OrderView:
    placed: OrderPlaced = event.event  # type: ignore[assignment]  # fields by name: a rename fails
    return replace(
        view,
        order_id=placed.order_id,
        user_id=placed.user_id,
        item_ids=placed.item_ids,
        total_amount=placed.total_amount,
        status=Status.PENDING,
        placed_at=event.recorded_at,
    )


def _started(view: OrderView, event: RecordedEvent) -> OrderView:
    started: OrderProcessingStarted = event.event  # type: ignore[assignment]
    return replace(
        view,
        status=Status.PROCESSING,
        attempts=started.attempt,
        processing_started_at=event.recorded_at,
    )


def _completed(view: OrderView, event: RecordedEvent) -> OrderView:
    return replace(view, status=Status.COMPLETED, completed_at=event.recorded_at)


_HANDLERS: dict[str, Callable[[OrderView, RecordedEvent], OrderView]] = {
    OrderPlaced.__name__: _placed,
    OrderProcessingStarted.__name__: _started,
    OrderCompleted.__name__: _completed,
}


def apply(view: OrderView, event: RecordedEvent) -> OrderView:
    """The view after one more event of its stream; unknown types only move the version."""
    handler = _HANDLERS.get(event.type)
    view = handler(view, event) if handler else view
    return replace(view, version=event.version)


def fold(events: Iterable[RecordedEvent]) -> OrderView:
    view = OrderView()
    for event in events:
        view = apply(view, event)
    return view
