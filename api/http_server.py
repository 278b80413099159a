"""Waitress serving one WSGI app, on orderlog's event loop, with limits on what a client holds.

Waitress does the HTTP: parsing, request threads, keep-alive, flow control. What
this module changes is how its main thread waits on sockets (see
``api.event_loop``: the listeners and connections are waitress's own classes,
with two hooks so the loop knows what changed) and what one client may hold:

- a request's headers must arrive within ``header_timeout`` of its first byte
  (of the connection's opening, for its first request), however steadily they
  trickle in: waitress's own idle timeout restarts with every byte, so a client
  sending one byte every few seconds would hold its connection forever;
- one client address may hold at most ``per_client`` connections; more are
  closed as they are accepted. A trusted reverse proxy's connections are exempt:
  it speaks for many clients, and its clients are bounded per forwarded address
  by ``api.forwarded`` instead;
- when open connections near ``connection_limit``, those waiting on their client
  (idle between requests, or still sending one) are closed, longest-waiting
  first, so a newcomer finds room. Connections with a request in the app or an
  answer being sent are never shed.

The deadlines are checked once a second (waitress's ``cleanup_interval``), in one
pass over the connections; between checks the loop's turns stay O(events).
Listening sockets may be handed in already bound, so a server can bind before
anything else starts.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import socket
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher

from api.event_loop import EventLoop, LoopMap
from api.limits import raise_file_limit
from orderlog.config import Settings

log = logging.getLogger(__name__)

REPORT_EVERY = 10.0  # seconds between log lines about connections refused, timed out or shed


@dataclass(frozen=True)
class ConnectionLimits:
    """What one client may hold; see the module docstring."""

    header_timeout: float = 10.0
    per_client: int = 1200
    trusted_proxy: str = ""  # its connections are exempt from per_client


class _Guard:
    """The limits' state, shared by a server's listeners and read by its connections.

    Touched by the main thread only: accepting, closing and the once-a-second
    check all run there.
    """

    def __init__(self, limits: ConnectionLimits, connection_limit: int) -> None:
        self.limits = limits
        self.clients: Counter[str] = Counter()
        # Shed from here down to shed_to: room for newcomers before waitress stops accepting.
        headroom = max(1, connection_limit // 10)
        self.shed_at = max(1, connection_limit - headroom)
        self.shed_to = max(0, min(self.shed_at - 1, connection_limit - 2 * headroom))
        self.next_shed = 0.0
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


def _client_of(addr: Any) -> str:
    return str(addr[0]) if isinstance(addr, tuple) and addr else ""


class _Channel(HTTPChannel):
    def __init__(
        self, server: _Listener, sock: socket.socket, addr: Any, adj: Any, map: Any
    ) -> None:
        now = time.monotonic()
        self.client = _client_of(addr)  # before super().__init__, which registers the channel
        self.counted = False
        # Since when this connection has had no request in hand (opened, or last answered).
        self.waiting_since = now
        # When the request being received must have its headers; None while none is.
        self.header_deadline: float | None = now + server.guard.limits.header_timeout
        super().__init__(server, sock, addr, adj, map)

    def add_channel(self, map: Any = None) -> None:
        super().add_channel(map)
        self.server.guard.clients[self.client] += 1
        self.counted = True

    def del_channel(self, map: Any = None) -> None:
        super().del_channel(map)
        if self.counted:
            self.counted = False
            clients = self.server.guard.clients
            clients[self.client] -= 1
            if clients[self.client] <= 0:
                del clients[self.client]

    def received(self, data: bytes) -> bool:
        done = super().received(data)
        request = self.request  # the request still being received, if any
        if request is None or request.headers_finished:
            self.header_deadline = None
        elif self.header_deadline is None:  # a new request's first bytes: its clock starts
            self.header_deadline = time.monotonic() + self.server.guard.limits.header_timeout
        return done

    def service(self) -> None:
        # A request thread serves this connection: when it wakes the loop, the loop
        # must look at this connection again (its answer is ready, or it may read).
        serving = self.server.loop.serving
        serving.channel = self
        try:
            super().service()
        finally:
            serving.channel = None
            self.waiting_since = time.monotonic()

    def waiting(self) -> bool:
        """No request in the app and no answer to send: waiting on the client alone."""
        return not (self.requests or self.total_outbufs_len or self.will_close)


class _Listener(TcpWSGIServer):
    channel_class = _Channel

    def __init__(self, *args: Any, loop: EventLoop, guard: _Guard, **kwargs: Any) -> None:
        self.loop = loop
        self.guard = guard
        super().__init__(*args, **kwargs)

    def accept(self) -> tuple[socket.socket, Any] | None:
        pair = super().accept()
        if pair is not None and not self.guard.admits(_client_of(pair[1])):
            pair[0].close()  # over its cap: the client learns at once, nothing was read
            return None
        return pair

    def readable(self) -> bool:
        # Asked on every turn: the check is a length and a comparison until the limit nears.
        guard = self.guard
        if len(self._map) >= guard.shed_at:
            now = time.monotonic()
            if now >= guard.next_shed:
                guard.next_shed = now + 0.1  # a pass over all connections at most 10 times/s
                self.shed(len(self._map) - guard.shed_to)
        return bool(super().readable())

    def shed(self, count: int) -> None:
        """Close up to ``count`` connections waiting on their clients, longest-waiting first."""
        waiting = [c for c in self.active_channels.values() if c.waiting()]
        for channel in heapq.nsmallest(count, waiting, key=lambda c: c.waiting_since):
            channel.handle_close()
        if waiting:
            self.guard.counts["shed near the connection limit"] += min(count, len(waiting))

    def maintenance(self, now: float) -> None:
        """Once a second: waitress's idle timeout and the header deadline, in one pass."""
        idle_before = now - self.adj.channel_timeout
        clock = time.monotonic()
        for channel in list(self.active_channels.values()):
            if channel.requests:
                continue
            deadline = channel.header_deadline
            if deadline is not None and clock >= deadline and not channel.total_outbufs_len:
                channel.handle_close()
                self.guard.counts["closed at the header deadline"] += 1
            elif channel.last_activity < idle_before:
                channel.will_close = True  # waitress's rule: sent whatever is left, then closed
                self.loop.touch(channel)
        self.guard.report(clock)

    def pull_trigger(self) -> None:
        self.loop.touch_served()
        super().pull_trigger()


class HttpServer:
    """One or more listening sockets, their connections and request threads, one loop."""

    def __init__(
        self,
        app: Any,
        *,
        sockets: list[socket.socket] | None = None,
        limits: ConnectionLimits | None = None,
        **adjustments: Any,
    ) -> None:
        if sockets:
            adjustments["sockets"] = sockets
        self.adj = Adjustments(**adjustments)
        self.loop = EventLoop()
        self.map = LoopMap(self.loop)
        self.guard = _Guard(limits or ConnectionLimits(), self.adj.connection_limit)
        self.dispatcher = ThreadedTaskDispatcher()
        self.dispatcher.set_thread_count(self.adj.threads)
        self.listeners: list[_Listener] = []
        common = {
            "dispatcher": self.dispatcher,
            "adj": self.adj,
            "loop": self.loop,
            "guard": self.guard,
        }
        for sock in self.adj.sockets:
            sockinfo = (sock.family, sock.type, sock.proto, sock.getsockname())
            self.listeners.append(
                _Listener(app, self.map, True, sock, bind_socket=False, sockinfo=sockinfo, **common)
            )
        if not self.adj.sockets:
            for sockinfo in self.adj.listen:
                self.listeners.append(
                    _Listener(app, self.map, True, None, sockinfo=sockinfo, **common)
                )
        for listener in self.listeners:
            self.loop.always_ask(listener)

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [(s.effective_host, s.effective_port) for s in self.listeners]

    def run(self) -> None:
        """Serve until SystemExit or KeyboardInterrupt (a signal handler raises one)."""
        with contextlib.suppress(SystemExit, KeyboardInterrupt):
            self.loop.run(self.map, self.adj.asyncore_loop_timeout)

    def stop(self) -> None:
        """Make ``run`` return soon; safe from any thread."""
        self.loop.stop()
        if self.listeners:
            self.listeners[0].pull_trigger()

    def close(self) -> None:
        self.dispatcher.shutdown()
        wasyncore.close_all(self.map)
        self.loop.close()


def waitress_settings(settings: Settings) -> dict[str, Any]:
    """The waitress adjustments orderlog serves with (the bench's bare app uses them too)."""
    adjustments: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "threads": settings.threads,
        "connection_limit": settings.connection_limit,
        "backlog": settings.backlog,
        "channel_timeout": settings.channel_timeout,
        # How often deadlines are checked: often enough for a 10 s header deadline to
        # mean 10 s, and one pass over the connections a second costs little.
        "cleanup_interval": 1,
        "asyncore_use_poll": True,
        "max_request_body_size": max(settings.max_body_bytes * 4, 1 << 20),
        "ident": "orderlog",
        # Forwarded headers from anyone but the trusted proxy are dropped, never believed.
        "clear_untrusted_proxy_headers": True,
    }
    if settings.trusted_proxy:
        adjustments.update(
            trusted_proxy=settings.trusted_proxy,
            trusted_proxy_count=1,
            trusted_proxy_headers="x-forwarded-for x-forwarded-proto",
        )
    return adjustments


def connection_limits(settings: Settings) -> ConnectionLimits:
    return ConnectionLimits(
        header_timeout=settings.header_timeout,
        per_client=settings.max_connections_per_client,
        trusted_proxy=settings.trusted_proxy,
    )


def make_server(app: Any, settings: Settings) -> HttpServer:
    """Bind and prepare to serve ``app``; nothing is answered until ``run``."""
    raise_file_limit(settings.connection_limit + settings.backlog + 256)
    # One line per request queued behind busy threads costs ~10% throughput under load.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    return HttpServer(app, limits=connection_limits(settings), **waitress_settings(settings))
