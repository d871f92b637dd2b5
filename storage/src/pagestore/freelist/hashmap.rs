//! The segregated freelist (etcd's lesson from bbolt, Alibaba's change): free spans
//! grouped by length, so allocating and freeing cost O(1) map operations instead of a scan
//! of every span.
//!
//! * `by_len`: span length → the start pages of the free spans of that length. A
//!   `BTreeMap` of `BTreeSet`s: the exact length is one lookup, the best fit is the next
//!   length up (a walk over *distinct lengths*, which stay few), and the lowest start of
//!   a length is the set's first element.
//! * `by_start` (start → length) and `by_end` (end → length): a freed span finds a free
//!   neighbour on either side in O(1) and merges with both.
//!
//! Worked example: free 10..13, 14..16 and 20 gives `by_len {1: {20}, 2: {14}, 3: {10}}`,
//! `by_start {10: 3, 14: 2, 20: 1}`, `by_end {13: 3, 16: 2, 21: 1}`. Freeing page 13
//! finds `by_end[13]` (10..13) on the left and `by_start[14]` (14..16) on the right,
//! removes both and inserts 10..16: `by_len {1: {20}, 6: {10}}`. Allocating 2 pages
//! finds no span of length 2, takes the next length up that holds one (6: 10..16),
//! returns 10 and keeps 12..16 free.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::FreeSpans;

/// Free spans segregated by length (module docs).
#[derive(Default)]
pub struct HashSpans {
    by_len: BTreeMap<u64, BTreeSet<u64>>,
    by_start: HashMap<u64, u64>,
    by_end: HashMap<u64, u64>,
    free: u64,
}

impl HashSpans {
    fn insert(&mut self, start: u64, n: u64) {
        self.by_len.entry(n).or_default().insert(start);
        self.by_start.insert(start, n);
        self.by_end.insert(start + n, n);
        self.free += n;
    }

    fn take(&mut self, start: u64, n: u64) {
        if let Some(set) = self.by_len.get_mut(&n) {
            set.remove(&start);
            if set.is_empty() {
                self.by_len.remove(&n);
            }
        }
        self.by_start.remove(&start);
        self.by_end.remove(&(start + n));
        self.free -= n;
    }
}

impl FreeSpans for HashSpans {
    fn allocate(&mut self, n: u64) -> Option<u64> {
        let (&len, starts) = self.by_len.range(n..).next()?;
        let start = *starts.first()?;
        self.take(start, len);
        if len > n {
            // the tail stays free; its neighbours are not (the span was maximal)
            self.insert(start + n, len - n);
        }
        Some(start)
    }

    fn free(&mut self, start: u64, n: u64) {
        let (mut s, mut len) = (start, n);
        if let Some(&left) = self.by_end.get(&start) {
            self.take(start - left, left);
            s -= left;
            len += left;
        }
        if let Some(&right) = self.by_start.get(&(start + n)) {
            self.take(start + n, right);
            len += right;
        }
        self.insert(s, len);
    }

    fn free_pages(&self) -> u64 {
        self.free
    }

    #[cfg(test)]
    fn spans(&self) -> Vec<(u64, u64)> {
        let mut v: Vec<_> = self.by_start.iter().map(|(&s, &n)| (s, n)).collect();
        v.sort_unstable();
        v
    }
}
