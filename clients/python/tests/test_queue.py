"""Every producer operation against a real redis-server."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
import redis
from conftest import ROOT

from spool_client import (
    InvalidJob,
    JobOptions,
    JobState,
    NotFound,
    PayloadTooLarge,
    Queue,
    RedisUnavailable,
    SpoolError,
)


def test_enqueue_get_and_the_options_as_stored(redis_url: str) -> None:
    q = Queue(redis_url, "renders")
    before = time.time()
    job_id = q.enqueue({"input": "a.mov"}, priority=7, max_attempts=3, lease=timedelta(minutes=2))
    job = q.get(job_id)
    assert job.id == job_id and job.queue == "renders"
    assert job.state is JobState.READY and not job.state.finished
    assert job.priority == 7 and job.max_attempts == 3 and job.attempts == 0
    assert json.loads(job.payload) == {"input": "a.mov"}
    assert job.enqueued_at is not None and before - 1 <= job.enqueued_at <= time.time() + 1
    raw = redis.Redis.from_url(redis_url)
    assert raw.hget(f"spool:{{renders}}:job:{job_id}", "lease_ms") == b"120000"
    assert job.timeout_ms is None and job.timeout_retry is None
    limited = q.get(q.enqueue("x", timeout=timedelta(hours=2), timeout_retry=True))
    assert limited.timeout_ms == 7_200_000 and limited.timeout_retry is True
    assert raw.sismember("spool:queues", "renders")
    with pytest.raises(NotFound, match="no job 'nope' in queue 'renders'"):
        q.get("nope")


def test_payloads_are_binary_safe(redis_url: str) -> None:
    q = Queue(redis_url, "bin")
    every_byte = bytes(range(256)) * 4
    job_id = q.enqueue(every_byte)
    raw = redis.Redis.from_url(redis_url)
    assert raw.hget(f"spool:{{bin}}:job:{job_id}", "payload") == every_byte


def test_priority_then_fifo_order_of_the_backlog(redis_url: str) -> None:
    q = Queue(redis_url, "order")
    low = q.enqueue_many(["l1", "l2"], JobOptions(priority=-5))
    high = q.enqueue("h", priority=100)
    mid = q.enqueue_many(["m1", "m2", "m3"])
    raw = redis.Redis.from_url(redis_url)
    ready = [x.decode() for x in raw.zrange("spool:{order}:ready", 0, -1)]
    assert ready == [high, *mid, *low]


def test_pause_holds_the_backlog_and_resume_restores_its_order(redis_url: str) -> None:
    q = Queue(redis_url, "paused")
    first = q.enqueue_many(["a", "b", "c"])
    urgent = q.enqueue("u", priority=9)
    s = q.pause()
    assert s.paused and s.parked == 4 and s.ready == 0 and s.paused_at_ms
    raw = redis.Redis.from_url(redis_url)
    # Both keys KEDA reads are empty while paused.
    assert raw.zcard("spool:{paused}:ready") == 0
    assert raw.scard("spool:{paused}:outstanding") == 0
    late = q.enqueue("late")
    assert q.get(late).state is JobState.READY
    st = q.stats()
    assert st.paused and st.parked == 5 and st.ready == 0
    assert q.pause().paused_at_ms == s.paused_at_ms
    r = q.resume()
    assert not r.paused and r.ready == 5 and r.parked == 0
    ready = [x.decode() for x in raw.zrange("spool:{paused}:ready", 0, -1)]
    assert ready == [urgent, *first, late]
    assert raw.scard("spool:{paused}:outstanding") == 5
    assert not q.stats().paused and not q.pause_state().paused


def test_delay_schedules_and_dedup_returns_the_live_job(redis_url: str) -> None:
    q = Queue(redis_url, "later")
    job_id = q.enqueue("x", delay=timedelta(seconds=30))
    job = q.get(job_id)
    assert job.state is JobState.SCHEDULED
    assert job.run_at is not None and 28 < job.run_at - time.time() < 32
    a = q.enqueue("first", dedup_key="render-42")
    b = q.enqueue("second", dedup_key="render-42")
    assert a == b and q.get(a).payload == "first"
    # An explicit id makes a retried enqueue a no-op.
    assert q.enqueue("p", job_id="my-id") == q.enqueue("other", job_id="my-id") == "my-id"
    assert q.stats().scheduled == 1 and q.stats().ready == 2


def test_enqueue_many_batches_and_keeps_order(redis_url: str) -> None:
    q = Queue(redis_url, "bulk")
    ids = q.enqueue_many([{"n": i} for i in range(2500)])
    assert len(ids) == len(set(ids)) == 2500
    assert json.loads(q.get(ids[1234]).payload) == {"n": 1234}
    s = q.stats()
    assert (s.ready, s.outstanding, s.queue) == (2500, 2500, "bulk")


def test_cancel_a_waiting_job(redis_url: str) -> None:
    q = Queue(redis_url, "c")
    job_id = q.enqueue("x")
    assert q.cancel(job_id) == "cancelled"
    assert q.get(job_id).state is JobState.CANCELLED
    assert q.cancel(job_id) == "finished:cancelled"
    with pytest.raises(NotFound):
        q.cancel("missing")
    assert q.stats().cancelled == 1


def test_bad_jobs_are_refused_before_anything_is_sent(redis_url: str) -> None:
    q = Queue(redis_url, "v", max_payload_bytes=1000)
    with pytest.raises(PayloadTooLarge, match="1001 bytes is over the limit of 1000"):
        q.enqueue(b"x" * 1001)
    cases = [
        ({"priority": 5000}, "priority"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"lease": 0.01}, "lease"),
        ({"delay": -1}, "delay"),
        ({"dedup_key": ""}, "dedup_key"),
        ({"job_id": "has space"}, "job_id"),
        ({"backoff": 10, "backoff_max": 5}, "backoff_max"),
        ({"retention": "1d"}, "retention"),
    ]
    for kwargs, field in cases:
        with pytest.raises(InvalidJob) as e:
            q.enqueue("x", **kwargs)  # type: ignore[arg-type]
        assert e.value.field == field, kwargs
    with pytest.raises(InvalidJob, match="queue"):
        Queue(redis_url, "bad{name}")
    assert redis.Redis.from_url(redis_url).dbsize() == 0


def test_redis_down_is_a_clear_error_within_3_s() -> None:
    from conftest import free_port

    q = Queue(f"redis://127.0.0.1:{free_port()}", "down")
    t = time.monotonic()
    with pytest.raises(RedisUnavailable, match=r"cannot reach Redis at 127\.0\.0\.1:\d+/0"):
        q.enqueue("x")
    assert time.monotonic() - t < 3


def test_the_password_never_appears_in_errors(redis_password: tuple[str, str]) -> None:
    url, password = redis_password
    ok = Queue(url, "pw")
    ok.enqueue("x")
    wrong = Queue(url.replace(password, password + "-wrong"), "pw")
    with pytest.raises(SpoolError) as e:
        wrong.enqueue("x")
    assert password not in str(e.value) and "127.0.0.1" in str(e.value)


def test_a_cluster_url_works(cluster_url: str) -> None:
    q = Queue(cluster_url, "clustered")
    ids = q.enqueue_many(["a", "b", "c"])
    assert q.get(ids[1]).payload == "b"
    assert q.stats().ready == 3
    assert q.cancel(ids[0]) == "cancelled"


def test_the_lua_scripts_are_the_crates_own() -> None:
    ours = ROOT / "clients" / "python" / "src" / "spool_client" / "scripts"
    for f in ours.iterdir():
        assert f.read_text() == (ROOT / "crates/queue/src/scripts" / f.name).read_text(), (
            f"{f.name} differs from crates/queue: run scripts/sync-client-scripts.sh"
        )


def test_a_sentinel_url_finds_the_master(sentinel_url: str) -> None:
    q = Queue(sentinel_url, "sentineled")
    ids = q.enqueue_many(["a", "b"])
    assert q.get(ids[1]).payload == "b" and q.stats().ready == 2
    assert "spoolmaster" in q.addr


def test_malformed_sentinel_urls_name_what_is_wrong() -> None:
    for url in [
        "redis+sentinel://127.0.0.1:26379",
        "redis+sentinel://127.0.0.1:notaport/m",
        "redis+sentinel://127.0.0.1:26379/m/notadb",
        "redis+sentinel:///m",
    ]:
        with pytest.raises(InvalidJob) as e:
            Queue(url, "x")
        assert e.value.field == "url" and "redis+sentinel://" in str(e.value), url


def test_payload_errors_are_spool_errors(redis_url: str) -> None:
    from dataclasses import dataclass

    q = Queue(redis_url, "payloads")
    with pytest.raises(InvalidJob, match="not JSON"):
        q.enqueue({"tags": {1, 2}})
    with pytest.raises(InvalidJob, match="not JSON"):
        q.enqueue({"x": float("nan")})
    with pytest.raises(InvalidJob) as e:
        q.enqueue("x", delay=float("inf"))
    assert e.value.field == "delay"

    @dataclass
    class Render:
        input: str
        height: int

    job = q.get(q.enqueue(Render("a.mov", 720)))
    assert json.loads(job.payload) == {"input": "a.mov", "height": 720}


def test_bulk_jobs_carry_their_own_options(redis_url: str) -> None:
    from spool_client import BulkJob

    q = Queue(redis_url, "bulk")
    ids = q.enqueue_many(
        [
            BulkJob("a", JobOptions(priority=9, dedup_key="k-a")),
            BulkJob("b", JobOptions(job_id="fixed-b")),
            BulkJob("c", JobOptions(delay=60)),
            "d",
        ],
        JobOptions(priority=-3),
    )
    assert len(set(ids)) == 4 and ids[1] == "fixed-b"
    jobs = [q.get(i) for i in ids]
    assert [j.priority for j in jobs] == [9, 0, 0, -3]
    assert jobs[2].state is JobState.SCHEDULED
    # A shared dedup key would make one job of three: refused, nothing sent.
    with pytest.raises(InvalidJob) as e:
        q.enqueue_many(["x", "y", "z"], JobOptions(dedup_key="same"))
    assert e.value.field == "dedup_key"
    assert q.stats().ready == 3 and q.stats().scheduled == 1


def test_wait_rides_out_a_redis_restart_and_can_raise_on_failure() -> None:
    import threading

    from conftest import RedisProcess

    from spool_client import JobFailed

    r = RedisProcess("--appendonly", "yes")
    try:
        q = Queue(r.url, "waits", timeout=1.0, connect_timeout=0.5)
        job_id = q.enqueue("x")
        raw = redis.Redis.from_url(r.url)
        # The job dies while Redis restarts under the waiter.

        def restart_and_kill_the_job() -> None:
            time.sleep(0.3)
            r.kill()
            time.sleep(0.3)
            r.restart()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    raw.hset(
                        f"spool:{{waits}}:job:{job_id}",
                        mapping={"state": "dead", "last_error": "boom"},
                    )
                    return
                except redis.exceptions.ConnectionError:
                    time.sleep(0.05)

        t = threading.Thread(target=restart_and_kill_the_job)
        t.start()
        with pytest.raises(JobFailed, match="boom"):
            q.wait(job_id, timeout=20, raise_on_failure=True)
        t.join()
        assert q.wait(job_id, timeout=5).state is JobState.DEAD
    finally:
        r.stop()


def test_an_existing_client_pages_of_jobs_and_get_many(redis_url: str) -> None:
    mine = redis.Redis.from_url(redis_url)
    q = Queue(client=mine, name="paged")
    ids = [q.enqueue({"n": i}, priority=i % 3) for i in range(7)]
    # Ready jobs in run order (priority, then FIFO), walked page by page.
    walked: list[str] = []
    offset = 0
    while True:
        page = q.jobs("ready", limit=3, offset=offset)
        walked += [j.id for j in page]
        if len(page) < 3:
            break
        offset += 3
    order = sorted(range(7), key=lambda i: (-(i % 3), i))
    assert walked == [ids[i] for i in order], walked
    got = q.get_many([ids[0], "nope", ids[6]])
    assert [j.id if j else None for j in got] == [ids[0], None, ids[6]]
    assert got[0] is not None and got[0].data == {"n": 0}
    with pytest.raises(InvalidJob, match="state"):
        q.jobs("sleeping")
    # close() leaves the caller's client open.
    q.close()
    assert mine.ping()
    with pytest.raises(InvalidJob, match="decode_responses"):
        Queue(client=redis.Redis.from_url(redis_url, decode_responses=True), name="x")
    with pytest.raises(InvalidJob, match="URL"):
        Queue(name="x")


def test_the_queue_is_listed_again_after_redis_forgets_it() -> None:
    from conftest import RedisProcess

    from spool_client import _core

    r = RedisProcess()  # no persistence: a restart forgets everything
    try:
        q = Queue(r.url, "relisted", timeout=1.0, connect_timeout=0.5)
        q.enqueue("a")
        raw = redis.Redis.from_url(r.url)
        assert raw.sismember("spool:queues", "relisted")
        r.kill()
        r.restart()
        # The producer lives on; within REGISTER_EVERY_S its enqueues list
        # the queue again (spoolctl stats, the console).
        deadline = time.monotonic() + _core.REGISTER_EVERY_S + 5
        while not raw.sismember("spool:queues", "relisted"):
            assert time.monotonic() < deadline, "the queue was never listed again"
            try:
                q.enqueue("b")
            except RedisUnavailable:
                pass
            time.sleep(0.5)
    finally:
        r.stop()


def test_a_worker_that_speaks_another_protocol_is_reported_once(redis_url: str) -> None:
    import warnings

    from spool_client import PROTOCOL, ProtocolMismatch

    raw = redis.Redis.from_url(redis_url)
    raw.zadd("spool:{proto}:workers", {"old-1": time.time() * 1000})
    raw.set("spool:{proto}:worker:old-1", json.dumps({"id": "old-1", "queue": "proto"}))
    q = Queue(redis_url, "proto")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = q.enqueue("a")
        q._registered = -float("inf")  # the next check, as 10 s later
        q.enqueue("b")
    # The check never gets in the way of what enqueue returns.
    assert q.get(first).data == "a"
    said = [str(w.message) for w in caught if issubclass(w.category, ProtocolMismatch)]
    assert len(said) == 1, said
    assert (
        f"protocol 1, spool-client speaks {PROTOCOL}" in said[0]
        and "upgrade the workers" in said[0]
    )
    # A worker of this protocol says nothing.
    raw.set("spool:{proto}:worker:old-1", json.dumps({"id": "old-1", "protocol": PROTOCOL}))
    q2 = Queue(redis_url, "proto")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        q2.enqueue("c")
    assert not [w for w in caught if issubclass(w.category, ProtocolMismatch)]
