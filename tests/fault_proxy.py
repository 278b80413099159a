"""A TCP proxy in front of PostgreSQL or MariaDB that injects the faults a network makes.

It forwards bytes both ways and reads the client's side of the protocol just far
enough to see each statement (PostgreSQL's simple-query ``Q`` messages, MySQL's
``COM_QUERY`` packets), so a test can

- ``pause()`` every connection: nothing is forwarded either way, but the sockets
  stay open and the kernel still ACKs, as a stalled network path or a frozen
  database host looks to a client: no timeout on the server's side ever fires;
- ``drop()`` every open connection, and ``refuse`` new ones;
- cut a connection right after it forwards a ``COMMIT`` of a transaction that
  inserted into ``events`` (``cut_after_commit``): the database commits, the
  client never hears so; or, as the control case, cut it instead of forwarding
  that ``COMMIT`` (``cut_before_commit``): the transaction never commits;
- pause everything right after a statement matching a pattern is forwarded
  (``pause_after``), e.g. once a transaction holds the append lock.

Connect to it with ``sslmode=disable`` (PostgreSQL), so the statements are readable.
Every thread it starts ends when ``close()`` is called.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import threading
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

_PG_SPECIAL_STARTUP = {80877103, 80877104, 80877102}  # SSL, GSSENC, cancel requests


class _Statements:
    """Splits the client's byte stream into whole messages, and names the statements."""

    def __init__(self, protocol: str) -> None:
        self.protocol = protocol
        self.buffer = b""
        self.started = protocol != "postgres"  # PostgreSQL's first messages carry no type

    def feed(self, data: bytes) -> list[tuple[bytes, str | None]]:
        """Whole messages received so far, each with its statement text (or None)."""
        self.buffer += data
        out = []
        while True:
            message = self._next()
            if message is None:
                return out
            out.append(message)

    def _next(self) -> tuple[bytes, str | None] | None:
        buf = self.buffer
        if self.protocol == "postgres":
            if not self.started:
                if len(buf) < 8:
                    return None
                (length,) = struct.unpack("!I", buf[:4])
                if len(buf) < length:
                    return None
                (code,) = struct.unpack("!I", buf[4:8])
                if code not in _PG_SPECIAL_STARTUP:
                    self.started = True
                self.buffer = buf[length:]
                return buf[:length], None
            if len(buf) < 5:
                return None
            (length,) = struct.unpack("!I", buf[1:5])
            if len(buf) < 1 + length:
                return None
            message, self.buffer = buf[: 1 + length], buf[1 + length :]
            text = message[5:].rstrip(b"\0").decode(errors="replace") if buf[:1] == b"Q" else None
            return message, text
        if len(buf) < 4:
            return None
        length = int.from_bytes(buf[:3], "little")
        if len(buf) < 4 + length:
            return None
        message, self.buffer = buf[: 4 + length], buf[4 + length :]
        # A command opens a new exchange (sequence number 0); the handshake and any
        # authentication exchange that follows it carry later numbers.
        command = message[3] == 0 and message[4:5] == b"\x03"
        return message, message[5:].decode(errors="replace") if command else None


class FaultProxy:
    def __init__(self, upstream: tuple[str, int], protocol: str) -> None:
        if protocol not in ("postgres", "mysql"):
            raise ValueError(protocol)
        self.upstream = upstream
        self.protocol = protocol
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._connections: set[_Connection] = set()
        self._resumed = threading.Event()
        self._resumed.set()
        self._closing = threading.Event()
        self.refuse = False
        self._cut: str | None = None  # "after" or "before" the next COMMIT that wrote events
        self._cut_containing = ""  # ...whose INSERT INTO events contained this text
        self.cuts = 0  # how many times a COMMIT was cut (either way)
        self._pause_pattern: str | None = None
        self.statements: list[str] = []  # every statement forwarded, for a test's checks
        self._threads = [threading.Thread(target=self._accept, name="fault-proxy", daemon=True)]
        self._threads[0].start()

    # -- the faults ---------------------------------------------------------------------

    def pause(self) -> None:
        self._resumed.clear()

    def resume(self) -> None:
        self._resumed.set()

    @property
    def paused(self) -> bool:
        return not self._resumed.is_set()

    def drop(self) -> None:
        """Close every open connection on both sides at once."""
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            connection.close()

    def cut_after_commit(self, containing: str = "") -> None:
        """Forward the next COMMIT of a transaction that inserted events (with ``containing``
        in its INSERT, e.g. an event type), then cut."""
        self._cut, self._cut_containing = "after", containing

    def cut_before_commit(self, containing: str = "") -> None:
        """Cut instead of forwarding the next COMMIT of a transaction that inserted events."""
        self._cut, self._cut_containing = "before", containing

    def pause_after(self, pattern: str) -> None:
        """Pause everything once a statement containing ``pattern`` has been forwarded."""
        self._pause_pattern = pattern.upper()

    @property
    def armed(self) -> bool:
        return self._cut is not None or self._pause_pattern is not None

    def url(self, url: str) -> str:
        """``url`` with its host and port replaced by this proxy's."""
        parts = urlsplit(url)
        credentials = parts.netloc.rpartition("@")[0]
        netloc = (credentials + "@" if credentials else "") + f"127.0.0.1:{self.port}"
        query = parts.query
        if self.protocol == "postgres" and "sslmode" not in query:
            query = (query + "&" if query else "") + "sslmode=disable"
        return urlunsplit(parts._replace(netloc=netloc, query=query))

    def close(self) -> None:
        self._closing.set()
        self._resumed.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        self.drop()
        for thread in self._threads:
            thread.join(5)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- forwarding ---------------------------------------------------------------------

    def _accept(self) -> None:
        self._listener.settimeout(0.2)
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.refuse:
                client.close()
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            connection = _Connection(self, client, server)
            with self._lock:
                self._connections.add(connection)
            thread = threading.Thread(target=connection.run, name="fault-proxy-conn", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _forget(self, connection: _Connection) -> None:
        with self._lock:
            self._connections.discard(connection)

    def _on_statement(self, connection: _Connection, text: str) -> str:
        """What to do with one statement: 'forward', 'cut' (drop it and close) or 'cut-after'."""
        upper = text.strip().upper()
        with self._lock:
            self.statements.append(text)
            if "INSERT INTO EVENTS" in upper and self._cut_containing in text:
                connection.wrote_events = True
            action = "forward"
            # A COMMIT alone, or sent with the INSERTs before it in one message.
            commits = upper == "COMMIT" or upper.endswith("; COMMIT")
            if commits or upper == "ROLLBACK":
                if commits and connection.wrote_events and self._cut is not None:
                    action = "cut" if self._cut == "before" else "cut-after"
                    self._cut = None
                    self.cuts += 1
                connection.wrote_events = False
            if self._pause_pattern is not None and self._pause_pattern in upper:
                self._pause_pattern = None
                self._resumed.clear()
            return action


class _Connection:
    def __init__(self, proxy: FaultProxy, client: socket.socket, server: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.server = server
        self.wrote_events = False
        self._statements = _Statements(proxy.protocol)
        self._closed = threading.Event()

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        for sock in (self.client, self.server):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
        self.proxy._forget(self)

    def run(self) -> None:
        selector = selectors.DefaultSelector()
        try:
            selector.register(self.client, selectors.EVENT_READ, self._from_client)
            selector.register(self.server, selectors.EVENT_READ, self._from_server)
            while not self._closed.is_set():
                if not self.proxy._resumed.wait(0.2):
                    continue  # paused: read nothing, so nothing moves either way
                for key, _ in selector.select(0.2):
                    if self._closed.is_set() or not self.proxy._resumed.is_set():
                        break
                    handler: Callable[[], bool] = key.data
                    if not handler():
                        self.close()
                        break
        except OSError:
            pass
        finally:
            selector.close()
            self.close()

    def _from_server(self) -> bool:
        data = self.server.recv(65536)
        if not data:
            return False
        self.client.sendall(data)
        return True

    def _from_client(self) -> bool:
        data = self.client.recv(65536)
        if not data:
            return False
        for message, text in self._statements.feed(data):
            action = "forward" if text is None else self.proxy._on_statement(self, text)
            if action == "cut":
                return False
            self.server.sendall(message)
            if action == "cut-after":
                # The COMMIT is on its way to the server, which will read it before the
                # end of the stream (a FIN, not a reset) and commit; the client never hears.
                return False
            if not self.proxy._resumed.is_set():
                return True  # paused right after this statement: forward nothing more
        return True
