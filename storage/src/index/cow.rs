//! A persistent (copy-on-write) B+tree from key to [`KeyIndex`], with counts.
//!
//! Nodes are never changed once another tree version can see them: a writer that changes
//! a key copies the nodes on the path from the root to its leaf (`Arc::make_mut`: only
//! the ones still shared) and ends with a new root; every node off that path is shared
//! with the older versions. A reader holding an old root reads an unchanging tree.
//!
//! # Layout
//! * A leaf holds up to [`MAX`] entries `(key, Arc<KeyIndex>)` in key order.
//! * An inner node holds up to [`MAX`] children, each with `min`, the smallest key under
//!   it; the children's key ranges are disjoint and increasing, so child `i` holds the keys
//!   in `[min_i, min_{i+1})`.
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

use crate::key_index::{KeyAt, KeyIndex};

/// Most entries of a leaf, children of an inner node.
pub(crate) const MAX: usize = 32;
/// A non-root node with fewer items than this is merged with a neighbour.
const MIN: usize = MAX / 4;

/// One key and its history; shared between tree versions until a writer changes it.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub key: Arc<[u8]>,
    pub ki: Arc<KeyIndex>,
}

#[derive(Clone, Debug)]
struct Child {
    /// The smallest key under `node`.
    min: Arc<[u8]>,
    node: Arc<Node>,
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
    Leaf(Vec<Entry>),
    Inner(Vec<Child>),
}

impl Default for Node {
    fn default() -> Self {
        Node { stats: Stats::default(), kind: Kind::Leaf(Vec::new()) }
    }
}

/// What a range walk gathers: up to `limit` hits in key order, and the number of keys
/// visible at the revision in the whole span (`total`), however many were gathered.
pub(crate) struct Gather<'t> {
    pub limit: usize,
    pub hits: Vec<(&'t Arc<[u8]>, KeyAt)>,
    pub total: i64,
}

impl Node {
    /// Items (entries or children) held by this node itself.
    fn width(&self) -> usize {
        match &self.kind {
            Kind::Leaf(e) => e.len(),
            Kind::Inner(c) => c.len(),
        }
    }

    fn first_key(&self) -> Option<&Arc<[u8]>> {
        match &self.kind {
            Kind::Leaf(e) => e.first().map(|e| &e.key),
            Kind::Inner(c) => c.first().map(|c| &c.min),
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
            Kind::Leaf(es) => es.iter().for_each(|e| s.add(Stats::of_entry(&e.ki))),
            Kind::Inner(cs) => cs.iter().for_each(|c| s.add(c.node.stats)),
        }
        self.stats = s;
    }

    /// Moves the upper half of the items into a new node, returned.
    fn split(&mut self) -> Node {
        let kind = match &mut self.kind {
            Kind::Leaf(e) => Kind::Leaf(e.split_off(e.len() / 2)),
            Kind::Inner(c) => Kind::Inner(c.split_off(c.len() / 2)),
        };
        let mut right = Node { stats: Stats::default(), kind };
        right.recompute();
        self.recompute();
        right
    }

    /// Appends the items of `right` (a node of the same level, holding greater keys).
    fn absorb(&mut self, right: Node) {
        match (&mut self.kind, right.kind) {
            (Kind::Leaf(a), Kind::Leaf(b)) => a.extend(b),
            (Kind::Inner(a), Kind::Inner(b)) => a.extend(b),
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
        let mut node = self;
        loop {
            match &node.kind {
                Kind::Leaf(es) => {
                    return es.binary_search_by(|e| (*e.key).cmp(key)).ok().map(|i| &es[i].ki);
                }
                Kind::Inner(cs) => {
                    let i = cs.partition_point(|c| &*c.min <= key).checked_sub(1)?;
                    node = &cs[i].node;
                }
            }
        }
    }

    /// Visits the entries with `from <= key < to` (`to == None`: to the end) in key order
    /// until `f` returns false; returns false when `f` stopped it.
    pub(crate) fn visit<'t>(&'t self, from: &[u8], to: Option<&[u8]>, f: &mut dyn FnMut(&'t Entry) -> bool) -> bool {
        match &self.kind {
            Kind::Leaf(es) => {
                let start = es.partition_point(|e| &*e.key < from);
                for e in &es[start..] {
                    if to.is_some_and(|t| &*e.key >= t) || !f(e) {
                        return false;
                    }
                }
                true
            }
            Kind::Inner(cs) => {
                let start = cs.partition_point(|c| &*c.min <= from).saturating_sub(1);
                for c in &cs[start..] {
                    if to.is_some_and(|t| &*c.min >= t) || !c.node.visit(from, to, f) {
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
            Kind::Leaf(es) => {
                let start = es.partition_point(|e| &*e.key < from);
                for e in &es[start..] {
                    if to.is_some_and(|t| &*e.key >= t) {
                        return;
                    }
                    if let Some(k) = e.ki.get(at) {
                        g.total += 1;
                        if g.hits.len() < g.limit {
                            g.hits.push((&e.key, k));
                        }
                    }
                }
            }
            Kind::Inner(cs) => {
                let start = cs.partition_point(|c| &*c.min <= from).saturating_sub(1);
                for (i, c) in cs.iter().enumerate().skip(start) {
                    if to.is_some_and(|t| &*c.min >= t) {
                        return;
                    }
                    let upper = cs.get(i + 1).map(|n| &*n.min).or(hi);
                    let inside = from <= &*c.min
                        && match to {
                            None => true,
                            Some(t) => upper.is_some_and(|u| u <= t),
                        };
                    if inside && g.hits.len() >= g.limit && c.node.stats.max_mod <= at {
                        g.total += c.node.stats.live;
                    } else {
                        c.node.gather(from, to, upper, at, g);
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
            Kind::Leaf(es) => {
                for (i, e) in es.iter().enumerate() {
                    assert!(i == 0 || es[i - 1].key < e.key, "tree: leaf keys not increasing");
                    assert!(lower.is_none_or(|l| l <= &*e.key), "tree: key below its node's range");
                    assert!(upper.is_none_or(|u| &*e.key < u), "tree: key above its node's range");
                    s.add(Stats::of_entry(&e.ki));
                }
                0
            }
            Kind::Inner(cs) => {
                let mut depth = None;
                for (i, c) in cs.iter().enumerate() {
                    assert_eq!(Some(&c.min), c.node.first_key(), "tree: child min is not its first key");
                    let up = cs.get(i + 1).map(|n| &*n.min).or(upper);
                    let d = c.node.check(Some(&c.min), up);
                    assert!(depth.is_none_or(|x| x == d), "tree: leaves at different depths");
                    depth = Some(d);
                    s.add(c.node.stats);
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
        self.change(key, |es| match es.binary_search_by(|e| (*e.key).cmp(key)) {
            Ok(i) => {
                let ki = Arc::make_mut(&mut es[i].ki);
                let before = Stats::of_entry(ki);
                f(ki, true)?;
                if ki.is_empty() {
                    es.remove(i);
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
                es.insert(i, Entry { key: key.into(), ki: Arc::new(ki) });
                Ok(Stats::delta(None, Some(after)))
            }
        })
    }

    /// Replaces the history of `key` with `new` (removes the key for `None`) if it is still
    /// `expected` (the same allocation); returns whether it was. Nothing is copied when it
    /// was not.
    pub(crate) fn replace_if(&mut self, key: &[u8], expected: &Arc<KeyIndex>, new: Option<Arc<KeyIndex>>) -> bool {
        // `Err(())`: not the expected history (the path may be copied: harmless)
        self.change(key, |es| {
            let i = es.binary_search_by(|e| (*e.key).cmp(key)).map_err(|_| ())?;
            if !Arc::ptr_eq(&es[i].ki, expected) {
                return Err(());
            }
            let before = Stats::of_entry(&es[i].ki);
            Ok(match new {
                Some(ki) => {
                    let after = Stats::of_entry(&ki);
                    es[i].ki = ki;
                    Stats::delta(Some(before), Some(after))
                }
                None => {
                    es.remove(i);
                    Stats::delta(Some(before), None)
                }
            })
        })
        .is_ok()
    }

    /// Runs `leaf` on the entries of the leaf where `key` belongs (copying the path to it
    /// where shared), adds the stats difference it returns on the way up and restores the
    /// shape rules.
    fn change<E>(&mut self, key: &[u8], leaf: impl FnOnce(&mut Vec<Entry>) -> Result<Stats, E>) -> Result<(), E> {
        change_node(&mut self.root, key, leaf)?;
        if self.root.width() > MAX {
            let root = Arc::make_mut(&mut self.root);
            let right = root.split();
            let left = std::mem::take(root);
            let children = [left, right]
                .into_iter()
                .map(|n| Child { min: n.first_key().expect("split halves are non-empty").clone(), node: Arc::new(n) })
                .collect();
            let mut top = Node { stats: Stats::default(), kind: Kind::Inner(children) };
            top.recompute();
            self.root = Arc::new(top);
        }
        // an inner root left with one child (or none) gives way to it
        loop {
            let next = match &self.root.kind {
                Kind::Inner(cs) if cs.len() == 1 => cs[0].node.clone(),
                Kind::Inner(cs) if cs.is_empty() => Arc::default(),
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
    pub(crate) fn from_sorted(entries: Vec<Entry>) -> Tree {
        if entries.is_empty() {
            return Tree::default();
        }
        let mut items = entries.into_iter();
        let mut level: Vec<Node> = even_chunks(items.len())
            .map(|n| Node::with_stats(Kind::Leaf(items.by_ref().take(n).collect())))
            .collect();
        while level.len() > 1 {
            let mut nodes = level.into_iter();
            level = even_chunks(nodes.len())
                .map(|n| {
                    let children = nodes
                        .by_ref()
                        .take(n)
                        .map(|node| Child { min: node.first_key().expect("bulk-loaded nodes are non-empty").clone(), node: Arc::new(node) })
                        .collect();
                    Node::with_stats(Kind::Inner(children))
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

fn change_node<E>(node: &mut Arc<Node>, key: &[u8], leaf: impl FnOnce(&mut Vec<Entry>) -> Result<Stats, E>) -> Result<Stats, E> {
    // copies the path even when `leaf` fails: harmless, the copies hold what they copied
    let n = Arc::make_mut(node);
    let delta = match &mut n.kind {
        Kind::Leaf(es) => leaf(es)?,
        Kind::Inner(cs) => {
            let i = cs.partition_point(|c| &*c.min <= key).saturating_sub(1);
            let delta = change_node(&mut cs[i].node, key, leaf)?;
            fix_child(cs, i);
            delta
        }
    };
    n.stats.add(delta);
    Ok(delta)
}

/// Restores the shape rules for child `i` after it changed: drops it when empty, splits it
/// when too wide, merges it with a neighbour when too narrow; refreshes the `min`s.
fn fix_child(cs: &mut Vec<Child>, i: usize) {
    let w = cs[i].node.width();
    if w == 0 {
        cs.remove(i);
        return;
    }
    if w > MAX {
        let right = Arc::make_mut(&mut cs[i].node).split();
        let min = right.first_key().expect("split half is non-empty").clone();
        cs.insert(i + 1, Child { min, node: Arc::new(right) });
    } else if w < MIN && cs.len() > 1 {
        let (l, r) = if i + 1 < cs.len() { (i, i + 1) } else { (i - 1, i) };
        let right = cs.remove(r).node;
        let right = Arc::try_unwrap(right).unwrap_or_else(|shared| (*shared).clone());
        let left = Arc::make_mut(&mut cs[l].node);
        left.absorb(right);
        if left.width() > MAX {
            let rest = left.split();
            let min = rest.first_key().expect("split half is non-empty").clone();
            cs.insert(l + 1, Child { min, node: Arc::new(rest) });
        }
    }
    let lo = i.saturating_sub(1);
    let hi = (i + 2).min(cs.len());
    for c in &mut cs[lo..hi] {
        let first = c.node.first_key().expect("non-empty child");
        if !Arc::ptr_eq(first, &c.min) {
            c.min = first.clone();
        }
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
        n.visit(b"", None, &mut |e| {
            out.push(e.key.to_vec());
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
            let entries: Vec<Entry> = (0..n)
                .map(|i| {
                    let mut ki = KeyIndex::default();
                    ki.put(Revision::new(i as i64 + 1, 0)).unwrap();
                    Entry { key: format!("k{i:06}").into_bytes().into(), ki: Arc::new(ki) }
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
                t.root.visit(from.as_bytes(), to.map(str::as_bytes), &mut |e| {
                    walked += i64::from(e.ki.get(at).is_some());
                    true
                });
                assert_eq!(g.total, walked, "at {at} span {from}..{to:?}");
            }
        }
    }
}
