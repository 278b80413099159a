"""What the core reports as it works, to whoever listens: the seam for metrics exporters.

The core calls these after the fact and never imports an exporter; ``api`` wires a
Prometheus one. A listener must be quick: it is called on the writer's thread.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol


class StoreObserver(Protocol):
    def committed(self, appends: int, events: Mapping[str, int]) -> None:
        """A transaction committed ``appends`` appends, with these events by type."""
