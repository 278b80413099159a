"""The REST resources. Each one parses, calls one core function and shapes the answer.

Falcon shares a resource across threads, so none keeps per-request state.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import falcon
import orjson

from api.problem import Problem, bad_request
from orderlog.core import Readiness as CoreReadiness
from orderlog.errors import FieldError, OrderNotFoundError
from orderlog.events import RecordedEvent
from orderlog.order import PlaceOrder
from orderlog.service import OrderService
from orderlog.store import MAX_PAGE, EventStore, format_time
from projections import order_view
from projections.projector import MetricsProjector

JSON_TYPES = ("application/json",)


def event_dict(event: RecordedEvent, with_stream: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "position": event.position,
        "version": event.version,
        "type": event.type,
        "data": event.data,
        "metadata": event.metadata,
        "recorded_at": format_time(event.recorded_at),
    }
    if with_stream:
        body["stream_id"] = event.stream_id
    return body


def request_id(req: falcon.Request) -> str:
    given = req.get_header("X-Request-ID")
    return given if given and len(given) <= 128 else os.urandom(16).hex()


def read_json(req: falcon.Request, limit: int) -> Any:
    """The request body as JSON, refusing wrong types, oversize bodies and bad syntax."""
    media_type = (req.content_type or "").split(";")[0].strip().lower()
    if media_type not in JSON_TYPES and not media_type.endswith("+json"):
        raise Problem(
            415,
            "unsupported-media-type",
            "Unsupported media type",
            f"send the order as application/json, not {media_type or 'no content type'}",
        )
    if req.content_length is not None and req.content_length > limit:
        raise _too_large(limit)
    raw = req.bounded_stream.read(limit + 1)
    if len(raw) > limit:
        raise _too_large(limit)
    if not raw.strip():
        raise bad_request("malformed-json", "the request body is empty")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise bad_request("malformed-json", f"the body is not valid JSON: {exc}") from None


def _too_large(limit: int) -> Problem:
    return Problem(413, "payload-too-large", "Payload too large", f"the body exceeds {limit} bytes")


def int_param(req: falcon.Request, name: str, default: int, low: int, high: int) -> int:
    raw = req.get_param(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(
            "invalid-parameter",
            f"{name} must be an integer",
            [FieldError(name, f"{raw[:40]!r} is not an integer")],
        ) from None
    if not low <= value <= high:
        raise bad_request(
            "invalid-parameter",
            f"{name} is out of range",
            [FieldError(name, f"must be between {low} and {high}")],
        )
    return value


class OrderCollection:
    def __init__(self, service: OrderService, node: str, max_body_bytes: int) -> None:
        self._service = service
        self._node = node
        self._limit = max_body_bytes

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        command = PlaceOrder.from_payload(read_json(req, self._limit))
        metadata = {"correlation_id": request_id(req), "node": self._node}
        events, created = self._service.place_order(command, metadata)
        view = order_view.fold(events)
        resp.status = falcon.HTTP_201 if created else falcon.HTTP_200
        resp.location = f"/orders/{command.order_id}"
        resp.etag = f'"{view.version}"'
        resp.media = view.to_dict()


class OrderResource:
    def __init__(self, service: OrderService) -> None:
        self._service = service

    def on_get(self, req: falcon.Request, resp: falcon.Response, order_id: str) -> None:
        version = int_param(req, "version", 0, 1, 2**31 - 1) or None
        events = self._service.history(order_id, version)
        if version is not None and events[-1].version < version:
            raise OrderNotFoundError(order_id, f"order {order_id!r} has no version {version}")
        view = order_view.fold(events)
        etag = f'"{view.version}"'
        resp.etag = etag
        if req.if_none_match and any(tag == "*" or f'"{tag}"' == etag for tag in req.if_none_match):
            resp.status = falcon.HTTP_304
            return
        resp.media = view.to_dict()


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


class EventFeed:
    def __init__(self, store: EventStore) -> None:
        self._store = store

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        after = int_param(req, "after", 0, 0, 2**63 - 1)
        limit = int_param(req, "limit", 100, 1, MAX_PAGE)
        head = self._store.head()  # read first: every event up to it is already visible
        events = self._store.read_all(after, limit)
        resp.media = {
            "events": [event_dict(e, with_stream=True) for e in events],
            "next_after": events[-1].position if events else after,
            "head": max(head, events[-1].position if events else 0),
        }


class Metrics:
    def __init__(self, projector: MetricsProjector) -> None:
        self._projector = projector

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = self._projector.report()


class Health:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"status": "ok"}


class Readiness:
    def __init__(self, check: Callable[[], CoreReadiness]) -> None:
        self._check = check

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        state = self._check()
        resp.status = falcon.HTTP_200 if state.ready else falcon.HTTP_503
        resp.media = {
            "status": "ready" if state.ready else "not ready",
            "node": state.node,
            "database": state.database,
            "writer": state.writer,
            "worker": state.worker,
        }
