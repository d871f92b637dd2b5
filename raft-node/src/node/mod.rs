//! The driver around raft-rs's `RawNode`.
//!
//! [`RaftNode`] owns the raw node, its [`WalStorage`], the [`StateMachine`] and the
//! [`Transport`]. It does no I/O of its own and starts no threads: the caller feeds it ticks
//! ([`RaftNode::tick`]) and lets it work ([`RaftNode::poll`]), either directly (the
//! deterministic tests) or through the async loop [`RaftNode::run`].
//!
//! # Ready order
//! Each `Ready` is handled in the order raft-rs documents, and nothing else:
//! 1. send `messages` (the leader's appends may go out before its own disk write);
//! 2. install the snapshot (storage first, durably; then the state machine);
//! 3. apply committed entries;
//! 4. append entries to the WAL;
//! 5. persist the hard state; fdatasync when raft says it must;
//! 6. send `persisted_messages` (votes, append responses: only after the sync);
//! 7. `advance`; then, from the `LightReady`: record the commit index, send its messages,
//!    apply its committed entries, `advance_apply`.
//!
//! Pre-vote and check-quorum are always on: a partitioned node cannot disrupt the cluster
//! when it returns, and a leader that loses its quorum steps down.

mod compact;
mod handle;
mod pending;
mod runner;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

// a command's Txn may nest past what prost's derived decoder takes
use cairn_proto::nested::decode_internal_request;
use prost::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeType, ConfChangeV2, Entry, EntryType, Snapshot};
use raft::RawNode;
use raft_prost::Message as _;
use tokio::sync::{mpsc, watch};

pub use handle::{ConfChangeRequest, LeaderInfo, LogRelease, Mailbox, NodeHandle, NodeStatus, ProposeResult, RequestError, Transport};
pub use pending::IdGen;
pub use runner::{IntervalTicker, ManualTicker, Ticker};

use crate::machine::{AppliedConfChange, StateMachine, StateMachineError};
use crate::observe::Observer;
use crate::storage::{StorageError, WalStorage};
use crate::wal::WalOptions;
use handle::{Command, PeerInput};
use pending::Pending;

/// Errors that stop a node. After one, every call fails with [`NodeError::Failed`].
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The raft storage (WAL, snapshot files) failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// raft-rs refused something it must not (a broken invariant).
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    /// The state machine failed.
    #[error(transparent)]
    StateMachine(#[from] StateMachineError),
    /// A committed entry that does not decode.
    #[error("committed entry {index} is corrupt: {detail}")]
    CorruptEntry {
        /// The entry index.
        index: u64,
        /// What failed.
        detail: String,
    },
    /// The state machine is behind the start of the log (its data was lost).
    #[error("state machine at {applied}, but the log starts after {snapshot}")]
    StateMachineBehind {
        /// What the state machine holds.
        applied: u64,
        /// The log's compaction point.
        snapshot: u64,
    },
    /// The state machine is ahead of the log (the log lost acknowledged data).
    #[error("state machine at {applied}, but the log ends at {last}")]
    StateMachineAhead {
        /// What the state machine holds.
        applied: u64,
        /// The log's last index.
        last: u64,
    },
    /// The node failed earlier.
    #[error("raft node failed earlier")]
    Failed,
}

/// How a node runs.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This member's raft id (non-zero).
    pub id: u64,
    /// Ticks without hearing from a leader before an election (etcd: 10 × 100 ms).
    pub election_tick: usize,
    /// Ticks between leader heartbeats.
    pub heartbeat_tick: usize,
    /// The randomized election timeout is drawn from `[min, max)`; 0 means raft's default
    /// (`election_tick`, `2 × election_tick`). A one-tick range makes elections
    /// deterministic (raft-rs draws from a thread-local random source).
    pub min_election_tick: usize,
    /// See `min_election_tick`.
    pub max_election_tick: usize,
    /// Largest append message, in bytes.
    pub max_size_per_msg: u64,
    /// Append messages in flight per follower.
    pub max_inflight_msgs: usize,
    /// Ticks a proposal, conf change or read may wait before it is answered `Timeout`.
    pub request_timeout_ticks: u64,
    /// Ticks after which an unanswered ReadIndex round is sent again.
    pub read_retry_ticks: u64,
    /// Applied entries between log compactions (etcd's `--snapshot-count`).
    pub snapshot_count: u64,
    /// Entries kept behind a compaction so slow followers catch up by log (etcd: 5000).
    pub catchup_entries: u64,
    /// Wall clock at start, in ms since the Unix epoch: where request ids start (see
    /// [`IdGen`]).
    pub request_id_clock_ms: u64,
    /// The WAL's settings.
    pub wal: WalOptions,
}

impl NodeConfig {
    /// etcd-like defaults for member `id` (tick = 100 ms).
    pub fn new(id: u64) -> Self {
        NodeConfig {
            id,
            election_tick: 10,
            heartbeat_tick: 1,
            min_election_tick: 0,
            max_election_tick: 0,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            request_timeout_ticks: 70,
            read_retry_ticks: 5,
            snapshot_count: 10_000,
            catchup_entries: 5_000,
            request_id_clock_ms: 0,
            wal: WalOptions::default(),
        }
    }
}

/// The inbound channel of a node, made before the node so that a transport (which needs
/// the node's [`Mailbox`] to report unreachable peers and snapshot outcomes) can be built
/// first and handed to [`RaftNode::open_with_inbox`].
/// It also carries the [`Observer`] the node, its WAL and the transport report to (every
/// part of the log gets the inbox or one of its mailboxes).
pub struct PeerInbox {
    tx: mpsc::UnboundedSender<PeerInput>,
    rx: mpsc::UnboundedReceiver<PeerInput>,
    observer: Observer,
}

impl PeerInbox {
    /// A fresh inbox, reporting to no observer.
    pub fn new() -> PeerInbox {
        PeerInbox::with_observer(Observer::default())
    }

    /// A fresh inbox whose node, WAL and transport report to `observer`.
    pub fn with_observer(observer: Observer) -> PeerInbox {
        let (tx, rx) = mpsc::unbounded_channel();
        PeerInbox { tx, rx, observer }
    }

    /// The mailbox delivering into this inbox.
    pub fn mailbox(&self) -> Mailbox {
        Mailbox { tx: self.tx.clone(), observer: self.observer.clone() }
    }
}

impl Default for PeerInbox {
    fn default() -> Self {
        PeerInbox::new()
    }
}

/// A raft member: raft-rs's `RawNode` with its storage, state machine and transport.
pub struct RaftNode<M: StateMachine, T: Transport> {
    cfg: NodeConfig,
    raw: RawNode<WalStorage>,
    sm: M,
    transport: T,
    cmd_tx: mpsc::UnboundedSender<Command<M::Output>>,
    cmd_rx: mpsc::UnboundedReceiver<Command<M::Output>>,
    peer_tx: mpsc::UnboundedSender<PeerInput>,
    peer_rx: mpsc::UnboundedReceiver<PeerInput>,
    leader_tx: watch::Sender<LeaderInfo>,
    /// Whether this node is the sole voter's leader, ready for local linearizable reads;
    /// written only here, at the end of each tick and poll ([`NodeHandle::is_sole_leader`]).
    sole_leader: Arc<AtomicBool>,
    /// Where measurements go (metrics).
    observer: Observer,
    pending: Pending<M::Output>,
    ids: IdGen,
    /// Last index applied (normal, empty and conf-change entries, or a snapshot).
    applied: u64,
    /// `applied` at the last compaction.
    compacted_at: u64,
    /// Callers of [`NodeHandle::release_log`] waiting for the next poll to do it.
    release_wanted: Vec<tokio::sync::oneshot::Sender<handle::LogRelease>>,
    now: u64,
    /// The tick (`now`) at which a message from each peer last arrived.
    heard: std::collections::HashMap<u64, u64>,
    /// A campaign was asked for while raft could not start one yet (committed entries, such
    /// as the bootstrap's conf change, still to apply): it starts once they are applied.
    campaign_wanted: bool,
    failed: bool,
    stopped: bool,
}

impl<M: StateMachine, T: Transport> RaftNode<M, T> {
    /// Opens the member whose raft state is in `dir`. With `bootstrap` (the voters of a new
    /// cluster, the same list on every founding member) an empty `dir` is initialized;
    /// without it an empty member waits to be sent the log by a leader (one being added).
    /// A state machine behind an installed snapshot is restored from it first; entries
    /// it has applied are not applied again.
    pub fn open(cfg: NodeConfig, dir: &Path, sm: M, transport: T, bootstrap: Option<&[u64]>) -> Result<Self, NodeError> {
        Self::open_with_inbox(cfg, dir, sm, transport, bootstrap, PeerInbox::new())
    }

    /// [`RaftNode::open`] with an inbox made beforehand (see [`PeerInbox`]).
    pub fn open_with_inbox(
        cfg: NodeConfig,
        dir: &Path,
        mut sm: M,
        transport: T,
        bootstrap: Option<&[u64]>,
        inbox: PeerInbox,
    ) -> Result<Self, NodeError> {
        let mut wal = cfg.wal.clone();
        wal.observer = inbox.observer.clone();
        let mut storage = WalStorage::open(dir, wal, sm.snapshot_source())?;
        if let Some(voters) = bootstrap {
            if !storage.is_initialized() {
                storage.bootstrap(voters)?;
            }
        }
        if let Some((meta, data)) = storage.take_installed_snapshot() {
            if sm.applied_index() < meta.index {
                sm.restore(meta.index, &data)?;
            }
        }
        let (snap_index, _) = storage.snapshot_point();
        let sm_applied = sm.applied_index();
        if sm_applied < snap_index {
            return Err(NodeError::StateMachineBehind { applied: sm_applied, snapshot: snap_index });
        }
        let last = raft::Storage::last_index(&storage)?;
        if sm_applied > last {
            return Err(NodeError::StateMachineAhead { applied: sm_applied, last });
        }
        if sm_applied > storage.hard_state().commit {
            // applied entries were committed; that commit record was not yet synced
            storage.set_commit(sm_applied)?;
        }
        storage.set_applied_hint(sm_applied);
        let rcfg = raft::Config {
            id: cfg.id,
            election_tick: cfg.election_tick,
            heartbeat_tick: cfg.heartbeat_tick,
            min_election_tick: cfg.min_election_tick,
            max_election_tick: cfg.max_election_tick,
            applied: sm_applied,
            max_size_per_msg: cfg.max_size_per_msg,
            max_inflight_msgs: cfg.max_inflight_msgs,
            pre_vote: true,
            check_quorum: true,
            read_only_option: raft::ReadOnlyOption::Safe,
            ..Default::default()
        };
        let raw = RawNode::new(&rcfg, storage, &crate::logger::raft_logger(cfg.id))?;
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let PeerInbox { tx: peer_tx, rx: peer_rx, observer } = inbox;
        let leader = LeaderInfo { id: raw.raft.leader_id, term: raw.raft.term };
        let (leader_tx, _) = watch::channel(leader);
        let applied = sm_applied.max(snap_index);
        let mut ids = IdGen::new(cfg.id, cfg.request_id_clock_ms);
        observe_log_ids(&raw, sm_applied.max(snap_index), &mut ids)?;
        Ok(RaftNode {
            ids,
            pending: Pending::new(cfg.id),
            cfg,
            raw,
            sm,
            transport,
            cmd_tx,
            cmd_rx,
            peer_tx,
            peer_rx,
            leader_tx,
            sole_leader: Arc::new(AtomicBool::new(false)),
            observer,
            applied,
            compacted_at: applied,
            release_wanted: Vec::new(),
            now: 0,
            heard: std::collections::HashMap::new(),
            campaign_wanted: false,
            failed: false,
            stopped: false,
        })
    }

    /// A handle for requests.
    pub fn handle(&self) -> NodeHandle<M::Output> {
        NodeHandle { tx: self.cmd_tx.clone(), leader: self.leader_tx.subscribe(), sole_leader: self.sole_leader.clone() }
    }

    /// Where the transport delivers inbound traffic.
    pub fn mailbox(&self) -> Mailbox {
        Mailbox { tx: self.peer_tx.clone(), observer: self.observer.clone() }
    }

    /// This member's id.
    pub fn id(&self) -> u64 {
        self.cfg.id
    }

    /// The state machine.
    pub fn state_machine(&self) -> &M {
        &self.sm
    }

    /// The transport.
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }

    /// Whether [`NodeHandle::stop`] was processed.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// The node's raft status.
    pub fn status(&self) -> NodeStatus {
        let store = self.raw.store();
        NodeStatus {
            id: self.cfg.id,
            leader: LeaderInfo { id: self.raw.raft.leader_id, term: self.raw.raft.term },
            role: self.raw.raft.state,
            commit: self.raw.raft.raft_log.committed,
            applied: self.applied,
            log: (store.snapshot_point().0 + 1, self.raw.raft.raft_log.last_index()),
            conf: store.conf_state(),
            progress: if self.raw.raft.state == raft::StateRole::Leader {
                let mut p: Vec<(u64, u64)> = self.raw.raft.prs().iter().map(|(id, pr)| (*id, pr.matched)).collect();
                p.sort_unstable();
                p
            } else {
                Vec::new()
            },
            heard: {
                let mut h: Vec<(u64, u64)> = self.heard.iter().map(|(id, at)| (*id, self.now - *at)).collect();
                h.sort_unstable();
                h
            },
        }
    }

    /// Requests in flight: proposals, conf changes, reads.
    pub fn pending_counts(&self) -> (usize, usize, usize) {
        self.pending.counts()
    }

    /// One logical clock tick: raft's election and heartbeat timers, request deadlines.
    pub fn tick(&mut self) {
        self.now += 1;
        self.raw.tick();
        for _ in 0..self.pending.expire(self.now) {
            self.observer.proposal_failed();
        }
        if self.pending.round_age(self.now).is_some_and(|age| age >= self.cfg.read_retry_ticks) {
            self.pending.retry_round();
        }
        self.publish_sole_leader();
    }

    /// Updates the flag behind [`NodeHandle::is_sole_leader`]. Called after every step that
    /// can change the role, the configuration or the log (each tick and each poll), so a
    /// membership change appended here clears it before any later message is handled.
    fn publish_sole_leader(&self) {
        let raft = &self.raw.raft;
        let sole = raft.state == raft::StateRole::Leader
            && raft.prs().is_singleton()
            && raft.promotable()
            && raft.pending_conf_index <= self.applied
            && raft.commit_to_current_term()
            && self.applied >= raft.raft_log.committed;
        self.sole_leader.store(sole, Ordering::Release);
    }

    /// Processes every queued input and the `Ready`s that follow. Returns whether anything
    /// happened.
    pub fn poll(&mut self) -> Result<bool, NodeError> {
        if self.failed {
            return Err(NodeError::Failed);
        }
        let r = self.poll_inner();
        if r.is_err() {
            self.failed = true;
            self.sole_leader.store(false, Ordering::Release);
        } else {
            self.publish_sole_leader();
        }
        r
    }

    fn poll_inner(&mut self) -> Result<bool, NodeError> {
        let mut did = false;
        while let Ok(input) = self.peer_rx.try_recv() {
            did = true;
            self.on_peer(input);
        }
        while let Ok(cmd) = self.cmd_rx.try_recv() {
            did = true;
            self.on_command(cmd);
        }
        self.start_read_round();
        while self.raw.has_ready() {
            did = true;
            self.handle_ready()?;
        }
        if !self.release_wanted.is_empty() {
            self.release_log()?;
        }
        Ok(did)
    }

    fn on_peer(&mut self, input: PeerInput) {
        match input {
            PeerInput::Message(m) => {
                let from = m.from;
                self.heard.insert(from, self.now);
                if let Err(e) = self.raw.step(*m) {
                    // from a member not (or no longer) in the configuration, or malformed
                    tracing::debug!(id = self.cfg.id, from, error = %e, "raft: message ignored");
                }
            }
            PeerInput::Unreachable(peer) => self.raw.report_unreachable(peer),
            PeerInput::Snapshot { to, delivered } => {
                let status = if delivered { raft::SnapshotStatus::Finish } else { raft::SnapshotStatus::Failure };
                self.raw.report_snapshot(to, status);
            }
        }
    }

    fn on_command(&mut self, cmd: Command<M::Output>) {
        let deadline = self.now + self.cfg.request_timeout_ticks;
        match cmd {
            Command::Propose(mut req, tx) => {
                if req.id == 0 {
                    req.id = self.ids.next_id();
                }
                if self.pending.has_proposal(req.id) {
                    let _receiver_may_be_gone = tx.send(Err(RequestError::DuplicateId(req.id)));
                    return;
                }
                match self.raw.propose(Vec::new(), req.encode_to_vec()) {
                    Ok(()) => self.pending.add_proposal(req.id, tx, deadline),
                    Err(_) => {
                        self.observer.proposal_failed();
                        let _receiver_may_be_gone = tx.send(Err(self.refusal()));
                    }
                }
            }
            Command::ConfChange(change, context, tx) => {
                let (change_type, node_id) = match change {
                    ConfChangeRequest::AddVoter(id) | ConfChangeRequest::Promote(id) => (ConfChangeType::AddNode, id),
                    ConfChangeRequest::AddLearner(id) => (ConfChangeType::AddLearnerNode, id),
                    ConfChangeRequest::Remove(id) => (ConfChangeType::RemoveNode, id),
                };
                let cc = ConfChange { change_type: change_type as i32, node_id, ..Default::default() };
                let id = self.ids.next_id();
                // entry context: the request id (8 bytes, big-endian), then the caller's
                let mut ctx = id.to_be_bytes().to_vec();
                ctx.extend_from_slice(&context);
                match self.raw.propose_conf_change(ctx, cc) {
                    Ok(()) => self.pending.add_conf_change(id, tx, deadline),
                    Err(_) => {
                        let _receiver_may_be_gone = tx.send(Err(self.refusal()));
                    }
                }
            }
            Command::Read(tx) => self.pending.add_read(tx, deadline),
            Command::TransferLeader(to) => self.raw.transfer_leader(to),
            Command::Campaign => {
                self.campaign_wanted = true;
                self.campaign_when_ready();
            }
            Command::Status(tx) => {
                let _receiver_may_be_gone = tx.send(self.status());
            }
            Command::ReleaseLog(tx) => self.release_wanted.push(tx),
            Command::Stop => self.stopped = true,
        }
    }

    fn refusal(&self) -> RequestError {
        if self.raw.raft.leader_id == raft::INVALID_ID {
            RequestError::NoLeader
        } else {
            RequestError::Dropped
        }
    }

    fn start_read_round(&mut self) {
        if self.raw.raft.leader_id == raft::INVALID_ID {
            self.pending.retry_round();
            self.pending.fail_queued_reads(RequestError::NoLeader);
            return;
        }
        if let Some(ctx) = self.pending.start_round(self.now) {
            self.raw.read_index(ctx);
        }
    }

    fn publish_leader(&mut self) {
        let info = LeaderInfo { id: self.raw.raft.leader_id, term: self.raw.raft.term };
        let mut new_leader = false;
        let changed = self.leader_tx.send_if_modified(|cur| {
            let changed = *cur != info;
            new_leader = cur.id != info.id;
            *cur = info;
            changed
        });
        if new_leader {
            self.observer.leader_changed(info.id);
        }
        if changed {
            // a round sent to the old leader will not be answered
            self.pending.retry_round();
            // proposals forwarded to (or accepted by) the old leader may be lost: answer
            // them within two election timeouts instead of the full request timeout
            self.pending.hasten_proposals(self.now + 2 * self.cfg.election_tick as u64);
        }
    }

    /// Handles one `Ready` in raft-rs's documented order (see the module docs).
    fn handle_ready(&mut self) -> Result<(), NodeError> {
        let mut rd = self.raw.ready();
        for rs in rd.take_read_states() {
            self.pending.read_state(&rs.request_ctx, rs.index);
        }
        // 1. messages that need no local persistence
        if !rd.messages().is_empty() {
            self.transport.send(rd.take_messages());
        }
        // 2. the snapshot
        if !rd.snapshot().is_empty() {
            self.install_snapshot(rd.snapshot())?;
        }
        // 3. committed entries
        self.apply_entries(rd.take_committed_entries())?;
        // 4. new entries, 5. the hard state, durably
        self.raw.mut_store().append(rd.take_entries())?;
        if let Some(hs) = rd.hs() {
            self.raw.mut_store().set_hard_state(hs)?;
        }
        if rd.must_sync() {
            self.raw.mut_store().sync()?;
        }
        // 6. messages that promise what is now on disk
        if !rd.persisted_messages().is_empty() {
            self.transport.send(rd.take_persisted_messages());
        }
        // 7. advance, and the light ready
        let mut light = self.raw.advance(rd);
        if let Some(commit) = light.commit_index() {
            self.raw.mut_store().set_commit(commit)?;
        }
        if !light.messages().is_empty() {
            self.transport.send(light.take_messages());
        }
        self.apply_entries(light.take_committed_entries())?;
        self.raw.advance_apply();
        self.campaign_when_ready();
        // reads whose index was already applied when raft answered them
        self.pending.applied(self.applied);
        self.publish_leader();
        self.observer.progress(self.raw.raft.raft_log.committed, self.applied, self.pending.proposal_count());
        self.maybe_compact()
    }

    /// Starts the campaign asked for ([`Command::Campaign`]) once raft can: not while a
    /// conf change is still to apply (raft-rs would refuse it), never once a leader is known.
    fn campaign_when_ready(&mut self) {
        // raft-rs refuses a campaign while a committed conf change is unapplied: wait
        // until everything committed is applied
        let log = &self.raw.raft.raft_log;
        if !self.campaign_wanted || log.applied < log.committed || self.raw.raft.has_pending_conf() {
            return;
        }
        self.campaign_wanted = false;
        if self.raw.raft.leader_id != raft::INVALID_ID {
            return;
        }
        if let Err(e) = self.raw.campaign() {
            tracing::warn!(id = self.cfg.id, error = %e, "raft: campaign refused");
        }
    }

    fn install_snapshot(&mut self, snap: &Snapshot) -> Result<(), NodeError> {
        let index = snap.metadata.as_ref().map_or(0, |m| m.index);
        tracing::info!(id = self.cfg.id, index, bytes = snap.data.len(), "raft: installing a snapshot");
        self.raw.mut_store().apply_snapshot(snap)?;
        self.sm.restore(index, &snap.data)?;
        self.applied = index;
        self.compacted_at = index;
        self.pending.applied(self.applied);
        Ok(())
    }

    /// Applies committed entries in order; entries the state machine already holds (a
    /// replay after a restart) are not applied again. Proposers and reads are answered
    /// after the state machine published the batch.
    fn apply_entries(&mut self, entries: Vec<Entry>) -> Result<(), NodeError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut answers = Vec::new();
        for e in entries {
            if e.index <= self.applied {
                continue;
            }
            let fresh = e.index > self.sm.applied_index();
            match EntryType::from_i32(e.entry_type) {
                Some(EntryType::EntryNormal) if e.data.is_empty() => {} // a new leader's empty entry
                Some(EntryType::EntryNormal) => {
                    let req = decode_internal_request(e.data.as_slice())
                        .map_err(|err| NodeError::CorruptEntry { index: e.index, detail: err.to_string() })?;
                    if fresh {
                        let out = self.sm.apply(e.index, &req)?;
                        answers.push((req.id, out));
                    }
                }
                Some(t @ (EntryType::EntryConfChange | EntryType::EntryConfChangeV2)) => {
                    let corrupt = |err: raft_prost::DecodeError| NodeError::CorruptEntry { index: e.index, detail: err.to_string() };
                    let (mut cs, change) = if t == EntryType::EntryConfChange {
                        let cc = ConfChange::decode(e.data.as_slice()).map_err(corrupt)?;
                        let change = match ConfChangeType::from_i32(cc.change_type) {
                            Some(ConfChangeType::AddNode) => Some(ConfChangeRequest::AddVoter(cc.node_id)),
                            Some(ConfChangeType::AddLearnerNode) => Some(ConfChangeRequest::AddLearner(cc.node_id)),
                            Some(ConfChangeType::RemoveNode) => Some(ConfChangeRequest::Remove(cc.node_id)),
                            None => None,
                        };
                        (self.raw.apply_conf_change(&cc)?, change)
                    } else {
                        // never proposed by this driver; applied for raft, not reported
                        (self.raw.apply_conf_change(&ConfChangeV2::decode(e.data.as_slice()).map_err(corrupt)?)?, None)
                    };
                    // raft-rs lists members in hash order; keep them sorted for readers
                    for ids in [&mut cs.voters, &mut cs.learners, &mut cs.voters_outgoing, &mut cs.learners_next] {
                        ids.sort_unstable();
                    }
                    self.raw.mut_store().record_conf_state(e.index, &cs)?;
                    let (id, context) = if e.context.len() >= 8 {
                        let (id, rest) = e.context.split_at(8);
                        (<[u8; 8]>::try_from(id).ok().map(u64::from_be_bytes), rest.to_vec())
                    } else {
                        (None, Vec::new())
                    };
                    if fresh {
                        if let Some(change) = change {
                            self.sm.apply_conf_change(e.index, &cs, &AppliedConfChange { change, context })?;
                        }
                    }
                    if let Some(id) = id {
                        self.pending.complete_conf_change(id, cs);
                    }
                }
                None => {
                    return Err(NodeError::CorruptEntry { index: e.index, detail: format!("entry type {}", e.entry_type) })
                }
            }
            self.applied = e.index;
        }
        self.sm.publish()?;
        for (id, out) in answers {
            self.pending.complete_proposal(id, Ok(out));
        }
        self.pending.applied(self.applied);
        Ok(())
    }
}

/// Entries read per step by [`observe_log_ids`].
const ID_SCAN_CHUNK: u64 = 1024;

/// Passes `ids` the request id of every entry above `applied` (the log tail a previous run
/// may have proposed and that is still to be applied), so new ids start above them.
fn observe_log_ids(raw: &RawNode<WalStorage>, applied: u64, ids: &mut IdGen) -> Result<(), NodeError> {
    let store = raw.store();
    let last = raft::Storage::last_index(store)?;
    let mut low = applied + 1;
    while low <= last {
        let high = (low + ID_SCAN_CHUNK).min(last + 1);
        let entries = raft::Storage::entries(store, low, high, None, raft::GetEntriesContext::empty(false))?;
        for e in &entries {
            match EntryType::from_i32(e.entry_type) {
                Some(EntryType::EntryNormal) if !e.data.is_empty() => {
                    let req = decode_internal_request(e.data.as_slice())
                        .map_err(|err| NodeError::CorruptEntry { index: e.index, detail: err.to_string() })?;
                    ids.observe(req.id);
                }
                Some(EntryType::EntryConfChange | EntryType::EntryConfChangeV2) => {
                    if let Some(id) = e.context.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
                        ids.observe(u64::from_be_bytes(id));
                    }
                }
                _ => {}
            }
        }
        low = high;
    }
    Ok(())
}
