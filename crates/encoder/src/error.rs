//! The encoder's errors: each names what was wrong and whether retrying helps.

/// Everything an encode can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The job spec is impossible; nothing was started.
    #[error("invalid encode spec: `{field}` {reason}")]
    InvalidSpec {
        /// The offending field, as written in the JSON spec.
        field: String,
        /// Why, with what is accepted.
        reason: String,
    },
    /// A path escapes its root, or is otherwise refused.
    #[error("refused path {path:?}: {reason}")]
    PathRefused {
        /// The path as given.
        path: String,
        /// Why.
        reason: String,
    },
    /// The input cannot be read as media (corrupt, truncated, not media).
    #[error("cannot read input {path:?}: {reason}")]
    BadInput {
        /// The input as given.
        path: String,
        /// What FFmpeg or the checks said.
        reason: String,
    },
    /// The input is media but over a configured limit.
    #[error("input {path:?} exceeds a limit: {reason}")]
    LimitExceeded {
        /// The input.
        path: String,
        /// Which limit and by how much.
        reason: String,
    },
    /// Something this job did not publish is already at an output name; a job
    /// never removes or replaces what is not its own.
    #[error("output {path:?} already exists: {reason}; remove it or choose another output name")]
    OutputExists {
        /// The output path.
        path: String,
        /// What is there and whose it is.
        reason: String,
    },
    /// Object storage refused for good: a bucket the worker does not allow,
    /// a missing object, access denied. Names the object, never credentials.
    #[error("object storage refused {uri}: {reason}")]
    StorageRefused {
        /// `s3://bucket/key`.
        uri: String,
        /// Why.
        reason: String,
    },
    /// Object storage failed in a way that may pass (a timeout, a 5xx, a
    /// reset connection); the job is retried.
    #[error("object storage unavailable for {uri}: {reason}")]
    StorageUnavailable {
        /// `s3://bucket/key`.
        uri: String,
        /// What happened.
        reason: String,
    },
    /// NVENC was required and is not available, or refused the session.
    #[error("NVENC unavailable: {0}")]
    NvencUnavailable(String),
    /// The encode or the write failed midway (disk full, encoder error).
    #[error("encode failed: {0}")]
    Failed(String),
    /// FFmpeg failed midway at `context` (an encoder, a filter, a write):
    /// its error is the source.
    #[error("encode failed: {context}: {source}")]
    Ffmpeg {
        /// What the encode was doing.
        context: String,
        /// FFmpeg's error.
        #[source]
        source: ffmpeg_next::Error,
    },
    /// The encode was cancelled; partial outputs were removed.
    #[error("encode cancelled")]
    Cancelled,
}

impl EncodeError {
    /// Whether the same job may succeed later (a busy GPU, a full disk) rather
    /// than never (a bad spec or a corrupt input).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            EncodeError::NvencUnavailable(_)
                | EncodeError::Failed(_)
                | EncodeError::Ffmpeg { .. }
                | EncodeError::Cancelled
                | EncodeError::StorageUnavailable { .. }
        )
    }

    pub(crate) fn spec(field: impl Into<String>, reason: impl Into<String>) -> Self {
        EncodeError::InvalidSpec {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl From<spool_storage::StorageError> for EncodeError {
    fn from(e: spool_storage::StorageError) -> Self {
        use spool_storage::StorageError as S;
        match e {
            S::Refused { uri, reason } => EncodeError::StorageRefused { uri, reason },
            S::Unavailable { uri, reason } => EncodeError::StorageUnavailable { uri, reason },
            S::OutputExists { path, reason } => EncodeError::OutputExists { path, reason },
            S::TooLarge { path, reason } => EncodeError::LimitExceeded { path, reason },
            S::Cancelled => EncodeError::Cancelled,
            other => EncodeError::Failed(other.to_string()),
        }
    }
}

impl From<spool_encode_spec::SpecError> for EncodeError {
    fn from(e: spool_encode_spec::SpecError) -> Self {
        EncodeError::InvalidSpec {
            field: e.field,
            reason: e.reason,
        }
    }
}
