// Enqueue throughput from Node: spool-client against BullMQ's `add` and
// `addBulk`, in the same run, on the same redis-server (started here on a
// free port). Target: at least BullMQ's rate.
// Run with scripts/bench-clients.sh. SPOOL_BENCH_JOBS: single enqueues per side (5000).
import { Queue as BullQueue } from "bullmq";

import { Queue } from "../dist/src/index.js";
import { RedisProcess } from "../dist/test/helpers.js";

const N = Number(process.env.SPOOL_BENCH_JOBS ?? 5000);
const BATCH = 1000;
const ROUNDS = 5;
// Rounds per side, sides interleaved; the best of each counts.
const BEST_OF = Number(process.env.SPOOL_BENCH_ROUNDS ?? 3);
const PAYLOAD = { input: "s3://media/uploads/talk.mov", output: "s3://media/vod/talk" };

async function rate(n, f) {
  const t = performance.now();
  await f();
  return n / ((performance.now() - t) / 1000);
}

const server = await RedisProcess.start();
try {
  const q = new Queue(server.url, "bench");
  await q.enqueue(PAYLOAD); // load the script
  const bull = new BullQueue("bench", { connection: { host: "127.0.0.1", port: server.port } });
  await bull.add("render", PAYLOAD);
  let [spoolSingle, spoolBatch, bullSingle, bullBatch] = [0, 0, 0, 0];
  for (let round = 0; round < BEST_OF; round++) {
    spoolSingle = Math.max(spoolSingle, await rate(N, async () => {
      for (let i = 0; i < N; i++) await q.enqueue(PAYLOAD);
    }));
    bullSingle = Math.max(bullSingle, await rate(N, async () => {
      for (let i = 0; i < N; i++) await bull.add("render", PAYLOAD);
    }));
    spoolBatch = Math.max(spoolBatch, await rate(BATCH * ROUNDS, async () => {
      for (let r = 0; r < ROUNDS; r++) await q.enqueueMany(Array(BATCH).fill(PAYLOAD));
    }));
    bullBatch = Math.max(bullBatch, await rate(BATCH * ROUNDS, async () => {
      for (let r = 0; r < ROUNDS; r++) await bull.addBulk(Array.from({ length: BATCH }, () => ({ name: "render", data: PAYLOAD })));
    }));
  }
  await q.close();
  await bull.close();

  const f = (v) => v.toFixed(0).padStart(9);
  console.log(`node enqueue, ${N} single (awaited one by one) and ${ROUNDS} x ${BATCH} batched, same redis-server, best of ${BEST_OF}:`);
  console.log(`  spool-client   single ${f(spoolSingle)} jobs/s   enqueueMany ${f(spoolBatch)} jobs/s`);
  console.log(`  bullmq         single ${f(bullSingle)} jobs/s   addBulk     ${f(bullBatch)} jobs/s`);
  console.log(`spool node_enqueue single/bullmq=${(spoolSingle / bullSingle).toFixed(2)} batch/bullmq_addBulk=${(spoolBatch / bullBatch).toFixed(2)}`);
} finally {
  server.stop();
}
