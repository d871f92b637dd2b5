//! A Raft member: the store, its watch hub and member table as the state machine of a
//! `RaftNode`, the gRPC peer transport, the proposer, the lessor that expires leases while
//! this member leads, and the tasks that keep them in step. The `cairn` binary serves one
//! over gRPC; the embedded engine (`crate::engine`) is a single member without listeners.
//! Both run this same code on the same data layout.
//!
//! ```text
//!  <data-dir>/member/cairn     the store: MVCC data, applied index, member table
//!  <data-dir>/member/raft      the Raft log (WAL segments) and received snapshots
//!  <data-dir>/member/identity  member and cluster ID (see `bootstrap.rs`)
//! ```
//!
//! Start-up (like etcd's bootstrap):
//! - a data dir with an identity file restarts that member; the log is replayed above
//!   what the store holds;
//! - `--initial-cluster-state new`: this member's ID is derived from its peer URLs and
//!   the token, the cluster ID from every initial member's; the log starts with them as
//!   voters;
//! - `--initial-cluster-state existing`: the member was added with MemberAdd; the cluster
//!   and this member's ID (the one MemberAdd chose) are read from a running member's
//!   Cluster service on its peer URL, and the log comes from the leader.
//! - a restarting member with `--experimental-initial-corrupt-check` compares its HashKV
//!   with its peers' before its node starts, and refuses to start on a mismatch
//!   (`corrupt.rs`).
//!
//! The node runs on its own thread (its WAL writes and fsyncs block); the transport's
//! connections and the other tasks run on the caller's runtime.
//!
//! Modules: `corrupt` (the initial and periodic corruption checks, raising CORRUPT),
//! `auto_compact` (the leader's `--auto-compaction-*` compactions),
//! `machine` (the store as the Raft state machine), `proposer` (the write-path
//! trait) and `raft_proposer` (its implementation, with the backend quota of `quota`), `table` (the replicated member table),
//! `identity` (IDs and response headers), `control` (membership and leadership for the
//! Cluster service) and `raft_control`, `lessor` (lease expiry on the leader),
//! `leader_forward` (lease and membership requests a follower sends to the leader), `bootstrap`.

pub mod auto_compact;
pub mod bootstrap;
pub mod control;
pub mod corrupt;
pub mod etcd_import;
pub mod identity;
pub mod leader_forward;
pub mod lessor;
pub mod machine;
pub mod proposer;
pub mod quota;
pub mod raft_control;
mod reconfig;
pub mod raft_proposer;
pub mod role;
pub mod table;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cairn_proto::cairnpb::internal_request::Request;
use cairn_proto::cairnpb::{InternalRequest, MemberAttrRequest, MemberTable};
use cairn_proto::etcdserverpb::cluster_server::ClusterServer;
use cairn_proto::etcdserverpb::lease_server::LeaseServer;
use cairn_raft_node::node::IntervalTicker;
use cairn_raft_node::transport::{GrpcTransport, PeerService};
use cairn_raft_node::{IdGen, NodeConfig, NodeHandle, Observer, PeerInbox, RaftNode};
use cairn_storage::watch::{HubConfig, WatchHub};
use cairn_storage::{ApplyResponse, StorageEngine, Store, StoreConfig};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use self::bootstrap::{fetch_cluster, read_identity, write_identity, Identity};
use self::identity::{compute_cluster_id, InitialMember, Membership, RaftTerm};
use self::leader_forward::LeaderForwarder;
use self::lessor::{Lessor, LessorConfig};
use crate::auth::SimpleTokens;
use self::machine::{stored_members, Output, RaftMachine};
use self::raft_control::RaftControl;
use self::quota::Quota;
use self::raft_proposer::RaftProposer;
use self::role::Role;
use self::table::Members;
use crate::api::cluster::ClusterService;
use crate::api::hash_kv::PeerHashService;
use crate::api::lease::LeaseService;
use crate::clock::{Clock, SystemClock};
use crate::error::ServerError;
use crate::metrics::Metrics;
use crate::net::http::MemberHealth;

/// Limits and tuning of a member (the binary fills them from the flags; the embedded
/// engine uses the defaults, which are etcd's).
#[derive(Clone)]
pub struct MemberOptions {
    /// `--max-txn-ops`.
    pub max_txn_ops: usize,
    /// `--max-request-bytes`.
    pub max_request_bytes: usize,
    /// Largest watch response before `fragment` splits it.
    pub max_watch_response_bytes: usize,
    /// Smallest lease TTL granted, in seconds.
    pub min_lease_ttl: i64,
    /// Time for lease expiry.
    pub clock: Arc<dyn Clock>,
    /// Lease expiry tuning.
    pub lessor: LessorConfig,
    /// The storage engine asked for; `None`: the one that wrote the data folder, or the
    /// default (cairn's page store) for a new folder. Naming the other engine of an
    /// existing folder is an error (see `cairn_storage::engine`).
    pub storage_engine: Option<StorageEngine>,
    /// `--auth-token-ttl`: seconds a simple token lives after its last use.
    pub token_ttl_secs: u64,
    /// `--experimental-warning-apply-duration`: applying one entry for longer logs
    /// "apply request took too long".
    pub warn_apply_duration: Duration,
    /// `--quota-backend-bytes`: 0 is etcd's default (2 GiB), negative disables it.
    pub quota_backend_bytes: i64,
    /// Where the member's metrics are counted (`/metrics` renders them).
    pub metrics: Arc<Metrics>,
    /// `--strict-reconfig-check`: refuse membership changes that would lose quorum.
    pub strict_reconfig_check: bool,
    /// `--experimental-initial-corrupt-check`: compare HashKV with the peers before a
    /// restarting member starts (`corrupt.rs`).
    pub initial_corrupt_check: bool,
    /// `--experimental-corrupt-check-time`: how often the leader compares HashKV with the
    /// other members (`corrupt.rs`); zero: never.
    pub corrupt_check_interval: Duration,
    /// `--auto-compaction-*`: the history the leader keeps when it compacts by itself
    /// (`auto_compact.rs`); `None`: it does not.
    pub auto_compaction: Option<auto_compact::Retention>,
}

impl Default for MemberOptions {
    /// etcd's defaults.
    fn default() -> Self {
        MemberOptions {
            max_txn_ops: cairn_storage::validate::DEFAULT_MAX_TXN_OPS,
            max_request_bytes: 1536 * 1024,
            max_watch_response_bytes: 1536 * 1024 + 512 * 1024,
            min_lease_ttl: 2,
            clock: Arc::new(SystemClock::default()),
            lessor: LessorConfig::default(),
            storage_engine: None,
            token_ttl_secs: crate::auth::DEFAULT_TOKEN_TTL_SECS,
            warn_apply_duration: Duration::from_millis(100),
            quota_backend_bytes: 0,
            metrics: Arc::new(Metrics::new()),
            strict_reconfig_check: true,
            initial_corrupt_check: false,
            corrupt_check_interval: Duration::ZERO,
            auto_compaction: None,
        }
    }
}

/// What a Raft member is started with (from the flags).
pub struct MemberSetup {
    /// `--data-dir`.
    pub data_dir: PathBuf,
    /// `--name`.
    pub name: String,
    /// `--advertise-client-urls`.
    pub client_urls: Vec<String>,
    /// `--initial-advertise-peer-urls`.
    pub peer_urls: Vec<String>,
    /// `--initial-cluster`, with derived IDs.
    pub initial: Vec<InitialMember>,
    /// `--initial-cluster-token`.
    pub token: String,
    /// `--initial-cluster-state existing`.
    pub join_existing: bool,
    /// `--heartbeat-interval` (ms): one Raft tick.
    pub heartbeat_ms: u64,
    /// `--election-timeout` (ms).
    pub election_ms: u64,
    /// `--snapshot-count`.
    pub snapshot_count: u64,
    /// Client TLS for connections to peers (`--peer-*` flags), if any.
    pub peer_tls: Option<cairn_raft_node::transport::PeerTls>,
    /// `--wal-dir`: the Raft log's folder when not `<data-dir>/member/raft`.
    pub wal_dir: Option<PathBuf>,
    /// `--force-new-cluster`: start as a one-member cluster with this member's data.
    pub force_new_cluster: bool,
    /// Limits and tuning.
    pub options: MemberOptions,
}

/// A running Raft member (see the module docs).
pub struct Member {
    /// The MVCC store.
    pub store: Arc<Store>,
    /// The watch hub.
    pub hub: WatchHub,
    /// The write path.
    pub proposer: Arc<RaftProposer>,
    /// Lease expiry (active while this member leads).
    pub lessor: Arc<Lessor<RaftProposer>>,
    /// Membership and leadership.
    pub control: Arc<RaftControl>,
    /// This member, as response headers show it.
    pub membership: Arc<Membership>,
    /// Services for the peer listeners: the Raft transport, Cluster, Lease (forwarded
    /// requests) and PeerHash (the corruption checks).
    pub peer_routes: tonic::service::Routes,
    /// Forwards lease requests to the leader.
    pub leader_forward: Arc<LeaderForwarder>,
    /// The member table.
    pub members: Arc<Members>,
    /// The member's metrics.
    pub metrics: Arc<Metrics>,
    /// The simple tokens this member knows (added as logins are applied).
    pub tokens: Arc<SimpleTokens>,
    /// Learner or voter, and the leader it knows, for the services' checks.
    pub role: Role,
    /// Says why this member must stop, once it must: it was removed from the cluster, or
    /// its node failed (a sticky WAL or store error); both stop the server, as in etcd.
    pub stop: watch::Receiver<Option<MemberStop>>,
    handle: NodeHandle<Output>,
    /// Why the node stopped applying, once it failed (a sticky WAL or store error).
    failed: Arc<OnceLock<Arc<str>>>,
    node_thread: Option<std::thread::JoinHandle<()>>,
    stop_tasks: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// Why a member stops on its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberStop {
    /// MemberRemove removed it.
    Removed,
    /// Its node failed and applies nothing more.
    Failed(Arc<str>),
}

impl Member {
    /// Opens (or bootstraps, or joins) the member described by `setup`; see the module docs.
    pub async fn open(setup: MemberSetup) -> Result<Member, ServerError> {
        let member_dir = setup.data_dir.join("member");
        std::fs::create_dir_all(&member_dir).map_err(|source| ServerError::DataDir { path: member_dir.clone(), source })?;
        let existing = read_identity(&setup.data_dir)?;
        // a folder etcd wrote, never started by cairn: imported, or refused (etcd_import.rs)
        let imported = match existing.is_none() && etcd_import::holds_etcd_data(&setup.data_dir) {
            true => Some(import_etcd_folder(&setup, member_dir.join("cairn")).await?),
            false => None,
        };
        let store = open_store(member_dir.join("cairn"), &setup.options).await?;
        let stored = stored_members(&store).map_err(|e| ServerError::Identity(format!("stored member table: {e}")))?;

        let (identity, table, bootstrap) = match (existing, imported) {
            (Some(id), _) => {
                let table = match stored {
                    Some(t) => t,
                    None => Members::initial(id.cluster_id, &setup.initial),
                };
                (id, table, None)
            }
            (None, Some(etcd)) => {
                // etcd's member and cluster IDs, a new log bootstrapped with etcd's members
                // (one, or a restored cluster's: etcd_import.rs)
                let id = Identity { member_id: etcd.member_id, cluster_id: etcd.cluster_id };
                let initial: Vec<InitialMember> = etcd
                    .members
                    .iter()
                    .map(|m| InitialMember {
                        name: if m.id == etcd.member_id { setup.name.clone() } else { m.name.clone() },
                        peer_urls: m.peer_urls.clone(),
                        id: m.id,
                    })
                    .collect();
                let ids = initial.iter().map(|m| m.id).collect();
                (id, Members::initial(id.cluster_id, &initial), Some(ids))
            }
            (None, None) if setup.join_existing => {
                let (id, table) = fetch_cluster(&setup).await?;
                (id, stored.unwrap_or(table), None)
            }
            (None, None) => {
                let me = setup
                    .initial
                    .iter()
                    .find(|m| m.name == setup.name)
                    .ok_or_else(|| ServerError::Identity(format!("{:?} is not in --initial-cluster", setup.name)))?;
                let ids: Vec<u64> = setup.initial.iter().map(|m| m.id).collect();
                let id = Identity { member_id: me.id, cluster_id: compute_cluster_id(&ids) };
                (id, stored.unwrap_or_else(|| Members::initial(id.cluster_id, &setup.initial)), Some(ids))
            }
        };
        if existing.is_none() {
            write_identity(&setup.data_dir, identity)?;
        }
        let me = identity.member_id;
        info!(member_id = %format!("{me:016x}"), cluster_id = %format!("{:016x}", identity.cluster_id), "raft member");
        // etcd's request timeout (5 s + 2 election timeouts) bounds each peer's HashKV
        let peer_hashes = || {
            let timeout = Duration::from_millis(5_000 + 2 * setup.election_ms);
            corrupt::PeerHashes::new(me, setup.peer_tls.clone(), timeout)
        };
        if existing.is_some() && setup.options.initial_corrupt_check {
            // before the node starts and before peers or clients are served, as etcd's
            corrupt::initial_check(me, store.clone(), &table, &peer_hashes()).await?;
        }

        let hub = WatchHub::new(
            store.clone(),
            HubConfig { max_request_bytes: setup.options.max_watch_response_bytes, ..HubConfig::default() },
        )
        .map_err(ServerError::WatchHub)?;
        let members = Arc::new(Members::new(table.clone()));

        let metrics = setup.options.metrics.clone();
        metrics.set_member_id(me);
        metrics.quota_backend_bytes.set(match setup.options.quota_backend_bytes {
            0 => quota::DEFAULT_QUOTA_BYTES as f64,
            bytes => bytes as f64,
        });
        let inbox = PeerInbox::with_observer(Observer::new(metrics.clone()));
        let runtime = tokio::runtime::Handle::current();
        let transport = GrpcTransport::new(me, identity.cluster_id, inbox.mailbox(), setup.peer_tls.clone(), runtime);
        update_peers(&transport, me, &table);

        let lessor_cell: Arc<OnceLock<Arc<Lessor<RaftProposer>>>> = Arc::new(OnceLock::new());
        let (stop_tx, stop_rx) = watch::channel(None);
        let stop_tx = Arc::new(stop_tx);
        let removed_tx = stop_tx.clone();
        let hook_transport = transport.clone();
        let on_members = Box::new(move |t: &MemberTable| {
            update_peers(&hook_transport, me, t);
            if t.removed.contains(&me) {
                removed_tx.send_if_modified(|s| s.is_none() && s.replace(MemberStop::Removed).is_none());
            }
        });
        let grant_cell = lessor_cell.clone();
        let on_grant = Box::new(move |id: i64, ttl: i64| {
            if let Some(l) = grant_cell.get() {
                l.observe_grant(id, ttl);
            }
        });
        let tokens = Arc::new(SimpleTokens::new(setup.options.token_ttl_secs, setup.options.clock.clone()));
        let machine = RaftMachine::new(store.clone(), hub.clone(), members.clone(), on_members, on_grant)
            .warn_apply_after(setup.options.warn_apply_duration)
            .with_metrics(metrics.clone())
            .with_tokens(tokens.clone());

        let tick = setup.heartbeat_ms.max(1);
        let mut cfg = NodeConfig::new(me);
        cfg.heartbeat_tick = 1;
        cfg.election_tick = usize::try_from((setup.election_ms / tick).max(2)).unwrap_or(10);
        cfg.snapshot_count = setup.snapshot_count.max(1);
        cfg.catchup_entries = cfg.snapshot_count.min(5_000);
        // answer requests within etcd's request timeout (5 s + 2 election timeouts)
        cfg.request_timeout_ticks = (5_000 + 2 * setup.election_ms) / tick;
        // request ids: this member's prefix, then the wall clock in ms (etcd's scheme; the
        // node also starts above every id of its own still in the log, see `IdGen`)
        let unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        cfg.request_id_clock_ms = unix_ms;
        let raft_dir = setup.wal_dir.clone().unwrap_or_else(|| member_dir.join("raft"));
        if setup.force_new_cluster {
            force_new_cluster(&raft_dir, cfg.wal.clone(), me, identity.cluster_id).await?;
        }
        let peer_mailbox = inbox.mailbox();
        let node = {
            let raft_dir = raft_dir.clone();
            let bootstrap = bootstrap.clone();
            tokio::task::spawn_blocking(move || {
                RaftNode::open_with_inbox(cfg, &raft_dir, machine, transport, bootstrap.as_deref(), inbox)
            })
            .await
            .map_err(|e| ServerError::ProposerThread(std::io::Error::other(e)))?
            .map_err(|e| ServerError::Raft(e.to_string()))?
        };
        let handle = node.handle();
        let failed: Arc<OnceLock<Arc<str>>> = Arc::new(OnceLock::new());
        let halt = Halt { failed: failed.clone(), stop: stop_tx.clone() };
        let halt_in_thread = halt.clone();
        let node_thread = std::thread::Builder::new()
            .name("cairn-raft".into())
            // it decodes and applies nested Txns (see THREAD_STACK_BYTES)
            .stack_size(crate::startup::run::THREAD_STACK_BYTES)
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        error!(error = %e, "cannot start the raft thread's runtime");
                        return;
                    }
                };
                match rt.block_on(async move { node.run(IntervalTicker::new(Duration::from_millis(tick))).await }) {
                    Ok(_) => info!("raft node stopped"),
                    Err(e) => {
                        error!(error = %e, "raft node failed; this member stops applying");
                        halt_in_thread.halt(format!("raft node failed: {e}"));
                    }
                }
            })
            .map_err(ServerError::ProposerThread)?;
        let sole_voter = match &bootstrap {
            Some(ids) => ids.len() == 1,
            None => matches!(table.members.as_slice(), [m] if m.id == me && !m.is_learner),
        };
        if sole_voter {
            // a one-member cluster need not wait an election timeout (at bootstrap or restart)
            handle.campaign();
        }

        let role = Role::new(me, members.clone(), &handle, Duration::from_millis(setup.election_ms));
        let quota = Quota::from_flag(setup.options.quota_backend_bytes);
        let proposer = Arc::new(
            RaftProposer::new(handle.clone(), setup.options.max_request_bytes, role.clone()).with_quota(quota, store.clone(), me),
        );
        let lessor = Arc::new(Lessor::new(
            store.clone(),
            proposer.clone(),
            setup.options.clock.clone(),
            setup.options.lessor.clone(),
            // lease IDs: unique per member and start, like request ids
            IdGen::new(me, unix_ms).next_id(),
        ).with_metrics(metrics.clone()));
        let _ = lessor_cell.set(lessor.clone());
        let membership = Arc::new(Membership {
            cluster_id: identity.cluster_id,
            member_id: me,
            name: setup.name.clone(),
            peer_urls: setup.peer_urls.clone(),
            client_urls: setup.client_urls.clone(),
            raft_term: RaftTerm::new(handle.leader().term),
        });
        let control = Arc::new(RaftControl::new(
            me,
            setup.token.clone(),
            handle.clone(),
            members.clone(),
            setup.options.strict_reconfig_check.then_some(setup.election_ms / tick),
        ));
        let peer_service = PeerService::new(me, identity.cluster_id, peer_mailbox, 8 << 30);
        let leader_forward =
            Arc::new(LeaderForwarder::new(me, handle.clone(), members.clone(), setup.peer_tls.clone()));
        let peer_lease = LeaseService::new(store.clone(), lessor.clone(), membership.clone())
            .with_forwarder(Some(leader_forward.clone()));
        let peer_routes = tonic::service::Routes::new(peer_service.into_server())
            .add_service(ClusterServer::new(ClusterService::new(membership.clone(), control.clone())))
            .add_service(LeaseServer::new(peer_lease))
            .add_service(PeerHashService::server(store.clone(), membership.clone()));

        let (stop_tasks, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(follow_leadership(handle.clone(), me, lessor.clone(), membership.raft_term.clone(), stopped.clone())));
        tasks.push(tokio::spawn(lessor.clone().run(stopped.clone())));
        if !setup.options.corrupt_check_interval.is_zero() {
            let monitor = corrupt::CorruptionMonitor::new(
                me,
                store.clone(),
                members.clone(),
                proposer.clone(),
                peer_hashes(),
                setup.options.corrupt_check_interval,
            );
            tasks.push(tokio::spawn(monitor.run(stopped.clone())));
        }
        if let Some(retention) = setup.options.auto_compaction {
            let revision_of = store.clone();
            let leader_of = proposer.clone();
            let compactor = auto_compact::AutoCompactor::new(
                retention,
                proposer.clone(),
                move || revision_of.revision(),
                move || leader_of.handle().leader().id == me,
            );
            tasks.push(tokio::spawn(compactor.run(stopped.clone())));
        }
        tasks.push(tokio::spawn(sync_backend_behind(store.clone(), halt, metrics.clone(), stopped.clone())));
        tasks.push(tokio::spawn(publish_attributes(
            proposer.clone(),
            members.clone(),
            MemberAttrRequest { id: me, name: setup.name.clone(), client_urls: setup.client_urls.clone(), peer_urls: Vec::new() },
            stopped,
        )));
        Ok(Member {
            store,
            hub,
            proposer,
            lessor,
            control,
            membership,
            peer_routes,
            leader_forward,
            tokens,
            members,
            metrics,
            role,
            stop: stop_rx,
            handle,
            failed,
            node_thread: Some(node_thread),
            stop_tasks,
            tasks,
        })
    }

    /// Resolves once a leader exists and this member's name and client URLs are in the
    /// replicated member table (etcd's "published": MemberList then shows them).
    pub fn joined(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let members = self.members.clone();
        let (me, name, urls) = (self.membership.member_id, self.membership.name.clone(), self.membership.client_urls.clone());
        let handle = self.handle.clone();
        async move {
            loop {
                let published = members.get(me).is_some_and(|m| m.name == name && m.client_urls == urls);
                if published && handle.leader().id != 0 {
                    // etcd's start-up milestones, which harnesses and scripts wait for
                    info!(
                        local_member_id = %format!("{me:x}"),
                        local_member_attributes = %format!("{{Name:{name} ClientURLs:[{}]}}", urls.join(" ")),
                        "published local member to cluster through raft"
                    );
                    info!(cluster_version = CLUSTER_VERSION, "enabled capabilities for version");
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// The member's health for `/health` and `/metrics`: a failed node, and the leader.
    pub fn health(&self) -> Arc<dyn Fn() -> MemberHealth + Send + Sync> {
        let handle = self.handle.clone();
        let failed = self.failed.clone();
        let me = self.membership.member_id;
        let members = self.members.clone();
        Arc::new(move || {
            let leader = handle.leader().id;
            let is_learner = members.get(me).is_some_and(|m| m.is_learner);
            MemberHealth { failed: failed.get().cloned(), has_leader: leader != 0, is_leader: leader == me, is_learner }
        })
    }

    /// The leader as this member knows it, as it changes.
    pub fn leader_watch(&self) -> watch::Receiver<cairn_raft_node::LeaderInfo> {
        self.handle.leader_watch()
    }

    /// Hands leadership over (see [`Member::hand_over_leadership`]), stops the tasks, then
    /// the node (its log holds everything acknowledged).
    pub async fn shutdown(mut self) {
        self.hand_over_leadership().await;
        let _ = self.stop_tasks.send(true);
        for t in self.tasks.drain(..) {
            if let Err(e) = t.await {
                warn!(error = %e, "a raft member task failed");
            }
        }
        self.handle.stop();
        if let Some(t) = self.node_thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        if let Err(e) = self.store.sync_backend() {
            warn!(error = %e, "syncing the store at shutdown failed (the log replays it)");
        }
    }
}

impl Member {
    /// etcd's `TransferLeadership` on stop: a leader that is told to stop first hands its
    /// leadership to the voter holding the most of its log (ties: the lowest id), so the
    /// cluster does not wait an election timeout without a leader (clients see no gap in a
    /// rolling restart). A member that failed or was removed just stops; a failed transfer
    /// is logged and the member stops anyway, as etcd's. The wait ends as soon as this
    /// member no longer leads (see [`RaftControl::hand_over`]).
    async fn hand_over_leadership(&self) {
        let me = self.membership.member_id;
        if self.failed.get().is_some() || self.stop.borrow().is_some() {
            return;
        }
        let Ok(status) = self.handle.status().await else { return };
        let local = format!("{me:x}");
        if status.leader.id != me {
            info!(local_member_id = %local, "skipped leadership transfer; local server is not leader");
            return;
        }
        let transferee = status
            .progress
            .iter()
            .filter(|(id, _)| *id != me && status.conf.voters.contains(id))
            .max_by_key(|(id, matched)| (*matched, std::cmp::Reverse(*id)))
            .map(|(id, _)| *id);
        let Some(transferee) = transferee else {
            info!(local_member_id = %local, "skipped leadership transfer for single voting member cluster");
            return;
        };
        let target = format!("{transferee:x}");
        info!(local_member_id = %local, current_leader_member_id = %local, transferee_member_id = %target, "leadership transfer starting");
        match self.control.hand_over(transferee).await {
            Ok(new) if new == transferee => info!(local_member_id = %local, old_leader_member_id = %local, new_leader_member_id = %target, "leadership transfer finished"),
            Ok(0) => warn!(local_member_id = %local, transferee_member_id = %target, "leadership transfer ended with no leader (peers gone?); stopping"),
            Ok(new) => info!(local_member_id = %local, transferee_member_id = %target, new_leader_member_id = %format!("{new:x}"), "leadership moved to another member"),
            Err(e) => warn!(local_member_id = %local, error = %e, "leadership transfer failed"),
        }
    }
}

/// The cluster version cairn's members run (etcd's major.minor of [`crate::startup::config::ETCD_VERSION`]).
pub const CLUSTER_VERSION: &str = "3.5";

/// How often the store's backend catches up with what was applied (etcd commits its
/// backend every 100 ms, `--backend-batch-interval`).
const BACKEND_SYNC_INTERVAL: Duration = Duration::from_millis(100);

/// Makes the store's backend durable behind the apply thread, so its files (and the sizes
/// Status and `/metrics` report, and the memory dirty pages hold) follow the log closely.
/// Runs on a blocking thread, never on the Raft thread; durability of acknowledged writes
/// does not depend on it (the Raft log holds them). A failure is sticky in the store, and
/// the member halts at once (a follower may receive no entry to apply for a long time, and
/// must not keep reporting itself healthy).
/// Each sync is timed as etcd's `etcd_disk_backend_commit_duration_seconds`.
async fn sync_backend_behind(store: Arc<Store>, halt: Halt, metrics: Arc<Metrics>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(BACKEND_SYNC_INTERVAL) => {}
            _ = stop.changed() => return,
        }
        if store.applied_index() <= store.durable_index() {
            continue;
        }
        let s = store.clone();
        let timed = metrics.clone();
        let sync = move || {
            let started = std::time::Instant::now();
            let synced = s.sync_backend();
            timed.backend_commit.observe(started.elapsed().as_secs_f64());
            synced
        };
        match tokio::task::spawn_blocking(sync).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                error!(error = %e, "syncing the store's backend failed; this member stops applying");
                halt.halt(format!("syncing the store's backend failed: {e}"));
                return;
            }
            Err(e) => {
                error!(error = %e, "the backend sync task failed; this member stops applying");
                halt.halt(format!("the backend sync task failed: {e}"));
                return;
            }
        }
    }
}

/// Stops a member whose node or store failed: `/health` and `/metrics` report why, and the
/// server stops (as etcd's does when its backend commit fails). The first reason wins.
#[derive(Clone)]
struct Halt {
    failed: Arc<OnceLock<Arc<str>>>,
    stop: Arc<watch::Sender<Option<MemberStop>>>,
}

impl Halt {
    fn halt(&self, reason: String) {
        let reason: Arc<str> = Arc::from(reason);
        let _ = self.failed.set(reason.clone());
        self.stop.send_if_modified(|s| s.is_none() && s.replace(MemberStop::Failed(reason)).is_none());
    }
}

/// `--force-new-cluster`: rewrites the member's Raft log into a one-member cluster's (see
/// `cairn_raft_node::WalStorage::force_new_cluster`) before the node opens it.
async fn force_new_cluster(raft_dir: &Path, wal: cairn_raft_node::WalOptions, me: u64, cluster_id: u64) -> Result<(), ServerError> {
    let dir = raft_dir.to_path_buf();
    let forced = tokio::task::spawn_blocking(move || cairn_raft_node::force_new_cluster(&dir, wal, me))
        .await
        .map_err(|e| ServerError::ProposerThread(std::io::Error::other(e)))?
        .map_err(|e| ServerError::Raft(e.to_string()))?;
    match forced {
        None => info!("--force-new-cluster: no earlier Raft state, starting a new cluster"),
        Some(removed) => warn!(
            cluster_id = %format!("{cluster_id:x}"),
            local_member_id = %format!("{me:x}"),
            removed_member_ids = ?removed.iter().map(|id| format!("{id:x}")).collect::<Vec<_>>(),
            "forcing restart member: a one-member cluster with this member's data (remove --force-new-cluster before the next start)"
        ),
    }
    Ok(())
}

/// Tells the transport where every other member is.
fn update_peers(transport: &GrpcTransport, me: u64, table: &MemberTable) {
    for m in &table.members {
        if m.id != me && !m.peer_urls.is_empty() {
            if let Err(e) = transport.set_peer(m.id, m.peer_urls.clone()) {
                warn!(member = %format!("{:016x}", m.id), error = %e, "cannot use the member's peer URLs");
            }
        }
    }
    for id in &table.removed {
        transport.remove_peer(*id);
    }
}

/// Keeps the lessor and the reported term in step with leadership.
async fn follow_leadership(
    handle: NodeHandle<Output>,
    me: u64,
    lessor: Arc<Lessor<RaftProposer>>,
    term: RaftTerm,
    mut stop: watch::Receiver<bool>,
) {
    let mut leader = handle.leader_watch();
    loop {
        let info = *leader.borrow_and_update();
        term.set(info.term);
        if info.id == me && !lessor.is_leader() {
            // apply what earlier terms committed first, so every granted lease is queued
            if let Ok(Ok(_)) = handle.read_index().await {
                lessor.promote();
                info!(term = info.term, "became leader: expiring leases");
            }
        } else if info.id != me && lessor.is_leader() {
            lessor.demote();
        }
        tokio::select! {
            changed = leader.changed() => if changed.is_err() { return },
            _ = stop.changed() => return,
        }
    }
}

/// Publishes this member's name and client URLs once (etcd's publish), retrying until the
/// member table shows them.
async fn publish_attributes(
    proposer: Arc<RaftProposer>,
    members: Arc<Members>,
    attr: MemberAttrRequest,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let done = members
            .get(attr.id)
            .is_some_and(|m| m.name == attr.name && m.client_urls == attr.client_urls);
        if done {
            return;
        }
        let req = InternalRequest { id: 0, request: Some(Request::MemberAttr(attr.clone())), auth: None };
        let result = proposer.handle().propose(req).await;
        if !matches!(result, Ok(Ok(Ok(ApplyResponse::Skipped)))) {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = stop.changed() => return,
            }
        }
    }
}

/// Opens the store in `dir` with the member's limits (on a blocking thread: opening reads
/// the backend and rebuilds the index).
/// Imports the etcd data folder of `setup` into `store_dir` (etcd_import.rs), off the
/// async threads.
async fn import_etcd_folder(setup: &MemberSetup, store_dir: PathBuf) -> Result<etcd_import::Imported, ServerError> {
    let data_dir = setup.data_dir.clone();
    let wal_dir = setup.wal_dir.clone();
    let engine = setup.options.storage_engine.unwrap_or_default();
    tokio::task::spawn_blocking(move || etcd_import::import(&data_dir, wal_dir.as_deref(), &store_dir, engine))
        .await
        .map_err(|e| ServerError::ProposerThread(std::io::Error::other(e)))?
        .map_err(ServerError::from)
}

async fn open_store(dir: PathBuf, opts: &MemberOptions) -> Result<Arc<Store>, ServerError> {
    let mut cfg = StoreConfig::new(dir.clone());
    cfg.max_txn_ops = opts.max_txn_ops;
    cfg.min_lease_ttl = opts.min_lease_ttl;
    cfg.engine = match opts.storage_engine {
        Some(engine) => engine,
        None => cairn_storage::engine::detect(&dir)
            .map_err(|source| ServerError::OpenStore { path: dir.clone(), source })?
            .unwrap_or_default(),
    };
    match tokio::task::spawn_blocking(move || Store::open(cfg)).await {
        Ok(Ok(store)) => Ok(store),
        Ok(Err(source)) => Err(ServerError::OpenStore { path: dir, source }),
        Err(join) => Err(ServerError::OpenStore {
            path: dir,
            source: cairn_storage::Error::Backend(format!("the open task failed: {join}")),
        }),
    }
}
