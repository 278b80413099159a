"""The CPU a server spent, read from ``/proc``: the process and every process under it.

A server of several processes (``--processes N``, the bare app's ``--processes``) is
summed, so orderlog with N processes is compared with the bare app with N. Linux only;
elsewhere (or for a server at ``--url``, which has no process here) the figure is None.
"""

from __future__ import annotations

import os
from pathlib import Path

_PROC = Path("/proc")
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (which may hold spaces)."""
    return _fields(_PROC / str(pid) / "stat")


def _fields(stat: Path) -> list[str] | None:
    try:
        text = stat.read_text()
    except OSError:  # the process or thread ended meanwhile
        return None
    return text[text.rfind(")") + 2 :].split()


def _used(fields: list[str]) -> int:
    """User plus system CPU, in clock ticks (fields 14 and 15 of the whole line)."""
    return int(fields[11]) + int(fields[12])


def _children(root: int) -> list[int]:
    """Every live process whose chain of parents reaches ``root``, ``root`` included."""
    parents: dict[int, int] = {}
    for entry in _PROC.iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            parents[int(entry.name)] = int(fields[1])
    tree, grew = {root}, True
    while grew:
        found = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= found
        grew = bool(found)
    return sorted(tree)


def cpu_seconds(pid: int | None) -> float | None:
    """User plus system CPU of ``pid`` and its descendants, in seconds (None: not known)."""
    if pid is None or not _PROC.exists():
        return None
    total = 0
    for each in _children(pid):
        fields = _stat(each)
        if fields is not None:
            total += _used(fields)
    return total / _TICKS


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """Each live thread of ``pid``: its user plus system CPU in seconds, by native id."""
    seconds = {}
    for task in (_PROC / str(pid) / "task").iterdir():
        fields = _fields(task / "stat")
        if fields is not None:
            seconds[int(task.name)] = _used(fields) / _TICKS
    return seconds


def per_item_us(before: float | None, after: float | None, items: int) -> float | None:
    """CPU microseconds per item between two readings."""
    if before is None or after is None or items <= 0:
        return None
    return round((after - before) * 1e6 / items, 1)
