"""One orderlog node, composed: the one place that builds it and orders its start and stop.

Build, each part after what it needs: the metrics exporter (the store reports each
commit to it), the node id's lock, the database, the event store, the API tokens,
the database probe, the order service, the worker (the service hands it each order
placed here), the projector (one reader of the log for every read model),
the app, and, at start, the HTTP server. Nothing connects while building.

Start: bind the listening socket first (a port in use fails before anything
touches the log); then, off loopback without ``--allow-anonymous``, look for an
API token without writing anything (a start that could let nobody in fails and
leaves the database as it was, or uncreated); then, as untouched, refuse a log
holding an event version newer than this release reads (or a release whose
upcasters have a gap); then take the node id on the
database (a second process with it fails before it reads the log), then open the
store (the schema brought up to date), then recover and start the worker, then
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
from peewee import Database

from api.http.app import create_app
from api.http.auth import AnonymousAccess
from api.http.prometheus import Exporter
from api.processes import ProcessPlace
from api.server.http_server import HttpServer, make_server
from orderlog.config import Settings
from orderlog.domain.errors import StartupError, StoreUnavailableError
from orderlog.readiness import Readiness, UnreadableLog
from orderlog.service import OrderService
from orderlog.storage.database import explain_failure, open_database
from orderlog.storage.database_url import redact
from orderlog.storage.event_versions import refuse_before_start, require_upcasters
from orderlog.storage.node_lock import NodeLock
from orderlog.storage.observe import StoreObserver
from orderlog.storage.probe import DatabaseProbe
from orderlog.storage.store import EventStore
from orderlog.storage.tokens import TokenStore, any_token_stored
from orderlog.worker import Worker
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
        self.node_lock = NodeLock(settings.database_url, settings.node)
        self.db, self.store = open_log(settings, self.exporter)
        self.tokens = TokenStore(self.store)
        self.probe = DatabaseProbe(self.store.ping, self.store.writable, self.node_lock.check)
        self.service = OrderService(self.store, idempotency_ttl=settings.idempotency_ttl)
        # Whether the log holds an event newer than this release reads: whichever part
        # meets one first says so, both stop following, and readiness reports it.
        self.unreadable = UnreadableLog()
        # The one order-status model: the projector keeps it current (reading each page
        # of the log once for every model) and the worker's sweep reads it.
        self.projector = Projector(
            self.store,
            OrderStatusModel(self.store),
            completed=self.exporter.completed,
            unreadable=self.unreadable,
        )
        self.worker = Worker(
            self.service,
            self.projector,
            max_in_work=settings.max_in_work,
            processing_delay=settings.processing_delay,
            node=settings.node,
            claim_timeout=settings.claim_timeout,
            pending_grace=settings.pending_grace,
            sweep_interval=settings.sweep_interval,
            unreadable=self.unreadable,
        )
        # Each order placed here goes to this worker at once, not at its next sweep.
        self.service.on_placed = self.worker.notify
        self.exporter.bind(
            self.store,
            self.worker,
            lambda: (self.projector.position, self.projector.counts()),
            lambda position: self.projector.wait_for(position, SCRAPE_CATCH_UP),
        )
        self.anonymous = AnonymousAccess(
            self.tokens, settings.host, allow_anonymous=settings.allow_anonymous
        )
        self.app: falcon.App = create_app(
            settings,
            service=self.service,
            store=self.store,
            tokens=self.tokens,
            projector=self.projector,
            exporter=self.exporter,
            anonymous=self.anonymous,
            readiness=self.readiness,
            place=self.place,
        )
        self.http: HttpServer | None = None

    def start(self, *, bind: bool = True, sockets: list[socket.socket] | None = None) -> Node:
        """Bind (unless ``bind`` is False: in-process tests; or serve ``sockets``, bound
        already), then open the log, then recover and start the worker."""
        if bind:
            self.http = make_server(self.app, self.settings, sockets)
        try:
            self._refuse_an_open_api_off_loopback()
            self._refuse_a_log_it_cannot_read()
            self._open_log()
            self.probe.start()  # readiness answers at once, whatever the database does
            self.worker.start()  # recovers unfinished orders from the log, then runs
            self.projector.start()
            self.exporter.start()
        except BaseException:
            if self.http is not None:
                self.http.close()
            self._close_log()
            raise
        log.info(
            "node %s on %s (%s backend)",
            self.settings.node,
            redact(self.settings.database_url),
            self.store.backend,
        )
        return self

    def _refuse_an_open_api_off_loopback(self) -> None:
        # Before the node id and the schema: a start refused here has written nothing.
        # The same rule holds while the node runs: finding no token there, it lets
        # nobody in (api.http.auth.AnonymousAccess).
        if self.http is None or not self.anonymous.needs_a_token:
            return
        if not any_token_stored(self.settings.database_url, self.settings.db_timeout):
            raise StartupError(
                f"no API token exists and {self.settings.host} is not a loopback address: "
                "every request that needs a scope would be refused",
                "create one first: orderlog token create --name NAME --scopes admin; "
                "or pass --allow-anonymous to open it to anyone who can reach it",
            )

    def _refuse_a_log_it_cannot_read(self) -> None:
        # Before the node id and the schema, as above: a start refused here has written
        # nothing. The migration looks again under its lock, before this node records
        # the versions it writes (a newer node may have recorded its own meanwhile).
        require_upcasters()
        refuse_before_start(self.settings.database_url, self.settings.db_timeout)

    def _open_log(self) -> None:
        """Take the node id on the database, then bring the schema up to date and start
        the store's writer.

        Raises StartupError, in one line with a hint, when the database cannot be used,
        or when another running process has this node id (it would take this node's
        claims as its own), or an offline rebuild runs. The id is taken before the log
        is read or written.
        """
        self.node_lock.acquire()
        try:
            self.store.open()
        except StoreUnavailableError as exc:
            raise explain_failure(exc.__cause__ or exc, self.settings.database_url) from exc

    def _close_log(self, timeout: float | None = None) -> None:
        """Commit what the writer holds, then close every connection, then let the id go;
        waits at most ``timeout`` for the writer."""
        try:
            self.store.close(timeout)
        finally:
            self.node_lock.release()

    def readiness(self) -> Readiness:
        """Read at once: the database's answer is the probe's last one."""
        return Readiness(
            self.settings.node,
            self.probe.ok,
            self.store.writer_alive,
            self.worker.alive,
            writable=self.probe.writable,
            node_lock=self.probe.node_lock,
            log=self.unreadable.reason,
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
        finished = self._stop_worker(_left(deadline))
        self.projector.stop(_left(deadline))
        # Closing waits on connections a stalled database may hold (a connect in flight
        # holds the pool): bounded by what is left, the rest left to the process's end.
        _within(deadline, "closing the store", lambda: self._close_log(_left(deadline)))
        self.probe.stop(_left(deadline))
        self.exporter.stop()
        log.info("stopped%s", "" if finished else " (orders still in work stay Processing)")
        return finished

    def _stop_worker(self, within: float) -> bool:
        """Complete what is due within the shutdown timeout, and return within ``within``
        seconds in all (a last commit may still be under way then); False if orders
        stay Processing."""
        # A moment of the time left is kept for the last commit and what follows.
        work = max(0.0, min(self.settings.shutdown_timeout, within - 1.0))
        return self.worker.stop(work, grace=max(0.0, within - work - 0.5))


def open_log(
    settings: Settings, observer: StoreObserver | None = None
) -> tuple[Database, EventStore]:
    """The database's pool, every wait bounded, and the store over it, as a node opens
    them (nothing is read or written until the store is opened)."""
    db = open_database(
        settings.database_url,
        synchronous=settings.sqlite_synchronous,
        max_connections=settings.threads + 16,
        timeout=settings.db_timeout,
    )
    store = EventStore(
        db,
        group_commit=settings.group_commit,
        max_batch=settings.max_batch,
        observer=observer,
        timeout=settings.db_timeout,
    )
    return db, store


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
