"""The projector: keeps the metrics current from the log, resuming from a checkpoint.

It holds the state in memory with the position it reflects, and before each
answer applies only the events after that position, so an answer costs the same
however long the log is. The state and its checkpoint are stored together in one
statement, at most every ``save_every`` seconds, so a restart resumes from there
instead of replaying everything.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import orjson

from orderlog.store import EventStore
from projections import metrics

NAME = "metrics"


class MetricsProjector:
    def __init__(self, store: EventStore, *, save_every: float = 1.0, page: int = 5000) -> None:
        self.store = store
        self._save_every = save_every
        self._page = page
        self._lock = threading.Lock()
        self._state: metrics.State | None = None
        self._position = 0
        self._saved_position = 0
        self._saved_at = 0.0

    def report(self) -> dict[str, Any]:
        """Catch up with the log, then the metrics as of the new position."""
        with self._lock:
            return metrics.report(self._catch_up(), self._position)

    def save(self) -> None:
        with self._lock:
            if self._state is not None and self._position > self._saved_position:
                self._save(self._state)

    def _catch_up(self) -> metrics.State:
        state = self._state
        if state is None:
            self._position, stored = self.store.load_projection(NAME)
            self._saved_position = self._position
            state = self._state = orjson.loads(stored) if stored else metrics.initial()
        for events in self.store.iter_pages(self._position, self._page):
            metrics.fold(events, state)
            self._position = events[-1].position
        if self._position > self._saved_position and (
            time.monotonic() - self._saved_at >= self._save_every
        ):
            self._save(state)
        return state

    def _save(self, state: metrics.State) -> None:
        self.store.save_projection(NAME, self._position, orjson.dumps(state))
        self._saved_position = self._position
        self._saved_at = time.monotonic()
