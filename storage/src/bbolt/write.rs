//! Writing a fresh bbolt file from sorted buckets, in memory: a test fixture for the
//! reader (nested and inline buckets, which the streaming writer, `stream.rs`, does not
//! write: etcd's schema has none). Files cairn produces come from `stream.rs` only.
//!
//! The file is built in memory, bottom-up: a bucket's nested buckets are written before
//! it (its leaf values carry their root pages), each bucket's leaves are packed in key
//! order as full as a page allows (a single element larger than a page gets overflow
//! pages), then branch levels over them until one root page is left. A bucket without
//! nested buckets whose leaf fits in a quarter page is stored inline in its parent's
//! value, as bbolt does (empty buckets too). Then the freelist page (empty: the file has
//! no free pages) and two identical meta pages (txid 0 and 1) with their checksums.
//!
//! Layout of the result: pages 0 and 1 meta, then the data pages in the order written,
//! the freelist page last; the file ends at the high-water mark.

use super::layout::{
    encode_node, node_size, BucketHeader, Elem, Meta, PageHeader, BRANCH_PAGE, BUCKET_LEAF_FLAG, FREELIST_PAGE, LEAF_PAGE,
    META_PAGE, MIN_KEYS_PER_PAGE, PAGE_HEADER_SIZE,
};
use super::{BboltError, BucketData, Item, MAX_KEY_SIZE, MAX_VALUE_SIZE};

/// The file being built.
struct Builder {
    page_size: usize,
    buf: Vec<u8>,
}

impl Builder {
    fn next_pgid(&self) -> u64 {
        (self.buf.len() / self.page_size) as u64
    }

    /// Writes one node on as many pages as it needs; returns its page id.
    fn write_node(&mut self, flags: u16, elems: &[Elem<'_>]) -> u64 {
        let pages = node_size(elems).div_ceil(self.page_size).max(1);
        let id = self.next_pgid();
        let start = self.buf.len();
        self.buf.resize(start + pages * self.page_size, 0);
        encode_node(&mut self.buf[start..], id, flags, (pages - 1) as u32, elems);
        id
    }

    /// Writes `elems` as a level of nodes of at most a page each; a bigger node gets
    /// overflow pages. A branch node takes at least two elements (bbolt's
    /// `minKeysPerPage`), so every branch level is smaller than the one below even when
    /// keys are longer than a page; a leaf over a page holds one element, so a node's
    /// offsets stay within u32 (one value is at most [`MAX_VALUE_SIZE`]). Returns each
    /// node's first key and page.
    fn write_level<'k>(&mut self, flags: u16, elems: &[Elem<'k>]) -> Vec<(&'k [u8], u64)> {
        let min_keys = if flags == BRANCH_PAGE { MIN_KEYS_PER_PAGE } else { 1 };
        let mut out = Vec::new();
        let mut start = 0;
        let mut size = PAGE_HEADER_SIZE;
        for (i, e) in elems.iter().enumerate() {
            if i >= start + min_keys && size + e.size() > self.page_size {
                out.push((elems[start].key, self.write_node(flags, &elems[start..i])));
                start = i;
                size = PAGE_HEADER_SIZE;
            }
            size += e.size();
        }
        out.push((elems.get(start).map_or(&[][..], |e| e.key), self.write_node(flags, &elems[start..])));
        out
    }

    /// Writes a bucket's tree (nested buckets first); returns its root page.
    fn write_tree(&mut self, elems: &[Elem<'_>]) -> u64 {
        let mut level = self.write_level(LEAF_PAGE, elems);
        while level.len() > 1 {
            let branch: Vec<Elem<'_>> = level.iter().map(|&(key, child)| Elem { flags: 0, key, value: &[], child }).collect();
            level = self.write_level(BRANCH_PAGE, &branch);
        }
        level[0].1
    }

    /// Writes `b` and returns its bucket value (header, plus the page when inline).
    fn write_bucket(&mut self, b: &BucketData) -> Result<Vec<u8>, BboltError> {
        let mut values = Vec::with_capacity(b.items.len());
        for (k, item) in &b.items {
            if k.is_empty() || k.len() > MAX_KEY_SIZE {
                return Err(BboltError::KeySize(k.len()));
            }
            match item {
                Item::Value(v) if v.len() > MAX_VALUE_SIZE => return Err(BboltError::ValueSize(v.len())),
                Item::Value(_) => values.push(None),
                Item::Bucket(nested) => values.push(Some(self.write_bucket(nested)?)),
            }
        }
        let elems: Vec<Elem<'_>> = b
            .items
            .iter()
            .zip(&values)
            .map(|((k, item), nested)| match (item, nested) {
                (_, Some(header)) => Elem { flags: BUCKET_LEAF_FLAG, key: k, value: header, child: 0 },
                (Item::Value(v), None) => Elem { flags: 0, key: k, value: v, child: 0 },
                (Item::Bucket(_), None) => Elem { flags: BUCKET_LEAF_FLAG, key: k, value: &[], child: 0 },
            })
            .collect();
        let mut out = Vec::new();
        let inline = values.iter().all(Option::is_none) && node_size(&elems) <= self.page_size / 4;
        if inline {
            BucketHeader { root: 0, sequence: b.sequence }.encode(&mut out);
            let at = out.len();
            out.resize(at + node_size(&elems), 0);
            encode_node(&mut out[at..], 0, LEAF_PAGE, 0, &elems);
        } else {
            let root = self.write_tree(&elems);
            BucketHeader { root, sequence: b.sequence }.encode(&mut out);
        }
        Ok(out)
    }
}

/// A fresh bbolt file with `page_size`-byte pages whose root bucket is `root` (its
/// items must all be buckets, as bbolt allows no values at the top level).
pub fn write_file(root: &BucketData, page_size: usize) -> Result<Vec<u8>, BboltError> {
    if !page_size.is_power_of_two() || !(1024..=1 << 20).contains(&page_size) {
        return Err(BboltError::PageSize(page_size));
    }
    if root.items.values().any(|i| matches!(i, Item::Value(_))) {
        return Err(BboltError::ValueAtTopLevel);
    }
    let mut b = Builder { page_size, buf: vec![0; 2 * page_size] };
    // the root bucket is never inline: the meta points at a page
    let mut nested = Vec::with_capacity(root.items.len());
    for (k, item) in &root.items {
        if let Item::Bucket(child) = item {
            if k.is_empty() || k.len() > MAX_KEY_SIZE {
                return Err(BboltError::KeySize(k.len()));
            }
            nested.push((k.as_slice(), b.write_bucket(child)?));
        }
    }
    let elems: Vec<Elem<'_>> = nested.iter().map(|(k, v)| Elem { flags: BUCKET_LEAF_FLAG, key: k, value: v, child: 0 }).collect();
    let root_page = b.write_tree(&elems);
    let freelist = b.write_node(FREELIST_PAGE, &[]);
    let pgid = b.next_pgid();
    for txid in 0..2u64 {
        let at = txid as usize * page_size;
        PageHeader { id: txid, flags: META_PAGE, count: 0, overflow: 0 }.encode(&mut b.buf[at..]);
        let meta = Meta { page_size: page_size as u32, flags: 0, root: BucketHeader { root: root_page, sequence: root.sequence }, freelist, pgid, txid };
        b.buf[at + PAGE_HEADER_SIZE..at + PAGE_HEADER_SIZE + super::layout::META_SIZE].copy_from_slice(&meta.encode());
    }
    Ok(b.buf)
}
