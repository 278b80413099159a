"""The core's CPU per order with no HTTP server: ``python -m bench.core URL ORDERS THREADS``.

A node is built as ``orderlog serve`` builds it (its default settings, its writer,
worker, sweep and projector, the collector tuned, pinned to one CPU as serve pins
itself), and THREADS threads call its WSGI app directly, each request a POST of a
new order, ORDERS in all. The CPU of the whole process, from the first request until
every order is Completed and folded into the read models, divided by the orders, is
what the core costs an order: everything but the HTTP server. Beside a served
figure (``bench sustained``) it splits a served order's CPU into the core's share and
HTTP's. Prints one JSON line: that figure and each thread's share.

The child is Linux only (it reads ``/proc``); ``measure_core`` runs it.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from bench.server_cpu import thread_cpu_seconds

CHILD_TIMEOUT = 300.0  # seconds the whole child may take, load and settling included
SETTLE_TIMEOUT = 120.0  # seconds for the last orders to be Completed and folded


def _environ(body: bytes) -> dict[str, Any]:
    """A POST /orders as waitress hands it to the app."""
    return {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/orders",
        "QUERY_STRING": "",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_HOST": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "wsgi.version": (1, 0),
        "wsgi.input_terminated": True,
    }


def run_child(url: str, orders: int, threads: int) -> dict[str, Any]:
    from api.cpu import choose_cpu, pin
    from api.node import Node
    from api.serve import tune_gc
    from bench.load import order_body
    from orderlog.config import Settings

    cpu = choose_cpu("auto")  # before any thread starts: as serve places itself
    pin(cpu)
    node = Node(Settings(database_url=url, log_level="warning")).start(bind=False)
    tune_gc()
    statuses: dict[str, int] = {}
    lock = threading.Lock()
    callers_cpu = [0.0] * threads
    prefix = f"core-{os.getpid()}"

    def started(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        with lock:
            statuses[status] = statuses.get(status, 0) + 1

    def call(index: int) -> None:
        began = time.thread_time()
        for n in range(index, orders, threads):
            body = order_body(f"{prefix}-{n}")
            b"".join(node.app(_environ(body), started))
        callers_cpu[index] = time.thread_time() - began

    try:
        before, threads_before = time.process_time(), thread_cpu_seconds(os.getpid())
        wall = time.perf_counter()
        callers = [threading.Thread(target=call, args=(i,)) for i in range(threads)]
        for caller in callers:
            caller.start()
        deadline = time.monotonic() + CHILD_TIMEOUT
        for caller in callers:
            caller.join(max(0.0, deadline - time.monotonic()))
        loaded = time.perf_counter() - wall
        settled = node.worker.wait_idle(SETTLE_TIMEOUT) and node.projector.wait_for(
            node.store.last_position(), SETTLE_TIMEOUT
        )
        spent = time.process_time() - before
        created = statuses.get("201 Created", 0)
        per_thread = _per_thread_us(threads_before, sum(callers_cpu), max(created, 1))
    finally:
        node.stop()
    return {
        "cpu": cpu,
        "orders": orders,
        "threads": threads,
        "created": created,
        "statuses": statuses,
        "settled": bool(settled),
        "orders_per_second": round(created / loaded, 1) if loaded else None,
        "cpu_us_per_order": round(spent * 1e6 / created, 1) if created else None,
        "per_thread_us": {name: round(us, 1) for name, us in per_thread.items()},
    }


def _per_thread_us(before: dict[int, float], callers: float, orders: int) -> dict[str, float]:
    """µs per order of the calling threads (``callers`` seconds) and of each named thread
    of this process since ``before``."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    spent = {"requests (the calling threads)": callers * 1e6 / orders}
    for tid, seconds in thread_cpu_seconds(os.getpid()).items():
        name = names.get(tid)
        if name is not None and name != "MainThread":
            spent[name] = (seconds - before.get(tid, 0.0)) * 1e6 / orders
    return spent


def measure_core(url: str, orders: int, threads: int, cwd: Path) -> dict[str, Any]:
    """Run the child on ``url`` (a fresh log) and return its figures."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.core", url, str(orders), str(threads)],
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT + 60,
        cwd=cwd,
    )
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"bench.core failed ({out.returncode}): {out.stderr.strip()[-400:]}")
    return orjson.loads(lines[-1])  # type: ignore[no-any-return]


def main(argv: list[str]) -> int:
    url, orders, threads = argv[0], int(argv[1]), int(argv[2])
    print(orjson.dumps(run_child(url, orders, threads)).decode(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
