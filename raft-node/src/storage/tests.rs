use super::*;
use crate::machine::StateMachineError;

struct FixedSource(u64);

impl SnapshotSource for FixedSource {
    fn snapshot(&self) -> Result<(u64, Vec<u8>), StateMachineError> {
        Ok((self.0, b"state".to_vec()))
    }
}

fn open(dir: &Path, segment_size: u64) -> WalStorage {
    WalStorage::open(dir, WalOptions { segment_size, ..WalOptions::default() }, Box::new(FixedSource(0))).unwrap()
}

fn ent(index: u64, term: u64) -> Entry {
    Entry { index, term, data: format!("e{index}t{term}").into_bytes(), ..Default::default() }
}

fn terms(s: &WalStorage) -> Vec<(u64, u64)> {
    let (first, last) = (s.first_index().unwrap(), s.last_index().unwrap());
    s.entries(first, last + 1, None, GetEntriesContext::empty(false)).unwrap().iter().map(|e| (e.index, e.term)).collect()
}

#[test]
fn entries_and_hard_state_survive_reopen_with_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path(), 1 << 20);
    assert!(!s.is_initialized());
    s.append((1..=5).map(|i| ent(i, 1)).collect()).unwrap();
    s.set_hard_state(&HardState { term: 1, vote: 2, commit: 2 }).unwrap();
    s.sync().unwrap();
    // a new leader overwrites 3.. with its own entries
    s.append(vec![ent(3, 2), ent(4, 2)]).unwrap();
    s.set_hard_state(&HardState { term: 2, vote: 3, commit: 3 }).unwrap();
    s.sync().unwrap();
    assert_eq!(terms(&s), vec![(1, 1), (2, 1), (3, 2), (4, 2)]);
    assert!(s.append(vec![ent(9, 2)]).is_err(), "a gap is refused");
    drop(s);
    let s = open(dir.path(), 1 << 20);
    assert!(s.is_initialized());
    assert_eq!(terms(&s), vec![(1, 1), (2, 1), (3, 2), (4, 2)]);
    assert_eq!(s.hard_state(), &HardState { term: 2, vote: 3, commit: 3 });
    assert_eq!(s.term(0).unwrap(), 0);
    assert_eq!(s.entries(3, 4, None, GetEntriesContext::empty(false)).unwrap()[0].data, b"e3t2");
}

#[test]
fn unsynced_appends_may_vanish_but_synced_ones_stay() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path(), 1 << 20);
    s.append(vec![ent(1, 1), ent(2, 1)]).unwrap();
    s.sync().unwrap();
    s.append(vec![ent(3, 1)]).unwrap(); // never synced
    drop(s);
    let s = open(dir.path(), 1 << 20);
    assert_eq!(terms(&s), vec![(1, 1), (2, 1)]);
}

#[test]
fn bootstrap_writes_the_founding_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path(), 1 << 20);
    s.bootstrap(&[3, 1, 2]).unwrap();
    assert!(matches!(s.bootstrap(&[1]), Err(StorageError::AlreadyInitialized)));
    drop(s);
    let mut s = open(dir.path(), 1 << 20);
    s.set_applied_hint(0);
    let rs = s.initial_state().unwrap();
    assert_eq!(rs.conf_state.voters, vec![1, 2, 3]);
    assert_eq!(rs.hard_state, HardState { term: 1, vote: 0, commit: 3 });
    let es = s.entries(1, 4, None, GetEntriesContext::empty(false)).unwrap();
    let nodes: Vec<u64> = es.iter().map(|e| ConfChange::decode(e.data.as_slice()).unwrap().node_id).collect();
    assert_eq!(nodes, vec![1, 2, 3]);
}

#[test]
fn compaction_releases_segments_and_keeps_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path(), 4096);
    s.record_conf_state(0, &ConfState { voters: vec![1, 2, 3], ..Default::default() }).unwrap();
    for i in 1..=400 {
        s.append(vec![ent(i, 1)]).unwrap();
        if i == 100 {
            s.record_conf_state(100, &ConfState { voters: vec![1, 2, 3, 4], ..Default::default() }).unwrap();
        }
        s.set_hard_state(&HardState { term: 1, vote: 1, commit: i }).unwrap();
        s.sync().unwrap();
    }
    let before = s.wal_segments();
    assert!(before > 5, "{before}");
    assert_eq!(s.compact(300).unwrap(), s.wal_segments().abs_diff(before));
    assert!(s.wal_segments() < before);
    assert_eq!(s.first_index().unwrap(), 301);
    assert_eq!(s.term(300).unwrap(), 1);
    assert!(matches!(s.term(299), Err(raft::Error::Store(raft::StorageError::Compacted))));
    assert!(matches!(s.compact(500), Err(StorageError::CompactOutOfRange { .. })));
    drop(s);
    let mut s = open(dir.path(), 4096);
    assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (301, 400));
    assert_eq!(s.snapshot_point(), (300, 1));
    assert_eq!(s.conf_state().voters, vec![1, 2, 3, 4]);
    assert_eq!(s.hard_state().commit, 400);
    // entries after a compaction keep appending and replaying
    s.append(vec![ent(401, 2)]).unwrap();
    s.sync().unwrap();
    drop(s);
    let s = open(dir.path(), 4096);
    assert_eq!(s.last_index().unwrap(), 401);
}

#[test]
fn installed_snapshot_replaces_the_log_and_survives_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path(), 1 << 20);
    s.append(vec![ent(1, 1), ent(2, 1)]).unwrap();
    s.sync().unwrap();
    let cs = ConfState { voters: vec![1, 2], learners: vec![5], ..Default::default() };
    let meta = SnapshotMetadata { conf_state: Some(cs.clone()), index: 50, term: 3 };
    let snap = Snapshot { data: b"the state at 50".to_vec(), metadata: Some(meta.clone()) };
    s.apply_snapshot(&snap).unwrap();
    assert!(matches!(s.apply_snapshot(&snap), Err(StorageError::SnapshotOutOfDate { .. })));
    assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (51, 50));
    drop(s);
    let mut s = open(dir.path(), 1 << 20);
    assert_eq!((s.first_index().unwrap(), s.term(50).unwrap()), (51, 3));
    assert_eq!(s.hard_state().commit, 50);
    assert_eq!(s.conf_state(), cs);
    let (m, data) = s.take_installed_snapshot().unwrap();
    assert_eq!((m.index, data.as_slice()), (50, &b"the state at 50"[..]));
    // once compacted past it, the snapshot file is no longer needed
    s.append(vec![ent(51, 3), ent(52, 3)]).unwrap();
    s.compact(51).unwrap();
    drop(s);
    let mut s = open(dir.path(), 1 << 20);
    assert!(s.take_installed_snapshot().is_none());
    assert_eq!(std::fs::read_dir(dir.path().join("snap")).unwrap().count(), 0);
}

#[test]
fn a_damaged_snapshot_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path(), 1 << 20);
    let meta = SnapshotMetadata { conf_state: Some(ConfState::default()), index: 7, term: 1 };
    s.apply_snapshot(&Snapshot { data: vec![7; 100], metadata: Some(meta) }).unwrap();
    drop(s);
    let path = std::fs::read_dir(dir.path().join("snap")).unwrap().next().unwrap().unwrap().path();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[40] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let r = WalStorage::open(dir.path(), WalOptions::default(), Box::new(FixedSource(0)));
    assert!(matches!(r, Err(StorageError::CorruptSnapshot { .. })));
    std::fs::remove_file(&path).unwrap();
    let r = WalStorage::open(dir.path(), WalOptions::default(), Box::new(FixedSource(0)));
    assert!(matches!(r, Err(StorageError::MissingSnapshot { index: 7 })));
}

#[test]
fn snapshot_pairs_source_data_with_term_and_conf_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = WalStorage::open(dir.path(), WalOptions::default(), Box::new(FixedSource(3))).unwrap();
    s.record_conf_state(0, &ConfState { voters: vec![1], ..Default::default() }).unwrap();
    s.append(vec![ent(1, 1), ent(2, 1), ent(3, 2), ent(4, 2)]).unwrap();
    s.record_conf_state(4, &ConfState { voters: vec![1, 2], ..Default::default() }).unwrap();
    let snap = s.snapshot(2, 2).unwrap();
    let m = snap.metadata.unwrap();
    assert_eq!((m.index, m.term, m.conf_state.unwrap().voters), (3, 2, vec![1]));
    assert_eq!(snap.data, b"state");
    assert!(s.snapshot(4, 2).is_err(), "the source is behind the requested index");
}

fn conf_change(index: u64, term: u64, kind: ConfChangeType, node_id: u64) -> Entry {
    let cc = ConfChange { change_type: kind as i32, node_id, ..Default::default() };
    Entry { index, term, entry_type: EntryType::EntryConfChange as i32, data: cc.encode_to_vec(), ..Default::default() }
}

fn removals(s: &WalStorage, from: u64) -> Vec<u64> {
    let last = s.last_index().unwrap();
    s.entries(from, last + 1, None, GetEntriesContext::empty(false))
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e.entry_type, EntryType::EntryConfChange as i32);
            let cc = ConfChange::decode(e.data.as_slice()).unwrap();
            assert_eq!(cc.change_type, ConfChangeType::RemoveNode as i32);
            cc.node_id
        })
        .collect()
}

#[test]
fn force_new_cluster_keeps_the_log_and_removes_every_other_member() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path(), 1 << 20);
    s.bootstrap(&[1, 2, 3]).unwrap(); // entries 1..=3, committed
    s.record_conf_state(3, &ConfState { voters: vec![1, 2, 3], ..Default::default() }).unwrap();
    // 4: data; 5: learner 7 added (not applied yet); 6: data not known to be committed;
    // 7: member 3 removed (not known to be committed)
    let log = vec![
        ent(4, 2),
        conf_change(5, 2, ConfChangeType::AddLearnerNode, 7),
        ent(6, 2),
        conf_change(7, 2, ConfChangeType::RemoveNode, 3),
    ];
    s.append(log).unwrap();
    s.set_hard_state(&HardState { term: 3, vote: 1, commit: 5 }).unwrap();
    s.sync().unwrap();

    assert_eq!(s.force_new_cluster(1).unwrap(), vec![2, 7]);
    let check = |s: &WalStorage| {
        assert_eq!(s.last_index().unwrap(), 9, "two removals after the log");
        assert_eq!(removals(s, 8), vec![2, 7]);
        assert_eq!(s.term(8).unwrap(), 3);
        assert_eq!(s.hard_state(), &HardState { term: 3, vote: 1, commit: 9 });
        assert_eq!(s.entries(6, 7, None, GetEntriesContext::empty(false)).unwrap()[0].data, b"e6t2", "kept");
    };
    check(&s);
    drop(s);
    check(&open(dir.path(), 1 << 20));
}

#[test]
fn force_new_cluster_of_a_lone_member_commits_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path(), 1 << 20);
    s.bootstrap(&[1]).unwrap();
    s.record_conf_state(1, &ConfState { voters: vec![1], ..Default::default() }).unwrap();
    s.append(vec![ent(2, 2), ent(3, 2)]).unwrap();
    s.set_hard_state(&HardState { term: 2, vote: 1, commit: 2 }).unwrap();
    s.sync().unwrap();
    assert_eq!(s.force_new_cluster(1).unwrap(), Vec::<u64>::new());
    drop(s);
    let s = open(dir.path(), 1 << 20);
    assert_eq!(terms(&s), vec![(1, 1), (2, 2), (3, 2)]);
    assert_eq!(s.hard_state().commit, 3);
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("wal")).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

/// A log of 300 entries over many segments, committed to 300, with a conf change at 100.
fn filled(dir: &Path) -> WalStorage {
    let mut s = open(dir, 4096);
    s.record_conf_state(0, &ConfState { voters: vec![1, 2, 3], ..Default::default() }).unwrap();
    for i in 1..=300 {
        s.append(vec![ent(i, 1 + i / 150)]).unwrap();
        if i == 100 {
            s.record_conf_state(100, &ConfState { voters: vec![1, 2, 3, 4], ..Default::default() }).unwrap();
        }
        s.set_hard_state(&HardState { term: 3, vote: 1, commit: i }).unwrap();
        s.sync().unwrap();
    }
    s
}

#[test]
fn compact_and_cut_deletes_every_older_segment() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = filled(dir.path());
    let before = terms(&s);
    let segments = s.wal_segments();
    assert!(segments > 3, "{segments}");
    // the active segment goes too: one fresh segment is left
    assert_eq!(s.compact_and_cut(250).unwrap(), segments);
    assert_eq!(s.wal_segments(), 1);
    assert_eq!(terms(&s), before[250..].to_vec());
    // a second request with nothing new to compact still leaves one segment
    s.append(vec![ent(301, 3)]).unwrap();
    s.sync().unwrap();
    assert_eq!(s.compact_and_cut(200).unwrap(), 1);
    assert_eq!(s.snapshot_point(), (250, 2));
    drop(s);
    let mut s = open(dir.path(), 4096);
    assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (251, 301));
    assert_eq!(terms(&s)[..50], before[250..]);
    assert_eq!(s.conf_state().voters, vec![1, 2, 3, 4]);
    assert_eq!(s.hard_state(), &HardState { term: 3, vote: 1, commit: 300 });
    // the log goes on, and a later ordinary compaction finds the copies' positions
    for i in 302..=400 {
        s.append(vec![ent(i, 3)]).unwrap();
        s.sync().unwrap();
    }
    s.compact(350).unwrap();
    drop(s);
    let s = open(dir.path(), 4096);
    assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (351, 400));
}

/// Power lost while `compact_and_cut` writes its fresh segment: the older segments are all
/// there and the new one holds any prefix of its records (zeros after it, as in its
/// preallocated file). Every such state reopens to the whole log, whose first part may
/// or may not be compacted. Then: the new segment whole and any suffix of the older ones
/// (their deletion cut short, oldest first).
#[test]
fn a_crash_while_cutting_loses_no_entry() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = filled(dir.path());
    let before = terms(&s);
    let old = segment_files(dir.path());
    let saved: Vec<(PathBuf, Vec<u8>)> = old.iter().map(|p| (p.clone(), std::fs::read(p).unwrap())).collect();
    s.compact_and_cut(280).unwrap();
    drop(s);
    let new = segment_files(dir.path());
    assert_eq!(new.len(), 1);
    let new_bytes = std::fs::read(&new[0]).unwrap();
    let written = new_bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
    let check = |case: &str| {
        let s = open(dir.path(), 4096);
        let (first, last) = (s.first_index().unwrap(), s.last_index().unwrap());
        assert_eq!(last, 300, "{case}");
        assert!(first == 1 || first == 281, "{case}: first {first}");
        assert_eq!(terms(&s), before[first as usize - 1..].to_vec(), "{case}");
        assert_eq!(s.hard_state().commit, 300, "{case}");
        assert_eq!(s.conf_state().voters, vec![1, 2, 3, 4], "{case}");
    };
    let restore_old = |keep_from: usize| {
        for (p, b) in &saved[keep_from..] {
            std::fs::write(p, b).unwrap();
        }
    };
    // every cut of the new segment, at a step that hits record boundaries and middles
    for cut in (16..=written).step_by(7).chain([written]) {
        for p in segment_files(dir.path()) {
            std::fs::remove_file(p).unwrap();
        }
        restore_old(0);
        let mut torn = new_bytes.clone();
        torn[cut..].iter_mut().for_each(|b| *b = 0);
        std::fs::write(&new[0], &torn).unwrap();
        check(&format!("new segment cut at {cut} of {written}"));
    }
    for keep_from in 0..=saved.len() {
        for p in segment_files(dir.path()) {
            std::fs::remove_file(p).unwrap();
        }
        restore_old(keep_from);
        std::fs::write(&new[0], &new_bytes).unwrap();
        check(&format!("older segments from {keep_from} of {} left", saved.len()));
    }
}
