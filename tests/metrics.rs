//! `/metrics` end to end, as an operator's dashboards and alerts read it: every family
//! etcd's alerts use is present with etcd's type and label names, and the values move with
//! the work done (puts, ranges, txns, deletes, a watch, a lease granted and revoked, an
//! error counted by its gRPC code name). A three-member cluster reports one leader, a leader
//! on every member, and bytes and round trips between peers; with its quorum gone, the last
//! member reports no leader, its serializable liveness probe stays healthy, readiness and
//! `grpc.health.v1` turn NOT_SERVING. The single-member and three-member checks run against
//! etcd as well (`CAIRN_TEST_TARGET=etcd`; 3.4 lacks `/livez`, `/readyz` and the
//! leader-following health status, which are checked on cairn only).

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::cluster::{MemberOptions, ProcCluster};
use common::{http_get, target_kind, wait_for, Kind, Options, Server};
use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_proto::etcdserverpb::{watch_request::RequestUnion, WatchCreateRequest, WatchRequest, WatchResponse};
use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use futures::StreamExt as _;
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;

/// (family, type, label names) that dashboards and alerts written for etcd use.
const FAMILIES: &[(&str, &str, &[&str])] = &[
    ("etcd_server_has_leader", "gauge", &[]),
    ("etcd_server_is_leader", "gauge", &[]),
    ("etcd_server_is_learner", "gauge", &[]),
    ("etcd_server_leader_changes_seen_total", "counter", &[]),
    ("etcd_server_proposals_committed_total", "gauge", &[]),
    ("etcd_server_proposals_applied_total", "gauge", &[]),
    ("etcd_server_proposals_pending", "gauge", &[]),
    ("etcd_server_proposals_failed_total", "counter", &[]),
    ("etcd_server_heartbeat_send_failures_total", "counter", &[]),
    ("etcd_server_slow_apply_total", "counter", &[]),
    ("etcd_server_quota_backend_bytes", "gauge", &[]),
    ("etcd_server_id", "gauge", &["server_id"]),
    ("etcd_server_version", "gauge", &["server_version"]),
    ("etcd_disk_wal_fsync_duration_seconds", "histogram", &[]),
    ("etcd_disk_backend_commit_duration_seconds", "histogram", &[]),
    ("etcd_mvcc_db_total_size_in_bytes", "gauge", &[]),
    ("etcd_mvcc_db_total_size_in_use_in_bytes", "gauge", &[]),
    ("etcd_mvcc_put_total", "counter", &[]),
    ("etcd_mvcc_delete_total", "counter", &[]),
    ("etcd_mvcc_range_total", "counter", &[]),
    ("etcd_mvcc_txn_total", "counter", &[]),
    ("etcd_debugging_mvcc_keys_total", "gauge", &[]),
    ("etcd_debugging_mvcc_current_revision", "gauge", &[]),
    ("etcd_debugging_mvcc_compact_revision", "gauge", &[]),
    ("etcd_debugging_mvcc_watcher_total", "gauge", &[]),
    ("etcd_debugging_mvcc_watch_stream_total", "gauge", &[]),
    ("etcd_debugging_lease_granted_total", "counter", &[]),
    ("etcd_debugging_lease_revoked_total", "counter", &[]),
    ("etcd_debugging_lease_renewed_total", "counter", &[]),
    ("grpc_server_started_total", "counter", &["grpc_method", "grpc_service", "grpc_type"]),
    ("grpc_server_handled_total", "counter", &["grpc_code", "grpc_method", "grpc_service", "grpc_type"]),
    ("grpc_server_msg_received_total", "counter", &["grpc_method", "grpc_service", "grpc_type"]),
    ("grpc_server_msg_sent_total", "counter", &["grpc_method", "grpc_service", "grpc_type"]),
    ("process_resident_memory_bytes", "gauge", &[]),
    ("process_cpu_seconds_total", "counter", &[]),
    ("process_open_fds", "gauge", &[]),
    ("process_max_fds", "gauge", &[]),
    ("process_start_time_seconds", "gauge", &[]),
    ("process_virtual_memory_bytes", "gauge", &[]),
];

/// The families between members (present once a member has peers).
const PEER_FAMILIES: &[(&str, &str, &[&str])] = &[
    ("etcd_network_peer_round_trip_time_seconds", "histogram", &["To"]),
    ("etcd_network_peer_sent_bytes_total", "counter", &["To"]),
    ("etcd_network_peer_received_bytes_total", "counter", &["From"]),
];

/// A parsed text-format scrape: family types, and every sample by its full name with
/// labels (as written) to its value.
struct Scrape {
    types: BTreeMap<String, String>,
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Scrape {
    fn get(addr: SocketAddr) -> Scrape {
        let (status, _, body) = http_get(addr, "/metrics");
        assert_eq!(status, 200, "{body}");
        Scrape::parse(&body)
    }

    fn parse(body: &str) -> Scrape {
        let mut types = BTreeMap::new();
        let mut samples = Vec::new();
        for line in body.lines() {
            if let Some(t) = line.strip_prefix("# TYPE ") {
                let (name, kind) = t.split_once(' ').unwrap_or_else(|| panic!("bad TYPE line {line:?}"));
                types.insert(name.to_owned(), kind.to_owned());
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample {line:?}"));
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or_else(|e| panic!("{line:?}: {e}")),
            };
            let (name, labels) = match series.split_once('{') {
                None => (series, BTreeMap::new()),
                Some((name, rest)) => {
                    let labels = rest
                        .trim_end_matches('}')
                        .split("\",")
                        .map(|pair| {
                            let (k, v) = pair.split_once("=\"").unwrap_or_else(|| panic!("bad labels in {line:?}"));
                            (k.to_owned(), v.trim_end_matches('"').to_owned())
                        })
                        .collect();
                    (name, labels)
                }
            };
            samples.push((name.to_owned(), labels, value));
        }
        Scrape { types, samples }
    }

    /// The sum of the samples of `name` whose labels include `want`.
    fn value(&self, name: &str, want: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|(n, labels, _)| n == name && want.iter().all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v)))
            .map(|(_, _, v)| v)
            .sum()
    }

    /// Checks a family's type and the label names of its samples.
    fn check_family(&self, name: &str, kind: &str, labels: &[&str]) {
        assert_eq!(self.types.get(name).map(String::as_str), Some(kind), "# TYPE of {name}");
        let sample_names: Vec<String> = match kind {
            "histogram" => vec![format!("{name}_bucket"), format!("{name}_sum"), format!("{name}_count")],
            _ => vec![name.to_owned()],
        };
        let mut seen = 0;
        for (n, got, _) in &self.samples {
            if !sample_names.contains(n) {
                continue;
            }
            seen += 1;
            let mut names: Vec<&str> = got.keys().map(String::as_str).filter(|k| *k != "le").collect();
            names.sort_unstable();
            assert_eq!(names, labels, "label names of {n}");
            if n.ends_with("_bucket") {
                assert!(got.contains_key("le"), "{n} without le");
            }
        }
        assert!(seen > 0, "no sample of {name}");
    }
}

fn grpc(method: &str, service: &str, code: Option<&str>) -> Vec<(&'static str, String)> {
    let mut l = vec![("grpc_method", method.to_owned()), ("grpc_service", service.to_owned())];
    if let Some(code) = code {
        l.push(("grpc_code", code.to_owned()));
    }
    l
}

fn grpc_value(s: &Scrape, family: &str, labels: &[(&'static str, String)]) -> f64 {
    let want: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
    s.value(family, &want)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn families_and_values_move_with_the_work_done() {
    let metrics = common::free_addr();
    let server = Server::start_with(
        target_kind(),
        Options { extra_args: vec![format!("--listen-metrics-urls=http://{metrics}")], ..Options::default() },
    );
    let before = Scrape::get(metrics);
    for (name, kind, labels) in FAMILIES {
        before.check_family(name, kind, labels);
    }
    assert_eq!(before.value("etcd_server_has_leader", &[]), 1.0);
    assert_eq!(before.value("etcd_server_is_leader", &[]), 1.0);
    assert_eq!(before.value("etcd_server_quota_backend_bytes", &[]), 2147483648.0);
    // the handling-time histogram is `--metrics extensive` only
    assert!(!before.types.contains_key("grpc_server_handling_seconds"), "basic metrics have no handling histogram");

    let mut c = Client::connect([server.endpoint()], None).await.expect("connect");
    for i in 0..3 {
        c.put(format!("k{i}"), "v", None).await.expect("put");
    }
    c.get("k0", None).await.expect("range");
    let txn = Txn::new()
        .when([Compare::version("k0", CompareOp::Greater, 0)])
        .and_then([TxnOp::put("k0", "w", None), TxnOp::get("k1", None)]);
    assert!(c.txn(txn).await.expect("txn").succeeded());
    // a read-only txn (served as a read)
    c.txn(Txn::new().and_then([TxnOp::get("k0", None), TxnOp::get("k1", None)])).await.expect("read txn");
    c.delete("k2", None).await.expect("delete");
    let future = c.get("k0", Some(GetOptions::new().with_revision(1_000_000))).await;
    assert!(future.is_err(), "a future revision is refused");
    let (mut watch, end_watch) = open_watch(&server.endpoint(), b"w").await;
    c.put("w", "1", None).await.expect("put");
    let event = tokio::time::timeout(Duration::from_secs(10), watch.message()).await.expect("in time").expect("event");
    assert_eq!(event.map(|r| r.events.len()), Some(1));
    let lease = c.lease_grant(60, None).await.expect("grant").id();
    c.lease_revoke(lease).await.expect("revoke");

    let during = Scrape::get(metrics);
    assert_eq!(during.value("etcd_debugging_mvcc_watch_stream_total", &[]), 1.0);
    assert_eq!(during.value("etcd_debugging_mvcc_watcher_total", &[]), 1.0);
    // the client closes its side and goes
    drop(end_watch);
    drop(watch);

    // the backend commits behind the writes (every 100 ms): wait for one to be timed
    let commits = before.value("etcd_disk_backend_commit_duration_seconds_count", &[]);
    let after = wait_for("a backend commit after the writes", Duration::from_secs(10), || {
        let s = Scrape::get(metrics);
        (s.value("etcd_disk_backend_commit_duration_seconds_count", &[]) > commits).then_some(s)
    });
    let moved = |name: &str| after.value(name, &[]) - before.value(name, &[]);
    assert!(moved("etcd_mvcc_put_total") >= 5.0, "3 puts, one in a txn, one watched: {}", moved("etcd_mvcc_put_total"));
    assert!(moved("etcd_mvcc_range_total") >= 4.0, "a range, one in a txn, two in a read txn");
    assert!(moved("etcd_mvcc_txn_total") >= 2.0);
    assert!(moved("etcd_mvcc_delete_total") >= 1.0);
    assert_eq!(moved("etcd_debugging_lease_granted_total"), 1.0);
    assert_eq!(moved("etcd_debugging_lease_revoked_total"), 1.0);
    assert!(moved("etcd_disk_wal_fsync_duration_seconds_count") >= 7.0, "each write is fsynced");
    assert!(moved("etcd_server_proposals_committed_total") >= 7.0);
    assert!(moved("etcd_debugging_mvcc_current_revision") >= 6.0);
    assert!(after.value("etcd_server_proposals_applied_total", &[]) >= after.value("etcd_debugging_mvcc_current_revision", &[]));

    let kv = "etcdserverpb.KV";
    let moved_grpc = |family: &str, labels: Vec<(&'static str, String)>| grpc_value(&after, family, &labels) - grpc_value(&before, family, &labels);
    assert_eq!(moved_grpc("grpc_server_handled_total", grpc("Put", kv, Some("OK"))), 4.0);
    assert_eq!(moved_grpc("grpc_server_started_total", grpc("Put", kv, None)), 4.0);
    assert_eq!(moved_grpc("grpc_server_msg_received_total", grpc("Put", kv, None)), 4.0);
    assert_eq!(moved_grpc("grpc_server_msg_sent_total", grpc("Put", kv, None)), 4.0);
    assert_eq!(moved_grpc("grpc_server_handled_total", grpc("Txn", kv, Some("OK"))), 2.0);
    assert_eq!(moved_grpc("grpc_server_handled_total", grpc("Range", kv, Some("OutOfRange"))), 1.0);
    // the watch stream: started when opened, a request received, responses sent
    let watch = "etcdserverpb.Watch";
    assert_eq!(moved_grpc("grpc_server_started_total", grpc("Watch", watch, None)), 1.0);
    assert!(moved_grpc("grpc_server_msg_received_total", grpc("Watch", watch, None)) >= 1.0);
    assert!(moved_grpc("grpc_server_msg_sent_total", grpc("Watch", watch, None)) >= 2.0, "created and one event");
    assert!(after.samples.iter().any(|(n, l, _)| n == "grpc_server_handled_total"
        && l.get("grpc_method").map(String::as_str) == Some("Watch")
        && l.get("grpc_type").map(String::as_str) == Some("bidi_stream")));
    // the closed stream is counted as handled once, with the code it ended with (OK when the
    // server ended it after the client's half-close, Canceled when the client's reset came
    // first)
    let handled = wait_for("the closed watch stream counted", Duration::from_secs(10), || {
        let s = Scrape::get(metrics);
        let n = grpc_value(&s, "grpc_server_handled_total", &grpc("Watch", watch, None));
        (n >= 1.0).then_some(n)
    });
    assert_eq!(handled, 1.0);
    assert!(after.value("process_resident_memory_bytes", &[]) > 1e6);
    assert!(after.value("process_open_fds", &[]) > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extensive_metrics_time_every_call() {
    let metrics = common::free_addr();
    let server = Server::start_with(
        target_kind(),
        Options { extra_args: vec![format!("--listen-metrics-urls=http://{metrics}"), "--metrics=extensive".into()], ..Options::default() },
    );
    let before = Scrape::get(metrics);
    let family = "grpc_server_handling_seconds";
    before.check_family(family, "histogram", &["grpc_method", "grpc_service", "grpc_type"]);
    let mut c = Client::connect([server.endpoint()], None).await.expect("connect");
    for i in 0..3 {
        c.put(format!("k{i}"), "v", None).await.expect("put");
    }
    let future = c.get("k0", Some(GetOptions::new().with_revision(1_000_000))).await;
    assert!(future.is_err(), "a future revision is refused");
    let after = Scrape::get(metrics);
    let kv = "etcdserverpb.KV";
    let moved = |sample: &str, method: &str, le: Option<&str>| {
        let mut labels = grpc(method, kv, None);
        if let Some(le) = le {
            labels.push(("le", le.to_owned()));
        }
        grpc_value(&after, sample, &labels) - grpc_value(&before, sample, &labels)
    };
    // every call is timed, failed ones too, and each falls in the +Inf bucket
    assert_eq!(moved("grpc_server_handling_seconds_count", "Put", None), 3.0);
    assert_eq!(moved("grpc_server_handling_seconds_bucket", "Put", Some("+Inf")), 3.0);
    assert_eq!(moved("grpc_server_handling_seconds_count", "Range", None), 1.0);
    let sum = moved("grpc_server_handling_seconds_sum", "Put", None);
    assert!(sum > 0.0 && sum < 30.0, "three puts took {sum} s in all");
    // Prometheus' default buckets, as go-grpc-prometheus uses them
    let les: Vec<&str> = after
        .samples
        .iter()
        .filter(|(n, l, _)| n == "grpc_server_handling_seconds_bucket" && l.get("grpc_method").map(String::as_str) == Some("Put"))
        .filter_map(|(_, l, _)| l.get("le").map(String::as_str))
        .collect();
    assert_eq!(les, ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_health_serves_the_member() {
    let server = Server::start(target_kind());
    let mut health = health_client(&server.endpoint()).await;
    let r = health.check(HealthCheckRequest { service: String::new() }).await.expect("check");
    assert_eq!(r.into_inner().status(), ServingStatus::Serving);
    let unknown = health.check(HealthCheckRequest { service: "nope".into() }).await.expect_err("unknown service");
    assert_eq!(unknown.code(), tonic::Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_report_leadership_peers_and_losing_quorum() {
    let kind = target_kind();
    let opts = MemberOptions { metrics: true, ..MemberOptions::default() };
    let mut c = ProcCluster::start_with(kind, 3, &[(0, opts.clone()), (1, opts.clone()), (2, opts)]);
    let addr = |c: &ProcCluster, i: usize| c.metrics_addr(i).expect("a metrics URL");
    let mut client = Client::connect([c.endpoint(0)], None).await.expect("connect");
    client.put("k", "v", None).await.expect("put");

    // every member knows the leader; exactly one is it; peers exchange bytes and heartbeats
    let scrapes: Vec<Scrape> = (0..3)
        .map(|i| {
            wait_for("peer traffic and round trips reported", Duration::from_secs(20), || {
                let s = Scrape::get(addr(&c, i));
                let sent = s.value("etcd_network_peer_sent_bytes_total", &[]);
                let received = s.value("etcd_network_peer_received_bytes_total", &[]);
                let leader = s.value("etcd_server_is_leader", &[]) == 1.0;
                let rtts = s.value("etcd_network_peer_round_trip_time_seconds_count", &[]);
                // etcd 3.4 measures round trips with a prober every 30 s: checked on cairn
                let timed = rtts > 0.0 || !leader || kind != Kind::Cairn;
                (sent > 0.0 && received > 0.0 && timed).then_some(s)
            })
        })
        .collect();
    for s in &scrapes {
        assert_eq!(s.value("etcd_server_has_leader", &[]), 1.0);
        assert_eq!(s.value("etcd_server_is_learner", &[]), 0.0);
        for (name, family_kind, labels) in PEER_FAMILIES {
            if kind == Kind::Cairn || !name.contains("round_trip") {
                s.check_family(name, family_kind, labels);
            }
        }
        // the labels name the two other members, in hex
        let to: Vec<&String> = s.samples.iter().filter(|(n, _, _)| n == "etcd_network_peer_sent_bytes_total").filter_map(|(_, l, _)| l.get("To")).collect();
        // a follower talks to the leader, the leader to both followers
        let want = if s.value("etcd_server_is_leader", &[]) == 1.0 { 2 } else { 1 };
        assert!(to.len() >= want, "{to:?}");
        assert!(to.iter().all(|t| u64::from_str_radix(t, 16).is_ok()), "{to:?}");
    }
    let leaders = scrapes.iter().filter(|s| s.value("etcd_server_is_leader", &[]) == 1.0).count();
    assert_eq!(leaders, 1);

    if kind != Kind::Cairn {
        return; // etcd 3.4 has no /livez, /readyz, nor a health status that follows the leader
    }
    // quorum lost: the last member has no leader
    c.kill9(1);
    c.kill9(2);
    let last = addr(&c, 0);
    wait_for("no leader on the last member", Duration::from_secs(20), || {
        (Scrape::get(last).value("etcd_server_has_leader", &[]) == 0.0).then_some(())
    });
    assert_eq!(Scrape::get(last).value("etcd_server_is_leader", &[]), 0.0);
    // alive (kubelet must not restart it), not ready
    assert_eq!(http_get(last, "/health?serializable=true").0, 200);
    assert_eq!(http_get(last, "/livez").0, 200);
    let (status, _, body) = http_get(last, "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("[-]linearizable_read failed"), "{body}");
    assert_eq!(http_get(last, "/readyz?exclude=linearizable_read").0, 200);
    let mut health = health_client(&c.endpoint(0)).await;
    wait_for_status(&mut health, ServingStatus::NotServing).await;
}

/// Opens a Watch stream on `key` and waits for the watch's creation. Dropping the sender
/// returned ends the client's side of the stream.
async fn open_watch(endpoint: &str, key: &[u8]) -> (tonic::Streaming<WatchResponse>, oneshot::Sender<()>) {
    let url = if endpoint.starts_with("http") { endpoint.to_owned() } else { format!("http://{endpoint}") };
    let mut client = WatchClient::connect(url).await.expect("connect");
    let create = WatchCreateRequest { key: key.to_vec(), ..Default::default() };
    let first = WatchRequest { request_union: Some(RequestUnion::CreateRequest(create)) };
    let (end, ended) = oneshot::channel::<()>();
    let requests = futures::stream::iter([first]).chain(futures::stream::once(ended).filter_map(|_| async { None }));
    let mut inbound = client.watch(requests).await.expect("watch").into_inner();
    match tokio::time::timeout(Duration::from_secs(10), inbound.message()).await {
        Ok(Ok(Some(r))) if r.created => (inbound, end),
        other => panic!("watch not created: {other:?}"),
    }
}

async fn health_client(endpoint: &str) -> HealthClient<Channel> {
    let url = if endpoint.starts_with("http") { endpoint.to_owned() } else { format!("http://{endpoint}") };
    let channel = Channel::from_shared(url).expect("endpoint").connect().await.expect("connect");
    HealthClient::new(channel)
}

async fn wait_for_status(health: &mut HealthClient<Channel>, want: ServingStatus) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = health.check(HealthCheckRequest { service: String::new() }).await.expect("check").into_inner().status();
        if got == want {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "health status stayed {got:?}, want {want:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
