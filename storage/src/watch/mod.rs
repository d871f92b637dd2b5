//! The watch multiplexer: one [`WatchHub`] per store serves every watch of every client
//! stream with etcd's semantics (etcd: `mvcc/watchable_store.go`, `watcher_group.go`,
//! `api/v3rpc/watch.go`).
//!
//! ```text
//!  apply thread ── commit ──► publish(rev, changes) ─┐  hub lock: match via the index
//!                                                    ├─► stream FIFO (bounded) ──► sender:
//!  gRPC recv ── create / cancel / progress ──────────┘        │                prev_kv, merge,
//!                                                    full ──► park ──► catch-up   fragment
//!                                                               thread (history reads)
//! ```
//!
//! # Pieces
//! * `watcher.rs`: the 56-byte watch record and the slab holding all watches;
//! * `index.rs` + `interval.rs`: synced watches by key: hash table (single keys), hash
//!   table per registered prefix length (prefixes), interval treap (other ranges). A
//!   change costs O(log n + matching watches), never a scan of all watches;
//! * `hub.rs`: publish, create, cancel, park, periodic progress; `progress.rs`:
//!   RequestProgress and its invariant; `catchup.rs`: the catch-up thread, whose history
//!   scans are shared by every unsynced watch needing the same window;
//! * `queue.rs`: each stream's bounded FIFO; `response.rs`: building responses on the
//!   sending side; `stream.rs`: the per-stream handle;
//! * `restore.rs`: resynchronizing every watch after the store restored a snapshot.
//!
//! # Ordering guarantees (per stream)
//! Everything a stream owes its client goes through one FIFO, and every enqueue happens
//! under the hub lock, so: a watch's `created` answer precedes its events; a watch's
//! events are in revision order, each revision's events for it in one response, never
//! duplicated (a watch is fed either by `publish`, while synced, or by the catch-up task,
//! while unsynced, never both), with no gap (a parked watch resumes at the revision it
//! missed); a RequestProgress answer follows every event it covers (`progress.rs`).
//!
//! # Locks, in the order they may be taken
//! 1. `Shared::state`, the hub lock: guards [`hub::HubState`] (the watch slab, the index,
//!    every stream's table, the unsynced sets, pending progress requests, the published
//!    revision). Held briefly by publish (the apply thread), by request handling, and by
//!    the catch-up task to claim and to finish a round; never across history reads,
//!    `prev_kv` reads or awaits. Never take it while holding a queue lock.
//! 2. A stream queue's lock (`queue.rs`): a leaf.
//!
//! The store's own locks are never taken under the hub lock (only its atomics are read).
//!
//! # Memory
//! An idle single-key watch costs its 56-byte record plus a 4-byte slot in its stream's
//! ID table and, if it is the first watch of its key, a 4-byte slot in the key table
//! (hash tables at most 7/8 full), plus the key bytes. `tests/watch_memory.rs` measures it
//! with a counting allocator: about 87 bytes per idle single-key or prefix watch, key
//! bytes excluded, and 270 bytes per idle stream (etcd: ~350 bytes per watch, 18 KB per
//! stream).

mod catchup;
mod hub;
mod index;
mod interval;
mod progress;
mod queue;
mod response;
mod restore;
mod stream;
mod watcher;

#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use parking_lot::Mutex;

pub use queue::Refusal;
pub use stream::WatchStream;

use crate::error::Result;
use crate::store::Store;
use crate::write_txn::Change;
use hub::HubState;
use queue::StreamQueue;

/// Most revisions of one watch's events in one catch-up response (etcd's
/// `watchBatchMaxRevs`): a watch further behind gets its backlog in responses of this many
/// revisions (counting only revisions with events for it), all events of a revision in the
/// same response.
pub const WATCH_BATCH_MAX_REVS: usize = 1000;

/// Tuning of a [`WatchHub`].
#[derive(Clone, Debug)]
pub struct HubConfig {
    /// Event responses a stream may have waiting before its watches are parked and caught
    /// up from history instead.
    pub queue_capacity: usize,
    /// Bytes of keys and values a stream may have waiting (at least one response's worth
    /// whatever its size) before its watches are parked.
    pub queue_bytes: usize,
    /// The size at which a `fragment` watch's responses are split. etcd splits at
    /// `--max-request-bytes` plus its 512 KiB gRPC allowance; the server passes that sum.
    pub max_request_bytes: usize,
    /// Most revisions one catch-up scan reads.
    pub catchup_window_revs: i64,
    /// Bytes of values after which a catch-up scan stops (at a revision boundary). etcd
    /// reads the whole backlog at once; a batch of values larger than this may be sent in
    /// more responses than etcd sends.
    pub catchup_window_bytes: usize,
    /// Most watches one catch-up round serves.
    pub catchup_max_watches: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            queue_capacity: 1024,
            queue_bytes: 16 << 20,
            max_request_bytes: 1536 * 1024,
            catchup_window_revs: 10_000,
            catchup_window_bytes: 64 << 20,
            catchup_max_watches: 10_000,
        }
    }
}

/// Counters of a hub (tests, metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HubStats {
    /// The newest revision published.
    pub published: i64,
    /// Open streams.
    pub streams: usize,
    /// Watches, in any state.
    pub watches: usize,
    /// Watches waiting for the catch-up task.
    pub unsynced: usize,
}

/// What the hub, its streams and its catch-up thread share.
pub(crate) struct Shared {
    pub store: Arc<Store>,
    pub cfg: HubConfig,
    /// The hub lock (see the module docs).
    pub state: Mutex<HubState>,
    /// `state.published`, readable without the lock.
    published: AtomicI64,
    /// The store's restore count (`Store::restore_mark`) the hub has resynchronized for
    /// (`restore.rs`). Written only under the hub lock.
    restores_seen: AtomicU64,
    wake_tx: mpsc::Sender<()>,
    /// A wake-up is queued and not yet consumed: later ones are redundant.
    pub wake_pending: AtomicBool,
}

impl Shared {
    pub fn wake_catchup(&self) {
        if !self.wake_pending.swap(true, Ordering::SeqCst) && self.wake_tx.send(()).is_err() {
            tracing::debug!("watch catch-up thread is gone");
        }
    }
}

/// The watch multiplexer of one store (see the module docs). Cheap to clone.
#[derive(Clone)]
pub struct WatchHub {
    shared: Arc<Shared>,
}

impl WatchHub {
    /// A hub over `store`, starting at its committed revision, with its catch-up thread.
    /// The thread ends when the last clone of the hub and every stream are dropped.
    pub fn new(store: Arc<Store>, cfg: HubConfig) -> Result<WatchHub> {
        let (wake_tx, wake_rx) = mpsc::channel();
        // read the mark first: a restore after it is then seen by the first publish
        let restores_seen = store.restore_mark().count;
        let published = store.revision();
        let shared = Arc::new(Shared {
            store,
            cfg,
            state: Mutex::new(HubState::new(published)),
            published: AtomicI64::new(published),
            restores_seen: AtomicU64::new(restores_seen),
            wake_tx,
            wake_pending: AtomicBool::new(false),
        });
        let weak = Arc::downgrade(&shared);
        std::thread::Builder::new().name("cairn-watch-catchup".into()).spawn(move || catchup::run(weak, wake_rx))?;
        Ok(WatchHub { shared })
    }

    /// Publishes what a [`Store::commit`] made durable, in its order. Called by the one
    /// thread that commits, right after each commit; never waits for a client. If the
    /// store restored a snapshot the hub has not resynchronized for, that is done first
    /// (see [`WatchHub::resync_after_restore`]).
    pub fn publish(&self, committed: Vec<(i64, Vec<Change>)>) {
        // the store's lock is never taken under the hub lock
        let mark = self.shared.store.restore_mark();
        if committed.is_empty() && mark.count <= self.shared.restores_seen.load(Ordering::Acquire) {
            return;
        }
        let mut st = self.shared.state.lock();
        let wake = self.shared.resync_if_restored_locked(&mut st, mark);
        for (rev, changes) in committed {
            st.publish_locked(rev, changes);
        }
        st.answer_waiting_locked();
        self.shared.published.store(st.published, Ordering::Release);
        drop(st);
        if wake {
            self.shared.wake_catchup();
        }
    }

    /// A new watch stream.
    pub fn open_stream(&self) -> WatchStream {
        let queue = Arc::new(StreamQueue::new(self.shared.cfg.queue_capacity, self.shared.cfg.queue_bytes));
        let slot = self.shared.state.lock().open_stream_locked(queue.clone());
        WatchStream { shared: self.shared.clone(), slot, queue, closed: AtomicBool::new(false) }
    }

    /// The newest published revision (what response headers report).
    pub fn revision(&self) -> i64 {
        self.shared.published.load(Ordering::Acquire)
    }

    /// The store the hub reads history from.
    pub fn store(&self) -> &Arc<Store> {
        &self.shared.store
    }

    /// Current counters.
    pub fn stats(&self) -> HubStats {
        let st = self.shared.state.lock();
        HubStats {
            published: st.published,
            streams: st.streams.len(),
            watches: st.watches.len(),
            unsynced: st.lagging.iter().filter_map(|&s| st.streams.get(s)).map(|s| s.behind.len()).sum(),
        }
    }
}
