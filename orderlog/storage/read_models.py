"""The SQL of the order-status read model: its rows, its two tables and its checkpoints.

The rows live in one of two tables (``TABLES``); the row named ``order_status`` in
``projections`` holds the live rows' checkpoint and names their table. A rebuild
fills the other table under a checkpoint of its own (``order_status_shadow``) and
swaps it in with one transaction. Rows and checkpoint are written together, and
only if the checkpoint is still where the writer read it (compare-and-set), so any
number of followers may write at once. What the rows say is decided by the fold in
``projections.order_status``; this module only stores and finds them, through the
event store's connections and write turn.

It imports the domain's errors and the rest of storage; nothing outside ``orderlog``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import peewee

from orderlog.domain.errors import StoreUnavailableError
from orderlog.domain.order import Status
from orderlog.storage.driver_error import is_deadlock
from orderlog.storage.store import EventStore

NAME = "order_status"  # the live rows' checkpoint, and the table they are in at first
SHADOW = "order_status_shadow"  # a rebuild's checkpoint while it fills the other table
TABLES = ("order_status", "order_status_b")  # the two tables the rows alternate between
_OPEN = (Status.PENDING.value, Status.PROCESSING.value)
_IN_CHUNK = 500  # ids per IN (...) list: far below every backend's parameter limit
_ROWS_PER_INSERT = 200


class OrderRow(NamedTuple):
    """One order as the order-status tables hold it (their columns, in order)."""

    order_id: str
    user_key: str  # the user id's text form, so 42 and "42" find the same orders
    status: str
    placed: str  # the OrderPlaced fields as the log holds them (JSON)
    # ISO 4217, as the current OrderPlaced has it: the JSON above is the version the log
    # holds, which for an order placed before orders had a currency names none (USD).
    currency: str
    attempts: int
    node: str | None  # the node that accepted it (Pending) or claimed it (Processing)
    worker_id: str | None
    placed_at: str
    started_at: str | None
    completed_at: str | None
    version: int
    position: int  # of the order's last event
    placed_position: int  # of its OrderPlaced: the listing's order and cursor


_COLUMNS = ", ".join(OrderRow._fields)


class CheckpointMovedError(StoreUnavailableError):
    """The checkpoint moved under a follower (another wrote first, or a rebuild swapped
    in): nothing was written, and the follower reads again from the new checkpoint."""


class OrderStatusTables:
    """The rows and checkpoint of one view of the order-status read model.

    The live view (the default) answers every question; ``shadow=True`` is a
    rebuild's view: the table not live, under its own checkpoint. Questions always
    read the live table's name afresh, so a swap reaches every node at once.
    """

    def __init__(self, store: EventStore, *, shadow: bool = False) -> None:
        self._store = store
        self._p = store.param
        self._name = SHADOW if shadow else NAME
        self._shadow = shadow

    # -- which table, at which position ---------------------------------------------------

    def pointer(self) -> tuple[int, str]:
        """(checkpoint, table) of this view: where it is and where its rows are."""
        rows = self._store.read(
            f"SELECT position, state FROM projections WHERE name = {self._p}", [self._name]
        )
        if rows:
            return rows[0][0], rows[0][1] or TABLES[0]
        if self._shadow:
            return 0, _other(self.live_table())
        return 0, TABLES[0]

    def live_table(self) -> str:
        rows = self._store.read(f"SELECT state FROM projections WHERE name = {self._p}", [NAME])
        return (rows[0][0] if rows else "") or TABLES[0]

    # -- finding rows (``table``: as ``pointer`` named it; otherwise the live one) --------

    def rows(self, ids: Sequence[str], table: str | None = None) -> list[OrderRow]:
        """The rows of these orders that exist."""
        table = table or self.live_table()
        found: list[OrderRow] = []
        for chunk in _chunks(ids):
            found += map(
                OrderRow._make,
                self._store.read(
                    f"SELECT {_COLUMNS} FROM {table} WHERE order_id IN "
                    f"({', '.join([self._p] * len(chunk))})",
                    chunk,
                ),
            )
        return found

    def open_rows(self) -> list[OrderRow]:
        """Every live row not yet Completed (an indexed query: the worker's sweep)."""
        rows = self._store.read(
            f"SELECT {_COLUMNS} FROM {self.live_table()} WHERE status IN ({self._p}, {self._p})",
            list(_OPEN),
        )
        return [OrderRow._make(row) for row in rows]

    def page(
        self, *, status: str | None, user_key: str | None, after: int, limit: int
    ) -> list[OrderRow]:
        """Up to ``limit`` live rows oldest first (by placed_position) after ``after``."""
        p = self._p
        where, params = [f"placed_position > {p}"], [after]
        if status is not None:
            where.append(f"status = {p}")
            params.append(status)
        if user_key is not None:
            where.append(f"user_key = {p}")
            params.append(user_key)
        found = self._store.read(
            f"SELECT {_COLUMNS} FROM {self.live_table()} "
            f"WHERE {' AND '.join(where)} ORDER BY placed_position LIMIT {int(limit)}",
            params,
        )
        return [OrderRow._make(row) for row in found]

    # -- writing -------------------------------------------------------------------------

    def save(self, start: int, end: int, table: str, rows: Mapping[str, OrderRow | None]) -> None:
        """Replace these orders' rows (None: no row) and move the checkpoint from ``start``
        to ``end``, in one transaction; CheckpointMovedError, writing nothing, if the
        checkpoint is no longer at ``start`` in ``table``."""
        try:
            self._write(start, end, table, rows)
        except CheckpointMovedError:
            raise
        except StoreUnavailableError as exc:
            cause = exc.__cause__
            if start == 0 and (isinstance(cause, peewee.IntegrityError) or is_deadlock(cause)):
                # Followers of a new log all found no checkpoint row and all made one: those
                # refused (or chosen as a deadlock's victim) have moved, like any behind.
                raise CheckpointMovedError("another follower made the checkpoint") from exc
            raise

    def _write(self, start: int, end: int, table: str, rows: Mapping[str, OrderRow | None]) -> None:
        p = self._p
        with self._store.writing() as cursor:
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
            if cursor.rowcount != 1:  # another follower got there first: roll back
                raise CheckpointMovedError("the checkpoint moved")
            for chunk in _chunks(list(rows)):
                cursor.execute(
                    f"DELETE FROM {table} WHERE order_id IN ({', '.join([p] * len(chunk))})",
                    chunk,
                )
            kept = [row for row in rows.values() if row is not None]
            one = "(" + ", ".join([p] * len(OrderRow._fields)) + ")"
            for chunk in _chunks(kept, _ROWS_PER_INSERT):
                cursor.execute(
                    f"INSERT INTO {table} ({_COLUMNS}) VALUES " + ", ".join([one] * len(chunk)),
                    [value for row in chunk for value in row],
                )

    def reset(self) -> None:
        """Forget every row and the checkpoint of this view."""
        _, table = self.pointer()
        with self._store.writing() as cursor:
            cursor.execute(f"DELETE FROM {table}")
            cursor.execute(f"DELETE FROM projections WHERE name = {self._p}", [self._name])

    def swap_in(self) -> int:
        """Make this shadow's rows the live ones, with its checkpoint, in one transaction;
        returns that checkpoint."""
        if not self._shadow:
            raise ValueError("only a shadow is swapped in")
        p = self._p
        position, table = self.pointer()
        with self._store.writing() as cursor:
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


def _other(table: str) -> str:
    return TABLES[1] if table == TABLES[0] else TABLES[0]


def _chunks(items: Sequence[Any], size: int = _IN_CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
