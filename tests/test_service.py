"""The order service on a real store, every backend, no HTTP: placing an order with and
without an Idempotency-Key, and the worker's batch of completions and claims."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal

import pytest

from orderlog.domain.errors import (
    ConcurrencyError,
    IdempotencyKeyExpiredError,
    IdempotencyKeyReusedError,
    InvalidTransitionError,
    OrderConflictError,
)
from orderlog.domain.order import OrderState, PlaceOrder, Status
from orderlog.service import OrderService, Seen
from projections import order_status
from tests.support import make_store

TTL = 60.0
BODY = {"user_id": 5, "item_ids": ["sku-9"], "total_amount": "7.00"}


@pytest.fixture
def service(database_url: str) -> Iterator[OrderService]:
    store = make_store(database_url)
    yield OrderService(store, idempotency_ttl=TTL)
    store.close()


def unnamed(**changes: object) -> PlaceOrder:
    """A command parsed from a body without order_id, as a client sends with a key."""
    return PlaceOrder.from_payload({**BODY, **changes})


def claim(service: OrderService, order_id: str, worker_id: str = "w/1/0") -> None:
    """Claim the order as it stands now, as a worker would."""
    seen = [Seen(order_id, service.state(order_id))]
    service.complete_and_start([], seen, worker_id=worker_id, metadata={})


def test_a_key_names_the_order_and_a_retry_replays_the_first_answer(
    service: OrderService,
) -> None:
    first = service.place_order(unnamed(), idempotency_key="k1", client="alice")
    assert first.created and not first.replayed
    claim(service, first.order_id)  # the order moves on

    again = service.place_order(unnamed(), idempotency_key="k1", client="alice")
    assert again.replayed and not again.created
    assert again.order_id == first.order_id
    assert again.events == first.events  # the order as first placed, not as it is now
    assert first.events[0].metadata["idempotency_key"] == "k1"
    assert len(service.history(first.order_id)) == 2


def test_the_same_key_from_another_client_names_another_order(service: OrderService) -> None:
    alice = service.place_order(unnamed(), idempotency_key="k1", client="alice")
    bob = service.place_order(unnamed(), idempotency_key="k1", client="bob")
    assert alice.created and bob.created
    assert alice.order_id != bob.order_id


def test_a_key_sent_again_with_another_order_is_refused_and_writes_nothing(
    service: OrderService,
) -> None:
    first = service.place_order(unnamed(), idempotency_key="k1")
    head = service.store.head()
    with pytest.raises(IdempotencyKeyReusedError):
        service.place_order(unnamed(total_amount="8.00"), idempotency_key="k1")
    assert service.store.head() == head
    assert service.state(first.order_id).placed.total_amount == "7.00"


def test_a_key_is_honoured_for_its_lifetime_and_refused_after(service: OrderService) -> None:
    first = service.place_order(unnamed(), idempotency_key="k1")
    placed_at = first.events[0].recorded_at

    at_the_end = placed_at + timedelta(seconds=TTL)
    assert service.place_order(unnamed(), idempotency_key="k1", now=at_the_end).replayed
    with pytest.raises(IdempotencyKeyExpiredError):
        service.place_order(unnamed(), idempotency_key="k1", now=at_the_end + timedelta(seconds=1))


def test_a_key_beside_an_order_id_only_goes_into_the_metadata(service: OrderService) -> None:
    named = PlaceOrder("o-1", 5, ("sku-9",), Decimal("7.00"))
    first = service.place_order(named, idempotency_key="k1")
    again = service.place_order(named, idempotency_key="k1")
    assert first.order_id == again.order_id == "o-1"
    assert first.created and not again.created and not again.replayed
    assert first.events[0].metadata["idempotency_key"] == "k1"
    with pytest.raises(OrderConflictError) as refused:
        service.place_order(PlaceOrder("o-1", 6, ("sku-9",), Decimal("7.00")))
    assert not isinstance(refused.value, IdempotencyKeyReusedError)


def test_each_order_placed_is_handed_on_with_its_state(service: OrderService) -> None:
    told: list[tuple[str, OrderState]] = []
    service.on_placed = lambda order_id, state: told.append((order_id, state))
    named = PlaceOrder("o-1", 5, ("sku-9",), Decimal("7.00"))
    service.place_order(named)
    service.place_order(named)  # a retry places nothing, and tells no one
    assert [(order_id, state.status, state.version) for order_id, state in told] == [
        ("o-1", Status.PENDING, 1)
    ]


def test_a_batch_completes_and_claims_in_one_go_each_order_on_its_own(
    service: OrderService,
) -> None:
    for order_id in ("done", "next", "raced", "placed"):
        service.place_order(PlaceOrder(order_id, 1, ("a",), Decimal("1")))
    claim(service, "done")
    stale = service.state("raced")
    claim(service, "raced", "other")

    completed, claimed = service.complete_and_start(
        [Seen("done", service.state("done")), Seen("placed", service.state("placed"))],
        [Seen("next", service.state("next")), Seen("raced", stale)],
        worker_id="w/1/0",
        metadata={"node": "n1"},
    )

    assert isinstance(completed[0], OrderState) and completed[0].status is Status.COMPLETED
    assert isinstance(completed[1], InvalidTransitionError)  # Pending: nothing to complete
    assert isinstance(claimed[0], OrderState) and claimed[0].worker_id == "w/1/0"
    assert isinstance(claimed[1], ConcurrencyError)  # another worker claimed it first
    assert [e.type for e in service.history("placed")] == ["OrderPlaced"]
    assert service.history("next")[-1].metadata["node"] == "n1"


def test_claims_and_completions_name_their_cause_and_carry_the_correlation(
    service: OrderService,
) -> None:
    told: dict[str, OrderState] = {}
    service.on_placed = told.__setitem__
    service.place_order(
        PlaceOrder("o-1", 1, ("a",), Decimal("1")), metadata={"correlation_id": "r1"}
    )
    _, (claimed,) = service.complete_and_start(
        [], [Seen("o-1", told["o-1"])], worker_id="w/1/0", metadata={"node": "n1"}
    )
    assert isinstance(claimed, OrderState)
    (completed,), _ = service.complete_and_start(
        [Seen("o-1", claimed)], [], worker_id="w/1/0", metadata={"node": "n1"}
    )
    assert isinstance(completed, OrderState)

    placed, claim_event, completion = (e.metadata for e in service.history("o-1"))
    assert "causation_id" not in placed
    assert claim_event["causation_id"] == placed["event_id"]
    assert completion["causation_id"] == claim_event["event_id"]
    assert [m["correlation_id"] for m in (placed, claim_event, completion)] == ["r1"] * 3
    assert claim_event["node"] == completion["node"] == "n1"
    # The states handed back know the last event without reading the stream again.
    assert completed.last_event_id == completion["event_id"]
    assert service.state("o-1") == completed


def test_an_order_placed_without_a_correlation_id_gets_none_later(
    service: OrderService,
) -> None:
    service.place_order(PlaceOrder("o-1", 1, ("a",), Decimal("1")))
    claim(service, "o-1")
    placed, claim_event = (e.metadata for e in service.history("o-1"))
    assert "correlation_id" not in claim_event
    assert claim_event["causation_id"] == placed["event_id"]


def test_a_new_orders_answer_from_its_placing_is_the_order_its_log_shows(
    service: OrderService,
) -> None:
    """A POST answers from the event it has just appended, without decoding it: the same
    order, field for field, that folding the order's stream shows."""
    placing = service.place_order(
        PlaceOrder("fresh-1", 42, (1, "sku-2"), Decimal("19.90"), currency="SEK"),
        metadata={"correlation_id": "req-1", "node": "node-a"},
    )
    assert placing.created and placing.placed is not None
    fresh = order_status.placed_row(placing.events[0], placing.placed, "node-a")
    folded = order_status.fold(service.store.read_stream("fresh-1"))
    assert folded is not None
    assert fresh == folded
    assert order_status.view(fresh) == order_status.view(folded)
    assert order_status.view(fresh)["total_amount"] == "19.90"
    # An identical retry appended nothing: nothing to answer from but the log.
    again = service.place_order(
        PlaceOrder("fresh-1", 42, (1, "sku-2"), Decimal("19.90"), currency="SEK")
    )
    assert not again.created and again.placed is None
