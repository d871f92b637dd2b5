use super::*;

fn opts(size: u64) -> WalOptions {
    WalOptions { segment_size: size, ..WalOptions::default() }
}

fn write_n(wal: &mut Wal, from: u64, n: u64) {
    for i in from..from + n {
        wal.append(1, i, format!("entry-{i}").as_bytes()).unwrap();
    }
    wal.sync().unwrap();
}

fn indexes(records: &[WalRecord]) -> Vec<u64> {
    records.iter().map(|r| r.index).collect()
}

#[test]
fn records_survive_reopen_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, recs) = Wal::open(dir.path(), opts(1 << 20)).unwrap();
    assert!(recs.is_empty());
    write_n(&mut wal, 1, 10);
    wal.append(2, 10, b"hard state").unwrap(); // appended, never synced: may be lost
    drop(wal);
    let (mut wal, recs) = Wal::open(dir.path(), opts(1 << 20)).unwrap();
    assert_eq!(indexes(&recs[..10]), (1..=10).collect::<Vec<_>>());
    assert_eq!(recs[3].data, b"entry-4");
    write_n(&mut wal, 11, 5);
    let (_, recs) = Wal::open(dir.path(), opts(1 << 20)).unwrap();
    assert_eq!(indexes(&recs).last(), Some(&15));
}

fn active_segment(dir: &Path) -> PathBuf {
    segment::list(dir).unwrap().pop().unwrap().path
}

fn data_end(path: &Path) -> usize {
    let buf = std::fs::read(path).unwrap();
    let mut off = SEGMENT_HEADER_LEN as usize;
    while let Decoded::Record(_, n) = decode(&buf[off..]) {
        off += n;
    }
    off
}

#[test]
fn torn_tail_is_truncated_and_appending_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), opts(1 << 20)).unwrap();
    write_n(&mut wal, 1, 5);
    drop(wal);
    // a sixth record cut short: only half of it reached the disk
    let path = active_segment(dir.path());
    let end = data_end(&path);
    let mut rec = Vec::new();
    encode(1, 6, b"entry-6 that was torn", &mut rec);
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&rec[..rec.len() / 2], end as u64).unwrap();
    drop(f);
    let (mut wal, recs) = Wal::open(dir.path(), opts(1 << 20)).unwrap();
    assert_eq!(indexes(&recs), vec![1, 2, 3, 4, 5]);
    write_n(&mut wal, 6, 2);
    let (_, recs) = Wal::open(dir.path(), opts(1 << 20)).unwrap();
    assert_eq!(indexes(&recs), vec![1, 2, 3, 4, 5, 6, 7], "the torn bytes were zeroed, not left in the way");
}

#[test]
fn a_bad_record_before_good_ones_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), opts(1 << 20)).unwrap();
    write_n(&mut wal, 1, 5);
    drop(wal);
    let path = active_segment(dir.path());
    let mut buf = std::fs::read(&path).unwrap();
    buf[SEGMENT_HEADER_LEN as usize + 20] ^= 0xFF; // inside the first record
    std::fs::write(&path, &buf).unwrap();
    assert!(matches!(Wal::open(dir.path(), opts(1 << 20)), Err(WalError::Corrupt { .. })));
}

#[test]
fn segments_rotate_and_release_keeps_what_is_needed() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), opts(512)).unwrap();
    for batch in 0..20 {
        write_n(&mut wal, batch * 10 + 1, 10);
    }
    assert!(wal.segment_count() > 3, "{} segments", wal.segment_count());
    let before = wal.segment_count();
    let removed = wal.release(100).unwrap();
    assert!(removed > 0 && wal.segment_count() == before - removed);
    let (_, recs) = Wal::open(dir.path(), opts(512)).unwrap();
    assert!(recs.first().unwrap().index <= 101, "index 101 must still be in the log");
    assert_eq!(recs.last().unwrap().index, 200);
    let idx = indexes(&recs);
    assert!(idx.windows(2).all(|w| w[1] == w[0] + 1), "no gap");
}

#[test]
fn a_sealed_segment_with_damage_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), opts(512)).unwrap();
    for batch in 0..10 {
        write_n(&mut wal, batch * 10 + 1, 10);
    }
    drop(wal);
    let first = segment::list(dir.path()).unwrap().remove(0).path;
    let mut buf = std::fs::read(&first).unwrap();
    let end = data_end(&first);
    buf[end - 3] ^= 0x01; // last record of a sealed segment
    std::fs::write(&first, &buf).unwrap();
    assert!(matches!(Wal::open(dir.path(), opts(512)), Err(WalError::Corrupt { .. })));
}

#[test]
fn failure_is_sticky() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), opts(1 << 20)).unwrap();
    write_n(&mut wal, 1, 1);
    // swap in a read-only handle: the next write fails like a failing disk
    wal.file = File::open(active_segment(dir.path())).unwrap();
    wal.append(1, 2, b"x").unwrap();
    assert!(matches!(wal.sync(), Err(WalError::Io(_))));
    assert!(matches!(wal.append(1, 3, b"y"), Err(WalError::Failed)));
    assert!(matches!(wal.sync(), Err(WalError::Failed)));
}

/// Found by the `wal_segment` fuzz target (raft-node/fuzz, input `0x0a`): a log whose only
/// segment starts at index 5 and holds no record reported `last_index() == 0`, so the
/// next append (index 1) landed below its segment's start and the log no longer opened.
#[test]
fn an_empty_active_segment_keeps_its_first_index() {
    let dir = tempfile::tempdir().unwrap();
    let mut header = b"CAIRNWAL".to_vec();
    header.extend_from_slice(&1u32.to_le_bytes());
    header.extend_from_slice(&[0; 4]);
    std::fs::write(dir.path().join(segment::segment_name(0, 5)), &header).unwrap();
    let (mut wal, recs) = Wal::open(dir.path(), opts(1 << 16)).unwrap();
    assert!(recs.is_empty());
    assert_eq!(wal.last_index(), 4);
    let next = wal.last_index() + 1;
    write_n(&mut wal, next, 2);
    drop(wal);
    let (wal, recs) = Wal::open(dir.path(), opts(1 << 16)).unwrap();
    assert_eq!(indexes(&recs), vec![5, 6]);
    assert_eq!(wal.last_index(), 6);
}

/// The active segment is allocated a step ahead of its records, not whole: a new segment
/// takes one step, a write past the allocated end grows it by a step (or to the write's
/// end), and a reopened log goes on from the file's length.
#[test]
fn segments_are_preallocated_a_step_ahead() {
    let dir = tempfile::tempdir().unwrap();
    let o = || WalOptions { segment_size: 64 << 10, prealloc_step: 8 << 10, ..WalOptions::default() };
    let len = |dir: &Path| std::fs::metadata(active_segment(dir)).unwrap().len();
    let (mut wal, _) = Wal::open(dir.path(), o()).unwrap();
    assert_eq!(len(dir.path()), 8 << 10);
    let value = vec![7u8; 1000];
    for i in 1..=9 {
        wal.append(1, i, &value).unwrap();
    }
    wal.sync().unwrap();
    assert_eq!(len(dir.path()), 16 << 10, "grown by one step");
    // one write larger than a step: grown to its end
    for i in 10..=40 {
        wal.append(1, i, &value).unwrap();
    }
    wal.sync().unwrap();
    let end = data_end(&active_segment(dir.path())) as u64;
    assert!(end > 24 << 10 && len(dir.path()) == end, "{} for records up to {end}", len(dir.path()));
    drop(wal);
    let (mut wal, recs) = Wal::open(dir.path(), o()).unwrap();
    assert_eq!(indexes(&recs), (1..=40).collect::<Vec<_>>());
    for i in 41..=100 {
        wal.append(1, i, &value).unwrap();
        wal.sync().unwrap();
        assert!(len(dir.path()) <= 64 << 10, "a segment never grows past its size by a step");
    }
    assert!(wal.segment_count() >= 2);
    let sealed = segment::list(dir.path()).unwrap();
    for s in &sealed[..sealed.len() - 1] {
        let l = std::fs::metadata(&s.path).unwrap().len();
        assert!(l as usize == data_end(&s.path) || l == 64 << 10, "sealed segment of {l} bytes");
    }
    drop(wal);
    let (_, recs) = Wal::open(dir.path(), o()).unwrap();
    assert_eq!(indexes(&recs), (1..=100).collect::<Vec<_>>());
}

/// The extents of `path` as (start, end, unwritten) from the FIEMAP ioctl, or `None` where
/// the filesystem does not report them.
fn extents(path: &Path) -> Option<Vec<(u64, u64, bool)>> {
    use std::os::fd::AsRawFd;
    // struct fiemap (32 bytes) followed by room for 64 struct fiemap_extent (56 bytes each)
    const EXTENTS: usize = 64;
    const FS_IOC_FIEMAP: libc::c_ulong = 0xC020_660B;
    const FIEMAP_FLAG_SYNC: u32 = 1;
    const FIEMAP_EXTENT_UNWRITTEN: u32 = 0x800;
    let mut buf = vec![0u64; (32 + 56 * EXTENTS) / 8];
    buf[1] = u64::MAX; // fm_length
    let words = buf.as_mut_ptr().cast::<u32>();
    // SAFETY: `buf` is 8-aligned and large enough for the header and EXTENTS extents; the
    // u32 fields sit at byte offsets 16 (fm_flags) and 24 (fm_extent_count).
    unsafe {
        *words.add(4) = FIEMAP_FLAG_SYNC;
        *words.add(6) = EXTENTS as u32;
    }
    let f = std::fs::File::open(path).unwrap();
    // SAFETY: FS_IOC_FIEMAP reads and writes the struct fiemap at `buf`, within its length.
    if unsafe { libc::ioctl(f.as_raw_fd(), FS_IOC_FIEMAP as _, buf.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: as above; fm_mapped_extents is at byte offset 20.
    let mapped = unsafe { *words.add(5) } as usize;
    Some(
        (0..mapped.min(EXTENTS))
            .map(|i| {
                let e = &buf[4 + i * 7..4 + (i + 1) * 7]; // 56 bytes: logical, physical, length, ...
                let flags = (e[5] & 0xffff_ffff) as u32; // fe_flags at byte 40 of the extent
                (e[0], e[0] + e[2], flags & FIEMAP_EXTENT_UNWRITTEN != 0)
            })
            .collect(),
    )
}

/// A sync writes zeros `ZERO_AHEAD` past its records, so the blocks the next appends land
/// in are written already and their fdatasync has no extent conversion to record; the rest
/// of the preallocated step stays unwritten (reserved, not written).
#[test]
fn a_sync_zeroes_ahead_of_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), WalOptions::default()).unwrap();
    write_n(&mut wal, 1, 10);
    let path = active_segment(dir.path());
    let Some(ext) = extents(&path) else {
        eprintln!("the filesystem of {} does not report extents; nothing to check", path.display());
        return;
    };
    let written_to = |ext: &[(u64, u64, bool)]| {
        // the end of the written prefix of the file
        let mut to = 0;
        for &(start, end, unwritten) in ext {
            if start > to || unwritten {
                break;
            }
            to = end;
        }
        to
    };
    let end = data_end(&path) as u64;
    assert!(written_to(&ext) >= end + ZERO_AHEAD, "{ext:?}, records end at {end}");
    assert!(ext.iter().any(|&(_, _, unwritten)| unwritten), "the rest of the step is only reserved: {ext:?}");
    // appends within the zeroed part write no more zeros
    let zeroed = wal.zeroed;
    write_n(&mut wal, 11, 10);
    assert_eq!(wal.zeroed, zeroed);
    // an append past it zeroes again, from its own end
    let value = vec![9u8; ZERO_AHEAD as usize];
    wal.append(1, 21, &value).unwrap();
    wal.sync().unwrap();
    let end = data_end(&path) as u64;
    assert_eq!(wal.zeroed, end + ZERO_AHEAD);
    assert!(written_to(&extents(&path).unwrap()) >= end + ZERO_AHEAD);
    // reopened: zeroing goes on from the append offset, and the records are all there
    drop(wal);
    let (mut wal, recs) = Wal::open(dir.path(), WalOptions::default()).unwrap();
    assert_eq!(indexes(&recs), (1..=21).collect::<Vec<_>>());
    assert_eq!(wal.zeroed, end);
    write_n(&mut wal, 22, 1);
    assert_eq!(wal.zeroed, data_end(&path) as u64 + ZERO_AHEAD);
    let (_, recs) = Wal::open(dir.path(), WalOptions::default()).unwrap();
    assert_eq!(indexes(&recs), (1..=22).collect::<Vec<_>>());
}
