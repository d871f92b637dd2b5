//! The [`Backend`] on sled: the comparison engine.
//!
//! Layout: one sled tree; a bucket's entries are stored under `[bucket as u8] ++ key`, so a
//! sled batch covers every bucket and is atomic across them.
//!
//! Durability: sled's `flush` ends in `sync_file_range` on Linux, which neither flushes the
//! drive's cache nor the file's metadata. `sync` therefore follows it with an fdatasync of
//! sled's log file (`<dir>/db`), the file every write lands in.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

use std::collections::BTreeMap;

use crate::backend::{Backend, BatchOp, Bucket, ReadView, ScanFn, WriteBatch};
use crate::error::{Error, Result};
use crate::snapshot;

/// A sled database as a [`Backend`].
pub struct SledBackend {
    db: sled::Db,
    dir: PathBuf,
    /// sled's log file, fdatasynced by `sync`. The mutex guards the handle only; it is a
    /// leaf lock.
    log_file: Mutex<Option<File>>,
    /// Set by the first failed write or sync; every later write or sync fails (sticky).
    failed: AtomicBool,
    /// Held by `write` from reading a batch's ranges to applying it, so no other write
    /// adds a key to a range between the two. Guards nothing else; a leaf lock.
    writing: Mutex<()>,
}

impl SledBackend {
    /// Opens (or creates) the database in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        // large IO buffers, no background flusher: cairn decides when to sync (see `sync`)
        let config = sled::Config::new()
            .path(dir)
            .cache_capacity(256 << 20)
            .mode(sled::Mode::HighThroughput)
            .segment_size(8 << 20)
            .flush_every_ms(None);
        // sled's file lock outlives a dropped `Db` by a moment (its background threads let
        // go of the file last): a reopen in the same process (restart tests, a restore) may
        // find it still held. Wait up to 2 s before calling the directory busy.
        let mut attempts = 0;
        let db = loop {
            match config.open() {
                Ok(db) => break db,
                Err(sled::Error::Io(e)) if attempts < 100 && e.to_string().contains("could not acquire lock") => {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => return Err(e.into()),
            }
        };
        // make the directory entries of the files sled created durable
        File::open(dir)?.sync_all()?;
        Ok(SledBackend { db, dir: dir.to_path_buf(), log_file: Mutex::new(None), failed: AtomicBool::new(false), writing: Mutex::new(()) })
    }

    fn prefixed(bucket: Bucket, key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(key.len() + 1);
        k.push(bucket as u8);
        k.extend_from_slice(key);
        k
    }

    fn check_alive(&self) -> Result<()> {
        if self.failed.load(Ordering::Acquire) {
            return Err(Error::Stopped);
        }
        Ok(())
    }

    fn fail<T>(&self, e: impl Into<Error>) -> Result<T> {
        self.failed.store(true, Ordering::Release);
        Err(e.into())
    }

    fn fdatasync_log(&self) -> std::io::Result<()> {
        let mut slot = self.log_file.lock();
        if slot.is_none() {
            *slot = Some(File::open(self.dir.join("db"))?);
        }
        slot.as_ref().expect("opened above").sync_data()
    }
}

impl Backend for SledBackend {
    fn get(&self, bucket: Bucket, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get(Self::prefixed(bucket, key))?.map(|v| v.to_vec()))
    }

    fn scan(&self, bucket: Bucket, start: &[u8], end: Option<&[u8]>, visit: &mut ScanFn<'_>) -> Result<()> {
        let lo = Self::prefixed(bucket, start);
        let hi = match end {
            Some(e) => Self::prefixed(bucket, e),
            None => vec![bucket as u8 + 1],
        };
        for item in self.db.range(lo..hi) {
            let (k, v) = item?;
            if !visit(&k[1..], &v)? {
                break;
            }
        }
        Ok(())
    }

    fn write(&self, batch: WriteBatch) -> Result<()> {
        self.check_alive()?;
        let _writing = self.writing.lock();
        let mut b = sled::Batch::default();
        // keys this batch put so far (true) or removed (false): a range deletes those too
        let mut touched: BTreeMap<Vec<u8>, bool> = BTreeMap::new();
        for op in batch.ops {
            match op {
                BatchOp::Put(bucket, k, v) => {
                    let k = Self::prefixed(bucket, &k);
                    touched.insert(k.clone(), true);
                    b.insert(k, v);
                }
                BatchOp::Delete(bucket, k) => {
                    let k = Self::prefixed(bucket, &k);
                    touched.insert(k.clone(), false);
                    b.remove(k);
                }
                BatchOp::DeleteRange(bucket, from, to) => {
                    if from >= to {
                        continue;
                    }
                    let (lo, hi) = (Self::prefixed(bucket, &from), Self::prefixed(bucket, &to));
                    let mut gone: Vec<Vec<u8>> = touched.range(lo.clone()..hi.clone()).filter(|(_, put)| **put).map(|(k, _)| k.clone()).collect();
                    for item in self.db.range(lo..hi) {
                        match item {
                            Ok((k, _)) => gone.push(k.to_vec()),
                            Err(e) => return self.fail(e),
                        }
                    }
                    for k in gone {
                        touched.insert(k.clone(), false);
                        b.remove(k);
                    }
                }
            }
        }
        match self.db.apply_batch(b) {
            Ok(()) => Ok(()),
            Err(e) => self.fail(e),
        }
    }

    fn sync(&self) -> Result<()> {
        self.check_alive()?;
        if let Err(e) = self.db.flush() {
            return self.fail(e);
        }
        match self.fdatasync_log() {
            Ok(()) => Ok(()),
            Err(e) => self.fail(e),
        }
    }

    fn size(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    fn size_in_use(&self) -> u64 {
        // sled does not report live bytes separately; its log is compacted in the background
        self.size()
    }

    fn snapshot(&self, out: &mut dyn std::io::Write) -> Result<u64> {
        let mut w = snapshot::SnapshotWriter::new(out)?;
        for bucket in Bucket::ALL {
            self.scan(bucket, &[], None, &mut |k, v| {
                w.entry(bucket, k, v)?;
                Ok(true)
            })?;
        }
        w.finish()
    }

    /// sled has no views of its own: this one is a copy in memory, taken with one sled
    /// iterator over every bucket (sled's iterators see each batch whole or not at all).
    fn read_view(&self) -> Result<Box<dyn ReadView>> {
        let mut buckets: [BTreeMap<Vec<u8>, Vec<u8>>; 3] = Default::default();
        for item in self.db.iter() {
            let (k, v) = item?;
            let slot = match k.first() {
                Some(1) => 0,
                Some(2) => 1,
                Some(3) => 2,
                _ => return Err(Error::corrupt("sled key", "no bucket prefix")),
            };
            buckets[slot].insert(k[1..].to_vec(), v.to_vec());
        }
        Ok(Box::new(MemView { buckets }))
    }

    /// sled rewrites its log segments in the background and offers no rewrite on demand:
    /// this only makes every written batch durable, as the contract requires.
    fn defragment(&self) -> Result<()> {
        self.sync()
    }
}

/// A copy of every bucket in memory: sled's [`ReadView`].
struct MemView {
    buckets: [BTreeMap<Vec<u8>, Vec<u8>>; 3],
}

impl MemView {
    fn bucket(&self, bucket: Bucket) -> &BTreeMap<Vec<u8>, Vec<u8>> {
        &self.buckets[bucket as usize - 1]
    }
}

impl ReadView for MemView {
    fn get(&self, bucket: Bucket, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.bucket(bucket).get(key).cloned())
    }

    fn scan(&self, bucket: Bucket, start: &[u8], end: Option<&[u8]>, visit: &mut ScanFn<'_>) -> Result<()> {
        use std::ops::Bound;
        if end.is_some_and(|e| e < start) {
            return Ok(());
        }
        let hi = end.map_or(Bound::Unbounded, Bound::Excluded);
        for (k, v) in self.bucket(bucket).range::<[u8], _>((Bound::Included(start), hi)) {
            if !visit(k, v)? {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_separate_and_batches_apply() {
        let dir = tempfile::tempdir().unwrap();
        let be = SledBackend::open(dir.path()).unwrap();
        let mut b = WriteBatch::default();
        b.put(Bucket::Key, b"a".to_vec(), b"1".to_vec());
        b.put(Bucket::Meta, b"a".to_vec(), b"2".to_vec());
        b.put(Bucket::Key, b"b".to_vec(), b"3".to_vec());
        be.write(b).unwrap();
        be.sync().unwrap();
        assert_eq!(be.get(Bucket::Key, b"a").unwrap().unwrap(), b"1");
        assert_eq!(be.get(Bucket::Meta, b"a").unwrap().unwrap(), b"2");
        let mut seen = Vec::new();
        be.scan(Bucket::Key, b"", None, &mut |k, _| {
            seen.push(k.to_vec());
            Ok(true)
        })
        .unwrap();
        assert_eq!(seen, vec![b"a".to_vec(), b"b".to_vec()]);
        let mut b = WriteBatch::default();
        b.delete(Bucket::Key, b"a".to_vec());
        be.write(b).unwrap();
        assert!(be.get(Bucket::Key, b"a").unwrap().is_none());
    }

    #[test]
    fn data_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let be = SledBackend::open(dir.path()).unwrap();
            let mut b = WriteBatch::default();
            b.put(Bucket::Lease, b"x".to_vec(), b"y".to_vec());
            be.write(b).unwrap();
            be.sync().unwrap();
        }
        let be = SledBackend::open(dir.path()).unwrap();
        assert_eq!(be.get(Bucket::Lease, b"x").unwrap().unwrap(), b"y");
    }
}
