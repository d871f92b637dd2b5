//! One conformance suite for every engine behind the `Backend` trait (cairn's page store
//! and sled), through the public API only: what the MVCC store relies on.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use cairn_storage::backend::{Backend, Bucket, ReadView, WriteBatch};
use cairn_storage::engine::{open_backend, StorageEngine};
use cairn_storage::snapshot::read_snapshot;

fn open(dir: &Path, engine: StorageEngine) -> Arc<dyn Backend> {
    open_backend(dir, engine).expect("open backend")
}

fn scan_all(visit: impl Fn(Bucket, &mut dyn FnMut(&[u8], &[u8]) -> bool)) -> Vec<(Bucket, Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    for b in Bucket::ALL {
        visit(b, &mut |k, v| {
            out.push((b, k.to_vec(), v.to_vec()));
            true
        });
    }
    out
}

fn dump(be: &dyn Backend) -> Vec<(Bucket, Vec<u8>, Vec<u8>)> {
    scan_all(|b, f| be.scan(b, &[], None, &mut |k, v| Ok(f(k, v))).expect("scan"))
}

fn dump_view(v: &dyn ReadView) -> Vec<(Bucket, Vec<u8>, Vec<u8>)> {
    scan_all(|b, f| v.scan(b, &[], None, &mut |k, v| Ok(f(k, v))).expect("scan"))
}

fn key(i: u32) -> Vec<u8> {
    format!("key-{i:06}").into_bytes()
}

fn suite(engine: StorageEngine) {
    let dir = tempfile::tempdir().unwrap();
    let be = open(dir.path(), engine);

    // a batch is visible at once, buckets are separate
    let mut b = WriteBatch::default();
    for i in 0..3000 {
        b.put(Bucket::Key, key(i), vec![(i % 200) as u8; 100 + (i as usize % 300)]);
    }
    b.put(Bucket::Meta, key(1), b"meta".to_vec());
    b.put(Bucket::Lease, key(1), b"lease".to_vec());
    be.write(b).unwrap();
    assert_eq!(be.get(Bucket::Meta, &key(1)).unwrap().unwrap(), b"meta");
    assert_eq!(be.get(Bucket::Lease, &key(1)).unwrap().unwrap(), b"lease");
    assert_eq!(be.get(Bucket::Key, &key(2999)).unwrap().unwrap().len(), 100 + 2999 % 300);
    assert!(be.get(Bucket::Key, &key(3000)).unwrap().is_none());
    be.sync().unwrap();

    // bounded scans and early stops
    let mut seen = Vec::new();
    be.scan(Bucket::Key, &key(100), Some(&key(200)), &mut |k, _| {
        seen.push(k.to_vec());
        Ok(true)
    })
    .unwrap();
    assert_eq!(seen, (100..200).map(key).collect::<Vec<_>>());
    let mut n = 0;
    be.scan(Bucket::Key, &[], None, &mut |_, _| {
        n += 1;
        Ok(n < 10)
    })
    .unwrap();
    assert_eq!(n, 10);
    let mut n = 0;
    be.scan(Bucket::Key, &key(500), Some(&key(400)), &mut |_, _| {
        n += 1;
        Ok(true)
    })
    .unwrap();
    assert_eq!(n, 0, "an empty range");

    // a view keeps its state while writes go on
    let view = be.read_view().unwrap();
    let before = dump(be.as_ref());
    let mut b = WriteBatch::default();
    for i in 0..3000 {
        if i % 3 == 0 {
            b.delete(Bucket::Key, key(i));
        } else if i % 3 == 1 {
            b.put(Bucket::Key, key(i), b"changed".to_vec());
        }
    }
    be.write(b).unwrap();
    be.sync().unwrap();
    assert_eq!(dump_view(view.as_ref()), before);
    assert_eq!(view.get(Bucket::Key, &key(0)).unwrap().unwrap().len(), 100);
    assert!(be.get(Bucket::Key, &key(0)).unwrap().is_none());
    drop(view);

    // the snapshot stream is the whole state
    let mut buf = Vec::new();
    let len = be.snapshot(&mut buf).unwrap();
    assert_eq!(len as usize, buf.len());
    let entries = read_snapshot(&mut buf.as_slice()).unwrap();
    assert_eq!(entries, dump(be.as_ref()));

    // sizes
    assert!(be.size_in_use() <= be.size());
    assert!(be.size() > 0);

    // defragmentation keeps everything
    let state = dump(be.as_ref());
    be.defragment().unwrap();
    assert_eq!(dump(be.as_ref()), state);

    // what was synced survives a reopen
    let mut b = WriteBatch::default();
    b.put(Bucket::Meta, b"last".to_vec(), b"write".to_vec());
    be.write(b).unwrap();
    be.sync().unwrap();
    let state = dump(be.as_ref());
    drop(be);
    let be = open(dir.path(), engine);
    assert_eq!(dump(be.as_ref()), state);
    let model: BTreeMap<Vec<u8>, Vec<u8>> = state.into_iter().filter(|(b, ..)| *b == Bucket::Key).map(|(_, k, v)| (k, v)).collect();
    assert_eq!(model.len(), 2000);
}

/// Range deletions against a `BTreeMap` model: within one bucket only, empty and reversed
/// ranges changing nothing, keys put earlier in the same batch deleted and later ones kept,
/// a view unchanged, and the result surviving a reopen.
fn range_deletions(engine: StorageEngine) {
    let dir = tempfile::tempdir().unwrap();
    let be = open(dir.path(), engine);
    let mut model = BTreeMap::new();
    let mut b = WriteBatch::default();
    for i in 0..20_000 {
        b.put(Bucket::Key, key(i), vec![(i % 200) as u8; 20 + (i as usize % 50)]);
        model.insert(key(i), vec![(i % 200) as u8; 20 + (i as usize % 50)]);
    }
    b.put(Bucket::Meta, key(5), b"meta".to_vec());
    be.write(b).unwrap();
    be.sync().unwrap();
    let view = be.read_view().unwrap();
    let before = dump(be.as_ref());

    let mut b = WriteBatch::default();
    b.put(Bucket::Key, key(10), b"put before".to_vec());
    b.delete_range(Bucket::Key, key(3), key(15_000));
    b.put(Bucket::Key, key(12), b"put after".to_vec());
    b.delete_range(Bucket::Key, key(18_000), key(17_000));
    b.delete_range(Bucket::Key, key(19_000), key(19_000));
    b.delete_range(Bucket::Key, key(19_990), vec![0xff]);
    be.write(b).unwrap();
    model.retain(|k, _| (k < &key(3) || k >= &key(15_000)) && k < &key(19_990));
    model.insert(key(12), b"put after".to_vec());
    let keys = |be: &dyn Backend| -> BTreeMap<Vec<u8>, Vec<u8>> {
        dump(be).into_iter().filter(|(b, ..)| *b == Bucket::Key).map(|(_, k, v)| (k, v)).collect()
    };
    assert_eq!(keys(be.as_ref()), model);
    assert_eq!(be.get(Bucket::Meta, &key(5)).unwrap().unwrap(), b"meta", "other buckets untouched");
    assert_eq!(dump_view(view.as_ref()), before, "a view keeps its state");
    drop(view);

    // from the bucket's first key
    let mut b = WriteBatch::default();
    b.delete_range(Bucket::Key, Vec::new(), key(2));
    be.write(b).unwrap();
    model.retain(|k, _| k >= &key(2));
    be.sync().unwrap();
    drop(be);
    let be = open(dir.path(), engine);
    assert_eq!(keys(be.as_ref()), model);
    assert_eq!(model.len(), 1 + 1 + 5_000 - 10);
}

#[test]
fn pagestore_conforms() {
    suite(StorageEngine::PageStore);
    range_deletions(StorageEngine::PageStore);
}

#[test]
fn sled_conforms() {
    suite(StorageEngine::Sled);
    range_deletions(StorageEngine::Sled);
}
