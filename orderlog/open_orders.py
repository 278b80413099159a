"""Which orders still need work: a follower of the log kept by each node's worker.

It reads the log after its own position and keeps only the orders not yet
Completed, so its memory follows the backlog, not the log's length. The worker
asks it, on start-up and then periodically, what to enqueue or re-claim.
"""

from __future__ import annotations

from dataclasses import dataclass

from orderlog.events import RecordedEvent
from orderlog.store import EventStore


@dataclass
class OpenOrder:
    order_id: str
    status: str  # "Pending" or "Processing"
    since: float  # epoch seconds of the last transition
    node: str | None  # the node that accepted it (Pending) or claimed it (Processing)
    worker_id: str | None = None
    attempt: int = 0


class OpenOrders:
    def __init__(self) -> None:
        self.position = 0
        self.orders: dict[str, OpenOrder] = {}

    def catch_up(self, store: EventStore, page: int = 5000) -> None:
        for event in store.iter_all(self.position, page):
            self.apply(event)
            self.position = event.position

    def apply(self, event: RecordedEvent) -> None:
        since = event.recorded_at.timestamp()
        if event.type == "OrderPlaced":
            self.orders[event.stream_id] = OpenOrder(
                event.stream_id, "Pending", since, event.metadata.get("node")
            )
        elif event.type == "OrderProcessingStarted":
            worker_id = event.data.get("worker_id")
            self.orders[event.stream_id] = OpenOrder(
                event.stream_id,
                "Processing",
                since,
                node_of(worker_id),
                worker_id,
                event.data.get("attempt", 1),
            )
        elif event.type == "OrderCompleted":
            self.orders.pop(event.stream_id, None)


def worker_id_for(node: str, incarnation: str, index: int) -> str:
    """Worker ids read node/incarnation/index, so a restarted node knows its old claims."""
    return f"{node}/{incarnation}/{index}"


def node_of(worker_id: str | None) -> str | None:
    return worker_id.rsplit("/", 2)[0] if worker_id and worker_id.count("/") >= 2 else None


def incarnation_of(worker_id: str | None) -> str | None:
    return worker_id.rsplit("/", 2)[1] if worker_id and worker_id.count("/") >= 2 else None
