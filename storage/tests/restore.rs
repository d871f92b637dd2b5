//! Raft snapshots at the store level: `snapshot_bytes` / `restore`, `note_applied`,
//! `apply_members`. A "member" is a store fed numbered entries, as Raft would feed it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use cairn_proto::cairnpb::{internal_request::Request, InternalRequest};
use cairn_proto::etcdserverpb::{
    CompactionRequest, DeleteRangeRequest, LeaseCheckpoint, LeaseCheckpointRequest, LeaseGrantRequest,
    LeaseRevokeRequest, PutRequest, RangeRequest,
};
use cairn_storage::backend::Bucket;
use cairn_storage::snapshot::{read_snapshot, SnapshotWriter};
use cairn_storage::{ApplyResponse, Error, Store, StoreConfig};

/// What a range shows of one key: key, value, create and mod revisions, version, lease.
type Seen = (Vec<u8>, Vec<u8>, i64, i64, i64, i64);

struct Member {
    dir: tempfile::TempDir,
    store: Arc<Store>,
    index: u64,
}

fn open_retrying(dir: &PathBuf) -> Arc<Store> {
    // the compactor thread of a dropped store lets go of sled's lock file shortly after
    for _ in 0..400 {
        if let Ok(s) = Store::open(StoreConfig::new(dir)) {
            return s;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    Store::open(StoreConfig::new(dir)).expect("reopen")
}

impl Member {
    fn new() -> Member {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        Member { dir, store, index: 0 }
    }

    fn reopen(&mut self) {
        let dir = self.dir.path().to_path_buf();
        let scratch = tempfile::tempdir().unwrap();
        drop(std::mem::replace(&mut self.store, Store::open(StoreConfig::new(scratch.path())).unwrap()));
        self.store = open_retrying(&dir);
        self.index = self.store.applied_index();
    }

    /// Applies the next entry without committing it.
    fn stage(&mut self, r: Request) -> Result<ApplyResponse, Error> {
        self.index += 1;
        self.store.apply(self.index, &InternalRequest { id: self.index, request: Some(r), auth: None })
    }

    fn apply(&mut self, r: Request) -> Result<ApplyResponse, Error> {
        let out = self.stage(r);
        self.store.commit().unwrap();
        out
    }

    fn put(&mut self, k: &str, v: &str, lease: i64) {
        self.apply(Request::Put(PutRequest { key: k.into(), value: v.into(), lease, ..Default::default() })).unwrap();
    }

    fn grant(&mut self, id: i64, ttl: i64) {
        self.apply(Request::LeaseGrant(LeaseGrantRequest { id, ttl })).unwrap();
    }

    fn compact(&mut self, rev: i64) {
        self.apply(Request::Compaction(CompactionRequest { revision: rev, physical: true })).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(self.store.wait_compacted(rev)).unwrap();
    }

    fn restore_from(&mut self, src: &Member) -> (u64, Vec<u8>) {
        let (index, data) = src.store.snapshot_bytes().unwrap();
        self.store.restore(index, &data).unwrap();
        self.index = index;
        (index, data)
    }

    fn all(&self, rev: i64) -> Result<Vec<Seen>, Error> {
        let r = self.store.range(&RangeRequest {
            key: vec![0],
            range_end: vec![0],
            revision: rev,
            ..Default::default()
        })?;
        Ok(r.kvs
            .into_iter()
            .map(|kv| (kv.key.to_vec(), kv.value.to_vec(), kv.create_revision, kv.mod_revision, kv.version, kv.lease))
            .collect())
    }
}

/// Keys, deletes, leases with attachments and a checkpoint, a physical compaction, and
/// history after it.
fn busy_source() -> Member {
    let mut m = Member::new();
    m.grant(7, 100);
    m.grant(8, 200);
    for i in 0..20 {
        m.put(&format!("k{:02}", i % 7), &format!("v{i}"), if i % 3 == 0 { 7 } else { 0 });
    }
    m.put("leased8", "x", 8);
    m.apply(Request::DeleteRange(DeleteRangeRequest { key: "k03".into(), ..Default::default() })).unwrap();
    let mid = m.store.revision();
    m.compact(mid - 5);
    m.apply(Request::LeaseCheckpoint(LeaseCheckpointRequest {
        checkpoints: vec![LeaseCheckpoint { id: 8, remaining_ttl: 150 }],
    }))
    .unwrap();
    m.put("k01", "after", 8);
    m.put("k03", "again", 0);
    m
}

/// Everything a reader can observe, compared member to member.
fn assert_same_state(a: &Member, b: &Member) {
    assert_eq!(a.store.snapshot_bytes().unwrap(), b.store.snapshot_bytes().unwrap(), "snapshot bytes");
    assert_eq!(a.store.applied_index(), b.store.applied_index());
    assert_eq!(a.store.revision(), b.store.revision());
    assert_eq!(a.store.compact_revision(), b.store.compact_revision());
    assert_eq!(a.store.index_len(), b.store.index_len());
    assert_eq!(a.store.members(), b.store.members());
    let rev = a.store.revision();
    let floor = a.store.compact_revision().max(1);
    for r in floor..=rev {
        assert_eq!(a.all(r).unwrap(), b.all(r).unwrap(), "range at {r}");
        assert_eq!(a.store.keep_set(r), b.store.keep_set(r), "keep set at {r}");
    }
    if floor > 1 {
        assert!(matches!(b.all(floor - 1), Err(Error::Compacted)));
    }
    assert_eq!(a.store.lease_ids(), b.store.lease_ids());
    for id in a.store.lease_ids() {
        assert_eq!(a.store.lease(id), b.store.lease(id), "lease {id}");
    }
    assert_eq!(
        a.store.events_between(floor, rev, usize::MAX).unwrap(),
        b.store.events_between(floor, rev, usize::MAX).unwrap()
    );
}

/// Both members apply the same next entries and must still agree.
fn assert_same_future(a: &mut Member, b: &mut Member) {
    assert_eq!(a.index, b.index);
    for m in [&mut *a, &mut *b] {
        // revoking lease 7 deletes the keys attached to it: the attachments were restored
        m.apply(Request::LeaseRevoke(LeaseRevokeRequest { id: 7 })).unwrap();
        m.put("k00", "next", 8);
    }
    assert_same_state(a, b);
    assert!(a.store.lease(7).is_none() && a.store.lease(8).unwrap().keys.contains(b"k00".as_slice()));
}

#[test]
fn restore_on_a_fresh_store_reproduces_the_source() {
    let mut src = busy_source();
    src.store.apply_members(src.index + 1, b"three members").unwrap();
    src.index += 1;
    src.store.commit().unwrap();
    let mut dst = Member::new();
    let (index, _) = dst.restore_from(&src);
    assert_eq!(index, src.index);
    assert_eq!((dst.store.applied_index(), dst.store.durable_index()), (index, index));
    assert_eq!(dst.store.members().as_deref(), Some(&b"three members"[..]));
    assert!(dst.store.commit().unwrap().is_empty());
    assert_same_state(&src, &dst);
    assert_same_future(&mut src, &mut dst);
}

#[test]
fn restore_over_different_data_replaces_all_of_it() {
    let mut src = busy_source();
    let mut dst = Member::new();
    dst.grant(7, 5); // same ID, other TTL
    dst.grant(99, 5);
    for i in 0..40 {
        dst.put(&format!("other{i}"), "o", if i % 2 == 0 { 99 } else { 7 });
    }
    dst.put("k00", "mine", 99);
    let rev = dst.store.revision();
    dst.compact(rev - 2);
    dst.store.apply_members(dst.index + 1, b"stale").unwrap();
    dst.index += 1;
    dst.store.commit().unwrap();
    // applied but never committed: must not survive the restore in any form
    dst.stage(Request::Put(PutRequest { key: "staged".into(), value: "s".into(), ..Default::default() })).unwrap();
    dst.stage(Request::LeaseGrant(LeaseGrantRequest { id: 1234, ttl: 5 })).unwrap();
    assert!(dst.index > src.index, "the target was further along its own history");

    dst.restore_from(&src);
    assert!(dst.store.commit().unwrap().is_empty(), "staged changes were dropped");
    assert_eq!(dst.store.applied_index(), src.index);
    assert_eq!(dst.store.members(), None, "the snapshot carried no member list");
    assert!(dst.store.lease(1234).is_none() && dst.store.lease(99).is_none());
    assert_same_state(&src, &dst);
    assert_same_future(&mut src, &mut dst);
}

#[test]
fn a_bad_snapshot_is_refused_and_the_store_is_unchanged() {
    let src = busy_source();
    let mut dst = Member::new();
    dst.grant(5, 10);
    dst.put("mine", "1", 5);
    dst.put("mine", "2", 0);
    let before = dst.store.snapshot_bytes().unwrap();
    let (index, good) = src.store.snapshot_bytes().unwrap();

    let mut bad: Vec<Vec<u8>> = Vec::new();
    for cut in [0, 1, 11, 12, good.len() / 3, good.len() / 2, good.len() - 13, good.len() - 4, good.len() - 1] {
        bad.push(good[..cut].to_vec());
    }
    for at in (0..good.len()).step_by(97).chain([good.len() - 1]) {
        let mut b = good.clone();
        b[at] ^= 0x10;
        bad.push(b);
    }
    let mut long = good.clone();
    long.extend_from_slice(b"junk");
    bad.push(long);
    // CRC-valid streams whose contents do not decode
    for (bucket, k, v) in [
        (Bucket::Key, b"not a revision".to_vec(), vec![]),
        (Bucket::Key, vec![0, 0, 0, 0, 0, 0, 0, 9, b'_', 0, 0, 0, 0, 0, 0, 0, 0], vec![0xff, 0xff]),
        (Bucket::Meta, b"current_rev".to_vec(), vec![1, 2, 3]),
        (Bucket::Lease, vec![0; 8], vec![0x0a]),
    ] {
        let mut buf = Vec::new();
        let mut w = SnapshotWriter::new(&mut buf).unwrap();
        w.entry(bucket, &k, &v).unwrap();
        w.finish().unwrap();
        bad.push(buf);
    }
    for (i, data) in bad.iter().enumerate() {
        match dst.store.restore(index, data) {
            Err(e @ Error::Corrupt { .. }) => assert!(e.to_string().contains("corrupt"), "{e}"),
            other => panic!("bad snapshot {i} accepted or wrong error: {other:?}"),
        }
        assert_eq!(dst.store.snapshot_bytes().unwrap(), before, "bad snapshot {i} changed the store");
    }
    // still a working store
    dst.put("mine", "3", 5);
    assert_eq!(dst.all(0).unwrap()[0].1, b"3");
    assert_eq!(dst.store.lease(5).unwrap().keys.len(), 1);
    // and the good one still installs
    dst.store.restore(index, &good).unwrap();
    assert_eq!(dst.store.snapshot_bytes().unwrap(), (index, good));
}

#[test]
fn a_restore_is_durable_and_survives_reopen() {
    let src = busy_source();
    let mut dst = Member::new();
    dst.put("gone", "soon", 0);
    let (index, data) = dst.restore_from(&src);
    dst.reopen();
    assert_eq!(dst.store.applied_index(), index);
    assert_eq!(dst.store.durable_index(), index);
    assert_eq!(dst.store.snapshot_bytes().unwrap(), (index, data));
    assert_same_state(&src, &dst);
    // replayed entries at or below the restored index are skipped
    let r = dst.store.apply(index, &InternalRequest { id: 1, request: Some(Request::Put(PutRequest::default())), auth: None });
    assert!(matches!(r, Ok(ApplyResponse::Skipped)));
}

#[test]
fn note_applied_and_members_persist_and_never_go_back() {
    let mut m = Member::new();
    m.put("a", "1", 0);
    m.store.note_applied(5).unwrap();
    assert_eq!(m.store.applied_index(), 1, "visible at the next commit");
    m.store.commit().unwrap();
    assert_eq!(m.store.applied_index(), 5);
    m.store.note_applied(3).unwrap();
    m.store.note_applied(5).unwrap();
    m.store.commit().unwrap();
    assert_eq!(m.store.applied_index(), 5, "never backwards");

    m.store.apply_members(7, b"m1").unwrap();
    assert_eq!(m.store.members().as_deref(), Some(&b"m1"[..]));
    m.store.apply_members(6, b"old").unwrap();
    m.store.apply_members(7, b"replayed").unwrap();
    assert_eq!(m.store.members().as_deref(), Some(&b"m1"[..]), "replays are ignored");
    m.store.publish().unwrap();
    assert_eq!(m.store.sync_backend().unwrap(), 7);
    m.reopen();
    assert_eq!((m.store.applied_index(), m.store.durable_index()), (7, 7));
    assert_eq!(m.store.members().as_deref(), Some(&b"m1"[..]));
    assert_eq!(m.store.revision(), 2);
    let r = m.store.apply(7, &InternalRequest { id: 7, request: Some(Request::Put(PutRequest::default())), auth: None });
    assert!(matches!(r, Ok(ApplyResponse::Skipped)));
    m.apply(Request::Put(PutRequest { key: "b".into(), value: "2".into(), ..Default::default() })).unwrap();
    assert_eq!(m.store.applied_index(), 8);

    // a member list travels with the snapshot
    m.store.apply_members(9, b"m2").unwrap();
    m.store.note_applied(10).unwrap();
    m.store.commit().unwrap();
    let mut other = Member::new();
    other.restore_from(&m);
    assert_eq!((other.store.applied_index(), other.store.members().as_deref()), (10, Some(&b"m2"[..])));
    other.reopen();
    assert_eq!((other.store.applied_index(), other.store.members().as_deref()), (10, Some(&b"m2"[..])));
}

/// The Meta values of a snapshot stream.
fn meta_of(data: &[u8]) -> (BTreeMap<Vec<u8>, Vec<u8>>, i64) {
    let entries = read_snapshot(&mut &data[..]).unwrap();
    let mut max_rev = 0;
    let mut meta = BTreeMap::new();
    for (b, k, v) in entries {
        match b {
            Bucket::Meta => {
                meta.insert(k, v);
            }
            Bucket::Key => max_rev = max_rev.max(i64::from_be_bytes(k[..8].try_into().unwrap())),
            Bucket::Lease => {}
        }
    }
    (meta, max_rev)
}

#[test]
fn snapshot_index_matches_its_data_while_applies_run() {
    let mut m = Member::new();
    let store = m.store.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let writer = std::thread::spawn(move || {
        let mut n = 0u64;
        while !stop2.load(Ordering::Relaxed) {
            m.put(&format!("k{}", n % 50), &n.to_string(), 0);
            if n % 10 == 0 {
                m.store.note_applied(m.index + 1).unwrap();
                m.index += 1;
            }
            n += 1;
        }
        m
    });
    let mut last = 0;
    for _ in 0..30 {
        let (index, data) = store.snapshot_bytes().unwrap();
        let (meta, max_rev) = meta_of(&data);
        let get = |k: &[u8]| meta.get(k).map(|v| u64::from_be_bytes(v[..].try_into().unwrap())).unwrap_or(0);
        assert_eq!(get(b"applied_index"), index, "the returned index is the stream's");
        // an empty store has no current_rev yet (revision 1) and no keys
        let current = (get(b"current_rev") as i64).max(1);
        assert_eq!(current, max_rev.max(1), "no half-written apply in the stream");
        assert!(index >= last);
        last = index;
    }
    stop.store(true, Ordering::Relaxed);
    let _m = writer.join().unwrap();
}

#[test]
fn readers_see_the_old_state_or_the_new_one_never_a_mix() {
    // two states with the same 60 keys, all "A" in one, all "B" in the other
    let state = |v: &str| {
        let mut m = Member::new();
        for i in 0..60 {
            m.put(&format!("k{i:02}"), v, 0);
        }
        if v == "B" {
            m.put("k00", v, 0); // other revisions too
        }
        m.store.snapshot_bytes().unwrap()
    };
    let (a, b) = (state("A"), state("B"));
    let dst = Member::new();
    dst.store.restore(1, &a.1).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (store, stop) = (dst.store.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut seen = 0;
                while !stop.load(Ordering::Relaxed) {
                    let r =
                        store.range(&RangeRequest { key: vec![0], range_end: vec![0], ..Default::default() }).unwrap();
                    assert_eq!(r.kvs.len(), 60);
                    let first = r.kvs[0].value.clone();
                    assert!(r.kvs.iter().all(|kv| kv.value == first), "a read mixed two states");
                    seen += 1;
                }
                seen
            })
        })
        .collect();
    for i in 0..40u64 {
        let data = if i % 2 == 0 { &b.1 } else { &a.1 };
        dst.store.restore(2 + i, data).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
}

#[test]
fn checkpointed_lease_is_restored_with_its_remaining_ttl() {
    let mut src = Member::new();
    src.grant(3, 60);
    src.apply(Request::LeaseCheckpoint(LeaseCheckpointRequest {
        checkpoints: vec![LeaseCheckpoint { id: 3, remaining_ttl: 17 }],
    }))
    .unwrap();
    let mut dst = Member::new();
    dst.restore_from(&src);
    assert_eq!(dst.store.lease(3).map(|l| (l.ttl, l.remaining_ttl)), Some((60, 17)));
}

#[test]
fn a_compaction_wait_goes_on_across_a_restore() {
    fn assert_send<T: Send>(t: T) -> T {
        t
    }
    let src = busy_source();
    let target = src.store.compact_revision();
    let dst = Member::new();
    let store = dst.store.clone();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let waiter = rt.spawn(assert_send(async move { store.wait_compacted(target).await }));
    let (index, data) = src.store.snapshot_bytes().unwrap();
    dst.store.restore(index, &data).unwrap();
    let done = rt.block_on(async { tokio::time::timeout(std::time::Duration::from_secs(10), waiter).await });
    assert!(matches!(done, Ok(Ok(Ok(())))), "{done:?}");
}

/// The NOSPACE alarm is applied like any entry: it caps puts, txns with puts and grants
/// (deletes and compactions still apply), survives a reopen and travels in a snapshot;
/// clearing it lifts the cap everywhere.
#[test]
fn alarms_cap_writes_persist_and_travel_in_snapshots() {
    use cairn_proto::etcdserverpb::alarm_request::AlarmAction;
    use cairn_proto::etcdserverpb::{AlarmMember, AlarmRequest, AlarmType};
    let alarm = |action: AlarmAction| AlarmRequest { action: action as i32, member_id: 42, alarm: AlarmType::Nospace as i32 };
    let mut m = Member::new();
    m.put("a", "1", 0);
    match m.apply(Request::Alarm(alarm(AlarmAction::Activate))).unwrap() {
        ApplyResponse::Alarm(r) => assert_eq!(r.alarms, vec![AlarmMember { member_id: 42, alarm: AlarmType::Nospace as i32 }]),
        other => panic!("{other:?}"),
    }
    let put = || Request::Put(PutRequest { key: "b".into(), value: "2".into(), ..Default::default() });
    assert!(matches!(m.apply(put()), Err(Error::NoSpace)));
    assert!(matches!(m.apply(Request::LeaseGrant(LeaseGrantRequest { id: 5, ttl: 60 })), Err(Error::NoSpace)));
    m.apply(Request::DeleteRange(DeleteRangeRequest { key: "a".into(), ..Default::default() })).unwrap();
    m.compact(m.store.revision());

    m.reopen();
    assert!(m.store.alarms().has(AlarmType::Nospace), "the alarm survives a reopen");
    assert!(matches!(m.apply(put()), Err(Error::NoSpace)));
    let mut follower = Member::new();
    follower.restore_from(&m);
    assert_eq!(follower.store.alarms(), m.store.alarms(), "the snapshot carries the alarm");
    assert!(matches!(follower.apply(put()), Err(Error::NoSpace)));

    m.apply(Request::Alarm(alarm(AlarmAction::Deactivate))).unwrap();
    assert!(m.store.alarms().is_empty());
    m.apply(put()).unwrap();
    follower.restore_from(&m);
    assert!(follower.store.alarms().is_empty(), "the snapshot carries the cleared set");
    follower.apply(put()).unwrap();
}
