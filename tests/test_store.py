"""The event store on every backend: atomic appends, version clashes, append-only, paging."""

from __future__ import annotations

import threading

import peewee
import pytest

from orderlog.domain.errors import AppendFailedError, ConcurrencyError
from orderlog.domain.events import OrderCompleted, OrderPlaced, OrderProcessingStarted
from orderlog.storage.store import AppendRequest, EventStore
from tests.support import (
    admin_execute,
    dense,
    logged_positions,
    make_store,
    nth_positions,
    raw_connection,
    raw_fetch,
    run_threads,
    wait_for,
)


def placed(order_id: str) -> OrderPlaced:
    return OrderPlaced(order_id, "u1", ("a", "b"), "10.00")


def test_append_assigns_versions_and_positions_in_order(
    store: EventStore, database_url: str
) -> None:
    first = store.append("o1", [placed("o1")], 0)
    second = store.append("o1", [OrderProcessingStarted("o1", 1, "w"), OrderCompleted("o1", 1)], 1)
    assert [e.version for e in first + second] == [1, 2, 3]
    assert [e.position for e in first + second] == nth_positions(database_url, 1, 2, 3)
    assert first[0].position < second[0].position < second[1].position
    events = store.read_stream("o1")
    assert [e.type for e in events] == ["OrderPlaced", "OrderProcessingStarted", "OrderCompleted"]
    assert events[0].data == {
        "order_id": "o1",
        "user_id": "u1",
        "item_ids": ["a", "b"],
        "total_amount": "10.00",
        "currency": "USD",
    }
    assert events == first + second
    assert store.head() == second[-1].position == store.last_position()


def test_version_clash_raises_and_leaves_the_log_untouched(store: EventStore) -> None:
    store.append("o1", [placed("o1")], 0)
    with pytest.raises(ConcurrencyError) as caught:
        store.append("o1", [OrderProcessingStarted("o1", 1, "w"), OrderCompleted("o1", 1)], 0)
    assert caught.value.actual == 1
    assert [e.version for e in store.read_stream("o1")] == [1]
    assert len(store.read_all(0)) == 1


def test_metadata_is_stored_with_an_event_id(store: EventStore) -> None:
    (event,) = store.append("o1", [placed("o1")], 0, {"correlation_id": "req-1"})
    stored = store.read_stream("o1")[0]
    assert stored.metadata["correlation_id"] == "req-1"
    assert stored.metadata["event_id"] == event.metadata["event_id"]
    assert stored.recorded_at == event.recorded_at
    assert stored.recorded_at.tzinfo is not None


def test_raw_update_and_delete_are_refused_by_the_database(store: EventStore) -> None:
    store.append("o1", [placed("o1")], 0)
    with store.db.connection_context():
        with pytest.raises(peewee.DatabaseError), store.db.atomic():
            store.db.execute_sql("UPDATE events SET type = 'Tampered'")
        with pytest.raises(peewee.DatabaseError), store.db.atomic():
            store.db.execute_sql("DELETE FROM events")
    assert [e.type for e in store.read_stream("o1")] == ["OrderPlaced"]


def test_read_all_pages_through_the_log_in_position_order(
    store: EventStore, database_url: str
) -> None:
    for n in range(25):
        store.append(f"o{n}", [placed(f"o{n}")], 0)
    seen, after = [], 0
    while page := store.read_all(after, 10):
        seen.extend(page)
        after = page[-1].position
    logged = logged_positions(database_url)
    assert [e.position for e in seen] == logged
    if dense(database_url):
        assert logged == list(range(1, 26))
    assert [e.stream_id for e in seen] == [f"o{n}" for n in range(25)]
    assert [e.position for e in store.iter_all(logged[19], page=2)] == logged[20:]


def test_up_to_version_reads_a_stream_as_it_was(store: EventStore) -> None:
    store.append("o1", [placed("o1"), OrderProcessingStarted("o1", 1, "w")], 0)
    assert [e.version for e in store.read_stream("o1", up_to_version=1)] == [1]
    assert store.read_stream("missing") == []


def test_concurrent_appends_to_one_stream_let_exactly_one_win(store: EventStore) -> None:
    store.append("o1", [placed("o1")], 0)
    wins, clashes = [], []

    def claim(n: int) -> None:
        try:
            store.append("o1", [OrderProcessingStarted("o1", 1, f"w{n}")], 1)
            wins.append(n)
        except ConcurrencyError:
            clashes.append(n)

    assert run_threads(8, claim) == []
    assert len(wins) == 1 and len(clashes) == 7
    assert [e.version for e in store.read_stream("o1")] == [1, 2]


def test_projection_checkpoint_never_moves_back(store: EventStore) -> None:
    assert store.load_projection("m") == (0, 0, None)
    assert store.save_projection("m", 5, b'{"a":1}')
    assert not store.save_projection("m", 3, b'{"a":0}')
    assert store.load_projection("m") == (5, 0, b'{"a":1}')
    store.reset_projection("m")
    assert store.load_projection("m") == (0, 0, None)


def test_a_rebuilt_projection_is_a_new_generation_no_older_one_overwrites(
    store: EventStore,
) -> None:
    assert store.save_projection("m", 5, b'{"old":1}')
    assert store.replace_projection("m", 3, b'{"rebuilt":1}') == 1  # back to 3: allowed
    assert not store.save_projection("m", 9, b'{"stale":1}', generation=0)
    assert store.load_projection("m") == (3, 1, b'{"rebuilt":1}')
    assert store.save_projection("m", 9, b'{"new":1}', generation=1)
    assert store.load_projection("m", with_state=False)[:2] == (9, 1)


@pytest.mark.parametrize("backend", ["mysql"], indirect=True)
def test_a_first_checkpoint_lost_to_a_deadlock_is_not_stored_and_no_error(
    database_url: str,
) -> None:
    """Two processes saving a projection no process saved before both look for its row
    (holding the gap it would go in) and then both insert it: MariaDB ends one as a
    deadlock's victim. As with a duplicate, the loser stored nothing, and says so."""
    store = make_store(database_url, group_commit=False)
    outcome: list[object] = []
    try:
        with raw_connection(database_url) as other, raw_connection(database_url) as watcher:
            cursor = other.cursor()
            cursor.execute("BEGIN")
            # A row of its own first: the other transaction weighs more, so InnoDB ends
            # the store's when the two deadlock.
            cursor.execute("INSERT INTO projections (name, position, state) VALUES ('a', 1, '')")
            cursor.execute("UPDATE projections SET position = 1 WHERE name = 'm'")  # the gap
            saving = threading.Thread(
                target=lambda: outcome.append(_outcome(store.save_projection, "m", 5, b"{}"))
            )
            saving.start()
            looking = watcher.cursor()

            def insert_waits() -> bool:
                looking.execute(
                    "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                    "WHERE INFO LIKE 'INSERT INTO projections%%'"
                )
                return bool(looking.fetchone()[0])

            wait_for(insert_waits, timeout=30, what="the store's INSERT waiting")
            cursor.execute("INSERT INTO projections (name, position, state) VALUES ('m', 7, '')")
            cursor.execute("COMMIT")
            saving.join(30)
        assert outcome == [False]
        assert store.load_projection("m")[0] == 7  # the other's, untouched
    finally:
        store.close()


def _outcome(call: object, *args: object) -> object:
    try:
        return call(*args)  # type: ignore[operator]
    except BaseException as exc:  # handed back to the test's thread
        return exc


def test_schema_creation_is_idempotent(database_url: str) -> None:
    first = make_store(database_url)
    first.append("o1", [placed("o1")], 0)
    first.close()
    again = make_store(database_url)
    assert again.head() == logged_positions(database_url)[0]
    again.close()


def test_event_ids_are_random_version_4_uuids() -> None:
    import uuid

    from orderlog.storage.row import new_event_id

    ids = [new_event_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for text in ids[:200]:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant) == (4, uuid.RFC_4122)
        assert str(parsed) == text


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_a_refused_write_without_group_commit_is_answered_as_failed(database_url: str) -> None:
    """The failed transaction's connection is closed for good; the append still answers."""
    store = make_store(database_url, group_commit=False)
    try:
        admin_execute(
            database_url,
            [
                "CREATE FUNCTION refuse() RETURNS trigger AS "
                "$$ BEGIN RAISE EXCEPTION 'refused'; END $$ LANGUAGE plpgsql",
                "CREATE TRIGGER refuse BEFORE INSERT ON events "
                "FOR EACH ROW EXECUTE FUNCTION refuse()",
            ],
        )
        with pytest.raises(AppendFailedError):
            store.append("o1", [placed("o1")], 0)
        admin_execute(database_url, ["DROP TRIGGER refuse ON events", "DROP FUNCTION refuse()"])
        (event,) = store.append("o1", [placed("o1")], 0)
        assert logged_positions(database_url) == [event.position]
    finally:
        store.close()


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_a_batch_larger_than_one_transactions_positions_is_committed_in_several(
    database_url: str,
) -> None:
    """PostgreSQL: a transaction numbers at most ``span`` events (its positions come from
    its transaction id); a larger batch is split, an append that large is refused."""
    store = make_store(database_url, group_commit=False)
    try:
        ((base, span),) = raw_fetch(database_url, "SELECT base, span FROM feed_origin")
        outcomes = store.append_many(
            [AppendRequest(f"o{n}", [placed(f"o{n}")], 0) for n in range(span * 2 + 500)]
        )
        positions = [recorded[0].position for recorded in outcomes]  # type: ignore[index]
        assert positions == sorted(positions) == logged_positions(database_url)
        transactions = {(position - base) // span for position in positions}
        assert len(transactions) == 3
        with pytest.raises(AppendFailedError, match="more than one transaction holds"):
            store.append("big", [placed("big")] * (span + 1), 0)
        assert store.stream_version("big") == 0
    finally:
        store.close()
