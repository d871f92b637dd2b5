//! Round trips write → read, and corrupt files that must give errors, never panics.

use proptest::prelude::*;

use super::layout::PAGE_HEADER_SIZE;
use super::*;

fn read_back(file: &[u8]) -> BucketData {
    BboltFile::from_bytes(file.to_vec()).expect("open").root().load().expect("load")
}

/// Every key in order, as one walk of `for_each` sees them.
fn keys_of(b: &BucketRef<'_>) -> Vec<Vec<u8>> {
    let mut keys = Vec::new();
    b.for_each(&mut |k, _| {
        keys.push(k.to_vec());
        Ok(true)
    })
    .unwrap();
    keys
}

#[test]
fn empty_file_and_empty_buckets() {
    let mut root = BucketData::default();
    let file = write_file(&root, DEFAULT_PAGE_SIZE).unwrap();
    // meta, meta, root leaf, freelist
    assert_eq!(file.len(), 4 * DEFAULT_PAGE_SIZE);
    assert_eq!(read_back(&file), root);

    root.bucket_mut(b"a");
    root.bucket_mut(b"b").bucket_mut(b"inner");
    let file = write_file(&root, DEFAULT_PAGE_SIZE).unwrap();
    let db = BboltFile::from_bytes(file.clone()).unwrap();
    assert_eq!(db.root().load().unwrap(), root);
    assert!(db.free_pages().unwrap().is_empty());
    assert_eq!(db.txid(), 1);
    assert!(db.root().bucket(b"a").unwrap().is_some());
    assert!(db.root().bucket(b"c").unwrap().is_none());
}

#[test]
fn large_values_use_overflow_pages() {
    let mut root = BucketData::default();
    let b = root.bucket_mut(b"key");
    for i in 0..20u32 {
        // 1 byte to ~38 KiB: small ones share pages, large ones overflow
        let len = (i as usize).pow(4) / 4 + 1;
        b.put(i.to_be_bytes(), vec![i as u8; len]);
    }
    let file = write_file(&root, DEFAULT_PAGE_SIZE).unwrap();
    assert_eq!(read_back(&file), root);
    // the file holds every byte: no value was cut to a page
    let total: usize = root.bucket(b"key").unwrap().values().map(|(_, v)| v.len()).sum();
    assert!(file.len() > total);
}

#[test]
fn many_keys_build_multi_level_branches() {
    let mut root = BucketData::default();
    let b = root.bucket_mut(b"key");
    for i in 0..60_000u32 {
        b.put(format!("key-{i:08}").into_bytes(), format!("value-{i}").into_bytes());
    }
    let file = write_file(&root, 1024).unwrap();
    let db = BboltFile::from_bytes(file).unwrap();
    assert_eq!(db.page_size(), 1024);
    let key = db.root().bucket(b"key").unwrap().unwrap();
    let keys = keys_of(&key);
    assert_eq!(keys.len(), 60_000);
    assert!(keys.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(db.root().load().unwrap(), root);
    // 60k leaf entries of ~33 bytes on 1 KiB pages: ~2k leaves, so at least two branch
    // levels above them (a branch page holds ~36 of these keys)
    assert!(db.page_count() > 2000);
}

#[test]
fn huge_keys_still_make_progress_up_the_tree() {
    // keys longer than a page: every node overflows, and branches still halve per level
    let mut root = BucketData::default();
    let b = root.bucket_mut(b"big");
    for i in 0..50u8 {
        b.put(vec![i; 3000], vec![i; 10]);
    }
    let file = write_file(&root, 1024).unwrap();
    assert_eq!(read_back(&file), root);
}

#[test]
fn for_each_stops_when_asked() {
    let mut root = BucketData::default();
    for i in 0..1000u32 {
        root.bucket_mut(b"k").put(i.to_be_bytes(), b"v".to_vec());
    }
    let file = write_file(&root, DEFAULT_PAGE_SIZE).unwrap();
    let db = BboltFile::from_bytes(file).unwrap();
    let mut n = 0;
    db.root().bucket(b"k").unwrap().unwrap().for_each(&mut |_, _| {
        n += 1;
        Ok(n < 10)
    })
    .unwrap();
    assert_eq!(n, 10);
}

#[test]
fn writer_refuses_what_bbolt_refuses() {
    let mut root = BucketData::default();
    root.put(b"v".to_vec(), b"x".to_vec());
    assert!(matches!(write_file(&root, DEFAULT_PAGE_SIZE), Err(BboltError::ValueAtTopLevel)));
    let mut root = BucketData::default();
    root.bucket_mut(b"b").put(Vec::new(), b"x".to_vec());
    assert!(matches!(write_file(&root, DEFAULT_PAGE_SIZE), Err(BboltError::KeySize(0))));
    assert!(matches!(write_file(&BucketData::default(), 3000), Err(BboltError::PageSize(3000))));
}

#[test]
fn newest_valid_meta_wins_and_one_broken_meta_is_survived() {
    let mut root = BucketData::default();
    root.bucket_mut(b"b").put(b"k".to_vec(), b"v".to_vec());
    let file = write_file(&root, DEFAULT_PAGE_SIZE).unwrap();
    let mut bad1 = file.clone();
    bad1[DEFAULT_PAGE_SIZE + PAGE_HEADER_SIZE + 20] ^= 0xff;
    let db = BboltFile::from_bytes(bad1).unwrap();
    assert_eq!(db.txid(), 0);
    assert_eq!(db.root().load().unwrap(), root);
    let mut bad0 = file.clone();
    bad0[PAGE_HEADER_SIZE + 3] ^= 0xff;
    let db = BboltFile::from_bytes(bad0.clone()).unwrap();
    assert_eq!(db.txid(), 1);
    bad0[DEFAULT_PAGE_SIZE + PAGE_HEADER_SIZE + 20] ^= 0xff;
    assert!(matches!(BboltFile::from_bytes(bad0), Err(BboltError::NoValidMeta { .. })));
}

/// Opens and loads whatever `file` holds; the result does not matter, only that it is
/// one (no panic, no endless loop).
fn open_and_load(file: Vec<u8>) -> Result<BucketData, BboltError> {
    let db = BboltFile::from_bytes(file)?;
    db.free_pages()?;
    db.root().load()
}

fn sample_tree() -> BucketData {
    let mut root = BucketData::default();
    for i in 0..300u32 {
        root.bucket_mut(b"key").put(i.to_be_bytes(), vec![b'x'; (i as usize * 37) % 700]);
    }
    root.bucket_mut(b"key").put(b"\xff-big".to_vec(), vec![7u8; 9000]);
    root.bucket_mut(b"meta").put(b"consistent_index".to_vec(), 5u64.to_be_bytes().to_vec());
    root.bucket_mut(b"nest").bucket_mut(b"inner").put(b"a".to_vec(), b"b".to_vec());
    root.bucket_mut(b"empty");
    root
}

#[test]
fn every_truncation_is_an_error() {
    let file = write_file(&sample_tree(), 1024).unwrap();
    for len in (0..file.len()).step_by(97) {
        assert!(open_and_load(file[..len].to_vec()).is_err(), "truncated to {len}");
    }
}

#[test]
fn flipped_bytes_never_panic_and_meta_flips_are_survived() {
    let root = sample_tree();
    let file = write_file(&root, 1024).unwrap();
    let mut errors = 0;
    for i in 0..file.len() {
        let mut bad = file.clone();
        bad[i] ^= 0x5a;
        match open_and_load(bad) {
            Err(_) => errors += 1,
            // a broken meta page is survived on the other, identical one
            Ok(loaded) if i < 2 * 1024 => assert_eq!(loaded, root, "flip in meta page byte {i}"),
            // a flip in a value, or in the unused tail of a page, reads back different
            // or equal data: only structure is checked, as in bbolt
            Ok(_) => {}
        }
    }
    assert!(errors > 100, "only {errors} flips were refused");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    // random round trips: `stream_tests.rs` (the writer files come from)

    #[test]
    fn random_corruption_never_panics(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8), cut in any::<prop::sample::Index>()) {
        let file = write_file(&sample_tree(), 1024).unwrap();
        let mut bad = file.clone();
        for (at, x) in &flips {
            let i = at.index(bad.len());
            bad[i] ^= x | 1;
        }
        let _either = open_and_load(bad.clone());
        bad.truncate(cut.index(bad.len()));
        let _either = open_and_load(bad);
    }
}

#[test]
fn freelist_with_the_long_count_form() {
    let mut root = BucketData::default();
    root.bucket_mut(b"b").put(b"k".to_vec(), vec![1u8; 10_000]);
    let mut file = write_file(&root, DEFAULT_PAGE_SIZE).unwrap();
    let pages = file.len() / DEFAULT_PAGE_SIZE;
    // the freelist is the last page; rewrite it as bbolt does past 0xFFFF ids: count
    // 0xFFFF in the header, the real count in the first u64
    let at = (pages - 1) * DEFAULT_PAGE_SIZE;
    file[at + 10..at + 12].copy_from_slice(&0xFFFFu16.to_le_bytes());
    file[at + 16..at + 24].copy_from_slice(&2u64.to_le_bytes());
    file[at + 24..at + 32].copy_from_slice(&2u64.to_le_bytes());
    file[at + 32..at + 40].copy_from_slice(&4u64.to_le_bytes());
    assert_eq!(BboltFile::from_bytes(file.clone()).unwrap().free_pages().unwrap(), vec![2, 4]);
    // unsorted, or past the pages in use, is refused
    file[at + 32..at + 40].copy_from_slice(&1u64.to_le_bytes());
    assert!(BboltFile::from_bytes(file.clone()).unwrap().free_pages().is_err());
    file[at + 32..at + 40].copy_from_slice(&(pages as u64).to_le_bytes());
    assert!(BboltFile::from_bytes(file.clone()).unwrap().free_pages().is_err());
    // a count the page cannot hold
    file[at + 16..at + 24].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(BboltFile::from_bytes(file).unwrap().free_pages().is_err());
}
