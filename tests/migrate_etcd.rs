//! Two-way migration with real etcd through its file format (issue 10, item 4):
//! * in: real etcd writes a history (puts, overwrites, deletes, a txn, leased keys, a
//!   compaction), `etcdctl snapshot save` saves it, `cairn_storage::etcd_db` imports the
//!   file into a fresh store, and the store answers Range at every kept revision (keys,
//!   values, create/mod revisions, versions, leases) and the leases as etcd did;
//! * out: cairn writes the same history, its store is exported as an etcd snapshot file,
//!   `etcdctl snapshot status` accepts it (revision, key count, and the hash of the
//!   contents as etcd reads them), `etcdctl snapshot restore` builds a data folder from
//!   it, and real etcd started on that folder answers every kept revision as cairn did;
//!   etcd then writes on it, and its snapshot comes back to cairn with the same history;
//!   the same through `etcdctl snapshot save` against a running cairn (Maintenance.Snapshot
//!   streams an etcd db), with users and roles;
//! * out, at size: an exported store of 100k keys (several branch levels) passes
//!   `etcdctl snapshot status` (whose bbolt consistency check walks every page) and
//!   restore, and etcd serves every key from it;
//! * in place: cairn started on the data folder a one-member etcd wrote (killed with
//!   SIGKILL while most of its history was in its WAL only) answers every kept revision
//!   as etcd did, under etcd's member and cluster IDs; a folder of a larger etcd cluster
//!   is refused with the command that migrates it, and nothing is written.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::{
    compare, request_op, CompactionRequest, Compare, DeleteRangeRequest, LeaseGrantRequest, LeaseLeasesRequest,
    LeaseTimeToLiveRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use cairn_proto::mvccpb::KeyValue;
use cairn_storage::bbolt::{BboltFile, Entry};
use cairn_storage::{etcd_db, Store, StoreConfig};
use common::{etcdctl_command, free_addr, Kind, Options, Server};
use tonic::transport::Channel;

/// The revision the history compacts at: every revision from it on is kept.
const COMPACT_AT: i64 = 8;
/// Keys written in a row after the first ones (enough for several leaf pages).
const MANY: usize = 200;

/// One range's answer: the key-values and the count.
type Answer = (Vec<KeyValue>, i64);

/// What a server answered: the range of the whole key space at every kept revision,
/// the current revision, and each lease's granted TTL and keys.
#[derive(Debug, PartialEq)]
struct Observed {
    revision: i64,
    ranges: BTreeMap<i64, Answer>,
    leases: BTreeMap<i64, (i64, Vec<Vec<u8>>)>,
}

fn whole(rev: i64) -> RangeRequest {
    RangeRequest { key: vec![0], range_end: vec![0], revision: rev, ..Default::default() }
}

fn put(key: &str, value: &[u8], lease: i64) -> PutRequest {
    PutRequest { key: key.into(), value: value.to_vec(), lease, ..Default::default() }
}

/// Writes the history through the v3 API; returns nothing: what matters is what the
/// server answers afterwards.
async fn write_history(endpoint: String) {
    let ch = Channel::from_shared(endpoint).unwrap().connect().await.expect("connect");
    let mut kv = KvClient::new(ch.clone());
    let mut lease = LeaseClient::new(ch);
    kv.put(put("a", b"1", 0)).await.unwrap(); // 2
    kv.put(put("b", b"1", 0)).await.unwrap(); // 3
    kv.put(put("a", b"2", 0)).await.unwrap(); // 4
    lease.lease_grant(LeaseGrantRequest { id: 1000, ttl: 600 }).await.unwrap();
    kv.put(put("c", b"leased", 1000)).await.unwrap(); // 5
    let txn = TxnRequest {
        compare: vec![Compare {
            key: b"a".to_vec(),
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Value as i32,
            target_union: Some(compare::TargetUnion::Value(b"2".to_vec())),
            ..Default::default()
        }],
        success: vec![
            RequestOp { request: Some(request_op::Request::RequestPut(put("d", b"txn", 0))) },
            RequestOp { request: Some(request_op::Request::RequestPut(put("e", b"txn", 1000))) },
            RequestOp { request: Some(request_op::Request::RequestDeleteRange(DeleteRangeRequest { key: b"b".to_vec(), ..Default::default() })) },
        ],
        failure: vec![],
    };
    assert!(kv.txn(txn).await.unwrap().into_inner().succeeded); // 6
    kv.delete_range(DeleteRangeRequest { key: b"a".to_vec(), ..Default::default() }).await.unwrap(); // 7
    kv.put(put("a", b"3", 0)).await.unwrap(); // 8
    // a value over several pages (bbolt overflow pages)
    kv.put(put("big", &vec![b'z'; 20_000], 0)).await.unwrap(); // 9
    for i in 0..MANY {
        kv.put(put(&format!("k/{i:03}"), format!("value {i}").as_bytes(), 0)).await.unwrap();
    }
    kv.compact(CompactionRequest { revision: COMPACT_AT, physical: true }).await.unwrap();
    kv.put(put("c", b"again", 1000)).await.unwrap();
    lease.lease_grant(LeaseGrantRequest { id: 2000, ttl: 900 }).await.unwrap();
    lease.lease_grant(LeaseGrantRequest { id: 3000, ttl: 700 }).await.unwrap();
    kv.put(put("f", b"leased too", 3000)).await.unwrap();
    kv.put(put("f", b"detached", 0)).await.unwrap();
    kv.put(put("big", b"small now", 2000)).await.unwrap();
    let range_end = b"k/050".to_vec();
    kv.delete_range(DeleteRangeRequest { key: b"k/".to_vec(), range_end, ..Default::default() }).await.unwrap();
}

/// What the server at `endpoint` answers (see [`Observed`]).
async fn observe(endpoint: String) -> Observed {
    let ch = Channel::from_shared(endpoint).unwrap().connect().await.expect("connect");
    let mut kv = KvClient::new(ch.clone());
    let mut lease = LeaseClient::new(ch);
    let now = kv.range(whole(0)).await.unwrap().into_inner();
    let revision = now.header.unwrap().revision;
    let mut ranges = BTreeMap::new();
    for rev in COMPACT_AT..=revision {
        let r = kv.range(whole(rev)).await.unwrap().into_inner();
        ranges.insert(rev, (r.kvs, r.count));
    }
    let below = kv.range(whole(COMPACT_AT - 1)).await.unwrap_err();
    assert_eq!(below.message(), "etcdserver: mvcc: required revision has been compacted");
    let mut leases = BTreeMap::new();
    for l in lease.lease_leases(LeaseLeasesRequest {}).await.unwrap().into_inner().leases {
        let t = lease.lease_time_to_live(LeaseTimeToLiveRequest { id: l.id, keys: true }).await.unwrap().into_inner();
        let mut keys = t.keys;
        keys.sort();
        leases.insert(l.id, (t.granted_ttl, keys));
    }
    Observed { revision, ranges, leases }
}

/// What a store answers, as [`observe`] asks a server.
fn observe_store(store: &Store) -> Observed {
    let revision = store.range(&whole(0)).unwrap().header.unwrap().revision;
    let ranges = (COMPACT_AT..=revision)
        .map(|rev| {
            let r = store.range(&whole(rev)).unwrap();
            (rev, (r.kvs, r.count))
        })
        .collect();
    assert!(matches!(store.range(&whole(COMPACT_AT - 1)), Err(cairn_storage::Error::Compacted)));
    let leases = store
        .lease_ids()
        .into_iter()
        .map(|id| {
            let l = store.lease(id).unwrap();
            (id, (l.ttl, l.keys.into_iter().collect()))
        })
        .collect();
    Observed { revision, ranges, leases }
}

fn etcdctl_ok(args: &[&str]) -> String {
    let out = etcdctl_command("http://127.0.0.1:1", args).output().expect("run etcdctl");
    assert!(out.status.success(), "etcdctl {args:?}: {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// `etcdctl snapshot status FILE -w json`.
fn snapshot_status(file: &Path) -> serde_json::Value {
    serde_json::from_str(&etcdctl_ok(&["snapshot", "status", file.to_str().unwrap(), "-w", "json"])).unwrap()
}

fn assert_same(got: &Observed, want: &Observed) {
    assert_eq!(got.revision, want.revision, "current revision");
    assert_eq!(got.ranges.len(), want.ranges.len());
    for (rev, answer) in &want.ranges {
        assert_eq!(got.ranges.get(rev), Some(answer), "range at revision {rev}");
    }
    assert_eq!(got.leases, want.leases, "leases");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_snapshot_imports_into_a_cairn_store() {
    let etcd = Server::start(Kind::Etcd);
    write_history(etcd.endpoint()).await;
    let want = observe(etcd.endpoint()).await;
    assert!(want.ranges.len() > MANY, "{} revisions kept", want.ranges.len());

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("etcd.snapshot");
    etcd.ctl_ok(&["snapshot", "save", file.to_str().unwrap()]);
    let saved = std::fs::read(&file).unwrap();
    // our reader sees every byte of every bucket as etcd's own status does
    let status = snapshot_status(&file);
    let (hash, revision, total) = status_of(&saved[..saved.len() - 32]);
    assert_eq!((status["hash"].as_u64(), status["revision"].as_i64(), status["totalKey"].as_u64()), (Some(u64::from(hash)), Some(revision), Some(total)));
    let imported = etcd_db::import_snapshot(saved).expect("import");
    assert!(imported.had_hash, "etcdctl snapshot save keeps etcd's SHA-256 trailer");
    assert_eq!((imported.revision, imported.compact_revision, imported.leases), (want.revision, COMPACT_AT, 3));
    assert!(imported.other_buckets.contains_key(&b"members"[..]));

    let store = Store::open(StoreConfig::new(dir.path().join("store"))).unwrap();
    store.restore(imported.consistent_index, &imported.snapshot).expect("restore");
    assert_same(&observe_store(&store), &want);

    // etcd's live backend file too (what cairn finds in an etcd data folder): written in
    // place by many transactions, so it has a newer meta and pages no tree references
    // (etcd 3.4 does not persist the freelist: its meta records none)
    let mut etcd = etcd;
    assert!(matches!(etcd.stop(), Some((_, true))), "etcd exits on SIGTERM");
    let db = std::fs::read(etcd.data_dir().join("member").join("snap").join("db")).unwrap();
    let live = BboltFile::from_bytes(db.clone()).unwrap();
    assert!(live.txid() > 1, "txid {}", live.txid());
    live.free_pages().unwrap();
    let imported = etcd_db::import_db(db).expect("import the live db");
    assert!(!imported.had_hash);
    let store = Store::open(StoreConfig::new(dir.path().join("store-live"))).unwrap();
    store.restore(imported.consistent_index, &imported.snapshot).expect("restore");
    assert_same(&observe_store(&store), &want);
}

/// CRC-32C (Castagnoli), the hash `etcdctl snapshot status` reports.
fn crc32c(crc: u32, bytes: &[u8]) -> u32 {
    let mut c = !crc;
    for &b in bytes {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 == 1 { (c >> 1) ^ 0x82F6_3B78 } else { c >> 1 };
        }
    }
    !c
}

/// The hash, last key revision and entry count etcd's `snapshot status` computes, over
/// the file as our reader sees it: every bucket name, then its keys and values.
fn status_of(db: &[u8]) -> (u32, i64, u64) {
    let file = BboltFile::from_bytes(db.to_vec()).unwrap();
    let (mut hash, mut revision, mut total) = (0u32, 0i64, 0u64);
    let mut buckets = Vec::new();
    file.root()
        .for_each(&mut |name, e| {
            if let Entry::Bucket(b) = e {
                buckets.push((name.to_vec(), b));
            }
            Ok(true)
        })
        .unwrap();
    for (name, b) in buckets {
        hash = crc32c(hash, &name);
        b.for_each(&mut |k, e| {
            let Entry::Value(v) = e else { panic!("nested bucket in {name:?}") };
            hash = crc32c(crc32c(hash, k), v);
            if name == b"key" {
                revision = i64::from_be_bytes(k[..8].try_into().unwrap());
            }
            total += 1;
            Ok(true)
        })
        .unwrap();
    }
    (hash, revision, total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cairn_store_exports_to_etcd() {
    let mut cairn = Server::start(Kind::Cairn);
    write_history(cairn.endpoint()).await;
    let want = observe(cairn.endpoint()).await;
    assert!(matches!(cairn.stop(), Some((_, true))), "cairn exits on SIGTERM");

    // the stopped member's store, as `cairn snapshot` would read it
    let store_dir = cairn.data_dir().join("member").join("cairn");
    let engine = cairn_storage::engine::detect(&store_dir).unwrap().unwrap_or_default();
    let store = Store::open(StoreConfig { engine, ..StoreConfig::new(&store_dir) }).unwrap();
    assert_same(&observe_store(&store), &want);
    let (_, stream) = store.snapshot_bytes().unwrap();
    drop(store);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cairn.snapshot");
    let exported = etcd_db::export_snapshot(&stream).expect("export");
    std::fs::write(&file, &exported).unwrap();

    let status = snapshot_status(&file);
    let (hash, revision, total) = status_of(&exported[..exported.len() - 32]);
    assert_eq!(status["hash"].as_u64(), Some(u64::from(hash)), "{status}");
    assert_eq!(status["revision"].as_i64(), Some(revision), "{status}");
    assert_eq!(revision, want.revision, "the newest key revision is the current one in this history");
    assert_eq!(status["totalKey"].as_u64(), Some(total), "{status}");
    assert_eq!(status["totalSize"].as_u64(), Some(exported.len() as u64 - 32), "{status}");

    restore_and_compare(&file, dir.path(), &want).await;
}

/// `snapshot restore FILE` arguments (etcdutl's, which cairn takes too) building a new
/// one-member cluster's data folder `data` (the recorded peer URL is not the one the server
/// then listens on: a one-member cluster does not dial it).
fn restore_args(file: &Path, data: &Path) -> Vec<String> {
    let peer = format!("http://{}", common::free_addr());
    vec![
        "snapshot".into(),
        "restore".into(),
        file.display().to_string(),
        format!("--data-dir={}", data.display()),
        "--name=default".into(),
        format!("--initial-cluster=default={peer}"),
        format!("--initial-advertise-peer-urls={peer}"),
        "--initial-cluster-token=cairn-test".into(),
    ]
}

/// `etcdctl snapshot restore`s `file` into a new one-member cluster's data folder under
/// `dir` and starts etcd on it (the member's recorded peer URL is not the one the
/// server then listens on: a one-member cluster does not dial it).
fn restore_and_start_etcd(file: &Path, dir: &Path) -> Server {
    let data = dir.join("etcd-data");
    let args = restore_args(file, &data);
    etcdctl_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    Server::start_with(Kind::Etcd, Options { data_dir: Some(data), ..Default::default() })
}

/// Restores `file` into real etcd ([`restore_and_start_etcd`]) and compares its answers
/// with `want`; returns the running etcd.
async fn restore_and_compare(file: &Path, dir: &Path, want: &Observed) -> Server {
    let mut etcd = restore_and_start_etcd(file, dir);
    assert_same(&observe(etcd.endpoint()).await, want);

    // etcd writes on the file it was given (bbolt allocates, frees and commits on it),
    // and the data comes back to cairn whole
    etcd.restart();
    let ch = Channel::from_shared(etcd.endpoint()).unwrap().connect().await.unwrap();
    let after = KvClient::new(ch).put(put("written by etcd", b"x", 0)).await.unwrap().into_inner();
    assert_eq!(after.header.unwrap().revision, want.revision + 1);
    let back = dir.join("back.snapshot");
    etcd.ctl_ok(&["snapshot", "save", back.to_str().unwrap()]);
    let imported = etcd_db::import_snapshot(std::fs::read(&back).unwrap()).expect("import");
    let store = Store::open(StoreConfig::new(dir.join("store-back"))).unwrap();
    store.restore(imported.consistent_index, &imported.snapshot).expect("restore");
    let mut round_trip = observe_store(&store);
    let last = round_trip.ranges.remove(&(want.revision + 1)).expect("the write etcd added");
    assert!(last.0.iter().any(|kv| kv.key[..] == b"written by etcd"[..] && kv.mod_revision == want.revision + 1));
    round_trip.revision -= 1;
    assert_same(&round_trip, want);
    etcd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_export_passes_etcd_checks() {
    use cairn_storage::revision::Revision;
    use cairn_storage::snapshot::SnapshotWriter;
    use prost::Message;

    const N: i64 = 100_000;
    let key = |i: i64| format!("/registry/configmaps/ns-{:03}/cm-{i:06}", i % 97).into_bytes();
    let mut stream = Vec::new();
    let mut w = SnapshotWriter::new(&mut stream).unwrap();
    for i in 0..N {
        let rev = i + 2;
        let kv = KeyValue { key: key(i).into(), create_revision: rev, mod_revision: rev, version: 1, value: vec![b'a' + (i % 26) as u8; 300].into(), lease: 0 };
        w.entry(cairn_storage::backend::Bucket::Key, &Revision::new(rev, 0).to_bytes(false), &kv.encode_to_vec()).unwrap();
    }
    w.finish().unwrap();
    let exported = etcd_db::export_snapshot(&stream).expect("export");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("large.snapshot");
    std::fs::write(&file, &exported).unwrap();

    let status = snapshot_status(&file);
    let (hash, revision, total) = status_of(&exported[..exported.len() - 32]);
    assert_eq!(revision, N + 1);
    assert_eq!(status["hash"].as_u64(), Some(u64::from(hash)), "{status}");
    assert_eq!(status["revision"].as_i64(), Some(revision), "{status}");
    // the key entries, the meta's consistent_index, and the auth bucket's enabled flag
    // and revision
    assert_eq!((status["totalKey"].as_u64(), total), (Some(N as u64 + 3), N as u64 + 3), "{status}");

    let etcd = restore_and_start_etcd(&file, dir.path());
    let ch = Channel::from_shared(etcd.endpoint()).unwrap().connect().await.unwrap();
    let mut kv = KvClient::new(ch);
    let all = kv.range(RangeRequest { count_only: true, ..whole(0) }).await.unwrap().into_inner();
    assert_eq!((all.count, all.header.unwrap().revision), (N, N + 1));
    for i in [0, 1, N / 2, N - 1] {
        let r = kv.range(RangeRequest { key: key(i), ..Default::default() }).await.unwrap().into_inner();
        let got = &r.kvs[0];
        assert_eq!((got.mod_revision, got.value.len(), got.value[0]), (i + 2, 300, b'a' + (i % 26) as u8), "key {i}");
    }
}

/// Writes the history on a fresh server of `kind`, observes it, and saves it with
/// `etcdctl snapshot save` into `dir`; the server is stopped on return.
async fn saved_history(kind: Kind, dir: &Path) -> (Observed, std::path::PathBuf) {
    let server = Server::start(kind);
    write_history(server.endpoint()).await;
    let want = observe(server.endpoint()).await;
    let file = dir.join(format!("{kind:?}.snapshot"));
    server.ctl_ok(&["snapshot", "save", file.to_str().unwrap()]);
    (want, file)
}

/// etcd → cairn through the command a user runs: `cairn snapshot restore` of a snapshot
/// `etcdctl snapshot save` took from real etcd, then a cairn member started on the folder
/// answers every kept revision and every lease as etcd did, and takes writes after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cairn_snapshot_restore_takes_an_etcd_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let (want, file) = saved_history(Kind::Etcd, dir.path()).await;
    let data = dir.path().join("cairn-data");
    let out = std::process::Command::new(Kind::Cairn.binary())
        .args(restore_args(&file, &data))
        .output()
        .unwrap();
    assert!(out.status.success(), "cairn snapshot restore: {}", String::from_utf8_lossy(&out.stderr));
    let cairn = Server::start_with(Kind::Cairn, Options { data_dir: Some(data), ..Default::default() });
    assert_same(&observe(cairn.endpoint()).await, &want);
    let ch = Channel::from_shared(cairn.endpoint()).unwrap().connect().await.unwrap();
    let after = KvClient::new(ch).put(put("written by cairn", b"x", 0)).await.unwrap().into_inner();
    assert_eq!(after.header.unwrap().revision, want.revision + 1);
}

/// Users and roles as `etcdctl` lists them (the same text from etcd and cairn).
fn auth_of(server: &Server) -> Vec<String> {
    let mut out = vec![server.ctl_ok(&["user", "list"]), server.ctl_ok(&["role", "list"])];
    out.push(server.ctl_ok(&["user", "get", "alice"]));
    out.push(server.ctl_ok(&["role", "get", "reader"]));
    out
}

/// cairn → etcd through the commands a user runs: `etcdctl snapshot save` against a
/// running cairn member (Maintenance.Snapshot streams an etcd db), `etcdctl snapshot
/// status` (whose bbolt check walks every page: hash, revision, key count and size as
/// etcd computes them over the file), then etcd's own restore; etcd serves every kept
/// revision, lease, user and role as cairn did, and its own snapshot comes back to cairn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cairn_backup_restores_into_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let cairn = Server::start(Kind::Cairn);
    write_history(cairn.endpoint()).await;
    for args in [
        &["user", "add", "alice", "--new-user-password=secret"][..],
        &["role", "add", "reader"],
        &["role", "grant-permission", "reader", "read", "k/", "--prefix=true"],
        &["user", "grant-role", "alice", "reader"],
    ] {
        cairn.ctl_ok(args);
    }
    let want = observe(cairn.endpoint()).await;
    let want_auth = auth_of(&cairn);
    let file = dir.path().join("cairn.snapshot");
    cairn.ctl_ok(&["snapshot", "save", file.to_str().unwrap()]);
    drop(cairn);

    let saved = std::fs::read(&file).unwrap();
    let status = snapshot_status(&file);
    let (hash, revision, total) = status_of(&saved[..saved.len() - 32]);
    assert_eq!(status["hash"].as_u64(), Some(u64::from(hash)), "{status}");
    assert_eq!((status["revision"].as_i64(), revision), (Some(want.revision), want.revision), "{status}");
    assert_eq!(status["totalKey"].as_u64(), Some(total), "{status}");
    assert_eq!(status["totalSize"].as_u64(), Some(saved.len() as u64 - 32), "{status}");
    for format in ["json", "simple", "table"] {
        let ours = std::process::Command::new(Kind::Cairn.binary())
            .args(["snapshot", "status", file.to_str().unwrap(), "-w", format])
            .output()
            .unwrap();
        let theirs = etcdctl_ok(&["snapshot", "status", file.to_str().unwrap(), "-w", format]);
        assert_eq!(String::from_utf8_lossy(&ours.stdout), theirs, "cairn snapshot status -w {format}");
    }
    let out = std::process::Command::new(Kind::Cairn.binary())
        .args(["snapshot", "export-etcd", file.to_str().unwrap(), dir.path().join("x").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("already an etcd (bbolt) snapshot"), "{out:?}");

    let etcd = restore_and_compare(&file, dir.path(), &want).await;
    assert_eq!(auth_of(&etcd), want_auth, "users and roles in etcd");
}

/// Kills `server` with SIGKILL (nothing flushed) and reaps it.
fn kill9(server: &mut Server) {
    let pid = server.pid().expect("running");
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    }
    assert!(server.stop().is_some_and(|(_, exited)| exited), "killed");
}

/// (member ID, cluster ID) from a response header.
async fn ids(endpoint: String) -> (u64, u64) {
    let ch = Channel::from_shared(endpoint).unwrap().connect().await.unwrap();
    let h = KvClient::new(ch).range(whole(0)).await.unwrap().into_inner().header.unwrap();
    (h.member_id, h.cluster_id)
}

/// etcd → cairn in place, as a user swaps the binary under a one-member cluster: cairn
/// started on etcd's data folder imports its db and replays its WAL past the db.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cairn_starts_on_the_folder_a_one_member_etcd_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // etcd commits its db file only when it must (the compaction does) or at shutdown: killed,
    // it leaves the writes after the compaction in its WAL only
    let batch = vec!["--backend-batch-interval=1h".to_owned(), "--backend-batch-limit=1000000".to_owned()];
    let mut etcd = Server::start_with(Kind::Etcd, Options { data_dir: Some(data.clone()), extra_args: batch });
    write_history(etcd.endpoint()).await;
    let want = observe(etcd.endpoint()).await;
    let etcd_ids = ids(etcd.endpoint()).await;
    kill9(&mut etcd);
    let db_path = data.join("member").join("snap").join("db");
    let db = std::fs::read(&db_path).unwrap();
    let in_db = etcd_db::import_db(db.clone()).unwrap().revision;
    assert!(in_db < want.revision, "the db holds revision {in_db} of {}: the rest is in the WAL only", want.revision);

    let mut cairn = Server::start_with(Kind::Cairn, Options { data_dir: Some(data.clone()), ..Default::default() });
    let line = cairn.log().lines().find(|l| l.contains("imported etcd data folder")).map(str::to_owned).unwrap();
    let replayed = serde_json::from_str::<serde_json::Value>(&line).unwrap()["replayed"].as_u64();
    assert!(replayed.is_some_and(|n| n >= 5), "the WAL's writes were replayed: {line}");
    assert_same(&observe(cairn.endpoint()).await, &want);
    assert_eq!(ids(cairn.endpoint()).await, etcd_ids, "etcd's member and cluster IDs are kept");
    let ch = Channel::from_shared(cairn.endpoint()).unwrap().connect().await.unwrap();
    let after = KvClient::new(ch).put(put("written by cairn", b"x", 0)).await.unwrap().into_inner();
    assert_eq!(after.header.unwrap().revision, want.revision + 1);

    // imported once: a restart serves cairn's own store (with the write above)
    cairn.restart();
    assert!(!cairn.log().contains("imported etcd data folder"), "{}", cairn.log());
    let mut again = observe(cairn.endpoint()).await;
    assert!(again.ranges.remove(&(want.revision + 1)).is_some());
    again.revision -= 1;
    assert_same(&again, &want);
    assert_eq!(std::fs::read(&db_path).unwrap(), db, "etcd's files are left as they were");
}

/// A folder of a member of a larger etcd cluster is not imported in place (its members
/// may not have applied the same entries): cairn refuses to start, names the command that
/// migrates it, and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_of_a_larger_etcd_cluster_is_refused_with_the_way_to_migrate() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut etcd = Server::start_with(Kind::Etcd, Options { data_dir: Some(data.clone()), ..Default::default() });
    etcd.ctl_ok(&["put", "k", "v"]);
    // a second member, never started: the cluster has two members now
    etcd.ctl_ok(&["member", "add", "second", "--peer-urls=http://127.0.0.1:9"]);
    kill9(&mut etcd);

    let client = format!("http://{}", free_addr());
    let peer = format!("http://{}", free_addr());
    let mut child = std::process::Command::new(Kind::Cairn.binary())
        .args([
            format!("--data-dir={}", data.display()),
            "--name=default".into(),
            format!("--listen-client-urls={client}"),
            format!("--advertise-client-urls={client}"),
            format!("--listen-peer-urls={peer}"),
            format!("--initial-advertise-peer-urls={peer}"),
            format!("--initial-cluster=default={peer}"),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = common::wait_for("cairn to exit", std::time::Duration::from_secs(30), || child.try_wait().unwrap());
    let out = child.wait_with_output().unwrap();
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!status.success(), "{log}");
    assert!(log.contains("2-member etcd cluster") && log.contains("cairn snapshot restore"), "{log}");
    for written in ["identity", "cairn", "cairn.import"] {
        assert!(!data.join("member").join(written).exists(), "member/{written} was written");
    }
}

/// A cairn backup (`etcdctl snapshot save`) restored by `etcdctl snapshot restore` for
/// three members (each folder: the same db, a WAL of only the three bootstrap conf
/// changes) starts as a three-member cairn cluster: each member imports its folder, under
/// the IDs etcdctl derived, and every member serves every kept revision and lease, then
/// takes writes after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cairn_starts_on_folders_etcdctl_restored_for_three_members() {
    let dir = tempfile::tempdir().unwrap();
    let (want, file) = saved_history(Kind::Cairn, dir.path()).await;
    let file = file.to_str().unwrap();
    let cluster = common::cluster::ProcCluster::start_prepared(Kind::Cairn, 3, &[], &mut |p| {
        let data = p.data_dir.to_str().unwrap();
        etcdctl_ok(&[
            "snapshot",
            "restore",
            file,
            "--data-dir",
            data,
            "--name",
            p.name,
            "--initial-cluster",
            p.initial_cluster,
            "--initial-advertise-peer-urls",
            p.peer_url,
            "--initial-cluster-token",
            "restored",
        ]);
    });
    for i in 0..3 {
        assert_same(&observe(cluster.endpoint(i)).await, &want);
        assert!(cluster.log(i).contains("imported etcd data folder"), "member {i} imported its folder");
    }
    let ch = Channel::from_shared(cluster.endpoint(2)).unwrap().connect().await.unwrap();
    let after = KvClient::new(ch).put(put("written after", b"x", 0)).await.unwrap().into_inner();
    assert_eq!(after.header.unwrap().revision, want.revision + 1);
}
