"""Opening a peewee database from a URL, with the settings each backend needs.

SQLite runs in WAL mode with a busy timeout; PostgreSQL and MySQL/MariaDB use
pooled connections. A missing driver is reported with the extra that installs it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from urllib.parse import unquote, urlparse

import peewee
from playhouse.db_url import parseresult_to_dict
from playhouse.pool import (
    PooledMySQLDatabase,
    PooledPostgresqlDatabase,
    PooledSqliteDatabase,
)

from orderlog.errors import FieldError, MissingDriverError, ValidationError

DRIVERS = {
    "postgres": ("psycopg2", "postgres"),
    "mysql": ("pymysql", "mysql"),
}


def backend_of(url: str) -> str:
    """'sqlite', 'postgres' or 'mysql' for a database URL."""
    scheme = urlparse(url).scheme.split("+")[0]
    if scheme == "sqlite":
        return "sqlite"
    if scheme in ("postgres", "postgresql"):
        return "postgres"
    if scheme in ("mysql", "mariadb"):
        return "mysql"
    raise ValidationError(
        [
            FieldError(
                "database", f"unsupported URL scheme {scheme!r}: use sqlite, postgresql or mysql"
            )
        ]
    )


def redact(url: str) -> str:
    """The URL without its password, for logs and health answers."""
    parsed = urlparse(url)
    if parsed.password:
        netloc = parsed.netloc.replace(":" + parsed.password + "@", ":***@")
        return parsed._replace(netloc=netloc).geturl()
    return url


def open_database(
    url: str, *, synchronous: str = "FULL", max_connections: int = 64
) -> peewee.Database:
    backend = backend_of(url)
    if backend in DRIVERS:
        module, extra = DRIVERS[backend]
        if importlib.util.find_spec(module) is None:
            raise MissingDriverError(
                f"{backend} needs the {module} driver: pip install 'orderlog[{extra}]'"
            )
    parsed = urlparse(url)
    if backend == "sqlite":
        path = unquote(parsed.path[1:]) if parsed.path else ""
        if not path or path == ":memory:":
            # Threads must share the log, and a memory database is private to a connection.
            raise ValidationError(
                [FieldError("database", "SQLite needs a file path, e.g. sqlite:///orderlog.db")]
            )
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return PooledSqliteDatabase(
            path,
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
    kwargs = parseresult_to_dict(parsed, unquote_password=True, unquote_user=True)
    database = kwargs.pop("database")
    if backend == "postgres":
        return PooledPostgresqlDatabase(
            database, max_connections=max_connections, timeout=30, stale_timeout=300, **kwargs
        )
    kwargs.setdefault("charset", "utf8mb4")
    return PooledMySQLDatabase(
        database,
        max_connections=max_connections,
        timeout=30,
        stale_timeout=300,
        # Events and projection states may outgrow MySQL's 64 KiB TEXT.
        field_types={"TEXT": "LONGTEXT"},
        **kwargs,
    )
