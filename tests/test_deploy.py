"""The container's start, run as the image runs it: deploy/entrypoint.sh under /bin/sh.

No Docker engine runs here, so the script runs on this machine with the project's
own ``orderlog`` command on PATH, as it does in the image: it provisions the token
from the secret file, then serves on 0.0.0.0, where an API with no token would be
refused.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT, wait_for

ENTRYPOINT = ROOT / "deploy" / "entrypoint.sh"


def test_the_entrypoint_provisions_the_token_then_serves_on_all_addresses(
    sqlite_url: str, tmp_path: Path
) -> None:
    secret = "container-secret-0123456789abcdef"
    (tmp_path / "token").write_text(secret + "\n")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ORDERLOG_")},
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),
        "ORDERLOG_TOKEN_FILE": str(tmp_path / "token"),
        "ORDERLOG_DATABASE_URL": sqlite_url,
        "ORDERLOG_PORT": "0",
        "ORDERLOG_LOG_LEVEL": "WARNING",
    }
    for start in range(2):  # the second start finds the token and leaves it as it is
        process, port = _start(env, tmp_path / f"start-{start}.log", tmp_path)
        try:
            assert _status(port, {}) == 401
            assert _status(port, {"Authorization": f"Bearer {secret}"}) == 200
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=60) == 0  # exec'd: the shell was replaced by orderlog


def _start(env: dict[str, str], log: Path, cwd: Path) -> tuple[subprocess.Popen[bytes], int]:
    with open(log, "wb") as out:
        process = subprocess.Popen(
            ["/bin/sh", str(ENTRYPOINT)], cwd=cwd, env=env, stdout=out, stderr=out
        )

    def started() -> re.Match[bytes] | str | None:
        match = re.search(rb"serving on http://0\.0\.0\.0:(\d+)", log.read_bytes())
        if match is None and process.poll() is not None:
            return log.read_bytes().decode(errors="replace")  # it ended instead: say why
        return match

    found = wait_for(started, what="the server to start")
    assert not isinstance(found, str), found
    return process, int(found.group(1))


def _status(port: int, headers: dict[str, str]) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics", headers=headers)
        return conn.getresponse().status
    finally:
        conn.close()
