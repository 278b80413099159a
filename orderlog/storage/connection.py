"""The store's way to its database: this thread's connection, a transaction on it, a
query, and this process's turn to write.

Driver errors are raised as peewee's (IntegrityError, OperationalError...) whichever
cursor ran the statement; a failed read becomes StoreUnavailableError here. It imports
peewee, playhouse's pool error and the domain's errors.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import peewee
from playhouse.pool import MaxConnectionsExceeded

from orderlog.domain.errors import StoreUnavailableError

# The store's lines keep its logger's name, whichever of its modules says them.
log = logging.getLogger("orderlog.storage.store")

# Statements run on the driver's own cursor raise the driver's errors; this turns
# them into peewee's (IntegrityError, OperationalError...), as execute_sql does.
DRIVER_ERRORS_AS_PEEWEE = peewee.__exception_wrapper__
# A pool that stays exhausted past its timeout is the database being unavailable too.
DB_ERRORS = (peewee.DatabaseError, peewee.InterfaceError, MaxConnectionsExceeded)


class Connections:
    """One database's connections, one per thread, as the store uses them."""

    def __init__(self, db: peewee.Database, begin: tuple[str, ...], timeout: float | None) -> None:
        self.db = db
        self._begin = begin  # what BEGIN takes (SQLite: IMMEDIATE)
        self._timeout = timeout
        # Writers in this process take turns here rather than in SQLite's busy handler,
        # which sleeps between tries.
        self._write_lock = threading.Lock()

    def connection(self) -> Any:
        """A connection for this thread: the open one if any, else one from the pool."""
        if not self.db.is_closed():
            return contextlib.nullcontext()
        return self.db.connection_context()

    def query(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Every row of a read; StoreUnavailableError when it fails."""
        try:
            with self.connection():
                return list(self.db.execute_sql(sql, params).fetchall())
        except DB_ERRORS as exc:
            raise StoreUnavailableError(f"read failed: {exc}") from exc

    @contextlib.contextmanager
    def turn(self) -> Iterator[None]:
        """This process's turn to write; waited for within the bound (a writer holding
        it is itself bounded, so only a stalled database makes this wait run out)."""
        if not self._write_lock.acquire(timeout=-1 if self._timeout is None else self._timeout):
            raise StoreUnavailableError("another write in this process did not finish in time")
        try:
            yield
        finally:
            self._write_lock.release()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        """A transaction (a savepoint inside a caller's) and its cursor, with the driver's
        errors raised as peewee's (IntegrityError, OperationalError...), as execute_sql
        does: statements run on the driver's own cursor would raise the driver's.

        The failure that ends a transaction is the one raised. SQLite rolls a
        transaction back by itself when a statement or COMMIT fails for a full disk
        (or an I/O error), and then refuses ROLLBACK ("no transaction is active"):
        peewee's atomic() would raise that instead, hiding the real error.
        """
        if self.db.in_transaction():
            with DRIVER_ERRORS_AS_PEEWEE, self.db.atomic():
                yield self.db.cursor()
            return
        if self.db.is_closed():  # connect first: connecting resets peewee's transaction stack
            with DRIVER_ERRORS_AS_PEEWEE:
                self.db.connect()
        with self.db.manual_commit():
            self.db.begin(*self._begin)
            try:
                with DRIVER_ERRORS_AS_PEEWEE:
                    yield self.db.cursor()
                self.db.commit()
            except BaseException:
                try:
                    self.db.rollback()
                except DB_ERRORS as exc:
                    log.debug("rollback after a failed transaction: %s", exc)
                raise

    def drop(self) -> None:
        """Close this thread's connection for good, never back to the pool: a transaction
        still open on it must end here (SQLite rolls back on close), never be committed
        by its next user. Not reopened here: the next write connects, within its bound."""
        with contextlib.suppress(*DB_ERRORS):
            manual_close = getattr(self.db, "manual_close", None)
            if manual_close is not None:
                manual_close()
            else:
                self.db.close()
