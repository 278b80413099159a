"""What ``/readyz`` reports about one process of a node: ready only when every part is.

A plain value, read at once from what the parts last found (the database probe, the
store's writer, the worker, whether the log can still be read); ``api.node`` gathers
it. It imports the standard library and the domain's errors.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from orderlog.domain.errors import FutureEventError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Readiness:
    node: str
    database: bool
    writer: bool
    worker: bool
    writable: bool = True  # False while appends fail for a full disk
    node_lock: bool = True  # this process holds the node id on the database
    # Why this process stopped following the log (an event newer than it reads); None
    # while it follows.
    log: str | None = None

    @property
    def ready(self) -> bool:
        return (
            self.database
            and self.writer
            and self.worker
            and self.writable
            and self.node_lock
            and self.log is None
        )


class UnreadableLog:
    """Whether this process met an event newer than its release reads (a node of a newer
    release wrote it after this one started), shared by everything here that follows
    the log: the first to meet one says so in one line, each then stops following,
    and readiness reports it until the process is replaced by an upgraded one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reason: str | None = None

    @property
    def reason(self) -> str | None:
        """``holds OrderPlaced v3; this release reads up to v2``, or None."""
        return self._reason

    def met(self, error: FutureEventError) -> None:
        """Note the event met; only the first is said (once per process)."""
        with self._lock:
            if self._reason is not None:
                return
            self._reason = (
                f"holds {error.type_name} v{error.version}; this release reads up to v{error.known}"
            )
        log.error("stopped following the log: it %s (upgrade every node together)", self._reason)
