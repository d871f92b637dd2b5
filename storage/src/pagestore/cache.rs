//! Decoded committed nodes, by first page, shared by the writer and the views of one file.
//!
//! Committed nodes never change in place, so a cached node is right for as long as its
//! pages are not reused. Pages are reused only by a commit, which [`NodeCache::forget`]s
//! every page it allocates before writing it. No reader can be reading such a page then:
//! a page is reallocated only once no open state reaches it (the freelist's pending
//! rule), so no stale node can be put back after the commit forgot it.
//!
//! # Eviction: a clock, a few nodes at a time, freed outside the lock
//! Bounded by the pages its nodes span (a node of a large value spans many). When an
//! insert would pass the bound, a clock hand sweeps the slots: a node read since the hand
//! last passed (its `referenced` bit set by [`NodeCache::get`]) gets its bit cleared and
//! stays, the first one not read is evicted, until the new node fits. An insert therefore
//! evicts about as many pages as it adds, and nodes that readers keep using (the branches,
//! the leaves of hot keys) survive a scan that reads every leaf once (a compaction's, a
//! snapshot's), which inserts its leaves unreferenced.
//!
//! The evicted nodes are handed back to the caller ([`Evicted`]) and freed after the lock
//! is released. This matters: a decoded leaf is a hundred-odd allocations, and the old
//! policy (empty the whole cache when full, under the lock) freed 16k of them at once
//! while every reader's `get` waited for the lock: 0.4–0.5 s stalls of all reads during a
//! compaction of 1M revisions, and glibc's `malloc_consolidate` of those frees then slowed
//! the next allocations under the page store's `state` lock as well (BENCHMARKS.md,
//! "Range p99 during a compaction of 1M revisions").

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::page::{DiskNode, PageId, Span};

/// Pages the cached nodes may span (64 MiB of 4 KiB pages).
const CAPACITY_PAGES: u64 = 16 * 1024;

/// The cache (module docs).
pub(crate) struct NodeCache {
    /// The nodes, their clock and the pages they span. A leaf lock; nothing is freed
    /// while it is held.
    nodes: Mutex<Nodes>,
    capacity_pages: u64,
}

impl Default for NodeCache {
    fn default() -> Self {
        NodeCache::with_capacity(CAPACITY_PAGES)
    }
}

/// Nodes a cache operation removed, freed when this is dropped: after the cache's lock is
/// released (module docs), even when the caller ignores it (a temporary is dropped at the
/// end of the caller's statement, after the call returned).
pub(crate) struct Evicted(#[cfg_attr(not(test), allow(dead_code))] Vec<Arc<DiskNode>>);

impl Evicted {
    /// How many nodes were removed.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

/// One cached node.
struct Slot {
    start: PageId,
    pages: u32,
    node: Arc<DiskNode>,
    /// Read since the clock hand last passed this slot.
    referenced: bool,
}

#[derive(Default)]
struct Nodes {
    /// First page → index in `slots`.
    by_start: HashMap<PageId, usize>,
    /// The clock's ring; `None` is a slot freed by `forget`, listed in `vacant`.
    slots: Vec<Option<Slot>>,
    vacant: Vec<usize>,
    /// The next slot the clock looks at.
    hand: usize,
    /// The sum of the pages of the cached nodes.
    pages: u64,
}

impl Nodes {
    fn remove(&mut self, i: usize) -> Option<Arc<DiskNode>> {
        let slot = self.slots.get_mut(i)?.take()?;
        self.by_start.remove(&slot.start);
        self.vacant.push(i);
        self.pages -= u64::from(slot.pages);
        Some(slot.node)
    }

    /// Evicts with the clock (module docs) until `need` more pages fit in `capacity`.
    /// Ends: each full turn of the hand clears every bit it passes, so the next turn
    /// evicts; and while `pages > 0` some slot is occupied.
    fn make_room(&mut self, need: u64, capacity: u64, out: &mut Vec<Arc<DiskNode>>) {
        while self.pages > 0 && self.pages + need > capacity {
            if self.hand >= self.slots.len() {
                self.hand = 0;
            }
            let i = self.hand;
            self.hand += 1;
            let evict = match &mut self.slots[i] {
                None => false,
                Some(slot) if slot.referenced => {
                    slot.referenced = false;
                    false
                }
                Some(_) => true,
            };
            if evict {
                out.extend(self.remove(i));
            }
        }
    }
}

impl NodeCache {
    /// A cache bounded by `capacity_pages` pages of nodes.
    pub(crate) fn with_capacity(capacity_pages: u64) -> Self {
        NodeCache { nodes: Mutex::new(Nodes::default()), capacity_pages }
    }

    /// The node stored in `span`, if cached (and marks it used, so the clock keeps it).
    pub(crate) fn get(&self, span: Span) -> Option<Arc<DiskNode>> {
        let mut guard = self.nodes.lock();
        let nodes = &mut *guard;
        let &i = nodes.by_start.get(&span.start)?;
        match nodes.slots.get_mut(i) {
            Some(Some(slot)) if slot.pages == span.pages => {
                slot.referenced = true;
                Some(slot.node.clone())
            }
            _ => None,
        }
    }

    /// Remembers the node read from `span`, evicting others if full; the caller frees
    /// what was evicted by dropping the result, outside the lock.
    pub(crate) fn insert(&self, span: Span, node: Arc<DiskNode>) -> Evicted {
        let mut out = Vec::new();
        let mut nodes = self.nodes.lock();
        if let Some(i) = nodes.by_start.get(&span.start).copied() {
            out.extend(nodes.remove(i));
        }
        nodes.make_room(u64::from(span.pages), self.capacity_pages, &mut out);
        let slot = Slot { start: span.start, pages: span.pages, node, referenced: false };
        let i = match nodes.vacant.pop() {
            Some(i) => {
                nodes.slots[i] = Some(slot);
                i
            }
            None => {
                nodes.slots.push(Some(slot));
                nodes.slots.len() - 1
            }
        };
        nodes.by_start.insert(span.start, i);
        nodes.pages += u64::from(span.pages);
        drop(nodes);
        Evicted(out)
    }

    /// How many nodes are cached.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.nodes.lock().by_start.len()
    }

    /// Forgets whatever started at pages `start .. start + n` (they are being rewritten);
    /// what it removed is freed by dropping the result, outside the lock.
    pub(crate) fn forget(&self, start: PageId, n: u64) -> Evicted {
        let mut out = Vec::new();
        let mut nodes = self.nodes.lock();
        if !nodes.by_start.is_empty() {
            for p in start..start + n {
                if let Some(i) = nodes.by_start.get(&p).copied() {
                    out.extend(nodes.remove(i));
                }
            }
        }
        drop(nodes);
        Evicted(out)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    fn leaf(tag: u8) -> Arc<DiskNode> {
        Arc::new(DiskNode::Leaf(vec![(vec![tag], vec![tag; 16])]))
    }

    fn span(start: PageId) -> Span {
        Span { start, pages: 1 }
    }

    fn cached(c: &NodeCache) -> usize {
        c.nodes.lock().by_start.len()
    }

    /// A full cache evicts what the new node needs, not everything (the old policy
    /// emptied it, freeing thousands of nodes under the lock).
    #[test]
    fn an_insert_into_a_full_cache_evicts_only_what_it_needs() {
        let c = NodeCache::with_capacity(8);
        for p in 2..10 {
            assert_eq!(c.insert(span(p), leaf(p as u8)).len(), 0);
        }
        assert_eq!(cached(&c), 8);
        assert_eq!(c.insert(span(10), leaf(10)).len(), 1);
        assert_eq!(cached(&c), 8);
        assert_eq!(c.nodes.lock().pages, 8);
        // a node of three pages evicts three one-page nodes
        assert_eq!(c.insert(Span { start: 11, pages: 3 }, leaf(11)).len(), 3);
        assert_eq!(c.nodes.lock().pages, 8);
        assert!(c.get(Span { start: 11, pages: 3 }).is_some());
    }

    /// Nodes that readers keep getting survive a scan reading many more nodes once each.
    #[test]
    fn nodes_in_use_survive_a_scan_of_more_than_the_capacity() {
        let c = NodeCache::with_capacity(16);
        let hot: Vec<PageId> = (2..6).collect();
        for &p in &hot {
            drop(c.insert(span(p), leaf(p as u8)));
        }
        for p in 100..200 {
            for &h in &hot {
                assert!(c.get(span(h)).is_some(), "hot node {h} evicted by the scan at {p}");
            }
            drop(c.insert(span(p), leaf(p as u8)));
        }
        assert!(c.nodes.lock().pages <= 16);
        // the scanned nodes came and went; the last ones are there
        assert!(c.get(span(199)).is_some());
        assert!(c.get(span(100)).is_none());
    }

    /// `forget` removes every node starting in the range, and its slot is reused.
    #[test]
    fn forget_removes_the_range_and_slots_are_reused() {
        let c = NodeCache::with_capacity(8);
        for p in 2..6 {
            drop(c.insert(span(p), leaf(p as u8)));
        }
        assert_eq!(c.forget(3, 2).len(), 2);
        assert!(c.get(span(3)).is_none() && c.get(span(4)).is_none());
        assert!(c.get(span(2)).is_some() && c.get(span(5)).is_some());
        drop(c.insert(span(7), leaf(7)));
        assert_eq!(c.nodes.lock().slots.len(), 4, "a vacant slot is reused");
        // a node cached under the same start with another length is not returned
        assert!(c.get(Span { start: 7, pages: 2 }).is_none());
    }

    /// While the nodes an insert evicted are still held (not yet freed), another thread's
    /// `get` completes: freeing them never holds the lock readers take.
    #[test]
    fn a_get_completes_while_evicted_nodes_are_being_freed() {
        let c = Arc::new(NodeCache::with_capacity(4));
        for p in 2..6 {
            drop(c.insert(span(p), leaf(p as u8)));
        }
        assert!(c.get(span(5)).is_some());
        let evicted = c.insert(span(6), leaf(6));
        assert_eq!(evicted.len(), 1);
        let (tx, rx) = mpsc::channel();
        let reader = {
            let c = c.clone();
            std::thread::spawn(move || tx.send(c.get(span(5)).is_some()).unwrap())
        };
        let answered = rx.recv_timeout(Duration::from_secs(10));
        drop(evicted);
        reader.join().unwrap();
        assert_eq!(answered, Ok(true), "a reader waited for the eviction's frees");
    }
}
