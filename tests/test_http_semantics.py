"""HTTP as a real server speaks it on the wire: raw requests over real sockets.

What a test client inside the app cannot show: a request without Host, a 304 that
must leave a keep-alive connection open for the next conditional poll, HEAD with
no body on the wire.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.support import ServerProcess, start_server


@pytest.fixture
def server(sqlite_url: str, tmp_path: Path) -> Iterator[ServerProcess]:
    server = start_server(sqlite_url, tmp_path, "--processing-delay", "0")
    yield server
    server.terminate()


def exchange(sock: socket.socket, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send one request, read one whole answer (status, headers, body) off the socket."""
    sock.sendall(request)
    reader = sock.makefile("rb")
    status = int(reader.readline().split()[1])
    headers: dict[str, str] = {}
    while (line := reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    body = reader.read(length) if length and b"HEAD" not in request[:5] else b""
    return status, headers, body


def test_an_http11_request_without_host_is_refused(server: ServerProcess) -> None:
    with socket.create_connection((server.host, server.port), timeout=30) as sock:
        status, headers, body = exchange(sock, b"GET /healthz HTTP/1.1\r\n\r\n")
    assert status == 400
    assert headers["content-type"] == "application/problem+json"
    assert b"missing-host" in body
    assert headers["x-content-type-options"] == "nosniff"


def test_an_http10_request_without_host_is_answered(server: ServerProcess) -> None:
    with socket.create_connection((server.host, server.port), timeout=30) as sock:
        status, _, _ = exchange(sock, b"GET /healthz HTTP/1.0\r\n\r\n")
    assert status == 200


def test_a_304_keeps_the_connection_open_for_the_next_poll(server: ServerProcess) -> None:
    order = {"order_id": "poll-1", "user_id": 1, "item_ids": ["a"], "total_amount": "1"}
    assert server.request("POST", "/orders", order)[0] == 201
    server.wait_until(lambda s: s.request("GET", "/orders/poll-1")[2]["status"] == "Completed")
    etag = server.request("GET", "/orders/poll-1")[1]["etag"]
    poll = (f"GET /orders/poll-1 HTTP/1.1\r\nHost: x\r\nIf-None-Match: {etag}\r\n\r\n").encode()
    with socket.create_connection((server.host, server.port), timeout=30) as sock:
        for _ in range(3):  # the same connection answers poll after poll
            status, headers, body = exchange(sock, poll)
            assert status == 304
            assert body == b""
            assert headers.get("connection", "").lower() != "close"
        status, _, _ = exchange(sock, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 200


def test_head_sends_headers_and_no_body(server: ServerProcess) -> None:
    with socket.create_connection((server.host, server.port), timeout=30) as sock:
        status, headers, _ = exchange(sock, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 200 and int(headers["content-length"]) > 0
        # Nothing but the next answer follows: no body was written after the headers.
        status, _, body = exchange(sock, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 200 and body == b'{"status":"ok"}'


def order_json(order_id: str) -> bytes:
    body = {"order_id": order_id, "user_id": 1, "item_ids": ["a"], "total_amount": "1"}
    return orjson.dumps(body)


def chunked(body: bytes) -> bytes:
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)


def post(head: bytes, body: bytes, version: bytes = b"1.1") -> bytes:
    """POST /orders with ``head``'s framing headers (lines ending in CRLF) and ``body``."""
    return b"POST /orders HTTP/%s\r\nHost: x\r\nContent-Type: application/json\r\n%s\r\n%s" % (
        version,
        head,
        body,
    )


def smuggling(order_id: str) -> bytes:
    """A POST whose chunked body ends early, then a second whole POST that only a reader
    of Transfer-Encoding sees as a request of its own; Content-Length covers both."""
    inner = post(b"Content-Length: %d\r\n" % len(order_json(f"{order_id}-inner")), b"")
    inner += order_json(f"{order_id}-inner")
    outer = chunked(order_json(order_id)) + inner
    return post(b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n" % len(outer), outer)


def framed(order_id: str, head: bytes, *, as_chunks: bool = True, version: bytes = b"1.1") -> bytes:
    body = order_json(order_id)
    return post(head % {b"length": len(body)}, chunked(body) if as_chunks else body, version)


# Requests whose body's length another parser or a proxy could read otherwise: each would
# place the order its name says if it were read one way.
AMBIGUOUS = {
    "content-length-and-chunked": smuggling,
    "chunked-then-identity": lambda o: framed(o, b"Transfer-Encoding: chunked, identity\r\n"),
    "gzip-then-chunked": lambda o: framed(o, b"Transfer-Encoding: gzip, chunked\r\n"),
    "chunked-twice": lambda o: framed(
        o, b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"
    ),
    "chunked-in-http-1.0": lambda o: framed(
        o,
        b"Transfer-Encoding: chunked\r\nContent-Length: %(length)d\r\n",
        as_chunks=False,
        version=b"1.0",
    ),
    "chunked-folded": lambda o: framed(o, b"Transfer-Encoding:\r\n chunked\r\n"),
    "chunked-underscored": lambda o: framed(
        o,
        b"Transfer_Encoding: chunked\r\nContent-Length: %(length)d\r\n",
        as_chunks=False,
    ),
    "content-length-twice-differing": lambda o: framed(
        o, b"Content-Length: %(length)d\r\nContent-Length: 1%(length)d\r\n", as_chunks=False
    ),
    # A line starting with a space continues the header above it (obs-fold): waitress
    # reads it as part of X-Note and frames by Content-Length; a proxy may see chunked.
    "chunked-hidden-in-a-fold": lambda o: framed(
        o,
        b"X-Note: a\r\n Transfer-Encoding: chunked\r\nContent-Length: %(length)d\r\n",
        as_chunks=False,
    ),
}
# The header each refusal names: the framing header, or the one folded onto the next line.
NAMED = {"chunked-hidden-in-a-fold": "X-Note"}


@pytest.mark.parametrize("case", list(AMBIGUOUS))
def test_a_request_framed_two_ways_is_refused_and_its_connection_closed(
    server: ServerProcess, case: str
) -> None:
    order_id = f"framing-{case}"
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        status, headers, body = exchange(sock, AMBIGUOUS[case](order_id))
        assert status == 400, body
        assert headers["content-type"] == "application/problem+json"
        assert headers["connection"].lower() == "close"
        assert headers["x-content-type-options"] == "nosniff"
        problem = orjson.loads(body)
        assert problem["type"] == "urn:orderlog:problem:ambiguous-framing"
        assert problem["errors"][0]["field"] in (
            NAMED.get(case, "Transfer-Encoding"),
            NAMED.get(case, "Content-Length"),
        )
        assert sock.recv(1) == b"", "the connection stayed open after the refusal"
    for placed in (order_id, f"{order_id}-inner"):
        status, _, _ = server.request("GET", f"/orders/{placed}")
        assert status == 404, f"{placed} was placed"


def test_a_chunked_request_is_served_and_its_connection_kept(server: ServerProcess) -> None:
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        status, headers, _ = exchange(
            sock, framed("framing-chunked", b"Transfer-Encoding: chunked\r\n")
        )
        assert status == 201
        assert headers.get("connection", "").lower() != "close"
        status, _, _ = exchange(sock, b"GET /orders/framing-chunked HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 200
