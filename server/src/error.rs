//! Errors of the server crate.
//!
//! - [`RequestError`]: why one client request failed; `status.rs` turns it into the gRPC
//!   status etcd would send.
//! - [`ConfigError`]: a flag combination that cannot work; reported at startup.
//! - [`ServerError`]: why the server could not start or had to stop.

use std::path::PathBuf;
use std::sync::Arc;

use cairn_storage::Error as StorageError;

/// Why one client request failed.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Storage rejected or failed the request (validation, apply or read).
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// An earlier fatal storage error stopped the write pipeline; nothing more is applied.
    #[error("write pipeline halted by an earlier fatal storage error: {0}")]
    Halted(Arc<str>),
    /// The server is shutting down.
    #[error("server stopped")]
    Stopped,
    /// No leader is known (an election is under way, or this member is cut off).
    #[error("no leader")]
    NoLeader,
    /// Raft did not answer in time; the request may still be applied.
    #[error("request timed out")]
    Timeout,
    /// The proposal was dropped by a leadership change.
    #[error("leader changed")]
    LeaderChanged,
    /// A membership request named a member that does not exist.
    #[error("member not found")]
    MemberNotFound,
    /// MemberAdd with a peer URL another member has.
    #[error("peer URL exists")]
    PeerUrlExists,
    /// MemberAdd/MemberPromote of a member ID that was removed before.
    #[error("member ID was removed")]
    MemberRemoved,
    /// MemberPromote of a voting member.
    #[error("can only promote a learner")]
    NotALearner,
    /// MemberPromote of a learner that is behind the leader's log.
    #[error("learner not ready")]
    LearnerNotReady,
    /// MemberRemove/MemberAdd/MemberPromote that would leave the cluster without quorum.
    #[error("unhealthy cluster")]
    UnhealthyCluster,
    /// MemberRemove/MemberAdd/MemberPromote that would leave too few started members for a
    /// quorum (`--strict-reconfig-check`).
    #[error("re-configuration failed due to not enough started members")]
    NotEnoughStartedMembers,
    /// MoveLeader to a member that is not a voter, or sent to a non-leader.
    #[error("{0}")]
    NotLeader(&'static str),
    /// A learner refuses everything but serializable reads and Status.
    #[error("rpc not supported for learner")]
    NotSupportedForLearner,
    /// Storage answered a request with a response of another kind (a bug).
    #[error("internal error: {request} got a {got} response")]
    ResponseMismatch {
        /// The request kind.
        request: &'static str,
        /// The response kind storage returned.
        got: &'static str,
    },
}

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--initial-cluster` does not list `--name`.
    #[error("couldn't find local name {0:?} in the initial cluster configuration")]
    NotInInitialCluster(String),
    /// `--initial-cluster` gives this member other URLs than `--initial-advertise-peer-urls`.
    #[error(
        "--initial-cluster has {initial_cluster} for this member but \
         --initial-advertise-peer-urls is {advertised}"
    )]
    PeerUrlsMismatch {
        /// This member's URLs in `--initial-cluster`.
        initial_cluster: String,
        /// `--initial-advertise-peer-urls`.
        advertised: String,
    },
    /// A malformed `--initial-cluster` entry.
    #[error("invalid --initial-cluster entry {0:?}: expected name=url")]
    InitialCluster(String),
    /// The member ID hash came out 0, which Raft reserves.
    #[error("the member ID computed from the peer URLs and cluster token is 0; change either")]
    ZeroMemberId,
    /// A malformed URL.
    #[error("invalid URL {url:?} in --{flag}: {reason}")]
    Url {
        /// The flag that holds it.
        flag: &'static str,
        /// The URL.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An `https://` listener without a certificate.
    #[error("{0} needs TLS: give --cert-file and --key-file, or --auto-tls")]
    HttpsWithoutCert(String),
    /// Only one of `--cert-file` / `--key-file`.
    #[error("--cert-file and --key-file must be given together")]
    CertKeyPair,
    /// An `--auth-token` that cannot be used (see `auth/jwt.rs`).
    #[error("{0}")]
    AuthToken(String),
    /// An etcd flag set to something cairn cannot honour (see `startup/etcd_only_flags.rs`).
    #[error("{flag}: {why}")]
    Refused {
        /// The flag.
        flag: &'static str,
        /// Why it cannot be honoured.
        why: &'static str,
    },
    /// `--auto-compaction-mode`/`--auto-compaction-retention` etcd would refuse (etcd's words).
    #[error("{0}")]
    AutoCompaction(String),
    /// `--client-cert-auth` without a CA to verify against.
    #[error("--client-cert-auth needs --trusted-ca-file")]
    ClientCertAuthWithoutCa,
    /// `--max-request-bytes` or `--max-txn-ops` is 0.
    #[error("--{0} must be greater than 0")]
    Zero(&'static str),
}

/// Why the server could not start, or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The write-ahead log could not be opened (I/O, or corruption that is not a torn tail).
    #[error("opening the write-ahead log: {0}")]
    Wal(#[source] cairn_raft_node::WalError),
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// TLS material could not be loaded or generated.
    #[error(transparent)]
    Tls(#[from] crate::net::tls::TlsError),
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The store could not be opened.
    #[error("cannot open the store at {path}: {source}")]
    OpenStore {
        /// The store directory.
        path: PathBuf,
        /// The storage error.
        source: StorageError,
    },
    /// This member's identity (member and cluster ID) could not be read, written or learnt.
    #[error("member identity: {0}")]
    Identity(String),
    /// A data folder etcd wrote could not be imported (or is not importable in place).
    #[error(transparent)]
    EtcdImport(#[from] crate::member::etcd_import::EtcdImportError),
    /// The Raft node could not be opened.
    #[error("raft: {0}")]
    Raft(String),
    /// The write pipeline's thread could not be started.
    #[error("cannot start the write pipeline thread: {0}")]
    ProposerThread(std::io::Error),
    /// The watch hub (its catch-up thread) could not be started.
    #[error("cannot start the watch hub: {0}")]
    WatchHub(#[source] StorageError),
    /// A client URL's host did not resolve.
    #[error("cannot resolve {url}: {source}")]
    Resolve {
        /// The URL.
        url: String,
        /// The resolver error.
        source: std::io::Error,
    },
    /// A client listener could not be bound. An address in use is worded as etcd (Go)
    /// words it, `bind: address already in use`, which scripts and test harnesses match.
    #[error("cannot listen on {url}: {}", listen_reason(source))]
    Listen {
        /// The URL.
        url: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A listener's gRPC server failed.
    #[error("client server on {url} failed: {source}")]
    Serve {
        /// The URL.
        url: String,
        /// tonic's error.
        source: tonic::transport::Error,
    },
    /// The server task panicked or was cancelled.
    #[error("client server task on {url} failed: {source}")]
    Task {
        /// The URL.
        url: String,
        /// The join error.
        source: tokio::task::JoinError,
    },
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    /// The tokio runtime could not be built.
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    /// The initial corruption check found a peer whose hash differs at the same revision
    /// and compacted revision (etcd's words; the member ID in hex, as etcd prints it).
    #[error("{0:x} found data inconsistency with peers")]
    DataInconsistency(u64),
    /// The initial corruption check could not hash the local store (etcd's words).
    #[error("{member:x} failed to fetch hash ({reason})")]
    LocalHash {
        /// This member's ID.
        member: u64,
        /// Why.
        reason: String,
    },
}

fn listen_reason(err: &std::io::Error) -> String {
    if err.kind() == std::io::ErrorKind::AddrInUse {
        "bind: address already in use".to_owned()
    } else {
        err.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_inconsistency_reads_like_etcd() {
        assert_eq!(ServerError::DataInconsistency(0x8e9e05c52164694d).to_string(), "8e9e05c52164694d found data inconsistency with peers");
    }

    #[test]
    fn address_in_use_reads_like_etcd() {
        let err = ServerError::Listen {
            url: "http://127.0.0.1:2379".into(),
            source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
        };
        assert_eq!(
            err.to_string(),
            "cannot listen on http://127.0.0.1:2379: bind: address already in use"
        );
    }
}
