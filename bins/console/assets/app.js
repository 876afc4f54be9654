"use strict";
const main = document.getElementById("main");
// HTML-escaped, with bidirectional controls (U+202A-E, U+2066-9) shown as
// code points: an id or error holding U+202E cannot reorder what is read.
const esc = (s) => String(s ?? "")
  .replace(/[\u202a-\u202e\u2066-\u2069]/g, (c) => `\\u{${c.codePointAt(0).toString(16)}}`)
  .replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
const csrf = () => (document.cookie.split("; ").find((c) => c.startsWith("spool_csrf=")) || "").slice(11);
let timer = null, source = null;
const history = {};  // queue -> completed counts over time, for sparklines

async function api(path, opts = {}) {
  const headers = { "content-type": "application/json", "x-csrf-token": csrf() };
  const r = await fetch(path, { credentials: "same-origin", ...opts, headers });
  if (r.status === 401) { showLogin(); throw new Error("log in first"); }
  const body = r.status === 204 ? null : await r.json();
  if (!r.ok) throw new Error(body?.error || r.statusText);
  return body;
}
function fail(e) { main.insertAdjacentHTML("afterbegin", `<div class="err">${esc(e.message)}</div>`); }
function stop() { if (timer) clearInterval(timer); timer = null; if (source) source.close(); source = null; }

function showLogin() {
  stop();
  main.innerHTML = `<h1>Log in</h1><form id="login"><label>Token <input type="password" name="token" autocomplete="current-password" required></label><button>Log in</button></form>`;
  document.getElementById("login").onsubmit = async (ev) => {
    ev.preventDefault();
    const token = new FormData(ev.target).get("token");
    const r = await fetch("/login", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ token }) });
    if (!r.ok) { fail(new Error("that token is not valid")); return; }
    const { role } = await r.json();
    document.getElementById("role").textContent = `role: ${role}`;
    document.getElementById("logout").hidden = false;
    route();
  };
}
document.getElementById("logout").onclick = async () => { await fetch("/logout", { method: "POST", headers: { "content-type": "application/json", "x-csrf-token": csrf() } }); showLogin(); };

function spark(values) {
  if (values.length < 2) return "";
  const rates = values.slice(1).map((v, i) => Math.max(0, v - values[i]));
  const max = Math.max(1, ...rates), w = 120, h = 24;
  const pts = rates.map((r, i) => `${(i / Math.max(1, rates.length - 1)) * w},${h - (r / max) * h}`).join(" ");
  return `<svg class="spark" width="${w}" height="${h}" role="img" aria-label="completions per interval, last ${rates.length}"><polyline fill="none" stroke="currentColor" stroke-width="1.5" points="${pts}"/></svg> ${rates.at(-1)}/2s`;
}

async function overview() {
  const draw = async () => {
    const qs = await api("/api/queues");
    for (const q of qs) { (history[q.queue] ||= []).push(q.completed ?? 0); if (history[q.queue].length > 60) history[q.queue].shift(); }
    main.innerHTML = `<h1>Queues</h1><table><thead><tr><th>Queue</th><th class="n">Ready</th><th class="n">Scheduled</th><th class="n">Active</th><th class="n">Dead</th><th class="n">Completed</th><th class="n">Cancelled</th><th>Throughput</th></tr></thead><tbody>${qs.map((q) => q.error
      ? `<tr><td>${esc(q.queue)}</td><td colspan="7">error: ${esc(q.error)}</td></tr>`
      : `<tr data-queue="${esc(q.queue)}"><td><a href="#/q/${encodeURIComponent(q.queue)}">${esc(q.queue)}</a>${q.paused ? ` <strong data-paused>paused</strong>` : ""}</td><td class="n" data-state="ready">${q.paused ? `${q.parked} held` : q.ready}</td><td class="n">${q.scheduled}</td><td class="n" data-state="active">${q.active}</td><td class="n"><a href="#/q/${encodeURIComponent(q.queue)}/dead" data-state="dead">${q.dead}</a></td><td class="n" data-state="completed">${q.completed}</td><td class="n">${q.cancelled}</td><td>${spark(history[q.queue] || [])}</td></tr>`).join("") || `<tr><td colspan="8">No queues yet.</td></tr>`}</tbody></table>`;
  };
  await draw();
  timer = setInterval(() => draw().catch(fail), 2000);
}

async function queuePage(name, state, cursor) {
  const q = encodeURIComponent(name);
  const page = await api(`/api/queues/${q}/jobs?state=${state}&limit=50${cursor ? `&cursor=${cursor}` : ""}`);
  const stats = (await api("/api/queues")).find((s) => s.queue === name) || {};
  const tabs = ["ready", "scheduled", "active", "dead", "completed", "cancelled"].map((s) => `<a href="#/q/${q}/${s}" class="${s === state ? "on" : ""}">${s}</a>`).join("");
  main.innerHTML = `<h1>Queue ${esc(name)}</h1>
    <p>${stats.paused ? `<strong>Paused</strong>: nothing new starts; ${stats.parked} jobs held. <button id="resume">Resume</button>` : `<button id="pause" class="danger">Pause queue…</button>`}</p>
    <p class="tabs">${tabs}</p>
    <form id="find"><label>Job id <input name="id" required> <button>Open</button></label></form>
    ${state === "dead" ? `<p><button id="retry-all">Retry all dead jobs</button> <button id="purge" class="danger">Purge all dead jobs…</button></p>` : ""}
    <table><thead><tr><th>Id</th><th>State</th><th class="n">Attempts</th><th class="n">Priority</th><th>Last error</th>${state === "dead" ? "<th></th>" : ""}</tr></thead><tbody>
    ${page.jobs.map((j) => `<tr><td><a href="#/q/${q}/job/${encodeURIComponent(j.id)}"><code>${esc(j.id)}</code></a></td><td>${esc(j.state)}</td><td class="n">${j.attempts}/${j.max_attempts}</td><td class="n">${j.priority}</td><td>${esc(j.last_error)}</td>${state === "dead" ? `<td><button data-retry="${esc(j.id)}">Retry</button></td>` : ""}</tr>`).join("") || `<tr><td colspan="6">No ${esc(state)} jobs.</td></tr>`}
    </tbody></table>${page.next_cursor ? `<p><a href="#/q/${q}/${state}/${page.next_cursor}">Next page</a></p>` : ""}`;
  document.getElementById("find").onsubmit = (ev) => { ev.preventDefault(); location.hash = `#/q/${q}/job/${encodeURIComponent(new FormData(ev.target).get("id"))}`; };
  for (const b of main.querySelectorAll("[data-retry]")) b.onclick = () => api(`/api/queues/${q}/dead/retry`, { method: "POST", body: JSON.stringify({ ids: [b.dataset.retry] }) }).then(route, fail);
  const pause = document.getElementById("pause");
  if (pause) pause.onclick = () => confirm("Pause this queue? Running jobs finish, nothing new starts, and the fleet scales to zero.") && api(`/api/queues/${q}/pause`, { method: "POST" }).then(route, fail);
  const resume = document.getElementById("resume");
  if (resume) resume.onclick = () => api(`/api/queues/${q}/resume`, { method: "POST" }).then(route, fail);
  const all = document.getElementById("retry-all");
  if (all) all.onclick = () => confirm("Retry every dead job?") && api(`/api/queues/${q}/dead/retry`, { method: "POST", body: JSON.stringify({ all: true }) }).then(route, fail);
  const purge = document.getElementById("purge");
  if (purge) purge.onclick = () => confirm("Delete every dead job for good?") && api(`/api/queues/${q}/dead`, { method: "DELETE", body: JSON.stringify({ all: true }) }).then(route, fail);
}

async function jobPage(name, id) {
  const q = encodeURIComponent(name), i = encodeURIComponent(id);
  const draw = (j) => {
    const pct = Number(j.progress?.percent ?? (j.state === "completed" ? 100 : 0));
    const outputs = (j.result?.outputs || []).map((o) => `<li><code>${esc(o.path)}</code> ${esc(o.width)}×${esc(o.height)} ${esc(o.codec)}</li>`).join("");
    main.innerHTML = `<h1>Job <code>${esc(j.id)}</code></h1>
      <p>Queue <a href="#/q/${q}">${esc(name)}</a> · state <strong id="state">${esc(j.state)}</strong> · attempt ${j.attempts} of ${j.max_attempts} · priority ${j.priority}</p>
      <label>Progress <progress id="bar" max="100" value="${pct}">${pct}%</progress> <span id="pct">${pct.toFixed ? pct.toFixed(1) : pct}%</span></label>
      ${["ready", "scheduled", "active"].includes(j.state) ? `<p><button id="cancel">Cancel this job</button></p>` : ""}
      ${j.last_error ? `<h2>Last error</h2><pre>${esc(j.last_error)}</pre>` : ""}
      ${outputs ? `<h2>Outputs</h2><ul>${outputs}</ul>` : ""}
      ${j.log?.length ? `<h2>Log</h2><pre id="log">${j.log.map((l) => `${new Date(l.at_ms).toISOString().slice(11, 23)} ${esc(l.level)} ${esc(l.message)}`).join("\n")}</pre>` : ""}
      <h2>Payload</h2><pre>${esc(j.payload)}</pre>
      <h2>Result</h2><pre>${esc(JSON.stringify(j.result, null, 2))}</pre>
      <h2>Progress</h2><pre id="progress">${esc(JSON.stringify(j.progress))}</pre>`;
    const c = document.getElementById("cancel");
    if (c) c.onclick = () => api(`/api/queues/${q}/jobs/${i}/cancel`, { method: "POST" }).then(route, fail);
  };
  draw(await api(`/api/queues/${q}/jobs/${i}`));
  source = new EventSource(`/api/queues/${q}/jobs/${i}/events`);
  source.addEventListener("progress", (ev) => {
    const p = JSON.parse(ev.data), pct = Number(p?.percent ?? 0);
    const bar = document.getElementById("bar"); if (bar) bar.value = pct;
    const t = document.getElementById("pct"); if (t) t.textContent = `${pct.toFixed(1)}%`;
    const pre = document.getElementById("progress"); if (pre) pre.textContent = ev.data;
  });
  source.addEventListener("done", (ev) => { source.close(); draw(JSON.parse(ev.data)); });
}

async function workersPage() {
  const draw = async () => {
    const ws = await api("/api/workers");
    const now = Date.now();
    main.innerHTML = `<h1>Workers</h1><table><thead><tr><th>Worker</th><th>Pod</th><th>Queue</th><th>State</th><th class="n">Running</th><th>Jobs</th><th>GPU</th><th class="n">Seen</th></tr></thead><tbody>
    ${ws.map((w) => `<tr data-worker="${esc(w.id)}"><td><code>${esc(w.id)}</code></td><td>${esc(w.pod)}</td><td>${esc(w.queue)}</td><td>${w.draining ? "draining" : "working"}</td><td class="n">${w.active.length}/${w.concurrency}</td><td>${w.active.map((a) => `<a href="#/q/${encodeURIComponent(w.queue)}/job/${encodeURIComponent(a)}"><code>${esc(a)}</code></a>`).join(" ")}</td><td>${esc((w.extra?.gpus || []).map((g) => g.name).join(", ") || w.extra?.no_gpu_reason || "-")}</td><td class="n">${Math.round((now - w.last_seen_ms) / 1000)} s ago</td></tr>`).join("") || `<tr><td colspan="8">No live workers.</td></tr>`}
    </tbody></table>`;
  };
  await draw();
  timer = setInterval(() => draw().catch(fail), 2000);
}

function route() {
  stop();
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  let p;
  if (parts[0] === "workers") p = workersPage();
  else if (parts[0] === "q" && parts[2] === "job") p = jobPage(parts[1], parts.slice(3).join("/"));
  else if (parts[0] === "q") p = queuePage(parts[1], parts[2] || "ready", parts[3]);
  else p = overview();
  p.catch(fail);
}
window.addEventListener("hashchange", route);
route();
