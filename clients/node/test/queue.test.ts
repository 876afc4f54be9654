import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { Redis } from "ioredis";

import { BulkJob, InvalidJob, JobFailed, NotFound, PayloadTooLarge, PROTOCOL, Queue, RedisUnavailable, SpoolError } from "../src/index.js";
import { LUA } from "../src/lua.js";
import { ROOT, RedisProcess, freePort, startCluster, startSentinel } from "./helpers.js";

let server: RedisProcess;
const open: Queue[] = [];
const queue = (name: string, url = server.url, opts = {}) => {
  const q = new Queue(url, name, opts);
  open.push(q);
  return q;
};

before(async () => {
  server = await RedisProcess.start();
});
after(async () => {
  await Promise.all(open.map((q) => q.close()));
  server.stop();
});

test("enqueue, get, and the options as stored", async () => {
  const q = queue("renders");
  const t = Date.now();
  const id = await q.enqueue({ input: "a.mov" }, { priority: 7, maxAttempts: 3, leaseMs: 120_000 });
  const job = await q.get(id);
  assert.equal(job.id, id);
  assert.equal(job.state, "ready");
  assert.deepEqual([job.priority, job.maxAttempts, job.attempts], [7, 3, 0]);
  assert.deepEqual(JSON.parse(job.payload), { input: "a.mov" });
  assert.ok(job.enqueuedAtMs !== null && Math.abs(job.enqueuedAtMs - t) < 5000);
  const raw = new Redis(server.url);
  assert.equal(await raw.hget(`spool:{renders}:job:${id}`, "lease_ms"), "120000");
  assert.equal(await raw.sismember("spool:queues", "renders"), 1);
  raw.disconnect();
  await assert.rejects(q.get("nope"), NotFound);
  const limited = await q.get(await q.enqueue("x", { timeoutMs: 7_200_000, timeoutRetry: false }));
  assert.equal(limited.timeoutMs, 7_200_000);
  assert.equal(limited.timeoutRetry, false);
});

test("payloads are binary safe", async () => {
  const q = queue("bin");
  const bytes = Buffer.from(Array.from({ length: 1024 }, (_, i) => i % 256));
  const id = await q.enqueue(bytes);
  const raw = new Redis(server.url);
  assert.ok((await raw.hgetBuffer(`spool:{bin}:job:${id}`, "payload"))?.equals(bytes));
  raw.disconnect();
});

test("priority then FIFO order, delay, dedup, explicit ids", async () => {
  const q = queue("order");
  const low = await q.enqueueMany(["l1", "l2"], { priority: -5 });
  const high = await q.enqueue("h", { priority: 100 });
  const mid = await q.enqueueMany(["m1", "m2"]);
  const raw = new Redis(server.url);
  assert.deepEqual(await raw.zrange("spool:{order}:ready", 0, -1), [high, ...mid, ...low]);
  raw.disconnect();
  const later = await q.enqueue("x", { delayMs: 30_000 });
  const job = await q.get(later);
  assert.equal(job.state, "scheduled");
  assert.ok(job.runAtMs !== null && Math.abs(job.runAtMs - Date.now() - 30_000) < 2000);
  const a = await q.enqueue("first", { dedupKey: "render-42" });
  assert.equal(await q.enqueue("second", { dedupKey: "render-42" }), a);
  assert.equal(await q.enqueue("p", { jobId: "my-id" }), "my-id");
  assert.equal(await q.enqueue("other", { jobId: "my-id" }), "my-id");
});

test("enqueueMany batches 2,500 jobs in order", async () => {
  const q = queue("bulk");
  const ids = await q.enqueueMany(Array.from({ length: 2500 }, (_, n) => ({ n })));
  assert.equal(new Set(ids).size, 2500);
  assert.deepEqual(JSON.parse((await q.get(ids[1234] as string)).payload), { n: 1234 });
  const s = await q.stats();
  assert.deepEqual([s.ready, s.outstanding], [2500, 2500]);
});

test("cancel a waiting job", async () => {
  const q = queue("c");
  const id = await q.enqueue("x");
  assert.equal(await q.cancel(id), "cancelled");
  assert.equal((await q.get(id)).state, "cancelled");
  assert.equal(await q.cancel(id), "finished:cancelled");
  await assert.rejects(q.cancel("missing"), NotFound);
});

test("pause holds the backlog outside the KEDA keys; resume restores its order", async () => {
  const q = queue("paused");
  const first = await q.enqueueMany(["a", "b", "c"]);
  const urgent = await q.enqueue("u", { priority: 9 });
  const s = await q.pause();
  assert.ok(s.paused && s.parked === 4 && s.ready === 0 && s.pausedAtMs !== null, JSON.stringify(s));
  const raw = new Redis(server.url);
  try {
    assert.equal(await raw.zcard("spool:{paused}:ready"), 0);
    assert.equal(await raw.scard("spool:{paused}:outstanding"), 0);
    const late = await q.enqueue("late");
    assert.equal((await q.get(late)).state, "ready");
    const st = await q.stats();
    assert.ok(st.paused && st.parked === 5 && st.ready === 0, JSON.stringify(st));
    assert.equal((await q.pause()).pausedAtMs, s.pausedAtMs);
    const r = await q.resume();
    assert.ok(!r.paused && r.ready === 5 && r.parked === 0, JSON.stringify(r));
    assert.deepEqual(await raw.zrange("spool:{paused}:ready", 0, -1), [urgent, ...first, late]);
    assert.equal((await q.pauseState()).paused, false);
  } finally {
    raw.disconnect();
  }
});

test("bad jobs are refused before anything is sent", async () => {
  const q = queue("v", server.url, { maxPayloadBytes: 1000 });
  await assert.rejects(q.enqueue(Buffer.alloc(1001)), PayloadTooLarge);
  const cases: [object, string][] = [
    [{ priority: 5000 }, "priority"],
    [{ maxAttempts: 0 }, "maxAttempts"],
    [{ leaseMs: 10 }, "leaseMs"],
    [{ delayMs: -1 }, "delayMs"],
    [{ dedupKey: "" }, "dedupKey"],
    [{ jobId: "has space" }, "jobId"],
    [{ backoffMs: 10_000, backoffMaxMs: 5_000 }, "backoffMaxMs"],
  ];
  for (const [opts, field] of cases) {
    await assert.rejects(q.enqueue("x", opts), (e: unknown) => e instanceof InvalidJob && e.field === field);
  }
  assert.throws(() => new Queue(server.url, "bad{name}"), InvalidJob);
  const raw = new Redis(server.url);
  assert.equal(await raw.exists("spool:{v}:seq"), 0);
  raw.disconnect();
});

test("Redis down is a clear error within 3 s", async () => {
  const q = queue("down", `redis://127.0.0.1:${await freePort()}`);
  const t = Date.now();
  await assert.rejects(q.enqueue("x"), (e: unknown) => e instanceof RedisUnavailable && /cannot reach Redis at 127\.0\.0\.1:\d+\/0/.test(e.message));
  assert.ok(Date.now() - t < 3000, `took ${Date.now() - t} ms`);
});

test("the password never appears in errors", async () => {
  const password = "Node-s3cret-Zq81";
  const r = await RedisProcess.start("--requirepass", password);
  try {
    const url = `redis://:${password}@127.0.0.1:${r.port}`;
    await queue("pw", url).enqueue("x");
    const wrong = queue("pw", url.replace(password, `${password}-wrong`));
    await assert.rejects(wrong.enqueue("x"), (e: unknown) => e instanceof SpoolError && !e.message.includes(password));
  } finally {
    r.stop();
  }
});

test("a cluster URL works", async () => {
  const c = await startCluster();
  try {
    const q = queue("clustered", c.url);
    const ids = await q.enqueueMany(["a", "b", "c"]);
    assert.equal((await q.get(ids[1] as string)).payload, "b");
    assert.equal((await q.stats()).ready, 3);
    assert.equal(await q.cancel(ids[0] as string), "cancelled");
    await q.close();
  } finally {
    c.stop();
  }
});

test("a Sentinel URL finds the master, and a malformed one says what is wrong", async () => {
  const s = await startSentinel();
  try {
    const q = queue("sentineled", s.url);
    const ids = await q.enqueueMany(["a", "b"]);
    assert.equal((await q.get(ids[1] as string)).payload, "b");
    assert.equal((await q.stats()).ready, 2);
    assert.ok(q.addr.includes("spoolmaster"), q.addr);
    await q.close();
  } finally {
    s.stop();
  }
  for (const url of [
    "redis+sentinel://127.0.0.1:26379",
    "redis+sentinel://127.0.0.1:notaport/m",
    "redis+sentinel://127.0.0.1:26379/m/notadb",
  ]) {
    assert.throws(
      () => new Queue(url, "x"),
      (e: unknown) => e instanceof InvalidJob && e.field === "url" && e.message.includes("redis+sentinel://"),
      url,
    );
  }
});

test("interface payloads type-check and non-JSON payloads are InvalidJob", async () => {
  interface Render {
    input: string;
    height: number;
  }
  const r: Render = { input: "a.mov", height: 720 };
  const q = queue("payloads");
  const id = await q.enqueue(r);
  assert.deepEqual(JSON.parse((await q.get(id)).payload as string), r);
  await assert.rejects(q.enqueue({ n: 10n }), (e: unknown) => e instanceof InvalidJob && e.field === "payload");
  const cyclic: Record<string, unknown> = {};
  cyclic.self = cyclic;
  await assert.rejects(q.enqueue(cyclic), (e: unknown) => e instanceof InvalidJob && e.field === "payload");
});

test("bulk jobs carry their own options", async () => {
  const q = queue("bulk-options");
  const ids = await q.enqueueMany(
    [new BulkJob("a", { priority: 9, dedupKey: "k-a" }), new BulkJob("b", { jobId: "fixed-b" }), new BulkJob("c", { delayMs: 60_000 }), "d"],
    { priority: -3 },
  );
  assert.equal(new Set(ids).size, 4);
  assert.equal(ids[1], "fixed-b");
  const jobs = await Promise.all(ids.map((i) => q.get(i)));
  assert.deepEqual(
    jobs.map((j) => j.priority),
    [9, 0, 0, -3],
  );
  assert.equal(jobs[2]?.state, "scheduled");
  await assert.rejects(q.enqueueMany(["x", "y", "z"], { dedupKey: "same" }), (e: unknown) => e instanceof InvalidJob && e.field === "dedupKey");
  assert.equal((await q.stats()).ready, 3);
  // BullMQ's option names are refused by name, not ignored.
  await assert.rejects(
    q.enqueue("x", { delay: 5 } as never),
    (e: unknown) => e instanceof InvalidJob && e.field === "delay" && e.message.includes("delayMs"),
  );
});

test("wait can throw JobFailed for a dead job", async () => {
  const q = queue("waits");
  const id = await q.enqueue("x");
  const raw = new Redis(server.url);
  await raw.hset(`spool:{waits}:job:${id}`, "state", "dead", "last_error", "boom");
  raw.disconnect();
  await assert.rejects(q.wait(id, { timeoutMs: 5000, raiseOnFailure: true }), (e: unknown) => e instanceof JobFailed && e.message.includes("boom"));
  assert.equal((await q.wait(id, { timeoutMs: 5000 })).state, "dead");
});

test("the Lua scripts are the crate's own", () => {
  const ours = join(ROOT, "clients", "node", "scripts");
  for (const f of readdirSync(ours)) {
    assert.equal(readFileSync(join(ours, f), "utf8"), readFileSync(join(ROOT, "crates/queue/src/scripts", f), "utf8"), `${f}: run scripts/sync-client-scripts.sh`);
  }
});

test("an existing ioredis client, pages of jobs and getMany", async () => {
  const mine = new Redis(server.url);
  const q = new Queue(mine, "paged");
  const ids: string[] = [];
  for (let i = 0; i < 7; i++) ids.push(await q.enqueue({ n: i }, { priority: i % 3 }));
  const walked: string[] = [];
  for (let offset = 0; ; offset += 3) {
    const page = await q.jobs("ready", { limit: 3, offset });
    walked.push(...page.map((j) => j.id));
    if (page.length < 3) break;
  }
  const order = [...Array(7).keys()].sort((a, b) => (b % 3) - (a % 3) || a - b);
  assert.deepEqual(walked, order.map((i) => ids[i]));
  const got = await q.getMany([ids[0] ?? "", "nope", ids[6] ?? ""]);
  assert.deepEqual(got.map((j) => j?.id ?? null), [ids[0], null, ids[6]]);
  assert.deepEqual(got[0]?.data, { n: 0 });
  await assert.rejects(q.jobs("sleeping" as never), /state/);
  // close() leaves the caller's client open.
  await q.close();
  assert.equal(await mine.ping(), "PONG");
  mine.disconnect();
});

test("the embedded scripts are the ones in scripts/", () => {
  for (const name of readdirSync(join(ROOT, "clients", "node", "scripts"))) {
    assert.equal(LUA[name], readFileSync(join(ROOT, "clients", "node", "scripts", name), "utf8"), `${name}: run scripts/sync-client-scripts.sh`);
  }
});

test("a worker that speaks another protocol is reported once", async () => {
  const raw = new Redis(server.url);
  const q = new Queue(server.url, "proto");
  const warnings: string[] = [];
  const listen = (w: Error) => {
    if (w.name === "ProtocolMismatch") warnings.push(w.message);
  };
  process.on("warning", listen);
  try {
    await raw.zadd("spool:{proto}:workers", Date.now(), "old-1");
    await raw.set("spool:{proto}:worker:old-1", JSON.stringify({ id: "old-1", queue: "proto" }));
    await q.enqueue({ n: 1 });
    await q.enqueue({ n: 2 });
    await new Promise((r) => setImmediate(r));
    assert.equal(warnings.length, 1, String(warnings));
    assert.match(warnings[0] ?? "", new RegExp(`protocol 1, spool-client speaks ${PROTOCOL}; .*upgrade the workers`));
  } finally {
    process.off("warning", listen);
    raw.disconnect();
    await q.close();
  }
});
