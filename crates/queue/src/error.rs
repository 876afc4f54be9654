//! The queue's error type: one variant per thing a caller can act on.

use redis::RedisError;

/// Everything that can go wrong talking to the queue.
///
/// Messages say what happened and what to do about it. None of them ever
/// contains the Redis password: addresses are shown as `host:port/db`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The lease token is not the job's current lease: the lease expired and the
    /// job was handed to another consumer, or it was settled already. The caller
    /// must stop working on the job; nothing was changed.
    #[error(
        "lease lost on job {id} (it is now {state}): another worker took it over after the \
         lease expired, so this worker must drop the job; heartbeat more often than the lease"
    )]
    LeaseLost {
        /// The job.
        id: String,
        /// The state the job is in now.
        state: String,
    },

    /// No job with this id exists (never enqueued, purged, or past retention).
    #[error(
        "job {id} not found in queue {queue}: it was never enqueued, was purged, or its retention expired"
    )]
    NotFound {
        /// The queue searched.
        queue: String,
        /// The id asked for.
        id: String,
    },

    /// A queue name that cannot be used in the key layout.
    #[error("invalid queue name {name:?}: {reason}")]
    InvalidQueueName {
        /// The name given.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },

    /// A job option out of its accepted range.
    #[error("invalid job option `{field}`: {reason}")]
    InvalidOption {
        /// The option's name, as in [`crate::JobOptions`].
        field: &'static str,
        /// Why it was refused, with the accepted range.
        reason: String,
    },

    /// A payload larger than the client's configured maximum.
    #[error(
        "payload of {size} bytes exceeds the maximum of {max} bytes: store large data \
         elsewhere (object storage) and enqueue a reference, or raise max_payload_bytes"
    )]
    PayloadTooLarge {
        /// The payload's size.
        size: usize,
        /// The configured maximum.
        max: usize,
    },

    /// The Redis URL could not be parsed.
    #[error(
        "invalid Redis URL: {reason}; expected redis://[user:password@]host[:port][/db] or rediss://… for TLS"
    )]
    InvalidUrl {
        /// What is wrong with it.
        reason: String,
    },

    /// Redis could not be reached, or the connection broke.
    #[error(
        "cannot reach Redis at {addr}: {source}; check that Redis is running and that SPOOL_REDIS_URL points at it"
    )]
    Unavailable {
        /// `host:port/db` of the server (never the password).
        addr: String,
        /// The underlying client error.
        #[source]
        source: RedisError,
    },

    /// The TLS handshake with Redis failed (unknown CA, wrong host name,
    /// plain-text server).
    #[error(
        "TLS handshake with Redis at {addr} failed: {source}; check the CA (SPOOL_REDIS_CA_FILE) and that the server speaks TLS on that port"
    )]
    Tls {
        /// `host:port/db` of the server.
        addr: String,
        /// The underlying client error.
        #[source]
        source: RedisError,
    },

    /// Redis is at `maxmemory` with `maxmemory-policy noeviction` and refused
    /// a write. Nothing of the call was written (a script is refused at its
    /// first write). Transient: it succeeds again once memory is freed.
    #[error(
        "Redis at {addr} is out of memory (maxmemory reached; with maxmemory-policy noeviction it refuses new writes, and nothing of this call was written): raise maxmemory, let workers drain the backlog, or purge dead and finished jobs (spoolctl dead purge, shorter retention); see docs/capacity.md"
    )]
    OutOfMemory {
        /// `host:port/db` of the server.
        addr: String,
        /// The underlying client error.
        #[source]
        source: RedisError,
    },

    /// The write is on the master but fewer replicas than
    /// [`crate::ClientOptions::min_replicas`] acknowledged it in time: a
    /// failover now could lose it. Transient; retrying an enqueue is safe
    /// when the job carries an id.
    #[error(
        "the write reached {got} of {wanted} replicas of Redis at {addr} within {timeout:?} (SPOOL_REDIS_MIN_REPLICAS): it is on the master and would be lost if the master failed now; check the replicas (INFO replication), then retry (an enqueue with a job id is not duplicated)"
    )]
    NotReplicated {
        /// `host:port/db` of the master.
        addr: String,
        /// Replicas asked for.
        wanted: u32,
        /// Replicas that acknowledged.
        got: u32,
        /// How long it waited.
        timeout: std::time::Duration,
    },

    /// Redis refused a command (authentication, ACL, wrong type, script error).
    #[error("Redis at {addr} refused a command: {source}")]
    Redis {
        /// `host:port/db` of the server.
        addr: String,
        /// The underlying client error.
        #[source]
        source: RedisError,
    },

    /// A job hash or index holds something spool did not write.
    #[error(
        "corrupt queue data at {key}: {reason}; inspect it with redis-cli and delete or repair it"
    )]
    Corrupt {
        /// The Redis key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl Error {
    /// Whether the error is transient (Redis unreachable or the connection broke),
    /// so retrying the same call later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Unavailable { .. } | Error::OutOfMemory { .. } | Error::NotReplicated { .. }
        )
    }

    pub(crate) fn from_redis(addr: &str, source: RedisError) -> Self {
        let text = source.to_string().to_ascii_lowercase();
        if [
            "certificate",
            "tls",
            "handshake",
            "unknownissuer",
            "invalid peer",
        ]
        .iter()
        .any(|w| text.contains(w))
        {
            return Error::Tls {
                addr: addr.to_owned(),
                source,
            };
        }
        if source.code() == Some("OOM") || text.contains("oom command not allowed") {
            return Error::OutOfMemory {
                addr: addr.to_owned(),
                source,
            };
        }
        // READONLY: a replica answered (a failover demoted the node we were
        // connected to); the next connection finds the new master.
        let transient = source.is_io_error()
            || source.is_timeout()
            || source.is_connection_dropped()
            || source.is_connection_refusal()
            || source.is_unrecoverable_error()
            || matches!(
                source.kind(),
                redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading)
                    | redis::ErrorKind::Server(redis::ServerErrorKind::TryAgain)
                    | redis::ErrorKind::Server(redis::ServerErrorKind::ClusterDown)
                    | redis::ErrorKind::Server(redis::ServerErrorKind::MasterDown)
                    | redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
            );
        if transient {
            Error::Unavailable {
                addr: addr.to_owned(),
                source,
            }
        } else {
            Error::Redis {
                addr: addr.to_owned(),
                source,
            }
        }
    }
}

/// The queue's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
