//! The member's metrics, with etcd 3.5's names, types, help texts, labels and buckets, so
//! that dashboards and alerts written for etcd work unchanged. Rendered in Prometheus' text
//! format by `/metrics` (`net/http.rs`).
//!
//! - `registry`: counters, gauges, histograms and labelled families, and the text format
//!   exactly as Go's client_golang writes it. A registry of our own rather than the
//!   `prometheus` crate: updates are the same atomics, but our rendering matches
//!   client_golang byte for byte (number formatting, family order, omitted empty
//!   families) and tests say so, and the crate's process collector needs `procfs` and its
//!   dependencies for six numbers `/proc` gives in a few lines (`process`).
//! - `process`: client_golang's `process_*` metrics from `/proc/self`.
//! - `grpc`: go-grpc-prometheus's `grpc_server_*` counters (and, with `--metrics extensive`,
//!   its handling-time histogram), as a tower layer around the
//!   client router.
//!
//! Where each value comes from:
//! - the Raft log reports through [`cairn_raft_node::NodeObserver`], implemented here: WAL
//!   fsyncs, leader changes, commit and apply indexes and pending proposals after each
//!   `Ready`, failed proposals, heartbeats that could not be queued, peer bytes and
//!   heartbeat round trips (`To`/`From` labels: the peer's ID in hex, as etcd);
//! - the state machine (`member/machine.rs`) counts applied puts, deletes, txns (a txn of
//!   more than one operation, as etcd's `txn_total`; the operations inside count as puts,
//!   deletes and ranges), lease grants and revocations (expiry included) and slow applies;
//!   the KV service counts served ranges and read-only txns (served without the log); the
//!   lessor counts renewals (on the leader, as etcd);
//! - the backend sync (`member/mod.rs`) times `etcd_disk_backend_commit_duration_seconds`;
//! - gauges of state (leader, store sizes, revisions, keys, watches) are set from the
//!   member when scraped, so they are never stale.
//!
//! Counting is lock-free on every hot path: atomics in series looked up once (the gRPC
//! layer's table is built at start; peers' series are looked up in a small map under a
//! read lock once per batch).

pub mod grpc;
pub mod process;
pub mod registry;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cairn_proto::etcdserverpb::response_op::Response;
use cairn_proto::etcdserverpb::TxnResponse;
use cairn_raft_node::NodeObserver;
use parking_lot::RwLock;

use self::grpc::GrpcMetrics;
use self::process::ProcessCollector;
use self::registry::{exponential_buckets, Collect, Counter, Family, Gauge, Histogram};
use crate::startup::config::ETCD_VERSION;

/// One unlabelled series (dereferences to it), with the family that renders it.
pub(crate) struct One<S> {
    family: Family<S>,
    series: Arc<S>,
}

impl<S: registry::Series> One<S> {
    fn new(name: &'static str, help: &'static str, make: impl Fn() -> S + Send + Sync + 'static) -> One<S> {
        let family = Family::new(name, help, &[], make);
        let series = family.with(&[]);
        One { family, series }
    }
}

impl<S> std::ops::Deref for One<S> {
    type Target = S;

    fn deref(&self) -> &S {
        &self.series
    }
}

fn counter(name: &'static str, help: &'static str) -> One<Counter> {
    One::new(name, help, Counter::default)
}

fn gauge(name: &'static str, help: &'static str) -> One<Gauge> {
    One::new(name, help, Gauge::default)
}

fn histogram(name: &'static str, help: &'static str, start: f64, count: usize) -> One<Histogram> {
    let bounds = exponential_buckets(start, 2.0, count);
    One::new(name, help, move || Histogram::new(bounds.clone()))
}

/// One peer's series, looked up once per peer.
struct PeerSeries {
    sent: Arc<Counter>,
    received: Arc<Counter>,
    rtt: Arc<Histogram>,
}

/// Every metric of a member (see the module docs). Shared as `Arc<Metrics>`.
pub struct Metrics {
    // etcd_server_*
    pub(crate) has_leader: One<Gauge>,
    pub(crate) is_leader: One<Gauge>,
    pub(crate) is_learner: One<Gauge>,
    leader_changes: One<Counter>,
    proposals_committed: One<Gauge>,
    proposals_applied: One<Gauge>,
    proposals_pending: One<Gauge>,
    proposals_failed: One<Counter>,
    heartbeat_send_failures: One<Counter>,
    pub(crate) slow_apply: One<Counter>,
    pub(crate) quota_backend_bytes: One<Gauge>,
    server_id: Family<Gauge>,
    version: Family<Gauge>,
    // etcd_disk_*
    wal_fsync: One<Histogram>,
    pub(crate) backend_commit: One<Histogram>,
    // etcd_network_*
    peer_rtt: Family<Histogram>,
    peer_sent: Family<Counter>,
    peer_received: Family<Counter>,
    /// Series by peer ID. Read-locked per batch; write-locked to add a peer.
    peers: RwLock<HashMap<u64, Arc<PeerSeries>>>,
    // etcd_mvcc_*
    pub(crate) db_total_size: One<Gauge>,
    pub(crate) db_total_size_in_use: One<Gauge>,
    pub(crate) puts: One<Counter>,
    pub(crate) deletes: One<Counter>,
    pub(crate) ranges: One<Counter>,
    pub(crate) txns: One<Counter>,
    // etcd_debugging_mvcc_*
    pub(crate) keys: One<Gauge>,
    pub(crate) current_revision: One<Gauge>,
    pub(crate) compact_revision: One<Gauge>,
    pub(crate) watchers: One<Gauge>,
    pub(crate) watch_streams: One<Gauge>,
    pub(crate) slow_watchers: One<Gauge>,
    // etcd_debugging_lease_*
    pub(crate) leases_granted: One<Counter>,
    pub(crate) leases_revoked: One<Counter>,
    pub(crate) leases_renewed: One<Counter>,
    /// grpc_server_*
    pub(crate) grpc: GrpcMetrics,
}

impl Metrics {
    /// Every metric at its start value; `etcd_server_version` set.
    pub fn new() -> Metrics {
        let m = Metrics {
            has_leader: gauge("etcd_server_has_leader", "Whether or not a leader exists. 1 is existence, 0 is not."),
            is_leader: gauge("etcd_server_is_leader", "Whether or not this member is a leader. 1 if is, 0 otherwise."),
            is_learner: gauge("etcd_server_is_learner", "Whether or not this member is a learner. 1 if is, 0 otherwise."),
            leader_changes: counter("etcd_server_leader_changes_seen_total", "The number of leader changes seen."),
            proposals_committed: gauge("etcd_server_proposals_committed_total", "The total number of consensus proposals committed."),
            proposals_applied: gauge("etcd_server_proposals_applied_total", "The total number of consensus proposals applied."),
            proposals_pending: gauge("etcd_server_proposals_pending", "The current number of pending proposals to commit."),
            proposals_failed: counter("etcd_server_proposals_failed_total", "The total number of failed proposals seen."),
            heartbeat_send_failures: counter(
                "etcd_server_heartbeat_send_failures_total",
                "The total number of leader heartbeat send failures (likely overloaded from slow disk).",
            ),
            slow_apply: counter(
                "etcd_server_slow_apply_total",
                "The total number of slow apply requests (likely overloaded from slow disk).",
            ),
            quota_backend_bytes: gauge("etcd_server_quota_backend_bytes", "Current backend storage quota size in bytes."),
            server_id: Family::new(
                "etcd_server_id",
                "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID.",
                &["server_id"],
                Gauge::default,
            ),
            version: Family::new(
                "etcd_server_version",
                "Which version is running. 1 for 'server_version' label with current version.",
                &["server_version"],
                Gauge::default,
            ),
            wal_fsync: histogram("etcd_disk_wal_fsync_duration_seconds", "The latency distributions of fsync called by WAL.", 0.001, 14),
            backend_commit: histogram(
                "etcd_disk_backend_commit_duration_seconds",
                "The latency distributions of commit called by backend.",
                0.001,
                14,
            ),
            peer_rtt: {
                let bounds = exponential_buckets(0.0001, 2.0, 16);
                Family::new("etcd_network_peer_round_trip_time_seconds", "Round-Trip-Time histogram between peers", &["To"], move || {
                    Histogram::new(bounds.clone())
                })
            },
            peer_sent: Family::new(
                "etcd_network_peer_sent_bytes_total",
                "The total number of bytes sent to peers.",
                &["To"],
                Counter::default,
            ),
            peer_received: Family::new(
                "etcd_network_peer_received_bytes_total",
                "The total number of bytes received from peers.",
                &["From"],
                Counter::default,
            ),
            peers: RwLock::new(HashMap::new()),
            db_total_size: gauge(
                "etcd_mvcc_db_total_size_in_bytes",
                "Total size of the underlying database physically allocated in bytes.",
            ),
            db_total_size_in_use: gauge(
                "etcd_mvcc_db_total_size_in_use_in_bytes",
                "Total size of the underlying database logically in use in bytes.",
            ),
            puts: counter("etcd_mvcc_put_total", "Total number of puts seen by this member."),
            deletes: counter("etcd_mvcc_delete_total", "Total number of deletes seen by this member."),
            ranges: counter("etcd_mvcc_range_total", "Total number of ranges seen by this member."),
            txns: counter("etcd_mvcc_txn_total", "Total number of txns seen by this member."),
            keys: gauge("etcd_debugging_mvcc_keys_total", "Total number of keys."),
            current_revision: gauge("etcd_debugging_mvcc_current_revision", "The current revision of store."),
            compact_revision: gauge("etcd_debugging_mvcc_compact_revision", "The revision of the last compaction in store."),
            watchers: gauge("etcd_debugging_mvcc_watcher_total", "Total number of watchers."),
            watch_streams: gauge("etcd_debugging_mvcc_watch_stream_total", "Total number of watch streams."),
            slow_watchers: gauge("etcd_debugging_mvcc_slow_watcher_total", "Total number of unsynced slow watchers."),
            leases_granted: counter("etcd_debugging_lease_granted_total", "The total number of granted leases."),
            leases_revoked: counter("etcd_debugging_lease_revoked_total", "The total number of revoked leases."),
            leases_renewed: counter("etcd_debugging_lease_renewed_total", "The number of renewed leases seen by the leader."),
            grpc: GrpcMetrics::new(),
        };
        m.version.with(&[ETCD_VERSION]).set(1.0);
        m
    }

    /// `--metrics extensive`: `grpc_server_handling_seconds` is measured and exported too.
    pub fn enable_extensive(&self) {
        self.grpc.enable_handling_time();
    }

    /// Sets `etcd_server_id` to this member's ID.
    pub fn set_member_id(&self, id: u64) {
        self.server_id.clear();
        self.server_id.with(&[&format!("{id:x}")]).set(1.0);
    }

    /// Every family in Prometheus' text format.
    pub fn render(&self) -> String {
        let ones: [&dyn Collect; 38] = [
            &self.has_leader.family,
            &self.is_leader.family,
            &self.is_learner.family,
            &self.leader_changes.family,
            &self.proposals_committed.family,
            &self.proposals_applied.family,
            &self.proposals_pending.family,
            &self.proposals_failed.family,
            &self.heartbeat_send_failures.family,
            &self.slow_apply.family,
            &self.quota_backend_bytes.family,
            &self.server_id,
            &self.version,
            &self.wal_fsync.family,
            &self.backend_commit.family,
            &self.peer_rtt,
            &self.peer_sent,
            &self.peer_received,
            &self.db_total_size.family,
            &self.db_total_size_in_use.family,
            &self.puts.family,
            &self.deletes.family,
            &self.ranges.family,
            &self.txns.family,
            &self.keys.family,
            &self.current_revision.family,
            &self.compact_revision.family,
            &self.watchers.family,
            &self.watch_streams.family,
            &self.slow_watchers.family,
            &self.leases_granted.family,
            &self.leases_revoked.family,
            &self.leases_renewed.family,
            &self.grpc.started,
            &self.grpc.handled,
            &self.grpc.msg_received,
            &self.grpc.msg_sent,
            &ProcessCollector,
        ];
        if self.grpc.handling_time_enabled() {
            let mut all = ones.to_vec();
            all.insert(ones.len() - 1, &self.grpc.handling);
            return registry::render(&all);
        }
        registry::render(&ones)
    }

    /// Counts a txn as etcd's mvcc counts it: the ranges, puts and deletes of the branch it
    /// ran (nested txns included), and the txn itself when it ran more than one operation.
    pub(crate) fn count_txn(&self, t: &TxnResponse) {
        let (ranges, puts, deletes) = txn_ops(t);
        self.ranges.add(ranges);
        self.puts.add(puts);
        self.deletes.add(deletes);
        if ranges + puts + deletes > 1 {
            self.txns.inc();
        }
    }

    fn peer(&self, id: u64) -> Arc<PeerSeries> {
        if let Some(p) = self.peers.read().get(&id) {
            return p.clone();
        }
        let label = format!("{id:x}");
        let series = Arc::new(PeerSeries {
            sent: self.peer_sent.with(&[&label]),
            received: self.peer_received.with(&[&label]),
            rtt: self.peer_rtt.with(&[&label]),
        });
        self.peers.write().entry(id).or_insert(series).clone()
    }
}

/// The (ranges, puts, deletes) a txn ran, nested txns included.
fn txn_ops(t: &TxnResponse) -> (u64, u64, u64) {
    let mut counts = (0, 0, 0);
    for op in &t.responses {
        match &op.response {
            Some(Response::ResponseRange(_)) => counts.0 += 1,
            Some(Response::ResponsePut(_)) => counts.1 += 1,
            Some(Response::ResponseDeleteRange(_)) => counts.2 += 1,
            Some(Response::ResponseTxn(inner)) => {
                let (r, p, d) = txn_ops(inner);
                counts = (counts.0 + r, counts.1 + p, counts.2 + d);
            }
            None => {}
        }
    }
    counts
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl NodeObserver for Metrics {
    fn wal_fsync(&self, took: Duration) {
        self.wal_fsync.observe(took.as_secs_f64());
    }

    fn leader_changed(&self, leader: u64) {
        // etcd counts a change to a new leader, not the loss of one
        if leader != 0 {
            self.leader_changes.inc();
        }
    }

    fn progress(&self, committed: u64, applied: u64, pending_proposals: usize) {
        self.proposals_committed.set(committed as f64);
        self.proposals_applied.set(applied as f64);
        self.proposals_pending.set(pending_proposals as f64);
    }

    fn proposal_failed(&self) {
        self.proposals_failed.inc();
    }

    fn heartbeat_send_failed(&self) {
        self.heartbeat_send_failures.inc();
    }

    fn peer_sent(&self, to: u64, bytes: usize) {
        self.peer(to).sent.add(bytes as u64);
    }

    fn peer_received(&self, from: u64, bytes: usize) {
        self.peer(from).received.add(bytes as u64);
    }

    fn peer_round_trip(&self, to: u64, rtt: Duration) {
        self.peer(to).rtt.observe(rtt.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_have_etcds_types_and_move() {
        let m = Metrics::new();
        m.set_member_id(0x2e12_59d4_15f2_a040);
        m.wal_fsync(Duration::from_micros(1500));
        m.leader_changed(0);
        m.leader_changed(7);
        m.peer_sent(0xab, 100);
        m.peer_sent(0xab, 20);
        m.peer_received(0xcd, 5);
        m.peer_round_trip(0xab, Duration::from_micros(300));
        m.progress(12, 11, 1);
        let text = m.render();
        for line in [
            "# TYPE etcd_server_proposals_committed_total gauge",
            "etcd_server_proposals_committed_total 12",
            "etcd_server_proposals_applied_total 11",
            "etcd_server_proposals_pending 1",
            "etcd_server_leader_changes_seen_total 1",
            "etcd_server_id{server_id=\"2e1259d415f2a040\"} 1",
            "# TYPE etcd_disk_wal_fsync_duration_seconds histogram",
            "etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.001\"} 0",
            "etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.002\"} 1",
            "etcd_disk_wal_fsync_duration_seconds_count 1",
            "etcd_network_peer_sent_bytes_total{To=\"ab\"} 120",
            "etcd_network_peer_received_bytes_total{From=\"cd\"} 5",
            "etcd_network_peer_round_trip_time_seconds_bucket{To=\"ab\",le=\"0.0004\"} 1",
            "# TYPE process_cpu_seconds_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        // a peer's series are found again, not made twice
        assert_eq!(text.matches("etcd_network_peer_sent_bytes_total{To=\"ab\"}").count(), 1);
        let names: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).map(|l| l.split(' ').next().unwrap_or("")).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted, "families sorted by name");
    }
}
