//! The meta pages: pages 0 and 1 of the file, written alternately (commit `txid` writes
//! page `txid % 2`), so the previous commit's meta is intact while the next one is
//! written. Opening reads both and takes the valid one with the higher txid whose commit
//! is whole: a commit is made durable by one fdatasync covering its nodes and its meta,
//! so a meta may survive a power loss that some of its nodes did not; the meta therefore
//! records how many nodes the commit wrote and the sum of their checksums, and open
//! checks them (`db.rs`).
//!
//! Layout of the first [`META_LEN`] bytes of a meta page (the rest is zero), integers
//! little-endian:
//! ```text
//! off  len  field
//!   0    4  crc32 (IEEE) of bytes 4 .. 84
//!   4    8  magic b"CAIRNPGS"
//!  12    4  format version (1)
//!  16    4  page size (4096)
//!  20    8  txid of the commit
//!  28    8  high-water mark: page ids below it are in use or free; none above was written
//!  36   36  three bucket roots (Key, Meta, Lease), 12 bytes each:
//!             u64 first page (0: the bucket is empty)  u32 pages
//!  72    4  nodes the commit wrote
//!  76    8  wrapping sum of those nodes' checksums (their header bytes 0..4, as u32)
//! ```

use super::page::{PageId, Span, PAGE_SIZE};
use crate::crc32::Crc32;
use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"CAIRNPGS";
const VERSION: u32 = 1;
/// Bytes of a meta record.
pub(crate) const META_LEN: usize = 84;
/// Pages reserved for the two metas.
pub(crate) const META_PAGES: PageId = 2;

/// One commit's meta record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Meta {
    /// The commit's transaction id (0 for a fresh file).
    pub txid: u64,
    /// Pages below this id are in use or free.
    pub hwm: PageId,
    /// Each bucket's root node, `None` when the bucket is empty.
    pub roots: [Option<Span>; 3],
    /// Nodes the commit wrote.
    pub nodes: u32,
    /// Wrapping sum of their checksums.
    pub crc_sum: u64,
}

impl Meta {
    /// The meta of a fresh file.
    pub(crate) fn empty() -> Meta {
        Meta { txid: 0, hwm: META_PAGES, roots: [None; 3], nodes: 0, crc_sum: 0 }
    }

    /// The page this meta is written to.
    pub(crate) fn slot(&self) -> PageId {
        self.txid % 2
    }

    /// The page bytes.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut buf = vec![0u8; PAGE_SIZE];
        buf[4..12].copy_from_slice(MAGIC);
        buf[12..16].copy_from_slice(&VERSION.to_le_bytes());
        buf[16..20].copy_from_slice(&(PAGE_SIZE as u32).to_le_bytes());
        buf[20..28].copy_from_slice(&self.txid.to_le_bytes());
        buf[28..36].copy_from_slice(&self.hwm.to_le_bytes());
        for (i, root) in self.roots.iter().enumerate() {
            let at = 36 + 12 * i;
            let (start, pages) = root.map_or((0, 0), |s| (s.start, s.pages));
            buf[at..at + 8].copy_from_slice(&start.to_le_bytes());
            buf[at + 8..at + 12].copy_from_slice(&pages.to_le_bytes());
        }
        buf[72..76].copy_from_slice(&self.nodes.to_le_bytes());
        buf[76..84].copy_from_slice(&self.crc_sum.to_le_bytes());
        let crc = Crc32::of(&buf[4..META_LEN]);
        buf[0..4].copy_from_slice(&crc.to_le_bytes());
        buf
    }

    /// Decodes a meta page; [`Error::Corrupt`] when it is not a valid one (torn, never
    /// written, or from another format). Never panics.
    pub(crate) fn decode(buf: &[u8]) -> Result<Meta> {
        let bad = |d: &str| Err(Error::corrupt("meta page", d));
        if buf.len() < META_LEN {
            return bad("short");
        }
        let u32_at = |at: usize| u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
        let u64_at = |at: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&buf[at..at + 8]);
            u64::from_le_bytes(a)
        };
        if u32_at(0) != Crc32::of(&buf[4..META_LEN]) {
            return bad("checksum mismatch");
        }
        if &buf[4..12] != MAGIC {
            return bad("bad magic");
        }
        if u32_at(12) != VERSION {
            return bad("unknown version");
        }
        if u32_at(16) != PAGE_SIZE as u32 {
            return bad("unsupported page size");
        }
        let txid = u64_at(20);
        let hwm = u64_at(28);
        if hwm < META_PAGES {
            return bad("high-water mark below the meta pages");
        }
        let mut roots = [None; 3];
        for (i, root) in roots.iter_mut().enumerate() {
            let at = 36 + 12 * i;
            let (start, pages) = (u64_at(at), u32_at(at + 8));
            if start == 0 && pages == 0 {
                continue;
            }
            if start < META_PAGES || pages == 0 || start.checked_add(pages as u64).is_none_or(|e| e > hwm) {
                return bad("root outside the file");
            }
            *root = Some(Span { start, pages });
        }
        Ok(Meta { txid, hwm, roots, nodes: u32_at(72), crc_sum: u64_at(76) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip_and_flips() {
        let roots = [Some(Span { start: 3, pages: 1 }), None, Some(Span { start: 9, pages: 2 })];
        let m = Meta { txid: 7, hwm: 40, roots, nodes: 3, crc_sum: 1 << 33 };
        let buf = m.encode();
        assert_eq!(Meta::decode(&buf).unwrap(), m);
        assert_eq!(m.slot(), 1);
        for i in 0..META_LEN {
            let mut bad = buf.clone();
            bad[i] ^= 1;
            assert!(matches!(Meta::decode(&bad), Err(Error::Corrupt { .. })), "flip at {i}");
        }
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Meta::decode(&bytes);
        }
    }
}
