"""Who may use a database: one process per node id, and no server during an offline rebuild.

A node holds, from start to stop, a lock named after its node id (a second process
with that id would take the live node's claims as its own) and a share of a
"serving" lock; ``rebuild --offline`` holds the serving lock alone. They are locks
that the operating system or the database server drops when the holding process
dies, even by SIGKILL, never rows or files with a time to live: a restart under the
same id starts at once, and a live process is never taken for a dead one.

- SQLite: ``flock`` on files beside the database, their descriptors kept open:
  ``<db>.node-<id>.lock`` exclusive, ``<db>.serving.lock`` shared by the nodes and
  exclusive for the rebuild. The files stay (removing a lock file races with its
  next user); the database itself is never touched here.
- PostgreSQL: session advisory locks, which are per database: ``pg_try_advisory_lock``
  on a key derived from the node id, ``pg_try_advisory_lock_shared`` on a fixed key.
- MariaDB/MySQL: ``GET_LOCK`` names, which are per server, so they carry the database.
  There is no shared GET_LOCK: each node holds the first free of ``SERVING_SLOTS``
  numbered slot locks, and the rebuild must take every one.

On the server backends the locks live on a connection of their own, outside peewee's
pool (a pool reset would drop them). If that connection drops (the database server
restarted), the locks go with it: ``NodeLock.check``, run by readiness, connects
again and takes them back, or reports them lost. Every wait is bounded: the locks
are tried, never waited for, and connects and statements have timeouts.

It imports the standard library, peewee (for the connection, never its pool),
``orderlog.storage.database`` (with its URLs) and ``orderlog.domain.errors``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import threading
from collections.abc import Iterator
from typing import Any, Protocol

import peewee

from orderlog.domain.errors import StartupError
from orderlog.storage.database import explain_failure, postgres_wait_bound
from orderlog.storage.database_url import DatabaseURL, parse_url

log = logging.getLogger(__name__)

SERVING_SLOTS = 64  # MariaDB/MySQL: at most this many servers on one database
CONNECT_TIMEOUT = 5  # seconds, for the lock connection and each statement on it
_NAMESPACE = "orderlog"
_DB_ERRORS = (peewee.DatabaseError, peewee.InterfaceError)


class _Locks(Protocol):
    """The locks of one backend, on one connection (or set of open files)."""

    def lock_node(self, node: str) -> bool: ...
    def share_serving(self) -> bool: ...
    def own_serving(self) -> bool: ...
    def alive(self) -> bool: ...
    def close(self) -> None: ...


def _digest(text: str) -> str:
    return hashlib.sha256(f"{_NAMESPACE}\0{text}".encode()).hexdigest()


def postgres_key(*parts: str) -> int:
    """A signed 64-bit advisory lock key for ``parts`` in orderlog's namespace."""
    raw = bytes.fromhex(_digest("\0".join(parts))[:16])
    return int.from_bytes(raw, "big", signed=True)


def mysql_lock_name(database: str, node: str) -> str:
    """The GET_LOCK name of ``node`` on ``database`` (54 characters: the limit is 64)."""
    return f"{_NAMESPACE}:node:{_digest(database + chr(0) + node)[:40]}"


def _mysql_serving_names(database: str) -> tuple[str, list[str]]:
    """The offline rebuild's marker and the serving slots' names, for ``database``."""
    tag = _digest(database)[:32]
    return f"{_NAMESPACE}:offline:{tag}", [
        f"{_NAMESPACE}:serve:{tag}:{slot}" for slot in range(SERVING_SLOTS)
    ]


def sqlite_lock_path(database: str, node: str) -> str:
    """The lock file of ``node`` beside the SQLite file ``database``."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", node)
    if safe != node or len(node) > 64:  # keep distinct ids distinct, and names short
        safe = f"{safe[:32]}-{_digest(node)[:16]}"
    return f"{database}.node-{safe}.lock"


class _SqliteLocks:
    def __init__(self, database: str) -> None:
        self._database = database
        self._files: list[int] = []

    def _flock(self, path: str, how: int) -> bool:
        try:
            # Not inherited by child processes (PEP 446): only this process holds it.
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StartupError(
                f"cannot open the SQLite database {self._database}: cannot create its lock "
                f"file {path} ({exc.strerror})",
                "check the path and that its directory is writable",
            ) from exc
        try:
            fcntl.flock(fd, how | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._files.append(fd)
        return True

    def lock_node(self, node: str) -> bool:
        return self._flock(sqlite_lock_path(self._database, node), fcntl.LOCK_EX)

    def share_serving(self) -> bool:
        return self._flock(f"{self._database}.serving.lock", fcntl.LOCK_SH)

    def own_serving(self) -> bool:
        return self._flock(f"{self._database}.serving.lock", fcntl.LOCK_EX)

    def alive(self) -> bool:
        return True  # the process holds the files itself: nothing can drop them

    def close(self) -> None:
        for fd in self._files:
            os.close(fd)  # and with it the lock
        self._files.clear()


class _ServerLocks:
    """What the PostgreSQL and MariaDB locks share: one connection of their own (a
    peewee database without a pool, shared by the threads, which ``NodeLock`` takes
    in turn, and never reconnected behind its back), driver errors as StartupError."""

    def __init__(self, url: str, db: peewee.Database) -> None:
        self._url = url
        self._db = db
        try:
            db.connect()
        except _DB_ERRORS as exc:
            raise explain_failure(exc, url) from exc

    def _one(self, sql: str, *params: Any) -> Any:
        try:
            row = self._db.execute_sql(sql, params).fetchone()
        except _DB_ERRORS as exc:
            raise explain_failure(exc, self._url) from exc
        return row[0] if row else None

    def alive(self) -> bool:
        try:
            return self._one("SELECT 1") == 1
        except StartupError:
            return False

    def close(self) -> None:
        with contextlib.suppress(*_DB_ERRORS):
            self._db.close()  # the session ends, and its locks with it


class _PostgresLocks(_ServerLocks):
    def __init__(self, url: str, target: DatabaseURL) -> None:
        db = peewee.PostgresqlDatabase(
            target.database,
            thread_safe=False,
            autoconnect=False,
            connect_timeout=CONNECT_TIMEOUT,
            application_name="orderlog node lock",
            options=f"-c statement_timeout={CONNECT_TIMEOUT * 1000}",
            # A dead peer is noticed while the connection is idle.
            keepalives=1,
            keepalives_idle=10,
            keepalives_interval=5,
            keepalives_count=3,
            # What the server cannot see (a stalled path) the client bounds itself.
            **postgres_wait_bound(CONNECT_TIMEOUT),
            **target.driver_params(),
        )
        super().__init__(url, db)

    def lock_node(self, node: str) -> bool:
        return bool(self._one("SELECT pg_try_advisory_lock(%s)", postgres_key("node", node)))

    def share_serving(self) -> bool:
        return bool(self._one("SELECT pg_try_advisory_lock_shared(%s)", postgres_key("serving")))

    def own_serving(self) -> bool:
        return bool(self._one("SELECT pg_try_advisory_lock(%s)", postgres_key("serving")))


class _MysqlLocks(_ServerLocks):
    def __init__(self, url: str, target: DatabaseURL) -> None:
        db = peewee.MySQLDatabase(
            target.database,
            thread_safe=False,
            autoconnect=False,
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=CONNECT_TIMEOUT,
            write_timeout=CONNECT_TIMEOUT,
            **target.driver_params(),
        )
        super().__init__(url, db)
        self._database = target.database
        # An idle connection is closed after wait_timeout (8 hours by default), and the
        # locks with it: this one is idle by design. A year is the most the server takes.
        try:
            self._one("SET SESSION wait_timeout = 31536000")
        except StartupError:
            self.close()
            raise

    def _get(self, name: str) -> bool:
        return self._one("SELECT GET_LOCK(%s, 0)", name) == 1

    def lock_node(self, node: str) -> bool:
        return self._get(mysql_lock_name(self._database, node))

    def share_serving(self) -> bool:
        marker, slots = _mysql_serving_names(self._database)
        if any(self._get(slot) for slot in slots):
            return True
        if self._one("SELECT IS_USED_LOCK(%s)", marker) is not None:
            return False  # an offline rebuild holds them
        raise StartupError(
            f"{SERVING_SLOTS} servers already use this database",
            f"on MariaDB/MySQL at most {SERVING_SLOTS} can run at once: stop one first",
        )

    def own_serving(self) -> bool:
        marker, slots = _mysql_serving_names(self._database)
        # Whatever is taken before a refusal is released when the connection closes.
        return self._get(marker) and all(self._get(slot) for slot in slots)


def _open(url: str) -> _Locks:
    """A fresh connection (or none, for SQLite) for the locks; StartupError if it fails."""
    target = parse_url(url)
    if target.backend == "sqlite":
        return _SqliteLocks(target.database)
    if target.backend == "postgres":
        return _PostgresLocks(url, target)
    return _MysqlLocks(url, target)


class NodeLock:
    """What a node holds from start to stop: its node id, and its share of serving."""

    def __init__(self, url: str, node: str) -> None:
        self.url = url
        self.node = node
        self._locks: _Locks | None = None
        self._wanted = False  # between acquire and release
        self._mutex = threading.Lock()

    def acquire(self) -> None:
        """Take the node id and a share of serving, or raise StartupError saying who has them."""
        with self._mutex:
            self._locks = self._take()
            self._wanted = True

    def _take(self) -> _Locks:
        locks = _open(self.url)
        try:
            if not locks.lock_node(self.node):
                raise StartupError(
                    f"node id {self.node!r} is in use by another running process on this database",
                    "choose another --node-id",
                )
            if not locks.share_serving():
                raise StartupError(
                    "an offline rebuild is running on this database",
                    "start the server once it has finished",
                )
        except BaseException:
            locks.close()
            raise
        return locks

    def check(self) -> bool:
        """Whether the locks are held. After their connection dropped (the database
        server restarted) they are taken again here, within the connect timeout."""
        if not self._mutex.acquire(timeout=2 * CONNECT_TIMEOUT):
            return False  # another check is stuck on the database: not known to be held
        try:
            if not self._wanted:
                return False
            if self._locks is not None and self._locks.alive():
                return True
            if self._locks is not None:
                self._locks.close()
                self._locks = None
                log.warning("the connection holding node id %r dropped; taking it again", self.node)
            try:
                self._locks = self._take()
            except StartupError as exc:
                log.error("node id %r is not held: %s", self.node, exc)
                return False
            log.warning("node id %r is held again", self.node)
            return True
        finally:
            self._mutex.release()

    def release(self) -> None:
        """Let the id go (at stop; a dead process's locks go without this)."""
        got = self._mutex.acquire(timeout=2 * CONNECT_TIMEOUT)
        try:
            self._wanted = False
            if self._locks is not None:
                self._locks.close()
                self._locks = None
        finally:
            if got:
                self._mutex.release()


@contextlib.contextmanager
def offline_rebuild_guard(url: str) -> Iterator[None]:
    """Held by ``rebuild --offline``: refuses while any server uses the database, and
    keeps servers from starting until it is left."""
    locks = _open(url)
    try:
        if not locks.own_serving():
            raise StartupError(
                "a server is using this database",
                "stop it, or run `orderlog rebuild` (online)",
            )
        yield
    finally:
        locks.close()
