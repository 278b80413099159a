"""The order worker: claims the orders a queue.Queue hands it and completes them when done.

The queue is only a wake-up signal; the log decides. One processor thread takes
every order waiting in the queue and claims them all in one commit (each at the
version it was last seen at, so two claims never both win). A claimed order's
simulated work is a deadline on a timer heap, not a sleeping thread: when it
falls due the order is completed, together with every other order due then and
the next claims, in one commit. So the orders in work at once are bounded by a
setting, not by threads. A sweep thread keeps the order-status read model current
and enqueues what no queue holds: orders left Pending by a crash, orders a dead
node had claimed once their lease ran out. The decisions themselves are pure functions in
``orderlog.domain.policy``. On stop, orders whose work is done by the deadline are
completed; the rest stay Processing in the log and are claimed again at the next
start; orders only queued stay Pending. An event newer than this release reads (a
node of a newer release wrote it) stops the sweep for good, and leaves its order
alone (``orderlog.readiness.UnreadableLog``): the node is not ready until upgraded.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from orderlog.domain.errors import (
    ConcurrencyError,
    FutureEventError,
    OrderlogError,
    StoreFullError,
)
from orderlog.domain.order import OrderState, Status
from orderlog.domain.policy import (
    ClaimPolicy,
    OpenOrder,
    finish_before_stop,
    may_claim,
    work_done_at,
    worker_id_for,
)
from orderlog.readiness import UnreadableLog
from orderlog.service import OrderService, Seen

log = logging.getLogger(__name__)

# A completion the store could not take is tried again this much later.
RETRY_AFTER = 1.0


class OpenOrders(Protocol):
    """The read model the sweep looks at, a hint of what needs work. It lives in
    ``projections``, which the core may not import, so the worker is handed it: a
    node's projector, whose rounds read each page of the log once for every model."""

    def catch_up(self) -> object:
        """Bring the read model up to date with the log."""
        ...

    def open_orders(self) -> list[OpenOrder]:
        """Every order not yet Completed, as the read model has it."""
        ...


@dataclass(frozen=True, slots=True)
class Job:
    """An order handed to the processor.

    ``state`` is the order as its placing left it (the log's own answer), or None:
    then the processor reads the stream, and if the sweep saw it at ``seen_version``
    and it has moved on since, leaves it to the next sweep. The sweep reads a read
    model: a hint of what needs work, never the ground for a claim.
    """

    order_id: str
    state: OrderState | None
    reclaim: bool = False  # a Processing order whose claim the sweep found abandoned
    seen_version: int | None = None


_STOP = None
# (work done at, tie-breaker, order id, state after the claim); no state: a completion
# to try again, from the order as the log has it by then.
_InWork = tuple[float, int, str, OrderState | None]


class Worker:
    def __init__(
        self,
        service: OrderService,
        read_model: OpenOrders,
        *,
        max_in_work: int = 1000,
        processing_delay: float = 0.2,
        node: str = "node",
        claim_timeout: float = 30.0,
        pending_grace: float = 5.0,
        sweep_interval: float = 1.0,
        clock: Callable[[], float] = time.time,
        unreadable: UnreadableLog | None = None,
    ) -> None:
        self.service = service
        self.unreadable = unreadable or UnreadableLog()
        self.node = node
        self.incarnation = uuid.uuid4().hex[:8]
        self.worker_id = worker_id_for(node, self.incarnation)
        self.policy = ClaimPolicy(node, self.incarnation, claim_timeout, pending_grace)
        self._max_in_work = max_in_work
        self._delay = processing_delay
        self._sweep_interval = sweep_interval
        self._clock = clock
        self._metadata = {"node": node, "worker": self.worker_id}
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._scheduled: set[str] = set()  # queued or in work on this node
        self._accepting = False
        self._stopping = threading.Event()
        self._stop_deadline = math.inf
        self._processor: threading.Thread | None = None
        self._sweeper: threading.Thread | None = None
        self._read_model = read_model
        self._sweep_lock = threading.Lock()  # one sweep at a time: the thread's or a caller's
        self._in_work = 0
        self._left_processing = 0
        # Written by the processor thread alone, so they need no lock to stay exact.
        self.processed = 0
        self.failures = 0

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        """Recover from the log, then start the processor and the sweep."""
        with self._lock:
            if self._processor is not None:
                return
            self._accepting = True
            self._stopping.clear()
            self._stop_deadline = math.inf
            self._left_processing = 0
        self.sweep(starting=True)
        self._processor = threading.Thread(target=self._run, name="orderlog-worker", daemon=True)
        self._processor.start()
        self._sweeper = threading.Thread(
            target=self._sweep_loop, name="orderlog-sweep", daemon=True
        )
        self._sweeper.start()

    def stop(self, timeout: float = 10.0, grace: float = 5.0) -> bool:
        """Stop taking orders; complete those whose work is done within ``timeout``.

        Orders only queued stay Pending in the log, orders whose work would end
        later stay Processing; both are picked up at the next start. Returns False
        if any order was left Processing. Waits at most ``timeout`` + ``grace`` (for
        a last commit that began before the deadline).
        """
        with self._lock:
            self._accepting = False
        self._stop_deadline = time.monotonic() + timeout
        self._stopping.set()
        dropped = self._drain_queue()
        if dropped:
            log.info("left %d queued orders Pending in the log for the next start", dropped)
        self._queue.put(_STOP)  # wakes a processor waiting on the queue
        processor, sweeper = self._processor, self._sweeper
        self._processor = self._sweeper = None
        # The last commit may end a little after the deadline: give it a moment.
        for thread in (processor, sweeper):
            if thread is not None:
                thread.join(max(0.0, self._stop_deadline - time.monotonic() + grace))
        finished = processor is None or not processor.is_alive()
        return finished and self._left_processing == 0

    @property
    def alive(self) -> bool:
        threads = (self._processor, self._sweeper)
        return all(t is not None and t.is_alive() for t in threads)

    @property
    def in_work(self) -> int:
        """Orders claimed here whose work is not done yet."""
        return self._in_work

    @property
    def queued(self) -> int:
        """Orders waiting for the processor."""
        return self._queue.qsize()

    def notify(self, order_id: str, state: OrderState | None = None) -> None:
        """Wake the processor for an order just placed on this node.

        ``state`` is the order as its placing left it: the processor claims at that
        version without reading the stream again (a stale one only loses the claim).
        """
        self._schedule(Job(order_id, state))

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing is queued or in work; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._scheduled, timeout)

    def _schedule(self, job: Job) -> bool:
        with self._lock:
            if not self._accepting or job.order_id in self._scheduled:
                return False
            self._scheduled.add(job.order_id)
            # Under the lock: stop() must not slip its sentinel in before this job.
            self._queue.put(job)
            return True

    def _unschedule(self, order_ids: Iterable[str]) -> None:
        with self._idle:
            self._scheduled.difference_update(order_ids)
            self._idle.notify_all()

    def _drain_queue(self) -> int:
        dropped = []
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not _STOP:
                dropped.append(job.order_id)
        self._unschedule(dropped)
        return len(dropped)

    # -- processing --------------------------------------------------------------

    def _run(self) -> None:
        heap: list[_InWork] = []
        ties = itertools.count()
        while True:
            if self._stopping.is_set() and not (
                heap and finish_before_stop(heap[0][0], self._stop_deadline)
            ):
                self._leave_processing(heap)
                return
            jobs = self._take(len(heap), heap[0][0] if heap else None)
            if jobs and self._stopping.is_set():
                self._unschedule(job.order_id for job in jobs)  # never claimed: still Pending
                jobs = []
            now = time.monotonic()
            due = []
            while heap and heap[0][0] <= now:
                due.append(heapq.heappop(heap))
            if jobs or due:
                try:
                    self._advance(jobs, due, heap, ties)
                except Exception:  # the thread's top loop: log, keep every order accounted for
                    self.failures += 1
                    log.exception("processing %d orders failed; trying again", len(jobs))
                    self._unschedule(job.order_id for job in jobs)  # the sweep finds them again
                    for _, tie, order_id, state in due:
                        heapq.heappush(heap, (now + RETRY_AFTER, tie, order_id, state))
            self._in_work = len(heap)

    def _take(self, in_work: int, next_due: float | None) -> list[Job]:
        """The jobs waiting now (at most what capacity allows), or none once ``next_due`` comes."""
        timeout = None if next_due is None else max(0.0, next_due - time.monotonic())
        if self._stopping.is_set():
            if timeout:
                time.sleep(timeout)  # only the timer is left: the work of orders in hand
            return []
        if in_work >= self._max_in_work:
            self._stopping.wait(timeout)  # wakes when the next order is done, or on stop
            return []
        try:
            job = self._queue.get(timeout=timeout)
        except queue.Empty:
            return []
        jobs: list[Job] = []
        room = self._max_in_work - in_work
        while job is not _STOP:
            jobs.append(job)
            if len(jobs) >= room:
                break
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
        return jobs

    def _advance(
        self, jobs: list[Job], due: list[_InWork], heap: list[_InWork], ties: itertools.count
    ) -> None:
        """Claim ``jobs`` and complete ``due`` in one commit; put new claims on the heap."""
        claims, skipped = self._claims(jobs, heap, ties)
        completions, gone = self._completions(due)
        completed, claimed = self.service.complete_and_start(
            completions, claims, worker_id=self.worker_id, metadata=self._metadata
        )
        recorded_at = time.monotonic()
        finished = skipped + gone
        for seen, outcome in zip(completions, completed, strict=True):
            if isinstance(outcome, OrderState):
                self.processed += 1
                finished.append(seen.order_id)
            elif isinstance(outcome, ConcurrencyError):
                log.warning(
                    "order %s was re-claimed by another worker while in hand", seen.order_id
                )
                finished.append(seen.order_id)
            else:  # the claim is still ours: nobody else will complete it, so try again,
                # from the log (the completion may have landed with its answer lost)
                self._failed("completing", seen.order_id, outcome)
                retry = (recorded_at + RETRY_AFTER, next(ties), seen.order_id, None)
                heapq.heappush(heap, retry)
        for seen, outcome in zip(claims, claimed, strict=True):
            if isinstance(outcome, OrderState):
                done_at = work_done_at(recorded_at, self._delay)
                heapq.heappush(heap, (done_at, next(ties), seen.order_id, outcome))
                continue
            # Lost the claim; or it failed, and the sweep reads the order again (a claim
            # whose answer was lost is found ours there, and taken back in hand).
            finished.append(seen.order_id)
            if not isinstance(outcome, ConcurrencyError):
                self._failed("claiming", seen.order_id, outcome)
        self._unschedule(finished)

    def _claims(
        self, jobs: list[Job], heap: list[_InWork], ties: itertools.count
    ) -> tuple[list[Seen], list[str]]:
        """The jobs to claim, and those to let go; a claim of this worker's own whose answer
        was lost goes straight back in hand."""
        claims: list[Seen] = []
        skipped: list[str] = []
        for job in jobs:
            state = job.state if job.state is not None else self._read(job.order_id)
            if state is None:  # a stream this release cannot read: left alone
                skipped.append(job.order_id)
                continue
            if state.status is Status.PROCESSING and state.worker_id == self.worker_id:
                # Claimed here by a commit whose answer was lost: the log says it is ours,
                # so it is in hand again (never claimed a second time).
                done_at = work_done_at(time.monotonic(), self._delay)
                heapq.heappush(heap, (done_at, next(ties), job.order_id, state))
                continue
            moved = job.seen_version is not None and state.version != job.seen_version
            if not moved and may_claim(state.status, job.reclaim):
                claims.append(Seen(job.order_id, state))
            else:  # done already, claimed by someone alive, or moved on since the sweep
                skipped.append(job.order_id)
        return claims, skipped

    def _completions(self, due: list[_InWork]) -> tuple[list[Seen], list[str]]:
        """The orders whose work is done, to complete, and those no longer to complete."""
        completions: list[Seen] = []
        gone: list[str] = []
        for _, _, order_id, in_hand in due:
            if in_hand is None:  # a completion that failed: the log says where it stands
                in_hand = self._read(order_id)
                if (
                    in_hand is None
                    or in_hand.status is not Status.PROCESSING
                    or in_hand.worker_id != self.worker_id
                ):
                    gone.append(order_id)  # completed after all, or no longer ours
                    continue
            completions.append(Seen(order_id, in_hand))
        return completions, gone

    def _read(self, order_id: str) -> OrderState | None:
        """The order as its stream has it; None for a stream holding an event newer than
        this release reads."""
        try:
            return self.service.state(order_id)
        except FutureEventError as exc:
            self.unreadable.met(exc)
            return None

    def _failed(self, doing: str, order_id: str, error: OrderlogError) -> None:
        """Count a claim or completion the store did not take, and say why."""
        self.failures += 1
        if not isinstance(error, StoreFullError):  # the store said that once
            log.warning("%s order %s failed: %s", doing, order_id, error)

    def _leave_processing(self, heap: list[_InWork]) -> None:
        self._left_processing = len(heap)
        if heap:
            log.info(
                "left %d orders Processing in the log (work not done by the deadline); "
                "they are claimed again at the next start",
                len(heap),
            )
        self._unschedule(order_id for _, _, order_id, _ in heap)
        heap.clear()
        self._in_work = 0

    # -- sweep ---------------------------------------------------------------------

    def sweep(self, starting: bool = False) -> int:
        """Enqueue what the log says needs work and no queue here holds; returns how many.

        ``starting`` picks up every Pending order at once, not only this node's. Nothing
        once the log holds an event newer than this release reads: the read model
        stopped before it, and what it shows would only grow stale.
        """
        with self._sweep_lock:
            if self.unreadable.reason is not None:
                return 0
            # The persisted read model: catching up reads only what came since its
            # checkpoint, so a restart costs the same at a million events as at a thousand.
            try:
                self._read_model.catch_up()
            except FutureEventError as exc:
                self.unreadable.met(exc)
                return 0
            now = self._clock()
            found = [
                order
                for order in self._read_model.open_orders()
                if self.policy.needs_pickup(order, now, starting)
            ]
        count = 0
        for order in found:
            reclaim = order.status is Status.PROCESSING
            count += self._schedule(Job(order.order_id, None, reclaim, order.version))
        return count

    def _sweep_loop(self) -> None:
        while not self._stopping.wait(self._sweep_interval):
            try:
                self.sweep()
            except StoreFullError:
                pass  # the store said so once; the next sweep tries again
            except OrderlogError as exc:
                log.warning("sweep skipped: %s", exc)
            except Exception:  # a thread's top loop
                log.exception("sweep failed")
