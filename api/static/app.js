// Vigil console: plain JavaScript over the REST API and the live stream. No build step, no
// network beyond Vigil itself (the map is drawn from the registry's coordinates).
"use strict";

const API = "/api/v1";
const RESPONDERS = ["admin", "firm_manager", "dispatcher", "technician"];
const AUDITORS = ["admin", "regulator"];
const KEY_METRICS = {
  elevator: ["floor", "service_mode", "door_state", "passengers", "fault_code", "trip_count"],
  energy_meter: ["power_total", "voltage_l1", "current_l1", "frequency", "import_energy"],
  water_meter: ["flow_rate", "forward_volume", "battery"],
  light_pole: ["lamp_power", "dim_level", "supply_voltage", "lux"],
  high_mast: ["lamp_power", "lamps_out", "supply_voltage", "lux"],
};
// worst first: a tile takes the colour of its worst open condition
const STATUSES = ["entrapment", "fault", "alarm", "locked_out", "lockout_pending", "overdue",
  "offline", "inspection", "out_of_service", "due_soon", "ok"];
const LANGS = { "zh-CN": "中文", en: "English" };

const S = {
  token: sessionStorage.getItem("vigil.token"),
  user: null,
  lang: localStorage.getItem("vigil.lang") || ((navigator.language || "").toLowerCase().startsWith("zh") ? "zh-CN" : "en"),
  zone: Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC", // the header clock's
  catalog: { codes: {}, kinds: {}, metrics: {}, time_metrics: [] },
  assets: new Map(),         // id -> asset
  incidentDevices: new Set(), // devices with an open incident
  clock: { server: Date.now(), perf: performance.now(), rate: 1 },
  stream: null,
  view: null,                // {name, arg, onState?, onAlert?, timer?}
  available: {},             // which optional domains the server offers
};

// ---- words: zh-CN and en (i18n.js holds the Chinese of every English text) ---------------------

function t(text, vars) {
  const table = S.lang === "en" ? null : (window.VIGIL_I18N || {})[S.lang];
  let out = (table && table[text]) || text;
  for (const [k, v] of Object.entries(vars || {})) out = out.split(`{${k}}`).join(String(v));
  return out;
}
// a value of the API's vocabulary (status, severity, step...): its words, never its code
function word(value) {
  if (value === null || value === undefined) return "—";
  return t(String(value).replace(/_/g, " "));
}
function codeName(metric, value) {
  const names = (S.catalog.codes[metric] || {})[String(Math.round(Number(value)))];
  return names ? names[S.lang] || names.en : null;
}
function kindName(kind) { const n = S.catalog.kinds[kind]; return n ? n[S.lang] || n.en : word(kind); }
function metricName(metric) { const n = S.catalog.metrics[metric]; return n ? n[S.lang] || n.en : word(metric); }
function num(value, digits) {
  return new Intl.NumberFormat(S.lang, { maximumFractionDigits: digits ?? 2 }).format(value);
}
// a metric's value as people read it: a code's name, a time, or a number in the locale
function stateText(metric, value, zone) {
  if (value === null || value === undefined) return "—";
  const named = codeName(metric, value);
  if (named) return named;
  if (S.catalog.time_metrics.includes(metric)) return fmtTime(new Date(value * 1000).toISOString(), zone);
  return num(value);
}

function setLang(lang) {
  S.lang = lang in LANGS ? lang : "en";
  localStorage.setItem("vigil.lang", S.lang);
  if (S.user) localStorage.setItem(`vigil.lang.${S.user.username}`, S.lang);
  document.documentElement.lang = S.lang;
  document.title = t("Vigil console");
}

// ---- helpers ----------------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function toast(message) {
  const box = h("div", {}, message);
  document.getElementById("toast").append(box);
  setTimeout(() => box.remove(), 4000);
}

class ApiError extends Error {
  constructor(status, detail) { super(detail); this.status = status; }
}

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (S.token) headers.Authorization = `Bearer ${S.token}`;
  let body = options.body;
  if (body !== undefined && typeof body !== "string") {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(body);
  }
  const response = await fetch(API + path, { ...options, headers, body });
  if (response.status === 401 && S.token) { logout(t("Your session has ended.")); throw new ApiError(401, "logged out"); }
  if (!response.ok) {
    let detail = response.statusText;
    try {
      const data = await response.json();
      detail = typeof data.detail === "string" ? data.detail
        : (data.detail || []).map(d => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`).join("; ");
    } catch (_) { /* not JSON */ }
    throw new ApiError(response.status, detail);
  }
  if (response.status === 204) return null;
  const type = response.headers.get("content-type") || "";
  return type.includes("json") ? response.json() : response.text();
}

// Platform time: the server's clock may be accelerated (demo) or stopped (tests).
function platformNow() {
  return S.clock.server + (performance.now() - S.clock.perf) * S.clock.rate;
}

async function syncClock() {
  const c = await api("/clock");
  S.clock = { server: Date.parse(c.now), perf: performance.now(), rate: c.rate };
}

// Every time in the zone of the site it belongs to (or the header's), with the zone named.
function fmtTime(iso, zone) {
  if (!iso) return "—";
  const tz = zone || S.zone;
  try {
    return new Intl.DateTimeFormat(S.lang, { timeZone: tz, year: "numeric", month: "2-digit", day: "2-digit",
      hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false, timeZoneName: "short" }).format(new Date(iso));
  } catch (_) { return new Date(iso).toISOString().replace("T", " ").slice(0, 19) + "Z"; }
}
function zoneOf(deviceId) { const a = S.assets.get(deviceId); return a ? a.timezone : S.zone; }
function timeCell(iso, deviceId) { return h("span", { class: "time", title: zoneOf(deviceId) }, fmtTime(iso, zoneOf(deviceId))); }

function fmtDuration(ms) {
  const sign = ms < 0 ? "-" : "";
  let s = Math.floor(Math.abs(ms) / 1000);
  const hh = Math.floor(s / 3600); s -= hh * 3600;
  const mm = Math.floor(s / 60); s -= mm * 60;
  return `${sign}${hh ? hh + ":" : ""}${String(mm).padStart(2, "0")}:${String(s).padStart(2, "0")}`;
}

function badge(value) { return h("span", { class: `badge ${value}` }, word(value)); }

function can(roles) { return S.user && roles.includes(S.user.role); }

function emptyRow(columns, text) { return h("tr", {}, h("td", { colspan: columns, class: "muted" }, t(text))); }
function headRow(labels) { return h("thead", {}, h("tr", {}, ...labels.map(l => h("th", {}, l ? t(l) : "")))); }
function assetLink(id) { return h("a", { href: `#/asset/${encodeURIComponent(id)}` }, id); }

// ---- session ----------------------------------------------------------------------------------

function langPicker(id) {
  return h("select", { id, title: t("Language"), onchange: (e) => { setLang(e.target.value); if (S.user) { buildNav(); route(); } else showLogin(); } },
    ...Object.entries(LANGS).map(([code, name]) => h("option", { value: code, selected: code === S.lang }, name)));
}

function showLogin(message) {
  document.getElementById("top").hidden = true;
  const view = document.getElementById("view");
  const error = h("p", { class: "error", id: "login-error", role: "alert" }, message || "");
  const form = h("form", { id: "login", class: "card login" },
    h("h1", {}, t("Vigil console")),
    h("label", {}, t("Username"), h("input", { name: "username", autocomplete: "username", required: true })),
    h("label", {}, t("Password"), h("input", { name: "password", type: "password", autocomplete: "current-password", required: true })),
    h("button", { type: "submit" }, t("Log in")), error, h("label", {}, t("Language"), langPicker("login-lang")));
  view.replaceChildren(form);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    try {
      const session = await api("/auth/login", {
        method: "POST", body: { username: data.get("username"), password: data.get("password") } });
      S.token = session.token;
      sessionStorage.setItem("vigil.token", S.token);
      await start();
    } catch (err) {
      error.textContent = err.message;
    }
  });
}

function logout(message) {
  if (S.token) fetch(API + "/auth/logout", { method: "POST", headers: { Authorization: `Bearer ${S.token}` } }).catch(() => {});
  S.token = null; S.user = null;
  sessionStorage.removeItem("vigil.token");
  if (S.stream) S.stream.abort();
  location.hash = "";
  showLogin(message);
}

// ---- live stream ------------------------------------------------------------------------------

function setLive(on) {
  const badgeEl = document.getElementById("live");
  badgeEl.className = on ? "live on" : "live off";
  badgeEl.title = on ? t("live updates on") : t("live updates reconnecting");
}

async function openStream() {
  if (S.stream) S.stream.abort();
  const controller = new AbortController();
  S.stream = controller;
  let delay = 500;
  while (!controller.signal.aborted && S.token) {
    try {
      const response = await fetch(API + "/stream", {
        headers: { Authorization: `Bearer ${S.token}` }, signal: controller.signal });
      if (response.status === 401) { logout(t("Your session has ended.")); return; }
      if (!response.ok) throw new Error(response.statusText);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      delay = 500;
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          let name = "", data = "";
          for (const line of block.split("\n")) {
            if (line.startsWith("event: ")) name = line.slice(7);
            else if (line.startsWith("data: ")) data += line.slice(6);
          }
          if (name) onMessage(name, data ? JSON.parse(data) : {});
        }
      }
    } catch (err) {
      if (controller.signal.aborted) return;
    }
    setLive(false);
    await new Promise(r => setTimeout(r, delay));
    delay = Math.min(delay * 2, 8000);
  }
}

let assetsReload = null; // one reload of the fleet for a burst of alarm changes
function onMessage(name, data) {
  if (name === "logout") { logout(t("Your session has ended.")); return; }
  if (name === "hello") { setLive(true); if (S.view && S.view.reload) S.view.reload(); return; }
  if (name === "resync") { loadAssets().then(() => S.view && S.view.reload && S.view.reload()); return; }
  if (name === "state") {
    S.assets.set(data.asset.id, data.asset);
    for (const arrived of loadsInFlight) arrived.set(data.asset.id, data.asset);
    if (S.view && S.view.onState) S.view.onState(data.asset);
    return;
  }
  if (name === "alert") {
    if (S.view && S.view.onAlert) S.view.onAlert(data.alert);
    if (data.alert.kind === "incident") refreshIncidentDevices();
    // an alarm or an escalation changes a tile's status: read the fleet again, once a burst
    if (!assetsReload) {
      assetsReload = setTimeout(() => {
        assetsReload = null;
        loadAssets().then(() => { if (S.view && S.view.onFleet) S.view.onFleet(); });
      }, 300);
    }
    return;
  }
  if (name === "maintenance" && S.view && S.view.name === "maintenance") { S.view.reload(); return; }
  if (name === "event" && S.view && S.view.onEvent) S.view.onEvent(data.event);
}

// ---- data -------------------------------------------------------------------------------------

// Updates that arrive while a snapshot is loading are kept and applied on top of it: the
// snapshot's query may have run before they were committed.
const loadsInFlight = new Set();

async function loadAssets() {
  const arrived = new Map();
  loadsInFlight.add(arrived);
  try {
    const page = await api("/assets?limit=2000&state=summary");
    S.assets = new Map(page.items.map(a => [a.id, a]));
    for (const [id, asset] of arrived) S.assets.set(id, asset);
  } finally {
    loadsInFlight.delete(arrived);
  }
  // the header clock shows the zone of most of the user's sites
  const zones = new Map();
  for (const a of S.assets.values()) zones.set(a.timezone, (zones.get(a.timezone) || 0) + 1);
  if (zones.size) S.zone = [...zones.entries()].sort((a, b) => b[1] - a[1])[0][0];
}

async function refreshIncidentDevices() {
  if (!S.available.incidents) return;
  try {
    const open = await api("/incidents");
    S.incidentDevices = new Set(open.map(i => i.device_id));
    if (S.view && S.view.onFleet) S.view.onFleet();
  } catch (_) { /* shown elsewhere */ }
}

// ---- views ------------------------------------------------------------------------------------

const VIEWS = {
  fleet: { label: "Fleet", roles: null, render: renderFleet },
  map: { label: "Map", roles: null, render: renderMap },
  incidents: { label: "Incidents", roles: null, render: renderIncidents, needs: "incidents" },
  alarms: { label: "Alarms", roles: null, render: renderAlarms },
  maintenance: { label: "Maintenance", roles: null, render: renderMaintenance, needs: "maintenance" },
  "work-orders": { label: "Work orders", roles: null, render: renderWorkOrders, needs: "work_orders" },
  complaints: { label: "Complaints", roles: null, render: renderComplaints, needs: "work_orders" },
  reports: { label: "Reports", roles: null, render: renderReports, needs: "reports" },
  audit: { label: "Audit log", roles: AUDITORS, render: renderAudit },
  asset: { label: null, roles: null, render: renderAsset },
};

function buildNav() {
  const nav = document.getElementById("nav");
  nav.textContent = "";
  for (const [name, view] of Object.entries(VIEWS)) {
    if (!view.label || (view.roles && !can(view.roles))) continue;
    if (view.needs && !S.available[view.needs]) continue;
    nav.append(h("a", { href: `#/${name}`, id: `nav-${name}`, dataset: { view: name } }, t(view.label)));
  }
  document.getElementById("logout").textContent = t("Log out");
  document.getElementById("who").textContent = `${S.user.username} (${word(S.user.role)})`;
  document.getElementById("lang-slot").replaceChildren(langPicker("lang"));
}

// A view's reloads overlap (a filter change, a live alert, a reconnect's resync) and their answers
// may come back in any order: `ctx.newest(promise)` settles only if no later call was made in
// the meantime; an older answer never settles, so it cannot overwrite what a newer one drew.
function newestOnly() {
  let newest = 0;
  const never = new Promise(() => {});
  return (promise) => {
    const mine = ++newest;
    return promise.then(value => mine === newest ? value : never,
      err => mine === newest ? Promise.reject(err) : never);
  };
}

function route() {
  if (!S.user) return;
  const [, name = "fleet", ...rest] = (location.hash || "#/fleet").split("/");
  const view = VIEWS[name] || VIEWS.fleet;
  if (S.view && S.view.timer) clearInterval(S.view.timer);
  for (const link of document.querySelectorAll("#nav a")) {
    link.classList.toggle("active", link.dataset.view === name);
  }
  const main = document.getElementById("view");
  main.textContent = "";
  S.view = { name, arg: decodeURIComponent(rest.join("/")), newest: newestOnly() };
  view.render(main, S.view);
}

function statusOf(asset) {
  return S.incidentDevices.has(asset.id) ? "entrapment" : (asset.status || "ok");
}
function legend() {
  return h("span", { class: "legend", id: "status-legend" },
    ...STATUSES.map(s => h("span", {}, h("i", { class: `dot s-${s}` }), word(s))));
}

// Fleet grid: each tile coloured by the worst open condition of its asset.
function renderFleet(main, ctx) {
  const kind = h("select", { id: "kind-filter", onchange: () => draw() },
    h("option", { value: "" }, t("all kinds")),
    ...Object.keys(KEY_METRICS).map(k => h("option", { value: k }, kindName(k))));
  const search = h("input", { id: "search", placeholder: t("search id"), oninput: () => draw() });
  const counts = h("span", { class: "muted", id: "fleet-count" });
  const grid = h("div", { class: "grid", id: "fleet-grid" });
  main.append(h("h1", {}, t("Fleet")), h("div", { class: "toolbar" }, kind, search, counts), legend(), grid);

  function tile(asset) {
    const status = statusOf(asset);
    const floor = asset.kind === "elevator" && asset.state.floor ? t("floor {n}", { n: asset.state.floor.value }) : kindName(asset.kind);
    const why = asset.alarm ? word(asset.alarm.type) : asset.escalation && status !== "ok" ? word(asset.escalation) : "";
    return h("a", { class: `tile s-${status}`, href: `#/asset/${encodeURIComponent(asset.id)}`,
                    dataset: { device: asset.id, condition: asset.condition, status }, title: [word(status), why].filter(Boolean).join(": ") },
      h("span", { class: "id" }, asset.id),
      h("span", { class: "sub" }, asset.site_name),
      h("span", { class: "sub" }, `${floor} · ${word(status)}`));
  }
  function draw() {
    const k = kind.value, q = search.value.toLowerCase();
    const shown = [...S.assets.values()].filter(a => (!k || a.kind === k) && a.id.toLowerCase().includes(q));
    grid.replaceChildren(...shown.map(tile));
    counts.textContent = t("{shown} of {total} assets", { shown: shown.length, total: S.assets.size });
  }
  ctx.onState = (asset) => {
    const old = grid.querySelector(`[data-device="${CSS.escape(asset.id)}"]`);
    if (old) old.replaceWith(tile(asset)); else draw();
  };
  ctx.onFleet = draw;
  ctx.reload = () => loadAssets().then(draw);
  draw();
}

// Dispatch map: the sites from the registry's coordinates, projected on an SVG (no tile
// server), coloured by their worst asset; live incidents; on-call technicians.
function renderMap(main, ctx) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("id", "dispatch-map");
  svg.setAttribute("viewBox", "0 0 1000 600");
  const side = h("div", { class: "card", id: "map-side" });
  main.append(h("h1", {}, t("Dispatch map")), legend(), h("div", { class: "map-split" }, h("div", { class: "card map" }, svg), side));
  let incidents = [], technicians = [];

  function el(name, attrs, text) {
    const node = document.createElementNS("http://www.w3.org/2000/svg", name);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text) node.textContent = text;
    return node;
  }
  function draw() {
    const sites = new Map();
    for (const a of S.assets.values()) {
      const site = sites.get(a.site_id) || { id: a.site_id, name: a.site_name, lat: a.latitude, lon: a.longitude, assets: [] };
      site.assets.push(a);
      sites.set(a.site_id, site);
    }
    const points = [...sites.values(), ...technicians.map(p => ({ lat: p.latitude, lon: p.longitude }))];
    if (!points.length) { svg.replaceChildren(el("text", { x: 20, y: 40 }, t("no sites"))); return; }
    // equirectangular projection fitted to the points, longitudes scaled by the latitude
    const lats = points.map(p => p.lat), lons = points.map(p => p.lon);
    const midLat = (Math.min(...lats) + Math.max(...lats)) / 2;
    const k = Math.cos(midLat * Math.PI / 180);
    const x0 = Math.min(...lons) * k, x1 = Math.max(...lons) * k, y0 = Math.min(...lats), y1 = Math.max(...lats);
    const span = Math.max(x1 - x0, y1 - y0, 0.01);
    const scale = Math.min(900 / span, 500 / span);
    const X = lon => 50 + (lon * k - x0) * scale + (900 - (x1 - x0) * scale) / 2;
    const Y = lat => 550 - (lat - y0) * scale - (500 - (y1 - y0) * scale) / 2;
    const nodes = [el("rect", { x: 0, y: 0, width: 1000, height: 600, class: "map-bg" })];
    for (const site of sites.values()) {
      const worst = STATUSES.find(s => site.assets.some(a => statusOf(a) === s)) || "ok";
      const g = el("g", { class: "site", "data-site": site.id, "data-status": worst });
      const link = el("a", { href: `#/fleet` });
      link.append(el("circle", { cx: X(site.lon), cy: Y(site.lat), r: 9, class: `s-${worst}` }),
        el("text", { x: X(site.lon) + 12, y: Y(site.lat) + 4 }, `${site.name} (${site.assets.length})`));
      link.append(el("title", {}, `${site.name}: ${word(worst)}`));
      g.append(link);
      nodes.push(g);
    }
    for (const p of technicians) {
      const g = el("g", { class: "technician", "data-technician": p.technician_id });
      g.append(el("rect", { x: X(p.longitude) - 5, y: Y(p.latitude) - 5, width: 10, height: 10 }),
        el("title", {}, `${p.name} · ${p.reported_at ? `${t("last known position")} ${fmtTime(p.reported_at)}` : t("home base")}`));
      nodes.push(g);
    }
    for (const incident of incidents) {
      const asset = S.assets.get(incident.device_id);
      if (!asset) continue;
      const link = el("a", { href: `#/incidents/${incident.id}`, class: "incident-marker", "data-incident": incident.id });
      link.append(el("circle", { cx: X(asset.longitude), cy: Y(asset.latitude), r: 16, class: "pulse" }),
        el("title", {}, `${t("Incident")} ${incident.id}: ${incident.device_id} · ${word(incident.status)}`));
      nodes.push(link);
    }
    svg.replaceChildren(...nodes);
    side.replaceChildren(h("h2", {}, t("Open incidents")),
      incidents.length ? h("ul", { id: "map-incidents" }, ...incidents.map(i => h("li", {},
        h("a", { href: `#/incidents/${i.id}`, dataset: { incident: i.id } }, `#${i.id} ${i.device_id}`), " ", badge(i.status),
        h("div", { class: "muted" }, i.site_name, " · ", t("on site by"), " ", fmtTime(i.arrival_deadline, zoneOf(i.device_id))))))
        : h("p", { class: "muted" }, t("no open incidents")),
      h("h2", {}, t("On-call technicians")),
      technicians.length ? h("ul", {}, ...technicians.map(p => h("li", { dataset: { technician: p.technician_id } }, p.name, h("div", { class: "muted" }, p.reported_at ? `${t("last known position")} ${fmtTime(p.reported_at)}` : t("home base")))))
        : h("p", { class: "muted" }, t("no position reported")));
  }
  ctx.reload = async () => {
    try {
      [incidents, technicians] = await ctx.newest(Promise.all([
        S.available.incidents ? api("/incidents") : [],
        S.available.incidents ? api("/incidents/technicians").catch(() => []) : []]));
    } catch (err) { toast(err.message); }
    draw();
  };
  ctx.onFleet = draw;
  ctx.onState = () => draw();
  ctx.onAlert = (alert) => { if (alert.kind === "incident") ctx.reload(); };
  ctx.reload();
}

// Alarms to acknowledge and clear.
function renderAlarms(main, ctx) {
  const which = h("select", { id: "alarm-state", onchange: () => ctx.reload() },
    h("option", { value: "open" }, t("open")), h("option", { value: "cleared" }, t("cleared")));
  const body = h("tbody", { id: "alarm-rows" });
  main.append(h("h1", {}, t("Alarms")), h("div", { class: "toolbar" }, which),
    h("table", {}, headRow(["raised", "source", "type", "severity", "state", "message", ""]), body));

  async function act(alarm, action) {
    try {
      let payload;
      if (action === "clear") {
        const reason = prompt(t("Clear alarm {id}: reason", { id: alarm.id }), "");
        if (reason === null) return;
        payload = { reason };
      }
      await api(`/alarms/${alarm.id}/${action}`, { method: "POST", body: payload });
      toast(t(action === "clear" ? "alarm {id} cleared" : "alarm {id} acknowledged", { id: alarm.id }));
      ctx.reload();
    } catch (err) { toast(err.message); }
  }
  function row(alarm) {
    const source = alarm.device_id ? assetLink(alarm.device_id) : `${word(alarm.source_type)} ${alarm.source_id}`;
    return h("tr", { dataset: { alarm: alarm.id } },
      h("td", {}, timeCell(alarm.last_triggered_at, alarm.device_id)), h("td", {}, source),
      h("td", { title: alarm.type }, word(alarm.type)),
      h("td", {}, badge(alarm.severity)), h("td", {}, badge(alarm.state)), h("td", {}, alarm.message),
      h("td", { class: "actions" },
        can(RESPONDERS) && alarm.state === "active" ? h("button", { onclick: () => act(alarm, "acknowledge") }, t("Acknowledge")) : null,
        can(RESPONDERS) && alarm.state !== "cleared" ? h("button", { class: "secondary", onclick: () => act(alarm, "clear") }, t("Clear")) : null));
  }
  ctx.reload = async () => {
    const q = which.value === "open" ? "" : "?state=cleared";
    const alarms = await ctx.newest(api(`/alarms${q}`));
    body.replaceChildren(...(alarms.length ? alarms.map(row) : [emptyRow(7, "no alarms")]));
  };
  ctx.onAlert = (alert) => { if (alert.kind === "alarm") ctx.reload(); };
  ctx.reload();
}

// ---- rescue incidents (rules R1-R6) ------------------------------------------------------------

const INCIDENT_NEXT = { reported: ["dispatch"], dispatched: ["accept"], accepted: ["check-in"],
                        arrived: ["release"], released: ["close"] };
const INCIDENT_LABEL = { dispatch: "Dispatch", accept: "Accept", "check-in": "Check in", release: "Release",
                         close: "Close", "false-alarm": "False alarm" };

function reportDialog(done) {
  const elevators = [...S.assets.values()].filter(a => a.kind === "elevator");
  const device = h("select", { name: "device_id", id: "report-device" }, ...elevators.map(a => h("option", { value: a.id }, `${a.id} · ${a.site_name}`)));
  const note = h("input", { name: "note", id: "report-note", placeholder: t("caller, floor, details") });
  const dialog = h("dialog", { id: "report-dialog" }, h("form", { method: "dialog" },
    h("h2", {}, t("Report an entrapment (phone call)")), device, note,
    h("div", { class: "toolbar" }, h("button", { value: "ok", id: "report-submit" }, t("Report")), h("button", { value: "cancel", class: "secondary" }, t("Cancel")))));
  dialog.addEventListener("close", async () => {
    dialog.remove();
    if (dialog.returnValue !== "ok") return;
    try {
      const out = await api("/incidents", { method: "POST", body: { device_id: device.value, note: note.value } });
      toast(out.created ? t("entrapment reported at {device}", { device: device.value }) : t("attached to open incident {id}", { id: out.incident.id }));
      done();
    } catch (err) { toast(err.message); }
  });
  document.body.append(dialog);
  dialog.showModal();
}

function checkInDialog(incident, done) {
  // rule R6: only a measured position proves arrival. The browser's geolocation supplies it
  // when the technician checks in on their own device; nothing is ever pre-filled. Without
  // a position the arrival is recorded as unproven (the duty line taking a phone call).
  const lat = h("input", { name: "latitude", id: "checkin-lat", value: "", inputmode: "decimal" });
  const lon = h("input", { name: "longitude", id: "checkin-lon", value: "", inputmode: "decimal" });
  const note = h("p", { id: "checkin-note", class: "muted" }, t("Asking this device for its position…"));
  const dialog = h("dialog", { id: "checkin-dialog" }, h("form", { method: "dialog" },
    h("h2", {}, t("Check in at {device}", { device: incident.device_id })), note,
    h("label", {}, t("Measured latitude"), " ", lat), h("label", {}, t("longitude"), " ", lon),
    h("div", { class: "toolbar" }, h("button", { value: "ok", id: "checkin-submit" }, t("Check in")), h("button", { value: "cancel", class: "secondary" }, t("Cancel")))));
  const unproven = (why) => { note.textContent = `${t(why)}: ${t("the arrival will be recorded as unproven unless a measured position is entered.")}`; };
  if (navigator.geolocation) {
    navigator.geolocation.getCurrentPosition(
      (pos) => { lat.value = pos.coords.latitude.toFixed(6); lon.value = pos.coords.longitude.toFixed(6); note.textContent = t("Position measured by this device (±{m} m).", { m: Math.round(pos.coords.accuracy) }); },
      () => unproven("No position from this device"), { timeout: 10000, maximumAge: 0 });
  } else unproven("This browser cannot measure a position");
  dialog.addEventListener("close", () => {
    dialog.remove();
    if (dialog.returnValue !== "ok") return;
    const measured = lat.value.trim() !== "" && lon.value.trim() !== "";
    incidentAction(incident, "check-in", measured ? { latitude: Number(lat.value), longitude: Number(lon.value) } : {}, done);
  });
  document.body.append(dialog);
  dialog.showModal();
}

async function incidentAction(incident, action, payload, done) {
  if (action === "check-in" && !payload) return checkInDialog(incident, done);
  if (action === "false-alarm") {
    const reason = prompt(t("Incident {id}: why was nobody trapped?", { id: incident.id }), "");
    if (!reason) return;
    payload = { reason };
  }
  try {
    const out = await api(`/incidents/${incident.id}/${action}`, { method: "POST", body: payload });
    toast(t("incident {id}: {status}", { id: incident.id, status: word(out.status) }));
    done();
  } catch (err) { toast(err.message); }
}

function incidentButtons(incident, done) {
  let actions = [];
  if (can(RESPONDERS)) {
    actions = (INCIDENT_NEXT[incident.status] || []).filter(a => a !== "dispatch" || S.user.role !== "technician");
    if (["reported", "dispatched", "accepted", "arrived"].includes(incident.status)) actions = [...actions, "false-alarm"];
  }
  return actions.map(a => h("button", { class: a === "false-alarm" ? "secondary" : null,
    onclick: () => incidentAction(incident, a, undefined, done), dataset: { action: a } }, t(INCIDENT_LABEL[a])));
}

function tickCountdowns(root) {
  const now = platformNow();
  for (const el of root.querySelectorAll(".countdown")) {
    const left = Number(el.dataset.deadline) - now;
    el.textContent = left >= 0 ? fmtDuration(left) : `${t("late")} ${fmtDuration(-left)}`;
    el.classList.toggle("late", left < 0);
  }
}

// Open incidents with a live countdown to the arrival deadline (rule R2); the history of the
// closed ones, searchable; one incident's timeline at #/incidents/ID.
function renderIncidents(main, ctx) {
  if (ctx.arg) return renderIncident(main, ctx);
  const which = h("select", { id: "incident-which", onchange: () => ctx.reload() },
    h("option", { value: "open" }, t("open")), h("option", { value: "all" }, t("history")));
  const search = h("input", { id: "incident-search", placeholder: t("search asset, site, technician"), oninput: () => draw() });
  const body = h("tbody", { id: "incident-rows" });
  const report = h("button", { id: "report-incident", onclick: () => reportDialog(() => ctx.reload()) }, t("Report entrapment"));
  main.append(h("h1", {}, t("Rescue incidents")),
    h("div", { class: "toolbar" }, can(["admin", "firm_manager", "dispatcher", "technician", "safety_manager"]) ? report : null, which, search,
      h("span", { class: "muted" }, t("arrival deadlines count down on the platform clock"))),
    h("table", {}, headRow(["#", "asset", "reported", "status", "technician", "arrival deadline", "time left", ""]), body));
  let incidents = [];

  function row(incident) {
    const zone = zoneOf(incident.device_id);
    const left = h("span", { class: "countdown", dataset: { deadline: Date.parse(incident.arrival_deadline) } });
    return h("tr", { dataset: { incident: incident.id, status: incident.status } },
      h("td", { class: "num" }, h("a", { href: `#/incidents/${incident.id}`, class: "incident-link" }, incident.id)),
      h("td", {}, assetLink(incident.device_id), h("div", { class: "muted" }, incident.site_name)),
      h("td", {}, fmtTime(incident.reported_at, zone)),
      h("td", {}, badge(incident.status), incident.breached ? [" ", badge("breached")] : null),
      h("td", {}, incident.technician_name || "—", incident.accept_by && !incident.closed_at ? h("div", { class: "muted" }, t("accept by"), " ", fmtTime(incident.accept_by, zone)) : null),
      h("td", {}, fmtTime(incident.arrival_deadline, zone)),
      h("td", {}, incident.arrived_at ? `${t("arrived")} ${fmtTime(incident.arrived_at, zone)}` : incident.closed_at ? "—" : left),
      h("td", { class: "actions" }, incidentButtons(incident, () => ctx.reload())));
  }
  function draw() {
    const q = search.value.trim().toLowerCase();
    const shown = incidents.filter(i => !q || [i.device_id, i.site_name, i.technician_name || "", String(i.id)].some(v => v.toLowerCase().includes(q)));
    body.replaceChildren(...(shown.length ? shown.map(row) : [emptyRow(8, which.value === "open" ? "no open incidents" : "no incidents")]));
    tickCountdowns(body);
  }
  ctx.reload = async () => {
    const all = which.value === "all";
    const answer = await ctx.newest(api(all ? "/incidents?which=all&limit=2000" : "/incidents"));
    incidents = all ? answer.filter(i => i.closed_at) : answer;
    draw();
  };
  ctx.onAlert = (alert) => { if (alert.kind === "incident") ctx.reload(); };
  ctx.timer = setInterval(() => tickCountdowns(body), 250);
  ctx.reload();
}

function renderIncident(main, ctx) {
  const head = h("div", { id: "incident-detail" });
  const steps = h("tbody", { id: "incident-steps" });
  const dispatches = h("tbody", { id: "incident-dispatches" });
  main.append(h("p", {}, h("a", { href: "#/incidents" }, `← ${t("Rescue incidents")}`)), head,
    h("h2", {}, t("Timeline")), h("table", {}, headRow(["when", "step", "who", "details"]), steps),
    h("h2", {}, t("Dispatches")), h("table", {}, headRow(["technician", "rank", "estimated arrival", "accept by", "outcome"]), dispatches));
  // a step's details as labelled fields (times in the site's zone); the rescue "tier" is the
  // area of the deadline (city or elsewhere), not a maintenance tier
  function detailText(detail, zone) {
    const shown = Object.fromEntries(Object.entries(detail || {}).filter(([k]) => k !== "device_id")
      .map(([k, v]) => [k === "tier" ? "area" : k, v]));
    return fieldsOf(shown, zone).map(([k, v]) => `${k}: ${v}`).join(" · ");
  }
  ctx.reload = async () => {
    const incident = await ctx.newest(api(`/incidents/${encodeURIComponent(ctx.arg)}`));
    const zone = zoneOf(incident.device_id);
    const deadline = h("span", { class: "countdown", dataset: { deadline: Date.parse(incident.arrival_deadline) } });
    head.replaceChildren(
      h("h1", {}, t("Incident {id}", { id: incident.id }), " · ", assetLink(incident.device_id)),
      h("p", { dataset: { status: incident.status }, id: "incident-status" }, badge(incident.status), incident.breached ? [" ", badge("breached")] : null,
        " ", incident.site_name, " · ", word(incident.trigger), " · ", t("zone {zone}", { zone })),
      h("div", { class: "card kv" },
        h("span", { class: "muted" }, t("reported")), h("span", {}, fmtTime(incident.reported_at, zone)),
        h("span", { class: "muted" }, t("arrival deadline")), h("span", {}, fmtTime(incident.arrival_deadline, zone), " ",
          incident.arrived_at || incident.closed_at ? "" : deadline, ` (${t("{n} minutes", { n: incident.deadline_minutes })})`),
        h("span", { class: "muted" }, t("technician")), h("span", {}, incident.technician_name || "—"),
        h("span", { class: "muted" }, t("arrived")), h("span", {}, incident.arrived_at ? fmtTime(incident.arrived_at, zone) : "—",
          incident.arrived_at && incident.arrival_proven === false ? [" ", badge("unproven")] : null),
        h("span", { class: "muted" }, t("closed")), h("span", {}, fmtTime(incident.closed_at, zone))),
      h("div", { class: "toolbar" }, incidentButtons(incident, () => ctx.reload())));
    steps.replaceChildren(...incident.steps.map(s => h("tr", { dataset: { step: s.step } },
      h("td", {}, fmtTime(s.at, zone)), h("td", {}, badge(s.step)), h("td", {}, s.actor), h("td", {}, detailText(s.detail, zone)))));
    dispatches.replaceChildren(...(incident.dispatches.length ? incident.dispatches.map(d => h("tr", {},
      h("td", {}, d.technician_name), h("td", { class: "num" }, d.rank), h("td", {}, fmtTime(d.estimated_arrival, zone)),
      h("td", {}, fmtTime(d.accept_by, zone)), h("td", {}, d.outcome ? [badge(d.outcome), " ", fmtTime(d.outcome_at, zone)] : t("awaiting an answer"))))
      : [emptyRow(5, "nobody dispatched yet")]));
    tickCountdowns(head);
  };
  ctx.onAlert = (alert) => { if (alert.kind === "incident") ctx.reload(); };
  ctx.timer = setInterval(() => tickCountdowns(head), 250);
  ctx.reload().catch(err => head.replaceChildren(h("p", { class: "error" }, err.message)));
}

// Maintenance: due and overdue lists (M1, M5, M6), records with verdicts (M3) and sign-off (M4).
function renderMaintenance(main, ctx) {
  const due = h("tbody", { id: "due-rows" });
  const records = h("tbody", { id: "record-rows" });
  main.append(h("h1", {}, t("Maintenance")),
    h("h2", {}, t("Due, overdue and locked out")),
    h("table", {}, headRow(["asset", "site", "firm", "state", "since", "overdue since", "overdue tiers", ""]), due),
    h("h2", {}, t("Recent records")),
    h("table", {}, headRow(["#", "asset", "tier", "visit", "technician", "verdict", "signed off", ""]), records));

  async function override(item) {
    const reason = prompt(t("Override the {state} of {device}: reason (logged)", { state: word(item.state), device: item.device_id }), "");
    if (!reason) return;
    try {
      const out = await api(`/maintenance/lockouts/${encodeURIComponent(item.device_id)}/override`, { method: "POST", body: { reason } });
      toast(`${out.device_id}: ${word(out.state)}`);
      ctx.reload();
    } catch (err) { toast(err.message); }
  }
  async function signOff(record) {
    try {
      await api(`/maintenance/records/${record.id}/sign-off`, { method: "POST" });
      toast(t("record {id} signed off", { id: record.id }));
      ctx.reload();
    } catch (err) { toast(err.message); }
  }
  function dueRow(item) {
    const zone = zoneOf(item.device_id);
    const overridable = can(AUDITORS) && ["overdue", "lockout_pending", "lockout_recommended", "locked_out"].includes(item.state);
    return h("tr", { dataset: { device: item.device_id, state: item.state } },
      h("td", {}, assetLink(item.device_id)),
      h("td", {}, item.site_name), h("td", {}, item.firm_name || "—"), h("td", {}, badge(item.state)),
      h("td", {}, fmtTime(item.since, zone)), h("td", {}, fmtTime(item.overdue_since, zone)),
      h("td", {}, (item.overdue_tiers || []).map(word).join(", ") || "—"),
      h("td", { class: "actions" }, overridable ? h("button", { class: "secondary", onclick: () => override(item) }, t("Override lockout")) : null));
  }
  function recordRow(r) {
    const zone = zoneOf(r.device_id);
    const canSign = S.user.role === "safety_manager" && !r.signed_off_at && !r.corrected_by_id;
    return h("tr", { dataset: { record: r.id } },
      h("td", { class: "num" }, r.id),
      h("td", {}, assetLink(r.device_id)),
      h("td", {}, word(r.tier), r.corrects_id ? h("div", { class: "muted" }, t("corrects #{id}", { id: r.corrects_id })) : null),
      h("td", {}, `${fmtTime(r.claimed_start, zone)} → ${fmtTime(r.claimed_end, zone)}`),
      h("td", {}, r.technician_name), h("td", {}, r.verdict ? badge(r.verdict) : h("span", { class: "muted" }, t("pending")),
        r.corrected_by_id ? h("div", { class: "muted" }, t("corrected by #{id}", { id: r.corrected_by_id })) : null),
      h("td", {}, r.signed_off_at ? `${r.signed_off_by}, ${fmtTime(r.signed_off_at, zone)}` : "—"),
      h("td", { class: "actions" }, canSign ? h("button", { onclick: () => signOff(r) }, t("Sign off")) : null));
  }
  ctx.reload = async () => {
    const [items, recent] = await ctx.newest(Promise.all([api("/maintenance/due"), api("/maintenance/records?limit=50")]));
    due.replaceChildren(...(items.length ? items.map(dueRow) : [emptyRow(8, "nothing due")]));
    records.replaceChildren(...(recent.length ? recent.map(recordRow) : [emptyRow(8, "no records")]));
  };
  ctx.reload();
}

// Work orders (rules S1-S6): the queue with countdowns to each deadline, filters, one order's
// timeline, the callbacks due (S4).
const WO_DEADLINES = [["respond_by", "responded_at", "respond"], ["on_site_by", "on_site_at", "on site"], ["restore_by", "resolved_at", "restore"]];
const WO_NEXT = { opened: ["respond", "assign", "cancel"], assigned: ["accept", "assign", "cancel"],
                  accepted: ["check-in", "cancel"], on_site: ["resolve", "cancel"], resolved: ["callback"] };
const WO_LABEL = { respond: "Answer", assign: "Assign", accept: "Accept", "check-in": "Check in",
                   resolve: "Resolve", callback: "Call back", cancel: "Cancel" };

function countdownCell(deadline, metAt, zone) {
  if (!deadline) return h("td", { class: "muted" }, "—");
  if (metAt) return h("td", { class: Date.parse(metAt) > Date.parse(deadline) ? "late" : "muted" }, `${t("done")} ${fmtTime(metAt, zone)}`);
  return h("td", {}, h("span", { class: "countdown", dataset: { deadline: Date.parse(deadline) } }), h("div", { class: "muted" }, fmtTime(deadline, zone)));
}

async function workOrderAction(order, action, done) {
  let body = {};
  if (action === "assign") {
    const who = prompt(t("Work order {id}: technician id (a qualified technician of the firm)", { id: order.id }), order.technician_id || "");
    if (!who) return;
    body = { technician_id: Number(who) };
  } else if (action === "check-in") {
    // only the technician's own measured position (or inspection mode at the lift) proves it
    const pos = await new Promise((resolve) => {
      if (!navigator.geolocation) return resolve(null);
      navigator.geolocation.getCurrentPosition((p) => resolve(p.coords), () => resolve(null), { timeout: 10000, maximumAge: 0 });
    });
    body = pos ? { latitude: pos.latitude, longitude: pos.longitude } : {};
  } else if (action === "callback") {
    const reached = confirm(t("Work order {id}: did the call reach the customer?", { id: order.id }));
    body = { reached };
    if (reached) {
      const score = prompt(t("Satisfaction, 1 (poor) to 5"), "5");
      if (!score) return;
      body.satisfaction = Number(score);
    }
  } else if (action === "cancel") {
    const reason = prompt(t("Work order {id}: why is the work not needed?", { id: order.id }), "");
    if (!reason) return;
    body = { reason };
  }
  try {
    const out = await api(`/work-orders/${order.id}/${action}`, { method: "POST", body });
    toast(t("work order {id}: {status}", { id: order.id, status: word(out.status) }));
    done();
  } catch (err) { toast(err.message); }
}

function deviceOptions(id) {
  return h("select", { name: "device_id", id }, ...[...S.assets.values()].map(a => h("option", { value: a.id }, `${a.id} · ${a.site_name}`)));
}

function renderWorkOrders(main, ctx) {
  if (ctx.arg) return renderWorkOrder(main, ctx);
  const which = h("select", { id: "wo-which", onchange: () => ctx.reload() },
    ...[["open", "open"], ["resolved", "awaiting callback"], ["all", "all"]].map(([v, label]) => h("option", { value: v }, t(label))));
  const level = h("select", { id: "wo-level", onchange: () => ctx.reload() },
    h("option", { value: "" }, t("every level")), ...[1, 2, 3, 4].map(l => h("option", { value: l }, t("level {n}", { n: l }))));
  const body = h("tbody", { id: "work-order-rows" });
  const calls = h("tbody", { id: "callback-rows" });
  const open = h("button", { id: "open-work-order", onclick: () => openDialog() }, t("Open work order"));
  main.append(h("h1", {}, t("Work orders")),
    h("div", { class: "toolbar" }, can([...RESPONDERS, "safety_manager"]) ? open : null, which, level,
      h("span", { class: "muted" }, t("deadlines (rule S1) count down on the platform clock"))),
    h("table", {}, headRow(["#", "asset", "work", "level", "status", "respond", "on site", "restore", ""]), body),
    h("h2", {}, t("Callbacks due (rule S4)")),
    h("table", {}, headRow(["#", "asset", "work", "resolved", "unreached calls", ""]), calls));

  function openDialog() {
    const device = deviceOptions("wo-device");
    const kind = h("select", { name: "kind", id: "wo-kind" }, ...["fault_repair", "emergency_repair", "lamp_replacement", "mast_relamping", "meter_fault", "inspection_task", "complaint_follow_up", "corrective_work"].map(k => h("option", { value: k }, word(k))));
    const lvl = h("select", { name: "level", id: "wo-new-level" }, ...[1, 2, 3, 4].map(l => h("option", { value: l, selected: l === 3 }, t("level {n}", { n: l }))));
    const origin = h("select", { name: "origin", id: "wo-origin" }, ...["phone", "complaint", "patrol", "console"].map(o => h("option", { value: o }, word(o))));
    const title = h("input", { name: "title", id: "wo-title", placeholder: t("what is wrong"), required: true });
    const dialog = h("dialog", { id: "wo-dialog" }, h("form", { method: "dialog" },
      h("h2", {}, t("Open a work order")), device, kind, lvl, origin, title,
      h("div", { class: "toolbar" }, h("button", { value: "ok", id: "wo-submit" }, t("Open")), h("button", { value: "cancel", class: "secondary" }, t("Cancel")))));
    dialog.addEventListener("close", async () => {
      dialog.remove();
      if (dialog.returnValue !== "ok" || !title.value.trim()) return;
      try {
        const out = await api("/work-orders", { method: "POST", body: { device_id: device.value, kind: kind.value, level: Number(lvl.value), origin: origin.value, title: title.value } });
        toast(out.repeats ? t("counted on open work order {id}", { id: out.id }) : t("work order {id} opened", { id: out.id }));
        ctx.reload();
      } catch (err) { toast(err.message); }
    });
    document.body.append(dialog);
    dialog.showModal();
  }

  function row(order) {
    const zone = zoneOf(order.device_id);
    const actions = can(RESPONDERS) ? (WO_NEXT[order.status] || []).filter(a =>
      (a !== "check-in" || S.user.role === "technician") && (!["assign", "callback", "cancel"].includes(a) || S.user.role !== "technician")) : [];
    return h("tr", { dataset: { workOrder: order.id, status: order.status, level: order.level } },
      h("td", { class: "num" }, h("a", { href: `#/work-orders/${order.id}` }, order.id)),
      h("td", {}, assetLink(order.device_id)),
      h("td", {}, order.title, h("div", { class: "muted" }, word(order.kind), order.repeats ? ` · ×${order.repeats + 1}` : "", order.repeat_of ? ` · ${t("repeat of #{id}", { id: order.repeat_of })}` : "")),
      h("td", {}, t("level {n}", { n: order.level }), h("div", { class: "muted" }, word(order.zone))),
      h("td", {}, badge(order.status), ...order.breaches.map(b => [" ", h("span", { class: "badge breached" }, t("missed {deadline}", { deadline: word(b) }))])),
      ...WO_DEADLINES.map(([due, met]) => countdownCell(order[due], order[met], zone)),
      h("td", { class: "actions" }, actions.map(a => h("button", { class: a === "cancel" ? "secondary" : null, dataset: { action: a },
        onclick: () => workOrderAction(order, a, () => ctx.reload()) }, t(WO_LABEL[a])))));
  }
  function callRow(due) {
    return h("tr", { dataset: { callback: due.work_order_id } },
      h("td", { class: "num" }, h("a", { href: `#/work-orders/${due.work_order_id}` }, due.work_order_id)),
      h("td", {}, due.device_id), h("td", {}, due.title), h("td", {}, fmtTime(due.resolved_at, zoneOf(due.device_id))),
      h("td", { class: "num" }, due.attempts),
      h("td", { class: "actions" }, can(["admin", "firm_manager", "dispatcher"]) ? h("button", {
        onclick: () => workOrderAction({ id: due.work_order_id }, "callback", () => ctx.reload()) }, t("Call back")) : null));
  }
  ctx.reload = async () => {
    const params = new URLSearchParams({ which: which.value });
    if (level.value) params.set("level", level.value);
    const [orders, due] = await ctx.newest(Promise.all([api(`/work-orders?${params}`), api("/work-orders/callbacks-due")]));
    body.replaceChildren(...(orders.length ? orders.map(row) : [emptyRow(9, "no work orders")]));
    calls.replaceChildren(...(due.length ? due.map(callRow) : [emptyRow(6, "nobody to call back")]));
    tickCountdowns(body);
  };
  ctx.onAlert = (alert) => { if (alert.kind === "work_order") ctx.reload(); };
  ctx.timer = setInterval(() => tickCountdowns(body), 250);
  ctx.reload();
}

function renderWorkOrder(main, ctx) {
  const head = h("div", { id: "work-order-detail" });
  const steps = h("tbody", { id: "work-order-steps" });
  main.append(h("p", {}, h("a", { href: "#/work-orders" }, `← ${t("Work orders")}`)), head,
    h("h2", {}, t("Timeline")),
    h("table", {}, headRow(["when", "step", "who", "note"]), steps));
  ctx.reload = async () => {
    const order = await ctx.newest(api(`/work-orders/${encodeURIComponent(ctx.arg)}`));
    const zone = zoneOf(order.device_id);
    head.replaceChildren(h("h1", {}, t("Work order {id}: {title}", { id: order.id, title: order.title })),
      h("p", {}, badge(order.status), " ", `${t("level {n}", { n: order.level })} · ${word(order.kind)} · `,
        assetLink(order.device_id),
        ` · ${t("profiles")} ${order.service_level.profiles.join(", ")}`, ...order.breaches.map(b => [" ", h("span", { class: "badge breached" }, t("missed {deadline}", { deadline: word(b) }))])),
      h("table", {}, h("tbody", {}, ...WO_DEADLINES.map(([due, met, label]) => h("tr", {}, h("th", {}, t(label)), countdownCell(order[due], order[met], zone))))));
    steps.replaceChildren(...order.steps.map(s => h("tr", { dataset: { step: s.step } },
      h("td", {}, fmtTime(s.at, zone)), h("td", {}, badge(s.step)), h("td", {}, s.actor),
      h("td", {}, s.note || (s.details.deadline ? t("missed {deadline}", { deadline: word(s.details.deadline) }) : "")))));
    tickCountdowns(head);
  };
  ctx.onAlert = (alert) => { if (alert.kind === "work_order" && String(alert.id) === ctx.arg) ctx.reload(); };
  ctx.timer = setInterval(() => tickCountdowns(head), 250);
  ctx.reload().catch(err => { head.replaceChildren(h("p", { class: "error" }, err.message)); });
}

// Complaints (rules S3, S5): the register, with the 24-hour answer and the 2-working-day outcome.
const COMPLAINT_NEXT = { registered: ["answer", "analysis"], analysed: ["answer", "analysis", "solution"],
                         solution_agreed: ["answer", "outcome", "close"] };
function renderComplaints(main, ctx) {
  const body = h("tbody", { id: "complaint-rows" });
  const which = h("select", { id: "complaint-which", onchange: () => ctx.reload() }, h("option", { value: "open" }, t("open")), h("option", { value: "all" }, t("all")));
  const register = h("button", { id: "register-complaint", onclick: () => registerDialog() }, t("Register complaint"));
  main.append(h("h1", {}, t("Complaints")),
    h("div", { class: "toolbar" }, can(["admin", "firm_manager", "dispatcher", "technician", "safety_manager"]) ? register : null, which,
      h("span", { class: "muted" }, t("answer within 24 h, the outcome within 2 working days (rule S3)"))),
    h("table", {}, headRow(["#", "asset", "complainant", "subject", "status", "answer", "outcome", ""]), body));

  function registerDialog() {
    const device = deviceOptions("complaint-device");
    const channel = h("select", { id: "complaint-channel" }, ...["phone", "email", "visit", "letter", "web", "regulator"].map(c => h("option", { value: c }, word(c))));
    const who = h("input", { id: "complaint-who", placeholder: t("complainant") });
    const contact = h("input", { id: "complaint-contact", placeholder: t("contact") });
    const subject = h("input", { id: "complaint-subject", placeholder: t("what it is about") });
    const dialog = h("dialog", { id: "complaint-dialog" }, h("form", { method: "dialog" },
      h("h2", {}, t("Register a complaint")), device, channel, who, contact, subject,
      h("div", { class: "toolbar" }, h("button", { value: "ok", id: "complaint-submit" }, t("Register")), h("button", { value: "cancel", class: "secondary" }, t("Cancel")))));
    dialog.addEventListener("close", async () => {
      dialog.remove();
      if (dialog.returnValue !== "ok" || !who.value.trim() || !subject.value.trim()) return;
      try {
        const out = await api("/complaints", { method: "POST", body: { device_id: device.value, channel: channel.value, complainant: who.value, contact: contact.value, subject: subject.value } });
        toast(t("complaint {id} registered", { id: out.id }));
        ctx.reload();
      } catch (err) { toast(err.message); }
    });
    document.body.append(dialog);
    dialog.showModal();
  }

  async function act(complaint, action) {
    let body = {};
    if (action === "analysis") {
      const cause = prompt(t("Complaint {id}: the cause", { id: complaint.id }), complaint.cause || "");
      if (!cause) return;
      const party = prompt(t("Responsible: firm, user_unit, manufacturer, third_party or none"), complaint.responsible_party || "firm");
      if (!party) return;
      body = { cause, responsible_party: party };
    } else if (action === "solution") {
      const solution = prompt(t("Complaint {id}: the solution agreed", { id: complaint.id }), "");
      if (!solution) return;
      const level = prompt(t("Follow-up work at level 1-4 (empty: none)"), "3");
      body = { solution, follow_up_level: level ? Number(level) : null };
    } else {
      body = { note: prompt(t("Complaint {id}: note", { id: complaint.id }), "") || "" };
    }
    try {
      const out = await api(`/complaints/${complaint.id}/${action}`, { method: "POST", body });
      toast(t("complaint {id}: {status}", { id: out.id, status: word(out.status) }));
      ctx.reload();
    } catch (err) { toast(err.message); }
  }
  function row(c) {
    const zone = zoneOf(c.device_id);
    const actions = can(["admin", "firm_manager", "dispatcher"]) ? (COMPLAINT_NEXT[c.status] || []) : [];
    return h("tr", { dataset: { complaint: c.id, status: c.status } },
      h("td", { class: "num" }, c.id),
      h("td", {}, assetLink(c.device_id)),
      h("td", {}, c.complainant, h("div", { class: "muted" }, word(c.channel))),
      h("td", {}, c.subject, c.work_order_id ? h("div", {}, h("a", { href: `#/work-orders/${c.work_order_id}` }, t("work order #{id}", { id: c.work_order_id }))) : null),
      h("td", {}, badge(c.status), ...c.breaches.map(b => [" ", h("span", { class: "badge breached" }, t("missed {deadline}", { deadline: word(b) }))])),
      countdownCell(c.answer_by, c.answered_at, zone), countdownCell(c.outcome_by, c.outcome_sent_at, zone),
      h("td", { class: "actions" }, actions.map(a => h("button", { dataset: { action: a }, onclick: () => act(c, a) }, word(a)))));
  }
  ctx.reload = async () => {
    const rows = await ctx.newest(api(`/complaints?which=${which.value}`));
    body.replaceChildren(...(rows.length ? rows.map(row) : [emptyRow(8, "no complaints")]));
    tickCountdowns(body);
  };
  ctx.timer = setInterval(() => tickCountdowns(body), 250);
  ctx.reload();
}

// One asset: live state, events, charts of recent telemetry.
function renderAsset(main, ctx) {
  const id = ctx.arg;
  const title = h("h1", {}, id);
  const info = h("div", { class: "card kv", id: "asset-info" });
  const stateTable = h("tbody", { id: "asset-state" });
  const events = h("tbody", { id: "asset-events" });
  const charts = h("div", { class: "charts", id: "asset-charts" });
  const range = h("select", { id: "chart-range", onchange: () => drawCharts() },
    h("option", { value: "3600" }, t("last hour")), h("option", { value: "21600" }, t("last 6 hours")),
    h("option", { value: "86400" }, t("last day")), h("option", { value: "604800" }, t("last week")));
  main.append(title, h("div", { class: "split" },
    h("div", {}, info, h("h2", {}, t("Live state")), h("table", {}, h("tbody", {}, stateTable))),
    h("div", {}, h("h2", {}, t("Recent events")), h("table", {}, events))),
    h("h2", {}, t("Telemetry"), " ", range), charts);

  function drawInfo(asset) {
    const zone = asset.timezone;
    const rows = [["kind", kindName(asset.kind)], ["model", asset.model], ["site", asset.site_name],
      ["firm", asset.firm_name || "—"], ["status", badge(statusOf(asset))], ["time zone", zone], ["last seen", fmtTime(asset.last_seen, zone)]];
    if (asset.alarm) rows.push(["open alarm", [badge(asset.alarm.severity), " ", word(asset.alarm.type)]]);
    if (asset.escalation) rows.push(["maintenance", badge(asset.escalation)]);
    if (asset.registration_code) rows.push(["registration", asset.registration_code]);
    if (asset.next_inspection_due) {
      // rule M12: warned 30 days ahead, alarmed once lapsed
      rows.push(["periodic inspection", h("span", { id: "asset-inspection" }, asset.next_inspection_due, " ",
        asset.inspection ? badge(asset.inspection) : "")]);
    }
    info.replaceChildren(...rows.flatMap(([k, v]) => [h("span", { class: "muted" }, t(k)), h("span", {}, v)]));
    stateTable.replaceChildren(...Object.entries(asset.state).sort().map(([metric, s]) =>
      h("tr", { dataset: { metric } }, h("td", {}, metricName(metric)), h("td", { class: "num", title: String(s.value) }, stateText(metric, s.value, zone)), h("td", { class: "muted" }, fmtTime(s.ts, zone)))));
  }
  async function drawEvents() {
    const list = await api(`/assets/${encodeURIComponent(id)}/events?limit=30`);
    const zone = zoneOf(id);
    events.replaceChildren(...list.map(e => h("tr", { dataset: { metric: e.metric } }, h("td", {}, fmtTime(e.ts, zone)), h("td", {}, metricName(e.metric)),
      h("td", {}, `${stateText(e.metric, e.previous, zone)} → ${stateText(e.metric, e.value, zone)}`))));
  }
  async function drawCharts() {
    const asset = S.assets.get(id);
    if (!asset) return;
    const span = Number(range.value) * 1000;
    const end = new Date(platformNow()).toISOString();
    const start = new Date(platformNow() - span).toISOString();
    const metrics = KEY_METRICS[asset.kind] || [];
    charts.replaceChildren(...metrics.map(metric => {
      const box = h("div", { class: "chart card", dataset: { metric } });
      const plot = h("div");
      box.append(h("div", { class: "title" }, h("strong", {}, metricName(metric)), h("span", { class: "muted" })), plot);
      api(`/assets/${encodeURIComponent(id)}/telemetry?metric=${metric}&start=${encodeURIComponent(start)}&end=${encodeURIComponent(end)}`)
        .then(series => { box.querySelector(".title .muted").textContent = series.unit; VigilChart.render(plot, series); })
        .catch(err => { plot.textContent = err.message; });
      return box;
    }));
  }
  ctx.reload = async () => {
    try {
      const asset = await ctx.newest(api(`/assets/${encodeURIComponent(id)}`));
      S.assets.set(id, asset);
      title.textContent = `${asset.id} · ${kindName(asset.kind)}`;
      drawInfo(asset);
      drawEvents();
      drawCharts();
    } catch (err) { main.replaceChildren(h("h1", {}, id), h("p", { class: "error" }, err.message)); }
  };
  let lastCharts = 0;
  ctx.onState = (asset) => {
    if (asset.id !== id) return;
    drawInfo(asset);
    if (performance.now() - lastCharts > 5000) { lastCharts = performance.now(); drawCharts(); }
  };
  ctx.onEvent = (event) => { if (event.device === id) drawEvents(); };
  ctx.reload();
}

// Monthly firm report (rule A4) and rescue KPIs (rule R7), with CSV downloads.
function renderReports(main, ctx) {
  const now = new Date(platformNow());
  const month = h("input", { type: "month", id: "report-month", value: now.toISOString().slice(0, 7), onchange: () => ctx.reload() });
  const monthly = h("tbody", { id: "monthly-rows" });
  const kpis = h("tbody", { id: "kpi-rows" });
  const pctText = v => (v === null || v === undefined) ? "—" : new Intl.NumberFormat(S.lang, { style: "percent" }).format(v);
  const dec = v => (v === null || v === undefined) ? "—" : num(v, 1);
  async function download(path, name) {
    try {
      const response = await fetch(`${API}${path}`, { headers: { Authorization: `Bearer ${S.token}` } });
      if (!response.ok) throw new Error(response.statusText);
      const link = h("a", { href: URL.createObjectURL(await response.blob()), download: name });
      document.body.append(link); link.click(); link.remove();
    } catch (err) { toast(err.message); }
  }
  const monthlyHead = ["firm", "elevators", "verified visits", "flagged records", "overdue", "on time", "lockouts", "overrides", "entrapments", "in time", "drills"];
  main.append(h("h1", {}, t("Reports")),
    h("div", { class: "toolbar" }, t("Month"), " ", month,
      h("button", { class: "secondary", onclick: () => download(`/reports/monthly?month=${month.value}&format=csv`, `monthly-${month.value}.csv`) }, t("Monthly report CSV"))),
    h("h2", {}, t("Monthly firm report (A4)")),
    h("table", {}, headRow(monthlyHead), monthly));
  const canKpi = can(["admin", "regulator", "firm_manager", "dispatcher"]);
  if (canKpi) {
    main.append(h("h2", {}, t("Rescue KPIs (R7), last 12 months"), " ",
      h("button", { class: "secondary", onclick: () => download("/reports/rescue-kpis?format=csv", "rescue-kpis.csv") }, "CSV")),
      h("table", {}, headRow(["month", "firm", "region", "incidents", "answered ≤ 3 min", "on site by deadline", "mean arrival min", "p90 arrival min", "mean release min"]), kpis));
  }
  ctx.reload = async () => {
    try {
      const rows = await ctx.newest(api(`/reports/monthly?month=${month.value}`));
      monthly.replaceChildren(...(rows.length ? rows.map(r => h("tr", {},
        h("td", {}, r.firm_name), ...[r.elevators, r.verified_visits, r.flagged_records, r.overdue_elevators].map(v => h("td", { class: "num" }, num(v))),
        h("td", { class: "num" }, pctText(r.on_time_maintenance_rate)), h("td", { class: "num" }, num(r.lockouts)), h("td", { class: "num" }, num(r.overrides)),
        h("td", { class: "num" }, num(r.entrapments)), h("td", { class: "num" }, pctText(r.entrapments_within_deadline)), h("td", { class: "num" }, num(r.drills))))
        : [emptyRow(11, "no elevators in scope")]));
      if (canKpi) {
        const k = await api("/reports/rescue-kpis");
        kpis.replaceChildren(...(k.length ? k.map(r => h("tr", {}, h("td", {}, r.month.slice(0, 7)), h("td", {}, r.firm_name || "—"), h("td", {}, r.jurisdiction_name || r.jurisdiction_id),
          h("td", { class: "num" }, num(r.incidents)), h("td", { class: "num" }, pctText(r.answered_within_3_min)), h("td", { class: "num" }, pctText(r.arrived_within_deadline)),
          h("td", { class: "num" }, dec(r.mean_arrival_min)), h("td", { class: "num" }, dec(r.p90_arrival_min)), h("td", { class: "num" }, dec(r.mean_release_min))))
          : [emptyRow(9, "no incidents")]));
      }
    } catch (err) { toast(err.message); }
  };
  ctx.reload();
}

// Regulator view of the compliance log: each entry's body as labelled fields, not JSON.
function fieldsOf(body, zone, prefix = "") {
  const out = [];
  for (const [key, value] of Object.entries(body || {})) {
    const label = prefix ? `${prefix} · ${word(key)}` : word(key);
    if (value !== null && typeof value === "object" && !Array.isArray(value)) out.push(...fieldsOf(value, zone, label));
    else {
      let shown = value;
      if (Array.isArray(value)) shown = value.map(v => typeof v === "object" ? JSON.stringify(v) : word(v)).join(", ") || "—";
      else if (typeof value === "string" && /^\d{4}-\d\d-\d\dT\d\d:\d\d/.test(value)) shown = fmtTime(value, zone);
      else if (typeof value === "boolean") shown = t(value ? "yes" : "no");
      else if (typeof value === "string" && /^[a-z][a-z0-9_.]*$/.test(value)) shown = word(value);
      else if (value === null) shown = "—";
      out.push([label, String(shown)]);
    }
  }
  return out;
}

function renderAudit(main, ctx) {
  const status = h("div", { class: "card", id: "audit-verify" }, t("verifying the chain…"));
  const kind = h("input", { id: "audit-kind", placeholder: t("kind, e.g. maintenance.verdict") });
  const rows = h("tbody", { id: "audit-rows" });
  const more = h("button", { class: "secondary", onclick: () => load(true) }, t("Older entries →"));
  let after = 0;
  async function download(format) {
    try {
      const response = await fetch(`${API}/audit/export?format=${format}`, { headers: { Authorization: `Bearer ${S.token}` } });
      if (!response.ok) throw new Error(response.statusText);
      const blob = await response.blob();
      const link = h("a", { href: URL.createObjectURL(blob), download: `compliance-log.${format}` });
      document.body.append(link); link.click(); link.remove();
    } catch (err) { toast(err.message); }
  }
  main.append(h("h1", {}, t("Compliance log")), status,
    h("div", { class: "toolbar" }, kind, h("button", { onclick: () => { after = 0; load(false); } }, t("Filter")),
      h("button", { class: "secondary", onclick: () => download("jsonl") }, t("Export JSONL")),
      h("button", { class: "secondary", onclick: () => download("csv") }, t("Export CSV"))),
    h("table", {}, headRow(["#", "at", "kind", "subject", "asset", "actor", "details", "hash"]), rows),
    h("div", { class: "toolbar" }, more));
  async function load(append) {
    const q = new URLSearchParams({ after_seq: String(after), limit: "100" });
    if (kind.value) q.set("kind", kind.value.trim());
    try {
      const page = await api(`/audit/log?${q}`);
      const trs = page.items.map(e => {
        const zone = e.device_id ? zoneOf(e.device_id) : S.zone;
        return h("tr", { dataset: { seq: e.seq } }, h("td", { class: "num" }, e.seq), h("td", {}, fmtTime(e.at, zone)),
          h("td", { title: e.kind }, word(e.kind)), h("td", {}, `${word(e.subject_type)} ${e.subject_id}`), h("td", {}, e.device_id || "—"), h("td", {}, e.actor),
          h("td", {}, h("dl", { class: "fields" }, ...fieldsOf(e.body, zone).flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]))),
          h("td", { class: "muted", title: e.hash }, e.hash.slice(0, 12) + "…"));
      });
      if (append) rows.append(...trs); else rows.replaceChildren(...trs);
      after = page.next_after_seq || after;
      more.disabled = !page.next_after_seq;
    } catch (err) { toast(err.message); }
  }
  ctx.reload = async () => {
    try {
      const v = await api("/audit/verify");
      status.replaceChildren(v.ok ? badge("ok") : badge("breached"), " ",
        v.ok ? t("chain verified: {entries} entries, head {head}…, {checkpoints} signed checkpoints", { entries: num(v.entries), head: v.head_hash.slice(0, 16), checkpoints: v.checkpoints })
             : `${t("TAMPERED")}: ${v.problem || v.checkpoint_problems.join("; ")}`);
    } catch (err) { status.textContent = err.message; }
    after = 0; load(false);
  };
  ctx.reload();
}

// ---- start ------------------------------------------------------------------------------------

async function start() {
  try {
    S.user = await api("/me");
  } catch (_) { showLogin(); return; }
  const remembered = localStorage.getItem(`vigil.lang.${S.user.username}`);
  if (remembered) setLang(remembered);
  const [features, catalog] = await Promise.all([api("/features").catch(() => ({})), api("/catalog").catch(() => null)]);
  S.available = features;
  if (catalog) S.catalog = catalog;
  document.getElementById("top").hidden = false;
  await Promise.all([syncClock(), loadAssets()]);
  buildNav();
  drawClock();
  refreshIncidentDevices();
  route();
  openStream();
}

window.addEventListener("hashchange", route);
document.getElementById("logout").addEventListener("click", () => logout());
// the header clock: platform time in the zone of most of the user's sites, the zone named
function drawClock() {
  const c = document.getElementById("clock");
  if (S.user) { c.textContent = fmtTime(new Date(platformNow()).toISOString(), S.zone); c.title = `${t("platform time")} · ${S.zone}`; c.dataset.zone = S.zone; }
}
setInterval(drawClock, 500);
setInterval(() => { if (S.user) syncClock().catch(() => {}); }, 30000);
setLang(S.lang);
if (S.token) start(); else showLogin();
