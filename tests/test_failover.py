"""Failover: the PostgreSQL primary SIGKILLed under load, its synchronous standby promoted.

The test starts its own pair of PostgreSQL clusters in a temporary folder, on free
ports: a primary (``synchronous_standby_names = '*'``, ``synchronous_commit = on``)
and a standby cloned from it with ``pg_basebackup -R``. Two ``orderlog serve`` nodes
are given both hosts in one URL with ``target_session_attrs=read-write``, so libpq
connects to whichever of them is the primary. Each node takes a sustained load;
mid-burst the primary's postmaster is SIGKILLed, ``/readyz`` must turn 503 while no
primary exists, the standby is promoted, and the nodes must come back by themselves.

Afterwards, read from the new primary's log itself: every order answered 201 has
exactly one OrderPlaced and one OrderCompleted, no order is completed twice, and
positions are unique. Answers other than 201 while there is no primary must be 503
problems (append-failed or outcome-unknown), and an outcome-unknown order sent again
with the order_id it names answers 200 or 201 and then exists exactly once.

``initdb`` refuses to run as root, so the clusters run as the ``postgres`` user
through ``runuser``: the test needs root, that user and PostgreSQL's binaries. Where
they are missing it is skipped, saying why; with ORDERLOG_TEST_REQUIRE_SERVERS=1 (CI)
it fails instead.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from bench import loadgen
from orderlog.domain.errors import ConcurrencyError, OutcomeUnknownError, StoreUnavailableError
from orderlog.domain.events import OrderPlaced
from orderlog.storage.database import open_database
from orderlog.storage.store import EventStore
from tests.support import (
    BackgroundLoad,
    ServerProcess,
    all_done,
    raw_fetch,
    restartable_port,
    start_server,
    total_orders,
    wait_for,
)

pytestmark = pytest.mark.slow

DATABASE = "orderlog"
CONNECTIONS = 6  # per node
NODE_FLAGS = (
    "--processing-delay", "0.05",
    "--db-timeout", "2",
    "--sweep-interval", "0.2",
    "--pending-grace", "1",
    "--claim-timeout", "3",
    "--threads", "8",
)  # fmt: skip
# Orders acknowledged on each node before the primary is killed, and after readiness.
BEFORE_KILL = 150
AFTER_PROMOTION = 150
PG_WAIT = 60  # seconds for pg_ctl and pg_basebackup
# libpq parameters for the test's own connections: no wait of the test is unbounded.
BOUNDED = "connect_timeout=10&options=-c%20statement_timeout%3D30000"


def _postgres_bin() -> Path | None:
    """The folder of PostgreSQL's server programs (initdb, pg_ctl, pg_basebackup)."""
    found = shutil.which("initdb")
    if found:
        folder = Path(found).resolve().parent
        if (folder / "pg_basebackup").exists():
            return folder
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    return candidates[-1].parent if candidates else None


def _missing() -> str | None:
    """Why the pair cannot be started here, or None."""
    if os.geteuid() != 0:
        return "needs root (to run initdb and postgres as the postgres user through runuser)"
    if shutil.which("runuser") is None:
        return "runuser is not installed"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "there is no postgres user"
    if _postgres_bin() is None:
        return "PostgreSQL's server programs (initdb, pg_ctl, pg_basebackup) are not installed"
    return None


@dataclass
class Cluster:
    """One PostgreSQL cluster: its data folder and port."""

    name: str
    data: Path
    port: int

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def url(self, database: str = DATABASE) -> str:
        """This cluster alone; the test's own statements are bounded too."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}?{BOUNDED}"


class PostgresPair:
    """A primary and its synchronous standby, run as ``postgres`` in a temporary folder."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        # Not pytest's tmp_path: its folders are root's alone, and postgres must enter.
        self.root = Path(tempfile.mkdtemp(prefix="orderlog-failover-"))
        user = pwd.getpwnam("postgres")
        os.chown(self.root, user.pw_uid, user.pw_gid)
        self.primary = Cluster("primary", self.root / "primary", restartable_port())
        self.standby = Cluster("standby", self.root / "standby", restartable_port())

    def url(self) -> str:
        """What the nodes are given: both hosts, and only a primary will do."""
        hosts = f"127.0.0.1:{self.primary.port},127.0.0.1:{self.standby.port}"
        return f"postgresql://postgres@{hosts}/{DATABASE}?target_session_attrs=read-write"

    def _run(self, *args: str, timeout: float = PG_WAIT) -> None:
        done = subprocess.run(
            ["runuser", "-u", "postgres", "--", *args],
            cwd=self.root, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        if done.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")

    def _settings(self, cluster: Cluster, **values: str) -> None:
        lines = [f"{key} = {value}" for key, value in values.items()]
        with open(cluster.data / "postgresql.conf", "a") as conf:  # later lines win
            conf.write("\n".join(["", *lines, ""]))

    def _pg_ctl(self, cluster: Cluster, *args: str) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(cluster.data), *args)

    def start(self) -> PostgresPair:
        primary, standby = self.primary, self.standby
        self._run(
            str(self.bin / "initdb"), "-D", str(primary.data), "-U", "postgres",
            "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C",
        )  # fmt: skip
        self._settings(
            primary,
            listen_addresses="'127.0.0.1'",
            port=str(primary.port),
            unix_socket_directories=f"'{self.root}'",
            shared_buffers="32MB",
            max_connections="100",
            wal_level="replica",
            max_wal_senders="4",
        )
        self._start(primary)
        raw_fetch(primary.url("postgres"), f"CREATE DATABASE {DATABASE}")
        self._run(
            str(self.bin / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary.port),
            "-U", "postgres", "-D", str(standby.data), "-R", "-X", "stream",
            "--checkpoint=fast", "--no-sync",
        )  # fmt: skip
        self._settings(standby, port=str(standby.port))
        self._start(standby)
        # Only now, with the standby attached (a commit would wait for one until then): a
        # commit is answered once the standby has its WAL on disk, so what was
        # acknowledged survives the primary. The standby's copy of the settings names
        # no synchronous standby: once promoted it has none, and naming one would hold
        # every commit until one attached.
        self._settings(primary, synchronous_standby_names="'*'", synchronous_commit="on")
        self._pg_ctl(primary, "reload")
        wait_for(
            lambda: (
                raw_fetch(primary.url(), "SELECT sync_state FROM pg_stat_replication")
                == [("sync",)]
            ),
            timeout=PG_WAIT,
            what="the standby replicating synchronously",
        )
        return self

    def _start(self, cluster: Cluster) -> None:
        log = self.root / f"{cluster.name}.log"
        self._pg_ctl(cluster, "start", "-w", "-t", str(PG_WAIT), "-l", str(log))

    def kill_primary(self) -> None:
        """SIGKILL the primary's postmaster: no shutdown of any kind."""
        pid = self.primary.postmaster_pid()
        assert pid is not None, "the primary is not running"
        os.kill(pid, signal.SIGKILL)

    @contextlib.contextmanager
    def standby_stalled(self) -> Iterator[None]:
        """The standby's WAL receiver stopped (SIGSTOP): the primary's commits wait for it."""
        ((pid,),) = raw_fetch(self.standby.url("postgres"), "SELECT pid FROM pg_stat_wal_receiver")
        os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(pid, signal.SIGCONT)

    def promote_standby(self) -> None:
        self._pg_ctl(self.standby, "promote", "-w", "-t", str(PG_WAIT))

    def stop(self) -> None:
        """Stop both clusters at once and remove their folder, whatever state they are in."""
        for cluster in (self.standby, self.primary):
            pid = cluster.postmaster_pid()
            if pid is None:
                continue
            with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
                self._pg_ctl(cluster, "stop", "-m", "immediate", "-w", "-t", "30")
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)  # still there: pg_ctl could not stop it
        shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        return "\n".join(
            f"--- {name}:\n{(self.root / f'{name}.log').read_text(errors='replace')[-4000:]}"
            for name in ("primary", "standby")
            if (self.root / f"{name}.log").exists()
        )


@pytest.fixture
def postgres_pair() -> Iterator[PostgresPair]:
    """A running primary and synchronous standby, stopped and removed afterwards."""
    reason = _missing()
    if reason is not None:
        if os.environ.get("ORDERLOG_TEST_REQUIRE_SERVERS") == "1":
            pytest.fail(f"the failover test is required here but cannot run: {reason}")
        pytest.skip(f"failover test skipped: {reason}")
    bin_dir = _postgres_bin()
    assert bin_dir is not None
    pair = PostgresPair(bin_dir)
    try:
        yield pair.start()
    finally:
        pair.stop()


def placed(order_id: str) -> OrderPlaced:
    return OrderPlaced(order_id, 7, ("i1",), "1.00")


def order_body(prefix: str, number: int) -> dict[str, Any]:
    return {
        "order_id": f"{prefix}-{number:06d}",
        "user_id": number % 97,
        "item_ids": ["i1", "i2"],
        "total_amount": f"{number % 500}.25",
    }


def placing(prefix: str) -> Any:
    def make(number: int) -> loadgen.Request:
        return ("POST", "/orders", orjson.dumps(order_body(prefix, number)))

    return make


def ready(node: ServerProcess) -> bool:
    try:
        return node.request("GET", "/readyz", timeout=5)[0] == 200
    except OSError:
        return False


def problem_type(response: loadgen.Response) -> str:
    """The slug of a problem answer ('append-failed'...), or what else it was."""
    if not response.headers.get("content-type", "").startswith("application/problem+json"):
        return f"not a problem: {response.headers.get('content-type')}"
    return str(response.json()["type"]).rsplit(":", 1)[-1]


def test_acknowledged_orders_survive_the_primary_being_killed_and_its_standby_promoted(
    postgres_pair: PostgresPair, tmp_path: Path
) -> None:
    pair = postgres_pair
    started = time.monotonic()
    url = pair.url()
    nodes = [
        start_server(url, tmp_path / name, "--node-id", name, *NODE_FLAGS)
        for name in ("node-a", "node-b")
    ]
    loads = [
        BackgroundLoad(node.host, node.port, placing(name), CONNECTIONS)
        for node, name in zip(nodes, ("a", "b"), strict=True)
    ]
    timings: dict[str, float] = {}
    try:
        for load in loads:
            load.start()
        for node in nodes:
            node.wait_until(lambda n: total_orders(n) >= BEFORE_KILL, timeout=60)

        pair.kill_primary()  # mid-burst: both loads are running
        killed = time.monotonic()
        for node in nodes:
            node.wait_until(lambda n: not ready(n), timeout=15)
        timings["not_ready_after_kill_s"] = time.monotonic() - killed

        pair.promote_standby()
        promoted = time.monotonic()
        for node in nodes:
            node.wait_until(ready, timeout=30)
        back = time.monotonic()
        timings["ready_after_promotion_s"] = back - promoted
        timings["not_ready_s"] = back - killed

        # The nodes take orders again, on the new primary.
        after = [total_orders(node) for node in nodes]
        for node, count in zip(nodes, after, strict=True):
            node.wait_until(lambda n, c=count: total_orders(n) >= c + AFTER_PROMOTION, timeout=60)
        for load in loads:
            load.stop()
        responses = {name: load.responses() for name, load in zip("ab", loads, strict=True)}

        # Orders whose outcome was unknown, sent again with the order_id they carry.
        unknown: dict[str, dict[str, Any]] = {}
        for name, answers in responses.items():
            for number, response in enumerate(answers):
                if response.status == 503 and problem_type(response) == "outcome-unknown":
                    order_id = response.json()["order_id"]
                    assert order_id == order_body(name, number)["order_id"], response.body
                    unknown[order_id] = order_body(name, number)
        retried = Counter()
        for body in unknown.values():
            status, _, answer = nodes[0].request("POST", "/orders", body)
            assert status in (200, 201), answer
            retried[status] += 1

        for node in nodes:
            node.wait_until(all_done, timeout=120)
        for node in nodes:
            assert node.terminate() == 0, node.log()
    except BaseException:
        print(pair.log())
        raise
    finally:
        for load in loads:
            load.stop()
        for node in nodes:
            if node.process.poll() is None:
                node.kill()

    acknowledged: set[str] = set()
    answers: Counter[str] = Counter()
    for name, answered in responses.items():
        for number, response in enumerate(answered):
            if response.status == 201:
                acknowledged.add(order_body(name, number)["order_id"])
                answers["201"] += 1
            elif response.status == 503:
                answers[f"503 {problem_type(response)}"] += 1
            else:
                answers[f"{response.status} {response.body[:200]!r}"] += 1
    unexpected = {
        kind: count
        for kind, count in answers.items()
        if kind not in ("201", "503 append-failed", "503 outcome-unknown", "503 store-unavailable")
    }
    assert unexpected == {}, f"answers other than 201 or a 503 problem: {dict(answers)}"
    assert answers["201"] > 2 * (BEFORE_KILL + AFTER_PROMOTION) - 1

    rows = raw_fetch(
        pair.standby.url(), "SELECT position, stream_id, type FROM events ORDER BY position"
    )
    positions = [position for position, _, _ in rows]
    assert len(positions) == len(set(positions))
    streams: dict[str, list[str]] = defaultdict(list)
    for _, stream_id, kind in rows:
        streams[stream_id].append(kind)
    assert sorted(acknowledged - streams.keys()) == [], "acknowledged but not in the new log"
    assert sorted(set(unknown) - streams.keys()) == [], "retried but not in the new log"
    wrong = {
        stream: kinds
        for stream, kinds in streams.items()
        if kinds.count("OrderPlaced") != 1 or kinds.count("OrderCompleted") != 1
    }
    assert dict(list(wrong.items())[:10]) == {}, f"{len(wrong)} not placed and completed once"

    print(
        orjson.dumps(
            {
                "answers": dict(answers),
                "outcome_unknown_retried": dict(retried),
                "orders_in_log": len(streams),
                "events": len(rows),
                **{key: round(value, 2) for key, value in timings.items()},
                "seconds": round(time.monotonic() - started, 1),
            }
        ).decode()
    )


def test_a_commit_held_by_a_stalled_synchronous_standby_is_never_answered_as_failed(
    postgres_pair: PostgresPair,
) -> None:
    """The primary has the commit on disk and waits for the standby to confirm it: the
    transaction will be in the log as soon as the standby answers (or the wait is given
    up), so "failed, safe to send again" would be a lie; "outcome unknown" is the truth."""
    pair = postgres_pair
    store = EventStore(open_database(pair.url(), timeout=1.0), group_commit=False, timeout=1.0)
    store.open()
    try:
        store.append("before", [placed("before")], 0)
        with pair.standby_stalled():
            with pytest.raises(StoreUnavailableError) as caught:
                store.append("held", [placed("held")], 0)
            answered = caught.value
        # The standby answers again: the commit it held is in the log.
        wait_for(
            lambda: (
                raw_fetch(pair.primary.url(), "SELECT stream_id FROM events WHERE version = 1")
                == [("before",), ("held",)]
            ),
            timeout=30,
            what="the held commit in the log once the standby answers",
        )
        # Sent again, the stream's version decides: it is there, once.
        with pytest.raises(ConcurrencyError):
            store.append("held", [placed("held")], 0)
    finally:
        store.close()
    assert isinstance(answered, OutcomeUnknownError), (
        f"answered {type(answered).__name__}: {answered}\n{pair.log()}"
    )
    assert answered.stream_id == "held"
