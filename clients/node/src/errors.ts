/** spool's errors: each says what was wrong and what to do; none carries the Redis password. */

/** Base of every error this library throws. */
export class SpoolError extends Error {
  override name = "SpoolError";
}

/** A job (payload or options) the queue would refuse; nothing was sent. */
export class InvalidJob extends SpoolError {
  override name = "InvalidJob";
  constructor(
    readonly field: string,
    readonly reason: string,
  ) {
    super(`invalid ${field}: ${reason}`);
  }
}

/** A payload over the size limit: jobs carry references to media, not media. */
export class PayloadTooLarge extends InvalidJob {
  override name = "PayloadTooLarge";
  constructor(
    readonly size: number,
    readonly limit: number,
  ) {
    super(
      "payload",
      `${size} bytes is over the limit of ${limit} bytes; put the media in object storage and enqueue its s3:// URI`,
    );
  }
}

/** No job with this id (never enqueued, or its retention passed). */
export class NotFound extends SpoolError {
  override name = "NotFound";
  constructor(
    readonly queue: string,
    readonly jobId: string,
  ) {
    super(`no job '${jobId}' in queue '${queue}' (never enqueued, or expired)`);
  }
}

/** The job is no longer this consumer's (consumer operations). */
export class LeaseLost extends SpoolError {
  override name = "LeaseLost";
}

/** Redis could not be reached, or the connection broke. */
export class RedisUnavailable extends SpoolError {
  override name = "RedisUnavailable";
  constructor(
    readonly addr: string,
    reason: string,
  ) {
    super(
      `cannot reach Redis at ${addr}: ${reason}; check that Redis is running and that the URL points at it`,
    );
  }
}

/** `wait` gave up before the job finished; the job goes on. */
export class WaitTimeout extends SpoolError {
  override name = "WaitTimeout";
  constructor(
    readonly jobId: string,
    timeoutMs: number,
    readonly state: string,
  ) {
    super(`job '${jobId}' is still ${state} after ${timeoutMs / 1000} s`);
  }
}

/** A job hash without spool's shape (another program wrote it). */
export class CorruptJob extends SpoolError {
  override name = "CorruptJob";
}

/** `wait(…, { raiseOnFailure: true })` found the job dead: its attempts are used up, or it failed permanently. */
export class JobFailed extends SpoolError {
  override name = "JobFailed";
  constructor(
    readonly jobId: string,
    readonly error: string | null,
  ) {
    super(`job '${jobId}' failed: ${error ?? "no error recorded"}`);
  }
}
