"""A consistent copy of the whole SQLite database while orderlog runs: ``orderlog backup``.

Copying the file is not a backup: in WAL mode the newest commits live in the
``-wal`` file until a checkpoint, and a copy taken during a write can be torn.
``VACUUM INTO`` copies the database as one read transaction sees it (the log up to
one commit, WAL included) into a new, self-contained file, without stopping the
writer: WAL readers never block it.

This is a database operation, not an event-store one, so it lives beside
``orderlog.database`` and not in the store: it copies the whole database (schema,
triggers and projections included) and never reads events as events. The one
figure taken from the log, the copy's last position, is read through
``EventStore``, which stays the only code that touches the events table.
PostgreSQL and MariaDB bring their own consistent dump tools, which this does not
replace: for them it names the command to use. Standard library and peewee only.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import peewee

from orderlog.database import DatabaseURL, parse_url
from orderlog.errors import BackupError, StoreUnavailableError
from orderlog.store import EventStore

NO_OVERWRITE = "a backup never overwrites: choose a new path"
BUSY_TIMEOUT = 30.0  # seconds to wait for a lock, as the server's own connections do


@dataclass(frozen=True)
class Backup:
    """What a backup wrote: a copy of ``source`` at ``target`` holding the log up to
    ``position``."""

    source: Path
    target: Path
    position: int
    size: int  # bytes


def backup(database_url: str, target: str | os.PathLike[str]) -> Backup:
    """Copy the SQLite database at ``database_url`` to the new file ``target``.

    Never overwrites: an existing ``target`` is refused. The copy is synced to disk
    before returning (SQLite does not sync a VACUUM INTO output itself). Raises
    BackupError saying what went wrong and what to do about it.
    """
    database = parse_url(database_url)
    if database.backend != "sqlite":
        raise BackupError("orderlog backup copies SQLite databases only", dump_hint(database))
    source = Path(database.database).absolute()
    out = Path(target).absolute()
    if not source.is_file():
        raise BackupError(
            f"no database at {source}", "pass --database or set ORDERLOG_DATABASE_URL"
        )
    if not out.parent.is_dir():
        raise BackupError(f"no directory {out.parent} to write the backup in", "create it first")

    _copy(source, out)
    position = _last_position(out)
    return Backup(source, out, position, out.stat().st_size)


def dump_hint(database: DatabaseURL) -> str:
    """The server's own consistent dump command for this database (never its password)."""
    if database.backend == "postgres":
        options = [f"--{name}={value}" for name, value in _options(database, "username")]
        command = ["pg_dump", "--format=custom", "--file=orderlog.dump", *options]
        return f"for PostgreSQL use pg_dump: {' '.join([*command, database.database])}"
    options = [f"--{name}={value}" for name, value in _options(database, "user")]
    command = ["mariadb-dump", "--single-transaction", *options, database.database]
    return f"for MariaDB use mariadb-dump: {' '.join(command)} > orderlog.sql"


def _options(database: DatabaseURL, user_option: str) -> list[tuple[str, object]]:
    given = [("host", database.host), ("port", database.port), (user_option, database.user)]
    return [(name, value) for name, value in given if value is not None]


def _copy(source: Path, out: Path) -> None:
    # mode=rw: a missing file is an error, never a new empty database.
    uri = f"file:{quote(str(source))}?mode=rw"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT, isolation_level=None)
    except sqlite3.Error as exc:
        raise BackupError(f"cannot open {source}: {exc}", "check the path and permissions") from exc
    try:
        try:
            tables = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'"
            )
            has_log = tables.fetchone() is not None
        except sqlite3.Error as exc:
            raise BackupError(f"cannot read {source}: {exc}", "is it an SQLite file?") from exc
        if not has_log:
            raise BackupError(f"{source} holds no orderlog log", "is --database the right file?")
        _create_empty(out, source.stat().st_mode & 0o777)
        try:
            conn.execute("VACUUM INTO ?", (str(out),))
            _sync(out)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                out.unlink()  # ours, made empty above: no half-written copy is left behind
            if isinstance(exc, (sqlite3.Error, OSError)):
                raise BackupError(
                    f"cannot copy {source} to {out}: {exc}", "check the free space"
                ) from exc
            raise  # an interrupt, say: still no half-written copy
    finally:
        conn.close()


def _create_empty(out: Path, mode: int) -> None:
    """Create ``out`` empty with the source's permissions (a copy of the log is as private
    as the log), failing if it exists: never overwrite. VACUUM INTO fills an empty file."""
    try:
        os.close(os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode))
    except FileExistsError:
        raise BackupError(f"{out} already exists", NO_OVERWRITE) from None
    except OSError as exc:
        raise BackupError(f"cannot create {out}: {exc.strerror}", "check the permissions") from exc


def _sync(path: Path) -> None:
    """The copy and its directory entry on disk, so a backup survives a power loss."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    with contextlib.suppress(OSError):  # not every platform syncs directories
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _last_position(copy: Path) -> int:
    """The copy's last position, read through the store, opening the copy read-only."""
    db = peewee.SqliteDatabase(f"file:{quote(str(copy))}?mode=ro", uri=True)
    try:
        return EventStore(db, group_commit=False).head()
    except StoreUnavailableError as exc:
        raise BackupError(f"wrote {copy} but cannot read it back: {exc}", "check the copy") from exc
    finally:
        db.close()
