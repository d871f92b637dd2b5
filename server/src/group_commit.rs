//! The single-node write pipeline: one thread applies commands in arrival order and makes
//! each batch durable with one commit (group commit).
//!
//! ```text
//!  gRPC tasks ── propose() ──► bounded queue ──► apply thread
//!      │ register id → oneshot                     │ drain ≤ MAX_BATCH commands
//!      │                                           │ apply(index, cmd) for each
//!      │                                           │ commit()  (one fsync for the batch)
//!      ◄──────────── reply by request id ──────────┘
//! ```
//!
//! Replies are matched to waiters by request id through the `waiters` map (like etcd's
//! `wait.Wait`), never by queue position, so the same map serves when Raft delivers committed
//! entries instead. A fatal storage error halts the pipeline for good: the batch it hit and
//! every later proposal fail, and nothing staged after the last successful commit is
//! acknowledged.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use cairn_proto::cairnpb::internal_request::Request;
use cairn_proto::cairnpb::InternalRequest;
use cairn_storage::{ApplyResponse, Error as StorageError, Store};
use parking_lot::Mutex;
use prost::Message;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error};

use crate::error::RequestError;
use crate::proposer::Proposer;
use crate::wal_log::{BackendSyncer, CommandLog};

/// Most commands applied under one commit.
pub const MAX_BATCH: usize = 1024;
/// Commands that may wait in the queue; proposers wait (backpressure) beyond it.
const QUEUE_CAPACITY: usize = 4 * MAX_BATCH;

/// What the pipeline needs from storage. [`Store`] is the real one; tests use failing fakes.
pub trait StateMachine: Send + Sync + 'static {
    /// The index of the last command applied and committed.
    fn applied_index(&self) -> u64;
    /// Applies one command, staged until [`StateMachine::commit`]. Deterministic.
    fn apply(&self, index: u64, request: &InternalRequest) -> Result<ApplyResponse, StorageError>;
    /// Makes everything staged durable, then visible to readers.
    fn commit(&self) -> Result<(), StorageError>;
    /// Makes everything applied visible to readers; called only once the applied commands
    /// are durable in the WAL.
    fn publish(&self) -> Result<(), StorageError> {
        self.commit()
    }
    /// Makes the backend durable up to what is applied; returns that index (WAL records at
    /// or below it are no longer needed).
    fn sync_backend(&self) -> Result<u64, StorageError> {
        self.commit().map(|()| self.applied_index())
    }
}

impl StateMachine for Store {
    fn applied_index(&self) -> u64 {
        Store::applied_index(self)
    }
    fn apply(&self, index: u64, request: &InternalRequest) -> Result<ApplyResponse, StorageError> {
        Store::apply(self, index, request)
    }
    fn commit(&self) -> Result<(), StorageError> {
        // The store alone drops the committed changes; `watch::WatchedStore` is the state
        // machine that also publishes them to the watch hub.
        Store::commit(self).map(drop)
    }
    fn publish(&self) -> Result<(), StorageError> {
        Store::publish(self).map(drop)
    }
    fn sync_backend(&self) -> Result<u64, StorageError> {
        Store::sync_backend(self)
    }
}

type Reply = Result<ApplyResponse, RequestError>;

enum Msg {
    Propose(InternalRequest),
    /// Apply what is queued before this, commit, and exit.
    Stop,
}

/// State shared by proposers and the apply thread.
struct Shared {
    /// Next request id (see [`request_id_base`]).
    next_id: AtomicU64,
    /// Proposals waiting for their reply, by request id.
    ///
    /// Lock: guards only this map. It is a leaf: never held while taking another lock,
    /// awaiting, sending on a channel that can block, or calling into storage.
    waiters: Mutex<HashMap<u64, oneshot::Sender<Reply>>>,
    /// Set once by the first fatal error; the pipeline accepts nothing after it.
    halted: OnceLock<Arc<str>>,
}

impl Shared {
    fn trigger(&self, id: u64, reply: Reply) {
        let waiter = self.waiters.lock().remove(&id);
        match waiter {
            Some(tx) => {
                if tx.send(reply).is_err() {
                    debug!(id, "proposal result dropped: its caller went away");
                }
            }
            None => debug!(id, "no waiter for proposal result"),
        }
    }

    fn halt(&self, err: &StorageError) -> Arc<str> {
        let reason: Arc<str> = err.to_string().into();
        if self.halted.set(reason.clone()).is_ok() {
            error!(error = %err, "fatal storage error: the write pipeline is halted; restart the member");
        }
        self.halted.get().cloned().unwrap_or(reason)
    }
}

/// A request-id base unique across restarts and members, as etcd's `idutil` builds it: the
/// low 16 bits of the member ID, then 40 bits of a millisecond timestamp, then an 8-bit
/// counter that the pipeline increments (carrying into the timestamp bits).
pub fn request_id_base(member_id: u64, unix_millis: u64) -> u64 {
    ((member_id & 0xffff) << 48) | ((unix_millis & ((1 << 40) - 1)) << 8)
}

/// Options for [`GroupCommitProposer::start`].
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// First request id (see [`request_id_base`]).
    pub first_request_id: u64,
    /// Largest encoded command accepted (`--max-request-bytes`).
    pub max_request_bytes: usize,
}

/// The single-node [`Proposer`]: applies on one dedicated thread with group commit.
pub struct GroupCommitProposer {
    shared: Arc<Shared>,
    queue: mpsc::Sender<Msg>,
    max_request_bytes: usize,
    /// The apply thread, taken by [`GroupCommitProposer::shutdown`].
    /// Lock: guards only the handle; a leaf lock, released before joining.
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl GroupCommitProposer {
    /// Starts the apply thread over `state_machine`.
    pub fn start<S: StateMachine>(
        state_machine: Arc<S>,
        options: Options,
    ) -> std::io::Result<GroupCommitProposer> {
        Self::start_inner(state_machine, options, None)
    }

    /// Starts the apply thread over `state_machine` with a command log: commands are made
    /// durable in the WAL before they are applied, and the backend is synced behind it.
    /// Replays the log first, blocking the caller until done (commands the backend lost in a
    /// crash): nothing may be served before.
    pub fn start_with_log<S: StateMachine>(
        state_machine: Arc<S>,
        options: Options,
        log: CommandLog,
    ) -> std::io::Result<GroupCommitProposer> {
        Self::start_inner(state_machine, options, Some(log))
    }

    fn start_inner<S: StateMachine>(
        state_machine: Arc<S>,
        options: Options,
        mut log: Option<CommandLog>,
    ) -> std::io::Result<GroupCommitProposer> {
        // Replay before anything is served: a reader must never see the state from before
        // the crash once a write after it was acknowledged (so this blocks the caller).
        let mut first_index = state_machine.applied_index() + 1;
        let mut replay_error = None;
        if let Some(log) = &mut log {
            match log.replay(state_machine.as_ref()) {
                Ok(next) => first_index = next,
                Err(e) => replay_error = Some(e),
            }
        }
        let shared = Arc::new(Shared {
            next_id: AtomicU64::new(options.first_request_id),
            waiters: Mutex::new(HashMap::new()),
            halted: OnceLock::new(),
        });
        if let Some(e) = &replay_error {
            shared.halt(e);
        }
        let (queue, rx) = mpsc::channel(QUEUE_CAPACITY);
        let syncer = match &log {
            Some(log) => {
                let halt_on = shared.clone();
                Some(log.start_syncer(state_machine.clone(), move |e| {
                    halt_on.halt(e);
                })?)
            }
            None => None,
        };
        let worker = Worker {
            state_machine,
            rx,
            shared: shared.clone(),
            log,
            syncer,
        };
        let thread = std::thread::Builder::new()
            .name("cairn-apply".into())
            .spawn(move || worker.run(first_index))?;
        Ok(GroupCommitProposer {
            shared,
            queue,
            max_request_bytes: options.max_request_bytes,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Why the pipeline is halted, once a fatal storage error has halted it (for health
    /// checks: a halted member still serves reads but accepts no writes).
    pub fn halted(&self) -> Option<Arc<str>> {
        self.shared.halted.get().cloned()
    }

    /// Applies and commits everything queued so far, then stops the thread. Later proposals
    /// fail with [`RequestError::Stopped`].
    pub async fn shutdown(&self) {
        if self.queue.send(Msg::Stop).await.is_err() {
            debug!("apply thread already gone");
        }
        let handle = self.thread.lock().take();
        if let Some(handle) = handle {
            match tokio::task::spawn_blocking(move || handle.join()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => error!("the apply thread panicked"),
                Err(e) => error!(error = %e, "joining the apply thread failed"),
            }
        }
    }
}

/// Removes a waiter when its proposal is abandoned (future dropped) or answered.
struct WaiterGuard<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        self.shared.waiters.lock().remove(&self.id);
    }
}

impl Proposer for GroupCommitProposer {
    async fn propose(&self, request: Request) -> Result<ApplyResponse, RequestError> {
        if let Some(reason) = self.shared.halted.get() {
            return Err(RequestError::Halted(reason.clone()));
        }
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let command = InternalRequest {
            id,
            request: Some(request),
        };
        if command.encoded_len() > self.max_request_bytes {
            return Err(StorageError::RequestTooLarge.into());
        }
        let (tx, rx) = oneshot::channel();
        self.shared.waiters.lock().insert(id, tx);
        let _guard = WaiterGuard {
            shared: &self.shared,
            id,
        };
        self.queue
            .send(Msg::Propose(command))
            .await
            .map_err(|_| RequestError::Stopped)?;
        // The sender is dropped without a reply only when the apply thread has exited.
        rx.await.map_err(|_| RequestError::Stopped)?
    }

    fn halted(&self) -> Option<Arc<str>> {
        GroupCommitProposer::halted(self)
    }
}

/// The apply thread's state. Dropping it (normal exit or panic) fails every waiter left.
struct Worker<S: StateMachine> {
    state_machine: Arc<S>,
    rx: mpsc::Receiver<Msg>,
    shared: Arc<Shared>,
    /// The WAL, when the pipeline has one (see `wal_log.rs`); without it every batch is
    /// made durable by a backend commit.
    log: Option<CommandLog>,
    /// Syncs the backend behind the log; dropped (stopped) with the worker.
    syncer: Option<BackendSyncer>,
}

impl<S: StateMachine> Worker<S> {
    fn run(mut self, first_index: u64) {
        let mut next_index = first_index;
        let mut batch: Vec<InternalRequest> = Vec::with_capacity(MAX_BATCH);
        let mut replies: Vec<Reply> = Vec::with_capacity(MAX_BATCH);
        loop {
            let mut stop = match self.rx.blocking_recv() {
                Some(Msg::Propose(command)) => {
                    batch.push(command);
                    false
                }
                Some(Msg::Stop) | None => true,
            };
            while !stop && batch.len() < MAX_BATCH {
                match self.rx.try_recv() {
                    Ok(Msg::Propose(command)) => batch.push(command),
                    Ok(Msg::Stop) => stop = true,
                    Err(_) => break,
                }
            }
            self.apply_batch(&batch, &mut next_index, &mut replies);
            for (command, reply) in batch.drain(..).zip(replies.drain(..)) {
                self.shared.trigger(command.id, reply);
            }
            if let Some(log) = &mut self.log {
                if let Err(e) = log.release() {
                    self.shared.halt(&e);
                }
            }
            if stop {
                // leave a durable backend behind: a clean restart replays nothing
                self.syncer.take();
                if self.log.is_some() && self.shared.halted.get().is_none() {
                    if let Err(e) = self.state_machine.commit() {
                        self.shared.halt(&e);
                    }
                }
                return;
            }
        }
    }

    /// Applies `batch` and commits it once; fills `replies` in the same order.
    fn apply_batch(
        &mut self,
        batch: &[InternalRequest],
        next_index: &mut u64,
        replies: &mut Vec<Reply>,
    ) {
        if batch.is_empty() {
            return;
        }
        let mut halted = self.shared.halted.get().cloned();
        if halted.is_none() {
            if let Some(log) = &mut self.log {
                // durable in the WAL before anything is applied or visible
                if let Err(e) = log.persist(batch, *next_index) {
                    halted = Some(self.shared.halt(&e));
                }
            }
        }
        if halted.is_none() {
            for command in batch {
                let index = *next_index;
                *next_index += 1;
                match self.state_machine.apply(index, command) {
                    Ok(response) => replies.push(Ok(response)),
                    Err(e) if e.is_fatal() => {
                        halted = Some(self.shared.halt(&e));
                        break;
                    }
                    // A deterministic rejection: it changed nothing, the index is still used.
                    Err(e) => replies.push(Err(RequestError::Storage(e))),
                }
            }
        }
        if halted.is_none() {
            let visible = if self.log.is_some() {
                self.state_machine.publish()
            } else {
                self.state_machine.commit()
            };
            if let Err(e) = visible {
                halted = Some(self.shared.halt(&e));
            }
        }
        if let Some(reason) = halted {
            // Nothing of this batch is durable: acknowledge none of it.
            replies.clear();
            replies.extend(
                batch
                    .iter()
                    .map(|_| Err(RequestError::Halted(reason.clone()))),
            );
        }
    }
}

impl<S: StateMachine> Drop for Worker<S> {
    fn drop(&mut self) {
        // Refuse new commands first, then fail those already queued and any waiter left
        // (dropping a sender wakes its proposer with `Stopped`).
        self.rx.close();
        while let Ok(msg) = self.rx.try_recv() {
            if let Msg::Propose(command) = msg {
                self.shared.trigger(command.id, Err(RequestError::Stopped));
            }
        }
        self.shared.waiters.lock().clear();
    }
}

#[cfg(test)]
#[path = "group_commit_tests.rs"]
mod tests;
