//! Physical compaction, off the apply thread.
//!
//! The apply thread records a compaction (the floor readers see moves at commit); the
//! compactor then compacts the key index a chunk at a time and deletes, in batches, every
//! backend revision at or below the compaction revision that the index no longer needs,
//! then records the compaction as finished and makes it durable. Readers never wait for
//! it: a value they miss because it was just deleted is answered as compacted.

use std::sync::mpsc;
use std::sync::Arc;
use std::thread;

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
}

impl Compactor {
    /// Starts the compactor thread. `finished` is the last finished compaction on disk.
    pub(crate) fn start(index: Arc<TreeIndex>, backend: Arc<dyn Backend>, finished: i64) -> Result<Self> {
        let (tx, rx) = mpsc::channel::<i64>();
        let (done_tx, done_rx) = watch::channel(finished);
        thread::Builder::new().name("cairn-compactor".into()).spawn(move || {
            for rev in rx {
                match compact(&index, backend.as_ref(), rev) {
                    Ok(()) => {
                        done_tx.send_replace(rev);
                    }
                    Err(e) => {
                        // the backend is now failed (sticky); waiters keep waiting and the
                        // server reports the fatal error from its next write
                        tracing::error!(revision = rev, error = %e, "compaction failed");
                        return;
                    }
                }
            }
        })?;
        Ok(Compactor { tx, finished: done_rx })
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

fn compact(index: &TreeIndex, backend: &dyn Backend, rev: i64) -> Result<()> {
    let keep = index.compact(rev);
    let end = Revision::main_prefix_start(rev + 1);
    let mut from = Vec::new();
    loop {
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
    backend.sync()
}
