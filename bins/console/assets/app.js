"use strict";
// The spool console's page: plain JS, no build step, no inline script (the
// CSP forbids it). Every value from the server goes through `esc`.
const main = document.getElementById("main");
const banner = document.getElementById("banner");
const said = document.getElementById("said");
// HTML-escaped, with bidirectional controls (U+202A-E, U+2066-9) shown as
// code points: an id or error holding U+202E cannot reorder what is read.
const esc = (s) => String(s ?? "")
  .replace(/[\u202a-\u202e\u2066-\u2069]/g, (c) => `\\u{${c.codePointAt(0).toString(16)}}`)
  .replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
const csrf = () => (document.cookie.split("; ").find((c) => c.startsWith("spool_csrf=")) || "").slice(11);
const num = (n) => Number(n ?? 0).toLocaleString("en-US");
let timer = null, source = null, role = null, lastGood = null;

// A long text: its first `max` characters, and the whole behind a toggle.
function long(text, max = 160) {
  const s = String(text ?? "");
  if (s.length <= max) return `<span class="text">${esc(s)}</span>`;
  return `<details class="long"><summary>${esc(s.slice(0, max))}… <span class="more">(${num(s.length)} characters: show all)</span></summary><pre>${esc(s)}</pre></details>`;
}
function when(ms) { return ms ? new Date(ms).toISOString().replace("T", " ").slice(0, 19) + " UTC" : "–"; }
function dur(ms) {
  if (ms == null || !isFinite(ms)) return "–";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
}

async function api(path, opts = {}) {
  const headers = { "content-type": "application/json", "x-csrf-token": csrf() };
  const r = await fetch(path, { credentials: "same-origin", ...opts, headers });
  if (r.status === 401) { showLogin(); const e = new Error("log in first"); e.quiet = true; throw e; }
  const body = r.status === 204 ? null : await r.json().catch(() => null);
  if (!r.ok) throw new Error(body?.error || r.statusText);
  return body;
}
// One banner, never a pile: the latest error, and how old the data on the
// page is while requests fail.
function fail(e) {
  if (e?.quiet) return;
  const age = lastGood ? ` The page shows data from ${new Date(lastGood).toLocaleTimeString()}; it may be stale.` : "";
  banner.textContent = `${e.message}.${age}`;
  banner.hidden = false;
  main.classList.toggle("stale", Boolean(lastGood));
}
function ok() { lastGood = Date.now(); banner.hidden = true; main.classList.remove("stale"); }
// Announced once to screen readers (the polite live region holds only this).
function say(text) { said.textContent = text; }
function stop() { if (timer) clearInterval(timer); timer = null; if (source) source.close(); source = null; }
function every(ms, draw) { timer = setInterval(() => draw().then(ok, fail), ms); }
const admin = () => role === "admin";

function showLogin() {
  stop();
  banner.hidden = true;
  document.getElementById("logout").hidden = true;
  main.innerHTML = `<h1>Log in</h1><p>This console needs a token: the admin token acts, the read token only reads.</p><form id="login"><label>Token <input type="password" name="token" autocomplete="current-password" required></label><button>Log in</button></form><p id="login-error" class="error" hidden></p>`;
  document.getElementById("login").onsubmit = async (ev) => {
    ev.preventDefault();
    const token = new FormData(ev.target).get("token");
    const r = await fetch("/login", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ token }) });
    if (!r.ok) {
      const body = await r.json().catch(() => ({}));
      const p = document.getElementById("login-error");
      p.textContent = body.error || "that token is not valid"; p.hidden = false;
      return;
    }
    await whoami();
    route();
  };
}
async function whoami() {
  const me = await api("/api/whoami");
  role = me.role;
  document.getElementById("role").textContent = me.auth ? `role: ${role}` : "local (no tokens)";
  document.getElementById("logout").hidden = !me.auth;
}
document.getElementById("logout").onclick = async () => { await fetch("/logout", { method: "POST", headers: { "content-type": "application/json", "x-csrf-token": csrf() } }); role = null; showLogin(); };

// A bar chart of per-minute counts: `series` is [{cls, label, values}],
// stacked; values are over `minutes` slots ending now.
function chart(title, series, slots, unit = "", per = "") {
  const w = 480, h = 80, n = slots.length, bw = w / Math.max(1, n);
  const totals = slots.map((_, i) => series.reduce((a, s) => a + (s.values[i] || 0), 0));
  const max = Math.max(1, ...totals);
  let bars = "";
  slots.forEach((_, i) => {
    let y = h;
    for (const s of series) {
      const v = s.values[i] || 0;
      if (!v) continue;
      const bh = Math.max(1, (v / max) * h);
      y -= bh;
      bars += `<rect class="${s.cls}" x="${(i * bw).toFixed(2)}" y="${y.toFixed(2)}" width="${Math.max(1, bw - 0.5).toFixed(2)}" height="${bh.toFixed(2)}"><title>${esc(new Date(slots[i]).toISOString().slice(11, 16))} ${esc(s.label)} ${num(v)}${unit}</title></rect>`;
    }
  });
  // Read out: counts as totals, durations as their peak.
  const sums = series.map((s) => unit ? `${esc(s.label)} peak ${num(Math.max(0, ...s.values))}${unit}` : `${esc(s.label)} ${num(s.values.reduce((a, b) => a + b, 0))} in all`).join(", ");
  const legend = series.map((s) => `<span class="key ${s.cls}"></span>${esc(s.label)}`).join(" ");
  return `<figure class="chart"><figcaption>${esc(title)} <span class="legend">${legend}</span></figcaption><svg viewBox="0 0 ${w} ${h}" preserveAspectRatio="none" role="img" aria-label="${esc(title)}: ${sums}">${bars}</svg><div class="axis"><span>${esc(new Date(slots[0]).toISOString().slice(11, 16))}</span><span>max ${num(max)}${unit}${per}</span><span>now</span></div></figure>`;
}
// The history's minutes summed into `count` slots of `width` minutes each,
// ending now; `get(f)` gives f's sum per slot.
function slotsOf(hist, count, width = 1) {
  const step = width * 60000;
  const now = Math.floor(Date.now() / step) * step;
  const slots = Array.from({ length: count }, (_, i) => now - (count - 1 - i) * step);
  const first = slots[0];
  return {
    slots,
    get: (f) => {
      const out = new Array(count).fill(0);
      for (const m of hist.minutes) {
        const i = Math.floor((m.at_ms - first) / step);
        if (i >= 0 && i < count) out[i] += f(m);
      }
      return out;
    },
  };
}

async function overview() {
  const hist = {};
  let drawn = 0;
  const draw = async () => {
    const qs = await api("/api/queues");
    // Charts are minute-grained: read them every 30 s, not every 2 s.
    if (Date.now() - drawn > 30000) {
      drawn = Date.now();
      await Promise.all(qs.filter((q) => !q.error).map(async (q) => { hist[q.queue] = await api(`/api/queues/${encodeURIComponent(q.queue)}/history`); }));
    }
    const spark = (q) => {
      const h = hist[q]; if (!h) return "";
      const { get } = slotsOf(h, 60);
      const done = get((m) => m.completed), failed = get((m) => m.failed);
      const max = Math.max(1, ...done.map((d, i) => d + failed[i]));
      const pts = (v) => v.map((x, i) => `${(i * 2).toFixed(0)},${(24 - (x / max) * 24).toFixed(1)}`).join(" ");
      return `<svg class="spark" viewBox="0 0 120 24" width="120" height="24" role="img" aria-label="last hour: ${num(done.reduce((a, b) => a + b, 0))} completed, ${num(failed.reduce((a, b) => a + b, 0))} failed"><polyline class="done" points="${pts(done)}"/><polyline class="failed" points="${pts(failed)}"/></svg> ${num(done.at(-1))}/min`;
    };
    main.innerHTML = `<h1>Queues</h1><div class="scroll"><table><thead><tr><th>Queue</th><th class="n">Ready</th><th class="n">Scheduled</th><th class="n">Active</th><th class="n">Dead</th><th class="n">Completed</th><th class="n">Cancelled</th><th>Last hour</th></tr></thead><tbody>${qs.map((q) => q.error
      ? `<tr><td>${esc(q.queue)}</td><td colspan="7">error: ${long(q.error)}</td></tr>`
      : `<tr data-queue="${esc(q.queue)}"><td><a href="#/q/${encodeURIComponent(q.queue)}">${esc(q.queue)}</a>${q.paused ? ` <strong data-paused>paused</strong>` : ""}</td><td class="n" data-state="ready">${q.paused ? `${num(q.parked)} held` : num(q.ready)}</td><td class="n">${num(q.scheduled)}</td><td class="n" data-state="active">${num(q.active)}</td><td class="n"><a href="#/q/${encodeURIComponent(q.queue)}/dead" data-state="dead">${num(q.dead)}</a></td><td class="n" data-state="completed">${num(q.completed)}</td><td class="n">${num(q.cancelled)}</td><td>${spark(q.queue)}</td></tr>`).join("") || `<tr><td colspan="8">No queues yet: enqueue a job (spoolctl enqueue, or a producer library) and it shows here.</td></tr>`}</tbody></table></div>
    <p class="hint">Completed counts retained jobs; the last-hour line counts every job, whatever its retention.</p>`;
  };
  await draw();
  every(2000, draw);
}

async function queuePage(name, state, cursor) {
  const q = encodeURIComponent(name);
  const [page, all, hist] = await Promise.all([
    api(`/api/queues/${q}/jobs?state=${encodeURIComponent(state)}&limit=50${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`),
    api("/api/queues"),
    api(`/api/queues/${q}/history`),
  ]);
  const stats = all.find((s) => s.queue === name) || {};
  const tabs = ["ready", "scheduled", "active", "waiting", "dead", "completed", "cancelled"].map((s) => `<a href="#/q/${q}/${s}" class="${s === state ? "on" : ""}" ${s === state ? `aria-current="page"` : ""}>${s} <span class="count">${num(stats[s] ?? 0)}</span></a>`).join("");
  // The day in 144 bars of ten minutes each.
  const day = slotsOf(hist, 144, 10);
  const started = day.get((m) => m.started), waited = day.get((m) => m.wait_ms);
  const latency = waited.map((w, i) => (started[i] ? Math.round(w / started[i] / 100) / 10 : 0));
  const dead = state === "dead";
  main.innerHTML = `<h1>Queue ${esc(name)}</h1>
    <p>${stats.paused ? `<strong>Paused</strong>: nothing new starts; ${num(stats.parked)} jobs held.` : "Running."}
      ${admin() ? (stats.paused ? ` <button id="resume">Resume</button>` : ` <button id="pause" class="danger">Pause queue…</button>`) : ""}</p>
    <div class="charts">
      ${chart("Jobs per 10 minutes, last 24 h", [{ cls: "done", label: "completed", values: day.get((m) => m.completed) }, { cls: "failed", label: "failed attempts", values: day.get((m) => m.failed) }], day.slots, "", " per 10 min")}
      ${chart("Mean wait before start, last 24 h", [{ cls: "wait", label: "mean wait", values: latency }], day.slots, " s")}
    </div>
    <form id="find" role="search"><label>Find a job by id, or jobs by error text <input name="q" required maxlength="256"> <button>Search</button></label></form>
    <div id="results"></div>
    <nav class="tabs" aria-label="job states">${tabs}</nav>
    ${dead && admin() ? `<p><button id="retry-all">Retry all dead jobs</button> <button id="purge" class="danger">Purge all dead jobs…</button></p>` : ""}
    ${jobTable(q, page.jobs, dead, `No ${esc(state)} jobs.`)}
    ${page.unreadable?.length ? `<p class="error">${num(page.unreadable.length)} jobs could not be read: ${page.unreadable.map((u) => `<code>${esc(u.id)}</code>: ${long(u.reason, 80)}`).join("; ")}</p>` : ""}
    ${page.next_cursor ? `<p><a href="#/q/${q}/${state}/${encodeURIComponent(page.next_cursor)}">Next page</a></p>` : ""}`;
  document.getElementById("find").onsubmit = async (ev) => {
    ev.preventDefault();
    const text = new FormData(ev.target).get("q");
    const r = await api(`/api/queues/${q}/search?q=${encodeURIComponent(text)}`).catch((e) => { fail(e); return null; });
    if (!r) return;
    const out = document.getElementById("results");
    out.innerHTML = `<h2>Search results</h2>
      ${r.job ? `<p>Job <a href="#/q/${q}/job/${encodeURIComponent(r.job.id)}"><code>${esc(r.job.id)}</code></a> (${esc(r.job.state)})</p>` : ""}
      <p>${num(r.matches.length)} jobs with that text in an error, of ${num(r.scanned)} dead, scheduled and active jobs read${r.truncated ? " (stopped at the search's limit: older jobs were not read)" : ""}.</p>
      ${r.matches.length ? jobTable(q, r.matches, false, "") : ""}`;
    say(`${r.matches.length} jobs found`);
  };
  bindRetry(q);
  const on = (id, f) => { const b = document.getElementById(id); if (b) b.onclick = f; };
  on("pause", () => confirm("Pause this queue? Running jobs finish, nothing new starts, and the fleet scales to zero.") && api(`/api/queues/${q}/pause`, { method: "POST" }).then(() => { say("Queue paused"); route(); }, fail));
  on("resume", () => api(`/api/queues/${q}/resume`, { method: "POST" }).then(() => { say("Queue resumed"); route(); }, fail));
  on("retry-all", () => confirm(`Retry all ${num(stats.dead)} dead jobs?`) && bulk(`/api/queues/${q}/dead/retry`, "POST", "retried"));
  on("purge", () => confirm(`Delete all ${num(stats.dead)} dead jobs for good?`) && bulk(`/api/queues/${q}/dead`, "DELETE", "purged"));
}
async function bulk(path, method, verb) {
  const r = await api(path, { method, body: JSON.stringify({ all: true }) }).catch((e) => { fail(e); return null; });
  if (!r) return;
  const msg = `${num(r[verb])} dead jobs ${verb}; ${num(r.remaining_dead)} dead now.`;
  await route();
  document.getElementById("results").innerHTML = `<p class="notice">${esc(msg)}</p>`;
  say(msg);
}
function jobTable(q, jobs, retry, empty) {
  const canRetry = retry && admin();
  return `<div class="scroll"><table class="jobs"><thead><tr><th>Id</th><th>State</th><th class="n">Attempts</th><th class="n">Priority</th><th>Enqueued</th><th>Last error</th>${canRetry ? "<th><span class=\"sr\">Actions</span></th>" : ""}</tr></thead><tbody>
    ${jobs.map((j) => `<tr><td><a href="#/q/${q}/job/${encodeURIComponent(j.id)}"><code>${esc(j.id)}</code></a></td><td>${esc(j.state)}</td><td class="n">${j.attempts}/${j.max_attempts}</td><td class="n">${j.priority}</td><td class="when">${when(j.enqueued_at_ms)}</td><td class="error-cell">${long(j.last_error, 120)}</td>${canRetry ? `<td><button data-retry="${esc(j.id)}">Retry</button></td>` : ""}</tr>`).join("") || `<tr><td colspan="7">${empty}</td></tr>`}
    </tbody></table></div>`;
}
function bindRetry(q) {
  for (const b of main.querySelectorAll("[data-retry]")) b.onclick = () => api(`/api/queues/${q}/dead/retry`, { method: "POST", body: JSON.stringify({ ids: [b.dataset.retry] }) }).then(() => { say("Job retried"); route(); }, fail);
}

// Every attempt of a job: the failed ones from its history, then the
// latest when it did not fail.
function attempts(j) {
  const out = (j.failures || []).map((f) => ({ n: f.attempt, start: f.started_at_ms, end: f.at_ms, error: f.error }));
  const latest = out.at(-1);
  if (j.started_at_ms && (!latest || latest.start !== j.started_at_ms)) {
    const end = ["completed", "cancelled"].includes(j.state) ? j.finished_at_ms : null;
    out.push({ n: j.attempts, start: j.started_at_ms, end, error: null, running: j.state === "active" });
  }
  return out;
}

// A flow's children as a nested list: each node's id (a link to its page),
// its state, and what it left (its result, or its error).
function flowTree(q, nodes) {
  if (!nodes?.length) return "";
  return `<ul class="flow">${nodes.map((n) => `<li><a href="#/q/${n.queue ? encodeURIComponent(n.queue) : q}/job/${encodeURIComponent(n.id)}"><code>${esc(n.queue ? `${n.queue} ${n.id}` : n.id)}</code></a> <span class="state state-${esc(n.state || "gone")}">${esc(n.state || "gone")}</span>${n.error != null ? ` <span class="error-cell">${esc(String(n.error).slice(0, 160))}</span>` : ""}${flowTree(n.queue ? encodeURIComponent(n.queue) : q, n.children)}</li>`).join("")}</ul>`;
}

async function jobPage(name, id) {
  const q = encodeURIComponent(name), i = encodeURIComponent(id);
  const draw = (j) => {
    const pct = j.state === "completed" ? 100 : Number(j.progress?.percent ?? 0);
    const runs = attempts(j);
    const first = runs[0]?.start;
    const outputs = (j.result?.outputs || []).map((o) => `<li><code>${esc(o.path)}</code> ${esc(o.width)}×${esc(o.height)} ${esc(o.codec)}</li>`).join("");
    main.innerHTML = `<h1>Job <code>${esc(j.id)}</code></h1>
      <p>Queue <a href="#/q/${q}">${esc(name)}</a> · state <strong id="state">${esc(j.state)}</strong> · attempt ${j.attempts} of ${j.max_attempts} · priority ${j.priority}${j.dedup_key ? ` · dedup key <code>${esc(j.dedup_key)}</code>` : ""}</p>
      <label>Progress <progress id="bar" max="100" value="${pct}">${pct}%</progress> <span id="pct">${pct.toFixed(1)}%</span></label>
      ${admin() && ["ready", "scheduled", "active", "waiting"].includes(j.state) ? `<p><button id="cancel">Cancel this job${j.child_count ? " and its flow" : ""}</button></p>` : ""}
      ${j.parent ? `<p>Child of <a href="#/q/${j.parent_queue ? encodeURIComponent(j.parent_queue) : q}/job/${encodeURIComponent(j.parent)}"><code>${esc(j.parent_queue ? `${j.parent_queue} ${j.parent}` : j.parent)}</code></a></p>` : ""}
      ${j.child_count != null ? `<h2>Flow</h2><p>${j.child_count} children · on a child's failure: ${esc(j.on_child_failure || "fail")}${j.failed_by ? ` · failed by <a href="#/q/${q}/job/${encodeURIComponent(j.failed_by)}"><code>${esc(j.failed_by)}</code></a>` : ""}</p>${flowTree(q, j.children)}` : ""}
      ${admin() && j.state === "dead" ? `<p><button data-retry="${esc(j.id)}">Retry this job</button></p>` : ""}
      <h2>Times</h2>
      <dl class="times">
        <dt>Enqueued</dt><dd>${when(j.enqueued_at_ms)}</dd>
        ${j.run_at_ms > j.enqueued_at_ms && !(j.failures || []).length ? `<dt>Delayed until</dt><dd>${when(j.run_at_ms)}</dd>` : ""}
        <dt>First start</dt><dd>${when(first)}${first && j.enqueued_at_ms ? ` (waited ${dur(first - j.enqueued_at_ms)})` : ""}</dd>
        <dt>Finished</dt><dd>${when(j.finished_at_ms)}${j.finished_at_ms && j.enqueued_at_ms ? ` (${dur(j.finished_at_ms - j.enqueued_at_ms)} after enqueue)` : ""}</dd>
      </dl>
      <h2>Attempts</h2>
      ${runs.length ? `<div class="scroll"><table><thead><tr><th class="n">#</th><th>Started</th><th>Ran</th><th>Outcome</th></tr></thead><tbody>${runs.map((r) => `<tr><td class="n">${r.n}</td><td class="when">${when(r.start)}</td><td>${r.end ? dur(r.end - r.start) : r.running ? `${dur(Date.now() - r.start)} so far` : "–"}</td><td class="error-cell">${r.error != null ? long(r.error, 200) : esc(r.running ? "running" : j.state)}</td></tr>`).join("")}</tbody></table></div>` : "<p>Not started yet.</p>"}
      ${j.last_error && !runs.some((r) => r.error === j.last_error) ? `<h2>Last error</h2>${long(j.last_error, 400)}` : ""}
      ${outputs ? `<h2>Outputs</h2><ul>${outputs}</ul>` : ""}
      <h2>Log</h2>${j.log?.length ? `<pre id="log">${j.log.map((l) => `${new Date(l.at_ms).toISOString().slice(11, 23)} ${esc(l.level)} ${esc(l.message)}`).join("\n")}</pre>` : "<p>No log lines.</p>"}
      <h2>Payload</h2>${long(j.payload, 600)}
      <h2>Result</h2>${long(JSON.stringify(j.result, null, 2), 600)}
      <h2>Progress</h2><pre id="progress">${esc(JSON.stringify(j.progress))}</pre>`;
    const c = document.getElementById("cancel");
    if (c) c.onclick = () => api(`/api/queues/${q}/jobs/${i}/cancel`, { method: "POST" }).then((r) => { say(`Cancel: ${r.outcome}`); route(); }, fail);
    bindRetry(q);
  };
  const j = await api(`/api/queues/${q}/jobs/${i}`);
  draw(j);
  if (["completed", "dead", "cancelled"].includes(j.state)) return;
  source = new EventSource(`/api/queues/${q}/jobs/${i}/events`);
  source.addEventListener("progress", (ev) => {
    const p = JSON.parse(ev.data), pct = Number(p?.percent ?? 0);
    const bar = document.getElementById("bar"); if (bar) bar.value = pct;
    const t = document.getElementById("pct"); if (t) t.textContent = `${pct.toFixed(1)}%`;
    const pre = document.getElementById("progress"); if (pre) pre.textContent = ev.data;
  });
  // The end: read the whole job again, its log included (the event does
  // not carry the log).
  source.addEventListener("done", () => {
    source.close();
    api(`/api/queues/${q}/jobs/${i}`).then((j) => { draw(j); say(`Job ${j.state}`); ok(); }, fail);
  });
  source.addEventListener("gone", () => { source.close(); fail(new Error("the job is gone (expired or purged)")); });
}

function gib(b) { return b ? `${(b / 2 ** 30).toFixed(1)} GiB` : "0"; }
async function workersPage() {
  const draw = async () => {
    const ws = await api("/api/workers");
    const now = Date.now();
    const gpu = (w) => {
      const samples = w.extra?.gpu_samples || [], gpus = w.extra?.gpus || [];
      if (!gpus.length) return `<span class="muted">${esc(w.extra?.no_gpu_reason || "none")}</span>`;
      return gpus.map((g) => {
        const s = samples.find((x) => x.index === g.index);
        return `<div class="gpu"><strong>${esc(g.name)}</strong>${s ? `: ${Math.round(s.utilization * 100)}% busy, NVENC ${Math.round(s.encoder_utilization * 100)}% with ${num(s.encoder_sessions)} sessions, ${gib(s.memory_used)} of ${gib(s.memory_total)}` : ""}</div>`;
      }).join("");
    };
    const running = (w) => w.active.map((a) => {
      const p = w.progress?.[a]?.percent;
      return `<div><a href="#/q/${encodeURIComponent(w.queue)}/job/${encodeURIComponent(a)}"><code>${esc(a)}</code></a>${p != null ? ` <progress max="100" value="${Number(p)}"></progress> ${Number(p).toFixed(0)}%` : ""}</div>`;
    }).join("") || `<span class="muted">idle</span>`;
    main.innerHTML = `<h1>Workers</h1><p>${num(ws.length)} live workers, ${num(ws.reduce((a, w) => a + w.active.length, 0))} jobs running.</p><div class="scroll"><table><thead><tr><th>Worker</th><th>Host / pod</th><th>Version</th><th>Up</th><th>Queue</th><th>State</th><th class="n">Slots</th><th>Running</th><th>GPU</th><th class="n">Seen</th></tr></thead><tbody>
    ${ws.map((w) => `<tr data-worker="${esc(w.id)}"><td><code>${esc(w.id)}</code></td><td>${esc(w.host)}${w.pod ? `<br><span class="muted">${esc(w.pod)}</span>` : ""}</td><td>${esc(w.version)}</td><td>${w.started_at_ms ? dur(now - w.started_at_ms) : "–"}</td><td><a href="#/q/${encodeURIComponent(w.queue)}">${esc(w.queue)}</a></td><td>${w.draining ? "draining" : "working"}</td><td class="n">${w.active.length}/${w.concurrency}</td><td>${running(w)}</td><td>${gpu(w)}</td><td class="n">${Math.max(0, Math.round((now - w.last_seen_ms) / 1000))} s ago</td></tr>`).join("") || `<tr><td colspan="10">No live workers.</td></tr>`}
    </tbody></table></div>`;
  };
  await draw();
  every(2000, draw);
}

async function route() {
  stop();
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  try {
    if (role === null) await whoami();
    if (parts[0] === "workers") await workersPage();
    else if (parts[0] === "q" && parts[2] === "job") await jobPage(parts[1], parts.slice(3).join("/"));
    else if (parts[0] === "q") await queuePage(parts[1], parts[2] || "ready", parts[3]);
    else await overview();
    ok();
  } catch (e) { fail(e); }
}
window.addEventListener("hashchange", route);
route();
