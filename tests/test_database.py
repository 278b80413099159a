"""Opening databases by URL, and the schema's guarantees on every backend.

The append-only triggers are checked through a raw driver connection, not the
store, so it is the database itself that refuses the change. Schema creation is
raced from threads (separate database objects) and from separate processes, the
way several nodes starting at once would race it.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import subprocess
import sys
from typing import Any
from urllib.parse import urlparse

import peewee
import pytest
from playhouse.pool import PooledMySQLDatabase, PooledPostgresqlDatabase, PooledSqliteDatabase

from orderlog.domain.errors import MissingDriverError, StartupError, ValidationError
from orderlog.domain.events import OrderPlaced
from orderlog.storage.database import open_database
from orderlog.storage.database_url import backend_of, parse_url, redact
from orderlog.storage.store import EventStore
from tests.support import ROOT, make_store, raw_connection, raw_fetch, run_threads


def placed(order_id: str) -> OrderPlaced:
    return OrderPlaced(order_id, "u1", ("a",), "1.00")


# -- URLs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///orderlog.db", "sqlite"),
        ("sqlite:////var/lib/orderlog/log.db", "sqlite"),
        ("postgres://u@h/db", "postgres"),
        ("postgresql://u:p@h:5432/db", "postgres"),
        ("postgresql+psycopg2://u@h/db", "postgres"),
        ("mysql://root@h/db", "mysql"),
        ("mysql+pymysql://root@h:3306/db", "mysql"),
        ("mariadb://root@h/db", "mysql"),
    ],
)
def test_backend_of_names_the_backend_of_each_url_scheme(url: str, expected: str) -> None:
    assert backend_of(url) == expected


@pytest.mark.parametrize("url", ["oracle://u@h/db", "orderlog.db", "http://h/db"])
def test_an_unsupported_url_scheme_is_refused_with_the_supported_ones(url: str) -> None:
    with pytest.raises(ValidationError) as caught:
        backend_of(url)
    assert caught.value.errors[0].field == "database"
    assert "sqlite, postgresql or mysql" in caught.value.errors[0].message


def test_open_database_gives_a_pooled_database_of_the_right_kind_that_connects(
    database_url: str,
) -> None:
    kinds = {
        "sqlite": PooledSqliteDatabase,
        "postgres": PooledPostgresqlDatabase,
        "mysql": PooledMySQLDatabase,
    }
    db = open_database(database_url)
    try:
        assert isinstance(db, kinds[backend_of(database_url)])
        with db.connection_context():
            assert db.execute_sql("SELECT 1").fetchone()[0] == 1
    finally:
        db.close_all()


def test_open_database_runs_sqlite_in_wal_mode_with_a_busy_timeout(sqlite_url: str) -> None:
    db = open_database(sqlite_url, synchronous="full")
    try:
        with db.connection_context():
            assert db.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert db.execute_sql("PRAGMA busy_timeout").fetchone()[0] == 30000
            assert db.execute_sql("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    finally:
        db.close_all()


def test_open_database_never_creates_the_sqlite_file_s_directory(tmp_path: Any) -> None:
    path = tmp_path / "nested" / "deeper" / "log.db"
    with pytest.raises(StartupError) as caught:
        open_database(f"sqlite:///{path}")
    assert "does not exist" in str(caught.value)
    assert not (tmp_path / "nested").exists()


def test_open_database_creates_the_file_in_a_directory_that_exists(tmp_path: Any) -> None:
    path = tmp_path / "log.db"
    db = open_database(f"sqlite:///{path}")
    try:
        with db.connection_context():
            db.execute_sql("CREATE TABLE t (x INTEGER)")
        assert path.exists()
    finally:
        db.close_all()


@pytest.mark.parametrize("url", ["sqlite:///:memory:", "sqlite://", "sqlite:///"])
def test_an_sqlite_memory_database_is_refused(url: str) -> None:
    with pytest.raises(ValidationError) as caught:
        open_database(url)
    assert "file path" in caught.value.errors[0].message


@pytest.mark.parametrize(
    ("url", "module", "extra"),
    [
        ("postgresql://u@h/db", "psycopg2", "postgres"),
        ("mysql://root@h/db", "pymysql", "mysql"),
    ],
)
def test_a_missing_driver_is_reported_with_the_extra_that_installs_it(
    monkeypatch: pytest.MonkeyPatch, url: str, module: str, extra: str
) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args: Any, **kwargs: Any) -> Any:
        return None if name == module else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(MissingDriverError) as caught:
        open_database(url)
    assert module in str(caught.value)
    assert f"pip install 'orderlog[{extra}]'" in str(caught.value)


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        ("postgresql://orderlog:s3cret@db:5432/orders", "s3cret"),
        ("mysql://root:pa%40ss@127.0.0.1/test", "pa%40ss"),
        ("postgresql://admin:admin@db/orders", "admin:admin"),
    ],
)
def test_redact_hides_the_password_and_keeps_the_rest(url: str, secret: str) -> None:
    redacted = redact(url)
    assert secret not in redacted
    assert ":***@" in redacted
    parsed, original = urlparse(redacted), urlparse(url)
    assert (parsed.scheme, parsed.hostname, parsed.port, parsed.path, parsed.username) == (
        original.scheme,
        original.hostname,
        original.port,
        original.path,
        original.username,
    )


@pytest.mark.parametrize(
    "url", ["sqlite:///orderlog.db", "postgresql://postgres@127.0.0.1/test", "mysql://root@h/db"]
)
def test_redact_leaves_a_url_without_password_unchanged(url: str) -> None:
    assert redact(url) == url


# -- several hosts and libpq parameters ---------------------------------------------


def test_a_url_with_several_hosts_names_each_host_and_port_for_libpq() -> None:
    url = "postgresql://u:pw@db-a:5433,db-b:5434,db-c/orders?target_session_attrs=read-write"
    target = parse_url(url)
    assert target.hosts == (("db-a", 5433), ("db-b", 5434), ("db-c", None))
    assert (target.host, target.port, target.database) == ("db-a", 5433, "orders")
    assert target.driver_params() == {
        "host": "db-a,db-b,db-c",
        "port": "5433,5434,5432",  # one port per host: a host without one gets the default
        "user": "u",
        "password": "pw",
        "target_session_attrs": "read-write",
    }


def test_ipv6_hosts_in_brackets_are_taken_apart_with_their_ports() -> None:
    target = parse_url("postgresql://u@[::1]:5433,[FE80::2],127.0.0.1:5435/db")
    # Hosts are passed on as written: a Unix socket directory may have capitals.
    assert target.hosts == (("::1", 5433), ("FE80::2", None), ("127.0.0.1", 5435))
    assert target.driver_params()["host"] == "::1,FE80::2,127.0.0.1"
    assert target.driver_params()["port"] == "5433,5432,5435"


def test_query_parameters_reach_the_driver_unquoted() -> None:
    url = (
        "postgresql://u@h/db?sslmode=disable&application_name=orderlog%20a"
        "&options=-c%20statement_timeout%3D100"
    )
    params = parse_url(url).driver_params()
    assert params["sslmode"] == "disable"
    assert params["application_name"] == "orderlog a"
    assert params["options"] == "-c statement_timeout=100"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://u@h:5432,h:notaport/db", "port 'notaport' of 'h' is not a number"),
        ("postgresql://u@h:0/db", "port 0 is out of range"),
        ("postgresql://u@h:5432,h:70000/db", "port 70000 is out of range"),
        ("postgresql://u@[::1]:x1/db", "port 'x1' of '::1' is not a number"),
        ("mysql://root@h1:3306,h2:3306/db", "only PostgreSQL URLs may name several hosts"),
        ("mysql://root@h/db?ssl=1", "mysql URLs take no query parameters (got 'ssl')"),
    ],
)
def test_a_bad_port_or_host_list_is_refused_naming_it(url: str, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_url(url)
    assert [(e.field, e.message) for e in caught.value.errors] == [("database", message)]


def test_another_database_on_several_hosts_keeps_the_hosts_and_parameters() -> None:
    url = "postgresql://u:pw@[::1]:5433,h:5434/orders?target_session_attrs=read-write"
    other = parse_url(parse_url(url).with_database("test_1"))
    assert other.database == "test_1"
    assert other.hosts == (("::1", 5433), ("h", 5434))
    assert other.options == {"target_session_attrs": "read-write"}
    assert other.password == "pw"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "postgresql://u:s3cret@h:5433,[::1]:5434/db?target_session_attrs=read-write",
            "postgresql://u:***@h:5433,[::1]:5434/db?target_session_attrs=read-write",
        ),
        (
            "postgresql://u@h1,h2/db?password=s3cret&sslmode=disable",
            "postgresql://u@h1,h2/db?password=***&sslmode=disable",
        ),
        # Not usable (a bad port), and still no password in what is shown.
        ("postgresql://u:s3cret@h:5432,h:port/db", "postgresql://u:***@h:5432,h:port/db"),
    ],
)
def test_redact_hides_the_password_of_a_url_with_several_hosts(url: str, expected: str) -> None:
    assert redact(url) == expected


# -- append-only -------------------------------------------------------------------


def _refused(url: str, sql: str) -> Exception | None:
    """Run ``sql`` on a raw connection; the error the database raised, or None."""
    try:
        raw_fetch(url, sql) if sql.lstrip().upper().startswith("SELECT") else _raw_execute(url, sql)
    except Exception as exc:  # whichever driver's error: we assert on its message
        return exc
    return None


def _raw_execute(url: str, sql: str) -> None:
    with raw_connection(url) as conn:
        cursor = conn.cursor()
        cursor.execute(sql)
        cursor.close()


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE events SET type = 'Tampered'",
        "UPDATE events SET data = '{}' WHERE position = {first}",
        "DELETE FROM events",
        "DELETE FROM events WHERE position = {first}",
    ],
)
def test_raw_updates_and_deletes_are_refused_by_the_database(database_url: str, sql: str) -> None:
    store = make_store(database_url)
    try:
        (first,) = store.append("o1", [placed("o1")], 0)
        (second,) = store.append("o2", [placed("o2")], 0)
    finally:
        store.close()
    error = _refused(database_url, sql.replace("{first}", str(first.position)))
    assert error is not None, f"{sql!r} was allowed"
    assert "append-only" in str(error)
    rows = raw_fetch(database_url, "SELECT position, stream_id, type FROM events ORDER BY position")
    assert rows == [(first.position, "o1", "OrderPlaced"), (second.position, "o2", "OrderPlaced")]


# Only PostgreSQL fires triggers on TRUNCATE: MySQL/MariaDB skip them (withholding the
# DROP privilege is the guard there) and SQLite has no TRUNCATE.
@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_truncate_is_refused_on_postgres(database_url: str) -> None:
    store = make_store(database_url)
    try:
        store.append("o1", [placed("o1")], 0)
    finally:
        store.close()
    error = _refused(database_url, "TRUNCATE events")
    assert error is not None and "append-only" in str(error)
    assert raw_fetch(database_url, "SELECT COUNT(*) FROM events") == [(1,)]


# -- schema creation races -----------------------------------------------------------


def _assert_schema_works(url: str) -> None:
    lock = "feed_origin" if parse_url(url).backend == "postgres" else "append_lock"
    assert raw_fetch(url, f"SELECT id FROM {lock}") == [(1,)]
    store = make_store(url)
    try:
        (event,) = store.append("o1", [placed("o1")], 0)
    finally:
        store.close()
    assert raw_fetch(url, "SELECT position FROM events") == [(event.position,)]
    error = _refused(url, "DELETE FROM events")
    assert error is not None and "append-only" in str(error)


def test_schema_creation_from_many_threads_at_once_is_safe(database_url: str) -> None:
    stores = [EventStore(open_database(database_url)) for _ in range(8)]
    errors = run_threads(len(stores), lambda n: stores[n].create_schema())
    for store in stores:
        store.close()
    assert errors == []
    _assert_schema_works(database_url)


_CREATE_SCHEMA = """
import sys
from orderlog.storage.database import open_database
from orderlog.storage.store import EventStore

store = EventStore(open_database(sys.argv[1]), group_commit=False)
with store.db.connection_context():  # connect before the signal, so all start together
    sys.stdout.write("ready\\n")
    sys.stdout.flush()
    sys.stdin.readline()
    store.create_schema()
store.close()
sys.stdout.write("created\\n")
"""


def test_schema_creation_from_many_processes_at_once_is_safe(database_url: str) -> None:
    """Several nodes starting together on an empty database all come up."""
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _CREATE_SCHEMA, database_url],
            cwd=str(ROOT),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    try:
        for process in processes:
            assert process.stdout is not None
            assert process.stdout.readline() == "ready\n"
        for process in processes:  # the signal to go, as close together as we can
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        outcomes = [process.communicate(timeout=60) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    for process, (out, err) in zip(processes, outcomes, strict=True):
        assert process.returncode == 0, err
        assert out == "created\n"
    _assert_schema_works(database_url)


def test_a_second_event_at_the_same_stream_version_is_refused_by_the_database(
    database_url: str,
) -> None:
    store = make_store(database_url)
    try:
        (event,) = store.append("o1", [placed("o1")], 0)
        with store.db.connection_context(), pytest.raises(peewee.IntegrityError):
            store.db.execute_sql(
                "INSERT INTO events (position, stream_id, version, type, data, metadata, "
                f"recorded_at) VALUES ({event.position + 1}, 'o1', 1, 'X', '{{}}', '{{}}', 'now')"
            )
    finally:
        store.close()
    assert raw_fetch(database_url, "SELECT position, version FROM events") == [(event.position, 1)]


def _open_new_databases(paths: list[str], barrier: Any, failures: Any) -> None:
    """In a process of its own: open each new SQLite file as the others do, at once."""
    for path in paths:
        barrier.wait(timeout=60)
        try:
            db = open_database(f"sqlite:///{path}", timeout=5.0)
            EventStore(db, group_commit=False, timeout=5.0).open().close()
        except Exception as exc:  # handed back to the test
            failures.put(f"{path}: {exc}")


def test_processes_opening_a_new_sqlite_file_at_once_all_open_it(tmp_path: Any) -> None:
    """Switching a new file to WAL needs it to itself, and SQLite may refuse the others
    at once ("database is locked") instead of letting them wait: each waits within its
    bound (as a node's several processes do, starting together on a new file)."""
    context = multiprocessing.get_context("spawn")  # nothing of this test's threads
    paths = [str(tmp_path / f"new-{n}.db") for n in range(30)]
    barrier = context.Barrier(3)
    failures = context.Queue()
    openers = [
        context.Process(target=_open_new_databases, args=(paths, barrier, failures))
        for _ in range(3)
    ]
    for opener in openers:
        opener.start()
    for opener in openers:
        opener.join(timeout=120)
    assert [opener.exitcode for opener in openers] == [0, 0, 0]
    found = []
    while not failures.empty():
        found.append(failures.get())
    assert found == []
