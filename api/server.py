"""Serving the app with waitress, tuned for a thousand connections at once.

Waitress's defaults serve only 100 connections at a time and its select() loop
breaks past about 1,000 descriptors, so the limit, the backlog and the poll()
loop are set from Settings. SIGTERM and SIGINT stop accepting, let the worker
finish the orders in hand (bounded), store the projection and exit cleanly.
"""

from __future__ import annotations

import logging
import signal
import sys
from types import FrameType
from typing import Any

from api.app import create_app
from api.cpu import choose_cpu, pin
from api.http_server import HttpServer
from api.limits import raise_file_limit
from orderlog.config import Settings
from orderlog.runtime import Runtime
from projections.projector import MetricsProjector

log = logging.getLogger(__name__)


def waitress_settings(settings: Settings) -> dict[str, Any]:
    """The waitress adjustments orderlog serves with (the bench's bare app uses them too)."""
    return {
        "host": settings.host,
        "port": settings.port,
        "threads": settings.threads,
        "connection_limit": settings.connection_limit,
        "backlog": settings.backlog,
        "channel_timeout": settings.channel_timeout,
        "asyncore_use_poll": True,
        "max_request_body_size": max(settings.max_body_bytes * 4, 1 << 20),
        "ident": "orderlog",
        "clear_untrusted_proxy_headers": True,
    }


def make_server(app: object, settings: Settings) -> HttpServer:
    raise_file_limit(settings.connection_limit + settings.backlog + 256)
    # One line per request queued behind busy threads costs ~10% throughput under load.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    return HttpServer(app, **waitress_settings(settings))


def serve(settings: Settings) -> int:
    # Before any thread starts: threads inherit the CPU they are started on.
    cpu = choose_cpu(settings.cpu)
    pin(cpu)
    runtime = Runtime(settings).start()
    projector = MetricsProjector(runtime.store)
    server = make_server(create_app(runtime, projector), settings)

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)  # ends waitress's loop; cleanup follows below

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    port = server.addresses[0][1]
    log.info(
        "serving on http://%s:%s (%s)",
        settings.host,
        port,
        "not pinned" if cpu is None else f"on CPU {cpu}",
    )
    sys.stdout.write(f"orderlog serving on http://{settings.host}:{port}\n")
    sys.stdout.flush()
    try:
        server.run()
    finally:
        server.close()
        finished = runtime.worker.stop(settings.shutdown_timeout)
        projector.save()
        runtime.store.close()
        log.info("stopped%s", "" if finished else " (orders still in hand stay Processing)")
    return 0
