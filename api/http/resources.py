"""The REST resources. Each one parses, calls one core function and shapes the answer.

Falcon shares a resource across threads, so none keeps per-request state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import falcon
import orjson

from api.http import openapi
from api.http.auth import AnonymousAccess
from api.http.inputs import idempotency_key, query_int, read_json, single_param
from api.http.problem import Problem, bad_request
from api.http.prometheus import Exporter, negotiate
from api.http.static import Dashboard, StaticFile
from orderlog.domain.errors import FieldError, OrderNotFoundError, shown
from orderlog.domain.events import RecordedEvent
from orderlog.domain.order import MAX_ID_LENGTH, PlaceOrder, Status, is_blank
from orderlog.readiness import Readiness as NodeReadiness
from orderlog.service import OrderService
from orderlog.storage.reader import MAX_PAGE
from orderlog.storage.row import format_time
from orderlog.storage.store import EventStore
from projections import order_status
from projections.order_status import MAX_LIST
from projections.projector import Projector


def event_dict(event: RecordedEvent, with_stream: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "position": event.position,
        "version": event.version,
        "type": event.type,
        "event_version": event.event_version,  # as stored; ``data`` is the current version
        "data": event.data,
        "metadata": event.metadata,
        "recorded_at": event.recorded_at_text or format_time(event.recorded_at),
    }
    if with_stream:
        body["stream_id"] = event.stream_id
    return body


class OrderCollection:
    def __init__(
        self,
        service: OrderService,
        projector: Projector,
        node: str,
        max_body_bytes: int,
        default_currency: str,
    ) -> None:
        self._service = service
        self._projector = projector
        self._node = node
        self._limit = max_body_bytes
        self._currency = default_currency  # of an order placed without one

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Orders oldest first, filtered by status and user, from the order-status rows."""
        status = single_param(req, "status")
        if status is not None and status not in STATUSES:
            raise bad_request(
                "invalid-parameter",
                "status is not an order status",
                [FieldError("status", f"must be one of {', '.join(STATUSES)}")],
            )
        user_id = single_param(req, "user_id")
        if user_id is not None and not (
            0 < len(user_id) <= MAX_ID_LENGTH and user_id.isprintable() and not is_blank(user_id)
        ):
            raise bad_request(
                "invalid-parameter",
                "user_id is not a user id",
                [
                    FieldError(
                        "user_id", f"must be 1 to {MAX_ID_LENGTH} printable characters, not blank"
                    )
                ],
            )
        limit = query_int(req, "limit", 100, 1, MAX_LIST)
        after = query_int(req, "after", 0, 0, 2**63 - 1)
        caught_up(self._service.store, self._projector)
        page = self._projector.status.list(
            status=status, user_key=user_id, after=after, limit=limit
        )
        resp.media = {
            "orders": [order_status.view(row) for row in page.rows],
            "next_after": page.next_after,
        }

    on_head = on_get

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        payload = read_json(req, self._limit)
        key = idempotency_key(req)
        placed = self._service.place_order(
            PlaceOrder.from_payload(payload, default_currency=self._currency),
            idempotency_key=key,
            client=req.context.get("token") or "",
            metadata={"correlation_id": req.context.request_id, "node": self._node},
        )
        if placed.replayed:  # the first answer again, as it was
            resp.set_header("Idempotent-Replayed", "true")
        if placed.placed is not None and len(placed.events) == 1:
            # Just placed: the answer is the event this call appended, as it was made.
            row = order_status.placed_row(placed.events[0], placed.placed, self._node)
        else:
            row = _fold(placed.events)
        resp.status = falcon.HTTP_201 if placed.created or placed.replayed else falcon.HTTP_200
        resp.location = f"/orders/{placed.order_id}"
        resp.etag = f'"{row.version}"'
        resp.media = order_status.view(row)


def _fold(events: list[RecordedEvent]) -> order_status.OrderRow:
    """The order from its own stream, as the listing's rows hold it."""
    row = order_status.fold(events)
    if row is None:  # a stream without its OrderPlaced is no order
        raise OrderNotFoundError(events[0].stream_id)
    return row


def unchanged(req: falcon.Request, etag: str) -> bool:
    """Whether If-None-Match names ``etag`` (a quoted strong tag) or ``*``: a 304 then."""
    return bool(req.if_none_match) and any(
        tag == "*" or f'"{tag}"' == etag for tag in req.if_none_match
    )


class OrderResource:
    def __init__(self, service: OrderService) -> None:
        self._service = service

    def on_get(self, req: falcon.Request, resp: falcon.Response, order_id: str) -> None:
        version = query_int(req, "version", 0, 1, 2**31 - 1) or None
        events = self._service.history(order_id, version)
        if version is not None and events[-1].version < version:
            raise OrderNotFoundError(
                order_id, f"order {shown(order_id)!r} has no version {version}"
            )
        row = _fold(events)
        etag = f'"{row.version}"'
        resp.etag = etag
        if unchanged(req, etag):
            resp.status = falcon.HTTP_304
            return
        resp.media = order_status.view(row)

    on_head = on_get


class OrderHistory:
    def __init__(self, service: OrderService) -> None:
        self._service = service

    def on_get(self, req: falcon.Request, resp: falcon.Response, order_id: str) -> None:
        events = self._service.history(order_id)
        resp.media = {
            "order_id": order_id,
            "version": events[-1].version,
            "events": [event_dict(e) for e in events],
        }

    on_head = on_get


class EventFeed:
    def __init__(self, store: EventStore) -> None:
        self._store = store

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        after = query_int(req, "after", 0, 0, 2**63 - 1)
        limit = query_int(req, "limit", 100, 1, MAX_PAGE)
        head = self._store.head()  # read first: every event up to it is already visible
        events = self._store.read_all(after, limit)
        resp.media = {
            "events": [event_dict(e, with_stream=True) for e in events],
            "next_after": events[-1].position if events else after,
            "head": max(head, events[-1].position if events else 0),
        }

    on_head = on_get


STATUSES = tuple(status.value for status in Status)
# How long a read waits for the read models to reach the log's head before 503.
READ_YOUR_WRITES_TIMEOUT = 5.0


def caught_up(store: EventStore, projector: Projector) -> None:
    """Wait until the read models reflect the log as it was when the request arrived, so
    a client always sees its own writes; 503 if they cannot get there in time."""
    if not projector.wait_for(store.last_position(), READ_YOUR_WRITES_TIMEOUT):
        raise Problem(
            503,
            "projections-behind",
            "Service unavailable",
            "the read models are behind the log; retry shortly",
            headers={"Retry-After": "1"},
        )


class Metrics:
    """JSON by default; the Prometheus or OpenMetrics text when the Accept header asks."""

    def __init__(self, store: EventStore, projector: Projector, exporter: Exporter) -> None:
        self._store = store
        self._projector = projector
        self._exporter = exporter

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.vary = ("Accept",)
        kind = negotiate(req.get_header("Accept"))
        if kind != "json":
            resp.data, resp.content_type = self._exporter.scrape(kind == "openmetrics")
            return
        caught_up(self._store, self._projector)
        resp.media = self._projector.report()

    on_head = on_get


class PrometheusMetrics:
    """The exposition text at a plain path, for scrapers that send no Accept header."""

    def __init__(self, exporter: Exporter) -> None:
        self._exporter = exporter

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.vary = ("Accept",)
        openmetrics = negotiate(req.get_header("Accept")) == "openmetrics"
        resp.data, resp.content_type = self._exporter.scrape(openmetrics)

    on_head = on_get


class Health:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"status": "ok"}

    on_head = on_get


class Readiness:
    """Whether the process that answers is ready; each of a node's processes takes
    connections from one socket on its own, so that is what the answer is about. The
    node's other processes are counted in ``processes``."""

    def __init__(
        self, check: Callable[[], NodeReadiness], processes: Callable[[], dict[str, Any]]
    ) -> None:
        self._check = check
        self._processes = processes

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        state = self._check()
        resp.status = falcon.HTTP_200 if state.ready else falcon.HTTP_503
        resp.media = {
            "status": "ready" if state.ready else "not ready",
            "node": state.node,
            "database": state.database,
            "writer": state.writer,
            "worker": state.worker,
            "writable": state.writable,
            "node_lock": state.node_lock,
            "log": state.log,
            **self._processes(),
        }

    on_head = on_get


# The page holds no data (its script fetches everything with the user's token), so it
# is open; it runs only its own script and talks only to this origin, and no other
# site may frame it (a frame could trick a user into typing a token).
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
REVALIDATE = "no-cache"  # keep, but ask (If-None-Match) before each use
FOR_GOOD = "public, max-age=31536000, immutable"  # a versioned URL never changes content


def send_file(req: falcon.Request, resp: falcon.Response, file: StaticFile, caching: str) -> None:
    resp.set_header("Cache-Control", caching)
    resp.etag = file.etag
    if unchanged(req, file.etag):
        resp.status = falcon.HTTP_304
        return
    resp.content_type = file.content_type
    resp.data = file.body


class OpenAPIDocument:
    """The API's contract (``api.http.openapi``), rendered once at start in its two forms:
    every scoped route needs a token, or (while requests without one may pass) not."""

    def __init__(self, anonymous: AnonymousAccess) -> None:
        self._anonymous = anonymous
        self._guarded = orjson.dumps(openapi.document())
        self._open = orjson.dumps(openapi.document(anonymous=True))

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_JSON
        resp.data = self._open if self._anonymous.allowed() else self._guarded

    on_head = on_get


class Home:
    """``/`` leads to the dashboard."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.status = falcon.HTTP_302
        resp.location = "/dashboard"

    on_head = on_get


class DashboardPage:
    def __init__(self, dashboard: Dashboard) -> None:
        self._page = dashboard.page

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.set_header("Content-Security-Policy", PAGE_POLICY)
        resp.set_header("Referrer-Policy", "no-referrer")
        send_file(req, resp, self._page, REVALIDATE)

    on_head = on_get


class DashboardAsset:
    """The page's scripts and styles: only the names in ``api.http.static.ASSETS``."""

    def __init__(self, dashboard: Dashboard) -> None:
        self._assets = dashboard.assets
        self._version = dashboard.version

    def on_get(self, req: falcon.Request, resp: falcon.Response, asset: str) -> None:
        file = self._assets.get(asset)
        if file is None:
            raise Problem(404, "not-found", "Not found", "the dashboard has no file of that name")
        current = req.get_param("v") == self._version
        send_file(req, resp, file, FOR_GOOD if current else REVALIDATE)

    on_head = on_get
