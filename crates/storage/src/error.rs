//! What a storage operation can fail with: each names the object and
//! whether retrying helps.

/// Everything a transfer can fail with. Messages name the object, never
/// credentials.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// Refused for good: a bucket this process does not allow, a missing
    /// object, access denied, a request the store calls malformed.
    #[error("object storage refused {uri}: {reason}")]
    Refused {
        /// `s3://bucket/key`.
        uri: String,
        /// Why.
        reason: String,
    },
    /// Failed in a way that may pass (a timeout, a 5xx, a reset
    /// connection), after the outage budget was spent.
    #[error("object storage unavailable for {uri}: {reason}")]
    Unavailable {
        /// `s3://bucket/key`.
        uri: String,
        /// What happened.
        reason: String,
    },
    /// Something not written by this owner (or written by a later attempt
    /// of it) is already at an output name.
    #[error("output {path:?} already exists: {reason}; remove it or choose another output name")]
    OutputExists {
        /// `s3://bucket/key`.
        path: String,
        /// What is there and whose it is.
        reason: String,
    },
    /// The object is larger than the caller allowed.
    #[error("input {path:?} exceeds a limit: {reason}")]
    TooLarge {
        /// `s3://bucket/key`.
        path: String,
        /// The limit.
        reason: String,
    },
    /// A local failure: the scratch directory, a file to upload.
    #[error("{0}")]
    Local(String),
    /// The operation was cancelled; what it wrote was removed.
    #[error("cancelled")]
    Cancelled,
}

impl StorageError {
    /// Whether the same operation may succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StorageError::Unavailable { .. } | StorageError::Local(_) | StorageError::Cancelled
        )
    }
}
