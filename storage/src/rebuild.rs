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
//! # Start-up
//! Start-up time is mostly this function at millions of keys. The key bucket is keyed by
//! revision, so its entries come in revision order, not key order; the index is built in
//! bulk from key-sorted runs rather than by one tree descent per entry:
//! 1. a second thread scans the key bucket with [`Backend::scan_bulk`] (the page store
//!    reads leaves without its node cache and walks their bytes in place) and decodes each
//!    value's head (key, creation revision, version, lease; the value bytes are skipped);
//! 2. this thread collects the records in runs of [`SORTED_RUN`], sorting each by key
//!    (stable: a key's records stay in revision order) while the scan goes on;
//! 3. the keys are split at a pivot, and each of two threads merges its share of every run
//!    (a k-way merge, ties to the older run: `merged`), building each key's history with
//!    the same [`KeyIndex`] steps the entries would take one by one (`build_part`);
//! 4. the tree is built bottom-up from the key-ordered histories (`TreeIndex::from_sorted`).
//!
//! A key's history depends only on its own records in revision order, which every step
//! keeps, so the result is the index the entries would build one at a time (a test checks
//! this against that reference on random histories with compaction: `rebuild_tests.rs`).

use std::cmp::Ordering;
use std::collections::binary_heap::{BinaryHeap, PeekMut};
use std::sync::mpsc;
use std::sync::Arc;

use cairn_proto::cairnpb::LeaseRecord;
use prost::Message;

use crate::alarm::{Alarms, META_ALARMS};
use crate::backend::{Backend, Bucket, ScanFn};
use crate::error::{Error, Result};
use crate::index::TreeIndex;
use crate::key_index::KeyIndex;
use crate::lease::LeaseTable;
use crate::range::KeyValueHead;
use crate::revision::Revision;
use crate::auth::AuthState;
use crate::store::{META_APPLIED_INDEX, META_AUTH, META_COMPACT_FINISHED, META_COMPACT_SCHEDULED, META_CURRENT_REV, META_MEMBERS};

#[cfg(test)]
#[path = "rebuild_tests.rs"]
mod tests;

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
        self.0.scan_bulk(bucket, visit)
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

/// Key-bucket entries handed from the scanner to the collector per message.
const SCAN_BATCH: usize = 4096;
/// Records per run: the collector sorts each run by key as soon as it is full (while the
/// scanner goes on); the runs are merged at the end. (Small in tests, so that their
/// histories make several runs.)
const SORTED_RUN: usize = if cfg!(test) { 64 } else { 1 << 16 };

/// One decoded key-bucket entry.
struct Scanned {
    rev: Revision,
    tombstone: bool,
    /// The stored value without its value bytes (skipped, not copied).
    head: KeyValueHead,
}

/// One key-bucket entry as the index build sorts it.
struct Rec {
    key: Arc<[u8]>,
    rev: Revision,
    tombstone: bool,
    created: i64,
    version: i64,
    lease: i64,
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

/// The key index and what else the key bucket decides.
struct KeyState {
    index: TreeIndex,
    /// The newest revision (main) of any entry (0 when none).
    max_rev: i64,
    /// Each key's lease (that of its newest value, when it is not a tombstone), key order.
    leases: Vec<(Arc<[u8]>, i64)>,
}

/// Part of the index built from one key range ([`build_part`]).
struct Part {
    keys: Vec<(Arc<[u8]>, Arc<KeyIndex>)>,
    leases: Vec<(Arc<[u8]>, i64)>,
}

/// Builds the histories of the keys of `records` (in key order, each key's records in
/// revision order). A key's records are applied in revision order with the rules of the
/// rebuild one entry at a time: its first record restores the generation it starts (the stored
/// creation revision and version: compaction may have removed the revisions that counted
/// them); a later put is a put, a tombstone a tombstone; a tombstone first is corrupt.
fn build_part(records: impl Iterator<Item = Rec>) -> Result<Part> {
    let mut part = Part { keys: Vec::new(), leases: Vec::new() };
    // (key, history, lease of the newest record)
    let mut cur: Option<(Arc<[u8]>, KeyIndex, i64)> = None;
    let finish = |part: &mut Part, (key, mut ki, lease): (Arc<[u8]>, KeyIndex, i64)| {
        ki.shrink_to_fit();
        if lease != 0 {
            part.leases.push((key.clone(), lease));
        }
        part.keys.push((key, Arc::new(ki)));
    };
    for r in records {
        match &mut cur {
            Some((key, ki, lease)) if **key == *r.key => {
                if r.tombstone {
                    ki.tombstone(r.rev)?;
                    *lease = 0;
                } else {
                    ki.put(r.rev)?;
                    *lease = r.lease;
                }
            }
            _ => {
                if let Some(done) = cur.take() {
                    finish(&mut part, done);
                }
                if r.tombstone {
                    return Err(Error::corrupt("key index", "tombstone of an unknown key"));
                }
                let mut ki = KeyIndex::default();
                ki.restore(Revision::new(r.created, 0), r.rev, r.version)?;
                cur = Some((r.key, ki, r.lease));
            }
        }
    }
    if let Some(done) = cur.take() {
        finish(&mut part, done);
    }
    Ok(part)
}

fn by_key(a: &Rec, b: &Rec) -> Ordering {
    a.key.cmp(&b.key)
}

/// A run's next record in [`merged`]'s heap, ordered so that the greatest is the smallest
/// key and, of equal keys, the one of the earlier (older) run.
struct Head {
    rec: Rec,
    run: usize,
}

impl Ord for Head {
    fn cmp(&self, o: &Self) -> Ordering {
        o.rec.key.cmp(&self.rec.key).then(o.run.cmp(&self.run))
    }
}

impl PartialOrd for Head {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

impl PartialEq for Head {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}

impl Eq for Head {}

/// The records of `runs` in key order, each key's records oldest first. Each run is sorted
/// by key (stably: a key's records in revision order), and run `i`'s records are older
/// than run `i + 1`'s.
fn merged(runs: Vec<Vec<Rec>>) -> impl Iterator<Item = Rec> {
    let mut iters: Vec<_> = runs.into_iter().map(Vec::into_iter).collect();
    let mut heap = BinaryHeap::with_capacity(iters.len());
    for (run, it) in iters.iter_mut().enumerate() {
        if let Some(rec) = it.next() {
            heap.push(Head { rec, run });
        }
    }
    std::iter::from_fn(move || {
        let mut top = heap.peek_mut()?;
        Some(match iters[top.run].next() {
            Some(next) => std::mem::replace(&mut top.rec, next),
            None => PeekMut::pop(top).rec,
        })
    })
}

fn joined<T>(h: std::thread::ScopedJoinHandle<'_, Result<T>>) -> Result<T> {
    h.join().unwrap_or_else(|_| Err(Error::corrupt("rebuild", "a rebuild thread panicked")))
}

/// Builds the key index from the key bucket (module docs, "Start-up").
fn rebuild_keys(c: &(dyn Contents + Sync)) -> Result<KeyState> {
    let started = std::time::Instant::now();
    let (tx, rx) = mpsc::sync_channel::<Vec<Scanned>>(4);
    let mut max_rev = 0i64;
    let mut runs: Vec<Vec<Rec>> = Vec::new();
    let scanned = std::thread::scope(|scope| {
        let scanner = scope.spawn(move || scan_key_bucket(c, &tx));
        let mut run = Vec::with_capacity(SORTED_RUN);
        // ends when the scanner is done (or failed: its error is reported below)
        for batch in rx {
            for e in batch {
                max_rev = max_rev.max(e.rev.main);
                let h = e.head;
                run.push(Rec { key: h.key.into(), rev: e.rev, tombstone: e.tombstone, created: h.create_revision, version: h.version, lease: h.lease });
                if run.len() == SORTED_RUN {
                    run.sort_by(by_key);
                    runs.push(std::mem::replace(&mut run, Vec::with_capacity(SORTED_RUN)));
                }
            }
        }
        if !run.is_empty() {
            run.sort_by(by_key);
            runs.push(run);
        }
        joined(scanner)
    });
    scanned?;
    let records: usize = runs.iter().map(Vec::len).sum();
    let scan_ms = started.elapsed().as_millis() as u64;

    // Two threads, each merging its share of every run: the keys below a pivot (the median
    // of the runs' middle keys), and the rest.
    let mut samples: Vec<Arc<[u8]>> = runs.iter().map(|r| r[r.len() / 2].key.clone()).collect();
    samples.sort();
    let (lo_runs, hi_runs): (Vec<_>, Vec<_>) = match samples.get(samples.len() / 2) {
        Some(pivot) => runs
            .into_iter()
            .map(|mut r| {
                let hi = r.split_off(r.partition_point(|x| x.key < *pivot));
                (r, hi)
            })
            .unzip(),
        None => (Vec::new(), Vec::new()),
    };
    drop(samples);
    let (lo, hi) = std::thread::scope(|scope| {
        let h = scope.spawn(move || build_part(merged(hi_runs)));
        let lo = build_part(merged(lo_runs));
        (lo, joined(h))
    });
    let (mut lo, mut hi) = (lo?, hi?);
    lo.keys.append(&mut hi.keys);
    lo.leases.append(&mut hi.leases);
    let index = TreeIndex::from_sorted(lo.keys)?;
    tracing::info!(records, keys = index.len(), scan_ms, total_ms = started.elapsed().as_millis() as u64, "key index rebuilt");
    Ok(KeyState { index, max_rev, leases: lo.leases })
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

    let keys = rebuild_keys(c)?;
    current_rev = current_rev.max(keys.max_rev);

    let mut lessor = LeaseTable::new(min_lease_ttl);
    c.scan_all(Bucket::Lease, &mut |_, v| {
        let r = LeaseRecord::decode(v).map_err(|e| Error::corrupt("lease bucket value", e))?;
        lessor.restore(r.id, r.ttl, r.remaining_ttl);
        Ok(true)
    })?;
    // attached in key order
    for (k, id) in &keys.leases {
        lessor.set_key_lease(k, *id);
    }
    Ok(Rebuilt {
        index: keys.index,
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
