"""HTTP as a real server speaks it on the wire: raw requests over real sockets.

What a test client inside the app cannot show: a request without Host, a 304 that
must leave a keep-alive connection open for the next conditional poll, HEAD with
no body on the wire.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

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
