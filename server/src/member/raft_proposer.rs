//! The write path of a Raft member: commands are proposed to the local `RaftNode` (a
//! follower forwards them to the leader inside Raft), and answered by request id once this
//! member applied the entry carrying them. Linearizable reads wait on a ReadIndex round.

use cairn_proto::cairnpb::internal_request::Request;
use cairn_proto::cairnpb::{InternalRequest, RequestAuth};
use cairn_raft_node::{NodeHandle, RequestError as NodeRequestError};
use cairn_storage::{ApplyResponse, Error as StorageError};
use prost::Message;

use crate::error::RequestError;
use crate::member::role::Role;
use crate::member::proposer::Proposer;
use crate::member::machine::Output;

/// Proposes through Raft (see the module docs).
pub struct RaftProposer {
    handle: NodeHandle<Output>,
    max_request_bytes: usize,
    role: Role,
}

impl RaftProposer {
    /// A proposer over the node behind `handle`, for a member in `role`;
    /// `max_request_bytes` is `--max-request-bytes`.
    pub fn new(handle: NodeHandle<Output>, max_request_bytes: usize, role: Role) -> RaftProposer {
        RaftProposer { handle, max_request_bytes, role }
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

    async fn read_barrier(&self) -> Result<(), RequestError> {
        self.role.refuse_learner()?;
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
