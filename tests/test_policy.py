"""The worker's decisions, with plain values: who picks an order up, when, and what is due."""

from __future__ import annotations

import pytest

from orderlog.domain.order import Status
from orderlog.domain.policy import (
    MAX_LEASE_DOUBLINGS,
    ClaimPolicy,
    OpenOrder,
    finish_before_stop,
    incarnation_of,
    lease,
    may_claim,
    node_of,
    work_done_at,
    worker_id_for,
)

POLICY = ClaimPolicy(node="n1", incarnation="now", claim_timeout=30.0, pending_grace=5.0)


def pending(node: str | None, since: float = 100.0) -> OpenOrder:
    return OpenOrder("o1", Status.PENDING, 1, since, node)


def processing(worker_id: str, attempt: int = 1, since: float = 100.0) -> OpenOrder:
    return OpenOrder("o1", Status.PROCESSING, 2, since, node_of(worker_id), worker_id, attempt)


def test_this_nodes_pending_order_is_picked_up_at_once() -> None:
    assert POLICY.needs_pickup(pending("n1"), now=100.0, starting=False)


def test_another_nodes_pending_order_waits_for_the_grace_period() -> None:
    assert not POLICY.needs_pickup(pending("n2"), now=104.9, starting=False)
    assert POLICY.needs_pickup(pending("n2"), now=105.0, starting=False)


def test_at_start_up_every_pending_order_is_picked_up() -> None:
    assert POLICY.needs_pickup(pending("n2"), now=100.0, starting=True)
    assert POLICY.needs_pickup(pending(None), now=100.0, starting=True)


def test_a_claim_of_this_incarnation_is_picked_up_so_a_lost_answer_is_not_stranded() -> None:
    # A claim committed with its answer lost is in the log and in no worker's hands: the
    # sweep hands it to the worker, which takes it back in hand (what it already holds
    # it never takes twice: tests/test_worker.py).
    mine = processing(worker_id_for("n1", "now"), since=100.0)
    assert POLICY.needs_pickup(mine, now=100.0, starting=False)


def test_a_claim_of_this_nodes_previous_incarnation_is_picked_up_at_once() -> None:
    before_restart = processing(worker_id_for("n1", "before"), since=100.0)
    assert POLICY.needs_pickup(before_restart, now=100.0, starting=False)


def test_another_nodes_claim_is_picked_up_only_once_its_lease_ran_out() -> None:
    theirs = processing(worker_id_for("n2", "x"), attempt=1, since=100.0)
    assert not POLICY.needs_pickup(theirs, now=129.9, starting=True)
    assert POLICY.needs_pickup(theirs, now=130.0, starting=False)


def test_a_re_claim_lasts_twice_as_long_as_the_claim_before() -> None:
    second = processing(worker_id_for("n2", "x"), attempt=2, since=100.0)
    assert not POLICY.needs_pickup(second, now=159.9, starting=False)
    assert POLICY.needs_pickup(second, now=160.0, starting=False)


def test_leases_grow_by_doubling_up_to_a_cap() -> None:
    assert [lease(30.0, attempt) for attempt in (1, 2, 3)] == [30.0, 60.0, 120.0]
    assert lease(1.0, 100) == 2.0**MAX_LEASE_DOUBLINGS
    assert lease(30.0, 0) == 30.0


@pytest.mark.parametrize(
    ("status", "reclaim", "expected"),
    [
        (Status.PENDING, False, True),
        (Status.PENDING, True, True),
        (Status.PROCESSING, False, False),  # someone holds it: only an abandoned claim is taken
        (Status.PROCESSING, True, True),
        (Status.COMPLETED, True, False),
        (None, False, False),  # no such order
    ],
)
def test_only_pending_or_abandoned_orders_may_be_claimed(
    status: Status | None, reclaim: bool, expected: bool
) -> None:
    assert may_claim(status, reclaim) is expected


def test_work_is_done_a_processing_delay_after_the_claim() -> None:
    assert work_done_at(10.0, 0.2) == pytest.approx(10.2)
    assert work_done_at(10.0, 0.0) == 10.0


def test_on_stop_only_work_done_by_the_deadline_is_completed() -> None:
    assert finish_before_stop(9.9, stop_deadline=10.0)
    assert finish_before_stop(10.0, stop_deadline=10.0)
    assert not finish_before_stop(10.1, stop_deadline=10.0)


def test_worker_ids_name_their_node_and_incarnation() -> None:
    worker_id = worker_id_for("host-8000", "abc123", 0)
    assert node_of(worker_id) == "host-8000"
    assert incarnation_of(worker_id) == "abc123"
    assert node_of("no-slashes") is None and incarnation_of(None) is None
    assert node_of(worker_id_for("a/b", "c")) == "a/b"  # a node name may hold a slash
