"""SIGTERM under load: every request the server received gets a whole answer.

Clients post orders over keep-alive connections, letting the server choose each
order id (so a client that gets no answer could not tell whether its order
exists). Mid-load the server gets SIGTERM. Each request must then end in one of
three ways: ``201`` (and the order is in the log), ``503`` with ``Retry-After``
(nothing was written), or a refused connection, which a client knows was never
received. A request sent and then cut off is the failure this guards against.
"""

from __future__ import annotations

import http.client
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest

from tests.support import DEADLINE, ServerProcess, make_store, start_server, wait_for

pytestmark = pytest.mark.slow

CLIENTS = 32
BEFORE_SIGTERM = 300  # orders acknowledged before the signal: the load is well under way
BODY = orjson.dumps({"user_id": 3, "item_ids": ["sku-9"], "total_amount": "7.25"})


@dataclass
class Outcomes:
    placed: list[str] = field(default_factory=list)  # order ids answered 201
    retry_later: int = 0  # 503 with Retry-After
    refused: int = 0  # connection refused: never received
    broken: Counter[str] = field(default_factory=Counter)  # sent, then no whole answer
    lock: threading.Lock = field(default_factory=threading.Lock)


def client(server: ServerProcess, outcomes: Outcomes) -> None:
    """Post orders one after another on one keep-alive connection until the server is gone."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=DEADLINE)
    try:
        while True:
            try:
                # After an answer saying "Connection: close" the connection is gone and a
                # new one is needed: a refusal then means the next request never left.
                if conn.sock is None:
                    conn.connect()
            except ConnectionRefusedError:
                with outcomes.lock:
                    outcomes.refused += 1
                return
            try:
                conn.request("POST", "/orders", body=BODY,
                             headers={"Content-Type": "application/json"})  # fmt: skip
                response = conn.getresponse()
                body = response.read()
            except (OSError, http.client.HTTPException) as exc:
                with outcomes.lock:
                    outcomes.broken[type(exc).__name__] += 1
                return
            with outcomes.lock:
                if response.status == 201:
                    outcomes.placed.append(orjson.loads(body)["order_id"])
                elif response.status == 503 and response.getheader("Retry-After"):
                    outcomes.retry_later += 1
                else:
                    outcomes.broken[f"HTTP {response.status}"] += 1
                    return
    finally:
        conn.close()


@pytest.mark.parametrize(
    "drain", [(), ("--drain-timeout", "0")], ids=["default-drain", "no-time-to-serve"]
)
def test_sigterm_under_load_answers_every_request_received_and_loses_no_order(
    sqlite_url: str, tmp_path: Path, drain: tuple[str, ...]
) -> None:
    # With no time to serve, what is received after the signal is answered 503 at once.
    server = start_server(sqlite_url, tmp_path, *drain)
    outcomes = Outcomes()
    threads = [threading.Thread(target=client, args=(server, outcomes)) for _ in range(CLIENTS)]
    try:
        for thread in threads:
            thread.start()
        wait_for(lambda: len(outcomes.placed) >= BEFORE_SIGTERM, what="the load to build up")
    finally:
        returncode = server.terminate(timeout=60)
        for thread in threads:
            thread.join(DEADLINE)
    assert not any(thread.is_alive() for thread in threads)
    assert returncode == 0, server.log()
    assert not outcomes.broken, (dict(outcomes.broken), server.log())
    assert outcomes.refused == CLIENTS  # each client ended at the closed door, nowhere else

    store = make_store(sqlite_url, group_commit=False)
    try:
        for order_id in outcomes.placed:
            assert [e.type for e in store.read_stream(order_id)][:1] == ["OrderPlaced"]
    finally:
        store.close()
