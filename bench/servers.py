"""The processes under test: an ``orderlog serve`` or a bare Falcon app, on port 0.

A server binds port 0 and prints "serving on http://HOST:PORT"; we read that line
from its log file, then poll /readyz (or /healthz) with a deadline. Also: a small
keep-alive HTTP client for figures that are read one at a time (/metrics, /events),
and scratch databases on PostgreSQL/MariaDB so benches that need empty tables never
touch the tables behind the URL they were given.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench.placement import Placement
from orderlog.config import load_settings
from orderlog.storage.database import open_database
from orderlog.storage.database_url import parse_url

ROOT = Path(__file__).resolve().parents[1]
PROCESSES_FLAG = "--processes"
_SERVING = re.compile(r"serving on http://([^\s:]+):(\d+)")
_PLACED = re.compile(r"serving on http://\S+ \(([^)]*)\)")


class BenchError(Exception):
    """What stops a bench before it measures anything wrong: said in one line, no traceback."""


@dataclass
class Server:
    host: str
    port: int
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    flags: tuple[str, ...] = ()
    headers: dict[str, str] = field(default_factory=dict)  # sent with every request

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

    def placement(self) -> str | None:
        """Where the server says it runs ("on CPU 1", "not pinned"), from its start-up line."""
        match = _PLACED.search(self.log())
        return match.group(1) if match else None


def launch(
    args: list[str], workdir: Path, placement: Placement, ready_path: str, timeout: float
) -> Server:
    """Start ``python *args`` (a server on port 0) and wait until ``ready_path`` is 200."""
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"server-{time.monotonic_ns()}.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
    # The server under test runs on its defaults: no setting leaks in from this shell.
    for name in [name for name in env if name.startswith("ORDERLOG_")]:
        env.pop(name)
    with open(log_path, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, *args],
            cwd=str(workdir),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=placement.server_preexec(),
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
    server = Server(match.group(1), int(match.group(2)), process, log_path, tuple(args))
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
    *extra: str,
    processes: int | None = None,
    timeout: float = 300.0,
) -> Server:
    """``orderlog serve`` as a user starts it: its defaults, a port of its own, our database.

    ``extra`` flags are for explicit variants (a tuned row), never the headline.
    ``processes`` is passed on as ``--processes N`` when given; see processes_flags.
    """
    args = ["-m", "api", "serve", "--port", "0", "--database", database_url, *extra]
    args += processes_flags(processes)
    return launch(args, workdir, placement, "/readyz", timeout)


def processes_flags(processes: int | None) -> list[str]:
    """``--processes N`` for orderlog serve, asked of it only when N is given.

    An orderlog without the flag serves from one process: asked for one, it is started
    as it is; asked for more, the bench stops here and says so rather than measure one
    process under the name of N.
    """
    if processes is None:
        return []
    if serves_processes():
        return [PROCESSES_FLAG, str(processes)]
    if processes == 1:
        return []
    raise BenchError(
        f"orderlog serve has no {PROCESSES_FLAG} flag (see `orderlog serve --help`): this "
        f"orderlog serves from one process, so {PROCESSES_FLAG} {processes} cannot be measured"
    )


@functools.cache
def serves_processes() -> bool:
    """Whether ``orderlog serve`` takes --processes, by its own help text."""
    done = subprocess.run(
        [sys.executable, "-m", "api", "serve", "--help"],
        cwd=str(ROOT), capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    if done.returncode != 0:
        raise BenchError(f"orderlog serve --help failed: {done.stderr.strip()}")
    return re.search(rf"(^|\s){PROCESSES_FLAG}\b", done.stdout, re.MULTILINE) is not None


def make_token(database_url: str, workdir: Path) -> str:
    """An admin token made with ``orderlog token create``, as an operator would."""
    done = subprocess.run(
        [sys.executable, "-m", "api", "token", "create", "--name", "bench", "--scopes",
         "admin", "--database", database_url],
        cwd=str(workdir), capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"could not make a token: {done.stderr}")
    return done.stdout.strip()


def start_bare(
    workdir: Path, placement: Placement, *extra: str, processes: int | None = None
) -> Server:
    """The bare Falcon app (bench.bare) with orderlog's default waitress settings, from
    ``processes`` processes sharing one socket (when not given, as many as orderlog
    serves from by default here, so both use the same CPUs)."""
    args = ["-m", "bench.bare", "--port", "0", *extra]
    if processes is None:
        processes = load_settings().process_count  # the environment orderlog is started in
    if processes > 1:
        args += [PROCESSES_FLAG, str(processes)]
    return launch(args, workdir, placement, "/healthz", 60.0)


def server_from_url(url: str) -> Server:
    parsed = http.client.urlsplit(url)
    return Server(parsed.hostname or "127.0.0.1", parsed.port or 80)


class Client:
    """One keep-alive connection for sequential requests (latency probes, paging)."""

    def __init__(
        self, host: str, port: int, timeout: float = 60.0, headers: dict[str, str] | None = None
    ) -> None:
        self._conn = http.client.HTTPConnection(host, port, timeout=timeout)
        self._headers = headers or {}

    @classmethod
    def to(cls, server: Server) -> Client:
        return cls(server.host, server.port, headers=server.headers)

    def get(self, path: str) -> tuple[int, Any, float]:
        """(status, decoded JSON or None, seconds)."""
        started = time.perf_counter()
        try:
            self._conn.request("GET", path, headers=self._headers)
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


# -- scratch databases ------------------------------------------------------------------


@contextlib.contextmanager
def scratch_database(url: str, workdir: Path, label: str) -> Iterator[str]:
    """An empty database of the same backend as ``url``, removed afterwards."""
    target = parse_url(url)
    if target.backend == "sqlite":
        path = workdir / f"{label}-{uuid.uuid4().hex[:8]}.db"
        try:
            yield f"sqlite:///{path}"
        finally:
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    Path(f"{path}{suffix}").unlink()
        return
    name = f"orderlog_bench_{label}_{uuid.uuid4().hex[:8]}"
    _admin(url, f"CREATE DATABASE {name}")
    try:
        yield target.with_database(name)
    finally:
        _admin(url, f"DROP DATABASE IF EXISTS {name}")


def _admin(url: str, statement: str) -> None:
    """One statement outside a transaction (peewee runs its connections in autocommit)."""
    db = open_database(url, max_connections=1)
    try:
        with db.connection_context():
            db.execute_sql(statement)
    finally:
        db.close_all()
