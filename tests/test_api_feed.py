"""What the log shows through the real app on every backend: an order's history,
the event feed and its paging, and the metrics folded from it."""

from __future__ import annotations

from typing import Any

import falcon.testing
import pytest

from api.node import Node
from tests.support import (
    IDLE,
    ORDER,
    assert_problem,
    logged_positions,
    nth_positions,
    order,
    place_and_finish,
    post,
    readable,
)


def test_history_lists_every_event_of_the_order(
    client: falcon.testing.TestClient, node: Node
) -> None:
    post(client, ORDER, headers={"X-Request-ID": "req-7"})
    assert node.worker.wait_idle(IDLE)
    result = client.simulate_get("/orders/o-1/events")
    assert result.status_code == 200
    body = result.json
    assert (body["order_id"], body["version"]) == ("o-1", 3)
    events = body["events"]
    assert [e["type"] for e in events] == [
        "OrderPlaced",
        "OrderProcessingStarted",
        "OrderCompleted",
    ]
    assert [e["version"] for e in events] == [1, 2, 3]
    assert [e["event_version"] for e in events] == [2, 1, 1]  # each type's current version
    for event in events:
        assert {"position", "version", "type", "data", "metadata", "recorded_at"} <= event.keys()
        assert event["metadata"]["event_id"]
    positions = [e["position"] for e in events]
    assert positions == sorted(positions)
    assert events[0]["data"] == {
        "order_id": "o-1",
        "user_id": "u-1",
        "item_ids": ["sku-1", 42],
        "total_amount": "19.99",
        "currency": "USD",
    }
    assert events[0]["metadata"]["correlation_id"] == "req-7"
    assert events[1]["data"]["attempt"] == events[2]["data"]["attempt"] == 1


# -- the event feed ----------------------------------------------------------------------------


def test_event_feed_pages_through_the_whole_log(
    client: falcon.testing.TestClient, node: Node
) -> None:
    for n in range(5):
        assert post(client, order(order_id=f"o-{n}")).status_code == 201
    assert node.worker.wait_idle(IDLE)
    head = readable(node.store).head()
    logged = logged_positions(node.settings.database_url)
    assert len(logged) == 15 and head == logged[-1]
    seen: list[dict[str, Any]] = []
    after = 0
    while True:
        page = client.simulate_get("/events", params={"after": str(after), "limit": "4"})
        assert page.status_code == 200
        body = page.json
        assert body["head"] == head
        if not body["events"]:
            assert body["next_after"] == after
            break
        assert len(body["events"]) <= 4
        assert body["next_after"] == body["events"][-1]["position"]
        seen.extend(body["events"])
        after = body["next_after"]
    assert [e["position"] for e in seen] == logged
    assert {e["stream_id"] for e in seen} == {f"o-{n}" for n in range(5)}
    for stream in {e["stream_id"] for e in seen}:
        versions = [e["version"] for e in seen if e["stream_id"] == stream]
        assert versions == [1, 2, 3]


def test_event_feed_defaults_to_the_start_of_the_log(
    client: falcon.testing.TestClient, node: Node
) -> None:
    empty = client.simulate_get("/events").json
    assert empty == {"events": [], "next_after": 0, "head": 0}
    place_and_finish(client, node)
    readable(node.store)  # PostgreSQL: once older transactions anywhere have ended
    body = client.simulate_get("/events").json
    logged = logged_positions(node.settings.database_url)
    assert (
        [e["position"] for e in body["events"]]
        == logged
        == nth_positions(node.settings.database_url, 1, 2, 3)
    )
    assert body["next_after"] == body["head"] == logged[-1]
    assert body["events"][0]["stream_id"] == "o-1"


@pytest.mark.parametrize("limit", ["1", "1000"])
def test_event_feed_accepts_limits_at_the_bounds(
    client: falcon.testing.TestClient, node: Node, limit: str
) -> None:
    place_and_finish(client, node)
    body = client.simulate_get("/events", params={"limit": limit}).json
    assert len(body["events"]) == min(int(limit), 3)


@pytest.mark.parametrize(
    "query",
    ["limit=0", "limit=1001", "limit=x", "limit=-1", "after=-1", "after=x", f"after={2**63}"],
)
def test_event_feed_refuses_bad_paging_parameters(
    client: falcon.testing.TestClient, query: str
) -> None:
    assert_problem(client.simulate_get("/events", query_string=query), 400, query.split("=")[0])


# -- metrics and health ----------------------------------------------------------------------


def test_metrics_count_orders_and_add_up(client: falcon.testing.TestClient, node: Node) -> None:
    empty = client.simulate_get("/metrics").json
    assert empty["total_orders"] == 0
    assert empty["average_processing_time_seconds"] is None
    for n in range(3):
        assert post(client, order(order_id=f"o-{n}")).status_code == 201
    assert node.worker.wait_idle(IDLE)
    result = client.simulate_get("/metrics")
    assert result.status_code == 200
    body = result.json
    assert body["total_orders"] == 3
    assert body["orders_processed"] == 3
    assert body["status_counts"] == {"Pending": 0, "Processing": 0, "Completed": 3}
    assert sum(body["status_counts"].values()) == body["total_orders"]
    assert body["position"] == node.store.last_position()
    assert len(logged_positions(node.settings.database_url)) == 9
    assert 0 <= body["average_processing_time_seconds"] <= body["average_end_to_end_seconds"]
    percentiles = body["processing_time_percentiles_seconds"]
    assert set(percentiles) == {"p50", "p95", "p99"}
    assert 0 <= percentiles["p50"] <= percentiles["p95"] <= percentiles["p99"]
    bars = body["processing_time_histogram_seconds"]
    assert sum(bar["count"] for bar in bars) == 3
    assert all(bar["from"] < bar["to"] for bar in bars)
