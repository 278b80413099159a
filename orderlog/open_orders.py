"""Which orders still need work: a follower of the log kept by each node's worker.

It reads the log after its own position and keeps only the orders not yet
Completed, so its memory follows the backlog, not the log's length. The worker's
sweep asks it, on start-up and then periodically, what to pick up.
"""

from __future__ import annotations

import orjson

from orderlog.events import OrderCompleted, OrderPlaced, OrderProcessingStarted
from orderlog.order import Status
from orderlog.policy import OpenOrder, node_of
from orderlog.store import EventStore, parse_time

_loads = orjson.loads

_PLACED = OrderPlaced.__name__
_STARTED = OrderProcessingStarted.__name__
_COMPLETED = OrderCompleted.__name__


class OpenOrders:
    def __init__(self) -> None:
        self.position = 0
        self.orders: dict[str, OpenOrder] = {}

    def catch_up(self, store: EventStore, page: int = 5000) -> None:
        """Follow the log from where it stopped. Rows are decoded only as far as needed:
        an order Completed within the page is skipped whole, since it needs no work."""
        while rows := store.read_all_raw(self.position, page):
            done = {row[1] for row in rows if row[3] == _COMPLETED}
            for _, stream_id, version, kind, data, metadata, recorded_at in rows:
                if stream_id in done:
                    continue
                if kind == _PLACED:
                    # The accepting node is context (metadata), not part of the fact.
                    node = _loads(metadata).get("node")
                    since = parse_time(recorded_at).timestamp()
                    self.orders[stream_id] = OpenOrder(
                        stream_id, Status.PENDING, version, since, node
                    )
                elif kind == _STARTED:
                    claim = OrderProcessingStarted(**_loads(data))  # fields by name
                    since = parse_time(recorded_at).timestamp()
                    self.orders[stream_id] = OpenOrder(
                        stream_id,
                        Status.PROCESSING,
                        version,
                        since,
                        node_of(claim.worker_id),
                        claim.worker_id,
                        claim.attempt,
                    )
            for stream_id in done:
                self.orders.pop(stream_id, None)
            self.position = rows[-1][0]
            if len(rows) < page:
                return
