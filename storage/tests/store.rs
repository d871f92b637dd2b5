//! Store-level tests: etcd semantics scenario by scenario, restart, and a randomized
//! comparison against a reference model (every revision's full state as a BTreeMap).

use std::collections::BTreeMap;
use std::sync::Arc;

use cairn_proto::cairnpb::{internal_request::Request, InternalRequest};
use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::{
    request_op, response_op, CompactionRequest, Compare, DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest,
    PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use cairn_proto::mvccpb::KeyValue;
use cairn_storage::{ApplyResponse, Error, Store, StoreConfig};
use proptest::prelude::*;

struct Harness {
    dir: tempfile::TempDir,
    store: Arc<Store>,
    index: u64,
}

impl Harness {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        Harness { dir, store, index: 0 }
    }

    fn reopen(&mut self) {
        let dir = self.dir.path().to_path_buf();
        // the compactor thread holds the backend until it sees the store go away
        let store = std::mem::replace(&mut self.store, Store::open(StoreConfig::new(tempfile::tempdir().unwrap().path())).unwrap());
        drop(store);
        let mut tries = 0;
        self.store = loop {
            match Store::open(StoreConfig::new(&dir)) {
                Ok(s) => break s,
                Err(e) if tries < 200 => {
                    tries += 1;
                    let _ = e;
                    std::thread::yield_now();
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(e) => panic!("reopen: {e}"),
            }
        };
        self.index = self.store.applied_index();
    }

    fn apply(&mut self, r: Request) -> Result<ApplyResponse, Error> {
        self.index += 1;
        let out = self.store.apply(self.index, &InternalRequest { id: self.index, request: Some(r), auth: None });
        self.store.commit().unwrap();
        out
    }

    fn put(&mut self, k: &str, v: &str) -> i64 {
        match self.apply(Request::Put(PutRequest { key: k.into(), value: v.into(), ..Default::default() })).unwrap() {
            ApplyResponse::Put(p) => p.header.unwrap().revision,
            other => panic!("{other:?}"),
        }
    }

    fn get(&self, k: &str, rev: i64) -> Result<Vec<KeyValue>, Error> {
        self.store.range(&RangeRequest { key: k.into(), revision: rev, ..Default::default() }).map(|r| r.kvs)
    }
}

fn put_op(k: &str, v: &str) -> RequestOp {
    RequestOp { request: Some(request_op::Request::RequestPut(PutRequest { key: k.into(), value: v.into(), ..Default::default() })) }
}

fn range_op(k: &str) -> RequestOp {
    RequestOp { request: Some(request_op::Request::RequestRange(RangeRequest { key: k.into(), ..Default::default() })) }
}

fn cmp(k: &str, target: CompareTarget, result: CompareResult, u: TargetUnion) -> Compare {
    Compare { key: k.into(), target: target as i32, result: result as i32, target_union: Some(u), range_end: vec![] }
}

#[test]
fn versions_and_revisions_follow_etcd() {
    let mut h = Harness::new();
    assert_eq!(h.store.revision(), 1, "an empty store is at revision 1, as etcd");
    assert_eq!(h.put("a", "1"), 2);
    assert_eq!(h.put("a", "2"), 3);
    assert_eq!(h.put("b", "1"), 4);
    let a = &h.get("a", 0).unwrap()[0];
    assert_eq!((a.create_revision, a.mod_revision, a.version), (2, 3, 2));
    // a delete bumps the revision; recreating starts a new generation at version 1
    let r = h.apply(Request::DeleteRange(DeleteRangeRequest { key: "a".into(), prev_kv: true, ..Default::default() }));
    let ApplyResponse::DeleteRange(d) = r.unwrap() else { panic!() };
    assert_eq!((d.deleted, d.header.unwrap().revision, d.prev_kvs[0].value.to_vec()), (1, 5, b"2".to_vec()));
    // deleting nothing does not bump the revision
    let ApplyResponse::DeleteRange(d) =
        h.apply(Request::DeleteRange(DeleteRangeRequest { key: "zz".into(), ..Default::default() })).unwrap()
    else {
        panic!()
    };
    assert_eq!((d.deleted, d.header.unwrap().revision), (0, 5));
    assert_eq!(h.put("a", "3"), 6);
    let a = &h.get("a", 0).unwrap()[0];
    assert_eq!((a.create_revision, a.mod_revision, a.version), (6, 6, 1));
    assert_eq!(h.get("a", 4).unwrap()[0].value, &b"2"[..]);
    assert!(h.get("a", 5).unwrap().is_empty());
    assert!(matches!(h.get("a", 7), Err(Error::FutureRev)));
}

#[test]
fn range_options_count_and_more() {
    let mut h = Harness::new();
    for (i, k) in ["a", "b", "c", "d"].iter().enumerate() {
        h.put(k, &format!("{}", 4 - i));
    }
    let req = RangeRequest { key: "a".into(), range_end: "d".into(), limit: 2, ..Default::default() };
    let r = h.store.range(&req).unwrap();
    assert_eq!((r.kvs.len(), r.more, r.count), (2, true, 3));
    // sort by value ascending, limited: sorting happens before truncation
    let req = RangeRequest { key: "a".into(), range_end: "\0".into(), limit: 1, sort_target: 4, sort_order: 1, ..Default::default() };
    let r = h.store.range(&req).unwrap();
    assert_eq!((r.kvs[0].key.to_vec(), r.more, r.count), (b"d".to_vec(), true, 4));
    let req = RangeRequest { key: "a".into(), range_end: "\0".into(), count_only: true, ..Default::default() };
    let r = h.store.range(&req).unwrap();
    assert_eq!((r.kvs.len(), r.count), (0, 4));
    let req = RangeRequest { key: "a".into(), range_end: "\0".into(), min_mod_revision: 4, keys_only: true, ..Default::default() };
    let r = h.store.range(&req).unwrap();
    assert_eq!(r.kvs.iter().map(|k| k.key.clone()).collect::<Vec<_>>(), vec![b"c".to_vec(), b"d".to_vec()]);
    assert!(r.kvs.iter().all(|k| k.value.is_empty()));
    assert_eq!(r.count, 4, "count ignores filters, as in etcd");
}

/// The limit pushed into the index (unsorted or key-ascending, unfiltered) and the paths
/// that fetch everything answer alike: `count` is the span's total, `more` says whether
/// keys were left out, keys-only answers carry everything but the value.
#[test]
fn limits_pushed_down_keep_etcd_answers() {
    let mut h = Harness::new();
    let lease = match h.apply(Request::LeaseGrant(LeaseGrantRequest { id: 7, ttl: 100 })).unwrap() {
        ApplyResponse::LeaseGrant(g) => g.id,
        other => panic!("{other:?}"),
    };
    for (i, k) in ["a", "b", "c", "d", "e"].iter().enumerate() {
        let put = PutRequest { key: k.as_bytes().to_vec(), value: format!("{}", 5 - i).into_bytes(), lease, ..Default::default() };
        h.apply(Request::Put(put)).unwrap();
    }
    h.apply(Request::DeleteRange(DeleteRangeRequest { key: "c".into(), ..Default::default() })).unwrap();
    let page = |limit: i64, sort_order: i32, sort_target: i32, keys_only: bool| {
        let req = RangeRequest { key: "a".into(), range_end: "\0".into(), limit, sort_order, sort_target, keys_only, ..Default::default() };
        let r = h.store.range(&req).unwrap();
        let keys: Vec<String> = r.kvs.iter().map(|k| String::from_utf8(k.key.to_vec()).unwrap()).collect();
        (keys, r.more, r.count)
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(page(2, 0, 0, false), (s(&["a", "b"]), true, 4));
    assert_eq!(page(4, 0, 0, false), (s(&["a", "b", "d", "e"]), false, 4), "limit = total: no more");
    assert_eq!(page(9, 0, 0, false), (s(&["a", "b", "d", "e"]), false, 4));
    assert_eq!(page(2, 1, 0, false), (s(&["a", "b"]), true, 4), "ascending by key is the index order");
    assert_eq!(page(2, 2, 0, false), (s(&["e", "d"]), true, 4), "descending: sorted before the cut");
    // keys only, sorted by value: the values order the answer and are then dropped
    assert_eq!(page(3, 1, 4, true), (s(&["e", "d", "b"]), true, 4));
    let req = RangeRequest { key: "a".into(), range_end: "\0".into(), limit: 2, keys_only: true, ..Default::default() };
    let r = h.store.range(&req).unwrap();
    let first = &r.kvs[0];
    // etcd's quirk kept: no sort order with a non-key target sorts only the first
    // limit + 1 keys in key order ("e", written first, is not among them)
    let mut q = Harness::new();
    for k in ["e", "a", "b", "d"] {
        q.put(k, "v");
    }
    let req = RangeRequest { key: "a".into(), range_end: "\0".into(), limit: 2, sort_target: 3, ..Default::default() };
    let r = q.store.range(&req).unwrap();
    let keys: Vec<&[u8]> = r.kvs.iter().map(|k| k.key.as_ref()).collect();
    assert_eq!((keys, r.more, r.count), (vec![b"a".as_slice(), b"b"], true, 4));
    // with an order, every key is sorted before the cut
    let r = q.store.range(&RangeRequest { sort_order: 1, ..req }).unwrap();
    let keys: Vec<&[u8]> = r.kvs.iter().map(|k| k.key.as_ref()).collect();
    assert_eq!((keys, r.more, r.count), (vec![b"e".as_slice(), b"a"], true, 4));
    // a lease grant makes no revision: "a" was written at 2
    assert_eq!((first.value.len(), first.lease, first.version, first.create_revision), (0, lease, 1, 2));
    assert_eq!(first.mod_revision, 2);
}

/// Readers run while a compaction removes every older revision: a read at the current
/// revision always sees every key with its newest value; a read at the older revision sees
/// the complete old answer or is refused as compacted, never a partial one.
#[test]
fn reads_during_compaction_are_whole_or_refused() {
    use std::sync::atomic::{AtomicBool, Ordering};
    const N: usize = 20_000;
    let h = Harness::new();
    let store = h.store.clone();
    let mut index = 0u64;
    for round in 0..2 {
        for i in 0..N {
            index += 1;
            let put = PutRequest { key: format!("/k/{i:06}").into_bytes(), value: vec![round as u8; 8], ..Default::default() };
            store.apply(index, &InternalRequest { id: index, request: Some(Request::Put(put)), auth: None }).unwrap();
        }
        store.commit().unwrap();
    }
    let (old, new) = (1 + N as i64, 1 + 2 * N as i64);
    assert_eq!(store.revision(), new);
    let done = Arc::new(AtomicBool::new(false));
    let start = Arc::new(std::sync::Barrier::new(3));
    let readers: Vec<_> = (0..2)
        .map(|t| {
            let (store, done, start) = (store.clone(), done.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                let (mut whole, mut refused) = (0u64, 0u64);
                loop {
                    let finished = done.load(Ordering::Acquire);
                    let span = RangeRequest { key: "/k/".into(), range_end: "/k0".into(), ..Default::default() };
                    let cur = store.range(&RangeRequest { count_only: true, ..span.clone() }).unwrap();
                    assert_eq!(cur.count, N as i64);
                    let page = store.range(&RangeRequest { limit: 50, ..span.clone() }).unwrap();
                    assert!(page.kvs.iter().all(|kv| kv.value[..] == [1u8; 8] && kv.version == 2));
                    let at_old = if t == 0 { RangeRequest { count_only: true, revision: old, ..span } } else { RangeRequest { limit: 50, revision: old, ..span } };
                    match store.range(&at_old) {
                        Ok(r) => {
                            assert_eq!(r.count, N as i64, "a read at the old revision is whole");
                            assert!(r.kvs.iter().all(|kv| kv.value[..] == [0u8; 8] && kv.version == 1));
                            whole += 1;
                        }
                        Err(Error::Compacted) => refused += 1,
                        Err(e) => panic!("{e}"),
                    }
                    if finished {
                        return (whole, refused);
                    }
                }
            })
        })
        .collect();
    start.wait();
    index += 1;
    store
        .apply(index, &InternalRequest { id: index, request: Some(Request::Compaction(CompactionRequest { revision: new, physical: false })), auth: None })
        .unwrap();
    store.commit().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(store.wait_compacted(new)).unwrap();
    done.store(true, Ordering::Release);
    for r in readers {
        let (_, refused) = r.join().unwrap();
        assert!(refused >= 1, "the last read, after the compaction, is refused");
    }
    drop(h);
}

#[test]
fn txn_compares_nesting_and_reads_own_writes() {
    let mut h = Harness::new();
    h.put("k", "v1");
    let t = TxnRequest {
        compare: vec![cmp("k", CompareTarget::Version, CompareResult::Equal, TargetUnion::Version(1))],
        success: vec![
            put_op("k", "v2"),
            range_op("k"),
            RequestOp {
                request: Some(request_op::Request::RequestTxn(TxnRequest {
                    compare: vec![cmp("k", CompareTarget::Value, CompareResult::Equal, TargetUnion::Value("v2".into()))],
                    success: vec![put_op("x", "then")],
                    failure: vec![put_op("x", "else")],
                })),
            },
        ],
        failure: vec![],
    };
    let ApplyResponse::Txn(r) = h.apply(Request::Txn(t)).unwrap() else { panic!() };
    assert!(r.succeeded);
    assert_eq!(r.header.unwrap().revision, 3);
    let Some(response_op::Response::ResponseRange(rr)) = &r.responses[1].response else { panic!() };
    assert_eq!(rr.kvs[0].value, &b"v2"[..], "a range after a put in one txn sees the put");
    // nested compares see the state before the txn: v1, so the else branch ran
    assert_eq!(h.get("x", 0).unwrap()[0].value, &b"else"[..]);
    assert_eq!(h.get("x", 0).unwrap()[0].mod_revision, 3, "all writes of a txn share one revision");
    // a failing value compare on a missing key, and a lease compare against 0
    let t = TxnRequest {
        compare: vec![cmp("missing", CompareTarget::Value, CompareResult::NotEqual, TargetUnion::Value("z".into()))],
        success: vec![put_op("s", "1")],
        failure: vec![range_op("k")],
    };
    let ApplyResponse::Txn(r) = h.apply(Request::Txn(t)).unwrap() else { panic!() };
    assert!(!r.succeeded);
    assert_eq!(r.header.unwrap().revision, 3, "read-only branch does not bump the revision");
    let t = TxnRequest {
        compare: vec![cmp("missing", CompareTarget::Lease, CompareResult::Equal, TargetUnion::Lease(0))],
        success: vec![],
        failure: vec![],
    };
    let ApplyResponse::Txn(r) = h.apply(Request::Txn(t)).unwrap() else { panic!() };
    assert!(r.succeeded);
}

#[test]
fn txn_request_errors_change_nothing() {
    let mut h = Harness::new();
    h.put("k", "v");
    let t = TxnRequest {
        compare: vec![],
        success: vec![
            put_op("a", "1"),
            RequestOp { request: Some(request_op::Request::RequestPut(PutRequest { key: "b".into(), lease: 99, ..Default::default() })) },
        ],
        failure: vec![],
    };
    assert!(matches!(h.apply(Request::Txn(t)), Err(Error::LeaseNotFound)));
    assert!(h.get("a", 0).unwrap().is_empty(), "nothing of a failed txn is applied");
    assert_eq!(h.store.revision(), 2);
    let t = TxnRequest {
        success: vec![RequestOp { request: Some(request_op::Request::RequestRange(RangeRequest { key: "k".into(), revision: 9, ..Default::default() })) }],
        ..Default::default()
    };
    assert!(matches!(h.apply(Request::Txn(t)), Err(Error::FutureRev)));
    let p = PutRequest { key: "nope".into(), ignore_value: true, ..Default::default() };
    assert!(matches!(h.apply(Request::Put(p)), Err(Error::KeyNotFound)));
    let p = PutRequest { key: "k".into(), ignore_value: true, prev_kv: true, ..Default::default() };
    let ApplyResponse::Put(r) = h.apply(Request::Put(p)).unwrap() else { panic!() };
    assert_eq!(r.prev_kv.unwrap().value, &b"v"[..]);
    assert_eq!(h.get("k", 0).unwrap()[0].value, &b"v"[..], "ignore_value keeps the value");
}

#[test]
fn compaction_and_restart() {
    let mut h = Harness::new();
    for i in 0..10 {
        h.put("k", &format!("v{i}"));
        h.put(&format!("other{i}"), "x");
    }
    h.apply(Request::DeleteRange(DeleteRangeRequest { key: "other".into(), range_end: "otherz".into(), ..Default::default() })).unwrap();
    let rev = h.store.revision();
    let ApplyResponse::Compaction(c) = h.apply(Request::Compaction(CompactionRequest { revision: 10, physical: true })).unwrap() else {
        panic!()
    };
    assert_eq!(c.header.unwrap().revision, rev);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(h.store.wait_compacted(10)).unwrap();
    assert!(matches!(h.get("k", 9), Err(Error::Compacted)));
    assert_eq!(h.get("k", 10).unwrap()[0].value, &b"v4"[..], "the newest value at the floor stays readable");
    assert!(matches!(h.apply(Request::Compaction(CompactionRequest { revision: 10, physical: false })), Err(Error::Compacted)));
    assert!(matches!(h.apply(Request::Compaction(CompactionRequest { revision: rev + 1, physical: false })), Err(Error::FutureRev)));
    h.put("k", "after");
    let before: Vec<_> = (10..=h.store.revision()).map(|r| h.store.range(&RangeRequest { key: "\0".into(), range_end: "\0".into(), revision: r, ..Default::default() }).unwrap()).collect();
    h.reopen();
    assert_eq!(h.store.compact_revision(), 10);
    assert_eq!(h.store.revision(), rev + 1);
    let after: Vec<_> = (10..=h.store.revision()).map(|r| h.store.range(&RangeRequest { key: "\0".into(), range_end: "\0".into(), revision: r, ..Default::default() }).unwrap()).collect();
    assert_eq!(before, after, "every readable revision answers the same after a restart");
    // versions continue across restart after compaction
    h.put("k", "again");
    assert_eq!(h.get("k", 0).unwrap()[0].version, 12);
    // already-applied indexes are skipped after restart
    let idx = h.store.applied_index();
    assert_eq!(h.store.apply(idx, &InternalRequest { id: 1, request: Some(Request::Put(put_req("k", "dup"))), auth: None }).unwrap(), ApplyResponse::Skipped);
}

fn put_req(k: &str, v: &str) -> PutRequest {
    PutRequest { key: k.into(), value: v.into(), ..Default::default() }
}

#[test]
fn leases_attach_and_revoke_in_one_revision() {
    let mut h = Harness::new();
    let ApplyResponse::LeaseGrant(g) = h.apply(Request::LeaseGrant(LeaseGrantRequest { ttl: 1, id: 7 })).unwrap() else { panic!() };
    assert_eq!((g.id, g.ttl), (7, 2), "minimum TTL");
    assert!(matches!(h.apply(Request::LeaseGrant(LeaseGrantRequest { ttl: 10, id: 7 })), Err(Error::LeaseExists)));
    h.apply(Request::Put(PutRequest { key: "a".into(), lease: 7, ..Default::default() })).unwrap();
    h.apply(Request::Put(PutRequest { key: "b".into(), lease: 7, ..Default::default() })).unwrap();
    h.apply(Request::Put(PutRequest { key: "c".into(), lease: 7, ..Default::default() })).unwrap();
    h.put("c", "detached");
    h.reopen();
    assert_eq!(h.store.lease(7).unwrap().keys.len(), 2, "attachments rebuilt from the data");
    let ApplyResponse::LeaseRevoke(r) = h.apply(Request::LeaseRevoke(LeaseRevokeRequest { id: 7 })).unwrap() else { panic!() };
    assert_eq!(r.header.unwrap().revision, 6);
    assert!(h.get("a", 0).unwrap().is_empty() && h.get("b", 0).unwrap().is_empty());
    assert_eq!(h.get("c", 0).unwrap()[0].value, &b"detached"[..]);
    assert!(matches!(h.apply(Request::LeaseRevoke(LeaseRevokeRequest { id: 7 })), Err(Error::LeaseNotFound)));
    h.reopen();
    assert!(h.store.lease(7).is_none());
}

/// Reference model: the full key → value state at every revision.
#[derive(Default)]
struct Model {
    states: Vec<BTreeMap<String, (String, i64, i64, i64)>>, // value, create, mod, version
}

impl Model {
    fn current(&self) -> BTreeMap<String, (String, i64, i64, i64)> {
        self.states.last().cloned().unwrap_or_default()
    }
}

#[derive(Clone, Debug)]
enum Op {
    Put(u8, u8),
    Delete(u8, u8),
    Compact(u8),
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..8, any::<u8>()).prop_map(|(k, v)| Op::Put(k, v)),
        2 => (0u8..8, 0u8..3).prop_map(|(k, w)| Op::Delete(k, w)),
        1 => any::<u8>().prop_map(Op::Compact),
        1 => Just(Op::Restart),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn matches_reference_model(ops in proptest::collection::vec(op(), 1..60)) {
        let mut h = Harness::new();
        let mut m = Model::default();
        m.states.push(BTreeMap::new()); // revision 0
        m.states.push(BTreeMap::new()); // revision 1: an empty store
        let mut compacted = -1i64;
        for op in ops {
            match op {
                Op::Put(k, v) => {
                    let key = format!("k{k}");
                    h.put(&key, &v.to_string());
                    let mut s = m.current();
                    let rev = m.states.len() as i64;
                    let (create, ver) = s.get(&key).map(|e| (e.1, e.3)).unwrap_or((rev, 0));
                    s.insert(key, (v.to_string(), create, rev, ver + 1));
                    m.states.push(s);
                }
                Op::Delete(k, w) => {
                    let (a, b) = (format!("k{k}"), format!("k{}", k + w));
                    let end = if w == 0 { String::new() } else { b.clone() };
                    h.apply(Request::DeleteRange(DeleteRangeRequest { key: a.clone().into(), range_end: end.into(), ..Default::default() })).unwrap();
                    let mut s = m.current();
                    let doomed: Vec<String> = s.keys().filter(|x| if w == 0 { **x == a } else { **x >= a && **x < b }).cloned().collect();
                    if !doomed.is_empty() {
                        for d in doomed { s.remove(&d); }
                        m.states.push(s);
                    }
                }
                Op::Compact(c) => {
                    let cur = m.states.len() as i64 - 1;
                    let rev = (c as i64) % (cur + 1);
                    let r = h.apply(Request::Compaction(CompactionRequest { revision: rev, physical: false }));
                    if rev <= compacted { prop_assert!(matches!(r, Err(Error::Compacted))); } else { prop_assert!(r.is_ok()); compacted = rev; }
                }
                Op::Restart => h.reopen(),
            }
            // every readable revision matches the model
            let cur = m.states.len() as i64 - 1;
            prop_assert_eq!(h.store.revision(), cur);
            for rev in compacted.max(1)..=cur {
                let got = h.store.range(&RangeRequest { key: "k".into(), range_end: "l".into(), revision: rev, ..Default::default() }).unwrap();
                let got: BTreeMap<String, (String, i64, i64, i64)> = got.kvs.into_iter().map(|kv| (String::from_utf8(kv.key.to_vec()).unwrap(), (String::from_utf8(kv.value.to_vec()).unwrap(), kv.create_revision, kv.mod_revision, kv.version))).collect();
                prop_assert_eq!(&got, &m.states[rev as usize], "revision {}", rev);
            }
        }
    }
}

/// Status's sizes are real on the page store, and Defragment gives the space of deleted
/// and compacted revisions back (issue 9's goal: within 1.5× of the live data).
#[test]
fn defragment_after_delete_and_compaction_shrinks_the_file() {
    let mut h = Harness::new();
    let value = "v".repeat(1024);
    // 100 ops per txn: one commit (two fdatasyncs) per hundred changes
    let txn = |ops: Vec<RequestOp>| Request::Txn(TxnRequest { success: ops, ..Default::default() });
    for chunk in 0..60 {
        h.apply(txn((chunk * 100..(chunk + 1) * 100).map(|i| put_op(&format!("/k/{i:05}"), &value)).collect())).unwrap();
    }
    let del = |i: i32| RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(DeleteRangeRequest { key: format!("/k/{i:05}").into(), ..Default::default() })),
    };
    for chunk in 0..60 {
        h.apply(txn((chunk * 100..(chunk + 1) * 100).filter(|i| i % 10 != 0).map(del).collect())).unwrap();
    }
    let rev = h.store.revision();
    h.apply(Request::Compaction(CompactionRequest { revision: rev, physical: true })).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(h.store.wait_compacted(rev)).unwrap();
    let (size, in_use) = (h.store.db_size(), h.store.db_size_in_use());
    assert!(in_use < size / 3, "in use {in_use} of {size} after deleting 90% and compacting");
    h.store.defragment().unwrap();
    let after = h.store.db_size();
    let live = 600 * (1024 + 60);
    assert!(after < size / 3, "defragment: {size} → {after}");
    assert!(after <= live * 3 / 2 + (1 << 20), "{after} bytes on disk for ~{live} live");
    let all = RangeRequest { key: "/k/".into(), range_end: "/k0".into(), ..Default::default() };
    let want = h.store.range(&all).unwrap().kvs;
    assert_eq!(want.len(), 600);
    h.put("/after", "defrag");
    h.reopen();
    assert_eq!(h.store.range(&all).unwrap().kvs, want);
    assert_eq!(h.get("/after", 0).unwrap()[0].value, &b"defrag"[..]);
}

/// A read-only Txn of random compares (every target and result) and ranges (at random
/// revisions, nested Txns), over keys k0..k4.
fn read_only_txn(depth: u32) -> BoxedStrategy<TxnRequest> {
    let key = (0..5u8).prop_map(|k| format!("k{k}"));
    let compare = (key.clone(), 0..5i32, 0..4i32, 0..6i64, proptest::bool::ANY).prop_map(|(k, target, result, n, span)| {
        let u = match target {
            0 => TargetUnion::Version(n),
            1 => TargetUnion::CreateRevision(n),
            2 => TargetUnion::ModRevision(n),
            3 => TargetUnion::Value(format!("v{n}").into_bytes()),
            _ => TargetUnion::Lease(0),
        };
        let range_end = if span { b"k9".to_vec() } else { Vec::new() };
        Compare { key: k.into_bytes(), target, result, target_union: Some(u), range_end }
    });
    let range = (key, -1..12i64, proptest::bool::ANY).prop_map(|(k, rev, span)| {
        let range_end = if span { b"k9".to_vec() } else { Vec::new() };
        let r = RangeRequest { key: k.into_bytes(), range_end, revision: rev.max(0), serializable: rev < 0, ..Default::default() };
        RequestOp { request: Some(request_op::Request::RequestRange(r)) }
    });
    let op: BoxedStrategy<RequestOp> = if depth == 0 {
        range.boxed()
    } else {
        prop_oneof![3 => range, 1 => read_only_txn(depth - 1).prop_map(|t| RequestOp { request: Some(request_op::Request::RequestTxn(t)) })].boxed()
    };
    (proptest::collection::vec(compare, 0..3), proptest::collection::vec(op.clone(), 0..3), proptest::collection::vec(op, 0..3))
        .prop_map(|(compare, success, failure)| TxnRequest { compare, success, failure })
        .boxed()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A read-only Txn answered as a read gives what the write path gives (responses,
    /// branch taken, revision, and errors for compacted or future revisions).
    #[test]
    fn read_only_txns_read_as_the_write_path_answers(
        writes in proptest::collection::vec((0..5u8, 0..6u8, proptest::bool::ANY), 1..12),
        compact in 0..4i64,
        txns in proptest::collection::vec(read_only_txn(2), 1..8),
    ) {
        let mut h = Harness::new();
        for (k, v, delete) in writes {
            let key = format!("k{k}");
            if delete {
                h.apply(Request::DeleteRange(DeleteRangeRequest { key: key.into(), ..Default::default() })).unwrap();
            } else {
                h.put(&key, &format!("v{v}"));
            }
        }
        if compact > 1 && compact <= h.store.revision() {
            h.apply(Request::Compaction(CompactionRequest { revision: compact, physical: true })).unwrap();
        }
        for t in txns {
            prop_assert!(cairn_storage::txn::is_read_only(&t));
            let read = h.store.read_txn(&t);
            let written = h.apply(Request::Txn(t.clone()));
            match (read, written) {
                (Ok(r), Ok(ApplyResponse::Txn(w))) => prop_assert_eq!(r, w),
                (Err(r), Err(w)) => prop_assert_eq!(format!("{r:?}"), format!("{w:?}")),
                (r, w) => prop_assert!(false, "read {:?} but the write path {:?} for {:?}", r, w, t),
            }
        }
    }
}
