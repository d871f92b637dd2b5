//! Errors of the Kubernetes-style storage interface.
//!
//! The variants follow k8s.io/apiserver's storage errors (`KeyExists`, `KeyNotFound`,
//! `ResourceVersionConflicts`, `TooLargeResourceVersion`, and the 410 "Expired" of
//! apimachinery) so that a caller can map each to the HTTP status kube-apiserver answers.

use std::error::Error as StdError;

/// Result alias for the storage interface.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// The error a `try_update` function returns to abort a `guaranteed_update`.
pub type UpdateError = Box<dyn StdError + Send + Sync>;

/// Every error of the storage interface.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// `create` on a key that exists (kube: 409 AlreadyExists).
    #[error("key {key:?} already exists")]
    AlreadyExists {
        /// The key.
        key: Vec<u8>,
    },
    /// The key does not exist (kube: 404 NotFound).
    #[error("key {key:?} not found")]
    NotFound {
        /// The key.
        key: Vec<u8>,
    },
    /// A resource-version precondition does not hold (kube: 409 Conflict).
    #[error("precondition failed for key {key:?}: resource version in precondition: {expected}, in storage: {actual}")]
    Conflict {
        /// The key.
        key: Vec<u8>,
        /// The resource version the caller required.
        expected: i64,
        /// The object's resource version (0: the object does not exist).
        actual: i64,
    },
    /// The requested resource version was compacted away (kube: 410 Gone / Expired). Also the
    /// answer for a continue token whose pinned revision was compacted: start a new list.
    #[error("resource version {requested} is too old: compacted (compact revision {compact_revision:?})")]
    Expired {
        /// The resource version that was asked for.
        requested: i64,
        /// The store's compaction revision, when the server said.
        compact_revision: Option<i64>,
    },
    /// The requested resource version is newer than the store's (kube: 504 "Too large
    /// resource version", with a retry-after).
    #[error("too large resource version: {requested}, current: {current:?}")]
    TooLargeResourceVersion {
        /// The resource version that was asked for.
        requested: i64,
        /// The store's revision, when known.
        current: Option<i64>,
    },
    /// A continue token that does not decode.
    #[error("invalid continue token: {0}")]
    InvalidContinue(#[from] TokenError),
    /// Options that contradict each other.
    #[error("invalid options: {0}")]
    InvalidOptions(#[from] OptionsError),
    /// The `try_update` function of a `guaranteed_update` returned an error.
    #[error("update rejected: {0}")]
    UpdateRejected(#[source] UpdateError),
    /// A watch did not keep up with its events: its buffer filled and it was stopped. The
    /// caller must watch again from the last resource version it saw.
    #[error("watch stopped: the consumer fell behind")]
    WatchTooSlow,
    /// The server cancelled the watch (the reason is the server's).
    #[error("watch cancelled by the server: {reason}")]
    WatchCanceled {
        /// The server's `cancel_reason`.
        reason: String,
    },
    /// The watch stream or the storage was closed.
    #[error("watch stream closed")]
    Closed,
    /// A tenant prefix that does not end with `/`.
    #[error("tenant prefix {0:?} must be non-empty and end with '/'")]
    InvalidTenantPrefix(Vec<u8>),
    /// The server answered something the protocol does not allow.
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    /// An RPC failed (connection lost, unavailable, ...).
    #[error("rpc failed: {0}")]
    Rpc(#[from] tonic::Status),
    /// Connecting to an endpoint failed.
    #[error("connect failed: {0}")]
    Connect(#[from] tonic::transport::Error),
    /// The write path cannot take requests (halted after a fatal error, shutting down).
    #[error("write path unavailable: {0}")]
    Unavailable(#[source] Box<dyn StdError + Send + Sync>),
    /// The local storage engine failed.
    #[error("engine: {0}")]
    Engine(#[from] crate::Error),
}

impl StorageError {
    /// Removes `n` leading bytes from the keys this error names (a tenant view reports keys
    /// relative to its prefix).
    pub(crate) fn strip_key_prefix(self, n: usize) -> StorageError {
        let strip = |k: Vec<u8>| k.get(n..).map(<[u8]>::to_vec).unwrap_or(k);
        match self {
            StorageError::AlreadyExists { key } => StorageError::AlreadyExists { key: strip(key) },
            StorageError::NotFound { key } => StorageError::NotFound { key: strip(key) },
            StorageError::Conflict { key, expected, actual } => {
                StorageError::Conflict { key: strip(key), expected, actual }
            }
            other => other,
        }
    }
}

/// Why a continue token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not base64url.
    #[error("not base64url")]
    Encoding,
    /// Too short, or an unknown version byte.
    #[error("unknown format")]
    Format,
    /// The pinned revision is not positive.
    #[error("bad revision {0}")]
    Revision(i64),
}

/// Contradictory or incomplete options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    /// `Exact` needs a non-zero resource version.
    #[error("resource version match Exact requires a non-zero resource version")]
    ExactWithoutResourceVersion,
    /// A continue token already pins the revision.
    #[error("specifying a resource version is not allowed when using continue")]
    ContinueWithResourceVersion,
    /// A negative limit or resource version.
    #[error("negative limit or resource version")]
    Negative,
}
