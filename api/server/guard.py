"""What one client may hold, and what the app is spared while the server stops.

- a request's headers must arrive within ``header_timeout`` of its first byte
  (of the connection's opening, for its first request), however steadily they
  trickle in: waitress's own idle timeout restarts with every byte, so a client
  sending one byte every few seconds would hold its connection forever;
- one client address may hold at most ``per_client`` connections; more are
  closed as they are accepted. A trusted reverse proxy's connections are exempt:
  it speaks for many clients, and its clients are bounded per forwarded address
  by ``api.http.forwarded`` instead;
- when open connections near ``connection_limit``, those waiting on their client
  (idle between requests, or still sending one) are closed, longest-waiting
  first, so a newcomer finds room. Connections with a request in the app or an
  answer being sent are never shed.

The connections (``api.server.channel``) enforce these with the state kept here; a
drain's late requests are answered 503 by the gate in front of the app. It needs no
waitress, and from ``api.http`` only the problem format.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from api.http.problem import PROBLEM_JSON, Problem

log = logging.getLogger(__name__)

REPORT_EVERY = 10.0  # seconds between log lines about connections refused, timed out or shed


@dataclass(frozen=True)
class ConnectionLimits:
    """What one client may hold; see the module docstring."""

    header_timeout: float = 10.0
    per_client: int = 1200
    trusted_proxy: str = ""  # its connections are exempt from per_client


class Guard:
    """The limits' state, shared by a server's listeners and read by its connections.

    Changed by the main thread only: accepting, closing, the once-a-second check and
    the drain all run there (request threads only read ``draining``).
    """

    def __init__(self, limits: ConnectionLimits, connection_limit: int) -> None:
        self.limits = limits
        self.clients: Counter[str] = Counter()
        # Shed from here down to shed_to: room for newcomers before waitress stops accepting.
        headroom = max(1, connection_limit // 10)
        self.shed_at = max(1, connection_limit - headroom)
        self.shed_to = max(0, min(self.shed_at - 1, connection_limit - 2 * headroom))
        self.next_shed = 0.0
        self.draining = False  # every answer says Connection: close
        self.counts: Counter[str] = Counter()  # refused / timed out / shed since the last report
        self.next_report = time.monotonic() + REPORT_EVERY

    def admits(self, client: str) -> bool:
        limits = self.limits
        if client == limits.trusted_proxy or self.clients[client] < limits.per_client:
            return True
        self.counts["refused over the per-client cap"] += 1
        return False

    def report(self, now: float) -> None:
        if now < self.next_report:
            return
        self.next_report = now + REPORT_EVERY
        if self.counts:
            busiest = ", ".join(f"{c} ({n})" for c, n in self.clients.most_common(3))
            what = ", ".join(f"{n} {why}" for why, n in sorted(self.counts.items()))
            log.warning("connections %s; most connected: %s", what, busiest)
            self.counts.clear()


class DrainGate:
    """The WSGI app, or a 503 once a drain's timeout is up: requests still waiting for a
    thread then are answered at once, and the app never runs for them."""

    _BODY = orjson.dumps(
        Problem(
            503,
            "shutting-down",
            "Service unavailable",
            "the server is shutting down and did not act on this request; send it again",
        ).to_problem()
    )

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.refusing = False

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if self.refusing:
            start_response(
                "503 Service Unavailable",
                [
                    ("Content-Type", PROBLEM_JSON),
                    ("Content-Length", str(len(self._BODY))),
                    ("Retry-After", "1"),
                    ("X-Content-Type-Options", "nosniff"),  # as the app's own answers
                ],
            )
            return [self._BODY]
        return self.app(environ, start_response)


def client_of(addr: Any) -> str:
    """The client's address, as the per-client count knows it ("" when there is none)."""
    return str(addr[0]) if isinstance(addr, tuple) and addr else ""
