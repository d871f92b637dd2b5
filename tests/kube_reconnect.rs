//! The shared-stream client recovers (issue 11, item 3): `EtcdStorage` re-establishes its
//! broken shared Watch stream by itself and every live watch goes on from the revision it
//! last delivered, with no gap and no duplicate, when the connection drops (a forwarder
//! between client and server closes every connection, mid-stream) and when the member is
//! killed with SIGKILL and restarted; and when the member it is connected to is partitioned
//! from the others (it loses its leader and ends the stream, as kube-apiserver's `hasleader`
//! streams ask; new streams are refused until the partition heals); and, connected to every
//! member, when each member in turn dies and comes back. Against cairn and against etcd:
//! the recovery is the client's, and must hold for either server.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::PutRequest;
use cairn_storage::kube::{EtcdConfig, EtcdStorage, KubeStorage, WatchEvent, WatchOptions, Watcher};
use common::cluster::ProcCluster;
use common::proxy::CutMode;
use common::{free_addr, wait_for, Kind, Server};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;
use tonic::transport::Channel;

const PREFIXES: usize = 16;
const PER_PHASE: usize = 40;
/// Time for every watch to report the last write once the writes are done.
const SETTLE: Duration = Duration::from_secs(30);

/// A TCP forwarder the test can cut (every connection closed at once) and point elsewhere.
struct Forwarder {
    addr: SocketAddr,
    target: Arc<Mutex<SocketAddr>>,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
    accept: AbortHandle,
}

impl Forwarder {
    async fn start(target: SocketAddr) -> Forwarder {
        let listener = TcpListener::bind(free_addr()).await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let target = Arc::new(Mutex::new(target));
        let conns: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (t, c) = (target.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let to = *t.lock().unwrap();
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                c.lock().unwrap().push(task.abort_handle());
            }
        })
        .abort_handle();
        Forwarder { addr, target, conns, accept }
    }

    /// Closes every connection (both ends see it dropped).
    fn cut(&self) {
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    fn retarget(&self, to: SocketAddr) {
        *self.target.lock().unwrap() = to;
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// Writes `PER_PHASE` keys spread over the prefixes; records (key, revision) per prefix.
async fn write_phase(endpoint: &str, phase: usize, written: &mut BTreeMap<usize, Vec<(Vec<u8>, i64)>>) {
    let ch = Channel::from_shared(endpoint.to_owned()).unwrap().connect().await.expect("connect");
    let mut kv = KvClient::new(ch);
    for i in 0..PER_PHASE {
        let p = i % PREFIXES;
        let key = format!("/t{p:02}/p{phase}-{i}").into_bytes();
        let put = PutRequest { key: key.clone(), value: b"v".to_vec(), ..Default::default() };
        let rev = kv.put(put).await.expect("put").into_inner().header.unwrap().revision;
        written.entry(p).or_default().push((key, rev));
    }
}

/// Reads `w` until it delivered `want` (or fails on anything else: a gap, a duplicate, an
/// error, or nothing within `SETTLE`).
async fn expect_exactly(p: usize, w: &mut Watcher, want: &[(Vec<u8>, i64)]) {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + SETTLE;
    while got.len() < want.len() {
        let ev = tokio::time::timeout_at(deadline, w.next()).await;
        match ev {
            Ok(Some(WatchEvent::Added(o))) => got.push((o.key, o.resource_version)),
            Ok(Some(WatchEvent::Bookmark(_))) => {}
            other => panic!("prefix {p}: after {} of {} events: {other:?}", got.len(), want.len()),
        }
        assert_eq!(got[..], want[..got.len()], "prefix {p}: events differ from the writes");
    }
}

fn quick_reconnect() -> EtcdConfig {
    EtcdConfig { reconnect_min: Duration::from_millis(20), reconnect_max: Duration::from_millis(300), ..Default::default() }
}

/// One `EtcdStorage` on `endpoint` (quick to reconnect) watching every prefix from now.
async fn watch_prefixes(endpoint: &str) -> (EtcdStorage, Vec<Watcher>) {
    let storage = EtcdStorage::connect_with(endpoint, quick_reconnect()).await.expect("connect");
    watch_all(storage).await
}

/// Watches every prefix from now through `storage`.
async fn watch_all(storage: EtcdStorage) -> (EtcdStorage, Vec<Watcher>) {
    let start = storage.current_resource_version().await.expect("revision");
    let mut watches = Vec::new();
    for p in 0..PREFIXES {
        let opts = WatchOptions { resource_version: start, recursive: true, progress_notify: false };
        watches.push(storage.watch(format!("/t{p:02}/").as_bytes(), opts).await.expect("watch"));
    }
    (storage, watches)
}

async fn run(kind: Kind) {
    let mut server = Server::start(kind);
    let fwd = Forwarder::start(server.client_addr()).await;
    let (_storage, mut watches) = watch_prefixes(&format!("http://{}", fwd.addr)).await;

    let mut written = BTreeMap::new();
    write_phase(&server.endpoint(), 0, &mut written).await;
    fwd.cut();
    write_phase(&server.endpoint(), 1, &mut written).await;
    fwd.cut();
    write_phase(&server.endpoint(), 2, &mut written).await;
    server.kill9_and_restart();
    fwd.retarget(server.client_addr());
    fwd.cut();
    write_phase(&server.endpoint(), 3, &mut written).await;

    for (p, w) in watches.iter_mut().enumerate() {
        expect_exactly(p, w, &written[&p]).await;
    }
    // the watches are on a working stream: a write now reaches them too
    let mut more = BTreeMap::new();
    write_phase(&server.endpoint(), 4, &mut more).await;
    for (p, w) in watches.iter_mut().enumerate() {
        expect_exactly(p, w, &more[&p]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_go_on_across_dropped_connections_and_a_restart_cairn() {
    run(Kind::Cairn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_go_on_across_dropped_connections_and_a_restart_etcd() {
    run(Kind::Etcd).await;
}

async fn run_partitioned(kind: Kind) {
    let mut c = ProcCluster::start(kind, 3);
    let (_storage, mut watches) = watch_prefixes(&c.endpoint(0)).await;
    let mut written = BTreeMap::new();
    write_phase(&c.endpoint(1), 0, &mut written).await;
    c.isolate(0, CutMode::Refuse);
    // the member the watches use knows no leader: it ends their stream
    let ctl = Duration::from_millis(500);
    wait_for("member 0 to lose its leader", Duration::from_secs(20), || c.status(0, ctl).filter(|s| s.leader == 0));
    let writer = wait_for("a member of the majority with a leader", Duration::from_secs(20), || {
        [1, 2].into_iter().find(|i| c.status(*i, ctl).is_some_and(|s| s.leader != 0 && c.index_of(s.leader) != Some(0)))
    });
    write_phase(&c.endpoint(writer), 1, &mut written).await;
    c.heal();
    write_phase(&c.endpoint(writer), 2, &mut written).await;
    for (p, w) in watches.iter_mut().enumerate() {
        expect_exactly(p, w, &written[&p]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_go_on_after_their_member_was_partitioned_cairn() {
    run_partitioned(Kind::Cairn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_go_on_after_their_member_was_partitioned_etcd() {
    run_partitioned(Kind::Etcd).await;
}

/// Connected to every member, as kube-apiserver is: each member in turn is killed with
/// SIGKILL, stays down while writes go on, and comes back; the watches move to live
/// members and see every write exactly once.
async fn run_member_deaths(kind: Kind) {
    let mut c = ProcCluster::start(kind, 3);
    let endpoints = c.endpoints();
    let list: Vec<&str> = endpoints.iter().map(String::as_str).collect();
    let storage = EtcdStorage::connect_members(&list, quick_reconnect()).expect("endpoints");
    let (_storage, mut watches) = watch_all(storage).await;
    let mut written = BTreeMap::new();
    write_phase(&c.endpoint(1), 0, &mut written).await;
    let ctl = Duration::from_millis(500);
    for i in 0..3 {
        c.kill9(i);
        // the writes go to a live member once the live ones agree on a live leader
        let live = (i + 1) % 3;
        wait_for("a leader among the live members", Duration::from_secs(20), || {
            let leader = c.status(live, ctl)?.leader;
            (leader != 0 && c.index_of(leader) != Some(i)).then_some(())
        });
        write_phase(&c.endpoint(live), i + 1, &mut written).await;
        c.restart(i);
    }
    for (p, w) in watches.iter_mut().enumerate() {
        expect_exactly(p, w, &written[&p]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_over_every_member_go_on_as_members_die_cairn() {
    run_member_deaths(Kind::Cairn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_over_every_member_go_on_as_members_die_etcd() {
    run_member_deaths(Kind::Etcd).await;
}
