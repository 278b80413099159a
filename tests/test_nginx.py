"""deploy/nginx.conf, the file docker-compose.yml uses, in front of a real ``orderlog serve``.

Debian's nginx runs that file with only what must differ here changed: the listen
address, the DNS server (a test's, tests/dns_server.py, instead of Docker's), the
nodes' port, the /tmp/nginx paths (pid and temporary files, under the test's
directory), and one worker process: each worker keeps its own cache of DNS answers,
and with one the tests see a cached answer replaced, not a second worker asking
afresh. nginx finds the nodes by the name the compose file gives them all, asking
the DNS server as requests come; the tests' nodes listen on loopback addresses that
server names. The node trusts the proxy as the compose file configures it. Skipped,
saying why, where nginx is not installed; with ORDERLOG_TEST_REQUIRE_NGINX=1 (CI)
that fails instead.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import os
import re
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.dns_server import DnsServer
from tests.support import DEADLINE, ROOT, ServerProcess, start_server, wait_for

pytestmark = pytest.mark.slow

CONFIG = ROOT / "deploy" / "nginx.conf"
PROXY = "127.0.0.1"  # where nginx connects to the node from
NODES = "orderlog-nodes"  # the name every node answers to (a network alias in compose)


def nginx_binary() -> str | None:
    found = shutil.which("nginx")
    if found is None and os.access("/usr/sbin/nginx", os.X_OK):
        found = "/usr/sbin/nginx"
    return found


def configured_limit() -> int:
    """The concurrent requests per client the shipped file allows."""
    match = re.search(r"^\s*limit_conn client_requests (\d+);", CONFIG.read_text(), re.M)
    assert match, "deploy/nginx.conf no longer sets limit_conn client_requests"
    return int(match.group(1))


def templated(directory: Path, port: int, dns: int, upstream: int) -> Path:
    """The shipped file with the address, the DNS server, the nodes' port and the
    paths made local, in one worker."""
    text = CONFIG.read_text()
    for pattern, replacement in [
        (r"^worker_processes auto;$", "worker_processes 1;"),
        (r"^(\s*)listen 8080;$", rf"\g<1>listen 127.0.0.1:{port};"),
        (r"^(\s*)resolver 127\.0\.0\.11 ", rf"\g<1>resolver 127.0.0.1:{dns} "),
        (rf"^(\s*set \$orderlog_nodes {NODES}):8000;$", rf"\g<1>:{upstream};"),
        (r"/tmp/nginx", f"{directory}/nginx"),
    ]:
        text, count = re.subn(pattern, replacement, text, flags=re.M)
        assert count, f"deploy/nginx.conf has nothing matching {pattern!r} any more"
    path = directory / "nginx.conf"
    path.write_text(text)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Proxy:
    port: int
    node: ServerProcess
    process: subprocess.Popen[bytes]
    log_path: Path

    def request(
        self, method: str, path: str, body: Any = None, raw: bytes | None = None
    ) -> tuple[int, dict[str, str], Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=DEADLINE)
        try:
            payload = raw if raw is not None else orjson.dumps(body) if body is not None else None
            headers = {"Content-Type": "application/json"} if payload is not None else {}
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            data = response.read()
            headers = {k.lower(): v for k, v in response.getheaders()}
            return response.status, headers, orjson.loads(data) if data else None
        finally:
            conn.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def bound_or_exited(process: subprocess.Popen[bytes], pid_file: Path) -> bool:
    # nginx writes its pid file once its sockets are bound (a connection could reach
    # whoever else holds the port).
    return process.poll() is not None or pid_file.exists()


def start_nginx(
    nginx: str, directory: Path, dns: int, upstream: int
) -> tuple[int, subprocess.Popen[bytes], Path]:
    """nginx on a free port, listening: (port, process, log). Another process may take the
    port between our check and nginx's bind (other tests run here too): a few tries."""
    for attempt in range(5):
        port = free_port()
        config = templated(directory, port, dns, upstream)
        (directory / "nginx.pid").unlink(missing_ok=True)
        log_path = directory / f"nginx-{attempt}.log"
        with open(log_path, "wb") as out:
            process = subprocess.Popen(
                [nginx, "-p", str(directory), "-c", str(config), "-e", "stderr",
                 "-g", "daemon off;"],
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        up = functools.partial(bound_or_exited, process, directory / "nginx.pid")
        wait_for(up, what="nginx to bind or exit")
        if process.poll() is None:
            return port, process, log_path
        log = log_path.read_text(errors="replace")
        if "Address already in use" not in log:
            raise AssertionError(f"nginx exited:\n{log}")
    raise AssertionError("no free port for nginx in 5 tries")


@pytest.fixture
def nginx() -> str:
    found = nginx_binary()
    if found is None:
        reason = "nginx is not installed (apt-get install nginx)"
        if os.environ.get("ORDERLOG_TEST_REQUIRE_NGINX") == "1":
            pytest.fail(f"nginx is required here: {reason}")
        pytest.skip(reason)
    return found


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    server = DnsServer()
    try:
        yield server
    finally:
        server.close()


@contextlib.contextmanager
def running_nginx(
    nginx: str, directory: Path, dns: DnsServer, node: ServerProcess
) -> Iterator[Proxy]:
    """nginx in front of the nodes on ``node``'s port, until the block ends."""
    port, process, log_path = start_nginx(nginx, directory, dns.port, node.port)
    try:
        yield Proxy(port, node, process, log_path)
    finally:
        process.terminate()
        process.wait(DEADLINE)


def node_on(url: str, directory: Path, host: str, *extra: str) -> ServerProcess:
    """A node on ``host`` (a loopback address, as a container's is its own)."""
    return start_server(url, directory, "--host", host, "--trusted-proxy", PROXY, *extra)


@pytest.fixture
def proxy(nginx: str, dns: DnsServer, sqlite_url: str, tmp_path: Path) -> Iterator[Proxy]:
    dns.answer(NODES, ["127.0.0.1"])
    # A cap of 2 for anyone else: the proxy's many connections must not be held to it.
    node = node_on(sqlite_url, tmp_path, "127.0.0.1", "--max-connections-per-client", "2")
    try:
        with running_nginx(nginx, tmp_path, dns, node) as proxy:
            wait_for(lambda: proxy.request("GET", "/healthz")[0] == 200,
                     what="nginx to answer through to the node")  # fmt: skip
            yield proxy
    finally:
        assert node.terminate() == 0, node.log()


def order(label: str) -> dict[str, Any]:
    return {
        "order_id": f"{label}-{uuid.uuid4().hex[:10]}",
        "user_id": 5,
        "item_ids": ["sku-1"],
        "total_amount": "3.50",
    }


def test_orders_go_through_nginx_whose_connections_the_node_does_not_cap(proxy: Proxy) -> None:
    placed = order("via-nginx")
    status, headers, body = proxy.request("POST", "/orders", placed)
    assert status == 201, body
    assert proxy.request("GET", headers["location"])[2]["order_id"] == placed["order_id"]

    # Eight at a time (the node's default bound per forwarded client): nginx opens more
    # connections to the node than the node allows any one other address.
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda n: proxy.request("POST", "/orders", order(f"p{n}"))[0],
                                 range(64)))  # fmt: skip
    assert statuses == [201] * 64

    # Too large for nginx: refused there, as a problem.
    status, headers, body = proxy.request("POST", "/orders", raw=b"{" + b" " * 70_000 + b"}")
    assert status == 413 and headers["content-type"] == "application/problem+json"
    assert body["status"] == 413


def test_nginx_answers_429_problem_to_a_client_over_its_concurrent_requests(
    proxy: Proxy,
) -> None:
    limit = configured_limit()
    bodies = [orjson.dumps(order(f"held{n}")) for n in range(limit)]
    held: list[socket.socket] = []
    try:
        for body in bodies:
            sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=DEADLINE)
            held.append(sock)
            sock.sendall(
                b"POST /orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % len(body)
            )
            # nginx asks for the body only after the limit let the request in: it counts.
            assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue"), proxy.log()

        status, headers, problem = proxy.request("POST", "/orders", order("one-too-many"))
        assert status == 429
        assert headers["content-type"] == "application/problem+json"
        assert headers["retry-after"] == "1"
        assert problem["status"] == 429

        answers = []
        for sock, body in zip(held, bodies, strict=True):  # complete once the body comes
            sock.sendall(body)
            answers.append(sock.makefile("rb").readline())
        assert answers == [b"HTTP/1.1 201 Created\r\n"] * limit
    finally:
        for sock in held:
            sock.close()


def test_with_no_node_answering_nginx_answers_503_problem_with_retry_after(proxy: Proxy) -> None:
    assert proxy.node.terminate() == 0
    status, headers, problem = proxy.request("POST", "/orders", order("nobody-home"))
    assert status == 503
    assert headers["content-type"] == "application/problem+json"
    assert headers["retry-after"] == "1"
    assert problem["status"] == 503


def ready_node(proxy: Proxy) -> str | None:
    """The node that answered GET /readyz through nginx, if one did."""
    status, _, body = proxy.request("GET", "/readyz")
    return body["node"] if status == 200 else None


def test_nginx_reaches_a_node_recreated_at_a_new_address_without_a_reload(
    nginx: str, dns: DnsServer, sqlite_url: str, tmp_path: Path
) -> None:
    dns.answer(NODES, ["127.0.0.2"])
    first = node_on(sqlite_url, tmp_path, "127.0.0.2", "--node-id", "first")
    second: ServerProcess | None = None
    try:
        with running_nginx(nginx, tmp_path, dns, first) as proxy:
            assert ready_node(proxy) == "first"
            assert first.terminate() == 0
            # Back as a recreated container comes back: the same name, another address.
            second = node_on(sqlite_url, tmp_path, "127.0.0.3", "--node-id", "second",
                             "--port", str(first.port))  # fmt: skip
            dns.answer(NODES, ["127.0.0.3"])
            wait_for(lambda: ready_node(proxy) == "second",
                     what="nginx to reach the node at its new address")  # fmt: skip
    finally:
        first.terminate()
        if second is not None:
            assert second.terminate() == 0, second.log()


def test_nginx_passes_an_address_where_no_node_answers_and_reaches_the_live_one(
    nginx: str, dns: DnsServer, sqlite_url: str, tmp_path: Path
) -> None:
    live = node_on(sqlite_url, tmp_path, "127.0.0.3", "--node-id", "live")
    dns.answer(NODES, ["127.0.0.2", "127.0.0.3"])  # nothing listens on the first
    try:
        with running_nginx(nginx, tmp_path, dns, live) as proxy:
            placed = [proxy.request("POST", "/orders", order(f"past{n}"))[0] for n in range(6)]
            assert placed == [201] * 6
            assert {ready_node(proxy) for _ in range(6)} == {"live"}
            refused = rf'connect\(\) failed .*upstream: "http://127\.0\.0\.2:{live.port}/'
            assert re.search(refused, proxy.log()), proxy.log()  # it was tried, and passed
    finally:
        assert live.terminate() == 0, live.log()
