// The orbithil ground console: log in, then live telemetry (limit colouring, plots), the
// payload's pool and power, events, commands built from the dictionary with their
// verification stages, and the tenants' tokens (the ledger the stack reports). Everything
// comes from the server's API (/api/openapi.json); the server signs telecommands, so no key
// is ever in the browser. A tenant user sees its own account, commands and jobs, and may
// send only what a tenant may (the server signs them with its tenant's key).
"use strict";

const $ = (id) => document.getElementById(id);
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const child of children) node.append(child);
  return node;
};

const PAYLOAD_KEYS = ["POOL_CHIPS", "POOL_HEALTHY", "POLICY", "SOC", "SOC_MIN", "SUNLIT",
  "BATTERY_WH", "POWER_IN_W", "POWER_OUT_W", "TEMP_MAX_C", "JOBS_QUEUED", "JOBS_DEFERRED",
  "JOBS_DONE", "ITEMS_DONE", "ITEMS_FAILED", "DISAGREEMENTS", "FENCES", "READMISSIONS"];
const DEFAULT_PLOTS = ["SOC", "TEMP_MAX_C"];
const LEDGER_EVENTS = new Set(["TOKENS_GRANTED", "TOKENS_RESERVED", "JOB_SETTLED", "TOKENS_RELEASED"]);
const STAGE_ORDER = ["SENT", "ACCEPTED", "STARTED", "COMPLETED", "FAILED"];

const state = {
  me: null,
  dict: null,
  channels: new Map(),   // name -> dictionary entry
  enums: {},
  values: new Map(),     // name -> {value, rx_us}
  dirty: new Set(),
  rows: new Map(),       // name -> <tr>
  plots: new Map(),      // name -> {plot, box, value}
  commands: new Map(),   // seq -> record
  ws: null,
  retryMs: 500,
  renderPending: false,
  pendingRx: [],         // rx_us of telemetry messages not yet on the page
  statusTimer: null,
  lastStatus: null,
  passes: null,          // {data: /api/passes, fetchedMs}
  ledgerTimer: null,     // a ledger refresh due after a ledger event
};

const isTenant = () => state.me?.role === "tenant";
// packet arrival at the server -> on the page, in ms (read by `orbithil bench ground`)
window.orbithilLatency = [];

class ApiError extends Error {
  constructor(status, detail) { super(`${status}: ${detail}`); this.status = status; this.detail = detail; }
}

function detailText(data) {
  if (!data) return "";
  if (typeof data.detail === "string") return data.detail;
  if (Array.isArray(data.detail)) return data.detail.map((d) => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`).join("; ");
  return JSON.stringify(data);
}

async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    credentials: "same-origin",
    headers: body ? { "content-type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  let data = null;
  if (response.status !== 204) {
    try { data = await response.json(); } catch (_) { data = null; }
  }
  if (!response.ok) {
    if (response.status === 401 && path !== "/api/login" && state.me) {
      showLogin("Your session ended: log in again.");
    }
    throw new ApiError(response.status, detailText(data) || response.statusText);
  }
  return data;
}

// --- values -----------------------------------------------------------------------------
function channelOf(name) { return state.channels.get(name); }

function formatValue(name, value) {
  if (value === null || value === undefined) return "—";
  const names = state.enums[name];
  if (names && Number.isInteger(value) && value >= 0 && value < names.length) return names[value];
  const channel = channelOf(name);
  if (name === "DICT_HASH") return (value >>> 0).toString(16).padStart(8, "0");
  if (channel && channel.type === "bool") return value ? "yes" : "no";
  if (Number.isInteger(value)) return String(value);
  const abs = Math.abs(value);
  return abs !== 0 && (abs < 1e-3 || abs >= 1e7) ? value.toExponential(4) : String(+value.toPrecision(6));
}

function outOfLimits(name, value) {
  const channel = channelOf(name);
  if (!channel || value === null) return false;
  return (channel.high !== null && value > channel.high) || (channel.low !== null && value < channel.low);
}

function limitsText(channel) {
  const low = channel.low, high = channel.high;
  if (low === null && high === null) return "";
  if (low === null) return `≤ ${high}`;
  if (high === null) return `≥ ${low}`;
  return `${low} .. ${high}`;
}

function applyTelemetry(values, rx_us) {
  for (const [name, value] of Object.entries(values)) {
    state.values.set(name, { value, rx_us });
    state.dirty.add(name);
    const plotted = state.plots.get(name);
    if (plotted) plotted.plot.push(rx_us / 1e6, value);
  }
  state.pendingRx.push(rx_us);
  scheduleRender();
}

function scheduleRender() {
  if (state.renderPending) return;
  state.renderPending = true;
  requestAnimationFrame(render);
}

function render() {
  state.renderPending = false;
  const filter = $("tm-filter").value.trim().toUpperCase();
  for (const name of state.dirty) {
    const { value } = state.values.get(name);
    let row = state.rows.get(name);
    if (!row) row = addRow(name);
    const cell = row.querySelector("td.value");
    const text = formatValue(name, value);
    if (cell.textContent !== text) {
      cell.textContent = text;
      // flash: alternate two classes with the same animation, so it restarts without
      // forcing a layout per cell
      const again = cell.classList.contains("changed");
      cell.classList.toggle("changed", !again);
      cell.classList.toggle("changed-again", again);
    }
    const out = outOfLimits(name, value);
    cell.classList.toggle("out", out);
    cell.classList.toggle("in", !out && (channelOf(name)?.low !== null || channelOf(name)?.high !== null));
    row.dataset.out = out ? "1" : "0";
    row.hidden = filter !== "" && !name.includes(filter);
    const plotted = state.plots.get(name);
    if (plotted) plotted.value.textContent = `${text} ${channelOf(name)?.units || ""}`;
  }
  state.dirty.clear();
  renderHeader();
  renderPayload();
  const now = Date.now() * 1000;
  for (const rx of state.pendingRx) {
    window.orbithilLatency.push((now - rx) / 1000);
  }
  if (window.orbithilLatency.length > 10000) window.orbithilLatency.splice(0, 5000);
  state.pendingRx = [];
}

function addRow(name) {
  const channel = channelOf(name) || { units: "", low: null, high: null, doc: "" };
  const row = el("tr", { id: `tm-${name}`, "data-channel": name, title: channel.doc || "" },
    el("td", {}, name), el("td", { class: "value" }, "—"), el("td", {}, channel.units || ""),
    el("td", {}, limitsText(channel)));
  row.addEventListener("click", () => togglePlot(name));
  // keep the dictionary's order
  const order = [...state.channels.keys()];
  const index = order.indexOf(name);
  const body = $("tm-table").tBodies[0];
  let before = null;
  for (const other of body.rows) {
    if (order.indexOf(other.dataset.channel) > index) { before = other; break; }
  }
  body.insertBefore(row, before);
  state.rows.set(name, row);
  if (state.plots.has(name)) row.classList.add("plotted");
  return row;
}

function value(name) { const v = state.values.get(name); return v ? v.value : null; }

function renderHeader() {
  const mode = value("MODE");
  const modeBadge = $("mode");
  modeBadge.textContent = `mode: ${mode === null ? "?" : formatValue("MODE", mode)}`;
  modeBadge.className = "badge " + (mode === 0 ? "warn" : mode === null ? "" : "ok");
  const actions = value("FDIR_ACTIONS");
  const last = state.lastStatus?.fdir?.last;
  const fdir = $("fdir");
  fdir.textContent = `FDIR: ${actions === null ? "?" : actions} action${actions === 1 ? "" : "s"}` +
    (last ? ` — last: ${last.text}` : "");
  fdir.className = "badge " + (actions ? "bad" : actions === 0 ? "ok" : "");
}

function renderPayload() {
  const power = $("power");
  for (const name of PAYLOAD_KEYS) {
    const v = value(name);
    let item = power.querySelector(`[data-channel="${name}"]`);
    if (!item) {
      item = el("div", { "data-channel": name, title: channelOf(name)?.doc || "" },
        el("span", {}, name), el("span", { class: "v" }, "—"));
      power.append(item);
    }
    const units = channelOf(name)?.units || "";
    item.querySelector(".v").textContent = v === null ? "—" : `${formatValue(name, v)}${units ? " " + units : ""}`;
    item.classList.toggle("out", v !== null && outOfLimits(name, v));
  }
  let bar = power.querySelector(".soc");
  if (!bar) { bar = el("div", { class: "soc", title: "battery state of charge" }, el("i")); power.append(bar); }
  const soc = value("SOC");
  bar.firstChild.style.width = `${Math.max(0, Math.min(1, soc || 0)) * 100}%`;

  const chips = value("POOL_CHIPS");
  const count = chips === null ? 0 : Math.min(8, chips);
  const body = $("chips").tBodies[0];
  while (body.rows.length > count) body.deleteRow(-1);
  for (let n = 0; n < count; n++) {
    let row = body.rows[n];
    if (!row) {
      row = body.insertRow();
      row.id = `chip-${n}`;
      for (let i = 0; i < 6; i++) row.insertCell();
      row.cells[0].textContent = String(n);
    }
    const st = value(`CHIP${n}_STATE`);
    const name = st === null ? "?" : formatValue(`CHIP${n}_STATE`, st);
    row.cells[1].textContent = name;
    row.cells[1].className = `state-${name}`;
    const cells = [`CHIP${n}_TEMP_C`, `CHIP${n}_POWER_W`, `CHIP${n}_RUNS`, `CHIP${n}_FAULTS`];
    cells.forEach((channel, i) => {
      const v = value(channel);
      row.cells[i + 2].textContent = v === null ? "—" : formatValue(channel, v);
      row.cells[i + 2].className = v !== null && outOfLimits(channel, v) ? "out" : "";
    });
  }
}

async function pollStatus() {
  if (isTenant()) return;  // the server's status is the operators'
  try {
    const status = await api("GET", "/api/status");
    state.lastStatus = status;
    const badge = $("link-state");
    if (!status.last_rx_us) {
      badge.textContent = "link: no telemetry yet";
      badge.className = "badge warn";
    } else {
      const age = (status.now_us - status.last_rx_us) / 1e6;
      badge.textContent = age < 5 ? "link: receiving" : `link: quiet ${age.toFixed(0)} s`;
      badge.className = "badge " + (age < 5 ? "ok" : age < 30 ? "warn" : "bad");
    }
    $("dict-state").hidden = !status.dict_mismatch;
    renderHeader();
  } catch (error) {
    if (error.status !== 401) $("link-state").textContent = "server: unreachable";
  }
}

// --- plots ------------------------------------------------------------------------------
function plotWindow() { return Number($("plot-window").value); }

function savePlots() {
  try { localStorage.setItem("orbithil.plots", JSON.stringify([...state.plots.keys()])); } catch (_) { /* private mode */ }
}

async function togglePlot(name) {
  if (state.plots.has(name)) { removePlot(name); return; }
  const channel = channelOf(name) || {};
  const canvas = el("canvas", { "data-channel": name });
  const shown = el("span", { class: "latest" }, "");
  const close = el("button", { type: "button", title: "remove" }, "×");
  const box = el("div", { class: "plot", id: `plot-${name}` },
    el("header", {}, el("span", {}, `${name}${channel.units ? " (" + channel.units + ")" : ""}`), shown, close),
    canvas);
  close.addEventListener("click", () => removePlot(name));
  $("plots").append(box);
  const plot = new TimePlot(canvas, { windowS: plotWindow(), low: channel.low, high: channel.high, units: channel.units });
  state.plots.set(name, { plot, box, value: shown });
  state.rows.get(name)?.classList.add("plotted");
  savePlots();
  await loadHistory(name);
}

function removePlot(name, save = true) {
  const plotted = state.plots.get(name);
  if (!plotted) return;
  plotted.box.remove();
  state.plots.delete(name);
  state.rows.get(name)?.classList.remove("plotted");
  if (save) savePlots();
}

async function loadHistory(name) {
  const plotted = state.plots.get(name);
  if (!plotted) return;
  try {
    const h = await api("GET", `/api/telemetry/${encodeURIComponent(name)}/history?since=${plotWindow()}s&max_points=3000`);
    const live = plotted.plot;
    const lastArchived = h.rx_us.length ? h.rx_us[h.rx_us.length - 1] / 1e6 : -Infinity;
    // archived samples, then what arrived live after them
    const times = h.rx_us.map((t) => t / 1e6), values = h.values.slice();
    for (let i = 0; i < live.t.length; i++) {
      if (live.t[i] > lastArchived) { times.push(live.t[i]); values.push(live.v[i]); }
    }
    live.setData(times, values);
  } catch (error) {
    plotted.value.textContent = `history: ${error.message}`;
  }
}

// --- events -----------------------------------------------------------------------------
function addEvent(event, prepend = true) {
  const time = new Date(event.rx_us / 1000).toISOString().slice(11, 23);
  const item = el("li", { class: `sev-${event.severity}`, "data-event": event.name },
    el("time", {}, time), el("span", { class: "name" }, event.name), event.text);
  const list = $("event-list");
  if (prepend) list.prepend(item); else list.append(item);
  while (list.children.length > 300) list.lastChild.remove();
}

// --- commands ---------------------------------------------------------------------------
function buildCommandForm() {
  const select = $("cmd-name");
  // a tenant may send only the commands the dictionary marks for tenants
  const commands = state.dict.commands.filter((c) => !isTenant() || c.tenants);
  select.replaceChildren(...commands.map((c) => el("option", { value: c.name }, c.name)));
  buildArgs();
}

function roleText() {
  if (state.me.role === "operator") return "";
  if (isTenant()) {
    return `You act for tenant ${state.me.tenant}: the server signs your commands with its key, `
      + "and its jobs are paid from its tokens.";
  }
  return "You are logged in as a viewer: the server refuses telecommands from viewers.";
}

function currentCommand() { return state.dict.commands.find((c) => c.name === $("cmd-name").value); }

function buildArgs() {
  const command = currentCommand();
  $("cmd-doc").textContent = command.doc + (command.modes.length ? ` (modes: ${command.modes.join(", ")})` : "");
  $("cmd-error").textContent = "";
  const box = $("cmd-args");
  box.replaceChildren();
  for (const arg of command.args) {
    let input;
    if (arg.type === "enum") {
      input = el("select", { name: arg.name }, ...arg.values.map((v) => el("option", { value: v }, v)));
      if (arg.default !== null) input.value = arg.default;
    } else {
      input = el("input", { name: arg.name, type: "number", min: arg.min, max: arg.max, step: 1, required: true,
        value: arg.default ?? arg.min });
    }
    input.id = `arg-${arg.name}`;
    box.append(el("label", { title: arg.doc || "" }, `${arg.name}`, input));
  }
}

function checkArgs(command) {
  const args = {}, problems = [];
  for (const arg of command.args) {
    const input = $(`arg-${arg.name}`);
    input.classList.remove("bad");
    if (arg.type === "enum") {
      args[arg.name] = input.value;
      continue;
    }
    const text = input.value.trim();
    const number = Number(text);
    if (text === "" || !Number.isInteger(number) || number < arg.min || number > arg.max) {
      problems.push(`${arg.name}: an integer in ${arg.min}..${arg.max}`);
      input.classList.add("bad");
    } else {
      args[arg.name] = number;
    }
  }
  return { args, problems };
}

async function sendCommand(submit) {
  submit.preventDefault();
  const command = currentCommand();
  const { args, problems } = checkArgs(command);
  const error = $("cmd-error");
  if (problems.length) { error.textContent = `not sent: ${problems.join("; ")}`; return; }
  error.textContent = "";
  $("cmd-send").disabled = true;
  try {
    const record = await api("POST", "/api/commands", { name: command.name, args });
    upsertCommand(record);
  } catch (failure) {
    error.textContent = `${command.name} refused (${failure.status}): ${failure.detail}`;
  } finally {
    $("cmd-send").disabled = false;
  }
}

function argsText(args) {
  return Object.entries(args || {}).map(([k, v]) => `${k}=${v}`).join(" ");
}

function stateOf(record) {
  let result = "SENT";
  for (const s of record.stages) {
    if (STAGE_ORDER.indexOf(s.stage) > STAGE_ORDER.indexOf(result)) result = s.stage;
  }
  return result;
}

function upsertCommand(record) {
  const known = state.commands.get(record.seq);
  if (known) {  // keep the stages already seen
    const seen = new Set(known.stages.map((s) => s.stage));
    for (const s of record.stages) if (!seen.has(s.stage)) known.stages.push(s);
    Object.assign(known, { ...record, stages: known.stages });
  } else {
    state.commands.set(record.seq, { ...record, stages: [...(record.stages || [])] });
  }
  renderCommand(state.commands.get(record.seq));
}

function renderCommand(record) {
  let item = $(`cmd-${record.seq}`);
  if (!item) {
    item = el("li", { id: `cmd-${record.seq}` });
    $("cmd-list").prepend(item);
    while ($("cmd-list").children.length > 100) $("cmd-list").lastChild.remove();
  }
  const current = stateOf(record);
  item.dataset.state = current;
  const stages = record.stages.map((s) => el("span", { class: `stage ${s.stage}`, title: s.reason || "" },
    s.stage.toLowerCase() + (s.reason ? `: ${s.reason}` : "")));
  item.replaceChildren(el("strong", {}, record.name), ` ${argsText(record.args)} `,
    el("span", { class: "hint" }, `#${record.seq} by ${record.user}`), ...stages);
}

// --- tenants and the ledger ---------------------------------------------------------------
function scheduleLedger() {
  if (state.ledgerTimer) return;
  state.ledgerTimer = setTimeout(() => { state.ledgerTimer = null; loadLedger(); }, 300);
}

async function loadLedger() {
  let data;
  try {
    data = await api("GET", "/api/ledger?limit=50");
  } catch (error) {
    $("ledger-state").textContent = `ledger: ${error.message}`;
    return;
  }
  const info = data.books.find((b) => b.book === data.book);
  const status = $("ledger-state");
  if (!data.book) {
    status.textContent = "ledger: no transactions yet";
  } else if (info && "txns" in info) {
    status.textContent = `ledger ${data.book}: ${info.txns} transactions`
      + (info.missing ? `, ${info.missing} not received (${info.missing_txns.join(", ")})` : "")
      + (info.balanced ? "" : "; its postings do not sum to zero");
    status.className = info.missing || !info.balanced ? "hint error" : "hint";
  } else {
    status.textContent = `ledger ${data.book}`;
  }
  const body = $("tenants").tBodies[0];
  body.replaceChildren(...Object.entries(data.accounts).map(([name, a]) => {
    const available = el("td", { class: a.agrees ? "" : "differs",
      title: a.agrees ? "" : `the stack reported ${a.onboard_available} available: a transaction was not received` },
      String(a.available));
    return el("tr", { id: `tenant-${name}` }, el("td", {}, name), available, el("td", {}, String(a.held)),
      el("td", {}, String(a.spent)), el("td", {}, String(a.jobs)), el("td", {}, String(a.cycles)));
  }));
  $("ledger-list").replaceChildren(...data.transactions.slice().reverse().map((t) => {
    const job = t.job === null ? "" : ` job ${t.job}`;
    const moved = t.postings.map(([account, amount]) => `${account} ${amount > 0 ? "+" : ""}${amount}`).join(", ");
    return el("li", { "data-kind": t.kind }, el("span", { class: "hint" }, `#${t.txn}`),
      el("span", { class: "kind" }, t.kind), `${t.tenant}${job}${t.why ? ` (${t.why})` : ""} `,
      el("span", { class: "postings" }, moved));
  }));
}

// the tenants' names and numbers for the top-up and statement forms (a tenant user: its own)
async function loadTenantChoices() {
  let tenants;
  try { tenants = await api("GET", "/api/tenants"); } catch (_) { return; }
  for (const id of ["topup-tenant", "statement-tenant"]) {
    const select = $(id);
    const chosen = select.value;
    select.replaceChildren(...tenants.map((t) => el("option", { value: id === "topup-tenant" ? String(t.index) : t.name }, t.name)));
    if ([...select.options].some((o) => o.value === chosen)) select.value = chosen;
  }
}

// a top-up is GRANT_TOKENS, signed by the server for an operator; anyone else is refused
async function topUp(submit) {
  submit.preventDefault();
  const status = $("topup-status");
  const args = { tenant: Number($("topup-tenant").value), tokens: Number($("topup-tokens").value) };
  $("topup-send").disabled = true;
  try {
    const record = await api("POST", "/api/commands", { name: "GRANT_TOKENS", args });
    upsertCommand(record);
    status.textContent = `GRANT_TOKENS sent (#${record.seq})`;
    status.className = "hint";
  } catch (failure) {
    status.textContent = `top-up refused (${failure.status}): ${failure.detail}`;
    status.className = "hint error";
  } finally {
    $("topup-send").disabled = false;
  }
}

function statementQuery(format) {
  const params = new URLSearchParams({ format });
  if (!isTenant() && $("statement-tenant").value) params.set("tenant", $("statement-tenant").value);
  if ($("statement-from").value.trim()) params.set("from", $("statement-from").value.trim());
  if ($("statement-to").value.trim()) params.set("to", $("statement-to").value.trim());
  return `/api/statement?${params}`;
}

async function showStatement(submit) {
  if (submit) submit.preventDefault();
  const summary = $("statement-summary");
  $("statement-csv").href = statementQuery("csv");
  let data;
  try {
    data = await api("GET", statementQuery("json"));
  } catch (failure) {
    summary.textContent = `statement: ${failure.detail}`;
    summary.className = "hint error";
    return;
  }
  const o = data.opening, c = data.closing;
  summary.textContent = `${data.tenant}, ${data.from || "the start"} to ${data.to || "now"}: `
    + `opening ${o.available} available, ${o.held} held, ${o.spent} spent; `
    + `closing ${c.available} available, ${c.held} held, ${c.spent} spent`;
  summary.className = "hint";
  const signed = (n) => (n > 0 ? `+${n}` : String(n));
  $("statement").tBodies[0].replaceChildren(...data.transactions.map((t) => el("tr", { "data-kind": t.kind },
    el("td", {}, t.time_utc.slice(0, 19).replace("T", " ")), el("td", {}, String(t.txn)), el("td", {}, t.kind),
    el("td", {}, t.job === null ? "" : String(t.job)), el("td", {}, signed(t.available_change)),
    el("td", {}, signed(t.held_change)), el("td", {}, signed(t.spent_change)), el("td", {}, t.why))));
}

function onVerification(message) {
  let record = state.commands.get(message.seq);
  if (!record) {
    if (!message.command) return;  // not one of this server's telecommands
    record = { seq: message.seq, name: message.command, args: {}, user: "?", stages: [] };
    state.commands.set(message.seq, record);
  }
  if (!record.stages.some((s) => s.stage === message.stage)) {
    record.stages.push({ stage: message.stage, reason: message.reason, rx_us: message.rx_us });
  }
  renderCommand(record);
}

// --- the live stream --------------------------------------------------------------------
function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/api/stream`);
  state.ws = ws;
  ws.addEventListener("open", () => { state.retryMs = 500; });
  ws.addEventListener("message", (message) => {
    const data = JSON.parse(message.data);
    switch (data.type) {
      case "hello":
        for (const [name, entry] of Object.entries(data.telemetry)) {
          state.values.set(name, { value: entry.value, rx_us: entry.rx_us });
          state.dirty.add(name);
        }
        scheduleRender();
        break;
      case "telemetry": applyTelemetry(data.values, data.rx_us); break;
      case "event":
        addEvent(data);
        if (LEDGER_EVENTS.has(data.name)) scheduleLedger();
        break;
      case "command": upsertCommand(data); break;
      case "verification": onVerification(data); break;
      default: break;
    }
  });
  ws.addEventListener("close", async () => {
    if (state.ws !== ws || !state.me) return;
    try {
      await api("GET", "/api/me");
    } catch (error) {
      if (error.status === 401) return;  // showLogin ran
    }
    setTimeout(() => { if (state.ws === ws && state.me) connect(); }, state.retryMs);
    state.retryMs = Math.min(state.retryMs * 2, 5000);
  });
}

// --- log in and out ---------------------------------------------------------------------
function showLogin(message = "") {
  state.me = null;
  if (state.ws) { const ws = state.ws; state.ws = null; ws.close(); }
  clearInterval(state.statusTimer);
  $("console").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message;
  $("login-password").value = "";
}

async function login(submit) {
  submit.preventDefault();
  $("login-error").textContent = "";
  $("login-submit").disabled = true;
  try {
    await api("POST", "/api/login", { username: $("login-user").value, password: $("login-password").value });
    $("login-password").value = "";
    await startConsole();
  } catch (error) {
    $("login-error").textContent = error.status === 401 ? "Wrong user name or password." : error.message;
  } finally {
    $("login-submit").disabled = false;
  }
}

async function logout() {
  try { await api("POST", "/api/logout"); } catch (_) { /* ended anyway */ }
  showLogin("Logged out.");
}

async function startConsole() {
  state.me = await api("GET", "/api/me");
  if (!state.dict) {
    state.dict = await api("GET", "/api/dictionary");
    state.enums = state.dict.channel_enums || {};
    for (const channel of state.dict.channels) {
      if (channel.values && channel.values.length) state.enums[channel.name] = channel.values;
      state.channels.set(channel.name, channel);
    }
    $("cmd-name").addEventListener("change", buildArgs);
    $("cmd-form").addEventListener("submit", sendCommand);
    $("topup-form").addEventListener("submit", topUp);
    $("statement-form").addEventListener("submit", showStatement);
  }
  buildCommandForm();  // again at every login: a tenant user sees fewer commands
  document.body.classList.toggle("tenant", isTenant());
  $("cmd-role").textContent = roleText();
  $("who").textContent = `${state.me.user} (${isTenant() ? `tenant ${state.me.tenant}` : state.me.role})`;
  $("login").hidden = true;
  $("console").hidden = false;
  state.values.clear();  // another user may have seen other channels on this page
  state.rows.clear();
  $("tm-table").tBodies[0].replaceChildren();
  const latest = await api("GET", "/api/telemetry");
  for (const [name, entry] of Object.entries(latest)) {
    state.values.set(name, { value: entry.value, rx_us: entry.rx_us });
    state.dirty.add(name);
  }
  scheduleRender();
  $("event-list").replaceChildren();
  for (const event of await api("GET", "/api/events?since=1d&limit=100")) addEvent(event);
  state.commands.clear();
  $("cmd-list").replaceChildren();
  for (const record of await api("GET", "/api/commands?limit=50")) upsertCommand(record);
  for (const name of [...state.plots.keys()]) removePlot(name, false);  // another user's
  let wanted = isTenant() ? [] : DEFAULT_PLOTS;
  try { wanted = JSON.parse(localStorage.getItem("orbithil.plots")) || wanted; } catch (_) { /* default */ }
  // a tenant user plots only the channels it sees
  const plottable = (name) => (isTenant() ? name in latest : state.channels.has(name));
  for (const name of wanted) if (plottable(name) && !state.plots.has(name)) togglePlot(name);
  connect();
  loadLedger();
  loadTenantChoices();
  $("topup-status").textContent = "";
  $("statement-summary").textContent = "";
  $("statement").tBodies[0].replaceChildren();
  loadPasses();
  pollStatus();
  clearInterval(state.statusTimer);
  state.statusTimer = setInterval(pollStatus, 2000);
}

// --- passes: a bar per pass on a track per station over the next hours, now marked ---
function duration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  const pad = (n) => String(n).padStart(2, "0");
  return h ? `${h}h${pad(m)}m${pad(r)}s` : `${m}m${pad(r)}s`;
}

function passesNow() {  // seconds since the TLE epoch, now
  const p = state.passes;
  return p.data.now_s + (Date.now() - p.fetchedMs) / 1000;
}

async function loadPasses() {
  try {
    const data = await api("GET", `/api/passes?hours=${$("pass-hours").value}`);
    state.passes = { data, fetchedMs: Date.now() };
    renderPasses();
  } catch (error) {
    $("pass-next").textContent = `passes: ${error.message}`;
  }
}

function passBar(start_s, end_s, title, high) {
  const { start_s: t0, end_s: t1 } = state.passes.data;
  const span = t1 - t0;
  const left = Math.max(0, (start_s - t0) / span), right = Math.min(1, (end_s - t0) / span);
  const bar = el("div", { class: high ? "pass-bar high" : "pass-bar", title });
  bar.style.left = `${(left * 100).toFixed(3)}%`;
  bar.style.width = `${(Math.max(0, right - left) * 100).toFixed(3)}%`;
  return bar;
}

function renderPasses() {
  const { data } = state.passes;
  const rows = [];
  const track = (label, bars, cls = "") => {
    const t = el("div", { class: "pass-track" }, ...bars, el("div", { class: "pass-now" }));
    rows.push(el("div", { class: `pass-row ${cls}`.trim() }, el("span", { class: "label", title: label }, label), t));
  };
  for (const station of data.stations) {
    track(`${station.name} (${station.passes.length})`, station.passes.map((p) => passBar(
      p.rise_s, p.set_s,
      `${station.name}: ${p.rise_utc} to ${p.set_utc} UTC, ${duration(p.duration_s)}, max elevation ${p.max_elevation_deg.toFixed(1)} deg`,
      p.max_elevation_deg >= 30)));
  }
  track("contact", data.windows.map((w) => passBar(
    w.start_s, w.end_s, `${w.stations.join(", ")}: ${w.start_utc} to ${w.end_utc} UTC, ${duration(w.duration_s)}`,
    true)), "contacts");
  $("pass-timeline").replaceChildren(...rows);
  $("pass-axis").textContent = `${data.start_utc} to ${data.end_utc} UTC; ${data.windows.length} contacts, `
    + `${duration(data.contact_s)} in contact, longest gap ${duration(data.longest_gap_s)}; ${data.satellite}`;
  const stale = $("pass-stale");
  stale.hidden = !data.stale;
  stale.textContent = data.stale ? `The TLE is ${Math.round(data.tle_age_days)} days old (epoch ${data.epoch_utc}): `
    + "the passes show the geometry, not times to rely on. Give the server a current TLE (--tle)." : "";
  tickPasses();
}

function tickPasses() {
  if (!state.passes) return;
  const { data } = state.passes;
  const now = passesNow();
  if (now > data.end_s - 60) { loadPasses(); return; }
  const frac = Math.min(1, Math.max(0, (now - data.start_s) / (data.end_s - data.start_s)));
  for (const marker of document.querySelectorAll("#pass-timeline .pass-now")) {
    marker.style.left = `calc(${(frac * 100).toFixed(3)}% - 1px)`;
  }
  const next = $("pass-next");
  const current = data.windows.find((w) => w.start_s <= now && now < w.end_s);
  const coming = data.windows.find((w) => w.start_s > now);
  next.classList.toggle("contact", Boolean(current));
  if (current) {
    next.textContent = `in contact: ${current.stations.join(", ")}, ends in ${duration(current.end_s - now)}`;
  } else if (coming) {
    next.textContent = `next contact: ${coming.stations.join(", ")} in ${duration(coming.start_s - now)} `
      + `(${coming.start_utc} UTC, ${duration(coming.duration_s)}, max elevation ${coming.max_elevation_deg.toFixed(1)} deg)`;
  } else {
    next.textContent = `no contact in the next ${data.hours} h`;
  }
}

function init() {
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", logout);
  $("tm-filter").addEventListener("input", () => {
    for (const name of state.values.keys()) state.dirty.add(name);
    scheduleRender();
  });
  $("plot-window").addEventListener("change", () => {
    for (const [name, plotted] of state.plots) { plotted.plot.setWindow(plotWindow()); loadHistory(name); }
  });
  setInterval(() => { for (const { plot } of state.plots.values()) plot.request(); }, 1000);
  $("pass-hours").addEventListener("change", loadPasses);
  setInterval(tickPasses, 1000);
  setInterval(() => { if (state.me && state.passes) loadPasses(); }, 300_000);
  startConsole().catch((error) => showLogin(error.status === 401 ? "" : error.message));
}

document.addEventListener("DOMContentLoaded", init);
