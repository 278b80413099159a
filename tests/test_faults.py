"""Faults between a node and its database, injected for real, and what clients are told.

PostgreSQL and MariaDB are reached through ``tests.fault_proxy.FaultProxy``, which
can stall the path (``pause``: the kernel still ACKs, so no server-side timeout
fires), cut a connection right after forwarding a COMMIT (the commit lands, its
answer is lost) or right before (the control case: it never lands), and pause
once a transaction holds the append lock. SQLite is stalled by another process
holding its write lock. Nodes are real ``orderlog serve`` processes. Each test
checks what each answer promised against the log itself:

- a 201 means the order is in the log, once, and completes once;
- a 503 ``append-failed`` (or ``shutting-down``) means it is not in the log;
- a 503 ``outcome-unknown`` carries the order id, and sending the order again with
  it settles it: placed once.
"""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orderlog.storage.database_url import parse_url
from orderlog.storage.row import parse_time
from tests.conftest import backend_url
from tests.fault_proxy import FaultProxy
from tests.support import ServerProcess, raw_fetch, start_server, wait_for

pytestmark = pytest.mark.slow

PROBLEM = "urn:orderlog:problem:"
# Quick to settle: a short bound on database calls, and short processing.
QUICK = ("--db-timeout", "2", "--processing-delay", "0.05", "--sweep-interval", "0.2")


def order(order_id: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"user_id": 7, "item_ids": ["sku-1"], "total_amount": "12.50"}
    if order_id is not None:
        body["order_id"] = order_id
    return body


@pytest.fixture(params=["postgres", "mysql"])
def server_url(request: pytest.FixtureRequest, server_databases: dict, tmp_path: Path) -> str:  # type: ignore[type-arg]
    return backend_url(request.param, server_databases, tmp_path)


@pytest.fixture
def proxy(server_url: str) -> Iterator[FaultProxy]:
    target = parse_url(server_url)
    with FaultProxy((target.host or "127.0.0.1", target.port or 0), target.backend) as made:
        yield made


@pytest.fixture
def servers() -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for server in started:
        if server.process.poll() is None:
            server.process.send_signal(signal.SIGCONT)
            server.kill()


def events_of(url: str, order_id: str) -> list[str]:
    rows = raw_fetch(
        url, "SELECT type FROM events WHERE stream_id = ? ORDER BY version", (order_id,)
    )
    return [kind for (kind,) in rows]


def placed_ids(url: str) -> Counter[str]:
    rows = raw_fetch(url, "SELECT stream_id FROM events WHERE type = 'OrderPlaced'")
    return Counter(stream_id for (stream_id,) in rows)


def finished_view(server: ServerProcess, order_id: str) -> dict[str, Any] | None:
    status, _, body = server.request("GET", f"/orders/{order_id}", timeout=10)
    return body if status == 200 and body["status"] == "Completed" else None


def completed(server: ServerProcess, order_id: str) -> bool:
    status, _, body = server.request("GET", f"/orders/{order_id}", timeout=10)
    return status == 200 and body["status"] == "Completed"


DONE = ["OrderPlaced", "OrderProcessingStarted", "OrderCompleted"]


# -- a COMMIT whose answer is lost ------------------------------------------------------------


def test_a_placement_whose_commit_answer_is_lost_is_answered_201_and_placed_once(
    server_url: str, proxy: FaultProxy, servers: list[ServerProcess], tmp_path: Path
) -> None:
    node = start_server(proxy.url(server_url), tmp_path, *QUICK)
    servers.append(node)
    proxy.cut_after_commit(containing="OrderPlaced")
    status, _, body = node.request("POST", "/orders", order())  # the server names the order

    assert proxy.cuts == 1, "the placement's COMMIT was not cut"
    assert status == 201, body
    order_id = body["order_id"]
    node.wait_until(lambda n: completed(n, order_id), timeout=30)
    assert placed_ids(server_url) == Counter({order_id: 1})
    assert events_of(server_url, order_id) == DONE


def test_a_placement_cut_before_its_commit_is_503_append_failed_and_not_stored(
    server_url: str, proxy: FaultProxy, servers: list[ServerProcess], tmp_path: Path
) -> None:
    node = start_server(proxy.url(server_url), tmp_path, *QUICK)
    servers.append(node)
    proxy.cut_before_commit(containing="OrderPlaced")
    status, headers, body = node.request("POST", "/orders", order("cut-1"))

    assert proxy.cuts == 1
    assert status == 503, body
    assert body["type"] == PROBLEM + "append-failed"
    assert headers["retry-after"]
    assert placed_ids(server_url) == Counter()
    status, _, body = node.request("POST", "/orders", order("cut-1"))  # as the answer says
    assert status == 201, body
    node.wait_until(lambda n: completed(n, "cut-1"), timeout=30)
    assert events_of(server_url, "cut-1") == DONE


def test_a_claim_whose_commit_answer_is_lost_is_completed_once_without_waiting_for_its_lease(
    server_url: str, proxy: FaultProxy, servers: list[ServerProcess], tmp_path: Path
) -> None:
    # The lease is far longer than the wait below: only taking the claim back in hand
    # at once completes the order in time.
    node = start_server(proxy.url(server_url), tmp_path, *QUICK, "--claim-timeout", "600")
    servers.append(node)
    proxy.cut_after_commit(containing="OrderProcessingStarted")
    status, _, body = node.request("POST", "/orders", order("claim-1"))
    assert status == 201, body

    node.wait_until(lambda n: completed(n, "claim-1"), timeout=20)
    assert proxy.cuts == 1, "the claim's COMMIT was not cut"
    assert events_of(server_url, "claim-1") == DONE


# -- a stalled database -------------------------------------------------------------------------


class Clients:
    """Threads placing new orders, each with its own id, until stopped; every answer kept.
    With ``read_back`` each placed order is read back at once (read-your-writes)."""

    def __init__(self, node: ServerProcess, count: int, *, read_back: bool = False) -> None:
        self.node = node
        self.answers: list[tuple[str, int, Any, float, float]] = []  # id, status, body, t, s
        self.reads: list[tuple[str, int, float]] = []  # id, status, seconds
        self._read_back = read_back
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(count)]

    def __enter__(self) -> Clients:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def _run(self) -> None:
        while not self._stop.is_set():
            order_id = f"s-{uuid.uuid4().hex[:12]}"
            started = time.monotonic()
            try:
                status, _, body = self.node.request("POST", "/orders", order(order_id), timeout=30)
            except OSError as exc:
                status, body = 0, repr(exc)
            with self._lock:
                self.answers.append((order_id, status, body, started, time.monotonic() - started))
            if self._read_back and status == 201:
                started = time.monotonic()
                try:
                    status = self.node.request("GET", f"/orders/{order_id}", timeout=30)[0]
                except OSError:
                    status = 0
                with self._lock:
                    self.reads.append((order_id, status, time.monotonic() - started))

    def count(self) -> int:
        with self._lock:
            return len(self.answers)


def kind(body: Any) -> str:
    return body["type"].removeprefix(PROBLEM) if isinstance(body, dict) and "type" in body else ""


def settle_answers(node: ServerProcess, url: str, answers: list[Any]) -> Counter[str]:
    """Check every answer against the log; returns how many of each kind there were."""
    seen: Counter[str] = Counter()
    unknown = []
    for order_id, status, body, _, _ in answers:
        if status == 201:
            seen["201"] += 1
        elif status == 503 and kind(body) in ("append-failed", "outcome-unknown", "shutting-down"):
            seen[kind(body)] += 1
            if kind(body) == "outcome-unknown":
                assert body["order_id"] == order_id
                unknown.append(order_id)
        else:
            raise AssertionError(f"{order_id}: answered {status} {body}")
    for order_id in unknown:  # sent again, as the answer says: now it is known
        status, _, body = node.request("POST", "/orders", order(order_id))
        assert status in (200, 201), body
    placed = placed_ids(url)
    assert all(count == 1 for count in placed.values()), "an order was placed twice"
    for order_id, status, body, _, _ in answers:
        if status == 201 or kind(body) == "outcome-unknown":
            assert placed[order_id] == 1, f"{order_id} was acknowledged and is not in the log"
        else:
            assert placed[order_id] == 0, f"{order_id} was answered append-failed, yet stored"
    node.wait_until(lambda n: n.request("GET", "/metrics")[2]["status_counts"]["Completed"]
                    == len(placed), timeout=60)  # fmt: skip
    for order_id in placed:
        assert events_of(url, order_id)[-1] == "OrderCompleted"
    return seen


def test_a_stalled_database_is_answered_503_in_time_and_health_never_waits(
    server_url: str, proxy: FaultProxy, servers: list[ServerProcess], tmp_path: Path
) -> None:
    # Defaults as users run them (--db-timeout 5, 16 request threads), 20 clients.
    node = start_server(proxy.url(server_url), tmp_path, "--processing-delay", "0.05")
    servers.append(node)
    with Clients(node, 20) as clients:
        wait_for(lambda: clients.count() >= 20, what="orders placed before the stall")
        proxy.pause()
        stalled_at = time.monotonic()
        started = time.monotonic()
        assert node.request("GET", "/healthz", timeout=5)[0] == 200
        assert time.monotonic() - started < 1.0, "/healthz waited"
        node.wait_until(lambda n: n.request("GET", "/readyz", timeout=5)[0] == 503, timeout=10)
        not_ready_after = time.monotonic() - stalled_at
        # Every request thread is busy with the stall by now, and health still answers.
        started = time.monotonic()
        assert node.request("GET", "/healthz", timeout=5)[0] == 200
        assert time.monotonic() - started < 1.0, "/healthz waited on a request thread"
        wait_for(lambda: time.monotonic() - stalled_at > 8, timeout=10, what="a long stall")
        proxy.resume()
        node.wait_until(lambda n: n.request("GET", "/readyz", timeout=5)[0] == 200, timeout=30)
        during = len(clients.answers)
        wait_for(lambda: clients.count() >= during + 20, what="orders placed after the stall")
    assert not_ready_after < 6.0, f"/readyz said ready {not_ready_after:.1f} s into a stall"
    slowest = max(seconds for *_, seconds in clients.answers)
    assert slowest < 6.0, f"a POST took {slowest:.1f} s to be answered"
    seen = settle_answers(node, server_url, clients.answers)
    assert seen["append-failed"] + seen["outcome-unknown"] > 0, "the stall was never felt"


def test_a_stop_during_a_stall_ends_within_drain_and_shutdown_timeouts(
    server_url: str, proxy: FaultProxy, servers: list[ServerProcess], tmp_path: Path
) -> None:
    node = start_server(
        proxy.url(server_url), tmp_path, *QUICK, "--drain-timeout", "1", "--shutdown-timeout", "2"
    )
    servers.append(node)
    with Clients(node, 20) as clients:
        wait_for(lambda: clients.count() >= 20, what="orders placed before the stall")
        proxy.pause()
        node.wait_until(lambda n: n.request("GET", "/readyz", timeout=5)[0] == 503, timeout=10)
        started = time.monotonic()
        node.process.send_signal(signal.SIGTERM)
        node.process.wait(timeout=30)
        took = time.monotonic() - started
    assert took <= 1 + 2 + 2, f"the stop took {took:.1f} s"
    proxy.resume()
    restarted = start_server(server_url, tmp_path, *QUICK)
    servers.append(restarted)
    answered = [a for a in clients.answers if a[1] != 0]  # cut off by the stop: no promise
    settle_answers(restarted, server_url, answered)


def test_a_sqlite_write_lock_held_elsewhere_is_answered_503_in_time(
    servers: list[ServerProcess], tmp_path: Path
) -> None:
    path = tmp_path / "orderlog.db"
    node = start_server(f"sqlite:///{path}", tmp_path, "--processing-delay", "0.05")
    servers.append(node)
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another process's long write transaction
        started = time.monotonic()
        status, headers, body = node.request("POST", "/orders", order("lock-1"))
        took = time.monotonic() - started
        assert status == 503, body
        assert body["type"] == PROBLEM + "append-failed" and headers["retry-after"]
        assert took < 6.0, f"the POST took {took:.1f} s"
        assert node.request("GET", "/healthz", timeout=5)[0] == 200
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    status, _, body = node.request("POST", "/orders", order("lock-1"))
    assert status == 201, body
    node.wait_until(lambda n: completed(n, "lock-1"), timeout=30)


# -- a stopped node ------------------------------------------------------------------------------


def test_a_node_stalled_in_the_middle_of_an_append_stops_no_other_node(
    server_url: str, proxy: FaultProxy, servers: list[ServerProcess], tmp_path: Path
) -> None:
    """MariaDB: the stalled append holds the lock row. PostgreSQL: it holds no lock, but its
    open transaction holds every reader of the log back, so reads wait for its end."""
    # Defaults as users run them: a transaction left idle ends after half of --db-timeout.
    stalled = start_server(proxy.url(server_url), tmp_path, "--node-id", "stalled")
    healthy = start_server(server_url, tmp_path, "--node-id", "healthy")
    servers += [stalled, healthy]
    # The next append, once it holds the lock (MariaDB) or its transaction id (PostgreSQL).
    proxy.pause_after("txid_current()" if proxy.protocol == "postgres" else "FOR UPDATE")
    answer: list[Any] = []
    placing = threading.Thread(
        target=lambda: answer.append(stalled.request("POST", "/orders", order("held-1"))),
        daemon=True,
    )
    placing.start()
    wait_for(lambda: proxy.paused, what="the stalled node holding the append lock")

    started = time.monotonic()
    status, _, body = healthy.request("POST", "/orders", order("free-1"), timeout=30)
    took = time.monotonic() - started
    assert status == 201, body
    assert took < 5.0, f"a healthy node's POST took {took:.1f} s behind a stalled node"
    healthy.wait_until(lambda n: completed(n, "free-1"), timeout=10)
    done = time.monotonic() - started
    assert done < 5.0, f"a healthy node's order completed {done:.1f} s after its POST"
    for path in ("/orders/free-1", "/orders/free-1/events", "/metrics", "/orders"):
        started = time.monotonic()
        status, _, body = healthy.request("GET", path, timeout=30)
        took = time.monotonic() - started
        assert status == 200, (path, body)
        assert took < 5.0, f"a healthy node's GET {path} took {took:.1f} s"

    placing.join(30)
    status, _, body = answer[0]
    assert status == 503 and kind(body) in ("append-failed", "outcome-unknown"), body
    proxy.resume()
    if kind(body) == "append-failed":
        assert "held-1" not in placed_ids(server_url)
    status, _, again = stalled.request("POST", "/orders", order("held-1"))  # as it says
    assert status in (200, 201), again
    assert placed_ids(server_url)["held-1"] == 1


def test_sigstopped_nodes_under_load_never_hold_the_others_up_past_the_bound(
    server_url: str, servers: list[ServerProcess], tmp_path: Path
) -> None:
    stopped = start_server(server_url, tmp_path, "--node-id", "stopped", "--processing-delay", "0")
    healthy = start_server(server_url, tmp_path, "--node-id", "healthy")
    servers += [stopped, healthy]
    with Clients(stopped, 8):
        for _ in range(3):  # each stop lands wherever the busy node is: often mid-commit
            stopped.process.send_signal(signal.SIGSTOP)
            try:
                with Clients(healthy, 4, read_back=True) as others:
                    wait_for(lambda: others.count() >= 8, timeout=30, what="healthy answers")
            finally:
                stopped.process.send_signal(signal.SIGCONT)
            slowest = max(seconds for *_, seconds in others.answers)
            assert slowest < 5.0, f"a healthy node's POST took {slowest:.1f} s"
            assert all(a[1] == 201 for a in others.answers), others.answers
            # Its reads (on PostgreSQL held back while the stopped node's transaction is
            # open) and its completions are bounded alike.
            slowest = max(seconds for *_, seconds in others.reads)
            assert slowest < 5.0, f"a healthy node's GET took {slowest:.1f} s"
            assert all(status == 200 for _, status, _ in others.reads), others.reads
            for order_id, *_ in others.answers:
                view = healthy.wait_until(lambda n, o=order_id: finished_view(n, o), timeout=30)
                took = (
                    parse_time(view["completed_at"]) - parse_time(view["placed_at"])
                ).total_seconds()
                assert took < 5.0, f"{order_id} completed {took:.1f} s after it was placed"
