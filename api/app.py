"""``create_app``: the Falcon app around a started core, with orjson and problem+json."""

from __future__ import annotations

import falcon
import falcon.media
import orjson

from api import problem
from api.forwarded import ForwardedClientLimit
from api.resources import (
    EventFeed,
    Health,
    Metrics,
    OrderCollection,
    OrderHistory,
    OrderResource,
    Readiness,
)
from orderlog.core import Core
from projections.projector import MetricsProjector


def create_app(core: Core, projector: MetricsProjector) -> falcon.App:
    """The Falcon app over a core and its projections; each resource gets what it uses."""
    settings = core.settings
    # Only behind a trusted proxy do requests name their client (see api.forwarded).
    middleware = (
        [ForwardedClientLimit(settings.max_requests_per_client)] if settings.trusted_proxy else []
    )
    # No connection per request: the store borrows one from the pool for each read,
    # and appends go through its writer, so a POST never touches the pool at all.
    app = falcon.App(middleware=middleware)
    json = falcon.media.JSONHandler(dumps=orjson.dumps, loads=orjson.loads)
    app.req_options.media_handlers[falcon.MEDIA_JSON] = json
    app.resp_options.media_handlers[falcon.MEDIA_JSON] = json
    problem.install(app)
    app.add_route("/orders", OrderCollection(core.service, settings.node, settings.max_body_bytes))
    app.add_route("/orders/{order_id}", OrderResource(core.service))
    app.add_route("/orders/{order_id}/events", OrderHistory(core.service))
    app.add_route("/events", EventFeed(core.store))
    app.add_route("/metrics", Metrics(projector))
    app.add_route("/healthz", Health())
    app.add_route("/readyz", Readiness(core.readiness))
    return app
