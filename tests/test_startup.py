"""Start-up: bind before touching the log, and every failure is one line with a hint.

Each case runs the real command in a subprocess and asserts what a user sees:
a non-zero exit, exactly one line on stderr beginning ``orderlog: ``, no
traceback, and nothing created or written that was not there before.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import server_url
from tests.support import ROOT, create_token, make_store, raw_fetch, start_server

V1_SQLITE = ROOT / "tests" / "data" / "schema-v1.sqlite.sql"


def orderlog(
    *args: str,
    cwd: Path,
    preexec: Callable[[], None] | None = None,
    env: dict[str, str] | None = None,
) -> tuple[int, str]:
    inherited = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("ORDERLOG_") or k.startswith("ORDERLOG_TEST")
    }
    env = {**inherited, "PYTHONPATH": str(ROOT), **(env or {})}
    done = subprocess.run(
        [sys.executable, "-m", "api", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        preexec_fn=preexec,
    )
    return done.returncode, done.stderr


def assert_one_line(code: int, stderr: str, *fragments: str) -> None:
    assert code != 0
    assert "Traceback" not in stderr, stderr
    assert stderr.endswith("\n") and stderr.count("\n") == 1, stderr
    assert stderr.startswith("orderlog: "), stderr
    assert stderr.rstrip().endswith(")"), f"no hint in parentheses: {stderr}"
    for fragment in fragments:
        assert fragment in stderr, stderr


def test_a_taken_port_fails_in_one_line_before_touching_the_log(
    database_url: str, tmp_path: Path
) -> None:
    # A server with orders in work holds the port; a second start on the same log must
    # fail before it recovers anything (it used to claim the first one's orders).
    first = start_server(database_url, tmp_path, "--processing-delay", "60", "--node-id", "a")
    try:
        for n in range(5):
            body = {"order_id": f"held-{n}", "user_id": 1, "item_ids": ["x"], "total_amount": "1"}
            assert first.request("POST", "/orders", body)[0] == 201
        first.wait_until(
            lambda s: s.request("GET", "/metrics")[2]["status_counts"]["Processing"] == 5
        )
        head = raw_fetch(database_url, "SELECT COUNT(*) FROM events")
        code, stderr = orderlog(
            "serve", "--database", database_url, "--port", str(first.port), "--node-id", "b",
            "--pending-grace", "0", "--claim-timeout", "0", cwd=tmp_path,
        )  # fmt: skip
        assert_one_line(code, stderr, f"cannot listen on 127.0.0.1:{first.port}", "in use")
        assert raw_fetch(database_url, "SELECT COUNT(*) FROM events") == head
    finally:
        first.terminate()


def test_an_unknown_host_fails_in_one_line(tmp_path: Path) -> None:
    code, stderr = orderlog(
        "serve", "--database", f"sqlite:///{tmp_path / 'o.db'}", "--host", "nosuch.invalid",
        cwd=tmp_path,
    )  # fmt: skip
    assert_one_line(code, stderr, "cannot listen on nosuch.invalid", "--host must be")
    assert not (tmp_path / "o.db").exists()  # bind comes first: nothing was created


def test_an_unknown_host_from_the_environment_names_the_variable(tmp_path: Path) -> None:
    code, stderr = orderlog(
        "serve", "--database", f"sqlite:///{tmp_path / 'o.db'}", cwd=tmp_path,
        env={"ORDERLOG_HOST": "nosuch.invalid"},
    )  # fmt: skip
    assert_one_line(code, stderr, "cannot listen on nosuch.invalid", "ORDERLOG_HOST must be")
    assert "--host" not in stderr


def test_a_sqlite_path_in_a_missing_directory_is_refused_and_nothing_is_created(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "no" / "such" / "dir"
    for command, says in (
        (["serve", "--port", "0"], "does not exist"),
        (["rebuild", "--quiet"], "no SQLite database at"),
    ):
        code, stderr = orderlog(
            *command, "--database", f"sqlite:///{missing / 'o.db'}", cwd=tmp_path
        )
        assert_one_line(code, stderr, says)
        assert not (tmp_path / "no").exists()


def test_rebuild_never_creates_a_database(tmp_path: Path) -> None:
    code, stderr = orderlog(
        "rebuild", "--database", f"sqlite:///{tmp_path / 'typo.db'}", cwd=tmp_path
    )
    assert_one_line(code, stderr, "no SQLite database at")
    assert not (tmp_path / "typo.db").exists()


def test_rebuild_of_a_database_without_a_log_creates_nothing(
    database_url: str, tmp_path: Path
) -> None:
    if database_url.startswith("sqlite"):
        Path(database_url.removeprefix("sqlite:///")).touch()  # an empty file, not a log
    code, stderr = orderlog("rebuild", "--database", database_url, cwd=tmp_path)
    assert_one_line(code, stderr, "no orderlog log in")
    tables = raw_fetch(
        database_url,
        "SELECT name FROM sqlite_master"
        if database_url.startswith("sqlite")
        else "SELECT table_name FROM information_schema.tables "
        "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') "
        "AND table_schema = "
        + ("current_schema()" if database_url.startswith("postgres") else "DATABASE()"),
    )
    assert tables == []


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are my notes, not a database\n" * 200)
    code, stderr = orderlog("serve", "--database", f"sqlite:///{path}", "--port", "0", cwd=tmp_path)
    assert_one_line(code, stderr, "is not a SQLite database")
    assert path.read_bytes().startswith(b"these are my notes")


def test_a_path_where_no_file_can_be_made_is_refused(tmp_path: Path) -> None:
    code, stderr = orderlog(
        "serve", "--database", "sqlite:////proc/orders.db", "--port", "0", cwd=tmp_path
    )
    assert_one_line(code, stderr, "cannot open the SQLite database /proc/orders.db")


def test_a_read_only_sqlite_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "orders.db"
    make_store(f"sqlite:///{path}").close()
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.chmod(0o444)
    # Root writes through permissions; the immutable flag stops even root.
    immutable = os.geteuid() == 0
    if immutable and subprocess.run(["chattr", "+i", str(path)], check=False).returncode != 0:
        pytest.skip(
            "running as root where chattr +i is unavailable: no way to make a file read-only"
        )
    try:
        code, stderr = orderlog(
            "serve", "--database", f"sqlite:///{path}", "--port", "0", cwd=tmp_path
        )
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(path)], check=True)
    assert_one_line(code, stderr, "read-only")


@pytest.mark.server
@pytest.mark.parametrize("backend", ["postgres", "mysql"])
def test_a_server_database_that_does_not_exist_is_refused_with_how_to_create_it(
    backend: str,
    server_databases: dict,
    tmp_path: Path,  # type: ignore[type-arg]
) -> None:
    url = server_url(backend, server_databases)
    missing = url.rsplit("/", 1)[0] + "/orderlog_missing_database"
    code, stderr = orderlog("serve", "--database", missing, "--port", "0", cwd=tmp_path)
    assert_one_line(code, stderr, "'orderlog_missing_database' does not exist", "create it")


def test_a_port_that_is_free_but_bound_elsewhere_by_name_is_reported(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        code, stderr = orderlog(
            "serve", "--database", f"sqlite:///{tmp_path / 'o.db'}", "--port", str(port),
            cwd=tmp_path,
        )  # fmt: skip
    # The hint names the variable as well as the flag: `make run` is given a port by either.
    assert_one_line(code, stderr, "in use", "--port", "ORDERLOG_PORT")
    assert not (tmp_path / "o.db").exists()


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file in ``folder`` and its content."""
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def schema_objects(database_url: str) -> list[tuple[str, ...]]:
    """The tables (and, on SQLite, every index and trigger) the database holds."""
    if database_url.startswith("sqlite"):
        return raw_fetch(database_url, "SELECT type, name FROM sqlite_master ORDER BY name")
    return raw_fetch(
        database_url,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = "
        + ("current_schema()" if database_url.startswith("postgres") else "DATABASE()")
        + " ORDER BY table_name",
    )


def test_an_open_api_refused_off_loopback_creates_no_database(
    database_url: str, tmp_path: Path
) -> None:
    # SQLite: no file there; a server: an empty database. Neither gets a file or a table.
    before = snapshot(tmp_path)
    code, stderr = orderlog(
        "serve", "--database", database_url, "--host", "0.0.0.0", "--port", "0", cwd=tmp_path
    )
    assert_one_line(code, stderr, "no API token exists", "--allow-anonymous")
    assert snapshot(tmp_path) == before  # no database file, no lock file beside it
    if not database_url.startswith("sqlite"):
        assert schema_objects(database_url) == []


def test_an_open_api_refused_off_loopback_leaves_an_old_log_as_it_was(tmp_path: Path) -> None:
    # A log of the release before schema versions (no tokens table): the start that is
    # refused must not upgrade it, nor write anything else to it.
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(V1_SQLITE.read_text())
    conn.close()
    before = snapshot(tmp_path)
    code, stderr = orderlog(
        "serve", "--database", f"sqlite:///{path}", "--host", "0.0.0.0", "--port", "0",
        cwd=tmp_path,
    )  # fmt: skip
    assert_one_line(code, stderr, "no API token exists")
    assert snapshot(tmp_path) == before
    assert ("table", "schema_migrations") not in schema_objects(f"sqlite:///{path}")


def test_a_node_off_loopback_starts_once_a_token_exists(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'o.db'}"
    secret = create_token(url, "ops", "admin", tmp_path)
    server = start_server(url, tmp_path, "--host", "0.0.0.0")
    try:
        assert server.request("GET", "/metrics")[0] == 401
        headers = {"Authorization": f"Bearer {secret}"}
        assert server.request("GET", "/metrics", headers=headers)[0] == 200
    finally:
        assert server.terminate() == 0
