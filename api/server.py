"""``orderlog serve``: pin the process, start a node, answer until SIGTERM or SIGINT.

The order of start and stop is the node's (``api.node``); this module adds only
what belongs to a process: its CPU, its signal handlers, its start-up line, and
the promise that a stop ends the process in time: every step of the node's stop
is bounded, and should one still hang (a driver call that ignores its deadline),
a watchdog ends the process once the stop's deadline has passed. Nothing is lost
by that: what was acknowledged is in the log, and the next start finds the rest.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from types import FrameType

from api.cpu import choose_cpu, pin
from api.node import Node, stop_deadline
from orderlog.config import Settings

log = logging.getLogger(__name__)


def serve(settings: Settings) -> int:
    # Before any thread starts: threads inherit the CPU they are started on.
    cpu = choose_cpu(settings.cpu)
    pin(cpu)
    node = Node(settings).start()

    watchdog = threading.Timer(stop_deadline(settings) + WATCHDOG_MARGIN, _overdue)
    watchdog.daemon = True

    def stop(signum: int, frame: FrameType | None) -> None:
        # Only end the loop: raising here could cut waitress off in the middle of a
        # write. node.stop() below then answers what was received, and drains the worker.
        node.stop_serving()
        if not watchdog.is_alive():
            watchdog.start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    port = node.http.addresses[0][1] if node.http else settings.port
    log.info(
        "serving on http://%s:%s (%s)",
        settings.host,
        port,
        "not pinned" if cpu is None else f"on CPU {cpu}",
    )
    sys.stdout.write(f"orderlog serving on http://{settings.host}:{port}\n")
    sys.stdout.flush()
    try:
        node.serve()
    finally:
        node.stop()
    return 0


# The watchdog fires this long after the node's own stop deadline.
WATCHDOG_MARGIN = 0.5


def _overdue() -> None:
    # Straight to stderr: the logging machinery may be what hangs.
    os.write(2, b"orderlog: the stop did not finish by its deadline; exiting now\n")
    os._exit(1)
