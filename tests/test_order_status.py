"""The order-status read model: its fold, the order's one view, and its rows kept with
their checkpoint.

The fold and the view are checked with plain events; the persisted model against a
real store on every backend, with small pages, several followers at once, and a restart.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orderlog.domain.events import (
    OrderCompleted,
    OrderPlaced,
    OrderProcessingStarted,
    RecordedEvent,
    event_data,
)
from orderlog.domain.order import Status
from orderlog.domain.policy import worker_id_for
from orderlog.storage.database import parse_url
from orderlog.storage.store import EventStore
from projections.order_status import OrderStatusModel, apply, fold, view
from tests.support import make_store, raw_connection, readable, run_threads, wait_for

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def recorded(position: int, version: int, event: object, node: str = "n1") -> RecordedEvent:
    return RecordedEvent.of(
        position, event.order_id, version, type(event).__name__,  # type: ignore[attr-defined]
        event_data(event), {"event_id": f"e{position}", "node": node},  # type: ignore[arg-type]
        T0 + timedelta(seconds=position),
    )  # fmt: skip


def test_the_fold_follows_an_order_through_its_life() -> None:
    worker = worker_id_for("n2", "abc")
    row = apply(None, recorded(1, 1, OrderPlaced("o1", 42, ("a", "b"), "9.50")))
    assert row is not None
    assert (row.status, row.user_key, row.node, row.attempts) == ("Pending", "42", "n1", 0)
    assert row.placed_position == row.position == 1
    row = apply(row, recorded(5, 2, OrderProcessingStarted("o1", 1, worker)))
    assert row is not None
    assert (row.status, row.node, row.worker_id, row.attempts) == ("Processing", "n2", worker, 1)
    row = apply(row, recorded(9, 3, OrderCompleted("o1", 1)))
    assert row is not None
    shown = view(row)
    assert shown["status"] == "Completed" and shown["version"] == 3
    assert shown["user_id"] == 42 and shown["item_ids"] == ["a", "b"]
    assert shown["total_amount"] == "9.50"
    assert shown["processing_time_seconds"] == 4.0
    assert row.placed_position == 1 and row.position == 9


def test_events_of_an_order_never_placed_make_no_row() -> None:
    assert apply(None, recorded(1, 1, OrderCompleted("ghost", 1))) is None


def test_a_string_and_an_integer_user_id_share_the_text_form() -> None:
    as_int = apply(None, recorded(1, 1, OrderPlaced("a", 42, ("x",), "1.00")))
    as_text = apply(None, recorded(2, 1, OrderPlaced("b", "42", ("x",), "1.00")))
    assert as_int is not None and as_text is not None
    assert as_int.user_key == as_text.user_key == "42"
    assert view(as_int)["user_id"] == 42 and view(as_text)["user_id"] == "42"


# -- the one view: GET /orders/{id}, a POST's answer and the listing ------------------------


def lifecycle(order_id: str, claims: list[float], done: float | None) -> list[RecordedEvent]:
    """An order placed at T0, claimed at these seconds, completed at ``done``."""
    events = [OrderPlaced(order_id, "u-1", ("sku-1", 7), "19.99")]
    times = [0.0]
    for attempt, claimed in enumerate(claims, start=1):
        events.append(OrderProcessingStarted(order_id, attempt, worker_id_for("n1", "w")))
        times.append(claimed)
    if done is not None:
        events.append(OrderCompleted(order_id, len(claims)))
        times.append(done)
    return [
        RecordedEvent.of(
            position, order_id, position, type(event).__name__, event_data(event),
            {"node": "n1"}, T0 + timedelta(seconds=at),
        )
        for position, (event, at) in enumerate(zip(events, times, strict=True), start=1)
    ]  # fmt: skip


def shown(events: list[RecordedEvent]) -> dict[str, object]:
    row = fold(events)
    assert row is not None
    return view(row)


def test_the_view_of_a_placed_order_is_pending_with_every_field() -> None:
    assert shown(lifecycle("o1", [], None)) == {
        "order_id": "o1",
        "user_id": "u-1",
        "item_ids": ["sku-1", 7],
        "total_amount": "19.99",
        "currency": "USD",
        "status": "Pending",
        "version": 1,
        "attempts": 0,
        "placed_at": "2026-11-01T12:00:00.000000Z",
        "processing_started_at": None,
        "completed_at": None,
        "processing_time_seconds": None,
    }


def test_the_view_follows_processing_and_completion() -> None:
    events = lifecycle("o1", [1.5], 3.75)
    processing = shown(events[:2])
    assert (processing["status"], processing["version"], processing["attempts"]) == (
        "Processing",
        2,
        1,
    )
    assert processing["processing_started_at"] == "2026-11-01T12:00:01.500000Z"
    assert processing["processing_time_seconds"] is None
    done = shown(events)
    assert (done["status"], done["version"]) == ("Completed", 3)
    assert done["completed_at"] == "2026-11-01T12:00:03.750000Z"
    assert done["processing_time_seconds"] == 2.25


def test_the_view_measures_processing_from_the_last_claim() -> None:
    done = shown(lifecycle("o1", [1, 31], 32.5))
    assert (done["attempts"], done["version"]) == (2, 4)
    assert done["processing_started_at"] == "2026-11-01T12:00:31.000000Z"
    assert done["processing_time_seconds"] == 1.5


def test_an_event_type_unknown_here_only_moves_the_version_and_position() -> None:
    placed, started = lifecycle("o1", [1], None)
    noted = RecordedEvent.of(
        2, "o1", 2, "OrderNoted", {"order_id": "o1", "note": "gift wrap"}, {}, T0
    )
    started = started._replace(position=3, version=3)
    row = fold([placed, noted])
    assert row is not None
    assert (row.status, row.version, row.position) == ("Pending", 2, 2)
    assert {**view(row), "version": 1} == shown([placed])
    assert shown([placed, noted, started]) == shown([placed, started])


def test_a_stream_without_its_order_placed_is_no_order() -> None:
    assert fold([]) is None
    assert fold(lifecycle("o1", [1], 2)[1:]) is None


def test_an_order_s_stored_row_is_the_row_its_own_stream_folds_to(database_url: str) -> None:
    """So the listing (stored rows) and GET /orders/{id} (the stream) show one view."""
    store = make_store(database_url, group_commit=False)
    try:
        write(store, [1, 2, 3, 2, 1])
        model = OrderStatusModel(readable(store))
        model.catch_up()
        listed = model.list(limit=1000).rows
        assert len(listed) == 5
        for row in listed:
            assert row == fold(store.read_stream(row.order_id)) == model.get(row.order_id)
    finally:
        store.close()


histories = st.lists(st.integers(min_value=1, max_value=3), min_size=1, max_size=30)


def write(store: EventStore, reached: list[int]) -> dict[str, str]:
    """Orders interleaved in the log, each as far as ``reached`` says; their final status."""
    steps = {
        f"o{n}": [
            OrderPlaced(f"o{n}", n, ("a",), "1.00"),
            OrderProcessingStarted(f"o{n}", 1, worker_id_for("n", "i")),
            OrderCompleted(f"o{n}", 1),
        ][:upto]
        for n, upto in enumerate(reached)
    }
    version = dict.fromkeys(steps, 0)
    while any(steps.values()):
        for order_id, events in steps.items():
            if events:
                store.append(order_id, [events.pop(0)], version[order_id], {"node": "n"})
                version[order_id] += 1
    names = {1: "Pending", 2: "Processing", 3: "Completed"}
    return {f"o{n}": names[upto] for n, upto in enumerate(reached)}


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(reached=histories, page=st.integers(min_value=1, max_value=7))
def test_catching_up_in_pages_gives_every_order_its_status(
    tmp_path_factory: object, reached: list[int], page: int
) -> None:
    path = Path(tmp_path_factory.mktemp("status")) / "log.db"  # type: ignore[attr-defined]
    store = make_store(f"sqlite:///{path}", group_commit=False)
    try:
        expected = write(store, reached)
        model = OrderStatusModel(store, page=page)
        assert model.catch_up() == store.head() == model.checkpoint()
        assert {row.order_id: row.status for row in model.list(limit=1000).rows} == expected
        open_ = {order.order_id: order.status for order in model.open_orders()}
        assert open_ == {
            order_id: Status(status)
            for order_id, status in expected.items()
            if status != "Completed"
        }
    finally:
        store.close()


def test_followers_catching_up_at_once_agree_and_store_each_page_once(database_url: str) -> None:
    store = make_store(database_url, group_commit=False)
    try:
        expected = write(store, [1, 2, 3] * 40)
        models = [OrderStatusModel(store, page=7) for _ in range(4)]
        assert run_threads(len(models), lambda n: models[n].catch_up()) == []
        assert models[0].checkpoint() == store.head()
        rows = models[0].list(limit=1000).rows
        assert len(rows) == len(expected)  # one row per order, however many wrote
        assert {row.order_id: row.status for row in rows} == expected
    finally:
        store.close()


# The other process's INSERT, waiting for the transaction that holds the same key.
_WAITING_INSERT = {
    "postgres": "SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
    "AND query LIKE 'INSERT INTO projections%%'",
    "mysql": "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
    "WHERE INFO LIKE 'INSERT INTO projections%%'",
}


@pytest.mark.parametrize("backend", ["postgres", "mysql"], indirect=True)
def test_a_follower_of_a_new_log_that_makes_the_checkpoint_second_reads_again(
    database_url: str,
) -> None:
    """Two processes following a new log both find no checkpoint row and both insert it;
    the second insert waits for the first's transaction, then clashes. That follower has
    moved, like any other behind: it reads again (a process's own followers take turns,
    so only another process meets this; SQLite's write lock keeps it from happening)."""
    store = make_store(database_url, group_commit=False)
    try:
        expected = write(store, [1, 2, 3])
        model = OrderStatusModel(store)
        outcome: list[object] = []
        with raw_connection(database_url) as other:
            cursor = other.cursor()
            cursor.execute("BEGIN")
            cursor.execute(
                "INSERT INTO projections (name, position, state) VALUES (%s, 0, %s)",
                ("order_status", "order_status"),
            )
            follower = threading.Thread(target=lambda: outcome.append(_caught(model.catch_up)))
            follower.start()
            backend = parse_url(database_url).backend
            with raw_connection(database_url) as watcher:
                looking = watcher.cursor()

                def insert_waits() -> bool:
                    looking.execute(_WAITING_INSERT[backend])
                    return bool(looking.fetchone()[0])

                wait_for(insert_waits, timeout=30, what="the follower's INSERT waiting")
            cursor.execute("COMMIT")
            follower.join(60)
        assert outcome == [store.head()]
        assert model.checkpoint() == store.head()
        assert {row.order_id: row.status for row in model.list(limit=1000).rows} == expected
    finally:
        store.close()


def _caught(call: object) -> object:
    try:
        return call()  # type: ignore[operator]
    except BaseException as exc:  # handed back to the test's thread
        return exc


def test_a_restarted_follower_resumes_from_the_checkpoint(database_url: str) -> None:
    store = make_store(database_url, group_commit=False)
    try:
        write(store, [2, 2])
        fourth = readable(store).last_position()
        assert OrderStatusModel(store).catch_up() == fourth
        (fifth,) = store.append("o0", [OrderCompleted("o0", 1)], 2)
        again = OrderStatusModel(readable(store))  # a new process, as after a restart
        assert again.checkpoint() == fourth
        assert again.catch_up() == fifth.position
        assert [o.order_id for o in again.open_orders()] == ["o1"]
    finally:
        store.close()


def test_listing_filters_by_status_and_user_and_pages_oldest_first(database_url: str) -> None:
    store = make_store(database_url, group_commit=False)
    try:
        write(store, [1, 3, 1, 3, 1])  # users 0..4
        model = OrderStatusModel(store)
        model.catch_up()
        pending = model.list(status="Pending", limit=2)
        assert [r.order_id for r in pending.rows] == ["o0", "o2"]
        assert pending.next_after == pending.rows[-1].placed_position
        rest = model.list(status="Pending", after=pending.next_after, limit=2)
        assert [r.order_id for r in rest.rows] == ["o4"]
        assert rest.next_after is None
        assert [r.order_id for r in model.list(user_key="3").rows] == ["o3"]
        assert model.list(user_key="3", status="Pending") == ([], None)
    finally:
        store.close()
