"""What ``/readyz`` reports about one process of a node: ready only when every part is.

A plain value, read at once from what the parts last found (the database probe, the
store's writer, the worker); ``api.node`` gathers it. It imports nothing.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Readiness:
    node: str
    database: bool
    writer: bool
    worker: bool
    writable: bool = True  # False while appends fail for a full disk
    node_lock: bool = True  # this process holds the node id on the database

    @property
    def ready(self) -> bool:
        return self.database and self.writer and self.worker and self.writable and self.node_lock
