"""PostgreSQL's positions: where a transaction's come from, and which are safe to read.

A transaction's positions are ``base + (xid - tx0) * span + i``, with base, tx0 and
the span kept in ``feed_origin``; readers read only below the horizon, the positions
of transactions older than the oldest still in progress (the store's docstring says
why nothing can commit there later). On SQLite and MariaDB/MySQL positions are dense
and every committed one is readable at once: there the answers here ask nothing.
It imports the domain's errors and the store's connections and dialect.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from orderlog.domain.errors import StoreUnavailableError
from orderlog.storage.connection import Connections
from orderlog.storage.dialect import HORIZON_AGE, Dialect

# The store's lines keep its logger's name, whichever of its modules says them.
log = logging.getLogger("orderlog.storage.store")

# How long a read waits for this store's own latest write to become readable.
OWN_WRITES_WAIT = 1.0


class Horizon:
    """The origin of PostgreSQL's positions, the horizon below which they are safe to
    read, and this store's own writes, which it waits for (a process reads its own)."""

    def __init__(self, connections: Connections, dialect: Dialect) -> None:
        self._connections = connections
        self._dense = dialect.dense
        # (base, tx0, span) from feed_origin, read at open; positions below ``_below``
        # (SQL) are safe to read.
        self._origin: tuple[int, int, int] | None = None
        self._below = ""
        # The newest position this store committed, and the newest known readable.
        self._written = 0
        self._readable = 0

    def load(self, cursor: Any) -> None:
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

    def origin(self) -> tuple[int, int, int]:
        """(base, tx0, span); read for a store used without ``open()`` (a command, a backup)."""
        if self._origin is not None:
            return self._origin
        rows = self._connections.query("SELECT base, tx0, span FROM feed_origin WHERE id = 1", [])
        if not rows:
            raise StoreUnavailableError("the log's schema is not there yet: open the store first")
        self._set_origin(*rows[0])
        assert self._origin is not None
        return self._origin

    def _set_origin(self, base: int, tx0: int, span: int) -> None:
        self._origin = (base, tx0, span)
        self._below = f"{base} + (txid_snapshot_xmin(txid_current_snapshot()) - {tx0}) * {span}"

    def condition(self) -> str:
        """The condition for positions safe to read (every transaction below has ended)."""
        if self._dense:
            return ""
        if not self._below:
            self.origin()
        return f" AND position < {self._below}"

    def safe_head(self) -> int:
        """The newest position below the horizon."""
        sql = "SELECT COALESCE(MAX(position), 0) FROM events WHERE position > 0"
        head = self._connections.query(sql + self.condition(), [])[0][0]
        self._readable = max(self._readable, head)
        return head

    def wrote(self, last_position: int) -> None:
        """This store committed up to ``last_position``."""
        self._written = max(self._written, last_position)

    def own_writes_readable(self) -> None:
        """Wait (briefly: ``OWN_WRITES_WAIT``) until what this store committed can be read,
        so a process reads its own writes; past that, read what can be read."""
        if self._written > self._readable and not self.wait_readable(
            self._written, OWN_WRITES_WAIT
        ):
            log.debug("own writes up to %d not readable yet: held back", self._written)

    def wait_readable(self, position: int, timeout: float) -> bool:
        """Wait until ``position`` (committed) can be read: at once on SQLite and MariaDB,
        on PostgreSQL once every older transaction has ended. False at the timeout."""
        if self._dense:
            return True
        give_up = time.monotonic() + timeout
        pause = 0.001
        while self.safe_head() < position:
            if time.monotonic() + pause > give_up:
                return False
            time.sleep(pause)  # older transactions are still ending: look again soon
            pause = min(pause * 2, 0.05)
        return True

    def age(self) -> float:
        """PostgreSQL: seconds the oldest write transaction in progress on the server has
        run (it holds every reader of the log back); 0 when none, and elsewhere."""
        if self._dense:
            return 0.0
        rows = self._connections.query(HORIZON_AGE, [])
        return float(rows[0][0] or 0.0) if rows else 0.0
