//! The etcd WAL reader and the log-tail replay, on files written as etcd writes them
//! (`wal::write`). The importer is tested against real etcd data folders in
//! `tests/migrate_etcd.rs`.

use cairn_proto::etcdserverpb::{InternalRaftRequest, LeaseGrantRequest, PutRequest, RangeRequest};
use prost::Message;

use super::wal::write::WalWriter;
use super::{read_wal, replay, to_cairn, Translated, WalError};
use crate::{Store, StoreConfig};

fn put(key: &str, value: &str) -> Vec<u8> {
    InternalRaftRequest {
        id: 7,
        put: Some(PutRequest { key: key.into(), value: value.into(), ..Default::default() }),
        ..Default::default()
    }
    .encode_to_vec()
}

fn dir_with(files: &[Vec<u8>]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (i, f) in files.iter().enumerate() {
        let mut bytes = f.clone();
        bytes.extend(std::iter::repeat_n(0, 4096)); // etcd preallocates
        std::fs::write(dir.path().join(format!("{i:016x}-{:016x}.wal", i * 10)), bytes).unwrap();
    }
    dir
}

/// Two files: metadata, entries 1-5 with an overwritten tail, a hard state.
fn two_files() -> (Vec<u8>, Vec<u8>) {
    let mut a = WalWriter::new(0);
    a.metadata(0xAA, 0xCC);
    for i in 1..=4 {
        a.entry(1, i, put(&format!("k{i}"), "v"));
    }
    a.state(1, 3);
    let mut b = WalWriter::new(a.crc);
    b.metadata(0xAA, 0xCC);
    // a new leader overwrote index 4 and appended 5
    b.entry(2, 4, put("k4", "w"));
    b.entry(2, 5, Vec::new());
    b.state(2, 5);
    (a.bytes, b.bytes)
}

#[test]
fn reads_entries_state_and_metadata_across_files() {
    let (a, b) = two_files();
    let dir = dir_with(&[a, b]);
    let wal = read_wal(dir.path()).unwrap();
    assert_eq!((wal.node_id, wal.cluster_id), (0xAA, 0xCC));
    assert_eq!((wal.hard_state.term, wal.hard_state.commit), (2, 5));
    let idx: Vec<(u64, u64)> = wal.entries.iter().map(|e| (e.index, e.term)).collect();
    assert_eq!(idx, [(1, 1), (2, 1), (3, 1), (4, 2), (5, 2)]);
    assert_eq!(wal.entries_after(3).len(), 2);
}

#[test]
fn a_torn_tail_of_the_last_file_ends_the_log() {
    let (a, mut b) = two_files();
    // cut the last file inside its last record
    let cut = b.len() - 5;
    b.truncate(cut);
    let dir = dir_with(std::slice::from_ref(&a));
    // the file ends there (not preallocated)
    std::fs::write(dir.path().join("0000000000000001-000000000000000a.wal"), b).unwrap();
    let wal = read_wal(dir.path()).unwrap();
    assert_eq!(wal.entries.last().map(|e| e.index), Some(5));
    assert_eq!(wal.hard_state.commit, 3, "the torn state record is not read");

    // a long last record whose later sectors never reached the disk (zeros) also ends it,
    // while the same record with damage in no whole sector is an error
    let (a, mut b) = two_files();
    let start = b.len();
    b.extend_from_slice(&{
        let mut w = WalWriter::new(0);
        w.entry(2, 6, put("big", &"x".repeat(3000)));
        w.bytes.split_off(16) // without the crc record `new` wrote
    });
    let mut torn = b.clone();
    let boundary = (start / 512 + 2) * 512;
    torn[boundary..].iter_mut().for_each(|x| *x = 0);
    let dir = dir_with(&[a.clone(), torn]);
    let wal = read_wal(dir.path()).unwrap();
    assert_eq!(wal.entries.last().map(|e| e.index), Some(5));
    let mut damaged = b;
    damaged[boundary + 7] ^= 0x55;
    let dir = dir_with(&[a, damaged]);
    assert!(matches!(read_wal(dir.path()).unwrap_err(), WalError::Corrupt { .. }));
}

#[test]
fn damage_before_the_last_file_is_an_error() {
    let (mut a, b) = two_files();
    let n = a.len();
    a[n - 12] ^= 0xFF; // inside the last record's data
    let dir = dir_with(&[a, b]);
    let err = read_wal(dir.path()).unwrap_err();
    assert!(matches!(err, WalError::Corrupt { .. }), "{err}");
}

#[test]
fn a_hole_in_the_log_is_an_error() {
    let mut a = WalWriter::new(0);
    a.metadata(1, 2);
    a.entry(1, 1, Vec::new());
    a.entry(1, 3, Vec::new());
    let dir = dir_with(&[a.bytes]);
    assert!(matches!(read_wal(dir.path()).unwrap_err(), WalError::Gap { index: 3, last: 1 }));
}

#[test]
fn arbitrary_bytes_never_panic() {
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    for n in 0..300usize {
        let (a, _) = two_files();
        let mut bytes = a;
        for _ in 0..(n % 7 + 1) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let at = (seed as usize) % bytes.len();
            bytes[at] = (seed >> 32) as u8;
        }
        let dir = dir_with(&[bytes]);
        let _ = read_wal(dir.path());
    }
}

#[test]
fn translation_keeps_writes_and_leaves_out_the_rest() {
    assert!(matches!(to_cairn(&put("a", "b")), Translated::Apply(_)));
    assert_eq!(to_cairn(&[]), Translated::NoOp);
    let read = InternalRaftRequest { range: Some(RangeRequest::default()), ..Default::default() };
    assert_eq!(to_cairn(&read.encode_to_vec()), Translated::NoOp);
    let alarm = InternalRaftRequest { alarm: Some(Default::default()), ..Default::default() };
    assert_eq!(to_cairn(&alarm.encode_to_vec()), Translated::NotCarried);
    // a 3.4 v2 request: ID 1, Method 2, Path 3 ("/0/members/...")
    let mut v2 = vec![0x08, 0x01, 0x12, 0x03];
    v2.extend_from_slice(b"PUT");
    v2.extend_from_slice(&[0x1a, 0x0b]);
    v2.extend_from_slice(b"/0/members/");
    assert_eq!(to_cairn(&v2), Translated::NoOp);
}

#[test]
fn replay_applies_the_tail_as_etcd_would() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    let grant = InternalRaftRequest { lease_grant: Some(LeaseGrantRequest { ttl: 60, id: 5 }), ..Default::default() };
    let bad_lease = InternalRaftRequest {
        put: Some(PutRequest { key: b"x".to_vec(), lease: 99, ..Default::default() }),
        ..Default::default()
    };
    let mut w = WalWriter::new(0);
    w.metadata(1, 2);
    for (i, data) in [put("a", "1"), Vec::new(), grant.encode_to_vec(), bad_lease.encode_to_vec(), put("a", "2")]
        .into_iter()
        .enumerate()
    {
        w.entry(1, i as u64 + 1, data);
    }
    let wal_dir = dir_with(&[w.bytes]);
    let wal = read_wal(wal_dir.path()).unwrap();
    let done = replay(&store, wal.entries_after(0)).unwrap();
    assert_eq!((done.applied, done.failed, done.no_op), (4, 1, 1));
    assert_eq!(store.revision(), 3);
    let got = store.range(&RangeRequest { key: b"a".to_vec(), ..Default::default() }).unwrap();
    assert_eq!(got.kvs[0].value, &b"2"[..]);
    assert_eq!(got.kvs[0].version, 2);
    assert!(store.lease(5).is_some());
}
