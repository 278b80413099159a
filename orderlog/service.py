"""The application service: every command on an order, and the one way they reach the log.

Each command takes the order's state (read here, or as its caller read it), asks the
rules in ``orderlog.domain.order`` and appends at the version that state was read
at, so the rules stay pure and the store stays the only thing that writes. A lost
race surfaces as ConcurrencyError. The worker's claims and completions come here
in batches, committed together. It imports the domain and the store.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from orderlog.domain.errors import (
    ConcurrencyError,
    InvalidTransitionError,
    OrderlogError,
    OrderNotFoundError,
)
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


class Seen(NamedTuple):
    """An order as its caller last read it: a command on it appends at that version."""

    order_id: str
    state: OrderState


# Per order of a batch: its state after the command, or why the command did not land.
Outcome = OrderState | OrderlogError


class OrderService:
    def __init__(self, store: EventStore) -> None:
        self.store = store
        # Told of each order placed here, with its state, so the node's worker claims it
        # at once rather than at its next sweep; set once, where the node is built.
        self.on_placed: Callable[[str, OrderState], None] | None = None

    # -- placing ---------------------------------------------------------------------

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
            if self.on_placed:
                self.on_placed(command.order_id, fold_state_from(_state(history), new))
            return history + recorded, True
        raise ConcurrencyError(command.order_id, 0, len(history))

    # -- reading ---------------------------------------------------------------------

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

    # -- the worker's commands ---------------------------------------------------------

    def complete_and_start(
        self,
        complete: Sequence[Seen],
        start: Sequence[Seen],
        *,
        worker_id: str,
        metadata: Mapping[str, Any],
    ) -> tuple[list[Outcome], list[Outcome]]:
        """complete_order each of ``complete``, and start_processing each of ``start`` as
        ``worker_id`` (a claim), all in one commit; completions come first in the log, so
        an order leaves the work before the next is claimed.

        Each order is appended at the version its state was read at, so of two claims
        on one version only one lands. Returns, for each list in order, each order's
        new state or its error: InvalidTransitionError when the rules refuse it,
        ConcurrencyError when someone else moved it first, StoreUnavailableError.
        """
        decided = [_decide(seen, complete_order, seen.order_id) for seen in complete]
        decided += [_decide(seen, start_processing, seen.order_id, worker_id) for seen in start]
        requests = [
            AppendRequest(seen.order_id, events, seen.state.version, metadata)
            for seen, events in decided
            if not isinstance(events, OrderlogError)
        ]
        try:
            results = self.store.append_many(requests)
        except OrderlogError as exc:
            results = [exc] * len(requests)
        landed = iter(results)
        outcomes: list[Outcome] = []
        for seen, events in decided:
            if isinstance(events, OrderlogError):  # refused by the rules: nothing appended
                outcomes.append(events)
                continue
            result = next(landed)
            if isinstance(result, OrderlogError):
                outcomes.append(result)
            else:
                outcomes.append(fold_state_from(seen.state, events))
        return outcomes[: len(complete)], outcomes[len(complete) :]


def _decide(
    seen: Seen, rule: Callable[..., list[Event]], *args: str
) -> tuple[Seen, list[Event] | InvalidTransitionError]:
    """What ``rule`` decides for the order as seen: its events, or its refusal."""
    try:
        return seen, rule(seen.state, *args)
    except InvalidTransitionError as exc:
        return seen, exc


def _state(history: list[RecordedEvent]) -> OrderState:
    return fold_state(event.event for event in history)


def fold_state_from(state: OrderState, new: Sequence[Event]) -> OrderState:
    """The state after ``new`` events, without reading the stream again."""
    for event in new:
        state = apply_state(state, event)
    return state
