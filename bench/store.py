"""``orderlog bench store``: appends per second through EventStore.append vs raw inserts.

Each append is one OrderPlaced to a new stream, from 1 and from 8 threads, with
group commit on and off. The baseline writes the same rows (same JSON, same
metadata, same table made by EventStore.create_schema) with the raw driver in
1000-row transactions from one thread: the ceiling for this table on this disk.
Every run gets an empty database so runs do not slow each other down.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from bench.report import ratio, target
from bench.servers import scratch_database
from orderlog.domain.events import OrderPlaced
from orderlog.storage.database import open_database
from orderlog.storage.database_url import backend_of, parse_url
from orderlog.storage.row import COLUMNS, encode, format_time, utc_now
from orderlog.storage.store import EventStore

RAW_TRANSACTION = 1000
METADATA = {"node": "bench"}


def placed(order_id: str) -> OrderPlaced:
    """The event every bench append writes: one OrderPlaced for a new order."""
    return OrderPlaced(order_id, 42, ("sku-1", "sku-2"), str(Decimal("19.99")))


def _appends_per_second(url: str, appends: int, threads: int, group_commit: bool) -> dict[str, Any]:
    """Spread ``appends`` over ``threads`` callers; each waits for its own commit."""
    # The raw baseline commits with synchronous=NORMAL; measure the store at the same level.
    db = open_database(url, synchronous="NORMAL", max_connections=threads + 8)
    store = EventStore(db, group_commit=group_commit).open()
    run = uuid.uuid4().hex[:8]
    per_thread = [appends // threads + (1 if i < appends % threads else 0) for i in range(threads)]
    errors: list[BaseException] = []
    start = threading.Barrier(threads + 1)

    def work(index: int) -> None:
        start.wait()
        try:
            for n in range(per_thread[index]):
                order_id = f"st-{run}-{index}-{n}"
                store.append(
                    order_id,
                    [placed(order_id)],
                    0,
                    {"correlation_id": str(uuid.uuid4()), **METADATA},
                )
        except BaseException as exc:  # handed back to the caller, below
            errors.append(exc)
        finally:
            if not db.is_closed():
                db.close()

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    start.wait()
    began = time.perf_counter()
    for worker in workers:
        worker.join()
    seconds = time.perf_counter() - began
    store.close()
    if errors:
        raise errors[0]
    return {"appends": appends, "seconds": round(seconds, 3), "per_second": appends / seconds}


def _raw_rows(count: int, run: str, first_position: int) -> list[tuple[Any, ...]]:
    """The rows the store would write for ``count`` single-event appends, encoded by the
    store's own encoder: the baseline does the same work per row, minus the store."""
    rows = []
    recorded_at = format_time(utc_now())
    for n in range(count):
        order_id = f"raw-{run}-{first_position + n}"
        (event,) = encode([placed(order_id)], {"correlation_id": str(uuid.uuid4()), **METADATA})
        rows.append(
            (first_position + n, order_id, 1, event.type, event.data_json, event.metadata_json,
             recorded_at, event.event_version)
        )  # fmt: skip
    return rows


def _raw_inserts_per_second(url: str, appends: int) -> dict[str, Any]:
    """The same rows through the bare driver, 1000 per transaction; row building is timed too."""
    schema_db = open_database(url)
    EventStore(schema_db, group_commit=False).create_schema()
    schema_db.close_all()
    connect, param = raw_connection(url)
    conn = connect()
    run = uuid.uuid4().hex[:8]
    placeholders = ", ".join([param] * len(COLUMNS))
    sql = f"INSERT INTO events ({', '.join(COLUMNS)}) VALUES ({placeholders})"
    began = time.perf_counter()
    done = 0
    while done < appends:
        size = min(RAW_TRANSACTION, appends - done)
        rows = _raw_rows(size, run, done + 1)
        cursor = conn.cursor()
        cursor.executemany(sql, rows)
        conn.commit()
        done += size
    seconds = time.perf_counter() - began
    conn.close()
    return {"appends": appends, "seconds": round(seconds, 3), "per_second": appends / seconds}


def raw_connection(url: str, synchronous: str = "NORMAL") -> tuple[Callable[[], Any], str]:
    """A DB-API connection factory for the URL's driver, with the store's SQLite pragmas,
    and its parameter marker."""
    target = parse_url(url)
    if target.backend == "sqlite":
        import sqlite3

        def connect() -> Any:
            conn = sqlite3.connect(target.database, isolation_level="DEFERRED")
            conn.execute("PRAGMA journal_mode=wal")
            conn.execute(f"PRAGMA synchronous={synchronous}")
            conn.execute("PRAGMA cache_size=-32000")
            return conn

        return connect, "?"
    if target.backend == "postgres":
        import psycopg2

        return (lambda: psycopg2.connect(dbname=target.database, **target.driver_params())), "%s"
    import pymysql

    return (lambda: pymysql.connect(database=target.database, **target.driver_params())), "%s"


def run_store(url: str, workdir: Path, appends: int, thread_counts: list[int]) -> dict[str, Any]:
    """All store figures in one run: raw baseline, then each (group commit, threads) pair."""
    results: dict[str, Any] = {"appends": appends, "backend": backend_of(url)}
    with scratch_database(url, workdir, "raw") as raw_url:
        results["raw"] = _raw_inserts_per_second(raw_url, appends)
    raw = results["raw"]["per_second"]
    table: list[tuple[str, Any]] = [
        (f"raw driver, {RAW_TRANSACTION}-row transactions (appends/s)", raw)
    ]
    for group_commit in (True, False):
        mode = "group_commit" if group_commit else "direct"
        for threads in thread_counts:
            with scratch_database(url, workdir, "store") as store_url:
                figures = _appends_per_second(store_url, appends, threads, group_commit)
            figures["ratio_to_raw"] = ratio(figures["per_second"], raw)
            results[f"{mode}_{threads}"] = figures
            label = f"EventStore.append, {mode.replace('_', ' ')}, {threads} thread(s)"
            table.append((f"{label} (appends/s)", figures["per_second"]))
            table.append(("  ratio to raw", figures["ratio_to_raw"]))
    best_threads = max(thread_counts)
    headline = results[f"group_commit_{best_threads}"]["ratio_to_raw"]
    results["table"] = table
    results["targets"] = [
        target(
            f"store {best_threads} threads / raw",
            headline,
            None if headline is None else headline >= 0.30,
            ">= 0.30",
        )
    ]
    return results
