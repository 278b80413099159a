"""The read models: the order view and metrics folds over plain event lists, the quantile
sketch, and the impure edges (projector checkpoints, rebuild) on a real store."""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
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
from orderlog.domain.policy import worker_id_for
from orderlog.storage.store import AppendRequest, EventStore, parse_time
from projections import completions, metrics, order_status, quantile
from projections.order_status import OrderStatusModel
from projections.projector import NAME, Projector
from projections.rebuild import rebuild
from tests.support import make_store, nth_positions, readable

EVENT_CLASSES = (OrderPlaced, OrderProcessingStarted, OrderCompleted)
T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
US = timedelta(microseconds=1)


@dataclass(frozen=True)
class OrderNoted:
    """An event type this version of the code does not know."""

    order_id: str
    note: str


def placed(order_id: str, amount: str = "19.99") -> OrderPlaced:
    return OrderPlaced(order_id, "u-1", ("sku-1", 7), amount)


def data_of(event: Any) -> dict[str, Any]:
    return event_data(event) if isinstance(event, EVENT_CLASSES) else dataclasses.asdict(event)


def record(
    history: list[tuple[str, Any, datetime]], first_position: int = 1
) -> list[RecordedEvent]:
    """RecordedEvents as the log would hold them: global positions, per-stream versions."""
    versions: Counter[str] = Counter()
    recorded = []
    for position, (stream_id, event, at) in enumerate(history, start=first_position):
        versions[stream_id] += 1
        recorded.append(
            RecordedEvent.of(
                position=position,
                stream_id=stream_id,
                version=versions[stream_id],
                type=type(event).__name__,
                data=data_of(event),
                metadata={"event_id": f"e{position}"},
                recorded_at=at,
            )
        )
    return recorded


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def lifecycle(order_id: str, start: float, claims: list[float], done: float | None) -> list:
    history: list[tuple[str, Any, datetime]] = [(order_id, placed(order_id), at(start))]
    for attempt, claimed in enumerate(claims, start=1):
        history.append(
            (order_id, OrderProcessingStarted(order_id, attempt, f"w{attempt}"), at(claimed))
        )
    if done is not None:
        history.append((order_id, OrderCompleted(order_id, len(claims)), at(done)))
    return history


# -- the metrics fold ----------------------------------------------------------------------


def test_metrics_of_an_empty_log() -> None:
    assert metrics.report(metrics.fold([]), 0) == {
        "total_orders": 0,
        "orders_processed": 0,
        "average_processing_time_seconds": None,
        "average_end_to_end_seconds": None,
        "processing_time_percentiles_seconds": {"p50": None, "p95": None, "p99": None},
        "processing_time_histogram_seconds": [],
        "status_counts": {"Pending": 0, "Processing": 0, "Completed": 0},
        "revenue": {},
        "position": 0,
    }


def test_metrics_count_statuses_and_time_completed_orders() -> None:
    history = (
        lifecycle("a", 0, [1], 3)  # 2 s processing, 3 s end to end
        + lifecycle("b", 0, [2], 6)  # 4 s processing, 6 s end to end
        + lifecycle("c", 1, [2], None)
        + lifecycle("d", 2, [], None)
    )
    history.sort(key=lambda entry: entry[2])
    report = metrics.report(metrics.fold(record(history)), len(history))
    assert report["total_orders"] == 4
    assert report["orders_processed"] == 2
    assert report["status_counts"] == {"Pending": 1, "Processing": 1, "Completed": 2}
    assert report["average_processing_time_seconds"] == 3.0
    assert report["average_end_to_end_seconds"] == 4.5
    percentiles = report["processing_time_percentiles_seconds"]
    assert percentiles["p50"] == pytest.approx(2.0, rel=quantile.RELATIVE_ACCURACY)
    # Percentiles are of the lower rank, floor(q * (n - 1)): of two values, p99 is the lower.
    assert percentiles["p99"] == pytest.approx(2.0, rel=quantile.RELATIVE_ACCURACY)
    assert report["position"] == len(history)


def test_metrics_keep_a_reclaimed_order_processing_once_and_time_the_last_claim() -> None:
    events = record(lifecycle("a", 0, [1, 10, 20], None))
    state = metrics.fold(events)
    assert state["status_counts"] == {"Pending": 0, "Processing": 1, "Completed": 0}
    completed = record(lifecycle("a", 0, [1, 10, 20], 20.5))
    report = metrics.report(metrics.fold(completed), 5)
    assert report["status_counts"] == {"Pending": 0, "Processing": 0, "Completed": 1}
    assert report["average_processing_time_seconds"] == 0.5
    assert report["average_end_to_end_seconds"] == 20.5


def test_metrics_pass_unknown_event_types_through_unchanged() -> None:
    events = record([*lifecycle("a", 0, [1], None), ("a", OrderNoted("a", "x"), at(2))])
    before = metrics.fold(events[:-1])
    snapshot = orjson.loads(orjson.dumps(before))
    after = metrics.apply(before, events[-1])
    assert after == snapshot


def test_metrics_ignore_events_for_orders_they_never_saw_placed() -> None:
    events = record(
        [
            ("ghost", OrderProcessingStarted("ghost", 1, "w"), at(1)),
            ("ghost", OrderCompleted("ghost", 1), at(2)),
        ]
    )
    assert metrics.fold(events) == metrics.initial()


def test_metrics_hold_only_orders_not_yet_completed() -> None:
    history = lifecycle("a", 0, [1], 2) + lifecycle("b", 3, [4], None) + lifecycle("c", 5, [], None)
    state = metrics.fold(record(history))
    assert sorted(state["open"]) == ["b", "c"]


# -- random histories: one go == chunks with a JSON round-trip == rebuild --------------------

ACTIONS = st.lists(
    st.tuples(
        st.integers(0, 7),  # which order
        st.sampled_from(["advance", "advance", "reclaim", "note"]),
        st.integers(0, 5_000_000),  # microseconds since the previous event
    ),
    max_size=80,
)


def build_history(actions: list[tuple[int, str, int]]) -> list[tuple[str, Any]]:
    """A valid interleaving of many orders' lives, with re-claims and unknown events."""
    status: dict[str, tuple[str, int]] = {}
    history: list[tuple[str, Any]] = []
    for index, kind, _gap in actions:
        order_id = f"order-{index}"
        current, attempt = status.get(order_id, ("", 0))
        if not current:
            event: Any = placed(order_id, f"{index}.{index}0")
            status[order_id] = ("Pending", 0)
        elif kind == "note" or current == "Completed":
            event = OrderNoted(order_id, kind)
        elif current == "Pending" or kind == "reclaim":
            event = OrderProcessingStarted(order_id, attempt + 1, f"w{attempt + 1}")
            status[order_id] = ("Processing", attempt + 1)
        else:
            event = OrderCompleted(order_id, attempt)
            status[order_id] = ("Completed", attempt)
        history.append((order_id, event))
    return history


def timed(actions: list[tuple[int, str, int]]) -> list[RecordedEvent]:
    moment = T0
    history = []
    for (order_id, event), (_, _, gap) in zip(build_history(actions), actions, strict=True):
        moment += gap * US
        history.append((order_id, event, moment))
    return record(history)


def fold_in_chunks(events: list[RecordedEvent], cuts: list[int]) -> metrics.State:
    """As the projector does: fold a page, store the state as JSON, load it, fold on."""
    state = metrics.initial()
    bounds = [0, *sorted(set(cuts)), len(events)]
    for start, end in itertools.pairwise(bounds):
        state = orjson.loads(orjson.dumps(metrics.fold(events[start:end], state)))
    return state


def assert_state_matches_order_rows(state: metrics.State, events: list[RecordedEvent]) -> None:
    """The metrics agree with an independent oracle: each order's own row."""
    streams: dict[str, list[RecordedEvent]] = {}
    for event in events:
        streams.setdefault(event.stream_id, []).append(event)
    rows = [row for stream in streams.values() if (row := order_status.fold(stream))]
    statuses = Counter(row.status for row in rows)
    done = [row for row in rows if row.status == "Completed"]

    def micros(start: str | None, end: str | None) -> int:
        assert start is not None and end is not None  # a completed order's row has both
        return (parse_time(end) - parse_time(start)) // US

    assert state["total_orders"] == len(rows)
    assert state["status_counts"] == {name: statuses[name] for name in metrics.STATUSES}
    assert state["orders_processed"] == len(done)
    assert state["processing_us_total"] == sum(
        micros(row.started_at, row.completed_at) for row in done
    )
    assert state["end_to_end_us_total"] == sum(
        micros(row.placed_at, row.completed_at) for row in done
    )
    assert sorted(state["open"]) == sorted(r.order_id for r in rows if r.status != "Completed")
    assert sum(state["processing_us_buckets"].values()) == len(done)


@given(actions=ACTIONS, data=st.data())
@settings(max_examples=300, deadline=None)
def test_folding_in_chunks_with_a_json_round_trip_equals_folding_in_one_go(
    actions: list[tuple[int, str, int]], data: st.DataObject
) -> None:
    events = timed(actions)
    whole = metrics.fold(events)
    cuts = data.draw(st.lists(st.integers(0, len(events)), max_size=8), label="cuts")
    assert fold_in_chunks(events, cuts) == whole
    assert metrics.report(fold_in_chunks(events, cuts), len(events)) == metrics.report(
        whole, len(events)
    )
    assert_state_matches_order_rows(whole, events)


def append_history(store: EventStore, history: list[tuple[str, Any]]) -> None:
    versions: Counter[str] = Counter()
    for order_id, event in history:
        if isinstance(event, EVENT_CLASSES):
            store.append(order_id, [event], versions[order_id])
        else:
            append_foreign(store, order_id, versions[order_id] + 1, event)
        versions[order_id] += 1


def append_foreign(store: EventStore, stream_id: str, version: int, event: Any) -> None:
    """Write a type this code does not know, as a newer node sharing the log would (SQLite)."""
    with store.db.connection_context(), store.db.atomic("IMMEDIATE"):
        position = store.db.execute_sql("SELECT COALESCE(MAX(position), 0) FROM events").fetchone()
        row = (
            position[0] + 1,
            stream_id,
            version,
            type(event).__name__,
            orjson.dumps(dataclasses.asdict(event)).decode(),
            "{}",
            "2024-05-01T12:00:00.000000Z",
        )
        store.db.execute_sql(
            "INSERT INTO events (position, stream_id, version, type, data, metadata, recorded_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            row,
        )


@given(actions=ACTIONS, data=st.data())
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
def test_rebuild_on_a_real_store_equals_the_folds(
    actions: list[tuple[int, str, int]], data: st.DataObject, tmp_path_factory: Any
) -> None:
    directory = tmp_path_factory.mktemp("rebuild")
    store = make_store(f"sqlite:///{directory / 'orderlog.db'}", group_commit=False)
    try:
        append_history(store, build_history(actions))
        events = store.read_all(0, 10_000)
        head = store.head()
        assert len(events) == head == len(actions)
        whole = metrics.fold(events)
        cuts = data.draw(st.lists(st.integers(0, len(events)), max_size=8), label="cuts")
        chunked = fold_in_chunks(events, cuts)

        report = rebuild(store, page=3)

        assert chunked == whole
        assert report == metrics.report(whole, head)
        position, _, saved = store.load_projection(NAME)
        assert position == head
        assert saved is not None
        assert orjson.loads(saved) == whole
        assert_state_matches_order_rows(whole, events)
    finally:
        store.close()


# -- the completions fold ------------------------------------------------------------------


def signed(events: list[RecordedEvent], node: str, worker: str) -> list[RecordedEvent]:
    """The events as a worker writes them: its node and its id in the metadata."""
    metadata = orjson.dumps({"node": node, "worker": worker}).decode()
    return [event._replace(metadata_json=metadata) for event in events]


def test_completions_time_each_order_completed_and_name_who_completed_it() -> None:
    history = lifecycle("a", 0, [1], 3) + lifecycle("b", 0.5, [2, 4], 6.5)
    history.sort(key=lambda entry: entry[2])
    events = signed(record(history), "n1", "n1.w")
    assert completions.fold(events, {}) == [
        completions.Completion("a", "n1", "n1.w", 2.0, 3.0),
        completions.Completion("b", "n1", "n1.w", 2.5, 6.0),
    ]


def test_completions_ignore_unknown_types_and_orders_never_seen_placed() -> None:
    events = record(
        [
            ("ghost", OrderProcessingStarted("ghost", 1, "w"), at(1)),
            ("ghost", OrderCompleted("ghost", 1), at(2)),
            ("ghost", OrderNoted("ghost", "x"), at(3)),
        ]
    )
    assert completions.fold(events, {}) == []


@given(actions=ACTIONS, cut=st.integers(0, 80))
@settings(max_examples=200, deadline=None)
def test_completions_of_a_page_use_the_metrics_open_orders_from_before_it(
    actions: list[tuple[int, str, int]], cut: int
) -> None:
    """As the projector folds: page by page, with the orders opened earlier taken from
    the metrics state (stored as JSON in between), the same completions as in one go."""
    events = timed(actions)
    before = orjson.loads(orjson.dumps(metrics.fold(events[:cut])))
    in_pages = completions.fold(events[:cut], {}) + completions.fold(events[cut:], before["open"])
    assert in_pages == completions.fold(events, {})
    assert len(in_pages) == metrics.fold(events)["orders_processed"]


# -- the quantile sketch -------------------------------------------------------------------


@given(st.lists(st.integers(0, 10**10), min_size=1, max_size=400))
@settings(max_examples=300)
def test_quantiles_are_within_the_relative_accuracy_of_exact_percentiles(
    values: list[int],
) -> None:
    buckets: dict[str, int] = {}
    for value in values:
        quantile.add(buckets, value)
    ordered = sorted(values)
    for q in (0.0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 1.0):
        exact = ordered[math.floor(q * (len(ordered) - 1))]
        estimate = quantile.quantile(buckets, q)
        assert estimate is not None
        assert abs(estimate - exact) <= quantile.RELATIVE_ACCURACY * exact + 1e-9 * max(exact, 1)


def test_quantile_of_no_values_is_none() -> None:
    assert quantile.quantile({}, 0.5) is None


def test_quantile_buckets_grow_with_the_log_of_the_range() -> None:
    buckets: dict[str, int] = {}
    for value in range(1, 1_000_001, 7):
        quantile.add(buckets, value)
    # ln(1e6) / ln(1.001 / 0.999) is about 6,908 buckets for six decades.
    assert len(buckets) <= 6_910
    assert sum(buckets.values()) == len(range(1, 1_000_001, 7))


def test_quantile_buckets_survive_a_json_round_trip() -> None:
    buckets: dict[str, int] = {}
    for value in (5, 50, 500, 5000):
        quantile.add(buckets, value)
    loaded = orjson.loads(orjson.dumps(buckets))
    assert [quantile.quantile(loaded, q) for q in (0.0, 0.5, 1.0)] == [
        quantile.quantile(buckets, q) for q in (0.0, 0.5, 1.0)
    ]


def test_quantiles_tell_apart_durations_a_fraction_of_a_millisecond_apart() -> None:
    # Orders at 0.2 s of simulated work differ by less than a millisecond when the node
    # is idle: at 1% every one of them fell in one bucket, and p50 equalled p95.
    buckets: dict[str, int] = {}
    for micros in range(200_400, 201_400, 20):  # 200.4 ms to 201.4 ms, evenly
        quantile.add(buckets, micros)
    p50, p95 = quantile.quantile(buckets, 0.5), quantile.quantile(buckets, 0.95)
    assert p50 is not None and p95 is not None
    assert p50 == pytest.approx(200_900, rel=quantile.RELATIVE_ACCURACY)
    assert p95 == pytest.approx(201_350, rel=quantile.RELATIVE_ACCURACY)
    assert round(p95 / 1000, 1) > round(p50 / 1000, 1)  # as the dashboard shows them, in ms


def test_the_histogram_spreads_round_bars_over_where_most_values_are() -> None:
    buckets: dict[str, int] = {}
    values = [*range(200_400, 203_400, 10), 30_000_000]  # 300 near 0.2 s, one retry at 30 s
    for micros in values:
        quantile.add(buckets, micros)
    bars = quantile.histogram(buckets)
    *spread, beyond = bars
    assert sum(count for _, _, count in bars) == len(values)
    assert beyond[2] == 1 and beyond[1] >= 30_000_000 * (1 - quantile.RELATIVE_ACCURACY)
    widths = {high - low for low, high, _ in spread}
    # 3 ms over at most 16 bars would be 187.5 µs, but a bucket at 203 ms spans 0.2%
    # (407 µs): bars that narrow would leave every other one empty. Rounded up: 500 µs.
    assert widths == {500}
    assert all(earlier[1] == later[0] for earlier, later in itertools.pairwise(bars))
    # From the smallest value to the 99th percentile, as the sketch knows them.
    low, high = quantile.quantile(buckets, 0.0), quantile.quantile(buckets, 0.99)
    assert low is not None and high is not None
    assert spread[0][0] <= low < spread[0][1] and spread[-1][0] <= high < spread[-1][1]
    assert len(spread) <= 17 and all(count > 0 for _, _, count in spread)


def test_the_histogram_of_one_value_is_one_bar_and_of_none_is_empty() -> None:
    buckets: dict[str, int] = {}
    assert quantile.histogram(buckets) == []
    quantile.add(buckets, 0)
    assert quantile.histogram(buckets) == [(0, 1, 1)]
    quantile.add(buckets, 0)
    assert quantile.histogram(buckets) == [(0, 1, 2)]
    one: dict[str, int] = {}
    quantile.add(one, 200_859)
    ((low, high, count),) = quantile.histogram(one)
    assert low <= 200_859 < high and count == 1


def test_a_state_stored_at_one_percent_is_counted_again_at_the_finer_accuracy() -> None:
    history = lifecycle("a", 0, [1], 3) + lifecycle("b", 0, [2], 6)  # 2 s and 4 s of work
    history.sort(key=lambda entry: entry[2])
    events = record(history)
    stored = orjson.loads(orjson.dumps(metrics.fold(events[:-1])))
    # As the earlier release stored it: no accuracy recorded, buckets of 1% (gamma 1.01/0.99).
    del stored["processing_us_accuracy"]
    stored["processing_us_buckets"] = {
        str(math.ceil(math.log(2_000_000) / math.log(1.01 / 0.99)) + 1): 1
    }
    report = metrics.report(stored, len(history) - 1)
    assert report["processing_time_percentiles_seconds"]["p50"] == pytest.approx(2.0, rel=0.011)
    state = metrics.fold(events[-1:], stored)
    assert state["processing_us_accuracy"] == quantile.RELATIVE_ACCURACY
    assert sum(state["processing_us_buckets"].values()) == 2
    buckets = state["processing_us_buckets"]
    assert quantile.quantile(buckets, 0.0) == pytest.approx(2_000_000, rel=0.011)
    assert quantile.quantile(buckets, 1.0) == pytest.approx(
        4_000_000, rel=quantile.RELATIVE_ACCURACY
    )


# -- the projector and rebuild on a real store (every backend) -------------------------------


def test_projector_reports_the_log_and_saves_its_checkpoint(store: EventStore) -> None:
    append_history(store, [("a", placed("a")), ("b", placed("b"))])
    (last,) = store.append("a", [OrderProcessingStarted("a", 1, "w")], 1)
    projector = Projector(readable(store), OrderStatusModel(store), save_every=0)
    projector.catch_up()
    report = projector.report()
    assert report["position"] == store.head() == last.position
    assert report["status_counts"] == {"Pending": 1, "Processing": 1, "Completed": 0}
    position, _, saved = store.load_projection(NAME)
    assert position == last.position
    assert saved is not None
    assert orjson.loads(saved) == metrics.fold(store.read_all(0, 100))


def test_new_projector_resumes_from_the_saved_checkpoint(store: EventStore) -> None:
    append_history(store, [("a", placed("a")), ("b", placed("b")), ("c", placed("c"))])
    first = Projector(readable(store), OrderStatusModel(store), save_every=0)
    first.catch_up()
    assert first.report()["total_orders"] == 3
    position, generation, saved = store.load_projection(NAME)
    assert position == store.last_position()
    # Mark the saved state: a projector that replays from 0 cannot report the marker.
    assert saved is not None
    marked = orjson.loads(saved)
    marked["total_orders"] += 1000
    marked["status_counts"]["Pending"] += 1000
    store.reset_projection(NAME)
    assert store.save_projection(NAME, position, orjson.dumps(marked), generation=generation)

    store.append("d", [placed("d")], 0)
    (last,) = store.append("a", [OrderProcessingStarted("a", 1, "w")], 1)
    resumed_projector = Projector(readable(store), OrderStatusModel(store), save_every=0)
    resumed_projector.catch_up()
    resumed = resumed_projector.report()

    assert resumed["total_orders"] == 1004
    assert resumed["status_counts"] == {"Pending": 1003, "Processing": 1, "Completed": 0}
    assert resumed["position"] == store.head() == last.position
    assert store.load_projection(NAME)[0] == last.position


def test_projector_applies_only_new_events_on_each_report(store: EventStore) -> None:
    projector = Projector(store, OrderStatusModel(store), save_every=0)
    projector.catch_up()
    assert projector.report()["total_orders"] == 0
    store.append("a", [placed("a")], 0)
    assert projector.wait_for(store.last_position(), 10)
    assert projector.report()["total_orders"] == 1
    *_, last = store.append("a", [OrderProcessingStarted("a", 1, "w"), OrderCompleted("a", 1)], 1)
    assert projector.wait_for(store.last_position(), 10)
    report = projector.report()
    assert report["orders_processed"] == 1
    assert report["total_orders"] == 1
    assert report["position"] == last.position


def test_projector_hands_each_page_s_completions_to_its_listener(store: EventStore) -> None:
    heard: list[completions.Completion] = []
    worker = {"node": "n1", "worker": "n1.w"}
    store.append("a", [placed("a")], 0, {"node": "n1"})
    (started,) = store.append("a", [OrderProcessingStarted("a", 1, "n1.w")], 1, worker)
    (done,) = store.append("a", [OrderCompleted("a", 1)], 2, worker)
    projector = Projector(readable(store), OrderStatusModel(store), page=2, completed=heard.extend)
    projector.catch_up()
    processing = (done.recorded_at - started.recorded_at).total_seconds()
    assert [(c.order_id, c.node, c.worker) for c in heard] == [("a", "n1", "n1.w")]
    assert heard[0].processing_seconds == pytest.approx(processing, abs=1e-6)
    assert projector.report()["orders_processed"] == 1


def test_projector_pages_through_a_log_longer_than_a_page(store: EventStore) -> None:
    append_history(store, [(f"o{n}", placed(f"o{n}")) for n in range(7)])
    projector = Projector(readable(store), OrderStatusModel(store), save_every=0, page=2)
    projector.catch_up()
    report = projector.report()
    assert report["total_orders"] == 7
    assert report["position"] == store.last_position()


def test_rebuild_replaces_a_stale_saved_state(store: EventStore) -> None:
    append_history(store, [("a", placed("a")), ("b", placed("b"))])
    last = readable(store).last_position()
    store.save_projection(NAME, last, orjson.dumps({**metrics.initial(), "total_orders": 99}))
    report = rebuild(store, page=1)
    assert report["total_orders"] == 2
    assert report["position"] == last
    position, _, saved = store.load_projection(NAME)
    assert position == last
    assert saved is not None
    assert orjson.loads(saved) == metrics.fold(store.read_all(0, 100))


# -- followers sharing the order-status checkpoint (every backend) ---------------------------
#
# Any number of followers (each node's projector, a sweep's own catching up, a rebuild) write
# the order-status rows and move one checkpoint. Whatever the interleaving, every order placed
# in the log must end with its row, at its stream's last version.


def place_orders(store: EventStore, order_ids: list[str]) -> None:
    store.append_many([AppendRequest(order_id, [placed(order_id)], 0) for order_id in order_ids])


def every_row(store: EventStore) -> dict[str, int]:
    """The live order-status rows, read page by page: order id -> version."""
    model = OrderStatusModel(store)
    rows: dict[str, int] = {}
    after: int | None = 0
    while after is not None:
        page = model.list(after=after, limit=500)
        rows.update((row.order_id, row.version) for row in page.rows)
        after = page.next_after
    return rows


def assert_every_order_has_its_row(store: EventStore) -> None:
    last: dict[str, int] = {}
    placed_ids: set[str] = set()
    for event in store.iter_all(0):
        last[event.stream_id] = event.version
        if event.type == OrderPlaced.__name__:
            placed_ids.add(event.stream_id)
    rows = every_row(store)
    missing = sorted(placed_ids - rows.keys())
    assert not missing, f"{len(missing)} of {len(placed_ids)} orders have no row: {missing}"
    assert rows == {order_id: last[order_id] for order_id in placed_ids}


def one_page(follower: OrderStatusModel) -> None:
    """Let a follower apply a single page (its own page size) from the checkpoint."""
    follower.catch_up(until=follower.checkpoint() + 1)


def test_a_projector_applies_every_event_when_another_follower_moves_the_checkpoint_mid_page(
    database_url: str,
) -> None:
    store = make_store(database_url, group_commit=False)
    try:
        place_orders(store, [f"o-{n}" for n in range(1, 61)])
        other = OrderStatusModel(store, page=7)  # another node's follower, out of step
        pages = itertools.count()

        def between_pages(page_completions: Any) -> None:
            if next(pages) % 2 == 0:  # the other one moves on every other page
                one_page(other)

        projector = Projector(
            readable(store), OrderStatusModel(store), page=10, completed=between_pages
        )
        assert projector.catch_up() == store.head()
        OrderStatusModel(store, page=10).catch_up()
        assert_every_order_has_its_row(store)
    finally:
        store.close()


def test_a_projector_continues_from_a_checkpoint_moved_back_by_a_rebuild_swapped_in(
    database_url: str,
) -> None:
    store = make_store(database_url, group_commit=False)
    try:
        place_orders(store, [f"o-{n}" for n in range(1, 61)])
        (fifteenth,) = nth_positions(database_url, 15)
        pages = itertools.count()

        def between_pages(page_completions: Any) -> None:
            if next(pages) == 2:  # a rebuild that got less far than the live rows swaps in
                rebuilt = OrderStatusModel(store, page=5, shadow=True)
                rebuilt.reset()
                rebuilt.catch_up(until=fifteenth)
                rebuilt.swap_in()

        projector = Projector(
            readable(store), OrderStatusModel(store), page=10, completed=between_pages
        )
        assert projector.catch_up() == store.head()
        assert OrderStatusModel(store).checkpoint() == store.head()
        assert_every_order_has_its_row(store)
    finally:
        store.close()


STEPS = st.lists(
    st.tuples(
        # place so many orders, move one order an event on, run a projector's whole round
        # (nested in the round that lets the step run), or one page of a sweep's follower
        st.sampled_from(["place", "advance", "round", "page", "page"]),
        st.integers(0, 999),  # how many orders (1 to 12), which order, projector or sweep
    ),
    max_size=40,
)


@given(
    first=st.integers(0, 40),
    projector_pages=st.lists(st.integers(1, 12), min_size=2, max_size=3),
    sweep_pages=st.lists(st.integers(1, 12), min_size=1, max_size=2),
    steps=STEPS,
)
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_followers_interleaved_at_random_leave_every_order_its_row(
    empty_database: Callable[[], str],
    first: int,
    projector_pages: list[int],
    sweep_pages: list[int],
    steps: list[tuple[str, int]],
) -> None:
    """Projectors take turns at rounds; between two pages of its round a projector lets the
    next step of the schedule run: appends, another projector's round, one page of a sweep."""
    store = make_store(empty_database(), group_commit=False)
    try:
        schedule = iter(steps)
        orders: list[str] = []
        busy: set[int] = set()

        def place(count: int) -> None:
            fresh = [f"o-{len(orders) + k}" for k in range(count)]
            place_orders(store, fresh)
            orders.extend(fresh)

        def round_of(index: int) -> None:
            if index not in busy:  # a projector's own round never nests in itself
                busy.add(index)
                try:
                    projectors[index].catch_up()
                finally:
                    busy.discard(index)

        def next_step(*_: Any) -> None:
            kind, n = next(schedule, ("done", 0))
            taken.append(kind)
            if kind == "place":
                place(1 + n % 12)
            elif kind == "advance" and orders:
                order_id = orders[n % len(orders)]
                version = store.stream_version(order_id)
                worker = worker_id_for("n1", "w")
                following = [OrderProcessingStarted(order_id, 1, worker)] * (version == 1)
                following += [OrderCompleted(order_id, 1)] * (version == 2)
                store.append(order_id, following, version)
            elif kind == "round":
                round_of(n % len(projectors))
            elif kind == "page":
                one_page(sweeps[n % len(sweeps)])

        projectors = [
            Projector(store, OrderStatusModel(store), page=page, completed=next_step)
            for page in projector_pages
        ]
        sweeps = [OrderStatusModel(store, page=page) for page in sweep_pages]
        place(first)
        taken: list[str] = []
        for turn in itertools.count():
            before = len(taken)
            round_of(turn % len(projectors))
            if len(taken) == before:  # nothing new to read: the schedule moves on by itself
                next_step()
            if taken[-1] == "done":
                break
        readable(store)
        assert projectors[0].catch_up() == store.head()  # the schedule is spent: one catches up
        assert OrderStatusModel(store).checkpoint() == store.head()
        assert_every_order_has_its_row(store)
    finally:
        store.close()
