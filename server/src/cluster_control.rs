//! What the Cluster and Maintenance services need from the member's replication layer:
//! the member list, membership changes, leadership, and the Raft status numbers.
//!
//! Two implementations: [`SingleNode`] (the single-member engine without Raft, which is
//! always its own leader and cannot change membership) and `raft_engine::RaftCluster`.

use std::sync::Arc;

use cairn_proto::etcdserverpb::Member;
use cairn_storage::Store;

use crate::error::RequestError;
use crate::membership::Membership;

/// Raft numbers for Status and `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RaftNumbers {
    /// The leader's member ID (0: none known).
    pub leader: u64,
    /// The current term.
    pub term: u64,
    /// The commit index.
    pub commit: u64,
    /// The applied index.
    pub applied: u64,
    /// Whether this member is a learner.
    pub is_learner: bool,
}

/// Membership and leadership operations (see the module docs). Errors are the
/// [`RequestError`] variants etcd's messages exist for.
#[tonic::async_trait]
pub trait ClusterControl: Send + Sync + 'static {
    /// Every member, ordered by ID.
    fn members(&self) -> Vec<Member>;
    /// Raft status numbers.
    async fn raft_numbers(&self) -> RaftNumbers;
    /// Adds a member with `peer_urls`; answers it.
    async fn add_member(&self, peer_urls: Vec<String>, learner: bool) -> Result<Member, RequestError>;
    /// Removes member `id`.
    async fn remove_member(&self, id: u64) -> Result<(), RequestError>;
    /// Replaces member `id`'s peer URLs.
    async fn update_member(&self, id: u64, peer_urls: Vec<String>) -> Result<(), RequestError>;
    /// Makes learner `id` a voter.
    async fn promote_member(&self, id: u64) -> Result<(), RequestError>;
    /// Hands leadership to `target` (this member must be the leader).
    async fn move_leader(&self, target: u64) -> Result<(), RequestError>;
}

/// The single-member engine: always the leader, membership fixed.
pub struct SingleNode {
    /// This member.
    pub membership: Arc<Membership>,
    /// Its store (for the applied index).
    pub store: Arc<Store>,
}

fn single(method: &str) -> RequestError {
    RequestError::Unsupported(format!(
        "cairn: {method} needs a Raft member: start cairn with an --initial-cluster of several members"
    ))
}

#[tonic::async_trait]
impl ClusterControl for SingleNode {
    fn members(&self) -> Vec<Member> {
        vec![self.membership.member()]
    }

    async fn raft_numbers(&self) -> RaftNumbers {
        let applied = self.store.applied_index();
        RaftNumbers {
            leader: self.membership.member_id,
            term: self.membership.raft_term.get(),
            commit: applied,
            applied,
            is_learner: false,
        }
    }

    async fn add_member(&self, _: Vec<String>, _: bool) -> Result<Member, RequestError> {
        Err(single("MemberAdd"))
    }

    async fn remove_member(&self, _: u64) -> Result<(), RequestError> {
        Err(single("MemberRemove"))
    }

    async fn update_member(&self, _: u64, _: Vec<String>) -> Result<(), RequestError> {
        Err(single("MemberUpdate"))
    }

    async fn promote_member(&self, _: u64) -> Result<(), RequestError> {
        Err(single("MemberPromote"))
    }

    async fn move_leader(&self, target: u64) -> Result<(), RequestError> {
        if target == self.membership.member_id {
            return Ok(());
        }
        Err(RequestError::NotLeader("etcdserver: bad leader transferee"))
    }
}
