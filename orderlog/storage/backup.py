"""A consistent copy of the whole SQLite database while orderlog runs: ``orderlog backup``.

Copying the file is not a backup: in WAL mode the newest commits live in the
``-wal`` file until a checkpoint, and a copy taken during a write can be torn.
``VACUUM INTO`` copies the database as one read transaction sees it (the log up to
one commit, WAL included) into a new, self-contained file, without stopping the
writer: WAL readers never block it.

This is a database operation, not an event-store one, so it lives beside
``orderlog.storage.database`` and not in the store: it copies the whole database (schema,
triggers and projections included) and never reads events as events. The one
figure taken from the log, the copy's last position, is read through
``EventStore``, which stays the only code that touches the events table.
PostgreSQL and MariaDB bring their own consistent dump tools, which this does not
replace: for them it names the command to use. Standard library and peewee only.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import secrets
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import peewee

from orderlog.config import both_names
from orderlog.domain.errors import BackupError, StoreUnavailableError
from orderlog.storage.database_url import DatabaseURL, parse_url
from orderlog.storage.store import EventStore

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

    Never overwrites: an existing ``target`` is refused. ``target`` appears only once
    the copy is whole and on disk: it is written under a temporary name beside it
    (SQLite does not sync a VACUUM INTO output itself), then linked into place, so a
    backup killed at any moment leaves nothing at ``target``. What killed backups
    left beside it is removed first. Raises BackupError saying what went wrong and
    what to do about it.
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
    if os.path.lexists(out):  # said now, not after a long copy (the link checks it again)
        raise BackupError(f"{out} already exists", NO_OVERWRITE)

    _remove_leftovers(out)
    position = _copy(source, out)
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


def _copy(source: Path, out: Path) -> int:
    """Write the copy under a temporary name, sync it, read its last position, link it
    to ``out``; the copy's last position. The temporary file is gone afterwards, come
    what may (short of a kill: then the next backup removes it)."""
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
            raise BackupError(
                f"{source} holds no orderlog log",
                f"is {both_names('database_url')} the right file?",
            )
        temp, fd = _create_temporary(out, source.stat().st_mode & 0o777)
        try:
            try:
                conn.execute("VACUUM INTO ?", (str(temp),))
                os.fsync(fd)  # the copy on disk before any name points to it
            except (sqlite3.Error, OSError) as exc:
                raise BackupError(
                    f"cannot copy {source} to {out}: {exc}", "check the free space"
                ) from exc
            position = _last_position(temp)
            _link(temp, out)
        finally:
            _remove(temp)  # the temporary name only: a linked copy stays at ``out``
            os.close(fd)  # and with it the lock that said the file was in use
        _sync_directory(out.parent)
        return position
    finally:
        conn.close()


# A temporary copy is named after its target and its writer's pid, hidden beside the target:
# ".<target name>.orderlog-backup-<pid>-<random>.tmp", and SQLite's "-journal" next to it.
TEMPORARY_MARK = ".orderlog-backup-"


def _temporary_name(out: Path) -> re.Pattern[str]:
    prefix = re.escape(f".{out.name}{TEMPORARY_MARK}")
    return re.compile(prefix + r"(?P<pid>[1-9][0-9]*)-[0-9a-f]{8}\.tmp(?P<journal>-journal)?")


def _create_temporary(out: Path, mode: int) -> tuple[Path, int]:
    """A new empty file beside ``out`` with the source's permissions (a copy of the log is
    as private as the log), locked for as long as its descriptor stays open: the lock
    and the pid in its name tell other backups that its writer is alive."""
    temp = out.with_name(f".{out.name}{TEMPORARY_MARK}{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise BackupError(f"cannot create {temp}: {exc.strerror}", "check the permissions") from exc
    try:
        os.fchmod(fd, mode)  # exactly the source's, whatever the umask
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # Still ours? Another backup's clean-up could have taken it for a leftover just
        # before the lock (only if it could not see this process: another pid namespace).
        if os.stat(temp, follow_symlinks=False).st_ino != os.fstat(fd).st_ino:
            raise FileNotFoundError(errno.ENOENT, "removed by another backup")
    except OSError as exc:
        os.close(fd)
        _remove(temp)
        raise BackupError(
            f"cannot prepare {temp}: {exc.strerror}", "check the permissions, then try again"
        ) from exc
    return temp, fd


def _remove_leftovers(out: Path) -> None:
    """Remove the temporary files that backups to ``out`` killed earlier left behind.

    Only files named as this module names them, and only those whose writer is
    certainly gone: its pid is not a live process here, and no one holds the file's
    lock (a writer in another pid namespace still does). Anything else stays.
    """
    pattern = _temporary_name(out)
    try:
        names = os.listdir(out.parent)
    except OSError:
        return  # writing the copy will say what is wrong with the folder
    for name in names:
        match = pattern.fullmatch(name)
        if match is None or _alive(int(match["pid"])):
            continue
        path = out.parent / name
        if match["journal"]:
            # A journal is never locked: its copy's lock says whether it is in use.
            copy = out.parent / name.removesuffix("-journal")
            if not os.path.lexists(copy):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue  # gone already (another backup removed it), or not ours to open
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            # Locked: its writer is alive. (Where flock is emulated by POSIX locks, as on
            # NFS, an exclusive lock on a read-only descriptor fails: leftovers there
            # stay, rather than risk a copy being written.)
            os.close(fd)
            continue
        try:
            _remove(path)
        finally:
            os.close(fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: nothing is sent, only whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, as another user's
    return True


def _remove(temp: Path) -> None:
    """Unlink a temporary copy and whatever journal SQLite left beside it."""
    for path in (temp, temp.with_name(f"{temp.name}-journal")):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _link(temp: Path, out: Path) -> None:
    """Give the finished copy its name, failing if the name is taken: a link never
    replaces a file (a rename would)."""
    try:
        os.link(temp, out, follow_symlinks=False)
    except FileExistsError:
        raise BackupError(f"{out} already exists", NO_OVERWRITE) from None
    except OSError as exc:
        raise BackupError(
            f"cannot link {temp} to {out}: {exc.strerror}",
            "write the backup on a file system with hard links",
        ) from exc


def _sync_directory(folder: Path) -> None:
    """The backup's directory entry on disk, so a backup survives a power loss."""
    with contextlib.suppress(OSError):  # not every platform syncs directories
        fd = os.open(folder, os.O_RDONLY)
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
