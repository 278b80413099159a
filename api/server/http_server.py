"""Waitress serving one WSGI app, on orderlog's event loop, with limits on what a client holds.

Waitress does the HTTP: parsing, request threads, keep-alive, flow control. What
this module changes is how its main thread waits on sockets (see
``api.server.event_loop``: the listeners and connections are waitress's own classes,
with two hooks so the loop knows what changed) and what one client may hold:

- a request's headers must arrive within ``header_timeout`` of its first byte
  (of the connection's opening, for its first request), however steadily they
  trickle in: waitress's own idle timeout restarts with every byte, so a client
  sending one byte every few seconds would hold its connection forever;
- one client address may hold at most ``per_client`` connections; more are
  closed as they are accepted. A trusted reverse proxy's connections are exempt:
  it speaks for many clients, and its clients are bounded per forwarded address
  by ``api.http.forwarded`` instead;
- a request whose body's length another parser or a proxy could read otherwise
  (RFC 9112 §6.1, §6.3: Transfer-Encoding with Content-Length, anything but a lone
  ``chunked``, chunked in HTTP/1.0, Content-Length twice or not in digits, framing
  headers spelt with ``_`` or folded over lines) is answered 400 before the app sees
  it and its connection closed: what follows it on the wire is never read as a
  request (a smuggled one);
- when open connections near ``connection_limit``, those waiting on their client
  (idle between requests, or still sending one) are closed, longest-waiting
  first, so a newcomer finds room. Connections with a request in the app or an
  answer being sent are never shed.

The deadlines are checked once a second (waitress's ``cleanup_interval``), in one
pass over the connections; between checks the loop's turns stay O(events).

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
import heapq
import logging
import select
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser, ParsingError, TransferEncodingNotImplemented
from waitress.server import TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher, WSGITask
from waitress.utilities import BadRequest

from api.http.inputs import ARRIVED
from api.http.problem import PROBLEM_JSON, Problem, bad_request
from api.server.event_loop import EventLoop, LoopMap
from api.server.limits import raise_file_limit
from orderlog.config import Settings, both_names
from orderlog.domain.errors import FieldError, StartupError


class _Task(WSGITask):
    """Waitress's task, keeping HTTP/1.1 connections open after bodiless answers.

    Waitress closes any HTTP/1.1 connection whose answer has no Content-Length,
    including 204 and 304, which carry no body and so need none: that broke
    conditional polling (If-None-Match, 304) on keep-alive connections.
    """

    _bodiless = False

    def get_environment(self) -> dict[str, Any]:
        environ: dict[str, Any] = super().get_environment()
        environ[ARRIVED] = getattr(self.request, "arrived", None)
        return environ

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


class _Refused(BadRequest):
    """A request refused before the app sees it, answered as problem+json; waitress's
    error task sends it and closes the connection."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.problem = bad_request(
            "ambiguous-framing",
            "the request's length could be read more than one way; the connection is closed",
            [FieldError(field, message)],
        )

    def to_response(self, ident: str | None = None) -> tuple[str, list[tuple[str, str]], bytes]:
        headers = [("Content-Type", PROBLEM_JSON), ("X-Content-Type-Options", "nosniff")]
        return f"{self.code} {self.reason}", headers, orjson.dumps(self.problem.to_problem())


TRANSFER_ENCODING = b"transfer-encoding"
CONTENT_LENGTH = b"content-length"
_FRAMING_NAMES = {TRANSFER_ENCODING: "Transfer-Encoding", CONTENT_LENGTH: "Content-Length"}


def _framing_refusal(header_plus: bytes) -> _Refused | None:
    """Why a request's head (its request line and headers, as received) leaves the length
    of its body open to more than one reading, if it does (RFC 9112 §6.1, §6.3, §5.2).

    Waitress reads such requests one way (chunked wins over Content-Length, a folded
    line is joined, a name with ``_`` is dropped, HTTP/1.0 ignores Transfer-Encoding);
    a proxy in front may read them another, and then what one sees as a body the other
    sees as a request of its own.
    """
    lowered = header_plus.lower()
    if _plainly_framed(header_plus, lowered):
        return None
    request_line, _, rest = header_plus.partition(b"\r\n")
    codings: list[bytes] = []
    lengths: list[bytes] = []
    name = b""
    for line in rest.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            folded = _FRAMING_NAMES.get(name.lower(), name.decode("latin-1"))
            return _Refused(folded, "must be sent on one line, not folded onto the next")
        name, _, value = line.partition(b":")
        key = name.lower()
        if key.replace(b"_", b"-") in _FRAMING_NAMES and b"_" in key:
            spelt = _FRAMING_NAMES[key.replace(b"_", b"-")]
            return _Refused(spelt, f"must be spelt {spelt}, with a hyphen")
        if key == TRANSFER_ENCODING:
            codings.append(value.strip(b" \t"))
        elif key == CONTENT_LENGTH:
            lengths.append(value.strip(b" \t"))
    if codings:
        if lengths:
            return _Refused("Transfer-Encoding", "must not come with Content-Length")
        if not request_line.rstrip().endswith(b" HTTP/1.1"):
            return _Refused("Transfer-Encoding", "needs HTTP/1.1")
        if len(codings) > 1 or codings[0].lower() != b"chunked":
            return _Refused("Transfer-Encoding", "must be chunked alone, sent once")
    if len(lengths) > 1:
        return _Refused("Content-Length", "must be sent once")
    if lengths and not lengths[0].isdigit():
        return _Refused("Content-Length", "must be a number in ASCII digits")
    return None


_LENGTH_LINE = b"\r\ncontent-length:"


def _plainly_framed(header_plus: bytes, lowered: bytes) -> bool:
    """The common case, told in a few scans of the bytes: no Transfer-Encoding, no
    folded line, no framing name spelt with ``_``, and at most one Content-Length of
    ASCII digits. Anything else gets the line-by-line reading."""
    if b"transfer" in lowered or b"content_length" in lowered:
        return False
    if b"\r\n " in header_plus or b"\r\n\t" in header_plus:
        return False
    start = lowered.find(_LENGTH_LINE)
    if start < 0:
        return True
    if lowered.find(_LENGTH_LINE, start + 1) >= 0:
        return False
    end = lowered.find(b"\r\n", start + 2)
    return lowered[start + len(_LENGTH_LINE) : end if end >= 0 else None].strip(b" \t").isdigit()


class _Request(HTTPRequestParser):
    """Waitress's request parser, refusing requests framed ambiguously (see
    ``_framing_refusal``), and reading nothing past a request it refuses: the
    connection closes after the answer, and what came after is never a request.
    It notes when the request had fully arrived: the moment its answer's deadline
    counts from, however long it then waits for a thread."""

    arrived: float | None = None

    def parse_header(self, header_plus: bytes) -> None:
        refusal = _framing_refusal(header_plus)
        try:
            super().parse_header(header_plus)
        except (ParsingError, TransferEncodingNotImplemented):
            if refusal is None:
                raise  # waitress's own refusal
        if refusal is not None:
            self.close()  # no body is read: the request ends with its head
            self.body_rcv = None
            self.chunked = False
            self.content_length = 0
            self.error = refusal

    def received(self, data: bytes) -> int:
        consumed: int = super().received(data)
        if self.completed and self.arrived is None:
            self.arrived = time.monotonic()
        # An error ends the connection: the rest of what was read is dropped unparsed.
        return len(data) if self.error is not None else consumed


log = logging.getLogger(__name__)

REPORT_EVERY = 10.0  # seconds between log lines about connections refused, timed out or shed
# While draining: how long a connection idle at the start (or since its last answer) may
# still send a request. A kept-alive client sends its next one at once; waiting this
# long spares it a connection closed under a request already on its way.
IDLE_GRACE = 1.0
DRAIN_GRACE = 2.0  # after the drain timeout: for the 503s and the last answers to go out
# Paths served by the probe threads, never queued behind the request threads.
PROBE_PATHS = frozenset({"/healthz", "/readyz"})
PROBE_THREADS = 2
_READS = frozenset({"GET", "HEAD"})
SHUTDOWN_WAIT = 0.5  # seconds to wait for request threads to end once the drain is over


@dataclass(frozen=True)
class ConnectionLimits:
    """What one client may hold; see the module docstring."""

    header_timeout: float = 10.0
    per_client: int = 1200
    trusted_proxy: str = ""  # its connections are exempt from per_client


class _Guard:
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


class _DrainGate:
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


def _client_of(addr: Any) -> str:
    return str(addr[0]) if isinstance(addr, tuple) and addr else ""


class _Channel(HTTPChannel):
    task_class = _Task
    parser_class = _Request

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
        if self.server.guard.draining:
            # Tell the client this connection ends with this answer (waitress then
            # closes it once the answer is sent), so it sends nothing more on it.
            self.requests[0].headers["CONNECTION"] = "close"
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

    def __init__(
        self,
        *args: Any,
        loop: EventLoop,
        guard: _Guard,
        probes: ThreadedTaskDispatcher,
        **kwargs: Any,
    ) -> None:
        self.loop = loop
        self.guard = guard
        self.probes = probes
        super().__init__(*args, **kwargs)

    def add_task(self, task: Any) -> None:
        # Liveness and readiness have threads of their own: they answer at once even
        # when every request thread waits on a stalled database.
        requests = task.requests
        if requests and requests[0].path in PROBE_PATHS and requests[0].command in _READS:
            self.probes.add_task(task)
        else:
            super().add_task(task)

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

    def stop_accepting(self) -> None:
        """Take in the connections waiting in the backlog (they may have sent a request
        already), then close the listening socket. The trigger stays: request threads
        still pull it."""
        if not self.accepting:
            return
        waiting = select.poll()
        waiting.register(self.socket, select.POLLIN)
        for _ in range(self.adj.backlog):  # bounded: a failing accept leaves it readable
            if len(self._map) >= self.adj.connection_limit or not waiting.poll(0):
                break
            self.handle_accept()
        wasyncore.dispatcher.close(self)


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
        self.gate = _DrainGate(app)
        self.dispatcher = ThreadedTaskDispatcher()
        self.dispatcher.set_thread_count(self.adj.threads)
        self.probes = ThreadedTaskDispatcher()
        self.probes.set_thread_count(PROBE_THREADS)
        self.listeners: list[_Listener] = []
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
                _Listener(app, self.map, True, sock, bind_socket=False, sockinfo=sockinfo, **common)
            )
        if not self.adj.sockets:
            for sockinfo in self.adj.listen:
                self.listeners.append(
                    _Listener(app, self.map, True, None, sockinfo=sockinfo, **common)
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

    def _channels(self) -> list[_Channel]:
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
