"""``python -m bench wrk``: wrk posting new orders, orderlog against the bare app, per N processes.

wrk (the C load generator, Debian's package) runs ``bench/wrk_orders.lua``: every
request a new order whose id is a per-run random prefix, wrk's thread number and a
counter, so orderlog must answer each one 201; any other status is counted as an
error, by status, as are wrk's socket errors. For each N, the bare app (bench.bare,
N processes sharing one socket) and then orderlog (started as ``make run`` starts it,
plus ``--processes N`` when N > 1, on a fresh database) each get the same load; the
figures are medians over the runs, with orderlog/bare per N and N against the least N
for both. This module drives wrk and reads its answer; bench.cli starts the servers.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from bench.placement import Placement
from bench.report import middle, ratio, target
from bench.servers import BenchError, Server

# By absolute path: Debian's wrk does not open a relative one.
SCRIPT = Path(__file__).resolve().with_name("wrk_orders.lua")
_MARK = "orderlog-wrk "
SIDES = ("orderlog", "bare")


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise BenchError("wrk is not installed (Debian: apt-get install wrk)")
    return found


def drive(
    server: Server,
    connections: int,
    seconds: int,
    threads: int,
    timeout: int,
    placement: Placement,
) -> dict[str, Any]:
    """One wrk run of ``seconds`` against ``server``'s POST /orders: its figures."""
    args = [_mark_prefix()]
    if "Authorization" in server.headers:
        args.append(server.headers["Authorization"])
    command = [
        wrk_binary(), f"-t{threads}", f"-c{connections}", f"-d{seconds}s",
        f"--timeout={timeout}s", "-s", str(SCRIPT),
        f"http://{server.host}:{server.port}/orders", *args,
    ]  # fmt: skip
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + timeout + 60,
        preexec_fn=placement.client_preexec(),
    )  # fmt: skip
    line = next((x for x in done.stdout.splitlines() if x.startswith(_MARK)), None)
    if done.returncode != 0 or line is None:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout}")
    said = orjson.loads(line[len(_MARK) :])
    wall = said["duration_us"] / 1e6
    other = {int(status): count for status, count in said["other"].items()}
    latency = said["latency_us"]
    return {
        "requests": said["requests"],
        "seconds": round(wall, 3),
        "per_second": said["requests"] / wall if wall else None,
        "created": said["created"],
        "created_per_second": said["created"] / wall if wall else None,
        "non_201": dict(sorted(other.items())),
        "non_2xx": sum(count for status, count in other.items() if not 200 <= status < 300),
        "socket_errors": said["socket_errors"],
        "latency_ms": {key: round(latency[key] / 1000, 2) for key in ("p50", "p99", "max")},
    }


def _mark_prefix() -> str:
    """A letter and 8 hex digits: a valid order id part, new for each wrk run."""
    return "w" + uuid.uuid4().hex[:8]


def summarize(
    measured: dict[int, dict[str, list[dict[str, Any]]]],
    connections: int,
    seconds: int,
    threads: int,
    server_settings: str,
) -> dict[str, Any]:
    """Medians per N and side; orderlog/bare per N; N against the least N for each side."""
    base = min(measured)
    rows: list[dict[str, Any]] = []
    for n in sorted(measured):
        row: dict[str, Any] = {"processes": n}
        for side in SIDES:
            runs = measured[n][side]
            non_201: Counter[int] = Counter()
            sockets: Counter[str] = Counter()
            for run in runs:
                non_201.update(run["non_201"])
                sockets.update(run["socket_errors"])
            row[side] = {
                "created_per_second": middle([r["created_per_second"] for r in runs]),
                "per_second": middle([r["per_second"] for r in runs]),
                "non_201": dict(sorted(non_201.items())),
                "non_2xx": sum(r["non_2xx"] for r in runs),
                "socket_errors": {k: v for k, v in sockets.items() if v},
                "latency_ms": {
                    key: middle([r["latency_ms"][key] for r in runs]) for key in ("p50", "p99")
                },
                "runs": runs,
            }
        row["ratio"] = ratio(row["orderlog"]["created_per_second"],
                             row["bare"]["created_per_second"])  # fmt: skip
        rows.append(row)
    first = rows[0]
    for row in rows:
        for side in SIDES:
            row[side]["scaling"] = ratio(
                row[side]["created_per_second"], first[side]["created_per_second"]
            )
    runs_each = len(first["orderlog"]["runs"])
    orderlog_errors = sum(
        sum(row["orderlog"]["non_201"].values()) + sum(row["orderlog"]["socket_errors"].values())
        for row in rows
    )
    results: dict[str, Any] = {
        "connections": connections,
        "seconds": seconds,
        "wrk_threads": threads,
        "runs": runs_each,
        "processes": rows,
    }
    results["table"] = [
        ("load", f"wrk, {threads} thread(s), {connections} keep-alive connections, {seconds} s, "
         "a new order per request"),
        ("orderlog serve", f"{server_settings}, plus --processes N when N > 1, fresh database"),
        ("bare Falcon+waitress", "N processes sharing one socket"),
        ("runs (medians)", runs_each),
    ]  # fmt: skip
    for row in rows:
        for side in SIDES:
            figures = row[side]
            lat = figures["latency_ms"]
            name = f"N={row['processes']} {side}"
            results["table"].append(
                (f"{name} latency p50 / p99 (ms)", f"{lat['p50']} / {lat['p99']}")
            )
            wrong = {**{f"HTTP {k}": v for k, v in figures["non_201"].items()},
                     **figures["socket_errors"]}  # fmt: skip
            if wrong:
                results["table"].append((f"{name} answers not 201 and socket errors", wrong))
    results["grid"] = {
        "header": ["processes", "orderlog 201/s", "bare 201/s", "orderlog/bare",
                   f"orderlog N/{base}", f"bare N/{base}", "orderlog not 201", "bare not 201"],
        "rows": [[row["processes"], row["orderlog"]["created_per_second"],
                  row["bare"]["created_per_second"], row["ratio"],
                  row["orderlog"]["scaling"], row["bare"]["scaling"],
                  sum(row["orderlog"]["non_201"].values()),
                  sum(row["bare"]["non_201"].values())] for row in rows],
    }  # fmt: skip
    results["targets"] = [
        target("orderlog answers other than 201 (and socket errors)", orderlog_errors,
               orderlog_errors == 0, "0"),
    ]  # fmt: skip
    return results
