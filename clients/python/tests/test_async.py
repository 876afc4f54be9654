"""The asyncio flavour: the same names, the same behaviour."""

from __future__ import annotations

import asyncio

import pytest

from spool_client import AsyncQueue, JobState, NotFound, RedisUnavailable


def test_async_queue_round_trip(redis_url: str) -> None:
    async def main() -> None:
        async with AsyncQueue(redis_url, "aio") as q:
            job_id = await q.enqueue({"n": 1}, priority=3, delay=60)
            job = await q.get(job_id)
            assert job.state is JobState.SCHEDULED and job.priority == 3
            ids = await q.enqueue_many(["a", "b"])
            assert (await q.stats()).ready == 2
            assert await q.cancel(ids[0]) == "cancelled"
            assert await q.dead() == []
            assert await q.retry_dead() == 0
            assert (await q.pause()).parked == 1 and (await q.stats()).paused
            assert (await q.resume()).ready == 1
            with pytest.raises(NotFound):
                await q.get("nope")

    asyncio.run(main())


def test_async_redis_down(redis_url: str) -> None:
    from conftest import free_port

    async def main() -> None:
        q = AsyncQueue(f"redis://127.0.0.1:{free_port()}", "down")
        with pytest.raises(RedisUnavailable):
            await q.enqueue("x")

    asyncio.run(main())
