"""Which CPU the server runs on: one, by default, chosen at start.

The server's threads take turns holding the GIL. Spread over several cores, each
hand-over wakes a thread on another core and a thread coming back from a short
system call can wait a whole switch interval for the GIL: measured here, the
same server answered about twice as many requests per second on one core as
when free to use two (and so did a bare Falcon app). So ``serve`` pins its
process to one CPU before it starts any thread (threads inherit it) and leaves
the other CPUs to everything else, its clients included. Several processes
(``--processes N``) get a CPU each, the N least busy, when N are allowed; with
fewer, none is pinned (two pinned to one CPU would take turns for it). Linux only;
elsewhere, and with ``--cpu none``, nothing is pinned.
"""

from __future__ import annotations

import os
import random
import time

from orderlog.domain.errors import FieldError, ValidationError

SAMPLE_SECONDS = 0.1


def allowed_cpus() -> list[int]:
    if not hasattr(os, "sched_getaffinity"):
        return []
    return sorted(os.sched_getaffinity(0))


def choose_cpu(setting: str, named: str = "--cpu") -> int | None:
    """The CPU to pin to for ``--cpu`` (auto, none or a number), or None for no pinning.

    ``named`` is the flag or variable the setting came from: a refusal names it.
    """
    allowed = allowed_cpus()
    value = setting.strip().lower()
    if value == "none" or (value == "auto" and len(allowed) < 2):
        return None
    if value == "auto":
        return least_busy(allowed)
    if not value.isdigit() or int(value) not in allowed:
        here = ", ".join(map(str, allowed))
        problem = FieldError(named, f"must be auto, none or one of the CPUs allowed here: {here}")
        raise ValidationError([problem])
    return int(value)


def choose_cpus(setting: str, count: int, named: str = "--cpu") -> list[int | None]:
    """A CPU (or None) for each of ``count`` processes, for ``--cpu`` auto or none."""
    if count == 1:
        return [choose_cpu(setting, named)]
    value = setting.strip().lower()
    if value not in ("auto", "none"):
        raise ValidationError(
            [FieldError(named, "a CPU number pins one process: use auto or none")]
        )
    allowed = allowed_cpus()
    if value == "none" or len(allowed) < count:
        return [None] * count
    return list(least_busy_first(allowed)[:count])


def least_busy(cpus: list[int]) -> int:
    """The CPU with the most idle time over a short sample; ties are broken at random,
    so servers started together on an idle machine tend to spread out."""
    return least_busy_first(cpus)[0]


def least_busy_first(cpus: list[int]) -> list[int]:
    """``cpus`` by idle time over a short sample, most idle first, ties in random order."""
    before = _idle_times()
    time.sleep(SAMPLE_SECONDS)  # the sample itself: idle ticks are counted over it
    after = _idle_times()
    idle = {cpu: after.get(cpu, 0) - before.get(cpu, 0) for cpu in cpus}
    shuffled = random.sample(cpus, len(cpus))
    return sorted(shuffled, key=lambda cpu: -idle[cpu])  # stable: ties keep the shuffle


def _idle_times() -> dict[int, int]:
    """Idle plus iowait ticks per CPU, from /proc/stat (empty where there is none)."""
    ticks: dict[int, int] = {}
    try:
        with open("/proc/stat") as stat:
            for line in stat:
                name, *fields = line.split()
                if name.startswith("cpu") and name[3:].isdigit():
                    ticks[int(name[3:])] = int(fields[3]) + int(fields[4])
    except OSError:
        pass
    return ticks


def pin(cpu: int | None) -> None:
    """Pin the calling thread (and every thread it starts later) to ``cpu``."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
