/* The orderlog dashboard: polls the JSON API once a second and draws what it answers.
 *
 * Plain JS and uPlot, no build step. Every value from the server reaches the page as
 * text (textContent), never as HTML. API paths are relative to the page (/dashboard),
 * so the dashboard also works behind a proxy that mounts the service under a prefix.
 * When the API answers 401 or 403 the page asks for a token, keeps it in this tab's
 * session storage and sends it as a bearer token from then on.
 */
"use strict";

(() => {
  const POLL_MS = 1000;
  const RATE_WINDOW_SECONDS = 300;
  const LATEST = 25; // rows in the latest-events table
  const PAGE = 1000; // the event feed's largest page
  const TOKEN_KEY = "orderlog.token";
  const STATUSES = ["Pending", "Processing", "Completed"];

  const $ = (id) => document.getElementById(id);

  class AuthError extends Error {
    constructor(status, problem) {
      super(problem.detail || `HTTP ${status}`);
      this.status = status;
      this.problem = problem;
    }
  }

  class ApiError extends Error {
    constructor(status, problem) {
      super(problem.detail || `HTTP ${status}`);
      this.status = status;
    }
  }

  // -- talking to the API -------------------------------------------------------------

  function storedToken() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  async function problemOf(resp) {
    try {
      return await resp.json();
    } catch {
      return {};
    }
  }

  async function api(path, accept = "application/json") {
    const headers = { Accept: accept };
    const token = storedToken();
    if (token) headers.Authorization = `Bearer ${token}`;
    const resp = await fetch(path, { headers, cache: "no-store" });
    if (resp.status === 401 || resp.status === 403) {
      throw new AuthError(resp.status, await problemOf(resp));
    }
    if (!resp.ok) throw new ApiError(resp.status, await problemOf(resp));
    return accept === "application/json" ? resp.json() : resp.text();
  }

  // -- formatting ---------------------------------------------------------------------

  const count = (n) => (n == null ? "–" : n.toLocaleString("en-US"));

  function seconds(s) {
    if (s == null) return "–";
    if (s < 1) return `${(s * 1000).toFixed(1)} ms`;
    return `${s.toFixed(2)} s`;
  }

  // "2026-11-26T23:03:12.346167Z" -> "23:03:12.346" (UTC, as the log records it)
  const clock = (recordedAt) => recordedAt.slice(11, 23);

  function setState(text, failing = false) {
    const state = $("state");
    state.textContent = text;
    state.classList.toggle("failing", failing);
  }

  // -- counts and percentiles ---------------------------------------------------------

  function showMetrics(m) {
    for (const status of STATUSES) $(`count-${status}`).textContent = count(m.status_counts[status]);
    $("count-total").textContent = count(m.total_orders);
    $("position").textContent = count(m.position);
    const p = m.processing_time_percentiles_seconds || {};
    $("p50").textContent = seconds(p.p50);
    $("p95").textContent = seconds(p.p95);
    $("p99").textContent = seconds(p.p99);
    $("mean").textContent = seconds(m.average_processing_time_seconds);
  }

  // -- orders per second, from successive /metrics answers --------------------------------

  const rate = { last: null, xs: [], placed: [], completed: [], plot: null };

  function chartWidth(el) {
    return Math.max(240, el.clientWidth);
  }

  function recordRate(m) {
    const now = Date.now() / 1000;
    const last = rate.last;
    rate.last = { t: now, placed: m.total_orders, completed: m.orders_processed };
    if (last === null) return;
    const dt = now - last.t;
    if (dt <= 0) return;
    // A rebuild may start the counts again: never draw a negative rate.
    rate.xs.push(now);
    rate.placed.push(Math.max(0, (m.total_orders - last.placed) / dt));
    rate.completed.push(Math.max(0, (m.orders_processed - last.completed) / dt));
    while (rate.xs.length && rate.xs[0] < now - RATE_WINDOW_SECONDS) {
      rate.xs.shift();
      rate.placed.shift();
      rate.completed.shift();
    }
    drawRate();
  }

  function drawRate() {
    const data = [rate.xs, rate.placed, rate.completed];
    if (rate.plot) {
      rate.plot.setData(data);
      return;
    }
    const el = $("rate-chart");
    rate.plot = new uPlot(
      {
        width: chartWidth(el),
        height: 220,
        scales: {
          // The window ends now and grows from one minute to RATE_WINDOW_SECONDS.
          x: { range: () => rateWindow() },
          y: { range: (u, min, max) => [0, Math.max(1, max * 1.1)] },
        },
        axes: [{}, { label: "orders/s", size: 56 }],
        series: [
          {},
          { label: "placed", stroke: "#2b6cb0", width: 2, value: (u, v) => rateText(v) },
          { label: "completed", stroke: "#2f855a", width: 2, value: (u, v) => rateText(v) },
        ],
      },
      data,
      el,
    );
  }

  const rateText = (v) => (v == null ? "–" : v.toFixed(1));

  function rateWindow() {
    const end = rate.xs[rate.xs.length - 1];
    const span = Math.min(RATE_WINDOW_SECONDS, Math.max(60, end - rate.xs[0]));
    return [end - span, end];
  }

  // -- the processing-time distribution, from the Prometheus histogram --------------------

  const BUCKET = /^orderlog_processing_seconds_bucket\{le="([^"]+)"\} (\S+)$/gm;
  const histogram = { text: null, labels: [], plot: null };

  function bucketLabel(le) {
    if (le === "+Inf") return "more";
    const s = Number(le);
    return s < 1 ? `≤${Math.round(s * 1000)}ms` : `≤${s}s`;
  }

  function showHistogram(exposition) {
    const rows = [...exposition.matchAll(BUCKET)].map((m) => [m[1], Number(m[2])]);
    const key = JSON.stringify(rows);
    if (key === histogram.text) return;
    histogram.text = key;
    // The buckets are cumulative: each bar is a bucket's count less the one below it.
    const bars = rows.map(([, n], i) => n - (i ? rows[i - 1][1] : 0));
    histogram.labels = rows.map(([le]) => bucketLabel(le));
    const data = [bars.map((_, i) => i), bars];
    if (histogram.plot) {
      histogram.plot.setData(data);
      return;
    }
    const el = $("distribution-chart");
    histogram.plot = new uPlot(
      {
        width: chartWidth(el),
        height: 220,
        scales: {
          x: { time: false, range: (u) => [-0.5, histogram.labels.length - 0.5] },
          y: { range: (u, min, max) => [0, Math.max(1, max * 1.1)] },
        },
        axes: [
          {
            splits: () => histogram.labels.map((_, i) => i),
            values: (u, splits) => splits.map((i) => histogram.labels[i] ?? ""),
            rotate: -45,
            size: 56,
          },
          { label: "orders", size: 56 },
        ],
        legend: { show: false },
        series: [
          {},
          {
            label: "orders",
            fill: "rgba(43, 108, 176, 0.6)",
            stroke: "#2b6cb0",
            paths: uPlot.paths.bars({ size: [0.8, 48] }),
            points: { show: false },
          },
        ],
      },
      data,
      el,
    );
  }

  // -- the latest events, tailing /events -------------------------------------------------

  const feed = { after: null, events: [], shown: null };

  async function followEvents() {
    if (feed.after === null) {
      const first = await api("events?limit=1");
      feed.after = Math.max(0, first.head - LATEST);
    }
    const page = await api(`events?after=${feed.after}&limit=${PAGE}`);
    feed.events = feed.events.concat(page.events).slice(-LATEST);
    feed.after = page.next_after;
    // Far behind (a burst): only the latest rows are shown, so skip to them.
    if (page.head - feed.after > PAGE) feed.after = page.head - LATEST;
    showEvents();
  }

  function showEvents() {
    const newest = feed.events.length ? feed.events[feed.events.length - 1].position : 0;
    if (newest === feed.shown) return;
    feed.shown = newest;
    const rows = feed.events
      .slice()
      .reverse()
      .map((e) => {
        const tr = document.createElement("tr");
        const order = document.createElement("button");
        order.type = "button";
        order.className = "link";
        order.textContent = e.stream_id;
        order.addEventListener("click", () => lookUp(e.stream_id));
        for (const cell of [count(e.position), clock(e.recorded_at), e.type, order, e.version]) {
          const td = document.createElement("td");
          td.append(cell);
          tr.append(td);
        }
        tr.dataset.type = e.type;
        return tr;
      });
    document.querySelector("#events tbody").replaceChildren(...rows);
  }

  // -- order lookup --------------------------------------------------------------------

  const lookup = { orderId: null, status: null };

  function setLookupState(text) {
    $("lookup-state").textContent = text;
  }

  async function lookUp(orderId) {
    $("order-id").value = orderId;
    lookup.orderId = orderId;
    setLookupState(`Looking up ${orderId}…`);
    try {
      await refreshOrder();
      history.replaceState(null, "", `#order=${encodeURIComponent(orderId)}`);
    } catch (err) {
      $("order").hidden = true;
      lookup.orderId = null;
      if (err.status === 404) setLookupState(`No order has the id ${orderId}.`);
      else if (err instanceof AuthError) {
        setLookupState("The lookup needs a token with the scope orders:read.");
        askForToken(err);
      } else setLookupState(`The lookup failed: ${err.message}`);
    }
  }

  async function refreshOrder() {
    const orderId = lookup.orderId;
    const id = encodeURIComponent(orderId);
    // The view at the very version of the events read, so both tell the same story.
    const history = await api(`orders/${id}/events`);
    const view = await api(`orders/${id}?version=${history.version}`);
    if (orderId !== lookup.orderId) return; // another lookup started meanwhile
    lookup.status = view.status;
    showOrder(view, history.events);
    setLookupState(`${orderId}: ${view.status}, version ${view.version}.`);
  }

  function showOrder(view, events) {
    const fields = [
      ["status", view.status],
      ["user", String(view.user_id)],
      ["items", view.item_ids.join(", ")],
      ["total", view.total_amount],
      ["attempts", String(view.attempts)],
      ["processing time", seconds(view.processing_time_seconds)],
    ];
    $("order-view").replaceChildren(
      ...fields.map(([name, value]) => {
        const div = document.createElement("div");
        const dt = document.createElement("dt");
        const dd = document.createElement("dd");
        dt.textContent = name;
        dd.textContent = value;
        div.append(dt, dd);
        return div;
      }),
    );
    const start = Date.parse(events[0].recorded_at);
    $("timeline").replaceChildren(
      ...events.map((e) => {
        const li = document.createElement("li");
        li.dataset.type = e.type;
        const type = document.createElement("strong");
        type.textContent = e.type;
        const offset = (Date.parse(e.recorded_at) - start) / 1000;
        const details = [`v${e.version}`, `${clock(e.recorded_at)} UTC`, `+${offset.toFixed(3)} s`];
        if (e.data.attempt != null) details.push(`attempt ${e.data.attempt}`);
        if (e.metadata && e.metadata.node) details.push(`node ${e.metadata.node}`);
        const rest = document.createElement("span");
        rest.textContent = details.join(" · ");
        li.append(type, " ", rest);
        return li;
      }),
    );
    $("order").hidden = false;
  }

  $("lookup").addEventListener("submit", (event) => {
    event.preventDefault();
    const orderId = $("order-id").value.trim();
    if (orderId) lookUp(orderId);
  });

  // -- the token ------------------------------------------------------------------------

  let waitingForToken = false;

  function askForToken(err) {
    waitingForToken = true;
    clearTimeout(timer);
    const scope = err.problem.scope || "a scope";
    let reason;
    if (err.status === 403) {
      reason = `This token lacks the scope ${scope}. Enter a token that has it (or admin).`;
    } else if (storedToken()) {
      reason = `The server refused the token: ${err.message}. Enter another.`;
    } else {
      reason = `This server needs an API token (the scope ${scope}).`;
    }
    $("token-reason").textContent = reason;
    $("token-form").hidden = false;
    $("token").focus();
    setState("waiting for a token");
  }

  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token").value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    $("token").value = "";
    $("token-form").hidden = true;
    $("forget-token").hidden = false;
    waitingForToken = false;
    poll();
  });

  $("forget-token").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    $("forget-token").hidden = true;
    poll();
  });

  // -- the polling loop -----------------------------------------------------------------

  let timer = null;
  let polling = false;

  async function poll() {
    clearTimeout(timer);
    if (waitingForToken || polling) return;
    polling = true;
    try {
      const [metrics, exposition] = await Promise.all([
        api("metrics"),
        api("metrics/prometheus", "text/plain"),
      ]);
      showMetrics(metrics);
      recordRate(metrics);
      showHistogram(exposition);
      await followEvents();
      if (lookup.orderId && lookup.status !== "Completed") await refreshOrder();
      setState(`live · updated ${new Date().toLocaleTimeString("en-GB")}`);
    } catch (err) {
      if (err instanceof AuthError) {
        askForToken(err);
        return;
      }
      setState(`no answer (${err.message}); retrying`, true);
    } finally {
      polling = false;
    }
    timer = setTimeout(poll, POLL_MS);
  }

  window.addEventListener("resize", () => {
    for (const [plot, id] of [
      [rate.plot, "rate-chart"],
      [histogram.plot, "distribution-chart"],
    ]) {
      if (plot) plot.setSize({ width: chartWidth($(id)), height: 220 });
    }
  });

  $("forget-token").hidden = !storedToken();
  const linked = new URLSearchParams(location.hash.slice(1)).get("order");
  if (linked) lookUp(linked);
  poll();
})();
