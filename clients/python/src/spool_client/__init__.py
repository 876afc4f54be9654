"""Producer library for spool queues: enqueue render and encode jobs, follow
their progress, cancel them, read stats and dead letters.

Speaks the same protocol as the Rust crate (the same Lua scripts, copied in
at build time), so jobs enqueued here are run by `spool-encoder-worker` or any
worker built on `spool-worker`, and read back by `spoolctl`.
"""

from ._async import AsyncQueue
from ._core import (
    PROTOCOL,
    BulkJob,
    Child,
    Event,
    Failure,
    Flow,
    Job,
    JobOptions,
    JobState,
    LogLine,
    PauseState,
    Stats,
)
from ._sync import Queue
from .encode import Audio, EncodeJob, Hls, Mp4, Rendition
from .errors import (
    CorruptJob,
    InvalidJob,
    JobFailed,
    LeaseLost,
    NotFound,
    PayloadTooLarge,
    ProtocolMismatch,
    RedisUnavailable,
    SpoolError,
    WaitTimeout,
)

__all__ = [
    "PROTOCOL",
    "AsyncQueue",
    "Audio",
    "BulkJob",
    "Child",
    "CorruptJob",
    "EncodeJob",
    "Event",
    "Failure",
    "Flow",
    "Hls",
    "InvalidJob",
    "Job",
    "JobFailed",
    "JobOptions",
    "JobState",
    "LeaseLost",
    "LogLine",
    "Mp4",
    "NotFound",
    "PauseState",
    "PayloadTooLarge",
    "ProtocolMismatch",
    "Queue",
    "RedisUnavailable",
    "Rendition",
    "SpoolError",
    "Stats",
    "WaitTimeout",
]
