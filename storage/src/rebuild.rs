//! Deriving the store's in-memory state from backend contents (etcd: `store.restore` in
//! `kvstore.go`). One function serves both places that need it, so they cannot drift:
//! * [`Store::open_with`](crate::Store::open_with) rebuilds from the backend;
//! * [`Store::restore`](crate::Store::restore) rebuilds from a verified snapshot image
//!   *before* it touches the store, so a snapshot whose entries do not decode is refused
//!   with the store unchanged.
//!
//! What is derived: the key index (every revision of the key bucket, in revision order),
//! the current revision (the greater of the stored one and the newest key revision), the
//! leases and which keys each holds (a key's lease is the one of its newest value; a
//! tombstone detaches it), the alarms, and the Meta values (see `store.rs` for the Meta keys).
//!
//! Start-up time is mostly this function at millions of keys: the key bucket is scanned
//! and decoded (values skipped, not copied) on a second thread while the caller's thread
//! builds the index in one batch, one tree descent per entry.

use std::collections::HashMap;
use std::sync::mpsc;

use cairn_proto::cairnpb::LeaseRecord;
use prost::Message;

use crate::alarm::{Alarms, META_ALARMS};
use crate::backend::{Backend, Bucket, ScanFn};
use crate::error::{Error, Result};
use crate::index::TreeIndex;
use crate::lease::LeaseTable;
use crate::range::KeyValueHead;
use crate::revision::Revision;
use crate::auth::AuthState;
use crate::store::{META_APPLIED_INDEX, META_AUTH, META_COMPACT_FINISHED, META_COMPACT_SCHEDULED, META_CURRENT_REV, META_MEMBERS};

/// Backend contents to rebuild from: a live backend, or a snapshot image.
pub(crate) trait Contents {
    /// The value of `key` in `bucket`.
    fn get(&self, bucket: Bucket, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Visits every entry of `bucket` in key order.
    fn scan_all(&self, bucket: Bucket, visit: &mut ScanFn<'_>) -> Result<()>;
}

/// A live backend as [`Contents`].
pub(crate) struct BackendContents<'a>(pub &'a dyn Backend);

impl Contents for BackendContents<'_> {
    fn get(&self, bucket: Bucket, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.0.get(bucket, key)
    }

    fn scan_all(&self, bucket: Bucket, visit: &mut ScanFn<'_>) -> Result<()> {
        self.0.scan(bucket, &[], None, visit)
    }
}

/// Everything the store derives from its backend.
pub(crate) struct Rebuilt {
    pub index: TreeIndex,
    pub lessor: LeaseTable,
    /// `applied_index` (0 when absent).
    pub applied_index: u64,
    /// The store revision (1 for an empty store, as in etcd).
    pub current_rev: i64,
    /// `compact_scheduled` (-1 when nothing was ever compacted).
    pub compact_scheduled: i64,
    /// `compact_finished` (-1 when none finished).
    pub compact_finished: i64,
    /// The member list blob (`members`), if one was ever applied.
    pub members: Option<Vec<u8>>,
    /// The active alarms (`alarms`).
    pub alarms: Alarms,
    /// The auth state (`auth`; the initial one when absent).
    pub auth: AuthState,
}

/// Key-bucket entries handed from the scanner to the index builder per message.
const SCAN_BATCH: usize = 4096;

/// One decoded key-bucket entry.
struct Scanned {
    rev: Revision,
    tombstone: bool,
    /// The stored value without its value bytes (skipped, not copied).
    head: KeyValueHead,
}

/// Scans and decodes the key bucket in revision order into `tx`; stops early, without
/// error, once the receiver is gone.
fn scan_key_bucket(c: &(dyn Contents + Sync), tx: &mpsc::SyncSender<Vec<Scanned>>) -> Result<()> {
    let mut batch = Vec::with_capacity(SCAN_BATCH);
    let mut open = true;
    c.scan_all(Bucket::Key, &mut |k, v| {
        let (rev, tombstone) = Revision::from_bytes(k)?;
        let head = KeyValueHead::decode(v).map_err(|e| Error::corrupt("key bucket value", e))?;
        batch.push(Scanned { rev, tombstone, head });
        if batch.len() == SCAN_BATCH {
            open = tx.send(std::mem::replace(&mut batch, Vec::with_capacity(SCAN_BATCH))).is_ok();
        }
        Ok(open)
    })?;
    if open && !batch.is_empty() {
        let _receiver_gone_too = tx.send(batch);
    }
    Ok(())
}

/// Decodes an 8-byte big-endian Meta value.
pub(crate) fn meta_i64(c: &dyn Contents, key: &[u8]) -> Result<Option<i64>> {
    match c.get(Bucket::Meta, key)? {
        None => Ok(None),
        Some(v) => {
            let b: [u8; 8] = v
                .as_slice()
                .try_into()
                .map_err(|_| Error::corrupt("meta", format!("{}: {} bytes", String::from_utf8_lossy(key), v.len())))?;
            Ok(Some(i64::from_be_bytes(b)))
        }
    }
}

/// Rebuilds the in-memory state from `c` (see the module docs). Never panics on bad
/// contents: anything that does not decode or breaks an index invariant is
/// [`Error::Corrupt`].
pub(crate) fn rebuild(c: &(dyn Contents + Sync), min_lease_ttl: i64) -> Result<Rebuilt> {
    let applied_index = meta_i64(c, META_APPLIED_INDEX)?.unwrap_or(0);
    if applied_index < 0 {
        return Err(Error::corrupt("meta", format!("applied_index {applied_index}")));
    }
    // as in etcd, an empty store is at revision 1 (the first write makes revision 2) and
    // nothing is compacted (-1, so that even a compaction at 0 is accepted once)
    let mut current_rev = meta_i64(c, META_CURRENT_REV)?.unwrap_or(1);
    let compact_scheduled = meta_i64(c, META_COMPACT_SCHEDULED)?.unwrap_or(-1);
    let compact_finished = meta_i64(c, META_COMPACT_FINISHED)?.unwrap_or(-1);
    let members = c.get(Bucket::Meta, META_MEMBERS)?;
    let alarms = match c.get(Bucket::Meta, META_ALARMS)? {
        Some(b) => Alarms::decode(&b)?,
        None => Alarms::default(),
    };
    let auth = match c.get(Bucket::Meta, META_AUTH)? {
        None => AuthState::default(),
        Some(b) => AuthState::decode(&b).map_err(|e| Error::corrupt("meta auth", e))?,
    };

    // Two threads: this one builds the index (one batch: the new index is private until
    // returned, so nodes are built in place) while a scoped one scans and decodes the key
    // bucket, handing over entries in revision order, `SCAN_BATCH` at a time.
    let index = TreeIndex::new();
    let mut key_lease: HashMap<Vec<u8>, i64> = HashMap::new();
    let (tx, rx) = mpsc::sync_channel::<Vec<Scanned>>(4);
    let (scanned, built) = std::thread::scope(|scope| {
        let scanner = scope.spawn(move || scan_key_bucket(c, &tx));
        let built = index.batch(|b| {
            // ends when the scanner is done (or failed: its error is reported below)
            for batch in rx {
                for e in batch {
                    current_rev = current_rev.max(e.rev.main);
                    let kv = e.head;
                    if e.tombstone {
                        b.tombstone(&kv.key, e.rev)?;
                        key_lease.remove(&kv.key);
                        continue;
                    }
                    b.put_or_restore(&kv.key, e.rev, Revision::new(kv.create_revision, 0), kv.version)?;
                    if kv.lease != 0 {
                        key_lease.insert(kv.key, kv.lease);
                    } else {
                        key_lease.remove(&kv.key);
                    }
                }
            }
            Ok(())
        });
        // a failed build drops the receiver, which stops the scanner at its next send
        (scanner.join().unwrap_or_else(|_| Err(Error::corrupt("rebuild", "scanner thread panicked"))), built)
    });
    scanned?;
    built?;

    let mut lessor = LeaseTable::new(min_lease_ttl);
    c.scan_all(Bucket::Lease, &mut |_, v| {
        let r = LeaseRecord::decode(v).map_err(|e| Error::corrupt("lease bucket value", e))?;
        lessor.restore(r.id, r.ttl, r.remaining_ttl);
        Ok(true)
    })?;
    // attach in key order: the lessor's key sets do not depend on hash-map order
    let mut attached: Vec<_> = key_lease.into_iter().collect();
    attached.sort();
    for (k, id) in attached {
        lessor.set_key_lease(&k, id);
    }
    Ok(Rebuilt {
        index,
        lessor,
        applied_index: applied_index as u64,
        current_rev,
        compact_scheduled,
        compact_finished,
        members,
        alarms,
        auth,
    })
}
