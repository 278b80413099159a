"""Schema versions: a new database gets every migration, an old one is upgraded in place,
and a schema newer than the code is refused with one line."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import falcon.testing
import pytest

from api.node import Node
from orderlog.domain.errors import SchemaError
from orderlog.domain.events import OrderPlaced
from orderlog.domain.order import PlaceOrder
from orderlog.storage import schema
from orderlog.storage.database import open_database
from orderlog.storage.database_url import parse_url
from orderlog.storage.store import EventStore
from tests.support import ROOT, admin_execute, make_store, raw_fetch, settings_for

V1_SQLITE = ROOT / "tests" / "data" / "schema-v1.sqlite.sql"
V5_MYSQL = ROOT / "tests" / "data" / "schema-v5.mysql.sql"
V6_POSTGRES = ROOT / "tests" / "data" / "schema-v6.postgres.sql"
V7_SQLITE = ROOT / "tests" / "data" / "schema-v7.sqlite.sql"
# What migration 8 finds in a log written before it (every type at version 1), and
# what the first start of this release adds (the versions it writes).
VERSIONS_AFTER_UPGRADE = [
    ("OrderCompleted", 1),
    ("OrderPlaced", 1),
    ("OrderPlaced", 2),
    ("OrderProcessingStarted", 1),
]


def tables(url: str) -> set[str]:
    db = open_database(url)
    try:
        with db.connection_context():
            return set(db.get_tables())
    finally:
        db.close_all()


def test_a_new_database_gets_every_migration_in_order(database_url: str) -> None:
    make_store(database_url).close()
    versions = raw_fetch(database_url, "SELECT version FROM schema_migrations ORDER BY version")
    assert [v for (v,) in versions] == [m.version for m in schema.MIGRATIONS]
    # PostgreSQL's appends take no lock: its origin of positions replaces the lock row.
    lock = "feed_origin" if parse_url(database_url).backend == "postgres" else "append_lock"
    assert {"events", lock, "projections", "tokens", "order_status"} <= tables(database_url)


def test_migrating_again_changes_nothing(database_url: str) -> None:
    store = make_store(database_url)
    store.append("o1", [OrderPlaced("o1", "u", ("a",), "1.00")], 0)
    store.close()
    db = open_database(database_url)
    try:
        assert schema.migrate(db, EventStore(db).backend) == schema.LATEST
        assert schema.current_version(db) == schema.LATEST
    finally:
        db.close_all()
    assert raw_fetch(database_url, "SELECT COUNT(*) FROM events") == [(1,)]


def test_a_database_of_the_previous_release_is_upgraded_and_its_orders_served(
    tmp_path: Path,
) -> None:
    """The SQLite schema the previous release created (captured from it), with orders in it."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(V1_SQLITE.read_text())
    rows = [
        (1, "old-1", 1, "OrderPlaced",
         '{"order_id":"old-1","user_id":7,"item_ids":["a"],"total_amount":"3.50"}',
         '{"event_id":"e1","node":"gone"}', "2026-11-01T10:00:00.000000Z"),
    ]  # fmt: skip
    conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    conn.commit()
    conn.close()
    url = f"sqlite:///{path}"

    node = Node(settings_for(url)).start(bind=False)
    try:
        assert node.worker.wait_idle(30)  # the old Pending order is picked up
        placed = node.service.state("old-1").placed
        assert (placed.total_amount, placed.currency) == ("3.50", "USD")
        node.service.place_order(PlaceOrder("new-1", 1, ("b",), Decimal("1")))
        assert node.worker.wait_idle(30)
    finally:
        node.stop()
    versions = [v for (v,) in raw_fetch(url, "SELECT version FROM schema_migrations")]
    assert sorted(versions) == [m.version for m in schema.MIGRATIONS]
    rows = raw_fetch(url, "SELECT type, event_version FROM events WHERE stream_id = 'old-1'")
    assert rows == [("OrderPlaced", None), ("OrderProcessingStarted", 1), ("OrderCompleted", 1)]
    assert sorted(raw_fetch(url, "SELECT type, version FROM event_versions")) == (
        VERSIONS_AFTER_UPGRADE
    )
    assert_append_only(url)


def assert_append_only(url: str) -> None:
    """The log's triggers still refuse to change or remove a row."""
    for statement in ("UPDATE events SET event_version = 7", "DELETE FROM events"):
        with pytest.raises(Exception, match="append-only"):
            admin_execute(url, [statement])


def test_a_log_of_schema_version_7_gets_event_versions_and_keeps_every_row(
    tmp_path: Path,
) -> None:
    """Migration 8 on a log written before it: a column and a table added, no row
    rewritten, and its OrderPlaced v1 served as v2."""
    path = tmp_path / "v7.db"
    conn = sqlite3.connect(path)
    conn.executescript(V7_SQLITE.read_text())
    conn.close()
    url = f"sqlite:///{path}"
    before = raw_fetch(url, "SELECT * FROM events ORDER BY position")

    node = Node(settings_for(url)).start(bind=False)
    try:
        assert node.worker.wait_idle(30)  # old-2, left Pending, is processed now
        client = falcon.testing.TestClient(node.app)
        history = client.simulate_get("/orders/old-2/events").json["events"]
        assert [e["event_version"] for e in history] == [1, 1, 1]
        assert history[0]["data"]["currency"] == "USD"
        assert client.simulate_get("/orders/old-2").json["status"] == "Completed"
    finally:
        node.stop()
    kept = raw_fetch(url, f"SELECT * FROM events WHERE position <= {len(before)} ORDER BY position")
    assert kept == [(*row, None) for row in before]
    assert sorted(raw_fetch(url, "SELECT type, version FROM event_versions")) == (
        VERSIONS_AFTER_UPGRADE
    )
    assert [v for (v,) in raw_fetch(url, "SELECT MAX(version) FROM schema_migrations")] == [
        schema.LATEST
    ]
    assert_append_only(url)


def text_collations(url: str) -> dict[str, str]:
    """Each character column's collation, and each table's default, on MySQL/MariaDB."""
    columns = raw_fetch(
        url,
        "SELECT CONCAT(table_name, '.', column_name), collation_name "
        "FROM information_schema.columns "
        "WHERE table_schema = DATABASE() AND collation_name IS NOT NULL",
    )
    defaults = raw_fetch(
        url,
        "SELECT table_name, table_collation FROM information_schema.tables "
        "WHERE table_schema = DATABASE()",
    )
    return dict(columns + defaults)


@pytest.mark.parametrize("backend", ["mysql"])
def test_a_new_mysql_database_compares_every_text_column_byte_for_byte(
    database_url: str,
) -> None:
    make_store(database_url).close()
    collations = text_collations(database_url)
    assert {"events.stream_id", "order_status.user_key", "tokens.name"} <= collations.keys()
    assert {name for name, c in collations.items() if c != "utf8mb4_nopad_bin"} == set()


@pytest.mark.parametrize("backend", ["mysql"])
def test_a_mariadb_database_of_the_previous_release_compares_ids_exactly_once_upgraded(
    database_url: str,
) -> None:
    """Its tables took the server's case-insensitive default; its order Case-1 is Alice's."""
    run_script(database_url, V5_MYSQL)
    assert text_collations(database_url)["events.stream_id"] == "utf8mb4_general_ci"

    node = Node(settings_for(database_url)).start(bind=False)
    try:
        client = falcon.testing.TestClient(node.app)
        body = {"order_id": "case-1", "user_id": "alice", "item_ids": ["a"], "total_amount": 1}
        placed = client.simulate_post("/orders", json=body)
        assert placed.status_code == 201, placed.text
        assert node.worker.wait_idle(30)
        old = client.simulate_get("/orders/Case-1").json  # placed and processed before
        assert (old["user_id"], old["status"]) == ("Alice", "Completed")
        assert client.simulate_get("/orders/case-1").json["user_id"] == "alice"
        assert client.simulate_get("/orders/cASE-1").status_code == 404
        for user_id, expected in (("Alice", ["Case-1"]), ("alice", ["case-1"]), ("ALICE", [])):
            listed = client.simulate_get("/orders", params={"user_id": user_id}).json["orders"]
            assert [o["order_id"] for o in listed] == expected, user_id
    finally:
        node.stop()
    versions = [v for (v,) in raw_fetch(database_url, "SELECT version FROM schema_migrations")]
    assert sorted(versions) == [m.version for m in schema.MIGRATIONS]
    collations = text_collations(database_url)
    assert {name for name, c in collations.items() if c != "utf8mb4_nopad_bin"} == set()
    assert "event_versions.type" in collations
    old = raw_fetch(database_url, "SELECT event_version FROM events WHERE position <= 3")
    assert old == [(None,)] * 3
    assert sorted(raw_fetch(database_url, "SELECT type, version FROM event_versions")) == (
        VERSIONS_AFTER_UPGRADE
    )
    assert_append_only(database_url)


def run_script(url: str, path: Path) -> None:
    script = "".join(
        line for line in path.read_text().splitlines(keepends=True) if not line.startswith("--")
    )
    admin_execute(url, [s for s in script.split(";\n") if s.strip()])


@pytest.mark.parametrize("backend", ["postgres"])
def test_a_postgres_log_of_the_previous_release_keeps_its_positions_and_feed_cursors(
    database_url: str,
) -> None:
    """Positions 1..7 written under the lock row; new ones come after them, and the integers
    a client of that release holds still resume the feed exactly where they were."""
    run_script(database_url, V6_POSTGRES)
    node = Node(settings_for(database_url)).start(bind=False)
    try:
        client = falcon.testing.TestClient(node.app)
        assert node.worker.wait_idle(30)  # old-3, left Pending, is processed now
        body = {"order_id": "new-1", "user_id": "u4", "item_ids": ["a"], "total_amount": "4.50"}
        assert client.simulate_post("/orders", json=body).status_code == 201
        assert node.worker.wait_idle(30)
        feed = client.simulate_get("/events", params={"limit": 100}).json
        positions = [e["position"] for e in feed["events"]]
        assert positions[:7] == [1, 2, 3, 4, 5, 6, 7]
        assert positions == sorted(positions) and len(set(positions)) == len(positions)
        assert feed["head"] == positions[-1] == feed["next_after"]
        new = [(e["stream_id"], e["type"]) for e in feed["events"][7:]]
        assert ("old-3", "OrderCompleted") in new and ("new-1", "OrderCompleted") in new
        old = feed["events"][:7]
        assert {e["event_version"] for e in old} == {1}
        assert {e["data"]["currency"] for e in old if e["type"] == "OrderPlaced"} == {"USD"}
        for held in (3, 7):  # an old client's next_after resumes right after that event
            page = client.simulate_get("/events", params={"after": held, "limit": 100}).json
            assert [e["position"] for e in page["events"]] == positions[held:]
        metrics = client.simulate_get("/metrics").json
        assert metrics["status_counts"]["Completed"] == 4
        assert client.simulate_get("/orders/old-3").json["status"] == "Completed"
    finally:
        node.stop()
    assert raw_fetch(database_url, "SELECT base FROM feed_origin") == [(8,)]
    assert "append_lock" not in tables(database_url)
    old = raw_fetch(database_url, "SELECT event_version FROM events WHERE position <= 7")
    assert old == [(None,)] * 7
    assert sorted(raw_fetch(database_url, "SELECT type, version FROM event_versions")) == (
        VERSIONS_AFTER_UPGRADE
    )
    assert_append_only(database_url)


def test_a_first_version_database_on_any_backend_is_upgraded(database_url: str) -> None:
    """Only the first migration applied and no record of it: what the previous release left."""
    db = open_database(database_url)
    backend = EventStore(db).backend
    try:
        schema.MIGRATIONS[0].run(db, backend)
        assert "schema_migrations" not in tables(database_url)
        assert schema.migrate(db, backend) == 1
        assert schema.current_version(db) == schema.LATEST
    finally:
        db.close_all()


def test_a_schema_newer_than_the_code_is_refused(database_url: str, tmp_path: Path) -> None:
    make_store(database_url).close()
    future = schema.LATEST + 1
    admin_execute(
        database_url,
        [
            "INSERT INTO schema_migrations (version, description, applied_at) "
            f"VALUES ({future}, 'from the future', 'later')"
        ],
    )
    db = open_database(database_url)
    try:
        with pytest.raises(SchemaError) as caught:
            schema.migrate(db, EventStore(db).backend)
    finally:
        db.close_all()
    assert f"version {future}" in str(caught.value)

    done = subprocess.run(
        [sys.executable, "-m", "api", "serve", "--database", database_url, "--port", "0"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("orderlog: "), done.stderr
    assert "newer than this orderlog knows" in done.stderr
