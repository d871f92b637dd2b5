//! The hub's state and every change made to it under the hub lock: publishing committed
//! revisions, creating and cancelling watches, parking, periodic progress, closing
//! streams. (etcd: `watchableStore.notify`, `watch`, `cancelWatcher`, `progress`.)
//!
//! Every method here is named `*_locked`: [`HubState`] is only reachable through the hub
//! lock's guard (`Shared::state`), and these helpers rely on holding it for their whole
//! run: a publish, a creation and a progress answer are each atomic with respect to the
//! others, which is what orders them in a stream's FIFO.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use cairn_proto::etcdserverpb::WatchCreateRequest;
use hashbrown::HashTable;

use super::index::WatchIndex;
use super::queue::{change_bytes, Item, Pushed, Refusal, RevChanges, Sel, StreamQueue, OPT_FRAGMENT, OPT_PREV_KV};
use super::watcher::{
    prefix_end, Kind, Slab, State, Watch, EVENTS_SINCE_TICK, FRAGMENT, FUTURE, NO_DELETE, NO_PUT, PREV_KV,
    PROGRESS_NOTIFY,
};
use crate::write_txn::Change;

/// One watch stream (a gRPC Watch call).
pub(crate) struct StreamState {
    /// Watch ID → watch slot (hashed by ID with the hub's `id_hasher`).
    pub ids: HashTable<u32>,
    /// etcd's `nextID`: where the search for a free auto-assigned ID starts.
    pub next_id: i64,
    pub queue: Arc<StreamQueue>,
    /// `(next revision, slot)` of every unsynced watch of the stream.
    pub behind: BTreeSet<(i64, u32)>,
    /// Start revision → number of watches created with that start revision in the future.
    /// A watch leaves when it is cancelled or parked; an entry whose start is reached stays
    /// until then but no longer constrains anything (`progress.rs`).
    pub starts: BTreeMap<i64, u32>,
    /// The greatest first revision of any watch created on the stream without a future
    /// start (never lowered: a cancelled watch leaves a bound that `published` had already
    /// reached when it was created, so it delays nothing for long; see `progress.rs`).
    pub recent_from: i64,
    /// RequestProgress calls not answered yet: `(threshold, how many)`, thresholds
    /// increasing (see `progress.rs`).
    pub pending: VecDeque<(i64, u32)>,
}

/// Everything the hub lock guards.
pub(crate) struct HubState {
    /// The newest revision published: every event ≤ it is in the FIFO of each synced
    /// watch it concerns.
    pub published: i64,
    pub watches: Slab<Watch>,
    /// The synced watches (and only those).
    pub index: WatchIndex,
    pub streams: Slab<StreamState>,
    /// Streams with unsynced watches (the catch-up task's work list).
    pub lagging: BTreeSet<u32>,
    /// Streams with pending RequestProgress calls.
    pub progress_waiting: BTreeSet<u32>,
    id_hasher: RandomState,
    next_gen: u32,
    /// `publish`'s match buffer, kept to avoid reallocating per revision.
    scratch: Vec<(u32, u32)>,
}

/// What a creation needs from outside the hub state.
pub(crate) struct CreateCtx {
    /// The store's compaction floor.
    pub compact_rev: i64,
}

fn drops(w: &Watch, c: &Change) -> bool {
    (c.tombstone && w.has(NO_DELETE)) || (!c.tombstone && w.has(NO_PUT))
}

fn opts_of(w: &Watch) -> u8 {
    (if w.has(PREV_KV) { OPT_PREV_KV } else { 0 }) | (if w.has(FRAGMENT) { OPT_FRAGMENT } else { 0 })
}

impl HubState {
    pub fn new(published: i64) -> HubState {
        HubState {
            published,
            watches: Slab::default(),
            index: WatchIndex::default(),
            streams: Slab::default(),
            lagging: BTreeSet::new(),
            progress_waiting: BTreeSet::new(),
            id_hasher: RandomState::new(),
            next_gen: 0,
            scratch: Vec::new(),
        }
    }

    pub fn open_stream_locked(&mut self, queue: Arc<StreamQueue>) -> u32 {
        self.streams.insert(StreamState {
            ids: HashTable::new(),
            next_id: 0,
            queue,
            behind: BTreeSet::new(),
            starts: BTreeMap::new(),
            recent_from: 0,
            pending: VecDeque::new(),
        })
    }

    fn find_id_locked(&self, stream: u32, id: i64) -> Option<u32> {
        let st = self.streams.get(stream)?;
        let hash = self.id_hasher.hash_one(id);
        st.ids.find(hash, |&s| self.watches.at(s).id == id).copied()
    }

    /// Publishes one committed revision: every synced watch it concerns gets its events
    /// (all of this revision's events for that watch in one item), or is parked when its
    /// stream's queue is full. Never waits. Revisions must come in increasing order; a
    /// revision at or below `published` is ignored.
    pub fn publish_locked(&mut self, rev: i64, changes: Vec<Change>) {
        if rev <= self.published {
            tracing::warn!(rev, published = self.published, "watch hub: revision published twice; ignored");
            return;
        }
        let rc = Arc::new(RevChanges { revision: rev, changes });
        let mut matched = std::mem::take(&mut self.scratch);
        matched.clear();
        for (i, c) in rc.changes.iter().enumerate() {
            self.index.matches(&self.watches, &c.kv.key, &mut |slot| matched.push((slot, i as u32)));
        }
        // group by watch, each group's changes in sub-revision order
        matched.sort_unstable();
        let mut parked = Vec::new();
        let mut idx = Vec::new();
        for group in matched.chunk_by(|a, b| a.0 == b.0) {
            let slot = group[0].0;
            let w = self.watches.at(slot);
            if rev < w.rev {
                continue; // before the start revision it asked for
            }
            idx.clear();
            idx.extend(group.iter().map(|&(_, i)| i).filter(|&i| !drops(w, &rc.changes[i as usize])));
            let Some(sel) = Sel::from_indices(&idx, rc.changes.len()) else { continue };
            let Some(st) = self.streams.get(w.stream) else { continue };
            let bytes = idx.iter().map(|&i| change_bytes(&rc.changes[i as usize])).sum();
            let item = Item::Events { watch_id: w.id, revision: rev, changes: rc.clone(), sel, opts: opts_of(w), bytes };
            match st.queue.push_event(item) {
                Pushed::Yes => self.watches.at_mut(slot).set(EVENTS_SINCE_TICK, true),
                Pushed::Full => parked.push(slot),
            }
        }
        for slot in parked {
            self.park_locked(slot, rev);
        }
        self.published = rev;
        self.scratch = matched;
        if self.scratch.capacity() > 4096 {
            self.scratch = Vec::new();
        }
    }

    /// Moves a synced watch out of the index: it will be caught up from `rev` on.
    pub fn park_locked(&mut self, slot: u32, rev: i64) {
        self.index.remove(&mut self.watches, slot);
        let (was_future, start, stream) = {
            let w = self.watches.at(slot);
            (w.has(FUTURE), w.rev, w.stream)
        };
        if was_future {
            // its start is reached: from now on `recent_from` carries its bound
            self.unregister_start_locked(slot);
            if let Some(st) = self.streams.get_mut(stream) {
                st.recent_from = st.recent_from.max(start);
            }
        }
        let w = self.watches.at_mut(slot);
        w.set_state(State::Unsynced);
        w.rev = rev;
        let stream = w.stream;
        if let Some(st) = self.streams.get_mut(stream) {
            st.behind.insert((rev, slot));
            self.lagging.insert(stream);
        }
    }

    /// A future watch leaves its stream's `starts` once it is past its start revision.
    fn unregister_start_locked(&mut self, slot: u32) {
        let w = self.watches.at_mut(slot);
        if !w.has(FUTURE) {
            return;
        }
        w.set(FUTURE, false);
        let (stream, start) = (w.stream, w.rev);
        if let Some(st) = self.streams.get_mut(stream) {
            if let Some(n) = st.starts.get_mut(&start) {
                *n -= 1;
                if *n == 0 {
                    st.starts.remove(&start);
                }
            }
        }
    }

    /// Queues the refusal of a creation on `stream` (see `WatchStream::refuse_create`).
    pub fn refuse_locked(&mut self, stream: u32, reason: Refusal) {
        if let Some(st) = self.streams.get(stream) {
            st.queue.push_control(Item::Refused { revision: self.published, reason });
        }
    }

    /// Creates a watch as etcd's `serverWatchStream.recvLoop` + `watchStream.Watch` do.
    /// Its created (or refused) response is enqueued before anything else of it. Returns
    /// true when the watch needs the catch-up task.
    pub fn create_locked(&mut self, stream: u32, req: &WatchCreateRequest, ctx: &CreateCtx) -> bool {
        let published = self.published;
        let Some(st) = self.streams.get(stream) else { return false };
        let queue = st.queue.clone();
        // etcd: an empty key is "\0", the smallest key; a range end of "\0" is "every key ≥"
        let key: &[u8] = if req.key.is_empty() { &[0] } else { &req.key };
        let (kind, end) = match req.range_end.as_slice() {
            [] => (Kind::Single, None),
            [0] => (Kind::Range, None),
            e if key >= e => {
                queue.push_control(Item::Refused { revision: published, reason: Refusal::EmptyRange });
                return false;
            }
            e if prefix_end(key).as_deref() == Some(e) => (Kind::Prefix, None),
            e => (Kind::Range, Some(e)),
        };
        let id = if req.watch_id == 0 {
            // etcd's AutoWatchID: the next ID not in use, counting from 0 per stream
            let mut next = st.next_id;
            while self.find_id_locked(stream, next).is_some() {
                next += 1;
            }
            next
        } else if self.find_id_locked(stream, req.watch_id).is_some() {
            queue.push_control(Item::Refused { revision: published, reason: Refusal::DuplicateId });
            return false;
        } else {
            req.watch_id
        };
        let mut flags = 0u16;
        for f in &req.filters {
            match *f {
                0 => flags |= NO_PUT,
                1 => flags |= NO_DELETE,
                _ => {} // etcd ignores unknown filter types
            }
        }
        if req.prev_kv {
            flags |= PREV_KV;
        }
        if req.fragment {
            flags |= FRAGMENT;
        }
        if req.progress_notify {
            flags |= PROGRESS_NOTIFY;
        }
        // etcd: synced when start is 0 or after the current revision, from max(cur+1, start)
        let start = req.start_revision;
        let synced = start == 0 || start > published;
        let rev = if synced { start.max(published + 1) } else { start };
        if synced && rev > published + 1 {
            flags |= FUTURE;
        }
        queue.push_control(Item::Created { watch_id: id, revision: published });
        let mut w = Watch::new(key, end, kind, stream, id, rev, flags);
        w.gen = self.next_gen;
        self.next_gen = self.next_gen.wrapping_add(1);
        let compacted = !synced && start < ctx.compact_rev;
        if compacted {
            // etcd answers created, then the compaction cancel; the ID stays taken
            w.set_state(State::Dead);
            queue.push_control(Item::Compacted { watch_id: id, compact_revision: ctx.compact_rev });
        } else if !synced {
            w.set_state(State::Unsynced);
        }
        let slot = self.watches.insert(w);
        let hasher = &self.id_hasher;
        let watches = &self.watches;
        let Some(st) = self.streams.get_mut(stream) else { return false };
        st.ids.insert_unique(hasher.hash_one(id), slot, |&s| hasher.hash_one(watches.at(s).id));
        if req.watch_id == 0 {
            st.next_id = id + 1;
        }
        if compacted {
            return false;
        }
        if flags & FUTURE != 0 {
            *st.starts.entry(rev).or_insert(0) += 1;
        } else {
            st.recent_from = st.recent_from.max(rev);
        }
        if synced {
            self.index.insert(&mut self.watches, slot);
            false
        } else {
            st.behind.insert((rev, slot));
            self.lagging.insert(stream);
            true
        }
    }

    /// Removes a watch from the index or the unsynced set, and from the slab.
    fn drop_watch_locked(&mut self, slot: u32) {
        match self.watches.at(slot).state() {
            State::Synced => self.index.remove(&mut self.watches, slot),
            State::Unsynced => {
                let (stream, rev) = (self.watches.at(slot).stream, self.watches.at(slot).rev);
                if let Some(st) = self.streams.get_mut(stream) {
                    st.behind.remove(&(rev, slot));
                    if st.behind.is_empty() {
                        self.lagging.remove(&stream);
                    }
                }
            }
            State::Dead => {}
        }
        self.unregister_start_locked(slot);
        self.watches.remove(slot);
    }

    /// Cancels watch `id` of `stream`: answered with canceled=true; an unknown ID is
    /// ignored without an answer, as etcd does.
    pub fn cancel_locked(&mut self, stream: u32, id: i64) {
        let Some(slot) = self.find_id_locked(stream, id) else { return };
        let hash = self.id_hasher.hash_one(id);
        if let Some(st) = self.streams.get_mut(stream) {
            if let Ok(entry) = st.ids.find_entry(hash, |&s| s == slot) {
                entry.remove();
            }
        }
        self.drop_watch_locked(slot);
        if let Some(st) = self.streams.get_mut(stream) {
            if st.ids.is_empty() {
                st.ids = HashTable::new();
            }
            st.queue.push_control(Item::Canceled { watch_id: id, revision: self.published });
        }
        self.answer_progress_locked(stream);
    }

    /// Removes a stream and all its watches; its queue is closed.
    pub fn close_stream_locked(&mut self, stream: u32) {
        let Some(st) = self.streams.get_mut(stream) else { return };
        let slots: Vec<u32> = st.ids.drain().collect();
        for slot in slots {
            self.drop_watch_locked(slot);
        }
        self.lagging.remove(&stream);
        self.progress_waiting.remove(&stream);
        if let Some(st) = self.streams.remove(stream) {
            st.queue.close();
        }
    }

    /// The periodic progress tick of one stream (etcd: the `progressTicker` case of
    /// `sendLoop`): each watch that asked for progress notifications and got no events
    /// since the previous tick gets one at the published revision, if it is synced and
    /// that revision is not below its start revision − 1 (etcd #20221). Best effort, as in
    /// etcd: skipped when the stream's queue is full.
    pub fn tick_locked(&mut self, stream: u32) {
        let published = self.published;
        let Some(st) = self.streams.get(stream) else { return };
        for &slot in st.ids.iter() {
            let Some(w) = self.watches.get_mut(slot) else { continue };
            if !w.has(PROGRESS_NOTIFY) {
                continue;
            }
            let due = !w.has(EVENTS_SINCE_TICK) && w.state() == State::Synced && published >= w.rev - 1;
            if due && st.queue.push_event(Item::Tick { watch_id: w.id, revision: published }) == Pushed::Full {
                tracing::debug!(watch_id = w.id, "progress notification skipped: the stream's queue is full");
            }
            w.set(EVENTS_SINCE_TICK, false);
        }
    }
}
