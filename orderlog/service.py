"""The application service: read a stream, ask the rules, append with the expected version.

Every command follows the same three steps, so the rules stay pure and the store
stays the only thing that writes. A lost race surfaces as ConcurrencyError.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from orderlog.domain.errors import ConcurrencyError, OrderlogError, OrderNotFoundError
from orderlog.domain.events import Event, RecordedEvent
from orderlog.domain.order import (
    OrderState,
    PlaceOrder,
    apply_state,
    complete_order,
    fold_state,
    is_order_id,
    place_order,
    start_processing,
)
from orderlog.storage.store import AppendRequest, EventStore


class OrderService:
    def __init__(
        self, store: EventStore, on_placed: Callable[[str, OrderState], None] | None = None
    ) -> None:
        self.store = store
        self._on_placed = on_placed

    def place_order(
        self, command: PlaceOrder, metadata: Mapping[str, Any] | None = None
    ) -> tuple[list[RecordedEvent], bool]:
        """Place an order; returns its events and whether this call created it.

        An identical retry creates nothing and returns the existing order; the
        same id with different content raises OrderConflictError. Most orders are
        new, so the first attempt appends as if the stream were empty and reads
        the stream only when that loses: the version check makes that safe.
        """
        history: list[RecordedEvent] = []
        for _ in range(3):
            new = place_order(_state(history), command)
            if not new:
                return history, False
            try:
                recorded = self.store.append(command.order_id, new, len(history), metadata)
            except ConcurrencyError:
                # The id exists (a retry, a conflict, or a racing twin): decide on the log.
                history = self.store.read_stream(command.order_id)
                continue
            if self._on_placed:
                self._on_placed(command.order_id, fold_state_from(_state(history), new))
            return history + recorded, True
        raise ConcurrencyError(command.order_id, 0, len(history))

    def history(self, order_id: str, up_to_version: int | None = None) -> list[RecordedEvent]:
        # An id no order can have is not looked up (PostgreSQL refuses a NUL outright).
        if not is_order_id(order_id):
            raise OrderNotFoundError(order_id)
        events = self.store.read_stream(order_id, up_to_version)
        if not events:
            raise OrderNotFoundError(order_id)
        return events

    def state(self, order_id: str) -> OrderState:
        return _state(self.store.read_stream(order_id))

    def start_processing(
        self, order_id: str, state: OrderState, worker_id: str, metadata: Mapping[str, Any]
    ) -> OrderState:
        """Claim the order at the version the caller read; ConcurrencyError if another won."""
        return _one(
            self.record(
                [Decision(order_id, state, start_processing(state, order_id, worker_id))], metadata
            )
        )

    def complete_order(
        self, order_id: str, state: OrderState, metadata: Mapping[str, Any]
    ) -> OrderState:
        return _one(
            self.record([Decision(order_id, state, complete_order(state, order_id))], metadata)
        )

    def record(
        self, decisions: Sequence[Decision], metadata: Mapping[str, Any]
    ) -> list[OrderState | OrderlogError]:
        """Append each decision's events at the version its state was read at, in one commit.

        Returns, in order, each order's new state or its error: ConcurrencyError
        when someone else moved the order first, StoreUnavailableError.
        """
        outcomes = self.store.append_many(
            [AppendRequest(d.order_id, d.events, d.state.version, metadata) for d in decisions]
        )
        return [
            outcome if isinstance(outcome, OrderlogError) else fold_state_from(d.state, d.events)
            for d, outcome in zip(decisions, outcomes, strict=True)
        ]


class Decision(NamedTuple):
    """What the rules decided for one order, from the state the caller read."""

    order_id: str
    state: OrderState
    events: list[Event]


def _one(outcomes: list[OrderState | OrderlogError]) -> OrderState:
    (outcome,) = outcomes
    if isinstance(outcome, OrderlogError):
        raise outcome
    return outcome


def _state(history: list[RecordedEvent]) -> OrderState:
    return fold_state(event.event for event in history)


def fold_state_from(state: OrderState, new: Sequence[Event]) -> OrderState:
    """The state after ``new`` events, without reading the stream again."""
    for event in new:
        state = apply_state(state, event)
    return state
