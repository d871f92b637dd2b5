//! Tests of the key index: fixed cases, a property test against a `BTreeMap` model
//! (compaction included), and readers running beside a writer and the compactor.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;

use proptest::prelude::*;

use super::*;

fn r(m: i64) -> Revision {
    Revision::new(m, 0)
}

fn sample() -> TreeIndex {
    let ix = TreeIndex::new();
    ix.put(b"a", r(1)).unwrap();
    ix.put(b"b", r(2)).unwrap();
    ix.put(b"c", r(3)).unwrap();
    ix.tombstone(b"b", r(4)).unwrap();
    ix.put(b"a", r(5)).unwrap();
    ix.publish();
    ix
}

fn keys_of(hits: Vec<IndexHit>) -> Vec<Vec<u8>> {
    hits.into_iter().map(|h| h.key.to_vec()).collect()
}

#[test]
fn spans_decode_etcd_convention() {
    assert_eq!(KeySpan::new(b"a", b""), KeySpan::Single(b"a"));
    assert_eq!(KeySpan::new(b"a", b"\0"), KeySpan::Range(b"a", None));
    assert_eq!(KeySpan::new(b"a", b"c"), KeySpan::Range(b"a", Some(b"c")));
    assert!(KeySpan::new(b"a", b"\0").contains(b"zzz"));
    assert!(!KeySpan::new(b"b", b"c").contains(b"c"));
}

#[test]
fn range_at_revisions_and_limits() {
    let ix = sample();
    let all = KeySpan::new(b"a", b"\0");
    let keys = |at, limit| {
        let (hits, total) = ix.range(&all, at, limit);
        (keys_of(hits), total)
    };
    assert_eq!(keys(3, 0), (vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()], 3));
    assert_eq!(keys(4, 0), (vec![b"a".to_vec(), b"c".to_vec()], 2));
    assert_eq!(keys(4, 1), (vec![b"a".to_vec()], 2), "limit does not change the total");
    assert_eq!(ix.count(&all, 3), 3);
    assert_eq!(ix.count(&KeySpan::new(b"b", b"c"), 4), 0);
    assert_eq!(ix.range(&KeySpan::new(b"c", b"a"), 5, 0).1, 0, "inverted span is empty");
    assert_eq!(ix.get(b"a", 5).unwrap().version, 2);
    assert!(ix.tombstone(b"zz", r(6)).is_err(), "tombstone of an unknown key");
    assert!(ix.tombstone(b"b", r(6)).is_err(), "tombstone of a deleted key");
    assert_eq!(ix.len(), 3, "failed changes publish nothing");
}

#[test]
fn compaction_removes_dead_keys_in_chunks() {
    let ix = TreeIndex::new();
    let n = COMPACT_CHUNK * 2 + 7;
    for i in 0..n {
        let k = format!("k{i:05}");
        ix.put(k.as_bytes(), r(i as i64 * 2 + 1)).unwrap();
        ix.tombstone(k.as_bytes(), r(i as i64 * 2 + 2)).unwrap();
    }
    ix.put(b"live", r(n as i64 * 2 + 1)).unwrap();
    ix.publish();
    let keep = ix.compact(n as i64 * 2 + 1);
    assert_eq!(keep, vec![r(n as i64 * 2 + 1)]);
    assert_eq!(ix.len(), 1);
}

#[test]
fn a_failed_batch_publishes_nothing() {
    let ix = sample();
    let r2 = ix.batch(|b| {
        b.put(b"x", r(6))?;
        b.tombstone(b"nope", r(7))
    });
    assert!(r2.is_err());
    assert!(!ix.contains(b"x"), "the put before the failure is not published");
    ix.batch(|b| {
        b.put(b"x", r(6))?;
        assert!(b.contains(b"x"), "a batch reads its own changes");
        b.put(b"y", r(7))
    })
    .unwrap();
    assert_eq!(ix.len(), 5);
}

/// The model: the same `KeyIndex`es in a `BTreeMap`, as the old index kept them.
#[derive(Default)]
struct Model {
    map: BTreeMap<Vec<u8>, KeyIndex>,
}

impl Model {
    fn range(&self, from: &[u8], to: Option<&[u8]>, at: i64, limit: usize) -> (Vec<(Vec<u8>, KeyAt)>, i64) {
        let mut hits = Vec::new();
        let mut total = 0;
        let upper = match to {
            Some(t) => std::ops::Bound::Excluded(t),
            None => std::ops::Bound::Unbounded,
        };
        if to.is_some_and(|t| t <= from) {
            return (hits, 0);
        }
        for (k, ki) in self.map.range::<[u8], _>((std::ops::Bound::Included(from), upper)) {
            if let Some(a) = ki.get(at) {
                total += 1;
                if limit == 0 || hits.len() < limit {
                    hits.push((k.clone(), a));
                }
            }
        }
        (hits, total)
    }

    fn compact(&mut self, at: i64) -> HashSet<Revision> {
        let mut available = HashSet::new();
        for ki in self.map.values_mut() {
            ki.compact(at, &mut available);
        }
        self.map.retain(|_, ki| !ki.is_empty());
        available
    }
}

#[derive(Clone, Debug)]
enum Op {
    Put(u16),
    Delete(u16),
    Compact(u8),
    Read { back: u8, from: u16, len: u16, limit: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u16..300).prop_map(Op::Put),
        3 => (0u16..300).prop_map(Op::Delete),
        1 => any::<u8>().prop_map(Op::Compact),
        2 => (any::<u8>(), 0u16..320, 0u16..400, 0u8..40)
            .prop_map(|(back, from, len, limit)| Op::Read { back, from, len, limit }),
    ]
}

fn key(i: u16) -> Vec<u8> {
    format!("k{i:03}").into_bytes()
}

fn check_reads(ix: &TreeIndex, m: &Model, at: i64, from: u16, len: u16, limit: usize) -> std::result::Result<(), TestCaseError> {
    let (f, t) = (key(from), key(from.saturating_add(len)));
    let to = if len >= 350 { None } else { Some(t.as_slice()) };
    let span = KeySpan::Range(&f, to);
    let (hits, total) = ix.range(&span, at, limit);
    let (want, want_total) = m.range(&f, to, at, limit);
    let got: Vec<(Vec<u8>, KeyAt)> = hits.into_iter().map(|h| (h.key.to_vec(), h.at)).collect();
    prop_assert_eq!(&got, &want, "range at {} from {:?} to {:?} limit {}", at, f, to, limit);
    prop_assert_eq!(total, want_total);
    prop_assert_eq!(ix.count(&span, at), want_total);
    let states: Vec<KeyAt> = want.iter().map(|(_, s)| *s).collect();
    prop_assert_eq!(ix.revisions(&span, at, limit), (states, want_total), "revisions: the range without keys");
    let single = ix.range(&KeySpan::Single(&f), at, 0);
    let want_single = m.map.get(&f).and_then(|ki| ki.get(at));
    prop_assert_eq!(single.0.first().map(|h| h.at), want_single);
    prop_assert_eq!(single.0.first().map(|h| h.key.clone()), want_single.map(|_| f.clone()));
    prop_assert_eq!(ix.revisions(&KeySpan::Single(&f), at, 0).0.first().copied(), want_single);
    prop_assert_eq!(ix.get(&f, at), want_single);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Every read, count and compaction of the index matches the model, at the newest
    /// revision and older ones (the counted-subtree shortcut only applies to the former).
    #[test]
    fn matches_the_btreemap_model(ops in proptest::collection::vec(op(), 1..600)) {
        let ix = TreeIndex::new();
        let mut m = Model::default();
        let mut rev = 1i64;
        let mut floor = 0i64;
        for op in ops {
            match op {
                Op::Put(k) => {
                    rev += 1;
                    let before = m.map.get(&key(k)).and_then(|ki| ki.get(rev));
                    let seen = ix.put(&key(k), r(rev)).unwrap();
                    prop_assert_eq!(&seen, &before, "put returns the key as it was at its revision");
                    m.map.entry(key(k)).or_default().put(r(rev)).unwrap();
                    let want = m.map.get(&key(k)).and_then(|ki| ki.get(rev));
                    prop_assert_eq!(ix.get_latest(&key(k), rev), want, "the working version has it");
                    prop_assert_eq!(ix.get(&key(k), rev), before, "published only by publish");
                    ix.publish();
                }
                Op::Delete(k) => {
                    let live = m.map.get(&key(k)).is_some_and(|ki| !ki.is_deleted());
                    let got = ix.tombstone(&key(k), r(rev + 1));
                    prop_assert_eq!(got.is_ok(), live, "tombstone of {:?}", key(k));
                    if live {
                        rev += 1;
                        m.map.get_mut(&key(k)).unwrap().tombstone(r(rev)).unwrap();
                        let (f, t) = (key(0), key(400));
                        let span = KeySpan::Range(&f, Some(&t));
                        let want = m.range(&f, Some(&t), rev, 0).1;
                        prop_assert_eq!(ix.count_latest(&span, rev), want);
                        prop_assert_eq!(ix.range_latest(&span, rev, 1).1, want);
                        ix.publish();
                    }
                }
                Op::Compact(back) => {
                    let at = (rev - i64::from(back)).max(floor);
                    floor = at;
                    prop_assert_eq!(ix.keep(at), m.map.values().fold(HashSet::new(), |mut s, ki| {
                        ki.keep(at, &mut s);
                        s
                    }));
                    let mut want: Vec<Revision> = m.compact(at).into_iter().collect();
                    want.sort_unstable();
                    prop_assert_eq!(ix.compact(at), want, "sorted");
                }
                Op::Read { back, from, len, limit } => {
                    let at = (rev - i64::from(back)).max(floor);
                    check_reads(&ix, &m, at, from, len, limit as usize)?;
                    check_reads(&ix, &m, rev, from, len, limit as usize)?;
                }
            }
            ix.check();
        }
        let dump = ix.dump();
        let want: Vec<(Vec<u8>, KeyIndex)> = m.map.into_iter().collect();
        prop_assert_eq!(dump, want);
        prop_assert_eq!(ix.len(), ix.dump().len());
    }
}

/// Readers at a fixed revision run while a writer adds newer revisions (and deletes keys)
/// and the compactor compacts at that revision, all released by one barrier: every read
/// must give exactly the answer it had before they started. Readers keep reading until the
/// compaction and the writer are done.
#[test]
fn readers_see_one_answer_during_compaction_and_writes() {
    const N: i64 = 20_000;
    let ix = Arc::new(TreeIndex::new());
    let k = |i: i64| format!("/r/{i:06}").into_bytes();
    for i in 0..N {
        ix.put(&k(i), r(1 + i)).unwrap();
    }
    for i in 0..N {
        ix.put(&k(i), r(1 + N + i)).unwrap();
    }
    ix.publish();
    let at = 2 * N; // every key written twice at or below `at`
    let readers = 2;
    let start = Arc::new(Barrier::new(readers + 2));
    let done = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for t in 0..readers {
        let (ix, start, done) = (ix.clone(), start.clone(), done.clone());
        handles.push(thread::spawn(move || {
            start.wait();
            let mut reads = 0u64;
            let mut i = t as i64;
            loop {
                let finished = done.load(Ordering::Acquire);
                let all = KeySpan::Range(b"/r/", Some(b"/r0"));
                assert_eq!(ix.count(&all, at), N, "count during compaction");
                let from = k((i * 7919) % N);
                let (hits, total) = ix.range(&KeySpan::Range(&from, Some(b"/r0")), at, 100);
                assert_eq!(total, N - (i * 7919) % N, "total of a page");
                assert_eq!(hits.len() as i64, total.min(100));
                for (j, h) in hits.iter().enumerate() {
                    let idx = (i * 7919) % N + j as i64;
                    assert_eq!(&*h.key, k(idx).as_slice());
                    assert_eq!(h.at.modified, r(1 + N + idx), "newest revision at or below {at}");
                    assert_eq!(h.at.version, 2, "version survives compaction");
                    assert_eq!(h.at.created, r(1 + idx));
                }
                reads += 1;
                i += 1;
                if finished {
                    return reads;
                }
            }
        }));
    }
    let writer = {
        let (ix, start) = (ix.clone(), start.clone());
        thread::spawn(move || {
            start.wait();
            for i in 0..N / 4 {
                let rev = at + 1 + i;
                if i % 2 == 0 {
                    ix.tombstone(&k(i * 4), r(rev)).unwrap();
                } else {
                    ix.put(&k(i * 4), r(rev)).unwrap();
                }
                if i % 16 == 0 {
                    ix.publish();
                }
            }
        })
    };
    start.wait();
    let keep = ix.compact(at);
    writer.join().unwrap();
    ix.publish();
    done.store(true, Ordering::Release);
    for h in handles {
        assert!(h.join().unwrap() >= 1);
    }
    assert_eq!(keep.len() as i64, N, "one revision per key kept");
    assert!(keep.binary_search(&r(1 + N)).is_ok() && keep.binary_search(&r(1)).is_err());
    assert!(keep.windows(2).all(|w| w[0] < w[1]), "sorted");
    assert_eq!(ix.count(&KeySpan::Range(b"/r/", Some(b"/r0")), at), N);
    assert_eq!(ix.count(&KeySpan::Range(b"/r/", Some(b"/r0")), at + N), N - N / 8);
    ix.check();
}
