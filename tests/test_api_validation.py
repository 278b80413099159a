"""Bad input through the real app on every backend: refused with the right 4xx as
problem+json, naming the field, and nothing written; any JSON body at all is
answered without a server error."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import falcon.testing
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.node import Node
from tests.support import IDLE, ORDER, assert_problem, order, post, without

# -- bad input: the right 4xx, problem+json, and nothing written -------------------------------

BAD_BODIES: list[tuple[str, bytes, int, str | None]] = [
    # (case id, raw body, status, the field the problem must name)
    ("malformed-json", b'{"user_id": ', 400, None),
    ("trailing-garbage", orjson.dumps(ORDER) + b"x", 400, None),
    ("empty-body", b"", 400, None),
    ("blank-body", b"  \n ", 400, None),
    ("not-utf8", b'{"user_id": "\xff\xfe"}', 400, None),
    ("nan-literal", b'{"user_id": 1, "item_ids": ["a"], "total_amount": NaN}', 400, None),
    (
        "number-1e400",
        b'{"user_id": 1, "item_ids": ["a"], "total_amount": 1e400}',
        422,
        "total_amount",
    ),
    (
        "number-10000-digits",
        b'{"user_id": 1, "item_ids": ["a"], "total_amount": ' + b"9" * 10_000 + b"}",
        422,
        "total_amount",
    ),
    (
        "number-minus-zero",
        b'{"user_id": 1, "item_ids": ["a"], "total_amount": -0}',
        422,
        "total_amount",
    ),
    (
        "number-minus-zero-float",
        b'{"user_id": 1, "item_ids": ["a"], "total_amount": -0.0}',
        422,
        "total_amount",
    ),
    (
        "number-tiny",
        b'{"user_id": 1, "item_ids": ["a"], "total_amount": 1e-400}',
        422,
        "total_amount",
    ),
    (
        "number-too-precise",
        b'{"user_id": 1, "item_ids": ["a"], "total_amount": 1.0000000000000001}',
        422,
        "total_amount",
    ),
    (
        "duplicate-key",
        b'{"user_id": 1, "item_ids": ["a"], "total_amount": "1", "total_amount": "999"}',
        400,
        "total_amount",
    ),
    (
        "duplicate-key-spaced",
        b'{"user_id": 1, "item_ids": ["a"], "total_amount" :"1", "total_amount": "999"}',
        400,
        "total_amount",
    ),
    (
        "duplicate-unknown-key",
        b'{"user_id": 1, "item_ids": ["a"], "total_amount": "1", "x": 1, "x": 2}',
        400,
        "x",
    ),
    ("deep-nesting", b"[" * 5000 + b"]" * 5000, 400, None),
    ("json-array", b"[]", 422, "body"),
    ("json-string", b'"order"', 422, "body"),
    ("json-number", b"1", 422, "body"),
    ("json-null", b"null", 422, "body"),
    (
        "big-integer-user",
        b'{"user_id": 123456789012345678901234567890, "item_ids": ["a"], "total_amount": 1}',
        422,
        "user_id",
    ),
]

BAD_FIELDS: list[tuple[str, dict[str, Any], str]] = [
    ("missing-user_id", without("user_id"), "user_id"),
    ("missing-item_ids", without("item_ids"), "item_ids"),
    ("missing-total_amount", without("total_amount"), "total_amount"),
    ("unknown-field", order(coupon="FREE"), "coupon"),
    ("user_id-true", order(user_id=True), "user_id"),
    ("user_id-float", order(user_id=1.5), "user_id"),
    ("user_id-list", order(user_id=["u"]), "user_id"),
    ("user_id-null", order(user_id=None), "user_id"),
    ("user_id-empty", order(user_id=""), "user_id"),
    ("user_id-negative", order(user_id=-1), "user_id"),
    ("user_id-nul", order(user_id="a\u0000b"), "user_id"),
    ("user_id-escape", order(user_id="\u001b[31m"), "user_id"),
    ("user_id-bidi", order(user_id="\u202eevil"), "user_id"),
    ("user_id-blank", order(user_id="   "), "user_id"),
    ("item-bidi", order(item_ids=["ok", "\u202eevil"]), "item_ids[1]"),
    ("item-control", order(item_ids=["a\nb"]), "item_ids[0]"),
    ("item-blank", order(item_ids=[" "]), "item_ids[0]"),
    ("user_id-hangul-filler", order(user_id="\u3164"), "user_id"),
    ("user_id-braille-blank", order(user_id="\u2800"), "user_id"),
    ("user_id-lone-combining-mark", order(user_id="\u0301"), "user_id"),
    ("user_id-halfwidth-hangul-filler", order(user_id="\uffa0\u115f"), "user_id"),
    ("item-hangul-filler", order(item_ids=["ok", "\u3164"]), "item_ids[1]"),
    ("item-lone-combining-mark", order(item_ids=["\u0301"]), "item_ids[0]"),
    ("amount-leading-space", order(total_amount=" 1.00"), "total_amount"),
    ("amount-trailing-space", order(total_amount="1.00 "), "total_amount"),
    ("amount-plus", order(total_amount="+1.00"), "total_amount"),
    ("amount-minus-zero", order(total_amount="-0.00"), "total_amount"),
    ("amount-underscore", order(total_amount="1_000"), "total_amount"),
    ("amount-arabic-digits", order(total_amount="\u0661\u0662"), "total_amount"),
    ("item_ids-string", order(item_ids="sku-1"), "item_ids"),
    ("item_ids-object", order(item_ids={"a": 1}), "item_ids"),
    ("item_ids-empty", order(item_ids=[]), "item_ids"),
    ("item_ids-1001", order(item_ids=["i"] * 1001), "item_ids"),
    ("item-bool", order(item_ids=[False]), "item_ids[0]"),
    ("item-float", order(item_ids=["a", 2.5]), "item_ids[1]"),
    ("item-null", order(item_ids=[None]), "item_ids[0]"),
    ("item-too-long", order(item_ids=["x" * 65]), "item_ids[0]"),
    ("order_id-number", order(order_id=12), "order_id"),
    ("order_id-null", order(order_id=None), "order_id"),
    ("order_id-empty", order(order_id=""), "order_id"),
    ("order_id-65-chars", order(order_id="o" * 65), "order_id"),
    ("order_id-slash", order(order_id="a/b"), "order_id"),
    ("order_id-space", order(order_id="a b"), "order_id"),
    ("order_id-newline", order(order_id="abc\n"), "order_id"),
    ("amount-bool", order(total_amount=True), "total_amount"),
    ("amount-null", order(total_amount=None), "total_amount"),
    ("amount-list", order(total_amount=[1]), "total_amount"),
    ("amount-abc", order(total_amount="abc"), "total_amount"),
    ("amount-NaN", order(total_amount="NaN"), "total_amount"),
    ("amount-Infinity", order(total_amount="Infinity"), "total_amount"),
    ("amount-1e400", order(total_amount="1e400"), "total_amount"),
    ("amount-minus-one", order(total_amount=-1), "total_amount"),
    ("amount-minus-cent", order(total_amount="-0.01"), "total_amount"),
    ("amount-1.001-number", order(total_amount=1.001), "total_amount"),
    ("amount-1.001-string", order(total_amount="1.001"), "total_amount"),
    ("amount-float-noise", order(total_amount=0.1 + 0.2), "total_amount"),
    ("amount-too-large", order(total_amount="10000000000000.00"), "total_amount"),
    ("amount-too-large-number", order(total_amount=1e15), "total_amount"),
    ("amount-underscores", order(total_amount="1_000"), "total_amount"),
    ("currency-lower-case", order(currency="usd"), "currency"),
    ("currency-four-letters", order(currency="EURO"), "currency"),
    ("currency-number", order(currency=12), "currency"),
    ("currency-empty", order(currency=""), "currency"),
    ("currency-null", order(currency=None), "currency"),
]


def test_an_id_with_a_combining_mark_after_a_letter_is_accepted(
    client: falcon.testing.TestClient,
) -> None:
    decomposed = "jose\u0301"  # e + COMBINING ACUTE ACCENT
    result = post(client, order(user_id=decomposed, item_ids=["cafe\u0301"]))
    assert result.status_code == 201, result.text
    assert (result.json["user_id"], result.json["item_ids"]) == (decomposed, ["cafe\u0301"])


@pytest.mark.parametrize(
    ("raw", "status", "field"), [case[1:] for case in BAD_BODIES], ids=[c[0] for c in BAD_BODIES]
)
def test_unusable_body_is_refused_and_leaves_the_log_untouched(
    client: falcon.testing.TestClient, settled: int, raw: bytes, status: int, field: str | None
) -> None:
    assert_problem(post(client, raw=raw), status, field)


@pytest.mark.parametrize(
    ("body", "field"), [case[1:] for case in BAD_FIELDS], ids=[c[0] for c in BAD_FIELDS]
)
def test_invalid_field_is_refused_naming_it_and_leaves_the_log_untouched(
    client: falcon.testing.TestClient, settled: int, body: dict[str, Any], field: str
) -> None:
    problem = assert_problem(post(client, body), 422, field)
    assert problem["type"] == "urn:orderlog:problem:validation-error"


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
)
def test_wrong_content_type_is_unsupported_and_leaves_the_log_untouched(
    client: falcon.testing.TestClient, settled: int, content_type: str | None
) -> None:
    assert_problem(post(client, ORDER, content_type=content_type), 415)


def test_body_over_the_size_limit_is_too_large_and_leaves_the_log_untouched(
    client: falcon.testing.TestClient, node: Node, settled: int
) -> None:
    limit = node.settings.max_body_bytes
    raw = orjson.dumps(ORDER)
    assert_problem(post(client, raw=raw + b" " * (limit + 1 - len(raw))), 413)


def test_declared_length_over_the_limit_is_refused_before_reading(
    client: falcon.testing.TestClient, node: Node, settled: int
) -> None:
    declared = str(node.settings.max_body_bytes + 1)
    result = post(client, ORDER, headers={"Content-Length": declared})
    assert_problem(result, 413)


def test_body_without_a_content_length_leaves_the_log_untouched(
    client: falcon.testing.TestClient, node: Node, settled: int
) -> None:
    """Chunked: a WSGI app sees no Content-Length. Waitress de-chunks and sets one (and
    refuses bodies past its own cap), so a bare WSGI request without it reads as empty."""
    raw = b" " * (node.settings.max_body_bytes * 2) + orjson.dumps(ORDER)
    result = client.simulate_post(
        "/orders",
        body=raw,
        headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        extras={"CONTENT_LENGTH": ""},
    )
    assert_problem(result, 400)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/nowhere", 404),
        ("GET", "/orders/o-1/events/1", 404),
        ("POST", "/events", 405),
        ("DELETE", "/orders", 405),
        ("PATCH", "/orders", 405),
        ("PUT", "/orders/existing", 405),
        ("DELETE", "/orders/existing", 405),
        ("PATCH", "/metrics", 405),
    ],
)
def test_unknown_route_or_method_is_a_problem_and_leaves_the_log_untouched(
    client: falcon.testing.TestClient, settled: int, method: str, path: str, status: int
) -> None:
    result = client.simulate_request(
        method, path, body=orjson.dumps(ORDER), headers={"Content-Type": "application/json"}
    )
    assert_problem(result, status)
    if status == 405:
        assert result.headers["allow"]


JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=70)
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children),
    max_leaves=8,
)
IDS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}", fullmatch=True) | st.integers(0, 2**63)
ORDER_BODIES = st.fixed_dictionaries(
    {},
    optional={
        "order_id": st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,64}", fullmatch=True)
        | JSON_VALUES,
        "user_id": IDS | JSON_VALUES,
        "item_ids": st.lists(IDS | JSON_LEAVES, max_size=5) | JSON_VALUES,
        "total_amount": st.decimals(-1, 10**14, places=3).map(str)
        | st.floats(-1, 1e14)
        | st.integers(-1, 10**14)
        | JSON_VALUES,
        "note": JSON_VALUES,
    },
)


@given(body=ORDER_BODIES | JSON_VALUES)
@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_any_json_body_is_answered_without_a_server_error(
    client: falcon.testing.TestClient, node: Node, body: Any
) -> None:
    assert node.worker.wait_idle(IDLE)
    head = node.store.head()
    result = post(client, body)
    assert result.status_code in (200, 201, 409, 422), result.text
    if result.status_code >= 400:
        assert_problem(result, result.status_code)
        assert node.worker.wait_idle(IDLE)
        assert node.store.head() == head
    else:
        amount = Decimal(result.json["total_amount"])
        assert amount == amount.quantize(Decimal("0.01")) >= 0
        assert result.json["total_amount"] == str(amount)
        assert client.simulate_get(result.headers["location"]).status_code == 200
