// Weir console: talks to the HTTP API only (docs/HTTP.md), as the logged-in user.
// No libraries; every value from the broker is set with textContent, never as HTML.
"use strict";

const POLL_MS = 2000;
const CHART_POINTS = 60;

const state = {
  auth: sessionStorage.getItem("weir-auth"), user: null, timer: null, history: [], last: new Map(), browseNext: null,
};

const $ = (id) => document.getElementById(id);

function basic(user, password) {
  const bytes = new TextEncoder().encode(`${user}:${password}`);
  return "Basic " + btoa(String.fromCharCode(...bytes));
}

class ApiError extends Error {
  constructor(status, body) {
    super(body && body.message ? `${body.message} (${body.code})` : `HTTP ${status}`);
    this.status = status;
  }
}

async function api(method, path, body) {
  const headers = { "X-Requested-With": "weir-console", Authorization: state.auth || "" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (response.status === 401) {
    logout();
    throw new ApiError(401, data);
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

function show(section) {
  for (const id of ["login", "queues", "queue", "connections"]) $(id).hidden = id !== section;
  $("nav").hidden = section === "login";
}

function cell(row, value, numeric) {
  const td = document.createElement("td");
  if (numeric) td.className = "num";
  td.textContent = value === undefined || value === null ? "" : String(value);
  row.appendChild(td);
  return td;
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function reportError(error) {
  $("error").textContent = error ? error.message : "";
}

// ---------------------------------------------------------------------------------------
// Login

function logout() {
  state.auth = null;
  state.user = null;
  sessionStorage.removeItem("weir-auth");
  clearInterval(state.timer);
  show("login");
}

async function login(event) {
  event.preventDefault();
  const form = event.target;
  state.auth = basic(form.user.value, form.password.value);
  try {
    const me = await api("GET", "/api/whoami");
    sessionStorage.setItem("weir-auth", state.auth);
    state.user = me;
    $("login-error").textContent = "";
    form.password.value = "";
    route();
  } catch (error) {
    $("login-error").textContent = error.status === 401 ? "Wrong user or password." : error.message;
  }
}

// ---------------------------------------------------------------------------------------
// Queues overview with a live chart

function queueKey(q) {
  return `${q.vhost}\u0000${q.name}`;
}

function rate(q, now) {
  const key = queueKey(q);
  const before = state.last.get(key);
  state.last.set(key, { at: now, published: q.counters.published, delivered: q.counters.delivered });
  if (!before || now <= before.at) return ["", ""];
  const seconds = (now - before.at) / 1000;
  return [((q.counters.published - before.published) / seconds).toFixed(1),
          ((q.counters.delivered - before.delivered) / seconds).toFixed(1)];
}

function queueHref(q) {
  return `#/queue/${encodeURIComponent(q.vhost)}/${encodeURIComponent(q.name)}`;
}

async function refreshQueues() {
  const [overview, queues] = await Promise.all([api("GET", "/api/overview"), api("GET", "/api/queues")]);
  const totals = [["queues", overview.queues], ["ready", overview.messages_ready],
                  ["unacked", overview.messages_unacknowledged], ["delayed", overview.messages_delayed],
                  ["connections", overview.connections], ["consumers", overview.consumers]];
  fill($("totals"), totals.map(([label, value]) => {
    const div = document.createElement("div");
    div.append(label);
    const b = document.createElement("b");
    b.textContent = value;
    div.appendChild(b);
    return div;
  }));
  const now = Date.now();
  fill($("queue-rows"), queues.map((q) => {
    const row = document.createElement("tr");
    row.dataset.queue = q.name;
    cell(row, q.vhost);
    const link = document.createElement("a");
    link.href = queueHref(q);
    link.textContent = q.name;
    cell(row, "").appendChild(link);
    cell(row, q.messages_ready, true).dataset.field = "ready";
    cell(row, q.messages_unacknowledged, true);
    cell(row, q.messages_delayed, true);
    cell(row, q.consumers, true);
    for (const value of rate(q, now)) cell(row, value, true);
    return row;
  }));
  state.history.push(overview.messages_ready);
  if (state.history.length > CHART_POINTS) state.history.shift();
  drawChart($("chart"), state.history);
}

function drawChart(canvas, points) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth * ratio;
  const height = canvas.clientHeight * ratio;
  canvas.width = width;
  canvas.height = height;
  const g = canvas.getContext("2d");
  g.clearRect(0, 0, width, height);
  const top = Math.max(1, ...points);
  g.strokeStyle = "#d9e0e6";
  g.beginPath();
  g.moveTo(0, height - 1);
  g.lineTo(width, height - 1);
  g.stroke();
  g.fillStyle = "#5d6b78";
  g.font = `${12 * ratio}px system-ui`;
  g.fillText(String(top), 4 * ratio, 14 * ratio);
  if (points.length < 2) return;
  g.strokeStyle = "#0b6e99";
  g.lineWidth = 2 * ratio;
  g.beginPath();
  points.forEach((value, i) => {
    const x = (i / (CHART_POINTS - 1)) * width;
    const y = height - 4 * ratio - (value / top) * (height - 24 * ratio);
    if (i === 0) g.moveTo(x, y); else g.lineTo(x, y);
  });
  g.stroke();
}

// ---------------------------------------------------------------------------------------
// One queue: stats, publish, browse (paged, by state and selector), take, move or redrive, purge

function currentQueue() {
  const match = location.hash.match(/^#\/queue\/([^/]+)\/(.+)$/);
  return match ? { vhost: decodeURIComponent(match[1]), name: decodeURIComponent(match[2]) } : null;
}

function queuePath(q, suffix = "") {
  return `/api/queues/${encodeURIComponent(q.vhost)}/${encodeURIComponent(q.name)}${suffix}`;
}

async function refreshQueue() {
  const q = currentQueue();
  const info = await api("GET", queuePath(q));
  $("queue-title").textContent = `${info.name} (vhost ${info.vhost})`;
  const stats = [["ready", info.messages_ready], ["unacked", info.messages_unacknowledged],
                 ["delayed", info.messages_delayed], ["consumers", info.consumers],
                 ["published", info.counters.published], ["dead-lettered", info.counters.dead_lettered]];
  fill($("queue-stats"), stats.map(([label, value]) => {
    const div = document.createElement("div");
    const dt = document.createElement("dt");
    dt.textContent = label;
    const dd = document.createElement("dd");
    dd.textContent = value;
    dd.dataset.field = label;
    div.append(dt, dd);
    return div;
  }));
}

async function publish(event) {
  event.preventDefault();
  const form = event.target;
  const properties = {};
  if (form.priority.value !== "") properties.priority = Number(form.priority.value);
  if (form.correlation_id.value) properties.correlation_id = form.correlation_id.value;
  try {
    await api("POST", queuePath(currentQueue(), "/publish"), { payload: form.payload.value, properties });
    $("publish-status").textContent = "Published (stored before this answer).";
    await refreshQueue();
  } catch (error) {
    $("publish-status").textContent = error.message;
  }
}

// The messages in the table: browsed ones (with seq, state, deliveries) or taken ones.
function showMessages(messages) {
  fill($("message-rows"), messages.map((m, i) => {
    const row = document.createElement("tr");
    cell(row, m.seq === undefined ? `#${i + 1}` : m.seq, true);
    const pre = document.createElement("pre");
    pre.textContent = m.payload_encoding === "base64" ? `(base64) ${m.payload}` : m.payload;
    cell(row, "").appendChild(pre);
    const props = document.createElement("pre");
    props.textContent = JSON.stringify(m.properties);
    cell(row, "").appendChild(props);
    cell(row, m.state === undefined ? "taken" : m.state);
    cell(row, m.delivery_count === undefined ? "" : m.delivery_count, true);
    return row;
  }));
}

async function browsePage(after) {
  const form = $("browse-form");
  const params = new URLSearchParams({ state: form.state.value, limit: form.limit.value });
  if (form.selector.value.trim()) params.set("selector", form.selector.value.trim());
  if (after) params.set("after", after);
  try {
    const page = await api("GET", queuePath(currentQueue(), `/messages?${params}`));
    state.browseNext = page.next;
    $("browse-next").disabled = !page.next;
    $("browse-status").textContent = `${page.messages.length} message(s)${page.next ? "; more after these" : ""}.`;
    showMessages(page.messages);
  } catch (error) {
    $("browse-status").textContent = error.message;
  }
}

async function takeMessages(event) {
  event.preventDefault();
  const form = event.target;
  try {
    const messages = await api("POST", queuePath(currentQueue(), "/get"),
                               { count: Number(form.count.value), ackmode: "remove" });
    $("get-status").textContent = `Took ${messages.length} message(s).`;
    showMessages(messages);
    await refreshQueue();
  } catch (error) {
    $("get-status").textContent = error.message;
  }
}

async function moveMessages() {
  const form = $("get-form");
  const body = { count: Number(form.count.value) };
  const target = form.target.value.trim();
  if (target) body.target = target;
  try {
    const answer = await api("POST", queuePath(currentQueue(), "/move"), body);
    let text = `Moved ${answer.moved} message(s) ${target ? `to ${target}` : "back to their source queues"}`;
    if (answer.skipped) text += `; ${answer.skipped} left in place (no source queue)`;
    if (answer.target_full) text += "; stopped: the target is full";
    $("get-status").textContent = text + ".";
    await refreshQueue();
  } catch (error) {
    $("get-status").textContent = error.message;
  }
}

async function purge() {
  const q = currentQueue();
  if (!confirm(`Remove every ready message from ${q.name}?`)) return;
  try {
    const answer = await api("DELETE", queuePath(q, "/contents"));
    $("get-status").textContent = `Purged ${answer.messages} message(s).`;
    await refreshQueue();
  } catch (error) {
    $("get-status").textContent = error.message;
  }
}

// ---------------------------------------------------------------------------------------
// Connections

async function refreshConnections() {
  const list = await api("GET", "/api/connections");
  fill($("connection-rows"), list.map((c) => {
    const row = document.createElement("tr");
    for (const key of ["id", "user", "vhost", "peer", "client"]) cell(row, c[key]);
    cell(row, c.channels, true);
    cell(row, c.consumers, true);
    const close = document.createElement("button");
    close.type = "button";
    close.className = "danger";
    close.textContent = "Close";
    close.addEventListener("click", async () => {
      try {
        await api("DELETE", `/api/connections/${c.id}`);
        await refreshConnections();
      } catch (error) {
        reportError(error);
      }
    });
    cell(row, "").appendChild(close);
    return row;
  }));
}

// ---------------------------------------------------------------------------------------
// Routing and polling

function route() {
  clearInterval(state.timer);
  reportError(null);
  if (!state.auth) return show("login");
  $("who").textContent = state.user ? `${state.user.name}${state.user.administrator ? " (administrator)" : ""}` : "";
  let refresh;
  if (currentQueue()) {
    show("queue");
    fill($("message-rows"), []);
    refresh = refreshQueue;
  } else if (location.hash === "#/connections") {
    show("connections");
    refresh = refreshConnections;
  } else {
    show("queues");
    refresh = refreshQueues;
  }
  const tick = () => refresh().then(() => reportError(null), reportError);
  tick();
  state.timer = setInterval(tick, POLL_MS);
}

async function start() {
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", logout);
  $("publish-form").addEventListener("submit", publish);
  $("browse-form").addEventListener("submit", (event) => {
    event.preventDefault();
    browsePage(null);
  });
  $("browse-next").addEventListener("click", () => browsePage(state.browseNext));
  $("get-form").addEventListener("submit", takeMessages);
  $("move").addEventListener("click", moveMessages);
  $("purge").addEventListener("click", purge);
  window.addEventListener("hashchange", route);
  if (state.auth) {
    try {
      state.user = await api("GET", "/api/whoami");
    } catch (error) {
      return;
    }
  }
  route();
}

start();
