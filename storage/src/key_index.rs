//! The history of one key: generations of revisions.
//!
//! A key's life is a sequence of *generations*. A generation starts with the put that
//! (re)creates the key and ends with the tombstone that deletes it; the last generation is
//! open (it has no tombstone yet, or is empty when the key is currently deleted).
//!
//! # Worked example
//! ```text
//! put(foo) @1.0; put(foo) @2.0; delete(foo) @3.0; put(foo) @4.0; delete(foo) @5.0
//!
//! generations:
//!   {created 1.0, ver 3, revs [1.0, 2.0, 3.0(tombstone)]}
//!   {created 4.0, ver 2, revs [4.0, 5.0(tombstone)]}
//!   {empty}                                   <- open generation, key currently absent
//! ```
//! * `get(2)` finds the first generation (its first rev 1.0 ≤ 2 and its tombstone 3 > 2) and
//!   answers mod 2.0, created 1.0, version 2.
//! * `get(3)` answers nothing: the generation containing 3 ends in a tombstone at 3.
//! * `compact(2)` keeps 2.0 (the newest revision ≤ 2, still needed to answer `get(2)`) and
//!   drops 1.0: `{[2.0, 3.0]}, {[4.0, 5.0]}, {}`.
//! * `compact(4)` drops the whole first generation (its tombstone 3 ≤ 4 means no read at
//!   ≥ 4 can see it) and keeps 4.0: `{[4.0, 5.0]}, {}`.
//! * `compact(5)` drops the second generation as well (its tombstone 5 ≤ 5): what remains
//!   is `{}`, the key index is empty and is removed from the tree. A tombstone is never
//!   kept in the backend once compacted over.
//!
//! The revisions `compact` keeps (the *available* set) are those whose backend entries
//! must survive a compaction; everything else at or below the compaction revision is
//! deleted from the backend.
//!
//! Invariants (checked in debug builds by `check_invariants`): generations other than the
//! last are non-empty and end in their tombstone; revisions strictly increase across the
//! whole index; only the last generation may be empty.

use std::collections::HashSet;

use crate::error::{Error, Result};
use crate::rev_list::RevList;
use crate::revision::Revision;

/// One life of a key: from its creation to its deletion.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Generation {
    /// Number of puts in this generation (the tombstone counts too, as in etcd).
    pub(crate) ver: i64,
    /// The revision that created the key in this generation.
    pub(crate) created: Revision,
    /// All revisions of the key in this generation, increasing.
    pub(crate) revs: RevList,
}

impl Generation {
    fn is_empty(&self) -> bool {
        self.revs.is_empty()
    }
}

/// What a point-in-time lookup of a key returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyAt {
    /// The revision of the value visible at the asked revision.
    pub modified: Revision,
    /// The revision that created the key's current generation.
    pub created: Revision,
    /// The key's version at that point (1 for the creating put).
    pub version: i64,
}

/// The revisions of one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyIndex {
    /// The newest revision of the key.
    pub(crate) modified: Revision,
    pub(crate) generations: Vec<Generation>,
}

impl Default for KeyIndex {
    fn default() -> Self {
        KeyIndex { modified: Revision::default(), generations: vec![Generation::default()] }
    }
}

impl KeyIndex {
    /// Records a put at `rev`. `rev` must be newer than every revision recorded.
    pub fn put(&mut self, rev: Revision) -> Result<()> {
        if rev <= self.modified && self.modified != Revision::default() {
            return Err(Error::corrupt("key index", format!("put {rev} not after {}", self.modified)));
        }
        if self.generations.is_empty() {
            self.generations.push(Generation::default());
        }
        let g = self.generations.last_mut().expect("non-empty");
        if g.revs.is_empty() {
            g.created = rev;
        }
        g.revs.push(rev);
        g.ver += 1;
        self.modified = rev;
        Ok(())
    }

    /// Records a deletion at `rev`: the tombstone ends the current generation.
    pub fn tombstone(&mut self, rev: Revision) -> Result<()> {
        if self.is_deleted() {
            return Err(Error::corrupt("key index", format!("tombstone {rev} of an absent key")));
        }
        self.put(rev)?;
        self.generations.push(Generation::default());
        Ok(())
    }

    /// Rebuild from the backend: starts the current generation at `rev` with the creation
    /// revision and version recorded in the stored value.
    pub fn restore(&mut self, created: Revision, rev: Revision, version: i64) -> Result<()> {
        if !self.is_deleted() || (rev <= self.modified && self.modified != Revision::default()) {
            return Err(Error::corrupt("key index", format!("restore at {rev} over live history")));
        }
        if self.generations.is_empty() {
            self.generations.push(Generation::default());
        }
        let g = self.generations.last_mut().expect("non-empty");
        g.created = created;
        g.ver = version;
        g.revs.push(rev);
        self.modified = rev;
        Ok(())
    }

    /// Gives back spare capacity (a history built once and kept: the rebuild).
    pub(crate) fn shrink_to_fit(&mut self) {
        self.generations.shrink_to_fit();
        for g in &mut self.generations {
            g.revs.shrink_to_fit();
        }
    }

    /// True when the key has no live value now (never written, or deleted last).
    pub fn is_deleted(&self) -> bool {
        self.generations.last().is_none_or(Generation::is_empty)
    }

    /// True when the index holds nothing at all (the key can be dropped from the tree).
    pub fn is_empty(&self) -> bool {
        self.generations.len() == 1 && self.generations[0].is_empty()
    }

    /// The key as visible at store revision `at`, or `None` if it did not exist then.
    pub fn get(&self, at: i64) -> Option<KeyAt> {
        let g = self.find_generation(at)?;
        // the newest revision of the generation that is not after `at`
        let n = g.revs.partition_point(|r| r.main <= at);
        if n == 0 {
            return None;
        }
        let idx = n - 1;
        let version = g.ver - (g.revs.len() - 1 - idx) as i64;
        Some(KeyAt { modified: g.revs[idx], created: g.created, version })
    }

    /// The generation that holds the key's value at revision `at`, if the key existed then.
    fn find_generation(&self, at: i64) -> Option<&Generation> {
        let last = self.generations.len().checked_sub(1)?;
        for (i, g) in self.generations.iter().enumerate().rev() {
            if g.is_empty() {
                continue;
            }
            if i != last {
                // a closed generation: its last revision is the tombstone
                let tomb = g.revs[g.revs.len() - 1].main;
                if tomb <= at {
                    return None;
                }
            }
            if g.revs[0].main <= at {
                return Some(g);
            }
        }
        None
    }

    /// Every revision of the key with `main > after`, oldest first (for watch catch-up).
    pub fn revisions_since(&self, after: i64) -> Vec<Revision> {
        self.generations
            .iter()
            .flat_map(|g| g.revs.iter())
            .filter(|r| r.main > after)
            .copied()
            .collect()
    }

    /// Drops history no read at a revision ≥ `at` can need and adds the revisions that
    /// must stay in the backend to `available` (see the module docs for the rules).
    pub fn compact(&mut self, at: i64, available: &mut HashSet<Revision>) {
        if let Some(kept) = self.compact_kept(at) {
            available.insert(kept);
        }
    }

    /// [`KeyIndex::compact`] for one key: returns the one revision of it the backend must
    /// keep, if any.
    pub fn compact_kept(&mut self, at: i64) -> Option<Revision> {
        if self.is_empty() {
            return None;
        }
        let (mut gen_idx, rev_idx) = self.locate(at);
        let mut kept = rev_idx.map(|ri| self.generations[gen_idx].revs[ri]);
        let last = self.generations.len() - 1;
        let g = &mut self.generations[gen_idx];
        if !g.is_empty() {
            if let Some(ri) = rev_idx {
                g.revs.drain_front(ri);
            }
            // a generation reduced to its tombstone is gone entirely
            if g.revs.len() == 1 && gen_idx != last {
                kept = None;
                gen_idx += 1;
            }
        }
        self.generations.drain(..gen_idx);
        self.check_invariants();
        kept
    }

    /// Like [`KeyIndex::compact`] but changes nothing: only fills `available`.
    pub fn keep(&self, at: i64, available: &mut HashSet<Revision>) {
        available.extend(self.kept(at));
    }

    /// Like [`KeyIndex::compact_kept`] but changes nothing: the one revision of the key a
    /// compaction at `at` keeps, if any.
    pub fn kept(&self, at: i64) -> Option<Revision> {
        if self.is_empty() {
            return None;
        }
        let (gen_idx, rev_idx) = self.locate(at);
        let g = &self.generations[gen_idx];
        let ri = rev_idx?;
        // the newest revision ≤ `at` is the tombstone of a closed generation: nothing
        (ri != g.revs.len() - 1 || gen_idx == self.generations.len() - 1).then(|| g.revs[ri])
    }

    /// True when [`KeyIndex::compact`] at `at` would change the key's history (the
    /// compactor copies only the keys for which it does).
    pub fn compaction_changes(&self, at: i64) -> bool {
        if self.is_empty() {
            return false;
        }
        // mirrors `compact`: generations dropped, revisions drained, or the generation
        // reduced to its tombstone
        let (gen_idx, rev_idx) = self.locate(at);
        if gen_idx > 0 {
            return true;
        }
        let g = &self.generations[0];
        if g.is_empty() {
            return false;
        }
        let remaining = g.revs.len() - rev_idx.unwrap_or(0);
        rev_idx.is_some_and(|ri| ri > 0) || (remaining == 1 && self.generations.len() > 1)
    }

    /// The first generation that can still be read at `at` and, within it, the index of
    /// the newest revision ≤ `at`.
    fn locate(&self, at: i64) -> (usize, Option<usize>) {
        let mut gen_idx = 0;
        while gen_idx < self.generations.len() - 1 {
            let g = &self.generations[gen_idx];
            let tomb = g.revs[g.revs.len() - 1].main;
            if tomb > at {
                break;
            }
            gen_idx += 1;
        }
        let g = &self.generations[gen_idx];
        let rev_idx = g.revs.rposition(|r| r.main <= at);
        (gen_idx, rev_idx)
    }

    /// Verifies the structural invariants; a no-op in release builds.
    pub(crate) fn check_invariants(&self) {
        if !cfg!(debug_assertions) {
            return;
        }
        let mut prev: Option<Revision> = None;
        let last = self.generations.len().saturating_sub(1);
        for (i, g) in self.generations.iter().enumerate() {
            assert!(i == last || !g.is_empty(), "key index: empty generation {i} before the last");
            for r in g.revs.iter() {
                if let Some(p) = prev {
                    assert!(*r > p, "key index: revisions not increasing: {p} then {r}");
                }
                prev = Some(*r);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(m: i64) -> Revision {
        Revision::new(m, 0)
    }

    /// The module docs' worked example.
    fn example() -> KeyIndex {
        let mut ki = KeyIndex::default();
        ki.put(r(1)).unwrap();
        ki.put(r(2)).unwrap();
        ki.tombstone(r(3)).unwrap();
        ki.put(r(4)).unwrap();
        ki.tombstone(r(5)).unwrap();
        ki
    }

    #[test]
    fn get_follows_generations() {
        let ki = example();
        assert_eq!(ki.get(0), None);
        assert_eq!(ki.get(1), Some(KeyAt { modified: r(1), created: r(1), version: 1 }));
        assert_eq!(ki.get(2), Some(KeyAt { modified: r(2), created: r(1), version: 2 }));
        assert_eq!(ki.get(3), None);
        assert_eq!(ki.get(4), Some(KeyAt { modified: r(4), created: r(4), version: 1 }));
        assert_eq!(ki.get(5), None);
        assert_eq!(ki.get(100), None);
        assert!(ki.is_deleted());
    }

    #[test]
    fn compact_follows_the_worked_example() {
        let mut ki = example();
        let mut avail = HashSet::new();
        ki.compact(2, &mut avail);
        assert_eq!(avail, HashSet::from([r(2)]));
        assert_eq!(ki.generations[0].revs, vec![r(2), r(3)]);
        assert_eq!(ki.get(2).unwrap().version, 2, "version survives compaction");

        let mut avail = HashSet::new();
        ki.compact(4, &mut avail);
        assert_eq!(avail, HashSet::from([r(4)]));
        assert_eq!(ki.generations[0].revs, vec![r(4), r(5)]);

        let mut avail = HashSet::new();
        ki.compact(5, &mut avail);
        assert!(avail.is_empty(), "a lone tombstone is not kept: {avail:?}");
        assert!(ki.is_empty());
    }

    #[test]
    fn compact_live_key_keeps_latest_at_or_below() {
        let mut ki = KeyIndex::default();
        for m in [2, 4, 6] {
            ki.put(r(m)).unwrap();
        }
        let mut avail = HashSet::new();
        ki.compact(5, &mut avail);
        assert_eq!(avail, HashSet::from([r(4)]));
        assert_eq!(ki.generations[0].revs, vec![r(4), r(6)]);
        assert_eq!(ki.get(5).unwrap(), KeyAt { modified: r(4), created: r(2), version: 2 });
        // compacting below everything keeps all
        let mut avail = HashSet::new();
        ki.compact(1, &mut avail);
        assert!(avail.is_empty());
        assert_eq!(ki.generations[0].revs, vec![r(4), r(6)]);
    }

    #[test]
    fn keep_matches_compact() {
        for at in 0..7 {
            let ki = example();
            let mut keep = HashSet::new();
            ki.keep(at, &mut keep);
            let mut c = ki.clone();
            let mut avail = HashSet::new();
            c.compact(at, &mut avail);
            assert_eq!(keep, avail, "at {at}");
        }
        let mut live = KeyIndex::default();
        for m in [2, 4, 6] {
            live.put(r(m)).unwrap();
        }
        for ki in [example(), live] {
            for at in 0..8 {
                assert_eq!(ki.kept(at), ki.clone().compact_kept(at), "at {at}: {ki:?}");
            }
        }
    }

    #[test]
    fn compaction_changes_iff_compact_changes() {
        let mut live = KeyIndex::default();
        for m in [2, 4, 6] {
            live.put(r(m)).unwrap();
        }
        let mut lone = KeyIndex::default();
        lone.put(r(3)).unwrap();
        for ki in [example(), live, lone] {
            for at in 0..8 {
                let mut c = ki.clone();
                c.compact(at, &mut HashSet::new());
                assert_eq!(ki.compaction_changes(at), c != ki, "at {at}: {ki:?}");
            }
        }
    }

    #[test]
    fn bad_sequences_are_errors() {
        let mut ki = KeyIndex::default();
        assert!(ki.tombstone(r(1)).is_err(), "tombstone of absent key");
        ki.put(r(3)).unwrap();
        assert!(ki.put(r(2)).is_err(), "revision going backwards");
    }

    #[test]
    fn revisions_since() {
        let ki = example();
        assert_eq!(ki.revisions_since(2), vec![r(3), r(4), r(5)]);
        assert!(ki.revisions_since(5).is_empty());
    }
}
