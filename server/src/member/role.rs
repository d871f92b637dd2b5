//! This member's role as the client services see it: a learner or a voter, and whether it
//! knows a leader. etcd refuses every RPC on a learner but serializable Range and Status,
//! and ends the streams of clients that require a leader (gRPC metadata `hasleader=true`,
//! which kube-apiserver's watches carry) once the member has been without a leader for a
//! while, so those clients move to a healthy member.

use std::sync::Arc;
use std::time::Duration;

use cairn_raft_node::{LeaderInfo, NodeHandle};
use tokio::sync::watch;

use super::machine::Output;
use super::table::Members;
use crate::error::RequestError;

/// Election timeouts without a leader after which require-leader streams end (etcd's
/// `maxNoLeaderCnt` in `monitorLeader`).
const NO_LEADER_TIMEOUTS: u32 = 3;

/// The gRPC metadata key a client sets to require a leader (clientv3's `WithRequireLeader`).
pub const REQUIRE_LEADER_KEY: &str = "hasleader";

/// See the module docs. Cheap to clone.
#[derive(Clone)]
pub struct Role {
    me: u64,
    members: Arc<Members>,
    leader: watch::Receiver<LeaderInfo>,
    election: Duration,
}

impl Role {
    /// The role of member `me`, following the node behind `handle`; `election` is the
    /// election timeout.
    pub fn new(me: u64, members: Arc<Members>, handle: &NodeHandle<Output>, election: Duration) -> Role {
        Role { me, members, leader: handle.leader_watch(), election }
    }

    /// True when this member is a learner.
    pub fn is_learner(&self) -> bool {
        self.members.get(self.me).is_some_and(|m| m.is_learner)
    }

    /// etcd's refusal of an RPC a learner does not serve.
    pub fn refuse_learner(&self) -> Result<(), RequestError> {
        if self.is_learner() {
            return Err(RequestError::NotSupportedForLearner);
        }
        Ok(())
    }

    /// True when a leader is known.
    pub fn has_leader(&self) -> bool {
        self.leader.borrow().id != 0
    }

    /// Refuses a require-leader request while no leader is known.
    pub fn require_leader(&self) -> Result<(), RequestError> {
        if !self.has_leader() {
            return Err(RequestError::NoLeader);
        }
        Ok(())
    }

    /// Resolves once this member has known no leader for [`NO_LEADER_TIMEOUTS`] election
    /// timeouts in a row (a leader seen meanwhile starts the count again), with
    /// [`RequestError::NoLeader`]; or once its Raft node is gone (the member is stopping),
    /// with [`RequestError::Stopped`]: Unavailable, on which etcd's clients resume their
    /// watches on another member, where NoLeader would end them (etcd's stopping member
    /// drops its connections, which its clients also read as Unavailable).
    pub async fn leader_lost(&self) -> RequestError {
        let mut leader = self.leader.clone();
        let grace = self.election * NO_LEADER_TIMEOUTS;
        loop {
            if leader.wait_for(|l| l.id == 0).await.is_err() {
                return RequestError::Stopped;
            }
            let back = tokio::time::timeout(grace, leader.wait_for(|l| l.id != 0)).await;
            match back {
                Err(_elapsed) => return RequestError::NoLeader,
                Ok(Err(_node_gone)) => return RequestError::Stopped,
                Ok(Ok(_)) => {}
            }
        }
    }
}

/// True when the request's metadata asks for a leader.
pub fn requires_leader(metadata: &tonic::metadata::MetadataMap) -> bool {
    metadata.get(REQUIRE_LEADER_KEY).is_some_and(|v| v.as_bytes() == b"true")
}
