"""An order's events linked by ids, seen over real HTTP on ``orderlog serve``, every backend.

Every event carries the ``correlation_id`` of the request that placed the order, and
every event but the first names the event that caused it (``causation_id``): a claim
the stream's last event when it was claimed, a completion its claim. Waits poll the
server's own answers with a deadline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support import ServerProcess, start_server

ORDER = {"user_id": 7, "item_ids": ["sku-1"], "total_amount": "12.50"}


def place(server: ServerProcess, order_id: str, headers: dict[str, str]) -> dict[str, str]:
    """POST the order; the answer's headers."""
    status, answer_headers, body = server.request(
        "POST", "/orders", {**ORDER, "order_id": order_id}, headers
    )
    assert status == 201, body
    return answer_headers


def events_once(server: ServerProcess, order_id: str, *types: str) -> list[dict[str, Any]]:
    """The order's events, once their types are ``types``: polled with a deadline."""

    def arrived(server: ServerProcess) -> list[dict[str, Any]] | None:
        status, _, body = server.request("GET", f"/orders/{order_id}/events")
        assert status == 200, body
        return body["events"] if [e["type"] for e in body["events"]] == list(types) else None

    return server.wait_until(arrived, timeout=60)  # type: ignore[no-any-return]


PLACED_AND_DONE = ("OrderPlaced", "OrderProcessingStarted", "OrderCompleted")


@pytest.mark.slow
def test_the_request_id_and_each_events_cause_link_an_orders_three_events(
    database_url: str, tmp_path: Path
) -> None:
    server = start_server(database_url, tmp_path, "--processing-delay", "0")
    try:
        place(server, "linked-1", {"X-Request-ID": "req-abc"})
        placed, claim, completion = (
            e["metadata"] for e in events_once(server, "linked-1", *PLACED_AND_DONE)
        )
    finally:
        server.terminate()

    assert [m["correlation_id"] for m in (placed, claim, completion)] == ["req-abc"] * 3
    assert "causation_id" not in placed
    assert claim["causation_id"] == placed["event_id"]
    assert completion["causation_id"] == claim["event_id"]
    # The worker's own keys stay beside them.
    assert claim["worker"] == completion["worker"]
    assert claim["node"] == completion["node"] == placed["node"]


@pytest.mark.slow
def test_without_a_request_id_the_one_the_server_made_is_the_correlation_id(
    database_url: str, tmp_path: Path
) -> None:
    server = start_server(database_url, tmp_path, "--processing-delay", "0")
    try:
        request_id = place(server, "unnamed-1", {})["x-request-id"]
        events = events_once(server, "unnamed-1", *PLACED_AND_DONE)
    finally:
        server.terminate()

    assert request_id
    assert [e["metadata"]["correlation_id"] for e in events] == [request_id] * 3


@pytest.mark.slow
def test_a_re_claim_after_an_expired_claim_names_that_claim_and_keeps_the_correlation(
    database_url: str, tmp_path: Path
) -> None:
    # A node claims the order and dies with it in hand: its claim stays in the log.
    crashed = start_server(
        database_url, tmp_path, "--node-id", "causal-a", "--processing-delay", "3600"
    )
    try:
        place(crashed, "reclaimed-1", {"X-Request-ID": "req-re"})
        events_once(crashed, "reclaimed-1", "OrderPlaced", "OrderProcessingStarted")
    finally:
        crashed.kill()

    # Another node takes it over once the claim's lease (--claim-timeout) has run out.
    server = start_server(
        database_url,
        tmp_path,
        "--node-id",
        "causal-b",
        "--claim-timeout",
        "0.5",
        "--sweep-interval",
        "0.1",
        "--processing-delay",
        "0",
    )
    try:
        events = events_once(
            server,
            "reclaimed-1",
            "OrderPlaced",
            "OrderProcessingStarted",
            "OrderProcessingStarted",
            "OrderCompleted",
        )
    finally:
        server.terminate()

    placed, expired, claim, completion = (e["metadata"] for e in events)
    assert expired["node"] == "causal-a" and claim["node"] == "causal-b"
    assert expired["causation_id"] == placed["event_id"]
    assert claim["causation_id"] == expired["event_id"]
    assert completion["causation_id"] == claim["event_id"]
    assert [m["correlation_id"] for m in (placed, expired, claim, completion)] == ["req-re"] * 4
