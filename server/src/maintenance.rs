//! The Maintenance service: Status (what `etcdctl endpoint status` and kube-apiserver's
//! db-size poll read) and an empty alarm list; the rest is not implemented yet.

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

use crate::config::ETCD_VERSION;
use crate::membership::Membership;
use crate::unimplemented::not_yet;

/// The Maintenance service.
pub struct MaintenanceService {
    store: Arc<Store>,
    membership: Arc<Membership>,
}

impl MaintenanceService {
    /// A Maintenance service over `store`.
    pub fn new(store: Arc<Store>, membership: Arc<Membership>) -> MaintenanceService {
        MaintenanceService { store, membership }
    }

    /// The Status response: on one node this member is the leader, and every applied index
    /// is also committed.
    pub fn status_response(&self) -> StatusResponse {
        let applied = self.store.applied_index();
        StatusResponse {
            header: Some(self.membership.header(self.store.revision())),
            version: ETCD_VERSION.to_owned(),
            db_size: i64::try_from(self.store.db_size()).unwrap_or(i64::MAX),
            leader: self.membership.member_id,
            raft_index: applied,
            raft_term: self.membership.raft_term,
            raft_applied_index: applied,
            errors: Vec::new(),
            db_size_in_use: i64::try_from(self.store.db_size_in_use()).unwrap_or(i64::MAX),
            is_learner: false,
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
        Ok(Response::new(self.status_response()))
    }

    async fn defragment(
        &self,
        _: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        Err(not_yet("Defragment"))
    }

    async fn hash(&self, _: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        Err(not_yet("Hash"))
    }

    async fn hash_kv(&self, _: Request<HashKvRequest>) -> Result<Response<HashKvResponse>, Status> {
        Err(not_yet("HashKV"))
    }

    type SnapshotStream = SnapshotStream;

    async fn snapshot(
        &self,
        _: Request<SnapshotRequest>,
    ) -> Result<Response<SnapshotStream>, Status> {
        Err(not_yet("Snapshot"))
    }

    async fn move_leader(
        &self,
        _: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        Err(not_yet("MoveLeader"))
    }

    async fn downgrade(
        &self,
        _: Request<DowngradeRequest>,
    ) -> Result<Response<DowngradeResponse>, Status> {
        Err(not_yet("Downgrade"))
    }
}
