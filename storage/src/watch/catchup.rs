//! The catch-up task: brings unsynced watches (created on an old revision, or parked
//! because their stream's queue was full) up to the published revision from history,
//! then puts them back in the index. (etcd: `syncWatchersLoop` / `syncWatchers`; unlike
//! etcd, history is read without holding the lock that publishing needs.)
//!
//! One round:
//! 1. under the hub lock, *claim* the unsynced watches of streams whose queue has room
//!    (copying their spans) and note the published revision `P`;
//! 2. without any hub lock, read the revision window `[min next, ≤ P]` once
//!    ([`Store::events_between`]) and work out, for every claimed watch, which events of
//!    the window are its own: one scan serves every claimed watch;
//! 3. under the hub lock again, for each claimed watch still as claimed (same generation,
//!    still unsynced at the same revision) enqueue its events as one batch, as etcd's
//!    `syncWatchers` does: the events of its first [`WATCH_BATCH_MAX_REVS`] revisions
//!    (counting only revisions with events for it) become one response whose header
//!    revision is `published` (etcd: the current revision), split only by `fragment`.
//!    Then either move it back into the index (it reached `published`: nothing can have
//!    been published for it in between, since publishing skips unsynced watches and
//!    step 3 holds the lock) or leave it unsynced at its new next revision (the first
//!    revision left out of the batch, or the end of the window). A batch the queue
//!    refuses (full) is not sent in part: the watch stays where it was.
//!
//! A watch whose next revision is below the compaction floor is cancelled with
//! `compact_revision` set, as etcd does, and kept as dead until the client cancels it.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Weak};

use super::hub::HubState;
use super::queue::{change_bytes, Item, Pushed, RevChanges, Sel, OPT_FRAGMENT, OPT_PREV_KV};
use super::watcher::{Kind, Span, State, EVENTS_SINCE_TICK, FRAGMENT, NO_DELETE, NO_PUT, PREV_KV};
use super::{Shared, WATCH_BATCH_MAX_REVS};
use crate::error::{Error, Result};
use crate::write_txn::Change;

/// An unsynced watch as a round claimed it.
pub(crate) struct Claim {
    slot: u32,
    gen: u32,
    next: i64,
    span: Span,
    no_put: bool,
    no_delete: bool,
}

/// What a round found for one claim.
struct Found {
    claim: Claim,
    compacted: bool,
    /// `(position in the window, the changes of that revision it gets)`, in order.
    items: Vec<(u32, Sel)>,
}

impl HubState {
    /// Claims up to `max` unsynced watches, stream by stream from `cursor` round-robin,
    /// skipping streams without room in their queue.
    fn claim_locked(&mut self, cursor: &mut u32, max: usize) -> Vec<Claim> {
        let order: Vec<u32> = self.lagging.range(*cursor..).chain(self.lagging.range(..*cursor)).copied().collect();
        let mut out = Vec::new();
        for stream in order {
            if out.len() >= max {
                *cursor = stream;
                break;
            }
            let Some(st) = self.streams.get(stream) else { continue };
            if !st.queue.has_room() {
                continue; // the sender wakes us once it has drained the queue
            }
            for &(next, slot) in st.behind.iter().take(max - out.len()) {
                let w = self.watches.at(slot);
                out.push(Claim {
                    slot,
                    gen: w.gen,
                    next,
                    span: w.span(),
                    no_put: w.has(NO_PUT),
                    no_delete: w.has(NO_DELETE),
                });
            }
        }
        out
    }

    /// Step 3 of a round (module docs). Returns whether any watch moved.
    fn finish_locked(&mut self, found: Vec<Found>, revs: &[Arc<RevChanges>], through: i64, compact: i64) -> bool {
        let published = self.published;
        let mut touched = BTreeSet::new();
        let mut moved = false;
        for f in found {
            let slot = f.claim.slot;
            let Some(w) = self.watches.get_mut(slot) else { continue };
            if w.gen != f.claim.gen || w.state() != State::Unsynced || w.rev != f.claim.next {
                continue; // cancelled (and maybe the slot reused) since the claim
            }
            let Some(st) = self.streams.get_mut(w.stream) else { continue };
            st.behind.remove(&(f.claim.next, slot));
            touched.insert(w.stream);
            if f.compacted {
                moved = true;
                w.set_state(State::Dead);
                st.queue.push_control(Item::Compacted { watch_id: w.id, compact_revision: compact });
                continue;
            }
            let opts = (if w.has(PREV_KV) { OPT_PREV_KV } else { 0 }) | (if w.has(FRAGMENT) { OPT_FRAGMENT } else { 0 });
            let mut next = f.claim.next.max(through + 1);
            let mut items = f.items;
            if items.len() > WATCH_BATCH_MAX_REVS {
                // etcd's `moreRev`: the rest comes in the next round
                next = revs[items[WATCH_BATCH_MAX_REVS].0 as usize].revision;
                items.truncate(WATCH_BATCH_MAX_REVS);
            }
            if !items.is_empty() {
                let mut bytes = 0;
                let batch: Vec<(Arc<RevChanges>, Sel)> = items
                    .into_iter()
                    .map(|(pos, sel)| {
                        let rc = &revs[pos as usize];
                        sel.for_each(&rc.changes, |c| bytes += change_bytes(c));
                        (rc.clone(), sel)
                    })
                    .collect();
                let item = Item::Batch { watch_id: w.id, revision: published, revs: batch, opts, bytes };
                if st.queue.push_event(item) == Pushed::Full {
                    next = f.claim.next;
                } else {
                    w.set(EVENTS_SINCE_TICK, true);
                }
            }
            moved |= next != f.claim.next;
            if next > published {
                w.rev = published + 1;
                w.set_state(State::Synced);
                self.index.insert(&mut self.watches, slot);
            } else {
                w.rev = next;
                st.behind.insert((next, slot));
            }
        }
        for stream in touched {
            if self.streams.get(stream).is_some_and(|st| st.behind.is_empty()) {
                self.lagging.remove(&stream);
            }
            self.answer_progress_locked(stream);
        }
        moved
    }
}

/// The events of the window each claim gets (step 2, no lock held).
fn match_claims(claims: Vec<Claim>, revs: &[Arc<RevChanges>], compact: i64) -> Vec<Found> {
    let mut by_key: BTreeMap<&[u8], Vec<(u32, u32)>> = BTreeMap::new();
    for (ri, rc) in revs.iter().enumerate() {
        for (ci, c) in rc.changes.iter().enumerate() {
            by_key.entry(&c.kv.key[..]).or_default().push((ri as u32, ci as u32));
        }
    }
    let mut out = Vec::with_capacity(claims.len());
    let mut hits: Vec<(u32, u32)> = Vec::new();
    for claim in claims {
        if claim.next < compact {
            out.push(Found { claim, compacted: true, items: Vec::new() });
            continue;
        }
        hits.clear();
        let key = claim.span.key();
        match claim.span.kind {
            Kind::Single => hits.extend(by_key.get(key).into_iter().flatten()),
            Kind::Prefix => hits.extend(
                by_key
                    .range::<[u8], _>((Bound::Included(key), Bound::Unbounded))
                    .take_while(|(k, _)| k.starts_with(key))
                    .flat_map(|(_, v)| v),
            ),
            Kind::Range => {
                let end = claim.span.range_end();
                if end.is_none_or(|e| e > key) {
                    let hi = end.map_or(Bound::Unbounded, Bound::Excluded);
                    hits.extend(by_key.range::<[u8], _>((Bound::Included(key), hi)).flat_map(|(_, v)| v));
                }
            }
        }
        let keep = |c: &Change| !((c.tombstone && claim.no_delete) || (!c.tombstone && claim.no_put));
        hits.retain(|&(ri, ci)| {
            let rc = &revs[ri as usize];
            rc.revision >= claim.next && keep(&rc.changes[ci as usize])
        });
        hits.sort_unstable();
        let mut items = Vec::new();
        for group in hits.chunk_by(|a, b| a.0 == b.0) {
            let idx: Vec<u32> = group.iter().map(|&(_, ci)| ci).collect();
            if let Some(sel) = Sel::from_indices(&idx, revs[group[0].0 as usize].changes.len()) {
                items.push((group[0].0, sel));
            }
        }
        out.push(Found { claim, compacted: false, items });
    }
    out
}

/// One round (module docs). Returns whether anything moved (run again).
fn round(shared: &Shared, cursor: &mut u32) -> Result<bool> {
    let cfg = &shared.cfg;
    let (claims, target) = {
        let mut st = shared.state.lock();
        (st.claim_locked(cursor, cfg.catchup_max_watches), st.published)
    };
    if claims.is_empty() {
        return Ok(false);
    }
    // The floor only rises; each retry leaves out more claims, so this ends.
    let mut compact = shared.store.compact_revision();
    let history = loop {
        let Some(from) = claims.iter().map(|c| c.next).filter(|&n| n >= compact).min() else {
            break None;
        };
        let to = target.min(from.saturating_add(cfg.catchup_window_revs.max(1) - 1));
        match shared.store.events_between(from, to, cfg.catchup_window_bytes) {
            Ok(h) => break Some(h),
            Err(Error::Compacted) => compact = shared.store.compact_revision(),
            Err(e) => return Err(e),
        }
    };
    let (revs, through) = match history {
        Some(h) => {
            let revs: Vec<Arc<RevChanges>> = h
                .revisions
                .into_iter()
                .map(|(revision, changes)| Arc::new(RevChanges { revision, changes }))
                .collect();
            (revs, h.through)
        }
        None => (Vec::new(), i64::MIN),
    };
    let found = match_claims(claims, &revs, compact);
    let mut st = shared.state.lock();
    Ok(st.finish_locked(found, &revs, through, compact))
}

/// The catch-up thread's body: a round per wake-up, repeated while rounds make progress.
/// Ends when the hub is gone (its wake-up sender dropped).
pub(crate) fn run(shared: Weak<Shared>, wake: mpsc::Receiver<()>) {
    let mut cursor = 0u32;
    while wake.recv().is_ok() {
        loop {
            let Some(sh) = shared.upgrade() else { return };
            sh.wake_pending.store(false, Ordering::SeqCst);
            match round(&sh, &mut cursor) {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => {
                    // a failed backend fails the store too; these watches stay unsynced
                    tracing::error!(error = %e, "watch catch-up failed reading history");
                    break;
                }
            }
        }
    }
}
