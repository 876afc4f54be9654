"""Enqueue throughput from Python: spool_client against Celery's
`apply_async` and RQ's `enqueue`, in the same run, on the same redis-server
(started here on a free port). Target: at least 3x Celery.

Run with scripts/bench-clients.sh (installs celery and rq into the venv).
Settings: SPOOL_BENCH_JOBS (single enqueues per side, default 5000),
SPOOL_BENCH_ROUNDS (rounds, sides interleaved; the best of each counts, 3).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import RedisProcess

from spool_client import JobOptions, Queue

N = int(os.environ.get("SPOOL_BENCH_JOBS", "5000"))
ROUNDS = int(os.environ.get("SPOOL_BENCH_ROUNDS", "3"))
BATCH = 1000
PAYLOAD = {"input": "s3://media/uploads/talk.mov", "output": "s3://media/vod/talk"}


def rate(n: int, f: object) -> float:
    t = time.perf_counter()
    f()  # type: ignore[operator]
    return n / (time.perf_counter() - t)


def best(sides: dict[str, tuple[int, object]]) -> dict[str, float]:
    """Each side's best rate over ROUNDS rounds, the sides interleaved."""
    out = dict.fromkeys(sides, 0.0)
    for _ in range(ROUNDS):
        for name, (n, f) in sides.items():
            out[name] = max(out[name], rate(n, f))
    return out


def main() -> None:
    import redis
    import rq
    from celery import Celery

    server = RedisProcess()
    try:
        url = server.url
        q = Queue(url, "bench")
        app = Celery("bench", broker=url, backend=None)

        @app.task(name="render")  # type: ignore[misc]
        def render(payload: dict[str, str]) -> None:
            return None

        rq_queue = rq.Queue("bench", connection=redis.Redis.from_url(url))
        r = best(
            {
                "spool_single": (N, lambda: [q.enqueue(PAYLOAD) for _ in range(N)]),
                "spool_batch": (
                    BATCH * 5,
                    lambda: [q.enqueue_many([PAYLOAD] * BATCH, JobOptions()) for _ in range(5)],
                ),
                "celery_single": (
                    N,
                    lambda: [render.apply_async(args=(PAYLOAD,)) for _ in range(N)],
                ),
                "rq_single": (
                    N,
                    lambda: [rq_queue.enqueue("builtins.print", PAYLOAD) for _ in range(N)],
                ),
                "rq_batch": (
                    BATCH * 5,
                    lambda: [
                        rq_queue.enqueue_many(
                            [
                                rq.Queue.prepare_data("builtins.print", (PAYLOAD,))
                                for _ in range(BATCH)
                            ]
                        )
                        for _ in range(5)
                    ],
                ),
            }
        )
        spool_single, spool_batch = r["spool_single"], r["spool_batch"]
        celery_single, rq_single, rq_batch = r["celery_single"], r["rq_single"], r["rq_batch"]
    finally:
        server.stop()
    print(
        f"python enqueue, {N} single and 5 x {BATCH} batched, same redis-server, best of {ROUNDS}:"
    )
    print(f"  spool_client   single {spool_single:9.0f} jobs/s   batch {spool_batch:9.0f} jobs/s")
    print(f"  celery         single {celery_single:9.0f} jobs/s   (apply_async, no batch API)")
    print(f"  rq             single {rq_single:9.0f} jobs/s   batch {rq_batch:9.0f} jobs/s")
    print(
        f"spool python_enqueue single/celery={spool_single / celery_single:.2f} "
        f"batch/celery={spool_batch / celery_single:.2f} single/rq={spool_single / rq_single:.2f} "
        f"batch/rq_batch={spool_batch / rq_batch:.2f}"
    )


if __name__ == "__main__":
    main()
