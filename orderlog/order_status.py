"""The order-status read model: one row per order, as the log last showed it, persisted.

Each row holds what clients and the worker ask about an order: its status, its
user, its amount and items, when it was placed, claimed and completed, by whom,
its version and position. The rows and their checkpoint (a row in
``projections``) are written in one transaction, so a restart resumes from the
checkpoint instead of replaying the log, and the worker finds open orders with
one indexed query. Any number of followers (every node's sweep, a projector, a
rebuild) may catch up at once: a write lands only if the checkpoint is still
where the follower read it, and otherwise it reads again from the new one.

``apply`` is the fold, a pure function per order; this module also owns the
SQL of its table and reaches the database only through the store.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import orjson
import peewee

from orderlog.domain.errors import StoreUnavailableError
from orderlog.domain.events import (
    OrderCompleted,
    OrderPlaced,
    OrderProcessingStarted,
    RecordedEvent,
)
from orderlog.domain.order import Status
from orderlog.domain.policy import OpenOrder, node_of
from orderlog.storage.database import is_deadlock
from orderlog.storage.store import EventStore, format_time, parse_time

NAME = "order_status"  # the live rows' checkpoint, and the table they are in
SHADOW = "order_status_shadow"  # a rebuild's checkpoint while it fills the other table
TABLES = ("order_status", "order_status_b")  # the two tables the rows alternate between
MAX_LIST = 1000

_PLACED = OrderPlaced.__name__
_STARTED = OrderProcessingStarted.__name__
_COMPLETED = OrderCompleted.__name__
_OPEN = (Status.PENDING.value, Status.PROCESSING.value)
_IN_CHUNK = 500  # ids per IN (...) list: far below every backend's parameter limit


class OrderRow(NamedTuple):
    order_id: str
    user_key: str  # the user id's text form, so 42 and "42" find the same orders
    status: str
    placed: str  # the OrderPlaced fields as the log holds them (JSON)
    attempts: int
    node: str | None  # the node that accepted it (Pending) or claimed it (Processing)
    worker_id: str | None
    placed_at: str
    started_at: str | None
    completed_at: str | None
    version: int
    position: int  # of the order's last event
    placed_position: int  # of its OrderPlaced: the listing's order and cursor

    def view(self) -> dict[str, Any]:
        """The order as ``GET /orders/{id}`` shows it."""
        placed = orjson.loads(self.placed)
        started, completed = self.started_at, self.completed_at
        seconds = None
        if started and completed:
            seconds = (parse_time(completed) - parse_time(started)).total_seconds()
        return {
            "order_id": self.order_id,
            "user_id": placed["user_id"],
            "item_ids": placed["item_ids"],
            "total_amount": placed["total_amount"],
            "status": self.status,
            "version": self.version,
            "attempts": self.attempts,
            "placed_at": self.placed_at,
            "processing_started_at": started,
            "completed_at": completed,
            "processing_time_seconds": seconds,
        }


_COLUMNS = OrderRow._fields


class OrderPage(NamedTuple):
    """One page of the listing, and the cursor of the next one (None after the last)."""

    rows: list[OrderRow]
    next_after: int | None


def apply(row: OrderRow | None, event: RecordedEvent) -> OrderRow | None:
    """The order's row after one more event of its stream (a pure function)."""
    kind = event.type
    at = event.recorded_at_text or format_time(event.recorded_at)
    if kind == _PLACED:
        if row is not None:
            return row._replace(version=event.version, position=event.position)
        placed = OrderPlaced(**event.data)  # fields by name: a renamed field fails here
        return OrderRow(
            event.stream_id,
            str(placed.user_id),
            Status.PENDING.value,
            event.data_json,
            0,
            event.metadata.get("node"),  # the accepting node is context, in the metadata
            None,
            at,
            None,
            None,
            event.version,
            event.position,
            event.position,
        )
    if row is None:
        return None  # no order without its OrderPlaced
    if kind == _STARTED:
        claim = OrderProcessingStarted(**event.data)
        return row._replace(
            status=Status.PROCESSING.value,
            attempts=claim.attempt,
            node=node_of(claim.worker_id),
            worker_id=claim.worker_id,
            started_at=at,
            version=event.version,
            position=event.position,
        )
    if kind == _COMPLETED:
        return row._replace(
            status=Status.COMPLETED.value,
            completed_at=at,
            version=event.version,
            position=event.position,
        )
    return row._replace(version=event.version, position=event.position)  # a type unknown here


class OrderStatusModel:
    """The read model over one store: catch up, and answer the questions asked of it.

    Its rows live in one of two tables; a row in ``projections`` (its checkpoint)
    names the live one. A rebuild fills the other from position 0 while the live
    one keeps serving, then swaps the name in one transaction: readers read the
    name with every question, so every node serves the rebuilt rows at once, and a
    follower that wrote against the old table finds its checkpoint moved.
    ``shadow=True`` is such a rebuild's own view: the table not live, its own
    checkpoint row.
    """

    def __init__(self, store: EventStore, *, page: int = 5000, shadow: bool = False) -> None:
        self.store = store
        self._page = page
        self._p = store.param
        self._name = SHADOW if shadow else NAME
        self._shadow = shadow

    # -- which table, at which position ---------------------------------------------------

    def pointer(self) -> tuple[int, str]:
        """(checkpoint, table) of this view: where it is and where its rows are."""
        rows = self.store.read(
            f"SELECT position, state FROM projections WHERE name = {self._p}", [self._name]
        )
        if rows:
            return rows[0][0], rows[0][1] or TABLES[0]
        if self._shadow:
            return 0, _other(self._live_table())
        return 0, TABLES[0]

    def checkpoint(self) -> int:
        return self.pointer()[0]

    def _live_table(self) -> str:
        rows = self.store.read(f"SELECT state FROM projections WHERE name = {self._p}", [NAME])
        return (rows[0][0] if rows else "") or TABLES[0]

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
            rows: dict[str, OrderRow | None] = {row.order_id: row for row in self._load(table, ids)}
            for event in rest:
                rows[event.stream_id] = apply(rows.get(event.stream_id), event)
            try:
                self._save(position, end, table, rows)
            except _Moved:
                continue  # another follower wrote first: go on from where it left the rows
            return end

    def reset(self) -> None:
        """Forget every row and the checkpoint of this view (to refill it from position 0)."""
        _, table = self.pointer()
        with self.store.writing() as cursor:
            cursor.execute(f"DELETE FROM {table}")
            cursor.execute(f"DELETE FROM projections WHERE name = {self._p}", [self._name])

    def swap_in(self) -> int:
        """Make this shadow the live rows, in one transaction; returns its checkpoint.

        The checkpoint goes with the rows: followers continue from it, whether it is
        behind or ahead of where the live one was."""
        if not self._shadow:
            raise ValueError("only a shadow is swapped in")
        p = self._p
        position, table = self.pointer()
        with self.store.writing() as cursor:
            cursor.execute(
                f"UPDATE projections SET position = {p}, state = {p} WHERE name = {p}",
                [position, table, NAME],
            )
            if cursor.rowcount == 0:
                cursor.execute(
                    f"INSERT INTO projections (name, position, state) VALUES ({p}, {p}, {p})",
                    [NAME, position, table],
                )
            cursor.execute(f"DELETE FROM projections WHERE name = {p}", [SHADOW])
        return position

    def _load(self, table: str, ids: Sequence[str]) -> list[OrderRow]:
        found: list[OrderRow] = []
        for chunk in _chunks(ids):
            found += map(
                OrderRow._make,
                self.store.read(
                    f"SELECT {', '.join(_COLUMNS)} FROM {table} WHERE order_id IN "
                    f"({', '.join([self._p] * len(chunk))})",
                    chunk,
                ),
            )
        return found

    def _save(self, start: int, end: int, table: str, rows: dict[str, OrderRow | None]) -> None:
        """Rows and checkpoint together, only if nobody moved the checkpoint (or swapped
        the table) meanwhile."""
        try:
            self._write(start, end, table, rows)
        except StoreUnavailableError as exc:
            cause = exc.__cause__
            if start == 0 and (isinstance(cause, peewee.IntegrityError) or is_deadlock(cause)):
                # Followers of a new log all found no checkpoint row and all made one: those
                # refused (or chosen as a deadlock's victim) have moved, like any behind.
                raise _Moved from exc
            raise

    def _write(self, start: int, end: int, table: str, rows: dict[str, OrderRow | None]) -> None:
        p = self._p
        kept = [row for row in rows.values() if row is not None]
        with self.store.writing() as cursor:
            if start == 0:
                cursor.execute(f"SELECT 1 FROM projections WHERE name = {p}", [self._name])
                if cursor.fetchone() is None:
                    cursor.execute(
                        f"INSERT INTO projections (name, position, state) VALUES ({p}, 0, {p})",
                        [self._name, table],
                    )
            cursor.execute(
                f"UPDATE projections SET position = {p}, state = {p} "
                f"WHERE name = {p} AND position = {p} AND (state = {p} OR state = '')",
                [end, table, self._name, start, table],
            )
            if cursor.rowcount != 1:
                raise _Moved  # another follower got there first: roll back, read again
            for chunk in _chunks(list(rows)):
                cursor.execute(
                    f"DELETE FROM {table} WHERE order_id IN ({', '.join([p] * len(chunk))})",
                    chunk,
                )
            one = "(" + ", ".join([p] * len(_COLUMNS)) + ")"
            for chunk in _chunks(kept, 200):
                cursor.execute(
                    f"INSERT INTO {table} ({', '.join(_COLUMNS)}) VALUES "
                    + ", ".join([one] * len(chunk)),
                    [value for row in chunk for value in row],
                )

    # -- questions (always of the live rows) ----------------------------------------------

    def get(self, order_id: str) -> OrderRow | None:
        rows = self._load(self._live_table(), [order_id])
        return rows[0] if rows else None

    def open_orders(self) -> list[OpenOrder]:
        """Every order not yet Completed, as the worker's sweep needs it."""
        rows = self.store.read(
            f"SELECT {', '.join(_COLUMNS)} FROM {self._live_table()} "
            f"WHERE status IN ({self._p}, {self._p})",
            list(_OPEN),
        )
        return [_open_order(OrderRow._make(row)) for row in rows]

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
        p = self._p
        where, params = [f"placed_position > {p}"], [after]
        if status is not None:
            where.append(f"status = {p}")
            params.append(status)
        if user_key is not None:
            where.append(f"user_key = {p}")
            params.append(user_key)
        limit = max(1, min(limit, MAX_LIST))
        found = self.store.read(
            f"SELECT {', '.join(_COLUMNS)} FROM {self._live_table()} "
            f"WHERE {' AND '.join(where)} ORDER BY placed_position LIMIT {limit + 1}",
            params,
        )  # one row past the page says whether there is another
        rows = [OrderRow._make(row) for row in found[:limit]]
        return OrderPage(rows, rows[-1].placed_position if len(found) > limit else None)


def _other(table: str) -> str:
    return TABLES[1] if table == TABLES[0] else TABLES[0]


class _Moved(StoreUnavailableError):
    """The checkpoint moved under a follower; it reads again from the new one."""


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


def _chunks(items: Sequence[Any], size: int = _IN_CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
