"""A full disk under the log: reported as itself, once, and no acknowledged order lost.

SQLite's database sits on a real 2 MB tmpfs that a filler file fills; freeing the
filler is what an operator does. PostgreSQL's and MariaDB's disk-full errors are
raised by the servers themselves (RAISE ... USING ERRCODE, SIGNAL ... MYSQL_ERRNO),
so their classification by code is checked on the real drivers' exceptions.

Mounting needs root: without it (or when mount fails) the tmpfs tests are skipped
with the reason, unless ORDERLOG_TEST_REQUIRE_TMPFS=1 (CI), where that fails them.
"""

from __future__ import annotations

import errno
import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import peewee
import pytest

from orderlog.domain.errors import StoreFullError, StoreUnavailableError
from orderlog.domain.events import OrderPlaced
from tests.support import (
    ServerProcess,
    all_done,
    integrity_problems,
    make_store,
    start_server,
)

FULL_LINE = "is full (SQLITE_FULL / ENOSPC): appends fail until space is freed; free space on"
RECOVERED_LINE = "appends succeed again"
STORE_FULL = "urn:orderlog:problem:store-full"
# Left free by the filler at first, so the log fills while the server is taking orders;
# below the store's ROOM_TO_RESUME, so the full disk is not taken for one with room.
HEADROOM = 512 * 1024
MAX_POSTS = 3000  # the 2 MB disk fills long before: this bounds the loop, nothing more


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A fresh 2 MB tmpfs, unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    why = None
    if os.geteuid() != 0:
        why = "mounting a tmpfs needs root"
    else:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        if mounted.returncode != 0:
            why = f"mount -t tmpfs failed: {mounted.stderr.strip()}"
    if why:
        if os.environ.get("ORDERLOG_TEST_REQUIRE_TMPFS") == "1":
            pytest.fail(f"a tmpfs is required here (ORDERLOG_TEST_REQUIRE_TMPFS=1): {why}")
        pytest.skip(f"full-disk tests skipped: {why}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True, timeout=30)


def fill(disk: Path, leave: int = 0) -> Path:
    """A file taking the disk's free space but about ``leave`` bytes; delete it to free them."""
    filler = disk / "filler"
    stat = os.statvfs(disk)
    wanted = max(0, stat.f_bavail * stat.f_frsize - leave)
    chunk = bytes(64 * 1024)
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        while wanted > 0:
            try:
                wanted -= os.write(fd, chunk[: min(len(chunk), wanted)])
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    finally:
        os.close(fd)
    return filler


def placed(order_id: str) -> list[OrderPlaced]:
    return [OrderPlaced(order_id, 7, ("i1",), "1.00")]


def messages(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


@pytest.mark.parametrize("group_commit", [True, False], ids=["group-commit", "direct"])
def test_a_full_disk_raises_store_full_error_caused_by_the_real_error(
    small_disk: Path, caplog: pytest.LogCaptureFixture, group_commit: bool
) -> None:
    caplog.set_level(logging.INFO, logger="orderlog")
    store = make_store(f"sqlite:///{small_disk / 'orderlog.db'}", group_commit=group_commit)
    try:
        store.append("o-0", placed("o-0"), 0)
        filler = fill(small_disk)
        kept, refused = ["o-0"], []
        for n in range(1, MAX_POSTS):
            try:
                store.append(f"o-{n}", placed(f"o-{n}"), 0)
                kept.append(f"o-{n}")
            except StoreUnavailableError as exc:
                refused.append(exc)
                if len(refused) == 5:
                    break
        assert refused, "the disk never filled"

        assert all(isinstance(exc, StoreFullError) for exc in refused), refused
        cause = refused[0].__cause__
        assert isinstance(cause, peewee.OperationalError), repr(cause)
        assert "full" in str(cause), f"the cause is not the real error: {cause!r}"
        assert not any("cannot rollback" in str(exc) for exc in refused), refused
        lines = messages(caplog, FULL_LINE)
        assert len(lines) == 1, lines  # once, not once per failed append
        assert str(small_disk / "orderlog.db") in lines[0] and str(small_disk) in lines[0]
        assert store.writable() is False

        filler.unlink()
        assert store.writable() is True
        store.append("after", placed("after"), 0)
        assert len(messages(caplog, RECOVERED_LINE)) == 1
        assert [store.stream_version(order_id) for order_id in kept] == [1] * len(kept)
    finally:
        store.close()


RAISE_DISK_FULL = {
    # What the servers raise when their disk is full, raised by the servers themselves.
    "postgres": "DO $$ BEGIN RAISE EXCEPTION 'could not extend file: No space left on device' "
    "USING ERRCODE = 'disk_full'; END $$",
    "mysql": "SIGNAL SQLSTATE 'HY000' SET MYSQL_ERRNO = 1114, MESSAGE_TEXT = 'The table is full'",
}


@pytest.mark.parametrize("backend", ["postgres", "mysql"])
def test_a_server_databases_disk_full_error_is_store_full_error(
    database_url: str, backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="orderlog")
    store = make_store(database_url)
    try:
        with pytest.raises(StoreUnavailableError) as raised, store.writing() as cursor:
            cursor.execute(RAISE_DISK_FULL[backend])
        assert isinstance(raised.value, StoreFullError), repr(raised.value)
        assert isinstance(raised.value.__cause__, peewee.DatabaseError)
        assert len(messages(caplog, "is full")) == 1
        # The server is not really full: readiness's trial write succeeds, and says so.
        assert store.writable() is True
        assert len(messages(caplog, RECOVERED_LINE)) == 1
        store.append("o-1", placed("o-1"), 0)
    finally:
        store.close()


def post(server: ServerProcess, order_id: str) -> tuple[int, dict[str, str], object]:
    body = {"order_id": order_id, "user_id": 7, "item_ids": ["i1"], "total_amount": "1.00"}
    return server.request("POST", "/orders", body)


def ready(server: ServerProcess) -> tuple[int, dict[str, object]]:
    status, _, body = server.request("GET", "/readyz")
    return status, body  # type: ignore[return-value]


def test_a_full_disk_is_reported_once_stops_readiness_and_loses_no_acknowledged_order(
    small_disk: Path, tmp_path: Path
) -> None:
    url = f"sqlite:///{small_disk / 'orderlog.db'}"
    server = start_server(url, tmp_path / "logs", "--processing-delay", "0")
    try:
        filler = fill(small_disk, leave=HEADROOM)
        accepted: list[str] = []
        refused: list[str] = []
        for n in range(MAX_POSTS):
            status, headers, body = post(server, f"o-{n}")
            if status == 201:
                accepted.append(f"o-{n}")
                continue
            assert status == 503, (status, body)
            assert headers["content-type"] == "application/problem+json", headers
            assert isinstance(body, dict) and body["type"] == STORE_FULL, body
            assert "retry-after" in headers, headers
            refused.append(f"o-{n}")
            if len(refused) == 20:
                break
        assert refused, "the disk never filled"
        assert accepted, "the disk filled before any order was taken"

        # Readiness reads the database probe's last answer (it asks once a second).
        status, readiness = server.wait_until(lambda s: (r := ready(s))[0] == 503 and r, 10)
        assert readiness["writable"] is False and readiness["database"] is True, readiness

        filler.unlink()
        server.wait_until(lambda s: ready(s)[0] == 200, timeout=30)
        assert ready(server)[1]["writable"] is True
        for n in range(5):
            status, _, body = post(server, f"after-{n}")
            assert status == 201, body
            accepted.append(f"after-{n}")
        server.wait_until(all_done, timeout=60)
        for order_id in accepted:  # a 201 said it was written: it is in the log, and done
            status, _, body = server.request("GET", f"/orders/{order_id}")
            assert status == 200 and body["status"] == "Completed", (order_id, body)
        for order_id in refused:  # a 503 said it was not written: it is not in the log
            assert server.request("GET", f"/orders/{order_id}")[0] == 404, order_id

        log = server.log()
        assert "cannot rollback" not in log, log
        full_lines = [line for line in log.splitlines() if FULL_LINE in line]
        assert len(full_lines) == 1, full_lines  # once, not once per failed append
        assert str(small_disk / "orderlog.db") in full_lines[0], full_lines
        assert RECOVERED_LINE in log, log
    finally:
        server.terminate()
    assert integrity_problems(url) == []
