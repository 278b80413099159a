"""Waitress serving one WSGI app, on orderlog's event loop, with limits on what a client holds.

Waitress does the HTTP: parsing, request threads, keep-alive, flow control. What
this package changes is how its main thread waits on sockets (``api.server.event_loop``:
the listeners and connections are waitress's own classes, with two hooks so the loop
knows what changed, in ``api.server.channel``), what one client may hold
(``api.server.guard``) and which requests reach the app at all (``api.server.framing``).
This module puts them together: ``HttpServer``, and ``bind`` and ``make_server``,
which build it from orderlog's settings.

Stopping answers what clients already sent (``HttpServer.drain``): the listening
sockets close, requests received are served (or, once the drain timeout is up
and they still wait for a thread, answered 503 with Retry-After, nothing done),
every answer says ``Connection: close``, and idle connections are closed once
they had a moment to send a last request. Listening sockets may be handed in
already bound (``bind``), so a server can bind before anything else starts, and
processes forked from one that bound them can share them.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import threading
import time
from typing import Any

from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.task import ThreadedTaskDispatcher

from api.server.channel import PROBE_THREADS, Channel, Listener
from api.server.event_loop import EventLoop, LoopMap
from api.server.guard import ConnectionLimits, DrainGate, Guard
from api.server.limits import raise_file_limit
from orderlog.config import Settings, both_names
from orderlog.domain.errors import StartupError

log = logging.getLogger(__name__)

# While draining: how long a connection idle at the start (or since its last answer) may
# still send a request. A kept-alive client sends its next one at once; waiting this
# long spares it a connection closed under a request already on its way.
IDLE_GRACE = 1.0
DRAIN_GRACE = 2.0  # after the drain timeout: for the 503s and the last answers to go out
SHUTDOWN_WAIT = 0.5  # seconds to wait for request threads to end once the drain is over


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
        self.guard = Guard(limits or ConnectionLimits(), self.adj.connection_limit)
        self.gate = DrainGate(app)
        self.dispatcher = ThreadedTaskDispatcher()
        self.dispatcher.set_thread_count(self.adj.threads)
        self.probes = ThreadedTaskDispatcher()
        self.probes.set_thread_count(PROBE_THREADS)
        self.listeners: list[Listener] = []
        common = {
            "dispatcher": self.dispatcher,
            "adj": self.adj,
            "loop": self.loop,
            "guard": self.guard,
            "probes": self.probes,
        }
        app = self.gate  # what the listeners serve: the app, or 503s late in a drain
        for sock in self.adj.sockets:
            sockinfo = (sock.family, sock.type, sock.proto, sock.getsockname())
            self.listeners.append(
                Listener(app, self.map, True, sock, bind_socket=False, sockinfo=sockinfo, **common)
            )
        if not self.adj.sockets:
            for sockinfo in self.adj.listen:
                self.listeners.append(
                    Listener(app, self.map, True, None, sockinfo=sockinfo, **common)
                )
        for listener in self.listeners:
            self.loop.always_ask(listener)
        self._not_running = threading.Event()
        self._not_running.set()

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [(s.effective_host, s.effective_port) for s in self.listeners]

    def run(self) -> None:
        """Serve until ``stop`` (or SystemExit or KeyboardInterrupt)."""
        self._not_running.clear()
        try:
            with contextlib.suppress(SystemExit, KeyboardInterrupt):
                self.loop.run(self.map, self.adj.asyncore_loop_timeout)
        finally:
            self._not_running.set()

    def stop(self) -> None:
        """Make ``run`` return soon; safe from any thread and from a signal handler."""
        self.loop.stop()

    def drain(self, timeout: float) -> bool:
        """End ``run``, stop accepting and answer what clients sent; see the module doc.

        Requests are served as usual for ``timeout`` seconds; then those still waiting
        for a thread are answered 503. Returns once no connection is left, or False
        if some still had a request in hand ``DRAIN_GRACE`` after the timeout (a slow
        request in the app): ``close`` then cuts them off. ``run`` may be running in
        another thread: it is stopped first, as the loop is this thread's from then on.
        """
        self.stop()
        self._not_running.wait()
        started = time.monotonic()
        refuse_at = started + timeout
        give_up = refuse_at + max(DRAIN_GRACE, IDLE_GRACE)
        self.guard.draining = True
        for listener in self.listeners:
            listener.stop_accepting()
        log.info("draining %d connections", len(self._channels()))
        next_sweep = started
        while True:
            now = time.monotonic()
            if now >= next_sweep:  # a pass over the connections at most every 50 ms
                next_sweep = now + 0.05
                if now >= refuse_at:
                    self.gate.refusing = True
                left = self._close_idle(now, since=started)
                if not left:
                    log.info("drained in %.2f s", now - started)
                    return True
                if now >= give_up:
                    log.warning("%d connections still busy after the drain timeout", left)
                    return False
            self.loop.turn(self.map, 0.05)

    def _channels(self) -> list[Channel]:
        return [c for listener in self.listeners for c in listener.active_channels.values()]

    def _close_idle(self, now: float, since: float) -> int:
        """Close the connections that sent nothing for ``IDLE_GRACE`` since ``since`` or
        their last answer, and those past their header deadline; how many are left."""
        left = 0
        for channel in self._channels():
            if channel.waiting():
                deadline = channel.header_deadline
                if channel.request is None:  # nothing of a next request has come
                    if now - max(channel.waiting_since, since) >= IDLE_GRACE:
                        channel.handle_close()
                        continue
                elif deadline is not None and now >= deadline:
                    channel.handle_close()
                    continue
            left += 1
        return left

    def close(self) -> None:
        # Bounded: a request thread still stuck in the app is a daemon, left behind.
        self.dispatcher.shutdown(timeout=SHUTDOWN_WAIT)
        self.probes.shutdown(timeout=SHUTDOWN_WAIT)
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


def make_server(
    app: Any, settings: Settings, sockets: list[socket.socket] | None = None
) -> HttpServer:
    """Bind (unless ``sockets`` are given, bound by ``bind``) and prepare to serve
    ``app``; nothing is answered until ``run``.

    Raises StartupError, in one line, when the address cannot be used.
    """
    raise_file_limit(settings.connection_limit + settings.backlog + 256)
    # One line per request queued behind busy threads costs ~10% throughput under load.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    bound = bind(settings) if sockets is None else None
    adjustments = waitress_settings(settings)
    del adjustments["host"], adjustments["port"]  # the sockets say where
    try:
        return HttpServer(
            app, sockets=sockets or bound, limits=connection_limits(settings), **adjustments
        )
    except BaseException:
        for sock in bound or ():
            sock.close()
        raise


def bind(settings: Settings) -> list[socket.socket]:
    """Listening sockets on ``--host`` and ``--port``, bound as waitress binds them (one
    per address the host name has; SO_REUSEADDR, never SO_REUSEPORT: a second server
    on the port is refused). They may be handed to ``make_server`` in this process or,
    inherited, in processes forked from it.

    Raises StartupError, in one line, when the address cannot be used.
    """
    address = f"{settings.host}:{settings.port}"
    try:
        listen = Adjustments(**waitress_settings(settings)).listen
    except ValueError:  # waitress could not resolve the host
        raise StartupError(
            f"cannot listen on {address}",
            f"{settings.source('host')} must be an address or a name this machine knows",
        ) from None
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, sockaddr in listen:
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(sockaddr)
            sock.listen(settings.backlog)
            sock.setblocking(False)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        another = f"choose another with {both_names('port')}"  # the variable suits `make run`
        host = settings.source("host")
        hints = {
            errno.EADDRINUSE: f"the port is in use: stop the other server or {another}",
            errno.EADDRNOTAVAIL: f"no interface here has that address: check {host}",
            errno.EACCES: f"ports below 1024 need privileges: {another}",
        }
        hint = hints.get(exc.errno or 0, exc.strerror or str(exc))
        raise StartupError(f"cannot listen on {address}", hint) from None
    return sockets
