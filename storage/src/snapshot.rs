//! The backend snapshot stream (Maintenance.Snapshot, and later Raft snapshots).
//!
//! Format, all integers little-endian:
//! ```text
//! header:  b"CAIRNSNP"  u32 version (= 1)
//! entry:   u8 bucket (1..=3)  u32 key_len  key  u32 value_len  value     (repeated)
//! trailer: u8 0  u64 entry_count  u32 crc32 (IEEE) of every byte before the crc
//! ```
//! A reader rejects a stream with a bad magic, an unknown bucket, a short read or a CRC
//! mismatch: a snapshot is installed whole or not at all.

use std::io::{Read, Write};

use crate::backend::Bucket;
use crate::crc32::Crc32;
use crate::error::{Error, Result};

pub(crate) const MAGIC: &[u8; 8] = b"CAIRNSNP";
const VERSION: u32 = 1;

/// Writes a snapshot stream.
pub struct SnapshotWriter<'a> {
    out: &'a mut dyn Write,
    crc: Crc32,
    written: u64,
    entries: u64,
}

impl<'a> SnapshotWriter<'a> {
    /// Starts a stream: writes the header.
    pub fn new(out: &'a mut dyn Write) -> Result<Self> {
        let mut w = SnapshotWriter { out, crc: Crc32::new(), written: 0, entries: 0 };
        w.put(MAGIC)?;
        w.put(&VERSION.to_le_bytes())?;
        Ok(w)
    }

    fn put(&mut self, b: &[u8]) -> Result<()> {
        self.out.write_all(b)?;
        self.crc.update(b);
        self.written += b.len() as u64;
        Ok(())
    }

    /// Appends one entry.
    pub fn entry(&mut self, bucket: Bucket, key: &[u8], value: &[u8]) -> Result<()> {
        self.put(&[bucket as u8])?;
        self.put(&(key.len() as u32).to_le_bytes())?;
        self.put(key)?;
        self.put(&(value.len() as u32).to_le_bytes())?;
        self.put(value)?;
        self.entries += 1;
        Ok(())
    }

    /// Writes the trailer; returns the stream's length in bytes.
    pub fn finish(mut self) -> Result<u64> {
        self.put(&[0])?;
        let n = self.entries;
        self.put(&n.to_le_bytes())?;
        let crc = self.crc.finish();
        self.out.write_all(&crc.to_le_bytes())?;
        self.out.flush()?;
        Ok(self.written + 4)
    }
}

/// Reads a whole snapshot stream, verifying it, and returns its entries.
pub fn read_snapshot(input: &mut dyn Read) -> Result<Vec<(Bucket, Vec<u8>, Vec<u8>)>> {
    let mut entries = Vec::new();
    read_snapshot_with(input, &mut |b, k, v| {
        entries.push((b, k.to_vec(), v.to_vec()));
        Ok(())
    })?;
    Ok(entries)
}

/// The visitor of [`read_snapshot_with`]: gets each entry in stream order.
pub type EntryFn<'v> = dyn FnMut(Bucket, &[u8], &[u8]) -> Result<()> + 'v;

/// Reads a snapshot stream, handing each entry to `visit` as it is read (one entry in
/// memory at a time); returns the number of entries. The trailer (count and CRC) is
/// checked at the end, so a visitor that keeps what it got must drop it on an error.
pub fn read_snapshot_with(input: &mut dyn Read, visit: &mut EntryFn<'_>) -> Result<u64> {
    let mut r = CrcReader { input, crc: Crc32::new() };
    let mut magic = [0u8; 8];
    r.read(&mut magic)?;
    if &magic != MAGIC {
        return Err(Error::corrupt("snapshot", "bad magic"));
    }
    let version = r.u32()?;
    if version != VERSION {
        return Err(Error::corrupt("snapshot", format!("unknown version {version}")));
    }
    let mut count = 0u64;
    loop {
        let mut tag = [0u8; 1];
        r.read(&mut tag)?;
        let bucket = match tag[0] {
            0 => break,
            1 => Bucket::Key,
            2 => Bucket::Meta,
            3 => Bucket::Lease,
            b => return Err(Error::corrupt("snapshot", format!("unknown bucket {b}"))),
        };
        let k = r.bytes()?;
        let v = r.bytes()?;
        visit(bucket, &k, &v)?;
        count += 1;
    }
    let mut n = [0u8; 8];
    r.read(&mut n)?;
    if u64::from_le_bytes(n) != count {
        return Err(Error::corrupt("snapshot", "entry count mismatch"));
    }
    let want = r.crc.finish();
    let mut crc = [0u8; 4];
    r.input.read_exact(&mut crc).map_err(|e| Error::corrupt("snapshot", e))?;
    if u32::from_le_bytes(crc) != want {
        return Err(Error::corrupt("snapshot", "crc mismatch"));
    }
    Ok(count)
}

struct CrcReader<'a> {
    input: &'a mut dyn Read,
    crc: Crc32,
}

impl CrcReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> Result<()> {
        self.input.read_exact(buf).map_err(|e| Error::corrupt("snapshot", e))?;
        self.crc.update(buf);
        Ok(())
    }

    fn u32(&mut self) -> Result<u32> {
        let mut b = [0u8; 4];
        self.read(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn bytes(&mut self) -> Result<Vec<u8>> {
        let n = self.u32()? as usize;
        if n > 1 << 30 {
            return Err(Error::corrupt("snapshot", format!("entry of {n} bytes")));
        }
        // the buffer grows as the bytes arrive: a length read from the stream is not
        // trusted with an allocation before the stream has paid for it
        let mut v = Vec::with_capacity(n.min(64 << 10));
        (&mut *self.input).take(n as u64).read_to_end(&mut v).map_err(|e| Error::corrupt("snapshot", e))?;
        if v.len() != n {
            return Err(Error::corrupt("snapshot", format!("entry of {n} bytes cut short after {}", v.len())));
        }
        self.crc.update(&v);
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut buf = Vec::new();
        let mut w = SnapshotWriter::new(&mut buf).unwrap();
        w.entry(Bucket::Key, b"k1", b"v1").unwrap();
        w.entry(Bucket::Meta, b"m", b"").unwrap();
        let n = w.finish().unwrap();
        assert_eq!(n as usize, buf.len());
        buf
    }

    #[test]
    fn round_trip() {
        let buf = sample();
        let e = read_snapshot(&mut buf.as_slice()).unwrap();
        assert_eq!(e, vec![(Bucket::Key, b"k1".to_vec(), b"v1".to_vec()), (Bucket::Meta, b"m".to_vec(), vec![])]);
    }

    #[test]
    fn every_flipped_byte_or_truncation_is_rejected() {
        let buf = sample();
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x40;
            assert!(read_snapshot(&mut bad.as_slice()).is_err(), "flip at {i}");
            assert!(read_snapshot(&mut &buf[..i]).is_err(), "truncated at {i}");
        }
    }

    /// A short stream declaring a 1 GiB key is refused without allocating it: reading it
    /// into a buffer sized from the header would take 1 GiB of address space per attempt.
    #[test]
    fn a_huge_declared_entry_is_refused_without_allocating_it() {
        let mut buf = MAGIC.to_vec();
        buf.extend_from_slice(&VERSION.to_le_bytes());
        buf.push(1);
        buf.extend_from_slice(&(1u32 << 30).to_le_bytes());
        buf.extend_from_slice(b"only a few bytes");
        let err = read_snapshot(&mut buf.as_slice()).unwrap_err();
        assert!(err.to_string().contains("cut short after 16"), "{err}");
    }
}
