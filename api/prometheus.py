"""Prometheus exposition of the node's figures, with prometheus_client.

One registry per node process. Counters and histograms count what this node did
(events it appended, batches it committed, requests it answered, orders its
worker completed), so they sum across nodes. Gauges are read at scrape time:
orders by status and projector lag come from the log (every node reports the
same value: aggregate them with ``max``, not ``sum``), queue depth and orders in
work from this node's worker. orderlog serves from one process per node, so
prometheus_client's multiprocess mode is not needed.

The core reports batches through ``orderlog.observe``; the projector reports the
completions it folds; nothing in the core imports this module.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import generate_latest as prometheus_text
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_text

from orderlog.core import Core
from orderlog.events import OrderCompleted, OrderPlaced, OrderProcessingStarted, RecordedEvent
from projections import metrics

_PLACED = OrderPlaced.__name__
_STARTED = OrderProcessingStarted.__name__
_COMPLETED = OrderCompleted.__name__
# The classic text format every Prometheus reads (our names need no escaping).
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 5, 10, 30, 60, 300)
_HTTP_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Exporter:
    def __init__(self, node: str) -> None:
        self.node = node
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.orders = Gauge(
            "orderlog_orders", "orders by status, from the log", ["status"], registry=r
        )
        self.events = Counter(
            "orderlog_events_appended", "events this node appended, by type", ["type"], registry=r
        )
        self.processing = Histogram(
            "orderlog_processing_seconds",
            "processing started to completed, for orders this node completed",
            buckets=_SECONDS,
            registry=r,
        )
        self.end_to_end = Histogram(
            "orderlog_end_to_end_seconds",
            "placed to completed, for orders this node completed",
            buckets=_SECONDS,
            registry=r,
        )
        self.requests = Histogram(
            "orderlog_http_request_duration_seconds",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            buckets=_HTTP_SECONDS,
            registry=r,
        )
        self.batches = Histogram(
            "orderlog_appends_per_commit",
            "appends committed together in one transaction",
            buckets=_BATCH,
            registry=r,
        )
        self.queued = Gauge("orderlog_queue_depth", "orders waiting for the worker", registry=r)
        self.in_work = Gauge(
            "orderlog_orders_in_work", "orders claimed here, work not done", registry=r
        )
        self.lag = Gauge(
            "orderlog_projector_lag_events", "events the read models are behind the log", registry=r
        )
        self._core: Core | None = None
        self._projected: Callable[[], tuple[int, dict[str, int]]] | None = None

    # -- what the parts report ---------------------------------------------------------

    def committed(self, appends: int, events: Mapping[str, int]) -> None:
        """The store's observer: called after every commit, on the writer's thread."""
        self.batches.observe(appends)
        for kind, count in events.items():
            self.events.labels(kind).inc(count)

    def completions(self, state: metrics.State, events: Sequence[RecordedEvent]) -> None:
        """The projector's observer, called with each page before it is folded: the
        durations of the orders this node completed (placed and claimed in this page
        or before it, as the metrics state has them)."""
        opened = state["open"]
        page: dict[str, list[int | None]] = {}
        for event in events:
            kind, stream = event.type, event.stream_id
            if kind == _PLACED:
                page[stream] = [metrics.micros(event), None]
            elif kind == _STARTED:
                times = page.get(stream) or opened.get(stream)
                if times is not None:
                    page[stream] = [times[0], metrics.micros(event)]
            elif kind == _COMPLETED and _node_of(event) == self.node:
                times = page.get(stream) or opened.get(stream)
                if times is None:
                    continue
                placed_us, started_us = times
                done_us = metrics.micros(event)
                if started_us is not None:
                    self.processing.observe((done_us - started_us) / 1e6)
                if placed_us is not None:
                    self.end_to_end.observe((done_us - placed_us) / 1e6)

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).observe(seconds)

    def bind(self, core: Core, projected: Callable[[], tuple[int, dict[str, int]]]) -> None:
        """Where the gauges read from at scrape time: the worker, and the read models'
        (position, counts by status)."""
        self._core = core
        self._projected = projected
        self.queued.set_function(lambda: core.worker.queued)
        self.in_work.set_function(lambda: core.worker.in_work)

    # -- answering a scrape -----------------------------------------------------------

    def scrape(self, openmetrics: bool) -> tuple[bytes, str]:
        if self._core is not None and self._projected is not None:
            position, counts = self._projected()
            for status, count in counts.items():
                self.orders.labels(status).set(count)
            self.lag.set(self._core.store.count_after(position))
        if openmetrics:
            return openmetrics_text(self.registry), OPENMETRICS
        return prometheus_text(self.registry), PROMETHEUS_TEXT


def _node_of(event: RecordedEvent) -> str | None:
    # Only the completion's own metadata says which node wrote it; read just that.
    match = _NODE.search(event.metadata_json)
    return orjson.loads(match.group(1)) if match else None


_NODE = re.compile(r'"node":("(?:[^"\\]|\\.)*")')


def negotiate(accept: str | None) -> str:
    """'json', 'prometheus' or 'openmetrics' for an Accept header.

    JSON for no header, ``*/*``, ``application/json`` and anything else it cannot
    serve; the exposition formats only when asked for, by name, above JSON.
    """
    if not accept:
        return "json"
    best, best_q = "json", 0.0
    json_q = 0.0
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        media = media.lower()
        kind = {
            "application/openmetrics-text": "openmetrics",
            "text/plain": "prometheus",
            "application/json": "json",
            "*/*": "json",
            "application/*": "json",
        }.get(media)
        if kind == "json":
            json_q = max(json_q, q)
        elif kind is not None and q > best_q:
            best, best_q = kind, q
    return best if best_q > json_q else "json"
