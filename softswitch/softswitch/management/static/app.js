// The softswitch dashboard: plain JavaScript of our own, no library and nothing from a CDN,
// so it works on a switch with no Internet. Everything it shows comes from the management
// API of the same origin (docs/management.md), read every POLL_MS while a page is open.
//
// Tables are updated in place, row by row and cell by cell, rather than rebuilt: a button
// the operator is about to click must not be replaced under the pointer by a refresh.
// Every number sits in an element with a stable id or data-key/data-field, and its raw API
// value in data-value (JSON), so tests and scripts read the figure, not its formatting.
"use strict";

const POLL_MS = 2000;
const TOKEN_KEY = "softswitch-token";
const HOUR_MS = 3600 * 1000;
// The history has a point every 5 s; a longer gap means the switch was not sampling (it
// restarted, or its loop stalled), and the chart breaks the line there instead of
// drawing a straight segment through time nobody measured.
const GAP_MS = 15 * 1000;

const state = {
  page: "overview",
  // Session storage, not local storage: the token may book money, so it is not left on
  // disk after the tab is closed.
  token: sessionStorage.getItem(TOKEN_KEY),
  history: [],
  timer: null,
  run: 0,
  asking: false,
};

const $ = (selector) => document.querySelector(selector);

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// One API request; the token goes with it when the page has one. A 401 opens the token
// dialog and fails this request (the next refresh, after the token is given, succeeds).
async function api(method, path) {
  const headers = {};
  if (state.token) headers.Authorization = "Bearer " + state.token;
  let response;
  try {
    response = await fetch(path, { method, headers, cache: "no-store" });
  } catch (e) {
    throw new ApiError(0, "the switch does not answer (" + e.message + ")");
  }
  if (response.status === 401) {
    askToken(state.token ? "The token was refused: enter the right one."
                         : "This switch asks for its [management] token.");
    throw new ApiError(401, "a token is needed");
  }
  const type = response.headers.get("Content-Type") || "";
  const body = type.includes("json") ? await response.json() : await response.text();
  if (!response.ok) {
    const message = body && body.error ? body.error : response.status + " " + response.statusText;
    throw new ApiError(response.status, message);
  }
  return body;
}

// What the API answers for a key it has never seen: zeros, and no ratio to show.
const NOTHING_YET = {
  attempts: 0, answered: 0, asr: null, ner: null, acd: null, pdd: { avg: null },
  concurrent: { current: 0, peak: 0 }, cps: { current: 0, peak: 0 },
};

// Statistics by key, as a function of the key: a key the series do not list has had no
// call yet (zeros, as the API answers for it); a switch that keeps no statistics (503)
// gets dashes (null) everywhere.
async function statsOf(dimension) {
  let answer;
  try {
    answer = await api("GET", "/api/stats/" + dimension + "?window=" + windowName());
  } catch (e) {
    if (e.status === 503) return () => null;
    throw e;
  }
  return (key) => answer.series[key] || NOTHING_YET;
}

function windowName() {
  return $("#window").value;
}

// ---- formatting --------------------------------------------------------------------

const DASH = "–";

function plain(value) {
  return value === null || value === undefined ? DASH : String(value);
}

function percent(ratio) {
  return ratio === null || ratio === undefined ? DASH : (ratio * 100).toFixed(1) + " %";
}

function seconds(value) {
  if (value === null || value === undefined) return DASH;
  if (value < 60) return value.toFixed(1) + " s";
  const whole = Math.round(value);
  const minutes = Math.floor(whole / 60);
  return minutes + ":" + String(whole % 60).padStart(2, "0");
}

// Post-dial delays: milliseconds below a second (a loopback test's PDD is a few of them).
function delay(value) {
  if (value === null || value === undefined) return DASH;
  return value < 1 ? Math.round(value * 1000) + " ms" : value.toFixed(2) + " s";
}

function rate(value) {
  return value === null || value === undefined ? DASH : String(Math.round(value * 100) / 100);
}

function clock(iso) {
  if (!iso) return DASH;
  return new Date(iso).toISOString().slice(11, 19);
}

function stamp(iso) {
  if (!iso) return DASH;
  return new Date(iso).toISOString().slice(0, 19).replace("T", " ");
}

// Write a figure into an element: its text, and its raw value for machines. Untouched when
// unchanged, so a refresh that changes nothing changes nothing on screen.
function show(element, value, text) {
  const raw = JSON.stringify(value === undefined ? null : value);
  if (element.dataset.value !== raw) element.dataset.value = raw;
  if (element.textContent !== text) element.textContent = text;
}

// ---- tables ------------------------------------------------------------------------

const rowsOf = new WeakMap(); // tbody -> Map(key -> tr)
const itemOf = new WeakMap(); // tr -> the API object it shows now

// Make ``tbody`` hold one row per item, in order, keyed by ``keyOf(item)``; ``fill(row,
// item)`` writes the cells. Rows of items gone are removed; others are kept and updated.
function syncRows(tbody, items, keyOf, fill) {
  let rows = rowsOf.get(tbody);
  if (!rows) {
    rows = new Map();
    rowsOf.set(tbody, rows);
  }
  const seen = new Set();
  let previous = null;
  for (const item of items) {
    const key = keyOf(item);
    seen.add(key);
    let row = rows.get(key);
    if (!row) {
      row = document.createElement("tr");
      row.dataset.key = key;
      rows.set(key, row);
    }
    itemOf.set(row, item);
    fill(row, item);
    const wanted = previous ? previous.nextSibling : tbody.firstChild;
    if (wanted !== row) tbody.insertBefore(row, wanted);
    previous = row;
  }
  for (const [key, row] of rows) {
    if (!seen.has(key)) {
      row.remove();
      rows.delete(key);
    }
  }
}

// The row's cell for ``field`` (made on first use, so cells come in the order first asked).
function cellOf(row, field, numeric) {
  let cell = row.querySelector(':scope > [data-field="' + field + '"]');
  if (!cell) {
    cell = document.createElement(field === "id" ? "th" : "td");
    if (field === "id") cell.scope = "row";
    cell.dataset.field = field;
    if (numeric) cell.className = "num";
    row.appendChild(cell);
  }
  return cell;
}

function cell(row, field, value, text, numeric = false) {
  show(cellOf(row, field, numeric), value, text);
}

// An action button in the row; ``onClick(item)`` runs with the row's item as it is now (the
// listener is attached once, when the button is made, and reads the row's latest item).
function button(row, action, label, enabled, onClick) {
  const holder = cellOf(row, "action", false);
  let control = holder.querySelector("button");
  if (!control) {
    control = document.createElement("button");
    control.type = "button";
    control.addEventListener("click", () => onClick(itemOf.get(row)));
    holder.appendChild(control);
  }
  if (control.dataset.action !== action) control.dataset.action = action;
  if (control.textContent !== label) control.textContent = label;
  control.disabled = !enabled;
}

// Run an operator's action: ask first (these change what the switch does), then refresh.
async function act(question, method, path, done) {
  if (!window.confirm(question)) return;
  try {
    await api(method, path);
    setStatus(done, false);
  } catch (e) {
    setStatus(e.message, true);
    return;
  }
  poll();
}

// ---- pages -------------------------------------------------------------------------

async function refreshOverview() {
  const since = state.history.length
    ? "?since=" + encodeURIComponent(state.history[state.history.length - 1].t)
    : "";
  const history = api("GET", "/api/history" + since).catch((e) => {
    if (e.status === 503) return null; // no statistics: tiles only, no charts
    throw e;
  });
  const alarms = api("GET", "/api/alarms").catch((e) => {
    if (e.status === 503) return { alarms: [] }; // this switch evaluates no alarms
    throw e;
  });
  const [stats, newer, raised] = await Promise.all([statsOf("switch"), history, alarms]);
  showAlarms(raised.alarms);
  const s = stats("all");
  const get = (f) => (s ? f(s) : null);
  show($("#ov-calls"), get((x) => x.concurrent.current), plain(get((x) => x.concurrent.current)));
  show($("#ov-cps"), get((x) => x.cps.current), plain(get((x) => x.cps.current)));
  show($("#ov-attempts"), get((x) => x.attempts), plain(get((x) => x.attempts)));
  show($("#ov-answered"), get((x) => x.answered), plain(get((x) => x.answered)));
  show($("#ov-asr"), get((x) => x.asr), percent(get((x) => x.asr)));
  show($("#ov-ner"), get((x) => x.ner), percent(get((x) => x.ner)));
  show($("#ov-acd"), get((x) => x.acd), seconds(get((x) => x.acd)));
  show($("#ov-pdd"), get((x) => x.pdd.avg), delay(get((x) => x.pdd.avg)));
  show($("#ov-peak-calls"), get((x) => x.concurrent.peak), plain(get((x) => x.concurrent.peak)));
  show($("#ov-peak-cps"), get((x) => x.cps.peak), plain(get((x) => x.cps.peak)));
  if (newer) {
    state.history.push(...newer.points);
    // Keep one hour: the chart shows no more, and the page may stay open for days.
    const oldest = Date.parse(state.history[state.history.length - 1]?.t) - HOUR_MS;
    while (state.history.length && Date.parse(state.history[0].t) < oldest) state.history.shift();
  }
  drawCharts();
}

// The alarms raised now, one row per rule and key (``GET /api/alarms``).
function showAlarms(alarms) {
  syncRows($("#alarms tbody"), alarms, (a) => a.rule + "/" + a.key, (row, a) => {
    const threshold = "below" in a ? "below " + a.below : "above " + a.above;
    cell(row, "id", a.rule, a.rule);
    cell(row, "scope", a.scope, a.scope);
    cell(row, "key", a.key, a.key);
    cell(row, "metric", a.metric, a.metric + " (" + a.window + ")");
    cell(row, "value", a.value, plain(a.value), true);
    cell(row, "threshold", threshold, threshold + ", clears at " + a.clear);
    cell(row, "since", a.since, clock(a.since));
    cell(row, "actions", a.actions.join(", "), a.actions.join(", "));
  });
  $("#alarms-empty").hidden = alarms.length > 0;
}

function drawCharts() {
  const formats = { calls: plain, cps: rate, asr: percent, acd: seconds, pdd: delay };
  for (const canvas of document.querySelectorAll(".charts canvas")) {
    const field = canvas.dataset.field;
    chart(canvas, state.history, field, formats[field]);
  }
}

async function refreshGateways() {
  const [listed, stats] = await Promise.all([api("GET", "/api/gateways"), statsOf("gateway")]);
  syncRows($("#gateways tbody"), listed.gateways, (g) => g.id, (row, g) => {
    const s = stats(g.id);
    const get = (f) => (s ? f(s) : null);
    let condition = "enabled";
    if (!g.enabled_in_file) condition = "disabled (file)";
    else if (g.disabled_by_operator) condition = "disabled (operator)";
    else if (g.disabled_by_alarm) condition = "disabled (alarm " + g.disabled_by_alarm + ")";
    row.classList.toggle("off", !g.enabled);
    cell(row, "id", g.id, g.id);
    cell(row, "address", g.address, g.address + " " + g.transport);
    cell(row, "state", condition, condition);
    cell(row, "health", g.health, g.health);
    cellOf(row, "health").className = "health-" + g.health.replace(" ", "-");
    cell(row, "calls", g.calls, g.capacity === null ? String(g.calls) : g.calls + " / " + g.capacity, true);
    cell(row, "cps", g.cps, g.max_cps === null ? String(g.cps) : g.cps + " / " + g.max_cps, true);
    cell(row, "attempts", get((x) => x.attempts), plain(get((x) => x.attempts)), true);
    cell(row, "answered", get((x) => x.answered), plain(get((x) => x.answered)), true);
    cell(row, "asr", get((x) => x.asr), percent(get((x) => x.asr)), true);
    cell(row, "acd", get((x) => x.acd), seconds(get((x) => x.acd)), true);
    cell(row, "pdd", get((x) => x.pdd.avg), delay(get((x) => x.pdd.avg)), true);
    // Only what an operator disabled can be enabled here; what the file disables, only
    // the file can enable (the API answers 409), so the button is off for it.
    const verb = g.disabled_by_operator ? "enable" : "disable";
    button(row, verb, verb === "enable" ? "Enable" : "Disable", g.enabled_in_file, (item) => {
      const now = item.disabled_by_operator ? "enable" : "disable";
      const question = now === "disable"
        ? "Disable gateway " + item.id + "? New calls skip it (calls on it go on) until it is enabled again or the switch restarts."
        : "Enable gateway " + item.id + " again?";
      act(question, "POST", "/api/gateways/" + encodeURIComponent(item.id) + "/" + now,
        "Gateway " + item.id + ": " + now + "d.");
    });
  });
}

async function refreshAccounts() {
  const [listed, stats] = await Promise.all([api("GET", "/api/accounts"), statsOf("account")]);
  // Balances only for billed accounts (one request each; an unbilled one has none: 409).
  const balances = new Map();
  await Promise.all(listed.accounts.filter((a) => a.billing !== "none").map(async (a) => {
    try {
      balances.set(a.id, await api("GET", "/api/accounts/" + encodeURIComponent(a.id) + "/balance"));
    } catch (e) {
      if (e.status === 401) throw e;
      balances.set(a.id, null); // shown as a dash; the status line is for the page's failure
    }
  }));
  syncRows($("#accounts tbody"), listed.accounts, (a) => a.id, (row, a) => {
    const s = stats(a.id);
    const get = (f) => (s ? f(s) : null);
    const live = balances.get(a.id)?.live ?? null;
    let condition = "enabled";
    if (!a.enabled_in_file) condition = "disabled (file)";
    else if (a.disabled_by_operator) condition = "disabled (operator)";
    row.classList.toggle("off", !a.enabled);
    cell(row, "id", a.id, a.id);
    cell(row, "state", condition, condition);
    cell(row, "auth", a.auth, a.auth);
    cell(row, "billing", a.billing, a.billing);
    cell(row, "balance", live && live.balance, plain(live && live.balance), true);
    cell(row, "available", live && live.available, plain(live && live.available), true);
    cell(row, "calls", a.calls, a.max_calls === null ? String(a.calls) : a.calls + " / " + a.max_calls, true);
    cell(row, "cps", a.cps, a.max_cps === null ? String(a.cps) : a.cps + " / " + a.max_cps, true);
    cell(row, "attempts", get((x) => x.attempts), plain(get((x) => x.attempts)), true);
    cell(row, "asr", get((x) => x.asr), percent(get((x) => x.asr)), true);
    const verb = a.disabled_by_operator ? "enable" : "disable";
    button(row, verb, verb === "enable" ? "Enable" : "Disable", a.enabled_in_file, (item) => {
      const now = item.disabled_by_operator ? "enable" : "disable";
      const question = now === "disable"
        ? "Disable account " + item.id + "? Its new calls are refused (403) until it is enabled again or the switch restarts."
        : "Enable account " + item.id + " again?";
      act(question, "POST", "/api/accounts/" + encodeURIComponent(item.id) + "/" + now,
        "Account " + item.id + ": " + now + "d.");
    });
  });
}

async function refreshCalls() {
  const listed = await api("GET", "/api/calls");
  syncRows($("#calls tbody"), listed.calls, (c) => c.id, (row, c) => {
    cell(row, "id", c.id, c.id);
    cell(row, "account", c.account, c.account);
    cell(row, "gateway", c.gateway, plain(c.gateway));
    cell(row, "number", c.number, c.number);
    cell(row, "state", c.state, c.state);
    cell(row, "started_at", c.started_at, clock(c.started_at));
    cell(row, "duration", c.duration, c.state === "answered" ? seconds(c.duration) : DASH, true);
    cell(row, "attempts", c.attempts, String(c.attempts), true);
    button(row, "hangup", "Hang up", true, (item) => {
      act("Hang up call " + item.id + " (" + item.account + " to " + item.number + ")?",
        "DELETE", "/api/calls/" + encodeURIComponent(item.id), "Call " + item.id + " hung up.");
    });
  });
  $("#calls-empty").hidden = listed.calls.length > 0;
}

// ---- CDR search (on demand: a search is a database read, not something to poll) --------

function cdrQuery(withLimit) {
  const form = new FormData($("#cdr-form"));
  const query = new URLSearchParams();
  for (const name of ["since", "until", "account", "call_id"]) {
    const value = String(form.get(name) || "").trim();
    if (value) query.set(name, value);
  }
  const limit = String(form.get("limit") || "").trim();
  if (withLimit && limit) query.set("limit", limit);
  const text = query.toString();
  return text ? "?" + text : "";
}

// The export link follows the form, so it works as a plain link (no token needed).
function updateCsvLink() {
  $("#cdr-csv").href = "/api/cdrs.csv" + cdrQuery(false);
}

async function searchCdrs(event) {
  event.preventDefault();
  updateCsvLink();
  let found;
  try {
    found = await api("GET", "/api/cdrs" + cdrQuery(true));
  } catch (e) {
    show($("#cdr-count"), null, "Search failed: " + e.message);
    return;
  }
  const count = found.count + (found.count === found.limit ? " (the limit: narrow the search)" : "");
  show($("#cdr-count"), found.count, count + " CDR" + (found.count === 1 ? "" : "s") + ", oldest first.");
  // Keyed by position: two CDRs can share a Call-ID (a retry after a refusal).
  syncRows($("#cdrs tbody"), found.cdrs.map((r, i) => [i, r]), ([i]) => String(i), (row, [, r]) => {
    cell(row, "invite_at", r.invite_at, stamp(r.invite_at));
    cell(row, "call_id", r.call_id, r.call_id);
    cell(row, "account_id", r.account_id, plain(r.account_id));
    cell(row, "callee_normalised", r.callee_normalised, plain(r.callee_normalised));
    cell(row, "gateway_id", r.gateway_id, plain(r.gateway_id));
    const tried = (r.attempts || []).map((a) => a.gateway_id);
    cell(row, "attempts", tried, tried.join(", ") || DASH);
    cell(row, "status", r.status, plain(r.status), true);
    cell(row, "end_reason", r.end_reason, r.end_reason);
    cell(row, "duration", r.duration, seconds(r.duration), true);
    cell(row, "pdd", r.pdd, delay(r.pdd), true);
    cell(row, "sell_cost", r.sell_cost, plain(r.sell_cost), true);
  });
}

// With a token, a plain link cannot send it: fetch the CSV with the header and hand the
// browser the result as a download instead.
async function downloadCsv(event) {
  if (!state.token) return; // no token: the link itself works
  event.preventDefault();
  try {
    const response = await fetch($("#cdr-csv").href, {
      headers: { Authorization: "Bearer " + state.token },
      cache: "no-store",
    });
    if (!response.ok) throw new Error(response.status + " " + response.statusText);
    const url = URL.createObjectURL(await response.blob());
    const link = document.createElement("a");
    link.href = url;
    link.download = "cdrs.csv";
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  } catch (e) {
    setStatus("CSV export failed: " + e.message, true);
  }
}

// ---- charts: our own small line chart on <canvas> ------------------------------------

// A round grid step at or above ``value`` (1, 2, 2.5 or 5 times a power of ten), so the
// axis reads 0, 5, 10, 15, 20 rather than 0, 4.3, 8.6...; whole numbers for counts.
function niceStep(value, whole) {
  if (!(value > 0)) return whole ? 1 : 0.25;
  const power = Math.pow(10, Math.floor(Math.log10(value)));
  let step = 10 * power;
  for (const m of [1, 2, 2.5, 5]) {
    if (m * power >= value) {
      step = m * power;
      break;
    }
  }
  return whole ? Math.max(1, Math.ceil(step)) : step;
}

// Axis labels: three significant digits at most (steps are round), no trailing zeros.
const short = (v) => String(Number(v.toPrecision(3)));
const AXIS = {
  calls: short,
  cps: short,
  asr: (v) => short(v * 100) + " %",
  acd: (v) => short(v) + " s",
  pdd: (v) => short(v) + " s",
};

// Draw ``points[field]`` over the hour ending at the newest point. Colours come from CSS
// (the canvas's ``color`` and custom properties), so the style sheet themes the charts.
function chart(canvas, points, field, format) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 300;
  const height = canvas.clientHeight || 150;
  if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
  if (canvas.height !== Math.round(height * ratio)) canvas.height = Math.round(height * ratio);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const css = getComputedStyle(canvas);
  const ink = css.color;
  const line = css.getPropertyValue("--line").trim() || ink;
  const grid = css.getPropertyValue("--grid").trim() || "#ccc";
  ctx.font = "11px " + css.fontFamily;

  const left = 52, right = 8, top = 8, bottom = 20;
  const plotW = width - left - right, plotH = height - top - bottom;
  const end = points.length ? Date.parse(points[points.length - 1].t) : Date.now();
  const start = end - HOUR_MS;
  const values = points.map((p) => p[field]).filter((v) => v !== null && v !== undefined);
  const highest = values.length ? Math.max(...values) : 0;
  // Four grid steps; ASR always 0 to 100 %, so two charts of it compare at a glance.
  const step = field === "asr" ? 0.25 : niceStep(highest / 4, field === "calls");
  const max = 4 * step;
  const x = (t) => left + ((t - start) / HOUR_MS) * plotW;
  const y = (v) => top + plotH - (v / max) * plotH;

  // Grid and labels: four steps up the value axis, a mark every quarter hour along time.
  ctx.strokeStyle = grid;
  ctx.fillStyle = ink;
  ctx.lineWidth = 1;
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (let i = 0; i <= 4; i++) {
    const v = (max * i) / 4;
    const py = Math.round(y(v)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(left, py);
    ctx.lineTo(left + plotW, py);
    ctx.stroke();
    ctx.fillText(AXIS[field](v), left - 4, py);
  }
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  const quarter = 15 * 60 * 1000;
  for (let t = Math.ceil(start / quarter) * quarter; t <= end; t += quarter) {
    const px = Math.round(x(t)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(px, top);
    ctx.lineTo(px, top + plotH);
    ctx.stroke();
    ctx.fillText(new Date(t).toISOString().slice(11, 16), px, top + plotH + 4);
  }

  if (!values.length) {
    ctx.textBaseline = "middle";
    ctx.fillText("No data yet (a point every 5 s)", left + plotW / 2, top + plotH / 2);
    canvas.setAttribute("aria-label", canvas.dataset.title + ": no data yet");
    return;
  }

  // The line, broken where a value is missing (no call to divide by) or time was skipped.
  // A point with no neighbour would draw nothing, so each run's first point and the newest
  // get a dot.
  ctx.strokeStyle = line;
  ctx.fillStyle = line;
  ctx.lineWidth = 2;
  ctx.lineJoin = "round";
  const dot = (px, py) => {
    ctx.beginPath();
    ctx.arc(px, py, 3, 0, 2 * Math.PI);
    ctx.fill();
  };
  let run = [], before = null;
  const finish = () => {
    if (run.length > 1) {
      ctx.beginPath();
      run.forEach(([px, py], i) => (i ? ctx.lineTo(px, py) : ctx.moveTo(px, py)));
      ctx.stroke();
    }
    if (run.length) dot(...run[0]);
    run = [];
  };
  for (const p of points) {
    const t = Date.parse(p.t);
    const v = p[field];
    if (v === null || v === undefined || (before !== null && t - before > GAP_MS)) finish();
    if (v !== null && v !== undefined) run.push([x(t), y(v)]);
    before = t;
  }
  if (run.length) dot(...run[run.length - 1]);
  finish();
  const latest = points[points.length - 1][field];
  canvas.dataset.latest = JSON.stringify(latest === undefined ? null : latest);
  canvas.setAttribute("aria-label", canvas.dataset.title + ", last hour: now " + format(latest) + ", highest " + format(highest));
}

// ---- the page's frame: routing, polling, status, token -----------------------------

function setStatus(text, failed) {
  const status = $("#status");
  status.textContent = text;
  status.classList.toggle("failed", failed);
}

const REFRESH = {
  overview: refreshOverview,
  gateways: refreshGateways,
  accounts: refreshAccounts,
  calls: refreshCalls,
  cdrs: null,
};

function showPage() {
  const wanted = location.hash.slice(1);
  state.page = wanted in REFRESH ? wanted : "overview";
  for (const section of document.querySelectorAll("main > section")) {
    section.hidden = section.dataset.page !== state.page;
  }
  for (const link of document.querySelectorAll("nav a")) {
    if (link.dataset.page === state.page) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.body.dataset.page = state.page;
  poll();
}

// Refresh the open page, then again POLL_MS after it answered (never two at once: a slow
// answer delays the next poll rather than piling requests up). ``run`` numbers the chains:
// a poll started by a click supersedes the waiting one.
async function poll() {
  const run = ++state.run;
  clearTimeout(state.timer);
  const refresh = REFRESH[state.page];
  if (refresh && !state.asking && !document.hidden) {
    try {
      await refresh();
      if (run === state.run) {
        setStatus("Updated " + new Date().toISOString().slice(11, 19) + " UTC", false);
        document.body.dataset.refreshed = String(Number(document.body.dataset.refreshed || 0) + 1);
      }
    } catch (e) {
      if (e.status !== 401 && run === state.run) setStatus(e.message, true);
    }
  } else if (!refresh) {
    setStatus("Search on demand: fill in the form.", false);
  }
  if (run === state.run) state.timer = setTimeout(poll, POLL_MS);
}

function askToken(why) {
  if (state.asking) return;
  state.asking = true;
  $("#token-why").textContent = why;
  setStatus("Waiting for the management token.", false);
  $("#token-dialog").showModal();
  $("#token-input").focus();
}

function useToken(event) {
  event.preventDefault();
  const value = $("#token-input").value.trim();
  if (!value) return;
  state.token = value;
  sessionStorage.setItem(TOKEN_KEY, value);
  $("#token-input").value = "";
  $("#token-dialog").close();
  state.asking = false;
  poll();
}

function start() {
  for (const canvas of document.querySelectorAll(".charts canvas")) {
    canvas.dataset.title = canvas.closest("figure").querySelector("figcaption").textContent;
  }
  window.addEventListener("hashchange", showPage);
  // A hidden tab does not poll; it catches up as soon as it is shown again.
  document.addEventListener("visibilitychange", () => { if (!document.hidden) poll(); });
  $("#window").addEventListener("change", () => poll());
  $("#token-form").addEventListener("submit", useToken);
  // Without a token the page cannot do anything: Escape does not close the dialog.
  $("#token-dialog").addEventListener("cancel", (event) => event.preventDefault());
  $("#cdr-form").addEventListener("submit", searchCdrs);
  $("#cdr-form").addEventListener("input", updateCsvLink);
  $("#cdr-csv").addEventListener("click", downloadCsv);
  window.addEventListener("resize", drawCharts);
  showPage();
}

start();
