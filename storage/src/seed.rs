//! Seeding a new store from a backup: the step `cairn snapshot restore` shares between
//! snapshot formats. A format reader (a cairn backup: [`Dataset::from_backup`]; an etcd
//! bbolt file through `etcd_db::import_snapshot`, whose stream goes the same way)
//! produces a [`Dataset`] — the key bucket, the leases, the compaction revision, the auth
//! state and the alarms — and [`write_store`] turns it into a fresh store folder.
//!
//! The key bucket is kept in the on-disk form cairn and etcd share: revision bytes
//! (`revision.rs`: 17 bytes, 18 with the tombstone mark) → an encoded `mvccpb.KeyValue`,
//! so a reader of etcd's `key` bucket can hand its entries over unchanged.
//!
//! What is *not* carried: the applied index (the new store starts at 0 and its member's
//! Raft log at the beginning, as after etcd's restore) and the member table (the new
//! member builds a fresh one from its flags). Alarms are kept as etcd's restore keeps them
//! (its `alarm` bucket travels in the db), even when they name members of the old cluster.

use std::path::Path;

use cairn_proto::cairnpb::LeaseRecord;
use prost::Message;

use crate::backend::{Bucket, WriteBatch};
use crate::backup::Backup;
use crate::engine::{open_backend, StorageEngine};
use crate::error::{Error, Result};
use crate::revision::Revision;
use crate::alarm::META_ALARMS;
use crate::store::{Store, StoreConfig, META_AUTH, META_COMPACT_SCHEDULED, META_CURRENT_REV};

/// A store's logical contents, as any snapshot format can provide them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Dataset {
    /// The key bucket: revision bytes → encoded `mvccpb.KeyValue`, in revision order.
    pub key_bucket: Vec<(Vec<u8>, Vec<u8>)>,
    /// Every lease.
    pub leases: Vec<LeaseRecord>,
    /// The compaction revision (-1: never compacted).
    pub compact_revision: i64,
    /// The store revision (at least the newest revision of the key bucket).
    pub revision: i64,
    /// The auth state (users, roles, enabled flag, auth revision) as the store keeps it
    /// (an encoded `cairnpb.AuthState`); `None`: none recorded.
    pub auth: Option<Vec<u8>>,
    /// The active alarms as the store keeps them (an encoded `cairnpb.AlarmList`).
    pub alarms: Option<Vec<u8>>,
}

fn meta_i64(v: &[u8]) -> Result<i64> {
    let b: [u8; 8] = v.try_into().map_err(|_| Error::corrupt("backup meta", format!("{} bytes", v.len())))?;
    Ok(i64::from_be_bytes(b))
}

impl Dataset {
    /// The dataset of a verified cairn backup.
    pub fn from_backup(b: &Backup) -> Result<Dataset> {
        let mut d = Dataset { compact_revision: -1, revision: 1, ..Dataset::default() };
        for (bucket, k, v) in &b.entries {
            match bucket {
                Bucket::Key => {
                    let (rev, _) = Revision::from_bytes(k)?;
                    d.revision = d.revision.max(rev.main);
                    d.key_bucket.push((k.clone(), v.clone()));
                }
                Bucket::Lease => d.leases.push(LeaseRecord::decode(v.as_slice()).map_err(|e| Error::corrupt("backup lease", e))?),
                // a compaction recorded but not finished is finished by the new store
                Bucket::Meta if k.as_slice() == META_COMPACT_SCHEDULED => d.compact_revision = d.compact_revision.max(meta_i64(v)?),
                Bucket::Meta if k.as_slice() == META_CURRENT_REV => d.revision = d.revision.max(meta_i64(v)?),
                Bucket::Meta if k.as_slice() == META_AUTH => d.auth = Some(v.clone()),
                Bucket::Meta if k.as_slice() == META_ALARMS => d.alarms = Some(v.clone()),
                Bucket::Meta => {}
            }
        }
        Ok(d)
    }
}

/// Writes `d` into a new store in `dir` (which must not hold one) on `engine`, then opens
/// it once, which rebuilds the index from every entry: a dataset that does not decode is
/// refused here with [`Error::Corrupt`]. Returns the opened store's revision.
pub fn write_store(dir: &Path, engine: StorageEngine, d: &Dataset) -> Result<i64> {
    if crate::engine::detect(dir)?.is_some() {
        return Err(Error::corrupt("restore target", format!("{} already holds a store", dir.display())));
    }
    {
        let backend = open_backend(dir, engine)?;
        let mut batch = WriteBatch::default();
        for (k, v) in &d.key_bucket {
            batch.put(Bucket::Key, k.clone(), v.clone());
        }
        for l in &d.leases {
            batch.put(Bucket::Lease, (l.id as u64).to_be_bytes().to_vec(), l.encode_to_vec());
        }
        batch.put(Bucket::Meta, META_CURRENT_REV.to_vec(), d.revision.to_be_bytes().to_vec());
        if d.compact_revision >= 0 {
            // scheduled, not finished: the store's compactor deletes what the compaction
            // no longer keeps at its first open
            batch.put(Bucket::Meta, META_COMPACT_SCHEDULED.to_vec(), d.compact_revision.to_be_bytes().to_vec());
        }
        for (key, value) in [(META_AUTH, &d.auth), (META_ALARMS, &d.alarms)] {
            if let Some(v) = value {
                batch.put(Bucket::Meta, key.to_vec(), v.clone());
            }
        }
        backend.write(batch)?;
        backend.sync()?;
    }
    let mut cfg = StoreConfig::new(dir);
    cfg.engine = engine;
    let store = Store::open(cfg)?;
    let rev = store.revision();
    store.sync_backend()?;
    Ok(rev)
}
