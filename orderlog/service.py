"""The application service: every command on an order, and the one way they reach the log.

Each command takes the order's state (read here, or as its caller read it), asks the
rules in ``orderlog.domain.order`` and appends at the version that state was read
at, so the rules stay pure and the store stays the only thing that writes. A lost
race surfaces as ConcurrencyError. Placing an order holds the idempotency rules as
well: an order sent with a key and no id of its own takes its id from the key, a
retry with the key gets the first answer again while the key lives, and the key
never places a second, different order. The worker's claims and completions come
here in batches, committed together. It imports the domain and the store.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, NamedTuple

from orderlog.domain.errors import (
    ConcurrencyError,
    IdempotencyKeyExpiredError,
    IdempotencyKeyReusedError,
    InvalidTransitionError,
    OrderConflictError,
    OrderlogError,
    OrderNotFoundError,
)
from orderlog.domain.events import Event, OrderPlaced, RecordedEvent
from orderlog.domain.order import (
    OrderState,
    PlaceOrder,
    apply_state,
    complete_order,
    idempotent_order_id,
    is_order_id,
    place_order,
    start_processing,
)
from orderlog.storage.row import utc_now
from orderlog.storage.store import AppendRequest, EventStore


class Placement(NamedTuple):
    """What placing an order answers.

    ``events``: the order's, as the client is to see them. ``created``: this call
    placed it. ``replayed``: a retry with the key of the call that placed it, given
    that call's answer again (the order as first placed, ``created`` then False).
    """

    order_id: str
    events: list[RecordedEvent]
    created: bool
    replayed: bool = False
    # The OrderPlaced this call appended (``events`` then end with it as recorded).
    placed: OrderPlaced | None = None


class Seen(NamedTuple):
    """An order as its caller last read it: a command on it appends at that version."""

    order_id: str
    state: OrderState


# Per order of a batch: its state after the command, or why the command did not land.
Outcome = OrderState | OrderlogError


class OrderService:
    def __init__(self, store: EventStore, *, idempotency_ttl: float) -> None:
        """``idempotency_ttl``: seconds an Idempotency-Key is honoured."""
        self.store = store
        self.idempotency_ttl = idempotency_ttl
        # Told of each order placed here, with its state, so the node's worker claims it
        # at once rather than at its next sweep; set once, where the node is built.
        self.on_placed: Callable[[str, OrderState], None] | None = None

    # -- placing ---------------------------------------------------------------------

    def place_order(
        self,
        command: PlaceOrder,
        *,
        idempotency_key: str | None = None,
        client: str = "",
        now: datetime | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Placement:
        """Place an order, once, whatever the retries.

        With an ``idempotency_key`` and no order id from the client, the order's id
        comes from the key and ``client`` (the token's name), so a retry lands on the
        same order: it is answered as the first call was, unless the key was first
        used more than ``idempotency_ttl`` before ``now`` (IdempotencyKeyExpiredError),
        or with another order (IdempotencyKeyReusedError). Without a key, an
        identical retry creates nothing and answers the order as it stands; the same
        id with different content raises OrderConflictError.
        """
        keyed = idempotency_key is not None and not command.id_given
        if idempotency_key is not None:
            metadata = {**(metadata or {}), "idempotency_key": idempotency_key}
        if keyed:
            order_id = idempotent_order_id(idempotency_key, client)  # type: ignore[arg-type]
            command = replace(command, order_id=order_id)
        try:
            events, new = self._place(command, metadata)
        except OrderConflictError:
            if keyed:
                raise IdempotencyKeyReusedError(command.order_id) from None
            raise
        created = bool(new)
        if not keyed or created:
            placed = new[0] if created and isinstance(new[0], OrderPlaced) else None
            return Placement(command.order_id, events, created, placed=placed)
        age = ((now or utc_now()) - events[0].recorded_at).total_seconds()
        if age > self.idempotency_ttl:
            raise IdempotencyKeyExpiredError(age, self.idempotency_ttl)
        return Placement(command.order_id, events[:1], created=False, replayed=True)

    def _place(
        self, command: PlaceOrder, metadata: Mapping[str, Any] | None
    ) -> tuple[list[RecordedEvent], list[Event]]:
        """The order's events, and those of them this call appended (none: it appended
        nothing). Most orders are new, so the first attempt appends as if the stream
        were empty and reads the stream only when that loses: the version check makes
        that safe."""
        history: list[RecordedEvent] = []
        for _ in range(3):
            new = place_order(_state(history), command)
            if not new:
                return history, []
            try:
                recorded = self.store.append(command.order_id, new, len(history), metadata)
            except ConcurrencyError:
                # The id exists (a retry, a conflict, or a racing twin): decide on the log.
                history = self.store.read_stream(command.order_id)
                continue
            if self.on_placed:
                self.on_placed(command.order_id, fold_recorded(_state(history), new, recorded))
            return history + recorded, new
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
        an order leaves the work before the next is claimed. Each event's metadata is
        ``metadata`` with the order's causes (``_caused_by``).

        Each order is appended at the version its state was read at, so of two claims
        on one version only one lands. Returns, for each list in order, each order's
        new state or its error: InvalidTransitionError when the rules refuse it,
        ConcurrencyError when someone else moved it first, StoreUnavailableError.
        """
        decided = [_decide(seen, complete_order, seen.order_id) for seen in complete]
        decided += [_decide(seen, start_processing, seen.order_id, worker_id) for seen in start]
        requests = [
            AppendRequest(
                seen.order_id, events, seen.state.version, _caused_by(seen.state, metadata)
            )
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
                outcomes.append(fold_recorded(seen.state, events, result))
        return outcomes[: len(complete)], outcomes[len(complete) :]


def _decide(
    seen: Seen, rule: Callable[..., list[Event]], *args: str
) -> tuple[Seen, list[Event] | InvalidTransitionError]:
    """What ``rule`` decides for the order as seen: its events, or its refusal."""
    try:
        return seen, rule(seen.state, *args)
    except InvalidTransitionError as exc:
        return seen, exc


def _caused_by(state: OrderState, metadata: Mapping[str, Any]) -> Mapping[str, Any]:
    """``metadata`` for an event on the order as ``state`` has it: with the request that
    placed it (correlation_id) and the stream's last event (causation_id), where known."""
    caused = dict(metadata)
    if state.correlation_id is not None:
        caused["correlation_id"] = state.correlation_id
    if state.last_event_id is not None:
        caused["causation_id"] = state.last_event_id
    return caused


def _state(history: list[RecordedEvent]) -> OrderState:
    if not history:  # most orders placed: nothing to fold
        return _NO_ORDER
    return fold_recorded(_NO_ORDER, [recorded.event for recorded in history], history)


_NO_ORDER = OrderState()


def fold_recorded(
    state: OrderState, new: Sequence[Event], recorded: Sequence[RecordedEvent]
) -> OrderState:
    """The state after ``new`` events, as ``recorded`` in the log, without reading the
    stream again or decoding their data: only their metadata, for their ids."""
    for event, row in zip(new, recorded, strict=True):
        state = apply_state(state, event, row.metadata)
    return state
