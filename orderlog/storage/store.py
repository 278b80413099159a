"""The event store: the only code in the packages that reads or writes the events table.

A stored event is (position, stream_id, version, type, data, metadata, recorded_at,
event_version): the last the version of its type it was written at
(``orderlog.storage.event_versions``).
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

The store is assembled here from its parts, each in its own module: rows
(``row``), each backend's SQL (``dialect``), connections and transactions
(``connection``), PostgreSQL's positions and horizon (``horizon``), reading
(``reader``), the append path (``append``) with its settling (``settle``), and the
full disk (``disk_space``). It imports peewee, the domain and those modules.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

import peewee

from orderlog import deadline
from orderlog.domain.errors import (
    OrderlogError,
    OutcomeUnknownError,
    StoreUnavailableError,
)
from orderlog.domain.events import Event, RecordedEvent
from orderlog.storage import schema
from orderlog.storage.append import Appender, PendingAppend
from orderlog.storage.connection import DB_ERRORS, Connections
from orderlog.storage.database import unbounded
from orderlog.storage.dialect import Dialect, backend_of_database
from orderlog.storage.disk_space import DiskSpace
from orderlog.storage.driver_error import is_deadlock
from orderlog.storage.group_commit import GroupCommitter, Request
from orderlog.storage.horizon import Horizon
from orderlog.storage.observe import StoreObserver
from orderlog.storage.reader import Reader
from orderlog.storage.row import decode, encode, utc_now

# Re-exported: projections.order_status and its tests import them from here.
from orderlog.storage.row import format_time as format_time
from orderlog.storage.row import parse_time as parse_time

VERDICT_GRACE = 0.4


class AppendRequest(NamedTuple):
    """One stream's append, for ``EventStore.append_many``."""

    stream_id: str
    events: Sequence[Event]
    expected_version: int
    metadata: Mapping[str, Any] | None = None


class WriterStats(NamedTuple):
    batches: int
    appends: int
    waiting: int


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
        self.backend = backend_of_database(db)
        self._dialect = Dialect(self.backend, db.param)
        self._connections = Connections(db, self._dialect.begin, timeout)
        self._horizon = Horizon(self._connections, self._dialect)
        self._disk = DiskSpace(self._connections, self._dialect)
        self._reader = Reader(self._connections, self._dialect, self._horizon)
        self._appender = Appender(
            self._connections,
            self._dialect,
            self._horizon,
            self._disk,
            self._reader,
            clock=clock or utc_now,
            observer=observer,
            timeout=timeout,
        )
        self._writer = (
            GroupCommitter(
                self._appender.commit_batch,
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
        connections = self._connections
        try:
            with connections.connection(), unbounded(self.db):
                schema.migrate(self.db, self.backend)
            with connections.connection(), connections.transaction() as cursor:
                if self.backend == "postgres":
                    self._horizon.load(cursor)
                else:
                    cursor.execute("UPDATE append_lock SET id = 1 WHERE id = 1")
        except DB_ERRORS as exc:
            raise StoreUnavailableError(f"cannot create the schema: {exc}") from exc

    @property
    def dense(self) -> bool:
        """Whether positions are 1, 2, 3… without gaps (SQLite, MariaDB/MySQL)."""
        return self._dialect.dense

    def ping(self) -> bool:
        try:
            with self._connections.connection():
                self.db.execute_sql("SELECT 1").fetchone()
            return True
        except DB_ERRORS:
            return False

    def writable(self) -> bool:
        """False while writes fail for a full disk and there is still no room (looked for
        here, as no traffic comes to a node that is not ready)."""
        return self._disk.writable()

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
            PendingAppend(r.stream_id, r.expected_version, encode(r.events, r.metadata))
            for r in requests
        ]
        pending = [a for a in appends if a.events]
        if pending:
            try:
                if self._writer:
                    self._writer.submit(pending, deadline.bound(self._wait))
                else:
                    self._commit_here(pending)
            except OutcomeUnknownError as error:  # each stream is named in its own error
                for append in pending:
                    append.error = append.error or OutcomeUnknownError(append.stream_id, str(error))
            except OrderlogError as error:  # the whole batch failed, or the writer is gone
                for append in pending:
                    append.error = append.error or error
        return [a.error if a.error is not None else a.recorded() for a in appends]

    def _commit_here(self, pending: list[PendingAppend]) -> None:
        """Commit on the caller's thread (a store without a writer)."""
        request = Request(pending)
        opened = self.db.is_closed()
        try:
            self._appender.commit_batch([request])
        finally:
            # Not connection_context(): a failed commit closes the connection
            # for good, and the context would trip on that.
            if opened and not self.db.is_closed():
                self.db.close()
        if request.error is not None:
            raise request.error

    # -- reading ---------------------------------------------------------------

    def read_stream(self, stream_id: str, up_to_version: int | None = None) -> list[RecordedEvent]:
        """One stream's events in version order (up to a version, for time travel)."""
        return self._reader.read_stream(stream_id, up_to_version)

    def read_all(self, after: int = 0, limit: int = 100) -> list[RecordedEvent]:
        """Events after ``position`` in position order: one page of the global log."""
        return [decode(row) for row in self._reader.read_all_raw(after, limit)]

    def read_before_event_versions(self) -> None:
        """Read a log of a schema before version 8 without migrating it (``orderlog log
        check`` before an upgrade): its events all read as version 1."""
        self._reader.before_event_versions()

    def read_all_raw(self, after: int = 0, limit: int = 100) -> list[tuple[Any, ...]]:
        """A page of undecoded rows, for readers that decode only what they need."""
        return self._reader.read_all_raw(after, limit)

    def iter_all(self, after: int = 0, page: int = 5000) -> Iterator[RecordedEvent]:
        """The whole log after ``after``, read in pages so memory stays constant."""
        for events in self._reader.iter_pages(after, page):
            yield from events

    def iter_pages(self, after: int = 0, page: int = 5000) -> Iterator[list[RecordedEvent]]:
        """The whole log after ``after`` as pages of events, for readers that fold in bulk."""
        return self._reader.iter_pages(after, page)

    def head(self) -> int:
        """The newest position safe to read: every event up to it is visible, and no
        event at or below it can commit later. On SQLite and MariaDB the log's length."""
        return self._reader.head()

    def last_position(self) -> int:
        """The newest position committed, safe to read or not yet: a reader that has
        passed it has seen every write committed before this call (read-your-writes)."""
        return self._reader.last_position()

    def wait_readable(self, position: int, timeout: float) -> bool:
        """Wait until ``position`` (committed) can be read: at once on SQLite and MariaDB,
        on PostgreSQL once every older transaction has ended. False at the timeout."""
        return self._horizon.wait_readable(position, timeout)

    def count_after(self, position: int, most: int = 1_000_000) -> int:
        """How many events committed after ``position`` (at most ``most``): a reader's lag."""
        return self._reader.count_after(position, most)

    def horizon_age(self) -> float:
        """PostgreSQL: seconds the oldest write transaction in progress on the server has
        run (it holds every reader of the log back); 0 when none, and elsewhere."""
        return self._horizon.age()

    def stream_version(self, stream_id: str) -> int:
        return self._reader.stream_version(stream_id)

    # -- projection checkpoints -------------------------------------------------

    def load_projection(
        self, name: str, *, with_state: bool = True
    ) -> tuple[int, int, bytes | None]:
        """The stored (checkpoint, generation, state) of a projection, or (0, 0, None)."""
        columns = "position, generation, state" if with_state else "position, generation, ''"
        rows = self.read(f"SELECT {columns} FROM projections WHERE name = {self.param}", [name])
        if not rows:
            return 0, 0, None
        position, generation, state = rows[0]
        return position, generation, state.encode() if isinstance(state, str) else state

    def save_projection(
        self, name: str, position: int, state: bytes, *, generation: int = 0
    ) -> bool:
        """Store a state with its checkpoint in one statement; never move a checkpoint back,
        never write over another generation (a rebuild's). False when nothing was stored."""
        p = self.param
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
        p = self.param
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
        with self._connections.connection():
            try:
                self.db.execute_sql(f"DELETE FROM projections WHERE name = {self.param}", (name,))
            except DB_ERRORS as exc:
                raise StoreUnavailableError(f"cannot reset projection {name!r}: {exc}") from exc

    # -- other tables, for the storage modules that keep them (tokens, read_models) -----

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of a query on another table (``store.param`` is the placeholder). Only
        ``orderlog.storage`` writes SQL; everything else calls its named methods."""
        return self._connections.query(sql, params)

    @contextlib.contextmanager
    def writing(self) -> Iterator[Any]:
        """A write transaction on this thread's connection, in turn with the log's writer,
        for a read model that stores its rows and its checkpoint together."""
        connections = self._connections
        try:
            with connections.connection(), connections.turn(), connections.transaction() as cursor:
                yield cursor
        except DB_ERRORS as exc:
            raise self._disk.failure("write failed", exc) from exc

    @property
    def param(self) -> str:
        return self._dialect.param
