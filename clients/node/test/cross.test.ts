import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { Redis } from "ioredis";

import { EncodeJob, Queue, mp4, type Job } from "../src/index.js";
import { RedisProcess, Worker, spoolctl } from "./helpers.js";

let server: RedisProcess;
before(async () => {
  server = await RedisProcess.start();
});
after(() => server.stop());

test("Node enqueues, the Rust worker runs it, Node waits with progress", async () => {
  const q = new Queue(server.url, "xq");
  const worker = new Worker("sleep_worker", server.url, "xq");
  let bad = "";
  try {
    const seen: unknown[] = [];
    const id = await q.enqueue({ sleep_ms: 800, log: ["reading", "half way"] });
    const job = await q.wait(id, { timeoutMs: 30_000, onProgress: (p) => seen.push(p), pollMs: 50 });
    const log = await q.log(id);
    assert.deepEqual(
      log.map((l) => [l.level, l.message]),
      [
        ["info", "reading"],
        ["info", "half way"],
      ],
    );
    assert.ok(log.every((l) => l.atMs > 0));
    assert.equal(job.state, "completed", worker.output());
    assert.deepEqual(job.result, { slept_ms: 800 });
    assert.ok(seen.length > 0, "no progress seen");
    bad = await q.enqueue({ sleep_ms: 10, fail_times: 1 }, { maxAttempts: 1 });
    assert.equal((await q.wait(bad, { timeoutMs: 30_000 })).state, "dead");
    const dead = await q.dead();
    assert.deepEqual(dead.map((j) => j.id), [bad]);
    assert.match(dead[0]?.lastError ?? "", /on purpose/);
  } finally {
    await worker.stop();
  }
  assert.equal(await q.retryDead([bad]), 1);
  const again = await q.get(bad);
  assert.deepEqual([again.state, again.attempts], ["ready", 0]);
  await q.close();
});

const asInspect = (j: Job) => ({
  id: j.id,
  queue: j.queue,
  state: j.state,
  attempts: j.attempts,
  max_attempts: j.maxAttempts,
  priority: j.priority,
  payload: j.payload,
  progress: j.progress,
  result: j.result,
  last_error: j.lastError,
  enqueued_at_ms: j.enqueuedAtMs,
  run_at_ms: j.runAtMs,
  started_at_ms: j.startedAtMs,
  finished_at_ms: j.finishedAtMs,
  cancel_requested: j.cancelRequested,
  dedup_key: j.dedupKey,
  timeout_ms: j.timeoutMs,
  timeout_retry: j.timeoutRetry,
  failures: j.failures.map((f) => ({ attempt: f.attempt, started_at_ms: f.startedAtMs, at_ms: f.atMs, error: f.error })),
  parent: j.parent,
  parent_queue: j.parentQueue,
  child_count: j.childCount,
  on_child_failure: j.onChildFailure,
  failed_by: j.failedBy,
});

test("Rust and Node read the same job the same way", async () => {
  const q = new Queue(server.url, "xq2");
  const rustId = spoolctl(server.url, "xq2", "enqueue", "--payload", '{"from":"rust"}', "--priority", "9").trim();
  const nodeId = await q.enqueue({ from: "node" }, { priority: -3, dedupKey: "k1", delayMs: 5000 });
  for (const id of [rustId, nodeId]) {
    const theirs = JSON.parse(spoolctl(server.url, "xq2", "inspect", id, "--json"));
    assert.deepEqual(asInspect(await q.get(id)), theirs);
  }
  await q.close();
});

test("an encode job built here is encoded by the Rust worker", async () => {
  const dir = mkdtempSync(join(tmpdir(), "spool-node-enc-"));
  mkdirSync(join(dir, "in"));
  mkdirSync(join(dir, "out"));
  const made = spawnSync("ffmpeg", ["-v", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=1", "-c:v", "libx264", "-pix_fmt", "yuv420p", join(dir, "in", "clip.mp4")]);
  assert.equal(made.status, 0);
  const worker = new Worker("spool-encoder-worker", server.url, "enc", { SPOOL_INPUT_ROOT: join(dir, "in"), SPOOL_OUTPUT_ROOT: join(dir, "out") });
  const q = new Queue(server.url, "enc");
  try {
    const job = new EncodeJob({ input: "clip.mp4", output: mp4("small.mp4"), renditions: [{ height: 120, preset: "fastest" }], hardware: "cpu" });
    const done = await q.wait(await q.enqueue(job), { timeoutMs: 120_000 });
    assert.equal(done.state, "completed", `${done.lastError}\n${worker.output()}`);
    const out = (done.result as { outputs: { path: string; height: number }[] }).outputs[0];
    assert.equal(out?.height, 120);
    const probe = spawnSync("ffprobe", ["-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries", "stream=nb_read_frames,height", "-of", "json", out?.path ?? ""], { encoding: "utf8" });
    const stream = JSON.parse(probe.stdout).streams[0];
    assert.deepEqual([stream.height, stream.nb_read_frames], [120, "25"]);
  } finally {
    await worker.stop();
    await q.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("waits follow events: many at once, a deleted job's result, and a queue-wide feed", async () => {
  const q = new Queue(server.url, "evn");
  // The feed first: it turns the queue's events on.
  const abort = new AbortController();
  const feed: { jobId: string; event: string; data: unknown }[] = [];
  const following = (async () => {
    for await (const ev of q.events({ signal: abort.signal })) feed.push(ev);
  })();
  // Ten waits share one reader; each gets its own job's end. The jobs are
  // deleted as they complete (retention 0), so the waits start before any
  // worker runs: a wait begun after such a job ended has nothing to read.
  const ids = await Promise.all(Array.from({ length: 10 }, (_, i) => q.enqueue({ sleep_ms: 20 * i }, { retentionMs: 0 })));
  const waits = Promise.all(ids.map((id) => q.wait(id, { timeoutMs: 60_000 })));
  const raw = new Redis(server.url);
  for (const id of ids) {
    while ((await raw.hget(`spool:{evn}:job:${id}`, "notify")) !== "1") await new Promise((r) => setTimeout(r, 10));
  }
  raw.disconnect();
  const worker = new Worker("sleep_worker", server.url, "evn");
  try {
    const jobs = await waits;
    jobs.forEach((j, i) => {
      assert.equal(j.id, ids[i]);
      assert.equal(j.state, "completed");
      // Deleted as it completed (retention 0): the result came with its event.
      assert.deepEqual(j.result, { slept_ms: 20 * i });
    });
    const bad = await q.enqueue({ sleep_ms: 10, fail_times: 1 }, { maxAttempts: 1 });
    await assert.rejects(q.wait(bad, { timeoutMs: 30_000, raiseOnFailure: true }), /on purpose/);
    const deadline = Date.now() + 10_000;
    while (feed.filter((e) => e.event === "completed").length < 10 || !feed.some((e) => e.event === "dead")) {
      assert.ok(Date.now() < deadline, JSON.stringify(feed));
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.deepEqual(
      new Set(feed.filter((e) => e.event === "completed").map((e) => e.jobId)),
      new Set(ids),
    );
  } finally {
    abort.abort();
    await following;
    await worker.stop();
    await q.close();
  }
});

test("a flow enqueued from Node runs its children first on the Rust worker", async () => {
  const q = new Queue(server.url, "xflow");
  const flow = {
    payload: { sleep_ms: 10 },
    options: { jobId: "join" },
    onChildFailure: "continue" as const,
    children: [
      { payload: { sleep_ms: 20 } },
      { payload: { sleep_ms: 10, fail_times: 1 }, options: { maxAttempts: 1 } },
      { payload: { sleep_ms: 10 }, children: [{ payload: { sleep_ms: 5 } }] },
    ],
  };
  const ids = await q.enqueueFlow(flow);
  assert.equal(ids.length, 5);
  assert.equal(ids[0], "join");
  assert.equal((await q.get("join")).state, "waiting");
  assert.equal((await q.stats()).waiting, 2);
  // The same root id again: the same ids, nothing new.
  assert.deepEqual(await q.enqueueFlow(flow), ids);
  const worker = new Worker("sleep_worker", server.url, "xflow");
  try {
    const job = await q.wait("join", { timeoutMs: 30_000 });
    assert.equal(job.state, "completed", worker.output());
    assert.deepEqual(job.result, { slept_ms: 10, children_results: 2 });
  } finally {
    await worker.stop();
  }
  const kids = await q.children("join");
  assert.deepEqual(
    kids.map((k) => [k.id, k.completed]),
    [
      [ids[1], true],
      [ids[2], false],
      [ids[3], true],
    ],
  );
  assert.match(kids[1]?.error ?? "", /on purpose/);
  assert.equal((await q.get(ids[4] as string)).parent, ids[3]);
  await assert.rejects(q.enqueueFlow({ payload: {}, onChildFailure: "maybe" as "fail" }), /onChildFailure/);
  await assert.rejects(
    q.enqueueFlow({ payload: {}, options: { jobId: "r2" }, children: [{ payload: {}, options: { jobId: ids[1] as string } }] }),
    /must be new jobs/,
  );
  await q.close();
});
