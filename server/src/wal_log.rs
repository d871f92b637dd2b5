//! The single-node command log: the group-commit pipeline's WAL.
//!
//! With a log, a batch is made durable by appending every command to the WAL and one
//! fdatasync, and only then applied and published; the backend is made durable lazily by a
//! syncer thread every [`BACKEND_SYNC_INTERVAL`], after which WAL segments it covers are
//! released. After a crash, [`CommandLog::replay`] applies the commands past the backend's
//! durable index again (apply is deterministic, and the store skips indexes it already
//! holds). This is etcd's arrangement: the log carries durability, the backend catches up.
//!
//! Record kinds (the WAL's namespace for this log): [`KIND_COMMAND`] = an encoded
//! `cairnpb.InternalRequest` at its log index.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use cairn_proto::cairnpb::InternalRequest;
use cairn_raft_node::{Wal, WalError, WalOptions, WalRecord};
use cairn_storage::Error as StorageError;
use prost::Message;
use tracing::{error, info};

use crate::group_commit::StateMachine;

/// WAL record kind of a command.
pub const KIND_COMMAND: u8 = 1;
/// How often the backend is made durable behind the log.
pub const BACKEND_SYNC_INTERVAL: Duration = Duration::from_millis(100);

fn wal_error(e: WalError) -> StorageError {
    StorageError::Backend(e.to_string())
}

/// The WAL plus what the pipeline knows about it.
pub struct CommandLog {
    wal: Wal,
    /// Records read at open, consumed by `replay`.
    recovered: Vec<WalRecord>,
    /// Applied index the backend holds durably (written by the syncer thread).
    durable: Arc<AtomicU64>,
    released_upto: u64,
    buf: Vec<u8>,
}

impl CommandLog {
    /// Opens the log in `dir`.
    pub fn open(dir: &Path) -> Result<CommandLog, WalError> {
        let (wal, recovered) = Wal::open(dir, WalOptions::default())?;
        Ok(CommandLog { wal, recovered, durable: Arc::new(AtomicU64::new(0)), released_upto: 0, buf: Vec::new() })
    }

    /// Applies the recovered commands the state machine does not hold yet, then commits
    /// them to the backend. Returns the next free log index.
    pub fn replay<S: StateMachine>(&mut self, sm: &S) -> Result<u64, StorageError> {
        let from = sm.applied_index();
        let mut replayed = 0u64;
        for rec in std::mem::take(&mut self.recovered) {
            if rec.kind != KIND_COMMAND || rec.index <= from {
                continue;
            }
            let cmd = InternalRequest::decode(rec.data.as_slice())
                .map_err(|e| StorageError::Corrupt { what: "wal command", detail: e.to_string() })?;
            match sm.apply(rec.index, &cmd) {
                Err(e) if e.is_fatal() => return Err(e),
                _ => replayed += 1,
            }
        }
        if replayed > 0 {
            sm.commit()?;
            info!(replayed, from, "replayed the command log");
        }
        let durable = sm.applied_index();
        self.durable.store(durable, Ordering::Release);
        Ok(durable.max(self.wal.last_index()) + 1)
    }

    /// Appends `batch` at indexes `first_index..` and makes it durable.
    pub fn persist(&mut self, batch: &[InternalRequest], first_index: u64) -> Result<(), StorageError> {
        for (i, cmd) in batch.iter().enumerate() {
            self.buf.clear();
            cmd.encode(&mut self.buf).map_err(|e| StorageError::Backend(e.to_string()))?;
            self.wal.append(KIND_COMMAND, first_index + i as u64, &self.buf).map_err(wal_error)?;
        }
        self.wal.sync().map_err(wal_error)
    }

    /// Releases WAL segments the backend has made durable.
    pub fn release(&mut self) -> Result<(), StorageError> {
        let durable = self.durable.load(Ordering::Acquire);
        if durable > self.released_upto {
            self.wal.release(durable).map_err(wal_error)?;
            self.released_upto = durable;
        }
        Ok(())
    }

    /// Starts the thread that syncs the backend behind the log; `on_error` halts the
    /// pipeline.
    pub fn start_syncer<S: StateMachine>(
        &self,
        sm: Arc<S>,
        on_error: impl Fn(&StorageError) + Send + 'static,
    ) -> std::io::Result<BackendSyncer> {
        let stop = Arc::new(AtomicBool::new(false));
        let durable = self.durable.clone();
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new().name("cairn-backend-sync".into()).spawn(move || {
            while !stop2.load(Ordering::Acquire) {
                std::thread::park_timeout(BACKEND_SYNC_INTERVAL);
                match sm.sync_backend() {
                    Ok(index) => durable.store(index, Ordering::Release),
                    Err(e) => {
                        error!(error = %e, "backend sync failed");
                        on_error(&e);
                        return;
                    }
                }
            }
        })?;
        Ok(BackendSyncer { stop, thread: Some(thread) })
    }
}

/// The backend syncer thread; stopped (after one last sync) on drop.
pub struct BackendSyncer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for BackendSyncer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            if t.join().is_err() {
                error!("the backend sync thread panicked");
            }
        }
    }
}
