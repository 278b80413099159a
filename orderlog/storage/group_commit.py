"""Group commit: one writer thread commits whatever appends are waiting, together.

SQLite allows one writer at a time and every commit costs a sync; funnelling
appends through one thread and committing them in batches turns N commits into
one. The thread knows nothing of SQL: it hands each batch to a ``commit``
callable, which sets every request's own result or error. A caller is woken only
after the batch it was in has committed (or failed).

No caller waits longer than its ``timeout``. A request the writer has not taken
yet is withdrawn then, so it is certainly not written (AppendFailedError); one in
a batch already committing may or may not land (OutcomeUnknownError), which the
caller must say as such.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from orderlog.domain.errors import AppendFailedError, OutcomeUnknownError, StoreUnavailableError

log = logging.getLogger(__name__)

_STOP = object()


class Request:
    """One caller's unit of work; ``result`` or ``error`` is set before it is finished.

    The wake-up is a bare lock, taken at creation and released once by the writer:
    cheaper than a threading.Event (no condition variable), at one per append. A
    second bare lock is the request's owner: whoever takes it first, the writer (to
    commit it) or the caller (giving up), has it, and the other knows at once.
    """

    __slots__ = ("_done", "_owner", "error", "payload", "result")

    def __init__(self, payload: Any) -> None:
        self.payload = payload
        self.result: Any = None
        self.error: BaseException | None = None
        self._done = threading.Lock()
        self._done.acquire()
        self._owner = threading.Lock()

    def finish(self) -> None:
        self._done.release()

    def wait(self, timeout: float) -> bool:
        return self._done.acquire(timeout=timeout)

    def take(self) -> bool:
        """Make it the caller's (withdrawn) or the writer's (to commit); False if the
        other side had it first."""
        return self._owner.acquire(blocking=False)


class GroupCommitter:
    def __init__(
        self,
        commit: Callable[[list[Request]], None],
        *,
        max_batch: int = 1000,
        name: str = "orderlog-writer",
        on_thread_start: Callable[[], None] | None = None,
        on_thread_stop: Callable[[], None] | None = None,
    ) -> None:
        self._commit = commit
        self._max_batch = max_batch
        self._name = name
        self._on_start = on_thread_start
        self._on_stop = on_thread_stop
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._accepting = False
        self.batches = 0
        self.committed = 0

    @property
    def waiting(self) -> int:
        """Requests submitted and not yet taken into a batch."""
        return self._queue.qsize()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._accepting = True
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop taking work, commit what was already submitted, then end the thread."""
        with self._lock:
            thread, self._thread = self._thread, None
            self._accepting = False
            if thread is None:
                return
            self._queue.put(_STOP)
        thread.join(timeout)

    def submit(self, payload: Any, timeout: float | None = None) -> Any:
        """Commit ``payload`` with whatever else waits; return its result or raise its error.

        Past ``timeout`` seconds: AppendFailedError if the writer had not taken it
        (it never will), OutcomeUnknownError if it is in a batch being committed.
        """
        request = Request(payload)
        with self._lock:
            if not self._accepting or self._thread is None:
                raise StoreUnavailableError("the event store is closed")
            writer = self._thread
            self._queue.put(request)
        deadline = None if timeout is None else time.monotonic() + timeout
        while not request.wait(1.0 if deadline is None else _until(deadline, 1.0)):
            if deadline is not None and time.monotonic() >= deadline:
                if request.take():
                    raise AppendFailedError(
                        f"the database did not take the append within {timeout:g} s"
                    )
                if not request.wait(0):
                    raise OutcomeUnknownError(
                        "", f"the database did not confirm the append within {timeout:g} s"
                    )
                break  # answered at the very last moment
            # Never wait on a writer that is gone: it will not answer.
            if not writer.is_alive():
                if request.take():
                    raise StoreUnavailableError("the event store's writer has stopped")
                raise OutcomeUnknownError("", "the event store's writer stopped while committing")
        if request.error is not None:
            raise request.error
        return request.result

    def _run(self) -> None:
        if self._on_start:
            try:
                self._on_start()
            except Exception:  # the database may come back: each batch connects anew
                log.exception("the writer could not connect; appends will try again")
        try:
            stopping = False
            while not stopping:
                item = self._queue.get()
                if item is _STOP:
                    break
                batch = [item] if item.take() else []
                # Take what queued up while the last commit ran; never wait for more.
                while len(batch) < self._max_batch:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is _STOP:
                        stopping = True
                        break
                    if item.take():  # else its caller gave up on it: never written
                        batch.append(item)
                if batch:
                    self._commit_and_wake(batch)
        finally:
            if self._on_stop:
                self._on_stop()

    def _commit_and_wake(self, batch: list[Request]) -> None:
        try:
            self._commit(batch)
            self.batches += 1
            self.committed += len(batch)
        except Exception as exc:  # the thread's top loop: answer every caller, log, carry on
            log.exception("group commit of %d appends failed", len(batch))
            _fail(batch, exc)
        except BaseException as exc:  # the thread is ending: still answer this batch
            _fail(batch, exc)
            raise
        finally:
            for request in batch:
                request.finish()


def _until(deadline: float, most: float) -> float:
    return max(0.0, min(most, deadline - time.monotonic()))


def _fail(batch: list[Request], exc: BaseException) -> None:
    for request in batch:
        if request.error is None:
            request.result = None
            request.error = StoreUnavailableError(f"the append was not committed: {exc!r}")
