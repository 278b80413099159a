"""Liveness and readiness through the real app on every backend, and what every
route answers while the database cannot be reached."""

from __future__ import annotations

import falcon.testing

from api.node import Node
from tests.support import ORDER, assert_problem, post, wait_for


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
    node.worker.stop()
    stopped = client.simulate_get("/readyz")
    assert stopped.status_code == 503
    assert stopped.json["status"] == "not ready"
    assert stopped.json["worker"] is False


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
