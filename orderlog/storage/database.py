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
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import re
import select
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlparse

import peewee
from playhouse.pool import (
    PooledMySQLDatabase,
    PooledPostgresqlDatabase,
    PooledSqliteDatabase,
)

from orderlog.config import both_names
from orderlog.domain.errors import FieldError, MissingDriverError, StartupError, ValidationError

DRIVERS = {
    "postgres": ("psycopg2", "postgres"),
    "mysql": ("pymysql", "mysql"),
}
_SCHEMES = {
    "sqlite": "sqlite",
    "postgres": "postgres",
    "postgresql": "postgres",
    "mysql": "mysql",
    "mariadb": "mysql",
}
_DEFAULT_PORTS = {"postgres": 5432, "mysql": 3306}


@dataclass(frozen=True)
class DatabaseURL:
    """A database URL taken apart once, with user and password unquoted."""

    url: str
    backend: str  # 'sqlite', 'postgres' or 'mysql'
    database: str  # the file path for SQLite, the database name otherwise
    host: str | None = None
    port: int | None = None
    user: str | None = None
    password: str | None = None
    # Every host and port named (PostgreSQL may name several: libpq tries them in turn,
    # as a client of a primary and its standbys does); host and port are the first.
    hosts: tuple[tuple[str, int | None], ...] = ()
    # PostgreSQL's libpq parameters given in the query (target_session_attrs, sslmode...).
    options: dict[str, str] = field(default_factory=dict)

    def driver_params(self) -> dict[str, Any]:
        """Connection parameters for psycopg2 or pymysql (not the database name)."""
        default = _DEFAULT_PORTS.get(self.backend)
        host: str | None = self.host
        port: int | str | None = self.port or default
        if len(self.hosts) > 1:
            host = ",".join(h for h, _ in self.hosts)
            port = ",".join(str(p or default) for _, p in self.hosts)
        params: dict[str, Any] = {"host": host, "port": port, "user": self.user}
        if self.password is not None:
            params["password"] = self.password
        params.update(self.options)
        return {k: v for k, v in params.items() if v is not None}

    def with_database(self, name: str) -> str:
        """The same server and credentials, another database."""
        return urlparse(self.url)._replace(path="/" + name).geturl()

    def redacted(self) -> str:
        """The URL without its password, for logs and health answers."""
        parsed = urlparse(self.url)
        netloc, query = parsed.netloc, parsed.query
        if parsed.password is not None:
            netloc = netloc.replace(":" + parsed.password + "@", ":***@")
        if "password" in self.options:  # libpq takes it in the query too
            pairs = parse_qsl(query, keep_blank_values=True)
            query = urlencode([(k, "***" if k == "password" else v) for k, v in pairs], safe="*")
        if (netloc, query) == (parsed.netloc, parsed.query):
            return self.url
        return parsed._replace(netloc=netloc, query=query).geturl()


def backend_of(url: str) -> str:
    """'sqlite', 'postgres' or 'mysql' for a database URL's scheme."""
    scheme = urlparse(url).scheme.split("+")[0]
    backend = _SCHEMES.get(scheme)
    if backend is None:
        raise ValidationError(
            [
                FieldError(
                    "database",
                    f"unsupported URL scheme {scheme!r}: use sqlite, postgresql or mysql",
                )
            ]
        )
    return backend


def parse_url(url: str) -> DatabaseURL:
    """Take a database URL apart; ValidationError names what is wrong with it."""
    backend = backend_of(url)
    parsed = urlparse(url)
    options = dict(parse_qsl(parsed.query, keep_blank_values=True))
    if options and backend != "postgres":
        name = next(iter(options))
        raise ValidationError(
            [FieldError("database", f"{backend} URLs take no query parameters (got {name!r})")]
        )
    if backend == "sqlite":
        path = unquote(parsed.path[1:]) if parsed.path else ""
        if not path or path == ":memory:":
            # Threads must share the log, and a memory database is private to a connection.
            raise ValidationError(
                [FieldError("database", "SQLite needs a file path, e.g. sqlite:///orderlog.db")]
            )
        return DatabaseURL(url, backend, path)
    hosts = _hosts(parsed.netloc.rpartition("@")[2])
    if len(hosts) > 1 and backend != "postgres":
        raise ValidationError(
            [FieldError("database", "only PostgreSQL URLs may name several hosts")]
        )
    host, port = hosts[0] if hosts else (None, None)
    return DatabaseURL(
        url,
        backend,
        unquote(parsed.path.lstrip("/")),
        host,
        port,
        unquote(parsed.username) if parsed.username else None,
        unquote(parsed.password) if parsed.password is not None else None,
        hosts,
        options,
    )


def _hosts(text: str) -> tuple[tuple[str, int | None], ...]:
    """``h1:p1,h2,[::1]:p3`` as ((h1, p1), (h2, None), (::1, p3))."""
    found: list[tuple[str, int | None]] = []
    for part in filter(None, text.split(",")):
        if part.startswith("["):
            host, _, rest = part[1:].partition("]")
            port_text = rest[1:] if rest.startswith(":") else ""
        else:
            host, _, port_text = part.partition(":")
        if port_text and not (port_text.isascii() and port_text.isdigit()):
            raise ValidationError(
                [FieldError("database", f"port {port_text!r} of {host!r} is not a number")]
            )
        port = int(port_text) if port_text else None
        if port is not None and not 0 < port <= 65535:
            raise ValidationError([FieldError("database", f"port {port} is out of range")])
        found.append((unquote(host), port))
    return tuple(found)


def redact(url: str) -> str:
    """The URL without its password, for logs and health answers (even a URL that
    cannot be used: its password is hidden all the same)."""
    try:
        return parse_url(url).redacted()
    except ValidationError:
        return _PASSWORD.sub(r"\1***@", url, count=1)


# The password in a URL's user information: after "scheme://user:" and up to the last "@".
_PASSWORD = re.compile(r"^([^:/?#]+://[^:/?#@]*:)[^/?#]*@")


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
        path = Path(target.database)
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
            target.database,
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
            raise psycopg2.OperationalError(
                f"the database did not answer within {bound:g} s (--db-timeout)"
            )
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


def explain_failure(exc: BaseException, url: str) -> StartupError:
    """A database error met while starting, as one line with a hint (never a traceback)."""
    target = parse_url(url)
    text = " ".join(str(exc).split())  # drivers' messages may span lines
    lowered = text.lower()
    if target.backend == "sqlite":
        where = f"the SQLite database {target.database}"
        if "readonly" in lowered or "read-only" in lowered:
            return StartupError(
                f"{where} is read-only", "give orderlog write access to the file and its directory"
            )
        if "not a database" in lowered:
            return StartupError(
                f"{target.database} is not a SQLite database",
                f"point {both_names('database_url')} at an orderlog database, or at a new file",
            )
        if "unable to open" in lowered:
            return StartupError(
                f"cannot open {where}", "check the path and that its directory is writable"
            )
        return StartupError(f"cannot use {where}", text)
    server = f"{target.host or 'localhost'}:{target.port or _DEFAULT_PORTS[target.backend]}"
    name = {"postgres": "PostgreSQL", "mysql": "MySQL/MariaDB"}[target.backend]
    if "does not exist" in lowered or "unknown database" in lowered:
        create = (
            f"createdb -h {target.host or 'localhost'} -U {target.user or 'postgres'} "
            f"{target.database}"
            if target.backend == "postgres"
            else f"mariadb -h {target.host or 'localhost'} -e 'CREATE DATABASE {target.database}'"
        )
        return StartupError(
            f"{name} database {target.database!r} does not exist on {server}",
            f"create it: {create}",
        )
    if "authentication" in lowered or "access denied" in lowered or "password" in lowered:
        return StartupError(
            f"{name} at {server} refused the user {target.user!r}",
            f"check the user and password in {both_names('database_url')}",
        )
    if "connect" in lowered or "connection refused" in lowered or "could not translate" in lowered:
        return StartupError(
            f"cannot reach {name} at {server}",
            f"is the server running? check {both_names('database_url')}",
        )
    return StartupError(f"cannot use {name} database {target.database!r} on {server}", text)
