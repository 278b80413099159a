"""The dashboard in a real browser: Debian's chromium, driven by Playwright, against a real
``orderlog serve``.

The tests post orders over HTTP and wait, with Playwright's own waits on the page's
elements, until the page shows what ``GET /metrics`` answers; they look an order up
and see its three events; with tokens in the database they enter one in the page.
After a burst under load, a page opened afterwards is measured at 1,400 x 1,000: what
its boxes hold, where its cards sit, what its charts draw (uPlot's own instances, seen
through a wrapper the test installs before the page's scripts run).
Playwright never downloads a browser here: it launches the chromium that apt
installed. Screenshots of the dashboard are saved in each test's directory (printed)
and, when ORDERLOG_TEST_ARTIFACTS names a directory, copied there: dashboard.png after
the burst (the one docs/dashboard.png shows), dashboard-live.png from the page that
followed the orders as they came.
Skipped, saying why, where chromium or Playwright is missing; with
ORDERLOG_TEST_REQUIRE_BROWSER=1 (CI) that fails instead.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from bench import loadgen
from tests.support import DEADLINE, BackgroundLoad, ServerProcess, create_token, start_server

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
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
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


def place_orders(
    server: ServerProcess, headers: dict[str, str] | None = None, **fields: str
) -> list[str]:
    """ORDERS orders of 9.90 in the server's default currency, or as ``fields`` say."""
    ids = []
    for n in range(ORDERS):
        order_id = f"o-{uuid.uuid4().hex[:10]}"
        order = {"order_id": order_id, "user_id": n, "item_ids": ["sku-1"], "total_amount": "9.90"}
        status, _, body = server.request("POST", "/orders", order | fields, headers=headers)
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


def save_screenshot(
    page: Page, directory: Path, capsys: pytest.CaptureFixture[str], name: str = "dashboard.png"
) -> Path:
    path = directory / name
    page.screenshot(path=str(path), full_page=True)
    shown = [path]
    if artifacts := os.environ.get("ORDERLOG_TEST_ARTIFACTS"):
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shown.append(Path(shutil.copy(path, Path(artifacts) / name)))
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

    # Two batches while the page is open: it follows each without a reload. The second
    # is in another currency: the revenue of completed orders is shown per currency.
    expect(page.locator("#revenue dd")).to_have_text(["\u2013"])  # an en dash: none yet
    ids = place_orders(server)
    expect_counts(page, settled_metrics(server, ORDERS))
    ids += place_orders(server, currency="EUR", total_amount="1234.56")
    metrics = settled_metrics(server, 2 * ORDERS)
    expect_counts(page, metrics)
    assert metrics["revenue"] == {"EUR": "14814.72", "USD": "118.80"}
    expect(page.locator("#revenue dt")).to_have_text(["EUR", "USD"])
    expect(page.locator("#revenue dd")).to_have_text(["14,814.72", "118.80"])
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
    # The order itself, a term and its description each.
    expect(page.locator("#order-view dt")).to_have_text(
        ["status", "user", "items", "total", "attempts", "processing time"]
    )
    expect(page.locator("#order-view dd").first).to_have_text("Completed")
    expect(page).to_have_url(f"{base(server)}/dashboard#order={ids[-1]}")
    page.locator("#order-id").fill("no-such-order")
    page.locator("#order-id").press("Enter")
    expect(page.locator("#lookup-state")).to_have_text("No order has the id no-such-order.")
    expect(page.locator("#order")).to_be_hidden()

    expect_timeline(page, ids[3])
    save_screenshot(page, tmp_path, capsys, "dashboard-live.png")
    assert page_errors == []
    # The lookup of an unknown id is the one failed load; nothing else (a blocked script
    # or style under the page's Content-Security-Policy would show here).
    assert [e for e in console_errors if "404" not in e] == []


# Before the page's scripts run: keep every uPlot the page makes, so a test can read what
# each chart holds and where it put its labels.
KEEP_PLOTS = """
(() => {
  const plots = (window.__plots = []);
  let uPlot;
  Object.defineProperty(window, "uPlot", {
    configurable: true,
    get: () => uPlot,
    set: (made) => {
      uPlot = new Proxy(made, {
        construct(target, args) {
          const plot = Reflect.construct(target, args);
          plots.push(plot);
          return plot;
        },
      });
    },
  });
})();
"""

# The events table's problems: elements wider inside than their box (but for text cut
# with an ellipsis, listed apart as [title, text]), elements outside the table, a table
# outside its card, and version cells that are not the element at their own centre.
EVENTS_TABLE = """
() => {
  const panel = document.getElementById("events-panel");
  const table = document.getElementById("events");
  const problems = [];
  const cut = [];
  const name = (el) => `${el.tagName.toLowerCase()}${el.className ? "." + el.className : ""}`
    + ` "${el.textContent.slice(0, 40)}"`;
  for (const el of [panel, table, ...table.querySelectorAll("*")]) {
    if (el.clientWidth > 0 && el.scrollWidth > el.clientWidth) {
      const style = getComputedStyle(el);
      if (style.textOverflow === "ellipsis" && style.overflowX === "hidden") {
        cut.push([el.title, el.textContent]);
      } else {
        problems.push(`${name(el)}: scrollWidth ${el.scrollWidth} > ${el.clientWidth}`);
      }
    }
  }
  const style = getComputedStyle(panel);
  const outer = panel.getBoundingClientRect();
  const inner = outer.right - parseFloat(style.borderRightWidth) - parseFloat(style.paddingRight);
  const box = table.getBoundingClientRect();
  if (box.right > inner + 0.5) problems.push(`the table ends at ${box.right}, past ${inner}`);
  for (const el of table.querySelectorAll("th, td, button")) {
    const r = el.getBoundingClientRect();
    if (r.left < box.left - 0.5 || r.right > box.right + 0.5) {
      problems.push(`${name(el)} spans ${r.left}-${r.right} outside ${box.left}-${box.right}`);
    }
  }
  for (const row of table.querySelectorAll("tr")) {
    const version = row.lastElementChild;
    const r = version.getBoundingClientRect();
    const seen = document.elementFromPoint((r.left + r.right) / 2, (r.top + r.bottom) / 2);
    if (r.width < 1 || !seen || seen.closest("th, td") !== version) {
      problems.push(`the version cell of row "${row.textContent.slice(0, 30)}" is not visible`);
    }
  }
  return { problems, cut };
}
"""

# Per card, the gap down to the nearest card below it that shares some of its width.
CARD_GAPS = """
() => {
  const cards = [...document.querySelectorAll("main section")]
    .filter((el) => el.offsetParent !== null)
    .map((el) => ({ id: el.id, r: el.getBoundingClientRect() }));
  const gaps = [];
  for (const a of cards) {
    const below = cards.filter((b) => b.r.top >= a.r.bottom - 0.5
      && b.r.left < a.r.right && a.r.left < b.r.right);
    if (below.length) {
      const gap = Math.min(...below.map((b) => b.r.top - a.r.bottom));
      gaps.push([a.id, gap]);
    }
  }
  return { gaps, grid: parseFloat(getComputedStyle(document.querySelector("main")).rowGap) };
}
"""

# The rate chart's x-axis labels as uPlot drew them: [left, right, line, text] per line.
RATE_AXIS_LABELS = """
() => {
  const u = window.__plots.find((p) => p.root.parentElement.id === "rate-chart");
  const axis = u.axes[0];
  const ratio = window.devicePixelRatio;
  const ctx = document.createElement("canvas").getContext("2d");
  ctx.font = axis.font[0]; // uPlot scales the font by the pixel ratio: measure, then divide
  const left = u.bbox.left / ratio;
  const boxes = [];
  axis._splits.forEach((split, i) => {
    const x = left + u.valToPos(split, "x");
    String(axis._values[i]).split("\\n").forEach((line, n) => {
      const half = ctx.measureText(line).width / ratio / 2;
      boxes.push([x - half, x + half, n, line]);
    });
  });
  return boxes;
}
"""

CHART_DATA = """
(id) => window.__plots.find((p) => p.root.parentElement.id === id).data.map((s) => [...s])
"""


def burst_under_load(server: ServerProcess, orders: int) -> None:
    """``orders`` placed at once with ids the server makes, while other clients keep it
    busy reading the log until every order is Completed."""
    body = orjson.dumps({"user_id": 7, "item_ids": ["sku-1"], "total_amount": "9.90"})
    post = ("POST", "/orders", body, {"Content-Type": "application/json"})
    readers = BackgroundLoad(
        server.host, server.port, lambda n: ("GET", "/events?limit=200", None), 4
    ).start()
    try:
        # On a thread of its own: Playwright's loop already runs on this one.
        with ThreadPoolExecutor(1) as client:
            burst = client.submit(loadgen.run, server.host, server.port, [post] * orders, 8)
            answers = burst.result(timeout=DEADLINE)
        assert [a.status for a in answers] == [201] * orders, answers[0]
        settled_metrics(server, orders)
    finally:
        readers.stop()
    assert {a.status for a in readers.responses()} == {200}


def exact_processing_percentiles(server: ServerProcess) -> dict[str, float]:
    """p50 and p95 of the processing times in the log, in ms, of the lower rank as
    ``/metrics`` takes them: from every event of the feed."""
    started: dict[str, float] = {}
    times: list[float] = []
    after = 0
    while page := server.request("GET", f"/events?after={after}&limit=1000")[2]["events"]:
        for event in page:
            at = datetime.fromisoformat(event["recorded_at"]).timestamp() * 1000
            if event["type"] == "OrderProcessingStarted":
                started[event["stream_id"]] = at
            elif event["type"] == "OrderCompleted":
                times.append(at - started[event["stream_id"]])
        after = page[-1]["position"]
    times.sort()
    return {q: times[math.floor(p * (len(times) - 1))] for q, p in (("p50", 0.5), ("p95", 0.95))}


def shown_ms(page: Page, selector: str) -> float:
    text = page.locator(selector).inner_text()
    assert text.endswith(" ms"), text
    return float(text.removesuffix(" ms"))


def expect_time_labels_apart(page: Page) -> None:
    labels = sorted(page.evaluate(RATE_AXIS_LABELS))
    assert len(labels) >= 3, labels
    for (_, right, line, text), later in itertools.combinations(labels, 2):
        assert later[2] != line or right <= later[0], f"{text!r} meets {later[3]!r}: {labels}"


def expect_cards_close(page: Page) -> None:
    measured = page.evaluate(CARD_GAPS)
    assert measured["gaps"], measured
    assert all(gap <= 2 * measured["grid"] for _, gap in measured["gaps"]), measured


def test_a_page_opened_after_a_burst_under_load_shows_it_whole_and_apart(
    page: Page,
    page_errors: list[str],
    server: ServerProcess,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from playwright.sync_api import expect

    orders = 50
    burst_under_load(server, orders)
    metrics = settled_metrics(server, orders)
    exact = exact_processing_percentiles(server)

    page.add_init_script(KEEP_PLOTS)
    page.goto(f"{base(server)}/dashboard")
    expect_counts(page, metrics)
    expect(page.locator("#events tbody tr")).to_have_count(25)
    expect(page.locator("#events tbody tr").first).to_contain_text(f"{metrics['position']:,}")

    # The rate chart: the burst, from the log's recorded times, with no order placed since.
    expect(page.locator("#rate-summary")).to_contain_text(
        f"Last 5 minutes: {orders} placed, {orders} completed"
    )
    times, placed, completed = page.evaluate(CHART_DATA, "rate-chart")
    assert len(times) >= 299 and max(placed) > 0 and max(completed) > 0
    expect_time_labels_apart(page)

    # p50 and p95 apart, each where the log's own times put it (0.1%, shown to 0.1 ms).
    for name in ("p50", "p95"):
        assert abs(shown_ms(page, f"#{name}") - exact[name]) <= 0.001 * exact[name] + 0.051, exact
    assert shown_ms(page, "#p50") < shown_ms(page, "#p95")
    _, counts = page.evaluate(CHART_DATA, "distribution-chart")
    assert sum(counts) == orders and sum(1 for n in counts if n > 0) > 1, counts

    # Server-made ids (36 characters) fit whole; nothing leaves the table or its card.
    ids = page.locator("#events tbody td.order button").all_inner_texts()
    assert ids and all(len(text) == 36 for text in ids), ids
    assert page.evaluate(EVENTS_TABLE) == {"problems": [], "cut": []}
    expect_cards_close(page)
    page.locator("#events tbody tr").first.locator("button").click()
    expect(page.locator("#timeline li strong")).to_have_text(EVENT_TYPES)
    expect_cards_close(page)
    save_screenshot(page, tmp_path, capsys)

    # Narrower, the ids give way (an ellipsis, the whole id in the tooltip), the table not.
    page.set_viewport_size({"width": 1000, "height": 1000})
    for chart in ("rate-chart", "distribution-chart"):  # redrawn at the new width
        width = page.evaluate(f"Math.max(240, document.getElementById('{chart}').clientWidth)")
        expect(page.locator(f"#{chart} .uplot")).to_have_css("width", f"{width}px")
    narrow = page.evaluate(EVENTS_TABLE)
    assert narrow["problems"] == []
    assert narrow["cut"], narrow
    assert all(title == text and len(title) == 36 for title, text in narrow["cut"])
    expect_time_labels_apart(page)
    expect_cards_close(page)
    assert page_errors == []


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
