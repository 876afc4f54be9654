"""What the sync and asyncio queues share: names, checks, script arguments
and the decoding of replies. Mirrors crates/queue (keys.rs, job.rs)."""

from __future__ import annotations

import dataclasses
import enum
import json
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from importlib import resources
from typing import Any, ClassVar, Protocol, Union
from urllib.parse import unquote, urlsplit, urlunsplit

from .errors import CorruptJob, InvalidJob, PayloadTooLarge

Duration = Union[float, int, timedelta]


class SupportsToJson(Protocol):
    """A payload that writes itself as JSON (`EncodeJob` does)."""

    def to_json(self) -> str: ...


class DataclassInstance(Protocol):
    """Any dataclass instance (sent as its fields)."""

    __dataclass_fields__: ClassVar[dict[str, Any]]


# What `enqueue` takes: JSON values (dicts, TypedDicts, lists), a dataclass
# (sent as its fields), text or bytes sent as they are, or anything with
# `to_json()` (an `EncodeJob`).
Payload = Union[Mapping[str, Any], Sequence[Any], str, bytes, SupportsToJson, DataclassInstance]

QUEUES_KEY = "spool:queues"
DEFAULT_MAX_PAYLOAD = 1024 * 1024
MAX_BATCH = 1000
MAX_BATCH_BYTES = 4 * 1024 * 1024
#: Jobs one flow holds at most (one script call).
MAX_FLOW_JOBS = 10_000
PRIORITY_MAX = 1000
MAX_ATTEMPTS = 10_000
MAX_ID = 256
DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_BACKOFF_MS = 1_000
DEFAULT_BACKOFF_MAX_MS = 300_000
DEFAULT_LEASE_MS = 30_000
DEFAULT_RETENTION_S = 86_400
MIN_LEASE_MS = 100
MAX_LEASE_MS = 86_400_000
MAX_BACKOFF_MS = 86_400_000
MAX_DELAY_MS = 366 * 86_400_000
MAX_RETENTION_S = 366 * 86_400
MAX_TIMEOUT_MS = 31 * 86_400_000
SCRIPT_KEYS = (
    "ready",
    "scheduled",
    "active",
    "outstanding",
    "dead",
    "completed",
    "cancelled",
    "seq",
    "wake",
)
_QUEUE_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")


#: What each script is made of after lib.lua, as crates/queue composes them
#: (its `SCRIPT_PARTS`; a test holds the two equal).
SCRIPT_PARTS: dict[str, list[str]] = {
    "enqueue.lua": ["lib_enqueue.lua"],
    "cancel.lua": ["lib_flows.lua"],
    "dead.lua": ["lib_flows.lua"],
    "pause.lua": [],
    "watch.lua": [],
    "flow.lua": ["lib_flows.lua", "lib_enqueue.lua"],
}


def script(name: str) -> str:
    """lib.lua, the script's parts, then `name`, as crates/queue loads them."""
    files = resources.files("spool_client") / "scripts"
    parts = ["lib.lua", *SCRIPT_PARTS[name], name]
    return "".join((files / p).read_text() for p in parts)


def mask_password(url: str) -> str:
    """The URL with its password replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None and "@" not in parts.netloc:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def display_addr(url: str) -> str:
    """host:port/db of a URL, for messages (never the password)."""
    if is_sentinel(url):
        try:
            su = sentinel_url(url)
        except InvalidJob:
            return "(malformed Sentinel URL)"
        hosts = ",".join(f"{h}:{p}" for h, p in su.sentinels)
        return f"sentinel {hosts} master {su.master}/{su.db}"
    try:
        parts = urlsplit(url.split(",")[0])
        db = parts.path.lstrip("/") or "0"
        return f"{parts.hostname}:{parts.port or 6379}/{db}"
    except ValueError:
        return "(malformed URL)"


def is_sentinel(url: str) -> bool:
    return url.startswith(("redis+sentinel://", "rediss+sentinel://"))


def is_cluster(url: str) -> bool:
    return not is_sentinel(url) and (
        url.startswith(("redis+cluster://", "rediss+cluster://")) or "," in url
    )


@dataclass(frozen=True)
class SentinelUrl:
    """`redis+sentinel://[user:password@]host1[:port],host2[:port]/<master>[/db]`
    (`rediss+sentinel://` for TLS), as the Rust client reads it."""

    sentinels: list[tuple[str, int]]
    master: str
    db: int
    username: str | None
    password: str | None
    tls: bool


def sentinel_url(url: str) -> SentinelUrl:
    """Parses a Sentinel URL; `InvalidJob("url", ...)` says what is wrong."""
    expected = (
        "expected redis+sentinel://[user:password@]host1:26379,host2:26379/<master-name>[/db]"
    )
    tls = url.startswith("rediss+")
    rest = url.split("://", 1)[1]
    auth = None
    if "@" in rest.split("/", 1)[0]:
        auth, rest = rest.split("@", 1)
    hosts, _, path = rest.partition("/")
    parts = [p for p in path.split("/") if p]
    if not hosts or not parts or len(parts) > 2:
        raise InvalidJob("url", f"{mask_password(url)}: no master name ({expected})")
    sentinels: list[tuple[str, int]] = []
    for h in hosts.split(","):
        host, _, port = h.strip().rpartition(":") if ":" in h else (h.strip(), "", "")
        if not host:
            raise InvalidJob("url", f"{mask_password(url)}: an empty sentinel address ({expected})")
        try:
            sentinels.append((host.strip("[]"), int(port) if port else 26379))
        except ValueError:
            raise InvalidJob(
                "url", f"{mask_password(url)}: bad port {port!r} ({expected})"
            ) from None
    try:
        db = int(parts[1]) if len(parts) == 2 else 0
    except ValueError:
        raise InvalidJob(
            "url", f"{mask_password(url)}: bad database {parts[1]!r} ({expected})"
        ) from None
    username = password = None
    if auth is not None:
        user, sep, pw = auth.partition(":")
        username = unquote(user) or None
        password = unquote(pw) if sep else None
    return SentinelUrl(sentinels, unquote(parts[0]), db, username, password, tls)


def cluster_nodes(url: str) -> tuple[list[tuple[str, int]], str, str | None]:
    """Seed nodes, scheme and password of a cluster URL."""
    scheme = "rediss" if url.startswith("rediss") else "redis"
    rest = url.split("://", 1)[1] if "://" in url else url
    nodes: list[tuple[str, int]] = []
    password: str | None = None
    for part in rest.split(","):
        part = part.strip()
        if "://" in part:
            part = part.split("://", 1)[1]
        if "@" in part:
            auth, part = part.rsplit("@", 1)
            password = auth.split(":", 1)[-1] if ":" in auth else auth
        host, _, port = part.partition("/")[0].partition(":")
        nodes.append((host, int(port or 6379)))
    return nodes, scheme, password


def check_queue_name(name: str) -> None:
    if not _QUEUE_NAME.match(name) or "{" in name or "}" in name:
        raise InvalidJob(
            "queue",
            f"{name!r}: use 1 to 100 ASCII letters, digits and - _ . :",
        )


def to_ms(field: str, v: Duration | None, lo: int, hi: int) -> int | None:
    """A duration in seconds (or a timedelta) as milliseconds, range-checked."""
    if v is None:
        return None
    if isinstance(v, timedelta):
        secs = v.total_seconds()
    elif isinstance(v, (int, float)) and not isinstance(v, bool):
        secs = float(v)
    else:
        raise InvalidJob(field, f"{v!r} is not a number of seconds or a timedelta")
    if secs != secs or secs < 0 or secs == float("inf"):  # NaN, negative, infinite
        raise InvalidJob(field, f"{v!r} must be a finite, non-negative duration")
    ms = round(secs * 1000)
    if ms < lo or ms > hi:
        raise InvalidJob(field, f"{secs:g} s is outside {lo / 1000:g}..={hi / 1000:g} s")
    return ms


def encode_payload(payload: Payload, limit: int) -> bytes:
    if isinstance(payload, (bytes, bytearray)):
        data = bytes(payload)
    elif isinstance(payload, str):
        data = payload.encode()
    elif hasattr(payload, "to_json"):
        data = payload.to_json().encode()
    elif dataclasses.is_dataclass(payload) and not isinstance(payload, type):
        data = _json(dataclasses.asdict(payload))
    elif isinstance(payload, (Mapping, list, tuple)):
        data = _json(dict(payload) if isinstance(payload, Mapping) else list(payload))
    else:
        raise InvalidJob(
            "payload",
            f"a {type(payload).__name__} is not a dict, list, dataclass, str or bytes",
        )
    if len(data) > limit:
        raise PayloadTooLarge(len(data), limit)
    return data


@dataclass(frozen=True)
class BulkJob:
    """One job of `enqueue_many` with options of its own (BullMQ's
    `addBulk` entries): its own priority, delay, dedup key or id."""

    payload: Payload
    options: JobOptions | None = None


def _json(value: Any) -> bytes:
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as e:
        raise InvalidJob("payload", f"is not JSON: {e}") from None


@dataclass(frozen=True)
class JobOptions:
    """How one job is scheduled and retried (see `Queue.enqueue`)."""

    priority: int = 0
    delay: Duration | None = None
    dedup_key: str | None = None
    max_attempts: int | None = None
    lease: Duration | None = None
    retention: Duration | None = None
    backoff: Duration | None = None
    backoff_max: Duration | None = None
    job_id: str | None = None
    # The job's own time limit: past it the worker cancels the handling and
    # fails the job "timed out after …" (None: the worker's limit).
    timeout: Duration | None = None
    # Retry a timed-out attempt (True) or not (False); None: the worker's
    # SPOOL_JOB_TIMEOUT_RETRY.
    timeout_retry: bool | None = None

    def args(self) -> list[Any]:
        """The twelve script arguments of one entry (the payload's slot empty)."""
        p = self.priority
        if isinstance(p, bool) or not isinstance(p, int) or not -PRIORITY_MAX <= p <= PRIORITY_MAX:
            raise InvalidJob("priority", f"{p!r} must be an integer within -1000..=1000")
        attempts = DEFAULT_MAX_ATTEMPTS if self.max_attempts is None else self.max_attempts
        if (
            isinstance(attempts, bool)
            or not isinstance(attempts, int)
            or not (1 <= attempts <= MAX_ATTEMPTS)
        ):
            raise InvalidJob("max_attempts", f"{attempts!r} must be within 1..={MAX_ATTEMPTS}")
        delay = to_ms("delay", self.delay, 0, MAX_DELAY_MS) or 0
        lease = to_ms("lease", self.lease, MIN_LEASE_MS, MAX_LEASE_MS) or DEFAULT_LEASE_MS
        backoff = to_ms("backoff", self.backoff, 0, MAX_BACKOFF_MS)
        backoff = DEFAULT_BACKOFF_MS if backoff is None else backoff
        backoff_max = to_ms("backoff_max", self.backoff_max, 0, MAX_BACKOFF_MS)
        backoff_max = DEFAULT_BACKOFF_MAX_MS if backoff_max is None else backoff_max
        if backoff_max < backoff:
            raise InvalidJob("backoff_max", "must not be shorter than backoff")
        retention = to_ms("retention", self.retention, 0, MAX_RETENTION_S * 1000)
        retention_s = DEFAULT_RETENTION_S if retention is None else retention // 1000
        dedup = self.dedup_key
        if dedup is not None and not (1 <= len(dedup.encode()) <= MAX_ID):
            raise InvalidJob("dedup_key", f"must be 1 to {MAX_ID} bytes")
        job_id = self.job_id
        if job_id is not None and (
            not 1 <= len(job_id.encode()) <= MAX_ID or any(c.isspace() for c in job_id)
        ):
            raise InvalidJob("job_id", f"must be 1 to {MAX_ID} bytes without whitespace")
        timeout = to_ms("timeout", self.timeout, 1, MAX_TIMEOUT_MS) or 0
        if self.timeout_retry is not None and not isinstance(self.timeout_retry, bool):
            raise InvalidJob("timeout_retry", f"{self.timeout_retry!r} must be True, False or None")
        retry = "" if self.timeout_retry is None else ("1" if self.timeout_retry else "0")
        return [
            job_id or uuid.uuid4().hex,
            None,  # the payload's slot
            p,
            delay,
            attempts,
            backoff,
            backoff_max,
            lease,
            retention_s,
            dedup or "",
            timeout,
            retry,
        ]


class JobState(str, enum.Enum):
    """Where a job is in its life."""

    READY = "ready"
    SCHEDULED = "scheduled"
    ACTIVE = "active"
    COMPLETED = "completed"
    DEAD = "dead"
    CANCELLED = "cancelled"
    #: A flow's parent waiting for its children (not reservable).
    WAITING = "waiting"

    @property
    def finished(self) -> bool:
        return self in (JobState.COMPLETED, JobState.DEAD, JobState.CANCELLED)


@dataclass(frozen=True)
class Failure:
    """One failed attempt of a job (`Job.failures`), times in ms since the epoch."""

    attempt: int
    started_at_ms: int
    at_ms: int
    error: str


def decode_failures(raw: Any) -> list[Failure]:
    """The job hash's `failures` field; a damaged one reads as none."""
    try:
        items = json.loads(raw) if raw else []
        return [
            Failure(int(x["attempt"]), int(x["started_at_ms"]), int(x["at_ms"]), str(x["error"]))
            for x in items
        ]
    except (ValueError, TypeError, KeyError):
        return []


@dataclass(frozen=True)
class Job:
    """A job as `spoolctl inspect --json` shows it."""

    id: str
    queue: str
    state: JobState
    attempts: int
    max_attempts: int
    priority: int
    payload: str
    progress: Any
    result: Any
    last_error: str | None
    enqueued_at: float | None
    run_at: float | None
    started_at: float | None
    finished_at: float | None
    cancel_requested: bool
    dedup_key: str | None
    timeout_ms: int | None = None
    timeout_retry: bool | None = None
    #: Every failed attempt, oldest first (the last 20).
    failures: list[Failure] = dataclasses.field(default_factory=list)
    #: The flow parent this job is a child of.
    parent: str | None = None
    #: The parent's queue, when it is not this job's.
    parent_queue: str | None = None
    #: How many children it has, when it is a flow's parent.
    child_count: int | None = None
    #: A parent's policy for a child that dies or is cancelled.
    on_child_failure: str | None = None
    #: The child whose failure ended this parent (policy "fail").
    failed_by: str | None = None

    @property
    def data(self) -> Any:
        """The payload decoded: the JSON value it holds, else its text
        (`payload` is the text as stored)."""
        return json_or_text(self.payload) if self.payload else None

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["state"] = self.state.value
        d["failures"] = [dataclasses.asdict(f) for f in self.failures]
        return d


@dataclass(frozen=True)
class Stats:
    """How many jobs a queue holds, by state (what `spoolctl stats` shows)."""

    queue: str
    ready: int
    scheduled: int
    active: int
    outstanding: int
    dead: int
    completed: int
    cancelled: int
    paused: bool = False
    parked: int = 0
    #: Flow parents waiting for their children (not outstanding work).
    waiting: int = 0


def stats_from(name: str, counts: list[Any]) -> Stats:
    """A Stats from the replies of the pipeline the queues send: ZCARD of
    ready, scheduled, active; SCARD outstanding; ZCARD of dead, completed,
    cancelled, parked, waiting; EXISTS paused."""
    ready, scheduled, active, outstanding, dead, completed, cancelled, parked, waiting, paused = (
        int(x) for x in counts
    )
    return Stats(
        name,
        ready,
        scheduled,
        active,
        outstanding,
        dead,
        completed,
        cancelled,
        paused=paused == 1,
        parked=parked,
        waiting=waiting,
    )


# Backlog jobs one pause or resume script call moves (as crates/queue).
PAUSE_CHUNK = 10_000


@dataclass(frozen=True)
class PauseState:
    """Where pause() or resume() left a queue."""

    paused: bool
    paused_at_ms: int | None
    parked: int
    ready: int
    active: int

    def settled(self, action: str) -> bool:
        """Whether `action` has nothing left to move (or another caller
        reversed it meanwhile)."""
        if action == "pause":
            return not self.paused or self.ready == 0
        return self.paused or self.parked == 0


def pause_state(reply: list[Any]) -> PauseState:
    paused, parked, ready, active, at = (int(x) for x in reply)
    return PauseState(paused == 1, at or None, parked, ready, active)


@dataclass(frozen=True)
class LogLine:
    """One line of a job's log: its handler's, or FFmpeg's about its input."""

    at_ms: int
    level: str  # "info", "warning" or "error"
    message: str


def decode_log(raw: list[Any]) -> list[LogLine]:
    """The lines of `spool:{q}:log:<id>` (JSON objects; anything else is
    kept as an info line of its text)."""
    out = []
    for r in raw:
        t = _text(r) or ""
        try:
            d = json.loads(t)
            out.append(LogLine(int(d["at_ms"]), str(d["level"]), str(d["message"])))
        except (ValueError, KeyError, TypeError):
            out.append(LogLine(0, "info", t))
    return out


def _text(v: Any) -> str | None:
    if v is None:
        return None
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def json_or_text(v: Any) -> Any:
    t = _text(v)
    if not t:
        return None
    try:
        return json.loads(t)
    except ValueError:
        return t


def decode_job(key: str, queue: str, h: dict[Any, Any]) -> Job:
    """A job hash (HGETALL) as a Job; mirrors JobInfo::from_hash."""
    f = {_text(k): v for k, v in h.items()}

    def num(name: str) -> float | None:
        t = _text(f.get(name))
        if not t:
            return None
        try:
            return float(t)
        except ValueError as e:
            raise CorruptJob(f"{key}: field {name} is {t!r}, not a number") from e

    def secs(name: str) -> float | None:
        v = num(name)
        return None if v is None else v / 1000.0

    state = _text(f.get("state"))
    try:
        st = JobState(state)
    except ValueError as e:
        raise CorruptJob(f"{key}: state {state!r} is not a job state") from e
    return Job(
        id=_text(f.get("id")) or key.rsplit(":", 1)[-1],
        queue=_text(f.get("queue")) or queue,
        state=st,
        attempts=int(num("attempts") or 0),
        max_attempts=int(num("max_attempts") or 1),
        priority=int(num("priority") or 0),
        payload=_text(f.get("payload")) or "",
        progress=json_or_text(f.get("progress")),
        result=json_or_text(f.get("result")),
        last_error=_text(f.get("last_error")) or None,
        enqueued_at=secs("enqueued_at"),
        run_at=secs("run_at"),
        started_at=secs("started_at"),
        finished_at=secs("finished_at"),
        cancel_requested=_text(f.get("cancel")) == "1",
        dedup_key=_text(f.get("dedup")) or None,
        timeout_ms=int(num("timeout_ms") or 0) or None,
        timeout_retry={"1": True, "0": False}.get(_text(f.get("timeout_retry")) or ""),
        failures=decode_failures(f.get("failures")),
        parent=_text(f.get("parent")) or None,
        parent_queue=_text(f.get("parent_queue")) or None,
        child_count=None if num("kids") is None else int(num("kids") or 0),
        on_child_failure={"fail": "fail", "continue": "continue"}.get(
            _text(f.get("on_child_failure")) or ""
        ),
        failed_by=_text(f.get("failed_by")) or None,
    )


class Keys:
    """The Redis keys of one queue (docs/protocol.md)."""

    def __init__(self, name: str) -> None:
        check_queue_name(name)
        self.name = name
        self.prefix = f"spool:{{{name}}}:"
        self.script_keys = [self.prefix + k for k in SCRIPT_KEYS]

    def job(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    def __getattr__(self, k: str) -> str:
        if k in SCRIPT_KEYS or k in ("paused", "parked", "events", "listening", "waiting"):
            return self.prefix + k
        raise AttributeError(k)


def state_index(keys: Keys, state: JobState) -> tuple[str, bool]:
    """The index a state's jobs are listed from, and whether newest first."""
    name = {
        JobState.READY: "ready",
        JobState.SCHEDULED: "scheduled",
        JobState.ACTIVE: "active",
        JobState.DEAD: "dead",
        JobState.COMPLETED: "completed",
        JobState.CANCELLED: "cancelled",
        JobState.WAITING: "waiting",
    }[state]
    return keys.prefix + name, state is not JobState.READY


def chunks(entries: list[tuple[bytes, list[Any]]]) -> list[list[tuple[bytes, list[Any]]]]:
    """Batches of at most 1,000 jobs and 4 MiB, as crates/queue sends them."""
    out: list[list[tuple[bytes, list[Any]]]] = []
    cur: list[tuple[bytes, list[Any]]] = []
    size = 0
    for e in entries:
        if cur and (len(cur) >= MAX_BATCH or size + len(e[0]) > MAX_BATCH_BYTES):
            out.append(cur)
            cur, size = [], 0
        cur.append(e)
        size += len(e[0])
    if cur:
        out.append(cur)
    return out


def enqueue_args(keys: Keys, batch: list[tuple[bytes, list[Any]]]) -> list[Any]:
    args: list[Any] = [keys.prefix, keys.name, len(batch)]
    for payload, a in batch:
        a = list(a)
        a[1] = payload
        args.extend(a)
    return args


#: What a child that dies or is cancelled does to its waiting parent.
CHILD_FAILURE_POLICIES = ("fail", "continue")
#: Deepest nesting a flow may have (crates/queue's MAX_FLOW_DEPTH).
MAX_FLOW_DEPTH = 32


@dataclass(frozen=True)
class Flow:
    """A flow for `enqueue_flow`: a job and the children it waits for,
    each a `Flow` itself (BullMQ's FlowProducer tree, Celery's chord). The
    parent waits (state `waiting`) until every child has ended, then runs
    and reads their results. `on_child_failure`: "fail" (a child that dies
    or is cancelled kills the parent and cancels its other children) or
    "continue" (the parent runs anyway and sees the failures). Every job of
    a flow lives in the queue it is enqueued on."""

    payload: Payload
    options: JobOptions | None = None
    children: Sequence[Flow] = ()
    on_child_failure: str = "fail"


def flow_args(keys: Keys, flow: Flow, limit: int) -> list[Any]:
    """flow.lua's arguments: every node checked, in document order (depth
    first) with its parent's position (0 for the root)."""
    nodes: list[tuple[Flow, int]] = []

    def walk(node: Flow, parent: int, depth: int) -> None:
        if not isinstance(node, Flow):
            raise InvalidJob("flow", f"children must be Flows, not {type(node).__name__}")
        if depth > MAX_FLOW_DEPTH:
            raise InvalidJob("flow", f"flows nest at most {MAX_FLOW_DEPTH} levels")
        if node.on_child_failure not in CHILD_FAILURE_POLICIES:
            raise InvalidJob(
                "on_child_failure", f"{node.on_child_failure!r} must be 'fail' or 'continue'"
            )
        nodes.append((node, parent))
        me = len(nodes)
        for child in node.children:
            walk(child, me, depth + 1)

    walk(flow, 0, 0)
    if len(nodes) > MAX_FLOW_JOBS:
        raise InvalidJob("flow", f"{len(nodes)} jobs; one flow holds at most {MAX_FLOW_JOBS}")
    args: list[Any] = [keys.prefix, keys.name, len(nodes)]
    for node, parent in nodes:
        a = (node.options or JobOptions()).args()
        a[1] = encode_payload(node.payload, limit)
        args.extend(a)
        args.extend([parent, node.on_child_failure])
    return args


def decode_children(
    ids: list[Any], results: dict[Any, Any], failures: dict[Any, Any], states: list[Any]
) -> list[Child]:
    """`children`'s answer from the parent's flow keys and each child's state."""
    r = {_text(k): v for k, v in results.items()}
    f = {_text(k): _text(v) for k, v in failures.items()}
    out = []
    for raw, st in zip(ids, states):
        cid = _text(raw) or ""
        state = None
        try:
            state = (
                JobState(_text(st)) if st is not None and not isinstance(st, Exception) else None
            )
        except ValueError:
            state = None
        out.append(
            Child(
                id=cid,
                state=state,
                result=json_or_text(r[cid]) if cid in r else None,
                error=f.get(cid),
                completed=cid in r,
            )
        )
    return out


@dataclass(frozen=True)
class Child:
    """One child of a flow's parent (`children`): its state now (None once
    its own retention deleted it), its result once completed, its error once
    it died or was cancelled."""

    id: str
    state: JobState | None
    result: Any = None
    error: str | None = None
    completed: bool = False


def cancel_outcome(reply: Any) -> str:
    """`cancelled`, `requested`, or `finished:<state>`; `not_found` raises."""
    return _text(reply) or ""


def dead_args(keys: Keys, action: str, ids: list[str] | None, limit: int) -> list[Any]:
    if limit < 1:
        raise InvalidJob("limit", "must be at least 1")
    return [keys.prefix, action, min(limit, 10_000), *(ids or [])]


#: The queue protocol this library speaks (crates/queue's `PROTOCOL`).
PROTOCOL = 3

#: How often a producer adds its queue to the index `spool:queues` again.
REGISTER_EVERY_S = 10.0


# Job events (docs/protocol.md, "Events"): the queue's capped stream, which
# the scripts write only while someone listens (a waiter's job, or every job
# while a QueueEvents subscriber keeps `<prefix>listening` alive).
EVENT_KINDS = ("completed", "failed", "dead", "cancelled", "progress")
#: How long a QueueEvents subscription keeps the queue's events on without
#: renewing it (it renews every third of this).
LISTENING_MS = 30_000


@dataclass(frozen=True)
class Event:
    """One job event: `completed` (data: the result), `failed` (an attempt
    failed and the job runs again; data: the error), `dead` (data: the
    error), `cancelled`, or `progress` (data: the progress). `id` is the
    stream entry's id: give it back as `last_id` to resume after it."""

    id: str
    job_id: str
    event: str
    attempt: int
    data: Any
    #: A result over 64 KiB is not carried (`data` is None): read the job.
    big: bool = False


def decode_events(reply: Any) -> list[Event]:
    """An XREAD or XRANGE reply as events, oldest first."""
    entries: list[Any] = []
    if isinstance(reply, dict):
        for v in reply.values():
            entries.extend(v[0] if v and isinstance(v[0], list) else v)
    else:
        for stream in reply or []:
            entries.extend(stream[1])
    out = []
    for entry in entries:
        eid, fields = entry[0], entry[1]
        if isinstance(fields, list):
            fields = dict(zip(fields[::2], fields[1::2]))
        f = {_text(k): v for k, v in fields.items()}
        kind = _text(f.get("event")) or ""
        try:
            attempt = int(_text(f.get("attempt")) or 0)
        except ValueError:
            attempt = 0
        data = f.get("data")
        out.append(
            Event(
                id=_text(eid) or "0-0",
                job_id=_text(f.get("job")) or "",
                event=kind,
                attempt=attempt,
                data=None if data is None else json_or_text(data),
                big=_text(f.get("big")) == "1",
            )
        )
    return out


def job_from_event(queue: str, ev: Event) -> Job:
    """What an end event tells of a job already deleted (retention 0): its
    state, attempts and result or error; the rest is unknown."""
    state = {"completed": JobState.COMPLETED, "dead": JobState.DEAD}.get(
        ev.event, JobState.CANCELLED
    )
    error = ev.data if ev.event == "dead" else None
    return Job(
        id=ev.job_id,
        queue=queue,
        state=state,
        attempts=ev.attempt,
        max_attempts=ev.attempt,
        priority=0,
        payload="",
        progress=None,
        result=ev.data if ev.event == "completed" else None,
        last_error=None if error is None else str(error),
        enqueued_at=None,
        run_at=None,
        started_at=None,
        finished_at=None,
        cancel_requested=ev.event == "cancelled",
        dedup_key=None,
    )


def block_ms(deadline: float | None, cap_ms: int) -> int:
    """How long one XREAD may block: at most `cap_ms` (a quiet stream is
    followed by a look at the job), never past the deadline (a monotonic
    time)."""
    if deadline is None:
        return cap_ms
    return max(1, min(cap_ms, int((deadline - time.monotonic()) * 1000)))


def watch_reply(reply: Any) -> tuple[str, str, Any]:
    """watch.lua's answer: the job's state ('' when there is none), the
    stream's last id, and the job's progress (None when it has none)."""
    progress = reply[2] if len(reply) > 2 and reply[2] else None
    return _text(reply[0]) or "", _text(reply[1]) or "0-0", json_or_text(progress)


def protocol_mismatch(queue: str, records: list[Any], seen: set[int]) -> str | None:
    """A warning for the first live worker whose protocol differs from
    ours and was not reported yet (`seen` remembers), else None."""
    for raw in records:
        if not raw:
            continue
        try:
            theirs = int(json.loads(raw).get("protocol", 1))
        except (ValueError, TypeError, AttributeError):
            continue
        if theirs != PROTOCOL and theirs not in seen:
            seen.add(theirs)
            older = "the workers" if theirs < PROTOCOL else "this library (spool-client)"
            return (
                f"queue {queue!r}: a live worker speaks queue protocol {theirs}, "
                f"spool-client speaks {PROTOCOL}; jobs still run, but upgrade {older}"
            )
    return None
