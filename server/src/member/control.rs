//! What the Cluster and Maintenance services need from the member's replication layer:
//! the member list, membership changes, leadership, and the Raft status numbers.
//!
//! Implemented by `raft_control::RaftControl` (every member, a single one included, runs
//! Raft); the trait keeps the services independent of the replication layer.

use cairn_proto::etcdserverpb::Member;

use crate::error::RequestError;

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
    /// Compacts this member's Raft log behind what its store holds durably and deletes
    /// the WAL segments that held only that (Defragment does it after the store's own
    /// defragmentation); followers' catch-up entries are kept.
    async fn release_log(&self) -> Result<(), RequestError>;
}
