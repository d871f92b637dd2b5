//! Membership and leadership of a Raft member ([`ClusterControl`] over the `RaftNode`).
//!
//! MemberAdd/Remove/Promote are Raft conf changes whose context carries the member's
//! record (IDs chosen like etcd's `NewMember`: SHA-1 of the peer URLs, the cluster token
//! and the time); MemberUpdate is a `MemberAttrRequest` entry. Every member applies them to
//! its replicated member table (`members.rs`) in log order; the call answers once this
//! member applied the change.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cairn_proto::cairnpb::internal_request::Request;
use cairn_proto::cairnpb::{ConfChangeContext, InternalRequest, MemberAttrRequest, MemberRecord};
use cairn_proto::etcdserverpb::Member;
use cairn_raft_node::{ConfChangeRequest, NodeHandle};
use prost::Message;

use crate::member::control::{ClusterControl, RaftNumbers};
use crate::error::RequestError;
use crate::member::table::{to_member, Members};
use crate::member::identity::compute_member_id;
use crate::member::machine::Output;
use crate::member::raft_proposer::node_error;
use crate::member::reconfig::ClusterView;

/// How long MoveLeader waits for the transferee to take over.
const MOVE_LEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a stopping leader that stepped down waits for a successor to be named.
const HAND_OVER_GRACE: Duration = Duration::from_secs(1);

/// Whether a learner that matched `matched` of a leader log ending at `last` is in sync
/// enough to vote (etcd: 90%).
fn learner_ready(matched: u64, last: u64) -> bool {
    matched.saturating_mul(10) >= last.saturating_mul(9)
}

/// The Raft cluster as the Cluster and Maintenance services see it.
pub struct RaftControl {
    me: u64,
    token: String,
    handle: NodeHandle<Output>,
    members: Arc<Members>,
    /// `--strict-reconfig-check`, and the ticks within which a peer heard counts as
    /// connected (an election timeout); see `reconfig.rs`.
    strict: Option<u64>,
}

impl RaftControl {
    /// Control of the cluster member `me` belongs to; `strict` is `--strict-reconfig-check`
    /// with the election timeout in ticks.
    pub fn new(me: u64, token: String, handle: NodeHandle<Output>, members: Arc<Members>, strict: Option<u64>) -> RaftControl {
        RaftControl { me, token, handle, members, strict }
    }

    /// The strict reconfiguration check's view of the cluster, or `None` when the check is
    /// off.
    async fn strict_view(&self) -> Result<Option<ClusterView>, RequestError> {
        let Some(window) = self.strict else { return Ok(None) };
        let status = self.handle.status().await.map_err(|_| RequestError::Stopped)?;
        let voters: Vec<(u64, bool)> =
            self.members.list().iter().filter(|m| !m.is_learner).map(|m| (m.id, !m.name.is_empty())).collect();
        let heard: HashSet<u64> = status.heard.iter().filter(|(_, ago)| *ago <= window).map(|(id, _)| *id).collect();
        let connected = if status.leader.id == self.me {
            heard
        } else {
            // a follower hears only the leader (see reconfig.rs)
            voters.iter().map(|(id, _)| *id).filter(|id| *id != status.leader.id || heard.contains(id)).collect()
        };
        Ok(Some(ClusterView { me: self.me, voters, connected }))
    }

    /// The hand-over of a leader that is stopping: asks `target` to take over, and answers
    /// once this member no longer leads and a new leader is known, with that leader, or 0
    /// when none came within [`HAND_OVER_GRACE`] of this member stepping down. A leader
    /// whose peers just went away steps down within an election timeout (check-quorum) and
    /// gets no successor: waiting the whole MoveLeader timeout for a transferee that is
    /// gone would only hold up its stop.
    pub async fn hand_over(&self, target: u64) -> Result<u64, RequestError> {
        let me = self.me;
        let left = self.transfer_until(target, |leader| leader != me).await?;
        if left != 0 {
            return Ok(left);
        }
        // Stepped down: a live transferee campaigns at once and wins within a round trip.
        let mut leader = self.handle.leader_watch();
        let named = tokio::time::timeout(HAND_OVER_GRACE, leader.wait_for(|l| l.id != 0)).await;
        match named.map(|r| r.map(|l| l.id)) {
            Ok(Ok(id)) => Ok(id),
            Ok(Err(_)) => Err(RequestError::Stopped),
            Err(_) => Ok(0),
        }
    }

    /// Starts a leadership transfer to `target` and waits, up to [`MOVE_LEADER_TIMEOUT`],
    /// until the leader this member knows satisfies `done`; answers that leader.
    async fn transfer_until(&self, target: u64, done: impl Fn(u64) -> bool) -> Result<u64, RequestError> {
        let mut leader = self.handle.leader_watch();
        self.handle.transfer_leader(target);
        let moved = tokio::time::timeout(MOVE_LEADER_TIMEOUT, leader.wait_for(|l| done(l.id))).await;
        match moved {
            Ok(Ok(l)) => Ok(l.id),
            Ok(Err(_)) => Err(RequestError::Stopped),
            Err(_) => Err(RequestError::Timeout),
        }
    }

    async fn conf_change(&self, change: ConfChangeRequest, context: Vec<u8>) -> Result<(), RequestError> {
        match self.handle.conf_change_with(change, context).await {
            Err(_) => Err(RequestError::Stopped),
            Ok(Err(e)) => Err(node_error(e)),
            Ok(Ok(_conf)) => Ok(()),
        }
    }

    fn new_member_id(&self, peer_urls: &[String]) -> u64 {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut salt = 0u64;
        loop {
            let id = compute_member_id(peer_urls, &format!("{}{}", self.token, now + salt));
            if id != 0 && self.members.get(id).is_none() && !self.members.was_removed(id) {
                return id;
            }
            salt += 1;
        }
    }
}

#[tonic::async_trait]
impl ClusterControl for RaftControl {
    fn members(&self) -> Vec<Member> {
        self.members.list()
    }

    async fn raft_numbers(&self) -> RaftNumbers {
        match self.handle.status().await {
            Ok(s) => RaftNumbers {
                leader: s.leader.id,
                term: s.leader.term,
                commit: s.commit,
                applied: s.applied,
                is_learner: s.conf.learners.contains(&self.me),
            },
            Err(_) => RaftNumbers::default(),
        }
    }

    async fn add_member(&self, peer_urls: Vec<String>, learner: bool) -> Result<Member, RequestError> {
        if self.members.with_peer_url(&peer_urls).is_some() {
            return Err(RequestError::PeerUrlExists);
        }
        if !learner {
            if let Some(view) = self.strict_view().await? {
                view.may_add_voter()?;
            }
        }
        let id = self.new_member_id(&peer_urls);
        let record = MemberRecord { id, peer_urls, is_learner: learner, ..Default::default() };
        let context = ConfChangeContext { member: Some(record.clone()) }.encode_to_vec();
        let change = if learner { ConfChangeRequest::AddLearner(id) } else { ConfChangeRequest::AddVoter(id) };
        self.conf_change(change, context).await?;
        Ok(self.members.get(id).map_or_else(|| to_member(&record), |m| to_member(&m)))
    }

    async fn remove_member(&self, id: u64) -> Result<(), RequestError> {
        let Some(member) = self.members.get(id) else {
            return Err(if self.members.was_removed(id) { RequestError::MemberRemoved } else { RequestError::MemberNotFound });
        };
        if !member.is_learner {
            if let Some(view) = self.strict_view().await? {
                view.may_remove_voter(id)?;
            }
        }
        self.conf_change(ConfChangeRequest::Remove(id), Vec::new()).await
    }

    async fn update_member(&self, id: u64, peer_urls: Vec<String>) -> Result<(), RequestError> {
        if self.members.get(id).is_none() {
            return Err(RequestError::MemberNotFound);
        }
        if self.members.with_peer_url(&peer_urls).is_some_and(|m| m.id != id) {
            return Err(RequestError::PeerUrlExists);
        }
        let attr = MemberAttrRequest { id, peer_urls, ..Default::default() };
        let req = InternalRequest { id: 0, request: Some(Request::MemberAttr(attr)), auth: None };
        match self.handle.propose(req).await {
            Err(_) => Err(RequestError::Stopped),
            Ok(Err(e)) => Err(node_error(e)),
            Ok(Ok(Ok(_))) => Ok(()),
            Ok(Ok(Err(e))) => Err(RequestError::Storage(e)),
        }
    }

    async fn promote_member(&self, id: u64) -> Result<(), RequestError> {
        match self.members.get(id) {
            None => Err(RequestError::MemberNotFound),
            Some(m) if !m.is_learner => Err(RequestError::NotALearner),
            Some(_) => {
                // as etcd: only a learner that holds at least 90% of the leader's log may
                // vote (a lagging new voter could cost the cluster its quorum). Checked
                // where the progress is known, on the leader, to which followers send the
                // change (`api/cluster.rs`).
                let status = self.handle.status().await.map_err(|_| RequestError::Stopped)?;
                if status.leader.id == self.me {
                    let matched = status.progress.iter().find(|(m, _)| *m == id).map_or(0, |(_, i)| *i);
                    if !learner_ready(matched, status.log.1) {
                        return Err(RequestError::LearnerNotReady);
                    }
                }
                if let Some(view) = self.strict_view().await? {
                    view.may_promote()?;
                }
                self.conf_change(ConfChangeRequest::Promote(id), Vec::new()).await
            }
        }
    }

    async fn move_leader(&self, target: u64) -> Result<(), RequestError> {
        let status = self.handle.status().await.map_err(|_| RequestError::Stopped)?;
        if status.leader.id != self.me {
            return Err(RequestError::NotLeader("etcdserver: not leader"));
        }
        if !status.conf.voters.contains(&target) {
            return Err(RequestError::NotLeader("etcdserver: bad leader transferee"));
        }
        if target == self.me {
            return Ok(());
        }
        self.transfer_until(target, |leader| leader == target).await.map(|_| ())
    }

    async fn release_log(&self) -> Result<(), RequestError> {
        // the node drops the request only when it stopped or failed doing it
        let done = self.handle.release_log().await.map_err(|_| RequestError::Stopped)?;
        tracing::debug!(compacted_to = done.compacted_to, segments = done.segments_removed, "raft log released");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::learner_ready;

    #[test]
    fn a_learner_votes_once_it_holds_ninety_percent_of_the_log() {
        assert!(learner_ready(90, 100));
        assert!(learner_ready(100, 100));
        assert!(!learner_ready(89, 100));
        assert!(!learner_ready(0, 5));
        assert!(learner_ready(0, 0));
    }
}
