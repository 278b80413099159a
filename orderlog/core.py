"""The core's parts built from Settings: database, event store, order service, worker.

It builds them and offers the steps to start and stop them; the order of those
steps, with the HTTP server and the projections around them, is decided in one
place outside the core (``api.node``), which the server and the tests share.
"""

from __future__ import annotations

from dataclasses import dataclass

from orderlog.config import Settings
from orderlog.database import explain_failure, open_database
from orderlog.errors import StoreUnavailableError
from orderlog.node_lock import NodeLock
from orderlog.observe import StoreObserver
from orderlog.order import OrderState
from orderlog.service import OrderService
from orderlog.store import EventStore
from orderlog.tokens import TokenStore
from orderlog.worker import Worker


@dataclass(frozen=True)
class Readiness:
    """What ``/readyz`` reports: ready only when every part is."""

    node: str
    database: bool
    writer: bool
    worker: bool
    node_lock: bool  # this process holds the node id on the database

    @property
    def ready(self) -> bool:
        return self.database and self.writer and self.worker and self.node_lock


class Core:
    def __init__(self, settings: Settings, observer: StoreObserver | None = None) -> None:
        self.settings = settings
        self.node_lock = NodeLock(settings.database_url, settings.node)
        self.db = open_database(
            settings.database_url,
            synchronous=settings.sqlite_synchronous,
            max_connections=settings.threads + 16,
        )
        self.store = EventStore(
            self.db,
            group_commit=settings.group_commit,
            max_batch=settings.max_batch,
            observer=observer,
        )
        self.service = OrderService(self.store, on_placed=self._notify)
        self.tokens = TokenStore(self.store)
        self.worker = Worker(
            self.service,
            max_in_work=settings.max_in_work,
            processing_delay=settings.processing_delay,
            node=settings.node,
            claim_timeout=settings.claim_timeout,
            pending_grace=settings.pending_grace,
            sweep_interval=settings.sweep_interval,
        )

    def _notify(self, order_id: str, state: OrderState) -> None:
        self.worker.notify(order_id, state)

    # -- the steps, in the order they are meant to run -------------------------------

    def open_store(self) -> None:
        """Take the node id on the database, then bring the schema up to date and start
        the store's writer.

        Raises StartupError, in one line with a hint, when the database cannot be used,
        or when another running process has this node id (it would take this node's
        claims as its own), or an offline rebuild runs. The id is taken before anything
        is read or written.
        """
        self.node_lock.acquire()
        try:
            self.store.open()
        except StoreUnavailableError as exc:
            raise explain_failure(exc.__cause__ or exc, self.settings.database_url) from exc

    def start_worker(self) -> None:
        """Recover unfinished orders from the log, then start processing."""
        self.worker.start()

    def stop_worker(self) -> bool:
        """Complete what is due within the shutdown timeout; False if orders stay Processing."""
        return self.worker.stop(self.settings.shutdown_timeout)

    def close_store(self) -> None:
        """Commit what the writer holds, then close every connection, then let the id go."""
        try:
            self.store.close()
        finally:
            self.node_lock.release()

    def readiness(self) -> Readiness:
        return Readiness(
            self.settings.node,
            self.store.ping(),
            self.store.writer_alive,
            self.worker.alive,
            self.node_lock.check(),
        )
