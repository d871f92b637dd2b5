//! The index of synced watches: which watches a changed key concerns, without looking
//! at any other watch (etcd: `watcherGroup` in `watcher_group.go`, whose ranges are an
//! interval tree too).
//!
//! * single-key watches: a hash table from key to the first watch of that key; the
//!   watches of one key are chained through their `prev`/`next` links. One probe.
//! * prefix watches: the same for prefixes, plus the set of prefix lengths in use. A key
//!   of length L is looked up once per registered length ≤ L, never once per watch.
//! * every other range (including "every key ≥ k"): the interval tree (`interval.rs`).
//!
//! The hash tables store bare `u32` slots (hashbrown's `HashTable`), hashing the key
//! bytes that live in the watch record, so no key is stored twice. The hasher is
//! randomly keyed (SipHash) so clients cannot pick colliding keys.
//!
//! Everything here is guarded by the hub lock (`hub.rs`): the index and the watch slab
//! change together.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;

use super::interval::{IntervalTree, Spans};
use super::watcher::{Kind, Slab, Watch, NIL};

impl Spans for Slab<Watch> {
    fn start(&self, slot: u32) -> &[u8] {
        self.at(slot).key()
    }
    fn end(&self, slot: u32) -> Option<&[u8]> {
        self.at(slot).range_end()
    }
}

/// The synced watches by what they watch (see the module docs).
pub(crate) struct WatchIndex {
    hasher: RandomState,
    singles: HashTable<u32>,
    prefixes: HashTable<u32>,
    /// Prefix length → number of prefix watches of that length.
    prefix_lens: BTreeMap<u32, u32>,
    ranges: IntervalTree,
}

impl Default for WatchIndex {
    fn default() -> Self {
        WatchIndex {
            hasher: RandomState::new(),
            singles: HashTable::new(),
            prefixes: HashTable::new(),
            prefix_lens: BTreeMap::new(),
            ranges: IntervalTree::new(),
        }
    }
}

impl WatchIndex {
    /// Number of watches in the index.
    #[cfg(test)]
    pub fn len(&self, slab: &Slab<Watch>) -> usize {
        let chain_len = |t: &HashTable<u32>| {
            t.iter()
                .map(|&head| {
                    let mut n = 0;
                    let mut s = head;
                    while s != NIL {
                        n += 1;
                        s = slab.at(s).next;
                    }
                    n
                })
                .sum::<usize>()
        };
        chain_len(&self.singles) + chain_len(&self.prefixes) + self.ranges.len()
    }

    /// Adds the watch in `slot` (not yet in the index).
    pub fn insert(&mut self, slab: &mut Slab<Watch>, slot: u32) {
        let kind = slab.at(slot).kind();
        match kind {
            Kind::Range => self.ranges.insert(slab, slot),
            Kind::Single | Kind::Prefix => {
                let table = if kind == Kind::Single { &mut self.singles } else { &mut self.prefixes };
                let key = slab.at(slot).key();
                let hash = self.hasher.hash_one(key);
                let head = table.find(hash, |&h| slab.at(h).key() == key).copied();
                match head {
                    Some(head) => {
                        // the new watch becomes the head of the key's chain
                        if let Some(entry) = table.find_mut(hash, |&h| h == head) {
                            *entry = slot;
                        }
                        slab.at_mut(head).prev = slot;
                        let w = slab.at_mut(slot);
                        w.prev = NIL;
                        w.next = head;
                    }
                    None => {
                        table.insert_unique(hash, slot, |&h| self.hasher.hash_one(slab.at(h).key()));
                        let w = slab.at_mut(slot);
                        w.prev = NIL;
                        w.next = NIL;
                    }
                }
                if kind == Kind::Prefix {
                    let len = slab.at(slot).key().len() as u32;
                    *self.prefix_lens.entry(len).or_insert(0) += 1;
                }
            }
        }
    }

    /// Removes the watch in `slot`, which must be in the index.
    pub fn remove(&mut self, slab: &mut Slab<Watch>, slot: u32) {
        let kind = slab.at(slot).kind();
        if kind == Kind::Range {
            let found = self.ranges.remove(slab, slot);
            debug_assert!(found, "range watch {slot} missing from the interval tree");
            return;
        }
        let (prev, next) = {
            let w = slab.at(slot);
            (w.prev, w.next)
        };
        if prev != NIL {
            slab.at_mut(prev).next = next;
        }
        if next != NIL {
            slab.at_mut(next).prev = prev;
        }
        if prev == NIL {
            // it was the head: the table points at it
            let table = if kind == Kind::Single { &mut self.singles } else { &mut self.prefixes };
            let hash = self.hasher.hash_one(slab.at(slot).key());
            if let Ok(entry) = table.find_entry(hash, |&h| h == slot) {
                if next == NIL {
                    entry.remove();
                } else {
                    *entry.into_mut() = next;
                }
            } else {
                debug_assert!(false, "watch {slot} heads no chain");
            }
        }
        let w = slab.at_mut(slot);
        w.prev = NIL;
        w.next = NIL;
        if kind == Kind::Prefix {
            let len = slab.at(slot).key().len() as u32;
            if let Some(n) = self.prefix_lens.get_mut(&len) {
                *n -= 1;
                if *n == 0 {
                    self.prefix_lens.remove(&len);
                }
            }
        }
        if self.singles.is_empty() {
            self.singles = HashTable::new();
        }
        if self.prefixes.is_empty() {
            self.prefixes = HashTable::new();
        }
    }

    /// Calls `f` with the slot of every indexed watch that `key` falls in.
    pub fn matches(&self, slab: &Slab<Watch>, key: &[u8], f: &mut impl FnMut(u32)) {
        let walk = |head: u32, f: &mut dyn FnMut(u32)| {
            let mut s = head;
            while s != NIL {
                f(s);
                s = slab.at(s).next;
            }
        };
        if !self.singles.is_empty() {
            let hash = self.hasher.hash_one(key);
            if let Some(&head) = self.singles.find(hash, |&h| slab.at(h).key() == key) {
                walk(head, f);
            }
        }
        for &len in self.prefix_lens.keys() {
            let Some(prefix) = key.get(..len as usize) else { break };
            let hash = self.hasher.hash_one(prefix);
            if let Some(&head) = self.prefixes.find(hash, |&h| slab.at(h).key() == prefix) {
                walk(head, f);
            }
        }
        if self.ranges.len() > 0 {
            self.ranges.stab(slab, key, f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::watcher::prefix_end;

    fn add(slab: &mut Slab<Watch>, idx: &mut WatchIndex, key: &[u8], end: &[u8]) -> u32 {
        let (kind, end) = match end {
            [] => (Kind::Single, None),
            [0] => (Kind::Range, None),
            e if prefix_end(key).as_deref() == Some(e) => (Kind::Prefix, None),
            e => (Kind::Range, Some(e)),
        };
        let slot = slab.insert(Watch::new(key, end, kind, 0, 0, 0, 0));
        idx.insert(slab, slot);
        slot
    }

    fn matches(slab: &Slab<Watch>, idx: &WatchIndex, key: &[u8]) -> Vec<u32> {
        let mut v = vec![];
        idx.matches(slab, key, &mut |s| v.push(s));
        v.sort();
        v
    }

    #[test]
    fn kinds_match_like_etcd_ranges() {
        let mut slab = Slab::default();
        let mut idx = WatchIndex::default();
        let a = add(&mut slab, &mut idx, b"foo", b"");
        let b = add(&mut slab, &mut idx, b"foo", b"");
        let p = add(&mut slab, &mut idx, b"fo", b"fp");
        let p2 = add(&mut slab, &mut idx, b"f", b"g");
        let r = add(&mut slab, &mut idx, b"a", b"fz");
        let from = add(&mut slab, &mut idx, b"foo", b"\0");
        assert_eq!(matches(&slab, &idx, b"foo"), vec![a, b, p, p2, r, from]);
        assert_eq!(matches(&slab, &idx, b"fo"), vec![p, p2, r]);
        assert_eq!(matches(&slab, &idx, b"zzz"), vec![from]);
        idx.remove(&mut slab, a);
        idx.remove(&mut slab, p);
        slab.remove(a);
        assert_eq!(matches(&slab, &idx, b"foo"), vec![b, p2, r, from]);
        idx.remove(&mut slab, b);
        idx.remove(&mut slab, p2);
        idx.remove(&mut slab, r);
        idx.remove(&mut slab, from);
        assert_eq!(matches(&slab, &idx, b"foo"), Vec::<u32>::new());
        assert!(idx.prefix_lens.is_empty());
        assert_eq!(idx.len(&slab), 0);
    }

    #[test]
    fn chains_survive_removal_in_any_order() {
        let mut slab = Slab::default();
        let mut idx = WatchIndex::default();
        let slots: Vec<u32> = (0..6).map(|_| add(&mut slab, &mut idx, b"k", b"")).collect();
        for &s in &[slots[2], slots[5], slots[0]] {
            idx.remove(&mut slab, s);
        }
        assert_eq!(matches(&slab, &idx, b"k"), vec![slots[1], slots[3], slots[4]]);
        assert_eq!(idx.len(&slab), 3);
    }
}
