"""``create_app``: the Falcon app around a started core, with orjson and problem+json."""

from __future__ import annotations

import logging
from typing import Any

import falcon
import falcon.media
import orjson
import peewee

from api import problem
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

log = logging.getLogger(__name__)


class DatabaseConnection:
    """One pooled connection per request, returned when the response is done."""

    def __init__(self, db: peewee.Database) -> None:
        self._db = db

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        try:
            self._db.connect(reuse_if_open=True)
        except (peewee.DatabaseError, peewee.InterfaceError) as exc:
            # Not an error yet: each store call opens its own connection and answers 503,
            # /readyz says not ready and /healthz stays 200 (it was a 500 everywhere).
            log.warning("database unreachable: %s", exc)

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, succeeded: bool
    ) -> None:
        if not self._db.is_closed():
            self._db.close()


def create_app(core: Core, projector: MetricsProjector) -> falcon.App:
    """The Falcon app over a core and its projections; each resource gets what it uses."""
    app = falcon.App(middleware=[DatabaseConnection(core.db)])
    json = falcon.media.JSONHandler(dumps=orjson.dumps, loads=orjson.loads)
    app.req_options.media_handlers[falcon.MEDIA_JSON] = json
    app.resp_options.media_handlers[falcon.MEDIA_JSON] = json
    problem.install(app)
    settings = core.settings
    app.add_route("/orders", OrderCollection(core.service, settings.node, settings.max_body_bytes))
    app.add_route("/orders/{order_id}", OrderResource(core.service))
    app.add_route("/orders/{order_id}/events", OrderHistory(core.service))
    app.add_route("/events", EventFeed(core.store))
    app.add_route("/metrics", Metrics(projector))
    app.add_route("/healthz", Health())
    app.add_route("/readyz", Readiness(core.readiness))
    return app
