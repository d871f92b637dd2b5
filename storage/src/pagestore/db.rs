//! One open page file: the committed state, the open write transaction over it, the
//! freelist, and the readers pinning older states.
//!
//! # Commit
//! Steps 1–4 run under the store's write lock ([`Db::prepare_commit`]); the meta write
//! and the fdatasync run without it ([`Prepared::make_durable`]), so reads and writes go
//! on meanwhile; step 7 takes it again ([`Db::finish_commit`]).
//! 1. release to the freelist the pending pages no open reader can see any more;
//! 2. spill every bucket's memory nodes into newly allocated spans (`btree.rs`);
//! 3. grow the file if the high-water mark passed its end (preallocated, in chunks);
//! 4. write the nodes;
//! 5. write the meta page `txid % 2`: new roots, high-water mark, and the number of nodes
//!    written with the sum of their checksums;
//! 6. one fdatasync;
//! 7. the spans the transaction copied from become pending under its txid.
//!
//! One fdatasync, not two (bbolt's nodes-sync-meta-sync): a power loss may keep the meta
//! and lose some nodes, so open takes the newest meta only if its commit is whole (the
//! nodes carrying its txid match its count and checksum sum, `commit_is_whole`), else the
//! other one, and overwrites the broken meta with it. Step 4 only wrote pages the previous
//! meta does not use (fresh pages, or pages freed by a commit it already includes), so
//! that one is intact. A torn meta page fails its own checksum. Any failure poisons the [`Db`] (the caller stops using it, see `mod.rs`): its
//! memory state is then not trusted until the file is reopened.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::btree::{self, Child, NodeReader, Spill};
use super::cache::NodeCache;
use super::freelist::{FreeSpans, Freelist, HashSpans};
use super::io::PageIo;
use super::meta::{Meta, META_PAGES};
use super::page::{Leaves, PageId, Span, PAGE_SIZE};
use super::walk;
use crate::backend::{BatchOp, Bucket, ScanFn, WriteBatch};
use crate::error::{Error, Result};

const PAGE: u64 = PAGE_SIZE as u64;

/// The open readers: pinned txid → how many views pin it. A leaf lock.
#[derive(Default)]
pub(crate) struct Readers {
    pinned: Mutex<BTreeMap<u64, usize>>,
}

impl Readers {
    fn pin(self: &Arc<Self>, txid: u64) -> Pin {
        *self.pinned.lock().entry(txid).or_default() += 1;
        Pin { readers: self.clone(), txid }
    }

    /// The oldest pinned txid, `u64::MAX` when nothing is pinned.
    fn oldest(&self) -> u64 {
        self.pinned.lock().keys().next().copied().unwrap_or(u64::MAX)
    }
}

/// Keeps a txid pinned while alive.
pub(crate) struct Pin {
    readers: Arc<Readers>,
    txid: u64,
}

impl Drop for Pin {
    fn drop(&mut self) {
        let mut pinned = self.readers.pinned.lock();
        if let Some(n) = pinned.get_mut(&self.txid) {
            *n -= 1;
            if *n == 0 {
                pinned.remove(&self.txid);
            }
        }
    }
}

/// A committed state, readable without any lock on the [`Db`]: its pages stay as they
/// are while the pin lives.
pub(crate) struct PinnedState {
    io: Arc<dyn PageIo>,
    cache: Arc<NodeCache>,
    meta: Meta,
    roots: [Option<Child>; 3],
    _pin: Pin,
}

impl PinnedState {
    fn reader(&self) -> NodeReader<'_> {
        NodeReader { io: self.io.as_ref(), cache: &self.cache, hwm: self.meta.hwm }
    }

    /// The value of `key` in `bucket`.
    pub(crate) fn get(&self, bucket: Bucket, key: &[u8]) -> Result<Option<Vec<u8>>> {
        btree::get(self.roots[slot(bucket)].as_ref(), self.reader(), key)
    }

    /// Visits `bucket`'s entries in `start..end`.
    pub(crate) fn scan(&self, bucket: Bucket, start: &[u8], end: Option<&[u8]>, visit: &mut ScanFn<'_>) -> Result<()> {
        btree::scan(self.roots[slot(bucket)].as_ref(), self.reader(), start, end, visit)
    }

    /// Visits every entry of `bucket` in key order, reading its nodes without the node
    /// cache and checking each leaf as `leaves` says (`walk.rs`); takes no lock.
    pub(crate) fn scan_uncached(&self, bucket: Bucket, leaves: Leaves, visit: &mut ScanFn<'_>) -> Result<()> {
        walk::scan_all(self.roots[slot(bucket)].as_ref(), walk::Source { io: self.io.as_ref(), hwm: self.meta.hwm, leaves }, visit)
    }

    /// How many nodes the shared node cache holds.
    #[cfg(test)]
    pub(crate) fn cached_nodes(&self) -> usize {
        self.cache.len()
    }
}

/// A node's checksum: its header bytes 0..4.
fn node_crc(buf: &[u8]) -> u64 {
    buf.get(0..4).map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u64)
}

/// True when every node commit `meta` wrote is on disk as written: the nodes of its trees
/// carrying its txid (a commit rewrites every node above a changed one, so the walk stops
/// at older nodes) are as many as it wrote, with the same checksum sum. A node that did
/// not land is stale (older txid), torn or zero, and the count or sum differs.
fn commit_is_whole(io: &dyn PageIo, meta: &Meta) -> bool {
    fn walk(io: &dyn PageIo, span: Span, meta: &Meta, depth: u8, nodes: &mut u32, sum: &mut u64) -> bool {
        if depth > 64 || span.end() > meta.hwm {
            return false;
        }
        let mut buf = vec![0u8; span.pages as usize * PAGE_SIZE];
        if io.read_at(span.start * PAGE, &mut buf).is_err() {
            return false;
        }
        let Ok(node) = super::page::decode(&buf, span, meta.hwm) else { return false };
        if super::page::node_txid(&buf) != meta.txid {
            return true; // written by an earlier, whole commit
        }
        *nodes += 1;
        *sum = sum.wrapping_add(node_crc(&buf));
        match node {
            super::page::DiskNode::Leaf(_) => true,
            super::page::DiskNode::Branch(_, e) => e.iter().all(|(_, child)| walk(io, *child, meta, depth + 1, nodes, sum)),
        }
    }
    if meta.txid == 0 {
        return true; // the empty store `create` made durable
    }
    let (mut nodes, mut sum) = (0u32, 0u64);
    let walked = meta.roots.iter().flatten().all(|root| walk(io, *root, meta, 0, &mut nodes, &mut sum));
    walked && nodes == meta.nodes && sum == meta.crc_sum
}

pub(crate) fn slot(bucket: Bucket) -> usize {
    match bucket {
        Bucket::Key => 0,
        Bucket::Meta => 1,
        Bucket::Lease => 2,
    }
}

fn roots_of(meta: &Meta) -> [Option<Child>; 3] {
    meta.roots.map(|r| r.map(Child::Disk))
}

/// A commit whose nodes are written but not yet durable (see [`Db::prepare_commit`]).
pub(crate) struct Prepared {
    meta: Meta,
    freed: Vec<Span>,
    io: Arc<dyn PageIo>,
}

impl Prepared {
    /// Steps 5 and 6: the meta write and the one fdatasync; needs no lock on the `Db`.
    /// An error poisons it.
    pub(crate) fn make_durable(&self) -> Result<()> {
        self.io.write_at(self.meta.slot() * PAGE, &self.meta.encode())?;
        self.io.sync()?;
        Ok(())
    }
}

/// How the file grows.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Growth {
    /// The smallest growth step in bytes (a multiple of the page size).
    pub min_step: u64,
    /// The largest growth step in bytes.
    pub max_step: u64,
}

impl Default for Growth {
    fn default() -> Self {
        Growth { min_step: 4 << 20, max_step: 128 << 20 }
    }
}

/// An open page file (module docs).
pub(crate) struct Db {
    io: Arc<dyn PageIo>,
    /// The last commit.
    meta: Meta,
    /// The high-water mark of the trees in `roots`: above `meta`'s while a commit is
    /// prepared but not finished.
    hwm: PageId,
    /// Each bucket's tree as the open write transaction left it.
    roots: [Option<Child>; 3],
    /// Spans the open transaction copied from (pending at its commit).
    freed: Vec<Span>,
    /// True when the open transaction changed something.
    dirty: bool,
    freelist: Freelist<HashSpans>,
    file_len: u64,
    readers: Arc<Readers>,
    /// Decoded nodes of this file, shared with its views.
    cache: Arc<NodeCache>,
    growth: Growth,
    /// Pages a leaf may span (`btree::Spill::leaf_pages`): 1, more while a
    /// defragmentation packs its copy.
    leaf_pages: usize,
}

impl Db {
    /// Writes an empty store (both meta pages, txid 0) into the empty file behind `io`
    /// and makes it durable.
    pub(crate) fn create(io: &dyn PageIo) -> Result<()> {
        let meta = Meta::empty();
        io.grow(META_PAGES * PAGE)?;
        io.write_at(0, &meta.encode())?;
        io.write_at(PAGE, &meta.encode())?;
        io.sync()?;
        Ok(())
    }

    /// Opens the store in the file behind `io`: the newest valid meta, and the freelist
    /// rebuilt from the trees it names (see `freelist/mod.rs`).
    pub(crate) fn open(io: Arc<dyn PageIo>, growth: Growth) -> Result<Db> {
        let file_len = io.len()?;
        let mut metas: Vec<(PageId, Meta)> = Vec::new();
        for slot in 0..META_PAGES {
            let mut buf = vec![0u8; PAGE_SIZE];
            if (slot + 1) * PAGE > file_len {
                continue;
            }
            io.read_at(slot * PAGE, &mut buf)?;
            if let Ok(m) = Meta::decode(&buf) {
                metas.push((slot, m));
            }
        }
        metas.sort_by_key(|(_, m)| std::cmp::Reverse(m.txid));
        let mut chosen = None;
        for (i, (_, m)) in metas.iter().enumerate() {
            if m.hwm.checked_mul(PAGE).is_some_and(|bytes| bytes <= file_len) && commit_is_whole(io.as_ref(), m) {
                chosen = Some(i);
                break;
            }
        }
        if metas.is_empty() {
            return Err(Error::corrupt("meta page", "neither meta page is valid"));
        }
        // no commit whole: take the newest, and the walk below names the broken node
        let i = chosen.unwrap_or(0);
        let meta = metas[i].1;
        if i > 0 {
            tracing::warn!(
                incomplete = metas[0].1.txid,
                opened = meta.txid,
                "the newest commit did not reach the disk whole (a power loss during it); opening the one before"
            );
        }
        // a newer meta whose commit was cut short: overwrite it with the one chosen, so a
        // later commit reusing its txid can never make it look whole again
        for (slot, _) in &metas[..i] {
            io.write_at(slot * PAGE, &meta.encode())?;
            io.sync()?;
        }
        let cache = Arc::new(NodeCache::default());
        let r = NodeReader { io: io.as_ref(), cache: &cache, hwm: meta.hwm };
        let mut used = Vec::new();
        for root in meta.roots.iter().flatten() {
            btree::collect_spans(*root, r, &mut used)?;
        }
        used.sort_unstable();
        let mut spans = HashSpans::default();
        let mut next = META_PAGES;
        for s in &used {
            if s.start < next {
                return Err(Error::corrupt("page", format!("span {}+{} overlaps another node", s.start, s.pages)));
            }
            if s.start > next {
                spans.free(next, s.start - next);
            }
            next = s.end();
        }
        if next < meta.hwm {
            spans.free(next, meta.hwm - next);
        }
        Ok(Db {
            roots: roots_of(&meta),
            hwm: meta.hwm,
            meta,
            io,
            freed: Vec::new(),
            dirty: false,
            freelist: Freelist::new(spans),
            file_len,
            readers: Arc::new(Readers::default()),
            cache,
            growth,
            leaf_pages: 1,
        })
    }

    fn reader(&self) -> NodeReader<'_> {
        NodeReader { io: self.io.as_ref(), cache: &self.cache, hwm: self.hwm }
    }

    /// The value of `key` in `bucket`, as written so far.
    pub(crate) fn get(&self, bucket: Bucket, key: &[u8]) -> Result<Option<Vec<u8>>> {
        btree::get(self.roots[slot(bucket)].as_ref(), self.reader(), key)
    }

    /// Visits `bucket`'s entries in `start..end` as written so far.
    pub(crate) fn scan(&self, bucket: Bucket, start: &[u8], end: Option<&[u8]>, visit: &mut ScanFn<'_>) -> Result<()> {
        btree::scan(self.roots[slot(bucket)].as_ref(), self.reader(), start, end, visit)
    }

    /// Visits every entry of `bucket` as written so far, in key order, reading committed
    /// nodes without the node cache (`walk.rs`).
    pub(crate) fn scan_uncached(&self, bucket: Bucket, visit: &mut ScanFn<'_>) -> Result<()> {
        walk::scan_all(self.roots[slot(bucket)].as_ref(), walk::Source { io: self.io.as_ref(), hwm: self.hwm, leaves: Leaves::Verified }, visit)
    }

    /// Applies a batch to the open transaction (memory only). An error leaves the batch
    /// half applied: the caller must poison the store.
    pub(crate) fn apply(&mut self, batch: WriteBatch) -> Result<()> {
        let r = NodeReader { io: self.io.as_ref(), cache: &self.cache, hwm: self.hwm };
        for op in batch.ops {
            self.dirty = true;
            match op {
                BatchOp::Put(b, k, v) => btree::put(&mut self.roots[slot(b)], r, &mut self.freed, k, v)?,
                BatchOp::Delete(b, k) => btree::delete(&mut self.roots[slot(b)], r, &mut self.freed, &k)?,
                BatchOp::DeleteRange(b, from, to) => btree::delete_range(&mut self.roots[slot(b)], r, &mut self.freed, &from, &to)?,
            }
        }
        Ok(())
    }

    /// Commits the open transaction (module docs) in one go. An error poisons the `Db`.
    pub(crate) fn commit(&mut self) -> Result<()> {
        if let Some(p) = self.prepare_commit()? {
            p.make_durable()?;
            self.finish_commit(p);
        }
        Ok(())
    }

    /// Steps 1–4 of a commit: spills the open transaction and writes its nodes (not
    /// durable yet); the trees then read from those pages. `None` when nothing was written. Until
    /// [`Db::finish_commit`], the caller must start no other commit. An error poisons the
    /// `Db`.
    pub(crate) fn prepare_commit(&mut self) -> Result<Option<Prepared>> {
        if !self.dirty {
            return Ok(None);
        }
        let txid = self.meta.txid + 1;
        self.freelist.release(self.readers.oldest());
        let mut hwm = self.hwm;
        let mut writes: Vec<(PageId, Vec<u8>)> = Vec::new();
        {
            let freelist = &mut self.freelist;
            let cache = &self.cache;
            let mut alloc = |n: u64| match freelist.allocate(n) {
                Some(start) => {
                    cache.forget(start, n);
                    start
                }
                None => {
                    hwm += n;
                    hwm - n
                }
            };
            let r = NodeReader { io: self.io.as_ref(), cache: &self.cache, hwm: self.hwm };
            let mut sp = Spill { r, freed: &mut self.freed, alloc: &mut alloc, writes: &mut writes, txid, leaf_pages: self.leaf_pages };
            for root in self.roots.iter_mut() {
                btree::commit(root, &mut sp)?;
            }
        }
        self.grow_to(hwm * PAGE)?;
        let nodes = writes.len() as u32;
        let crc_sum = writes.iter().map(|(_, b)| node_crc(b)).fold(0u64, u64::wrapping_add);
        writes.sort_unstable_by_key(|(p, _)| *p);
        self.write_coalesced(writes)?;
        let roots = [0, 1, 2].map(|i| match &self.roots[i] {
            Some(Child::Disk(s)) => Ok(Some(*s)),
            None => Ok(None),
            Some(Child::Mem(_)) => Err(Error::corrupt("page", "a memory node left after spilling")),
        });
        let [a, b, c] = roots;
        let meta = Meta { txid, hwm, roots: [a?, b?, c?], nodes, crc_sum };
        self.hwm = hwm;
        self.dirty = false;
        Ok(Some(Prepared { meta, freed: std::mem::take(&mut self.freed), io: self.io.clone() }))
    }

    /// Step 7: the prepared commit is durable; it becomes the last commit.
    pub(crate) fn finish_commit(&mut self, p: Prepared) {
        self.meta = p.meta;
        self.freelist.free_at(p.meta.txid, p.freed);
    }

    /// Writes the encoded nodes (sorted by page), adjacent ones in one call.
    fn write_coalesced(&self, writes: Vec<(PageId, Vec<u8>)>) -> Result<()> {
        let mut run: Option<(PageId, Vec<u8>)> = None;
        for (page, buf) in writes {
            match &mut run {
                Some((start, b)) if *start + (b.len() as u64 / PAGE) == page && b.len() < (1 << 20) => b.extend_from_slice(&buf),
                _ => {
                    if let Some((start, b)) = run.take() {
                        self.io.write_at(start * PAGE, &b)?;
                    }
                    run = Some((page, buf));
                }
            }
        }
        if let Some((start, b)) = run {
            self.io.write_at(start * PAGE, &b)?;
        }
        Ok(())
    }

    /// Makes the file at least `need` bytes, growing by a chunk (`Growth`); when the chunk
    /// does not fit on the disk, by exactly what is needed.
    fn grow_to(&mut self, need: u64) -> Result<()> {
        if need <= self.file_len {
            return Ok(());
        }
        let step = (self.file_len / 4).clamp(self.growth.min_step, self.growth.max_step.max(self.growth.min_step));
        let target = need.max(self.file_len + step).div_ceil(PAGE) * PAGE;
        match self.io.grow(target) {
            Ok(()) => self.file_len = target,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && target > need => {
                self.io.grow(need)?;
                self.file_len = need;
            }
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// Pins the last commit for reading. Call after a commit: what the open transaction
    /// wrote since is not in it.
    pub(crate) fn pin(&self) -> PinnedState {
        PinnedState { io: self.io.clone(), cache: self.cache.clone(), meta: self.meta, roots: roots_of(&self.meta), _pin: self.readers.pin(self.meta.txid) }
    }

    /// Changes how the file grows from now on.
    pub(crate) fn set_growth(&mut self, growth: Growth) {
        self.growth = growth;
    }

    /// Lets leaves written from now on span up to `pages` pages (at least 1).
    pub(crate) fn set_leaf_pages(&mut self, pages: usize) {
        self.leaf_pages = pages.max(1);
    }

    /// Bytes of the file.
    pub(crate) fn size(&self) -> u64 {
        self.file_len
    }

    /// Bytes below the high-water mark (the file without its preallocated tail).
    pub(crate) fn size_allocated(&self) -> u64 {
        self.hwm * PAGE
    }

    /// Bytes of pages holding live data or the metas: below the high-water mark, neither
    /// free nor pending.
    pub(crate) fn size_in_use(&self) -> u64 {
        self.hwm.saturating_sub(self.freelist.unused_pages()) * PAGE
    }
}
