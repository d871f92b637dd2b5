//! The write path of a Raft member: commands are proposed to the local `RaftNode` (a
//! follower forwards them to the leader inside Raft), and answered by request id once this
//! member applied the entry carrying them. Linearizable reads wait on a ReadIndex round.
//! A request that would pass the backend quota raises the NOSPACE alarm instead of being
//! proposed (`quota.rs`).

use std::sync::Arc;

use cairn_proto::cairnpb::internal_request::Request;
use cairn_proto::cairnpb::{InternalRequest, RequestAuth};
use cairn_raft_node::{NodeHandle, RequestError as NodeRequestError};
use cairn_proto::etcdserverpb::alarm_request::AlarmAction;
use cairn_proto::etcdserverpb::{AlarmRequest, AlarmType};
use cairn_storage::{ApplyResponse, Error as StorageError, Store};
use prost::Message;

use crate::error::RequestError;
use crate::member::role::Role;
use crate::member::proposer::Proposer;
use crate::member::machine::Output;
use crate::member::quota::Quota;

/// Proposes through Raft (see the module docs).
pub struct RaftProposer {
    handle: NodeHandle<Output>,
    max_request_bytes: usize,
    role: Role,
    quota: Option<QuotaGuard>,
}

/// What the quota check needs: the limit, the store whose size counts, and the member ID
/// an alarm is raised for.
struct QuotaGuard {
    quota: Quota,
    store: Arc<Store>,
    member_id: u64,
}

impl RaftProposer {
    /// A proposer over the node behind `handle`, for a member in `role`;
    /// `max_request_bytes` is `--max-request-bytes`.
    pub fn new(handle: NodeHandle<Output>, max_request_bytes: usize, role: Role) -> RaftProposer {
        RaftProposer { handle, max_request_bytes, role, quota: None }
    }

    /// Checks requests that add data against `quota` and `store`'s size before proposing
    /// them, raising the NOSPACE alarm for `member_id` (this member) when one does not fit.
    pub fn with_quota(mut self, quota: Quota, store: Arc<Store>, member_id: u64) -> RaftProposer {
        self.quota = Some(QuotaGuard { quota, store, member_id });
        self
    }

    /// Proposes `command` and maps every failure to etcd's answer.
    async fn propose_command(&self, request: Request, auth: Option<RequestAuth>) -> Result<ApplyResponse, RequestError> {
        let req = InternalRequest { id: 0, request: Some(request), auth };
        // the id the node assigns takes at most 10 more bytes
        if req.encoded_len() + 10 > self.max_request_bytes {
            return Err(StorageError::RequestTooLarge.into());
        }
        match self.handle.propose(req).await {
            Err(_) => Err(RequestError::Stopped),
            Ok(Err(e)) => Err(node_error(e)),
            Ok(Ok(Ok(response))) => Ok(response),
            Ok(Ok(Err(e))) => Err(RequestError::Storage(e)),
        }
    }

    /// etcd's quota check (`api/v3rpc/quota.go`): a request that does not fit raises the
    /// NOSPACE alarm through Raft (whether that succeeds or not, as etcd) and is refused.
    async fn check_quota(&self, request: &Request) -> Result<(), RequestError> {
        let Some(g) = &self.quota else { return Ok(()) };
        if g.quota.available(g.store.db_size_allocated(), request) {
            return Ok(());
        }
        let alarm = AlarmRequest { action: AlarmAction::Activate as i32, member_id: g.member_id, alarm: AlarmType::Nospace as i32 };
        if let Err(e) = self.propose_command(Request::Alarm(alarm), None).await {
            tracing::warn!(error = %e, "raising the NOSPACE alarm failed");
        }
        Err(StorageError::NoSpace.into())
    }

    /// The node handle.
    pub fn handle(&self) -> &NodeHandle<Output> {
        &self.handle
    }
}

/// etcd's answer for each way Raft can fail a request.
pub fn node_error(e: NodeRequestError) -> RequestError {
    match e {
        NodeRequestError::NoLeader => RequestError::NoLeader,
        NodeRequestError::Timeout => RequestError::Timeout,
        NodeRequestError::Dropped | NodeRequestError::DuplicateId(_) => RequestError::LeaderChanged,
        NodeRequestError::Stopped => RequestError::Stopped,
    }
}

impl Proposer for RaftProposer {
    async fn propose_as(&self, request: Request, auth: Option<RequestAuth>) -> Result<ApplyResponse, RequestError> {
        self.role.refuse_learner()?;
        self.check_quota(&request).await?;
        self.propose_command(request, auth).await
    }

    async fn read_barrier(&self) -> Result<(), RequestError> {
        self.role.refuse_learner()?;
        if self.handle.is_sole_leader() {
            // the leader of a one-voter cluster: every acknowledged write is applied here
            // and no other member can commit one (see `NodeHandle::is_sole_leader`)
            return Ok(());
        }
        match self.handle.read_index().await {
            Err(_) => Err(RequestError::Stopped),
            Ok(Err(e)) => Err(node_error(e)),
            Ok(Ok(_index)) => Ok(()),
        }
    }
}

#[cfg(test)]
#[path = "raft_proposer_tests.rs"]
mod tests;
