//! The backend: what the MVCC store needs from a storage engine, and nothing more.
//!
//! A backend is a set of *buckets*, each an ordered map from bytes to bytes. Writes come in
//! [`WriteBatch`]es applied atomically (after a crash a batch is either all there or not at
//! all) and visible to reads as soon as `write` returns; `sync` makes every batch written
//! so far durable. Nothing is acknowledged to a client before a `sync` covering it returned.
//!
//! Point-in-time reads of single keys come from the MVCC layer above: the key bucket is
//! keyed by revision and its entries are never rewritten, only deleted by compaction, so a
//! reader at revision R sees the same bytes whatever is written after R. Whole-state reads
//! (Maintenance.Snapshot, a snapshot sent to a follower) take a [`ReadView`]: a consistent
//! state that later writes do not change, read while they go on.
//!
//! Space: `size` is the file space the backend holds, `size_in_use` the part holding live
//! data; `defragment` rewrites the live data compactly so the difference goes back to the
//! file system.
//!
//! Failures are sticky: after a failed `write` or `sync` every later call fails too, so
//! nothing is ever acknowledged on top of data that may be lost.

use crate::error::Result;

/// The buckets cairn keeps. The discriminant is part of the on-disk format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Bucket {
    /// Revision bytes → encoded `mvccpb.KeyValue` (see `revision.rs`).
    Key = 1,
    /// Store metadata: applied index, current and compacted revisions.
    Meta = 2,
    /// Lease ID (8 bytes big-endian) → encoded `cairnpb.LeaseRecord`.
    Lease = 3,
}

impl Bucket {
    /// Every bucket, in on-disk order.
    pub const ALL: [Bucket; 3] = [Bucket::Key, Bucket::Meta, Bucket::Lease];
}

/// One change of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchOp {
    /// Set `key` to `value` in `bucket`.
    Put(Bucket, Vec<u8>, Vec<u8>),
    /// Remove `key` from `bucket`.
    Delete(Bucket, Vec<u8>),
    /// Remove every key `k` of `bucket` with `from <= k < to` (nothing when `from >= to`),
    /// including keys put earlier in the same batch. A backend may drop whole stretches of
    /// the range without reading their entries (the compactor deletes the runs of
    /// revisions between those it keeps this way).
    DeleteRange(Bucket, Vec<u8>, Vec<u8>),
}

/// Changes applied atomically by [`Backend::write`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBatch {
    /// The changes, applied in order.
    pub ops: Vec<BatchOp>,
}

impl WriteBatch {
    /// Adds a put.
    pub fn put(&mut self, bucket: Bucket, key: Vec<u8>, value: Vec<u8>) {
        self.ops.push(BatchOp::Put(bucket, key, value));
    }

    /// Adds a delete.
    pub fn delete(&mut self, bucket: Bucket, key: Vec<u8>) {
        self.ops.push(BatchOp::Delete(bucket, key));
    }

    /// Adds a deletion of every key in `from..to` (see [`BatchOp::DeleteRange`]).
    pub fn delete_range(&mut self, bucket: Bucket, from: Vec<u8>, to: Vec<u8>) {
        self.ops.push(BatchOp::DeleteRange(bucket, from, to));
    }

    /// True when the batch changes nothing.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// Visitor for [`Backend::scan`]: gets each key and value; returns `Ok(false)` to stop.
pub type ScanFn<'a> = dyn FnMut(&[u8], &[u8]) -> Result<bool> + 'a;

/// A consistent, read-only state of a backend (see [`Backend::read_view`]). Dropping it
/// lets the backend reuse the space only it still needed.
pub trait ReadView: Send + Sync {
    /// The value of `key` in `bucket`.
    fn get(&self, bucket: Bucket, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Visits the entries of `bucket` with `start <= key < end` (`end == None`: to the
    /// end) in key order until the visitor returns `false`.
    fn scan(&self, bucket: Bucket, start: &[u8], end: Option<&[u8]>, visit: &mut ScanFn<'_>) -> Result<()>;

    /// Visits every entry of `bucket` in key order, for a one-off pass over all of it (a
    /// backup): the backend may read around the caches its writers use, so the pass
    /// neither evicts their data nor contends for the caches' locks. Same results as
    /// [`ReadView::scan`] of the whole bucket, which is the default.
    fn scan_all_uncached(&self, bucket: Bucket, visit: &mut ScanFn<'_>) -> Result<()> {
        self.scan(bucket, &[], None, visit)
    }

    /// Visits every key of `bucket` in key order with its value's length (a layout
    /// pass). As [`ReadView::scan_all_uncached`], and the backend may also skip
    /// verifying what it reads: a pass that uses the values must follow and check them.
    fn scan_value_lens(&self, bucket: Bucket, visit: &mut LenFn<'_>) -> Result<()> {
        self.scan_all_uncached(bucket, &mut |k, v| visit(k, v.len()))
    }
}

/// Visitor for [`ReadView::scan_value_lens`]: gets each key and its value's length;
/// returns `Ok(false)` to stop.
pub type LenFn<'a> = dyn FnMut(&[u8], usize) -> Result<bool> + 'a;

/// Streams every bucket of `view` to `out` in the snapshot format (see `snapshot.rs`);
/// returns the number of bytes written.
pub fn write_snapshot(view: &dyn ReadView, out: &mut dyn std::io::Write) -> Result<u64> {
    let mut w = crate::snapshot::SnapshotWriter::new(out)?;
    for bucket in Bucket::ALL {
        view.scan(bucket, &[], None, &mut |k, v| {
            w.entry(bucket, k, v)?;
            Ok(true)
        })?;
    }
    w.finish()
}

/// A storage engine under the MVCC store.
pub trait Backend: Send + Sync + 'static {
    /// The value of `key` in `bucket`.
    fn get(&self, bucket: Bucket, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Visits the entries of `bucket` with `start <= key < end` (`end == None`: to the
    /// end) in key order until the visitor returns `false`.
    fn scan(&self, bucket: Bucket, start: &[u8], end: Option<&[u8]>, visit: &mut ScanFn<'_>) -> Result<()>;

    /// Visits every entry of `bucket` in key order until the visitor returns `false`, for
    /// one pass over a whole bucket (the rebuild at start-up): a backend may read it
    /// without filling its caches and hand out entries without copying them. The default
    /// is [`Backend::scan`] over the whole bucket.
    fn scan_bulk(&self, bucket: Bucket, visit: &mut ScanFn<'_>) -> Result<()> {
        self.scan(bucket, &[], None, visit)
    }

    /// Applies `batch` atomically; visible to reads on return, durable after `sync`.
    fn write(&self, batch: WriteBatch) -> Result<()>;

    /// Makes every batch written so far durable (an fdatasync, not a page-cache flush).
    fn sync(&self) -> Result<()>;

    /// Bytes the backend occupies on disk.
    fn size(&self) -> u64;

    /// Bytes holding live data (≤ `size`).
    fn size_in_use(&self) -> u64;

    /// Bytes of the file up to its last used page: live data and the free space between,
    /// but not space preallocated past it (≤ `size`, ≥ `size_in_use`). This is what a
    /// bbolt file's size is, so the backend quota counts it (`--quota-backend-bytes`):
    /// deletes and compaction do not lower it, defragmentation does. Engines without
    /// preallocation answer `size`.
    fn size_allocated(&self) -> u64 {
        self.size()
    }

    /// Streams every bucket's entries to `out` in the snapshot format (see
    /// `snapshot.rs`); returns the number of bytes written.
    fn snapshot(&self, out: &mut dyn std::io::Write) -> Result<u64>;

    /// A view of every batch written before the call, unchanged by later writes, which go
    /// on while it is read. It may make those batches durable first (the page store
    /// commits them).
    fn read_view(&self) -> Result<Box<dyn ReadView>>;

    /// A view of the state as of the last [`Backend::sync`] that has returned (every batch
    /// written before that call), without making anything durable now: the caller never
    /// waits for an fdatasync. Default: [`Backend::read_view`] (then it also holds what was
    /// written since).
    fn synced_view(&self) -> Result<Box<dyn ReadView>> {
        self.read_view()
    }

    /// Rewrites the live data compactly and gives the rest of the space back to the file
    /// system; `size` shrinks towards `size_in_use`. Writes and reads go on meanwhile,
    /// except for a short pause while the rewritten state is swapped in. Every batch
    /// written before it returns is durable afterwards. A failure before the swap leaves
    /// the backend as it was; after it, the backend is failed (sticky).
    fn defragment(&self) -> Result<()>;
}
