"""``orderlog serve``: pin the process, start a node, answer until SIGTERM or SIGINT.

The order of start and stop is the node's (``api.node``); this module adds only
what belongs to a process: its CPU, its signal handlers and its start-up line.
"""

from __future__ import annotations

import logging
import signal
import sys
from types import FrameType

from api.cpu import choose_cpu, pin
from api.node import Node
from orderlog.config import Settings

log = logging.getLogger(__name__)


def serve(settings: Settings) -> int:
    # Before any thread starts: threads inherit the CPU they are started on.
    cpu = choose_cpu(settings.cpu)
    pin(cpu)
    node = Node(settings).start()

    def stop(signum: int, frame: FrameType | None) -> None:
        # Only end the loop: raising here could cut waitress off in the middle of a
        # write. node.stop() below then answers what was received, and drains the worker.
        node.stop_serving()

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
