"""``orderlog serve --processes N``: one node served by N forked processes, as real processes.

Every test starts a real supervisor with 2 or 3 children over real HTTP on every
backend, and reads what happened from the log itself: a child SIGKILLed in the
middle of a burst of 1,000 orders comes back under its index and node id and
nothing acknowledged is lost or done twice; a SIGTERM drains every child and a
restart completes what was left; a SIGKILLed supervisor takes its children and
the port with it; a second server on the port is refused; a child that cannot
start stops the node. Which child answers a request is the kernel's choice, so
a test that needs a particular one asks ``/readyz`` (which names the process that
answered) until it has met it, within a bound.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench import loadgen
from tests.support import (
    ROOT,
    ServerProcess,
    all_done,
    dense,
    logged_positions,
    raw_fetch,
    restartable_port,
    start_server,
    wait_for,
)

PORT_IN_USE = "the port is in use"


def start(url: str, tmp_path: Path, *flags: str) -> ServerProcess:
    """``orderlog serve`` with these flags, its private directory in the test's own."""
    return start_server(url, tmp_path, *flags, env={"TMPDIR": str(tmp_path)})


def private_directories(tmp_path: Path, pid: int | None = None) -> list[Path]:
    prefix = "orderlog-supervisor-" + (f"{pid}-" if pid else "")
    return [path for path in tmp_path.iterdir() if path.name.startswith(prefix)]


def order_body(order_id: str) -> bytes:
    body = {"order_id": order_id, "user_id": 5, "item_ids": ["i1"], "total_amount": "3.50"}
    return orjson.dumps(body)


def readiness(server: ServerProcess) -> dict[str, Any]:
    """``/readyz`` on a fresh connection: any of the node's processes may answer."""
    status, _, body = server.request("GET", "/readyz", timeout=10)
    assert status == 200, body
    return body  # type: ignore[no-any-return]


def meet_every_process(server: ServerProcess, count: int) -> dict[int, dict[str, Any]]:
    """Ask ``/readyz`` until each of the ``count`` processes has answered; by index."""
    met: dict[int, dict[str, Any]] = {}

    def all_met() -> bool:
        body = readiness(server)
        met[body["process"]["index"]] = body
        return len(met) == count

    wait_for(all_met, timeout=60, what=f"an answer from each of {count} processes")
    return met


def children_of(pid: int) -> set[int]:
    """The live (not zombie) processes whose parent is ``pid``, from /proc."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        state, parent = stat.rsplit(")", 1)[1].split()[:2]
        if int(parent) == pid and state not in ("Z", "X"):
            found.add(int(entry.name))
    return found


def running(pid: int) -> bool:
    """Whether ``pid`` is a process that has not ended (a zombie has)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def events_by_order(url: str) -> dict[str, list[str]]:
    """Every stream in the log with its event types in version order."""
    streams: dict[str, list[str]] = defaultdict(list)
    for stream_id, kind in raw_fetch(url, "SELECT stream_id, type FROM events ORDER BY position"):
        streams[stream_id].append(kind)
    return dict(streams)


def assert_each_order_completed_exactly_once(url: str, acknowledged: set[str]) -> None:
    streams = events_by_order(url)
    assert acknowledged <= set(streams), (
        f"acknowledged, not in the log: {acknowledged - set(streams)}"
    )
    for order_id, kinds in streams.items():
        counts = Counter(kinds)
        assert kinds[0] == "OrderPlaced" and counts["OrderPlaced"] == 1, (order_id, kinds)
        assert counts["OrderCompleted"] == 1 and kinds[-1] == "OrderCompleted", (order_id, kinds)
    if dense(url):  # PostgreSQL's positions have gaps: they come from transaction ids
        positions = logged_positions(url)
        assert positions == list(range(1, len(positions) + 1))


def last_statuses(url: str) -> Counter[str]:
    """How many orders the log leaves in each status (by each stream's last event)."""
    streams = events_by_order(url)
    after = {
        "OrderPlaced": "Pending",
        "OrderProcessingStarted": "Processing",
        "OrderCompleted": "Completed",
    }
    return Counter(after[kinds[-1]] for kinds in streams.values())


def placed(url: str) -> int:
    return int(raw_fetch(url, "SELECT COUNT(*) FROM events WHERE type = 'OrderPlaced'")[0][0])


def in_hand_mid_burst(url: str, at_least: int) -> tuple[int, int] | None:
    """Once ``at_least`` orders are placed: (orders placed, index of a process holding
    claimed orders not yet completed), from the log; None before."""
    count = placed(url)
    if count < at_least:
        return None
    open_claims = raw_fetch(
        url,
        "SELECT metadata FROM events e WHERE type = 'OrderProcessingStarted' AND NOT EXISTS "
        "(SELECT 1 FROM events c WHERE c.stream_id = e.stream_id AND c.version > e.version)",
    )
    nodes = Counter(orjson.loads(metadata)["node"] for (metadata,) in open_claims)
    if not nodes:
        return None
    node, _ = nodes.most_common(1)[0]
    return count, int(node.rsplit("-", 1)[1])


def serve_command(url: str, *flags: str) -> list[str]:
    return [sys.executable, "-m", "api", "serve", "--database", url, "--log-level", "WARNING",
            *flags]  # fmt: skip


def run_serve(url: str, cwd: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """``orderlog serve`` expected to fail at start: its outcome, bounded."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(cwd)}
    env.pop("ORDERLOG_PORT", None)
    return subprocess.run(
        serve_command(url, *flags), cwd=cwd, env=env, capture_output=True, text=True, timeout=90
    )


@pytest.mark.slow
def test_a_child_killed_mid_burst_comes_back_as_itself_and_no_acknowledged_order_is_lost(
    database_url: str, tmp_path: Path
) -> None:
    server = start(
        database_url, tmp_path, "--processes", "2", "--node-id", "pk",
        "--processing-delay", "0.5", "--claim-timeout", "600",
    )  # fmt: skip
    try:
        before = meet_every_process(server, 2)
        assert {k: body["node"] for k, body in before.items()} == {1: "pk-1", 2: "pk-2"}
        pids = {k: body["process"]["pid"] for k, body in before.items()}
        assert set(pids.values()) == children_of(server.process.pid)
        assert all(body["processes"] == {"configured": 2, "serving": 2} for body in before.values())

        orders = [f"kill-{n:04d}" for n in range(1000)]
        requests = [("POST", "/orders", order_body(order_id)) for order_id in orders]
        answers: list[loadgen.Response] = []
        burst = threading.Thread(
            target=lambda: answers.extend(
                loadgen.run(server.host, server.port, requests, connections=100, timeout=60)
            )
        )
        burst.start()
        try:
            # The victim: a child with orders in hand (claimed, work not done), once a
            # fifth of the burst is in the log. Which child accepts which connection is
            # the kernel's choice, so one of them may have none.
            at_kill, victim = wait_for(lambda: in_hand_mid_burst(database_url, 200), timeout=60)
            os.kill(pids[victim], signal.SIGKILL)
        finally:
            burst.join(timeout=180)
        assert not burst.is_alive()
        assert at_kill < len(orders), "the burst was over before the kill"

        # Unanswered (status 0): the requests the killed child had in hand, at most one
        # per connection; each connection carried on through the other child.
        statuses = Counter(a.status for a in answers)
        assert set(statuses) <= {0, 201}, Counter(a.error or a.status for a in answers)
        assert statuses[0] <= 100, statuses
        acknowledged = {orders[n] for n, a in enumerate(answers) if a.status == 201}

        def child_back() -> dict[str, Any] | None:
            body = readiness(server)
            process = body["process"]
            back = process["index"] == victim and process["pid"] != pids[victim]
            return body if back and body["processes"]["serving"] == 2 else None

        again = wait_for(child_back, timeout=60, what="the killed process serving again")
        assert again["node"] == f"pk-{victim}"  # the same node id
        survivor = pids[3 - victim]
        assert children_of(server.process.pid) == {again["process"]["pid"], survivor}

        # Within the bound, long before any claim's lease ends: the killed process, started
        # again, took back the orders it had in hand, by its node id, and completed them.
        server.wait_until(all_done, timeout=120)
        assert_each_order_completed_exactly_once(database_url, acknowledged)
        assert set(events_by_order(database_url)) <= set(orders)
        claims = Counter(
            stream_id
            for stream_id, metadata in raw_fetch(
                database_url,
                "SELECT stream_id, metadata FROM events WHERE type = 'OrderProcessingStarted'",
            )
            if orjson.loads(metadata)["node"] == f"pk-{victim}"
        )
        assert any(count > 1 for count in claims.values()), "no claim taken back"
        assert server.terminate(timeout=60) == 0, server.log()
    finally:
        if server.process.poll() is None:
            server.kill()


@pytest.mark.slow
def test_sigterm_stops_every_child_with_exit_0_and_a_restart_completes_what_was_left(
    database_url: str, tmp_path: Path
) -> None:
    node = ("--processes", "3", "--node-id", "pt")
    # Work outlasts the shutdown timeout: the orders in hand at the stop stay Processing.
    server = start(
        database_url, tmp_path, *node, "--processing-delay", "3", "--shutdown-timeout", "0.2"
    )
    try:
        orders = [f"term-{n:03d}" for n in range(300)]
        requests = [("POST", "/orders", order_body(order_id)) for order_id in orders]
        answers = loadgen.run(server.host, server.port, requests, connections=50, timeout=60)
        assert Counter(a.status for a in answers) == {201: len(orders)}
        children = children_of(server.process.pid)
        assert len(children) == 3
        assert server.terminate(timeout=60) == 0, server.log()
    finally:
        if server.process.poll() is None:
            server.kill()
    assert not any(running(pid) for pid in children)
    left = last_statuses(database_url)
    assert sum(left.values()) == len(orders)
    assert left["Pending"] + left["Processing"] > 0, left  # the restart has work to finish

    restarted = start(database_url, tmp_path, *node, "--processing-delay", "0.05")
    try:
        restarted.wait_until(all_done, timeout=120)
        assert_each_order_completed_exactly_once(database_url, set(orders))
        assert restarted.terminate(timeout=60) == 0, restarted.log()
    finally:
        if restarted.process.poll() is None:
            restarted.kill()


def test_a_sigkilled_supervisor_leaves_no_child_and_nothing_listening(
    database_url: str, tmp_path: Path
) -> None:
    flags = ("--processes", "2", "--node-id", "pz", "--port", str(restartable_port()))
    server = start(database_url, tmp_path, *flags)
    try:
        children = children_of(server.process.pid)
        assert len(children) == 2
        (private,) = private_directories(tmp_path, server.process.pid)
    finally:
        server.kill()
    wait_for(lambda: not listening(server.host, server.port), timeout=5, what="the port closed")
    wait_for(lambda: not any(map(running, children)), timeout=5, what="every child gone")

    assert private.exists()  # killed outright, it could not remove its own directory
    again = start(database_url, tmp_path, *flags)  # the port and the node ids are free
    try:
        assert not private.exists()  # the next supervisor removed what the dead one left
    finally:
        assert again.terminate(timeout=60) == 0, again.log()
    assert private_directories(tmp_path) == []  # and its own, at its exit


def test_a_child_that_does_not_stop_in_time_is_sigkilled_and_the_exit_says_so(
    sqlite_url: str, tmp_path: Path
) -> None:
    # The stop's deadline is then 1 s (--drain-timeout + --shutdown-timeout + 1 s).
    server = start(
        sqlite_url, tmp_path, "--processes", "2", "--node-id", "ps",
        "--drain-timeout", "0", "--shutdown-timeout", "0",
    )  # fmt: skip
    try:
        children = children_of(server.process.pid)
        stuck = meet_every_process(server, 2)[1]["process"]["pid"]
        os.kill(stuck, signal.SIGSTOP)  # it cannot act on the SIGTERM it is sent
        assert server.terminate(timeout=60) == 1, server.log()
    finally:
        if server.process.poll() is None:
            server.kill()
    assert "SIGKILLed 1 processes still running" in server.log()
    assert f"1 (pid {stuck})" in server.log()
    assert not any(map(running, children))


def test_a_second_server_on_the_port_is_refused_while_several_processes_serve_it(
    database_url: str, tmp_path: Path
) -> None:
    port = str(restartable_port())
    server = start(database_url, tmp_path, "--processes", "2", "--port", port)
    try:
        for processes in ("1", "2"):
            second = run_serve(database_url, tmp_path, "--port", port, "--processes", processes,
                               "--node-id", f"second-{processes}")  # fmt: skip
            assert second.returncode == 2, second.stderr
            assert PORT_IN_USE in second.stderr, second.stderr
            assert "serving on" not in second.stdout
        assert readiness(server)["processes"]["serving"] == 2
    finally:
        assert server.terminate(timeout=60) == 0, server.log()


def test_a_child_that_cannot_start_stops_the_node_saying_why(
    database_url: str, tmp_path: Path
) -> None:
    first = start(database_url, tmp_path, "--processes", "2", "--node-id", "dup")
    try:
        second = run_serve(database_url, tmp_path, "--port", "0", "--processes", "2",
                           "--node-id", "dup")  # fmt: skip
        assert second.returncode == 2, second.stderr
        assert "orderlog: node id 'dup-" in second.stderr, second.stderr
        assert "is in use by another running process" in second.stderr
        assert "serving on" not in second.stdout
        assert {body["node"] for body in meet_every_process(first, 2).values()} == {
            "dup-1",
            "dup-2",
        }
    finally:
        assert first.terminate(timeout=60) == 0, first.log()


def scrape(server: ServerProcess) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """One Prometheus exposition, from whichever process answers: sample values by name
    and labels."""
    status, _, raw = server.request("GET", "/metrics/prometheus")
    assert status == 200
    text = raw.decode() if isinstance(raw, bytes) else raw
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name][tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def test_prometheus_figures_cover_every_process_whichever_answers_and_survive_a_restart(
    sqlite_url: str, tmp_path: Path
) -> None:
    server = start(
        sqlite_url, tmp_path, "--processes", "2", "--node-id", "pp", "--processing-delay", "0"
    )
    try:
        orders = [f"prom-{n:03d}" for n in range(200)]
        requests = [("POST", "/orders", order_body(order_id)) for order_id in orders]
        answers = loadgen.run(server.host, server.port, requests, connections=20, timeout=60)
        assert Counter(a.status for a in answers) == {201: len(orders)}
        server.wait_until(all_done, timeout=60)
        events = len(raw_fetch(sqlite_url, "SELECT position FROM events"))

        def whole(samples: dict[str, dict[tuple[tuple[str, str], ...], float]]) -> bool:
            return (
                sum(samples["orderlog_events_appended_total"].values()) == events
                and samples["orderlog_processing_seconds_count"][()] == len(orders)
                and samples["orderlog_end_to_end_seconds_count"][()] == len(orders)
            )

        def settled(samples: dict[str, dict[tuple[tuple[str, str], ...], float]]) -> bool:
            queued, in_work = (
                samples[name][()] for name in ("orderlog_queue_depth", "orderlog_orders_in_work")
            )
            return whole(samples) and queued == in_work == 0

        # Each process counts what it did; every answer holds them all. The completions
        # are counted as each process's read models fold them, and each writes its queue
        # every second: wait for that.
        wait_for(lambda: settled(scrape(server)), timeout=30, what="every completion counted")
        met: set[int] = set()

        def every_process_answers_whole() -> bool:
            met.add(readiness(server)["process"]["index"])
            samples = scrape(server)
            assert settled(samples), samples
            assert samples["orderlog_orders"][(("status", "Completed"),)] == len(orders)
            return len(met) == 2

        wait_for(every_process_answers_whole, timeout=60)
        # The JSON figures are read from the log: the same from any process, once quiet.
        reports = {orjson.dumps(server.request("GET", "/metrics")[2]) for _ in range(10)}
        assert len(reports) == 1, reports
        placed_by = sum(
            v for k, v in scrape(server)["orderlog_http_request_duration_seconds_count"].items()
            if ("route", "/orders") in k and ("status", "201") in k
        )  # fmt: skip
        assert placed_by == len(orders)

        victim = meet_every_process(server, 2)[1]["process"]["pid"]
        os.kill(victim, signal.SIGKILL)
        wait_for(
            lambda: (
                (b := readiness(server))["processes"]["serving"] == 2
                and b["process"]["index"] == 1
                and b["process"]["pid"] != victim
            ),
            timeout=60,
            what="process 1 serving again",
        )
        # A dead process's counts stay: the totals never go back.
        after = scrape(server)
        assert whole(after), after
    finally:
        if server.process.poll() is None:
            assert server.terminate(timeout=60) == 0, server.log()
