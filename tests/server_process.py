"""Running ``orderlog serve`` as a real process for end-to-end tests.

The server binds port 0 and prints the port it got, so tests never race for a
port; readiness is awaited by polling /readyz with a deadline, never by sleeping
a fixed time.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
_SERVING = re.compile(r"serving on http://([\d.]+):(\d+)")


@dataclass
class ServerProcess:
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
            data = orjson.loads(raw) if raw else None
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
) -> ServerProcess:
    """Start ``orderlog serve`` on a free port and wait until /readyz answers 200."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"server-{time.monotonic_ns()}.log"
    args = [
        sys.executable,
        "-m",
        "api",
        "serve",
        "--database",
        database_url,
        "--port",
        "0",
        "--log-level",
        "WARNING",
        *extra,
    ]
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop("ORDERLOG_PORT", None)
    with open(log_path, "wb") as out:
        process = subprocess.Popen(
            args, cwd=str(log_dir), stdout=out, stderr=subprocess.STDOUT, env=full_env
        )
    deadline = time.monotonic() + timeout
    while True:
        match = _SERVING.search(log_path.read_text(errors="replace"))
        if match:
            break
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"server did not start:\n{log_path.read_text()}")
        time.sleep(0.02)  # polling interval of a deadline-bound wait
    server = ServerProcess(process, match.group(1), int(match.group(2)), log_path, args)

    def ready(s: ServerProcess) -> bool:
        try:
            return s.request("GET", "/readyz", timeout=5)[0] == 200
        except OSError:
            return False

    server.wait_until(ready, timeout=timeout)
    return server
