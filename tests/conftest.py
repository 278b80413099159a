"""Shared fixtures: a real database per backend, the store and node on top of it, and
the node's app with a test client (a settled log, an unreachable database).

SQLite is a file in tmp_path. PostgreSQL and MariaDB are used when
ORDERLOG_TEST_POSTGRES_URL / ORDERLOG_TEST_MYSQL_URL are set: each test session
creates its own database on the server (so parallel runs never meet) and each
test starts from empty tables. Without the URLs those tests are skipped with the
reason; with ORDERLOG_TEST_REQUIRE_SERVERS=1 (CI) an unreachable server fails.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator

import falcon.testing
import pytest

from api.node import Node
from orderlog.storage.database_url import parse_url
from orderlog.storage.store import EventStore
from tests.support import (
    IDLE,
    admin_execute,
    logged_positions,
    make_store,
    place_and_finish,
    settings_for,
)

SERVER_BACKENDS = {
    "postgres": "ORDERLOG_TEST_POSTGRES_URL",
    "mysql": "ORDERLOG_TEST_MYSQL_URL",
}
BACKENDS = ["sqlite", *SERVER_BACKENDS]
_TABLES = (
    "events",
    "append_lock",
    "feed_origin",
    "projections",
    "tokens",
    "order_status",
    "order_status_b",
    "event_versions",
    "schema_migrations",
)


@pytest.fixture(scope="session")
def server_databases() -> Iterator[dict[str, str | None]]:
    """One fresh database per server backend for this test session; None if unavailable."""
    name = f"orderlog_test_{uuid.uuid4().hex[:10]}"
    made: dict[str, str | None] = {}
    errors: dict[str, str] = {}
    for backend, variable in SERVER_BACKENDS.items():
        url = os.environ.get(variable)
        if not url:
            made[backend] = None
            errors[backend] = f"{variable} is not set"
            continue
        try:
            admin_execute(url, [f"CREATE DATABASE {name}"])
            made[backend] = parse_url(url).with_database(name)
        except Exception as exc:  # report why, below, per test
            made[backend] = None
            errors[backend] = f"cannot reach {backend} at {variable}: {exc}"
    made["_errors"] = errors  # type: ignore[assignment]
    yield made
    for backend, variable in SERVER_BACKENDS.items():
        if made.get(backend):
            with contextlib.suppress(Exception):
                admin_execute(os.environ[variable], [f"DROP DATABASE IF EXISTS {name}"])


def _reset(backend: str, url: str) -> None:
    drops = [f"DROP TABLE IF EXISTS {table}" for table in _TABLES]
    if backend == "postgres":
        drops.append("DROP FUNCTION IF EXISTS events_append_only() CASCADE")
    admin_execute(url, drops)


def backend_url(backend: str, server_databases: dict, tmp_path) -> str:  # type: ignore[type-arg]
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'orderlog.db'}"
    url = server_url(backend, server_databases)
    _reset(backend, url)
    return url


def server_url(backend: str, server_databases: dict) -> str:  # type: ignore[type-arg]
    """The session's database on a server backend; the test is skipped, saying which
    variable is missing or why the server cannot be reached, or fails where
    ORDERLOG_TEST_REQUIRE_SERVERS=1 (CI)."""
    url = server_databases.get(backend)
    if url is None:
        reason = server_databases["_errors"][backend]
        if os.environ.get("ORDERLOG_TEST_REQUIRE_SERVERS") == "1":
            pytest.fail(f"{backend} is required here but unavailable: {reason}")
        pytest.skip(f"{backend} tests skipped: {reason}")
    return str(url)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def database_url(backend: str, server_databases: dict, tmp_path) -> str:  # type: ignore[type-arg]
    """A URL to an empty database of each backend in turn."""
    return backend_url(backend, server_databases, tmp_path)


@pytest.fixture
def empty_database(
    backend: str,
    server_databases: dict,  # type: ignore[type-arg]
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[[], str]:
    """Of each backend in turn, a URL to an empty database at every call: for hypothesis,
    whose examples all run inside one test and its fixtures."""

    def empty() -> str:
        return backend_url(backend, server_databases, tmp_path_factory.mktemp("example"))

    return empty


@pytest.fixture
def sqlite_url(tmp_path) -> str:  # type: ignore[no-untyped-def]
    return f"sqlite:///{tmp_path / 'orderlog.db'}"


@pytest.fixture(params=[True, False], ids=["group-commit", "direct"])
def store(request: pytest.FixtureRequest, database_url: str) -> Iterator[EventStore]:
    """An open event store on each backend, with and without group commit."""
    store = make_store(database_url, group_commit=request.param)
    yield store
    store.close()


@pytest.fixture
def node(database_url: str) -> Iterator[Node]:
    """The started core (store, service, worker) with no processing delay."""
    node = Node(settings_for(database_url)).start(bind=False)
    yield node
    node.stop()


@pytest.fixture
def client(node: Node) -> falcon.testing.TestClient:
    """The real app of the started node, called in process."""
    return falcon.testing.TestClient(node.app)


@pytest.fixture
def settled(client: falcon.testing.TestClient, node: Node) -> Iterator[int]:
    """A log with one finished order, so 'nothing written' is checked against a non-empty log."""
    place_and_finish(client, node, order_id="existing")
    head = node.store.last_position()
    assert len(logged_positions(node.settings.database_url)) == 3
    yield head
    assert node.worker.wait_idle(IDLE)
    assert node.store.last_position() == head, "a refused request wrote to the log"


@pytest.fixture
def unreachable_database(node: Node) -> Iterator[None]:
    """Point the real pool at a database that cannot be opened, as in an outage."""
    db = node.db
    original = db.database
    db.close_all()
    if node.store.backend == "sqlite":
        db.database = "/nonexistent-orderlog-dir/orderlog.db"
    else:
        db.database = "orderlog_no_such_database"
    yield
    db.database = original
