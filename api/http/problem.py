"""Errors as RFC 9457 problem details, mapped once for the whole app.

Every core error family gets one status here; anything unexpected becomes a bare
500 problem (logged with its traceback, never shown to the client).
"""

from __future__ import annotations

import logging
from typing import Any

import falcon
import orjson

from orderlog.domain.errors import (
    AppendFailedError,
    ConcurrencyError,
    FieldError,
    FutureEventError,
    IdempotencyKeyExpiredError,
    IdempotencyKeyReusedError,
    InvalidTransitionError,
    OrderConflictError,
    OrderNotFoundError,
    OutcomeUnknownError,
    StoreFullError,
    StoreUnavailableError,
    ValidationError,
)

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
# Freeing a disk takes an operator: a client retrying every second only adds load.
FULL_RETRY_AFTER = "10"
MAX_ERRORS = 20  # a problem lists at most this many; errors_omitted says how many more
# Every problem type the service answers: slug -> (status, what it means). The
# OpenAPI document lists them from here, and a test checks that the code names no other.
PROBLEM_TYPES: dict[str, tuple[int, str]] = {
    "bad-request": (400, "a header or the request line Falcon could not read"),
    "missing-host": (400, "an HTTP/1.1 request without Host"),
    "ambiguous-framing": (
        400,
        "the body's length could be read more than one way (Transfer-Encoding, Content-Length)",
    ),
    "malformed-json": (400, "the body is not JSON in UTF-8"),
    "duplicate-key": (400, "a key appears twice in one object"),
    "invalid-parameter": (400, "a query parameter is not what it must be"),
    "repeated-parameter": (400, "a query parameter is given more than once"),
    "invalid-idempotency-key": (400, "the Idempotency-Key header is unusable"),
    "unauthorized": (401, "no token, or one unknown or revoked"),
    "insufficient-scope": (403, "the token lacks the route's scope"),
    "not-found": (404, "no such path or file"),
    "order-not-found": (404, "no such order, or no such version of it"),
    "method-not-allowed": (405, "the path does not offer this method"),
    "not-acceptable": (406, "no answer in a media type the client accepts"),
    "order-conflict": (409, "the order id is taken by a different order"),
    "idempotency-key-reused": (409, "the Idempotency-Key was first used with another order"),
    "concurrency-conflict": (409, "the order changed under the request, again and again"),
    "invalid-transition": (409, "the order's status does not allow this"),
    "length-required": (411, "a body without Content-Length"),
    "payload-too-large": (413, "the body exceeds --max-body-bytes"),
    "unsupported-media-type": (415, "the body is not application/json in UTF-8"),
    "validation-error": (422, "fields are invalid; errors lists them"),
    "idempotency-key-expired": (422, "the Idempotency-Key is older than its lifetime"),
    "too-many-requests": (429, "this client has too many requests in hand"),
    "headers-too-large": (431, "the request's headers are too large"),
    "internal-error": (500, "the server failed; the log holds the reason"),
    "store-unavailable": (503, "the database cannot be reached"),
    "append-failed": (503, "the write was not stored; sending it again is safe"),
    "outcome-unknown": (
        503,
        "the database did not confirm whether the write was stored; sending it again with "
        "the order_id given is safe and answers which",
    ),
    "store-full": (503, "the database's disk is full: nothing was written"),
    "projections-behind": (503, "the read models are behind the log"),
    "log-unreadable": (
        503,
        "the log holds an event newer than this server's release reads (every node is "
        "upgraded together)",
    ),
    "shutting-down": (503, "the server is stopping and did not act on the request"),
    "unavailable": (503, "the service cannot answer now"),
}
# The types of errors Falcon raises itself (routing, methods, headers), by status.
FALCON_ERROR_TYPES = {
    400: "bad-request",
    401: "unauthorized",
    404: "not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    411: "length-required",
    413: "payload-too-large",
    415: "unsupported-media-type",
    429: "too-many-requests",
    431: "headers-too-large",
    503: "unavailable",
}


class Problem(falcon.HTTPError):
    """An HTTP error with an RFC 9457 body: type, title, status, detail and extras."""

    def __init__(
        self,
        status: int,
        slug: str,
        title: str,
        detail: str,
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            falcon.code_to_http_status(status), title=title, description=detail, headers=headers
        )
        self.slug = slug
        self.errors = errors
        self.extra = extra or {}

    def to_problem(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": problem_type(self.slug),
            "title": self.title,
            "status": self.status_code,
            "detail": self.description,
            **self.extra,
        }
        if self.errors:
            listed = list(dict.fromkeys((e.field, e.message) for e in self.errors))  # no twins
            body["errors"] = [{"field": f, "message": m} for f, m in listed[:MAX_ERRORS]]
            if len(listed) > MAX_ERRORS:
                body["errors_omitted"] = len(listed) - MAX_ERRORS
        return body


def problem_type(slug: str) -> str:
    return f"urn:orderlog:problem:{slug}"


def invalid(errors: list[FieldError], detail: str = "The request has invalid fields.") -> Problem:
    return Problem(422, "validation-error", "Invalid request", detail, errors)


def bad_request(slug: str, detail: str, errors: list[FieldError] | None = None) -> Problem:
    return Problem(400, slug, "Bad request", detail, errors)


def _serialize(req: falcon.Request, resp: falcon.Response, error: falcon.HTTPError) -> None:
    if isinstance(error, Problem):
        body = error.to_problem()
    else:
        body = {
            "type": problem_type(FALCON_ERROR_TYPES.get(error.status_code, "http-error")),
            "title": error.title,
            "status": error.status_code,
            "detail": error.description or error.title,
        }
    resp.content_type = PROBLEM_JSON
    resp.data = orjson.dumps(body)
    resp.append_header("Vary", "Accept")


def _handler(status: int, slug: str, title: str):  # type: ignore[no-untyped-def]
    def handle(req: falcon.Request, resp: falcon.Response, error: Exception, params: Any) -> None:
        if isinstance(error, ValidationError):
            count = len({e.field for e in error.errors})
            detail = "1 field is invalid" if count == 1 else f"{count} fields are invalid"
            raise Problem(status, slug, title, detail, error.errors)
        raise Problem(status, slug, title, str(error))

    return handle


def _unavailable(slug: str, detail: str, retry_after: str = "1", logged: bool = True):  # type: ignore[no-untyped-def]
    """A 503 that says the request was not acted on (or, for a read, not answered)."""

    def handle(req: falcon.Request, resp: falcon.Response, error: Exception, params: Any) -> None:
        if logged:
            # The driver's message may name hosts and users: it goes to the log, not the client.
            log.warning("%s %s: %s", req.method, req.path, error)
        raise Problem(
            503, slug, "Service unavailable", detail, headers={"Retry-After": retry_after}
        )

    return handle


def _outcome_unknown(
    req: falcon.Request, resp: falcon.Response, error: Exception, params: Any
) -> None:
    log.warning("%s %s: %s", req.method, req.path, error)
    order_id = getattr(error, "stream_id", "")
    raise Problem(
        503,
        "outcome-unknown",
        "Outcome unknown",
        f"the database did not confirm in time whether order {order_id!r} was stored; send "
        "it again with this order_id (an order placed twice with its id is placed once, and "
        "the answer says which)",
        headers={"Retry-After": "1"},
        extra={"order_id": order_id},
    )


def _unexpected(req: falcon.Request, resp: falcon.Response, error: Exception, params: Any) -> None:
    if isinstance(error, falcon.HTTPError):
        raise error
    log.exception("unhandled error on %s %s", req.method, req.path)
    raise Problem(
        500, "internal-error", "Internal error", "The server failed to handle the request."
    )


def install(app: falcon.App) -> None:
    """Map every error family to its status, once."""
    app.add_error_handler(Exception, _unexpected)
    app.add_error_handler(ValidationError, _handler(422, "validation-error", "Invalid request"))
    app.add_error_handler(OrderNotFoundError, _handler(404, "order-not-found", "Order not found"))
    app.add_error_handler(OrderConflictError, _handler(409, "order-conflict", "Order id taken"))
    app.add_error_handler(
        IdempotencyKeyReusedError,
        _handler(409, "idempotency-key-reused", "Idempotency key reused"),
    )
    app.add_error_handler(
        IdempotencyKeyExpiredError,
        _handler(422, "idempotency-key-expired", "Idempotency key expired"),
    )
    app.add_error_handler(ConcurrencyError, _handler(409, "concurrency-conflict", "Conflict"))
    app.add_error_handler(
        InvalidTransitionError, _handler(409, "invalid-transition", "Invalid transition")
    )
    app.add_error_handler(
        StoreUnavailableError,
        _unavailable("store-unavailable", "the event store is unavailable; retry later"),
    )
    app.add_error_handler(
        AppendFailedError,
        _unavailable(
            "append-failed", "the database failed and nothing was stored; send the request again"
        ),
    )
    app.add_error_handler(OutcomeUnknownError, _outcome_unknown)
    # The node says once that it stopped following the log (orderlog.readiness); it
    # needs an upgrade, not a retry in a second.
    app.add_error_handler(
        FutureEventError,
        _unavailable(
            "log-unreadable",
            "the log holds an event newer than this server reads; it awaits an upgrade",
            FULL_RETRY_AFTER,
            logged=False,
        ),
    )
    # The store logs one line when the disk fills and one when it has room again;
    # a line per refused request would bury them.
    app.add_error_handler(
        StoreFullError,
        _unavailable(
            "store-full",
            "the event store's disk is full: nothing was written; retry later",
            FULL_RETRY_AFTER,
            logged=False,
        ),
    )
    app.set_error_serializer(_serialize)
