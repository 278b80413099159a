"""The OpenAPI 3.1 document served at ``/openapi.json``, built from the code's own rules.

Every bound, pattern and name here is read from the constant the code checks
against (id lengths, item counts, the amount's limit, page sizes, statuses, event
types, scopes, problem types), so the contract cannot drift from what the server
does. Strings that must be printable carry ``format: printable``: Python's
``str.isprintable`` and not blank (``orderlog.domain.order.is_blank``). No portable
regular expression says that, so the format names it and the description says it.
"""

from __future__ import annotations

import copy
from typing import Any

from api.http.auth import ROUTE_SCOPES
from api.http.problem import PROBLEM_JSON, PROBLEM_TYPES, problem_type
from api.http.static import ASSETS
from orderlog import __version__
from orderlog.domain.events import (
    EVENT_TYPES,
    OrderCompleted,
    OrderPlaced,
    OrderProcessingStarted,
)
from orderlog.domain.order import (
    MAX_AMOUNT,
    MAX_ID_LENGTH,
    MAX_IDEMPOTENCY_KEY,
    MAX_INT_ID,
    MAX_ITEMS,
    Status,
)
from orderlog.domain.upcasting import current_version
from orderlog.storage.reader import MAX_PAGE
from projections.order_status import MAX_LIST

MAX_POSITION = 2**63 - 1
MAX_VERSION = 2**31 - 1
_INTEGER_DIGITS = len(str(int(MAX_AMOUNT)))
# A decimal string the amount rules accept: ASCII digits, at most two decimals that
# are not zero, at most MAX_AMOUNT (13 integer digits), no sign, no exponent.
# `(?![\s\S])` ends the text in every regex dialect (`$` may leave a newline in Python's).
AMOUNT_TEXT = (
    rf"^(?:(?:0*[1-9][0-9]{{0,{_INTEGER_DIGITS - 1}}}|0+)(?:\.[0-9]{{0,2}}0*)?"
    r"|\.[0-9]{1,2}0*)(?![\s\S])"
)
# A header value is Latin-1; of that, the printable characters, and one not a space.
_LATIN1 = r"[\x20-\x7e\xa1-\xac\xae-\xff]"
LATIN1_PRINTABLE = rf"^{_LATIN1}*[\x21-\x7e\xa1-\xac\xae-\xff]{_LATIN1}*(?![\s\S])"
ORDER_ID_TEXT = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*(?![\s\S])"
CURRENCY_TEXT = r"^[A-Z]{3}(?![\s\S])"
# A sum of amounts: exact, so at least the two decimals of its amounts, however large.
REVENUE_TEXT = r"^[0-9]+\.[0-9]{2,}(?![\s\S])"
STATUSES = [status.value for status in Status]
PROMETHEUS_TEXT = "text/plain"
# Paths whose answers read the database (and so may answer 503 store-unavailable).
LOG_READERS = {"/orders", "/orders/{order_id}", "/orders/{order_id}/events", "/events", "/metrics"}
OPENMETRICS_TEXT = "application/openmetrics-text"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"oneOf": [schema, {"type": "null"}]}


def _printable(max_length: int, description: str) -> dict[str, Any]:
    return {
        "type": "string",
        "minLength": 1,
        "maxLength": max_length,
        "format": "printable",
        "description": f"{description} Printable characters only, not blank.",
    }


def _object(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
        "additionalProperties": False,
    }


TIME = {"type": "string", "format": "date-time", "description": "UTC, microseconds, ending Z"}
ID = {
    "description": "A string or a non-negative integer (a JSON boolean is neither).",
    "oneOf": [
        _printable(MAX_ID_LENGTH, "An id as text."),
        {"type": "integer", "minimum": 0, "maximum": MAX_INT_ID},
    ],
}


def _event_schemas() -> dict[str, Any]:
    data = {
        OrderPlaced: _object(
            {
                "order_id": _ref("OrderId"),
                "user_id": _ref("Id"),
                "item_ids": {"type": "array", "items": _ref("Id"), "minItems": 1},
                "total_amount": _ref("Money"),
                "currency": _ref("Currency"),
            }
        ),
        OrderProcessingStarted: _object(
            {
                "order_id": _ref("OrderId"),
                "attempt": {"type": "integer", "minimum": 1},
                "worker_id": {"type": "string"},
            }
        ),
        OrderCompleted: _object(
            {"order_id": _ref("OrderId"), "attempt": {"type": "integer", "minimum": 1}}
        ),
    }
    assert set(data) == set(EVENT_TYPES.values()), "every event type has its data schema"
    return {f"{cls.__name__}Data": schema for cls, schema in data.items()}


def _event(with_stream: bool) -> dict[str, Any]:
    variants = []
    for name in EVENT_TYPES:
        properties: dict[str, Any] = {
            "position": {
                "type": "integer",
                "minimum": 1,
                "description": "in the whole log: unique and rising, with gaps on PostgreSQL",
            },
            "version": {"type": "integer", "minimum": 1, "description": "in the order's stream"},
            "type": {"const": name},
            "event_version": {
                "type": "integer",
                "minimum": 1,
                "maximum": current_version(name),
                "description": "the version of its type the event was stored at; data is "
                "always shown as the current version's",
            },
            "data": _ref(f"{name}Data"),
            "metadata": _ref("EventMetadata"),
            "recorded_at": TIME,
        }
        if with_stream:
            properties["stream_id"] = _ref("OrderId")
        variants.append(_object(properties))
    return {"oneOf": variants}


def schemas() -> dict[str, Any]:
    """Every body the API reads or writes."""
    order_view = _object(
        {
            "order_id": _ref("OrderId"),
            "user_id": _ref("Id"),
            "item_ids": {"type": "array", "items": _ref("Id"), "minItems": 1},
            "total_amount": _ref("Money"),
            "currency": _ref("Currency"),
            "status": _ref("Status"),
            "version": {"type": "integer", "minimum": 1},
            "attempts": {"type": "integer", "minimum": 0},
            "placed_at": TIME,
            "processing_started_at": _nullable(TIME),
            "completed_at": _nullable(TIME),
            "processing_time_seconds": _nullable({"type": "number", "minimum": 0}),
        }
    )
    seconds = _nullable({"type": "number", "minimum": 0})
    return {
        "OrderId": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_ID_LENGTH,
            "pattern": ORDER_ID_TEXT,
            "description": "Letters, digits and _ . : -, starting with a letter or digit.",
        },
        "Id": ID,
        "Status": {"type": "string", "enum": STATUSES},
        "Currency": {
            "type": "string",
            "pattern": CURRENCY_TEXT,
            "description": "An ISO 4217 currency code: three upper-case letters A-Z.",
        },
        "Money": {
            "type": "string",
            "pattern": rf"^[0-9]{{1,{_INTEGER_DIGITS}}}\.[0-9]{{2}}(?![\s\S])",
            "description": "An exact amount with two decimals, as text (never a float).",
        },
        "Amount": {
            "description": (
                f"An exact, non-negative amount of at most two decimals, up to {MAX_AMOUNT}: "
                "a JSON number (its digits are read as written, never through a float) "
                "or a string in plain decimal notation."
            ),
            "oneOf": [
                {
                    "type": "number",
                    "minimum": 0,
                    "maximum": float(MAX_AMOUNT),
                    "multipleOf": 0.01,
                },
                {"type": "string", "pattern": AMOUNT_TEXT},
            ],
        },
        "PlaceOrder": _object(
            {
                "order_id": {
                    **_ref("OrderId"),
                    "description": "Optional: the server makes one (a UUID) when absent.",
                },
                "user_id": _ref("Id"),
                "item_ids": {
                    "type": "array",
                    "items": _ref("Id"),
                    "minItems": 1,
                    "maxItems": MAX_ITEMS,
                },
                "total_amount": _ref("Amount"),
                "currency": {
                    **_ref("Currency"),
                    "description": "Optional: the server's --default-currency (USD unless "
                    "set) when absent.",
                },
            },
            required=["user_id", "item_ids", "total_amount"],
        ),
        "OrderView": order_view,
        "OrderList": _object(
            {
                "orders": {"type": "array", "items": _ref("OrderView"), "maxItems": MAX_LIST},
                "next_after": _nullable({"type": "integer", "minimum": 1}),
            }
        ),
        "EventMetadata": {
            "type": "object",
            "description": "Who and what caused the event; more keys may appear.",
            "properties": {
                "event_id": {"type": "string"},
                "correlation_id": {
                    "type": "string",
                    "description": "the id of the request that placed the order (X-Request-ID)",
                },
                "causation_id": {
                    "type": "string",
                    "description": "the event_id of the event that caused this one "
                    "(a claim: the order's last event when claimed; a completion: its "
                    "claim); absent on OrderPlaced",
                },
                "node": {"type": "string"},
                "worker": {"type": "string"},
                "idempotency_key": {"type": "string"},
            },
        },
        **_event_schemas(),
        "Event": _event(with_stream=False),
        "FeedEvent": _event(with_stream=True),
        "OrderHistory": _object(
            {
                "order_id": _ref("OrderId"),
                "version": {"type": "integer", "minimum": 1},
                "events": {"type": "array", "items": _ref("Event"), "minItems": 1},
            }
        ),
        "EventPage": _object(
            {
                "events": {"type": "array", "items": _ref("FeedEvent"), "maxItems": MAX_PAGE},
                "next_after": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "pass as after= for the next page",
                },
                "head": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "the newest position safe to read: nothing at or below it "
                    "can appear later",
                },
            }
        ),
        "Metrics": _object(
            {
                "total_orders": {"type": "integer", "minimum": 0},
                "orders_processed": {"type": "integer", "minimum": 0},
                "average_processing_time_seconds": seconds,
                "average_end_to_end_seconds": seconds,
                "processing_time_percentiles_seconds": _object(
                    {"p50": seconds, "p95": seconds, "p99": seconds}
                ),
                "processing_time_histogram_seconds": {
                    "type": "array",
                    "description": "completed orders by processing time, in bars of one "
                    "round width up to the 99th percentile, and one bar for any beyond",
                    "items": _object(
                        {
                            "from": {"type": "number", "minimum": 0},
                            "to": {"type": "number", "minimum": 0},
                            "count": {"type": "integer", "minimum": 0},
                        }
                    ),
                },
                "status_counts": _object(
                    {status: {"type": "integer", "minimum": 0} for status in STATUSES}
                ),
                "revenue": {
                    "type": "object",
                    "description": "the total_amount of every Completed order summed per "
                    "currency, exact, as text; a currency appears once an order in it completes",
                    "propertyNames": _ref("Currency"),
                    "additionalProperties": {"type": "string", "pattern": REVENUE_TEXT},
                },
                "position": {"type": "integer", "minimum": 0, "description": "log position"},
            }
        ),
        "Health": _object({"status": {"const": "ok"}}),
        "Readiness": _object(
            {
                "status": {"enum": ["ready", "not ready"]},
                "node": {"type": "string"},
                "database": {"type": "boolean"},
                "writer": {"type": "boolean"},
                "worker": {"type": "boolean"},
                "writable": {
                    "type": "boolean",
                    "description": "false while appends fail because the database's disk is full",
                },
                "node_lock": {"type": "boolean"},
                "log": _nullable(
                    {
                        "type": "string",
                        "description": "why this process stopped following the log: it holds "
                        "an event newer than this release reads (upgrade every node together)",
                    }
                ),
                "process": _object(
                    {
                        "index": {"type": "integer", "minimum": 1},
                        "pid": {"type": "integer", "minimum": 1},
                    }
                )
                | {
                    "description": "the process that answered: its place among the node's "
                    "processes (1 to --processes) and its process id; the fields above "
                    "are about it"
                },
                "processes": _object(
                    {
                        "configured": {"type": "integer", "minimum": 1},
                        "serving": _nullable({"type": "integer", "minimum": 0}),
                    }
                )
                | {
                    "description": "the node's processes: how many --processes asks for, and "
                    "how many serve now (started, not since stopped; a dead one is started "
                    "again); null when the supervisor cannot be asked"
                },
            }
        ),
        "Problem": _object(
            {
                "type": {"type": "string", "enum": [problem_type(s) for s in PROBLEM_TYPES]},
                "title": {"type": "string"},
                "status": {"type": "integer", "minimum": 400, "maximum": 599},
                "detail": {"type": "string"},
                "errors": {
                    "type": "array",
                    "maxItems": 20,
                    "items": _object({"field": {"type": "string"}, "message": {"type": "string"}}),
                },
                "errors_omitted": {"type": "integer", "minimum": 1},
                "scope": {"type": "string", "description": "the scope the route needs"},
                "order_id": {
                    "type": "string",
                    "description": "outcome-unknown: the order to send again, with this id",
                },
            },
            required=["type", "title", "status", "detail"],
        ),
    }


# -- responses --------------------------------------------------------------------------


def _header(description: str, required: bool = True) -> dict[str, Any]:
    return {"description": description, "required": required, "schema": {"type": "string"}}


HEADER_REQUEST_ID = _header(
    "The request's id (the client's X-Request-ID when usable); "
    "a 503 from a stopping server may lack it",
    required=False,
)


def _problem(status: int, slugs: list[str], headers: dict[str, Any] | None = None) -> dict:
    """An error answer: problem+json whose ``type`` is one of ``slugs``."""
    for slug in slugs:
        assert PROBLEM_TYPES[slug][0] == status, f"{slug} is a {PROBLEM_TYPES[slug][0]}"
    lines = "; ".join(f"`{slug}`: {PROBLEM_TYPES[slug][1]}" for slug in slugs)
    schema = {
        "allOf": [
            _ref("Problem"),
            {
                "properties": {
                    "type": {"enum": [problem_type(s) for s in slugs]},
                    "status": {"const": status},
                }
            },
        ]
    }
    answer: dict[str, Any] = {
        "description": f"Problem types: {lines}.",
        "content": {PROBLEM_JSON: {"schema": schema}},
    }
    if headers:
        answer["headers"] = headers
    return answer


def _json(description: str, schema: str, headers: dict[str, Any] | None = None) -> dict:
    answer: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": _ref(schema)}},
    }
    if headers:
        answer["headers"] = headers
    return answer


RETRY_AFTER = {"Retry-After": _header("seconds to wait", required=False)}
CHALLENGE = {"WWW-Authenticate": _header("Bearer realm, error and the scope needed")}
ETAG = {"ETag": _header("the order's version, quoted")}
VARY = {"Vary": _header("Accept")}
NOT_MODIFIED = {"description": "Not modified (If-None-Match matched the ETag)"}


def _common(scope: str | None, reads_log: bool, with_query: bool) -> dict[str, Any]:
    """What any operation may answer besides its own results."""
    bad = ["bad-request", "missing-host", "ambiguous-framing"]
    if with_query:
        bad += ["invalid-parameter", "repeated-parameter"]
    unavailable = ["shutting-down"] + (["store-unavailable", "log-unreadable"] if reads_log else [])
    answers: dict[str, Any] = {
        "400": _problem(400, bad),
        "405": _problem(405, ["method-not-allowed"]),
        "429": _problem(429, ["too-many-requests"], RETRY_AFTER),
        "503": _problem(503, unavailable, RETRY_AFTER),
    }
    if scope is not None:
        answers["401"] = _problem(401, ["unauthorized"], CHALLENGE)
        answers["403"] = _problem(403, ["insufficient-scope"], CHALLENGE)
    return answers


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _int_query(name: str, low: int, high: int, default: int | None, description: str) -> dict:
    schema: dict[str, Any] = {"type": "integer", "minimum": low, "maximum": high}
    if default is not None:
        schema["default"] = default
    return _query(name, schema, f"{description} ASCII digits, given at most once.")


ORDER_ID_PARAM = {
    "name": "order_id",
    "in": "path",
    "required": True,
    "schema": _ref("OrderId"),
}


def _operations() -> dict[tuple[str, str], dict[str, Any]]:
    """(path, method) -> operation, without the parts every operation shares."""
    order_links = {
        "GetOrder": {
            "operationId": "getOrder",
            "parameters": {"order_id": "$response.body#/order_id"},
        },
        "GetOrderEvents": {
            "operationId": "getOrderEvents",
            "parameters": {"order_id": "$response.body#/order_id"},
        },
    }
    placed_headers = {"Location": _header("/orders/{order_id}"), **ETAG}
    return {
        ("/orders", "POST"): {
            "operationId": "placeOrder",
            "summary": "Place an order",
            "description": (
                "Accepted orders are durable before the answer. A retry with the same "
                "body answers 200 with the order; with an Idempotency-Key and no "
                "order_id, a retry within the key's lifetime answers as the first time."
            ),
            "parameters": [
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "schema": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": MAX_IDEMPOTENCY_KEY,
                        "pattern": LATIN1_PRINTABLE,
                        "description": "A key the client chose: printable, not blank.",
                    },
                }
            ],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("PlaceOrder")}},
            },
            "responses": {
                "201": _json("Placed", "OrderView", placed_headers) | {"links": order_links},
                "200": _json("Already placed, identically", "OrderView", placed_headers)
                | {"links": order_links},
                "400": _problem(
                    400,
                    [
                        "bad-request",
                        "missing-host",
                        "ambiguous-framing",
                        "malformed-json",
                        "duplicate-key",
                        "invalid-idempotency-key",
                    ],
                ),
                "409": _problem(409, ["order-conflict", "idempotency-key-reused"]),
                "503": _problem(
                    503,
                    [
                        "shutting-down",
                        "store-unavailable",
                        "append-failed",
                        "outcome-unknown",
                        "store-full",
                    ],
                    RETRY_AFTER,
                ),
                "413": _problem(413, ["payload-too-large"]),
                "415": _problem(415, ["unsupported-media-type"]),
                "422": _problem(422, ["validation-error", "idempotency-key-expired"]),
            },
        },
        ("/orders", "GET"): {
            "operationId": "listOrders",
            "summary": "Orders, oldest first, by status and user",
            "description": "Reflects at least every order placed before the request.",
            "parameters": [
                _query("status", _ref("Status"), "Only orders in this status."),
                _query(
                    "user_id",
                    _printable(MAX_ID_LENGTH, 'The user id\'s text: 42 matches 42 and "42".'),
                    "Only this user's orders.",
                ),
                _int_query("limit", 1, MAX_LIST, 100, "Orders per page."),
                _int_query("after", 0, MAX_POSITION, 0, "The previous page's next_after."),
            ],
            "responses": {
                "200": _json("A page of orders", "OrderList"),
                "503": _problem(
                    503, ["shutting-down", "store-unavailable", "projections-behind"], RETRY_AFTER
                ),
            },
        },
        ("/orders/{order_id}", "GET"): {
            "operationId": "getOrder",
            "summary": "An order's current state",
            "parameters": [
                ORDER_ID_PARAM,
                _int_query(
                    "version", 1, MAX_VERSION, None, "The order as of this version (default: now)."
                ),
                {
                    "name": "If-None-Match",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string"},
                    "description": "A previous ETag: 304 while the order is unchanged.",
                },
            ],
            "responses": {
                "200": _json("The order", "OrderView", ETAG),
                "304": NOT_MODIFIED | {"headers": ETAG},
                "404": _problem(404, ["order-not-found"]),
            },
        },
        ("/orders/{order_id}/events", "GET"): {
            "operationId": "getOrderEvents",
            "summary": "An order's events, oldest first",
            "parameters": [ORDER_ID_PARAM],
            "responses": {
                "200": _json("The order's stream", "OrderHistory"),
                "404": _problem(404, ["order-not-found"]),
            },
        },
        ("/events", "GET"): {
            "operationId": "readEvents",
            "summary": "The whole log in order, a page at a time",
            "parameters": [
                _int_query(
                    "after",
                    0,
                    MAX_POSITION,
                    0,
                    "Events after this position: 0, or a next_after (or a position) from "
                    "an earlier answer.",
                ),
                _int_query("limit", 1, MAX_PAGE, 100, "Events per page."),
            ],
            "responses": {"200": _json("A page of events", "EventPage")},
        },
        ("/metrics", "GET"): {
            "operationId": "getMetrics",
            "summary": "Orders processed, processing times, orders per status",
            "description": (
                "JSON unless the Accept header asks for text/plain (Prometheus) or "
                "application/openmetrics-text above JSON."
            ),
            "responses": {
                "200": {
                    "description": "The metrics as of `position`, or the exposition text",
                    "headers": VARY,
                    "content": {
                        "application/json": {"schema": _ref("Metrics")},
                        PROMETHEUS_TEXT: {"schema": {"type": "string"}},
                        OPENMETRICS_TEXT: {"schema": {"type": "string"}},
                    },
                },
                "503": _problem(
                    503, ["shutting-down", "store-unavailable", "projections-behind"], RETRY_AFTER
                ),
            },
        },
        ("/metrics/prometheus", "GET"): {
            "operationId": "scrapeMetrics",
            "summary": "The Prometheus exposition text, whatever the Accept header",
            "responses": {
                "200": {
                    "description": "Prometheus text (OpenMetrics if asked for)",
                    "headers": VARY,
                    "content": {
                        PROMETHEUS_TEXT: {"schema": {"type": "string"}},
                        OPENMETRICS_TEXT: {"schema": {"type": "string"}},
                    },
                }
            },
        },
        ("/healthz", "GET"): {
            "operationId": "health",
            "summary": "The process answers",
            "responses": {"200": _json("Alive", "Health")},
        },
        ("/readyz", "GET"): {
            "operationId": "readiness",
            "summary": "Database, writer and worker are all up, and the log takes appends",
            "description": "About the process that answered: with --processes N, each of the "
            "node's processes takes connections from the one listening socket on its own, "
            "so a connection is served by a process that answers as this one would. "
            "`processes` counts the node's processes serving.",
            "responses": {
                "200": _json("Ready", "Readiness"),
                "503": _json("Not ready: the body says which part is not", "Readiness")
                | {
                    "content": {
                        "application/json": {"schema": _ref("Readiness")},
                        PROBLEM_JSON: _problem(503, ["shutting-down"])["content"][PROBLEM_JSON],
                    }
                },
            },
        },
        ("/openapi.json", "GET"): {
            "operationId": "openapi",
            "summary": "This document",
            "responses": {
                "200": {
                    "description": "OpenAPI 3.1",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            },
        },
        ("/", "GET"): {
            "operationId": "home",
            "summary": "Leads to the dashboard",
            "responses": {
                "302": {
                    "description": "To /dashboard",
                    "headers": {"Location": {"required": True, "schema": {"const": "/dashboard"}}},
                }
            },
        },
        ("/dashboard", "GET"): {
            "operationId": "dashboard",
            "summary": "The live dashboard (a page; its script calls the API)",
            "responses": {
                "200": {
                    "description": "The page",
                    "headers": {"ETag": ETAG["ETag"] | {"description": "the page's hash"}},
                    "content": {"text/html": {"schema": {"type": "string"}}},
                },
                "304": NOT_MODIFIED,
            },
        },
        ("/dashboard/{asset}", "GET"): {
            "operationId": "dashboardAsset",
            "summary": "The dashboard's scripts and styles",
            "parameters": [
                {
                    "name": "asset",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "enum": sorted(ASSETS)},
                },
                _query(
                    "v",
                    {"type": "string"},
                    "The files' version: with the current one the answer is cached for good.",
                ),
            ],
            "responses": {
                "200": {
                    "description": "The file",
                    "content": {
                        media: {"schema": {"type": "string"}}
                        for media in sorted({t.split(";")[0] for t in ASSETS.values()})
                    },
                },
                "304": NOT_MODIFIED,
                "404": _problem(404, ["not-found"]),
            },
        },
    }


def _finish(path: str, method: str, operation: dict[str, Any], anonymous: bool) -> dict[str, Any]:
    scope = ROUTE_SCOPES[(path, method)]
    reads_log = path in LOG_READERS
    with_query = any(p.get("in") == "query" for p in operation.get("parameters", []))
    operation["responses"] = _common(scope, reads_log, with_query) | operation["responses"]
    for answer in operation["responses"].values():
        answer.setdefault("headers", {})["X-Request-ID"] = HEADER_REQUEST_ID
    # A server that lets requests without a token pass (none in the database, on
    # loopback or with --allow-anonymous) says so with `{}` (401/403 stay documented
    # for when a token exists).
    operation["security"] = ([{"bearer": [scope]}] + ([{}] if anonymous else [])) if scope else []
    return operation


def _head(get: dict[str, Any]) -> dict[str, Any]:
    """HEAD: the GET's answers without their bodies."""
    head = copy.deepcopy(get)
    head["operationId"] = get["operationId"] + "Head"
    head["summary"] = f"{get['summary']} (headers only)"
    head.pop("description", None)
    for answer in head["responses"].values():
        answer.pop("content", None)
        answer.pop("links", None)
    return head


def document(anonymous: bool = False) -> dict[str, Any]:
    """The whole OpenAPI 3.1 document; ``anonymous``: as a server that lets requests
    without a token pass serves it."""
    paths: dict[str, dict[str, Any]] = {}
    for (path, method), operation in _operations().items():
        finished = _finish(path, method, operation, anonymous)
        paths.setdefault(path, {})[method.lower()] = finished
        if method == "GET":
            paths[path]["head"] = _head(finished)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "orderlog",
            "version": __version__,
            "description": (
                "An event-sourced order service. Errors are RFC 9457 problem+json "
                "(`application/problem+json`) with a `type` of `urn:orderlog:problem:<slug>`; "
                "a path that does not exist answers 404 `not-found`, a method a path "
                "does not offer 405 `method-not-allowed` with `Allow`. A string with "
                "`format: printable` holds only characters for which Python's "
                "`str.isprintable()` is true, and at least one letter, number, punctuation "
                "or symbol (Unicode categories L, N, P, S) other than the Hangul fillers "
                "U+115F, U+1160, U+3164, U+FFA0 and U+2800 BRAILLE PATTERN BLANK."
            ),
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": (
                        "A token from `orderlog token create --scopes …`. With no token in "
                        "the database the API is open on a loopback address or with "
                        "--allow-anonymous; anywhere else every route that needs a scope "
                        "then answers 401."
                    ),
                }
            },
        },
    }
