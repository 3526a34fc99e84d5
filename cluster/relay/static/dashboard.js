// The operator dashboard: polls dashboard/data every 2 s with the admin credentials and draws
// rolling plots on <canvas> itself (no library, no CDN: the relay serves everything).
"use strict";

const POLL_MS = 2000;
const HISTORY_SECONDS = 300;
const STORE_KEY = "relay-dashboard-auth";
const COLORS = ["#58a6ff", "#3fb950", "#d29922", "#f85149", "#bc8cff", "#39c5cf", "#ff7b72", "#e3b341"];
const TARGETS = [
  ["acceptance", "Event acceptance"],
  ["payment", "Payment verification"],
  ["delivery", "Delivery"],
  ["db", "DB query"],
];

const history = { events: {}, connections: {}, latency: {}, claims: {}, fanout: {} };
let timer = null;

const $ = (id) => document.getElementById(id);

function credentials() {
  try { return JSON.parse(sessionStorage.getItem(STORE_KEY) || "null"); } catch { return null; }
}

function base64(text) {
  return btoa(String.fromCharCode(...new TextEncoder().encode(text)));
}

async function authorization(url) {
  const auth = credentials();
  if (!auth) return null;
  if (auth.mode === "token") return "Bearer " + auth.token;
  if (!window.nostr) throw new Error("the Nostr extension is gone");
  const event = await window.nostr.signEvent({
    kind: 27235,
    created_at: Math.floor(Date.now() / 1000),
    tags: [["u", url], ["method", "GET"]],
    content: "",
  });
  return "Nostr " + base64(JSON.stringify(event));
}

async function fetchData() {
  const url = new URL("dashboard/data", document.baseURI).href;
  const header = await authorization(url);
  const response = await fetch(url, { headers: header ? { Authorization: header } : {}, cache: "no-store" });
  if (response.status === 401) {
    let reason = "refused";
    try { reason = (await response.json()).error; } catch { /* not JSON */ }
    const error = new Error(reason);
    error.unauthorised = true;
    throw error;
  }
  if (!response.ok) throw new Error("HTTP " + response.status);
  return response.json();
}

// --- formatting --------------------------------------------------------------------------

function num(value, digits = 0) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  return Number(value).toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
}
function ms(seconds) { return seconds === null || seconds === undefined ? "–" : num(seconds * 1000, 2) + " ms"; }
function ago(unix, now) { return unix ? num(Math.max(0, now - unix), 0) + " s ago" : "–"; }
function badge(state) {
  const span = document.createElement("span");
  span.className = "badge " + (state || "unknown");
  span.textContent = state || "unknown";
  return span;
}
function fillTable(id, rows, empty) {
  const body = $(id).tBodies[0];
  if (!rows.length && empty) {
    const tr = document.createElement("tr"), td = document.createElement("td");
    td.colSpan = $(id).tHead ? $(id).tHead.rows[0].cells.length : 2;
    td.className = "muted";
    td.textContent = empty;
    tr.append(td);
    body.replaceChildren(tr);
    return;
  }
  body.replaceChildren(...rows.map((cells) => {
    const tr = document.createElement("tr");
    if (cells.className) tr.className = cells.className;
    for (const cell of cells) {
      const td = document.createElement("td");
      if (cell instanceof Node) td.append(cell); else td.textContent = cell;
      tr.append(td);
    }
    return tr;
  }));
}

// --- rolling series and the chart --------------------------------------------------------

function push(group, name, t, value) {
  const series = (group[name] = group[name] || []);
  series.push([t, value]);
  while (series.length && series[0][0] < t - HISTORY_SECONDS) series.shift();
}

function niceMax(value) {
  if (value <= 0) return 1;
  const power = Math.pow(10, Math.floor(Math.log10(value)));
  for (const step of [1, 2, 2.5, 5, 10]) if (value <= step * power) return step * power;
  return 10 * power;
}

function drawChart(canvas, group, options = {}) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth, height = canvas.clientHeight;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const g = canvas.getContext("2d");
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  g.clearRect(0, 0, width, height);
  const names = Object.keys(group);
  const points = names.flatMap((n) => group[n]);
  const now = points.length ? Math.max(...points.map((p) => p[0])) : Date.now() / 1000;
  // The span grows with the history, from one minute to HISTORY_SECONDS.
  const oldest = points.length ? Math.min(...points.map((p) => p[0])) : now;
  const span = Math.min(HISTORY_SECONDS, Math.max(60, now - oldest));
  const scale = options.scale || 1;
  let top = Math.max(0, ...points.map((p) => (p[1] ?? 0) * scale));
  if (options.limit) top = Math.max(top, options.limit * scale * 1.25);
  top = niceMax(top);
  const left = 46, right = 8, upper = 8, lower = 20;
  const plotW = width - left - right, plotH = height - upper - lower;
  const x = (t) => left + plotW * (1 - (now - t) / span);
  const y = (v) => upper + plotH * (1 - v / top);
  g.font = "11px system-ui, sans-serif";
  g.strokeStyle = "#2a3440"; g.fillStyle = "#8a96a3"; g.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const v = (top * i) / 4, yy = Math.round(y(v)) + 0.5;
    g.beginPath(); g.moveTo(left, yy); g.lineTo(width - right, yy); g.stroke();
    g.textAlign = "right"; g.fillText(num(v, v % 1 ? (v < 1 ? 2 : 1) : 0), left - 6, yy + 4);
  }
  const most = plotW < 320 ? 3 : 6;
  const step = [10, 15, 30, 60, 120, 300].find((st) => span / st <= most) || span;
  for (let back = 0; back <= span + 0.001; back += step) {
    g.textAlign = back === 0 ? "right" : "center";
    const label = back === 0 ? "now" : back < 60 ? "-" + back + " s" : "-" + back / 60 + " min";
    if (x(now - back) >= left) g.fillText(label, x(now - back), height - 5);
  }
  if (options.limit) {
    g.strokeStyle = "#f85149"; g.setLineDash([5, 4]);
    const yy = Math.round(y(options.limit * scale)) + 0.5;
    g.beginPath(); g.moveTo(left, yy); g.lineTo(width - right, yy); g.stroke();
    g.setLineDash([]); g.textAlign = "left"; g.fillStyle = "#f85149";
    g.fillText("target " + num(options.limit * scale, 0) + (options.unit || ""), left + 4, yy - 4);
  }
  let drawn = 0;
  names.forEach((name, i) => {
    const color = (options.colors && options.colors[name]) || COLORS[i % COLORS.length];
    g.strokeStyle = color; g.lineWidth = 2; g.beginPath();
    let started = false;
    for (const [t, v] of group[name]) {
      if (v === null || v === undefined) { started = false; continue; }
      const px = x(t), py = y(v * scale);
      if (started) g.lineTo(px, py); else g.moveTo(px, py);
      started = true; drawn++;
    }
    g.stroke();
    g.fillStyle = color; g.textAlign = "right";
    g.fillText(name, width - right - 4, upper + 12 + i * 13);
  });
  canvas.dataset.points = String(drawn);
}

// --- rendering ---------------------------------------------------------------------------

function render(data) {
  const t = data.now, totals = data.totals;
  $("v-instances").textContent = totals.instances_up + " / " + totals.instances;
  $("v-connections").textContent = num(totals.connections);
  $("v-subscriptions").textContent = num(totals.subscriptions);
  $("v-accepted-rate").textContent = num(totals.accepted_rate, 1);
  $("v-refused-rate").textContent = num(totals.refused_rate, 1);
  $("v-accepted-total").textContent = num(totals.accepted_total);
  $("v-lag").textContent = ms(data.fanout.lag_p95);
  const health = $("v-health");
  health.replaceChildren();
  for (const [part, label] of [["postgres", "PostgreSQL"], ["redis", "Redis"], ["ledger", "ledger"]]) {
    const line = document.createElement("div");
    line.append(label + " ", badge(data.health[part]));
    health.append(line);
  }

  push(history.events, "accepted", t, totals.accepted_rate);
  push(history.events, "refused", t, totals.refused_rate);
  for (const instance of data.instances) {
    push(history.connections, instance.id, t, instance.up ? instance.connections : null);
  }
  for (const [key] of TARGETS) {
    push(history.latency, key, t, data.latency[key].p95);
  }
  drawChart($("chart-events"), history.events, { colors: { accepted: "#3fb950", refused: "#f85149" } });
  drawChart($("chart-connections"), history.connections);
  for (const [key] of TARGETS) {
    const one = { p95: history.latency[key] };
    drawChart($("chart-" + key), one, { limit: data.latency[key].limit, scale: 1000, unit: " ms" });
  }

  fillTable("latency-table", TARGETS.map(([key, label]) => {
    const l = data.latency[key];
    const state = l.ok === null ? "unknown" : l.ok ? "ok" : "bad";
    return [label, ms(l.p50), ms(l.p95), ms(l.p99), ms(l.limit), num(l.count), badge(l.ok === null ? "no data" : state)];
  }));
  fillTable("instances-table", data.instances.map((i) => {
    const h = i.health || {};
    const row = [i.id, badge(i.up ? "ok" : "down"), String(i.workers.length), num(i.connections),
      num(i.subscriptions), num(i.accepted_rate, 1), badge(h.postgres), badge(h.redis), badge(h.ledger),
      ago(i.last_seen, t)];
    if (!i.up) row.className = "down";
    return row;
  }));
  const prefixes = Object.keys(totals.ok_total).sort();
  fillTable("ok-table", prefixes.map((p) => [p, num(totals.ok_rate[p] || 0, 1), num(totals.ok_total[p])]), "no EVENT answered yet");
  const f = data.fanout;
  fillTable("fanout-table", [
    ["lag p50 / p95", ms(f.lag_p50) + " / " + ms(f.lag_p95)],
    ["delivered to subscribers / s", num(f.delivered_rate, 1)],
    ["published / received (live workers)", num(f.published) + " / " + num(f.received)],
    ["dropped", num(f.dropped)],
  ]);
  push(history.fanout, "delivered/s", t, f.delivered_rate);
  drawChart($("chart-fanout"), history.fanout);
  renderPayments(data, t);
  $("errors").textContent = (data.errors || []).join("; ");
  $("status").textContent = "live · served by " + data.served_by + " · " + new Date(t * 1000).toLocaleTimeString();
}

function renderPayments(data, t) {
  const p = data.payments;
  const breaker = data.breaker === 0 ? "closed" : data.breaker >= 1 ? "open" : "half-open";
  const rates = data.totals.rates || {};
  if (!p) {
    fillTable("payments-table", [["payments", "unavailable (PostgreSQL)"], ["breaker", breaker]]);
    return;
  }
  push(history.claims, "claims/s", t, p.claims_per_second);
  drawChart($("chart-claims"), history.claims);
  fillTable("payments-table", [
    ["Dassie node", data.payments_enabled ? badge(data.health.ledger) : badge("off")],
    ["circuit breaker", badge(breaker === "closed" ? "ok" : breaker === "open" ? "down" : "degraded")],
    ["claims / s (last 10 s)", num(p.claims_per_second, 1)],
    ["claims in the last minute", num(p.claims_last_minute)],
    ["outbox backlog", num(p.outbox_backlog) + (p.outbox_oldest_seconds ? " (oldest " + num(p.outbox_oldest_seconds, 0) + " s)" : "")],
    ["outbox rows failing", num(p.outbox_failing)],
    ["forwarded to the node / s", num(rates.outbox_forwarded || 0, 1)],
    ["dead letters", num(p.dead_letters)],
  ]);
  fillTable("revenue-table", p.revenue.map((r) => [r.kind === null ? "(deleted)" : String(r.kind), r.currency, num(r.claims), num(r.amount)]), "no paid events yet");
  fillTable("channel-totals", p.open_totals.map((c) => [c.currency, num(c.count), num(c.capacity), num(c.spent)]), "no open channels");
  fillTable("channels-table", p.open_channels.map((c) => [c.channel_id.slice(0, 16) + "…", c.currency,
    c.sender.slice(0, 12) + "…", num(c.capacity), num(c.spent), new Date(c.expiration * 1000).toISOString().slice(0, 10)]), "–");
}

// --- login and polling -------------------------------------------------------------------

function showLogin(message) {
  if (timer) { clearTimeout(timer); timer = null; }
  $("dashboard").hidden = true;
  $("login").hidden = false;
  $("logout").hidden = true;
  $("status").textContent = "not logged in";
  $("login-error").textContent = message || "";
}

async function poll() {
  timer = null;
  try {
    const data = await fetchData();
    $("login").hidden = true;
    $("dashboard").hidden = false;
    $("logout").hidden = false;
    render(data);
  } catch (error) {
    if (error.unauthorised || !credentials()) {
      sessionStorage.removeItem(STORE_KEY);
      showLogin("Refused: " + error.message);
      return;
    }
    $("status").textContent = "update failed: " + error.message + " (retrying)";
  }
  timer = setTimeout(poll, POLL_MS);
}

function login(auth) {
  sessionStorage.setItem(STORE_KEY, JSON.stringify(auth));
  $("login-error").textContent = "";
  if (timer) clearTimeout(timer);
  poll();
}

window.addEventListener("DOMContentLoaded", () => {
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token").value.trim();
    if (token) login({ mode: "token", token });
  });
  $("nostr-login").addEventListener("click", () => login({ mode: "nip07" }));
  $("logout").addEventListener("click", () => { sessionStorage.removeItem(STORE_KEY); showLogin(""); });
  // NIP-07 extensions inject window.nostr after the page loads, sometimes a little later.
  const offerNostr = () => { if (window.nostr) $("nostr-login").hidden = false; };
  offerNostr();
  setTimeout(offerNostr, 500);
  if (credentials()) poll(); else showLogin("");
});
