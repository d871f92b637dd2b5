//! Errors of the storage layer.
//!
//! Two kinds live here. *Request errors* are deterministic outcomes of applying a request
//! to a given state (a compacted revision, a missing lease...): every member computes the
//! same one, and the server maps each to etcd's exact gRPC status (server/src/status.rs is
//! the one place that does so). *Fatal errors* ([`Error::is_fatal`]) mean the backend can no
//! longer be trusted (an I/O failure, corrupt data): they are sticky, and nothing is
//! acknowledged after one.

/// Result alias for storage operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every error the storage layer reports.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request names no key.
    #[error("key is not provided")]
    EmptyKey,
    /// `ignore_value`/`ignore_lease` on a key that does not exist.
    #[error("key not found")]
    KeyNotFound,
    /// `ignore_value` together with a value.
    #[error("value is provided")]
    ValueProvided,
    /// `ignore_lease` together with a lease.
    #[error("lease is provided")]
    LeaseProvided,
    /// A Txn with more compares or ops than `--max-txn-ops`.
    #[error("too many operations in txn request")]
    TooManyOps,
    /// A Txn that writes one key twice (etcd's overlap rule).
    #[error("duplicate key given in txn request")]
    DuplicateKey,
    /// A request whose encoding exceeds `--max-request-bytes`.
    #[error("request is too large")]
    RequestTooLarge,
    /// The requested revision was compacted away.
    #[error("mvcc: required revision has been compacted")]
    Compacted,
    /// The requested revision is newer than the store's.
    #[error("mvcc: required revision is a future revision")]
    FutureRev,
    /// The lease does not exist.
    #[error("requested lease not found")]
    LeaseNotFound,
    /// A grant for an ID that is already in use.
    #[error("lease already exists")]
    LeaseExists,
    /// A grant whose TTL is over the maximum.
    #[error("too large lease TTL")]
    LeaseTtlTooLarge,
    /// The database is over its quota.
    #[error("mvcc: database space exceeded")]
    NoSpace,
    /// A CORRUPT alarm is active: the request is refused (etcd's `ErrCorrupt`, see
    /// `alarm.rs`). A request error, not a fatal one: the store itself is fine.
    #[error("corrupt cluster")]
    CorruptCluster,
    /// A range with an unknown sort order or target.
    #[error("invalid sort option")]
    InvalidSortOption,
    /// A request carries no operation (an empty oneof).
    #[error("empty request")]
    EmptyRequest,
    /// Authentication or access control refused the request.
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    /// The backend failed (I/O). Fatal and sticky.
    #[error("backend failure: {0}")]
    Backend(String),
    /// Stored data does not decode or breaks an invariant. Fatal.
    #[error("corrupt storage: {what}: {detail}")]
    Corrupt {
        /// Which structure is broken.
        what: &'static str,
        /// What was found.
        detail: String,
    },
    /// The store failed earlier or is shutting down; nothing more is accepted.
    #[error("store stopped")]
    Stopped,
    /// A data folder written by one storage engine opened with another (see `engine.rs`).
    #[error("data folder {} was written by the {found} engine, not {requested}", dir.display())]
    WrongEngine {
        /// The folder.
        dir: std::path::PathBuf,
        /// The engine that wrote it.
        found: crate::engine::StorageEngine,
        /// The engine it was opened with.
        requested: crate::engine::StorageEngine,
    },
}

impl Error {
    /// True when the error means the store can no longer acknowledge anything.
    pub fn is_fatal(&self) -> bool {
        matches!(self, Error::Backend(_) | Error::Corrupt { .. } | Error::Stopped)
    }

    pub(crate) fn corrupt(what: &'static str, detail: impl std::fmt::Display) -> Error {
        Error::Corrupt { what, detail: detail.to_string() }
    }
}

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        Error::Backend(e.to_string())
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Backend(e.to_string())
    }
}
