//! Seeding a new store from a backup: the step `cairn snapshot restore` shares between
//! snapshot formats. A format reader hands the entries of a cairn snapshot stream
//! (`snapshot.rs`), one at a time, to a [`Seeder`]: a cairn backup's stream as it is read
//! (`backup::read_backup_file`), an etcd bbolt file's through
//! `etcd_db::import_entries`. The seeder writes them to a fresh store folder in batches of
//! about [`SEED_BATCH_BYTES`], each committed, so memory does not grow with the backup;
//! what it keeps ([`StreamMeta`]: the revision, the compaction revision, the auth state
//! and the alarms) it writes last, then opens the store once, which rebuilds the index
//! from every entry.
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
use std::sync::Arc;

use cairn_proto::cairnpb::LeaseRecord;
use prost::Message;

use crate::alarm::META_ALARMS;
use crate::backend::{Backend, Bucket, WriteBatch};
use crate::engine::{open_backend, StorageEngine};
use crate::error::{Error, Result};
use crate::revision::Revision;
use crate::store::{Store, StoreConfig, META_AUTH, META_COMPACT_SCHEDULED, META_CURRENT_REV};

/// A [`Seeder`] writes its entries once they add up to this many bytes.
pub const SEED_BATCH_BYTES: usize = 8 << 20;

/// What a snapshot stream says besides its key and lease entries, gathered as the
/// entries go by ([`StreamMeta::note`]).
#[derive(Clone, Debug, PartialEq)]
pub struct StreamMeta {
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

impl Default for StreamMeta {
    fn default() -> Self {
        StreamMeta { compact_revision: -1, revision: 1, auth: None, alarms: None }
    }
}

fn meta_i64(v: &[u8]) -> Result<i64> {
    let b: [u8; 8] = v.try_into().map_err(|_| Error::corrupt("backup meta", format!("{} bytes", v.len())))?;
    Ok(i64::from_be_bytes(b))
}

impl StreamMeta {
    /// Takes one entry of the stream into account: a key's revision, a lease that must
    /// decode, the meta records kept. Returns the lease, decoded.
    pub fn note(&mut self, bucket: Bucket, k: &[u8], v: &[u8]) -> Result<Option<LeaseRecord>> {
        match bucket {
            Bucket::Key => {
                let (rev, _) = Revision::from_bytes(k)?;
                self.revision = self.revision.max(rev.main);
            }
            Bucket::Lease => return Ok(Some(LeaseRecord::decode(v).map_err(|e| Error::corrupt("backup lease", e))?)),
            // a compaction recorded but not finished is finished by the new store
            Bucket::Meta if k == META_COMPACT_SCHEDULED => self.compact_revision = self.compact_revision.max(meta_i64(v)?),
            Bucket::Meta if k == META_CURRENT_REV => self.revision = self.revision.max(meta_i64(v)?),
            Bucket::Meta if k == META_AUTH => self.auth = Some(v.to_vec()),
            Bucket::Meta if k == META_ALARMS => self.alarms = Some(v.to_vec()),
            Bucket::Meta => {}
        }
        Ok(None)
    }
}

/// Writes a new store from a snapshot stream's entries as they come (module docs).
pub struct Seeder {
    dir: std::path::PathBuf,
    engine: StorageEngine,
    backend: Arc<dyn Backend>,
    batch: WriteBatch,
    batch_bytes: usize,
    meta: StreamMeta,
}

impl Seeder {
    /// Starts a new store in `dir` (which must not hold one) on `engine`.
    pub fn create(dir: &Path, engine: StorageEngine) -> Result<Seeder> {
        if crate::engine::detect(dir)?.is_some() {
            return Err(Error::corrupt("restore target", format!("{} already holds a store", dir.display())));
        }
        let backend = open_backend(dir, engine)?;
        Ok(Seeder { dir: dir.to_owned(), engine, backend, batch: WriteBatch::default(), batch_bytes: 0, meta: StreamMeta::default() })
    }

    /// Takes the stream's next entry: key entries and leases are written (a batch at a
    /// time), meta records noted for [`Seeder::finish`].
    pub fn entry(&mut self, bucket: Bucket, k: &[u8], v: &[u8]) -> Result<()> {
        let lease = self.meta.note(bucket, k, v)?;
        match (bucket, lease) {
            (Bucket::Key, _) => self.put(Bucket::Key, k.to_vec(), v.to_vec()),
            (Bucket::Lease, Some(l)) => self.put(Bucket::Lease, (l.id as u64).to_be_bytes().to_vec(), l.encode_to_vec()),
            _ => Ok(()),
        }
    }

    fn put(&mut self, bucket: Bucket, k: Vec<u8>, v: Vec<u8>) -> Result<()> {
        self.batch_bytes += k.len() + v.len();
        self.batch.put(bucket, k, v);
        if self.batch_bytes >= SEED_BATCH_BYTES {
            // committed at once: a backend holds what was written since its last commit
            // in memory (the page store's open transaction)
            self.backend.write(std::mem::take(&mut self.batch))?;
            self.backend.sync()?;
            self.batch_bytes = 0;
        }
        Ok(())
    }

    /// Writes what is left and the meta records, syncs, then opens the store once, which
    /// rebuilds the index from every entry: entries that do not decode are refused here
    /// with [`Error::Corrupt`]. Returns the opened store's revision.
    pub fn finish(mut self) -> Result<i64> {
        let m = std::mem::take(&mut self.meta);
        self.batch.put(Bucket::Meta, META_CURRENT_REV.to_vec(), m.revision.to_be_bytes().to_vec());
        if m.compact_revision >= 0 {
            // scheduled, not finished: the store's compactor deletes what the compaction
            // no longer keeps at its first open
            self.batch.put(Bucket::Meta, META_COMPACT_SCHEDULED.to_vec(), m.compact_revision.to_be_bytes().to_vec());
        }
        for (key, value) in [(META_AUTH, m.auth), (META_ALARMS, m.alarms)] {
            if let Some(v) = value {
                self.batch.put(Bucket::Meta, key.to_vec(), v);
            }
        }
        let Seeder { dir, engine, backend, batch, .. } = self;
        backend.write(batch)?;
        backend.sync()?;
        drop(backend);
        let mut cfg = StoreConfig::new(&dir);
        cfg.engine = engine;
        let store = Store::open(cfg)?;
        let rev = store.revision();
        store.sync_backend()?;
        Ok(rev)
    }
}
