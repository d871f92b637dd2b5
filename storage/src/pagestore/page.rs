//! Node pages: how one B+tree node is laid out in a span of pages.
//!
//! A node occupies a *span*: `pages` consecutive pages of [`PAGE_SIZE`] bytes starting at
//! page id `start` (byte offset `start * PAGE_SIZE`). Most nodes fit in one page; a leaf
//! holding a value larger than a page, or a branch with very long keys, takes several.
//!
//! Layout, integers little-endian:
//! ```text
//! off  len  field
//!   0    4  crc32 (IEEE) of bytes 4 .. 36 + payload_len
//!   4    8  page id of the span's first page (catches a write that landed elsewhere)
//!  12    8  txid of the commit that wrote the node
//!  20    1  height: 0 = leaf, h ≥ 1 = branch whose children have height h - 1
//!  21    3  zero
//!  24    4  span length in pages (≥ 1)
//!  28    4  entry count
//!  32    4  payload_len
//!  36    …  payload, then zeros to the end of the span
//! leaf entry:    u32 key_len  u32 value_len  key  value
//! branch entry:  u32 key_len  u64 child start  u32 child pages  key
//! ```
//! Entries are in strictly ascending key order. A branch's entry `i` is the lower bound
//! of child `i`'s keys, except entry 0, whose key is not a bound (the child is
//! open-ended downwards); see `btree.rs`.
//!
//! [`decode`] (owned entries) and [`decode_view`] (a leaf's entries walked in place, for a
//! one-pass scan) check every length against the buffer and return [`Error::Corrupt`] for
//! anything that does not fit; they never panic, whatever the bytes. `decode` is
//! `decode_view` with the entries copied out, so one parser serves both. Only a walk that
//! reads every leaf twice may skip a leaf's checksum on its first pass ([`Leaves::Lengths`]).

use crate::crc32::Crc32;
use crate::error::{Error, Result};

/// Bytes per page.
pub(crate) const PAGE_SIZE: usize = 4096;
/// Bytes of a node header.
pub(crate) const HEADER: usize = 36;
/// The deepest tree accepted from disk.
pub(crate) const MAX_HEIGHT: u8 = 64;

/// A page id: the page at byte offset `id * PAGE_SIZE`. Ids 0 and 1 are the meta pages.
pub(crate) type PageId = u64;

/// A run of consecutive pages holding one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Span {
    /// First page.
    pub start: PageId,
    /// Number of pages (≥ 1).
    pub pages: u32,
}

impl Span {
    /// One past the last page.
    pub(crate) fn end(&self) -> PageId {
        self.start + self.pages as u64
    }
}

/// A node as stored: a leaf's entries, or a branch's separator keys and child spans.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum DiskNode {
    /// Keys and values.
    Leaf(Vec<(Vec<u8>, Vec<u8>)>),
    /// Height (≥ 1) and (separator, child) pairs.
    Branch(u8, Vec<(Vec<u8>, Span)>),
}

/// Encoded size of a leaf entry.
pub(crate) fn leaf_entry_size(k: &[u8], v: &[u8]) -> usize {
    8 + k.len() + v.len()
}

/// Encoded size of a branch entry.
pub(crate) fn branch_entry_size(k: &[u8]) -> usize {
    16 + k.len()
}

/// Pages a node of `payload` bytes needs.
pub(crate) fn pages_for(payload: usize) -> u32 {
    (HEADER + payload).div_ceil(PAGE_SIZE) as u32
}

/// Builds the bytes of a node; `entries` is already encoded (`payload`).
fn finish(start: PageId, txid: u64, height: u8, count: usize, payload: &[u8]) -> Vec<u8> {
    let pages = pages_for(payload.len());
    let mut buf = vec![0u8; pages as usize * PAGE_SIZE];
    buf[4..12].copy_from_slice(&start.to_le_bytes());
    buf[12..20].copy_from_slice(&txid.to_le_bytes());
    buf[20] = height;
    buf[24..28].copy_from_slice(&pages.to_le_bytes());
    buf[28..32].copy_from_slice(&(count as u32).to_le_bytes());
    buf[32..36].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    buf[HEADER..HEADER + payload.len()].copy_from_slice(payload);
    let crc = Crc32::of(&buf[4..HEADER + payload.len()]);
    buf[0..4].copy_from_slice(&crc.to_le_bytes());
    buf
}

/// Encodes a leaf at `start` (the caller allocated `pages_for(payload)` pages there).
pub(crate) fn encode_leaf<'a>(start: PageId, txid: u64, entries: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> Vec<u8> {
    let mut payload = Vec::new();
    let mut count = 0;
    for (k, v) in entries {
        payload.extend_from_slice(&(k.len() as u32).to_le_bytes());
        payload.extend_from_slice(&(v.len() as u32).to_le_bytes());
        payload.extend_from_slice(k);
        payload.extend_from_slice(v);
        count += 1;
    }
    finish(start, txid, 0, count, &payload)
}

/// Encodes a branch of `height` at `start`.
pub(crate) fn encode_branch<'a>(start: PageId, txid: u64, height: u8, entries: impl Iterator<Item = (&'a [u8], Span)>) -> Vec<u8> {
    let mut payload = Vec::new();
    let mut count = 0;
    for (k, child) in entries {
        payload.extend_from_slice(&(k.len() as u32).to_le_bytes());
        payload.extend_from_slice(&child.start.to_le_bytes());
        payload.extend_from_slice(&child.pages.to_le_bytes());
        payload.extend_from_slice(k);
        count += 1;
    }
    finish(start, txid, height, count, &payload)
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or_else(|| Error::corrupt("page", "entry runs past the payload"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// The txid in a node's header (call after [`decode`] accepted `buf`).
pub(crate) fn node_txid(buf: &[u8]) -> u64 {
    if buf.len() < HEADER {
        return 0;
    }
    le64(buf, 12)
}

/// What [`check_header`] accepted: the node's height and entry count, and its payload.
struct Header<'a> {
    height: u8,
    count: usize,
    payload: &'a [u8],
}

fn corrupt_at(span: Span, d: String) -> Error {
    Error::corrupt("page", format!("node at page {}: {d}", span.start))
}

/// How much of a leaf [`decode_view`] checks (a branch is always checked in full).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Leaves {
    /// Everything, the checksum included.
    Verified,
    /// All but the checksum: only keys and the values' lengths are trusted. For a layout
    /// pass whose second pass reads and checks every leaf again (`bbolt/stream.rs`).
    Lengths,
}

/// Checks a node's header (lengths, checksum unless `leaves` skips a leaf's, position,
/// height, a plausible count).
fn check_header(buf: &[u8], span: Span, leaves: Leaves) -> Result<Header<'_>> {
    let here = |d: String| corrupt_at(span, d);
    if buf.len() < HEADER {
        return Err(here(format!("{} bytes, shorter than a header", buf.len())));
    }
    let payload_len = le32(buf, 32) as usize;
    if payload_len > buf.len() - HEADER {
        return Err(here(format!("payload of {payload_len} bytes in a {}-byte span", buf.len())));
    }
    let unchecked_leaf = leaves == Leaves::Lengths && buf[20] == 0;
    if !unchecked_leaf && Crc32::of(&buf[4..HEADER + payload_len]) != le32(buf, 0) {
        return Err(here("checksum mismatch".into()));
    }
    if le64(buf, 4) != span.start {
        return Err(here(format!("header names page {}", le64(buf, 4))));
    }
    if le32(buf, 24) != span.pages {
        return Err(here(format!("header says {} pages, parent says {}", le32(buf, 24), span.pages)));
    }
    let height = buf[20];
    if height > MAX_HEIGHT {
        return Err(here(format!("height {height}")));
    }
    let count = le32(buf, 28) as usize;
    // every entry takes at least 8 bytes: a count beyond that is a lie, not an allocation
    if count > payload_len / 8 {
        return Err(here(format!("{count} entries in {payload_len} bytes")));
    }
    Ok(Header { height, count, payload: &buf[HEADER..HEADER + payload_len] })
}

/// A node read in place ([`decode_view`]): a leaf's entries borrow the buffer.
pub(crate) enum NodeView<'a> {
    /// The leaf's entries, checked as they are walked.
    Leaf(LeafEntries<'a>),
    /// Height (≥ 1) and (separator, child) pairs, as [`DiskNode::Branch`].
    Branch(u8, Vec<(Vec<u8>, Span)>),
}

/// The entries of a leaf, walked in place: each `(key, value)` borrows the page buffer.
/// Every length is checked as it is read, and the keys' order; after the last entry, that
/// nothing is left. A check that fails yields one `Err` and then nothing.
pub(crate) struct LeafEntries<'a> {
    c: Cursor<'a>,
    left: usize,
    prev: Option<&'a [u8]>,
    span: Span,
    failed: bool,
}

impl<'a> LeafEntries<'a> {
    fn step(&mut self) -> Result<Option<(&'a [u8], &'a [u8])>> {
        if self.left == 0 {
            if self.c.pos != self.c.buf.len() {
                return Err(corrupt_at(self.span, format!("{} payload bytes after the last entry", self.c.buf.len() - self.c.pos)));
            }
            return Ok(None);
        }
        let kl = self.c.u32()? as usize;
        let vl = self.c.u32()? as usize;
        let k = self.c.take(kl)?;
        let v = self.c.take(vl)?;
        if self.prev.is_some_and(|p| p >= k) {
            return Err(corrupt_at(self.span, "leaf keys out of order".into()));
        }
        self.prev = Some(k);
        self.left -= 1;
        Ok(Some((k, v)))
    }
}

impl<'a> Iterator for LeafEntries<'a> {
    type Item = Result<(&'a [u8], &'a [u8])>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let r = self.step().transpose();
        self.failed = matches!(r, Some(Err(_)));
        r
    }
}

/// Decodes the node stored in `buf`, which was read from `span`, without copying a leaf's
/// entries (see [`LeafEntries`]), checking a leaf as `leaves` says. `limit` is the file's
/// high-water mark: no child may reach past it.
pub(crate) fn decode_view(buf: &[u8], span: Span, limit: PageId, leaves: Leaves) -> Result<NodeView<'_>> {
    let h = check_header(buf, span, leaves)?;
    let mut c = Cursor { buf: h.payload, pos: 0 };
    if h.height == 0 {
        return Ok(NodeView::Leaf(LeafEntries { c, left: h.count, prev: None, span, failed: false }));
    }
    let here = |d: String| corrupt_at(span, d);
    let mut entries: Vec<(Vec<u8>, Span)> = Vec::with_capacity(h.count);
    for _ in 0..h.count {
        let kl = c.u32()? as usize;
        let start = c.u64()?;
        let pages = c.u32()?;
        let k = c.take(kl)?.to_vec();
        let child = Span { start, pages };
        if start < 2 || pages == 0 || start.checked_add(pages as u64).is_none_or(|e| e > limit) {
            return Err(here(format!("child span {start}+{pages} outside 2..{limit}")));
        }
        if entries.last().is_some_and(|(p, _)| *p >= k) {
            return Err(here("branch keys out of order".into()));
        }
        entries.push((k, child));
    }
    if entries.is_empty() {
        return Err(here("empty branch".into()));
    }
    if c.pos != h.payload.len() {
        return Err(here(format!("{} payload bytes after the last entry", h.payload.len() - c.pos)));
    }
    Ok(NodeView::Branch(h.height, entries))
}

/// Decodes the node stored in `buf`, which was read from `span`, into owned entries (see
/// [`decode_view`] for `limit`).
pub(crate) fn decode(buf: &[u8], span: Span, limit: PageId) -> Result<DiskNode> {
    match decode_view(buf, span, limit, Leaves::Verified)? {
        NodeView::Leaf(entries) => {
            let entries = entries.map(|e| e.map(|(k, v)| (k.to_vec(), v.to_vec()))).collect::<Result<Vec<_>>>()?;
            Ok(DiskNode::Leaf(entries))
        }
        NodeView::Branch(h, entries) => Ok(DiskNode::Branch(h, entries)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn leaf_and_branch_round_trip() {
        let e = [(b"a".to_vec(), b"1".to_vec()), (b"b".to_vec(), vec![7u8; 5000])];
        let buf = encode_leaf(9, 3, e.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
        assert_eq!(buf.len(), 2 * PAGE_SIZE);
        let span = Span { start: 9, pages: 2 };
        assert_eq!(decode(&buf, span, 100).unwrap(), DiskNode::Leaf(e.to_vec()));
        let kids = [(b"".to_vec(), Span { start: 4, pages: 1 }), (b"m".to_vec(), Span { start: 5, pages: 3 })];
        let buf = encode_branch(2, 3, 1, kids.iter().map(|(k, s)| (k.as_slice(), *s)));
        assert_eq!(decode(&buf, Span { start: 2, pages: 1 }, 100).unwrap(), DiskNode::Branch(1, kids.to_vec()));
        // the child reaching past the high-water mark is refused
        assert!(decode(&buf, Span { start: 2, pages: 1 }, 7).is_err());
    }

    #[test]
    fn every_flipped_byte_is_a_typed_error() {
        let e = [(b"k".to_vec(), b"v".to_vec())];
        let buf = encode_leaf(5, 1, e.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
        let span = Span { start: 5, pages: 1 };
        for i in 0..HEADER + 10 {
            let mut bad = buf.clone();
            bad[i] ^= 0x10;
            assert!(matches!(decode(&bad, span, 10), Err(Error::Corrupt { .. })), "flip at {i}");
        }
        assert!(decode(&buf, Span { start: 6, pages: 1 }, 10).is_err(), "misplaced page");
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600), start in 0u64..8, pages in 0u32..3) {
            let _ = decode(&bytes, Span { start, pages }, 16);
        }

        #[test]
        fn decode_never_panics_on_a_valid_page_with_its_crc_fixed(seed in proptest::collection::vec((0usize..200, any::<u8>()), 1..8)) {
            // damage inside the checksummed area, then fix the checksum, so the parser runs
            let e = [(b"key".to_vec(), b"value".to_vec()), (b"key2".to_vec(), vec![1u8; 40])];
            let mut buf = encode_leaf(3, 1, e.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
            for (at, b) in seed {
                buf[4 + at] = b;
            }
            let n = (le32(&buf, 32) as usize).min(PAGE_SIZE - HEADER);
            let crc = Crc32::of(&buf[4..HEADER + n]);
            buf[0..4].copy_from_slice(&crc.to_le_bytes());
            let _ = decode(&buf, Span { start: 3, pages: 1 }, 16);
        }
    }
}
