//! Files holding snapshot data received from a leader, so that an installed snapshot
//! survives a crash that comes before the state machine made it durable.
//!
//! ```text
//! name: snapshot-<index:016x>.snap (written as .tmp, fsynced, renamed, directory fsynced)
//! offset  size  field
//! 0       8     magic b"CAIRNSNP"
//! 8       8     index: u64 LE, the snapshot's raft index
//! 16      8     len: u64 LE, bytes of data
//! 24      4     crc: u32 LE, CRC-32 (IEEE) of the data
//! 28      len   data (the state machine's snapshot bytes)
//! ```
//! The file is written before the WAL's `SNAPSHOT` record: a file without its record is
//! an unfinished install and is deleted on open.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};



use super::StorageError;

const MAGIC: &[u8; 8] = b"CAIRNSNP";
const HEADER_LEN: usize = 28;

fn name(index: u64) -> String {
    format!("snapshot-{index:016x}.snap")
}

/// Indexes of the snapshot files in `dir`.
pub fn list(dir: &Path) -> Result<Vec<u64>, StorageError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let n = entry.file_name();
        let Some(n) = n.to_str() else { continue };
        if n.ends_with(".tmp") {
            std::fs::remove_file(entry.path())?;
            continue;
        }
        if let Some(i) = n.strip_prefix("snapshot-").and_then(|s| s.strip_suffix(".snap")) {
            if let Ok(i) = u64::from_str_radix(i, 16) {
                out.push(i);
            }
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Writes the file for `index` durably.
pub fn write(dir: &Path, index: u64, data: &[u8]) -> Result<(), StorageError> {
    let path = dir.join(name(index));
    let tmp: PathBuf = dir.join(format!("{}.tmp", name(index)));
    let mut f = File::create(&tmp)?;
    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&index.to_le_bytes());
    header.extend_from_slice(&(data.len() as u64).to_le_bytes());
    header.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
    f.write_all(&header)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    sync_dir(dir)?;
    Ok(())
}

/// Reads and checks the file for `index`.
pub fn read(dir: &Path, index: u64) -> Result<Vec<u8>, StorageError> {
    let path = dir.join(name(index));
    let buf = std::fs::read(&path)?;
    let bad = |detail: &str| StorageError::CorruptSnapshot { path: path.clone(), detail: detail.to_string() };
    if buf.len() < HEADER_LEN || &buf[0..8] != MAGIC {
        return Err(bad("bad header"));
    }
    let word = |at: usize| u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"));
    let (got_index, len) = (word(8), word(16));
    let crc = u32::from_le_bytes(buf[24..28].try_into().expect("4 bytes"));
    if got_index != index {
        return Err(bad("index does not match the file name"));
    }
    if (buf.len() - HEADER_LEN) as u64 != len {
        return Err(bad("length does not match"));
    }
    let data = buf[HEADER_LEN..].to_vec();
    if crc32fast::hash(&data) != crc {
        return Err(bad("checksum mismatch"));
    }
    Ok(data)
}

/// Removes the file for `index` (if present).
pub fn remove(dir: &Path, index: u64) -> Result<(), StorageError> {
    match std::fs::remove_file(dir.join(name(index))) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// fsyncs a directory so that created, renamed or removed entries are durable.
pub fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)?.sync_all()?;
    Ok(())
}
