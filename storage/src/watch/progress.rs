//! RequestProgress: the stream-wide progress notification (watch_id −1).
//!
//! # The invariant
//! A progress response with header revision `R` is enqueued on a stream only when, for
//! every watch of that stream,
//! 1. every event of the watch with revision ≤ `R` is already ahead of it in the stream's
//!    FIFO (so the client receives them first: "progress never ahead of events"), and
//! 2. `R ≥ start_revision − 1` (a watch never hears of a revision below the one it asked
//!    to start after: etcd #20221).
//!
//! It holds because [`HubState::answer_progress_locked`] runs under the hub lock, which
//! every enqueue of events also holds, and computes `R` as the largest revision both
//! conditions allow:
//! * a synced watch has everything ≤ `published` enqueued (`publish_locked` enqueues a
//!   revision before advancing `published`);
//! * an unsynced watch has everything below its next revision enqueued, so
//!   `R ≤ min(next) − 1` over the stream's `behind` set;
//! * every watch bounds `R` from below by its first revision − 1 (its start revision, or
//!   the revision after its `created` header): the client library resumes a watch after
//!   the last progress revision it saw, so a lower `R` would make it ask for events it
//!   never wanted (etcd #20221). A lagging watch can hold `R` below `published`, so this
//!   matters for every watch, not only those with a future start: `starts` counts the
//!   future starts exactly (they may lie far ahead and must not outlive their watch), and
//!   `recent_from` bounds all the others (it is at most the revision current when the
//!   watch was created, so keeping it after a cancel only delays an answer until the
//!   lagging watches have passed that point, which the answer needed anyway for requests
//!   made after that watch was created). Until `R` can satisfy both, nothing is sent;
//! * a compacted (dead) watch gets nothing more and constrains nothing.
//!
//! # Never dropped, never starved
//! Each request records a threshold: the newest revision when it arrived (committed or
//! published, whichever is higher). It is answered, in arrival order, as soon as `R`
//! reaches the threshold, with that `R`: so every answer says "every event up to at
//! least the revision current when you asked has been sent". The check is re-run
//! whenever `R` can grow: after every publish, after a catch-up round moves a watch
//! forward, when a watch is cancelled. Unlike etcd (#20242), an unsynced watch delays the
//! answer only until it has caught up past the threshold, not until every watch of the
//! stream happens to be synced at once; and an answer pending when a watch is created on
//! an old revision is still given once that watch is past the threshold (etcd #17507).

use super::hub::HubState;
use super::queue::Item;

/// More distinct pending thresholds than this on one stream are merged into the last one
/// (answered together, never dropped).
const MAX_PENDING: usize = 1024;

impl HubState {
    /// Records a RequestProgress on `stream` made when the store's committed revision was
    /// `committed`, and answers it at once if the invariant allows.
    pub fn request_progress_locked(&mut self, stream: u32, committed: i64) {
        let threshold = committed.max(self.published);
        let Some(st) = self.streams.get_mut(stream) else { return };
        let full = st.pending.len() >= MAX_PENDING;
        match st.pending.back_mut() {
            Some((t, n)) if *t >= threshold || full => {
                *t = (*t).max(threshold);
                *n = n.saturating_add(1);
            }
            _ => st.pending.push_back((threshold, 1)),
        }
        self.progress_waiting.insert(stream);
        self.answer_progress_locked(stream);
    }

    /// The largest `R` the invariant (module docs) allows on `stream` now, if any.
    pub fn progress_revision_locked(&self, stream: u32) -> Option<i64> {
        let st = self.streams.get(stream)?;
        let mut r = self.published;
        if let Some(&(next, _)) = st.behind.first() {
            r = r.min(next - 1);
        }
        let floor = st.starts.last_key_value().map_or(0, |(&start, _)| start).max(st.recent_from);
        (r >= floor - 1).then_some(r)
    }

    /// Re-checks every stream with pending requests (after a publish moved `published`).
    pub fn answer_waiting_locked(&mut self) {
        let waiting: Vec<u32> = self.progress_waiting.iter().copied().collect();
        for stream in waiting {
            self.answer_progress_locked(stream);
        }
    }

    /// Answers the pending requests of `stream` whose threshold `R` has reached.
    pub fn answer_progress_locked(&mut self, stream: u32) {
        let Some(r) = self.progress_revision_locked(stream) else { return };
        let Some(st) = self.streams.get_mut(stream) else { return };
        while let Some(&(threshold, n)) = st.pending.front() {
            if threshold > r {
                break;
            }
            st.pending.pop_front();
            for _ in 0..n {
                st.queue.push_control(Item::Progress { revision: r });
            }
        }
        if st.pending.is_empty() {
            self.progress_waiting.remove(&stream);
        }
    }
}
