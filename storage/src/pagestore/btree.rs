//! The copy-on-write B+tree of one bucket.
//!
//! A tree is a root [`Child`]: either a node on disk (a [`Span`], immutable once
//! committed) or a node in memory ([`Node`]), changed by the open write transaction.
//! Writing a key copies the path from the root down to its leaf into memory, and the
//! spans those nodes came from join the transaction's *freed* list (they stay readable:
//! the committed state and open views still use them). A commit *spills* the memory
//! nodes: splits those over a page, drops empty ones, merges small leaves with a
//! neighbour, allocates spans for the rest and encodes them; the new root goes in the
//! meta page. A range deletion ([`delete_range`]) copies the paths to the range's two
//! ends and drops every child wholly inside it without reading its leaves: their spans
//! join *freed* like those of copied nodes.
//!
//! # Invariants
//! * All leaves are at the same depth; a branch of height `h` has children of height
//!   `h - 1` (leaves: 0). Spilling keeps this: a split adds pieces at the same height, a
//!   new root goes above all, and only the root is ever collapsed into its single child.
//! * A branch's entries are sorted by key; entry `i > 0` is a lower bound of every key in
//!   child `i` and above every key of children `< i`. Entry 0's key bounds nothing: child
//!   0 holds everything below entry 1 (so deleting a branch's first child never needs a
//!   separator fixed).
//!
//! Worked example (keys as letters, one leaf holds three entries):
//! 1. put a, b, c, d into an empty tree: a memory leaf `[a b c d]`; the commit splits it
//!    into leaves `[a b c]` `[d]` and writes a root branch `[(""→L1) (d→L2)]`.
//! 2. put bb: the root and L1 are read into memory (their spans freed), L1 becomes
//!    `[a b bb c]`; the commit splits it into `[a b bb]` `[c]`: the root gets
//!    `[(""→L1') (c→L3) (d→L2)]` (L1' keeps L1's entry, L3 is bounded by its first key).
//! 3. put 0: it goes to child 0, L1', whatever its first key was.
//! 4. delete 0, a, b, bb: L1' is empty in memory; the commit drops it, and the root is
//!    written as `[(""→L3) (d→L2)]`: L3's bound `c` is no longer needed.

use std::sync::Arc;

use super::cache::NodeCache;
use super::io::PageIo;
use super::page::{self, DiskNode, PageId, Span, HEADER, PAGE_SIZE};
use crate::backend::ScanFn;
use crate::error::{Error, Result};

/// Bytes of payload one page holds.
const PAGE_PAYLOAD: usize = PAGE_SIZE - HEADER;

/// A reference from a parent (or the meta) to a node.
#[derive(Debug)]
pub(crate) enum Child {
    /// A committed node.
    Disk(Span),
    /// A node changed by the open write transaction.
    Mem(Box<Node>),
}

/// A node in memory.
#[derive(Debug)]
pub(crate) enum Node {
    /// Keys and values, sorted.
    Leaf(Vec<(Vec<u8>, Vec<u8>)>),
    /// Height and (separator, child) pairs.
    Branch(u8, Vec<(Vec<u8>, Child)>),
}

impl From<DiskNode> for Node {
    fn from(d: DiskNode) -> Node {
        match d {
            DiskNode::Leaf(e) => Node::Leaf(e),
            DiskNode::Branch(h, e) => Node::Branch(h, e.into_iter().map(|(k, s)| (k, Child::Disk(s))).collect()),
        }
    }
}

/// Reads committed nodes from the file, through the node cache.
#[derive(Clone, Copy)]
pub(crate) struct NodeReader<'a> {
    pub io: &'a dyn PageIo,
    pub cache: &'a NodeCache,
    /// The high-water mark of the state being read: no node lies beyond it.
    pub hwm: PageId,
}

impl NodeReader<'_> {
    /// Reads and decodes the node in `span`.
    pub(crate) fn read(&self, span: Span) -> Result<Arc<DiskNode>> {
        if span.start < 2 || span.end() > self.hwm {
            return Err(Error::corrupt("page", format!("span {}+{} outside 2..{}", span.start, span.pages, self.hwm)));
        }
        if let Some(node) = self.cache.get(span) {
            return Ok(node);
        }
        let mut buf = vec![0u8; span.pages as usize * PAGE_SIZE];
        self.io.read_at(span.start * PAGE_SIZE as u64, &mut buf)?;
        let node = Arc::new(page::decode(&buf, span, self.hwm)?);
        self.cache.insert(span, node.clone());
        Ok(node)
    }

    /// Reads the node in `span` for changing it.
    fn read_owned(&self, span: Span) -> Result<Node> {
        let node = self.read(span)?;
        Ok(Node::from(Arc::unwrap_or_clone(node)))
    }
}

/// Index of the child of a branch that holds `key` (entry 0 is open-ended downwards).
fn child_index<T>(entries: &[(Vec<u8>, T)], key: &[u8]) -> usize {
    entries.get(1..).map_or(0, |rest| rest.partition_point(|(k, _)| k.as_slice() <= key))
}

fn leaf_get(entries: &[(Vec<u8>, Vec<u8>)], key: &[u8]) -> Option<Vec<u8>> {
    entries.binary_search_by(|(k, _)| k.as_slice().cmp(key)).ok().map(|i| entries[i].1.clone())
}

/// The value of `key` in the tree under `root`.
pub(crate) fn get(root: Option<&Child>, r: NodeReader<'_>, key: &[u8]) -> Result<Option<Vec<u8>>> {
    let Some(mut child) = root else { return Ok(None) };
    loop {
        match child {
            Child::Disk(span) => {
                let mut span = *span;
                // a path longer than the deepest tree means a branch points back up
                for _ in 0..=page::MAX_HEIGHT {
                    match &*r.read(span)? {
                        DiskNode::Leaf(e) => return Ok(leaf_get(e, key)),
                        DiskNode::Branch(_, e) => span = e[child_index(e, key)].1,
                    }
                }
                return Err(too_deep(span));
            }
            Child::Mem(node) => match &**node {
                Node::Leaf(e) => return Ok(leaf_get(e, key)),
                Node::Branch(_, e) => child = &e[child_index(e, key)].1,
            },
        }
    }
}

/// Visits the leaf entries with `start <= key < end`; `Ok(false)` once the visitor stops.
fn scan_leaf(entries: &[(Vec<u8>, Vec<u8>)], start: &[u8], end: Option<&[u8]>, visit: &mut ScanFn<'_>) -> Result<bool> {
    let from = entries.partition_point(|(k, _)| k.as_slice() < start);
    for (k, v) in &entries[from..] {
        if end.is_some_and(|e| k.as_slice() >= e) {
            return Ok(false);
        }
        if !visit(k, v)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The children of a branch that may hold keys in `start..end`.
fn child_range<T>(entries: &[(Vec<u8>, T)], start: &[u8], end: Option<&[u8]>) -> std::ops::Range<usize> {
    let from = child_index(entries, start);
    let to = match end {
        // children from the one holding `end`'s predecessor on; a child whose lower
        // bound is ≥ end holds nothing wanted
        Some(e) => 1 + entries.get(1..).map_or(0, |rest| rest.partition_point(|(k, _)| k.as_slice() < e)),
        None => entries.len(),
    };
    from..to.max(from)
}

fn too_deep(span: Span) -> Error {
    Error::corrupt("page", format!("a path through page {} is deeper than any tree", span.start))
}

fn scan_disk(span: Span, depth: u8, r: NodeReader<'_>, start: &[u8], end: Option<&[u8]>, visit: &mut ScanFn<'_>) -> Result<bool> {
    if depth > page::MAX_HEIGHT {
        return Err(too_deep(span));
    }
    match &*r.read(span)? {
        DiskNode::Leaf(e) => scan_leaf(e, start, end, visit),
        DiskNode::Branch(_, e) => {
            for i in child_range(e, start, end) {
                if !scan_disk(e[i].1, depth + 1, r, start, end, visit)? {
                    return Ok(false);
                }
            }
            Ok(true)
        }
    }
}

fn scan_child(child: &Child, r: NodeReader<'_>, start: &[u8], end: Option<&[u8]>, visit: &mut ScanFn<'_>) -> Result<bool> {
    match child {
        Child::Disk(span) => scan_disk(*span, 0, r, start, end, visit),
        Child::Mem(node) => match &**node {
            Node::Leaf(e) => scan_leaf(e, start, end, visit),
            Node::Branch(_, e) => {
                for i in child_range(e, start, end) {
                    if !scan_child(&e[i].1, r, start, end, visit)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
        },
    }
}

/// Visits the entries with `start <= key < end` (`None`: to the end) in key order until
/// the visitor returns `false`.
pub(crate) fn scan(root: Option<&Child>, r: NodeReader<'_>, start: &[u8], end: Option<&[u8]>, visit: &mut ScanFn<'_>) -> Result<()> {
    if let Some(root) = root {
        scan_child(root, r, start, end, visit)?;
    }
    Ok(())
}

/// Brings a child into memory for changing it; a committed node's span joins `freed`.
fn make_mem<'c>(child: &'c mut Child, r: NodeReader<'_>, freed: &mut Vec<Span>) -> Result<&'c mut Node> {
    if let Child::Disk(span) = *child {
        let node = r.read_owned(span)?;
        freed.push(span);
        *child = Child::Mem(Box::new(node));
    }
    match child {
        Child::Mem(node) => Ok(node),
        Child::Disk(span) => Err(Error::corrupt("page", format!("node at {} not loaded", span.start))),
    }
}

fn put_in(node: &mut Node, depth: u8, r: NodeReader<'_>, freed: &mut Vec<Span>, key: Vec<u8>, value: Vec<u8>) -> Result<()> {
    if depth > page::MAX_HEIGHT {
        return Err(Error::corrupt("page", "a path deeper than any tree"));
    }
    match node {
        Node::Leaf(e) => {
            match e.binary_search_by(|(k, _)| k.as_slice().cmp(&key)) {
                Ok(i) => e[i].1 = value,
                Err(i) => e.insert(i, (key, value)),
            }
            Ok(())
        }
        Node::Branch(_, e) => {
            let i = child_index(e, &key);
            let child = make_mem(&mut e[i].1, r, freed)?;
            put_in(child, depth + 1, r, freed, key, value)
        }
    }
}

/// Sets `key` to `value`.
pub(crate) fn put(root: &mut Option<Child>, r: NodeReader<'_>, freed: &mut Vec<Span>, key: Vec<u8>, value: Vec<u8>) -> Result<()> {
    match root {
        None => {
            *root = Some(Child::Mem(Box::new(Node::Leaf(vec![(key, value)]))));
            Ok(())
        }
        Some(child) => {
            let node = make_mem(child, r, freed)?;
            put_in(node, 0, r, freed, key, value)
        }
    }
}

fn delete_in(node: &mut Node, r: NodeReader<'_>, freed: &mut Vec<Span>, key: &[u8]) -> Result<()> {
    match node {
        Node::Leaf(e) => {
            if let Ok(i) = e.binary_search_by(|(k, _)| k.as_slice().cmp(key)) {
                e.remove(i);
            }
            Ok(())
        }
        Node::Branch(_, e) => {
            let i = child_index(e, key);
            let child = make_mem(&mut e[i].1, r, freed)?;
            delete_in(child, r, freed, key)
        }
    }
}

/// Removes `key`; a missing key changes nothing (no node is copied).
pub(crate) fn delete(root: &mut Option<Child>, r: NodeReader<'_>, freed: &mut Vec<Span>, key: &[u8]) -> Result<()> {
    if get(root.as_ref(), r, key)?.is_none() {
        return Ok(());
    }
    match root {
        None => Ok(()),
        Some(child) => {
            let node = make_mem(child, r, freed)?;
            delete_in(node, r, freed, key)
        }
    }
}

/// Removes every key in `from..to`. Children of a branch lying wholly inside the range
/// are dropped without reading their leaves: their spans, and those of every node under
/// them (found by reading only their branches), join `freed`. Only the nodes on the paths
/// to the range's two ends are copied; a range holding no key copies nothing. Emptied
/// nodes stay in memory until the commit's spill drops them.
pub(crate) fn delete_range(root: &mut Option<Child>, r: NodeReader<'_>, freed: &mut Vec<Span>, from: &[u8], to: &[u8]) -> Result<()> {
    if from >= to {
        return Ok(());
    }
    let mut any = false;
    scan(root.as_ref(), r, from, Some(to), &mut |_, _| {
        any = true;
        Ok(false)
    })?;
    match root {
        Some(child) if any => {
            let node = make_mem(child, r, freed)?;
            delete_range_in(node, 0, r, freed, from, to)
        }
        _ => Ok(()),
    }
}

fn delete_range_in(node: &mut Node, depth: u8, r: NodeReader<'_>, freed: &mut Vec<Span>, from: &[u8], to: &[u8]) -> Result<()> {
    if depth > page::MAX_HEIGHT {
        return Err(Error::corrupt("page", "a path deeper than any tree"));
    }
    match node {
        Node::Leaf(e) => {
            let lo = e.partition_point(|(k, _)| k.as_slice() < from);
            let hi = lo + e[lo..].partition_point(|(k, _)| k.as_slice() < to);
            e.drain(lo..hi);
            Ok(())
        }
        Node::Branch(h, e) => {
            let h = *h;
            let wanted = child_range(e, from, Some(to));
            let mut kept = Vec::with_capacity(e.len());
            let mut entries = std::mem::take(e).into_iter().enumerate().peekable();
            while let Some((i, (sep, mut child))) = entries.next() {
                if !wanted.contains(&i) {
                    kept.push((sep, child));
                    continue;
                }
                // child i holds keys in [sep, next sep); child 0's lower end is open
                let above = if i == 0 { from.is_empty() } else { sep.as_slice() >= from };
                let below = entries.peek().is_some_and(|(_, (next, _))| next.as_slice() <= to);
                if above && below {
                    drop_subtree(child, h.saturating_sub(1), r, freed)?;
                } else {
                    delete_range_in(make_mem(&mut child, r, freed)?, depth + 1, r, freed, from, to)?;
                    kept.push((sep, child));
                }
            }
            *e = kept;
            Ok(())
        }
    }
}

/// Adds the spans of every committed node under `child` (of height `h`) to `freed`,
/// reading only branches, and around the node cache: what is dropped is not read again.
/// (A memory node's own span joined `freed` when it was copied.)
fn drop_subtree(child: Child, h: u8, r: NodeReader<'_>, freed: &mut Vec<Span>) -> Result<()> {
    match child {
        Child::Disk(span) if h == 0 => freed.push(span),
        Child::Disk(span) => collect_spans(span, r, freed)?,
        Child::Mem(node) => {
            if let Node::Branch(h, e) = *node {
                for (_, c) in e {
                    drop_subtree(c, h.saturating_sub(1), r, freed)?;
                }
            }
        }
    }
    Ok(())
}

/// What a commit needs to spill memory nodes.
pub(crate) struct Spill<'a> {
    /// Reads committed siblings (for merging small leaves).
    pub r: NodeReader<'a>,
    /// Spans the transaction stopped using.
    pub freed: &'a mut Vec<Span>,
    /// Allocates a span of the given number of pages.
    pub alloc: &'a mut dyn FnMut(u64) -> PageId,
    /// Encoded nodes to write, by first page.
    pub writes: &'a mut Vec<(PageId, Vec<u8>)>,
    /// The committing transaction.
    pub txid: u64,
    /// Pages a leaf of several entries may span (1 normally; more when a
    /// defragmentation packs the file, see `chunks`).
    pub leaf_pages: usize,
}

/// Splits entries of the given sizes into runs filling a page each (a run holds at least
/// `min` entries, the last one too when possible). A run that would end less than 7/8
/// full takes another page instead, up to `max_pages`: 1 KiB values fill one page to
/// ~79% (three of them), two pages to ~92% (seven).
fn chunks(sizes: &[usize], min: usize, max_pages: usize) -> Vec<std::ops::Range<usize>> {
    let cap = |pages: usize| pages * PAGE_SIZE - HEADER;
    let mut out: Vec<std::ops::Range<usize>> = Vec::new();
    let (mut from, mut bytes, mut pages) = (0, 0, 1);
    for (i, &s) in sizes.iter().enumerate() {
        while i - from >= min && bytes + s > cap(pages) {
            if pages < max_pages && bytes * 8 < cap(pages) * 7 {
                pages += 1;
                continue;
            }
            out.push(from..i);
            (from, bytes, pages) = (i, 0, 1);
        }
        bytes += s;
    }
    if from < sizes.len() {
        match out.last_mut() {
            Some(last) if sizes.len() - from < min => last.end = sizes.len(),
            _ => out.push(from..sizes.len()),
        }
    }
    out
}

fn leaf_size(e: &[(Vec<u8>, Vec<u8>)]) -> usize {
    e.iter().map(|(k, v)| page::leaf_entry_size(k, v)).sum()
}

/// Bytes of leaf entries under `child`, a leaf.
fn child_leaf_size(child: &Child, r: NodeReader<'_>) -> Result<usize> {
    match child {
        Child::Mem(n) => match &**n {
            Node::Leaf(e) => Ok(leaf_size(e)),
            Node::Branch(..) => Err(Error::corrupt("page", "a height-1 branch with a non-leaf child")),
        },
        Child::Disk(span) => match &*r.read(*span)? {
            DiskNode::Leaf(e) => Ok(leaf_size(e)),
            DiskNode::Branch(..) => Err(Error::corrupt("page", format!("leaf expected at page {}", span.start))),
        },
    }
}

/// Merges each small memory leaf of a height-1 branch with its right neighbour when the
/// two fit in one page, so deletes do not leave a trail of nearly empty pages. (A pair
/// that does not fit is left alone: merging it would only rewrite a full neighbour.)
fn merge_small_leaves(entries: &mut Vec<(Vec<u8>, Child)>, sp: &mut Spill<'_>) -> Result<()> {
    let small = |c: &Child| matches!(c, Child::Mem(n) if matches!(&**n, Node::Leaf(e) if leaf_size(e) < PAGE_PAYLOAD / 4));
    let mut i = 0;
    while i + 1 < entries.len() {
        if !small(&entries[i].1) && !small(&entries[i + 1].1) {
            i += 1;
            continue;
        }
        if child_leaf_size(&entries[i].1, sp.r)? + child_leaf_size(&entries[i + 1].1, sp.r)? > PAGE_PAYLOAD {
            i += 1;
            continue;
        }
        let right = match entries.remove(i + 1).1 {
            Child::Mem(n) => *n,
            Child::Disk(span) => {
                sp.freed.push(span);
                sp.r.read_owned(span)?
            }
        };
        // entry i's bound stays; its range now reaches up to entry i + 2's
        match (make_mem(&mut entries[i].1, sp.r, sp.freed)?, right) {
            (Node::Leaf(l), Node::Leaf(mut r)) => l.append(&mut r),
            _ => return Err(Error::corrupt("page", "a height-1 branch with a non-leaf child")),
        }
    }
    Ok(())
}

/// Writes a memory node (and the memory nodes under it); returns its height and the
/// pieces it became (first key, span): none when it ended up empty, several when it
/// was split. The root (`root == true`) with a single child is replaced by that child.
fn spill_node(node: Node, root: bool, sp: &mut Spill<'_>) -> Result<(u8, Vec<(Vec<u8>, Span)>)> {
    match node {
        Node::Leaf(e) => {
            let sizes: Vec<usize> = e.iter().map(|(k, v)| page::leaf_entry_size(k, v)).collect();
            let mut pieces = Vec::new();
            for run in chunks(&sizes, 1, sp.leaf_pages) {
                let pages = page::pages_for(sizes[run.clone()].iter().sum());
                let start = (sp.alloc)(pages as u64);
                let buf = page::encode_leaf(start, sp.txid, e[run.clone()].iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
                sp.writes.push((start, buf));
                pieces.push((e[run.start].0.clone(), Span { start, pages }));
            }
            Ok((0, pieces))
        }
        Node::Branch(h, mut entries) => {
            if h == 1 {
                merge_small_leaves(&mut entries, sp)?;
            }
            let mut kids: Vec<(Vec<u8>, Span)> = Vec::with_capacity(entries.len());
            for (sep, child) in entries {
                match child {
                    Child::Disk(span) => kids.push((sep, span)),
                    Child::Mem(n) => {
                        let (_, pieces) = spill_node(*n, false, sp)?;
                        for (j, (first, span)) in pieces.into_iter().enumerate() {
                            kids.push((if j == 0 { sep.clone() } else { first }, span));
                        }
                    }
                }
            }
            if root && kids.len() == 1 {
                return Ok((h - 1, kids));
            }
            let sizes: Vec<usize> = kids.iter().map(|(k, _)| page::branch_entry_size(k)).collect();
            let mut pieces = Vec::new();
            for run in chunks(&sizes, 2, 1) {
                // each piece's entry 0 bounds nothing: it is written empty (so it can never
                // be out of order), and its key becomes the piece's bound in the parent
                let first = std::mem::take(&mut kids[run.start].0);
                let bytes = sizes[run.clone()].iter().sum::<usize>() - first.len();
                let pages = page::pages_for(bytes);
                let start = (sp.alloc)(pages as u64);
                let buf = page::encode_branch(start, sp.txid, h, kids[run.clone()].iter().map(|(k, s)| (k.as_slice(), *s)));
                sp.writes.push((start, buf));
                pieces.push((first, Span { start, pages }));
            }
            Ok((h, pieces))
        }
    }
}

/// Spills the tree under `root` (module docs); afterwards the root is on disk or `None`.
pub(crate) fn commit(root: &mut Option<Child>, sp: &mut Spill<'_>) -> Result<()> {
    match root.take() {
        Some(Child::Mem(node)) => {
            let (mut h, mut pieces) = spill_node(*node, true, sp)?;
            while pieces.len() > 1 {
                if h == u8::MAX {
                    return Err(Error::corrupt("page", "tree too deep"));
                }
                let branch = Node::Branch(h + 1, pieces.into_iter().map(|(k, s)| (k, Child::Disk(s))).collect());
                (h, pieces) = spill_node(branch, true, sp)?;
            }
            *root = pieces.pop().map(|(_, s)| Child::Disk(s));
        }
        other => *root = other,
    }
    Ok(())
}

/// Adds every span of the committed tree at `root` to `out`, reading only branches (a
/// height-1 branch names its leaves' spans), and checks the heights.
pub(crate) fn collect_spans(root: Span, r: NodeReader<'_>, out: &mut Vec<Span>) -> Result<()> {
    fn walk(span: Span, want: Option<u8>, r: NodeReader<'_>, out: &mut Vec<Span>) -> Result<()> {
        out.push(span);
        // read around the cache: open walks every branch once, and should not fill it
        let mut buf = vec![0u8; span.pages as usize * PAGE_SIZE];
        r.io.read_at(span.start * PAGE_SIZE as u64, &mut buf)?;
        let node = page::decode(&buf, span, r.hwm)?;
        let h = match &node {
            DiskNode::Leaf(_) => 0,
            DiskNode::Branch(h, _) => *h,
        };
        if want.is_some_and(|w| w != h) {
            return Err(Error::corrupt("page", format!("node at {} has height {h}, its parent says {want:?}", span.start)));
        }
        if let DiskNode::Branch(h, e) = node {
            for (_, child) in e {
                if h == 1 {
                    out.push(child);
                } else {
                    walk(child, Some(h - 1), r, out)?;
                }
            }
        }
        Ok(())
    }
    walk(root, None, r, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pagestore::sim_io::{SimDisk, SimIo};

    /// One-page runs as before; with two pages allowed, a run that would end under 7/8
    /// full takes the second page, and small or huge entries are cut as before.
    #[test]
    fn chunks_fill_pages_and_take_a_second_one_when_it_packs_better() {
        let lens = |runs: Vec<std::ops::Range<usize>>| runs.iter().map(|r| r.len()).collect::<Vec<_>>();
        assert_eq!(lens(chunks(&[1052; 10], 1, 1)), vec![3, 3, 3, 1]);
        assert_eq!(lens(chunks(&[1052; 16], 1, 2)), vec![7, 7, 2]);
        assert_eq!(lens(chunks(&[100; 100], 1, 2)), vec![40, 40, 20]);
        assert_eq!(lens(chunks(&[100, 20_000, 100], 1, 2)), vec![1, 1, 1]);
        // branches: at least two entries a run, the last one too
        assert_eq!(lens(chunks(&[3000, 3000, 3000], 2, 1)), vec![3]);
        for sizes in [vec![1052; 16], vec![2100; 9], vec![700; 40]] {
            for r in chunks(&sizes, 1, 2) {
                assert!(page::pages_for(sizes[r].iter().sum()) <= 2);
            }
        }
    }

    /// A branch that names itself as its child (checksum intact) is a typed error for
    /// reads and writes, not an endless walk.
    #[test]
    fn a_branch_pointing_back_up_is_a_typed_error() {
        let io = SimIo(SimDisk::new(vec![0u8; 4 * PAGE_SIZE], None, 1));
        let me = Span { start: 2, pages: 1 };
        let buf = page::encode_branch(2, 1, 1, [(&b""[..], me)].into_iter());
        io.write_at(2 * PAGE_SIZE as u64, &buf).unwrap();
        let cache = NodeCache::default();
        let r = NodeReader { io: &io, cache: &cache, hwm: 4 };
        let root = Some(Child::Disk(me));
        assert!(matches!(get(root.as_ref(), r, b"k"), Err(Error::Corrupt { .. })));
        let mut seen = 0;
        let scanned = scan(root.as_ref(), r, b"", None, &mut |_, _| {
            seen += 1;
            Ok(true)
        });
        assert!(matches!(scanned, Err(Error::Corrupt { .. })));
        let mut root = root;
        let mut freed = Vec::new();
        assert!(matches!(put(&mut root, r, &mut freed, b"k".to_vec(), b"v".to_vec()), Err(Error::Corrupt { .. })));
    }
}
