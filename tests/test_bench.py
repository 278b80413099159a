"""``python -m bench`` runs end to end at tiny sizes and counts what it promises to count.

Never timings: the figures depend on the machine. What is asserted is what the
bench must get right whatever the machine: every order it sent is accounted for,
each side measured the work it claims to. Each sub-bench runs as a real process,
as a user would run it, so its CPU pinning never touches the test process.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from bench.placement import place
from bench.servers import serves_processes, start_bare

ROOT = Path(__file__).resolve().parent.parent
SERVER_URLS = {"postgres": "ORDERLOG_TEST_POSTGRES_URL", "mysql": "ORDERLOG_TEST_MYSQL_URL"}

pytestmark = pytest.mark.slow


def run_bench(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "bench", *args, "--json", "--no-wrk"],
        cwd=ROOT,
        capture_output=True,
        timeout=300,
    )


def bench(*args: str) -> dict[str, Any]:
    done = run_bench(*args)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return orjson.loads(done.stdout)


@pytest.fixture(params=["sqlite", *SERVER_URLS])
def database_flags(request: pytest.FixtureRequest) -> list[str]:
    """No flag for SQLite (the bench's own temporary file); the test server's URL
    otherwise, on which the bench makes and drops its own scratch databases."""
    if request.param == "sqlite":
        return []
    url = os.environ.get(SERVER_URLS[request.param])
    if not url:
        reason = f"{SERVER_URLS[request.param]} is not set"
        if os.environ.get("ORDERLOG_TEST_REQUIRE_SERVERS") == "1":
            pytest.fail(f"{request.param} is required here but unavailable: {reason}")
        pytest.skip(reason)
    return ["--database", url]


def test_burst_accounts_for_every_order_at_the_default_processing_delay() -> None:
    report = bench("burst", "--orders", "50", "--few-connections", "5")
    assert report["server_settings"] == "defaults" and report["processing_delay"] == 0.2
    (run,) = report["runs"]
    assert run["placement"]["pinned"] is False  # as users run it
    result = run["results"]["burst"]
    assert (result["accepted"], result["errors"], result["lost"], result["duplicated"]) == (
        50,
        0,
        0,
        0,
    )
    assert result["completed_after_last_answer_s"] is not None  # every order was Completed
    assert result["bare"]["accepted"] == 50
    assert result["few_connections"]["connections"] == 5
    assert result["few_connections"]["errors"] == 0


def test_placement_both_measures_unpinned_first_then_pinned() -> None:
    report = bench("burst", "--orders", "20", "--few-connections", "0", "--placement", "both")
    assert [run["placement"]["pinned"] for run in report["runs"]] == [False, True]
    for run in report["runs"]:
        assert run["results"]["burst"]["accepted"] == 20


def test_sustained_measures_orderlog_and_the_bare_app_with_the_same_client() -> None:
    (run,) = bench("sustained", "--duration", "1", "--connections", "10")["runs"]
    result = run["results"]["sustained"]
    for side in ("orderlog", "bare"):
        assert result[side]["errors"] == 0
        assert result[side]["ok"] == result[side]["requests"]
    assert result["orderlog"]["completed_after_load_s"] is not None
    # The server's own CPU, from /proc: orderlog per accepted order, both per request.
    assert result["orderlog"]["server_cpu_us_per_order"] > 0
    assert result["orderlog"]["server_cpu_us_per_request"] > 0
    assert result["bare"]["server_cpu_us_per_request"] > 0
    # The same orders through the core alone: every one placed and Completed, and what
    # is left of the served figure is HTTP's.
    core = result["core"]
    assert core["created"] == core["orders"] == result["orderlog"]["ok"]
    assert core["settled"] is True
    assert core["cpu_us_per_order"] > 0
    assert result["http_us_per_order"] == pytest.approx(
        result["orderlog"]["server_cpu_us_per_order"] - core["cpu_us_per_order"]
    )


def test_the_core_alone_places_and_completes_every_order_and_says_what_each_thread_spent(
    tmp_path: Path,
) -> None:
    from bench.core import measure_core

    figures = measure_core(f"sqlite:///{tmp_path / 'core.db'}", 60, 4, ROOT)
    assert figures["statuses"] == {"201 Created": 60}
    assert figures["settled"] is True
    assert figures["cpu_us_per_order"] > 0
    # Each of the node's threads is accounted for, the calling threads' share measured.
    spent = figures["per_thread_us"]
    assert {"orderlog-writer", "orderlog-worker", "orderlog-projector"} <= set(spent)
    assert spent["requests (the calling threads)"] > 0


def test_store_appends_exactly_what_it_counts_in_every_mode() -> None:
    (run,) = bench("store", "--appends", "500")["runs"]
    result = run["results"]["store"]
    assert result["raw"]["appends"] == 500
    for mode in ("group_commit_1", "group_commit_8", "direct_1", "direct_8"):
        assert result[mode]["appends"] == 500


def test_rebuild_replays_the_whole_generated_log_on_both_sides() -> None:
    (run,) = bench("rebuild", "--events", "5000", "--samples", "20")["runs"]
    result = run["results"]["rebuild"]
    assert result["events"] == 5000
    for side in ("raw", "rebuild"):
        assert result[side]["events"] == 5000


def test_with_auth_on_every_order_carries_the_token_and_is_accepted() -> None:
    report = bench("burst", "--orders", "20", "--few-connections", "0", "--auth")
    assert report["auth"] == "a token on every request"
    (run,) = report["runs"]
    result = run["results"]["burst"]
    assert (result["accepted"], result["lost"], result["duplicated"]) == (20, 0, 0)


def test_attack_probes_with_and_without_the_attack_and_accounts_for_every_probe() -> None:
    (run,) = bench(
        "attack", "--attack-connections", "50", "--attack-duration", "1", "--trickle-every", "0.2"
    )["runs"]
    result = run["results"]["attack"]
    assert result["attack"]["attacker"]["held"] == 50  # the attack was on while probing
    for phase in ("quiet", "under_attack"):
        for endpoint in ("healthz", "orders"):
            figures = result[phase][endpoint]
            assert figures["requests"] > 0
            assert figures["answered"] + figures["failed"] == figures["requests"]
    assert result["quiet"]["orders"]["failed"] == 0


def test_store_processes_runs_k_writers_and_k_raw_writers_and_counts_every_row(
    database_flags: list[str],
) -> None:
    (run,) = bench(
        "store", "--processes", "1,2", "--seconds", "0.5", "--runs", "1", *database_flags
    )["runs"]
    result = run["results"]["store"]
    assert result["mode"] == "processes" and result["threads"] == 8
    assert result["store_settings"]["group_commit"] is True  # as a node opens its store
    assert [row["processes"] for row in result["processes"]] == [1, 2]
    for row in result["processes"]:
        for kind in ("store", "raw"):
            (measured,) = row[f"{kind}_runs"]
            assert len(measured["per_process"]) == row["processes"]  # each counted its own
            assert all(p["appends"] > 0 for p in measured["per_process"])
            assert measured["failed"] == 0
            # The table holds exactly what the processes said they wrote.
            assert measured["rows_in_table"] == measured["appends"]
            assert row[kind] == measured["per_second"]  # the median of one run
        assert row["ratio"] is not None
    first = result["processes"][0]
    assert first["store_scaling"] == first["raw_scaling"] == 1.0
    assert result["rows_unlike_counted"] == 0


def test_wrk_posts_new_orders_to_orderlog_and_the_bare_app_and_counts_every_answer() -> None:
    if shutil.which("wrk") is None:
        reason = "wrk is not installed (apt-get install wrk)"
        if os.environ.get("ORDERLOG_TEST_REQUIRE_WRK") == "1":
            pytest.fail(f"wrk is required here: {reason}")
        pytest.skip(reason)
    (run,) = bench(
        "wrk", "--processes", "1", "--seconds", "1", "--runs", "1", "--connections", "10"
    )["runs"]
    result = run["results"]["wrk"]
    (row,) = result["processes"]
    assert row["processes"] == 1 and row["ratio"] is not None
    for side in ("orderlog", "bare"):
        (measured,) = row[side]["runs"]
        assert measured["requests"] > 0
        # Every order id was new, so every answer was a 201, and each was counted.
        assert measured["created"] == measured["requests"]
        assert measured["non_201"] == {} and measured["non_2xx"] == 0
        assert row[side]["scaling"] == 1.0


def test_more_than_one_server_process_is_asked_of_orderlog_or_refused_in_one_line() -> None:
    done = run_bench("sustained", "--processes", "2", "--duration", "1", "--connections", "10")
    if serves_processes():
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        (run,) = orjson.loads(done.stdout)["runs"]
        assert run["results"]["sustained"]["processes"] == 2
    else:
        said = done.stderr.decode()
        assert done.returncode == 2
        assert "has no --processes flag" in said and "Traceback" not in said


def _children(pid: int) -> set[int]:
    return {int(n) for n in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def _post(host: str, port: int) -> int:
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request(
            "POST", "/orders", b'{"order_id": "o-1"}', {"Content-Type": "application/json"}
        )
        return conn.getresponse().status
    finally:
        conn.close()


def test_bare_app_waiting_on_a_writer_answers_each_post_after_its_batch(tmp_path: Path) -> None:
    server = start_bare(tmp_path, place(False), "--wait-on-writer", processes=1)
    try:
        conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
        conn.request(
            "POST", "/orders", b'{"order_id": "o-1"}', {"Content-Type": "application/json"}
        )
        answer = conn.getresponse()
        assert answer.status == 201
        assert orjson.loads(answer.read()) == {"order_id": "o-1", "accepted": True}
        # It went through the writer: one request alone in its batch.
        assert answer.getheader("X-Batch-Size") == "1"
        conn.close()
    finally:
        server.stop()


def test_bare_app_forks_n_workers_on_one_socket_and_stops_them_all(tmp_path: Path) -> None:
    server = start_bare(tmp_path, place(False), processes=3)
    assert server.process is not None
    try:
        workers = _children(server.process.pid)
        assert len(workers) == 3
        assert "with 3 processes" in server.log()
        assert [_post(server.host, server.port) for _ in range(6)] == [201] * 6
    finally:
        server.stop()
    assert server.process.returncode == 0
    for pid in workers:  # reaped by the parent before it exited
        assert not Path(f"/proc/{pid}").exists()


def test_bare_app_stops_every_worker_when_one_dies(tmp_path: Path) -> None:
    server = start_bare(tmp_path, place(False), processes=2)
    assert server.process is not None
    try:
        first, second = sorted(_children(server.process.pid))
        os.kill(first, signal.SIGKILL)
        assert server.process.wait(timeout=30) == 1  # a figure from fewer workers is wrong
    finally:
        server.stop()
    assert not Path(f"/proc/{second}").exists()
    assert f"worker {first} exited" in server.log()
