"""The connection and listener classes: waitress's own, with the hooks orderlog needs.

A connection (``Channel``) counts itself against its client's cap, keeps the deadline
its request's headers must meet, tells the loop (``api.server.event_loop``) when a
request thread has served it, and says ``Connection: close`` on every answer during
a drain. A listener (``Listener``) refuses a client over its cap at accept, sheds
connections waiting on their clients as the connection limit nears, checks the
deadlines once a second (waitress's ``cleanup_interval``) in one pass, so that
between checks the loop's turns stay O(events), and hands liveness and readiness
requests to threads of their own.

It imports waitress and the rest of ``api.server``; nothing of the app.
"""

from __future__ import annotations

import heapq
import select
import socket
import time
from typing import Any

from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher

from api.server.event_loop import EventLoop
from api.server.framing import RequestParser, Task
from api.server.guard import Guard, client_of

# Paths served by the probe threads, never queued behind the request threads.
PROBE_PATHS = frozenset({"/healthz", "/readyz"})
PROBE_THREADS = 2
_READS = frozenset({"GET", "HEAD"})


class Channel(HTTPChannel):
    """One client connection, under the guard's limits; see the module docstring."""

    task_class = Task
    parser_class = RequestParser

    def __init__(
        self, server: Listener, sock: socket.socket, addr: Any, adj: Any, map: Any
    ) -> None:
        now = time.monotonic()
        self.client = client_of(addr)  # before super().__init__, which registers the channel
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


class Listener(TcpWSGIServer):
    """One listening socket and its connections; see the module docstring."""

    channel_class = Channel

    def __init__(
        self,
        *args: Any,
        loop: EventLoop,
        guard: Guard,
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
        if pair is not None and not self.guard.admits(client_of(pair[1])):
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
        if self.loop.served_as_registered():
            return  # nothing for the loop to change (see api.server.event_loop)
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
