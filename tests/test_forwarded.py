"""Behind the trusted proxy, one forwarded client has at most N requests in the app at once.

The middleware runs in a small Falcon app whose one resource waits for the test's
signal, so requests can be held in the app; waitress's proxy handling is mirrored
by the environ: X-Forwarded-For present and REMOTE_ADDR already the client's.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import falcon
import falcon.testing
import pytest

from api.http import problem
from api.http.forwarded import ForwardedClientLimit
from tests.support import DEADLINE, wait_for


class Held:
    """GET waits until released; counts the requests inside."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.inside = 0
        self._lock = threading.Lock()

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        with self._lock:
            self.inside += 1
        self.release.wait(DEADLINE)
        resp.media = {"client": req.remote_addr}


@pytest.fixture
def held() -> Iterator[Held]:
    resource = Held()
    yield resource
    resource.release.set()


def client_for(held: Held, limit: int) -> falcon.testing.TestClient:
    app = falcon.App(middleware=[ForwardedClientLimit(limit)])
    problem.install(app)
    app.add_route("/held", held)
    return falcon.testing.TestClient(app)


def get(client: falcon.testing.TestClient, address: str, forwarded: bool) -> falcon.testing.Result:
    headers = {"X-Forwarded-For": address} if forwarded else {}
    return client.simulate_get("/held", headers=headers, remote_addr=address)


def test_a_forwarded_client_over_its_bound_gets_429_problem_and_others_are_served(
    held: Held,
) -> None:
    client = client_for(held, limit=2)
    with ThreadPoolExecutor(4) as pool:
        first: list[Future[falcon.testing.Result]] = [
            pool.submit(get, client, "203.0.113.7", True) for _ in range(2)
        ]
        wait_for(lambda: held.inside == 2, what="two requests to be in the app")

        refused = get(client, "203.0.113.7", True)
        assert refused.status_code == 429
        assert refused.headers["content-type"] == problem.PROBLEM_JSON
        assert refused.headers["retry-after"] == "1"
        assert refused.json["status"] == 429 and refused.json["type"].endswith("too-many-requests")

        other = pool.submit(get, client, "198.51.100.9", True)
        wait_for(lambda: held.inside == 3, what="another client's request to be in the app")
        held.release.set()
        assert [f.result().status_code for f in [*first, other]] == [200, 200, 200]

    # Answered requests gave their places back.
    assert get(client, "203.0.113.7", True).status_code == 200


def test_requests_not_forwarded_by_the_proxy_are_not_held_to_the_bound(held: Held) -> None:
    # Direct clients are bounded by their connections instead (one request at a time each).
    client = client_for(held, limit=1)
    with ThreadPoolExecutor(3) as pool:
        results = [pool.submit(get, client, "192.0.2.1", False) for _ in range(3)]
        wait_for(lambda: held.inside == 3, what="all three requests to be in the app")
        held.release.set()
        assert [r.result().status_code for r in results] == [200] * 3
