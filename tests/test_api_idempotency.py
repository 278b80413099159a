"""Idempotency keys for orders whose ids the server makes, through the real app on
every backend: a retry gets the first answer, a reused key with another body is a
conflict, keys hold across restarts, expire, and belong to one client."""

from __future__ import annotations

import falcon.testing
import pytest

from api.node import Node
from tests.support import IDLE, assert_problem, post, settings_for

# -- idempotency keys for server-made ids --------------------------------------------------

UNNAMED = {"user_id": 5, "item_ids": ["sku-9"], "total_amount": "7.00"}


def test_a_retry_with_the_same_key_and_body_gets_the_first_answer(
    client: falcon.testing.TestClient, node: Node
) -> None:
    first = post(client, UNNAMED, headers={"Idempotency-Key": "checkout-1"})
    assert first.status_code == 201
    assert node.worker.wait_idle(IDLE)  # the order moves on meanwhile
    retry = post(client, UNNAMED, headers={"Idempotency-Key": "checkout-1"})
    assert retry.status_code == 201
    assert retry.headers["idempotent-replayed"] == "true"
    assert retry.json == first.json  # the first answer: the order as it was placed
    assert retry.headers["location"] == first.headers["location"]
    order_id = first.json["order_id"]
    placed = [e for e in node.store.read_stream(order_id) if e.type == "OrderPlaced"]
    assert len(placed) == 1
    assert placed[0].metadata["idempotency_key"] == "checkout-1"


def test_the_same_key_with_another_body_is_a_conflict(
    client: falcon.testing.TestClient, node: Node
) -> None:
    assert post(client, UNNAMED, headers={"Idempotency-Key": "k-2"}).status_code == 201
    assert node.worker.wait_idle(IDLE)  # the first order's own progress, all of it
    head = node.store.head()
    other = post(client, {**UNNAMED, "total_amount": "8.00"}, headers={"Idempotency-Key": "k-2"})
    problem = assert_problem(other, 409)
    assert problem["type"] == "urn:orderlog:problem:idempotency-key-reused"
    assert node.worker.wait_idle(IDLE)
    assert node.store.head() == head  # the refused order wrote nothing


def test_a_retry_in_the_same_currency_is_the_same_order_and_in_another_a_conflict(
    client: falcon.testing.TestClient, node: Node
) -> None:
    in_euros = {**UNNAMED, "currency": "EUR"}
    first = post(client, in_euros, headers={"Idempotency-Key": "k-eur"})
    assert (first.status_code, first.json["currency"]) == (201, "EUR")
    retry = post(client, in_euros, headers={"Idempotency-Key": "k-eur"})
    assert retry.status_code == 201 and retry.headers["idempotent-replayed"] == "true"
    assert retry.json == first.json
    assert node.worker.wait_idle(IDLE)
    head = node.store.head()
    for currency in ("USD", None):  # named, or the default (USD here)
        other = {**UNNAMED, "currency": currency} if currency else UNNAMED
        problem = assert_problem(post(client, other, headers={"Idempotency-Key": "k-eur"}), 409)
        assert problem["type"] == "urn:orderlog:problem:idempotency-key-reused"
    # With its own id, the same: the same currency is a retry, another a conflict.
    named = {**in_euros, "order_id": "o-eur"}
    assert post(client, named).status_code == 201
    assert post(client, named).status_code == 200
    problem = assert_problem(post(client, {**named, "currency": "GBP"}), 409)
    assert problem["type"] == "urn:orderlog:problem:order-conflict"
    assert node.worker.wait_idle(IDLE)
    assert [e.type for e in node.store.read_all(head, 100)] == [
        "OrderPlaced",
        "OrderProcessingStarted",
        "OrderCompleted",
    ]  # o-eur's own life: the refused orders wrote nothing


@pytest.mark.parametrize(("first", "second"), [("a", "b"), ("Key-1", "key-1")])
def test_different_keys_make_different_orders(
    client: falcon.testing.TestClient, first: str, second: str
) -> None:
    a = post(client, UNNAMED, headers={"Idempotency-Key": first})
    b = post(client, UNNAMED, headers={"Idempotency-Key": second})
    assert a.status_code == b.status_code == 201
    assert a.json["order_id"] != b.json["order_id"]


@pytest.mark.parametrize("key", ["", " ", "x" * 256, "bad\u0000key"])
def test_an_unusable_idempotency_key_is_refused(
    client: falcon.testing.TestClient, settled: int, key: str
) -> None:
    assert_problem(post(client, UNNAMED, headers={"Idempotency-Key": key}), 400, "Idempotency-Key")


def test_a_key_holds_across_a_restart(database_url: str) -> None:
    first_node = Node(settings_for(database_url)).start(bind=False)
    try:
        first = post(
            falcon.testing.TestClient(first_node.app), UNNAMED, headers={"Idempotency-Key": "r"}
        )
    finally:
        first_node.stop()
    second_node = Node(settings_for(database_url)).start(bind=False)
    try:
        again = post(
            falcon.testing.TestClient(second_node.app), UNNAMED, headers={"Idempotency-Key": "r"}
        )
    finally:
        second_node.stop()
    assert first.status_code == again.status_code == 201
    assert again.json == first.json


def test_a_key_older_than_its_lifetime_is_refused_not_reused(database_url: str) -> None:
    node = Node(settings_for(database_url, idempotency_ttl=0)).start(bind=False)
    try:
        client = falcon.testing.TestClient(node.app)
        assert post(client, UNNAMED, headers={"Idempotency-Key": "old"}).status_code == 201
        late = post(client, UNNAMED, headers={"Idempotency-Key": "old"})
        problem = assert_problem(late, 422)
        assert problem["type"] == "urn:orderlog:problem:idempotency-key-expired"
    finally:
        node.stop()


def test_two_clients_keys_never_meet(client: falcon.testing.TestClient, node: Node) -> None:
    alice = node.tokens.create("alice", ["orders:write"])
    bob = node.tokens.create("bob", ["orders:write"])
    a = post(client, UNNAMED, headers={"Idempotency-Key": "1", "Authorization": f"Bearer {alice}"})
    b = post(client, UNNAMED, headers={"Idempotency-Key": "1", "Authorization": f"Bearer {bob}"})
    assert a.status_code == b.status_code == 201
    assert a.json["order_id"] != b.json["order_id"]
