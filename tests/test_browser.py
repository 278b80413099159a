"""The dashboard in a real browser: Debian's chromium, driven by Playwright, against a real
``orderlog serve``.

The tests post orders over HTTP and wait, with Playwright's own waits on the page's
elements, until the page shows what ``GET /metrics`` answers; they look an order up
and see its three events; with tokens in the database they enter one in the page.
Playwright never downloads a browser here: it launches the chromium that apt
installed. A screenshot of the dashboard is saved in the test's directory (printed)
and, when ORDERLOG_TEST_ARTIFACTS names a directory, copied there as dashboard.png.
Skipped, saying why, where chromium or Playwright is missing; with
ORDERLOG_TEST_REQUIRE_BROWSER=1 (CI) that fails instead.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.support import DEADLINE, ServerProcess, create_token, start_server

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = pytest.mark.slow

# Headless as root needs no sandbox; the rest keeps Chromium from calling home (this
# machine's closed network refuses those connections) and from starting what a test
# never uses.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = DEADLINE * 1000  # Playwright counts milliseconds
ORDERS = 12  # per batch
EVENT_TYPES = ["OrderPlaced", "OrderProcessingStarted", "OrderCompleted"]


def chromium_binary() -> str | None:
    found = shutil.which("chromium")
    if found is None and os.access("/usr/bin/chromium", os.X_OK):
        found = "/usr/bin/chromium"
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    reason = None
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        reason = "Playwright is not installed (pip install -e '.[test]')"
    chromium = chromium_binary()
    if chromium is None:
        reason = "chromium is not installed (apt-get install chromium)"
    if reason is not None:
        if os.environ.get("ORDERLOG_TEST_REQUIRE_BROWSER") == "1":
            pytest.fail(f"a browser is required here: {reason}")
        pytest.skip(reason)
    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    context.set_default_timeout(WAIT_MS)
    yield context.new_page()
    context.close()


@pytest.fixture
def page_errors(page: Page) -> list[str]:
    """Uncaught errors in the page's script."""
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    return errors


@pytest.fixture
def server(sqlite_url: str, tmp_path: Path) -> Iterator[ServerProcess]:
    server = start_server(sqlite_url, tmp_path)
    yield server
    assert server.terminate() == 0, server.log()


def base(server: ServerProcess) -> str:
    return f"http://{server.host}:{server.port}"


def place_orders(server: ServerProcess, headers: dict[str, str] | None = None) -> list[str]:
    ids = []
    for n in range(ORDERS):
        order_id = f"o-{uuid.uuid4().hex[:10]}"
        order = {"order_id": order_id, "user_id": n, "item_ids": ["sku-1"], "total_amount": "9.90"}
        status, _, body = server.request("POST", "/orders", order, headers=headers)
        assert status == 201, body
        ids.append(order_id)
    return ids


def settled_metrics(
    server: ServerProcess, placed: int, headers: dict[str, str] | None = None
) -> Any:
    """/metrics once all ``placed`` orders are Completed: figures that no longer change."""

    def done(s: ServerProcess) -> Any:
        metrics = s.request("GET", "/metrics", headers=headers)[2]
        return metrics if metrics["status_counts"]["Completed"] == placed else None

    return server.wait_until(done)


def expect_counts(page: Page, metrics: Any) -> None:
    from playwright.sync_api import expect

    for status, n in metrics["status_counts"].items():
        expect(page.locator(f"#count-{status}")).to_have_text(f"{n:,}")
    expect(page.locator("#count-total")).to_have_text(f"{metrics['total_orders']:,}")
    expect(page.locator("#position")).to_have_text(f"{metrics['position']:,}")


def expect_timeline(page: Page, order_id: str) -> None:
    from playwright.sync_api import expect

    page.locator("#order-id").fill(order_id)
    page.locator("#order-id").press("Enter")
    expect(page.locator("#lookup-state")).to_have_text(f"{order_id}: Completed, version 3.")
    expect(page.locator("#timeline li strong")).to_have_text(EVENT_TYPES)


def save_screenshot(page: Page, directory: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    path = directory / "dashboard.png"
    page.screenshot(path=str(path), full_page=True)
    shown = [path]
    if artifacts := os.environ.get("ORDERLOG_TEST_ARTIFACTS"):
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shown.append(Path(shutil.copy(path, Path(artifacts) / "dashboard.png")))
    with capsys.disabled():
        print(f"\ndashboard screenshot: {', '.join(map(str, shown))}")
    return path


def test_the_dashboard_follows_the_log_and_shows_an_orders_timeline(
    page: Page,
    page_errors: list[str],
    server: ServerProcess,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from playwright.sync_api import expect

    console_errors: list[str] = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    page.goto(f"{base(server)}/")
    assert page.url == f"{base(server)}/dashboard"
    expect(page.locator("#state")).to_contain_text("live")
    expect(page.locator("#count-total")).to_have_text("0")
    expect(page.locator("#token-form")).to_be_hidden()

    # Two batches while the page is open: it follows each without a reload.
    ids = place_orders(server)
    expect_counts(page, settled_metrics(server, ORDERS))
    ids += place_orders(server)
    metrics = settled_metrics(server, 2 * ORDERS)
    expect_counts(page, metrics)
    for percentile in ("#p50", "#p95", "#p99", "#mean"):
        expect(page.locator(percentile)).to_have_text(re.compile(r"^\d+\.\d+ (ms|s)$"))
    newest = page.locator("#events tbody tr").first
    expect(newest).to_contain_text(f"{metrics['position']:,}")
    expect(newest).to_contain_text("OrderCompleted")
    expect(page.locator("#rate-chart canvas")).to_have_count(1)
    expect(page.locator("#distribution-chart canvas")).to_have_count(1)

    expect_timeline(page, ids[3])
    # An order in the events table is a link to its timeline, and the address keeps it.
    page.locator("#events tbody tr").first.locator("button").click()
    expect(page.locator("#lookup-state")).to_have_text(f"{ids[-1]}: Completed, version 3.")
    expect(page.locator("#timeline li strong")).to_have_text(EVENT_TYPES)
    expect(page).to_have_url(f"{base(server)}/dashboard#order={ids[-1]}")
    page.locator("#order-id").fill("no-such-order")
    page.locator("#order-id").press("Enter")
    expect(page.locator("#lookup-state")).to_have_text("No order has the id no-such-order.")
    expect(page.locator("#order")).to_be_hidden()

    expect_timeline(page, ids[3])
    save_screenshot(page, tmp_path, capsys)
    assert page_errors == []
    # The lookup of an unknown id is the one failed load; nothing else (a blocked script
    # or style under the page's Content-Security-Policy would show here).
    assert [e for e in console_errors if "404" not in e] == []


def test_with_auth_on_the_page_asks_once_per_tab_for_a_token(
    page: Page, page_errors: list[str], sqlite_url: str, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    secret = create_token(sqlite_url, "dashboard", "admin", tmp_path)
    narrow = create_token(sqlite_url, "reader", "orders:read,events:read", tmp_path)
    server = start_server(sqlite_url, tmp_path)
    try:
        auth = {"Authorization": f"Bearer {secret}"}
        assert server.request("GET", "/metrics")[0] == 401
        ids = place_orders(server, auth)
        metrics = settled_metrics(server, ORDERS, auth)

        page.goto(f"{base(server)}/dashboard")
        form = page.locator("#token-form")
        expect(form).to_be_visible()
        expect(page.locator("#token-reason")).to_contain_text("needs an API token")
        page.locator("#token").fill(narrow)
        page.locator("#token").press("Enter")
        expect(page.locator("#token-reason")).to_contain_text("lacks the scope metrics:read")
        page.locator("#token").fill(secret)
        page.locator("#token").press("Enter")
        expect(form).to_be_hidden()
        expect_counts(page, metrics)
        expect_timeline(page, ids[0])
        assert page.evaluate("sessionStorage.getItem('orderlog.token')") == secret

        # Kept for the tab: a reload asks nothing.
        page.reload()
        expect(page.locator("#state")).to_contain_text("live")
        expect(form).to_be_hidden()
        expect_counts(page, metrics)

        # Another tab has its own session storage, so it asks again.
        other = page.context.new_page()
        other.goto(f"{base(server)}/dashboard")
        expect(other.locator("#token-form")).to_be_visible()
        other.close()

        page.locator("#forget-token").click()
        expect(form).to_be_visible()
        assert page.evaluate("sessionStorage.getItem('orderlog.token')") is None
        assert page_errors == []
    finally:
        assert server.terminate() == 0, server.log()
