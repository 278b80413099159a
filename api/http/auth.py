"""Bearer tokens with scopes: which scope each route and method needs, in one table.

``Authorization: Bearer <secret>``. A missing or unknown token is 401 with
``WWW-Authenticate: Bearer``; a token without the route's scope is 403; both are
problem+json naming the scope. Health and readiness stay open, as do OPTIONS and
the dashboard's page and files (they hold no data).
Whether a request without a token may reach a scoped route is decided in one
place, ``AnonymousAccess``: only while no token exists, and only on a loopback
address or with ``--allow-anonymous``. The OpenAPI document's ``security``
mirrors ``ROUTE_SCOPES``.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading

import falcon

from api.http.problem import Problem
from orderlog.storage.tokens import TokenStore

log = logging.getLogger(__name__)

# (route template, method) -> the scope it needs; None: open to anyone. HEAD is GET.
ROUTE_SCOPES: dict[tuple[str, str], str | None] = {
    ("/orders", "POST"): "orders:write",
    ("/orders", "GET"): "orders:read",
    ("/orders/{order_id}", "GET"): "orders:read",
    ("/orders/{order_id}/events", "GET"): "orders:read",
    ("/events", "GET"): "events:read",
    ("/metrics", "GET"): "metrics:read",
    ("/metrics/prometheus", "GET"): "metrics:read",
    ("/healthz", "GET"): None,
    ("/readyz", "GET"): None,
    ("/openapi.json", "GET"): None,  # the contract: no data
    # The dashboard's page and files hold no data: its script calls the API with a token.
    ("/", "GET"): None,
    ("/dashboard", "GET"): None,
    ("/dashboard/{asset}", "GET"): None,
}


def required_scope(route: str, method: str) -> str | None:
    if method == "OPTIONS":
        return None
    key = (route, "GET" if method == "HEAD" else method)
    if key not in ROUTE_SCOPES:
        return "admin"  # a route nobody mapped is closed, never open by accident
    return ROUTE_SCOPES[key]


# What a node off loopback that finds no token logs, once each time it comes to find none.
LOCKED = "every request that needs a scope is refused (401) until a token is created"


class AnonymousAccess:
    """The one answer to "may a request without a token reach a scoped route?".

    Yes only while no token exists AND the node is on a loopback address or runs
    with ``--allow-anonymous``. Off loopback without it, no token means nobody gets
    in: ``serve`` refuses to start so (``api.node``), and a node that finds its last
    token revoked while it runs answers every scoped request 401 and logs one
    warning each time it comes to find no token. Tokens are read through the
    store's snapshot, so a token made or revoked is seen within its refresh.
    """

    def __init__(self, tokens: TokenStore, host: str, *, allow_anonymous: bool) -> None:
        self._tokens = tokens
        self._host = host
        # Judged once, at start: a host name is not looked up again per request.
        self._open_without_tokens = allow_anonymous or is_loopback(host)
        self._lock = threading.Lock()
        self._warned = False  # since the node last found a token

    def allowed(self) -> bool:
        """Whether a request without a token may pass now."""
        if self._tokens.any():
            if self._warned:
                self._warned = False  # finding none again is a new transition
            return False
        if self._open_without_tokens:
            return True
        with self._lock:
            warn, self._warned = not self._warned, True
        if warn:
            log.warning(
                "no API token exists and %s is not a loopback address: %s "
                "(orderlog token create --name NAME --scopes admin)",
                self._host,
                LOCKED,
            )
        return False

    @property
    def needs_a_token(self) -> bool:
        """Whether a request without a token is refused even while no token exists: then
        a node without one lets nobody in."""
        return not self._open_without_tokens


class Authentication:
    def __init__(self, tokens: TokenStore, anonymous: AnonymousAccess) -> None:
        self._tokens = tokens
        self._anonymous = anonymous

    def process_resource(
        self, req: falcon.Request, resp: falcon.Response, resource: object, params: dict
    ) -> None:
        scope = required_scope(req.uri_template or "", req.method)
        if scope is None or self._anonymous.allowed():
            return
        header = req.get_header("Authorization") or ""
        kind, _, secret = header.partition(" ")
        if kind.lower() != "bearer" or not secret.strip():
            raise _unauthorized(scope, None, "send Authorization: Bearer <token>")
        token = self._tokens.verify(secret.strip())
        if token is None:
            raise _unauthorized(scope, "invalid_token", "the token is unknown or revoked")
        if not token.allows(scope):
            raise Problem(
                403,
                "insufficient-scope",
                "Forbidden",
                f"the token {token.name!r} lacks the scope {scope}",
                headers={
                    "WWW-Authenticate": f'Bearer realm="orderlog", error="insufficient_scope", '
                    f'scope="{scope}"'
                },
                extra={"scope": scope},
            )
        req.context.token = token.name


def _unauthorized(scope: str, error: str | None, detail: str) -> Problem:
    challenge = f'Bearer realm="orderlog", scope="{scope}"'
    if error:
        challenge = f'Bearer realm="orderlog", error="{error}", scope="{scope}"'
    return Problem(
        401,
        "unauthorized",
        "Unauthorized",
        f"{detail}; this needs the scope {scope}",
        headers={"WWW-Authenticate": challenge},
        extra={"scope": scope},
    )


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` names is a loopback one (unknown names: no)."""
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    addresses = {info[4][0] for info in infos}
    return bool(addresses) and all(
        ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses
    )
