//! The hub after the store restored a Raft snapshot (etcd: `watchableStore.Restore`, which
//! moves every synced watcher to the unsynced group).
//!
//! A restore replaces the store's state at once: its committed revision jumps from the
//! hub's `published` revision `P` to the restored revision `R` without any of `P+1..=R`
//! being published. A synced watch receives everything from `n = max(its start, P+1)` on
//! through `publish`, so the events of `n..=R` would never reach it. Resynchronizing, under
//! the hub lock:
//! * every synced watch with `n ≤ R` is parked at `n`, exactly as a full queue parks it;
//!   the catch-up task then reads `n..=R` back from the restored store's history
//!   ([`Store::events_between`](crate::Store::events_between)) and puts the watch back in
//!   the index, or, when `n` is below the restored compaction floor, cancels it with
//!   `compact_revision` set, as it does for any watch left behind by a compaction;
//! * a synced watch with `n > R` (a start revision beyond `R`) misses nothing and stays;
//! * unsynced watches are on the catch-up path already (their next revision is checked
//!   against the new floor by the next round); cancelled ones get nothing more;
//! * `published` becomes `R`, and pending progress requests are re-checked (parked
//!   watches hold their answers back until caught up, as the invariant in `progress.rs`
//!   requires).
//!
//! So no watch loses an event silently: each gets its events or a compaction cancel.
//!
//! When: [`WatchHub::resync_after_restore`] right after `Store::restore` (so watches catch
//! up at once), and [`WatchHub::publish`] checks the store's restore count before
//! publishing anything, so a restore is never missed even if the first is not called.
//! Both compare the count with `Shared::restores_seen` under the hub lock, so a restore is
//! handled once.
//!
//! A restore to an *older* revision (`R < P`) never happens under Raft (a member installs
//! only snapshots newer than what it applied); should it happen, `published` still
//! becomes `R`, and revisions after `R` are published as they are committed again.

use std::sync::atomic::Ordering;

use super::hub::HubState;
use super::watcher::State;
use super::{Shared, WatchHub};
use crate::store::RestoreMark;

impl HubState {
    /// Resynchronizes every watch after a restore that left the store at `restored_rev`
    /// (module docs). Returns true when the catch-up task has work.
    pub fn resync_after_restore_locked(&mut self, restored_rev: i64) -> bool {
        let first_unpublished = self.published.saturating_add(1);
        let park: Vec<(u32, i64)> = self
            .watches
            .iter()
            .filter(|(_, w)| w.state() == State::Synced)
            .map(|(slot, w)| (slot, w.rev.max(first_unpublished)))
            .filter(|&(_, next)| next <= restored_rev)
            .collect();
        let parked = park.len();
        for (slot, next) in park {
            self.park_locked(slot, next);
        }
        tracing::info!(from = self.published, to = restored_rev, parked, "watch hub: resynchronizing after a restore");
        self.published = restored_rev;
        self.answer_waiting_locked();
        !self.lagging.is_empty()
    }
}

impl Shared {
    /// Resynchronizes for `mark` if it is a restore the hub has not seen. Returns true
    /// when the catch-up task should be woken (after the hub lock is released).
    pub(super) fn resync_if_restored_locked(&self, st: &mut HubState, mark: RestoreMark) -> bool {
        if mark.count <= self.restores_seen.load(Ordering::Acquire) {
            return false;
        }
        self.restores_seen.store(mark.count, Ordering::Release);
        st.resync_after_restore_locked(mark.revision)
    }
}

impl WatchHub {
    /// Catches every watch up with a snapshot the store restored (module docs): call it
    /// right after [`Store::restore`](crate::Store::restore). Does nothing when the hub
    /// already resynchronized for the store's latest restore.
    pub fn resync_after_restore(&self) {
        // the store's lock is never taken under the hub lock
        let mark = self.shared.store.restore_mark();
        let mut st = self.shared.state.lock();
        let wake = self.shared.resync_if_restored_locked(&mut st, mark);
        self.shared.published.store(st.published, Ordering::Release);
        drop(st);
        if wake {
            self.shared.wake_catchup();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use cairn_proto::cairnpb::{internal_request::Request, InternalRequest};
    use cairn_proto::etcdserverpb::{CompactionRequest, DeleteRangeRequest, PutRequest, WatchResponse};

    use super::super::tests::{collect_until, drain, req};
    use super::super::{HubConfig, WatchHub};
    use crate::{Store, StoreConfig};

    /// A store fed the same numbered entries as its peers (a Raft log in miniature).
    struct Member {
        _dir: tempfile::TempDir,
        store: Arc<Store>,
        hub: WatchHub,
        index: u64,
    }

    impl Member {
        fn new() -> Member {
            let dir = tempfile::tempdir().expect("temp dir");
            let store = Store::open(StoreConfig::new(dir.path())).expect("open");
            let hub = WatchHub::new(store.clone(), HubConfig::default()).expect("hub");
            Member { _dir: dir, store, hub, index: 0 }
        }

        fn apply(&mut self, r: Request) {
            self.index += 1;
            self.store.apply(self.index, &InternalRequest { id: self.index, request: Some(r), auth: None }).expect("apply");
            let committed = self.store.commit().expect("commit");
            self.hub.publish(committed);
        }

        fn put(&mut self, k: &str, v: &str) -> i64 {
            self.apply(Request::Put(PutRequest { key: k.into(), value: v.into(), ..Default::default() }));
            self.store.revision()
        }

        fn del(&mut self, k: &str) -> i64 {
            self.apply(Request::DeleteRange(DeleteRangeRequest { key: k.into(), ..Default::default() }));
            self.store.revision()
        }

        fn restore_from(&mut self, src: &Member) {
            let (index, data) = src.store.snapshot_bytes().expect("snapshot");
            self.store.restore(index, &data).expect("restore");
            self.index = index;
        }
    }

    fn events_of(rs: &[WatchResponse], id: i64) -> Vec<(String, i64, i32)> {
        rs.iter()
            .filter(|r| r.watch_id == id)
            .flat_map(|r| &r.events)
            .map(|e| {
                let kv = e.kv.as_ref().expect("kv");
                (String::from_utf8_lossy(&kv.key).into_owned(), kv.mod_revision, e.r#type)
            })
            .collect()
    }

    fn count(rs: &[WatchResponse]) -> usize {
        rs.iter().map(|r| r.events.len()).sum()
    }

    /// Both members apply the same first entries; the source goes on alone.
    fn diverge() -> (Member, Member) {
        let (mut src, mut tgt) = (Member::new(), Member::new());
        for m in [&mut src, &mut tgt] {
            m.put("a", "1");
            m.put("b", "1");
        }
        (src, tgt)
    }

    #[tokio::test]
    async fn synced_watches_catch_up_with_a_restore_and_future_ones_stay() {
        let (mut src, mut tgt) = diverge();
        let s = tgt.hub.open_stream();
        s.create(&req("a", "", 0)); // 0: one key
        s.create(&req("", "\0", 0)); // 1: every key
        s.create(&req("c", "", 6)); // 2: a future start inside the restored range
        s.create(&req("a", "", 100)); // 3: a future start beyond it
        assert_eq!(drain(&s).len(), 4, "created answers");
        let r_a2 = src.put("a", "2");
        let r_c = src.put("c", "1");
        let r_c2 = src.put("c", "2");
        let r_del = src.del("a");
        assert_eq!((r_a2, r_c, r_c2, r_del), (4, 5, 6, 7));

        tgt.restore_from(&src);
        tgt.hub.resync_after_restore();
        assert_eq!(tgt.hub.revision(), r_del);
        // watch 0: 2 events, watch 1: 4, watch 2: 1
        let got = collect_until(&s, |r| count(r) >= 7).await;
        assert_eq!(events_of(&got, 0), vec![("a".into(), r_a2, 0), ("a".into(), r_del, 1)]);
        assert_eq!(
            events_of(&got, 1),
            vec![("a".into(), r_a2, 0), ("c".into(), r_c, 0), ("c".into(), r_c2, 0), ("a".into(), r_del, 1)]
        );
        assert_eq!(events_of(&got, 2), vec![("c".into(), r_c2, 0)], "a future start is kept");
        assert!(events_of(&got, 3).is_empty());

        // live again, each event exactly once
        let r = tgt.put("a", "3");
        let more = collect_until(&s, |r| count(r) >= 2).await;
        assert_eq!(events_of(&more, 0), vec![("a".into(), r, 0)]);
        assert_eq!(events_of(&more, 1), vec![("a".into(), r, 0)]);
        assert!(drain(&s).is_empty());
        assert_eq!(tgt.hub.stats().unsynced, 0);
    }

    #[tokio::test]
    async fn publish_alone_notices_a_restore() {
        let (mut src, mut tgt) = diverge();
        let s = tgt.hub.open_stream();
        s.create(&req("b", "", 0));
        drain(&s);
        let r1 = src.put("b", "2");
        tgt.restore_from(&src);
        // no resync_after_restore: the next commit's publish finds the restore
        let r2 = tgt.put("b", "3");
        let got = collect_until(&s, |r| count(r) >= 2).await;
        assert_eq!(events_of(&got, 0), vec![("b".into(), r1, 0), ("b".into(), r2, 0)]);
        tgt.hub.resync_after_restore(); // already handled: nothing happens
        assert!(drain(&s).is_empty());
    }

    #[tokio::test]
    async fn a_watch_behind_the_restored_compaction_is_cancelled() {
        let (mut src, mut tgt) = diverge();
        let s = tgt.hub.open_stream();
        s.create(&req("a", "", 0));
        s.create(&req("zzz", "", 0));
        drain(&s);
        src.put("a", "2");
        let last = src.put("a", "3");
        src.apply(Request::Compaction(CompactionRequest { revision: last, physical: true }));
        src.store.wait_compacted(last).await.expect("compacted");

        tgt.restore_from(&src);
        assert_eq!(tgt.store.compact_revision(), last);
        tgt.hub.resync_after_restore();
        let got = collect_until(&s, |r| r.iter().filter(|r| r.canceled).count() >= 2).await;
        for id in [0, 1] {
            let c = got.iter().find(|r| r.watch_id == id && r.canceled).expect("cancel");
            assert_eq!(c.compact_revision, last, "{got:?}");
        }
        assert_eq!(count(&got), 0);
    }
}
