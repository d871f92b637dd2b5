//! The Maintenance service: Status (what `etcdctl endpoint status` and kube-apiserver's
//! db-size poll read, with the engine's real file size and size in use), Defragment (the
//! engine's online defragmentation), HashKV, MoveLeader, and an empty alarm list; Snapshot,
//! Hash, Downgrade and raising alarms are not implemented yet.

use std::pin::Pin;
use std::sync::Arc;

use cairn_proto::etcdserverpb::alarm_request::AlarmAction;
use cairn_proto::etcdserverpb::maintenance_server::Maintenance;
use cairn_proto::etcdserverpb::{
    AlarmRequest, AlarmResponse, DefragmentRequest, DefragmentResponse, DowngradeRequest,
    DowngradeResponse, HashKvRequest, HashKvResponse, HashRequest, HashResponse, MoveLeaderRequest,
    MoveLeaderResponse, SnapshotRequest, SnapshotResponse, StatusRequest, StatusResponse,
};
use cairn_storage::Store;
use futures::Stream;
use tonic::{Request, Response, Status};

use crate::member::control::ClusterControl;
use crate::startup::config::ETCD_VERSION;
use crate::api::status::rpc_error;
use crate::member::identity::Membership;
use crate::api::status::not_yet;
use crate::auth::AuthGate;

/// The Maintenance service.
pub struct MaintenanceService {
    store: Arc<Store>,
    membership: Arc<Membership>,
    control: Arc<dyn ClusterControl>,
    /// Defragment, Hash, HashKV, Snapshot, MoveLeader and Downgrade are admin-only while
    /// auth is on (etcd's `authMaintenanceServer`).
    auth: AuthGate,
}

impl MaintenanceService {
    /// A Maintenance service over `store`.
    pub fn new(store: Arc<Store>, membership: Arc<Membership>, control: Arc<dyn ClusterControl>) -> MaintenanceService {
        MaintenanceService { store, membership, control, auth: AuthGate::default() }
    }

    /// Checks the admin-only calls through `auth`.
    pub fn with_auth(mut self, auth: AuthGate) -> MaintenanceService {
        self.auth = auth;
        self
    }

    /// The Status response, with the Raft numbers the replication layer reports (one node
    /// without Raft: it is the leader and every applied index is committed).
    pub async fn status_response(&self) -> StatusResponse {
        let raft = self.control.raft_numbers().await;
        StatusResponse {
            header: Some(self.membership.header(self.store.revision())),
            version: ETCD_VERSION.to_owned(),
            db_size: i64::try_from(self.store.db_size()).unwrap_or(i64::MAX),
            leader: raft.leader,
            raft_index: raft.commit,
            raft_term: raft.term,
            raft_applied_index: raft.applied,
            errors: if raft.leader == 0 { vec!["etcdserver: no leader".to_owned()] } else { Vec::new() },
            db_size_in_use: i64::try_from(self.store.db_size_in_use()).unwrap_or(i64::MAX),
            is_learner: raft.is_learner,
        }
    }
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<SnapshotResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(
        &self,
        request: Request<AlarmRequest>,
    ) -> Result<Response<AlarmResponse>, Status> {
        // No alarm is ever raised yet, so listing returns none (etcdctl 3.5's `endpoint
        // health` lists alarms). Raising or clearing one needs the alarm store.
        match AlarmAction::try_from(request.get_ref().action) {
            Ok(AlarmAction::Get) => Ok(Response::new(AlarmResponse {
                header: Some(self.membership.header(self.store.revision())),
                alarms: Vec::new(),
            })),
            _ => Err(not_yet("Alarm (activate/deactivate)")),
        }
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        Ok(Response::new(self.status_response().await))
    }

    async fn defragment(
        &self,
        request: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        self.auth.admin(&request)?;
        // this member's backend only, as etcd (`etcdctl defrag --cluster` asks each member);
        // applies and reads go on but for the engine's short swap of files
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.defragment())
            .await
            .map_err(|e| Status::internal(format!("cairn: defragment task failed: {e}")))?
            .map_err(rpc_error)?;
        Ok(Response::new(DefragmentResponse { header: Some(self.membership.header(self.store.revision())) }))
    }

    async fn hash(&self, request: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        self.auth.admin(&request)?;
        Err(not_yet("Hash"))
    }

    async fn hash_kv(&self, request: Request<HashKvRequest>) -> Result<Response<HashKvResponse>, Status> {
        self.auth.admin(&request)?;
        let store = self.store.clone();
        let revision = request.get_ref().revision;
        let (hash, compact_revision, hash_revision) =
            tokio::task::spawn_blocking(move || crate::api::hash_kv::hash_kv(&store, revision))
                .await
                .map_err(|e| Status::internal(format!("cairn: HashKV task failed: {e}")))?
                .map_err(rpc_error)?;
        Ok(Response::new(HashKvResponse {
            header: Some(self.membership.header(self.store.revision())),
            hash,
            compact_revision,
            hash_revision,
        }))
    }

    type SnapshotStream = SnapshotStream;

    async fn snapshot(
        &self,
        request: Request<SnapshotRequest>,
    ) -> Result<Response<SnapshotStream>, Status> {
        self.auth.admin(&request)?;
        Err(not_yet("Snapshot"))
    }

    async fn move_leader(
        &self,
        request: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        self.auth.admin(&request)?;
        self.control.move_leader(request.get_ref().target_id).await.map_err(rpc_error)?;
        Ok(Response::new(MoveLeaderResponse { header: Some(self.membership.header(self.store.revision())) }))
    }

    async fn downgrade(
        &self,
        request: Request<DowngradeRequest>,
    ) -> Result<Response<DowngradeResponse>, Status> {
        self.auth.admin(&request)?;
        Err(not_yet("Downgrade"))
    }
}
