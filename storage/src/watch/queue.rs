//! A stream's outgoing FIFO: everything its watches are owed, in the order the client must
//! see it. The hub enqueues (under the hub lock); the stream's sender dequeues, fetching
//! `prev_kv` and building the responses (`response.rs`) outside every hub lock.
//!
//! Bound: at most `capacity` *event* items (events and periodic progress notifications),
//! holding at most `max_bytes` of keys and values (at least one item whatever its size),
//! wait in the queue. Publishing into a full queue does not wait: the watch is parked
//! (`hub.rs`) and caught up from history later. Control items (created, cancelled,
//! compacted, answers to RequestProgress) are never refused, so nothing a client asked
//! for is ever dropped; there is at most one per request the client sent (plus one per
//! watch a compaction cancels). They are bounded upstream instead: the server reads the
//! next request only while fewer than a bound of them wait ([`StreamQueue::control_room`]),
//! so a client that sends requests faster than it reads answers is held back by HTTP/2
//! flow control.
//!
//! Lock: `inner` guards the items and counters. It is a leaf: taken under the hub lock by
//! the hub, alone by the sender, and nothing is locked or awaited while it is held.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::write_txn::Change;

/// The changes of one committed revision, shared by every watch they concern.
#[derive(Debug)]
pub(crate) struct RevChanges {
    pub revision: i64,
    pub changes: Vec<Change>,
}

/// Which changes of a revision a watch gets (after its key range and filters).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Sel {
    All,
    One(u32),
    Some(Box<[u32]>),
}

impl Sel {
    /// From the sorted indices that passed; `None` when nothing did.
    pub fn from_indices(idx: &[u32], total: usize) -> Option<Sel> {
        match idx {
            [] => None,
            _ if idx.len() == total => Some(Sel::All),
            [one] => Some(Sel::One(*one)),
            many => Some(Sel::Some(many.into())),
        }
    }

    pub fn for_each<'a>(&self, changes: &'a [Change], mut f: impl FnMut(&'a Change)) {
        match self {
            Sel::All => changes.iter().for_each(f),
            Sel::One(i) => {
                if let Some(c) = changes.get(*i as usize) {
                    f(c)
                }
            }
            Sel::Some(v) => v.iter().filter_map(|&i| changes.get(i as usize)).for_each(f),
        }
    }
}

/// Why a creation was refused (etcd's `mvcc` error messages, sent as `cancel_reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `key >= range_end`.
    EmptyRange,
    /// The client-chosen ID is in use on this stream.
    DuplicateId,
    /// Auth is on and the stream's user may not read the range (checked by the server).
    PermissionDenied,
}

impl Refusal {
    /// etcd's message.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::EmptyRange => "mvcc: watcher range is empty",
            Refusal::DuplicateId => "mvcc: duplicate watch ID provided on the WatchStream",
            // etcd sends its gRPC error's text
            Refusal::PermissionDenied => "rpc error: code = PermissionDenied desc = etcdserver: permission denied",
        }
    }
}

/// Response options copied from the watch when its events are enqueued.
pub(crate) const OPT_PREV_KV: u8 = 1;
pub(crate) const OPT_FRAGMENT: u8 = 2;

/// One thing a stream owes its client.
#[derive(Debug)]
pub(crate) enum Item {
    Created { watch_id: i64, revision: i64 },
    Refused { revision: i64, reason: Refusal },
    Canceled { watch_id: i64, revision: i64 },
    Compacted { watch_id: i64, compact_revision: i64 },
    /// `bytes`: the size of the selected changes, counted against the byte bound.
    Events { watch_id: i64, revision: i64, changes: Arc<RevChanges>, sel: Sel, opts: u8, bytes: usize },
    /// One catch-up batch of a watch (etcd's `eventBatch`): the changes of up to
    /// [`super::WATCH_BATCH_MAX_REVS`] revisions, sent as one response (split only into
    /// fragments), never merged with anything else; `revision` is the header revision.
    Batch { watch_id: i64, revision: i64, revs: Vec<(Arc<RevChanges>, Sel)>, opts: u8, bytes: usize },
    /// The answer to a RequestProgress (watch_id -1); never refused.
    Progress { revision: i64 },
    /// A periodic progress notification of one watch; bounded like events.
    Tick { watch_id: i64, revision: i64 },
}

struct Inner {
    items: VecDeque<Item>,
    /// Items that count against the bound, and their bytes.
    bounded: usize,
    bytes: usize,
    /// A watch was parked or a catch-up stopped for lack of room: wake the catch-up task
    /// once the sender has made room.
    wants_room: bool,
    /// Control items waiting (the others of `items`).
    controls: usize,
    closed: bool,
}

/// A stream's outgoing FIFO (see the module docs).
pub(crate) struct StreamQueue {
    inner: Mutex<Inner>,
    /// Something to pop (the sender waits on it).
    notify: Notify,
    /// Control items were popped (the request reader waits on it).
    room: Notify,
    capacity: usize,
    max_bytes: usize,
}

/// Where a bounded push landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pushed {
    Yes,
    Full,
}

impl StreamQueue {
    pub fn new(capacity: usize, max_bytes: usize) -> StreamQueue {
        StreamQueue {
            inner: Mutex::new(Inner { items: VecDeque::new(), bounded: 0, bytes: 0, wants_room: false, controls: 0, closed: false }),
            notify: Notify::new(),
            room: Notify::new(),
            capacity: capacity.max(1),
            max_bytes,
        }
    }

    /// Enqueues a control item; never refused.
    pub fn push_control(&self, item: Item) {
        let mut q = self.inner.lock();
        if q.closed {
            return;
        }
        q.items.push_back(item);
        q.controls += 1;
        drop(q);
        self.notify.notify_one();
    }

    /// Enqueues an event item unless `capacity` of them are waiting; a refusal asks the
    /// sender to wake the catch-up task once it has made room.
    pub fn push_event(&self, item: Item) -> Pushed {
        let mut q = self.inner.lock();
        if q.closed {
            // nobody reads any more: pretend it went out
            return Pushed::Yes;
        }
        let bytes = item_bytes(&item);
        if q.bounded >= self.capacity || (q.bounded > 0 && q.bytes + bytes > self.max_bytes) {
            q.wants_room = true;
            return Pushed::Full;
        }
        q.bounded += 1;
        q.bytes += bytes;
        q.items.push_back(item);
        drop(q);
        self.notify.notify_one();
        Pushed::Yes
    }

    /// True when a catch-up round may push here: at most half full. Otherwise marks that
    /// the catch-up task wants to be woken when there is room.
    pub fn has_room(&self) -> bool {
        let mut q = self.inner.lock();
        let room = q.bounded <= self.capacity / 2 && q.bytes <= self.max_bytes / 2;
        if !room {
            q.wants_room = true;
        }
        room
    }

    /// Takes up to `max` items. Returns them, whether the catch-up task should be woken
    /// (room was wanted and the queue is now at most half full), and whether the queue is
    /// closed.
    pub fn pop(&self, max: usize) -> (Vec<Item>, bool, bool) {
        let mut q = self.inner.lock();
        let n = q.items.len().min(max);
        let out: Vec<Item> = q.items.drain(..n).collect();
        let bounded = out.iter().filter(|i| is_bounded(i)).count();
        q.bounded -= bounded;
        q.bytes -= out.iter().map(item_bytes).sum::<usize>();
        let controls = out.len() - bounded;
        q.controls -= controls;
        let wake = q.wants_room && q.bounded <= self.capacity / 2 && q.bytes <= self.max_bytes / 2;
        if wake {
            q.wants_room = false;
        }
        if q.items.is_empty() && q.items.capacity() > 256 {
            // a burst is over: give its memory back
            q.items = VecDeque::new();
        }
        let closed = q.closed;
        drop(q);
        if controls > 0 {
            self.room.notify_one();
        }
        (out, wake, closed)
    }

    /// Waits until fewer than `max` control items wait, or the queue is closed.
    pub async fn control_room(&self, max: usize) {
        loop {
            {
                let q = self.inner.lock();
                if q.controls < max || q.closed {
                    return;
                }
            }
            // as in `ready`: a notify_one before this await leaves a permit
            self.room.notified().await;
        }
    }

    /// Waits until there is something to pop or the queue is closed.
    pub async fn ready(&self) {
        loop {
            {
                let q = self.inner.lock();
                if !q.items.is_empty() || q.closed {
                    return;
                }
            }
            // notify_one keeps a permit when nobody waits, so no wake-up is lost between
            // the check above and this await
            self.notify.notified().await;
        }
    }

    pub fn close(&self) {
        let mut q = self.inner.lock();
        q.closed = true;
        q.items = VecDeque::new();
        q.bounded = 0;
        q.bytes = 0;
        q.controls = 0;
        drop(q);
        self.notify.notify_one();
        self.room.notify_one();
    }

    /// Items waiting (tests, stats).
    pub fn len(&self) -> usize {
        self.inner.lock().items.len()
    }
}

fn item_bytes(item: &Item) -> usize {
    match item {
        Item::Events { bytes, .. } | Item::Batch { bytes, .. } => *bytes,
        _ => 0,
    }
}

/// What a change weighs against the byte bound.
pub(crate) fn change_bytes(c: &crate::write_txn::Change) -> usize {
    c.kv.key.len() + c.kv.value.len() + 32
}

fn is_bounded(item: &Item) -> bool {
    matches!(item, Item::Events { .. } | Item::Batch { .. } | Item::Tick { .. })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_counts_events_only_and_wakes_once_half_empty() {
        let q = StreamQueue::new(4, 1 << 20);
        q.push_control(Item::Created { watch_id: 0, revision: 1 });
        for _ in 0..4 {
            assert_eq!(q.push_event(Item::Tick { watch_id: 0, revision: 1 }), Pushed::Yes);
        }
        assert_eq!(q.push_event(Item::Tick { watch_id: 0, revision: 1 }), Pushed::Full);
        q.push_control(Item::Progress { revision: 1 });
        let (items, wake, closed) = q.pop(2);
        assert_eq!((items.len(), wake, closed), (2, false, false));
        let (_, wake, _) = q.pop(1);
        assert!(wake, "two of four left: room again");
        let (rest, wake, _) = q.pop(10);
        assert_eq!((rest.len(), wake), (3, false));
    }

    #[tokio::test]
    async fn control_room_waits_for_the_sender_to_pop_controls() {
        let q = Arc::new(StreamQueue::new(4, 1 << 20));
        for i in 0..3 {
            q.push_control(Item::Created { watch_id: i, revision: 1 });
        }
        q.push_event(Item::Tick { watch_id: 0, revision: 1 });
        // fewer than 4 controls: room at once
        q.control_room(4).await;
        let waiter = tokio::spawn({
            let q = q.clone();
            async move { q.control_room(3).await }
        });
        // popping an event makes no room for requests; popping a control does
        let (items, _, _) = q.pop(1);
        assert!(matches!(items[0], Item::Created { watch_id: 0, .. }));
        tokio::time::timeout(std::time::Duration::from_secs(10), waiter)
            .await
            .expect("room after a control was popped")
            .expect("waiter");
        // a closed queue never holds the reader back
        let q = StreamQueue::new(4, 1 << 20);
        q.push_control(Item::Progress { revision: 1 });
        q.close();
        q.control_room(1).await;
    }
}
