/* The orderlog dashboard: polls the JSON API once a second and draws what it answers.
 *
 * Plain JS and uPlot, no build step; charts.js draws the charts. Every value from the
 * server reaches the page as text (textContent), never as HTML. API paths are relative
 * to the page (/dashboard), so the dashboard also works behind a proxy that mounts the
 * service under a prefix.
 * When the API answers 401 or 403 the page asks for a token, keeps it in this tab's
 * session storage and sends it as a bearer token from then on.
 */
"use strict";

(() => {
  const POLL_MS = 1000;
  const RATE_WINDOW_SECONDS = 300;
  const LATEST = 25; // rows in the latest-events table
  const PAGE = 1000; // the event feed's largest page
  const SEED_REQUESTS = 8; // pages of the feed read at most for the rate chart's history
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

  async function api(path) {
    const headers = { Accept: "application/json" };
    const token = storedToken();
    if (token) headers.Authorization = `Bearer ${token}`;
    const resp = await fetch(path, { headers, cache: "no-store" });
    if (resp.status === 401 || resp.status === 403) {
      throw new AuthError(resp.status, await problemOf(resp));
    }
    if (!resp.ok) throw new ApiError(resp.status, await problemOf(resp));
    return resp.json();
  }

  // -- formatting ---------------------------------------------------------------------

  const count = (n) => (n == null ? "–" : n.toLocaleString("en-US"));

  function seconds(s) {
    if (s == null) return "–";
    if (s < 1) return `${(s * 1000).toFixed(1)} ms`;
    return `${s.toFixed(2)} s`;
  }

  // "1234567.50" -> "1,234,567.50": the server's exact decimal text, grouped as text
  // (through a float, large sums would lose cents).
  function money(text) {
    const [whole, fraction] = String(text).split(".");
    const grouped = whole.replace(/\B(?=(\d{3})+$)/g, ",");
    return fraction === undefined ? grouped : `${grouped}.${fraction}`;
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
    showRevenue(m.revenue || {});
    const p = m.processing_time_percentiles_seconds || {};
    $("p50").textContent = seconds(p.p50);
    $("p95").textContent = seconds(p.p95);
    $("p99").textContent = seconds(p.p99);
    $("mean").textContent = seconds(m.average_processing_time_seconds);
    histogramChart.draw(m.processing_time_histogram_seconds || []);
  }

  // A description list's entries, each [term, description], as the element's children.
  function showTerms(id, entries) {
    $(id).replaceChildren(
      ...entries.map(([term, description]) => {
        const div = document.createElement("div");
        const dt = document.createElement("dt");
        const dd = document.createElement("dd");
        dt.textContent = term;
        dd.textContent = description;
        div.append(dt, dd);
        return div;
      }),
    );
  }

  // The revenue of completed orders, one entry per currency (ISO 4217 code, amount).
  let shownRevenue = null;

  function showRevenue(revenue) {
    const entries = Object.entries(revenue);
    const key = JSON.stringify(entries);
    if (key === shownRevenue) return;
    shownRevenue = key;
    const shown = entries.length ? entries.map(([c, a]) => [c, money(a)]) : [["none yet", "–"]];
    showTerms("revenue", shown);
  }

  // -- orders per second: the log's recent events first, then successive /metrics answers --

  // Each point counts the orders placed and completed in the dt seconds up to t.
  const rate = { seeded: false, last: null, points: [] };
  const rateChart = orderlogCharts.rateChart($("rate-chart"), RATE_WINDOW_SECONDS);
  const histogramChart = orderlogCharts.histogramChart($("distribution-chart"));
  const COUNTED = { OrderPlaced: "placed", OrderCompleted: "completed" };
  const recorded = (e) => Date.parse(e.recorded_at) / 1000;

  // The log's events since `since` (seconds), read backwards from the head a page at a time,
  // SEED_REQUESTS at most: { events, from }, every event recorded after `from` among them.
  async function recentEvents(since) {
    const pages = [];
    let end = (await api("events?limit=1")).head; // every event after `end` is read
    let span = PAGE; // positions one step back covers: on PostgreSQL they have gaps
    for (let request = 0; request < SEED_REQUESTS && end > 0; request++) {
      const after = Math.max(0, end - span);
      const page = (await api(`events?after=${after}&limit=${PAGE}`)).events;
      if (page.length === PAGE && page[PAGE - 1].position < end) {
        span = Math.max(1, Math.floor(span / 4)); // more than a page in the step: a shorter one
        continue;
      }
      const events = page.filter((e) => e.position <= end);
      pages.unshift(events);
      end = after;
      if (events.length && recorded(events[0]) < since) break;
      // Most of a page next, judging by how many events this step held.
      span = events.length ? Math.ceil((span * PAGE * 0.8) / events.length) : span * 8;
    }
    const events = pages.flat();
    const reached = end <= 0 || (events.length > 0 && recorded(events[0]) < since);
    return { events, from: reached ? since : events.length ? recorded(events[0]) : Infinity };
  }

  // Points about a second wide, all alike, from `from` up to `now`: none shorter, whose
  // few events would read as a spike.
  function perSecond(events, from, now) {
    if (!(now > from)) return [];
    const n = Math.max(1, Math.round(now - from));
    const dt = (now - from) / n;
    const points = Array.from({ length: n }, (_, i) => ({
      t: from + (i + 1) * dt,
      dt,
      placed: 0,
      completed: 0,
    }));
    for (const e of events) {
      const column = COUNTED[e.type];
      const i = Math.floor((recorded(e) - from) / dt);
      if (column && i >= 0) points[Math.min(i, n - 1)][column] += 1;
    }
    return points;
  }

  async function seedRate() {
    const now = Date.now() / 1000;
    const { events, from } = await recentEvents(now - RATE_WINDOW_SECONDS);
    rate.points = perSecond(events, from, now);
    rate.seeded = true;
  }

  function recordRate(m) {
    const now = Date.now() / 1000;
    const last = rate.last;
    rate.last = { t: now, placed: m.total_orders, completed: m.orders_processed };
    if (last !== null && now > last.t) {
      // A rebuild may start the counts again: never count a negative number.
      rate.points.push({
        t: now,
        dt: now - last.t,
        placed: Math.max(0, m.total_orders - last.placed),
        completed: Math.max(0, m.orders_processed - last.completed),
      });
    }
    const points = rate.points;
    while (points.length && points[0].t - points[0].dt < now - RATE_WINDOW_SECONDS) points.shift();
    showRateSummary(now);
    rateChart.draw(points);
  }

  function showRateSummary(now) {
    const points = rate.points;
    const sum = (column) => points.reduce((n, p) => n + p[column], 0);
    const peak = Math.max(0, ...points.map((p) => p.placed / p.dt));
    const start = points.length ? points[0].t - points[0].dt : now;
    const span =
      now - start >= RATE_WINDOW_SECONDS - 1 ? "5 minutes" : `${Math.round(now - start)} s`;
    $("rate-summary").textContent =
      `Last ${span}: ${count(sum("placed"))} placed, ${count(sum("completed"))} completed` +
      ` · peak ${peak.toFixed(1)} placed/s`;
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
        order.title = e.stream_id;
        order.addEventListener("click", () => lookUp(e.stream_id));
        const cells = [
          [count(e.position), "number"],
          [clock(e.recorded_at), ""],
          [e.type, ""],
          [order, "order"],
          [String(e.version), "number"],
        ];
        for (const [cell, kind] of cells) {
          const td = document.createElement("td");
          if (kind) td.className = kind;
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
      ["total", `${view.total_amount} ${view.currency}`],
      ["attempts", String(view.attempts)],
      ["processing time", seconds(view.processing_time_seconds)],
    ];
    showTerms("order-view", fields);
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
      if (!rate.seeded) await seedRate();
      const metrics = await api("metrics");
      showMetrics(metrics);
      recordRate(metrics);
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

  $("forget-token").hidden = !storedToken();
  const linked = new URLSearchParams(location.hash.slice(1)).get("order");
  if (linked) lookUp(linked);
  poll();
})();
