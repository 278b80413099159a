"""Waitress serving one WSGI app, on orderlog's event loop where the platform has epoll.

Waitress does the HTTP: parsing, request threads, keep-alive, flow control. What
this module changes is only how its main thread waits on sockets (see
``api.event_loop``): the listeners and connections are waitress's own classes,
with two hooks so the loop knows what changed. Listening sockets may be handed
in already bound, so a server can bind before anything else starts.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
from typing import Any

from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher, WSGITask

from api.event_loop import EventLoop, LoopMap
from api.limits import raise_file_limit
from orderlog.config import Settings
from orderlog.errors import StartupError


class _Task(WSGITask):
    """Waitress's task, keeping HTTP/1.1 connections open after bodiless answers.

    Waitress closes any HTTP/1.1 connection whose answer has no Content-Length,
    including 204 and 304, which carry no body and so need none: that broke
    conditional polling (If-None-Match, 304) on keep-alive connections.
    """

    _bodiless = False

    def build_response_header(self) -> bytes:
        self._bodiless = (
            self.version == "1.1"
            and not self.has_body
            and self.request.headers.get("CONNECTION", "").lower() != "close"
        )
        try:
            return super().build_response_header()  # type: ignore[no-any-return]
        finally:
            self._bodiless = False

    def set_close_on_finish(self) -> None:
        if not self._bodiless:  # nothing to delimit: no reason to close
            super().set_close_on_finish()


class _Channel(HTTPChannel):
    task_class = _Task

    def service(self) -> None:
        # A request thread serves this connection: when it wakes the loop, the loop
        # must look at this connection again (its answer is ready, or it may read).
        serving = self.server.loop.serving
        serving.channel = self
        try:
            super().service()
        finally:
            serving.channel = None


class _Listener(TcpWSGIServer):
    channel_class = _Channel

    def __init__(self, *args: Any, loop: EventLoop, **kwargs: Any) -> None:
        self.loop = loop
        super().__init__(*args, **kwargs)

    def pull_trigger(self) -> None:
        self.loop.touch_served()
        super().pull_trigger()

    def maintenance(self, now: float) -> None:
        super().maintenance(now)
        for channel in list(self.active_channels.values()):
            self.loop.touch(channel)  # idle ones were just told to close


class HttpServer:
    """One or more listening sockets, their connections and request threads, one loop."""

    def __init__(
        self, app: Any, *, sockets: list[socket.socket] | None = None, **adjustments: Any
    ) -> None:
        if sockets:
            adjustments["sockets"] = sockets
        self.adj = Adjustments(**adjustments)
        self.loop = EventLoop()
        self.map = LoopMap(self.loop)
        self.dispatcher = ThreadedTaskDispatcher()
        self.dispatcher.set_thread_count(self.adj.threads)
        self.listeners: list[_Listener] = []
        common = {"dispatcher": self.dispatcher, "adj": self.adj, "loop": self.loop}
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
    return {
        "host": settings.host,
        "port": settings.port,
        "threads": settings.threads,
        "connection_limit": settings.connection_limit,
        "backlog": settings.backlog,
        "channel_timeout": settings.channel_timeout,
        "asyncore_use_poll": True,
        "max_request_body_size": max(settings.max_body_bytes * 4, 1 << 20),
        "ident": "orderlog",
        "clear_untrusted_proxy_headers": True,
    }


def make_server(app: Any, settings: Settings) -> HttpServer:
    """Bind and prepare to serve ``app``; nothing is answered until ``run``.

    Raises StartupError, in one line, when the address cannot be used.
    """
    raise_file_limit(settings.connection_limit + settings.backlog + 256)
    # One line per request queued behind busy threads costs ~10% throughput under load.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    address = f"{settings.host}:{settings.port}"
    try:
        return HttpServer(app, **waitress_settings(settings))
    except ValueError:  # waitress could not resolve the host
        raise StartupError(
            f"cannot listen on {address}", "--host must be an address or a name this machine knows"
        ) from None
    except OSError as exc:
        hints = {
            errno.EADDRINUSE: "the port is in use: stop the other server or choose another --port",
            errno.EADDRNOTAVAIL: "no interface here has that address: check --host",
            errno.EACCES: "ports below 1024 need privileges: choose another --port",
        }
        hint = hints.get(exc.errno or 0, exc.strerror or str(exc))
        raise StartupError(f"cannot listen on {address}", hint) from None
