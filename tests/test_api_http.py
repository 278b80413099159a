"""HTTP through the real app on every backend: HEAD and OPTIONS, routing problems,
query and charset rules, answers that never grow with the input, request ids and
the access log, and the headers every answer carries."""

from __future__ import annotations

import falcon.testing
import orjson
import pytest

from api.node import Node
from tests.support import ORDER, assert_problem, place_and_finish, post

# -- HTTP semantics and answers that never grow with the input --------------------------

GET_ROUTES = ["/orders/o-1", "/orders/o-1/events", "/events", "/metrics", "/healthz", "/readyz"]


@pytest.mark.parametrize("path", GET_ROUTES)
def test_head_answers_wherever_get_does_with_the_same_headers_and_no_body(
    client: falcon.testing.TestClient, node: Node, path: str
) -> None:
    place_and_finish(client, node)
    got = client.simulate_get(path)
    head = client.simulate_head(path)
    assert head.status_code == got.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(len(got.content))
    assert head.headers["content-type"] == got.headers["content-type"]


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/orders", {"POST", "OPTIONS"}),
        ("/orders/o-1", {"GET", "HEAD", "OPTIONS"}),
        ("/events", {"GET", "HEAD", "OPTIONS"}),
    ],
)
def test_options_answers_204_with_the_methods_allowed(
    client: falcon.testing.TestClient, path: str, allowed: set[str]
) -> None:
    result = client.simulate_options(path)
    assert result.status_code == 204
    assert result.content == b""
    assert "content-type" not in result.headers
    assert {m.strip() for m in result.headers["allow"].split(",")} >= allowed - {"OPTIONS"}


@pytest.mark.parametrize(
    ("method", "path", "status", "slug"),
    [
        ("GET", "/nowhere", 404, "not-found"),
        ("DELETE", "/orders", 405, "method-not-allowed"),
        ("PUT", "/events", 405, "method-not-allowed"),
    ],
)
def test_routing_errors_are_problems_of_the_service_s_own_types(
    client: falcon.testing.TestClient, method: str, path: str, status: int, slug: str
) -> None:
    problem = assert_problem(client.simulate_request(method, path), status)
    assert problem["type"] == f"urn:orderlog:problem:{slug}"


@pytest.mark.parametrize(
    "query",
    ["after=1_0", "after=%D9%A1", "after=%201", "after=1%20", "after=0x10", "limit=+5"],
)
def test_query_integers_are_ascii_digits_only(
    client: falcon.testing.TestClient, query: str
) -> None:
    name = query.split("=")[0]
    assert_problem(client.simulate_get("/events", query_string=query), 400, name)


def test_a_repeated_query_parameter_is_refused(client: falcon.testing.TestClient) -> None:
    result = client.simulate_get("/events", query_string="after=1&after=2")
    problem = assert_problem(result, 400, "after")
    assert problem["type"] == "urn:orderlog:problem:repeated-parameter"


@pytest.mark.parametrize("charset", ["latin-1", "iso-8859-1", "utf-16", "ascii"])
def test_a_body_in_another_charset_is_unsupported(
    client: falcon.testing.TestClient, settled: int, charset: str
) -> None:
    result = post(client, ORDER, content_type=f"application/json; charset={charset}")
    assert_problem(result, 415)


@pytest.mark.parametrize("charset", ["utf-8", "UTF-8", '"utf-8"', "utf8"])
def test_a_body_declared_utf8_is_read(client: falcon.testing.TestClient, charset: str) -> None:
    result = post(client, ORDER, content_type=f"application/json; charset={charset}")
    assert result.status_code == 201, result.text


def test_a_huge_order_id_is_not_echoed_whole(client: falcon.testing.TestClient) -> None:
    huge = "x" * 200_000
    result = client.simulate_get(f"/orders/{huge}")
    assert_problem(result, 404)
    assert len(result.content) < 2_000


def test_thousands_of_unknown_fields_give_a_short_problem_without_twins(
    client: falcon.testing.TestClient, settled: int
) -> None:
    # Short names and values: 6,000 fields just fit the default body limit.
    body = {**ORDER, **{f"{n:x}": 0 for n in range(6000)}}
    result = post(client, body)
    problem = assert_problem(result, 422)
    listed = [(e["field"], e["message"]) for e in problem["errors"]]
    assert len(listed) == len(set(listed)) == 20
    assert problem["errors_omitted"] == 5980
    assert len(result.content) < 8_000


def test_an_amount_written_as_a_number_is_booked_as_written(
    client: falcon.testing.TestClient,
) -> None:
    raw = b'{"order_id": "n-1", "user_id": 1, "item_ids": ["a"], "total_amount": 1234567890123.45}'
    result = post(client, raw=raw)
    assert result.status_code == 201, result.text
    assert result.json["total_amount"] == "1234567890123.45"


# -- request ids and logs ---------------------------------------------------------------


def test_a_usable_request_id_is_echoed_and_stored_with_the_order(
    client: falcon.testing.TestClient, node: Node
) -> None:
    result = post(client, ORDER, headers={"X-Request-ID": "req-42 from the gateway"})
    assert result.headers["x-request-id"] == "req-42 from the gateway"
    placed = node.store.read_stream("o-1")[0]  # the worker may have moved it on already
    assert placed.type == "OrderPlaced"
    assert placed.metadata["correlation_id"] == "req-42 from the gateway"


@pytest.mark.parametrize("given", [None, "x" * 129, "bad\u0000id", "\u202ehidden", "   "])
def test_an_unusable_or_missing_request_id_is_replaced_by_a_fresh_one(
    client: falcon.testing.TestClient, given: str | None
) -> None:
    headers = {"X-Request-ID": given} if given is not None else {}
    first = client.simulate_get("/healthz", headers=headers).headers["x-request-id"]
    second = client.simulate_get("/healthz", headers=headers).headers["x-request-id"]
    assert first != given and first != second
    assert len(first) == 32 and all(c in "0123456789abcdef" for c in first)


def test_errors_carry_the_request_id_too(client: falcon.testing.TestClient) -> None:
    result = client.simulate_get("/nowhere", headers={"X-Request-ID": "lost-1"})
    assert result.status_code == 404
    assert result.headers["x-request-id"] == "lost-1"


def test_json_logs_give_one_access_line_per_request_and_the_id_on_every_record(
    client: falcon.testing.TestClient,
    node: Node,
    unreachable_database: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from api import logs

    logs.configure("INFO", "json")
    try:
        post(client, ORDER, headers={"X-Request-ID": "outage-7"})
        client.simulate_get("/orders/o-9", headers={"X-Request-ID": "read-8"})
    finally:
        logs.configure("WARNING", "text")
    records = [orjson.loads(line) for line in capsys.readouterr().err.splitlines()]
    access = [r for r in records if r["logger"] == "orderlog.access"]
    assert [(r["method"], r["route"], r["status"], r["request_id"]) for r in access] == [
        ("POST", "/orders", 503, "outage-7"),
        ("GET", "/orders/{order_id}", 503, "read-8"),
    ]
    assert all(r["duration_ms"] >= 0 for r in access)
    # The store's warning about the outage was logged while the POST was handled.
    warnings = [r for r in records if r["level"] == "WARNING" and r["request_id"] == "outage-7"]
    assert warnings and "POST /orders" in warnings[0]["message"]


def test_every_answer_tells_browsers_not_to_sniff_its_type(
    client: falcon.testing.TestClient,
) -> None:
    json = {"Content-Type": "application/json"}
    requests = [
        ("GET", "/healthz", None, 200),
        ("GET", "/openapi.json", None, 200),
        ("GET", "/metrics", None, 200),
        ("GET", "/orders", None, 200),
        ("GET", "/dashboard", None, 200),
        ("OPTIONS", "/orders", None, 204),
        ("GET", "/orders/no-such-order", None, 404),
        ("GET", "/no/such/route", None, 404),
        ("POST", "/orders", b"{", 400),
        ("DELETE", "/orders", None, 405),
    ]
    for method, path, body, status in requests:
        result = client.simulate_request(method, path, body=body, headers=json if body else None)
        assert result.status_code == status, (method, path, result.text)
        assert result.headers.get("x-content-type-options") == "nosniff", (method, path)
