/* The dashboard's two charts, drawn with uPlot: orders per second over the last minutes,
 * and completed orders by processing time. Data in, canvas out: nothing here talks to the
 * API; dashboard.js (loaded after this file) feeds them. Each chart follows the width of
 * its element when the window is resized.
 */
"use strict";

const orderlogCharts = (() => {
  const HEIGHT = 220;
  const chartWidth = (el) => Math.max(240, el.clientWidth);

  function followWidth(plot, el) {
    const fit = () => plot.setSize({ width: chartWidth(el), height: HEIGHT });
    window.addEventListener("resize", fit);
  }

  // -- orders per second ----------------------------------------------------------------

  // One line each, the time of day: HH:MM when every tick is on a whole minute, else
  // HH:MM:SS for all alike. The spacing leaves room between labels of either length.
  function timeLabels(u, splits) {
    const minutes = splits.every((s) => s % 60 === 0);
    const time = (s) => new Date(s * 1000).toLocaleTimeString("en-GB");
    return splits.map((s) => time(s).slice(0, minutes ? 5 : 8));
  }
  const timeSpace = (u, axis, min, max) => (max - min > 180 ? 55 : 80);

  // Points of { t, dt, placed, completed }: orders counted in the dt seconds up to t. The
  // window ends at the newest point and spans a minute at least, `windowSeconds` at most.
  function rateChart(el, windowSeconds) {
    let points = [];
    let plot = null;
    const dataOf = () => [
      points.map((p) => p.t),
      points.map((p) => p.placed / p.dt),
      points.map((p) => p.completed / p.dt),
    ];
    const span = () => {
      const end = points[points.length - 1].t;
      const start = points[0].t - points[0].dt;
      return [end - Math.min(windowSeconds, Math.max(60, end - start)), end];
    };
    function create() {
      plot = new uPlot(
        {
          width: chartWidth(el),
          height: HEIGHT,
          scales: {
            x: { range: span },
            y: { range: (u, min, max) => [0, Math.max(1, max * 1.1)] },
          },
          axes: [
            { space: timeSpace, values: timeLabels },
            { label: "orders/s", size: 56 },
          ],
          legend: { live: false },
          series: [
            {},
            { label: "placed", stroke: "#2b6cb0", width: 2 },
            // Dashed: where every order placed is soon completed, both lines stay in sight.
            { label: "completed", stroke: "#2f855a", width: 2, dash: [6, 4] },
          ],
        },
        dataOf(),
        el,
      );
      followWidth(plot, el);
    }
    return {
      draw(newPoints) {
        points = newPoints;
        if (!points.length) return;
        if (plot) plot.setData(dataOf());
        else create();
      },
    };
  }

  // -- the processing-time histogram ------------------------------------------------------

  // Each edge in one unit, with as many decimals as the bars' width needs.
  function edgeLabels(bars) {
    const edges = [bars[0].from, ...bars.map((b) => b.to)];
    const ms = edges[edges.length - 1] < 1;
    const scale = ms ? 1000 : 1;
    const width = (bars[0].to - bars[0].from) * scale;
    const decimals = Math.min(3, Math.max(0, Math.ceil(-Math.log10(width) - 1e-9)));
    return { unit: ms ? "ms" : "s", labels: edges.map((e) => (e * scale).toFixed(decimals)) };
  }

  // Bars of { from, to, count } in seconds, as /metrics reports them, side by side.
  function histogramChart(el) {
    let labels = [];
    let key = null;
    let plot = null;
    function create(data, unit) {
      plot = new uPlot(
        {
          width: chartWidth(el),
          height: HEIGHT,
          padding: [null, 40, null, null], // room for the last edge's label, slanting right
          scales: {
            x: { time: false, range: () => [-0.5, Math.max(1, labels.length - 1) - 0.5] },
            y: { range: (u, min, max) => [0, Math.max(1, max * 1.1)] },
          },
          axes: [
            {
              // A tick at each edge between bars, labelled with its time.
              splits: () => labels.map((_, i) => i - 0.5),
              values: (u, splits) => splits.map((x) => labels[x + 0.5] ?? ""),
              label: `processing time, ${unit}`,
              rotate: -45,
              size: 52,
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
              paths: uPlot.paths.bars({ size: [0.94, Infinity] }),
              points: { show: false },
            },
          ],
        },
        data,
        el,
      );
      followWidth(plot, el);
    }
    return {
      draw(bars) {
        const now = JSON.stringify(bars);
        if (now === key) return;
        key = now;
        const edges = bars.length ? edgeLabels(bars) : { unit: "ms", labels: [] };
        labels = edges.labels;
        const data = [bars.map((_, i) => i), bars.map((b) => b.count)];
        if (!plot) return create(data, edges.unit);
        plot.axes[0].label = `processing time, ${edges.unit}`;
        plot.setData(data);
        plot.redraw(false, true); // the edges' labels may have changed
      },
    };
  }

  return { rateChart, histogramChart };
})();
