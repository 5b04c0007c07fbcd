// ITS dashboard: renders /api/events snapshots (server-sent events). No framework, no CDN.
"use strict";

const LWC = window.LightweightCharts;
const charts = {}; // symbol -> {chart, series, markers}
let equity = null;

// A limit order's side carries its limit (a buy at or below, a sell at or above).
function orderSide(v, row) {
  if (row.limit_price == null) return v;
  return `${v} ${v === "BUY" ? "≤" : "≥"}${fmt(row.limit_price, 2)}`;
}

// A cancelled (or rejected) order that filled in part says so: the position holds that part.
function orderStatus(v, row) {
  const text = String(v).replace("_", " ");
  const part = row.filled_quantity > 0 && row.filled_quantity < row.quantity;
  return part && v !== "partially_filled" ? `${text} (part filled)` : text;
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function fmt(value, digits = 2) {
  if (value === null || value === undefined) return "–";
  if (typeof value === "number") {
    if (!Number.isFinite(value)) return "–";
    if (Number.isInteger(value) && Math.abs(value) < 1e6) return String(value);
    return Math.abs(value) >= 1e6 ? value.toExponential(3) : value.toFixed(digits);
  }
  if (typeof value === "boolean") return value ? "yes" : "no";
  return String(value);
}

function time(value) {
  if (!value) return "–";
  const date = typeof value === "number" ? new Date(value) : new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toISOString().slice(11, 19) + "Z";
}

// A latency quantile in ms; one in the histogram's overflow bucket is only known to be above
// the largest bound ("> 5 s"), never shown as that bound.
function latency(lat, key) {
  const above = lat[key + "_above_ms"];
  if (above !== undefined && above !== null) return "> " + (above >= 1000 ? fmt(above / 1000) + " s" : fmt(above) + " ms");
  const value = lat[key + "_ms"];
  return value === null || value === undefined ? "–" : fmt(value) + " ms";
}

function latencies(lat) { return ["p50", "p95", "p99"].map((key) => latency(lat, key)).join(" / "); }

function bytes(n) { return n === null || n === undefined ? "–" : (n / 1048576).toFixed(1) + " MiB"; }

function table(rows, columns) {
  const head = el("tr", {}, ...columns.map(([, label]) => el("th", {}, label)));
  const body = rows.map((row) => el("tr", {}, ...columns.map(([key, , f]) =>
    el("td", {}, f ? f(row[key], row) : fmt(row[key])))));
  return el("table", {}, el("thead", {}, head), el("tbody", {}, ...body));
}

function kv(pairs) {
  const dl = el("dl", { class: "kv" });
  for (const [k, v, cls] of pairs) { dl.append(el("dt", {}, k), el("dd", cls ? { class: cls } : {}, v)); }
  return dl;
}

function panel(name, snapshotPanel, render) {
  const section = document.getElementById("panel-" + name);
  const body = section.querySelector(".body");
  const status = snapshotPanel ? snapshotPanel.status : "no_data";
  section.dataset.status = status;
  if (status === "ok") {
    try {
      const content = render(snapshotPanel.data, body);
      if (content !== undefined) body.replaceChildren(content);
    } catch (err) {
      body.replaceChildren(el("p", { class: "error" }, "render failed: " + err.message));
    }
  } else if (status === "no_data") {
    clearCharts(name);
    body.replaceChildren(el("p", { class: "nodata" }, "no data yet",
      snapshotPanel && snapshotPanel.detail ? " (" + snapshotPanel.detail + ")" : ""));
  } else {
    clearCharts(name);
    body.replaceChildren(el("p", { class: "error" }, "unavailable: " + snapshotPanel.detail));
  }
}

function clearCharts(name) {
  if (name === "candles") for (const key of Object.keys(charts)) { charts[key].chart.remove(); delete charts[key]; }
  if (name === "portfolio" && equity) { equity.chart.remove(); equity = null; }
}

const chartOptions = (height) => ({
  height, autoSize: true,
  layout: { background: { color: "#182028" }, textColor: "#d8dee4" },
  grid: { vertLines: { color: "#2a3540" }, horzLines: { color: "#2a3540" } },
  timeScale: { timeVisible: true, secondsVisible: false },
});

function renderCandles(data, body) {
  let box = body.querySelector(".charts");
  if (!box) { box = el("div", { class: "charts" }); body.replaceChildren(box); }
  for (const [symbol, item] of Object.entries(data)) {
    if (!charts[symbol]) {
      const holder = el("div", { class: "chart", "data-symbol": symbol });
      box.append(el("div", {}, el("strong", {}, symbol), holder));
      const chart = LWC.createChart(holder, chartOptions(280));
      const series = chart.addSeries(LWC.CandlestickSeries, {
        upColor: "#2ea043", downColor: "#f85149", wickUpColor: "#2ea043", wickDownColor: "#f85149",
        borderVisible: false,
      });
      const entry = { chart, series, markers: LWC.createSeriesMarkers(series, []), fills: [], fitted: false };
      charts[symbol] = entry;
      const relayout = () => layoutMarkers(entry);
      chart.timeScale().subscribeVisibleLogicalRangeChange(relayout);
      chart.timeScale().subscribeSizeChange(relayout);
    }
    const entry = charts[symbol];
    entry.series.setData(item.bars);
    if (!entry.fitted && item.bars.length) { entry.chart.timeScale().fitContent(); entry.fitted = true; }
    entry.fills = fillMarkers(item.fills);
    layoutMarkers(entry);
    box.querySelector(`[data-symbol="${symbol}"]`).parentElement.dataset.bars = item.bars.length;
  }
  return undefined;
}

// One marker per minute and side (quantities summed), labelled "B 10" / "S 10"; the prices are
// in the Fills table.
function fillMarkers(fills) {
  const byKey = new Map();
  for (const f of fills) {
    const minute = f.time - (f.time % 60);
    const key = minute + f.side;
    const seen = byKey.get(key);
    if (seen) seen.quantity += f.quantity;
    else byKey.set(key, { time: minute, side: f.side, quantity: f.quantity });
  }
  return [...byKey.values()].sort((a, b) => a.time - b.time).map((f) => ({
    time: f.time,
    position: f.side === "BUY" ? "belowBar" : "aboveBar",
    color: f.side === "BUY" ? "#58a6ff" : "#d29922",
    shape: f.side === "BUY" ? "arrowUp" : "arrowDown",
    label: `${f.side === "BUY" ? "B" : "S"} ${fmt(f.quantity, 0)}`,
  }));
}

const MARKER_FONT = "12px system-ui, sans-serif";
let measureContext = null;
function textWidth(text) {
  measureContext = measureContext || document.createElement("canvas").getContext("2d");
  measureContext.font = MARKER_FONT;
  return measureContext.measureText(text).width;
}

// Labels are drawn centred under/over their bar; a label that would touch the previous label on
// the same side is left off (the arrow stays). Runs again on zoom, scroll and resize.
function layoutMarkers(entry) {
  const scale = entry.chart.timeScale();
  const right = { aboveBar: -Infinity, belowBar: -Infinity };
  entry.markers.setMarkers(entry.fills.map(({ label, ...marker }) => {
    const x = scale.timeToCoordinate(marker.time);
    const width = textWidth(label);
    if (x === null || x - width / 2 < right[marker.position] + 4) return { ...marker, text: "" };
    right[marker.position] = x + width / 2;
    return { ...marker, text: label };
  }));
}

function renderPortfolio(data, body) {
  let holder = body.querySelector(".equity");
  if (!holder) {
    holder = el("div", { class: "equity" });
    body.replaceChildren(el("div", { class: "tables" }), holder);
  }
  body.querySelector(".tables").replaceChildren(
    table(data.accounts, [["account", "account"], ["cash", "cash"], ["equity", "equity"],
      ["realized_pnl", "realized P&L"], ["unrealized_pnl", "unrealized P&L"],
      ["gross_exposure", "exposure"], ["ts", "as of", time]]),
    table(data.positions, [["account", "account"], ["symbol", "symbol"], ["quantity", "qty", (v) => fmt(v, 0)],
      ["avg_price", "avg price"], ["realized_pnl", "realized"]]));
  if (!equity) {
    const chart = LWC.createChart(holder, chartOptions(160));
    equity = { chart, series: chart.addSeries(LWC.LineSeries, { color: "#58a6ff", lineWidth: 2 }) };
  }
  equity.series.setData(data.equity_curve);
  if (!equity.fitted && data.equity_curve.length) { equity.chart.timeScale().fitContent(); equity.fitted = true; }
  return undefined;
}

// A decision of a demo model (bundle.json "demo": true): trained on simulator data, not for trading;
// `market` names the planted pattern of its training market ("demo market with a planted pattern").
function demoTitle(market) {
  return `trained on simulator data${market ? " (" + market + ")" : ""}, not for real trading`;
}
function demoBadge(market) {
  return el("span", { class: "badge demo", title: demoTitle(market) }, "demo model");
}

function ageClass(age) { return age < 15 ? "good" : age < 30 ? "warn" : "bad"; }

// "market open/closed" by the wall clock, unless the feed is replaying an earlier session (the
// simulator on a weekend or holiday): then which session, and where the replay is.
function renderMarket(meta) {
  const market = document.getElementById("market");
  const replay = meta.replay;
  market.dataset.replaying = replay ? "yes" : "no";
  if (replay) {
    market.textContent = replay.label;
    market.title = `The feed ${replay.ahead ? "simulates" : "replays"} the session of ${replay.session} (the market is ` +
      `${meta.market_open ? "open" : "closed"} now); bars, decisions, orders and fills are on the market clock.`;
    market.className = "badge replay";
  } else {
    market.textContent = meta.market_open ? "market open" : "market closed";
    market.title = "by the exchange calendar, now";
    market.className = "";
  }
}

// Without a token configured on the server the kill switch cannot work: say so, and make the
// controls look (and be) disabled.
function renderControls(meta) {
  const form = document.getElementById("control");
  const note = document.getElementById("control-note");
  const why = meta.kill_enabled ? "" : "Kill switch disabled: the dashboard was started without " +
    "ITS_DASHBOARD_TOKEN. `make run` creates one (var/dashboard-token); elsewhere set " +
    "ITS_DASHBOARD_TOKEN or ITS_DASHBOARD_TOKEN_FILE and restart the dashboard.";
  form.classList.toggle("disabled", !meta.kill_enabled);
  for (const id of ["kill", "resume", "token", "flatten"]) {
    const control = document.getElementById(id);
    control.disabled = !meta.kill_enabled;
    if (why) control.title = why; else control.removeAttribute("title");
  }
  note.hidden = meta.kill_enabled;
  note.textContent = why;
}

function render(s) {
  const meta = s.meta || {};
  document.getElementById("environment").textContent = meta.environment || "";
  renderMarket(meta);
  document.getElementById("updated").textContent = time(meta.ts_ms);
  document.getElementById("updated").dataset.ts = meta.ts_ms;
  renderControls(meta);

  panel("acceptance", s.acceptance, (rows) => table(rows, [["name", "metric"], ["value", "value"],
    ["target", "target"], ["status", "result", (v) => el("span", { class: "badge " + v }, v.replace("_", " "))],
    ["detail", "how"]]));
  panel("health", s.health, (rows) => el("div", { class: "grid" }, ...rows.map((b) =>
    el("div", { class: "card", "data-service": b.service },
      el("div", { class: "name" }, b.service),
      el("div", { class: "meta" }, b.instance),
      el("div", {}, el("span", { class: ageClass(b.age_s) }, `● ${b.status}`), `  ${fmt(b.age_s, 1)} s ago`),
      el("div", { class: "meta" }, "v" + b.version)))));
  panel("trader", s.trader, (t) => kv([
    ["state", t.halted ? "HALTED" : "trading", t.halted ? "bad" : "good"],
    ["reason", t.halt && t.halt.reason ? `${t.halt.reason} ${t.halt.detail || ""}` : "–"],
    ["kill switch", t.kill ? "ENGAGED" : "off", t.kill ? "bad" : ""]]));
  panel("feed", s.feed, (f) => el("div", {}, kv([["state", f.state, f.state === "subscribed" ? "good" : "bad"],
    ["detail", f.detail || "–"], ["since", time(Number(f.ts_ms))]]),
    table(Object.entries(f.last_trades || {}).map(([sym, t]) => ({ sym, ...t })),
      [["sym", "symbol"], ["price", "last"], ["age_s", "age s", (v) => fmt(v, 1)]])));
  panel("router", s.router, (r) => {
    const lat = r.receive_to_stored || {};
    const ex = r.exchange_to_stored || {};
    return kv([["events/s", fmt(r.events_per_s, 1)], ["events total", fmt(r.events_total, 0)],
      ["receive→stored p50/p95/p99", latencies(lat) +
        (lat.mean_ms !== undefined ? ` (mean ${fmt(lat.mean_ms)} ms)` : "")],
      ["exchange→stored p50/p95/p99", latencies(ex) +
        (meta.replay ? " (a replay: its exchange times are the replayed session's)" : "")],
      ["source", `${r.source}, ${lat.scope || ""}, window ${fmt(r.window_s, 0)} s`]]);
  });
  panel("redis", s.redis, (r) => el("div", {}, kv([["used memory", bytes(r.used_memory)],
    ["maxmemory", r.maxmemory ? bytes(r.maxmemory) : "unlimited"],
    ["hit ratio", r.hit_ratio === null ? "–" : fmt(r.hit_ratio, 4)],
    ["hits / misses", `${r.hits} / ${r.misses}`]]),
    table(Object.entries(r.streams).map(([stream, length]) => ({ stream, length })),
      [["stream", "stream"], ["length", "entries", (v) => fmt(v, 0)]])));
  panel("loader", s.loader, (l) => table(Object.entries(l).map(([stream, v]) => ({ stream, ...v })),
    [["stream", "stream", (v) => el("span", { title: v }, v.replace(/^its:stream:/, ""))],
      ["pending", "pending", (v) => fmt(v, 0)], ["oldest_pending_s", "oldest pending s", (v) => fmt(v, 1)],
      ["backlog_s", "undelivered s", (v) => fmt(v, 1)], ["consumers", "consumers", (v) => fmt(v, 0)]]));
  panel("candles", s.candles, renderCandles);
  panel("portfolio", s.portfolio, renderPortfolio);
  panel("features", s.features, (f) => table(Object.entries(f).flatMap(([sym, v]) =>
    Object.entries(v.values).map(([name, value]) => ({ sym, name, value, ts: v.ts_ms }))),
    [["sym", "symbol"], ["name", "feature"], ["value", "value", (v) => fmt(v, 5)], ["ts", "minute", time]]));
  const latest = s.decisions && s.decisions.status === "ok" ? s.decisions.data[0] : null;
  const modelBadge = document.getElementById("model-badge");
  modelBadge.hidden = !(latest && latest.demo);
  if (latest) {
    modelBadge.textContent = latest.demo_market ? `demo model · ${latest.demo_market}` : "demo model";
    modelBadge.title = `decisions come from the demo model ${latest.model_version}: ${demoTitle(latest.demo_market)}`;
  }
  panel("decisions", s.decisions, (rows) => el("div", {},
    el("p", { class: "model" }, "model ", el("strong", {}, rows[0].model_version), " ",
      rows[0].demo ? demoBadge(rows[0].demo_market) : null),
    table(rows, [["ts", "bar", time], ["action", "action"],
      ["confidence", "confidence", (v) => fmt(v, 3)], ["risk_outcome", "risk"],
      ["model_version", "model", (v, row) => row.demo ? el("span", {}, v, " ", demoBadge(row.demo_market)) : fmt(v)]])));
  panel("orders", s.orders, (rows) => table(rows, [["market_ts", "market time",
    (v, row) => el("span", { title: "placed at " + time(row.created_at) + " wall clock" }, time(v))], ["symbol", "symbol"],
    ["side", "side", orderSide], ["quantity", "qty", (v) => fmt(v, 0)], ["status", "status", orderStatus],
    ["filled_quantity", "filled", (v) => fmt(v, 0)]]));
  panel("fills", s.fills, (rows) => table(rows, [["ts", "market time", time], ["symbol", "symbol"], ["side", "side"],
    ["quantity", "qty", (v) => fmt(v, 0)], ["price", "price"], ["commission", "fee"]]));
  panel("prices", s.prices, (rows) => table(rows, [["symbol", "symbol"], ["feed_price", "feed"],
    ["broker_price", "broker"], ["diff_pct", "diff %", (v) => fmt(v, 4)],
    ["ok", "ok", (v) => el("span", { class: v ? "good" : "bad" }, v ? "ok" : "DIVERGENT")], ["ts", "at", time]]));
  panel("alerts", s.alerts, (a) => el("div", {},
    el("p", { class: "firing-count" }, `${a.firing.length} firing`),
    table(a.recent, [["ts", "time", time], ["severity", "sev"],
      ["status", "state", (v) => el("span", { class: "alert-" + v }, v)], ["rule", "rule"], ["message", "message"]])));
}

function connect() {
  const badge = document.getElementById("connection");
  const source = new EventSource("/api/events");
  source.addEventListener("snapshot", (event) => {
    badge.textContent = "live"; badge.className = "badge good";
    render(JSON.parse(event.data));
  });
  source.onerror = () => { badge.textContent = "reconnecting"; badge.className = "badge bad"; };
}

async function control(action) {
  const out = document.getElementById("control-result");
  const token = document.getElementById("token").value;
  const body = action === "kill"
    ? { flatten: document.getElementById("flatten").checked, reason: "dashboard" } : {};
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = "Bearer " + token;
  const response = await fetch("/api/" + action, { method: "POST", headers, body: JSON.stringify(body) });
  const result = await response.json();
  out.className = response.ok ? "good" : "bad";
  out.textContent = response.ok ? (action === "kill" ? "kill switch engaged" : "trading resumed") : result.error;
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("kill").addEventListener("click", () => {
    if (window.confirm("Engage the kill switch? The trader halts and cancels open orders.")) control("kill");
  });
  document.getElementById("resume").addEventListener("click", () => control("resume"));
  connect();
});
