"""A real ``orderlog serve`` on its defaults stays reachable while clients hoard connections.

The attacker (``bench.attack.Attack``, the bench's own) holds 2,500 connections,
more than the server's connection limit, from other loopback addresses: silent
ones and ones trickling a header one byte every few seconds, re-opened whenever
the server closes them. Meanwhile a normal client on 127.0.0.1 asks /healthz and
places orders on fresh connections, and every one must be answered (within a
generous deadline: success, not speed, is asserted).
"""

from __future__ import annotations

import http.client
import time
import uuid
from pathlib import Path

import orjson
import pytest

from bench.attack import Attack
from tests.support import ServerProcess, start_server, wait_for

pytestmark = pytest.mark.slow

ATTACK = 2500
PROBING = 12.0  # seconds of probing under attack: longer than the 10 s header deadline
ANSWER_WITHIN = 30.0  # seconds a probe waits for its answer


def probe(server: ServerProcess, path: str, body: bytes | None = None) -> int:
    """One request on a fresh connection from 127.0.0.1; its status."""
    conn = http.client.HTTPConnection(
        server.host, server.port, timeout=ANSWER_WITHIN, source_address=("127.0.0.1", 0)
    )
    try:
        headers = {"Content-Type": "application/json"} if body else {}
        conn.request("POST" if body else "GET", path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def keep_probing(server: ServerProcess, attack: Attack) -> int:
    """Health checks and orders, one after another, for PROBING seconds; how many pairs."""
    wait_for(attack.opened_all.is_set, what="the attacker to open its connections")
    pairs = 0
    ends = time.monotonic() + PROBING
    while time.monotonic() < ends:  # a duration of load, not a wait for an event
        assert probe(server, "/healthz") == 200
        order = {"order_id": f"probe-{uuid.uuid4().hex[:12]}", "user_id": 1,
                 "item_ids": ["sku-1"], "total_amount": "1.00"}  # fmt: skip
        assert probe(server, "/orders", orjson.dumps(order)) == 201
        pairs += 1
    return pairs


def test_one_address_holding_2500_idle_or_slow_connections_locks_no_one_else_out(
    sqlite_url: str, tmp_path: Path
) -> None:
    server = start_server(sqlite_url, tmp_path)
    try:
        with Attack(server.host, server.port, ATTACK, sources=["127.0.0.2"],
                    kinds=["idle", "slow"], trickle_every=5.0) as attack:  # fmt: skip
            assert keep_probing(server, attack) > 0
            stats = attack.stats
            # The attack was on: it held all the server would give one address, and asked more.
            assert stats.held >= 1000 and stats.closed_by_server > 0
    finally:
        assert server.terminate() == 0


def test_many_addresses_holding_idle_connections_are_shed_for_newcomers(
    sqlite_url: str, tmp_path: Path
) -> None:
    # 250 per address: under the per-client cap, so only the total limit stands in the way,
    # and keep-alive connections idle between requests meet no header deadline.
    sources = [f"127.0.0.{n}" for n in range(2, 12)]
    server = start_server(sqlite_url, tmp_path)
    try:
        with Attack(server.host, server.port, ATTACK, sources=sources,
                    kinds=["keep-alive", "idle", "slow"], trickle_every=5.0) as attack:  # fmt: skip
            assert keep_probing(server, attack) > 0
            assert attack.stats.closed_by_server > 0
    finally:
        assert server.terminate() == 0
