//! Hub tests over a real store in a temporary directory. Waiting is always on a signal
//! (the stream's next response, with a timeout that only bounds a failure).

use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_proto::cairnpb::{internal_request::Request, InternalRequest};
use cairn_proto::etcdserverpb::{
    request_op, CompactionRequest, DeleteRangeRequest, PutRequest, RequestOp, TxnRequest, WatchCreateRequest,
    WatchResponse,
};

use super::{HubConfig, WatchHub, WatchStream};
use crate::{Store, StoreConfig};

pub(super) struct H {
    _dir: tempfile::TempDir,
    pub store: Arc<Store>,
    pub hub: WatchHub,
    index: u64,
}

impl H {
    pub fn new(cfg: HubConfig) -> H {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(StoreConfig::new(dir.path())).expect("open store");
        let hub = WatchHub::new(store.clone(), cfg).expect("hub");
        H { _dir: dir, store, hub, index: 0 }
    }

    pub fn apply(&mut self, r: Request) -> i64 {
        self.index += 1;
        self.store.apply(self.index, &InternalRequest { id: self.index, request: Some(r), auth: None }).expect("apply");
        let committed = self.store.commit().expect("commit");
        self.hub.publish(committed);
        self.store.revision()
    }

    pub fn put(&mut self, k: &str, v: &str) -> i64 {
        self.apply(Request::Put(PutRequest { key: k.into(), value: v.into(), ..Default::default() }))
    }

    pub fn del(&mut self, k: &str, end: &str) -> i64 {
        self.apply(Request::DeleteRange(DeleteRangeRequest { key: k.into(), range_end: end.into(), ..Default::default() }))
    }

    pub fn txn_puts(&mut self, kvs: &[(&str, &str)]) -> i64 {
        let success = kvs
            .iter()
            .map(|(k, v)| RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: (*k).into(),
                    value: (*v).into(),
                    ..Default::default()
                })),
            })
            .collect();
        self.apply(Request::Txn(TxnRequest { success, ..Default::default() }))
    }

    pub fn compact(&mut self, rev: i64) {
        self.apply(Request::Compaction(CompactionRequest { revision: rev, physical: false }));
    }
}

pub(super) fn req(key: &str, end: &str, start: i64) -> WatchCreateRequest {
    WatchCreateRequest { key: key.into(), range_end: end.into(), start_revision: start, ..Default::default() }
}

/// Everything ready now, without waiting.
pub(super) fn drain(s: &WatchStream) -> Vec<WatchResponse> {
    let mut out = Vec::new();
    while let Some(batch) = s.try_next() {
        if batch.is_empty() {
            break;
        }
        out.extend(batch);
    }
    out
}

/// Waits for responses until `done` says enough arrived.
pub(super) async fn collect_until(s: &WatchStream, mut done: impl FnMut(&[WatchResponse]) -> bool) -> Vec<WatchResponse> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done(&out) {
        match tokio::time::timeout_at(deadline, s.next()).await {
            Ok(Some(batch)) => out.extend(batch),
            Ok(None) => panic!("stream closed; got {out:?}"),
            Err(_) => panic!("timed out; got {out:?}"),
        }
    }
    out
}

fn rev(r: &WatchResponse) -> i64 {
    r.header.as_ref().map_or(-1, |h| h.revision)
}

fn keys_revs(rs: &[WatchResponse]) -> Vec<(String, i64, i32)> {
    rs.iter()
        .flat_map(|r| &r.events)
        .map(|e| {
            let kv = e.kv.as_ref().expect("kv");
            (String::from_utf8_lossy(&kv.key).into_owned(), kv.mod_revision, e.r#type)
        })
        .collect()
}

fn event_count(rs: &[WatchResponse]) -> usize {
    rs.iter().map(|r| r.events.len()).sum()
}

#[test]
fn created_comes_first_then_events_in_order() {
    let mut h = H::new(HubConfig::default());
    let r1 = h.put("a", "1");
    let s = h.hub.open_stream();
    s.create(&req("a", "", 0));
    let c = drain(&s);
    assert_eq!(c.len(), 1);
    assert!(c[0].created && !c[0].canceled && c[0].watch_id == 0 && rev(&c[0]) == r1);
    let r2 = h.put("a", "2");
    h.put("b", "x");
    let r4 = h.del("a", "");
    let got = drain(&s);
    assert_eq!(keys_revs(&got), vec![("a".into(), r2, 0), ("a".into(), r4, 1)]);
    // both were queued before the read: merged, with the newer header revision
    assert_eq!((got.len(), rev(&got[0])), (1, r4));
    assert!(got.iter().all(|r| r.watch_id == 0 && !r.created));
}

#[test]
fn a_revision_is_one_response_and_ranges_match_like_etcd() {
    let mut h = H::new(HubConfig::default());
    let s = h.hub.open_stream();
    s.create(&req("p/", "p0", 0)); // prefix p/
    s.create(&req("", "\0", 0)); // every key
    s.create(&req("b", "d", 0)); // range
    s.create(&req("\u{ff}", "\0", 0)); // from-key past everything below
    drain(&s);
    let r = h.txn_puts(&[("p/1", "x"), ("c", "y"), ("p/2", "z"), ("q", "w")]);
    let got = drain(&s);
    let by_id = |id| got.iter().filter(|x| x.watch_id == id).collect::<Vec<_>>();
    assert_eq!(by_id(0).len(), 1, "one response per revision per watch");
    assert_eq!(by_id(0)[0].events.len(), 2);
    assert_eq!(by_id(1)[0].events.len(), 4);
    let keys: Vec<_> = by_id(1)[0].events.iter().map(|e| e.kv.as_ref().unwrap().key.clone()).collect();
    assert_eq!(keys, vec![b"p/1".to_vec(), b"c".to_vec(), b"p/2".to_vec(), b"q".to_vec()], "sub-revision order");
    assert_eq!(by_id(2)[0].events.len(), 1);
    assert!(by_id(3).is_empty());
    assert!(got.iter().all(|x| x.events.iter().all(|e| e.kv.as_ref().unwrap().mod_revision == r)));
}

#[test]
fn filters_and_prev_kv() {
    let mut h = H::new(HubConfig::default());
    let s = h.hub.open_stream();
    s.create(&WatchCreateRequest { key: "k".into(), filters: vec![0], ..Default::default() }); // NOPUT
    s.create(&WatchCreateRequest { key: "k".into(), filters: vec![1], prev_kv: true, ..Default::default() });
    drain(&s);
    h.put("k", "v1");
    h.put("k", "v2");
    let r = h.del("k", "");
    let got = drain(&s);
    let nop: Vec<_> = got.iter().filter(|x| x.watch_id == 0).collect();
    assert_eq!(keys_revs(&nop.into_iter().cloned().collect::<Vec<_>>()), vec![("k".into(), r, 1)]);
    let nod: Vec<_> = got.iter().filter(|x| x.watch_id == 1).flat_map(|x| x.events.clone()).collect();
    assert_eq!(nod.len(), 2);
    assert_eq!(nod[0].prev_kv, None, "a creation has no previous value");
    assert_eq!(nod[1].prev_kv.as_ref().map(|kv| kv.value.clone()), Some(b"v1".to_vec().into()));
}

#[tokio::test]
async fn old_start_revisions_catch_up_from_history() {
    let mut h = H::new(HubConfig::default());
    let mut revs = vec![];
    for i in 0..20 {
        revs.push(h.put(&format!("k{}", i % 3), &i.to_string()));
    }
    let s = h.hub.open_stream();
    s.create(&req("k1", "", revs[5]));
    s.create(&req("k", "l", revs[19])); // == current: includes the current revision
    let got = collect_until(&s, |r| event_count(r) >= 6).await;
    // Each watch's `created` answer precedes its own events; the two watches' answers may
    // interleave (watch 0's catch-up can be sent before watch 1 is created).
    for id in [0, 1] {
        let first = got.iter().find(|r| r.watch_id == id).expect("an answer per watch");
        assert!(first.created && first.events.is_empty(), "created answers first: {got:?}");
    }
    let w0: Vec<i64> = got.iter().filter(|r| r.watch_id == 0).flat_map(|r| &r.events).map(|e| e.kv.as_ref().unwrap().mod_revision).collect();
    let want: Vec<i64> = (5..20).filter(|i| i % 3 == 1).map(|i| revs[i]).collect();
    assert_eq!(w0, want);
    let w1: Vec<i64> = got.iter().filter(|r| r.watch_id == 1).flat_map(|r| &r.events).map(|e| e.kv.as_ref().unwrap().mod_revision).collect();
    assert_eq!(w1, vec![revs[19]]);
    // then live again, exactly once
    let r = h.put("k1", "live");
    let more = collect_until(&s, |r| event_count(r) >= 2).await;
    assert_eq!(keys_revs(&more), vec![("k1".into(), r, 0), ("k1".into(), r, 0)]);
    assert_eq!(h.hub.stats().unsynced, 0);
}

#[test]
fn future_start_revision_skips_earlier_events_and_early_progress() {
    let mut h = H::new(HubConfig::default());
    let cur = h.put("a", "0");
    let s = h.hub.open_stream();
    s.create(&WatchCreateRequest { key: "a".into(), start_revision: cur + 3, progress_notify: true, ..Default::default() });
    drain(&s);
    h.put("a", "1"); // cur+1: before the start
    s.progress_tick();
    s.request_progress();
    assert!(drain(&s).is_empty(), "no notification below start_revision - 1 (etcd #20221)");
    h.put("a", "2"); // cur+2 = start-1: progress now allowed
    let got = drain(&s);
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].watch_id, rev(&got[0]), got[0].events.len()), (-1, cur + 2, 0));
    let r = h.put("a", "3");
    assert_eq!(keys_revs(&drain(&s)), vec![("a".into(), r, 0)]);
}

#[tokio::test]
async fn compacted_start_cancels_with_compact_revision() {
    let mut h = H::new(HubConfig::default());
    for i in 0..5 {
        h.put("k", &i.to_string());
    }
    h.compact(4);
    let s = h.hub.open_stream();
    s.create(&req("k", "", 2));
    let got = drain(&s);
    assert_eq!(got.len(), 2);
    assert!(got[0].created && !got[0].canceled);
    assert!(got[1].canceled && got[1].compact_revision == 4 && got[1].watch_id == 0 && got[1].cancel_reason.is_empty());
    // the ID stays taken until cancelled, as in etcd
    s.create(&WatchCreateRequest { key: "k".into(), watch_id: 0, ..Default::default() });
    assert_eq!(drain(&s)[0].watch_id, 1);
    s.cancel(0);
    let c = drain(&s);
    assert!(c.len() == 1 && c[0].canceled && c[0].watch_id == 0);
    // at the compaction revision itself is still allowed
    s.create(&req("k", "", 4));
    let got = collect_until(&s, |r| event_count(r) >= 1).await;
    assert!(got.iter().all(|r| !r.canceled));
}

#[test]
fn ids_duplicates_and_empty_ranges_as_etcd() {
    let h = H::new(HubConfig::default());
    let s = h.hub.open_stream();
    s.create(&WatchCreateRequest { key: "a".into(), watch_id: 1, ..Default::default() });
    s.create(&req("a", "", 0)); // auto: 0
    s.create(&req("a", "", 0)); // auto: 1 is taken, so 2
    s.create(&WatchCreateRequest { key: "a".into(), watch_id: 2, ..Default::default() });
    s.create(&req("b", "a", 0));
    s.create(&req("b", "b", 0));
    let got = drain(&s);
    let ids: Vec<i64> = got.iter().map(|r| r.watch_id).collect();
    assert_eq!(ids, vec![1, 0, 2, -1, -1, -1]);
    assert!(got[3].created && got[3].canceled);
    assert_eq!(got[3].cancel_reason, "mvcc: duplicate watch ID provided on the WatchStream");
    assert_eq!(got[4].cancel_reason, "mvcc: watcher range is empty");
    assert_eq!(got[5].cancel_reason, "mvcc: watcher range is empty");
}

#[test]
fn cancel_stops_events_and_unknown_ids_are_silent() {
    let mut h = H::new(HubConfig::default());
    let s = h.hub.open_stream();
    s.create(&req("a", "", 0));
    drain(&s);
    h.put("a", "1");
    s.cancel(0);
    s.cancel(42);
    h.put("a", "2");
    let got = drain(&s);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].events.len(), 1);
    assert!(got[1].canceled && got[1].watch_id == 0 && !got[1].created);
    assert_eq!(h.hub.stats().watches, 0);
}

#[tokio::test]
async fn progress_waits_for_unsynced_watches_and_follows_their_events() {
    let mut h = H::new(HubConfig::default());
    let s = h.hub.open_stream();
    s.request_progress();
    let got = drain(&s);
    assert_eq!((got.len(), got[0].watch_id, rev(&got[0])), (1, -1, h.store.revision()));
    let mut last = 0;
    for i in 0..50 {
        last = h.put("k", &i.to_string());
    }
    s.create(&req("k", "", 1)); // unsynced: 50 events to catch up
    s.request_progress();
    let got = collect_until(&s, |r| r.iter().any(|x| x.watch_id == -1)).await;
    let p = got.iter().position(|x| x.watch_id == -1).unwrap();
    assert_eq!(rev(&got[p]), last);
    assert_eq!(event_count(&got[..p]), 50, "every event ≤ R precedes the progress answer");
}

#[test]
fn periodic_progress_only_for_idle_synced_watches_that_asked() {
    let mut h = H::new(HubConfig::default());
    let s = h.hub.open_stream();
    s.create(&WatchCreateRequest { key: "a".into(), progress_notify: true, ..Default::default() });
    s.create(&WatchCreateRequest { key: "b".into(), progress_notify: true, ..Default::default() });
    s.create(&WatchCreateRequest { key: "c".into(), ..Default::default() });
    drain(&s);
    let r = h.put("a", "1");
    drain(&s);
    s.progress_tick();
    let got = drain(&s);
    assert_eq!(got.iter().map(|x| (x.watch_id, rev(x))).collect::<Vec<_>>(), vec![(1, r)]);
    s.progress_tick();
    let mut ids: Vec<i64> = drain(&s).iter().map(|x| x.watch_id).collect();
    ids.sort();
    assert_eq!(ids, vec![0, 1]);
}

#[tokio::test]
async fn slow_stream_is_parked_and_never_stalls_others() {
    let cfg = HubConfig { queue_capacity: 8, ..Default::default() };
    let mut h = H::new(cfg);
    let slow = h.hub.open_stream();
    let fast = h.hub.open_stream();
    for s in [&slow, &fast] {
        s.create(&req("k/", "k0", 0));
        s.create(&req("k/5", "", 0));
    }
    drain(&slow);
    drain(&fast);
    let mut want = vec![];
    for i in 0..200 {
        let r = h.put(&format!("k/{}", i % 10), "v");
        want.push(r);
        // the fast stream gets each revision right away although `slow` is never read
        let got = drain(&fast);
        assert!(got.iter().any(|x| x.watch_id == 0 && x.events[0].kv.as_ref().unwrap().mod_revision == r));
    }
    assert!(slow.queued() <= 8 * 2, "bounded: {}", slow.queued());
    assert!(h.hub.stats().unsynced >= 1, "the slow stream's watches are parked");
    // reading now delivers everything, in order, exactly once
    let got = collect_until(&slow, |r| event_count(r) >= 200 + 20).await;
    let w0: Vec<i64> = got.iter().filter(|x| x.watch_id == 0).flat_map(|x| &x.events).map(|e| e.kv.as_ref().unwrap().mod_revision).collect();
    assert_eq!(w0, want);
    let w1: Vec<i64> = got.iter().filter(|x| x.watch_id == 1).flat_map(|x| &x.events).map(|e| e.kv.as_ref().unwrap().mod_revision).collect();
    assert_eq!(w1, want.iter().enumerate().filter(|(i, _)| i % 10 == 5).map(|(_, r)| *r).collect::<Vec<_>>());
    let deadline = Instant::now() + Duration::from_secs(10);
    while h.hub.stats().unsynced != 0 {
        assert!(Instant::now() < deadline, "watches never re-synced");
        drain(&slow);
        std::thread::yield_now();
    }
}

#[test]
fn fragment_splits_only_when_asked() {
    let cfg = HubConfig { max_request_bytes: 300, ..Default::default() };
    let mut h = H::new(cfg);
    let s = h.hub.open_stream();
    s.create(&WatchCreateRequest { key: "a".into(), range_end: "b".into(), fragment: true, ..Default::default() });
    s.create(&WatchCreateRequest { key: "a".into(), range_end: "b".into(), ..Default::default() });
    drain(&s);
    let big = "x".repeat(100);
    h.txn_puts(&[("a1", &big), ("a2", &big), ("a3", &big), ("a4", &big)]);
    let got = drain(&s);
    let frag: Vec<_> = got.iter().filter(|r| r.watch_id == 0).collect();
    assert!(frag.len() > 1);
    assert!(frag[..frag.len() - 1].iter().all(|r| r.fragment) && !frag.last().unwrap().fragment);
    assert_eq!(frag.iter().map(|r| r.events.len()).sum::<usize>(), 4);
    let whole: Vec<_> = got.iter().filter(|r| r.watch_id == 1).collect();
    assert_eq!((whole.len(), whole[0].events.len()), (1, 4));
}

#[test]
fn ten_thousand_creations_on_one_stream() {
    let mut h = H::new(HubConfig::default());
    let s = h.hub.open_stream();
    let start = Instant::now();
    for i in 0..10_000 {
        s.create(&req(&format!("/registry/t{}/r{}/", i / 20, i % 20), &format!("/registry/t{}/r{}0", i / 20, i % 20), 0));
    }
    let created = drain(&s);
    let took = start.elapsed();
    assert_eq!(created.iter().filter(|r| r.created && !r.canceled).count(), 10_000);
    eprintln!("10,000 creations on one stream: {took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    let r = h.put("/registry/t7/r3/x", "v");
    let got = drain(&s);
    assert_eq!((got.len(), got[0].watch_id, rev(&got[0])), (1, 7 * 20 + 3, r));
}

#[test]
fn closing_a_stream_removes_its_watches() {
    let h = H::new(HubConfig::default());
    let s = h.hub.open_stream();
    for _ in 0..3 {
        s.create(&req("a", "", 0));
    }
    assert_eq!(h.hub.stats().watches, 3);
    drop(s);
    assert_eq!((h.hub.stats().watches, h.hub.stats().streams), (0, 0));
}


#[tokio::test]
async fn catch_up_comes_in_batches_of_1000_revisions_like_etcd() {
    let mut h = H::new(HubConfig::default());
    // 2,400 revisions for the watch (one a txn of two of its keys), other keys between
    for i in 0..2399 {
        h.put(&format!("b/{}", i % 7), "v");
        if i % 500 == 0 {
            h.put("elsewhere", "x");
        }
    }
    let both = h.txn_puts(&[("b/x", "1"), ("b/y", "2")]);
    let current = h.store.revision();
    let s = h.hub.open_stream();
    s.create(&req("b/", "b0", 1));
    let got = collect_until(&s, |r| r.iter().map(|r| r.events.len()).sum::<usize>() >= 2401).await;
    assert!(got[0].created);
    let sizes: Vec<usize> = got[1..].iter().map(|r| r.events.len()).collect();
    assert_eq!(sizes, vec![1000, 1000, 401], "events per response");
    // the header revision of every batch is the current revision, as etcd's syncWatchers
    assert!(got[1..].iter().all(|r| rev(r) == current), "{:?}", got.iter().map(rev).collect::<Vec<_>>());
    // both events of the txn's revision in the last response
    let last: Vec<i64> = got[3].events.iter().map(|e| e.kv.as_ref().map_or(0, |kv| kv.mod_revision)).collect();
    assert_eq!(&last[last.len() - 2..], &[both, both]);
}
