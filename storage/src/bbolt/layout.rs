//! bbolt's on-disk layouts, byte by byte, with decoders that never panic and encoders.
//! All integers are little-endian (bbolt writes its structs in the host's order, and
//! etcd's files come from little-endian machines: amd64, arm64).
//!
//! # Page header (16 bytes, at the start of every page)
//! ```text
//! [0..8)    id        u64   the page's own number (0 inside an inline bucket)
//! [8..10)   flags     u16   0x01 branch, 0x02 leaf, 0x04 meta, 0x10 freelist
//! [10..12)  count     u16   elements (freelist: ids; 0xFFFF = the real count is the
//!                           first u64 after the header)
//! [12..16)  overflow  u32   further pages this one spans (a node bigger than a page)
//! ```
//!
//! # Branch page: `count` elements of 16 bytes, then the keys
//! ```text
//! [0..4)    pos    u32   offset of the key from this element's own first byte
//! [4..8)    ksize  u32
//! [8..16)   pgid   u64   the child page; its first key is this element's key
//! ```
//!
//! # Leaf page: `count` elements of 16 bytes, then keys and values
//! ```text
//! [0..4)    flags  u32   0x01: the value is a bucket (a nested bucket's header)
//! [4..8)    pos    u32   offset of the key from this element's own first byte
//! [8..12)   ksize  u32
//! [12..16)  vsize  u32   the value follows the key
//! ```
//!
//! # Bucket value (a leaf value whose element has flag 0x01)
//! ```text
//! [0..8)    root      u64   the bucket's root page; 0 = an inline bucket:
//! [8..16)   sequence  u64   (NextSequence's counter)
//! [16..)    inline buckets only: a whole leaf page (header with id 0, elements, data)
//! ```
//!
//! # Meta page (pages 0 and 1; after the page header)
//! ```text
//! [0..4)    magic     u32   0xED0CDAED
//! [4..8)    version   u32   2
//! [8..12)   pageSize  u32
//! [12..16)  flags     u32   0
//! [16..32)  root      bucket header of the root bucket (its values are the top-level
//!                           buckets)
//! [32..40)  freelist  u64   the freelist's page (u64::MAX: not persisted)
//! [40..48)  pgid      u64   the high-water mark: pages in use, the file holds ≥ this many
//! [48..56)  txid      u64   the transaction that wrote it; the newer valid meta wins
//! [56..64)  checksum  u64   FNV-1a 64 of bytes [0..56)
//! ```
//!
//! # Freelist page: `count` (or the u64 after the header, see above) free page ids, u64
//! each, sorted ascending.

use super::BboltError;

pub(crate) const PAGE_HEADER_SIZE: usize = 16;
pub(crate) const ELEMENT_SIZE: usize = 16;
pub(crate) const BUCKET_HEADER_SIZE: usize = 16;
pub(crate) const META_SIZE: usize = 64;

pub(crate) const BRANCH_PAGE: u16 = 0x01;
pub(crate) const LEAF_PAGE: u16 = 0x02;
pub(crate) const META_PAGE: u16 = 0x04;
pub(crate) const FREELIST_PAGE: u16 = 0x10;

/// A leaf element whose value is a nested bucket.
pub(crate) const BUCKET_LEAF_FLAG: u32 = 0x01;

pub(crate) const MAGIC: u32 = 0xED0C_DAED;
pub(crate) const VERSION: u32 = 2;
/// The freelist field of a meta whose freelist is not persisted.
pub(crate) const NO_FREELIST: u64 = u64::MAX;

/// FNV-1a, 64 bits (bbolt's meta checksum).
pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

pub(crate) fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at.checked_add(2)?)?.try_into().ok()?))
}

pub(crate) fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

pub(crate) fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at.checked_add(8)?)?.try_into().ok()?))
}

/// A page header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PageHeader {
    pub id: u64,
    pub flags: u16,
    pub count: u16,
    pub overflow: u32,
}

impl PageHeader {
    /// Decodes the header at the start of `b`; `None` when `b` is shorter than one.
    pub fn decode(b: &[u8]) -> Option<PageHeader> {
        Some(PageHeader { id: u64_at(b, 0)?, flags: u16_at(b, 8)?, count: u16_at(b, 10)?, overflow: u32_at(b, 12)? })
    }

    pub fn encode(&self, out: &mut [u8]) {
        out[0..8].copy_from_slice(&self.id.to_le_bytes());
        out[8..10].copy_from_slice(&self.flags.to_le_bytes());
        out[10..12].copy_from_slice(&self.count.to_le_bytes());
        out[12..16].copy_from_slice(&self.overflow.to_le_bytes());
    }
}

/// A bucket header: its root page (0 when inline) and sequence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct BucketHeader {
    pub root: u64,
    pub sequence: u64,
}

impl BucketHeader {
    pub fn decode(b: &[u8]) -> Option<BucketHeader> {
        Some(BucketHeader { root: u64_at(b, 0)?, sequence: u64_at(b, 8)? })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.root.to_le_bytes());
        out.extend_from_slice(&self.sequence.to_le_bytes());
    }
}

/// A meta page's contents (after the page header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Meta {
    pub page_size: u32,
    pub flags: u32,
    pub root: BucketHeader,
    pub freelist: u64,
    pub pgid: u64,
    pub txid: u64,
}

impl Meta {
    /// Decodes and validates the meta at the start of `b` (magic, version, checksum).
    pub fn decode(b: &[u8]) -> Result<Meta, BboltError> {
        let bad = |what: &'static str| BboltError::BadMeta(what);
        let b = b.get(..META_SIZE).ok_or(bad("file too short"))?;
        let magic = u32_at(b, 0).ok_or(bad("file too short"))?;
        if magic != MAGIC {
            return Err(bad("invalid magic (not a bbolt file)"));
        }
        if u32_at(b, 4) != Some(VERSION) {
            return Err(bad("version mismatch (not version 2)"));
        }
        if u64_at(b, 56) != Some(fnv1a64(&b[..56])) {
            return Err(bad("checksum error"));
        }
        let field = |at| u64_at(b, at).ok_or(bad("file too short"));
        Ok(Meta {
            page_size: u32_at(b, 8).ok_or(bad("file too short"))?,
            flags: u32_at(b, 12).ok_or(bad("file too short"))?,
            root: BucketHeader { root: field(16)?, sequence: field(24)? },
            freelist: field(32)?,
            pgid: field(40)?,
            txid: field(48)?,
        })
    }

    /// The 64 bytes of this meta, checksum included.
    pub fn encode(&self) -> [u8; META_SIZE] {
        let mut b = [0u8; META_SIZE];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&VERSION.to_le_bytes());
        b[8..12].copy_from_slice(&self.page_size.to_le_bytes());
        b[12..16].copy_from_slice(&self.flags.to_le_bytes());
        b[16..24].copy_from_slice(&self.root.root.to_le_bytes());
        b[24..32].copy_from_slice(&self.root.sequence.to_le_bytes());
        b[32..40].copy_from_slice(&self.freelist.to_le_bytes());
        b[40..48].copy_from_slice(&self.pgid.to_le_bytes());
        b[48..56].copy_from_slice(&self.txid.to_le_bytes());
        let sum = fnv1a64(&b[..56]);
        b[56..64].copy_from_slice(&sum.to_le_bytes());
        b
    }
}

/// Fewest elements in a branch node unless the level has fewer (bbolt's `minKeysPerPage`).
pub(crate) const MIN_KEYS_PER_PAGE: usize = 2;

/// One element to encode: a leaf's (flags, key, value) or a branch's (key, child).
pub(crate) struct Elem<'a> {
    pub flags: u32,
    pub key: &'a [u8],
    pub value: &'a [u8],
    pub child: u64,
}

impl Elem<'_> {
    pub fn size(&self) -> usize {
        ELEMENT_SIZE + self.key.len() + self.value.len()
    }
}

/// Encodes a node into `out` (exactly `node_size(elems)` bytes or more, zeroed).
pub(crate) fn encode_node(out: &mut [u8], id: u64, flags: u16, overflow: u32, elems: &[Elem<'_>]) {
    PageHeader { id, flags, count: elems.len() as u16, overflow }.encode(out);
    let mut data = PAGE_HEADER_SIZE + elems.len() * ELEMENT_SIZE;
    for (i, e) in elems.iter().enumerate() {
        let at = PAGE_HEADER_SIZE + i * ELEMENT_SIZE;
        let pos = (data - at) as u32;
        if flags == BRANCH_PAGE {
            out[at..at + 4].copy_from_slice(&pos.to_le_bytes());
            out[at + 4..at + 8].copy_from_slice(&(e.key.len() as u32).to_le_bytes());
            out[at + 8..at + 16].copy_from_slice(&e.child.to_le_bytes());
        } else {
            out[at..at + 4].copy_from_slice(&e.flags.to_le_bytes());
            out[at + 4..at + 8].copy_from_slice(&pos.to_le_bytes());
            out[at + 8..at + 12].copy_from_slice(&(e.key.len() as u32).to_le_bytes());
            out[at + 12..at + 16].copy_from_slice(&(e.value.len() as u32).to_le_bytes());
        }
        out[data..data + e.key.len()].copy_from_slice(e.key);
        data += e.key.len();
        out[data..data + e.value.len()].copy_from_slice(e.value);
        data += e.value.len();
    }
}

pub(crate) fn node_size(elems: &[Elem<'_>]) -> usize {
    PAGE_HEADER_SIZE + elems.iter().map(Elem::size).sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_matches_the_reference_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn meta_round_trips_and_any_flip_is_refused() {
        let m = Meta { page_size: 4096, flags: 0, root: BucketHeader { root: 3, sequence: 0 }, freelist: 2, pgid: 4, txid: 7 };
        let b = m.encode();
        assert_eq!(Meta::decode(&b).unwrap(), m);
        for i in 0..META_SIZE {
            let mut bad = b;
            bad[i] ^= 1;
            assert!(Meta::decode(&bad).is_err(), "flip at {i}");
        }
        assert!(Meta::decode(&b[..40]).is_err());
    }
}
