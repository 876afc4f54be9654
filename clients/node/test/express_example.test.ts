// examples/express: POST /renders enqueues an encode job that the Rust
// worker runs; GET /renders/:id/events streams progress until completion.
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";

import { ROOT, RedisProcess, Worker, freePort } from "./helpers.js";

/** The keys of a job as both examples answer it. */
const VIEW_KEYS = [
  "id", "state", "attempts", "max_attempts", "progress", "result", "error",
  "enqueued_at_ms", "started_at_ms", "finished_at_ms", "failures",
].sort();

test("with Redis down the express example answers 503 with a message", async () => {
  const port = await freePort();
  const api = spawn("node", ["server.mjs"], {
    cwd: join(ROOT, "examples", "express"),
    env: { ...process.env, SPOOL_REDIS_URL: `redis://127.0.0.1:${await freePort()}`, SPOOL_QUEUE: "renders", PORT: String(port) },
    stdio: "ignore",
  });
  try {
    const base = `http://127.0.0.1:${port}`;
    const deadline = Date.now() + 30_000;
    let r: Response;
    for (;;) {
      try {
        r = await fetch(`${base}/renders`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ input: "a.mp4", output: "a", heights: [240] }) });
        break;
      } catch {
        assert.ok(Date.now() < deadline, "the API never started");
        await new Promise((res) => setTimeout(res, 100));
      }
    }
    assert.equal(r.status, 503);
    assert.match((await r.json()).detail, /Redis/);
    assert.equal((await fetch(`${base}/renders/x`)).status, 503);
  } finally {
    api.kill();
  }
});

test("the express example streams progress until completion", async () => {
  const server = await RedisProcess.start();
  const dir = mkdtempSync(join(tmpdir(), "spool-express-"));
  mkdirSync(join(dir, "in"));
  mkdirSync(join(dir, "out"));
  spawnSync("ffmpeg", ["-v", "error", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25:duration=4", "-c:v", "libx264", "-pix_fmt", "yuv420p", join(dir, "in", "clip.mp4")]);
  const port = await freePort();
  const api = spawn("node", ["server.mjs"], {
    cwd: join(ROOT, "examples", "express"),
    env: { ...process.env, SPOOL_REDIS_URL: server.url, SPOOL_QUEUE: "renders", PORT: String(port) },
    stdio: "ignore",
  });
  const worker = new Worker("spool-encoder-worker", server.url, "renders", { SPOOL_INPUT_ROOT: join(dir, "in"), SPOOL_OUTPUT_ROOT: join(dir, "out"), SPOOL_HW: "cpu" });
  try {
    const base = `http://127.0.0.1:${port}`;
    const deadline = Date.now() + 30_000;
    for (;;) {
      try {
        await fetch(`${base}/renders/none`);
        break;
      } catch {
        assert.ok(Date.now() < deadline, "the API never started");
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    const created = await (
      await fetch(`${base}/renders`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ input: "clip.mp4", output: "clip_360", heights: [360, 240] }) })
    ).json();
    const body = await (await fetch(base + created.events)).text();
    const events = body
      .split("\n\n")
      .map((block) => ({ kind: /^event: (.*)$/m.exec(block)?.[1], data: /^data: (.*)$/m.exec(block)?.[1] }))
      .filter((e) => e.kind);
    assert.ok(events.some((e) => e.kind === "progress"), body);
    const done = events.at(-1);
    assert.equal(done?.kind, "done", body);
    const job = JSON.parse(done?.data ?? "{}");
    assert.equal(job.state, "completed", `${body}\n${worker.output()}`);
    assert.equal(job.result.outputs.length, 2);
    const bad = await fetch(`${base}/renders`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ input: "clip.mp4", output: "x", heights: [361] }) });
    assert.equal(bad.status, 422);
    assert.match((await bad.json()).detail, /renditions\[0\]\.height/);
    // A malformed field is a 422 too, not a 503.
    const odd = await fetch(`${base}/renders`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ input: "clip.mp4", output: "x", heights: "tall" }) });
    assert.equal(odd.status, 422);
    // The job in the shape both examples answer (examples/fastapi's test lists the same keys).
    const got = await (await fetch(`${base}/renders/${created.id}`)).json();
    assert.deepEqual(Object.keys(got).sort(), VIEW_KEYS);
    // A job that fails ends with a distinct `failed` event and its error.
    const doomed = await (
      await fetch(`${base}/renders`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ input: "missing.mp4", output: "m", heights: [240] }) })
    ).json();
    const end = (await (await fetch(base + doomed.events)).text()).split("\n\n").filter((b) => b.startsWith("event: ")).at(-1) ?? "";
    assert.match(end, /^event: failed\n/, end);
    const failed = JSON.parse(/^data: (.*)$/m.exec(end)?.[1] ?? "{}");
    assert.equal(failed.state, "dead");
    assert.ok(failed.error, end);
  } finally {
    api.kill();
    await worker.stop();
    server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});
