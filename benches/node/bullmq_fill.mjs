// Adds N no-op jobs to a BullMQ queue with addBulk, for `--bench runtime`.
// Usage: node bullmq_fill.mjs <redis-port> <queue> <n>
import { Queue } from "bullmq";

const [port, name, n] = process.argv.slice(2);
const q = new Queue(name, { connection: { host: "127.0.0.1", port: Number(port) } });
const total = Number(n);
for (let done = 0; done < total; done += 1000) {
  const k = Math.min(1000, total - done);
  await q.addBulk(Array.from({ length: k }, () => ({ name: "noop", data: {} })));
}
await q.close();
