"""One orderlog node, composed: the one place that builds it and orders its start and stop.

Start: bind the listening socket first (a port in use fails before anything
touches the log), then take the node id on the database (a second process with it
fails before it reads the log), then open the store, then recover and start the worker, then
answer. Stop: stop accepting connections and answer the requests already received
(within ``--drain-timeout``; the store and the worker still run, since those
requests need them), then let the worker complete what is due, store the
projections' checkpoints, close the store and let the node id go. ``serve`` runs exactly this,
and the tests build the same Node (without binding a socket) to run the same
steps in-process.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable

import falcon

from api.http.app import create_app
from api.http.auth import AnonymousAccess
from api.http.prometheus import Exporter
from api.processes import ProcessPlace
from api.server.http_server import HttpServer, make_server
from orderlog.config import Settings
from orderlog.core import Core
from orderlog.domain.errors import StartupError
from orderlog.storage.database import redact
from orderlog.storage.store import EventStore
from projections.order_status import OrderStatusModel
from projections.projector import Projector

log = logging.getLogger(__name__)


class Node:
    def __init__(self, settings: Settings, place: ProcessPlace | None = None) -> None:
        """``place``: where this process stands among several serving one node (their
        supervisor's status and metrics directory); by default it serves alone."""
        self.settings = settings
        self.place = place or ProcessPlace()
        self.exporter = Exporter(settings.node, self.place.metrics_dir)
        self.core = Core(settings, observer=self.exporter, read_model=self._read_models)
        self.projector: Projector = self.core.read_model
        self.exporter.bind(
            self.core,
            lambda: (self.projector.position, self.projector.counts()),
            lambda position: self.projector.wait_for(position, SCRAPE_CATCH_UP),
        )
        self.anonymous = AnonymousAccess(
            self.core.tokens, settings.host, allow_anonymous=settings.allow_anonymous
        )
        self.app: falcon.App = create_app(
            self.core, self.projector, self.exporter, self.anonymous, self.place
        )
        self.http: HttpServer | None = None

    def _read_models(self, store: EventStore) -> Projector:
        """The node's read models over its store: one order-status model, which the
        projector keeps current (reading each page of the log once for every model) and
        the worker's sweep reads; the completions go to the exporter."""
        return Projector(store, OrderStatusModel(store), completed=self.exporter.completed)

    def start(self, *, bind: bool = True, sockets: list[socket.socket] | None = None) -> Node:
        """Bind (unless ``bind`` is False: in-process tests; or serve ``sockets``, bound
        already), then open the log, then recover and start the worker."""
        if bind:
            self.http = make_server(self.app, self.settings, sockets)
        try:
            self.core.open_store()
            self._refuse_an_open_api_off_loopback()
            self.core.start_probe()
            self.core.start_worker()
            self.projector.start()
            self.exporter.start()
        except BaseException:
            if self.http is not None:
                self.http.close()
            self.core.close_store()
            raise
        log.info(
            "node %s on %s (%s backend)",
            self.settings.node,
            redact(self.settings.database_url),
            self.core.store.backend,
        )
        return self

    def _refuse_an_open_api_off_loopback(self) -> None:
        # The same rule holds while the node runs: finding no token there, it lets
        # nobody in (api.http.auth.AnonymousAccess).
        if self.http is not None and self.anonymous.locked():
            raise StartupError(
                f"no API token exists and {self.settings.host} is not a loopback address: "
                "every request that needs a scope would be refused",
                "create one first: orderlog token create --name NAME --scopes admin; "
                "or pass --allow-anonymous to open it to anyone who can reach it",
            )

    def serve(self) -> None:
        """Answer requests until ``stop_serving``."""
        if self.http is None:
            raise RuntimeError("serve() needs a node started with bind=True")
        self.http.run()

    def stop_serving(self) -> None:
        """Make ``serve`` return soon; safe from a signal handler and from any thread."""
        if self.http is not None:
            self.http.stop()

    def stop(self) -> bool:
        """Stop accepting and answer what was received, drain the worker, save the
        projections, close the store: all within ``stop_deadline`` of now, whatever
        the database does (each later step gets what time is left).

        Returns False if orders were left Processing for the next start.
        """
        deadline = time.monotonic() + stop_deadline(self.settings)
        if self.http is not None:
            if not self.http.drain(self.settings.drain_timeout):
                log.warning("requests still in the app after --drain-timeout were cut off")
            self.http.close()
            self.http = None
        finished = self.core.stop_worker(_left(deadline))
        self.projector.stop(_left(deadline))
        # Closing waits on connections a stalled database may hold (a connect in flight
        # holds the pool): bounded by what is left, the rest left to the process's end.
        _within(deadline, "closing the store", lambda: self.core.close_store(_left(deadline)))
        self.core.stop_probe(_left(deadline))
        self.exporter.stop()
        log.info("stopped%s", "" if finished else " (orders still in work stay Processing)")
        return finished


def stop_deadline(settings: Settings) -> float:
    """Seconds a node takes at most to stop: the drain, the worker's shutdown, and a
    moment for the rest (the 503s going out, the last commit, closing)."""
    return settings.drain_timeout + settings.shutdown_timeout + STOP_MARGIN


# What a stop may add to --drain-timeout and --shutdown-timeout, and no more.
STOP_MARGIN = 1.0
# The longest a scrape waits for the read models to reach the log's head (then it
# reports what they have, and their lag).
SCRAPE_CATCH_UP = 1.0


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def _within(deadline: float, what: str, step: Callable[[], object]) -> None:
    """Run ``step`` until ``deadline`` at most; past it, leave it running (a daemon
    thread, ended with the process) and say so."""

    def run() -> None:
        try:
            step()
        except Exception:  # a thread's top loop: the stop carries on
            log.exception("%s failed", what)

    thread = threading.Thread(target=run, name="orderlog-stop", daemon=True)
    thread.start()
    thread.join(_left(deadline))
    if thread.is_alive():
        log.warning("%s did not finish by the stop's deadline; the process ends anyway", what)
