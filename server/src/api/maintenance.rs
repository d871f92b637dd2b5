//! The Maintenance service: Status (what `etcdctl endpoint status` and kube-apiserver's
//! db-size poll read, with the engine's real file size and size in use, and the active
//! alarms in `errors` as etcd lists them), Defragment (the engine's online
//! defragmentation, then this member's Raft log compacted and its WAL segments released),
//! Alarm (GET answered from the applied alarm set; ACTIVATE and
//! DEACTIVATE go through Raft, as etcd's do), Snapshot (a backup streamed from a read
//! view, `snapshot.rs`), Hash (of the logical content, `cairn_storage::hash`), HashKV,
//! MoveLeader; Downgrade is not implemented yet.

use std::pin::Pin;
use std::sync::Arc;

use cairn_proto::etcdserverpb::alarm_request::AlarmAction;
use cairn_proto::etcdserverpb::maintenance_server::Maintenance;
use cairn_proto::etcdserverpb::{
    AlarmRequest, AlarmResponse, DefragmentRequest, DefragmentResponse, DowngradeRequest,
    DowngradeResponse, HashKvRequest, HashKvResponse, HashRequest, HashResponse, MoveLeaderRequest,
    MoveLeaderResponse, SnapshotRequest, SnapshotResponse, StatusRequest, StatusResponse,
};
use cairn_proto::cairnpb::internal_request::Request as Command;
use cairn_proto::etcdserverpb::{AlarmMember, AlarmType};
use cairn_storage::{ApplyResponse, Store};
use futures::Stream;
use tonic::{Request, Response, Status};

use crate::member::control::ClusterControl;
use crate::startup::config::ETCD_VERSION;
use crate::api::status::rpc_error;
use crate::member::identity::Membership;
use crate::api::kv::mismatch;
use crate::api::status::not_yet;
use crate::auth::AuthGate;
use crate::member::proposer::{request_kind, Proposer};

/// The Maintenance service.
pub struct MaintenanceService<P> {
    store: Arc<Store>,
    proposer: Arc<P>,
    membership: Arc<Membership>,
    control: Arc<dyn ClusterControl>,
    /// Defragment, Hash, HashKV, Snapshot, MoveLeader and Downgrade are admin-only while
    /// auth is on (etcd's `authMaintenanceServer`).
    auth: AuthGate,
}

/// An alarm as etcd's Status `errors` and `etcdctl alarm list` print it (the protobuf
/// compact text form of an `AlarmMember`): `memberID:8211f1d0f64f3269 alarm:NOSPACE ` with
/// the member ID in decimal and a trailing space.
pub fn alarm_text(a: &AlarmMember) -> String {
    let name = AlarmType::try_from(a.alarm).map_or_else(|_| a.alarm.to_string(), |t| t.as_str_name().to_owned());
    format!("memberID:{} alarm:{name} ", a.member_id)
}

impl<P: Proposer> MaintenanceService<P> {
    /// A Maintenance service over `store`, raising and clearing alarms through `proposer`.
    pub fn new(store: Arc<Store>, proposer: Arc<P>, membership: Arc<Membership>, control: Arc<dyn ClusterControl>) -> Self {
        MaintenanceService { store, proposer, membership, control, auth: AuthGate::default() }
    }

    /// Checks the admin-only calls through `auth`.
    pub fn with_auth(mut self, auth: AuthGate) -> Self {
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
            errors: status_errors(raft.leader, &self.store.alarms().get(AlarmType::None)),
            db_size_in_use: i64::try_from(self.store.db_size_in_use()).unwrap_or(i64::MAX),
            is_learner: raft.is_learner,
        }
    }
}

/// Status `errors` as etcd fills them: "etcdserver: no leader" without a leader, then one
/// entry per active alarm.
fn status_errors(leader: u64, alarms: &[AlarmMember]) -> Vec<String> {
    let no_leader = (leader == 0).then(|| "etcdserver: no leader".to_owned());
    no_leader.into_iter().chain(alarms.iter().map(alarm_text)).collect()
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<SnapshotResponse, Status>> + Send>>;

#[tonic::async_trait]
impl<P: Proposer> Maintenance for MaintenanceService<P> {
    async fn alarm(
        &self,
        request: Request<AlarmRequest>,
    ) -> Result<Response<AlarmResponse>, Status> {
        let request = request.into_inner();
        match AlarmAction::try_from(request.action) {
            Ok(AlarmAction::Get) => {
                // etcd answers GET through Raft too; a read barrier gives the same view
                self.proposer.read_barrier().await.map_err(rpc_error)?;
                let alarm = AlarmType::try_from(request.alarm).unwrap_or(AlarmType::None);
                Ok(Response::new(AlarmResponse {
                    header: Some(self.membership.header(self.store.revision())),
                    alarms: self.store.alarms().get(alarm),
                }))
            }
            Ok(AlarmAction::Activate | AlarmAction::Deactivate) => {
                let command = Command::Alarm(request);
                let kind = request_kind(&command);
                match self.proposer.propose(command).await.map_err(rpc_error)? {
                    ApplyResponse::Alarm(mut response) => {
                        self.membership.fill(&mut response.header);
                        Ok(Response::new(response))
                    }
                    other => Err(mismatch(kind, &other)),
                }
            }
            Err(_) => Err(Status::invalid_argument(format!("cairn: unknown alarm action {}", request.action))),
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
        // then this member's Raft log: unlike etcd, whose WAL keeps everything since its
        // last snapshot, the segments behind what the store holds durably are deleted
        self.control.release_log().await.map_err(rpc_error)?;
        Ok(Response::new(DefragmentResponse { header: Some(self.membership.header(self.store.revision())) }))
    }

    async fn hash(&self, request: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        self.auth.admin(&request)?;
        // the logical content of one read view (cairn_storage::hash says why not the file)
        let store = self.store.clone();
        let (hash, revision) = tokio::task::spawn_blocking(move || {
            let revision = store.revision();
            let view = store.read_view()?;
            cairn_storage::hash::hash_view(view.as_ref()).map(|h| (h, revision))
        })
        .await
        .map_err(|e| Status::internal(format!("cairn: Hash task failed: {e}")))?
        .map_err(rpc_error)?;
        Ok(Response::new(HashResponse { header: Some(self.membership.header(revision)), hash }))
    }

    async fn hash_kv(&self, request: Request<HashKvRequest>) -> Result<Response<HashKvResponse>, Status> {
        self.auth.admin(&request)?;
        let revision = request.get_ref().revision;
        Ok(Response::new(crate::api::hash_kv::hash_kv_response(self.store.clone(), &self.membership, revision).await?))
    }

    type SnapshotStream = SnapshotStream;

    async fn snapshot(
        &self,
        request: Request<SnapshotRequest>,
    ) -> Result<Response<SnapshotStream>, Status> {
        self.auth.admin(&request)?;
        let header = self.membership.header(self.store.revision());
        let rx = crate::api::snapshot::start(self.store.clone(), header, ETCD_VERSION);
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
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
