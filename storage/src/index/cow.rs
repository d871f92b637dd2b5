//! A persistent (copy-on-write) B+tree from key to [`KeyIndex`], with counts.
//!
//! Nodes are never changed once another tree version can see them: a writer that changes
//! a key copies the nodes on the path from the root to its leaf (`Arc::make_mut`: only
//! the ones still shared) and ends with a new root; every node off that path is shared
//! with the older versions. A reader holding an old root reads an unchanging tree.
//!
//! # Layout
//! * A leaf holds up to [`MAX`] keys in key order, packed in one buffer ([`Keys`]), and
//!   their histories (`Arc<KeyIndex>`, shared between versions until changed).
//! * An inner node holds up to [`MAX`] children and, packed the same way, each one's
//!   `min`, the smallest key under it; the children's key ranges are disjoint and
//!   increasing, so child `i` holds the keys in `[min_i, min_{i+1})`.
//! * Copying a node (a writer's path copy) copies its key buffer and touches one reference
//!   count per item: a key's bytes live in its leaf (and, as a `min`, in inner nodes), not
//!   in an allocation of their own.
//! * Every leaf is at the same depth. A node other than the root holds at least one item;
//!   one left with fewer than [`MIN`] is merged with a neighbour (and split again evenly if
//!   the two are too many for one node), one left empty is removed.
//!
//! # Counts
//! Every node carries [`Stats`] of its subtree: the number of keys, how many of them are
//! live *now* (their newest revision is not a tombstone), and `max_mod`, the newest
//! revision (main) at which any of them changed. When `max_mod <= at`, no key under the
//! node changed after `at`, so the keys live at `at` are exactly the keys live now: a
//! subtree wholly inside a counted span is counted in O(1) without visiting its keys. Only
//! the paths to keys written after `at` (in practice: by the applies not yet committed)
//! are walked. A count of a 1M-key prefix is O(log n) nodes plus those paths.
//!
//! Example (MAX = 4 for the picture), reading at revision 9:
//! ```text
//!               [a: keys 6 live 5 mod 8 | e: keys 3 live 2 mod 12]
//!                /                          \
//!   [a b c d (leaf), ...]            [e f g (leaf): g changed at 12]
//! ```
//! A count of `[a, z)` at 9 takes the left child whole (`5`, as `8 <= 9`) and walks the
//! right leaf, asking each of `e f g` for its state at 9.
//!
//! Invariants (checked by `Tree::check`, which the tests call: it visits every node):
//! keys strictly increase across the leaves; `min` of a child is its first key; stats are
//! the sums (and max) of the level below; depth is uniform; no node holds more than `MAX`
//! items.

use std::sync::Arc;

use super::keys::Keys;
use crate::key_index::{KeyAt, KeyIndex};

/// Most entries of a leaf, children of an inner node.
pub(crate) const MAX: usize = 32;
/// A non-root node with fewer items than this is merged with a neighbour.
const MIN: usize = MAX / 4;

/// A leaf: keys and their histories (`kis[i]` is key `i`'s), in key order. A history is
/// shared between tree versions until a writer changes it.
#[derive(Debug, Default)]
pub(crate) struct Leaf {
    pub keys: Keys,
    pub kis: Vec<Arc<KeyIndex>>,
}

impl Clone for Leaf {
    fn clone(&self) -> Leaf {
        prefetch_counts(&self.kis);
        Leaf { keys: self.keys.clone(), kis: self.kis.clone() }
    }
}

impl Drop for Leaf {
    fn drop(&mut self) {
        prefetch_counts(&self.kis);
    }
}

impl Leaf {
    fn insert(&mut self, i: usize, key: &[u8], ki: Arc<KeyIndex>) {
        self.keys.insert(i, key);
        self.kis.insert(i, ki);
    }

    fn remove(&mut self, i: usize) {
        self.keys.remove(i);
        self.kis.remove(i);
    }
}

/// An inner node: child `i` is `nodes[i]`, whose smallest key is `mins.get(i)`.
#[derive(Debug, Default)]
struct Inner {
    mins: Keys,
    nodes: Vec<Arc<Node>>,
}

impl Clone for Inner {
    fn clone(&self) -> Inner {
        prefetch_counts(&self.nodes);
        Inner { mins: self.mins.clone(), nodes: self.nodes.clone() }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        prefetch_counts(&self.nodes);
    }
}

/// Asks the CPU to load the reference count of every item of a node about to be copied or
/// dropped, all at once. Copying (or dropping) a node changes each item's count with a
/// locked instruction, and on x86 those wait for each other: a path copy of 32-item nodes
/// then waited for its cache misses one after another, the apply thread's largest cost
/// under puts of random keys (BENCHMARKS.md "Prefetching the counts of a path copy").
/// A hint only: it changes no memory and cannot fault. The count sits just before the
/// value in std's `Arc` allocation; were that to change, the hint would miss, nothing else.
fn prefetch_counts<T>(items: &[Arc<T>]) {
    #[cfg(target_arch = "x86_64")]
    for item in items {
        let count = Arc::as_ptr(item).cast::<i8>().wrapping_sub(16);
        // SAFETY: a prefetch reads nothing the program sees and never faults, whatever
        // the address; SSE (which has it) is part of x86_64's baseline.
        unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(count) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = items;
}

impl Inner {
    /// The child whose range holds `key` (the first when `key` is below every `min`).
    fn child_for(&self, key: &[u8]) -> usize {
        self.mins.partition_point(|m| m <= key).saturating_sub(1)
    }

    fn insert(&mut self, i: usize, node: Node) {
        self.mins.insert(i, node.first_key().expect("a new child is non-empty"));
        self.nodes.insert(i, Arc::new(node));
    }

    fn remove(&mut self, i: usize) -> Arc<Node> {
        self.mins.remove(i);
        self.nodes.remove(i)
    }
}

/// Aggregates of a subtree (see the module docs). A change adds its difference on the
/// way back up (`add`: O(1) a level, no visit of the siblings); splits and merges, which
/// move keys between nodes, recompute the nodes they touch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Stats {
    keys: i64,
    live: i64,
    /// An upper bound, exact but for keys removed since the node was last recomputed.
    /// Only compaction removes keys, and only keys whose every revision is at or below its
    /// revision, which no read may go below: a stale bound never hides a change.
    max_mod: i64,
}

impl Stats {
    fn add(&mut self, o: Stats) {
        self.keys += o.keys;
        self.live += o.live;
        self.max_mod = self.max_mod.max(o.max_mod);
    }

    fn of_entry(ki: &KeyIndex) -> Stats {
        Stats { keys: 1, live: i64::from(!ki.is_deleted()), max_mod: ki.modified.main }
    }

    /// The change from `before` to `after` (either absent), as `add` applies it.
    fn delta(before: Option<Stats>, after: Option<Stats>) -> Stats {
        let (b, a) = (before.unwrap_or_default(), after.unwrap_or_default());
        Stats { keys: a.keys - b.keys, live: a.live - b.live, max_mod: a.max_mod }
    }
}

/// A tree node (see the module docs).
#[derive(Clone, Debug)]
pub(crate) struct Node {
    stats: Stats,
    kind: Kind,
}

#[derive(Clone, Debug)]
enum Kind {
    Leaf(Leaf),
    Inner(Inner),
}

impl Default for Node {
    fn default() -> Self {
        Node { stats: Stats::default(), kind: Kind::Leaf(Leaf::default()) }
    }
}

/// What a range walk gathers: up to `limit` hits in key order, and the number of keys
/// visible at the revision in the whole span (`total`), however many were gathered.
pub(crate) struct Gather<'t> {
    pub limit: usize,
    pub hits: Vec<(&'t [u8], KeyAt)>,
    pub total: i64,
}

impl Node {
    /// Items (entries or children) held by this node itself.
    fn width(&self) -> usize {
        match &self.kind {
            Kind::Leaf(l) => l.kis.len(),
            Kind::Inner(n) => n.nodes.len(),
        }
    }

    fn first_key(&self) -> Option<&[u8]> {
        match &self.kind {
            Kind::Leaf(l) => l.keys.first(),
            Kind::Inner(n) => n.mins.first(),
        }
    }

    fn with_stats(kind: Kind) -> Node {
        let mut n = Node { stats: Stats::default(), kind };
        n.recompute();
        n
    }

    fn recompute(&mut self) {
        let mut s = Stats::default();
        match &self.kind {
            Kind::Leaf(l) => l.kis.iter().for_each(|ki| s.add(Stats::of_entry(ki))),
            Kind::Inner(n) => n.nodes.iter().for_each(|c| s.add(c.stats)),
        }
        self.stats = s;
    }

    /// Moves the upper half of the items into a new node, returned.
    fn split(&mut self) -> Node {
        let kind = match &mut self.kind {
            Kind::Leaf(l) => {
                let at = l.kis.len() / 2;
                let right = Leaf { keys: l.keys.split_off(at), kis: l.kis.split_off(at) };
                l.kis.shrink_to_fit();
                Kind::Leaf(right)
            }
            Kind::Inner(n) => {
                let at = n.nodes.len() / 2;
                let right = Inner { mins: n.mins.split_off(at), nodes: n.nodes.split_off(at) };
                n.nodes.shrink_to_fit();
                Kind::Inner(right)
            }
        };
        let mut right = Node { stats: Stats::default(), kind };
        right.recompute();
        self.recompute();
        right
    }

    /// Appends the items of `right` (a node of the same level, holding greater keys).
    fn absorb(&mut self, right: &Node) {
        match (&mut self.kind, &right.kind) {
            (Kind::Leaf(a), Kind::Leaf(b)) => {
                a.keys.append(&b.keys);
                a.kis.extend(b.kis.iter().cloned());
            }
            (Kind::Inner(a), Kind::Inner(b)) => {
                a.mins.append(&b.mins);
                a.nodes.extend(b.nodes.iter().cloned());
            }
            _ => unreachable!("tree: siblings at different depths"),
        }
        self.recompute();
    }

    /// Number of keys in the tree.
    pub(crate) fn len(&self) -> usize {
        self.stats.keys as usize
    }

    /// The history of `key`, if the tree holds it.
    pub(crate) fn get(&self, key: &[u8]) -> Option<&Arc<KeyIndex>> {
        self.entry(key).map(|(_, ki)| ki)
    }

    /// `key` as the tree holds it (borrowed from its leaf) and its history.
    pub(crate) fn entry(&self, key: &[u8]) -> Option<(&[u8], &Arc<KeyIndex>)> {
        let mut node = self;
        loop {
            match &node.kind {
                Kind::Leaf(l) => return l.keys.search(key).ok().map(|i| (l.keys.get(i), &l.kis[i])),
                Kind::Inner(n) => {
                    let i = n.mins.partition_point(|m| m <= key).checked_sub(1)?;
                    node = &n.nodes[i];
                }
            }
        }
    }

    /// Visits the entries with `from <= key < to` (`to == None`: to the end) in key order
    /// until `f` returns false; returns false when `f` stopped it.
    pub(crate) fn visit<'t>(
        &'t self,
        from: &[u8],
        to: Option<&[u8]>,
        f: &mut dyn FnMut(&'t [u8], &'t Arc<KeyIndex>) -> bool,
    ) -> bool {
        match &self.kind {
            Kind::Leaf(l) => {
                let start = l.keys.partition_point(|k| k < from);
                for (i, ki) in l.kis.iter().enumerate().skip(start) {
                    let k = l.keys.get(i);
                    if to.is_some_and(|t| k >= t) || !f(k, ki) {
                        return false;
                    }
                }
                true
            }
            Kind::Inner(n) => {
                let start = n.child_for(from);
                for (i, c) in n.nodes.iter().enumerate().skip(start) {
                    if to.is_some_and(|t| n.mins.get(i) >= t) || !c.visit(from, to, f) {
                        return false;
                    }
                }
                true
            }
        }
    }

    /// Gathers the keys of `[from, to)` visible at `at` (see [`Gather`]). `hi` is the
    /// exclusive upper bound of this node's keys (`None`: unbounded), known from its parent.
    pub(crate) fn gather<'t>(&'t self, from: &[u8], to: Option<&[u8]>, hi: Option<&[u8]>, at: i64, g: &mut Gather<'t>) {
        match &self.kind {
            Kind::Leaf(l) => {
                let start = l.keys.partition_point(|k| k < from);
                for (i, ki) in l.kis.iter().enumerate().skip(start) {
                    let k = l.keys.get(i);
                    if to.is_some_and(|t| k >= t) {
                        return;
                    }
                    if let Some(state) = ki.get(at) {
                        g.total += 1;
                        if g.hits.len() < g.limit {
                            g.hits.push((k, state));
                        }
                    }
                }
            }
            Kind::Inner(n) => {
                let start = n.child_for(from);
                for (i, c) in n.nodes.iter().enumerate().skip(start) {
                    let min = n.mins.get(i);
                    if to.is_some_and(|t| min >= t) {
                        return;
                    }
                    let upper = if i + 1 < n.nodes.len() { Some(n.mins.get(i + 1)) } else { hi };
                    let inside = from <= min
                        && match to {
                            None => true,
                            Some(t) => upper.is_some_and(|u| u <= t),
                        };
                    if inside && g.hits.len() >= g.limit && c.stats.max_mod <= at {
                        g.total += c.stats.live;
                    } else {
                        c.gather(from, to, upper, at, g);
                    }
                }
            }
        }
    }

    /// Checks the invariants of the module docs; returns the depth.
    #[cfg(test)]
    fn check(&self, lower: Option<&[u8]>, upper: Option<&[u8]>) -> usize {
        let mut s = Stats::default();
        let depth = match &self.kind {
            Kind::Leaf(l) => {
                assert_eq!(l.keys.len(), l.kis.len(), "tree: a leaf's keys and histories differ in number");
                for (i, ki) in l.kis.iter().enumerate() {
                    let k = l.keys.get(i);
                    assert!(i == 0 || l.keys.get(i - 1) < k, "tree: leaf keys not increasing");
                    assert!(lower.is_none_or(|lo| lo <= k), "tree: key below its node's range");
                    assert!(upper.is_none_or(|u| k < u), "tree: key above its node's range");
                    s.add(Stats::of_entry(ki));
                }
                0
            }
            Kind::Inner(n) => {
                assert_eq!(n.mins.len(), n.nodes.len(), "tree: an inner node's mins and children differ in number");
                let mut depth = None;
                for (i, c) in n.nodes.iter().enumerate() {
                    let min = n.mins.get(i);
                    assert_eq!(Some(min), c.first_key(), "tree: child min is not its first key");
                    let up = if i + 1 < n.nodes.len() { Some(n.mins.get(i + 1)) } else { upper };
                    let d = c.check(Some(min), up);
                    assert!(depth.is_none_or(|x| x == d), "tree: leaves at different depths");
                    depth = Some(d);
                    s.add(c.stats);
                }
                depth.unwrap_or(0) + 1
            }
        };
        assert!(self.width() <= MAX, "tree: node of {} items", self.width());
        assert_eq!((s.keys, s.live), (self.stats.keys, self.stats.live), "tree: stale counts");
        assert!(s.max_mod <= self.stats.max_mod, "tree: max_mod below a key's revision");
        depth
    }
}

/// A writer's version of the tree: changes copy shared nodes, then change them in place.
#[derive(Clone, Debug, Default)]
pub(crate) struct Tree {
    pub root: Arc<Node>,
}

impl Tree {
    /// Calls `f` on the history of `key` (a new, empty one with `false` when the tree does
    /// not hold it), then stores the result: a history `f` leaves empty is removed (or
    /// never inserted). `f` must change nothing when it fails (as `KeyIndex`'s methods,
    /// which check before they change); the tree then holds what it held before.
    pub(crate) fn update<E>(&mut self, key: &[u8], f: impl FnOnce(&mut KeyIndex, bool) -> Result<(), E>) -> Result<(), E> {
        self.change(key, |l| match l.keys.search(key) {
            Ok(i) => {
                let ki = Arc::make_mut(&mut l.kis[i]);
                let before = Stats::of_entry(ki);
                f(ki, true)?;
                if ki.is_empty() {
                    l.remove(i);
                    return Ok(Stats::delta(Some(before), None));
                }
                Ok(Stats::delta(Some(before), Some(Stats::of_entry(ki))))
            }
            Err(i) => {
                let mut ki = KeyIndex::default();
                f(&mut ki, false)?;
                if ki.is_empty() {
                    return Ok(Stats::default());
                }
                let after = Stats::of_entry(&ki);
                l.insert(i, key, Arc::new(ki));
                Ok(Stats::delta(None, Some(after)))
            }
        })
    }

    /// Replaces the history of `key` with `new` (removes the key for `None`) if it is still
    /// `expected` (the same allocation); returns whether it was. Nothing is copied when it
    /// was not.
    pub(crate) fn replace_if(&mut self, key: &[u8], expected: &Arc<KeyIndex>, new: Option<Arc<KeyIndex>>) -> bool {
        // `Err(())`: not the expected history (the path may be copied: harmless)
        self.change(key, |l| {
            let i = l.keys.search(key).map_err(|_| ())?;
            if !Arc::ptr_eq(&l.kis[i], expected) {
                return Err(());
            }
            let before = Stats::of_entry(&l.kis[i]);
            Ok(match new {
                Some(ki) => {
                    let after = Stats::of_entry(&ki);
                    l.kis[i] = ki;
                    Stats::delta(Some(before), Some(after))
                }
                None => {
                    l.remove(i);
                    Stats::delta(Some(before), None)
                }
            })
        })
        .is_ok()
    }

    /// Runs `leaf` on the leaf where `key` belongs (copying the path to it where shared),
    /// adds the stats difference it returns on the way up and restores the shape rules.
    fn change<E>(&mut self, key: &[u8], leaf: impl FnOnce(&mut Leaf) -> Result<Stats, E>) -> Result<(), E> {
        change_node(&mut self.root, key, leaf)?;
        if self.root.width() > MAX {
            let root = Arc::make_mut(&mut self.root);
            let right = root.split();
            let left = std::mem::take(root);
            let mut top = Inner::default();
            top.insert(0, left);
            top.insert(1, right);
            let mut top = Node { stats: Stats::default(), kind: Kind::Inner(top) };
            top.recompute();
            self.root = Arc::new(top);
        }
        // an inner root left with one child (or none) gives way to it
        loop {
            let next = match &self.root.kind {
                Kind::Inner(n) if n.nodes.len() == 1 => n.nodes[0].clone(),
                Kind::Inner(n) if n.nodes.is_empty() => Arc::default(),
                _ => break,
            };
            self.root = next;
        }
        Ok(())
    }

    /// A tree holding `entries`, built bottom-up in one pass (a bulk load: no descent per
    /// key). The caller guarantees what the module docs' invariants need of the entries:
    /// keys strictly increasing, no empty history. Each level is cut into
    /// `ceil(n / MAX)` nodes of sizes differing by at most one, so every node but a lone
    /// root holds more than `MAX / 2` items (at least [`MIN`]).
    pub(crate) fn from_sorted(entries: Vec<(Arc<[u8]>, Arc<KeyIndex>)>) -> Tree {
        if entries.is_empty() {
            return Tree::default();
        }
        let mut items = entries.into_iter();
        let mut level: Vec<Node> = even_chunks(items.len())
            .map(|n| {
                let mut leaf = Leaf { keys: Keys::default(), kis: Vec::with_capacity(n) };
                for (key, ki) in items.by_ref().take(n) {
                    leaf.keys.push(&key);
                    leaf.kis.push(ki);
                }
                leaf.keys.shrink_to_fit();
                Node::with_stats(Kind::Leaf(leaf))
            })
            .collect();
        while level.len() > 1 {
            let mut nodes = level.into_iter();
            level = even_chunks(nodes.len())
                .map(|n| {
                    let mut inner = Inner { mins: Keys::default(), nodes: Vec::with_capacity(n) };
                    for node in nodes.by_ref().take(n) {
                        inner.mins.push(node.first_key().expect("bulk-loaded nodes are non-empty"));
                        inner.nodes.push(Arc::new(node));
                    }
                    inner.mins.shrink_to_fit();
                    Node::with_stats(Kind::Inner(inner))
                })
                .collect();
        }
        Tree { root: Arc::new(level.pop().expect("a non-empty level")) }
    }

    /// Verifies the invariants (module docs), visiting every node; panics on a broken one.
    #[cfg(test)]
    pub(crate) fn check(&self) {
        self.root.check(None, None);
    }
}

/// The sizes of `ceil(n / MAX)` nodes holding `n` items, differing by at most one.
fn even_chunks(n: usize) -> impl Iterator<Item = usize> {
    let m = n.div_ceil(MAX).max(1);
    (0..m).map(move |i| n / m + usize::from(i < n % m))
}

fn change_node<E>(node: &mut Arc<Node>, key: &[u8], leaf: impl FnOnce(&mut Leaf) -> Result<Stats, E>) -> Result<Stats, E> {
    // copies the path even when `leaf` fails: harmless, the copies hold what they copied
    let n = Arc::make_mut(node);
    let delta = match &mut n.kind {
        Kind::Leaf(l) => leaf(l)?,
        Kind::Inner(inner) => {
            let i = inner.child_for(key);
            let delta = change_node(&mut inner.nodes[i], key, leaf)?;
            fix_child(inner, i);
            delta
        }
    };
    n.stats.add(delta);
    Ok(delta)
}

/// Restores the shape rules for child `i` after it changed: drops it when empty, splits it
/// when too wide, merges it with a neighbour when too narrow; refreshes the `min`s.
fn fix_child(n: &mut Inner, i: usize) {
    let w = n.nodes[i].width();
    if w == 0 {
        n.remove(i);
        return;
    }
    if w > MAX {
        let right = Arc::make_mut(&mut n.nodes[i]).split();
        n.insert(i + 1, right);
    } else if w < MIN && n.nodes.len() > 1 {
        let (l, r) = if i + 1 < n.nodes.len() { (i, i + 1) } else { (i - 1, i) };
        let right = n.remove(r);
        let left = Arc::make_mut(&mut n.nodes[l]);
        left.absorb(&right);
        if left.width() > MAX {
            let rest = left.split();
            n.insert(l + 1, rest);
        }
    }
    let lo = i.saturating_sub(1);
    let hi = (i + 2).min(n.nodes.len());
    let Inner { mins, nodes } = n;
    for (j, child) in nodes.iter().enumerate().take(hi).skip(lo) {
        mins.set(j, child.first_key().expect("non-empty child"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::revision::Revision;

    fn put(t: &mut Tree, k: &[u8], m: i64) {
        t.update::<crate::Error>(k, |ki, _| ki.put(Revision::new(m, 0))).unwrap();
    }

    fn keys(n: &Node) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        n.visit(b"", None, &mut |k, _| {
            out.push(k.to_vec());
            true
        });
        out
    }

    #[test]
    fn grows_and_shrinks_keeping_its_shape() {
        let mut t = Tree::default();
        let n = MAX * MAX * 3;
        for i in 0..n {
            put(&mut t, format!("k{:06}", (i * 7919) % n).as_bytes(), i as i64 + 1);
        }
        t.check();
        assert_eq!(t.root.len(), n);
        assert_eq!(keys(&t.root), (0..n).map(|i| format!("k{i:06}").into_bytes()).collect::<Vec<_>>());
        // empty every key but a few, in an order that makes narrow nodes everywhere
        let keep: Vec<usize> = (0..n).step_by(97).collect();
        for i in 0..n {
            let j = (i * 31) % n;
            if j % 97 == 0 {
                continue;
            }
            let k = format!("k{j:06}");
            t.update::<crate::Error>(k.as_bytes(), |ki, existed| {
                assert!(existed);
                *ki = KeyIndex::default();
                Ok(())
            })
            .unwrap();
        }
        t.check();
        assert_eq!(t.root.len(), keep.len());
        assert_eq!(keys(&t.root), keep.iter().map(|i| format!("k{i:06}").into_bytes()).collect::<Vec<_>>());
    }

    #[test]
    fn bulk_load_matches_inserts_and_stays_writable() {
        for n in [0usize, 1, 7, MAX, MAX + 1, MAX * MAX, MAX * MAX + 3, 3 * MAX * MAX + 17] {
            let entries: Vec<(Arc<[u8]>, Arc<KeyIndex>)> = (0..n)
                .map(|i| {
                    let mut ki = KeyIndex::default();
                    ki.put(Revision::new(i as i64 + 1, 0)).unwrap();
                    (format!("k{i:06}").into_bytes().into(), Arc::new(ki))
                })
                .collect();
            let mut t = Tree::from_sorted(entries);
            t.check();
            assert_eq!(t.root.len(), n);
            assert_eq!(keys(&t.root), (0..n).map(|i| format!("k{i:06}").into_bytes()).collect::<Vec<_>>());
            // a bulk-loaded tree takes inserts and removals like any other
            for i in 0..n.min(200) {
                put(&mut t, format!("k{i:06}x").as_bytes(), (n + i) as i64 + 1);
                t.update::<crate::Error>(format!("k{i:06}").as_bytes(), |ki, _| {
                    *ki = KeyIndex::default();
                    Ok(())
                })
                .unwrap();
            }
            t.check();
            assert_eq!(t.root.len(), n);
        }
    }

    #[test]
    fn older_versions_do_not_change() {
        let mut t = Tree::default();
        for i in 0..500 {
            put(&mut t, format!("k{i:04}").as_bytes(), i + 1);
        }
        let old = t.clone();
        put(&mut t, b"k0007", 1000);
        put(&mut t, b"new", 1001);
        assert_eq!(old.root.get(b"k0007").unwrap().modified.main, 8);
        assert!(old.root.get(b"new").is_none());
        assert_eq!(t.root.get(b"k0007").unwrap().modified.main, 1000);
        assert_eq!(old.root.len(), 500);
        assert_eq!(t.root.len(), 501);
    }

    #[test]
    fn failed_update_changes_nothing() {
        let mut t = Tree::default();
        put(&mut t, b"a", 5);
        let r = t.update::<crate::Error>(b"a", |ki, _| ki.put(Revision::new(3, 0)));
        assert!(r.is_err());
        let r = t.update::<crate::Error>(b"b", |ki, _| ki.tombstone(Revision::new(6, 0)));
        assert!(r.is_err());
        assert_eq!(t.root.len(), 1);
        assert_eq!(t.root.get(b"a").unwrap().modified.main, 5);
        t.check();
    }

    #[test]
    fn counted_subtrees_match_a_walk() {
        let mut t = Tree::default();
        let n = 3000i64;
        for i in 0..n {
            put(&mut t, format!("k{i:05}").as_bytes(), i + 1);
        }
        for i in (0..n).step_by(3) {
            let k = format!("k{i:05}");
            t.update::<crate::Error>(k.as_bytes(), |ki, _| ki.tombstone(Revision::new(n + 1 + i, 0))).unwrap();
        }
        t.check();
        for at in [0, 10, n, n + 1, n + 1500, 3 * n] {
            for (from, to) in [("", None), ("k00100", Some("k02900")), ("k01", Some("k02")), ("k02999", None)] {
                let mut g = Gather { limit: 0, hits: Vec::new(), total: 0 };
                t.root.gather(from.as_bytes(), to.map(str::as_bytes), None, at, &mut g);
                let mut walked = 0;
                t.root.visit(from.as_bytes(), to.map(str::as_bytes), &mut |_, ki| {
                    walked += i64::from(ki.get(at).is_some());
                    true
                });
                assert_eq!(g.total, walked, "at {at} span {from}..{to:?}");
            }
        }
    }
}
