"""Marten's interior-gap case, on PostgreSQL, through a running server and its readers.

PostgreSQL appends take no lock, so an event can be uncommitted while later ones
commit: an interior gap. A transaction is held open through the store's own code
path (``HeldAppend``) while orders placed through the server commit behind it.
Every reader (a client tailing ``/events``, the server's projector behind
``/metrics`` and the order-status rows, the worker's sweep that finds orders no
queue holds) must wait for the held event, deliver it once it commits before the
later ones, and skip nothing; an aborted one leaves no hole that anyone waits on.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orderlog.domain.events import OrderPlaced
from tests.support import ServerProcess, raw_fetch, start_server, wait_for
from tests.test_concurrency import HeldAppend

pytestmark = pytest.mark.parametrize("backend", ["postgres"], indirect=True)

LATER = 5


def order(order_id: str) -> dict[str, Any]:
    return {"order_id": order_id, "user_id": 7, "item_ids": ["sku-1"], "total_amount": "12.50"}


class FeedTail:
    """A client following ``/events`` page by page, as a consumer of the feed would."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.seen: list[tuple[int, str, str]] = []  # position, stream, type
        self.after = 0
        self.until: int | None = None  # stop once past this position
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while self.until is None or self.after < self.until:
                status, _, body = self.server.request("GET", f"/events?after={self.after}&limit=3")
                assert status == 200, body
                for event in body["events"]:
                    self.seen.append((event["position"], event["stream_id"], event["type"]))
                    self.after = event["position"]
                assert body["next_after"] == self.after and body["head"] >= self.after
        except BaseException as exc:  # handed back to the test thread
            self.error = exc

    def finish(self, until: int) -> list[tuple[int, str, str]]:
        self.until = until
        self._thread.join(60)
        assert not self._thread.is_alive(), f"the tail stopped at {self.after}, not {until}"
        if self.error:
            raise self.error
        return self.seen


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[ServerProcess]:
    # Orders no queue holds (placed by another node) are claimed once a sweep sees them.
    server = start_server(
        database_url, tmp_path, "--processing-delay", "0", "--pending-grace", "0.1"
    )
    yield server
    server.process.terminate()
    server.process.wait(30)


def logged(url: str) -> list[tuple[int, str, str]]:
    return raw_fetch(url, "SELECT position, stream_id, type FROM events ORDER BY position")


def placed_ids(tail: list[tuple[int, str, str]]) -> list[str]:
    return [stream for _, stream, kind in tail if kind == "OrderPlaced"]


def completed(server: ServerProcess, count: int) -> bool:
    status, _, body = server.request("GET", "/metrics")
    return status == 200 and body["status_counts"]["Completed"] == count


def test_readers_wait_for_an_uncommitted_event_and_deliver_it_before_later_ones(
    database_url: str, server: ServerProcess
) -> None:
    tail = FeedTail(server)
    with HeldAppend(database_url, "held-1", [OrderPlaced("held-1", 7, ("a",), "1.00")], 0) as held:
        (held_event,) = held.recorded
        for n in range(LATER):  # no lock to wait for: each commits while held-1 is open
            status, _, body = server.request("POST", "/orders", order(f"later-{n}"), timeout=10)
            assert status == 201, body
        assert placed_ids(logged(database_url)) == [f"later-{n}" for n in range(LATER)]
        later_positions = [p for p, _, _ in logged(database_url)]
        assert min(later_positions) > held_event.position
        # Nothing at or after the held event is served yet, though five orders committed.
        status, _, feed = server.request("GET", f"/events?after={held_event.position - 1}")
        assert (status, feed["events"]) == (200, [])
        assert feed["head"] < held_event.position
        assert all(p < held_event.position for p, _, _ in tail.seen)
        held.commit()

    # Every reader now gets held-1, ahead of what committed while it was open.
    wait_for(lambda: completed(server, LATER + 1), what="every order completed, held-1 too")
    final = logged(database_url)
    seen = tail.finish(until=final[-1][0])
    assert seen == final  # in position order, nothing skipped, nothing twice
    assert placed_ids(seen) == ["held-1", *(f"later-{n}" for n in range(LATER))]
    status, _, held_view = server.request("GET", "/orders/held-1")
    assert (status, held_view["status"]) == (200, "Completed")  # the sweep found it
    status, _, listing = server.request("GET", "/orders?limit=100")
    assert [o["order_id"] for o in listing["orders"]] == placed_ids(seen)


def test_an_aborted_event_leaves_no_hole_that_readers_wait_on(
    database_url: str, server: ServerProcess
) -> None:
    tail = FeedTail(server)
    with HeldAppend(database_url, "gone-1", [OrderPlaced("gone-1", 7, ("a",), "1.00")], 0) as held:
        for n in range(LATER):
            status, _, body = server.request("POST", "/orders", order(f"later-{n}"), timeout=10)
            assert status == 201, body
        status, _, feed = server.request("GET", "/events")
        assert (status, feed["events"]) == (200, [])  # held back by gone-1
        held.roll_back()

    wait_for(lambda: completed(server, LATER), what="the later orders completed")
    final = logged(database_url)
    seen = tail.finish(until=final[-1][0])
    assert seen == final
    assert placed_ids(seen) == [f"later-{n}" for n in range(LATER)]
    assert "gone-1" not in {stream for _, stream, _ in final}
    status, _, body = server.request("GET", "/metrics")
    assert (body["total_orders"], body["status_counts"]["Pending"]) == (LATER, 0)
    assert server.request("GET", "/orders/gone-1")[0] == 404
