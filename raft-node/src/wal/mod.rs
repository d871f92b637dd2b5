//! The write-ahead log.
//!
//! Records (`record.rs`) are appended to the active segment (`segment.rs`) and become
//! durable at [`Wal::sync`], one `pwrite` and one fdatasync for everything appended since
//! the last sync: nothing may be acknowledged before the sync that covers it returned.
//!
//! # Zeroing ahead
//! Segments are preallocated with `fallocate` (space is reserved, so a full disk fails the
//! preallocation rather than a write). The filesystem marks those blocks *unwritten*, and
//! the first fdatasync after a write into them must also record that they now hold data
//! (ext4: a synchronous inode write without a journal, a journal commit with one). So a
//! sync that reaches past `Wal::zeroed` writes zeros from the end of its records
//! [`ZERO_AHEAD`] bytes further (within the allocated part) in the same sync: the syncs
//! after it, until the log reaches that point, write data blocks only. Measured with
//! 2.6 KB appends, an fdatasync each (BENCHMARKS.md): 118–133 µs per fdatasync instead of
//! 165–176 µs on this project's ext4 (no journal), 214–243 µs instead of 490–510 µs on an
//! ext4 with its journal. The price: each byte of the log is written twice (zeros, then the
//! record), as PostgreSQL does when it zero-fills a WAL segment. Zeros past the records are
//! what an unwritten block reads as, so the format and the torn-tail rules below are
//! unchanged.
//!
//! # Opening
//! Every segment is read in order. In the last segment, an invalid record followed by
//! nothing valid is a *torn tail* (a write cut short by a crash): the log is truncated
//! there (zeroed and synced) and appending resumes at that offset. An invalid record with
//! a valid one after it, or an invalid record in any earlier segment, is *corruption*:
//! opening fails ([`WalError::Corrupt`]) rather than silently skipping acknowledged data.
//!
//! # Failure
//! A failed write or fdatasync is sticky: every later append/sync fails with
//! [`WalError::Failed`], since what the kernel kept of the failed write is unknown.
//!
//! # Release
//! [`Wal::release`] deletes whole segments whose records are all at or below an index the
//! state machine has made durable elsewhere; the active segment is never deleted.
//! [`Wal::cut_now`] seals the active segment early (the raft storage does so when it
//! moves the state it still needs into a fresh segment, so every older one can go).

mod record;
mod segment;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::observe::Observer;

pub use record::WalRecord;
use record::{decode, encode, Decoded};
use segment::{SegmentInfo, SEGMENT_HEADER_LEN};

/// Errors of the WAL.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// An I/O error (the log is failed from now on).
    #[error("wal i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The log holds an invalid record that is not a torn tail.
    #[error("wal corrupt: {path}: {detail}")]
    Corrupt {
        /// The segment.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// An earlier write or sync failed; nothing more is accepted.
    #[error("wal failed earlier; restart to recover")]
    Failed,
}

/// WAL settings.
#[derive(Clone, Debug)]
pub struct WalOptions {
    /// A segment is cut once its records reach this many bytes.
    pub segment_size: u64,
    /// The active segment is preallocated this many bytes (at most `segment_size`) ahead:
    /// at creation, then whenever a write would go past the allocated end. Before
    /// 2026-12 whole segments were preallocated; on a small store, the 64 MiB active
    /// segment was a large share of the data folder.
    pub prealloc_step: u64,
    /// Told how long each fdatasync took (`etcd_disk_wal_fsync_duration_seconds`).
    pub observer: Observer,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions { segment_size: 64 << 20, prealloc_step: 4 << 20, observer: Observer::default() }
    }
}

impl WalOptions {
    /// Bytes a new segment is created with.
    fn first_allocation(&self) -> u64 {
        self.prealloc_step.min(self.segment_size).max(SEGMENT_HEADER_LEN)
    }
}

/// How far past the end of its records a sync that passes `Wal::zeroed` writes zeros.
/// Small enough that the sync carrying them stays short (about 0.5 ms for 256 KiB here).
const ZERO_AHEAD: u64 = 256 << 10;

/// The zeros written ahead of the log (static: no buffer per sync).
static ZEROS: [u8; ZERO_AHEAD as usize] = [0; ZERO_AHEAD as usize];

/// An open write-ahead log.
pub struct Wal {
    dir: PathBuf,
    opts: WalOptions,
    segments: Vec<SegmentInfo>,
    file: File,
    /// Where the next record goes in the active segment.
    offset: u64,
    /// Bytes of the active segment's file (allocated; zeros past `offset`).
    allocated: u64,
    /// The active segment is written (records or zeros) and synced below this offset, so
    /// appends below it need no block conversion at sync (module doc, "Zeroing ahead").
    /// After an open it is the append offset: what lies past it is not known to be written.
    zeroed: u64,
    /// Appended, not yet written.
    pending: Vec<u8>,
    /// Highest record index appended.
    last_index: u64,
    failed: bool,
}

impl Wal {
    /// Opens (creating if needed) the log in `dir` and returns it with every record it
    /// holds, oldest first. A torn tail is truncated; corruption is an error.
    pub fn open(dir: &Path, opts: WalOptions) -> Result<(Wal, Vec<WalRecord>), WalError> {
        std::fs::create_dir_all(dir)?;
        // remove half-created segments (they never got their final name)
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_name().to_str().is_some_and(|n| n.ends_with(".wal.tmp")) {
                std::fs::remove_file(entry.path())?;
            }
        }
        let mut segments = segment::list(dir)?;
        if segments.is_empty() {
            let allocated = opts.first_allocation();
            let (info, file) = segment::create(dir, 0, 0, allocated)?;
            let wal = Wal {
                dir: dir.to_path_buf(),
                opts,
                segments: vec![info],
                file,
                offset: SEGMENT_HEADER_LEN,
                allocated,
                zeroed: SEGMENT_HEADER_LEN,
                pending: Vec::new(),
                last_index: 0,
                failed: false,
            };
            return Ok((wal, Vec::new()));
        }
        let mut records = Vec::new();
        let mut tail_offset = SEGMENT_HEADER_LEN;
        let last = segments.len() - 1;
        for (i, seg) in segments.iter().enumerate() {
            let buf = std::fs::read(&seg.path)?;
            let corrupt = |detail: String| WalError::Corrupt { path: seg.path.clone(), detail };
            if !segment::check_header(&buf) {
                return Err(corrupt("bad segment header".into()));
            }
            let mut off = SEGMENT_HEADER_LEN as usize;
            loop {
                match decode(&buf[off..]) {
                    Decoded::Record(r, n) => {
                        if r.index < seg.first_index {
                            return Err(corrupt(format!("record index {} below segment start {}", r.index, seg.first_index)));
                        }
                        records.push(r);
                        off += n;
                    }
                    Decoded::End => break,
                    Decoded::Invalid => {
                        if i != last {
                            return Err(corrupt(format!("invalid record at offset {off} in a sealed segment")));
                        }
                        if let Some(at) = find_valid_record_after(&buf, off + 1) {
                            return Err(corrupt(format!("invalid record at offset {off} before a valid one at {at}")));
                        }
                        tracing::warn!(path = %seg.path.display(), offset = off, "wal: truncating a torn tail");
                        let f = std::fs::OpenOptions::new().write(true).open(&seg.path)?;
                        // zero the torn bytes, up to the last non-zero one (the preallocated
                        // rest is zero already), in bounded pieces
                        let end = buf.iter().rposition(|&b| b != 0).map_or(off, |p| (p + 1).max(off));
                        let zeros = vec![0u8; (end - off).min(1 << 20)];
                        let mut at = off;
                        while at < end {
                            let n = (end - at).min(zeros.len());
                            f.write_all_at(&zeros[..n], at as u64)?;
                            at += n;
                        }
                        f.sync_data()?;
                        break;
                    }
                }
            }
            if i == last {
                tail_offset = off as u64;
            }
        }
        let active = segments.pop().expect("non-empty");
        // a segment holds indexes from its first one: a log whose records are all gone
        // (an active segment cut and never written) still goes on above that, or the
        // next record would sit below its segment's start and the log would not reopen
        let last_index = records.last().map_or(0, |r| r.index).max(active.first_index.saturating_sub(1));
        let file = std::fs::OpenOptions::new().read(true).write(true).open(&active.path)?;
        let allocated = file.metadata()?.len();
        segments.push(active);
        let wal = Wal {
            dir: dir.to_path_buf(),
            opts,
            segments,
            file,
            offset: tail_offset,
            allocated,
            zeroed: tail_offset,
            pending: Vec::new(),
            last_index,
            failed: false,
        };
        Ok((wal, records))
    }

    /// Appends a record (durable only after [`Wal::sync`]). `kind` must not be 0.
    pub fn append(&mut self, kind: u8, index: u64, data: &[u8]) -> Result<(), WalError> {
        if self.failed {
            return Err(WalError::Failed);
        }
        debug_assert!(kind != 0, "wal record kind 0 is reserved");
        encode(kind, index, data, &mut self.pending);
        self.last_index = self.last_index.max(index);
        Ok(())
    }

    /// Writes everything appended and fdatasyncs it; cuts a new segment when the active one
    /// is full. Sticky on failure.
    pub fn sync(&mut self) -> Result<(), WalError> {
        if self.failed {
            return Err(WalError::Failed);
        }
        if self.pending.is_empty() {
            return Ok(());
        }
        let end = self.offset + self.pending.len() as u64;
        if end > self.allocated {
            // never write past the allocated end: a full disk fails here, before any byte
            let target = end.max((self.allocated + self.opts.prealloc_step).min(self.opts.segment_size));
            if let Err(e) = segment::preallocate(&self.file, target) {
                self.failed = true;
                return Err(e.into());
            }
            self.allocated = target;
        }
        // zeros after the records, in the same sync, when they pass the zeroed part
        let zero_to = if end > self.zeroed { (end + ZERO_AHEAD).min(self.allocated) } else { end };
        let r = self.file.write_all_at(&self.pending, self.offset).and_then(|_| {
            if zero_to > end {
                self.file.write_all_at(&ZEROS[..(zero_to - end) as usize], end)?;
            }
            let started = Instant::now();
            let synced = self.file.sync_data();
            self.opts.observer.wal_fsync(started.elapsed());
            synced
        });
        if let Err(e) = r {
            self.failed = true;
            return Err(e.into());
        }
        self.offset += self.pending.len() as u64;
        self.zeroed = self.zeroed.max(zero_to);
        self.pending.clear();
        if self.offset >= self.opts.segment_size {
            if let Err(e) = self.cut() {
                self.failed = true;
                return Err(e);
            }
        }
        Ok(())
    }

    /// Writes and syncs what was appended, then seals the active segment and starts a new
    /// one (durable, with its directory entry) whose records go above everything appended
    /// so far. Sticky on failure.
    pub fn cut_now(&mut self) -> Result<(), WalError> {
        self.sync()?;
        if let Err(e) = self.cut() {
            self.failed = true;
            return Err(e);
        }
        Ok(())
    }

    fn cut(&mut self) -> Result<(), WalError> {
        let seq = self.segments.last().map_or(0, |s| s.seq + 1);
        let allocated = self.opts.first_allocation();
        let (info, file) = segment::create(&self.dir, seq, self.last_index + 1, allocated)?;
        self.segments.push(info);
        self.file = file;
        self.allocated = allocated;
        self.offset = SEGMENT_HEADER_LEN;
        self.zeroed = SEGMENT_HEADER_LEN;
        Ok(())
    }

    /// Deletes sealed segments whose records all have index ≤ `durable_index`.
    pub fn release(&mut self, durable_index: u64) -> Result<usize, WalError> {
        let mut removed = 0;
        // segment i holds indexes in [first_i, first_{i+1}); removable if first_{i+1} - 1 ≤ durable
        while self.segments.len() > 1 && self.segments[1].first_index <= durable_index.saturating_add(1) {
            let seg = self.segments.remove(0);
            std::fs::remove_file(&seg.path)?;
            removed += 1;
        }
        if removed > 0 {
            segment::sync_dir(&self.dir)?;
        }
        Ok(removed)
    }

    /// Highest index appended (after [`Wal::open`]: the last record's, or one below the
    /// active segment's first index if that is higher). Appends go above it.
    pub fn last_index(&self) -> u64 {
        self.last_index
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }
}

/// The offset of the first valid record at or after `from`, if any.
fn find_valid_record_after(buf: &[u8], from: usize) -> Option<usize> {
    (from..buf.len().saturating_sub(record::HEADER_LEN)).find(|&o| {
        // cheap filter before the CRC: a plausible, non-zero length
        let len = u32::from_le_bytes(buf[o..o + 4].try_into().expect("4 bytes")) as usize;
        len >= record::BODY_PREFIX_LEN && o + record::HEADER_LEN + len <= buf.len() && matches!(decode(&buf[o..]), Decoded::Record(..))
    })
}

#[cfg(test)]
mod tests;
