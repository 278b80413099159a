"""The processes under test: an ``orderlog serve`` or a bare Falcon app, on port 0.

A server binds port 0 and prints "serving on http://HOST:PORT"; we read that line
from its log file, then poll /readyz (or /healthz) with a deadline. Also: a small
keep-alive HTTP client for figures that are read one at a time (/metrics, /events),
and scratch databases on PostgreSQL/MariaDB so benches that need empty tables never
touch the tables behind the URL they were given.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

import orjson

from api.bench.placement import Placement

ROOT = Path(__file__).resolve().parents[2]
_SERVING = re.compile(r"serving on http://([^\s:]+):(\d+)")


@dataclass(frozen=True)
class WaitressOptions:
    """The waitress settings both the orderlog server and the bare server get."""

    threads: int
    connection_limit: int
    backlog: int

    def flags(self) -> list[str]:
        return [
            "--threads",
            str(self.threads),
            "--connection-limit",
            str(self.connection_limit),
            "--backlog",
            str(self.backlog),
        ]


@dataclass
class Server:
    host: str
    port: int
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM, so the server drains its writer and stores its projection."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def log(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")


def launch(
    args: list[str],
    workdir: Path,
    placement: Placement | None,
    ready_path: str,
    timeout: float,
    extra_env: dict[str, str] | None = None,
) -> Server:
    """Start ``python *args`` (a server on port 0) and wait until ``ready_path`` is 200."""
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"server-{time.monotonic_ns()}.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT), **(extra_env or {})}
    env.pop("ORDERLOG_PORT", None)
    with open(log_path, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, *args],
            cwd=str(workdir),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=placement.server_preexec() if placement else None,
        )
    deadline = time.monotonic() + timeout
    while True:
        match = _SERVING.search(log_path.read_text(errors="replace"))
        if match:
            break
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait()
            raise RuntimeError(f"server did not start:\n{log_path.read_text(errors='replace')}")
        time.sleep(0.02)  # polling interval of a deadline-bound wait
    server = Server(match.group(1), int(match.group(2)), process, log_path)
    while True:
        try:
            if Client(server.host, server.port).get(ready_path)[0] == 200:
                return server
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"server never became ready:\n{server.log()}")
        time.sleep(0.05)  # polling interval of a deadline-bound wait


def start_orderlog(
    database_url: str,
    workdir: Path,
    placement: Placement,
    options: WaitressOptions,
    *extra: str,
    timeout: float = 300.0,
) -> Server:
    """``python -m api serve`` on port 0 with no processing delay; waits for /readyz."""
    args = [
        "-m",
        "api",
        "serve",
        "--port",
        "0",
        "--database",
        database_url,
        "--processing-delay",
        "0",
        "--log-level",
        "WARNING",
        *options.flags(),
        *extra,
    ]
    return launch(args, workdir, placement, "/readyz", timeout)


def start_bare(workdir: Path, placement: Placement, options: WaitressOptions) -> Server:
    """The bare Falcon app (api.bench.bare) with the same waitress settings."""
    args = ["-m", "api.bench.bare", "--port", "0", *options.flags()]
    return launch(args, workdir, placement, "/healthz", 60.0)


def server_from_url(url: str) -> Server:
    parsed = urlparse(url)
    return Server(parsed.hostname or "127.0.0.1", parsed.port or 80)


class Client:
    """One keep-alive connection for sequential requests (latency probes, paging)."""

    def __init__(self, host: str, port: int, timeout: float = 60.0) -> None:
        self._conn = http.client.HTTPConnection(host, port, timeout=timeout)

    def get(self, path: str) -> tuple[int, Any, float]:
        """(status, decoded JSON or None, seconds)."""
        started = time.perf_counter()
        try:
            self._conn.request("GET", path)
            response = self._conn.getresponse()
            raw = response.read()
        except (http.client.HTTPException, OSError):
            self._conn.close()
            raise
        seconds = time.perf_counter() - started
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        return response.status, body, seconds

    def close(self) -> None:
        self._conn.close()


# -- scratch databases on server backends ------------------------------------------


def driver_connect(url: str, autocommit: bool = False) -> Any:
    """A plain DB-API connection (psycopg2 or pymysql) to a server backend's URL."""
    parsed = urlparse(url)
    if parsed.scheme.startswith("postgres"):
        import psycopg2

        conn = psycopg2.connect(
            host=parsed.hostname,
            port=parsed.port or 5432,
            user=parsed.username,
            password=parsed.password,
            dbname=parsed.path.lstrip("/") or "postgres",
        )
        conn.autocommit = autocommit
        return conn
    import pymysql

    return pymysql.connect(
        host=parsed.hostname,
        port=parsed.port or 3306,
        user=parsed.username,
        password=parsed.password or "",
        database=parsed.path.lstrip("/") or None,
        autocommit=autocommit,
    )


def admin_execute(url: str, statements: list[str]) -> None:
    """Run statements outside a transaction (CREATE DATABASE refuses one)."""
    conn = driver_connect(url, autocommit=True)
    try:
        with conn.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)
    finally:
        conn.close()


@contextlib.contextmanager
def scratch_database(url: str, workdir: Path, label: str) -> Iterator[str]:
    """An empty database of the same backend as ``url``, removed afterwards."""
    if urlparse(url).scheme.startswith("sqlite"):
        path = workdir / f"{label}-{uuid.uuid4().hex[:8]}.db"
        try:
            yield f"sqlite:///{path}"
        finally:
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    Path(f"{path}{suffix}").unlink()
        return
    name = f"orderlog_bench_{label}_{uuid.uuid4().hex[:8]}"
    admin_execute(url, [f"CREATE DATABASE {name}"])
    try:
        yield urlunparse(urlparse(url)._replace(path="/" + name))
    finally:
        admin_execute(url, [f"DROP DATABASE IF EXISTS {name}"])
