//! What `etcdctl snapshot status` reports about an etcd db file (etcd 3.4's
//! `snapshot.Status`), computed the same way so cairn's `snapshot status` prints the same
//! line: a CRC-32C (Castagnoli) over every top-level bucket's name followed by each of its
//! keys and values, in the file's order; the main revision of the last key of the `key`
//! bucket; the number of entries in all buckets; and the file's size as bbolt counts it
//! (the meta page's high-water mark times the page size).

use super::EtcdDbError;
use crate::bbolt::{BboltFile, Entry};
use crate::crc32::crc32c_update;

/// etcd's snapshot status of a db.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DbStatus {
    /// CRC-32C of the buckets' names, keys and values.
    pub hash: u32,
    /// The main revision of the `key` bucket's last key (0 when it is empty).
    pub revision: i64,
    /// Entries in every bucket.
    pub total_key: u64,
    /// Pages in use times the page size.
    pub total_size: u64,
}

/// The status of a bare db (a snapshot file without its SHA-256 trailer); a file that
/// does not read is refused as the import refuses it.
pub fn db_status(db: Vec<u8>) -> Result<DbStatus, EtcdDbError> {
    file_status(&BboltFile::from_bytes(db)?)
}

/// The status of an open db (pages read as the walk reaches them, see
/// [`BboltFile::from_file`]).
pub fn file_status(file: &BboltFile) -> Result<DbStatus, EtcdDbError> {
    let total_size = file.page_count() * file.page_size() as u64;
    let mut buckets = Vec::new();
    file.root().for_each(&mut |name, e| {
        if let Entry::Bucket(b) = e {
            buckets.push((name.to_vec(), b));
        }
        Ok(true)
    })?;
    let mut s = DbStatus { hash: 0, revision: 0, total_key: 0, total_size };
    for (name, b) in buckets {
        s.hash = crc32c_update(s.hash, &name);
        let is_key = name == super::BUCKET_KEY;
        b.for_each(&mut |k, e| {
            s.hash = crc32c_update(s.hash, k);
            if let Entry::Value(v) = e {
                s.hash = crc32c_update(s.hash, v);
            }
            if is_key && k.len() >= 8 {
                s.revision = i64::from_be_bytes(k[..8].try_into().unwrap_or_default());
            }
            s.total_key += 1;
            Ok(true)
        })?;
    }
    Ok(s)
}
