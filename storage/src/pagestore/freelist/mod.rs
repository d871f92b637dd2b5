//! The freelist: which pages below the high-water mark hold nothing live.
//!
//! Two layers, as in bbolt:
//! * [`FreeSpans`], the free spans themselves, with two implementations: [`LinearSpans`]
//!   (a sorted vector: O(n) per operation, simple enough to be the reference model) and
//!   [`HashSpans`] (segregated by length, O(1) merge with both neighbours, best fit);
//! * [`Freelist`], shared by both: pages a commit frees stay *pending* under that commit's
//!   txid until no open reader can still see them, and only then join the free spans.
//!
//! # Allocation policy (both implementations, so their results are identical)
//! Best fit: the smallest free span of at least `n` pages; among spans of that length, the
//! one with the lowest page id. A longer span is split and its tail stays free. Best fit
//! keeps long spans whole for the multi-page nodes that need them, and the low-id
//! preference packs data towards the start of the file.
//!
//! # Persist or rebuild?
//! Rebuilt at open, never written: open walks the branch nodes of every bucket (leaves are
//! not read: a branch knows its children's spans and height, see `page.rs`), and every
//! page below the high-water mark that no node holds is free. Branches are ~1% of the
//! pages, so this costs little (147 ms at a 1.4 GB file, see `../mod.rs`), and commits
//! write no freelist pages at all, which also makes the freelist impossible to corrupt.
//! Pending pages need no persistence either: after a restart no reader is open.

mod hashmap;
mod linear;

use std::collections::BTreeMap;

pub use hashmap::HashSpans;
pub use linear::LinearSpans;

use super::page::Span;

/// A set of free pages kept as maximal spans (adjacent free spans are always merged).
/// Pages are numbered from 0; a span is `(start, pages)`. Public for the benchmarks
/// (`benches/benches/freelist.rs`).
pub trait FreeSpans: Send + Sync {
    /// Takes `n` pages (best fit, module docs); `None` when no free span is long enough.
    fn allocate(&mut self, n: u64) -> Option<u64>;
    /// Gives back `n` pages from `start`, which must not be free already.
    fn free(&mut self, start: u64, n: u64);
    /// Free pages in all.
    fn free_pages(&self) -> u64;
    /// Every free span, sorted by start (tests).
    #[cfg(test)]
    fn spans(&self) -> Vec<(u64, u64)>;
}

/// Free spans plus the pending pages of recent commits.
pub(crate) struct Freelist<F: FreeSpans> {
    spans: F,
    /// txid of the freeing commit → the spans it freed. A reader of txid `r` sees every
    /// page freed by a commit with txid > r.
    pending: BTreeMap<u64, Vec<Span>>,
    pending_pages: u64,
}

impl<F: FreeSpans> Freelist<F> {
    /// A freelist over `spans`, nothing pending.
    pub(crate) fn new(spans: F) -> Self {
        Freelist { spans, pending: BTreeMap::new(), pending_pages: 0 }
    }

    /// Records the spans commit `txid` stopped using.
    pub(crate) fn free_at(&mut self, txid: u64, freed: Vec<Span>) {
        if freed.is_empty() {
            return;
        }
        self.pending_pages += freed.iter().map(|s| s.pages as u64).sum::<u64>();
        self.pending.entry(txid).or_default().extend(freed);
    }

    /// Makes allocatable every page freed by commits with txid ≤ `oldest_reader` (the
    /// oldest txid an open reader pins; `u64::MAX` when none is open).
    pub(crate) fn release(&mut self, oldest_reader: u64) {
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() > oldest_reader {
                break;
            }
            for s in entry.remove() {
                self.pending_pages -= s.pages as u64;
                self.spans.free(s.start, s.pages as u64);
            }
        }
    }

    /// Takes `n` pages, if a free span is long enough.
    pub(crate) fn allocate(&mut self, n: u64) -> Option<u64> {
        self.spans.allocate(n)
    }

    /// Free and pending pages: everything below the high-water mark not in use.
    pub(crate) fn unused_pages(&self) -> u64 {
        self.spans.free_pages() + self.pending_pages
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pagestore::sim_io::next_rand;

    fn both() -> (Box<dyn FreeSpans>, Box<dyn FreeSpans>) {
        (Box::new(LinearSpans::default()), Box::new(HashSpans::default()))
    }

    /// The suite each implementation must pass on its own.
    fn basic(f: &mut dyn FreeSpans) {
        assert_eq!(f.allocate(1), None);
        f.free(10, 3); // 10..13
        f.free(20, 1); // 20
        f.free(14, 2); // 14..16
        assert_eq!(f.free_pages(), 6);
        f.free(13, 1); // merges 10..13 and 14..16 into 10..16
        assert_eq!(f.spans(), vec![(10, 6), (20, 1)]);
        assert_eq!(f.allocate(1), Some(20), "exact fit before splitting a longer span");
        assert_eq!(f.allocate(2), Some(10), "best fit splits the span, keeping its tail");
        assert_eq!(f.spans(), vec![(12, 4)]);
        assert_eq!(f.allocate(5), None);
        f.free(16, 1);
        assert_eq!(f.spans(), vec![(12, 5)]);
        assert_eq!(f.allocate(5), Some(12));
        assert_eq!(f.free_pages(), 0);
        // ties on length go to the lowest page id
        f.free(50, 2);
        f.free(30, 2);
        f.free(40, 2);
        assert_eq!(f.allocate(2), Some(30));
        assert_eq!(f.allocate(1), Some(40));
        assert_eq!(f.allocate(1), Some(41));
        assert_eq!(f.allocate(2), Some(50));
    }

    #[test]
    fn linear_basic() {
        basic(&mut LinearSpans::default());
    }

    #[test]
    fn hashmap_basic() {
        basic(&mut HashSpans::default());
    }

    /// Random frees and allocations: the segregated freelist answers exactly as the
    /// reference model does.
    #[test]
    fn hashmap_matches_linear_model() {
        for seed in 0..20u64 {
            let mut rng = seed;
            let (mut model, mut fast) = both();
            let mut used: Vec<(u64, u64)> = Vec::new();
            let mut hwm: u64 = 2;
            for _ in 0..3000 {
                let r = next_rand(&mut rng);
                if r % 3 != 0 || used.is_empty() {
                    let n = 1 + next_rand(&mut rng) % 6;
                    let a = model.allocate(n);
                    assert_eq!(a, fast.allocate(n), "seed {seed}");
                    let start = a.unwrap_or_else(|| {
                        hwm += n;
                        hwm - n
                    });
                    used.push((start, n));
                } else {
                    let i = (next_rand(&mut rng) % used.len() as u64) as usize;
                    let (s, n) = used.swap_remove(i);
                    model.free(s, n);
                    fast.free(s, n);
                }
                assert_eq!(model.free_pages(), fast.free_pages());
            }
            assert_eq!(model.spans(), fast.spans(), "seed {seed}");
            // free spans are maximal and disjoint from the used ones
            let spans = fast.spans();
            for w in spans.windows(2) {
                assert!(w[0].0 + w[0].1 < w[1].0, "unmerged or overlapping spans {w:?}");
            }
        }
    }

    #[test]
    fn pending_pages_wait_for_readers() {
        let mut fl = Freelist::new(HashSpans::default());
        fl.free_at(5, vec![Span { start: 10, pages: 2 }]);
        fl.free_at(7, vec![Span { start: 20, pages: 1 }]);
        assert_eq!(fl.unused_pages(), 3);
        fl.release(4); // a reader at txid 4 still sees both
        assert_eq!(fl.allocate(1), None);
        fl.release(6); // the reader at 4 is gone, one at 6 remains: txid 5's pages are free
        assert_eq!(fl.allocate(1), Some(10));
        assert_eq!(fl.allocate(1), Some(11));
        assert_eq!(fl.allocate(1), None);
        fl.release(u64::MAX);
        assert_eq!(fl.allocate(1), Some(20));
        assert_eq!(fl.unused_pages(), 0);
    }
}
