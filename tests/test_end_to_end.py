"""``orderlog serve`` as a real process over real HTTP, on every backend.

The acceptance scenarios: a thousand orders at once, a SIGKILL with orders in
every state, rebuilding the projections from the log afterwards, and a graceful
SIGTERM. Waits poll the server's own answers with a deadline.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from bench import loadgen
from tests.support import ROOT, ServerProcess, dense, logged_positions, make_store, start_server

NODE = ("--node-id", "e2e-node")  # one name across restarts: the log's claims stay "ours"


def order_body(order_id: str) -> bytes:
    return orjson.dumps(
        {"order_id": order_id, "user_id": 7, "item_ids": ["i1", "i2"], "total_amount": "12.50"}
    )


def post_orders(server: ServerProcess, order_ids: list[str], connections: int) -> None:
    """POST every order at once, a fresh socket each; all must be accepted."""
    requests = [("POST", "/orders", order_body(order_id)) for order_id in order_ids]
    responses = loadgen.run(server.host, server.port, requests, connections, keep_alive=False)
    failed = Counter(r.error or r.status for r in responses if r.status != 201)
    assert not failed, f"not accepted: {dict(failed)}"


def metrics(server: ServerProcess) -> dict[str, Any]:
    status, _, body = server.request("GET", "/metrics")
    assert status == 200
    return body


def completed(count: int) -> Any:
    return lambda server: metrics(server)["status_counts"]["Completed"] >= count


def all_events(server: ServerProcess) -> list[dict[str, Any]]:
    """The whole log through /events, page by page."""
    events: list[dict[str, Any]] = []
    after = 0
    while True:
        status, _, page = server.request("GET", f"/events?after={after}&limit=1000")
        assert status == 200
        events.extend(page["events"])
        if not page["events"]:
            return events
        after = page["next_after"]


def order_events(server: ServerProcess, order_id: str) -> list[dict[str, Any]]:
    status, _, body = server.request("GET", f"/orders/{order_id}/events")
    assert status == 200, body
    return body["events"]


def first_claimed(server: ServerProcess) -> str | None:
    for event in all_events(server):
        if event["type"] == "OrderProcessingStarted":
            return event["stream_id"]
    return None


def run_cli(*args: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    return orjson.loads(result.stdout)


@pytest.mark.slow
def test_a_thousand_orders_on_a_thousand_connections_are_all_completed_once(
    database_url: str, tmp_path: Path
) -> None:
    server = start_server(database_url, tmp_path, "--processing-delay", "0")
    try:
        order_ids = [f"burst-{n:04d}" for n in range(1000)]
        post_orders(server, order_ids, connections=1000)

        server.wait_until(completed(1000), timeout=120)
        report = metrics(server)
        assert report["total_orders"] == 1000
        assert report["orders_processed"] == 1000
        assert sum(report["status_counts"].values()) == 1000
        assert report["status_counts"] == {"Pending": 0, "Processing": 0, "Completed": 1000}

        events = all_events(server)
        by_type = {
            kind: Counter(e["stream_id"] for e in events if e["type"] == kind)
            for kind in ("OrderPlaced", "OrderProcessingStarted", "OrderCompleted")
        }
        for kind, per_order in by_type.items():
            assert per_order == Counter({order_id: 1 for order_id in order_ids}), kind
        assert [e["position"] for e in events] == logged_positions(database_url)
        if dense(database_url):
            assert [e["position"] for e in events] == list(range(1, len(events) + 1))
    finally:
        server.terminate()


def crash_with_orders_in_hand(database_url: str, tmp_path: Path, count: int) -> tuple[str, ...]:
    """Accept ``count`` orders on a slow server, SIGKILL it once one is being processed.

    Returns the order ids and, last, the id of the order that was Processing.
    """
    slow = start_server(
        database_url, tmp_path, *NODE, "--processing-delay", "30", "--max-in-work", "1"
    )
    order_ids = [f"crash-{n:03d}" for n in range(count)]
    try:
        post_orders(slow, order_ids, connections=count)
        in_hand = slow.wait_until(first_claimed, timeout=30)
        counts = metrics(slow)["status_counts"]
        assert counts == {"Pending": count - 1, "Processing": 1, "Completed": 0}
    finally:
        slow.kill()
    return (*order_ids, in_hand)


@pytest.mark.slow
def test_after_a_sigkill_every_accepted_order_is_completed_exactly_once(
    database_url: str, tmp_path: Path
) -> None:
    *order_ids, in_hand = crash_with_orders_in_hand(database_url, tmp_path, 50)

    server = start_server(database_url, tmp_path, *NODE, "--processing-delay", "0")
    try:
        server.wait_until(completed(len(order_ids)), timeout=60)
        assert metrics(server)["total_orders"] == len(order_ids)
        for order_id in order_ids:
            events = order_events(server, order_id)
            types = [e["type"] for e in events]
            assert types.count("OrderPlaced") == 1
            assert types.count("OrderCompleted") == 1, (order_id, types)
            assert types[-1] == "OrderCompleted"
            claims = [e["data"] for e in events if e["type"] == "OrderProcessingStarted"]
            if order_id == in_hand:
                # Claimed by the killed process, then claimed again after the restart.
                assert [c["attempt"] for c in claims] == [1, 2]
                assert claims[0]["worker_id"] != claims[1]["worker_id"]
                assert events[-1]["data"]["attempt"] == 2
            else:
                assert [c["attempt"] for c in claims] == [1]
    finally:
        server.terminate()


@pytest.mark.slow
def test_rebuilding_from_the_log_gives_the_metrics_the_server_shows(
    database_url: str, tmp_path: Path
) -> None:
    *order_ids, _ = crash_with_orders_in_hand(database_url, tmp_path, 20)
    server = start_server(database_url, tmp_path, *NODE, "--processing-delay", "0")
    try:
        server.wait_until(completed(len(order_ids)), timeout=60)
        served = metrics(server)
    finally:
        assert server.terminate() == 0

    assert served["orders_processed"] == len(order_ids)
    assert run_cli("api", "rebuild", "--database", database_url, "--quiet") == served
    assert run_cli("projections.rebuild", "--database", database_url, "--quiet") == served


@pytest.mark.slow
def test_sigterm_finishes_the_order_in_hand_and_leaves_queued_ones_pending(
    database_url: str, tmp_path: Path
) -> None:
    shutdown_timeout = 10.0
    server = start_server(
        database_url,
        tmp_path,
        *NODE,
        "--processing-delay",
        "1.5",
        "--max-in-work",
        "1",
        "--shutdown-timeout",
        str(shutdown_timeout),
    )
    order_ids = [f"term-{n}" for n in range(6)]
    try:
        post_orders(server, order_ids, connections=len(order_ids))
        in_hand = server.wait_until(first_claimed, timeout=30)
    finally:
        started = time.monotonic()
        returncode = server.terminate(timeout=shutdown_timeout + 20)
        took = time.monotonic() - started
    assert returncode == 0, server.log()
    assert took < shutdown_timeout, f"took {took:.1f}s"

    store = make_store(database_url, group_commit=False)
    try:
        streams = {
            order_id: [e.type for e in store.read_stream(order_id)] for order_id in order_ids
        }
    finally:
        store.close()
    assert streams.pop(in_hand) == ["OrderPlaced", "OrderProcessingStarted", "OrderCompleted"]
    assert set(map(tuple, streams.values())) == {("OrderPlaced",)}

    restarted = start_server(database_url, tmp_path, *NODE, "--processing-delay", "0")
    try:
        restarted.wait_until(completed(len(order_ids)), timeout=60)
        for order_id in order_ids:
            types = [e["type"] for e in order_events(restarted, order_id)]
            assert types == ["OrderPlaced", "OrderProcessingStarted", "OrderCompleted"]
    finally:
        restarted.terminate()


def processing_count(count: int) -> Any:
    return lambda server: metrics(server)["status_counts"]["Processing"] >= count


@pytest.mark.slow
def test_a_sigkill_while_orders_wait_for_their_work_loses_none(
    database_url: str, tmp_path: Path
) -> None:
    # Long work: every order is claimed at once and sits on the timer when the kill comes.
    server = start_server(database_url, tmp_path, *NODE, "--processing-delay", "60")
    order_ids = [f"wait-{n:03d}" for n in range(200)]
    try:
        post_orders(server, order_ids, connections=200)
        server.wait_until(processing_count(200), timeout=60)
    finally:
        server.kill()

    restarted = start_server(database_url, tmp_path, *NODE, "--processing-delay", "0")
    try:
        restarted.wait_until(completed(200), timeout=60)
        for order_id in order_ids:
            events = order_events(restarted, order_id)
            types = [e["type"] for e in events]
            assert types == [
                "OrderPlaced",
                "OrderProcessingStarted",
                "OrderProcessingStarted",
                "OrderCompleted",
            ], (order_id, types)
            assert events[-1]["data"]["attempt"] == 2  # completed by the restarted node's claim
    finally:
        restarted.terminate()


@pytest.mark.slow
def test_sigterm_with_orders_waiting_for_their_work_exits_in_time_and_loses_none(
    database_url: str, tmp_path: Path
) -> None:
    shutdown_timeout = 3.0
    server = start_server(
        database_url,
        tmp_path,
        *NODE,
        "--processing-delay",
        "60",
        "--shutdown-timeout",
        str(shutdown_timeout),
    )
    order_ids = [f"long-{n:03d}" for n in range(100)]
    try:
        post_orders(server, order_ids, connections=100)
        server.wait_until(processing_count(100), timeout=60)
    finally:
        started = time.monotonic()
        returncode = server.terminate(timeout=shutdown_timeout + 30)
        took = time.monotonic() - started
    assert returncode == 0, server.log()
    assert took < shutdown_timeout + 5, f"took {took:.1f}s"  # the timeout, plus start-up slack

    restarted = start_server(database_url, tmp_path, *NODE, "--processing-delay", "0")
    try:
        restarted.wait_until(completed(100), timeout=60)
        for order_id in order_ids:
            types = [e["type"] for e in order_events(restarted, order_id)]
            assert types.count("OrderCompleted") == 1 and types[-1] == "OrderCompleted"
    finally:
        restarted.terminate()


@pytest.mark.slow
def test_sigterm_completes_the_orders_whose_work_ends_within_the_shutdown_timeout(
    database_url: str, tmp_path: Path
) -> None:
    server = start_server(
        database_url, tmp_path, *NODE, "--processing-delay", "1.5", "--shutdown-timeout", "10"
    )
    order_ids = [f"soon-{n:03d}" for n in range(100)]
    try:
        post_orders(server, order_ids, connections=100)
        server.wait_until(processing_count(100), timeout=60)
    finally:
        returncode = server.terminate(timeout=40)
    assert returncode == 0, server.log()

    store = make_store(database_url, group_commit=False)
    try:
        for order_id in order_ids:  # all done before the process exited: nothing left over
            assert [e.type for e in store.read_stream(order_id)][-1] == "OrderCompleted"
    finally:
        store.close()
