//! cairn's server: etcd's v3 gRPC services over the storage engine, one Raft member.
//!
//! Modules, one folder per role:
//! - `api/`: the gRPC services clients call (KV, Watch, Lease, Cluster, Maintenance, Auth)
//!   and `status.rs`, the one place errors become etcd's gRPC statuses;
//! - `auth/`: who a request runs as (tokens, client certificates) and the password work
//!   (bcrypt, off every lock); the replicated auth state itself is the storage crate's;
//! - `member/`: the Raft member: the store as state machine, proposals, the member table,
//!   membership and leadership, lease expiry on the leader, bootstrap;
//! - `metrics/`: etcd's metric families (registry and text format, the Raft log's observer,
//!   the gRPC counting layer, the process collector);
//! - `net/`: listeners, client and peer TLS, the HTTP endpoints (`/health`, `/metrics`),
//!   and the smoothing of hyper/tonic vs grpc-go differences (`authority`, `limits`);
//! - `startup/`: flags and environment (`config`), the binary's start-up and shutdown
//!   (`run`), and the `cairn cluster` subcommand (`local_cluster`);
//! - [`engine`]: the same member embedded in a Rust process, without listeners.
//!
//! See ARCHITECTURE.md at the repository root for the write and read paths.
#![deny(missing_docs)]

pub mod api;
pub mod auth;
pub mod clock;
pub mod engine;
pub mod error;
pub mod member;
pub mod metrics;
pub mod net;
pub mod startup;

pub use error::ServerError;
pub use member::MemberOptions;
pub use startup::config::Config;
pub use startup::run::{main_entry, run};
