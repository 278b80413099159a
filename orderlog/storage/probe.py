"""The database probe: a thread that keeps asking whether the database answers.

Readiness must answer at once whatever the database does: a load balancer asks
often, and a question that waits on a stalled database tells it nothing in time.
So the question is asked here, from a thread of its own, once a ``interval``, each
time bounded by the database's own timeout; readiness reads the last answer, and
counts a question left unanswered for longer than ``patience`` as a no.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class DatabaseProbe:
    """``ping`` asks whether the database answers; ``writable`` whether appends can be
    written (it looks for room itself once the disk was found full); ``node_lock``
    whether this process still holds its node id (taken again after a reconnect)."""

    def __init__(
        self,
        ping: Callable[[], bool],
        writable: Callable[[], bool] = lambda: True,
        node_lock: Callable[[], bool] = lambda: True,
        *,
        interval: float = 1.0,
        patience: float = 1.0,
    ) -> None:
        self._ping = ping
        self._writable = writable
        self._node_lock = node_lock
        self.writable = True
        self.node_lock = True
        self._interval = interval
        self._patience = patience
        self._ok = True  # the store was opened (and so answered) before the probe starts
        self._asking_since: float | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="orderlog-probe", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Stop asking; a question in flight is left to its own bound (the thread is a daemon)."""
        self._stopping.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)

    @property
    def ok(self) -> bool:
        """Whether the database answered the last question, and none is overdue."""
        asking = self._asking_since
        if asking is not None and time.monotonic() - asking > self._patience:
            return False
        return self._ok

    def _run(self) -> None:
        while not self._stopping.wait(self._interval):
            self._asking_since = time.monotonic()
            try:
                ok = self._ping()
                if ok:
                    self.writable = self._writable()
                    self.node_lock = self._node_lock()
            except Exception:  # a thread's top loop: a failed question is a no
                log.exception("database probe failed")
                ok = False
            if ok != self._ok:
                if ok:
                    log.warning("the database answers again")
                else:
                    log.warning("the database does not answer: this node is not ready")
            self._ok = ok
            self._asking_since = None
