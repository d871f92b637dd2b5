//! What the driver replicates into: the state machine, and its snapshots.

use cairn_proto::cairnpb::InternalRequest;
use raft::eraftpb::ConfState;

/// A failure of the state machine. The driver stops on it (an apply that cannot be carried
/// out deterministically everywhere must not be skipped); a request's own error (a failed
/// compare, a missing lease) is not one of these but part of [`StateMachine::Output`].
#[derive(Debug, thiserror::Error)]
#[error("state machine: {0}")]
pub struct StateMachineError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

impl StateMachineError {
    /// Wraps any error.
    pub fn new(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        StateMachineError(Box::new(e))
    }
}

/// The replicated state machine.
///
/// Determinism: every member applies the same entries in the same order and must reach the
/// same state and the same outputs; `apply` must not read clocks, random sources or any
/// state outside the machine.
pub trait StateMachine: Send {
    /// What applying one request answers (sent to the proposer's waiter).
    type Output: Send + 'static;

    /// The index of the last entry applied (and reflected by [`StateMachine::snapshot`]).
    /// After a restart the driver applies only entries above it, so nothing is applied twice.
    fn applied_index(&self) -> u64;

    /// Applies the normal entry `index` (its data decoded as an [`InternalRequest`]).
    /// Indexes only grow. `Err` stops the driver.
    fn apply(&mut self, index: u64, req: &InternalRequest) -> Result<Self::Output, StateMachineError>;

    /// The configuration changed at entry `index` (already durable in the raft log's
    /// storage) by `change`; `conf` is the configuration now in force. Must advance the
    /// applied index to `index`.
    fn apply_conf_change(&mut self, index: u64, conf: &ConfState, change: &AppliedConfChange) -> Result<(), StateMachineError>;

    /// Called after each batch of applied entries, before their proposers are answered and
    /// before reads waiting on them complete: make the batch visible to readers.
    fn publish(&mut self) -> Result<(), StateMachineError> {
        Ok(())
    }

    /// Makes everything applied durable; returns the index now durable. The log is
    /// compacted only behind it.
    fn persist(&mut self) -> Result<u64, StateMachineError>;

    /// Replaces the whole state with a snapshot's `data` taken at `index`.
    fn restore(&mut self, index: u64, data: &[u8]) -> Result<(), StateMachineError>;

    /// A handle the raft storage uses to take snapshots of this machine when a follower
    /// needs one (it is called on the driver's thread, between applies).
    fn snapshot_source(&self) -> Box<dyn SnapshotSource>;
}

/// A committed membership change, as the state machine sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppliedConfChange {
    /// What changed. raft-rs has one change type for "add a voter" and "promote a learner":
    /// both are reported as `AddVoter`, the state machine knows which it was.
    pub change: crate::node::ConfChangeRequest,
    /// The opaque context the proposer attached ([`crate::NodeHandle::conf_change_with`]).
    pub context: Vec<u8>,
}

/// Produces snapshot data of the state machine.
pub trait SnapshotSource: Send {
    /// The state as bytes, with the index of the last entry it reflects.
    fn snapshot(&self) -> Result<(u64, Vec<u8>), StateMachineError>;
}
