"""Acceptance: several ``orderlog serve`` nodes on one server database, one SIGKILLed.

Orders go round-robin over real HTTP to every live node; mid-run one node is
killed without warning. Clients retry what got no answer on a survivor with the
same body (an identical retry is idempotent). Afterwards every acknowledged order
must be Completed with exactly one OrderCompleted, the killed node's claims must
have been taken over once their lease ran out, and each survivor's /metrics must
equal the metrics folded from the log itself (so the survivors agree).
SQLite is one file on one machine, so these run on PostgreSQL and MariaDB only.
"""

from __future__ import annotations

import http.client
import itertools
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest

from orderlog.domain.events import RecordedEvent
from orderlog.storage.row import parse_time
from projections import metrics
from tests.support import ServerProcess, logged_positions, start_server

pytestmark = pytest.mark.slow

# Several nodes need a server database: SQLite is one file on one machine.
SERVER_ONLY = ["postgres", "mysql"]
NODES = {"postgres": 3, "mysql": 2}
ORDERS = 3000
KILL_AFTER = 1000  # acknowledged orders before one node is killed
CLIENTS = 24
CLAIM_TIMEOUT = 3
QUIET_DEADLINE = 90.0
NODE_FLAGS = (
    "--claim-timeout",
    str(CLAIM_TIMEOUT),
    "--sweep-interval",
    "0.2",
    "--pending-grace",
    "1",
    "--processing-delay",
    "0.05",
    "--threads",
    "8",  # HTTP threads: three nodes must fit in PostgreSQL's 100 connections
)


def order_body(number: int) -> dict[str, Any]:
    return {
        "order_id": f"mn-{number}",
        "user_id": f"u{number % 50}",
        "item_ids": [f"i{number % 7}", "i-common"],
        "total_amount": f"{number % 100}.{number % 100:02d}",
    }


class Cluster:
    """The nodes, which of them clients may use, and what the clients were told."""

    def __init__(self, nodes: list[ServerProcess]) -> None:
        self.nodes = nodes
        self.alive = list(nodes)
        self.killed: ServerProcess | None = None
        self.acked: dict[str, int] = {}  # order id -> 201 or 200
        self.refused: list[str] = []  # answers that were neither an ack nor a lost connection
        self._lock = threading.Lock()
        self._numbers = itertools.count()

    def next_order(self) -> int | None:
        with self._lock:
            number = next(self._numbers)
        return number if number < ORDERS else None

    def pick(self, number: int, attempt: int) -> ServerProcess:
        with self._lock:
            return self.alive[(number + attempt) % len(self.alive)]

    def acknowledge(self, order_id: str, status: int) -> None:
        with self._lock:
            self.acked[order_id] = status
            kill = len(self.acked) >= KILL_AFTER and self.killed is None
            if kill:
                self.killed = self.alive.pop()  # no new request goes to it from now on
        if kill:
            assert self.killed is not None
            self.killed.kill()


def client(cluster: Cluster) -> None:
    """Send orders until none are left, one keep-alive connection per node."""
    connections: dict[int, http.client.HTTPConnection] = {}
    try:
        while (number := cluster.next_order()) is not None:
            body = orjson.dumps(order_body(number))
            for attempt in range(10):
                node = cluster.pick(number, attempt)
                conn = connections.get(node.port)
                if conn is None:
                    conn = connections[node.port] = http.client.HTTPConnection(
                        node.host, node.port, timeout=30
                    )
                try:
                    conn.request(
                        "POST", "/orders", body=body, headers={"Content-Type": "application/json"}
                    )
                    response = conn.getresponse()
                    response.read()
                except (OSError, http.client.HTTPException):
                    # No answer (the node died under us): the order may or may not exist,
                    # so send the identical body again, to a survivor.
                    conn.close()
                    connections.pop(node.port, None)
                    continue
                if response.status in (200, 201):
                    cluster.acknowledge(f"mn-{number}", response.status)
                else:
                    cluster.refused.append(f"mn-{number}: {response.status} from {node.port}")
                break
            else:
                cluster.refused.append(f"mn-{number}: no node answered")
    finally:
        for conn in connections.values():
            conn.close()


def read_feed(node: ServerProcess) -> list[RecordedEvent]:
    """The whole log through GET /events, page by page."""
    events: list[RecordedEvent] = []
    after = 0
    while True:
        status, _, page = node.request("GET", f"/events?after={after}&limit=1000")
        assert status == 200, page
        if not page["events"]:
            return events
        for e in page["events"]:
            assert e["position"] > after, "the feed went back"
            after = e["position"]
            events.append(
                RecordedEvent.of(
                    e["position"],
                    e["stream_id"],
                    e["version"],
                    e["type"],
                    e["data"],
                    e["metadata"],
                    parse_time(e["recorded_at"]),
                )
            )


def metrics_of(node: ServerProcess) -> dict[str, Any] | None:
    status, _, body = node.request("GET", "/metrics")
    return body if status == 200 else None


def quiet(survivors: list[ServerProcess]) -> list[dict[str, Any]] | None:
    """Every survivor's metrics, once all orders are Completed and they all agree."""
    reports = [metrics_of(node) for node in survivors]
    if any(r is None for r in reports):
        return None
    first = reports[0]
    assert first is not None
    counts = first["status_counts"]
    done = counts["Pending"] == counts["Processing"] == 0 and counts["Completed"] > 0
    return reports if done and all(r == first for r in reports) else None  # type: ignore[return-value]


def start_nodes(url: str, count: int, log_dir: Path) -> list[ServerProcess]:
    """Start the nodes together, as a deployment would (they race to create the schema)."""
    with ThreadPoolExecutor(count) as pool:
        futures = [
            pool.submit(
                start_server, url, log_dir / f"node-{i}", "--node-id", f"node-{i}", *NODE_FLAGS
            )
            for i in range(count)
        ]
        return [f.result() for f in futures]


@pytest.mark.parametrize("backend", SERVER_ONLY, indirect=True)
def test_every_acknowledged_order_completes_exactly_once_when_a_node_is_killed(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url: str = request.getfixturevalue("database_url")
    started = time.monotonic()
    nodes = start_nodes(url, NODES[backend], tmp_path)
    cluster = Cluster(nodes)
    try:
        with ThreadPoolExecutor(CLIENTS) as pool:
            for future in [pool.submit(client, cluster) for _ in range(CLIENTS)]:
                future.result()
        sent = time.monotonic()
        assert cluster.refused == []
        assert cluster.killed is not None and cluster.killed.process.returncode is not None
        survivors = [node for node in nodes if node is not cluster.killed]
        assert len(cluster.acked) == ORDERS  # every order got an answer, from someone
        assert Counter(cluster.acked.values())[201] >= ORDERS - CLIENTS

        survivors[0].wait_until(lambda _: quiet(survivors), timeout=QUIET_DEADLINE, interval=0.2)
        events = read_feed(survivors[0])
        reports = quiet(survivors)
        assert reports is not None
        finished = time.monotonic()
    finally:
        for node in nodes:
            if node.process.poll() is None:
                node.terminate()

    by_type: dict[str, Counter[str]] = {
        kind: Counter(e.stream_id for e in events if e.type == kind)
        for kind in ("OrderPlaced", "OrderProcessingStarted", "OrderCompleted")
    }
    # The tailing reader skipped nothing: it read exactly what the table holds.
    assert [e.position for e in events] == logged_positions(url)
    missing = [o for o in cluster.acked if by_type["OrderCompleted"][o] != 1]
    assert missing == [], f"acknowledged orders not completed exactly once: {missing[:10]}"
    assert all(n == 1 for n in by_type["OrderPlaced"].values())  # retries created nothing new
    assert set(by_type["OrderPlaced"]) == set(cluster.acked)
    assert all(n == 1 for n in by_type["OrderCompleted"].values())
    # Completion is the last event of every order: nothing was claimed after it.
    last = {e.stream_id: e.type for e in events}
    assert set(last.values()) == {"OrderCompleted"}

    # What the killed node had accepted or claimed was finished by survivors: claims it
    # held once their lease ran out (claimed twice), orders still Pending after the grace.
    killed_node = f"node-{nodes.index(cluster.killed)}"
    completed_by = {
        e.stream_id: e.metadata.get("node") for e in events if e.type == "OrderCompleted"
    }
    claimed_by_killed = {
        e.stream_id
        for e in events
        if e.type == "OrderProcessingStarted" and e.metadata.get("node") == killed_node
    }
    taken_over = [o for o in claimed_by_killed if completed_by[o] != killed_node]
    assert all(by_type["OrderProcessingStarted"][o] >= 2 for o in taken_over)
    accepted_by_killed = {
        e.stream_id
        for e in events
        if e.type == "OrderPlaced" and e.metadata.get("node") == killed_node
    }
    finished_by_survivors = [o for o in accepted_by_killed if completed_by[o] != killed_node]
    assert taken_over or finished_by_survivors, f"{killed_node} left nothing for the survivors"

    # Every survivor reports exactly the metrics the log itself folds to.
    expected = metrics.report(metrics.fold(events), events[-1].position)
    assert all(report == expected for report in reports)
    assert expected["total_orders"] == expected["orders_processed"] == ORDERS
    print(
        f"{backend}: {len(nodes)} nodes, {ORDERS} orders sent in {sent - started:.1f}s, "
        f"quiet after {finished - started:.1f}s; {len(taken_over)} claims taken over, "
        f"{len(finished_by_survivors)} of its accepted orders finished by survivors"
    )


@pytest.mark.parametrize("backend", SERVER_ONLY, indirect=True)
def test_an_order_slower_than_its_lease_is_reclaimed_and_completed_exactly_once(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The first node takes 2 s over an order whose lease is 0.5 s: the second node takes
    it over and completes it, and the first node's late completion is refused and dropped."""
    url: str = request.getfixturevalue("database_url")
    flags = ("--claim-timeout", "0.5", "--sweep-interval", "0.1", "--pending-grace", "30")
    slow = ("--processing-delay", "2")
    first = start_server(url, tmp_path / "first", "--node-id", "first", *flags, *slow)
    fast = ("--processing-delay", "0.05")
    second = start_server(url, tmp_path / "second", "--node-id", "second", *flags, *fast)
    try:
        status, _, _ = first.request("POST", "/orders", order_body(1))
        assert status == 201

        def completed(node: ServerProcess) -> list[dict[str, Any]] | None:
            _, _, body = node.request("GET", "/orders/mn-1/events")
            events = body["events"]
            return events if events[-1]["type"] == "OrderCompleted" else None

        events = second.wait_until(completed, timeout=30)
        # The first claim's worker finishes too, a moment later, and must lose.
        first.wait_until(lambda n: "re-claimed by another worker" in n.log(), timeout=30)
        events = completed(second)
    finally:
        first.terminate()
        second.terminate()
    assert events is not None
    types = [e["type"] for e in events]
    assert types.count("OrderCompleted") == 1
    claims = [e["data"]["worker_id"] for e in events if e["type"] == "OrderProcessingStarted"]
    assert len(claims) == 2
    assert claims[0].startswith("first/") and claims[1].startswith("second/")
    assert events[-1]["metadata"]["node"] == "second"
