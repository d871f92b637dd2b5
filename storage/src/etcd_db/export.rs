//! A cairn snapshot stream → an etcd file (module docs in `mod.rs` give both schemas).
//!
//! The key bucket is copied as is; leases are re-encoded as `leasepb.Lease`; the meta
//! bucket gets `consistent_index` (cairn's applied index: etcd's `snapshot restore`
//! replaces it anyway) and the compaction revisions; every other bucket etcd 3.4 creates
//! is written empty, so etcd finds the layout it expects. The result is written on 4 KiB
//! pages ([`crate::bbolt::DEFAULT_PAGE_SIZE`]), as etcd's own files are.

use cairn_proto::cairnpb::LeaseRecord;
use cairn_proto::leasepb;
use prost::Message;

use super::{append_sha256, EtcdDbError, BUCKET_KEY, BUCKET_LEASE, BUCKET_META, OTHER_BUCKETS};
use super::{META_CONSISTENT_INDEX, META_FINISHED_COMPACT, META_SCHEDULED_COMPACT};
use crate::backend::Bucket;
use crate::bbolt::{write_file, BucketData, DEFAULT_PAGE_SIZE};
use crate::revision::Revision;
use crate::snapshot::read_snapshot;
use crate::store::{META_APPLIED_INDEX, META_COMPACT_FINISHED, META_COMPACT_SCHEDULED};

fn meta_i64(key: &[u8], v: &[u8]) -> Result<i64, EtcdDbError> {
    let b: [u8; 8] = v.try_into().map_err(|_| {
        EtcdDbError::BadStream(crate::Error::corrupt("meta", format!("{}: {} bytes", String::from_utf8_lossy(key), v.len())))
    })?;
    Ok(i64::from_be_bytes(b))
}

/// The etcd db (a bare bbolt file, as etcd's `member/snap/db`) holding the state of the
/// cairn snapshot stream `stream` ([`crate::Store::snapshot_bytes`]).
pub fn export_db(stream: &[u8]) -> Result<Vec<u8>, EtcdDbError> {
    let mut input = stream;
    let entries = read_snapshot(&mut input).map_err(EtcdDbError::BadStream)?;
    let mut root = BucketData::default();
    for name in OTHER_BUCKETS.iter().chain([&BUCKET_KEY, &BUCKET_META, &BUCKET_LEASE]) {
        root.bucket_mut(name);
    }
    let (mut applied, mut scheduled, mut finished) = (0, -1, -1);
    for (bucket, k, v) in entries {
        match bucket {
            Bucket::Key => {
                Revision::from_bytes(&k).map_err(EtcdDbError::BadStream)?;
                root.bucket_mut(BUCKET_KEY).put(k, v);
            }
            Bucket::Lease => {
                let r = LeaseRecord::decode(v.as_slice())?;
                let l = leasepb::Lease { id: r.id, ttl: r.ttl, remaining_ttl: r.remaining_ttl };
                root.bucket_mut(BUCKET_LEASE).put(k, l.encode_to_vec());
            }
            Bucket::Meta if k == META_APPLIED_INDEX => applied = meta_i64(&k, &v)?,
            Bucket::Meta if k == META_COMPACT_SCHEDULED => scheduled = meta_i64(&k, &v)?,
            Bucket::Meta if k == META_COMPACT_FINISHED => finished = meta_i64(&k, &v)?,
            // the store revision (derived again by etcd) and cairn's member list
            Bucket::Meta => {}
        }
    }
    let meta = root.bucket_mut(BUCKET_META);
    meta.put(META_CONSISTENT_INDEX, (applied as u64).to_be_bytes());
    // a compaction at 0 (or none) removes nothing; etcd records none then
    if scheduled > 0 {
        meta.put(META_SCHEDULED_COMPACT, Revision::new(scheduled, 0).to_bytes(false));
    }
    if finished > 0 {
        meta.put(META_FINISHED_COMPACT, Revision::new(finished, 0).to_bytes(false));
    }
    Ok(write_file(&root, DEFAULT_PAGE_SIZE)?)
}

/// [`export_db`] followed by the db's SHA-256: the snapshot file `etcdctl snapshot
/// save` would have written, which `etcdctl snapshot status` and `restore` accept.
pub fn export_snapshot(stream: &[u8]) -> Result<Vec<u8>, EtcdDbError> {
    Ok(append_sha256(export_db(stream)?))
}
