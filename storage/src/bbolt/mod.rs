//! etcd's storage file format: bbolt (the B+tree file in etcd's `member/snap/db`, and
//! what `etcdctl snapshot save` writes). Reading files (from memory, or from disk a page
//! at a time) and writing them page by page, so a cairn store can be imported from etcd
//! and exported to it (`etcd_db/` puts etcd's schema on top).
//!
//! * `layout.rs`: pages, elements, bucket headers and the meta page, byte by byte;
//! * `read.rs`: [`BboltFile`]: validates both meta pages (magic, version, FNV-1a
//!   checksum), keeps the newest, and walks a bucket's branch, leaf and overflow pages
//!   (from memory, or read from the file as the walk reaches them) in key order, inline
//!   and nested buckets included, returning [`BboltError`] (never panicking) on anything
//!   corrupt;
//! * `stream.rs`: [`plan`] and [`write_planned`]: a fresh file of flat buckets written
//!   page by page in two passes over the data (never whole in memory), which bbolt
//!   opens and writes on (etcd's restore and server do); the layout is documented there;
//! * `write.rs` (tests only): a whole file from [`BucketData`], nested buckets included,
//!   to test the reader on shapes the stream does not write.
//!
//! No crate was taken for this: the one Rust port of bbolt is a whole memory-mapped
//! engine with `unsafe` page casts and tool dependencies (clap, rand...) in its library;
//! a one-shot reader and writer of the documented format is a few hundred lines.

mod layout;
mod read;
mod stream;
#[cfg(test)]
mod stream_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod write;

use std::collections::BTreeMap;

pub use read::{BboltFile, BucketRef, Entry, VisitFn};
pub use stream::{plan, write_planned, BucketSink, Plan};
#[cfg(test)]
pub(crate) use write::write_file;

/// bbolt's largest key (`MaxKeySize`).
pub const MAX_KEY_SIZE: usize = 32768;
/// bbolt's largest value (`MaxValueSize`).
pub const MAX_VALUE_SIZE: usize = (1 << 31) - 2;

/// True when `data` starts like a bbolt file: its first meta page's magic, right after
/// the page header (a cheap sniff; opening it with [`BboltFile`] verifies).
pub fn is_bbolt(data: &[u8]) -> bool {
    let at = layout::PAGE_HEADER_SIZE;
    data.get(at..at + 4).is_some_and(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) == layout::MAGIC)
}

/// The page size etcd's files use (the OS page size on amd64 and arm64 Linux).
pub const DEFAULT_PAGE_SIZE: usize = 4096;

/// Why a file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum BboltError {
    /// Reading the file failed.
    #[error("bbolt: {0}")]
    Io(#[from] std::io::Error),
    /// A meta page is invalid (the first one found; see [`BboltError::NoValidMeta`]).
    #[error("bbolt: meta page: {0}")]
    BadMeta(&'static str),
    /// Neither meta page is valid.
    #[error("bbolt: no valid meta page (page 0: {meta0}; page 1: {meta1})")]
    NoValidMeta {
        /// Why page 0 is refused.
        meta0: &'static str,
        /// Why page 1 is refused.
        meta1: &'static str,
    },
    /// The file is shorter than its meta's high-water mark.
    #[error("bbolt: file truncated: {len} bytes, the meta page needs {needed}")]
    Truncated {
        /// The file's length.
        len: u64,
        /// The bytes the meta's page count needs.
        needed: u64,
    },
    /// A page id points outside the pages in use.
    #[error("bbolt: page {pgid} is outside the pages in use (2..{high_water})")]
    PageOutOfRange {
        /// The page.
        pgid: u64,
        /// The meta's high-water mark.
        high_water: u64,
    },
    /// A page does not decode.
    #[error("bbolt: page {pgid}: {detail}")]
    BadPage {
        /// The page (0 for an inline bucket).
        pgid: u64,
        /// What is wrong.
        detail: &'static str,
    },
    /// A page is referenced twice (a cycle or a shared subtree).
    #[error("bbolt: page {pgid} is referenced twice")]
    PageReferencedTwice {
        /// The page.
        pgid: u64,
    },
    /// Pages or buckets nest deeper than any real file.
    #[error("bbolt: page {pgid}: tree too deep")]
    TooDeep {
        /// The page where the limit was reached.
        pgid: u64,
    },
    /// Keys of a bucket are not strictly ascending.
    #[error("bbolt: page {pgid}: keys out of order")]
    KeysOutOfOrder {
        /// The page (0 for an inline bucket).
        pgid: u64,
    },
    /// Writing: a page size bbolt does not use.
    #[error("bbolt: page size {0} is not a power of two between 1 KiB and 1 MiB")]
    PageSize(usize),
    /// Writing: a key that is empty or longer than [`MAX_KEY_SIZE`].
    #[error("bbolt: key of {0} bytes (1 to 32768 allowed)")]
    KeySize(usize),
    /// Writing: a value longer than [`MAX_VALUE_SIZE`].
    #[error("bbolt: value of {0} bytes is too large")]
    ValueSize(usize),
    /// Streaming: the data fed do not follow the rules ([`BucketSink`]) or changed between
    /// the two passes.
    #[error("bbolt: writing a stream: {0}")]
    Stream(&'static str),
    /// Writing: a plain value in the root bucket (bbolt allows only buckets there).
    #[error("bbolt: the top level holds only buckets")]
    ValueAtTopLevel,
}

/// One item of a bucket: a value or a nested bucket (they share the key space).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// A plain value.
    Value(Vec<u8>),
    /// A nested bucket.
    Bucket(BucketData),
}

/// A bucket's whole contents in memory, in key order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BucketData {
    /// Values and nested buckets by key.
    pub items: BTreeMap<Vec<u8>, Item>,
    /// bbolt's `NextSequence` counter.
    pub sequence: u64,
}

impl BucketData {
    /// Sets `key` to `value` (replacing a value or bucket of that key).
    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.items.insert(key.into(), Item::Value(value.into()));
    }

    /// The nested bucket `name`, created empty if missing (replacing a value of that key).
    pub fn bucket_mut(&mut self, name: &[u8]) -> &mut BucketData {
        let item = self.items.entry(name.to_vec()).or_insert_with(|| Item::Bucket(BucketData::default()));
        if let Item::Value(_) = item {
            *item = Item::Bucket(BucketData::default());
        }
        match item {
            Item::Bucket(b) => b,
            Item::Value(_) => unreachable!("replaced by a bucket just above"),
        }
    }

    /// The nested bucket `name`, if there is one.
    pub fn bucket(&self, name: &[u8]) -> Option<&BucketData> {
        match self.items.get(name) {
            Some(Item::Bucket(b)) => Some(b),
            _ => None,
        }
    }

    /// The plain values, in key order.
    pub fn values(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.items.iter().filter_map(|(k, i)| match i {
            Item::Value(v) => Some((k.as_slice(), v.as_slice())),
            Item::Bucket(_) => None,
        })
    }
}
