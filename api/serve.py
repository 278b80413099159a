"""``orderlog serve``: pin the process, start a node, answer until SIGTERM or SIGINT.

The order of start and stop is the node's (``api.node``); this module adds only
what belongs to a process: its logging, its CPU, its signal handlers, its start-up
line, and the promise that a stop ends the process in time: every step of the
node's stop is bounded, and should one still hang (a driver call that ignores its
deadline), a watchdog ends the process once the stop's deadline has passed.
Nothing is lost by that: what was acknowledged is in the log, and the next start
finds the rest. With ``--processes`` above 1 the process is a supervisor instead
(``api.supervisor``), and each of its children runs a node through ``run``.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType

from api import logs
from api.cpu import choose_cpu, pin
from api.node import Node, stop_deadline
from orderlog.config import Settings

log = logging.getLogger(__name__)


def serve(settings: Settings) -> int:
    if settings.process_count > 1:
        from api.supervisor import supervise

        return supervise(settings)
    # Before any thread starts (the log's writer too): threads inherit the CPU they
    # are started on.
    cpu = choose_cpu(settings.cpu, settings.source("cpu"))
    pin(cpu)
    logs.configure(settings.log_level, settings.log_format)
    node = Node(settings).start()
    return run(node, cpu)


# Allocations between collections of the youngest generation (CPython's default 700),
# and how many of each generation's collections before the next one's.
GC_THRESHOLDS = (20_000, 20, 20)


def tune_gc() -> None:
    """Once the node is built: what it holds from here on is never garbage, so the
    collector stops walking it (gc.freeze), and it runs a thirtieth as often. Each
    request allocates hundreds of objects and frees nearly all of them by reference
    counting; at the default threshold the collector ran every few requests, walking
    every live object of the young generations, for about 5% of the CPU under load."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def run(
    node: Node,
    cpu: int | None,
    *,
    announce: Callable[[str], None] | None = None,
    stop_asked: Callable[[], bool] = lambda: False,
) -> int:
    """Answer until SIGTERM or SIGINT, then stop the node within its deadline.

    ``announce`` is told the address once the node is about to answer (by default
    the start-up line is printed, and logged with the CPU); ``stop_asked`` says
    whether a stop was asked for before this process's handlers were in place, and
    then the node stops at once.
    """
    settings = node.settings
    tune_gc()
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
    if stop_asked():
        stop(signal.SIGTERM, None)
    port = node.http.addresses[0][1] if node.http else settings.port
    address = f"http://{settings.host}:{port}"
    where = "not pinned" if cpu is None else f"on CPU {cpu}"
    if announce is None:
        log.info("serving on %s (%s)", address, where)
        _print_serving(address)
    else:  # one of several: the supervisor says "serving on" once they all are
        log.info("node %s ready on %s (%s)", settings.node, address, where)
        announce(address)
    try:
        node.serve()
    finally:
        node.stop()
    return 0


def _print_serving(address: str) -> None:
    sys.stdout.write(f"orderlog serving on {address}\n")
    sys.stdout.flush()


# The watchdog fires this long after the node's own stop deadline.
WATCHDOG_MARGIN = 0.5


def _overdue() -> None:
    # Straight to stderr: the logging machinery may be what hangs.
    os.write(2, b"orderlog: the stop did not finish by its deadline; exiting now\n")
    os._exit(1)
