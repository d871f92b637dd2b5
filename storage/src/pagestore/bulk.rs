//! Whole-bucket walks of a pinned state for one-off passes over all the data (a backup's
//! export, `ReadView::scan_all_uncached` and `scan_value_lens`), made to cost the writers
//! as little as possible:
//! * nodes are read straight from the file into one reused buffer, never through the
//!   node cache (`cache.rs`): a pass over a whole bucket would fill it with nodes read
//!   once, evicting the writers' and readers' hot branches and leaves; nor is the
//!   cache's lock taken once per node;
//! * a leaf is read in place: its entries are handed to the visitor as slices of the
//!   buffer, with no allocation or copy per entry (`page::decode` builds owned vectors);
//!   branches, about one node in 150, go through `page::decode`;
//! * the checks are `page::decode`'s (header, lengths, key order, the child spans below
//!   the high-water mark, the depth), the leaf's checksum included unless the caller
//!   only wants the values' lengths (`Leaves::Lengths`: a layout pass whose second pass
//!   reads and checks every leaf again, see `bbolt/stream.rs`).
//!
//! The pinned state's pages are not reused while it lives (`db.rs`), so the walk takes no
//! lock of the store.

use super::db::PinnedState;
use super::io::PageIo;
use super::page::{self, DiskNode, PageId, Span, HEADER, MAX_HEIGHT, PAGE_SIZE};
use crate::backend::{Bucket, ScanFn};
use crate::crc32::Crc32;
use crate::error::{Error, Result};

/// How much of each leaf is checked.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Leaves {
    /// Everything `page::decode` checks, the checksum included.
    Verified,
    /// All but the checksum: only keys and the values' lengths are trusted.
    Lengths,
}

impl PinnedState {
    /// Visits every entry of `bucket` in key order (module docs) until `visit` stops.
    pub(crate) fn scan_bulk(&self, bucket: Bucket, leaves: Leaves, visit: &mut ScanFn<'_>) -> Result<()> {
        let (io, root, hwm) = self.raw(bucket)?;
        let Some(root) = root else { return Ok(()) };
        let mut walk = Walk { io, hwm, leaves, buf: Vec::new() };
        walk.node(root, 0, visit)?;
        Ok(())
    }
}

struct Walk<'a> {
    io: &'a dyn PageIo,
    hwm: PageId,
    leaves: Leaves,
    /// The node being read (a branch is decoded out of it before its children are read).
    buf: Vec<u8>,
}

impl Walk<'_> {
    /// Visits the subtree in `span`; `Ok(false)` once the visitor stopped.
    fn node(&mut self, span: Span, depth: u8, visit: &mut ScanFn<'_>) -> Result<bool> {
        if depth > MAX_HEIGHT {
            return Err(Error::corrupt("page", format!("a path through page {} is deeper than any tree", span.start)));
        }
        if span.start < 2 || span.end() > self.hwm {
            return Err(Error::corrupt("page", format!("span {}+{} outside 2..{}", span.start, span.pages, self.hwm)));
        }
        let len = span.pages as usize * PAGE_SIZE;
        self.buf.resize(len, 0);
        self.io.read_at(span.start * PAGE_SIZE as u64, &mut self.buf[..len])?;
        if self.buf[20] == 0 {
            return visit_leaf(&self.buf[..len], span, self.leaves, visit);
        }
        match page::decode(&self.buf[..len], span, self.hwm)? {
            DiskNode::Branch(_, children) => {
                for (_, child) in children {
                    if !self.node(child, depth + 1, visit)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            DiskNode::Leaf(_) => Err(Error::corrupt("page", format!("node at page {}: a leaf of nonzero height", span.start))),
        }
    }
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Visits the entries of the leaf in `buf` (read from `span`; layout in `page.rs`) as
/// slices of `buf`, checking it as `page::decode` does (the checksum only when
/// `Leaves::Verified`); `Ok(false)` once the visitor stopped.
fn visit_leaf(buf: &[u8], span: Span, leaves: Leaves, visit: &mut ScanFn<'_>) -> Result<bool> {
    let here = |d: String| Error::corrupt("page", format!("node at page {}: {d}", span.start));
    let payload_len = le32(buf, 32) as usize;
    if payload_len > buf.len() - HEADER {
        return Err(here(format!("payload of {payload_len} bytes in a {}-byte span", buf.len())));
    }
    if leaves == Leaves::Verified && Crc32::of(&buf[4..HEADER + payload_len]) != le32(buf, 0) {
        return Err(here("checksum mismatch".into()));
    }
    let at = u64::from(le32(buf, 4)) | u64::from(le32(buf, 8)) << 32;
    if at != span.start {
        return Err(here(format!("header names page {at}")));
    }
    if le32(buf, 24) != span.pages {
        return Err(here(format!("header says {} pages, parent says {}", le32(buf, 24), span.pages)));
    }
    let payload = &buf[HEADER..HEADER + payload_len];
    let mut pos = 0;
    let mut take = |n: usize| -> Result<&[u8]> {
        let end = pos + n;
        let s = payload.get(pos..end).ok_or_else(|| here("entry runs past the payload".into()))?;
        pos = end;
        Ok(s)
    };
    let mut prev: Option<&[u8]> = None;
    for _ in 0..le32(buf, 28) {
        let lens = take(8)?;
        let (kl, vl) = (le32(lens, 0) as usize, le32(lens, 4) as usize);
        let k = take(kl)?;
        let v = take(vl)?;
        if prev.is_some_and(|p| p >= k) {
            return Err(here("leaf keys out of order".into()));
        }
        prev = Some(k);
        if !visit(k, v)? {
            return Ok(false);
        }
    }
    if pos != payload_len {
        return Err(here(format!("{} payload bytes after the last entry", payload_len - pos)));
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(entries: &[(&[u8], &[u8])]) -> Vec<u8> {
        page::encode_leaf(7, 1, entries.iter().copied())
    }

    fn collect(buf: &[u8], leaves: Leaves) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut got = Vec::new();
        visit_leaf(buf, Span { start: 7, pages: (buf.len() / PAGE_SIZE) as u32 }, leaves, &mut |k, v| {
            got.push((k.to_vec(), v.to_vec()));
            Ok(true)
        })?;
        Ok(got)
    }

    #[test]
    fn a_leaf_read_in_place_is_what_decode_reads() {
        let big = vec![9u8; 5000];
        let buf = leaf(&[(b"a", b"1"), (b"b", &big), (b"c", b"")]);
        let span = Span { start: 7, pages: 2 };
        let DiskNode::Leaf(want) = page::decode(&buf, span, 100).unwrap() else { panic!("a leaf") };
        assert_eq!(collect(&buf, Leaves::Verified).unwrap(), want);
        assert_eq!(collect(&buf, Leaves::Lengths).unwrap(), want);
    }

    #[test]
    fn a_damaged_leaf_is_refused_and_the_checksum_only_when_verified() {
        let buf = leaf(&[(b"k1", b"v1"), (b"k2", b"v2")]);
        // a flipped value byte: only the checksum sees it
        let mut bad = buf.clone();
        bad[HEADER + 8 + 2] ^= 1;
        assert!(matches!(collect(&bad, Leaves::Verified), Err(Error::Corrupt { .. })));
        assert!(collect(&bad, Leaves::Lengths).is_ok());
        // a length running past the payload, the wrong page, keys out of order: always
        let mut long = buf.clone();
        long[HEADER + 4] = 200;
        let mut elsewhere = buf.clone();
        elsewhere[4] = 8;
        let unordered = leaf(&[(b"k2", b"v2"), (b"k1", b"v1")]);
        for b in [&long, &elsewhere, &unordered] {
            for mode in [Leaves::Verified, Leaves::Lengths] {
                assert!(matches!(collect(b, mode), Err(Error::Corrupt { .. })), "{mode:?}");
            }
        }
    }
}
