"""Across languages: jobs enqueued here run on the Rust workers, and jobs
read here agree field by field with `spoolctl inspect --json`."""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from conftest import Worker, binary, media_roots

from spool_client import EncodeJob, Flow, InvalidJob, JobOptions, JobState, Mp4, Queue, Rendition


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


def test_wait_follows_events_not_polls_and_keeps_a_deleted_jobs_result(redis_url: str) -> None:
    import redis as redis_py

    q = Queue(redis_url, "evq")
    raw = redis_py.Redis.from_url(redis_url)
    worker = Worker("sleep_worker", redis_url, "evq")
    try:
        # Warm: the worker is up before the clock starts.
        assert q.wait(q.enqueue({"sleep_ms": 1}), timeout=30).state is JobState.COMPLETED

        def reads() -> int:
            stats = raw.info("commandstats")
            return sum(
                int(stats.get(f"cmdstat_{c}", {}).get("calls", 0))
                for c in ("hget", "hmget", "xread")
            )

        # The worker's own reads for a 3 s job, with nobody waiting.
        quiet = q.enqueue({"sleep_ms": 3000})
        before = reads()
        time.sleep(3.6)
        assert q.get(quiet).state is JobState.COMPLETED
        worker_reads = reads() - before - 1

        seen: list[Any] = []
        job_id = q.enqueue({"sleep_ms": 3000}, retention=0)
        before = reads()
        job = q.wait(job_id, timeout=30, on_progress=seen.append)
        waiter_reads = reads() - before - worker_reads
        # Deleted as it completed, yet its result came with its event.
        assert job.state is JobState.COMPLETED and job.result == {"slept_ms": 3000}, job
        assert seen and all("percent" in p for p in seen), seen
        # Polling every 200 ms would have read the job at least 15 times; the
        # wait reads once up front, once per event batch and once per quiet
        # 2 s (the worker's heartbeats vary by one or two between the runs).
        assert waiter_reads <= 8 + len(seen) and waiter_reads < 15, (
            waiter_reads,
            len(seen),
            worker_reads,
        )

        # A dead job raises with its error, found through its event too.
        from spool_client import JobFailed

        bad = q.enqueue({"sleep_ms": 10, "fail_times": 1}, max_attempts=1, retention=0)
        try:
            q.wait(bad, timeout=30, raise_on_failure=True)
            raise AssertionError("a dead job must raise")
        except JobFailed as e:
            assert "on purpose" in str(e), e
    finally:
        worker.stop()


def test_events_follow_every_job_and_resume_after_the_last_seen(redis_url: str) -> None:
    import threading

    q = Queue(redis_url, "evall")
    got: list[Any] = []
    ready = threading.Event()

    def follow() -> None:
        for ev in q.events(timeout=5):
            ready.set()
            got.append(ev)
            if sum(1 for e in got if e.event == "completed") == 3:
                return

    # The subscription turns the queue's events on before any job runs.
    t = threading.Thread(target=follow)
    t.start()
    deadline = time.monotonic() + 10
    while not q._redis.exists(q.keys.listening):
        assert time.monotonic() < deadline, "the subscription never started"
        time.sleep(0.02)
    worker = Worker("sleep_worker", redis_url, "evall")
    try:
        ids = [q.enqueue({"sleep_ms": 50}) for _ in range(3)]
        t.join(timeout=60)
        assert not t.is_alive(), got
    finally:
        worker.stop()
    done = [e.job_id for e in got if e.event == "completed"]
    assert sorted(done) == sorted(ids), got
    assert all(e.data == {"slept_ms": 50} for e in got if e.event == "completed"), got
    # Resuming after the first event gives the rest, in order.
    rest = []
    for ev in q.events(last_id=got[0].id, timeout=1):
        rest.append(ev)
    assert [e.id for e in rest] == [e.id for e in got[1:]], (rest, got)


def test_a_flow_enqueued_here_runs_children_first_on_the_rust_worker(redis_url: str) -> None:
    q = Queue(redis_url, "xq")
    flow = Flow(
        {"sleep_ms": 10},
        JobOptions(job_id="join"),
        on_child_failure="continue",
        children=[
            Flow({"sleep_ms": 20}),
            Flow({"sleep_ms": 10, "fail_times": 1}, JobOptions(max_attempts=1)),
            Flow({"sleep_ms": 10}, children=[Flow({"sleep_ms": 5})]),
        ],
    )
    ids = q.enqueue_flow(flow)
    assert len(ids) == 5 and ids[0] == "join"
    assert q.get("join").state is JobState.WAITING
    assert q.stats().waiting == 2
    # Retrying with the same root id returns the same ids, enqueues nothing.
    assert q.enqueue_flow(flow) == ids
    worker = Worker("sleep_worker", redis_url, "xq", SPOOL_CONCURRENCY="4")
    try:
        job = q.wait("join", timeout=30)
    finally:
        worker.stop()
    assert job.state is JobState.COMPLETED, worker.output()
    # The parent read the results of the two children that completed.
    assert job.result == {"slept_ms": 10, "children_results": 2}
    kids = q.children("join")
    assert [k.id for k in kids] == [ids[1], ids[2], ids[3]]
    assert [k.completed for k in kids] == [True, False, True]
    assert "on purpose" in (kids[1].error or "")
    assert q.get(ids[4]).parent == ids[3] and q.get(ids[3]).child_count == 1
    # spoolctl reads the same tree.
    shown = json.loads(spoolctl(redis_url, "inspect", "join", "--json"))
    assert [c["id"] for c in shown["children"]] == [k.id for k in kids]


def test_bad_flows_are_refused_before_anything_is_sent(redis_url: str) -> None:
    q = Queue(redis_url, "xq")
    for bad, field in [
        (Flow({}, on_child_failure="maybe"), "on_child_failure"),
        (Flow({}, children=[{"not": "a flow"}]), "flow"),  # type: ignore[list-item]
        (Flow({}, children=[Flow({}, JobOptions(priority=5000))]), "priority"),
    ]:
        try:
            q.enqueue_flow(bad)
        except InvalidJob as e:
            assert field in str(e), e
        else:
            raise AssertionError(f"{bad} was accepted")
    q.enqueue_flow(Flow({}, JobOptions(job_id="taken")))
    try:
        q.enqueue_flow(
            Flow({}, JobOptions(job_id="root2"), children=[Flow({}, JobOptions(job_id="taken"))])
        )
    except InvalidJob as e:
        assert "must be new jobs" in str(e)
    else:
        raise AssertionError("a child with an existing id was accepted")
    assert q.stats().ready == 1 and q.stats().waiting == 0
