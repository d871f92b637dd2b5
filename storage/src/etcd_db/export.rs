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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use cairn_proto::mvccpb::KeyValue;

    use super::super::{import_db, import_snapshot};
    use super::*;
    use crate::snapshot::SnapshotWriter;

    fn kv(key: &str, create: i64, rev: i64, version: i64, value: &str, lease: i64) -> Vec<u8> {
        KeyValue { key: key.into(), create_revision: create, mod_revision: rev, version, value: value.into(), lease }.encode_to_vec()
    }

    /// A cairn stream: a (3 puts, 1 delete) history with a lease, compacted at 2.
    fn cairn_stream() -> Vec<u8> {
        let mut buf = Vec::new();
        let mut w = SnapshotWriter::new(&mut buf).unwrap();
        w.entry(Bucket::Key, &Revision::new(2, 0).to_bytes(false), &kv("a", 2, 2, 1, "1", 0)).unwrap();
        w.entry(Bucket::Key, &Revision::new(3, 0).to_bytes(false), &kv("b", 3, 3, 1, "x", 7)).unwrap();
        w.entry(Bucket::Key, &Revision::new(4, 0).to_bytes(false), &kv("a", 2, 4, 2, "2", 0)).unwrap();
        w.entry(Bucket::Key, &Revision::new(5, 0).to_bytes(true), &kv("a", 0, 0, 0, "", 0)).unwrap();
        w.entry(Bucket::Lease, &7u64.to_be_bytes(), &LeaseRecord { id: 7, ttl: 60, remaining_ttl: 0 }.encode_to_vec()).unwrap();
        w.entry(Bucket::Meta, META_APPLIED_INDEX, &42u64.to_be_bytes()).unwrap();
        w.entry(Bucket::Meta, META_COMPACT_SCHEDULED, &2i64.to_be_bytes()).unwrap();
        w.entry(Bucket::Meta, META_COMPACT_FINISHED, &2i64.to_be_bytes()).unwrap();
        w.entry(Bucket::Meta, crate::store::META_CURRENT_REV, &5i64.to_be_bytes()).unwrap();
        w.finish().unwrap();
        buf
    }

    fn by_bucket(stream: &[u8]) -> BTreeMap<u8, BTreeMap<Vec<u8>, Vec<u8>>> {
        let mut out: BTreeMap<u8, BTreeMap<Vec<u8>, Vec<u8>>> = BTreeMap::new();
        for (b, k, v) in read_snapshot(&mut &stream[..]).unwrap() {
            out.entry(b as u8).or_default().insert(k, v);
        }
        out
    }

    #[test]
    fn export_then_import_gives_the_same_stream_back() {
        let stream = cairn_stream();
        let file = export_snapshot(&stream).unwrap();
        assert_eq!(file.len() % 4096, 32);
        let imported = import_snapshot(&file).unwrap();
        assert!(imported.had_hash);
        assert_eq!(imported.consistent_index, 42);
        assert_eq!(imported.revision, 5);
        assert_eq!(imported.compact_revision, 2);
        assert_eq!((imported.key_entries, imported.leases), (4, 1));
        assert_eq!(imported.term, None);
        let names: Vec<&[u8]> = imported.other_buckets.keys().map(Vec::as_slice).collect();
        assert_eq!(names, OTHER_BUCKETS.to_vec());
        assert_eq!(by_bucket(&imported.snapshot), by_bucket(&stream));
    }

    #[test]
    fn imported_stream_restores_a_store_with_the_history() {
        let file = export_db(&cairn_stream()).unwrap();
        let imported = import_db(file).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = crate::Store::open(crate::StoreConfig::new(dir.path())).unwrap();
        store.restore(9, &imported.snapshot).unwrap();
        let range = |key: &str, rev: i64| {
            let req = cairn_proto::etcdserverpb::RangeRequest { key: key.into(), revision: rev, ..Default::default() };
            store.range(&req)
        };
        let b = range("b", 0).unwrap();
        assert_eq!((b.kvs[0].value.as_slice(), b.kvs[0].lease, b.header.unwrap().revision), (&b"x"[..], 7, 5));
        assert_eq!(range("a", 4).unwrap().kvs[0].version, 2);
        assert!(range("a", 5).unwrap().kvs.is_empty());
        assert!(matches!(range("a", 1), Err(crate::Error::Compacted)));
        let lease = store.lease(7).unwrap();
        assert_eq!((lease.ttl, lease.keys.iter().cloned().collect::<Vec<_>>()), (60, vec![b"b".to_vec()]));
    }

    #[test]
    fn a_bad_lease_or_meta_is_refused() {
        let mut root = BucketData::default();
        root.bucket_mut(BUCKET_KEY);
        root.bucket_mut(BUCKET_META).put(META_CONSISTENT_INDEX, vec![1, 2, 3]);
        let err = import_db(write_file(&root, DEFAULT_PAGE_SIZE).unwrap()).unwrap_err();
        assert!(matches!(err, EtcdDbError::BadMeta { key: "consistent_index", len: 3 }), "{err}");
        root.bucket_mut(BUCKET_META).put(META_CONSISTENT_INDEX, 1u64.to_be_bytes());
        root.bucket_mut(BUCKET_LEASE).put(8u64.to_be_bytes(), leasepb::Lease { id: 9, ttl: 5, remaining_ttl: 0 }.encode_to_vec());
        let err = import_db(write_file(&root, DEFAULT_PAGE_SIZE).unwrap()).unwrap_err();
        assert!(matches!(err, EtcdDbError::LeaseKeyMismatch { id: 9, .. }), "{err}");
        let mut root = BucketData::default();
        root.bucket_mut(BUCKET_META);
        let err = import_db(write_file(&root, DEFAULT_PAGE_SIZE).unwrap()).unwrap_err();
        assert!(matches!(err, EtcdDbError::MissingBucket("key")), "{err}");
    }
}
