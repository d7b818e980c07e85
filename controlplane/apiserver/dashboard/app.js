// The Skiff dashboard: read-only, live from the api-server's Kubernetes REST API.
//
// What must hold: every table is rebuilt from the objects the watches delivered (list, then
// watch from the list's resourceVersion; a broken or expired watch lists again), never by
// reloading the page; object fields reach the page as text (textContent), never as HTML;
// nothing is loaded from anywhere but this api-server.
"use strict";

// One stream carries every resource (the api-server's /dashboard/watch: a list, then a watch,
// per resource): a browser opens at most six HTTP/1.1 connections to one host.
const STREAM = "/dashboard/watch";
const RESOURCES = ["nodes", "pods", "services", "endpoints", "deployments", "statefulsets", "daemonsets", "events"];
const NODE_METRICS = "/apis/metrics.k8s.io/v1beta1/nodes";
const EVENTS_SHOWN = 30;

const objects = {};
for (const r of RESOURCES) objects[r] = new Map();
const streaming = new Set();
let usage = new Map();
let pending = false;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Logging in: a bearer token typed into the form, kept for this tab only (sessionStorage) and
// sent on the page's own requests. Asked for when the api-server answers 401 or 403; without
// TLS (--insecure), or with a client certificate in the browser, it is never asked for.
const TOKEN_KEY = "skiff-dashboard-token";
let loggedIn = null;  // a promise while the form waits for a token

function authHeaders() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: `Bearer ${token}` } : {};
}

function askForToken(status) {
  if (!loggedIn) {
    loggedIn = new Promise((resolve) => {
      const form = document.getElementById("login");
      document.getElementById("login-error").textContent =
        status === 403 ? "this token may not read the cluster" : (sessionStorage.getItem(TOKEN_KEY) ? "invalid token" : "");
      form.hidden = false;
      form.onsubmit = (ev) => {
        ev.preventDefault();
        sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value.trim());
        form.hidden = true;
        loggedIn = null;
        resolve();
      };
    });
  }
  return loggedIn;
}

async function authedFetch(url, headers = {}) {
  for (;;) {
    const resp = await fetch(url, { headers: { ...headers, ...authHeaders() } });
    if (resp.status !== 401 && resp.status !== 403) return resp;
    await askForToken(resp.status);
  }
}
const keyOf = (o) => (o.metadata.namespace ? o.metadata.namespace + "/" : "") + o.metadata.name;

function changed() {
  if (!pending) {
    pending = true;
    setTimeout(() => { pending = false; render(); }, 50);
  }
}

async function follow() {
  for (;;) {
    try {
      const resp = await authedFetch(STREAM, { Accept: "application/json" });
      if (!resp.ok) throw new Error(`${STREAM}: ${resp.status}`);
      const reader = resp.body.getReader();
      const decoder = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += decoder.decode(value, { stream: true });
        let nl;
        while ((nl = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          if (line.trim()) apply(JSON.parse(line));
        }
      }
    } catch (err) {
      console.warn("stream", err);
    }
    streaming.clear();
    changed();
    await sleep(1000);
  }
}

function apply(event) {
  const resource = event.resource;
  if (event.type === "ERROR") {
    streaming.delete(resource);  // the server lists it again and says SYNC
  } else if (event.type === "SYNC") {
    objects[resource] = new Map(event.items.map((o) => [keyOf(o), o]));
    streaming.add(resource);
  } else if (event.type === "DELETED") {
    objects[resource].delete(keyOf(event.object));
  } else {
    objects[resource].set(keyOf(event.object), event.object);
  }
  changed();
}

async function pollUsage() {
  for (;;) {
    try {
      const resp = await authedFetch(NODE_METRICS);
      if (resp.ok) {
        const list = await resp.json();
        usage = new Map((list.items || []).map((m) => [m.metadata.name, m.usage]));
        changed();
      }
    } catch (err) {
      console.warn("metrics", err);
    }
    await sleep(10000);
  }
}

// ------------------------------------------------------------------ formatting

function age(timestamp) {
  if (!timestamp) return "";
  const s = Math.max(0, (Date.now() - Date.parse(timestamp)) / 1000);
  if (s < 120) return `${Math.floor(s)}s`;
  if (s < 7200) return `${Math.floor(s / 60)}m`;
  if (s < 172800) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

function cpu(q) {
  if (!q) return "";
  if (q.endsWith("n")) return `${Math.round(Number(q.slice(0, -1)) / 1e6)}m`;
  if (q.endsWith("m")) return q;
  return `${Math.round(Number(q) * 1000)}m`;
}

function memory(q) {
  if (!q) return "";
  const units = { Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3 };
  const m = /^(\d+)(Ki|Mi|Gi)?$/.exec(q);
  if (!m) return q;
  return `${Math.round(Number(m[1]) * (units[m[2]] || 1) / 1024 ** 2)}Mi`;
}

function podReady(p) {
  const statuses = (p.status && p.status.containerStatuses) || [];
  const total = (p.spec.containers || []).length;
  return [statuses.filter((c) => c.ready).length, total];
}

function podStatus(p) {
  if (p.metadata.deletionTimestamp) return "Terminating";
  for (const c of (p.status && p.status.containerStatuses) || []) {
    const waiting = c.state && c.state.waiting;
    if (waiting && waiting.reason) return waiting.reason;
    const terminated = c.state && c.state.terminated;
    if (terminated && terminated.reason && p.status.phase === "Running") return terminated.reason;
  }
  return (p.status && p.status.phase) || "Pending";
}

function condition(obj, type) {
  return ((obj.status && obj.status.conditions) || []).find((c) => c.type === type);
}

// ------------------------------------------------------------------ rendering

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text === undefined || text === null ? "" : String(text);
  if (cls) td.className = cls;
  return td;
}

function bar(done, total) {
  const td = document.createElement("td");
  td.className = "rollout";
  const outer = document.createElement("span");
  outer.className = "bar";
  const inner = document.createElement("span");
  inner.style.width = `${total ? Math.round(100 * Math.min(done, total) / total) : 100}%`;
  outer.appendChild(inner);
  td.appendChild(outer);
  return td;
}

function fill(section, rows) {
  const body = document.querySelector(`#${section} tbody`);
  const out = document.createDocumentFragment();
  for (const [key, cells] of rows) {
    const tr = document.createElement("tr");
    tr.dataset.key = key;
    for (const c of cells) tr.appendChild(c);
    out.appendChild(tr);
  }
  body.replaceChildren(out);
}

const byKey = (a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0);

function renderNodes() {
  const podsOn = new Map();
  for (const p of objects.pods.values()) {
    if (p.spec.nodeName) podsOn.set(p.spec.nodeName, (podsOn.get(p.spec.nodeName) || 0) + 1);
  }
  const rows = [...objects.nodes.values()].map((n) => {
    const ready = condition(n, "Ready");
    const state = ready ? (ready.status === "True" ? "Ready" : "NotReady") : "Unknown";
    const problems = ((n.status && n.status.conditions) || [])
      .filter((c) => c.type !== "Ready" && c.status === "True").map((c) => c.type);
    const ip = ((n.status && n.status.addresses) || []).find((a) => a.type === "InternalIP");
    const u = usage.get(n.metadata.name) || {};
    const alloc = (n.status && n.status.allocatable) || {};
    return [n.metadata.name, [
      cell(n.metadata.name, "name"), cell(state, `ready ${state === "Ready" ? "ok" : "bad"}`),
      cell(problems.join(", ") || "-", problems.length ? "warn" : ""),
      cell(u.cpu ? `${cpu(u.cpu)} / ${cpu(alloc.cpu)}` : "", "cpu"),
      cell(u.memory ? `${memory(u.memory)} / ${memory(alloc.memory)}` : "", "memory"),
      cell(podsOn.get(n.metadata.name) || 0, "pods"), cell(ip ? ip.address : ""),
      cell(age(n.metadata.creationTimestamp)),
    ]];
  });
  fill("nodes", rows.sort(byKey));
}

function renderWorkloads() {
  const rows = [];
  for (const d of objects.deployments.values()) {
    const want = d.spec.replicas ?? 1;
    const s = d.status || {};
    const ready = s.readyReplicas || 0;
    rows.push([`deployment/${keyOf(d)}`, [
      cell("Deployment"), cell(d.metadata.namespace), cell(d.metadata.name, "name"),
      cell(`${ready}/${want}`, `ready ${ready >= want ? "ok" : "warn"}`), cell(s.updatedReplicas || 0, "updated"),
      cell(s.availableReplicas || 0, "available"), bar(Math.min(s.updatedReplicas || 0, ready), want),
      cell(age(d.metadata.creationTimestamp)),
    ]]);
  }
  for (const st of objects.statefulsets.values()) {
    const want = st.spec.replicas ?? 1;
    const s = st.status || {};
    const ready = s.readyReplicas || 0;
    rows.push([`statefulset/${keyOf(st)}`, [
      cell("StatefulSet"), cell(st.metadata.namespace), cell(st.metadata.name, "name"),
      cell(`${ready}/${want}`, `ready ${ready >= want ? "ok" : "warn"}`), cell(s.updatedReplicas || 0, "updated"),
      cell(s.availableReplicas ?? ready, "available"), bar(ready, want), cell(age(st.metadata.creationTimestamp)),
    ]]);
  }
  for (const ds of objects.daemonsets.values()) {
    const s = ds.status || {};
    const want = s.desiredNumberScheduled || 0;
    const ready = s.numberReady || 0;
    rows.push([`daemonset/${keyOf(ds)}`, [
      cell("DaemonSet"), cell(ds.metadata.namespace), cell(ds.metadata.name, "name"),
      cell(`${ready}/${want}`, `ready ${ready >= want ? "ok" : "warn"}`), cell(s.updatedNumberScheduled || 0, "updated"),
      cell(s.numberAvailable || 0, "available"), bar(ready, want), cell(age(ds.metadata.creationTimestamp)),
    ]]);
  }
  fill("workloads", rows.sort(byKey));
}

function renderPods() {
  const rows = [...objects.pods.values()].map((p) => {
    const [ready, total] = podReady(p);
    const status = podStatus(p);
    const restarts = ((p.status && p.status.containerStatuses) || []).reduce((n, c) => n + (c.restartCount || 0), 0);
    const good = status === "Running" && ready === total;
    return [keyOf(p), [
      cell(p.metadata.namespace), cell(p.metadata.name, "name"), cell(`${ready}/${total}`, "ready"),
      cell(status, `status ${good || status === "Succeeded" ? "ok" : status === "Pending" || status === "Running" ? "warn" : "bad"}`),
      cell(restarts, "restarts"), cell(p.spec.nodeName || "", "node"), cell((p.status && p.status.podIP) || ""),
      cell(age(p.metadata.creationTimestamp)),
    ]];
  });
  fill("pods", rows.sort(byKey));
}

function renderServices() {
  const rows = [...objects.services.values()].map((s) => {
    const ep = objects.endpoints.get(keyOf(s));
    const addresses = [];
    for (const subset of (ep && ep.subsets) || []) {
      const ports = (subset.ports || []).map((p) => p.port);
      for (const a of subset.addresses || []) addresses.push(ports.length ? `${a.ip}:${ports[0]}` : a.ip);
    }
    const ports = (s.spec.ports || []).map((p) => `${p.port}${p.nodePort ? ":" + p.nodePort : ""}/${p.protocol || "TCP"}`);
    return [keyOf(s), [
      cell(s.metadata.namespace), cell(s.metadata.name, "name"), cell(s.spec.type || "ClusterIP"),
      cell(s.spec.clusterIP || ""), cell(ports.join(", ")),
      cell(addresses.length ? addresses.join(", ") : "<none>", `endpoints ${addresses.length ? "" : "warn"}`),
    ]];
  });
  fill("services", rows.sort(byKey));
}

function renderEvents() {
  const when = (e) => e.lastTimestamp || e.eventTime || e.firstTimestamp || e.metadata.creationTimestamp || "";
  const events = [...objects.events.values()].sort((a, b) => (when(a) < when(b) ? 1 : -1)).slice(0, EVENTS_SHOWN);
  fill("events", events.map((e) => [keyOf(e), [
    cell(age(when(e))), cell(e.type || "", e.type === "Warning" ? "warn" : ""), cell(e.reason || "", "reason"),
    cell(`${(e.involvedObject.kind || "").toLowerCase()}/${e.involvedObject.name}`),
    cell(`${e.message || ""}${e.count > 1 ? ` (x${e.count})` : ""}`, "message"),
  ]]));
}

function render() {
  renderNodes();
  renderWorkloads();
  renderPods();
  renderServices();
  renderEvents();
  const live = document.getElementById("live");
  const all = RESOURCES.length;
  live.textContent = streaming.size === all ? "live" : `${streaming.size}/${all} streams`;
  live.className = `live ${streaming.size === all ? "on" : "off"}`;
  const pods = [...objects.pods.values()];
  const ready = pods.filter((p) => { const [r, t] = podReady(p); return r === t && podStatus(p) === "Running"; });
  document.getElementById("summary").textContent =
    `${objects.nodes.size} nodes, ${pods.length} pods (${ready.length} ready), ${objects.services.size} services`;
}

follow();
pollUsage();
setInterval(render, 5000); // ages move on
