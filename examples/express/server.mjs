// A render API over spool: POST /renders enqueues an encode job,
// GET /renders/:id/events streams its progress as Server-Sent Events until
// it ends (`done`, or `failed` with the error, or `cancelled`).
// Env: SPOOL_REDIS_URL, SPOOL_QUEUE, PORT.
//
// Errors, as examples/fastapi answers them too: 422 for a bad request, 404
// for an unknown job, 503 while Redis is unreachable, each {"detail": "..."};
// a job is answered in one shape (`view`) by both examples.
import express from "express";
import { EncodeJob, InvalidJob, NotFound, Queue, hls, mp4 } from "spool-client";

const queue = new Queue(process.env.SPOOL_REDIS_URL ?? "redis://127.0.0.1:6379", process.env.SPOOL_QUEUE ?? "encode");
const app = express();
app.use(express.json());

/** The status an error answers with. */
const status = (e) => (e instanceof InvalidJob ? 422 : e instanceof NotFound ? 404 : 503);

/** A job as both examples answer it (times in ms since the epoch). */
const view = (job) => ({
  id: job.id,
  state: job.state,
  attempts: job.attempts,
  max_attempts: job.maxAttempts,
  progress: job.progress,
  result: job.result,
  error: job.lastError,
  enqueued_at_ms: job.enqueuedAtMs,
  started_at_ms: job.startedAtMs,
  finished_at_ms: job.finishedAtMs,
  failures: job.failures.map((f) => ({ attempt: f.attempt, at_ms: f.atMs, error: f.error })),
});

/** The request's fields, or why they are wrong (a 422, as FastAPI's). */
function request(body) {
  const { input, output, heights = [720], hls: asHls = false, priority = 0 } = body ?? {};
  if (typeof input !== "string" || typeof output !== "string") return { error: "input and output are strings" };
  if (!Array.isArray(heights) || !heights.every(Number.isInteger)) return { error: "heights is a list of integers" };
  if (typeof asHls !== "boolean" || !Number.isInteger(priority)) return { error: "hls is a boolean and priority an integer" };
  return { input, output, heights, asHls, priority };
}

app.post("/renders", async (req, res) => {
  const r = request(req.body);
  if (r.error) return res.status(422).json({ detail: r.error });
  try {
    const job = new EncodeJob({
      input: r.input,
      output: r.asHls ? hls(r.output) : mp4(r.output),
      renditions: r.heights.map((height) => ({ height })),
    });
    const id = await queue.enqueue(job, { priority: r.priority });
    res.status(202).json({ id, events: `/renders/${id}/events` });
  } catch (e) {
    res.status(status(e)).json({ detail: e.message });
  }
});

app.get("/renders/:id", async (req, res) => {
  try {
    res.json(view(await queue.get(req.params.id)));
  } catch (e) {
    res.status(status(e)).json({ detail: e.message });
  }
});

app.get("/renders/:id/events", async (req, res) => {
  try {
    await queue.get(req.params.id);
  } catch (e) {
    return res.status(status(e)).json({ detail: e.message });
  }
  res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache", connection: "keep-alive" });
  const send = (event, data) => res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
  const keepAlive = setInterval(() => res.write(": keep-alive\n\n"), 15_000);
  try {
    const job = await queue.wait(req.params.id, { timeoutMs: 24 * 3600_000, onProgress: (p) => send("progress", p) });
    // A distinct event for each end: a failure is not "done".
    send(job.state === "completed" ? "done" : job.state === "dead" ? "failed" : job.state, view(job));
  } catch (e) {
    send("error", { detail: e.message });
  } finally {
    clearInterval(keepAlive);
    res.end();
  }
});

// Malformed JSON bodies: a 422 in the same shape, not express's HTML page.
app.use((err, _req, res, _next) => res.status(err.status === 400 ? 422 : 500).json({ detail: err.message }));

const port = Number(process.env.PORT ?? 3000);
app.listen(port, () => console.log(`renders API on :${port}`));
