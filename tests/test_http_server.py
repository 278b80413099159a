"""Waitress on orderlog's event loop: every connection is served, however many are open.

The server runs in this process on port 0, in a thread, with a tiny WSGI app, so
the tests can see its socket map; clients are real sockets.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from api.http_server import HttpServer
from tests.support import wait_for


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else environ["PATH_INFO"].encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[HttpServer]:
    options = {"host": "127.0.0.1", "port": 0, "threads": 4, "connection_limit": 2000}
    options.update(getattr(request, "param", {}))
    server = HttpServer(app, **options)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    yield server
    server.stop()
    thread.join(10)
    assert not thread.is_alive()
    server.close()


def connect(server: HttpServer) -> socket.socket:
    return socket.create_connection(server.addresses[0], timeout=30)


def read_answer(reader: Any) -> bytes:
    """One whole answer's body from a connection's reader (``sock.makefile("rb")``)."""
    length = None
    while (line := reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    assert length is not None, "no answer, or one without Content-Length"
    return reader.read(length)


def test_every_one_of_many_open_connections_gets_its_own_answer(server: HttpServer) -> None:
    sockets = [connect(server) for _ in range(300)]
    try:
        for n, sock in enumerate(sockets):  # all are open before any request is sent
            sock.sendall(f"GET /c{n} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        answers = [read_answer(sock.makefile("rb")) for sock in sockets]
        assert answers == [f"/c{n}".encode() for n in range(300)]
    finally:
        for sock in sockets:
            sock.close()


def test_pipelined_requests_on_one_connection_are_answered_in_order(server: HttpServer) -> None:
    with connect(server) as sock:
        sock.sendall(b"".join(f"GET /p{n} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for n in range(20)))
        reader = sock.makefile("rb")
        assert [read_answer(reader) for _ in range(20)] == [f"/p{n}".encode() for n in range(20)]


def test_a_large_answer_is_sent_whole(server: HttpServer) -> None:
    body = b"x" * 3_000_000  # larger than waitress's send buffers: written over many turns
    with connect(server) as sock:
        sock.sendall(
            b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        )
        assert read_answer(sock.makefile("rb")) == body


def test_connections_closed_by_clients_leave_the_loop(server: HttpServer) -> None:
    before = len(server.map)
    sockets = [connect(server) for _ in range(50)]
    wait_for(lambda: len(server.map) == before + 50, what="connections to be accepted")
    for sock in sockets:
        sock.close()
    wait_for(lambda: len(server.map) == before, what="closed connections to leave the map")
    with connect(server) as sock:  # descriptors are reused: the loop must not confuse them
        sock.sendall(b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_answer(sock.makefile("rb")) == b"/after"


@pytest.mark.parametrize("server", [{"channel_timeout": 1, "cleanup_interval": 1}], indirect=True)
def test_an_idle_connection_is_closed_after_the_channel_timeout(server: HttpServer) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_answer(sock.makefile("rb")) == b"/first"
        sock.settimeout(30)
        assert sock.recv(1) == b""  # the server closed it: EOF, not a timeout
