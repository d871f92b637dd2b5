//! The key index: an ordered map from key to its [`KeyIndex`] (all of its revisions).
//!
//! Lock: `tree` guards the whole map. Writers (the single apply thread, and the compactor
//! in chunks of [`COMPACT_CHUNK`] keys) hold it briefly; readers hold the read side for the
//! length of one range walk. It is a leaf lock: nothing else is locked while it is held.
//! The lock-reduced index (readers never waiting on compaction at all) replaces this map
//! behind the same methods.

use std::collections::{BTreeMap, HashSet};
use std::ops::Bound;

use parking_lot::RwLock;

use crate::error::Result;
use crate::key_index::{KeyAt, KeyIndex};
use crate::revision::Revision;

/// How many keys the compactor processes per write-lock hold.
pub const COMPACT_CHUNK: usize = 1000;

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

    fn bounds(&self) -> Option<(Bound<&'a [u8]>, Bound<&'a [u8]>)> {
        match *self {
            KeySpan::Single(k) => Some((Bound::Included(k), Bound::Included(k))),
            KeySpan::Range(s, None) => Some((Bound::Included(s), Bound::Unbounded)),
            KeySpan::Range(s, Some(e)) if e > s => Some((Bound::Included(s), Bound::Excluded(e))),
            KeySpan::Range(_, Some(_)) => None, // empty or inverted interval
        }
    }
}

/// One key visible at the asked revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexHit {
    /// The key.
    pub key: Vec<u8>,
    /// Its state at the asked revision.
    pub at: KeyAt,
}

/// The ordered key index.
#[derive(Default)]
pub struct TreeIndex {
    tree: RwLock<BTreeMap<Vec<u8>, KeyIndex>>,
}

impl TreeIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a put of `key` at `rev`.
    pub fn put(&self, key: &[u8], rev: Revision) -> Result<()> {
        let mut tree = self.tree.write();
        match tree.get_mut(key) {
            Some(ki) => ki.put(rev),
            None => {
                let mut ki = KeyIndex::default();
                ki.put(rev)?;
                tree.insert(key.to_vec(), ki);
                Ok(())
            }
        }
    }

    /// Records the deletion of `key` at `rev`.
    pub fn tombstone(&self, key: &[u8], rev: Revision) -> Result<()> {
        let mut tree = self.tree.write();
        match tree.get_mut(key) {
            Some(ki) => ki.tombstone(rev),
            None => Err(crate::error::Error::corrupt("key index", "tombstone of an unknown key")),
        }
    }

    /// Rebuild step: records the first surviving revision of a key's generation with the
    /// creation revision and version stored in its value (compaction may have removed the
    /// revisions that would let the index count them).
    pub fn restore(&self, key: &[u8], created: Revision, rev: Revision, version: i64) -> Result<()> {
        let mut tree = self.tree.write();
        let ki = tree.entry(key.to_vec()).or_default();
        ki.restore(created, rev, version)
    }

    /// True if the index knows the key at all (live, deleted or with history).
    pub fn contains(&self, key: &[u8]) -> bool {
        self.tree.read().contains_key(key)
    }

    /// The key as visible at revision `at`.
    pub fn get(&self, key: &[u8], at: i64) -> Option<KeyAt> {
        self.tree.read().get(key).and_then(|ki| ki.get(at))
    }

    /// Keys of `span` visible at `at`, in key order: at most `limit` hits (0 = all) and the
    /// total number of visible keys in the span (counted without collecting them).
    pub fn range(&self, span: &KeySpan<'_>, at: i64, limit: usize) -> (Vec<IndexHit>, i64) {
        let tree = self.tree.read();
        let mut hits = Vec::new();
        let mut total = 0i64;
        if let KeySpan::Single(k) = span {
            if let Some(at) = tree.get(*k).and_then(|ki| ki.get(at)) {
                hits.push(IndexHit { key: k.to_vec(), at });
                total = 1;
            }
            return (hits, total);
        }
        let Some(bounds) = span.bounds() else { return (hits, 0) };
        for (k, ki) in tree.range::<[u8], _>(bounds) {
            if let Some(at) = ki.get(at) {
                total += 1;
                if limit == 0 || hits.len() < limit {
                    hits.push(IndexHit { key: k.clone(), at });
                }
            }
        }
        (hits, total)
    }

    /// Number of keys of `span` visible at `at`.
    pub fn count(&self, span: &KeySpan<'_>, at: i64) -> i64 {
        let tree = self.tree.read();
        if let KeySpan::Single(k) = span {
            return tree.get(*k).and_then(|ki| ki.get(at)).is_some() as i64;
        }
        let Some(bounds) = span.bounds() else { return 0 };
        tree.range::<[u8], _>(bounds).filter(|(_, ki)| ki.get(at).is_some()).count() as i64
    }

    /// Compacts every key at `at`, a chunk of keys per lock hold, dropping keys left with
    /// no history; returns the revisions the backend must keep.
    pub fn compact(&self, at: i64) -> HashSet<Revision> {
        let mut available = HashSet::new();
        let mut from: Option<Vec<u8>> = None;
        loop {
            let mut tree = self.tree.write();
            let lower = match &from {
                Some(k) => Bound::Included(k.as_slice()),
                None => Bound::Unbounded,
            };
            let mut emptied = Vec::new();
            let mut next = None;
            for (n, (k, ki)) in tree.range_mut::<[u8], _>((lower, Bound::Unbounded)).enumerate() {
                if n == COMPACT_CHUNK {
                    next = Some(k.clone());
                    break;
                }
                ki.compact(at, &mut available);
                if ki.is_empty() {
                    emptied.push(k.clone());
                }
            }
            for k in emptied {
                tree.remove(&k);
            }
            drop(tree);
            match next {
                Some(k) => from = Some(k),
                None => return available,
            }
        }
    }

    /// The revisions a compaction at `at` would keep, without compacting.
    pub fn keep(&self, at: i64) -> HashSet<Revision> {
        let tree = self.tree.read();
        let mut available = HashSet::new();
        for ki in tree.values() {
            ki.keep(at, &mut available);
        }
        available
    }

    /// Replaces the whole map with `other`'s in one write-lock hold (a snapshot restore:
    /// readers see the old index or the new one, never a mix).
    pub(crate) fn replace(&self, other: TreeIndex) {
        *self.tree.write() = other.tree.into_inner();
    }

    /// Number of keys the index holds (live or with history).
    pub fn len(&self) -> usize {
        self.tree.read().len()
    }

    /// True when the index holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(m: i64) -> Revision {
        Revision::new(m, 0)
    }

    fn sample() -> TreeIndex {
        let ix = TreeIndex::new();
        ix.put(b"a", r(1)).unwrap();
        ix.put(b"b", r(2)).unwrap();
        ix.put(b"c", r(3)).unwrap();
        ix.tombstone(b"b", r(4)).unwrap();
        ix.put(b"a", r(5)).unwrap();
        ix
    }

    #[test]
    fn spans_decode_etcd_convention() {
        assert_eq!(KeySpan::new(b"a", b""), KeySpan::Single(b"a"));
        assert_eq!(KeySpan::new(b"a", b"\0"), KeySpan::Range(b"a", None));
        assert_eq!(KeySpan::new(b"a", b"c"), KeySpan::Range(b"a", Some(b"c")));
        assert!(KeySpan::new(b"a", b"\0").contains(b"zzz"));
        assert!(!KeySpan::new(b"b", b"c").contains(b"c"));
    }

    #[test]
    fn range_at_revisions_and_limits() {
        let ix = sample();
        let all = KeySpan::new(b"a", b"\0");
        let keys = |at, limit| {
            let (hits, total) = ix.range(&all, at, limit);
            (hits.into_iter().map(|h| h.key).collect::<Vec<_>>(), total)
        };
        assert_eq!(keys(3, 0), (vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()], 3));
        assert_eq!(keys(4, 0), (vec![b"a".to_vec(), b"c".to_vec()], 2));
        assert_eq!(keys(4, 1), (vec![b"a".to_vec()], 2), "limit does not change the total");
        assert_eq!(ix.count(&all, 3), 3);
        assert_eq!(ix.count(&KeySpan::new(b"b", b"c"), 4), 0);
        assert_eq!(ix.range(&KeySpan::new(b"c", b"a"), 5, 0).1, 0, "inverted span is empty");
        assert_eq!(ix.get(b"a", 5).unwrap().version, 2);
    }

    #[test]
    fn compaction_removes_dead_keys_in_chunks() {
        let ix = TreeIndex::new();
        let n = COMPACT_CHUNK * 2 + 7;
        for i in 0..n {
            let k = format!("k{i:05}");
            ix.put(k.as_bytes(), r(i as i64 * 2 + 1)).unwrap();
            ix.tombstone(k.as_bytes(), r(i as i64 * 2 + 2)).unwrap();
        }
        ix.put(b"live", r(n as i64 * 2 + 1)).unwrap();
        let keep = ix.compact(n as i64 * 2 + 1);
        assert_eq!(keep, HashSet::from([r(n as i64 * 2 + 1)]));
        assert_eq!(ix.len(), 1);
    }
}
