// BullMQ's Worker with a no-op processor, for `--bench runtime`: one
// process, the given concurrency, the given Redis; runs until killed.
// Usage: node bullmq_worker.mjs <redis-port> <queue> <concurrency>
import { Worker } from "bullmq";

const [port, queue, concurrency] = process.argv.slice(2);
const connection = { host: "127.0.0.1", port: Number(port) };
const worker = new Worker(queue, async () => null, {
  connection,
  concurrency: Number(concurrency),
});
worker.on("error", (e) => console.error("worker error", e));
process.on("SIGTERM", async () => {
  await worker.close();
  process.exit(0);
});
