// Vigil console: plain JavaScript over the REST API and the live stream. No build step.
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
const CONDITIONS = ["ok", "inspection", "fault", "alarm", "locked_out", "out_of_service", "unknown"];

const S = {
  token: sessionStorage.getItem("vigil.token"),
  user: null,
  assets: new Map(),         // id -> asset
  incidentDevices: new Set(), // devices with an open incident
  clock: { server: Date.now(), perf: performance.now(), rate: 1 },
  stream: null,
  view: null,                // {name, arg, onState?, onAlert?, timer?}
  available: {},             // which optional domains the server offers
};

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
  if (response.status === 401 && S.token) { logout("Your session has ended."); throw new ApiError(401, "logged out"); }
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

function fmtTime(iso) {
  if (!iso) return "—";
  return new Date(iso).toISOString().replace("T", " ").slice(0, 19) + "Z";
}

function fmtDuration(ms) {
  const sign = ms < 0 ? "-" : "";
  let s = Math.floor(Math.abs(ms) / 1000);
  const hh = Math.floor(s / 3600); s -= hh * 3600;
  const mm = Math.floor(s / 60); s -= mm * 60;
  return `${sign}${hh ? hh + ":" : ""}${String(mm).padStart(2, "0")}:${String(s).padStart(2, "0")}`;
}

function badge(text) { return h("span", { class: `badge ${text}` }, String(text).replace(/_/g, " ")); }

function can(roles) { return S.user && roles.includes(S.user.role); }

// ---- session ----------------------------------------------------------------------------------

function showLogin(message) {
  document.getElementById("top").hidden = true;
  const view = document.getElementById("view");
  view.textContent = "";
  view.append(document.getElementById("login-template").content.cloneNode(true));
  document.getElementById("login-error").textContent = message || "";
  document.getElementById("login").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    try {
      const session = await api("/auth/login", {
        method: "POST", body: { username: form.get("username"), password: form.get("password") } });
      S.token = session.token;
      sessionStorage.setItem("vigil.token", S.token);
      await start();
    } catch (err) {
      document.getElementById("login-error").textContent = err.message;
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
  badgeEl.title = on ? "live updates on" : "live updates reconnecting";
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
      if (response.status === 401) { logout("Your session has ended."); return; }
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

function onMessage(name, data) {
  if (name === "logout") { logout("Your session has ended."); return; }
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
}

async function refreshIncidentDevices() {
  if (!S.available.incidents) return;
  try {
    const open = await api("/incidents");
    S.incidentDevices = new Set(open.map(i => i.device_id));
    if (S.view && S.view.name === "fleet") S.view.reload();
  } catch (_) { /* shown elsewhere */ }
}

// ---- views ------------------------------------------------------------------------------------

const VIEWS = {
  fleet: { label: "Fleet", roles: null, render: renderFleet },
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
    nav.append(h("a", { href: `#/${name}`, id: `nav-${name}`, dataset: { view: name } }, view.label));
  }
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
  S.view = { name, arg: decodeURIComponent(rest.join("/")) };
  view.render(main, S.view);
}

// Fleet grid with state colours.
function renderFleet(main, ctx) {
  const kind = h("select", { id: "kind-filter", onchange: () => draw() },
    h("option", { value: "" }, "all kinds"),
    ...Object.keys(KEY_METRICS).map(k => h("option", { value: k }, k.replace("_", " "))));
  const search = h("input", { id: "search", placeholder: "search id", oninput: () => draw() });
  const counts = h("span", { class: "muted", id: "fleet-count" });
  const legend = h("span", { class: "legend" },
    ...CONDITIONS.map(c => h("span", {}, h("i", { class: `dot c-${c}` }), c.replace(/_/g, " "))));
  const grid = h("div", { class: "grid", id: "fleet-grid" });
  main.append(h("h1", {}, "Fleet"), h("div", { class: "toolbar" }, kind, search, counts, legend), grid);

  function tile(asset) {
    const cond = S.incidentDevices.has(asset.id) ? "entrapment" : asset.condition;
    const sub = asset.kind === "elevator" && asset.state.floor
      ? `floor ${asset.state.floor.value}` : asset.kind.replace("_", " ");
    return h("a", { class: `tile c-${cond}`, href: `#/asset/${encodeURIComponent(asset.id)}`,
                    dataset: { device: asset.id, condition: cond }, title: cond },
      h("span", { class: "id" }, asset.id),
      h("span", { class: "sub" }, asset.site_name),
      h("span", { class: "sub" }, `${sub} · ${cond.replace(/_/g, " ")}`));
  }
  function draw() {
    const k = kind.value, q = search.value.toLowerCase();
    const shown = [...S.assets.values()].filter(a => (!k || a.kind === k) && a.id.toLowerCase().includes(q));
    grid.replaceChildren(...shown.map(tile));
    counts.textContent = `${shown.length} of ${S.assets.size} assets`;
  }
  ctx.onState = (asset) => {
    const old = grid.querySelector(`[data-device="${CSS.escape(asset.id)}"]`);
    if (old) old.replaceWith(tile(asset)); else draw();
  };
  ctx.reload = () => loadAssets().then(draw);
  draw();
}

// Alarms to acknowledge and clear.
function renderAlarms(main, ctx) {
  const which = h("select", { id: "alarm-state", onchange: () => ctx.reload() },
    h("option", { value: "open" }, "open"), h("option", { value: "cleared" }, "cleared"));
  const body = h("tbody", { id: "alarm-rows" });
  main.append(h("h1", {}, "Alarms"), h("div", { class: "toolbar" }, which),
    h("table", {}, h("thead", {}, h("tr", {}, ...["raised", "source", "type", "severity", "state", "message", ""].map(t => h("th", {}, t)))), body));

  async function act(alarm, action) {
    try {
      let payload;
      if (action === "clear") {
        const reason = prompt(`Clear alarm ${alarm.id}: reason`, "");
        if (reason === null) return;
        payload = { reason };
      }
      await api(`/alarms/${alarm.id}/${action}`, { method: "POST", body: payload });
      toast(`alarm ${alarm.id} ${action === "clear" ? "cleared" : "acknowledged"}`);
      ctx.reload();
    } catch (err) { toast(err.message); }
  }
  function row(alarm) {
    const source = alarm.device_id
      ? h("a", { href: `#/asset/${encodeURIComponent(alarm.device_id)}` }, alarm.device_id)
      : `${alarm.source_type} ${alarm.source_id}`;
    return h("tr", { dataset: { alarm: alarm.id } },
      h("td", {}, fmtTime(alarm.last_triggered_at)), h("td", {}, source), h("td", {}, alarm.type),
      h("td", {}, badge(alarm.severity)), h("td", {}, badge(alarm.state)), h("td", {}, alarm.message),
      h("td", { class: "actions" },
        can(RESPONDERS) && alarm.state === "active" ? h("button", { onclick: () => act(alarm, "acknowledge") }, "Acknowledge") : null,
        can(RESPONDERS) && alarm.state !== "cleared" ? h("button", { class: "secondary", onclick: () => act(alarm, "clear") }, "Clear") : null));
  }
  ctx.reload = async () => {
    const q = which.value === "open" ? "" : "?state=cleared";
    const alarms = await api(`/alarms${q}`);
    body.replaceChildren(...(alarms.length ? alarms.map(row) : [h("tr", {}, h("td", { colspan: 7, class: "muted" }, "no alarms"))]));
  };
  ctx.onAlert = (alert) => { if (alert.kind === "alarm") ctx.reload(); };
  ctx.reload();
}

// Open incidents with a live countdown to the arrival deadline (rule R2), and their actions.
function renderIncidents(main, ctx) {
  const body = h("tbody", { id: "incident-rows" });
  const report = h("button", { id: "report-incident", onclick: () => reportDialog() }, "Report entrapment");
  main.append(h("h1", {}, "Rescue incidents"),
    h("div", { class: "toolbar" }, can(["admin", "firm_manager", "dispatcher", "technician", "safety_manager"]) ? report : null,
      h("span", { class: "muted" }, "arrival deadlines count down on the platform clock")),
    h("table", {}, h("thead", {}, h("tr", {}, ...["#", "asset", "reported", "status", "technician", "arrival deadline", "time left", ""].map(t => h("th", {}, t)))), body));

  function reportDialog() {
    const elevators = [...S.assets.values()].filter(a => a.kind === "elevator");
    const device = h("select", { name: "device_id", id: "report-device" }, ...elevators.map(a => h("option", { value: a.id }, `${a.id} · ${a.site_name}`)));
    const note = h("input", { name: "note", id: "report-note", placeholder: "caller, floor, details" });
    const dialog = h("dialog", { id: "report-dialog" }, h("form", { method: "dialog" },
      h("h2", {}, "Report an entrapment (phone call)"), device, note,
      h("div", { class: "toolbar" }, h("button", { value: "ok", id: "report-submit" }, "Report"), h("button", { value: "cancel", class: "secondary" }, "Cancel"))));
    dialog.addEventListener("close", async () => {
      dialog.remove();
      if (dialog.returnValue !== "ok") return;
      try {
        const out = await api("/incidents", { method: "POST", body: { device_id: device.value, note: note.value } });
        toast(out.created ? `entrapment reported at ${device.value}` : `attached to open incident ${out.incident.id}`);
        ctx.reload();
      } catch (err) { toast(err.message); }
    });
    document.body.append(dialog);
    dialog.showModal();
  }

  function checkInDialog(incident) {
    // rule R6: only a measured position proves arrival. The browser's geolocation supplies it
    // when the technician checks in on their own device; nothing is ever pre-filled. Without
    // a position the arrival is recorded as unproven (the duty line taking a phone call).
    const lat = h("input", { name: "latitude", id: "checkin-lat", value: "", inputmode: "decimal" });
    const lon = h("input", { name: "longitude", id: "checkin-lon", value: "", inputmode: "decimal" });
    const note = h("p", { id: "checkin-note", class: "muted" }, "Asking this device for its position…");
    const dialog = h("dialog", { id: "checkin-dialog" }, h("form", { method: "dialog" },
      h("h2", {}, `Check in at ${incident.device_id}`), note,
      h("label", {}, "Measured latitude ", lat), h("label", {}, "longitude ", lon),
      h("div", { class: "toolbar" }, h("button", { value: "ok", id: "checkin-submit" }, "Check in"), h("button", { value: "cancel", class: "secondary" }, "Cancel"))));
    const unproven = (why) => { note.textContent = `${why}: the arrival will be recorded as unproven unless a measured position is entered.`; };
    if (navigator.geolocation) {
      navigator.geolocation.getCurrentPosition(
        (pos) => { lat.value = pos.coords.latitude.toFixed(6); lon.value = pos.coords.longitude.toFixed(6); note.textContent = `Position measured by this device (±${Math.round(pos.coords.accuracy)} m).`; },
        () => unproven("No position from this device"), { timeout: 10000, maximumAge: 0 });
    } else unproven("This browser cannot measure a position");
    dialog.addEventListener("close", () => {
      dialog.remove();
      if (dialog.returnValue !== "ok") return;
      const measured = lat.value.trim() !== "" && lon.value.trim() !== "";
      act(incident, "check-in", measured ? { latitude: Number(lat.value), longitude: Number(lon.value) } : {});
    });
    document.body.append(dialog);
    dialog.showModal();
  }

  async function act(incident, action, payload) {
    if (action === "check-in" && !payload) return checkInDialog(incident);
    if (action === "false-alarm") {
      const reason = prompt(`Incident ${incident.id}: why was nobody trapped?`, "");
      if (!reason) return;
      payload = { reason };
    }
    try {
      const out = await api(`/incidents/${incident.id}/${action}`, { method: "POST", body: payload });
      toast(`incident ${incident.id}: ${out.status.replace("_", " ")}`);
      ctx.reload();
    } catch (err) { toast(err.message); }
  }

  const NEXT = { reported: ["dispatch"], dispatched: ["accept"], accepted: ["check-in"],
                 arrived: ["release"], released: ["close"] };
  const LABEL = { dispatch: "Dispatch", accept: "Accept", "check-in": "Check in", release: "Release",
                  close: "Close", "false-alarm": "False alarm" };
  function row(incident) {
    const deadline = Date.parse(incident.arrival_deadline);
    const left = h("span", { class: "countdown", dataset: { deadline } });
    let actions = [];
    if (can(RESPONDERS)) {
      actions = (NEXT[incident.status] || []).filter(a => a !== "dispatch" || S.user.role !== "technician");
      if (["reported", "dispatched", "accepted", "arrived"].includes(incident.status)) actions = [...actions, "false-alarm"];
    }
    const buttons = actions.map(a => h("button", { class: a === "false-alarm" ? "secondary" : null,
      onclick: () => act(incident, a), dataset: { action: a } }, LABEL[a]));
    return h("tr", { dataset: { incident: incident.id, status: incident.status } },
      h("td", { class: "num" }, incident.id),
      h("td", {}, h("a", { href: `#/asset/${encodeURIComponent(incident.device_id)}` }, incident.device_id), h("div", { class: "muted" }, incident.site_name)),
      h("td", {}, fmtTime(incident.reported_at)),
      h("td", {}, badge(incident.status), incident.breached ? [" ", badge("breached")] : null),
      h("td", {}, incident.technician_name || "—", incident.accept_by ? h("div", { class: "muted" }, `accept by ${fmtTime(incident.accept_by)}`) : null),
      h("td", {}, fmtTime(incident.arrival_deadline)),
      h("td", {}, incident.arrived_at ? `arrived ${fmtTime(incident.arrived_at)}` : left),
      h("td", { class: "actions" }, buttons));
  }
  function tick() {
    const now = platformNow();
    for (const el of body.querySelectorAll(".countdown")) {
      const left = Number(el.dataset.deadline) - now;
      el.textContent = left >= 0 ? fmtDuration(left) : `late ${fmtDuration(-left)}`;
      el.classList.toggle("late", left < 0);
    }
  }
  ctx.reload = async () => {
    const incidents = await api("/incidents");
    body.replaceChildren(...(incidents.length ? incidents.map(row) : [h("tr", {}, h("td", { colspan: 8, class: "muted" }, "no open incidents"))]));
    tick();
  };
  ctx.onAlert = (alert) => { if (alert.kind === "incident") ctx.reload(); };
  ctx.timer = setInterval(tick, 250);
  ctx.reload();
}

// Maintenance: due and overdue lists (M1, M5, M6), records with verdicts (M3) and sign-off (M4).
function renderMaintenance(main, ctx) {
  const due = h("tbody", { id: "due-rows" });
  const records = h("tbody", { id: "record-rows" });
  main.append(h("h1", {}, "Maintenance"),
    h("h2", {}, "Due, overdue and locked out"),
    h("table", {}, h("thead", {}, h("tr", {}, ...["asset", "site", "firm", "state", "since", "overdue since", "overdue tiers", ""].map(t => h("th", {}, t)))), due),
    h("h2", {}, "Recent records"),
    h("table", {}, h("thead", {}, h("tr", {}, ...["#", "asset", "tier", "visit", "technician", "verdict", "signed off", ""].map(t => h("th", {}, t)))), records));

  async function override(item) {
    const reason = prompt(`Override the ${item.state.replace(/_/g, " ")} of ${item.device_id}: reason (logged)`, "");
    if (!reason) return;
    try {
      const out = await api(`/maintenance/lockouts/${encodeURIComponent(item.device_id)}/override`, { method: "POST", body: { reason } });
      toast(`${out.device_id}: ${out.state}`);
      ctx.reload();
    } catch (err) { toast(err.message); }
  }
  async function signOff(record) {
    try {
      await api(`/maintenance/records/${record.id}/sign-off`, { method: "POST" });
      toast(`record ${record.id} signed off`);
      ctx.reload();
    } catch (err) { toast(err.message); }
  }
  function dueRow(item) {
    const overridable = can(AUDITORS) && ["overdue", "lockout_pending", "lockout_recommended", "locked_out"].includes(item.state);
    return h("tr", { dataset: { device: item.device_id, state: item.state } },
      h("td", {}, h("a", { href: `#/asset/${encodeURIComponent(item.device_id)}` }, item.device_id)),
      h("td", {}, item.site_name), h("td", {}, item.firm_name || "—"), h("td", {}, badge(item.state)),
      h("td", {}, fmtTime(item.since)), h("td", {}, fmtTime(item.overdue_since)),
      h("td", {}, (item.overdue_tiers || []).join(", ") || "—"),
      h("td", { class: "actions" }, overridable ? h("button", { class: "secondary", onclick: () => override(item) }, "Override lockout") : null));
  }
  function recordRow(r) {
    const canSign = S.user.role === "safety_manager" && !r.signed_off_at && !r.corrected_by_id;
    return h("tr", { dataset: { record: r.id } },
      h("td", { class: "num" }, r.id),
      h("td", {}, h("a", { href: `#/asset/${encodeURIComponent(r.device_id)}` }, r.device_id)),
      h("td", {}, r.tier.replace("_", "-"), r.corrects_id ? h("div", { class: "muted" }, `corrects #${r.corrects_id}`) : null),
      h("td", {}, `${fmtTime(r.claimed_start)} → ${fmtTime(r.claimed_end).slice(11)}`),
      h("td", {}, r.technician_name), h("td", {}, r.verdict ? badge(r.verdict) : h("span", { class: "muted" }, "pending"),
        r.corrected_by_id ? h("div", { class: "muted" }, `corrected by #${r.corrected_by_id}`) : null),
      h("td", {}, r.signed_off_at ? `${r.signed_off_by}, ${fmtTime(r.signed_off_at)}` : "—"),
      h("td", { class: "actions" }, canSign ? h("button", { onclick: () => signOff(r) }, "Sign off") : null));
  }
  ctx.reload = async () => {
    const [items, recent] = await Promise.all([api("/maintenance/due"), api("/maintenance/records?limit=50")]);
    due.replaceChildren(...(items.length ? items.map(dueRow) : [h("tr", {}, h("td", { colspan: 8, class: "muted" }, "nothing due"))]));
    records.replaceChildren(...(recent.length ? recent.map(recordRow) : [h("tr", {}, h("td", { colspan: 8, class: "muted" }, "no records"))]));
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

function countdownCell(deadline, metAt) {
  if (!deadline) return h("td", { class: "muted" }, "—");
  if (metAt) return h("td", { class: Date.parse(metAt) > Date.parse(deadline) ? "late" : "muted" }, `done ${fmtTime(metAt).slice(11)}`);
  return h("td", {}, h("span", { class: "countdown", dataset: { deadline: Date.parse(deadline) } }), h("div", { class: "muted" }, fmtTime(deadline)));
}

function tickCountdowns(root) {
  const now = platformNow();
  for (const el of root.querySelectorAll(".countdown")) {
    const left = Number(el.dataset.deadline) - now;
    el.textContent = left >= 0 ? fmtDuration(left) : `late ${fmtDuration(-left)}`;
    el.classList.toggle("late", left < 0);
  }
}

async function workOrderAction(order, action, done) {
  let body = {};
  if (action === "assign") {
    const who = prompt(`Work order ${order.id}: technician id (a qualified technician of the firm)`, order.technician_id || "");
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
    const reached = confirm(`Work order ${order.id}: did the call reach the customer?`);
    body = { reached };
    if (reached) {
      const score = prompt("Satisfaction, 1 (poor) to 5", "5");
      if (!score) return;
      body.satisfaction = Number(score);
    }
  } else if (action === "cancel") {
    const reason = prompt(`Work order ${order.id}: why is the work not needed?`, "");
    if (!reason) return;
    body = { reason };
  }
  try {
    const out = await api(`/work-orders/${order.id}/${action}`, { method: "POST", body });
    toast(`work order ${order.id}: ${out.status.replace(/_/g, " ")}`);
    done();
  } catch (err) { toast(err.message); }
}

function renderWorkOrders(main, ctx) {
  if (ctx.arg) return renderWorkOrder(main, ctx);
  const which = h("select", { id: "wo-which", onchange: () => ctx.reload() },
    ...[["open", "open"], ["resolved", "awaiting callback"], ["all", "all"]].map(([v, t]) => h("option", { value: v }, t)));
  const level = h("select", { id: "wo-level", onchange: () => ctx.reload() },
    h("option", { value: "" }, "every level"), ...[1, 2, 3, 4].map(l => h("option", { value: l }, `level ${l}`)));
  const body = h("tbody", { id: "work-order-rows" });
  const calls = h("tbody", { id: "callback-rows" });
  const open = h("button", { id: "open-work-order", onclick: () => openDialog() }, "Open work order");
  main.append(h("h1", {}, "Work orders"),
    h("div", { class: "toolbar" }, can([...RESPONDERS, "safety_manager"]) ? open : null, which, level,
      h("span", { class: "muted" }, "deadlines (rule S1) count down on the platform clock")),
    h("table", {}, h("thead", {}, h("tr", {}, ...["#", "asset", "work", "level", "status", "respond", "on site", "restore", ""].map(t => h("th", {}, t)))), body),
    h("h2", {}, "Callbacks due (rule S4)"),
    h("table", {}, h("thead", {}, h("tr", {}, ...["#", "asset", "work", "resolved", "unreached calls", ""].map(t => h("th", {}, t)))), calls));

  function openDialog() {
    const device = h("select", { name: "device_id", id: "wo-device" }, ...[...S.assets.values()].map(a => h("option", { value: a.id }, `${a.id} · ${a.site_name}`)));
    const kind = h("select", { name: "kind", id: "wo-kind" }, ...["fault_repair", "emergency_repair", "lamp_replacement", "mast_relamping", "meter_fault", "inspection_task", "complaint_follow_up", "corrective_work"].map(k => h("option", { value: k }, k.replace(/_/g, " "))));
    const lvl = h("select", { name: "level", id: "wo-new-level" }, ...[1, 2, 3, 4].map(l => h("option", { value: l, selected: l === 3 }, `level ${l}`)));
    const origin = h("select", { name: "origin", id: "wo-origin" }, ...["phone", "complaint", "patrol", "console"].map(o => h("option", { value: o }, o)));
    const title = h("input", { name: "title", id: "wo-title", placeholder: "what is wrong", required: true });
    const dialog = h("dialog", { id: "wo-dialog" }, h("form", { method: "dialog" },
      h("h2", {}, "Open a work order"), device, kind, lvl, origin, title,
      h("div", { class: "toolbar" }, h("button", { value: "ok", id: "wo-submit" }, "Open"), h("button", { value: "cancel", class: "secondary" }, "Cancel"))));
    dialog.addEventListener("close", async () => {
      dialog.remove();
      if (dialog.returnValue !== "ok" || !title.value.trim()) return;
      try {
        const out = await api("/work-orders", { method: "POST", body: { device_id: device.value, kind: kind.value, level: Number(lvl.value), origin: origin.value, title: title.value } });
        toast(out.repeats ? `counted on open work order ${out.id}` : `work order ${out.id} opened`);
        ctx.reload();
      } catch (err) { toast(err.message); }
    });
    document.body.append(dialog);
    dialog.showModal();
  }

  function row(order) {
    const actions = can(RESPONDERS) ? (WO_NEXT[order.status] || []).filter(a =>
      (a !== "check-in" || S.user.role === "technician") && (!["assign", "callback", "cancel"].includes(a) || S.user.role !== "technician")) : [];
    return h("tr", { dataset: { workOrder: order.id, status: order.status, level: order.level } },
      h("td", { class: "num" }, h("a", { href: `#/work-orders/${order.id}` }, order.id)),
      h("td", {}, h("a", { href: `#/asset/${encodeURIComponent(order.device_id)}` }, order.device_id)),
      h("td", {}, order.title, h("div", { class: "muted" }, order.kind.replace(/_/g, " "), order.repeats ? ` · ×${order.repeats + 1}` : "", order.repeat_of ? ` · repeat of #${order.repeat_of}` : "")),
      h("td", {}, `L${order.level}`, h("div", { class: "muted" }, order.zone)),
      h("td", {}, badge(order.status), ...order.breaches.map(b => [" ", badge(`missed ${b.replace("_", " ")}`)])),
      ...WO_DEADLINES.map(([due, met]) => countdownCell(order[due], order[met])),
      h("td", { class: "actions" }, actions.map(a => h("button", { class: a === "cancel" ? "secondary" : null, dataset: { action: a },
        onclick: () => workOrderAction(order, a, () => ctx.reload()) }, WO_LABEL[a]))));
  }
  function callRow(due) {
    return h("tr", { dataset: { callback: due.work_order_id } },
      h("td", { class: "num" }, h("a", { href: `#/work-orders/${due.work_order_id}` }, due.work_order_id)),
      h("td", {}, due.device_id), h("td", {}, due.title), h("td", {}, fmtTime(due.resolved_at)),
      h("td", { class: "num" }, due.attempts),
      h("td", { class: "actions" }, can(["admin", "firm_manager", "dispatcher"]) ? h("button", {
        onclick: () => workOrderAction({ id: due.work_order_id }, "callback", () => ctx.reload()) }, "Call back") : null));
  }
  ctx.reload = async () => {
    const params = new URLSearchParams({ which: which.value });
    if (level.value) params.set("level", level.value);
    const [orders, due] = await Promise.all([api(`/work-orders?${params}`), api("/work-orders/callbacks-due")]);
    body.replaceChildren(...(orders.length ? orders.map(row) : [h("tr", {}, h("td", { colspan: 9, class: "muted" }, "no work orders"))]));
    calls.replaceChildren(...(due.length ? due.map(callRow) : [h("tr", {}, h("td", { colspan: 6, class: "muted" }, "nobody to call back"))]));
    tickCountdowns(body);
  };
  ctx.onAlert = (alert) => { if (alert.kind === "work_order") ctx.reload(); };
  ctx.timer = setInterval(() => tickCountdowns(body), 250);
  ctx.reload();
}

function renderWorkOrder(main, ctx) {
  const head = h("div", { id: "work-order-detail" });
  const steps = h("tbody", { id: "work-order-steps" });
  main.append(h("p", {}, h("a", { href: "#/work-orders" }, "← work orders")), head,
    h("h2", {}, "Timeline"),
    h("table", {}, h("thead", {}, h("tr", {}, ...["when", "step", "who", "note"].map(t => h("th", {}, t)))), steps));
  ctx.reload = async () => {
    const order = await api(`/work-orders/${encodeURIComponent(ctx.arg)}`);
    head.replaceChildren(h("h1", {}, `Work order ${order.id}: ${order.title}`),
      h("p", {}, badge(order.status), " ", `level ${order.level} · ${order.kind.replace(/_/g, " ")} · `,
        h("a", { href: `#/asset/${encodeURIComponent(order.device_id)}` }, order.device_id),
        ` · profiles ${order.service_level.profiles.join(", ")}`, ...order.breaches.map(b => [" ", badge(`missed ${b.replace("_", " ")}`)])),
      h("table", {}, h("tbody", {}, ...WO_DEADLINES.map(([due, met, label]) => h("tr", {}, h("th", {}, label), countdownCell(order[due], order[met]))))));
    steps.replaceChildren(...order.steps.map(s => h("tr", { dataset: { step: s.step } },
      h("td", {}, fmtTime(s.at)), h("td", {}, badge(s.step)), h("td", {}, s.actor),
      h("td", {}, s.note || (s.details.deadline ? `missed ${s.details.deadline}` : "")))));
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
  const which = h("select", { id: "complaint-which", onchange: () => ctx.reload() }, h("option", { value: "open" }, "open"), h("option", { value: "all" }, "all"));
  const register = h("button", { id: "register-complaint", onclick: () => registerDialog() }, "Register complaint");
  main.append(h("h1", {}, "Complaints"),
    h("div", { class: "toolbar" }, can(["admin", "firm_manager", "dispatcher", "technician", "safety_manager"]) ? register : null, which,
      h("span", { class: "muted" }, "answer within 24 h, the outcome within 2 working days (rule S3)")),
    h("table", {}, h("thead", {}, h("tr", {}, ...["#", "asset", "complainant", "subject", "status", "answer", "outcome", ""].map(t => h("th", {}, t)))), body));

  function registerDialog() {
    const device = h("select", { id: "complaint-device" }, ...[...S.assets.values()].map(a => h("option", { value: a.id }, `${a.id} · ${a.site_name}`)));
    const channel = h("select", { id: "complaint-channel" }, ...["phone", "email", "visit", "letter", "web", "regulator"].map(c => h("option", { value: c }, c)));
    const who = h("input", { id: "complaint-who", placeholder: "complainant" });
    const contact = h("input", { id: "complaint-contact", placeholder: "contact" });
    const subject = h("input", { id: "complaint-subject", placeholder: "what it is about" });
    const dialog = h("dialog", { id: "complaint-dialog" }, h("form", { method: "dialog" },
      h("h2", {}, "Register a complaint"), device, channel, who, contact, subject,
      h("div", { class: "toolbar" }, h("button", { value: "ok", id: "complaint-submit" }, "Register"), h("button", { value: "cancel", class: "secondary" }, "Cancel"))));
    dialog.addEventListener("close", async () => {
      dialog.remove();
      if (dialog.returnValue !== "ok" || !who.value.trim() || !subject.value.trim()) return;
      try {
        const out = await api("/complaints", { method: "POST", body: { device_id: device.value, channel: channel.value, complainant: who.value, contact: contact.value, subject: subject.value } });
        toast(`complaint ${out.id} registered`);
        ctx.reload();
      } catch (err) { toast(err.message); }
    });
    document.body.append(dialog);
    dialog.showModal();
  }

  async function act(complaint, action) {
    let body = {};
    if (action === "analysis") {
      const cause = prompt(`Complaint ${complaint.id}: the cause`, complaint.cause || "");
      if (!cause) return;
      const party = prompt("Responsible: firm, user_unit, manufacturer, third_party or none", complaint.responsible_party || "firm");
      if (!party) return;
      body = { cause, responsible_party: party };
    } else if (action === "solution") {
      const solution = prompt(`Complaint ${complaint.id}: the solution agreed`, "");
      if (!solution) return;
      const level = prompt("Follow-up work at level 1-4 (empty: none)", "3");
      body = { solution, follow_up_level: level ? Number(level) : null };
    } else {
      body = { note: prompt(`Complaint ${complaint.id}: note`, "") || "" };
    }
    try {
      const out = await api(`/complaints/${complaint.id}/${action}`, { method: "POST", body });
      toast(`complaint ${out.id}: ${out.status.replace(/_/g, " ")}`);
      ctx.reload();
    } catch (err) { toast(err.message); }
  }
  function row(c) {
    const actions = can(["admin", "firm_manager", "dispatcher"]) ? (COMPLAINT_NEXT[c.status] || []) : [];
    return h("tr", { dataset: { complaint: c.id, status: c.status } },
      h("td", { class: "num" }, c.id),
      h("td", {}, h("a", { href: `#/asset/${encodeURIComponent(c.device_id)}` }, c.device_id)),
      h("td", {}, c.complainant, h("div", { class: "muted" }, c.channel)),
      h("td", {}, c.subject, c.work_order_id ? h("div", {}, h("a", { href: `#/work-orders/${c.work_order_id}` }, `work order #${c.work_order_id}`)) : null),
      h("td", {}, badge(c.status), ...c.breaches.map(b => [" ", badge(`missed ${b}`)])),
      countdownCell(c.answer_by, c.answered_at), countdownCell(c.outcome_by, c.outcome_sent_at),
      h("td", { class: "actions" }, actions.map(a => h("button", { dataset: { action: a }, onclick: () => act(c, a) }, a))));
  }
  ctx.reload = async () => {
    const rows = await api(`/complaints?which=${which.value}`);
    body.replaceChildren(...(rows.length ? rows.map(row) : [h("tr", {}, h("td", { colspan: 8, class: "muted" }, "no complaints"))]));
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
    h("option", { value: "3600" }, "last hour"), h("option", { value: "21600" }, "last 6 hours"),
    h("option", { value: "86400" }, "last day"), h("option", { value: "604800" }, "last week"));
  main.append(title, h("div", { class: "split" },
    h("div", {}, info, h("h2", {}, "Live state"), h("table", {}, h("tbody", {}, stateTable))),
    h("div", {}, h("h2", {}, "Recent events"), h("table", {}, events))),
    h("h2", {}, "Telemetry ", range), charts);

  function drawInfo(asset) {
    const rows = [["kind", asset.kind], ["model", asset.model], ["site", asset.site_name],
      ["firm", asset.firm_name || "—"], ["condition", badge(asset.condition)], ["last seen", fmtTime(asset.last_seen)]];
    if (asset.registration_code) rows.push(["registration", asset.registration_code]);
    if (asset.next_inspection_due) {
      // rule M12: warned 30 days ahead, alarmed once lapsed
      rows.push(["periodic inspection", h("span", { id: "asset-inspection" }, asset.next_inspection_due, " ",
        asset.inspection ? badge(asset.inspection) : "")]);
    }
    info.replaceChildren(...rows.flatMap(([k, v]) => [h("span", { class: "muted" }, k), h("span", {}, v)]));
    stateTable.replaceChildren(...Object.entries(asset.state).sort().map(([metric, s]) =>
      h("tr", { dataset: { metric } }, h("td", {}, metric), h("td", { class: "num" }, s.value), h("td", { class: "muted" }, fmtTime(s.ts)))));
  }
  async function drawEvents() {
    const list = await api(`/assets/${encodeURIComponent(id)}/events?limit=30`);
    events.replaceChildren(...list.map(e => h("tr", {}, h("td", {}, fmtTime(e.ts)), h("td", {}, e.metric),
      h("td", { class: "num" }, `${e.previous ?? "—"} → ${e.value ?? "—"}`))));
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
      box.append(h("div", { class: "title" }, h("strong", {}, metric), h("span", { class: "muted" })), plot);
      api(`/assets/${encodeURIComponent(id)}/telemetry?metric=${metric}&start=${encodeURIComponent(start)}&end=${encodeURIComponent(end)}`)
        .then(series => { box.querySelector(".title .muted").textContent = series.unit; VigilChart.render(plot, series); })
        .catch(err => { plot.textContent = err.message; });
      return box;
    }));
  }
  ctx.reload = async () => {
    try {
      const asset = await api(`/assets/${encodeURIComponent(id)}`);
      S.assets.set(id, asset);
      title.textContent = `${asset.id} · ${asset.kind.replace("_", " ")}`;
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
  const pctText = v => (v === null || v === undefined) ? "—" : `${(100 * v).toFixed(0)}%`;
  const num = v => (v === null || v === undefined) ? "—" : Number(v).toFixed(1);
  async function download(path, name) {
    try {
      const response = await fetch(`${API}${path}`, { headers: { Authorization: `Bearer ${S.token}` } });
      if (!response.ok) throw new Error(response.statusText);
      const link = h("a", { href: URL.createObjectURL(await response.blob()), download: name });
      document.body.append(link); link.click(); link.remove();
    } catch (err) { toast(err.message); }
  }
  const monthlyHead = ["firm", "elevators", "verified visits", "flagged records", "overdue", "on time", "lockouts", "overrides", "entrapments", "in time", "drills"];
  main.append(h("h1", {}, "Reports"),
    h("div", { class: "toolbar" }, "Month ", month,
      h("button", { class: "secondary", onclick: () => download(`/reports/monthly?month=${month.value}&format=csv`, `monthly-${month.value}.csv`) }, "Monthly report CSV")),
    h("h2", {}, "Monthly firm report (A4)"),
    h("table", {}, h("thead", {}, h("tr", {}, ...monthlyHead.map(t => h("th", {}, t)))), monthly));
  const canKpi = can(["admin", "regulator", "firm_manager", "dispatcher"]);
  if (canKpi) {
    main.append(h("h2", {}, "Rescue KPIs (R7), last 12 months ",
      h("button", { class: "secondary", onclick: () => download("/reports/rescue-kpis?format=csv", "rescue-kpis.csv") }, "CSV")),
      h("table", {}, h("thead", {}, h("tr", {}, ...["month", "firm", "region", "incidents", "answered ≤ 3 min", "on site by deadline", "mean arrival min", "p90 arrival min", "mean release min"].map(t => h("th", {}, t)))), kpis));
  }
  ctx.reload = async () => {
    try {
      const rows = await api(`/reports/monthly?month=${month.value}`);
      monthly.replaceChildren(...(rows.length ? rows.map(r => h("tr", {},
        h("td", {}, r.firm_name), ...[r.elevators, r.verified_visits, r.flagged_records, r.overdue_elevators].map(v => h("td", { class: "num" }, v)),
        h("td", { class: "num" }, pctText(r.on_time_maintenance_rate)), h("td", { class: "num" }, r.lockouts), h("td", { class: "num" }, r.overrides),
        h("td", { class: "num" }, r.entrapments), h("td", { class: "num" }, pctText(r.entrapments_within_deadline)), h("td", { class: "num" }, r.drills)))
        : [h("tr", {}, h("td", { colspan: 11, class: "muted" }, "no elevators in scope"))]));
      if (canKpi) {
        const k = await api("/reports/rescue-kpis");
        kpis.replaceChildren(...(k.length ? k.map(r => h("tr", {}, h("td", {}, r.month.slice(0, 7)), h("td", {}, r.firm_name || "—"), h("td", { class: "num" }, r.jurisdiction_id),
          h("td", { class: "num" }, r.incidents), h("td", { class: "num" }, pctText(r.answered_within_3_min)), h("td", { class: "num" }, pctText(r.arrived_within_deadline)),
          h("td", { class: "num" }, num(r.mean_arrival_min)), h("td", { class: "num" }, num(r.p90_arrival_min)), h("td", { class: "num" }, num(r.mean_release_min))))
          : [h("tr", {}, h("td", { colspan: 9, class: "muted" }, "no incidents"))]));
      }
    } catch (err) { toast(err.message); }
  };
  ctx.reload();
}

// Regulator view of the compliance log.
function renderAudit(main, ctx) {
  const status = h("div", { class: "card", id: "audit-verify" }, "verifying the chain…");
  const kind = h("input", { id: "audit-kind", placeholder: "kind, e.g. maintenance.verdict" });
  const rows = h("tbody", { id: "audit-rows" });
  const more = h("button", { class: "secondary", onclick: () => load(true) }, "Older entries →");
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
  main.append(h("h1", {}, "Compliance log"), status,
    h("div", { class: "toolbar" }, kind, h("button", { onclick: () => { after = 0; load(false); } }, "Filter"),
      h("button", { class: "secondary", onclick: () => download("jsonl") }, "Export JSONL"),
      h("button", { class: "secondary", onclick: () => download("csv") }, "Export CSV")),
    h("table", {}, h("thead", {}, h("tr", {}, ...["#", "at", "kind", "subject", "asset", "actor", "body", "hash"].map(t => h("th", {}, t)))), rows),
    h("div", { class: "toolbar" }, more));
  async function load(append) {
    const q = new URLSearchParams({ after_seq: String(after), limit: "100" });
    if (kind.value) q.set("kind", kind.value.trim());
    try {
      const page = await api(`/audit/log?${q}`);
      const trs = page.items.map(e => h("tr", { dataset: { seq: e.seq } }, h("td", { class: "num" }, e.seq), h("td", {}, fmtTime(e.at)),
        h("td", {}, e.kind), h("td", {}, `${e.subject_type} ${e.subject_id}`), h("td", {}, e.device_id || "—"), h("td", {}, e.actor),
        h("td", {}, h("pre", { class: "body" }, JSON.stringify(e.body))), h("td", { class: "muted", title: e.hash }, e.hash.slice(0, 12) + "…")));
      if (append) rows.append(...trs); else rows.replaceChildren(...trs);
      after = page.next_after_seq || after;
      more.disabled = !page.next_after_seq;
    } catch (err) { toast(err.message); }
  }
  ctx.reload = async () => {
    try {
      const v = await api("/audit/verify");
      status.replaceChildren(v.ok ? badge("ok") : badge("breached"), " ",
        v.ok ? `chain verified: ${v.entries} entries, head ${v.head_hash.slice(0, 16)}…, ${v.checkpoints} signed checkpoints`
             : `TAMPERED: ${v.problem || v.checkpoint_problems.join("; ")}`);
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
  const features = await api("/features").catch(() => ({}));
  S.available = features;
  document.getElementById("top").hidden = false;
  document.getElementById("who").textContent = `${S.user.username} (${S.user.role.replace("_", " ")})`;
  buildNav();
  await Promise.all([syncClock(), loadAssets()]);
  refreshIncidentDevices();
  route();
  openStream();
}

window.addEventListener("hashchange", route);
document.getElementById("logout").addEventListener("click", () => logout());
setInterval(() => {
  const c = document.getElementById("clock");
  if (S.user) c.textContent = new Date(platformNow()).toISOString().slice(0, 19).replace("T", " ") + "Z";
}, 500);
setInterval(() => { if (S.user) syncClock().catch(() => {}); }, 30000);
if (S.token) start(); else showLogin();
