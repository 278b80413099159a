"""The order worker: threads that take order ids from a queue.Queue and process them.

The queue is only a wake-up signal. The log decides: each job reads the order's
stream, claims it with the expected version (so two workers never both win),
does the simulated work and appends OrderCompleted. A periodic sweep follows the
log and enqueues what no queue holds: orders left Pending by a crash, orders a
dead node had claimed once their lease ran out. Stop is by sentinel; orders in
hand are finished, orders only queued stay Pending in the log.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable

from orderlog.errors import ConcurrencyError, InvalidTransitionError, OrderlogError
from orderlog.open_orders import OpenOrder, OpenOrders, incarnation_of, worker_id_for
from orderlog.order import OrderState, Status
from orderlog.service import OrderService

log = logging.getLogger(__name__)

_STOP = None


MAX_LEASE_DOUBLINGS = 6


def lease(claim_timeout: float, attempt: int) -> float:
    """How long claim number ``attempt`` lasts: doubled on every re-claim (up to 64x).

    An order whose work outlasts the lease would otherwise be taken over forever,
    each completion refused because of the next take-over; growing leases let a
    slow order finish on its own after a few attempts.
    """
    return claim_timeout * 2 ** min(max(attempt - 1, 0), MAX_LEASE_DOUBLINGS)


class Worker:
    def __init__(
        self,
        service: OrderService,
        *,
        threads: int = 4,
        processing_delay: float = 0.2,
        node: str = "node",
        claim_timeout: float = 30.0,
        pending_grace: float = 5.0,
        sweep_interval: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.service = service
        self.node = node
        self.incarnation = uuid.uuid4().hex[:8]
        self._threads_wanted = threads
        self._delay = processing_delay
        self._claim_timeout = claim_timeout
        self._grace = pending_grace
        self._sweep_interval = sweep_interval
        self._clock = clock
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._scheduled: set[str] = set()  # queued or in hand on this node
        self._reclaim: set[str] = set()  # Processing orders this node may take over
        self._known: dict[str, OrderState] = {}  # states handed over by notify()
        self._accepting = False
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sweeper: threading.Thread | None = None
        self._open = OpenOrders()
        self.processed = 0
        self.failures = 0

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        """Recover from the log, then start the threads and the sweep."""
        with self._lock:
            if self._threads:
                return
            self._accepting = True
            self._stopping.clear()
        self._sweep(starting=True)
        for index in range(self._threads_wanted):
            thread = threading.Thread(
                target=self._run,
                args=(worker_id_for(self.node, self.incarnation, index),),
                name=f"orderlog-worker-{index}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)
        self._sweeper = threading.Thread(
            target=self._sweep_loop, name="orderlog-sweep", daemon=True
        )
        self._sweeper.start()

    def stop(self, timeout: float = 10.0) -> bool:
        """Finish the orders in hand within ``timeout``; queued ones stay Pending in the log.

        Returns False if a thread was still busy when the time ran out.
        """
        with self._lock:
            self._accepting = False
            self._stopping.set()
        dropped = self._drain_queue()
        if dropped:
            log.info("left %d queued orders Pending in the log for the next start", dropped)
        for _ in self._threads:
            self._queue.put(_STOP)
        deadline = time.monotonic() + timeout
        for thread in [*self._threads, *([self._sweeper] if self._sweeper else [])]:
            thread.join(max(0.0, deadline - time.monotonic()))
        finished = not any(t.is_alive() for t in self._threads)
        self._threads = []
        self._sweeper = None
        return finished

    def _drain_queue(self) -> int:
        dropped = 0
        while True:
            try:
                order_id = self._queue.get_nowait()
            except queue.Empty:
                return dropped
            with self._idle:
                self._scheduled.discard(order_id)  # type: ignore[arg-type]
                self._reclaim.discard(order_id)  # type: ignore[arg-type]
                self._known.pop(order_id, None)  # type: ignore[arg-type]
                self._idle.notify_all()
            dropped += 1

    @property
    def alive(self) -> bool:
        return bool(self._threads) and all(t.is_alive() for t in self._threads)

    def notify(self, order_id: str, state: OrderState | None = None) -> None:
        """Wake a worker for an order just placed on this node.

        ``state`` is the order as its placing left it: the worker claims at that
        version without reading the stream again (a stale one only loses the claim).
        """
        with self._lock:
            if not self._accepting or order_id in self._scheduled:
                return
            self._scheduled.add(order_id)
            if state is not None:
                self._known[order_id] = state
            # Under the lock: stop() must not slip its sentinels in before this id.
            self._queue.put(order_id)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing is queued or in hand; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._scheduled, timeout)

    # -- processing --------------------------------------------------------------

    def _run(self, worker_id: str) -> None:
        while True:
            order_id = self._queue.get()
            if order_id is _STOP:
                return
            try:
                # No connection is held across the job: the store borrows one from the
                # pool per read and appends go through its writer, so a thread sleeping
                # through simulated work ties up no database connection.
                self._process(order_id, worker_id)
            except Exception:  # a thread's top loop: log with the traceback and carry on
                self.failures += 1
                log.exception("processing order %s failed; the sweep will retry it", order_id)
            finally:
                with self._idle:
                    self._scheduled.discard(order_id)
                    self._reclaim.discard(order_id)
                    self._idle.notify_all()

    def _process(self, order_id: str, worker_id: str) -> None:
        with self._lock:
            known = self._known.pop(order_id, None)
        state = known or self.service.state(order_id)
        if state.status is Status.PROCESSING:
            with self._lock:
                allowed = order_id in self._reclaim
            if not allowed:
                return
        elif state.status is not Status.PENDING:
            return
        meta = {"node": self.node, "worker": worker_id}
        try:
            state = self.service.start_processing(order_id, state, worker_id, meta)
        except (ConcurrencyError, InvalidTransitionError):
            return  # another worker claimed it first: exactly one claim wins
        if self._delay:
            time.sleep(self._delay)  # the simulated work itself, not a synchronisation
        try:
            self.service.complete_order(order_id, state, meta)
        except ConcurrencyError:
            log.warning("order %s was re-claimed by another worker while in hand", order_id)
            return
        self.processed += 1

    # -- sweep ---------------------------------------------------------------------

    def _sweep_loop(self) -> None:
        while not self._stopping.wait(self._sweep_interval):
            try:
                self._sweep(starting=False)
            except OrderlogError as exc:
                log.warning("sweep skipped: %s", exc)
            except Exception:  # a thread's top loop
                log.exception("sweep failed")

    def _sweep(self, starting: bool) -> None:
        """Enqueue what the log says needs work and no queue on this node holds."""
        with self.service.store.db.connection_context():
            self._open.catch_up(self.service.store)
        now = self._clock()
        due = [o for o in list(self._open.orders.values()) if self._is_due(o, now, starting)]
        for order in due:
            with self._lock:
                if not self._accepting or order.order_id in self._scheduled:
                    continue
                self._scheduled.add(order.order_id)
                if order.status == Status.PROCESSING.value:
                    self._reclaim.add(order.order_id)
                self._queue.put(order.order_id)

    def _is_due(self, order: OpenOrder, now: float, starting: bool) -> bool:
        if order.status == Status.PENDING.value:
            # Our own orders, and every order at start-up, at once; another live
            # node's after a grace period, in case its queue was lost with it.
            return starting or order.node == self.node or now - order.since >= self._grace
        if incarnation_of(order.worker_id) == self.incarnation:
            return False  # in hand here
        if order.node == self.node:
            return True  # claimed by this node before a restart: nobody is working on it
        return now - order.since >= lease(self._claim_timeout, order.attempt)
