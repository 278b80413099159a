"""Completions: the orders a page of the log completes, who completed each, how long it took.

Nothing here is stored. The projector folds each page of new events here before
the metrics fold it, and hands the completions to a listener (the Prometheus
exporter, whose histograms count those its own node wrote). When each order was
placed and claimed comes from the page itself, or for orders opened before it,
from the metrics' open orders as the projector holds them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from orderlog.domain.events import (
    OrderCompleted,
    OrderPlaced,
    OrderProcessingStarted,
    RecordedEvent,
)
from projections.metrics import micros


class Completion(NamedTuple):
    order_id: str
    node: str | None  # that wrote the completion, from its metadata
    worker: str | None  # the same, the worker
    processing_seconds: float | None  # from the last claim; None if never claimed
    end_to_end_seconds: float  # from the placing


class Page:
    """The fold's state over one page; ``opened``, the orders open before it, is only read."""

    __slots__ = ("completed", "opened", "times")

    def __init__(self, opened: Mapping[str, Sequence[Any]]) -> None:
        # order id -> [placed_us, claimed_us or None, ...] (the metrics' open orders,
        # which hold more after the two times: only these are read here)
        self.opened = opened
        self.times: dict[str, Sequence[Any]] = {}  # the two times, as of this page
        self.completed: list[Completion] = []


def _times(page: Page, order_id: str) -> Sequence[Any] | None:
    return page.times.get(order_id) or page.opened.get(order_id)


def _placed(page: Page, event: RecordedEvent) -> None:
    page.times[event.stream_id] = (micros(event), None)


def _started(page: Page, event: RecordedEvent) -> None:
    times = _times(page, event.stream_id)
    if times is not None:
        page.times[event.stream_id] = (times[0], micros(event))


def _completed(page: Page, event: RecordedEvent) -> None:
    times = _times(page, event.stream_id)
    if times is None or times[0] is None:
        return  # an order never seen placed
    placed_us, started_us = times[0], times[1]
    done_us = micros(event)
    metadata = event.metadata  # decoded once, for the completion only
    page.completed.append(
        Completion(
            event.stream_id,
            metadata.get("node"),
            metadata.get("worker"),
            None if started_us is None else (done_us - started_us) / 1e6,
            (done_us - placed_us) / 1e6,
        )
    )


_HANDLERS: dict[str, Callable[[Page, RecordedEvent], None]] = {
    OrderPlaced.__name__: _placed,
    OrderProcessingStarted.__name__: _started,
    OrderCompleted.__name__: _completed,
}


def apply(page: Page, event: RecordedEvent) -> Page:
    """The page's state after one more event (updated in place); unknown types pass."""
    handler = _HANDLERS.get(event.type)
    if handler:
        handler(page, event)
    return page


def fold(events: Iterable[RecordedEvent], opened: Mapping[str, Sequence[Any]]) -> list[Completion]:
    """The completions in ``events``, given the orders ``opened`` before them."""
    page = Page(opened)
    for event in events:
        apply(page, event)
    return page.completed
