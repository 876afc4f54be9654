"""The blocking queue handle, over redis-py."""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, Callable

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.sentinel import Sentinel

from . import _core as c
from ._base import QueueBase
from .errors import (
    InvalidJob,
    JobFailed,
    NotFound,
    ProtocolMismatch,
    RedisUnavailable,
    WaitTimeout,
)


class Queue(QueueBase):
    """One spool queue, for producers: enqueue, follow, cancel, inspect.

    >>> q = Queue("redis://127.0.0.1:6379", "encode")   # doctest: +SKIP
    >>> job_id = q.enqueue({"input": "s3://media/a.mov", ...}, priority=5)  # doctest: +SKIP
    """

    def __init__(
        self,
        url: str | None = None,
        name: str = "encode",
        *,
        max_payload_bytes: int = c.DEFAULT_MAX_PAYLOAD,
        connect_timeout: float = 3.0,
        timeout: float = 10.0,
        client: redis.Redis | RedisCluster | None = None,
    ) -> None:
        """`url`: `redis://`, `rediss://`, `redis+sentinel://` or a
        cluster URL; or `client`: a redis-py client of your own (without
        `decode_responses`), which `close` leaves open."""
        super().__init__(
            url,
            name,
            client=client,
            max_payload_bytes=max_payload_bytes,
            connect_timeout=connect_timeout,
            timeout=timeout,
            single=redis.Redis,
            cluster=RedisCluster,
            node=ClusterNode,
            sentinel=Sentinel,
        )

    def close(self) -> None:
        """Closes the connections (not those of a client passed in)."""
        if self._owned:
            self._redis.close()

    def __enter__(self) -> Queue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def enqueue(
        self,
        payload: c.Payload,
        *,
        priority: int = 0,
        delay: c.Duration | None = None,
        dedup_key: str | None = None,
        max_attempts: int | None = None,
        lease: c.Duration | None = None,
        retention: c.Duration | None = None,
        backoff: c.Duration | None = None,
        backoff_max: c.Duration | None = None,
        job_id: str | None = None,
        timeout: c.Duration | None = None,
        timeout_retry: bool | None = None,
    ) -> str:
        """Enqueues one job and returns its id (the live job's id for a
        `dedup_key` already held, or for a `job_id` that exists: retrying is
        safe). Durations are seconds or `timedelta`s. `timeout` is the job's
        own time limit, `timeout_retry` whether a timed-out attempt is retried
        (None: the worker's settings)."""
        opts = c.JobOptions(
            priority,
            delay,
            dedup_key,
            max_attempts,
            lease,
            retention,
            backoff,
            backoff_max,
            job_id,
            timeout,
            timeout_retry,
        )
        return self.enqueue_many([payload], opts)[0]

    def enqueue_many(
        self,
        payloads: Sequence[c.Payload | c.BulkJob],
        options: c.JobOptions | None = None,
    ) -> list[str]:
        """Enqueues many jobs, a thousand per script call; returns their ids
        in input order. Every job is checked first. Payloads share
        `options`; a `BulkJob` has its own."""
        batches = self._entries(payloads, options)
        ids: list[str] = []
        with self._errors():
            self._register()
            for batch in batches:
                reply = self._enqueue(
                    keys=self.keys.script_keys, args=c.enqueue_args(self.keys, batch)
                )
                ids.extend(x.decode() if isinstance(x, bytes) else str(x) for x in reply)
        return ids

    def enqueue_flow(self, flow: c.Flow) -> list[str]:
        """Enqueues a flow in one script call, all of it or nothing, and
        returns its ids in document order, the parent's first. The parent
        waits (state `waiting`) until every child has ended, then runs and
        reads their results. A flow whose root exists already (its `job_id`,
        or a live `dedup_key`) is not enqueued again: its ids come back.
        Children must be new jobs."""
        args = c.flow_args(self.keys, flow, self.max_payload_bytes)
        with self._errors():
            self._register()
            reply = self._flow(keys=self.keys.script_keys, args=args)
        ids = [x.decode() if isinstance(x, bytes) else str(x) for x in reply]
        if len(ids) != args[2]:
            raise InvalidJob(
                "flow",
                f"a flow with root {ids[0] if ids else '?'} exists already with "
                f"{len(ids)} jobs, not {args[2]}: give a new flow a new root id",
            )
        return ids

    def children(self, job_id: str) -> list[c.Child]:
        """The children of flow parent `job_id`, in document order, with
        their results and errors (kept until the parent's own hash goes).
        Empty for a job without children."""
        k = self.keys
        with self._errors():
            p = self._redis.pipeline(transaction=False)
            p.lrange(k.prefix + "children:" + job_id, 0, -1)
            p.hgetall(k.prefix + "results:" + job_id)
            p.hgetall(k.prefix + "failures:" + job_id)
            ids, results, failures = p.execute()
            if not ids:
                return []
            p = self._redis.pipeline(transaction=False)
            for cid in ids:
                p.hget(k.job(c._text(cid) or ""), "state")
            states = p.execute(raise_on_error=False)
        return c.decode_children(ids, results, failures, states)

    def _register(self) -> None:
        """Adds the queue to the queue index, again every 10 s: a Redis
        restarted without persistence forgets it while this producer lives
        on; and warns once per protocol when live workers speak another."""
        if time.monotonic() - self._registered >= c.REGISTER_EVERY_S:
            self._redis.sadd(c.QUEUES_KEY, self.name)
            self._registered = time.monotonic()
            # Live workers that speak another protocol: said once each.
            workers = self._redis.zrevrange(self.keys.prefix + "workers", 0, 49)
            if workers:
                records = self._redis.mget(
                    [self.keys.prefix + "worker:" + (c._text(w) or "") for w in workers]
                )
                msg = c.protocol_mismatch(self.name, records, self._protocols_seen)
                if msg:
                    warnings.warn(msg, ProtocolMismatch, stacklevel=3)

    def get(self, job_id: str) -> c.Job:
        """The job's state, attempts, progress, result and times."""
        key = self.keys.job(job_id)
        with self._errors():
            h = self._redis.hgetall(key)
        if not h:
            raise NotFound(self.name, job_id)
        return c.decode_job(key, self.name, h)

    def log(self, job_id: str) -> list[c.LogLine]:
        """The job's log, oldest line first: what its handler logged and,
        for an encode, FFmpeg's warnings about its input (the latest 200)."""
        with self._errors():
            raw = self._redis.lrange(f"{self.keys.prefix}log:{job_id}", 0, -1)
        return c.decode_log(raw)

    def wait(
        self,
        job_id: str,
        timeout: float | None = 600,
        on_progress: Callable[[Any], None] | None = None,
        poll: float = 0.2,
        raise_on_failure: bool = False,
    ) -> c.Job:
        """Waits until the job is completed, dead or cancelled and returns it,
        calling `on_progress` with each new progress value. Raises
        `WaitTimeout` after `timeout` seconds (the job goes on), and with
        `raise_on_failure` `JobFailed` (with the job and its last error)
        for a dead job, as Celery's `get()` does.

        Events, not polling: the job is marked watched, and its events come
        over the queue's events stream (docs/protocol.md, "Events") as they
        happen. A job deleted as it completes (`retention=0`) still returns,
        with the result its event carried. Redis restarting or unreachable
        meanwhile is waited out until the deadline (retried every `poll`
        seconds), resuming the stream where it left off."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last_id: str | None = None
        state = "ready"
        while True:
            try:
                if last_id is None:
                    with self._errors():
                        state, last_id, progress = c.watch_reply(
                            self._watch(keys=self.keys.script_keys, args=[self.keys.prefix, job_id])
                        )
                    if state and progress is not None and on_progress is not None:
                        on_progress(progress)
                    if not state:
                        raise NotFound(self.name, job_id)
                    if c.JobState(state).finished:
                        return self._ended(job_id, None, raise_on_failure)
                block = c.block_ms(deadline, self._block_cap_ms)
                with self._errors():
                    reply = self._redis.xread({self.keys.events: last_id}, count=100, block=block)
                events = c.decode_events(reply)
                for ev in events:
                    last_id = ev.id
                    if ev.job_id != job_id:
                        continue
                    if ev.event == "progress" and on_progress is not None:
                        on_progress(ev.data)
                    elif ev.event in ("completed", "dead", "cancelled"):
                        return self._ended(job_id, ev, raise_on_failure)
                if not events:
                    # A quiet stream: ask the job itself, in case its event
                    # was lost (a Redis restart without persistence).
                    with self._errors():
                        raw = self._redis.hget(self.keys.job(job_id), "state")
                    if raw is None:
                        raise NotFound(self.name, job_id)
                    state = raw.decode()
                    if c.JobState(state).finished:
                        return self._ended(job_id, None, raise_on_failure)
            except RedisUnavailable:
                if deadline is not None and time.monotonic() >= deadline:
                    raise
                time.sleep(poll)
                continue
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(job_id, timeout or 0, state)

    def _ended(self, job_id: str, ev: c.Event | None, raise_on_failure: bool) -> c.Job:
        """The finished job: read whole, or from its end event when it is
        already deleted."""
        try:
            job = self.get(job_id)
        except NotFound:
            if ev is None:
                raise
            job = c.job_from_event(self.name, ev)
        if raise_on_failure and job.state is c.JobState.DEAD:
            raise JobFailed(job.id, job.last_error)
        return job

    def events(self, last_id: str = "$", timeout: float | None = None) -> Iterator[c.Event]:
        """Every job event of the queue as it happens (completed, failed,
        dead, cancelled, progress), after `last_id` (default: from now on;
        give an event's `id` to resume after it), like BullMQ's
        QueueEvents. While it runs the queue's scripts write each job's
        events to the stream; when nothing iterates for 30 s they stop.
        Ends after `timeout` seconds without an event (never by default).
        Redis restarting is waited out, resuming where it left off."""
        key = self.keys.events
        renewed = 0.0
        quiet_since = time.monotonic()
        while True:
            try:
                now = time.monotonic()
                if now - renewed > c.LISTENING_MS / 3000:
                    with self._errors():
                        self._redis.set(self.keys.listening, b"1", px=c.LISTENING_MS)
                        if last_id == "$":
                            last = self._redis.xrevrange(key, count=1)
                            last_id = c.decode_events([[key, last]])[0].id if last else "0-0"
                    renewed = now
                with self._errors():
                    reply = self._redis.xread({key: last_id}, count=500, block=self._block_cap_ms)
            except RedisUnavailable:
                time.sleep(0.2)
                continue
            events = c.decode_events(reply)
            for ev in events:
                last_id = ev.id
                yield ev
            if events:
                quiet_since = time.monotonic()
            elif timeout is not None and time.monotonic() - quiet_since >= timeout:
                return

    def cancel(self, job_id: str) -> str:
        """Cancels a waiting job at once (`"cancelled"`), or asks a running
        one to stop at its next heartbeat (`"requested"`); a finished job is
        left alone (`"finished:<state>"`)."""
        with self._errors():
            reply = c.cancel_outcome(
                self._cancel(keys=self.keys.script_keys, args=[self.keys.prefix, job_id])
            )
        if reply == "not_found":
            raise NotFound(self.name, job_id)
        return reply

    def stats(self) -> c.Stats:
        """Jobs by state."""
        k = self.keys
        with self._errors():
            p = self._redis.pipeline(transaction=False)
            for key in (k.ready, k.scheduled, k.active):
                p.zcard(key)
            p.scard(k.outstanding)
            for key in (k.dead, k.completed, k.cancelled, k.parked, k.waiting):
                p.zcard(key)
            p.exists(k.paused)
            v = p.execute()
        return c.stats_from(self.name, v)

    def pause(self) -> c.PauseState:
        """Pauses the queue: nothing more starts, running jobs finish,
        enqueues are still accepted, and both keys KEDA reads stop counting
        the backlog (held aside in order), so the fleet scales to zero.
        Idempotent."""
        return self._pause_until_settled("pause")

    def resume(self) -> c.PauseState:
        """Resumes a paused queue: its backlog comes back in its order."""
        return self._pause_until_settled("resume")

    def pause_state(self) -> c.PauseState:
        """Whether the queue is paused, and how much it holds."""
        return self._pause_call("status")

    def _pause_until_settled(self, action: str) -> c.PauseState:
        while True:
            s = self._pause_call(action)
            if s.settled(action):
                return s

    def _pause_call(self, action: str) -> c.PauseState:
        with self._errors():
            reply = self._pause(
                keys=self.keys.script_keys, args=[self.keys.prefix, action, c.PAUSE_CHUNK]
            )
        return c.pause_state(reply)

    def dead(self, limit: int = 100, offset: int = 0) -> list[c.Job]:
        """Dead jobs, newest first."""
        return self.jobs(c.JobState.DEAD, limit=limit, offset=offset)

    def jobs(self, state: c.JobState | str, limit: int = 50, offset: int = 0) -> list[c.Job]:
        """A page of the jobs in `state`, as the console and `spoolctl jobs`
        list them: `ready` in the order they will run (a paused queue's held
        jobs after the rest), every other state newest first. Walk a state
        with `offset` += `limit` until a page comes back short."""
        try:
            st = c.JobState(state)
        except ValueError:
            raise InvalidJob(
                "state", f"{state!r}: one of {', '.join(s.value for s in c.JobState)}"
            ) from None
        if limit <= 0:
            return []
        if limit > 1000:
            raise InvalidJob("limit", f"{limit}: pages are at most 1000 jobs")
        key, reverse = c.state_index(self.keys, st)
        end = offset + limit - 1
        with self._errors():
            if reverse:
                ids = self._redis.zrevrange(key, offset, end)
            else:
                ids = self._redis.zrange(key, offset, end)
            if st is c.JobState.READY and len(ids) < limit:
                in_ready = self._redis.zcard(key)
                start = max(0, offset + len(ids) - in_ready)
                ids += self._redis.zrange(self.keys.parked, start, start + limit - len(ids) - 1)
        return [j for j in self.get_many([i.decode() for i in ids]) if j is not None]

    def get_many(self, job_ids: Sequence[str]) -> list[c.Job | None]:
        """Several jobs in one round trip, in the order asked; `None` for an
        id with no job."""
        if not job_ids:
            return []
        with self._errors():
            p = self._redis.pipeline(transaction=False)
            for i in job_ids:
                p.hgetall(self.keys.job(i))
            hashes = p.execute()
        return [
            c.decode_job(self.keys.job(i), self.name, h) if h else None
            for i, h in zip(job_ids, hashes)
        ]

    def retry_dead(self, ids: list[str] | None = None, limit: int = 1000) -> int:
        """Moves dead jobs (these, or up to `limit` of the oldest) back to
        the backlog with fresh attempts; returns how many."""
        with self._errors():
            n = self._dead(
                keys=self.keys.script_keys, args=c.dead_args(self.keys, "retry", ids, limit)
            )
        return int(n)

    def purge_dead(self, ids: list[str] | None = None, limit: int = 1000) -> int:
        """Deletes dead jobs; returns how many."""
        with self._errors():
            n = self._dead(
                keys=self.keys.script_keys, args=c.dead_args(self.keys, "purge", ids, limit)
            )
        return int(n)
