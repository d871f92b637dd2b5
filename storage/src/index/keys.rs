//! [`Keys`]: the keys of one index node, packed in one buffer (`cow.rs` holds one per node).

/// The keys of one node, packed back to back in one buffer.
///
/// A writer copies every node on its path that a published version still shares, and such
/// a copy used to touch one reference count per key (a separate allocation each, so mostly
/// cache misses): the largest cost of a put. Packed keys are copied as two buffers, a
/// search reads one contiguous buffer, and a key costs its bytes plus one offset.
///
/// Invariant: `ends` increases; key `i` is `bytes[ends[i - 1]..ends[i]]` (from 0 for the
/// first); `ends.last()` is `bytes.len()`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Keys {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Keys {
    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    fn start(&self, i: usize) -> usize {
        if i == 0 { 0 } else { self.ends[i - 1] }
    }

    /// Key `i` (`i < len`).
    pub(crate) fn get(&self, i: usize) -> &[u8] {
        &self.bytes[self.start(i)..self.ends[i]]
    }

    pub(crate) fn first(&self) -> Option<&[u8]> {
        (!self.ends.is_empty()).then(|| self.get(0))
    }

    /// The number of leading keys for which `pred` holds (`pred` must hold for a prefix).
    pub(crate) fn partition_point(&self, mut pred: impl FnMut(&[u8]) -> bool) -> usize {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if pred(self.get(mid)) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// `Ok(i)` when key `i` is `key`, else `Err(i)` where it would go.
    pub(crate) fn search(&self, key: &[u8]) -> Result<usize, usize> {
        let i = self.partition_point(|k| k < key);
        if i < self.len() && self.get(i) == key { Ok(i) } else { Err(i) }
    }

    pub(crate) fn insert(&mut self, i: usize, key: &[u8]) {
        let at = self.start(i);
        let old = self.bytes.len();
        // exact: a node's buffer is copied with every path copy and kept by every version
        self.bytes.reserve_exact(key.len());
        self.ends.reserve_exact(1);
        self.bytes.resize(old + key.len(), 0);
        self.bytes.copy_within(at..old, at + key.len());
        self.bytes[at..at + key.len()].copy_from_slice(key);
        for e in &mut self.ends[i..] {
            *e += key.len();
        }
        self.ends.insert(i, at + key.len());
    }

    pub(crate) fn remove(&mut self, i: usize) {
        let (s, e) = (self.start(i), self.ends[i]);
        self.bytes.drain(s..e);
        self.ends.remove(i);
        for x in &mut self.ends[i..] {
            *x -= e - s;
        }
    }

    /// Appends `key`, which must sort after every key held (a bulk load).
    pub(crate) fn push(&mut self, key: &[u8]) {
        debug_assert!(self.ends.is_empty() || self.get(self.len() - 1) < key, "keys pushed out of order");
        self.bytes.extend_from_slice(key);
        self.ends.push(self.bytes.len());
    }

    /// Gives back unused capacity.
    pub(crate) fn shrink_to_fit(&mut self) {
        self.bytes.shrink_to_fit();
        self.ends.shrink_to_fit();
    }

    /// Makes key `i` be `key` (nothing is moved when it already is).
    pub(crate) fn set(&mut self, i: usize, key: &[u8]) {
        if self.get(i) != key {
            self.remove(i);
            self.insert(i, key);
        }
    }

    /// Moves keys `at..` into a new `Keys`, returned.
    pub(crate) fn split_off(&mut self, at: usize) -> Keys {
        let cut = self.start(at);
        let bytes = self.bytes.split_off(cut);
        let ends = self.ends.split_off(at).into_iter().map(|e| e - cut).collect();
        // the kept half gives back what it no longer uses (every version keeps the node)
        self.shrink_to_fit();
        Keys { bytes, ends }
    }

    pub(crate) fn append(&mut self, other: &Keys) {
        let base = self.bytes.len();
        self.bytes.extend_from_slice(&other.bytes);
        self.ends.extend(other.ends.iter().map(|e| e + base));
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::Keys;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(Vec<u8>),
        Remove(usize),
        Set(usize, Vec<u8>),
        SplitAppend(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        let key = proptest::collection::vec(0u8..4, 0..6);
        prop_oneof![
            3 => key.clone().prop_map(Op::Insert),
            1 => any::<usize>().prop_map(Op::Remove),
            1 => (any::<usize>(), key).prop_map(|(i, k)| Op::Set(i, k)),
            1 => any::<usize>().prop_map(Op::SplitAppend),
        ]
    }

    fn assert_same(k: &Keys, model: &[Vec<u8>]) {
        assert_eq!(k.len(), model.len());
        for (i, m) in model.iter().enumerate() {
            assert_eq!(k.get(i), m.as_slice());
        }
        assert_eq!(k.first(), model.first().map(Vec::as_slice));
    }

    proptest! {
        /// Keys kept sorted and unique behave as a sorted `Vec` of keys: search, insert,
        /// remove, set, split and append.
        #[test]
        fn behaves_as_a_sorted_vec(ops in proptest::collection::vec(op(), 1..80)) {
            let mut k = Keys::default();
            let mut model: Vec<Vec<u8>> = Vec::new();
            for op in ops {
                match op {
                    Op::Insert(key) => {
                        let want = model.binary_search(&key);
                        prop_assert_eq!(k.search(&key), want);
                        if let Err(i) = want {
                            k.insert(i, &key);
                            model.insert(i, key);
                        }
                    }
                    Op::Remove(i) if !model.is_empty() => {
                        let i = i % model.len();
                        k.remove(i);
                        model.remove(i);
                    }
                    // a key between its neighbours keeps the order
                    Op::Set(i, key) if !model.is_empty() => {
                        let i = i % model.len();
                        let fits = (i == 0 || model[i - 1] < key) && model.get(i + 1).is_none_or(|n| &key < n);
                        if fits {
                            k.set(i, &key);
                            model[i] = key;
                        }
                    }
                    Op::SplitAppend(at) => {
                        let at = at % (model.len() + 1);
                        let right = k.split_off(at);
                        assert_same(&k, &model[..at]);
                        assert_same(&right, &model[at..]);
                        k.append(&right);
                    }
                    _ => {}
                }
                assert_same(&k, &model);
                let probe = vec![2u8];
                prop_assert_eq!(k.partition_point(|x| x < probe.as_slice()), model.partition_point(|x| x < &probe));
            }
        }
    }
}
