"""One process per node id on a database, and no offline rebuild under a running server.

Real ``orderlog serve`` processes on each backend. A second server with a node id
that a live one holds must refuse to start in one line (it would otherwise take
the live node's claims as its own); the id is free again at once when its process
dies, even by SIGKILL; different ids serve side by side. ``rebuild --offline``
refuses while any server uses the database and changes nothing, and runs once the
servers are gone; while it runs, no server starts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from orderlog.storage.database_url import parse_url
from orderlog.storage.node_lock import mysql_lock_name, offline_rebuild_guard
from tests.support import (
    ROOT,
    ServerProcess,
    all_done,
    raw_connection,
    raw_fetch,
    start_server,
    wait_for,
)

SERVING = "orderlog serving on"


def body(order_id: str) -> dict[str, object]:
    return {"order_id": order_id, "user_id": 1, "item_ids": ["x"], "total_amount": "2.50"}


def orderlog_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERLOG_")}
    return {**env, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


def serve_until_refused(database_url: str, cwd: Path, *flags: str) -> tuple[int, str]:
    """Start ``orderlog serve`` and wait until it exits, or fail as soon as it serves."""
    cwd.mkdir(parents=True, exist_ok=True)
    out, err = cwd / "stdout.log", cwd / "stderr.log"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "api", "serve", "--database", database_url, "--port", "0",
             "--log-level", "WARNING", *flags],
            cwd=cwd, stdout=stdout, stderr=stderr, env=orderlog_env(),
        )  # fmt: skip
    try:
        wait_for(
            lambda: process.poll() is not None or SERVING in out.read_text(),
            what="the second server to exit or serve",
        )
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
    assert SERVING not in out.read_text(), f"it started serving:\n{err.read_text()}"
    return process.returncode, err.read_text()


def id_held(database_url: str, backend: str, node: str) -> bool:
    """Whether the database shows the node id's lock held (by anyone)."""
    with raw_connection(database_url) as conn:
        cursor = conn.cursor()
        if backend == "postgres":
            cursor.execute(
                "SELECT COUNT(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
                "WHERE l.locktype = 'advisory' AND l.granted AND l.mode = 'ExclusiveLock' "
                "AND d.datname = current_database()"
            )
        else:
            name = mysql_lock_name(parse_url(database_url).database, node)
            cursor.execute("SELECT IS_USED_LOCK(%s) IS NOT NULL", (name,))
        ((held,),) = cursor.fetchall()
        cursor.close()
    return bool(held)


def rebuild_offline(database_url: str, cwd: Path) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "api", "rebuild", "--offline", "--quiet",
         "--database", database_url],
        cwd=cwd, capture_output=True, text=True, timeout=120, env=orderlog_env(),
    )  # fmt: skip
    return done.returncode, done.stderr


def assert_one_line(code: int, stderr: str, *fragments: str) -> None:
    assert code != 0, stderr
    assert "Traceback" not in stderr, stderr
    assert stderr.count("\n") == 1 and stderr.startswith("orderlog: "), stderr
    for fragment in fragments:
        assert fragment in stderr, stderr


def place(server: ServerProcess, *order_ids: str) -> None:
    for order_id in order_ids:
        status, _, answer = server.request("POST", "/orders", body(order_id))
        assert status == 201, answer


def claimed_by(database_url: str) -> set[str]:
    """The node part of every worker id in the log's OrderProcessingStarted events."""
    rows = raw_fetch(database_url, "SELECT data FROM events WHERE type = 'OrderProcessingStarted'")
    return {orjson.loads(data)["worker_id"].rsplit("/", 2)[0] for (data,) in rows}


def test_a_second_server_with_a_node_id_in_use_is_refused_and_the_first_keeps_serving(
    database_url: str, tmp_path: Path
) -> None:
    first = start_server(
        database_url, tmp_path / "first", "--node-id", "twin", "--processing-delay", "0.3"
    )
    try:
        place(first, *(f"before-{n}" for n in range(5)))
        code, stderr = serve_until_refused(
            database_url, tmp_path / "second", "--node-id", "twin",
            "--pending-grace", "0", "--claim-timeout", "0",
        )  # fmt: skip
        assert_one_line(
            code, stderr, "node id 'twin' is in use by another running process", "--node-id"
        )
        place(first, *(f"after-{n}" for n in range(5)))
        first.wait_until(all_done)
        assert first.request("GET", "/readyz")[0] == 200
    finally:
        assert first.terminate() == 0
    completed = raw_fetch(database_url, "SELECT COUNT(*) FROM events WHERE type = 'OrderCompleted'")
    assert completed == [(10,)]


def test_a_node_id_is_free_again_at_once_when_its_process_is_killed(
    database_url: str, tmp_path: Path
) -> None:
    first = start_server(database_url, tmp_path / "first", "--node-id", "phoenix")
    place(first, "o-1")
    first.kill()
    started = time.monotonic()
    second = start_server(database_url, tmp_path / "second", "--node-id", "phoenix")
    try:
        # Start-up itself takes a second or two; a lock left behind would never clear.
        assert time.monotonic() - started < 30
        second.wait_until(all_done)
    finally:
        assert second.terminate() == 0


def test_two_node_ids_serve_one_database_side_by_side(database_url: str, tmp_path: Path) -> None:
    nodes = [
        start_server(database_url, tmp_path / name, "--node-id", name) for name in ("left", "right")
    ]
    try:
        for node in nodes:
            place(node, *(f"{node.port}-{n}" for n in range(3)))
        for node in nodes:
            node.wait_until(all_done)
    finally:
        for node in nodes:
            assert node.terminate() == 0
    assert claimed_by(database_url) <= {"left", "right"}


def read_models(database_url: str) -> list[object]:
    return [
        raw_fetch(database_url, "SELECT COUNT(*), MAX(position) FROM events"),
        raw_fetch(database_url, "SELECT name, generation FROM projections ORDER BY name"),
        raw_fetch(database_url, "SELECT order_id, status FROM order_status ORDER BY order_id"),
    ]


def test_offline_rebuild_is_refused_while_a_server_runs_and_changes_nothing(
    database_url: str, tmp_path: Path
) -> None:
    server = start_server(database_url, tmp_path / "server", "--node-id", "busy")
    try:
        place(server, *(f"o-{n}" for n in range(5)))
        server.wait_until(all_done)
        assert server.terminate() == 0  # stores its read models, so there is one to compare
        server = start_server(database_url, tmp_path / "server", "--node-id", "busy")
        before = read_models(database_url)
        code, stderr = rebuild_offline(database_url, tmp_path)
        assert_one_line(code, stderr, "a server is using this database", "orderlog rebuild")
        assert read_models(database_url) == before
        assert server.request("GET", "/readyz")[0] == 200
    finally:
        assert server.terminate() == 0
    code, stderr = rebuild_offline(database_url, tmp_path)
    assert code == 0, stderr


def test_no_server_starts_while_an_offline_rebuild_runs(database_url: str, tmp_path: Path) -> None:
    start_server(database_url, tmp_path / "made", "--node-id", "maker").terminate()
    with offline_rebuild_guard(database_url):
        code, stderr = serve_until_refused(database_url, tmp_path / "refused", "--node-id", "n")
    assert_one_line(code, stderr, "an offline rebuild is running on this database")
    start_server(database_url, tmp_path / "after", "--node-id", "n").terminate()


@pytest.mark.parametrize("backend", ["postgres", "mysql"])
def test_a_node_takes_its_id_again_after_the_lock_connection_is_cut(
    database_url: str, backend: str, tmp_path: Path
) -> None:
    first = start_server(database_url, tmp_path / "first", "--node-id", "steady")
    try:
        with raw_connection(database_url) as conn:  # what a database restart does to it
            cursor = conn.cursor()
            if backend == "postgres":
                cursor.execute(
                    "SELECT pg_terminate_backend(l.pid) FROM pg_locks l "
                    "JOIN pg_database d ON d.oid = l.database "
                    "WHERE l.locktype = 'advisory' AND d.datname = current_database()"
                )
            else:
                name = mysql_lock_name(parse_url(database_url).database, "steady")
                cursor.execute("SELECT IS_USED_LOCK(%s)", (name,))
                ((holder,),) = cursor.fetchall()
                cursor.execute(f"KILL {int(holder)}")
            cursor.close()
        # The node's next check (its database probe, once a second) notices and takes the
        # id again: the database shows it held.
        wait_for(lambda: id_held(database_url, backend, "steady"), what="the id taken again")
        assert first.request("GET", "/readyz")[2].get("node_lock") is True
        code, stderr = serve_until_refused(database_url, tmp_path / "second", "--node-id", "steady")
        assert_one_line(code, stderr, "node id 'steady' is in use")
        place(first, "o-1")
        first.wait_until(all_done)
    finally:
        assert first.terminate() == 0
