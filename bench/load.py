"""``orderlog bench burst`` and ``sustained``: the HTTP API under load, from api.loadgen.

burst: N orders at once on N fresh sockets; then how long until every one is
Completed (polling /metrics), and a check through the log itself (GET /events)
that each accepted order was placed once and completed exactly once.
sustained: C keep-alive sockets posting for T seconds, against orderlog and
against a bare Falcon app with the same waitress settings and the same client.
Every run also measures the client's own CPU, so a saturated client shows.
"""

from __future__ import annotations

import asyncio
import resource
import shutil
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from bench import loadgen
from bench.placement import Placement
from bench.report import latency_summary, ratio, target
from bench.server_cpu import cpu_seconds, per_item_us
from bench.servers import Client, Server
from orderlog.domain.events import OrderCompleted, OrderPlaced
from orderlog.domain.order import Status

POLL_INTERVAL = 0.01


def order_body(order_id: str) -> bytes:
    return orjson.dumps(
        {"order_id": order_id, "user_id": 42, "item_ids": ["sku-1", "sku-2"], "total_amount": 19.99}
    )


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _measured(
    call: Callable[[], list[loadgen.Response]],
) -> tuple[list[loadgen.Response], float, float]:
    """(responses, wall seconds, client CPU as a share of one core)."""
    cpu, began = _cpu_seconds(), time.perf_counter()
    responses = call()
    wall = time.perf_counter() - began
    return responses, wall, round((_cpu_seconds() - cpu) / wall, 3) if wall else 0.0


def _failures(responses: Sequence[loadgen.Response], ok: int) -> dict[str, int]:
    kinds = Counter(r.error or f"HTTP {r.status}" for r in responses if r.status != ok)
    return dict(kinds.most_common(5))


def _completed(client: Client) -> int:
    status, body, _ = client.get("/metrics")
    if status != 200:
        raise RuntimeError(f"/metrics answered {status}")
    return int(body["status_counts"][Status.COMPLETED.value])


def _head(client: Client) -> int:
    status, body, _ = client.get("/events?limit=1")
    if status != 200:
        raise RuntimeError(f"/events answered {status}")
    return int(body["head"])


def verify_log(client: Client, after: int, order_ids: set[str]) -> dict[str, int]:
    """Page the global log from ``after``; count placements and completions per order."""
    placed: Counter[str] = Counter()
    completed: Counter[str] = Counter()
    pages = 0
    while True:
        status, body, _ = client.get(f"/events?after={after}&limit=1000")
        if status != 200:
            raise RuntimeError(f"/events answered {status}")
        pages += 1
        for event in body["events"]:
            stream = event["stream_id"]
            if stream in order_ids:
                if event["type"] == OrderPlaced.__name__:
                    placed[stream] += 1
                elif event["type"] == OrderCompleted.__name__:
                    completed[stream] += 1
        after = body["next_after"]
        if not body["events"] and after >= body["head"]:
            break
    return {
        "pages_read": pages,
        "lost": sum(1 for o in order_ids if placed[o] == 0 or completed[o] == 0),
        "duplicated": sum(1 for o in order_ids if placed[o] > 1 or completed[o] > 1),
    }


def _burst(
    server: Server, order_ids: list[str], connections: int, timeout: float
) -> tuple[list[loadgen.Response], float, float]:
    """Every order at once, each on a fresh socket: (responses, wall seconds, client CPU)."""
    requests = [("POST", "/orders", order_body(order_id), server.headers) for order_id in order_ids]
    return _measured(
        lambda: loadgen.run(
            server.host, server.port, requests, connections, keep_alive=False, timeout=timeout
        )
    )


def measure_bare_burst(
    bare: Server, orders: int, connections: int, timeout: float
) -> dict[str, Any]:
    """The same burst against the bare app: the ceiling of waitress, Falcon and this client."""
    ids = [f"bare-{uuid.uuid4().hex[:8]}-{n}" for n in range(orders)]
    responses, wall, client_cpu = _burst(bare, ids, connections, timeout)
    ok = sum(1 for r in responses if r.status == 201)
    return {
        "accepted": ok,
        "errors": len(responses) - ok,
        "orders_per_second": ok / wall if wall else None,
        "latency": latency_summary([r.latency for r in responses if r.status == 201]),
        "client_cpu_share": client_cpu,
    }


def run_burst(
    server: Server,
    orders: int,
    connections: int,
    timeout: float,
    settle_timeout: float,
    bare: dict[str, Any] | None = None,
    few: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A burst of ``orders`` over ``connections`` fresh sockets, then how long until all
    are Completed, and a check through the log that none was lost or done twice.

    ``bare`` (the same burst against the bare app) and ``few`` (this burst over a few
    sockets) add the ratios the targets are stated in.
    """
    client = Client.to(server)
    run = uuid.uuid4().hex[:8]
    ids = [f"burst-{run}-{n}" for n in range(orders)]
    try:
        head_before = _head(client)
        completed_before = _completed(client)
        responses, wall, client_cpu = _burst(server, ids, connections, timeout)
        last_answer = time.perf_counter()
        accepted = {order_id for order_id, r in zip(ids, responses, strict=True) if r.status == 201}
        want = completed_before + len(accepted)
        settled: float | None = None
        while time.perf_counter() - last_answer < settle_timeout:
            if _completed(client) >= want:
                settled = time.perf_counter() - last_answer
                break
            time.sleep(POLL_INTERVAL)  # polling interval of a deadline-bound wait
        check = verify_log(client, head_before, accepted)
    finally:
        client.close()
    errors = len(responses) - len(accepted)
    rate = len(accepted) / wall if wall else None
    results: dict[str, Any] = {
        "orders": orders,
        "connections": connections,
        "accepted": len(accepted),
        "errors": errors,
        "error_kinds": _failures(responses, 201),
        "seconds": round(wall, 3),
        "orders_per_second": rate,
        "latency": latency_summary([r.latency for r in responses if r.status == 201]),
        "completed_after_last_answer_s": None if settled is None else round(settled, 3),
        "client_cpu_share": client_cpu,
        **check,
    }
    lat = results["latency"]
    results["table"] = [
        ("orders sent / connections", f"{orders:,} / {connections:,}"),
        ("accepted (201)", len(accepted)),
        ("errors", f"{errors} {results['error_kinds'] or ''}".strip()),
        ("orders/s (accepted / wall time)", rate),
        ("latency p50 / p95 / p99 (ms)", f"{lat['p50_ms']} / {lat['p95_ms']} / {lat['p99_ms']}"),
        ("all Completed, s after last answer", results["completed_after_last_answer_s"]),
        ("log check: lost / completed twice", f"{check['lost']} / {check['duplicated']}"),
        ("client CPU (share of one core)", client_cpu),
    ]
    settled_ok = settled is not None and settled <= 1.0
    results["targets"] = [
        target("burst errors", errors, errors == 0, "0"),
        target("burst lost + duplicated", check["lost"] + check["duplicated"],
               check["lost"] + check["duplicated"] == 0, "0"),
        target("burst all Completed after (s)", results["completed_after_last_answer_s"],
               settled_ok, "<= 1.0"),
    ]  # fmt: skip
    if bare is not None:
        results["bare"] = bare
        results["ratio_to_bare"] = share = ratio(rate, bare["orders_per_second"])
        blat = bare["latency"]
        results["table"] += [
            ("bare Falcon+waitress, same burst (orders/s)", bare["orders_per_second"]),
            ("bare latency p50 / p95 / p99 (ms)",
             f"{blat['p50_ms']} / {blat['p95_ms']} / {blat['p99_ms']}"),
            ("orderlog / bare", share),
        ]  # fmt: skip
        results["targets"].append(
            target(
                "burst orderlog / bare", share, None if share is None else share >= 0.5, ">= 0.50"
            )
        )
    if few is not None:
        results["few_connections"] = {
            k: few[k] for k in ("connections", "orders_per_second", "latency", "errors")
        }
        held = ratio(rate, few["orders_per_second"])
        results["ratio_to_few_connections"] = held
        results["table"] += [
            (f"same orders over {few['connections']} connections (orders/s)",
             few["orders_per_second"]),
            (f"{connections} / {few['connections']} connections", held),
        ]  # fmt: skip
        results["targets"].append(
            target(
                f"burst {connections} / {few['connections']} connections",
                held,
                _at_least(held, 0.7),
                ">= 0.70",
            )
        )
    return results


def _sustain(server: Server, connections: int, duration: float, prefix: str) -> dict[str, Any]:
    def make_request(n: int) -> loadgen.Request:
        return ("POST", "/orders", order_body(f"{prefix}-{n}"), server.headers)

    pid = server.process.pid if server.process is not None else None
    server_cpu = cpu_seconds(pid)
    responses, wall, client_cpu = _measured(
        lambda: asyncio.run(
            loadgen.sustained(server.host, server.port, make_request, connections, duration)
        )
    )
    ok = [r for r in responses if r.status == 201]
    return {
        "server_cpu_at_start": server_cpu,
        "server_cpu_us_per_request": per_item_us(server_cpu, cpu_seconds(pid), len(responses)),
        "requests": len(responses),
        "ok": len(ok),
        "errors": len(responses) - len(ok),
        "error_kinds": _failures(responses, 201),
        "seconds": round(wall, 3),
        "per_second": len(ok) / wall if wall else None,
        "latency": latency_summary([r.latency for r in ok]),
        "client_cpu_share": client_cpu,
    }


def wrk_rate(
    server: Server, connections: int, duration: float, placement: Placement, workdir: Path
) -> float | None:
    """The same POST through wrk (C, one thread), as an independent check on our client."""
    wrk = shutil.which("wrk")
    if wrk is None:
        return None
    script = workdir / "post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = '{order_body('wrk-order').decode()}'\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    preexec = placement.client_preexec()
    out = subprocess.run(
        [wrk, "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "-s", str(script),
         f"http://{server.host}:{server.port}/orders"],
        capture_output=True, text=True, timeout=duration + 60, preexec_fn=preexec,
    )  # fmt: skip
    for line in out.stdout.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    return None


def measure_bare(
    bare: Server,
    connections: int,
    duration: float,
    wrk: Callable[[Server], float | None] | None,
) -> dict[str, Any]:
    """The baseline with our client, then (optionally) the same load through wrk."""
    figures = _sustain(bare, connections, duration, f"bare-{uuid.uuid4().hex[:8]}")
    figures["wrk_per_second"] = wrk(bare) if wrk else None
    return figures


def run_sustained(
    orderlog: Server, base: dict[str, Any], connections: int, duration: float
) -> dict[str, Any]:
    client = Client.to(orderlog)
    try:
        completed_before = _completed(client)
        app = _sustain(orderlog, connections, duration, f"sus-{uuid.uuid4().hex[:8]}")
        ended = time.perf_counter()
        want = completed_before + app["ok"]
        drained: float | None = None
        while time.perf_counter() - ended < max(60.0, duration * 6):
            if _completed(client) >= want:
                drained = time.perf_counter() - ended
                break
            time.sleep(POLL_INTERVAL * 5)  # polling interval of a deadline-bound wait
    finally:
        client.close()
    app["completed_after_load_s"] = None if drained is None else round(drained, 3)
    # Everything the accepted orders cost the server, from the first request until the
    # last of them is Completed (the worker's claims and completions come after).
    app["server_cpu_us_per_order"] = per_item_us(
        app.pop("server_cpu_at_start"),
        cpu_seconds(orderlog.process.pid if orderlog.process is not None else None),
        app["ok"],
    )
    base.pop("server_cpu_at_start", None)
    share = ratio(app["per_second"], base["per_second"])
    wrk_bare = base["wrk_per_second"]
    results: dict[str, Any] = {
        "connections": connections,
        "duration": duration,
        "orderlog": app,
        "bare": base,
        "ratio": share,
        "wrk_bare_per_second": wrk_bare,
        "client_vs_wrk_on_bare": ratio(base["per_second"], wrk_bare),
    }
    la, lb = app["latency"], base["latency"]
    results["table"] = [
        ("connections / seconds", f"{connections} / {duration}"),
        ("orderlog orders/s (201 only)", app["per_second"]),
        ("orderlog errors", f"{app['errors']} {app['error_kinds'] or ''}".strip()),
        ("orderlog latency p50 / p95 / p99 (ms)",
         f"{la['p50_ms']} / {la['p95_ms']} / {la['p99_ms']}"),
        ("bare Falcon+waitress requests/s", base["per_second"]),
        ("bare latency p50 / p95 / p99 (ms)",
         f"{lb['p50_ms']} / {lb['p95_ms']} / {lb['p99_ms']}"),
        ("orderlog / bare", share),
        ("server CPU per accepted order, until all Completed (µs)",
         app["server_cpu_us_per_order"]),
        ("server CPU per request: orderlog during the load / bare (µs)",
         f"{app['server_cpu_us_per_request']} / {base['server_cpu_us_per_request']}"),
        ("client CPU, orderlog / bare run",
         f"{app['client_cpu_share']} / {base['client_cpu_share']}"),
        ("orderlog backlog all Completed, s after load", app["completed_after_load_s"]),
        ("wrk on bare (requests/s)", wrk_bare if wrk_bare else "not run"),
        ("our client / wrk on bare", results["client_vs_wrk_on_bare"]),
    ]  # fmt: skip
    cpu = app["server_cpu_us_per_order"]
    results["targets"] = [
        target(
            "sustained orderlog / bare", share, None if share is None else share >= 0.5, ">= 0.50"
        ),
        target("sustained server CPU per order (µs)", cpu, _at_most(cpu, 250), "<= 250"),
    ]
    return results


def with_core(report: dict[str, Any], core: dict[str, Any]) -> dict[str, Any]:
    """The sustained report with the core's own CPU per order (``bench.core``): what is
    left of a served order's CPU is HTTP's (waitress, the loop, the hand-overs)."""
    served = report["orderlog"]["server_cpu_us_per_order"]
    alone = core["cpu_us_per_order"]
    report["core"] = core
    report["http_us_per_order"] = None if served is None or alone is None else served - alone
    threads = ", ".join(f"{name} {us:g}" for name, us in core["per_thread_us"].items() if us >= 0.5)
    report["table"] += [
        ("the core alone, no HTTP: CPU per order (µs)", alone),
        ("  its threads (µs per order)", threads),
        ("HTTP's share of a served order (µs)", report["http_us_per_order"]),
    ]
    return report


def _at_least(value: float | None, floor: float) -> bool | None:
    return None if value is None else value >= floor


def _at_most(value: float | None, ceiling: float) -> bool | None:
    return None if value is None else value <= ceiling
