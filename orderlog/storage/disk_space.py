"""A full disk under the store: told apart from other failures, said once, and outlived.

A write that failed for a full disk (by the driver's code: ``driver_error.disk_full_code``)
becomes StoreFullError, and one log line says so when writes start failing for it;
one more says so when appends succeed again, or when ``writable()`` (asked by
readiness) finds room by itself. It imports the domain's errors and the store's
connections and dialect.
"""

from __future__ import annotations

import logging
import os
import threading

import peewee

from orderlog.domain.errors import StoreFullError, StoreUnavailableError
from orderlog.storage.connection import DB_ERRORS, Connections
from orderlog.storage.dialect import Dialect
from orderlog.storage.driver_error import disk_full_code
from orderlog.storage.row import COLUMNS

# The store's lines keep its logger's name, whichever of its modules says them.
log = logging.getLogger("orderlog.storage.store")

# Free space on SQLite's file system that makes a full log writable again: room for
# many batches' WAL frames and the checkpoints that follow, small beside any real disk.
ROOM_TO_RESUME = 1 << 20
# The trial write on PostgreSQL and MariaDB, rolled back: a row as large as a big
# batch's, so a table that cannot grow on a full disk refuses it.
_TRIAL_BYTES = 64 * 1024
# The trial write's row, by column name so a column added to the log is never missed.
_TRIAL_FIELDS = {
    "position": 0,
    "stream_id": "",
    "version": 0,
    "type": "TrialWrite",
    "data": "x" * _TRIAL_BYTES,
    "metadata": "{}",
    "recorded_at": "",
    "event_version": 1,
}
_TRIAL_ROW = tuple(_TRIAL_FIELDS[name] for name in COLUMNS)


class _RollBack(Exception):
    """Ends a trial write: its transaction is rolled back."""


class DiskSpace:
    """Whether the database's disk is full, as the store's writes found it."""

    def __init__(self, connections: Connections, dialect: Dialect) -> None:
        self._connections = connections
        self._dialect = dialect
        self._db: peewee.Database = connections.db
        # The line said when writes began to fail for a full disk; None while they do not.
        self._full: str | None = None
        self._lock = threading.Lock()

    @property
    def full(self) -> bool:
        """Whether writes are failing for a full disk."""
        return self._full is not None

    def failure(self, what: str, exc: BaseException) -> StoreUnavailableError:
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
        with self._lock:
            if self._full is not None:
                return
            self._full = f"{self._disk()} is full ({code}): appends fail until space is freed"
            log.error("%s; free space on %s", self._full, self._mount())

    def written(self) -> None:
        """A write succeeded: if the disk was full, it has room again."""
        with self._lock:
            if self._full is None:
                return
            self._full = None
            log.warning("%s has room again: appends succeed again", self._disk())

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
        self.written()
        return True

    def _has_room(self) -> bool:
        if self._dialect.backend == "sqlite":
            try:
                stat = os.statvfs(os.path.dirname(os.path.abspath(self._db.database)))
            except OSError:
                return False
            return stat.f_bavail * stat.f_frsize >= ROOM_TO_RESUME
        try:
            with self._connections.connection(), self._connections.transaction() as cursor:
                cursor.execute(self._dialect.insert(1), _TRIAL_ROW)
                raise _RollBack
        except _RollBack:
            return True
        except DB_ERRORS:
            return False

    def _disk(self) -> str:
        if self._dialect.backend == "sqlite":
            return f"the disk holding {os.path.abspath(self._db.database)}"
        name = {"postgres": "PostgreSQL", "mysql": "MariaDB/MySQL"}[self._dialect.backend]
        host = self._db.connect_params.get("host") or "localhost"
        return f"the disk of the {name} database {self._db.database!r} on {host}"

    def _mount(self) -> str:
        """Where to free space: the mount point holding SQLite's file, or the server."""
        if self._dialect.backend != "sqlite":
            return "the database server (its data directory)"
        path = os.path.dirname(os.path.abspath(self._db.database))
        while not os.path.ismount(path):
            path = os.path.dirname(path)
        return path
