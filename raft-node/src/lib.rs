//! cairn's replicated log.
//!
//! * [`wal`]: the write-ahead log — segmented append-only files, a length and CRC per
//!   record, fdatasync before anything is acknowledged, torn tails truncated on open,
//!   sticky I/O failure.
//! * [`storage`]: raft-rs's `Storage` kept in that WAL ([`WalStorage`]): entries, hard
//!   state, conf states and snapshot metadata as records, rebuilt on open.
//! * [`machine`]: what the log drives — the [`StateMachine`] and its [`SnapshotSource`].
//! * [`node`]: the driver around raft-rs's `RawNode` ([`RaftNode`]), following raft-rs's
//!   documented `Ready` order, with requests matched to applied entries by request id and
//!   batched ReadIndex; I/O (transport, ticks) behind traits.
//! * [`sim`]: an in-process, seeded, fault-injecting network for deterministic cluster tests.
//! * [`transport`]: the peer transport over gRPC ([`GrpcTransport`], [`PeerService`]).
//! * [`observe`]: what the log reports for metrics ([`NodeObserver`], implemented by the
//!   server), through [`Observer`].
#![deny(missing_docs)]

//!
//! Everything but the WAL is behind the `raft` feature (raft-rs's build needs a system
//! protoc; `scripts/test.sh` installs it and tests with the feature on).

#[cfg(feature = "raft")]
mod logger;
#[cfg(feature = "raft")]
pub mod machine;
#[cfg(feature = "raft")]
pub mod node;
#[cfg(feature = "raft")]
pub mod sim;
#[cfg(feature = "raft")]
pub mod storage;
#[cfg(feature = "raft")]
pub mod transport;
pub mod observe;
pub mod wal;

#[cfg(feature = "raft")]
pub use machine::{AppliedConfChange, SnapshotSource, StateMachine, StateMachineError};
#[cfg(feature = "raft")]
pub use node::{IdGen, PeerInbox,
    ConfChangeRequest, LeaderInfo, Mailbox, NodeConfig, NodeError, NodeHandle, NodeStatus, ProposeResult, RaftNode,
    RequestError, Transport,
};
#[cfg(feature = "raft")]
pub use storage::{force_new_cluster, StorageError, WalStorage};
#[cfg(feature = "raft")]
pub use transport::{GrpcTransport, PeerService, TransportError, TransportOptions};
pub use observe::{NodeObserver, Observer};
pub use wal::{Wal, WalError, WalOptions, WalRecord};

/// raft-rs, re-exported so users name the same types (`eraftpb::Message`, `StateRole`).
#[cfg(feature = "raft")]
pub use raft;
