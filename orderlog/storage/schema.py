"""The database schema and its numbered migrations, applied at start under one lock.

The log itself (``events``, append-only by triggers), the lock row appends take
(on PostgreSQL, since version 7, the origin of positions drawn from transaction ids),
the projections' checkpoints, and what later versions added: API tokens, the
order-status read model, and (version 8) each event's version with the versions
written to the log (``orderlog.storage.event_versions``). A database records the
migrations applied to it in ``schema_migrations``; a database from before versions
existed holds the first version's tables and is recorded as version 1. A server
meeting a schema newer than it knows refuses to start rather than guess.

Ids compare byte for byte on every backend. SQLite and PostgreSQL do so by
default; MySQL/MariaDB tables take the server's default collation, usually
case-, accent- and trailing-space-insensitive, so the tables are converted to a
binary collation without padding (version 6), which a table created by a later
migration needs too.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import peewee

from orderlog.domain.errors import SchemaError, StoreUnavailableError
from orderlog.storage import event_versions


class _Base(peewee.Model):
    class Meta:
        legacy_table_names = False


class EventRow(_Base):
    position = peewee.BigIntegerField(primary_key=True)
    stream_id = peewee.CharField(max_length=64)
    version = peewee.IntegerField()
    type = peewee.CharField(max_length=64)
    data = peewee.TextField()
    metadata = peewee.TextField()
    recorded_at = peewee.CharField(max_length=32)

    class Meta:
        table_name = "events"
        indexes = ((("stream_id", "version"), True),)


class AppendLock(_Base):
    """One row, locked by every append until it commits: positions are handed out in turn."""

    id = peewee.IntegerField(primary_key=True)

    class Meta:
        table_name = "append_lock"


class FeedOrigin(_Base):
    """PostgreSQL only: where positions drawn from transaction ids start (see
    ``orderlog.storage.store``). One row; it replaces ``append_lock`` there."""

    id = peewee.IntegerField(primary_key=True)
    base = peewee.BigIntegerField()  # the first position after the log this row found
    tx0 = peewee.BigIntegerField()  # the transaction id that ``base`` stands for
    span = peewee.IntegerField()  # positions per transaction: its events, at most

    class Meta:
        table_name = "feed_origin"


class ProjectionRow(_Base):
    name = peewee.CharField(max_length=64, primary_key=True)
    position = peewee.BigIntegerField()
    state = peewee.TextField()

    class Meta:
        table_name = "projections"


class TokenRow(_Base):
    """An API token: configuration, not history. Never written as events."""

    name = peewee.CharField(max_length=64, primary_key=True)
    secret_sha256 = peewee.CharField(max_length=64, unique=True)
    scopes = peewee.CharField(max_length=255)
    created_at = peewee.CharField(max_length=32)

    class Meta:
        table_name = "tokens"


class OrderStatusRow(_Base):
    """One order as the log last showed it: the order-status read model."""

    order_id = peewee.CharField(max_length=64, primary_key=True)
    user_key = peewee.CharField(max_length=64)  # the user id's text form: 42 and "42" alike
    status = peewee.CharField(max_length=16)
    placed = peewee.TextField()  # the OrderPlaced fields as JSON, for the order view
    # And ``currency`` (ISO 4217), from version 9: added to the tables as they stand,
    # old rows and new tables alike, by ``_order_currency``.
    attempts = peewee.IntegerField()
    node = peewee.CharField(max_length=255, null=True)  # accepting (Pending) or claiming node
    worker_id = peewee.CharField(max_length=255, null=True)
    placed_at = peewee.CharField(max_length=32)
    started_at = peewee.CharField(max_length=32, null=True)
    completed_at = peewee.CharField(max_length=32, null=True)
    version = peewee.IntegerField()
    position = peewee.BigIntegerField()  # of the order's last event
    placed_position = peewee.BigIntegerField(unique=True)  # the listing's order and cursor

    class Meta:
        table_name = "order_status"
        indexes = (
            (("status", "placed_position"), False),
            (("user_key", "placed_position"), False),
        )


class OrderStatusRowB(OrderStatusRow):
    """The order-status rows' second table: a rebuild fills it while the first serves."""

    class Meta:
        table_name = "order_status_b"
        indexes = (
            (("status", "placed_position"), False),
            (("user_key", "placed_position"), False),
        )


class SchemaMigration(_Base):
    version = peewee.IntegerField(primary_key=True)
    description = peewee.CharField(max_length=255)
    applied_at = peewee.CharField(max_length=32)

    class Meta:
        table_name = "schema_migrations"


_APPEND_ONLY = {
    "sqlite": [
        (
            "CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events "
            "BEGIN SELECT RAISE(ABORT, 'events are append-only'); END"
        ),
        (
            "CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events "
            "BEGIN SELECT RAISE(ABORT, 'events are append-only'); END"
        ),
    ],
    "postgres": [
        (
            "CREATE OR REPLACE FUNCTION events_append_only() RETURNS trigger AS $$ "
            "BEGIN RAISE EXCEPTION 'events are append-only'; END $$ LANGUAGE plpgsql"
        ),
        (
            "CREATE OR REPLACE TRIGGER events_no_change BEFORE UPDATE OR DELETE ON events "
            "FOR EACH ROW EXECUTE FUNCTION events_append_only()"
        ),
        (
            "CREATE OR REPLACE TRIGGER events_no_truncate BEFORE TRUNCATE ON events "
            "FOR EACH STATEMENT EXECUTE FUNCTION events_append_only()"
        ),
    ],
    "mysql": [
        (
            "CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events FOR EACH ROW "
            "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'events are append-only'"
        ),
        (
            "CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events FOR EACH ROW "
            "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'events are append-only'"
        ),
    ],
}

# (acquire, release) of a lock held across every node on the same database server.
_NODE_LOCK = {
    "postgres": (
        "SELECT 1 FROM (SELECT pg_advisory_lock(hashtext('orderlog.schema'))) AS locked",
        "SELECT pg_advisory_unlock(hashtext('orderlog.schema'))",
    ),
    "mysql": ("SELECT GET_LOCK('orderlog.schema', 60)", "SELECT RELEASE_LOCK('orderlog.schema')"),
}

_ALL_MODELS = (
    EventRow,
    AppendLock,
    FeedOrigin,
    ProjectionRow,
    TokenRow,
    OrderStatusRow,
    OrderStatusRowB,
    SchemaMigration,
)
# Binding models to a database is process-wide, so schema work is done one at a time.
_PROCESS_LOCK = threading.Lock()
_DB_ERRORS = (peewee.DatabaseError, peewee.InterfaceError)


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    apply: Callable[[peewee.Database, str], None]

    def run(self, db: peewee.Database, backend: str) -> None:
        """Apply this migration alone (``migrate`` records it; this does not)."""
        with _connection(db), db.bind_ctx(_ALL_MODELS):
            self.apply(db, backend)


def _the_log(db: peewee.Database, backend: str) -> None:
    db.create_tables((EventRow, AppendLock, ProjectionRow), safe=True)
    for statement in _APPEND_ONLY[backend]:
        db.execute_sql(statement)
    if not AppendLock.select().where(AppendLock.id == 1).exists():
        AppendLock.insert(id=1).on_conflict_ignore().execute()


def _tokens(db: peewee.Database, backend: str) -> None:
    db.create_tables((TokenRow,), safe=True)


def _order_status(db: peewee.Database, backend: str) -> None:
    db.create_tables((OrderStatusRow,), safe=True)


def _order_status_second_table(db: peewee.Database, backend: str) -> None:
    db.create_tables((OrderStatusRowB,), safe=True)


def _projection_generations(db: peewee.Database, backend: str) -> None:
    # A rebuild stores its state under a new generation; a node holding an older one
    # reloads instead of saving it back over the rebuild.
    columns = {c.name for c in db.get_columns("projections")}
    if "generation" not in columns:
        db.execute_sql("ALTER TABLE projections ADD COLUMN generation INTEGER NOT NULL DEFAULT 0")


# Binary collations that compare every byte, trailing spaces included, best first:
# MariaDB's, then MySQL 8's. utf8mb4_bin, the only one older MySQL has, pads.
_EXACT_COLLATIONS = ("utf8mb4_nopad_bin", "utf8mb4_0900_bin", "utf8mb4_bin")


def _exact_collation(db: peewee.Database) -> str:
    """The MySQL/MariaDB collation this server compares ids with byte for byte."""
    placeholders = ", ".join(["%s"] * len(_EXACT_COLLATIONS))
    found = {
        name
        for (name,) in db.execute_sql(
            "SELECT collation_name FROM information_schema.collations "
            f"WHERE collation_name IN ({placeholders})",
            _EXACT_COLLATIONS,
        ).fetchall()
    }
    return next(name for name in _EXACT_COLLATIONS if name in found)


def _exact_ids(db: peewee.Database, backend: str) -> None:
    # Every text column of every table, not only the ids: a projection's state is
    # compared too (on save), and a column added later takes the table's default.
    # A binary collation only tells apart what was equal, so no unique index can fail.
    if backend != "mysql":
        return
    collation = _exact_collation(db)
    for model in _ALL_MODELS:  # orderlog's tables only: the database may hold others
        if model.table_exists():
            db.execute_sql(
                f"ALTER TABLE {model._meta.table_name} "
                f"CONVERT TO CHARACTER SET utf8mb4 COLLATE {collation}"
            )


# PostgreSQL: positions one transaction may use (its events, at most), and so the step
# between transactions' positions. Decimal, so a position reads as transaction and row;
# small, so positions stay exact in JSON's numbers (below 2**53) for 9 * 10**12
# transactions (28 years at 10,000 a second). Kept in feed_origin with the log it
# numbers, so a later release cannot read the positions with another step.
TRANSACTION_SPAN = 1_000


def _positions_from_transactions(db: peewee.Database, backend: str) -> None:
    # PostgreSQL appends stop taking the lock row: each transaction's positions come
    # from its own transaction id, after every position already in the log. Dropping
    # the lock row (after waiting for whoever holds it) makes a node of an earlier
    # release fail its appends, rather than write positions readers may have passed.
    if backend != "postgres":
        return
    db.execute_sql("SELECT 1 FROM append_lock WHERE id = 1 FOR UPDATE")
    db.create_tables((FeedOrigin,), safe=True)
    db.execute_sql(
        "INSERT INTO feed_origin (id, base, tx0, span) "
        f"SELECT 1, COALESCE(MAX(position), 0) + 1, txid_current(), {TRANSACTION_SPAN} "
        "FROM events ON CONFLICT (id) DO NOTHING"
    )
    db.execute_sql("DROP TABLE append_lock")


def _event_versions(db: peewee.Database, backend: str) -> None:
    # Created after version 6: on MySQL/MariaDB its types compare exactly too.
    event_versions.create(db, _exact_collation(db) if backend == "mysql" else None)


# The currency of every order placed before orders had one (every OrderPlaced of v1):
# the rows already there are those orders. orderlog.domain.upcasting says the same of
# their events.
_ROWS_BEFORE_CURRENCY = "USD"


def _order_currency(db: peewee.Database, backend: str) -> None:
    # Added in place, not refilled: the order-status rows resume from their checkpoint,
    # and every row there is of an order placed before currencies. The DEFAULT fills
    # them; new rows always name theirs. On MySQL/MariaDB the column takes the table's
    # binary collation (version 6).
    for model in (OrderStatusRow, OrderStatusRowB):
        table = model._meta.table_name
        if "currency" not in {c.name for c in db.get_columns(table)}:
            db.execute_sql(
                f"ALTER TABLE {table} ADD COLUMN currency VARCHAR(3) NOT NULL "
                f"DEFAULT '{_ROWS_BEFORE_CURRENCY}'"
            )


MIGRATIONS = (
    Migration(1, "the log: events, append_lock, projections", _the_log),
    Migration(2, "API tokens", _tokens),
    Migration(3, "order-status read model", _order_status),
    Migration(4, "projection generations", _projection_generations),
    Migration(
        5, "order-status second table, for rebuilds while serving", _order_status_second_table
    ),
    Migration(6, "ids compare byte for byte on MySQL/MariaDB", _exact_ids),
    Migration(
        7, "PostgreSQL: positions from transaction ids, no lock", _positions_from_transactions
    ),
    Migration(8, "event versions: of each stored event, and those written", _event_versions),
    Migration(9, "order-status rows name their currency (USD before)", _order_currency),
)
LATEST = MIGRATIONS[-1].version


def migrate(db: peewee.Database, backend: str) -> int:
    """Bring the database to the latest schema, and record the event versions this
    release writes; returns the schema version it was at.

    Idempotent and safe for every node to run at once: they take turns under a
    lock held on the database server (SQLite's write lock serialises DDL already).
    Each migration not recorded yet is applied, in order. Raises SchemaError for a
    schema newer than this code knows, and StartupError for a log holding an event
    version newer than it reads; either before writing anything.
    """
    for attempt in range(3):
        with _PROCESS_LOCK, _connection(db), db.bind_ctx(_ALL_MODELS):
            try:
                with _lock_between_nodes(db, backend):
                    found = _version(db, record=True)
                    if found > LATEST:
                        raise SchemaError(
                            f"the database's schema is version {found}, newer than this "
                            f"orderlog knows ({LATEST})",
                            "upgrade orderlog, or point it at another database",
                        )
                    event_versions.refuse_newer(event_versions.held(db))
                    applied = {
                        v for (v,) in SchemaMigration.select(SchemaMigration.version).tuples()
                    }
                    for migration in MIGRATIONS:
                        if migration.version in applied:
                            continue
                        with db.atomic():
                            migration.apply(db, backend)
                            SchemaMigration.insert(
                                version=migration.version,
                                description=migration.description,
                                applied_at=datetime.now(UTC).isoformat(timespec="seconds"),
                            ).on_conflict_ignore().execute()
                    with db.atomic():
                        event_versions.record(db, event_versions.held(db))
                    return found
            except peewee.IntegrityError:
                # Another node created the same object at the same moment: look again.
                if attempt == 2:
                    raise StoreUnavailableError("cannot create the schema") from None
    raise StoreUnavailableError("cannot create the schema")


def current_version(db: peewee.Database) -> int:
    """The schema version the database is at (0 for one orderlog never used); writes nothing."""
    try:
        with _connection(db), db.bind_ctx(_ALL_MODELS):
            return _version(db, record=False)
    except _DB_ERRORS as exc:
        raise StoreUnavailableError(f"cannot read the schema version: {exc}") from exc


def _version(db: peewee.Database, record: bool) -> int:
    if SchemaMigration.table_exists():
        return SchemaMigration.select(peewee.fn.MAX(SchemaMigration.version)).scalar() or 0
    # Before schema versions existed, the first version's tables were all there was.
    found = 1 if EventRow.table_exists() else 0
    if record:
        db.create_tables((SchemaMigration,), safe=True)
        if found:
            SchemaMigration.insert(
                version=1, description=MIGRATIONS[0].description, applied_at="before versions"
            ).on_conflict_ignore().execute()
    return found


def _connection(db: peewee.Database) -> contextlib.AbstractContextManager[object]:
    return contextlib.nullcontext() if not db.is_closed() else db.connection_context()


@contextlib.contextmanager
def _lock_between_nodes(db: peewee.Database, backend: str) -> Iterator[None]:
    """Hold a server-wide lock while migrating: nodes start one at a time.

    Without it nodes starting together fail: PostgreSQL's CREATE OR REPLACE
    FUNCTION/TRIGGER raise "tuple concurrently updated", and MySQL has no CREATE
    INDEX IF NOT EXISTS, so peewee's check-then-create races. Both locks are per
    session, so a node that dies holding one releases it with its connection.
    """
    statements = _NODE_LOCK.get(backend)
    if statements is None:
        # SQLite: hold the write lock from the start. Reading the version first and
        # upgrading to a write later fails at once (no busy wait) if another process
        # wrote in between.
        with db.atomic("IMMEDIATE"):
            yield
        return
    acquire, release = statements
    if db.execute_sql(acquire).fetchone()[0] != 1:
        raise StoreUnavailableError("timed out waiting for another node to migrate the schema")
    try:
        yield
    finally:
        with contextlib.suppress(*_DB_ERRORS):
            db.execute_sql(release).fetchone()
