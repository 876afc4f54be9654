"""spool's errors: each says what was wrong and what to do; none carries the
Redis password."""

from __future__ import annotations


class SpoolError(Exception):
    """Base of every error this library raises."""


class InvalidJob(SpoolError):
    """A job (payload or options) that the queue would refuse; nothing was sent."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"invalid {field}: {reason}")
        self.field = field
        self.reason = reason


class PayloadTooLarge(InvalidJob):
    """A payload over the size limit: jobs carry references to media, not media."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            "payload",
            f"{size} bytes is over the limit of {limit} bytes; put the media in "
            "object storage and enqueue its s3:// URI",
        )
        self.size = size
        self.limit = limit


class NotFound(SpoolError):
    """No job with this id (never enqueued, or its retention passed)."""

    def __init__(self, queue: str, job_id: str) -> None:
        super().__init__(f"no job {job_id!r} in queue {queue!r} (never enqueued, or expired)")
        self.queue = queue
        self.job_id = job_id


class LeaseLost(SpoolError):
    """The job is no longer this consumer's (raised by consumer operations)."""


class RedisUnavailable(SpoolError):
    """Redis could not be reached, or the connection broke."""

    def __init__(self, addr: str, reason: str) -> None:
        super().__init__(
            f"cannot reach Redis at {addr}: {reason}; check that Redis is running "
            "and that the URL points at it"
        )
        self.addr = addr


class WaitTimeout(SpoolError):
    """`wait` gave up before the job finished; the job goes on."""

    def __init__(self, job_id: str, timeout: float, state: str) -> None:
        super().__init__(f"job {job_id!r} is still {state} after {timeout:g} s")
        self.job_id = job_id
        self.state = state


class CorruptJob(SpoolError):
    """A job hash that does not have spool's shape (another program wrote it)."""


class JobFailed(SpoolError):
    """`wait(..., raise_on_failure=True)` found the job dead: its attempts
    are used up, or it failed permanently."""

    def __init__(self, job_id: str, error: str | None) -> None:
        super().__init__(f"job {job_id!r} failed: {error or 'no error recorded'}")
        self.job_id = job_id
        self.error = error


class ProtocolMismatch(UserWarning):
    """A live worker of the queue speaks another version of the queue
    protocol than this library (`spool_client.PROTOCOL`): jobs still run
    (the protocol changes compatibly), but features of the newer side may
    be missing, e.g. job events from workers older than protocol 2 (`wait`
    then notices a job's end by reading it every 2 s). Upgrade the older
    side."""
