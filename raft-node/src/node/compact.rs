//! Log compaction by the driver: every `snapshot_count` applied entries
//! ([`RaftNode::maybe_compact`], as etcd's `--snapshot-count`), and on request
//! ([`RaftNode::release_log`], behind [`super::NodeHandle::release_log`], which an
//! operator's Defragment sends).
//!
//! Both first make the state machine durable ([`crate::StateMachine::persist`]) and compact
//! only behind what it returned, so a crash at any point leaves a log that starts at or
//! below what the state machine holds. Behind that point they keep `catchup_entries`
//! (etcd's SnapshotCatchUpEntries) so that a follower a little behind catches up from the
//! log; one further behind is sent a snapshot. The periodic compaction always keeps them
//! and deletes only sealed segments; the requested one keeps them only when the
//! configuration has another member, and cuts the active segment so that it can go too
//! (`WalStorage::compact_and_cut`).

use super::{NodeError, RaftNode, Transport};
use crate::machine::StateMachine;
use crate::node::handle::LogRelease;

impl<M: StateMachine, T: Transport> RaftNode<M, T> {
    /// Every `snapshot_count` applied entries: make the state machine durable and compact
    /// the log behind it, keeping `catchup_entries`.
    pub(super) fn maybe_compact(&mut self) -> Result<(), NodeError> {
        if self.applied < self.compacted_at + self.cfg.snapshot_count {
            return Ok(());
        }
        let durable = self.sm.persist()?.min(self.applied);
        self.compacted_at = self.applied;
        let target = durable.saturating_sub(self.cfg.catchup_entries);
        if target > self.raw.store().snapshot_point().0 {
            let removed = self.raw.mut_store().compact(target)?;
            tracing::debug!(id = self.cfg.id, index = target, segments = removed, "raft: log compacted");
        }
        Ok(())
    }

    /// Answers every waiting [`super::NodeHandle::release_log`]: make the state machine
    /// durable, compact the log behind it (keeping `catchup_entries` if another member may
    /// need them) and cut the WAL so every segment before the compaction point is deleted.
    pub(super) fn release_log(&mut self) -> Result<(), NodeError> {
        let durable = self.sm.persist()?.min(self.applied);
        self.compacted_at = self.applied;
        let cs = self.raw.store().conf_state();
        let me = self.cfg.id;
        let alone = [&cs.voters, &cs.learners, &cs.voters_outgoing, &cs.learners_next]
            .into_iter()
            .flatten()
            .all(|id| *id == me);
        let keep = if alone { 0 } else { self.cfg.catchup_entries };
        let target = durable.saturating_sub(keep);
        let segments_removed = self.raw.mut_store().compact_and_cut(target)?;
        let compacted_to = self.raw.store().snapshot_point().0;
        tracing::info!(id = me, index = compacted_to, segments = segments_removed, "raft: log released on request");
        let done = LogRelease { compacted_to, segments_removed };
        for tx in self.release_wanted.drain(..) {
            let _receiver_may_be_gone = tx.send(done);
        }
        Ok(())
    }
}
