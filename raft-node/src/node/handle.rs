//! How the rest of the server talks to a running node: [`NodeHandle`] for requests,
//! [`Mailbox`] for the transport's inbound traffic, and what they answer.

use cairn_proto::cairnpb::InternalRequest;
use raft::eraftpb::{ConfState, Message};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};

use crate::observe::Observer;

/// Why a request was not carried out. The request may still have been applied when the
/// answer is [`RequestError::Timeout`] (as in etcd, the client cannot know).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// No leader is known (an election is under way, or this node is cut off).
    #[error("no leader")]
    NoLeader,
    /// Not answered within the request timeout.
    #[error("request timed out")]
    Timeout,
    /// Raft refused the proposal (e.g. a leadership transfer is under way).
    #[error("proposal dropped")]
    Dropped,
    /// Another request with this id is still waiting on this node.
    #[error("duplicate request id {0}")]
    DuplicateId(u64),
    /// The node stopped.
    #[error("node stopped")]
    Stopped,
}

/// The leader as this node knows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeaderInfo {
    /// The leader's id; 0 when none is known.
    pub id: u64,
    /// The term this node is in.
    pub term: u64,
}

/// A membership change (proposed as a raft-rs `ConfChange`, one member at a time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfChangeRequest {
    /// Add a voting member.
    AddVoter(u64),
    /// Add a non-voting member (it receives the log but does not vote or count).
    AddLearner(u64),
    /// Make a learner a voter.
    Promote(u64),
    /// Remove a member (voter or learner).
    Remove(u64),
}

/// A snapshot of a node's raft state.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeStatus {
    /// This node's id.
    pub id: u64,
    /// The leader as known here.
    pub leader: LeaderInfo,
    /// This node's role.
    pub role: raft::StateRole,
    /// The commit index.
    pub commit: u64,
    /// The last applied index (including entries the state machine ignores).
    pub applied: u64,
    /// The first and last index of the log held here.
    pub log: (u64, u64),
    /// The conf state in force.
    pub conf: ConfState,
    /// On the leader: every member's matched log index, by member id (empty elsewhere).
    pub progress: Vec<(u64, u64)>,
    /// Every peer a message ever arrived from, with how many ticks ago the last one did, by
    /// member id. A follower hears (mostly) the leader; the leader hears every live member.
    pub heard: Vec<(u64, u64)>,
}

/// The answer to a proposal.
pub type ProposeResult<O> = Result<O, RequestError>;

/// What [`NodeHandle::release_log`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogRelease {
    /// The log's compaction point now: entries up to it are gone.
    pub compacted_to: u64,
    /// WAL segment files deleted.
    pub segments_removed: usize,
}

pub(crate) enum Command<O> {
    Propose(InternalRequest, oneshot::Sender<ProposeResult<O>>),
    ConfChange(ConfChangeRequest, Vec<u8>, oneshot::Sender<Result<ConfState, RequestError>>),
    Read(oneshot::Sender<Result<u64, RequestError>>),
    TransferLeader(u64),
    Campaign,
    Status(oneshot::Sender<NodeStatus>),
    ReleaseLog(oneshot::Sender<LogRelease>),
    Stop,
}

pub(crate) enum PeerInput {
    // boxed: a raft message is large, the other inputs are a few bytes
    Message(Box<Message>),
    Unreachable(u64),
    Snapshot { to: u64, delivered: bool },
}

#[cfg(test)]
impl PeerInput {
    /// For tests outside `node` (the transport's), which cannot name this type: `Ok` a
    /// message; `Err((peer, None))` peer reported unreachable; `Err((to, Some(delivered)))`
    /// a snapshot's fate.
    pub(crate) fn into_result(self) -> Result<Message, (u64, Option<bool>)> {
        match self {
            PeerInput::Message(msg) => Ok(*msg),
            PeerInput::Unreachable(peer) => Err((peer, None)),
            PeerInput::Snapshot { to, delivered } => Err((to, Some(delivered))),
        }
    }
}

/// Requests to a node. Cheap to clone; every method returns at once and the answer
/// arrives on the returned receiver once the node processed the request.
pub struct NodeHandle<O> {
    pub(crate) tx: mpsc::UnboundedSender<Command<O>>,
    pub(crate) leader: watch::Receiver<LeaderInfo>,
    /// Set by the node thread (see `RaftNode::publish_sole_leader`).
    pub(crate) sole_leader: Arc<AtomicBool>,
}

impl<O> Clone for NodeHandle<O> {
    fn clone(&self) -> Self {
        NodeHandle { tx: self.tx.clone(), leader: self.leader.clone(), sole_leader: self.sole_leader.clone() }
    }
}

fn closed<T>() -> oneshot::Receiver<T> {
    oneshot::channel().1
}

impl<O> NodeHandle<O> {
    fn request<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command<O>) -> oneshot::Receiver<T> {
        let (tx, rx) = oneshot::channel();
        match self.tx.send(make(tx)) {
            Ok(()) => rx,
            Err(_) => closed(),
        }
    }

    /// Proposes `req`. A zero `req.id` is replaced by a fresh id unique to this node; the
    /// answer is what applying the entry carrying this id returned, matched by id. A
    /// follower forwards the proposal to the leader. A dropped receiver means the node stopped.
    pub fn propose(&self, req: InternalRequest) -> oneshot::Receiver<ProposeResult<O>> {
        self.request(|tx| Command::Propose(req, tx))
    }

    /// Proposes a membership change; answers the conf state once it is applied here.
    pub fn conf_change(&self, change: ConfChangeRequest) -> oneshot::Receiver<Result<ConfState, RequestError>> {
        self.conf_change_with(change, Vec::new())
    }

    /// Proposes a membership change carrying `context`, which every member's state machine
    /// receives with the applied change (e.g. the new member's URLs).
    pub fn conf_change_with(
        &self,
        change: ConfChangeRequest,
        context: Vec<u8>,
    ) -> oneshot::Receiver<Result<ConfState, RequestError>> {
        self.request(|tx| Command::ConfChange(change, context, tx))
    }

    /// A linearizable read barrier: answers a read index once this node has applied it, so
    /// a local read afterwards sees every write acknowledged before the call. Concurrent
    /// calls share one ReadIndex round.
    pub fn read_index(&self) -> oneshot::Receiver<Result<u64, RequestError>> {
        self.request(Command::Read)
    }

    /// Whether this node is, as of its last loop iteration, the leader and only voter of
    /// its cluster, with an entry of its term committed, everything committed applied and no
    /// membership change in its log still to apply. Then every acknowledged write has been
    /// applied (and published) here, and no other member can commit one without this node:
    /// the local state is as fresh as a ReadIndex round would make it, so a linearizable
    /// read needs no round ([`NodeHandle::read_index`]). The flag can be one iteration
    /// stale; that is safe because another leader needs a second voter, which needs a
    /// membership change this node applies (clearing the flag) long before an election can
    /// end without it.
    pub fn is_sole_leader(&self) -> bool {
        self.sole_leader.load(Ordering::Acquire)
    }

    /// Asks the leader (this node must be it) to hand leadership to `to`.
    pub fn transfer_leader(&self, to: u64) {
        let _ignored_when_stopped = self.tx.send(Command::TransferLeader(to));
    }

    /// Starts an election at once (tests, and a member told to take over).
    pub fn campaign(&self) {
        let _ignored_when_stopped = self.tx.send(Command::Campaign);
    }

    /// The node's status.
    pub fn status(&self) -> oneshot::Receiver<NodeStatus> {
        self.request(Command::Status)
    }

    /// Makes the state machine durable, compacts the log behind it (keeping the
    /// catch-up entries when the configuration has other members) and deletes every WAL
    /// segment that held only what was compacted, the active one included (it is cut):
    /// what an operator's Defragment does to the log. A dropped receiver means the node
    /// stopped (or failed doing it).
    pub fn release_log(&self) -> oneshot::Receiver<LogRelease> {
        self.request(Command::ReleaseLog)
    }

    /// Stops the node's run loop.
    pub fn stop(&self) {
        let _ignored_when_stopped = self.tx.send(Command::Stop);
    }

    /// The leader as this node knows it now.
    pub fn leader(&self) -> LeaderInfo {
        *self.leader.borrow()
    }

    /// Watches leader changes.
    pub fn leader_watch(&self) -> watch::Receiver<LeaderInfo> {
        self.leader.clone()
    }
}

/// Where a transport hands a node what came in from peers.
#[derive(Clone)]
pub struct Mailbox {
    pub(crate) tx: mpsc::UnboundedSender<PeerInput>,
    /// Where the transport reports bytes, heartbeats and failures (metrics).
    pub(crate) observer: Observer,
}

impl Mailbox {
    /// The observer the transport reports to (see [`crate::observe`]).
    pub fn observer(&self) -> &Observer {
        &self.observer
    }

    /// Delivers a raft message from a peer. False if the node is gone.
    pub fn deliver(&self, msg: Message) -> bool {
        self.tx.send(PeerInput::Message(Box::new(msg))).is_ok()
    }

    /// Tells the node that `peer` could not be reached (it then probes it again).
    pub fn report_unreachable(&self, peer: u64) -> bool {
        self.tx.send(PeerInput::Unreachable(peer)).is_ok()
    }

    /// Tells the node whether the snapshot it sent to `to` was delivered.
    pub fn report_snapshot(&self, to: u64, delivered: bool) -> bool {
        self.tx.send(PeerInput::Snapshot { to, delivered }).is_ok()
    }
}

/// Sends raft messages to peers.
pub trait Transport: Send {
    /// Sends each message to its `to` peer. Best effort and never blocking on the
    /// network: raft retries what is lost. A transport should report peers it cannot reach
    /// and the fate of snapshot messages through the sender's [`Mailbox`].
    fn send(&mut self, msgs: Vec<Message>);
}
