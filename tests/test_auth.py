"""Bearer tokens with scopes: every route's scope, the token commands, and when auth is on.

The app is the real one around a real store; tokens are made through the same
TokenStore the ``orderlog token`` command uses, and the command itself is run as
a subprocess where what the user sees is the point.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import falcon
import falcon.inspect
import falcon.testing
import pytest

from api.http.auth import ROUTE_SCOPES, required_scope
from api.node import Node
from orderlog.domain.errors import ValidationError
from orderlog.storage.tokens import SCOPES, digest
from tests.support import ServerProcess, create_token, raw_fetch, settings_for, start_server

ORDER = {"order_id": "a-1", "user_id": 1, "item_ids": ["x"], "total_amount": "2.50"}
# (method, path, body) for each mapped route and method
CALLS = {
    ("/orders", "POST"): ("POST", "/orders", ORDER),
    ("/orders", "GET"): ("GET", "/orders", None),
    ("/orders/{order_id}", "GET"): ("GET", "/orders/a-1", None),
    ("/orders/{order_id}/events", "GET"): ("GET", "/orders/a-1/events", None),
    ("/events", "GET"): ("GET", "/events", None),
    ("/metrics", "GET"): ("GET", "/metrics", None),
    ("/metrics/prometheus", "GET"): ("GET", "/metrics/prometheus", None),
    ("/healthz", "GET"): ("GET", "/healthz", None),
    ("/readyz", "GET"): ("GET", "/readyz", None),
    ("/openapi.json", "GET"): ("GET", "/openapi.json", None),
    ("/", "GET"): ("GET", "/", None),
    ("/dashboard", "GET"): ("GET", "/dashboard", None),
    ("/dashboard/{asset}", "GET"): ("GET", "/dashboard/dashboard.js", None),
}
# What a node off loopback logs when it finds no token (once each time it finds none).
LOCKED = "every request that needs a scope is refused (401) until a token is created"
# A bound far above the documented one (a token change reaches a node within a second),
# for a shared, busy machine.
NOTICED_WITHIN = 15.0


@pytest.fixture
def client(node: Node) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(node.app)


def call(
    client: falcon.testing.TestClient, route: tuple[str, str], secret: str | None
) -> falcon.testing.Result:
    method, path, body = CALLS[route]
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    return client.simulate_request(method, path, json=body, headers=headers)


def test_every_route_of_the_app_has_a_scope_in_the_table(node: Node) -> None:
    served = {
        (route.path, method.method)
        for route in falcon.inspect.inspect_routes(node.app)
        for method in route.methods
        if method.method not in ("OPTIONS", "HEAD") and not method.internal
    }
    assert served == set(ROUTE_SCOPES) == set(CALLS)


@pytest.mark.parametrize("route", sorted(r for r, s in ROUTE_SCOPES.items() if s))
def test_each_route_needs_its_scope(
    client: falcon.testing.TestClient, node: Node, route: tuple[str, str]
) -> None:
    scope = ROUTE_SCOPES[route]
    assert scope is not None
    others = [s for s in SCOPES if s not in (scope, "admin")]
    lacking = node.tokens.create("lacking", others)
    holding = node.tokens.create("holding", [scope])
    admin = node.tokens.create("root", ["admin"])

    missing = call(client, route, None)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert missing.json["scope"] == scope
    unknown = call(client, route, "olt_not-a-token-anyone-made-0000")
    assert unknown.status_code == 401
    assert 'error="invalid_token"' in unknown.headers["www-authenticate"]
    forbidden = call(client, route, lacking)
    assert forbidden.status_code == 403
    assert forbidden.headers["content-type"] == "application/problem+json"
    assert forbidden.json["scope"] == scope and scope in forbidden.json["detail"]
    assert call(client, route, holding).status_code not in (401, 403)
    assert call(client, route, admin).status_code not in (401, 403)


@pytest.mark.parametrize("route", sorted(r for r, s in ROUTE_SCOPES.items() if s is None))
def test_open_routes_stay_open_with_auth_on(
    client: falcon.testing.TestClient, node: Node, route: tuple[str, str]
) -> None:
    # health, readiness, and the dashboard's redirect, page and files
    node.tokens.create("someone", ["orders:read"])
    assert call(client, route, None).status_code in (200, 302)


def test_with_no_token_the_api_is_open(client: falcon.testing.TestClient) -> None:
    assert call(client, ("/orders", "POST"), None).status_code == 201
    assert call(client, ("/metrics", "GET"), None).status_code == 200


def test_a_revoked_token_stops_working(client: falcon.testing.TestClient, node: Node) -> None:
    secret = node.tokens.create("short-lived", ["metrics:read"])
    node.tokens.create("keeper", ["admin"])  # auth stays on after the revoke
    assert call(client, ("/metrics", "GET"), secret).status_code == 200
    assert node.tokens.revoke("short-lived")
    assert call(client, ("/metrics", "GET"), secret).status_code == 401


@pytest.fixture
def node_off_loopback(database_url: str) -> Iterator[Node]:
    """A started node whose settings name an address other than loopback (not bound)."""
    node = Node(settings_for(database_url, host="0.0.0.0")).start(bind=False)
    yield node
    node.stop()


def test_with_no_token_off_loopback_every_scoped_route_is_refused(
    node_off_loopback: Node, caplog: pytest.LogCaptureFixture
) -> None:
    client = falcon.testing.TestClient(node_off_loopback.app)
    with caplog.at_level(logging.WARNING):
        answers = {route: call(client, route, None) for route in sorted(CALLS)}
        call(client, ("/orders", "POST"), None)  # more requests: still one warning
    statuses = {route: answer.status_code for route, answer in answers.items()}
    wanted = {route: 401 for route, scope in ROUTE_SCOPES.items() if scope}
    wanted |= {route: 302 if route[0] == "/" else 200 for route, s in ROUTE_SCOPES.items() if not s}
    assert statuses == wanted
    for route, scope in ROUTE_SCOPES.items():
        if scope:
            assert answers[route].headers["content-type"] == "application/problem+json"
            assert answers[route].json["scope"] == scope
    # The contract served says what the server does: no route may be called without a token.
    assert all({} not in op["security"] for op in _operations(answers))
    assert [r.getMessage() for r in caplog.records].count(_warning(caplog)) == 1


def _operations(answers: dict[tuple[str, str], falcon.testing.Result]) -> list[dict]:
    document = answers[("/openapi.json", "GET")].json
    return [op for item in document["paths"].values() for op in item.values()]


def _warning(caplog: pytest.LogCaptureFixture) -> str:
    found = [r.getMessage() for r in caplog.records if LOCKED in r.getMessage()]
    assert found, f"no warning saying {LOCKED!r}"
    return found[0]


def test_with_no_token_off_loopback_allow_anonymous_opens_the_api(database_url: str) -> None:
    settings = settings_for(database_url, host="0.0.0.0", allow_anonymous=True)
    node = Node(settings).start(bind=False)
    try:
        client = falcon.testing.TestClient(node.app)
        assert call(client, ("/orders", "POST"), None).status_code == 201
        assert call(client, ("/events", "GET"), None).status_code == 200
    finally:
        node.stop()


def test_token_names_that_differ_only_in_case_are_different_tokens(
    client: falcon.testing.TestClient, node: Node
) -> None:
    lower = node.tokens.create("ci", ["metrics:read"])
    upper = node.tokens.create("CI", ["metrics:read"])
    assert node.tokens.revoke("CI")
    assert [token.name for token in node.tokens.list()] == ["ci"]
    assert call(client, ("/metrics", "GET"), lower).status_code == 200
    assert call(client, ("/metrics", "GET"), upper).status_code == 401


@pytest.mark.parametrize("name", ["\u3164", "\u2800", "\u0301", " "])
def test_a_blank_token_name_is_refused(node: Node, name: str) -> None:
    with pytest.raises(ValidationError) as caught:
        node.tokens.create(name, ["metrics:read"])
    assert [error.field for error in caught.value.errors] == ["--name"]
    assert node.tokens.list() == []


def test_a_route_nobody_mapped_is_closed_not_open() -> None:
    assert required_scope("/some/new/route", "GET") == "admin"
    assert required_scope("/orders/{order_id}", "HEAD") == "orders:read"
    assert required_scope("/orders", "OPTIONS") is None


def orderlog(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api", *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def test_token_commands_show_the_secret_once_and_store_only_its_hash(
    database_url: str, tmp_path: Path
) -> None:
    made = orderlog(
        "token", "create", "--name", "ci", "--scopes", "orders:write,orders:read",
        "--database", database_url, cwd=tmp_path,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    assert secret.startswith("olt_") and len(secret) > 30
    stored = raw_fetch(database_url, "SELECT name, secret_sha256, scopes FROM tokens")
    assert stored == [("ci", digest(secret), "orders:read,orders:write")]
    assert secret not in str(raw_fetch(database_url, "SELECT * FROM tokens"))

    listed = orderlog("token", "list", "--database", database_url, cwd=tmp_path)
    assert listed.stdout.splitlines()[1].startswith("ci\torders:read,orders:write\t")
    assert secret not in listed.stdout
    assert (
        orderlog("token", "revoke", "ci", "--database", database_url, cwd=tmp_path).returncode == 0
    )
    assert raw_fetch(database_url, "SELECT COUNT(*) FROM tokens") == [(0,)]
    again = orderlog("token", "revoke", "ci", "--database", database_url, cwd=tmp_path)
    assert again.returncode != 0 and again.stderr.count("\n") == 1


def test_a_token_is_provisioned_from_a_file_once(database_url: str, tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("provisioned-secret-of-enough-length\n")
    args = (
        "token", "create", "--name", "deploy", "--scopes", "admin",
        "--secret-file", str(secret_file), "--if-missing", "--database", database_url,
    )  # fmt: skip
    first = orderlog(*args, cwd=tmp_path)
    second = orderlog(*args, cwd=tmp_path)  # as a container does on every start
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    assert "provisioned-secret" not in first.stdout + second.stdout
    assert raw_fetch(database_url, "SELECT name, secret_sha256 FROM tokens") == [
        ("deploy", digest("provisioned-secret-of-enough-length"))
    ]


def test_serving_off_loopback_with_no_token_is_refused(sqlite_url: str, tmp_path: Path) -> None:
    done = orderlog(
        "serve", "--database", sqlite_url, "--host", "0.0.0.0", "--port", "0", cwd=tmp_path
    )
    assert done.returncode != 0
    assert done.stderr.startswith("orderlog: no API token exists") and done.stderr.count("\n") == 1
    assert "--allow-anonymous" in done.stderr


def test_serving_off_loopback_is_allowed_with_a_token_or_allow_anonymous(
    sqlite_url: str, tmp_path: Path
) -> None:
    open_server = start_server(sqlite_url, tmp_path, "--host", "0.0.0.0", "--allow-anonymous")
    open_server.terminate()
    made = orderlog(
        "token", "create", "--name", "a", "--scopes", "admin", "--database", sqlite_url,
        cwd=tmp_path,
    )  # fmt: skip
    secret = made.stdout.strip()
    guarded = start_server(sqlite_url, tmp_path, "--host", "0.0.0.0")
    try:
        assert guarded.request("GET", "/metrics")[0] == 401
        auth = {"Authorization": f"Bearer {secret}"}
        assert guarded.request("GET", "/metrics", headers=auth)[0] == 200
    finally:
        guarded.terminate()


def refused_until(server: ServerProcess, done: object) -> None:
    """Ask ``GET /events`` without a token until ``done(server)``: every answer is 401."""

    def check(s: ServerProcess) -> object:
        status, headers, body = s.request("GET", "/events")
        assert status == 401, f"GET /events without a token answered {status}: {body!r}"
        assert headers["content-type"] == "application/problem+json"
        return done(s)  # type: ignore[operator]

    server.wait_until(check, timeout=NOTICED_WITHIN)


def test_revoking_the_last_token_off_loopback_closes_the_api_instead_of_opening_it(
    sqlite_url: str, tmp_path: Path
) -> None:
    create_token(sqlite_url, "only", "admin", tmp_path)
    server = start_server(sqlite_url, tmp_path, "--host", "0.0.0.0")
    server.host = "127.0.0.1"  # it listens on every address; reach it by this one
    try:
        assert server.request("GET", "/events")[0] == 401
        revoked = orderlog("token", "revoke", "only", "--database", sqlite_url, cwd=tmp_path)
        assert revoked.returncode == 0 and revoked.stdout == "token 'only' revoked\n"
        refused_until(server, lambda s: LOCKED in s.log())

        status, headers, body = server.request("POST", "/orders", ORDER)
        assert (status, headers["content-type"]) == (401, "application/problem+json"), body
        assert body["scope"] == "orders:write"
        assert server.request("GET", "/orders/a-1")[0] == 401
        assert server.request("GET", "/healthz")[0] == 200
        assert server.request("GET", "/readyz")[0] == 200
        assert server.log().count(LOCKED) == 1, server.log()

        # A new token lets its holder in; revoking it closes the node again, with a
        # second warning: one each time the node finds no token.
        secret = create_token(sqlite_url, "next", "events:read", tmp_path)
        auth = {"Authorization": f"Bearer {secret}"}
        server.wait_until(
            lambda s: s.request("GET", "/events", headers=auth)[0] == 200, timeout=NOTICED_WITHIN
        )
        assert server.request("GET", "/events")[0] == 401
        again = orderlog("token", "revoke", "next", "--database", sqlite_url, cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        refused_until(server, lambda s: s.log().count(LOCKED) == 2)
        assert server.request("GET", "/events", headers=auth)[0] == 401
    finally:
        server.terminate()


def test_creating_a_token_on_an_open_loopback_node_makes_it_require_one(
    sqlite_url: str, tmp_path: Path
) -> None:
    server = start_server(sqlite_url, tmp_path)  # 127.0.0.1, no token: open
    try:
        assert server.request("POST", "/orders", ORDER)[0] == 201
        secret = create_token(sqlite_url, "first", "orders:read", tmp_path)
        server.wait_until(
            lambda s: s.request("GET", "/orders/a-1")[0] == 401, timeout=NOTICED_WITHIN
        )
        assert server.request("POST", "/orders", {**ORDER, "order_id": "a-2"})[0] == 401
        auth = {"Authorization": f"Bearer {secret}"}
        assert server.request("GET", "/orders/a-1", headers=auth)[0] == 200
    finally:
        server.terminate()


def test_revoking_the_last_token_warns_what_every_node_will_do(
    database_url: str, tmp_path: Path
) -> None:
    for name in ("one", "two"):
        create_token(database_url, name, "admin", tmp_path)
    first = orderlog("token", "revoke", "one", "--database", database_url, cwd=tmp_path)
    assert (first.returncode, first.stdout, first.stderr) == (0, "token 'one' revoked\n", "")

    last = orderlog("token", "revoke", "two", "--database", database_url, cwd=tmp_path)
    assert (last.returncode, last.stdout) == (0, "token 'two' revoked\n")
    warning = " ".join(last.stderr.split())
    assert last.stderr.count("\n") == 1 and warning.startswith("orderlog: warning:"), warning
    for fragment in ("last token", "off loopback", "refuse every request", "token create",
                     "--allow-anonymous", "open to anyone"):  # fmt: skip
        assert fragment in warning, (fragment, warning)
