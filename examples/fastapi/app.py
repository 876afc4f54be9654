"""A render API over spool: POST /renders enqueues an encode job, GET
/renders/{id}/events streams its progress as Server-Sent Events until it
ends. Run: uvicorn app:app (SPOOL_REDIS_URL, SPOOL_QUEUE from the env)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator

from fastapi import FastAPI, HTTPException
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from spool_client import AsyncQueue, EncodeJob, Hls, InvalidJob, Mp4, NotFound, Rendition

app = FastAPI(title="renders")
queue = AsyncQueue(
    os.environ.get("SPOOL_REDIS_URL", "redis://127.0.0.1:6379"),
    os.environ.get("SPOOL_QUEUE", "encode"),
)


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
        return (await queue.get(job_id)).to_dict()
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
            queue.wait(job_id, timeout=None, on_progress=progress.put_nowait, poll=0.25)
        )
        while not waiter.done() or not progress.empty():
            try:
                p = await asyncio.wait_for(progress.get(), timeout=0.5)
                yield f"event: progress\ndata: {json.dumps(p)}\n\n"
            except asyncio.TimeoutError:
                yield ": keep-alive\n\n"
        job = waiter.result()
        yield f"event: done\ndata: {json.dumps(job.to_dict())}\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")
