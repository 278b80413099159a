"""The event store: the only code in the packages that reads or writes the events table.

A stored event is (position, stream_id, version, type, data, metadata, recorded_at).
Unique (stream_id, version) makes a lost race a ConcurrencyError; database triggers
make the table append-only. Positions are unique and increase along the log, in one
total order every reader follows and can resume from (``after``), never skipping an
event that commits later:

- SQLite and MariaDB/MySQL hand positions out under one lock (SQLite's write lock, the
  ``append_lock`` row) held until commit: positions are dense, and become visible
  strictly in order. SQLite has one writer at a time anyway. MariaDB offers a reader
  no way to learn, inside its own snapshot, which transactions are still in flight,
  so the lock stays there: one MariaDB database takes one commit at a time.
- PostgreSQL appends take no lock, so commits from many connections and nodes are
  flushed together. A transaction's positions come from its own transaction id:
  ``base + (xid - tx0) * span + i`` (``feed_origin`` holds base, tx0 and the span,
  1,000), so positions have gaps. A reader reads only below the horizon: positions of
  transactions older than the oldest one still in progress
  (``txid_snapshot_xmin``), taken from the same snapshot as the rows. Every such
  transaction has ended, so nothing can commit below the horizon later. The price:
  a long write transaction anywhere on the server holds every reader back until it
  ends (orderlog's own are bounded by ``--db-timeout``); ``horizon_age`` tells.

An append never answers wrongly. When the connection fails after its COMMIT was
sent, the outcome is found out before anyone is told: once the old transaction
can no longer commit (PostgreSQL: its transaction id is no longer in progress, its
backend terminated if the COMMIT never reached it, never while the COMMIT is carried
out, which may be waiting for a synchronous standby; MariaDB: its connection killed
and gone; SQLite: our own connection closed), the batch's first event is looked up
by its position and event id. Found: committed. Not found: failed, safe to retry. No
answer from the database within the bound: OutcomeUnknownError, which says just that.

A full disk is told apart from other failures by the driver's code (StoreFullError),
said in one log line when writes start failing for it and one when appends succeed
again (or ``writable()``, asked by readiness, finds room by itself).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson
import peewee
from playhouse.pool import MaxConnectionsExceeded

from orderlog import deadline
from orderlog.domain.errors import (
    AppendFailedError,
    ConcurrencyError,
    OrderlogError,
    OutcomeUnknownError,
    StoreFullError,
    StoreUnavailableError,
)
from orderlog.domain.events import Event, RecordedEvent, event_data, event_type
from orderlog.storage import schema
from orderlog.storage.database import is_deadlock, unbounded
from orderlog.storage.group_commit import GroupCommitter, Request
from orderlog.storage.observe import StoreObserver

log = logging.getLogger(__name__)

MAX_PAGE = 1000
# The log's columns, in the order every row is written and read.
COLUMNS = ("position", "stream_id", "version", "type", "data", "metadata", "recorded_at")
_COLUMN_LIST = ", ".join(COLUMNS)
# Rows per multi-row INSERT: few statements per batch, far below every backend's
# limit on parameters (SQLite's is 32,766).
_ROWS_PER_INSERT = 500
_LAST_POSITION = "SELECT COALESCE(MAX(position), 0) FROM events"
_dumps = orjson.dumps
# The lock row also names the transaction and the session holding it (no extra round
# trip), so an ambiguous commit can be settled: did that transaction commit?
_TAKE_APPEND_LOCK = {
    # No lock on PostgreSQL: the transaction id gives the positions.
    "postgres": "SELECT txid_current(), pg_backend_pid(), CAST(pg_postmaster_start_time() AS TEXT)",
    "mysql": "SELECT CONNECTION_ID(), CONNECTION_ID(), NULL FROM append_lock WHERE id = 1 "
    "FOR UPDATE",
}
VERDICT_GRACE = 0.4
# How long a read waits for this store's own latest write to become readable.
OWN_WRITES_WAIT = 1.0
# How long the transaction at the horizon (the oldest still in progress) has run.
_HORIZON_AGE = (
    "SELECT EXTRACT(EPOCH FROM now() - xact_start), pid FROM pg_stat_activity "
    "WHERE backend_xid IS NOT NULL "
    "AND CAST(CAST(backend_xid AS TEXT) AS BIGINT) = "
    "MOD(txid_snapshot_xmin(txid_current_snapshot()), 4294967296)"
)
# How often a settling append asks again whether the old transaction has ended.
_SETTLE_POLL = 0.05


# Statements run on the driver's own cursor raise the driver's errors; this turns
# them into peewee's (IntegrityError, OperationalError...), as execute_sql does.
_DRIVER_ERRORS_AS_PEEWEE = peewee.__exception_wrapper__
# A pool that stays exhausted past its timeout is the database being unavailable too.
_DB_ERRORS = (peewee.DatabaseError, peewee.InterfaceError, MaxConnectionsExceeded)

# Free space on SQLite's file system that makes a full log writable again: room for
# many batches' WAL frames and the checkpoints that follow, small beside any real disk.
ROOM_TO_RESUME = 1 << 20
# The trial write on PostgreSQL and MariaDB, rolled back: a row as large as a big
# batch's, so a table that cannot grow on a full disk refuses it.
_TRIAL_BYTES = 64 * 1024
_SQLITE_FULL = 13  # the primary result code; extended codes keep it in the low byte
_POSTGRES_DISK_FULL = "53100"
# ER_DISK_FULL, ER_RECORD_FILE_FULL ("The table ... is full").
_MYSQL_FULL = {1021: "ER_DISK_FULL", 1114: "ER_RECORD_FILE_FULL"}
# EE_WRITE, ER_ERROR_ON_WRITE, ER_GET_ERRNO: a failed write whose operating-system
# error (28 is ENOSPC) MariaDB gives only inside its message.
_MYSQL_WRITE_ERRORS = {3, 1026, 1030}
_MYSQL_ENOSPC = re.compile(r"(?:errcode:|errno:|got error) 28\b", re.IGNORECASE)


class EncodedEvent(NamedTuple):
    """An event ready for the log: its type, fields and metadata, and both as JSON text.

    Callers encode, so the single writer thread does as little Python work per
    event as possible; ``data`` and ``metadata`` are kept to build the recorded event.
    """

    type: str
    data: dict[str, Any]
    metadata: dict[str, Any]
    data_json: str
    metadata_json: str


def encode(
    events: Sequence[Event], metadata: Mapping[str, Any] | None = None
) -> list[EncodedEvent]:
    """Events as the log stores them, each with its own event id in its metadata."""
    shared = dict(metadata or {})
    encoded = []
    for event in events:
        data = event_data(event)
        meta = {"event_id": new_event_id(), **shared}
        encoded.append(
            EncodedEvent(
                event_type(event), data, meta, _dumps(data).decode(), _dumps(meta).decode()
            )
        )
    return encoded


class WriterStats(NamedTuple):
    batches: int
    appends: int
    waiting: int


def new_event_id() -> str:
    """A random UUID (version 4) as text, from os.urandom: half the cost of
    str(uuid.uuid4()), paid for every event."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[int(h[16], 16)]}{h[17:20]}-{h[20:]}"


_VARIANT = "89ab" * 4  # RFC 4122 variant: the top two bits of byte 8 are 10


class AppendRequest(NamedTuple):
    """One stream's append, for ``EventStore.append_many``."""

    stream_id: str
    events: Sequence[Event]
    expected_version: int
    metadata: Mapping[str, Any] | None = None


class _Attempt:
    """One batch's transaction, as far as it got: what it wrote and who wrote it."""

    __slots__ = ("accepted", "committing", "first", "moment", "recorded_at", "session")

    def __init__(self) -> None:
        self.session: tuple[Any, ...] | None = None  # (transaction, session, server start)
        self.accepted: list[tuple[_Append, int]] = []
        self.first: tuple[int, str] | None = None  # position and event id of the first event
        self.moment: datetime | None = None
        self.recorded_at = ""
        self.committing = False  # the COMMIT was sent: from here on the outcome may be unknown


class _Append:
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
            )
            for offset, event in enumerate(self.events)
        ]


def utc_now() -> datetime:
    return datetime.now(UTC)


def format_time(moment: datetime) -> str:
    return moment.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


# An alias, not a wrapper: replay parses a timestamp per event.
parse_time = datetime.fromisoformat


class EventStore:
    """Append and read events. ``open()`` creates the schema and starts the writer."""

    def __init__(
        self,
        db: peewee.Database,
        *,
        group_commit: bool = True,
        max_batch: int = 1000,
        clock: Callable[[], datetime] | None = None,
        observer: StoreObserver | None = None,
        timeout: float | None = None,
    ) -> None:
        self.db = db
        # The bound on one append, as its caller waits for it, and on settling one whose
        # commit went unanswered; None: no bound (operators' commands, most tests).
        self.timeout = timeout
        # A caller waits for the writer's own verdict a moment past the bound on each
        # database call, so a call that ran out is answered as failed, not as unknown.
        self._wait = None if timeout is None else timeout + VERDICT_GRACE
        self._observer = observer
        self.backend = _backend_of_database(db)
        self._param = db.param
        self._clock = clock or utc_now
        self._inserts: dict[int, str] = {}  # multi-row INSERT text by row count
        # Writers in this process take turns here rather than in SQLite's busy handler,
        # which sleeps between tries.
        self._write_lock = threading.Lock()
        # SQLite's BEGIN IMMEDIATE already gives this writer the only write lock.
        self._begin = ("IMMEDIATE",) if self.backend == "sqlite" else ()
        self._take_append_lock = _TAKE_APPEND_LOCK.get(self.backend)
        # PostgreSQL: (base, tx0) from feed_origin, read at open; positions below
        # ``_horizon`` (SQL) are safe to read. Elsewhere every committed position is.
        self._origin: tuple[int, int, int] | None = None  # base, tx0, span
        self._horizon = ""
        # The newest position this store committed, and the newest known readable: a
        # process reads its own writes (PostgreSQL may hold them back a moment).
        self._written = 0
        self._readable = 0
        self._versions_sql: dict[int, str] = {}  # by the number of streams
        self._session_sql: dict[int, str] = {}  # the same, with PostgreSQL's session
        # The line said when writes began to fail for a full disk; None while they do not.
        self._full: str | None = None
        self._full_lock = threading.Lock()
        self._writer = (
            GroupCommitter(
                self._commit_batch,
                max_batch=max_batch,
                on_thread_start=lambda: self.db.connect(reuse_if_open=True),
                on_thread_stop=self.db.close,
            )
            if group_commit
            else None
        )

    def open(self) -> EventStore:
        self.create_schema()
        if self._writer:
            self._writer.start()
        return self

    def close(self, timeout: float | None = None) -> None:
        """Commit what the writer holds and close every connection; ``timeout`` bounds
        the wait for the writer (a stalled database may hold it)."""
        if self._writer:
            self._writer.stop(timeout)
        if hasattr(self.db, "close_all"):
            self.db.close_all()

    def create_schema(self) -> None:
        """Bring the schema to the latest version: safe on every start, by every node at once.

        Then prove the log can be written (a read-only file or user would otherwise
        start, and fail every order).
        """
        try:
            with self._connection(), unbounded(self.db):
                schema.migrate(self.db, self.backend)
            with self._connection(), self._transaction() as cursor:
                if self.backend == "postgres":
                    self._load_origin(cursor)
                else:
                    cursor.execute("UPDATE append_lock SET id = 1 WHERE id = 1")
        except _DB_ERRORS as exc:
            raise StoreUnavailableError(f"cannot create the schema: {exc}") from exc

    def _load_origin(self, cursor: Any) -> None:
        """Read where positions start; move it past the log if transaction ids went back.

        They go back only when the log was restored into another PostgreSQL cluster
        (pg_dump and restore; pg_upgrade and failover keep them): new positions would
        then fall among old ones. Locking the row is also the proof of writing.
        """
        cursor.execute("SELECT base, tx0, span FROM feed_origin WHERE id = 1 FOR UPDATE")
        base, tx0, span = cursor.fetchone()
        cursor.execute("SELECT txid_current(), (SELECT COALESCE(MAX(position), 0) FROM events)")
        now, last = cursor.fetchone()
        if base + (now - tx0) * span <= last:
            log.warning(
                "transaction ids are behind the log's positions (restored into another "
                "PostgreSQL cluster?): new positions start after %d",
                last,
            )
            base, tx0 = last + 1, now
            cursor.execute("UPDATE feed_origin SET base = %s, tx0 = %s WHERE id = 1", (base, tx0))
        self._set_origin(base, tx0, span)

    def _read_origin(self) -> tuple[int, int, int]:
        """The origin, for a store used without ``open()`` (a command, a backup)."""
        rows = self._query("SELECT base, tx0, span FROM feed_origin WHERE id = 1", [])
        if not rows:
            raise StoreUnavailableError("the log's schema is not there yet: open the store first")
        self._set_origin(*rows[0])
        assert self._origin is not None
        return self._origin

    def _set_origin(self, base: int, tx0: int, span: int) -> None:
        self._origin = (base, tx0, span)
        self._horizon = f"{base} + (txid_snapshot_xmin(txid_current_snapshot()) - {tx0}) * {span}"

    def _below_horizon(self) -> str:
        """The condition for positions safe to read (every transaction below has ended)."""
        if self.dense:
            return ""
        if not self._horizon:
            self._read_origin()
        return f" AND position < {self._horizon}"

    @property
    def dense(self) -> bool:
        """Whether positions are 1, 2, 3… without gaps (SQLite, MariaDB/MySQL)."""
        return self.backend != "postgres"

    def ping(self) -> bool:
        try:
            with self._connection():
                self.db.execute_sql("SELECT 1").fetchone()
            return True
        except _DB_ERRORS:
            return False

    def writable(self) -> bool:
        """False while writes fail for a full disk and there is still no room.

        A node that is not ready gets no traffic to try with, so this looks for room
        itself, and only in that state: on SQLite the free space of the database's
        file system (a rolled-back write never reaches the disk there), on PostgreSQL
        and MariaDB a trial write of one large row, rolled back.
        """
        if self._full is None:
            return True
        if not self._has_room():
            return False
        self._note_written()
        return True

    def _has_room(self) -> bool:
        if self.backend == "sqlite":
            try:
                stat = os.statvfs(os.path.dirname(os.path.abspath(self.db.database)))
            except OSError:
                return False
            return stat.f_bavail * stat.f_frsize >= ROOM_TO_RESUME
        p = self._param
        try:
            with self._connection(), self._transaction() as cursor:
                cursor.execute(
                    f"INSERT INTO events ({_COLUMN_LIST}) VALUES ({', '.join([p] * len(COLUMNS))})",
                    (0, "", 0, "TrialWrite", "x" * _TRIAL_BYTES, "{}", ""),
                )
                raise _RollBack
        except _RollBack:
            return True
        except _DB_ERRORS:
            return False

    @property
    def writer_alive(self) -> bool:
        return self._writer is None or self._writer.running

    def writer_stats(self) -> WriterStats:
        """Batches committed, appends in them, and appends waiting for the writer."""
        if self._writer is None:
            return WriterStats(0, 0, 0)
        return WriterStats(self._writer.batches, self._writer.committed, self._writer.waiting)

    # -- writing ---------------------------------------------------------------

    def append(
        self,
        stream_id: str,
        events: Sequence[Event],
        expected_version: int,
        metadata: Mapping[str, Any] | None = None,
    ) -> list[RecordedEvent]:
        """Append all of ``events`` or none; returns them as recorded.

        Raises ConcurrencyError when the stream is no longer at ``expected_version``.
        """
        (outcome,) = self.append_many(
            [AppendRequest(stream_id, events, expected_version, metadata)]
        )
        if isinstance(outcome, OrderlogError):
            raise outcome
        return outcome

    def append_many(
        self, requests: Sequence[AppendRequest]
    ) -> list[list[RecordedEvent] | OrderlogError]:
        """Append to several streams at once, each all or nothing on its own.

        They are committed together (with whatever else the writer holds), so a
        caller with many appends pays for one commit, not one each. Returns, in
        order, each request's recorded events or its error (ConcurrencyError for a
        stream no longer at its expected version, StoreUnavailableError).
        """
        appends = [
            _Append(r.stream_id, r.expected_version, encode(r.events, r.metadata)) for r in requests
        ]
        pending = [a for a in appends if a.events]
        if pending:
            try:
                if self._writer:
                    self._writer.submit(pending, deadline.bound(self._wait))
                else:
                    request = Request(pending)
                    opened = self.db.is_closed()
                    try:
                        self._commit_batch([request])
                    finally:
                        # Not connection_context(): a failed commit closes the connection
                        # for good, and the context would trip on that.
                        if opened and not self.db.is_closed():
                            self.db.close()
                    if request.error is not None:
                        raise request.error
            except OutcomeUnknownError as error:  # each stream is named in its own error
                for append in pending:
                    append.error = append.error or OutcomeUnknownError(append.stream_id, str(error))
            except OrderlogError as error:  # the whole batch failed, or the writer is gone
                for append in pending:
                    append.error = append.error or error
        return [a.error if a.error is not None else a.recorded() for a in appends]

    def _commit_batch(self, batch: list[Request]) -> None:
        """Commit every request's appends in one transaction (on PostgreSQL, as many as
        one transaction's span of positions holds); each append gets its first position
        and moment, or its error."""
        appends: list[_Append] = [a for request in batch for a in request.payload]
        for chunk in self._transactions(appends):
            error = self._commit_appends(chunk)
            for append in chunk:
                if error is not None and append.error is None:
                    append.error = error
        if self._full is not None and any(a.error is None for a in appends):
            self._note_written()

    def _transactions(self, appends: list[_Append]) -> Iterator[list[_Append]]:
        if self.dense:
            yield appends
            return
        span = (self._origin or self._read_origin())[2]
        chunk: list[_Append] = []
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

    def _commit_appends(self, appends: list[_Append]) -> StoreUnavailableError | None:
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
                self._fail_clash(append)
        return None

    def _write_settled(self, appends: list[_Append]) -> StoreUnavailableError | None:
        """Write one transaction and know its outcome: None when committed (each append
        then has its position), else the error for every append in it. IntegrityError
        (a clash the version check could not see) is raised for the caller to split."""
        attempt = _Attempt()
        try:
            self._write(appends, attempt)
        except (*_DB_ERRORS, StoreUnavailableError) as exc:
            if isinstance(exc, peewee.IntegrityError):
                raise
            self._drop_connection()
            landed = self._settle(attempt) if attempt.committing else False
            if landed is None:
                for append, _ in attempt.accepted:
                    append.error = OutcomeUnknownError(
                        append.stream_id,
                        f"the database did not confirm whether the append to "
                        f"{append.stream_id!r} landed ({exc})",
                    )
                return OutcomeUnknownError("", f"the commit went unanswered: {exc}")
            if not landed:
                failure = self._failure("append failed", exc)
                if isinstance(failure, StoreFullError):
                    return failure
                return AppendFailedError(str(failure))
            log.warning("a commit's answer was lost (%s); its batch is in the log", exc)
        self._committed(attempt)
        return None

    def _write(self, appends: list[_Append], attempt: _Attempt) -> None:
        """One transaction: check the versions, insert every append that passes."""
        with self._turn():
            if not self.dense and not self.db.in_transaction():
                self._write_in_two_trips(appends, attempt)
                return
            with self._transaction() as cursor:
                if self._take_append_lock:
                    cursor.execute(self._take_append_lock)
                    attempt.session = cursor.fetchone()
                # Read under the lock (if any), so every append before this one has
                # committed: the last position and the batch's streams' versions, in
                # one statement (each statement hands the GIL back and forth, which
                # the writer pays for in turn).
                streams = list({a.stream_id for a in appends})
                cursor.execute(self._versions(len(streams)), streams)
                versions: dict[str | None, int] = dict(cursor.fetchall())
                for sql, params in self._insert_statements(appends, attempt, versions):
                    cursor.execute(sql, params)
                attempt.committing = True  # leaving the block sends the COMMIT

    def _write_in_two_trips(self, appends: list[_Append], attempt: _Attempt) -> None:
        """PostgreSQL's transaction in two round trips, where no lock orders commits and the
        time a commit takes is what bounds a connection: BEGIN with the transaction id,
        the session and the versions; then the INSERTs with the COMMIT."""
        if self.db.is_closed():
            with _DRIVER_ERRORS_AS_PEEWEE:
                self.db.connect()
        cursor = self.db.cursor()
        streams = list({a.stream_id for a in appends})
        try:
            with _DRIVER_ERRORS_AS_PEEWEE:
                cursor.execute("BEGIN; " + self._session_and_versions(len(streams)), streams)
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

    def _session_and_versions(self, streams: int) -> str:
        sql = self._session_sql.get(streams)
        if sql is None:
            sql = (
                "SELECT s.xid, s.pid, s.started, e.stream_id, e.version FROM (SELECT "
                "txid_current() AS xid, pg_backend_pid() AS pid, "
                "CAST(pg_postmaster_start_time() AS TEXT) AS started) AS s LEFT JOIN ("
                "SELECT stream_id, MAX(version) AS version FROM events WHERE stream_id IN "
                f"({', '.join(['%s'] * streams)}) GROUP BY stream_id) AS e ON TRUE"
            )
            if len(self._session_sql) < 64:
                self._session_sql[streams] = sql
        return sql

    def _insert_statements(
        self, appends: list[_Append], attempt: _Attempt, versions: dict[str | None, int]
    ) -> list[tuple[str, list[Any]]]:
        """The INSERTs for every append at its expected version (the others get their
        ConcurrencyError), positions after ``versions[None]`` or, on PostgreSQL, this
        transaction's own."""
        head = versions.pop(None, None) or 0
        if not self.dense:
            base, tx0, span = self._origin or self._read_origin()
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
                )
            versions[stream_id] = current
        if accepted:
            first_append, first_position = accepted[0]
            attempt.first = (first_position, first_append.events[0].metadata["event_id"])
        attempt.moment, attempt.recorded_at = now, recorded_at
        # Few large statements, not one per row: each statement releases and retakes
        # the GIL, and under load every retake may wait its turn.
        step = _ROWS_PER_INSERT * len(COLUMNS)
        return [
            (self._insert_sql(len(chunk) // len(COLUMNS)), chunk)
            for chunk in (params[i : i + step] for i in range(0, len(params), step))
        ]

    def _versions(self, streams: int) -> str:
        sql = self._versions_sql.get(streams)
        if sql is None:
            sql = (
                f"SELECT stream_id, MAX(version) FROM events WHERE stream_id IN "
                f"({', '.join([self._param] * streams)}) GROUP BY stream_id"
            )
            if self.dense:
                sql = "SELECT NULL, MAX(position) FROM events UNION ALL " + sql
            if len(self._versions_sql) < 64:
                self._versions_sql[streams] = sql
        return sql

    def _committed(self, attempt: _Attempt) -> None:
        accepted = attempt.accepted
        for append, first_position in accepted:
            append.first_position = first_position
            append.moment = attempt.moment
            append.moment_text = attempt.recorded_at
        if accepted and not self.dense:
            last, first_position = accepted[-1]
            self._written = max(self._written, first_position + len(last.events) - 1)
        if self._observer is not None and accepted:
            self._observer.committed(
                len(accepted), Counter(e.type for append, _ in accepted for e in append.events)
            )

    def _settle(self, attempt: _Attempt) -> bool | None:
        """Whether a batch whose COMMIT went unanswered is in the log: True, False, or
        None when the database could not tell within the bound.

        First make sure the old transaction can no longer commit, then look for the
        batch's first event by position and event id (the whole batch is one
        transaction: one event answers for all of it).
        """
        if attempt.first is None:
            return False  # nothing was inserted: nothing can have landed
        position, event_id = attempt.first
        give_up = time.monotonic() + (self.timeout if self.timeout is not None else 30.0)
        while True:
            try:
                with self._connection():
                    if self._old_transaction_ended(attempt.session):
                        rows = self.db.execute_sql(
                            f"SELECT metadata FROM events WHERE position = {self._param}",
                            (position,),
                        ).fetchall()
                        return bool(rows) and orjson.loads(rows[0][0]).get("event_id") == event_id
            except _DB_ERRORS as exc:
                log.info("settling an unanswered commit: %s", exc)
                self._drop_connection()
            if time.monotonic() + _SETTLE_POLL >= give_up:
                return None
            time.sleep(_SETTLE_POLL)  # the old transaction is still ending: ask again soon

    def _old_transaction_ended(self, session: tuple[Any, ...] | None) -> bool:
        """Whether the transaction that sent the COMMIT can no longer commit; ends it if not."""
        if session is None or self.backend == "sqlite":
            return True  # SQLite: our own connection was closed, which ended it
        transaction, backend_id, started = session
        if self.backend == "postgres":
            rows = self.db.execute_sql(
                "SELECT CAST(pg_postmaster_start_time() AS TEXT), txid_status(%s), "
                "(SELECT state FROM pg_stat_activity WHERE pid = %s)",
                (transaction, backend_id),
            ).fetchall()
            now_started, status, state = rows[0]
            if now_started != started:
                # Another server (a promoted standby) or a restart: the old transaction
                # ended with its server; what it committed is here or nowhere.
                return True
            if status != "in progress":
                return True
            if state is not None and state.startswith("idle in transaction"):
                # Its COMMIT never arrived: end it, so it can never commit later.
                self.db.execute_sql("SELECT pg_terminate_backend(%s)", (backend_id,))
            # Else the COMMIT is being carried out: with a synchronous standby, the commit
            # is on the primary's disk and waits for the standby to confirm it. Ending it
            # then would make it visible here without being on the standby, and answered
            # as committed, a failover would lose it: let it end by itself, within the bound.
            return False
        rows = self.db.execute_sql(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = %s", (backend_id,)
        ).fetchall()
        if not rows[0][0]:
            return True
        with contextlib.suppress(peewee.DatabaseError):  # gone meanwhile
            self.db.execute_sql(f"KILL CONNECTION {int(backend_id)}")
        return False

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Any]:
        """A transaction (a savepoint inside a caller's) and its cursor, with the driver's
        errors raised as peewee's (IntegrityError, OperationalError...), as execute_sql
        does: statements run on the driver's own cursor would raise the driver's.

        The failure that ends a transaction is the one raised. SQLite rolls a
        transaction back by itself when a statement or COMMIT fails for a full disk
        (or an I/O error), and then refuses ROLLBACK ("no transaction is active"):
        peewee's atomic() would raise that instead, hiding the real error.
        """
        if self.db.in_transaction():
            with _DRIVER_ERRORS_AS_PEEWEE, self.db.atomic():
                yield self.db.cursor()
            return
        if self.db.is_closed():  # connect first: connecting resets peewee's transaction stack
            with _DRIVER_ERRORS_AS_PEEWEE:
                self.db.connect()
        with self.db.manual_commit():
            self.db.begin(*self._begin)
            try:
                with _DRIVER_ERRORS_AS_PEEWEE:
                    yield self.db.cursor()
                self.db.commit()
            except BaseException:
                try:
                    self.db.rollback()
                except _DB_ERRORS as exc:
                    log.debug("rollback after a failed transaction: %s", exc)
                raise

    def _insert_sql(self, rows: int) -> str:
        sql = self._inserts.get(rows)
        if sql is None:
            one = "(" + ", ".join([self._param] * len(COLUMNS)) + ")"
            sql = self._inserts[rows] = f"INSERT INTO events ({_COLUMN_LIST}) VALUES " + ", ".join(
                [one] * rows
            )
        return sql

    def _fail_clash(self, append: _Append) -> None:
        append.error = ConcurrencyError(
            append.stream_id, append.expected_version, self.stream_version(append.stream_id)
        )

    def _drop_connection(self) -> None:
        """Close this thread's connection for good, never back to the pool: a transaction
        still open on it must end here (SQLite rolls back on close), never be committed
        by its next user. Not reopened here: the next write connects, within its bound."""
        with contextlib.suppress(*_DB_ERRORS):
            manual_close = getattr(self.db, "manual_close", None)
            if manual_close is not None:
                manual_close()
            else:
                self.db.close()

    def _failure(self, what: str, exc: BaseException) -> StoreUnavailableError:
        """The store's error for a failed write, caused by ``exc``; a full disk is
        StoreFullError, and said once in the log when writes begin to fail for it."""
        code = disk_full_code(exc)
        if code is None:
            error = StoreUnavailableError(f"{what}: {exc}")
        else:
            error = StoreFullError(f"{what}: the database's disk is full ({code}): {exc}")
            self._note_full(code)
        error.__cause__ = exc
        return error

    def _note_full(self, code: str) -> None:
        with self._full_lock:
            if self._full is not None:
                return
            self._full = f"{self._disk()} is full ({code}): appends fail until space is freed"
            log.error("%s; free space on %s", self._full, self._mount())

    def _note_written(self) -> None:
        with self._full_lock:
            if self._full is None:
                return
            self._full = None
            log.warning("%s has room again: appends succeed again", self._disk())

    def _disk(self) -> str:
        if self.backend == "sqlite":
            return f"the disk holding {os.path.abspath(self.db.database)}"
        name = {"postgres": "PostgreSQL", "mysql": "MariaDB/MySQL"}[self.backend]
        host = self.db.connect_params.get("host") or "localhost"
        return f"the disk of the {name} database {self.db.database!r} on {host}"

    def _mount(self) -> str:
        """Where to free space: the mount point holding SQLite's file, or the server."""
        if self.backend != "sqlite":
            return "the database server (its data directory)"
        path = os.path.dirname(os.path.abspath(self.db.database))
        while not os.path.ismount(path):
            path = os.path.dirname(path)
        return path

    # -- reading ---------------------------------------------------------------

    def read_stream(self, stream_id: str, up_to_version: int | None = None) -> list[RecordedEvent]:
        """One stream's events in version order (up to a version, for time travel)."""
        p = self._param
        sql = f"SELECT {_COLUMN_LIST} FROM events WHERE stream_id = {p}"
        params: list[Any] = [stream_id]
        if up_to_version is not None:
            sql += f" AND version <= {p}"
            params.append(up_to_version)
        return [_decode(row) for row in self._query(sql + " ORDER BY version", params)]

    def read_all(self, after: int = 0, limit: int = 100) -> list[RecordedEvent]:
        """Events after ``position`` in position order: one page of the global log."""
        return [_decode(row) for row in self.read_all_raw(after, limit)]

    def read_all_raw(self, after: int = 0, limit: int = 100) -> list[tuple[Any, ...]]:
        """A page of undecoded rows, for readers that decode only what they need."""
        p = self._param
        limit = max(1, min(limit, MAX_PAGE * 100))
        self._own_writes_readable()
        return self._query(
            f"SELECT {_COLUMN_LIST} FROM events WHERE position > {p}{self._below_horizon()} "
            f"ORDER BY position LIMIT {p}",
            [after, limit],
        )

    def iter_all(self, after: int = 0, page: int = 5000) -> Iterator[RecordedEvent]:
        """The whole log after ``after``, read in pages so memory stays constant."""
        for events in self.iter_pages(after, page):
            yield from events

    def iter_pages(self, after: int = 0, page: int = 5000) -> Iterator[list[RecordedEvent]]:
        """The whole log after ``after`` as pages of events, for readers that fold in bulk."""
        while True:
            rows = self.read_all_raw(after, page)
            if rows:
                yield list(map(_decode, rows))
            if len(rows) < page:
                return
            after = rows[-1][0]

    def head(self) -> int:
        """The newest position safe to read: every event up to it is visible, and no
        event at or below it can commit later. On SQLite and MariaDB the log's length."""
        if self.dense:
            return self._query(_LAST_POSITION, [])[0][0]
        self._own_writes_readable()
        return self._safe_head()

    def _safe_head(self) -> int:
        sql = "SELECT COALESCE(MAX(position), 0) FROM events WHERE position > 0"
        head = self._query(sql + self._below_horizon(), [])[0][0]
        self._readable = max(self._readable, head)
        return head

    def _own_writes_readable(self) -> None:
        """Wait (briefly: ``OWN_WRITES_WAIT``) until what this store committed can be read,
        so a process reads its own writes; past that, read what can be read."""
        if self._written > self._readable and not self.wait_readable(
            self._written, OWN_WRITES_WAIT
        ):
            log.debug("own writes up to %d not readable yet: held back", self._written)

    def last_position(self) -> int:
        """The newest position committed, safe to read or not yet: a reader that has
        passed it has seen every write committed before this call (read-your-writes)."""
        return self._query(_LAST_POSITION, [])[0][0]

    def wait_readable(self, position: int, timeout: float) -> bool:
        """Wait until ``position`` (committed) can be read: at once on SQLite and MariaDB,
        on PostgreSQL once every older transaction has ended. False at the timeout."""
        if self.dense:
            return True
        give_up = time.monotonic() + timeout
        pause = 0.001
        while self._safe_head() < position:
            if time.monotonic() + pause > give_up:
                return False
            time.sleep(pause)  # older transactions are still ending: look again soon
            pause = min(pause * 2, 0.05)
        return True

    def count_after(self, position: int, most: int = 1_000_000) -> int:
        """How many events committed after ``position`` (at most ``most``): a reader's lag."""
        p = self._param
        rows = self._query(
            f"SELECT COUNT(*) FROM (SELECT 1 FROM events WHERE position > {p} LIMIT {p}) AS later",
            [position, most],
        )
        return rows[0][0]

    def horizon_age(self) -> float:
        """PostgreSQL: seconds the oldest write transaction in progress on the server has
        run (it holds every reader of the log back); 0 when none, and elsewhere."""
        if self.dense:
            return 0.0
        rows = self._query(_HORIZON_AGE, [])
        return float(rows[0][0] or 0.0) if rows else 0.0

    def stream_version(self, stream_id: str) -> int:
        rows = self._query(
            f"SELECT MAX(version) FROM events WHERE stream_id = {self._param}", [stream_id]
        )
        return rows[0][0] or 0

    # -- projection checkpoints -------------------------------------------------

    def load_projection(
        self, name: str, *, with_state: bool = True
    ) -> tuple[int, int, bytes | None]:
        """The stored (checkpoint, generation, state) of a projection, or (0, 0, None)."""
        columns = "position, generation, state" if with_state else "position, generation, ''"
        rows = self._query(f"SELECT {columns} FROM projections WHERE name = {self._param}", [name])
        if not rows:
            return 0, 0, None
        position, generation, state = rows[0]
        return position, generation, state.encode() if isinstance(state, str) else state

    def save_projection(
        self, name: str, position: int, state: bytes, *, generation: int = 0
    ) -> bool:
        """Store a state with its checkpoint in one statement; never move a checkpoint back,
        never write over another generation (a rebuild's). False when nothing was stored."""
        p = self._param
        text = state.decode()
        try:
            with self.writing() as cursor:
                cursor.execute(
                    f"UPDATE projections SET position = {p}, state = {p} "
                    f"WHERE name = {p} AND position < {p} AND generation = {p}",
                    (position, text, name, position, generation),
                )
                if cursor.rowcount:
                    return True
                cursor.execute(f"SELECT 1 FROM projections WHERE name = {p}", (name,))
                if cursor.fetchone():
                    return False
                cursor.execute(
                    f"INSERT INTO projections (name, position, state, generation) "
                    f"VALUES ({p}, {p}, {p}, {p})",
                    (name, position, text, generation),
                )
                return True
        except StoreUnavailableError as exc:
            if isinstance(exc.__cause__, peewee.IntegrityError) or is_deadlock(exc.__cause__):
                return False  # another node inserted it first (or MariaDB chose us to fail)
            raise

    def replace_projection(self, name: str, position: int, state: bytes) -> int:
        """Store a rebuilt state as a new generation, whatever was there; returns it.

        Running projectors see the new generation, drop what they hold and reload."""
        p = self._param
        with self.writing() as cursor:
            cursor.execute(f"SELECT generation FROM projections WHERE name = {p}", (name,))
            row = cursor.fetchone()
            generation = (row[0] if row else 0) + 1
            cursor.execute(f"DELETE FROM projections WHERE name = {p}", (name,))
            cursor.execute(
                f"INSERT INTO projections (name, position, state, generation) "
                f"VALUES ({p}, {p}, {p}, {p})",
                (name, position, state.decode(), generation),
            )
        return generation

    def reset_projection(self, name: str) -> None:
        with self._connection():
            try:
                self.db.execute_sql(f"DELETE FROM projections WHERE name = {self._param}", (name,))
            except _DB_ERRORS as exc:
                raise StoreUnavailableError(f"cannot reset projection {name!r}: {exc}") from exc

    # -- helpers -----------------------------------------------------------------

    # -- other tables, for the storage modules that keep them (tokens, read_models) -----

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of a query on another table (``store.param`` is the placeholder). Only
        ``orderlog.storage`` writes SQL; everything else calls its named methods."""
        return self._query(sql, params)

    @contextlib.contextmanager
    def writing(self) -> Iterator[Any]:
        """A write transaction on this thread's connection, in turn with the log's writer,
        for a read model that stores its rows and its checkpoint together."""
        try:
            with self._connection(), self._turn(), self._transaction() as cursor:
                yield cursor
        except _DB_ERRORS as exc:
            raise self._failure("write failed", exc) from exc

    @property
    def param(self) -> str:
        return self._param

    @contextlib.contextmanager
    def _turn(self) -> Iterator[None]:
        """This process's turn to write; waited for within the bound (a writer holding
        it is itself bounded, so only a stalled database makes this wait run out)."""
        if not self._write_lock.acquire(timeout=-1 if self.timeout is None else self.timeout):
            raise StoreUnavailableError("another write in this process did not finish in time")
        try:
            yield
        finally:
            self._write_lock.release()

    def _connection(self) -> Any:
        """A connection for this thread: the open one if any, else one from the pool."""
        if not self.db.is_closed():
            return contextlib.nullcontext()
        return self.db.connection_context()

    def _query(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        try:
            with self._connection():
                return list(self.db.execute_sql(sql, params).fetchall())
        except _DB_ERRORS as exc:
            raise StoreUnavailableError(f"read failed: {exc}") from exc


class _RollBack(Exception):
    """Ends a trial write: its transaction is rolled back."""


def disk_full_code(exc: BaseException) -> str | None:
    """The driver's code when ``exc`` says the database's disk is full, else None.

    By code, never by the message where a code exists: SQLite's SQLITE_FULL,
    PostgreSQL's SQLSTATE 53100 (disk_full), MariaDB/MySQL's errors 1021 and 1114,
    and its failed writes whose operating-system error is ENOSPC.
    """
    driver = exc
    # peewee keeps the driver's exception as ``orig`` (a peewee error again when one
    # passed through its wrapper twice).
    while isinstance(getattr(driver, "orig", None), BaseException):
        driver = driver.orig  # type: ignore[attr-defined]
    sqlite_code = getattr(driver, "sqlite_errorcode", None)
    if sqlite_code is not None:
        return "SQLITE_FULL / ENOSPC" if sqlite_code & 0xFF == _SQLITE_FULL else None
    pgcode = getattr(driver, "pgcode", None)
    if pgcode is not None:
        return f"SQLSTATE {pgcode} disk_full" if pgcode == _POSTGRES_DISK_FULL else None
    if type(driver).__module__.startswith("pymysql") and driver.args:
        number = driver.args[0]
        if number in _MYSQL_FULL:
            return f"error {number} {_MYSQL_FULL[number]}"
        if number in _MYSQL_WRITE_ERRORS and _MYSQL_ENOSPC.search(str(driver.args[1:])):
            return f"error {number} with ENOSPC"
    return None


def _decode(row: tuple[Any, ...]) -> RecordedEvent:
    position, stream_id, version, type_name, data, metadata, recorded_at = row
    return RecordedEvent(
        position,
        stream_id,
        version,
        type_name,
        parse_time(recorded_at),
        data,
        metadata,
        recorded_at,
    )


def _backend_of_database(db: peewee.Database) -> str:
    if isinstance(db, peewee.SqliteDatabase):
        return "sqlite"
    if isinstance(db, peewee.PostgresqlDatabase):
        return "postgres"
    if isinstance(db, peewee.MySQLDatabase):
        return "mysql"
    raise ValueError(f"unsupported database {type(db).__name__}")
