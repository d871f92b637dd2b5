//! The values the storage interface takes and returns, and the watch channel.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::task::AtomicWaker;
use parking_lot::Mutex;

use super::error::StorageError;

/// A stored object: raw bytes under a key, at a resource version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Object {
    /// The key (relative to the tenant prefix, in a tenant view).
    pub key: Vec<u8>,
    /// The value bytes.
    pub value: Vec<u8>,
    /// The resource version: the key's mod revision (for a deleted object in a watch event or
    /// a `delete` answer: the revision of the deletion).
    pub resource_version: i64,
}

/// How a non-zero resource version is matched (kube's `resourceVersionMatch`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RvMatch {
    /// Read the latest state, which must be at least the given resource version.
    #[default]
    NotOlderThan,
    /// Read the state at exactly the given resource version.
    Exact,
}

/// Options of `get`.
#[derive(Clone, Copy, Debug, Default)]
pub struct GetOptions {
    /// 0: the latest state (a linearizable read). Otherwise see `rv_match`.
    pub resource_version: i64,
    /// How a non-zero `resource_version` is matched.
    pub rv_match: RvMatch,
    /// Answer `Ok(None)` instead of `NotFound` for a missing key.
    pub ignore_not_found: bool,
}

/// Options of `get_list`.
#[derive(Clone, Debug, Default)]
pub struct ListOptions {
    /// 0: the latest state (linearizable). Must be 0 with a continue token.
    pub resource_version: i64,
    /// How a non-zero `resource_version` is matched.
    pub rv_match: RvMatch,
    /// At most this many items per page; 0: no limit.
    pub limit: i64,
    /// The token of the previous page.
    pub continue_token: Option<String>,
}

/// One page of a list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct List {
    /// The items, in key order.
    pub items: Vec<Object>,
    /// The revision the whole list (every page) is read at.
    pub resource_version: i64,
    /// Present when more items follow: pass it in the next `ListOptions`.
    pub continue_token: Option<String>,
    /// With a continue token: how many items follow this page.
    pub remaining_item_count: Option<i64>,
}

/// Conditions an update or delete checks against the stored object.
#[derive(Clone, Copy, Debug, Default)]
pub struct Preconditions {
    /// The object's resource version must be this one.
    pub resource_version: Option<i64>,
}

/// Options of `guaranteed_update`.
#[derive(Clone, Debug, Default)]
pub struct UpdateOptions {
    /// Checked against the current object before every `try_update`.
    pub preconditions: Preconditions,
    /// Call `try_update(None)` for a missing key (and create it) instead of `NotFound`.
    pub ignore_not_found: bool,
    /// A possibly stale copy of the object (kube's `cachedExistingObject`): used instead of a
    /// first read; when it turns out stale the loop re-reads.
    pub cached: Option<Object>,
}

/// Options of `watch`.
#[derive(Clone, Copy, Debug, Default)]
pub struct WatchOptions {
    /// 0: first an `Added` event for every existing object (the state at revision R), then
    /// the changes after R. Otherwise: the changes after this resource version.
    pub resource_version: i64,
    /// Watch every key under the given prefix (true) or the one key (false).
    pub recursive: bool,
    /// Ask the server for periodic progress notifications (`Bookmark` events) while idle.
    pub progress_notify: bool,
}

/// One watch event.
#[derive(Debug)]
pub enum WatchEvent {
    /// The object was created at its resource version.
    Added(Object),
    /// The object was modified; its new state.
    Modified(Object),
    /// The object was deleted: its last value, at the deletion's revision. The value is empty
    /// when the server no longer had the previous version.
    Deleted(Object),
    /// Every event up to this revision was delivered (a progress notification).
    Bookmark(i64),
    /// The watch failed and ends (e.g. `Expired` when its start was compacted).
    Error(StorageError),
}

impl WatchEvent {
    /// The revision an event reports: the object's resource version or the bookmark's.
    pub fn revision(&self) -> Option<i64> {
        match self {
            WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o) => Some(o.resource_version),
            WatchEvent::Bookmark(rv) => Some(*rv),
            WatchEvent::Error(_) => None,
        }
    }

    fn strip_key_prefix(mut self, n: usize) -> WatchEvent {
        match &mut self {
            WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o) => {
                if o.key.len() >= n {
                    o.key.drain(..n);
                }
            }
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(e) => {
                let e = std::mem::replace(e, StorageError::Closed);
                return WatchEvent::Error(e.strip_key_prefix(n));
            }
        }
        self
    }
}

/// The events of one watch not yet taken by its consumer. Bounded by the sender; adjacent
/// bookmarks collapse into the newest (a bookmark only says "everything up to here was
/// delivered", so when nothing was queued after the previous one, the newer one replaces
/// it): a consumer that is behind holds at most one bookmark between two events.
#[derive(Default)]
struct QueueState {
    events: VecDeque<WatchEvent>,
    /// The sender is gone: no more events after `events`.
    closed: bool,
    /// The sender found the queue full and stopped the watch.
    overflowed: bool,
    /// The consumer dropped its `Watcher`.
    receiver_gone: bool,
}

/// `state` is a leaf lock, never held across an await or a wake-up.
struct Queue {
    state: Mutex<QueueState>,
    waker: AtomicWaker,
}

/// The producer side of one watch: never blocks. A full queue stops the watch (the consumer
/// then reads `Error(WatchTooSlow)` after the queued events), so one slow consumer never
/// holds up the others sharing a stream.
pub(crate) struct WatchSender {
    queue: Arc<Queue>,
    capacity: usize,
}

impl WatchSender {
    /// Queues `ev`. False when the watch is gone: the consumer dropped it, or its queue was
    /// full (then it is marked overflowed). After false the caller must drop this sender.
    pub(crate) fn send(&self, ev: WatchEvent) -> bool {
        {
            let mut st = self.queue.state.lock();
            if st.receiver_gone || st.overflowed {
                return false;
            }
            let full = st.events.len() >= self.capacity;
            match (&ev, st.events.back_mut()) {
                (WatchEvent::Bookmark(rev), Some(WatchEvent::Bookmark(last))) => *last = (*last).max(*rev),
                _ if full => {
                    st.overflowed = true;
                    drop(st);
                    self.queue.waker.wake();
                    return false;
                }
                _ => st.events.push_back(ev),
            }
        }
        self.queue.waker.wake();
        true
    }

    /// True when the consumer dropped its `Watcher`.
    pub(crate) fn is_closed(&self) -> bool {
        self.queue.state.lock().receiver_gone
    }
}

impl Drop for WatchSender {
    fn drop(&mut self) {
        self.queue.state.lock().closed = true;
        self.queue.waker.wake();
    }
}

/// Cancels the server-side watch when the consumer drops its `Watcher`.
pub(crate) type CancelGuard = Box<dyn FnOnce() + Send>;

/// A running watch: its events in order, ending after an `Error` event or when the storage
/// goes away. Dropping it cancels the watch.
pub struct Watcher {
    initial: VecDeque<WatchEvent>,
    queue: Arc<Queue>,
    strip: usize,
    finished: bool,
    cancel: Option<CancelGuard>,
}

/// A new watch channel holding up to `capacity` undelivered events.
pub(crate) fn watch_channel(capacity: usize) -> (WatchSender, Watcher) {
    let queue = Arc::new(Queue { state: Mutex::new(QueueState::default()), waker: AtomicWaker::new() });
    let sender = WatchSender { queue: queue.clone(), capacity: capacity.max(1) };
    let watcher = Watcher { initial: VecDeque::new(), queue, strip: 0, finished: false, cancel: None };
    (sender, watcher)
}

impl Watcher {
    /// The next event; `None` once the watch ended.
    pub async fn next(&mut self) -> Option<WatchEvent> {
        std::future::poll_fn(|cx| self.poll_next_event(cx)).await
    }

    fn poll_next_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<WatchEvent>> {
        if self.finished {
            return Poll::Ready(None);
        }
        let ev = match self.initial.pop_front() {
            Some(ev) => ev,
            None => {
                // Register first, then look: a send after the look wakes this task.
                self.queue.waker.register(cx.waker());
                let mut st = self.queue.state.lock();
                match st.events.pop_front() {
                    Some(ev) => ev,
                    None if st.overflowed => {
                        self.finished = true;
                        return Poll::Ready(Some(WatchEvent::Error(StorageError::WatchTooSlow)));
                    }
                    None if st.closed => {
                        self.finished = true;
                        return Poll::Ready(Some(WatchEvent::Error(StorageError::Closed)));
                    }
                    None => return Poll::Pending,
                }
            }
        };
        if matches!(ev, WatchEvent::Error(_)) {
            self.finished = true;
        }
        Poll::Ready(Some(ev.strip_key_prefix(self.strip)))
    }

    /// Events to deliver before the channel's (a watch from resource version 0 starts with
    /// the current state).
    pub(crate) fn with_initial(mut self, events: Vec<WatchEvent>) -> Self {
        self.initial.extend(events);
        self
    }

    /// Sets what cancels the watch when this is dropped.
    pub(crate) fn with_cancel(mut self, cancel: CancelGuard) -> Self {
        self.cancel = Some(cancel);
        self
    }

    /// Reports keys without their first `n` bytes (a tenant view's prefix).
    pub(crate) fn strip_key_prefix(mut self, n: usize) -> Self {
        self.strip += n;
        self
    }
}

impl futures::Stream for Watcher {
    type Item = WatchEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<WatchEvent>> {
        self.get_mut().poll_next_event(cx)
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.queue.state.lock().receiver_gone = true;
        if let Some(cancel) = self.cancel.take() {
            cancel();
        }
    }
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher").field("strip", &self.strip).field("finished", &self.finished).finish()
    }
}
