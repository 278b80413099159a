"""Opening a peewee database from a URL, with the settings each backend needs.

SQLite runs in WAL mode with a busy timeout; PostgreSQL and MySQL/MariaDB use
pooled connections. A missing driver is reported with the extra that installs it.

Every database call of a server is bounded by ``timeout`` on the client's side:
a stalled network path or a frozen host still ACKs at the TCP level, so no timeout
on the server's side ever fires, and only the client can give up. psycopg2 waits
through a wait callback with a deadline (connects included); PyMySQL through its
socket timeouts; SQLite through its busy timeout. The servers are told the same
bound for what only they can see: a lock waited for, and a transaction left idle
by a client that stopped (a paused process holding the append lock would
otherwise stall every node). ``unbounded`` lifts the client's deadline for one
thread's long operations (schema migrations).

``explain_failure`` says in one line why a database cannot be used at start, and
what to do: what went wrong is read from the driver's code, never from its message.
It imports peewee, playhouse's pools, psycopg2 (lazily, for its wait callback and to
ask a refusing server why), the settings' names, the domain's errors, and the URLs
and driver codes beside it.
"""

from __future__ import annotations

import contextlib
import getpass
import importlib.util
import math
import os
import select
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import peewee
from playhouse.pool import (
    PooledMySQLDatabase,
    PooledPostgresqlDatabase,
    PooledSqliteDatabase,
)

from orderlog.config import both_names
from orderlog.domain.errors import MissingDriverError, StartupError
from orderlog.storage.database_url import DEFAULT_PORTS, DatabaseURL, parse_url

# Re-exported: projections.rebuild imports it from here.
from orderlog.storage.database_url import redact as redact
from orderlog.storage.driver_error import Cause, driver_error, startup_cause

DRIVERS = {
    "postgres": ("psycopg2", "postgres"),
    "mysql": ("pymysql", "mysql"),
}


def open_database(
    url: str,
    *,
    synchronous: str = "FULL",
    max_connections: int = 64,
    must_exist: bool = False,
    timeout: float | None = None,
) -> peewee.Database:
    """The pooled database for ``url`` (nothing connects yet).

    A SQLite file may be created, but never its directory: a mistyped path is an
    error, not a new empty log somewhere. With ``must_exist`` the file must be there.
    ``timeout`` bounds every call (see the module docstring); None leaves calls
    unbounded, for an operator's command that may run long and can be interrupted.
    """
    target = parse_url(url)
    if target.backend in DRIVERS:
        module, extra = DRIVERS[target.backend]
        if importlib.util.find_spec(module) is None:
            raise MissingDriverError(
                f"{target.backend} needs the {module} driver: pip install 'orderlog[{extra}]'"
            )
    if target.backend == "sqlite":
        return _open_sqlite(target.database, synchronous, max_connections, must_exist, timeout)
    # A pool exhausted for longer than the bound is the database being unavailable too.
    pool = {"max_connections": max_connections, "timeout": timeout or 30, "stale_timeout": 300}
    if target.backend == "postgres":
        return PooledPostgresqlDatabase(
            target.database, **pool, **_postgres_bounds(timeout), **target.driver_params()
        )
    return PooledMySQLDatabase(
        target.database,
        **pool,
        charset="utf8mb4",
        # Events and projection states may outgrow MySQL's 64 KiB TEXT.
        field_types={"TEXT": "LONGTEXT"},
        **_mysql_bounds(timeout),
        **target.driver_params(),
    )


def _open_sqlite(
    database: str, synchronous: str, max_connections: int, must_exist: bool, timeout: float | None
) -> peewee.Database:
    path = Path(database)
    if must_exist and not path.is_file():
        raise StartupError(
            f"no SQLite database at {path}", f"check the path in {both_names('database_url')}"
        )
    if not path.parent.is_dir():
        raise StartupError(
            f"the directory of the SQLite database {path} does not exist",
            f"create it, or fix the path in {both_names('database_url')}",
        )
    wait = 30.0 if timeout is None else timeout
    return _PooledSqlite(
        database,
        max_connections=max_connections,
        timeout=wait,
        check_same_thread=False,
        pragmas={
            "journal_mode": "wal",
            "synchronous": synchronous.upper(),
            "busy_timeout": int(wait * 1000),
            "cache_size": -32000,
            "temp_store": "memory",
        },
    )


class _PooledSqlite(PooledSqliteDatabase):
    """SQLite whose connections, as they open, wait for their pragmas within the bound.

    Switching a new file to WAL needs it to itself: processes opening a new database at
    the same moment (several processes of one node starting) may be refused at once,
    "database is locked", without SQLite's busy handler ever waiting. The pragmas are
    set again until they take, for as long as a busy wait may last.
    """

    def _set_pragmas(self, conn: sqlite3.Connection) -> None:
        busy_ms = dict(self._pragmas).get("busy_timeout", _DEFAULT_BUSY_MS)
        deadline = time.monotonic() + int(busy_ms) / 1000
        while True:
            try:
                super()._set_pragmas(conn)
                return
            except sqlite3.OperationalError as exc:
                busy = getattr(exc, "sqlite_errorcode", 0) & 0xFF == _SQLITE_BUSY
                if not busy or time.monotonic() >= deadline:
                    raise
            time.sleep(_PRAGMA_RETRY)  # the busy handler's own way: sleep, try again


_SQLITE_BUSY = 5
_DEFAULT_BUSY_MS = 5000  # the sqlite3 module's own, for a database opened without the pragma
_PRAGMA_RETRY = 0.01  # seconds between tries, as SQLite's busy handler's first steps


def idle_transaction_limit(timeout: float) -> float:
    """How long a transaction left idle by its client may live on the server: a stopped
    node's open transaction (holding the append lock) ends this soon. Ours are never
    idle for more than a moment, so half the call bound, at least one second."""
    return max(1.0, timeout / 2)


def _postgres_bounds(timeout: float | None) -> dict[str, Any]:
    if timeout is None:
        return {}
    lock_ms = int(timeout * 1000)
    idle_ms = int(idle_transaction_limit(timeout) * 1000)
    return {
        **postgres_wait_bound(timeout),
        "connect_timeout": max(2, math.ceil(timeout)),  # libpq's own, in whole seconds
        "options": f"-c lock_timeout={lock_ms} -c idle_in_transaction_session_timeout={idle_ms}",
    }


def postgres_wait_bound(timeout: float) -> dict[str, Any]:
    """psycopg2 parameters that bound every wait of a connection (its connect included)
    on the client's side: a stalled path never holds a caller past ``timeout``."""
    _install_wait_callback()
    return {"connection_factory": _bounded_connection_class(timeout)}


def _mysql_bounds(timeout: float | None) -> dict[str, Any]:
    if timeout is None:
        return {}
    idle = math.ceil(idle_transaction_limit(timeout))
    return {
        "connect_timeout": timeout,
        "read_timeout": timeout,
        "write_timeout": timeout,
        # InnoDB's lock wait is in whole seconds; idle_transaction_timeout (MariaDB 10.3+)
        # ends a stopped client's transaction, and with it the locks it holds.
        "init_command": (
            f"SET SESSION innodb_lock_wait_timeout = {max(1, math.ceil(timeout))}, "
            f"SESSION idle_transaction_timeout = {idle}"
        ),
    }


# -- psycopg2: a deadline on every wait -------------------------------------------------------

_unbounded = threading.local()
_callback_lock = threading.Lock()
_bounded_classes: dict[float, type] = {}


def _bounded_connection_class(timeout: float) -> type:
    """A psycopg2 connection class carrying its bound, for the wait callback to read."""
    with _callback_lock:
        cls = _bounded_classes.get(timeout)
        if cls is None:
            import psycopg2.extensions

            cls = type(
                "BoundedConnection",
                (psycopg2.extensions.connection,),
                {"orderlog_timeout": timeout},
            )
            _bounded_classes[timeout] = cls
        return cls


def _install_wait_callback() -> None:
    """psycopg2's wait callback is one per process; connections without a bound (other
    code's, a test's) wait as they always did."""
    import psycopg2.extensions

    with _callback_lock:
        if psycopg2.extensions.get_wait_callback() is not _wait:
            psycopg2.extensions.set_wait_callback(_wait)


def _wait(conn: Any) -> None:
    import psycopg2
    import psycopg2.extensions as ext

    bound = getattr(conn, "orderlog_timeout", None)
    if getattr(_unbounded, "depth", 0):
        bound = None
    deadline = None if bound is None else time.monotonic() + bound
    while True:
        state = conn.poll()
        if state == ext.POLL_OK:
            return
        fd = conn.fileno()
        readers, writers = ([fd], []) if state == ext.POLL_READ else ([], [fd])
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            _abandon(fd)
            error = psycopg2.OperationalError(
                f"the database did not answer within {bound:g} s (--db-timeout)"
            )
            error.orderlog_unanswered = True  # for explain_failure, which reads no message
            raise error
        with contextlib.suppress(InterruptedError):
            select.select(readers, writers, [], left)


def _abandon(fd: int) -> None:
    """Shut the connection's socket down, so the driver never waits on it again and the
    pool discards it; the server sees the end of the stream and rolls back."""
    with contextlib.suppress(OSError):
        sock = socket.socket(fileno=os.dup(fd))
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.close()


@contextlib.contextmanager
def unbounded(db: peewee.Database) -> Iterator[None]:
    """Lift the client's deadline for this thread's calls: for a schema migration,
    which may rewrite a large table once, where one statement may take minutes."""
    _unbounded.depth = getattr(_unbounded, "depth", 0) + 1
    conn = None if db.is_closed() else db.connection()
    saved = getattr(conn, "_read_timeout", None)
    if conn is not None and isinstance(db, peewee.MySQLDatabase):
        conn._read_timeout = None  # PyMySQL sets it on its socket before every read
    try:
        yield
    finally:
        _unbounded.depth -= 1
        if conn is not None and isinstance(db, peewee.MySQLDatabase):
            conn._read_timeout = saved


# -- explaining a database that cannot be used -----------------------------------------------


def explain_failure(exc: BaseException, url: str) -> StartupError:
    """A database error met while starting, as one line with a hint (never a traceback).

    What went wrong is read from the driver's code (``driver_error.startup_cause``),
    never from its message. A failed PostgreSQL connect carries no code, so the server
    is asked (``_ask_postgres``).
    """
    target = parse_url(url)
    text = " ".join(str(exc).split())  # drivers' messages may span lines
    driver = driver_error(exc)
    cause = startup_cause(driver)
    if cause is None and target.backend == "postgres" and _postgres_without_code(driver):
        cause = _ask_postgres(target)
    if target.backend == "sqlite":
        return _sqlite_failure(cause, target.database, text)
    return _server_failure(cause, target, text)


def _sqlite_failure(cause: Cause | None, path: str, text: str) -> StartupError:
    where = f"the SQLite database {path}"
    if cause is Cause.READ_ONLY:
        return StartupError(
            f"{where} is read-only", "give orderlog write access to the file and its directory"
        )
    if cause is Cause.NOT_A_DATABASE:
        return StartupError(
            f"{path} is not a SQLite database",
            f"point {both_names('database_url')} at an orderlog database, or at a new file",
        )
    if cause is Cause.CANNOT_OPEN:
        return StartupError(
            f"cannot open {where}", "check the path and that its directory is writable"
        )
    return StartupError(f"cannot use {where}", text)


def _server_failure(cause: Cause | None, target: DatabaseURL, text: str) -> StartupError:
    host, database = target.host or "localhost", target.database
    server = f"{host}:{target.port or DEFAULT_PORTS[target.backend]}"
    postgres = target.backend == "postgres"
    name = "PostgreSQL" if postgres else "MySQL/MariaDB"
    # The drivers' own default when the URL names no user.
    user = target.user or (postgres and os.environ.get("PGUSER")) or getpass.getuser()
    if cause is Cause.MISSING_DATABASE:
        create = (
            f"createdb -h {host} -U {target.user or 'postgres'} {database}"
            if postgres
            else f"mariadb -h {host} -e 'CREATE DATABASE {database}'"
        )
        return StartupError(
            f"{name} database {database!r} does not exist on {server}", f"create it: {create}"
        )
    if cause is Cause.REFUSED_USER:
        create = (
            f"createuser -h {host} -U postgres {user}"
            if postgres
            else f"mariadb -h {host} -e \"CREATE USER '{user}'@'%' IDENTIFIED BY '...'; "
            f"GRANT ALL ON {database}.* TO '{user}'@'%'\""
        )
        return StartupError(
            f"{name} at {server} refused the user {user!r}",
            f"create it: {create}; or name an existing user, with its password, in "
            f"{both_names('database_url')}",
        )
    if cause is Cause.NO_ACCESS:
        return StartupError(
            f"{name} at {server} gives the user {user!r} no access to the database {database!r}",
            f"grant it: mariadb -h {host} -e \"GRANT ALL ON {database}.* TO '{user}'@'%'\" "
            "(the same is said of a database that does not exist: create it first)",
        )
    if cause is Cause.UNREACHABLE:
        return StartupError(
            f"cannot reach {name} at {server}",
            f"is the server running? check {both_names('database_url')}",
        )
    return StartupError(f"cannot use {name} database {database!r} on {server}", text)


def _postgres_without_code(driver: BaseException | None) -> bool:
    """A psycopg2 error that carries no SQLSTATE (a failed connect, a dropped connection),
    other than this module's own deadline, which needs no asking."""
    return (
        type(driver).__module__.partition(".")[0] == "psycopg2"
        and getattr(driver, "pgcode", None) is None
        and not getattr(driver, "orderlog_unanswered", False)
    )


# How long asking PostgreSQL why it refused a connection may take, connect included.
_ASK_TIMEOUT = 5.0
# libpq's ConnStatusType while connecting: past CONNECTION_STARTED (2) the socket is
# connected, and a failure that follows is the server's refusal.
_LIBPQ_STARTED = 2


def _ask_postgres(target: DatabaseURL) -> Cause | None:
    """Why PostgreSQL refused ``target``, asked of the server itself.

    psycopg2 gives a failed connect no SQLSTATE (2.9.13 with libpq 17: ``pgcode`` None,
    ``diag`` empty), only the server's message, which is never read here: the server
    words it in its own language, and "does not exist" once took a missing role for a
    missing database. The server checks the role before the database, so the same user
    and password connect to a maintenance database: accepted, the database is looked
    up in ``pg_database``; refused once the socket connected, the user is refused (no
    such role, a wrong password, pg_hba.conf; a server starting up or out of slots
    looks the same from here); no socket connected, the server is unreachable.
    """
    import psycopg2
    import psycopg2.extensions as ext

    maintenance = "template1" if target.database == "postgres" else "postgres"
    deadline = time.monotonic() + _ASK_TIMEOUT
    try:
        conn = psycopg2.connect(dbname=maintenance, async_=True, **target.driver_params())
    except psycopg2.Error:
        return Cause.UNREACHABLE  # its host name did not resolve
    reached = connected = False
    try:
        while (state := conn.poll()) != ext.POLL_OK:
            reached = reached or conn.info.status > _LIBPQ_STARTED
            if not _wait_socket(conn, state, deadline):
                return None
        connected = True
        cursor = conn.cursor()
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (target.database,))
        while (state := conn.poll()) != ext.POLL_OK:
            if not _wait_socket(conn, state, deadline):
                return None
        return None if cursor.fetchone() else Cause.MISSING_DATABASE
    except psycopg2.Error:
        if connected:
            return None
        return Cause.REFUSED_USER if reached else Cause.UNREACHABLE
    finally:
        conn.close()


def _wait_socket(conn: Any, state: int, deadline: float) -> bool:
    """Wait until an asynchronous connection's socket is ready for what ``poll`` asked
    (reading or writing); False once the deadline has passed."""
    import psycopg2.extensions as ext

    left = deadline - time.monotonic()
    if left <= 0:
        return False
    fd = conn.fileno()
    readers, writers = ([fd], []) if state == ext.POLL_READ else ([], [fd])
    with contextlib.suppress(InterruptedError):
        select.select(readers, writers, [], left)
    return True
