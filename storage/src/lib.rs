//! cairn's storage: an MVCC key-value store with etcd's semantics.
//!
//! * [`revision`]: revisions and their byte encoding;
//! * [`key_index`] / [`index`]: the in-memory index from key to revision history;
//! * [`backend`]: the storage-engine trait; its engines are [`pagestore`] (cairn's own,
//!   the default) and [`sled_backend`]; [`engine`] picks one for a data folder;
//! * [`Store`]: open/rebuild, the read path, and the deterministic state machine
//!   (`apply` in `apply.rs`, Put/DeleteRange/Txn in `txn.rs`); Raft snapshots and their
//!   restore in `restore.rs`, over the rebuild of in-memory state in `rebuild.rs`;
//! * [`auth`]: users, roles and permissions (replicated, applied by `Store::apply`);
//! * [`bbolt`]: etcd's file format, read and written whole (for import and export);
//! * [`etcd_db`]: etcd's schema over it: importing etcd's files into a store, exporting
//!   a store's snapshot as one;
//! * [`seed`]: a new store from a backup's dataset (`cairn snapshot restore`);
//! * [`hash`]: the logical backend hash (Maintenance.Hash);
//! * [`backup`]: the backup file Maintenance.Snapshot streams and restore reads;
//! * [`alarm`]: the replicated alarm set (NOSPACE caps writes that add data);
//! * [`validate`]: etcd's request checks done before proposing;
//! * [`watch`]: the watch multiplexer ([`watch::WatchHub`]), reading history back through
//!   [`Store::events_between`] (`history.rs`).
#![deny(missing_docs)]

pub mod alarm;
mod apply;
pub mod auth;
pub mod backend;
pub mod bbolt;
pub mod backup;
mod compactor;
pub mod crc32;
mod error;
pub mod engine;
pub mod etcd_db;
pub mod hash;
mod history;
pub mod index;
pub mod key_index;
pub mod kube;
pub mod lease;
pub mod lease_queue;
pub mod pagestore;
mod range;
mod rebuild;
mod restore;
mod rev_list;
pub mod revision;
pub mod seed;
pub mod sled_backend;
pub mod snapshot;
mod store;
pub mod txn;
pub mod validate;
pub mod watch;
mod write_txn;

pub use alarm::Alarms;
pub use apply::ApplyResponse;
pub use engine::StorageEngine;
pub use error::{Error, Result};
pub use history::History;
pub use lease::{LeaseInfo, MAX_LEASE_TTL};
pub use revision::Revision;
pub use store::{Store, StoreConfig};
pub use write_txn::Change;
