//! `--strict-reconfig-check` (on by default, as etcd's): membership changes that would cost
//! the cluster its quorum are refused before they are proposed.
//!
//! Two rules, as etcd's `mayAddMember`, `mayRemoveMember` and `mayPromoteMember`:
//! - **started members** (from the replicated member table, the same on every member): a
//!   member counts as started once it published its name. Adding a voter needs a quorum of
//!   the grown cluster started (except adding the second member to a one-member cluster);
//!   removing a voter needs a quorum of the remaining voters started; promoting a learner
//!   needs a quorum of the grown cluster started, counting the learner. Refused with
//!   "etcdserver: re-configuration failed due to not enough started members".
//! - **connected members**: adding a voter needs every other voter connected; removing a
//!   connected voter needs a quorum of the remaining voters connected (a voter that is down
//!   can always be removed: it is not part of the active quorum). Refused with
//!   "etcdserver: unhealthy cluster".
//!
//! etcd judges "connected" by its peer streams, which every member keeps to every other.
//! cairn's members talk only where Raft does: the leader hears every live voter at each
//! heartbeat, a follower hears the leader. So "connected" is "heard within an election
//! timeout", judged by the leader: a follower sends MemberAdd, MemberRemove and
//! MemberPromote to the leader (`api/cluster.rs`, `leader_forward.rs`). Only a forwarded
//! change that reaches a member which lost the leadership meanwhile is checked with a
//! follower's view, where the other voters count as connected (the started-members rule
//! and Raft still apply).

use std::collections::HashSet;

use crate::error::RequestError;

/// What the checks look at: the voters (id, started) and who is connected.
#[derive(Debug)]
pub struct ClusterView {
    /// This member.
    pub me: u64,
    /// Every voter, with whether it has started (published its name).
    pub voters: Vec<(u64, bool)>,
    /// The other voters this member counts as connected (see the module docs).
    pub connected: HashSet<u64>,
}

impl ClusterView {
    fn started(&self) -> usize {
        self.voters.iter().filter(|(_, s)| *s).count()
    }

    fn is_connected(&self, id: u64) -> bool {
        id == self.me || self.connected.contains(&id)
    }

    /// etcd's `mayAddMember` for a voter (learners are always allowed).
    pub fn may_add_voter(&self) -> Result<(), RequestError> {
        let members = self.voters.len() + 1;
        let started = self.started();
        if !(started == 1 && members == 2) && started < members / 2 + 1 {
            return Err(RequestError::NotEnoughStartedMembers);
        }
        if !self.voters.iter().all(|(id, _)| self.is_connected(*id)) {
            return Err(RequestError::UnhealthyCluster);
        }
        Ok(())
    }

    /// etcd's `mayRemoveMember` for voter `id` (removing a learner is always allowed).
    pub fn may_remove_voter(&self, id: u64) -> Result<(), RequestError> {
        let rest: Vec<&(u64, bool)> = self.voters.iter().filter(|(v, _)| *v != id).collect();
        let started = rest.iter().filter(|(_, s)| *s).count();
        if started < rest.len() / 2 + 1 {
            return Err(RequestError::NotEnoughStartedMembers);
        }
        if id != self.me && !self.is_connected(id) {
            // a member that is down is not part of the active quorum
            return Ok(());
        }
        let active = self.voters.iter().filter(|(v, _)| self.is_connected(*v)).count();
        if active - 1 < 1 + (self.voters.len() - 1) / 2 {
            return Err(RequestError::UnhealthyCluster);
        }
        Ok(())
    }

    /// etcd's `mayPromoteMember` (after the learner-readiness check).
    pub fn may_promote(&self) -> Result<(), RequestError> {
        let members = self.voters.len() + 1;
        let started = self.started() + 1;
        if started < members / 2 + 1 {
            return Err(RequestError::NotEnoughStartedMembers);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(me: u64, voters: &[(u64, bool)], connected: &[u64]) -> ClusterView {
        ClusterView { me, voters: voters.to_vec(), connected: connected.iter().copied().collect() }
    }

    fn refused(r: Result<(), RequestError>) -> &'static str {
        match r {
            Ok(()) => "ok",
            Err(RequestError::NotEnoughStartedMembers) => "not enough started",
            Err(RequestError::UnhealthyCluster) => "unhealthy",
            Err(_) => "other",
        }
    }

    #[test]
    fn adding_a_voter_needs_started_and_connected_members() {
        let all = [(1, true), (2, true), (3, true)];
        assert_eq!(refused(view(1, &all, &[2, 3]).may_add_voter()), "ok");
        // one of three down: a fourth voter would need all three to keep quorum
        assert_eq!(refused(view(1, &all, &[2]).may_add_voter()), "unhealthy");
        // two of three never started: 1 started of 4
        let fresh = [(1, true), (2, false), (3, false)];
        assert_eq!(refused(view(1, &fresh, &[2, 3]).may_add_voter()), "not enough started");
        // the second member of a one-member cluster (restoring a cluster)
        assert_eq!(refused(view(1, &[(1, true)], &[]).may_add_voter()), "ok");
    }

    #[test]
    fn removing_a_voter_keeps_a_connected_quorum() {
        let all = [(1, true), (2, true), (3, true)];
        assert_eq!(refused(view(1, &all, &[2, 3]).may_remove_voter(3)), "ok");
        // 3 is down: removing it is always safe
        assert_eq!(refused(view(1, &all, &[2]).may_remove_voter(3)), "ok");
        // 3 is down: removing the healthy 2 leaves 1 and a dead 3, no quorum
        assert_eq!(refused(view(1, &all, &[2]).may_remove_voter(2)), "unhealthy");
        // removing myself while another is down
        assert_eq!(refused(view(1, &all, &[2]).may_remove_voter(1)), "unhealthy");
        // remaining voters mostly never started
        let fresh = [(1, true), (2, false), (3, false)];
        assert_eq!(refused(view(1, &fresh, &[2, 3]).may_remove_voter(1)), "not enough started");
        // two members, one down: removing the down one is allowed
        assert_eq!(refused(view(1, &[(1, true), (2, true)], &[]).may_remove_voter(2)), "ok");
    }

    #[test]
    fn promoting_counts_the_learner_as_started() {
        assert_eq!(refused(view(1, &[(1, true), (2, true), (3, true)], &[2, 3]).may_promote()), "ok");
        assert_eq!(refused(view(1, &[(1, true), (2, false), (3, false)], &[]).may_promote()), "not enough started");
        assert_eq!(refused(view(1, &[(1, true)], &[]).may_promote()), "ok");
    }
}
