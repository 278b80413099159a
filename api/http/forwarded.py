"""A bound on the requests one client, forwarded by the trusted proxy, has in the app at once.

Behind a reverse proxy every connection comes from the proxy, so the per-address
connection cap (``api.server.guard``) cannot tell clients apart at accept time and
exempts the proxy. The client is known once a request's headers are read: waitress
has then replaced ``REMOTE_ADDR`` with the address the trusted proxy forwarded,
and kept ``X-Forwarded-For`` only on requests from that proxy (orderlog always
drops forwarded headers from anyone else). So a request carrying the header came
through the proxy, and this middleware answers 429 to a client that already has
``limit`` requests in the app, keeping the request threads shared among clients.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import falcon

from api.http.problem import Problem


class ForwardedClientLimit:
    """Falcon middleware; one instance is shared by all request threads."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._in_app: Counter[str] = Counter()

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        if "HTTP_X_FORWARDED_FOR" not in req.env:
            return  # not forwarded by the trusted proxy
        client = req.remote_addr
        with self._lock:
            if self._in_app[client] >= self.limit:
                raise Problem(
                    429,
                    "too-many-requests",
                    "Too many requests",
                    f"this client already has {self.limit} requests in progress; "
                    "retry when one is answered",
                    headers={"Retry-After": "1"},
                )
            self._in_app[client] += 1
        req.context.forwarded_client = client

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool
    ) -> None:
        # Called even when process_request refused the request: only a counted one is released.
        client = req.context.get("forwarded_client")
        if client is None:
            return
        with self._lock:
            self._in_app[client] -= 1
            if self._in_app[client] <= 0:
                del self._in_app[client]
