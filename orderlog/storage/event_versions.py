"""The versions of each event type written to a log, and the refusal to start on a log
this release cannot read.

The ``event_versions`` table (schema version 8) holds every (type, version) written
to the log: the migration records version 1 for each type the log held before
versions were stored, and every process that opens the store records the versions
it writes (``orderlog.domain.upcasting.CURRENT_VERSIONS``) before it can write one.
A release that finds a version above what it knows for a type refuses to start,
having written nothing: every node of a log is upgraded together, and a node of an
older release never folds an event it cannot read. Start-up reads this small table
and never scans the log.

It imports the standard library, peewee, the domain, and storage's pre-start peek.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import peewee

from orderlog.domain.errors import FutureEventError, StartupError
from orderlog.domain.upcasting import CURRENT_VERSIONS, UPCASTERS, Upcaster, missing_upcasters
from orderlog.storage.peek import peek

TABLE = "event_versions"
# The schema version that adds the table and the events' event_version column.
SCHEMA_VERSION = 8
_HELD = f"SELECT type, version FROM {TABLE} ORDER BY type, version"
_UPGRADE = "upgrade every node together"

Held = list[tuple[str, int]]


def newer_than_known(held: Iterable[tuple[str, int]], known: Mapping[str, int]) -> Held:
    """The (type, version) pairs of ``held`` above what ``known`` has for their type; a
    type not known here passes (readers skip it), as ``upcast`` lets it."""
    return [(name, version) for name, version in held if name in known and version > known[name]]


def refuse_newer(
    held: Iterable[tuple[str, int]], known: Mapping[str, int] = CURRENT_VERSIONS
) -> None:
    """StartupError, in one line, when the log holds a version this release cannot read."""
    newer = newer_than_known(held, known)
    if newer:
        name, version = max(newer)
        raise StartupError(str(FutureEventError(name, version, known[name])), _UPGRADE)


def require_upcasters(
    versions: Mapping[str, int] = CURRENT_VERSIONS,
    upcasters: Mapping[tuple[str, int], Upcaster] = UPCASTERS,
) -> None:
    """StartupError when an upcaster chain has a gap (or a stray step): a release built
    so could not read some stored events, and must not start."""
    missing = missing_upcasters(versions, upcasters)
    if missing:
        raise StartupError(
            f"this release cannot read every stored event version: missing {'; '.join(missing)}",
            "every type needs an upcaster from each version to the next",
        )


def create(db: peewee.Database, collation: str | None) -> None:
    """Schema version 8: each event's version, and the table of those written (its text
    in ``collation``, on MySQL/MariaDB). Every step may be run again."""
    # A nullable column without a default: no stored row is rewritten (NULL reads as
    # version 1), on PostgreSQL and MariaDB it is a change of the catalogue alone, and
    # the triggers against UPDATE and DELETE stay as they are.
    if "event_version" not in {c.name for c in db.get_columns("events")}:
        db.execute_sql("ALTER TABLE events ADD COLUMN event_version INTEGER")
    if not db.table_exists(TABLE):
        exact = f" CHARACTER SET utf8mb4 COLLATE {collation}" if collation else ""
        db.execute_sql(
            f"CREATE TABLE {TABLE} (type VARCHAR(64) NOT NULL, version INTEGER NOT NULL, "
            f"PRIMARY KEY (type, version)){exact}"
        )
    # Every event stored so far was written at version 1. The one scan of the log that
    # versions need: starts read only this table.
    db.execute_sql(
        f"INSERT INTO {TABLE} (type, version) SELECT DISTINCT type, 1 FROM events "
        f"WHERE type NOT IN (SELECT type FROM {TABLE} WHERE version = 1)"
    )


def held(db: peewee.Database) -> Held:
    """Every (type, version) recorded in the table; none before schema version 8."""
    if not db.table_exists(TABLE):
        return []
    return [(name, version) for name, version in db.execute_sql(_HELD).fetchall()]


def record(
    db: peewee.Database, already: Held, versions: Mapping[str, int] = CURRENT_VERSIONS
) -> None:
    """Record the versions this release writes that the table lacks (nothing when it has
    them all, as on every start but the first of a release)."""
    missing = sorted(set(versions.items()) - set(already))
    if missing:
        p = db.param
        db.execute_sql(
            f"INSERT INTO {TABLE} (type, version) VALUES "
            + ", ".join([f"({p}, {p})"] * len(missing)),
            [value for pair in missing for value in pair],
        )


def refuse_before_start(url: str, timeout: float | None = None) -> None:
    """Refuse (StartupError) a log holding a version this release cannot read, found
    before the node takes its id or opens its log: nothing is created, migrated or
    written. No SQLite file, or no table yet (a schema before version 8), holds none."""
    refuse_newer([(name, version) for name, version in peek(url, TABLE, _HELD, timeout)])
