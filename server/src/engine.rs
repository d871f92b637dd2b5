//! The single-node engine without the network: the store, its watch hub, the WAL-backed
//! write pipeline and the lessor, started and stopped together.
//!
//! The `cairn` binary serves it over gRPC ([`crate::run`]); a Rust control plane can embed
//! it directly and use the Kubernetes-style storage interface through
//! [`Engine::local_storage`] (same semantics as the gRPC path, no network hop).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn_proto::cairnpb::internal_request::Request;
use cairn_storage::kube::{LocalConfig, LocalStorage, ProposeError, WritePath};
use cairn_storage::watch::{HubConfig, WatchHub};
use cairn_storage::{ApplyResponse, Store, StoreConfig};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::error::{RequestError, ServerError};
use crate::group_commit::{self, GroupCommitProposer};
use crate::lessor::{Lessor, LessorConfig};
use crate::proposer::Proposer;
use crate::wal_log::CommandLog;
use crate::watch::WatchedStore;

/// How an [`Engine`] is opened.
#[derive(Clone)]
pub struct EngineOptions {
    /// `--max-txn-ops`.
    pub max_txn_ops: usize,
    /// `--max-request-bytes`.
    pub max_request_bytes: usize,
    /// Largest watch response before `fragment` splits it.
    pub max_watch_response_bytes: usize,
    /// Smallest lease TTL granted, in seconds.
    pub min_lease_ttl: i64,
    /// First request ID (unique per member and start, see `group_commit::request_id_base`).
    pub first_request_id: u64,
    /// First generated lease ID.
    pub first_lease_id: u64,
    /// Time for lease expiry.
    pub clock: Arc<dyn Clock>,
    /// Lease expiry tuning.
    pub lessor: LessorConfig,
}

impl Default for EngineOptions {
    /// etcd's defaults; request and lease IDs seeded from the wall clock.
    fn default() -> Self {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        EngineOptions {
            max_txn_ops: cairn_storage::validate::DEFAULT_MAX_TXN_OPS,
            max_request_bytes: 1536 * 1024,
            max_watch_response_bytes: 1536 * 1024 + 512 * 1024,
            min_lease_ttl: 2,
            first_request_id: group_commit::request_id_base(0, millis),
            first_lease_id: group_commit::request_id_base(0, millis.wrapping_add(1 << 30)),
            clock: Arc::new(crate::clock::SystemClock::default()),
            lessor: LessorConfig::default(),
        }
    }
}

/// A running single-node engine (see the module docs).
pub struct Engine {
    /// The MVCC store.
    pub store: Arc<Store>,
    /// The watch hub fed by every commit.
    pub hub: WatchHub,
    /// The write path.
    pub proposer: Arc<GroupCommitProposer>,
    /// Lease expiry (this single member is always the leader).
    pub lessor: Arc<Lessor<GroupCommitProposer>>,
    stop_lessor: watch::Sender<bool>,
    lessor_task: JoinHandle<()>,
}

impl Engine {
    /// Opens the store under `<data_dir>/member/cairn` and the WAL under
    /// `<data_dir>/member/wal`, replays the WAL, and starts the pipeline and the lessor.
    /// Must be called inside a tokio runtime.
    pub async fn open(data_dir: &Path, opts: EngineOptions) -> Result<Engine, ServerError> {
        let member = data_dir.join("member");
        let store = open_store(member.join("cairn"), &opts).await?;
        let wal_dir = member.join("wal");
        let log = tokio::task::spawn_blocking(move || CommandLog::open(&wal_dir))
            .await
            .map_err(|e| ServerError::ProposerThread(std::io::Error::other(e)))?
            .map_err(ServerError::Wal)?;
        let hub = WatchHub::new(
            store.clone(),
            HubConfig { max_request_bytes: opts.max_watch_response_bytes, ..HubConfig::default() },
        )
        .map_err(ServerError::WatchHub)?;
        let proposer = Arc::new(
            GroupCommitProposer::start_with_log(
                Arc::new(WatchedStore::new(store.clone(), hub.clone())),
                group_commit::Options {
                    first_request_id: opts.first_request_id,
                    max_request_bytes: opts.max_request_bytes,
                },
                log,
            )
            .map_err(ServerError::ProposerThread)?,
        );
        let lessor = Arc::new(Lessor::new(
            store.clone(),
            proposer.clone(),
            opts.clock.clone(),
            opts.lessor.clone(),
            opts.first_lease_id,
        ));
        lessor.promote();
        let (stop_lessor, stopped) = watch::channel(false);
        let lessor_task = tokio::spawn(lessor.clone().run(stopped));
        Ok(Engine { store, hub, proposer, lessor, stop_lessor, lessor_task })
    }

    /// The Kubernetes-style storage interface over this engine.
    pub fn local_storage(&self, cfg: LocalConfig) -> LocalStorage<EngineWritePath> {
        let write = EngineWritePath { proposer: self.proposer.clone(), lessor: self.lessor.clone() };
        LocalStorage::local(self.store.clone(), self.hub.clone(), write, cfg)
    }

    /// Stops lease expiry, then applies and commits what was queued and stops the pipeline.
    pub async fn shutdown(self) {
        let _ = self.stop_lessor.send(true);
        if let Err(e) = self.lessor_task.await {
            tracing::error!(error = %e, "the lessor task failed");
        }
        self.proposer.shutdown().await;
    }
}

pub(crate) async fn open_store(dir: PathBuf, opts: &EngineOptions) -> Result<Arc<Store>, ServerError> {
    let mut cfg = StoreConfig::new(dir.clone());
    cfg.max_txn_ops = opts.max_txn_ops;
    cfg.min_lease_ttl = opts.min_lease_ttl;
    match tokio::task::spawn_blocking(move || Store::open(cfg)).await {
        Ok(Ok(store)) => Ok(store),
        Ok(Err(source)) => Err(ServerError::OpenStore { path: dir, source }),
        Err(join) => Err(ServerError::OpenStore {
            path: dir,
            source: cairn_storage::Error::Backend(format!("the open task failed: {join}")),
        }),
    }
}

/// The engine's write path for [`LocalStorage`]: lease grants and revocations go through
/// the lessor (which chooses IDs and keeps deadlines), everything else through the
/// proposer.
pub struct EngineWritePath {
    proposer: Arc<GroupCommitProposer>,
    lessor: Arc<Lessor<GroupCommitProposer>>,
}

fn propose_error(e: RequestError) -> ProposeError {
    match e {
        RequestError::Storage(e) => ProposeError::Engine(e),
        other => ProposeError::Unavailable(Box::new(other)),
    }
}

impl WritePath for EngineWritePath {
    async fn propose(&self, request: Request) -> Result<ApplyResponse, ProposeError> {
        match request {
            Request::LeaseGrant(g) => self.lessor.grant(g).await.map(ApplyResponse::LeaseGrant).map_err(propose_error),
            Request::LeaseRevoke(r) => {
                self.lessor.revoke(r.id).await.map(ApplyResponse::LeaseRevoke).map_err(propose_error)
            }
            other => self.proposer.propose(other).await.map_err(propose_error),
        }
    }
}
