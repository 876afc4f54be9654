// What users write, checked by `tsc --strict` when the package builds (the
// test files are compiled with it): typed payloads and results with
// `Queue<P, R>`, interface payloads, an EncodeJob. Nothing here talks to
// Redis; the one test only proves the file loads.
import assert from "node:assert/strict";
import { test } from "node:test";

import { BulkJob, EncodeJob, Queue, mp4, type Job, type JobEvent } from "../src/index.js";

interface Render {
  input: string;
  heights: number[];
}
interface Rendered {
  outputs: string[];
}

export async function typed(q: Queue<Render, Rendered>): Promise<string | undefined> {
  const id = await q.enqueue({ input: "a.mov", heights: [720] });
  await q.enqueueMany([{ input: "b.mov", heights: [] }, new BulkJob({ input: "c.mov", heights: [480] }, { priority: 3 })]);
  // @ts-expect-error: not a Render
  await q.enqueue({ file: "a.mov" });
  const job: Job<Render, Rendered> = await q.wait(id);
  const heights: number[] = job.data.heights;
  const first: string | undefined = job.result?.outputs[0];
  const page: Job<Render, Rendered>[] = await q.jobs("completed", { limit: 10 });
  return first ?? page[0]?.data.input ?? String(heights.length);
}

export async function untyped(url: string): Promise<void> {
  const q = new Queue(url, "encode");
  await q.enqueue(new EncodeJob({ input: "s3://media/in.mov", output: mp4("s3://media/out.mp4"), renditions: [{ height: 720 }] }));
  await q.enqueue({ any: ["json", 1] });
  await q.enqueue("text");
  await q.enqueue(Buffer.from("bytes"));
  for await (const ev of q.events({ signal: AbortSignal.timeout(10) })) {
    const e: JobEvent = ev;
    void e;
  }
}

test("the typed usage compiles", () => {
  assert.equal(typeof typed, "function");
  assert.equal(typeof untyped, "function");
});
