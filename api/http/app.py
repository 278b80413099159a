"""``create_app``: the Falcon app around a node's parts, with orjson and problem+json."""

from __future__ import annotations

import time
from collections.abc import Callable

import falcon
import falcon.media
import orjson

from api import logs
from api.http import problem
from api.http.auth import AnonymousAccess, Authentication
from api.http.forwarded import ForwardedClientLimit
from api.http.inputs import ARRIVED, request_id
from api.http.prometheus import Exporter
from api.http.resources import (
    DashboardAsset,
    DashboardPage,
    EventFeed,
    Health,
    Home,
    Metrics,
    OpenAPIDocument,
    OrderCollection,
    OrderHistory,
    OrderResource,
    PrometheusMetrics,
    Readiness,
)
from api.http.static import load_dashboard
from api.processes import ProcessPlace
from orderlog import deadline
from orderlog.config import Settings
from orderlog.readiness import Readiness as NodeReadiness
from orderlog.service import OrderService
from orderlog.storage.store import EventStore
from orderlog.storage.tokens import TokenStore
from projections.projector import Projector

# A request is answered within --db-timeout and this of its arrival (the answer's own work).
ANSWER_MARGIN = 0.5


class HttpRules:
    """What HTTP asks of every request and answer, in one place.

    An HTTP/1.1 request must name its Host (RFC 9112 §3.2): one without is refused,
    as a proxy routing by Host would. OPTIONS answers 204 with Allow, no body and
    no content type. Every answer, errors and the dashboard's files included, says
    ``X-Content-Type-Options: nosniff``: a browser takes its Content-Type as given
    and never guesses (JSON holding client text is not run as a script or page).
    """

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        env = req.env
        if env.get("SERVER_PROTOCOL") == "HTTP/1.1" and not env.get("HTTP_HOST"):
            raise problem.bad_request("missing-host", "an HTTP/1.1 request must send Host")

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: object, succeeded: bool
    ) -> None:
        resp.set_header("X-Content-Type-Options", "nosniff")
        if req.method == "OPTIONS" and succeeded and resp.status_code == 200:
            resp.status = falcon.HTTP_204
            resp.content_type = None
            resp.content_length = None


class Deadline:
    """Every request is answered within ``seconds`` of its arrival, whatever the database
    does: what it waits on in the core is bounded by what is left (``orderlog.deadline``),
    including the time it spent waiting for a thread."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        arrived = req.env.get(ARRIVED) or time.monotonic()
        req.context.deadline_token = deadline.set_until(arrived + self._seconds)

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: object, succeeded: bool
    ) -> None:
        token = req.context.get("deadline_token")
        if token is not None:
            deadline.reset(token)


class RequestLog:
    """Every request gets an id (the client's X-Request-ID if usable, else a fresh one),
    echoed in the answer and put on every log record while it is handled; every
    request leaves one access line and one observation of its duration."""

    def __init__(self, exporter: Exporter) -> None:
        self._exporter = exporter

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.started = time.perf_counter()
        req.context.request_id = request_id(req)
        req.context.log_token = logs.REQUEST_ID.set(req.context.request_id)

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: object, succeeded: bool
    ) -> None:
        rid = req.context.get("request_id")
        if rid is None:  # the request failed before this middleware saw it
            return
        resp.set_header("X-Request-ID", rid)
        route = req.uri_template or "(no route)"  # a template, never the raw path
        seconds = time.perf_counter() - req.context.started
        logs.access(req.method, route, resp.status_code, seconds, rid)
        self._exporter.request(route, req.method, resp.status_code, seconds)
        logs.REQUEST_ID.reset(req.context.log_token)


def create_app(
    settings: Settings,
    *,
    service: OrderService,
    store: EventStore,
    tokens: TokenStore,
    projector: Projector,
    exporter: Exporter,
    anonymous: AnonymousAccess,
    readiness: Callable[[], NodeReadiness],
    place: ProcessPlace | None = None,
) -> falcon.App:
    """The Falcon app over a node's parts (built by ``api.node``); each resource gets what
    it uses.

    ``anonymous`` decides whether a request without a token may pass (``api.http.auth``);
    ``readiness`` and ``place`` (where this process stands among the node's processes)
    answer ``/readyz``.
    """
    # Only behind a trusted proxy do requests name their client (see api.http.forwarded).
    middleware = (
        [ForwardedClientLimit(settings.max_requests_per_client)] if settings.trusted_proxy else []
    )
    # No connection per request: the store borrows one from the pool for each read,
    # and appends go through its writer, so a POST never touches the pool at all.
    app = falcon.App(
        middleware=[
            RequestLog(exporter),
            Deadline(settings.db_timeout + ANSWER_MARGIN),
            HttpRules(),
            *middleware,
            Authentication(tokens, anonymous),
        ]
    )
    json = falcon.media.JSONHandler(dumps=orjson.dumps, loads=orjson.loads)
    app.req_options.media_handlers[falcon.MEDIA_JSON] = json
    app.resp_options.media_handlers[falcon.MEDIA_JSON] = json
    problem.install(app)
    orders = OrderCollection(
        service, projector, settings.node, settings.max_body_bytes, settings.default_currency
    )
    app.add_route("/orders", orders)
    app.add_route("/orders/{order_id}", OrderResource(service))
    app.add_route("/orders/{order_id}/events", OrderHistory(service))
    app.add_route("/events", EventFeed(store))
    app.add_route("/metrics", Metrics(store, projector, exporter))
    app.add_route("/metrics/prometheus", PrometheusMetrics(exporter))
    app.add_route("/healthz", Health())
    app.add_route("/readyz", Readiness(readiness, (place or ProcessPlace()).describe))
    app.add_route("/openapi.json", OpenAPIDocument(anonymous))
    dashboard = load_dashboard()
    app.add_route("/", Home())
    app.add_route("/dashboard", DashboardPage(dashboard))
    app.add_route("/dashboard/{asset}", DashboardAsset(dashboard))
    return app
