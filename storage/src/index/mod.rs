//! The key index: an ordered map from key to its [`KeyIndex`] (all of its revisions),
//! which readers walk without ever waiting for a writer.
//!
//! # Design
//! The map is a persistent copy-on-write B+tree (`cow.rs`) whose root is published in an
//! [`ArcSwap`]. A reader loads the root (wait-free: no lock, no retry loop) and walks that
//! version of the tree, which no one changes: the apply thread and the compactor never
//! block it, and it never blocks them.
//!
//! Writers change a *working* version: a change copies the nodes on the path to its key
//! that are still shared with the published version and changes the copies in place, so
//! the applies between two publications copy each node at most once. The store publishes
//! the working version ([`TreeIndex::publish`]) when it commits, before it moves the
//! committed revision: what readers need (see "Consistency") is there by then. The apply
//! thread's own reads (inside a write transaction, which must see its earlier changes) use
//! the `*_latest` methods, which read the working version.
//!
//! Why this and not the alternatives (numbers in BENCHMARKS.md, `benches/benches/index.rs`):
//! * the old `RwLock<BTreeMap>`: readers held the read side for a whole range walk (a
//!   count of 1M keys: tens of ms), so a waiting writer and every reader queued behind it;
//!   the compactor's chunks stalled readers too;
//! * a concurrent skiplist with per-key `ArcSwap<KeyIndex>` (not built, rejected on its
//!   structure): reads never wait either, but a range walk chases one pointer (and a
//!   reference count) per key where the B+tree reads arrays of 32, and it cannot count a
//!   subtree without visiting its keys;
//! * the copy-on-write tree costs the writer a path copy per changed key and publication
//!   (≈ 5 nodes of 32 pointers at 1M keys; the reference counts touched are most of the
//!   cost); in exchange every node carries counts (`cow.rs`), so a count of a 1M-key
//!   prefix visits O(log n) nodes, and a limited page counts the rest of its span the
//!   same way. Measured at 1M keys against the old map: a count of a 100k-key prefix
//!   27.7 ms → 6 µs, a 500-key page with its total 29.8 ms → 44 µs, their p99 beside a
//!   writer and a compactor 134 ms → 15 µs and 224 ms → 9 ms (the rest is the reader being
//!   descheduled on two shared cores); gets alike; 2M puts 4.0 s → 3.4 s (copies once per
//!   publication); a compaction of every key 0.66 s → 4.2 s (each changed key is copied),
//!   which no reader waits for; 265 → 275 heap bytes per key.
//!
//! `arc-swap` is the one dependency taken for it: a well-kept crate giving an atomically
//! replaceable `Arc` whose loads take no lock (std has none; crossbeam-epoch, already in the
//! build under sled, would mean hand-written unsafe code for the same thing).
//!
//! # Consistency
//! A reader's loaded root is one version: a change is either in it or not. A version may
//! hold part of what was applied after the committed revision (the compactor publishes
//! the working version with each chunk it installs, applies not yet committed included)
//! and part of a compaction: both are harmless under the store's visibility rule. Readers
//! read at the committed revision (or older), at which later revisions are invisible, and
//! a compaction at `C` keeps every answer at revisions ≥ `C`. A compaction above the
//! reader's revision can change its answer: the read path checks the compaction floor
//! again after reading (`range.rs`).
//!
//! # Locks
//! `working` guards the working version. It is held by each change and read of the apply
//! thread, by `publish`, by the compactor to install one chunk of [`COMPACT_CHUNK`] keys
//! it compacted beforehand (released fairly, so a waiting apply goes next), and by a
//! restore's `replace`. It is a leaf lock, after every store lock (`store.rs`). Readers of
//! the published version take no lock.
//!
//! Invariants: the published tree is a complete version (`cow.rs` states its shape rules);
//! keys with an empty history are never in it.

mod cow;
mod keys;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::{Mutex, MutexGuard};

use crate::error::{Error, Result};
use crate::key_index::{KeyAt, KeyIndex};
use crate::revision::Revision;
use cow::{Gather, Node, Tree};

/// How many keys the compactor prepares and then installs per hold of `working` (and per
/// published version). Small, because the compactor paces itself step by step
/// (`compactor.rs`): a step of 100 keys holds a core for about 0.1 ms, so a reader's
/// request queued behind it waits no longer than that. With 1,000 (about 1 ms a step)
/// readers' p99 during a 1M-key compaction was 1.36–1.59× the p99 without it; with 100,
/// 0.84–1.39× (median 1.16×), the compaction 5 s instead of 2.3 s (BENCHMARKS.md, "Range
/// p99 during a compaction of 1M revisions").
pub const COMPACT_CHUNK: usize = 100;

/// The keys a request addresses, decoded once from etcd's `(key, range_end)` convention.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySpan<'a> {
    /// `range_end` empty: exactly `key`.
    Single(&'a [u8]),
    /// `[start, end)`; `end == None` means every key ≥ start (`range_end == "\0"`).
    Range(&'a [u8], Option<&'a [u8]>),
}

impl<'a> KeySpan<'a> {
    /// Decodes etcd's convention: empty `range_end` is one key, `"\0"` is "to the end".
    pub fn new(key: &'a [u8], range_end: &'a [u8]) -> Self {
        match range_end {
            [] => KeySpan::Single(key),
            [0] => KeySpan::Range(key, None),
            end => KeySpan::Range(key, Some(end)),
        }
    }

    /// True when `k` falls inside the span.
    pub fn contains(&self, k: &[u8]) -> bool {
        match *self {
            KeySpan::Single(key) => k == key,
            KeySpan::Range(start, end) => k >= start && end.is_none_or(|e| k < e),
        }
    }

    /// `[start, end)` of a non-empty range span; `None` for an empty or inverted one.
    fn interval(&self) -> Option<(&'a [u8], Option<&'a [u8]>)> {
        match *self {
            KeySpan::Single(_) => None,
            KeySpan::Range(s, None) => Some((s, None)),
            KeySpan::Range(s, Some(e)) if e > s => Some((s, Some(e))),
            KeySpan::Range(_, Some(_)) => None,
        }
    }
}

/// One key visible at the asked revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexHit {
    /// The key (a copy: readers that need only revisions use [`TreeIndex::revisions`]).
    pub key: Vec<u8>,
    /// Its state at the asked revision.
    pub at: KeyAt,
}

/// The ordered key index (see the module docs).
pub struct TreeIndex {
    /// The published version: what readers load.
    root: ArcSwap<Node>,
    /// The working version: the published one plus the changes not yet published (module
    /// docs, "Locks").
    working: Mutex<Tree>,
}

impl Default for TreeIndex {
    fn default() -> Self {
        let tree = Tree::default();
        TreeIndex { root: ArcSwap::new(tree.root.clone()), working: Mutex::new(tree) }
    }
}

/// A key's history compacted without holding `working`, to install if still current.
struct Prepared {
    key: Vec<u8>,
    old: Arc<KeyIndex>,
    /// `None`: nothing left, the key goes.
    new: Option<Arc<KeyIndex>>,
    kept: Option<Revision>,
}

/// Changes made under one hold of `working` and published together (see
/// [`TreeIndex::batch`]).
pub struct IndexBatch {
    tree: Tree,
}

impl IndexBatch {
    /// Records a put of `key` at `rev`.
    pub fn put(&mut self, key: &[u8], rev: Revision) -> Result<()> {
        Self::put_in(&mut self.tree, key, rev)
    }

    /// Records the deletion of `key` at `rev`.
    pub fn tombstone(&mut self, key: &[u8], rev: Revision) -> Result<()> {
        Self::tombstone_in(&mut self.tree, key, rev)
    }

    fn put_in(tree: &mut Tree, key: &[u8], rev: Revision) -> Result<()> {
        tree.update(key, |ki, _| ki.put(rev))
    }

    /// [`IndexBatch::put_in`], returning the key as visible at `rev.main` before the put
    /// (one descent for the lookup and the change).
    fn put_seen_in(tree: &mut Tree, key: &[u8], rev: Revision) -> Result<Option<KeyAt>> {
        let mut seen = None;
        tree.update(key, |ki, known| {
            if known {
                seen = ki.get(rev.main);
            }
            ki.put(rev)
        })?;
        Ok(seen)
    }

    fn tombstone_in(tree: &mut Tree, key: &[u8], rev: Revision) -> Result<()> {
        tree.update(key, |ki, known| match known {
            true => ki.tombstone(rev),
            false => Err(Error::corrupt("key index", "tombstone of an unknown key")),
        })
    }

    /// Rebuild step: see [`TreeIndex::restore`].
    pub fn restore(&mut self, key: &[u8], created: Revision, rev: Revision, version: i64) -> Result<()> {
        self.tree.update(key, |ki, _| ki.restore(created, rev, version))
    }

    /// Rebuild step, one lookup for both cases: [`IndexBatch::put`] when the key is known,
    /// [`IndexBatch::restore`] when it is not.
    pub fn put_or_restore(&mut self, key: &[u8], rev: Revision, created: Revision, version: i64) -> Result<()> {
        self.tree.update(key, |ki, known| match known {
            true => ki.put(rev),
            false => ki.restore(created, rev, version),
        })
    }

    /// True if the batch's version of the index knows the key.
    pub fn contains(&self, key: &[u8]) -> bool {
        self.tree.root.get(key).is_some()
    }
}

impl TreeIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// An index holding `keys` (a bulk load, built bottom-up: see `cow.rs`), which must be
    /// in strictly increasing key order with non-empty histories; anything else is
    /// [`Error::Corrupt`]. In debug builds every history's invariants are checked.
    pub(crate) fn from_sorted(keys: Vec<(Arc<[u8]>, Arc<KeyIndex>)>) -> Result<TreeIndex> {
        for (i, (key, ki)) in keys.iter().enumerate() {
            if i > 0 && keys[i - 1].0 >= *key {
                return Err(Error::corrupt("key index", "bulk load: keys not strictly increasing"));
            }
            if ki.is_empty() {
                return Err(Error::corrupt("key index", "bulk load: a key with no history"));
            }
            ki.check_invariants();
        }
        let tree = Tree::from_sorted(keys);
        Ok(TreeIndex { root: ArcSwap::new(tree.root.clone()), working: Mutex::new(tree) })
    }

    /// Runs `f` on a copy of the working version and, if `f` succeeds, makes the result
    /// the working version and publishes it (readers see all of its changes or none); on
    /// `Err` nothing changes. Nodes are copied once per batch, not once per change: a bulk
    /// load (the rebuild at start-up) is one batch.
    pub fn batch<R>(&self, f: impl FnOnce(&mut IndexBatch) -> Result<R>) -> Result<R> {
        let mut working = self.working.lock();
        let mut b = IndexBatch { tree: working.clone() };
        let r = f(&mut b)?;
        *working = b.tree;
        self.publish_locked(&working);
        Ok(r)
    }

    fn publish_locked(&self, working: &Tree) {
        self.root.store(working.root.clone());
    }

    /// Makes every change made so far visible to readers (the store calls it when it
    /// commits, before it publishes the committed revision).
    pub fn publish(&self) {
        let working = self.working.lock();
        self.publish_locked(&working);
    }

    /// Records a put of `key` at `rev` in the working version (readers see it once
    /// published); returns the key as it was visible at `rev.main` before the put (its
    /// creation revision and version, for the new revision's), as
    /// [`TreeIndex::get_latest`] would have, without a second descent.
    pub fn put(&self, key: &[u8], rev: Revision) -> Result<Option<KeyAt>> {
        IndexBatch::put_seen_in(&mut self.working.lock(), key, rev)
    }

    /// Records the deletion of `key` at `rev` in the working version.
    pub fn tombstone(&self, key: &[u8], rev: Revision) -> Result<()> {
        IndexBatch::tombstone_in(&mut self.working.lock(), key, rev)
    }

    /// Rebuild step: records the first surviving revision of a key's generation with the
    /// creation revision and version stored in its value (compaction may have removed the
    /// revisions that would let the index count them). Published at once.
    pub fn restore(&self, key: &[u8], created: Revision, rev: Revision, version: i64) -> Result<()> {
        self.batch(|b| b.restore(key, created, rev, version))
    }

    /// [`TreeIndex::get`] on the working version: for the apply thread, whose reads must
    /// see its own unpublished changes.
    pub fn get_latest(&self, key: &[u8], at: i64) -> Option<KeyAt> {
        self.working.lock().root.get(key).and_then(|ki| ki.get(at))
    }

    /// [`TreeIndex::count`] on the working version (see [`TreeIndex::get_latest`]).
    pub fn count_latest(&self, span: &KeySpan<'_>, at: i64) -> i64 {
        count_in(&self.working.lock().root, span, at)
    }

    /// [`TreeIndex::range`] on the working version (see [`TreeIndex::get_latest`]).
    pub fn range_latest(&self, span: &KeySpan<'_>, at: i64, limit: usize) -> (Vec<IndexHit>, i64) {
        range_in(&self.working.lock().root, span, at, limit)
    }

    /// [`TreeIndex::revisions`] on the working version (see [`TreeIndex::get_latest`]).
    pub fn revisions_latest(&self, span: &KeySpan<'_>, at: i64, limit: usize) -> (Vec<KeyAt>, i64) {
        revisions_in(&self.working.lock().root, span, at, limit)
    }

    /// True if the index knows the key at all (live, deleted or with history).
    pub fn contains(&self, key: &[u8]) -> bool {
        self.root.load().get(key).is_some()
    }

    /// The key as visible at revision `at`.
    pub fn get(&self, key: &[u8], at: i64) -> Option<KeyAt> {
        self.root.load().get(key).and_then(|ki| ki.get(at))
    }

    /// Keys of `span` visible at `at`, in key order: at most `limit` hits (0 = all) and the
    /// total number of visible keys in the span. The keys past the limit are counted, not
    /// collected, and whole subtrees unchanged since `at` are counted without visiting
    /// their keys.
    pub fn range(&self, span: &KeySpan<'_>, at: i64, limit: usize) -> (Vec<IndexHit>, i64) {
        range_in(&self.root.load(), span, at, limit)
    }

    /// [`TreeIndex::range`] without the keys: each visible key's state (its revisions), in
    /// key order, and the total. What a read needs to fetch the values; no key is copied.
    pub fn revisions(&self, span: &KeySpan<'_>, at: i64, limit: usize) -> (Vec<KeyAt>, i64) {
        revisions_in(&self.root.load(), span, at, limit)
    }

    /// Number of keys of `span` visible at `at`; allocates nothing.
    pub fn count(&self, span: &KeySpan<'_>, at: i64) -> i64 {
        count_in(&self.root.load(), span, at)
    }

    /// Compacts every key at `at`, a chunk of [`COMPACT_CHUNK`] keys at a time, dropping
    /// keys left with no history; returns the revisions the backend must keep, sorted.
    ///
    /// Each chunk is prepared without holding `working`, from the published version: the
    /// keys compaction changes are compacted into new histories. The lock is then held only
    /// to install them (and released fairly, so the apply thread waiting for it goes
    /// first). A key a writer changed meanwhile (it added revisions) is compacted again
    /// under the lock. Writers only add revisions above the committed revision, which is
    /// at or above `at`: that changes neither what compaction keeps of a key nor whether it
    /// changes it, so the keys left alone and the revisions kept stand. (Every revision at
    /// or below `at` is in the published version: the store publishes at commit, before it
    /// schedules the compaction.)
    pub fn compact(&self, at: i64) -> Vec<Revision> {
        self.compact_paced(at, &mut || {})
    }

    /// [`TreeIndex::compact`], calling `between` after each chunk (holding no lock): the
    /// compactor paces itself there.
    pub fn compact_paced(&self, at: i64, between: &mut dyn FnMut()) -> Vec<Revision> {
        // at most one revision a key: sized once rather than grown (and copied) 20-odd times
        let mut available = Vec::with_capacity(self.len());
        let mut from: Vec<u8> = Vec::new();
        let mut prepared: Vec<Prepared> = Vec::with_capacity(COMPACT_CHUNK);
        loop {
            let snapshot = self.root.load_full();
            let mut seen = 0usize;
            let mut next = None;
            snapshot.visit(&from, None, &mut |key, old| {
                if seen == COMPACT_CHUNK {
                    next = Some(key.to_vec());
                    return false;
                }
                seen += 1;
                if old.compaction_changes(at) {
                    let mut ki = (**old).clone();
                    let kept = ki.compact_kept(at);
                    let new = (!ki.is_empty()).then(|| Arc::new(ki));
                    prepared.push(Prepared { key: key.to_vec(), old: old.clone(), new, kept });
                } else {
                    available.extend(old.kept(at));
                }
                true
            });
            drop(snapshot);
            if !prepared.is_empty() {
                let mut working = self.working.lock();
                let tree = &mut *working;
                for p in prepared.drain(..) {
                    let kept = if tree.replace_if(&p.key, &p.old, p.new) {
                        p.kept
                    } else {
                        let mut kept = None;
                        let Ok(()) = tree.update::<Infallible>(&p.key, |ki, _| {
                            kept = ki.compact_kept(at);
                            Ok(())
                        });
                        kept
                    };
                    available.extend(kept);
                }
                self.publish_locked(&working);
                MutexGuard::unlock_fair(working);
            }
            match next {
                Some(k) => {
                    from = k;
                    between();
                }
                None => {
                    // in key order so far; the backend's key bucket is in revision order
                    available.sort_unstable();
                    return available;
                }
            }
        }
    }

    /// The revisions a compaction at `at` would keep, without compacting.
    pub fn keep(&self, at: i64) -> HashSet<Revision> {
        let root = self.root.load_full();
        let mut available = HashSet::new();
        root.visit(b"", None, &mut |_, ki| {
            ki.keep(at, &mut available);
            true
        });
        available
    }

    /// Replaces the whole index with `other`'s in one store (a snapshot restore: readers
    /// see the old index or the new one, never a mix).
    pub(crate) fn replace(&self, other: TreeIndex) {
        let mut working = self.working.lock();
        *working = other.working.into_inner();
        self.publish_locked(&working);
    }

    /// Number of keys the index holds (live or with history).
    pub fn len(&self) -> usize {
        self.root.load().len()
    }

    /// True when the index holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Verifies the published tree's invariants (`cow.rs`), visiting every node.
    #[cfg(test)]
    pub(crate) fn check(&self) {
        Tree { root: self.root.load_full() }.check();
        self.working.lock().check();
    }

    /// Every key with its history, in key order (for tests comparing against a model).
    #[cfg(test)]
    pub(crate) fn dump(&self) -> Vec<(Vec<u8>, KeyIndex)> {
        let root = self.root.load_full();
        let mut out = Vec::new();
        root.visit(b"", None, &mut |k, ki| {
            out.push((k.to_vec(), (**ki).clone()));
            true
        });
        out
    }
}

/// [`TreeIndex::range`] on one version: the hits' keys (copied) and states.
fn range_in(root: &Node, span: &KeySpan<'_>, at: i64, limit: usize) -> (Vec<IndexHit>, i64) {
    let (hits, total) = gather_in(root, span, at, limit);
    (hits.into_iter().map(|(key, at)| IndexHit { key: key.to_vec(), at }).collect(), total)
}

/// [`TreeIndex::revisions`] on one version: the hits' states only, no key copied.
fn revisions_in(root: &Node, span: &KeySpan<'_>, at: i64, limit: usize) -> (Vec<KeyAt>, i64) {
    let (hits, total) = gather_in(root, span, at, limit);
    (hits.into_iter().map(|(_, at)| at).collect(), total)
}

/// The keys of `span` visible at `at` (at most `limit`, 0 = all) borrowed from `root`, and
/// how many there are in all.
fn gather_in<'t>(root: &'t Node, span: &KeySpan<'_>, at: i64, limit: usize) -> (Vec<(&'t [u8], KeyAt)>, i64) {
    if let KeySpan::Single(k) = *span {
        return match root.entry(k).and_then(|(key, ki)| Some((key, ki.get(at)?))) {
            Some(hit) => (vec![hit], 1),
            None => (Vec::new(), 0),
        };
    }
    let Some((from, to)) = span.interval() else { return (Vec::new(), 0) };
    let limit = if limit == 0 { usize::MAX } else { limit };
    let mut g = Gather { limit, hits: Vec::new(), total: 0 };
    root.gather(from, to, None, at, &mut g);
    (g.hits, g.total)
}

/// [`TreeIndex::count`] on one version.
fn count_in(root: &Node, span: &KeySpan<'_>, at: i64) -> i64 {
    if let KeySpan::Single(k) = *span {
        return root.get(k).and_then(|ki| ki.get(at)).is_some() as i64;
    }
    let Some((from, to)) = span.interval() else { return 0 };
    let mut g = Gather { limit: 0, hits: Vec::new(), total: 0 };
    root.gather(from, to, None, at, &mut g);
    g.total
}
