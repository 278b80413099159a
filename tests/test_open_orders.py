"""The open-orders tracker against a real log: what it keeps is what a plain fold would.

Histories are random (hypothesis), the log is a real SQLite file, and pages are
small, so an order's events fall on different pages and are skipped or kept
exactly as its last event says.
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orderlog.events import OrderCompleted, OrderPlaced, OrderProcessingStarted
from orderlog.open_orders import OpenOrders
from orderlog.order import Status
from orderlog.policy import node_of, worker_id_for
from orderlog.store import EventStore
from tests.support import make_store

# Each order's history: how far it got (1 = placed, 2 = claimed, 3 = completed) and
# how many claims (re-claims) it had on the way.
histories = st.lists(
    st.tuples(st.integers(min_value=1, max_value=3), st.integers(min_value=1, max_value=3)),
    min_size=1,
    max_size=25,
)


def write(store: EventStore, history: list[tuple[int, int]]) -> dict[str, tuple[Status, int, int]]:
    """Append the orders' events interleaved; return what a fold says of the open ones."""
    expected = {}
    steps = []
    for n, (reached, claims) in enumerate(history):
        order_id = f"o{n}"
        events = [OrderPlaced(order_id, "u", ("a",), "1.00")]
        if reached >= 2:
            events += [
                OrderProcessingStarted(order_id, k, worker_id_for(f"node{k}", "x"))
                for k in range(1, claims + 1)
            ]
        if reached == 3:
            events.append(OrderCompleted(order_id, claims))
        else:
            status = Status.PENDING if reached == 1 else Status.PROCESSING
            expected[order_id] = (status, len(events), claims if reached == 2 else 0)
        steps.append((order_id, events))
    version: dict[str, int] = {}
    while any(events for _, events in steps):  # round-robin: orders interleave in the log
        for order_id, events in steps:
            if events:
                store.append(order_id, [events.pop(0)], version.get(order_id, 0), {"node": "n1"})
                version[order_id] = version.get(order_id, 0) + 1
    return expected


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(history=histories, page=st.integers(min_value=1, max_value=7))
def test_the_tracker_keeps_exactly_the_orders_not_completed(
    tmp_path_factory: object, history: list[tuple[int, int]], page: int
) -> None:
    path = Path(tmp_path_factory.mktemp("open")) / "log.db"  # type: ignore[attr-defined]
    store = make_store(f"sqlite:///{path}", group_commit=False)
    try:
        expected = write(store, history)
        tracker = OpenOrders()
        tracker.catch_up(store, page=page)
        assert tracker.position == store.head()
        seen = {o.order_id: (o.status, o.version, o.attempt) for o in tracker.orders.values()}
        assert seen == expected
        for order in tracker.orders.values():
            if order.status is Status.PENDING:
                assert order.node == "n1"  # the accepting node, from the metadata
            else:
                assert order.node == node_of(order.worker_id) == f"node{order.attempt}"
    finally:
        store.close()


def test_catching_up_twice_reads_only_what_is_new(tmp_path: Path) -> None:
    store = make_store(f"sqlite:///{tmp_path / 'log.db'}", group_commit=False)
    try:
        store.append("a", [OrderPlaced("a", "u", ("x",), "1.00")], 0)
        tracker = OpenOrders()
        tracker.catch_up(store)
        store.append("a", [OrderProcessingStarted("a", 1, "n/i/0")], 1)
        store.append("b", [OrderPlaced("b", "u", ("x",), "1.00")], 0)
        tracker.catch_up(store)
        assert {o.order_id: o.status for o in tracker.orders.values()} == {
            "a": Status.PROCESSING,
            "b": Status.PENDING,
        }
        store.append("a", [OrderCompleted("a", 1)], 2)
        tracker.catch_up(store)
        assert list(tracker.orders) == ["b"]
    finally:
        store.close()
