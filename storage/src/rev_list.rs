//! The revisions of one generation of a key: an append-only list whose clone is cheap.
//!
//! The key index is copy-on-write (`index/`): the first change to a key after each
//! publication copies its history, because readers may still hold the old one. With a plain
//! `Vec` that copy is O(revisions), and a hot key (a Kubernetes lease renewed every few
//! seconds between compactions) was copied whole on every write: the profile of put at 64
//! clients showed ~20% of the Raft thread in that copy and the reallocations behind it.
//! Here full chunks of [`CHUNK`] revisions are frozen behind `Arc`s that versions share, so
//! a clone copies one pointer per chunk and a tail of fewer than [`CHUNK`] revisions.
//!
//! Invariant: every chunk holds exactly [`CHUNK`] revisions; `tail` holds fewer.

use std::sync::Arc;

use crate::revision::Revision;

/// Revisions per frozen chunk.
const CHUNK: usize = 32;

/// See the module docs.
#[derive(Clone, Default)]
pub(crate) struct RevList {
    /// Full chunks, oldest first, shared between versions of the index.
    chunks: Vec<Arc<[Revision]>>,
    /// The newest revisions, fewer than [`CHUNK`].
    tail: Vec<Revision>,
}

impl RevList {
    /// Number of revisions.
    pub(crate) fn len(&self) -> usize {
        self.chunks.len() * CHUNK + self.tail.len()
    }

    /// True when there is none.
    pub(crate) fn is_empty(&self) -> bool {
        self.chunks.is_empty() && self.tail.is_empty()
    }

    /// Appends `rev` (the caller keeps revisions increasing).
    pub(crate) fn push(&mut self, rev: Revision) {
        self.tail.push(rev);
        if self.tail.len() == CHUNK {
            let full: Arc<[Revision]> = std::mem::take(&mut self.tail).into();
            self.chunks.push(full);
        }
    }

    /// Gives back the tail's spare capacity.
    pub(crate) fn shrink_to_fit(&mut self) {
        self.tail.shrink_to_fit();
        self.chunks.shrink_to_fit();
    }

    /// Every revision, oldest first.
    pub(crate) fn iter(&self) -> impl DoubleEndedIterator<Item = &Revision> + '_ {
        self.chunks.iter().flat_map(|c| c.iter()).chain(self.tail.iter())
    }

    /// The number of leading revisions for which `pred` holds (`pred` must hold for a
    /// prefix and fail for the rest, as for `slice::partition_point`).
    pub(crate) fn partition_point(&self, pred: impl Fn(&Revision) -> bool) -> usize {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if pred(&self[mid]) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// The index of the newest revision for which `pred` holds.
    pub(crate) fn rposition(&self, pred: impl Fn(&Revision) -> bool) -> Option<usize> {
        (0..self.len()).rev().find(|&i| pred(&self[i]))
    }

    /// Removes the `n` oldest revisions (compaction; rebuilds the chunks).
    pub(crate) fn drain_front(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        if self.chunks.is_empty() {
            // the usual case (a key with a few revisions): in place, no allocation
            self.tail.drain(..n.min(self.tail.len()));
            return;
        }
        let rest: Vec<Revision> = self.iter().skip(n).copied().collect();
        *self = RevList::default();
        for r in rest {
            self.push(r);
        }
    }
}

impl std::ops::Index<usize> for RevList {
    type Output = Revision;

    fn index(&self, i: usize) -> &Revision {
        let frozen = self.chunks.len() * CHUNK;
        if i < frozen {
            &self.chunks[i / CHUNK][i % CHUNK]
        } else {
            &self.tail[i - frozen]
        }
    }
}

impl std::fmt::Debug for RevList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl PartialEq for RevList {
    fn eq(&self, other: &RevList) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for RevList {}

impl PartialEq<Vec<Revision>> for RevList {
    fn eq(&self, other: &Vec<Revision>) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(m: i64) -> Revision {
        Revision::new(m, 0)
    }

    #[test]
    fn behaves_as_a_vec_across_chunks_and_clones() {
        let mut list = RevList::default();
        let mut model: Vec<Revision> = Vec::new();
        for m in 1..=100 {
            list.push(r(m));
            model.push(r(m));
            assert_eq!(list, model);
            assert_eq!(list.len(), model.len());
            assert_eq!(list[model.len() - 1], r(m));
        }
        let snapshot = list.clone();
        list.push(r(101));
        assert_eq!(snapshot, model, "a clone does not see later pushes");
        model.push(r(101));
        for at in [0, 1, 31, 32, 33, 64, 100, 101, 200] {
            assert_eq!(list.partition_point(|x| x.main <= at), model.partition_point(|x| x.main <= at), "at {at}");
            assert_eq!(list.rposition(|x| x.main <= at), model.iter().rposition(|x| x.main <= at), "at {at}");
        }
        for n in [0, 5, 32, 40, 101] {
            let mut l = list.clone();
            l.drain_front(n);
            assert_eq!(l, model[n..].to_vec(), "drain {n}");
            l.push(r(500));
            assert_eq!(l[l.len() - 1], r(500));
        }
        assert_eq!(list.iter().next_back(), Some(&r(101)));
        // a list without full chunks drains in place, past its end too
        for n in 0..=7 {
            let mut l = RevList::default();
            (1..=5).for_each(|m| l.push(r(m)));
            l.drain_front(n);
            assert_eq!(l, model[n.min(5)..5].to_vec(), "drain {n} of 5");
            l.push(r(500));
            assert_eq!(l.len(), 5 - n.min(5) + 1);
        }
    }
}
