"""Where the processes run: the server on one core, the load generator on another.

On a small machine a load client sharing the server's core steals the CPU it is
measuring, so by default the server (and every measured child process) is pinned
to the first allowed CPU and this process, the client, to the others. Linux only
(os.sched_setaffinity); elsewhere, or with one CPU, nothing is pinned.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


@dataclass
class Placement:
    pinned: bool
    server_cpus: set[int] = field(default_factory=set)
    client_cpus: set[int] = field(default_factory=set)
    original: set[int] = field(default_factory=set)

    def describe(self) -> str:
        if not self.pinned:
            return f"not pinned (all processes may use CPUs {_cpus(self.original)})"
        return (
            f"server and measured children on CPU {_cpus(self.server_cpus)}, "
            f"load generator (this process) on CPU {_cpus(self.client_cpus)}"
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "pinned": self.pinned,
            "server_cpus": sorted(self.server_cpus),
            "client_cpus": sorted(self.client_cpus),
            "description": self.describe(),
        }

    def server_preexec(self) -> Callable[[], None] | None:
        """For subprocess.Popen: pin the child before it starts any thread."""
        return self._preexec(self.server_cpus)

    def client_preexec(self) -> Callable[[], None] | None:
        """For subprocess.run of a load client (wrk): pin it to the client's CPUs."""
        return self._preexec(self.client_cpus)

    def _preexec(self, cpus: Sequence[int]) -> Callable[[], None] | None:
        if not self.pinned:
            return None
        chosen = set(cpus)
        return lambda: os.sched_setaffinity(0, chosen)

    def run_here_as_server(self) -> str:
        """Place this process as the server would be, for in-process measurements (the
        store bench): on the server CPU when pinned; otherwise where ``orderlog serve``
        places itself by default (``--cpu auto``). Returns where that is."""
        if self.pinned:
            os.sched_setaffinity(0, self.server_cpus)
            return f"CPU {_cpus(self.server_cpus)}, as the pinned server"
        from api.cpu import choose_cpu, pin

        cpu = choose_cpu("auto")
        pin(cpu)
        if cpu is None:
            return "not pinned, as orderlog serve with --cpu auto on one CPU"
        return f"CPU {cpu}, where orderlog serve's default --cpu auto would put itself"

    def run_here_as_client(self) -> None:
        if self.original:
            os.sched_setaffinity(0, self.client_cpus if self.pinned else self.original)

    def restore(self) -> None:
        if self.pinned:
            os.sched_setaffinity(0, self.original)


def place(pin: bool) -> Placement:
    """Split the allowed CPUs: first one for the server, the rest for the client."""
    if not hasattr(os, "sched_getaffinity"):
        return Placement(False)
    allowed = set(os.sched_getaffinity(0))
    if not pin or len(allowed) < 2:
        return Placement(False, original=allowed)
    ordered = sorted(allowed)
    placement = Placement(True, {ordered[0]}, set(ordered[1:]), allowed)
    placement.run_here_as_client()
    return placement


def _cpus(cpus: set[int]) -> str:
    return ",".join(str(c) for c in sorted(cpus)) or "?"
