"""``orderlog rebuild`` while nodes serve: they answer throughout, then serve the rebuilt state.

Two real nodes run on one database. Their read models are made wrong on purpose
first (a stored metrics state with a marker in it, which each node loads into
memory; order rows with a wrong status), so only a rebuild that replaces what they
hold, in memory too, can make them right again without a restart.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import orjson
import pytest

from tests.support import (
    ROOT,
    ServerProcess,
    admin_execute,
    make_store,
    raw_connection,
    raw_fetch,
    start_server,
)

ORDERS = 60


def body(n: int) -> dict[str, object]:
    return {"order_id": f"rb-{n}", "user_id": n % 3, "item_ids": ["x"], "total_amount": "1.00"}


def tamper(url: str) -> None:
    """Wrong read models: metrics claiming 1,000 more orders, rows saying Processing."""
    ((state,),) = raw_fetch(url, "SELECT state FROM projections WHERE name = 'metrics'")
    wrong = orjson.loads(state)
    wrong["total_orders"] += 1000
    p = "?" if url.startswith("sqlite") else "%s"
    with raw_connection(url) as conn:
        cursor = conn.cursor()
        cursor.execute(
            f"UPDATE projections SET state = {p} WHERE name = 'metrics'",
            (orjson.dumps(wrong).decode(),),
        )
        cursor.execute("UPDATE order_status SET status = 'Processing'")
        cursor.close()


def completed(node: ServerProcess) -> int:
    return node.request("GET", "/metrics")[2]["status_counts"]["Completed"]


@pytest.mark.slow
def test_nodes_answer_throughout_a_rebuild_and_then_serve_the_rebuilt_state(
    database_url: str, tmp_path: Path
) -> None:
    flags = ("--processing-delay", "0", "--threads", "8")
    first = start_server(database_url, tmp_path, *flags, "--node-id", "a")
    for n in range(ORDERS):
        assert first.request("POST", "/orders", body(n))[0] == 201
    first.wait_until(lambda s: completed(s) == ORDERS)
    assert first.terminate() == 0  # stores the metrics state with its checkpoint
    tamper(database_url)

    nodes = [start_server(database_url, tmp_path, *flags, "--node-id", name) for name in ("a", "b")]
    try:
        for node in nodes:  # each loaded the wrong state into memory
            assert node.request("GET", "/metrics")[2]["total_orders"] == ORDERS + 1000
        assert {
            o["status"] for o in nodes[0].request("GET", "/orders?limit=1000")[2]["orders"]
        } == {"Processing"}

        answers: Counter[int] = Counter()
        stop = threading.Event()

        def keep_asking(node: ServerProcess, offset: int) -> None:
            n = 0
            while not stop.is_set():
                for method, path, sent in (
                    ("GET", "/metrics", None),
                    ("GET", "/orders?status=Completed&limit=5", None),
                    ("GET", f"/orders/rb-{n % ORDERS}", None),
                    ("POST", "/orders", body(1000 + offset + n)),
                ):
                    answers[node.request(method, path, sent)[0]] += 1
                n += 2

        clients = [
            threading.Thread(target=keep_asking, args=(node, k)) for k, node in enumerate(nodes)
        ]
        for client in clients:
            client.start()
        try:
            done = subprocess.run(
                [sys.executable, "-m", "api", "rebuild", "--database", database_url, "--quiet"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=300,
            )
        finally:
            stop.set()
            for client in clients:
                client.join(60)
        assert done.returncode == 0, done.stderr
        assert set(answers) <= {200, 201}, answers  # no error while the rebuild ran
        assert answers[201] > 0

        store = make_store(database_url, group_commit=False)
        try:
            placed = sum(1 for e in store.iter_all() if e.type == "OrderPlaced")
        finally:
            store.close()
        for node in nodes:  # every node: the rebuilt figures, from memory, no restart
            node.wait_until(lambda s, want=placed: completed(s) == want)
            assert node.request("GET", "/metrics")[2]["total_orders"] == placed
            listed = node.request("GET", "/orders?status=Processing")[2]["orders"]
            assert listed == []
    finally:
        for node in nodes:
            assert node.terminate() == 0
    # Neither node wrote its stale state back over the rebuild when it stopped.
    ((state,),) = raw_fetch(database_url, "SELECT state FROM projections WHERE name = 'metrics'")
    assert orjson.loads(state)["total_orders"] == placed


def test_an_offline_rebuild_refills_the_rows_in_place(database_url: str, tmp_path: Path) -> None:
    store = make_store(database_url, group_commit=False)
    try:
        from orderlog.domain.events import OrderPlaced
        from projections.order_status import OrderStatusModel

        store.append("off-1", [OrderPlaced("off-1", 1, ("x",), "1.00")], 0)
        OrderStatusModel(store).catch_up()
    finally:
        store.close()
    admin_execute(database_url, ["UPDATE order_status SET status = 'Completed'"])
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "api",
            "rebuild",
            "--offline",
            "--quiet",
            "--database",
            database_url,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert raw_fetch(database_url, "SELECT status FROM order_status") == [("Pending",)]
    assert raw_fetch(database_url, "SELECT COUNT(*) FROM order_status_b") == [(0,)]
