"""What many test modules share: stores and settings, raw database access and its
integrity checks, real servers, a load client running in the background, and the
sample order and problem checks the app's tests use.

Test modules import from here, never from each other. Everything here goes
through the packages' public API; raw driver connections are for checking what
the database itself holds or refuses, outside peewee and its pool.
"""

from __future__ import annotations

import asyncio
import http.client
import os
import random
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import falcon.testing
import orjson

from api.node import Node
from bench import loadgen
from orderlog.config import Settings, load_settings
from orderlog.storage.database import open_database
from orderlog.storage.database_url import parse_url
from orderlog.storage.store import EventStore

ROOT = Path(__file__).resolve().parent.parent
DEADLINE = 30.0


# -- stores and settings ------------------------------------------------------------


def make_store(url: str, **options: Any) -> EventStore:
    """An open event store on its own pooled database."""
    return EventStore(open_database(url), **options).open()


def settings_for(url: str, **overrides: object) -> Settings:
    """Settings for an in-process core: no simulated work, a quick sweep."""
    values: dict[str, object] = {
        "database_url": url,
        "processing_delay": 0.0,
        "sweep_interval": 0.2,
    }
    values.update(overrides)
    return load_settings(env={}, overrides=values)


def wait_for(condition: Callable[[], Any], timeout: float = DEADLINE, what: str = "") -> Any:
    """Poll ``condition`` until it returns something truthy; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what or 'condition'} not met within {timeout}s")
        time.sleep(0.005)  # polling interval of a deadline-bound wait


def run_threads(
    count: int, target: Callable[[int], None], timeout: float = DEADLINE
) -> list[BaseException]:
    """Run ``target(i)`` in ``count`` threads started together; the errors they raised.

    The threads meet at a barrier first, so they race rather than run one after another.
    """
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def body(index: int) -> None:
        try:
            barrier.wait(timeout=timeout)
            target(index)
        except BaseException as exc:  # handed back to the test thread
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout * 2)
    assert not any(t.is_alive() for t in threads), "a thread did not finish"
    return errors


# -- raw database access ----------------------------------------------------------------


@contextmanager
def raw_connection(url: str) -> Iterator[Any]:
    """A brand-new driver connection outside peewee and its pool, in autocommit mode."""
    target = parse_url(url)
    if target.backend == "sqlite":
        conn: Any = sqlite3.connect(target.database, timeout=30, isolation_level=None)
    elif target.backend == "postgres":
        import psycopg2

        conn = psycopg2.connect(dbname=target.database, **target.driver_params())
        conn.autocommit = True
    else:
        import pymysql

        conn = pymysql.connect(
            database=target.database or None, autocommit=True, **target.driver_params()
        )
    try:
        yield conn
    finally:
        conn.close()


def raw_fetch(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one query on a brand-new connection; ``?`` placeholders suit every backend."""
    if parse_url(url).backend != "sqlite":
        sql = sql.replace("?", "%s")
    with raw_connection(url) as conn:
        cursor = conn.cursor()
        cursor.execute(sql, params)
        rows = [tuple(row) for row in cursor.fetchall()] if cursor.description else []
        cursor.close()
        return rows


def logged_positions(url: str) -> list[int]:
    """Every position in the events table, in order, read with SQL of its own."""
    return [row[0] for row in raw_fetch(url, "SELECT position FROM events ORDER BY position")]


def readable(store: EventStore, timeout: float = 30.0) -> EventStore:
    """The store once every event committed so far can be read (on PostgreSQL, readers
    stop at the oldest transaction still in progress anywhere on the server)."""
    assert store.wait_readable(store.last_position(), timeout), "the log did not settle"
    return store


def dense(url: str) -> bool:
    """Whether the backend hands out positions 1, 2, 3… (PostgreSQL's have gaps)."""
    return parse_url(url).backend != "postgres"


def nth_positions(url: str, *ranks: int) -> list[int]:
    """The positions of the log's events at these ranks (1 is the first): the ranks
    themselves where positions are dense, the stored positions on PostgreSQL."""
    if dense(url):
        return list(ranks)
    logged = logged_positions(url)
    return [logged[rank - 1] for rank in ranks]


def admin_execute(url: str, statements: list[str]) -> None:
    """Statements outside any transaction (CREATE DATABASE refuses one)."""
    with raw_connection(url) as conn:
        cursor = conn.cursor()
        for statement in statements:
            cursor.execute(statement)
        cursor.close()


def integrity_problems(url: str) -> list[str]:
    """What the database's own checks find wrong with it: an empty list when it is sound.

    SQLite: ``PRAGMA integrity_check`` (every page, every index against its table).
    PostgreSQL: with the ``amcheck`` extension (created here if the server lets us),
    ``bt_index_check`` with ``heapallindexed`` on every index of the events table (the
    B-tree is well formed and holds every row) and ``verify_heapam`` on the table.
    Whether or not amcheck is there: every events index is valid and ready, the
    unique (stream_id, version) index exists, and counting the rows through each
    index (the plan is checked to use it) gives the count of a sequential scan.
    """
    backend = parse_url(url).backend
    if backend == "sqlite":
        rows = raw_fetch(url, "PRAGMA integrity_check")
        return [] if rows == [("ok",)] else [str(row[0]) for row in rows]
    if backend == "postgres":
        with raw_connection(url) as conn:
            return _postgres_integrity_problems(conn)
    raise ValueError(f"no integrity check for {backend} here")


def _postgres_integrity_problems(conn: Any) -> list[str]:
    import psycopg2

    problems: list[str] = []
    cursor = conn.cursor()
    cursor.execute(
        "SELECT c.relname, i.indisvalid, i.indisready, i.indisunique, "
        "(SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_attribute a "
        " WHERE a.attrelid = i.indexrelid) "
        "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE i.indrelid = 'events'::regclass ORDER BY c.relname"
    )
    indexes = cursor.fetchall()
    for name, valid, ready, _, _ in indexes:
        if not (valid and ready):
            problems.append(f"index {name} is not valid and ready")
    if not any(unique and columns == ["stream_id", "version"] for *_, unique, columns in indexes):
        problems.append("no unique index on events (stream_id, version)")

    try:
        cursor.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
        amcheck = True
    except psycopg2.Error:  # not allowed here: the catalogue and count checks still run
        amcheck = False
    if amcheck:
        for name, *_ in indexes:
            try:
                cursor.execute(
                    "SELECT bt_index_check(index => %s::regclass, heapallindexed => true)", (name,)
                )
                cursor.fetchall()
            except psycopg2.Error as exc:
                problems.append(f"bt_index_check({name}): {exc}".strip())
        cursor.execute("SELECT 1 FROM pg_proc WHERE proname = 'verify_heapam'")
        if cursor.fetchone():
            cursor.execute("SELECT blkno, offnum, msg FROM verify_heapam('events')")
            problems += [f"verify_heapam: block {b} item {o}: {m}" for b, o, m in cursor]

    cursor.execute("SET enable_indexscan = off")
    cursor.execute("SET enable_indexonlyscan = off")
    cursor.execute("SET enable_bitmapscan = off")
    cursor.execute("SELECT count(*) FROM events")
    (by_table,) = cursor.fetchone()
    cursor.execute("RESET ALL")
    cursor.execute("SET enable_seqscan = off")
    cursor.execute("SET enable_bitmapscan = off")
    for name, *_, columns in indexes:
        ordered = ", ".join(columns)
        query = f"SELECT count(*) FROM (SELECT {ordered} FROM events ORDER BY {ordered}) AS rows"
        cursor.execute("EXPLAIN " + query)
        plan = " ".join(row[0] for row in cursor.fetchall())
        if f"using {name} on events" not in plan.lower():
            problems.append(f"counting through {name} did not use it: {plan}")
            continue
        cursor.execute(query)
        (by_index,) = cursor.fetchone()
        if by_index != by_table:
            problems.append(f"{by_index} rows through {name}, {by_table} by sequential scan")
    cursor.execute("RESET ALL")
    cursor.close()
    return problems


# -- real servers ------------------------------------------------------------------------

_SERVING = re.compile(r"serving on http://([^\s:]+):(\d+)")


@dataclass
class ServerProcess:
    """An ``orderlog serve`` process under test, with its log file."""

    process: subprocess.Popen[bytes]
    host: str
    port: int
    log_path: Path
    args: list[str] = field(default_factory=list)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float = 30.0,
    ) -> tuple[int, dict[str, str], Any]:
        """One HTTP request; returns (status, headers, decoded JSON body or None)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            payload = orjson.dumps(body) if body is not None else None
            all_headers = {"Content-Type": "application/json"} if payload is not None else {}
            all_headers.update(headers or {})
            conn.request(method, path, body=payload, headers=all_headers)
            response = conn.getresponse()
            raw = response.read()
            try:
                data = orjson.loads(raw) if raw else None
            except orjson.JSONDecodeError:
                data = raw
            return response.status, {k.lower(): v for k, v in response.getheaders()}, data
        finally:
            conn.close()

    def wait_until(self, predicate: Any, timeout: float = 60.0, interval: float = 0.05) -> Any:
        """Poll ``predicate(self)`` until it returns something truthy, or fail at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            result = predicate(self)
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout}s; log:\n{self.log()}")
            time.sleep(interval)  # polling interval of a deadline-bound wait

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind runs in the server."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def terminate(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def total_orders(server: ServerProcess) -> int:
    """``total_orders`` as the server's ``GET /metrics`` answers it."""
    status, _, body = server.request("GET", "/metrics")
    assert status == 200, body
    return int(body["total_orders"])


def all_done(server: ServerProcess) -> bool:
    """Whether ``GET /metrics`` answers and counts no order Pending or Processing."""
    status, _, body = server.request("GET", "/metrics")
    counts = body["status_counts"] if status == 200 else {}
    return bool(counts) and counts["Pending"] == counts["Processing"] == 0


def restartable_port(host: str = "127.0.0.1") -> int:
    """A free TCP port outside the kernel's ephemeral range, for a server restarted on it.

    Port 0 gives a port from that range, which the kernel also hands to outgoing
    connections: while the server is down, a client reconnecting to it could be given
    the very same port for its own end (and even connect to itself), and the restart
    could not bind. The kernel never picks a port outside the range on its own.
    """
    low, high = 32768, 60999
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        low, high = (int(part) for part in text.split())
    except (OSError, ValueError):
        pass  # not Linux: assume its default range
    candidates = [*range(max(low - 8192, 10000), low), *range(high + 1, min(high + 8193, 65536))]
    random.shuffle(candidates)
    for port in candidates:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
        return port
    raise AssertionError(f"no free port outside the ephemeral range {low}-{high}")


def start_server(
    database_url: str,
    log_dir: Path,
    *extra: str,
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
    ready_path: str = "/readyz",
) -> ServerProcess:
    """Start ``orderlog serve`` on a free port and wait until ``ready_path`` answers 200.

    The server binds port 0 and prints the port it got, so tests never race for a port.
    """
    # One process unless a test asks for more: the default (auto) forks one per two
    # CPUs, which would make a test's node ids and signals depend on the machine.
    processes = [] if "--processes" in extra else ["--processes", "1"]
    args = [
        "-m", "api", "serve", "--database", database_url,
        "--port", "0", "--log-level", "WARNING", *processes, *extra,
    ]  # fmt: skip
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"server-{time.monotonic_ns()}.log"
    child_env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT), **(env or {})}
    child_env.pop("ORDERLOG_PORT", None)
    with open(log_path, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, *args], cwd=str(log_dir), stdout=out, stderr=subprocess.STDOUT,
            env=child_env,
        )  # fmt: skip
    deadline = time.monotonic() + timeout

    def failed(why: str) -> AssertionError:
        if process.poll() is None:
            process.kill()
        process.wait()
        return AssertionError(f"server {why}:\n{log_path.read_text(errors='replace')}")

    while not (match := _SERVING.search(log_path.read_text(errors="replace"))):
        if process.poll() is not None or time.monotonic() > deadline:
            raise failed("did not start")
        time.sleep(0.02)  # polling interval of a deadline-bound wait
    server = ServerProcess(process, match.group(1), int(match.group(2)), log_path, args)
    while True:
        try:
            if server.request("GET", ready_path, timeout=5)[0] == 200:
                return server
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise failed("never became ready")
        time.sleep(0.05)  # polling interval of a deadline-bound wait


def create_token(database_url: str, name: str, scopes: str, cwd: Path) -> str:
    """A token made by ``orderlog token create``, as a user makes one; its secret."""
    made = subprocess.run(
        [sys.executable, "-m", "api", "token", "create", "--name", name, "--scopes", scopes,
         "--database", database_url],
        cwd=cwd, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    return made.stdout.strip()


class BackgroundLoad:
    """``loadgen.sustained`` on its own thread and event loop, until ``stop``.

    It outlives server restarts on the same port: connections refused or cut
    meanwhile come back as answers with status 0, and the client reconnects.
    """

    def __init__(
        self,
        host: str,
        port: int,
        make_request: Callable[[int], loadgen.Request],
        connections: int,
        timeout: float = 30.0,
    ) -> None:
        self._run_args = (host, port, make_request, connections)
        self._timeout = timeout
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="background-load", daemon=True)
        self._responses: list[loadgen.Response] = []
        self._error: BaseException | None = None

    def _run(self) -> None:
        try:
            self._responses = asyncio.run(
                loadgen.sustained(
                    *self._run_args, duration=3600, timeout=self._timeout, stop=self._stop
                )
            )
        except BaseException as exc:  # handed to the test's thread by responses()
            self._error = exc

    def start(self) -> BackgroundLoad:
        self._thread.start()
        return self

    def stop(self) -> None:
        """End the run: each connection finishes the request it is in, then stops."""
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=60)

    def responses(self) -> list[loadgen.Response]:
        """Every answer of a stopped run, in request order: request n is ``make_request(n)``."""
        if self._thread.is_alive():
            raise AssertionError("the load client did not stop")
        if self._error is not None:
            raise self._error
        return self._responses


# -- the app through falcon's test client -------------------------------------------------

PROBLEM_KEYS = {"type", "title", "status", "detail"}
ORDER_KEYS = {
    "order_id",
    "user_id",
    "item_ids",
    "total_amount",
    "currency",
    "status",
    "version",
    "placed_at",
    "processing_started_at",
    "completed_at",
    "processing_time_seconds",
}
ORDER: dict[str, Any] = {
    "order_id": "o-1",
    "user_id": "u-1",
    "item_ids": ["sku-1", 42],
    "total_amount": 19.99,
}
IDLE = 10.0  # seconds: an upper bound for the worker to finish a handful of orders


def post(
    client: falcon.testing.TestClient,
    body: Any = None,
    *,
    raw: bytes | None = None,
    content_type: str | None = "application/json",
    headers: dict[str, str] | None = None,
) -> falcon.testing.Result:
    """POST /orders with ``body`` as JSON, or ``raw`` bytes as they are."""
    sent = {**({"Content-Type": content_type} if content_type else {}), **(headers or {})}
    data = raw if raw is not None else orjson.dumps(body)
    return client.simulate_post("/orders", body=data, headers=sent)


def order(**changes: Any) -> dict[str, Any]:
    """The sample order with ``changes``."""
    return {**ORDER, **changes}


def without(name: str) -> dict[str, Any]:
    """The sample order without the field ``name``."""
    return {key: value for key, value in ORDER.items() if key != name}


def assert_problem(
    result: falcon.testing.Result, status: int, field: str | None = None
) -> dict[str, Any]:
    """Check an answer is a problem+json of ``status`` (naming ``field``, if given); its body."""
    assert result.status_code == status, result.text
    assert result.headers["content-type"] == "application/problem+json"
    body = result.json
    assert body.keys() >= PROBLEM_KEYS
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    if field is not None:
        assert field in [error["field"] for error in body["errors"]], body
        assert all(error["message"] for error in body["errors"])
    return body


def place_and_finish(client: falcon.testing.TestClient, node: Node, **changes: Any) -> str:
    """Place the sample order (with ``changes``) and wait for the worker to finish it."""
    result = post(client, order(**changes))
    assert result.status_code == 201, result.text
    assert node.worker.wait_idle(IDLE)
    return result.json["order_id"]
