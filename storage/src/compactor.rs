//! Physical compaction, off the apply thread.
//!
//! The apply thread records a compaction (the floor readers see moves at commit); the
//! compactor then compacts the key index a chunk at a time and deletes every backend
//! revision at or below the compaction revision that the index no longer needs (range
//! deletions in batches, see `compact`), then records the compaction as finished and makes
//! it durable. Readers never wait for it: a value they miss because it was just deleted is
//! answered as compacted.
//!
//! CPU: the compactor shares two cores with the readers, so it paces itself (`Pacer`:
//! after each index chunk or delete batch it sleeps as long as the step took) and runs in
//! `SCHED_BATCH` (its wake-ups do not preempt readers). It holds no lock while it sleeps.
//!
//! A snapshot restore replaces the state the compactor works on, so it [`Compactor::stop`]s
//! it first (aborting a compaction between delete batches: the compaction stays recorded
//! as scheduled but not finished, which is what the state being replaced says anyway) and
//! starts a new one over the restored state.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::backend::{Backend, Bucket, WriteBatch};
use crate::error::Result;
use crate::index::TreeIndex;
use crate::revision::Revision;
use crate::store::META_COMPACT_FINISHED;

/// Range deletions per backend batch.
const DELETE_BATCH: usize = 100;
/// Time the compactor sleeps after each step, as a multiple of the step's time (`Pacer`):
/// it uses at most half a core. (Measured on `compact-during` at 1M keys: readers' p99
/// during the compaction 2.0–4.6 ms, median 2.8, with it; 4.2–5.8 ms without; 3× was no
/// better than 1× in one run, and on the idle machine 3× gave the same p99 as 1×: what
/// readers wait for is one step, so the index's chunk is small instead, see
/// `index::COMPACT_CHUNK`. BENCHMARKS.md, "Range p99 during a compaction of 1M revisions".)
const PACE: f64 = 1.0;
/// The longest sleep after a step.
const MAX_PAUSE: Duration = Duration::from_millis(20);

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
            batch_scheduling();
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
///
/// The backend entries to delete are every revision at or below `rev` except those the
/// index keeps: the runs between consecutive kept revisions (sorted) and below the first.
/// Each run is one range deletion, so the backend drops whole stretches of the key bucket
/// without reading them (a compaction after every key was written twice is one range);
/// nothing is scanned. Between two revisions of one transaction (`m.s`, `m.s+1`) there is
/// no revision, so no deletion is issued for that gap.
fn compact(index: &TreeIndex, backend: &dyn Backend, rev: i64, abort: &AtomicBool) -> Result<bool> {
    let mut pacer = Pacer::new();
    let keep = index.compact_paced(rev, &mut || pacer.pause());
    let end = Revision::main_prefix_start(rev + 1);
    let mut batch = WriteBatch::default();
    // the first key of the run being built: just past the previous kept revision
    let mut from = Vec::new();
    let mut prev: Option<Revision> = None;
    for &k in keep.iter().take_while(|k| k.main <= rev) {
        if prev.is_none_or(|p| k != Revision::new(p.main, p.sub + 1)) {
            batch.delete_range(Bucket::Key, std::mem::take(&mut from), k.to_bytes(false));
        }
        from = after(k);
        prev = Some(k);
        if batch.ops.len() >= DELETE_BATCH {
            if abort.load(Ordering::Acquire) {
                return Ok(false);
            }
            backend.write(std::mem::take(&mut batch))?;
            pacer.pause();
        }
    }
    if abort.load(Ordering::Acquire) {
        return Ok(false);
    }
    batch.delete_range(Bucket::Key, from, end);
    batch.put(Bucket::Meta, META_COMPACT_FINISHED.to_vec(), rev.to_be_bytes().to_vec());
    backend.write(batch)?;
    backend.sync()?;
    Ok(true)
}

/// Keeps the compactor from holding a core for long: after each step (an index chunk of
/// 100 keys, about 0.1 ms of CPU; a delete batch, a millisecond or two) it sleeps in proportion to the time the
/// step took, so readers and writers sharing the core wait at most one step for it.
struct Pacer {
    since: Instant,
}

impl Pacer {
    fn new() -> Pacer {
        Pacer { since: Instant::now() }
    }

    fn pause(&mut self) {
        thread::sleep(self.since.elapsed().mul_f64(PACE).min(MAX_PAUSE));
        self.since = Instant::now();
    }
}

/// Puts the calling thread in Linux's `SCHED_BATCH` class: same share of the CPU, same
/// priority (so no inversion on the locks it takes), but its wake-ups never preempt a
/// running thread: after each paced sleep it waits for a free core or the running
/// reader's slice to end instead of cutting in.
fn batch_scheduling() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param for the call
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
    if rc != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "compactor: SCHED_BATCH refused; normal scheduling");
    }
}

/// The smallest key above both keys of revision `r` (`r` and its tombstone `r` + `t`).
fn after(r: Revision) -> Vec<u8> {
    let mut k = r.to_bytes(true);
    k.push(0);
    k
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::engine::{open_backend, StorageEngine};

    fn next(rng: &mut u64) -> u64 {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        *rng
    }

    fn bucket(be: &dyn Backend) -> BTreeMap<Vec<u8>, Vec<u8>> {
        let mut m = BTreeMap::new();
        be.scan(Bucket::Key, &[], None, &mut |k, v| {
            m.insert(k.to_vec(), v.to_vec());
            Ok(true)
        })
        .unwrap();
        m
    }

    /// Random histories (transactions of several keys, deletions, keys recreated)
    /// compacted at random revisions, on both engines: afterwards the key bucket holds
    /// exactly the revisions above the compaction and those the index keeps (tombstone
    /// marks included), and the compaction is recorded as finished.
    #[test]
    fn a_compaction_leaves_exactly_the_kept_revisions() {
        for engine in [StorageEngine::PageStore, StorageEngine::Sled] {
            for seed in 1..=4u64 {
                let dir = tempfile::tempdir().unwrap();
                let be = open_backend(dir.path(), engine).unwrap();
                let index = TreeIndex::new();
                let mut rng = seed * 0x9E37_79B9;
                let mut main = 1;
                let mut compacted = 0;
                for round in 0..6 {
                    for _ in 0..300 {
                        main += 1;
                        let mut b = WriteBatch::default();
                        // distinct keys per transaction, as etcd requires
                        let first = next(&mut rng) % 200;
                        for sub in 0..1 + next(&mut rng) % 5 {
                            let key = format!("k{:03}", (first + sub * 37) % 200).into_bytes();
                            let rev = Revision::new(main, sub as i64);
                            let live = index.get(&key, main - 1).is_some();
                            if live && next(&mut rng) % 4 == 0 {
                                index.tombstone(&key, rev).unwrap();
                                b.put(Bucket::Key, rev.to_bytes(true), Vec::new());
                            } else {
                                index.put(&key, rev).unwrap();
                                b.put(Bucket::Key, rev.to_bytes(false), format!("{round}").into_bytes());
                            }
                        }
                        be.write(b).unwrap();
                        index.publish();
                    }
                    let at = compacted + 1 + (next(&mut rng) % (main - compacted) as u64) as i64;
                    let keep = index.keep(at);
                    let mut want = bucket(be.as_ref());
                    want.retain(|k, _| {
                        let (r, _) = Revision::from_bytes(k).unwrap();
                        r.main > at || keep.contains(&r)
                    });
                    assert!(compact(&index, be.as_ref(), at, &AtomicBool::new(false)).unwrap());
                    assert_eq!(bucket(be.as_ref()), want, "{engine:?} seed {seed} round {round} at {at}");
                    let finished = be.get(Bucket::Meta, META_COMPACT_FINISHED).unwrap().unwrap();
                    assert_eq!(finished, at.to_be_bytes());
                    compacted = at;
                }
            }
        }
    }
}
