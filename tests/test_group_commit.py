"""The group-commit thread on its own: batching, per-caller results, and never hanging."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from orderlog.domain.errors import StoreUnavailableError
from orderlog.storage.group_commit import GroupCommitter, Request

DEADLINE = 30.0


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()


def test_requests_waiting_together_are_committed_in_one_batch(gate: threading.Event) -> None:
    batches: list[list[int]] = []

    entered = threading.Event()

    def commit(batch: list[Request]) -> None:
        entered.set()
        gate.wait(DEADLINE)  # hold the first batch so the others queue up behind it
        batches.append([r.payload for r in batch])
        for request in batch:
            request.result = request.payload * 10

    committer = GroupCommitter(commit)
    committer.start()
    results: dict[int, int] = {}
    threads = [
        threading.Thread(target=lambda n=n: results.__setitem__(n, committer.submit(n)))
        for n in range(6)
    ]
    threads[0].start()
    assert entered.wait(DEADLINE), "the first batch never reached the writer"
    for thread in threads[1:]:
        thread.start()
    deadline = time.monotonic() + DEADLINE
    while committer.waiting < 5:  # until the five later callers are queued
        assert time.monotonic() < deadline, "callers never queued"
        time.sleep(0.001)  # polling interval of a deadline-bound wait
    gate.set()
    for thread in threads:
        thread.join(DEADLINE)
    committer.stop()
    assert results == {n: n * 10 for n in range(6)}
    assert len(batches) == 2 and batches[0] == [0]
    assert sorted(batches[1]) == [1, 2, 3, 4, 5]


def test_a_failed_commit_fails_its_batch_and_the_committer_carries_on() -> None:
    calls = 0

    def commit(batch: list[Request]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("disk on fire")
        for request in batch:
            request.result = "ok"

    committer = GroupCommitter(commit)
    committer.start()
    with pytest.raises(StoreUnavailableError, match="disk on fire"):
        committer.submit("first")
    assert committer.submit("second") == "ok"
    committer.stop()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_callers_are_answered_and_never_hang_when_the_committer_thread_dies() -> None:
    def commit(batch: list[Request]) -> None:
        raise SystemExit("writer killed")

    committer = GroupCommitter(commit)
    committer.start()
    with pytest.raises(StoreUnavailableError, match="writer killed"):
        committer.submit("first")
    with pytest.raises(StoreUnavailableError):
        committer.submit("after the writer is gone")


def test_submit_after_stop_is_refused() -> None:
    committer = GroupCommitter(lambda batch: None)
    committer.start()
    committer.stop()
    with pytest.raises(StoreUnavailableError, match="closed"):
        committer.submit("late")
