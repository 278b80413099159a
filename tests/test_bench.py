"""``orderlog bench`` runs end to end at tiny sizes and reports what it promises.

Only the report's shape and the burst's log check are asserted, never timings:
the figures depend on the machine. Each sub-bench runs as a real process, as a
user would run it, so its CPU pinning never touches the test process.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def bench(*args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "api", "bench", *args, "--json", "--no-wrk"],
        cwd=ROOT,
        capture_output=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    report = orjson.loads(done.stdout)
    assert report["command"] == args[0]
    assert {"pinned", "server_cpus", "client_cpus", "description"} <= set(report["placement"])
    return report


def _has_targets(result: dict[str, Any]) -> None:
    assert result["targets"], "every sub-bench states its targets"
    for line in result["targets"]:
        assert {"target", "value", "want", "met"} <= set(line)
    assert "table" not in result  # the table is for terminals only


def test_burst_loses_and_duplicates_no_order() -> None:
    result = bench("burst", "--orders", "50")["results"]["burst"]
    _has_targets(result)
    assert result["accepted"] == 50
    assert result["errors"] == 0
    assert result["lost"] == 0
    assert result["duplicated"] == 0
    assert result["completed_after_last_answer_s"] is not None
    assert {"p50_ms", "p95_ms", "p99_ms"} <= set(result["latency"])


def test_sustained_reports_orderlog_against_the_bare_app() -> None:
    result = bench("sustained", "--duration", "1", "--connections", "10")["results"]["sustained"]
    _has_targets(result)
    for side in ("orderlog", "bare"):
        assert result[side]["ok"] > 0
        assert result[side]["per_second"] > 0
        assert "client_cpu_share" in result[side]
    assert result["ratio"] > 0


def test_store_compares_every_mode_with_raw_inserts() -> None:
    result = bench("store", "--appends", "500")["results"]["store"]
    _has_targets(result)
    assert result["raw"]["appends"] == 500
    for mode in ("group_commit_1", "group_commit_8", "direct_1", "direct_8"):
        assert result[mode]["appends"] == 500
        assert result[mode]["ratio_to_raw"] > 0


def test_rebuild_measures_both_sides_and_both_log_sizes() -> None:
    result = bench("rebuild", "--events", "5000", "--samples", "20")["results"]["rebuild"]
    _has_targets(result)
    assert result["events"] == 5000
    for side in ("raw", "rebuild"):
        assert result[side]["events"] == 5000
        assert result[side]["peak_rss_mb"] > 0
    for size in ("small", "big"):
        assert result[size]["metrics_median_ms"] > 0
        assert result[size]["order_median_ms"] > 0
