"""``python -m bench`` runs end to end at tiny sizes and counts what it promises to count.

Never timings: the figures depend on the machine. What is asserted is what the
bench must get right whatever the machine: every order it sent is accounted for,
each side measured the work it claims to. Each sub-bench runs as a real process,
as a user would run it, so its CPU pinning never touches the test process.
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
        [sys.executable, "-m", "bench", *args, "--json", "--no-wrk"],
        cwd=ROOT,
        capture_output=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return orjson.loads(done.stdout)


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
