//! Tests of range deletions (`BatchOp::DeleteRange`) on the page store, on trees deep
//! enough (long keys: a dozen entries a page, height 3) that whole subtrees are dropped:
//! against a `BTreeMap` model through commits and reopens, with the freed pages accounted
//! for exactly, without reading the leaves it drops, and at every crash point of the
//! commit that follows one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::io::PageIo;
use super::sim_io::{next_rand, Fault, SimDisk, SimIo};
use super::tests::{apply_model, dump, reopen_after_crash, sim_store, small_growth, Model};
use super::PageStore;
use crate::backend::{Backend, Bucket, WriteBatch};

/// Keys in the loaded tree.
const KEYS: u32 = 5000;

/// Key `i`: 300 bytes, in order of `i`.
fn key(i: u32) -> Vec<u8> {
    let mut k = format!("{i:08}").into_bytes();
    k.resize(300, b'.');
    k
}

/// A store on a fresh simulated disk holding keys `0..KEYS` (committed), and its model.
fn loaded() -> (Arc<SimDisk>, PageStore, Model) {
    let (disk, store) = sim_store(Vec::new(), None, 3);
    let store = store.unwrap();
    let mut model: Model = Default::default();
    for chunk in 0..KEYS / 500 {
        let mut b = WriteBatch::default();
        for i in chunk * 500..(chunk + 1) * 500 {
            b.put(Bucket::Key, key(i), format!("v{i}").into_bytes());
        }
        apply_model(&mut model, &b);
        store.write(b).unwrap();
    }
    store.sync().unwrap();
    (disk, store, model)
}

/// After a commit with no open view, the pages in use are exactly those the trees reach
/// (what a reopen finds): a span dropped but never freed, or freed twice, shows here.
fn assert_pages_accounted(disk: &SimDisk, store: &PageStore, step: usize) {
    let image = disk.written();
    let (_, reopened) = sim_store(image, None, 9);
    assert_eq!(store.size_in_use(), reopened.unwrap().size_in_use(), "step {step}: pages in use");
}

/// A random range: from below the first key to past the last sometimes, up to 3000 keys wide.
fn random_range(rng: &mut u64) -> (Vec<u8>, Vec<u8>) {
    let a = (next_rand(rng) % (KEYS as u64 + 200)) as u32;
    let w = (next_rand(rng) % 3000) as u32;
    let from = if next_rand(rng) % 10 == 0 { Vec::new() } else { key(a) };
    let to = if next_rand(rng) % 10 == 0 { vec![0xff] } else { key(a + w) };
    (from, to)
}

#[test]
fn range_deletions_match_a_model_through_commits_and_reopens() {
    for seed in 1..=6u64 {
        let (mut disk, mut store, mut model) = loaded();
        let mut committed = model.clone();
        let mut rng = seed;
        for step in 0..40 {
            let mut b = WriteBatch::default();
            match next_rand(&mut rng) % 4 {
                // puts, some into ranges deleted before, then a range over some of them
                0 => {
                    for _ in 0..next_rand(&mut rng) % 300 {
                        let i = (next_rand(&mut rng) % KEYS as u64) as u32;
                        b.put(Bucket::Key, key(i), format!("w{step}").into_bytes());
                    }
                    let (from, to) = random_range(&mut rng);
                    b.delete_range(Bucket::Key, from, to);
                }
                // a range, then puts inside it in the same batch
                1 => {
                    let (from, to) = random_range(&mut rng);
                    b.delete_range(Bucket::Key, from, to);
                    for _ in 0..next_rand(&mut rng) % 20 {
                        let i = (next_rand(&mut rng) % KEYS as u64) as u32;
                        b.put(Bucket::Key, key(i), format!("x{step}").into_bytes());
                    }
                }
                // several ranges, an empty or reversed one among them
                _ => {
                    for _ in 0..1 + next_rand(&mut rng) % 4 {
                        let (from, to) = random_range(&mut rng);
                        b.delete_range(Bucket::Key, to.clone(), from.clone());
                        b.delete_range(Bucket::Key, from, to);
                    }
                }
            }
            apply_model(&mut model, &b);
            store.write(b).unwrap();
            assert_eq!(dump(&store).unwrap(), model, "seed {seed} step {step}: reads see the batch");
            if next_rand(&mut rng) % 3 == 0 {
                store.sync().unwrap();
                committed = model.clone();
                assert_pages_accounted(&disk, &store, step);
            }
            if next_rand(&mut rng) % 8 == 0 {
                drop(store);
                let (d, s) = sim_store(disk.power_loss(), None, seed);
                (disk, store) = (d, s.unwrap());
                model = committed.clone();
                assert_eq!(dump(&store).unwrap(), model, "seed {seed} step {step}: after reopen");
            }
        }
    }
}

/// A `PageIo` counting reads.
struct CountingIo {
    inner: SimIo,
    reads: AtomicU64,
}

impl PageIo for CountingIo {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.inner.read_at(offset, buf)
    }
    fn write_at(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.inner.write_at(offset, data)
    }
    fn sync(&self) -> std::io::Result<()> {
        self.inner.sync()
    }
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }
    fn grow(&self, len: u64) -> std::io::Result<()> {
        self.inner.grow(len)
    }
}

#[test]
fn a_range_deletion_reads_branches_not_the_leaves_it_drops() {
    let (disk, store, mut model) = loaded();
    drop(store);
    // reopen with a cold node cache, counting reads from then on
    let io = Arc::new(CountingIo { inner: SimIo(SimDisk::new(disk.written(), None, 4)), reads: AtomicU64::new(0) });
    let store = PageStore::open_io(io.clone(), small_growth()).unwrap();
    let before = io.reads.load(Ordering::Relaxed);
    let mut b = WriteBatch::default();
    b.delete_range(Bucket::Key, key(100), key(KEYS - 100));
    apply_model(&mut model, &b);
    store.write(b).unwrap();
    let reads = io.reads.load(Ordering::Relaxed) - before;
    // 4,800 keys at about 13 a leaf are ~370 leaves, under ~30 branches
    assert!(reads < 60, "{reads} nodes read to delete ~370 leaves");
    store.sync().unwrap();
    assert_eq!(dump(&store).unwrap(), model);
    assert_eq!(model[0].len(), 200);
}

/// A crash at every I/O operation of the commit after a range deletion (a power loss, a
/// torn write, ENOSPC, EIO in turn) leaves the state before it or after it.
#[test]
fn a_crash_while_committing_a_range_deletion_leaves_either_state() {
    let (disk, store, before) = loaded();
    drop(store);
    let base = disk.written();
    let run = |fault: Option<Fault>| -> u64 {
        let (disk, store) = sim_store(base.clone(), fault, 7);
        let store = store.unwrap();
        let mut after = before.clone();
        let mut b = WriteBatch::default();
        b.delete_range(Bucket::Key, key(17), key(4321));
        b.put(Bucket::Key, key(2000), b"back".to_vec());
        apply_model(&mut after, &b);
        let mut committed = &before;
        let mut attempted = None;
        match store.write(b).and_then(|()| store.sync()) {
            Ok(()) => committed = &after,
            Err(_) => attempted = Some(&after),
        }
        let ops = disk.ops();
        drop(store);
        reopen_after_crash(disk.power_loss(), &format!("{fault:?}"), 7, committed, attempted);
        ops
    };
    let ops = run(None);
    assert!(ops > 0);
    for at in 0..ops {
        for fault in [Fault::Crash(at), Fault::Torn(at), Fault::NoSpace(at), Fault::Eio(at)] {
            run(Some(fault));
        }
    }
}
