"""Across languages: jobs enqueued here run on the Rust workers, and jobs
read here agree field by field with `spoolctl inspect --json`."""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from conftest import Worker, binary, media_roots

from spool_client import EncodeJob, JobState, Mp4, Queue, Rendition


def spoolctl(url: str, *args: str) -> str:
    out = subprocess.run(
        [str(binary("spoolctl")), "--redis-url", url, "-q", "xq", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout


def test_python_enqueues_the_rust_worker_runs_python_waits(redis_url: str) -> None:
    q = Queue(redis_url, "xq")
    worker = Worker("sleep_worker", redis_url, "xq", SPOOL_CONCURRENCY="2")
    try:
        seen: list[Any] = []
        job_id = q.enqueue({"sleep_ms": 800, "log": ["reading", "half way"]})
        job = q.wait(job_id, timeout=30, on_progress=seen.append, poll=0.05)
        log = q.log(job_id)
        assert [(line.level, line.message) for line in log] == [
            ("info", "reading"),
            ("info", "half way"),
        ], log
        assert all(line.at_ms > 0 for line in log)
        assert job.state is JobState.COMPLETED, worker.output()
        assert job.result == {"slept_ms": 800} and job.attempts == 1
        assert seen and all("percent" in p for p in seen), seen
        assert job.finished_at is not None and job.started_at is not None

        # A job that fails its only attempt is dead; retry_dead brings it back.
        bad = q.enqueue({"sleep_ms": 10, "fail_times": 1}, max_attempts=1)
        assert q.wait(bad, timeout=30).state is JobState.DEAD
        dead = q.dead()
        assert [j.id for j in dead] == [bad] and "on purpose" in (dead[0].last_error or "")
    finally:
        worker.stop()
    assert q.retry_dead([bad]) == 1
    again = q.get(bad)
    assert again.state is JobState.READY and again.attempts == 0
    assert q.stats().dead == 0


def _as_inspect(job: dict[str, Any]) -> dict[str, Any]:
    """A Job's dict in spoolctl's shape (times in ms)."""
    out = dict(job)
    for k in ("enqueued_at", "run_at", "started_at", "finished_at"):
        v = out.pop(k)
        out[f"{k}_ms"] = None if v is None else round(v * 1000)
    return out


def test_rust_and_python_read_the_same_job_the_same_way(redis_url: str) -> None:
    q = Queue(redis_url, "xq")
    rust_id = spoolctl(redis_url, "enqueue", "--payload", '{"from":"rust"}', "--priority", "9")
    rust_id = rust_id.strip()
    py_id = q.enqueue({"from": "python"}, priority=-3, dedup_key="k1", delay=5)
    for job_id in (rust_id, py_id):
        theirs = json.loads(spoolctl(redis_url, "inspect", job_id, "--json"))
        ours = _as_inspect(q.get(job_id).to_dict())
        assert ours == theirs, f"{job_id}: python {ours} vs spoolctl {theirs}"


def test_an_encode_job_built_here_is_encoded_by_the_rust_worker(redis_url: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        media_roots(root, 320, 240, 1)
        worker = Worker(
            "spool-encoder-worker",
            redis_url,
            "enc",
            SPOOL_INPUT_ROOT=str(root / "in"),
            SPOOL_OUTPUT_ROOT=str(root / "out"),
        )
        try:
            q = Queue(redis_url, "enc")
            job = EncodeJob(
                input="clip.mp4",
                output=Mp4("small.mp4"),
                renditions=[Rendition(height=120, preset="fastest")],
                hardware="cpu",
            )
            done = q.wait(q.enqueue(job), timeout=120)
        finally:
            worker.stop()
        assert done.state is JobState.COMPLETED, (done.last_error, worker.output())
        out = done.result["outputs"][0]
        assert out["height"] == 120 and out["codec"] == "h264"
        probe = subprocess.run(
            [
                "ffprobe",
                "-v",
                "error",
                "-count_frames",
                "-select_streams",
                "v:0",
                "-show_entries",
                "stream=nb_read_frames,height",
                "-of",
                "json",
                out["path"],
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        stream = json.loads(probe.stdout)["streams"][0]
        assert stream["height"] == 120 and stream["nb_read_frames"] == "25"
