//! etcd's backend schema on top of the bbolt format ([`crate::bbolt`]): importing an etcd
//! db or snapshot file into the form cairn's store restores from (a cairn snapshot stream,
//! see `snapshot.rs`, installed with [`crate::Store::restore`]), and exporting a cairn
//! snapshot stream as a file etcd's `snapshot status` and `snapshot restore` accept.
//!
//! * `import.rs`: etcd file → [`Imported`] (a cairn stream and what etcd recorded);
//! * `export.rs`: a cairn read view → etcd file, streamed page by page ([`EtcdExport`]:
//!   what Maintenance.Snapshot sends);
//! * `hash.rs`: the SHA-256 trailer of snapshot files;
//! * `status.rs`: what `etcdctl snapshot status` reports about a file;
//! * `wal.rs`: etcd's WAL, read (an etcd data folder's log after its db file);
//! * `replay.rs`: that log tail applied to a store as cairn commands.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let (path, store) = ("snapshot.db", cairn_storage::Store::open(cairn_storage::StoreConfig::new("d"))?);
//! use cairn_storage::etcd_db;
//! // in: a file `etcdctl snapshot save` wrote (or etcd's member/snap/db, with import_db)
//! let imported = etcd_db::import_snapshot(std::fs::read(path)?)?;
//! store.restore(imported.consistent_index, &imported.snapshot)?;
//! // out: a file `etcdctl snapshot status` and `etcdctl snapshot restore` accept
//! let (_, stream) = store.snapshot_bytes()?;
//! std::fs::write(path, etcd_db::export_snapshot(&stream)?)?;
//! # Ok(())
//! # }
//! ```
//!
//! # etcd's buckets (3.4 and 3.5), as read and written here
//! ```text
//! key              17-byte revision: main u64 BE, b'_', sub u64 BE (+ b't' for a
//!                  tombstone)  →  mvccpb.KeyValue (a tombstone's holds only the key)
//! meta             "consistent_index"     → u64 BE, the last applied Raft index
//!                  "scheduledCompactRev"  → 17-byte revision (main, 0)
//!                  "finishedCompactRev"   → 17-byte revision (main, 0)
//!                  "term" (3.5)           → u64 BE;  "confState" (3.5) → JSON
//! lease            lease ID as u64 BE  →  leasepb.Lease {ID, TTL, RemainingTTL}
//! members          member ID in hex  →  JSON {id, peerURLs, name, clientURLs, ...}
//! members_removed  member ID in hex  →  "removed"
//! cluster          "clusterVersion" → "3.4.0";  "downgrade" (3.5) → JSON
//! alarm            etcdserverpb.AlarmMember  →  empty
//! auth             "authEnabled" → 1 byte;  "authRevision" → u64 BE
//! authUsers        user name  →  authpb.User
//! authRoles        role name  →  authpb.Role
//! ```
//! cairn's key bucket is etcd's byte for byte (same revision keys, same `KeyValue`
//! values), and so is its lease bucket's key; its lease records carry the same three
//! fields under the same numbers. Import and export translate the meta bucket (cairn's
//! keys are in `store.rs`), re-encode the lease records through their own types, and
//! carry users, roles, the auth flag and revision and the alarms between etcd's `auth*`
//! and `alarm` buckets and cairn's `auth` and `alarms` meta records.
//!
//! # What does not travel
//! * cairn's store revision when it is above both the newest key revision and the
//!   compaction: etcd derives its revision from those two, as cairn's rebuild does;
//! * membership: the export writes cairn's member table as etcd's `members` buckets, but
//!   both restores build a new one; an import keeps etcd's `members` and `cluster`
//!   buckets (and the others) verbatim in [`Imported::other_buckets`] for the caller.

//! # Cost, measured
//! `etcd_db_cost_at_a_million_revisions` (ignored; `cargo test --release -p cairn-storage
//! --lib etcd_db_cost -- --ignored --nocapture`): 2^20 revisions of 200-byte values under
//! Kubernetes-like keys, a 275 MB cairn stream, become a 294 MB etcd file in 2.8–3.8 s
//! (export, SHA-256 included) and are imported back in 1.3–2.0 s (two runs on a 2-core
//! VM shared with other builds; measured with the in-memory writer this module had
//! then). Maintenance.Snapshot's export streams ([`EtcdExport`]: one page in memory plus
//! the layout, ~1% of the data); [`export_db`] (converting a saved cairn-format file)
//! holds the entries and the file, and an import the file and the stream.

mod export;
mod hash;
mod import;
mod replay;
mod status;
#[cfg(test)]
mod tests;
mod wal;
#[cfg(test)]
mod wal_tests;

pub use export::{export_db, export_snapshot, EtcdExport};
pub use hash::{append_sha256, open_snapshot_file, split_sha256, Sha256Writer};
pub use import::{import_db, import_entries, import_snapshot, EntrySink, Imported};
pub use replay::{replay, to_cairn, Replayed, Translated};
pub use status::{db_status, file_status, DbStatus};
pub use wal::{read_wal, wal_files, EtcdWal, WalError};

/// The buckets of etcd's schema.
pub const BUCKET_KEY: &[u8] = b"key";
/// etcd's meta bucket.
pub const BUCKET_META: &[u8] = b"meta";
/// etcd's lease bucket.
pub const BUCKET_LEASE: &[u8] = b"lease";
/// Buckets etcd 3.4 creates besides key, meta and lease (an export writes them empty).
pub const OTHER_BUCKETS: [&[u8]; 7] = [b"alarm", b"auth", b"authRoles", b"authUsers", b"cluster", b"members", b"members_removed"];

pub(crate) const META_CONSISTENT_INDEX: &[u8] = b"consistent_index";
pub(crate) const META_SCHEDULED_COMPACT: &[u8] = b"scheduledCompactRev";
pub(crate) const META_FINISHED_COMPACT: &[u8] = b"finishedCompactRev";
pub(crate) const META_TERM: &[u8] = b"term";

/// Why an etcd file could not be imported or a cairn snapshot exported.
#[derive(Debug, thiserror::Error)]
pub enum EtcdDbError {
    /// The file is not a readable bbolt file.
    #[error("{0}")]
    Bbolt(#[from] crate::bbolt::BboltError),
    /// Reading or writing the file failed.
    #[error("etcd db: {0}")]
    Io(#[from] std::io::Error),
    /// The snapshot's SHA-256 trailer does not match its contents.
    #[error("SHA-256 mismatch, the file is corrupt or truncated (expected {expected}, got {actual})")]
    HashMismatch {
        /// The trailer, in hex.
        expected: String,
        /// The hash of the contents, in hex.
        actual: String,
    },
    /// A bucket every etcd db has is missing.
    #[error("etcd db: bucket {0:?} missing")]
    MissingBucket(&'static str),
    /// A bucket holds a nested bucket where etcd writes values.
    #[error("etcd db: bucket {0:?} holds a nested bucket")]
    NestedBucket(&'static str),
    /// A meta value of the wrong size.
    #[error("etcd db: meta {key:?} has {len} bytes")]
    BadMeta {
        /// The meta key.
        key: &'static str,
        /// Its value's length.
        len: usize,
    },
    /// A key-bucket key that is not a revision.
    #[error("etcd db: key bucket: {0}")]
    BadRevision(crate::Error),
    /// A lease record that does not decode.
    #[error("etcd db: lease bucket: {0}")]
    BadLease(#[from] prost::DecodeError),
    /// A lease record stored under another key than its ID.
    #[error("etcd db: lease {id} stored under key {key:?}")]
    LeaseKeyMismatch {
        /// The record's ID.
        id: i64,
        /// The key it is stored under.
        key: Vec<u8>,
    },
    /// The cairn snapshot stream to export does not verify or decode.
    #[error("cairn snapshot: {0}")]
    BadStream(crate::Error),
    /// The sink of [`import_entries`] refused an entry.
    #[error("{0}")]
    Sink(crate::Error),
}

impl From<EtcdDbError> for crate::Error {
    fn from(e: EtcdDbError) -> crate::Error {
        match e {
            EtcdDbError::Io(e) => crate::Error::from(e),
            e => crate::Error::corrupt("etcd db", e),
        }
    }
}
