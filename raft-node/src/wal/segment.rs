//! Segment files: naming, creation with preallocation, and directory durability.
//!
//! A segment is `<seq:016x>-<first_index:016x>.wal`: `seq` orders segments, `first_index`
//! is the smallest record index the segment may hold (every index in it is ≥ that, and <
//! the next segment's). Segments start with a 16-byte header, `b"CAIRNWAL"` then a u32 LE
//! format version (1) and 4 zero bytes, followed by records (`record.rs`). Segments are
//! preallocated (fallocate) ahead of the appends, in steps (`WalOptions::prealloc_step`),
//! so that most appends do not change the file's size (an fdatasync then has no metadata
//! to write) while a segment takes little more space than its records.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// Segment header length.
pub const SEGMENT_HEADER_LEN: u64 = 16;
const MAGIC: &[u8; 8] = b"CAIRNWAL";
const VERSION: u32 = 1;

/// A segment found on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Position in the log.
    pub seq: u64,
    /// Smallest index the segment may hold.
    pub first_index: u64,
    /// Its path.
    pub path: PathBuf,
}

/// The file name of a segment.
pub fn segment_name(seq: u64, first_index: u64) -> String {
    format!("{seq:016x}-{first_index:016x}.wal")
}

/// Parses a segment file name; `None` for anything else.
pub fn parse_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".wal")?;
    let (a, b) = stem.split_once('-')?;
    if a.len() != 16 || b.len() != 16 {
        return None;
    }
    Some((u64::from_str_radix(a, 16).ok()?, u64::from_str_radix(b, 16).ok()?))
}

/// Lists the segments of `dir` in order.
pub fn list(dir: &Path) -> std::io::Result<Vec<SegmentInfo>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if let Some((seq, first_index)) = name.to_str().and_then(parse_name) {
            out.push(SegmentInfo { seq, first_index, path: entry.path() });
        }
    }
    out.sort_by_key(|s| s.seq);
    Ok(out)
}

/// Creates a segment (header written, `size` bytes preallocated) and makes it and its
/// directory entry durable. A failure (a full disk) leaves no file behind.
pub fn create(dir: &Path, seq: u64, first_index: u64, size: u64) -> std::io::Result<(SegmentInfo, File)> {
    let path = dir.join(segment_name(seq, first_index));
    let tmp = dir.join(format!("{}.tmp", segment_name(seq, first_index)));
    let mut f = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&tmp)?;
    if let Err(e) = preallocate(&f, size) {
        // do not leave a half-allocated file taking the space of a full disk
        drop(f);
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let mut header = Vec::with_capacity(SEGMENT_HEADER_LEN as usize);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&VERSION.to_le_bytes());
    header.extend_from_slice(&[0; 4]);
    f.write_all(&header)?;
    f.sync_all()?;
    // a segment appears under its final name only once its header is durable
    std::fs::rename(&tmp, &path)?;
    sync_dir(dir)?;
    Ok((SegmentInfo { seq, first_index, path }, f))
}

/// Checks a segment's header.
pub fn check_header(buf: &[u8]) -> bool {
    buf.len() >= SEGMENT_HEADER_LEN as usize
        && &buf[0..8] == MAGIC
        && u32::from_le_bytes(buf[8..12].try_into().expect("4 bytes")) == VERSION
}

/// Makes the file `size` bytes long (if shorter), with blocks allocated; reads past what
/// was written return zeros (the end of the records).
pub fn preallocate(f: &File, size: u64) -> std::io::Result<()> {
    // SAFETY: fallocate on a valid, open file descriptor; no memory is passed.
    let r = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, size as libc::off_t) };
    if r == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        // file systems without fallocate: a sparse file still works, fdatasync does more
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => f.set_len(size),
        // a full disk (or any other failure) is an error now, not at the next write into
        // a sparse segment
        _ => Err(err),
    }
}

/// fsyncs a directory so that created, renamed or removed entries are durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}
