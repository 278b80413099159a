"""The core's parts built from Settings: database, event store, order service, worker.

It builds them and offers the steps to start and stop them; the order of those
steps, with the HTTP server and the projections around them, is decided in one
place outside the core (``api.node``), which the server and the tests share.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from orderlog.config import Settings
from orderlog.domain.errors import StoreUnavailableError
from orderlog.domain.order import OrderState
from orderlog.service import OrderService
from orderlog.storage.database import explain_failure, open_database
from orderlog.storage.node_lock import NodeLock
from orderlog.storage.observe import StoreObserver
from orderlog.storage.probe import DatabaseProbe
from orderlog.storage.store import EventStore
from orderlog.storage.tokens import TokenStore
from orderlog.worker import OpenOrders, Worker

ReadModel = TypeVar("ReadModel", bound=OpenOrders)


@dataclass(frozen=True)
class Readiness:
    """What ``/readyz`` reports: ready only when every part is."""

    node: str
    database: bool
    writer: bool
    worker: bool
    writable: bool = True  # False while appends fail for a full disk
    node_lock: bool = True  # this process holds the node id on the database

    @property
    def ready(self) -> bool:
        return self.database and self.writer and self.worker and self.writable and self.node_lock


class Core(Generic[ReadModel]):
    def __init__(
        self,
        settings: Settings,
        observer: StoreObserver | None = None,
        *,
        read_model: Callable[[EventStore], ReadModel],
    ) -> None:
        self.settings = settings
        self.node_lock = NodeLock(settings.database_url, settings.node)
        self.db = open_database(
            settings.database_url,
            synchronous=settings.sqlite_synchronous,
            max_connections=settings.threads + 16,
            timeout=settings.db_timeout,
        )
        self.store = EventStore(
            self.db,
            group_commit=settings.group_commit,
            max_batch=settings.max_batch,
            observer=observer,
            timeout=settings.db_timeout,
        )
        self.probe = DatabaseProbe(self.store.ping, self.store.writable, self.node_lock.check)
        self.service = OrderService(self.store, on_placed=self._notify)
        self.tokens = TokenStore(self.store)
        # The read model the sweep looks at lives in projections, which the core may not
        # import: the caller builds it over this store (a node: its projector).
        self.read_model = read_model(self.store)
        self.worker = Worker(
            self.service,
            self.read_model,
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

    def start_probe(self) -> None:
        """Keep asking the database, so readiness answers at once whatever it does."""
        self.probe.start()

    def stop_probe(self, timeout: float) -> None:
        self.probe.stop(timeout)

    def start_worker(self) -> None:
        """Recover unfinished orders from the log, then start processing."""
        self.worker.start()

    def stop_worker(self, within: float | None = None) -> bool:
        """Complete what is due within the shutdown timeout, and return within ``within``
        seconds in all (a last commit may still be under way then); False if orders
        stay Processing."""
        limit = self.settings.shutdown_timeout
        if within is None:
            return self.worker.stop(limit)
        # A moment of the time left is kept for the last commit and what follows.
        work = max(0.0, min(limit, within - 1.0))
        return self.worker.stop(work, grace=max(0.0, within - work - 0.5))

    def close_store(self, timeout: float | None = None) -> None:
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
        )
