"""The append path: a batch of appends committed in one transaction, each append all or
nothing, and the batch's outcome known before anyone is told.

Versions are checked up front, so a clash fails only its own append; positions come
from the append lock (SQLite, MariaDB) or from the transaction id (PostgreSQL, see
``orderlog.storage.horizon``). A COMMIT that went unanswered is settled
(``orderlog.storage.settle``) before its appends are answered. It imports peewee, the
domain, and the store's connections, dialect, horizon, disk space, reader and rows.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import peewee

from orderlog.domain.errors import (
    AppendFailedError,
    ConcurrencyError,
    OrderlogError,
    OutcomeUnknownError,
    StoreFullError,
    StoreUnavailableError,
)
from orderlog.domain.events import RecordedEvent
from orderlog.storage.connection import DB_ERRORS, DRIVER_ERRORS_AS_PEEWEE, Connections
from orderlog.storage.dialect import ROWS_PER_INSERT, Dialect
from orderlog.storage.disk_space import DiskSpace
from orderlog.storage.group_commit import Request
from orderlog.storage.horizon import Horizon
from orderlog.storage.observe import StoreObserver
from orderlog.storage.reader import Reader
from orderlog.storage.row import COLUMNS, EncodedEvent, format_time
from orderlog.storage.settle import settle

# The store's lines keep its logger's name, whichever of its modules says them.
log = logging.getLogger("orderlog.storage.store")


class PendingAppend:
    """One stream's encoded events, and (once committed) its first position or its error.

    A caller's appends travel to the writer together, in one request, so a caller
    with many (the worker) costs the writer one wake-up, not one each.
    """

    __slots__ = (
        "error",
        "events",
        "expected_version",
        "first_position",
        "moment",
        "moment_text",
        "stream_id",
    )

    def __init__(self, stream_id: str, expected_version: int, events: list[EncodedEvent]) -> None:
        self.stream_id = stream_id
        self.expected_version = expected_version
        self.events = events
        self.first_position = 0
        self.moment: datetime | None = None  # when it was recorded
        self.moment_text = ""  # the same, as the log holds it
        self.error: OrderlogError | None = None

    def recorded(self) -> list[RecordedEvent]:
        first, moment = self.first_position, self.moment
        return [
            RecordedEvent(
                first + offset,
                self.stream_id,
                self.expected_version + offset + 1,
                event.type,
                moment,
                event.data_json,
                event.metadata_json,
                self.moment_text,
                event.event_version,
            )
            for offset, event in enumerate(self.events)
        ]


class _Attempt:
    """One batch's transaction, as far as it got: what it wrote and who wrote it."""

    __slots__ = ("accepted", "committing", "first", "moment", "recorded_at", "session")

    def __init__(self) -> None:
        self.session: tuple[Any, ...] | None = None  # (transaction, session, server start)
        self.accepted: list[tuple[PendingAppend, int]] = []
        self.first: tuple[int, str] | None = None  # position and event id of the first event
        self.moment: datetime | None = None
        self.recorded_at = ""
        self.committing = False  # the COMMIT was sent: from here on the outcome may be unknown


class Appender:
    """Commits batches of appends for the store (on its writer's thread, or the caller's)."""

    def __init__(
        self,
        connections: Connections,
        dialect: Dialect,
        horizon: Horizon,
        disk: DiskSpace,
        reader: Reader,
        *,
        clock: Callable[[], datetime],
        observer: StoreObserver | None,
        timeout: float | None,
    ) -> None:
        self._connections = connections
        self._db = connections.db
        self._dialect = dialect
        self._horizon = horizon
        self._disk = disk
        self._reader = reader
        self._clock = clock
        self._observer = observer
        self._timeout = timeout  # the bound on settling a commit that went unanswered

    def commit_batch(self, batch: list[Request]) -> None:
        """Commit every request's appends in one transaction (on PostgreSQL, as many as
        one transaction's span of positions holds); each append gets its first position
        and moment, or its error."""
        appends: list[PendingAppend] = [a for request in batch for a in request.payload]
        for chunk in self._transactions(appends):
            error = self._commit_appends(chunk)
            for append in chunk:
                if error is not None and append.error is None:
                    append.error = error
        if self._disk.full and any(a.error is None for a in appends):
            self._disk.written()

    def _transactions(self, appends: list[PendingAppend]) -> Iterator[list[PendingAppend]]:
        if self._dialect.dense:
            yield appends
            return
        span = self._horizon.origin()[2]
        chunk: list[PendingAppend] = []
        rows = 0
        for append in appends:
            if len(append.events) > span:
                append.error = AppendFailedError(
                    f"an append of {len(append.events)} events is more than one "
                    f"transaction holds ({span})"
                )
                continue
            if rows + len(append.events) > span:
                yield chunk
                chunk, rows = [], 0
            chunk.append(append)
            rows += len(append.events)
        if chunk:
            yield chunk

    def _commit_appends(self, appends: list[PendingAppend]) -> StoreUnavailableError | None:
        """One transaction for ``appends``; None when it committed, else its error.

        Versions are checked up front, so a clash fails only its own append. Should
        the database still refuse the batch (on PostgreSQL a concurrent append to the
        same stream that committed after the check; elsewhere a writer outside this
        store), it is checked and tried again once, and then each append alone, so
        neighbours are spared. Should the connection fail once the COMMIT was sent,
        the outcome is settled first.
        """
        for _ in range(2):
            try:
                return self._write_settled(appends)
            except peewee.IntegrityError:
                for append in appends:
                    append.error = None
        for append in appends:
            try:
                append.error = self._write_settled([append])
            except peewee.IntegrityError:
                append.error = ConcurrencyError(
                    append.stream_id,
                    append.expected_version,
                    self._reader.stream_version(append.stream_id),
                )
        return None

    def _write_settled(self, appends: list[PendingAppend]) -> StoreUnavailableError | None:
        """Write one transaction and know its outcome: None when committed (each append
        then has its position), else the error for every append in it. IntegrityError
        (a clash the version check could not see) is raised for the caller to split."""
        attempt = _Attempt()
        try:
            self._write(appends, attempt)
        except (*DB_ERRORS, StoreUnavailableError) as exc:
            if isinstance(exc, peewee.IntegrityError):
                raise
            self._connections.drop()
            landed = (
                settle(
                    self._connections,
                    self._dialect.backend,
                    attempt.session,
                    attempt.first,
                    self._timeout,
                )
                if attempt.committing
                else False
            )
            if landed is None:
                for append, _ in attempt.accepted:
                    append.error = OutcomeUnknownError(
                        append.stream_id,
                        f"the database did not confirm whether the append to "
                        f"{append.stream_id!r} landed ({exc})",
                    )
                return OutcomeUnknownError("", f"the commit went unanswered: {exc}")
            if not landed:
                failure = self._disk.failure("append failed", exc)
                if isinstance(failure, StoreFullError):
                    return failure
                return AppendFailedError(str(failure))
            log.warning("a commit's answer was lost (%s); its batch is in the log", exc)
        self._committed(attempt)
        return None

    def _write(self, appends: list[PendingAppend], attempt: _Attempt) -> None:
        """One transaction: check the versions, insert every append that passes."""
        with self._connections.turn():
            if not self._dialect.dense and not self._db.in_transaction():
                self._write_in_two_trips(appends, attempt)
                return
            with self._connections.transaction() as cursor:
                if self._dialect.take_append_lock:
                    cursor.execute(self._dialect.take_append_lock)
                    attempt.session = cursor.fetchone()
                # Read under the lock (if any), so every append before this one has
                # committed: the last position and the batch's streams' versions, in
                # one statement (each statement hands the GIL back and forth, which
                # the writer pays for in turn).
                streams = list({a.stream_id for a in appends})
                cursor.execute(self._dialect.versions(len(streams)), streams)
                versions: dict[str | None, int] = dict(cursor.fetchall())
                for sql, params in self._insert_statements(appends, attempt, versions):
                    cursor.execute(sql, params)
                attempt.committing = True  # leaving the block sends the COMMIT

    def _write_in_two_trips(self, appends: list[PendingAppend], attempt: _Attempt) -> None:
        """PostgreSQL's transaction in two round trips, where no lock orders commits and the
        time a commit takes is what bounds a connection: BEGIN with the transaction id,
        the session and the versions; then the INSERTs with the COMMIT."""
        if self._db.is_closed():
            with DRIVER_ERRORS_AS_PEEWEE:
                self._db.connect()
        cursor = self._db.cursor()
        streams = list({a.stream_id for a in appends})
        try:
            with DRIVER_ERRORS_AS_PEEWEE:
                cursor.execute(
                    "BEGIN; " + self._dialect.session_and_versions(len(streams)), streams
                )
                rows = cursor.fetchall()
                attempt.session = rows[0][:3]
                versions: dict[str | None, int] = {r[3]: r[4] for r in rows if r[3] is not None}
                statements = self._insert_statements(appends, attempt, versions)
                if not statements:  # every append clashed: nothing to commit
                    cursor.execute("ROLLBACK")
                    return
                for sql, params in statements[:-1]:
                    cursor.execute(sql, params)
                sql, params = statements[-1]
                attempt.committing = True
                cursor.execute(sql + "; COMMIT", params)
        except BaseException:
            # A failed statement left the transaction aborted: end it. On a broken
            # connection this fails too, and the connection is dropped by the caller.
            with contextlib.suppress(Exception):
                cursor.execute("ROLLBACK")
            raise

    def _insert_statements(
        self, appends: list[PendingAppend], attempt: _Attempt, versions: dict[str | None, int]
    ) -> list[tuple[str, list[Any]]]:
        """The INSERTs for every append at its expected version (the others get their
        ConcurrencyError), positions after ``versions[None]`` or, on PostgreSQL, this
        transaction's own."""
        head = versions.pop(None, None) or 0
        if not self._dialect.dense:
            base, tx0, span = self._horizon.origin()
            assert attempt.session is not None
            head = base + (attempt.session[0] - tx0) * span - 1
        now = self._clock()
        recorded_at = format_time(now)
        params: list[Any] = []
        accepted = attempt.accepted
        for append in appends:
            stream_id = append.stream_id
            current = versions.get(stream_id, 0)
            if current != append.expected_version:
                append.error = ConcurrencyError(stream_id, append.expected_version, current)
                continue
            accepted.append((append, head + 1))
            for event in append.events:
                head += 1
                current += 1
                params += (
                    head,
                    stream_id,
                    current,
                    event.type,
                    event.data_json,
                    event.metadata_json,
                    recorded_at,
                    event.event_version,
                )
            versions[stream_id] = current
        if accepted:
            first_append, first_position = accepted[0]
            attempt.first = (first_position, first_append.events[0].metadata["event_id"])
        attempt.moment, attempt.recorded_at = now, recorded_at
        # Few large statements, not one per row: each statement releases and retakes
        # the GIL, and under load every retake may wait its turn.
        step = ROWS_PER_INSERT * len(COLUMNS)
        return [
            (self._dialect.insert(len(chunk) // len(COLUMNS)), chunk)
            for chunk in (params[i : i + step] for i in range(0, len(params), step))
        ]

    def _committed(self, attempt: _Attempt) -> None:
        accepted = attempt.accepted
        for append, first_position in accepted:
            append.first_position = first_position
            append.moment = attempt.moment
            append.moment_text = attempt.recorded_at
        if accepted and not self._dialect.dense:
            last, first_position = accepted[-1]
            self._horizon.wrote(first_position + len(last.events) - 1)
        if self._observer is not None and accepted:
            self._observer.committed(
                len(accepted), Counter(e.type for append, _ in accepted for e in append.events)
            )
