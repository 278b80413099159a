"""The worker's decisions as pure functions: what to claim, how long a claim lasts, what is due.

Nothing here reads the log, a clock or a queue: callers pass in the order as the
log last showed it and the time. So every rule of who may work on an order, and
when, is tested with plain values, and the worker is left with the mechanism.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from orderlog.domain.order import Status

MAX_LEASE_DOUBLINGS = 6


class OpenOrder(NamedTuple):
    """An order not yet Completed, as the log last showed it."""

    order_id: str
    status: Status  # Pending or Processing
    version: int
    since: float  # epoch seconds of its last transition
    node: str | None  # the node that accepted it (Pending) or claimed it (Processing)
    worker_id: str | None = None
    attempt: int = 0


@dataclass(frozen=True)
class ClaimPolicy:
    """Who takes an open order, and when. ``incarnation`` names this run of this node."""

    node: str
    incarnation: str
    claim_timeout: float = 30.0
    pending_grace: float = 5.0

    def needs_pickup(self, order: OpenOrder, now: float, starting: bool) -> bool:
        """Whether this node's sweep should take ``order`` on (it is not in hand here)."""
        if order.status is Status.PENDING:
            # Our own orders, and every order at start-up, at once; another live
            # node's after a grace period, in case its queue was lost with it.
            return starting or order.node == self.node or now - order.since >= self.pending_grace
        if order.node == self.node:
            # Claimed here: before a restart (nobody works on it), or in this run by a
            # commit whose answer was lost (the worker takes it back in hand). What the
            # worker holds in hand it never takes twice.
            return True
        return now - order.since >= lease(self.claim_timeout, order.attempt)


def may_claim(status: Status | None, reclaim: bool) -> bool:
    """A Pending order may be claimed; a Processing one only when the sweep found its
    claim abandoned (``reclaim``); anything else (Completed, unknown) never."""
    return status is Status.PENDING or (status is Status.PROCESSING and reclaim)


def lease(claim_timeout: float, attempt: int) -> float:
    """How long claim number ``attempt`` lasts: doubled on every re-claim (up to 64x).

    An order whose work outlasts the lease would otherwise be taken over forever,
    each completion refused because of the next take-over; growing leases let a
    slow order finish on its own after a few attempts.
    """
    return claim_timeout * 2 ** min(max(attempt - 1, 0), MAX_LEASE_DOUBLINGS)


def work_done_at(claimed_at: float, processing_delay: float) -> float:
    """When an order claimed at ``claimed_at`` has had its (simulated) work done."""
    return claimed_at + processing_delay


def finish_before_stop(done_at: float, stop_deadline: float) -> bool:
    """On shutdown, an order is completed if its work is done by the deadline; otherwise
    it stays Processing in the log and is claimed again at the next start."""
    return done_at <= stop_deadline


def worker_id_for(node: str, incarnation: str, index: int = 0) -> str:
    """Worker ids read node/incarnation/index, so a restarted node knows its old claims."""
    return f"{node}/{incarnation}/{index}"


def node_of(worker_id: str | None) -> str | None:
    return worker_id.rsplit("/", 2)[0] if worker_id and worker_id.count("/") >= 2 else None


def incarnation_of(worker_id: str | None) -> str | None:
    return worker_id.rsplit("/", 2)[1] if worker_id and worker_id.count("/") >= 2 else None
