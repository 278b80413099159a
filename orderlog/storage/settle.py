"""Settling an append whose COMMIT went unanswered: did it land or not?

First the old transaction is made unable to commit (PostgreSQL: its transaction id is
no longer in progress, its backend terminated if the COMMIT never reached it, never
while the COMMIT is carried out; MariaDB: its connection killed and gone; SQLite: our
own connection closed). Then the batch's first event is looked up by its position and
event id: the whole batch is one transaction, so one event answers for all of it.
It imports peewee, orjson and the store's connections.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

import orjson
import peewee

from orderlog.storage.connection import DB_ERRORS, Connections

# The store's lines keep its logger's name, whichever of its modules says them.
log = logging.getLogger("orderlog.storage.store")

# How often a settling append asks again whether the old transaction has ended.
_SETTLE_POLL = 0.05


def settle(
    connections: Connections,
    backend: str,
    session: tuple[Any, ...] | None,
    first: tuple[int, str] | None,
    timeout: float | None,
) -> bool | None:
    """Whether a batch whose COMMIT went unanswered is in the log: True, False, or
    None when the database could not tell within ``timeout`` (None: 30 seconds).

    ``session`` names the transaction that sent the COMMIT (transaction, session,
    server start); ``first`` is the batch's first event (position, event id).
    """
    if first is None:
        return False  # nothing was inserted: nothing can have landed
    position, event_id = first
    db = connections.db
    give_up = time.monotonic() + (timeout if timeout is not None else 30.0)
    while True:
        try:
            with connections.connection():
                if _old_transaction_ended(db, backend, session):
                    rows = db.execute_sql(
                        f"SELECT metadata FROM events WHERE position = {db.param}", (position,)
                    ).fetchall()
                    return bool(rows) and orjson.loads(rows[0][0]).get("event_id") == event_id
        except DB_ERRORS as exc:
            log.info("settling an unanswered commit: %s", exc)
            connections.drop()
        if time.monotonic() + _SETTLE_POLL >= give_up:
            return None
        time.sleep(_SETTLE_POLL)  # the old transaction is still ending: ask again soon


def _old_transaction_ended(
    db: peewee.Database, backend: str, session: tuple[Any, ...] | None
) -> bool:
    """Whether the transaction that sent the COMMIT can no longer commit; ends it if not."""
    if session is None or backend == "sqlite":
        return True  # SQLite: our own connection was closed, which ended it
    transaction, backend_id, started = session
    if backend == "postgres":
        return _postgres_transaction_ended(db, transaction, backend_id, started)
    rows = db.execute_sql(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = %s", (backend_id,)
    ).fetchall()
    if not rows[0][0]:
        return True
    with contextlib.suppress(peewee.DatabaseError):  # gone meanwhile
        db.execute_sql(f"KILL CONNECTION {int(backend_id)}")
    return False


def _postgres_transaction_ended(
    db: peewee.Database, transaction: int, backend_id: int, started: str
) -> bool:
    rows = db.execute_sql(
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
        db.execute_sql("SELECT pg_terminate_backend(%s)", (backend_id,))
    # Else the COMMIT is being carried out: with a synchronous standby, the commit
    # is on the primary's disk and waits for the standby to confirm it. Ending it
    # then would make it visible here without being on the standby, and answered
    # as committed, a failover would lose it: let it end by itself, within the bound.
    return False
