"""A small asyncio HTTP/1.1 load client on raw sockets, for the benchmark and the load tests.

Standard library only, one event loop, no per-request tasks or threads, so it can
drive a server harder than the server can answer. It speaks just enough HTTP/1.1:
Content-Length, chunked and read-to-close bodies, keep-alive and ``Connection:
close``. It imports nothing from orderlog, so it measures the service from outside.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from api.server.limits import raise_file_limit

# (method, path, body) or (method, path, body, extra headers)
Request = tuple[str, str, bytes | None] | tuple[str, str, bytes | None, Mapping[str, str]]

_READ_LIMIT = 1 << 22  # the longest header block or chunk-size line we accept
_NO_BODY_STATUSES = frozenset({204, 304})


@dataclass(slots=True)
class Response:
    """One request's outcome. ``status`` is 0 and ``error`` is set when no answer came."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    latency: float = 0.0
    error: str | None = None

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass(frozen=True, slots=True)
class _Target:
    address: str  # resolved once per run, so no connection waits on a name lookup
    port: int
    host: str  # what the Host header names


async def _target(host: str, port: int, timeout: float) -> _Target:
    """Look the name up once; of several addresses, keep the first that accepts a connection."""
    header = f"[{host}]" if ":" in host else host
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return _Target(host, port, header)  # each request will report the failure itself
    if len(infos) == 1:
        return _Target(infos[0][4][0], port, header)
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setblocking(False)
            try:
                async with asyncio.timeout(timeout):
                    await loop.sock_connect(probe, address)
            except OSError:
                continue
        return _Target(address[0], port, header)
    return _Target(host, port, header)


class _Connection:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def close(self) -> None:
        self.writer.close()


class _Gate:
    """Opens once ``count`` connection attempts have finished, so sockets open together."""

    def __init__(self, count: int) -> None:
        self._left = count
        self._open = asyncio.Event()
        if count <= 0:
            self._open.set()

    def arrive(self) -> None:
        self._left -= 1
        if self._left <= 0:
            self._open.set()

    async def wait(self) -> None:
        await self._open.wait()


async def send_all(
    host: str,
    port: int,
    requests: Sequence[Request],
    connections: int,
    keep_alive: bool = True,
    timeout: float = 60,
) -> list[Response]:
    """Send every request over at most ``connections`` sockets; answers in request order.

    With ``keep_alive`` each socket carries requests one after another; without it
    each request gets a fresh socket, and the first ``connections`` sockets are all
    connected before any request is sent, so the server really sees them at once.
    ``timeout`` bounds each request (connecting included), not the whole run.
    """
    if connections < 1:
        raise ValueError("connections must be at least 1")
    width = min(connections, len(requests))
    raise_file_limit(width + 256)
    target = await _target(host, port, timeout)
    results: list[Response | None] = [None] * len(requests)
    indexes = iter(range(len(requests)))  # shared by all workers: one loop, no lock needed
    if keep_alive:
        workers = [
            _keep_alive_worker(target, requests, indexes, results, timeout) for _ in range(width)
        ]
    else:
        gate = _Gate(width)
        workers = [
            _fresh_socket_worker(target, requests, indexes, results, timeout, gate)
            for _ in range(width)
        ]
    await asyncio.gather(*workers)
    return results  # type: ignore[return-value]  # every slot is filled by now


def run(
    host: str,
    port: int,
    requests: Sequence[Request],
    connections: int,
    keep_alive: bool = True,
    timeout: float = 60,
) -> list[Response]:
    """``send_all`` for callers without an event loop."""
    return asyncio.run(send_all(host, port, requests, connections, keep_alive, timeout))


async def sustained(
    host: str,
    port: int,
    make_request: Callable[[int], Request],
    connections: int,
    duration: float,
    timeout: float = 60,
    stop: threading.Event | None = None,
) -> list[Response]:
    """Keep ``connections`` keep-alive sockets busy for ``duration`` seconds.

    Each socket sends its next request the moment the last answer arrives (a closed
    loop), so the rate measured is the server's. ``make_request(n)`` builds the n-th
    request, n counting from 0 across all sockets; answers come back in that order.
    Requests in flight at the end are awaited (within ``timeout``). Setting ``stop``
    (from any thread) ends the run early, for a caller that decides when it is
    over: a run that outlives server restarts, say.
    """
    if connections < 1:
        raise ValueError("connections must be at least 1")
    raise_file_limit(connections + 256)
    target = await _target(host, port, timeout)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + duration
    counter = itertools.count()
    done: list[tuple[int, Response]] = []

    async def worker() -> None:
        conn: _Connection | None = None
        try:
            while loop.time() < deadline and not (stop and stop.is_set()):
                index = next(counter)
                reconnecting = conn is None
                response, conn = await _exchange(conn, target, make_request(index), True, timeout)
                done.append((index, response))
                if response.error and reconnecting:
                    # Refused outright: pause a moment rather than spin out errors.
                    await asyncio.sleep(0.01)
        finally:
            if conn:
                conn.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    done.sort(key=lambda pair: pair[0])
    return [response for _, response in done]


async def _keep_alive_worker(
    target: _Target,
    requests: Sequence[Request],
    indexes: Iterator[int],
    results: list[Response | None],
    timeout: float,
) -> None:
    conn: _Connection | None = None
    try:
        for index in indexes:
            results[index], conn = await _exchange(conn, target, requests[index], True, timeout)
    finally:
        if conn:
            conn.close()


async def _fresh_socket_worker(
    target: _Target,
    requests: Sequence[Request],
    indexes: Iterator[int],
    results: list[Response | None],
    timeout: float,
    gate: _Gate,
) -> None:
    at_gate = True  # until this worker's first connection attempt is over
    try:
        for index in indexes:
            started = time.perf_counter()
            try:
                async with asyncio.timeout(timeout):
                    conn = await _connect(target)
            except (OSError, EOFError) as exc:
                failed = Response(0, latency=time.perf_counter() - started, error=_describe(exc))
                results[index] = failed
                if at_gate:
                    at_gate = False
                    gate.arrive()
                continue
            connecting = time.perf_counter() - started
            try:
                if at_gate:
                    at_gate = False
                    gate.arrive()
                    await gate.wait()  # not counted in latency: the wait is ours
                response, _ = await _exchange(conn, target, requests[index], False, timeout)
            finally:
                conn.close()
            response.latency += connecting
            results[index] = response
    finally:
        if at_gate:
            gate.arrive()  # a worker left without a request must not hold the others


async def _connect(target: _Target) -> _Connection:
    reader, writer = await asyncio.open_connection(target.address, target.port, limit=_READ_LIMIT)
    return _Connection(reader, writer)


async def _exchange(
    conn: _Connection | None,
    target: _Target,
    request: Request,
    keep_alive: bool,
    timeout: float,
) -> tuple[Response, _Connection | None]:
    """One request and its answer; returns the connection if it may carry another."""
    method = request[0]
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            if conn is None:
                conn = await _connect(target)
            conn.writer.write(_encode(target, request, keep_alive))
            status, headers, body, reusable = await _read_response(conn.reader, method)
    except (OSError, EOFError, ValueError, asyncio.LimitOverrunError) as exc:
        # TimeoutError is an OSError; an IncompleteReadError is an EOFError.
        if conn:
            conn.close()
        return Response(0, latency=time.perf_counter() - started, error=_describe(exc)), None
    response = Response(status, headers, body, time.perf_counter() - started)
    if keep_alive and reusable:
        return response, conn
    conn.close()
    return response, None


def _encode(target: _Target, request: Request, keep_alive: bool) -> bytes:
    method, path, body = request[0], request[1], request[2]
    lines = [
        f"{method} {path} HTTP/1.1",
        f"Host: {target.host}:{target.port}",
        "Connection: keep-alive" if keep_alive else "Connection: close",
    ]
    extra: Mapping[str, str] = request[3] if len(request) > 3 else {}  # type: ignore[misc]
    names = {name.lower() for name in extra}
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
        if "content-type" not in names:
            lines.append("Content-Type: application/json")
    lines.extend(f"{name}: {value}" for name, value in extra.items())
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + body if body else head


async def _read_response(
    reader: asyncio.StreamReader, method: str
) -> tuple[int, dict[str, str], bytes, bool]:
    """(status, headers, body, whether the connection may be reused)."""
    while True:
        version, status, headers = _parse_head(await reader.readuntil(b"\r\n\r\n"))
        if not 100 <= status < 200:
            break  # 1xx answers (100 Continue) come before the real one
    reusable = "close" not in _tokens(headers.get("connection", "")) and (
        version == "HTTP/1.1" or "keep-alive" in _tokens(headers.get("connection", ""))
    )
    if method.upper() == "HEAD" or status in _NO_BODY_STATUSES:
        return status, headers, b"", reusable
    if "chunked" in _tokens(headers.get("transfer-encoding", "")):
        return status, headers, await _read_chunked(reader), reusable
    length = headers.get("content-length")
    if length is not None:
        size = int(length.split(",")[0])
        return status, headers, await reader.readexactly(size) if size else b"", reusable
    # Neither length nor chunks: the body ends when the server closes the socket.
    return status, headers, await reader.read(), False


def _parse_head(head: bytes) -> tuple[str, int, dict[str, str]]:
    lines = head[:-4].decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    if not version.startswith("HTTP/") or len(rest) < 3 or not rest[:3].isdigit():
        raise ValueError(f"malformed status line {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon:
            raise ValueError(f"malformed header line {line[:80]!r}")
        key, value = name.strip().lower(), value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return version, int(rest[:3]), headers


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts = []
    while True:
        line = await reader.readuntil(b"\r\n")
        size = int(line.split(b";", 1)[0].strip(), 16)  # chunk extensions are ignored
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass  # trailer fields are read and dropped
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        if await reader.readexactly(2) != b"\r\n":
            raise ValueError("chunk not followed by CRLF")


def _tokens(value: str) -> set[str]:
    return {token.strip().lower() for token in value.split(",")}


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, asyncio.IncompleteReadError):
        return "connection closed before the answer was complete"
    return f"{type(exc).__name__}: {exc}"
