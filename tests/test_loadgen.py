"""The load client against real servers: orderlog itself, a tiny waitress app, a raw asyncio one.

The raw server runs on the test's own event loop and answers with exact bytes,
so chunk extensions, trailers, read-to-close bodies and held answers can be
produced on purpose; the waitress app shows the same against a real HTTP stack.
"""

from __future__ import annotations

import asyncio
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

import orjson
import pytest

from bench import loadgen
from tests.support import ServerProcess, start_server

# A WSGI app on real waitress, in its own process. /port answers with the client's
# port, so distinct ports count the sockets a run used.
WAITRESS_APP = """
import waitress

def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/chunked":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (f"part {i};".encode() for i in range(200))  # no length: waitress chunks it
    if path == "/echo":
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    else:
        body = environ["REMOTE_PORT"].encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]

server = waitress.create_server(app, host="127.0.0.1", port=0, threads=4)
print(server.effective_port, flush=True)
server.run()
"""


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    connection: int  # which accepted socket carried it, counting from 1


Answer = Callable[[Seen], Awaitable[bytes]]


class RawServer:
    """HTTP/1.1 on asyncio streams that answers each request with the bytes ``answer`` gives."""

    def __init__(self, answer: Answer) -> None:
        self._answer = answer
        self.connections = 0
        self.open = 0
        self.most_open = 0
        self.seen: list[Seen] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, backlog=2048)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                first, *lines = head[:-4].decode("latin-1").split("\r\n")
                method, path, _ = first.split(" ")
                headers = {}
                for line in lines:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", 0)))
                seen = Seen(method, path, headers, body, number)
                self.seen.append(seen)
                writer.write(await self._answer(seen))
                await writer.drain()
                if headers.get("connection") == "close":
                    return
        finally:
            self.open -= 1
            writer.close()


def ok(body: bytes, *extra: str) -> bytes:
    head = ["HTTP/1.1 200 OK", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def answer_with_path(seen: Seen) -> bytes:
    return ok(seen.path.encode())


@pytest.fixture(scope="module")
def orderlog_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    where = tmp_path_factory.mktemp("loadgen-orderlog")
    server = start_server(f"sqlite:///{where / 'orderlog.db'}", where, "--processing-delay", "0")
    yield server
    server.terminate()


@pytest.fixture(scope="module")
def waitress_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    where = tmp_path_factory.mktemp("loadgen-waitress")
    process = subprocess.Popen(
        [sys.executable, "-c", WAITRESS_APP], stdout=subprocess.PIPE, cwd=where
    )
    assert process.stdout is not None
    port = int(process.stdout.readline())  # printed once the socket listens
    yield port
    process.kill()
    process.wait(timeout=10)


def order(order_id: str) -> bytes:
    return orjson.dumps(
        {"order_id": order_id, "user_id": "u1", "item_ids": ["a"], "total_amount": "9.99"}
    )


@pytest.mark.parametrize("keep_alive", [True, False], ids=["keep-alive", "fresh-sockets"])
def test_each_answer_comes_back_in_request_order_with_status_body_and_latency(
    orderlog_server: ServerProcess, keep_alive: bool
) -> None:
    suffix = "ka" if keep_alive else "fresh"
    s = orderlog_server
    assert s.request("POST", "/orders", orjson.loads(order(f"old-{suffix}")))[0] == 201
    requests = [
        ("POST", "/orders", order(f"new-{suffix}")),
        ("POST", "/orders", order(f"old-{suffix}")),  # an identical retry: 200, not 201
        ("GET", f"/orders/old-{suffix}", None),
        ("GET", "/orders/no-such-order", None),
        ("POST", "/orders", b"{not json"),
        ("GET", "/healthz", None),
    ]
    # Several sockets at once: the answers still line up with their requests.
    responses = loadgen.run(s.host, s.port, requests, connections=3, keep_alive=keep_alive)

    assert [r.status for r in responses] == [201, 200, 200, 404, 400, 200]
    assert all(r.error is None and r.latency > 0 for r in responses)
    assert responses[0].headers["location"] == f"/orders/new-{suffix}"
    assert responses[0].json()["order_id"] == f"new-{suffix}"
    assert responses[1].json()["order_id"] == f"old-{suffix}"
    assert responses[2].json()["total_amount"] == "9.99"
    assert responses[3].headers["content-type"] == "application/problem+json"
    assert responses[3].json()["status"] == 404
    assert responses[5].json() == {"status": "ok"}
    for response in responses:
        assert len(response.body) == int(response.headers["content-length"])


def test_keep_alive_carries_all_requests_over_the_given_sockets_on_waitress(
    waitress_app: int,
) -> None:
    responses = loadgen.run("127.0.0.1", waitress_app, [("GET", "/port", None)] * 200, 4)

    assert {r.status for r in responses} == {200}
    assert len({r.body for r in responses}) == 4


def test_without_keep_alive_every_request_gets_its_own_socket_on_waitress(
    waitress_app: int,
) -> None:
    responses = loadgen.run(
        "127.0.0.1", waitress_app, [("GET", "/port", None)] * 60, 10, keep_alive=False
    )

    assert {r.status for r in responses} == {200}
    assert len({r.body for r in responses}) == 60


def test_waitress_chunked_answers_are_reassembled_and_its_close_honoured(
    waitress_app: int,
) -> None:
    # Waitress ends the connection after every chunked answer, so each one costs a new socket.
    requests = [("GET", "/chunked", None), ("GET", "/port", None)] * 5
    responses = loadgen.run("127.0.0.1", waitress_app, requests, 1)

    expected = b"".join(f"part {i};".encode() for i in range(200))
    for chunked in responses[::2]:
        assert chunked.headers["transfer-encoding"] == "chunked"
        assert chunked.headers["connection"] == "close"
        assert chunked.body == expected
    assert {r.status for r in responses[1::2]} == {200}
    assert len({r.body for r in responses[1::2]}) == 5


def test_request_body_and_extra_headers_reach_the_server() -> None:
    async def scenario() -> None:
        async with RawServer(answer_with_path) as server:
            await loadgen.send_all(
                "127.0.0.1",
                server.port,
                [("PUT", "/a", b'{"x": 1}', {"X-Request-ID": "r-1"}), ("GET", "/b", None)],
                1,
            )
        first, second = server.seen
        assert (first.method, first.path, first.body) == ("PUT", "/a", b'{"x": 1}')
        assert first.headers["x-request-id"] == "r-1"
        assert first.headers["content-type"] == "application/json"
        assert first.headers["host"] == f"127.0.0.1:{server.port}"
        assert (second.method, second.body) == ("GET", b"")
        assert "content-length" not in second.headers

    asyncio.run(scenario())


def test_keep_alive_sends_requests_one_after_another_on_each_socket() -> None:
    async def scenario() -> None:
        async with RawServer(answer_with_path) as server:
            paths = [f"/{n}" for n in range(300)]
            responses = await loadgen.send_all(
                "127.0.0.1", server.port, [("GET", p, None) for p in paths], 5
            )
        assert [r.body.decode() for r in responses] == paths
        assert server.connections == 5
        assert {s.headers["connection"] for s in server.seen} == {"keep-alive"}

    asyncio.run(scenario())


def test_fresh_sockets_are_all_open_at_once_before_any_answer() -> None:
    """The server holds every answer until all sockets are open: a serial client would hang."""
    width = 300
    everyone_here = asyncio.Event()

    async def hold(seen: Seen) -> bytes:
        if server.open >= width:
            everyone_here.set()
        await everyone_here.wait()
        return ok(b"together")

    server = RawServer(hold)

    async def scenario() -> list[loadgen.Response]:
        async with server:
            return await loadgen.send_all(
                "127.0.0.1", server.port, [("POST", "/", b"{}")] * width, width, False, timeout=20
            )

    responses = asyncio.run(scenario())
    assert [r.error for r in responses] == [None] * width
    assert {r.body for r in responses} == {b"together"}
    assert server.most_open == width
    assert {s.headers["connection"] for s in server.seen} == {"close"}


def test_chunk_extensions_and_trailers_are_parsed_and_the_socket_stays_usable() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Kind: a\r\nx-kind: b\r\n\r\n"
        b"5;name=value\r\nhello\r\n"
        b"2\r\n\r\n\r\n"  # a chunk holding CRLF itself
        b"A\r\n0123456789\r\n"
        b"0\r\nX-Trailer: t\r\n\r\n"
    )

    async def answer(seen: Seen) -> bytes:
        return chunked if seen.path == "/chunked" else ok(b"after")

    async def scenario() -> None:
        async with RawServer(answer) as server:
            responses = await loadgen.send_all(
                "127.0.0.1", server.port, [("GET", "/chunked", None), ("GET", "/next", None)], 1
            )
        assert responses[0].body == b"hello\r\n0123456789"
        assert responses[0].headers["x-kind"] == "a, b"
        assert responses[1].body == b"after"
        assert server.connections == 1

    asyncio.run(scenario())


def test_a_body_without_length_is_read_to_close_and_the_next_request_reconnects() -> None:
    async def answer(seen: Seen) -> bytes:
        seen.headers["connection"] = "close"  # the server ends the socket after this answer
        return b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n" + seen.path.encode() * 1000

    async def scenario() -> None:
        async with RawServer(answer) as server:
            responses = await loadgen.send_all(
                "127.0.0.1", server.port, [("GET", f"/{n}", None) for n in range(3)], 1
            )
        assert [r.body for r in responses] == [f"/{n}".encode() * 1000 for n in range(3)]
        assert server.connections == 3

    asyncio.run(scenario())


def test_connection_close_from_the_server_makes_the_client_reconnect() -> None:
    async def answer(seen: Seen) -> bytes:
        seen.headers["connection"] = "close"
        return ok(b"bye", "Connection: close")

    async def scenario() -> None:
        async with RawServer(answer) as server:
            responses = await loadgen.send_all(
                "127.0.0.1", server.port, [("GET", "/", None)] * 4, 1
            )
        assert [r.body for r in responses] == [b"bye"] * 4
        assert server.connections == 4

    asyncio.run(scenario())


def test_head_and_no_content_answers_carry_no_body() -> None:
    async def answer(seen: Seen) -> bytes:
        if seen.method == "HEAD":
            return b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n"
        if seen.path == "/empty":
            return b"HTTP/1.1 204 No Content\r\n\r\n"
        return b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"final")

    async def scenario() -> None:
        async with RawServer(answer) as server:
            responses = await loadgen.send_all(
                "127.0.0.1",
                server.port,
                [("HEAD", "/", None), ("GET", "/empty", None), ("GET", "/", None)],
                1,
            )
        assert [(r.status, r.body) for r in responses] == [(200, b""), (204, b""), (200, b"final")]
        assert responses[0].headers["content-length"] == "50"
        assert server.connections == 1

    asyncio.run(scenario())


def test_an_unreachable_server_is_reported_per_request_not_raised() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]  # bound but not listening: connections are refused
        for keep_alive in (True, False):
            responses = loadgen.run(
                "127.0.0.1", closed_port, [("GET", "/", None)] * 5, 2, keep_alive
            )
            assert [r.status for r in responses] == [0] * 5
            assert all("ConnectionRefusedError" in (r.error or "") for r in responses)


def test_a_stalled_answer_times_out_while_the_others_complete() -> None:
    never = asyncio.Event()

    async def answer(seen: Seen) -> bytes:
        if seen.path == "/stall":
            await never.wait()
        return ok(b"fine")

    async def scenario() -> list[loadgen.Response]:
        async with RawServer(answer) as server:
            requests = [("GET", "/stall", None)] + [("GET", "/", None)] * 20
            responses = await loadgen.send_all("127.0.0.1", server.port, requests, 3, timeout=0.5)
            never.set()
            return responses

    responses = asyncio.run(scenario())
    assert (responses[0].status, responses[0].error) == (0, "timeout")
    assert responses[0].latency >= 0.5
    assert [(r.status, r.body) for r in responses[1:]] == [(200, b"fine")] * 20


def test_sustained_keeps_every_socket_busy_until_the_duration_ends() -> None:
    async def scenario() -> tuple[list[loadgen.Response], RawServer, float]:
        async with RawServer(answer_with_path) as server:
            started = time.monotonic()
            responses = await loadgen.sustained(
                "127.0.0.1", server.port, lambda n: ("GET", f"/{n}", None), 4, duration=0.5
            )
            return responses, server, time.monotonic() - started

    responses, server, took = asyncio.run(scenario())
    assert 0.5 <= took < 2.0
    assert len(responses) > 40
    assert [r.body for r in responses] == [f"/{n}".encode() for n in range(len(responses))]
    assert {r.status for r in responses} == {200}
    assert server.connections == 4


def test_sustained_ends_early_when_stop_is_set_sending_nothing_after() -> None:
    stop = threading.Event()
    sockets = 4

    async def answer(seen: Seen) -> bytes:
        if len(server.seen) == 50:
            stop.set()  # as another thread would: the run's duration is an hour
        return ok(seen.path.encode())

    server = RawServer(answer)

    async def scenario() -> list[loadgen.Response]:
        async with server:
            return await loadgen.sustained(
                "127.0.0.1",
                server.port,
                lambda n: ("GET", f"/{n}", None),
                sockets,
                duration=3600,
                stop=stop,
            )

    responses = asyncio.run(scenario())
    # Only the requests already sent when stop was set are still answered, one per socket.
    assert 50 <= len(responses) < 50 + sockets
    assert len(server.seen) == len(responses)
    assert {r.status for r in responses} == {200}


def test_a_run_wider_than_the_open_file_limit_lifts_the_limit(waitress_app: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1024:
        pytest.skip(f"the hard file limit {hard} leaves no room to show this")
    resource.setrlimit(resource.RLIMIT_NOFILE, (128, hard))
    try:
        responses = loadgen.run(
            "127.0.0.1", waitress_app, [("GET", "/port", None)] * 300, 300, keep_alive=False
        )
        assert [r.error for r in responses] == [None] * 300
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= 300
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
