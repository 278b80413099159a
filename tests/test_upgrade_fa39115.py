"""Upgrading from release fa39115: a database that release wrote opens with this code,
through every migration since, with no manual step, on every backend.

The database is written from literal DDL and rows (``tests/data/release_fa39115.py``,
captured from that release): its schema at version 5, its log of v1 events, the
claim a node left when it died, its tokens, an order placed with an Idempotency-Key,
and its projections' checkpoints one event behind the log. This code's node then
starts on it in process, as ``orderlog serve`` builds one, and everything is asked
of it over HTTP and the command line. An answer of that release is compared on the
keys it had: later releases may add keys (``currency``), never change or drop one.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import falcon.testing
import orjson
import pytest

from api.node import Node
from orderlog.storage import schema
from orderlog.storage.database_url import parse_url
from projections import quantile
from tests.data import release_fa39115 as old
from tests.support import admin_execute, raw_connection, raw_fetch, settings_for, wait_for

NEW_NODE = "new-node"
CLAIM_TIMEOUT = 1.0  # seconds: the dead node's claim is far older
LONG_TTL = 100 * 365 * 86400.0  # the key of that release is still honoured whenever this runs
OPEN_ORDERS = ("old-claimed", "old-pending")  # left unfinished by the node that died
# Live metrics of orders that release processed come from its stored 1% sketch,
# counted again at this code's accuracy; a rebuild counts the exact durations.
SKETCHES_APART = (1 + old.SKETCH_ACCURACY) * (1 + quantile.RELATIVE_ACCURACY) / (
    1 - quantile.RELATIVE_ACCURACY
) - 1


# -- the database that release left ---------------------------------------------------


def write_release(url: str) -> None:
    """The tables, triggers, indexes and rows of release fa39115, statement by statement."""
    backend = parse_url(url).backend
    mark = "?" if backend == "sqlite" else "%s"
    with raw_connection(url) as conn:
        cursor = conn.cursor()
        if backend == "sqlite":
            cursor.execute(old.SQLITE_JOURNAL_MODE)
        for statement in old.DDL[backend]:
            cursor.execute(statement)
        for table, rows in old.ROWS.items():
            columns = old.COLUMNS[table]
            cursor.executemany(
                f"INSERT INTO {table} ({', '.join(columns)}) "
                f"VALUES ({', '.join([mark] * len(columns))})",
                rows,
            )
        cursor.close()


def drop_every_table(url: str) -> None:
    """Empty the test's database of every table, whichever release's, so only that
    release's are there after ``write_release``."""
    backend = parse_url(url).backend
    if backend == "sqlite":
        return  # a new file per test
    if backend == "postgres":
        listed = "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        tables = [name for (name,) in raw_fetch(url, listed)]
        drops = [f'DROP TABLE IF EXISTS "{name}" CASCADE' for name in tables]
        drops.append("DROP FUNCTION IF EXISTS events_append_only() CASCADE")
    else:
        listed = "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE()"
        drops = [f"DROP TABLE IF EXISTS `{name}`" for (name,) in raw_fetch(url, listed)]
    admin_execute(url, drops)


@pytest.fixture
def release_database(database_url: str) -> str:
    """A URL to a database exactly as release fa39115 left it."""
    drop_every_table(database_url)
    write_release(database_url)
    return database_url


@contextmanager
def serving(url: str, **settings: Any) -> Iterator[Node]:
    """This code's node, started on ``url`` as ``serve`` starts one (no socket)."""
    values: dict[str, Any] = {
        "node_id": NEW_NODE,
        "claim_timeout": CLAIM_TIMEOUT,
        "idempotency_ttl": LONG_TTL,
        **settings,
    }
    node = Node(settings_for(url, **values)).start(bind=False)
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture
def upgraded(release_database: str) -> Iterator[falcon.testing.TestClient]:
    """The app of a node of this code, started on the database that release left."""
    with serving(release_database) as node:
        yield falcon.testing.TestClient(node.app)


# -- asking it --------------------------------------------------------------------------


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {old.SECRETS[token]}"}


def get(client: falcon.testing.TestClient, path: str, token: str = "shop") -> Any:
    """The JSON of a GET with one of that release's tokens; fails on anything but 200."""
    result = client.simulate_get(path, headers=bearer(token))
    assert result.status_code == 200, result.text
    return result.json


def place_keyed(client: falcon.testing.TestClient, body: dict[str, Any]) -> falcon.testing.Result:
    headers = {**bearer("shop"), "Idempotency-Key": old.IDEMPOTENCY_KEY}
    return client.simulate_post("/orders", json=body, headers=headers)


def as_it_had(answer: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    """``answer`` on the keys that release's answer ``before`` had."""
    return {key: answer.get(key, "<missing>") for key in before}


def all_completed(client: falcon.testing.TestClient) -> None:
    """Wait until the orders the dead node left are done (the new node's worker)."""
    for order_id in OPEN_ORDERS:
        wait_for(
            lambda order_id=order_id: get(client, f"/orders/{order_id}")["status"] == "Completed",
            what=f"{order_id} Completed",
        )


def stored_events(stream_id: str | None = None) -> list[dict[str, Any]]:
    """That release's events (of one stream, or all), as its history answered them."""
    return [
        {
            "position": position,
            "version": version,
            "type": kind,
            "data": orjson.loads(data),
            "metadata": orjson.loads(metadata),
            "recorded_at": recorded_at,
        }
        for position, stream, version, kind, data, metadata, recorded_at in old.ROWS["events"]
        if stream_id in (None, stream)
    ]


def without_currency(data: dict[str, Any]) -> dict[str, Any]:
    """An OrderPlaced's data read back now, but for what v2 added (read with upcasting)."""
    return {key: value for key, value in data.items() if key != "currency"}


def assert_same_events(answered: list[dict[str, Any]], stored: list[dict[str, Any]]) -> None:
    assert len(answered) == len(stored)
    for event, was in zip(answered, stored, strict=True):
        assert as_it_had(event, was) | {"data": without_currency(event["data"])} == was


# -- the tests ------------------------------------------------------------------------------


def test_old_orders_read_back_as_that_release_showed_them(
    upgraded: falcon.testing.TestClient, release_database: str
) -> None:
    for order_id, view in old.VIEWS.items():
        result = upgraded.simulate_get(f"/orders/{order_id}", headers=bearer("shop"))
        assert result.status_code == 200, result.text
        assert as_it_had(result.json, view) == view
        assert result.headers["etag"] == f'"{view["version"]}"'
        history = get(upgraded, f"/orders/{order_id}/events")
        assert history["version"] == view["version"]
        assert_same_events(history["events"], stored_events(order_id))

    all_completed(upgraded)
    listed = get(upgraded, "/orders")
    assert listed["next_after"] is None
    ids = [order["order_id"] for order in listed["orders"]]
    assert ids == [*old.VIEWS, *OPEN_ORDERS]  # oldest first, as that release listed them
    for order, view in zip(listed["orders"], old.VIEWS.values(), strict=False):
        assert as_it_had(order, view) == view

    feed = get(upgraded, "/events?limit=100", token="ops")["events"]
    assert_same_events(feed[: len(old.ROWS["events"])], stored_events())
    assert [e["stream_id"] for e in feed[: len(old.ROWS["events"])]] == [
        row[1] for row in old.ROWS["events"]
    ]

    applied = raw_fetch(release_database, "SELECT version FROM schema_migrations")
    assert sorted(v for (v,) in applied) == [m.version for m in schema.MIGRATIONS]
    kept = raw_fetch(
        release_database,
        "SELECT version, description, applied_at FROM schema_migrations "
        "WHERE version <= ? ORDER BY version",
        (old.SCHEMA_VERSION,),
    )
    assert kept == list(old.ROWS["schema_migrations"])


def test_the_claim_of_the_node_that_died_is_taken_over_and_completed(
    upgraded: falcon.testing.TestClient,
) -> None:
    all_completed(upgraded)
    events = get(upgraded, "/orders/old-claimed/events")["events"]
    assert [e["type"] for e in events] == [
        "OrderPlaced",
        "OrderProcessingStarted",
        "OrderProcessingStarted",
        "OrderCompleted",
    ]
    assert_same_events(events[:2], stored_events("old-claimed"))  # the dead node's claim
    reclaim, completion = events[2], events[3]
    assert reclaim["data"]["attempt"] == 2
    assert reclaim["data"]["worker_id"].startswith(f"{NEW_NODE}/")
    assert completion["data"]["attempt"] == 2
    assert reclaim["metadata"]["node"] == completion["metadata"]["node"] == NEW_NODE
    view = get(upgraded, "/orders/old-claimed")
    assert (view["status"], view["attempts"], view["version"]) == ("Completed", 2, 4)
    assert view["processing_started_at"] == reclaim["recorded_at"]
    assert view["completed_at"] == completion["recorded_at"]

    # Left Pending behind it by the same node: claimed once, by the new one.
    pending = get(upgraded, "/orders/old-pending/events")["events"]
    assert [e["type"] for e in pending] == [
        "OrderPlaced",
        "OrderProcessingStarted",
        "OrderCompleted",
    ]
    assert_same_events(pending[:1], stored_events("old-pending"))
    assert pending[1]["data"]["attempt"] == 1
    assert pending[1]["data"]["worker_id"].startswith(f"{NEW_NODE}/")


def test_tokens_of_that_release_authenticate_with_their_scopes(
    upgraded: falcon.testing.TestClient, release_database: str, tmp_path: Path
) -> None:
    body = {"order_id": "new-1", "user_id": "u-9", "item_ids": ["sku-9"], "total_amount": "1.00"}
    placed = upgraded.simulate_post("/orders", json=body, headers=bearer("shop"))
    assert placed.status_code == 201, placed.text
    assert get(upgraded, "/orders/new-1")["order_id"] == "new-1"
    assert get(upgraded, "/metrics", token="ops")["total_orders"] == 6
    assert get(upgraded, "/events", token="ops")["events"]

    for token, path, scope in (
        ("shop", "/metrics", "metrics:read"),
        ("ops", "/orders", "orders:read"),
    ):
        refused = upgraded.simulate_get(path, headers=bearer(token))
        assert refused.status_code == 403, refused.text
        assert refused.json["scope"] == scope
    for headers in ({}, {"Authorization": "Bearer olt_not-a-token-of-anyone-at-all"}):
        assert upgraded.simulate_get("/orders", headers=headers).status_code == 401

    listed = subprocess.run(
        [sys.executable, "-m", "api", "token", "list", "--database", release_database],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    for name, _, scopes, created_at in old.ROWS["tokens"]:
        assert f"{name}\t{scopes}\t{created_at}" in lines, listed.stdout


def test_an_idempotency_key_of_that_release_replays_and_refuses_as_it_did(
    upgraded: falcon.testing.TestClient,
) -> None:
    replayed = place_keyed(upgraded, old.KEYED_BODY)
    assert replayed.status_code == old.REPLAYED["status"], replayed.text
    headers = {name: replayed.headers.get(name) for name in old.REPLAYED["headers"]}
    assert headers == old.REPLAYED["headers"]
    assert as_it_had(replayed.json, old.REPLAYED["body"]) == old.REPLAYED["body"]

    reused = place_keyed(upgraded, {**old.KEYED_BODY, "total_amount": "13"})
    assert reused.status_code == old.REUSED["status"], reused.text
    assert reused.headers["content-type"] == old.REUSED["headers"]["content-type"]
    assert as_it_had(reused.json, old.REUSED["body"]) == old.REUSED["body"]

    history = get(upgraded, f"/orders/{old.KEYED_ORDER}/events")
    assert_same_events(history["events"], stored_events(old.KEYED_ORDER))  # nothing added


def test_an_idempotency_key_of_that_release_expires_as_it_did(release_database: str) -> None:
    with serving(release_database, idempotency_ttl=1.0) as node:
        expired = place_keyed(falcon.testing.TestClient(node.app), old.KEYED_BODY)
    assert expired.status_code == 422, expired.text
    assert expired.json["type"] == "urn:orderlog:problem:idempotency-key-expired"
    assert expired.json["title"] == "Idempotency key expired"


def test_a_rebuild_gives_what_the_live_read_models_show(
    upgraded: falcon.testing.TestClient, release_database: str, tmp_path: Path
) -> None:
    all_completed(upgraded)
    live = get(upgraded, "/metrics", token="ops")
    orders = len(old.VIEWS) + len(OPEN_ORDERS)
    assert (live["total_orders"], live["orders_processed"]) == (orders, orders)
    assert live["status_counts"] == {"Pending": 0, "Processing": 0, "Completed": orders}
    listing = get(upgraded, "/orders")
    views = {order_id: get(upgraded, f"/orders/{order_id}") for order_id in old.VIEWS}

    done = subprocess.run(
        [sys.executable, "-m", "api", "rebuild", "--database", release_database, "--quiet"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rebuilt = orjson.loads(done.stdout)

    sketched = ("processing_time_percentiles_seconds", "processing_time_histogram_seconds")
    assert {k: v for k, v in rebuilt.items() if k not in sketched} == {
        k: v for k, v in live.items() if k not in sketched
    }
    for name, seconds in rebuilt["processing_time_percentiles_seconds"].items():
        shown = live["processing_time_percentiles_seconds"][name]
        assert shown == pytest.approx(seconds, rel=SKETCHES_APART), name
    for report in (rebuilt, live):
        bars = report["processing_time_histogram_seconds"]
        assert sum(bar["count"] for bar in bars) == orders

    # The node drops the state it holds for the rebuilt one, and serves it.
    wait_for(lambda: get(upgraded, "/metrics", token="ops") == rebuilt, what="rebuilt metrics")
    assert get(upgraded, "/orders") == listing
    assert {order_id: get(upgraded, f"/orders/{order_id}") for order_id in old.VIEWS} == views


def test_old_orders_read_back_in_usd(upgraded: falcon.testing.TestClient) -> None:
    """Every order of that release was in USD; it says so wherever an order is shown.
    One assertion over every answer, so a failure names each place without it."""
    all_completed(upgraded)
    shown: dict[str, Any] = {}
    for order_id in [*old.VIEWS, *OPEN_ORDERS]:
        shown[f"GET /orders/{order_id}"] = get(upgraded, f"/orders/{order_id}")
        events = get(upgraded, f"/orders/{order_id}/events")["events"]
        shown[f"GET /orders/{order_id}/events OrderPlaced data"] = events[0]["data"]
    for order in get(upgraded, "/orders")["orders"]:
        shown[f"GET /orders listing {order['order_id']}"] = order
    shown["POST /orders replayed"] = place_keyed(upgraded, old.KEYED_BODY).json
    # view["currency"] == "USD" for every view, all checked before one assertion fails.
    without = [place for place, view in shown.items() if view.get("currency") != "USD"]
    assert without == [], "no currency USD in: " + "; ".join(without)
