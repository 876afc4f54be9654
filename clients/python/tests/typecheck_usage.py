"""Not a test module: what users write, checked by `mypy --strict` (see
pyproject.toml's `files`): the README's code and payloads of every kind the
library takes. A change that breaks these types fails CI."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

from spool_client import (
    AsyncQueue,
    BulkJob,
    EncodeJob,
    Event,
    Hls,
    Job,
    JobOptions,
    Queue,
    Rendition,
)


class Render(TypedDict):
    input: str
    heights: list[int]


@dataclass
class Thumbnail:
    input: str
    at_s: float


def readme(q: Queue) -> None:
    job_id = q.enqueue(
        EncodeJob(
            input="s3://media/uploads/talk.mov",
            output=Hls("s3://media/vod/talk"),
            renditions=[Rendition(height=1080), Rendition(height=480)],
        ),
        priority=5,
    )
    job = q.wait(job_id, timeout=600, on_progress=print)
    print(job.state, job.result)


def payloads(q: Queue, m: Mapping[str, Any]) -> list[str]:
    render: Render = {"input": "a.mov", "heights": [720]}
    ids = [
        q.enqueue(render),
        q.enqueue(Thumbnail("a.mov", 1.5)),
        q.enqueue(m),
        q.enqueue({"input": "b.mov"}),
        q.enqueue([1, 2, 3]),
        q.enqueue("text"),
        q.enqueue(b"\x00bytes"),
    ]
    ids += q.enqueue_many([render, BulkJob(Thumbnail("c.mov", 2.0), JobOptions(priority=3))])
    return ids


def reading(q: Queue) -> tuple[list[Job], list[Job | None], dict[str, Any] | None]:
    page = q.jobs("dead", limit=10)
    many = q.get_many([j.id for j in page])
    data = page[0].data if page else None
    return page, many, data if isinstance(data, dict) else None


def feed(q: Queue) -> list[Event]:
    return [ev for ev in q.events(timeout=1) if ev.event == "completed"]


async def asyncio_side(q: AsyncQueue) -> Job:
    async for ev in q.events(timeout=1):
        print(ev.job_id, ev.data)
    return await q.wait(await q.enqueue({"input": "d.mov"}), timeout=60)
