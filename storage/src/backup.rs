//! cairn's own backup format: what Maintenance.Snapshot streamed before it streamed an
//! etcd db (`etcd_db::EtcdExport`). Kept read-only, so `cairn snapshot status|restore|
//! export-etcd` still read files saved then; nothing writes it any more (the writer below
//! is compiled for this module's tests only).
//!
//! Format:
//! ```text
//! stream:   the snapshot stream of every bucket (`snapshot.rs`: b"CAIRNSNP", entries,
//!           trailer with entry count and CRC-32)
//! padding:  zero bytes up to the next multiple of 512 bytes
//! sha256:   32 bytes, the SHA-256 of stream and padding
//! ```
//! The padding is there because `etcdctl snapshot save` accepts a received file only when
//! its length modulo 512 is 32: etcd streams a bbolt file (whole pages) and then its
//! SHA-256 as the last message (`v3rpc/maintenance.go`), and etcd's restore checks that
//! hash. A reader ([`read_backup`]) checks, in order: the length, the SHA-256, the stream
//! (magic, every entry, count and CRC), and that only zero padding follows it; a truncated
//! or altered file fails one of them and is refused whole. [`read_backup_file`] makes the
//! same checks on a file in two passes (the SHA-256, then the stream, handed out entry by
//! entry), holding a chunk of it at a time.

use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use ring::digest::{Context, SHA256};

use crate::backend::Bucket;
use crate::error::{Error, Result};
use crate::snapshot::{read_snapshot, read_snapshot_with, EntryFn};

/// The stream is padded to a multiple of this many bytes.
pub const BACKUP_ALIGN: u64 = 512;
/// Length of the SHA-256 that ends a backup.
pub const SHA256_LEN: usize = 32;

/// The SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; SHA256_LEN] {
    let mut out = [0u8; SHA256_LEN];
    out.copy_from_slice(ring::digest::digest(&SHA256, data).as_ref());
    out
}

/// The SHA-256 of the next `len` bytes of `input`, read a MiB at a time (a file's
/// contents before its trailer, without holding them).
pub fn sha256_of_next(input: &mut dyn Read, len: u64) -> std::io::Result<[u8; SHA256_LEN]> {
    let mut sha = Context::new(&SHA256);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        input.read_exact(&mut buf[..n])?;
        sha.update(&buf[..n]);
        left -= n as u64;
    }
    let mut out = [0u8; SHA256_LEN];
    out.copy_from_slice(sha.finish().as_ref());
    Ok(out)
}

/// True when `data` starts like a cairn backup (its stream's magic).
pub fn is_backup(data: &[u8]) -> bool {
    data.starts_with(crate::snapshot::MAGIC)
}

/// A verified backup's contents.
#[derive(Debug)]
pub struct Backup {
    /// Every entry, bucket by bucket in key order, as the stream holds them.
    pub entries: Vec<(Bucket, Vec<u8>, Vec<u8>)>,
    /// The SHA-256 the file ends with (verified).
    pub sha256: [u8; SHA256_LEN],
}

/// Reads and verifies a whole backup file (see the module docs for the checks); any
/// failure is [`Error::Corrupt`] naming what is wrong.
pub fn read_backup(data: &[u8]) -> Result<Backup> {
    let bad = |detail: String| Error::corrupt("backup", detail);
    if data.len() < SHA256_LEN || (data.len() - SHA256_LEN) as u64 % BACKUP_ALIGN != 0 {
        return Err(bad(format!(
            "{} bytes is not a multiple of {BACKUP_ALIGN} plus a {SHA256_LEN}-byte SHA-256: the file is truncated or not a cairn backup",
            data.len()
        )));
    }
    let (body, want) = data.split_at(data.len() - SHA256_LEN);
    let got = ring::digest::digest(&SHA256, body);
    if got.as_ref() != want {
        return Err(bad("SHA-256 mismatch: the file is corrupt or truncated".to_owned()));
    }
    let mut rest = body;
    let entries = read_snapshot(&mut rest)?;
    if rest.len() as u64 >= BACKUP_ALIGN || rest.iter().any(|&b| b != 0) {
        return Err(bad(format!("{} unexpected bytes after the snapshot stream", rest.len())));
    }
    let mut sha256 = [0u8; SHA256_LEN];
    sha256.copy_from_slice(want);
    Ok(Backup { entries, sha256 })
}

/// Verifies the backup file at `path` as [`read_backup`] does and hands its stream's
/// entries to `visit`, reading the file in chunks (module docs); returns the file's
/// length. The stream's own checks come after some entries were handed out: a visitor
/// that keeps them must drop them on an error.
pub fn read_backup_file(path: &Path, visit: &mut EntryFn<'_>) -> Result<u64> {
    let bad = |detail: String| Error::corrupt("backup", detail);
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    if len < SHA256_LEN as u64 || (len - SHA256_LEN as u64) % BACKUP_ALIGN != 0 {
        return Err(bad(format!(
            "{len} bytes is not a multiple of {BACKUP_ALIGN} plus a {SHA256_LEN}-byte SHA-256: the file is truncated or not a cairn backup"
        )));
    }
    let body_len = len - SHA256_LEN as u64;
    let got = sha256_of_next(&mut file, body_len)?;
    let mut want = [0u8; SHA256_LEN];
    file.read_exact(&mut want)?;
    if got != want {
        return Err(bad("SHA-256 mismatch: the file is corrupt or truncated".to_owned()));
    }
    file.seek(SeekFrom::Start(0))?;
    let mut body = BufReader::with_capacity(1 << 20, (&mut file).take(body_len));
    read_snapshot_with(&mut body, visit)?;
    let mut rest = Vec::new();
    (&mut body).take(BACKUP_ALIGN).read_to_end(&mut rest)?;
    if rest.len() as u64 >= BACKUP_ALIGN || rest.iter().any(|&b| b != 0) {
        return Err(bad(format!("{} unexpected bytes after the snapshot stream", rest.len())));
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    //! The writer of the old format lives here: only these tests write it.

    use std::io::Write;

    use ring::digest::Context;

    use super::*;
    use crate::backend::{write_snapshot, ReadView};

/// Length of a stream of `stream_len` bytes with its padding (without the SHA-256).
    fn padded_len(stream_len: u64) -> u64 {
        stream_len.div_ceil(BACKUP_ALIGN) * BACKUP_ALIGN
    }
    
    /// Writes stream and padding to an output, hashing them.
    struct BackupWriter<W: Write> {
        out: W,
        sha: Context,
        written: u64,
    }
    
    impl<W: Write> BackupWriter<W> {
        fn new(out: W) -> Self {
            BackupWriter { out, sha: Context::new(&SHA256), written: 0 }
        }
    
        /// Writes `view`'s snapshot stream and its padding; returns the SHA-256 of both and
        /// the output.
        fn write_view(mut self, view: &dyn ReadView) -> Result<([u8; SHA256_LEN], W)> {
            write_snapshot(view, &mut self)?;
            let pad = padded_len(self.written) - self.written;
            self.write_all(&vec![0; pad as usize])?;
            self.flush()?;
            let mut sha = [0u8; SHA256_LEN];
            sha.copy_from_slice(self.sha.finish().as_ref());
            Ok((sha, self.out))
        }
    }
    
    impl<W: Write> Write for BackupWriter<W> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let n = self.out.write(buf)?;
            self.sha.update(&buf[..n]);
            self.written += n as u64;
            Ok(n)
        }
    
        fn flush(&mut self) -> std::io::Result<()> {
            self.out.flush()
        }
    }
    
    /// Writes a whole backup of `view` (stream, padding, SHA-256) to `out`; returns its length.
    fn write_backup(view: &dyn ReadView, out: &mut dyn Write) -> Result<u64> {
        let mut counted = Counting { out, n: 0 };
        let (sha, counted) = BackupWriter::new(&mut counted).write_view(view)?;
        counted.write_all(&sha)?;
        counted.flush()?;
        Ok(counted.n)
    }
    
    struct Counting<'a> {
        out: &'a mut dyn Write,
        n: u64,
    }
    
    impl Write for Counting<'_> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let n = self.out.write(buf)?;
            self.n += n as u64;
            Ok(n)
        }
    
        fn flush(&mut self) -> std::io::Result<()> {
            self.out.flush()
        }
    }
    use crate::backend::{Backend, WriteBatch};
    use crate::sled_backend::SledBackend;

    fn sample() -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let be = SledBackend::open(dir.path()).unwrap();
        let mut b = WriteBatch::default();
        for i in 0..50u32 {
            b.put(Bucket::Key, i.to_be_bytes().to_vec(), vec![b'v'; i as usize]);
        }
        b.put(Bucket::Meta, b"m".to_vec(), b"1".to_vec());
        be.write(b).unwrap();
        let view = be.read_view().unwrap();
        let mut out = Vec::new();
        let n = write_backup(view.as_ref(), &mut out).unwrap();
        assert_eq!(n as usize, out.len());
        out
    }

    #[test]
    fn round_trip_with_etcds_length_rule() {
        let data = sample();
        assert_eq!(data.len() % 512, 32, "etcdctl's check: length mod 512 is the SHA-256's");
        assert!(is_backup(&data));
        let b = read_backup(&data).unwrap();
        assert_eq!(b.entries.len(), 51);
        assert_eq!(b.entries[3], (Bucket::Key, 3u32.to_be_bytes().to_vec(), vec![b'v'; 3]));
    }

    #[test]
    fn truncated_or_altered_files_are_refused() {
        let data = sample();
        for cut in [0, 1, 31, 32, 512, data.len() - 512, data.len() - 1] {
            assert!(read_backup(&data[..cut]).is_err(), "truncated to {cut}");
        }
        for at in [0, 9, 100, data.len() - 40, data.len() - 1] {
            let mut bad = data.clone();
            bad[at] ^= 1;
            let e = read_backup(&bad).unwrap_err().to_string();
            assert!(e.contains("SHA-256") || e.contains("backup"), "{e}");
        }
        // a correct hash over a broken stream (a bad page): the stream check catches it
        let body_len = data.len() - SHA256_LEN;
        let mut bad = data[..body_len].to_vec();
        bad[20] ^= 0xff;
        let sha = ring::digest::digest(&SHA256, &bad);
        bad.extend_from_slice(sha.as_ref());
        assert!(read_backup(&bad).is_err());
    }
}
