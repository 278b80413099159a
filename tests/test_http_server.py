"""Waitress on orderlog's event loop: every connection is served, however many are open,
no client holds more than its share (header deadlines, a per-address cap, shedding),
and stopping answers what clients already sent.

The server runs in this process on port 0, in a thread, with a tiny WSGI app, so
the tests can see its socket map; clients are real sockets, from other loopback
addresses (Linux routes all of 127/8 to lo) where a test needs several clients.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from api.server.channel import Channel
from api.server.event_loop import EventLoop
from api.server.http_server import ConnectionLimits, HttpServer
from tests.support import DEADLINE, wait_for

HOLD = threading.Event()  # GET /hold waits for it: a request kept in the app
HELD = threading.Event()  # set once GET /hold is in the app


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    if environ["PATH_INFO"] == "/hold":
        HELD.set()
        HOLD.wait(DEADLINE)
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
    HOLD.clear()
    HELD.clear()
    yield server
    HOLD.set()
    server.stop()
    thread.join(10)
    assert not thread.is_alive()
    server.close()


def connect(server: HttpServer, source: str = "127.0.0.1") -> socket.socket:
    return socket.create_connection(server.addresses[0], timeout=30, source_address=(source, 0))


def closed_by_server(sock: socket.socket) -> bool:
    """Wait (within the socket's timeout) for the server to close: EOF or a reset."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def answered(sock: socket.socket, path: str) -> bool:
    """Send GET ``path``; True if its answer came back, False if the server had closed."""
    try:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        return read_answer(sock.makefile("rb")) == path.encode()
    except (ConnectionResetError, BrokenPipeError, AssertionError):
        return False


def read_whole(reader: Any) -> tuple[bytes, dict[str, str], bytes]:
    """One answer: its status line, headers (lower-case names) and body."""
    status = reader.readline().rstrip()
    headers = {}
    while (line := reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, reader.read(int(headers["content-length"]))


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


def test_an_answer_goes_out_head_and_body_in_one_send(
    server: HttpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One system call and one packet per answer, not the head and the body apart."""
    sent: list[bytes] = []
    send = Channel.send

    def counted(self: Channel, data: Any, *args: Any, **kwargs: Any) -> int:
        sent.append(bytes(data))
        return send(self, data, *args, **kwargs)  # type: ignore[no-any-return]

    monkeypatch.setattr(Channel, "send", counted)
    with connect(server) as sock:
        reader = sock.makefile("rb")
        for n in range(3):
            sock.sendall(b"POST /one HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhi-%d!" % n)
            assert read_answer(reader) == b"hi-%d!" % n
    assert len(sent) == 3
    assert all(s.startswith(b"HTTP/1.1 200 OK\r\n") for s in sent)
    assert [s.rsplit(b"\r\n\r\n", 1)[1] for s in sent] == [b"hi-0!", b"hi-1!", b"hi-2!"]


def test_answered_keep_alive_requests_leave_the_loop_and_its_registrations_alone(
    server: HttpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No epoll_ctl and no wake-up of the loop per request: a connection keeps its read
    registration while its request is in the app, and its thread answers it itself."""
    changes: list[tuple[int, int]] = []
    wakes: list[int] = []
    set_registration, touch_served = EventLoop._set, EventLoop.touch_served

    def counted_set(self: EventLoop, fd: int, mask: int) -> None:
        changes.append((fd, mask))
        set_registration(self, fd, mask)

    def counted_touch(self: EventLoop) -> None:  # called just before a wake-up
        wakes.append(1)
        touch_served(self)

    with connect(server) as sock:
        reader = sock.makefile("rb")
        sock.sendall(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_answer(reader) == b"/first"  # registered, answered, settled
        monkeypatch.setattr(EventLoop, "_set", counted_set)
        monkeypatch.setattr(EventLoop, "touch_served", counted_touch)
        for n in range(50):
            sock.sendall(b"GET /k%d HTTP/1.1\r\nHost: x\r\n\r\n" % n)
            assert read_answer(reader) == b"/k%d" % n
    assert changes == []
    assert wakes == []


def test_a_request_sent_while_the_last_is_in_the_app_is_answered_after_it(
    server: HttpServer,
) -> None:
    """The client sends while its request is in the app: the loop then drops the read
    registration it kept, and takes the next request once the first is answered."""
    with connect(server) as sock:
        reader = sock.makefile("rb")
        sock.sendall(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
        assert HELD.wait(DEADLINE)
        sock.sendall(b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
        HOLD.set()
        assert read_answer(reader) == b"/hold"
        assert read_answer(reader) == b"/after"
        sock.sendall(b"GET /then HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_answer(reader) == b"/then"


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


def limited(**limits: Any) -> Any:
    """Parametrize the server fixture with connection limits (and waitress adjustments)."""
    adjustments = limits.pop("adjustments", {})
    return pytest.mark.parametrize(
        "server", [{"limits": ConnectionLimits(**limits), **adjustments}], indirect=True
    )


@limited(header_timeout=1.0, adjustments={"cleanup_interval": 1})
def test_a_silent_new_connection_is_closed_at_the_header_deadline(server: HttpServer) -> None:
    with connect(server) as sock:
        assert closed_by_server(sock)


@limited(header_timeout=1.0, adjustments={"cleanup_interval": 1})
def test_headers_trickling_in_byte_by_byte_are_cut_off_at_the_deadline(
    server: HttpServer,
) -> None:
    # Each byte would restart waitress's idle timeout; the header deadline does not restart.
    with connect(server) as keep_alive, connect(server, "127.0.0.2") as slow:
        assert answered(keep_alive, "/first")
        slow.settimeout(0.1)  # the trickle's pace: one byte per wait for the server's close
        head = b"GET /slow HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 10_000
        cut_off = False
        for byte in (head[n : n + 1] for n in range(len(head))):
            try:
                slow.send(byte)
                cut_off = closed_by_server(slow)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                cut_off = True
            if cut_off:
                break
        assert cut_off
        # Idle between requests is not waiting for headers: the older connection still works.
        assert answered(keep_alive, "/second")


@limited(per_client=5)
def test_connections_over_the_per_client_cap_are_closed_and_other_clients_are_served(
    server: HttpServer,
) -> None:
    crowd = [connect(server, "127.0.0.2") for _ in range(8)]
    try:
        served = [answered(sock, f"/c{n}") for n, sock in enumerate(crowd)]
        assert served.count(True) == 5
        with connect(server, "127.0.0.3") as other:
            assert answered(other, "/other")
    finally:
        for sock in crowd:
            sock.close()


@limited(per_client=2, trusted_proxy="127.0.0.2")
def test_the_trusted_proxy_is_exempt_from_the_per_client_cap(server: HttpServer) -> None:
    proxy = [connect(server, "127.0.0.2") for _ in range(6)]
    crowd = [connect(server, "127.0.0.3") for _ in range(4)]
    try:
        assert all(answered(sock, f"/p{n}") for n, sock in enumerate(proxy))
        assert [answered(sock, f"/c{n}") for n, sock in enumerate(crowd)].count(True) == 2
    finally:
        for sock in proxy + crowd:
            sock.close()


@limited(adjustments={"connection_limit": 50})
def test_near_the_connection_limit_the_longest_idle_are_shed_for_newcomers(
    server: HttpServer,
) -> None:
    # One request held in the app: a connection with work in hand is never shed.
    busy = connect(server, "127.0.0.9")
    busy.sendall(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
    idle: list[socket.socket] = []
    try:
        # Keep-alive clients from many addresses, each answered and then silent: no
        # per-address cap or deadline applies, only the total limit (listener and
        # trigger count too, as waitress counts them).
        for n in range(60):
            sock = connect(server, f"127.0.1.{n % 20 + 1}")
            idle.append(sock)
            assert answered(sock, f"/idle{n}")
        with connect(server, "127.0.0.10") as newcomer:
            assert answered(newcomer, "/newcomer")
        assert len(server.map) < 50
        HOLD.set()
        assert read_answer(busy.makefile("rb")) == b"/hold"
        oldest_first = [closed_by_server(sock) for sock in idle[:5]]
        assert all(oldest_first)
    finally:
        busy.close()
        for sock in idle:
            sock.close()


def drain_in_background(server: HttpServer, timeout: float) -> tuple[threading.Thread, list[bool]]:
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(server.drain(timeout)))
    thread.start()
    return thread, result


@limited(adjustments={"threads": 1})
def test_a_drain_serves_the_request_in_hand_and_answers_the_waiting_503_then_closes(
    server: HttpServer,
) -> None:
    busy = connect(server)
    busy.sendall(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
    assert HELD.wait(DEADLINE)
    waiting = [connect(server) for _ in range(3)]  # queued behind the one busy thread
    for n, sock in enumerate(waiting):
        sock.sendall(f"GET /w{n} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    silent = connect(server)
    try:
        drainer, drained = drain_in_background(server, timeout=0.2)
        wait_for(lambda: server.gate.refusing, what="the drain timeout to pass")
        with pytest.raises(ConnectionRefusedError):
            connect(server)  # no longer accepting

        HOLD.set()  # began before the drain: answered as usual, then idle and closed
        status, headers, body = read_whole(busy.makefile("rb"))
        assert (status, body) == (b"HTTP/1.1 200 OK", b"/hold")
        for sock in waiting:
            status, headers, body = read_whole(sock.makefile("rb"))
            assert status == b"HTTP/1.1 503 Service Unavailable"
            assert headers["content-type"] == "application/problem+json"
            assert headers["retry-after"] == "1" and headers["connection"] == "close"
            assert headers["x-content-type-options"] == "nosniff"
            assert orjson.loads(body)["status"] == 503
            assert closed_by_server(sock)
        assert closed_by_server(busy) and closed_by_server(silent)
        drainer.join(DEADLINE)
        assert drained == [True]
    finally:
        for sock in [busy, *waiting, silent]:
            sock.close()


def test_a_request_sent_just_after_the_drain_begins_is_still_answered(server: HttpServer) -> None:
    with connect(server) as sock:
        assert answered(sock, "/before")  # then idle, as a kept-alive client is a moment
        drainer, drained = drain_in_background(server, timeout=5.0)
        wait_for(lambda: server.guard.draining, what="the drain to begin")
        sock.sendall(b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = read_whole(sock.makefile("rb"))
        assert (status, body, headers["connection"]) == (b"HTTP/1.1 200 OK", b"/after", "close")
        assert closed_by_server(sock)
        drainer.join(DEADLINE)
        assert drained == [True]
