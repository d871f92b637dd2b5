//! The bulk rebuild of the key index against the reference it replaced: every key-bucket
//! entry applied in revision order, one tree descent each (`by_descent`, the rules of the
//! rebuild before the bulk build). Random histories (puts, deletes, leases, compactions)
//! are applied to a store, which is then restarted: the bulk-built index must equal the
//! reference exactly (every key's generations, revisions, versions), with the same leases
//! and revision, and the restarted store must answer every readable revision as the
//! store that applied the history did.

use std::collections::BTreeMap;
use std::sync::Arc;

use cairn_proto::cairnpb::{internal_request::Request, InternalRequest};
use cairn_proto::etcdserverpb::{
    CompactionRequest, DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest, PutRequest, RangeRequest, RangeResponse,
};
use cairn_proto::mvccpb::KeyValue;
use proptest::prelude::*;

use super::*;
use crate::{Store, StoreConfig};

/// What the reference derives from the key bucket: the index, the newest revision, and
/// each leased key's lease in key order.
type Reference = (TreeIndex, i64, Vec<(Vec<u8>, i64)>);

/// The key-bucket rebuild before the bulk build (the reference): one batch, every entry
/// in revision order, a tree descent each; leases from a map sorted at the end.
fn by_descent(c: &dyn Contents) -> Result<Reference> {
    let mut entries = Vec::new();
    c.scan_all(Bucket::Key, &mut |k, v| {
        entries.push((k.to_vec(), v.to_vec()));
        Ok(true)
    })?;
    let index = TreeIndex::new();
    let mut max_rev = 0;
    let mut key_lease: BTreeMap<Vec<u8>, i64> = BTreeMap::new();
    index.batch(|b| {
        for (k, v) in entries {
            let (rev, tombstone) = Revision::from_bytes(&k)?;
            max_rev = max_rev.max(rev.main);
            let kv = KeyValueHead::decode(v.as_slice()).map_err(|e| Error::corrupt("key bucket value", e))?;
            if tombstone {
                b.tombstone(&kv.key, rev)?;
                key_lease.remove(&kv.key);
                continue;
            }
            b.put_or_restore(&kv.key, rev, Revision::new(kv.create_revision, 0), kv.version)?;
            if kv.lease != 0 {
                key_lease.insert(kv.key, kv.lease);
            } else {
                key_lease.remove(&kv.key);
            }
        }
        Ok(())
    })?;
    Ok((index, max_rev, key_lease.into_iter().collect()))
}

/// Contents given entry by entry (the key bucket only).
struct Entries(BTreeMap<Vec<u8>, Vec<u8>>);

impl Contents for Entries {
    fn get(&self, _: Bucket, _: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(None)
    }

    fn scan_all(&self, bucket: Bucket, visit: &mut ScanFn<'_>) -> Result<()> {
        if bucket == Bucket::Key {
            for (k, v) in &self.0 {
                if !visit(k, v)? {
                    break;
                }
            }
        }
        Ok(())
    }
}

fn stored(key: &str, rev: Revision, tombstone: bool, created: i64, version: i64) -> (Vec<u8>, Vec<u8>) {
    let kv = KeyValue { key: bytes::Bytes::copy_from_slice(key.as_bytes()), create_revision: created, mod_revision: rev.main, version, value: bytes::Bytes::from_static(b"v"), lease: 0 };
    (rev.to_bytes(tombstone), kv.encode_to_vec())
}

fn assert_same_as_reference(c: &(dyn Contents + Sync)) -> TreeIndex {
    let bulk = rebuild_keys(c).unwrap();
    let (reference, max_rev, leases) = by_descent(c).unwrap();
    bulk.index.check();
    assert_eq!(bulk.index.dump(), reference.dump(), "key histories");
    assert_eq!(bulk.max_rev, max_rev);
    assert_eq!(bulk.leases.iter().map(|(k, l)| (k.to_vec(), *l)).collect::<Vec<_>>(), leases, "leases");
    bulk.index
}

#[test]
fn many_keys_in_runs_match_the_reference() {
    // more records than several sorted runs, keys written out of key order, several
    // revisions per key, tombstones and recreations
    let mut e = BTreeMap::new();
    let mut rev = 1;
    for round in 0..4 {
        for i in 0..700 {
            let k = format!("k{:04}", (i * 389) % 700);
            rev += 1;
            let (key, value) = if round == 2 && i % 3 == 0 {
                stored(&k, Revision::new(rev, 0), true, 0, 0)
            } else {
                stored(&k, Revision::new(rev, 0), false, rev, 1)
            };
            e.insert(key, value);
        }
    }
    let index = assert_same_as_reference(&Entries(e));
    assert_eq!(index.len(), 700);
}

#[test]
fn bad_histories_are_corrupt_as_before() {
    // a tombstone of a key never put; a put and a tombstone at one revision
    let cases = [
        vec![stored("a", Revision::new(2, 0), true, 0, 0)],
        vec![stored("a", Revision::new(2, 0), false, 2, 1), stored("a", Revision::new(2, 0), true, 0, 0)],
    ];
    for case in cases {
        let c = Entries(case.into_iter().collect());
        assert!(matches!(rebuild_keys(&c), Err(Error::Corrupt { .. })));
        assert!(matches!(by_descent(&c), Err(Error::Corrupt { .. })));
    }
    let empty = rebuild_keys(&Entries(BTreeMap::new())).unwrap();
    assert!(empty.index.is_empty());
    assert_eq!(empty.max_rev, 0);
}

#[derive(Clone, Debug)]
enum Op {
    Put(u8, u8),
    Delete(u8),
    DeleteAll,
    Grant(u8),
    Revoke(u8),
    /// A compaction this far below the head revision.
    Compact(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..8u8, 0..4u8).prop_map(|(k, l)| Op::Put(k, l)),
        2 => (0..8u8).prop_map(Op::Delete),
        1 => Just(Op::DeleteAll),
        1 => (1..4u8).prop_map(Op::Grant),
        1 => (1..4u8).prop_map(Op::Revoke),
        1 => (0..6u8).prop_map(Op::Compact),
    ]
}

struct Live {
    store: Arc<Store>,
    index: u64,
}

impl Live {
    fn apply(&mut self, r: Request) {
        self.index += 1;
        // refused requests (a lease not granted, a compaction below the floor) are part of
        // a random history too
        let _refused_or_not = self.store.apply(self.index, &InternalRequest { id: self.index, request: Some(r), auth: None });
        self.store.commit().unwrap();
    }

    fn run(&mut self, op: &Op, rt: &tokio::runtime::Runtime) {
        let key = |k: u8| format!("key{k}").into_bytes();
        match *op {
            Op::Put(k, lease) => {
                self.apply(Request::Put(PutRequest { key: key(k), value: vec![k; 3], lease: lease.into(), ..Default::default() }))
            }
            Op::Delete(k) => self.apply(Request::DeleteRange(DeleteRangeRequest { key: key(k), ..Default::default() })),
            Op::DeleteAll => self.apply(Request::DeleteRange(DeleteRangeRequest { key: vec![0], range_end: vec![0], ..Default::default() })),
            Op::Grant(id) => self.apply(Request::LeaseGrant(LeaseGrantRequest { id: id.into(), ttl: 100 })),
            Op::Revoke(id) => self.apply(Request::LeaseRevoke(LeaseRevokeRequest { id: id.into() })),
            Op::Compact(back) => {
                let at = self.store.revision() - i64::from(back);
                if at > self.store.compact_revision() && at > 0 {
                    self.apply(Request::Compaction(CompactionRequest { revision: at, physical: true }));
                    rt.block_on(self.store.wait_compacted(at)).unwrap();
                }
            }
        }
    }

    /// Every key at every readable revision, with counts.
    fn answers(&self) -> Vec<(i64, RangeResponse)> {
        let floor = self.store.compact_revision().max(1);
        (floor..=self.store.revision())
            .map(|rev| {
                let r = self.store.range(&RangeRequest { key: vec![0], range_end: vec![0], revision: rev, ..Default::default() });
                (rev, r.unwrap())
            })
            .collect()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]
    #[test]
    fn restart_rebuilds_what_the_history_built(ops in proptest::collection::vec(op(), 1..80)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut live = Live { store: Store::open(StoreConfig::new(dir.path())).unwrap(), index: 0 };
        for op in &ops {
            live.run(op, &rt);
        }
        let before = live.answers();
        let leases_before: Vec<_> = (0..8u8).map(|k| live.store.lessor.read().lease_of(format!("key{k}").as_bytes())).collect();
        let (rev, compacted) = (live.store.revision(), live.store.compact_revision());
        drop(live);
        let store = Store::reopen_when_free(dir.path());
        prop_assert_eq!(store.revision(), rev);
        prop_assert_eq!(store.compact_revision(), compacted);
        let again = Live { store, index: 0 };
        prop_assert_eq!(&again.answers(), &before, "every readable revision");
        let leases_after: Vec<_> = (0..8u8).map(|k| again.store.lessor.read().lease_of(format!("key{k}").as_bytes())).collect();
        prop_assert_eq!(leases_after, leases_before);
        assert_same_as_reference(&BackendContents(again.store.backend.as_ref()));
    }
}
