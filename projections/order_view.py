"""The order status view: one order's current state, folded from its own stream."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from orderlog.events import RecordedEvent
from orderlog.store import format_time


@dataclass(frozen=True)
class OrderView:
    order_id: str | None = None
    user_id: str | int | None = None
    item_ids: tuple[str | int, ...] = ()
    total_amount: str | None = None
    status: str | None = None
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
            "status": self.status,
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
    data = event.data
    return replace(
        view,
        order_id=data["order_id"],
        user_id=data["user_id"],
        item_ids=tuple(data["item_ids"]),
        total_amount=data["total_amount"],
        status="Pending",
        placed_at=event.recorded_at,
    )


def _started(view: OrderView, event: RecordedEvent) -> OrderView:
    return replace(
        view,
        status="Processing",
        attempts=event.data.get("attempt", view.attempts + 1),
        processing_started_at=event.recorded_at,
    )


def _completed(view: OrderView, event: RecordedEvent) -> OrderView:
    return replace(view, status="Completed", completed_at=event.recorded_at)


_HANDLERS: dict[str, Callable[[OrderView, RecordedEvent], OrderView]] = {
    "OrderPlaced": _placed,
    "OrderProcessingStarted": _started,
    "OrderCompleted": _completed,
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
