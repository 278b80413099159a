"""The SQL that differs per backend, for the store: how a write transaction begins and
orders itself, and the statements the append path and the readers run.

Statements that depend on a count (of streams, of rows) are built once per count and
kept: few counts recur. It imports peewee and ``orderlog.storage.row``.
"""

from __future__ import annotations

import peewee

from orderlog.storage.row import COLUMN_LIST, COLUMNS

LAST_POSITION = "SELECT COALESCE(MAX(position), 0) FROM events"
# The lock row also names the transaction and the session holding it (no extra round
# trip), so an ambiguous commit can be settled: did that transaction commit?
_TAKE_APPEND_LOCK = {
    # No lock on PostgreSQL: the transaction id gives the positions.
    "postgres": "SELECT txid_current(), pg_backend_pid(), CAST(pg_postmaster_start_time() AS TEXT)",
    "mysql": "SELECT CONNECTION_ID(), CONNECTION_ID(), NULL FROM append_lock WHERE id = 1 "
    "FOR UPDATE",
}
# How long the transaction at the horizon (the oldest still in progress) has run.
HORIZON_AGE = (
    "SELECT EXTRACT(EPOCH FROM now() - xact_start), pid FROM pg_stat_activity "
    "WHERE backend_xid IS NOT NULL "
    "AND CAST(CAST(backend_xid AS TEXT) AS BIGINT) = "
    "MOD(txid_snapshot_xmin(txid_current_snapshot()), 4294967296)"
)
# Rows per multi-row INSERT: few statements per batch, far below every backend's
# limit on parameters (SQLite's is 32,766).
ROWS_PER_INSERT = 500
_KEPT = 64  # statements kept per kind, beyond which they are built each time


class Dialect:
    """One backend's SQL for the store."""

    def __init__(self, backend: str, param: str) -> None:
        self.backend = backend
        self.param = param  # the driver's placeholder
        # Positions 1, 2, 3… without gaps (SQLite, MariaDB/MySQL); PostgreSQL's have gaps.
        self.dense = backend != "postgres"
        # SQLite's BEGIN IMMEDIATE already gives this writer the only write lock.
        self.begin: tuple[str, ...] = ("IMMEDIATE",) if backend == "sqlite" else ()
        self.take_append_lock = _TAKE_APPEND_LOCK.get(backend)
        self._inserts: dict[int, str] = {}  # multi-row INSERT text by row count
        self._versions: dict[int, str] = {}  # by the number of streams
        self._session: dict[int, str] = {}  # the same, with PostgreSQL's session

    def insert(self, rows: int) -> str:
        """One INSERT of ``rows`` rows of the log."""
        sql = self._inserts.get(rows)
        if sql is None:
            one = "(" + ", ".join([self.param] * len(COLUMNS)) + ")"
            sql = self._inserts[rows] = f"INSERT INTO events ({COLUMN_LIST}) VALUES " + ", ".join(
                [one] * rows
            )
        return sql

    def versions(self, streams: int) -> str:
        """Each of ``streams`` streams' version, and on a dense log the last position
        (as the row whose stream is NULL): one statement, one round trip."""
        sql = self._versions.get(streams)
        if sql is None:
            sql = (
                f"SELECT stream_id, MAX(version) FROM events WHERE stream_id IN "
                f"({', '.join([self.param] * streams)}) GROUP BY stream_id"
            )
            if self.dense:
                sql = "SELECT NULL, MAX(position) FROM events UNION ALL " + sql
            if len(self._versions) < _KEPT:
                self._versions[streams] = sql
        return sql

    def session_and_versions(self, streams: int) -> str:
        """PostgreSQL: this transaction's id and session, with each stream's version."""
        sql = self._session.get(streams)
        if sql is None:
            sql = (
                "SELECT s.xid, s.pid, s.started, e.stream_id, e.version FROM (SELECT "
                "txid_current() AS xid, pg_backend_pid() AS pid, "
                "CAST(pg_postmaster_start_time() AS TEXT) AS started) AS s LEFT JOIN ("
                "SELECT stream_id, MAX(version) AS version FROM events WHERE stream_id IN "
                f"({', '.join(['%s'] * streams)}) GROUP BY stream_id) AS e ON TRUE"
            )
            if len(self._session) < _KEPT:
                self._session[streams] = sql
        return sql


def backend_of_database(db: peewee.Database) -> str:
    """'sqlite', 'postgres' or 'mysql' for a peewee database."""
    if isinstance(db, peewee.SqliteDatabase):
        return "sqlite"
    if isinstance(db, peewee.PostgresqlDatabase):
        return "postgres"
    if isinstance(db, peewee.MySQLDatabase):
        return "mysql"
    raise ValueError(f"unsupported database {type(db).__name__}")
