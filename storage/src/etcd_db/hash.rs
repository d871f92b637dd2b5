//! The SHA-256 trailer of snapshot files: etcd's Maintenance.Snapshot streams the db
//! followed by the SHA-256 of its bytes, and `etcdctl snapshot save` keeps both, so a
//! saved snapshot is a bbolt file (a multiple of the page size) plus 32 bytes. etcd's
//! restore tells the two apart by the length: `len % 512 == 32` means a trailer.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use ring::digest::{digest, Context, SHA256};

use super::EtcdDbError;
use crate::bbolt::BboltFile;

const SHA256_LEN: usize = 32;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Splits a snapshot file into its db and whether it carried a trailer; a trailer that
/// does not match the db's SHA-256 is refused.
pub fn split_sha256(file: &[u8]) -> Result<(&[u8], bool), EtcdDbError> {
    if file.len() % 512 != SHA256_LEN {
        return Ok((file, false));
    }
    let (db, trailer) = file.split_at(file.len() - SHA256_LEN);
    let actual = digest(&SHA256, db);
    if actual.as_ref() != trailer {
        return Err(EtcdDbError::HashMismatch { expected: hex(trailer), actual: hex(actual.as_ref()) });
    }
    Ok((db, true))
}

/// Opens the snapshot (or bare db) file at `path` without reading it into memory: a
/// trailer (the rule of [`split_sha256`]) is verified by hashing the db a MiB at a time, then the db before it is opened with its pages read on demand
/// ([`BboltFile::from_file`]). Returns the open db and whether the file had a trailer.
pub fn open_snapshot_file(path: &Path) -> Result<(BboltFile, bool), EtcdDbError> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    if len % 512 != SHA256_LEN as u64 {
        return Ok((BboltFile::from_file(file, len)?, false));
    }
    let db_len = len - SHA256_LEN as u64;
    let actual = crate::backup::sha256_of_next(&mut file, db_len)?;
    let mut trailer = [0u8; SHA256_LEN];
    file.read_exact(&mut trailer)?;
    if actual != trailer {
        return Err(EtcdDbError::HashMismatch { expected: hex(&trailer), actual: hex(&actual) });
    }
    Ok((BboltFile::from_file(file, db_len)?, true))
}

/// Appends the SHA-256 of `db` to it, as etcd's snapshot files carry it.
pub fn append_sha256(mut db: Vec<u8>) -> Vec<u8> {
    let sum = digest(&SHA256, &db);
    db.extend_from_slice(sum.as_ref());
    db
}

/// Writes through to an output, hashing every byte written: what a streamed snapshot's
/// SHA-256 trailer is computed with.
pub struct Sha256Writer<W: Write> {
    out: W,
    sha: Context,
}

impl<W: Write> Sha256Writer<W> {
    /// A writer to `out`.
    pub fn new(out: W) -> Self {
        Sha256Writer { out, sha: Context::new(&SHA256) }
    }

    /// The SHA-256 of everything written, and the output.
    pub fn finish(self) -> ([u8; SHA256_LEN], W) {
        let mut sum = [0u8; SHA256_LEN];
        sum.copy_from_slice(self.sha.finish().as_ref());
        (sum, self.out)
    }
}

impl<W: Write> Write for Sha256Writer<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        self.sha.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailer_round_trip_and_mismatch() {
        let db = vec![7u8; 4096];
        let file = append_sha256(db.clone());
        assert_eq!(file.len(), 4096 + 32);
        assert_eq!(split_sha256(&file).unwrap(), (&db[..], true));
        assert_eq!(split_sha256(&db).unwrap(), (&db[..], false));
        let mut bad = file.clone();
        bad[100] ^= 1;
        assert!(matches!(split_sha256(&bad), Err(EtcdDbError::HashMismatch { .. })));
        let mut w = Sha256Writer::new(Vec::new());
        w.write_all(&db[..100]).unwrap();
        w.write_all(&db[100..]).unwrap();
        let (sum, out) = w.finish();
        assert_eq!((&sum[..], out), (&file[4096..], db));
        // the known vector: SHA-256 of "abc"
        assert_eq!(hex(digest(&SHA256, b"abc").as_ref()), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
