"""``python -m bench rebuild``: replaying a big log, and reading a small vs a big one.

A log of realistic OrderPlaced/Started/Completed triples is written through
EventStore.append_many, as the worker writes them (placements, claims and
completions of different orders in one commit), on a clock that moves a few
milliseconds per commit. Then, each in its own child process so peak RSS is per
side (the child's own high-water mark, VmHWM, which unlike the rusage of a
forked child does not count the parent's memory before exec):
projections.rebuild.rebuild() over it, and a raw sqlite3 scan that
orjson-decodes every row's data and metadata. Finally a server is started on a
1k-event and on the big log, and GET /metrics and GET /orders/{id} median
latencies are compared. SQLite only: the baseline is sqlite3.
``python -m bench.rebuild SIDE URL`` is the child.
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
from collections.abc import Callable, Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson

from bench.placement import Placement
from bench.report import latency_summary, median, ratio, target
from bench.servers import ROOT, Client, start_orderlog
from orderlog.domain.events import OrderCompleted, OrderPlaced, OrderProcessingStarted
from orderlog.storage.database import open_database
from orderlog.storage.database_url import parse_url
from orderlog.storage.row import COLUMNS, utc_now
from orderlog.storage.store import AppendRequest, EventStore

ORDERS_PER_ROUND = 100  # orders placed per commit, as a busy worker's batches hold them
_NODE = "bench-node"


class _Clock:
    """The store's clock for a generated log: a few milliseconds later at every commit."""

    def __init__(self, start: Any, rng: random.Random) -> None:
        self.now = start
        self._rng = rng

    def __call__(self) -> Any:
        self.now += timedelta(microseconds=self._rng.randrange(2_000, 40_000))
        return self.now


def generate_log(url: str, events: int, seed: int = 7) -> dict[str, Any]:
    """Write ``events`` events (whole triples, the last round possibly cut short)."""
    began = time.perf_counter()
    rng = random.Random(seed)
    clock = _Clock(utc_now() - timedelta(seconds=events // 10 + 60), rng)
    # synchronous=OFF: generation only, into the bench's own scratch file.
    store = EventStore(open_database(url, synchronous="OFF"), group_commit=False, clock=clock)
    store.open()
    worker = f"{_NODE}/gen00001/0"
    meta = {"node": _NODE, "worker": worker}
    written = 0
    order_ids: list[str] = []
    placed: list[str] = []  # placed in the last round: claimed in this one
    started: list[str] = []  # claimed in the last round: completed in this one
    try:
        while written < events or placed or started:
            requests = []
            for order_id in started:
                requests.append(AppendRequest(order_id, [OrderCompleted(order_id, 1)], 2, meta))
            for order_id in placed:
                claim = OrderProcessingStarted(order_id, 1, worker)
                requests.append(AppendRequest(order_id, [claim], 1, meta))
            started, placed = placed, []
            # Each new order costs 3 events; the last 1 or 2 events are orders left Pending.
            room = events - written - len(requests) - len(started)
            new = min(ORDERS_PER_ROUND, room // 3) or (room if not started else 0)
            for _ in range(new):
                order_id = f"ord-{len(order_ids):08d}"
                order_ids.append(order_id)
                if room >= 3:
                    placed.append(order_id)
                order = OrderPlaced(
                    order_id,
                    rng.randrange(1, 10_000),
                    tuple(f"sku-{rng.randrange(500)}" for _ in range(rng.randint(1, 4))),
                    f"{rng.randrange(100, 100_000) / 100:.2f}",
                )
                context = {"correlation_id": str(uuid.uuid4()), "node": _NODE}
                requests.append(AppendRequest(order_id, [order], 0, context))
            for outcome in store.append_many(requests):
                if isinstance(outcome, Exception):
                    raise outcome
            written += len(requests)
        with store.db.connection_context():
            store.db.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        store.close()
    return {
        "events": written,
        "orders": len(order_ids),
        "seconds": round(time.perf_counter() - began, 2),
        "sample_order_ids": rng.sample(order_ids, min(50, len(order_ids))),
    }


# -- the child processes -------------------------------------------------------------


def _child_rebuild(url: str) -> dict[str, Any]:
    """The metrics replay (timed on its own: the figure compared with the raw scan), then
    the order-status read model, which writes a row per order."""
    from projections.rebuild import rebuild, rebuild_order_status

    db = open_database(url)
    store = EventStore(db, group_commit=False).open()
    began = time.perf_counter()
    report = rebuild(store)
    seconds = time.perf_counter() - began
    began = time.perf_counter()
    rebuild_order_status(store)
    status_seconds = time.perf_counter() - began
    store.close()
    return {
        "events": report["position"],
        "seconds": seconds,
        "order_status_seconds": round(status_seconds, 3),
    }


def _child_raw(url: str) -> dict[str, Any]:
    """The floor: one cursor over the table in position order, both JSON columns decoded."""
    loads = orjson.loads
    began = time.perf_counter()
    conn = sqlite3.connect(parse_url(url).database)
    cursor = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM events ORDER BY position")
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
    """One side in a fresh interpreter, placed like the server; it reports its own peak RSS."""
    with tempfile.NamedTemporaryFile("w+b", dir=workdir, suffix=".json") as out:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.rebuild", side, url],
            stdout=out,
            env=env,
            preexec_fn=placement.server_preexec(),
        )
        _, status, _ = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            raise RuntimeError(f"the {side} child failed with exit code {process.returncode}")
        out.seek(0)
        figures = orjson.loads(out.read())
    figures["per_second"] = figures["events"] / figures["seconds"] if figures["seconds"] else None
    figures["seconds"] = round(figures["seconds"], 3)
    return figures


# -- read latency on a small and a big log ------------------------------------------------


def read_latency(
    url: str,
    order_ids: list[str],
    workdir: Path,
    placement: Placement,
    samples: int,
    online_rebuild: bool = False,
) -> dict[str, Any]:
    """Start a server on the log; first and median latency of /metrics, /orders/{id} and the
    listing; with ``online_rebuild``, also requests during an ``orderlog rebuild``."""
    began = time.perf_counter()
    server = start_orderlog(url, workdir, placement)
    startup = time.perf_counter() - began
    client = Client(server.host, server.port)
    try:
        status, _, metrics_first = client.get("/metrics")
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}")
        metrics = [client.get("/metrics")[2] for _ in range(samples)]
        orders = _timed(
            client, [f"/orders/{order_ids[n % len(order_ids)]}" for n in range(samples)]
        )
        lists = ["/orders?status=Completed&limit=100", "/orders?user_id=42&limit=100"]
        listing = _timed(client, [lists[n % 2] for n in range(samples)])
        during = rebuild_while_serving(client, url, order_ids, workdir) if online_rebuild else None
    finally:
        client.close()
        server.stop()
    return {
        "server_start_seconds": round(startup, 2),
        "metrics_first_ms": round(metrics_first * 1000, 2),
        "metrics_median_ms": round((median(metrics) or 0) * 1000, 3),
        "order_median_ms": round((median(orders) or 0) * 1000, 3),
        "listing_median_ms": round((median(listing) or 0) * 1000, 3),
        **({"online_rebuild": during} if during else {}),
    }


def _timed(client: Client, paths: Iterable[str]) -> list[float]:
    seconds = []
    for path in paths:
        status, _, took = client.get(path)
        if status != 200:
            raise RuntimeError(f"{path} answered {status}")
        seconds.append(took)
    return seconds


def rebuild_while_serving(
    client: Client, url: str, order_ids: list[str], workdir: Path
) -> dict[str, Any]:
    """Reads for a while, then the same reads while ``orderlog rebuild`` runs beside the
    server: errors and p99 latency, before and during."""
    paths = [
        "/metrics",
        f"/orders/{order_ids[0]}",
        "/orders?status=Completed&limit=100",
    ]

    def sample(until: Callable[[int], bool]) -> tuple[list[float], int]:
        latencies, errors, n = [], 0, 0
        while not until(n):
            try:
                status, _, took = client.get(paths[n % len(paths)])
                latencies.append(took)
                errors += status != 200
            except OSError:
                errors += 1
            n += 1
        return latencies, errors

    before, before_errors = sample(lambda n: n >= 600)
    rebuild = subprocess.Popen(
        [sys.executable, "-m", "api", "rebuild", "--quiet", "--database", url],
        cwd=str(workdir), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    began = time.perf_counter()
    during, during_errors = sample(lambda n: rebuild.poll() is not None)
    seconds = time.perf_counter() - began
    if rebuild.wait() != 0:
        said = rebuild.stderr.read() if rebuild.stderr else b""
        raise RuntimeError(f"orderlog rebuild failed: {said!r}")
    return {
        "rebuild_seconds": round(seconds, 2),
        "before": {"requests": len(before), "errors": before_errors, **latency_summary(before)},
        "during": {"requests": len(during), "errors": during_errors, **latency_summary(during)},
    }


def run_rebuild(
    workdir: Path,
    placement: Placement,
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
        small_url, small["sample_order_ids"], workdir, placement, samples
    )
    results["small"]["events"] = small["events"]
    results["big"] = read_latency(
        big_url, generated["sample_order_ids"], workdir, placement, samples, online_rebuild=True
    )
    results["big"]["events"] = generated["events"]
    results["metrics_ratio"] = ratio(
        results["big"]["metrics_median_ms"], results["small"]["metrics_median_ms"]
    )
    results["order_ratio"] = ratio(
        results["big"]["order_median_ms"], results["small"]["order_median_ms"]
    )
    results["listing_ratio"] = ratio(
        results["big"]["listing_median_ms"], results["small"]["listing_median_ms"]
    )
    for path in workdir.glob("*.db*"):
        path.unlink()
    n_big, n_small = f"{generated['events']:,}", f"{small['events']:,}"
    rss = results["rebuild"]["peak_rss_mb"]
    results["table"] = [
        ("generated log (events, in s)", f"{n_big} in {generated['seconds']} s"),
        ("raw sqlite3 scan + orjson decode (events/s)", results["raw"]["per_second"]),
        ("raw peak RSS (MB)", results["raw"]["peak_rss_mb"]),
        ("metrics replay, rebuild.rebuild (events/s)", results["rebuild"]["per_second"]),
        ("rebuild peak RSS (MB)", rss),
        ("order-status read model rebuilt in (s)", results["rebuild"]["order_status_seconds"]),
        ("rebuild / raw", results["ratio"]),
        (f"server start at {n_small} / {n_big} events (s)",
         f"{results['small']['server_start_seconds']} / {results['big']['server_start_seconds']}"),
        (f"GET /metrics first call at {n_small} / {n_big} (ms)",
         f"{results['small']['metrics_first_ms']} / {results['big']['metrics_first_ms']}"),
        (f"GET /metrics median at {n_small} / {n_big} (ms)",
         f"{results['small']['metrics_median_ms']} / {results['big']['metrics_median_ms']}"),
        (f"GET /orders/{{id}} median at {n_small} / {n_big} (ms)",
         f"{results['small']['order_median_ms']} / {results['big']['order_median_ms']}"),
        (f"GET /orders listing median at {n_small} / {n_big} (ms)",
         f"{results['small']['listing_median_ms']} / {results['big']['listing_median_ms']}"),
    ]  # fmt: skip
    online = results["big"]["online_rebuild"]
    results["table"] += [
        (f"online rebuild at {n_big} events (s)", online["rebuild_seconds"]),
        ("reads before: requests / errors / p99 (ms)",
         f"{online['before']['requests']} / {online['before']['errors']} / "
         f"{online['before']['p99_ms']}"),
        ("reads during: requests / errors / p99 (ms)",
         f"{online['during']['requests']} / {online['during']['errors']} / "
         f"{online['during']['p99_ms']}"),
    ]  # fmt: skip
    results["targets"] = [
        target("rebuild / raw", results["ratio"], _at_least(results["ratio"], 0.5), ">= 0.50"),
        target("rebuild peak RSS (MB)", rss, None if rss is None else rss <= 150, "<= 150"),
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
        target(
            "listing big / small",
            results["listing_ratio"],
            _at_most(results["listing_ratio"], 2.0),
            "<= 2.0",
        ),
        target("errors during an online rebuild", online["during"]["errors"],
               online["during"]["errors"] == 0, "0"),
    ]  # fmt: skip
    return results


def _at_least(value: float | None, floor: float) -> bool | None:
    return None if value is None else value >= floor


def _at_most(value: float | None, ceiling: float) -> bool | None:
    return None if value is None else value <= ceiling


def _peak_rss_mb() -> float | None:
    """This process's peak resident memory (Linux /proc; None elsewhere)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)  # kB
    except OSError:
        pass
    return None


def main(argv: list[str] | None = None) -> int:
    side, url = (argv if argv is not None else sys.argv[1:])[:2]
    figures = _child_rebuild(url) if side == "rebuild" else _child_raw(url)
    figures["peak_rss_mb"] = _peak_rss_mb()
    sys.stdout.buffer.write(orjson.dumps(figures))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
