"""A caller's deadline, carried to the store without passing it through every call.

A request that waited for a thread has less time left to wait on the database:
its answer is promised within a bound counted from its arrival, not from the
moment its append reaches the writer. The HTTP layer sets the deadline for the
request being served (``set_until``, ``reset``); the store bounds its wait by whichever comes
first, its own timeout or the caller's deadline. A context variable keeps each
thread's (each request's) deadline its own.
"""

from __future__ import annotations

import time
from contextvars import ContextVar

_deadline: ContextVar[float | None] = ContextVar("orderlog_deadline", default=None)


def set_until(moment: float | None) -> object:
    """Calls made from here on in this context must answer by ``moment``
    (``time.monotonic()``; None: no deadline); returns the token for ``reset``."""
    return _deadline.set(moment)


def reset(token: object) -> None:
    _deadline.reset(token)  # type: ignore[arg-type]


def bound(timeout: float | None) -> float | None:
    """``timeout`` cut down to what the caller's deadline leaves (never below zero)."""
    moment = _deadline.get()
    if moment is None:
        return timeout
    left = max(0.0, moment - time.monotonic())
    return left if timeout is None else min(timeout, left)
