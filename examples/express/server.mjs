// A render API over spool: POST /renders enqueues an encode job,
// GET /renders/:id/events streams its progress as Server-Sent Events until
// it ends. Env: SPOOL_REDIS_URL, SPOOL_QUEUE, PORT.
import express from "express";
import { EncodeJob, InvalidJob, NotFound, Queue, hls, mp4 } from "spool-client";

const queue = new Queue(process.env.SPOOL_REDIS_URL ?? "redis://127.0.0.1:6379", process.env.SPOOL_QUEUE ?? "encode");
const app = express();
app.use(express.json());

app.post("/renders", async (req, res) => {
  const { input, output, heights = [720], hls: asHls = false, priority = 0 } = req.body ?? {};
  try {
    const job = new EncodeJob({
      input,
      output: asHls ? hls(output) : mp4(output),
      renditions: heights.map((height) => ({ height })),
    });
    const id = await queue.enqueue(job, { priority });
    res.status(202).json({ id, events: `/renders/${id}/events` });
  } catch (e) {
    if (e instanceof InvalidJob) return res.status(422).json({ detail: e.message });
    res.status(503).json({ detail: e.message });
  }
});

app.get("/renders/:id", async (req, res) => {
  try {
    res.json(await queue.get(req.params.id));
  } catch (e) {
    res.status(e instanceof NotFound ? 404 : 503).json({ detail: e.message });
  }
});

app.get("/renders/:id/events", async (req, res) => {
  try {
    await queue.get(req.params.id);
  } catch (e) {
    return res.status(e instanceof NotFound ? 404 : 503).json({ detail: e.message });
  }
  res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache", connection: "keep-alive" });
  const send = (event, data) => res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
  const keepAlive = setInterval(() => res.write(": keep-alive\n\n"), 15_000);
  try {
    const job = await queue.wait(req.params.id, { timeoutMs: 24 * 3600_000, onProgress: (p) => send("progress", p) });
    send("done", job);
  } catch (e) {
    send("error", { detail: e.message });
  } finally {
    clearInterval(keepAlive);
    res.end();
  }
});

const port = Number(process.env.PORT ?? 3000);
app.listen(port, () => console.log(`renders API on :${port}`));
