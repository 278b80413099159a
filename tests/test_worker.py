"""The worker on a real store, every backend, no HTTP: claims, leases, recovery and stop.

Time that matters to the rules (a claim's lease, another node's grace period) comes
from a clock the test moves by hand; the sweep runs when the test calls it, and
the test waits on ``wait_idle`` or polls the log with a deadline.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal

import pytest

from api.node import Node
from orderlog.domain.errors import ConcurrencyError
from orderlog.domain.events import OrderProcessingStarted, RecordedEvent
from orderlog.domain.order import OrderState, PlaceOrder, Status
from orderlog.domain.policy import incarnation_of, worker_id_for
from orderlog.service import OrderService, Seen
from orderlog.storage.store import EventStore
from orderlog.worker import Worker
from projections.order_status import OrderStatusModel
from tests.support import make_store, run_threads, wait_for

NEVER = 3600.0  # a sweep interval the test outlives: only the test's own calls sweep


class Clock:
    """Seconds since the epoch, moved only by the test."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def shared_store(database_url: str) -> Iterator[EventStore]:
    store = make_store(database_url)
    yield store
    store.close()


@pytest.fixture
def service(shared_store: EventStore) -> OrderService:
    return OrderService(shared_store, idempotency_ttl=86400.0)


@pytest.fixture
def make_worker(service: OrderService) -> Iterator[Callable[..., Worker]]:
    made: list[Worker] = []

    def build(**options: object) -> Worker:
        values: dict[str, object] = {
            "processing_delay": 0.0,
            "node": "n1",
            "sweep_interval": NEVER,
        }
        values.update(options)
        # Each worker with its own read model, as each node has one.
        worker = Worker(service, OrderStatusModel(service.store), **values)  # type: ignore[arg-type]
        made.append(worker)
        return worker

    yield build
    for worker in made:
        worker.stop()


def place(service: OrderService, order_id: str, node: str = "n1") -> None:
    command = PlaceOrder(order_id, "u1", ("a",), Decimal("1"))
    service.place_order(command, metadata={"node": node})


def claim(service: OrderService, order_id: str, worker_id: str) -> RecordedEvent:
    """Claim an order as some other worker would, and return the claim as recorded."""
    seen = Seen(order_id, service.state(order_id))
    _, (claimed,) = service.complete_and_start([], [seen], worker_id=worker_id, metadata={})
    assert isinstance(claimed, OrderState), claimed
    return service.store.read_stream(order_id)[-1]


def types(service: OrderService, order_id: str) -> list[str]:
    return [e.type for e in service.store.read_stream(order_id)]


def test_exactly_one_of_two_racing_claims_wins(service: OrderService) -> None:
    place(service, "o1")
    state = service.state("o1")  # both claimants read the same version
    outcomes: dict[str, str] = {}
    workers = ("a/x/0", "b/y/0")

    def race(n: int) -> None:
        worker_id = workers[n]
        seen = [Seen("o1", state)]
        _, (claimed,) = service.complete_and_start([], seen, worker_id=worker_id, metadata={})
        if isinstance(claimed, OrderState):
            outcomes[worker_id] = "won"
        elif isinstance(claimed, ConcurrencyError):
            outcomes[worker_id] = "lost"

    assert run_threads(2, race) == []
    assert sorted(outcomes.values()) == ["lost", "won"]
    (winner,) = [w for w, outcome in outcomes.items() if outcome == "won"]
    events = service.store.read_stream("o1")
    assert [e.type for e in events] == ["OrderPlaced", "OrderProcessingStarted"]
    assert events[1].data["worker_id"] == winner


def test_two_workers_told_of_the_same_orders_complete_each_exactly_once(
    service: OrderService, make_worker: Callable[..., Worker]
) -> None:
    first = make_worker(node="n1")
    second = make_worker(node="n2")
    first.start()
    second.start()
    order_ids = [f"race-{n}" for n in range(40)]
    for order_id in order_ids:
        place(service, order_id)
    for order_id in order_ids:  # both hear of every order at once
        first.notify(order_id)
        second.notify(order_id)

    assert first.wait_idle(30) and second.wait_idle(30)
    for order_id in order_ids:
        events = service.store.read_stream(order_id)
        assert [e.type for e in events] == [
            "OrderPlaced",
            "OrderProcessingStarted",
            "OrderCompleted",
        ]
        assert events[2].data["attempt"] == 1
    assert first.processed + second.processed == len(order_ids)
    assert first.failures == second.failures == 0


def test_pending_orders_left_in_the_log_are_processed_at_start(
    service: OrderService, make_worker: Callable[..., Worker]
) -> None:
    for n in range(5):  # placed, but no worker was told: as if the node crashed
        place(service, f"left-{n}", node="crashed-node")
    worker = make_worker()
    worker.start()

    assert worker.wait_idle(30)
    for n in range(5):
        assert types(service, f"left-{n}")[-1] == "OrderCompleted"


def test_another_nodes_pending_order_is_taken_only_after_the_grace_period(
    service: OrderService, make_worker: Callable[..., Worker]
) -> None:
    clock = Clock(0)
    worker = make_worker(pending_grace=5.0, clock=clock)
    worker.start()  # the start-up sweep sees an empty log
    place(service, "theirs", node="n2")
    placed_at = service.store.read_stream("theirs")[0].recorded_at.timestamp()

    clock.now = placed_at + 4.9
    worker.sweep()
    assert worker.wait_idle(10)
    assert types(service, "theirs") == ["OrderPlaced"]

    clock.now = placed_at + 5.0
    worker.sweep()
    assert worker.wait_idle(10)
    assert types(service, "theirs")[-1] == "OrderCompleted"


def test_another_nodes_claim_is_taken_over_only_after_its_lease(
    service: OrderService, make_worker: Callable[..., Worker]
) -> None:
    place(service, "o1", node="n2")
    claimed_at = claim(service, "o1", "n2/old/0").recorded_at.timestamp()
    clock = Clock(claimed_at + 1)
    worker = make_worker(claim_timeout=30.0, clock=clock)
    worker.start()
    assert worker.wait_idle(10)
    assert types(service, "o1") == ["OrderPlaced", "OrderProcessingStarted"]

    clock.now = claimed_at + 29.9
    worker.sweep()
    assert worker.wait_idle(10)
    assert types(service, "o1") == ["OrderPlaced", "OrderProcessingStarted"]

    clock.now = claimed_at + 30.0
    worker.sweep()
    assert worker.wait_idle(10)
    events = service.store.read_stream("o1")
    assert [e.type for e in events] == [
        "OrderPlaced",
        "OrderProcessingStarted",
        "OrderProcessingStarted",
        "OrderCompleted",
    ]
    assert events[2].data["attempt"] == 2
    assert incarnation_of(events[2].data["worker_id"]) == worker.incarnation
    assert events[3].data["attempt"] == 2


def test_each_re_claim_doubles_the_lease_so_a_slow_order_can_finish(
    service: OrderService, make_worker: Callable[..., Worker]
) -> None:
    place(service, "o1", node="n2")
    claim(service, "o1", "n2/old/0")
    state = service.state("o1")
    second = service.store.append(
        "o1", [OrderProcessingStarted("o1", 2, "n3/other/0")], state.version
    )[0]
    claimed_at = second.recorded_at.timestamp()
    clock = Clock(claimed_at + 59.9)  # attempt 2's lease is 2 x 30 s
    worker = make_worker(claim_timeout=30.0, clock=clock)
    worker.start()
    assert worker.wait_idle(10)
    assert types(service, "o1")[-1] == "OrderProcessingStarted"

    clock.now = claimed_at + 60.0
    worker.sweep()
    assert worker.wait_idle(10)
    events = service.store.read_stream("o1")
    assert [e.type for e in events][-2:] == ["OrderProcessingStarted", "OrderCompleted"]
    assert events[-1].data["attempt"] == 3


def test_a_claim_by_this_nodes_previous_incarnation_is_taken_over_at_start(
    service: OrderService, make_worker: Callable[..., Worker]
) -> None:
    place(service, "o1")
    claimed_at = claim(service, "o1", worker_id_for("n1", "previous", 0)).recorded_at
    # The lease is still young: only the node id says nobody is working on it.
    worker = make_worker(node="n1", claim_timeout=30.0, clock=Clock(claimed_at.timestamp()))
    worker.start()

    assert worker.wait_idle(10)
    events = service.store.read_stream("o1")
    assert [e.type for e in events][-2:] == ["OrderProcessingStarted", "OrderCompleted"]
    assert events[2].data["attempt"] == 2
    assert events[2].data["worker_id"].startswith(f"n1/{worker.incarnation}/")
    assert events[3].data["attempt"] == 2


def test_a_claim_of_this_incarnation_in_no_hands_is_completed_without_a_second_claim(
    service: OrderService, make_worker: Callable[..., Worker]
) -> None:
    # As a claim whose commit landed with its answer lost: in the log as ours, and the
    # worker never heard. Its own sweep finds it and completes it; it never claims again.
    clock = Clock(0)
    worker = make_worker(node="n1", claim_timeout=30.0, clock=clock)
    place(service, "o1")
    claim(service, "o1", worker_id_for("n1", worker.incarnation, 0))
    worker.start()
    worker.sweep()

    wait_for(lambda: types(service, "o1")[-1] == "OrderCompleted", what="o1 completed")
    assert worker.wait_idle(10)
    assert types(service, "o1") == ["OrderPlaced", "OrderProcessingStarted", "OrderCompleted"]


def test_sweeps_never_take_an_order_the_worker_holds_in_hand(
    service: OrderService, make_worker: Callable[..., Worker]
) -> None:
    worker = make_worker(node="n1", processing_delay=1.0)
    worker.start()
    place(service, "o1")
    worker.notify("o1")
    wait_for(lambda: worker.in_work == 1, what="o1 in work")
    for _ in range(5):
        worker.sweep()
    assert worker.wait_idle(10)
    assert types(service, "o1") == ["OrderPlaced", "OrderProcessingStarted", "OrderCompleted"]


def test_stop_completes_orders_in_work_and_leaves_queued_ones_pending(
    service: OrderService, make_worker: Callable[..., Worker]
) -> None:
    worker = make_worker(max_in_work=2, processing_delay=0.5)
    worker.start()
    order_ids = [f"q-{n}" for n in range(5)]
    for order_id in order_ids:
        place(service, order_id)
        worker.notify(order_id)
    wait_for(lambda: worker.in_work == 2)
    in_work = [o for o in order_ids if types(service, o)[-1] == "OrderProcessingStarted"]

    assert worker.stop(timeout=10)
    assert len(in_work) == 2
    for order_id in order_ids:
        expected = ["OrderPlaced", "OrderProcessingStarted", "OrderCompleted"]
        assert types(service, order_id) == (expected if order_id in in_work else ["OrderPlaced"])
    assert worker.wait_idle(0)  # nothing is left scheduled on the stopped worker

    successor = make_worker()
    successor.start()
    assert successor.wait_idle(30)
    for order_id in order_ids:
        completed = [e for e in service.store.read_stream(order_id) if e.type == "OrderCompleted"]
        assert len(completed) == 1


def test_stop_leaves_orders_whose_work_ends_after_the_deadline_processing(
    service: OrderService, make_worker: Callable[..., Worker]
) -> None:
    worker = make_worker(node="n1", processing_delay=3600)
    worker.start()
    for n in range(3):
        place(service, f"long-{n}")
        worker.notify(f"long-{n}")
    wait_for(lambda: worker.in_work == 3)

    assert worker.stop(timeout=0.2) is False
    for n in range(3):
        assert types(service, f"long-{n}") == ["OrderPlaced", "OrderProcessingStarted"]

    successor = make_worker(node="n1")  # the same node, started again: takes its claims back
    successor.start()
    assert successor.wait_idle(30)
    for n in range(3):
        events = service.store.read_stream(f"long-{n}")
        assert [e.type for e in events][-2:] == ["OrderProcessingStarted", "OrderCompleted"]
        assert events[-1].data["attempt"] == 2


def test_a_thousand_orders_are_in_work_at_once_and_each_completes_exactly_once(
    service: OrderService, make_worker: Callable[..., Worker]
) -> None:
    order_ids = [f"many-{n:04d}" for n in range(1000)]
    for order_id in order_ids:  # placed before the worker runs: its start finds them all
        place(service, order_id)
    worker = make_worker(processing_delay=0.2, max_in_work=1000)
    worker.start()

    assert worker.wait_idle(60)
    log = list(service.store.iter_all())
    started = [e.position for e in log if e.type == "OrderProcessingStarted"]
    completed = [e for e in log if e.type == "OrderCompleted"]
    assert len(started) == 1000
    # Every claim is in the log before the first completion: all 1,000 were in work at once.
    assert max(started) < min(e.position for e in completed)
    assert sorted(e.stream_id for e in completed) == order_ids
    assert worker.processed == 1000 and worker.failures == 0


def test_max_in_work_bounds_the_orders_claimed_at_once(
    service: OrderService, make_worker: Callable[..., Worker]
) -> None:
    for n in range(30):
        place(service, f"b-{n}")
    worker = make_worker(processing_delay=0.05, max_in_work=7)
    worker.start()

    assert worker.wait_idle(60)
    in_work = most = 0
    for event in service.store.iter_all():
        if event.type == "OrderProcessingStarted":
            in_work += 1
        elif event.type == "OrderCompleted":
            in_work -= 1
        most = max(most, in_work)
    assert most == 7
    assert worker.processed == 30


def test_notify_after_stop_schedules_nothing(
    service: OrderService, make_worker: Callable[..., Worker]
) -> None:
    worker = make_worker()
    worker.start()
    worker.stop()
    place(service, "late")
    worker.notify("late")

    assert worker.wait_idle(0)
    assert types(service, "late") == ["OrderPlaced"]


def test_wait_idle_times_out_while_busy_and_returns_once_the_work_is_done(
    service: OrderService, make_worker: Callable[..., Worker]
) -> None:
    worker = make_worker(processing_delay=0.3)
    worker.start()
    assert worker.wait_idle(0)  # nothing to do yet
    place(service, "o1")
    worker.notify("o1")

    assert not worker.wait_idle(0.05)
    assert worker.wait_idle(10)
    assert types(service, "o1")[-1] == "OrderCompleted"


def test_an_order_placed_through_the_runtime_is_completed(node: Node) -> None:
    command = PlaceOrder("rt-1", "u1", ("a", "b"), Decimal("2"))
    node.service.place_order(command, metadata={"node": node.settings.node})

    assert node.worker.wait_idle(30)
    state = node.service.state("rt-1")
    assert state.status is Status.COMPLETED
    assert state.attempt == 1


def test_a_wrong_read_model_never_makes_the_worker_act_against_the_log(
    service: OrderService, make_worker: Callable[..., Worker], database_url: str
) -> None:
    from tests.support import admin_execute

    for order_id in ("done-1", "done-2"):
        place(service, order_id)
        claim(service, order_id, worker_id_for("n1", "before", 0))
        seen = [Seen(order_id, service.state(order_id))]
        (completed,), _ = service.complete_and_start(seen, [], worker_id="", metadata={})
        assert completed == service.state(order_id)
    OrderStatusModel(service.store).catch_up()
    # The rows say these completed orders are still open: a bug, or a tampered table.
    admin_execute(
        database_url,
        [
            "UPDATE order_status SET status = 'Processing' WHERE order_id = 'done-1'",
            "UPDATE order_status SET status = 'Pending' WHERE order_id = 'done-2'",
        ],
    )
    worker = make_worker(node="n1")  # the node whose claim the row shows: it would take it back
    worker.start()

    assert worker.wait_idle(30)
    for order_id in ("done-1", "done-2"):
        assert types(service, order_id) == [
            "OrderPlaced",
            "OrderProcessingStarted",
            "OrderCompleted",
        ]
