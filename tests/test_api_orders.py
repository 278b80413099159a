"""Orders through the real app (``create_app`` around a started node) on every
backend: placing one, reading it (as it is, as it was, conditionally) and listing
them."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import falcon.testing
import orjson
import pytest

from api.node import Node
from orderlog.domain.events import OrderPlaced
from orderlog.storage.store import AppendRequest
from projections.order_status import MAX_LIST
from tests.support import (
    IDLE,
    ORDER,
    ORDER_KEYS,
    assert_problem,
    order,
    place_and_finish,
    post,
    settings_for,
    without,
)

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
    assert body["currency"] == "USD"  # none named: the default's default
    assert body["status"] == "Pending"
    assert body["version"] == 1
    assert body["placed_at"].endswith("Z")
    assert body["processing_started_at"] is None
    assert body["completed_at"] is None
    assert body["processing_time_seconds"] is None


def test_an_order_is_in_the_currency_it_names_or_else_the_nodes_default(
    database_url: str,
) -> None:
    node = Node(settings_for(database_url, default_currency="EUR")).start(bind=False)
    try:
        client = falcon.testing.TestClient(node.app)
        named = post(client, order(order_id="in-yen", currency="JPY"))
        unnamed = post(client, order(order_id="in-default"))
        assert (named.status_code, named.json["currency"]) == (201, "JPY")
        assert (unnamed.status_code, unnamed.json["currency"]) == (201, "EUR")
        assert node.worker.wait_idle(IDLE)
        for order_id, currency in (("in-yen", "JPY"), ("in-default", "EUR")):
            assert client.simulate_get(f"/orders/{order_id}").json["currency"] == currency
            placed = client.simulate_get(f"/orders/{order_id}/events").json["events"][0]
            assert placed["data"]["currency"] == currency
        listed = client.simulate_get("/orders").json["orders"]
        assert [(o["order_id"], o["currency"]) for o in listed] == [
            ("in-yen", "JPY"),
            ("in-default", "EUR"),
        ]
        revenue = client.simulate_get("/metrics").json["revenue"]
        assert revenue == {"EUR": "19.99", "JPY": "19.99"}
    finally:
        node.stop()


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
    assert node.worker.wait_idle(IDLE)
    head = node.store.last_position()
    again = post(client, order(total_amount="19.990"))  # the same amount, written another way
    assert again.status_code == 200
    assert again.headers["location"] == "/orders/o-1"
    assert again.json["order_id"] == "o-1"
    assert again.json["placed_at"] == first.json["placed_at"]
    assert again.json["status"] == "Completed"
    assert again.headers["etag"] == f'"{again.json["version"]}"'
    assert node.store.last_position() == head
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
    assert node.worker.wait_idle(IDLE)
    head = node.store.last_position()
    body = assert_problem(post(client, order(**changes)), 409)
    assert body["type"] == "urn:orderlog:problem:order-conflict"
    assert "o-1" in body["detail"]
    assert node.store.last_position() == head
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


# -- listing orders ----------------------------------------------------------------------


def place(client: falcon.testing.TestClient, order_id: str, user_id: Any) -> None:
    assert post(client, order(order_id=order_id, user_id=user_id)).status_code == 201


def test_the_listing_shows_each_order_as_it_stands_oldest_first(
    client: falcon.testing.TestClient, node: Node
) -> None:
    for n in range(5):
        place(client, f"l-{n}", n % 2)
    assert node.worker.wait_idle(IDLE)
    listed = client.simulate_get("/orders")
    assert listed.status_code == 200
    orders = listed.json["orders"]
    assert [o["order_id"] for o in orders] == [f"l-{n}" for n in range(5)]
    assert [o["user_id"] for o in orders] == [n % 2 for n in range(5)]
    assert listed.json["next_after"] is None
    for view in orders:
        assert view.keys() == ORDER_KEYS | {"attempts"}
        assert (view["status"], view["version"], view["attempts"]) == ("Completed", 3, 1)
        assert view["total_amount"] == "19.99" and view["item_ids"] == ["sku-1", 42]
        assert view["processing_time_seconds"] is not None


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
    node.worker.stop()  # nothing but the orders in the log
    placed = [f"big-{n}" for n in range(MAX_LIST + 100)]
    for start in range(0, len(placed), 500):
        results = node.store.append_many(
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
    node.worker.stop()  # orders stay Pending from here on
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
