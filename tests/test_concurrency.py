"""The log under concurrency, on every backend: what a reader of the feed may rely on.

Modelled on the recorder suites of mature event stores: many writers on shared and
separate streams while a reader tails the feed by position; a transaction held
open through the store's own code path must hold readers back, never let one skip
past it (on SQLite and MariaDB later appends wait for its lock; on PostgreSQL they
commit, and readers wait for the held one: Marten's interior-gap case); clashes and
rollbacks leave no holes a reader waits on. Then group commit: a batch where one
append clashes, durability before the answer, and a process SIGKILLed while
appending loses nothing it acknowledged.
"""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

import orjson
import pytest

from orderlog.domain.errors import ConcurrencyError
from orderlog.domain.events import (
    Event,
    OrderCompleted,
    OrderPlaced,
    OrderProcessingStarted,
)
from orderlog.storage.database_url import backend_of
from orderlog.storage.store import AppendRequest, EventStore
from tests.support import ROOT, dense, make_store, raw_fetch, readable, run_threads, wait_for

DEADLINE = 60.0


def placed(order_id: str) -> OrderPlaced:
    return OrderPlaced(order_id, "u1", ("a",), "1.00")


def full_log(url: str) -> list[tuple[int, str, int]]:
    """(position, stream_id, version) of every committed event, via a brand-new connection."""
    return raw_fetch(url, "SELECT position, stream_id, version FROM events ORDER BY position")


def assert_contiguous(url: str) -> list[tuple[int, str, int]]:
    """Positions are exactly 1..head (with gaps on PostgreSQL, where they come from
    transaction ids: rising) and every stream's versions are 1..n."""
    log = full_log(url)
    head = raw_fetch(url, "SELECT COALESCE(MAX(position), 0) FROM events")[0][0]
    if dense(url):
        assert [row[0] for row in log] == list(range(1, head + 1))
    else:
        assert all(a[0] < b[0] for a, b in itertools.pairwise(log))
    versions: dict[str, list[int]] = {}
    for _, stream_id, version in log:
        versions.setdefault(stream_id, []).append(version)
    for stream_id, seen in versions.items():
        assert seen == list(range(1, len(seen) + 1)), stream_id
    return log


class HeldAppend:
    """An append through the store's own code path, inside a transaction held open.

    A store without group commit runs its append on the caller's connection, so an
    outer transaction keeps the append (and the log lock it took) uncommitted until
    ``commit()`` or ``roll_back()``. It runs in its own thread, as another node would.
    """

    def __init__(self, url: str, stream_id: str, events: Sequence[Event], expected: int) -> None:
        self.store = make_store(url, group_commit=False)
        self.recorded: list[Any] = []
        self.error: BaseException | None = None
        self._appended = threading.Event()
        self._release = threading.Event()
        self._roll_back = False
        self._thread = threading.Thread(target=self._run, args=(stream_id, events, expected))

    def __enter__(self) -> HeldAppend:
        self._thread.start()
        assert self._appended.wait(DEADLINE), "the held append did not run"
        if self.error:
            raise self.error
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.commit()
        self.store.close()

    def _run(self, stream_id: str, events: Sequence[Event], expected: int) -> None:
        db = self.store.db
        # SQLite: take the write lock at BEGIN, as the store's own transaction does.
        lock = ["IMMEDIATE"] if self.store.backend == "sqlite" else []
        try:
            with db.connection_context(), db.atomic(*lock) as transaction:
                self.recorded = self.store.append(stream_id, events, expected)
                self._appended.set()
                self._release.wait(DEADLINE)
                if self._roll_back:
                    transaction.rollback()
        except BaseException as exc:  # handed back to the test thread
            self.error = exc
        finally:
            self._appended.set()

    def commit(self) -> None:
        self._release.set()
        self._thread.join(DEADLINE)
        assert not self._thread.is_alive()
        if self.error:
            raise self.error

    def roll_back(self) -> None:
        self._roll_back = True
        self.commit()


class Background:
    """A call run in a thread; ``done`` is set when it returned or raised."""

    def __init__(self, call: Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = threading.Event()
        self._call = call
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.result = self._call()
        except BaseException as exc:  # handed back to the test thread
            self.error = exc
        finally:
            self.done.set()

    def get(self) -> Any:
        assert self.done.wait(DEADLINE), "the background call did not finish"
        if self.error:
            raise self.error
        return self.result


def lock_waiters(url: str) -> int:
    """How many sessions on this database wait for a row lock (None on SQLite)."""
    if backend_of(url) == "postgres":
        sql = (
            "SELECT COUNT(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
    else:
        sql = (
            "SELECT COUNT(*) FROM information_schema.innodb_trx t "
            "JOIN information_schema.processlist p ON p.id = t.trx_mysql_thread_id "
            "WHERE t.trx_state = 'LOCK WAIT' AND p.db = DATABASE()"
        )
    return raw_fetch(url, sql)[0][0]


def assert_blocked(url: str, call: Background) -> None:
    """``call`` is waiting for the log lock, not finished."""
    if backend_of(url) == "sqlite":
        # SQLite's busy wait cannot be observed from outside: a bounded check that
        # the append has not returned is the best evidence it is waiting.
        assert not call.done.wait(0.5), "the append did not wait for the held transaction"
    else:
        wait_for(
            lambda: lock_waiters(url) >= 1,
            DEADLINE,
            what="the second append to wait for the lock",
        )
        assert not call.done.is_set()


# -- readers tailing the feed -------------------------------------------------------


def test_a_reader_tailing_the_feed_sees_every_event_once_in_order_while_ten_threads_append(
    store: EventStore, database_url: str
) -> None:
    writers, appends_each = 10, 30
    writers_done = threading.Event()
    acked: list[str] = []  # event ids of every acknowledged event
    acked_lock = threading.Lock()
    seen: list[tuple[int, str, int, str]] = []
    problems: list[str] = []

    def write(index: int) -> None:
        own, own_version = f"own-{index}", 0
        for n in range(appends_each):
            events = [placed(f"x{index}-{n}")] * (1 + n % 2)  # one or two events per append
            if n % 2:
                recorded = store.append(own, events, own_version)
                own_version += len(events)
            else:
                shared = f"shared-{n % 3}"
                while True:
                    try:
                        recorded = store.append(shared, events, store.stream_version(shared))
                        break
                    except ConcurrencyError:
                        continue  # another writer got there first: read the version again
            with acked_lock:
                acked.extend(e.metadata["event_id"] for e in recorded)

    def tail() -> None:
        after, last = 0, None
        while True:
            # Once the writers are done, the end is the newest position committed: on
            # PostgreSQL it becomes readable only when older transactions anywhere end.
            if last is None and writers_done.is_set():
                last = store.last_position()
            finished = last is not None and after >= last
            page = store.read_all(after, 37)
            for event in page:
                if event.position != after + 1 if dense(database_url) else event.position <= after:
                    problems.append(f"after {after} came {event.position}")
                after = event.position
                seen.append(
                    (event.position, event.stream_id, event.version, event.metadata["event_id"])
                )
            if finished and not page:
                return

    reader = threading.Thread(target=tail)
    reader.start()
    errors = run_threads(writers, write, DEADLINE)
    writers_done.set()
    reader.join(DEADLINE)
    assert errors == []
    assert not reader.is_alive()
    assert problems == []
    final = [(e.position, e.stream_id, e.version, e.metadata["event_id"]) for e in store.iter_all()]
    assert seen == final
    assert Counter(row[3] for row in seen) == Counter(acked)
    assert all(count == 1 for count in Counter(acked).values())
    assert len(seen) == writers * appends_each * 3 // 2
    assert_contiguous(database_url)


def test_an_uncommitted_append_holds_back_later_positions_instead_of_being_skipped(
    database_url: str,
) -> None:
    store = make_store(database_url)  # group commit, as the server runs
    try:
        (before,) = store.append("before", [placed("before")], 0)
        with HeldAppend(database_url, "held", [placed("held")], 0) as held:
            (held_event,) = held.recorded
            assert held_event.position > before.position
            later = Background(lambda: store.append("later", [placed("later")], 0))
            if dense(database_url):
                assert_blocked(database_url, later)  # behind the held one's lock
            else:
                later.get()  # no lock: it commits while the held one is open
                assert [r[1] for r in full_log(database_url)] == ["before", "later"]
            # Neither the held event nor anything after it can be read yet.
            assert store.read_all(before.position) == []
            assert store.head() == before.position
            held.commit()
            (later_event,) = later.get()
        assert later_event.position > held_event.position
        assert [(e.position, e.stream_id) for e in readable(store).read_all(0)] == [
            (before.position, "before"),
            (held_event.position, "held"),
            (later_event.position, "later"),
        ]
        assert store.head() == later_event.position
    finally:
        store.close()


def test_a_reader_tailing_through_a_held_append_gets_it_before_later_ones(
    database_url: str,
) -> None:
    store = make_store(database_url)
    seen: list[str] = []
    done = threading.Event()

    def tail() -> None:
        after, deadline = 0, time.monotonic() + DEADLINE
        while len(seen) < 3 and time.monotonic() < deadline and not done.is_set():
            for event in store.read_all(after, 10):
                seen.append(event.stream_id)
                after = event.position

    try:
        store.append("before", [placed("before")], 0)
        reader = Background(tail)
        with HeldAppend(database_url, "held", [placed("held")], 0) as held:
            later = Background(lambda: store.append("later", [placed("later")], 0))
            if dense(database_url):
                assert_blocked(database_url, later)
            else:
                later.get()  # committed, yet the reader must not get it before "held"
            wait_for(
                lambda: seen == ["before"], DEADLINE, what="the reader to read the first event"
            )
            held.commit()
            later.get()
        reader.get()
        assert seen == ["before", "held", "later"]
        assert [e.stream_id for e in store.read_all(0)] == ["before", "held", "later"]
    finally:
        done.set()
        store.close()


def test_a_rolled_back_append_leaves_no_hole_and_no_trace(database_url: str) -> None:
    store = make_store(database_url)
    try:
        (before,) = store.append("before", [placed("before")], 0)
        with HeldAppend(database_url, "rolled", [placed("rolled")], 0) as held:
            (rolled,) = held.recorded
            waiting = Background(lambda: store.append("waiting", [placed("waiting")], 0))
            if dense(database_url):
                assert_blocked(database_url, waiting)
            else:
                waiting.get()
                assert store.read_all(before.position) == []  # held back by "rolled"
            held.roll_back()
            (waiting_event,) = waiting.get()
        if dense(database_url):
            # The position the rolled-back append had is handed out again: no hole.
            assert waiting_event.position == rolled.position
        # Nothing waits on the rolled-back position: the reader moves on.
        assert [e.stream_id for e in readable(store).read_all(before.position)] == ["waiting"]
        assert store.read_stream("rolled") == []
        assert store.stream_version("rolled") == 0
        (again,) = store.append("rolled", [placed("rolled")], 0)
        assert again.version == 1 and again.position > waiting_event.position
        assert [e.stream_id for e in readable(store).read_all(0)] == ["before", "waiting", "rolled"]
        assert_contiguous(database_url)
    finally:
        store.close()


def test_version_clashes_leave_no_hole_in_positions(store: EventStore, database_url: str) -> None:
    threads, rounds = 8, 5
    winners: list[tuple[int, int]] = []  # (round, thread)
    clashes: list[int] = []

    def contend(index: int) -> None:
        for round_number in range(rounds):
            try:
                store.append("contested", [placed("contested")], round_number)
                winners.append((round_number, index))
            except ConcurrencyError as exc:
                clashes.append(exc.actual)
            # Wait for this round's winner before trying the next version.
            wait_for(lambda r=round_number: store.stream_version("contested") > r, DEADLINE)
            store.append(f"own-{index}", [placed("own")], round_number)

    assert run_threads(threads, contend, DEADLINE) == []
    assert sorted(r for r, _ in winners) == list(range(rounds))  # exactly one winner per round
    assert len(clashes) == rounds * (threads - 1)
    log = assert_contiguous(database_url)
    assert len(log) == rounds + rounds * threads


# -- group commit -------------------------------------------------------------------


def test_concurrent_appends_to_many_streams_all_land(database_url: str) -> None:
    store = make_store(database_url, group_commit=True)
    threads, appends_each = 30, 20
    try:

        def append(index: int) -> None:
            for n in range(appends_each):
                stream = f"s{index}-{n % 4}"
                store.append(stream, [placed(stream)], n // 4)

        assert run_threads(threads, append, DEADLINE) == []
        log = assert_contiguous(database_url)
        assert len(log) == threads * appends_each
        assert {stream for _, stream, _ in log} == {
            f"s{i}-{k}" for i in range(threads) for k in range(4)
        }
        assert all(store.stream_version(f"s{i}-0") == appends_each // 4 for i in range(threads))
    finally:
        store.close()


def test_a_version_clash_in_a_batch_fails_only_its_own_caller(database_url: str) -> None:
    store = make_store(database_url, group_commit=True)
    try:
        store.append("taken", [placed("taken")], 0)
        good, stale = 12, 4
        calls: list[tuple[str, Background]] = []
        with HeldAppend(database_url, "held", [placed("held")], 0):
            # The writer blocks on the log lock (on PostgreSQL, on the held stream's next
            # version, which the first append below also takes), so the appends below
            # queue up behind it and are committed together once the held one ends.
            blocker = Background(lambda: store.append("held", [placed("again")], 0))
            assert_blocked(database_url, blocker)
            for n in range(good + stale):
                if n % 4 == 3:
                    call = Background(lambda: store.append("taken", [placed("again")], 0))
                    calls.append(("stale", call))
                else:
                    call = Background(lambda n=n: store.append(f"g{n}", [placed(f"g{n}")], 0))
                    calls.append(("good", call))
            wait_for(
                lambda: store.writer_stats().waiting >= (good + stale) // 2,
                DEADLINE,
                what="appends to queue up",
            )
            batches_before = store.writer_stats().batches
        for kind, call in calls:
            assert call.done.wait(DEADLINE)
            if kind == "stale":
                assert isinstance(call.error, ConcurrencyError)
                assert (call.error.expected, call.error.actual) == (0, 1)
            else:
                assert call.error is None
                assert len(call.result) == 1
        # At least half the appends shared one batch with the clashing ones.
        assert store.writer_stats().batches - batches_before <= (good + stale) // 2 + 1
        assert blocker.done.wait(DEADLINE) and isinstance(blocker.error, ConcurrencyError)
        log = assert_contiguous(database_url)
        assert len(log) == 2 + good
        assert [v for _, s, v in log if s == "taken"] == [1]
    finally:
        store.close()


def test_a_batch_with_a_clash_commits_its_neighbours(database_url: str) -> None:
    """Several appends in one transaction, deterministic: per-request outcomes."""
    store = make_store(database_url, group_commit=False)
    try:
        store.append("taken", [placed("taken")], 0)
        outcomes = store.append_many(
            [
                AppendRequest("a", [placed("a")], 0),
                AppendRequest("taken", [placed("taken")], 0),  # clash
                AppendRequest("b", [placed("b")], 0),
                AppendRequest("b", [placed("b")], 1),  # follows the one before it in the batch
            ]
        )
        assert [type(o) if isinstance(o, Exception) else len(o) for o in outcomes] == [
            1,
            ConcurrencyError,
            1,
            1,
        ]
        assert [(s, v) for _, s, v in assert_contiguous(database_url)] == [
            ("taken", 1),
            ("a", 1),
            ("b", 1),
            ("b", 2),
        ]
    finally:
        store.close()


def test_an_append_is_answered_only_once_a_new_connection_can_see_it(database_url: str) -> None:
    store = make_store(database_url, group_commit=True)
    misses: list[str] = []
    try:

        def append(index: int) -> None:
            for n in range(6):
                stream = f"d{index}-{n}"
                (event,) = store.append(stream, [placed(stream)], 0)
                rows = raw_fetch(
                    database_url,
                    "SELECT stream_id, version, type FROM events WHERE position = ?",
                    (event.position,),
                )
                if rows != [(stream, 1, "OrderPlaced")]:
                    misses.append(f"{stream} at {event.position}: {rows}")

        assert run_threads(12, append, DEADLINE) == []
        assert misses == []
    finally:
        store.close()


_APPENDER = """
import sys, threading
from orderlog.storage.database import open_database
from orderlog.domain.events import OrderPlaced, OrderProcessingStarted
from orderlog.storage.store import EventStore

store = EventStore(open_database(sys.argv[1])).open()
out = threading.Lock()

def run(index):
    n = 0
    while True:
        n += 1
        stream = f"c{index}-{n}"
        events = [OrderPlaced(stream, "u", ("a",), "1.00"), OrderProcessingStarted(stream, 1, "w")]
        recorded = store.append(stream, events[: 1 + n % 2], 0)
        with out:
            for event in recorded:
                sys.stdout.write(f"{event.position} {stream} {event.metadata['event_id']}\\n")
            sys.stdout.flush()

for index in range(8):
    threading.Thread(target=run, args=(index,), daemon=True).start()
threading.Event().wait()
"""


def test_no_acknowledged_append_is_lost_when_the_process_is_killed(database_url: str) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", _APPENDER, database_url],
        cwd=str(ROOT),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    acked: list[tuple[int, str, str]] = []
    try:
        assert process.stdout is not None
        while len(acked) < 400:
            line = process.stdout.readline()
            assert line, f"the appender died: {process.stderr.read() if process.stderr else ''}"
            position, stream, event_id = line.split()
            acked.append((int(position), stream, event_id))
        process.send_signal(signal.SIGKILL)  # mid-run: a batch may well be in flight
        process.wait(timeout=DEADLINE)
        # Acknowledgements written before the kill are still in the pipe.
        for line in process.stdout:
            position, stream, event_id = line.split()
            acked.append((int(position), stream, event_id))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == -signal.SIGKILL
    stored = {
        int(position): (stream, orjson.loads(metadata)["event_id"])
        for position, stream, metadata in raw_fetch(
            database_url, "SELECT position, stream_id, metadata FROM events"
        )
    }
    lost = [a for a in acked if stored.get(a[0]) != (a[1], a[2])]
    assert lost == []
    # Whatever was in flight committed whole or not at all.
    log = assert_contiguous(database_url)
    assert len(log) >= len(acked)
    types = raw_fetch(database_url, "SELECT stream_id, COUNT(*) FROM events GROUP BY stream_id")
    assert all(count in (1, 2) for _, count in types)


@pytest.mark.parametrize("events", [1, 3])
def test_multi_event_appends_take_consecutive_positions_under_contention(
    database_url: str, events: int
) -> None:
    store = make_store(database_url, group_commit=True)
    try:

        def append(index: int) -> None:
            for n in range(10):
                stream = f"m{index}-{n}"
                batch = [
                    placed(stream),
                    OrderProcessingStarted(stream, 1, "w"),
                    OrderCompleted(stream, 1),
                ][:events]
                recorded = store.append(stream, batch, 0)
                first = recorded[0].position
                assert [e.position for e in recorded] == list(range(first, first + events))

        assert run_threads(10, append, DEADLINE) == []
        log = assert_contiguous(database_url)
        for start in range(0, len(log), events):  # each append's events sit side by side
            assert len({stream for _, stream, _ in log[start : start + events]}) == 1
    finally:
        store.close()


def test_a_row_the_database_itself_refuses_fails_only_its_own_append(sqlite_url: str) -> None:
    """A refusal the up-front version check cannot foresee (here a trigger; in life a
    writer outside this store) must not take its neighbours in the batch down with it."""
    store = make_store(sqlite_url, group_commit=False)
    try:
        with store.db.connection_context():
            store.db.execute_sql(
                "CREATE TRIGGER refuse BEFORE INSERT ON events WHEN NEW.stream_id = 'refused' "
                "BEGIN SELECT RAISE(ABORT, 'refused by the database'); END"
            )
        outcomes = store.append_many(
            [
                AppendRequest("a", [placed("a")], 0),
                AppendRequest("refused", [placed("refused")], 0),
                AppendRequest("b", [placed("b")], 0),
            ]
        )
        assert [isinstance(o, Exception) for o in outcomes] == [False, True, False]
        assert isinstance(outcomes[1], ConcurrencyError)
        assert [(s, v) for _, s, v in assert_contiguous(sqlite_url)] == [("a", 1), ("b", 1)]
    finally:
        store.close()
