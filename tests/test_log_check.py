"""``orderlog log check``: every event this release cannot read, and every stream that
breaks the order's rules, is named by its position, type and reason; a good log checks
clean with its count. The fold is checked with plain lists of events; the store's
pages on every backend; the command as a real subprocess beside a real server on SQLite.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orderlog.domain.errors import InvalidTransitionError
from orderlog.domain.events import (
    Event,
    OrderCompleted,
    OrderPlaced,
    OrderProcessingStarted,
    RecordedEvent,
    event_data,
    event_type,
)
from orderlog.domain.order import (
    OrderState,
    PlaceOrder,
    apply_state,
    complete_order,
    place_order,
    start_processing,
)
from orderlog.storage import schema
from orderlog.storage.database_url import parse_url
from orderlog.storage.node_lock import offline_rebuild_guard
from orderlog.storage.store import EventStore
from projections.log_check import (
    LogCheck,
    Problem,
    Summary,
    check_events,
    check_store,
    open_log,
)
from tests.support import (
    ROOT,
    ServerProcess,
    all_done,
    logged_positions,
    make_store,
    raw_connection,
    raw_fetch,
    readable,
    start_server,
)

AT = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
V1_SQLITE = ROOT / "tests" / "data" / "schema-v1.sqlite.sql"
NEEDS_MIGRATION_8 = "needs migration 8 (event_version column)"


# -- plain lists of events --------------------------------------------------------------


def recorded(
    position: int,
    event: Event,
    *,
    version: int | None = None,
    stream_id: str | None = None,
    event_version: int | None = None,
) -> RecordedEvent:
    """``event`` as the log holds it, at ``position``; its version by default its position."""
    return RecordedEvent.of(
        position,
        stream_id or event.order_id,
        position if version is None else version,
        event_type(event),
        event_data(event),
        {"event_id": f"e{position}"},
        AT,
        event_version,
    )


def raw(position: int, stream_id: str, version: int, type_name: str, data: str) -> RecordedEvent:
    """A row holding exactly this text, as a newer release or a damaged copy may hold it."""
    return RecordedEvent(position, stream_id, version, type_name, AT, data, "{}", "", 1)


def placed(order_id: str = "o-1") -> OrderPlaced:
    return OrderPlaced(order_id, "u-1", ("sku-1", 42), "19.99", "EUR")


def claim(attempt: int = 1, order_id: str = "o-1") -> OrderProcessingStarted:
    return OrderProcessingStarted(order_id, attempt, "node-a/gen1/0")


def done(attempt: int = 1, order_id: str = "o-1") -> OrderCompleted:
    return OrderCompleted(order_id, attempt)


def in_order(*events: Event) -> list[RecordedEvent]:
    """One stream's events at positions and versions 1, 2, 3…"""
    return [recorded(n, event) for n, event in enumerate(events, start=1)]


def reasons(problems: list[Problem]) -> list[tuple[int, str]]:
    return [(p.position, p.reason) for p in problems]


def test_a_history_the_rules_wrote_has_no_problems() -> None:
    events = in_order(placed(), claim(1), claim(2), done(2))  # a re-claim after a crash
    assert check_events(events) == []


def test_an_order_placed_at_v1_without_currency_is_read_as_this_release_reads_it() -> None:
    data = {"order_id": "o-1", "user_id": 7, "item_ids": ["a"], "total_amount": "3.50"}
    v1 = RecordedEvent.of(1, "o-1", 1, "OrderPlaced", data, {}, AT, event_version=1)
    assert check_events([v1, recorded(2, claim()), recorded(3, done())]) == []


def test_an_unknown_type_is_named_and_its_stream_folds_on_as_the_write_side_does() -> None:
    shipped = raw(2, "o-1", 2, "OrderShipped", '{"order_id": "o-1"}')
    events = [recorded(1, placed()), shipped, recorded(3, claim()), recorded(4, done())]
    (problem,) = check_events(events)
    assert (problem.position, problem.type) == (2, "OrderShipped")
    assert problem.reason.startswith("unknown type: this release knows OrderPlaced, ")


def test_a_version_newer_than_this_release_knows_is_named_with_both_versions() -> None:
    events = [recorded(1, placed(), event_version=3), recorded(2, claim())]
    (problem,) = check_events(events)
    assert (problem.position, problem.type) == (1, "OrderPlaced")
    assert problem.reason == "the log holds OrderPlaced v3; this release reads up to v2"


def test_a_version_no_upcaster_starts_from_is_named() -> None:
    (problem,) = check_events([recorded(1, placed(), event_version=0)])
    assert problem.reason == "stored at v0, which no upcaster reads"


@pytest.mark.parametrize(
    ("type_name", "data", "reason"),
    [
        ("OrderPlaced", '{"order_id": "o-1", ', "data is not JSON: "),
        ("OrderPlaced", '["o-1", "u-1"]', "data is not a JSON object"),
        ("OrderPlaced", '"o-1"', "data is not a JSON object"),
        (
            "OrderPlaced",
            '{"order_id": "o-1", "user_id": 1, "total_amount": "1.00"}',
            "data does not fit OrderPlaced: no field 'item_ids'",
        ),
        (
            "OrderPlaced",
            '{"order_id": "o-1", "user_id": 1, "item_ids": 7, "total_amount": "1.00"}',
            "data does not fit OrderPlaced: ",
        ),
        ("OrderCompleted", '{"order_id": "o-1"}', "data does not fit OrderCompleted: "),
        (
            "OrderCompleted",
            '{"order_id": "o-1", "attempt": 1, "colour": "red"}',
            "data does not fit OrderCompleted: ",
        ),
    ],
    ids=["not-json", "array", "string", "missing-key", "items-not-a-list", "missing", "extra"],
)
def test_data_that_does_not_decode_is_named(type_name: str, data: str, reason: str) -> None:
    (problem,) = check_events([raw(1, "o-1", 1, type_name, data)])
    assert (problem.position, problem.type) == (1, type_name)
    assert problem.reason.startswith(reason), problem.reason


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [("[]", "metadata is not a JSON object"), ("{oops", "metadata is not JSON: ")],
)
def test_metadata_that_is_not_a_json_object_is_named(metadata: str, reason: str) -> None:
    good = recorded(1, placed())
    (problem,) = check_events([good._replace(metadata_json=metadata), recorded(2, claim())])
    assert problem.position == 1 and problem.reason.startswith(reason), problem


def test_past_an_event_it_cannot_read_a_stream_is_checked_only_for_its_versions() -> None:
    unreadable = raw(1, "o-1", 1, "OrderPlaced", "{}")
    later = [recorded(2, claim()), recorded(3, done()), recorded(5, claim(2), version=5)]
    found = check_events([unreadable, *later])
    assert reasons(found) == [
        (1, "data does not fit OrderPlaced: no field 'item_ids'"),
        (5, "version 5 follows version 3 in its stream"),
    ]


@pytest.mark.parametrize(
    ("history", "reason"),
    [
        ([placed(), done()], "order 'o-1' is Pending: only a Processing order completes"),
        ([claim()], "order 'o-1' is not placed: processing cannot start"),
        ([done()], "order 'o-1' is not placed: only a Processing order completes"),
        ([placed(), placed()], "the order was placed already"),
        ([placed(), claim(), done(), placed()], "the order was placed already"),
        ([placed(), claim(), done(), claim(2)], "order 'o-1' is Completed: processing cannot"),
        ([placed(), claim(2)], "attempt 2, where the rules give attempt 1"),
        ([placed(), claim(), claim(2), done(1)], "attempt 1, where the rules give attempt 2"),
        ([placed(), claim(order_id="o-2")], "names order 'o-2'"),
    ],
    ids=[
        "completion-without-claim",
        "claim-before-placing",
        "completion-before-placing",
        "placed-twice",
        "placed-after-completion",
        "claim-after-completion",
        "attempt-skipped",
        "completion-of-an-old-attempt",
        "another-order",
    ],
)
def test_a_stream_the_rules_could_not_have_written_is_named_at_its_first_wrong_event(
    history: list[Event], reason: str
) -> None:
    events = [recorded(n, e, stream_id="o-1") for n, e in enumerate(history, start=1)]
    (problem,) = check_events(events)
    assert problem.position == len(history) and problem.stream_id == "o-1"
    assert problem.reason.startswith(reason), problem.reason


def test_the_rules_are_not_judged_past_a_streams_first_broken_rule() -> None:
    # Completed without a claim; what follows would only repeat it.
    events = in_order(placed(), done(), claim(), done(), claim(2))
    assert [p.position for p in check_events(events)] == [2]


def test_a_version_gap_is_named_once_and_the_stream_checked_on() -> None:
    events = [
        recorded(1, placed()),
        recorded(2, claim(), version=3),
        recorded(3, done(), version=4),
        recorded(4, placed("o-2"), version=2),
    ]
    assert reasons(check_events(events)) == [
        (2, "version 3 follows version 1 in its stream"),
        (4, "version 2 follows version 0 in its stream"),
    ]


def test_streams_are_folded_apart_and_across_pages() -> None:
    events = [
        recorded(1, placed("a")),
        recorded(2, placed("b"), version=1),
        recorded(3, claim(order_id="b"), version=2),
        recorded(4, done(order_id="a"), version=2),  # a was never claimed
        recorded(5, claim(order_id="a"), version=3),
        recorded(6, done(order_id="b"), version=3),
    ]
    whole = check_events(events)
    assert reasons(whole) == [(4, "order 'a' is Pending: only a Processing order completes")]
    for cut in range(len(events) + 1):
        check = LogCheck()
        assert check.check(events[:cut]) + check.check(events[cut:]) == whole
        assert check.streams == 2


def test_each_problem_is_one_line_whatever_the_log_holds() -> None:
    (problem,) = check_events([raw(9, "o\n1", 1, "Order\nShipped", "{}")])
    line = str(problem)
    assert "\n" not in line
    assert line.startswith("position 9: 'Order\\nShipped' in stream 'o\\n1': unknown type")


# Commands on a few orders, in any order; what the rules refuse is left out.
COMMANDS = st.lists(
    st.tuples(st.integers(0, 3), st.sampled_from(["place", "start", "complete"])), max_size=40
)


@given(commands=COMMANDS)
@settings(max_examples=150, deadline=None)
def test_every_history_the_rules_write_checks_clean(commands: list[tuple[int, str]]) -> None:
    states: dict[str, OrderState] = {}
    log: list[RecordedEvent] = []
    for order, command in commands:
        order_id = f"o-{order}"
        state = states.get(order_id, OrderState())
        try:
            if command == "place":
                new = place_order(state, PlaceOrder(order_id, 1, ("a",), Decimal("1.00")))
            elif command == "start":
                new = start_processing(state, order_id, "w")
            else:
                new = complete_order(state, order_id)
        except InvalidTransitionError:
            continue
        for event in new:
            state = apply_state(state, event)
            log.append(recorded(len(log) + 1, event, version=state.version))
        states[order_id] = state
    assert check_events(log) == []


# -- the store's pages, on every backend ---------------------------------------------------


def write_orders(store: EventStore, count: int, *, complete: bool = True) -> None:
    """``count`` orders placed, claimed and (if ``complete``) completed through the rules."""
    for n in range(count):
        order_id = f"o-{n}"
        state = OrderState()
        for step in ("place", "start", "complete") if complete else ("place", "start"):
            if step == "place":
                new = place_order(state, PlaceOrder(order_id, n, ("a",), Decimal("2.50")))
            elif step == "start":
                new = start_processing(state, order_id, "node-a/gen1/0")
            else:
                new = complete_order(state, order_id)
            store.append(order_id, new, state.version)
            for event in new:
                state = apply_state(state, event)


def logged_orders(url: str, count: int, *, complete: bool = True) -> None:
    """A log of ``count`` orders written as ``write_orders`` writes them, readable."""
    store = make_store(url)
    try:
        write_orders(store, count, complete=complete)
        readable(store)
    finally:
        store.close()


def has_column(url: str, table: str, column: str) -> bool:
    backend = parse_url(url).backend
    if backend == "sqlite":
        return column in [row[1] for row in raw_fetch(url, f"PRAGMA table_info({table})")]
    where = "current_schema()" if backend == "postgres" else "DATABASE()"
    sql = (
        "SELECT column_name FROM information_schema.columns "
        f"WHERE table_schema = {where} AND table_name = ?"
    )
    return column in [row[0].lower() for row in raw_fetch(url, sql, (table,))]


def insert_rows(url: str, rows: list[dict[str, Any]]) -> list[int]:
    """Rows written with SQL of their own after the log's last position, as a newer
    release (or a damaged copy) would leave them; their positions."""
    (last,) = raw_fetch(url, "SELECT COALESCE(MAX(position), 0) FROM events")[0]
    mark = "?" if parse_url(url).backend == "sqlite" else "%s"
    positions = []
    with raw_connection(url) as conn:
        cursor = conn.cursor()
        for offset, row in enumerate(rows, start=1):
            values = {"position": last + offset, "metadata": "{}", "recorded_at": RECORDED_AT}
            values.update(row)
            cursor.execute(
                f"INSERT INTO events ({', '.join(values)}) "
                f"VALUES ({', '.join(mark for _ in values)})",
                tuple(values.values()),
            )
            positions.append(values["position"])
        cursor.close()
    return positions


RECORDED_AT = "2026-05-01T12:00:00.000000Z"
UNKNOWN_TYPE = {"stream_id": "o-new", "version": 1, "type": "OrderShipped", "data": "{}"}
BAD_DATA = {"stream_id": "o-bad", "version": 1, "type": "OrderPlaced", "data": '{"order_id":'}


def future_version_row(url: str) -> dict[str, Any]:
    if not has_column(url, "events", "event_version"):
        pytest.skip(NEEDS_MIGRATION_8)
    data = orjson.dumps(event_data(placed("o-future"))).decode()
    return {"stream_id": "o-future", "version": 1, "type": "OrderPlaced", "data": data,
            "event_version": 3}  # fmt: skip


def checked(url: str, **options: Any) -> tuple[Summary, list[Problem]]:
    found: list[Problem] = []
    store = open_log(url)
    try:
        return check_store(store, found.append, **options), found
    finally:
        store.close()


def test_a_good_log_checks_clean_with_its_count(database_url: str) -> None:
    logged_orders(database_url, 7)
    positions = logged_positions(database_url)
    summary, found = checked(database_url, page=4)  # pages that cut streams
    assert found == []
    assert summary == Summary(21, 7, positions[0], positions[-1], 0)
    assert str(summary).endswith(f"at positions {positions[0]}..{positions[-1]}: all readable")


def test_rows_this_release_cannot_read_are_named_by_position(database_url: str) -> None:
    logged_orders(database_url, 3)
    unknown, bad = insert_rows(database_url, [UNKNOWN_TYPE, BAD_DATA])
    summary, found = checked(database_url, page=2)
    assert [(p.position, p.type) for p in found] == [
        (unknown, "OrderShipped"),
        (bad, "OrderPlaced"),
    ]
    assert found[0].reason.startswith("unknown type")
    assert found[1].reason.startswith("data is not JSON")
    assert (summary.events, summary.streams, summary.problems) == (11, 5, 2)


def test_a_future_version_row_is_named_by_position(database_url: str) -> None:
    logged_orders(database_url, 1)
    (future,) = insert_rows(database_url, [future_version_row(database_url)])
    _, found = checked(database_url)
    assert reasons(found) == [(future, "the log holds OrderPlaced v3; this release reads up to v2")]


def test_progress_is_told_the_position_reached_and_once_at_the_end(database_url: str) -> None:
    logged_orders(database_url, 4, complete=False)
    positions = logged_positions(database_url)
    told: list[tuple[int, int, int]] = []
    checked(database_url, page=3, every=0.0, progress=lambda p, h, n, s: told.append((p, h, n)))
    assert [p for p, _, _ in told] == [positions[2], positions[5], positions[7], positions[7]]
    assert [n for _, _, n in told] == [3, 6, 8, 8]
    assert all(head == positions[-1] for _, head, _ in told)


# -- what it never does: create, migrate, write or lock (SQLite) ------------------------------


def tables_and_files(path: Path) -> tuple[list[Any], list[str]]:
    with sqlite3.connect(path) as conn:
        tables = conn.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall()
    return tables, sorted(p.name for p in path.parent.iterdir() if p.suffix == ".lock")


def test_a_first_version_log_is_checked_without_being_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(V1_SQLITE.read_text())
        conn.execute(
            "INSERT INTO events VALUES (1, 'old-1', 1, 'OrderPlaced', "
            '\'{"order_id":"old-1","user_id":7,"item_ids":["a"],"total_amount":"3.50"}\', '
            "'{}', '2026-11-01T10:00:00.000000Z')"
        )
    conn.close()
    before = tables_and_files(path)
    summary, found = checked(f"sqlite:///{path}")
    assert (summary.events, found) == (1, [])
    assert tables_and_files(path) == before  # no schema_migrations, no lock file


def test_the_check_runs_while_an_offline_rebuild_keeps_servers_out(sqlite_url: str) -> None:
    store = make_store(sqlite_url)
    try:
        write_orders(store, 2)
    finally:
        store.close()
    with offline_rebuild_guard(sqlite_url):  # no server may start now; the check may
        summary, found = checked(sqlite_url)
    assert (summary.events, found) == (6, [])


# -- the command, end to end (SQLite) ------------------------------------------------------------


def log_check(url: str, *flags: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERLOG_")}
    return subprocess.run(
        [sys.executable, "-m", "api", "log", "check", "--database", url, *flags],
        cwd=cwd, capture_output=True, text=True, timeout=120,
        env={**env, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


def serve_orders(url: str, tmp_path: Path, count: int) -> ServerProcess:
    """A real node with ``count`` orders placed over HTTP and completed."""
    server = start_server(url, tmp_path, "--processing-delay", "0")
    try:
        for n in range(count):
            body = {"order_id": f"o-{n}", "user_id": n, "item_ids": ["a"], "total_amount": "1.00"}
            status, _, answer = server.request("POST", "/orders", body)
            assert status == 201, answer
        server.wait_until(all_done)
    except BaseException:
        server.terminate()
        raise
    return server


def test_the_command_exits_0_on_a_good_log_beside_a_running_server(
    sqlite_url: str, tmp_path: Path
) -> None:
    server = serve_orders(sqlite_url, tmp_path, 3)
    try:
        done = log_check(sqlite_url, cwd=tmp_path)
        quiet = log_check(sqlite_url, "--quiet", cwd=tmp_path)
        shown = log_check(sqlite_url, "--progress", cwd=tmp_path)
    finally:
        assert server.terminate() == 0
    assert done.returncode == 0, done.stderr
    assert done.stdout == "checked 9 events in 3 streams at positions 1..9: all readable\n"
    assert done.stderr == ""  # not a terminal: no progress
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")
    assert shown.returncode == 0, shown.stderr
    assert shown.stderr.splitlines()[-1].startswith("log check: at position 9 of 9, 9 events (")


def test_the_command_exits_1_naming_each_unreadable_position(
    sqlite_url: str, tmp_path: Path
) -> None:
    serve_orders(sqlite_url, tmp_path, 2).terminate()
    unknown, bad = insert_rows(sqlite_url, [UNKNOWN_TYPE, BAD_DATA])
    done = log_check(sqlite_url, cwd=tmp_path)
    quiet = log_check(sqlite_url, "--quiet", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    *lines, summary = done.stdout.splitlines()
    assert lines == [
        f"position {unknown}: 'OrderShipped' in stream 'o-new': unknown type: this release "
        "knows OrderPlaced, OrderProcessingStarted, OrderCompleted",
        f"position {bad}: 'OrderPlaced' in stream 'o-bad': data is not JSON: "
        + lines[1].split(": data is not JSON: ", 1)[1],
    ]
    assert summary == "checked 8 events in 4 streams at positions 1..8: 2 problems"
    assert (quiet.returncode, quiet.stdout.splitlines()) == (1, lines)


def test_the_command_names_a_future_version(sqlite_url: str, tmp_path: Path) -> None:
    serve_orders(sqlite_url, tmp_path, 1).terminate()
    (future,) = insert_rows(sqlite_url, [future_version_row(sqlite_url)])
    done = log_check(sqlite_url, cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert done.stdout.splitlines() == [
        f"position {future}: 'OrderPlaced' in stream 'o-future': the log holds OrderPlaced "
        "v3; this release reads up to v2",
        f"checked 4 events in 2 streams at positions 1..{future}: 1 problem",
    ]


def refusal(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert done.stdout == "" and "Traceback" not in done.stderr
    assert done.stderr.startswith("orderlog: ") and done.stderr.count("\n") == 1, done.stderr
    return done.stderr


def test_a_database_with_no_log_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    missing = refusal(log_check(f"sqlite:///{tmp_path / 'none.db'}", cwd=tmp_path))
    assert "no SQLite database at" in missing
    assert not (tmp_path / "none.db").exists()

    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    said = refusal(log_check(f"sqlite:///{empty}", cwd=tmp_path))
    assert said.startswith(f"orderlog: no orderlog log in sqlite:///{empty} (")
    assert tables_and_files(empty) == ([], [])


def test_a_schema_newer_than_this_release_is_refused(sqlite_url: str, tmp_path: Path) -> None:
    make_store(sqlite_url).close()
    with raw_connection(sqlite_url) as conn:
        conn.execute(
            "INSERT INTO schema_migrations (version, description, applied_at) "
            f"VALUES ({schema.LATEST + 1}, 'from the future', 'later')"
        )
    said = refusal(log_check(sqlite_url, cwd=tmp_path))
    assert f"schema is version {schema.LATEST + 1}, newer than this orderlog knows" in said


def test_the_command_shows_its_database_default_and_variable(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "api", "log", "check", "--help"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    assert "env ORDERLOG_DATABASE_URL, default: sqlite:///orderlog.db" in text, text
    assert "--progress" in text and "--quiet" in text


def test_the_summary_counts_one_of_each_in_the_singular_and_more_in_the_plural() -> None:
    assert str(Summary(1, 1, 1, 1, 1)) == (
        "checked 1 event in 1 stream at positions 1..1: 1 problem"
    )
    assert (
        str(Summary(3, 2, 1, 3, 0))
        == "checked 3 events in 2 streams at positions 1..3: all readable"
    )
    assert str(Summary(0, 0, 0, 0, 0)) == "checked 0 events in 0 streams: all readable"
