//! etcd's write-ahead log, read (etcd 3.4 and 3.5 write the same format): what an etcd
//! member logged after its db file last caught up, for an import of its data folder.
//!
//! # On disk
//! ```text
//!  <wal dir>/<seq:016x>-<first index:016x>.wal   read in name (= sequence) order
//!  each file: frames, then zeros (etcd preallocates 64 MB files)
//!    frame = u64 little-endian length word, record, padding
//!      length word: low 56 bits = record length n; top bit set ⇒ bits 56..58 hold the
//!      padding p (n + p is a multiple of 8); 0 ⇒ the written part of the file ends
//!    record = walpb.Record { type, crc, data }
//!      1 metadata  etcdserverpb.Metadata { NodeID, ClusterID }  (every file)
//!      2 entry     raftpb.Entry
//!      3 state     raftpb.HardState                             (the newest wins)
//!      4 crc       the running CRC of everything before (first record of every file)
//!      5 snapshot  walpb.Snapshot { index, term }
//!  crc: CRC-32C over the data of every record but crc records, chained across records
//!  and files; each record's `crc` is the chain's value after its own data.
//! ```
//! Entries are kept as Raft rebuilds its log: an entry at index i replaces the entry at i
//! and drops every later one (a new leader overwrote an uncommitted tail).
//!
//! # Torn writes
//! As etcd's reader: in the *last* file only, a frame that runs past the end of the file,
//! or whose record does not decode or match its CRC while one of its 512-byte sectors is
//! all zeros, is the end of the log (a write cut short by a crash). Anything else that
//! does not verify is [`WalError`]; nothing here panics on any bytes.

use std::path::{Path, PathBuf};

use cairn_proto::etcdserverpb::Metadata;
use cairn_proto::raftpb::{Entry, HardState};
use cairn_proto::walpb::{Record, Snapshot};
use prost::Message;

use crate::crc32::crc32c_update;

const METADATA: i64 = 1;
const ENTRY: i64 = 2;
const STATE: i64 = 3;
const CRC: i64 = 4;
const SNAPSHOT: i64 = 5;
/// etcd refuses records this long (`maxWALEntrySizeLimit`), and so does this reader.
const MAX_RECORD: u64 = 10 << 20;
const SECTOR: usize = 512;

/// Why an etcd WAL could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// Listing or reading a file failed.
    #[error("etcd wal {path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The folder holds no `.wal` file.
    #[error("etcd wal {0}: no .wal file")]
    Empty(PathBuf),
    /// A record that does not verify, where a torn write cannot explain it.
    #[error("etcd wal {path} at offset {offset}: {what}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The frame's offset in the file.
        offset: u64,
        /// What is wrong.
        what: String,
    },
    /// Two files name different members or clusters.
    #[error("etcd wal: metadata differs between files (member {0:x} cluster {1:x} vs member {2:x} cluster {3:x})")]
    MetadataMismatch(u64, u64, u64, u64),
    /// No metadata record.
    #[error("etcd wal: no metadata record")]
    NoMetadata,
    /// An entry leaves a hole in the log.
    #[error("etcd wal: entry {index} follows entry {last}")]
    Gap {
        /// The entry's index.
        index: u64,
        /// The index before it.
        last: u64,
    },
}

/// What an etcd WAL holds.
#[derive(Debug, Default)]
pub struct EtcdWal {
    /// The member whose log it is.
    pub node_id: u64,
    /// Its cluster.
    pub cluster_id: u64,
    /// The newest hard state (term, vote, commit).
    pub hard_state: HardState,
    /// The newest snapshot marker's index (0: none).
    pub snapshot_index: u64,
    /// The log, consecutive indexes (empty when nothing was logged since the files kept).
    pub entries: Vec<Entry>,
}

impl EtcdWal {
    /// The entries after `index`, in order.
    pub fn entries_after(&self, index: u64) -> &[Entry] {
        let skip = self.entries.iter().take_while(|e| e.index <= index).count();
        &self.entries[skip..]
    }

    fn push(&mut self, e: Entry) -> Result<(), WalError> {
        match self.entries.first().map(|f| f.index) {
            Some(first) if e.index >= first => {
                let last = first + (self.entries.len() as u64 - 1);
                if e.index > last.saturating_add(1) {
                    return Err(WalError::Gap { index: e.index, last });
                }
                self.entries.truncate((e.index - first) as usize);
            }
            // the first entry, or one below every kept entry: the log restarts there
            _ => self.entries.clear(),
        }
        self.entries.push(e);
        Ok(())
    }
}

/// The `.wal` files of `dir`, in sequence order.
pub fn wal_files(dir: &Path) -> Result<Vec<PathBuf>, WalError> {
    let io = |source| WalError::Io { path: dir.to_owned(), source };
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io)? {
        let path = e.map_err(io)?.path();
        if path.extension().is_some_and(|x| x == "wal") {
            files.push(path);
        }
    }
    // names are fixed-width hex: name order is sequence order
    files.sort();
    Ok(files)
}

/// Reads every `.wal` file of `dir` (module docs).
pub fn read_wal(dir: &Path) -> Result<EtcdWal, WalError> {
    let files = wal_files(dir)?;
    if files.is_empty() {
        return Err(WalError::Empty(dir.to_owned()));
    }
    let mut wal = EtcdWal::default();
    let mut meta: Option<(u64, u64)> = None;
    let mut crc = 0u32;
    for (i, path) in files.iter().enumerate() {
        let data = std::fs::read(path).map_err(|source| WalError::Io { path: path.clone(), source })?;
        let last_file = i + 1 == files.len();
        read_file(path, &data, last_file, &mut crc, &mut |rec, corrupt| apply_record(&mut wal, &mut meta, rec, corrupt))?;
    }
    let (node_id, cluster_id) = meta.ok_or(WalError::NoMetadata)?;
    wal.node_id = node_id;
    wal.cluster_id = cluster_id;
    Ok(wal)
}

fn apply_record(
    wal: &mut EtcdWal,
    meta: &mut Option<(u64, u64)>,
    rec: Record,
    corrupt: &dyn Fn(String) -> WalError,
) -> Result<(), WalError> {
    let bad = |what: &str, e: prost::DecodeError| corrupt(format!("{what} record: {e}"));
    match rec.r#type {
        METADATA => {
            let m = Metadata::decode(rec.data.as_slice()).map_err(|e| bad("metadata", e))?;
            match *meta {
                Some((n, c)) if (n, c) != (m.node_id, m.cluster_id) => {
                    return Err(WalError::MetadataMismatch(n, c, m.node_id, m.cluster_id))
                }
                _ => *meta = Some((m.node_id, m.cluster_id)),
            }
        }
        ENTRY => wal.push(Entry::decode(rec.data.as_slice()).map_err(|e| bad("entry", e))?)?,
        STATE => {
            let s = HardState::decode(rec.data.as_slice()).map_err(|e| bad("state", e))?;
            // etcd writes an empty state record when a file is cut before any vote
            if s != HardState::default() {
                wal.hard_state = s;
            }
        }
        SNAPSHOT => wal.snapshot_index = Snapshot::decode(rec.data.as_slice()).map_err(|e| bad("snapshot", e))?.index,
        CRC => {}
        other => return Err(corrupt(format!("unknown record type {other}"))),
    }
    Ok(())
}

/// What [`read_file`] hands each record to, with the way to report it corrupt.
type OnRecord<'a> = dyn FnMut(Record, &dyn Fn(String) -> WalError) -> Result<(), WalError> + 'a;

/// Walks the frames of one file, checking the CRC chain, and hands each record on.
fn read_file(path: &Path, data: &[u8], last_file: bool, crc: &mut u32, on_record: &mut OnRecord<'_>) -> Result<(), WalError> {
    let mut off = 0usize;
    while off + 8 <= data.len() {
        let corrupt = |what: String| WalError::Corrupt { path: path.to_owned(), offset: off as u64, what };
        let word = u64::from_le_bytes(data[off..off + 8].try_into().unwrap_or([0; 8]));
        if word == 0 {
            return Ok(());
        }
        let len = word & !(0xFF << 56);
        let pad = if word >> 63 == 1 { (word >> 56) & 0x7 } else { 0 };
        if len + pad >= MAX_RECORD {
            return Err(corrupt(format!("record of {len} bytes")));
        }
        let start = off + 8;
        let end = start + (len + pad) as usize;
        if end > data.len() {
            if last_file {
                return Ok(()); // cut short by a crash
            }
            return Err(corrupt("record runs past the end of the file".into()));
        }
        let frame = &data[start..end];
        let torn = || last_file && has_zero_sector(start, frame);
        let rec = match Record::decode(&frame[..len as usize]) {
            Ok(r) => r,
            Err(_) if torn() => return Ok(()),
            Err(e) => return Err(corrupt(format!("record: {e}"))),
        };
        if rec.r#type == CRC {
            if *crc != 0 && rec.crc != *crc {
                return Err(corrupt(format!("crc record {:08x}, chain at {:08x}", rec.crc, *crc)));
            }
            *crc = rec.crc;
        } else {
            let next = crc32c_update(*crc, &rec.data);
            if next != rec.crc {
                if torn() {
                    return Ok(());
                }
                return Err(corrupt(format!("crc mismatch: record {:08x}, computed {next:08x}", rec.crc)));
            }
            *crc = next;
        }
        on_record(rec, &corrupt)?;
        off = end;
    }
    Ok(())
}

/// Whether a frame's bytes (starting at file offset `start`) include a whole
/// disk sector's worth, or a sector's tail, of zeros: the sign of a torn write.
fn has_zero_sector(start: usize, frame: &[u8]) -> bool {
    let mut pos = 0;
    while pos < frame.len() {
        let in_sector = SECTOR - (start + pos) % SECTOR;
        let chunk = &frame[pos..(pos + in_sector).min(frame.len())];
        if chunk.iter().all(|b| *b == 0) {
            return true;
        }
        pos += chunk.len();
    }
    false
}

/// Writes frames as etcd does, for tests of the reader (and of importers).
#[cfg(test)]
pub(crate) mod write {
    use super::*;

    /// A WAL file being written: records with the CRC chain, padded to 8 bytes.
    pub struct WalWriter {
        pub bytes: Vec<u8>,
        pub crc: u32,
    }

    impl WalWriter {
        pub fn new(prev_crc: u32) -> WalWriter {
            let mut w = WalWriter { bytes: Vec::new(), crc: prev_crc };
            w.frame(&Record { r#type: CRC, crc: prev_crc, data: Vec::new() });
            w
        }

        pub fn record(&mut self, ty: i64, data: Vec<u8>) {
            self.crc = crc32c_update(self.crc, &data);
            let crc = self.crc;
            self.frame(&Record { r#type: ty, crc, data });
        }

        pub fn metadata(&mut self, node_id: u64, cluster_id: u64) {
            self.record(METADATA, Metadata { node_id, cluster_id }.encode_to_vec());
        }

        pub fn entry(&mut self, term: u64, index: u64, data: Vec<u8>) {
            self.record(ENTRY, Entry { r#type: 0, term, index, data }.encode_to_vec());
        }

        pub fn state(&mut self, term: u64, commit: u64) {
            self.record(STATE, HardState { term, vote: 1, commit }.encode_to_vec());
        }

        fn frame(&mut self, r: &Record) {
            let data = r.encode_to_vec();
            let pad = (8 - data.len() % 8) % 8;
            let mut word = data.len() as u64;
            if pad != 0 {
                word |= (0x80 | pad as u64) << 56;
            }
            self.bytes.extend_from_slice(&word.to_le_bytes());
            self.bytes.extend_from_slice(&data);
            self.bytes.extend(std::iter::repeat_n(0, pad));
        }
    }
}
