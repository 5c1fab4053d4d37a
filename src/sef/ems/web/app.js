/* SEF EMS dashboard: agents, live charts, command form and command log.
 *
 * Plain JavaScript, no library and no network access beyond the EMS API it is served by
 * (every URL is relative, so the page also works under a reverse-proxy prefix).
 * Live data: GET events (server-sent events) plus a periodic refresh of agents, groups,
 * health, the command log and control/series. See docs/dashboard.md.
 */
"use strict";

const TELEMETRY_SUFFIX = ".Telemetry";
const REFRESH_MS = 5000;
const COMMANDS_MS = 3000;
const CONTROL_MS = 2000;
const MAX_POINTS = 3000; // per series; older points are thinned beyond this
const PALETTE = ["#1f6feb", "#d1242f", "#1a7f37", "#8250df", "#bf8700", "#0a7ea4",
  "#e16f24", "#6e7781", "#bc4c00", "#116329"];
const TEMP_KEY = /temp/i;
/** Agents per page of the table (GET agents is paginated: docs/api.md). ``?page_size=N``
 * in the page's URL changes it (1..1000). */
const PAGE_SIZE = Math.min(1000, Math.max(1,
  Number(new URLSearchParams(window.location.search).get("page_size")) || 100));

const state = {
  agents: new Map(), // id -> agent JSON of GET agents (properties updated live)
  groups: {},
  windowS: 86400,
  lastEventTs: null,
  controlMode: false,
  controlLastT: null,
  fleetPower: new Map(), // agent id -> [t, kW, kind]: latest power of each battery and heater
  powerHistory: new Map(), // agent id -> [[t, kW], ...] from the telemetry history
  historyLoaded: new Set(),
  // the table shows one page of GET agents: cursors[i] is the cursor of page i (null: first)
  page: { cursors: [null], index: 0, next: null, total: 0 },
  home: null, // the table shows only the agents behind this home (homes.js), or all

};

const $ = (sel) => document.querySelector(sel);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null) continue;
    if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

/* ---------- formatting ---------- */

function hms(ts) {
  if (!ts) return "–";
  return new Date(ts * 1000).toLocaleTimeString([], { hour12: false });
}

function fmt(value, digits) {
  return typeof value === "number" && Number.isFinite(value) ? value.toFixed(digits) : "–";
}

function signed(value, digits) {
  if (typeof value !== "number" || !Number.isFinite(value)) return "–";
  const text = value.toFixed(digits);
  return value > 0 && Number(text) !== 0 ? `+${text}` : text;
}

/** {name: [signature, value]} (a{sv} in the bus's JSON mapping) -> {name: value}. */
function unwrap(value) {
  const out = {};
  if (!value || typeof value !== "object" || Array.isArray(value)) return out;
  for (const [k, v] of Object.entries(value)) {
    out[k] = Array.isArray(v) && v.length === 2 && typeof v[0] === "string" ? v[1] : v;
  }
  return out;
}

function telemetryEntry(agent) {
  for (const [key, entry] of Object.entries(agent.properties || {})) {
    if (key.endsWith(TELEMETRY_SUFFIX)) return { key, entry };
  }
  return null;
}

function telemetryOf(agent) {
  const found = telemetryEntry(agent);
  return found ? unwrap(found.entry.value) : {};
}

function kindOf(agent, tel) {
  if ("Sys_SOC" in tel || "Sys_Power_kW" in tel) return "battery";
  if ("PV_Power_kW" in tel) return "pv inverter";
  if ("EV_Plugged" in tel || "EV_Energy_kWh" in tel) return "ev charger";
  if ("Power_W" in tel || "Energy_Stored_Wh" in tel || "Op_State" in tel) return "water heater";
  const about = `${agent.model || ""} ${agent.device_name || ""} ${agent.id}`.toLowerCase();
  if (/ucm|water|heater|\bwh/.test(about)) return "water heater";
  if (/batt|bis|\bbat/.test(about)) return "battery";
  if (/inverter|\bpv\b/.test(about)) return "pv inverter";
  if (/evse|charger|\bev\b/.test(about)) return "ev charger";
  return "agent";
}

function temperatureKeys(tel) {
  return Object.keys(tel).filter((k) => TEMP_KEY.test(k) && typeof tel[k] === "number");
}

/** A temperature in °C: keys ending in _F (or F) are Fahrenheit. */
function celsius(key, value) {
  return /_?F$/.test(key) && !/_C$/.test(key) ? ((value - 32) * 5) / 9 : value;
}

function addTemperatures(id, tel, t) {
  for (const key of temperatureKeys(tel)) {
    charts.temp.add(`${id}:${key}`, t, celsius(key, tel[key]), `${id} ${key}`);
  }
}

/* ---------- API ---------- */

/** The login page, when the session ended (logged out elsewhere, token revoked). */
function toLogin(response) {
  if (response.status === 401) window.location.replace("login");
}

async function api(path, options = {}) {
  const unsafe = options.method && options.method !== "GET";
  const response = await fetch(path, {
    ...options,
    credentials: "same-origin",
    headers: {
      accept: "application/json",
      // CSRF protection: the API refuses a cookie-authenticated POST without this header
      ...(unsafe ? { "x-sef-csrf": "1" } : {}),
      ...(options.headers || {}),
    },
  });
  toLogin(response);
  let body = null;
  const text = await response.text();
  try {
    body = text ? JSON.parse(text) : null;
  } catch (_) {
    body = { error: text };
  }
  if (!response.ok) {
    const message = body && body.error ? body.error : `${response.status} ${response.statusText}`;
    const error = new Error(message);
    error.status = response.status;
    error.body = body;
    throw error;
  }
  return body;
}

/** GET a page of a paginated list: its body and the headers that describe the page. */
async function apiPage(path) {
  const response = await fetch(path, { headers: { accept: "application/json" } });
  toLogin(response);
  if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
  return {
    body: await response.json(),
    total: Number(response.headers.get("X-Total-Count") || 0),
    next: response.headers.get("X-Next-Cursor"),
  };
}

/* ---------- charts (canvas, no library) ---------- */

function niceStep(range, ticks) {
  const raw = range / Math.max(1, ticks);
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  for (const m of [1, 2, 2.5, 5, 10]) if (raw <= m * mag) return m * mag;
  return 10 * mag;
}

const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800,
  21600, 43200, 86400];

class LineChart {
  constructor(root, options = {}) {
    this.root = root;
    this.canvas = root.querySelector("canvas");
    this.legend = root.querySelector(".legend");
    this.note = root.querySelector(".note");
    this.options = options;
    this.series = new Map();
    this.pending = false;
    this.total = 0;
    this.updates = 0;
    new ResizeObserver(() => this.schedule()).observe(this.canvas);
  }

  ensure(name, label, style = {}) {
    let s = this.series.get(name);
    if (!s) {
      const color = style.color || PALETTE[this.series.size % PALETTE.length];
      s = { name, label: label || name, color, dash: style.dash || null, points: [] };
      this.series.set(name, s);
      this.renderLegend();
    }
    return s;
  }

  add(name, t, v, label, style) {
    if (typeof t !== "number" || typeof v !== "number" || !Number.isFinite(v)) return;
    const pts = this.ensure(name, label, style).points;
    const n = pts.length;
    if (n === 0 || t > pts[n - 1][0]) {
      pts.push([t, v]);
    } else if (t === pts[n - 1][0]) {
      pts[n - 1][1] = v;
      return this.schedule();
    } else {
      let lo = 0;
      let hi = n;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (pts[mid][0] < t) lo = mid + 1;
        else hi = mid;
      }
      if (pts[lo] && pts[lo][0] === t) pts[lo][1] = v;
      else pts.splice(lo, 0, [t, v]);
    }
    if (pts.length > MAX_POINTS) {
      const half = pts.length >> 1;
      const thinned = pts.slice(0, half).filter((_, i) => i % 2 === 0);
      pts.splice(0, half, ...thinned);
    }
    this.updates += 1;
    this.schedule();
  }

  clear() {
    this.series.clear();
    this.renderLegend();
    this.schedule();
  }

  renderLegend() {
    const sorted = [...this.series.values()].sort(
      (a, b) => a.label.localeCompare(b.label, undefined, { numeric: true }));
    this.legend.replaceChildren(...sorted.map((s) => {
      const span = el("span", {}, s.label);
      span.style.setProperty("--c", s.color);
      return span;
    }));
  }

  schedule() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.draw();
    });
  }

  visible() {
    let tMax = -Infinity;
    for (const s of this.series.values()) {
      if (s.points.length) tMax = Math.max(tMax, s.points[s.points.length - 1][0]);
    }
    const tMin = tMax - state.windowS;
    const out = [];
    for (const s of this.series.values()) {
      while (s.points.length && s.points[0][0] < tMin - state.windowS) s.points.shift();
      out.push({ s, pts: s.points.filter((p) => p[0] >= tMin) });
    }
    return { out, tMin, tMax };
  }

  draw() {
    const { out, tMax } = this.visible();
    const total = out.reduce((n, o) => n + o.pts.length, 0);
    this.total = total;
    this.root.dataset.points = String(total);
    this.root.dataset.series = String(this.series.size);
    this.root.dataset.updates = String(this.updates);
    if (Number.isFinite(tMax)) this.root.dataset.lastT = String(tMax);

    const dpr = window.devicePixelRatio || 1;
    const width = this.canvas.clientWidth;
    const height = this.canvas.clientHeight;
    if (!width || !height) return;
    this.canvas.width = Math.round(width * dpr);
    this.canvas.height = Math.round(height * dpr);
    const g = this.canvas.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, width, height);
    g.font = "11px system-ui, sans-serif";

    const pad = { l: 48, r: 10, t: 8, b: 22 };
    const w = width - pad.l - pad.r;
    const h = height - pad.t - pad.b;
    if (total === 0) {
      g.fillStyle = "#8a929c";
      g.textAlign = "center";
      g.fillText(this.options.empty || "waiting for data…", pad.l + w / 2, pad.t + h / 2);
      return;
    }

    let t0 = Infinity;
    let t1 = -Infinity;
    let y0 = Infinity;
    let y1 = -Infinity;
    for (const { pts } of out) {
      for (const [t, v] of pts) {
        if (t < t0) t0 = t;
        if (t > t1) t1 = t;
        if (v < y0) y0 = v;
        if (v > y1) y1 = v;
      }
    }
    if (this.options.yMin !== undefined) y0 = Math.min(y0, this.options.yMin);
    if (this.options.yMax !== undefined) y1 = Math.max(y1, this.options.yMax);
    if (this.options.zero) {
      y0 = Math.min(y0, 0);
      y1 = Math.max(y1, 0);
    }
    const minRange = this.options.minRange || 1e-9;
    if (y1 - y0 < minRange) {
      const mid = (y0 + y1) / 2;
      y0 = mid - minRange / 2;
      y1 = mid + minRange / 2;
    }
    const yStep = niceStep(y1 - y0, 5);
    y0 = Math.floor(y0 / yStep) * yStep;
    y1 = Math.ceil(y1 / yStep) * yStep;
    if (t1 - t0 < 1) t0 = t1 - 1;
    const X = (t) => pad.l + ((t - t0) / (t1 - t0)) * w;
    const Y = (v) => pad.t + (1 - (v - y0) / (y1 - y0)) * h;

    // grid and y labels
    g.strokeStyle = "#e6e9ee";
    g.fillStyle = "#6b7380";
    g.lineWidth = 1;
    g.textAlign = "right";
    g.textBaseline = "middle";
    const exponent = Math.floor(Math.log10(yStep));
    const fraction = (yStep / Math.pow(10, exponent)) % 1 > 1e-9 ? 1 : 0;
    const decimals = Math.min(6, Math.max(0, fraction - exponent));
    for (let v = y0; v <= y1 + yStep / 2; v += yStep) {
      const y = Math.round(Y(v)) + 0.5;
      g.beginPath();
      g.moveTo(pad.l, y);
      g.lineTo(pad.l + w, y);
      g.stroke();
      g.fillText(v.toFixed(decimals), pad.l - 5, y);
    }
    if (y0 < 0 && y1 > 0) {
      g.strokeStyle = "#9aa1ab";
      g.beginPath();
      g.moveTo(pad.l, Math.round(Y(0)) + 0.5);
      g.lineTo(pad.l + w, Math.round(Y(0)) + 0.5);
      g.stroke();
    }
    // time labels
    const span = t1 - t0;
    const tStep = TIME_STEPS.find((s) => span / s <= 6) || 86400;
    g.textAlign = "center";
    g.textBaseline = "top";
    g.strokeStyle = "#e6e9ee";
    for (let t = Math.ceil(t0 / tStep) * tStep; t <= t1; t += tStep) {
      const x = Math.round(X(t)) + 0.5;
      g.beginPath();
      g.moveTo(x, pad.t);
      g.lineTo(x, pad.t + h);
      g.stroke();
      const label = new Date(t * 1000).toLocaleTimeString([], {
        hour12: false, hour: "2-digit", minute: "2-digit",
        second: tStep < 60 ? "2-digit" : undefined,
      });
      g.fillText(label, x, pad.t + h + 5);
    }
    // lines
    for (const { s, pts } of out) {
      if (!pts.length) continue;
      g.strokeStyle = s.color;
      g.lineWidth = 1.8;
      g.setLineDash(s.dash || []);
      g.beginPath();
      pts.forEach(([t, v], i) => (i ? g.lineTo(X(t), Y(v)) : g.moveTo(X(t), Y(v))));
      g.stroke();
      if (pts.length === 1) {
        g.fillStyle = s.color;
        g.fillRect(X(pts[0][0]) - 2, Y(pts[0][1]) - 2, 4, 4);
      }
    }
    g.setLineDash([]);
    void tMax;
  }
}

const charts = {};

function setNote(chart, text) {
  chart.note.textContent = text || "";
}

/* ---------- chart data ---------- */

function chartTelemetry(agent, tel, t) {
  if (typeof t !== "number") return;
  const kind = kindOf(agent, tel);
  if (kind === "battery") {
    charts.soc.add(agent.id, t, tel.Sys_SOC);
    if (typeof tel.Sys_Power_kW === "number") state.fleetPower.set(agent.id, [t, tel.Sys_Power_kW, kind]);
  } else if (kind === "water heater") {
    if (typeof tel.Energy_Stored_Wh === "number") {
      charts.stored.add(agent.id, t, tel.Energy_Stored_Wh / 1000);
    }
    addTemperatures(agent.id, tel, t);
    if (typeof tel.Power_W === "number") state.fleetPower.set(agent.id, [t, tel.Power_W / 1000, kind]);
  } else if (kind === "pv inverter") {
    if (typeof tel.PV_Power_kW === "number") {
      charts.pv.add(agent.id, t, tel.PV_Power_kW);
      state.fleetPower.set(agent.id, [t, -tel.PV_Power_kW, kind]);
    }
  } else if (kind === "ev charger") {
    if (typeof tel.EV_Rate_kW === "number") {
      charts.ev.add(agent.id, t, tel.EV_Rate_kW);
      state.fleetPower.set(agent.id, [t, tel.EV_Rate_kW, kind]);
    }
  }
  if (!state.controlMode && kind in FLEET) {
    addFleetPoint(t);
  }
}

const FLEET = {
  battery: { name: "bat", label: "batteries (sum, + = charging)", color: PALETTE[0] },
  "water heater": { name: "wh", label: "water heaters (sum)", color: PALETTE[3] },
  "pv inverter": { name: "pv", label: "PV (sum, − = producing)", color: PALETTE[2] },
  "ev charger": { name: "ev", label: "EV chargers (sum)", color: PALETTE[1] },
};

/** Online agents of a kind (the members of a fleet sum). */
function fleetMembers(kind) {
  return [...state.agents.values()].filter(
    (a) => a.status !== "offline" && kindOf(a, telemetryOf(a)) === kind).map((a) => a.id);
}

/** A point of each fleet sum at ``t``, once every online member has reported a power. */
function addFleetPoint(t) {
  for (const [kind, spec] of Object.entries(FLEET)) {
    const members = fleetMembers(kind);
    if (!members.length || !members.every((id) => state.fleetPower.has(id))) continue;
    const sum = members.reduce((acc, id) => acc + state.fleetPower.get(id)[1], 0);
    charts.net.add(spec.name, t, sum, spec.label, { color: spec.color });
  }
}

/** The fleet sums over the loaded histories (each member's last value carried forward). */
function addFleetHistory() {
  if (state.controlMode) return;
  for (const [kind, spec] of Object.entries(FLEET)) {
    const members = fleetMembers(kind);
    if (!members.length || !members.every((id) => state.powerHistory.has(id))) continue;
    const events = [];
    for (const id of members) for (const [t, kw] of state.powerHistory.get(id)) events.push([t, id, kw]);
    events.sort((a, b) => a[0] - b[0]);
    const last = new Map();
    for (const [t, id, kw] of events) {
      last.set(id, kw);
      if (last.size === members.length) {
        let sum = 0;
        for (const v of last.values()) sum += v;
        charts.net.add(spec.name, t, sum, spec.label, { color: spec.color });
      }
    }
  }
}

async function loadHistory(agent) {
  const found = telemetryEntry(agent);
  if (!found || typeof found.entry.ts !== "number" || state.historyLoaded.has(agent.id)) return;
  state.historyLoaded.add(agent.id);
  const since = found.entry.ts - state.windowS;
  const every = Math.max(1, Math.round(state.windowS / 400));
  const path = `agents/${encodeURIComponent(agent.id)}/telemetry?key=${encodeURIComponent(found.key)}` +
    `&since=${since}&every=${every}&limit=50000`;
  let history;
  try {
    history = await api(path);
  } catch (error) {
    if (error.status !== 503) console.warn("history", agent.id, error.message);
    return;
  }
  const kind = kindOf(agent, telemetryOf(agent));
  const power = [];
  for (const point of history.points || []) {
    const tel = unwrap(point.value);
    if (kind === "battery") {
      charts.soc.add(agent.id, point.ts, tel.Sys_SOC);
      if (typeof tel.Sys_Power_kW === "number") power.push([point.ts, tel.Sys_Power_kW]);
    }
    if (kind === "water heater") {
      if (typeof tel.Energy_Stored_Wh === "number") {
        charts.stored.add(agent.id, point.ts, tel.Energy_Stored_Wh / 1000);
      }
      addTemperatures(agent.id, tel, point.ts);
      if (typeof tel.Power_W === "number") power.push([point.ts, tel.Power_W / 1000]);
    }
    if (kind === "pv inverter" && typeof tel.PV_Power_kW === "number") {
      charts.pv.add(agent.id, point.ts, tel.PV_Power_kW);
      power.push([point.ts, -tel.PV_Power_kW]);
    }
    if (kind === "ev charger" && typeof tel.EV_Rate_kW === "number") {
      charts.ev.add(agent.id, point.ts, tel.EV_Rate_kW);
      power.push([point.ts, tel.EV_Rate_kW]);
    }
  }
  state.powerHistory.set(agent.id, power);
  addFleetHistory();
}

async function refreshControl() {
  let series;
  try {
    const since = state.controlLastT === null ? "" : `?since=${state.controlLastT}`;
    series = await api(`control/series${since}`);
  } catch (_) {
    return;
  }
  if (!series.t || !series.t.length) {
    if (!state.controlMode) {
      setNote(charts.net, "No control series yet (GET control/series is empty): showing the " +
        "fleet's aggregate power.");
    }
    return;
  }
  if (!state.controlMode) {
    state.controlMode = true;
    charts.net.clear();
    charts.net.root.dataset.source = "control";
    charts.net.root.querySelector(".title").textContent = "Net load vs target";
    setNote(charts.net, "From the control application (GET control/series).");
  }
  series.t.forEach((t, i) => {
    charts.net.add("net", t, series.net_kw[i], "net load", { color: PALETTE[0] });
    charts.net.add("target", t, series.target_kw[i], "target", { color: PALETTE[1], dash: [6, 4] });
    charts.net.add("base", t, series.base_kw[i], "base load", { color: "#9aa1ab" });
  });
  state.controlLastT = series.t[series.t.length - 1];
}

/* ---------- agents table ---------- */

let renderPending = false;
const flashed = new Map(); // id -> last rendered event text, to flash changes

function scheduleRender() {
  if (renderPending) return;
  renderPending = true;
  requestAnimationFrame(() => {
    renderPending = false;
    renderAgents();
  });
}

/** An agent's AC power in kW (+ = consuming), or null. */
function powerKw(kind, tel) {
  if (kind === "battery") return typeof tel.Sys_Power_kW === "number" ? tel.Sys_Power_kW : null;
  if (kind === "pv inverter") return typeof tel.PV_Power_kW === "number" ? -tel.PV_Power_kW : null;
  if (kind === "ev charger") return typeof tel.EV_Rate_kW === "number" ? tel.EV_Rate_kW : null;
  return typeof tel.Power_W === "number" ? tel.Power_W / 1000 : null;
}

function agentRow(agent) {
  const tel = telemetryOf(agent);
  const kind = kindOf(agent, tel);
  const offline = agent.status === "offline";
  const seen = agent.last_seen || agent.offline_since || (telemetryEntry(agent) || {}).entry?.ts;
  let soc = "–";
  let power = "–";
  let stored = "–";
  let opState = "–";
  let link = "–";
  let linkClass = "";
  if (kind === "battery") {
    soc = fmt(tel.Sys_SOC, 1);
    power = signed(tel.Sys_Power_kW, 2);
    stored = typeof tel.Sys_Energy_kWh === "number" ? `${fmt(tel.Sys_Energy_kWh, 1)} kWh` : "–";
    opState = tel.State || "–";
    if ("Comm_Fault" in tel) {
      link = tel.Comm_Fault ? "fault" : "ok";
      linkClass = tel.Comm_Fault ? "bad-text" : "ok-text";
    }
  } else if (kind === "water heater") {
    power = typeof tel.Power_W === "number" ? signed(tel.Power_W / 1000, 2) : "–";
    const parts = [];
    if (typeof tel.Energy_Stored_Wh === "number") parts.push(`${fmt(tel.Energy_Stored_Wh / 1000, 2)} kWh`);
    for (const key of temperatureKeys(tel)) parts.push(`${fmt(celsius(key, tel[key]), 1)} °C`);
    stored = parts.length ? parts.join(" · ") : "–";
    opState = (tel.Op_State || "–") + (tel.Override ? " · override" : "");
    if (tel.Link) {
      link = tel.Link;
      linkClass = tel.Link === "up" ? "ok-text" : "bad-text";
    }
  } else if (kind === "pv inverter" || kind === "ev charger") {
    const pv = kind === "pv inverter";
    const kw = pv ? tel.PV_Power_kW : tel.EV_Rate_kW;
    power = typeof kw === "number" ? signed(pv ? -kw : kw, 2) : "–";
    if (pv) {
      stored = typeof tel.Energy_Produced_Wh === "number"
        ? `${fmt(tel.Energy_Produced_Wh / 1000, 1)} kWh produced` : "–";
      const limit = tel.Limited && typeof tel.Limit_kW === "number" ? ` · limit ${fmt(tel.Limit_kW, 2)} kW` : "";
      opState = (tel.State || "–") + limit;
    } else {
      const parts = [];
      if (typeof tel.EV_Energy_kWh === "number") parts.push(`${fmt(tel.EV_Energy_kWh, 2)} kWh`);
      if (typeof tel.EV_Need_kWh === "number") parts.push(`${fmt(tel.EV_Need_kWh, 2)} kWh to go`);
      stored = parts.length ? parts.join(" · ") : "–";
      opState = (tel.Connector_Status || "–") + (tel.EV_Plugged ? " · plugged" : "");
    }
    if ("Comm_Fault" in tel) {
      link = tel.Comm_Fault ? "fault" : "ok";
      linkClass = tel.Comm_Fault ? "bad-text" : "ok-text";
    }
  }
  const event = tel.Event ? `${tel.Event}${tel.Event_Rate_kW ? ` ${tel.Event_Rate_kW} kW` : ""}` : "–";
  const about = [agent.manufacturer, agent.model, agent.software_version].filter(Boolean).join(" ");
  const statusText = offline ? `offline${agent.offline_reason ? ` (${agent.offline_reason})` : ""}`
    : agent.status;
  const row = el("tr", {
    class: offline ? "offline" : "",
    "data-agent": agent.id,
    "data-status": agent.status,
    "data-kind": kind,
    title: about || null,
  },
  el("td", { "data-col": "id" }, el("strong", {}, agent.id)),
  el("td", { "data-col": "kind" }, kind),
  el("td", { "data-col": "status", class: "status-cell" },
    el("span", { class: `dot ${agent.status}` }), statusText),
  el("td", { "data-col": "home" }, agent.home || "–"),
  el("td", { "data-col": "groups" }, ...(agent.groups || []).map((g) => el("span", { class: "tag" }, g))),
  el("td", { "data-col": "last-seen" }, offline ? `last seen ${hms(seen)}` : hms(seen)),
  el("td", { "data-col": "soc", class: "num" }, soc),
  el("td", { "data-col": "power", class: "num", "data-value": powerKw(kind, tel) }, power),
  el("td", { "data-col": "event", "data-value": tel.Event || null }, event),
  el("td", { "data-col": "stored", class: "num" }, stored),
  el("td", { "data-col": "op-state", title: tel.Refused || tel.Fault || null }, opState),
  el("td", { "data-col": "link", class: linkClass, title: tel.Link_Fault || null }, link));
  if (flashed.has(agent.id) && flashed.get(agent.id) !== event) {
    row.querySelector('[data-col="event"]').classList.add("flash");
  }
  flashed.set(agent.id, event);
  return row;
}

function renderAgents() {
  const agents = [...state.agents.values()].sort((a, b) => {
    const ka = kindOf(a, telemetryOf(a));
    const kb = kindOf(b, telemetryOf(b));
    return ka === kb ? a.id.localeCompare(b.id, undefined, { numeric: true }) : ka.localeCompare(kb);
  });
  $("#agents tbody").replaceChildren(...agents.map(agentRow));
  $("#agents-empty").hidden = agents.length > 0;
  const online = agents.filter((a) => a.status === "online").length;
  $("#agent-count").textContent = agents.length ? `${online} of ${agents.length} online` : "";
  renderPager(agents.length);
  renderTargets();
}

function renderPager(shown) {
  const page = state.page;
  const multi = page.index > 0 || page.next !== null;
  $("#agents-pager").hidden = !multi;
  if (!multi) return;
  const first = page.index * PAGE_SIZE + 1;
  $("#page-info").textContent = shown
    ? `agents ${first}–${first + shown - 1} of ${page.total} (page ${page.index + 1})`
    : `no agents on this page (${page.total} in all)`;
  $("#agents-pager").dataset.page = String(page.index + 1);
  $("#page-prev").disabled = page.index === 0;
  $("#page-first").disabled = page.index === 0;
  $("#page-next").disabled = page.next === null;
}

/** Show another page of agents: +1 next, -1 previous, 0 the first. */
function turnPage(step) {
  const page = state.page;
  if (step > 0 && page.next !== null) {
    page.cursors[page.index + 1] = page.next;
    page.index += 1;
  } else if (step < 0 && page.index > 0) {
    page.index -= 1;
  } else if (step === 0) {
    page.index = 0;
  } else {
    return;
  }
  page.cursors.length = page.index + 1;
  state.agents.clear();
  refreshAgents();
}

function renderTargets() {
  const options = [...state.agents.keys()].sort().map((id) => el("option", { value: id }));
  for (const name of Object.keys(state.groups)) {
    options.push(el("option", { value: `group:${name}` }, `${state.groups[name].length} members`));
  }
  $("#targets").replaceChildren(...options);
}

/** Store a snapshot from the API, keeping what live events brought since it was taken. */
function mergeAgent(agent) {
  const known = state.agents.get(agent.id);
  if (known) {
    agent.properties = agent.properties || {};
    for (const [key, entry] of Object.entries(known.properties || {})) {
      const snap = agent.properties[key];
      if (!snap || (typeof entry.ts === "number" && typeof snap.ts === "number" && entry.ts > snap.ts)) {
        agent.properties[key] = entry;
      }
    }
    agent.last_seen = Math.max(agent.last_seen || 0, known.last_seen || 0);
  }
  state.agents.set(agent.id, agent);
}

async function refreshAgents() {
  try {
    const page = state.page;
    const cursor = page.cursors[page.index];
    const home = state.home;
    const query = `agents?limit=${PAGE_SIZE}` + (cursor ? `&cursor=${encodeURIComponent(cursor)}` : "")
      + (home ? `&home=${encodeURIComponent(home)}` : "");
    const [listed, groups] = await Promise.all([apiPage(query), api("groups")]);
    // the page was turned or the home filter changed meanwhile
    if (page.cursors[page.index] !== cursor || state.home !== home) return;
    if (!listed.body.length && page.index > 0) return turnPage(0); // the page emptied
    const agents = listed.body;
    page.next = listed.next;
    page.total = listed.total;
    const seen = new Set();
    for (const agent of agents) {
      seen.add(agent.id);
      mergeAgent(agent);
      if (!state.historyLoaded.has(agent.id)) loadHistory(agent);
    }
    for (const id of [...state.agents.keys()]) if (!seen.has(id)) state.agents.delete(id);
    state.groups = groups;
    scheduleRender();
  } catch (error) {
    console.warn("agents", error.message);
  }
}

async function refreshAgent(id) {
  try {
    const agent = await api(`agents/${encodeURIComponent(id)}?events=0`);
    delete agent.events;
    if (state.home && agent.home !== state.home) return; // filtered out of the table
    mergeAgent(agent);
    scheduleRender();
  } catch (_) {
    /* the periodic refresh catches up */
  }
}

async function refreshHealth() {
  const pill = $("#health");
  try {
    const health = await api("health");
    pill.textContent = `broker ${health.broker_connected ? "connected" : "DISCONNECTED"} · ` +
      `${health.online}/${health.agents} online · store ${health.store || "none"}`;
    pill.className = `pill ${health.broker_connected ? "ok" : "bad"}`;
  } catch (error) {
    pill.textContent = `EMS unreachable: ${error.message}`;
    pill.className = "pill bad";
  }
}

/* ---------- live events ---------- */

let refreshSoon = null;

function debouncedRefresh() {
  clearTimeout(refreshSoon);
  refreshSoon = setTimeout(refreshAgents, 200);
}

/** Whether a new agent could show on the current page (the last one, not full). */
function pageHasRoom() {
  // with a home filter the periodic refresh brings that home's new agents
  return !state.home && state.page.next === null && state.agents.size < PAGE_SIZE;
}

function noteEventTime(ts) {
  if (typeof ts === "number" && (state.lastEventTs === null || ts > state.lastEventTs)) {
    state.lastEventTs = ts;
    $("#clock").textContent = `clock ${hms(ts)}`;
  }
}

function connectEvents() {
  const kinds = ["property", "online", "offline", "discovered", "about", "interface"];
  const source = new EventSource(`events?${kinds.map((k) => `kind=${k}`).join("&")}`);
  const pill = $("#stream");
  source.onopen = () => {
    pill.textContent = "live";
    pill.className = "pill ok";
    pill.dataset.state = "open";
    debouncedRefresh();
  };
  source.onerror = () => {
    pill.textContent = "live: reconnecting…";
    pill.className = "pill bad";
    pill.dataset.state = "error";
  };
  source.addEventListener("property", (message) => {
    const ev = JSON.parse(message.data);
    noteEventTime(ev.ts);
    const agent = state.agents.get(ev.agent);
    if (!agent) return pageHasRoom() ? debouncedRefresh() : undefined; // on another page
    agent.properties = agent.properties || {};
    agent.properties[ev.key] = { value: ev.value, ts: ev.value_ts };
    agent.last_seen = Math.max(agent.last_seen || 0, ev.ts || 0);
    if (String(ev.key).endsWith(TELEMETRY_SUFFIX)) {
      chartTelemetry(agent, unwrap(ev.value), ev.value_ts);
      if (!state.historyLoaded.has(agent.id)) loadHistory(agent);
    }
    scheduleRender();
  });
  for (const kind of ["online", "offline"]) {
    source.addEventListener(kind, (message) => {
      const ev = JSON.parse(message.data);
      noteEventTime(ev.ts);
      const agent = state.agents.get(ev.agent);
      if (agent) {
        agent.status = ev.status || kind;
        if (kind === "offline") agent.offline_since = ev.ts;
        scheduleRender();
      }
      if (agent || pageHasRoom()) refreshAgent(ev.agent);
      refreshHealth();
    });
  }
  for (const kind of ["discovered", "about", "interface"]) {
    source.addEventListener(kind, (message) => {
      const ev = JSON.parse(message.data);
      noteEventTime(ev.ts);
      if (state.agents.has(ev.agent) || pageHasRoom()) debouncedRefresh();
    });
  }
}

/* ---------- command form ---------- */

const COMMANDS = ["charge", "discharge", "idle", "shed", "endshed"];

/** "charge:4:600 discharge:8" -> [["charge", 4, 600], ["discharge", 8, 0]] (as `sef send`). */
function parseSequence(text) {
  const tokens = text.split(/[\s,;]+/).filter(Boolean);
  if (!tokens.length) throw new Error("enter at least one event CMD:RATE_KW[:DURATION_S], e.g. charge:4:600");
  return tokens.map((token) => {
    const parts = token.split(":");
    if ((parts.length !== 2 && parts.length !== 3) || !parts[0]) {
      throw new Error(`'${token}': expected CMD:RATE_KW[:DURATION_S], e.g. charge:4:1800`);
    }
    const names = ["rate (kW)", "duration (s)"];
    const numbers = parts.slice(1).map((part, i) => {
      if (!/^[+-]?\d+$/.test(part.trim())) {
        throw new Error(`'${token}': ${names[i]} must be an integer, got '${part}'`);
      }
      return Number.parseInt(part, 10);
    });
    return [parts[0], numbers[0], numbers.length > 1 ? numbers[1] : 0];
  });
}

function parseTarget(text) {
  const target = text.trim();
  const group = target.startsWith("group:");
  const name = group ? target.slice("group:".length) : target;
  if (!name || name.includes("/") || /\s/.test(name)) {
    throw new Error(target ? `bad target '${target}': expected an agent id or group:NAME`
      : "enter a target: an agent id or group:NAME");
  }
  return { target, path: `${group ? "groups" : "agents"}/${encodeURIComponent(name)}/commands` };
}

function showError(message, field) {
  const box = $("#form-error");
  box.textContent = message;
  box.hidden = false;
  $("#form-result").hidden = true;
  for (const input of ["#target", "#sequence"]) $(input).removeAttribute("aria-invalid");
  if (field) $(field).setAttribute("aria-invalid", "true");
}

function showResult(result) {
  $("#form-error").hidden = true;
  for (const input of ["#target", "#sequence"]) $(input).removeAttribute("aria-invalid");
  const box = $("#form-result");
  box.className = `result${result.status === "ok" || result.status === "sent" ? "" : " not-ok"}`;
  box.dataset.status = result.status;
  const replies = (result.replies || []).map((r) => el("li", { "data-agent": r.agent },
    el("strong", {}, r.agent), ": ",
    r.ok ? el("span", { class: "ok-text" }, "ok") :
      el("span", { class: "bad-text" }, `refused — ${r.message || r.error || "error"}`)));
  for (const agent of result.missing || []) {
    replies.push(el("li", { "data-agent": agent }, el("strong", {}, agent), ": ",
      el("span", { class: "warn-text" }, "no reply in time")));
  }
  box.replaceChildren(
    el("div", {}, el("strong", {}, `${result.target}: ${result.status}`),
      el("span", { class: "muted" }, ` · call ${result.call_id.slice(0, 8)} at ${hms(result.sent_at)}`)),
    replies.length ? el("ul", {}, ...replies) : el("div", { class: "muted" }, "no reply asked"));
  box.hidden = false;
}

async function onSubmit(event) {
  event.preventDefault();
  let target;
  let cmds;
  try {
    target = parseTarget($("#target").value);
  } catch (error) {
    return showError(error.message, "#target");
  }
  try {
    cmds = parseSequence($("#sequence").value);
  } catch (error) {
    return showError(error.message, "#sequence");
  }
  const timeout = Number.parseFloat($("#timeout").value);
  const body = { cmds };
  if (Number.isFinite(timeout)) body.timeout_s = timeout;
  const button = $("#send");
  button.disabled = true;
  button.textContent = "Sending…";
  try {
    const result = await api(target.path, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    showResult(result);
    for (const reply of result.replies || []) refreshAgent(reply.agent);
  } catch (error) {
    const path = error.body && error.body.detail && error.body.detail.path;
    const field = error.status === 404 ? "#target" : (String(path || error.message).startsWith("cmds") ? "#sequence" : null);
    showError(`${error.status ? `${error.status}: ` : ""}${error.message} — nothing was sent.`, field);
  } finally {
    button.disabled = false;
    button.textContent = "Send";
    refreshCommands();
  }
}

/* ---------- command log ---------- */

function eventsText(args) {
  const cmds = Array.isArray(args) && Array.isArray(args[0]) ? args[0] : [];
  return cmds.map((c) => (Array.isArray(c) ? c.join(":") : String(c))).join(" ") || JSON.stringify(args);
}

async function refreshCommands() {
  const note = $("#commands-note");
  let rows;
  try {
    rows = await api("commands?limit=25");
  } catch (error) {
    note.textContent = error.status === 503 ? "No command log: the EMS runs without a store." : error.message;
    return;
  }
  note.textContent = rows.length ? "" : "No command sent yet.";
  $("#commands tbody").replaceChildren(...rows.map((row) => {
    const replies = (row.replies || []).map((r) => (r.ok ? `${r.agent} ok` : `${r.agent}: ${r.message || r.error || "refused"}`));
    const statusClass = row.status === "ok" ? "ok-text" : (row.status === "sent" ? "" : "bad-text");
    return el("tr", { "data-call": row.call_id, "data-target": row.target, "data-status": row.status },
      el("td", {}, hms(row.ts)),
      el("td", { class: "sent-by" }, row.sent_by || "–"),
      el("td", {}, row.target),
      el("td", {}, el("code", {}, eventsText(row.args))),
      el("td", { class: statusClass }, row.status),
      el("td", { title: row.error || null }, row.error || replies.join(", ") || "–"));
  }));
}

/* ---------- session ---------- */

async function showSession() {
  let who;
  try {
    who = await api("me");
  } catch (_) {
    return;
  }
  $("#who").textContent = `${who.name} (${who.role})`;
  $("#who").dataset.role = who.role;
  if (who.via === "insecure") $("#logout").hidden = true;
  if (who.role === "viewer") {
    for (const input of $("#send-form").querySelectorAll("input, button")) input.disabled = true;
    showError("Your token has the viewer role: sending commands needs an operator token.", null);
  }
}

async function logout() {
  try {
    await api("logout", { method: "POST" });
  } finally {
    window.location.replace("login");
  }
}

/* ---------- start ---------- */

function start() {
  charts.net = new LineChart($("#chart-net"), { zero: true, minRange: 2 });
  charts.soc = new LineChart($("#chart-soc"), { yMin: 0, yMax: 100, empty: "no battery yet" });
  charts.stored = new LineChart($("#chart-stored"), { minRange: 0.5, empty: "no water heater yet" });
  charts.temp = new LineChart($("#chart-temp"), {
    minRange: 5,
    empty: "no temperature in the water heaters' telemetry",
  });
  setNote(charts.temp, "Telemetry keys containing 'Temp', if the agents report any.");
  charts.pv = new LineChart($("#chart-pv"), { zero: true, minRange: 1, empty: "no PV inverter yet" });
  charts.ev = new LineChart($("#chart-ev"), { zero: true, minRange: 1, empty: "no EV charger yet" });
  $("#window").addEventListener("change", (e) => {
    state.windowS = Number(e.target.value);
    Object.values(charts).forEach((c) => c.schedule());
  });
  $("#send-form").addEventListener("submit", onSubmit);
  $("#page-next").addEventListener("click", () => turnPage(1));
  $("#page-prev").addEventListener("click", () => turnPage(-1));
  $("#page-first").addEventListener("click", () => turnPage(0));
  $("#logout").addEventListener("click", logout);
  showSession();
  connectEvents();
  refreshAgents();
  refreshHealth();
  refreshCommands();
  refreshControl();
  setInterval(refreshAgents, REFRESH_MS);
  setInterval(refreshHealth, REFRESH_MS);
  setInterval(refreshCommands, COMMANDS_MS);
  setInterval(refreshControl, CONTROL_MS);
  window.sefDashboard = { state, charts, parseSequence, parseTarget, turnPage };
}

start();
