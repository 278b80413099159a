"""Chaos: ``orderlog serve`` SIGKILLed five times at random moments under a sustained load.

A load client keeps keep-alive connections busy placing new orders for the whole
run. The server listens on one fixed port and is restarted on it after each kill
with the same ``--node-id``, so a restarted node takes back its own claims at once;
the client simply reconnects. Answers lost to a kill and connections refused while
the server is down are expected and counted, never failures; only a 201 counts as
acknowledged. A short processing delay keeps orders Pending, Processing and
Completed at every moment, so each kill lands on orders in every state.

Each kill comes at a random moment of the server's life (once it has accepted
orders in that life), drawn from a seeded generator. The seed is printed (pytest
shows it with a failure) and ``ORDERLOG_TEST_CHAOS_SEED=<seed>`` replays the same
schedule: the same moments, not the same interleaving, which is the server's own.

Afterwards, read from the log itself: every acknowledged order, and every other
order the log holds, has exactly one OrderPlaced (first), at least one
OrderProcessingStarted and exactly one OrderCompleted (last); positions run 1..N
without a gap; and the database's own checks find nothing wrong
(``tests.support.integrity_problems``: SQLite's ``PRAGMA integrity_check``; on
PostgreSQL amcheck's ``bt_index_check`` and ``verify_heapam``, index validity, and
row counts through each index against a sequential scan). SQLite and PostgreSQL;
MariaDB is not run here.
"""

from __future__ import annotations

import os
import random
import sqlite3
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest

from bench import loadgen
from orderlog.domain.events import OrderPlaced
from tests.support import (
    BackgroundLoad,
    ServerProcess,
    all_done,
    dense,
    integrity_problems,
    logged_positions,
    make_store,
    raw_fetch,
    readable,
    restartable_port,
    start_server,
    total_orders,
)

KILLS = 5
CONNECTIONS = 16
MOMENT = (0.1, 1.5)  # seconds into a server's life (once it accepts orders) for the kill
SEED_VARIABLE = "ORDERLOG_TEST_CHAOS_SEED"
SERVER_FLAGS = ("--node-id", "chaos-node", "--processing-delay", "0.05")
# The status an order is in after each kind of event.
STATUS_AFTER = {
    "OrderPlaced": "Pending",
    "OrderProcessingStarted": "Processing",
    "OrderCompleted": "Completed",
}


def order_id(number: int) -> str:
    return f"chaos-{number:06d}"


def place(number: int) -> loadgen.Request:
    body = {"order_id": order_id(number), "user_id": number % 97, "item_ids": ["i1", "i2"]}
    return ("POST", "/orders", orjson.dumps({**body, "total_amount": f"{number % 500}.25"}))


def chaos_seed() -> int:
    text = os.environ.get(SEED_VARIABLE)
    return int(text) if text else random.SystemRandom().randrange(2**32)


def statuses_in_log(url: str) -> dict[str, int]:
    """How many orders the log holds in each status (read with the server down)."""
    rows = raw_fetch(
        url,
        "SELECT e.type, COUNT(*) FROM events e JOIN "
        "(SELECT stream_id, MAX(version) AS version FROM events GROUP BY stream_id) last "
        "ON e.stream_id = last.stream_id AND e.version = last.version GROUP BY e.type",
    )
    counts = dict.fromkeys(STATUS_AFTER.values(), 0)
    counts.update({STATUS_AFTER[kind]: count for kind, count in rows})
    return counts


def wait_for_orders_in_this_life(server: ServerProcess) -> None:
    """Poll until this server process has accepted orders of its own."""
    before = total_orders(server)
    server.wait_until(lambda s: total_orders(s) > before, timeout=60)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgres"], indirect=True)
def test_every_acknowledged_order_is_completed_once_across_five_sigkills_under_load(
    database_url: str, tmp_path: Path
) -> None:
    seed = chaos_seed()
    print(f"chaos seed {seed}: replay with {SEED_VARIABLE}={seed}")
    rng = random.Random(seed)
    started = time.monotonic()
    port = restartable_port()
    flags = (*SERVER_FLAGS, "--port", str(port))
    kills: list[dict[str, Any]] = []

    server = start_server(database_url, tmp_path, *flags)
    load = BackgroundLoad(server.host, port, place, CONNECTIONS)
    try:
        load.start()
        for _ in range(KILLS):
            wait_for_orders_in_this_life(server)
            moment = rng.uniform(*MOMENT)
            time.sleep(moment)  # the chaos itself: a random moment, not a wait for anything
            server.kill()
            kills.append({"after_s": round(moment, 3), "log": statuses_in_log(database_url)})
            server = start_server(database_url, tmp_path, *flags)
        wait_for_orders_in_this_life(server)
        time.sleep(rng.uniform(*MOMENT))  # the load goes on a while after the last restart
        load.stop()
        responses = load.responses()
        server.wait_until(all_done, timeout=120)
        assert server.terminate() == 0, server.log()
    finally:
        load.stop()
        if server.process.poll() is None:
            server.kill()

    acknowledged = {order_id(n) for n, r in enumerate(responses) if r.status == 201}
    answers = Counter(r.status for r in responses)
    unexpected = {status: count for status, count in answers.items() if status not in (0, 201)}
    assert unexpected == {}, f"answers other than 201 or no answer (seed {seed})"

    store = make_store(database_url, group_commit=False)
    try:
        events = list(readable(store).iter_all())
    finally:
        store.close()
    # The feed holds every stored event, in order: 1..N where positions are dense.
    assert [e.position for e in events] == logged_positions(database_url), f"seed {seed}"
    if dense(database_url):
        assert [e.position for e in events] == list(range(1, len(events) + 1)), f"seed {seed}"
    streams: dict[str, list[str]] = defaultdict(list)
    versions: dict[str, list[int]] = defaultdict(list)
    for event in events:
        streams[event.stream_id].append(event.type)
        versions[event.stream_id].append(event.version)

    assert sorted(acknowledged - streams.keys()) == [], f"acknowledged but lost (seed {seed})"
    wrong = {
        stream: types
        for stream, types in streams.items()
        if types[0] != "OrderPlaced"
        or types.count("OrderPlaced") != 1
        or "OrderProcessingStarted" not in types
        or types[-1] != "OrderCompleted"
        or types.count("OrderCompleted") != 1
        or versions[stream] != list(range(1, len(types) + 1))
    }
    assert dict(list(wrong.items())[:10]) == {}, f"{len(wrong)} orders wrong (seed {seed})"
    reclaimed = sum(types.count("OrderProcessingStarted") > 1 for types in streams.values())
    assert reclaimed > 0, f"no kill found an order Processing (seed {seed})"
    assert integrity_problems(database_url) == [], f"seed {seed}"

    print(
        orjson.dumps(
            {
                "seed": seed,
                "kills": kills,
                "requests": len(responses),
                "acknowledged": len(acknowledged),
                "no_answer": answers[0],
                "orders_in_log": len(streams),
                "placed_but_unanswered": len(streams.keys() - acknowledged),
                "claimed_again_after_a_kill": reclaimed,
                "events": len(events),
                "seconds": round(time.monotonic() - started, 1),
            }
        ).decode()
    )


def test_the_integrity_check_reports_an_index_that_no_longer_matches_its_table(
    sqlite_url: str, tmp_path: Path
) -> None:
    store = make_store(sqlite_url, group_commit=False)
    for n in range(3):
        store.append(f"order-{n}", [OrderPlaced(f"order-{n}", 1, ("i1",), "1.00")], 0)
    store.close()
    assert integrity_problems(sqlite_url) == []

    path = tmp_path / "orderlog.db"
    with sqlite3.connect(path) as conn:  # every page in the file itself, none in the WAL
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        ((root,),) = conn.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = 'events_stream_id_version'"
        )
        ((page_size,),) = conn.execute("PRAGMA page_size")
    conn.close()
    data = bytearray(path.read_bytes())
    start = (root - 1) * page_size
    offset = data[start : start + page_size].find(b"order-1")  # a key in the index's page
    assert offset >= 0
    at = start + offset
    data[at : at + 7] = b"order-9"  # still a well-formed entry, now for no row of the table
    path.write_bytes(data)

    problems = integrity_problems(sqlite_url)
    assert problems and all("missing from index events_stream_id_version" in p for p in problems)
