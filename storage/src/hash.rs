//! The backend hash (Maintenance.Hash, `cairn snapshot status`).
//!
//! etcd hashes its whole bbolt file's buckets (CRC-32 over bucket names, keys and values,
//! skipping the meta keys that differ between members: consistent index and term). cairn's
//! files are not byte-identical across members (page layout depends on each member's
//! commit batching and defragmentation), so it hashes the *logical* content instead: a
//! CRC-32 (IEEE) over `bucket number, key, value` of every entry, bucket by bucket in key
//! order, from one read view. Members holding the same applied state agree; Meta's
//! `applied_index` and `compact_finished` are skipped (the first is where each member's
//! view was taken, the second tracks each member's background compactor).
//! `snapshot status` hashes every entry of a backup file the same way, skipping nothing.

use crate::backend::{Bucket, ReadView};
use crate::crc32::Crc32;
use crate::error::Result;
use crate::store::{META_APPLIED_INDEX, META_COMPACT_FINISHED};

/// A running hash over entries.
#[derive(Default)]
pub struct ContentHash(Crc32);

impl ContentHash {
    /// Adds one entry.
    pub fn entry(&mut self, bucket: Bucket, key: &[u8], value: &[u8]) {
        self.0.update(&[bucket as u8]);
        self.0.update(key);
        self.0.update(value);
    }

    /// The hash so far.
    pub fn finish(&self) -> u32 {
        self.0.finish()
    }
}

/// The Maintenance.Hash value of `view` (module docs).
pub fn hash_view(view: &dyn ReadView) -> Result<u32> {
    let mut h = ContentHash::default();
    for bucket in Bucket::ALL {
        view.scan(bucket, &[], None, &mut |k, v| {
            let skipped = bucket == Bucket::Meta && (k == META_APPLIED_INDEX || k == META_COMPACT_FINISHED);
            if !skipped {
                h.entry(bucket, k, v);
            }
            Ok(true)
        })?;
    }
    Ok(h.finish())
}
