"""Event versions in the log, on every backend: each event stores the version it was
written at; rows written before versions were stored (OrderPlaced v1, no currency)
read as the current version through every reader; a log holding a version newer than
this release reads is refused at start with nothing written, and a running node that
meets one stops following and says it is not ready."""

from __future__ import annotations

import logging
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import falcon.testing
import orjson
import pytest

from api.node import Node
from orderlog.domain.errors import StartupError
from orderlog.domain.events import OrderPlaced, OrderProcessingStarted
from orderlog.domain.order import PlaceOrder, Status
from orderlog.domain.upcasting import CURRENT_VERSIONS, UPCASTERS
from orderlog.storage import event_versions, schema
from orderlog.storage.database import open_database
from orderlog.storage.database_url import parse_url
from orderlog.storage.store import EventStore
from projections.order_status import OrderStatusModel
from projections.rebuild import run as rebuild
from tests.support import (
    IDLE,
    admin_execute,
    assert_problem,
    make_store,
    raw_fetch,
    readable,
    settings_for,
    wait_for,
)

# A claim from long ago, by a worker of a node that is gone.
GONE = "gone/0a0a0a0a/0"
LONG_AGO = "2024-05-01T12:00:00.000000Z"


def v1_placed(order_id: str, user_id: Any = 7) -> str:
    """An OrderPlaced's data as every release before currencies wrote it."""
    return orjson.dumps(
        {"order_id": order_id, "user_id": user_id, "item_ids": ["a"], "total_amount": "3.50"}
    ).decode()


def claim(order_id: str) -> str:
    return orjson.dumps({"order_id": order_id, "attempt": 1, "worker_id": GONE}).decode()


def insert_raw(
    url: str,
    stream_id: str,
    version: int,
    type_name: str,
    data: str,
    *,
    node: str = "gone",
    event_version: int | None = None,
) -> None:
    """One row as a writer outside this release writes it, at the log's next position
    (on PostgreSQL, its own transaction's): without an event_version (every release
    before schema version 8), or with the one given (a newer release)."""
    columns = "position, stream_id, version, type, data, metadata, recorded_at"
    metadata = orjson.dumps({"event_id": f"{stream_id}-{version}", "node": node}).decode()
    values: list[Any] = [stream_id, version, type_name, data, metadata, LONG_AGO]
    if event_version is not None:
        columns += ", event_version"
        values.append(event_version)
    if parse_url(url).backend == "postgres":
        position, source = "base + (txid_current() - tx0) * span", "feed_origin WHERE id = 1"
    else:
        position, source = "COALESCE(MAX(position), 0) + 1", "events"
    placeholders = ", ".join(["?"] * len(values))
    raw_fetch(
        url,
        f"INSERT INTO events ({columns}) SELECT {position}, {placeholders} FROM {source}",
        tuple(values),
    )


def golden_log(url: str) -> None:
    """A log of orders written before event versions were stored: old-1 Pending, old-2
    Completed, old-3 claimed long ago by a worker that is gone."""
    make_store(url).close()
    insert_raw(url, "old-1", 1, "OrderPlaced", v1_placed("old-1"))
    insert_raw(url, "old-2", 1, "OrderPlaced", v1_placed("old-2", "u-2"))
    insert_raw(url, "old-2", 2, "OrderProcessingStarted", claim("old-2"))
    insert_raw(url, "old-2", 3, "OrderCompleted", '{"order_id":"old-2","attempt":1}')
    insert_raw(url, "old-3", 1, "OrderPlaced", v1_placed("old-3"))
    insert_raw(url, "old-3", 2, "OrderProcessingStarted", claim("old-3"))


def stored_versions(url: str, stream_id: str) -> list[int | None]:
    rows = raw_fetch(
        url, "SELECT event_version FROM events WHERE stream_id = ? ORDER BY version", (stream_id,)
    )
    return [v for (v,) in rows]


# -- the store -------------------------------------------------------------------------------


def test_a_v1_order_placed_reads_as_v2_from_the_store(database_url: str) -> None:
    golden_log(database_url)
    store = readable(make_store(database_url))
    try:
        (placed,) = store.read_stream("old-1")
        assert placed.event_version == 1
        assert placed.data["currency"] == "USD"
        assert placed.event == OrderPlaced("old-1", 7, ("a",), "3.50", "USD")
        for events in (store.read_all(0, 100), list(store.iter_all(0, page=2))):
            assert len(events) == 6
            assert {e.event_version for e in events} == {1}
            assert [e.data["currency"] for e in events if e.type == "OrderPlaced"] == ["USD"] * 3
        assert stored_versions(database_url, "old-2") == [None, None, None]  # never rewritten
    finally:
        store.close()


@pytest.mark.parametrize("group_commit", [True, False], ids=["group-commit", "direct"])
def test_every_append_stores_the_current_version_of_its_type(
    database_url: str, group_commit: bool
) -> None:
    store = make_store(database_url, group_commit=group_commit)
    try:
        placed = OrderPlaced("o1", "u", ("a",), "1.00", "EUR")
        recorded = store.append("o1", [placed, OrderProcessingStarted("o1", 1, "w/1/0")], 0)
        assert [e.event_version for e in recorded] == [2, 1]
        assert [e.event_version for e in readable(store).read_stream("o1")] == [2, 1]
        assert store.read_all(0, 10)[0].data["currency"] == "EUR"
    finally:
        store.close()
    assert stored_versions(database_url, "o1") == [2, 1]


# -- the node: every read path ------------------------------------------------------------------


def test_v1_orders_are_served_processed_swept_and_rebuilt_as_v2(database_url: str) -> None:
    golden_log(database_url)
    node = Node(settings_for(database_url)).start(bind=False)
    try:
        # Recovery claims and completes old-1 (Pending) and old-3 (its claim long gone).
        for order_id in ("old-1", "old-3"):
            wait_for(lambda o=order_id: node.service.state(o).status is Status.COMPLETED)
        # Placed by another node while this one runs: only the sweep finds it.
        insert_raw(database_url, "late-1", 1, "OrderPlaced", v1_placed("late-1"), node="other")
        wait_for(lambda: node.service.state("late-1").status is Status.COMPLETED)
        assert node.worker.wait_idle(IDLE)
        node.service.place_order(PlaceOrder("new-1", 1, ("b",), Decimal("2"), currency="EUR"))
        assert node.worker.wait_idle(IDLE)
        client = falcon.testing.TestClient(node.app)

        feed = client.simulate_get("/events", params={"limit": 1000}).json["events"]
        placed = {e["stream_id"]: e for e in feed if e["type"] == "OrderPlaced"}
        assert {k: (e["event_version"], e["data"]["currency"]) for k, e in placed.items()} == {
            "old-1": (1, "USD"),
            "old-2": (1, "USD"),
            "old-3": (1, "USD"),
            "late-1": (1, "USD"),
            "new-1": (2, "EUR"),
        }
        assert {e["event_version"] for e in feed if e["type"] != "OrderPlaced"} == {1}
        history = client.simulate_get("/orders/old-1/events").json["events"]
        assert (history[0]["event_version"], history[0]["data"]["currency"]) == (1, "USD")

        view = client.simulate_get("/orders/old-1")
        assert view.status_code == 200, view.text
        assert (view.json["status"], view.json["total_amount"]) == ("Completed", "3.50")
        row = node.projector.status.get("old-1")
        assert row is not None and orjson.loads(row.placed)["currency"] == "USD"
        listed = client.simulate_get("/orders").json["orders"]
        assert {o["order_id"]: o["status"] for o in listed} == dict.fromkeys(
            ("old-1", "old-2", "old-3", "late-1", "new-1"), "Completed"
        )
    finally:
        node.stop()

    report = rebuild(database_url, quiet=True)
    assert (report["total_orders"], report["status_counts"]["Completed"]) == (5, 5)
    store = make_store(database_url)
    try:
        rebuilt = OrderStatusModel(store).get("old-3")
        assert rebuilt is not None and orjson.loads(rebuilt.placed)["currency"] == "USD"
    finally:
        store.close()


# -- a version newer than this release reads -------------------------------------------------


def test_a_running_node_stops_following_at_an_event_newer_than_it_reads(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    node = Node(settings_for(database_url)).start(bind=False)
    client = falcon.testing.TestClient(node.app)
    try:
        node.service.place_order(PlaceOrder("o-1", 1, ("a",), Decimal("1")))
        assert node.worker.wait_idle(IDLE)
        assert node.projector.wait_for(node.store.last_position(), IDLE)
        before = node.projector.position
        with caplog.at_level(logging.ERROR, logger="orderlog.readiness"):
            # A node of a newer release writes OrderPlaced v99, then an order this one reads.
            data = orjson.loads(v1_placed("future-1")) | {"currency": "EUR", "gift": True}
            future = orjson.dumps(data).decode()
            insert_raw(database_url, "future-1", 1, "OrderPlaced", future, event_version=99)
            insert_raw(database_url, "after-1", 1, "OrderPlaced", v1_placed("after-1"))

            reason = "holds OrderPlaced v99; this release reads up to v2"
            wait_for(lambda: node.readiness().log == reason, what="the node to say why")
            ready = client.simulate_get("/readyz")
            assert ready.status_code == 503
            assert (ready.json["status"], ready.json["log"]) == ("not ready", reason)
            # Following on would only meet it again: each reader is asked once more.
            assert node.worker.sweep() == 0
            assert not node.projector.wait_for(node.store.last_position(), IDLE)
        said = [r.getMessage() for r in caplog.records if r.name == "orderlog.readiness"]
        assert said == [f"stopped following the log: it {reason} (upgrade every node together)"]

        assert node.projector.position == before  # nothing at or after it folded
        assert node.projector.status.get("future-1") is None
        assert node.projector.status.get("after-1") is None
        assert node.worker.alive and node.store.writer_alive  # no crash, no restart loop
        assert client.simulate_get("/events", params={"limit": 3}).status_code == 200
        unreadable = client.simulate_get("/events", params={"limit": 1000})
        assert assert_problem(unreadable, 503)["type"].endswith(":log-unreadable")
    finally:
        node.stop()


def log_snapshot(url: str) -> dict[str, Any]:
    """Every row of every table there is (and for SQLite, the folder's files and
    the database's bytes): what a refused start must leave as it found it."""
    db = open_database(url)
    try:
        with db.connection_context():
            names = sorted(db.get_tables())  # the test's own database: every table is ours
    finally:
        db.close_all()
    snapshot: dict[str, Any] = {
        name: sorted(map(repr, raw_fetch(url, f"SELECT * FROM {name}"))) for name in names
    }
    target = parse_url(url)
    if target.backend == "sqlite":
        path = Path(target.database)
        snapshot["files"] = sorted(p.name for p in path.parent.iterdir())
        snapshot["bytes"] = path.read_bytes()
    return snapshot


def test_a_node_refuses_to_start_on_a_log_holding_a_newer_version(
    database_url: str, tmp_path: Path
) -> None:
    store = make_store(database_url)
    store.append("o-1", [OrderPlaced("o-1", "u", ("a",), "1.00")], 0)
    store.close()
    # What a node of a newer release records before it writes its first OrderPlaced v3.
    admin_execute(
        database_url, ["INSERT INTO event_versions (type, version) VALUES ('OrderPlaced', 3)"]
    )
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    before = log_snapshot(database_url)
    done = subprocess.run(
        [sys.executable, "-m", "api", "serve", "--database", database_url, "--port", "0"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stderr) == (
        2,
        "orderlog: the log holds OrderPlaced v3; this release reads up to v2 "
        "(upgrade every node together)\n",
    )
    after = log_snapshot(database_url)
    assert after == before  # not a row, not a byte; and no node-lock file beside it
    assert not [name for name in after.get("files", []) if name.endswith(".lock")]


def test_the_migration_refuses_before_recording_its_own_versions(database_url: str) -> None:
    make_store(database_url).close()
    admin_execute(
        database_url,
        ["DELETE FROM event_versions", "INSERT INTO event_versions VALUES ('OrderPlaced', 3)"],
    )
    db = open_database(database_url)
    try:
        with pytest.raises(StartupError, match="holds OrderPlaced v3; this release reads up to v2"):
            schema.migrate(db, EventStore(db).backend)
    finally:
        db.close_all()
    assert raw_fetch(database_url, "SELECT type, version FROM event_versions") == [
        ("OrderPlaced", 3)
    ]


def test_a_new_log_records_the_versions_this_release_writes(database_url: str) -> None:
    make_store(database_url).close()
    make_store(database_url).close()  # again: nothing more
    rows = raw_fetch(database_url, "SELECT type, version FROM event_versions")
    assert sorted(rows) == sorted(CURRENT_VERSIONS.items())


# -- the checks themselves --------------------------------------------------------------------


def test_only_a_version_above_the_known_one_of_a_known_type_is_refused() -> None:
    known = {"OrderPlaced": 2, "OrderCompleted": 1}
    held = [("OrderPlaced", 1), ("OrderPlaced", 2), ("OrderCompleted", 1), ("OrderShipped", 4)]
    assert event_versions.newer_than_known(held, known) == []
    event_versions.refuse_newer(held, known)
    with pytest.raises(StartupError) as caught:
        event_versions.refuse_newer([*held, ("OrderCompleted", 2)], known)
    assert str(caught.value) == (
        "the log holds OrderCompleted v2; this release reads up to v1 (upgrade every node together)"
    )


def test_a_release_with_a_gap_in_its_upcasters_refuses_to_start() -> None:
    event_versions.require_upcasters()  # this release's chains are whole
    with pytest.raises(StartupError, match="missing OrderPlaced v2 -> v3"):
        event_versions.require_upcasters({**CURRENT_VERSIONS, "OrderPlaced": 3}, UPCASTERS)
    with pytest.raises(StartupError, match=r"OrderCompleted v1 -> v2 \(not below"):
        event_versions.require_upcasters(
            CURRENT_VERSIONS, {**UPCASTERS, ("OrderCompleted", 1): dict}
        )
