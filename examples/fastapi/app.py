"""A render API over spool: POST /renders enqueues an encode job, GET
/renders/{id}/events streams its progress as Server-Sent Events until it
ends (`done`, or `failed` with the error, or `cancelled`). Run: uvicorn
app:app (SPOOL_REDIS_URL, SPOOL_QUEUE from the env).

Errors, as examples/express answers them too: 422 for a bad request, 404 for
an unknown job, 503 while Redis is unreachable, each `{"detail": "..."}`; a
job is answered in one shape (`view`) by both examples."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from spool_client import (
    AsyncQueue,
    EncodeJob,
    Hls,
    InvalidJob,
    Job,
    Mp4,
    NotFound,
    Rendition,
    SpoolError,
)

app = FastAPI(title="renders")
queue = AsyncQueue(
    os.environ.get("SPOOL_REDIS_URL", "redis://127.0.0.1:6379"),
    os.environ.get("SPOOL_QUEUE", "encode"),
)


@app.exception_handler(SpoolError)
async def spool_error(_: Request, e: SpoolError) -> JSONResponse:
    """Redis unreachable (or refusing): 503, not a 500 with a traceback."""
    return JSONResponse({"detail": str(e)}, status_code=503)


def view(job: Job) -> dict[str, object]:
    """A job as both examples answer it (times in ms since the epoch)."""

    def ms(t: float | None) -> int | None:
        return None if t is None else round(t * 1000)

    return {
        "id": job.id,
        "state": job.state.value,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "progress": job.progress,
        "result": job.result,
        "error": job.last_error,
        "enqueued_at_ms": ms(job.enqueued_at),
        "started_at_ms": ms(job.started_at),
        "finished_at_ms": ms(job.finished_at),
        "failures": [
            {"attempt": f.attempt, "at_ms": f.at_ms, "error": f.error} for f in job.failures
        ],
    }


class RenderRequest(BaseModel):
    input: str = Field(examples=["s3://media/uploads/talk.mov"])
    output: str = Field(examples=["s3://media/vod/talk"])
    heights: list[int] = Field(default=[720], examples=[[1080, 480]])
    hls: bool = False
    priority: int = 0


@app.post("/renders", status_code=202)
async def create_render(req: RenderRequest) -> dict[str, str]:
    job = EncodeJob(
        input=req.input,
        output=Hls(req.output) if req.hls else Mp4(req.output),
        renditions=[Rendition(height=h) for h in req.heights],
    )
    try:
        job_id = await queue.enqueue(job, priority=req.priority)
    except InvalidJob as e:
        raise HTTPException(status_code=422, detail=str(e)) from None
    return {"id": job_id, "events": f"/renders/{job_id}/events"}


@app.get("/renders/{job_id}")
async def get_render(job_id: str) -> dict[str, object]:
    try:
        return view(await queue.get(job_id))
    except NotFound as e:
        raise HTTPException(status_code=404, detail=str(e)) from None


@app.get("/renders/{job_id}/events")
async def render_events(job_id: str) -> StreamingResponse:
    try:
        await queue.get(job_id)
    except NotFound as e:
        raise HTTPException(status_code=404, detail=str(e)) from None

    async def events() -> AsyncIterator[str]:
        progress: asyncio.Queue[object] = asyncio.Queue()
        waiter = asyncio.create_task(
            queue.wait(job_id, timeout=None, on_progress=progress.put_nowait)
        )
        while not waiter.done() or not progress.empty():
            try:
                p = await asyncio.wait_for(progress.get(), timeout=0.5)
                yield f"event: progress\ndata: {json.dumps(p)}\n\n"
            except asyncio.TimeoutError:
                yield ": keep-alive\n\n"
        try:
            job = waiter.result()
        except SpoolError as e:
            yield f"event: error\ndata: {json.dumps({'detail': str(e)})}\n\n"
            return
        # A distinct event for each end: a failure is not "done".
        kind = {"completed": "done", "dead": "failed"}.get(job.state.value, job.state.value)
        yield f"event: {kind}\ndata: {json.dumps(view(job))}\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")
