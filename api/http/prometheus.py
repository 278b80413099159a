"""Prometheus exposition of the node's figures, with prometheus_client.

One registry per node. Counters and histograms count what this node did
(events it appended, batches it committed, requests it answered, orders its
worker completed), so they sum across nodes. Gauges are read at scrape time:
orders by status and projector lag come from the log (every node reports the
same value: aggregate them with ``max``, not ``sum``), queue depth and orders in
work from this node's worker.

With ``--processes N`` a node is N processes sharing one listening socket, and a
scrape reaches whichever of them accepts it. Each answers for all: the figures
live in prometheus_client's multiprocess files, in a directory private to the
supervisor, and every process's exposition reads them all
(``MultiProcessCollector``). A counter stays monotonic whichever process answers,
and across a process's restart: a dead process's counts stay in its files (a
completion is counted by the incarnation whose worker wrote it, so a restarted
process never counts its predecessor's again). The gauges from the log are set by
the process answering, once its read models have caught up with the log, just
before it reads the files (``livemostrecent``: its value wins). Queue depth and
orders in work are each process's own, written by it every second and summed over
the live processes (``livesum``; the supervisor drops a dead one's). The
alternative, the supervisor serving one exposition, would need a channel from
every child to it and an HTTP server in it, where now it runs no thread and serves
nothing (it must fork safely at any time), and a scrape would no longer reach the
node's own port. A process serving alone keeps one in-memory registry, as before.

The core reports batches through ``orderlog.storage.observe``; the projector hands over
the completions its fold found in each page (``projections.completions``), and the
histograms count this node's; nothing in the core imports this module.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client import generate_latest as prometheus_text
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_text

from orderlog.storage.store import EventStore
from orderlog.worker import Worker
from projections.completions import Completion

# The classic text format every Prometheus reads (our names need no escaping).
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 5, 10, 30, 60, 300)
_HTTP_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
# How often a process of several writes its worker's gauges to its file.
SAMPLE_EVERY = 1.0


class Exporter:
    def __init__(self, node: str, multiprocess_dir: str | None = None) -> None:
        self.node = node
        self.multiprocess_dir = multiprocess_dir
        r: CollectorRegistry | None
        if multiprocess_dir is None:
            self.registry = r = CollectorRegistry(auto_describe=True)
        else:
            use_multiprocess_files(multiprocess_dir)
            self.registry = CollectorRegistry()
            MultiProcessCollector(self.registry, path=multiprocess_dir)
            r = None  # the figures live in the files, which the collector reads
        self._count_and_time(r)
        self._gauge(r)
        # Labelled children, each looked up once (``_labelled``).
        self._request_children: dict[tuple[str, str, int], Histogram] = {}
        self._event_children: dict[str, Counter] = {}
        self._store: EventStore | None = None
        self._worker: Worker | None = None
        self._projected: Callable[[], tuple[int, dict[str, int]]] | None = None
        self._catch_up: Callable[[int], object] | None = None
        self._worker_id: str | None = None  # of several processes: whose completions count
        self._sampler: threading.Thread | None = None
        self._stopping = threading.Event()

    def _count_and_time(self, r: CollectorRegistry | None) -> None:
        """The orders by status, the events appended, and the histograms."""
        self.orders = Gauge(
            "orderlog_orders",
            "orders by status, from the log",
            ["status"],
            registry=r,
            multiprocess_mode="livemostrecent",
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

    def _gauge(self, r: CollectorRegistry | None) -> None:
        """The worker's gauges (summed over processes) and the read models' lag."""
        self.queued = Gauge(
            "orderlog_queue_depth",
            "orders waiting for the worker",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.in_work = Gauge(
            "orderlog_orders_in_work",
            "orders claimed here, work not done",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.lag = Gauge(
            "orderlog_projector_lag_events",
            "events the read models are behind the log",
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.horizon_age = Gauge(
            "orderlog_feed_horizon_age_seconds",
            "PostgreSQL: how long the oldest write transaction on the server has run; "
            "readers of the log wait for it (0 elsewhere)",
            registry=r,
            multiprocess_mode="livemostrecent",
        )

    # -- what the parts report ---------------------------------------------------------

    def committed(self, appends: int, events: Mapping[str, int]) -> None:
        """The store's observer: called after every commit, on the writer's thread."""
        self.batches.observe(appends)
        for kind, count in events.items():
            _labelled(self._event_children, kind, self.events, kind).inc(count)

    def completed(self, completions: Sequence[Completion]) -> None:
        """The projector's listener, called with each page's completions: the durations
        of the orders this node completed."""
        for done in completions:
            if not self._completed_here(done):
                continue
            if done.processing_seconds is not None:
                self.processing.observe(done.processing_seconds)
            self.end_to_end.observe(done.end_to_end_seconds)

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        """One request's duration, from every request thread: its labelled histogram is
        looked up once per route, method and status, not built again under a lock."""
        key = (route, method, status)
        _labelled(self._request_children, key, self.requests, route, method, str(status)).observe(
            seconds
        )

    def _completed_here(self, done: Completion) -> bool:
        if self._worker_id is not None:  # of several processes: this one's own
            return done.worker == self._worker_id
        return done.node == self.node

    def bind(
        self,
        store: EventStore,
        worker: Worker,
        projected: Callable[[], tuple[int, dict[str, int]]],
        catch_up: Callable[[int], object] | None = None,
    ) -> None:
        """Where the gauges read from at scrape time: the log, the worker, and the read
        models' (position, counts by status); ``catch_up(position)`` brings the read
        models there, waiting a moment at most. (The store reports to this exporter as
        it commits, so the exporter is made first and told its sources here.)"""
        self._store = store
        self._worker = worker
        self._projected = projected
        self._catch_up = catch_up
        if self.multiprocess_dir is None:
            self.queued.set_function(lambda: worker.queued)
            self.in_work.set_function(lambda: worker.in_work)
        else:
            self._worker_id = worker.worker_id

    def start(self) -> None:
        """Of several processes: write this one's worker gauges every second from now."""
        if self.multiprocess_dir is None or self._sampler is not None:
            return
        self._stopping.clear()
        self._sampler = threading.Thread(target=self._sample, name="orderlog-gauges", daemon=True)
        self._sampler.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._sampler is not None:
            self._sampler.join(SAMPLE_EVERY)
            self._sampler = None

    def _sample(self) -> None:
        while True:
            self._set_worker_gauges()
            if self._stopping.wait(SAMPLE_EVERY):
                return

    def _set_worker_gauges(self) -> None:
        if self._worker is not None:
            self.queued.set(self._worker.queued)
            self.in_work.set(self._worker.in_work)

    # -- answering a scrape -----------------------------------------------------------

    def scrape(self, openmetrics: bool) -> tuple[bytes, str]:
        if self._store is not None and self._projected is not None:
            if self.multiprocess_dir is not None and self._catch_up is not None:
                # Whichever process answers, the counts are the log's as of now (the
                # process answering last sets them), not one process's older reading.
                self._catch_up(self._store.last_position())
            position, counts = self._projected()
            for status, count in counts.items():
                self.orders.labels(status).set(count)
            self.lag.set(self._store.count_after(position))
            self.horizon_age.set(self._store.horizon_age())
            if self.multiprocess_dir is not None:
                self._set_worker_gauges()  # this process's own, fresh; the others' a second old
        if openmetrics:
            return openmetrics_text(self.registry), OPENMETRICS
        return prometheus_text(self.registry), PROMETHEUS_TEXT


_Key = TypeVar("_Key")
_Metric = TypeVar("_Metric", Counter, Histogram)


def _labelled(cache: dict[_Key, _Metric], key: _Key, family: _Metric, *labels: str) -> _Metric:
    """``family``'s child for ``labels``, kept in ``cache`` under ``key`` from the first
    time on: ``labels()`` builds its key and takes the family's lock on every call."""
    child = cache.get(key)
    if child is None:
        child = cache.setdefault(key, family.labels(*labels))
    return child


def use_multiprocess_files(path: str) -> None:
    """Keep this process's metric values in files under ``path``, for every metric made
    from now on. prometheus_client chooses where values live when it is imported (from
    PROMETHEUS_MULTIPROC_DIR); a process that learns its directory later chooses here,
    before its first metric, for the rest of its life."""
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    if values.ValueClass is values.MutexValue:
        values.ValueClass = values.MultiProcessValue()


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
