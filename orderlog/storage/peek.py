"""Reading a database before a node opens it: nothing is created, migrated or written.

A start that must be refused (no API token off loopback, a log holding events newer
than this release) looks first, so it leaves no trace: no SQLite file, no WAL switch,
no tables, no lock. It imports the database module only.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import quote

import peewee

from orderlog.storage.database import explain_failure, open_database
from orderlog.storage.database_url import parse_url


def peek(url: str, table: str, sql: str, timeout: float | None = None) -> list[tuple[Any, ...]]:
    """The rows ``sql`` reads from the database at ``url``, or none when there is no
    SQLite file or no ``table`` yet. Waits at most ``timeout`` (30 s by default) for a
    connection or a lock.

    StartupError, in one line with a hint, when the database cannot be read.
    """
    target = parse_url(url)
    try:
        if target.backend == "sqlite":
            return _sqlite_rows(target.database, table, sql, 30.0 if timeout is None else timeout)
        db = open_database(url, max_connections=1, timeout=timeout)
        try:
            with db.connection_context():
                return list(db.execute_sql(sql).fetchall()) if db.table_exists(table) else []
        finally:
            db.close_all()
    except (sqlite3.Error, peewee.DatabaseError, peewee.InterfaceError) as exc:
        raise explain_failure(exc, url) from exc


def _sqlite_rows(path: str, table: str, sql: str, timeout: float) -> list[tuple[Any, ...]]:
    if not Path(path).is_file():
        return []
    # Not the pool's connection: it would switch an old file to WAL. mode=rw never makes
    # the file; a connection that only reads writes nothing to it and, the last to
    # close, removes the -wal and -shm files it made (mode=ro would leave them behind).
    conn = sqlite3.connect(
        f"file:{quote(path)}?mode=rw", uri=True, timeout=timeout, isolation_level=None
    )
    try:
        exists = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
        if not conn.execute(exists, (table,)).fetchone():
            return []
        return conn.execute(sql).fetchall()
    finally:
        conn.close()
