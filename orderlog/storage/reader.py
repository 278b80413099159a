"""Reading the log: one stream's events, and the global log (the feed) in position order.

Every page of the feed stops at the horizon (``orderlog.storage.horizon``), so a reader
that resumes after the last position it saw never skips an event that commits later.
It imports the domain and the store's connections, dialect, horizon and rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from orderlog.domain.events import RecordedEvent
from orderlog.storage.connection import Connections
from orderlog.storage.dialect import LAST_POSITION, Dialect
from orderlog.storage.horizon import Horizon
from orderlog.storage.row import COLUMN_LIST, decode

MAX_PAGE = 1000


class Reader:
    """The store's reads of the events table."""

    def __init__(self, connections: Connections, dialect: Dialect, horizon: Horizon) -> None:
        self._connections = connections
        self._dialect = dialect
        self._horizon = horizon
        self._columns = COLUMN_LIST

    def before_event_versions(self) -> None:
        """Read a log whose schema predates the ``event_version`` column (version 8) as
        it is, without migrating it: every event there was written at version 1."""
        self._columns = COLUMN_LIST.replace("event_version", "NULL AS event_version")

    def read_stream(self, stream_id: str, up_to_version: int | None = None) -> list[RecordedEvent]:
        """One stream's events in version order (up to a version, for time travel)."""
        p = self._dialect.param
        sql = f"SELECT {self._columns} FROM events WHERE stream_id = {p}"
        params: list[Any] = [stream_id]
        if up_to_version is not None:
            sql += f" AND version <= {p}"
            params.append(up_to_version)
        return [decode(row) for row in self._connections.query(sql + " ORDER BY version", params)]

    def read_all_raw(self, after: int = 0, limit: int = 100) -> list[tuple[Any, ...]]:
        """A page of undecoded rows after ``after``, in position order."""
        p = self._dialect.param
        limit = max(1, min(limit, MAX_PAGE * 100))
        self._horizon.own_writes_readable()
        return self._connections.query(
            f"SELECT {self._columns} FROM events WHERE position > {p}{self._horizon.condition()} "
            f"ORDER BY position LIMIT {p}",
            [after, limit],
        )

    def iter_pages(self, after: int = 0, page: int = 5000) -> Iterator[list[RecordedEvent]]:
        """The whole log after ``after`` as pages of events, read so memory stays constant."""
        while True:
            rows = self.read_all_raw(after, page)
            if rows:
                yield list(map(decode, rows))
            if len(rows) < page:
                return
            after = rows[-1][0]

    def head(self) -> int:
        """The newest position safe to read (on SQLite and MariaDB the log's length)."""
        if self._dialect.dense:
            return self.last_position()
        self._horizon.own_writes_readable()
        return self._horizon.safe_head()

    def last_position(self) -> int:
        """The newest position committed, safe to read or not yet."""
        return self._connections.query(LAST_POSITION, [])[0][0]

    def count_after(self, position: int, most: int = 1_000_000) -> int:
        """How many events committed after ``position`` (at most ``most``)."""
        p = self._dialect.param
        rows = self._connections.query(
            f"SELECT COUNT(*) FROM (SELECT 1 FROM events WHERE position > {p} LIMIT {p}) AS later",
            [position, most],
        )
        return rows[0][0]

    def stream_version(self, stream_id: str) -> int:
        """The version of a stream's newest event; 0 for a stream without events."""
        rows = self._connections.query(
            f"SELECT MAX(version) FROM events WHERE stream_id = {self._dialect.param}",
            [stream_id],
        )
        return rows[0][0] or 0
