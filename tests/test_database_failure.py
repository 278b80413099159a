"""A server that refuses a node at start is explained in one line, with a hint that works.

Against the real PostgreSQL and MariaDB (ORDERLOG_TEST_POSTGRES_URL /
ORDERLOG_TEST_MYSQL_URL): a user the server does not know and a database it does not
hold each get their own message and hint, on both ways a start meets the server first:
the node's lock connection (``orderlog serve``) and the store's pool (the commands).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from urllib.parse import urlparse

import pytest

from orderlog.domain.errors import StartupError, StoreUnavailableError
from orderlog.storage.database import explain_failure, open_database
from orderlog.storage.database_url import parse_url
from orderlog.storage.node_lock import NodeLock
from orderlog.storage.store import EventStore

SERVERS = {"postgres": "ORDERLOG_TEST_POSTGRES_URL", "mysql": "ORDERLOG_TEST_MYSQL_URL"}
MISSING_USER = "nouser"


def server_url(backend: str) -> str:
    variable = SERVERS[backend]
    url = os.environ.get(variable)
    if not url:
        reason = f"{variable} is not set: no {backend} server to refuse a connection"
        if os.environ.get("ORDERLOG_TEST_REQUIRE_SERVERS") == "1":
            pytest.fail(f"{backend} is required here but unavailable: {reason}")
        pytest.skip(reason)
    return url


def as_user(url: str, user: str) -> str:
    """The same server and database, as ``user`` without a password."""
    parsed = urlparse(url)
    return parsed._replace(netloc=f"{user}@{parsed.netloc.rpartition('@')[2]}").geturl()


def start_node_lock(url: str) -> StartupError:
    """What ``orderlog serve`` meets first: the node's lock, on its own connection."""
    lock = NodeLock(url, "refused-node")
    with pytest.raises(StartupError) as caught:
        lock.acquire()
    return caught.value


def start_store(url: str) -> StartupError:
    """What the commands meet first: the store's pool, explained as they explain it."""
    store = EventStore(open_database(url, timeout=5.0), group_commit=False)
    try:
        with pytest.raises(StoreUnavailableError) as caught:
            store.open()
    finally:
        store.close()
    return explain_failure(caught.value.__cause__ or caught.value, url)


STARTS: dict[str, Callable[[str], StartupError]] = {
    "node-lock": start_node_lock,
    "store": start_store,
}


@pytest.fixture(params=sorted(SERVERS))
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(params=sorted(STARTS))
def start(request: pytest.FixtureRequest) -> Callable[[str], StartupError]:
    return STARTS[request.param]


def test_a_user_the_server_does_not_know_is_named_with_a_way_to_create_it(
    backend: str, start: Callable[[str], StartupError]
) -> None:
    url = as_user(server_url(backend), MISSING_USER)
    error = start(url)
    host = parse_url(url).host or "localhost"
    assert f"refused the user {MISSING_USER!r}" in error.what
    assert "does not exist" not in error.what and "database" not in error.what.split()
    if backend == "postgres":
        assert f"createuser -h {host} -U postgres {MISSING_USER}" in error.hint
    else:
        assert f"CREATE USER '{MISSING_USER}'" in error.hint
    assert "name an existing user" in error.hint
    assert "createdb" not in error.hint and "CREATE DATABASE" not in error.hint


def test_a_database_the_server_does_not_hold_is_named_with_a_way_to_create_it(
    backend: str, start: Callable[[str], StartupError]
) -> None:
    name = f"orderlog_missing_{uuid.uuid4().hex[:8]}"
    url = parse_url(server_url(backend)).with_database(name)
    error = start(url)
    target = parse_url(url)
    host = target.host or "localhost"
    assert f"database {name!r} does not exist" in error.what
    assert "refused the user" not in error.what
    if backend == "postgres":
        assert error.hint == f"create it: createdb -h {host} -U {target.user} {name}"
    else:
        assert error.hint == f"create it: mariadb -h {host} -e 'CREATE DATABASE {name}'"
