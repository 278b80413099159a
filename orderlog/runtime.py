"""The core wired together from Settings: database, event store, service and worker.

The one place that decides how the core's parts are built and in which order they
start and stop: the store first (so recovery can read the log), the worker after;
on stop the worker finishes what is in hand before the store's writer drains.
"""

from __future__ import annotations

import logging

from orderlog.config import Settings
from orderlog.database import open_database, redact
from orderlog.order import OrderState
from orderlog.service import OrderService
from orderlog.store import EventStore
from orderlog.worker import Worker

log = logging.getLogger(__name__)


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = open_database(
            settings.database_url,
            synchronous=settings.sqlite_synchronous,
            max_connections=settings.threads + 16,
        )
        self.store = EventStore(
            self.db, group_commit=settings.group_commit, max_batch=settings.max_batch
        )
        self.service = OrderService(self.store, on_placed=self._notify)
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

    def start(self) -> Runtime:
        self.store.open()
        self.worker.start()
        log.info(
            "node %s on %s (%s backend)",
            self.settings.node,
            redact(self.settings.database_url),
            self.store.backend,
        )
        return self

    def stop(self) -> bool:
        """Finish orders in hand (bounded), then close the store; False if time ran out."""
        finished = self.worker.stop(self.settings.shutdown_timeout)
        self.store.close()
        return finished

    @property
    def ready(self) -> bool:
        return self.worker.alive and self.store.writer_alive and self.store.ping()
