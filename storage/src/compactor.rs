//! Physical compaction, off the apply thread.
//!
//! The apply thread records a compaction (the floor readers see moves at commit); the
//! compactor then compacts the key index a chunk at a time and deletes, in batches, every
//! backend revision at or below the compaction revision that the index no longer needs,
//! then records the compaction as finished and makes it durable. Readers never wait for
//! it: a value they miss because it was just deleted is answered as compacted.
//!
//! A snapshot restore replaces the state the compactor works on, so it [`Compactor::stop`]s
//! it first (aborting a compaction between delete batches: the compaction stays recorded
//! as scheduled but not finished, which is what the state being replaced says anyway) and
//! starts a new one over the restored state.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use tokio::sync::watch;

use crate::backend::{Backend, Bucket, WriteBatch};
use crate::error::Result;
use crate::index::TreeIndex;
use crate::revision::Revision;
use crate::store::META_COMPACT_FINISHED;

/// Revisions deleted per backend batch.
const DELETE_BATCH: usize = 1000;

pub(crate) struct Compactor {
    tx: mpsc::Sender<i64>,
    finished: watch::Receiver<i64>,
    /// Set by `stop`: the thread ends at its next check (between delete batches or jobs).
    abort: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Compactor {
    /// Starts the compactor thread. `finished` is the last finished compaction on disk.
    pub(crate) fn start(index: Arc<TreeIndex>, backend: Arc<dyn Backend>, finished: i64) -> Result<Self> {
        let (tx, rx) = mpsc::channel::<i64>();
        let (done_tx, done_rx) = watch::channel(finished);
        let abort = Arc::new(AtomicBool::new(false));
        let stop = abort.clone();
        let thread = thread::Builder::new().name("cairn-compactor".into()).spawn(move || {
            for rev in rx {
                if stop.load(Ordering::Acquire) {
                    return;
                }
                match compact(&index, backend.as_ref(), rev, &stop) {
                    Ok(true) => {
                        done_tx.send_replace(rev);
                    }
                    Ok(false) => return, // stopped midway
                    Err(e) => {
                        // the backend is now failed (sticky); waiters keep waiting and the
                        // server reports the fatal error from its next write
                        tracing::error!(revision = rev, error = %e, "compaction failed");
                        return;
                    }
                }
            }
        })?;
        Ok(Compactor { tx, finished: done_rx, abort, thread })
    }

    /// Stops the thread and waits for it to end: after this returns the compactor writes
    /// nothing more to the backend and touches the key index no more. Queued compactions
    /// are dropped; one in progress is abandoned between two delete batches (it is still
    /// recorded as scheduled, not finished). Waiters on [`Compactor::finished`] see the
    /// channel close.
    pub(crate) fn stop(self) {
        let Compactor { tx, abort, thread, .. } = self;
        abort.store(true, Ordering::Release);
        drop(tx);
        if thread.join().is_err() {
            tracing::error!("compactor thread panicked");
        }
    }

    /// Queues a compaction at `rev` (already recorded durably as scheduled).
    pub(crate) fn schedule(&self, rev: i64) {
        // the thread only ends with the store
        let _ = self.tx.send(rev);
    }

    pub(crate) fn finished(&self) -> watch::Receiver<i64> {
        self.finished.clone()
    }
}

/// Runs one compaction; `Ok(false)` when `abort` stopped it before it finished.
fn compact(index: &TreeIndex, backend: &dyn Backend, rev: i64, abort: &AtomicBool) -> Result<bool> {
    let keep = index.compact(rev);
    let end = Revision::main_prefix_start(rev + 1);
    let mut from = Vec::new();
    loop {
        if abort.load(Ordering::Acquire) {
            return Ok(false);
        }
        let mut batch = WriteBatch::default();
        let mut last = None;
        backend.scan(Bucket::Key, &from, Some(&end), &mut |k, _| {
            let (r, _) = Revision::from_bytes(k)?;
            if !keep.contains(&r) {
                batch.delete(Bucket::Key, k.to_vec());
            }
            last = Some(k.to_vec());
            Ok(batch.ops.len() < DELETE_BATCH)
        })?;
        let Some(mut last) = last else { break };
        let done = batch.ops.len() < DELETE_BATCH;
        if !batch.is_empty() {
            backend.write(batch)?;
        }
        if done {
            break;
        }
        last.push(0); // resume strictly after the last key seen
        from = last;
    }
    let mut b = WriteBatch::default();
    b.put(Bucket::Meta, META_COMPACT_FINISHED.to_vec(), rev.to_be_bytes().to_vec());
    backend.write(b)?;
    backend.sync()?;
    Ok(true)
}
