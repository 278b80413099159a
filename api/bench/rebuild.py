"""``orderlog bench rebuild``: replaying a big log, and reading a small vs a big one.

A log of realistic OrderPlaced/Started/Completed triples is written straight
with sqlite3 into a schema made by EventStore, row for row what EventStore._write
stores. Then, each in its own child process so peak RSS is per side (taken with
os.wait4, the kernel's rusage of that child): projections.rebuild.rebuild() over
it, and a raw sqlite3 scan that orjson-decodes every row's data and metadata.
Finally a server is started on a 1k-event and on the big log, and GET /metrics
and GET /orders/{id} median latencies are compared. SQLite only: the generator
and the baseline are sqlite3. ``python -m api.bench.rebuild SIDE URL`` is the child.
"""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson

from api.bench.placement import Placement
from api.bench.report import median, ratio, target
from api.bench.servers import ROOT, Client, WaitressOptions, start_orderlog
from orderlog.database import open_database
from orderlog.store import _COLUMNS, EventStore, format_time, utc_now

ORDERS_PER_ROUND = 100  # orders placed, then started, then completed, interleaved like a worker
_NODE = "bench-node"


def _sqlite_path(url: str) -> str:
    return url.split("sqlite:///", 1)[1]


def generate_log(url: str, events: int, seed: int = 7) -> dict[str, Any]:
    """Write ``events`` events (whole triples, the last round possibly cut short) fast."""
    began = time.perf_counter()
    schema_db = open_database(url)
    EventStore(schema_db, group_commit=False).create_schema()
    schema_db.close_all()
    conn = sqlite3.connect(_sqlite_path(url), isolation_level=None)
    conn.execute("PRAGMA journal_mode=wal")
    conn.execute("PRAGMA synchronous=OFF")  # generation only: the bench's own scratch file
    rng = random.Random(seed)
    start = utc_now() - timedelta(seconds=events // 100 + 60)
    insert = f"INSERT INTO events ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
    position = 0
    order = 0
    order_ids: list[str] = []
    dumps = orjson.dumps
    conn.execute("BEGIN")
    while position < events:
        rows: list[tuple[Any, ...]] = []
        ids = [f"ord-{order + i:08d}" for i in range(ORDERS_PER_ROUND)]
        order += ORDERS_PER_ROUND
        workers = [f"{_NODE}/gen00001/{rng.randrange(4)}" for _ in ids]
        for step in range(3):
            for order_id, worker in zip(ids, workers, strict=True):
                if position >= events:
                    break
                position += 1
                # Time moves 10 ms per event, so processing times are realistic and varied.
                at = format_time(start + timedelta(microseconds=position * 10_000))
                meta: dict[str, Any] = {"event_id": str(uuid.uuid4())}
                if step == 0:
                    type_name = "OrderPlaced"
                    data: dict[str, Any] = {
                        "order_id": order_id,
                        "user_id": rng.randrange(1, 10_000),
                        "item_ids": [f"sku-{rng.randrange(500)}" for _ in range(rng.randint(1, 4))],
                        "total_amount": f"{rng.randrange(100, 100_000) / 100:.2f}",
                    }
                    meta.update(correlation_id=str(uuid.uuid4()), node=_NODE)
                    order_ids.append(order_id)
                elif step == 1:
                    type_name = "OrderProcessingStarted"
                    data = {"order_id": order_id, "attempt": 1, "worker_id": worker}
                    meta.update(node=_NODE, worker=worker)
                else:
                    type_name = "OrderCompleted"
                    data = {"order_id": order_id, "attempt": 1}
                    meta.update(node=_NODE, worker=worker)
                rows.append(
                    (position, order_id, step + 1, type_name, dumps(data).decode(),
                     dumps(meta).decode(), at)
                )  # fmt: skip
        conn.executemany(insert, rows)
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return {
        "events": position,
        "orders": len(order_ids),
        "seconds": round(time.perf_counter() - began, 2),
        "sample_order_ids": rng.sample(order_ids, min(50, len(order_ids))),
    }


# -- the child processes -------------------------------------------------------------


def _child_rebuild(url: str) -> dict[str, Any]:
    from projections.rebuild import rebuild

    db = open_database(url)
    store = EventStore(db, group_commit=False).open()
    began = time.perf_counter()
    report = rebuild(store)
    seconds = time.perf_counter() - began
    store.close()
    return {"events": report["position"], "seconds": seconds}


def _child_raw(url: str) -> dict[str, Any]:
    """The floor: one cursor over the table in position order, both JSON columns decoded."""
    loads = orjson.loads
    began = time.perf_counter()
    conn = sqlite3.connect(_sqlite_path(url))
    cursor = conn.execute(f"SELECT {_COLUMNS} FROM events ORDER BY position")
    count = 0
    while True:
        rows = cursor.fetchmany(5000)
        if not rows:
            break
        for row in rows:
            loads(row[4])
            loads(row[5])
        count += len(rows)
    conn.close()
    return {"events": count, "seconds": time.perf_counter() - began}


def run_child(side: str, url: str, placement: Placement, workdir: Path) -> dict[str, Any]:
    """One side in a fresh interpreter, pinned like the server; its own peak RSS via wait4."""
    with tempfile.NamedTemporaryFile("w+b", dir=workdir, suffix=".json") as out:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        process = subprocess.Popen(
            [sys.executable, "-m", "api.bench.rebuild", side, url],
            stdout=out,
            env=env,
            preexec_fn=placement.server_preexec(),
        )
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            raise RuntimeError(f"the {side} child failed with exit code {process.returncode}")
        out.seek(0)
        figures = orjson.loads(out.read())
    figures["per_second"] = figures["events"] / figures["seconds"] if figures["seconds"] else None
    figures["peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)  # Linux reports KiB
    figures["seconds"] = round(figures["seconds"], 3)
    return figures


# -- read latency on a small and a big log ------------------------------------------------


def read_latency(
    url: str,
    order_ids: list[str],
    workdir: Path,
    placement: Placement,
    options: WaitressOptions,
    samples: int,
) -> dict[str, Any]:
    """Start a server on the log; first and median latency of /metrics and /orders/{id}."""
    began = time.perf_counter()
    server = start_orderlog(url, workdir, placement, options)
    startup = time.perf_counter() - began
    client = Client(server.host, server.port)
    try:
        status, _, metrics_first = client.get("/metrics")
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}")
        metrics = [client.get("/metrics")[2] for _ in range(samples)]
        orders = []
        for n in range(samples):
            status, _, seconds = client.get(f"/orders/{order_ids[n % len(order_ids)]}")
            if status != 200:
                raise RuntimeError(f"/orders answered {status}")
            orders.append(seconds)
    finally:
        client.close()
        server.stop()
    return {
        "server_start_seconds": round(startup, 2),
        "metrics_first_ms": round(metrics_first * 1000, 2),
        "metrics_median_ms": round((median(metrics) or 0) * 1000, 3),
        "order_median_ms": round((median(orders) or 0) * 1000, 3),
    }


def run_rebuild(
    workdir: Path,
    placement: Placement,
    options: WaitressOptions,
    events: int,
    small_events: int,
    samples: int,
) -> dict[str, Any]:
    big_url = f"sqlite:///{workdir / f'rebuild-{uuid.uuid4().hex[:8]}.db'}"
    small_url = f"sqlite:///{workdir / f'small-{uuid.uuid4().hex[:8]}.db'}"
    generated = generate_log(big_url, events)
    small = generate_log(small_url, small_events)
    results: dict[str, Any] = {
        "events": generated["events"],
        "generate_seconds": generated["seconds"],
    }
    results["raw"] = run_child("raw", big_url, placement, workdir)
    results["rebuild"] = run_child("rebuild", big_url, placement, workdir)
    run_child("rebuild", small_url, placement, workdir)  # both logs start with a saved projection
    results["ratio"] = ratio(results["rebuild"]["per_second"], results["raw"]["per_second"])
    results["small"] = read_latency(
        small_url, small["sample_order_ids"], workdir, placement, options, samples
    )
    results["small"]["events"] = small["events"]
    results["big"] = read_latency(
        big_url, generated["sample_order_ids"], workdir, placement, options, samples
    )
    results["big"]["events"] = generated["events"]
    results["metrics_ratio"] = ratio(
        results["big"]["metrics_median_ms"], results["small"]["metrics_median_ms"]
    )
    results["order_ratio"] = ratio(
        results["big"]["order_median_ms"], results["small"]["order_median_ms"]
    )
    for path in workdir.glob("*.db*"):
        path.unlink()
    n_big, n_small = f"{generated['events']:,}", f"{small['events']:,}"
    rss = results["rebuild"]["peak_rss_mb"]
    results["table"] = [
        ("generated log (events, in s)", f"{n_big} in {generated['seconds']} s"),
        ("raw sqlite3 scan + orjson decode (events/s)", results["raw"]["per_second"]),
        ("raw peak RSS (MB)", results["raw"]["peak_rss_mb"]),
        ("projections.rebuild.rebuild (events/s)", results["rebuild"]["per_second"]),
        ("rebuild peak RSS (MB)", rss),
        ("rebuild / raw", results["ratio"]),
        (f"server start at {n_small} / {n_big} events (s)",
         f"{results['small']['server_start_seconds']} / {results['big']['server_start_seconds']}"),
        (f"GET /metrics first call at {n_small} / {n_big} (ms)",
         f"{results['small']['metrics_first_ms']} / {results['big']['metrics_first_ms']}"),
        (f"GET /metrics median at {n_small} / {n_big} (ms)",
         f"{results['small']['metrics_median_ms']} / {results['big']['metrics_median_ms']}"),
        (f"GET /orders/{{id}} median at {n_small} / {n_big} (ms)",
         f"{results['small']['order_median_ms']} / {results['big']['order_median_ms']}"),
    ]  # fmt: skip
    results["targets"] = [
        target("rebuild / raw", results["ratio"], _at_least(results["ratio"], 0.5), ">= 0.50"),
        target("rebuild peak RSS (MB)", rss, rss <= 150, "<= 150"),
        target(
            "/metrics big / small",
            results["metrics_ratio"],
            _at_most(results["metrics_ratio"], 2.0),
            "<= 2.0",
        ),
        target(
            "/orders/{id} big / small",
            results["order_ratio"],
            _at_most(results["order_ratio"], 2.0),
            "<= 2.0",
        ),
    ]
    return results


def _at_least(value: float | None, floor: float) -> bool | None:
    return None if value is None else value >= floor


def _at_most(value: float | None, ceiling: float) -> bool | None:
    return None if value is None else value <= ceiling


def main(argv: list[str] | None = None) -> int:
    side, url = (argv if argv is not None else sys.argv[1:])[:2]
    figures = _child_rebuild(url) if side == "rebuild" else _child_raw(url)
    sys.stdout.buffer.write(orjson.dumps(figures))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
