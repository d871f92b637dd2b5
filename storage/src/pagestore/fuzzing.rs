//! The page store's decoders for the fuzz targets in `storage/fuzz/` (feature `fuzzing`
//! only: nothing else should decode pages from outside the module).
//!
//! Both decoders check a CRC-32 first; a fuzzer flipping bytes would almost never get
//! past it, so [`with_page_crc`] and [`with_meta_crc`] let a target write the checksum its
//! input needs and reach the parsing behind it.

use super::meta::{Meta, META_LEN};
use super::page::{self, Span, HEADER};
use crate::crc32::Crc32;
use crate::error::Result;

/// Decodes `buf` as the node stored at `start` (`pages` long) in a file whose high-water
/// mark is `limit`; `Ok(true)` for a leaf, `Ok(false)` for a branch.
pub fn decode_page(buf: &[u8], start: u64, pages: u32, limit: u64) -> Result<bool> {
    let node = page::decode(buf, Span { start, pages }, limit)?;
    Ok(matches!(node, page::DiskNode::Leaf(_)))
}

/// Decodes `buf` as a meta page; returns its txid.
pub fn decode_meta(buf: &[u8]) -> Result<u64> {
    Meta::decode(buf).map(|m| m.txid)
}

/// Writes into `buf` the checksum its node header asks for (when the header and its
/// declared payload fit).
pub fn with_page_crc(buf: &mut [u8]) {
    if buf.len() < HEADER {
        return;
    }
    let payload = u32::from_le_bytes([buf[32], buf[33], buf[34], buf[35]]) as usize;
    if payload > buf.len() - HEADER {
        return;
    }
    let crc = Crc32::of(&buf[4..HEADER + payload]);
    buf[0..4].copy_from_slice(&crc.to_le_bytes());
}

/// Writes into `buf` the checksum of its meta record (when it is long enough).
pub fn with_meta_crc(buf: &mut [u8]) {
    if buf.len() < META_LEN {
        return;
    }
    let crc = Crc32::of(&buf[4..META_LEN]);
    buf[0..4].copy_from_slice(&crc.to_le_bytes());
}
