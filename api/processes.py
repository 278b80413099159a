"""Where a process stands among the processes serving one node, for ``/readyz`` and metrics.

With ``--processes N`` a supervisor (``api.supervisor``) forks N children; child k
is a node of its own (node id ``<node>-<k>``). The supervisor keeps one small
JSON file in its private directory saying how many children are serving (started
and not since dead), rewritten whole (temporary name, rename) whenever that
changes; a child reads it when ``/readyz`` asks, which is rare and costs one
small file read. The same directory holds prometheus_client's multiprocess files.
A process serving alone is process 1 of 1, and serving while it answers.

It imports the standard library only.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ProcessPlace:
    """This process's index among ``configured`` processes, and what they share."""

    index: int = 1
    configured: int = 1
    status_file: str | None = None  # the supervisor's; None: this process serves alone
    metrics_dir: str | None = None  # prometheus_client's multiprocess directory, if any

    def describe(self) -> dict[str, Any]:
        """``/readyz``'s account of the processes: this one, and how many serve."""
        serving = self.configured if self.status_file is None else read_serving(self.status_file)
        return {
            "process": {"index": self.index, "pid": os.getpid()},
            "processes": {"configured": self.configured, "serving": serving},
        }


def write_status(path: str, serving: int) -> None:
    """Replace the status file in one step: a reader sees the old or the new, whole."""
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w") as out:
        json.dump({"serving": serving}, out)
    os.replace(temporary, path)


def read_serving(path: str) -> int | None:
    """How many processes serve, as the supervisor last wrote it; None if unreadable
    (the supervisor is gone, and this process with it in a moment)."""
    try:
        with open(path) as status:
            return int(json.load(status)["serving"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
