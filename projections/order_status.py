"""The order-status read model: each order as the log last showed it, and its JSON view.

``apply`` folds one event into an order's row, a pure function dispatched by
event type; ``view`` is the order as the API shows it. The one fold and the one
view serve every reader: the persisted rows behind the listing and the worker's
sweep, and ``GET /orders/{id}`` (and a POST's answer), which folds the order's own
stream.

The rows are kept in ``orderlog.storage.read_models`` with their checkpoint, in
one transaction, so a restart resumes from the checkpoint instead of replaying the
log, and the worker finds open orders with one indexed query. Any number of
followers (every node's projector, a sweep's own catching up, a rebuild) may catch
up at once: a write lands only if the checkpoint is still where the follower read
it, and otherwise it reads again from the new one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import orjson

from orderlog.domain.events import (
    OrderCompleted,
    OrderPlaced,
    OrderProcessingStarted,
    RecordedEvent,
)
from orderlog.domain.order import Status
from orderlog.domain.policy import OpenOrder, node_of
from orderlog.domain.upcasting import current_version
from orderlog.storage.read_models import CheckpointMovedError, OrderRow, OrderStatusTables
from orderlog.storage.store import EventStore, format_time, parse_time

MAX_LIST = 1000  # orders in one page of the listing, at most


# -- the fold ------------------------------------------------------------------------------


# The statuses as the rows hold them (an enum's .value costs two calls, per event).
_PENDING, _PROCESSING, _COMPLETED = (
    Status.PENDING.value,
    Status.PROCESSING.value,
    Status.COMPLETED.value,
)


def _at(event: RecordedEvent) -> str:
    return event.recorded_at_text or format_time(event.recorded_at)


def _placed(row: OrderRow | None, event: RecordedEvent) -> OrderRow | None:
    if row is not None:
        return _moved(row, event)
    data = event.data  # as the current version of OrderPlaced has it
    placed = OrderPlaced(**data)  # fields by name: a renamed field fails here
    # The fields as stored when they are the current version's (no work per event on
    # replay), else upcast: the row always holds the current version.
    if event.event_version != current_version(event.type):
        event = event._replace(data_json=orjson.dumps(data).decode())
    # The accepting node is context, in the metadata.
    return placed_row(event, placed, event.metadata.get("node"))


def placed_row(event: RecordedEvent, placed: OrderPlaced, node: str | None) -> OrderRow:
    """The row of an order just placed: ``event`` recorded ``placed`` (its fields as
    stored at the current version) on ``node``. The fold makes it from the log; a
    POST's answer from the event it has just appended, with nothing to decode."""
    return OrderRow(
        event.stream_id,
        str(placed.user_id),
        _PENDING,
        event.data_json,
        placed.currency,
        0,
        node,
        None,
        _at(event),
        None,
        None,
        event.version,
        event.position,
        event.position,
    )


def _started(row: OrderRow | None, event: RecordedEvent) -> OrderRow | None:
    if row is None:
        return None  # no order without its OrderPlaced
    claim = OrderProcessingStarted(**event.data)
    # Built whole rather than by NamedTuple._replace, which costs several times more:
    # the projector does this for every event.
    return OrderRow(
        row.order_id,
        row.user_key,
        _PROCESSING,
        row.placed,
        row.currency,
        claim.attempt,
        node_of(claim.worker_id),
        claim.worker_id,
        row.placed_at,
        _at(event),
        row.completed_at,
        event.version,
        event.position,
        row.placed_position,
    )


def _completed(row: OrderRow | None, event: RecordedEvent) -> OrderRow | None:
    if row is None:
        return None
    return OrderRow(
        row.order_id,
        row.user_key,
        _COMPLETED,
        row.placed,
        row.currency,
        row.attempts,
        row.node,
        row.worker_id,
        row.placed_at,
        row.started_at,
        _at(event),
        event.version,
        event.position,
        row.placed_position,
    )


def _moved(row: OrderRow | None, event: RecordedEvent) -> OrderRow | None:
    """Only the place in the stream and the log (an event that changes nothing shown)."""
    return None if row is None else row._replace(version=event.version, position=event.position)


_HANDLERS: dict[str, Callable[[OrderRow | None, RecordedEvent], OrderRow | None]] = {
    OrderPlaced.__name__: _placed,
    OrderProcessingStarted.__name__: _started,
    OrderCompleted.__name__: _completed,
}


def apply(row: OrderRow | None, event: RecordedEvent) -> OrderRow | None:
    """The order's row after one more event of its stream (None: no order yet); a type
    unknown here only moves its version and position."""
    return _HANDLERS.get(event.type, _moved)(row, event)


def fold(events: Iterable[RecordedEvent]) -> OrderRow | None:
    """One order's row from its stream (None if the stream holds no OrderPlaced)."""
    row = None
    for event in events:
        row = apply(row, event)
    return row


# -- the view ------------------------------------------------------------------------------


def view(row: OrderRow) -> dict[str, Any]:
    """The order as the API shows it: ``GET /orders/{id}``, a POST's answer, and each
    order of the listing."""
    placed = orjson.loads(row.placed)
    started, completed = row.started_at, row.completed_at
    seconds = None
    if started and completed:
        seconds = (parse_time(completed) - parse_time(started)).total_seconds()
    return {
        "order_id": row.order_id,
        "user_id": placed["user_id"],
        "item_ids": placed["item_ids"],
        "total_amount": placed["total_amount"],
        "currency": row.currency,
        "status": row.status,
        "version": row.version,
        "attempts": row.attempts,
        "placed_at": row.placed_at,
        "processing_started_at": started,
        "completed_at": completed,
        "processing_time_seconds": seconds,
    }


# -- the persisted rows ----------------------------------------------------------------------


class OrderPage(NamedTuple):
    """One page of the listing, and the cursor of the next one (None after the last)."""

    rows: list[OrderRow]
    next_after: int | None


class OrderStatusModel:
    """The read model over one store: catch up, and answer the questions asked of it.

    Its rows live in one of two tables, and its checkpoint names the live one. A
    rebuild fills the other from position 0 while the live one keeps serving, then
    swaps it in with one transaction: readers read the name with every question, so
    every node serves the rebuilt rows at once, and a follower that wrote against the
    old table finds its checkpoint moved. ``shadow=True`` is such a rebuild's own
    view: the table not live, its own checkpoint.
    """

    def __init__(self, store: EventStore, *, page: int = 5000, shadow: bool = False) -> None:
        self.store = store
        self._page = page
        self._tables = OrderStatusTables(store, shadow=shadow)

    def pointer(self) -> tuple[int, str]:
        """(checkpoint, table) of this view: where it is and where its rows are."""
        return self._tables.pointer()

    def checkpoint(self) -> int:
        return self._tables.pointer()[0]

    # -- keeping it current --------------------------------------------------------------

    def catch_up(self, until: int | None = None) -> int:
        """Apply the log's new events to the rows; returns the checkpoint reached.

        Reads and writes a page at a time, each page one short transaction, always
        from the checkpoint as stored. ``until`` stops once the checkpoint is at or
        past that position.
        """
        while True:
            start = self.checkpoint()
            if until is not None and start >= until:
                return start
            events = self.store.read_all(start, self._page)
            if not events:
                return start
            self.apply_page(start, events)

    def apply_page(self, after: int, events: Sequence[RecordedEvent]) -> int:
        """Apply what ``events`` (the log right after ``after``, as one read returned it)
        holds past the checkpoint; returns the checkpoint afterwards.

        What is applied always starts exactly at the stored checkpoint, and is written
        only if the checkpoint is still there (compare-and-set), so rows never skip an
        event whoever else is following. A checkpoint this page cannot continue (moved
        behind ``after`` by a rebuild swapped in, or at or past the page's end by
        another follower) is returned as it is: the caller reads on from there.
        """
        if not events:
            return self.checkpoint()
        end = events[-1].position
        while True:
            position, table = self.pointer()
            if not after <= position < end:
                return position
            rest = [event for event in events if event.position > position]
            ids = list({event.stream_id for event in rest})
            rows: dict[str, OrderRow | None] = {
                row.order_id: row for row in self._tables.rows(ids, table)
            }
            for event in rest:
                rows[event.stream_id] = apply(rows.get(event.stream_id), event)
            try:
                self._tables.save(position, end, table, rows)
            except CheckpointMovedError:
                continue  # another follower wrote first: go on from where it left the rows
            return end

    def reset(self) -> None:
        """Forget every row and the checkpoint of this view (to refill it from position 0)."""
        self._tables.reset()

    def swap_in(self) -> int:
        """Make this shadow the live rows, in one transaction; returns its checkpoint.

        The checkpoint goes with the rows: followers continue from it, whether it is
        behind or ahead of where the live one was."""
        return self._tables.swap_in()

    # -- questions (always of the live rows) ----------------------------------------------

    def get(self, order_id: str) -> OrderRow | None:
        rows = self._tables.rows([order_id])
        return rows[0] if rows else None

    def open_orders(self) -> list[OpenOrder]:
        """Every order not yet Completed, as the worker's sweep needs it."""
        return [_open_order(row) for row in self._tables.open_rows()]

    def list(
        self,
        *,
        status: str | None = None,
        user_key: str | None = None,
        after: int = 0,
        limit: int = 100,
    ) -> OrderPage:
        """Up to ``limit`` (at most MAX_LIST) orders oldest first (by the position of their
        OrderPlaced) after a cursor, with the next page's cursor if there are more."""
        limit = max(1, min(limit, MAX_LIST))
        # One row past the page says whether there is another.
        found = self._tables.page(status=status, user_key=user_key, after=after, limit=limit + 1)
        rows = found[:limit]
        return OrderPage(rows, rows[-1].placed_position if len(found) > limit else None)


def _open_order(row: OrderRow) -> OpenOrder:
    status = Status(row.status)
    since = row.started_at if status is Status.PROCESSING and row.started_at else row.placed_at
    return OpenOrder(
        row.order_id,
        status,
        row.version,
        parse_time(since).timestamp(),
        row.node,
        row.worker_id,
        row.attempts,
    )
