//! The streaming writer: round trips through the reader, every page in use, and data that
//! change between the passes refused.

use proptest::prelude::*;

use super::*;

/// Feeds the flat buckets of `root` (values only) to a sink.
fn feed_of(root: &BucketData) -> impl FnMut(&mut dyn BucketSink) -> Result<(), BboltError> + '_ {
    move |sink| {
        for (name, item) in &root.items {
            let Item::Bucket(b) = item else { panic!("a value at the top level") };
            sink.bucket(name)?;
            for (k, v) in b.values() {
                sink.entry(k, v)?;
            }
        }
        Ok(())
    }
}

fn stream_file(root: &BucketData, page_size: usize) -> Vec<u8> {
    let plan = plan(page_size, &mut feed_of(root)).unwrap();
    let mut out = Vec::new();
    write_planned(&plan, &mut feed_of(root), &mut out).unwrap();
    assert_eq!(out.len() as u64, plan.file_len(), "the length announced after the first pass");
    out
}

/// Reads `file` back and checks bbolt's structural rules: pages in use exactly once
/// (the reader refuses a page referenced twice), none free, none unreachable.
fn read_back(file: &[u8]) -> BucketData {
    let db = BboltFile::from_bytes(file.to_vec()).expect("open");
    assert!(db.free_pages().unwrap().is_empty());
    assert_eq!(db.page_count() as usize * db.page_size(), file.len());
    db.root().load().expect("load")
}

fn sample(keys: u32, big: bool) -> BucketData {
    let mut root = BucketData::default();
    root.bucket_mut(b"alarm");
    for i in 0..keys {
        root.bucket_mut(b"key").put(i.to_be_bytes(), vec![b'x'; (i as usize * 37) % 700]);
    }
    if big {
        root.bucket_mut(b"key").put(b"\xff-big".to_vec(), vec![7u8; 9000]);
    }
    root.bucket_mut(b"meta").put(b"consistent_index".to_vec(), 5u64.to_be_bytes().to_vec());
    root
}

#[test]
fn empty_buckets_overflow_values_and_branch_levels_read_back() {
    for (keys, page_size) in [(0, 4096), (3, 4096), (300, 1024), (20_000, 1024), (20_000, 4096)] {
        let root = sample(keys, true);
        assert_eq!(read_back(&stream_file(&root, page_size)), root, "{keys} keys on {page_size}-byte pages");
    }
    // keys longer than a page: every branch node overflows
    let mut root = BucketData::default();
    for i in 0..50u8 {
        root.bucket_mut(b"big").put(vec![i; 3000], vec![i; 10]);
    }
    assert_eq!(read_back(&stream_file(&root, 1024)), root);
}

#[test]
fn data_that_change_between_the_passes_are_refused() {
    let before = sample(2000, false);
    let plan = plan(1024, &mut feed_of(&before)).unwrap();
    let mut changes = Vec::new();
    let mut more = before.clone();
    more.bucket_mut(b"key").put(b"\xfe".to_vec(), b"new".to_vec());
    changes.push(more);
    let mut fewer = before.clone();
    fewer.bucket_mut(b"key").items.remove(&7u32.to_be_bytes()[..]);
    changes.push(fewer);
    let mut longer = before.clone();
    longer.bucket_mut(b"key").put(9u32.to_be_bytes(), vec![0; 2000]);
    changes.push(longer);
    let mut renamed = before.clone();
    renamed.items.remove(&b"alarm"[..]);
    renamed.bucket_mut(b"alarms");
    changes.push(renamed);
    for after in &changes {
        let err = write_planned(&plan, &mut feed_of(after), &mut Vec::new()).unwrap_err();
        assert!(matches!(err, BboltError::Stream(_)), "{err}");
    }
}

#[test]
fn unsorted_or_misplaced_input_is_refused() {
    let mut feed = |s: &mut dyn BucketSink| {
        s.bucket(b"b")?;
        s.bucket(b"a")
    };
    assert!(matches!(plan(4096, &mut feed), Err(BboltError::Stream(_))));
    let mut feed = |s: &mut dyn BucketSink| {
        s.bucket(b"b")?;
        s.entry(b"2", b"")?;
        s.entry(b"1", b"")
    };
    assert!(matches!(plan(4096, &mut feed), Err(BboltError::Stream(_))));
    let mut feed = |s: &mut dyn BucketSink| s.entry(b"1", b"");
    assert!(matches!(plan(4096, &mut feed), Err(BboltError::Stream(_))));
    let mut feed = |s: &mut dyn BucketSink| {
        s.bucket(b"b")?;
        s.entry(b"", b"")
    };
    assert!(matches!(plan(4096, &mut feed), Err(BboltError::KeySize(0))));
    assert!(matches!(plan(3000, &mut |_: &mut dyn BucketSink| Ok::<(), BboltError>(())), Err(BboltError::PageSize(3000))));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn round_trip_of_random_buckets(
        buckets in proptest::collection::btree_map(
            proptest::collection::vec(any::<u8>(), 1..20),
            proptest::collection::btree_map(
                proptest::collection::vec(any::<u8>(), 1..64),
                proptest::collection::vec(any::<u8>(), 0..3000),
                0..60),
            0..6),
        page_size in prop_oneof![Just(1024usize), Just(4096usize)],
    ) {
        let mut root = BucketData::default();
        for (name, entries) in &buckets {
            let b = root.bucket_mut(name);
            for (k, v) in entries {
                b.put(k.clone(), v.clone());
            }
        }
        prop_assert_eq!(read_back(&stream_file(&root, page_size)), root);
    }
}

#[test]
fn a_layout_from_value_lengths_only_is_the_same() {
    let root = sample(5000, true);
    let full = stream_file(&root, 4096);
    let mut lens_only = |sink: &mut dyn BucketSink| -> Result<(), BboltError> {
        for (name, item) in &root.items {
            let Item::Bucket(b) = item else { panic!("a value at the top level") };
            sink.bucket(name)?;
            for (k, v) in b.values() {
                sink.entry_len(k, v.len())?;
            }
        }
        Ok(())
    };
    let plan = plan(4096, &mut lens_only).unwrap();
    let mut out = Vec::new();
    write_planned(&plan, &mut feed_of(&root), &mut out).unwrap();
    assert_eq!(out, full);
    // the pass that writes pages needs the values
    let mut out = Vec::new();
    assert!(matches!(write_planned(&plan, &mut lens_only, &mut out), Err(BboltError::Stream(_))));
}
