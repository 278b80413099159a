"""The core's own error families; the store translates driver errors into these.

The HTTP layer maps each family to one status code, so every error a client can
cause must be one of these, never a bare driver or Python exception.
"""

from __future__ import annotations

from dataclasses import dataclass


class OrderlogError(Exception):
    """Base of every error the core raises on purpose."""


def shown(value: str, limit: int = 64) -> str:
    """A client's value echoed back in an error: cut short when long, so an answer never
    grows with what was sent."""
    return value if len(value) <= limit else value[:limit] + "…"


@dataclass(frozen=True)
class FieldError:
    """One problem with one input field, named so a client can fix it."""

    field: str
    message: str


class ValidationError(OrderlogError):
    """Input that breaks a rule of shape, type, range or size."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        said = "; ".join(f"{e.field}: {e.message}" for e in errors[:5])
        more = f"; and {len(errors) - 5} more" if len(errors) > 5 else ""
        super().__init__(said + more)


class OrderNotFoundError(OrderlogError):
    """No stream exists for the order id (or not at the asked version)."""

    def __init__(self, order_id: str, detail: str | None = None) -> None:
        self.order_id = order_id
        super().__init__(detail or f"order {shown(order_id)!r} does not exist")


class ConcurrencyError(OrderlogError):
    """An append's expected version no longer matches the stream: someone else won."""

    def __init__(self, stream_id: str, expected: int, actual: int) -> None:
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual
        super().__init__(f"stream {stream_id!r} is at version {actual}, expected {expected}")


class OrderConflictError(OrderlogError):
    """The order id is taken by an order with different content."""

    def __init__(self, order_id: str, detail: str | None = None) -> None:
        self.order_id = order_id
        super().__init__(
            detail or f"order {shown(order_id)!r} already exists with different content"
        )


class IdempotencyKeyReusedError(OrderConflictError):
    """An Idempotency-Key sent again with another order than the one it first placed."""

    def __init__(self, order_id: str) -> None:
        super().__init__(order_id, "this Idempotency-Key was first used with a different order")


class IdempotencyKeyExpiredError(OrderlogError):
    """An Idempotency-Key sent again after its lifetime: it is refused, never reused."""

    def __init__(self, age: float, lifetime: float) -> None:
        self.age = age
        self.lifetime = lifetime
        super().__init__(
            f"this Idempotency-Key was first used {age:.0f} s ago, more than {lifetime:.0f} s: "
            "send the order with a new key"
        )


class FutureEventError(OrderlogError):
    """An event stored at a version newer than this code knows: a newer release wrote
    it, and this one cannot read it (every node is upgraded together)."""

    def __init__(self, type_name: str, version: int, known: int) -> None:
        super().__init__(f"the log holds {type_name} v{version}; this release reads up to v{known}")
        self.type_name = type_name
        self.version = version
        self.known = known


class InvalidTransitionError(OrderlogError):
    """A command that the order's current status does not allow."""


class StoreUnavailableError(OrderlogError):
    """The database cannot be reached or refused the operation."""


class AppendFailedError(StoreUnavailableError):
    """An append that is known not to have been committed: safe to send again."""


class OutcomeUnknownError(StoreUnavailableError):
    """An append whose COMMIT was sent, and the database could not be asked in time
    whether it landed. Sending the same events to the same stream again is safe: the
    stream's version decides (an order placed again with its id answers the first)."""

    def __init__(self, stream_id: str, detail: str = "") -> None:
        self.stream_id = stream_id
        super().__init__(
            detail or f"the database did not confirm whether the append to {stream_id!r} landed"
        )


class StoreFullError(AppendFailedError):
    """The database's disk is full: the write did not happen, and appends fail until
    space is freed."""


class MissingDriverError(OrderlogError):
    """The database URL needs a driver that is not installed."""


class OperatorError(OrderlogError):
    """What an operator can fix, said in one line: what went wrong, and a hint."""

    def __init__(self, what: str, hint: str) -> None:
        self.what = what
        self.hint = hint
        super().__init__(f"{what} ({hint})")


class StartupError(OperatorError):
    """What keeps orderlog from starting."""


class SchemaError(StartupError):
    """The database's schema is one this code cannot work with."""


class BackupError(OperatorError):
    """A backup that could not be taken."""
