"""Prometheus exposition on /metrics by content negotiation, and a real scrape parsed.

The scrape comes from a real ``orderlog serve`` over HTTP and is read with
prometheus_client's own parser, so what is checked is what Prometheus would see.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import falcon.testing
import pytest
from prometheus_client.parser import text_string_to_metric_families

from api.http.prometheus import negotiate
from api.node import Node
from tests.support import ServerProcess, raw_connection, start_server

SCRAPER = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
    "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


@pytest.mark.parametrize(
    ("accept", "kind"),
    [
        (None, "json"),
        ("*/*", "json"),
        ("application/json", "json"),
        ("text/html", "json"),
        ("image/png, text/html;q=0.9", "json"),
        ("text/plain", "prometheus"),
        ("text/plain;version=0.0.4", "prometheus"),
        ("application/openmetrics-text; version=1.0.0", "openmetrics"),
        (SCRAPER, "openmetrics"),
        ("application/json, text/plain;q=0.5", "json"),
        ("text/plain, application/json;q=0.5", "prometheus"),
        ("text/plain;q=0", "json"),
        ("text/plain;q=oops", "json"),
    ],
)
def test_the_answer_s_format_is_negotiated_json_unless_exposition_is_asked_for(
    accept: str | None, kind: str
) -> None:
    assert negotiate(accept) == kind


@pytest.fixture
def client(node: Node) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(node.app)


@pytest.mark.parametrize(
    ("accept", "content_type"),
    [
        (None, "application/json"),
        ("*/*", "application/json"),
        ("text/plain", "text/plain; version=0.0.4; charset=utf-8"),
        (SCRAPER, "application/openmetrics-text; version=1.0.0; charset=utf-8"),
    ],
)
def test_every_metrics_answer_varies_on_accept(
    client: falcon.testing.TestClient, accept: str | None, content_type: str
) -> None:
    result = client.simulate_get("/metrics", headers={"Accept": accept} if accept else {})
    assert result.status_code == 200
    assert result.headers["vary"] == "Accept"
    assert result.headers["content-type"] == content_type


def test_the_plain_path_serves_the_exposition_without_an_accept_header(
    client: falcon.testing.TestClient,
) -> None:
    result = client.simulate_get("/metrics/prometheus")
    assert result.status_code == 200
    assert result.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "orderlog_orders" in result.text


@pytest.fixture
def server(sqlite_url: str, tmp_path: Path) -> Iterator[ServerProcess]:
    server = start_server(sqlite_url, tmp_path, "--processing-delay", "0.01", "--node-id", "n1")
    yield server
    server.terminate()


def test_a_real_scrape_parses_and_holds_every_series(server: ServerProcess) -> None:
    for n in range(12):
        body = {"order_id": f"p-{n}", "user_id": n, "item_ids": ["x"], "total_amount": "1"}
        assert server.request("POST", "/orders", body)[0] == 201
    server.wait_until(lambda s: s.request("GET", "/metrics")[2]["status_counts"]["Completed"] == 12)
    server.request("GET", "/orders/p-3")
    server.request("GET", "/orders/no-such-order")

    status, _, raw = server.request("GET", "/metrics/prometheus")
    assert status == 200
    text = raw.decode() if isinstance(raw, bytes) else raw
    families = {f.name: f for f in text_string_to_metric_families(text)}

    def samples(name: str) -> dict[tuple[tuple[str, str], ...], float]:
        return {tuple(sorted(s.labels.items())): s.value for s in families[name].samples}

    assert samples("orderlog_orders")[(("status", "Completed"),)] == 12
    assert samples("orderlog_orders")[(("status", "Pending"),)] == 0
    appended = {k[0][1]: v for k, v in samples("orderlog_events_appended").items() if k}
    assert appended["OrderPlaced"] == appended["OrderCompleted"] == 12
    processing = families["orderlog_processing_seconds"]
    count = next(s.value for s in processing.samples if s.name.endswith("_count"))
    assert count == 12
    end_to_end = families["orderlog_end_to_end_seconds"]
    assert next(s.value for s in end_to_end.samples if s.name.endswith("_count")) == 12
    routes = {
        s.labels["route"]
        for s in families["orderlog_http_request_duration_seconds"].samples
        if "route" in s.labels
    }
    assert {"/orders", "/orders/{order_id}"} <= routes
    # Each request counted once under its own route, method and status.
    counts = {
        (s.labels["route"], s.labels["method"], s.labels["status"]): s.value
        for s in families["orderlog_http_request_duration_seconds"].samples
        if s.name.endswith("_count")
    }
    assert counts[("/orders", "POST", "201")] == 12
    assert counts[("/orders/{order_id}", "GET", "200")] == 1
    assert counts[("/orders/{order_id}", "GET", "404")] == 1
    assert not any("p-3" in r or "no-such-order" in r for r in routes)  # templates only
    batch = families["orderlog_appends_per_commit"]
    assert next(s.value for s in batch.samples if s.name.endswith("_count")) >= 1
    assert samples("orderlog_queue_depth")[()] == 0
    assert samples("orderlog_orders_in_work")[()] == 0
    assert samples("orderlog_projector_lag_events")[()] == 0


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_the_horizon_age_names_how_long_a_write_transaction_holds_readers_back(
    client: falcon.testing.TestClient, database_url: str
) -> None:
    def horizon_age() -> float:
        text = client.simulate_get("/metrics/prometheus").text
        families = {f.name: f for f in text_string_to_metric_families(text)}
        return families["orderlog_feed_horizon_age_seconds"].samples[0].value

    with raw_connection(database_url) as conn:
        cursor = conn.cursor()
        cursor.execute("BEGIN")
        cursor.execute("SELECT txid_current()")  # a write transaction: it has an id
        cursor.execute("SELECT pg_sleep(0.3)")
        assert horizon_age() >= 0.3
        cursor.execute("ROLLBACK")
    assert horizon_age() < 0.3  # that transaction no longer holds anyone back
