"""What many test modules share: stores and settings, raw database access, and real servers.

Test modules import from here, never from each other. Everything here goes
through the packages' public API; raw driver connections are for checking what
the database itself holds or refuses, outside peewee and its pool.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from orderlog.config import Settings, load_settings
from orderlog.database import open_database, parse_url
from orderlog.store import EventStore

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


def admin_execute(url: str, statements: list[str]) -> None:
    """Statements outside any transaction (CREATE DATABASE refuses one)."""
    with raw_connection(url) as conn:
        cursor = conn.cursor()
        for statement in statements:
            cursor.execute(statement)
        cursor.close()


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
    args = [
        "-m", "api", "serve", "--database", database_url,
        "--port", "0", "--log-level", "WARNING", *extra,
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
