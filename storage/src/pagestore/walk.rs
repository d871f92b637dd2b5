//! Whole-bucket walks that bypass the node cache: the start-up rebuild's one pass over
//! millions of entries ([`Backend::scan_bulk`](crate::backend::Backend::scan_bulk)) and a
//! backup's passes over a pinned view (`ReadView::scan_all_uncached`, `scan_value_lens`).
//!
//! The ordinary scan (`btree::scan`) reads each node through the shared node cache and
//! decodes a leaf into owned keys and values. For a one-pass read of a whole bucket both
//! are waste: each leaf is read once, so caching it only evicts the writers' and readers'
//! hot nodes (and churns the allocator with millions of decoded leaves), and a visitor
//! that wants a key and a few fields of each value would see every value copied first.
//! Here a committed leaf is read into a reused buffer and its entries are handed to the
//! visitor as slices of it (`page::decode_view`, as panic-free as `decode`: a damaged page
//! is [`Error::Corrupt`]); the leaves under one branch that lie in consecutive pages are
//! read with one call (up to [`READ_BYTES`]). Nodes the open write transaction changed
//! (memory nodes) are walked as they are. A leaf's checksum is skipped only when the
//! caller asks for [`Leaves::Lengths`]; every other check is always made.
//!
//! A walk of a pinned state takes no lock of the store: its pages are not reused while
//! the pin lives (`db.rs`).

use super::btree::{Child, Node};
use super::io::PageIo;
use super::page::{self, Leaves, NodeView, PageId, Span, PAGE_SIZE};
use crate::backend::ScanFn;
use crate::error::{Error, Result};

/// Most bytes read in one call when leaves lie in consecutive pages.
const READ_BYTES: usize = 1 << 20;

/// Where committed nodes are read from.
#[derive(Clone, Copy)]
pub(crate) struct Source<'a> {
    pub io: &'a dyn PageIo,
    /// The high-water mark of the state being read: no node lies beyond it.
    pub hwm: PageId,
    /// How much of each leaf is checked.
    pub leaves: Leaves,
}

impl Source<'_> {
    fn check(&self, span: Span) -> Result<()> {
        if span.start < 2 || span.pages == 0 || span.end() > self.hwm {
            return Err(Error::corrupt("page", format!("span {}+{} outside 2..{}", span.start, span.pages, self.hwm)));
        }
        Ok(())
    }

    /// Reads the pages `from .. from + pages` into `buf` (resized to fit).
    fn read(&self, from: PageId, pages: u64, buf: &mut Vec<u8>) -> Result<()> {
        buf.resize(pages as usize * PAGE_SIZE, 0);
        self.io.read_at(from * PAGE_SIZE as u64, buf)?;
        Ok(())
    }
}

fn too_deep(span: Span) -> Error {
    Error::corrupt("page", format!("a path through page {} is deeper than any tree", span.start))
}

/// Visits every entry of the tree under `root` in key order until the visitor returns
/// `false`, reading committed nodes from `src` without any cache (module docs).
pub(crate) fn scan_all(root: Option<&Child>, src: Source<'_>, visit: &mut ScanFn<'_>) -> Result<()> {
    let mut buf = Vec::new();
    if let Some(root) = root {
        walk_child(root, src, 0, &mut buf, visit)?;
    }
    Ok(())
}

fn walk_child(child: &Child, src: Source<'_>, depth: u8, buf: &mut Vec<u8>, visit: &mut ScanFn<'_>) -> Result<bool> {
    match child {
        Child::Disk(span) => walk_disk(*span, src, depth, buf, visit),
        Child::Mem(node) => match &**node {
            Node::Leaf(entries) => {
                for (k, v) in entries {
                    if !visit(k, v)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            Node::Branch(_, entries) => {
                for (_, c) in entries {
                    if !walk_child(c, src, depth + 1, buf, visit)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
        },
    }
}

fn visit_entries(entries: page::LeafEntries<'_>, visit: &mut ScanFn<'_>) -> Result<bool> {
    for e in entries {
        let (k, v) = e?;
        if !visit(k, v)? {
            return Ok(false);
        }
    }
    Ok(true)
}

fn walk_leaf(bytes: &[u8], span: Span, src: Source<'_>, visit: &mut ScanFn<'_>) -> Result<bool> {
    match page::decode_view(bytes, span, src.hwm, src.leaves)? {
        NodeView::Leaf(entries) => visit_entries(entries, visit),
        NodeView::Branch(..) => Err(Error::corrupt("page", format!("leaf expected at page {}", span.start))),
    }
}

fn walk_disk(span: Span, src: Source<'_>, depth: u8, buf: &mut Vec<u8>, visit: &mut ScanFn<'_>) -> Result<bool> {
    if depth > page::MAX_HEIGHT {
        return Err(too_deep(span));
    }
    src.check(span)?;
    src.read(span.start, span.pages.into(), buf)?;
    let (height, children) = match page::decode_view(buf, span, src.hwm, src.leaves)? {
        NodeView::Leaf(entries) => return visit_entries(entries, visit),
        NodeView::Branch(h, e) => (h, e),
    };
    if height > 1 {
        for (_, c) in &children {
            if !walk_disk(*c, src, depth + 1, buf, visit)? {
                return Ok(false);
            }
        }
        return Ok(true);
    }
    // children are leaves: read runs of consecutive ones at once
    let mut i = 0;
    while i < children.len() {
        let first = children[i].1;
        src.check(first)?;
        let mut end = first.end();
        let mut j = i + 1;
        while j < children.len() && children[j].1.start == end && ((children[j].1.end() - first.start) as usize) * PAGE_SIZE <= READ_BYTES {
            src.check(children[j].1)?;
            end = children[j].1.end();
            j += 1;
        }
        src.read(first.start, end - first.start, buf)?;
        for (_, leaf) in &children[i..j] {
            let at = (leaf.start - first.start) as usize * PAGE_SIZE;
            let bytes = &buf[at..at + leaf.pages as usize * PAGE_SIZE];
            if !walk_leaf(bytes, *leaf, src, visit)? {
                return Ok(false);
            }
        }
        i = j;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pagestore::sim_io::{SimDisk, SimIo};

    type Entries = Vec<(Vec<u8>, Vec<u8>)>;

    fn leaf(start: PageId, keys: std::ops::Range<u32>, value_len: usize) -> (Entries, Vec<u8>) {
        let e: Entries = keys.map(|i| (i.to_be_bytes().to_vec(), vec![i as u8; value_len])).collect();
        let buf = page::encode_leaf(start, 1, e.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
        (e, buf)
    }

    fn scan(root: Span, io: &SimIo, hwm: PageId) -> (Entries, Result<()>) {
        let mut seen = Vec::new();
        let r = scan_all(Some(&Child::Disk(root)), Source { io, hwm, leaves: Leaves::Verified }, &mut |k, v| {
            seen.push((k.to_vec(), v.to_vec()));
            Ok(true)
        });
        (seen, r)
    }

    /// Leaves at pages 3, 4 (consecutive: one read), 5–6 (a two-page leaf) and 9, under a
    /// branch at page 2: every entry in order; a damaged leaf, a child past the high-water
    /// mark and a branch that names itself are typed errors.
    #[test]
    fn walks_leaves_in_place_and_refuses_damage() {
        let io = SimIo(SimDisk::new(vec![0u8; 10 * PAGE_SIZE], None, 1));
        let spans = [Span { start: 3, pages: 1 }, Span { start: 4, pages: 1 }, Span { start: 5, pages: 2 }, Span { start: 9, pages: 1 }];
        let leaves = [leaf(3, 0..10, 10), leaf(4, 10..20, 10), leaf(5, 20..22, 3000), leaf(9, 22..30, 10)];
        let mut want = Vec::new();
        for ((e, buf), span) in leaves.iter().zip(spans) {
            assert_eq!(buf.len(), span.pages as usize * PAGE_SIZE);
            io.write_at(span.start * PAGE_SIZE as u64, buf).unwrap();
            want.extend(e.iter().cloned());
        }
        let root = Span { start: 2, pages: 1 };
        let branch = page::encode_branch(2, 1, 1, leaves.iter().zip(spans).map(|((e, _), s)| (e[0].0.as_slice(), s)));
        io.write_at(2 * PAGE_SIZE as u64, &branch).unwrap();
        let (seen, r) = scan(root, &io, 10);
        r.unwrap();
        assert_eq!(seen, want);
        // the same as the cached scan of btree.rs
        let cache = crate::pagestore::cache::NodeCache::default();
        let mut cached = Vec::new();
        let reader = crate::pagestore::btree::NodeReader { io: &io, cache: &cache, hwm: 10 };
        crate::pagestore::btree::scan(Some(&Child::Disk(root)), reader, &[], None, &mut |k, v| {
            cached.push((k.to_vec(), v.to_vec()));
            Ok(true)
        })
        .unwrap();
        assert_eq!(cached, want);

        // a child past the high-water mark
        assert!(matches!(scan(root, &io, 9).1, Err(Error::Corrupt { .. })));
        // a damaged byte in leaf 4: leaf 3's entries come first, then the error
        let mut bad = leaves[1].1.clone();
        bad[HEADER_BYTE_IN_PAYLOAD] ^= 0x10;
        io.write_at(4 * PAGE_SIZE as u64, &bad).unwrap();
        let (seen, r) = scan(root, &io, 10);
        assert!(matches!(r, Err(Error::Corrupt { .. })), "{r:?}");
        assert_eq!(seen, leaves[0].0);
        // a branch naming itself
        let selfish = page::encode_branch(2, 1, 1, [(&b""[..], root)].into_iter());
        io.write_at(2 * PAGE_SIZE as u64, &selfish).unwrap();
        assert!(matches!(scan(root, &io, 10).1, Err(Error::Corrupt { .. })));
    }

    /// A byte inside the first entry of a leaf (past the 36-byte header).
    const HEADER_BYTE_IN_PAYLOAD: usize = 40;

    /// Walks the one leaf in `buf` (written at page 7) as the root.
    fn one_leaf(buf: &[u8], leaves: Leaves) -> (Entries, Result<()>) {
        let pages = (buf.len() / PAGE_SIZE) as u32;
        let io = SimIo(SimDisk::new(vec![0u8; (7 + pages as usize) * PAGE_SIZE], None, 1));
        io.write_at(7 * PAGE_SIZE as u64, buf).unwrap();
        let mut seen = Vec::new();
        let root = Child::Disk(Span { start: 7, pages });
        let r = scan_all(Some(&root), Source { io: &io, hwm: 7 + u64::from(pages), leaves }, &mut |k, v| {
            seen.push((k.to_vec(), v.to_vec()));
            Ok(true)
        });
        (seen, r)
    }

    /// A leaf read in place is what `page::decode` reads, with or without its checksum;
    /// a flipped value byte is refused only when verified; a length running past the
    /// payload, the wrong page and keys out of order are refused either way.
    #[test]
    fn leaves_verified_or_lengths_only() {
        let big = vec![9u8; 5000];
        let entries: [(&[u8], &[u8]); 3] = [(b"a", b"1"), (b"b", &big), (b"c", b"")];
        let buf = page::encode_leaf(7, 1, entries.into_iter());
        let page::DiskNode::Leaf(want) = page::decode(&buf, Span { start: 7, pages: 2 }, 100).unwrap() else { panic!("a leaf") };
        for mode in [Leaves::Verified, Leaves::Lengths] {
            let (seen, r) = one_leaf(&buf, mode);
            r.unwrap();
            assert_eq!(seen, want, "{mode:?}");
        }

        let small = page::encode_leaf(7, 1, [(&b"k1"[..], &b"v1"[..]), (b"k2", b"v2")].into_iter());
        let mut flipped = small.clone();
        flipped[page::HEADER + 8 + 2] ^= 1;
        assert!(matches!(one_leaf(&flipped, Leaves::Verified).1, Err(Error::Corrupt { .. })));
        one_leaf(&flipped, Leaves::Lengths).1.unwrap();
        let mut long = small.clone();
        long[page::HEADER + 4] = 200;
        let mut elsewhere = small.clone();
        elsewhere[4] = 8;
        let unordered = page::encode_leaf(7, 1, [(&b"k2"[..], &b"v2"[..]), (b"k1", b"v1")].into_iter());
        for b in [&long, &elsewhere, &unordered] {
            for mode in [Leaves::Verified, Leaves::Lengths] {
                assert!(matches!(one_leaf(b, mode).1, Err(Error::Corrupt { .. })), "{mode:?}");
            }
        }
    }
}
