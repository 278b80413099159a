"""The projector: one thread that follows the log and keeps every read model current.

It reads each page of new events once and feeds it to every read model: the
metrics, held in memory with the position they reflect and stored with their
checkpoint at most every ``save_every`` seconds; the order-status rows
(``projections.order_status``, the node's one model, which the worker's sweep
reads too), stored with their checkpoint in the same transaction; and, when
someone listens, the completions in the page (``projections.completions``). A
reader that must see its own writes asks ``wait_for(head)``: the thread is woken
at once and the reader waits until both models reflect at least that position, so
no GET ever writes.

A rebuild (``projections.rebuild``) stores a new metrics state under a new
generation; the projector notices at its next round, drops what it holds and
loads the rebuilt state, and never saves an older generation over a newer one.

A stored metrics state of another layout than this code folds (an earlier
release's, without revenue: ``metrics.outdated``) is dropped as it is loaded: the
metrics are folded again from the log's start, and the first save replaces that
state whatever its checkpoint, as a rebuild would. Upgrading needs no step.

An event stored at a version newer than this release reads (a node of a newer
release wrote it) is never folded: the read models stop just before it, the
projector stops following, and the node reports itself not ready
(``orderlog.readiness.UnreadableLog``) until it is upgraded.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from orderlog.domain.errors import FutureEventError, OrderlogError, StoreFullError
from orderlog.domain.events import RecordedEvent
from orderlog.domain.policy import OpenOrder
from orderlog.domain.upcasting import CURRENT_VERSIONS
from orderlog.readiness import UnreadableLog
from orderlog.storage.store import EventStore
from projections import completions, metrics
from projections.order_status import OrderStatusModel

NAME = "metrics"
log = logging.getLogger(__name__)

# Called with each page's completions (often none), after the page is read and before
# it is folded.
CompletionListener = Callable[[Sequence[completions.Completion]], None]


class Projector:
    def __init__(
        self,
        store: EventStore,
        status: OrderStatusModel,
        *,
        save_every: float = 1.0,
        page: int = 5000,
        idle: float = 0.5,
        completed: CompletionListener | None = None,
        unreadable: UnreadableLog | None = None,
    ) -> None:
        self.store = store
        self.unreadable = unreadable or UnreadableLog()
        self._stopped_at: FutureEventError | None = None  # the event it stopped before
        self.status = status
        self._save_every = save_every
        self._page = page
        self._idle = idle
        self._completed = completed
        self._round_lock = threading.Lock()  # one round at a time; guards the state
        self._advanced = threading.Condition()
        self._kick = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._state: metrics.State | None = None
        self._generation = 0
        self._position = 0  # of the metrics state
        self._status_position = 0  # of the order-status rows, as last seen
        self._saved_position = 0
        self._saved_at = 0.0
        self._replace_stored = False  # the stored state is outdated: replace, not update

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> Projector:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="orderlog-projector", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop following; store the metrics state if it moved since the last save.

        Returns within ``timeout`` whatever the database does: the state is a
        checkpoint, which the next start can do without (it folds from the last one).
        """
        deadline = time.monotonic() + timeout
        self._stopping.set()
        self._kick.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        saver = threading.Thread(target=self._save_if_moved, name="orderlog-projector-save")
        saver.daemon = True
        saver.start()
        saver.join(max(0.0, deadline - time.monotonic()))
        if saver.is_alive():
            log.warning("the metrics checkpoint was not stored in time; the next start folds on")

    def _save_if_moved(self) -> None:
        try:
            with self._round_lock:
                if self._state is not None and self._position > self._saved_position:
                    self._save()
        except OrderlogError as exc:
            log.warning("the metrics checkpoint was not stored: %s", exc)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def position(self) -> int:
        """The position both read models reflect at least."""
        return min(self._position, self._status_position)

    # -- reading ---------------------------------------------------------------------

    def wait_for(self, position: int, timeout: float) -> bool:
        """Block until both read models reflect ``position``; False on timeout, or at once
        once it has stopped following (at an event it cannot read)."""
        if self.position >= position:
            return True
        if self._stopped_at is not None:
            return False
        if not self.alive:  # no thread (a test, a script): do the round here
            try:
                self.catch_up()
                if self.position >= position or not self.store.wait_readable(position, timeout):
                    return self.position >= position
                self.catch_up()
            except FutureEventError:
                return False  # said once; the models stay just before it
            return self.position >= position
        # Kick a round, and another after each round that fell short: on PostgreSQL an
        # event may be committed and still not readable until older transactions end.
        deadline = time.monotonic() + timeout
        with self._advanced:
            while self.position < position:
                left = deadline - time.monotonic()
                if left <= 0 or self._stopped_at is not None:
                    return False
                self._kick.set()
                self._advanced.wait(left)
            return True

    def report(self) -> dict[str, Any]:
        """The metrics as of the position they reflect (call ``wait_for`` first)."""
        with self._round_lock:
            state = self._load() if self._state is None else self._state
            return metrics.report(state, self._position)

    def counts(self) -> dict[str, int]:
        """Orders per status, as the metrics state has them."""
        with self._round_lock:
            state = self._load() if self._state is None else self._state
            return dict(state["status_counts"])

    def open_orders(self) -> list[OpenOrder]:
        """Every order not yet Completed, as the order-status rows have them (the worker's
        sweep: it calls ``catch_up`` first)."""
        return self.status.open_orders()

    # -- following ---------------------------------------------------------------------

    def catch_up(self) -> int:
        """One round: every event after the models' positions, read once, fed to both.

        Other followers (other nodes, a rebuild) move the order-status checkpoint too;
        the rows continue from wherever it is found (``OrderStatusModel.apply_page``),
        and a checkpoint moved back behind the page read makes this round read again
        from there.

        FutureEventError once it meets an event it cannot read (and at every call after):
        the models then reflect the log up to just before it."""
        stopped = self._stopped_at
        if stopped is not None:
            raise FutureEventError(stopped.type_name, stopped.version, stopped.known)
        with self._round_lock:
            state = self._load() if self._state is None else self._state
            self._reload_if_rebuilt()
            state = self._state or state
            status_at = self.status.checkpoint()
            after = min(self._position, status_at)
            while page := self.store.read_all(after, self._page):
                events, stopped = readable(page)
                if events:
                    self._fold(events, state)
                    status_at = self.status.apply_page(after, events)
                if stopped is not None:
                    break
                if status_at < after:  # a rebuild swapped in behind this page
                    after = status_at
                elif len(page) < self._page:
                    break
                else:
                    after = page[-1].position
            # As stored, not as written here: rows swapped in since may be behind it.
            self._status_position = self.status.checkpoint()
            if self._position > self._saved_position and (
                time.monotonic() - self._saved_at >= self._save_every
            ):
                self._save()
            self._stopped_at = stopped
        with self._advanced:
            self._advanced.notify_all()
        if stopped is not None:
            self.unreadable.met(stopped)
            raise stopped
        return self.position

    def _fold(self, events: Sequence[RecordedEvent], state: metrics.State) -> None:
        """Fold into the metrics what they have not seen of ``events``."""
        fresh = [e for e in events if e.position > self._position]
        if fresh:
            if self._completed is not None:  # before the fold: it closes the orders
                self._completed(completions.fold(fresh, state["open"]))
            metrics.fold(fresh, state)
            self._position = fresh[-1].position

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._kick.wait(self._idle)
            self._kick.clear()
            if self._stopping.is_set():
                return
            try:
                self.catch_up()
            except FutureEventError:
                return  # said once (UnreadableLog); following on would only fail again
            except StoreFullError:
                pass  # the store said so once; the next round tries again
            except OrderlogError as exc:
                log.warning("projector round skipped: %s", exc)
            except Exception:  # a thread's top loop: log and carry on
                log.exception("projector round failed")

    # -- the stored state --------------------------------------------------------------

    def _load(self) -> metrics.State:
        self._position, self._generation, stored = self.store.load_projection(NAME)
        self._state = orjson.loads(stored) if stored else metrics.initial()
        self._replace_stored = metrics.outdated(self._state)
        if self._replace_stored:
            log.info(
                "the stored metrics (at position %d) are of an earlier format, without "
                "revenue: folding them again from the start of the log",
                self._position,
            )
            self._state, self._position = metrics.initial(), 0
        self._saved_position = self._position
        return self._state

    def _reload_if_rebuilt(self) -> None:
        """A rebuild stored a newer generation: what this process holds is stale."""
        _, generation, _ = self.store.load_projection(NAME, with_state=False)
        if generation != self._generation:
            log.info("metrics were rebuilt (generation %d): reloading", generation)
            self._load()

    def _save(self) -> None:
        if self._state is None:
            return
        state = orjson.dumps(self._state)
        if self._replace_stored:
            # Over the outdated state, whose checkpoint this one may not have passed: as a
            # rebuild does, under a new generation (other nodes then load this one).
            self._generation = self.store.replace_projection(NAME, self._position, state)
            self._replace_stored, stored = False, True
        else:
            stored = self.store.save_projection(
                NAME, self._position, state, generation=self._generation
            )
        if stored:
            self._saved_position = self._position
            self._saved_at = time.monotonic()


def readable(
    events: Sequence[RecordedEvent],
) -> tuple[Sequence[RecordedEvent], FutureEventError | None]:
    """The events up to the first one stored at a version newer than this release reads,
    and the error for that one (None when every event is readable). A type unknown
    here passes: every read model skips it."""
    known = CURRENT_VERSIONS
    for index, event in enumerate(events):
        current = known.get(event.type)
        if current is not None and event.event_version > current:
            return events[:index], FutureEventError(event.type, event.event_version, current)
    return events, None
