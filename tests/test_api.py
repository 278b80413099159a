"""The REST contract through the real app (``create_app`` around a started node) on
every backend: orders, history, the event feed, metrics, health, and bad input that
must be refused with a problem+json 4xx and write nothing."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any

import falcon.testing
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.node import Node
from orderlog.domain.events import OrderPlaced
from orderlog.order_status import MAX_LIST
from orderlog.storage.store import AppendRequest
from tests.support import logged_positions, nth_positions, readable, settings_for, wait_for

PROBLEM_KEYS = {"type", "title", "status", "detail"}
ORDER_KEYS = {
    "order_id",
    "user_id",
    "item_ids",
    "total_amount",
    "status",
    "version",
    "placed_at",
    "processing_started_at",
    "completed_at",
    "processing_time_seconds",
}
ORDER: dict[str, Any] = {
    "order_id": "o-1",
    "user_id": "u-1",
    "item_ids": ["sku-1", 42],
    "total_amount": 19.99,
}
IDLE = 10.0  # seconds: an upper bound for the worker to finish a handful of orders


@pytest.fixture
def client(node: Node) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(node.app)


def post(
    client: falcon.testing.TestClient,
    body: Any = None,
    *,
    raw: bytes | None = None,
    content_type: str | None = "application/json",
    headers: dict[str, str] | None = None,
) -> falcon.testing.Result:
    sent = {**({"Content-Type": content_type} if content_type else {}), **(headers or {})}
    data = raw if raw is not None else orjson.dumps(body)
    return client.simulate_post("/orders", body=data, headers=sent)


def order(**changes: Any) -> dict[str, Any]:
    return {**ORDER, **changes}


def without(name: str) -> dict[str, Any]:
    return {key: value for key, value in ORDER.items() if key != name}


def assert_problem(
    result: falcon.testing.Result, status: int, field: str | None = None
) -> dict[str, Any]:
    assert result.status_code == status, result.text
    assert result.headers["content-type"] == "application/problem+json"
    body = result.json
    assert body.keys() >= PROBLEM_KEYS
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    if field is not None:
        assert field in [error["field"] for error in body["errors"]], body
        assert all(error["message"] for error in body["errors"])
    return body


def place_and_finish(client: falcon.testing.TestClient, node: Node, **changes: Any) -> str:
    result = post(client, order(**changes))
    assert result.status_code == 201, result.text
    assert node.core.worker.wait_idle(IDLE)
    return result.json["order_id"]


# -- placing orders ----------------------------------------------------------------------------


def test_new_order_is_created_with_location_etag_and_view(
    client: falcon.testing.TestClient,
) -> None:
    result = post(client, ORDER, headers={"X-Request-ID": "req-42"})
    assert result.status_code == 201
    assert result.headers["location"] == "/orders/o-1"
    assert result.headers["etag"] == '"1"'
    body = result.json
    assert body.keys() >= ORDER_KEYS
    assert body["order_id"] == "o-1"
    assert body["user_id"] == "u-1"
    assert body["item_ids"] == ["sku-1", 42]
    assert body["total_amount"] == "19.99"
    assert body["status"] == "Pending"
    assert body["version"] == 1
    assert body["placed_at"].endswith("Z")
    assert body["processing_started_at"] is None
    assert body["completed_at"] is None
    assert body["processing_time_seconds"] is None


@pytest.mark.parametrize(
    ("literal", "exact"),
    [
        (b"19.99", "19.99"),
        (b'"19.99"', "19.99"),
        (b"0.3", "0.30"),
        (b"0.1", "0.10"),
        (b"1234567890123.45", "1234567890123.45"),
        (b'"1234567890123.45"', "1234567890123.45"),
        (b"9999999999999.99", "9999999999999.99"),
        (b"5", "5.00"),
        (b'"0"', "0.00"),
    ],
)
def test_amounts_are_kept_exact_as_decimal_strings(
    client: falcon.testing.TestClient, literal: bytes, exact: str
) -> None:
    raw = b'{"order_id": "exact", "user_id": 1, "item_ids": ["a"], "total_amount": %s}' % literal
    result = post(client, raw=raw)
    assert result.status_code == 201, result.text
    assert result.json["total_amount"] == exact
    assert client.simulate_get("/orders/exact").json["total_amount"] == exact


@pytest.mark.parametrize(
    ("user", "items", "stored_user", "stored_items"),
    [
        (b"7.0", b'[2e1, "x", 3.00]', 7, [20, "x", 3]),
        (b"9223372036854775807", b"[9223372036854775807.0]", 2**63 - 1, [2**63 - 1]),
        # A key whose text holds a colon sends the body through the strict reader.
        (b'"a\\":b"', b"[9223372036854775807]", 'a":b', [2**63 - 1]),
        (b"9007199254740993.0", b"[1]", 9007199254740993, [1]),
    ],
)
def test_ids_written_as_whole_numbers_are_those_integers_exactly(
    client: falcon.testing.TestClient,
    user: bytes,
    items: bytes,
    stored_user: Any,
    stored_items: list[Any],
) -> None:
    raw = b'{"order_id": "whole", "user_id": %s, "item_ids": %s, "total_amount": "1"}' % (
        user,
        items,
    )
    result = post(client, raw=raw)
    assert result.status_code == 201, result.text
    assert (result.json["user_id"], result.json["item_ids"]) == (stored_user, stored_items)


@pytest.mark.parametrize(
    ("user", "field"),
    [
        (b"7.5", "user_id"),
        (b"1e400", "user_id"),
        (b"9223372036854775808.0", "user_id"),
        (b"1e999999999", "user_id"),
    ],
)
def test_ids_that_are_not_whole_or_too_large_are_refused(
    client: falcon.testing.TestClient, user: bytes, field: str
) -> None:
    raw = b'{"user_id": %s, "item_ids": ["a"], "total_amount": "1"}' % user
    result = post(client, raw=raw)
    assert result.status_code == 422, result.text
    assert [e["field"] for e in result.json["errors"]] == [field]


def test_omitted_order_id_is_generated(client: falcon.testing.TestClient) -> None:
    first = post(client, without("order_id"))
    second = post(client, without("order_id"))
    assert first.status_code == second.status_code == 201
    order_id = first.json["order_id"]
    assert uuid.UUID(order_id)
    assert order_id != second.json["order_id"]
    assert first.headers["location"] == f"/orders/{order_id}"
    assert client.simulate_get(f"/orders/{order_id}").status_code == 200


def test_second_identical_post_returns_the_existing_order(
    client: falcon.testing.TestClient, node: Node
) -> None:
    first = post(client, ORDER)
    assert node.core.worker.wait_idle(IDLE)
    head = node.core.store.last_position()
    again = post(client, order(total_amount="19.990"))  # the same amount, written another way
    assert again.status_code == 200
    assert again.headers["location"] == "/orders/o-1"
    assert again.json["order_id"] == "o-1"
    assert again.json["placed_at"] == first.json["placed_at"]
    assert again.json["status"] == "Completed"
    assert again.headers["etag"] == f'"{again.json["version"]}"'
    assert node.core.store.last_position() == head
    history = client.simulate_get("/orders/o-1/events").json["events"]
    assert [event["type"] for event in history].count("OrderPlaced") == 1


@pytest.mark.parametrize(
    "changes",
    [{"user_id": "u-2"}, {"item_ids": ["sku-1"]}, {"total_amount": "20.00"}],
    ids=["user", "items", "amount"],
)
def test_same_id_with_different_content_is_a_conflict(
    client: falcon.testing.TestClient, node: Node, changes: dict[str, Any]
) -> None:
    post(client, ORDER)
    assert node.core.worker.wait_idle(IDLE)
    head = node.core.store.last_position()
    body = assert_problem(post(client, order(**changes)), 409)
    assert body["type"] == "urn:orderlog:problem:order-conflict"
    assert "o-1" in body["detail"]
    assert node.core.store.last_position() == head
    assert client.simulate_get("/orders/o-1").json["user_id"] == "u-1"


def test_json_content_type_with_parameters_is_accepted(client: falcon.testing.TestClient) -> None:
    result = post(client, ORDER, content_type="application/json; charset=utf-8")
    assert result.status_code == 201


def test_body_of_exactly_the_size_limit_is_accepted(
    client: falcon.testing.TestClient, node: Node
) -> None:
    limit = node.settings.max_body_bytes
    raw = orjson.dumps(ORDER)
    result = post(client, raw=raw + b" " * (limit - len(raw)))
    assert result.status_code == 201


# -- reading an order ------------------------------------------------------------------------


def test_processed_order_reaches_completed_with_its_times(
    client: falcon.testing.TestClient, node: Node
) -> None:
    place_and_finish(client, node)
    result = client.simulate_get("/orders/o-1")
    assert result.status_code == 200
    body = result.json
    assert body.keys() >= ORDER_KEYS
    assert body["status"] == "Completed"
    assert body["version"] == 3
    assert body["total_amount"] == "19.99"
    assert body["item_ids"] == ["sku-1", 42]
    # The fixed-width UTC format orders as text the way the moments order in time.
    assert body["placed_at"] <= body["processing_started_at"] <= body["completed_at"]
    started = datetime.fromisoformat(body["processing_started_at"])
    completed = datetime.fromisoformat(body["completed_at"])
    assert body["processing_time_seconds"] == (completed - started).total_seconds()
    assert result.headers["etag"] == '"3"'


def test_matching_if_none_match_answers_304(client: falcon.testing.TestClient, node: Node) -> None:
    place_and_finish(client, node)
    etag = client.simulate_get("/orders/o-1").headers["etag"]
    for tag in (etag, f"W/{etag}", '"1", ' + etag, "*"):
        result = client.simulate_get("/orders/o-1", headers={"If-None-Match": tag})
        assert result.status_code == 304, tag
        assert result.content == b""
        assert result.headers["etag"] == etag


def test_stale_if_none_match_answers_the_current_order(
    client: falcon.testing.TestClient, node: Node
) -> None:
    place_and_finish(client, node)
    result = client.simulate_get("/orders/o-1", headers={"If-None-Match": '"1"'})
    assert result.status_code == 200
    assert result.json["status"] == "Completed"


def test_version_parameter_shows_the_order_as_it_was(
    client: falcon.testing.TestClient, node: Node
) -> None:
    place_and_finish(client, node)
    expected = {1: "Pending", 2: "Processing", 3: "Completed"}
    for version, status in expected.items():
        result = client.simulate_get("/orders/o-1", params={"version": str(version)})
        assert result.status_code == 200
        assert (result.json["status"], result.json["version"]) == (status, version)
        assert result.headers["etag"] == f'"{version}"'
    pending = client.simulate_get("/orders/o-1", params={"version": "1"}).json
    assert pending["processing_started_at"] is None


def test_version_beyond_the_stream_is_not_found(
    client: falcon.testing.TestClient, node: Node
) -> None:
    place_and_finish(client, node)
    body = assert_problem(client.simulate_get("/orders/o-1", params={"version": "4"}), 404)
    assert "version 4" in body["detail"]


@pytest.mark.parametrize("version", ["0", "-1", "x", "1.5", "", "2147483648"])
def test_bad_version_parameter_is_a_bad_request(
    client: falcon.testing.TestClient, node: Node, version: str
) -> None:
    place_and_finish(client, node)
    result = client.simulate_get("/orders/o-1", query_string=f"version={version}")
    assert_problem(result, 400, "version")


@pytest.mark.parametrize(
    "path",
    [
        "/orders/missing",
        "/orders/missing/events",
        "/orders/a%00b",
        "/orders/a%00b/events",
        "/orders/%FF",
        "/orders/" + "x" * 65,
        "/orders/%F0%9F%98%80",
    ],
)
def test_unknown_order_is_a_not_found_problem(client: falcon.testing.TestClient, path: str) -> None:
    body = assert_problem(client.simulate_get(path), 404)
    assert body["type"] == "urn:orderlog:problem:order-not-found"


def test_history_lists_every_event_of_the_order(
    client: falcon.testing.TestClient, node: Node
) -> None:
    post(client, ORDER, headers={"X-Request-ID": "req-7"})
    assert node.core.worker.wait_idle(IDLE)
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
    }
    assert events[0]["metadata"]["correlation_id"] == "req-7"
    assert events[1]["data"]["attempt"] == events[2]["data"]["attempt"] == 1


# -- the event feed ----------------------------------------------------------------------------


def test_event_feed_pages_through_the_whole_log(
    client: falcon.testing.TestClient, node: Node
) -> None:
    for n in range(5):
        assert post(client, order(order_id=f"o-{n}")).status_code == 201
    assert node.core.worker.wait_idle(IDLE)
    head = readable(node.core.store).head()
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
    readable(node.core.store)  # PostgreSQL: once older transactions anywhere have ended
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
    assert node.core.worker.wait_idle(IDLE)
    result = client.simulate_get("/metrics")
    assert result.status_code == 200
    body = result.json
    assert body["total_orders"] == 3
    assert body["orders_processed"] == 3
    assert body["status_counts"] == {"Pending": 0, "Processing": 0, "Completed": 3}
    assert sum(body["status_counts"].values()) == body["total_orders"]
    assert body["position"] == node.core.store.last_position()
    assert len(logged_positions(node.settings.database_url)) == 9
    assert 0 <= body["average_processing_time_seconds"] <= body["average_end_to_end_seconds"]
    percentiles = body["processing_time_percentiles_seconds"]
    assert set(percentiles) == {"p50", "p95", "p99"}
    assert 0 <= percentiles["p50"] <= percentiles["p95"] <= percentiles["p99"]
    bars = body["processing_time_histogram_seconds"]
    assert sum(bar["count"] for bar in bars) == 3
    assert all(bar["from"] < bar["to"] for bar in bars)


def test_health_is_ok(client: falcon.testing.TestClient) -> None:
    result = client.simulate_get("/healthz")
    assert result.status_code == 200
    assert result.json == {"status": "ok"}


def test_ready_until_the_worker_stops(client: falcon.testing.TestClient, node: Node) -> None:
    ready = client.simulate_get("/readyz")
    assert ready.status_code == 200
    assert ready.json["status"] == "ready"
    assert ready.json["database"] is True
    assert ready.json["writer"] is True
    assert ready.json["worker"] is True
    node.core.worker.stop()
    stopped = client.simulate_get("/readyz")
    assert stopped.status_code == 503
    assert stopped.json["status"] == "not ready"
    assert stopped.json["worker"] is False


# -- bad input: the right 4xx, problem+json, and nothing written -------------------------------

BAD_BODIES: list[tuple[str, bytes, int, str | None]] = [
    # (case id, raw body, status, the field the problem must name)
    ("malformed-json", b'{"user_id": ', 400, None),
    ("trailing-garbage", orjson.dumps(ORDER) + b"x", 400, None),
    ("empty-body", b"", 400, None),
    ("blank-body", b"  \n ", 400, None),
    ("not-utf8", b'{"user_id": "\xff\xfe"}', 400, None),
    ("nan-literal", b'{"user_id": 1, "item_ids": ["a"], "total_amount": NaN}', 400, None),
    (
        "number-1e400",
        b'{"user_id": 1, "item_ids": ["a"], "total_amount": 1e400}',
        422,
        "total_amount",
    ),
    (
        "number-10000-digits",
        b'{"user_id": 1, "item_ids": ["a"], "total_amount": ' + b"9" * 10_000 + b"}",
        422,
        "total_amount",
    ),
    (
        "number-minus-zero",
        b'{"user_id": 1, "item_ids": ["a"], "total_amount": -0}',
        422,
        "total_amount",
    ),
    (
        "number-minus-zero-float",
        b'{"user_id": 1, "item_ids": ["a"], "total_amount": -0.0}',
        422,
        "total_amount",
    ),
    (
        "number-tiny",
        b'{"user_id": 1, "item_ids": ["a"], "total_amount": 1e-400}',
        422,
        "total_amount",
    ),
    (
        "number-too-precise",
        b'{"user_id": 1, "item_ids": ["a"], "total_amount": 1.0000000000000001}',
        422,
        "total_amount",
    ),
    (
        "duplicate-key",
        b'{"user_id": 1, "item_ids": ["a"], "total_amount": "1", "total_amount": "999"}',
        400,
        "total_amount",
    ),
    (
        "duplicate-key-spaced",
        b'{"user_id": 1, "item_ids": ["a"], "total_amount" :"1", "total_amount": "999"}',
        400,
        "total_amount",
    ),
    (
        "duplicate-unknown-key",
        b'{"user_id": 1, "item_ids": ["a"], "total_amount": "1", "x": 1, "x": 2}',
        400,
        "x",
    ),
    ("deep-nesting", b"[" * 5000 + b"]" * 5000, 400, None),
    ("json-array", b"[]", 422, "body"),
    ("json-string", b'"order"', 422, "body"),
    ("json-number", b"1", 422, "body"),
    ("json-null", b"null", 422, "body"),
    (
        "big-integer-user",
        b'{"user_id": 123456789012345678901234567890, "item_ids": ["a"], "total_amount": 1}',
        422,
        "user_id",
    ),
]

BAD_FIELDS: list[tuple[str, dict[str, Any], str]] = [
    ("missing-user_id", without("user_id"), "user_id"),
    ("missing-item_ids", without("item_ids"), "item_ids"),
    ("missing-total_amount", without("total_amount"), "total_amount"),
    ("unknown-field", order(coupon="FREE"), "coupon"),
    ("user_id-true", order(user_id=True), "user_id"),
    ("user_id-float", order(user_id=1.5), "user_id"),
    ("user_id-list", order(user_id=["u"]), "user_id"),
    ("user_id-null", order(user_id=None), "user_id"),
    ("user_id-empty", order(user_id=""), "user_id"),
    ("user_id-negative", order(user_id=-1), "user_id"),
    ("user_id-nul", order(user_id="a\u0000b"), "user_id"),
    ("user_id-escape", order(user_id="\u001b[31m"), "user_id"),
    ("user_id-bidi", order(user_id="\u202eevil"), "user_id"),
    ("user_id-blank", order(user_id="   "), "user_id"),
    ("item-bidi", order(item_ids=["ok", "\u202eevil"]), "item_ids[1]"),
    ("item-control", order(item_ids=["a\nb"]), "item_ids[0]"),
    ("item-blank", order(item_ids=[" "]), "item_ids[0]"),
    ("user_id-hangul-filler", order(user_id="\u3164"), "user_id"),
    ("user_id-braille-blank", order(user_id="\u2800"), "user_id"),
    ("user_id-lone-combining-mark", order(user_id="\u0301"), "user_id"),
    ("user_id-halfwidth-hangul-filler", order(user_id="\uffa0\u115f"), "user_id"),
    ("item-hangul-filler", order(item_ids=["ok", "\u3164"]), "item_ids[1]"),
    ("item-lone-combining-mark", order(item_ids=["\u0301"]), "item_ids[0]"),
    ("amount-leading-space", order(total_amount=" 1.00"), "total_amount"),
    ("amount-trailing-space", order(total_amount="1.00 "), "total_amount"),
    ("amount-plus", order(total_amount="+1.00"), "total_amount"),
    ("amount-minus-zero", order(total_amount="-0.00"), "total_amount"),
    ("amount-underscore", order(total_amount="1_000"), "total_amount"),
    ("amount-arabic-digits", order(total_amount="\u0661\u0662"), "total_amount"),
    ("item_ids-string", order(item_ids="sku-1"), "item_ids"),
    ("item_ids-object", order(item_ids={"a": 1}), "item_ids"),
    ("item_ids-empty", order(item_ids=[]), "item_ids"),
    ("item_ids-1001", order(item_ids=["i"] * 1001), "item_ids"),
    ("item-bool", order(item_ids=[False]), "item_ids[0]"),
    ("item-float", order(item_ids=["a", 2.5]), "item_ids[1]"),
    ("item-null", order(item_ids=[None]), "item_ids[0]"),
    ("item-too-long", order(item_ids=["x" * 65]), "item_ids[0]"),
    ("order_id-number", order(order_id=12), "order_id"),
    ("order_id-null", order(order_id=None), "order_id"),
    ("order_id-empty", order(order_id=""), "order_id"),
    ("order_id-65-chars", order(order_id="o" * 65), "order_id"),
    ("order_id-slash", order(order_id="a/b"), "order_id"),
    ("order_id-space", order(order_id="a b"), "order_id"),
    ("order_id-newline", order(order_id="abc\n"), "order_id"),
    ("amount-bool", order(total_amount=True), "total_amount"),
    ("amount-null", order(total_amount=None), "total_amount"),
    ("amount-list", order(total_amount=[1]), "total_amount"),
    ("amount-abc", order(total_amount="abc"), "total_amount"),
    ("amount-NaN", order(total_amount="NaN"), "total_amount"),
    ("amount-Infinity", order(total_amount="Infinity"), "total_amount"),
    ("amount-1e400", order(total_amount="1e400"), "total_amount"),
    ("amount-minus-one", order(total_amount=-1), "total_amount"),
    ("amount-minus-cent", order(total_amount="-0.01"), "total_amount"),
    ("amount-1.001-number", order(total_amount=1.001), "total_amount"),
    ("amount-1.001-string", order(total_amount="1.001"), "total_amount"),
    ("amount-float-noise", order(total_amount=0.1 + 0.2), "total_amount"),
    ("amount-too-large", order(total_amount="10000000000000.00"), "total_amount"),
    ("amount-too-large-number", order(total_amount=1e15), "total_amount"),
    ("amount-underscores", order(total_amount="1_000"), "total_amount"),
]


def test_an_id_with_a_combining_mark_after_a_letter_is_accepted(
    client: falcon.testing.TestClient,
) -> None:
    decomposed = "jose\u0301"  # e + COMBINING ACUTE ACCENT
    result = post(client, order(user_id=decomposed, item_ids=["cafe\u0301"]))
    assert result.status_code == 201, result.text
    assert (result.json["user_id"], result.json["item_ids"]) == (decomposed, ["cafe\u0301"])


@pytest.fixture
def settled(client: falcon.testing.TestClient, node: Node) -> Iterator[int]:
    """A log with one finished order, so 'nothing written' is checked against a non-empty log."""
    place_and_finish(client, node, order_id="existing")
    head = node.core.store.last_position()
    assert len(logged_positions(node.settings.database_url)) == 3
    yield head
    assert node.core.worker.wait_idle(IDLE)
    assert node.core.store.last_position() == head, "a refused request wrote to the log"


@pytest.mark.parametrize(
    ("raw", "status", "field"), [case[1:] for case in BAD_BODIES], ids=[c[0] for c in BAD_BODIES]
)
def test_unusable_body_is_refused_and_leaves_the_log_untouched(
    client: falcon.testing.TestClient, settled: int, raw: bytes, status: int, field: str | None
) -> None:
    assert_problem(post(client, raw=raw), status, field)


@pytest.mark.parametrize(
    ("body", "field"), [case[1:] for case in BAD_FIELDS], ids=[c[0] for c in BAD_FIELDS]
)
def test_invalid_field_is_refused_naming_it_and_leaves_the_log_untouched(
    client: falcon.testing.TestClient, settled: int, body: dict[str, Any], field: str
) -> None:
    problem = assert_problem(post(client, body), 422, field)
    assert problem["type"] == "urn:orderlog:problem:validation-error"


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
)
def test_wrong_content_type_is_unsupported_and_leaves_the_log_untouched(
    client: falcon.testing.TestClient, settled: int, content_type: str | None
) -> None:
    assert_problem(post(client, ORDER, content_type=content_type), 415)


def test_body_over_the_size_limit_is_too_large_and_leaves_the_log_untouched(
    client: falcon.testing.TestClient, node: Node, settled: int
) -> None:
    limit = node.settings.max_body_bytes
    raw = orjson.dumps(ORDER)
    assert_problem(post(client, raw=raw + b" " * (limit + 1 - len(raw))), 413)


def test_declared_length_over_the_limit_is_refused_before_reading(
    client: falcon.testing.TestClient, node: Node, settled: int
) -> None:
    declared = str(node.settings.max_body_bytes + 1)
    result = post(client, ORDER, headers={"Content-Length": declared})
    assert_problem(result, 413)


def test_body_without_a_content_length_leaves_the_log_untouched(
    client: falcon.testing.TestClient, node: Node, settled: int
) -> None:
    """Chunked: a WSGI app sees no Content-Length. Waitress de-chunks and sets one (and
    refuses bodies past its own cap), so a bare WSGI request without it reads as empty."""
    raw = b" " * (node.settings.max_body_bytes * 2) + orjson.dumps(ORDER)
    result = client.simulate_post(
        "/orders",
        body=raw,
        headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        extras={"CONTENT_LENGTH": ""},
    )
    assert_problem(result, 400)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/nowhere", 404),
        ("GET", "/orders/o-1/events/1", 404),
        ("POST", "/events", 405),
        ("DELETE", "/orders", 405),
        ("PATCH", "/orders", 405),
        ("PUT", "/orders/existing", 405),
        ("DELETE", "/orders/existing", 405),
        ("PATCH", "/metrics", 405),
    ],
)
def test_unknown_route_or_method_is_a_problem_and_leaves_the_log_untouched(
    client: falcon.testing.TestClient, settled: int, method: str, path: str, status: int
) -> None:
    result = client.simulate_request(
        method, path, body=orjson.dumps(ORDER), headers={"Content-Type": "application/json"}
    )
    assert_problem(result, status)
    if status == 405:
        assert result.headers["allow"]


JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=70)
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children),
    max_leaves=8,
)
IDS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}", fullmatch=True) | st.integers(0, 2**63)
ORDER_BODIES = st.fixed_dictionaries(
    {},
    optional={
        "order_id": st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,64}", fullmatch=True)
        | JSON_VALUES,
        "user_id": IDS | JSON_VALUES,
        "item_ids": st.lists(IDS | JSON_LEAVES, max_size=5) | JSON_VALUES,
        "total_amount": st.decimals(-1, 10**14, places=3).map(str)
        | st.floats(-1, 1e14)
        | st.integers(-1, 10**14)
        | JSON_VALUES,
        "note": JSON_VALUES,
    },
)


@given(body=ORDER_BODIES | JSON_VALUES)
@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_any_json_body_is_answered_without_a_server_error(
    client: falcon.testing.TestClient, node: Node, body: Any
) -> None:
    assert node.core.worker.wait_idle(IDLE)
    head = node.core.store.head()
    result = post(client, body)
    assert result.status_code in (200, 201, 409, 422), result.text
    if result.status_code >= 400:
        assert_problem(result, result.status_code)
        assert node.core.worker.wait_idle(IDLE)
        assert node.core.store.head() == head
    else:
        amount = Decimal(result.json["total_amount"])
        assert amount == amount.quantize(Decimal("0.01")) >= 0
        assert result.json["total_amount"] == str(amount)
        assert client.simulate_get(result.headers["location"]).status_code == 200


@pytest.fixture
def unreachable_database(node: Node) -> Iterator[None]:
    """Point the real pool at a database that cannot be opened, as in an outage."""
    db = node.core.db
    original = db.database
    db.close_all()
    if node.core.store.backend == "sqlite":
        db.database = "/nonexistent-orderlog-dir/orderlog.db"
    else:
        db.database = "orderlog_no_such_database"
    yield
    db.database = original


def test_unreachable_database_is_503_while_health_stays_ok(
    client: falcon.testing.TestClient, node: Node, unreachable_database: None
) -> None:
    assert client.simulate_get("/healthz").status_code == 200
    # Readiness reads the database probe's last answer, which sees the outage at its
    # next question (once a second).
    ready = wait_for(lambda: (r := client.simulate_get("/readyz")).status_code == 503 and r)
    assert ready.json["database"] is False
    for path in ("/orders/o-1", "/orders/o-1/events", "/events", "/metrics"):
        body = assert_problem(client.simulate_get(path), 503)
        assert body["type"] == "urn:orderlog:problem:store-unavailable"
    assert_problem(post(client, ORDER), 503)


# -- HTTP semantics and answers that never grow with the input --------------------------

GET_ROUTES = ["/orders/o-1", "/orders/o-1/events", "/events", "/metrics", "/healthz", "/readyz"]


@pytest.mark.parametrize("path", GET_ROUTES)
def test_head_answers_wherever_get_does_with_the_same_headers_and_no_body(
    client: falcon.testing.TestClient, node: Node, path: str
) -> None:
    place_and_finish(client, node)
    got = client.simulate_get(path)
    head = client.simulate_head(path)
    assert head.status_code == got.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(len(got.content))
    assert head.headers["content-type"] == got.headers["content-type"]


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/orders", {"POST", "OPTIONS"}),
        ("/orders/o-1", {"GET", "HEAD", "OPTIONS"}),
        ("/events", {"GET", "HEAD", "OPTIONS"}),
    ],
)
def test_options_answers_204_with_the_methods_allowed(
    client: falcon.testing.TestClient, path: str, allowed: set[str]
) -> None:
    result = client.simulate_options(path)
    assert result.status_code == 204
    assert result.content == b""
    assert "content-type" not in result.headers
    assert {m.strip() for m in result.headers["allow"].split(",")} >= allowed - {"OPTIONS"}


@pytest.mark.parametrize(
    ("method", "path", "status", "slug"),
    [
        ("GET", "/nowhere", 404, "not-found"),
        ("DELETE", "/orders", 405, "method-not-allowed"),
        ("PUT", "/events", 405, "method-not-allowed"),
    ],
)
def test_routing_errors_are_problems_of_the_service_s_own_types(
    client: falcon.testing.TestClient, method: str, path: str, status: int, slug: str
) -> None:
    problem = assert_problem(client.simulate_request(method, path), status)
    assert problem["type"] == f"urn:orderlog:problem:{slug}"


@pytest.mark.parametrize(
    "query",
    ["after=1_0", "after=%D9%A1", "after=%201", "after=1%20", "after=0x10", "limit=+5"],
)
def test_query_integers_are_ascii_digits_only(
    client: falcon.testing.TestClient, query: str
) -> None:
    name = query.split("=")[0]
    assert_problem(client.simulate_get("/events", query_string=query), 400, name)


def test_a_repeated_query_parameter_is_refused(client: falcon.testing.TestClient) -> None:
    result = client.simulate_get("/events", query_string="after=1&after=2")
    problem = assert_problem(result, 400, "after")
    assert problem["type"] == "urn:orderlog:problem:repeated-parameter"


@pytest.mark.parametrize("charset", ["latin-1", "iso-8859-1", "utf-16", "ascii"])
def test_a_body_in_another_charset_is_unsupported(
    client: falcon.testing.TestClient, settled: int, charset: str
) -> None:
    result = post(client, ORDER, content_type=f"application/json; charset={charset}")
    assert_problem(result, 415)


@pytest.mark.parametrize("charset", ["utf-8", "UTF-8", '"utf-8"', "utf8"])
def test_a_body_declared_utf8_is_read(client: falcon.testing.TestClient, charset: str) -> None:
    result = post(client, ORDER, content_type=f"application/json; charset={charset}")
    assert result.status_code == 201, result.text


def test_a_huge_order_id_is_not_echoed_whole(client: falcon.testing.TestClient) -> None:
    huge = "x" * 200_000
    result = client.simulate_get(f"/orders/{huge}")
    assert_problem(result, 404)
    assert len(result.content) < 2_000


def test_thousands_of_unknown_fields_give_a_short_problem_without_twins(
    client: falcon.testing.TestClient, settled: int
) -> None:
    # Short names and values: 6,000 fields just fit the default body limit.
    body = {**ORDER, **{f"{n:x}": 0 for n in range(6000)}}
    result = post(client, body)
    problem = assert_problem(result, 422)
    listed = [(e["field"], e["message"]) for e in problem["errors"]]
    assert len(listed) == len(set(listed)) == 20
    assert problem["errors_omitted"] == 5980
    assert len(result.content) < 8_000


def test_an_amount_written_as_a_number_is_booked_as_written(
    client: falcon.testing.TestClient,
) -> None:
    raw = b'{"order_id": "n-1", "user_id": 1, "item_ids": ["a"], "total_amount": 1234567890123.45}'
    result = post(client, raw=raw)
    assert result.status_code == 201, result.text
    assert result.json["total_amount"] == "1234567890123.45"


# -- request ids and logs ---------------------------------------------------------------


def test_a_usable_request_id_is_echoed_and_stored_with_the_order(
    client: falcon.testing.TestClient, node: Node
) -> None:
    result = post(client, ORDER, headers={"X-Request-ID": "req-42 from the gateway"})
    assert result.headers["x-request-id"] == "req-42 from the gateway"
    placed = node.core.store.read_stream("o-1")[0]  # the worker may have moved it on already
    assert placed.type == "OrderPlaced"
    assert placed.metadata["correlation_id"] == "req-42 from the gateway"


@pytest.mark.parametrize("given", [None, "x" * 129, "bad\u0000id", "\u202ehidden", "   "])
def test_an_unusable_or_missing_request_id_is_replaced_by_a_fresh_one(
    client: falcon.testing.TestClient, given: str | None
) -> None:
    headers = {"X-Request-ID": given} if given is not None else {}
    first = client.simulate_get("/healthz", headers=headers).headers["x-request-id"]
    second = client.simulate_get("/healthz", headers=headers).headers["x-request-id"]
    assert first != given and first != second
    assert len(first) == 32 and all(c in "0123456789abcdef" for c in first)


def test_errors_carry_the_request_id_too(client: falcon.testing.TestClient) -> None:
    result = client.simulate_get("/nowhere", headers={"X-Request-ID": "lost-1"})
    assert result.status_code == 404
    assert result.headers["x-request-id"] == "lost-1"


def test_json_logs_give_one_access_line_per_request_and_the_id_on_every_record(
    client: falcon.testing.TestClient,
    node: Node,
    unreachable_database: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from api import logs

    logs.configure("INFO", "json")
    try:
        post(client, ORDER, headers={"X-Request-ID": "outage-7"})
        client.simulate_get("/orders/o-9", headers={"X-Request-ID": "read-8"})
    finally:
        logs.configure("WARNING", "text")
    records = [orjson.loads(line) for line in capsys.readouterr().err.splitlines()]
    access = [r for r in records if r["logger"] == "orderlog.access"]
    assert [(r["method"], r["route"], r["status"], r["request_id"]) for r in access] == [
        ("POST", "/orders", 503, "outage-7"),
        ("GET", "/orders/{order_id}", 503, "read-8"),
    ]
    assert all(r["duration_ms"] >= 0 for r in access)
    # The store's warning about the outage was logged while the POST was handled.
    warnings = [r for r in records if r["level"] == "WARNING" and r["request_id"] == "outage-7"]
    assert warnings and "POST /orders" in warnings[0]["message"]


# -- idempotency keys for server-made ids --------------------------------------------------

UNNAMED = {"user_id": 5, "item_ids": ["sku-9"], "total_amount": "7.00"}


def test_a_retry_with_the_same_key_and_body_gets_the_first_answer(
    client: falcon.testing.TestClient, node: Node
) -> None:
    first = post(client, UNNAMED, headers={"Idempotency-Key": "checkout-1"})
    assert first.status_code == 201
    assert node.core.worker.wait_idle(IDLE)  # the order moves on meanwhile
    retry = post(client, UNNAMED, headers={"Idempotency-Key": "checkout-1"})
    assert retry.status_code == 201
    assert retry.headers["idempotent-replayed"] == "true"
    assert retry.json == first.json  # the first answer: the order as it was placed
    assert retry.headers["location"] == first.headers["location"]
    order_id = first.json["order_id"]
    placed = [e for e in node.core.store.read_stream(order_id) if e.type == "OrderPlaced"]
    assert len(placed) == 1
    assert placed[0].metadata["idempotency_key"] == "checkout-1"


def test_the_same_key_with_another_body_is_a_conflict(
    client: falcon.testing.TestClient, node: Node
) -> None:
    assert post(client, UNNAMED, headers={"Idempotency-Key": "k-2"}).status_code == 201
    assert node.core.worker.wait_idle(IDLE)  # the first order's own progress, all of it
    head = node.core.store.head()
    other = post(client, {**UNNAMED, "total_amount": "8.00"}, headers={"Idempotency-Key": "k-2"})
    problem = assert_problem(other, 409)
    assert problem["type"] == "urn:orderlog:problem:idempotency-key-reused"
    assert node.core.worker.wait_idle(IDLE)
    assert node.core.store.head() == head  # the refused order wrote nothing


@pytest.mark.parametrize(("first", "second"), [("a", "b"), ("Key-1", "key-1")])
def test_different_keys_make_different_orders(
    client: falcon.testing.TestClient, first: str, second: str
) -> None:
    a = post(client, UNNAMED, headers={"Idempotency-Key": first})
    b = post(client, UNNAMED, headers={"Idempotency-Key": second})
    assert a.status_code == b.status_code == 201
    assert a.json["order_id"] != b.json["order_id"]


@pytest.mark.parametrize("key", ["", " ", "x" * 256, "bad\u0000key"])
def test_an_unusable_idempotency_key_is_refused(
    client: falcon.testing.TestClient, settled: int, key: str
) -> None:
    assert_problem(post(client, UNNAMED, headers={"Idempotency-Key": key}), 400, "Idempotency-Key")


def test_a_key_holds_across_a_restart(database_url: str) -> None:
    first_node = Node(settings_for(database_url)).start(bind=False)
    try:
        first = post(
            falcon.testing.TestClient(first_node.app), UNNAMED, headers={"Idempotency-Key": "r"}
        )
    finally:
        first_node.stop()
    second_node = Node(settings_for(database_url)).start(bind=False)
    try:
        again = post(
            falcon.testing.TestClient(second_node.app), UNNAMED, headers={"Idempotency-Key": "r"}
        )
    finally:
        second_node.stop()
    assert first.status_code == again.status_code == 201
    assert again.json == first.json


def test_a_key_older_than_its_lifetime_is_refused_not_reused(database_url: str) -> None:
    node = Node(settings_for(database_url, idempotency_ttl=0)).start(bind=False)
    try:
        client = falcon.testing.TestClient(node.app)
        assert post(client, UNNAMED, headers={"Idempotency-Key": "old"}).status_code == 201
        late = post(client, UNNAMED, headers={"Idempotency-Key": "old"})
        problem = assert_problem(late, 422)
        assert problem["type"] == "urn:orderlog:problem:idempotency-key-expired"
    finally:
        node.stop()


def test_two_clients_keys_never_meet(client: falcon.testing.TestClient, node: Node) -> None:
    alice = node.core.tokens.create("alice", ["orders:write"])
    bob = node.core.tokens.create("bob", ["orders:write"])
    a = post(client, UNNAMED, headers={"Idempotency-Key": "1", "Authorization": f"Bearer {alice}"})
    b = post(client, UNNAMED, headers={"Idempotency-Key": "1", "Authorization": f"Bearer {bob}"})
    assert a.status_code == b.status_code == 201
    assert a.json["order_id"] != b.json["order_id"]


# -- listing orders ----------------------------------------------------------------------


def place(client: falcon.testing.TestClient, order_id: str, user_id: Any) -> None:
    assert post(client, order(order_id=order_id, user_id=user_id)).status_code == 201


def test_the_listing_shows_each_order_as_its_own_view_oldest_first(
    client: falcon.testing.TestClient, node: Node
) -> None:
    for n in range(5):
        place(client, f"l-{n}", n % 2)
    assert node.core.worker.wait_idle(IDLE)
    listed = client.simulate_get("/orders")
    assert listed.status_code == 200
    assert [o["order_id"] for o in listed.json["orders"]] == [f"l-{n}" for n in range(5)]
    assert listed.json["next_after"] is None
    for view in listed.json["orders"]:
        assert view == client.simulate_get(f"/orders/{view['order_id']}").json


def test_a_client_sees_its_own_order_in_the_listing_at_once(
    client: falcon.testing.TestClient,
) -> None:
    place(client, "mine-1", "reader-7")
    listed = client.simulate_get("/orders", query_string="user_id=reader-7").json["orders"]
    assert [o["order_id"] for o in listed] == ["mine-1"]


def test_the_listing_pages_with_next_after(client: falcon.testing.TestClient) -> None:
    for n in range(7):
        place(client, f"pg-{n}", 1)
    seen: list[str] = []
    after = 0
    while True:
        page = client.simulate_get("/orders", query_string=f"limit=3&after={after}").json
        seen += [o["order_id"] for o in page["orders"]]
        if page["next_after"] is None:
            break
        after = page["next_after"]
    assert seen == [f"pg-{n}" for n in range(7)]


def test_the_listing_pages_through_more_orders_than_its_largest_page(
    client: falcon.testing.TestClient, node: Node
) -> None:
    node.core.worker.stop()  # nothing but the orders in the log
    placed = [f"big-{n}" for n in range(MAX_LIST + 100)]
    for start in range(0, len(placed), 500):
        results = node.core.store.append_many(
            [
                AppendRequest(order_id, [OrderPlaced(order_id, 1, ("sku-1",), "1.00")], 0)
                for order_id in placed[start : start + 500]
            ]
        )
        assert all(isinstance(result, list) for result in results)
    seen: list[str] = []
    after = 0
    while True:
        page = client.simulate_get("/orders", query_string=f"limit={MAX_LIST}&after={after}")
        assert page.status_code == 200
        seen += [o["order_id"] for o in page.json["orders"]]
        if page.json["next_after"] is None:
            break
        after = page.json["next_after"]
    assert len(seen) == len(placed), f"{len(seen)} of {len(placed)} orders listed"
    assert seen == placed


def test_the_listing_filters_by_status_and_by_a_user_id_s_text_form(
    client: falcon.testing.TestClient, node: Node
) -> None:
    node.core.worker.stop()  # orders stay Pending from here on
    place(client, "int-user", 42)
    place(client, "text-user", "42")
    place(client, "other", 7)
    by_user = client.simulate_get("/orders", query_string="user_id=42").json["orders"]
    assert [o["order_id"] for o in by_user] == ["int-user", "text-user"]
    assert [o["user_id"] for o in by_user] == [42, "42"]  # each as it was placed
    pending = client.simulate_get("/orders", query_string="status=Pending").json["orders"]
    assert len(pending) == 3
    done = client.simulate_get("/orders", query_string="status=Completed&user_id=42")
    assert done.json == {"orders": [], "next_after": None}


def test_ids_that_differ_only_in_case_are_different_orders(
    client: falcon.testing.TestClient,
) -> None:
    upper = post(client, order(order_id="Case-1", user_id="Alice"))
    lower = post(client, order(order_id="case-1", user_id="alice"))
    assert (upper.status_code, lower.status_code) == (201, 201), lower.text
    assert client.simulate_get("/orders/Case-1").json["user_id"] == "Alice"
    assert client.simulate_get("/orders/case-1").json["user_id"] == "alice"
    assert_problem(client.simulate_get("/orders/cASE-1"), 404)
    assert_problem(client.simulate_get("/orders/cASE-1/events"), 404)
    history = client.simulate_get("/orders/case-1/events").json["events"]
    assert [e["data"]["order_id"] for e in history] == ["case-1"] * len(history)


@pytest.mark.parametrize(
    ("user", "other"),
    [("alice", "ALICE"), ("alice", "alice "), ("jose", "jos\u00e9")],
    ids=["case", "trailing-space", "accent"],
)
def test_the_listing_by_user_id_matches_it_exactly(
    client: falcon.testing.TestClient, user: str, other: str
) -> None:
    place(client, "exact-1", user)
    place(client, "exact-2", other)
    for user_id, expected in ((user, ["exact-1"]), (other, ["exact-2"])):
        listed = client.simulate_get("/orders", params={"user_id": user_id}).json["orders"]
        assert [o["order_id"] for o in listed] == expected, user_id


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("status=Done", "status"),
        ("status=pending", "status"),
        ("status=Pending&status=Completed", "status"),
        ("user_id=" + "u" * 65, "user_id"),
        ("user_id=a%00b", "user_id"),
        ("user_id=%E3%85%A4", "user_id"),  # U+3164 HANGUL FILLER
        ("user_id=%20", "user_id"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("after=-1", "after"),
        ("after=x", "after"),
    ],
)
def test_bad_listing_filters_are_400_naming_the_filter(
    client: falcon.testing.TestClient, query: str, name: str
) -> None:
    assert_problem(client.simulate_get("/orders", query_string=query), 400, name)


def test_every_answer_tells_browsers_not_to_sniff_its_type(
    client: falcon.testing.TestClient,
) -> None:
    json = {"Content-Type": "application/json"}
    requests = [
        ("GET", "/healthz", None, 200),
        ("GET", "/openapi.json", None, 200),
        ("GET", "/metrics", None, 200),
        ("GET", "/orders", None, 200),
        ("GET", "/dashboard", None, 200),
        ("OPTIONS", "/orders", None, 204),
        ("GET", "/orders/no-such-order", None, 404),
        ("GET", "/no/such/route", None, 404),
        ("POST", "/orders", b"{", 400),
        ("DELETE", "/orders", None, 405),
    ]
    for method, path, body, status in requests:
        result = client.simulate_request(method, path, body=body, headers=json if body else None)
        assert result.status_code == status, (method, path, result.text)
        assert result.headers.get("x-content-type-options") == "nosniff", (method, path)
