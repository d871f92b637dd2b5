//! An interval tree over the watches of arbitrary ranges `[start, end)` (and unbounded
//! `[start, ∞)`): which ranges contain a key, in O(log n + matches) expected.
//!
//! It is a treap (a binary search tree ordered by `(start, slot)`, heap-ordered by a
//! pseudo-random priority, so expected depth is O(log n)) in which every node also records
//! the slot whose range ends last in its subtree. A stabbing query for `k` skips a subtree
//! whose greatest end is ≤ `k` (nothing in it contains `k`) and the right subtree of a
//! node whose start is > `k` (everything there starts after `k`).
//!
//! Nodes live in an arena addressed by `u32`; keys are not copied: the tree asks [`Spans`]
//! for the bytes of a slot. Worked example, ranges by slot: 0 = [b, d), 1 = [a, z),
//! 2 = [c, ∞). Query `e`: slot 1 (a ≤ e < z) and slot 2 (c ≤ e); slot 0 ends at d ≤ e and
//! is skipped without being visited when its subtree's greatest end is d.

use std::cmp::Ordering;

use super::watcher::NIL;

/// Where the tree reads the ranges of the slots it holds.
pub(crate) trait Spans {
    /// The inclusive start of `slot`'s range.
    fn start(&self, slot: u32) -> &[u8];
    /// The exclusive end of `slot`'s range; `None` is unbounded.
    fn end(&self, slot: u32) -> Option<&[u8]>;
}

#[derive(Clone, Copy)]
struct Node {
    slot: u32,
    left: u32,
    right: u32,
    prio: u32,
    /// The slot with the greatest end in this subtree.
    max: u32,
}

/// The interval treap (see the module docs).
#[derive(Default)]
pub(crate) struct IntervalTree {
    nodes: Vec<Node>,
    free: Vec<u32>,
    root: u32,
    len: usize,
    seed: u32,
}

/// Compares two ends, `None` (unbounded) being the greatest.
fn cmp_end(a: Option<&[u8]>, b: Option<&[u8]>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(x), Some(y)) => x.cmp(y),
    }
}

impl IntervalTree {
    pub fn new() -> Self {
        IntervalTree { nodes: Vec::new(), free: Vec::new(), root: NIL, len: 0, seed: 0x9e37_79b9 }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    fn cmp_key<S: Spans>(s: &S, a: u32, b: u32) -> Ordering {
        s.start(a).cmp(s.start(b)).then(a.cmp(&b))
    }

    fn pull<S: Spans>(&mut self, s: &S, n: u32) {
        let node = self.nodes[n as usize];
        let mut max = node.slot;
        for child in [node.left, node.right] {
            if child != NIL {
                let m = self.nodes[child as usize].max;
                if cmp_end(s.end(m), s.end(max)) == Ordering::Greater {
                    max = m;
                }
            }
        }
        self.nodes[n as usize].max = max;
    }

    /// Splits `t` into the nodes ordered before `slot` and the rest.
    fn split<S: Spans>(&mut self, s: &S, t: u32, slot: u32) -> (u32, u32) {
        if t == NIL {
            return (NIL, NIL);
        }
        let node_slot = self.nodes[t as usize].slot;
        if Self::cmp_key(s, node_slot, slot) == Ordering::Less {
            let (l, r) = self.split(s, self.nodes[t as usize].right, slot);
            self.nodes[t as usize].right = l;
            self.pull(s, t);
            (t, r)
        } else {
            let (l, r) = self.split(s, self.nodes[t as usize].left, slot);
            self.nodes[t as usize].left = r;
            self.pull(s, t);
            (l, t)
        }
    }

    /// Joins two treaps whose keys are all ordered `a` before `b`.
    fn merge<S: Spans>(&mut self, s: &S, a: u32, b: u32) -> u32 {
        if a == NIL {
            return b;
        }
        if b == NIL {
            return a;
        }
        if self.nodes[a as usize].prio > self.nodes[b as usize].prio {
            let m = self.merge(s, self.nodes[a as usize].right, b);
            self.nodes[a as usize].right = m;
            self.pull(s, a);
            a
        } else {
            let m = self.merge(s, a, self.nodes[b as usize].left);
            self.nodes[b as usize].left = m;
            self.pull(s, b);
            b
        }
    }

    /// Adds `slot` (its range is read from `s`).
    pub fn insert<S: Spans>(&mut self, s: &S, slot: u32) {
        // xorshift: a cheap, deterministic priority sequence
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 17;
        self.seed ^= self.seed << 5;
        let node = Node { slot, left: NIL, right: NIL, prio: self.seed, max: slot };
        let n = match self.free.pop() {
            Some(i) => {
                self.nodes[i as usize] = node;
                i
            }
            None => {
                self.nodes.push(node);
                (self.nodes.len() - 1) as u32
            }
        };
        let (l, r) = self.split(s, self.root, slot);
        let l = self.merge(s, l, n);
        self.root = self.merge(s, l, r);
        self.len += 1;
    }

    /// Removes `slot`; its range in `s` must still be the one it was inserted with.
    /// Returns false when it was not in the tree.
    pub fn remove<S: Spans>(&mut self, s: &S, slot: u32) -> bool {
        let (root, found) = self.remove_in(s, self.root, slot);
        self.root = root;
        if found {
            self.len -= 1;
            if self.len == 0 {
                self.nodes = Vec::new();
                self.free = Vec::new();
            }
        }
        found
    }

    fn remove_in<S: Spans>(&mut self, s: &S, t: u32, slot: u32) -> (u32, bool) {
        if t == NIL {
            return (NIL, false);
        }
        let node = self.nodes[t as usize];
        let found = match Self::cmp_key(s, slot, node.slot) {
            Ordering::Equal => {
                self.free.push(t);
                return (self.merge(s, node.left, node.right), true);
            }
            Ordering::Less => {
                let (l, f) = self.remove_in(s, node.left, slot);
                self.nodes[t as usize].left = l;
                f
            }
            Ordering::Greater => {
                let (r, f) = self.remove_in(s, node.right, slot);
                self.nodes[t as usize].right = r;
                f
            }
        };
        self.pull(s, t);
        (t, found)
    }

    /// Calls `f` with every slot whose range contains `key`.
    pub fn stab<S: Spans>(&self, s: &S, key: &[u8], f: &mut impl FnMut(u32)) {
        self.stab_in(s, self.root, key, f);
    }

    fn stab_in<S: Spans>(&self, s: &S, t: u32, key: &[u8], f: &mut impl FnMut(u32)) {
        if t == NIL {
            return;
        }
        let node = self.nodes[t as usize];
        // nothing below ends after `key`
        if s.end(node.max).is_some_and(|e| e <= key) {
            return;
        }
        self.stab_in(s, node.left, key, f);
        if s.start(node.slot) <= key {
            if s.end(node.slot).is_none_or(|e| key < e) {
                f(node.slot);
            }
            self.stab_in(s, node.right, key, f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct V(Vec<(Vec<u8>, Option<Vec<u8>>)>);

    impl Spans for V {
        fn start(&self, slot: u32) -> &[u8] {
            &self.0[slot as usize].0
        }
        fn end(&self, slot: u32) -> Option<&[u8]> {
            self.0[slot as usize].1.as_deref()
        }
    }

    fn rng(seed: &mut u64) -> u64 {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        *seed >> 33
    }

    #[test]
    fn worked_example() {
        let v = V(vec![(b"b".to_vec(), Some(b"d".to_vec())), (b"a".to_vec(), Some(b"z".to_vec())), (b"c".to_vec(), None)]);
        let mut t = IntervalTree::new();
        for s in 0..3 {
            t.insert(&v, s);
        }
        let mut got = vec![];
        t.stab(&v, b"e", &mut |s| got.push(s));
        got.sort();
        assert_eq!(got, vec![1, 2]);
    }

    #[test]
    fn random_ranges_match_a_linear_scan() {
        let mut seed = 7u64;
        let key = |seed: &mut u64| vec![b'a' + (rng(seed) % 20) as u8, b'a' + (rng(seed) % 3) as u8];
        let mut v = V(vec![]);
        for _ in 0..400 {
            let a = key(&mut seed);
            let b = if rng(&mut seed) % 5 == 0 { None } else { Some(key(&mut seed)) };
            v.0.push((a, b));
        }
        let mut t = IntervalTree::new();
        let mut live = vec![false; v.0.len()];
        for step in 0..2000 {
            let s = (rng(&mut seed) % v.0.len() as u64) as u32;
            if live[s as usize] {
                assert!(t.remove(&v, s));
            } else {
                t.insert(&v, s);
            }
            live[s as usize] = !live[s as usize];
            if step % 50 == 0 {
                let k = key(&mut seed);
                let mut got = vec![];
                t.stab(&v, &k, &mut |s| got.push(s));
                got.sort();
                let want: Vec<u32> = (0..v.0.len() as u32)
                    .filter(|&s| live[s as usize])
                    .filter(|&s| v.start(s) <= &k[..] && v.end(s).is_none_or(|e| &k[..] < e))
                    .collect();
                assert_eq!(got, want, "step {step} key {k:?}");
            }
        }
        assert_eq!(t.len(), live.iter().filter(|l| **l).count());
    }
}
