"""``orderlog backup``: a consistent copy of the SQLite database, taken while the server runs.

The acceptance scenario runs the real command as its own process against a real
server under load, then serves the copy with a new server. The refusals (an
existing file, a missing database or directory, a server database) are checked
through the command's entry point: one line on stderr, a non-zero exit, nothing
written.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from api.cli import main
from bench import loadgen
from orderlog.domain.events import OrderPlaced
from orderlog.storage.backup import backup
from orderlog.storage.row import COLUMN_LIST
from orderlog.storage.store import AppendRequest
from tests.support import (
    ROOT,
    BackgroundLoad,
    ServerProcess,
    all_done,
    integrity_problems,
    make_store,
    raw_connection,
    raw_fetch,
    start_server,
    total_orders,
    wait_for,
)

NODE = ("--node-id", "backup-node")  # the copy is served as the same node, restored
FIRST_ORDERS = 500
ONE_LINE_ERROR = re.compile(r"orderlog: [^\n]+ \([^\n]+\)\n")
# Orders with a hundred items each: a log of about 50 MB, whose copy takes long enough
# (about a second) to be caught in the middle.
BIG_LOG_ORDERS = 12_000
WIDE_ITEMS = tuple(f"item-{n:03d}-{'x' * 24}" for n in range(100))


def place(number: int) -> loadgen.Request:
    body = {"order_id": f"b-{number:06d}", "user_id": 3, "item_ids": ["i1"], "total_amount": "9.99"}
    return ("POST", "/orders", orjson.dumps(body))


def log_rows(url: str) -> list[tuple[Any, ...]]:
    return raw_fetch(url, f"SELECT {COLUMN_LIST} FROM events ORDER BY position")


def store_with_orders(url: str, count: int) -> None:
    store = make_store(url, group_commit=False)
    try:
        for n in range(count):
            store.append(f"o-{n}", [OrderPlaced(f"o-{n}", n, ("i1",), "1.00")], 0)
    finally:
        store.close()


def store_with_a_big_log(url: str, orders: int) -> None:
    """Wide orders appended in batches, through the store: tens of MB in a few seconds."""
    store = make_store(url, group_commit=False)
    try:
        for first in range(0, orders, 500):
            requests = [
                AppendRequest(f"w-{n:06d}", [OrderPlaced(f"w-{n:06d}", n, WIDE_ITEMS, "1.00")], 0)
                for n in range(first, min(first + 500, orders))
            ]
            for outcome in store.append_many(requests):
                if isinstance(outcome, Exception):
                    raise outcome
    finally:
        store.close()


def event_count(url: str) -> int:
    ((count,),) = raw_fetch(url, "SELECT COUNT(*) FROM events")
    return int(count)


def writing_started(folder: Path) -> bool:
    """Whether some file in ``folder`` (whatever its name) but a journal has bytes in it:
    a copy is being written there."""
    for path in folder.iterdir():
        if path.name.endswith("-journal"):
            continue
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_size > 0:
                return True
    return False


def head(server: ServerProcess) -> int:
    status, _, body = server.request("GET", "/events?after=0&limit=1")
    assert status == 200, body
    return body["head"]


def run_backup(*args: str) -> tuple[int, str, str]:
    """``python -m api backup`` as its own process: (exit status, stdout, stderr)."""
    result = subprocess.run(
        [sys.executable, "-m", "api", "backup", *args],
        cwd=ROOT,
        capture_output=True,
        timeout=120,
        check=False,
    )
    return result.returncode, result.stdout.decode(), result.stderr.decode()


@pytest.mark.slow
def test_a_backup_taken_under_load_serves_every_order_acknowledged_before_it(
    sqlite_url: str, tmp_path: Path
) -> None:
    copy = tmp_path / "backups" / "copy.db"
    copy.parent.mkdir()
    copy_url = f"sqlite:///{copy}"
    server = start_server(sqlite_url, tmp_path / "original", *NODE, "--processing-delay", "0.05")
    load = BackgroundLoad(server.host, server.port, lambda n: place(FIRST_ORDERS + n), 8)
    try:
        with raw_connection(sqlite_url) as reader:
            # A reader that stays open (as a long rebuild or a client paging /events
            # would) keeps every later commit in the WAL: no checkpoint moves it into
            # the database file past the reader's snapshot. So when the backup runs, the
            # orders live in the WAL alone, and a copy of the file by itself misses them.
            reader.execute("BEGIN")
            reader.execute("SELECT COUNT(*) FROM events").fetchone()
            first = loadgen.run(
                server.host, server.port, [place(n) for n in range(FIRST_ORDERS)], 50
            )
            assert [r.status for r in first] == [201] * FIRST_ORDERS
            load.start()
            server.wait_until(lambda s: total_orders(s) > FIRST_ORDERS + 100)
            # Every order acknowledged by now has its OrderPlaced at or before this position.
            before_backup = head(server)

            returncode, stdout, stderr = run_backup(str(copy), "--database", sqlite_url)

        after_backup = total_orders(server)
        server.wait_until(lambda s: total_orders(s) > after_backup + 100)  # still taking orders
        load.stop()
        answers = load.responses()
        server.wait_until(all_done)
    finally:
        load.stop()
        exit_status = server.terminate()
    assert exit_status == 0, server.log()

    assert (returncode, stderr) == (0, ""), stderr
    copied = log_rows(copy_url)
    copied_head = copied[-1][0]
    assert stdout == (
        f"wrote {copy}: a consistent copy of {tmp_path / 'orderlog.db'}, "
        f"the log up to position {copied_head} ({copy.stat().st_size} bytes)\n"
    )
    assert not Path(f"{copy}-wal").exists()  # one self-contained file
    assert integrity_problems(copy_url) == []
    # The copy is the log as one commit left it: exactly the original's first events.
    original = log_rows(sqlite_url)
    assert before_backup <= copied_head < len(original)
    assert copied == original[:copied_head]

    placed_at = {row[1]: row[0] for row in original if row[3] == "OrderPlaced"}
    acknowledged = [f"b-{n:06d}" for n in range(FIRST_ORDERS)] + [
        f"b-{FIRST_ORDERS + n:06d}" for n, r in enumerate(answers) if r.status == 201
    ]
    acknowledged_before = [o for o in acknowledged if placed_at[o] <= before_backup]
    assert len(acknowledged_before) > FIRST_ORDERS  # the load's orders too, not only the first
    history_at_backup: dict[str, list[dict[str, Any]]] = {}
    for position, stream_id, version, kind, data, metadata, _, event_version in copied:
        history_at_backup.setdefault(stream_id, []).append(
            {"position": position, "version": version, "type": kind, "data": orjson.loads(data)}
            | {"event_id": orjson.loads(metadata)["event_id"], "event_version": event_version}
        )

    restored = start_server(copy_url, tmp_path / "restored", *NODE, "--processing-delay", "0")
    try:
        restored.wait_until(all_done)
        for order_id in acknowledged_before:
            status, _, body = restored.request("GET", f"/orders/{order_id}/events")
            assert status == 200, (order_id, body)
            served = [
                {k: e[k] for k in ("position", "version", "type", "data", "event_version")}
                | {"event_id": e["metadata"]["event_id"]}
                for e in body["events"]
            ]
            at_backup = history_at_backup[order_id]
            assert served[: len(at_backup)] == at_backup, order_id
            types = [e["type"] for e in served]
            assert types.count("OrderPlaced") == types.count("OrderCompleted") == 1, types
            assert types[-1] == "OrderCompleted"
    finally:
        exit_status = restored.terminate()
    assert exit_status == 0, restored.log()
    print(
        f"backup under load: head {before_backup} when it started, copy up to {copied_head}, "
        f"original {len(original)} events; {len(acknowledged_before)} orders acknowledged "
        f"before it, {len(acknowledged)} in all"
    )


def test_backup_copies_the_whole_log_and_reports_its_last_position(
    sqlite_url: str, tmp_path: Path
) -> None:
    store_with_orders(sqlite_url, 20)
    copy = tmp_path / "copy.db"

    written = backup(sqlite_url, copy)

    assert (written.target, written.position, written.size) == (copy, 20, copy.stat().st_size)
    assert log_rows(f"sqlite:///{copy}") == log_rows(sqlite_url)
    assert integrity_problems(f"sqlite:///{copy}") == []


def start_big_backup(sqlite_url: str, tmp_path: Path) -> tuple[Path, Path, subprocess.Popen[bytes]]:
    """A log big enough that copying it takes a while, and ``orderlog backup`` of it to
    ``bk/k.db`` running; returns the folder, the backup's path and the process."""
    store_with_a_big_log(sqlite_url, BIG_LOG_ORDERS)
    folder = tmp_path / "bk"
    folder.mkdir()
    copy = folder / "k.db"
    command = [sys.executable, "-m", "api", "backup", str(copy), "--database", sqlite_url]
    running = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return folder, copy, running


@pytest.mark.parametrize("signal_number", [signal.SIGKILL, signal.SIGTERM], ids=lambda s: s.name)
def test_killed_backup_leaves_no_file_at_its_path(
    sqlite_url: str, tmp_path: Path, signal_number: signal.Signals
) -> None:
    folder, copy, running = start_big_backup(sqlite_url, tmp_path)
    try:
        wait_for(
            lambda: writing_started(folder) or running.poll() is not None,
            timeout=60,
            what="the backup to start writing",
        )
        running.send_signal(signal_number)
        running.wait(timeout=60)
    finally:
        if running.poll() is None:
            running.kill()
            running.wait(timeout=60)
    assert running.returncode == -signal_number, (
        f"the backup ended on its own ({running.returncode}) before it could be killed: "
        f"{running.stderr.read().decode() if running.stderr else ''}"
    )

    left = sorted(p.name for p in folder.iterdir())
    assert not os.path.lexists(copy), left
    assert left, "the kill left no partial copy beside the path: nothing to clean up"

    returncode, stdout, stderr = run_backup(str(copy), "--database", sqlite_url)
    assert (returncode, stderr) == (0, ""), stderr
    assert stdout.startswith(f"wrote {copy}: ")
    # The killed run's leftovers went with it: the folder holds the backup alone.
    assert sorted(p.name for p in folder.iterdir()) == ["k.db"]
    copy_url = f"sqlite:///{copy}"
    assert event_count(copy_url) == event_count(sqlite_url) == BIG_LOG_ORDERS
    assert integrity_problems(copy_url) == []


def test_a_file_made_at_the_path_during_a_backup_is_never_overwritten(
    sqlite_url: str, tmp_path: Path
) -> None:
    folder, copy, running = start_big_backup(sqlite_url, tmp_path)
    try:
        wait_for(lambda: writing_started(folder), timeout=60, what="the backup to start writing")
        with open(copy, "xb") as made:  # someone else's file, made while the copy is written
            made.write(b"not to be lost")
        _, stderr = running.communicate(timeout=120)
    finally:
        if running.poll() is None:
            running.kill()
            running.wait(timeout=60)

    assert running.returncode != 0
    assert ONE_LINE_ERROR.fullmatch(stderr.decode()), stderr
    assert f"{copy} already exists" in stderr.decode()
    assert copy.read_bytes() == b"not to be lost"
    assert sorted(p.name for p in folder.iterdir()) == ["k.db"]  # and no copy left beside it


def test_backup_removes_only_what_dead_backups_to_its_path_left(
    sqlite_url: str, tmp_path: Path
) -> None:
    store_with_orders(sqlite_url, 3)
    dead = subprocess.Popen([sys.executable, "-c", ""])  # its pid: no longer alive
    dead.wait(timeout=60)
    name = ".copy.db.orderlog-backup-{pid}-0123abcd.tmp"
    left_by_dead = tmp_path / (name.format(pid=dead.pid) + "-journal")  # its copy gone already
    # Named after a live process (this one): a backup still running.
    running = tmp_path / name.format(pid=os.getpid())
    # Named after a pid not alive here, but locked: a backup running where this process
    # cannot see it (another pid namespace).
    locked = tmp_path / name.format(pid=dead.pid).replace("0123abcd", "4567cdef")
    others = [  # not named as a backup to copy.db names its files
        tmp_path / ".copy.db.mine.tmp",
        tmp_path / f".other.db.orderlog-backup-{dead.pid}-0123abcd.tmp",
    ]
    for path in [left_by_dead, running, locked, *others]:
        path.write_bytes(b"someone's")

    with open(locked, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        backup(sqlite_url, tmp_path / "copy.db")

    assert sorted(tmp_path.glob(".*")) == sorted([running, locked, *others])
    assert all(path.read_bytes() == b"someone's" for path in [running, locked, *others])


@pytest.mark.parametrize("mode", [0o600, 0o640])
def test_backup_has_the_permissions_of_its_source(
    sqlite_url: str, tmp_path: Path, mode: int
) -> None:
    store_with_orders(sqlite_url, 1)
    (tmp_path / "orderlog.db").chmod(mode)

    written = backup(sqlite_url, tmp_path / "copy.db")

    assert written.target.stat().st_mode & 0o777 == mode


def test_backup_never_overwrites_a_file(
    sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store_with_orders(sqlite_url, 3)
    existing = tmp_path / "precious.db"
    existing.write_bytes(b"not to be lost")

    assert main(["backup", str(existing), "--database", sqlite_url]) != 0

    out, err = capsys.readouterr()
    assert out == ""
    assert ONE_LINE_ERROR.fullmatch(err), err
    assert f"{existing} already exists" in err
    assert existing.read_bytes() == b"not to be lost"


def test_backup_of_a_missing_database_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.db"

    assert main(["backup", str(tmp_path / "copy.db"), "--database", f"sqlite:///{missing}"]) != 0

    out, err = capsys.readouterr()
    assert out == ""
    assert ONE_LINE_ERROR.fullmatch(err), err
    assert f"no database at {missing}" in err
    assert sorted(tmp_path.iterdir()) == []


def test_backup_into_a_missing_directory_says_to_create_it(
    sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store_with_orders(sqlite_url, 1)

    assert main(["backup", str(tmp_path / "nowhere" / "copy.db"), "--database", sqlite_url]) != 0

    out, err = capsys.readouterr()
    assert out == ""
    assert ONE_LINE_ERROR.fullmatch(err), err
    assert "nowhere" in err and "create it first" in err


def test_backup_of_a_file_without_the_log_makes_no_copy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other.db"
    raw_fetch(f"sqlite:///{other}", "CREATE TABLE unrelated (x INTEGER)")

    assert main(["backup", str(tmp_path / "copy.db"), "--database", f"sqlite:///{other}"]) != 0

    out, err = capsys.readouterr()
    assert out == ""
    assert ONE_LINE_ERROR.fullmatch(err), err
    assert "holds no orderlog log" in err
    assert not (tmp_path / "copy.db").exists()


@pytest.mark.parametrize(
    ("url", "tool"),
    [
        ("postgresql://orders:s3cret@db.example:5433/orders", "pg_dump"),
        ("mysql://root:s3cret@db.example:3306/orders", "mariadb-dump"),
    ],
)
def test_backup_of_a_server_database_points_to_its_own_dump_tool(
    url: str, tool: str, tmp_path: Path
) -> None:
    returncode, stdout, stderr = run_backup(str(tmp_path / "copy.db"), "--database", url)

    assert returncode != 0
    assert stdout == ""
    assert ONE_LINE_ERROR.fullmatch(stderr), stderr
    assert f"use {tool}" in stderr and "db.example" in stderr and "orders" in stderr
    assert "s3cret" not in stderr
    assert not (tmp_path / "copy.db").exists()
