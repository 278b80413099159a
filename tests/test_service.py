"""The order service on a real store, every backend, no HTTP: placing an order, and the
worker's batch of completions and claims."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest

from orderlog.domain.errors import ConcurrencyError, InvalidTransitionError
from orderlog.domain.order import OrderState, PlaceOrder, Status
from orderlog.service import OrderService, Seen
from tests.support import make_store


@pytest.fixture
def service(database_url: str) -> Iterator[OrderService]:
    store = make_store(database_url)
    yield OrderService(store)
    store.close()


def claim(service: OrderService, order_id: str, worker_id: str = "w/1/0") -> None:
    """Claim the order as it stands now, as a worker would."""
    seen = [Seen(order_id, service.state(order_id))]
    service.complete_and_start([], seen, worker_id=worker_id, metadata={})


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
