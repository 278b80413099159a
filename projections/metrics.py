"""The metrics read model: counts per status, orders processed, processing times, and
the revenue of completed orders per currency.

State is a plain JSON-ready dict so the projector can store it beside its
checkpoint. Times are summed in integer microseconds and money as exact decimal
text (Decimal arithmetic, never a float), so a state folded in one go and one
folded in pieces (with a JSON round-trip between) are exactly equal. The state
names its layout (``FORMAT``): one stored by an earlier release is folded again
from the log's start (``outdated``; the projector does it). For speed ``apply``
updates the state it is given and returns it: a state handed to ``apply`` belongs
to the fold from then on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from decimal import Context, Decimal, Inexact, InvalidOperation
from typing import Any

from orderlog.domain.events import (
    OrderCompleted,
    OrderPlaced,
    OrderProcessingStarted,
    RecordedEvent,
)
from orderlog.domain.order import Status
from projections import quantile

# Plain strings from the one enum: the state is JSON, whose keys must be str.
STATUSES = tuple(status.value for status in Status)
_PENDING, _PROCESSING, _COMPLETED = (
    Status.PENDING.value,
    Status.PROCESSING.value,
    Status.COMPLETED.value,
)
State = dict[str, Any]
# The state's layout. 2: ``revenue``, and each open order's amount and currency (the
# revenue cannot be had from a state without them: such a state is folded again).
FORMAT = 2
# Sums of money are exact at any size: an inexact or invalid sum raises, never rounds.
_EXACT = Context(prec=60, traps=[Inexact, InvalidOperation])
_ZERO = "0.00"  # a currency's first sum: every sum then shows at least two decimals


def initial() -> State:
    return {
        "format": FORMAT,
        "total_orders": 0,
        "status_counts": dict.fromkeys(STATUSES, 0),
        "orders_processed": 0,
        "processing_us_total": 0,
        "end_to_end_us_total": 0,
        "processing_us_buckets": {},
        "processing_us_accuracy": quantile.RELATIVE_ACCURACY,
        # Completed orders' total_amount summed per currency: ISO 4217 -> decimal text.
        "revenue": {},
        # Only orders not yet Completed, each as placed and claimed:
        # [placed_at_us, processing_started_at_us or None, total_amount, currency].
        "open": {},
    }


def outdated(state: State) -> bool:
    """Whether a stored state is of another layout than ``FORMAT`` (an earlier release's
    has no ``format`` and no revenue): it cannot be folded on, only folded again."""
    return state.get("format", 1) != FORMAT


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def micros(event: RecordedEvent) -> int:
    """When the event was recorded, in integer microseconds since the epoch."""
    return (event.recorded_at - _EPOCH) // _MICROSECOND  # exact, and faster than timestamp()


def _placed(state: State, event: RecordedEvent) -> None:
    if event.stream_id in state["open"]:
        return
    data = event.data  # as the current version: an order stored before currencies is USD
    state["open"][event.stream_id] = [micros(event), None, data["total_amount"], data["currency"]]
    state["total_orders"] += 1
    state["status_counts"][_PENDING] += 1


def _started(state: State, event: RecordedEvent) -> None:
    times = state["open"].get(event.stream_id)
    if times is None:
        return
    if times[1] is None:  # a re-claim keeps the order in Processing
        state["status_counts"][_PENDING] -= 1
        state["status_counts"][_PROCESSING] += 1
    times[1] = micros(event)


def _completed(state: State, event: RecordedEvent) -> None:
    times = state["open"].pop(event.stream_id, None)
    if times is None or times[1] is None:
        return
    now = micros(event)
    processing = now - times[1]
    counts = state["status_counts"]
    counts[_PROCESSING] -= 1
    counts[_COMPLETED] += 1
    state["orders_processed"] += 1
    state["processing_us_total"] += processing
    state["end_to_end_us_total"] += now - times[0]
    quantile.add(state["processing_us_buckets"], processing)
    revenue, amount, currency = state["revenue"], times[2], times[3]
    revenue[currency] = format(
        _EXACT.add(Decimal(revenue.get(currency, _ZERO)), Decimal(amount)), "f"
    )


_HANDLERS: dict[str, Callable[[State, RecordedEvent], None]] = {
    OrderPlaced.__name__: _placed,
    OrderProcessingStarted.__name__: _started,
    OrderCompleted.__name__: _completed,
}


# What a state stored before the sketch's accuracy was recorded in it was kept at.
_FIRST_ACCURACY = 0.01


def current(state: State) -> State:
    """The state with its processing times at the sketch's accuracy: a state stored by an
    earlier release (1%) has them counted again, once (``quantile.rescale``)."""
    accuracy = state.get("processing_us_accuracy", _FIRST_ACCURACY)
    if accuracy != quantile.RELATIVE_ACCURACY:
        state["processing_us_buckets"] = quantile.rescale(state["processing_us_buckets"], accuracy)
        state["processing_us_accuracy"] = quantile.RELATIVE_ACCURACY
    return state


def apply(state: State, event: RecordedEvent) -> State:
    current(state)
    handler = _HANDLERS.get(event.type)
    if handler:
        handler(state, event)
    return state


def fold(events: Iterable[RecordedEvent], state: State | None = None) -> State:
    state = initial() if state is None else current(state)
    handlers = _HANDLERS
    for event in events:
        handler = handlers.get(event.type)
        if handler:
            handler(state, event)
    return state


def report(state: State, position: int) -> dict[str, Any]:
    """The figures clients see, from a state and the log position it reflects."""
    processed = state["orders_processed"]
    buckets = current(state)["processing_us_buckets"]

    def seconds(micros: float | None) -> float | None:
        return None if micros is None else round(micros / 1_000_000, 6)

    return {
        "total_orders": state["total_orders"],
        "orders_processed": processed,
        "average_processing_time_seconds": (
            seconds(state["processing_us_total"] / processed) if processed else None
        ),
        "average_end_to_end_seconds": (
            seconds(state["end_to_end_us_total"] / processed) if processed else None
        ),
        "processing_time_percentiles_seconds": {
            name: seconds(quantile.quantile(buckets, q))
            for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
        },
        "processing_time_histogram_seconds": [
            {"from": seconds(low), "to": seconds(high), "count": count}
            for low, high, count in quantile.histogram(buckets)
        ],
        "status_counts": dict(state["status_counts"]),
        "revenue": dict(sorted(state["revenue"].items())),
        "position": position,
    }
