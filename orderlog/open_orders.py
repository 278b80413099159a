"""Which orders still need work: a follower of the log kept by each node's worker.

It reads the log after its own position and keeps only the orders not yet
Completed, so its memory follows the backlog, not the log's length. The worker's
sweep asks it, on start-up and then periodically, what to pick up.
"""

from __future__ import annotations

from orderlog.events import OrderCompleted, OrderPlaced, OrderProcessingStarted, RecordedEvent
from orderlog.order import Status
from orderlog.policy import OpenOrder, node_of
from orderlog.store import EventStore

_PLACED = OrderPlaced.__name__
_STARTED = OrderProcessingStarted.__name__
_COMPLETED = OrderCompleted.__name__


class OpenOrders:
    def __init__(self) -> None:
        self.position = 0
        self.orders: dict[str, OpenOrder] = {}

    def catch_up(self, store: EventStore, page: int = 5000) -> None:
        for events in store.iter_pages(self.position, page):
            for event in events:
                self.apply(event)
            self.position = events[-1].position

    def apply(self, event: RecordedEvent) -> None:
        kind = event.type
        if kind == _PLACED:
            self.orders[event.stream_id] = OpenOrder(
                event.stream_id,
                Status.PENDING,
                event.version,
                event.recorded_at.timestamp(),
                event.metadata.get("node"),  # metadata is optional context, not a field
            )
        elif kind == _STARTED:
            worker_id = event.data["worker_id"]
            self.orders[event.stream_id] = OpenOrder(
                event.stream_id,
                Status.PROCESSING,
                event.version,
                event.recorded_at.timestamp(),
                node_of(worker_id),
                worker_id,
                event.data["attempt"],
            )
        elif kind == _COMPLETED:
            self.orders.pop(event.stream_id, None)
