"""The OpenAPI document: valid 3.1, the app's routes both ways, as strict as the code,
and schemathesis against a live ``orderlog serve`` on every backend.

The document is built from the code's constants (``api.http.openapi``); these tests check
that what it states is what the code does: its patterns accept exactly what the
validation accepts, its problem types are the ones the code raises, its event
schemas are the event classes, and a live server answers nothing it does not
document.
"""

from __future__ import annotations

import ast
import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import falcon.inspect
import falcon.testing
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from openapi_spec_validator import validate

from api.http import openapi
from api.http.auth import ROUTE_SCOPES
from api.http.problem import FALCON_ERROR_TYPES, PROBLEM_TYPES, problem_type
from api.node import Node
from orderlog.domain.events import EVENT_TYPES
from orderlog.domain.order import (
    MAX_ID_LENGTH,
    PlaceOrder,
    is_currency,
    is_order_id,
    parse_amount,
)
from tests.schemathesis_hooks import PRINTABLE
from tests.support import ROOT, create_token, start_server

DOC = openapi.document()
SCHEMAS = DOC["components"]["schemas"]
METHODS = ("get", "head", "post", "put", "patch", "delete")


def test_the_document_is_valid_openapi_3_1() -> None:
    validate(DOC)
    assert DOC["openapi"].startswith("3.1")


def test_the_server_serves_the_document_for_its_auth_state(node: Node) -> None:
    client = falcon.testing.TestClient(node.app)
    open_answer = client.simulate_get("/openapi.json")
    assert open_answer.status_code == 200
    assert open_answer.headers["content-type"] == "application/json"
    assert open_answer.json == orjson.loads(orjson.dumps(openapi.document(anonymous=True)))

    secret = node.tokens.create("reader", ["orders:read"])
    guarded = client.simulate_get("/openapi.json")
    assert guarded.status_code == 200, "the document needs no token"
    assert guarded.json == orjson.loads(orjson.dumps(DOC))
    assert client.simulate_get("/orders", headers={"Authorization": f"Bearer {secret}"}).json


def test_every_route_is_documented_and_every_documented_path_is_a_route(node: Node) -> None:
    served = {
        (route.path, method.method)
        for route in falcon.inspect.inspect_routes(node.app)
        for method in route.methods
        if not method.internal and method.method != "OPTIONS"
    }
    documented = {
        (path, method.upper())
        for path, item in DOC["paths"].items()
        for method in item
        if method in METHODS
    }
    assert served - documented == set(), "routes the document does not describe"
    assert documented - served == set(), "documented operations the app does not serve"


@pytest.mark.parametrize("anonymous", [False, True], ids=["tokens", "no-tokens"])
def test_security_is_the_route_scope_table(anonymous: bool) -> None:
    doc = openapi.document(anonymous=anonymous)
    for (path, method), scope in ROUTE_SCOPES.items():
        for verb in ("get", "head") if method == "GET" else (method.lower(),):
            operation = doc["paths"][path][verb]
            wanted = [{"bearer": [scope]}, *([{}] if anonymous else [])] if scope else []
            assert operation["security"] == wanted
            assert ("401" in operation["responses"]) == (scope is not None)
            assert ("403" in operation["responses"]) == (scope is not None)


def test_each_status_the_issue_names_is_documented() -> None:
    statuses = {
        code
        for item in DOC["paths"].values()
        for method, operation in item.items()
        if method in METHODS
        for code in operation["responses"]
    }
    wanted = {"304", "400", "401", "403", "404", "405", "409", "413", "415", "422", "503"}
    assert wanted <= statuses


def _named_problem_slugs() -> set[str]:
    """Every slug the HTTP layer passes to a problem, read from its source."""
    slugs: set[str] = set()
    for path in (ROOT / "api").rglob("*.py"):
        for call in ast.walk(ast.parse(path.read_text())):
            if not isinstance(call, ast.Call):
                continue
            name = getattr(call.func, "id", getattr(call.func, "attr", ""))
            where = {"Problem": 1, "_handler": 1, "bad_request": 0}.get(name)
            if where is None or len(call.args) <= where:
                continue
            slug = call.args[where]
            if isinstance(slug, ast.Constant) and isinstance(slug.value, str):
                slugs.add(slug.value)
    return slugs


def test_every_problem_type_the_code_raises_is_documented() -> None:
    named = _named_problem_slugs() | set(FALCON_ERROR_TYPES.values())
    assert len(named) > 15, "the source scan found the problems"
    assert named - set(PROBLEM_TYPES) == set()
    documented = set(SCHEMAS["Problem"]["properties"]["type"]["enum"])
    assert documented == {problem_type(slug) for slug in PROBLEM_TYPES}


def test_every_response_problem_type_has_its_own_status() -> None:
    for item in DOC["paths"].values():
        for method, operation in item.items():
            if method not in METHODS:
                continue
            for code, answer in operation["responses"].items():
                problem = answer.get("content", {}).get("application/problem+json")
                if problem is None:
                    continue
                narrowed = problem["schema"]["allOf"][1]["properties"]
                assert narrowed["status"] == {"const": int(code)}
                for urn in narrowed["type"]["enum"]:
                    assert PROBLEM_TYPES[urn.rsplit(":", 1)[1]][0] == int(code)


def test_event_types_and_their_data_are_the_event_classes() -> None:
    for name in ("Event", "FeedEvent"):
        variants = SCHEMAS[name]["oneOf"]
        assert [v["properties"]["type"]["const"] for v in variants] == list(EVENT_TYPES)
    for name, cls in EVENT_TYPES.items():
        data = SCHEMAS[f"{name}Data"]
        fields = [f.name for f in dataclasses.fields(cls)]
        assert list(data["properties"]) == fields
        assert data["required"] == fields and data["additionalProperties"] is False


def test_the_order_body_names_exactly_the_command_fields() -> None:
    body = SCHEMAS["PlaceOrder"]
    # id_given is not sent: it says whether the body named the order (order_id).
    fields = {f.name for f in dataclasses.fields(PlaceOrder)} - {"id_given"}
    assert set(body["properties"]) == fields
    assert body["additionalProperties"] is False
    assert set(body["required"]) == {"user_id", "item_ids", "total_amount"}


# -- the patterns accept exactly what the code accepts --------------------------------

AMOUNT_PATTERN = re.compile(SCHEMAS["Amount"]["oneOf"][1]["pattern"])
ORDER_ID_PATTERN = re.compile(SCHEMAS["OrderId"]["pattern"])
AMOUNT_SHAPES = st.one_of(
    st.text(alphabet="0123456789.-+eE \n", max_size=20),
    st.decimals(allow_nan=False, allow_infinity=False, places=3).map(str),
    st.integers(0, 10**15).map(str),
    st.sampled_from(["9999999999999.99", "9999999999999.990", "10000000000000", "0.", ".5",
                     ".", "-0", "00", "1.2301", "1.230", "0001.5", "1e2"]),
)  # fmt: skip


@given(AMOUNT_SHAPES)
def test_the_amount_pattern_accepts_exactly_the_amount_strings_the_code_accepts(
    text: str,
) -> None:
    assert bool(AMOUNT_PATTERN.search(text)) == (parse_amount(text, []) is not None)


@given(
    st.one_of(
        st.text(max_size=70),
        st.text(alphabet="aZ09_.:-/ \n", max_size=70),
        st.from_regex(ORDER_ID_PATTERN),
    )
)
def test_the_order_id_pattern_accepts_exactly_the_ids_the_code_accepts(text: str) -> None:
    limits = SCHEMAS["OrderId"]
    documented = (
        limits["minLength"] <= len(text) <= limits["maxLength"]
        and ORDER_ID_PATTERN.search(text) is not None
    )
    assert documented == (bool(text) and is_order_id(text))


CURRENCY_PATTERN = re.compile(SCHEMAS["Currency"]["pattern"])


@given(
    st.one_of(
        st.text(max_size=5),
        st.text(alphabet="AZaz09\u00c9\uff25 \n", max_size=5),
        st.from_regex(CURRENCY_PATTERN),
    )
)
def test_the_currency_pattern_accepts_exactly_the_codes_the_code_accepts(text: str) -> None:
    assert (CURRENCY_PATTERN.search(text) is not None) == is_currency(text)


@given(PRINTABLE)
def test_printable_strings_are_valid_ids(text: str) -> None:
    payload = {"user_id": text[:MAX_ID_LENGTH], "item_ids": [text], "total_amount": "1"}
    PlaceOrder.from_payload(payload)  # raises if the code refuses what the format allows


# -- schemathesis against a live server -------------------------------------------------

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
MAX_EXAMPLES = int(os.environ.get("ORDERLOG_TEST_SCHEMATHESIS_EXAMPLES", "50"))


def _schemathesis(url: str, secret: str, seed: int, cwd: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks",
        "PYTHONPATH": str(ROOT),
    }
    # One worker: schemathesis's threads can trip CPython 3.11's ast.parse, which
    # Hypothesis calls to describe filters ("AST constructor recursion depth mismatch").
    return subprocess.run(
        [str(SCHEMATHESIS), "--config-file", str(ROOT / "tests" / "schemathesis.toml"),
         "run", f"{url}/openapi.json", "--checks", "all", "--max-examples", str(MAX_EXAMPLES),
         "--seed", str(seed), "--workers", "1", "--no-color", "--request-timeout", "30",
         "-H", f"Authorization: Bearer {secret}",
         "--report", "junit", "--report-dir", str(cwd / "schemathesis-report")],
        cwd=cwd, capture_output=True, text=True, timeout=1200, env=env,
    )  # fmt: skip


def test_schemathesis_finds_no_server_error_and_no_answer_off_the_contract(
    database_url: str, tmp_path: Path
) -> None:
    secret = create_token(database_url, "schemathesis", "admin", tmp_path)
    server = start_server(database_url, tmp_path, "--processing-delay", "0.01")
    seed = int.from_bytes(os.urandom(4), "big")
    try:
        run = _schemathesis(f"http://{server.host}:{server.port}", secret, seed, tmp_path)
    finally:
        server.terminate()
    report = run.stdout + run.stderr
    assert run.returncode == 0, f"schemathesis failed (seed {seed}):\n{report[-20000:]}"
    assert "No issues found" in report, report[-5000:]
    tested = _tested_operations(tmp_path / "schemathesis-report")
    # schemathesis leaves out the operation that serves the document it was given.
    assert tested == _operations(DOC) - {"GET /openapi.json"}, report[-5000:]
    assert "Stateful tests" in _tested_names(tmp_path / "schemathesis-report")
    assert "unhandled error" not in server.log()


def _tested_names(reports: Path) -> set[str]:
    (junit,) = reports.glob("junit-*.xml")
    return {case.get("name", "") for case in ElementTree.parse(junit).iter("testcase")}


def _tested_operations(reports: Path) -> set[str]:
    return {
        name for name in _tested_names(reports) if name.split(" ")[0] in ("GET", "HEAD", "POST")
    }


def _operations(doc: dict[str, Any]) -> set[str]:
    return {
        f"{method.upper()} {path}"
        for path, item in doc["paths"].items()
        for method in item
        if method in METHODS
    }
