"""Opening a peewee database from a URL, with the settings each backend needs.

SQLite runs in WAL mode with a busy timeout; PostgreSQL and MySQL/MariaDB use
pooled connections. A missing driver is reported with the extra that installs it.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import peewee
from playhouse.pool import (
    PooledMySQLDatabase,
    PooledPostgresqlDatabase,
    PooledSqliteDatabase,
)

from orderlog.errors import FieldError, MissingDriverError, StartupError, ValidationError

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

    def driver_params(self) -> dict[str, Any]:
        """Connection parameters for psycopg2 or pymysql (not the database name)."""
        params: dict[str, Any] = {
            "host": self.host,
            "port": self.port or _DEFAULT_PORTS.get(self.backend),
            "user": self.user,
        }
        if self.password is not None:
            params["password"] = self.password
        return {k: v for k, v in params.items() if v is not None}

    def with_database(self, name: str) -> str:
        """The same server and credentials, another database."""
        return urlparse(self.url)._replace(path="/" + name).geturl()

    def redacted(self) -> str:
        """The URL without its password, for logs and health answers."""
        parsed = urlparse(self.url)
        if parsed.password is None:
            return self.url
        netloc = parsed.netloc.replace(":" + parsed.password + "@", ":***@")
        return parsed._replace(netloc=netloc).geturl()


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
    if backend == "sqlite":
        path = unquote(parsed.path[1:]) if parsed.path else ""
        if not path or path == ":memory:":
            # Threads must share the log, and a memory database is private to a connection.
            raise ValidationError(
                [FieldError("database", "SQLite needs a file path, e.g. sqlite:///orderlog.db")]
            )
        return DatabaseURL(url, backend, path)
    return DatabaseURL(
        url,
        backend,
        unquote(parsed.path.lstrip("/")),
        parsed.hostname,
        parsed.port,
        unquote(parsed.username) if parsed.username else None,
        unquote(parsed.password) if parsed.password is not None else None,
    )


def redact(url: str) -> str:
    """The URL without its password, for logs and health answers."""
    try:
        return parse_url(url).redacted()
    except ValidationError:
        return url


def open_database(
    url: str, *, synchronous: str = "FULL", max_connections: int = 64, must_exist: bool = False
) -> peewee.Database:
    """The pooled database for ``url`` (nothing connects yet).

    A SQLite file may be created, but never its directory: a mistyped path is an
    error, not a new empty log somewhere. With ``must_exist`` the file must be there.
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
            raise StartupError(f"no SQLite database at {path}", "check the path in --database")
        if not path.parent.is_dir():
            raise StartupError(
                f"the directory of the SQLite database {path} does not exist",
                "create it, or fix the path in --database",
            )
        return PooledSqliteDatabase(
            target.database,
            max_connections=max_connections,
            timeout=30,
            check_same_thread=False,
            pragmas={
                "journal_mode": "wal",
                "synchronous": synchronous.upper(),
                "busy_timeout": 30000,
                "cache_size": -32000,
                "temp_store": "memory",
            },
        )
    pool = {"max_connections": max_connections, "timeout": 30, "stale_timeout": 300}
    if target.backend == "postgres":
        return PooledPostgresqlDatabase(target.database, **pool, **target.driver_params())
    return PooledMySQLDatabase(
        target.database,
        **pool,
        charset="utf8mb4",
        # Events and projection states may outgrow MySQL's 64 KiB TEXT.
        field_types={"TEXT": "LONGTEXT"},
        **target.driver_params(),
    )


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
                "point --database at an orderlog database, or at a new file",
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
            "check the user and password in --database",
        )
    if "connect" in lowered or "connection refused" in lowered or "could not translate" in lowered:
        return StartupError(
            f"cannot reach {name} at {server}", "is the server running? check --database"
        )
    return StartupError(f"cannot use {name} database {target.database!r} on {server}", text)
