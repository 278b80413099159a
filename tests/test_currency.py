"""Orders in currencies, and the log from before them.

An OrderPlaced stored before orders had a currency (v1: no ``currency`` in its data,
stored at event version 1) reads as USD, whatever ``--default-currency`` says, and
every read model folds it exactly as it folds the same order written at v2 in USD:
the order-status fold and view, the metrics (revenue included), and a rebuild over
a real SQLite log holding such rows. The revenue of completed orders is exact per
currency; the order-status rows of an earlier release get their currency by schema
migration 9, and a metrics state an earlier release stored is folded again at start.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple

import falcon.testing
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.node import Node
from orderlog.domain.events import (
    OrderCompleted,
    OrderPlaced,
    OrderProcessingStarted,
    RecordedEvent,
    decode_event,
)
from orderlog.domain.policy import worker_id_for
from orderlog.storage import schema
from orderlog.storage.database import open_database
from orderlog.storage.read_models import OrderRow
from orderlog.storage.store import EventStore
from projections import completions, metrics, order_status
from projections.order_status import OrderStatusModel
from projections.projector import NAME, Projector
from projections.rebuild import rebuild, rebuild_order_status
from tests.support import IDLE, admin_execute, make_store, post, raw_fetch, readable, settings_for

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
US = timedelta(microseconds=1)


# -- histories: each event as its type and its current (v2) data ------------------------------

# (which order, what happens, microseconds since the previous event, the order's cents)
ACTIONS = st.lists(
    st.tuples(
        st.integers(0, 7),
        st.sampled_from(["advance", "advance", "reclaim"]),
        st.integers(0, 3_000_000),
        st.integers(0, 10**15 - 1),  # up to the largest amount, 9,999,999,999,999.99
    ),
    max_size=60,
)


class Step(NamedTuple):
    """One event of a history: its order, type, data as v2 has it, and when it was recorded."""

    order_id: str
    type: str
    data: dict[str, Any]
    at: datetime


def history(actions: list[tuple[int, str, int, int]], currencies: list[str]) -> list[Step]:
    """A valid interleaving of orders' lives, order n in ``currencies[n % len]``."""
    status: dict[str, tuple[str, int]] = {}
    steps, moment = [], T0
    for index, kind, gap, cents in actions:
        order_id = f"order-{index}"
        moment += gap * US
        current, attempt = status.get(order_id, ("", 0))
        if not current:
            amount = f"{Decimal(cents) / 100:.2f}"
            data: dict[str, Any] = {
                "order_id": order_id,
                "user_id": index,
                "item_ids": ["sku-1", index],
                "total_amount": amount,
                "currency": currencies[index % len(currencies)],
            }
            steps.append(Step(order_id, "OrderPlaced", data, moment))
            status[order_id] = ("Pending", 0)
        elif current == "Completed":
            continue
        elif current == "Pending" or kind == "reclaim":
            claim = {"order_id": order_id, "attempt": attempt + 1, "worker_id": f"w{attempt + 1}"}
            steps.append(Step(order_id, "OrderProcessingStarted", claim, moment))
            status[order_id] = ("Processing", attempt + 1)
        else:
            done = {"order_id": order_id, "attempt": attempt}
            steps.append(Step(order_id, "OrderCompleted", done, moment))
            status[order_id] = ("Completed", attempt)
    return steps


def as_v1(data: dict[str, Any]) -> dict[str, Any]:
    """An OrderPlaced's data as the previous release wrote it: no currency."""
    return {key: value for key, value in data.items() if key != "currency"}


def recorded(steps: list[Step], v1_orders: frozenset[str] = frozenset()) -> list[RecordedEvent]:
    """The steps as the log holds them; the OrderPlaced of ``v1_orders`` stored at v1."""
    versions: Counter[str] = Counter()
    events = []
    for position, step in enumerate(steps, start=1):
        versions[step.order_id] += 1
        old = step.type == "OrderPlaced" and step.order_id in v1_orders
        events.append(
            RecordedEvent.of(
                position,
                step.order_id,
                versions[step.order_id],
                step.type,
                as_v1(step.data) if old else step.data,
                {"event_id": f"e{position}", "node": "n1"},
                step.at,
                event_version=1 if old else None,
            )
        )
    return events


def streams(events: list[RecordedEvent]) -> dict[str, list[RecordedEvent]]:
    found: dict[str, list[RecordedEvent]] = defaultdict(list)
    for event in events:
        found[event.stream_id].append(event)
    return found


def rows_but_placed(events: list[RecordedEvent]) -> dict[str, OrderRow]:
    """Each order's row; ``placed`` blanked: it is the JSON as stored, v1 or v2."""
    rows = {order_id: order_status.fold(stream) for order_id, stream in streams(events).items()}
    return {order_id: row._replace(placed="") for order_id, row in rows.items() if row}


def views(events: list[RecordedEvent]) -> dict[str, dict[str, Any]]:
    return {
        order_id: order_status.view(row)
        for order_id, stream in streams(events).items()
        if (row := order_status.fold(stream))
    }


ORDER_INDEXES = st.frozensets(st.integers(0, 7))


# -- the acceptance property: v1 upcast folds exactly as v2 in USD ------------------------------


@given(actions=ACTIONS, old=ORDER_INDEXES, cut=st.integers(0, 60))
@settings(max_examples=300, deadline=None)
def test_orders_stored_at_v1_fold_as_the_same_orders_written_at_v2_in_usd(
    actions: list[tuple[int, str, int, int]], old: frozenset[int], cut: int
) -> None:
    steps = history(actions, ["USD"])
    v1_orders = frozenset(f"order-{n}" for n in old)  # the log of an upgrade: both kinds
    upcast, written = recorded(steps, v1_orders), recorded(steps)

    assert rows_but_placed(upcast) == rows_but_placed(written)
    assert views(upcast) == views(written)
    assert all(view["currency"] == "USD" for view in views(upcast).values())

    state = metrics.fold(upcast)
    assert state == metrics.fold(written)
    assert metrics.report(state, len(steps)) == metrics.report(metrics.fold(written), len(steps))
    # As the projector folds: a page, the state stored as JSON, the next page.
    stored = orjson.loads(orjson.dumps(metrics.fold(upcast[:cut])))
    assert metrics.fold(upcast[cut:], stored) == state
    assert completions.fold(upcast, {}) == completions.fold(written, {})


def revenue_oracle(steps: list[Step]) -> dict[str, str]:
    """Each currency's sum of the total_amount of completed orders, by plain addition."""
    placed = {s.order_id: s.data for s in steps if s.type == "OrderPlaced"}
    sums: dict[str, Decimal] = defaultdict(Decimal)
    for step in steps:
        if step.type == "OrderCompleted":
            sums[placed[step.order_id]["currency"]] += Decimal(
                placed[step.order_id]["total_amount"]
            )
    return {currency: f"{total:.2f}" for currency, total in sorted(sums.items())}


@given(actions=ACTIONS, cuts=st.lists(st.integers(0, 60), max_size=6))
@settings(max_examples=300, deadline=None)
def test_revenue_is_the_exact_sum_of_completed_orders_per_currency(
    actions: list[tuple[int, str, int, int]], cuts: list[int]
) -> None:
    steps = history(actions, ["USD", "EUR", "JPY", "EUR"])
    events = recorded(steps)
    whole = metrics.fold(events)
    report = metrics.report(whole, len(events))
    assert report["revenue"] == revenue_oracle(steps)
    assert list(report["revenue"]) == sorted(report["revenue"])
    state = metrics.initial()
    for start, end in itertools.pairwise([0, *sorted(set(cuts)), len(events)]):
        state = orjson.loads(orjson.dumps(metrics.fold(events[start:end], state)))
    assert state == whole


def test_revenue_sums_the_largest_amounts_exactly() -> None:
    largest = "9999999999999.99"  # a float would lose the cents of their sum
    steps = history([(n, "advance", 1, 10**15 - 1) for n in (0, 1, 2) for _ in range(3)], ["EUR"])
    report = metrics.report(metrics.fold(recorded(steps)), 0)
    assert report["revenue"] == {"EUR": f"{3 * Decimal(largest)}"} == {"EUR": "29999999999999.97"}


# -- the same over a real SQLite log and rebuild ----------------------------------------------


def write_rows(store: EventStore, events: list[RecordedEvent]) -> None:
    """Rows as the previous release wrote them (SQLite): each event's data as it holds it,
    its own time, no event version (so the log's default, 1)."""
    rows = [
        (
            e.position,
            e.stream_id,
            e.version,
            e.type,
            e.data_json,
            e.metadata_json,
            e.recorded_at_text,
        )
        for e in events
    ]
    with store.db.connection_context(), store.db.atomic("IMMEDIATE"):
        for row in rows:
            store.db.execute_sql(
                "INSERT INTO events (position, stream_id, version, type, data, metadata, "
                "recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                row,
            )


def append_v2(store: EventStore, steps: list[Step]) -> None:
    """The same orders written by this release: through the store, at v2 in USD."""
    versions: Counter[str] = Counter()
    for step in steps:
        event = decode_event(step.type, step.data)
        assert event is not None
        store.append(step.order_id, [event], versions[step.order_id])
        versions[step.order_id] += 1


def listed_views(store: EventStore) -> dict[str, dict[str, Any]]:
    page = OrderStatusModel(store).list(limit=100)
    return {row.order_id: order_status.view(row) for row in page.rows}


# What depends on when events were recorded (and, for a report, where): the order view's
# times, and the metrics' times and position.
TIMED = {
    "placed_at",
    "processing_started_at",
    "completed_at",
    "processing_time_seconds",
    "average_processing_time_seconds",
    "average_end_to_end_seconds",
    "processing_time_percentiles_seconds",
    "processing_time_histogram_seconds",
    "position",
}


def timeless(figures: dict[str, Any]) -> dict[str, Any]:
    """A view or a report without what depends on when its events were recorded."""
    return {key: value for key, value in figures.items() if key not in TIMED}


@given(actions=ACTIONS, old=ORDER_INDEXES)
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_a_rebuild_of_a_log_with_v1_rows_equals_the_folds_of_the_same_orders_at_v2_in_usd(
    actions: list[tuple[int, str, int, int]], old: frozenset[int], tmp_path_factory: Any
) -> None:
    steps = history(actions, ["USD"])
    v1_orders = frozenset(f"order-{n}" for n in old)
    directory = tmp_path_factory.mktemp("currency")
    previous = make_store(f"sqlite:///{directory / 'previous.db'}", group_commit=False)
    current = make_store(f"sqlite:///{directory / 'current.db'}", group_commit=False)
    try:
        write_rows(previous, recorded(steps, v1_orders))
        append_v2(current, steps)
        as_v2 = recorded(steps)  # the v1 rows' orders at v2 in USD, at the same times

        report = rebuild(previous, page=4)
        assert report == metrics.report(metrics.fold(as_v2), len(steps))
        rebuild_order_status(previous, page=3)
        assert listed_views(previous) == views(as_v2)

        appended = rebuild(current, page=4)
        assert timeless(appended) == timeless(report)
        rebuild_order_status(current, page=3)
        assert {k: timeless(v) for k, v in listed_views(current).items()} == {
            k: timeless(v) for k, v in views(as_v2).items()
        }
    finally:
        previous.close()
        current.close()


# -- a node: the default is for new orders only ---------------------------------------------


def test_a_node_with_another_default_reads_an_order_of_the_previous_release_as_usd(
    sqlite_url: str,
) -> None:
    store = make_store(sqlite_url, group_commit=False)
    placed = {"order_id": "old-1", "user_id": 7, "item_ids": ["a"], "total_amount": "3.50"}
    write_rows(store, [RecordedEvent.of(1, "old-1", 1, "OrderPlaced", placed, {}, T0, 1)])
    store.close()

    # No grace for the old order, whose placing names no node: the worker takes it at once.
    settings = settings_for(sqlite_url, default_currency="EUR", pending_grace=0)
    node = Node(settings).start(bind=False)
    try:
        client = falcon.testing.TestClient(node.app)
        assert client.simulate_get("/orders/old-1").json["currency"] == "USD"
        new = post(
            client, {"order_id": "new-1", "user_id": 7, "item_ids": ["b"], "total_amount": 2}
        )
        assert (new.status_code, new.json["currency"]) == (201, "EUR")
        assert node.worker.wait_idle(IDLE)
        listed = client.simulate_get("/orders").json["orders"]
        assert [(o["order_id"], o["status"], o["currency"]) for o in listed] == [
            ("old-1", "Completed", "USD"),
            ("new-1", "Completed", "EUR"),
        ]
        (first, *_) = client.simulate_get("/orders/old-1/events").json["events"]
        assert first["data"] == {**placed, "currency": "USD"}
        assert client.simulate_get("/metrics").json["revenue"] == {"EUR": "2.00", "USD": "3.50"}
        # The same order again, with no currency: on this node that means EUR, another order.
        assert post(client, placed).status_code == 409
    finally:
        node.stop()


# -- upgrading what an earlier release stored -------------------------------------------------


CURRENCY_MIGRATION = 9


def test_order_status_rows_of_an_earlier_release_are_usd_after_migration_9(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The schema as the previous release left it: every migration but this one's."""
    earlier = tuple(m for m in schema.MIGRATIONS if m.version < CURRENCY_MIGRATION)
    db = open_database(database_url)
    try:
        with monkeypatch.context() as previous_release:
            previous_release.setattr(schema, "MIGRATIONS", earlier)
            previous_release.setattr(schema, "LATEST", earlier[-1].version)
            schema.migrate(db, EventStore(db).backend)
    finally:
        db.close_all()
    placed = '{"order_id":"old-1","user_id":7,"item_ids":["a"],"total_amount":"3.50"}'
    columns = ", ".join(f for f in OrderRow._fields if f != "currency")
    admin_execute(
        database_url,
        [
            f"INSERT INTO {table} ({columns}) VALUES ('old-1', '7', 'Pending', '{placed}', 0, "
            "'gone', NULL, '2026-11-01T10:00:00.000000Z', NULL, NULL, 1, 1, 1)"
            for table in ("order_status", "order_status_b")
        ],
    )

    store = make_store(database_url)  # migrates to the latest version
    try:
        assert schema.current_version(store.db) == schema.LATEST
        for table in ("order_status", "order_status_b"):
            assert raw_fetch(database_url, f"SELECT currency FROM {table}") == [("USD",)]
        row = OrderStatusModel(store).get("old-1")
        assert row is not None and order_status.view(row)["currency"] == "USD"
    finally:
        store.close()


# The metrics state exactly as the previous release stored it: no format, no revenue, open
# orders with their two times only. Its counts are marked (1000 more): a state folded
# on from it would show them.
PREVIOUS_STATE = {
    "total_orders": 1003,
    "status_counts": {"Pending": 1001, "Processing": 0, "Completed": 2},
    "orders_processed": 2,
    "processing_us_total": 2_000_000,
    "end_to_end_us_total": 4_000_000,
    "processing_us_buckets": {"7254": 2},
    "processing_us_accuracy": 0.001,
    "open": {"c": [1772355600000000, None]},
}


def test_a_metrics_state_of_the_previous_release_is_folded_again_from_the_start(
    store: EventStore, caplog: pytest.LogCaptureFixture
) -> None:
    worker = worker_id_for("n1", "w")
    for order_id, currency, amount in (("a", "EUR", "19.99"), ("b", "USD", "5.00")):
        store.append(order_id, [OrderPlaced(order_id, 1, ("x",), amount, currency)], 0)
        claimed = OrderProcessingStarted(order_id, 1, worker)
        store.append(order_id, [claimed, OrderCompleted(order_id, 1)], 1)
    store.append("c", [OrderPlaced("c", 1, ("x",), "1.00")], 0)
    head = readable(store).last_position()
    # Stored at the head: a projector folding on from it would never get past it to save.
    assert store.save_projection(NAME, head, orjson.dumps(PREVIOUS_STATE))

    with caplog.at_level(logging.INFO, logger="projections.projector"):
        projector = Projector(store, OrderStatusModel(store), save_every=0)
        projector.catch_up()
    assert len(refolds(caplog)) == 1
    expected = metrics.fold(store.read_all(0, 100))
    report = projector.report()
    assert report == metrics.report(expected, head)
    assert report["total_orders"] == 3  # not the stored state's 1003
    assert report["revenue"] == {"EUR": "19.99", "USD": "5.00"}
    position, _, saved = store.load_projection(NAME)
    assert position == head and saved is not None and orjson.loads(saved) == expected

    # Stored in this release's format now: the next start folds on from it, and says nothing.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="projections.projector"):
        restarted = Projector(store, OrderStatusModel(store), save_every=0)
        restarted.catch_up()
    assert refolds(caplog) == []
    assert restarted.report() == report


def refolds(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The projector's lines saying it folds the metrics again."""
    return [r.getMessage() for r in caplog.records if "earlier format" in r.getMessage()]
