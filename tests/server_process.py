"""Running ``orderlog serve`` as a real process for end-to-end tests.

The server binds port 0 and prints the port it got, so tests never race for a
port; readiness is awaited by polling /readyz with a deadline, never by sleeping
a fixed time.
"""

from __future__ import annotations

import http.client
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from api.bench.servers import launch

ROOT = Path(__file__).resolve().parent.parent


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
    args = [
        "-m", "api", "serve", "--database", database_url,
        "--port", "0", "--log-level", "WARNING", *extra,
    ]  # fmt: skip
    try:
        server = launch(args, log_dir, None, "/readyz", timeout, extra_env=env)
    except RuntimeError as exc:
        raise AssertionError(str(exc)) from None
    assert server.process is not None and server.log_path is not None
    return ServerProcess(server.process, server.host, server.port, server.log_path, args)
